"""`restore --upscale-model FILE` / `--upscale N`: the image is upscaled first (a random-weight
Real-ESRGAN Compact written by the test: pretrained files cannot be had offline), the faces found
on the original are restored at the new size and pasted into the upscaled image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.models import random_restoreformer
from helpers.spandrel_models import compact_upscaler, write_compact
from PIL import Image

from restoreformer_node.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory, astronaut):
    from restoreformer_node.weights import save_restoreformer

    root = tmp_path_factory.mktemp("upscale_cli")
    net = random_restoreformer()
    save_restoreformer(net, root / "tiny_rf.safetensors", net.config)
    write_compact(root / "compact_x2.safetensors", scale=2)
    small = Image.fromarray(astronaut).resize((192, 192), Image.LANCZOS)
    (root / "in").mkdir()
    small.save(root / "in" / "astronaut.png")
    return root


def _run(files: Path, out: str, *extra: str) -> int:
    return main(["restore", str(files / "in"), "--model", str(files / "tiny_rf.safetensors"),
                 "--out", str(files / out), "--device", "cpu", *extra])


def test_upscale_model_then_restore(files, capsys):
    assert _run(files, "x2", "--upscale-model", str(files / "compact_x2.safetensors")) == 0
    text = capsys.readouterr().out
    assert "upscale RealESRGAN Compact (2x, SR)" in text and "1 face restored" in text
    result = np.asarray(Image.open(files / "x2" / "astronaut.png"))
    assert result.shape == (384, 384, 3)
    source = torch.from_numpy(np.asarray(Image.open(files / "in" / "astronaut.png")).copy()).float() / 255
    plain = compact_upscaler(scale=2)(source.permute(2, 0, 1)[None])[0].permute(1, 2, 0)
    plain = (plain.clamp(0, 1) * 255).round().numpy().astype(np.uint8)
    assert np.array_equal(result[340:, :60], plain[340:, :60])  # far from the face: the upscaled image
    assert not np.array_equal(result[100:200, 150:250], plain[100:200, 150:250])  # the face was pasted


def test_upscale_factor_alone_resizes_and_bad_values_are_named(files, capsys):
    assert _run(files, "x15", "--upscale", "1.5") == 0
    assert np.asarray(Image.open(files / "x15" / "astronaut.png")).shape == (288, 288, 3)
    assert _run(files, "bad", "--upscale", "-2") == 2
    assert "--upscale must be in (0, 16], got -2" in capsys.readouterr().err
    assert _run(files, "bad", "--upscale-model", str(files / "nothing.pth")) == 2
    assert "--upscale-model" in capsys.readouterr().err
