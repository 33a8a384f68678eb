"""FID reference statistics for `python -m training evaluate`: reading them safely, writing them
from a folder (`evaluate fid-stats FOLDER --out FILE`).

Accepted files:
- `.npz` with `mu`/`sigma` (pytorch-fid) or `mean`/`cov`; object arrays are refused (no pickle).
- a torch file (`.pth`, `.pt`, ...) holding a dict with `mean`/`cov` (basicsr's
  `inception_FFHQ_512.pth`, which the RestoreFormer++ scripts use for every test set) or
  `mu`/`sigma`, as numpy arrays or tensors. It is read by the node pack's safe reader
  (`restoreformer_node.weights.pickle_safety.safe_torch_load`): a bounded scan of the pickle's
  opcodes refuses a file that imports anything that runs code (naming it) before anything is
  unpickled, then torch's weights-only unpickler builds tensors, plain containers and numpy arrays.
Files written by `fid-stats` also record the number of images, the protocol and the Inception
file's sha1, so a report can say when a reference was made differently.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from restoreformer_node.weights.pickle_scan import ScanLimits

from .metrics import FEATURE_DIM

NPZ_SUFFIX = ".npz"
TORCH_SUFFIXES = (".pth", ".pt", ".pkl", ".pickle", ".bin")


# Statistics files pickle their arrays inline: a 2048x2048 float64 covariance alone is 32 MiB of
# pickle, past the weight files' bound (whose tensors live outside the pickle).
STATISTICS_LIMITS = ScanLimits(max_pickle_bytes=256 << 20)


class StatisticsError(Exception):
    """A reference statistics file cannot be used (one line naming the file and the fix)."""


@dataclass
class FidStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    source: str  # a file path, or a description such as "the ground-truth folder"
    count: int | None = None  # number of images behind the statistics, when known
    meta: dict = field(default_factory=dict)  # protocol, inception sha1 ... (files from fid-stats)


def _torch_pickle(path: Path, flag: str) -> object:
    """A torch file read by the node pack's safe reader: the bounded scan of its pickle (nothing
    unpickled), then torch's weights-only unpickler with numpy arrays bound to numpy itself."""
    from restoreformer_node.weights import WeightLoadError
    from restoreformer_node.weights.pickle_safety import safe_torch_load

    container = "PyTorch zip checkpoint" if zipfile.is_zipfile(path) else "PyTorch pickle"
    try:
        return safe_torch_load(str(path), container, limits=STATISTICS_LIMITS)
    except WeightLoadError as err:
        fix = (
            "use basicsr's inception_FFHQ_512.pth or an .npz with mu/sigma, or write one with "
            "`python -m training evaluate fid-stats FOLDER --out FILE`"
            if err.kind == "code"
            else "pass an .npz with mu/sigma or a torch file holding only mean/cov arrays"
        )
        raise StatisticsError(f"{flag} {path}: {err.problem} Fix: {fix}") from None


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
