"""Node: restore through torch.compile (the pack's counterpart of ComfyUI's TorchCompileModel).

Like ComfyUI's own node, this changes nothing until the model is used: it returns a copy of the
RF_MODEL that asks Face Restore to run the network through torch.compile. The first restore
compiles (about a minute); every later chunk and run of the same batch size reuses the graph.
If compiling fails, Face Restore says why and restores without it.
"""

from __future__ import annotations

import dataclasses

from ..options import COMPILE_MODES
from ..runtime import CompileOptions
from .common import CATEGORY
from .types import MODEL, RFModel


class CompileModel:
    SEARCH_ALIASES = ["torch.compile", "compile", "speed up"]

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL, {"tooltip": "A RestoreFormer / RestoreFormer++ from Load Model (RestoreFormer)."}),
                "mode": (
                    list(COMPILE_MODES),
                    {
                        "default": "default",
                        "tooltip": "torch.compile mode. 'default' compiles in about a minute (recommended); "
                        "'reduce-overhead' adds CUDA graphs (less launch overhead, more memory); "
                        "'max-autotune-no-cudagraphs' tries kernel variants while compiling (several minutes).",
                    },
                ),
            }
        }

    RETURN_TYPES = (MODEL,)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = (
        "The same network, restored through torch.compile by Face Restore (inspection nodes run it "
        "as usual).",
    )
    FUNCTION = "compile"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Makes Face Restore run the network through torch.compile (inductor). Pays when many faces "
        "are restored, e.g. video frames: the first run compiles for about a minute, later batches "
        "run faster. Needs Triton on NVIDIA GPUs; without it Face Restore warns and restores as usual. "
        "On a CPU it does not compile (the uncompiled network is faster there) and the report says so."
    )

    def compile(self, model, mode: str):
        if not isinstance(model, RFModel):
            raise ValueError("model: connect a RestoreFormer model from Load Model (RestoreFormer)")
        # A copy: the loader's cached value (shared with other branches of the graph) stays eager.
        return (dataclasses.replace(model, compile_options=CompileOptions(mode=mode)),)


NODES = {"RestoreFormerCompileModel": (CompileModel, "Compile Model (RestoreFormer)")}
