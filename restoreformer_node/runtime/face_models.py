"""spandrel's face-restoration models (GFPGAN, CodeFormer, spandrel's own RestoreFormer) behind the
pipeline's model contract: `model(x)` maps aligned 512x512 crops in [-1, 1] to the same.

ComfyUI's core Load Upscale Model node loads these files into spandrel descriptors. Calling a
descriptor feeds [0, 1] and clamps to [0, 1], which is right for RestoreFormer only: GFPGAN and
CodeFormer were trained on [-1, 1], so their networks are called directly here.
- GFPGAN injects fresh StyleGAN noise on every call unless told not to; it runs with the noise
  stored in its weights (randomize_noise=False), so the same face gives the same result.
- CodeFormer takes a fidelity weight w in [0, 1] (0: strongest restoration, 1: closest to the
  input). It lives in spandrel_extra_arches (non-commercial licence): it runs when ComfyUI loaded
  it, and nothing here needs that package.
"""

from __future__ import annotations

import torch

FACE_SIZE = 512  # what all three networks take (GFPGAN's style layer and CodeFormer's grid fix it)
FACE_ARCHITECTURES = ("GFPGAN", "CodeFormer", "RestoreFormer")
DEFAULT_FIDELITY = 0.5  # CodeFormer's own default (and facerestore_cf's, ReActor's)


class FaceModelError(ValueError):
    """A model that cannot run as a 512 face-restoration model; the message says what to do."""


def describe(descriptor: object) -> str:
    """'RealESRGAN 4x (ESRGAN, SR)': what spandrel says a loaded model is, for messages."""
    arch = getattr(descriptor, "architecture", None)
    arch_name = getattr(arch, "name", None) or getattr(arch, "id", None) or type(descriptor).__name__
    scale = getattr(descriptor, "scale", None)
    purpose = getattr(descriptor, "purpose", None)
    parts = [f"{scale}x" if scale else "", str(purpose) if purpose else ""]
    return f"{arch_name} ({', '.join(p for p in parts if p) or 'unknown kind'})"


def architecture_id(descriptor: object) -> str | None:
    return getattr(getattr(descriptor, "architecture", None), "id", None)


def is_face_model(descriptor: object) -> bool:
    """True for spandrel descriptors of a face-restoration architecture (purpose FaceSR)."""
    return architecture_id(descriptor) in FACE_ARCHITECTURES or getattr(descriptor, "purpose", None) == "FaceSR"


class SpandrelFaceModel(torch.nn.Module):
    """A spandrel face model as `model(x)`: x [n, 3, S, S] in [-1, 1] -> the same (S = crop_size,
    512 for every model spandrel loads)."""

    def __init__(self, descriptor: object, fidelity: float = DEFAULT_FIDELITY):
        super().__init__()
        check_face_model(descriptor)
        if not 0.0 <= fidelity <= 1.0:
            raise FaceModelError(f"codeformer_fidelity must be in [0, 1], got {fidelity}")
        self.net = descriptor.model
        self.architecture = architecture_id(descriptor)
        # RestoreFormer records its resolution (spandrel's loader builds 512); the others are 512 by design
        hyper = getattr(self.net, "hyperparameters", None) or {}
        self.crop_size = int(hyper.get("resolution", FACE_SIZE)) if self.architecture == "RestoreFormer" else FACE_SIZE
        self.fidelity = float(fidelity)
        # spandrel marks which of these networks are unsafe in fp16 (GFPGAN, CodeFormer, RestoreFormer)
        self.supports_half = bool(getattr(descriptor, "supports_half", False))
        extra = f", fidelity {self.fidelity:g}" if self.architecture == "CodeFormer" else ""
        self.name = f"{self.architecture} (spandrel{extra})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.architecture == "GFPGAN":
            return self.net(x, return_rgb=False, randomize_noise=False)[0]
        if self.architecture == "CodeFormer":
            return self.net(x, weight=self.fidelity)[0]
        return self.net(x)[0]  # RestoreFormer: (image, None)


def check_face_model(descriptor: object) -> None:
    """Raise FaceModelError unless `descriptor` is a spandrel GFPGAN / CodeFormer / RestoreFormer
    that restores 512x512 RGB faces."""
    if not hasattr(descriptor, "model") or not hasattr(descriptor, "architecture"):
        raise FaceModelError(
            f"model: expected a RestoreFormer model or a face-restoration model loaded by Load Upscale "
            f"Model, got {type(descriptor).__name__}"
        )
    arch = architecture_id(descriptor)
    if arch not in FACE_ARCHITECTURES:
        raise FaceModelError(
            f"model: {describe(descriptor)} is not a face-restoration model: Restore Faces runs models "
            f"that restore aligned {FACE_SIZE}x{FACE_SIZE} faces ({', '.join(FACE_ARCHITECTURES)} from "
            "Load Upscale Model, or RestoreFormer / RestoreFormer++ from Load RestoreFormer Model). To "
            "upscale the whole image with it, connect it to upscale_model instead."
        )
    channels = (getattr(descriptor, "input_channels", 3), getattr(descriptor, "output_channels", 3))
    if channels != (3, 3) or getattr(descriptor, "scale", 1) != 1:
        raise FaceModelError(
            f"model: this {describe(descriptor)} takes {channels[0]} and gives {channels[1]} channels at "
            f"scale {getattr(descriptor, 'scale', '?')}; only RGB face models of scale 1 restore "
            f"{FACE_SIZE}x{FACE_SIZE} faces"
        )
