"""The `python -m restoreformer_node` command line.

Subcommands are listed once, in SUBCOMMANDS, as (name, "module:function") pairs. The function
receives argparse's subparsers object, adds its parser and sets `func` (args -> exit status) as
a default. Choices and defaults come from restoreformer_node.options, shared with the nodes.
Heavy imports belong inside the `func`, so `--help` and other subcommands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

SUBCOMMANDS: list[tuple[str, str]] = [
    ("convert", "restoreformer_node.cli.convert:add_parser"),
    ("info", "restoreformer_node.cli.info:add_parser"),
    ("restore", "restoreformer_node.cli.restore:add_parser"),
    ("atlas", "restoreformer_node.cli.atlas:add_parser"),
]


def _resolve(spec: str) -> Callable[[argparse._SubParsersAction], None]:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (status 2), like every other refusal."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m restoreformer_node",
        description="RestoreFormer / RestoreFormer++ face restoration tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, spec in SUBCOMMANDS:
        _resolve(spec)(subparsers)
    return parser


# Process settings PyTorch's CPU runtime reads once: libgomp when torch loads, c10 at its first
# allocation (what each one is worth: bench/README.md, "CPU start-up settings").
CPU_RUNTIME_DEFAULTS = {
    # OpenMP's idle workers sleep instead of spin-waiting, so NNPACK's own thread pool, which runs
    # the big convolutions, gets the cores.
    "OMP_WAIT_POLICY": "PASSIVE",
    # Buffers of 2 MB or more are backed by transparent huge pages: fewer page faults on the
    # 64-128 MB feature maps that every layer at 512x512 allocates.
    "THP_MEM_ALLOC_ENABLE": "1",
}


def tune_cpu_runtime() -> None:
    """Set CPU_RUNTIME_DEFAULTS before the first `import torch`, leaving a user's own values alone.

    Once torch is loaded these settings no longer take effect, so nothing is set then.
    """
    if "torch" not in sys.modules:
        for name, value in CPU_RUNTIME_DEFAULTS.items():
            os.environ.setdefault(name, value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand. Exit status: 0 done, 1 some files (or faces) failed while the rest were
    done, 2 bad arguments or input refused before any work (one line on stderr, nothing written)."""
    tune_cpu_runtime()
    args = build_parser().parse_args(argv)
    from ..weights import WeightLoadError
    from .arguments import UsageError
    from .outputs import OutputError

    try:
        return int(args.func(args) or 0)
    except (UsageError, WeightLoadError, OutputError) as error:
        print("error: " + " ".join(str(error).split("\n")), file=sys.stderr)
        return 2
    except OSError as error:  # a file that could not be read or written outside the checks above
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
