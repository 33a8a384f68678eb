"""facexlib's weight files (RetinaFace detectors, BiSeNet / ParseNet face parsers) that users put in
models/facedetection: read without running code, `module.` prefixes stripped, loaded strictly, and
one message for a missing file that says which file goes where and where to get it."""

from __future__ import annotations

import os

import torch


def missing_file_message(what: str, file_name: str, folders, url: str, alternative: str = "") -> str:
    """'<what> needs <file>, which is not in <folders>. Download it from <url> and put it in ...'."""
    where = " or ".join(str(f) for f in folders) if folders else "your facedetection model folder"
    return (
        f"{what} needs the weight file {file_name!r}, which is not in {where}. Download it from {url} "
        f"and put it in that folder (ComfyUI: models/facedetection){alternative}."
    )


def read_state(path: str | os.PathLike, what: str, fix: str) -> dict[str, torch.Tensor]:
    """Tensors of a .pth or .safetensors file, read without running any code it carries (the pack's
    weight reader), a `state_dict` wrapper and `module.` prefixes (DataParallel) removed."""
    from ..weights import WeightLoadError, load_weight_file

    try:
        state, _, _ = load_weight_file(path)
    except WeightLoadError as error:
        raise error.about(what, fix) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of {what} (expected a mapping of names to tensors); {fix}")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def load_strict(net: torch.nn.Module, state: dict[str, torch.Tensor], path, what: str, file_name: str) -> None:
    """Load `state` into `net` strictly; a file of another network gets one message naming the keys."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {what}: missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}. Is it {file_name}?"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:  # same names, other shapes
        raise ValueError(f"{path} does not fit {what}: {error}") from error
