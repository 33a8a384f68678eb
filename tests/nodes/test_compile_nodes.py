"""The Compile Model (RestoreFormer) node with Face Restore, run through ComfyUI's own modules
(folder_paths, model_management, model_patcher) in CPU mode.

The network is a randomly initialised RestoreFormer at the tiny test geometry (random weights of
the real architecture stand in for the published ones), written as a real .safetensors file into
a temporary facerestore_models folder and loaded by the real loader node. Graphs are captured by
TorchDynamo for real; the backends here record or fail instead of generating code, so the tests
stay fast (tests/test_compile.py runs inductor itself).
"""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest
import torch
from helpers.comfy_host import import_comfy
from helpers.compile import FailingBackend, RecordingBackend
from helpers.models import random_restoreformer
from helpers.numerics import error, restore_budget
from helpers.pipeline import landmarks_at, make_faces

import_comfy()

import folder_paths  # noqa: E402

from restoreformer_node.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
from restoreformer_node.nodes.compile_nodes import CompileModel  # noqa: E402
from restoreformer_node.nodes.model_nodes import MODEL_FOLDER, LoadModel  # noqa: E402
from restoreformer_node.nodes.restore_nodes import RestoreFaces  # noqa: E402
from restoreformer_node.options import COMPILE_MODES  # noqa: E402
from restoreformer_node.runtime.compile import CompileOptions  # noqa: E402
from restoreformer_node.runtime.fast import optimize_for_inference  # noqa: E402

NODE_ID = "RestoreFormerCompileModel"


@pytest.fixture(scope="module")
def rf_model(tmp_path_factory):
    from restoreformer_node.weights import save_restoreformer

    folder = tmp_path_factory.mktemp("facerestore_models")
    net = random_restoreformer(seed=7)
    save_restoreformer(net, folder / "tiny_compile.safetensors", net.config)
    saved = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([str(folder)], folder_paths.supported_pt_extensions)
    (value,) = LoadModel().load("tiny_compile.safetensors")
    # As the network runs on a GPU, where compiling pays: without the CPU-only NNPACK convolutions,
    # which TorchDynamo cannot trace yet (strict xfail in test_compile.py). This file's model only.
    optimize_for_inference(value.model, channels_last=False, winograd=False)
    yield value
    if saved is not None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = saved


def _scene():
    """Two smooth 160x224 images with five faces in all (chunks of 4, 1 padded on the CPU)."""
    B, H, W = 2, 160, 224
    g = torch.Generator().manual_seed(3)
    small = torch.rand(B, 3, 10, 14, generator=g)
    images = torch.nn.functional.interpolate(small, size=(H, W), mode="bicubic").clamp(0, 1)
    images = images.permute(0, 2, 3, 1).contiguous()
    spots = [(0, 50), (0, 110), (0, 170), (1, 60), (1, 150)]
    faces = make_faces([(b, landmarks_at(x, 80, 45, 0)) for b, x in spots], B, H, W)
    return images, faces


def _restore(image, model, faces):
    return RestoreFaces().restore(
        image, model, 1.0, "fp32", 40.0, 8.0, "none", faces=faces, detector=None
    )


def _check_like_eager(rf_model, images, faces, image, crops, eager_image, eager_crops, what: str) -> None:
    """The node's restored crops against a float64 run of the network on the same aligned crops,
    within REORDER x one eager call's error (compiled graphs and padded chunks reorder sums);
    the pasted image within twice that of the eager image: paste makes each pixel a convex
    blend of the image and bilinear samples of a crop, so it moves no pixel more than the crops
    moved (1-Lipschitz), and both runs are within the budget of the truth."""
    from restoreformer_node.faces.pipeline import align_faces

    aligned = align_faces(images, faces, crop_size=rf_model.config.resolution).permute(0, 3, 1, 2)
    budget, truth = restore_budget(rf_model.model, aligned)
    budget.check(eager_crops.permute(0, 3, 1, 2), truth, "eager crops")
    budget.check(crops.permute(0, 3, 1, 2), truth, f"{what} crops")
    moved = error(image, eager_image).max
    print(f"{what} image against the eager image: max {moved:.3g}, limit {2 * budget.max:.3g}")
    assert moved <= 2 * budget.max


def test_node_is_listed_with_its_modes():
    """(Tooltips and help pages of every node: tests/nodes/test_registry_hygiene.py.)"""
    assert NODE_CLASS_MAPPINGS[NODE_ID] is CompileModel
    assert NODE_DISPLAY_NAME_MAPPINGS[NODE_ID] == "Compile Model (RestoreFormer)"
    assert "torch.compile" in CompileModel.SEARCH_ALIASES
    spec = CompileModel.INPUT_TYPES()["required"]
    assert spec["mode"][0] == list(COMPILE_MODES) and spec["mode"][1]["default"] == "default"


def test_compile_node_returns_a_marked_copy_and_leaves_the_loaded_model_alone(rf_model):
    (compiled,) = CompileModel().compile(rf_model, "max-autotune-no-cudagraphs")
    assert compiled.compile_options == CompileOptions(mode="max-autotune-no-cudagraphs")
    assert rf_model.compile_options is None  # the loader's cached value is shared; it stays eager
    assert compiled.patcher is rf_model.patcher and compiled.model is rf_model.model
    assert LoadModel().load("tiny_compile.safetensors")[0].compile_options is None
    with pytest.raises(ValueError, match=re.escape("Load Model (RestoreFormer)")):
        CompileModel().compile(object(), "default")


def test_restore_faces_runs_the_compiled_network_and_matches_eager(rf_model):
    images, faces = _scene()
    eager_image, eager_mask, eager_crops, eager_report = _restore(images, rf_model, faces)
    backend = RecordingBackend()
    compiled = dataclasses.replace(rf_model, compile_options=CompileOptions(backend=backend, on_cpu=True))
    image, mask, crops, report = _restore(images, compiled, faces)
    assert backend.batches and 4 in backend.batches and set(backend.batches) <= {4, -1}
    assert "torch.compile recording/default" in report and "4 crops per call" in report
    assert "torch.compile" not in eager_report
    _check_like_eager(rf_model, images, faces, image, crops, eager_image, eager_crops, "compiled")
    assert torch.equal(mask, eager_mask)  # the mask does not depend on the network


def test_the_compile_node_on_a_cpu_restores_uncompiled_and_the_report_says_why(rf_model, monkeypatch):
    """What a CPU-only ComfyUI gets from the node: no graph captured, the eager result, and a
    report that does not claim compiling but says why and how to force it."""
    from restoreformer_node.runtime.compile import CPU_ENV

    monkeypatch.delenv(CPU_ENV, raising=False)
    images, faces = _scene()
    eager_image, _, _, _ = _restore(images, rf_model, faces)
    backend = RecordingBackend()
    (compiled,) = CompileModel().compile(rf_model, "default")
    compiled = dataclasses.replace(compiled, compile_options=dataclasses.replace(compiled.compile_options, backend=backend))
    image, _, _, report = _restore(images, compiled, faces)
    assert backend.batches == []
    head, *notes = report.splitlines()
    assert "torch.compile" not in head and "(fp32, 4 crops per call)" in head
    assert any("torch.compile skipped on the CPU" in n and CPU_ENV in n for n in notes), report
    assert torch.equal(image, eager_image)


def test_a_failing_compile_is_reported_and_the_faces_are_still_restored(rf_model, caplog):
    images, faces = _scene()
    eager_image, _, eager_crops, _ = _restore(images, rf_model, faces)
    backend = FailingBackend()
    compiled = dataclasses.replace(rf_model, compile_options=CompileOptions(backend=backend, on_cpu=True))
    with caplog.at_level(logging.WARNING, logger="restoreformer"):
        image, _, crops, report = _restore(images, compiled, faces)
        _, _, _, report_again = _restore(images, compiled, faces)
    assert backend.calls == 1
    assert len([r for r in caplog.records if r.name == "restoreformer" and r.levelno >= logging.WARNING]) == 1
    for text in (report, report_again):
        assert "restored 5 faces" in text and "failed" in text and "Fix: install Triton" in text
        assert "(fp32, 4 crops per call)" in text.splitlines()[0]  # the head does not claim compiling
    _check_like_eager(rf_model, images, faces, image, crops, eager_image, eager_crops, "eager fallback")
