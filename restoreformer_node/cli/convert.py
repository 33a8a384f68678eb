"""`python -m restoreformer_node convert INPUT OUTPUT.safetensors`: any accepted weight file as
safetensors with metadata."""

from __future__ import annotations

import argparse
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
    from ..weights import read_checked, save_restoreformer
    from .arguments import UsageError, output_file, readable_file
    from .outputs import same_file

    source = readable_file("INPUT", args.input)
    output = output_file("OUTPUT", args.output, ".safetensors", replace=args.force, flag="--force")
    if same_file(output, source):
        raise UsageError(f"OUTPUT {output} is the INPUT file; write to another name")
    checked = read_checked(source)  # the strict check `restore` applies, before anything is written
    checked.require_fit(str(source))
    save_restoreformer(checked.state_dict, output, checked.config, source=source)
    config, state_dict = checked.config, checked.state_dict
    params = sum(t.numel() for t in state_dict.values())
    print(
        f"wrote {output}\n"
        f"  variant: {config.variant} ({config.heads} heads)\n"
        f"  tensors: {len(state_dict)}\n"
        f"  parameters: {params:,}\n"
        f"  read from: {source.name} ({checked.layout})"
    )
    return 0
