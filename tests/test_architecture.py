"""The layering ARCHITECTURE.md describes, checked by parsing every import (nothing is executed).

- Inside restoreformer_node, each package imports only the layers below it (LAYERS).
- ComfyUI's modules are imported only by restoreformer_node/nodes/ and the pack's root __init__.py.
- training/ never imports ComfyUI, the nodes or the command line.
- No module imports another module's private (_underscore) names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = "restoreformer_node"

# What each part of restoreformer_node may import from restoreformer_node (besides itself).
LEAVES = {"options", "lru"}  # import nothing of the package; everyone may use them
LAYERS = {
    "options": set(),
    "lru": set(),
    "model": set(),
    "weights": {"model"},
    "runtime": {"model", "weights"},
    "faces": {"model", "weights", "runtime"},
    "inspection": {"model", "weights", "runtime", "faces"},
    "testing": {"model"},
    "cli": {"model", "weights", "runtime", "faces", "inspection"},
    "nodes": {"model", "weights", "runtime", "faces", "inspection"},
    "__init__": set(),
    "__main__": {"cli"},
}
COMFY_MODULES = {"comfy", "comfy_extras", "comfy_execution", "folder_paths", "server", "nodes", "execution",
                 "comfy_api", "app"}


def imports_of(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, absolute module, imported names) for every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    if path.name == "__init__.py":
        package = ".".join(path.relative_to(REPO).parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1] if node.level > 1 else base
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module, [alias.name for alias in node.names]))
    return found


def part_of(module: str) -> str | None:
    """restoreformer_node.<part>... -> part (None outside the package)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def layer_violations() -> list[str]:
    problems = []
    for path in sources(PACKAGE):
        own = part_of(".".join(path.relative_to(REPO).with_suffix("").parts))
        allowed = LAYERS[own] | LEAVES | {own}
        for line, module, names in imports_of(path):
            # `from restoreformer_node import inspection` imports the part itself
            targets = names if module == PACKAGE else [part_of(module)]
            for target in targets:
                if target is not None and target not in allowed:
                    problems.append(f"{path.relative_to(REPO)}:{line}: {own} imports {module} ({target})")
    return problems


def test_every_layer_imports_only_the_layers_below_it():
    assert set(LAYERS) >= {p.stem if p.is_file() else p.name for p in (REPO / PACKAGE).iterdir()
                           if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    problems = layer_violations()
    assert not problems, "imports against ARCHITECTURE.md's layering:\n" + "\n".join(problems)


def test_only_the_nodes_import_comfyui():
    problems = []
    for path in [*sources(PACKAGE), *sources("training")]:
        in_nodes = path.is_relative_to(REPO / PACKAGE / "nodes")
        for line, module, _ in imports_of(path):
            if module.split(".")[0] in COMFY_MODULES and not in_nodes:
                problems.append(f"{path.relative_to(REPO)}:{line}: imports {module}")
    assert not problems, "ComfyUI imported outside restoreformer_node/nodes:\n" + "\n".join(problems)


def test_training_uses_the_library_not_the_nodes_or_the_command_line():
    problems = [
        f"{path.relative_to(REPO)}:{line}: imports {module}"
        for path in sources("training")
        for line, module, _ in imports_of(path)
        if part_of(module) in ("nodes", "cli")
    ]
    assert not problems, "\n".join(problems)


def test_no_private_names_are_imported_across_modules():
    problems = [
        f"{path.relative_to(REPO)}:{line}: from {module} import {name}"
        for path in [*sources(PACKAGE), *sources("training")]
        for line, module, names in imports_of(path)
        if module.split(".")[0] in (PACKAGE, "training")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "source, importer, bad",
    [
        ("from ..faces import pipeline\n", "model/network.py", True),
        ("from ..nodes.common import CATEGORY\n", "faces/pipeline.py", True),
        ("from ..model import RestoreFormer\n", "runtime/fast.py", False),
        ("from ..options import PRECISIONS\n", "model/config.py", False),
        ("import restoreformer_node.cli\n", "inspection/atlas.py", True),
        ("from .. import nodes\n", "cli/restore.py", True),
    ],
)
def test_the_check_catches_a_wrong_import(tmp_path, monkeypatch, source, importer, bad):
    """The checker itself: a planted import of the wrong direction is reported, a right one is not."""
    fake = tmp_path / "repo"
    for path in sources(PACKAGE):
        target = fake / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    planted = fake / PACKAGE / importer
    planted.write_text(planted.read_text() + "\n" + source)
    monkeypatch.setattr(f"{__name__}.REPO", fake)
    found = [p for p in layer_violations() if p.startswith(f"{PACKAGE}/{importer}")]
    assert bool(found) == bad, found
