"""Shared helpers for the training tests: a small folder of real and generated face-sized images, a tiny
stage-1 configuration, and pickles that would run code when unpickled without weights_only."""

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


def face_folder_with_landmarks(folder: Path, astronaut: np.ndarray, grace_hopper: np.ndarray, generated: int = 2) -> Path:
    """`write_face_folder` plus the landmarks file the RF++ degradation and component losses read."""
    from training.landmarks import compute_landmarks

    root = write_face_folder(folder, astronaut, grace_hopper, generated=generated)
    compute_landmarks(root)
    return root


def stage1_tiny_config(faces: Path, out: Path, **sections) -> dict:
    """A stage-1 config mapping for a very small network on 32x32 faces (random loss networks)."""
    cfg = {
        "run": dict(out_dir=str(out), seed=0, steps=6, batch_size=2, precision="fp32", num_workers=0,
                    device="cpu", log_every=1, sample_every=0, checkpoint_every=3, keep_checkpoints=5,
                    progress=False, tensorboard=False),
        "data": dict(root=str(faces), size=32, resize=True),
        "model": dict(variant="RestoreFormer", tiny=True,
                      overrides=dict(resolution=32, encoder_blocks=1, decoder_blocks=1, n_embed=64)),
        "loss": dict(allow_random_loss_networks=True,
                     perceptual=dict(kind="vgg19", weight=0.1, layers=["relu1_1", "relu2_1"]),
                     discriminator=dict(filters=8, start_step=2)),
        "optim": dict(lr=2e-3, lr_milestones=[4]),
    }
    for name, values in sections.items():
        cfg[name] = {**cfg[name], **values}
    return cfg


class Payload:
    """Unpickling this (without weights_only) runs `touch MARKER`: the stand-in for a malicious file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch '{self.marker}'",))


def write_payload(path: Path, marker: Path, kind: str = "zip", checkpoint_like: bool = True) -> Path:
    """A file that runs `touch marker` when unpickled normally. kind "zip": torch.save's format; "pickle":
    a plain pickle stream. With checkpoint_like it also looks like one of our checkpoints (format,
    task, tensors) so only the payload can give it away."""
    import pickle

    import torch

    obj = {"payload": Payload(marker)}
    if checkpoint_like:
        obj |= {"format": "restoreformer-training-checkpoint/2", "task": "stage1", "step": 3,
                "modules": {"generator": {"w": torch.zeros(2)}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zip":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return path
