"""Paste-back: untouched pixels stay bit-identical, the mask is what it claims, overlaps follow
the faces' order, alpha is never written, and the colour match removes a colour cast."""

from __future__ import annotations

import torch
from helpers.pipeline import landmarks_at, make_faces

from restoreformer_node.faces.alignment import face_arrays, warp_to_crops
from restoreformer_node.faces.color import lab_to_rgb, match_colors, rgb_to_lab
from restoreformer_node.faces.paste import crop_space_mask, paste_faces
from restoreformer_node.faces.pipeline import paste_crops


def _image(b, h, w, c=3, seed=0):
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_only_pixels_under_the_mask_change_and_the_rest_is_bit_identical():
    B, H, W = 2, 180, 240
    images = _image(B, H, W)
    faces = make_faces([(0, landmarks_at(120, 90, 80, 10)), (1, landmarks_at(60, 60, 50, -30))], B, H, W)
    index, affines, S = face_arrays(faces, 64)
    crops = torch.rand(2, 3, S, S, generator=torch.Generator().manual_seed(1))
    out, mask = paste_faces(images, crops, index, affines, erode=8, feather=40)
    outside = mask == 0
    assert torch.equal(out[outside], images[outside])
    changed = (out != images).any(-1)
    assert not (changed & outside).any()
    assert changed.sum() > 0.9 * (mask > 0).sum()  # random crops differ almost everywhere
    assert mask.max() == 1.0 and mask.min() == 0.0
    assert (mask[0] > 0).any() and (mask[1] > 0).any()


def test_deep_inside_the_mask_the_crop_replaces_the_image():
    """Warp an image to a crop and back: where the mask is 1 the result is the image resampled
    twice (close to it), and a constant crop pastes as that constant."""
    H, W = 200, 200
    images = torch.full((1, H, W, 3), 0.2)
    faces = make_faces([(0, landmarks_at(100, 100, 90, 0))], 1, H, W)
    index, affines, S = face_arrays(faces, 64)
    crops = torch.full((1, 3, S, S), 0.7)
    out, mask = paste_faces(images, crops, index, affines, erode=8, feather=40)
    full = mask[0] == 1
    assert full.sum() > 500
    assert torch.allclose(out[0][full], torch.tensor(0.7), atol=1e-6)
    partial = (mask[0] > 0) & (mask[0] < 1)
    expected = 0.2 + (0.7 - 0.2) * mask[0][partial]
    assert torch.allclose(out[0][partial], expected.unsqueeze(-1).expand(-1, 3), atol=1e-6)


def test_mask_in_the_image_is_the_crop_mask_carried_by_the_inverse_warp():
    H, W = 240, 240
    faces = make_faces([(0, landmarks_at(120, 120, 100, 25))], 1, H, W)
    index, affines, S = face_arrays(faces, 128)
    _, mask = paste_faces(torch.zeros(1, H, W, 3), torch.zeros(1, 3, S, S), index, affines, erode=16, feather=60)
    # warping the image-space mask back to the crop reproduces the crop-space mask
    back = warp_to_crops(mask[..., None].expand(1, H, W, 3).contiguous(), index, affines, S, border="edge").crops[0, 0]
    ref = crop_space_mask(S, erode=16, feather=60)
    assert (back - ref).abs().max() < 0.03
    assert (back - ref).abs().mean() < 2e-3


def test_overlapping_faces_composite_in_list_order():
    H, W = 200, 200
    lm = landmarks_at(100, 100, 90, 0)
    shifted = lm + torch.tensor([4.0, 2.0], dtype=torch.float64)
    faces = make_faces([(0, lm), (0, shifted)], 1, H, W)
    index, affines, S = face_arrays(faces, 64)
    crops = torch.stack([torch.full((3, S, S), 0.1), torch.full((3, S, S), 0.9)])
    out, mask = paste_faces(torch.zeros(1, H, W, 3), crops, index, affines)
    centre = out[0, 100, 100]
    assert torch.allclose(centre, torch.tensor(0.9))  # the later face is on top
    out_rev, _ = paste_faces(torch.zeros(1, H, W, 3), crops.flip(0), index.flip(0), affines.flip(0))
    assert torch.allclose(out_rev[0, 100, 100], torch.tensor(0.1))


def test_alpha_is_never_written_and_gray_stays_one_channel():
    H, W = 160, 160
    rgba = _image(1, H, W, 4)
    faces = make_faces([(0, landmarks_at(80, 80, 70, 0))], 1, H, W)
    index, affines, S = face_arrays(faces, 64)
    out, mask = paste_faces(rgba, torch.rand(1, 3, S, S), index, affines)
    assert torch.equal(out[..., 3], rgba[..., 3])
    assert (out[..., :3] != rgba[..., :3]).any()
    gray = _image(1, H, W, 1)
    out_g, _ = paste_faces(gray, torch.rand(1, 1, S, S), index, affines)
    assert out_g.shape == gray.shape


def test_zero_feather_gives_a_hard_mask():
    H, W = 160, 160
    faces = make_faces([(0, landmarks_at(80, 80, 70, 0))], 1, H, W)
    index, affines, S = face_arrays(faces, 64)
    _, mask = paste_faces(torch.zeros(1, H, W, 3), torch.ones(1, 3, S, S), index, affines, erode=4, feather=0)
    assert set(mask.unique().tolist()) == {0.0, 1.0}


def test_lab_round_trip():
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert (lab_to_rgb(rgb_to_lab(rgb)) - rgb).abs().max() < 1e-4
    white = rgb_to_lab(torch.ones(1, 3, 1, 1))
    assert torch.allclose(white.flatten(), torch.tensor([100.0, 0.0, 0.0]), atol=0.02)


def test_colour_match_removes_a_colour_cast_and_keeps_detail():
    g = torch.Generator().manual_seed(0)
    original = 0.3 + 0.4 * torch.rand(3, 3, 32, 32, generator=g)
    detail = 0.05 * torch.randn(3, 1, 32, 32, generator=g)
    restored = (original + detail + torch.tensor([0.12, -0.05, 0.02]).view(1, 3, 1, 1)).clamp(0, 1)
    weight = torch.ones(1, 1, 32, 32)
    fixed = match_colors(restored, original, weight, "mean")
    lab_o, lab_f, lab_r = rgb_to_lab(original), rgb_to_lab(fixed), rgb_to_lab(restored)
    assert (lab_f.mean((2, 3)) - lab_o.mean((2, 3))).abs().max() < 0.2  # Lab units (JND ~ 1)
    assert (lab_r.mean((2, 3)) - lab_o.mean((2, 3))).abs().max() > 3
    # the detail (deviation from the mean) is kept by "mean"
    dev_f = lab_f - lab_f.mean((2, 3), keepdim=True)
    dev_r = lab_r - lab_r.mean((2, 3), keepdim=True)
    assert (dev_f - dev_r).abs().mean() < 0.2
    stretched = match_colors(restored, original, weight, "mean_std")
    lab_s = rgb_to_lab(stretched)
    assert (lab_s.std((2, 3)) - lab_o.std((2, 3))).abs().max() < 0.3
    assert torch.equal(match_colors(restored, original, weight, "none"), restored)


def test_colour_match_counts_only_the_weighted_region():
    original = torch.full((1, 3, 16, 16), 0.5)
    restored = torch.full((1, 3, 16, 16), 0.5)
    restored[..., :8] = 0.9  # a different colour where the weight is zero
    weight = torch.zeros(1, 1, 16, 16)
    weight[..., 8:] = 1
    out = match_colors(restored, original, weight, "mean")
    assert torch.allclose(out[..., 8:], torch.tensor(0.5), atol=1e-4)


def test_paste_crops_of_the_aligned_image_is_nearly_the_identity():
    """paste_crops with IMAGE-layout crops from the image itself: close to the input, exact outside."""
    from restoreformer_node.faces.pipeline import align_faces

    H, W = 200, 260
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    images = torch.stack([xx, yy, 0.5 * (xx + yy)], -1)[None]
    faces = make_faces([(0, landmarks_at(130, 100, 90, 5))], 1, H, W)
    crops = align_faces(images, faces, crop_size=256)
    out, mask = paste_crops(images, crops, faces, color_match="mean")
    assert torch.equal(out[mask == 0], images[mask == 0])
    assert (out - images).abs().max() < 2e-3
