"""Loading a RestoreFormer from any accepted weight file, and saving one as safetensors."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model import RestoreFormer, RestoreFormerConfig
from .detect import detect_config, misfit_error, require_plain_tensors, state_dict_problems
from .read import FORMAT_NAME, read_state_dict

FORMAT_VERSION = "1"


@dataclass(frozen=True)
class WeightsInfo:
    """Where a loaded model's weights came from (set as `model.weights_info`)."""

    path: str
    layout: str
    variant: str
    source: str | None  # original file name recorded by `save_restoreformer`, if any


@dataclass(frozen=True)
class CheckedWeights:
    """A weight file read and checked (`read_checked`), before any network is built."""

    state_dict: dict[str, torch.Tensor]
    layout: str
    metadata: dict[str, str]
    config: RestoreFormerConfig
    problems: list[str]  # the strict check's findings (state_dict_problems); empty when it passes

    def require_fit(self, source: str) -> None:
        """Raise the WeightLoadError naming the problems, if there are any."""
        if self.problems:
            raise misfit_error(self.problems, self.config, source, self.layout)


def read_checked(path: str | os.PathLike, config: RestoreFormerConfig | None = None) -> CheckedWeights:
    """Read a weight file and run the strict check, the one path `load_restoreformer`, `convert`
    and `info` share: tensors that are not dense floating-point weights refuse the file
    (WeightLoadError) before their shapes are used; the configuration (the file's metadata, or
    detected from shapes) is validated; keys, shapes and finiteness are compared with it."""
    path = os.fspath(path)
    state_dict, layout, metadata = read_state_dict(path)
    require_plain_tensors(state_dict, path, layout)
    if config is None:
        config = detect_config(state_dict, metadata, source=path, layout=layout)
    return CheckedWeights(state_dict, layout, metadata, config, state_dict_problems(state_dict, config))


def load_restoreformer(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    config: RestoreFormerConfig | None = None,
) -> RestoreFormer:
    """A RestoreFormer / RestoreFormer++ in eval mode with the weights of `path`.

    The variant and geometry are detected from the file (see `detect_config`) unless `config` is
    given. Loading is strict: missing and unexpected keys and shape mismatches are named in a
    WeightLoadError. Floating-point weights are cast to `dtype` on `device`.
    """
    path = os.fspath(path)
    checked = read_checked(path, config)
    checked.require_fit(path)
    state_dict, layout, metadata, config = checked.state_dict, checked.layout, checked.metadata, checked.config

    # Build without allocating random weights, then take the file's tensors as the parameters.
    with torch.device("meta"):
        model = RestoreFormer(config)
    device = torch.device(device)
    state_dict = {
        k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) for k, v in state_dict.items()
    }
    model.load_state_dict(state_dict, strict=True, assign=True)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:  # a tensor the state dict does not carry (would be a model-code bug)
        raise RuntimeError(f"RestoreFormer tensors without weights after loading: {left_on_meta}")
    model.eval()
    model.weights_info = WeightsInfo(path, layout, config.variant, metadata.get("source") or None)
    return model


def save_restoreformer(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    config: RestoreFormerConfig,
    source: str | os.PathLike | None = None,
) -> Path:
    """Write weights as `.safetensors` with metadata, atomically (temp file + os.replace).

    Metadata: format, format_version, variant, config (JSON), source (file name only),
    tensor_count, parameter_count. The tensors are checked against `config` first (ValueError
    naming the differences), so a file that saves always loads. Returns the written path.
    """
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"{path}: RestoreFormer weights are written as .safetensors; name the file *.safetensors")
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, nn.Module) else model_or_state_dict
    problems = state_dict_problems(state, config)
    if problems:
        raise ValueError(f"cannot save {path}: the tensors do not fit {config.variant}: " + "; ".join(problems))
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in state.items():
        tensor = value.detach().to("cpu").contiguous()
        if tensor.untyped_storage().data_ptr() in storages:  # safetensors refuses shared memory
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "variant": config.variant,
        "config": config.to_json(),
        "source": Path(os.fspath(source)).name if source is not None else "",
        "tensor_count": str(len(tensors)),
        "parameter_count": str(sum(t.numel() for t in tensors.values())),
    }
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name created exclusively beside the target (never a planted file or link), then
    # renamed over it: readers see the old file or the whole new one.
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, temp, metadata=metadata)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    return path
