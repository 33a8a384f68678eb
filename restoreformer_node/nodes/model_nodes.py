"""Node: load a RestoreFormer / RestoreFormer++ from models/facerestore_models.

The network is wrapped in ComfyUI's ModelPatcher, so `load_models_gpu` moves it to the GPU when a
node uses it and ComfyUI offloads it when a diffusion model needs the memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from ..lru import LRUCache
from ..options import WEIGHT_DTYPES
from ..runtime import plan_weight_dtype, prepare
from .common import CATEGORY, register_models_folder
from .types import MODEL, RFModel

MODEL_FOLDER = "facerestore_models"  # the folder other face-restoration packs use
log = logging.getLogger("restoreformer")


def register_model_folder() -> None:
    """Make ComfyUI know models/facerestore_models."""
    register_models_folder(MODEL_FOLDER)


# (path, size, mtime_ns, weight dtype) -> RFModel: a replaced file is reloaded, switching is free.
_cache: LRUCache[RFModel] = LRUCache(2)


def load_rf_model(path: str, name: str | None = None, weight_dtype: str = "fp32") -> RFModel:
    """Load weights (cached per file version and weight dtype) and wrap them for ComfyUI's model
    management. `weight_dtype` "bf16" holds the network in bf16 on a GPU (runtime.plan_weight_dtype)."""
    import comfy.model_management
    import comfy.model_patcher

    offload = comfy.model_management.unet_offload_device()
    load_device = comfy.model_management.get_torch_device()
    held, note = plan_weight_dtype(weight_dtype, load_device)
    notes = (note,) if note else ()
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, held)
    cached = _cache.get(key)
    if cached is not None:
        # Same network; only what the loader tells differs (bf16 asked, fp32 kept on a CPU).
        return cached if cached.notes == notes else dataclasses.replace(cached, notes=notes)
    if note:
        log.warning("RestoreFormer: %s", note)
    # Loaded onto the offload device; the fast blocks' layout follows the device it runs on.
    network = prepare(path, offload, weight_dtype, run_device=load_device).model
    patcher = comfy.model_patcher.ModelPatcher(network, load_device=load_device, offload_device=offload)
    return _cache.put(key, RFModel(patcher, network.config, name or os.path.basename(path), notes=notes))


class LoadModel:
    SEARCH_ALIASES = ["face restore model", "load restoreformer", "restoreformer++", "facerestore model"]

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        register_model_folder()
        return {
            "required": {
                "model_name": (
                    folder_paths.get_filename_list(MODEL_FOLDER),
                    {
                        "tooltip": "A RestoreFormer or RestoreFormer++ weight file in models/facerestore_models "
                        "(.safetensors from `python -m restoreformer_node convert`, or the official .ckpt / "
                        "GFPGAN .pth; pickled files are read without running their code). The variant is "
                        "detected from the file.",
                    },
                ),
            },
            "optional": {
                "weight_dtype": (
                    list(WEIGHT_DTYPES),
                    {
                        "default": "fp32",
                        "tooltip": "How the weights are stored. fp32 (default): exact, and Face Restore's "
                        "precision chooses the arithmetic. bf16: on a GPU, half the memory and faster than "
                        "precision bf16 on fp32 weights; the network then always runs in bf16 (the "
                        "dictionary search stays fp32). A CPU loads fp32 either way.",
                    },
                ),
            },
        }

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded network, for Face Restore and the inspection nodes.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loads RestoreFormer / RestoreFormer++ weights from models/facerestore_models. ComfyUI moves "
        "the network to the GPU when it is used and offloads it when other models need the memory."
    )

    def load(self, model_name: str, weight_dtype: str = "fp32"):
        import folder_paths

        register_model_folder()
        path = folder_paths.get_full_path_or_raise(MODEL_FOLDER, model_name)
        return (load_rf_model(path, model_name, weight_dtype),)


NODES = {"RestoreFormerModelLoader": (LoadModel, "Load Model (RestoreFormer)")}
