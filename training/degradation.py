"""Synthetic degradation of the paper's Eq. 19 and RestoreFormer++'s extensions.

    I_d = { [ (I_h (*) k_sigma) downsample_r + n_delta ]_JPEG_q } upsample_r

Every random choice is drawn from a `torch.Generator` the caller passes in, so one seed gives one
degraded image on any process, worker or resumed run (the dataset derives that generator from
(seed, epoch, index)). The pipeline works on one image [3, H, W] in [0, 1] on the CPU, as the data
loader workers do; the pieces (`gaussian_kernel`, `blur`, `resize`, `jpeg`) are public so tests
and stage 2 can rebuild or reuse them.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import DegradationConfig


@dataclass(frozen=True)
class DegradationParams:
    """Everything that fixes one application of Eq. 19 (sigmas in px, noise on the 0-255 scale)."""

    kernel_size: int
    sigma_x: float
    sigma_y: float
    theta: float  # rotation of the anisotropic kernel, radians
    scale: float  # downsampling factor r
    noise_sigma: float  # delta, 0-255 scale
    noise_seed: int  # seeds the noise field (torch.randn on the CPU)
    jpeg_quality: int
    haze_alpha: float | None = None  # RF++ haze right after the blur: x * alpha + (1 - alpha); None = none


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """A normalised 2-D Gaussian [size, size] (float64), rotated by `theta` when anisotropic."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    half = (size - 1) / 2
    ax = torch.arange(size, dtype=torch.float64) - half
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    # Coordinates in the kernel's own frame, then the axis-aligned Gaussian there.
    u = c * xx + s * yy
    v = -s * xx + c * yy
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return k / k.sum()


def blur(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve [C, H, W] with a 2-D kernel, reflecting at the borders (OpenCV's default border)."""
    c, h, w = image.shape
    size = kernel.shape[-1]
    pad = size // 2
    if pad >= min(h, w):
        raise ValueError(f"blur kernel of {size} px is too large for a {h}x{w} image")
    x = F.pad(image[None].double(), (pad, pad, pad, pad), mode="reflect")
    weight = kernel.to(torch.float64).flip(0, 1).expand(c, 1, size, size)
    return F.conv2d(x, weight, groups=c)[0].to(image.dtype)


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of [C, H, W] with half-pixel centres and no antialiasing (like cv2 INTER_LINEAR)."""
    if image.shape[-2:] == (height, width):
        return image
    return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of [3, H, W] in [0, 1] through PIL in memory (baseline, 4:2:0)."""
    array = to_uint8(image).permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(decoded.copy()).permute(2, 0, 1).to(image.dtype) / 255


def gray(image: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma replicated to three channels."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
    return (image * weights).sum(0, keepdim=True).expand(3, -1, -1).contiguous()


def symmetric_indices(n: int, pad: int) -> torch.Tensor:
    """Source index of each position of a length-n axis padded by `pad` on both sides, mirrored with
    the edge sample repeated (numpy's `mode="symmetric"`, which the released RF++ shift uses)."""
    i = torch.arange(-pad, n + pad) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def shift_image(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Move the content of [C, H, W] by (dx, dy) px (right, down); the border that opens is filled by
    symmetric mirroring. A point at (x, y) lands at (x + dx, y + dy)."""
    _, h, w = image.shape
    rows = symmetric_indices(h, abs(dy))[abs(dy) - dy : abs(dy) - dy + h]
    cols = symmetric_indices(w, abs(dx))[abs(dx) - dx : abs(dx) - dx + w]
    return image[:, rows][:, :, cols].contiguous()


def draw_shift(g: torch.Generator, shift_max: int, shift_unit: int, px: float) -> tuple[int, int]:
    """(dx, dy): independent whole multiples of the unit in [-shift_max, shift_max] (sizes at 512 px,
    scaled by `px`), as the released RF++ code draws them (+-32 px in 1 px steps at 512)."""
    unit = max(1, round(shift_unit * px))
    steps = int(round(shift_max * px)) // unit
    dy, dx = _randint(g, -steps, steps) * unit, _randint(g, -steps, steps) * unit
    return dx, dy


def degrade(gt: torch.Tensor, p: DegradationParams) -> torch.Tensor:
    """Eq. 19 for fixed parameters: [3, H, W] in [0, 1] -> degraded [3, H, W] on the uint8 grid."""
    _, h, w = gt.shape
    size = min(p.kernel_size, 2 * (min(h, w) // 2) - 1)  # keep the reflect padding valid
    x = blur(gt, gaussian_kernel(size, p.sigma_x, p.sigma_y, p.theta))
    if p.haze_alpha is not None:  # where the released RF++ code hazes: after the blur, before resizing
        x = x * p.haze_alpha + (1 - p.haze_alpha)
    small_h, small_w = max(1, int(h / p.scale)), max(1, int(w / p.scale))
    x = resize(x, small_h, small_w)
    if p.noise_sigma > 0:
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(p.noise_seed), dtype=torch.float32)
        x = x + noise.to(x.dtype) * (p.noise_sigma / 255)
    x = x.clamp(0, 1)
    x = jpeg(x, p.jpeg_quality)
    x = resize(x, h, w)
    return to_uint8(x).to(gt.dtype) / 255


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=g, dtype=torch.float64))


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (), generator=g))


class Degradation:
    """Samples parameters from the configured ranges and applies the (extended) degradation.

    `__call__(gt, g)` -> (gt, lq): gt may change too (RF++ shift and grayscale). Sizes given at
    512 px in the config (shift, mixed-region mask) are scaled to the image size.
    """

    def __init__(self, cfg: DegradationConfig) -> None:
        for name in ("blur_sigma", "downsample", "noise_sigma", "jpeg_quality", "haze_alpha", "mix_size"):
            low, high = getattr(cfg, name)
            if low > high:
                raise ValueError(f"degradation.{name} must be [low, high] with low <= high, got {[low, high]}")
        if cfg.blur_sigma[0] <= 0 or cfg.downsample[0] <= 0:
            raise ValueError("degradation.blur_sigma and degradation.downsample must be positive")
        if not cfg.kernel_sizes or any(k % 2 == 0 or k < 1 for k in cfg.kernel_sizes):
            raise ValueError(f"degradation.kernel_sizes must be odd positive sizes, got {list(cfg.kernel_sizes)}")
        self.cfg = cfg

    def sample(self, g: torch.Generator) -> DegradationParams:
        cfg = self.cfg
        kernel = cfg.kernel_sizes[_randint(g, 0, len(cfg.kernel_sizes) - 1)]
        if cfg.anisotropic_prob > 0 and _uniform(g, 0, 1) < cfg.anisotropic_prob:
            sx, sy = _uniform(g, *cfg.blur_sigma), _uniform(g, *cfg.blur_sigma)
            theta = _uniform(g, -math.pi, math.pi)
        else:
            sx = sy = _uniform(g, *cfg.blur_sigma)
            theta = 0.0
        params = DegradationParams(
            kernel_size=kernel,
            sigma_x=sx,
            sigma_y=sy,
            theta=theta,
            scale=_uniform(g, *cfg.downsample),
            noise_sigma=_uniform(g, *cfg.noise_sigma),
            noise_seed=_randint(g, 0, 2**62),
            jpeg_quality=_randint(g, *cfg.jpeg_quality),
        )
        if cfg.haze_prob > 0 and _uniform(g, 0, 1) < cfg.haze_prob:  # per degraded copy, as released RF++
            params = dataclasses.replace(params, haze_alpha=_uniform(g, *cfg.haze_alpha))
        return params

    def __call__(self, gt: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        gt, lq, _ = self.apply(gt, g)
        return gt, lq

    def apply(self, gt: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(gt, lq, (dx, dy)): gt may change too (RF++ shift and grayscale); (dx, dy) is how far the
        shift moved the content (0, 0 without one), so landmarks can move with the face."""
        cfg = self.cfg
        _, h, w = gt.shape
        px = min(h, w) / 512  # config sizes are given at 512 px
        dx = dy = 0
        if cfg.shift_prob > 0 and _uniform(g, 0, 1) < cfg.shift_prob:
            dx, dy = draw_shift(g, cfg.shift_max, cfg.shift_unit, px)
            gt = shift_image(gt, dx, dy)
        lq = degrade(gt, self.sample(g))
        if cfg.mix_prob > 0 and _uniform(g, 0, 1) < cfg.mix_prob:
            other = degrade(gt, self.sample(g))
            side = max(1, round(_uniform(g, *cfg.mix_size) * px))
            side = min(side, h, w)
            top, left = _randint(g, 0, h - side), _randint(g, 0, w - side)
            lq = lq.clone()
            lq[:, top : top + side, left : left + side] = other[:, top : top + side, left : left + side]
        if cfg.gray_prob > 0 and _uniform(g, 0, 1) < cfg.gray_prob:
            gt, lq = gray(gt), gray(lq)
        return gt, lq, (dx, dy)


class GtAugment:
    """Stage 1's ground-truth augmentation for RF++ (the released ROHQD config): after the flip, a
    shift with probability `shift_prob` (as `Degradation`'s), then grayscale with `gray_prob`."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @property
    def active(self) -> bool:
        return self.cfg.shift_prob > 0 or self.cfg.gray_prob > 0

    def __call__(self, gt: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        cfg = self.cfg
        if cfg.shift_prob > 0 and _uniform(g, 0, 1) < cfg.shift_prob:
            gt = shift_image(gt, *draw_shift(g, cfg.shift_max, cfg.shift_unit, min(gt.shape[-2:]) / 512))
        if cfg.gray_prob > 0 and _uniform(g, 0, 1) < cfg.gray_prob:
            gt = gray(gt)
        return gt
