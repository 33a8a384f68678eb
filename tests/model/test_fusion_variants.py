"""Decoder fusion modes of the paper's Table 4 (restoreformer_node/model/fusion.py).

All networks are randomly initialised networks of the real architecture (pretrained weights cannot
be had offline); the parity check runs spandrel's independent implementation on the same weights.
"""

from __future__ import annotations

import pytest
import torch
from helpers.numerics import (
    assert_parity,
    error,
    float64_budget,
    float64_twin,
    relative_budget,
    unit_roundoff,
)

from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, RestoreFormer, tiny_config
from restoreformer_node.model.blocks import AttentionBlock
from restoreformer_node.model.config import FUSION_MODES
from restoreformer_node.model.fusion import DegradedResidualCrossAttention, SFTFusion

ABLATIONS = ("none", "sa_d", "sa_p", "sft", "mhca_d", "mhca_p")


def _published_keys(name: str) -> set[str]:
    with open(f"restoreformer_node/keys/{name}") as f:
        return {line.split("\t")[0] for line in f if line.strip()}


def _tiny(fusion: str, base=RESTOREFORMER, seed: int = 0) -> RestoreFormer:
    torch.manual_seed(seed)
    model = RestoreFormer(tiny_config(base, fusion=fusion))
    with torch.no_grad():
        model.quantize.embedding.weight.normal_()
    return model.eval()


def test_mhca_p_is_the_default_and_keeps_the_published_layout():
    assert RESTOREFORMER.fusion == "mhca_p" and RESTOREFORMER_PLUSPLUS.fusion == "mhca_p"
    with torch.device("meta"):
        rf = RestoreFormer(RESTOREFORMER)
        rfpp = RestoreFormer(RESTOREFORMER_PLUSPLUS)
    assert set(rf.state_dict()) == _published_keys("restoreformer_keys.tsv")
    assert set(rfpp.state_dict()) == _published_keys("restoreformer_plusplus_keys.tsv")
    assert sum(p.numel() for p in rf.parameters()) == 72_680_003


def test_mhca_p_matches_spandrel_on_the_same_weights():
    from restoreformer_node.testing import spandrel_twin

    ours = _tiny("mhca_p")
    ref = spandrel_twin(ours)  # same weights, loaded strictly
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = ref(x)[0]
        got = ours(x)
        truth = float64_twin(ours)(x.double())
        theirs64 = float64_twin(ref)(x.double())[0]
    float64_budget([error(got, truth), error(expected, truth)], truth).check(theirs64, truth, "spandrel, float64")
    assert_parity(got, expected, truth, "MHCA-P against spandrel")


@pytest.mark.parametrize("fusion", ABLATIONS)
def test_each_variant_has_its_documented_key_layout(fusion):
    published = _published_keys("restoreformer_keys.tsv")
    with torch.device("meta"):
        keys = set(RestoreFormer(RESTOREFORMER.with_(fusion=fusion)).state_dict())
    decoder_attn = {k for k in published if k.startswith("decoder.") and ".attn" in k}
    if fusion == "none":
        assert keys == published - decoder_attn
    elif fusion == "sft":
        added = keys - published
        assert keys - added == published - decoder_attn
        assert "decoder.mid.attn_1.scale.0.weight" in added and "decoder.up.5.attn.2.shift.2.bias" in added
        assert all(".attn" in k for k in added)
    else:
        assert keys == published


def test_unknown_fusion_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown fusion mode 'mhca'"):
        RESTOREFORMER.with_(fusion="mhca")
    assert set(ABLATIONS) <= set(FUSION_MODES)


def test_degraded_only_variants_ignore_the_dictionary_and_prior_variants_use_it():
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    for fusion in ("none", "sa_d", "sa_p", "sft", "mhca_d", "mhca_p"):
        model = _tiny(fusion)
        with torch.no_grad():
            before = model(x)
            model.quantize.embedding.weight.mul_(3.0).add_(0.5)
            after = model(x)
        changed = (before - after).abs().max().item()
        if fusion in ("none", "sa_d"):
            assert changed == 0.0, fusion  # an unused dictionary leaves every bit as it was
        else:
            # A used one moves the output by the entries' change (O(1)), not by rounding: 1e-4 is
            # still ~100 float32 ulps of these O(1) outputs.
            assert changed > 1e-4, fusion


def test_sa_p_is_stage_one_self_attention():
    a, b = _tiny("sa_p"), _tiny("self")
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_mhca_d_moves_the_residual_to_the_degraded_side():
    torch.manual_seed(1)
    p = AttentionBlock(64, 8, 32)
    d = DegradedResidualCrossAttention(64, 8, 32)
    d.load_state_dict(p.state_dict())
    x, y = torch.randn(2, 64, 16, 16), torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        attended = p(x, y) - x
        got = d(x, y)
        # Both blocks compute the same attention term a bit for bit (same weights, same code); only
        # fl(x + a) - x and the final additions round: a few u of |x|, |y| and |a|.
        bound = 4 * unit_roundoff(torch.float32) * (x.abs() + y.abs() + 2 * attended.abs())
        assert bool(((got - (y + attended)).abs() <= bound).all())
        # The inspection path (explicit softmax weights) against SDPA: as close to float64.
        rec: list[torch.Tensor] = []
        recorded = d(x, y, record=rec)
        truth = float64_twin(d)(x.double(), y.double())
        relative_budget(error(got, truth), truth).check(recorded, truth, "MHCA-D with recorded weights")
        assert rec[0].shape == (2, 8, 256, 256)


def test_sft_starts_as_identity_and_modulates_by_hand_formula():
    torch.manual_seed(2)
    sft = SFTFusion(64, 32)
    x, y = torch.randn(1, 64, 8, 8), torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(sft(x, y), x)
        for branch in (sft.scale, sft.shift):
            branch[2].weight.normal_(0, 0.1)
            branch[2].bias.normal_(0, 0.1)
        cond = torch.nn.functional.group_norm(y, 32, sft.norm.weight, sft.norm.bias, eps=1e-6)

        def branch(seq):
            h = torch.einsum("oc,bchw->bohw", seq[0].weight[:, :, 0, 0], cond) + seq[0].bias[:, None, None]
            h = torch.where(h > 0, h, 0.2 * h)
            return torch.einsum("oc,bchw->bohw", seq[2].weight[:, :, 0, 0], h) + seq[2].bias[:, None, None]

        expected = x * (1 + branch(sft.scale)) + branch(sft.shift)
        got = sft(x, y)
        x64, cond = x.double(), torch.nn.functional.group_norm(
            y.double(), 32, sft.norm.weight.double(), sft.norm.bias.double(), eps=1e-6
        )
        twin = float64_twin(sft)
        truth = x64 * (1 + _branch64(twin.scale, cond)) + _branch64(twin.shift, cond)
        assert_parity(got, expected, truth, "SFT against the hand formula")


def _branch64(seq, cond: torch.Tensor) -> torch.Tensor:
    """The SFT condition branch by hand, float64."""
    h = torch.einsum("oc,bchw->bohw", seq[0].weight[:, :, 0, 0], cond) + seq[0].bias[:, None, None]
    h = torch.where(h > 0, h, 0.2 * h)
    return torch.einsum("oc,bchw->bohw", seq[2].weight[:, :, 0, 0], h) + seq[2].bias[:, None, None]


def test_stage_one_weights_initialise_every_attention_variant():
    stage1 = _tiny("self").state_dict()
    for fusion in ("sa_d", "sa_p", "mhca_d", "mhca_p"):
        RestoreFormer(tiny_config(RESTOREFORMER, fusion=fusion)).load_state_dict(stage1, strict=True)
    # RF++ adds the 32x32 attention that stage 1 lacks: exactly those keys are missing.
    missing = RestoreFormer(tiny_config(RESTOREFORMER_PLUSPLUS)).load_state_dict(stage1, strict=False).missing_keys
    assert missing and all(k.startswith("decoder.up.1.attn.") for k in missing)
