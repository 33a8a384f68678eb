"""Shared inputs for the detection tests: a collage of real faces at known scales, RetinaFace
weight files written by the test, and a guard that fails any attempt to reach the network."""

from __future__ import annotations

import socket
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# (top, left, side, mirrored) of the astronaut photo pasted into a 1024x1024 black canvas; the face
# box of the 512 px original is ~110 px wide, so the four faces are ~110, ~82, ~55, ~69 px.
COLLAGE_TILES = ((0, 0, 512, False), (560, 40, 384, True), (40, 620, 256, False), (600, 640, 320, True))


def collage(astronaut: np.ndarray) -> torch.Tensor:
    """[1, 1024, 1024, 3] float 0..1 with four astronaut faces of different sizes."""
    photo = torch.from_numpy(astronaut.copy()).permute(2, 0, 1)[None].float() / 255
    canvas = torch.zeros(1, 3, 1024, 1024)
    for top, left, side, mirrored in COLLAGE_TILES:
        tile = F.interpolate(photo, size=(side, side), mode="area") if side != 512 else photo
        canvas[..., top : top + side, left : left + side] = tile.flip(-1) if mirrored else tile
    return canvas.permute(0, 2, 3, 1).contiguous()


def image_batch(photo: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> ComfyUI IMAGE [1, H, W, 3] float 0..1."""
    return torch.from_numpy(photo.copy()).float()[None] / 255


def write_retinaface_weights(folder: Path, kind: str, seed: int = 0, heads: str = "random") -> Path:
    """Write a state dict of facexlib's RetinaFace network (random initialisation: the published
    weights cannot be had offline) under facexlib's file name, with DataParallel's `module.` prefix
    like the published files.

    heads="priors": class heads biased to "face" and box/landmark heads zeroed, so every anchor is a
    detection whose box is exactly its prior (checks decoding and coordinate mapping).
    """
    from facexlib.detection.retinaface import RetinaFace

    from restoreformer_node.faces.detectors.retinaface import NETWORKS

    network, file_name, _ = NETWORKS[kind]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision: resnet50(pretrained=False)
        net = RetinaFace(network_name=network, device="cpu")
    state = net.state_dict()
    if heads == "priors":
        for name, value in state.items():
            if name.startswith(("BboxHead", "LandmarkHead")):
                value.zero_()
            elif name.startswith("ClassHead"):
                value.zero_()
                if name.endswith("bias"):
                    value.view(-1, 2)[:, 1] = 20.0  # softmax -> "face" with probability ~1
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return path


@contextmanager
def network_blocked():
    """Any socket connection or torch.hub download inside fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(torch.hub, "download_url_to_file", refuse)
        patch.setattr(torch.hub, "load_state_dict_from_url", refuse)
        yield
