"""The pack inside a real, running ComfyUI 0.3.75 (started once per session, see live_server.py).

The restoration model is a randomly initialised RestoreFormer of the real architecture in the
small test geometry (tiny_config, 64 px crops), written as safetensors into the server's
facerestore_models folder: pretrained weights cannot be had offline. It does not restore anything,
but it changes the faces it is given, which is what these tests need to see where it acted.
The photos come from PyPI packages (scikit-image's astronaut, matplotlib's Grace Hopper).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
from helpers import live as live_fixtures
from helpers.live_server import Events, history_error, history_messages
from helpers.workflow_format import WORKFLOW_DIR, nodes_of_type, shipped_workflows, ui_to_api
from PIL import Image

from tools.make_workflows import (
    ATLAS,
    ATTENTION,
    CODE_MAP,
    DETECT,
    EDIT,
    INSPECT,
    LOAD_MODEL,
    PASTE,
    PHOTO,
    RESTORE,
    TXT2IMG,
    USAGE,
    VIDEO,
    WORKFLOWS,
)

pytestmark = pytest.mark.slow

# The session's shared server and its test files (fixtures defined in live_fixtures.py).
live_comfyui = live_fixtures.live_comfyui
live_model = live_fixtures.live_model
input_photos = live_fixtures.input_photos

PACK = "comfyui-restoreformer"


@pytest.fixture(scope="session")
def object_info(live_comfyui) -> dict:
    return live_comfyui.object_info()


@pytest.fixture(scope="session")
def workflows() -> dict:
    found = shipped_workflows()
    assert found, "no workflows in example_workflows/"
    return found


def pack_node_ids() -> set[str]:
    from helpers.comfy_host import import_comfy

    import_comfy()
    from restoreformer_node.nodes import NODE_CLASS_MAPPINGS

    return set(NODE_CLASS_MAPPINGS)


def api_prompt(workflow: dict, object_info: dict, model: str, images: dict[str, str] | str) -> dict:
    """The workflow in API format with the test model and test photos chosen, as a user picking
    them in the widgets would. `images`: one file for every Load Image node, or {node id: file}."""
    prompt = ui_to_api(workflow, object_info)
    for node_id in nodes_of_type(prompt, LOAD_MODEL):
        prompt[node_id]["inputs"]["model_name"] = model
    for node_id in nodes_of_type(prompt, "LoadImage"):
        prompt[node_id]["inputs"]["image"] = images if isinstance(images, str) else images[node_id]
    return prompt


def load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def saved_images(server, entry: dict, prompt: dict, node_type: str = "SaveImage") -> list[np.ndarray]:
    (node_id,) = nodes_of_type(prompt, node_type)
    paths = server.output_images(entry, node_id)
    return [np.asarray(Image.open(p)) for p in paths]


def assert_success(entry: dict, server) -> None:
    err = history_error(entry)
    assert entry["status"]["status_str"] == "success", (err or entry["status"], server.log()[-3000:])


# -- the pack is there --------------------------------------------------------------------------


def test_every_pack_node_is_registered(live_comfyui, object_info):
    ids = pack_node_ids()
    assert {LOAD_MODEL, DETECT, RESTORE} <= ids
    missing = sorted(ids - set(object_info))
    assert not missing, f"not in /object_info: {missing}"
    for node_id in ids:
        info = object_info[node_id]
        assert info["python_module"] == f"custom_nodes.{PACK}", info["python_module"]
        assert info["display_name"] and info["display_name"] != node_id
    assert "(IMPORT FAILED)" not in live_comfyui.log()


def test_model_folder_lists_the_test_model(live_comfyui, live_model):
    """The extra-model-paths YAML maps facerestore_models; the loader lists what is there."""
    info = live_comfyui.get(f"/object_info/{LOAD_MODEL}").json()[LOAD_MODEL]
    choices = info["input"]["required"]["model_name"][0]
    assert live_model in choices, choices


def test_workflow_templates_lists_the_shipped_workflows(live_comfyui, workflows):
    listed = live_comfyui.get("/workflow_templates").json()
    assert sorted(listed.get(PACK, [])) == sorted(workflows)
    assert set(workflows) == set(WORKFLOWS), "make_workflows.py and example_workflows/ disagree"
    for name, workflow in workflows.items():
        served = live_comfyui.get(f"/api/workflow_templates/{PACK}/{name}.json")
        assert served.status_code == 200
        assert served.json() == workflow
        # The template browser shows NAME.jpg from the same folder as the card's picture.
        thumbnail = live_comfyui.get(f"/api/workflow_templates/{PACK}/{name}.jpg")
        assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
        assert thumbnail.content == (WORKFLOW_DIR / f"{name}.jpg").read_bytes()


def test_every_workflow_uses_only_defined_nodes(workflows, object_info):
    frontend_only = {"Note", "MarkdownNote"}
    for name, workflow in workflows.items():
        unknown = {n["type"] for n in workflow["nodes"]} - set(object_info) - frontend_only
        assert not unknown, f"{name}: unknown node types {unknown}"
        ui_to_api(workflow, object_info)  # raises when widgets_values do not fit the definitions


# -- the workflows run ----------------------------------------------------------------------------


def check_restored(before: np.ndarray, after: np.ndarray, mask: np.ndarray | None = None) -> None:
    """Faces changed, background bit-identical. `mask` (HxW, 0..255, as saved) marks the restored
    regions; without it, only that something changed and most of the picture did not.

    The saved mask is 8-bit: where the float mask is below 1/255 it reads 0 while the blend may
    still move a pixel by one level, so there pixels may differ by 1. (Bit-identity where the mask
    does not reach at all is checked with a thresholded mask in test_restore_photo_workflow.)"""
    assert after.shape == before.shape
    diff = np.abs(after.astype(np.int16) - before.astype(np.int16)).max(axis=-1)
    changed = diff > 0
    assert changed.any(), "nothing changed: no face was restored"
    if mask is not None:
        assert diff[mask == 0].max() <= 1, "pixels outside the mask changed by more than rounding"
        inside = mask > 250
        assert inside.any(), "the mask is empty"
        assert changed[inside].mean() > 0.5, "most of the fully masked region did not change"
    assert changed.mean() < 0.5, "more than half of the picture changed"


def add_mask_reach(prompt: dict, node_id: str) -> None:
    """Save where the MASK output (index 1) of `node_id` reaches at all (mask > 0, thresholded
    before the 8-bit rounding of saved images) as the extra output node "reach_save"."""
    prompt["reach"] = {"class_type": "ThresholdMask", "inputs": {"mask": [node_id, 1], "value": 0.0}}
    prompt["reach_image"] = {"class_type": "MaskToImage", "inputs": {"mask": ["reach", 0]}}
    prompt["reach_save"] = {"class_type": "SaveImage", "inputs": {"images": ["reach_image", 0], "filename_prefix": "reach"}}


def read_mask_reach(server, entry) -> np.ndarray:
    """The saved reach mask of a finished prompt, [H, W] uint8 with 0 or 255."""
    (reach_path,) = server.output_images(entry, "reach_save")
    return np.asarray(Image.open(reach_path))[..., 0]


def test_restore_photo_workflow(live_comfyui, object_info, workflows, live_model, input_photos, astronaut):
    prompt = api_prompt(workflows[PHOTO], object_info, live_model, input_photos["astronaut"])
    (restore_id,) = nodes_of_type(prompt, RESTORE)
    add_mask_reach(prompt, restore_id)
    entry = live_comfyui.run(prompt, timeout=240)
    assert_success(entry, live_comfyui)
    reach = read_mask_reach(live_comfyui, entry)
    del prompt["reach_save"]
    (restored,) = saved_images(live_comfyui, entry, prompt)
    previews = {}
    for node_id in nodes_of_type(prompt, "PreviewImage"):
        paths = live_comfyui.output_images(entry, node_id)
        assert len(paths) == 1, f"preview node {node_id} showed {len(paths)} images"
        previews[node_id] = np.asarray(Image.open(paths[0]))
    (mask_preview_id,) = [k for k in nodes_of_type(prompt, "PreviewImage") if prompt[k]["inputs"]["images"][0]
                          in nodes_of_type(prompt, "MaskToImage")]  # fmt: skip
    mask = previews.pop(mask_preview_id)[..., 0]
    (detection_preview,) = previews.values()
    check_restored(astronaut, restored[..., :3], mask)
    # Issue 3's promise, exactly: pixels the mask does not reach are bit-identical.
    assert set(np.unique(reach)) == {0, 255}
    assert np.array_equal(restored[..., :3][reach == 0], astronaut[reach == 0])
    assert (reach == 255).mean() < 0.5
    # The detection preview draws boxes on the photo: same size, some pixels differ.
    assert detection_preview.shape[:2] == astronaut.shape[:2]
    assert np.any(detection_preview[..., :3] != astronaut)
    (report_id,) = nodes_of_type(prompt, "PreviewAny")
    text = " ".join(entry["outputs"][report_id]["text"])
    assert "restored 1 face" in text, text


def test_diffusion_chain_validates_and_its_face_part_runs(
    live_comfyui, object_info, workflows, live_model, input_photos, grace_hopper
):
    workflow = workflows[TXT2IMG]
    prompt = api_prompt(workflow, object_info, live_model, {})
    # No checkpoint exists here: the server must reject the graph for that reason and no other.
    r = live_comfyui.post("/prompt", json={"prompt": prompt})
    assert r.status_code == 400
    node_errors = r.json()["node_errors"]
    (ckpt_id,) = nodes_of_type(prompt, "CheckpointLoaderSimple")
    assert set(node_errors) == {ckpt_id}, node_errors
    reasons = node_errors[ckpt_id]["errors"]
    assert all(e["extra_info"]["input_name"] == "ckpt_name" for e in reasons), reasons
    # The face part, with the generated image replaced by a loaded photo at the VAE decode.
    (decode_id,) = nodes_of_type(prompt, "VAEDecode")
    face_part = copy.deepcopy(prompt)
    face_part[decode_id] = {"class_type": "LoadImage", "inputs": {"image": input_photos["grace_hopper"]}}
    for node in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler"):
        for node_id in nodes_of_type(face_part, node):
            del face_part[node_id]
    entry = live_comfyui.run(face_part, timeout=240)
    assert_success(entry, live_comfyui)
    (restored,) = saved_images(live_comfyui, entry, face_part)
    check_restored(grace_hopper, restored[..., :3])


def test_video_frames_workflow(live_comfyui, object_info, workflows, live_model, input_photos, astronaut):
    prompt = api_prompt(workflows[VIDEO], object_info, live_model, input_photos["astronaut"])
    (frames_id,) = nodes_of_type(prompt, "RepeatImageBatch")
    frames = prompt[frames_id]["inputs"]["amount"]
    assert frames >= 4
    entry = live_comfyui.run(prompt, timeout=300)
    assert_success(entry, live_comfyui)
    restored = saved_images(live_comfyui, entry, prompt)
    assert len(restored) == frames
    for frame in restored:
        check_restored(astronaut, frame[..., :3])
        # Same input frame, same model: every frame is restored the same way.
        np.testing.assert_array_equal(frame, restored[0])


# -- bad requests -------------------------------------------------------------------------------


def _photo_prompt(workflows, object_info, model, image) -> dict:
    return api_prompt(workflows[PHOTO], object_info, model, image)


def test_missing_model_file_is_named(live_comfyui, object_info, workflows, input_photos):
    """A shared workflow naming a model the user does not have: the server names the input and the
    file before anything runs (outputs that do not need the model may still run)."""
    prompt = _photo_prompt(workflows, object_info, "RestoreFormer-not-here.ckpt", input_photos["astronaut"])
    r = live_comfyui.post("/prompt", json={"prompt": prompt})
    node_errors = r.json()["node_errors"]
    (loader_id,) = nodes_of_type(prompt, LOAD_MODEL)
    assert set(node_errors) >= {loader_id}, node_errors
    (error,) = node_errors[loader_id]["errors"]
    assert error["extra_info"]["input_name"] == "model_name"
    assert "RestoreFormer-not-here.ckpt" in error["details"], error
    if r.status_code == 200:  # the detection preview does not need the model and ran
        entry = live_comfyui.wait(r.json()["prompt_id"], timeout=120)
        assert_success(entry, live_comfyui)
        assert nodes_of_type(prompt, "SaveImage")[0] not in entry["outputs"]


def test_broken_model_file_gives_a_clear_error_and_the_server_goes_on(
    live_comfyui, object_info, workflows, input_photos, live_model, astronaut
):
    broken = live_comfyui.models_dir / "broken.safetensors"
    broken.write_bytes(b"this is not a weight file" * 10)
    prompt = _photo_prompt(workflows, object_info, broken.name, input_photos["astronaut"])
    entry = live_comfyui.run(prompt, timeout=120)
    assert entry["status"]["status_str"] == "error"
    err = history_error(entry)
    assert err["node_type"] == LOAD_MODEL, err
    assert "broken.safetensors" in err["exception_message"], err["exception_message"]
    # The next prompt is served.
    ok = live_comfyui.run(_photo_prompt(workflows, object_info, live_model, input_photos["astronaut"]))
    assert_success(ok, live_comfyui)


def test_image_without_face_passes_through_and_says_so(
    live_comfyui, object_info, workflows, live_model, input_photos
):
    prompt = _photo_prompt(workflows, object_info, live_model, input_photos["no_face"])
    entry = live_comfyui.run(prompt, timeout=120)
    assert_success(entry, live_comfyui)
    (restored,) = saved_images(live_comfyui, entry, prompt)
    original = load(live_comfyui.input_dir / input_photos["no_face"])
    np.testing.assert_array_equal(restored[..., :3], original)
    (report_id,) = nodes_of_type(prompt, "PreviewAny")
    text = " ".join(entry["outputs"][report_id]["text"]).lower()
    assert "no face" in text, text


def test_interrupted_prompt_is_reported_and_the_server_goes_on(
    live_comfyui, object_info, workflows, live_model, input_photos
):
    """/interrupt stops a long batch of frames within about one progress step (the nodes report
    progress and check for interruption between chunks), the history says so, and the next prompt
    is served. Timing is measured against the node's own progress steps, so machine load cancels."""
    prompt = api_prompt(workflows[VIDEO], object_info, live_model, input_photos["grace_hopper"])
    (frames_id,) = nodes_of_type(prompt, "RepeatImageBatch")
    frames = 24  # several progress steps, if detection chunks are bounded by frame count
    prompt[frames_id]["inputs"]["amount"] = frames
    events = Events(live_comfyui)
    try:
        prompt_id = live_comfyui.submit(prompt)
        # Wait for the first progress step of a pack node, then interrupt.
        deadline = time.monotonic() + 600
        first = None
        while first is None and time.monotonic() < deadline:
            steps = [(t, d) for t, d in events.of(prompt_id, "progress") if d["node"] in prompt
                     and prompt[d["node"]]["class_type"].startswith("RestoreFormer")]  # fmt: skip
            if steps:
                first = steps[0]
            elif live_comfyui.get(f"/history/{prompt_id}").json():
                break
            time.sleep(0.05)
        assert first is not None, "no pack node reported progress before the prompt ended"
        t_first, step = first
        node = step["node"]
        assert step["value"] < step["max"], (
            f"{prompt[node]['class_type']} reported its first progress only when done with "
            f"{step['max']} items: it cannot be interrupted within the batch"
        )
        (t_start, _), *_ = [(t, d) for t, d in events.of(prompt_id, "executing") if d.get("node") == node]
        one_step = t_first - t_start  # time to the first progress step of that node
        sent = time.monotonic()
        live_comfyui.post("/interrupt")
        entry = live_comfyui.wait(prompt_id, timeout=600)
        after = time.monotonic() - sent
    finally:
        events.close()
    assert entry["status"]["status_str"] == "error"
    kinds = history_messages(entry)
    assert "execution_interrupted" in kinds, kinds
    stopped_in = dict(entry["status"]["messages"])["execution_interrupted"]["node_type"]
    assert stopped_in.startswith("RestoreFormer"), stopped_in
    assert after < 3 * one_step + 5, (
        f"{stopped_in} went on for {after:.1f} s after /interrupt; its first progress step took "
        f"{one_step:.1f} s: interruption is not checked between chunks"
    )
    ok = live_comfyui.run(_photo_prompt(workflows, object_info, live_model, input_photos["astronaut"]))
    assert_success(ok, live_comfyui)


def test_inspection_workflow(live_comfyui, object_info, workflows, live_model, input_photos):
    """Every view of the inspection graph is produced for a real photo; the usage summary speaks of
    the dictionary the model has (128 entries in the test geometry)."""
    prompt = api_prompt(workflows[INSPECT], object_info, live_model, input_photos["astronaut"])
    entry = live_comfyui.run(prompt, timeout=300)
    assert_success(entry, live_comfyui)
    sizes = {}
    for node_id in nodes_of_type(prompt, "PreviewImage"):
        (path,) = live_comfyui.output_images(entry, node_id)
        image = np.asarray(Image.open(path))
        assert image.ndim == 3 and image.std() > 0, f"preview {node_id} is empty"
        source = prompt[prompt[node_id]["inputs"]["images"][0]]["class_type"]
        sizes.setdefault(source, []).append(image.shape[:2])
    assert set(sizes) == {ATLAS, USAGE, CODE_MAP, ATTENTION}
    # Every text output is shown too: the usage summary, the atlas entries and the query point.
    texts = {
        prompt[prompt[node_id]["inputs"]["source"][0]]["class_type"]: " ".join(entry["outputs"][node_id]["text"])
        for node_id in nodes_of_type(prompt, "PreviewAny")
    }
    assert set(texts) == {ATLAS, USAGE, ATTENTION}
    assert "perplexity" in texts[USAGE].lower() and "128" in texts[USAGE], texts[USAGE]
    assert texts[ATTENTION].startswith("query point (0.377, 0.469)"), texts[ATTENTION]


def test_edit_between_align_and_paste_workflow(live_comfyui, object_info, workflows, input_photos, grace_hopper):
    """Align -> edit the crops with core nodes -> Paste: the face changes, and pixels the paste
    mask does not reach (mask > 0, thresholded before 8-bit rounding) are bit-identical."""
    prompt = api_prompt(workflows[EDIT], object_info, "", input_photos["grace_hopper"])
    (paste_id,) = nodes_of_type(prompt, PASTE)
    add_mask_reach(prompt, paste_id)
    entry = live_comfyui.run(prompt, timeout=240)
    assert_success(entry, live_comfyui)
    reach = read_mask_reach(live_comfyui, entry)
    (save_id,) = [k for k in nodes_of_type(prompt, "SaveImage") if k != "reach_save"]
    (edited_path,) = live_comfyui.output_images(entry, save_id)
    edited = np.asarray(Image.open(edited_path))[..., :3]
    check_restored(grace_hopper, edited)
    assert 0 < (reach == 255).mean() < 0.5
    assert np.array_equal(edited[reach == 0], grace_hopper[reach == 0])
