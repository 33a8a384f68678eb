"""Paste-back: untouched pixels stay bit-identical, the mask is what it claims, overlaps follow
the faces' order, alpha is never written, and the colour match removes a colour cast."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from helpers.numerics import elementwise_check, max_slope, resampling_bound, unit_roundoff
from helpers.pipeline import landmarks_at, make_faces

from restoreformer_node.faces.alignment import face_arrays, warp_to_crops
from restoreformer_node.faces.color import lab_to_rgb, match_colors, rgb_to_lab
from restoreformer_node.faces.paste import crop_space_mask, paste_faces
from restoreformer_node.faces.pipeline import paste_crops

U = unit_roundoff(torch.float32)
# A constant crop pasted, or a blend written by hand: the bilinear sample of a constant (about 3
# roundings) and the blend region + (crop - region) x mask (about 3): 8 u of values <= 1.
BLEND = 8 * U


def _image(b, h, w, c=3, seed=0):
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


def _lab_round_trip_bound(rgb: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |lab_to_rgb(rgb_to_lab(rgb)) - rgb| in float32.

    The maps are inverse up to their float32 constants (the XYZ matrix's inverse is taken in
    float32): a float64 run with those constants shows that part exactly. float32 adds its
    rounding, bounded from float64 derivatives: each of the ~16 roundings on either side (sRGB
    curve, 3x3 matrix, cube root, Lab's affine maps) is at most u of the magnitude it rounds and
    reaches the output through d(sRGB)/d(Lab). Lab's magnitudes are those of its terms (116 f_y
    and 16, 500 f_x and 500 f_y, ...), not of their difference, so the cancellation near black
    is covered."""
    lab = rgb_to_lab(rgb.double()).requires_grad_()
    back = lab_to_rgb(lab)
    constants = (back.detach() - rgb.double()).abs()
    fy = (lab.detach()[:, 0] + 16) / 116
    fx, fz = fy + lab.detach()[:, 1] / 500, fy - lab.detach()[:, 2] / 200
    terms = torch.stack([116 * fy + 16, 500 * (fx.abs() + fy), 200 * (fy + fz.abs())], 1)
    sensitivity = sum(
        (torch.autograd.grad(back[:, k].sum(), lab, retain_graph=True)[0].abs() * terms).sum(1, keepdim=True)
        for k in range(3)
    )
    return constants + 32 * U * (sensitivity + 1)


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
    assert (out[0][full] - 0.7).abs().max() <= BLEND
    partial = (mask[0] > 0) & (mask[0] < 1)
    expected = 0.2 + (0.7 - 0.2) * mask[0][partial]
    assert (out[0][partial] - expected.unsqueeze(-1)).abs().max() <= BLEND


def test_mask_in_the_image_is_the_crop_mask_carried_by_the_inverse_warp():
    H, W = 240, 240
    faces = make_faces([(0, landmarks_at(120, 120, 100, 25))], 1, H, W)
    index, affines, S = face_arrays(faces, 128)
    _, mask = paste_faces(torch.zeros(1, H, W, 3), torch.zeros(1, 3, S, S), index, affines, erode=16, feather=60)
    # warping the image-space mask back to the crop reproduces the crop-space mask
    back = warp_to_crops(mask[..., None].expand(1, H, W, 3).contiguous(), index, affines, S, border="edge").crops[0, 0]
    ref = crop_space_mask(S, erode=16, feather=60)
    # The image-space mask is the crop mask sampled at image pixels; warping back interpolates
    # those samples bilinearly on a grid of `step` crop pixels: error <= step^2 / 4 x the mask's
    # largest second directional derivative. Each side is a smoothstep ramp of width F (second
    # derivative <= 6 / F^2, slope <= 1.5 / F; the two ramps of a side do not overlap here), and
    # the cross term of the product is <= (1.5 / F)^2: <= 8.25 / F^2 in all.
    feather = 60 * S / 512
    step = float(affines[0, :, :2].det().abs().sqrt())  # crop pixels per image pixel
    bound = step**2 / 4 * 8.25 / feather**2 + resampling_bound(1.5 / feather * step, max(H, W))
    err = (back - ref).abs()
    print(f"mask warped back: max {err.max():.3g}, mean {err.mean():.3g}; bound {bound:.3g}")
    assert err.max() <= bound
    # Where the mask is flat (0 or 1) over an interpolation's support, interpolation is exact:
    # only pixels within `step` + 1 of the ramps can carry the error.
    ramps = ((ref > 0) & (ref < 1)).float()[None, None]
    reach = int(step) + 1
    near = F.max_pool2d(ramps, 2 * reach + 1, stride=1, padding=reach).mean()
    assert err.mean() <= bound * near


def test_overlapping_faces_composite_in_list_order():
    H, W = 200, 200
    lm = landmarks_at(100, 100, 90, 0)
    shifted = lm + torch.tensor([4.0, 2.0], dtype=torch.float64)
    faces = make_faces([(0, lm), (0, shifted)], 1, H, W)
    index, affines, S = face_arrays(faces, 64)
    crops = torch.stack([torch.full((3, S, S), 0.1), torch.full((3, S, S), 0.9)])
    out, mask = paste_faces(torch.zeros(1, H, W, 3), crops, index, affines)
    centre = out[0, 100, 100]
    assert (centre - 0.9).abs().max() <= BLEND  # the later face is on top
    out_rev, _ = paste_faces(torch.zeros(1, H, W, 3), crops.flip(0), index.flip(0), affines.flip(0))
    assert (out_rev[0, 100, 100] - 0.1).abs().max() <= BLEND


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
    elementwise_check(lab_to_rgb(rgb_to_lab(rgb)) - rgb, _lab_round_trip_bound(rgb), "Lab round trip")
    # White: the published matrix's rows sum to the D65 white point to 7 digits, so f = 1 up to a
    # few roundings and Lab = (100, 0, 0) within Lab's scales (116, 500, 200) x 16 u.
    white = rgb_to_lab(torch.ones(1, 3, 1, 1))
    assert ((white.flatten() - torch.tensor([100.0, 0.0, 0.0])).abs() <= 500 * 16 * U).all()


def test_colour_match_removes_a_colour_cast_and_keeps_detail():
    g = torch.Generator().manual_seed(0)
    original = 0.3 + 0.4 * torch.rand(3, 3, 32, 32, generator=g)
    detail = 0.05 * torch.randn(3, 1, 32, 32, generator=g)
    restored = (original + detail + torch.tensor([0.12, -0.05, 0.02]).view(1, 3, 1, 1)).clamp(0, 1)
    weight = torch.ones(1, 1, 32, 32)
    fixed = match_colors(restored, original, weight, "mean")
    lab_o, lab_f, lab_r = rgb_to_lab(original), rgb_to_lab(fixed), rgb_to_lab(restored)
    # Criteria in Lab units (a just-noticeable difference is ~1), not rounding: clipping to
    # [0, 1] after the shift is what keeps the means from meeting exactly.
    assert (lab_f.mean((2, 3)) - lab_o.mean((2, 3))).abs().max() < 0.2
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
    # The weighted region already matches: the shift is rounding only, and the result is the Lab
    # round trip of 0.5 (plus the shift's own rounding, a second round trip's worth).
    bound = 2 * _lab_round_trip_bound(original)[..., 8:]
    elementwise_check(out[..., 8:] - 0.5, bound.expand_as(out[..., 8:]), "weighted colour match")


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
    # A linear ramp survives both warps up to rounding; the colour match then shifts by (rounding
    # of) zero and makes two Lab round trips.
    lab = 2 * _lab_round_trip_bound(images.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    bound = resampling_bound(max_slope(images), max(H, W), warps=2) + lab
    elementwise_check(out - images, bound.expand_as(out), "paste_crops of the aligned image")
