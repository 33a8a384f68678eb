"""The pack's custom ComfyUI types: their names (global across packs, hence prefixed) and the
RF_MODEL value."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import RestoreFormerConfig
from ..runtime import CompileOptions

MODEL = "RF_MODEL"  # an RFModel (below)
FACES = "RF_FACES"  # restoreformer_node.faces.types.Faces
DETECTOR = "RF_FACE_DETECTOR"  # a restoreformer_node.faces.detectors.FaceDetector
PARSER = "RF_FACE_PARSER"  # a restoreformer_node.faces.parsing.FaceParsing

# Types of other packs, read by their contract (nothing of theirs is imported).
UPSCALE_MODEL = "UPSCALE_MODEL"  # ComfyUI core: a spandrel ImageModelDescriptor
SEGS = "SEGS"  # Impact Pack: ((height, width), [SEG, ...]) (restoreformer_node.faces.segs)
BBOX_DETECTOR = "BBOX_DETECTOR"  # Impact Pack: an object with detect(image, threshold, dilation, crop_factor, ...)

# Inputs that take either type (ComfyUI matches comma-separated type lists).
MODEL_OR_FACE_MODEL = f"{MODEL},{UPSCALE_MODEL}"
DETECTOR_OR_BBOX = f"{DETECTOR},{BBOX_DETECTOR}"


@dataclass(frozen=True)
class RFModel:
    """The RF_MODEL value: a loaded network under ComfyUI's memory management."""

    patcher: object  # comfy.model_patcher.ModelPatcher holding the RestoreFormer
    config: RestoreFormerConfig
    name: str  # file name in facerestore_models, for messages
    # Set by Compile Model (RestoreFormer) (on a copy made with dataclasses.replace): restoration runs
    # the network through torch.compile. Inspection nodes always run it eagerly.
    compile_options: CompileOptions | None = None
    # What the loader had to tell (e.g. a weight_dtype it could not honour); Face Restore reports it.
    notes: tuple[str, ...] = ()

    @property
    def model(self) -> torch.nn.Module:
        return self.patcher.model

    def load_to_device(self, memory_required: int = 0) -> torch.device:
        """Ask ComfyUI to put the weights on the compute device (evicting others if needed)."""
        import comfy.model_management

        comfy.model_management.load_models_gpu([self.patcher], memory_required=memory_required, force_full_load=True)
        return self.patcher.load_device
