"""Networks for tests and benchmarks: random weights of the real architecture, and spandrel's
independent implementation holding exactly the same weights.

Pretrained weights cannot be had offline, so tests and benchmarks use random initialisations of the
real architecture; the codebook is spread to unit scale so the nearest-entry search is meaningful.
spandrel (a runtime dependency: face models and upscalers) is imported only when a twin is asked for.
"""

from __future__ import annotations

import torch

from .model import RESTOREFORMER, RestoreFormer, RestoreFormerConfig


def random_model(config: RestoreFormerConfig = RESTOREFORMER, seed: int = 0) -> RestoreFormer:
    """A randomly initialised network of `config` in eval mode, the same for the same seed (the
    global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RestoreFormer(config)
        with torch.no_grad():
            model.quantize.embedding.weight.normal_()
    return model.eval()


def spandrel_twin(model: RestoreFormer) -> torch.nn.Module:
    """spandrel's RestoreFormer network built for our geometry and loaded strictly with exactly
    our weights (RF layout only; spandrel's own loader fixes the 512 px geometry)."""
    from spandrel.architectures.RestoreFormer.__arch.restoreformer_arch import (
        RestoreFormer as SpandrelRestoreFormer,
    )

    cfg = model.config
    if cfg.decoder_attn_resolutions != cfg.encoder_attn_resolutions:
        raise ValueError("spandrel implements RestoreFormer only (attention at one resolution)")
    if cfg.decoder_blocks != cfg.encoder_blocks + 1:
        raise ValueError("spandrel derives the decoder's block count from the encoder's (+1)")
    twin = SpandrelRestoreFormer(
        n_embed=cfg.n_embed,
        embed_dim=cfg.embed_dim,
        ch=cfg.ch,
        out_ch=cfg.out_channels,
        ch_mult=cfg.ch_mult,
        num_res_blocks=cfg.encoder_blocks,
        attn_resolutions=cfg.encoder_attn_resolutions,
        in_channels=cfg.in_channels,
        resolution=cfg.resolution,
        z_channels=cfg.z_channels,
        head_size=cfg.heads,
    )
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    twin.load_state_dict(sd, strict=True)
    return twin.to(next(model.parameters()).device).eval()


def spandrel_forward(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """spandrel's RestoreFormer returns (output, None)."""
    return net(x)[0]
