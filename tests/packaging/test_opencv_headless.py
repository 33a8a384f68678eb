"""facexlib requires opencv-python; other packs install opencv-python-headless. Both put `cv2` in
the same folder, so with both installed, removing one leaves the other without its files. The pack
itself imports no cv2 (only facexlib's RetinaFace does, when chosen), tells how to fix a broken
cv2, and works the same with either wheel.

In a fresh virtual environment (torch from the local wheels, the rest from PyPI or pip's cache):
opencv-python-headless as another pack installs it, then requirements.txt (which brings
opencv-python: the clash), then `pip uninstall opencv-python` as a user removing "the duplicate"
does. MTCNN detection and a restore still run, and RetinaFace fails with the message naming the
fix. The README's fix is run as written; then detection (MTCNN and RetinaFace) and the restore
give exactly what they give in the test process with opencv-python. Slow: installing torch alone
takes minutes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import REPO
from helpers.detection import write_retinaface_weights
from helpers.live import live_model_config, save_photo, write_test_model

from restoreformer_node.faces.detectors.retinaface import OPENCV_FIX

pytestmark = pytest.mark.slow

CHECK = REPO / "tests" / "helpers" / "opencv_check.py"
HEADLESS, FULL = "opencv-python-headless", "opencv-python"


def readme_fix() -> list[str]:
    """The commands of the README's OpenCV fix (the fenced block of its OpenCV section)."""
    section = re.search(r"^### OpenCV.*?```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S | re.M)
    assert section, "README.md has no '### OpenCV' section with a bash block"
    return [line.strip() for line in section[1].splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_gives_the_fix_the_error_names():
    assert readme_fix() == list(OPENCV_FIX)


class Venv:
    def __init__(self, path: Path):
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
        self.python = str(path / "bin" / "python")
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", HF_HUB_OFFLINE="1")

    def run(self, *args: str, timeout: float = 1800) -> str:
        done = subprocess.run([self.python, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        return done.stdout

    def pip(self, *args: str) -> str:
        return self.run("-m", "pip", *args)

    def installed(self) -> set[str]:
        return {p["name"].lower() for p in json.loads(self.pip("list", "--format", "json"))}

    def check(self, *files: Path) -> dict:
        return json.loads(self.run(str(CHECK), *map(str, files), timeout=900).splitlines()[-1])


def run_check_here(*files: Path) -> dict:
    """The same check with the test's own environment (opencv-python)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(CHECK), *map(str, files)], env=env, capture_output=True, text=True,
                          timeout=900, check=True)  # fmt: skip
    return json.loads(done.stdout.splitlines()[-1])


def test_pack_works_with_opencv_python_headless(tmp_path, astronaut):
    files = (
        save_photo(astronaut, tmp_path / "astronaut.png"),
        write_test_model(tmp_path / "tiny.safetensors", live_model_config()),
        write_retinaface_weights(tmp_path / "facedetection", "retinaface_mobilenet0.25", heads="priors"),
    )
    venv = Venv(tmp_path / "venv")
    venv.env["PYTHONPATH"] = str(REPO)  # the pack from this checkout; its requirements from pip
    # The test's own torch (pip takes these from the local wheels), so the results can be compared.
    venv.pip("install", *(f"{m.__name__}=={m.__version__.split('+')[0]}" for m in (torch, torchvision)))
    venv.pip("install", HEADLESS)  # as another pack's requirements install it
    venv.pip("install", "-r", str(REPO / "requirements.txt"))
    assert {HEADLESS, FULL} <= venv.installed(), "facexlib no longer brings opencv-python: update the README"

    venv.pip("uninstall", "-y", FULL)  # "the duplicate": its files were cv2 for both
    broken = venv.check(*files)
    assert broken["opencv"]["error"] and broken["opencv"]["owners"] == [HEADLESS], broken["opencv"]
    assert not broken["facexlib_loaded_at_import"]
    assert broken["report"][0].startswith("restored 1 face"), broken["report"]  # MTCNN needs no cv2
    assert all(command in broken["retinaface_error"] for command in OPENCV_FIX), broken["retinaface_error"]

    for command in readme_fix():  # as the README says, with this environment's Python
        assert command.startswith("python -m pip ")
        venv.run(*command.split()[1:])
    fixed = venv.check(*files)
    assert venv.installed() & {HEADLESS, FULL} == {HEADLESS}
    assert fixed["opencv"]["error"] is None and fixed["opencv"]["owners"] == [HEADLESS], fixed["opencv"]
    assert "retinaface_error" not in fixed and fixed["retinaface_faces"] > 0

    here = run_check_here(*files)
    assert here["opencv"]["owners"] == [FULL] and here["opencv"]["error"] is None, (
        "the tests' environment should have facexlib's opencv-python", here["opencv"])
    # Same torch, one thread, same inputs: the same numbers bit for bit, whichever OpenCV.
    for key in ("mtcnn_boxes", "restored_sha256", "changed_pixels", "report", "retinaface_faces", "retinaface_sha256"):
        assert fixed[key] == here[key], key
    assert here["changed_pixels"] > 0 and len(here["mtcnn_boxes"]) == 1
