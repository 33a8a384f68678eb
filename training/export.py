"""Export a training checkpoint's network as `.safetensors` the nodes load.

The checkpoint records which registered module is the network and its RestoreFormerConfig
(`Task.export_info`); the file gets the model core's metadata (format, variant, config JSON), so
`restoreformer_node.weights.load_restoreformer` rebuilds exactly that network, stage-1
dictionaries (fusion "self") included.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from restoreformer_node.model import RestoreFormerConfig

from .errors import TrainingFileError
from .safe_io import read_checkpoint


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, config: RestoreFormerConfig,
                 source: str | None = None) -> Path:
    """Write `state_dict` as .safetensors with the model core's metadata (atomic, checked)."""
    from restoreformer_node.weights import save_restoreformer

    return save_restoreformer(state_dict, path, config, source=source)


def export_checkpoint(checkpoint: str | Path, out: str | Path, module: str | None = None) -> Path:
    """Checkpoint written by the Trainer -> .safetensors of its network. Returns the path.

    The checkpoint is read weights-only (training/safe_io.py): a file that carries code is refused
    without running it. Given a run folder, the newest intact checkpoint is exported and any newer
    damaged one is named on stderr."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a run folder or its checkpoints folder: take the newest intact one
        from .trainer import newest_intact_checkpoint

        folder = checkpoint / "checkpoints" if (checkpoint / "checkpoints").is_dir() else checkpoint
        checkpoint, state, problems = newest_intact_checkpoint(folder)
        for err in problems:
            print(f"warning: export skips {err.what} '{err.path}': {err.problem}", file=sys.stderr)
        if problems:
            print(f"warning: exporting the newest intact checkpoint '{checkpoint}' instead", file=sys.stderr)
    else:
        state = read_checkpoint(checkpoint, fix_damaged="pass another step_*.pt of the run, or the run folder "
                                "(its newest intact checkpoint is taken).")
    info = state.get("export")
    if not info:
        raise TrainingFileError(checkpoint, "training checkpoint", f"it names no exportable network (task "
                                f"{state.get('task')!r}).", "export a stage1 or stage2 checkpoint.")
    name = module or info["module"]
    if name not in state["modules"]:
        raise TrainingFileError(checkpoint, "training checkpoint", f"it has no module {name!r}; it has "
                                f"{sorted(state['modules'])}.", "pass one of those to --module.")
    config = RestoreFormerConfig.from_json(info["config"])
    return save_weights(state["modules"][name], out, config, source=f"{checkpoint.name}@step{state['step']}")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="step_*.pt file, or a run folder (newest checkpoint)")
    parser.add_argument("--out", required=True, help="output .safetensors path")
    parser.add_argument("--module", default=None, help="registered module to export (default: the task's network)")


def main(args) -> int:
    path = export_checkpoint(args.checkpoint, args.out, args.module)
    print(f"wrote {path}")
    return 0
