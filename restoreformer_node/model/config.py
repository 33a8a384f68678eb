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
        if self.fusion not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {self.fusion!r}; expected one of {FUSION_MODES}")
        for width in self.widths:
            if width % self.heads:
                raise ValueError(f"width {width} is not divisible by heads={self.heads}")
            if width % self.norm_groups:
                raise ValueError(f"width {width} is not divisible by norm_groups={self.norm_groups}")

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
        raw = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown RestoreFormer config fields: {sorted(unknown)}")
        for key in ("ch_mult", "encoder_attn_resolutions", "decoder_attn_resolutions"):
            if key in raw:
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
