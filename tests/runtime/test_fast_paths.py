"""The inference speed paths (model/fast.py) and precision islands (model/precision.py).

Randomly initialised networks of the real architecture at the tiny geometry stand in for the
published weights (not downloadable here). No timing is asserted: speed lives in bench/.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers.models import random_restoreformer
from helpers.numerics import (
    conv2d_bound,
    cpu_paths,
    elementwise_check,
    error,
    float64_twin,
    forced_codes,
    half_precision_budget,
    recorded_codes,
    relative_budget,
    same_kernels,
    winograd_bound,
)

from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, RestoreFormer, tiny_config
from restoreformer_node.model.blocks import ResnetBlock, Upsample
from restoreformer_node.runtime import PrecisionPlan, conv_routes, is_optimized, run
from restoreformer_node.runtime.fast import (
    HALF_ISLANDS,
    WINOGRAD_MIN_SIDE,
    FastAttentionBlock,
    FastConv,
    FastResnetBlock,
    FastUpsample,
    norm_silu,
    optimize_for_inference,
    restore_plain,
    stream_conv,
    subpixel_upsample_conv,
    subpixel_weight,
    transpose_weight,
    winograd_available,
)


def _input(batch: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


from helpers import REPO as ROOT  # noqa: E402


@functools.cache
def _truth(variant: str) -> tuple[RestoreFormer, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(plain network, input, float64 output of the same weights, its dictionary codes)."""
    base = {"RF": RESTOREFORMER, "RF++": RESTOREFORMER_PLUSPLUS}[variant]
    model = random_restoreformer(tiny_config(base))
    x = _input()
    twin = float64_twin(model)
    with torch.no_grad(), recorded_codes(twin) as codes:
        truth = twin(x.double())
    return model, x, truth, codes[0]


def _settings(model: RestoreFormer) -> tuple[bool, bool]:
    """(Winograd, channels-last) as an optimised model runs them on this machine."""
    winograd = winograd_available() and any(
        getattr(m, "winograd", False) for m in model.modules() if isinstance(m, FastConv)
    )
    weight = model.encoder.conv_in.weight
    return winograd, weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def assert_like_plain(fast: RestoreFormer, plain: RestoreFormer, x: torch.Tensor, what: str) -> None:
    """`fast` (an optimised copy of `plain`) on x: the same dictionary codes as the float64 truth,
    and no farther from it than REORDER x the plain network running the same convolution kernels
    and memory format (`same_kernels`): the fused blocks, sub-pixel upsampling and in-place
    residuals only reorder sums, while Winograd and channels-last change the rounding itself,
    which the reference then carries too."""
    winograd, channels_last = _settings(fast)
    twin = float64_twin(plain)
    reference = same_kernels(plain, winograd=winograd, channels_last=channels_last)
    with torch.no_grad(), recorded_codes(twin) as codes64, recorded_codes(fast) as codes:
        truth = twin(x.double())
        ref = reference(x)
        out = fast(x)
    assert torch.equal(codes[0], codes64[0]), f"{what}: the dictionary search picked other entries"
    relative_budget(error(ref, truth), truth).check(out, truth, f"{what} (Winograd {winograd}, channels-last {channels_last})")


@pytest.mark.parametrize("winograd", [False, True], ids=["direct", "winograd"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("variant", ["RF", "RF++"])
def test_fast_path_equals_plain_path(variant, channels_last, winograd):
    """Every CPU code path of the fast network (NNPACK Winograd or oneDNN direct convolutions, NCHW
    or channels-last) gives the float64 output of the same weights as closely as the plain network
    does with the same convolution kernels and layout (see `assert_like_plain`), and picks the same
    dictionary entries. The Winograd convolution itself is held to its rounding analysis below."""
    print(cpu_paths())
    if winograd and not winograd_available():
        pytest.skip("NNPACK is unavailable (this PyTorch build or CPU): the Winograd path cannot run here")
    model, x, truth, codes64 = _truth(variant)
    reference = same_kernels(model, winograd=winograd, channels_last=channels_last)
    fast = optimize_for_inference(copy.deepcopy(model), channels_last=channels_last, winograd=winograd)
    assert _settings(fast) == (winograd, channels_last)
    with torch.no_grad(), recorded_codes(reference) as ref_codes, recorded_codes(fast) as codes:
        ref = reference(x)
        out, calls = _nnpack_calls(lambda: fast(x))
    assert (calls > 0) == winograd  # the path under test really ran
    assert torch.equal(ref_codes[0], codes64) and torch.equal(codes[0], codes64)
    layout = "channels-last" if channels_last else "NCHW"
    algorithm = "Winograd" if winograd else "direct"
    relative_budget(error(ref, truth), truth).check(out, truth, f"{variant} fast path, {layout}, {algorithm}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_conv_equals_nearest_upsample_then_conv(dtype, channels_last):
    """Both sides are sums of products of the same numbers (the sub-pixel taps are correctly rounded
    sums of the original ones, |merged tap| <= sum of |taps|), so each is within gamma_n of the
    exact result, n = 16 x 9 taps + bias, whatever order the kernels add in."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1).to(dtype)
    x = torch.randn(2, 16, 7, 10, dtype=dtype)  # odd, non-square: borders on every side
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        upsampled = F.interpolate(x, scale_factor=2.0, mode="nearest")
        ref = conv(upsampled)
        got = subpixel_upsample_conv(x, subpixel_weight(conv.weight), conv.bias)
    assert got.shape == ref.shape == (2, 8, 14, 20)
    bound = 2 * conv2d_bound(upsampled, conv.weight, conv.bias, dtype, extra=1, padding=1)
    elementwise_check(got - ref, bound, f"sub-pixel conv ({dtype})")
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


@pytest.mark.parametrize("packed", [True, False], ids=["oneDNN packed", "aten"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_transposed_upsample_equals_nearest_upsample_then_conv(packed, channels_last, monkeypatch):
    """The transposed form sums the same correctly rounded merged taps as the sub-pixel form, so
    the same bound holds (float32: oneDNN's transposed convolution has no float64 kernel). With the
    packed ops missing it runs PyTorch's transposed convolution."""
    if packed and not conv_routes.route_available("packed"):
        pytest.skip("this PyTorch build has no torch.ops.mkldnn convolution ops (oneDNN)")
    if not packed:
        monkeypatch.setitem(conv_routes._available, "packed", False)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1)
    x = torch.randn(2, 16, 7, 10)  # odd, non-square: borders on every side
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    upsampled = F.interpolate(x, scale_factor=2.0, mode="nearest")
    with torch.no_grad():
        for step in ("first weights", "new weights"):  # the packed copy follows the weight's version
            if step == "new weights":
                conv.weight.mul_(-0.5)
            got = conv_routes.transposed_upsample(conv, x, transpose_weight)
            ref = conv(upsampled)
            assert got.shape == ref.shape == (2, 8, 14, 20)
            bound = 2 * conv2d_bound(upsampled, conv.weight, conv.bias, torch.float32, extra=1, padding=1)
            elementwise_check(got - ref, bound, f"transposed upsample, {step}")


@pytest.mark.parametrize("offset", [2.0, 30.0], ids=["means 2x std", "means 30x std"])
@pytest.mark.parametrize("scratch", [False, True])
def test_channels_last_group_norm_of_large_groups_is_as_exact_as_the_nchw_kernel(offset, scratch):
    """On channels-last maps with groups of 2^17+ elements `_norm` takes per-channel statistics
    (merged per group in float64) instead of running ATen's channels-last GroupNorm kernel, which
    loses digits there. References measured here against float64 on the same data: that kernel
    (ours at most half its error, max and mean) and ATen's NCHW kernel (ours within 16x its max
    error: the batch-norm kernel's variances are less exact than the NCHW kernel's statistics).
    `scratch` writes into x; otherwise x is left as it was."""
    from restoreformer_node.runtime import fast

    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 16, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    channel_means = torch.randn(1, 16, 1, 1) * offset
    x = (torch.randn(2, 16, 192, 192) + channel_means).contiguous(memory_format=torch.channels_last)
    assert 4 * 192 * 192 >= fast._CL_PRECISE_MIN_GROUP
    with torch.no_grad():
        truth = F.group_norm(x.double(), 4, norm.weight.double(), norm.bias.double(), 1e-6)
        nchw = (F.group_norm(x.contiguous(), 4, norm.weight, norm.bias, 1e-6).double() - truth).abs()
        aten_cl = (F.group_norm(x, 4, norm.weight, norm.bias, 1e-6).double() - truth).abs()
        before = x.clone()
        got = fast._norm(norm, x, scratch=scratch)
    err = (got.double() - truth).abs()
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert err.max() <= 0.5 * aten_cl.max() and err.mean() <= 0.5 * aten_cl.mean(), (err.max(), aten_cl.max())
    assert err.max() <= 16 * nchw.max(), (err.max(), nchw.max())
    assert (got.data_ptr() == x.data_ptr()) == scratch
    if not scratch:
        assert torch.equal(x, before)


def test_the_first_norm_of_a_residual_block_reuses_one_workspace_map():
    """A residual block's first GroupNorm+SiLU on a large channels-last map goes into a per-thread
    workspace map that the next block reuses (no fresh pages to fault in); nothing a block returns
    lives there, so earlier outputs stay intact, and an optimised network empties the workspace
    after its forward (and restore_plain removes that hook)."""
    from restoreformer_node.runtime import fast

    torch.manual_seed(0)
    block = ResnetBlock(8, 8, groups=2)
    fast_block = copy.deepcopy(block)
    fast_block.__class__ = FastResnetBlock
    xs = [torch.randn(1, 8, 192, 192).contiguous(memory_format=torch.channels_last) + i for i in range(2)]
    assert 4 * 192 * 192 >= fast._CL_PRECISE_MIN_GROUP
    fast._workspace.maps.clear()
    with torch.no_grad():
        outs = [fast_block(x) for x in xs]
        kept = [o.clone() for o in outs]
        again = fast_block(xs[0])  # the workspace is overwritten; the outputs above are not
        assert len(fast._workspace.maps) == 1
        workspace = next(iter(fast._workspace.maps.values()))
        assert all(o.data_ptr() != workspace.data_ptr() for o in [*outs, again])
        assert all(torch.equal(o, k) for o, k in zip(outs, kept, strict=True)) and torch.equal(again, outs[0])
        for x, out in zip(xs, outs, strict=True):
            torch.testing.assert_close(out, block(x), rtol=0, atol=1e-4)
        model = optimize_for_inference(random_restoreformer())
        model(torch.rand(1, 3, 64, 64))
    assert not fast._workspace.maps
    assert fast._release_workspace in model._forward_hooks.values()
    restore_plain(model)
    assert fast._release_workspace not in model._forward_hooks.values()


def test_state_dict_keys_unchanged_and_cache_follows_new_weights():
    model = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS))
    plain_sd = model.state_dict()
    fast = optimize_for_inference(copy.deepcopy(model))
    with torch.no_grad():
        fast(_input(1))  # builds the sub-pixel kernel caches
    fast_sd = fast.state_dict()
    assert list(fast_sd) == list(plain_sd)
    assert all(fast_sd[k].shape == v.shape and torch.equal(fast_sd[k], v) for k, v in plain_sd.items())
    assert any(isinstance(m, FastUpsample) for m in fast.modules())

    # New weights loaded strictly into the optimised model: the cached phase kernels follow.
    other = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS), seed=5)
    fast.load_state_dict(other.state_dict(), strict=True)
    assert_like_plain(fast, other, _input(1), "new weights in the optimised model")


def test_restore_plain_and_is_optimized():
    model = random_restoreformer()
    assert not is_optimized(model)
    optimize_for_inference(model)
    assert is_optimized(model)
    assert isinstance(model.encoder.down[0].block[0], FastResnetBlock)
    restore_plain(model)
    assert not is_optimized(model)
    assert type(model.encoder.down[0].block[0]) is ResnetBlock
    assert type(model.decoder.up[1].upsample) is Upsample
    assert "subpixel_weight" not in dict(model.named_buffers())


def test_optimised_model_still_trains():
    """With autograd on, the fast blocks run the plain forward: gradients match the plain model."""
    model = random_restoreformer()
    fast = optimize_for_inference(copy.deepcopy(model), channels_last=False)
    x = _input(1)
    model(x).square().mean().backward()
    fast(x).square().mean().backward()
    g_plain = model.decoder.conv_out.weight.grad
    g_fast = fast.decoder.conv_out.weight.grad
    assert torch.equal(g_plain, g_fast)  # the same kernels on the same tensors: the same bits



# --- Winograd (NNPACK) 3x3 convolutions on the CPU ---------------------------------------------

needs_nnpack = pytest.mark.skipif(not winograd_available(), reason="this PyTorch build has no working NNPACK")


def _nnpack_calls(fn) -> tuple[torch.Tensor, int]:
    """fn()'s result and how many times it called NNPACK's convolution (read from the profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = fn()
    calls = sum(e.count for e in prof.key_averages() if e.key == "aten::_nnpack_spatial_convolution")
    return out, calls


def _fast_conv(cin: int = 32, cout: int = 48, seed: int = 0) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
    conv.__class__ = FastConv
    return conv


@needs_nnpack
def test_winograd_conv_is_used_per_image_and_stays_close_to_float64():
    conv = _fast_conv()
    x = torch.randn(3, 32, WINOGRAD_MIN_SIDE + 9, WINOGRAD_MIN_SIDE)  # non-square, borders matter
    with torch.no_grad():
        got, calls = _nnpack_calls(lambda: conv(x))
        ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert calls == 3  # one Winograd call per image: NNPACK's batched call is a slower exact path
    assert got.shape == ref.shape
    elementwise_check(got.double() - ref, winograd_bound(x, conv.weight, conv.bias, torch.float32), "Winograd conv")
    assert (got.double() - ref).abs().max() > 0  # really another algorithm, not the direct one renamed


@needs_nnpack
def test_winograd_is_skipped_where_it_does_not_pay_or_apply():
    """Small maps, autograd, autocast and float64 take the normal convolution, bit for bit."""
    conv = _fast_conv()
    small = torch.randn(1, 32, WINOGRAD_MIN_SIDE - 1, 40)
    big = torch.randn(1, 32, 40, 40)
    cases = {
        "small map": (torch.no_grad, lambda: conv(small), lambda: F.conv2d(small, conv.weight, conv.bias, padding=1)),
        "autograd": (torch.enable_grad, lambda: conv(big), lambda: F.conv2d(big, conv.weight, conv.bias, padding=1)),
    }
    for name, (mode, fast, plain) in cases.items():
        with mode():
            got, calls = _nnpack_calls(fast)
            assert calls == 0, name
            assert torch.equal(got, plain()), name
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert _nnpack_calls(lambda: conv(big))[1] == 0
    conv64 = copy.deepcopy(conv).double()
    with torch.no_grad():
        assert _nnpack_calls(lambda: conv64(big.double()))[1] == 0
    conv.winograd = False  # optimize_for_inference(winograd=False) sets this
    with torch.no_grad():
        assert _nnpack_calls(lambda: conv(big))[1] == 0


@needs_nnpack
def test_optimised_model_uses_winograd_and_nearest_upsample_at_full_resolution():
    """The default CPU model is NCHW (NNPACK reads NCHW), its 3x3 stride-1 convolutions are
    FastConv and every one that sees a 32 px or larger map calls NNPACK; an upsample whose
    input is 32 px or larger runs nearest + that convolution instead of the sub-pixel kernels."""
    model = optimize_for_inference(random_restoreformer())
    assert model.encoder.conv_in.weight.is_contiguous()
    assert isinstance(model.decoder.conv_out, FastConv)
    # Stride-2 and 1x1 convolutions are routed too, but never through NNPACK.
    stride2, shortcut = model.encoder.down[0].downsample.conv, model.encoder.down[1].block[0].nin_shortcut
    assert isinstance(stride2, FastConv) and isinstance(shortcut, FastConv)
    assert not stride2.uses_winograd(torch.zeros(1, 32, 65, 65))
    assert not shortcut.uses_winograd(torch.zeros(1, 32, 64, 64))
    seen: dict[str, tuple[int, ...]] = {}
    for name, m in model.named_modules():
        if isinstance(m, FastConv) and m.kernel_size == (3, 3) and m.stride == (1, 1):
            m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(i[0].shape[-2:])))
    with torch.no_grad():
        _, calls = _nnpack_calls(lambda: model(_input(1)))
    assert calls == sum(min(shape) >= WINOGRAD_MIN_SIDE for shape in seen.values()) > 0
    upsample_convs = [n for n in seen if n.endswith("upsample.conv")]
    assert upsample_convs and all(min(seen[n]) >= WINOGRAD_MIN_SIDE for n in upsample_convs)
    restore_plain(model)
    assert not any(isinstance(m, FastConv) for m in model.modules())

# --- precision islands ------------------------------------------------------------------------


def test_fp16_stream_conv_guard_prevents_overflow():
    """A raw residual stream of 3e5 overflows a plain fp16 conv; the power-of-two guard does not."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 8, 1)
    x = torch.randn(1, 8, 4, 4) * 3e5
    with torch.no_grad():
        ref = conv(x)
        with torch.autocast("cpu", dtype=torch.float16):
            plain = conv(x)
            guarded = stream_conv(conv, x)
    assert not torch.isfinite(plain).all()
    assert guarded.dtype == torch.float32 and torch.isfinite(guarded).all()
    # The power-of-two scale is exact, so the guarded conv rounds like an fp16 conv of x: input,
    # weight and output rounded to fp16 (3 roundings) and, at worst, an fp16 accumulation; then
    # the fp32 bias add. The fp32 reference rounds too (its own gamma_n).
    bound = (
        conv2d_bound(x, conv.weight, None, torch.float16, extra=3)
        + conv2d_bound(x, conv.weight, conv.bias, torch.float32)
    )
    elementwise_check(guarded - ref, bound, "fp16 stream conv")


@pytest.mark.parametrize("dtype,islands", [(torch.float16, True), (torch.bfloat16, True), (torch.bfloat16, False)])
def test_islands_under_autocast(dtype, islands, monkeypatch):
    """With islands, norms, the residual stream and attention's residual are fp32 under autocast;
    without (bf16's default), every map stays in the half dtype. The dictionary search is fp32
    and exact either way."""
    monkeypatch.setitem(HALF_ISLANDS, dtype, islands)
    model = optimize_for_inference(random_restoreformer())
    x = torch.randn(1, 64, 16, 16)
    block = model.encoder.down[1].block[0]
    attn = model.decoder.up[2].attn[0]
    upsample = model.decoder.up[2].upsample
    assert isinstance(attn, FastAttentionBlock)
    stream = torch.float32 if islands else dtype
    x = x.to(stream)  # the stream as conv_in's output has it
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        assert norm_silu(block.norm1, x[:, :32].to(dtype)).dtype == stream
        assert block(x[:, :32]).dtype == stream  # residual stream
        assert attn(x, x).dtype == stream
        assert upsample(x).dtype == stream
        z = torch.randn(2, 64, 4, 4) * 30
        idx_auto, dist_auto = model.quantize.nearest(z)
    idx, dist = model.quantize.nearest(z)
    assert dist_auto.dtype == torch.float32
    assert torch.equal(idx_auto, idx) and torch.equal(dist_auto, dist)


def _half_against_fp32(fp32: RestoreFormer, x: torch.Tensor, half_run, dtype: torch.dtype, what: str,
                       runs: RestoreFormer | None = None, exact_codes: bool = False) -> None:
    """`half_run()` (a forward of `runs`, default `fp32`, at half precision) against the fp32 network
    on the dictionary entries the half run picked: what is left is rounding, held to
    `half_precision_budget`. Half-precision encoder features may flip a near-tied entry (a few
    cells on random weights), which moves the output locally by far more than rounding, hence
    the replay; most cells must still agree with the fp32 search (a broken encoder would agree
    on about 1 cell in n_embed)."""
    with torch.no_grad(), recorded_codes(fp32) as codes32:
        fp32(x)
    with recorded_codes(runs or fp32) as codes:
        out = half_run()
    assert torch.isfinite(out).all(), what
    agree = float((codes[0] == codes32[0]).float().mean())
    print(f"{what}: {agree:.3f} of the cells picked the fp32 entry")
    assert agree == 1.0 if exact_codes else agree > 0.5
    with torch.no_grad(), forced_codes(fp32, codes):
        ref = fp32(x)
    half_precision_budget(fp32, dtype, ref).check(out.float(), ref, what)


def test_lean_bf16_and_a_bf16_cast_model_stay_close_to_fp32():
    """bf16 without islands under autocast, and a model whose weights are cast to bf16 (as ComfyUI
    does with other models) running without autocast: both finite and near the fp32 output. The
    fp32 encoder (exact_codes) keeps the fp32 entries; the bf16 one may flip a few."""
    model = optimize_for_inference(random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS)))
    x = _input()
    cast = copy.deepcopy(model).to(torch.bfloat16)
    with torch.no_grad():
        assert cast(x.bfloat16()).dtype == torch.bfloat16
    _half_against_fp32(model, x, lambda: run(model, x, PrecisionPlan.autocast_to("bf16"), exact_codes=True), torch.bfloat16,
                       "bf16 autocast without islands, exact codes", exact_codes=True)
    with torch.no_grad():
        _half_against_fp32(model, x, lambda: cast(x.bfloat16()), torch.bfloat16, "bf16 weights", runs=cast)


def test_whole_network_fp16_autocast_is_finite():
    model = optimize_for_inference(random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS)))
    x = _input()

    def fp16():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
            return model(x)

    _half_against_fp32(model, x, fp16, torch.float16, "fp16 autocast with islands")


def test_run_precisions_and_exact_codes():
    model = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS))
    x = _input()
    fast = copy.deepcopy(model)
    out32 = run(fast, x, "fp32")  # prepares in place
    assert is_optimized(fast)
    assert out32.dtype == torch.float32
    assert_like_plain(fast, model, x, "run(fp32)")
    _half_against_fp32(fast, x, lambda: run(fast, x, PrecisionPlan.autocast_to("bf16"), exact_codes=True), torch.bfloat16,
                       "run(bf16, exact_codes)", exact_codes=True)
    _half_against_fp32(fast, x, lambda: run(fast, x, PrecisionPlan.autocast_to("bf16")), torch.bfloat16, "run(bf16)")


def test_run_goes_through_the_precision_policy():
    """A precision name given to `run` gets what users get (bf16 on a CPU runs fp32); a plan built
    with PrecisionPlan.autocast_to runs reduced precision anyway (for measurements)."""
    model = random_restoreformer()
    x = _input(1)
    calls = []
    model.decoder.register_forward_hook(lambda m, args, out: calls.append(torch.is_autocast_enabled("cpu")))
    by_name = run(model, x, "bf16")
    assert calls == [False] and torch.equal(by_name, run(model, x, "fp32"))
    run(model, x, PrecisionPlan.autocast_to("bf16"))
    assert calls[-1] is True


def test_optimize_accepts_any_restoreformer_config():
    """Geometry is not hard-coded: a 4-level variant with attention at 8 px works too."""
    cfg = tiny_config(RESTOREFORMER, ch_mult=(1, 2, 2, 4), resolution=64,
                      encoder_attn_resolutions=(8,), decoder_attn_resolutions=(8,))
    torch.manual_seed(0)
    model = RestoreFormer(cfg).eval()
    assert_like_plain(optimize_for_inference(copy.deepcopy(model)), model, _input(1), "4-level variant")


def test_weights_loaded_under_inference_mode_run_the_fast_path():
    """ComfyUI runs nodes under torch.inference_mode, so the loader node creates inference tensors,
    which have no version counter; the sub-pixel weight cache must still work on them."""
    with torch.inference_mode():
        fast = random_restoreformer(seed=3)
        assert fast.decoder.up[1].upsample.conv.weight.is_inference()
        optimize_for_inference(fast)
        x = _input()
        fast(x)  # builds the sub-pixel kernel cache from inference tensors
        assert_like_plain(fast, random_restoreformer(seed=3), x, "inference-mode weights")


# --- other CPU vector widths ------------------------------------------------------------------

# ATen's kernels for a vector width, and the oneDNN ISA that matches it (oneDNN reads its own cap).
CAPABILITIES = {"avx2": "AVX2", "default": "SSE41"}


@pytest.mark.parametrize("capability", list(CAPABILITIES))
def test_fast_paths_under_another_cpu_capability(capability):
    """CI machines differ in vector width (AVX-512 here, AVX2 or none elsewhere): the fast-path and
    half-precision checks of this file run again in a process whose ATen and oneDNN kernels are
    capped at `capability`, which is what such a machine runs. (NNPACK picks its own kernels.)"""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability, "ONEDNN_MAX_CPU_ISA": CAPABILITIES[capability]}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    probe = subprocess.run(
        [sys.executable, "-c", "from helpers.numerics import cpu_paths; print(cpu_paths())"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    print(f"this process: {cpu_paths()}\nsubprocess: {probe.stdout.strip()}")
    if f"capability {capability.upper()}," not in probe.stdout:
        pytest.skip(f"this CPU cannot run ATen's {capability} kernels ({probe.stdout.strip()})")
    if torch.backends.cpu.get_cpu_capability() == capability.upper():
        pytest.skip(f"this process already runs {capability}: the other tests cover it")
    checks = "fast_path_equals_plain_path and RF- or lean_bf16 or fp16_autocast"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", checks],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    print(result.stdout[-1500:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
