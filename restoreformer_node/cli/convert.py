"""`python -m restoreformer_node convert INPUT OUTPUT.safetensors`: any accepted weight file as
safetensors with metadata."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import detect_config, read_state_dict, save_restoreformer
    from ..weights.detect import require_fit

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
