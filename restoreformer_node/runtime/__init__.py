"""Running the network fast: the fast inference blocks, one precision policy, torch.compile,
chunked batches, and `prepare` (load -> weight dtype -> fast blocks)."""

from .batching import (
    CPU_CHUNK,
    MAX_CHUNK,
    CropRun,
    activation_bytes_per_crop,
    pick_chunk_size,
    restore_crops,
    run_crops,
)
from .compile import CompileOptions, compile_failure, compile_skipped, compiled_batch
from .fast import is_optimized, optimize_for_inference, prefers_channels_last, restore_plain
from .precision import PrecisionPlan, cast_weights, network_dtype, plan_precision, plan_weight_dtype, run
from .prepare import Prepared, prepare

__all__ = [
    "CPU_CHUNK",
    "MAX_CHUNK",
    "CompileOptions",
    "CropRun",
    "PrecisionPlan",
    "Prepared",
    "activation_bytes_per_crop",
    "cast_weights",
    "compile_failure",
    "compile_skipped",
    "compiled_batch",
    "is_optimized",
    "network_dtype",
    "optimize_for_inference",
    "pick_chunk_size",
    "plan_precision",
    "plan_weight_dtype",
    "prefers_channels_last",
    "prepare",
    "restore_crops",
    "restore_plain",
    "run",
    "run_crops",
]
