"""spandrel's face-restoration models (GFPGAN, CodeFormer, RestoreFormer) through the pack's
detect/align/paste pipeline (runtime/face_models.py), with random weights of the real
architectures (no downloads)."""

from __future__ import annotations

import pytest
import torch
from helpers.models import random_restoreformer
from helpers.pipeline import landmarks_at, make_faces
from helpers.spandrel_models import restoreformer_descriptor, small_codeformer, small_gfpgan

from restoreformer_node.faces.pipeline import restore_faces
from restoreformer_node.runtime import plan_precision
from restoreformer_node.runtime.face_models import FaceModelError, SpandrelFaceModel
from restoreformer_node.testing import spandrel_twin


def _scene(size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 12, 12, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic").clamp(0, 1).permute(0, 2, 3, 1)


class Inputs:
    """Records what a network's forward receives (positional input and keyword arguments)."""

    def __init__(self, module):
        self.calls = []
        self.handle = module.register_forward_pre_hook(
            lambda m, args, kwargs: self.calls.append((args[0].detach().clone(), dict(kwargs))), with_kwargs=True
        )


def test_spandrel_restoreformer_restores_like_the_packs_own_network_on_the_same_weights():
    # spandrel's RestoreFormer is an independent implementation of the same network; through the
    # adapter (crops in [-1, 1], first output) it must restore exactly what ours does.
    ours = random_restoreformer()
    size = ours.config.resolution
    faces = make_faces([(0, landmarks_at(80, 90, 90))], 1, 180, 170)
    image = _scene(180)[:, :, :170]
    face_model = SpandrelFaceModel(restoreformer_descriptor(spandrel_twin(ours)))
    assert face_model.crop_size == size and face_model.name == "RestoreFormer (spandrel)"
    theirs = restore_faces(image, face_model, faces)
    reference = restore_faces(image, ours, faces)
    assert theirs.crops.shape == reference.crops.shape == (1, size, size, 3)
    assert (theirs.crops - reference.crops).abs().max() <= 1e-5
    assert (theirs.images - reference.images).abs().max() <= 1e-5
    assert (reference.crops - theirs.crops).abs().max() < (reference.crops - 0.5).abs().max()  # not trivially equal


def test_gfpgan_gets_minus_one_to_one_and_runs_deterministically():
    descriptor = small_gfpgan()
    face_model = SpandrelFaceModel(descriptor)
    faces = make_faces([(0, landmarks_at(130, 140, 150))], 1, 260, 260)
    image = _scene(260, seed=1)
    seen = Inputs(descriptor.model)
    first = restore_faces(image, face_model, faces)
    second = restore_faces(image, face_model, faces)
    (x, kwargs), _ = seen.calls
    assert x.shape == (1, 3, 512, 512) and float(x.min()) < -0.5  # [-1, 1], not the descriptor's [0, 1]
    assert kwargs == {"return_rgb": False, "randomize_noise": False}
    assert torch.equal(first.crops, second.crops)  # the stored noise, not fresh noise per call
    with torch.inference_mode():
        raw = descriptor.model(x, return_rgb=False, randomize_noise=False)[0]
    expect = (raw.clamp(-1, 1) + 1) / 2  # the network's [-1, 1] output mapped back, negative values kept
    assert torch.allclose(first.crops[0].permute(2, 0, 1), expect[0], atol=1e-6)
    assert float(raw.min()) < 0  # a [0, 1] clamp (the descriptor's own call) would have lost these


@pytest.mark.slow
def test_codeformer_gets_its_fidelity_weight():
    pytest.importorskip("spandrel_extra_arches", reason="CodeFormer lives in spandrel_extra_arches")
    descriptor = small_codeformer()
    face_model = SpandrelFaceModel(descriptor, fidelity=0.7)
    assert face_model.name == "CodeFormer (spandrel, fidelity 0.7)"
    seen = Inputs(descriptor.model)
    faces = make_faces([(0, landmarks_at(130, 140, 150))], 1, 260, 260)
    result = restore_faces(_scene(260, seed=2), face_model, faces)
    (x, kwargs), = seen.calls
    assert kwargs == {"weight": 0.7} and float(x.min()) < -0.5
    assert result.report.faces == 1


def test_fidelity_outside_zero_to_one_and_non_face_inputs_are_refused():
    with pytest.raises(FaceModelError, match=r"codeformer_fidelity must be in \[0, 1\]"):
        SpandrelFaceModel(small_gfpgan(), fidelity=1.5)
    with pytest.raises(FaceModelError, match="expected a RestoreFormer model or a face-restoration model"):
        SpandrelFaceModel(torch.nn.Identity())


def test_networks_spandrel_marks_unsafe_in_fp16_run_another_precision():
    plan = plan_precision("fp16", "cuda", half_ok=False)
    assert plan.precision in ("bf16", "fp32") and "does not run in fp16" in plan.note
    assert plan_precision("fp16", "cuda", half_ok=True).precision == "fp16"
    assert plan_precision("fp16", "cpu", half_ok=False).precision == "fp32"
