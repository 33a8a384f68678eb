"""Which CPU kernel runs each convolution (and each upsample), chosen by timing on the machine that
runs it.

PyTorch ships several CPU kernels for a convolution, and which one is fastest depends on the CPU
(AVX2 or AVX-512, caches, cores) and on the layer's shape, so no fixed rule holds on every x86
machine (bench/README.md). Every convolution of the network is routed (3x3 stride 1, the stride-2
downsamples, the 1x1 shortcuts and attention projections). The routes:

- "winograd": NNPACK's Winograd F(6x6, 3x3), one image at a time (NNPACK runs Winograd only for a
  single image), NCHW maps; 3x3 stride-1 convolutions only. Fewer multiplies; its transforms round
  a little more (tests bound it).
- "nchw": oneDNN's convolution on NCHW maps (oneDNN reorders maps and weights around the call).
- "channels_last": oneDNN on NHWC maps and weights (no reorder of the maps; oneDNN still reorders
  the weights into its blocked layout on every call).
- "packed": oneDNN on NHWC maps with the weights reordered once into oneDNN's blocked layout, through
  PyTorch's `torch.ops.mkldnn` convolution ops (those inductor uses); left out where missing. On
  this route a residual block's second convolution also adds the shortcut in its epilogue
  (`conv_add`), one pass over the map fewer.

An upsample block runs "subpixel" (phase kernels at low resolution, then an interleaving copy,
runtime/fast.py), "transpose" (the same phase kernels as one stride-2 transposed convolution that
writes the interleaved map directly, weights packed once where the packed ops exist) or "nearest"
(nearest x2, then its 3x3 convolution through that convolution's own route).

`ConvRouting` decides, in one of three modes (`ROUTES_ENV`, or `optimize_for_inference(routes=)`):

- "auto" (default): a `RouteTable` measures each shape the first time it runs. Every candidate
  runs on the real input (its first image): once to warm up, then at least `repeats` interleaved timed
  calls (more for short kernels); the fastest by its quickest call wins. Decisions are kept per machine (CPU model, family and
  vector extensions, torch version, intra-op threads) in a JSON file in the user's cache folder, so
  a machine measures once; a file that cannot be read is ignored and rewritten.
- "fixed": the rule measured on the first development machine, with no timing and no file:
  Winograd for 3x3 stride-1 convolutions on maps of WINOGRAD_MIN_SIDE and larger, every other
  convolution as laid out elsewhere; upsample nearest where its convolution takes Winograd.
- a route name: that route for every convolution it can run (ablations, benchmarks, tests; the
  rest run plain); upsamples go nearest under "winograd", sub-pixel otherwise.

A route only applies to fp32 inference on a CPU (no autograd, no autocast, not traced by
torch.compile); everything else runs the plain convolution. A route that fails at run time is
dropped for the process with one warning, and the call runs the plain convolution.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .machine import cpu_identity, user_cache_dir, vector_extensions

log = logging.getLogger("restoreformer")

ROUTES_ENV = "RESTOREFORMER_CONV_ROUTES"
MODES = ("auto", "fixed")
CONV_ROUTES = ("winograd", "nchw", "channels_last", "packed")
UPSAMPLE_ROUTES = ("subpixel", "transpose", "nearest")
CACHE_FILE = "conv_routes.json"
# 2: every convolution is routed and upsamples may run transposed; format-1 files never timed
# those, so they are ignored (and rewritten) rather than trusted.
CACHE_FORMAT = 2

# The fixed rule's threshold: NNPACK's Winograd paid on maps of this side and larger on the first
# machine measured; on smaller maps the per-call transform of the (widest) kernels cost more.
WINOGRAD_MIN_SIDE = 32

# A candidate whose quickest call is this many times the best one's is not timed again.
_SLOW = 1.5
# Short kernels are timed more often (up to _MAX_ROUNDS calls, until each has run _MIN_TIMED_S), so
# that one preempted call on a busy machine does not decide.
_MIN_TIMED_S = 0.05
_MAX_ROUNDS = 20


# --- availability of the kernels -----------------------------------------------------------------

_available: dict[str, bool] = {}


def winograd_available() -> bool:
    """True when PyTorch's NNPACK works on this CPU (checked once; the check also initialises it,
    without which its kernels fail)."""
    if "winograd" not in _available:
        try:
            _available["winograd"] = bool(torch._nnpack_available())
        except Exception:  # a build without the op
            _available["winograd"] = False
    return _available["winograd"]


def _packed_ops_available() -> bool:
    if "packed" not in _available:
        try:
            ops = torch.ops.mkldnn
            _available["packed"] = bool(
                torch.backends.mkldnn.is_available() and ops._reorder_convolution_weight and ops._convolution_pointwise
            )
        except (AttributeError, RuntimeError):
            _available["packed"] = False
    return _available["packed"]


def route_available(route: str) -> bool:
    """Whether `route` can run in this process (its kernels exist and have not failed here)."""
    if route == "winograd":
        return winograd_available()
    if route == "packed":
        return _packed_ops_available()
    return (route in CONV_ROUTES or route in UPSAMPLE_ROUTES) and _available.get(route, True)


def mark_failed(route: str, error: BaseException) -> None:
    """Drop `route` for the rest of the process, with one warning."""
    _available[route] = False
    warnings.warn(f"CPU convolution route {route!r} failed ({error}); using the plain convolution", stacklevel=3)


def routable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a convolution of `weight` over `x` may take a route: fp32 inference on a CPU."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() == 4
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # inductor picks its own kernels (NNPACK's op has no tracing kernel)
    )


# --- the routes ---------------------------------------------------------------------------------


def weight_stamp(w: torch.Tensor) -> tuple:
    """What identifies the values of a weight tensor for caches derived from it. Weights loaded under
    inference_mode (as ComfyUI runs nodes) have no version counter; they cannot change in place
    outside inference mode, so pointer, dtype and device identify them."""
    return (None if w.is_inference() else w._version, w.data_ptr(), w.dtype, w.device)


class DerivedWeights(dict):
    """A module's weights laid out for its routes. Copies and pickles of the module start empty and
    rebuild on use: oneDNN's packed tensors can be neither copied nor pickled."""

    def __deepcopy__(self, memo: dict) -> DerivedWeights:
        return DerivedWeights()

    def __reduce__(self):
        return (DerivedWeights, ())


def _derived_weight(conv: nn.Conv2d, name: tuple, make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """`make(conv.weight)`, kept on the module (not in its state dict) until the weight changes."""
    stamp = weight_stamp(conv.weight)
    cache = conv.__dict__.get("_route_weights")
    if cache is None or cache.get("stamp") != stamp:
        cache = DerivedWeights(stamp=stamp)
        conv.__dict__["_route_weights"] = cache
    if name not in cache:
        cache[name] = make(conv.weight.detach())
    return cache[name]


def keep_derived_weights(conv: nn.Conv2d, keep: tuple[str, ...]) -> None:
    """Free the derived weights of the routes and forms not in `keep` (after a choice)."""
    cache = conv.__dict__.get("_route_weights")
    if cache is not None:
        for name in [k for k in cache if k != "stamp" and k[0] not in keep]:
            del cache[name]


def winograd_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """3x3, padding 1 convolution through NNPACK's Winograd kernels, one image per call."""
    x = x.contiguous()
    weight = weight.contiguous()
    if x.shape[0] == 1:
        return torch._nnpack_spatial_convolution(x, weight, bias, [1, 1])
    out = torch.empty((x.shape[0], weight.shape[0], *x.shape[2:]), dtype=x.dtype)
    for i in range(x.shape[0]):
        out[i] = torch._nnpack_spatial_convolution(x[i : i + 1], weight, bias, [1, 1])[0]
    return out


def _run_winograd(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return winograd_conv(x, _derived_weight(conv, ("winograd",), torch.Tensor.contiguous), conv.bias)


def _run_nchw(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    weight = _derived_weight(conv, ("nchw",), torch.Tensor.contiguous)
    return F.conv2d(x.contiguous(), weight, conv.bias, conv.stride, conv.padding)


def _run_channels_last(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    weight = _derived_weight(conv, ("channels_last",), lambda w: w.contiguous(memory_format=torch.channels_last))
    return F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, conv.bias, conv.stride, conv.padding)


def _packed_weight(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv's weights reordered once into oneDNN's blocked layout. oneDNN picks that layout for the
    input shape it is given (one image of the first map seen); other batch sizes and maps still run
    right (oneDNN reorders if it must), and one packed copy per convolution keeps the memory at one
    extra set of weights."""
    return _derived_weight(
        conv, ("packed",),
        lambda w: torch.ops.mkldnn._reorder_convolution_weight(
            w.contiguous(), list(conv.padding), list(conv.stride), [1, 1], 1, [1, *x.shape[1:]]),
    )


def _run_packed(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous(memory_format=torch.channels_last)
    return torch.ops.mkldnn._convolution_pointwise(
        x, _packed_weight(conv, x), conv.bias, list(conv.padding), list(conv.stride), [1, 1], 1, "none", [], "")


def packed_conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, into_other: bool) -> torch.Tensor:
    """conv(x) + other on the packed route, the add in oneDNN's epilogue (a binary post-op): the map
    is written once instead of written, read and written again. `into_other=True` writes the sum
    into `other` (a temporary of the caller's), which also saves allocating a fresh map."""
    x = x.contiguous(memory_format=torch.channels_last)
    args = (x, _packed_weight(conv, x), conv.bias, list(conv.padding), list(conv.stride), [1, 1], 1, "add", 1.0, None, [], None)
    if into_other:
        return torch.ops.mkldnn._convolution_pointwise_.binary(other, *args)
    return torch.ops.mkldnn._convolution_pointwise.binary(args[0], other, *args[1:])


def transposed_upsample(conv: nn.Conv2d, x: torch.Tensor, make_weight: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """An upsample (nearest x2, then `conv`, a 3x3 convolution) as one 4x4, stride-2, padding-1
    transposed convolution whose weights `make_weight(conv.weight)` gives ([Ci, Co, 4, 4]): it
    writes the interleaved output directly. oneDNN with the weights packed once where the packed
    ops exist, else PyTorch's transposed convolution on NHWC maps."""
    x = x.contiguous(memory_format=torch.channels_last)
    if route_available("packed"):
        ops = torch.ops.mkldnn
        weight = _derived_weight(conv, ("transpose", "packed"), lambda w: ops._reorder_convolution_transpose_weight(
            make_weight(w).contiguous(), [1, 1], [0, 0], [2, 2], [1, 1], 1, [1, *x.shape[1:]]))
        return ops._convolution_transpose_pointwise(
            x, weight, conv.bias, [1, 1], [0, 0], [2, 2], [1, 1], 1, "none", [], "")
    weight = _derived_weight(conv, ("transpose",), lambda w: make_weight(w).contiguous(memory_format=torch.channels_last))
    return F.conv_transpose2d(x, weight, conv.bias, stride=2, padding=1)


RUNNERS: dict[str, Callable[[nn.Conv2d, torch.Tensor], torch.Tensor]] = {
    "winograd": _run_winograd,
    "nchw": _run_nchw,
    "channels_last": _run_channels_last,
    "packed": _run_packed,
}


# --- measured choices, kept per machine ---------------------------------------------------------


def machine_key() -> str:
    """What a measured route depends on besides the shape: the CPU, its vector extensions, the torch
    version (its kernels) and the intra-op thread count (read now: it can change at run time)."""
    return (
        f"{cpu_identity()} | {' '.join(vector_extensions())} | torch {torch.__version__} | "
        f"{torch.get_num_threads()} threads"
    )


def routed_conv(module: nn.Module) -> bool:
    """Whether `module` is a convolution the routes can run: 2D, ungrouped, undilated, zero padding."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.dilation == (1, 1)
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)  # not "same" / "valid"
    )


def winograd_shape(conv: nn.Conv2d) -> bool:
    """3x3, stride 1, padding 1: the convolutions NNPACK's Winograd route runs."""
    return conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)


def conv_key(conv: nn.Conv2d, x: torch.Tensor) -> str:
    """"conv3x3 64->64 512x512" for 3x3 stride-1 padding-1 convolutions (the keys of the first cache
    format), else with the kernel, stride and padding, e.g. "conv3x3/2p0 64->64 513x513"."""
    def pair(p: tuple[int, int]) -> str:
        return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"

    kind = f"conv{conv.kernel_size[0]}x{conv.kernel_size[1]}"
    if conv.stride != (1, 1) or conv.padding != (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2):
        kind += f"/{pair(conv.stride)}p{pair(conv.padding)}"
    return f"{kind} {conv.in_channels}->{conv.out_channels} {x.shape[-2]}x{x.shape[-1]}"


def upsample_key(conv: nn.Conv2d, x: torch.Tensor) -> str:
    return f"upsample {conv.in_channels}->{conv.out_channels} {x.shape[-2]}x{x.shape[-1]}"


class RouteTable:
    """Shape key -> measured route, per machine, backed by a JSON file (`path`; None keeps it in
    memory). `timer` and `repeats` set how candidates are timed (tests pass a fake clock);
    `machine` fixes the machine key (default: `machine_key()` at each use)."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        *,
        timer: Callable[[], float] = time.perf_counter,
        repeats: int = 2,
        machine: str | None = None,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        self.path = None if path is None else Path(path)
        self.timer = timer
        self.repeats = repeats
        self._machine = machine
        self._machines: dict[str, dict[str, dict]] | None = None
        self._lock = threading.RLock()  # reentrant: an upsample's measurement runs its convolution's
        self._announced = False

    def __deepcopy__(self, memo: dict) -> RouteTable:  # shared by copies of a network
        return self

    def machine(self) -> str:
        return self._machine or machine_key()

    def records(self) -> dict[str, dict]:
        """This machine's records: shape key -> {"route": name, "ms": {candidate: quickest ms}}."""
        with self._lock:
            return dict(self._load().get(self.machine(), {}))

    def route(self, key: str, allowed: tuple[str, ...]) -> str | None:
        """The route measured for `key` on this machine, if it is one of `allowed` and can run."""
        with self._lock:
            record = self._load().get(self.machine(), {}).get(key)
        route = None if record is None else record.get("route")
        return route if route in allowed and route_available(route) else None

    def measure(self, key: str, candidates: dict[str, Callable[[], object]]) -> str:
        """Time `candidates` (name -> call), record and save the fastest, and return its name.
        A candidate that raises is left out; if all raise, the last error propagates."""
        with self._lock:
            if not self._announced:
                self._announced = True
                log.info(
                    "RestoreFormer: timing the CPU convolution kernels for each layer shape (once per "
                    "machine; kept in %s)", self.path or "memory",
                )
            best = dict.fromkeys(candidates, math.inf)
            failed: dict[str, BaseException] = {}
            for name, call in candidates.items():  # warm-up: kernel set-up, packing, nested choices
                try:
                    call()
                except Exception as error:  # noqa: BLE001 - a candidate that cannot run is not chosen
                    failed[name] = error
            live = [name for name in candidates if name not in failed]
            if not live:
                raise next(reversed(failed.values()))
            spent = dict.fromkeys(live, 0.0)
            round_ = 0
            while True:  # interleaved rounds, so drift hits every candidate alike
                fastest = min(best.values())
                active = [n for n in live if round_ == 0 or best[n] <= _SLOW * fastest]
                short = any(spent[n] < _MIN_TIMED_S for n in active)
                if round_ >= self.repeats and not (short and round_ < _MAX_ROUNDS):
                    break
                for name in active:
                    t0 = self.timer()
                    candidates[name]()
                    elapsed = self.timer() - t0
                    best[name] = min(best[name], elapsed)
                    spent[name] += elapsed
                round_ += 1
            winner = min(live, key=best.__getitem__)
            record = {"route": winner, "ms": {name: round(best[name] * 1e3, 3) for name in live}}
            if failed:
                record["failed"] = {name: f"{type(e).__name__}: {e}"[:200] for name, e in failed.items()}
            self._load().setdefault(self.machine(), {})[key] = record
            self._save()
            return winner

    def _load(self) -> dict[str, dict[str, dict]]:
        if self._machines is None:
            self._machines = self._read()
        return self._machines

    def _read(self) -> dict[str, dict[str, dict]]:
        """The file's records; {} when it is missing, unreadable or not in this format."""
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
                raise ValueError(f"not a format-{CACHE_FORMAT} route file")
            machines = data["machines"]
            if not isinstance(machines, dict):
                raise ValueError("'machines' is not a mapping")
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as error:
            log.warning("RestoreFormer: ignoring the convolution route cache %s (%s); it will be rewritten",
                        self.path, error)
            return {}
        return {
            machine: {
                key: record
                for key, record in entries.items()
                if isinstance(record, dict) and record.get("route") in CONV_ROUTES + UPSAMPLE_ROUTES
            }
            for machine, entries in machines.items()
            if isinstance(entries, dict)
        }

    def _save(self) -> None:
        """Write this machine's records into the file (other machines' records kept), atomically."""
        if self.path is None:
            return
        machines = self._read()
        machines[self.machine()] = self._load().get(self.machine(), {})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".conv_routes.", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": CACHE_FORMAT, "machines": machines}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as error:  # a read-only home: the choices still hold for this process
            log.warning("RestoreFormer: could not save the convolution route cache %s (%s)", self.path, error)


_default_table: RouteTable | None = None


def default_table() -> RouteTable:
    """The process-wide table, in `user_cache_dir()` / CACHE_FILE."""
    global _default_table
    if _default_table is None:
        _default_table = RouteTable(user_cache_dir() / CACHE_FILE)
    return _default_table


# --- the decision -------------------------------------------------------------------------------


class ConvRouting:
    """How the fast blocks of one network pick their CPU kernels (see the module docstring).

    `mode` is "auto", "fixed" or a route name; `table` serves "auto" (default: `default_table()`).
    """

    def __init__(self, mode: str = "auto", table: RouteTable | None = None) -> None:
        if mode not in MODES + CONV_ROUTES:
            raise ValueError(
                f"convolution routes must be one of {MODES + CONV_ROUTES}, got {mode!r} (set {ROUTES_ENV} "
                "or optimize_for_inference(routes=) to one of them)"
            )
        self.mode = mode
        self._table = table

    @classmethod
    def from_env(cls) -> ConvRouting:
        """The mode `ROUTES_ENV` names (default "auto")."""
        return cls(os.environ.get(ROUTES_ENV, "").strip().lower() or "auto")

    @property
    def table(self) -> RouteTable:
        return self._table or default_table()

    def __repr__(self) -> str:
        return f"ConvRouting({self.mode!r})"

    def __deepcopy__(self, memo: dict) -> ConvRouting:  # a copied network routes as its original
        return self

    def candidates(self, conv: nn.Conv2d) -> tuple[str, ...]:
        """The convolution routes "auto" times for `conv` (Winograd only for 3x3 stride-1 shapes,
        unless the conv forbids it)."""
        return tuple(r for r in CONV_ROUTES if route_available(r) and (r != "winograd" or _winograd_allowed(conv)))

    def fixed_route(self, conv: nn.Conv2d, x: torch.Tensor) -> str | None:
        """The fixed rule: Winograd on maps of WINOGRAD_MIN_SIDE and larger, else None (the plain
        convolution in the maps' own layout)."""
        if _winograd_allowed(conv) and winograd_available() and min(x.shape[-2:]) >= WINOGRAD_MIN_SIDE:
            return "winograd"
        return None

    def conv_route(self, conv: nn.Conv2d, x: torch.Tensor) -> str | None:
        """The route `conv` takes for `x` (x routable); None runs the plain convolution. "auto"
        measures the shape first if this machine has no record of it."""
        if self.mode == "fixed":
            return self.fixed_route(conv, x)
        if self.mode != "auto":
            allowed = self.mode != "winograd" or _winograd_allowed(conv)
            return self.mode if allowed and route_available(self.mode) else None
        candidates = self.candidates(conv)
        key = conv_key(conv, x) + ("" if "winograd" in candidates or not winograd_shape(conv) else " (no winograd)")
        route = self.table.route(key, candidates)
        if route is None:
            x1 = x[:1]
            route = self.table.measure(key, {r: (lambda r=r: RUNNERS[r](conv, x1)) for r in candidates})
            keep_derived_weights(conv, (route, "transpose"))
        return route

    def conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """conv(x) through its route (x routable)."""
        route = self.conv_route(conv, x)
        if route is not None:
            try:
                return RUNNERS[route](conv, x)
            except RuntimeError as error:  # never lose a run to a fast kernel
                mark_failed(route, error)
        return conv._conv_forward(x, conv.weight, conv.bias)

    def conv_add(self, conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, into_other: bool = False) -> torch.Tensor | None:
        """conv(x) + other in one oneDNN call where `conv` takes the packed route for x and `other`
        is an fp32 NHWC map of the output's shape; None elsewhere (the caller adds). `into_other`:
        `other` is a temporary the sum may be written into."""
        if other.dtype != torch.float32 or not _is_nhwc(other) or self.conv_route(conv, x) != "packed":
            return None
        expected = (x.shape[0], conv.out_channels, *_out_size(conv, x))
        if tuple(other.shape) != expected:
            return None
        try:
            return packed_conv_add(conv, x, other, into_other)
        except RuntimeError as error:
            mark_failed("packed", error)
            return None

    def upsample_route(self, conv: nn.Conv2d, x: torch.Tensor, forms: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> str:
        """"nearest", "subpixel" or "transpose" for an upsample whose 3x3 convolution is `conv`, on
        the low-resolution map x (x routable). `forms` runs the "subpixel" and "transpose" forms
        (timed by "auto"; "nearest" is nearest x2 then conv)."""
        if self.mode == "fixed":
            return "nearest" if self.fixed_route(conv, x) == "winograd" else "subpixel"
        if self.mode != "auto":
            return "nearest" if self.conv_route(conv, x) == "winograd" else "subpixel"
        key = upsample_key(conv, x)
        route = self.table.route(key, UPSAMPLE_ROUTES)
        if route is None:
            x1 = x[:1]
            candidates = {name: (lambda f=f: f(x1)) for name, f in forms.items()}
            candidates["nearest"] = lambda: conv(F.interpolate(x1, scale_factor=2.0, mode="nearest"))
            route = self.table.measure(key, candidates)
            if route != "nearest":  # the full-resolution convolution will not run: free its weights
                keep_derived_weights(conv, ("transpose",) if route == "transpose" else ())
            else:
                keep_derived_weights(conv, CONV_ROUTES)
        return route


def _winograd_allowed(conv: nn.Conv2d) -> bool:
    return winograd_shape(conv) and getattr(conv, "winograd", True)


def _is_nhwc(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _out_size(conv: nn.Conv2d, x: torch.Tensor) -> tuple[int, int]:
    return tuple(
        (size + 2 * pad - k) // stride + 1
        for size, pad, k, stride in zip(x.shape[-2:], conv.padding, conv.kernel_size, conv.stride, strict=True)
    )


def routing_of(module: nn.Module) -> ConvRouting:
    """The routing `optimize_for_inference` gave `module`; the environment's for a module that got
    none (a fast block installed by hand)."""
    routing = module.__dict__.get("routing")
    return routing if routing is not None else ConvRouting.from_env()
