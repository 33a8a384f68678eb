"""`python -m restoreformer_node restore` end to end on real photos in a temporary folder.

The weights are a randomly initialised RestoreFormer at the tiny test geometry, written by the
test as .safetensors (pretrained weights cannot be had offline); faces come from MTCNN.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from PIL import Image


@pytest.fixture(scope="module")
def weights(tiny_weights) -> Path:
    return tiny_weights


@pytest.mark.slow  # a fresh interpreter, MTCNN on four photos: ~20 s on an idle 2-core machine
def test_restore_folder_end_to_end(tmp_path, weights, astronaut, grace_hopper):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "astronaut.png")
    alpha = np.linspace(0, 255, grace_hopper.shape[1], dtype=np.uint8)[None, :].repeat(grace_hopper.shape[0], 0)
    rgba = np.dstack([grace_hopper, alpha])
    Image.fromarray(rgba, "RGBA").save(src / "hopper.png")
    Image.fromarray(astronaut).convert("L").save(src / "astronaut_gray.jpg", quality=95)
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(src / "wall.png")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "restoreformer_node", "restore", str(src), "--model", str(weights),
         "--out", str(out), "--device", "cpu", "--color-match", "mean", "--save-crops"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()

    def line_for(name):
        return next(line for line in lines if line.startswith(str(src / name)))

    assert "1 face restored" in line_for("astronaut.png")
    assert "1 face restored" in line_for("hopper.png")
    assert "1 face restored" in line_for("astronaut_gray.jpg")
    assert "no face found by mtcnn; written unchanged" in line_for("wall.png")
    assert lines[-1].startswith("4 images, 3 faces")

    a = np.asarray(Image.open(out / "astronaut.png"))
    assert a.shape == astronaut.shape
    assert np.array_equal(a[400:, :100], astronaut[400:, :100])  # far from the face: untouched
    assert not np.array_equal(a[80:160, 190:260], astronaut[80:160, 190:260])  # the face changed
    h = Image.open(out / "hopper.png")
    assert h.mode == "RGBA" and np.array_equal(np.asarray(h)[..., 3], alpha)
    g = Image.open(out / "astronaut_gray.png")
    assert g.mode == "L" and g.size == (512, 512)
    w = np.asarray(Image.open(out / "wall.png"))
    assert np.array_equal(w, np.full((120, 160, 3), 90, np.uint8))
    crops = sorted(p.name for p in (out / "crops").iterdir())
    assert crops == ["astronaut_face0.png", "astronaut_gray_face0.png", "hopper_face0.png"]
    assert Image.open(out / "crops" / "hopper_face0.png").size == (64, 64)

    # a second run does not overwrite without --overwrite
    from restoreformer_node.cli import main

    before = (out / "wall.png").stat().st_mtime_ns
    assert main(["restore", str(src / "wall.png"), "--model", str(weights), "--out", str(out)]) == 0
    assert (out / "wall.png").stat().st_mtime_ns == before


def test_bad_inputs_are_named_before_any_work(tmp_path, weights, capsys):
    from restoreformer_node.cli import main

    missing = tmp_path / "nope.png"
    assert main(["restore", str(missing), "--model", str(weights), "--out", str(tmp_path / "o")]) == 2
    assert f"{missing}: no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["restore", str(empty), "--model", str(weights), "--out", str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / d / "x.png")
    code = main(["restore", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"),
                 "--model", str(weights), "--out", str(tmp_path / "o")])
    assert code == 2 and "would both be written" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_building_the_parser_needs_no_torch():
    """The command line's choices come from restoreformer_node.options, shared with the nodes and the
    library, which imports nothing: `--help` and the light subcommands never load PyTorch."""
    code = (
        "import sys, restoreformer_node.cli as c; c.build_parser(); "
        "print('torch' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"  # building the parser imported no torch


def _transparent_huge_pages_mode() -> str:
    """The kernel's THP mode ("always", "madvise" or "never"), "never" where it cannot be read."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "never"
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else "never"


# Run in a fresh interpreter: prints the settings the command line left, and how much of a new 64 MiB
# tensor the kernel backs with huge pages (PyTorch asks for them only under THP_MEM_ALLOC_ENABLE=1,
# read at its first allocation, so this shows whether the setting came in time).
_CPU_RUNTIME_PROBE = """
import os, sys
{import_torch}
from restoreformer_node import cli
rc = cli.main(['info', sys.argv[1]])
import torch
x = torch.ones(16 * 2**20)
huge, inside = 0, False
for line in open('/proc/self/smaps'):
    parts = line.split()
    if '-' in parts[0] and len(parts) > 4:
        lo, hi = (int(v, 16) for v in parts[0].split('-'))
        inside = lo <= x.data_ptr() < hi
    elif inside and parts[0] == 'AnonHugePages:':
        huge = int(parts[1])
print('rc', rc, 'torch', 'torch' in sys.modules, 'policy', os.environ.get('OMP_WAIT_POLICY'),
      'thp', os.environ.get('THP_MEM_ALLOC_ENABLE'), 'huge_kb', huge)
"""


@pytest.mark.parametrize(
    "preset,import_torch_first,expected",
    [
        (None, False, ("PASSIVE", "1")),
        (("ACTIVE", "0"), False, ("ACTIVE", "0")),
        (None, True, (None, None)),
    ],
    ids=["unset", "user-choice", "torch-already-loaded"],
)
def test_command_line_tunes_the_cpu_runtime_before_torch_loads(weights, preset, import_torch_first, expected):
    """libgomp reads OMP_WAIT_POLICY once, when torch loads; c10 reads THP_MEM_ALLOC_ENABLE at its
    first allocation. The command line sets PASSIVE (NNPACK's convolutions then get the cores)
    and 1 (huge pages for the big feature maps) before either, leaves a user's own values alone, and
    does not pretend to change anything once torch is already loaded."""
    import os

    names = ("OMP_WAIT_POLICY", "THP_MEM_ALLOC_ENABLE")
    env = {k: v for k, v in os.environ.items() if k not in names}
    if preset is not None:
        env.update(zip(names, preset))
    code = _CPU_RUNTIME_PROBE.format(import_torch="import torch" if import_torch_first else "")
    run = subprocess.run(
        [sys.executable, "-c", code, str(weights)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    policy, thp = expected
    assert f"rc 0 torch True policy {policy} thp {thp} huge_kb" in run.stdout, run.stdout[-500:]
    huge_kb = int(run.stdout.rsplit("huge_kb", 1)[1].split()[0])
    if thp == "1" and _transparent_huge_pages_mode() != "never":
        assert huge_kb > 0, "THP_MEM_ALLOC_ENABLE was set too late for PyTorch to use it"
    if thp != "1" and _transparent_huge_pages_mode() == "madvise":
        assert huge_kb == 0, "huge pages without THP_MEM_ALLOC_ENABLE: the probe does not measure the setting"
