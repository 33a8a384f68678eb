"""Run the network over aligned crops in memory-sized chunks at a chosen precision.

Exactly one model call per chunk. The model is called as `model(x)` with x in [-1, 1] (the
RestoreFormer convention), so any module with that contract works, the identity included.
With `compile_options`, the call goes through torch.compile (`compiled.py`): chunks are a power
of two and the last one is padded, so one static graph serves them all (not on a CPU, where the
eager network is faster: `compile_skipped`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from ..model.precision import PRECISIONS as _DTYPES
from .compiled import CompileOptions, compile_skipped, compiled_batch, compiled_network, pad_batch

PRECISIONS = tuple(_DTYPES)  # ("fp32", "bf16", "fp16"), the names model.precision runs
CPU_CHUNK = 4  # crops per call on a CPU: enough to amortise the call, small enough for RAM
MAX_CHUNK = 64
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}

ChunkCallback = Callable[[int, int], None]  # (crops done, crops in total); may raise to stop


def resolve_precision(
    precision: str, device: torch.device | str, weight_dtype: torch.dtype = torch.float32
) -> tuple[str, str | None]:
    """The precision that will really run on `device`, and a note when it differs from the request.

    Half precisions run through autocast on accelerators; on a CPU they would be slow and lossy,
    so the request falls back to fp32 and says so. A network whose weights are bf16 (Load
    RestoreFormer Model's weight_dtype) runs natively in bf16 whatever is asked.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    if weight_dtype != torch.float32:
        held = _NAMES.get(weight_dtype)
        if held is None:
            raise ValueError(f"the network's weights are {weight_dtype}; expected one of {PRECISIONS}")
        if held == precision:
            return held, None
        return held, (
            f"the network's weights are {held}, so it ran in {held}, not {precision} (load the model "
            "with weight_dtype fp32 to choose the precision here)"
        )
    if precision != "fp32" and device.type == "cpu":
        return "fp32", f"precision {precision} is for GPUs; running fp32 on the CPU instead"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16", "this GPU has no bf16 support; running fp16 instead"
    return precision, None


def activation_bytes_per_crop(config, precision: str = "fp32") -> int:
    """Peak inference memory one crop adds, estimated from the network geometry.

    The widest feature maps are at full resolution (ch channels); a residual block in the
    decoder keeps several of them alive at once, and attention at resolution r holds a
    [heads, r^2, r^2] score matrix. The factor 10 was calibrated against
    torch.cuda.max_memory_allocated on an H200 (scripts/bench_pipeline.py): measured 645 MiB per
    crop for RF and 656 for RF++ in fp32, 455 MiB for both under bf16/fp16 autocast; this
    estimate is 1.00-1.16 times those (on the safe side).
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


def _autocast(device: torch.device, precision: str, weight_dtype: torch.dtype):
    # Half weights run natively: autocast would only add casts (and fp32 norms) around them.
    if precision == "fp32" or device.type == "cpu" or weight_dtype != torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def network_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the network's (first) weights: what its inputs are cast to."""
    for p in model.parameters():
        return p.dtype
    return torch.float32


def restore_crops(
    model: torch.nn.Module,
    crops: torch.Tensor,
    *,
    strength: float = 1.0,
    precision: str = "fp32",
    chunk_size: int | None = None,
    callback: ChunkCallback | None = None,
    compile_options: CompileOptions | None = None,
) -> torch.Tensor:
    """Restore aligned crops [N, 3, S, S] in [0, 1] (on the model's device) -> [N, 3, S, S] float32.

    strength in [0, 1] blends original (0) and restored (1) crops. `chunk_size` None picks one from
    the free memory (pick_chunk_size). `callback(done, total)` runs after every chunk; raising from
    it (e.g. ComfyUI's interruption) stops before the next chunk. `compile_options` runs the
    network through torch.compile in chunks of `compiled_batch(N, chunk_size)` crops, the last
    one padded (falls back to eager, with one warning, if compiling fails).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if crops.ndim != 4 or crops.shape[1] != 3:
        raise ValueError(f"crops must be [N, 3, S, S], got {tuple(crops.shape)}")
    device = crops.device
    dtype = network_dtype(model)
    precision, _ = resolve_precision(precision, device, dtype)
    n = crops.shape[0]
    if chunk_size is None:
        chunk_size = pick_chunk_size(getattr(model, "config", None), device, precision)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = torch.empty(crops.shape, dtype=torch.float32, device=device)
    network: Callable[[torch.Tensor], torch.Tensor] = model
    if compile_options is not None and strength > 0 and n > 0 and compile_skipped(compile_options, device) is None:
        network = compiled_network(model, compile_options, device, dtype, precision)
        chunk_size = compiled_batch(n, chunk_size)
    done = 0
    for start in range(0, n, chunk_size):
        chunk = crops[start : start + chunk_size].float()
        if strength > 0:
            x = (chunk * 2 - 1).to(dtype)
            if network is not model:
                x = pad_batch(x, chunk_size)  # one static graph for every chunk
            with torch.inference_mode(), _autocast(device, precision, dtype):
                raw = network(x)[: chunk.shape[0]]
            restored = (raw.float().clamp(-1, 1) + 1) / 2
            out[start : start + chunk_size] = torch.lerp(chunk, restored, strength)
        else:
            out[start : start + chunk_size] = chunk
        done += chunk.shape[0]
        if callback is not None:
            callback(done, n)
    return out
