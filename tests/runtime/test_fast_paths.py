"""The inference speed paths (model/fast.py) and precision islands (model/precision.py).

Randomly initialised networks of the real architecture at the tiny geometry stand in for the
published weights (not downloadable here). No timing is asserted: speed lives in bench/.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers.models import random_restoreformer

from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, RestoreFormer, tiny_config
from restoreformer_node.model.blocks import ResnetBlock, Upsample
from restoreformer_node.runtime import PrecisionPlan, is_optimized, run
from restoreformer_node.runtime.fast import (
    HALF_ISLANDS,
    WINOGRAD_MIN_SIDE,
    FastAttentionBlock,
    FastConv3x3,
    FastResnetBlock,
    FastUpsample,
    norm_silu,
    optimize_for_inference,
    restore_plain,
    stream_conv,
    subpixel_upsample_conv,
    subpixel_weight,
    winograd_available,
)


def _input(batch: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


# Fast path (default settings) against the plain fp32 model on the tiny geometry. On a CPU with
# NNPACK the 3x3 convolutions on 32x32+ maps run Winograd, which rounds ~5x more than a direct
# convolution (measured 2.4e-5 max / 2e-6 mean against float64 here; direct: 5e-6 / 4e-7).
FAST_MAX_DIFF = 6e-5


@pytest.mark.parametrize("base", [RESTOREFORMER, RESTOREFORMER_PLUSPLUS], ids=["RF", "RF++"])
def test_fast_path_equals_plain_path(base):
    """Same outputs up to float rounding. NCHW without Winograd: within the 1e-5 parity budget.
    Channels-last: oneDNN's NHWC kernels sum in another order, which alone moves the tiny output
    by ~1e-5 (the plain model in channels-last does too), so 3e-5 max and 2e-6 mean there. The
    default (Winograd where NNPACK works) is held against a float64 run of the same weights."""
    model = random_restoreformer(tiny_config(base))
    x = _input()
    with torch.no_grad():
        ref = model(x)
        ref64 = copy.deepcopy(model).double()(x.double())
        nchw = optimize_for_inference(copy.deepcopy(model), channels_last=False, winograd=False)(x)
        nhwc = optimize_for_inference(copy.deepcopy(model), channels_last=True, winograd=False)(x)
        fast = optimize_for_inference(copy.deepcopy(model))(x)
    assert (nchw - ref).abs().max() <= 1e-5
    assert (nhwc - ref).abs().max() <= 3e-5
    assert (nhwc - ref).abs().mean() <= 2e-6
    assert (fast.double() - ref64).abs().max() <= 5e-5
    assert (fast.double() - ref64).abs().mean() <= 4e-6
    assert (fast - ref).abs().max() <= FAST_MAX_DIFF


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_conv_equals_nearest_upsample_then_conv(dtype, tol, channels_last):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 8, 3, padding=1).to(dtype)
    x = torch.randn(2, 16, 7, 10, dtype=dtype)  # odd, non-square: borders on every side
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        got = subpixel_upsample_conv(x, subpixel_weight(conv.weight), conv.bias)
    assert got.shape == ref.shape == (2, 8, 14, 20)
    assert (got - ref).abs().max() <= tol
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


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
    with torch.no_grad():
        assert (fast(_input(1)) - other(_input(1))).abs().max() <= FAST_MAX_DIFF


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
    assert torch.allclose(g_plain, g_fast, rtol=1e-5, atol=1e-7)



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
    conv.__class__ = FastConv3x3
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
    err = (got.double() - ref).abs()
    assert err.max() <= 3e-5 * ref.abs().max()
    assert err.max() > 0  # really another algorithm, not the direct convolution under a new name


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
    FastConv3x3 and every one that sees a 32 px or larger map calls NNPACK; an upsample whose
    input is 32 px or larger runs nearest + that convolution instead of the sub-pixel kernels."""
    model = optimize_for_inference(random_restoreformer())
    assert model.encoder.conv_in.weight.is_contiguous()
    assert isinstance(model.decoder.conv_out, FastConv3x3)
    assert type(model.encoder.down[0].downsample.conv) is torch.nn.Conv2d  # stride 2 stays as is
    seen: dict[str, tuple[int, ...]] = {}
    for name, m in model.named_modules():
        if isinstance(m, FastConv3x3):
            m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(i[0].shape[-2:])))
    with torch.no_grad():
        _, calls = _nnpack_calls(lambda: model(_input(1)))
    assert calls == sum(min(shape) >= WINOGRAD_MIN_SIDE for shape in seen.values()) > 0
    upsample_convs = [n for n in seen if n.endswith("upsample.conv")]
    assert upsample_convs and all(min(seen[n]) >= WINOGRAD_MIN_SIDE for n in upsample_convs)
    restore_plain(model)
    assert not any(isinstance(m, FastConv3x3) for m in model.modules())

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
    assert (guarded - ref).abs().max() <= 2e-3 * ref.abs().max()


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


def test_lean_bf16_and_a_bf16_cast_model_stay_close_to_fp32():
    """bf16 without islands under autocast, and a model whose weights are cast to bf16 (as ComfyUI
    does with other models) running without autocast: both finite and near the fp32 output. The
    fp32 encoder (exact_codes) removes dictionary flips, so the bound is the decoder's rounding."""
    model = optimize_for_inference(random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS)))
    x = _input()
    with torch.no_grad():
        ref = model(x)
        cast = copy.deepcopy(model).to(torch.bfloat16)
        native = cast(x.bfloat16())
    lean = run(model, x, PrecisionPlan.autocast_to("bf16"), exact_codes=True)
    assert native.dtype == torch.bfloat16
    for out in (lean, native.float()):
        assert torch.isfinite(out).all()
    assert (lean - ref).abs().mean() <= 0.02
    # bf16 encoder: ~2% of dictionary entries flip on these random weights (0.1 measured); the
    # same bound as autocast bf16 without exact codes below.
    assert (native.float() - ref).abs().mean() <= 0.2


def test_whole_network_fp16_autocast_is_finite():
    model = optimize_for_inference(random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS)))
    x = _input()
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() <= 0.05


def test_run_precisions_and_exact_codes():
    model = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS))
    x = _input()
    with torch.no_grad():
        ref = model(x)
    fast = copy.deepcopy(model)
    out32 = run(fast, x, "fp32")  # prepares in place
    assert is_optimized(fast)
    assert out32.dtype == torch.float32 and (out32 - ref).abs().max() <= 3e-5
    exact = run(fast, x, PrecisionPlan.autocast_to("bf16"), exact_codes=True)
    assert torch.isfinite(exact).all()
    assert (exact - ref).abs().mean() <= 0.02  # bf16 decoder only: no dictionary entry flips
    loose = run(fast, x, PrecisionPlan.autocast_to("bf16"))
    assert torch.isfinite(loose).all() and (loose - ref).abs().mean() <= 0.2


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
    with torch.no_grad():
        x = _input(1)
        assert (optimize_for_inference(copy.deepcopy(model))(x) - model(x)).abs().max() <= FAST_MAX_DIFF


def test_weights_loaded_under_inference_mode_run_the_fast_path():
    """ComfyUI runs nodes under torch.inference_mode, so the loader node creates inference tensors,
    which have no version counter; the sub-pixel weight cache must still work on them."""
    with torch.inference_mode():
        fast = random_restoreformer(seed=3)
        assert fast.decoder.up[1].upsample.conv.weight.is_inference()
        optimize_for_inference(fast)
        x = _input()
        out = fast(x)
    plain = random_restoreformer(seed=3)
    with torch.no_grad():
        expected = plain(x)
    assert (out - expected).abs().max() <= FAST_MAX_DIFF
