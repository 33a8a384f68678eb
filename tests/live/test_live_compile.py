"""Compile Model (RestoreFormer) inside a real, running ComfyUI 0.3.75 (the session's shared server).

The shipped video workflow, with the compile node put between the loader and Face Restore, as
an artist would wire it. The model is the live tests' randomly initialised RestoreFormer of the
real architecture at the tiny test geometry (pretrained weights cannot be had offline); inductor
compiles it for real on the server's CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import live as live_fixtures
from helpers.live_server import history_error
from helpers.workflow_format import nodes_of_type, shipped_workflows, ui_to_api
from PIL import Image

from tools.make_workflows import LOAD_MODEL, RESTORE, VIDEO

pytestmark = pytest.mark.slow

live_comfyui = live_fixtures.live_comfyui
live_model = live_fixtures.live_model
input_photos = live_fixtures.input_photos

COMPILE = "RestoreFormerCompileModel"


def _video_prompt(server, model: str, photo: str) -> dict:
    prompt = ui_to_api(shipped_workflows()[VIDEO], server.object_info())
    (loader_id,) = nodes_of_type(prompt, LOAD_MODEL)
    prompt[loader_id]["inputs"]["model_name"] = model
    for node_id in nodes_of_type(prompt, "LoadImage"):
        prompt[node_id]["inputs"]["image"] = photo
    (restore_id,) = nodes_of_type(prompt, RESTORE)
    prompt["report"] = {"class_type": "PreviewAny", "inputs": {"source": [restore_id, 3]}}
    return prompt


def _run(server, prompt: dict) -> tuple[list[np.ndarray], str]:
    entry = server.run(prompt, timeout=420)
    assert entry["status"]["status_str"] == "success", (history_error(entry), server.log()[-3000:])
    (save_id,) = nodes_of_type(prompt, "SaveImage")
    frames = [np.asarray(Image.open(p)).astype(int) for p in server.output_images(entry, save_id)]
    return frames, " ".join(entry["outputs"]["report"]["text"])


def test_video_workflow_with_the_compile_node_restores_like_without_it(live_comfyui, live_model, input_photos):
    assert COMPILE in live_comfyui.object_info()
    eager_prompt = _video_prompt(live_comfyui, live_model, input_photos["astronaut"])
    eager_frames, eager_report = _run(live_comfyui, eager_prompt)

    prompt = _video_prompt(live_comfyui, live_model, input_photos["astronaut"])
    (loader_id,) = nodes_of_type(prompt, LOAD_MODEL)
    (restore_id,) = nodes_of_type(prompt, RESTORE)
    prompt["compile"] = {"class_type": COMPILE, "inputs": {"model": [loader_id, 0], "mode": "default"}}
    prompt[restore_id]["inputs"]["model"] = ["compile", 0]
    frames, report = _run(live_comfyui, prompt)

    assert "torch.compile inductor/default" in report and "failed" not in report, report
    assert "torch.compile" not in eager_report
    assert len(frames) == len(eager_frames) >= 4
    for frame, eager in zip(frames, eager_frames, strict=True):
        assert np.abs(frame - eager).max() <= 1  # float rounding, seen through 8-bit PNGs
