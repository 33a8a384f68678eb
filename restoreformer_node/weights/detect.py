"""Which RestoreFormer a state dict holds, and whether it fits a given configuration.

Geometry is read from tensor shapes so small test models and ablations round-trip too. The head
count changes no shape, so it comes from our metadata or from the variant: decoder attention at
the second-lowest level (32x32 at full size) means RestoreFormer++ (4 heads), otherwise
RestoreFormer (8 heads).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import torch

from ..model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, RestoreFormer, RestoreFormerConfig
from .errors import WeightLoadError, list_names
from .read import FORMAT_NAME

# Present in every RestoreFormer state dict, whatever its geometry.
REQUIRED_KEYS = (
    "encoder.conv_in.weight",
    "encoder.down.0.block.0.conv2.weight",
    "encoder.conv_out.weight",
    "quant_conv.weight",
    "quantize.embedding.weight",
    "post_quant_conv.weight",
    "decoder.conv_in.weight",
    "decoder.conv_out.weight",
)

# The only dtypes a RestoreFormer's tensors have (the loader casts them to the dtype asked for).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The size of the lowest latent grid in every published and test geometry; it fixes `resolution`,
# which shapes cannot tell (convolutions do not depend on it) but attention placement needs.
_LATENT_SIZE = 16


def _indices(state_dict: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state_dict if (m := rx.match(k))})


def _not_restoreformer(source: str, layout: str | None, state_dict: Mapping, missing) -> WeightLoadError:
    return WeightLoadError(
        source,
        f"this is not a RestoreFormer network: it lacks {list_names(missing)}. Its keys start with "
        f"{list_names(list(state_dict)[:6], 6)} ({len(state_dict)} tensors), so it belongs to another "
        "architecture (an upscaler such as ESRGAN, or another face restorer).",
        "pick a RestoreFormer or RestoreFormer++ weight file (see the README); upscaler weights go "
        "in ComfyUI's models/upscale_models and are used with ComfyUI's upscale nodes.",
        layout,
    )


def detect_config(
    state_dict: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    *,
    source: str = "<state dict>",
    layout: str | None = None,
) -> RestoreFormerConfig:
    """The configuration that built `state_dict` (published key names, no prefixes).

    Our safetensors metadata wins when present. Otherwise: ch, ch_mult, encoder/decoder blocks per
    level, z_channels, embed_dim, n_embed and the attention levels come from shapes and key names;
    heads from the variant. `source` / `layout` only label errors (WeightLoadError).
    """
    metadata = metadata or {}
    if metadata.get("format") == FORMAT_NAME and "config" in metadata:
        try:
            return RestoreFormerConfig.from_json(metadata["config"])
        except (ValueError, TypeError, RecursionError) as error:
            raise WeightLoadError(
                source,
                f"the configuration stored in the file's metadata is invalid ({error}).",
                "if the file was written by a newer version of this pack, update the pack; otherwise "
                "convert the original weight file again with `python -m restoreformer_node convert`.",
                layout,
            ) from None

    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise _not_restoreformer(source, layout, state_dict, missing)

    try:
        conv_in = state_dict["encoder.conv_in.weight"]
        ch, in_channels = conv_in.shape[0], conv_in.shape[1]
        levels = _indices(state_dict, r"encoder\.down\.(\d+)\.")
        ch_mult = []
        for level in levels:
            width = state_dict[f"encoder.down.{level}.block.0.conv2.weight"].shape[0]
            if width % ch:
                raise ValueError(f"level {level} width {width} is not a multiple of ch={ch}")
            ch_mult.append(width // ch)
        if levels != list(range(len(levels))):
            raise ValueError(f"encoder levels {levels} are not numbered 0..{len(levels) - 1}")
        n_embed, embed_dim = state_dict["quantize.embedding.weight"].shape
        z_channels = state_dict["encoder.conv_out.weight"].shape[0]
        if state_dict["quant_conv.weight"].shape[1] != z_channels:
            raise ValueError("encoder output and quant_conv input differ (double_z is not supported)")
        last = len(levels) - 1
        resolution = _LATENT_SIZE * 2**last
        enc_attn = _indices(state_dict, r"encoder\.down\.(\d+)\.attn\.")
        dec_attn = _indices(state_dict, r"decoder\.up\.(\d+)\.attn\.")
        base = RESTOREFORMER_PLUSPLUS if (last - 1) in dec_attn else RESTOREFORMER
        config = base.with_(
            in_channels=in_channels,
            out_channels=state_dict["decoder.conv_out.weight"].shape[0],
            ch=ch,
            ch_mult=tuple(ch_mult),
            encoder_blocks=len(_indices(state_dict, r"encoder\.down\.0\.block\.(\d+)\.")),
            decoder_blocks=len(_indices(state_dict, r"decoder\.up\.0\.block\.(\d+)\.")),
            z_channels=z_channels,
            embed_dim=embed_dim,
            n_embed=n_embed,
            resolution=resolution,
            encoder_attn_resolutions=tuple(sorted(resolution >> lv for lv in enc_attn)),
            decoder_attn_resolutions=tuple(sorted(resolution >> lv for lv in dec_attn)),
        )
    except (ValueError, KeyError, IndexError, ZeroDivisionError) as error:
        reason = f"missing key {error}" if isinstance(error, KeyError) else str(error)
        raise WeightLoadError(
            source,
            f"the RestoreFormer geometry cannot be read from this state dict ({reason}).",
            "the file is incomplete or from a modified network; use an original weight file (see the README).",
            layout,
        ) from None
    return config


@functools.lru_cache(maxsize=16)
def expected_shapes(config: RestoreFormerConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict `RestoreFormer(config)` has, in module order (no memory used)."""
    with torch.device("meta"):
        model = RestoreFormer(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _layout_problem(tensor: torch.Tensor) -> str | None:
    """Why a tensor cannot be a RestoreFormer weight: not a dense floating-point tensor, or a view
    whose storage does not hold each of its elements once (stride 0 and overlapping views make a
    small file expand to any size). None when it can."""
    if not isinstance(tensor, torch.Tensor):
        return f"a {type(tensor).__name__}, not a tensor"
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        return f"a tensor subclass ({type(tensor).__name__})"
    if tensor.layout != torch.strided or tensor.is_nested:
        return f"{str(tensor.layout).removeprefix('torch.')} layout"
    if tensor.is_quantized:
        return f"quantized {str(tensor.dtype).removeprefix('torch.')}"
    if tensor.is_meta:
        return "a meta tensor without data"
    if tensor.dtype not in FLOAT_DTYPES:
        return str(tensor.dtype).removeprefix("torch.")
    if tensor.numel() == 0:
        return None
    reach = 0  # the farthest element reached by the dimensions seen so far (ascending strides)
    for stride, size in sorted((st, sz) for sz, st in zip(tensor.shape, tensor.stride()) if sz > 1):
        if stride <= reach:
            return "an overlapping view" if stride else "a stride-0 (expanded) view"
        reach += stride * (size - 1)
    needed = (tensor.storage_offset() + reach + 1) * tensor.element_size()
    if tensor.untyped_storage().nbytes() < needed:
        return f"a view past the end of its storage ({needed} bytes needed)"
    return None


def layout_problems(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The tensors no RestoreFormer has, named with the reason (see `_layout_problem`)."""
    bad = [f"{key} ({why})" for key, value in state_dict.items() if (why := _layout_problem(value))]
    if not bad:
        return []
    return [f"tensors that are not dense floating-point weights ({len(bad)}): {list_names(bad, 6)}"]


def non_finite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding NaN or infinity (dense floating tensors only)."""
    return [k for k, t in state_dict.items() if _layout_problem(t) is None and not bool(torch.isfinite(t).all())]


def state_dict_problems(state_dict: Mapping[str, torch.Tensor], config: RestoreFormerConfig) -> list[str]:
    """Human-readable differences between `state_dict` and what `config` needs (empty if it fits):
    tensors that are not dense floating-point weights, missing and unexpected keys, other shapes,
    and non-finite values (checked only once everything else fits)."""
    problems = layout_problems(state_dict)
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    if missing:
        problems.append(f"missing keys ({len(missing)}): {list_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {list_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {list_names(mismatched, 6)}")
    if not problems:
        bad = non_finite_tensors(state_dict)
        if bad:
            problems.append(f"non-finite values (NaN or infinity) in {len(bad)} tensors: {list_names(bad)}")
    return problems


def require_plain_tensors(state_dict: Mapping[str, torch.Tensor], source: str, layout: str | None) -> None:
    """Refuse a state dict with tensors no RestoreFormer has, before anything reads its shapes."""
    problems = layout_problems(state_dict)
    if problems:
        raise WeightLoadError(
            source,
            f"the strict check fails: {problems[0]}. A RestoreFormer has only dense float16/bfloat16/"
            "float32/float64 tensors, each stored once.",
            "use an original weight file (see the README); the file was altered or belongs to another network.",
            layout,
        )


def require_fit(
    state_dict: Mapping[str, torch.Tensor], config: RestoreFormerConfig, source: str, layout: str | None
) -> None:
    """Strict check before loading: every key present, none extra, every shape equal, every
    tensor dense, floating-point and finite."""
    problems = state_dict_problems(state_dict, config)
    if problems:
        raise misfit_error(problems, config, source, layout)


def misfit_error(problems: list[str], config: RestoreFormerConfig, source: str, layout: str | None) -> WeightLoadError:
    """The refusal for a strict check that found `problems` (from `state_dict_problems`)."""
    fix = (
        "a partial file is a broken download or export: get the complete file again (see the "
        "README). Weights of another variant load when the variant is left to detection."
    )
    if any(p.startswith("non-finite") for p in problems):
        fix = "non-finite weights come from a diverged training run or a damaged export: use an earlier checkpoint or an original file (see the README)."
    return WeightLoadError(
        source,
        f"the weights do not fit {config.variant} ({config.heads} heads, widths {config.widths}, "
        f"decoder attention at {config.decoder_attn_resolutions} px): " + "; ".join(problems) + ".",
        fix,
        layout,
    )
