"""The shipped workflows in a real browser: Debian's chromium driven by playwright opens the
frontend served by the live test server, loads each workflow with `app.loadGraphData`, finds every
node type registered, converts it with the frontend's own `app.graphToPrompt()` (and checks the
tests' converter against it), queues it as the Run button does and waits until every Save/Preview Image
node shows its image. A screenshot of each lands in artifacts/ (gitignored; CI keeps it).

The model is the small random RestoreFormer of live_fixtures.py (no pretrained weights offline).
Set RF_NO_BROWSER=1 to skip these tests on a machine without chromium; otherwise a missing
browser is a failure, so CI cannot pass them by skipping.
"""

from __future__ import annotations

import os

import pytest
from helpers import browser
from helpers import live as live_fixtures
from helpers.workflow_format import nodes_of_type, shipped_workflows, ui_to_api

from tools.make_workflows import LOAD_MODEL, LOAD_UPSCALER

pytestmark = pytest.mark.slow

live_comfyui = live_fixtures.live_comfyui
live_model = live_fixtures.live_model
input_photos = live_fixtures.input_photos
live_upscaler = live_fixtures.live_upscaler

# Workflows that cannot run here and why (they are loaded, checked and photographed all the same).
NOT_RUNNABLE = {"txt2img_then_restore_faces": "needs a diffusion checkpoint"}


@pytest.fixture(scope="module")
def page(live_comfyui):
    reason = browser.browser_available()
    if reason:
        if os.environ.get("RF_NO_BROWSER") == "1":
            pytest.skip(reason)
        pytest.fail(reason + " (or set RF_NO_BROWSER=1 to skip the browser tests)")
    with browser.comfy_page(live_comfyui.url) as (page, _console):
        yield page


@pytest.mark.parametrize("name", sorted(shipped_workflows()))
def test_workflow_in_the_browser(name, page, live_comfyui, live_model, live_upscaler, input_photos):
    workflow = shipped_workflows()[name]
    missing = browser.load_workflow(page, workflow)
    assert missing == [], f"the frontend lacks node types {missing}"

    # Pick the test model and photo in the widgets, as a user would.
    for node_id in nodes_of_type(workflow, LOAD_MODEL):
        browser.set_widget(page, int(node_id), "model_name", live_model)
    for node_id in nodes_of_type(workflow, "LoadImage"):
        browser.set_widget(page, int(node_id), "image", input_photos["astronaut"])
    for node_id in nodes_of_type(workflow, LOAD_UPSCALER):
        browser.set_widget(page, int(node_id), "model_name", live_upscaler)

    # The frontend's conversion and the tests' converter agree on every input.
    frontend = browser.graph_to_prompt(page)
    object_info = live_comfyui.object_info()
    ours = ui_to_api(page.evaluate("() => JSON.parse(JSON.stringify(window.app.graph.serialize()))"), object_info)
    assert set(frontend) == set(ours)
    for node_id, node in ours.items():
        assert frontend[node_id]["class_type"] == node["class_type"]
        # Frontend-only widgets (e.g. Preview as Text's text box) are sent too; the server ignores them.
        spec = object_info[node["class_type"]]["input"]
        defined = {**spec.get("required", {}), **spec.get("optional", {})}
        sent = {k: v for k, v in frontend[node_id]["inputs"].items() if k in defined}
        assert sent == node["inputs"], node_id

    shot = live_fixtures.ARTIFACTS / "browser" / f"{name}.png"
    if name in NOT_RUNNABLE:
        browser.screenshot(page, shot)
        return
    shown = nodes_of_type(workflow, "SaveImage") + nodes_of_type(workflow, "PreviewImage")
    entry = browser.queue_and_wait(page, live_comfyui, [int(i) for i in shown], timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    for node_id in shown:
        assert live_comfyui.output_images(entry, node_id), f"node {node_id} shows no image"
    browser.screenshot(page, shot)
    assert shot.stat().st_size > 10_000
