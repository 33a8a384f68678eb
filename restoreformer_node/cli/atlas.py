"""`python -m restoreformer_node atlas`: the dictionary atlas of a weight file, as a PNG."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "atlas",
        help="decode every dictionary entry of a weight file and save the tiles as one PNG",
        description=(
            "Decode each HQ-dictionary entry through the model's own decoder (a latent grid filled with "
            "that entry, attention over the prior stream, as the stage-1 dictionary network decodes) and "
            "lay the patches out as one image."
        ),
    )
    p.add_argument("model", type=Path, help="RestoreFormer / RestoreFormer++ weight file")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write")
    p.add_argument("--cells", type=int, default=1, help="latent cells per tile side, 1-4 (default 1)")
    p.add_argument("--order", choices=("index", "similarity"), default="index", help="tile order")
    p.add_argument("--entries", default="", help="subset, e.g. '0-63, 100, 512-' (default: all)")
    p.add_argument("--limit", type=int, default=0, help="show at most this many tiles (0: all)")
    p.add_argument("--columns", type=int, default=0, help="tiles per row (0: near-square)")
    p.add_argument("--scale", type=int, default=1, help="enlarge tiles by pixel repetition")
    p.add_argument("--gap", type=int, default=1, help="pixels between tiles")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="entries decoded per call")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from ..inspection.atlas import build_atlas, parse_entries
    from ..runtime import prepare

    if args.out.suffix.lower() != ".png":
        print(f"error: --out must end in .png (got {args.out})", file=sys.stderr)
        return 2
    try:
        model = prepare(args.model, args.device).model  # as the loader node prepares it
        atlas = build_atlas(
            model,
            cells=args.cells,
            order=args.order,
            subset=parse_entries(args.entries, model.config.n_embed),
            limit=args.limit,
            columns=args.columns,
            gap=args.gap,
            scale=args.scale,
            cache=None,
            batch_size=args.batch_size,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    pixels = (atlas.image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(args.out)
    rows = -(-atlas.entries.numel() // atlas.columns)
    print(
        f"wrote {args.out}: {atlas.entries.numel()} of {model.config.n_embed} entries, "
        f"{atlas.columns} x {rows} tiles of {atlas.tile} px ({args.order} order)"
    )
    return 0
