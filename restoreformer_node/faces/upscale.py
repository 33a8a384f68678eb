"""Restore at a larger size, as GFPGAN's background upsampler does: the whole image is upscaled
first (runtime.upscale: a spandrel model in tiles, or a plain bicubic resize), then the faces found
on the original image and the user's paste mask are carried to the new size, so the faces are
restored there and pasted into the upscaled image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..runtime.upscale import Progress, resize_images, scaled_size, upscale_images
from .paste import check_paste_mask
from .types import Faces


class UpscaledInputs(NamedTuple):
    images: torch.Tensor  # [B, H', W', C]
    faces: Faces  # the same faces in pixels of the upscaled images
    mask: torch.Tensor | None  # the paste mask at the new size ([B, H', W'])
    note: str  # what was done, for the report


def upscale_inputs(
    images: torch.Tensor,
    faces: Faces,
    model: object | None = None,
    factor: float | None = None,
    mask: torch.Tensor | None = None,
    progress: Progress | None = None,
) -> UpscaledInputs:
    """Upscale images [B, H, W, C] with `model` (a spandrel upscaler) and/or to `factor` times their
    size (bicubic after the model when its scale differs; bicubic alone without a model)."""
    if factor is not None and not factor > 0:
        raise ValueError(f"upscale factor must be positive, got {factor}")
    B, H, W, _ = images.shape
    mask = check_paste_mask(mask, B, H, W)  # checked against the image it was made for, before the work
    notes = []
    out = images
    if model is not None:
        up = upscale_images(model, images, progress=progress)
        out, notes = up.images, [up.note]
    if factor is not None:
        height, width = scaled_size(H, W, factor)
        if (height, width) != tuple(out.shape[1:3]):
            notes.append(f"resized (bicubic) to {width}x{height} ({factor:g}x the input)")
            out = resize_images(out, height, width)
    height, width = out.shape[1:3]
    if mask is not None and (height, width) != (H, W):
        mask = F.interpolate(mask[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return UpscaledInputs(out, faces.resized(height, width), mask, "; ".join(notes))
