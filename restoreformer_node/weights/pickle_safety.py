"""Reading pickled PyTorch checkpoints without running any code they carry.

Every pickle goes through three steps, and the first two build nothing:

1. the container: a zip checkpoint's directory is checked and its `data.pkl` inflated within
   limits (archive.py); a legacy pickle file is read as far as its pickles reach;
2. the bounded opcode scan (pickle_scan.py): size, opcode count, nesting depth and shared tuples
   are limited, every import is named, and the tensor storages it refers to must fit the bytes
   the file really has;
3. `torch.load(weights_only=True)`, whose unpickler builds tensors and plain containers only.

What the scan finds imported decides the rest. Names torch's unpickler accepts are used as they
are, and so are numpy's names for arrays, scalars and dtypes (they build data, nothing else). Names that execute things (os, subprocess, eval, importlib, pickle, functools.partial,
torch.load, ...; `executes_code`) refuse the file, which is then said to try to run code. Any
other name only appears in training bookkeeping (Lightning callbacks and hyper-parameters, a
config object of the training code, a torch loss module): it is bound to an inert stand-in
defined here, so nothing of it is imported or run, and the weights load.
"""

from __future__ import annotations

import os
import pickle
import re
import tarfile
import threading
import warnings
from collections import OrderedDict
from typing import Any

import torch

from .archive import ArchiveRefused, TorchScriptArchive, read_archive
from .errors import WeightLoadError, list_names
from .pickle_scan import LIMIT_WORDS, LIMITS, PickleScan, ScanLimits, ScanRefused, scan_pickles

# Globals a training framework writes into checkpoint bookkeeping; always bound to inert stand-ins.
INERT_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.")
INERT_NAMES = frozenset({"typing.Any", "argparse.Namespace", "types.SimpleNamespace"})
# Built-in types bookkeeping refers to as values (omegaconf's `object_type=dict`, dataclass fields);
# the rest of `builtins` (eval, exec, getattr, __import__, open, ...) refuses the file.
INERT_BUILTIN_TYPES = frozenset(
    f"builtins.{n}"
    for n in "dict list tuple set frozenset int float complex str bytes bytearray bool object slice range".split()
)

# Names that execute things when a pickle calls them: a file importing one is refused outright.
# (Binding them to stand-ins would be harmless too; refusing says what the file is.)
CODE_MODULES = frozenset(
    """os posix nt posixpath ntpath sys subprocess _posixsubprocess builtins __builtin__ importlib imp runpy
    pickle _pickle cPickle pickletools marshal shelve dill cloudpickle joblib code codeop pty shutil socket
    ctypes _ctypes multiprocessing concurrent threading _thread asyncio signal webbrowser pdb bdb trace
    timeit cProfile profile pydoc pkgutil zipimport types operator _operator functools _functools copyreg
    copy_reg inspect gc io _io tempfile glob fileinput urllib http ftplib smtplib telnetlib xmlrpc
    ssl select mmap fcntl resource msvcrt winreg _winapi platform logging sched setuptools pip distutils
    site ensurepip venv idlelib lib2to3 doctest unittest tkinter commands popen2 nturl2path zipfile tarfile
    shlex yaml jinja2 sqlite3 dbm""".split()
)
CODE_TORCH_PREFIXES = (
    "torch.load", "torch.save", "torch.serialization", "torch.storage._load", "torch.jit", "torch.hub",
    "torch.package", "torch.ops", "torch._ops", "torch.classes", "torch._C", "torch.utils.cpp_extension",
    "torch._dynamo", "torch._inductor", "torch.fx", "torch.distributed", "torch.multiprocessing",
    "torch.compile", "torch.export", "torch.library", "torch._utils_internal",
)
# Words of a function's name (not a class's) that load, run, import or reach attributes: a word
# equal to one of CODE_WORDS or starting with one of CODE_STEMS.
CODE_WORDS = frozenset(
    """system call run open apply partial reduce getattr setattr delattr attrgetter methodcaller globals
    locals vars input breakpoint""".split()
)
CODE_STEMS = ("eval", "exec", "compile", "popen", "spawn", "import", "load")

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")
_OFFICIAL = "use the official release file instead (see the README)"

# torch's safe-globals list is process-wide: one load at a time may extend it.
_LOAD_LOCK = threading.Lock()


class _Inert:
    """Stands in for a class that only training bookkeeping names; has no behaviour, so binding a
    name to it cannot run code. The class itself may serve as a dict key (PL 1.x callback states);
    "instances" come out as plain OrderedDicts, the one container torch's weights-only unpickler
    lets a pickle both fill with items and give attribute state, so the data survives, inert."""

    def __new__(cls, *args: Any, **kwargs: Any) -> OrderedDict:
        made: OrderedDict = OrderedDict()
        made.stand_in_for = f"{cls.__module__}.{cls.__qualname__}"
        made.pickled_args = args
        return made


def stand_in_name(obj: object) -> str | None:
    """The class an inert stand-in replaced ("module.Class"), or None for anything else."""
    name = getattr(obj, "stand_in_for", None) if type(obj) is OrderedDict else None
    return name if isinstance(name, str) else None


def _is_inert(name: str) -> bool:
    return name in INERT_NAMES or name in INERT_BUILTIN_TYPES or name.startswith(INERT_MODULE_PREFIXES)


def executes_code(name: str) -> bool:
    """Whether a pickle importing `name` ("module.qualname") asks for something that runs code."""
    if name in INERT_NAMES or name in INERT_BUILTIN_TYPES:
        return False
    module = name.split(".", 1)[0]
    if module in CODE_MODULES or name.startswith(CODE_TORCH_PREFIXES):
        return True
    last = name.rsplit(".", 1)[-1].lstrip("_")
    if last[:1].isupper():  # a class: only what it is bound to could run, and that is a stand-in
        return False
    words = [w for w in re.split(r"[_\d]+", last.lower()) if w]
    return any(w in CODE_WORDS or w.startswith(CODE_STEMS) for w in words)


def _numpy_data() -> dict[str, object]:
    """numpy's own names for arrays, scalars and dtypes, bound to the real numpy objects (what
    torch documents for numpy data under weights_only): they build data from the pickle's bytes
    and run nothing else, and an inert stand-in could not take their BUILD state."""
    try:
        import numpy as np
    except ImportError:
        return {}
    core = getattr(np, "_core", None) or np.core
    found: dict[str, object] = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[f"{module}._reconstruct"] = core.multiarray._reconstruct
        found[f"{module}.scalar"] = core.multiarray.scalar
    for name in getattr(getattr(np, "dtypes", None), "__all__", ()):
        found[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    return found


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


def _storage_itemsize(type_name: str) -> int | None:
    """Bytes per element of a pickled storage type ("torch.FloatStorage"); None if unknown."""
    module, _, name = type_name.rpartition(".")
    if module != "torch" or not name.endswith("Storage"):
        return None
    if name == "UntypedStorage":
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.serialization.StorageType(name).dtype.itemsize
    except Exception:
        return None


def _refuse_code(path: str, container: str, names: list[str], how: str = "") -> WeightLoadError:
    what = f"its pickle imports {list_names(names)}" if names else f"its pickle {how}"
    if names and how:
        what += f" and {how}"
    return WeightLoadError(
        path,
        f"the file tries to run code: {what}, which a weight file never needs. It was not loaded and "
        "nothing in it was run.",
        "weights need no code: get a trusted copy from the official release (see the README). If you made "
        "this file, save only the state dict (or safetensors) instead. If it came from somewhere "
        "unexpected, delete it.",
        layout=container,
        kind="code",
    )


def _refuse_unbuilt(path: str, container: str, detail: str, *, limit: bool) -> WeightLoadError:
    """A refusal from the checks before unpickling: a resource `limit` was hit, or the container
    or pickle is malformed. `detail` says which (a limit names itself)."""
    if limit:
        problem = (
            f"refused before unpickling: {detail}. Weight files stay far inside this limit, so the file is "
            "damaged or made to exhaust memory or time"
        )
        fix = _OFFICIAL + "."
    else:
        problem = f"the file is damaged or truncated, or was altered after torch.save wrote it: {detail}"
        fix = "download the file again and compare its size with the one on the release page, or " + _OFFICIAL + "."
    return WeightLoadError(path, problem + ". Nothing in it was built or run.", fix, layout=container,
                           kind="limit" if limit else "damaged")


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
        kind="damaged",
    )


def _bookkeeping_unreadable(path: str, container: str, names: list[str], error: BaseException) -> WeightLoadError:
    reason = " ".join(str(error).split()).split("WeightsUnpickler error:")[-1][:200]
    return WeightLoadError(
        path,
        f"the checkpoint's training bookkeeping ({list_names(names, 4)}) has a form that cannot be set "
        f"aside without running the code that wrote it ({reason.strip()}). Nothing in the file was run.",
        "re-save only the weights where the file was made (torch.save(checkpoint['state_dict'], ...)) "
        "or use the official release file (see the README).",
        layout=container,
    )


def _scan_zip(path: str, container: str, limits: ScanLimits) -> PickleScan:
    try:
        archive = read_archive(path, limits)
    except TorchScriptArchive:
        raise WeightLoadError(
            path,
            "this is a TorchScript program, not a weight file; loading it would run its code, so it was not loaded.",
            "use a state-dict file (.ckpt, .pth or .safetensors; see the README).",
            layout="TorchScript archive",
            kind="wrong_kind",
        ) from None
    except ArchiveRefused as error:
        raise _refuse_unbuilt(path, container, str(error), limit=error.limit is not None) from None
    scan = _scan(path, container, archive.pickle, 1, limits)
    for storage in scan.storages:
        itemsize = _storage_itemsize(storage.type_name)
        have = archive.sizes.get(f"data/{storage.key}")
        if itemsize is None or have is None or storage.numel * itemsize != have:
            raise _refuse_unbuilt(
                path,
                container,
                f"its pickle asks for {storage.numel:,} elements of {storage.type_name} from record "
                f"data/{storage.key}, which holds {have if have is not None else 'no'} bytes",
                limit=False,
            )
    return scan


def _scan_legacy(path: str, container: str, limits: ScanLimits) -> PickleScan:
    """torch's pre-1.6 format: magic number, protocol, system info, the object, the storage keys
    (five pickles in a row), then the storages' bytes."""
    if tarfile.is_tarfile(path):  # torch would read an even older tar layout through other code
        raise _refuse_unbuilt(path, container, "it is a tar archive (a torch format from before 2018)", limit=False)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(limits.max_pickle_bytes + 1)
    try:
        scan = scan_pickles(head, 5, limits, stop_unless_int=True)
    except ScanRefused as error:
        if error.limit is None and len(head) > limits.max_pickle_bytes:  # cut off by the read, not malformed
            detail = (f"its pickles run past {limits.max_pickle_bytes:,} bytes "
                      f"(limit: {LIMIT_WORDS['max_pickle_bytes']} {limits.max_pickle_bytes:,})")
            raise _refuse_unbuilt(path, container, detail, limit=True) from None
        raise _scan_refusal(path, container, error) from None
    needed: dict[str, int] = {}
    for storage in scan.storages:
        itemsize = _storage_itemsize(storage.type_name)
        if itemsize is None or storage.numel < 0:
            raise _refuse_unbuilt(
                path, container, f"its pickle asks for a storage of type {storage.type_name}", limit=False
            )
        needed[storage.key] = storage.numel * itemsize
    if sum(needed.values()) > size - scan.end:
        raise _refuse_unbuilt(
            path,
            container,
            f"its pickle asks for {sum(needed.values()):,} bytes of tensor data, but only "
            f"{max(0, size - scan.end):,} bytes follow it",
            limit=False,
        )
    return scan


def _scan_refusal(path: str, container: str, error: ScanRefused) -> WeightLoadError:
    detail = str(error) if error.limit else f"its pickle is malformed ({error})"
    return _refuse_unbuilt(path, container, detail, limit=error.limit is not None)


def _scan(path: str, container: str, data: bytes, count: int, limits: ScanLimits) -> PickleScan:
    try:
        return scan_pickles(data, count, limits)
    except ScanRefused as error:
        raise _scan_refusal(path, container, error) from None


def scan_checkpoint(path: str, container: str, limits: ScanLimits = LIMITS) -> list[str]:
    """The bounded static scan of a pickled checkpoint (nothing is inflated beyond its limits,
    unpickled or imported). Returns the names to bind to inert stand-ins; raises WeightLoadError
    for a file that is refused: too large, deep or shared, malformed, or trying to run code."""
    is_zip = container.endswith("zip checkpoint")
    scan = (_scan_zip if is_zip else _scan_legacy)(path, container, limits)
    refused = [n for n in scan.globals if not _torch_allowed(n) and executes_code(n)]
    how = "imports things it does not name (computed STACK_GLOBAL names or the copyreg extension registry)"
    if refused or scan.dynamic_imports:
        raise _refuse_code(path, container, refused, how if scan.dynamic_imports else "")
    return [n for n in scan.globals if not _torch_allowed(n)]


def safe_torch_load(path: str, container: str, *, limits: ScanLimits = LIMITS) -> Any:
    """`torch.load(path, weights_only=True)` on CPU after `scan_checkpoint`, with bookkeeping
    classes bound to inert stand-ins and every failure turned into a WeightLoadError.
    `container` names the file kind ("PyTorch zip checkpoint" / "PyTorch pickle") for messages."""
    path = os.fspath(path)
    names = sorted(set(scan_checkpoint(path, container, limits)))
    numpy_data = _numpy_data() if any(n.startswith("numpy") for n in names) else {}
    stand_ins = [(numpy_data[n], n) if n in numpy_data else _stand_in(n) for n in names]
    # A dtype comes out as an instance of its numpy.dtypes class, which BUILD must accept too.
    stand_ins += [(obj, n) for n, obj in numpy_data.items() if n.startswith("numpy.dtypes.") and n not in names]
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(stand_ins), warnings.catch_warnings():
            # torch notes pickle protocols above 2 (plain pickle.dump files); harmless here.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # A global the static scan could not see (it should see all of them): refuse it too.
        named = _GLOBAL_IN_MESSAGE.findall(str(error))
        refused = [n for n in dict.fromkeys(named) if not _torch_allowed(n) and executes_code(n)]
        if refused:
            raise _refuse_code(path, container, refused) from None
        if names:
            raise _bookkeeping_unreadable(path, container, names, error) from None
        raise _damaged(path, container, error) from None
    except MemoryError:
        raise
    except Exception as error:  # truncated archive, bad storage record, EOF, ...
        if names:
            raise _bookkeeping_unreadable(path, container, names, error) from None
        raise _damaged(path, container, error) from None


__all__ = [
    "CODE_MODULES",
    "INERT_BUILTIN_TYPES",
    "INERT_MODULE_PREFIXES",
    "INERT_NAMES",
    "executes_code",
    "safe_torch_load",
    "scan_checkpoint",
    "stand_in_name",
]
