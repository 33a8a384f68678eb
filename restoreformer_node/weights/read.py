"""Reading a weight file of any accepted layout into a flat state dict with the published keys.

Accepted layouts (the file's bytes decide, not its extension):
- our `.safetensors` (config JSON in the metadata) or any safetensors state dict;
- the official PyTorch-Lightning `.ckpt`: weights under `state_dict`, keys prefixed `vqvae.`;
  optimizer states, callbacks, hyper-parameters and other Lightning entries are ignored;
- BasicSR/GFPGAN `.pth`: bare keys under `params_ema` (preferred) or `params`;
- a bare state dict. A `module.` prefix (DataParallel) is removed in every layout.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import WeightLoadError, list_names
from .pickle_safety import safe_torch_load

# Layout names as they appear in errors and in `read_state_dict`'s result.
LAYOUT_OURS = "restoreformer safetensors"
LAYOUT_SAFETENSORS = "safetensors state dict"
LAYOUT_LIGHTNING = "Lightning checkpoint (state_dict, vqvae.*)"
LAYOUT_PARAMS_EMA = "BasicSR/GFPGAN checkpoint (params_ema)"
LAYOUT_PARAMS = "BasicSR/GFPGAN checkpoint (params)"
LAYOUT_BARE = "bare state dict"

CONTAINER_SAFETENSORS = "safetensors"
CONTAINER_ZIP = "PyTorch zip checkpoint"
CONTAINER_PICKLE = "PyTorch pickle"

# Metadata written by `save_restoreformer`; `format` marks files whose config can be trusted.
FORMAT_NAME = "restoreformer"

_MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors itself refuses larger headers

_WHERE_TO_GET = (
    "use RestoreFormer.ckpt or RestoreFormer++.ckpt from release v1.0.0 of "
    "github.com/wzhouxiff/RestoreFormerPlusPlus, or RestoreFormer.pth from release v1.3.4 of "
    "github.com/TencentARC/GFPGAN"
)


def _container(path: str) -> str:
    """Which reader a file needs, from its first bytes; raises for files no reader accepts."""
    if not os.path.exists(path):
        raise WeightLoadError(
            path,
            "the file does not exist.",
            f"check the path; weight files go in ComfyUI's models/facerestore_models/ ({_WHERE_TO_GET}).",
        )
    if os.path.isdir(path):
        raise WeightLoadError(path, "this is a directory, not a weight file.", "pass the weight file inside it.")
    size = os.path.getsize(path)
    if size == 0:
        raise WeightLoadError(
            path,
            "the file is empty (0 bytes), probably an interrupted download.",
            f"delete it and download it again ({_WHERE_TO_GET}).",
        )
    with open(path, "rb") as f:
        head = f.read(16)
    # safetensors first: its 8-byte header length may itself start with 0x80.
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= _MAX_SAFETENSORS_HEADER:
            return CONTAINER_SAFETENSORS
    if head.startswith(b"PK\x03\x04"):
        return CONTAINER_ZIP
    if head[:1] == b"\x80":
        return CONTAINER_PICKLE
    if Path(path).suffix.lower() == ".safetensors":
        return CONTAINER_SAFETENSORS
    raise WeightLoadError(
        path,
        f"the file is not a weight file: its first bytes ({head[:8].hex(' ')}) are neither safetensors, "
        "a PyTorch zip checkpoint nor a pickle. It may be damaged, or an HTML page saved in place of "
        "the download.",
        f"download the file again ({_WHERE_TO_GET}).",
    )


def _read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as error:  # SafetensorError and friends: truncated or malformed
        raise WeightLoadError(
            path,
            f"the safetensors file is damaged or truncated ({' '.join(str(error).split())}).",
            "download the file again (or, for a file made by `convert`, convert the original again).",
            layout=CONTAINER_SAFETENSORS,
        ) from None
    return tensors, metadata


def _strip_prefix(state: dict[str, object], prefix: str) -> tuple[dict[str, object], bool]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}, True
    return state, False


def _pick_weights(obj: object, path: str, container: str) -> tuple[Mapping, str]:
    """The mapping that holds the weights inside an unpickled checkpoint, and its layout."""
    if not isinstance(obj, Mapping):
        raise WeightLoadError(
            path,
            f"the file holds a {type(obj).__name__}, not a dictionary of weights.",
            f"pass a state-dict checkpoint ({_WHERE_TO_GET}).",
            layout=container,
        )
    for key, layout in (("state_dict", LAYOUT_LIGHTNING), ("params_ema", LAYOUT_PARAMS_EMA), ("params", LAYOUT_PARAMS)):
        if isinstance(obj.get(key), Mapping):
            return obj[key], layout
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, LAYOUT_BARE
    raise WeightLoadError(
        path,
        f"no weights found: the top-level entries are {list_names(map(str, obj.keys()))}, and none of "
        "them is `state_dict` (Lightning), `params_ema`/`params` (BasicSR/GFPGAN) or a tensor.",
        f"pass a RestoreFormer weight file ({_WHERE_TO_GET}).",
        layout=container,
    )


def load_weight_file(path: str | os.PathLike) -> tuple[object, str, dict[str, str]]:
    """The contents of a weight file of any accepted container, read without running code:
    (object, container, metadata). safetensors give a dict of tensors and their metadata; pickles
    (zip or legacy) give the unpickled object and empty metadata. Raises WeightLoadError."""
    path = os.fspath(path)
    container = _container(path)
    if container == CONTAINER_SAFETENSORS:
        tensors, metadata = _read_safetensors(path)
        return tensors, container, metadata
    return safe_torch_load(path, container), container, {}


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    """Read any accepted weight file (see module docstring) on the CPU.

    Returns (state_dict with the published key names, layout name, metadata). `metadata` is the
    safetensors metadata (our files carry `config`, `variant`, `source`, ...), or for pickles a
    small record of what was set aside (`ignored_keys`). Nothing in a pickle is executed.
    Raises WeightLoadError for missing, empty, damaged, code-carrying or weightless files.
    """
    path = os.fspath(path)
    notes: dict[str, str] = {}
    obj, container, metadata = load_weight_file(path)
    if container == CONTAINER_SAFETENSORS:
        weights = obj
        layout = LAYOUT_OURS if metadata.get("format") == FORMAT_NAME else LAYOUT_SAFETENSORS
    else:
        weights, layout = _pick_weights(obj, path, container)

    state = {str(k): v for k, v in weights.items()}
    non_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        notes["ignored_entries"] = ", ".join(non_tensors)
        state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightLoadError(
            path, "the file contains no tensors.", f"pass a RestoreFormer weight file ({_WHERE_TO_GET}).", layout
        )

    state, _ = _strip_prefix(state, "module.")
    if layout == LAYOUT_LIGHTNING and any(k.startswith("vqvae.") for k in state):
        # The restoration network is the LightningModule's `vqvae`; anything beside it (loss
        # networks, discriminators) is training machinery.
        others = [k for k in state if not k.startswith("vqvae.")]
        if others:
            notes["ignored_keys"] = str(len(others))
        state = {k[len("vqvae.") :]: v for k, v in state.items() if k.startswith("vqvae.")}
    else:
        state, stripped = _strip_prefix(state, "vqvae.")
        if stripped:
            layout += ", vqvae.* prefix removed"
    state, _ = _strip_prefix(state, "module.")
    return state, layout, {**metadata, **notes}


__all__ = [
    "FORMAT_NAME",
    "LAYOUT_BARE",
    "LAYOUT_LIGHTNING",
    "LAYOUT_OURS",
    "LAYOUT_PARAMS",
    "LAYOUT_PARAMS_EMA",
    "LAYOUT_SAFETENSORS",
    "load_weight_file",
    "read_state_dict",
]
