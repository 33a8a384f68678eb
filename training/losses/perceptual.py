"""Perceptual losses on frozen VGG features: the paper's VGG-19 and the released code's LPIPS.

Backbone weights never download: the config names a local file (torchvision's
`vgg19-dcbb9e9d.pth` / `vgg16-397923af.pth`, or a bare `features.*` state dict) and LPIPS's
linear heads (`vgg.pth` of the lpips package, keys `lin{i}.model.1.weight`). A missing file is an
error that names the config key; random weights only with `allow_random_loss_networks: true`
(tests, where pretrained files cannot be had).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import vgg16, vgg19

# Indices of the ReLU outputs in torchvision's `features` Sequential.
VGG19_LAYERS = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu3_4": 17, "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26, "relu5_1": 29,
    "relu5_2": 31, "relu5_3": 33, "relu5_4": 35,
}
VGG16_LAYERS = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}
LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_weights_file(path: str, what: str, config_key: str, allow_random: bool) -> dict | None:
    """The state dict in `path`, or None (random init) when no path is set and that is allowed."""
    if not path:
        if allow_random:
            return None
        raise FileNotFoundError(
            f"{what}: no weight file configured. Set {config_key} to a local file (it is never downloaded), "
            "or set loss.allow_random_loss_networks: true to train with random weights (tests only)."
        )
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"{what}: {config_key} = {str(p)!r} does not exist; download it there or fix the path.")
    from ..safe_io import read_weights

    return read_weights(p, f"{what} ({config_key})", f"download the file again (it is damaged or not the file "
                        f"{config_key} expects) or fix {config_key}.")


def _load_features(features: nn.Sequential, state: dict | None, what: str) -> None:
    if state is None:
        return
    own = features.state_dict()
    picked = {}
    for key in own:
        for candidate in (f"features.{key}", key, f"module.features.{key}"):
            if candidate in state:
                picked[key] = state[candidate]
                break
    missing = sorted(set(own) - set(picked))
    if missing:
        raise KeyError(f"{what}: the weight file lacks {missing[:6]}{'...' if len(missing) > 6 else ''}; "
                       "expected torchvision VGG keys like 'features.0.weight'")
    features.load_state_dict(picked, strict=True)


class VGGPerceptual(nn.Module):
    """Sum over layers of weight_l * criterion(phi_l(x), phi_l(y)) on ImageNet-normalised input.

    Inputs [B, 3, H, W] in [-1, 1]. The paper: VGG-19, conv1..conv5 (relu1_1 ... relu5_1), MSE.
    """

    def __init__(
        self,
        state: dict | None,
        layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        layer_weights: Sequence[float] = (),
        criterion: str = "mse",
        arch: str = "vgg19",
    ) -> None:
        super().__init__()
        table = VGG19_LAYERS if arch == "vgg19" else VGG16_LAYERS
        unknown = [name for name in layers if name not in table]
        if unknown:
            raise ValueError(f"unknown VGG layers {unknown}; choose from {list(table)}")
        if layer_weights and len(layer_weights) != len(layers):
            raise ValueError("perceptual.layer_weights must have one weight per layer")
        if criterion not in ("mse", "l1"):
            raise ValueError(f"perceptual.criterion must be mse or l1, got {criterion!r}")
        last = max(table[name] for name in layers)
        self.features = (vgg19 if arch == "vgg19" else vgg16)(weights=None).features[: last + 1]
        _load_features(self.features, state, f"perceptual ({arch})")  # only the layers kept
        self.features.eval().requires_grad_(False)
        self.taps = {table[name]: i for i, name in enumerate(layers)}
        self.weights = list(layer_weights) or [1.0] * len(layers)
        self.criterion = F.mse_loss if criterion == "mse" else F.l1_loss
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # frozen: always eval
        return super().train(False)

    def features_of(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x + 1) / 2 - self.mean) / self.std
        out: list[torch.Tensor] = [None] * len(self.taps)  # type: ignore[list-item]
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out[self.taps[i]] = h
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.features_of(torch.cat([x, y.detach()]))
        total = x.new_zeros((), dtype=torch.float32)
        for w, f in zip(self.weights, fx):
            a, b = f.float().chunk(2)
            total = total + w * self.criterion(a, b)
        return total


class LPIPS(nn.Module):
    """LPIPS (Zhang et al. 2018) on VGG-16 with learned linear heads: [B,3,H,W] in [-1,1] -> mean
    distance over the batch (a scalar). Heads from the lpips package's `weights/v0.1/vgg.pth`."""

    CHANNELS = (64, 128, 256, 512, 512)

    def __init__(self, backbone_state: dict | None, heads_state: dict | None) -> None:
        super().__init__()
        self.features = vgg16(weights=None).features[: VGG16_LAYERS["relu5_3"] + 1]
        _load_features(self.features, backbone_state, "LPIPS backbone (vgg16)")
        self.features.eval().requires_grad_(False)
        self.taps = {VGG16_LAYERS[name]: i for i, name in enumerate(LPIPS_TAPS)}
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS)
        if heads_state is not None:
            mapped = {}
            for i in range(len(self.CHANNELS)):
                for candidate in (f"lin{i}.model.1.weight", f"lins.{i}.model.1.weight", f"heads.{i}.weight"):
                    if candidate in heads_state:
                        mapped[f"{i}.weight"] = heads_state[candidate]
            if len(mapped) != len(self.CHANNELS):
                raise KeyError("LPIPS heads file lacks lin0..lin4 ('lin{i}.model.1.weight'); use lpips' vgg.pth")
            self.heads.load_state_dict(mapped, strict=True)
        else:
            for head in self.heads:  # non-negative like the trained heads
                nn.init.uniform_(head.weight, 0.0, 1.0 / head.in_channels)
        self.heads.requires_grad_(False)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.with_style(x, y, style=False)[0]

    def with_style(self, x: torch.Tensor, y: torch.Tensor, style: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(LPIPS distance, style term). The style term is the released code's extra LPIPS output:
        at each of the five taps, the mean squared difference between the Gram matrices (normalised
        by C*H*W, per image) of the channel-normalised features, summed over the taps; unweighted
        (the released RF config multiplies it by lpips_style_weight = 1e9)."""
        h = (torch.cat([x, y.detach()]) - self.shift) / self.scale
        total = x.new_zeros((), dtype=torch.float32)
        style_total = x.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                a, b = h.float().chunk(2)
                a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total = total + self.heads[self.taps[i]]((a - b) ** 2).mean()
                if style:
                    style_total = style_total + (_gram(a) - _gram(b)).square().mean()
        return total, style_total


def _gram(features: torch.Tensor) -> torch.Tensor:
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def build_perceptual(cfg, allow_random: bool) -> nn.Module:
    """From a `PerceptualConfig`: kind 'vgg19' (paper) or 'lpips' (released code)."""
    if cfg.style_weight > 0 and cfg.kind != "lpips":
        raise ValueError("loss.perceptual.style_weight is the released code's LPIPS style term; it needs "
                         f"loss.perceptual.kind: lpips (got {cfg.kind!r})")
    if cfg.kind == "vgg19":
        state = load_weights_file(cfg.vgg_weights, "perceptual loss VGG-19", "loss.perceptual.vgg_weights", allow_random)
        return VGGPerceptual(state, cfg.layers, cfg.layer_weights, cfg.criterion, "vgg19")
    if cfg.kind == "lpips":
        backbone = load_weights_file(cfg.vgg_weights, "LPIPS VGG-16 backbone", "loss.perceptual.vgg_weights", allow_random)
        heads = load_weights_file(cfg.lpips_heads, "LPIPS linear heads", "loss.perceptual.lpips_heads", allow_random)
        return LPIPS(backbone, heads)
    raise ValueError(f"loss.perceptual.kind must be 'vgg19' or 'lpips', got {cfg.kind!r}")
