"""Which precision runs, and running the network at it: one policy for the nodes, the command line
and the benchmarks.

Two choices reach the network:

- the weight dtype (`plan_weight_dtype`): fp32, or bf16 on a GPU with bf16 support (native bf16
  kernels, half the memory). A CPU keeps fp32: its fast convolutions (NNPACK) are fp32 only and
  bf16 convolutions are slow on most CPUs. The dictionary stays fp32 whatever the weights are
  (`cast_weights`): the nearest-entry search runs in fp32, and rounded entries would move codes.
- the arithmetic (`plan_precision`): a network whose weights are bf16 runs natively in bf16 whatever
  is asked; over fp32 weights, bf16 / fp16 run through autocast on an accelerator, a CPU runs fp32,
  and a GPU without bf16 runs fp16 instead.

The answer is a `PrecisionPlan`: the precision that runs, whether through autocast, and the note to
show when it is not what was asked. Tests and benchmarks that want reduced precision on a CPU build
a plan themselves (`PrecisionPlan("bf16", autocast=True)`).

Reduced precision keeps fp32 where range or ties matter:
- the dictionary search is fp32 at every precision (`VectorQuantizer.nearest` switches autocast
  off): squared distances reach |z|^2 + |e|^2, past fp16's 65504 on real features, and a flipped
  nearest entry changes the output far more than rounding;
- fp16 also keeps fp32 islands (`fast.HALF_ISLANDS`): GroupNorm statistics and outputs, the residual
  stream between blocks, and power-of-two rescaled inputs of the convolutions that read the raw
  stream (see runtime/fast.py); attention accumulates q.k and the softmax in fp32 in the fused
  kernels. bf16 has fp32's range, so it runs every map in bf16 by default (half the memory
  traffic of the norm and elementwise passes).
These islands live in the fast blocks, so `run` switches a network to them first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..model import RestoreFormer
from ..options import PRECISIONS, WEIGHT_DTYPES
from .fast import is_optimized, optimize_for_inference, prefers_channels_last

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NAMES: dict[torch.dtype, str] = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class PrecisionPlan:
    """What runs: `precision` ("fp32", "bf16", "fp16"), through autocast over fp32 weights or (when
    `autocast` is False) in the weights' own dtype, and `note`, the reason when that is not what
    was asked (None when it is)."""

    precision: str
    autocast: bool = False
    note: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in DTYPES:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    @classmethod
    def autocast_to(cls, precision: str) -> PrecisionPlan:
        """Autocast to `precision` over fp32 weights on any device (fp32: autocast off), bypassing
        the policy: for tests and benchmarks that measure reduced precision where users get fp32."""
        return cls(precision, autocast=precision != "fp32")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    @contextlib.contextmanager
    def scope(self, device: torch.device | str) -> Iterator[None]:
        """Autocast to `dtype`, or autocast switched off (so an outer scope cannot leak in)."""
        kind = torch.device(device).type
        if self.autocast and self.precision != "fp32":
            with torch.autocast(kind, dtype=self.dtype):
                yield
        else:
            with torch.autocast(kind, enabled=False):
                yield


def network_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the network's (first) weights: what its inputs are cast to."""
    for p in model.parameters():
        return p.dtype
    return torch.float32


def plan_precision(
    requested: str, device: torch.device | str, weight_dtype: torch.dtype = torch.float32, half_ok: bool = True
) -> PrecisionPlan:
    """The precision that will really run on `device` for a network whose weights are `weight_dtype`.
    `half_ok` False (a network spandrel marks unsafe in fp16, e.g. GFPGAN) turns fp16 into bf16 where
    the GPU has it, else fp32."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    device = torch.device(device)
    if weight_dtype != torch.float32:
        held = NAMES.get(weight_dtype)
        if held is None:
            raise ValueError(f"the network's weights are {weight_dtype}; expected one of {WEIGHT_DTYPES}")
        note = None
        if held != requested:
            note = (
                f"the network's weights are {held}, so it ran in {held}, not {requested} (load the model "
                "with weight_dtype fp32 to choose the precision here)"
            )
        return PrecisionPlan(held, autocast=False, note=note)
    if requested != "fp32" and device.type == "cpu":
        return PrecisionPlan("fp32", note=f"precision {requested} is for GPUs; running fp32 on the CPU instead")
    if requested == "fp16" and not half_ok:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        instead = "bf16" if bf16 else "fp32"
        return PrecisionPlan(instead, autocast=bf16, note=f"this network does not run in fp16; running {instead} instead")
    if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return PrecisionPlan("fp16", autocast=True, note="this GPU has no bf16 support; running fp16 instead")
    return PrecisionPlan(requested, autocast=requested != "fp32")


def plan_weight_dtype(requested: str, device: torch.device | str) -> tuple[str, str | None]:
    """The dtype the weights will be held in for a network that runs on `device`, and a note when it
    is not `requested`."""
    if requested not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got {requested!r}")
    if requested == "fp32":
        return requested, None
    device = torch.device(device)
    if device.type == "cpu":
        return "fp32", f"weight_dtype {requested} is for GPUs; the model was loaded in fp32 for the CPU"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32", f"this GPU has no {requested} support; the model was loaded in fp32"
    return requested, None


def cast_weights(model: RestoreFormer, weight_dtype: str) -> RestoreFormer:
    """Cast `model`'s weights in place to `weight_dtype` ("fp32" or "bf16"), the dictionary kept fp32;
    returns `model`. Casting back to fp32 does not restore the bits a bf16 cast dropped."""
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {WEIGHT_DTYPES}, got {weight_dtype!r}")
    for child in model.children():
        if child is not model.quantize:
            child.to(DTYPES[weight_dtype])
    return model


@torch.inference_mode()
def run(
    model: RestoreFormer, x: torch.Tensor, plan: PrecisionPlan | str = "fp32", *, exact_codes: bool = False
) -> torch.Tensor:
    """Forward `x` [B, 3, H, W] in [-1, 1] under `plan` (a name goes through `plan_precision`);
    returns the fp32 output, unclamped.

    `exact_codes=True` runs the encoder and the dictionary search in fp32 and only the decoder
    under `plan`: half-precision encoder features can flip near-tied dictionary entries, which
    moves the output locally by far more than rounding.

    The model is switched to its fast inference blocks in place first if it is not already
    (weights and state-dict keys are unchanged). `x` is moved to the model's device.
    """
    device = next(model.parameters()).device
    if isinstance(plan, str):
        plan = plan_precision(plan, device, network_dtype(model))
    if not is_optimized(model):
        optimize_for_inference(model, channels_last=prefers_channels_last(device))
    x = x.to(device=device, dtype=torch.float32 if plan.autocast else network_dtype(model))
    if exact_codes:
        if not plan.autocast and plan.precision != "fp32":
            raise ValueError("exact_codes runs the encoder in fp32: it needs fp32 weights and an autocast plan")
        with PrecisionPlan("fp32").scope(device):
            q, skips = model.encode(x)
        with plan.scope(device):
            out = model.decode(q.z_q, skips)
    else:
        with plan.scope(device):
            out = model(x)
    return out.float()
