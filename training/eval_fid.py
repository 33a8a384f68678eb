"""FID reference statistics for `python -m training evaluate`: reading them safely, writing them
from a folder (`evaluate fid-stats FOLDER --out FILE`).

Accepted files:
- `.npz` with `mu`/`sigma` (pytorch-fid) or `mean`/`cov`; object arrays are refused (no pickle).
- a torch file (`.pth`, `.pt`, ...) holding a dict with `mean`/`cov` (basicsr's
  `inception_FFHQ_512.pth`, which the RestoreFormer++ scripts use for every test set) or
  `mu`/`sigma`, as numpy arrays or tensors. It is read with torch's weights-only unpickler, which
  builds tensors and plain containers and refuses every other import; numpy arrays are allowed
  through exactly the numpy names an array needs (its reconstructor, ndarray and the float dtypes).
  Before unpickling, the imports the pickle names are listed without executing it, and a file that
  names anything else is refused with those names.
Files written by `fid-stats` also record the number of images, the protocol and the Inception
file's sha1, so a report can say when a reference was made differently.
"""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .metrics import FEATURE_DIM

NPZ_SUFFIX = ".npz"
TORCH_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".bin")
# Globals a plain torch.save of arrays and containers writes, all in torch's weights-only allowlist.
_PLAIN_GLOBALS = ("collections.OrderedDict", "_codecs.encode", "builtins.set", "builtins.frozenset", "builtins.bytearray")


class StatisticsError(Exception):
    """A reference statistics file cannot be used (one line naming the file and the fix)."""


@dataclass
class FidStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    source: str  # a file path, or a description such as "the ground-truth folder"
    count: int | None = None  # number of images behind the statistics, when known
    meta: dict = field(default_factory=dict)  # protocol, inception sha1 ... (files from fid-stats)


def _multiarray():
    try:
        return importlib.import_module("numpy._core.multiarray")  # numpy >= 2
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


def _numpy_globals() -> list:
    """The globals a pickled float ndarray needs, bound under the module names numpy 1 and 2 write."""
    ma = _multiarray()
    bound = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        bound += [(ma._reconstruct, f"{module}._reconstruct"), (ma.scalar, f"{module}.scalar")]
    # numpy >= 1.25 pickles a dtype's state through its DType class (numpy.dtypes.Float64DType ...).
    for kind in (np.float16, np.float32, np.float64, np.int32, np.int64):
        cls = type(np.dtype(kind))
        if cls is not np.dtype:
            bound.append(cls)
    return bound


def _global_name(entry) -> str:
    if isinstance(entry, tuple):
        return entry[1]
    return f"{entry.__module__}.{entry.__qualname__}"


def _names_in_pickle(path: Path, is_zip: bool) -> list[str]:
    """Imports the pickle names, found by reading its opcodes (nothing is unpickled)."""
    if is_zip:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    from restoreformer_node.weights.pickle_safety import globals_in_pickle_stream

    return globals_in_pickle_stream(str(path))


def _torch_pickle(path: Path, flag: str) -> object:
    is_zip = zipfile.is_zipfile(path)
    allowed = _numpy_globals()
    allowed_names = {_global_name(e) for e in allowed}
    try:
        names = _names_in_pickle(path, is_zip)
    except Exception:
        names = []  # unreadable: torch.load below says how
    # A legacy (non-zip) stream lists every global, torch's own storage classes and the
    # _codecs.encode that protocol-2 pickles use for bytes included; the weights-only unpickler
    # below refuses any of those it does not know, so only foreign names are refused here, by name.
    foreign = sorted(n for n in names if n not in allowed_names and not n.startswith("torch.")
                     and n not in _PLAIN_GLOBALS)
    if foreign:
        raise StatisticsError(
            f"{flag} {path}: the file's pickle imports {', '.join(foreign[:6])}, which statistics never "
            "need; it was not loaded and nothing in it ran. Use basicsr's inception_FFHQ_512.pth or an "
            ".npz with mu/sigma, or write one with `python -m training evaluate fid-stats FOLDER --out FILE`"
        )
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.findall(r"GLOBAL ([A-Za-z_][\w.]*)", str(err))
        what = f"it needs {', '.join(dict.fromkeys(named))}" if named else "it is damaged or not a torch file"
        raise StatisticsError(
            f"{flag} {path}: cannot be read without running pickled code ({what}); nothing in it ran. "
            "Use an .npz with mu/sigma or a torch file holding only mean/cov arrays"
        ) from None
    except Exception as err:
        reason = " ".join(str(err).split())[:160]
        raise StatisticsError(
            f"{flag} {path}: not a readable torch file ({type(err).__name__}: {reason}); "
            "pass an .npz with mu/sigma or basicsr's inception_FFHQ_512.pth"
        ) from None


def _as_array(value, key: str, path: Path, flag: str) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu().double().numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise StatisticsError(f"{flag} {path}: {key!r} is {type(value).__name__}, not a numeric array")
    return value.astype(np.float64)


def _pick(data: dict, path: Path, flag: str) -> tuple[np.ndarray, np.ndarray]:
    for mean_key, cov_key in (("mu", "sigma"), ("mean", "cov")):
        if mean_key in data and cov_key in data:
            return _as_array(data[mean_key], mean_key, path, flag), _as_array(data[cov_key], cov_key, path, flag)
    raise StatisticsError(
        f"{flag} {path}: holds {sorted(map(str, data))[:8]}, not 'mu'/'sigma' or 'mean'/'cov'; pass Inception "
        "statistics (basicsr's inception_FFHQ_512.pth, a pytorch-fid .npz, or one written by `evaluate fid-stats`)"
    )


def _meta_value(value):
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    return value


def read_statistics(path: str | Path, flag: str = "--fid-reference") -> FidStatistics:
    """Mean and covariance from an .npz or torch file, checked to be finite 2048-d statistics."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise StatisticsError(f"{flag} {path}: no such file; pass FFHQ-512 Inception statistics (basicsr's "
                              "inception_FFHQ_512.pth) or write some with `evaluate fid-stats FOLDER --out FILE`")
    meta: dict = {}
    if path.suffix.lower() == NPZ_SUFFIX or zipfile.is_zipfile(path) and _is_npz(path):
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except ValueError as err:  # object arrays need pickle: refused
            raise StatisticsError(f"{flag} {path}: {' '.join(str(err).split())[:160]}; store plain float arrays") from None
        except Exception as err:
            raise StatisticsError(f"{flag} {path}: not a readable .npz ({type(err).__name__}: {err})") from None
        mu, sigma = _pick(arrays, path, flag)
        meta = {k: _meta_value(v) for k, v in arrays.items() if k not in ("mu", "sigma", "mean", "cov")}
    else:
        data = _torch_pickle(path, flag)
        if not isinstance(data, dict):
            raise StatisticsError(f"{flag} {path}: holds a {type(data).__name__}, not a dict with mean/cov")
        mu, sigma = _pick(data, path, flag)
        meta = {str(k): _meta_value(v) for k, v in data.items() if k not in ("mu", "sigma", "mean", "cov")}
    mu = mu.reshape(-1)
    if sigma.shape != (mu.size, mu.size):
        raise StatisticsError(f"{flag} {path}: mean has {mu.size} values but the covariance is {sigma.shape}")
    if mu.size != FEATURE_DIM:
        raise StatisticsError(f"{flag} {path}: {mu.size}-d statistics; FID here uses {FEATURE_DIM}-d Inception "
                              "pool3 features (basicsr's and pytorch-fid's default)")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatisticsError(f"{flag} {path}: the statistics contain NaN or inf")
    count = meta.get("num_images")
    count = int(count) if isinstance(count, (int, np.integer, float)) and count == count else None
    return FidStatistics(mu, sigma, str(path), count, meta)


def _is_npz(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return all(n.endswith(".npy") for n in z.namelist())
    except zipfile.BadZipFile:
        return False


def write_statistics(path: str | Path, stats: FidStatistics) -> Path:
    """`.npz` (mu, sigma as pytorch-fid names them) or a torch file in basicsr's layout (a dict
    with name, size, mean, cov as numpy arrays); both with num_images, protocol and inception."""
    path = Path(path)
    meta = {"num_images": int(stats.count or 0), **{k: v for k, v in stats.meta.items() if v is not None}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix.lower() == NPZ_SUFFIX:
        with open(tmp, "wb") as f:
            np.savez(f, mu=stats.mu, sigma=stats.sigma, **{k: np.asarray(v) for k, v in meta.items()})
    elif path.suffix.lower() in TORCH_SUFFIXES:
        torch.save({"name": stats.source, "mean": stats.mu, "cov": stats.sigma, **meta}, tmp)
    else:
        raise StatisticsError(f"--out {path}: end the name in .npz (pytorch-fid's mu/sigma) or .pth (basicsr's mean/cov)")
    tmp.replace(path)
    return path
