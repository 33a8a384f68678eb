"""Model forward: our RestoreFormer against spandrel's, identical random weights, one process.

    # CPU, fp32: spandrel, ours (routes measured on this machine), ONNX Runtime (the 1.8x and 1.0x
    # targets); --ablate forces each convolution route everywhere, --profile breaks ours down:
    python -m bench.model_forward --device cpu --rounds 5 --no-plain --profile
    # GPU: fp32 / bf16 / fp16, batch 1 and 8, errors against spandrel's strict fp32 output:
    python -m bench.model_forward --device cuda --batches 1 8 --out bench_out/model_forward.md

Timing: interleaved rounds (A B C A B C ...), each call synchronised, median and min per
variant; `spread` = slowest/fastest call of that variant, a noise figure. Errors are on the
[-1, 1] output scale against spandrel's fp32 output on the same device (TF32 off).

Weights are random (the real architecture; no downloads), the input is a real photo
(scikit-image's astronaut, 512x512) with flips and shifts for larger batches.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import time

import torch

from bench import onnx_runtime
from bench.common import FLOP_PER_512, cuda_graphed, diff, runtime_env, sync
from restoreformer_node.model import RESTOREFORMER, tiny_config
from restoreformer_node.runtime import PrecisionPlan, cast_weights, optimize_for_inference
from restoreformer_node.runtime.conv_routes import (
    CONV_ROUTES,
    ConvRouting,
    RouteTable,
    machine_key,
    route_available,
)
from restoreformer_node.runtime.fast import FUSED_NORM_SILU, HALF_ISLANDS
from restoreformer_node.runtime.machine import describe_cpu
from restoreformer_node.testing import random_model, spandrel_twin

# Dense peak rates (TFLOP/s) by card name fragment: (bf16/fp16 tensor, tf32 tensor, fp32 plain).
PEAKS = {
    "H100": (989.0, 494.0, 67.0),  # SXM datasheet
    "H200": (989.0, 494.0, 67.0),
    "A100": (312.0, 156.0, 19.5),
}


def photo_batch(batch: int, size: int = 512) -> torch.Tensor:
    """[batch, 3, size, size] in [-1, 1]: a real face photo, flipped/shifted per batch item."""
    try:
        from skimage import data

        img = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255.0
    except Exception:  # scikit-image missing: smooth noise keeps the bench runnable
        g = torch.Generator().manual_seed(0)
        img = torch.nn.functional.avg_pool2d(torch.rand(1, 3, size, size, generator=g), 9, 1, 4)[0]
    img = torch.nn.functional.interpolate(img[None], size=(size, size), mode="bilinear")[0]
    items = []
    for i in range(batch):
        t = img.flip(-1) if i % 2 else img
        t = t.roll(shifts=(8 * (i // 2), 0), dims=(1, 2))
        items.append(t * (1.0 - 0.05 * (i % 3)))
    return torch.stack(items) * 2 - 1


def time_variants(fns: dict, device, rounds: int, warmup: int = 1):
    """Interleaved timing. Returns name -> (median s, min s, spread)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - t0)
    out = {}
    for k, v in samples.items():
        v = sorted(v)
        out[k] = (v[len(v) // 2], v[0], v[-1] / v[0])
    return out


class Table:
    def __init__(self, title: str, header: list[str]) -> None:
        self.lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(self, *cells) -> None:
        self.lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        print(self.lines[-1], flush=True)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def cpu_bench(args) -> str:
    torch.set_grad_enabled(False)
    model = random_model()
    twin = spandrel_twin(model)
    x = photo_batch(1)
    variants: dict[str, object] = {"spandrel": lambda t: twin(t)[0]}
    if args.plain:
        variants["ours plain"] = model
    routing = ConvRouting.from_env()
    if routing.mode == "auto" and args.recalibrate:
        routing = ConvRouting("auto", RouteTable(None))  # measured afresh in this process
    fast = optimize_for_inference(copy.deepcopy(model), routes=routing)
    t0 = time.perf_counter()
    fast(x)  # "auto": measures every shape this machine has no record of
    first_call = time.perf_counter() - t0
    fast_name = f"ours fast (routes: {routing.mode})"
    variants[fast_name] = fast
    if routing.mode != "fixed":
        variants["ours fast (routes: fixed, the earlier rule)"] = optimize_for_inference(
            copy.deepcopy(model), routes="fixed")
    notes = [f"first call of `{fast_name}`: {first_call:.1f} s"]
    if args.onnx:
        missing = onnx_runtime.available()
        if missing:
            notes.append(f"ONNX Runtime row left out: {missing}")
        else:
            ort_run, how = onnx_runtime.session(model, x, args.onnx_threads or torch.get_num_threads())
            variants["ONNX Runtime"] = ort_run
            notes.append(f"ONNX Runtime: {how}")
    if args.ablate:
        def variant(**kw):
            return optimize_for_inference(copy.deepcopy(model), **kw)

        for route in CONV_ROUTES:
            if route_available(route):
                variants[f"fast, every 3x3 conv on {route}"] = variant(routes=route)
        variants["plain + channels-last"] = copy.deepcopy(model).to(memory_format=torch.channels_last)
        variants["fast, fixed, no sub-pixel (NCHW)"] = variant(routes="fixed", subpixel=False)
        fused = _fused_norm(torch.device("cpu"), fast)
        variants[f"fast (routes: {routing.mode}) + fused GroupNorm+SiLU (inductor C++ kernel)"] = lambda t: fused(t)
    ref = twin(x)[0]
    errs = {name: diff(fn(x), ref) for name, fn in variants.items()}
    times = time_variants({k: (lambda f=f: f(x)) for k, f in variants.items()}, "cpu", args.rounds)
    base_med, base_min = times["spandrel"][0], times["spandrel"][1]
    info = (
        f"{describe_cpu()}; {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"environment: {runtime_env()}"
    )
    table = Table(
        f"CPU fp32 forward, 512x512, batch 1 ({info}; {args.rounds} interleaved rounds)",
        ["variant", "median s", "min s", "spread", "speed-up (median)", "speed-up (min)", "max abs diff", "mean abs diff"],
    )
    for name, (med, mn, spread) in times.items():
        e = errs[name]
        table.row(name, f"{med:.2f}", f"{mn:.2f}", f"{spread:.2f}", f"{base_med / med:.2f}x", f"{base_min / mn:.2f}x", f"{e[0]:.2e}", f"{e[1]:.2e}")
    if "ONNX Runtime" in times:
        ort_med, ort_min = times["ONNX Runtime"][:2]
        ours_med, ours_min = times[fast_name][:2]
        notes.append(f"ours against ONNX Runtime: {ort_med / ours_med:.2f}x by median, {ort_min / ours_min:.2f}x by fastest call")
    text = table.text() + "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if routing.mode == "auto":
        text += "\n" + route_table(routing.table).text()
    if args.profile:
        text += "\n" + profile_table(fast, x).text()
    return text


def route_table(table: RouteTable) -> Table:
    """The routes this machine measured: shape -> winner and each candidate's quickest call."""
    out = Table(f"Routes measured on this machine ({machine_key()})", ["layer shape", "route", "quickest call per candidate (ms)"])
    for key, record in sorted(table.records().items(), key=lambda kv: kv[0]):
        ms = ", ".join(f"{name} {v:.1f}" for name, v in sorted(record["ms"].items(), key=lambda kv: kv[1]))
        out.row(key, record["route"], ms)
    return out


# Profiler events -> where the time of a CPU forward goes.
_PROFILE_GROUPS = {
    "aten::_nnpack_spatial_convolution": "3x3 conv: NNPACK Winograd",
    "mkldnn::_convolution_pointwise": "convs: oneDNN, packed weights (3x3, 1x1, stride 2; residual adds fused)",
    "mkldnn::_convolution_pointwise_": "convs: oneDNN, packed weights (3x3, 1x1, stride 2; residual adds fused)",
    "mkldnn::_convolution_transpose_pointwise": "upsamples as transposed convs (oneDNN, packed weights)",
    "aten::mkldnn_convolution": "convs: oneDNN, weights reordered per call (NCHW/NHWC routes, sub-pixel 2x2)",
    "aten::native_group_norm": "GroupNorm",
    "aten::batch_norm_update_stats": "GroupNorm",
    "aten::addcmul": "GroupNorm",
    "aten::sum": "GroupNorm",
    "aten::silu_": "SiLU (in place)",
    "aten::silu": "SiLU",
    "aten::add_": "residual adds",
    "aten::add": "residual adds",
    "aten::copy_": "copies (layout changes, sub-pixel interleave)",
    "aten::upsample_nearest2d": "nearest upsample",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (SDPA)",
    "aten::bmm": "attention / quantizer matmuls",
    "aten::mm": "attention / quantizer matmuls",
}


def profile_table(fn, x) -> Table:
    """One forward under torch.profiler, self CPU time grouped by what it is."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn(x)
        wall = time.perf_counter() - t0
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        group = _PROFILE_GROUPS.get(event.key, "everything else")
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e6
    total = sum(groups.values())
    out = Table(f"Where one forward of ours goes ({wall:.2f} s wall under the profiler)", ["part", "s", "share"])
    for group, secs in sorted(groups.items(), key=lambda kv: -kv[1]):
        out.row(group, f"{secs:.2f}", f"{100 * secs / total:.0f}%")
    return out


def _peak(name: str):
    for key, peaks in PEAKS.items():
        if key in name:
            return peaks
    return None


@contextlib.contextmanager
def _tf32(enabled: bool):
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@contextlib.contextmanager
def _islands(precision: str, enabled: bool | None):
    """Force the fp32 islands on or off for `precision` (None: the package default)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if enabled is None or dtype is None:
        yield
        return
    old = HALF_ISLANDS[dtype]
    HALF_ISLANDS[dtype] = enabled
    try:
        yield
    finally:
        HALF_ISLANDS[dtype] = old


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def matrix_bench(args) -> str:
    """Precisions x batch sizes on one device (meant for a GPU; `--tiny` dry-runs it on a CPU)."""
    torch.set_grad_enabled(False)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"CPU: {describe_cpu()}"
    peaks = _peak(name)
    config = tiny_config(RESTOREFORMER) if args.tiny else RESTOREFORMER
    size = config.resolution
    flop = FLOP_PER_512 * (size / 512) ** 2 if not args.tiny else float("nan")
    model = random_model(config).to(dev)
    twin = spandrel_twin(model).to(dev)
    twin_bf16 = copy.deepcopy(twin).to(torch.bfloat16)
    fast = optimize_for_inference(copy.deepcopy(model))  # NCHW on a GPU (prefers_channels_last)
    fast_cl = optimize_for_inference(copy.deepcopy(model), channels_last=True)
    cast_bf16 = cast_weights(copy.deepcopy(fast), "bf16")  # what weight_dtype bf16 loads
    cast_bf16_cl = cast_weights(copy.deepcopy(fast_cl), "bf16")
    half = ["bf16", "fp16"] if cuda else ["bf16"]
    compiled = torch.compile(fast, mode=args.compile_mode) if args.compile else None
    compiled_cast = torch.compile(cast_bf16, mode=args.compile_mode) if args.compile else None
    # Channels-last measured 4.51x compiled in an earlier build (islands on), NCHW 3.3-3.7x today.
    compiled_cl = torch.compile(fast_cl, mode=args.compile_mode) if args.compile else None
    compiled_cast_cl = (
        torch.compile(cast_weights(copy.deepcopy(fast_cl), "bf16"), mode=args.compile_mode) if args.compile else None
    )
    out_lines = []
    for batch in args.batches:
        x = photo_batch(batch, size).to(dev)
        with _tf32(False):
            ref = twin(x)[0].float()
            codes_ref = fast.encode(x)[0].indices

        ours, codes, spandrel = _ours_fn(x, dev), _codes_fn(x, dev), _spandrel_fn(x, twin)

        # name -> (forward, peak kind, codes or None)
        variants = {
            "spandrel fp32 (cuDNN TF32, torch default)": (spandrel(True), "tf32", None),
            "spandrel fp32 strict": (spandrel(False), "fp32", None),
            "spandrel bf16 (weights cast, as ComfyUI does)": (spandrel(False, twin_bf16, torch.bfloat16), "half", None),
            "ours fp32 strict": (ours(fast, "fp32"), "fp32", codes(fast, "fp32")),
            "ours fp32 (TF32)": (ours(fast, "fp32", tf32=True), "tf32", codes(fast, "fp32", True)),
        }
        for p in half:  # the defaults: bf16 without islands, fp16 with them
            variants[f"ours {p}"] = (ours(fast, p), "half", codes(fast, p))
        variants["ours bf16 with fp32 islands"] = (ours(fast, "bf16", islands=True), "half", None)
        variants["ours bf16, channels-last"] = (ours(fast_cl, "bf16"), "half", None)
        variants["ours bf16, cudnn.benchmark off"] = (ours(fast, "bf16", benchmark=False), "half", None)
        variants["ours bf16 weights cast (no autocast)"] = ((lambda x=x: cast_bf16(x.bfloat16())), "half", None)
        # Switches of issue 22, each on the bf16-weights network without torch.compile: channels-last
        # weights and maps, CUDA graphs (batch fixed per graph), fused GroupNorm+SiLU.
        x_cl = x.bfloat16().contiguous(memory_format=torch.channels_last)
        variants["ours bf16 weights cast, channels-last (no autocast)"] = (
            (lambda x_cl=x_cl: cast_bf16_cl(x_cl)), "half", None)
        variants["ours bf16 weights cast, CUDA graph"] = (cuda_graphed(cast_bf16, x.bfloat16()), "half", None)
        variants["ours bf16 weights cast, channels-last, CUDA graph"] = (cuda_graphed(cast_bf16_cl, x_cl), "half", None)
        variants["ours bf16 weights cast, fused GroupNorm+SiLU"] = (
            _fused_norm(dev, lambda x=x: cast_bf16(x.bfloat16())), "half", None)
        variants["ours bf16 weights cast, channels-last, fused GroupNorm+SiLU, CUDA graph"] = (
            _fused_norm(dev, cuda_graphed(cast_bf16_cl, x_cl)), "half", None)
        for p in half:
            variants[f"ours {p}, fp32 encoder (exact codes)"] = (ours(fast, p, exact_codes=True), "half", None)
        p = half[-1]
        variants[f"plain blocks {p} autocast (no islands)"] = (
            (lambda p=p, x=x: _plain_autocast(model, x, dev, p)), "half", codes(model, p))
        if compiled_cast is not None:
            variants[f"ours bf16 weights cast, torch.compile({args.compile_mode})"] = (
                (lambda x=x: compiled_cast(x.bfloat16())), "half", None)
        if compiled is not None:
            variants[f"ours bf16, torch.compile({args.compile_mode})"] = (ours(compiled, "bf16"), "half", None)
            variants[f"ours bf16, channels-last, torch.compile({args.compile_mode})"] = (
                ours(compiled_cl, "bf16"), "half", None)
            # Only the input channels-last (what the Compile node could do without changing the
            # shared network): a second graph of the same compiled module.
            variants[f"ours bf16 weights cast, channels-last input, torch.compile({args.compile_mode})"] = (
                (lambda x=x: compiled_cast(x.bfloat16().contiguous(memory_format=torch.channels_last))), "half", None)
            variants[f"ours bf16 weights cast, channels-last, torch.compile({args.compile_mode})"] = (
                (lambda x=x: compiled_cast_cl(x.bfloat16().contiguous(memory_format=torch.channels_last))), "half", None)
        if args.only:
            keep = ("spandrel fp32 (cuDNN TF32, torch default)", "spandrel fp32 strict")
            variants = {k: v for k, v in variants.items() if k in keep or k in args.only}
        errs, flips, finite, mem = {}, {}, {}, {}
        for vname, (fn, _, codes_fn) in list(variants.items()):
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            t0 = time.perf_counter()
            try:
                out = fn().float()
                sync(dev)
            except Exception as exc:  # one broken variant must not cost the whole one-shot run
                print(f"[{vname}: FAILED {type(exc).__name__}: {str(exc)[:500]}]", flush=True)
                del variants[vname]
                continue
            if "compile" in vname:
                print(f"[{vname}: compile + first call {time.perf_counter() - t0:.1f} s]", flush=True)
            mem[vname] = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else float("nan")
            finite[vname] = bool(torch.isfinite(out).all())
            errs[vname] = diff(out, ref)
            if codes_fn is not None:
                flips[vname] = f"{(codes_fn() != codes_ref).float().mean().item() * 100:.2f}%"
            else:
                flips[vname] = "0 (fp32 search)" if "exact" in vname else "-"
        times = time_variants({k: v[0] for k, v in variants.items()}, dev, args.rounds, warmup=2)
        base = times["spandrel fp32 (cuDNN TF32, torch default)"][0]
        base_strict = times["spandrel fp32 strict"][0]
        table = Table(
            f"{name}, torch {torch.__version__}, batch {batch}, {size}x{size} ({args.rounds} interleaved rounds, median)",
            ["variant", "ms / batch", "images/s", "vs spandrel fp32 (TF32)", "vs spandrel fp32 strict", "TFLOP/s",
             "% of peak", "max abs diff", "mean abs diff", "codes flipped", "finite", "peak GiB"],
        )
        for vname, (med, _mn, _spread) in times.items():
            tflops = flop * batch / med / 1e12
            kind = variants[vname][1]
            pk = None if peaks is None else {"half": peaks[0], "tf32": peaks[1], "fp32": peaks[2]}[kind]
            pct = "" if pk is None else f"{100 * tflops / pk:.1f}% of {pk:g} ({kind})"
            e = errs[vname]
            table.row(
                vname, f"{med * 1e3:.1f}", f"{batch / med:.1f}", f"{base / med:.2f}x", f"{base_strict / med:.2f}x",
                f"{tflops:.1f}", pct, f"{e[0]:.2e}", f"{e[1]:.2e}", flips[vname], finite[vname], f"{mem[vname]:.2f}",
            )
        out_lines.append(table.text())
        _append(args.out, table.text())  # now, so a later time-out loses nothing
    return "\n".join(out_lines)


def _fused_norm(dev: torch.device, fn):
    """fn run with FUSED_NORM_SILU on for dev's type (its graph, if any, captured that way too)."""
    def run(*args):
        old = FUSED_NORM_SILU.get(dev.type)
        FUSED_NORM_SILU[dev.type] = True
        try:
            return fn(*args)
        finally:
            if old is None:
                FUSED_NORM_SILU.pop(dev.type, None)
            else:
                FUSED_NORM_SILU[dev.type] = old

    return run


def _append(path: str | None, text: str) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(text + "\n")


def _ours_fn(x, dev):
    def ours(m, precision, tf32=False, exact_codes=False, islands=None, benchmark=True):
        def fn():
            with _tf32(tf32), _islands(precision, islands), _cudnn_benchmark(benchmark), \
                    PrecisionPlan.autocast_to(precision).scope(dev):
                if exact_codes:
                    with PrecisionPlan.autocast_to("fp32").scope(dev):
                        q, skips = m.encode(x)
                    return m.decode(q.z_q, skips)
                return m(x)

        return fn

    return ours


def _codes_fn(x, dev):
    def codes(m, precision, tf32=False):
        def fn():
            with _tf32(tf32), PrecisionPlan.autocast_to(precision).scope(dev):
                return m.encode(x)[0].indices

        return fn

    return codes


def _spandrel_fn(x, twin):
    def spandrel(tf32, net=twin, dtype=torch.float32):
        def fn():
            with _tf32(tf32):
                return net(x.to(dtype))[0]

        return fn

    return spandrel


def _plain_autocast(model, x, dev, precision):
    with PrecisionPlan.autocast_to(precision).scope(dev):
        return model(x)


def activation_ranges(args) -> str:
    """Largest |activation| per block output in fp32 (where fp16's 65504 could be reached)."""
    torch.set_grad_enabled(False)
    dev = torch.device(args.device)
    config = tiny_config(RESTOREFORMER) if args.tiny else RESTOREFORMER
    model = random_model(config).to(dev)
    x = photo_batch(1, config.resolution).to(dev)
    amax: dict[str, float] = {}

    def record(name):
        def hook(_module, _inputs, out):
            if isinstance(out, torch.Tensor):
                amax[name] = max(amax.get(name, 0.0), out.detach().abs().amax().item())

        return hook

    hooks = [  # GroupNorm outputs are normalised: the stream and the convolutions are what can overflow
        m.register_forward_hook(record(n))
        for n, m in model.named_modules()
        if n and not isinstance(m, torch.nn.GroupNorm)
    ]
    model(x)
    for h in hooks:
        h.remove()
    top = sorted(amax.items(), key=lambda kv: -kv[1])[:8]
    table = Table("Largest |activation| in fp32 (random weights, photo input)", ["module output", "max abs value"])
    for n, v in top:
        table.row(n, f"{v:.1f}")
    return table.text()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--suite", default=None, choices=["cpu", "matrix"], help="default: cpu on cpu, matrix on cuda")
    p.add_argument("--tiny", action="store_true", help="tiny geometry (a dry run of the suite)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (cpu 5, cuda 20)")
    p.add_argument("--plain", action=argparse.BooleanOptionalAction, default=True, help="also time our plain path")
    p.add_argument("--ablate", action="store_true", help="CPU: time each convolution route forced everywhere, and other ablations")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                   help="CPU: time ONNX Runtime on the same weights (needs the bench extra)")
    p.add_argument("--onnx-threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: torch's)")
    p.add_argument("--recalibrate", action="store_true",
                   help="CPU: measure the convolution routes afresh instead of reading the user's cache")
    p.add_argument("--profile", action="store_true", help="CPU: also break one forward of ours down by operation")
    p.add_argument("--compile", action="store_true", help="GPU: also time torch.compile of the fast model")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--only", nargs="+", default=None, help="matrix: time only variants containing these words (and the spandrel fp32 baselines)")
    p.add_argument("--no-ranges", action="store_true", help="matrix: skip the activation-range table")
    p.add_argument("--bf16-islands", action="store_true", help="keep the fp32 islands for bf16 too (package default: off)")
    p.add_argument("--out", default=None, help="append the markdown tables to this file")
    args = p.parse_args(argv)
    if args.bf16_islands:
        HALF_ISLANDS[torch.bfloat16] = True
    if args.rounds is None:
        args.rounds = 5 if args.device == "cpu" else 20
    if args.suite is None:
        args.suite = "cpu" if args.device == "cpu" else "matrix"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    if args.suite == "cpu":
        text = cpu_bench(args)
        _append(args.out, text)
    else:
        text = matrix_bench(args)  # appends each table as it is done
        if not args.no_ranges:
            ranges = activation_ranges(args)
            _append(args.out, ranges)
            text += "\n" + ranges
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
