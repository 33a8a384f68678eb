"""Loss pieces: weights come from the named files, LPIPS heads map, PatchGAN shapes, hinge loss,
adaptive weight. Backbones are random tensors written by the test (no pretrained files offline)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers.numerics import assert_parity, gamma, unit_roundoff

from training.config import PerceptualConfig
from training.losses import (
    LPIPS,
    PatchDiscriminator,
    VGGPerceptual,
    adaptive_weight,
    build_perceptual,
    hinge_d_loss,
)


def test_vgg_weights_file_is_used(tmp_path):
    torch.manual_seed(0)
    # torchvision's key layout, only the layers relu1_1 .. relu2_1 need (features 0, 2, 5).
    state = {f"features.{i}.{k}": torch.randn(shape) * 0.1 for i, shape_w in ((0, (64, 3, 3, 3)), (2, (64, 64, 3, 3)),
                                                                            (5, (128, 64, 3, 3)))
             for k, shape in (("weight", shape_w), ("bias", (shape_w[0],)))}
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    cfg = PerceptualConfig(layers=("relu1_1", "relu2_1"), vgg_weights=str(path))
    loss = build_perceptual(cfg, allow_random=False)
    assert torch.equal(loss.features[5].weight, state["features.5.weight"])
    x, y = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    # Independent computation of the two-layer loss with the same weights.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def feats(t, dtype=torch.float32):
        w = {k: v.to(dtype) for k, v in state.items()}
        h = ((t.to(dtype) + 1) / 2 - mean.to(dtype)) / std.to(dtype)
        r11 = F.relu(F.conv2d(h, w["features.0.weight"], w["features.0.bias"], padding=1))
        h = F.relu(F.conv2d(r11, w["features.2.weight"], w["features.2.bias"], padding=1))
        h = F.max_pool2d(h, 2)
        r21 = F.relu(F.conv2d(h, w["features.5.weight"], w["features.5.bias"], padding=1))
        return r11, r21

    expected = sum(F.mse_loss(a, b) for a, b in zip(feats(x), feats(y)))
    truth = sum(F.mse_loss(a, b) for a, b in zip(feats(x, torch.float64), feats(y, torch.float64)))
    assert_parity(loss(x, y), expected, truth, "VGG perceptual loss against the hand computation")
    # A file that lacks a needed layer is named.
    del state["features.5.weight"]
    torch.save(state, path)
    with pytest.raises(KeyError, match="features.5.weight|5.weight"):
        build_perceptual(cfg, allow_random=False)


def test_lpips_heads_load_and_distance_properties(tmp_path):
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS.CHANNELS)}
    lp = LPIPS(None, heads)
    assert torch.equal(lp.heads[3].weight, heads["lin3.model.1.weight"])
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(lp(x, x)) == 0.0  # identical inputs: identical features, differences exactly 0
    assert float(lp(x, x.flip(-1))) > 0
    with pytest.raises(KeyError, match="lin0"):
        LPIPS(None, {"other": torch.zeros(1)})


def test_patchgan_and_hinge():
    disc = PatchDiscriminator(3, 16, 3)
    logits = disc(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # 64 / 8 - 2
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0
    assert float(hinge_d_loss(torch.zeros(4), torch.zeros(4))) == 1.0  # (relu(1) + relu(1)) / 2, exact


def test_adaptive_weight_is_gradient_norm_ratio_clamped():
    w = torch.randn(8, 8, requires_grad=True)
    x = torch.randn(4, 8)
    rec = (x @ w).pow(2).mean()
    adv = 3.0 * (x @ w).mean()
    g_rec = torch.autograd.grad(rec, w, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, w, retain_graph=True)[0]
    expected = g_rec.norm() / (g_adv.norm() + 1e-4)
    # Two norms of 64 gradients (gamma_65 each, in any order), the + 1e-4 and the division.
    rel = 2 * gamma(w.numel() + 1, torch.float32) + 2 * unit_roundoff(torch.float32)
    assert float(adaptive_weight(rec, adv, w)) == pytest.approx(float(expected), rel=rel)
    assert float(adaptive_weight(rec, adv * 1e-12, w, max_weight=10.0)) == 10.0


def test_vgg_rejects_unknown_layer():
    with pytest.raises(ValueError, match="relu9_9"):
        VGGPerceptual(None, layers=("relu9_9",))
