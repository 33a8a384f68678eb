"""What the Comfy Registry reads from pyproject.toml, read here by ComfyUI's own copy of the
registry's parser (comfy_config, the same rules as comfy-cli): the license and its full text, the
icon, the OS and accelerator classifiers, the models the pack uses, and the publish workflow."""

from __future__ import annotations

import re

import pytest
import tomllib
import yaml
from helpers import REPO
from helpers.comfy_host import import_comfy
from PIL import Image

from restoreformer_node.faces.detectors.retinaface import NETWORKS, RELEASE_DOWNLOAD
from tools.make_workflows import RF_WEIGHTS

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def registry_config():
    """pyproject.toml as ComfyUI's registry parser reads it."""
    import_comfy()
    from comfy_config import config_parser

    return config_parser.extract_node_configuration(str(REPO))


def test_license_file_is_the_license_pyproject_names(registry_config):
    assert registry_config.project.license.text == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:3] == ["Apache", "License", "Version"] and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text
    # All nine sections of the license, in order.
    numbers = [int(m) for m in re.findall(r"^\s+(\d)\. [A-Z]", text.split("END OF TERMS")[0], re.M)]
    assert numbers == list(range(1, 10))


def test_classifiers_are_ones_the_registry_accepts(registry_config):
    # One invalid entry would drop the whole family (the parser then returns an empty list).
    assert registry_config.project.supported_os == ["OS Independent"]
    assert registry_config.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]


def test_icon_is_the_repository_copy_of_a_square_image(registry_config):
    repository = PYPROJECT["project"]["urls"]["Repository"]
    owner_repo = repository.removeprefix("https://github.com/").strip("/")
    match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(owner_repo)}/main/(.+)", registry_config.tool_comfy.icon)
    assert match, f"Icon {registry_config.tool_comfy.icon!r} is not a raw file of {repository}"
    path = REPO / match[1]
    assert path.is_file(), f"the icon {match[1]} is not in the repository"
    with Image.open(path) as icon:
        assert icon.format == "PNG" and icon.width == icon.height and 128 <= icon.width <= 400, icon.size
    assert path.stat().st_size < 200_000


def test_models_are_the_official_releases_in_the_pack_folders(registry_config):
    import_comfy()
    from restoreformer_node.nodes.detect_nodes import DETECTOR_FOLDER
    from restoreformer_node.nodes.model_nodes import MODEL_FOLDER

    declared = {m.location: m.model_url for m in registry_config.tool_comfy.models}
    expected = {f"/{MODEL_FOLDER}/{m.name}": m.url for m in RF_WEIGHTS}
    expected |= {f"/{DETECTOR_FOLDER}/{name}": RELEASE_DOWNLOAD + name for _net, name, _size in NETWORKS.values()}
    assert declared == expected


def test_registry_id_version_and_publisher(registry_config):
    project = registry_config.project
    assert project.name == PYPROJECT["project"]["name"]
    assert re.fullmatch(r"[a-z][a-z0-9_.-]{0,99}", project.name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", project.version)
    assert registry_config.tool_comfy.publisher_id and registry_config.tool_comfy.display_name
    assert project.supported_comfyui_version == PYPROJECT["tool"]["comfy"]["requires-comfyui"]


def test_publish_workflow_runs_the_registry_action():
    flow = yaml.safe_load((REPO / ".github" / "workflows" / "publish.yml").read_text())
    triggers = flow[True] if True in flow else flow["on"]  # YAML 1.1 reads the key `on` as True
    assert "workflow_dispatch" in triggers
    assert triggers["push"]["paths"] == ["pyproject.toml"] and triggers["push"]["branches"] == ["main"]
    (job,) = flow["jobs"].values()
    owner = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/").split("/")[0]
    assert job["if"].replace(" ", "") == f"${{{{github.repository_owner=='{owner}'}}}}"  # forks do not publish
    action = next(step for step in job["steps"] if "publish-node-action" in step.get("uses", ""))
    assert action["uses"].startswith("Comfy-Org/publish-node-action@")
    assert action["with"]["personal_access_token"] == "${{ secrets.REGISTRY_ACCESS_TOKEN }}"
