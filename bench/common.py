"""Shared helpers of the benchmarks: identical random weights in our model and spandrel's, timing.

Random weights of the real architecture stand in for the published ones (no downloads here); the
codebook is spread to unit scale so the nearest-entry search is meaningful.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from restoreformer_node.cli import CPU_RUNTIME_DEFAULTS
from restoreformer_node.model import RESTOREFORMER, RestoreFormer, RestoreFormerConfig

FLOP_PER_512 = 683e9  # one 512x512 forward, 2 FLOP per multiply-add

# Process settings that move CPU timings a lot and are read only at start-up: OpenMP's wait policy,
# PyTorch's huge-page switch, glibc's allocator. Each one changes spandrel's time and ours by
# different amounts (bench/README.md), so a CPU table names the ones in force.
RUNTIME_ENV = (*CPU_RUNTIME_DEFAULTS, "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def runtime_env() -> str:
    """The RUNTIME_ENV settings of this process, e.g. "OMP_WAIT_POLICY=PASSIVE", or "defaults"."""
    found = [f"{name}={os.environ[name]}" for name in RUNTIME_ENV if name in os.environ]
    return " ".join(found) or "defaults"


def random_model(config: RestoreFormerConfig = RESTOREFORMER, seed: int = 0) -> RestoreFormer:
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


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], device, repeat: int) -> list[float]:
    """Wall seconds of `repeat` calls (each synchronised)."""
    out = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def interleaved(fns: dict[str, Callable[[], object]], device, rounds: int, per_round: int = 1):
    """Median seconds per call of each fn, measured in interleaved rounds (ABAB...), and each
    fn's spread (max/min over rounds) as a noise figure."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].extend(time_call(fn, device, per_round))
    med = {k: statistics.median(v) for k, v in samples.items()}
    spread = {k: (max(v) / min(v) if min(v) > 0 else float("nan")) for k, v in samples.items()}
    return med, spread, samples


def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    return d.max().item(), d.mean().item()
