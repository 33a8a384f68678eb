"""Shared fixtures: real face photos from PyPI packages and small random RestoreFormer models."""

from __future__ import annotations

import numpy as np
import pytest

from restoreformer_node.model import RESTOREFORMER, RestoreFormer, tiny_config
from restoreformer_node.testing import random_model


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
