"""Shipped workflows: reading them, and converting ComfyUI's UI format to the API format.

The UI format (what the frontend saves and `app.loadGraphData` reads) keeps widget values as a
positional list per node; the API format (what `/prompt` takes) names every input. The mapping
needs the node definitions, so `ui_to_api` takes the live server's `/object_info`. The browser test
checks this converter against the frontend's own `app.graphToPrompt()` for every shipped workflow.
"""

from __future__ import annotations

import json

from helpers.comfy_host import REPO

# `example_workflows/` is the folder name ComfyUI's /workflow_templates looks for first (other
# names are found too, with a log hint to rename them); the template browser lists them per pack.
WORKFLOW_DIR = REPO / "example_workflows"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Extra widget values the frontend stores after certain inputs (not inputs of the node).
_UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")


def shipped_workflows() -> dict[str, dict]:
    """{file stem: UI-format workflow} for every JSON in example_workflows/."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(WORKFLOW_DIR.glob("*.json"))}


def _input_specs(definition: dict) -> list[tuple[str, object, dict]]:
    """(name, type, options) of a node's inputs, in the frontend's order (required, optional)."""
    order = definition.get("input_order") or {
        k: list(definition["input"].get(k, {})) for k in ("required", "optional")
    }
    specs = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = definition["input"][section][name]
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs.append((name, kind, options))
    return specs


def _is_widget(kind, options: dict) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _extra_values(name: str, kind, options: dict) -> int:
    """How many values the frontend stores after this widget's own value."""
    extra = 0
    if kind == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
        extra += 1  # the "control after generate" combo (fixed / increment / randomize)
    if any(options.get(flag) for flag in _UPLOAD_FLAGS):
        extra += 1  # the upload button
    return extra


def widget_names(definition: dict) -> list[str | None]:
    """Names matching a node's widgets_values, position by position (None for frontend extras)."""
    names: list[str | None] = []
    for name, kind, options in _input_specs(definition):
        if _is_widget(kind, options):
            names.append(name)
            names.extend([None] * _extra_values(name, kind, options))
    return names


def trailing_defaults(definition: dict, count: int) -> list | None:
    """Defaults of the widgets after the first `count` widget values, when every one of them is an
    optional input with a default (inputs added at the end of a node after a workflow was saved: the
    frontend gives them their default); None otherwise."""
    optional = set(definition["input"].get("optional", {}))
    values, position = [], 0
    for name, kind, options in _input_specs(definition):
        if not _is_widget(kind, options):
            continue
        width = 1 + _extra_values(name, kind, options)
        if position >= count:
            if name not in optional or "default" not in options or width != 1:
                return None
            values.append(options["default"])
        elif position + width > count:
            return None  # the saved values end inside one widget's values
        position += width
    return values


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to the API format `/prompt` takes.

    Nodes the server does not define (notes, frontend-only nodes) and muted nodes are left out;
    bypassed nodes and subgraphs are not supported (the shipped workflows use neither)."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] not in object_info or node.get("mode", 0) == 2:
            continue
        if node.get("mode", 0) == 4:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed: not supported")
        definition = object_info[node["type"]]
        inputs: dict = {}
        values = node.get("widgets_values") or []
        if isinstance(values, dict):  # some nodes save {name: value}
            inputs.update(values)
        else:
            names = widget_names(definition)
            if len(values) < len(names) and (fill := trailing_defaults(definition, len(values))):
                values = [*values, *fill]
            if len(values) != len(names):
                raise ValueError(
                    f"node {node['id']} ({node['type']}) has {len(values)} widget values, "
                    f"its definition {len(names)} ({names})"
                )
            inputs.update({n: v for n, v in zip(names, values) if n is not None})
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            _, origin, origin_slot, _, _, _ = links[slot["link"]]
            if origin not in nodes:
                raise ValueError(f"link {slot['link']} comes from a missing node {origin}")
            inputs[slot["name"]] = [str(origin), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def nodes_of_type(prompt_or_workflow: dict, node_type: str) -> list[str]:
    """Ids of the nodes of one type, in an API prompt or a UI workflow."""
    if "nodes" in prompt_or_workflow:
        return [str(n["id"]) for n in prompt_or_workflow["nodes"] if n["type"] == node_type]
    return [k for k, v in prompt_or_workflow.items() if v["class_type"] == node_type]
