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


def load_workflow(page, workflow: dict, close: bool = True) -> list[str]:
    """`app.loadGraphData(workflow)` as opening a file does; returns the node types of the
    workflow the frontend lacks. The dialogs it opens (missing models...) are closed unless
    `close` is False."""
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    types = sorted({n["type"] for n in workflow["nodes"]})
    missing = page.evaluate(
        "(types) => types.filter(t => !(t in window.LiteGraph.registered_node_types))", types
    )
    if close:
        close_dialogs(page)
    return missing


def missing_models_dialog(page, expect_any: bool, timeout: float = 10.0) -> list[dict]:
    """The entries of the frontend's missing-models dialog after a load: [{"directory", "name",
    "url", "error" (None when the frontend offers the download)}]. Waits for the dialog when
    `expect_any`, else gives it a second to (not) appear."""
    selector = ".comfy-missing-models [role=option]"
    if expect_any:
        page.wait_for_selector(selector, timeout=timeout * 1000)
    else:
        time.sleep(1.0)
    entries = page.evaluate(
        """(selector) => Array.from(document.querySelectorAll(selector)).map((option) => {
            const label = option.querySelector('span[title]');
            const error = option.querySelector('.p-message-text');
            return {label: label ? label.textContent.trim() : '', url: label ? label.title : '',
                    error: error ? error.textContent.trim() : null};
        })""",
        selector,
    )
    for entry in entries:
        entry["directory"], _, entry["name"] = entry.pop("label").partition(" / ")
    return entries


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
        wait_for_images(page, image_node_ids)
    return entry


def wait_for_images(page, node_ids: list[int], timeout: float = 60.0) -> None:
    """Until every node in `node_ids` shows its image: drawn on the canvas (node.imgs, the classic
    design) or as an <img> in the node's element (Nodes 2.0)."""
    page.wait_for_function(
        """(ids) => ids.every(id => {
            const n = window.app.graph.getNodeById(id);
            if (n && n.imgs && n.imgs.length > 0 && n.imgs.every(i => i.complete && i.naturalWidth > 0)) return true;
            const shown = document.querySelectorAll(`[data-node-id="${id}"] img`);
            return shown.length > 0 && Array.from(shown).every(i => i.complete && i.naturalWidth > 0);
        })""",
        arg=node_ids,
        timeout=timeout * 1000,
    )


def set_setting(page, name: str, value) -> None:
    page.evaluate("async ([n, v]) => { await window.app.extensionManager.setting.set(n, v); }", [name, value])


def get_setting(page, name: str):
    return page.evaluate("(n) => window.app.extensionManager.setting.get(n)", name)


def search_nodes(page, query: str, timeout: float = 10.0) -> list[str]:
    """Type `query` into the node search box (as double-clicking the canvas opens it) and return
    the display names it lists, in its order."""
    page.evaluate("async () => { await window.app.extensionManager.command.execute('Workspace.SearchBox.Toggle'); }")
    box = page.locator("input[placeholder='Search Nodes...']").first
    box.wait_for(timeout=timeout * 1000)
    box.fill(query)
    time.sleep(1.0)  # the list follows the input after a debounce
    listbox = box.get_attribute("aria-controls")
    names = page.evaluate(
        """(id) => Array.from(document.querySelectorAll(`#${CSS.escape(id)} [role=option]`))
                .map(o => (o.querySelector('.option-display-name') || o).innerText.split('\\n')[0].trim())
                .filter(Boolean)""",
        listbox,
    )
    page.keyboard.press("Escape")
    return names


def fit_view(page, zoom: float = 0.9) -> dict:
    """Fit the whole graph into the canvas at once (the Fit View command animates); returns the
    view as a workflow's extra.ds stores it ({"scale", "offset"})."""
    view = page.evaluate(
        """(zoom) => {
            const canvas = window.app.canvas, title = window.LiteGraph.NODE_TITLE_HEIGHT;
            let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
            for (const node of window.app.graph._nodes) {
                x0 = Math.min(x0, node.pos[0]); y0 = Math.min(y0, node.pos[1] - title);
                x1 = Math.max(x1, node.pos[0] + node.size[0]); y1 = Math.max(y1, node.pos[1] + node.size[1]);
            }
            canvas.ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], {zoom});
            canvas.setDirty(true, true);
            return {scale: canvas.ds.scale, offset: [canvas.ds.offset[0], canvas.ds.offset[1]]};
        }""",
        zoom,
    )
    time.sleep(0.5)  # a frame or two: the canvas and DOM widgets follow the new view
    return {"scale": round(view["scale"], 4), "offset": [round(v, 1) for v in view["offset"]]}


# The page rectangle (x, y, width, height) the graph's nodes cover, at the current view.
_GRAPH_BOX_JS = """
() => {
    const canvas = window.app.canvas, ds = canvas.ds, rect = canvas.canvas.getBoundingClientRect();
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const node of window.app.graph._nodes) {
        const title = window.LiteGraph.NODE_TITLE_HEIGHT;
        x0 = Math.min(x0, node.pos[0]); y0 = Math.min(y0, node.pos[1] - title);
        x1 = Math.max(x1, node.pos[0] + node.size[0]); y1 = Math.max(y1, node.pos[1] + node.size[1]);
    }
    const margin = 24;  // the pack badge above a title included
    const left = Math.max(rect.left, rect.left + (x0 + ds.offset[0]) * ds.scale - margin);
    const top = Math.max(rect.top, rect.top + (y0 + ds.offset[1]) * ds.scale - margin);
    const right = Math.min(rect.right, rect.left + (x1 + ds.offset[0]) * ds.scale + margin);
    const bottom = Math.min(rect.bottom, rect.top + (y1 + ds.offset[1]) * ds.scale + margin);
    return {x: left, y: top, width: right - left, height: bottom - top};
}
"""


_GRAPH_SIZE_JS = """
() => {
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const node of window.app.graph._nodes) {
        x0 = Math.min(x0, node.pos[0]); y0 = Math.min(y0, node.pos[1] - window.LiteGraph.NODE_TITLE_HEIGHT);
        x1 = Math.max(x1, node.pos[0] + node.size[0]); y1 = Math.max(y1, node.pos[1] + node.size[1]);
    }
    return [x1 - x0, y1 - y0];
}
"""


def graph_screenshot(page, scale: float = 1.0) -> bytes:
    """PNG of the graph at about `scale` (canvas units to pixels): the page is resized so that
    the fitted graph is drawn that large (zoomed far out the canvas leaves out all text), then
    put back to its size."""
    before = page.viewport_size
    width, height = page.evaluate(_GRAPH_SIZE_JS)
    chrome = 160  # the frontend's menus and side bar around the canvas
    # The menus, tabs and side bar float over the canvas: hidden for the picture.
    hide = page.add_style_tag(content=".splitter-overlay-root, .minimap-main-container { visibility: hidden !important; }")
    try:
        _resize(page, int(width * scale) + chrome, int(height * scale) + chrome)
        fit_view(page)
        return page.screenshot(clip=page.evaluate(_GRAPH_BOX_JS))
    finally:
        hide.evaluate("(style) => style.remove()")
        _resize(page, before["width"], before["height"])
        fit_view(page)


def _resize(page, width: int, height: int) -> None:
    """Resize the page and wait until the canvas has followed (it resizes on a later frame)."""
    if page.viewport_size == {"width": width, "height": height}:
        return
    before = page.evaluate("() => [window.app.canvas.canvas.clientWidth, window.app.canvas.canvas.clientHeight]")
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_function(
        """(b) => { const c = window.app.canvas.canvas;
                    return c.clientWidth !== b[0] || c.clientHeight !== b[1]; }""",
        arg=before,
        timeout=10_000,
    )
    time.sleep(0.3)


def screenshot(page, path: Path) -> Path:
    """The whole page with the graph fitted into view, as a PNG at `path` (a test artifact)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fit_view(page)
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
