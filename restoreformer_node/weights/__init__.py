"""Weight files: read any published layout safely, detect the variant, load strictly, save.

Public API (used by the loader node, the command line, inspection and training):
`load_restoreformer`, `save_restoreformer`, `read_checked`, `read_state_dict`, `load_weight_file`,
`detect_config`, `WeightLoadError`.
"""

from .detect import detect_config, expected_shapes, state_dict_problems
from .errors import WeightLoadError
from .model_io import (
    FORMAT_VERSION,
    CheckedWeights,
    WeightsInfo,
    load_restoreformer,
    read_checked,
    save_restoreformer,
)
from .read import (
    LAYOUT_BARE,
    LAYOUT_LIGHTNING,
    LAYOUT_OURS,
    LAYOUT_PARAMS,
    LAYOUT_PARAMS_EMA,
    LAYOUT_SAFETENSORS,
    load_weight_file,
    read_state_dict,
)

__all__ = [
    "FORMAT_VERSION",
    "CheckedWeights",
    "LAYOUT_BARE",
    "LAYOUT_LIGHTNING",
    "LAYOUT_OURS",
    "LAYOUT_PARAMS",
    "LAYOUT_PARAMS_EMA",
    "LAYOUT_SAFETENSORS",
    "WeightLoadError",
    "WeightsInfo",
    "detect_config",
    "expected_shapes",
    "load_restoreformer",
    "load_weight_file",
    "read_checked",
    "read_state_dict",
    "save_restoreformer",
    "state_dict_problems",
]
