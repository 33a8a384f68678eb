"""The shipped workflows in a real browser: Debian's chromium driven by playwright opens the
frontend served by the live test server, loads each workflow with `app.loadGraphData`, finds every
node type registered, checks that the missing-models dialog lists exactly the model files the
loaders pick (with the declared folder and URL), converts it with the frontend's own
`app.graphToPrompt()` (and checks the tests' converter against it), queues it as the Run button
does and waits until every Save/Preview Image node shows its image. The same again with the Vue
node design ("Nodes 2.0", `Comfy.VueNodes.Enabled`), the node search's order, and the Attention
Map's click-to-pick. Screenshots land in artifacts/browser/ (gitignored; CI keeps them).

The model is the small random RestoreFormer of helpers/live.py (no pretrained weights offline).
Set RF_NO_BROWSER=1 to skip these tests on a machine without chromium; otherwise a missing
browser is a failure, so CI cannot pass them by skipping.
"""

from __future__ import annotations

import os

import pytest
from helpers import browser
from helpers import live as live_fixtures
from helpers.workflow_format import nodes_of_type, shipped_workflows, ui_to_api, widget_names

from tools.make_workflows import ATTENTION, INSPECT, LOAD_MODEL, LOAD_UPSCALER, LOADERS, PHOTO, TXT2IMG

pytestmark = pytest.mark.slow

live_comfyui = live_fixtures.live_comfyui
live_model = live_fixtures.live_model
input_photos = live_fixtures.input_photos
live_upscaler = live_fixtures.live_upscaler

# Workflows that cannot run here and why (they are loaded, checked and photographed all the same).
NOT_RUNNABLE = {TXT2IMG: "needs a diffusion checkpoint"}
SHOTS = live_fixtures.ARTIFACTS / "browser"
VUE_NODES = "Comfy.VueNodes.Enabled"
FACE_RESTORE = "Face Restore (RestoreFormer)"  # the display name of RestoreFormerRestoreFaces


@pytest.fixture(scope="module")
def page(live_comfyui):
    reason = browser.browser_available()
    if reason:
        if os.environ.get("RF_NO_BROWSER") == "1":
            pytest.skip(reason)
        pytest.fail(reason + " (or set RF_NO_BROWSER=1 to skip the browser tests)")
    with browser.comfy_page(live_comfyui.url) as (page, _console):
        yield page


@pytest.fixture(scope="module")
def object_info(live_comfyui) -> dict:
    return live_comfyui.object_info()


def loader_picks(workflow: dict, object_info: dict) -> set[tuple[str, str]]:
    """(models folder, file name) of every file the workflow's loaders pick."""
    picks = set()
    for node in workflow["nodes"]:
        if node["type"] in LOADERS:
            widget, folder = LOADERS[node["type"]]
            picks.add((folder, node["widgets_values"][widget_names(object_info[node["type"]]).index(widget)]))
    return picks


def declared_urls(workflow: dict) -> dict[tuple[str, str], str]:
    return {
        (m["directory"], m["name"]): m["url"]
        for node in workflow["nodes"]
        for m in node.get("properties", {}).get("models", [])
    }


def pick_test_files(page, workflow: dict, live_model: str, input_photos: dict, live_upscaler: str = "") -> None:
    """Choose the test model and photo in the widgets, as a user would."""
    for node_id in nodes_of_type(workflow, LOAD_MODEL):
        browser.set_widget(page, int(node_id), "model_name", live_model)
    for node_id in nodes_of_type(workflow, "LoadImage"):
        browser.set_widget(page, int(node_id), "image", input_photos["astronaut"])
    for node_id in nodes_of_type(workflow, LOAD_UPSCALER):
        assert live_upscaler, "this workflow needs the live_upscaler fixture"
        browser.set_widget(page, int(node_id), "model_name", live_upscaler)


def image_nodes(workflow: dict) -> list[int]:
    return [int(i) for i in nodes_of_type(workflow, "SaveImage") + nodes_of_type(workflow, "PreviewImage")]


@pytest.mark.parametrize("name", sorted(shipped_workflows()))
def test_workflow_in_the_browser(name, page, live_comfyui, object_info, live_model, live_upscaler, input_photos):
    workflow = shipped_workflows()[name]
    missing = browser.load_workflow(page, workflow, close=False)
    assert missing == [], f"the frontend lacks node types {missing}"

    # The test server has none of the files the workflow names: the dialog lists each file a
    # loader picks, in the folder that loader reads, with the declared download.
    picks = loader_picks(workflow, object_info)
    listed = browser.missing_models_dialog(page, expect_any=bool(picks))
    browser.close_dialogs(page)
    assert {(e["directory"], e["name"]) for e in listed} == picks
    urls = declared_urls(workflow)
    for entry in listed:
        assert entry["url"] == urls[entry["directory"], entry["name"]]
        assert not (entry["error"] or "").startswith("Invalid directory"), entry
        if entry["url"].startswith("https://huggingface.co/") and entry["name"].endswith(".safetensors"):
            assert entry["error"] is None, f"the frontend does not offer the download: {entry}"

    pick_test_files(page, workflow, live_model, input_photos, live_upscaler)
    # The frontend's conversion and the tests' converter agree on every input.
    frontend = browser.graph_to_prompt(page)
    ours = ui_to_api(page.evaluate("() => JSON.parse(JSON.stringify(window.app.graph.serialize()))"), object_info)
    assert set(frontend) == set(ours)
    for node_id, node in ours.items():
        assert frontend[node_id]["class_type"] == node["class_type"]
        # Frontend-only widgets (e.g. Preview as Text's text box) are sent too; the server ignores them.
        spec = object_info[node["class_type"]]["input"]
        defined = {**spec.get("required", {}), **spec.get("optional", {})}
        sent = {k: v for k, v in frontend[node_id]["inputs"].items() if k in defined}
        assert sent == node["inputs"], node_id

    shot = SHOTS / f"{name}.png"
    if name in NOT_RUNNABLE:
        browser.screenshot(page, shot)
        return
    shown = image_nodes(workflow)
    entry = browser.queue_and_wait(page, live_comfyui, shown, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    for node_id in shown:
        assert live_comfyui.output_images(entry, node_id), f"node {node_id} shows no image"
    browser.screenshot(page, shot)
    assert shot.stat().st_size > 10_000
    if name == INSPECT:
        check_attention_picker(page, live_comfyui, workflow, shown)


def check_attention_picker(page, server, workflow: dict, shown: list[int]) -> None:
    """After a run the Attention Map node shows the face crop; a click on it sets x and y to the
    clicked point (relative units), and the next run uses that point."""
    (node_id,) = [int(i) for i in nodes_of_type(workflow, ATTENTION)]
    page.wait_for_function(
        """(id) => { const img = window.app.graph.getNodeById(id).restoreformerPicker?.image;
                     return img && img.complete && img.naturalWidth > 0; }""",
        arg=node_id,
        timeout=30_000,
    )
    browser.set_widget(page, node_id, "units", "crop pixels")  # the click must switch it back
    browser.fit_view(page)
    box = page.evaluate(
        """(id) => { const img = window.app.graph.getNodeById(id).restoreformerPicker.image;
                     const r = img.getBoundingClientRect();
                     return {x: r.x, y: r.y, width: r.width, height: r.height,
                             natural: [img.naturalWidth, img.naturalHeight]}; }""",
        node_id,
    )
    assert box["natural"] == [512, 512], "the picker shows something else than the aligned crop"
    assert box["width"] > 50 and box["height"] > 50, box
    # A click lands on a whole CSS pixel: aim at one, and expect the fraction of that pixel.
    click = (round(box["x"] + 0.25 * box["width"]), round(box["y"] + 0.75 * box["height"]))
    expected = ((click[0] - box["x"]) / box["width"], (click[1] - box["y"]) / box["height"])
    page.mouse.click(*click)
    values = page.evaluate(
        """(id) => Object.fromEntries(window.app.graph.getNodeById(id).widgets
                                       .filter(w => ['x', 'y', 'units'].includes(w.name))
                                       .map(w => [w.name, w.value]))""",
        node_id,
    )
    assert values["units"] == "relative (0..1)", values
    # Within half a display pixel of the picture, plus the widgets' rounding to 0.001.
    assert abs(values["x"] - expected[0]) <= 0.5 / box["width"] + 0.0005, (values, expected, box)
    assert abs(values["y"] - expected[1]) <= 0.5 / box["height"] + 0.0005, (values, expected, box)
    browser.screenshot(page, SHOTS / "attention-map-picked.png")
    sent = browser.graph_to_prompt(page)[str(node_id)]["inputs"]
    assert (sent["x"], sent["y"], sent["units"]) == (values["x"], values["y"], values["units"])
    entry = browser.queue_and_wait(page, server, shown, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    (info_id,) = [
        k for k in nodes_of_type(workflow, "PreviewAny")
        if any(link[1] == node_id and link[3] == int(k) for link in workflow["links"])
    ]  # fmt: skip
    text = " ".join(entry["outputs"][info_id]["text"])
    assert text.startswith(f"query point ({values['x']:.3f}, {values['y']:.3f})"), text


# -- Nodes 2.0 ---------------------------------------------------------------------------------


@pytest.fixture
def vue_nodes(page):
    """The Vue node design switched on for one test (the frontend's own setting), then off."""
    if browser.get_setting(page, VUE_NODES) is None:
        pytest.skip(f"this frontend has no {VUE_NODES} setting (Nodes 2.0 came with frontend 1.27.1)")
    browser.set_setting(page, VUE_NODES, True)
    try:
        yield page
    finally:
        browser.set_setting(page, VUE_NODES, False)


@pytest.mark.parametrize("name", sorted(shipped_workflows()))
def test_workflow_with_nodes_2(name, vue_nodes, live_comfyui, object_info, live_model, input_photos):
    """Every workflow loads under Nodes 2.0 with each node drawn as a Vue node titled as in the
    classic design; the photo workflow also runs and shows its images there."""
    page = vue_nodes
    workflow = shipped_workflows()[name]
    assert browser.load_workflow(page, workflow) == []
    page.wait_for_function("(n) => document.querySelectorAll('[data-node-id]').length === n", arg=len(workflow["nodes"]))
    titles = page.evaluate(
        """() => Object.fromEntries(Array.from(document.querySelectorAll('[data-node-id]')).map(e =>
                [e.getAttribute('data-node-id'),
                 (e.querySelector('[data-testid=node-title]') || e).innerText.trim()]))"""
    )
    for node in workflow["nodes"]:
        if node["type"].startswith("RestoreFormer") and "title" not in node:
            expected = object_info[node["type"]]["display_name"]
            assert titles[str(node["id"])] == expected, (node["id"], titles[str(node["id"])])
    if name == INSPECT:  # the click-to-pick picture has its place in the Vue node too
        assert page.evaluate("() => !!document.querySelector('[data-node-id] .restoreformer-attention-picker')")
    shot = SHOTS / "nodes-2.0" / f"{name}.png"
    if name == PHOTO:
        pick_test_files(page, workflow, live_model, input_photos)
        entry = browser.queue_and_wait(page, live_comfyui, image_nodes(workflow), timeout=300)
        assert entry["status"]["status_str"] == "success", entry["status"]
    browser.screenshot(page, shot)
    assert shot.stat().st_size > 10_000


# -- node search -------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["face restore", "restore face"])
def test_search_lists_face_restore_first(query, page):
    listed = browser.search_nodes(page, query)
    assert listed and listed[0] == FACE_RESTORE, listed[:5]


def test_search_for_restore(page):
    """'restore' lists Face Restore first only on a frontend that ranks by more than the start of
    a name: frontends 1.32-1.58 rank the names (ids and display names) that start with the query
    by their length, and every node id of the pack starts with 'RestoreFormer' (ids are never
    renamed), so the shortest id comes first."""
    listed = browser.search_nodes(page, "restore")
    assert FACE_RESTORE in listed, listed
    if listed[0] != FACE_RESTORE:
        reason = (
            f"this frontend lists {listed[0]!r} first for 'restore' (shortest name starting with it: "
            f"the ids RestoreFormer...; Face Restore is number {listed.index(FACE_RESTORE) + 1})"
        )
        print(reason)
        pytest.skip(reason)


@pytest.mark.parametrize("query", ["gfpgan", "codeformer", "face detailer"])
def test_search_aliases_where_the_host_sends_them(query, page, object_info):
    """SEARCH_ALIASES reach the search only where ComfyUI sends them (search_aliases in
    /object_info) and the frontend searches them; elsewhere the attribute is ignored."""
    if "search_aliases" not in object_info["RestoreFormerRestoreFaces"]:
        reason = "this ComfyUI does not send SEARCH_ALIASES (search_aliases in /object_info)"
        print(reason)
        pytest.skip(reason)
    listed = browser.search_nodes(page, query)
    assert listed and listed[0] == FACE_RESTORE, listed[:5]
