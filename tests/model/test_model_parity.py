"""Our RestoreFormer against spandrel's independent implementation, on the same weights.

Weights are a random initialisation of the real architecture (pretrained weights cannot be had
offline), with the codebook spread over the encoder's own latents so that different latent cells
pick different codes and the decoder output has a meaningful range. Input is a real photo (scikit-image's
astronaut) resized to the geometry's input size. spandrel implements RestoreFormer only, so
RF++'s extra 32x32 attention is covered by the key and round-trip tests instead.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers.numerics import (
    assert_parity,
    error,
    float64_budget,
    float64_twin,
    recorded_codes,
    relative_budget,
    same_kernels,
)
from helpers.weights import calibrated_restoreformer, image_batch

from restoreformer_node.model import RESTOREFORMER, Trace, tiny_config
from restoreformer_node.runtime.fast import optimize_for_inference, prefers_channels_last, winograd_available
from restoreformer_node.testing import spandrel_twin

# The performance issue's budget for the fast path against spandrel's fp32 output on the full
# network (a requirement, not a rounding bound): 1/16 of an 8-bit output step at most.
FAST_PATH_SPEC = (5e-4, 2e-5)



def compare(config, x: torch.Tensor, seed: int = 0):
    """(our output, spandrel's output, spandrel's code indices [B*h*w], our model, spandrel's
    model) on the plain forward path, float32."""
    ours = calibrated_restoreformer(config, x, seed=seed)
    theirs = spandrel_twin(ours)  # loads our state dict strictly: same key names, nothing left over
    out, ref, their_codes, our_codes = _both(ours, theirs, x)
    assert torch.equal(our_codes, their_codes)
    return out, ref, their_codes, ours, theirs


def _both(ours, theirs, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(our output, spandrel's output, spandrel's codes, our codes), flattened codes."""
    with torch.no_grad(), recorded_codes(ours) as our_codes:
        out = ours(x)
        quant, _, info, skips = theirs.encode(x)
        ref = theirs.decode(quant, skips)
    return out, ref, info[2].flatten(), our_codes[0].flatten()


def assert_meaningful(out: torch.Tensor, codes: torch.Tensor) -> None:
    """The check is only worth something if the network does something: many different codes
    chosen, outputs spread over a range comparable to images."""
    assert codes.unique().numel() >= 8, "codebook collapsed to a few entries"
    assert out.abs().max() > 0.5 and out.std() > 0.05


@pytest.mark.parametrize("heads", [8, 4])
def test_tiny_geometry_matches_spandrel(astronaut, heads, one_thread):
    config = tiny_config(RESTOREFORMER, heads=heads)
    x = image_batch(astronaut, config.resolution, batch=2)
    out, theirs_out, codes, ours, theirs = compare(config, x)
    assert_meaningful(out, codes)
    # float64 runs of both implementations: the same function up to float64 rounding.
    truth, theirs64, their_codes64, our_codes64 = _both(float64_twin(ours), float64_twin(theirs), x.double())
    assert torch.equal(their_codes64, codes) and torch.equal(our_codes64, codes)
    float64_budget([error(out, truth), error(theirs_out, truth)], truth).check(theirs64, truth, "spandrel, float64")
    assert_parity(out, theirs_out, truth, f"tiny geometry, {heads} heads")
    # The inspection path (explicit attention weights) chooses the same codes and is as close.
    trace = Trace()
    with torch.no_grad():
        traced = ours(x, trace=trace)
    assert torch.equal(trace.indices.flatten(), codes)
    relative_budget(error(out, truth), truth).check(traced, truth, "inspection path")


@pytest.mark.slow
def test_full_geometry_matches_spandrel(astronaut):
    """One 512x512 forward of the published RestoreFormer geometry (72.7M parameters), batch 1,
    against a float64 run of the same weights; then both CPU fast paths the loader node installs
    (NNPACK Winograd convolutions where NNPACK works, channels-last where it does not)."""
    x = image_batch(astronaut, 512, batch=1)
    out, theirs_out, codes, ours, _ = compare(RESTOREFORMER, x)
    assert_meaningful(out, codes)
    twin = float64_twin(ours)
    with torch.no_grad(), recorded_codes(twin) as codes64:
        truth = twin(x.double())
    del twin
    print(
        f"full geometry: output range [{out.min():.2f}, {out.max():.2f}], "
        f"{codes.unique().numel()} distinct codes of {codes.numel()} cells"
    )
    assert torch.equal(codes64[0].flatten(), codes)
    assert_parity(out, theirs_out, truth, "full geometry")
    over_spec = []
    for winograd, channels_last in ((True, False), (False, True)):
        name = "Winograd, NCHW" if winograd else "direct, channels-last"
        if winograd and not winograd_available():
            print(f"{name}: skipped, NNPACK is unavailable here")
            continue
        reference = same_kernels(ours, winograd=winograd, channels_last=channels_last)
        fast = optimize_for_inference(copy.deepcopy(ours), channels_last=channels_last, winograd=winograd)
        with torch.no_grad(), recorded_codes(fast) as fast_codes:
            ref = reference(x)
            got = fast(x)
        del reference, fast
        assert torch.equal(fast_codes[0].flatten(), codes), name
        relative_budget(error(ref, truth), truth).check(got, truth, f"fast path, {name}")
        spec = error(got, theirs_out)
        print(f"fast path, {name}, against spandrel fp32: {spec} (performance budget {FAST_PATH_SPEC})")
        if spec.max > FAST_PATH_SPEC[0] or spec.mean > FAST_PATH_SPEC[1]:
            over_spec.append((channels_last == prefers_channels_last("cpu"), name, spec))
    # The path this CPU's loader installs must meet the performance budget. The channels-last
    # path misses it at 512 px: PyTorch's channels-last GroupNorm kernel loses digits of the
    # group statistics on 2^19-element groups (the plain network in channels-last loses as
    # much), which fast._norm's shift does not repair; known, reported, not this test's job.
    assert not [o for o in over_spec if o[0]], over_spec
    if over_spec:
        pytest.xfail(f"channels-last fast path over the performance budget: {over_spec}")
