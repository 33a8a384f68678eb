"""Colour match of restored crops to the original face region (the usual face-restorer colour shift).

Statistics are taken in CIE Lab (D65, sRGB primaries) over the region the face will be pasted
into (paste mask x in-image share), so the grey border and the background outside the mask do
not count. "mean" moves each restored face's Lab means onto the original's (fixes a colour cast
and keeps the restored detail); "mean_std" also matches the spread per channel (Reinhard et al.
2001), which also undoes contrast the network added. One-channel crops are matched on their
single channel.
"""

from __future__ import annotations

import torch

from ..options import COLOR_MATCH_MODES

_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPS = (6 / 29) ** 3


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB [N, 3, H, W] in [0, 1] -> Lab [N, 3, H, W] (L in 0..100)."""
    c = rgb.clamp(0, 1)
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = (_RGB_TO_XYZ / _WHITE[:, None]).to(rgb)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    f = torch.where(xyz > _EPS, xyz.clamp(min=_EPS) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab [N, 3, H, W] -> sRGB [N, 3, H, W] clamped to [0, 1]."""
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
    xyz = torch.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29))
    m = torch.linalg.inv(_RGB_TO_XYZ / _WHITE[:, None]).to(lab)
    lin = torch.einsum("ij,njhw->nihw", m, xyz).clamp(0, 1)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp(min=1e-12) ** (1 / 2.4) - 0.055).clamp(0, 1)


def _weighted_stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    total = w.sum(dim=(2, 3), keepdim=True).clamp(min=1e-6)
    mean = (x * w).sum(dim=(2, 3), keepdim=True) / total
    var = (((x - mean) ** 2) * w).sum(dim=(2, 3), keepdim=True) / total
    return mean, var.sqrt()


def match_colors(restored: torch.Tensor, original: torch.Tensor, weight: torch.Tensor, mode: str) -> torch.Tensor:
    """Shift restored crops' colour statistics onto the originals'.

    restored, original: [N, C, S, S] in [0, 1], C = 1 or 3; weight: [N, 1, S, S] (or [S, S])
    >= 0, the pixels that count. Returns [N, C, S, S] in [0, 1].
    """
    if mode not in COLOR_MATCH_MODES:
        raise ValueError(f"color_match must be one of {COLOR_MATCH_MODES}, got {mode!r}")
    if mode == "none" or restored.shape[0] == 0:
        return restored
    weight = weight.expand(restored.shape[0], 1, *restored.shape[2:]).to(restored)
    lab = restored.shape[1] == 3
    src = rgb_to_lab(restored) if lab else restored
    ref = rgb_to_lab(original) if lab else original
    mean_s, std_s = _weighted_stats(src, weight)
    mean_r, std_r = _weighted_stats(ref, weight)
    if mode == "mean":
        out = src - mean_s + mean_r
    else:
        # a flat restored channel has nothing to stretch; cap the gain so noise is not amplified
        gain = (std_r / std_s.clamp(min=1e-4)).clamp(0.25, 4.0)
        out = (src - mean_s) * gain + mean_r
    return lab_to_rgb(out) if lab else out.clamp(0, 1)
