"""Shared helpers of the benchmarks: timing, and the runtime settings a CPU table must name.

Networks come from restoreformer_node.testing: random weights of the real architecture (no
downloads here) and spandrel's twin of the same weights.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from restoreformer_node.cli import CPU_RUNTIME_DEFAULTS

FLOP_PER_512 = 683e9  # one 512x512 forward, 2 FLOP per multiply-add

# Process settings that move CPU timings a lot and are read only at start-up: OpenMP's wait policy,
# PyTorch's huge-page switch, glibc's allocator. Each one changes spandrel's time and ours by
# different amounts (bench/README.md), so a CPU table names the ones in force.
RUNTIME_ENV = (*CPU_RUNTIME_DEFAULTS, "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def runtime_env() -> str:
    """The RUNTIME_ENV settings of this process, e.g. "OMP_WAIT_POLICY=PASSIVE", or "defaults"."""
    found = [f"{name}={os.environ[name]}" for name in RUNTIME_ENV if name in os.environ]
    return " ".join(found) or "defaults"


def cpu_name() -> str:
    """The processor's model name and the threads torch uses, for table titles."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


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


def cuda_graphed(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A call of fn(example) replayed from a CUDA graph, captured at its first call (after two
    warm-up calls on a side stream: cuDNN's algorithm search and the fast blocks' caches happen
    outside the graph). The output is the graph's static buffer. On a CPU (dry runs) fn itself."""
    if example.device.type != "cuda":
        return lambda: fn(example)
    state: dict[str, object] = {}

    def run() -> torch.Tensor:
        if not state:
            static_in = example.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    fn(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                state["out"] = fn(static_in)
            state["graph"], state["in"] = graph, static_in
        state["in"].copy_(example)  # what a caller with new frames would do
        state["graph"].replay()
        return state["out"]

    return run


def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    d = (a.float() - b.float()).abs()
    return d.max().item(), d.mean().item()
