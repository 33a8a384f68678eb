"""Fixtures shared by every test: real face photos from PyPI packages, and a one-thread scope.

Helpers (small models, weight-file writers, the ComfyUI host, the browser) are in tests/helpers/.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
import pytest
import torch

# The fast blocks pick CPU kernels by timing them on first use and keep the choice in the user's
# cache folder ("auto"). Tests run the fixed rule instead, so results do not depend on the
# machine's load and nothing is written outside the test's folders; tests/runtime/test_conv_routes.py
# checks the timed choice with its own tables.
os.environ["RESTOREFORMER_CONV_ROUTES"] = "fixed"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """512x512 RGB uint8, one face (scikit-image, public domain)."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    """600x512 RGB uint8, one face (matplotlib sample data, public domain)."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A randomly initialised RestoreFormer at the tiny test geometry, saved as .safetensors by
    the pack (pretrained weights cannot be had offline)."""
    from helpers.models import random_restoreformer

    from restoreformer_node.weights import save_restoreformer

    net = random_restoreformer()
    path = tmp_path_factory.mktemp("models") / "tiny_rf.safetensors"
    save_restoreformer(net, path, net.config)
    return path


@pytest.fixture(scope="session")
def mtcnn():
    """The default face detector (MTCNN: its weights ship in the facenet-pytorch wheel)."""
    from restoreformer_node.faces.detection import load_detector

    return load_detector("mtcnn")


@contextmanager
def _intra_op_threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Small networks run as fast on one intra-op thread and do not oversubscribe shared CI cores.
# The thread count also sets the summation order, so a module that compares outputs bit for bit
# with module-scoped references uses the module-wide form.


@pytest.fixture
def one_thread():
    """One intra-op thread for this test."""
    with _intra_op_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_per_module():
    """One intra-op thread for every test and fixture of the module that asks for it first."""
    with _intra_op_threads(1):
        yield


def pytest_report_header(config):
    """The CPU code paths of this run (ATen vector width, NNPACK, bf16 support): numeric checks
    exercise the paths the machine takes, so a report says which ones those were."""
    from helpers.numerics import cpu_paths

    return f"CPU paths: {cpu_paths()}"
