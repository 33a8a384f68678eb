"""The model loader and the restore / align / paste nodes, run through ComfyUI's own modules
(folder_paths, model_management, model_patcher, utils) in CPU mode.

The network is a randomly initialised RestoreFormer at the tiny test geometry, written by the
test as a real .safetensors file into a temporary facerestore_models folder (pretrained weights
cannot be had offline).
"""

from __future__ import annotations

import os

import pytest
import torch
from helpers.comfy_host import import_comfy
from helpers.models import random_restoreformer
from helpers.numerics import elementwise_check, round_trip_bound
from helpers.pipeline import landmarks_at, make_faces

import_comfy()

import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.utils  # noqa: E402
import folder_paths  # noqa: E402

from restoreformer_node.nodes.model_nodes import MODEL_FOLDER, LoadModel  # noqa: E402
from restoreformer_node.nodes.restore_nodes import AlignFaces, PasteFaces, RestoreFaces  # noqa: E402
from restoreformer_node.nodes.types import RFModel  # noqa: E402
from restoreformer_node.runtime import plan_weight_dtype  # noqa: E402

MY_NODES = ("RestoreFormerModelLoader", "RestoreFormerRestoreFaces", "RestoreFormerAlignFaces", "RestoreFormerPasteFaces")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from restoreformer_node.weights import save_restoreformer

    folder = tmp_path_factory.mktemp("facerestore_models")
    net = random_restoreformer()
    save_restoreformer(net, folder / "tiny_rf.safetensors", net.config)
    saved = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([str(folder)], folder_paths.supported_pt_extensions)
    folder_paths.filename_list_cache.clear() if hasattr(folder_paths, "filename_list_cache") else None
    yield folder
    if saved is not None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = saved


@pytest.fixture(scope="module")
def rf_model(model_dir) -> RFModel:
    (value,) = LoadModel().load("tiny_rf.safetensors")
    return value


class CallCounter:
    def __init__(self, module):
        self.sizes: list[int] = []
        self.handle = module.register_forward_hook(lambda m, args, out: self.sizes.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _smooth(b, h, w, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(b, c, max(2, h // 16), max(2, w // 16), generator=g)
    up = torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)
    return up.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def _restore(image, model, faces=None, detector=None, **kw):
    args = dict(strength=1.0, precision="fp32", feather=40.0, erode=8.0, color_match="none")
    args.update(kw)
    return RestoreFaces().restore(image, model, faces=faces, detector=detector, **args)




def test_loader_lists_the_folder_wraps_the_network_and_caches_per_file_version(model_dir, rf_model):
    choices = LoadModel.INPUT_TYPES()["required"]["model_name"][0]
    assert "tiny_rf.safetensors" in choices
    assert isinstance(rf_model.patcher, comfy.model_patcher.ModelPatcher)
    assert rf_model.config.resolution == 64 and rf_model.name == "tiny_rf.safetensors"
    assert LoadModel().load("tiny_rf.safetensors")[0] is rf_model  # cached
    device = rf_model.load_to_device(1 << 20)
    assert device == comfy.model_management.get_torch_device()
    assert next(rf_model.model.parameters()).device == device
    # a replaced file is loaded again
    path = model_dir / "tiny_rf.safetensors"
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    fresh = LoadModel().load("tiny_rf.safetensors")[0]
    assert fresh is not rf_model
    assert torch.equal(
        fresh.model.quantize.embedding.weight, rf_model.model.quantize.embedding.weight
    )
    with pytest.raises(Exception, match="missing.safetensors"):
        LoadModel().load("missing.safetensors")


def test_loader_weight_dtype_keeps_fp32_on_the_cpu_and_the_report_says_so(model_dir):
    """weight_dtype bf16 pays on GPUs only; on this CPU host the loader keeps the fp32 network (the
    same cached one) and Face Restore's report tells why. The GPU branch of the decision is
    runtime.plan_weight_dtype's (tests/test_pipeline.py)."""
    assert LoadModel.INPUT_TYPES()["optional"]["weight_dtype"][0] == ["fp32", "bf16"]
    _, note = plan_weight_dtype("bf16", "cpu")
    (fp32,) = LoadModel().load("tiny_rf.safetensors")
    (asked_bf16,) = LoadModel().load("tiny_rf.safetensors", weight_dtype="bf16")
    assert asked_bf16.patcher is fp32.patcher  # no second copy of the weights
    assert next(asked_bf16.model.parameters()).dtype == torch.float32
    assert asked_bf16.notes == (note,) and fp32.notes == ()
    faces = make_faces([(0, landmarks_at(80, 80, 60, 0))], 1, 160, 160)
    *_, report = _restore(_smooth(1, 160, 160), asked_bf16, faces=faces)
    assert report.startswith("restored 1 face in image with tiny_rf.safetensors (fp32,")
    assert note in report.splitlines()


def test_restore_multi_face_batch_one_call_per_chunk_with_progress(rf_model):
    B, H, W = 3, 160, 224
    images = _smooth(B, H, W)
    faces = make_faces([(b, landmarks_at(60 + 100 * k, 80, 60, 0)) for b in range(B) for k in range(2)], B, H, W)
    updates = []
    old_hook = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    try:
        with CallCounter(rf_model.model) as calls:
            image, mask, crops, report = _restore(images, rf_model, faces=faces)
    finally:
        comfy.utils.set_progress_bar_global_hook(old_hook)
    assert calls.sizes == [4, 2]  # 6 crops, CPU chunks of 4
    assert updates[-1] == (6, 6)
    assert image.shape == images.shape and image.device.type == "cpu" and image.dtype == torch.float32
    assert mask.shape == (B, H, W) and crops.shape == (6, 64, 64, 3)
    assert torch.equal(image[mask == 0], images[mask == 0])
    assert (image[mask > 0.5] != images[mask > 0.5]).any()
    assert report.startswith("restored 6 faces in 3 images with tiny_rf.safetensors")


def test_restore_rgba_gray_and_tiny_inputs(rf_model):
    H, W = 96, 96
    faces = make_faces([(0, landmarks_at(48, 48, 50, 10))], 1, H, W)
    rgba = torch.cat([_smooth(1, H, W), torch.rand(1, H, W, 1)], dim=-1)
    image, mask, _, _ = _restore(rgba, rf_model, faces=faces)
    assert image.shape == rgba.shape and torch.equal(image[..., 3], rgba[..., 3])
    gray = _smooth(1, H, W, c=1)
    image, mask, crops, _ = _restore(gray, rf_model, faces=faces, color_match="mean")
    assert image.shape == gray.shape and crops.shape == (1, 64, 64, 3)
    assert torch.equal(image[mask == 0], gray[mask == 0])
    tiny = _smooth(1, 10, 14)
    faces = make_faces([(0, landmarks_at(7, 5, 8, 0))], 1, 10, 14)
    image, mask, _, _ = _restore(tiny, rf_model, faces=faces)
    assert image.shape == tiny.shape and mask.max() > 0


def test_restore_without_faces_detects_with_mtcnn_and_passes_a_faceless_image_through(rf_model, astronaut):
    photo = torch.from_numpy(astronaut.copy()).float().div(255)[None]
    with CallCounter(rf_model.model) as calls:
        image, mask, crops, report = _restore(photo, rf_model)
    assert calls.sizes == [1] and crops.shape == (1, 64, 64, 3)
    assert "detected with MTCNN" in report
    assert torch.equal(image[mask == 0], photo[mask == 0])
    flat = torch.full((1, 128, 128, 3), 0.5)
    with CallCounter(rf_model.model) as calls:
        image, mask, crops, report = _restore(flat, rf_model)
    assert calls.sizes == []
    assert torch.equal(image, flat) and not mask.any()
    assert crops.shape == (1, 64, 64, 3)  # a placeholder, so previews still work
    assert "no face found" in report


def test_interruption_is_honoured_between_chunks(rf_model):
    B, H, W = 2, 128, 256
    images = _smooth(B, H, W)
    faces = make_faces([(b, landmarks_at(60 + 110 * k, 64, 50, 0)) for b in range(B) for k in range(3)], B, H, W)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with CallCounter(rf_model.model) as calls, pytest.raises(comfy.model_management.InterruptProcessingException):
            _restore(images, rf_model, faces=faces)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert calls.sizes == [4]  # stopped after the first chunk


def test_align_then_paste_nodes_round_trip(rf_model):
    B, H, W = 2, 160, 200
    images = _smooth(B, H, W)
    faces = make_faces([(0, landmarks_at(100, 80, 70, 5)), (1, landmarks_at(80, 70, 60, -5))], B, H, W)
    (crops,) = AlignFaces().align(images, faces, 256)
    assert crops.shape == (2, 256, 256, 3)
    out, mask = PasteFaces().paste(images, crops, faces, 40.0, 8.0, "none")
    assert torch.equal(out[mask == 0], images[mask == 0])
    # Two bilinear resamplings lose only the image's curvature at the crop's pixel size.
    scale = faces.affines()[:, :, :2].det().abs().sqrt() * 256 / faces.crop_size  # crop px per image px
    bound = round_trip_bound(images, float(1 / scale.min()))
    elementwise_check(out - images, bound, "align then paste")
    edited = 1 - crops
    out, mask = PasteFaces().paste(images, edited, faces, 40.0, 8.0, "none")
    full = mask == 1
    elementwise_check(out[full] - (1 - images[full]), bound[full], "align, invert, paste")
    with pytest.raises(ValueError, match="2 faces"):
        PasteFaces().paste(images, crops[:1], faces, 40.0, 8.0, "none")
    no_faces = make_faces([], B, H, W)
    out, mask = PasteFaces().paste(images, crops, no_faces, 40.0, 8.0, "none")
    assert torch.equal(out, images) and not mask.any()
