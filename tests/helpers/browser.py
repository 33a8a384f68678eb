"""Drive ComfyUI's real frontend (comfyui-frontend-package, served by the live test server) with
Debian's `chromium` through the PyPI `playwright` package. Never `playwright install`: the browser
is the system one at CHROMIUM (default /usr/bin/chromium)."""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def browser_available() -> str | None:
    """None when a browser test can run, else the reason it cannot."""
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install playwright)"
    return None


@contextmanager
def comfy_page(url: str, viewport=(2400, 1500)):
    """A page with the ComfyUI frontend loaded and its graph ready; yields (page, console lines)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(url)
            page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
            close_dialogs(page)
            yield page, console
        finally:
            browser.close()


def close_dialogs(page) -> None:
    """Close whatever dialog the frontend opened on load (templates, missing models...)."""
    for _ in range(3):
        if not page.evaluate("document.querySelectorAll('.p-dialog').length"):
            return
        page.keyboard.press("Escape")
        time.sleep(0.3)


def load_workflow(page, workflow: dict) -> list[str]:
    """`app.loadGraphData(workflow)`; returns the node types of the workflow the frontend lacks."""
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    types = sorted({n["type"] for n in workflow["nodes"]})
    missing = page.evaluate(
        "(types) => types.filter(t => !(t in window.LiteGraph.registered_node_types))", types
    )
    close_dialogs(page)
    return missing


def set_widget(page, node_id: int, widget: str, value) -> None:
    """Set a widget of a loaded node, as a user picking a value would."""
    ok = page.evaluate(
        """([id, name, value]) => {
            const node = window.app.graph.getNodeById(id);
            const w = node && node.widgets && node.widgets.find(w => w.name === name);
            if (!w) return false;
            w.value = value;
            if (w.callback) w.callback(value);
            return true;
        }""",
        [node_id, widget, value],
    )
    if not ok:
        raise KeyError(f"node {node_id} has no widget {widget!r}")


def graph_to_prompt(page) -> dict:
    """The API-format prompt the frontend would send (`app.graphToPrompt()`)."""
    return page.evaluate("async () => (await window.app.graphToPrompt()).output")


def queue_and_wait(page, server, image_node_ids: list[int], timeout: float = 300.0) -> dict:
    """Queue the loaded graph as a user clicking Run does, wait until the server finishes it and
    every node in `image_node_ids` shows its image in the page. Returns the history entry."""
    before = set(server.get("/history").json())
    page.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
    deadline = time.monotonic() + timeout
    prompt_id = None
    while prompt_id is None and time.monotonic() < deadline:
        new = set(server.get("/history").json()) - before
        queue = server.get("/queue").json()
        running = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
        candidates = list(new) + running
        if candidates:
            prompt_id = candidates[0]
        else:
            time.sleep(0.25)
    if prompt_id is None:
        raise TimeoutError("the frontend queued nothing")
    entry = server.wait(prompt_id, max(1.0, deadline - time.monotonic()))
    if entry["status"]["status_str"] == "success":
        page.wait_for_function(
            """(ids) => ids.every(id => { const n = window.app.graph.getNodeById(id);
                        return n && n.imgs && n.imgs.length > 0 && n.imgs.every(i => i.complete); })""",
            arg=image_node_ids,
            timeout=60_000,
        )
    return entry


def screenshot(page, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.evaluate(
        """async () => {
            try { await window.app.extensionManager.command.execute("Comfy.Canvas.FitView"); }
            catch (e) { window.app.canvas.ds.offset = [80, 140]; }
            window.app.canvas.setDirty(true, true);
        }"""
    )
    time.sleep(0.5)
    page.screenshot(path=str(path))
    return path


def dump(obj) -> str:
    return json.dumps(obj, indent=1)[:4000]


_BUILD_JS = """
async (spec) => {
    const app = window.app;
    app.graph.clear();
    const made = {};
    for (const n of spec.nodes) {
        const node = window.LiteGraph.createNode(n.type);
        if (!node) throw new Error("unknown node type " + n.type);
        node.pos = n.pos;
        if (n.title) node.title = n.title;
        app.graph.add(node);
        for (const [name, value] of Object.entries(n.widgets || {})) {
            const w = (node.widgets || []).find(w => w.name === name);
            if (!w) throw new Error(n.type + " has no widget " + name);
            w.value = value;
        }
        if (n.size) node.size = n.size;
        made[n.key] = node;
    }
    for (const [src, out, dst, inp] of spec.links) {
        const a = made[src], b = made[dst];
        const o = typeof out === "number" ? out : a.findOutputSlot(out);
        const i = b.findInputSlot(inp);
        if (o < 0 || i < 0) throw new Error(`cannot link ${src}.${out} -> ${dst}.${inp}`);
        if (!a.connect(o, b, i)) throw new Error(`link refused ${src}.${out} -> ${dst}.${inp}`);
    }
    for (const g of spec.groups || []) {
        const group = new window.LiteGraph.LGraphGroup(g.title);
        group.pos = g.pos; group.size = g.size;
        app.graph.add(group);
    }
    app.graph.setDirtyCanvas(true, true);
    const ids = Object.fromEntries(Object.entries(made).map(([k, n]) => [k, n.id]));
    return {workflow: JSON.parse(JSON.stringify(app.graph.serialize())), ids};
}
"""


def build_workflow(page, spec: dict) -> tuple[dict, dict[str, int]]:
    """Build a graph in the real frontend from a compact spec and serialize it in the frontend's own
    UI format (so node ids, links and widgets_values order are exactly what the frontend writes).

    spec = {"nodes": [{"key", "type", "pos": [x, y], "widgets": {name: value}, "title"?}],
            "links": [(src_key, output name or index, dst_key, input name)], "groups"?: [...]}
    Returns (workflow, {key: node id})."""
    result = page.evaluate(_BUILD_JS, spec)
    return result["workflow"], result["ids"]
