"""Evaluation (training/evaluate.py, training/metrics.py): PSNR, SSIM, FID, LPIPS, IDD, CSV and summary.

The restoring model is a randomly initialised tiny RestoreFormer written to a real .safetensors file
(pretrained weights cannot be had offline); LPIPS and ArcFace are randomly initialised networks of the
real architectures (--allow-random-networks), so their values are checked for shape and sense only.
The protocols are pinned in test_evaluate_protocol.py, input checks and partial results in
test_evaluate_inputs.py, reference statistics in test_evaluate_fid_stats.py.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from helpers.evaluation import fid_by_eigenvalues, square_faces
from PIL import Image

from training.metrics import feature_statistics, frechet_distance, psnr, ssim

# The metrics are float64 (NumPy/SciPy) closed forms: a few float64 roundings of values of
# magnitude <= 100 (PSNR in dB) or 1 (SSIM) stay under 1e-12; sums over images (SSIM's filters,
# scikit-image's own implementation) under 1e-10; the FID's matrix square root under 1e-9.


def test_identical_images_give_infinite_psnr_and_unit_ssim(astronaut):
    astronaut = astronaut[:200, 150:350]
    assert psnr(astronaut, astronaut) == math.inf
    assert ssim(astronaut, astronaut) == pytest.approx(1.0, abs=1e-12)


def test_hand_computed_constant_pair():
    """Constant 100 vs constant 110: MSE 100, and SSIM reduces to its luminance term
    (2*mu_x*mu_y + C1) / (mu_x^2 + mu_y^2 + C1), since both variances and the covariance are 0."""
    a = np.full((32, 40, 3), 100, np.uint8)
    b = np.full((32, 40, 3), 110, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)  # 28.1308 dB
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-12)


def test_hand_computed_psnr_with_one_channel_changed():
    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[..., 1] = 30  # squared error 900 on one channel of three: MSE 300
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 300), abs=1e-12)


def test_ssim_matches_scikit_image(astronaut):
    astronaut = astronaut[:256, 128:384].copy()
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    noisy = np.clip(astronaut.astype(int) + rng.integers(-25, 26, astronaut.shape), 0, 255).astype(np.uint8)
    ours = ssim(astronaut, noisy)
    ref = structural_similarity(astronaut, noisy, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert 0.3 < ours < 0.95
    assert ours == pytest.approx(ref, abs=1e-10)


def test_frechet_distance_of_gaussians_by_hand():
    """Diagonal covariances: FID = |mu1-mu2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))."""
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 4.0, 1.0])
    expected = 1 + 0 + 4 + (1 + 4 - 4) + (4 + 4 - 8) + (9 + 1 - 6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, abs=1e-9)
    feats = np.random.default_rng(1).normal(size=(50, 3))
    mu, sigma = feature_statistics(feats)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("error")
def test_frechet_distance_runs_on_the_installed_scipy_with_warnings_as_errors():
    """`sqrtm(..., disp=False)` is deprecated in SciPy 1.16/1.17 and gone in 1.18: with every warning
    an error, the FID of full-rank and of singular (fewer samples than dimensions) covariances still
    computes, and agrees with the eigenvalue route."""
    import scipy

    rng = np.random.default_rng(2)
    for n, d in ((400, 24), (5, 64)):  # full rank; rank 4 of 64 (singular, like FID on few images)
        f1, f2 = rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.2 + 0.1
        (m1, c1), (m2, c2) = feature_statistics(f1), feature_statistics(f2)
        value = frechet_distance(m1, c1, m2, c2)
        assert value == pytest.approx(fid_by_eigenvalues(m1, c1, m2, c2), rel=1e-6), (scipy.__version__, n, d)
        assert value > 0.1


def test_frechet_distance_refuses_a_root_with_large_imaginary_parts():
    """As basicsr: a covariance product whose root has imaginary diagonal parts above 1e-3 (here a
    'covariance' with a negative eigenvalue) is an error, not a silently real-ised number."""
    mu = np.zeros(2)
    bad = np.diag([1.0, -4.0])
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(mu, np.eye(2), mu, bad)


def test_identical_folders_report_inf_psnr_and_unit_ssim(tmp_path, astronaut, grace_hopper):
    from training.evaluate import main

    gt = tmp_path / "gt"
    names = square_faces(gt, [astronaut, grace_hopper], 64)
    out = tmp_path / "eval"
    assert main(["--gt", str(gt), "--restored", str(gt), "--out", str(out), "--no-fid", "--name", "same"]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["name"] for r in rows] == names
    # The CSV holds repr() of float64 values: they read back exactly; SSIM of identical images is
    # 1 up to float64 rounding (approx's 1e-6 is far above it).
    assert all(float(r["PSNR"]) == math.inf and float(r["SSIM"]) == pytest.approx(1.0) for r in rows)
    summary = (out / "summary.md").read_text()
    assert summary.splitlines()[0] == "| Methods | FID↓ | PSNR↑ | SSIM↑ | LPIPS↓ | IDD↓ |"
    assert "| same | – | inf | 1.0000 | – | – |" in summary
    assert "LPIPS left out" in summary and "IDD left out" in summary
    assert "- Protocol: released:" in summary  # the default: the official scripts' protocol
    assert all(r["protocol"] == "released" for r in rows)


@pytest.mark.slow
def test_degrade_restore_and_report_every_metric(tmp_path, astronaut, grace_hopper, tiny_model_file):
    """--model --degrade: fixed-seed degradation, restoration, per-image CSV and the Table-1 summary."""
    from training.evaluate import main

    gt = tmp_path / "gt"
    names = square_faces(gt, [astronaut, grace_hopper, astronaut[::-1].copy()], 64)
    out = tmp_path / "eval"
    args = ["--gt", str(gt), "--model", str(tiny_model_file), "--degrade", "--seed", "3", "--out", str(out),
            "--allow-random-networks", "--batch-size", "3"]
    assert main(args) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [(r["method"], r["name"]) for r in rows] == [("Input", n) for n in names] + [("tiny_rf", n) for n in names]
    for r in rows:
        assert 0 < float(r["PSNR"]) < 60 and -1 <= float(r["SSIM"]) < 1
        assert float(r["LPIPS"]) >= 0 and 0 <= float(r["IDD"]) <= math.pi
    # The per-image values are the metrics of the written images.
    restored = np.asarray(Image.open(out / "restored" / f"{names[0]}.png"))
    truth = np.asarray(Image.open(gt / f"{names[0]}.png").convert("RGB"))
    assert float(rows[3]["PSNR"]) == pytest.approx(psnr(restored, truth), abs=1e-9)
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert set(summary) == {"Input", "tiny_rf"}
    for method, entry in summary.items():
        # FID >= 0; degraded and restored sets are far from the ground truth (hundreds), so no
        # round-off of the matrix square root can bring it near 0.
        assert entry["FID"] is not None and entry["FID"] > 0
        mean_psnr = np.mean([float(r["PSNR"]) for r in rows if r["method"] == method])
        assert entry["PSNR"] == pytest.approx(mean_psnr, abs=1e-9)
    assert "| tiny_rf |" in (out / "summary.md").read_text()
    # Fixed seed: degrading again gives the same inputs.
    out2 = tmp_path / "eval2"
    again = ["--gt", str(gt), "--model", str(tiny_model_file), "--degrade", "--seed", "3", "--out", str(out2), "--no-fid"]
    assert main(again) == 0
    for n in names:
        a = np.asarray(Image.open(out / "input" / f"{n}.png"))
        b = np.asarray(Image.open(out2 / "input" / f"{n}.png"))
        assert np.array_equal(a, b)


def test_bad_inputs_are_named(tmp_path, astronaut, tiny_model_file, capsys):
    """A bad input is one line on stderr naming it, and exit code 2 (test_evaluate_inputs.py has more)."""
    from training.evaluate import main

    gt = tmp_path / "gt"
    square_faces(gt, [astronaut], 64)
    other = tmp_path / "other"
    square_faces(other, [astronaut, astronaut], 64)
    assert main(["--gt", str(gt), "--restored", str(other), "--out", str(tmp_path / "o"), "--no-fid"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--restored: images and --gt must pair by file name" in err and "face_01" in err
    assert main(["--gt", str(gt), "--model", str(tiny_model_file), "--out", str(tmp_path / "o"), "--no-fid"]) == 2
    assert "--model needs --input DIR" in capsys.readouterr().err


def test_command_line_entry_point(tmp_path, astronaut):
    gt = tmp_path / "gt"
    square_faces(gt, [astronaut], 32)
    done = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", "--gt", str(gt), "--restored", str(gt),
         "--out", str(tmp_path / "o"), "--no-fid"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| gt | – | inf | 1.0000 |" in done.stdout
