"""Export a training checkpoint's network as `.safetensors` the nodes load.

The checkpoint records which registered module is the network and its RestoreFormerConfig
(`Task.export_info`); the file gets the model core's metadata (format, variant, config JSON), so
`restoreformer_node.weights.load_restoreformer` rebuilds exactly that network, stage-1
dictionaries (fusion "self") included.
"""

from __future__ import annotations

from pathlib import Path

import torch

from restoreformer_node.model import RestoreFormerConfig


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, config: RestoreFormerConfig,
                 source: str | None = None) -> Path:
    """Write `state_dict` as .safetensors with the model core's metadata (atomic, checked)."""
    from restoreformer_node.weights import save_restoreformer

    return save_restoreformer(state_dict, path, config, source=source)


def export_checkpoint(checkpoint: str | Path, out: str | Path, module: str | None = None) -> Path:
    """Checkpoint written by the Trainer -> .safetensors of its network. Returns the path."""
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():  # a run folder or its checkpoints folder: take the newest
        from .trainer import list_checkpoints

        folder = checkpoint / "checkpoints" if (checkpoint / "checkpoints").is_dir() else checkpoint
        found = list_checkpoints(folder)
        if not found:
            raise FileNotFoundError(f"no step_*.pt checkpoint in {str(folder)!r}")
        checkpoint = found[-1][1]
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    info = state.get("export")
    if not info:
        raise ValueError(f"checkpoint {str(checkpoint)!r} names no exportable network (task {state.get('task')!r})")
    name = module or info["module"]
    if name not in state["modules"]:
        raise KeyError(f"checkpoint has no module {name!r}; it has {sorted(state['modules'])}")
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
