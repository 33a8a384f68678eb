"""The RestoreFormer network: encoder, HQ dictionary, decoder with multi-head cross-attention.

Module names reproduce the published state-dict keys exactly (see `keys/*.tsv`), so the official
checkpoints, GFPGAN's copy and weights from `training/` all load into this one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .blocks import AttentionBlock, Downsample, ResnetBlock, Upsample, group_norm, swish
from .config import RestoreFormerConfig
from .fusion import DEGRADED_ONLY, SELF_ATTENTION, make_fusion_block
from .quantizer import Quantized, VectorQuantizer


@dataclass
class Trace:
    """What inspection asks a forward pass to hand back. Pass one to `forward(..., trace=)`.

    attention: block name -> weights [B, heads, queries, keys] (queries and keys in raster order)
    """

    indices: torch.Tensor | None = None
    distances: torch.Tensor | None = None
    attention: dict[str, torch.Tensor] = field(default_factory=dict)


def _record(trace: Trace | None, name: str, module: AttentionBlock, x, query=None):
    if trace is None:
        return module(x, query)
    got: list[torch.Tensor] = []
    out = module(x, query, record=got)
    if got:  # SFT fusion has no attention weights to record
        trace.attention[name] = got[0]
    return out


class Encoder(nn.Module):
    def __init__(self, cfg: RestoreFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        groups = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        width = cfg.ch
        for level, out_width in enumerate(cfg.widths):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            has_attn = cfg.level_resolution(level) in cfg.encoder_attn_resolutions
            for _ in range(cfg.encoder_blocks):
                stage.block.append(ResnetBlock(width, out_width, groups))
                width = out_width
                if has_attn:
                    stage.attn.append(AttentionBlock(width, cfg.heads, groups))
            if level != cfg.num_levels - 1:
                stage.downsample = Downsample(width)
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(width, width, groups)
        self.mid.attn_1 = AttentionBlock(width, cfg.heads, groups)
        self.mid.block_2 = ResnetBlock(width, width, groups)
        self.norm_out = group_norm(width, groups)
        self.conv_out = nn.Conv2d(width, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, trace: Trace | None = None):
        """Returns the latent [B, z, h, w] and the skip features the decoder queries with.

        Skip names follow the reference: `block_i` is level i's output before downsampling,
        `block_<last>_atten` the first mid block's output, `mid_atten` the mid section's output.
        """
        skips: dict[str, torch.Tensor] = {}
        h = self.conv_in(x)
        last = self.cfg.num_levels - 1
        for level, stage in enumerate(self.down):
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = _record(trace, f"encoder.down.{level}.attn.{i}", stage.attn[i], h)
            if level != last:
                skips[f"block_{level}"] = h
                h = stage.downsample(h)
        h = self.mid.block_1(h)
        skips[f"block_{last}_atten"] = h
        h = _record(trace, "encoder.mid.attn_1", self.mid.attn_1, h)
        h = self.mid.block_2(h)
        skips["mid_atten"] = h
        h = self.conv_out(swish(self.norm_out(h)))
        return h, skips


class Decoder(nn.Module):
    def __init__(self, cfg: RestoreFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        groups = cfg.norm_groups
        width = cfg.widths[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, width, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(width, width, groups)
        self.mid.attn_1 = make_fusion_block(cfg.fusion, width, cfg.heads, groups)
        self.mid.block_2 = ResnetBlock(width, width, groups)
        stages: list[nn.Module] = []
        for level in reversed(range(cfg.num_levels)):
            out_width = cfg.widths[level]
            stage = nn.Module()
            stage.block = nn.ModuleList()
            stage.attn = nn.ModuleList()
            has_attn = cfg.level_resolution(level) in cfg.decoder_attn_resolutions
            for _ in range(cfg.decoder_blocks):
                stage.block.append(ResnetBlock(width, out_width, groups))
                width = out_width
                fusion = make_fusion_block(cfg.fusion, width, cfg.heads, groups) if has_attn else None
                if fusion is not None:
                    stage.attn.append(fusion)
            if level != 0:
                stage.upsample = Upsample(width)
            stages.insert(0, stage)
        self.up = nn.ModuleList(stages)
        self.norm_out = group_norm(width, groups)
        self.conv_out = nn.Conv2d(width, cfg.out_channels, 3, padding=1)
        self._self_attention = cfg.fusion in SELF_ATTENTION

    def _query(self, skips: dict[str, torch.Tensor] | None, name: str) -> torch.Tensor | None:
        if self._self_attention or skips is None:
            return None
        return skips[name]

    def forward(
        self,
        z: torch.Tensor,
        skips: dict[str, torch.Tensor] | None = None,
        trace: Trace | None = None,
    ) -> torch.Tensor:
        """Decode z [B, z_channels, h, w]. With the encoder's `skips`, each fusion block takes its
        query (or condition) from the degraded face's features at its level. With `skips=None` the
        decoder sees the priors alone, as the stage-1 dictionary network does: every attention
        block runs as self-attention over the decoder stream (SFT and MHCA-D blocks, which need the
        degraded features, raise ValueError)."""
        last = self.cfg.num_levels - 1
        h = self.conv_in(z)
        h = self.mid.block_1(h)
        if self.mid.attn_1 is not None:
            h = _record(trace, "decoder.mid.attn_1", self.mid.attn_1, h, self._query(skips, "mid_atten"))
        h = self.mid.block_2(h)
        for level in reversed(range(self.cfg.num_levels)):
            stage = self.up[level]
            skip_name = f"block_{level}_atten" if level == last else f"block_{level}"
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    name = f"decoder.up.{level}.attn.{i}"
                    h = _record(trace, name, stage.attn[i], h, self._query(skips, skip_name))
            if level != 0:
                h = stage.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class RestoreFormer(nn.Module):
    """RestoreFormer / RestoreFormer++ (one class; the variant lives in `config`).

    `forward` maps an image in [-1, 1] to the decoder output on the same scale, unclamped, exactly
    as the reference implementation does. Use `restore` for [0, 1] images with clamping.
    """

    def __init__(self, config: RestoreFormerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)
        self._decode_degraded = config.fusion in DEGRADED_ONLY

    def encode(self, x: torch.Tensor, trace: Trace | None = None):
        h, skips = self.encoder(x, trace)
        z = self.quant_conv(h)
        q = self.quantize(z)
        if self._decode_degraded:  # Table 4 exp1/exp2: decode Z_d itself, not its priors
            q = q._replace(z_q=z)
        if trace is not None:
            trace.indices, trace.distances = q.indices, q.distances
        return q, skips

    def decode(self, z_q: torch.Tensor, skips=None, trace: Trace | None = None) -> torch.Tensor:
        """Quantised latents [B, embed_dim, h, w] -> output on the [-1, 1] scale (see Decoder.forward
        for `skips=None`)."""
        return self.decoder(self.post_quant_conv(z_q), skips, trace)

    def forward_with_loss(self, x: torch.Tensor, trace: Trace | None = None) -> tuple[torch.Tensor, Quantized]:
        """Output and the quantiser result (its loss, the latent z and the chosen entries), for
        training."""
        q, skips = self.encode(x, trace)
        return self.decode(q.z_q, skips, trace), q

    def forward(self, x: torch.Tensor, trace: Trace | None = None) -> torch.Tensor:
        return self.forward_with_loss(x, trace)[0]

    @torch.no_grad()
    def restore(self, image: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> restored [B, 3, H, W] in [0, 1] (clamped)."""
        out = self(image * 2 - 1)
        return ((out.clamp(-1, 1) + 1) / 2).to(image.dtype)
