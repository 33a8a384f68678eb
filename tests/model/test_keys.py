"""Our RestoreFormer / RestoreFormer++ state dicts against the published key lists.

The lists in restoreformer_node/keys/*.tsv were taken from the released checkpoints (names,
order and shapes). Models are built on the meta device: shapes only, no memory, no time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import restoreformer_node
from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, RestoreFormer, tiny_config
from restoreformer_node.weights import detect_config

KEYS_DIR = Path(restoreformer_node.__file__).parent / "keys"

PUBLISHED = [
    pytest.param(RESTOREFORMER, "restoreformer_keys.tsv", 72_680_003, 405, id="RestoreFormer"),
    pytest.param(RESTOREFORMER_PLUSPLUS, "restoreformer_plusplus_keys.tsv", 73_472_579, 441, id="RestoreFormer++"),
]


def published_keys(name: str) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in (KEYS_DIR / name).read_text().splitlines():
        if line.strip():
            key, shape = line.split("\t")
            rows.append((key, tuple(ast.literal_eval(shape))))
    return rows


def meta_state_dict(config) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return RestoreFormer(config).state_dict()


@pytest.mark.parametrize(("config", "tsv", "params", "tensors"), PUBLISHED)
def test_state_dict_matches_published_list(config, tsv, params, tensors):
    ours = [(k, tuple(v.shape)) for k, v in meta_state_dict(config).items()]
    published = published_keys(tsv)
    assert len(published) == tensors
    assert ours == published  # names, order and shapes
    assert sum(torch.Size(s).numel() for _, s in ours) == params


def test_plusplus_adds_exactly_the_32px_decoder_attention():
    rf = {k for k, _ in published_keys("restoreformer_keys.tsv")}
    rfpp = {k for k, _ in published_keys("restoreformer_plusplus_keys.tsv")}
    extra = rfpp - rf
    assert rf < rfpp
    assert len(extra) == 36
    assert {k.rsplit(".", 2)[0] for k in extra} == {f"decoder.up.4.attn.{i}" for i in range(3)}


@pytest.mark.parametrize(("config", "tsv", "params", "tensors"), PUBLISHED)
def test_variant_is_detected_from_published_keys(config, tsv, params, tensors):
    """Detection from the published list alone (no metadata) gives back the exact variant,
    heads included (heads change no shape, so they come from the variant)."""
    state = {k: torch.empty(shape, device="meta") for k, shape in published_keys(tsv)}
    assert detect_config(state) == config


@pytest.mark.parametrize("base", [RESTOREFORMER, RESTOREFORMER_PLUSPLUS], ids=["RF", "RF++"])
@pytest.mark.parametrize(
    "changes",
    [{}, {"ch_mult": (1, 2, 2, 4), "resolution": 128}, {"encoder_blocks": 1, "decoder_blocks": 2, "n_embed": 64}],
    ids=["tiny", "four-levels", "fewer-blocks"],
)
def test_small_geometries_round_trip_through_detection(base, changes):
    config = tiny_config(base, **changes)
    assert detect_config(meta_state_dict(config)) == config
