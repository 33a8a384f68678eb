"""Shared helpers for the training tests: a small folder of real and generated face-sized images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_face_folder(folder: Path, astronaut: np.ndarray, grace_hopper: np.ndarray, generated: int = 4) -> Path:
    """Two real photos (PyPI sample data) plus `generated` smooth synthetic images, as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(astronaut).resize((96, 96), Image.Resampling.BICUBIC).save(folder / "000_astronaut.png")
    Image.fromarray(grace_hopper).resize((80, 96), Image.Resampling.BICUBIC).save(folder / "001_grace_hopper.png")
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:96, 0:96] / 95.0
    for i in range(generated):
        # Smooth colour fields with an ellipse "face": learnable structure, unlike white noise.
        c = rng.random((3, 3))
        img = np.stack([c[k, 0] * xx + c[k, 1] * yy + c[k, 2] * (1 - xx) for k in range(3)], -1)
        cy, cx, ry, rx = 0.5 + 0.1 * rng.standard_normal(2).tolist()[0], 0.5, 0.3, 0.22
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img[mask] = rng.random(3) * 0.6 + 0.3
        Image.fromarray((img.clip(0, 1) * 255).astype(np.uint8)).save(folder / f"{i + 2:03d}_generated.png")
    return folder
