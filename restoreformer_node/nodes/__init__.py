"""The one place where the pack's ComfyUI nodes are listed.

Node ids are saved inside users' workflows: every id starts with `RestoreFormer` and is never
renamed once released. Each node module exposes NODES = {node_id: (class, display name)}.
Display names read "<What> (RestoreFormer)". Each class lists extra search words in SEARCH_ALIASES:
newer ComfyUI sends them to the frontend's node search; older hosts (0.3.75) ignore the attribute.
"""

from __future__ import annotations

NODE_ID_PREFIX = "RestoreFormer"

_MODULES: list[str] = [
    "model_nodes",
    "compile_nodes",
    "detect_nodes",
    "parsing_nodes",
    "segs_nodes",
    "restore_nodes",
    "inspect_nodes",
]


def _collect():
    import importlib

    classes, names = {}, {}
    for module_name in _MODULES:
        module = importlib.import_module(f"{__name__}.{module_name}")
        for node_id, (cls, display) in module.NODES.items():
            if not node_id.startswith(NODE_ID_PREFIX):
                raise ValueError(f"node id {node_id!r} must start with {NODE_ID_PREFIX!r}")
            if node_id in classes:
                raise ValueError(f"node id {node_id!r} is defined twice")
            classes[node_id] = cls
            names[node_id] = display
    return classes, names


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = _collect()
