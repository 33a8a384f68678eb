"""Paste restored crops back into their images by the inverse warp, through a soft mask.

The mask lives in crop space and is evaluated analytically at every image pixel's crop
coordinates: a square that starts `erode` pixels inside the crop edge and ramps up over
`feather` pixels with a smoothstep (a product of one ramp per side, so corners are round).
It is exactly zero outside the crop, so pixels farther from every face than the mask reaches
are never written: they stay bit-identical to the input.

Both controls are in pixels of the 512x512 template crop and scale with other crop sizes.
The defaults follow facexlib's paste-back for a 512 crop (the released inference): its mask is
the crop eroded by about 27 px and blurred with a Gaussian of sigma 8, i.e. zero up to about
7 px from the edge and one from about 47 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import DEFAULT_ERODE, DEFAULT_FEATHER
from .alignment import (
    crop_footprints,
    homogeneous,
    normalized_from_pixels,
    pixels_from_normalized,
    plan_windows,
    translation,
)
from .template import CROP_SIZE


def _ramp(distance: torch.Tensor, erode: float, feather: float) -> torch.Tensor:
    if feather <= 0:
        return (distance > erode).to(distance.dtype)
    t = ((distance - erode) / feather).clamp(0, 1)
    return t * t * (3 - 2 * t)


def crop_mask(u: torch.Tensor, v: torch.Tensor, crop_size: int, erode: float, feather: float) -> torch.Tensor:
    """Soft mask at crop pixel coordinates (u, v) (any equal shapes); erode, feather in pixels of
    this crop. 0 outside the crop and within `erode` of its edge, 1 deep inside."""
    lo, hi = -0.5, crop_size - 0.5
    return (
        _ramp(u - lo, erode, feather)
        * _ramp(hi - u, erode, feather)
        * _ramp(v - lo, erode, feather)
        * _ramp(hi - v, erode, feather)
    )


def crop_space_mask(
    crop_size: int, erode: float = DEFAULT_ERODE, feather: float = DEFAULT_FEATHER, device=None
) -> torch.Tensor:
    """The paste mask sampled on the crop's own pixels, [S, S] float32 (erode, feather at 512 scale)."""
    scale = crop_size / CROP_SIZE
    c = torch.arange(crop_size, dtype=torch.float32, device=device)
    return crop_mask(c[None, :], c[:, None], crop_size, erode * scale, feather * scale)


def paste_faces(
    images: torch.Tensor,
    crops: torch.Tensor,
    image_index: torch.Tensor,
    affines: torch.Tensor,
    *,
    erode: float = DEFAULT_ERODE,
    feather: float = DEFAULT_FEATHER,
    crop_masks: torch.Tensor | None = None,
    image_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite crops into a copy of the images.

    images: [B, H, W, C] (any device, float); crops: [N, Cc, S, S] float on the compute device,
    Cc = the colour channels of the images (1 or 3; an alpha channel after them is never
    touched); image_index: [N]; affines: [N, 2, 3] source pixels -> crop pixels.
    erode, feather: pixels of a 512 crop.
    crop_masks: [N, 1, S, S] in [0, 1] on the crops' device, multiplied into each face's mask in
    crop space (e.g. face parsing: only skin, eyes, ...); image_mask: [B, H, W] in [0, 1], multiplied
    in image space (the user's MASK: only where it allows).
    Faces are composited in list order, a later face over an earlier one where they overlap.
    Returns (images [B, H, W, C] same dtype and device, mask [B, H, W] float32: the largest
    face mask at each pixel).
    """
    B, H, W, C = images.shape
    N, Cc, S, S2 = crops.shape
    if S != S2:
        raise ValueError(f"crops must be square, got {S}x{S2}")
    if Cc > C:
        raise ValueError(f"crops have {Cc} channels but the images only {C}")
    out = images.clone()
    mask = torch.zeros(B, H, W, dtype=torch.float32, device=images.device)
    if N == 0:
        return out, mask
    scale = S / CROP_SIZE
    erode_px, feather_px = erode * scale, feather * scale
    affines = affines.to(torch.float64).cpu()
    image_index = image_index.to(torch.long).cpu()
    device = crops.device
    if crop_masks is not None:  # warped with the colour, as one more channel
        crops = torch.cat([crops, crop_masks.to(device, crops.dtype)], dim=1)
    # only the part of each crop where the mask can be > 0 is looked at
    boxes = crop_footprints(affines, S, inset=min(erode_px, S / 2 - 1), margin=1.0)
    forward = homogeneous(affines)
    for group in plan_windows(boxes, H, W):
        n, h, w = len(group.indices), group.height, group.width
        # window normalized -> window pixels -> source pixels -> crop pixels -> crop normalized
        theta = (
            normalized_from_pixels(S, S, n)
            @ forward[group.indices]
            @ translation(group.origins)
            @ pixels_from_normalized(w, h, n)
        )[:, :2]
        grid = F.affine_grid(theta.to(device, torch.float32), [n, crops.shape[1], h, w], align_corners=False)
        idx = group.indices.to(device)
        warped = F.grid_sample(
            crops[idx].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        u = (grid[..., 0] + 1) * (S / 2) - 0.5
        v = (grid[..., 1] + 1) * (S / 2) - 0.5
        soft = crop_mask(u, v, S, erode_px, feather_px)  # [n, h, w]
        if crop_masks is not None:
            soft = soft * warped[:, Cc].clamp(0, 1)
            warped = warped[:, :Cc]
        warped = warped.permute(0, 2, 3, 1).to(images.device, images.dtype)  # [n, h, w, Cc]
        soft = soft.to(images.device)
        for k in range(n):  # a few slice writes per face, in the faces' order
            b = int(image_index[group.indices[k]])
            x0, y0 = (int(t) for t in group.origins[k])
            m = soft[k]
            if image_mask is not None:
                m = m * image_mask[b, y0 : y0 + h, x0 : x0 + w].to(m.dtype)
            region = out[b, y0 : y0 + h, x0 : x0 + w, :Cc]
            mk = m.unsqueeze(-1).to(images.dtype)
            blended = region + (warped[k] - region) * mk
            region.copy_(torch.where(mk > 0, blended, region))
            mregion = mask[b, y0 : y0 + h, x0 : x0 + w]
            torch.maximum(mregion, m, out=mregion)
    return out, mask



def check_paste_mask(mask: torch.Tensor | None, batch: int, height: int, width: int, name: str = "mask"):
    """A user's MASK ([H, W], [1, H, W] or [B, H, W], 0..1) as [B, H, W] float32, or None; a mask of
    another size or batch gets one error naming the input and the fix."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"{name}: expected a MASK [B, H, W], got {shape}")
    mask = mask[None] if mask.ndim == 2 else mask
    if tuple(mask.shape[1:]) != (height, width):
        raise ValueError(
            f"{name}: the mask is {mask.shape[2]}x{mask.shape[1]} but the image is {width}x{height}; "
            "make the mask from this image (or resize it to the image's size)"
        )
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"{name}: {mask.shape[0]} masks for {batch} images; give one mask or one per image")
    return mask.float().clamp(0, 1).expand(batch, -1, -1)
