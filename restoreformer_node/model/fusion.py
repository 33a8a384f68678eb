"""Decoder fusion blocks: the paper's MHCA-P and the ablation variants of its Table 4.

Every mode puts its block where the published network has its decoder attention (the mid section and
each residual block of the attention levels), under the same module names, so the state-dict keys
keep the `decoder.mid.attn_1.*` / `decoder.up.<level>.attn.<i>.*` layout wherever a block exists.
`x` is the decoder stream, `y` the encoder feature of the degraded face at that level.

| mode     | Table 4 | decoder input | block                                    | keys under `...attn*`            |
|----------|---------|---------------|------------------------------------------|----------------------------------|
| "none"   | exp1    | Z_d           | no block at all                          | none (those keys are absent)     |
| "sa_d"   | exp2    | Z_d           | self-attention over the stream           | published (norm2 unused)         |
| "sa_p"   | exp3    | Z_p           | self-attention over the stream           | published (norm2 unused)         |
| "self"   | stage 1 | Z_p           | same as "sa_p" (the HQ-dictionary VQGAN) | published (norm2 unused)         |
| "sft"    | exp4    | Z_p           | x * (1 + scale(y)) + shift(y), 1x1 convs | norm, scale.{0,2}, shift.{0,2}   |
| "mhca_d" | exp5    | Z_p           | y + proj(attn(q=y, k=v=x))               | published                        |
| "mhca_p" | RF      | Z_p           | x + proj(attn(q=y, k=v=x))               | published                        |

"Degraded only" (exp1 and exp2 use no prior): the decoder gets the unquantised latent Z_d instead of
its nearest dictionary entries Z_p, and the decoder stream carries only degraded information. The
quantiser still runs (its indices and the feature-to-prior loss stay available), but its output is
not decoded. SFT's output convolutions start at zero, so an SFT decoder initialised from stage 1
starts out as the stage-1 decoder; SFT is pixel-wise (1x1 convolutions), the local fusion the paper
contrasts with MHCA.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import AttentionBlock, group_norm

# Modes whose decoder decodes the degraded latent Z_d (no dictionary prior in the decoder).
DEGRADED_ONLY = frozenset({"none", "sa_d"})
# Modes whose blocks are plain self-attention over the decoder stream (no query from the encoder).
SELF_ATTENTION = frozenset({"self", "sa_p", "sa_d"})


class DegradedResidualCrossAttention(AttentionBlock):
    """MHCA-D (Table 4, exp5): the attention of MHCA-P, with the residual on the degraded side.

    Same tensors as `AttentionBlock`; output `y + proj_out(attn(q=norm2(y), k=v=norm1(x)))`.
    """

    def forward(
        self,
        x: torch.Tensor,
        query: torch.Tensor | None = None,
        record: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if query is None:
            raise ValueError("MHCA-D needs the degraded feature as query; got None")
        h = self.norm1(x)
        q = self._split_heads(self.q(self.norm2(query)))
        k = self._split_heads(self.k(h))
        v = self._split_heads(self.v(h))
        return query + self.proj_out(self._attend(q, k, v, record, query.shape))


class SFTFusion(nn.Module):
    """Spatial feature transform (Table 4, exp4): `x * (1 + scale(y)) + shift(y)`.

    scale and shift are 1x1 conv -> LeakyReLU(0.2) -> 1x1 conv on the group-normed degraded feature
    y [B, C, H, W]; the last convolutions start at zero so the block starts as the identity.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.scale = _condition_branch(channels)
        self.shift = _condition_branch(channels)

    def forward(
        self,
        x: torch.Tensor,
        query: torch.Tensor | None = None,
        record: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        if query is None:
            raise ValueError("SFT fusion needs the degraded feature as condition; got None")
        cond = self.norm(query)
        return x * (1 + self.scale(cond)) + self.shift(cond)


def _condition_branch(channels: int) -> nn.Sequential:
    branch = nn.Sequential(
        nn.Conv2d(channels, channels, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(channels, channels, 1)
    )
    nn.init.zeros_(branch[2].weight)
    nn.init.zeros_(branch[2].bias)
    return branch


def make_fusion_block(fusion: str, channels: int, heads: int, groups: int) -> nn.Module | None:
    """The decoder block for `fusion` at one attention position, or None where the mode has none."""
    if fusion == "none":
        return None
    if fusion == "sft":
        return SFTFusion(channels, groups)
    if fusion == "mhca_d":
        return DegradedResidualCrossAttention(channels, heads, groups)
    return AttentionBlock(channels, heads, groups)  # mhca_p, self, sa_p, sa_d
