"""The inspection library on small random RestoreFormer / RestoreFormer++ networks.

Pretrained weights cannot be had offline: the networks are randomly initialised with the real
architecture at the tiny test geometry (3 levels, 16x16 latent, 128 entries); the faces are the
real test photos. Every property checked here is exact for any weights.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers.inspection import face_crops
from helpers.models import random_restoreformer
from helpers.numerics import (
    error,
    float64_twin,
    gamma,
    half_precision_budget,
    relative_budget,
    unit_roundoff,
)

from restoreformer_node import inspection as ins
from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, tiny_config
from restoreformer_node.runtime.precision import cast_weights

VARIANTS = {"RF": RESTOREFORMER, "RF++": RESTOREFORMER_PLUSPLUS}
U = unit_roundoff(torch.float32)


def softmax_sum_bound(keys: int, dtype: torch.dtype = torch.float32) -> float:
    """|sum of one softmax row - 1|: each weight exp(x_i - m) / S carries the relative error of
    S (a sum of `keys` terms: gamma_keys), of exp and the subtraction (2 u) and of the division
    (u); summing the weights adds gamma_keys of float32 again."""
    return gamma(keys + 3, dtype) + gamma(keys, torch.float32)


@pytest.fixture(scope="module", params=list(VARIANTS))
def model(request):
    return random_restoreformer(tiny_config(VARIANTS[request.param]))


@pytest.fixture(scope="module")
def crops(astronaut, grace_hopper):
    return face_crops(astronaut, grace_hopper)


@pytest.fixture(scope="module")
def codes(model, crops):
    return ins.encode_codes(model, crops)


def tile_differences(before: ins.Atlas, after: ins.Atlas) -> list[int]:
    """Entries whose tile differs between two atlases of the same layout."""
    return [int(e) for e in before.entries if not torch.equal(before.tile_of(int(e)), after.tile_of(int(e)))]


# ---------------------------------------------------------------------------------------------
# Atlas


def test_prior_stream_decode_is_the_stage1_decoder():
    """The atlas decoder walk equals `model.decode` of a network built with fusion="self"."""
    model = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS, fusion="self"), seed=3)
    z = torch.randn(2, model.config.embed_dim, 5, 3)
    with torch.no_grad():
        assert torch.equal(ins.decode_prior_stream(model, z), model.decode(z))


def test_atlas_has_one_tile_per_entry(model):
    atlas = ins.build_atlas(model, cells=1, cache=None, gap=1)
    n = model.config.n_embed
    assert atlas.entries.tolist() == list(range(n))
    t = ins.tile_size(model, 1)
    assert t == 4 and atlas.tile == t  # 2**(levels-1) pixels per latent cell
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    assert atlas.image.shape == (3, rows * t + rows - 1, columns * t + columns - 1)
    direct = ins.decode_entries(model, torch.arange(n), cells=1)
    for k in (0, 17, n - 1):
        assert torch.equal(atlas.tile_of(k), direct[k])
    assert len({atlas.box(s) for s in range(n)}) == n  # every tile has its own place


@pytest.mark.parametrize(("use_cache", "cells"), [(False, 2), (True, 1)])
def test_changing_entry_k_changes_tile_k_and_no_other(use_cache, cells):
    model = random_restoreformer(tiny_config(RESTOREFORMER))
    cache = ins.TileCache() if use_cache else None
    before = ins.build_atlas(model, cells=cells, cache=cache, model_name="a.safetensors")
    k = 37
    with torch.no_grad():
        model.quantize.embedding.weight[k] = torch.randn(model.config.embed_dim) * 2
    after = ins.build_atlas(model, cells=cells, cache=cache, model_name="a.safetensors")
    assert tile_differences(before, after) == [k]


def test_tile_cache_decodes_each_entry_once_and_stays_small():
    model = random_restoreformer(tiny_config(RESTOREFORMER))
    cache = ins.TileCache(capacity=2)
    ins.build_atlas(model, subset=range(10), cache=cache, model_name="m")
    assert cache.decoded_entries == 10
    ins.build_atlas(model, order="similarity", cache=cache, model_name="m")
    assert cache.decoded_entries == model.config.n_embed  # only the 118 missing ones were decoded
    ins.build_atlas(model, cache=cache, model_name="m", limit=5)
    assert cache.decoded_entries == model.config.n_embed
    for cells in (2, 3):  # new options -> new entries; the oldest is dropped
        ins.build_atlas(model, cells=cells, subset=[0], cache=cache, model_name="m")
    assert len(cache) == 2


def test_cached_tiles_match_a_fresh_decode():
    model = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS))
    cached = ins.build_atlas(model, cache=ins.TileCache(), subset=[5, 9, 100])
    fresh = ins.build_atlas(model, cache=None, subset=[5, 9, 100])
    # The same decode (same batch); the cache stores it in float16: one rounding, u16 relative
    # (2^-25 absolute below float16's normal range).
    bound = unit_roundoff(torch.float16) * fresh.image.abs() + 2.0**-25
    assert bool(((cached.image - fresh.image).abs() <= bound).all())


def test_atlas_orders_and_subsets():
    model = random_restoreformer(tiny_config(RESTOREFORMER))
    n = model.config.n_embed
    counts = torch.zeros(n, dtype=torch.long)
    counts[[7, 3, 90]] = torch.tensor([5, 9, 5])
    by_usage = ins.arrange(n, "usage", counts=counts)
    assert by_usage[:3].tolist() == [3, 7, 90]  # most used first, ties by index
    assert sorted(by_usage.tolist()) == list(range(n))
    assert ins.arrange(n, "usage", counts=counts, limit=2).tolist() == [3, 7]

    codebook = model.quantize.embedding.weight.detach()
    chain = ins.arrange(n, "similarity", codebook=codebook)
    assert sorted(chain.tolist()) == list(range(n))
    # Greedy chain: every step goes to the nearest entry not yet visited.
    dist = torch.cdist(codebook.double(), codebook.double())
    for i in range(n - 1):
        rest = chain[i + 1 :]
        assert dist[chain[i], chain[i + 1]] == dist[chain[i], rest].min()
    # Entries spread along one direction come out sorted along it (from either end).
    t = torch.randperm(n).double()
    line = t[:, None] * torch.randn(1, 8, dtype=torch.float64) + 1e-3 * torch.randn(n, 8, dtype=torch.float64)
    along = t[ins.similarity_order(line)]
    assert torch.equal(along, torch.arange(n).double()) or torch.equal(along, torch.arange(n).double().flip(0))

    subset = ins.parse_entries("0-3, 10 126-", n)
    assert subset == [0, 1, 2, 3, 10, 126, 127]
    assert ins.parse_entries("  ", n) is None
    atlas = ins.build_atlas(model, subset=subset, order="similarity", cache=None)
    assert sorted(atlas.entries.tolist()) == subset
    with pytest.raises(ValueError, match="entries"):
        ins.parse_entries("5-200", n)
    with pytest.raises(ValueError, match="entries"):
        ins.parse_entries("eyes", n)
    with pytest.raises(ValueError, match="faces"):
        ins.arrange(n, "usage")


# ---------------------------------------------------------------------------------------------
# Code usage


def test_usage_counts_cover_every_cell(model, crops):
    batch = torch.cat([crops, crops[:1].flip(-1)])  # 3 faces
    codes = ins.encode_codes(model, batch, batch_size=2)
    usage = ins.code_usage(codes.indices, model.config.n_embed)
    h, w = codes.grid
    assert (h, w) == (model.config.latent_size,) * 2
    assert usage.total == batch.shape[0] * h * w
    assert usage.cells_per_face == h * w and usage.faces == 3
    assert int(usage.counts.sum()) == usage.total
    assert 1 <= usage.perplexity <= usage.used <= model.config.n_embed


@pytest.mark.parametrize("used", [1, 5, 128])
def test_perplexity_of_uniform_usage_is_the_number_of_entries_used(used):
    indices = torch.arange(used).repeat(6 * 16 * 16 // used + 1)[: 6 * 16 * 16 // used * used]
    indices = indices[torch.randperm(indices.numel())].reshape(-1, 1, indices.numel())
    usage = ins.code_usage(indices, 128)
    assert usage.used == used
    # float64: exp(-sum p log p) over `used` equal terms, a few u64 x used (<= 1.4e-14) relative
    assert usage.perplexity == pytest.approx(used, rel=1e-12)
    assert usage.share_used == used / 128  # a power-of-two denominator: exact


def test_perplexity_end_to_end_with_a_dictionary_of_the_face_own_features(crops):
    """Set the dictionary to the encoder features of one face's 256 cells (distinct): every cell
    then chooses its own entry, usage is uniform over all 256 entries and perplexity is 256."""
    model = random_restoreformer(tiny_config(RESTOREFORMER, n_embed=256))
    face = crops[:1]
    with torch.no_grad():
        h, _ = model.encoder(ins.to_model_input(face, model.config))
        z = model.quant_conv(h)[0].permute(1, 2, 0).reshape(-1, model.config.embed_dim)
        model.quantize.embedding.weight.copy_(z)
    codes = ins.encode_codes(model, face)
    assert codes.indices.flatten().tolist() == list(range(256))
    usage = ins.code_usage(codes.indices, 256)
    assert usage.used == 256 and usage.share_used == 1.0
    assert usage.perplexity == pytest.approx(256, rel=1e-12)  # as above: 256 x u64 = 2.8e-14
    # One entry for every cell: all usage on one entry, perplexity 1.
    with torch.no_grad():
        model.quant_conv.weight.zero_()
        model.quant_conv.bias.copy_(model.quantize.embedding.weight[42])
    usage = ins.code_usage(ins.encode_codes(model, crops).indices, 256)
    assert usage.counts[42] == usage.total and usage.perplexity == 1.0  # exp(-1 log 1): exact


def test_usage_summary_and_plot(model, crops, codes):
    usage = ins.code_usage(codes.indices, model.config.n_embed)
    text = usage.summary()
    assert f"{usage.perplexity:.2f}" in text and f"{usage.used} of {usage.n_embed}" in text
    top_entry, top_count = usage.top(1)[0]
    assert top_count == int(usage.counts.max()) and f"#{top_entry} x{top_count}" in text
    plot = ins.usage_plot(usage, width=800, height=400)
    assert plot.shape == (3, 400, 800) and 0 <= float(plot.min()) and float(plot.max()) <= 1
    # The most used entry's bar is drawn in its code-map colour.
    colour = (ins.code_palette(usage.n_embed)[top_entry] * 255).round() / 255
    # Colours are 8-bit: another colour differs by >= 1/255 in some channel, so anything under
    # half a level means this colour.
    assert (plot.permute(1, 2, 0).reshape(-1, 3) - colour).abs().amax(1).min() < 0.5 / 255


# ---------------------------------------------------------------------------------------------
# Code map and distance mask


def test_code_map_indices_equal_an_independent_nearest_entry_search(model, crops, codes):
    x = ins.to_model_input(crops, model.config)
    with torch.no_grad():
        h, _ = model.encoder(x)
        z = model.quant_conv(h).permute(0, 2, 3, 1).reshape(-1, model.config.embed_dim).double()
    codebook = model.quantize.embedding.weight.detach().double()
    d = torch.cdist(z, codebook, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    best = d.min(1)
    assert torch.equal(codes.indices.flatten(), best.indices)
    # The search expands |z|^2 + |e|^2 - 2 z.e in float32 (sums of embed_dim products, then two
    # additions): gamma_(n+2) of the magnitudes, whatever the kernels' order.
    e = codebook[best.indices]
    magnitude = z.pow(2).sum(1) + e.pow(2).sum(1) + 2 * (z.abs() * e.abs()).sum(1)
    bound = gamma(model.config.embed_dim + 2, torch.float32) * magnitude
    assert bool(((codes.distances.flatten().double() - best.values).abs() <= bound).all())


def test_code_map_paints_each_cell_in_its_entry_colour(model, crops, codes):
    n = model.config.n_embed
    image = ins.code_map_image(crops, codes, n, opacity=1.0, grid=False)
    assert image.shape == crops.shape
    cell = crops.shape[-1] // codes.grid[0]
    centres = image[:, :, cell // 2 :: cell, cell // 2 :: cell]  # [N, 3, h, w]
    expected = ins.code_palette(n)[codes.indices].permute(0, 3, 1, 2)
    assert (centres - expected).abs().max() <= 4 * U  # a blend at opacity 1 still rounds twice
    palette = ins.code_palette(1024)
    assert torch.equal(palette[:n], ins.code_palette(n))  # a fixed colour per index
    assert (palette[1:] - palette[:-1]).abs().amax(1).min() > 0.05  # neighbours distinguishable


def test_distance_mask_is_normalised_distance(model, crops, codes):
    mask = ins.distance_mask(codes, 512, normalise="per face", smooth=False)
    assert mask.shape == (2, 512, 512)
    cell = 512 // codes.grid[0]
    centres = mask[:, cell // 2 :: cell, cell // 2 :: cell]
    expected = codes.distances / codes.distances.flatten(1).amax(1).view(-1, 1, 1)
    assert (centres - expected).abs().max() <= 2 * U  # nearest upsampling, one division each
    # The peak divided by itself is exactly 1 (IEEE division), with or without smoothing.
    assert torch.equal(mask.flatten(1).amax(1), torch.ones(2))
    batch = ins.distance_mask(codes, 512, normalise="batch")
    assert float(batch.amax()) == 1.0 and float(batch.amin()) >= 0
    assert ins.heat_overlay(crops, mask).shape == crops.shape


# ---------------------------------------------------------------------------------------------
# Cross-attention


def test_attention_weights_of_every_head_sum_to_one(model, crops):
    levels = {lv.name: lv for block in ins.BLOCK_CHOICES for lv in ins.attention_levels(model, block)}
    weights = ins.trace_attention(model, crops, list(levels))
    assert len(weights) == (4 if model.config.variant == "RestoreFormer" else 7)
    for name, lv in levels.items():
        w = weights[name]
        assert w.shape == (2, model.config.heads, lv.grid**2, lv.grid**2)
        assert (w.sum(-1) - 1).abs().max() <= softmax_sum_bound(lv.grid**2)
        assert float(w.min()) >= 0


def test_a_bf16_stored_network_is_inspected_like_the_fp32_one(model, crops, codes):
    """A network loaded with weight_dtype bf16: codes, attention and dictionary tiles come out in
    fp32 and agree with the fp32 network up to bf16 rounding (a few near-tied cells may flip).
    Tiles go through the whole decoder, where these random weights amplify bf16 rounding (0.04-0.1
    mean against fp32, the same under bf16 autocast), so they are held to the autocast result."""
    half = cast_weights(copy.deepcopy(model), "bf16")
    half_codes = ins.encode_codes(half, crops)
    assert half_codes.distances.dtype == torch.float32
    # Near-tied entries may flip under bf16 features; a broken half-precision encoder would agree
    # on about one cell in n_embed. The features themselves are held to the bf16 budget.
    assert (half_codes.indices == codes.indices).float().mean() > 0.5
    x = ins.to_model_input(crops, model.config)
    with torch.no_grad():
        z32 = model.quant_conv(model.encoder(x)[0])
        z16 = half.quant_conv(half.encoder(x.bfloat16())[0]).float()
    half_precision_budget(model, torch.bfloat16, z32).check(z16, z32, "bf16 encoder features")
    level = ins.attention_levels(half)[0]
    w = ins.trace_attention(half, crops, [level.name])[level.name]
    # bf16 weights: each rounded to bf16 once more (u_bf16 relative), then summed in float32.
    bound = softmax_sum_bound(level.grid**2) + unit_roundoff(torch.bfloat16)
    assert w.dtype == torch.float32 and (w.sum(-1) - 1).abs().max() <= bound
    # Tiles decode one entry as a 1x1 latent: GroupNorm then normalises groups of a few values,
    # which amplifies any rounding (even fp32 tiles are far from a float64 decode, and bf16 ones
    # by a large part of the range), so no rounding budget against fp32 means anything. What holds is structural: the bf16
    # network runs the ops bf16 autocast runs on the fp32 weights (the same bf16 operands into
    # the same kernels, every norm output rounded to bf16 before a conv reads it): the same bits.
    tiles = ins.decode_entries(half, [0, 1, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = ins.decode_entries(model, [0, 1, 2])
    assert tiles.dtype == torch.float32 and torch.equal(tiles, ref)


def test_attention_levels_per_variant():
    rf = random_restoreformer(tiny_config(RESTOREFORMER))
    rfpp = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS))
    assert [(lv.name, lv.grid) for lv in ins.attention_levels(rf)] == [("decoder.up.2.attn.0", 16)]
    assert [(lv.name, lv.grid) for lv in ins.attention_levels(rfpp, "third")] == [
        ("decoder.up.2.attn.2", 16),
        ("decoder.up.1.attn.2", 32),
    ]
    assert [lv.name for lv in ins.attention_levels(rfpp, "mid")] == ["decoder.mid.attn_1", "decoder.up.1.attn.0"]


def test_attention_map_is_the_query_row_at_the_point(model, crops):
    point = (0.377, 0.469)  # the template's left eye
    maps = ins.attention_maps(model, crops, point, batch_size=1)
    full = ins.trace_attention(model, crops, [lv.name for lv in maps.levels])
    # One crop per forward against two: kernels may round differently per batch size; both as
    # close to a float64 forward as the batched one is (REORDER).
    truth = ins.trace_attention(float64_twin(model), crops, [lv.name for lv in maps.levels])
    for lv in maps.levels:
        row, col = maps.cells[lv.name]
        assert (row, col) == (int(0.469 * lv.grid), int(0.377 * lv.grid))
        m = maps.maps[lv.name]
        assert m.shape == (2, model.config.heads, lv.grid, lv.grid)
        cell = row * lv.grid + col
        relative_budget(error(full[lv.name][:, :, cell], truth[lv.name][:, :, cell]), truth[lv.name][:, :, cell]).check(
            m.flatten(2), truth[lv.name][:, :, cell], f"attention row of {lv.name}, one crop per forward"
        )
    sheet = ins.attention_sheet(crops, maps, tile=96)
    assert sheet.shape == (2, 3, 96 * len(maps.levels), 96 * (model.config.heads + 1))
    mask = ins.attention_mask(maps, 512)
    assert mask.shape == (2, 512, 512) and float(mask.amax()) == 1.0  # the peak over itself
    with pytest.raises(ValueError, match="point"):
        ins.attention_maps(model, crops, (1.5, 0.2))


def test_bad_crops_are_named():
    model = random_restoreformer(tiny_config(RESTOREFORMER))
    with pytest.raises(ValueError, match="square"):
        ins.encode_codes(model, torch.rand(1, 3, 64, 48))
    with pytest.raises(ValueError, match="RGB"):
        ins.encode_codes(model, torch.rand(1, 4, 64, 64))


@pytest.mark.slow
def test_published_geometry_rfpp(astronaut, grace_hopper):
    """RestoreFormer++ at the published size (512 px, 16x16 latent, 1,024 entries, attention at 16x16
    and 32x32), random weights: the shapes every view promises, and exact attention normalisation."""
    model = random_restoreformer(RESTOREFORMER_PLUSPLUS)
    crops = face_crops(astronaut, grace_hopper)[:1]
    atlas = ins.build_atlas(model, subset=[0, 511, 1023], cache=None)
    assert atlas.tile == 32 and atlas.image.shape == (3, 2 * 32 + 1, 2 * 32 + 1)
    codes = ins.encode_codes(model, crops)
    assert codes.grid == (16, 16) and int(codes.indices.max()) < 1024
    maps = ins.attention_maps(model, crops, (0.377, 0.469))
    assert [(lv.grid, m.shape) for lv, m in zip(maps.levels, maps.maps.values())] == [
        (16, (1, 4, 16, 16)),
        (32, (1, 4, 32, 32)),
    ]
    for lv, m in zip(maps.levels, maps.maps.values()):
        assert (m.sum((-1, -2)) - 1).abs().max() <= softmax_sum_bound(lv.grid**2)


def test_atlas_command_line_writes_the_atlas(tmp_path):
    import numpy as np
    from PIL import Image

    from restoreformer_node.cli import main
    from restoreformer_node.weights import save_restoreformer

    config = tiny_config(RESTOREFORMER_PLUSPLUS)
    model = random_restoreformer(config)
    weights = save_restoreformer(model, tmp_path / "tiny.safetensors", config)
    out = tmp_path / "atlas.png"
    assert main(["atlas", str(weights), "--out", str(out), "--entries", "0-9", "--columns", "5", "--gap", "0"]) == 0
    written = torch.from_numpy(np.asarray(Image.open(out)).copy()).permute(2, 0, 1).float() / 255
    assert written.shape == (3, 2 * 4, 5 * 4)
    expected = ins.build_atlas(model, subset=range(10), columns=5, gap=0, cache=None).image
    # The command decodes the same batch (its --batch-size default is build_atlas's): only the
    # 8-bit rounding (half a level) and the float32 conversions around it (2 u).
    assert (written - expected).abs().max() <= 0.5 / 255 + 2 * U
    assert main(["atlas", str(weights), "--out", str(tmp_path / "a.jpg")]) == 2
