"""Face detectors behind one interface, built once per (kind, weight file, device) and cached.

`load_detector("mtcnn")` needs nothing; the RetinaFace kinds need their weight file's path.
The cache key includes the file's size and modification time, so a replaced file is reloaded and a
different choice in a graph takes effect on the next run without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ...lru import LRUCache
from ...options import DEFAULT_DETECTOR, DETECTORS
from .base import CHUNK_PIXELS, DEFAULT_MAX_SIDE, MIN_IMAGE_SIDE, Detection, FaceDetector, as_rgb
from .retinaface import (
    NETWORKS as RETINAFACE_NETWORKS,
)
from .retinaface import (
    RELEASE_PAGE,
    DetectorWeightsMissing,
    missing_weights_message,
    weight_file_name,
)

# A few detectors stay built (switching back and forth in a graph costs nothing); older ones go.
_cache: LRUCache[FaceDetector] = LRUCache(3)


def needs_weights(kind: str) -> bool:
    return kind in RETINAFACE_NETWORKS


def load_detector(
    kind: str = DEFAULT_DETECTOR,
    weights_path: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> FaceDetector:
    """A ready detector of `kind` (one of DETECTORS) on `device` (default CPU).

    RetinaFace kinds read `weights_path` (facexlib's .pth or a .safetensors copy); a missing file
    raises DetectorWeightsMissing naming the file, its folder and where to download it.
    """
    if kind not in DETECTORS:
        raise ValueError(f"unknown face detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    device = torch.device(device or "cpu")
    if needs_weights(kind):
        if weights_path is None:
            raise DetectorWeightsMissing(missing_weights_message(kind, []))
        path = Path(weights_path).resolve()
        if not path.is_file():
            raise DetectorWeightsMissing(missing_weights_message(kind, [str(path.parent)]))
        stat = path.stat()
        key = (kind, str(path), stat.st_size, stat.st_mtime_ns, str(device))
    else:
        key = (kind, "", 0, 0, str(device))
    return _cache.get_or_make(key, lambda: _build(kind, weights_path, device))


def clear_detector_cache() -> None:
    _cache.clear()


def _build(kind: str, weights_path, device: torch.device) -> FaceDetector:
    if kind == "mtcnn":
        from .mtcnn import MTCNNDetector

        return MTCNNDetector(device)
    from .retinaface import RetinaFaceDetector

    return RetinaFaceDetector(kind, weights_path, device)


__all__ = [
    "CHUNK_PIXELS",
    "DEFAULT_MAX_SIDE",
    "DETECTORS",
    "MIN_IMAGE_SIDE",
    "RELEASE_PAGE",
    "RETINAFACE_NETWORKS",
    "Detection",
    "DetectorWeightsMissing",
    "FaceDetector",
    "as_rgb",
    "clear_detector_cache",
    "load_detector",
    "missing_weights_message",
    "needs_weights",
    "weight_file_name",
]
