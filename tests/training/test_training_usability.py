"""A researcher can use the training commands without reading the code: every stage prints progress
(step, losses, images/s, ETA), and data problems are one line that names the file and the fix.

Real command line, real Trainer, tiny random networks of the real architecture.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO
from helpers.training_data import stage1_tiny_config, write_face_folder
from PIL import Image

from training.__main__ import main

ROOT = REPO
CONFIGS = ROOT / "training" / "configs"
LINE = re.compile(r"^(stage[12]) step (\d+)/(\d+) \| (.*) \| ([\d.]+) img/s \| ETA (\d+:\d\d:\d\d)$")


# Every test on one intra-op thread (conftest's fixture): the runs compare numbers across processes.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def faces(tmp_path, astronaut, grace_hopper):
    return write_face_folder(tmp_path / "faces", astronaut, grace_hopper, generated=2)


def stage1_cli(faces: Path, tmp_path: Path, *sets: str, **sections) -> int:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(stage1_tiny_config(faces, tmp_path / "run", **sections)))
    return main(["stage1", "--config", str(cfg), *[x for s in sets for x in ("--set", s)]])


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    return err


# ---- progress ----------------------------------------------------------------------------------


def progress_lines(text: str, stage: str) -> list[re.Match]:
    found = [LINE.match(line) for line in text.splitlines()]
    return [m for m in found if m and m.group(1) == stage]


def test_stage1_prints_progress_lines(faces, tmp_path, capsys):
    assert stage1_cli(faces, tmp_path, "run.steps=5", "run.log_every=2", "run.checkpoint_every=5") == 0
    out = capsys.readouterr().out
    assert "stage1: training steps 1..5 of 5 on cpu" in out and "2 images per step" in out
    lines = progress_lines(out, "stage1")
    assert [int(m.group(2)) for m in lines] == [1, 2, 4, 5]  # after the first step, every 2, the last
    assert all(int(m.group(3)) == 5 for m in lines)
    assert all(re.search(r"\bloss [\d.e+-]+\b.*\bl1 [\d.e+-]+", m.group(4)) for m in lines)
    assert "d_loss" in lines[-1].group(4)  # the discriminator started at step 2
    assert lines[-1].group(6) == "0:00:00" and float(lines[0].group(5)) > 0
    assert "saved checkpoint" in out and "stage1: finished step 5 of 5" in out


def test_stage2_tiny_preset_prints_progress(tmp_path, astronaut, grace_hopper, capsys):
    """The tiny stage-2 preset printed nothing for minutes; now a line after its first step."""
    from training.landmarks import compute_landmarks

    faces = write_face_folder(tmp_path / "faces", astronaut, grace_hopper, generated=1)
    compute_landmarks(faces)
    assert main(["stage2", "--config", str(CONFIGS / "stage2_tiny_cpu.yaml"), "--set", f"data.root={faces}",
                 "--set", f"run.out_dir={tmp_path / 'run'}", "--set", "run.steps=2"]) == 0
    out = capsys.readouterr().out
    lines = progress_lines(out, "stage2")
    assert [int(m.group(2)) for m in lines] == [1, 2]
    for key in ("loss", "l1", "perceptual", "prior", "adv", "comp_gan", "comp_style", "identity", "d_loss"):
        assert re.search(rf"\b{key} [\d.e+-]+", lines[0].group(4)), key


# ---- data problems --------------------------------------------------------------------------------


def test_unreadable_image_is_named(faces, tmp_path, capsys):
    bad = faces / "003_broken.png"
    bad.write_bytes(b"\x89PNG not really")
    assert stage1_cli(faces, tmp_path) == 2
    err = one_error_line(capsys)
    assert f"image '{bad}' cannot be read" in err and "replace or remove the file" in err


def test_truncated_image_is_named_even_from_a_loader_worker(faces, tmp_path, capsys):
    """The header reads, the pixels do not: found when the image is loaded, in a DataLoader worker."""
    path = faces / "002_generated.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 96, 3)) * 255).astype(np.uint8)).save(path)  # incompressible
    path.write_bytes(path.read_bytes()[:4000])
    assert stage1_cli(faces, tmp_path, "run.num_workers=1", "run.steps=6") == 2
    err = one_error_line(capsys)
    assert f"image '{path}' cannot be read" in err


def test_wrong_size_is_named_with_the_fix(faces, tmp_path, capsys):
    assert stage1_cli(faces, tmp_path, "data.resize=false") == 2
    err = one_error_line(capsys)
    assert "000_astronaut.png' is 96x96, but data.size is 32" in err and "data.resize: true" in err


def test_empty_folder_is_named(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no images here")
    assert stage1_cli(empty, tmp_path) == 2
    err = one_error_line(capsys)
    assert f"data.root '{empty}' holds no images" in err
    assert stage1_cli(tmp_path / "nowhere", tmp_path) == 2
    assert "is not a folder" in one_error_line(capsys)


def test_missing_landmarks_entry_is_named(tmp_path, astronaut, grace_hopper, capsys):
    from training.landmarks import compute_landmarks, default_landmarks_path

    faces = write_face_folder(tmp_path / "faces", astronaut, grace_hopper, generated=1)
    compute_landmarks(faces)
    (faces / "004_new.png").write_bytes((faces / "002_generated.png").read_bytes())
    code = main(["stage2", "--config", str(CONFIGS / "stage2_tiny_cpu.yaml"), "--set", f"data.root={faces}",
                 "--set", f"run.out_dir={tmp_path / 'run'}", "--set", "run.steps=1"])
    assert code == 2
    err = one_error_line(capsys)
    assert f"landmarks file '{default_landmarks_path(faces)}'" in err and "004_new.png" in err
    assert f"python -m training landmarks --root {faces}" in err
    payload = json.loads(default_landmarks_path(faces).read_text())
    assert "004_new.png" not in payload["landmarks"]
