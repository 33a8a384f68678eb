"""Fixtures of the training and evaluation tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def tiny_model_file(tmp_path):
    """A RestoreFormer at the tiny geometry, seeded and randomly initialised (pretrained weights
    cannot be had offline), written as .safetensors by the pack."""
    from restoreformer_node.model import RESTOREFORMER, RestoreFormer, tiny_config
    from restoreformer_node.weights import save_restoreformer

    torch.manual_seed(0)
    model = RestoreFormer(tiny_config(RESTOREFORMER))
    path = tmp_path / "tiny_rf.safetensors"
    save_restoreformer(model, path, model.config)
    return path
