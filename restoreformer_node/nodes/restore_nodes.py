"""Nodes: restore faces (align, restore, paste back in one), align faces, paste faces."""

from __future__ import annotations

import torch

from ..faces.detection import faces_or_detect
from ..faces.pipeline import align_faces, paste_crops, restore_faces
from ..faces.template import CROP_SIZE
from ..options import COLOR_MATCH_MODES, DEFAULT_ERODE, DEFAULT_FEATHER, PRECISIONS
from ..runtime import activation_bytes_per_crop, network_dtype, pick_chunk_size, plan_precision
from .common import (
    CATEGORY,
    Progress,
    check_image,
    compute_device,
    free_memory,
    notify,
    placeholder_image,
    to_image,
)
from .types import DETECTOR, FACES, MODEL

_TIP_FEATHER = (
    "Width of the soft edge of the paste mask, in pixels of the 512x512 face crop (scaled to the face's "
    "size in the image). Larger hides seams better; 0 gives a hard edge."
)
_TIP_ERODE = (
    "How far inside the crop's edge the paste mask starts, in pixels of the 512x512 crop. Raise it if "
    "the crop's border (hair, background) shows."
)
_TIP_COLOR = (
    "Match the restored face's colours to the original face region: 'mean' removes a colour cast and "
    "keeps the restored detail; 'mean_std' also matches contrast; 'none' keeps the network's colours."
)


def _mask_controls() -> dict:
    return {
        "feather": ("FLOAT", {"default": DEFAULT_FEATHER, "min": 0.0, "max": 256.0, "step": 1.0, "tooltip": _TIP_FEATHER}),
        "erode": ("FLOAT", {"default": DEFAULT_ERODE, "min": 0.0, "max": 200.0, "step": 1.0, "tooltip": _TIP_ERODE}),
        "color_match": (list(COLOR_MATCH_MODES), {"default": "none", "tooltip": _TIP_COLOR}),
    }


class RestoreFaces:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images (a batch or video frames); RGB, RGBA (alpha is kept) or gray."}),
                "model": (MODEL, {"tooltip": "A RestoreFormer / RestoreFormer++ from Load RestoreFormer Model."}),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                        "tooltip": "Blend between the original face (0) and the restored face (1).",
                    },
                ),
                "precision": (
                    list(PRECISIONS),
                    {
                        "default": "fp32",
                        "tooltip": "Arithmetic of the network. bf16/fp16 are faster on GPUs and use less "
                        "memory; on a CPU fp32 is used whatever is chosen.",
                    },
                ),
                **_mask_controls(),
            },
            "optional": {
                "faces": (FACES, {"tooltip": "Faces from Detect Faces. When connected, no detection runs here."}),
                "detector": (
                    DETECTOR,
                    {"tooltip": "A detector from Load Face Detector, used when no faces are connected. "
                     "With neither, MTCNN is used."},
                ),
            },
        }

    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "mask", "crops", "report")
    OUTPUT_TOOLTIPS = (
        "The images with restored faces pasted back; everything outside the faces is untouched.",
        "Where restored faces were pasted (0..1, soft edges).",
        "The restored aligned face crops (one per face, at the model's resolution).",
        "What was done: faces restored, images without faces, fallbacks.",
    )
    FUNCTION = "restore"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Detects (or takes) faces, aligns them to the 512x512 template, restores them with RestoreFormer "
        "in batches and pastes them back through a soft mask. Images without a face pass through unchanged."
    )

    def restore(self, image, model, strength, precision, feather, erode, color_match, faces=None, detector=None):
        image = check_image(image)
        found, notes = faces_or_detect(image, faces, detector, device=compute_device())
        n = len(found)
        config = model.config
        chunk = None
        if n:
            # Memory is sized for the precision that will really run (bf16 weights run in bf16).
            ran = plan_precision(precision, model.patcher.load_device, network_dtype(model.model)).precision
            device = model.load_to_device(activation_bytes_per_crop(config, ran) * min(n, 4))
            chunk = pick_chunk_size(config, device, ran, free_memory(device))
        else:
            device = compute_device()
        result = restore_faces(
            image,
            model.model,
            found,
            strength=float(strength),
            precision=precision,
            feather=float(feather),
            erode=float(erode),
            color_match=color_match,
            chunk_size=chunk,
            progress=Progress(n) if n else None,
            device=device,
            compile_options=getattr(model, "compile_options", None),
        )
        # What the loader could not honour, and how the faces were found.
        report = result.report.with_notes(*getattr(model, "notes", ()), *notes)
        text = "\n".join(report.lines(model.name))
        if report.no_face_line or report.failed_faces:  # faces left unrestored: worth a notice, not only a line
            notify(text)
        crops = to_image(result.crops) if n else placeholder_image(config.resolution)
        return (to_image(result.images), result.mask.to("cpu", copy=False), crops, text)


class AlignFaces:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The images the faces were detected in."}),
                "faces": (FACES, {"tooltip": "Faces from Detect Faces."}),
                "crop_size": (
                    "INT",
                    {"default": CROP_SIZE, "min": 16, "max": 2048, "step": 8,
                     "tooltip": "Side of the square crops; 512 is what RestoreFormer was trained on."},
                ),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("crops",)
    OUTPUT_TOOLTIPS = ("One aligned face crop per face, in the faces' order (gray images give gray RGB crops).",)
    FUNCTION = "align"
    CATEGORY = CATEGORY
    DESCRIPTION = "Warps every face to the 5-point template crop, all in one batched operation on the device."

    def align(self, image, faces, crop_size):
        image = check_image(image)
        if not len(faces):
            notify("no faces to align: connect faces that were found in this image")
            return (placeholder_image(int(crop_size)),)
        crops = align_faces(image, faces, crop_size=int(crop_size), device=compute_device())
        return (to_image(crops),)


class PasteFaces:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The images the faces were detected in."}),
                "crops": ("IMAGE", {"tooltip": "One square crop per face, in the faces' order (e.g. from Align Faces, then edited)."}),
                "faces": (FACES, {"tooltip": "The faces the crops were aligned from."}),
                **_mask_controls(),
            }
        }

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The images with the crops pasted back.", "Where crops were pasted (0..1, soft edges).")
    FUNCTION = "paste"
    CATEGORY = CATEGORY
    DESCRIPTION = "Pastes face crops back by the inverse warp through a soft mask, with an optional colour match."

    def paste(self, image, crops, faces, feather, erode, color_match):
        image = check_image(image)
        crops = check_image(crops, "crops")
        if not len(faces):
            notify("no faces to paste: the image passes through unchanged")
            return (to_image(image), torch.zeros(image.shape[:3], dtype=torch.float32))
        out, mask = paste_crops(
            image, crops, faces, feather=float(feather), erode=float(erode),
            color_match=color_match, device=compute_device(),
        )
        return (to_image(out), mask.to("cpu"))


NODES = {
    "RestoreFormerRestoreFaces": (RestoreFaces, "Restore Faces (RestoreFormer)"),
    "RestoreFormerAlignFaces": (AlignFaces, "Align Faces (RestoreFormer)"),
    "RestoreFormerPasteFaces": (PasteFaces, "Paste Faces (RestoreFormer)"),
}
