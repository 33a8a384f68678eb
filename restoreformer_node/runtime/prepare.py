"""One way to make a network ready for inference, shared by the loader node, the command line and
the benchmarks: load -> weight dtype -> fast blocks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..model import RestoreFormer
from ..weights import load_restoreformer
from .fast import optimize_for_inference, prefers_channels_last
from .precision import cast_weights, plan_weight_dtype


@dataclass(frozen=True)
class Prepared:
    model: RestoreFormer  # in eval mode, fast blocks installed
    weight_dtype: str  # the dtype its weights are held in ("fp32" or "bf16")
    note: str | None  # why that is not the weight dtype that was asked for (None when it is)


def prepare(
    source: str | os.PathLike | RestoreFormer,
    device: torch.device | str = "cpu",
    weight_dtype: str = "fp32",
    *,
    run_device: torch.device | str | None = None,
) -> Prepared:
    """A network ready to restore: read from the weight file `source` onto `device` (a network
    already built is used as it is, in place), its weights held in the dtype `plan_weight_dtype`
    allows on `run_device`, and its blocks switched to the fast forms laid out for `run_device`.

    `run_device` is where the network will run (default `device`); ComfyUI loads onto its offload
    device and runs on the GPU, so the layout follows the GPU. Weight files are read without
    running any code they carry (restoreformer_node.weights).
    """
    run_device = torch.device(run_device if run_device is not None else device)
    held, note = plan_weight_dtype(weight_dtype, run_device)
    model = source if isinstance(source, RestoreFormer) else load_restoreformer(source, device=device)
    cast_weights(model, held)
    optimize_for_inference(model, channels_last=prefers_channels_last(run_device))
    return Prepared(model.eval(), held, note)
