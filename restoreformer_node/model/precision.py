"""Running the RestoreFormer network at a requested precision: fp32, bf16 or fp16.

Weights stay fp32. Reduced precision is autocast (convolutions, 1x1 projections and attention in
bf16/fp16 on the tensor cores). The dictionary search is fp32 at every precision; fp16 also keeps
fp32 islands where its range breaks (bf16, with fp32's range, runs every map in bf16 by default;
`fast.HALF_ISLANDS` switches the islands per dtype):

- the dictionary search (squared distances reach |z|^2 + |e|^2, past fp16's 65504 on real
  features, and a flipped nearest entry changes the output far more than rounding): fp32 in
  `VectorQuantizer.nearest`, with autocast switched off there;
- GroupNorm statistics and outputs: fp32 (`fast._norm_silu`, `fast._norm`);
- the residual stream between blocks: fp32 (each block adds its half-precision branch to an
  fp32 stream), so growth across the decoder's 20 residual blocks cannot overflow;
- convolutions that read the raw stream (1x1 shortcuts, the sub-pixel upsample, the encoder's
  downsample): in fp16 the stream is divided by an exact power of two that keeps it under 1024
  and the result multiplied back in fp32 (`fast.stream_conv`);
- attention logits: the fused attention kernels accumulate q.k and the softmax in fp32, and q, k
  come from GroupNorm-ed features, so they stay in range.

These islands live in the blocks `fast.optimize_for_inference` installs, so `run` prepares the
model first. `bench/model_forward.py` measures the error of each precision against fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .fast import _FAST_CLASSES, optimize_for_inference, prefers_channels_last
from .network import RestoreFormer

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

# Weight dtypes a network may be stored in. bf16 weights run natively (no autocast): 14-17% less
# time than bf16 autocast on an H200 at batch 8, 21% less at batch 1 (bench/README.md), and half
# the memory.
# fp16 weights are not offered: fp16's overflow islands (above) live in its autocast path.
WEIGHT_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _check_weight_dtype(name: str) -> torch.dtype:
    if name not in WEIGHT_DTYPES:
        raise ValueError(f"weight_dtype must be one of {sorted(WEIGHT_DTYPES)}, got {name!r}")
    return WEIGHT_DTYPES[name]


def stored_weight_dtype(requested: str, load_device: torch.device | str) -> tuple[str, str | None]:
    """The dtype the weights will be kept in for `load_device`, and a note when it is not `requested`.

    bf16 weights pay on GPUs (native bf16 kernels, half the memory). A CPU keeps fp32: its bf16
    convolutions are slow on most CPUs, and the CPU fast path (NNPACK) is fp32 only.
    """
    _check_weight_dtype(requested)
    if requested == "fp32":
        return requested, None
    device = torch.device(load_device)
    if device.type == "cpu":
        return "fp32", f"weight_dtype {requested} is for GPUs; the model was loaded in fp32 for the CPU"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp32", f"this GPU has no {requested} support; the model was loaded in fp32"
    return requested, None


def cast_weights(model: RestoreFormer, weight_dtype: str) -> RestoreFormer:
    """Cast `model`'s weights in place to `weight_dtype` ("fp32" or "bf16"); returns `model`.

    The dictionary (the quantizer's codebook) stays fp32 whatever the dtype: the nearest-entry
    search runs in fp32, and rounding the entries themselves would move the codes it picks.
    Casting back to fp32 does not restore the bits a bf16 cast dropped; load the file again.
    """
    dtype = _check_weight_dtype(weight_dtype)
    for child in model.children():
        if child is not model.quantize:
            child.to(dtype)
    return model


def precision_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The compute dtype for `precision` on `device`, or a clear error."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {sorted(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype == torch.float16 and torch.device(device).type == "cpu":
        raise ValueError(
            "precision='fp16' needs a GPU (CPU half-precision convolutions are slow or missing); "
            "use precision='fp32' or 'bf16' on the CPU"
        )
    return dtype


@contextlib.contextmanager
def precision_scope(device: torch.device | str, precision: str) -> Iterator[None]:
    """Autocast for bf16/fp16; for fp32, autocast switched off (an outer scope cannot leak in)."""
    dtype = precision_dtype(precision, device)
    kind = torch.device(device).type
    if dtype == torch.float32:
        with torch.autocast(kind, enabled=False):
            yield
    else:
        with torch.autocast(kind, dtype=dtype):
            yield


def is_prepared(model: RestoreFormer) -> bool:
    """True when every block of `model` is in its fast form (the fp32 islands are in place)."""
    fast = set(_FAST_CLASSES.values())
    plain = set(_FAST_CLASSES)
    return not any(type(m) in plain and type(m) not in fast for m in model.modules())


@torch.inference_mode()
def run(
    model: RestoreFormer, x: torch.Tensor, precision: str = "fp32", *, exact_codes: bool = False
) -> torch.Tensor:
    """Forward `x` [B, 3, H, W] in [-1, 1] at `precision`; returns the fp32 output (unclamped).

    `exact_codes=True` runs the encoder and the dictionary search in fp32 and only the decoder
    at `precision`: half-precision encoder features can flip near-tied dictionary entries (a few
    percent of cells on random weights), which moves the output locally by far more than
    rounding; the encoder is about 28% of the FLOPs.

    The model is switched to its fast inference blocks in place first if it is not already
    (`fast.optimize_for_inference`; weights and state-dict keys are unchanged). `x` is moved to
    the model's device.
    """
    device = next(model.parameters()).device
    precision_dtype(precision, device)
    if not is_prepared(model):
        optimize_for_inference(model, channels_last=prefers_channels_last(device))
    x = x.to(device=device, dtype=torch.float32)
    if exact_codes:
        with precision_scope(device, "fp32"):
            q, skips = model.encode(x)
        with precision_scope(device, precision):
            out = model.decode(q.z_q, skips)
    else:
        with precision_scope(device, precision):
            out = model(x)
    return out.float()


@torch.inference_mode()
def restore(
    model: RestoreFormer, image: torch.Tensor, precision: str = "fp32", *, exact_codes: bool = False
) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] -> restored [B, 3, H, W] in [0, 1] (clamped), in image's dtype."""
    out = run(model, image * 2 - 1, precision, exact_codes=exact_codes)
    return ((out.clamp(-1, 1) + 1) / 2).to(image.dtype)
