"""Component-level losses of the paper's Eq. 11: eyes and mouth, ROI-aligned, with their own
discriminators and a Gram-matrix style loss.

Boxes come from the five landmarks (left eye, right eye, nose, left and right mouth corner, in
image pixels). The released code reads eye and mouth boxes from 68-point landmarks; with five points
the eye box is a square around the eye point whose half side is `EYE_HALF_IOD` times the inter-ocular
distance (about the half width of an eye on FFHQ faces), enlarged 1.4x as in the released code, and
the mouth box a square around the mouth-corner midpoint whose half side is half the corner distance.
Both have a floor of 16 px at 512 (the released code's floor). Crops are taken with ROI-align to
80 px (eyes) and 120 px (mouth) at 512 and scaled with the image size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

REGIONS = ("left_eye", "right_eye", "mouth")
EYE_HALF_IOD = 0.16  # half side of the eye box before enlarging, as a fraction of the eye distance
EYE_ENLARGE = 1.4
MIN_HALF_512 = 16.0
CROP_512 = {"left_eye": 80, "right_eye": 80, "mouth": 120}


def component_boxes(landmarks: torch.Tensor, image_size: int) -> dict[str, torch.Tensor]:
    """Square boxes [B, 4] (x1, y1, x2, y2, pixels) per region from landmarks [B, 5, 2] (x, y)."""
    if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
        raise ValueError(f"landmarks must be [B, 5, 2] (x, y per point), got {tuple(landmarks.shape)}")
    lm = landmarks.float()
    floor = MIN_HALF_512 * image_size / 512
    iod = (lm[:, 1] - lm[:, 0]).norm(dim=-1)
    eye_half = (EYE_HALF_IOD * iod).clamp(min=floor) * EYE_ENLARGE
    mouth_centre = (lm[:, 3] + lm[:, 4]) / 2
    mouth_half = ((lm[:, 4] - lm[:, 3]).norm(dim=-1) / 2).clamp(min=floor)

    def square(centre: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
        return torch.cat([centre - half[:, None], centre + half[:, None]], dim=1)

    return {
        "left_eye": square(lm[:, 0], eye_half),
        "right_eye": square(lm[:, 1], eye_half),
        "mouth": square(mouth_centre, mouth_half),
    }


def crop_size(region: str, image_size: int) -> int:
    return max(8, round(CROP_512[region] * image_size / 512))


def crop_components(images: torch.Tensor, boxes: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ROI-aligned crops {region: [B, C, s, s]} of images [B, C, H, W] (s from `crop_size`)."""
    b, _, h, _ = images.shape
    index = torch.arange(b, device=images.device, dtype=images.dtype)[:, None]
    out = {}
    for region in REGIONS:
        rois = torch.cat([index, boxes[region].to(images)], dim=1)
        s = crop_size(region, h)
        out[region] = roi_align(images, rois, output_size=(s, s), spatial_scale=1.0, sampling_ratio=-1,
                                aligned=True)
    return out


def flip_landmarks(landmarks: torch.Tensor, width: int) -> torch.Tensor:
    """Landmarks [..., 5, 2] of an image flipped left-right: mirrored x, left/right points swapped."""
    out = landmarks.clone()
    out[..., 0] = width - 1 - out[..., 0]
    return out[..., [1, 0, 2, 4, 3], :]


class _EqualConv(nn.Module):
    """StyleGAN2 conv with an equalised learning rate (weights ~N(0,1), scaled by 1/sqrt(fan-in));
    `down` blurs with [1,3,3,1] and then strides by 2; activation is leaky ReLU(0.2) * sqrt(2)."""

    def __init__(self, cin: int, cout: int, *, down: bool = False, activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.scale = 1 / math.sqrt(cin * 9)
        self.down, self.activate = down, activate
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("blur", (k / k.sum())[None, None].repeat(cin, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.conv2d(F.pad(x, (2, 2, 2, 2)), self.blur.to(x.dtype), groups=x.shape[1])
            x = F.conv2d(x, self.weight * self.scale, self.bias, stride=2)
        else:
            x = F.conv2d(x, self.weight * self.scale, self.bias, padding=1)
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.activate else x


class ComponentDiscriminator(nn.Module):
    """One facial-component discriminator: StyleGAN2-style 3x3 conv layers 3->64->128->128->256->256->1
    (downsampling at the 2nd and 4th). Crops [B, 3, s, s] in [-1, 1] -> logits [B, 1, s/4, s/4] and the
    intermediate features after the 3rd and 5th layers (the style loss's multiresolution features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _EqualConv(3, 64)
        self.conv2 = _EqualConv(64, 128, down=True)
        self.conv3 = _EqualConv(128, 128)
        self.conv4 = _EqualConv(128, 256, down=True)
        self.conv5 = _EqualConv(256, 256)
        self.final = _EqualConv(256, 1, activate=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f1 = self.conv3(self.conv2(self.conv1(x)))
        f2 = self.conv5(self.conv4(f1))
        return self.final(f2), [f1, f2]


class ComponentDiscriminators(nn.Module):
    """The three component discriminators, one per region (module names = region names)."""

    def __init__(self) -> None:
        super().__init__()
        self.left_eye = ComponentDiscriminator()
        self.right_eye = ComponentDiscriminator()
        self.mouth = ComponentDiscriminator()

    def forward(self, crops: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, list[torch.Tensor]]]:
        return {region: getattr(self, region)(crops[region]) for region in REGIONS}


def gram(features: torch.Tensor) -> torch.Tensor:
    """Gram matrices [B, C, C] of features [B, C, H, W], normalised by C*H*W."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w).float()
    return f @ f.transpose(1, 2) / (c * h * w)


STYLE_DISTANCES = ("l2_sum", "l1", "l2")


def style_loss(
    fake_feats: list[torch.Tensor],
    real_feats: list[torch.Tensor],
    distance: str = "l2",
    level_weights: tuple[float, ...] = (0.5, 1.0),
) -> torch.Tensor:
    """Weighted sum over feature levels of the distance between Gram matrices (real side detached).

    "l2_sum": the paper's squared L2 norm ||G(fake) - G(real)||^2, summed over the C x C entries of
    each image's Gram matrix and averaged over the batch; "l1": the mean absolute difference over
    all entries (the released code, basicsr's L1Loss); "l2": the mean squared difference. With Gram
    matrices normalised by C*H*W the sum is 4x Gatys et al.'s per-layer style loss, while the mean
    divides it by C^2 (16384 and 65536 for the two levels), which leaves a term far below every
    other one at the paper's weight of 2000.
    """
    if distance not in STYLE_DISTANCES:
        raise ValueError(f"style distance must be one of {STYLE_DISTANCES}, got {distance!r}")
    if len(level_weights) != len(fake_feats):
        raise ValueError(f"{len(fake_feats)} feature levels but {len(level_weights)} level weights")
    total = fake_feats[0].new_zeros((), dtype=torch.float32)
    for w, fake, real in zip(level_weights, fake_feats, real_feats):
        diff = gram(fake) - gram(real.detach())
        if distance == "l2_sum":
            value = diff.square().sum(dim=(1, 2)).mean()
        elif distance == "l2":
            value = diff.square().mean()
        else:
            value = diff.abs().mean()
        total = total + w * value
    return total


def component_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator side of Eq. 11: -[log D(real) + log(1 - D(fake))], mean over positions."""
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def component_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator side (non-saturating): -log D(fake)."""
    return F.softplus(-logits_fake).mean()
