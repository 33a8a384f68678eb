"""Shared fixtures: real face photos from PyPI packages and small random RestoreFormer models."""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import random_model
from restoreformer_node.model import RESTOREFORMER, RestoreFormer, tiny_config


def random_restoreformer(config=None, seed: int = 0) -> RestoreFormer:
    """A randomly initialised network of the real architecture (pretrained weights cannot be had
    offline), tiny geometry by default. The codebook is spread to unit scale so nearest-entry
    search is meaningful (the benchmarks' `random_model`)."""
    return random_model(config or tiny_config(RESTOREFORMER), seed)


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


def pytest_report_header(config):
    """The CPU code paths of this run (ATen vector width, NNPACK, bf16 support): numeric checks
    exercise the paths the machine takes, so a report says which ones those were."""
    from numerics import cpu_paths

    return f"CPU paths: {cpu_paths()}"
