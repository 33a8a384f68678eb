"""Reading pickled PyTorch checkpoints without running any code they carry.

Every pickle goes through `torch.load(weights_only=True)`, whose unpickler builds tensors and
plain containers only and refuses every other import. Two additions on top:

- Lightning checkpoints name a few of their own classes in training bookkeeping (PL 1.x keys its
  callback states by the callback *class*; hyper-parameters may be an `AttributeDict` or an
  omegaconf container). None of that is needed for the weights, so those names are bound to inert
  stand-ins defined here; no Lightning or omegaconf code is imported or run.
- When a pickle asks for anything else (`posix.system`, `builtins.eval`, a class of someone's
  training code), the file is refused and the refused imports are named in the error. The names
  are found by reading the pickle's opcodes, which executes nothing.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import threading
import warnings
from collections import OrderedDict
from typing import Any

import torch

from .errors import WeightLoadError, list_names

# Globals a training framework writes into checkpoint bookkeeping; bound to inert stand-ins.
INERT_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")
INERT_NAMES = frozenset({"typing.Any", "argparse.Namespace"})

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")

# torch's safe-globals list is process-wide: one load at a time may extend it.
_LOAD_LOCK = threading.Lock()


class _Inert:
    """Stands in for a bookkeeping class of a training framework; has no behaviour, so binding a
    name to it cannot run code. The class itself may serve as a dict key (PL 1.x callback states);
    "instances" come out as plain OrderedDicts, the one container torch's weights-only unpickler
    lets a pickle both fill with items and give attribute state, so the data survives, inert."""

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:
        made: OrderedDict = OrderedDict()
        made.stand_in_for = f"{cls.__module__}.{cls.__qualname__}"
        made.pickled_args = args
        return made


def _is_inert(name: str) -> bool:
    return name in INERT_NAMES or name.startswith(INERT_MODULE_PREFIXES)


def _stand_in(name: str) -> tuple[type, str]:
    module, _, qualname = name.rpartition(".")
    cls = type(qualname, (_Inert,), {"__module__": module, "__qualname__": qualname})
    return cls, name


def _torch_allowed(name: str) -> bool:
    """Whether torch's weights-only unpickler accepts this global by default."""
    try:
        from torch import _weights_only_unpickler as wou

        return name in wou._get_allowed_globals()
    except Exception:  # private API moved: report the name rather than guess it is safe
        return False


def globals_in_pickle_stream(path: str, limit_bytes: int = 64 << 20) -> list[str]:
    """Module-qualified names a raw (non-zip) pickle file imports, found without unpickling.

    Walks consecutive pickles (torch's legacy format stores several in a row) until the bytes
    stop parsing as pickle opcodes, e.g. where raw tensor storage begins.
    """
    found: list[str] = []
    with open(path, "rb") as f:
        while f.tell() < limit_bytes:
            pushed: list[str | None] = []  # recent pushes, strings only (None for anything else)
            memo: dict[int, str | None] = {}
            try:
                for opcode, arg, _pos in pickletools.genops(f):
                    name = opcode.name
                    if name == "GLOBAL" and isinstance(arg, str):
                        found.append(arg.replace(" ", "."))
                    elif name == "STACK_GLOBAL" and len(pushed) >= 2 and pushed[-2] and pushed[-1]:
                        found.append(f"{pushed[-2]}.{pushed[-1]}")
                    elif name == "MEMOIZE":
                        memo[len(memo)] = pushed[-1] if pushed else None
                    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                        memo[int(arg)] = pushed[-1] if pushed else None
                    elif name in ("GET", "BINGET", "LONG_BINGET"):
                        pushed.append(memo.get(int(arg)))
                    else:
                        pushed.append(arg if isinstance(arg, str) else None)
                    if name == "STOP":
                        break
                else:
                    break
            except Exception:
                break
    return list(dict.fromkeys(found))


def _refuse_code(path: str, container: str, names: list[str]) -> WeightLoadError:
    return WeightLoadError(
        path,
        f"the file tries to execute code when loaded: its pickle imports {list_names(names)}, which a "
        "weight file never needs. It was not loaded and nothing in it was run.",
        "weights need no code: use a trusted copy from the official release (see the README); if you "
        "made this file, save only the state dict (or safetensors) instead. If it came from somewhere "
        "unexpected, delete it.",
        layout=container,
    )


def _damaged(path: str, container: str, error: BaseException) -> WeightLoadError:
    reason = " ".join(str(error).split())
    reason = reason.split("WeightsUnpickler error:")[-1].split(" Check the documentation")[0].strip()
    if len(reason) > 200:
        reason = reason[:200] + " ..."
    return WeightLoadError(
        path,
        f"the file is damaged or truncated and could not be read ({type(error).__name__}: {reason}).",
        "download the file again and compare its size with the one on the release page.",
        layout=container,
    )


def _bookkeeping_unreadable(path: str, container: str, names: list[str], error: BaseException) -> WeightLoadError:
    reason = " ".join(str(error).split()).split("WeightsUnpickler error:")[-1][:200]
    return WeightLoadError(
        path,
        f"the checkpoint's training bookkeeping ({list_names(names, 4)}) has a form that cannot be set "
        f"aside without running Lightning's code ({reason.strip()}). Nothing in the file was run.",
        "re-save only the weights where the file was made (torch.save(checkpoint['state_dict'], ...)) "
        "or use the official release file (see the README).",
        layout=container,
    )


def safe_torch_load(path: str, container: str) -> Any:
    """`torch.load(path, weights_only=True)` on CPU, with Lightning bookkeeping bound to inert
    stand-ins and every failure turned into a WeightLoadError. `container` names the file kind
    ("PyTorch zip checkpoint" / "PyTorch pickle") for messages."""
    is_zip = container.endswith("zip checkpoint")
    try:  # static scan: nothing is unpickled, so a refused file runs nothing at all
        if is_zip:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        else:
            unsafe = [n for n in globals_in_pickle_stream(path) if not _torch_allowed(n)]
    except Exception as error:
        if "torchscript" in str(error).lower():
            raise WeightLoadError(
                path,
                "this is a TorchScript program, not a weight file; loading it would run its code, so it "
                "was not loaded.",
                "use a state-dict file (.ckpt, .pth or .safetensors; see the README).",
                layout="TorchScript archive",
            ) from None
        unsafe = []  # unreadable: torch.load below says how
    refused = sorted(n for n in unsafe if not _is_inert(n))
    if refused:
        raise _refuse_code(path, container, refused)
    stand_ins = [_stand_in(n) for n in sorted(set(unsafe))]
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(stand_ins), warnings.catch_warnings():
            # torch notes pickle protocols above 2 (plain pickle.dump files); harmless here.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # A global the static scan could not see (built on the stack at load time).
        named = _GLOBAL_IN_MESSAGE.findall(str(error))
        refused = [n for n in dict.fromkeys(named) if not _torch_allowed(n) and not _is_inert(n)]
        if refused:
            raise _refuse_code(path, container, refused) from None
        if stand_ins:
            raise _bookkeeping_unreadable(path, container, [n for _, n in stand_ins], error) from None
        raise _damaged(path, container, error) from None
    except MemoryError:
        raise
    except Exception as error:  # truncated archive, bad storage record, EOF, ...
        if stand_ins:
            raise _bookkeeping_unreadable(path, container, [n for _, n in stand_ins], error) from None
        raise _damaged(path, container, error) from None


__all__ = ["INERT_MODULE_PREFIXES", "INERT_NAMES", "globals_in_pickle_stream", "safe_torch_load"]

