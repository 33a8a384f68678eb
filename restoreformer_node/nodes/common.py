"""Helpers the pack's nodes share: IMAGE/MASK checks, devices, progress with interruption, notices."""

from __future__ import annotations

import logging

import torch

# ComfyUI's modules are imported inside the functions, so the package imports without ComfyUI.

log = logging.getLogger("restoreformer")

# The pack's node menu and its sub-menus.
CATEGORY = "RestoreFormer"
FACES_CATEGORY = f"{CATEGORY}/faces"
INSPECT_CATEGORY = f"{CATEGORY}/inspect"

NOTICE_EVENT = "restoreformer.notice"  # shown as a toast by web/js/restoreformer_notices.js
# The ui key of the Attention Map's crop preview, read by web/js/restoreformer_attention_picker.js
# (not "images": the frontend's own preview would draw it a second time).
QUERY_CROP_UI = "rf_query_crop"

DETECTOR_FOLDER = "facedetection"  # where face packs keep facexlib's files (detectors, parsers)


def register_models_folder(name: str) -> None:
    """Make ComfyUI know models/<name> (kept as is when another pack or extra_model_paths.yaml
    already registered it)."""
    import os

    import folder_paths

    if name not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[name] = (
            [os.path.join(folder_paths.models_dir, name)],
            folder_paths.supported_pt_extensions,
        )


def load_spandrel_model(descriptor, memory_required: int = 0) -> torch.device:
    """Put a spandrel model (UPSCALE_MODEL) on ComfyUI's compute device, as the core upscale node
    does: through its patcher where newer ComfyUI attaches one, else freeing memory and moving it."""
    import comfy.model_management as mm

    patcher = getattr(descriptor, "patcher", None)
    if patcher is not None:
        mm.load_models_gpu([patcher], memory_required=memory_required, force_full_load=True)
        device = patcher.load_device
    else:
        device = mm.get_torch_device()
        mm.free_memory(mm.module_size(descriptor.model) + memory_required, device)
    descriptor.to(device)
    return torch.device(device)


def release_spandrel_model(descriptor) -> None:
    """Back to the CPU after use when ComfyUI does not manage it (what the core upscale node does)."""
    if getattr(descriptor, "patcher", None) is None:
        descriptor.to("cpu")


def check_image(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """A ComfyUI IMAGE [B, H, W, C] float tensor, C in 1..4, else a clear error naming the input."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected an IMAGE batch [B, H, W, C], got {shape}")
    if image.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{name}: expected 1 to 4 channels (gray, gray+alpha, RGB, RGBA), got {image.shape[-1]}")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name}: the IMAGE batch is empty ({tuple(image.shape)})")
    if not image.is_floating_point():
        image = image.float() / 255.0
    return image


def compute_device() -> torch.device:
    """The device ComfyUI runs models on (its --cpu / --gpu-only / device choice)."""
    import comfy.model_management

    return comfy.model_management.get_torch_device()


def free_memory(device: torch.device) -> int:
    """Bytes free on `device` as ComfyUI counts them (its own caches included)."""
    import comfy.model_management

    return int(comfy.model_management.get_free_memory(device))


def to_image(t: torch.Tensor) -> torch.Tensor:
    """Any [B, H, W, C] result -> an IMAGE on the CPU, float32 (what downstream nodes expect)."""
    return t.detach().to("cpu", torch.float32).contiguous()


def placeholder_image(size: int = 64) -> torch.Tensor:
    """A single black IMAGE for outputs that have nothing to show (a batch of 0 breaks previews)."""
    return torch.zeros(1, size, size, 3, dtype=torch.float32)


class Progress:
    """A (done, total) callback that drives ComfyUI's progress bar and honours interruption.

    `throw_exception_if_processing_interrupted` raises when the user pressed Cancel, which stops
    the pipeline between chunks.
    """

    def __init__(self, total: int) -> None:
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(max(total, 1))

    def __call__(self, done: int, total: int) -> None:
        import comfy.model_management

        self.bar.update_absolute(done, max(total, 1))
        comfy.model_management.throw_exception_if_processing_interrupted()


def notify(message: str, title: str = "RestoreFormer") -> None:
    """Tell the user: the log, plus a toast in the browser when a server is running."""
    log.warning("%s: %s", title, message)
    try:
        from server import PromptServer

        server = getattr(PromptServer, "instance", None)
        if server is not None:
            server.send_sync(NOTICE_EVENT, {"title": title, "message": message, "severity": "warn"})
    except Exception as exc:  # a missing or stopped server must never fail a run
        log.debug("could not send notice to the browser: %s", exc)


def temp_preview(image: torch.Tensor, prefix: str) -> dict:
    """Save one [H, W, C] image (0..1) as a PNG in ComfyUI's temp folder, as Preview Image does.
    Returns the {filename, subfolder, type} entry the frontend loads through /view."""
    import os

    import folder_paths
    import numpy as np
    from PIL import Image

    pixels = (image.detach().to("cpu", torch.float32).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    height, width = pixels.shape[:2]
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        prefix, folder_paths.get_temp_directory(), width, height
    )
    file = f"{name}_{counter:05}_.png"
    Image.fromarray(np.ascontiguousarray(pixels[..., :3])).save(os.path.join(folder, file), compress_level=1)
    return {"filename": file, "subfolder": subfolder, "type": "temp"}
