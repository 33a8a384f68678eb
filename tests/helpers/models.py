"""Small networks of the real architecture for tests (pretrained weights cannot be had offline)."""

from __future__ import annotations

from restoreformer_node.model import RESTOREFORMER, RestoreFormer, tiny_config
from restoreformer_node.testing import random_model


def random_restoreformer(config=None, seed: int = 0) -> RestoreFormer:
    """A randomly initialised network of the real architecture, tiny geometry by default, the
    codebook spread to unit scale so the nearest-entry search is meaningful."""
    return random_model(config or tiny_config(RESTOREFORMER), seed)
