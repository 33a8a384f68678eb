"""The RestoreFormer network in plain PyTorch (importable without ComfyUI)."""

from .config import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, VARIANTS, RestoreFormerConfig, tiny_config
from .network import RestoreFormer, Trace

__all__ = [
    "RESTOREFORMER",
    "RESTOREFORMER_PLUSPLUS",
    "VARIANTS",
    "RestoreFormer",
    "RestoreFormerConfig",
    "Trace",
    "tiny_config",
]
