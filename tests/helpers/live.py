"""Fixtures for tests against a live ComfyUI: the server, a small test model in its
`facerestore_models` folder, and the test photos in its input folder.

Import the fixtures into a test module (`from live_fixtures import live_comfyui, ...`). Every
module shares the one server of `live_server.shared_server()`; it is stopped at the end of the
session by its PID (and by atexit if pytest itself is killed).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.comfy_host import REPO
from helpers.live_server import LiveComfyUI, shared_server, stop_shared_server

ARTIFACTS = REPO / "artifacts"
TEST_MODEL = "rf-test-tiny.safetensors"
TEST_UPSCALER = "compact-test-x2.safetensors"


def write_test_model(path: Path, config=None, seed: int = 0) -> Path:
    """A randomly initialised RestoreFormer of the real architecture, saved as safetensors with its
    config in the metadata (pretrained weights cannot be had offline)."""
    from helpers.models import random_restoreformer

    model = random_restoreformer(config, seed=seed)
    try:
        from restoreformer_node.weights import save_restoreformer
    except ImportError:  # before the weights module lands: the same file layout by hand
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(
            state,
            str(path),
            metadata={"config": model.config.to_json(), "variant": model.config.variant},
        )
    else:
        save_restoreformer(model, path, model.config)
    return path


def live_model_config():
    """The geometry of the model the live tests use (see `live_model`)."""
    from restoreformer_node.model import RESTOREFORMER, tiny_config

    return tiny_config(RESTOREFORMER)


def save_photo(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="session")
def live_comfyui() -> LiveComfyUI:
    server = shared_server()
    yield server
    ARTIFACTS.mkdir(exist_ok=True)
    log = server.log()
    stop_shared_server()
    (ARTIFACTS / "comfyui-server.log").write_text(log)
    shutil.rmtree(server.work, ignore_errors=True)


@pytest.fixture(scope="session")
def live_model(live_comfyui) -> str:
    """File name (as the loader node lists it) of a small random model in facerestore_models."""
    path = live_comfyui.models_dir / TEST_MODEL
    if not path.exists():
        write_test_model(path, live_model_config())
    return TEST_MODEL


@pytest.fixture(scope="session")
def live_upscaler(live_comfyui) -> str:
    """File name of a small random Real-ESRGAN Compact (2x) in the server's upscale_models folder."""
    from helpers.spandrel_models import write_compact

    path = live_comfyui.work / "upscale_models" / TEST_UPSCALER
    if not path.exists():
        write_compact(path, scale=2)
    return TEST_UPSCALER


@pytest.fixture(scope="session")
def input_photos(live_comfyui, astronaut, grace_hopper) -> dict[str, str]:
    """The test photos saved as PNG into the server's input folder: {name: file name}."""
    names = {}
    for name, array in (("astronaut", astronaut), ("grace_hopper", grace_hopper)):
        save_photo(array, live_comfyui.input_dir / f"{name}.png")
        names[name] = f"{name}.png"
    # A photo without a face: the astronaut's lower right corner (the flag and the sky).
    save_photo(np.ascontiguousarray(astronaut[320:, 300:]), live_comfyui.input_dir / "no_face.png")
    names["no_face"] = "no_face.png"
    return names
