"""YAML configuration -> typed dataclasses.

Every section is a plain dataclass with defaults taken from the paper. Loading is strict: an
unknown key is an error that names the key, its section and the keys that are allowed, so a typo
never silently falls back to a default. Stages compose the shared sections (`RunConfig`,
`DataConfig`, `DegradationConfig`, `ModelConfig`, `OptimConfig`) with their own loss section.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from restoreformer_node.model import VARIANTS, RestoreFormerConfig, tiny_config

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says which and why."""


@dataclass
class RunConfig:
    """How the loop runs: length, batch, precision, seeds, logging and checkpoint cadence.

    `batch_size` is the GLOBAL batch per optimiser step (the paper's 16). Each process takes
    batch_size / (world_size * grad_accum) images per micro-batch, so a run gives the same
    result on 1 or N processes. `batch_per_process` > 0 instead fixes the images per process and
    micro-batch, as the released code does (4 per GPU): the global batch is then
    batch_per_process x processes x grad_accum and grows with the number of processes.
    """

    out_dir: str = "runs/stage1"
    seed: int = 0
    steps: int = 800_000
    batch_size: int = 16
    batch_per_process: int = 0  # > 0: images per process and micro-batch; batch_size is then not used
    grad_accum: int = 1
    precision: str = "bf16"  # "bf16" (autocast on CUDA; fp32 on CPU) or "fp32"
    num_workers: int = 4
    log_every: int = 50
    sample_every: int = 5_000
    checkpoint_every: int = 5_000
    keep_checkpoints: int = 3
    progress: bool = True
    tensorboard: bool = True
    device: str = "auto"  # "auto", "cpu", "cuda"
    ddp_find_unused_parameters: bool = False


@dataclass
class DataConfig:
    """A folder of aligned face images (FFHQ layout: any depth, sorted order)."""

    root: str = "datasets/ffhq512"
    size: int = 512
    hflip: bool = True
    # False: every image must already be size x size (aligned faces, FFHQ at 512); another size is an
    # error that names the file. True: centre square crop and bicubic resize on load (any photos).
    resize: bool = False
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class DegradationConfig:
    """The synthetic degradation of Eq. 19: blur -> downsample -> noise -> JPEG -> upsample.

    Defaults are the paper's ranges. `preset: released` switches to the released code's kernel
    sizes, anisotropic blur and ranges; `preset: restoreformer++` adds RF++'s extended
    degradation (shift, haze, mixed regions, grayscale). Explicit keys override the preset.
    """

    preset: str = "paper"
    kernel_sizes: tuple[int, ...] = (41,)
    blur_sigma: tuple[float, float] = (0.2, 10.0)
    anisotropic_prob: float = 0.0  # chance of an anisotropic kernel (released code: 0.5)
    downsample: tuple[float, float] = (1.0, 8.0)
    noise_sigma: tuple[float, float] = (0.0, 20.0)  # on the 0-255 scale
    jpeg_quality: tuple[int, int] = (60, 100)
    # RF++ extended degradation (all off in the paper preset).
    shift_prob: float = 0.0
    shift_max: int = 32  # px at 512 (released RF++: +-32); scaled with the image size
    shift_unit: int = 1  # px at 512 (released RF++: 1); shifts are multiples of this
    haze_prob: float = 0.0
    haze_alpha: tuple[float, float] = (0.75, 0.95)
    mix_prob: float = 0.0
    mix_size: tuple[int, int] = (128, 256)  # side of the square mask, px at 512
    gray_prob: float = 0.0


DEGRADATION_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "released": dict(kernel_sizes=(39, 41), blur_sigma=(0.1, 10.0), anisotropic_prob=0.5, downsample=(0.8, 8.0)),
    "restoreformer++": dict(
        kernel_sizes=(39, 41),
        blur_sigma=(0.1, 10.0),
        anisotropic_prob=0.5,
        downsample=(0.8, 8.0),
        shift_prob=0.2,
        shift_max=32,
        shift_unit=1,
        haze_prob=0.008,
        mix_prob=0.1,
        gray_prob=0.008,
    ),
}


@dataclass
class AugmentConfig:
    """Stage 1's ground-truth augmentation after the flip (all off by default). The released RF++
    dictionary config (ROHQD) shifts with probability 0.2 by +-32 px in 1 px steps (sizes at 512 px,
    scaled with the image size; symmetric mirroring fills the border) and turns 0.8% of the faces gray."""

    shift_prob: float = 0.0
    shift_max: int = 32
    shift_unit: int = 1
    gray_prob: float = 0.0


@dataclass
class ModelConfig:
    """Which network to build: a published variant, optionally shrunk (`tiny`) and edited.

    `overrides` takes any RestoreFormerConfig field (e.g. `fusion`, `n_embed`, `resolution`).
    """

    variant: str = "RestoreFormer"
    tiny: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)

    def build_config(self, **forced: Any) -> RestoreFormerConfig:
        if self.variant not in VARIANTS:
            raise ConfigError(f"model.variant {self.variant!r} is unknown; use one of {sorted(VARIANTS)}")
        base = VARIANTS[self.variant]
        changes = dict(self.overrides)
        changes.update(forced)
        for key in ("ch_mult", "encoder_attn_resolutions", "decoder_attn_resolutions"):
            if key in changes:
                changes[key] = tuple(changes[key])
        known = set(RestoreFormerConfig.__dataclass_fields__)
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"model.overrides has unknown fields {sorted(unknown)}; allowed: {sorted(known)}")
        try:
            return tiny_config(base, **changes) if self.tiny else base.with_(**changes)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from err


@dataclass
class OptimConfig:
    """Adam with a step schedule (stepped once per optimiser step, never per epoch).

    `lr_per_image` > 0 replaces `lr` with the released code's rule: lr = lr_per_image x images per
    optimiser step (its base_learning_rate x accumulate_grad_batches x GPUs x nodes x batch per GPU).
    """

    lr: float = 7e-5
    lr_per_image: float = 0.0
    betas: tuple[float, float] = (0.5, 0.9)
    weight_decay: float = 0.0
    lr_milestones: tuple[int, ...] = (600_000,)
    lr_gamma: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 0.0  # 0 = off
    disc_lr: float | None = None  # None = same as lr
    disc_betas: tuple[float, float] = (0.5, 0.9)


# --------------------------------------------------------------------------------------------
# Generic strict YAML -> dataclass conversion.


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value] if args and args[-1] is Ellipsis else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if args and args[-1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} entries, got {list(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 (PyYAML) reads 1e9 or 1.0e9 (no sign in the exponent) as a string.
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp in (int, float, bool, str):
        raise ConfigError(f"{where} must be {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a mapping, strictly (unknown keys and wrong types are errors)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)} in section {where or '<top>'}; allowed: {names}"
        )
    values = {}
    for name in names:
        if name in data:
            values[name] = _convert(hints[name], data[name], f"{where}.{name}" if where else name)
    return cls(**values)


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML/JSON-friendly values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_degradation_preset(data: dict[str, Any]) -> dict[str, Any]:
    """Expand `preset` into its values; explicit keys in `data` win."""
    preset = data.get("preset", "paper")
    if preset not in DEGRADATION_PRESETS:
        raise ConfigError(f"degradation.preset {preset!r} is unknown; use one of {sorted(DEGRADATION_PRESETS)}")
    merged = dict(DEGRADATION_PRESETS[preset])
    merged.update(data)
    return merged


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass --config with a YAML file path")
    with path.open("r", encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], path: str | Path | None = None, data: dict[str, Any] | None = None) -> T:
    """Read a stage config (`cls`, a dataclass of sections) from YAML or a mapping.

    A `degradation` section (if the stage has one) gets its preset expanded first. A top-level
    `base: other.yaml` key loads that file first (relative to this one) and merges sections.
    """
    if data is None:
        data = load_yaml(path)
        if "base" in data:
            base = load_config_dict(Path(path).parent / data.pop("base"))
            data = _merge(base, data)
    if "degradation" in data and isinstance(data["degradation"], dict):
        data = dict(data)
        data["degradation"] = apply_degradation_preset(data["degradation"])
    return from_dict(cls, data)


def load_config_dict(path: Path) -> dict[str, Any]:
    data = load_yaml(path)
    if "base" in data:
        base = load_config_dict(path.parent / data.pop("base"))
        data = _merge(base, data)
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "overrides":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class PerceptualConfig:
    """Perceptual loss. kind "vgg19": the paper (VGG-19 relu1_1..relu5_1, squared L2);
    kind "lpips": the released code (LPIPS on VGG-16 with learned heads)."""

    kind: str = "vgg19"
    weight: float = 1.0
    layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    layer_weights: tuple[float, ...] = ()
    criterion: str = "mse"
    vgg_weights: str = ""  # local torchvision VGG file (vgg19-dcbb9e9d.pth or vgg16-397923af.pth)
    lpips_heads: str = ""  # local lpips linear heads (lpips/weights/v0.1/vgg.pth)
    # The released RF code's LPIPS "style" term (Gram matrices of the LPIPS features, x 1e9 there),
    # added outside the adaptive weight's reconstruction term; LPIPS only, 0 = off.
    style_weight: float = 0.0


@dataclass
class DiscriminatorConfig:
    """PatchGAN with an adaptive weight, started late (released code: global step 30,001, weight 0.8)."""

    layers: int = 3
    filters: int = 64
    norm: str = "batch"
    loss: str = "hinge"  # "hinge" or "vanilla"
    weight: float = 0.8
    adaptive_weight: bool = True
    adaptive_max: float = 1e4
    # First optimiser step (counted from 0, as Lightning's global_step) with the adversarial terms; the
    # released code's adopt_weight zeroes them while global_step < disc_start (30,001 in stage 1).
    start_step: int = 30_001


def apply_overrides(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The YAML at `path` (with its `base` chain merged) plus `SECTION.KEY=VALUE` overrides,
    each VALUE parsed as YAML. Returns a mapping for `load_config(cls, data=...)`."""
    import yaml

    data = load_config_dict(Path(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {key!r} is not a section")
        node[keys[-1]] = yaml.safe_load(raw)
    return data


def add_run_arguments(parser, config_help: str, set_example: str) -> None:
    """The command-line arguments every training stage takes: --config, --resume, --set."""
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in run.out_dir")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"override one config value (YAML syntax), e.g. --set {set_example}")


def load_run_config(cls: type[T], args) -> T:
    """The stage config named by --config with the --set overrides applied."""
    return load_config(cls, data=apply_overrides(args.config, args.set))
