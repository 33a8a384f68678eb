"""Stage 1: the HQ dictionary (Sec. 3.2), a VQGAN trained to reconstruct undegraded faces.

    L_Dict = L1 + lambda_per L_per + lambda_adv L_adv + lambda_d L_codebook + lambda_c L_commit   (Eq. 18)

with L_codebook = ||sg[Z_h] - Z_p||^2 (moves the dictionary) and L_commit = ||Z_h - sg[Z_p]||^2
(keeps the encoder near it), weights 1.0 and 0.25 as the paper gives them (the released code has
them the other way round: its quantiser puts beta = 0.25 on the dictionary term and 1.0 on the
commitment term; `stage1_released.yaml` does the same). The network is the
model core's RestoreFormer with `fusion="self"` (its decoder attention is self-attention), so
its weights export straight into the format the nodes load and stage 2 initialises from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from restoreformer_node.model import RestoreFormer, RestoreFormerConfig
from restoreformer_node.model.blocks import AttentionBlock

from .config import (
    AugmentConfig,
    DataConfig,
    DegradationConfig,
    DiscriminatorConfig,
    ModelConfig,
    OptimConfig,
    PerceptualConfig,
    RunConfig,
    add_run_arguments,
    load_run_config,
    to_dict,
)
from .data import FaceDataset
from .degradation import GtAugment
from .losses import (
    PatchDiscriminator,
    build_perceptual,
    generator_loss,
    hinge_d_loss,
    vanilla_d_loss,
    weigh_terms,
)
from .trainer import Phase, Task, Trainer, step_schedule


@dataclass
class Stage1LossConfig:
    l1_weight: float = 1.0
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    codebook_weight: float = 1.0  # lambda_d
    commitment_weight: float = 0.25  # lambda_c
    allow_random_loss_networks: bool = False  # tests only: VGG/LPIPS with random weights


@dataclass
class Stage1Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: Stage1LossConfig = field(default_factory=Stage1LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Ground-truth augmentation after the flip (the released RF++ dictionary: shift and gray).
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Not used by stage-1 training (it sees undegraded faces); `samples` and stage 2 read it.
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def network_config(self) -> RestoreFormerConfig:
        return self.model.build_config(fusion="self")


class VQAutoencoder(RestoreFormer):
    """RestoreFormer (same parameters and keys) whose forward returns what the stage-1 losses need.

    forward(x [B,3,H,W] in [-1,1]) -> (reconstruction [B,3,H,W], z [B,C,h,w] before quantisation,
    entries [B,C,h,w] the chosen dictionary entries with gradient to the dictionary).
    """

    def forward(self, x: torch.Tensor):  # type: ignore[override]
        out, q = self.forward_with_loss(x)  # DDP wraps `forward`, so it hands back what the losses need
        return out, q.z, q.entries


def freeze_unused_attention_norms(model: nn.Module) -> int:
    """Self-attention never reads `norm2` (it normalises the query source of cross-attention);
    freezing those parameters lets DDP run without find_unused_parameters. Returns the count."""
    count = 0
    for module in model.modules():
        if isinstance(module, AttentionBlock):
            for p in module.norm2.parameters():
                p.requires_grad_(False)
                count += 1
    return count


class Stage1(Task):
    name = "stage1"

    def __init__(self, cfg: Stage1Config) -> None:
        self.cfg = cfg
        self.net_cfg = cfg.network_config()

    def setup(self, trainer: Trainer) -> None:
        cfg = self.cfg
        if cfg.data.size != self.net_cfg.resolution and cfg.data.size % self.net_cfg.size_multiple:
            raise ValueError(f"data.size={cfg.data.size} must be a multiple of {self.net_cfg.size_multiple}")
        net = VQAutoencoder(self.net_cfg)
        freeze_unused_attention_norms(net)
        trainer.add_module("generator", net)
        dcfg = cfg.loss.discriminator
        disc = PatchDiscriminator(3, dcfg.filters, dcfg.layers, dcfg.norm)
        trainer.add_module("discriminator", disc)
        self.perceptual = None
        if cfg.loss.perceptual.weight > 0 or cfg.loss.perceptual.style_weight > 0:
            self.perceptual = build_perceptual(cfg.loss.perceptual, cfg.loss.allow_random_loss_networks)
            self.perceptual.to(trainer.device)
        o = cfg.optim
        schedule = step_schedule(o)
        lr = trainer.learning_rate(o)
        trainer.add_optimizer(
            "generator",
            torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr, betas=o.betas,
                             weight_decay=o.weight_decay),
            schedule,
        )
        trainer.add_optimizer(
            "discriminator",
            torch.optim.Adam(disc.parameters(), lr=o.disc_lr if o.disc_lr is not None else lr, betas=o.disc_betas),
            schedule,
        )
        if dcfg.loss not in ("hinge", "vanilla"):
            raise ValueError(f"loss.discriminator.loss must be hinge or vanilla, got {dcfg.loss!r}")
        self.d_loss_fn = hinge_d_loss if dcfg.loss == "hinge" else vanilla_d_loss

    def disc_active(self, step: int) -> bool:
        d = self.cfg.loss.discriminator
        return d.weight > 0 and step >= d.start_step

    # ---- phases -------------------------------------------------------------------------------
    def generator_terms(self, trainer: Trainer, batch: dict, state: dict | None = None) -> dict[str, torch.Tensor]:
        """The unweighted terms of Eq. 18 at this step: l1, perceptual (and the LPIPS style term when
        its weight is set), codebook, commitment, and adv once the discriminator has started."""
        lc = self.cfg.loss
        x = batch["gt"] * 2 - 1
        xrec, z, entries = trainer.wrapped["generator"](x)
        xrec = xrec.float()
        terms: dict[str, torch.Tensor] = {"l1": (x - xrec).abs().mean()}
        if self.perceptual is not None:
            if lc.perceptual.style_weight > 0:
                terms["perceptual"], terms["lpips_style"] = self.perceptual.with_style(xrec, x)
            else:
                terms["perceptual"] = self.perceptual(xrec, x)
        terms["codebook"] = F.mse_loss(entries.float(), z.detach().float())
        terms["commitment"] = F.mse_loss(z.float(), entries.detach().float())
        if self.disc_active(trainer.step):
            terms["g_adv"] = generator_loss(trainer.modules["discriminator"](xrec).float())
        if state is not None:
            state["fake"] = xrec.detach()
        return terms

    def weighted_terms(self, trainer: Trainer, terms: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                                    torch.Tensor | None]:
        """(each term times its weight, as the loss sums them; the adversarial weight or None). The
        adaptive adversarial weight compares against rec = l1 + perceptual (the released code's nll)."""
        lc = self.cfg.loss
        weights = {"l1": lc.l1_weight, "perceptual": lc.perceptual.weight, "lpips_style": lc.perceptual.style_weight,
                   "codebook": lc.codebook_weight, "commitment": lc.commitment_weight}
        last = trainer.modules["generator"].decoder.conv_out.weight
        return weigh_terms(terms, weights, "g_adv", lc.discriminator, last)

    def generator_loss(self, trainer: Trainer, batch: dict, state: dict):
        terms = self.generator_terms(trainer, batch, state)
        weighted, adv_weight = self.weighted_terms(trainer, terms)
        loss = sum(weighted.values())
        logs = {k: v.detach() for k, v in terms.items()}
        logs["rec"] = (weighted["l1"] + weighted.get("perceptual", 0.0)).detach()
        if adv_weight is not None:
            logs["adv_weight"] = adv_weight.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    def discriminator_loss(self, trainer: Trainer, batch: dict, state: dict):
        disc = trainer.wrapped["discriminator"]
        x = batch["gt"] * 2 - 1
        logits_real = disc(x).float()
        logits_fake = disc(state["fake"]).float()
        d_loss = self.d_loss_fn(logits_real, logits_fake)
        return d_loss, {
            "d_loss": d_loss.detach(),
            "logits_real": logits_real.detach().mean(),
            "logits_fake": logits_fake.detach().mean(),
        }

    def phases(self) -> list[Phase]:
        clip = self.cfg.optim.grad_clip
        return [
            Phase("generator", ["generator"], ["generator"], self.generator_loss, grad_clip=clip),
            Phase("discriminator", ["discriminator"], ["discriminator"], self.discriminator_loss,
                  active=self.disc_active, grad_clip=clip),
        ]

    @torch.no_grad()
    def sample_grid(self, trainer: Trainer, batch: dict) -> torch.Tensor:
        from torchvision.utils import make_grid

        net = trainer.modules["generator"]
        was = net.training
        net.eval()
        gt = batch["gt"][:4]
        with trainer.autocast():
            rec = RestoreFormer.forward(net, gt * 2 - 1).float()
        net.train(was)
        rec = ((rec.clamp(-1, 1) + 1) / 2).cpu()
        return make_grid(torch.cat([gt.cpu(), rec]), nrow=gt.shape[0], padding=2)

    def export_info(self) -> dict[str, Any]:
        return {"module": "generator", "config": self.net_cfg}


def build(cfg: Stage1Config, config_dict: dict | None = None) -> Trainer:
    """A ready Trainer for stage 1 (dataset of undegraded faces, no degradation)."""
    dataset = FaceDataset(cfg.data, degradation=None, seed=cfg.run.seed, augment=GtAugment(cfg.augment))
    return Trainer(cfg.run, Stage1(cfg), dataset, config_dict if config_dict is not None else to_dict(cfg))


def add_arguments(parser) -> None:
    add_run_arguments(parser, "stage-1 YAML (see training/configs/)", "run.steps=100")


def main(args) -> int:
    cfg = load_run_config(Stage1Config, args)
    trainer = build(cfg)
    trainer.fit(resume=args.resume)
    return 0
