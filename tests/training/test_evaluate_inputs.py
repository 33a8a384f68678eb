"""`evaluate` never loses a run: every input is checked before anything is computed (one line, exit
code 2), results are written as they are computed (a later failure keeps them, exit code 1), and
--degrade says what happened to the ground truth.

Weight files here are small stand-ins written by the test (wrong networks, damaged bytes, a pickle
that would run code); the restoring model is a randomly initialised tiny RestoreFormer, and
LPIPS/ArcFace are fixed-seed random networks (--allow-random-networks): pretrained weights cannot be
had offline.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO
from helpers.evaluation import square_faces
from PIL import Image

from training.metrics import psnr


class _RunsCode:
    """Pickles to a call of os.system that would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def bad_files(tmp_path):
    """Files a user might pass by mistake."""
    root = tmp_path / "files"
    root.mkdir()
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, root / "lpips_vgg.pth")  # the LPIPS heads: a real file of the wrong kind for --arcface
    (root / "garbage.pth").write_bytes(b"\x80\x02 not a checkpoint" * 10)
    marker = tmp_path / "code_ran"
    torch.save({"conv1.weight": _RunsCode(marker)}, root / "runs_code.pth", _use_new_zipfile_serialization=False)
    np.savez(root / "stats64.npz", mu=np.zeros(64), sigma=np.eye(64))
    np.savez(root / "nokeys.npz", a=np.zeros(3))
    (root / "model.safetensors").write_bytes(b"not safetensors")
    return root, marker


def _bad_cases(gt: Path, restored: Path, small: Path, broken: Path, files: Path, model: Path):
    """(arguments, text the one-line error must contain)."""
    f = files
    return {
        "gt folder missing": (["--gt", str(gt) + "_nope", "--restored", str(restored)], f"--gt {gt}_nope: not a folder"),
        "gt folder empty": (["--gt", str(files.parent / "empty"), "--restored", str(restored)], "holds no images"),
        "names do not pair": (["--gt", str(gt), "--restored", str(files.parent / "one")], "no image for ground truth ['face_01']"),
        "sizes differ": (["--gt", str(gt), "--restored", str(small)], "face_00.png: 48x48 but its ground truth is 64x64"),
        "damaged image": (["--gt", str(gt), "--restored", str(broken)], "face_01.png' cannot be read as an image"),
        "arcface missing": (["--arcface", str(f / "arcface.pth")], f"--arcface {f / 'arcface.pth'}: no such file"),
        "arcface is another network": (["--arcface", str(f / "lpips_vgg.pth")], "not an ArcFace ResNet-18 state dict"),
        "arcface runs code": (["--arcface", str(f / "runs_code.pth")], "tries to run code"),
        "arcface damaged": (["--arcface", str(f / "garbage.pth")], f"--arcface {f / 'garbage.pth'}: the file is damaged"),
        "lpips vgg without heads": (["--lpips-vgg", str(f / "lpips_vgg.pth")], "--lpips-vgg needs --lpips-heads"),
        "lpips vgg is another network": (["--lpips-vgg", str(f / "lpips_vgg.pth"), "--lpips-heads", str(f / "lpips_vgg.pth")],
                                         f"--lpips-vgg {f / 'lpips_vgg.pth'}: does not fit LPIPS"),
        "lpips heads wrong": (["--lpips-heads", str(f / "garbage.pth"), "--allow-random-networks"], "--lpips-heads"),
        "reference missing": (["--fid-reference", str(f / "ffhq.pth")], f"--fid-reference {f / 'ffhq.pth'}: no such file"),
        "reference 64-d": (["--fid-reference", str(f / "stats64.npz")], "64-d statistics"),
        "reference without keys": (["--fid-reference", str(f / "nokeys.npz")], "not 'mu'/'sigma' or 'mean'/'cov'"),
        "reference runs code": (["--fid-reference", str(f / "runs_code.pth")], "tries to run code"),
        "model damaged": (["--gt", str(gt), "--model", str(f / "model.safetensors"), "--degrade"], "--model"),
        "model sizes": (["--gt", str(files.parent / "odd"), "--model", str(model), "--degrade"], "multiples of"),
        "degradation unknown": (["--gt", str(gt), "--model", str(model), "--degrade", "--degradation", "heavy"], "--degradation heavy"),
    }


@pytest.fixture
def folders(tmp_path, astronaut, grace_hopper):
    gt = tmp_path / "gt"
    square_faces(gt, [astronaut, grace_hopper], 64)
    small = tmp_path / "small"
    square_faces(small, [astronaut, grace_hopper], 48)
    broken = tmp_path / "broken"
    square_faces(broken, [astronaut, grace_hopper], 64)
    (broken / "face_01.png").write_bytes((broken / "face_01.png").read_bytes()[:100])  # truncated
    square_faces(tmp_path / "one", [astronaut], 64)
    square_faces(tmp_path / "odd", [astronaut], 62)
    (tmp_path / "empty").mkdir()
    return gt, small, broken


@pytest.mark.parametrize("case", [
    "gt folder missing", "gt folder empty", "names do not pair", "sizes differ", "damaged image", "arcface missing",
    "arcface is another network", "arcface runs code", "arcface damaged", "lpips vgg without heads",
    "lpips vgg is another network", "lpips heads wrong", "reference missing", "reference 64-d",
    "reference without keys", "reference runs code", "model damaged", "model sizes", "degradation unknown",
])
def test_a_bad_input_is_one_line_and_exit_code_2_before_anything_is_computed(case, tmp_path, folders, bad_files,
                                                                             tiny_model_file, capsys):
    from training.evaluate import main

    gt, small, broken = folders
    files, marker = bad_files
    args, expected = _bad_cases(gt, gt, small, broken, files, tiny_model_file)[case]
    if "--gt" not in args:
        args = ["--gt", str(gt), "--restored", str(gt)] + args
    out = tmp_path / "report"
    assert main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert not (out / "metrics.csv").exists() and not (out / "summary.md").exists()  # nothing ran
    assert not marker.exists()  # the pickle's code never ran


def test_a_report_is_not_overwritten_and_inputs_are_never_written_into(tmp_path, folders, tiny_model_file, capsys):
    """A second run into the same --out needs --overwrite; a run whose images would land in a folder it
    reads (here --out is the parent of --gt, and --degrade writes OUT/gt) is refused."""
    from training.evaluate import main

    gt, _, _ = folders
    out = tmp_path / "report"
    args = ["--gt", str(gt), "--restored", str(gt), "--out", str(out), "--no-fid"]
    assert main(args) == 0
    before = (out / "metrics.csv").read_text()
    capsys.readouterr()
    assert main(args + ["--name", "other"]) == 2
    assert "already holds a report" in capsys.readouterr().err
    assert (out / "metrics.csv").read_text() == before
    assert main(args + ["--name", "other", "--overwrite"]) == 0
    assert "other" in (out / "metrics.csv").read_text()

    original = {p.name: p.read_bytes() for p in gt.glob("*.png")}
    assert main(["--gt", str(gt), "--model", str(tiny_model_file), "--degrade", "--degradation", "restoreformer++",
                 "--out", str(gt.parent), "--no-fid"]) == 2
    assert f"writes images to {gt}, which overlaps --gt" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in gt.glob("*.png")} == original
    assert main(["--gt", str(gt), "--restored", str(gt), "--name", "GT", "--out", str(tmp_path / "x"), "--no-fid"]) == 2
    assert "one of the table's own rows" in capsys.readouterr().err


def test_restored_names_with_the_official_suffix(tmp_path, folders, capsys):
    """RestoreFormer++'s test script writes NAME_00.png: the pairing error says so, and
    --restored-suffix _00 pairs them."""
    from training.evaluate import main

    gt, _, _ = folders
    official = tmp_path / "official"
    official.mkdir()
    for p in gt.glob("*.png"):
        (official / f"{p.stem}_00.png").write_bytes(p.read_bytes())
    args = ["--gt", str(gt), "--restored", str(official), "--out", str(tmp_path / "r"), "--no-fid"]
    assert main(args) == 2
    assert "pass --restored-suffix _00" in capsys.readouterr().err
    assert main(args + ["--restored-suffix", "_00"]) == 0
    rows = list(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    assert [r["name"] for r in rows] == ["face_00", "face_01"] and all(r["PSNR"] == "inf" for r in rows)
    assert main(["--gt", str(gt), "--restored", str(gt), "--out", str(tmp_path / "s"), "--no-fid",
                 "--restored-suffix", "_00"]) == 2
    assert "does not end in '_00'" in capsys.readouterr().err


def test_the_command_line_prints_no_traceback_for_a_bad_input(tmp_path, folders, bad_files):
    gt, _, _ = folders
    files, _ = bad_files
    done = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", "--gt", str(gt), "--restored", str(gt), "--out", str(tmp_path / "o"),
         "--arcface", str(files / "lpips_vgg.pth")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "--arcface" in lines[0] and "arcface_resnet18.pth" in lines[0]


def test_a_failure_in_fid_keeps_the_metrics_computed_before_it(tmp_path, folders, monkeypatch, capsys):
    """FID fails (here: the Inception raises as a GPU out of memory would) after PSNR, SSIM, LPIPS and
    IDD ran: those are in metrics.csv and summary.md, the failure is named, exit code 1."""
    from training.evaluate import main
    from training.metrics import InceptionFeatures

    gt, _, _ = folders
    restored = tmp_path / "restored"
    restored.mkdir()
    for p in sorted(gt.glob("*.png")):
        image = np.asarray(Image.open(p)).astype(int)
        Image.fromarray(np.clip(image + 9, 0, 255).astype(np.uint8)).save(restored / p.name)

    def out_of_memory(self, x):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(InceptionFeatures, "prepared", out_of_memory)
    out = tmp_path / "report"
    assert main(["--gt", str(gt), "--restored", str(restored), "--out", str(out), "--allow-random-networks"]) == 1
    err = capsys.readouterr().err
    assert "FID failed: RuntimeError: CUDA out of memory" in err and err.count("\n") == 1
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 and all(float(r["PSNR"]) > 20 and float(r["LPIPS"]) > 0 and float(r["IDD"]) > 0 for r in rows)
    summary = (out / "summary.md").read_text()
    mean_psnr = np.mean([float(r["PSNR"]) for r in rows])
    assert f"| restored | – | {mean_psnr:.2f} |" in summary
    assert "FAILED: FID failed: RuntimeError: CUDA out of memory" in summary
    assert json.loads((out / "summary.json").read_text())["failure"].startswith("FID failed")
    assert "Traceback" in (out / "error.log").read_text()


def test_rows_are_written_as_they_are_computed(tmp_path, folders, monkeypatch):
    """A failure on the second image pair leaves the first one's row in metrics.csv."""
    import training.evaluate as ev

    gt, _, _ = folders
    real = ev.pair_metrics
    calls = []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("no memory left")
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "pair_metrics", second_fails)
    out = tmp_path / "report"
    assert ev.main(["--gt", str(gt), "--restored", str(gt), "--out", str(out), "--no-fid"]) == 1
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["name"] for r in rows] == ["face_00"] and float(rows[0]["PSNR"]) == float("inf")
    assert "PSNR/SSIM/LPIPS/IDD failed: MemoryError" in (out / "summary.md").read_text()


def test_fid_on_fewer_images_than_features_warns_and_is_marked(tmp_path, folders, monkeypatch):
    """Below 2048 images the covariance is singular: a FidSampleWarning and a mark in the report.
    (The Inception and the Frechet distance are stood in for to keep this fast; the real ones run
    in test_evaluate_protocol.py.)"""
    import training.evaluate as ev
    from training.metrics import InceptionFeatures

    gt, _, _ = folders
    rng = np.random.default_rng(0)
    monkeypatch.setattr(InceptionFeatures, "prepared", lambda self, x: rng.normal(size=(x.shape[0], 2048)))
    monkeypatch.setattr(ev, "frechet_distance", lambda *a: 12.5)
    out = tmp_path / "report"
    with pytest.warns(ev.FidSampleWarning, match="on 2 images, fewer than the 2048"):
        assert ev.main(["--gt", str(gt), "--restored", str(gt), "--out", str(out), "--name", "same"]) == 0
    summary = (out / "summary.md").read_text()
    assert "| same | 12.50* |" in summary
    assert "fewer than 2048 images (GT 2, same 2): the covariance is singular" in summary


def _seed_that_changes_gt(gt_folder: Path) -> tuple[int, list[str]]:
    """The first seed for which the RF++ degradation shifts or greys some ground truth."""
    from training.evaluate import degrade_images

    images = {p.stem: np.asarray(Image.open(p).convert("RGB")) for p in sorted(gt_folder.glob("*.png"))}
    for seed in range(100):
        changed_gt, _ = degrade_images(images, seed, "restoreformer++")
        changed = [n for n in images if not np.array_equal(changed_gt[n], images[n])]
        if changed and len(changed) < len(images):
            return seed, changed
    raise AssertionError("no seed in 0..99 changes the ground truth")


@pytest.fixture
def gt3(tmp_path, astronaut, grace_hopper):
    gt = tmp_path / "gt"
    square_faces(gt, [astronaut, grace_hopper, astronaut[::-1].copy()], 64)
    return gt


def test_degrade_that_changes_the_ground_truth_writes_it_and_measures_against_it(tmp_path, gt3, tiny_model_file):
    from training.evaluate import main

    seed, changed = _seed_that_changes_gt(gt3)
    out = tmp_path / "report"
    assert main(["--gt", str(gt3), "--model", str(tiny_model_file), "--degrade", "--degradation", "restoreformer++",
                 "--seed", str(seed), "--no-fid", "--out", str(out)]) == 0
    assert sorted(p.stem for p in (out / "gt").glob("*.png")) == sorted(p.stem for p in gt3.glob("*.png"))
    rows = {(r["method"], r["name"]): r for r in csv.DictReader((out / "metrics.csv").open())}
    for name in changed:
        written = np.asarray(Image.open(out / "gt" / f"{name}.png"))
        original = np.asarray(Image.open(gt3 / f"{name}.png").convert("RGB"))
        degraded = np.asarray(Image.open(out / "input" / f"{name}.png"))
        assert not np.array_equal(written, original)
        assert float(rows[("Input", name)]["PSNR"]) == pytest.approx(psnr(degraded, written), abs=1e-9)
        assert float(rows[("Input", name)]["PSNR"]) != pytest.approx(psnr(degraded, original), abs=1e-3)
    text = (out / "summary.md").read_text()
    assert f"changed by the degradation for {len(changed)} of 3 images" in text
    assert f"measured against that ground truth, written to {out / 'gt'} (--gt-change use)" in text


def test_degrade_can_keep_the_ground_truth_untouched(tmp_path, gt3, tiny_model_file):
    from training.evaluate import main

    seed, changed = _seed_that_changes_gt(gt3)
    out = tmp_path / "report"
    assert main(["--gt", str(gt3), "--model", str(tiny_model_file), "--degrade", "--degradation", "restoreformer++",
                 "--seed", str(seed), "--no-fid", "--gt-change", "discard", "--out", str(out)]) == 0
    assert not (out / "gt").exists()
    rows = {(r["method"], r["name"]): r for r in csv.DictReader((out / "metrics.csv").open())}
    for name in changed:
        degraded = np.asarray(Image.open(out / "input" / f"{name}.png"))
        original = np.asarray(Image.open(gt3 / f"{name}.png").convert("RGB"))
        assert float(rows[("Input", name)]["PSNR"]) == pytest.approx(psnr(degraded, original), abs=1e-9)
    text = (out / "summary.md").read_text()
    assert f"kept untouched (--gt-change discard), although the 'restoreformer++' degradation changed it for {len(changed)} of 3" in text


def test_degrade_with_the_paper_preset_says_the_ground_truth_is_untouched(tmp_path, gt3, tiny_model_file):
    from training.evaluate import main

    out = tmp_path / "report"
    assert main(["--gt", str(gt3), "--model", str(tiny_model_file), "--degrade", "--no-fid", "--out", str(out)]) == 0
    assert not (out / "gt").exists()
    assert "untouched: the 'paper' degradation never changes the ground truth" in (out / "summary.md").read_text()
