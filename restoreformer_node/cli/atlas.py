"""`python -m restoreformer_node atlas`: the dictionary atlas of a weight file, as a PNG."""

from __future__ import annotations

import argparse
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

    from ..inspection.atlas import build_atlas, parse_entries
    from ..runtime import prepare
    from .arguments import UsageError, output_file, readable_file, torch_device, whole_number
    from .images import encode_png
    from .outputs import OutputFolder

    model_path = readable_file("MODEL", args.model)
    out = output_file("--out", args.out, ".png", replace=True, flag="")
    device = torch_device(args.device)
    whole_number("--cells", args.cells, 1, 4)
    whole_number("--limit", args.limit, 0)
    whole_number("--columns", args.columns, 0)
    whole_number("--scale", args.scale, 1, 64)
    whole_number("--gap", args.gap, 0, 64)
    whole_number("--batch-size", args.batch_size, 1)
    model = prepare(model_path, device).model  # as the loader node prepares it
    try:
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
    except ValueError as error:  # an --entries subset or layout the dictionary cannot give
        raise UsageError(str(error)) from None
    pixels = atlas.image.clamp(0, 1).permute(1, 2, 0).float().cpu()
    OutputFolder(out.parent, overwrite=True, protected=[model_path]).write(out.resolve(), encode_png(pixels, "RGB"))
    rows = -(-atlas.entries.numel() // atlas.columns)
    print(
        f"wrote {out}: {atlas.entries.numel()} of {model.config.n_embed} entries, "
        f"{atlas.columns} x {rows} tiles of {atlas.tile} px ({args.order} order)"
    )
    return 0
