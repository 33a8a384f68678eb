"""The fused GroupNorm+SiLU switch (runtime/fast.py FUSED_NORM_SILU), checked on the CPU at the
tiny geometry: which blocks take it, in which dtype, that the output stays the unfused one, and that
a compile failure falls back with one warning. The GPU measurement (bench/gpu_all.sh "switches")
runs the same code with inductor; here TorchDynamo's "eager" backend stands in for the kernel
generator (no C++ compiler needed; `TINY=1 bash bench/gpu_all.sh switches` runs inductor for real).
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from helpers.models import random_restoreformer

from restoreformer_node.runtime import PrecisionPlan, cast_weights, fast, run
from restoreformer_node.runtime.fast import (
    FUSED_NORM_SILU,
    FastResnetBlock,
    norm_silu,
    optimize_for_inference,
)


@pytest.fixture
def fused_cpu(monkeypatch):
    """FUSED_NORM_SILU on for the CPU, compiled with the "eager" backend; yields the list of input
    dtypes the fused function was called with."""
    calls: list[torch.dtype] = []

    def traced(x, weight, bias, groups, eps):
        calls.append(x.dtype)
        return fast._group_norm_silu(x, weight, bias, groups, eps)

    monkeypatch.setitem(FUSED_NORM_SILU, "cpu", True)
    monkeypatch.setattr(fast, "_fused_norm_silu_fn", [torch.compile(traced, backend="eager")])
    torch._dynamo.reset()
    yield calls
    torch._dynamo.reset()


def _input(batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    return torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1


def test_fused_norm_silu_matches_the_separate_kernels_in_every_block(fused_cpu):
    model = optimize_for_inference(random_restoreformer(), routes="nchw")
    x = _input()
    with torch.no_grad():
        FUSED_NORM_SILU["cpu"] = False
        plain = model(x)
        FUSED_NORM_SILU["cpu"] = True
        fused = model(x)
    resnets = sum(isinstance(m, FastResnetBlock) for m in model.modules())
    assert len(fused_cpu) == 2 * resnets and set(fused_cpu) == {torch.float32}
    # The same two ops, compiled as one function: equal up to the order of float operations.
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)


def test_fused_norm_silu_keeps_the_maps_dtype_and_leaves_islands_alone(fused_cpu):
    model = optimize_for_inference(random_restoreformer(), routes="nchw")
    norm = model.encoder.down[0].block[0].norm1
    x = torch.randn(1, norm.num_channels, 8, 8)
    with torch.no_grad():
        bf16 = cast_weights(copy.deepcopy(model), "bf16").encoder.down[0].block[0].norm1
        assert norm_silu(bf16, x.bfloat16()).dtype == torch.bfloat16  # a bf16-weights network
        with torch.autocast("cpu", dtype=torch.float16):  # fp16 keeps its fp32 islands: not fused
            assert norm_silu(norm, x.half()).dtype == torch.float32
    assert fused_cpu == [torch.bfloat16]
    run(model, _input(1), PrecisionPlan.autocast_to("bf16"))  # bf16 without islands: fused, in bf16
    assert set(fused_cpu) == {torch.bfloat16} and len(fused_cpu) > 1


def test_a_failing_fused_kernel_warns_once_and_runs_the_separate_kernels(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setitem(FUSED_NORM_SILU, "cpu", True)
    monkeypatch.setattr(fast, "_fused_norm_silu_fn", [broken])
    model = random_restoreformer()
    x = _input(1)
    with torch.no_grad():
        expected = optimize_for_inference(copy.deepcopy(model), routes="nchw")
        monkeypatch.setitem(FUSED_NORM_SILU, "cpu", False)
        expected = expected(x)
        monkeypatch.setitem(FUSED_NORM_SILU, "cpu", True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = optimize_for_inference(copy.deepcopy(model), routes="nchw")(x)
    assert len(caught) == 1 and "no C++ compiler found" in str(caught[0].message)
    assert FUSED_NORM_SILU["cpu"] is False
    assert torch.equal(out, expected)
