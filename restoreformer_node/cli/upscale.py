"""`restore --upscale-model FILE` / `--upscale N`: restore at a larger size. The whole image is
upscaled first (a spandrel upscaler such as Real-ESRGAN, in tiles; or bicubic), the faces found on
the original are carried to the new size, restored there and pasted into the upscaled image.

Kept apart from cli/restore.py, which only calls `add_arguments` and `Upscale.apply`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--upscale-model", metavar="FILE",
        help="upscale every image with this model first (any single-image upscaler spandrel reads: ESRGAN, "
        "Real-ESRGAN, SwinIR, ...), then restore the faces at the new size",
    )
    parser.add_argument(
        "--upscale", type=float, metavar="N",
        help="final size as N times the input (default: the upscale model's scale; without a model the "
        "image is resized bicubically)",
    )


@dataclass(frozen=True)
class Upscale:
    model: object | None  # a spandrel descriptor on the run's device, or None
    factor: float | None

    def describe(self) -> str:
        from ..runtime.face_models import describe

        parts = [describe(self.model)] if self.model is not None else []
        if self.factor is not None:
            parts.append(f"to {self.factor:g}x")
        return "upscale " + ", ".join(parts)

    def apply(self, images, faces):
        """(upscaled images, faces at the new size, note) for one batch."""
        from ..faces.upscale import upscale_inputs

        up = upscale_inputs(images, faces, self.model, self.factor)
        return up.images, up.faces, up.note


def load_upscale_model(path: str, device):
    """A spandrel upscaler from a weight file, read without running code it may carry."""
    from spandrel import ImageModelDescriptor, ModelLoader

    from ..runtime.upscale import check_upscale_model
    from ..weights import load_weight_file

    state, _, _ = load_weight_file(path)
    if not isinstance(state, dict):
        raise ValueError(f"--upscale-model {path}: not a state dict of an upscale model")
    descriptor = ModelLoader(device).load_from_state_dict(state)
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ValueError(f"--upscale-model {path}: {type(descriptor).__name__} is not a single-image model")
    check_upscale_model(descriptor)
    return descriptor.eval()


def prepare(args: argparse.Namespace, device) -> Upscale | None:
    """The upscale asked for on the command line (None when neither option is given). Raises
    ValueError with a message naming the option."""
    factor, path = getattr(args, "upscale", None), getattr(args, "upscale_model", None)
    if factor is None and path is None:
        return None
    if factor is not None and not 0 < factor <= 16:
        raise ValueError(f"--upscale must be in (0, 16], got {factor:g}")
    if path is not None and not Path(path).is_file():
        raise ValueError(f"--upscale-model {path}: no such file")
    model = load_upscale_model(path, device) if path is not None else None
    return Upscale(model, factor)
