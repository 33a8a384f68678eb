"""`python -m training samples`: a grid of (ground truth, degraded) pairs for a dataset and config.

Reads the config's `data` and `degradation` sections (any stage's YAML; paper defaults when a
section is absent) and writes one PNG: each row shows GT | degraded for consecutive samples.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .config import DataConfig, DegradationConfig, apply_degradation_preset, apply_overrides, from_dict
from .data import FaceDataset, SampleKey
from .degradation import Degradation


def sample_pairs(data: DataConfig, degradation: DegradationConfig, count: int, seed: int = 0, epoch: int = 0):
    """[count, 2, 3, S, S]: (gt, lq) for images 0..count-1 (wrapping) in sorted order."""
    dataset = FaceDataset(data, Degradation(degradation), seed=seed)
    pairs = []
    for i in range(count):
        item = dataset[SampleKey(i % len(dataset), epoch + i // len(dataset), i)]
        pairs.append(torch.stack([item["gt"], item["lq"]]))
    return torch.stack(pairs)


def write_grid(pairs: torch.Tensor, path: str | Path, per_row: int = 4) -> Path:
    from torchvision.utils import save_image

    flat = pairs.flatten(0, 1)  # gt0, lq0, gt1, lq1, ...
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(flat, str(path), nrow=2 * per_row, padding=2, pad_value=1.0)
    return path


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML with data (and optionally degradation) sections")
    parser.add_argument("--out", default="degradation_samples.png", help="output PNG")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None, help="default: run.seed of the config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")


def main(args) -> int:
    raw = apply_overrides(args.config, args.set)
    data = from_dict(DataConfig, raw.get("data", {}), "data")
    degradation = from_dict(DegradationConfig, apply_degradation_preset(raw.get("degradation", {})), "degradation")
    seed = args.seed if args.seed is not None else int(raw.get("run", {}).get("seed", 0))
    path = write_grid(sample_pairs(data, degradation, args.count, seed), args.out)
    print(f"wrote {path}")
    return 0
