"""Command line: `python -m training <command> ...` (also under torchrun for training commands)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module with add_arguments(parser) and main(args) -> int, one-line help).
# Adding a command is one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "stage1": ("training.stage1", "train the HQ dictionary (VQGAN, Sec. 3.2)"),
    "samples": ("training.samples", "write a grid of (ground truth, degraded) samples"),
    "export": ("training.export", "export a checkpoint's network to .safetensors for the nodes"),
    "stage2": ("training.stage2", "train RestoreFormer / RF++ or a Table-4 ablation (Sec. 3.1, Eq. 13)"),
    "landmarks": ("training.landmarks", "detect five landmarks per dataset image (for the component losses)"),
    "evaluate": ("training.evaluate", "restore a test set and report PSNR, SSIM, FID, LPIPS and IDD"),
    "demo-data": ("training.demo_data", "write a few synthetic faces to try the tiny CPU presets on"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    args = parser.parse_args(argv)
    from .config import ConfigError
    from .errors import DataError, TrainingFileError, one_line
    from .trainer import NonFiniteLossError

    try:
        return int(args._module.main(args) or 0)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except (ConfigError, FileNotFoundError, TrainingFileError, DataError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    finally:
        from .distributed import cleanup

        cleanup()


if __name__ == "__main__":
    sys.exit(main())
