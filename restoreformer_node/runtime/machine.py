"""What machine this process runs on, for keys of measured choices and for benchmark tables: the
CPU's model name and vector extensions, and the user's cache folder."""

from __future__ import annotations

import functools
import os
import platform
import sys
from pathlib import Path

import torch

# Instruction-set extensions that decide which CPU kernels PyTorch, oneDNN and NNPACK run, in the
# order they are listed (x86 flags of /proc/cpuinfo, then ARM features).
VECTOR_EXTENSIONS = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_fp16", "amx_int8", "asimd", "asimdhp", "sve", "sve2",
)

CACHE_ENV = "RESTOREFORMER_CACHE_DIR"


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Processor" (what the OS reports)."""
    info = _cpuinfo()
    name = info.get("model name") or info.get("Model") or info.get("Hardware") or platform.processor()
    return name or platform.machine() or "unknown CPU"


def cpu_identity() -> str:
    """The model name plus family/model/stepping where the OS gives them: virtual machines often
    report a generic name ("Intel(R) Xeon(R) Processor") for different CPUs."""
    info = _cpuinfo()
    ids = [f"{k} {info[k]}" for k in ("cpu family", "model", "stepping", "CPU part") if k in info]
    return f"{cpu_model()} ({', '.join(ids)})" if ids else cpu_model()


def vector_extensions() -> tuple[str, ...]:
    """The VECTOR_EXTENSIONS this CPU has, from /proc/cpuinfo; elsewhere PyTorch's own dispatch
    level (e.g. ("AVX512",)), the best it will use."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    if flags:
        return tuple(ext for ext in VECTOR_EXTENSIONS if ext in flags)
    return (torch.backends.cpu.get_cpu_capability(),)


def describe_cpu() -> str:
    """One line for a benchmark table: model, logical CPUs, vector extensions, PyTorch's dispatch."""
    return (
        f"{cpu_model()}, {os.cpu_count()} logical CPUs, {' '.join(vector_extensions()) or 'no vector extensions'} "
        f"(PyTorch kernels: {torch.backends.cpu.get_cpu_capability()})"
    )


def user_cache_dir() -> Path:
    """The pack's folder in the user's cache: $RESTOREFORMER_CACHE_DIR, else the platform's cache
    folder ($XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on
    Windows) + "restoreformer"."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "restoreformer" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "restoreformer"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "restoreformer"
