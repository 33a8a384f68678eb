"""Whole-image upscaling with spandrel models in tiles (runtime/upscale.py), on random-weight
Real-ESRGAN Compact networks loaded by spandrel's own loader (no downloads)."""

from __future__ import annotations

import pytest
import torch
from helpers.spandrel_models import compact_upscaler, small_gfpgan

from restoreformer_node.runtime.face_models import FaceModelError, SpandrelFaceModel
from restoreformer_node.runtime.upscale import (
    LUMA,
    UpscaleModelError,
    check_upscale_model,
    edge_weights,
    tile_starts,
    upscale_images,
)


def _whole(descriptor, images):
    """The model on the whole image at once: what tiling must reproduce."""
    return descriptor(images.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def upscaler():
    return compact_upscaler(scale=2, num_conv=4)  # receptive field: 5 input pixels


def test_tiles_cover_the_axis_and_blend_weights_partition_the_overlap():
    for length, tile, overlap in [(150, 72, 32), (512, 512, 32), (1000, 256, 64), (73, 72, 32)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, length) == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))
        covered = torch.zeros(length)
        for i, s in enumerate(starts):
            covered[s : s + tile] += edge_weights(min(tile, length), overlap, i == 0, i == len(starts) - 1)
        assert bool((covered > 0).all())
    w = edge_weights(64, 32, first=False, last=False)
    assert float(w[:8].abs().max()) == 0.0 and float(w[-8:].abs().max()) == 0.0  # dead zone: overlap // 4


def test_tiled_upscale_equals_the_whole_image_when_the_receptive_field_fits_the_dead_zone(upscaler):
    # The Compact net sees 5 input pixels around each output; the blend ignores 8 (= 32 / 4) pixels
    # at each inner tile edge, so every blended output is one the model computed on real image
    # content: only float summation order can differ.
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 150, 200, 3, generator=g)
    up = upscale_images(upscaler, images, tile=72, overlap=32)
    assert up.images.shape == (2, 300, 400, 3) and up.scale == 2 and up.tiles > 1
    assert torch.allclose(up.images, _whole(upscaler, images), atol=1e-5, rtol=0)
    # a dead zone shorter than the receptive field does not reproduce it: the dead zone is what matters
    short = upscale_images(upscaler, images, tile=72, overlap=8)
    assert float((short.images - _whole(upscaler, images)).abs().max()) > 1e-4




def test_alpha_is_resized_and_gray_goes_through_the_model_as_rgb(upscaler):
    g = torch.Generator().manual_seed(1)
    rgba = torch.rand(1, 40, 48, 4, generator=g)
    up = upscale_images(upscaler, rgba)
    assert up.images.shape == (1, 80, 96, 4)
    assert torch.allclose(up.images[..., :3], _whole(upscaler, rgba[..., :3]), atol=1e-6)
    alpha = torch.nn.functional.interpolate(rgba[..., 3:].permute(0, 3, 1, 2), scale_factor=2, mode="bicubic")
    assert torch.allclose(up.images[..., 3], alpha[:, 0].clamp(0, 1), atol=1e-6)
    gray = rgba[..., :1]
    out = upscale_images(upscaler, gray).images
    expect = (_whole(upscaler, gray.expand(-1, -1, -1, 3)) * torch.tensor(LUMA)).sum(-1, keepdim=True)
    assert out.shape == (1, 80, 96, 1) and torch.allclose(out, expect.clamp(0, 1), atol=1e-6)


class OutOfMemoryAbove:
    """The real upscaler, failing like a device out of memory for tiles larger than `limit` pixels."""

    def __init__(self, descriptor, limit: int):
        self.descriptor, self.limit, self.sizes = descriptor, limit, []

    def __getattr__(self, name):
        return getattr(self.descriptor, name)

    def __call__(self, x):
        self.sizes.append(max(x.shape[-2:]))
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("simulated")
        return self.descriptor(x)


def test_an_image_smaller_than_a_tile_is_one_model_call(upscaler):
    images = torch.rand(1, 40, 50, 3)
    counted = OutOfMemoryAbove(upscaler, limit=10_000)
    up = upscale_images(counted, images)
    assert up.tiles == 1 and counted.sizes == [50]
    assert torch.allclose(up.images, _whole(upscaler, images), atol=1e-6, rtol=0)


def test_out_of_memory_halves_the_tile_and_the_result_is_the_same(upscaler):
    images = torch.rand(1, 300, 300, 3, generator=torch.Generator().manual_seed(2))
    flaky = OutOfMemoryAbove(upscaler, limit=128)
    up = upscale_images(flaky, images, tile=256, overlap=32)
    assert up.tile == 128 and max(flaky.sizes[1:]) <= 128
    assert torch.allclose(up.images, _whole(upscaler, images), atol=1e-5)


def test_face_models_are_refused_as_upscalers_and_upscalers_as_face_models(upscaler):
    with pytest.raises(UpscaleModelError, match=r"upscale_model: GFPGAN .*restores aligned faces.*model input"):
        check_upscale_model(small_gfpgan())
    with pytest.raises(FaceModelError, match=r"model: RealESRGAN Compact \(2x, SR\) is not a face-restoration model.*upscale_model"):
        SpandrelFaceModel(upscaler)
    with pytest.raises(UpscaleModelError, match="expected a model from Load Upscale Model"):
        check_upscale_model(torch.nn.Identity())
