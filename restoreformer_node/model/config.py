"""Variant configurations of the RestoreFormer network.

A variant is a small frozen value. The published geometry (512x512 input, six levels, 1024-entry
dictionary) is the default; tests and ablations build smaller or different networks from the same
code by changing fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

# Fusion modes of the decoder attention blocks (the paper's Table 4; details in fusion.py).
#   "mhca_p": queries from the degraded features, keys/values/residual from the priors (RestoreFormer)
#   "self":   plain self-attention over the prior stream (the stage-1 dictionary network)
#   ablations: "none" (exp1), "sa_d" (exp2), "sa_p" (exp3, = "self"), "sft" (exp4), "mhca_d" (exp5)
FUSION_MODES = ("mhca_p", "self", "none", "sa_d", "sa_p", "sft", "mhca_d")

# What a configuration may ask for. A config also arrives from a file's metadata, so it is input:
# every field is checked for its type and range, and the network it describes is bounded in
# parameters, feature-map size and attention size (the published networks use a small part of
# each), so a file cannot make the pack build or run something of unbounded size.
INT_RANGES = {
    "heads": (1, 64),
    "in_channels": (1, 4),
    "out_channels": (1, 4),
    "ch": (1, 1024),
    "encoder_blocks": (1, 8),
    "decoder_blocks": (1, 8),
    "z_channels": (1, 4096),
    "embed_dim": (1, 4096),
    "n_embed": (1, 65536),
    "resolution": (1, 2048),
    "norm_groups": (1, 1024),
}
MAX_LEVELS = 8
MAX_CH_MULT = 64
MAX_PARAMETERS = 1_000_000_000  # the published networks have 72 million
MAX_FEATURE_MAP = 1 << 26  # elements of the largest feature map of one crop (published: 2**24)
MAX_ATTENTION = 1 << 26  # elements of the largest attention score matrix of one crop (published: 2**22)


@dataclass(frozen=True)
class RestoreFormerConfig:
    """Geometry and behaviour of one RestoreFormer network.

    `encoder_attn_resolutions` / `decoder_attn_resolutions` are spatial sizes (in pixels of the
    latent grid at that level) where attention blocks follow each residual block.
    """

    variant: str = "RestoreFormer"
    heads: int = 8
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    encoder_blocks: int = 2
    decoder_blocks: int = 3
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024
    resolution: int = 512
    encoder_attn_resolutions: tuple[int, ...] = (16,)
    decoder_attn_resolutions: tuple[int, ...] = (16,)
    norm_groups: int = 32
    fusion: str = "mhca_p"

    def __post_init__(self) -> None:
        self._check_types()
        self._check_ranges()
        self._check_size()
        self._check_structure()

    def _check_types(self) -> None:
        for name in ("variant", "fusion"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.variant or len(self.variant) > 100 or not self.variant.isprintable():
            raise ValueError(f"variant must be a short printable name, got {self.variant!r}")
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {self.fusion!r}; expected one of {FUSION_MODES}")
        for name in INT_RANGES:
            value = getattr(self, name)
            if type(value) is not int:
                raise ValueError(f"{name} must be an integer, got {value!r}")
        for name in ("ch_mult", "encoder_attn_resolutions", "decoder_attn_resolutions"):
            value = getattr(self, name)
            if type(value) is not tuple or any(type(v) is not int for v in value):
                raise ValueError(f"{name} must be a tuple of integers, got {value!r}")

    def _check_ranges(self) -> None:
        for name, (low, high) in INT_RANGES.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {getattr(self, name)}")
        if not 1 <= len(self.ch_mult) <= MAX_LEVELS or not all(1 <= m <= MAX_CH_MULT for m in self.ch_mult):
            raise ValueError(
                f"ch_mult must hold 1 to {MAX_LEVELS} levels, each a multiple in [1, {MAX_CH_MULT}], got {self.ch_mult}"
            )
        if self.resolution % self.size_multiple:
            raise ValueError(
                f"resolution {self.resolution} must be a multiple of {self.size_multiple} (one halving per level "
                f"after the first of {self.num_levels})"
            )

    def _check_structure(self) -> None:
        levels = {self.level_resolution(level) for level in range(self.num_levels)}
        for name in ("encoder_attn_resolutions", "decoder_attn_resolutions"):
            value = getattr(self, name)
            if len(set(value)) != len(value) or not set(value) <= levels:
                raise ValueError(
                    f"{name} {value} must name distinct level resolutions of this network ({sorted(levels)})"
                )
        for width in (self.ch, *self.widths):
            if width % self.heads:
                raise ValueError(f"width {width} is not divisible by heads={self.heads}")
            if width % self.norm_groups:
                raise ValueError(f"width {width} is not divisible by norm_groups={self.norm_groups}")

    def _check_size(self) -> None:
        if self.parameter_bound > MAX_PARAMETERS:
            raise ValueError(
                f"the network would have about {self.parameter_bound:,} parameters (limit {MAX_PARAMETERS:,})"
            )
        if self.largest_feature_map > MAX_FEATURE_MAP:
            raise ValueError(
                f"a feature map would hold {self.largest_feature_map:,} elements per face at resolution "
                f"{self.resolution} (limit {MAX_FEATURE_MAP:,})"
            )
        if self.largest_attention > MAX_ATTENTION:
            raise ValueError(
                f"an attention map would hold {self.largest_attention:,} elements per face (limit {MAX_ATTENTION:,})"
            )

    @property
    def parameter_bound(self) -> int:
        """An upper bound of the parameter count (convolutions and attention of every block, the
        dictionary), computed without building anything."""
        total = self.n_embed * self.embed_dim + 2 * (self.z_channels + 1) * (self.embed_dim + 1)
        widest = max(self.ch, *self.widths)
        total += 2 * 9 * (max(self.in_channels, self.out_channels, self.z_channels) + 1) * widest
        blocks = self.encoder_blocks + self.decoder_blocks + 4  # + the mid blocks
        for width in (self.ch, *self.widths):
            total += blocks * (2 * 9 * width * width + width * width + 6 * width)  # resnet blocks
            total += blocks * (6 * width * width + 8 * width)  # attention / fusion blocks
            total += 9 * width * width + width  # up/down sampling
        return total

    @property
    def largest_feature_map(self) -> int:
        """Elements of the largest feature map one crop produces (width x side x side)."""
        return max(width * self.level_resolution(level) ** 2 for level, width in enumerate(self.widths))

    @property
    def largest_attention(self) -> int:
        """Elements of the largest attention score matrix one crop produces (heads x tokens^2)."""
        sides = {*self.encoder_attn_resolutions, *self.decoder_attn_resolutions, self.latent_size}
        return max(self.heads * (side * side) ** 2 for side in sides)

    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.ch * m for m in self.ch_mult)

    @property
    def latent_size(self) -> int:
        """Side of the quantised latent grid for a `resolution`-sized input."""
        return self.resolution // 2 ** (self.num_levels - 1)

    @property
    def size_multiple(self) -> int:
        """Input sides must be a multiple of this (one halving per level but the last)."""
        return 2 ** (self.num_levels - 1)

    def level_resolution(self, level: int) -> int:
        return self.resolution // 2**level

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RestoreFormerConfig:
        """A config from `to_json`'s text; raises ValueError for anything else (all fields checked)."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"a RestoreFormer config is a JSON object, got {type(raw).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown RestoreFormer config fields: {sorted(unknown)}")
        for key in ("ch_mult", "encoder_attn_resolutions", "decoder_attn_resolutions"):
            if key in raw:
                if not isinstance(raw[key], list):
                    raise ValueError(f"{key} must be a list of integers, got {raw[key]!r}")
                raw[key] = tuple(raw[key])
        return cls(**raw)

    def with_(self, **changes) -> RestoreFormerConfig:
        return replace(self, **changes)


RESTOREFORMER = RestoreFormerConfig()
RESTOREFORMER_PLUSPLUS = RestoreFormerConfig(
    variant="RestoreFormer++", heads=4, decoder_attn_resolutions=(16, 32)
)
VARIANTS: dict[str, RestoreFormerConfig] = {
    RESTOREFORMER.variant: RESTOREFORMER,
    RESTOREFORMER_PLUSPLUS.variant: RESTOREFORMER_PLUSPLUS,
}


def tiny_config(base: RestoreFormerConfig = RESTOREFORMER, **changes) -> RestoreFormerConfig:
    """A small network with the same structure as `base`, for tests on a CPU.

    Three levels at 64, 32 and 16 px keep attention at 16x16 (and 32x32 for RF++), so the same
    code paths run as at full size.
    """
    small = dict(
        ch=32,
        ch_mult=(1, 2, 2),
        z_channels=64,
        embed_dim=64,
        n_embed=128,
        resolution=64,
    )
    small.update(changes)
    return replace(base, **small)
