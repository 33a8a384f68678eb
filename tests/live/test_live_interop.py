"""The interop workflow in a real, running ComfyUI 0.3.75: faces through SEGS (Faces to SEGS ->
SEGS to Faces) into Restore Faces with an upscale model from the core Load Upscale Model node, and
a face model loaded by that core node restoring in Restore Faces.

Models are random weights of real architectures written by the tests (a Real-ESRGAN Compact 2x
upscaler, a small RestoreFormer; pretrained files cannot be had offline). Impact Pack is not
installed on the test server: the SEGS are built and read by its contract alone.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import live as live_fixtures
from helpers.live_server import history_error
from helpers.spandrel_models import compact_upscaler
from helpers.workflow_format import nodes_of_type, shipped_workflows, ui_to_api
from PIL import Image

from tools.make_workflows import LOAD_MODEL, LOAD_UPSCALER, RESTORE

pytestmark = pytest.mark.slow

live_comfyui = live_fixtures.live_comfyui
live_model = live_fixtures.live_model
live_upscaler = live_fixtures.live_upscaler
input_photos = live_fixtures.input_photos

WORKFLOW = "restore_segs_in_an_upscaled_image"
# A RestoreFormer that spandrel's loader (and so the core Load Upscale Model node) accepts: 512 px,
# attention at 16 px (six levels), narrow so a CPU runs it in seconds.
SPANDREL_RF = "rf-spandrel-shaped.safetensors"


def _prompt(server, model: str, upscaler: str, photo: str) -> dict:
    prompt = ui_to_api(shipped_workflows()[WORKFLOW], server.object_info())
    for node_id in nodes_of_type(prompt, LOAD_MODEL):
        prompt[node_id]["inputs"]["model_name"] = model
    for node_id in nodes_of_type(prompt, LOAD_UPSCALER):
        prompt[node_id]["inputs"]["model_name"] = upscaler
    for node_id in nodes_of_type(prompt, "LoadImage"):
        prompt[node_id]["inputs"]["image"] = photo
    return prompt


def _success(entry, server):
    assert entry["status"]["status_str"] == "success", (history_error(entry) or entry["status"], server.log()[-3000:])


def _reach(prompt: dict) -> None:
    """Also save where Restore Faces' mask reaches at all (> 0), before 8-bit rounding."""
    (restore_id,) = nodes_of_type(prompt, RESTORE)
    prompt["reach"] = {"class_type": "ThresholdMask", "inputs": {"mask": [restore_id, 1], "value": 0.0}}
    prompt["reach_image"] = {"class_type": "MaskToImage", "inputs": {"mask": ["reach", 0]}}
    prompt["reach_save"] = {"class_type": "SaveImage", "inputs": {"images": ["reach_image", 0], "filename_prefix": "reach"}}


def test_segs_into_restore_faces_with_an_upscale_model(live_comfyui, live_model, live_upscaler, input_photos, astronaut):
    prompt = _prompt(live_comfyui, live_model, live_upscaler, input_photos["astronaut"])
    _reach(prompt)
    entry = live_comfyui.run(prompt, timeout=300)
    _success(entry, live_comfyui)
    (save_id,) = [k for k in nodes_of_type(prompt, "SaveImage") if k != "reach_save"]
    (path,) = live_comfyui.output_images(entry, save_id)
    restored = np.asarray(Image.open(path))[..., :3]
    (reach_path,) = live_comfyui.output_images(entry, "reach_save")
    reach = np.asarray(Image.open(reach_path))[..., 0]
    assert restored.shape == (1024, 1024, 3) and reach.shape == (1024, 1024)
    # Outside the faces: exactly the core-style upscale of the photo (same model, same weights).
    photo = torch.from_numpy(astronaut.copy()).float().div(255).permute(2, 0, 1)[None]
    plain = compact_upscaler(scale=2)(photo)[0].permute(1, 2, 0).numpy()
    plain = np.clip(255.0 * plain, 0, 255).astype(np.uint8)  # as Save Image writes it (truncated)
    # the server and this test may order float sums differently: a truncation can flip by one level
    outside = np.abs(restored[reach == 0].astype(int) - plain[reach == 0])
    assert outside.max() <= 1 and (outside == 0).mean() > 0.99
    assert 0 < (reach == 255).mean() < 0.3
    assert np.abs(restored[reach == 255].astype(int) - plain[reach == 255]).mean() > 1  # the face was restored
    (report_id,) = nodes_of_type(prompt, "PreviewAny")
    text = " ".join(entry["outputs"][report_id]["text"])
    assert "restored 1 face in image with rf-test-tiny.safetensors" in text, text
    assert "upscaled 2x with RealESRGAN Compact (2x, SR) in 1 tile of 512 px" in text, text


def test_a_face_model_loaded_by_the_core_node_restores_in_restore_faces(live_comfyui, live_upscaler, input_photos):
    from helpers.models import random_restoreformer

    from restoreformer_node.model import RESTOREFORMER, tiny_config
    from restoreformer_node.weights import save_restoreformer

    path = live_comfyui.work / "upscale_models" / SPANDREL_RF
    if not path.exists():
        net = random_restoreformer(tiny_config(RESTOREFORMER, resolution=512, ch=32, ch_mult=(1, 1, 1, 1, 1, 1)))
        save_restoreformer(net, path, net.config)
    prompt = _prompt(live_comfyui, "unused", live_upscaler, input_photos["grace_hopper"])
    (loader_id,) = nodes_of_type(prompt, LOAD_MODEL)
    (restore_id,) = nodes_of_type(prompt, RESTORE)
    # The face model comes from a second core Load Upscale Model node instead of the pack's loader.
    prompt[loader_id] = {"class_type": LOAD_UPSCALER, "inputs": {"model_name": SPANDREL_RF}}
    entry = live_comfyui.run(prompt, timeout=300)
    _success(entry, live_comfyui)
    (report_id,) = nodes_of_type(prompt, "PreviewAny")
    text = " ".join(entry["outputs"][report_id]["text"])
    assert "restored 1 face in image with RestoreFormer (spandrel)" in text, text
    # An upscaler connected as the face model: the server answers with the fix.
    (upscaler_id,) = [k for k in nodes_of_type(prompt, LOAD_UPSCALER) if prompt[k]["inputs"]["model_name"] == live_upscaler]
    swapped = copy.deepcopy(prompt)
    swapped[restore_id]["inputs"]["model"] = [upscaler_id, 0]
    failed = live_comfyui.run(swapped, timeout=300)
    assert failed["status"]["status_str"] == "error"
    message = history_error(failed)["exception_message"]
    assert "is not a face-restoration model" in message and "upscale_model" in message, message
