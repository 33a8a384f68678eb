"""Identity: ArcFace ResNet-18 (the layout of GFPGAN's `arcface_resnet18.pth`), the identity loss of
the paper's Eq. 12 and the IDD metric.

The network (ResNetArcFace with IR blocks [2, 2, 2, 2], no squeeze-excitation) takes a gray
128x128 face in [-1, 1] and returns a 512-d embedding. Its weights come from a local file only;
random initialisation needs `allow_random=True` (tests, where the file cannot be had).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus the (downsampled) input, then PReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cin)
        self.bn1 = nn.BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(self.bn0(x))))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + residual)


class ArcFaceResNet18(nn.Module):
    """Gray [B, 1, 128, 128] in [-1, 1] -> embedding [B, 512]. Key names follow GFPGAN's file."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (cin, cout, stride) in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(IRBlock(cin, cout, stride), IRBlock(cout, cout)))
        self.bn4 = nn.BatchNorm2d(512)
        self.dropout = nn.Dropout()
        self.fc5 = nn.Linear(512 * 8 * 8, 512)
        self.bn5 = nn.BatchNorm1d(512)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(self.bn4(x))
        return self.bn5(self.fc5(x.flatten(1)))


def gray_128(images: torch.Tensor) -> torch.Tensor:
    """RGB [B, 3, H, W] (any range) -> luma [B, 1, 128, 128] (ITU-R 601 weights, bilinear resize)."""
    y = 0.2989 * images[:, 0] + 0.5870 * images[:, 1] + 0.1140 * images[:, 2]
    return F.interpolate(y[:, None], size=(128, 128), mode="bilinear", align_corners=False)


def load_arcface(path: str | None, *, allow_random: bool = False, config_key: str = "loss.identity_weights") -> ArcFaceResNet18:
    """ArcFace ResNet-18 in eval mode with frozen weights from `path` (a .pth or .safetensors state dict;
    `module.` prefixes and a `params`/`state_dict` wrapper are accepted). Strict: missing or unexpected
    keys are an error that names them."""
    from .perceptual import load_weights_file

    net = ArcFaceResNet18()
    state = load_weights_file(path or "", "ArcFace identity network", config_key, allow_random)
    if state is not None:
        state = {k.removeprefix("module."): v for k, v in state.items()}
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{config_key} = {path!r} is not an ArcFace ResNet-18 (GFPGAN arcface_resnet18.pth layout): "
                f"missing {result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}"
            )
    net.eval().requires_grad_(False)
    return net


class IdentityLoss(nn.Module):
    """||eta(gt) - eta(out)||^2 (mean over the 512 dims; "l1" gives the released code's L1).
    Images in [-1, 1]; the ground-truth embedding is detached. The network stays in eval mode."""

    def __init__(self, net: ArcFaceResNet18, distance: str = "l2") -> None:
        super().__init__()
        if distance not in ("l2", "l1"):
            raise ValueError(f"identity distance must be 'l2' or 'l1', got {distance!r}")
        self.net = net
        self.distance = distance

    def train(self, mode: bool = True) -> IdentityLoss:
        super().train(mode)
        self.net.eval()  # BatchNorm statistics and dropout stay fixed
        return self

    def forward(self, out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        e_out = self.net(gray_128(out).float())
        with torch.no_grad():
            e_gt = self.net(gray_128(gt).float())
        diff = e_out - e_gt.detach()
        return diff.square().mean() if self.distance == "l2" else diff.abs().mean()


@torch.no_grad()
def identity_angle(net: ArcFaceResNet18, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IDD: angle in radians between the embeddings of images a and b [B, 3, H, W] in [0, 1] -> [B]."""
    ea = net(gray_128(a * 2 - 1).float())
    eb = net(gray_128(b * 2 - 1).float())
    cos = F.cosine_similarity(ea, eb, dim=1).clamp(-1.0, 1.0)
    return torch.arccos(cos)
