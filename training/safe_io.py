"""Reading every file the training package loads without running code it may carry.

Pickled files (training checkpoints, a stage-1 `.pt`/`.ckpt`, torchvision/lpips/GFPGAN `.pth` weights)
go through the node pack's reader, `restoreformer_node.weights.pickle_safety.safe_torch_load`: a static
scan of the pickle's imports (nothing is unpickled), then `torch.load(weights_only=True)`, whose
unpickler builds tensors and plain containers only. A refusal or a damaged file becomes a
`TrainingFileError` that names the file, what it was read as (a training checkpoint, the stage-1
network, a loss network's weights) and the fix.

Training checkpoints are written so that this reading needs nothing beyond torch's default
weights-only set: tensors, numbers, strings, lists, tuples and dicts (the RNG states of Python and
NumPy are stored as integer tensors and numbers, see `trainer.rng_state`).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from .errors import TrainingFileError

CHECKPOINT_FORMAT = "restoreformer-training-checkpoint/2"
CHECKPOINT_FORMAT_PREFIX = "restoreformer-training-checkpoint/"

CONTAINER_ZIP = "PyTorch zip checkpoint"
CONTAINER_PICKLE = "PyTorch pickle"
CONTAINER_SAFETENSORS = "safetensors"

_IMPORTS = re.compile(r"its pickle imports (.*?), which")

CODE_FIX = (
    "use a file written by `python -m training` or an official release; if you did not put this file "
    "there, delete it (never open it with torch.load(weights_only=False))."
)


def container_of(path: Path) -> str | None:
    """Which reader a file needs, from its first bytes (None: none of them)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= 100 << 20:
        return CONTAINER_SAFETENSORS
    if head.startswith(b"PK\x03\x04"):
        return CONTAINER_ZIP
    if head[:1] == b"\x80":
        return CONTAINER_PICKLE
    return None


def _check_exists(path: Path, what: str, fix_missing: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} '{path}': the file does not exist. Fix: {fix_missing}")
    if path.is_dir():
        raise FileNotFoundError(f"{what} '{path}': this is a folder, not a file. Fix: {fix_missing}")
    if path.stat().st_size == 0:
        raise TrainingFileError(path, what, "the file is empty (0 bytes).", "use an intact copy.", kind="damaged")


def safe_load(path: str | Path, what: str, *, fix_damaged: str, fix_missing: str = "check the path.") -> Any:
    """Unpickle `path` weights-only (after a static scan of its imports). Raises FileNotFoundError for a
    missing file and TrainingFileError for one that is damaged, carries code or is of another kind."""
    from restoreformer_node.weights import WeightLoadError
    from restoreformer_node.weights.pickle_safety import safe_torch_load

    path = Path(path).expanduser()
    _check_exists(path, what, fix_missing)
    container = container_of(path)
    if container not in (CONTAINER_ZIP, CONTAINER_PICKLE):
        with open(path, "rb") as f:
            head = f.read(8)
        kind = "safetensors file" if container == CONTAINER_SAFETENSORS else f"first bytes {head.hex(' ')}"
        raise TrainingFileError(
            path, what, f"the file is not a PyTorch checkpoint ({kind}); it is damaged or of another kind.",
            fix_damaged, kind="damaged" if container is None else "wrong_kind",
        )
    try:
        return safe_torch_load(str(path), container)
    except WeightLoadError as err:
        raise translate(err, path, what, fix_damaged) from None


def translate(err, path: Path, what: str, fix_damaged: str) -> TrainingFileError:
    """The node pack's WeightLoadError, reworded for `what` (a training file)."""
    problem = err.problem
    if err.kind == "code":
        found = _IMPORTS.search(problem)
        names = found.group(1) if found else "globals torch does not allow"
        text = (f"loading it would run code: its pickle imports {names}, which a training file never needs. "
                "It was refused and nothing in it was run.")
        if found and all(n.strip().startswith("numpy.") for n in names.split(",")):
            text += (" (Checkpoints of the earlier format 1 kept the NumPy RNG state as an array, which cannot "
                     "be read without allowing NumPy's unpickling code.)")
        return TrainingFileError(path, what, text, CODE_FIX, kind="code")
    if err.kind in ("damaged", "limit"):
        return TrainingFileError(path, what, problem, fix_damaged, kind="damaged")
    if "TorchScript" in err.layout:
        return TrainingFileError(path, what, "it is a TorchScript program, not a checkpoint; it was not loaded.",
                                 fix_damaged, kind="wrong_kind")
    return TrainingFileError(path, what, problem, fix_damaged, kind="wrong_kind")


def is_training_checkpoint(obj: Any) -> bool:
    fmt = obj.get("format") if isinstance(obj, dict) else None
    return isinstance(fmt, str) and fmt.startswith(CHECKPOINT_FORMAT_PREFIX)


def check_checkpoint(state: Any, path: str | Path, what: str, fix_damaged: str) -> dict:
    """`state` (read weights-only from `path`) if it is a complete checkpoint of this format."""
    if not is_training_checkpoint(state):
        raise TrainingFileError(
            path, what, "it is not a checkpoint written by `python -m training` (no 'format' entry).",
            "pass a step_*.pt file from RUN/checkpoints/ (or the run folder).", kind="wrong_kind",
        )
    if state["format"] != CHECKPOINT_FORMAT:
        raise TrainingFileError(path, what, f"its format {state['format']!r} is not {CHECKPOINT_FORMAT!r}.",
                                "use the training package version that wrote it.", kind="wrong_kind")
    for key in ("task", "step", "modules", "optimizers", "schedulers", "rng", "world_size"):
        if key not in state:
            raise TrainingFileError(path, what, f"the entry {key!r} is missing; the file is incomplete.",
                                    fix_damaged, kind="damaged")
    return state


def read_checkpoint(path: str | Path, what: str = "training checkpoint", fix_damaged: str | None = None) -> dict:
    """A checkpoint written by `Trainer.save_checkpoint`, read weights-only and checked for its format."""
    fix = fix_damaged or "use an older step_*.pt of the same run (nothing was deleted) or a backup copy."
    state = safe_load(path, what, fix_damaged=fix, fix_missing="check the path (checkpoints are in RUN/checkpoints/).")
    return check_checkpoint(state, path, what, fix)


def read_weights(path: str | Path, what: str, fix_damaged: str) -> dict:
    """A state dict from a `.safetensors` file or a pickle (weights-only), unwrapped from a
    `state_dict`/`params`/`model` entry when it has one."""
    path = Path(path).expanduser()
    _check_exists(path, what, "download it there (it is never downloaded for you) or fix the path.")
    if container_of(path) == CONTAINER_SAFETENSORS or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError: truncated or malformed header
            raise TrainingFileError(path, what, f"the safetensors file is damaged ({' '.join(str(err).split())}).",
                                    fix_damaged, kind="damaged") from None
    state = safe_load(path, what, fix_damaged=fix_damaged)
    for key in ("state_dict", "params", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise TrainingFileError(path, what, f"it holds a {type(state).__name__}, not a dictionary of weights.",
                                fix_damaged, kind="wrong_kind")
    return state
