"""Does the optional torch.compile path of `restore_crops` pay, and does it restore like eager?

    python -m bench.compile_restore --device cuda --precisions bf16 --modes default

Random weights of the real architecture stand in for the published ones (no downloads). The
network is prepared as the loader node prepares it (`runtime.prepare`). For each precision
and compile mode it restores the same crops eagerly and compiled, in chunks of `--chunk` with the
last chunk padded, and prints: compile + first call time, the steady time per crop of both paths
(median of interleaved rounds) and their ratio, the graphs TorchDynamo captured (graph breaks
show up as more than one), whether the path fell back to eager, and the difference from eager on
the [0, 1] scale. `--tiny` runs the tiny test geometry (a CPU smoke run of the script itself).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from restoreformer_node.model import RESTOREFORMER, tiny_config
from restoreformer_node.options import COMPILE_MODES
from restoreformer_node.runtime import (
    CompileOptions,
    compile_failure,
    compiled_batch,
    network_dtype,
    plan_precision,
    prepare,
    restore_crops,
)
from restoreformer_node.testing import random_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, torch.Tensor]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--precisions", nargs="+", default=["bf16"])
    p.add_argument("--modes", nargs="+", default=["default"], choices=COMPILE_MODES)
    p.add_argument("--layouts", nargs="+", default=["nchw"], choices=["nchw", "channels-last"],
                   help="input layout of the compiled graph (CompileOptions.channels_last)")
    p.add_argument("--weight-dtype", default="fp32", choices=["fp32", "bf16"],
                   help="the network's weights, as Load Model (RestoreFormer)'s weight_dtype stores them")
    p.add_argument("--crops", type=int, default=20, help="crops per restore call (default 20)")
    p.add_argument("--chunk", type=int, default=8, help="memory chunk size (default 8)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tiny", action="store_true", help="tiny test geometry (CPU smoke run)")
    p.add_argument("--out", help="append the table to this markdown file")
    args = p.parse_args(argv)

    from torch._dynamo.utils import counters

    device = torch.device(args.device)
    config = tiny_config(RESTOREFORMER) if args.tiny else RESTOREFORMER
    net = prepare(random_model(config).to(device), device, args.weight_dtype).model  # as the loader node
    g = torch.Generator().manual_seed(0)
    side = config.resolution
    small = torch.rand(args.crops, 3, side // 16, side // 16, generator=g)
    crops = torch.nn.functional.interpolate(small, size=(side, side), mode="bicubic").clamp(0, 1).to(device)
    batch = compiled_batch(args.crops, args.chunk)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"### restore_crops with torch.compile: {name}, torch {torch.__version__}, "
        f"{'tiny' if args.tiny else '512x512'}, {args.crops} crops, chunk {args.chunk} -> compiled batch {batch}, "
        f"{args.weight_dtype} weights",
        "",
        "| precision | mode | input layout | compile + first call s | eager ms/crop | compiled ms/crop | speed-up | graphs | fell back | max abs diff | mean abs diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dtype = network_dtype(net)
    for precision in args.precisions:
        plan = plan_precision(precision, device, dtype)
        if plan.note:
            print(plan.note)
        ran = plan.precision

        def eager(precision=ran):
            return restore_crops(net, crops, precision=precision, chunk_size=args.chunk)

        eager()  # warm-up (cuDNN autotune, the fast upsample's kernels)
        for mode, layout in [(m, lay) for m in args.modes for lay in args.layouts]:
            # on_cpu: this bench measures compiling, also where the nodes would skip it (a CPU).
            options = CompileOptions(mode=mode, on_cpu=True, channels_last=layout == "channels-last")

            def compiled(precision=ran, options=options):
                return restore_crops(net, crops, precision=precision, chunk_size=args.chunk, compile_options=options)

            counters.clear()
            first, _ = _timed(compiled, device)
            graphs = counters["stats"]["unique_graphs"]
            times_e, times_c = [], []
            for _ in range(args.rounds):  # interleaved, so clock and thermal drift hit both
                te, ref = _timed(eager, device)
                tc, out = _timed(compiled, device)
                times_e.append(te)
                times_c.append(tc)
            recompiled = counters["stats"]["unique_graphs"] - graphs
            e = statistics.median(times_e) / args.crops * 1e3
            c = statistics.median(times_c) / args.crops * 1e3
            diff = (out - ref).abs()
            failure = compile_failure(net, options)
            lines.append(
                f"| {ran} | {mode} | {layout} | {first:.1f} | {e:.2f} | {c:.2f} | {e / c:.2f}x | {graphs}"
                f"{f' (+{recompiled} later)' if recompiled else ''} | {'yes' if failure else 'no'} | "
                f"{diff.max().item():.2e} | {diff.mean().item():.2e} |"
            )
            print(lines[-1], flush=True)
            if failure:
                print(failure)
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
