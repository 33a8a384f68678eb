"""Inputs and independent references for the evaluation tests (tests/training/test_evaluate*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def square_faces(folder: Path, photos: list[np.ndarray], size: int) -> list[str]:
    """Each photo's top-left square, resized to size x size, saved as face_00.png, face_01.png, ...;
    returns the names without extension."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, photo in enumerate(photos):
        side = min(photo.shape[:2])
        im = Image.fromarray(photo[:side, :side]).resize((size, size), Image.Resampling.BICUBIC)
        names.append(f"face_{i:02d}")
        im.save(folder / f"{names[-1]}.png")
    return names


def fid_by_eigenvalues(mu1, s1, mu2, s2):
    """Tr sqrt(S1 S2) from symmetric eigen-decompositions (no scipy sqrtm): an independent route."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    d = mu1 - mu2
    return d @ d + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(ev, 0, None)).sum()
