"""Helpers shared by the weight-loading tests: model inputs and checkpoint writers.

Every weight file here is written by the test from a randomly initialised network of the real
architecture (pretrained weights cannot be had offline, and tests never download).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def image_batch(photo: np.ndarray, size: int, batch: int = 1) -> torch.Tensor:
    """A real photo as a [batch, 3, size, size] tensor in [-1, 1] (the network's input range).
    Batch items after the first are flipped copies so they differ."""
    x = torch.from_numpy(photo[:, :, :3].copy()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    items = [x, x.flip(-1), x.flip(-2), x.flip(-1, -2)]
    return (torch.cat(items[:batch]) * 2 - 1).clamp(-1, 1)


def calibrated_restoreformer(config, x: torch.Tensor, seed: int = 0):
    """A random initialisation of the real architecture whose codebook is spread over the latents
    the encoder produces for `x` (entries = random latent cells + noise at half their spread), so
    nearest-entry search picks many different codes and the output has a meaningful range."""
    from helpers.models import random_restoreformer

    model = random_restoreformer(config, seed=seed)
    with torch.no_grad():
        h, _ = model.encoder(x)
        z = model.quant_conv(h).permute(0, 2, 3, 1).reshape(-1, config.embed_dim)
        g = torch.Generator().manual_seed(seed)
        pick = torch.randint(len(z), (config.n_embed,), generator=g)
        noise = torch.randn(config.n_embed, config.embed_dim, generator=g) * z.std() * 0.5
        model.quantize.embedding.weight.copy_(z[pick] + noise)
    return model


def lightning_checkpoint(state_dict: dict[str, torch.Tensor]) -> dict:
    """The layout of the official .ckpt files: weights under `state_dict` with a `vqvae.` prefix,
    beside Lightning's bookkeeping in plain types (ints, strings, lists, dicts, tensors)."""
    return {
        "epoch": 17,
        "global_step": 123456,
        "pytorch-lightning_version": "1.0.8",
        "state_dict": {f"vqvae.{k}": v for k, v in state_dict.items()},
        "optimizer_states": [
            {
                "state": {0: {"step": 10, "exp_avg": torch.zeros(4), "exp_avg_sq": torch.ones(4)}},
                "param_groups": [{"lr": 7e-6, "betas": (0.5, 0.9), "eps": 1e-8, "params": [0]}],
            }
        ],
        "lr_schedulers": [],
        "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(0.25), "best_model_path": "last.ckpt"}},
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 7e-6, "ckpt_path": None, "ignore_keys": ["loss"], "heads": 8},
    }


def write_lightning(path: Path, state_dict: dict[str, torch.Tensor]) -> Path:
    torch.save(lightning_checkpoint(state_dict), path)
    return path


def write_gfpgan(path: Path, params_ema=None, params=None) -> Path:
    """BasicSR/GFPGAN layout: bare keys under `params_ema` and/or `params`."""
    obj = {}
    if params_ema is not None:
        obj["params_ema"] = dict(params_ema)
    if params is not None:
        obj["params"] = dict(params)
    torch.save(obj, path)
    return path


def esrgan_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small state dict in the RRDBNet (ESRGAN / Real-ESRGAN) key layout: another architecture."""
    g = torch.Generator().manual_seed(seed)
    sd = {"conv_first.weight": torch.randn(16, 3, 3, 3, generator=g), "conv_first.bias": torch.zeros(16)}
    for b in range(2):
        for r in (1, 2, 3):
            for c in range(1, 6):
                sd[f"body.{b}.rdb{r}.conv{c}.weight"] = torch.randn(16, 16 + 8 * (c - 1), 3, 3, generator=g)
                sd[f"body.{b}.rdb{r}.conv{c}.bias"] = torch.zeros(16)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        sd[f"{name}.weight"] = torch.randn(16, 16, 3, 3, generator=g)
        sd[f"{name}.bias"] = torch.zeros(16)
    sd["conv_last.weight"] = torch.randn(3, 16, 3, 3, generator=g)
    sd["conv_last.bias"] = torch.zeros(3)
    return sd
