"""Alignment: the batched warp puts template points exactly where the similarity transform says,
matches OpenCV's warpAffine (what facexlib and the released inference use), and cutting windows
instead of whole images changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.numerics import max_slope, resampling_bound
from helpers.pipeline import landmarks_at, make_faces

from restoreformer_node.faces.alignment import (
    FACEXLIB_GREY,
    crop_footprints,
    face_arrays,
    plan_windows,
    scale_affines,
    warp_to_crops,
)
from restoreformer_node.faces.template import TEMPLATE_512, invert_affine


def _ramp_image(h: int, w: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([xx / w, yy / h, (xx + yy) / (w + h)], dim=-1)[None]


def _smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // 16 + 2, w // 16 + 2, generator=g)
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1).permute(0, 2, 3, 1)


def test_crop_pixels_sample_the_inverse_mapped_source_point():
    """On a linear ramp, bilinear sampling is exact, so each crop pixel must hold the ramp's value
    at A^-1 (u, v): this pins the pixel-centre convention (no half-pixel shift)."""
    H, W = 300, 400
    faces = make_faces([(0, landmarks_at(200, 150, 120, 15))], 1, H, W)
    index, affines, S = face_arrays(faces)
    crops = warp_to_crops(_ramp_image(H, W), index, affines, S, border="edge").crops[0].double()
    inv = invert_affine(affines[0])
    u = torch.arange(S, dtype=torch.float64)
    U, V = torch.meshgrid(u, u, indexing="xy")
    X = inv[0, 0] * U + inv[0, 1] * V + inv[0, 2]
    Y = inv[1, 0] * U + inv[1, 1] * V + inv[1, 2]
    inside = (X >= 0) & (X <= W - 1) & (Y >= 0) & (Y <= H - 1)
    assert inside.all()
    # Exact in exact arithmetic; float32 rounds the sample positions (x up to W pixels, a ramp of
    # slope 1/W) and the values.
    bound = resampling_bound(1 / min(H, W), max(H, W))
    assert (crops[0] - X / W).abs().max() <= bound
    assert (crops[1] - Y / H).abs().max() <= bound


def test_landmarks_land_on_the_template():
    """Gaussian dots drawn at the 5 source landmarks appear, after the warp, centred on the
    template points of the crop (sub-pixel, for a rotated and scaled face)."""
    H, W = 360, 480
    lm = landmarks_at(250, 170, 150, -20)
    faces = make_faces([(0, lm)], 1, H, W)
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    index, affines, S = face_arrays(faces)
    # float64 least squares on points that are an exact similarity of the template: the fit is
    # exact up to cond(design) (~1e3 for coordinates of a few hundred) x 1.1e-16 x 512 ~ 1e-10.
    assert torch.allclose((affines[0][:, :2] @ lm.T).T + affines[0][:, 2], TEMPLATE_512, rtol=0, atol=1e-9)
    for k in range(5):
        dot = torch.exp(-((xx - lm[k, 0]) ** 2 + (yy - lm[k, 1]) ** 2) / (2 * 2.0**2)).float()
        img = dot[None, :, :, None].expand(1, H, W, 3).contiguous()
        crop = warp_to_crops(img, index, affines, S, border="constant").crops[0, 0].double()
        u = torch.arange(S, dtype=torch.float64)
        # centroid within a window around the expected point, background removed
        cx, cy = TEMPLATE_512[k]
        x0, y0 = int(cx) - 40, int(cy) - 40
        patch = crop[y0 : y0 + 81, x0 : x0 + 81]
        wsum = patch.sum()
        mx = (patch.sum(0) * u[x0 : x0 + 81]).sum() / wsum
        my = (patch.sum(1) * u[y0 : y0 + 81]).sum() / wsum
        # A geometric criterion (1/20 pixel): bilinear resampling keeps an isolated dot's centroid
        # up to sampling effects, and float rounding moves it by orders of magnitude less.
        assert abs(mx - cx) < 0.05 and abs(my - cy) < 0.05, (k, mx, my, cx, cy)


@pytest.mark.parametrize("border", ["constant", "edge", "reflect"])
def test_windows_equal_a_warp_of_the_whole_image(border):
    """Faces of very different sizes, some leaving the image, across a batch of 3: the windowed,
    grouped warp equals grid_sample over whole images with the same convention."""
    B, H, W = 3, 240, 320
    images = _smooth_image(H, W * B).reshape(1, H, B, W, 3).permute(2, 1, 3, 4, 0)[..., 0].contiguous()
    items = [
        (0, landmarks_at(160, 120, 90, 5)),
        (0, landmarks_at(20, 30, 60, 30)),  # leaves the top-left corner
        (1, landmarks_at(300, 220, 40, -10)),  # small, leaves the bottom-right
        (2, landmarks_at(160, 130, 260, 0)),  # larger than the image
        (2, landmarks_at(250, 60, 25, 45)),
    ]
    faces = make_faces(items, B, H, W)
    index, affines, S = face_arrays(faces, 128)
    got = warp_to_crops(images, index, affines, S, border=border)
    # reference: every face sampled from its whole image
    grey = torch.tensor(FACEXLIB_GREY).view(1, 3, 1, 1)
    full = images.permute(0, 3, 1, 2)[index]
    if border == "constant":
        full = full - grey
    D = torch.tensor([[S / 2, 0, (S - 1) / 2], [0, S / 2, (S - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    N = torch.tensor([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1], [0, 0, 1]], dtype=torch.float64)
    inv = torch.cat([invert_affine(affines), torch.tensor([[[0, 0, 1.0]]], dtype=torch.float64).expand(5, 1, 3)], 1)
    theta = (N @ inv @ D)[:, :2].float()
    grid = F.affine_grid(theta, [5, 3, S, S], align_corners=False)
    pad = {"constant": "zeros", "edge": "border", "reflect": "reflection"}[border]
    ref = F.grid_sample(full, grid, mode="bilinear", padding_mode=pad, align_corners=False)
    if border == "constant":
        ref = ref + grey
    # The same bilinear samples at positions computed two ways: they differ by float32 rounding of
    # positions up to the image's extent, times the interpolant's steepest slope (the constant
    # border's fade to grey included), and by the rounding of the values.
    slope = max_slope(images, pad=FACEXLIB_GREY if border == "constant" else None)
    assert (got.crops - ref).abs().max() <= resampling_bound(slope, max(H, W), warps=2)
    assert got.valid.min() == 0 and got.valid.max() == 1  # some crops reach outside the image


def test_constant_border_matches_opencv_warpaffine():
    """facexlib aligns with cv2.warpAffine (bilinear, constant grey border). OpenCV may round each
    sample position to 1/32 pixel (its INTER_BITS fixed-point maps): at most 1/64 pixel per axis,
    which moves a value by at most (steepest x slope + steepest y slope) / 64 of the image padded
    with the border grey; plus the float32 rounding of both warps."""
    cv2 = pytest.importorskip("cv2")
    H, W = 200, 260
    img = _smooth_image(H, W, seed=3)
    faces = make_faces([(0, landmarks_at(40, 60, 120, 12))], 1, H, W)
    index, affines, S = face_arrays(faces)
    got = warp_to_crops(img, index, affines, S, border="constant").crops[0].permute(1, 2, 0).numpy()
    ref = cv2.warpAffine(
        img[0].numpy(), affines[0].numpy(), (S, S), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=FACEXLIB_GREY,
    )
    x = img.double().permute(0, 3, 1, 2)
    inner = float(x.diff(dim=3).abs().max()) + float(x.diff(dim=2).abs().max())
    x = torch.cat([F.pad(x[:, c : c + 1], (1, 1, 1, 1), value=v) for c, v in enumerate(FACEXLIB_GREY)], 1)
    outer = float(x.diff(dim=3).abs().max()) + float(x.diff(dim=2).abs().max())
    # Crop pixels whose bilinear taps (after the 1/64 shift) stay inside the image see only its
    # own slopes; the rest may see the fade to the border grey.
    inv = invert_affine(affines[0])
    u = torch.arange(S, dtype=torch.float64)
    U, V = torch.meshgrid(u, u, indexing="xy")
    X = inv[0, 0] * U + inv[0, 1] * V + inv[0, 2]
    Y = inv[1, 0] * U + inv[1, 1] * V + inv[1, 2]
    interior = ((X >= 0.1) & (X <= W - 1.1) & (Y >= 0.1) & (Y <= H - 1.1)).numpy()[..., None]
    rounding = resampling_bound(max_slope(img, pad=FACEXLIB_GREY), max(H, W), warps=2)
    bound = np.where(interior, inner, outer) / 64 + rounding
    print(f"against OpenCV: max {np.abs(got - ref).max():.3g}, bound {inner / 64:.3g} inside, {outer / 64:.3g} at the border")
    assert (np.abs(got - ref) <= bound).all()
    assert interior.mean() > 0.5  # the inside bound is the one that counts for most of the crop


def test_similar_faces_share_one_window_group_and_outliers_do_not():
    H, W = 1000, 1000
    lms = [landmarks_at(100 + 150 * i, 300, 80 + 3 * i, 0) for i in range(5)]
    faces = make_faces([(0, lm) for lm in lms] + [(0, landmarks_at(500, 700, 600, 0))], 1, H, W)
    _, affines, S = face_arrays(faces)
    groups = plan_windows(crop_footprints(affines, S), H, W)
    assert sorted(len(g.indices) for g in groups) == [1, 5]
    for g in groups:  # every window lies inside the image and holds its face's footprint
        boxes = crop_footprints(affines[g.indices], S)
        ox, oy = g.origins[:, 0].double(), g.origins[:, 1].double()
        assert (ox >= 0).all() and (oy >= 0).all() and (ox + g.width <= W).all() and (oy + g.height <= H).all()
        assert (ox <= boxes[:, 0].clamp(min=0)).all() and (ox + g.width - 1 >= boxes[:, 2].clamp(max=W - 1)).all()


def test_scale_affines_to_a_smaller_crop_maps_landmarks_to_the_scaled_template():
    lm = landmarks_at(100, 100, 80, 7)
    faces = make_faces([(0, lm)], 1, 200, 200)
    _, affines, _ = face_arrays(faces, 64)
    mapped = (affines[0][:, :2] @ lm.T).T + affines[0][:, 2]
    assert torch.allclose(mapped, TEMPLATE_512 * (64 / 512), rtol=0, atol=1e-9)  # float64 fit, as above
    assert torch.equal(scale_affines(faces.affines(), 512, 64), affines)  # x 1/8: exact in binary


def test_gray_and_rgba_inputs_warp_their_colour_channels_only():
    H, W = 200, 240
    rgb = _smooth_image(H, W)
    rgba = torch.cat([rgb, torch.rand(1, H, W, 1)], dim=-1)
    gray = rgb[..., :1].contiguous()
    faces = make_faces([(0, landmarks_at(120, 100, 70, 0))], 1, H, W)
    index, affines, S = face_arrays(faces, 64)
    a = warp_to_crops(rgba, index, affines, S).crops
    b = warp_to_crops(rgb, index, affines, S).crops
    g = warp_to_crops(gray, index, affines, S).crops
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b)
    # The same sample weights for every channel: the gray crop is the RGB crop's red channel, bit
    # for bit (the crop stays inside the image, so the border fill, luma grey for one channel,
    # plays no part).
    assert g.shape == (1, 1, 64, 64) and torch.equal(g[:, 0], b[:, 0])
