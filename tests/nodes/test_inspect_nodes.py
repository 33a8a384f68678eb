"""The inspection nodes, run through their node functions with ComfyUI's own modules (CPU mode).

The model is a small random RestoreFormer / RestoreFormer++ of the real architecture (pretrained
weights cannot be had offline), written by the test as .safetensors and loaded by the pack's model
loader into a ComfyUI ModelPatcher. The faces are the real test photos: aligned inside the nodes
from the image (MTCNN, whose weights ship in its wheel), or passed as square crops.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.comfy_host import import_comfy
from helpers.inspection import face_crops
from helpers.models import random_restoreformer
from helpers.numerics import REORDER, error, float64_twin, ulp_floor, unit_roundoff

from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, tiny_config

# At import, as test_restore_nodes does: pytest imports the pack's root __init__.py (which imports
# the nodes, which import comfy) before the first test of a run starts.
import_comfy()

VARIANTS = {"RF": RESTOREFORMER, "RF++": RESTOREFORMER_PLUSPLUS}
NODE_IDS = (
    "RestoreFormerDictionaryAtlas",
    "RestoreFormerCodeUsage",
    "RestoreFormerCodeMap",
    "RestoreFormerAttentionMap",
)


@pytest.fixture(scope="module")
def nodes():
    from restoreformer_node.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, inspect_nodes

    return NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, inspect_nodes


@pytest.fixture(scope="module", params=list(VARIANTS))
def rf_model(request, nodes, tmp_path_factory):
    from restoreformer_node.nodes.model_nodes import load_rf_model
    from restoreformer_node.weights import save_restoreformer

    config = tiny_config(VARIANTS[request.param])
    path = tmp_path_factory.mktemp("models") / f"tiny_{request.param.replace('+', 'p')}.safetensors"
    save_restoreformer(random_restoreformer(config), path, config)
    return load_rf_model(str(path), path.name)


@pytest.fixture(scope="module")
def photo(astronaut):
    """The astronaut as a ComfyUI IMAGE [1, 512, 512, 3]."""
    return torch.from_numpy(astronaut).float().div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def crops_image(astronaut, grace_hopper):
    """Two square face crops as an IMAGE [2, 512, 512, 3]."""
    return face_crops(astronaut, grace_hopper).permute(0, 2, 3, 1).contiguous()


def run(nodes, node_id, **inputs):
    cls = nodes[0][node_id]
    return getattr(cls(), cls.FUNCTION)(**inputs)


def test_nodes_are_registered(nodes):
    """(Tooltips and help pages of every node: tests/nodes/test_registry_hygiene.py.)"""
    classes, names = nodes[0], nodes[1]
    for node_id in NODE_IDS:
        assert node_id in classes and names[node_id].endswith(" (RestoreFormer)")


def test_atlas_node_sizes_orders_and_cache(nodes, rf_model, crops_image):
    from restoreformer_node import inspection

    n = rf_model.config.n_embed
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    base = dict(model=rf_model, cells=1, order="index", entries="", limit=0, columns=0, scale=2, gap=1)
    atlas, info = run(nodes, "RestoreFormerDictionaryAtlas", **base)
    tile = 2 * 4  # 4 px per latent cell at the tiny geometry, scaled x2
    assert atlas.shape == (1, rows * tile + rows - 1, columns * tile + columns - 1, 3)
    assert atlas.dtype == torch.float32 and atlas.device.type == "cpu"
    assert f"{n} of {n} entries" in info

    decoded = inspection.DEFAULT_CACHE.decoded_entries
    used, _ = run(
        nodes, "RestoreFormerDictionaryAtlas", **{**base, "order": "usage", "limit": 16, "columns": 4},
        crops=crops_image,
    )
    assert used.shape == (1, 4 * tile + 3, 4 * tile + 3, 3)
    assert inspection.DEFAULT_CACHE.decoded_entries == decoded  # tiles came from the cache
    # The first tile is the most used entry over the two faces.
    network = rf_model.model
    codes = inspection.encode_codes(network, crops_image.permute(0, 3, 1, 2))
    top = int(inspection.code_usage(codes.indices, n).top(1)[0][0])
    direct = inspection.decode_entries(network, [top])[0]
    shown = used[0, :tile:2, :tile:2].permute(2, 0, 1)
    # The atlas shows the tile decoded in another batch and stored in float16: one float16
    # rounding (u16 relative), plus both float32 decodes' errors against a float64 decode (the
    # cached one within REORDER x the direct one's; a 1x1 latent decode is ill-conditioned, so
    # this part is measured rather than assumed small).
    truth = inspection.decode_entries(float64_twin(network), [top])[0]
    decode = max(error(direct, truth).max, ulp_floor(truth).max)
    bound = unit_roundoff(torch.float16) * shown.abs() + (1 + REORDER) * decode
    assert bool(((shown - direct).abs() <= bound).all())

    subset, info = run(nodes, "RestoreFormerDictionaryAtlas", **{**base, "entries": "3-5, 9", "scale": 1})
    assert subset.shape == (1, 2 * 4 + 1, 2 * 4 + 1, 3) and "tile order: 3, 4, 5, 9" in info
    with pytest.raises(ValueError, match="usage"):
        run(nodes, "RestoreFormerDictionaryAtlas", **{**base, "order": "usage"})


def test_code_usage_node_on_a_photo(nodes, rf_model, photo):
    plot, summary = run(nodes, "RestoreFormerCodeUsage", model=rf_model, width=800, height=400, top=5,
                        batch_size=4, image=photo)
    assert plot.shape == (1, 400, 800, 3)
    assert "faces: 1, latent cells per face: 256, cells: 256" in summary
    assert "perplexity" in summary and "MTCNN" in summary


def test_code_map_node_on_a_photo_and_on_crops(nodes, rf_model, photo, crops_image):
    code_map, heat, mask, image_mask = run(
        nodes, "RestoreFormerCodeMap", model=rf_model, opacity=0.6, grid=True, normalise="per face",
        smooth=True, batch_size=4, image=photo,
    )
    assert code_map.shape == heat.shape == (1, 512, 512, 3)
    assert mask.shape == (1, 512, 512) and float(mask.max()) == 1.0  # the peak divided by itself
    assert image_mask.shape == (1, 512, 512)  # the photo's size
    assert float(image_mask[0, :8, :8].max()) == 0  # far from the face: untouched by the mask
    assert 0 < float(image_mask.max()) <= 1

    code_map, heat, mask, image_mask = run(
        nodes, "RestoreFormerCodeMap", model=rf_model, opacity=0.6, grid=False, normalise="batch",
        smooth=False, batch_size=1, crops=crops_image,
    )
    assert code_map.shape == heat.shape == (2, 512, 512, 3)
    assert mask.shape == (2, 512, 512) and torch.equal(image_mask, mask)
    assert float(mask.max()) == 1.0


def test_attention_node_sizes_and_units(nodes, rf_model, crops_image, photo):
    heads = rf_model.config.heads
    levels = len(rf_model.config.decoder_attn_resolutions)
    common = dict(model=rf_model, block="first", tile=64, opacity=0.65, batch_size=2)
    out = run(nodes, "RestoreFormerAttentionMap", x=0.377, y=0.469, units="relative (0..1)",
              crops=crops_image, **common)
    maps, mask, info = out["result"]
    assert maps.shape == (2, levels * 64, (heads + 1) * 64, 3)
    assert mask.shape == (2, 512, 512)
    assert info.count("query cell") == levels
    # The node shows the first crop (the picture its x, y refer to) for the click-to-pick extension.
    (shown,) = out["ui"][nodes[2].QUERY_CROP_UI]
    assert shown["type"] == "temp"
    import folder_paths
    from PIL import Image

    saved = Image.open(Path(folder_paths.get_temp_directory()) / shown["subfolder"] / shown["filename"])
    expected = (crops_image[0] * 255).round().to(torch.uint8).numpy()
    assert saved.size == (512, 512) and (abs(np.asarray(saved).astype(int) - expected).max() <= 1)
    in_pixels, _, _ = run(nodes, "RestoreFormerAttentionMap", x=0.377 * 512, y=0.469 * 512, units="crop pixels",
                          crops=crops_image, **common)["result"]
    assert torch.equal(in_pixels, maps)  # x 512 then / 512 is exact: the same point, the same sheet
    from_photo, _, _ = run(nodes, "RestoreFormerAttentionMap", x=0.5, y=0.5, units="relative (0..1)",
                           image=photo, **{**common, "block": "mid"})["result"]
    assert from_photo.shape == (1, levels * 64, (heads + 1) * 64, 3)
    with pytest.raises(ValueError, match="outside the crop"):
        run(nodes, "RestoreFormerAttentionMap", x=700, y=10, units="crop pixels", crops=crops_image, **common)


def test_nodes_name_missing_faces(nodes, rf_model):
    with pytest.raises(ValueError, match="crops"):
        run(nodes, "RestoreFormerCodeUsage", model=rf_model, width=800, height=400, top=5, batch_size=4)
    with pytest.raises(ValueError, match="square"):
        run(nodes, "RestoreFormerCodeMap", model=rf_model, opacity=0.6, grid=True, normalise="per face",
            smooth=True, batch_size=4, crops=torch.rand(1, 64, 48, 3))
