"""PatchGAN discriminator, GAN losses and the adaptive adversarial weight.

The discriminator is the 3-layer PatchGAN of pix2pix as the released code uses it (64 filters,
BatchNorm, LeakyReLU 0.2, 4x4 convolutions). Under DDP its BatchNorm statistics are taken over
the whole global batch (`CrossRankBatchNorm2d`, on CPU/gloo and CUDA/NCCL alike), so N processes
with batch B/N train the same discriminator as one process with batch B.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import distributed as D


class CrossRankBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover every rank's batch (plain BatchNorm2d when
    there is one process). Gradients flow through the all-reduce (torch.distributed.nn)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and D.is_enabled()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        world = dist.get_world_size()
        count = x.numel() // x.shape[1] * world
        xf = x.float()
        mean = all_reduce(xf.sum(dim=(0, 2, 3))) / count
        centred = xf - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * count / max(count - 1, 1), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


class PatchDiscriminator(nn.Module):
    """PatchGAN: [B, 3, H, W] in [-1, 1] -> logits [B, 1, H/8 - 2, W/8 - 2] (for 3 layers)."""

    def __init__(self, in_channels: int = 3, filters: int = 64, layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"discriminator norm must be 'batch' or 'none', got {norm!r}")

        def norm_layer(c: int) -> nn.Module:
            return CrossRankBatchNorm2d(c) if norm == "batch" else nn.Identity()

        bias = norm == "none"
        seq: list[nn.Module] = [nn.Conv2d(in_channels, filters, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [
                nn.Conv2d(filters * prev, filters * mult, 4, stride, 1, bias=bias),
                norm_layer(filters * mult),
                nn.LeakyReLU(0.2, True),
            ]
        seq.append(nn.Conv2d(filters * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """The generator side of the hinge GAN: -E[D(G(x))]."""
    return -logits_fake.mean()


def adaptive_weight(
    rec_loss: torch.Tensor,
    adv_loss: torch.Tensor,
    last_layer: torch.Tensor,
    *,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> torch.Tensor:
    """clamp(|grad rec| / (|grad adv| + eps), 0, max_weight), taken at `last_layer` (detached).

    The two gradients are averaged over ranks first, so the weight is the one of the global batch
    (and equals the single-process value) rather than a per-rank estimate.
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0].float()
    g_adv = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0].float()
    D.all_reduce_mean(g_rec)
    D.all_reduce_mean(g_adv)
    return (g_rec.norm() / (g_adv.norm() + eps)).clamp(0.0, max_weight).detach()


def adversarial_weight(settings, rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """The weight of the generator's adversarial term under a discriminator config (`weight`,
    `adaptive_weight`, `adaptive_max`): the adaptive weight times `weight`, or `weight` alone."""
    if settings.adaptive_weight:
        return adaptive_weight(rec_loss, adv_loss, last_layer, max_weight=settings.adaptive_max) * settings.weight
    return torch.tensor(settings.weight, device=adv_loss.device)


def weigh_terms(terms: dict, weights: dict, adv_key: str, settings, last_layer: torch.Tensor):
    """(each term times its weight, the adversarial weight or None). The adversarial term `adv_key`
    is weighed against rec = l1 + perceptual (the released code's nll) at `last_layer`, and comes last
    in the dict, so the loss sums the terms in the same order in every stage."""
    weighted = {k: weights[k] * v for k, v in terms.items() if k != adv_key}
    if adv_key not in terms:
        return weighted, None
    rec = weighted["l1"] + weighted.get("perceptual", 0.0)
    adv_weight = adversarial_weight(settings, rec, terms[adv_key], last_layer)
    weighted[adv_key] = adv_weight * terms[adv_key]
    return weighted, adv_weight
