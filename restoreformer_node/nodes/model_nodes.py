"""Node: load a RestoreFormer / RestoreFormer++ from models/facerestore_models.

The network is wrapped in ComfyUI's ModelPatcher, so `load_models_gpu` moves it to the GPU when a
node uses it and ComfyUI offloads it when a diffusion model needs the memory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ..faces.compiled import CompileOptions
from ..model import RestoreFormerConfig
from ..model.precision import WEIGHT_DTYPES, stored_weight_dtype
from .common import register_models_folder
from .types import MODEL

MODEL_FOLDER = "facerestore_models"  # the folder other face-restoration packs use
CATEGORY = "RestoreFormer"
log = logging.getLogger("restoreformer")


def register_model_folder() -> None:
    """Make ComfyUI know models/facerestore_models."""
    register_models_folder(MODEL_FOLDER)


@dataclass(frozen=True)
class RFModel:
    """The RF_MODEL value: a loaded network under ComfyUI's memory management."""

    patcher: object  # comfy.model_patcher.ModelPatcher holding the RestoreFormer
    config: RestoreFormerConfig
    name: str  # file name in facerestore_models, for messages
    # Set by Compile RestoreFormer Model (on a copy made with dataclasses.replace): restoration runs
    # the network through torch.compile. Inspection nodes always run it eagerly.
    compile_options: CompileOptions | None = None
    # What the loader had to tell (e.g. a weight_dtype it could not honour); Restore Faces reports it.
    notes: tuple[str, ...] = ()

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model

    def load_to_device(self, memory_required: int = 0) -> torch.device:
        """Ask ComfyUI to put the weights on the compute device (evicting others if needed)."""
        import comfy.model_management

        comfy.model_management.load_models_gpu(
            [self.patcher], memory_required=memory_required, force_full_load=True
        )
        return self.patcher.load_device


# (path, size, mtime_ns, weight dtype) -> RFModel; a replaced file is reloaded, switching is free.
_CACHE_SIZE = 2
_cache: OrderedDict[tuple, RFModel] = OrderedDict()
_lock = threading.Lock()


def load_rf_model(path: str, name: str | None = None, weight_dtype: str = "fp32") -> RFModel:
    """Load weights (cached per file version and weight dtype) and wrap them for ComfyUI's model
    management. `weight_dtype` "bf16" stores the network in bf16 on a GPU (see stored_weight_dtype)."""
    import comfy.model_management
    import comfy.model_patcher

    from ..model.fast import optimize_for_inference, prefers_channels_last
    from ..model.precision import cast_weights
    from ..weights import load_restoreformer

    offload = comfy.model_management.unet_offload_device()
    load_device = comfy.model_management.get_torch_device()
    stored, note = stored_weight_dtype(weight_dtype, load_device)
    notes = (note,) if note else ()
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stored)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            cached = _cache[key]
            # Same network; only what the loader tells differs (bf16 asked, fp32 kept on a CPU).
            return cached if cached.notes == notes else dataclasses.replace(cached, notes=notes)
    if note:
        log.warning("RestoreFormer: %s", note)
    network = load_restoreformer(path, device=offload).eval()
    cast_weights(network, stored)
    # Same weights and keys, faster blocks (bench/README.md); the memory format is chosen for the
    # device the network will run on, not the offload device it is loaded to.
    optimize_for_inference(network, channels_last=prefers_channels_last(load_device))
    patcher = comfy.model_patcher.ModelPatcher(network, load_device=load_device, offload_device=offload)
    value = RFModel(patcher, network.config, name or os.path.basename(path), notes=notes)
    with _lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


class LoadModel:
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
                        "tooltip": "How the weights are stored. fp32 (default): exact, and Restore Faces' "
                        "precision chooses the arithmetic. bf16: on a GPU, half the memory and 14-21% "
                        "less time than precision bf16 on fp32 weights; the network then always runs in bf16 "
                        "(the dictionary search stays fp32). A CPU loads fp32 either way.",
                    },
                ),
            },
        }

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded network, for Restore Faces and the inspection nodes.",)
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


NODES = {"RestoreFormerModelLoader": (LoadModel, "Load RestoreFormer Model")}
