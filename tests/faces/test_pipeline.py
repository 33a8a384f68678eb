"""The whole pipeline on tensors: detect -> align -> restore -> paste back.

Networks here are either the identity (to measure what alignment and paste-back alone cost) or a
randomly initialised RestoreFormer of the real architecture at the tiny test geometry
(pretrained weights cannot be had offline), whose output is arbitrary but real.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.models import random_restoreformer
from helpers.numerics import (
    forced_codes,
    half_precision_budget,
    recorded_codes,
    resampling_bound,
    unit_roundoff,
)
from helpers.pipeline import landmarks_at, make_faces

from restoreformer_node.faces.detection import find_faces, load_detector
from restoreformer_node.faces.pipeline import align_faces, restore_faces
from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS
from restoreformer_node.runtime import (
    CPU_CHUNK,
    PrecisionPlan,
    activation_bytes_per_crop,
    cast_weights,
    pick_chunk_size,
    plan_precision,
    plan_weight_dtype,
    restore_crops,
)


class Identity(torch.nn.Module):
    """Returns its input: restoration that changes nothing."""

    def forward(self, x):
        return x


class Negate(torch.nn.Module):
    """A cheap network that changes every pixel (colour negative), for tests about plumbing."""

    def forward(self, x):
        return -x


class Counting(torch.nn.Module):
    """Wraps a network and counts its calls and the crops per call."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls: list[int] = []
        self.config = getattr(inner, "config", None)

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.inner(x)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _float(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.copy()).float().div(255)[None]


@pytest.fixture(scope="module")
def photos(astronaut, grace_hopper):
    """Both photos with the faces the pack's detection finds (MTCNN: facenet-pytorch's own weights)."""
    detector = load_detector("mtcnn")
    return [(img, find_faces(detector, _float(img))) for img in (astronaut, grace_hopper)]


def test_identity_network_round_trip_is_above_40db_and_exact_outside_the_mask(photos):
    # The PSNR floors are quality requirements on two bilinear resamplings of a real photo (their
    # loss is the photo's curvature, exact arithmetic); float rounding moves PSNR by far less than 0.01 dB.
    for img, faces in photos:
        assert len(faces) == 1
        images = _float(img)
        model = Counting(Identity())
        out, mask, crops, report = restore_faces(images, model, faces, color_match="none")
        assert report.lines() == [report.head()]  # nothing to tell beyond what was done
        assert model.calls == [1]
        assert crops.shape == (1, 512, 512, 3)
        assert psnr(out, images) >= 40
        inside = mask > 0
        assert inside.float().mean() > 0.02  # the face is a real part of the photo
        assert torch.equal(out[~inside], images[~inside])
        # the face region alone: two bilinear resamplings of a real face
        assert psnr(out[inside], images[inside]) >= 30


def test_identity_with_colour_match_changes_almost_nothing(photos):
    img, faces = photos[0]
    images = _float(img)
    for mode in ("mean", "mean_std"):
        out, mask, _, _ = restore_faces(images, Identity(), faces, color_match=mode)
        assert psnr(out, images) >= 40
        assert torch.equal(out[mask == 0], images[mask == 0])


def _video_batch(frames=8, h=192, w=256, per_frame=3):
    g = torch.Generator().manual_seed(0)
    small = torch.rand(frames, 3, h // 16, w // 16, generator=g)
    images = F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1).permute(0, 2, 3, 1)
    items = []
    for f in range(frames):
        for k in range(per_frame):
            items.append((f, landmarks_at(45 + 80 * k + 2 * f, 90 + f, 50 + 4 * k, 8 * k - 8)))
    return images.contiguous(), make_faces(items, frames, h, w)


def test_random_restoreformer_changes_only_masked_regions_with_one_call_per_chunk():
    images, faces = _video_batch(frames=8, per_frame=2)
    net = Counting(random_restoreformer())
    out, mask, crops, notes = restore_faces(images, net, faces, chunk_size=8)
    assert len(faces) == 16
    assert net.calls == [8, 8]  # 16 crops in 2 calls, not 16
    assert crops.shape == (16, 64, 64, 3)  # aligned at the model's resolution
    outside = mask == 0
    assert torch.equal(out[outside], images[outside])
    changed = (out != images).any(-1)
    assert changed[mask > 0.5].float().mean() > 0.99  # a random network changes every face pixel
    assert not (changed & outside).any()
    for f in range(8):
        assert (mask[f] > 0).any()


def test_default_chunking_on_cpu_and_the_progress_callback():
    images, faces = _video_batch(frames=3, per_frame=3)
    net = Counting(Negate())
    seen = []
    restore_faces(images, net, faces, progress=lambda done, total: seen.append((done, total)))
    assert net.calls == [CPU_CHUNK, CPU_CHUNK, 1]
    assert seen == [(4, 9), (8, 9), (9, 9)]


def test_interrupting_from_the_progress_callback_stops_before_the_next_chunk():
    images, faces = _video_batch(frames=2, per_frame=3)
    net = Counting(Identity())

    class Stop(Exception):
        pass

    def interrupt(done, total):
        raise Stop

    with pytest.raises(Stop):
        restore_faces(images, net, faces, chunk_size=2, progress=interrupt)
    assert net.calls == [2]


def test_strength_blends_original_and_restored_crops():
    torch.manual_seed(0)
    crops = torch.rand(2, 3, 64, 64)
    net = random_restoreformer()
    full = restore_crops(net, crops, strength=1.0)
    half = restore_crops(net, crops, strength=0.5)
    none = restore_crops(Counting(net), crops, strength=0.0)
    assert torch.equal(none, crops)
    # Both calls run the network on the same chunk, so the restored crops agree bit for bit; lerp
    # and the hand blend then differ by their own roundings of values in [0, 1]: 2 u each.
    assert (half - 0.5 * (crops + full)).abs().max() <= 4 * unit_roundoff(torch.float32)
    assert torch.equal(full, net.restore(crops))  # strength 1 is the network's own restore, same call


def test_rgba_keeps_alpha_and_gray_restores_as_gray():
    images, faces = _video_batch(frames=2, per_frame=2)
    alpha = torch.rand(2, *images.shape[1:3], 1)
    rgba = torch.cat([images, alpha], dim=-1)
    net = Negate()
    out, mask, crops, _ = restore_faces(rgba, net, faces, crop_size=64)
    assert out.shape == rgba.shape
    assert torch.equal(out[..., 3], rgba[..., 3])
    rgb_out, _, _, _ = restore_faces(images, net, faces, crop_size=64)
    assert torch.equal(out[..., :3], rgb_out)
    gray = images.mean(-1, keepdim=True)
    g_out, g_mask, g_crops, _ = restore_faces(gray, Identity(), faces, crop_size=128)
    assert g_out.shape == gray.shape and g_crops.shape == (4, 128, 128, 3)
    assert torch.equal(g_out[g_mask == 0], gray[g_mask == 0])
    assert psnr(g_out, gray) > 40  # gray -> RGB -> luma is the identity on gray
    g_net, g_mask2, _, _ = restore_faces(gray, net, faces, crop_size=64)
    assert g_net.shape == gray.shape and (g_net != gray).any()
    gray_alpha = torch.cat([gray, alpha], dim=-1)
    ga_out, _, _, _ = restore_faces(gray_alpha, net, faces, crop_size=64)
    assert torch.equal(ga_out[..., 1], alpha[..., 0])
    assert torch.equal(ga_out[..., :1], g_net)


def test_no_face_passes_the_image_through_with_a_note():
    images = torch.rand(2, 64, 80, 3)
    faces = make_faces([], 2, 64, 80, detector="mtcnn")
    net = Counting(random_restoreformer())
    out, mask, crops, report = restore_faces(images, net, faces)
    assert out is images and net.calls == []
    assert mask.shape == (2, 64, 80) and not mask.any()
    assert crops.shape[0] == 0
    assert report.faces == 0 and report.images_without_faces == (0, 1)
    lines = report.lines()
    assert lines[1] == "no face found by mtcnn in any of the 2 images: passed through unchanged"
    assert sum("no face" in line for line in lines) == 1  # said once


def test_an_image_of_the_batch_without_faces_is_named():
    images, faces = _video_batch(frames=3, per_frame=1)
    faces = make_faces([(0, faces.faces[0].landmarks), (2, faces.faces[2].landmarks)], 3, *images.shape[1:3])
    out, mask, _, report = restore_faces(images, Negate(), faces, crop_size=64)
    assert torch.equal(out[1], images[1]) and not mask[1].any()
    assert report.images_without_faces == (1,) and report.faces == 2
    assert any("image(s) 1 of 3" in line for line in report.lines())


def test_tiny_images_and_faces_larger_than_the_image():
    images = torch.rand(1, 12, 16, 3)
    faces = make_faces([(0, landmarks_at(8, 6, 10, 0))], 1, 12, 16)
    out, mask, _, _ = restore_faces(images, Negate(), faces, crop_size=64)
    assert out.shape == images.shape and mask.max() == 1.0
    big, _ = _video_batch(frames=1, h=96, w=96)
    faces = make_faces([(0, landmarks_at(50, 50, 400, 30))], 1, 96, 96)
    out, mask, _, _ = restore_faces(big, Identity(), faces, crop_size=512)
    assert (mask > 0).all()  # the face covers the whole image
    assert psnr(out, big) > 35


def test_bad_inputs_name_the_problem():
    images, faces = _video_batch(frames=2, per_frame=1)
    with pytest.raises(ValueError, match="detected on 2 image"):
        restore_faces(images[:1], Identity(), faces)
    with pytest.raises(ValueError, match="strength"):
        restore_faces(images, Identity(), faces, strength=1.5)
    with pytest.raises(ValueError, match="color_match"):
        restore_faces(images, Identity(), faces, color_match="lab")
    with pytest.raises(ValueError, match="uint8"):
        restore_faces((images * 255).to(torch.uint8), Identity(), faces)
    with pytest.raises(ValueError, match="64px crops"):
        restore_faces(images, random_restoreformer(), faces, crop_size=512)


def test_one_precision_policy():
    """plan_precision is the one place that decides what runs; every caller reads its plan."""
    assert plan_precision("fp16", "cpu") == PrecisionPlan("fp32", note="precision fp16 is for GPUs; running fp32 on the CPU instead")
    assert plan_precision("fp32", "cpu") == PrecisionPlan("fp32")
    assert plan_precision("bf16", "cuda") == PrecisionPlan("bf16", autocast=True) or not torch.cuda.is_available()
    with pytest.raises(ValueError, match="precision must be one of"):
        plan_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        PrecisionPlan("fp8")
    assert PrecisionPlan.autocast_to("bf16") == PrecisionPlan("bf16", autocast=True)
    assert plan_weight_dtype("fp32", "cpu") == ("fp32", None)
    held, note = plan_weight_dtype("bf16", "cpu")
    assert held == "fp32" and "for GPUs" in note
    with pytest.raises(ValueError, match="weight_dtype"):
        plan_weight_dtype("fp8", "cuda")


def test_half_precision_on_cpu_falls_back_to_fp32_and_says_so():
    images, faces = _video_batch(frames=1, per_frame=1)
    net = random_restoreformer()
    a = restore_faces(images, net, faces, precision="bf16")
    b = restore_faces(images, net, faces, precision="fp32")
    assert torch.equal(a.images, b.images)
    assert a.report.precision == "fp32" and "running fp32" in a.report.precision_note
    assert b.report.precision_note is None and b.report.chunk_size == CPU_CHUNK


def test_bf16_weights_run_natively_in_bf16_and_say_so():
    """A network stored in bf16 (Load Model (RestoreFormer)'s weight_dtype) runs in bf16 without
    autocast whatever precision is asked, and the pipeline says so when the request differs. The
    dictionary stays fp32, so codes are searched against the unrounded entries."""
    net = random_restoreformer()
    fp32 = copy.deepcopy(net)
    cast_weights(net, "bf16")
    assert net.quantize.embedding.weight.dtype == torch.float32
    assert torch.equal(net.quantize.embedding.weight, fp32.quantize.embedding.weight)
    assert {p.dtype for n, p in net.named_parameters() if not n.startswith("quantize.")} == {torch.bfloat16}
    assert list(net.state_dict()) == list(fp32.state_dict())

    assert plan_precision("bf16", "cpu", torch.bfloat16) == PrecisionPlan("bf16")
    plan = plan_precision("fp32", "cpu", torch.bfloat16)
    assert plan.precision == "bf16" and not plan.autocast
    assert "weights are bf16" in plan.note and "weight_dtype fp32" in plan.note

    images, faces = _video_batch(frames=2, per_frame=1)
    calls = []
    net.register_forward_hook(lambda m, args, out: calls.append((args[0].dtype, torch.is_autocast_enabled("cpu"))))
    result = restore_faces(images, net, faces, precision="fp32")
    assert calls == [(torch.bfloat16, False)]
    assert result.report.precision == "bf16" and "weights are bf16" in result.report.precision_note
    # the same crops through the network directly, in bf16: restore_crops adds nothing else
    crops = align_faces(images, faces, crop_size=net.config.resolution).permute(0, 3, 1, 2).contiguous()
    with recorded_codes(net) as codes:
        direct = restore_crops(net, crops, chunk_size=8)
    with torch.no_grad():
        want = ((net((crops * 2 - 1).bfloat16()).float().clamp(-1, 1) + 1) / 2)
    assert torch.equal(direct, want)
    # and near the fp32 network on the dictionary entries the bf16 encoder picked (bf16 features
    # may flip a near-tied entry, a local change far beyond rounding): bf16 rounding only, on the
    # 0..1 scale (half the network's output), which clamping can only shrink.
    with forced_codes(fp32, codes + codes):
        ref = restore_crops(fp32, crops, chunk_size=8)
        with torch.no_grad():
            raw = fp32(crops * 2 - 1)
    half_precision_budget(fp32, torch.bfloat16, raw, scale=0.5).check(direct, ref, "bf16 weights against fp32")
    with pytest.raises(ValueError, match="weight_dtype"):
        cast_weights(net, "fp16")


def test_chunk_size_follows_free_memory_and_model_size():
    assert pick_chunk_size(RESTOREFORMER, "cpu") == CPU_CHUNK
    per = activation_bytes_per_crop(RESTOREFORMER)
    assert pick_chunk_size(RESTOREFORMER, "cuda", free_bytes=int(per * 10 / 0.7) + 1000) == 10
    assert pick_chunk_size(RESTOREFORMER, "cuda", free_bytes=0) == 1
    assert pick_chunk_size(RESTOREFORMER, "cuda", free_bytes=10**15) == 64
    assert pick_chunk_size(RESTOREFORMER, "cuda", "fp16", free_bytes=int(per * 10 / 0.7) + 1000) > 10
    assert activation_bytes_per_crop(RESTOREFORMER_PLUSPLUS) > per  # 32x32 attention


def test_align_faces_gives_image_layout_crops():
    images, faces = _video_batch(frames=2, per_frame=2)
    crops = align_faces(images, faces, crop_size=96)
    assert crops.shape == (4, 96, 96, 3) and crops.dtype == torch.float32


@pytest.mark.slow  # an 8K frame: about 1 GB of tensors and several seconds on 2 cores
def test_8k_frame_with_faces_of_very_different_sizes():
    H, W = 4320, 7680
    images = torch.empty(1, H, W, 3)
    images[...] = torch.linspace(0, 1, W).view(1, 1, W, 1)  # a ramp: resampling is exact on it
    items = [(0, landmarks_at(1500, 2000, 1400, 5)), (0, landmarks_at(5000, 1200, 60, 0)), (0, landmarks_at(6500, 3000, 300, -20))]
    faces = make_faces(items, 1, H, W)
    net = Counting(Identity())
    out, mask, crops, notes = restore_faces(images, net, faces, crop_size=512)
    assert net.calls == [3] and crops.shape == (3, 512, 512, 3)
    assert torch.equal(out[mask == 0], images[mask == 0])
    # bilinear there and back is exact on a linear ramp: float32 rounding of both warps only
    assert (out - images).abs().max() <= resampling_bound(1 / (W - 1), W, warps=2)
    assert out.dtype == torch.float32
