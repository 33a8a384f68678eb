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
import warnings
from typing import Any

import torch

from .errors import WeightLoadError, list_names

# Globals a training framework writes into checkpoint bookkeeping; bound to inert stand-ins.
INERT_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")
INERT_NAMES = frozenset({"typing.Any", "argparse.Namespace"})

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


class _Inert(dict):
    """Stands in for a bookkeeping class of a training framework. It stores whatever the pickle
    hands it and has no behaviour, so binding a name to it cannot run code."""

    __hash__ = object.__hash__  # usable as a dict key, like the classes it replaces

    def __new__(cls, *args: Any, **kwargs: Any):
        return dict.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.pickled_args = args

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state


def _is_inert(name: str) -> bool:
    return name in INERT_NAMES or name.startswith(INERT_MODULE_PREFIXES)


def _stand_in(name: str) -> tuple[type, str]:
    cls = type(name.rsplit(".", 1)[-1], (_Inert,), {"__module__": __name__})
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
            strings: list[str] = []
            try:
                for opcode, arg, _pos in pickletools.genops(f):
                    if opcode.name == "GLOBAL" and isinstance(arg, str):
                        found.append(arg.replace(" ", "."))
                    elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(f"{strings[-2]}.{strings[-1]}")
                    elif isinstance(arg, str):
                        strings.append(arg)
                    if opcode.name == "STOP":
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
        "weights need no code: get a trusted copy from the official release (see the README) and use it "
        "directly or convert it with `python -m restoreformer_node convert INPUT OUTPUT.safetensors`; "
        "if you made this file, save only the state dict (or safetensors) instead. If it came from "
        "somewhere unexpected, delete it.",
        layout=container,
    )


def _damaged(path: str, container: str, error: BaseException) -> WeightLoadError:
    reason = " ".join(str(error).split())
    if len(reason) > 200:
        reason = reason[:200] + " ..."
    return WeightLoadError(
        path,
        f"the file is damaged or truncated and could not be read ({type(error).__name__}: {reason}).",
        "download the file again and compare its size with the one on the release page.",
        layout=container,
    )


def safe_torch_load(path: str, container: str) -> Any:
    """`torch.load(path, weights_only=True)` on CPU, with Lightning bookkeeping bound to inert
    stand-ins and every failure turned into a WeightLoadError. `container` names the file kind
    ("PyTorch zip checkpoint" / "PyTorch pickle") for messages."""
    stand_ins: list[tuple[type, str]] = []
    if container.endswith("zip checkpoint"):
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []  # unreadable archive: torch.load below says how
        refused = sorted(n for n in unsafe if not _is_inert(n))
        if refused:
            raise _refuse_code(path, container, refused)
        stand_ins = [_stand_in(n) for n in sorted(unsafe)]
    try:
        with torch.serialization.safe_globals(stand_ins), warnings.catch_warnings():
            # torch notes pickle protocols above 2 (plain pickle.dump files); harmless here.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = _GLOBAL_IN_MESSAGE.findall(str(error))
        if not container.endswith("zip checkpoint"):
            named += globals_in_pickle_stream(path)
        refused = [n for n in dict.fromkeys(named) if not _torch_allowed(n)]
        if refused:
            raise _refuse_code(path, container, refused) from None
        raise _damaged(path, container, error) from None
    except MemoryError:
        raise
    except Exception as error:  # truncated archive, bad storage record, EOF, ...
        raise _damaged(path, container, error) from None


__all__ = ["INERT_MODULE_PREFIXES", "INERT_NAMES", "globals_in_pickle_stream", "safe_torch_load"]

