"""Make the HQ dictionary and the cross-attention visible (plain PyTorch, no ComfyUI).

- `atlas`: every dictionary entry decoded to a patch, laid out as one image (`build_atlas`).
- `codes`: which entries a batch of faces chooses, and usage statistics (`encode_codes`,
  `code_usage`, `usage_plot`).
- `maps`: per-face code maps, the prior-distance mask and cross-attention maps.
"""

from ..options import ATLAS_ORDERS
from .atlas import (
    DEFAULT_CACHE,
    Atlas,
    TileCache,
    arrange,
    build_atlas,
    decode_entries,
    decode_prior_stream,
    parse_entries,
    similarity_order,
    tile_size,
)
from .codes import Codes, CodeUsage, code_usage, encode_codes, to_model_input, usage_order, usage_plot
from .faces import FaceBatch, crops_from_image, gather_faces, paste_mask
from .maps import (
    BLOCK_CHOICES,
    NORMALISE,
    AttentionLevel,
    AttentionMaps,
    attention_levels,
    attention_maps,
    attention_mask,
    attention_sheet,
    code_map_image,
    distance_mask,
    heat_overlay,
    query_cell,
    trace_attention,
)
from .render import code_palette, heat_colours

__all__ = [
    "ATLAS_ORDERS",
    "BLOCK_CHOICES",
    "DEFAULT_CACHE",
    "NORMALISE",
    "Atlas",
    "AttentionLevel",
    "AttentionMaps",
    "CodeUsage",
    "Codes",
    "FaceBatch",
    "TileCache",
    "arrange",
    "attention_levels",
    "attention_mask",
    "attention_maps",
    "attention_sheet",
    "build_atlas",
    "code_map_image",
    "code_palette",
    "code_usage",
    "crops_from_image",
    "decode_entries",
    "decode_prior_stream",
    "distance_mask",
    "encode_codes",
    "gather_faces",
    "heat_colours",
    "heat_overlay",
    "parse_entries",
    "paste_mask",
    "query_cell",
    "similarity_order",
    "tile_size",
    "to_model_input",
    "trace_attention",
    "usage_order",
    "usage_plot",
]
