"""Upscale whole images with a spandrel model (ComfyUI's UPSCALE_MODEL: ESRGAN, SwinIR, ...) in
overlapping tiles, so memory stays bounded whatever the image size.

Tiles are `tile` pixels of the input with `overlap` pixels shared by neighbours; a tile that does
not fit in memory is halved (down to MIN_TILE) and the image is started again. Neighbouring
outputs are blended with weights that are zero within `overlap / 4` of a tile's inner edge (where
the model saw padding instead of the image) and ramp linearly to one across the rest of the
overlap, so a model whose receptive field reaches less than `overlap / 4` input pixels gives exactly
what it gives on the whole image. Edges of the image itself are never blended.

RGB(A) and gray images: the colour goes through the model as RGB (gray as three equal channels,
back to gray by Rec. 601 luma); an alpha channel is resized bicubically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .face_models import describe, is_face_model

DEFAULT_TILE = 512  # input pixels per tile side (ComfyUI's Upscale Image (using Model) uses the same)
DEFAULT_OVERLAP = 32
MIN_TILE = 64
LUMA = (0.299, 0.587, 0.114)

Progress = Callable[[int, int], None]  # (tiles done, tiles in total); may raise to stop


class UpscaleModelError(ValueError):
    """A model that cannot upscale whole images; the message says what to connect instead."""


def check_upscale_model(descriptor: object) -> int:
    """The model's integer scale; raises UpscaleModelError for face models and others that do not
    map RGB images to larger RGB images."""
    if not callable(descriptor) or not hasattr(descriptor, "scale"):
        raise UpscaleModelError(
            f"upscale_model: expected a model from Load Upscale Model, got {type(descriptor).__name__}"
        )
    if is_face_model(descriptor):
        raise UpscaleModelError(
            f"upscale_model: {describe(descriptor)} restores aligned faces, it does not upscale whole "
            "images: connect it to Restore Faces' model input instead, and an upscaler such as ESRGAN here"
        )
    channels = (getattr(descriptor, "input_channels", 3), getattr(descriptor, "output_channels", 3))
    if channels != (3, 3):
        raise UpscaleModelError(
            f"upscale_model: {describe(descriptor)} takes {channels[0]} and gives {channels[1]} channels; "
            "an RGB to RGB upscaler is needed"
        )
    scale = int(descriptor.scale)
    if scale < 1:
        raise UpscaleModelError(f"upscale_model: {describe(descriptor)} has scale {scale}")
    return scale


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start of every tile along one axis: step tile - overlap, the last one flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return [*starts, length - tile]


def edge_weights(length: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """[length] blend weights of one tile along one axis (output pixels; overlap in output pixels)."""
    w = torch.ones(length, dtype=torch.float32)
    if overlap <= 0:
        return w
    dead = overlap // 4
    ramp = overlap - 2 * dead
    d = torch.arange(length, dtype=torch.float32)
    rise = ((d - dead + 1) / (ramp + 1)).clamp(0, 1)  # 0 for the first `dead` pixels, then up to 1
    if not first:
        w = w * rise
    if not last:
        w = w * rise.flip(0)
    return w


@dataclass(frozen=True)
class Upscaled:
    images: torch.Tensor  # [B, H * scale, W * scale, C] float32 in [0, 1], on the input's device
    scale: int
    tile: int  # the tile side that ran (input pixels)
    tiles: int  # tiles per image
    note: str  # one line for the report


def upscale_rgb(
    descriptor, rgb: torch.Tensor, scale: int, tile: int, overlap: int, on_tile: Callable[[], None] | None = None
) -> torch.Tensor:
    """One image [3, H, W] (on the model's device and dtype) -> [3, sH, sW] float32 on the CPU;
    on_tile() after every tile."""
    _, H, W = rgb.shape
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    out = torch.zeros(3, H * scale, W * scale, dtype=torch.float32)
    total = torch.zeros(1, H * scale, W * scale, dtype=torch.float32)
    for iy, y in enumerate(ys):
        for ix, x in enumerate(xs):
            piece = rgb[:, y : y + tile, x : x + tile]
            result = descriptor(piece[None])[0].float().cpu()
            h, w = result.shape[-2:]
            wy = edge_weights(h, overlap * scale, iy == 0, iy == len(ys) - 1)
            wx = edge_weights(w, overlap * scale, ix == 0, ix == len(xs) - 1)
            weight = (wy[:, None] * wx[None, :])[None]
            out[:, y * scale : y * scale + h, x * scale : x * scale + w] += result * weight
            total[:, y * scale : y * scale + h, x * scale : x * scale + w] += weight
            if on_tile is not None:
                on_tile()
    return out / total


def upscale_images(
    descriptor: object,
    images: torch.Tensor,
    *,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    progress: Progress | None = None,
) -> Upscaled:
    """Upscale images [B, H, W, C] (C = 1..4, 0..1) by the model's scale, tile by tile on the model's
    device; out-of-memory halves the tile. Returns Upscaled (images on the input's device)."""
    scale = check_upscale_model(descriptor)
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"images must be [B, H, W, C] with 1 to 4 channels, got {tuple(images.shape)}")
    if overlap < 0 or tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({overlap})")
    B, H, W, C = images.shape
    device = getattr(descriptor, "device", torch.device("cpu"))
    dtype = getattr(descriptor, "dtype", torch.float32)
    colour = 1 if C in (1, 2) else 3
    while True:
        count = len(tile_starts(H, tile, overlap)) * len(tile_starts(W, tile, overlap))
        done = 0

        def on_tile(total: int = count * B) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        try:
            frames = []
            for b in range(B):
                rgb = images[b, :, :, :colour].permute(2, 0, 1).to(device, dtype)
                rgb = rgb.expand(3, -1, -1) if colour == 1 else rgb
                frames.append(upscale_rgb(descriptor, rgb, scale, tile, overlap, on_tile))
            break
        except torch.OutOfMemoryError:
            if tile // 2 < max(MIN_TILE, 2 * overlap + 1):
                raise
            tile //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
    out = torch.stack(frames)  # [B, 3, sH, sW]
    if colour == 1:
        out = (out * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    if C in (2, 4):  # alpha: resized, never through the model
        alpha = F.interpolate(images[..., -1:].permute(0, 3, 1, 2).float().cpu(), scale_factor=scale, mode="bicubic")
        out = torch.cat([out, alpha], dim=1)
    out = out.clamp(0, 1).permute(0, 2, 3, 1).to(images.device)
    note = f"upscaled {scale}x with {describe(descriptor)} in {count} tile{'s' if count != 1 else ''} of {min(tile, max(H, W))} px"
    return Upscaled(out.contiguous(), scale, tile, count, note)


def resize_images(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B, H, W, C] -> [B, height, width, C] bicubic (antialiased when shrinking), clamped to [0, 1]."""
    if images.shape[1:3] == (height, width):
        return images
    x = images.permute(0, 3, 1, 2).float()
    shrink = height < images.shape[1] or width < images.shape[2]
    y = F.interpolate(x, size=(height, width), mode="bicubic", antialias=shrink, align_corners=False)
    return y.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def scaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """The size of an image scaled by `factor`, rounded to whole pixels."""
    return max(1, math.floor(height * factor + 0.5)), max(1, math.floor(width * factor + 0.5))
