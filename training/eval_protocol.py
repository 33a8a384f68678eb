"""The two evaluation protocols of `python -m training evaluate`: how images are read and what each
metric network is fed.

`released` follows the official evaluation scripts of RestoreFormer / RestoreFormer++
(`scripts/metrics/cal_psnr_ssim.py`, `cal_identity_distance.py`, `cal_fid.py` in
wzhouxiff/RestoreFormerPlusPlus, identical in wzhouxiff/RestoreFormer):
- images are read with `cv2.imread`, so the arrays are BGR, and PSNR, SSIM, LPIPS and ArcFace see
  BGR (PSNR and SSIM do not depend on the channel order: all three channels, no border crop);
- LPIPS (VGG-16 with the lpips v0.1 heads) is computed twice, on [0, 1] and on [-1, 1] input; the
  table reports the [-1, 1] value (the script's `norm_lpips`), the [0, 1] value is kept as
  `LPIPS_0_1` (see `RELEASED_LPIPS_NOTE`);
- ArcFace (GFPGAN's ResNet-18) gets 0.2989*c0 + 0.5870*c1 + 0.1140*c2 of the [0, 1] BGR image,
  i.e. the RGB luma weights applied to B, G, R, bilinearly resized to 128x128;
- FID reads BGR, converts to RGB and maps to [-1, 1] before the Inception's bilinear resize to 299.

`standard` keeps the RGB conventions training uses: Pillow reads RGB, LPIPS sees RGB in [-1, 1],
ArcFace sees the ITU-R 601 luma of RGB in [-1, 1], and the Inception gets RGB resized to 299 in
[0, 1] and then mapped to [-1, 0.9921875] (the TensorFlow FID convention, (x - 128) / 128).

Both protocols compute the identity angle from float64 cosines, so identical images give exactly 0
(the released script takes np.arccos of a float32 cosine, which can be NaN or about 3e-4 rad
there); otherwise the two agree to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

LPIPS_COLUMNS = ("LPIPS", "LPIPS_0_1")

RELEASED_LPIPS_NOTE = (
    "cal_psnr_ssim.py writes two LPIPS values per image: on [0, 1] input (under its LPIPS header) "
    "and on [-1, 1] input (norm_lpips). Nothing released says which one the paper's Table 1 reports; "
    "the table here shows the [-1, 1] value, the input range LPIPS is defined on, and the [0, 1] "
    "value is column LPIPS_0_1 of metrics.csv and summary.json"
)


@dataclass(frozen=True)
class Protocol:
    """How a protocol reads images and feeds each metric network.

    `lpips_ranges` pairs a column with the input range the LPIPS network gets; the first is the
    table's LPIPS. `arcface_range` is the range of the image before the grey conversion;
    `fid_range` what the Inception network gets; `fid_normalise_first` whether that mapping
    comes before the resize to 299 (basicsr) or after it.
    """

    name: str
    reader: str  # "opencv" or "pillow"
    bgr: bool  # PSNR, SSIM, LPIPS and ArcFace see BGR
    lpips_ranges: tuple[tuple[str, tuple[float, float]], ...]
    arcface_range: tuple[float, float]
    fid_range: tuple[float, float]
    fid_normalise_first: bool
    description: str


RELEASED = Protocol(
    name="released",
    reader="opencv",
    bgr=True,
    lpips_ranges=(("LPIPS", (-1.0, 1.0)), ("LPIPS_0_1", (0.0, 1.0))),
    arcface_range=(0.0, 1.0),
    fid_range=(-1.0, 1.0),
    fid_normalise_first=True,
    description=(
        "released: the official RestoreFormer++ scripts (scripts/metrics/). Images read with OpenCV "
        "(BGR). PSNR/SSIM on all three channels, no border crop. LPIPS (VGG) fed BGR in [-1, 1] "
        "(the [0, 1] value is LPIPS_0_1). IDD: ArcFace ResNet-18 fed 0.2989*B + 0.587*G + 0.114*R of "
        "the [0, 1] BGR image at 128x128, angle in radians. FID: RGB in [-1, 1], bilinear resize to "
        "299 per image (basicsr)"
    ),
)

STANDARD = Protocol(
    name="standard",
    reader="pillow",
    bgr=False,
    lpips_ranges=(("LPIPS", (-1.0, 1.0)),),
    arcface_range=(-1.0, 1.0),
    fid_range=(-1.0, 0.9921875),
    fid_normalise_first=False,
    description=(
        "standard: RGB as training uses it. Images read with Pillow (RGB). PSNR/SSIM on all three "
        "channels, no border crop. LPIPS (VGG) fed RGB in [-1, 1]. IDD: ArcFace ResNet-18 fed the "
        "ITU-R 601 luma of RGB in [-1, 1] at 128x128, angle in radians. FID: RGB resized to 299 per "
        "image, then mapped to [-1, 0.9921875]"
    ),
)

PROTOCOLS = {p.name: p for p in (RELEASED, STANDARD)}


class ImageReadError(Exception):
    """An image file could not be decoded (the message names the file)."""


def opencv_available() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def read_image(path: Path, protocol: Protocol) -> np.ndarray:
    """HxWx3 uint8 RGB as the protocol reads the file (OpenCV decodes for `released`, like
    cv2.imread in the official scripts; Pillow for `standard`). The channel order the metrics
    see is applied later (`metric_order`)."""
    if protocol.reader == "opencv":
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise ImageReadError(f"{str(path)!r} cannot be read as an image by OpenCV")
        return np.ascontiguousarray(image[..., ::-1])
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")).copy()
    except Exception as err:  # truncated or not an image: Pillow raises several kinds
        raise ImageReadError(f"{str(path)!r} cannot be read as an image ({type(err).__name__}: {err})") from None


def metric_order(image: np.ndarray, protocol: Protocol) -> np.ndarray:
    """RGB uint8 -> the channel order PSNR, SSIM, LPIPS and ArcFace see under the protocol."""
    return np.ascontiguousarray(image[..., ::-1]) if protocol.bgr else image


def unit_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> [1, 3, H, W] float32 in [0, 1] (x / 255 in float32, as the scripts do; copied,
    since arrays from Pillow are read-only)."""
    return torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def to_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """[0, 1] -> [lo, hi]. [-1, 1] is computed as (x - 0.5) / 0.5, the scripts' expression."""
    if (lo, hi) == (0.0, 1.0):
        return x
    if (lo, hi) == (-1.0, 1.0):
        return (x - 0.5) / 0.5
    return x * (hi - lo) + lo


def lpips_inputs(image: np.ndarray, protocol: Protocol) -> dict[str, torch.Tensor]:
    """{column: [1, 3, H, W] tensor} for LPIPS, from an RGB uint8 image."""
    x = unit_tensor(metric_order(image, protocol))
    return {column: to_range(x, lo, hi) for column, (lo, hi) in protocol.lpips_ranges}


def arcface_input(image: np.ndarray, protocol: Protocol) -> torch.Tensor:
    """[1, 1, 128, 128]: the weighted sum 0.2989*c0 + 0.5870*c1 + 0.1140*c2 of the image in the
    protocol's channel order and range, bilinearly resized (align_corners=False, no antialias)."""
    x = to_range(unit_tensor(metric_order(image, protocol)), *protocol.arcface_range)
    grey = 0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2]
    return F.interpolate(grey[:, None], size=(128, 128), mode="bilinear", align_corners=False)


def identity_angle(e1: torch.Tensor, e2: torch.Tensor) -> float:
    """Angle in radians between two embeddings, from a float64 cosine clipped to [-1, 1]. For
    equal embeddings the dot product equals the squared norm and sqrt(n * n) == n, so the
    cosine is exactly 1 and the angle exactly 0."""
    a = e1.detach().double().cpu().numpy().reshape(-1)
    b = e2.detach().double().cpu().numpy().reshape(-1)
    cos = float(np.dot(a, b)) / float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.arccos(np.clip(cos, -1.0, 1.0)))


def inception_input(image: np.ndarray, protocol: Protocol) -> torch.Tensor:
    """[1, 3, 299, 299] for the FID Inception from one RGB uint8 image: each image is resized on
    its own (bilinear, align_corners=False, no antialias, as basicsr's InceptionV3 does inside the
    network), so folders of mixed sizes work."""
    x = unit_tensor(image)
    lo, hi = protocol.fid_range
    if protocol.fid_normalise_first:
        x = to_range(x, lo, hi)
    if x.shape[-2:] != (299, 299):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    if not protocol.fid_normalise_first:
        x = to_range(x.clamp(0, 1), lo, hi)
    return x
