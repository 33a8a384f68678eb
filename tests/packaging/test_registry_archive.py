"""The archive the Comfy Registry gets, rebuilt the way comfy-cli's `comfy node pack` / `publish`
build it (comfy_cli/file_utils.py zip_files): the files git tracks, minus those matching
.comfyignore (gitignore patterns through pathspec's "gitwildmatch", as comfy-cli compiles them),
plus the [tool.comfy] includes. Where git is absent comfy-cli walks the whole folder with the same
patterns; that path is checked on a folder with the usual untracked things in it. Then the archive
is unpacked and loaded by ComfyUI's own custom-node loader.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pathspec
import pytest
import tomllib
from helpers import REPO
from helpers.comfy_host import comfyui_dir

# Never in the archive: development files, registry presentation, training data, weights, caches.
KEPT_OUT = ("tests/", "bench/", "tools/", ".ci/", ".github/", "assets/", "artifacts/", "runs/", "datasets/",
            ".cache/", ".venv/")  # fmt: skip
WEIGHT_SUFFIXES = (".ckpt", ".pth", ".pt", ".safetensors")


def ignore_spec(root: Path = REPO) -> pathspec.PathSpec:
    lines = (root / ".comfyignore").read_text(encoding="utf-8").splitlines()
    patterns = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    with warnings.catch_warnings():  # comfy-cli's "gitwildmatch", which pathspec 1.x calls deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        return pathspec.PathSpec.from_lines("gitwildmatch", patterns)


def includes(root: Path = REPO) -> list[str]:
    return tomllib.loads((root / "pyproject.toml").read_text())["tool"]["comfy"].get("includes", [])


def tracked_files(root: Path = REPO) -> list[str]:
    out = subprocess.run(["git", "-C", str(root), "ls-files"], check=True, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.strip()]


def _walk(root: Path, top: Path, keep) -> list[str]:
    """comfy-cli's os.walk: directories whose path matches are skipped, then files that match.
    (A directory is also skipped when its path with a slash matches: comfy-cli would descend and
    drop every file inside, the same list, only slower.)"""
    found = []
    for folder, dirs, files in os.walk(top):
        rel_dir = Path(folder).relative_to(root).as_posix()
        if ".git" in dirs:
            dirs.remove(".git")
        dirs[:] = [d for d in dirs if keep(f"{rel_dir}/{d}".removeprefix("./")) and keep(f"{rel_dir}/{d}/".removeprefix("./"))]
        found += [f"{rel_dir}/{f}".removeprefix("./") for f in files if keep(f"{rel_dir}/{f}".removeprefix("./"))]
    return found


def archive_files(root: Path = REPO, git: bool = True) -> set[str]:
    """The archive's file list: git's tracked files (or, with git=False, comfy-cli's fallback walk
    of the whole folder) minus .comfyignore, plus the includes."""
    spec, prefixes = ignore_spec(root), [p.strip("/") for p in includes(root)]

    def keep(rel: str) -> bool:
        forced = any(rel == p or rel.startswith(p + "/") for p in prefixes if p)
        return forced or not spec.match_file(rel)

    if git:
        files = {f for f in tracked_files(root) if f != "node.zip" and keep(f) and (root / f).exists()}
    else:
        files = set(_walk(root, root, keep))
    for include in prefixes:
        path = root / include
        if path.is_file() and keep(include):
            files.add(include)
        elif path.is_dir():
            files.update(_walk(root, path, keep))
    return files


def test_archive_holds_the_pack_and_nothing_else():
    files = archive_files()
    tracked = set(tracked_files())
    # Everything ComfyUI runs or serves: the entry point, the library, the web folder (JS, help
    # pages), the example workflows with their thumbnails, the key tables, the metadata.
    needed = {"__init__.py", "pyproject.toml", "requirements.txt", "LICENSE", "README.md", ".comfyignore"}
    needed |= {f for f in tracked if f.startswith(("restoreformer_node/", "web/", "example_workflows/"))}
    assert needed - files == set(), f"missing from the archive: {sorted(needed - files)}"
    assert any(f.endswith(".jpg") for f in files if f.startswith("example_workflows/"))
    assert {f for f in files if f.startswith("restoreformer_node/keys/")} == {
        f for f in tracked if f.startswith("restoreformer_node/keys/")
    }
    kept_out = sorted(f for f in files if f.startswith(KEPT_OUT) or f.endswith(WEIGHT_SUFFIXES) or "__pycache__/" in f)
    assert not kept_out, f"in the archive but should not be: {kept_out}"
    # .comfyignore really removed something that is tracked (a control for the rule above).
    assert {"tests/conftest.py", "tools/make_workflows.py", "bench/README.md", ".ci/run"} <= tracked - files


def test_fallback_walk_without_git_keeps_caches_runs_and_weights_out(tmp_path):
    """Where git is missing comfy-cli packs every file of the folder that .comfyignore lets
    through: a checkout with a venv, the test host, training runs, a data set, weights and test
    artifacts in it still gives only the pack."""
    root = tmp_path / "pack"
    pack = ["__init__.py", "pyproject.toml", "LICENSE", "restoreformer_node/nodes/__init__.py",
            "restoreformer_node/keys/restoreformer_keys.tsv", "web/js/restoreformer_notices.js",
            "example_workflows/Restore faces in a photo.json", "example_workflows/Restore faces in a photo.jpg",
            "training/stage1.py", "training/configs/stage1_paper.yaml"]  # fmt: skip
    clutter = [".venv/lib/python3.11/site-packages/torch/__init__.py", ".cache/comfyui/main.py",
               "runs/stage1_paper/checkpoints/step_00001000.pt", "datasets/ffhq512/00000.png",
               "artifacts/browser/shot.png", "RestoreFormer.ckpt", "models/facerestore_models/RestoreFormer++.ckpt",
               "restoreformer_node/__pycache__/lru.cpython-311.pyc", "tests/conftest.py", "bench/README.md",
               ".pytest_cache/v/cache/nodeids", "comfyui_restoreformer.egg-info/PKG-INFO", "node.zip",
               "assets/icon.png", "tools/make_workflows.py", "weights/detection_Resnet50_Final.pth"]  # fmt: skip
    for rel in pack + clutter:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    shutil.copy(REPO / ".comfyignore", root / ".comfyignore")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    assert archive_files(root, git=False) == set(pack) | {".comfyignore"}


def test_the_archive_loads_in_comfyui(tmp_path):
    """Unpacked into custom_nodes/, the archive alone loads through ComfyUI's own loader
    (nodes.load_custom_node, as at start-up): every node registered, the web folder served, and
    the pyproject read by ComfyUI's copy of the registry's parser."""
    target = tmp_path / "custom_nodes" / "comfyui-restoreformer"
    for rel in archive_files():
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target / rel)
    script = textwrap.dedent(
        f"""
        import asyncio, importlib, json, sys
        sys.path.insert(0, {str(comfyui_dir())!r})
        import comfy.cli_args
        comfy.cli_args.args.cpu = True
        importlib.import_module("utils.extra_config")
        nodes = importlib.import_module("nodes")
        before = set(nodes.NODE_CLASS_MAPPINGS)
        ok = asyncio.run(nodes.load_custom_node({str(target)!r}))
        from comfy_config import config_parser
        config = config_parser.extract_node_configuration({str(target)!r})
        print(json.dumps({{
            "ok": ok,
            "nodes": sorted(set(nodes.NODE_CLASS_MAPPINGS) - before),
            "web": {{k: v for k, v in nodes.EXTENSION_WEB_DIRS.items()}},
            "name": config.project.name,
            "models": [m.location for m in config.tool_comfy.models],
        }}))
        """
    )
    env = dict(os.environ, PYTHONPATH="", HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ok"], run.stderr[-4000:]
    from helpers.comfy_host import import_comfy

    import_comfy()
    from restoreformer_node.nodes import NODE_CLASS_MAPPINGS

    assert result["nodes"] == sorted(NODE_CLASS_MAPPINGS)
    web = [Path(p) for p in result["web"].values() if Path(p).resolve().is_relative_to(target.resolve())]
    assert web and sorted(p.name for p in (web[0] / "js").glob("*.js")) == sorted(
        p.name for p in (REPO / "web" / "js").glob("*.js")
    )
    assert result["name"] == "comfyui-restoreformer" and len(result["models"]) >= 2


@pytest.mark.parametrize("pattern", [line for line in ignore_spec().patterns if line.include])
def test_no_comfyignore_pattern_drops_what_comfyui_needs(pattern):
    needed = [f for f in tracked_files() if f.startswith(("restoreformer_node/", "web/", "example_workflows/"))]
    needed += ["__init__.py", "pyproject.toml", "requirements.txt", "LICENSE"]
    hit = [f for f in needed if pathspec.PathSpec([pattern]).match_file(f)]
    assert not hit, f"{pattern.pattern!r} would drop {hit[:5]}"
