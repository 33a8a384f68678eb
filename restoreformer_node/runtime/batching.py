"""Run the network over aligned crops in memory-sized chunks, under one precision plan.

Exactly one model call per chunk. The model is called as `model(x)` with x in [-1, 1] (the
RestoreFormer convention), so any module with that contract works, the identity included.
With `compile_options`, the call goes through torch.compile (runtime/compile.py): chunks are a
power of two and the last one is padded, so one static graph serves them all (not on a CPU,
where the eager network is faster: `compile_skipped`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .compile import (
    CompileOptions,
    compile_failure,
    compile_skipped,
    compiled_batch,
    compiled_network,
    pad_batch,
)
from .precision import PrecisionPlan, network_dtype, plan_precision

CPU_CHUNK = 4  # crops per call on a CPU: enough to amortise the call, small enough for RAM
MAX_CHUNK = 64

ChunkCallback = Callable[[int, int], None]  # (crops done, crops in total); may raise to stop


def activation_bytes_per_crop(config, precision: str = "fp32") -> int:
    """Peak inference memory one crop adds, estimated from the network geometry.

    The widest feature maps are at full resolution (ch channels); a residual block in the
    decoder keeps several of them alive at once, and attention at resolution r holds a
    [heads, r^2, r^2] score matrix. The factor 10 is calibrated against the measured peak
    (bench/pipeline_memory.py; figures in bench/README.md) and errs on the safe side.
    """
    elem = 2 if precision in ("bf16", "fp16") else 4
    res = config.resolution
    maps = 0
    for level, width in enumerate(config.widths):
        side = res // 2**level
        maps = max(maps, width * side * side)
    attn = 0
    for r in set(config.encoder_attn_resolutions) | set(config.decoder_attn_resolutions):
        attn = max(attn, config.heads * (r * r) ** 2)
    # autocast keeps fp32 copies of some maps (norms, softmax): count half precision as 3 bytes
    elem_eff = 3 if elem == 2 else 4
    return int(10 * maps * elem_eff + 3 * attn * 4)


def pick_chunk_size(
    config, device: torch.device | str, precision: str = "fp32", free_bytes: int | None = None
) -> int:
    """Crops per model call: CPU_CHUNK on a CPU, else what fits in 70% of the free memory.

    `free_bytes` overrides the query (ComfyUI passes model_management.get_free_memory()).
    `config` None (a model without a RestoreFormer config) is treated as the published geometry.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return CPU_CHUNK
    if free_bytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            free_bytes = free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        else:
            return CPU_CHUNK
    if config is None:
        from ..model import RESTOREFORMER

        config = RESTOREFORMER
    per = activation_bytes_per_crop(config, precision)
    return int(max(1, min(MAX_CHUNK, (0.7 * free_bytes) // per)))


@dataclass(frozen=True)
class CropRun:
    """Restored crops and how they were run."""

    crops: torch.Tensor  # [N, 3, S, S] float32 in [0, 1] on the crops' device
    plan: PrecisionPlan  # the precision that ran (its note says why, when it is not the one asked)
    chunk_size: int  # crops per network call (0 when the network did not run)
    compiled: str | None  # the torch.compile description when the compiled graph ran
    compile_note: str | None  # why it did not, when compiling was asked for (skipped or failed)


def run_crops(
    model: torch.nn.Module,
    crops: torch.Tensor,
    *,
    strength: float = 1.0,
    precision: str = "fp32",
    chunk_size: int | None = None,
    callback: ChunkCallback | None = None,
    compile_options: CompileOptions | None = None,
) -> CropRun:
    """Restore aligned crops [N, 3, S, S] in [0, 1] (on the model's device).

    strength in [0, 1] blends original (0) and restored (1) crops. The precision that runs is
    `plan_precision(precision, device, weights)`. `chunk_size` None picks one from the free memory
    (pick_chunk_size). `callback(done, total)` runs after every chunk; raising from it (e.g.
    ComfyUI's interruption) stops before the next chunk. `compile_options` runs the network through
    torch.compile in chunks of `compiled_batch(N, chunk_size)` crops, the last one padded (falls
    back to eager, with one warning, if compiling fails).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if crops.ndim != 4 or crops.shape[1] != 3:
        raise ValueError(f"crops must be [N, 3, S, S], got {tuple(crops.shape)}")
    device = crops.device
    dtype = network_dtype(model)
    plan = plan_precision(precision, device, dtype, half_ok=getattr(model, "supports_half", True))
    n = crops.shape[0]
    if chunk_size is None:
        chunk_size = pick_chunk_size(getattr(model, "config", None), device, plan.precision)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = torch.empty(crops.shape, dtype=torch.float32, device=device)
    network: Callable[[torch.Tensor], torch.Tensor] = model
    runs = strength > 0 and n > 0
    compile_note = compile_skipped(compile_options, device) if compile_options is not None else None
    if compile_options is not None and runs and compile_note is None:
        network = compiled_network(model, compile_options, device, dtype, plan.precision)
        chunk_size = compiled_batch(n, chunk_size)
    done = 0
    for start in range(0, n, chunk_size):
        chunk = crops[start : start + chunk_size].float()
        if strength > 0:
            x = (chunk * 2 - 1).to(dtype)
            if network is not model:
                x = pad_batch(x, chunk_size)  # one static graph for every chunk
            with torch.inference_mode(), plan.scope(device):
                raw = network(x)[: chunk.shape[0]]
            restored = (raw.float().clamp(-1, 1) + 1) / 2
            out[start : start + chunk_size] = torch.lerp(chunk, restored, strength)
        else:
            out[start : start + chunk_size] = chunk
        done += chunk.shape[0]
        if callback is not None:
            callback(done, n)
    compiled = None
    if network is not model:
        compile_note = compile_failure(model, compile_options, device, plan.precision)
        compiled = None if compile_note else compile_options.describe()
    return CropRun(out, plan, chunk_size if runs else 0, compiled, compile_note)


def restore_crops(model: torch.nn.Module, crops: torch.Tensor, **options) -> torch.Tensor:
    """`run_crops(model, crops, **options).crops`: the restored crops [N, 3, S, S] float32."""
    return run_crops(model, crops, **options).crops
