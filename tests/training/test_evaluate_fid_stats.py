"""FID reference statistics: every accepted file layout reads to the same numbers, bad files are
refused without running anything, and `evaluate fid-stats FOLDER --out FILE` writes statistics that
give the same FID as the folder itself.

basicsr's inception_FFHQ_512.pth is a download; the test writes a file in its layout (a legacy,
non-zip torch pickle of a dict with name, size, mean, cov as numpy arrays, with the numpy-1 module
names such a file carries) from random statistics.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO
from helpers.evaluation import fid_by_eigenvalues
from PIL import Image

from training.eval_fid import FidStatistics, StatisticsError, read_statistics, write_statistics


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(40, 2048))
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _basicsr_file(path: Path, mu: np.ndarray, sigma: np.ndarray) -> Path:
    """basicsr's scripts/metrics/calculate_fid_stats_from_datasets.py layout, as numpy 1 pickled it."""
    torch.save({"name": "FFHQ", "size": 512, "mean": mu.astype(np.float32), "cov": sigma}, path,
               _use_new_zipfile_serialization=False)
    raw = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(raw)
    return path


def test_every_accepted_layout_reads_to_the_same_statistics(tmp_path, stats):
    mu, sigma = stats
    files = {
        "npz mu/sigma": tmp_path / "a.npz",
        "npz mean/cov": tmp_path / "b.npz",
        "basicsr pth": tmp_path / "inception_FFHQ_512.pth",
        "zip pth of tensors": tmp_path / "d.pth",
    }
    np.savez(files["npz mu/sigma"], mu=mu, sigma=sigma)
    np.savez(files["npz mean/cov"], mean=mu, cov=sigma)
    _basicsr_file(files["basicsr pth"], mu, sigma)
    assert b"numpy.core.multiarray" in files["basicsr pth"].read_bytes()
    torch.save({"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma)}, files["zip pth of tensors"])
    for kind, path in files.items():
        read = read_statistics(path)
        tol = 1e-6 if kind == "basicsr pth" else 0  # basicsr keeps the mean in float32
        np.testing.assert_allclose(read.mu, mu, atol=tol, err_msg=kind)
        np.testing.assert_array_equal(read.sigma, sigma, err_msg=kind)
        assert read.mu.dtype == np.float64 and read.source == str(path)
    assert read_statistics(files["basicsr pth"]).meta == {"name": "FFHQ", "size": 512}


def test_written_statistics_round_trip_with_their_record(tmp_path, stats):
    mu, sigma = stats
    record = {"protocol": "released", "inception_sha1": "abc", "size": 64}
    for name in ("s.npz", "s.pth"):
        write_statistics(tmp_path / name, FidStatistics(mu, sigma, "faces", 40, dict(record)))
        read = read_statistics(tmp_path / name)
        np.testing.assert_array_equal(read.mu, mu)
        np.testing.assert_array_equal(read.sigma, sigma)
        assert read.count == 40
        assert {k: read.meta[k] for k in record} == record
    with pytest.raises(StatisticsError, match="end the name in .npz"):
        write_statistics(tmp_path / "s.txt", FidStatistics(mu, sigma, "faces", 40))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_bad_statistics_files_are_refused_by_name(tmp_path, stats):
    mu, sigma = stats
    marker = tmp_path / "code_ran"
    for zip_format in (False, True):
        path = tmp_path / f"evil_{zip_format}.pth"
        torch.save({"mean": _RunsCode(marker), "cov": sigma}, path, _use_new_zipfile_serialization=zip_format)
        with pytest.raises(StatisticsError, match=r"imports posix\.system.*nothing in it was run"):
            read_statistics(path)
    assert not marker.exists()
    np.savez(tmp_path / "object.npz", mu=np.array([{"a": 1}], dtype=object), sigma=sigma)
    cases = {
        tmp_path / "object.npz": "allow_pickle",
        tmp_path / "list.pth": "holds a list",
        tmp_path / "nan.npz": "NaN or inf",
        tmp_path / "shape.npz": r"mean has 2048 values but the covariance is \(2048, 3\)",
        tmp_path / "garbage.pth": "not a readable torch file|damaged",
    }
    torch.save([mu, sigma], tmp_path / "list.pth")
    np.savez(tmp_path / "nan.npz", mu=np.full(2048, np.nan), sigma=sigma)
    np.savez(tmp_path / "shape.npz", mu=mu, sigma=sigma[:, :3])
    (tmp_path / "garbage.pth").write_bytes(b"\x80\x02garbage" * 50)
    for path, message in cases.items():
        with pytest.raises(StatisticsError, match=message):
            read_statistics(path)
        try:
            read_statistics(path)
        except StatisticsError as err:
            assert str(path) in str(err) and "\n" not in str(err)


def _folder(root: Path, astronaut, grace_hopper) -> Path:
    root.mkdir(parents=True)
    for i, (photo, size) in enumerate([(astronaut, 64), (grace_hopper, 80), (astronaut[::-1], 64)]):
        side = min(photo.shape[:2])
        Image.fromarray(np.ascontiguousarray(photo[:side, :side])).resize((size, size)).save(root / f"f{i}.png")
    return root


def test_fid_stats_command_writes_the_folder_statistics(tmp_path, astronaut, grace_hopper):
    """Mean and covariance of the features the evaluation itself takes (each image read and resized
    on its own), in both file layouts; through `python -m training evaluate fid-stats` too."""
    from training.eval_protocol import RELEASED
    from training.evaluate import inception_features, main
    from training.metrics import INCEPTION_SHA1, InceptionFeatures

    folder = _folder(tmp_path / "faces", astronaut, grace_hopper)
    with pytest.warns(UserWarning, match="on 3 images, fewer than the 2048"):
        assert main(["fid-stats", str(folder), "--out", str(tmp_path / "ref.npz")]) == 0
    npz = read_statistics(tmp_path / "ref.npz")
    feats = inception_features(sorted(folder.glob("*.png")), RELEASED, InceptionFeatures("cpu"), 2)
    np.testing.assert_allclose(npz.mu, feats.mean(axis=0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(npz.sigma, np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-8)
    assert npz.count == 3 and npz.meta["protocol"] == "released" and npz.meta["inception_sha1"] == INCEPTION_SHA1

    done = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", "fid-stats", str(folder), "--out", str(tmp_path / "ref.pth"),
         "--max-images", "2", "--protocol", "standard"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and "2 images, protocol standard" in done.stdout
    pth = read_statistics(tmp_path / "ref.pth")
    assert pth.count == 2 and pth.meta["protocol"] == "standard"
    # basicsr's layout: the arrays under mean/cov.
    raw = torch.load(tmp_path / "ref.pth", weights_only=False)
    assert {"mean", "cov", "name"} <= set(raw) and raw["mean"].shape == (2048,)

    assert main(["fid-stats", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.npz")]) == 2
    assert main(["fid-stats", str(folder), "--out", str(tmp_path / "x.txt")]) == 2


@pytest.mark.slow
def test_fid_against_basicsr_layout_statistics_written_by_fid_stats(tmp_path, astronaut, grace_hopper):
    """The ground truth's statistics written by fid-stats, rewritten in basicsr's layout (numpy-1 names
    and a float32 mean), as --fid-reference: the restored set's FID is the Frechet distance between
    the two folders' fid-stats files (computed here by eigenvalues), and the GT row of the paper's
    table is the ground truth against its own statistics, 0."""
    from training.evaluate import main

    gt = _folder(tmp_path / "gt", astronaut, grace_hopper)
    restored = tmp_path / "restored"
    restored.mkdir()
    for p in sorted(gt.glob("*.png")):
        Image.fromarray(np.asarray(Image.open(p).convert("RGB")).astype(np.uint8) // 2 + 60).save(restored / p.name)
    with pytest.warns(UserWarning):
        assert main(["fid-stats", str(gt), "--out", str(tmp_path / "gt.npz")]) == 0
        assert main(["fid-stats", str(restored), "--out", str(tmp_path / "restored.npz")]) == 0
        ours = read_statistics(tmp_path / "gt.npz")
        reference = _basicsr_file(tmp_path / "inception_gt.pth", ours.mu, ours.sigma)
        assert main(["--gt", str(gt), "--restored", str(restored), "--out", str(tmp_path / "b"),
                     "--fid-reference", str(reference)]) == 0
    r, g = read_statistics(tmp_path / "restored.npz"), read_statistics(reference)
    expected = fid_by_eigenvalues(r.mu, r.sigma, g.mu, g.sigma)
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["summary"]["restored"]["FID"] == pytest.approx(expected, rel=1e-5)
    assert expected > 1
    assert set(b["summary"]) == {"restored", "GT"} and abs(b["summary"]["GT"]["FID"]) < 1e-3
    reasons = " ".join(b["not_comparable"]["FID"])
    assert "ground-truth folder" not in reasons and "fewer than 2048 images (restored 3, GT 3)" in reasons
    assert f"FID reference: {reference}" in (tmp_path / "b" / "summary.md").read_text()
