"""What the Comfy Registry and ComfyUI-Manager check or flag, checked here first (fast, no server).

- ruff clean;
- no eval/exec, subprocess, sockets, HTTP clients or downloaders in the pack's modules (an AST scan,
  so strings and comments do not count and aliased imports do);
- [tool.comfy] metadata present, project name registry-legal, requirements.txt == dependencies;
- node ids prefixed and collected in one place; a help page and a tooltip for every node input.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from helpers import REPO

PACK_SOURCES = [REPO / "__init__.py", *sorted((REPO / "restoreformer_node").rglob("*.py"))]

FORBIDDEN_MODULES = {
    "subprocess": "runs programs",
    "socket": "network access",
    "requests": "network access",
    "urllib": "network access",
    "urllib3": "network access",
    "http": "network access (http.client / http.server)",
    "aiohttp": "network access",
    "httpx": "network access",
    "ftplib": "network access",
    "pip": "installs packages at run time",
}
FORBIDDEN_CALLS = {
    "eval": "runs code from strings",
    "exec": "runs code from strings",
    "__import__": "dynamic import by string",
    "system": "os.system runs programs",
    "popen": "os.popen runs programs",
    "load_file_from_url": "downloads weights",
    "download_url_to_file": "downloads weights",
    "load_state_dict_from_url": "downloads weights",
    "hf_hub_download": "downloads weights",
    "snapshot_download": "downloads weights",
}


def forbidden_uses(source: str, filename: str = "<src>") -> list[str]:
    """Lines that use something the registry flags: 'file:line: what (why)'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        for module in modules:
            top = module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(f"{filename}:{node.lineno}: import {module} ({FORBIDDEN_MODULES[top]})")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in FORBIDDEN_CALLS:
                # eval/exec only as the builtins (torch's module.eval() is fine); system/popen
                # only as os.system / os.popen.
                if name in ("eval", "exec", "__import__") and not isinstance(func, ast.Name):
                    continue
                if name in ("system", "popen") and not (
                    isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "os"
                ):
                    continue
                found.append(f"{filename}:{node.lineno}: {name}() ({FORBIDDEN_CALLS[name]})")
    return found


@pytest.mark.parametrize(
    "snippet, flagged",
    [
        ("import subprocess as sp\n", True),
        ("from urllib.request import urlopen\n", True),
        ("import http.client\n", True),
        ("x = eval('1')\n", True),
        ("import os\nos.system('ls')\n", True),
        ("from torch.hub import download_url_to_file\ndownload_url_to_file('u', 'p')\n", True),
        ("s = 'import subprocess; eval(x)'  # exec(\n", False),
        ("model.eval()\n", False),  # torch's Module.eval, not the builtin
        ("from .faces import detect\n", False),
    ],
)
def test_scanner_flags_what_it_should(snippet, flagged):
    uses = forbidden_uses(snippet)
    assert bool(uses) == flagged, uses


def test_no_forbidden_code_in_pack():
    problems = []
    for path in PACK_SOURCES:
        problems += forbidden_uses(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "the Comfy Registry flags these:\n" + "\n".join(problems)


def test_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_tool_comfy_metadata():
    meta = _pyproject()
    comfy = meta["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon"):
        assert key in comfy, f"[tool.comfy] needs {key}"
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]
    if comfy["Icon"]:
        assert re.match(r"https://", comfy["Icon"]), "Icon must be an https URL to an image"
    name = meta["project"]["name"]
    assert re.fullmatch(r"[a-z][a-z0-9_-]{0,99}", name), f"project name {name!r} is not registry-legal"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["project"]["version"]), "version must be semver X.Y.Z"
    assert meta["project"]["urls"]["Repository"].startswith("https://")
    # The JS is served through WEB_DIRECTORY; `web` in [tool.comfy] would load it twice.
    assert "web" not in comfy


def _requirement_lines(text: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [re.sub(r"\s+", "", line) for line in lines if line]


def test_requirements_txt_equals_pyproject_dependencies():
    deps = [re.sub(r"\s+", "", d) for d in _pyproject()["project"]["dependencies"]]
    reqs = _requirement_lines((REPO / "requirements.txt").read_text())
    assert reqs == deps


# -- nodes -------------------------------------------------------------------------------------


def _pack_nodes():
    """The node mappings as ComfyUI sees them (imported with ComfyUI's modules on the path)."""
    from helpers.comfy_host import import_comfy

    import_comfy()
    from restoreformer_node import nodes

    return nodes


def _node_ids() -> list[str]:
    try:
        return sorted(_pack_nodes().NODE_CLASS_MAPPINGS)
    except RuntimeError:  # no ComfyUI test host: the node tests below report it
        return []


NODE_IDS = _node_ids()


def test_node_ids_prefixed_and_listed_in_one_place():
    nodes = _pack_nodes()
    root = ast.parse((REPO / "__init__.py").read_text())
    imported = {a.name for n in ast.walk(root) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"} <= imported
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id in nodes.NODE_CLASS_MAPPINGS:
        assert node_id.startswith(nodes.NODE_ID_PREFIX), node_id
    # No other module builds its own mappings, and every node module is in _MODULES.
    node_dir = REPO / "restoreformer_node" / "nodes"
    for path in PACK_SOURCES:
        if path in (REPO / "__init__.py", node_dir / "__init__.py"):
            continue
        tree = ast.parse(path.read_text())
        assigned = {
            t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }
        assert "NODE_CLASS_MAPPINGS" not in assigned, f"{path} defines its own NODE_CLASS_MAPPINGS"
        if "NODES" in assigned:
            assert path.parent == node_dir and path.stem in nodes._MODULES, (
                f"{path.relative_to(REPO)} defines NODES but is not listed in nodes._MODULES"
            )


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_node_has_a_help_page_that_explains_every_input(node_id):
    page = REPO / "web" / "docs" / f"{node_id}.md"
    assert page.is_file(), f"missing help page {page.relative_to(REPO)}"
    text = page.read_text()
    assert len(text.strip()) > 80, f"{page.name} is too short to help anyone"
    for name in _pack_nodes().NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]:
        # a row of an inputs table, or a bold name in an inputs list
        assert f"| {name} |" in text or f"**{name}**" in text, f"{page.name} does not explain input {name}"


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_every_input_has_a_tooltip(node_id):
    cls = _pack_nodes().NODE_CLASS_MAPPINGS[node_id]
    inputs = cls.INPUT_TYPES()
    missing = []
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not str(options.get("tooltip", "")).strip():
                missing.append(f"{section}.{name}")
    assert not missing, f"{node_id}: inputs without a tooltip: {missing}"
    for attr in ("RETURN_TYPES", "FUNCTION", "CATEGORY"):
        assert hasattr(cls, attr), f"{node_id} lacks {attr}"
    assert cls.CATEGORY.startswith("RestoreFormer")
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES))
