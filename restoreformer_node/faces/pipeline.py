"""Align, restore and paste back: the face pipeline on image batches, without ComfyUI.

Crop size: faces are aligned directly at the model's input resolution (`model.config.resolution`,
512 for the published networks) by scaling the 512-template affines, so there is exactly one
resampling each way and no resize of crops in between. A model without a config (e.g. the
identity in tests) uses `crop_size` or the Faces' own crop size (512).

Channels: RGB and RGBA images restore their three colour channels (alpha is never touched);
one-channel (and gray + alpha) images are restored as gray RGB and converted back with
Rec. 601 luma, which returns the same gray for a gray input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..options import BORDER_MODES, COLOR_MATCH_MODES, DEFAULT_ERODE, DEFAULT_FEATHER
from ..runtime import CompileOptions, run_crops
from .alignment import LUMA, face_arrays, warp_to_crops
from .color import match_colors
from .parsing import FaceParsing
from .paste import check_paste_mask, crop_space_mask, paste_faces
from .report import RunReport
from .types import Faces

Progress = Callable[[int, int], None]  # (faces done, faces in total); may raise to stop


class RestoreResult(NamedTuple):
    images: torch.Tensor  # [B, H, W, C] like the input (same dtype and device)
    mask: torch.Tensor  # [B, H, W] float32 in [0, 1]: where restored faces were pasted
    crops: torch.Tensor  # [N, S, S, 3] float32 restored crops (IMAGE layout), on the images' device
    report: RunReport  # what ran and what the user should be told


def color_channels(images: torch.Tensor) -> int:
    """Colour channels of a [B, H, W, C] batch: 1 (gray), 3 (RGB); a 2nd / 4th channel is alpha."""
    C = images.shape[-1]
    if C not in (1, 2, 3, 4):
        raise ValueError(
            f"images must have 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, got {C}"
        )
    return 1 if C in (1, 2) else 3


def to_rgb(crops: torch.Tensor) -> torch.Tensor:
    """[N, 1 or 3, S, S] -> [N, 3, S, S]."""
    return crops.expand(-1, 3, -1, -1) if crops.shape[1] == 1 else crops


def from_rgb(crops: torch.Tensor, channels: int) -> torch.Tensor:
    """[N, 3, S, S] -> [N, channels, S, S] (Rec. 601 luma for one channel)."""
    if channels == 3:
        return crops
    w = torch.tensor(LUMA, dtype=crops.dtype, device=crops.device).view(1, 3, 1, 1)
    return (crops * w).sum(dim=1, keepdim=True)


def check_inputs(images: torch.Tensor, faces: Faces) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be a [B, H, W, C] batch, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got {images.dtype}; divide uint8 by 255")
    B, H, W, _ = images.shape
    color_channels(images)
    if (faces.batch_size, faces.image_height, faces.image_width) != (B, H, W):
        raise ValueError(
            f"the faces were detected on {faces.batch_size} image(s) of {faces.image_width}x"
            f"{faces.image_height}, but the images are {B} of {W}x{H}: detect on the same images"
        )


def model_device(model: torch.nn.Module, fallback: torch.device) -> torch.device:
    for p in model.parameters():
        return p.device
    return fallback


def model_crop_size(model: torch.nn.Module, faces: Faces, crop_size: int | None = None) -> int:
    """The crop side the model takes: its config's resolution, or its `crop_size` (spandrel face
    models: 512), else `crop_size` or the faces' own."""
    config = getattr(model, "config", None)
    fixed = config.resolution if config is not None else getattr(model, "crop_size", None)
    if fixed is not None:
        if crop_size not in (None, fixed):
            raise ValueError(f"this model takes {fixed}px crops, crop_size={crop_size} was asked")
        return fixed
    return crop_size or faces.crop_size


def align_faces(
    images: torch.Tensor,
    faces: Faces,
    *,
    crop_size: int | None = None,
    border: str = "constant",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Aligned crops of all faces, [N, S, S, 3] float32 on the images' device (IMAGE layout).

    One-channel images give gray RGB crops.
    """
    check_inputs(images, faces)
    image_index, affines, size = face_arrays(faces, crop_size)
    aligned = warp_to_crops(
        images, image_index, affines, size, channels=color_channels(images), border=border, device=device
    )
    return to_rgb(aligned.crops).permute(0, 2, 3, 1).to(images.device)


def paste_crops(
    images: torch.Tensor,
    crops: torch.Tensor,
    faces: Faces,
    *,
    feather: float = DEFAULT_FEATHER,
    erode: float = DEFAULT_ERODE,
    color_match: str = "none",
    border: str = "constant",
    device: torch.device | str | None = None,
    mask: torch.Tensor | None = None,
    parsing: FaceParsing | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste crops [N, S, S, 3] (e.g. edited) over their faces -> (images [B,H,W,C], mask [B,H,W]).

    The crops' side S sets the crop size; the colour match compares with the original faces
    aligned at that size. mask (a MASK of the images' size) and parsing (face regions) limit where
    the faces are pasted (see restore_faces).
    """
    check_inputs(images, faces)
    image_mask = check_paste_mask(mask, images.shape[0], images.shape[1], images.shape[2])
    if crops.ndim != 4 or crops.shape[1] != crops.shape[2] or crops.shape[3] not in (1, 3, 4):
        raise ValueError(f"crops must be square [N, S, S, 3] images, got shape {tuple(crops.shape)}")
    if crops.shape[0] != len(faces):
        raise ValueError(
            f"{crops.shape[0]} crops but {len(faces)} faces: paste the crops that were aligned from these faces"
        )
    device = torch.device(device) if device is not None else images.device
    size = crops.shape[1]
    image_index, affines, _ = face_arrays(faces, size)
    channels = color_channels(images)
    rgb = crops[..., :3].to(device, torch.float32).permute(0, 3, 1, 2)
    rgb = to_rgb(rgb) if rgb.shape[1] == 1 else rgb
    restored = from_rgb(rgb, channels)
    aligned = None
    if color_match != "none" or (parsing is not None and parsing.source == "original"):
        aligned = warp_to_crops(images, image_index, affines, size, channels=channels, border=border, device=device)
    crop_masks = parse_masks(parsing, rgb, aligned)
    if color_match != "none":
        weight = crop_space_mask(size, erode, feather, device) * aligned.valid
        restored = match_colors(restored, aligned.crops, weight, color_match)
    return paste_faces(
        images, restored, image_index, affines, erode=erode, feather=feather, crop_masks=crop_masks, image_mask=image_mask
    )


def parse_masks(parsing: FaceParsing | None, restored_rgb: torch.Tensor, aligned) -> torch.Tensor | None:
    """The crop-space region masks [N, 1, S, S] of the restored or the original crops (None without
    parsing)."""
    if parsing is None:
        return None
    source = restored_rgb if parsing.source == "restored" else to_rgb(aligned.crops)
    return parsing.masks(source)


def mask_notes(mask: torch.Tensor | None, parsing: FaceParsing | None) -> tuple[str, ...]:
    """Report lines saying what limited the paste mask."""
    notes = []
    if parsing is not None:
        notes.append(f"paste mask: {parsing.describe()}")
    if mask is not None:
        notes.append("paste mask: only where the connected mask allows")
    return tuple(notes)


def restore_faces(
    images: torch.Tensor,
    model: torch.nn.Module,
    faces: Faces,
    *,
    strength: float = 1.0,
    precision: str = "fp32",
    feather: float = DEFAULT_FEATHER,
    erode: float = DEFAULT_ERODE,
    color_match: str = "none",
    border: str = "constant",
    crop_size: int | None = None,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    compile_options: CompileOptions | None = None,
    mask: torch.Tensor | None = None,
    parsing: FaceParsing | None = None,
) -> RestoreResult:
    """Restore every face of an image batch and paste it back.

    images: [B, H, W, C] float in [0, 1], C in 1..4 (ComfyUI IMAGE layout; may stay on the CPU).
    model: maps [n, 3, S, S] in [-1, 1] to the same (RestoreFormer or anything with that contract).
    faces: the detections for exactly these images (their affines map to 512 template crops).
    strength: 0 keeps the original crops, 1 uses the network's output.
    precision: "fp32" | "bf16" | "fp16" (autocast on a GPU; a CPU runs fp32 and says so).
    feather, erode: paste mask ramp and inset in pixels of a 512 crop.
    color_match: "none" | "mean" | "mean_std" (Lab statistics of the original face region).
    border: how the crop is filled beyond the image edge ("constant" grey like the released
    inference, "edge", "reflect").
    device: where the warps and the network run (default: the model's device).
    progress(done, total) is called after each chunk of crops; raising from it interrupts.
    compile_options: run the network through torch.compile (see runtime/compile.py); if that
    fails the network runs eagerly and the report says why.
    mask: a MASK of the images' size ([H, W], [1, H, W] or [B, H, W], 0..1): faces are pasted only
    where it allows (multiplied with the feathered template mask).
    parsing: face parsing (faces/parsing.py): only the chosen regions of each face are pasted.
    Returns RestoreResult(images, mask, crops, report). With no face, the input tensor itself is
    returned with an empty mask.
    """
    check_inputs(images, faces)
    if border not in BORDER_MODES:
        raise ValueError(f"border must be one of {BORDER_MODES}, got {border!r}")
    if color_match not in COLOR_MATCH_MODES:
        raise ValueError(f"color_match must be one of {COLOR_MATCH_MODES}, got {color_match!r}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    B, H, W, _ = images.shape
    image_mask = check_paste_mask(mask, B, H, W)
    device = torch.device(device) if device is not None else model_device(model, images.device)
    size = model_crop_size(model, faces, crop_size)
    report = RunReport(
        images=B, faces=len(faces), images_without_faces=faces.images_without_faces, detector=faces.detector,
        precision="", no_face_line=faces.no_face_line(), notes=faces.notes,
    )
    if faces.faces:
        report = report.with_notes(*mask_notes(image_mask, parsing))
    if not faces.faces:
        empty_mask = torch.zeros(B, H, W, dtype=torch.float32, device=images.device)
        empty_crops = torch.zeros(0, size, size, 3, dtype=torch.float32, device=images.device)
        return RestoreResult(images, empty_mask, empty_crops, report)
    channels = color_channels(images)
    image_index, affines, _ = face_arrays(faces, size)
    aligned = warp_to_crops(images, image_index, affines, size, channels=channels, border=border, device=device)
    ran = run_crops(
        model,
        to_rgb(aligned.crops),
        strength=strength,
        precision=precision,
        chunk_size=chunk_size,
        callback=progress,
        compile_options=compile_options,
    )
    report = dataclasses.replace(
        report, precision=ran.plan.precision, precision_note=ran.plan.note, chunk_size=ran.chunk_size,
        compiled=ran.compiled, compile_note=ran.compile_note,
    )
    restored = from_rgb(ran.crops, channels)
    crop_masks = parse_masks(parsing, ran.crops, aligned)
    if color_match != "none":
        weight = crop_space_mask(size, erode, feather, device) * aligned.valid
        restored = match_colors(restored, aligned.crops, weight, color_match)
    out, pasted = paste_faces(
        images, restored, image_index, affines, erode=erode, feather=feather, crop_masks=crop_masks, image_mask=image_mask
    )
    crops = to_rgb(restored).permute(0, 2, 3, 1).to(images.device)
    return RestoreResult(out, pasted, crops, report)
