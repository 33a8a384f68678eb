"""Nodes: restore faces (align, restore, paste back in one), align faces, paste faces."""

from __future__ import annotations

import torch

from ..faces.detection import faces_or_detect
from ..faces.parsing import FaceParsing
from ..faces.pipeline import align_faces, paste_crops, restore_faces
from ..faces.segs import as_face_detector
from ..faces.template import CROP_SIZE
from ..faces.upscale import upscale_inputs
from ..model import RESTOREFORMER
from ..options import COLOR_MATCH_MODES, DEFAULT_ERODE, DEFAULT_FEATHER, PRECISIONS
from ..runtime import activation_bytes_per_crop, network_dtype, pick_chunk_size, plan_precision
from ..runtime.face_models import DEFAULT_FIDELITY, SpandrelFaceModel
from ..runtime.upscale import check_upscale_model
from .common import (
    CATEGORY,
    Progress,
    check_image,
    compute_device,
    free_memory,
    load_spandrel_model,
    notify,
    placeholder_image,
    release_spandrel_model,
    to_image,
)
from .types import DETECTOR_OR_BBOX, FACES, MODEL_OR_FACE_MODEL, PARSER, UPSCALE_MODEL, RFModel

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


_TIP_MASK = (
    "Optional MASK of the image's size: faces are pasted only where it is white (multiplied with the "
    "soft paste mask), e.g. to keep a hand or hair in front of a face."
)
_TIP_PARSER = (
    "Optional face parser from Load Face Parser: only the chosen face regions (skin, eyes, lips, ...) "
    "are pasted, so hair, hands and glasses in front of the face keep their original pixels."
)


def _paste_limits() -> dict:
    return {"mask": ("MASK", {"tooltip": _TIP_MASK}), "parser": (PARSER, {"tooltip": _TIP_PARSER})}


def _mask_controls() -> dict:
    return {
        "feather": ("FLOAT", {"default": DEFAULT_FEATHER, "min": 0.0, "max": 256.0, "step": 1.0, "tooltip": _TIP_FEATHER}),
        "erode": ("FLOAT", {"default": DEFAULT_ERODE, "min": 0.0, "max": 200.0, "step": 1.0, "tooltip": _TIP_ERODE}),
        "color_match": (list(COLOR_MATCH_MODES), {"default": "none", "tooltip": _TIP_COLOR}),
    }


class RestoreFaces:
    SEARCH_ALIASES = ["face restore", "restore face", "face restoration", "fix faces", "enhance faces", "gfpgan", "codeformer", "face detailer", "facerestore", "restoreformer"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Images (a batch or video frames); RGB, RGBA (alpha is kept) or gray."}),
                "model": (
                    MODEL_OR_FACE_MODEL,
                    {"tooltip": "A RestoreFormer / RestoreFormer++ from Load Model (RestoreFormer), or a GFPGAN, "
                     "CodeFormer or RestoreFormer file loaded by the core Load Upscale Model node (from "
                     "models/upscale_models), to compare models on the same faces."},
                ),
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
                    DETECTOR_OR_BBOX,
                    {"tooltip": "A detector from Load Face Detector (RestoreFormer), or an Impact Pack BBOX_DETECTOR (YOLO face "
                     "boxes, threshold 0.5, with MTCNN landmarks inside each box), used when no faces are "
                     "connected. With neither, MTCNN is used."},
                ),
                "upscale_model": (
                    UPSCALE_MODEL,
                    {"tooltip": "An upscaler from Load Upscale Model (ESRGAN, SwinIR, ...): the whole image is "
                     "upscaled first (in tiles), then the faces are restored at the new size and pasted into "
                     "the upscaled image. Unconnected: the image keeps its size."},
                ),
                **_paste_limits(),
                "codeformer_fidelity": (
                    "FLOAT",
                    {"default": DEFAULT_FIDELITY, "min": 0.0, "max": 1.0, "step": 0.01,
                     "tooltip": "Only for a CodeFormer model: 0 restores most strongly, 1 stays closest to the "
                     "input face."},
                ),
            },
        }

    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "mask", "crops", "report")
    OUTPUT_TOOLTIPS = (
        "The images with restored faces pasted back (upscaled when an upscale model is connected); "
        "everything outside the faces is untouched.",
        "Where restored faces were pasted (0..1, soft edges), at the output's size.",
        "The restored aligned face crops (one per face, at the model's resolution).",
        "What was done: the model that ran, faces restored, upscaling, images without faces, fallbacks.",
    )
    FUNCTION = "restore"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Detects (or takes) faces, aligns them to the 512x512 template, restores them with RestoreFormer "
        "(or a GFPGAN / CodeFormer loaded by Load Upscale Model) in batches and pastes them back through "
        "a soft mask, optionally into an upscaled image. Images without a face pass through unchanged."
    )

    def restore(
        self, image, model, strength, precision, feather, erode, color_match, faces=None, detector=None,
        upscale_model=None, mask=None, parser=None, codeformer_fidelity=DEFAULT_FIDELITY,
    ):
        image = check_image(image)
        face_model = None if isinstance(model, RFModel) else SpandrelFaceModel(model, float(codeformer_fidelity))
        if upscale_model is not None:
            check_upscale_model(upscale_model)  # before any work
        detector = as_face_detector(detector, compute_device())
        found, notes = faces_or_detect(image, faces, detector, device=compute_device())
        if upscale_model is not None:
            image, found, mask, note = _upscaled(image, found, upscale_model, mask)
            notes.append(note)
        n = len(found)
        if face_model is not None:
            result, name, size = _restore_spandrel(model, face_model, image, found, n, strength, precision,
                                                   feather, erode, color_match, mask, parser)
            loader_notes = ()
        else:
            result = _restore_rf(model, image, found, n, strength, precision, feather, erode, color_match, mask, parser)
            name, size, loader_notes = model.name, model.config.resolution, getattr(model, "notes", ())
        # What the loader could not honour, and how the faces were found.
        report = result.report.with_notes(*loader_notes, *notes)
        text = "\n".join(report.lines(name))
        if report.no_face_line:  # images left unchanged: worth a notice, not only a line in the report
            notify(text)
        crops = to_image(result.crops) if n else placeholder_image(size)
        return (to_image(result.images), result.mask.to("cpu", copy=False), crops, text)


def _upscaled(image, faces, upscale_model, mask):
    """The image upscaled by the model (on ComfyUI's device, tile by tile), faces and mask carried along."""
    # the core upscale node's estimate for a 512 tile
    load_spandrel_model(upscale_model, 512 * 512 * 3 * 4 * max(int(upscale_model.scale), 1) * 384)
    try:
        return upscale_inputs(image, faces, upscale_model, mask=mask, progress=Progress(1))
    finally:
        release_spandrel_model(upscale_model)


def _restore_rf(model, image, found, n, strength, precision, feather, erode, color_match, mask, parser):
    config = model.config
    chunk = None
    if n:
        # Memory is sized for the precision that will really run (bf16 weights run in bf16).
        ran = plan_precision(precision, model.patcher.load_device, network_dtype(model.model)).precision
        device = model.load_to_device(activation_bytes_per_crop(config, ran) * min(n, 4))
        chunk = pick_chunk_size(config, device, ran, free_memory(device))
    else:
        device = compute_device()
    return restore_faces(
        image, model.model, found, strength=float(strength), precision=precision, feather=float(feather),
        erode=float(erode), color_match=color_match, chunk_size=chunk, progress=Progress(n) if n else None,
        device=device, compile_options=getattr(model, "compile_options", None), mask=mask,
        parsing=_parsing(parser),
    )


def _restore_spandrel(descriptor, face_model, image, found, n, strength, precision, feather, erode, color_match,
                      mask, parser):
    """Restore with a spandrel face model (GFPGAN, CodeFormer, RestoreFormer from Load Upscale Model)."""
    device = compute_device()
    chunk = None
    if n:
        ran = plan_precision(precision, device, network_dtype(face_model), face_model.supports_half).precision
        # no geometry of its own to size memory by: the published RestoreFormer's is close (512 px U-Nets)
        device = load_spandrel_model(descriptor, activation_bytes_per_crop(RESTOREFORMER, ran) * min(n, 4))
        chunk = pick_chunk_size(None, device, ran, free_memory(device))
    try:
        result = restore_faces(
            image, face_model, found, strength=float(strength), precision=precision, feather=float(feather),
            erode=float(erode), color_match=color_match, chunk_size=chunk, progress=Progress(n) if n else None,
            device=device, mask=mask, parsing=_parsing(parser),
        )
    finally:
        if n:
            release_spandrel_model(descriptor)
    return result, face_model.name, face_model.crop_size


def _parsing(parser) -> FaceParsing | None:
    if parser is None or isinstance(parser, FaceParsing):
        return parser
    raise TypeError(f"parser: expected a face parser from Load Face Parser, got {type(parser).__name__}")
class AlignFaces:
    SEARCH_ALIASES = ["crop faces", "face crop", "face alignment", "aligned faces"]

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
    SEARCH_ALIASES = ["paste back", "uncrop faces", "face paste", "blend faces"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The images the faces were detected in."}),
                "crops": ("IMAGE", {"tooltip": "One square crop per face, in the faces' order (e.g. from Align Faces, then edited)."}),
                "faces": (FACES, {"tooltip": "The faces the crops were aligned from."}),
                **_mask_controls(),
            },
            "optional": _paste_limits(),
        }

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The images with the crops pasted back.", "Where crops were pasted (0..1, soft edges).")
    FUNCTION = "paste"
    CATEGORY = CATEGORY
    DESCRIPTION = "Pastes face crops back by the inverse warp through a soft mask, with an optional colour match."

    def paste(self, image, crops, faces, feather, erode, color_match, mask=None, parser=None):
        image = check_image(image)
        crops = check_image(crops, "crops")
        if not len(faces):
            notify("no faces to paste: the image passes through unchanged")
            return (to_image(image), torch.zeros(image.shape[:3], dtype=torch.float32))
        out, mask = paste_crops(
            image, crops, faces, feather=float(feather), erode=float(erode),
            color_match=color_match, device=compute_device(), mask=mask, parsing=_parsing(parser),
        )
        return (to_image(out), mask.to("cpu"))


NODES = {
    "RestoreFormerRestoreFaces": (RestoreFaces, "Face Restore (RestoreFormer)"),
    "RestoreFormerAlignFaces": (AlignFaces, "Align Faces (RestoreFormer)"),
    "RestoreFormerPasteFaces": (PasteFaces, "Paste Faces (RestoreFormer)"),
}
