"""The shipped example workflows as files, without a server: what a person who opens one (from
the template browser or shared as a file) is told by it. Each declares the model files its loaders
pick (ComfyUI's `models`: name, official URL, folder) and which pack each node comes from
(`cnr_id`/`ver`); each has a readable title (its file name) and a small JPEG thumbnail beside it,
previews large enough to read, and the inspection graph shows every picture and text it makes.
The browser test checks the same files through the frontend (missing-models dialog, Nodes 2.0)."""

from __future__ import annotations

import re

import pytest
import tomllib
from helpers import REPO
from helpers.workflow_format import WORKFLOW_DIR, shipped_workflows
from PIL import Image

from tools.make_workflows import (
    ATLAS,
    ATTENTION,
    CODE_MAP,
    CORE_PACK,
    INSPECT,
    LOADERS,
    MODEL_FILES,
    RF_RELEASE,
    SD15,
    TXT2IMG,
    USAGE,
    WORKFLOWS,
)

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
WORKFLOWS_ON_DISK = shipped_workflows()
SEMVER = re.compile(r"\d+\.\d+\.\d+")
IMAGE_VIEWS = ("PreviewImage", "SaveImage")


def test_titles_are_readable_and_match_the_generator():
    assert set(WORKFLOWS_ON_DISK) == set(WORKFLOWS), "run tools/make_workflows.py"
    for title in WORKFLOWS_ON_DISK:
        assert re.fullmatch(r"[A-Z][a-z]+( [A-Za-z0-9,+-]+)+", title) and "_" not in title, title


@pytest.mark.parametrize("title", sorted(WORKFLOWS_ON_DISK))
def test_thumbnail_beside_each_workflow(title):
    path = (WORKFLOW_DIR / title).with_suffix(".jpg")  # the name the template browser asks for
    assert path.is_file(), f"no thumbnail {path.name}"
    assert path.stat().st_size < 200_000
    with Image.open(path) as image:
        assert image.format == "JPEG" and 400 <= image.width <= 1024 and image.height >= 150, image.size
        image.load()


@pytest.mark.parametrize("title", sorted(WORKFLOWS_ON_DISK))
def test_every_node_names_its_pack(title):
    for node in WORKFLOWS_ON_DISK[title]["nodes"]:
        properties = node.get("properties", {})
        if node["type"] in ("Note", "MarkdownNote"):  # frontend-only: no pack
            assert "cnr_id" not in properties
        elif node["type"].startswith("RestoreFormer"):
            assert (properties.get("cnr_id"), properties.get("ver")) == (PROJECT["name"], PROJECT["version"]), (
                f"{title}: node {node['id']} names {properties.get('cnr_id')} {properties.get('ver')}; "
                "run tools/make_workflows.py after a version bump"
            )
        else:
            assert properties.get("cnr_id") == CORE_PACK and SEMVER.fullmatch(properties.get("ver", "")), node


@pytest.mark.parametrize("title", sorted(WORKFLOWS_ON_DISK))
def test_every_loader_declares_the_file_it_picks(title):
    """The frontend counts a node's model as missing only when a widget holds its name: exactly
    one declared file per loader must be the picked one, in the folder that loader reads."""
    official = {m.name: m for m in MODEL_FILES}
    loaders = [n for n in WORKFLOWS_ON_DISK[title]["nodes"] if n["type"] in LOADERS]
    for node in loaders:
        declared = node["properties"].get("models", [])
        picked = [m for m in declared if m["name"] in node["widgets_values"]]
        assert len(picked) == 1, f"{title}: node {node['id']} declares {declared}"
        assert picked[0]["directory"] == LOADERS[node["type"]][1]
        for model in declared:
            assert model == official[model["name"]].entry(), model
            assert model["url"].startswith("https://")
    if title != "Edit faces between Align and Paste":
        assert loaders, f"{title} has no loader"


def test_model_urls_are_the_official_releases():
    for model in MODEL_FILES:
        if model.directory == "facerestore_models":
            assert model.url == RF_RELEASE + model.name
            assert RF_RELEASE.startswith("https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases/download/")
    # A checkpoint the frontend offers to download (Hugging Face, .safetensors): Stable Diffusion 1.5.
    assert SD15.url.startswith("https://huggingface.co/") and SD15.url.endswith("/" + SD15.name)
    assert SD15.name.endswith(".safetensors") and SD15.directory == "checkpoints"
    (checkpoint,) = [n for n in WORKFLOWS_ON_DISK[TXT2IMG]["nodes"] if n["type"] == "CheckpointLoaderSimple"]
    assert checkpoint["widgets_values"] == [SD15.name]


@pytest.mark.parametrize("title", sorted(WORKFLOWS_ON_DISK))
def test_previews_are_large_enough_to_read(title):
    for node in WORKFLOWS_ON_DISK[title]["nodes"]:
        if node["type"] in (*IMAGE_VIEWS, "PreviewAny"):
            width, height = node["size"]
            assert width >= 300 and height >= (300 if node["type"] in IMAGE_VIEWS else 150), (node["id"], node["size"])
            assert not node.get("flags", {}).get("collapsed"), node["id"]


def test_inspection_graph_shows_every_picture_and_text_it_makes():
    inspected = [n for n in WORKFLOWS_ON_DISK[INSPECT]["nodes"] if n["type"] in (ATLAS, USAGE, CODE_MAP, ATTENTION)]
    assert len(inspected) == 4
    for node in inspected:
        for output in node["outputs"]:
            if output["type"] in ("IMAGE", "STRING"):
                assert output.get("links"), f"{node['type']}.{output['name']} is not shown"
