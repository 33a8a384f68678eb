"""The `python -m restoreformer_node` command line.

Subcommands are listed once, in SUBCOMMANDS, as (name, "module:function") pairs. The function
receives argparse's subparsers object, adds its parser and sets `func` (args -> exit status) as
a default. Another module adds a subcommand with one line here, e.g.
    ("restore", "restoreformer_node.pipeline.cli:add_restore_parser"),
Heavy imports belong inside the `func`, so `--help` and other subcommands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

SUBCOMMANDS: list[tuple[str, str]] = [
    ("convert", "restoreformer_node.cli:add_convert_parser"),
    ("info", "restoreformer_node.cli:add_info_parser"),
    ("restore", "restoreformer_node.restore_cli:add_restore_parser"),
    ("atlas", "restoreformer_node.atlas_cli:add_atlas_parser"),
]


def _resolve(spec: str) -> Callable[[argparse._SubParsersAction], None]:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m restoreformer_node",
        description="RestoreFormer / RestoreFormer++ face restoration tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, spec in SUBCOMMANDS:
        _resolve(spec)(subparsers)
    return parser


# Process settings PyTorch's CPU runtime reads once: libgomp when torch loads, c10 at its first
# allocation. Measured on the 2-core bench VM (bench/README.md, "Measured here (CPU)").
CPU_RUNTIME_DEFAULTS = {
    # OpenMP's idle workers sleep instead of spin-waiting, so NNPACK's own thread pool, which runs
    # the big convolutions, gets the cores.
    "OMP_WAIT_POLICY": "PASSIVE",
    # Buffers of 2 MB or more are backed by transparent huge pages: fewer page faults on the
    # 64-128 MB feature maps that every layer at 512x512 allocates.
    "THP_MEM_ALLOC_ENABLE": "1",
}
# Together: 2.86 s per forward against 3.40 s with neither and 3.45 s with the first alone, 2.10x
# spandrel's forward (bench/cpu_env.sh, one run on the 2-core VM).


def tune_cpu_runtime() -> None:
    """Set CPU_RUNTIME_DEFAULTS before the first `import torch`, leaving a user's own values alone.

    Once torch is loaded these settings no longer take effect, so nothing is set then.
    """
    if "torch" not in sys.modules:
        for name, value in CPU_RUNTIME_DEFAULTS.items():
            os.environ.setdefault(name, value)


def main(argv: Sequence[str] | None = None) -> int:
    tune_cpu_runtime()
    args = build_parser().parse_args(argv)
    from .weights import WeightLoadError

    try:
        return int(args.func(args) or 0)
    except WeightLoadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


# --- convert -------------------------------------------------------------------------------


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="write any accepted weight file as .safetensors with metadata",
        description=(
            "Read a RestoreFormer weight file (official Lightning .ckpt, GFPGAN .pth, bare state dict "
            "or .safetensors) without running any code it carries, check it strictly, and write "
            "it as .safetensors with the variant, source file name and tensor count in the metadata."
        ),
    )
    p.add_argument("input", type=Path, help="weight file to read")
    p.add_argument("output", type=Path, help="file to write, *.safetensors")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from .weights import detect_config, read_state_dict, save_restoreformer
    from .weights.detect import require_fit

    if args.output.suffix.lower() != ".safetensors":
        print(f"error: OUTPUT must end in .safetensors (got {args.output})", file=sys.stderr)
        return 2
    if args.output.exists() and not args.force:
        print(f"error: {args.output} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    if args.output.exists() and args.output.resolve() == args.input.resolve():
        print("error: OUTPUT is the INPUT file; write to another name", file=sys.stderr)
        return 2
    state_dict, layout, metadata = read_state_dict(args.input)
    config = detect_config(state_dict, metadata, source=str(args.input), layout=layout)
    require_fit(state_dict, config, str(args.input), layout)
    save_restoreformer(state_dict, args.output, config, source=args.input)
    params = sum(t.numel() for t in state_dict.values())
    print(
        f"wrote {args.output}\n"
        f"  variant: {config.variant} ({config.heads} heads)\n"
        f"  tensors: {len(state_dict)}\n"
        f"  parameters: {params:,}\n"
        f"  read from: {args.input.name} ({layout})"
    )
    return 0


# --- info ----------------------------------------------------------------------------------


def add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="show a weight file's layout, variant and size")
    p.add_argument("input", type=Path, help="weight file to inspect")
    p.add_argument("--keys", action="store_true", help="also list every tensor name and shape")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from .weights import detect_config, read_state_dict, state_dict_problems

    state_dict, layout, metadata = read_state_dict(args.input)
    config = detect_config(state_dict, metadata, source=str(args.input), layout=layout)
    problems = state_dict_problems(state_dict, config)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in state_dict.values()})
    lines = [
        f"file: {args.input}",
        f"layout: {layout}",
        f"variant: {config.variant} ({config.heads} heads)",
        f"geometry: ch {config.ch}, ch_mult {config.ch_mult}, codebook {config.n_embed}x{config.embed_dim}, "
        f"decoder attention at {config.decoder_attn_resolutions} px",
        f"tensors: {len(state_dict)} ({', '.join(dtypes)})",
        f"parameters: {sum(t.numel() for t in state_dict.values()):,}",
        "strict check: " + ("passes" if not problems else "; ".join(problems)),
    ]
    lines += [f"metadata {k}: {v}" for k, v in sorted(metadata.items()) if k != "config"]
    if args.keys:
        lines += [f"{k}\t{tuple(v.shape)}" for k, v in state_dict.items()]
    print("\n".join(lines))
    return 0 if not problems else 1
