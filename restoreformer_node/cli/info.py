"""`python -m restoreformer_node info FILE`: a weight file's layout, variant, size and strict check."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="show a weight file's layout, variant and size")
    p.add_argument("input", type=Path, help="weight file to inspect")
    p.epilog = "Exit status: 0 the strict check passes, 1 it fails (the problems are listed), 2 the file is refused."
    p.add_argument("--keys", action="store_true", help="also list every tensor name and shape")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import read_checked
    from .arguments import readable_file

    # The strict check `restore` and `convert` apply: what passes here loads there.
    checked = read_checked(readable_file("FILE", args.input))
    state_dict, layout, metadata = checked.state_dict, checked.layout, checked.metadata
    config, problems = checked.config, checked.problems
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
