"""Optional torch.compile of the network for `restore_crops`, with a safe fallback to eager.

Compiling pays when many crops are restored (video batches): a one-off compile of about a minute
buys a faster forward for every chunk after it (bench/README.md). Three rules keep it cheap and
safe:

- One graph per batch shape. Graphs are static (`dynamic=False`); `restore_crops` runs chunks of
  `compiled_batch(n, chunk_size)` crops (a power of two) and pads the last chunk by repeating its
  last crop, so every chunk of a call, and calls of similar size, reuse one graph.
- Nothing is copied or changed: torch.compile wraps the network as it is, and the graphs live in
  TorchDynamo's cache for its forward code. What the pack remembers per (network, device, weight
  dtype, precision, options) is only whether compiling failed, keyed weakly by the network.
- Never lose a run: when compiling or running the graph raises (no Triton, no C++ compiler, an
  unsupported op), one warning names the cause and the fix, and that network runs eagerly from
  then on (same results, eager speed) without retrying every chunk.

Inspection (attention traces, code maps) always runs the eager network: it needs the Python-side
traces that a compiled graph does not record.

On a CPU the eager network is the faster one: its NNPACK Winograd convolutions beat the oneDNN
convolutions inductor generates (`python -m bench.compile_restore --device cpu`). So a CPU
restores eagerly and says so, unless `CompileOptions(on_cpu=True)` or
RESTOREFORMER_COMPILE_ON_CPU=1 asks to compile anyway (for a CPU where that pays, and for the
tests, which check inductor's output on this CPU).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..options import COMPILE_MODES

log = logging.getLogger("restoreformer")


@dataclass(frozen=True)
class CompileOptions:
    """How to compile the network: a torch.compile mode and backend (inductor unless a test or an
    expert passes another backend name or a backend callable)."""

    mode: str = "default"
    backend: str | Callable = "inductor"
    on_cpu: bool = False  # compile on a CPU too (slower than eager there; see above)
    # Feed the graph a channels-last input (None: CHANNELS_LAST_INPUT for the device type).
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {self.mode!r}")

    def describe(self) -> str:
        backend = self.backend if isinstance(self.backend, str) else getattr(self.backend, "__name__", "custom")
        return f"torch.compile {backend}/{self.mode}"


CPU_ENV = "RESTOREFORMER_COMPILE_ON_CPU"

# Whether the compiled graph gets a channels-last (NHWC) input, per device type. TorchDynamo traces
# the network in the layout of its input, and the sub-pixel upsample allocates its output in that
# layout, so an NCHW input pins NCHW buffers inside the graph while inductor may prefer NHWC for
# the tensor-core convolutions. `bench/gpu_all.sh`'s compile step times both layouts; the entry
# for "cuda" follows the one that wins there (bench/README.md).
CHANNELS_LAST_INPUT: dict[str, bool] = {"cuda": False}


def uses_channels_last(options: CompileOptions, device: torch.device | str) -> bool:
    """Whether the compiled graph for `device` is fed a channels-last input."""
    if options.channels_last is not None:
        return options.channels_last
    return CHANNELS_LAST_INPUT.get(torch.device(device).type, False)


def compile_skipped(options: CompileOptions, device: torch.device | str) -> str | None:
    """Why `options` will not compile on `device` (a note for the user), or None when it will."""
    if torch.device(device).type != "cpu" or options.on_cpu or os.environ.get(CPU_ENV) == "1":
        return None
    return (
        "torch.compile skipped on the CPU: the network restores faster uncompiled there (its NNPACK "
        f"convolutions beat the ones inductor generates); set {CPU_ENV}=1 to compile anyway"
    )


def compiled_batch(n: int, chunk_size: int) -> int:
    """Crops per compiled call for n crops and a memory budget of chunk_size crops per call.

    A power of two: the largest one within chunk_size, or the smallest one holding all n crops if
    that is smaller. Chunk sizes that drift with free memory, and batches of different sizes,
    then share graphs (at most one per power of two) and padding never more than doubles the work.
    """
    if n < 1 or chunk_size < 1:
        raise ValueError(f"need n >= 1 and chunk_size >= 1, got n={n}, chunk_size={chunk_size}")
    return min(1 << (chunk_size.bit_length() - 1), 1 << (n - 1).bit_length())


def pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """[k, ...] -> [size, ...] with the last row repeated (k <= size); x itself when k == size."""
    k = x.shape[0]
    if k == size:
        return x
    return torch.cat([x, x[-1:].expand(size - k, *x.shape[1:])])


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception: TorchDynamo wraps a backend's error in BackendCompilerFailed
    (`inner_exception`) whose own message is only "backend='inductor' raised:"."""
    seen = {id(error)}
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None or id(inner) in seen:
            return error
        seen.add(id(inner))
        error = inner


def _fix_for(error: BaseException) -> str:
    """What the user can do about a compile failure, judged from its message."""
    text = f"{type(error).__name__} {error}".lower()
    if "triton" in text:
        return "install Triton for your PyTorch (pip install triton; on Windows pip install triton-windows)"
    if any(word in text for word in ("c++", "cpp", "gcc", "g++", "clang", "cl.exe", "compiler", "python.h")):
        return (
            "install a C++ compiler and the Python headers (Linux: gcc and python3-dev; macOS: the Xcode "
            "command line tools; Windows: the MSVC Build Tools)"
        )
    if "out of memory" in text:
        return "free GPU memory or choose compile mode 'default'"
    return "choose compile mode 'default', or remove the Compile Model (RestoreFormer) node (or --compile)"


def _first_line(error: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _CompileState:
    """What is remembered per (network, device, dtype, precision, options) between calls."""

    failure: str | None = None  # the warning given when compiling or running failed
    announced: bool = False  # the "compiling, first call is slow" line was logged


class CompiledNetwork:
    """x -> network(x) through torch.compile, falling back to the eager network for good after
    the first failure. `failure` is the message of that failure, or None.

    Built per restore call (cheap): the compiled graphs themselves live in TorchDynamo's cache on
    the network's forward code, guarded by shapes, dtypes and devices, so a new wrapper around the
    same network reuses them. The module-level state keeps only the failure, and holds the network
    weakly, so ComfyUI can still free a model it unloads.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        options: CompileOptions,
        where: str,
        state: _CompileState,
        channels_last: bool = False,
    ):
        self.network = network
        self.options = options
        self.where = where  # "cuda:0, bf16", for messages
        self.channels_last = channels_last
        self._state = state
        self._compiled: Callable | None = None

    @property
    def failure(self) -> str | None:
        return self._state.failure

    def _fail(self, error: BaseException) -> None:
        config = getattr(self.network, "config", None)
        name = getattr(config, "variant", type(self.network).__name__)
        cause = _root_cause(error)
        self._state.failure = (
            f"{self.options.describe()} failed for {name} on {self.where}, so it restores without "
            f"compiling (same results, eager speed). Cause: {_first_line(cause)}. Fix: {_fix_for(cause)}."
        )
        log.warning("RestoreFormer: %s", self._state.failure)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._state.failure is None:
            try:
                if self._compiled is None:
                    self._compiled = torch.compile(
                        self.network, backend=self.options.backend, mode=self.options.mode, dynamic=False
                    )
                if not self._state.announced:
                    self._state.announced = True
                    log.info(
                        "RestoreFormer: compiling the network (%s) on %s for batches of %d crops; the "
                        "first call takes a minute or more",
                        self.options.describe(), self.where, x.shape[0],
                    )
                if self.options.mode == "reduce-overhead":
                    # A new inference step: CUDA graph trees may reuse the previous output's memory
                    # (restore_crops has consumed it by now).
                    torch.compiler.cudagraph_mark_step_begin()
                # (Not rebinding x: a failure below falls back to eager on the input as given.)
                return self._compiled(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)
            except Exception as error:  # noqa: BLE001 - any compile or run failure falls back to eager
                self._fail(error)
        return self.network(x)


# network -> {(device, weight dtype, precision, options): state}; entries go with the network.
_states: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, _CompileState]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def compiled_network(
    network: torch.nn.Module,
    options: CompileOptions,
    device: torch.device | str,
    dtype: torch.dtype,
    precision: str = "fp32",
) -> CompiledNetwork:
    """A compiled callable of `network` for this device, weight dtype, precision and options
    (compiled lazily on its first call; an earlier failure for the same key is remembered)."""
    device = torch.device(device)
    key = (str(device), dtype, precision, options)
    with _lock:
        state = _states.setdefault(network, {}).setdefault(key, _CompileState())
    return CompiledNetwork(network, options, f"{device}, {precision}", state, uses_channels_last(options, device))


def compile_failure(
    network: torch.nn.Module,
    options: CompileOptions | None = None,
    device: torch.device | str | None = None,
    precision: str | None = None,
) -> str | None:
    """The message of a compile failure recorded for `network` (for these options, device and
    precision where given), or None."""
    want_device = None if device is None else str(torch.device(device))
    with _lock:
        for (dev, _, prec, opts), state in _states.get(network, {}).items():
            if state.failure is None:
                continue
            if (options is None or opts == options) and want_device in (None, dev) and precision in (None, prec):
                return state.failure
    return None
