"""Loading a RestoreFormer from any accepted weight file, and saving one as safetensors."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model import RestoreFormer, RestoreFormerConfig
from .detect import detect_config, require_fit, state_dict_problems
from .read import FORMAT_NAME, read_state_dict

FORMAT_VERSION = "1"


@dataclass(frozen=True)
class WeightsInfo:
    """Where a loaded model's weights came from (set as `model.weights_info`)."""

    path: str
    layout: str
    variant: str
    source: str | None  # original file name recorded by `save_restoreformer`, if any


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
    state_dict, layout, metadata = read_state_dict(path)
    if config is None:
        config = detect_config(state_dict, metadata, source=path, layout=layout)
    require_fit(state_dict, config, path, layout)

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
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file(tensors, os.fspath(temp), metadata=metadata)
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return path
