"""`evaluate --protocol released|standard` against numbers computed independently in the test.

The released protocol is re-done here by following the official RestoreFormer++ scripts step by step
(scripts/metrics/cal_psnr_ssim.py, cal_identity_distance.py, cal_fid.py with basicsr 1.4.2): images
read with cv2.imread (BGR), basicsr's PSNR and SSIM formulas written out with NumPy/OpenCV, LPIPS
written out from torchvision's VGG-16 layers (taming-transformers' slices, scaling layer, unit
normalisation, 1x1 heads, spatial mean) and fed BGR in [0, 1] and (x - 0.5) / 0.5, ArcFace fed
0.2989*B + 0.587*G + 0.114*R of [0, 1] BGR at 128x128, the angle by np.arccos, FID from the
Inception program called directly and a Frechet distance by eigenvalues (no scipy sqrtm).

Pretrained LPIPS, ArcFace and VGG weights cannot be had offline: the networks are randomly
initialised networks of the real architectures, written to weight files that `evaluate` reads
through --lpips-vgg, --lpips-heads and --arcface like real ones. Their values are not LPIPS or IDD
values; the test pins that both routes compute the same function of the same networks.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.evaluation import fid_by_eigenvalues
from PIL import Image

cv2 = pytest.importorskip("cv2")

LPIPS_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # relu1_2 ... relu5_3 of torchvision's VGG-16
LPIPS_SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
LPIPS_SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)


def _crop(photo: np.ndarray, top: int, left: int, side: int, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(photo[top : top + side, left : left + side]).resize((size, size), Image.Resampling.BICUBIC))


def _coloured_set(root: Path, astronaut, grace_hopper, sizes=(64, 64, 64)) -> tuple[Path, Path]:
    """Ground truth (three colour crops) and a 'restored' set whose error differs per channel
    (a colour cast plus noise), so channel order and grey weights matter."""
    gt, restored = root / "gt", root / "restored"
    gt.mkdir(parents=True)
    restored.mkdir(parents=True)
    crops = [(astronaut, 20, 150, 240), (grace_hopper, 0, 40, 440), (astronaut, 250, 20, 260)]
    rng = np.random.default_rng(7)
    for i, ((photo, top, left, side), size) in enumerate(zip(crops, sizes)):
        image = _crop(photo, top, left, side, size)
        cast = np.array([18, -6, 10]) * (1 + i)
        noisy = image.astype(int) + cast + rng.integers(-12, 13, image.shape)
        Image.fromarray(image).save(gt / f"face_{i}.png")
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(restored / f"face_{i}.png")
    return gt, restored


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    """Random VGG-16 features, LPIPS heads and ArcFace written to .pth files, and the same networks
    built here for the independent route."""
    from torchvision.models import vgg16

    from training.losses.identity import ArcFaceResNet18

    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(11)
    features = vgg16(weights=None).features[:30].eval()
    heads = [torch.rand(1, c, 1, 1) / c for c in (64, 128, 256, 512, 512)]  # non-negative like lpips' heads
    arcface = ArcFaceResNet18().eval()
    # Non-trivial BatchNorm statistics, so the eval-mode normalisation is exercised too.
    for m in arcface.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    paths = {"vgg": root / "vgg16.pth", "heads": root / "lpips_vgg.pth", "arcface": root / "arcface_resnet18.pth"}
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, paths["vgg"])
    torch.save({f"lin{i}.model.1.weight": w for i, w in enumerate(heads)}, paths["heads"])
    torch.save(arcface.state_dict(), paths["arcface"])
    return {"features": features, "heads": heads, "arcface": arcface, "paths": paths}


def _args(networks) -> list[str]:
    p = networks["paths"]
    return ["--lpips-vgg", str(p["vgg"]), "--lpips-heads", str(p["heads"]), "--arcface", str(p["arcface"])]


# ---- the independent route ----------------------------------------------------------------------


def _psnr(img: np.ndarray, gt: np.ndarray) -> float:
    mse = np.mean((img.astype(np.float64) - gt.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _ssim(img: np.ndarray, gt: np.ndarray) -> float:
    """basicsr's calculate_ssim (crop_border 0, all channels): per channel, an 11x11 Gaussian window
    (sigma 1.5) by cv2.filter2D in float64, the 5-pixel border of the filtered maps dropped, mean."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    k = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(k, k.transpose())
    values = []
    for ch in range(3):
        x, y = img[..., ch].astype(np.float64), gt[..., ch].astype(np.float64)

        def f(a):
            return cv2.filter2D(a, -1, window)[5:-5, 5:-5]

        mu1, mu2 = f(x), f(y)
        s1, s2, s12 = f(x * x) - mu1**2, f(y * y) - mu2**2, f(x * y) - mu1 * mu2
        values.append((((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))).mean())
    return float(np.mean(values))


@torch.no_grad()
def _lpips(networks, x: torch.Tensor, y: torch.Tensor) -> float:
    """taming-transformers' LPIPS forward: each image through the VGG slices on its own."""
    hx, hy = (x - LPIPS_SHIFT) / LPIPS_SCALE, (y - LPIPS_SHIFT) / LPIPS_SCALE
    total = 0.0
    for (a, b), w in zip(LPIPS_SLICES, networks["heads"]):
        for layer in networks["features"][a:b]:
            hx, hy = layer(hx), layer(hy)
        nx = hx / (torch.sqrt(torch.sum(hx**2, dim=1, keepdim=True)) + 1e-10)
        ny = hy / (torch.sqrt(torch.sum(hy**2, dim=1, keepdim=True)) + 1e-10)
        total += float(((nx - ny) ** 2 * w).sum(dim=1).mean())
    return total


def _as_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


@torch.no_grad()
def _embedding(networks, x: torch.Tensor) -> np.ndarray:
    grey = 0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2]
    grey = F.interpolate(grey[:, None], (128, 128), mode="bilinear", align_corners=False)
    return networks["arcface"](grey).numpy().squeeze()


def _angle64(e1: np.ndarray, e2: np.ndarray) -> float:
    a, b = e1.astype(np.float64), e2.astype(np.float64)
    return float(np.arccos(np.clip(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1)))


def _released_by_hand(networks, img_path: Path, gt_path: Path) -> dict[str, float]:
    img, gt = cv2.imread(str(img_path)), cv2.imread(str(gt_path))  # BGR, as the scripts read them
    x, y = _as_tensor(img), _as_tensor(gt)
    e1, e2 = _embedding(networks, x), _embedding(networks, y)
    return {
        "PSNR": _psnr(img, gt),
        "SSIM": _ssim(img, gt),
        "LPIPS_0_1": _lpips(networks, x, y),
        "LPIPS": _lpips(networks, (x - 0.5) / 0.5, (y - 0.5) / 0.5),
        "IDD": _angle64(e1, e2),
        # The script itself takes np.arccos of the float32 cosine.
        "IDD_float32": float(np.arccos(np.dot(e2, e1) / (np.linalg.norm(e2) * np.linalg.norm(e1)))),
    }


def _standard_by_hand(networks, img_path: Path, gt_path: Path) -> dict[str, float]:
    img = np.asarray(Image.open(img_path).convert("RGB"))
    gt = np.asarray(Image.open(gt_path).convert("RGB"))
    x, y = _as_tensor(img), _as_tensor(gt)
    return {
        "PSNR": _psnr(img, gt),
        "SSIM": _ssim(img, gt),
        "LPIPS": _lpips(networks, x * 2 - 1, y * 2 - 1),
        "IDD": _angle64(_embedding(networks, x * 2 - 1), _embedding(networks, y * 2 - 1)),
    }


def _rows(out: Path) -> dict[str, dict[str, str]]:
    return {r["name"]: r for r in csv.DictReader((out / "metrics.csv").open())}


# ---- tests ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both_protocols(tmp_path_factory, astronaut, grace_hopper, networks):
    from training.evaluate import main

    root = tmp_path_factory.mktemp("protocols")
    gt, restored = _coloured_set(root, astronaut, grace_hopper)
    outs = {}
    for protocol in ("released", "standard"):
        outs[protocol] = root / protocol
        assert main(["--gt", str(gt), "--restored", str(restored), "--out", str(outs[protocol]), "--no-fid",
                     "--protocol", protocol] + _args(networks)) == 0
    return gt, restored, outs


def test_released_protocol_matches_the_official_steps_done_by_hand(both_protocols, networks):
    gt, restored, outs = both_protocols
    rows = _rows(outs["released"])
    assert sorted(rows) == ["face_0", "face_1", "face_2"]
    for name, row in rows.items():
        ref = _released_by_hand(networks, restored / f"{name}.png", gt / f"{name}.png")
        assert row["protocol"] == "released"
        assert float(row["PSNR"]) == pytest.approx(ref["PSNR"], abs=1e-10)
        assert float(row["SSIM"]) == pytest.approx(ref["SSIM"], abs=1e-10)
        assert float(row["LPIPS"]) == pytest.approx(ref["LPIPS"], rel=1e-5)
        assert float(row["LPIPS_0_1"]) == pytest.approx(ref["LPIPS_0_1"], rel=1e-5)
        assert float(row["IDD"]) == pytest.approx(ref["IDD"], abs=1e-6)
        # The script's float32 cosine agrees to float32 rounding.
        assert float(row["IDD"]) == pytest.approx(ref["IDD_float32"], abs=1e-3)
        assert float(row["LPIPS"]) > 0 and float(row["IDD"]) > 0
    summary = (outs["released"] / "summary.md").read_text()
    # The table's LPIPS is the [-1, 1] one; the report names the range and gives the [0, 1] mean.
    mean_lpips = np.mean([float(r["LPIPS"]) for r in rows.values()])
    mean_lpips01 = np.mean([float(r["LPIPS_0_1"]) for r in rows.values()])
    assert f"| {mean_lpips:.4f} |" in summary.splitlines()[2]
    assert "LPIPS (VGG) fed BGR in [-1, 1]" in summary and f"restored {mean_lpips01:.4f}" in summary


def test_standard_protocol_matches_rgb_steps_done_by_hand(both_protocols, networks):
    gt, restored, outs = both_protocols
    for name, row in _rows(outs["standard"]).items():
        ref = _standard_by_hand(networks, restored / f"{name}.png", gt / f"{name}.png")
        assert row["protocol"] == "standard" and row["LPIPS_0_1"] == ""
        assert float(row["PSNR"]) == pytest.approx(ref["PSNR"], abs=1e-10)
        assert float(row["SSIM"]) == pytest.approx(ref["SSIM"], abs=1e-10)
        assert float(row["LPIPS"]) == pytest.approx(ref["LPIPS"], rel=1e-5)
        assert float(row["IDD"]) == pytest.approx(ref["IDD"], abs=1e-6)


def test_protocols_agree_on_psnr_ssim_and_differ_on_lpips_and_idd(both_protocols, capsys):
    """PSNR and SSIM treat the three channels alike, so BGR and RGB give the same numbers; LPIPS and
    ArcFace weigh the channels differently, so on coloured images the protocols differ."""
    _, _, outs = both_protocols
    released, standard = _rows(outs["released"]), _rows(outs["standard"])
    for name in released:
        r, s = released[name], standard[name]
        assert float(r["PSNR"]) == pytest.approx(float(s["PSNR"]), abs=1e-12)
        assert float(r["SSIM"]) == pytest.approx(float(s["SSIM"]), abs=1e-12)
        for col in ("LPIPS", "IDD"):
            assert abs(float(r[col]) - float(s[col])) > 0.01 * abs(float(s[col])), (name, col, r[col], s[col])
    with capsys.disabled():  # the README quotes these means
        for protocol, rows in (("released", released), ("standard", standard)):
            cols = ["PSNR", "SSIM", "LPIPS", "IDD"] + (["LPIPS_0_1"] if protocol == "released" else [])
            means = {c: np.mean([float(r[c]) for r in rows.values()]) for c in cols}
            print(f"\n{protocol}: " + ", ".join(f"{c} {v:.6g}" for c, v in means.items()), end="")
    # The summary and JSON name the protocol; LPIPS and IDD under 'standard' are marked not comparable.
    assert "- Protocol: standard:" in (outs["standard"] / "summary.md").read_text()
    import json

    payload = json.loads((outs["standard"] / "summary.json").read_text())
    assert payload["protocol"] == "standard"
    assert set(payload["not_comparable"]) == {"LPIPS", "IDD"}
    assert "not_comparable" in json.loads((outs["released"] / "summary.json").read_text())
    assert json.loads((outs["released"] / "summary.json").read_text())["not_comparable"] == {}


@pytest.mark.parametrize("protocol", ["released", "standard"])
def test_identity_distance_and_lpips_of_identical_images_are_zero(tmp_path, astronaut, grace_hopper, networks, protocol):
    from training.evaluate import main

    gt, _ = _coloured_set(tmp_path, astronaut, grace_hopper)
    out = tmp_path / "out"
    assert main(["--gt", str(gt), "--restored", str(gt), "--out", str(out), "--no-fid", "--protocol", protocol]
                + _args(networks)) == 0
    for row in _rows(out).values():
        assert float(row["IDD"]) == 0.0 and float(row["LPIPS"]) == 0.0 and float(row["PSNR"]) == math.inf


def test_identity_angle_is_exactly_zero_for_equal_embeddings_where_float32_is_not():
    from training.eval_protocol import identity_angle

    rng = np.random.default_rng(3)
    float32_nonzero = 0
    for _ in range(200):
        e = torch.from_numpy(rng.normal(size=512).astype(np.float32) * rng.uniform(0.1, 30))
        assert identity_angle(e, e.clone()) == 0.0
        cos32 = np.dot(e.numpy(), e.numpy()) / (np.linalg.norm(e.numpy()) * np.linalg.norm(e.numpy()))
        with np.errstate(invalid="ignore"):
            float32_nonzero += not (np.arccos(cos32) == 0.0)
    # The released script's float32 cosine is not exactly 1 for many of them (NaN or ~3e-4 rad).
    assert float32_nonzero > 0


@pytest.mark.slow
@torch.no_grad()
def test_released_fid_on_mixed_sizes_matches_basicsr_steps_done_by_hand(tmp_path, astronaut, grace_hopper):
    """FID with images of different sizes (64, 80, 72 px) works: each image is resized to 299 on its
    own. The reference route: cv2.imread, BGR->RGB, /255, (x - 0.5) / 0.5, bilinear resize to 299
    (align_corners=False), the Inception program called directly, np.cov, eigenvalue Frechet distance."""
    from training.evaluate import main
    from training.metrics import inception_path

    gt, restored = _coloured_set(tmp_path, astronaut, grace_hopper, sizes=(64, 80, 72))
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="fewer than the 2048"):
        assert main(["--gt", str(gt), "--restored", str(restored), "--out", str(out), "--batch-size", "2"]) == 0
    import json

    payload = json.loads((out / "summary.json").read_text())
    fid = payload["summary"]["restored"]["FID"]

    net = torch.jit.load(str(inception_path())).eval()

    def feats(folder: Path) -> np.ndarray:
        rows = []
        for path in sorted(folder.glob("*.png")):
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
            x = (torch.from_numpy(rgb).permute(2, 0, 1)[None] - 0.5) / 0.5
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            rows.append(net(x).double().numpy().reshape(-1))
        return np.stack(rows)

    f_restored, f_gt = feats(restored), feats(gt)
    expected = fid_by_eigenvalues(f_restored.mean(0), np.cov(f_restored, rowvar=False),
                                   f_gt.mean(0), np.cov(f_gt, rowvar=False))
    assert fid == pytest.approx(expected, rel=1e-5)
    assert fid > 1.0
    # Not comparable with the paper: the reference is the ground truth and there are 3 images.
    reasons = " ".join(payload["not_comparable"]["FID"])
    assert "ground-truth folder" in reasons and "fewer than 2048 images" in reasons
    assert "FID↓" in (out / "summary.md").read_text() and f"{fid:.2f}*" in (out / "summary.md").read_text()
    assert "not proven to be the same network" in (out / "summary.md").read_text()
