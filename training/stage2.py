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
import sys
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
    ConfigError,
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
from .errors import DataError, TrainingFileError
from .landmarks import LandmarkTable, default_landmarks_path
from .losses import PatchDiscriminator, build_perceptual, hinge_d_loss, vanilla_d_loss, weigh_terms
from .losses.components import (
    REGIONS,
    STYLE_DISTANCES,
    ComponentDiscriminators,
    component_boxes,
    component_d_loss,
    component_g_loss,
    crop_components,
    flip_landmarks,
    style_loss,
)
from .losses.identity import IdentityLoss, load_arcface
from .safe_io import (
    CONTAINER_PICKLE,
    CONTAINER_ZIP,
    check_checkpoint,
    container_of,
    is_training_checkpoint,
    safe_load,
    translate,
)
from .trainer import Phase, Task, Trainer, newest_intact_checkpoint, step_schedule

# ---- configuration ----------------------------------------------------------------------------


@dataclass
class ComponentLossConfig:
    """Eyes and mouth (Eq. 11): one discriminator per region, GAN and Gram-style losses."""

    weight: float = 1.0  # lambda_disc (released RF: 1.5, RF++: 1.0)
    style_weight: float = 2000.0  # lambda_style (released RF: 2000, RF++: 0)
    # "l2_sum": the paper's squared L2 norm, summed over the Gram entries (mean over the batch);
    # "l1": the released code's mean absolute difference; "l2": mean squared difference.
    style_distance: str = "l2_sum"
    style_level_weights: tuple[float, ...] = (1.0, 1.0)  # the two feature levels (released code: 0.5, 1.0)
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
    """Where the stage-1 network comes from: a training checkpoint (.pt) or exported weights.

    `discriminator`: "fresh" (a new PatchGAN) or "stage1" (the stage-1 run's image discriminator, as
    the released code's init_from_ckpt copies `loss.discriminator.*`; needs a training checkpoint,
    an export holds only the network). `stage1_heads`: the stage-1 network's head count, only for
    files that do not record it (Lightning or bare state dicts); stage 2 refuses another count.
    """

    stage1: str = ""
    discriminator: str = "fresh"
    stage1_heads: int = 0
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
            raise DataError(
                f"landmarks file {str(path)!r} has no entry for {len(missing)} image(s) of {cfg.root!r}, e.g. "
                f"{missing[:3]}; run `python -m training landmarks --root {cfg.root}` to add them"
            )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: SampleKey | int) -> dict:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0, int(key))
        sample = self.base[key]
        # The RF++ shift moved the face: the landmarks move with it (as the released code moves its boxes).
        landmarks = self.landmarks(self.names[key.index]) + sample.pop("shift")
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


STAGE1_WHAT = "stage-1 network (init.stage1)"
STAGE1_FIX = ("point init.stage1 at an intact stage-1 checkpoint (RUN/checkpoints/step_*.pt, or the run folder "
              "for its newest intact one) or at its export (.safetensors).")


@dataclass
class Stage1Source:
    """What stage 2 takes from a stage-1 file: the network's state dict, its RestoreFormerConfig when
    the file records it (our checkpoints and exports do; Lightning or bare state dicts do not), and
    the image discriminator's state dict when the file has one (our checkpoints: module
    "discriminator"; a Lightning checkpoint of the released code: `loss.discriminator.*`)."""

    path: Path
    network: dict[str, torch.Tensor]
    config: RestoreFormerConfig | None
    discriminator: dict[str, torch.Tensor] | None


def _from_training_checkpoint(path: Path, state: dict) -> Stage1Source:
    check_checkpoint(state, path, STAGE1_WHAT, STAGE1_FIX)
    if state.get("task") != "stage1":
        raise TrainingFileError(path, STAGE1_WHAT, f"it is a {state.get('task')!r} checkpoint, not stage 1.",
                                STAGE1_FIX)
    export = state.get("export") or {}
    module = export.get("module", "generator")
    config = RestoreFormerConfig.from_json(export["config"]) if export.get("config") else None
    return Stage1Source(path, state["modules"][module], config, state["modules"].get("discriminator"))


def read_stage1(path: str) -> Stage1Source:
    """Read init.stage1 without running any code it may carry (training/safe_io.py): a stage-1
    training checkpoint (.pt; a folder means its newest intact one), our export (.safetensors), or a
    state dict in any layout `restoreformer_node.weights` reads (e.g. a Lightning .ckpt)."""
    from restoreformer_node.weights import LAYOUT_OURS, WeightLoadError, read_state_dict

    p = Path(path).expanduser()
    if p.is_dir():  # a run folder or its checkpoints folder: the newest intact checkpoint
        folder = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        p, state, problems = newest_intact_checkpoint(folder, STAGE1_WHAT)
        for err in problems:
            print(f"warning: stage 2 skips {err.what} '{err.path}': {err.problem}", file=sys.stderr)
        if problems:
            print(f"warning: stage 2 starts from the newest intact stage-1 checkpoint '{p}' instead", file=sys.stderr)
        return _from_training_checkpoint(p, state)
    if not p.is_file():
        raise FileNotFoundError(f"{STAGE1_WHAT} '{p}': the file does not exist. Fix: {STAGE1_FIX}")
    discriminator = None
    if container_of(p) in (CONTAINER_ZIP, CONTAINER_PICKLE):
        obj = safe_load(p, STAGE1_WHAT, fix_damaged=STAGE1_FIX)
        if is_training_checkpoint(obj):
            return _from_training_checkpoint(p, obj)
        lightning = obj.get("state_dict") if isinstance(obj, dict) else None
        if isinstance(lightning, dict):
            prefix = "loss.discriminator."
            discriminator = {k[len(prefix):]: v for k, v in lightning.items() if k.startswith(prefix)} or None
    try:
        network, layout, metadata = read_state_dict(str(p))
    except WeightLoadError as err:
        raise translate(err, p, STAGE1_WHAT, STAGE1_FIX) from None
    config = None
    if layout == LAYOUT_OURS and metadata.get("config"):
        config = RestoreFormerConfig.from_json(metadata["config"])
    return Stage1Source(p, network, config, discriminator)


def read_stage1_state(path: str) -> dict[str, torch.Tensor]:
    """The network state dict of a stage-1 file (see `read_stage1`)."""
    return read_stage1(path).network


def check_heads(source: Stage1Source, net_cfg: RestoreFormerConfig, stated: int) -> None:
    """Stage 2 starts from a stage-1 dictionary network with its own head count. Heads change no tensor
    shape, so a mismatch would load silently; refuse it. `stated` (init.stage1_heads) stands in for
    files that do not record their configuration."""
    found = source.config.heads if source.config is not None else (stated or None)
    if source.config is not None and stated and stated != source.config.heads:
        raise TrainingFileError(source.path, STAGE1_WHAT, f"it records {source.config.heads} attention heads, but "
                                f"init.stage1_heads says {stated}.", "remove init.stage1_heads (the file knows).")
    if found is None:
        raise TrainingFileError(
            source.path, STAGE1_WHAT, "it does not record its attention head count, and heads change no tensor "
            "shape, so it cannot be read from the weights.",
            f"set init.stage1_heads to the head count stage 1 was trained with (this network has {net_cfg.heads}).",
        )
    if found != net_cfg.heads:
        raise TrainingFileError(
            source.path, STAGE1_WHAT, f"it is a {found}-head dictionary network, but this stage 2 "
            f"({net_cfg.variant}) has {net_cfg.heads} heads.",
            f"train stage 1 with {net_cfg.heads} heads (training/configs/"
            + ("stage1_restoreformer_plusplus_released.yaml" if net_cfg.heads == 4 else "stage1_paper.yaml or "
               "stage1_released.yaml") + ") and start from that, or change model.variant.",
        )


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
        self.stage1: Stage1Source | None = None

    def setup(self, trainer: Trainer) -> None:
        cfg, lc = self.cfg, self.cfg.loss
        if cfg.init.discriminator not in ("fresh", "stage1"):
            raise ConfigError(f"init.discriminator must be 'fresh' or 'stage1', got {cfg.init.discriminator!r}")
        net = RestoreFormerTrainee(self.net_cfg)
        if cfg.init.stage1:
            self.stage1 = read_stage1(cfg.init.stage1)
            check_heads(self.stage1, self.net_cfg, cfg.init.stage1_heads)
            self.init_report = init_from_stage1(net, self.stage1.network)
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
            disc = PatchDiscriminator(3, dcfg.filters, dcfg.layers, dcfg.norm)
            if cfg.init.discriminator == "stage1":
                self._discriminator_from_stage1(disc)
            trainer.add_module("discriminator", disc)
        if self.use_components:
            trainer.add_module("components", ComponentDiscriminators())
        allow_random = lc.allow_random_loss_networks
        self.perceptual = None
        if lc.perceptual.weight > 0 or lc.perceptual.style_weight > 0:
            self.perceptual = build_perceptual(lc.perceptual, allow_random).to(trainer.device)
        self.identity = None
        if lc.identity.weight > 0:
            arcface = load_arcface(lc.identity.weights, allow_random=allow_random, config_key="loss.identity.weights")
            self.identity = IdentityLoss(arcface, lc.identity.distance).to(trainer.device)
        if lc.component.style_distance not in STYLE_DISTANCES:
            raise ConfigError(f"loss.component.style_distance must be one of {STYLE_DISTANCES}, got "
                              f"{lc.component.style_distance!r}")

        o = cfg.optim
        schedule = step_schedule(o)
        lr = trainer.learning_rate(o)
        fusion = {id(p) for p in fusion_parameters(net)}
        trainable = [p for p in net.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in fusion], "lr": lr}]
        attention = [p for p in trainable if id(p) in fusion]
        if attention:
            groups.append({"params": attention, "lr": lr * o.attention_lr_scale})
        trainer.add_optimizer("generator", torch.optim.Adam(groups, betas=o.betas, weight_decay=o.weight_decay),
                              schedule)
        disc_lr = o.disc_lr if o.disc_lr is not None else lr
        if self.use_disc:
            trainer.add_optimizer("discriminator", torch.optim.Adam(
                trainer.modules["discriminator"].parameters(), lr=disc_lr, betas=o.disc_betas), schedule)
        if self.use_components:
            trainer.add_optimizer("components", torch.optim.Adam(
                trainer.modules["components"].parameters(), lr=disc_lr * lc.component.lr_scale,
                betas=lc.component.betas), schedule)

    def _discriminator_from_stage1(self, disc: nn.Module) -> None:
        """Copy the stage-1 run's image discriminator (weights and BatchNorm statistics) into `disc`."""
        source, dcfg = self.stage1, self.cfg.loss.discriminator
        if source is None:
            raise ConfigError("init.discriminator: stage1 needs init.stage1 (the stage-1 training checkpoint); "
                              "set init.discriminator: fresh to start a new one")
        if source.discriminator is None:
            raise TrainingFileError(
                source.path, STAGE1_WHAT, "it holds no image discriminator (an exported .safetensors keeps only "
                "the network), and init.discriminator is 'stage1'.",
                "point init.stage1 at the stage-1 training checkpoint (RUN/checkpoints/step_*.pt or the run "
                "folder), or set init.discriminator: fresh.",
            )
        own, theirs = disc.state_dict(), source.discriminator
        missing, unexpected = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
        shapes = [k for k in own if k in theirs and own[k].shape != theirs[k].shape]
        if missing or unexpected or shapes:
            raise TrainingFileError(
                source.path, STAGE1_WHAT, f"its image discriminator does not fit loss.discriminator (filters "
                f"{dcfg.filters}, layers {dcfg.layers}, norm {dcfg.norm}): missing {missing[:4]}, unexpected "
                f"{unexpected[:4]}, other shapes for {shapes[:4]}.",
                "use the stage-1 run's loss.discriminator settings, or set init.discriminator: fresh.",
            )
        disc.load_state_dict(theirs, strict=True)

    def adversarial_active(self, step: int) -> bool:
        return step >= self.cfg.loss.discriminator.start_step

    # ---- losses -----------------------------------------------------------------------------
    def generator_terms(self, trainer: Trainer, batch: dict, state: dict | None = None) -> dict[str, torch.Tensor]:
        """Every unweighted term of Eq. 13 the generator sees at this step: l1, perceptual (and the
        released code's LPIPS style term when its weight is set), prior, and once the adversarial
        terms have started adv, comp_gan, comp_style, identity."""
        lc = self.cfg.loss
        lq, gt = batch["lq"] * 2 - 1, batch["gt"] * 2 - 1
        out, z_d, z_p = trainer.wrapped["generator"](lq)
        out = out.float()
        terms: dict[str, torch.Tensor] = {"l1": (out - gt).abs().mean()}
        if self.perceptual is not None:
            if lc.perceptual.style_weight > 0:
                terms["perceptual"], terms["lpips_style"] = self.perceptual.with_style(out, gt)
            else:
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
                if lc.component.weight > 0:
                    terms["comp_gan"] = sum(component_g_loss(fake[r][0].float()) for r in REGIONS)
                if lc.component.style_weight > 0:
                    terms["comp_style"] = sum(
                        style_loss(fake[r][1], real[r][1], lc.component.style_distance,
                                   lc.component.style_level_weights)
                        for r in REGIONS
                    )
                if state is not None:
                    state["boxes"] = {r: b.detach() for r, b in boxes.items()}
            if self.identity is not None:
                terms["identity"] = self.identity(out, gt)
        if state is not None:
            state["fake"] = out.detach()
        return terms

    def weighted_terms(self, trainer: Trainer, terms: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor],
                                                                                    torch.Tensor | None]:
        """(each term times its weight, as the generator's loss sums them; the adversarial weight or
        None). The adversarial weight is the configured one, times the adaptive ratio |grad rec| /
        |grad adv| at the last decoder layer when it is on (rec = l1 + perceptual, the released code's
        nll; the LPIPS style term is outside it there too)."""
        lc = self.cfg.loss
        weights = {"l1": lc.l1_weight, "perceptual": lc.perceptual.weight, "lpips_style": lc.perceptual.style_weight,
                   "prior": lc.prior_weight, "comp_gan": lc.component.weight,
                   "comp_style": lc.component.style_weight, "identity": lc.identity.weight}
        last = trainer.modules["generator"].decoder.conv_out.weight
        return weigh_terms(terms, weights, "adv", lc.discriminator, last)

    def generator_loss(self, trainer: Trainer, batch: dict, state: dict):
        terms = self.generator_terms(trainer, batch, state)
        weighted, adv_weight = self.weighted_terms(trainer, terms)
        loss = sum(weighted.values())
        logs = {k: v.detach() for k, v in terms.items()}
        if adv_weight is not None:
            logs["adv_weight"] = adv_weight.detach()
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
