"""Stage 2: RestoreFormer (Sec. 3.1), trained on degraded/ground-truth pairs with every loss of Eq. 13:

    L_RF = L1 + l_per L_per + l_p L_p + l_disc L_disc + l_style L_style + l_adv L_adv + l_id L_id

L_p = ||Z_p - Z_d||^2 pulls the encoder features towards their dictionary entries (Eq. 10);
L_disc and L_style are the component losses on left eye, right eye and mouth (Eq. 11); L_adv is
the image discriminator and L_id the ArcFace identity distance (Eq. 12). Defaults are the paper's
weights (1.0, 0.25, 1.0, 2000, 0.8, 1.5); the YAML presets in `configs/` hold the released RF and
RF++ settings. The network starts from a stage-1 dictionary network: encoder, decoder and every
decoder attention come from it, the dictionary is frozen, and blocks stage 1 does not have (RF++'s
32x32 attention, SFT fusion) start fresh. `model.overrides.fusion` picks the Table-4 variant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from restoreformer_node.model import RestoreFormer, RestoreFormerConfig
from restoreformer_node.model.blocks import AttentionBlock
from restoreformer_node.model.fusion import SELF_ATTENTION

from .config import (
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
from .data import FaceDataset, SampleKey, sample_generator
from .degradation import Degradation
from .landmarks import LandmarkTable, default_landmarks_path
from .losses import PatchDiscriminator, adaptive_weight, build_perceptual, hinge_d_loss, vanilla_d_loss
from .losses.components import (
    REGIONS,
    ComponentDiscriminators,
    component_boxes,
    component_d_loss,
    component_g_loss,
    crop_components,
    flip_landmarks,
    style_loss,
)
from .losses.identity import IdentityLoss, load_arcface
from .trainer import Phase, Task, Trainer, step_schedule

# ---- configuration ----------------------------------------------------------------------------


@dataclass
class ComponentLossConfig:
    """Eyes and mouth (Eq. 11): one discriminator per region, GAN and Gram-style losses."""

    weight: float = 1.0  # lambda_disc (released RF: 1.5, RF++: 1.0)
    style_weight: float = 2000.0  # lambda_style (released RF: 2000, RF++: 0)
    style_distance: str = "l2"  # paper: squared L2 between Gram matrices; "l1": released code
    style_level_weights: tuple[float, ...] = (0.5, 1.0)  # the two feature levels (released code)
    lr_scale: float = 1.0  # component discriminators' lr / optim.lr (released: 10)
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class IdentityLossConfig:
    weight: float = 1.5  # lambda_id (released RF: 3.0, RF++: 1.0)
    weights: str = ""  # local ArcFace ResNet-18 file (GFPGAN's arcface_resnet18.pth)
    distance: str = "l2"  # paper: squared L2 between embeddings; "l1": released code


@dataclass
class Stage2LossConfig:
    l1_weight: float = 1.0
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    prior_weight: float = 0.25  # lambda_p, the feature-to-prior loss L_p
    discriminator: DiscriminatorConfig = field(
        default_factory=lambda: DiscriminatorConfig(loss="vanilla", weight=0.8, adaptive_weight=False, start_step=0)
    )
    component: ComponentLossConfig = field(default_factory=ComponentLossConfig)
    identity: IdentityLossConfig = field(default_factory=IdentityLossConfig)
    # The component and identity terms start with the image discriminator (released: step 10,001).
    allow_random_loss_networks: bool = False  # tests only: VGG, LPIPS and ArcFace with random weights


@dataclass
class InitConfig:
    """Where the stage-1 network comes from: a training checkpoint (.pt) or exported weights."""

    stage1: str = ""
    allow_random: bool = False  # tests only: start without stage-1 weights


@dataclass
class Stage2DataConfig(DataConfig):
    landmarks: str = ""  # JSON from `python -m training landmarks`; "" = `<root>_landmarks5.json`


@dataclass
class Stage2Optim(OptimConfig):
    lr: float = 7e-6  # the paper's RestoreFormer rate
    lr_milestones: tuple[int, ...] = ()
    attention_lr_scale: float = 1.0  # decoder fusion blocks' lr / lr (released: 10)


@dataclass
class Stage2Config:
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/stage2", steps=60_000))
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: Stage2LossConfig = field(default_factory=Stage2LossConfig)
    optim: Stage2Optim = field(default_factory=Stage2Optim)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    init: InitConfig = field(default_factory=InitConfig)

    def network_config(self) -> RestoreFormerConfig:
        return self.model.build_config()


# ---- data -------------------------------------------------------------------------------------

FLIP_SALT = 0x5F11F


class LandmarkFaceDataset(Dataset):
    """Degraded/ground-truth pairs with each image's five landmarks (pixels at the training size).

    The flip is drawn here (not in FaceDataset) so the landmarks flip with the image: left and right
    swap. Samples: {"gt", "lq": [3, S, S] in [0, 1], "landmarks": [5, 2], "index", "number"}.
    """

    def __init__(self, cfg: Stage2DataConfig, degradation: Degradation, seed: int) -> None:
        base_cfg = DataConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(DataConfig)})
        self.hflip = base_cfg.hflip
        self.base = FaceDataset(dataclasses.replace(base_cfg, hflip=False), degradation, seed)
        self.seed = seed
        root = Path(cfg.root)
        self.names = [p.relative_to(root).as_posix() for p in self.base.files]
        path = Path(cfg.landmarks) if cfg.landmarks else default_landmarks_path(root)
        self.landmarks = LandmarkTable.from_file(path, cfg.size)
        missing = self.landmarks.missing(self.names)
        if missing:
            raise ValueError(
                f"landmarks file {str(path)!r} has no entry for {len(missing)} image(s) of {cfg.root!r}, e.g. "
                f"{missing[:3]}; run `python -m training landmarks --root {cfg.root}` to add them"
            )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: SampleKey | int) -> dict:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0, int(key))
        sample = self.base[key]
        landmarks = self.landmarks(self.names[key.index])
        if self.hflip:
            g = sample_generator(self.seed ^ FLIP_SALT, key.epoch, key.index)
            if torch.rand((), generator=g) < 0.5:
                sample["gt"] = sample["gt"].flip(-1)
                sample["lq"] = sample["lq"].flip(-1)
                landmarks = flip_landmarks(landmarks, sample["gt"].shape[-1])
        sample["landmarks"] = landmarks
        return sample


# ---- network ----------------------------------------------------------------------------------


class RestoreFormerTrainee(RestoreFormer):
    """RestoreFormer (same parameters and keys) whose forward also returns the L_p operands.

    forward(lq [B,3,H,W] in [-1,1]) -> (output [B,3,H,W], Z_d [B,C,h,w] the encoder features before
    quantisation, Z_p [B,C,h,w] their nearest dictionary entries). The output equals
    `RestoreFormer.forward` for every fusion mode.
    """

    def forward(self, x: torch.Tensor):  # type: ignore[override]
        out, q = self.forward_with_loss(x)  # DDP wraps `forward`, so it hands back what L_p needs
        return out, q.z, q.entries


def read_stage1_state(path: str) -> dict[str, torch.Tensor]:
    """The network state dict of a stage-1 training checkpoint (.pt) or weight file (.safetensors,
    or any layout `restoreformer_node.weights` reads)."""
    p = Path(path).expanduser()
    if p.is_dir():  # a run folder or its checkpoints folder: the newest checkpoint
        from .trainer import list_checkpoints

        found = list_checkpoints(p / "checkpoints" if (p / "checkpoints").is_dir() else p)
        if not found:
            raise FileNotFoundError(f"init.stage1 = {path!r} is a folder without step_*.pt checkpoints")
        p = found[-1][1]
    if not p.is_file():
        raise FileNotFoundError(f"init.stage1 = {path!r} does not exist; point it at a stage-1 checkpoint or export")
    if p.suffix == ".pt":
        state = torch.load(p, map_location="cpu", weights_only=False)
        if isinstance(state, dict) and str(state.get("format", "")).startswith("restoreformer-training-checkpoint"):
            if state.get("task") != "stage1":
                raise ValueError(f"init.stage1 = {path!r} is a {state.get('task')!r} checkpoint, not stage 1")
            module = (state.get("export") or {}).get("module", "generator")
            return state["modules"][module]
    from restoreformer_node.weights import read_state_dict

    return read_state_dict(str(p))[0]


def fresh_keys(model: nn.Module, stage1: dict[str, torch.Tensor]) -> list[str]:
    return sorted(set(model.state_dict()) - set(stage1))


def init_from_stage1(model: RestoreFormer, stage1: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy every stage-1 tensor into `model`. Only decoder fusion blocks may be missing from stage 1
    (they start fresh) and only decoder attention may be left over (the "none" variant has none);
    anything else, or a shape mismatch, is an error. Returns (fresh keys, dropped keys)."""
    own = model.state_dict()
    missing = fresh_keys(model, stage1)
    unexpected = sorted(set(stage1) - set(own))

    def fusion_key(k: str) -> bool:
        return k.startswith("decoder.") and (".attn." in k or ".attn_1." in k)

    bad = [k for k in missing if not fusion_key(k)] + [k for k in unexpected if not fusion_key(k)]
    shapes = [k for k in own if k in stage1 and own[k].shape != stage1[k].shape]
    if bad or shapes:
        raise ValueError(
            "init.stage1 does not fit this network: "
            + (f"keys {bad[:6]} differ; " if bad else "")
            + (f"shapes differ for {shapes[:6]}; " if shapes else "")
            + "use the stage-1 network of the same geometry (model.variant / model.tiny / overrides)"
        )
    model.load_state_dict({k: v for k, v in stage1.items() if k in own}, strict=False)
    return missing, unexpected


def freeze_unused(model: RestoreFormer) -> None:
    """The dictionary is frozen in stage 2; `norm2` of self-attention blocks is never read (it
    normalises a cross-attention query): freezing it keeps DDP free of unused parameters."""
    model.quantize.embedding.weight.requires_grad_(False)
    for name, module in model.named_modules():
        if isinstance(module, AttentionBlock):
            in_decoder = name.startswith("decoder.")
            if not in_decoder or model.config.fusion in SELF_ATTENTION:
                module.norm2.requires_grad_(False)


def fusion_parameters(model: RestoreFormer) -> list[nn.Parameter]:
    """Parameters of the decoder's fusion blocks (attention at the decoder levels and mid)."""
    return [p for n, p in model.named_parameters() if n.startswith("decoder.") and (".attn." in n or ".attn_1." in n)]


# ---- the task ---------------------------------------------------------------------------------


class Stage2(Task):
    name = "stage2"

    def __init__(self, cfg: Stage2Config) -> None:
        self.cfg = cfg
        self.net_cfg = cfg.network_config()
        self.init_report: tuple[list[str], list[str]] = ([], [])

    def setup(self, trainer: Trainer) -> None:
        cfg, lc = self.cfg, self.cfg.loss
        net = RestoreFormerTrainee(self.net_cfg)
        if cfg.init.stage1:
            self.init_report = init_from_stage1(net, read_stage1_state(cfg.init.stage1))
        elif not cfg.init.allow_random:
            raise FileNotFoundError(
                "init.stage1 is not set: stage 2 starts from a stage-1 network (a checkpoint of "
                "`python -m training stage1` or its export); init.allow_random: true only for tests"
            )
        freeze_unused(net)
        trainer.add_module("generator", net)
        dcfg = lc.discriminator
        if dcfg.loss not in ("hinge", "vanilla"):
            raise ValueError(f"loss.discriminator.loss must be hinge or vanilla, got {dcfg.loss!r}")
        self.d_loss_fn = hinge_d_loss if dcfg.loss == "hinge" else vanilla_d_loss
        self.use_disc = dcfg.weight > 0
        self.use_components = lc.component.weight > 0 or lc.component.style_weight > 0
        if self.use_disc:
            trainer.add_module("discriminator", PatchDiscriminator(3, dcfg.filters, dcfg.layers, dcfg.norm))
        if self.use_components:
            trainer.add_module("components", ComponentDiscriminators())
        allow_random = lc.allow_random_loss_networks
        self.perceptual = None
        if lc.perceptual.weight > 0:
            self.perceptual = build_perceptual(lc.perceptual, allow_random).to(trainer.device)
        self.identity = None
        if lc.identity.weight > 0:
            arcface = load_arcface(lc.identity.weights, allow_random=allow_random, config_key="loss.identity.weights")
            self.identity = IdentityLoss(arcface, lc.identity.distance).to(trainer.device)

        o = cfg.optim
        schedule = step_schedule(o)
        fusion = {id(p) for p in fusion_parameters(net)}
        trainable = [p for p in net.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in fusion], "lr": o.lr}]
        attention = [p for p in trainable if id(p) in fusion]
        if attention:
            groups.append({"params": attention, "lr": o.lr * o.attention_lr_scale})
        trainer.add_optimizer("generator", torch.optim.Adam(groups, betas=o.betas, weight_decay=o.weight_decay),
                              schedule)
        disc_lr = o.disc_lr if o.disc_lr is not None else o.lr
        if self.use_disc:
            trainer.add_optimizer("discriminator", torch.optim.Adam(
                trainer.modules["discriminator"].parameters(), lr=disc_lr, betas=o.disc_betas), schedule)
        if self.use_components:
            trainer.add_optimizer("components", torch.optim.Adam(
                trainer.modules["components"].parameters(), lr=disc_lr * lc.component.lr_scale,
                betas=lc.component.betas), schedule)

    def adversarial_active(self, step: int) -> bool:
        return step >= self.cfg.loss.discriminator.start_step

    # ---- losses -----------------------------------------------------------------------------
    def generator_terms(self, trainer: Trainer, batch: dict, state: dict | None = None) -> dict[str, torch.Tensor]:
        """Every unweighted term of Eq. 13 the generator sees at this step: l1, perceptual, prior,
        and once the adversarial terms have started adv, comp_gan, comp_style, identity."""
        lc = self.cfg.loss
        lq, gt = batch["lq"] * 2 - 1, batch["gt"] * 2 - 1
        out, z_d, z_p = trainer.wrapped["generator"](lq)
        out = out.float()
        terms: dict[str, torch.Tensor] = {"l1": (out - gt).abs().mean()}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(out, gt)
        terms["prior"] = F.mse_loss(z_d.float(), z_p.detach().float())
        if self.adversarial_active(trainer.step):
            if self.use_disc:
                logits = trainer.modules["discriminator"](out).float()
                terms["adv"] = -logits.mean() if lc.discriminator.loss == "hinge" else F.softplus(-logits).mean()
            if self.use_components:
                boxes = component_boxes(batch["landmarks"], gt.shape[-1])
                fake = trainer.modules["components"](crop_components(out, boxes))
                with torch.no_grad():
                    real = trainer.modules["components"](crop_components(gt, boxes))
                terms["comp_gan"] = sum(component_g_loss(fake[r][0].float()) for r in REGIONS)
                terms["comp_style"] = sum(
                    style_loss(fake[r][1], real[r][1], lc.component.style_distance, lc.component.style_level_weights)
                    for r in REGIONS
                )
                if state is not None:
                    state["boxes"] = {r: b.detach() for r, b in boxes.items()}
            if self.identity is not None:
                terms["identity"] = self.identity(out, gt)
        if state is not None:
            state["fake"] = out.detach()
        return terms

    def generator_loss(self, trainer: Trainer, batch: dict, state: dict):
        lc = self.cfg.loss
        terms = self.generator_terms(trainer, batch, state)
        rec = lc.l1_weight * terms["l1"]
        if "perceptual" in terms:
            rec = rec + lc.perceptual.weight * terms["perceptual"]
        loss = rec + lc.prior_weight * terms["prior"]
        logs = {k: v.detach() for k, v in terms.items()}
        if "adv" in terms:
            d = lc.discriminator
            if d.adaptive_weight:
                last = trainer.modules["generator"].decoder.conv_out.weight
                weight = adaptive_weight(rec, terms["adv"], last, max_weight=d.adaptive_max) * d.weight
            else:
                weight = torch.tensor(d.weight, device=rec.device)
            loss = loss + weight * terms["adv"]
            logs["adv_weight"] = weight.detach()
        if "comp_gan" in terms:
            loss = loss + lc.component.weight * terms["comp_gan"] + lc.component.style_weight * terms["comp_style"]
        if "identity" in terms:
            loss = loss + lc.identity.weight * terms["identity"]
        logs["loss"] = loss.detach()
        return loss, logs

    def discriminator_loss(self, trainer: Trainer, batch: dict, state: dict):
        gt = batch["gt"] * 2 - 1
        fake = state["fake"]
        total = fake.new_zeros(())
        logs: dict[str, torch.Tensor] = {}
        if self.use_disc:
            disc = trainer.wrapped["discriminator"]
            d_loss = self.d_loss_fn(disc(gt).float(), disc(fake).float())
            total = total + d_loss
            logs["d_loss"] = d_loss.detach()
        if self.use_components:
            boxes = state.get("boxes") or component_boxes(batch["landmarks"], gt.shape[-1])
            comps = trainer.wrapped["components"]
            real = comps(crop_components(gt, boxes))
            fake_out = comps(crop_components(fake, boxes))
            comp = sum(component_d_loss(real[r][0].float(), fake_out[r][0].float()) for r in REGIONS)
            total = total + comp
            logs["comp_d_loss"] = comp.detach()
        return total, logs

    def phases(self) -> list[Phase]:
        clip = self.cfg.optim.grad_clip
        modules = (["discriminator"] if self.use_disc else []) + (["components"] if self.use_components else [])
        phases = [Phase("generator", ["generator"], ["generator"], self.generator_loss, grad_clip=clip)]
        if modules:
            phases.append(Phase("discriminator", modules, modules, self.discriminator_loss,
                                active=self.adversarial_active, grad_clip=clip))
        return phases

    @torch.no_grad()
    def sample_grid(self, trainer: Trainer, batch: dict) -> torch.Tensor:
        from torchvision.utils import make_grid

        net = trainer.modules["generator"]
        was = net.training
        net.eval()
        lq, gt = batch["lq"][:4], batch["gt"][:4]
        with trainer.autocast():
            out = RestoreFormer.forward(net, lq * 2 - 1).float()
        net.train(was)
        out = ((out.clamp(-1, 1) + 1) / 2).cpu()
        return make_grid(torch.cat([lq.cpu(), out, gt.cpu()]), nrow=lq.shape[0], padding=2)

    def export_info(self) -> dict[str, Any]:
        return {"module": "generator", "config": self.net_cfg}


def build(cfg: Stage2Config, config_dict: dict | None = None) -> Trainer:
    """A ready Trainer for stage 2 (degraded/ground-truth pairs with landmarks)."""
    dataset = LandmarkFaceDataset(cfg.data, Degradation(cfg.degradation), seed=cfg.run.seed)
    return Trainer(cfg.run, Stage2(cfg), dataset, config_dict if config_dict is not None else to_dict(cfg))


def add_arguments(parser) -> None:
    add_run_arguments(parser, "stage-2 YAML (see training/configs/stage2_*.yaml)", "model.overrides.fusion=sft")


def main(args) -> int:
    cfg = load_run_config(Stage2Config, args)
    trainer = build(cfg)
    fresh, dropped = trainer.task.init_report
    if trainer.dist.is_main and (fresh or dropped):
        print(f"stage 2 init: {len(fresh)} tensors start fresh (e.g. {fresh[:2]}), {len(dropped)} stage-1 tensors unused")
    trainer.fit(resume=args.resume)
    return 0
