"""Per-face views: which entry each latent cell chose, how far the prior moved it, and where the
decoder's cross-attention looks from a chosen point (the paper's Figure 6 (d, e)).

All images are channels-first [N, 3, S, S] in 0..1 at the crop resolution S of the given crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model import RestoreFormer, Trace
from .codes import Codes, StepCallback, model_device_dtype, to_model_input
from .render import blend, cell_grid_lines, code_palette, draw_ring, heat_map, resize, stamp, text_label

NORMALISE = ("per face", "batch")


def code_map_image(
    crops: torch.Tensor, codes: Codes, n_embed: int, opacity: float = 0.6, grid: bool = True
) -> torch.Tensor:
    """Each latent cell painted in its entry's fixed colour over the face: [N, 3, S, S]."""
    n, _, s, _ = crops.shape
    palette = code_palette(n_embed, device=crops.device).to(crops.dtype)
    colours = palette[codes.indices.to(crops.device)].permute(0, 3, 1, 2)  # [N, 3, h, w]
    colours = resize(colours, s, mode="nearest")
    out = blend(crops, colours, opacity)
    if grid:
        lines = cell_grid_lines(s, codes.grid[0], device=crops.device).to(crops.dtype)
        out = blend(out, torch.zeros_like(out), 0.35 * lines)
    return out


def distance_mask(codes: Codes, size: int, normalise: str = "per face", smooth: bool = True) -> torch.Tensor:
    """Distance between each encoder feature and the entry that replaced it, as [N, size, size]
    in 0..1: 1 where the prior replaced the input most.

    Squared L2 distances are divided by their maximum over each face ("per face") or over the
    whole batch ("batch"); 0 means the feature was already exactly a dictionary entry. `smooth`
    upsamples bilinearly (a soft blending mask), otherwise each cell is a flat square.
    """
    if normalise not in NORMALISE:
        raise ValueError(f"normalise must be one of {NORMALISE}; got {normalise!r}")
    d = codes.distances.float().clamp_min(0).unsqueeze(1)
    # Normalise after upsampling, so the mask reaches exactly 1 at its peak either way.
    mask = resize(d, size, mode="bilinear" if smooth else "nearest").squeeze(1).clamp_min(0)
    if normalise == "per face":
        peak = mask.flatten(1).amax(1).view(-1, 1, 1)
    else:
        peak = mask.amax().view(1, 1, 1)
    return (mask / peak.clamp_min(torch.finfo(mask.dtype).tiny)).clamp(0, 1)


def heat_overlay(crops: torch.Tensor, mask: torch.Tensor, opacity: float = 0.6) -> torch.Tensor:
    """A mask [N, S, S] in 0..1 as a heat map over the faces [N, 3, S, S]."""
    return blend(crops, heat_map(mask.to(crops.device, crops.dtype)), opacity)


# ---------------------------------------------------------------------------------------------
# Cross-attention

BLOCK_CHOICES = ("first", "second", "third", "mid")


@dataclass(frozen=True)
class AttentionLevel:
    name: str  # trace name, e.g. "decoder.up.5.attn.0"
    grid: int  # side of the query/key grid at this level


def attention_levels(model: RestoreFormer, block: str = "first") -> list[AttentionLevel]:
    """The decoder cross-attention blocks to show, one per attention level, coarsest first.

    At each level in `decoder_attn_resolutions` (16x16; RF++ also 32x32) the level's first, second
    or third block. "mid" picks the decoder's mid-section attention at the latent level (the first
    cross-attention the priors meet) and the first block at finer levels.
    """
    if block not in BLOCK_CHOICES:
        raise ValueError(f"block must be one of {BLOCK_CHOICES}; got {block!r}")
    cfg = model.config
    levels = []
    for level in reversed(range(cfg.num_levels)):
        grid = cfg.level_resolution(level)
        if grid not in cfg.decoder_attn_resolutions:
            continue
        if block == "mid" and level == cfg.num_levels - 1:
            levels.append(AttentionLevel("decoder.mid.attn_1", grid))
            continue
        i = 0 if block == "mid" else BLOCK_CHOICES.index(block)
        if i >= cfg.decoder_blocks:
            raise ValueError(f"this model has {cfg.decoder_blocks} attention blocks per level; {block!r} is too far")
        levels.append(AttentionLevel(f"decoder.up.{level}.attn.{i}", grid))
    if not levels:
        raise ValueError("this model has no decoder attention levels to show")
    return levels


def query_cell(point: tuple[float, float], grid: int) -> tuple[int, int]:
    """(row, column) of the grid cell containing a point given relative to the crop (0..1)."""
    x, y = point
    col = min(grid - 1, max(0, int(x * grid)))
    row = min(grid - 1, max(0, int(y * grid)))
    return row, col


@torch.no_grad()
def trace_attention(model: RestoreFormer, crops: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Full attention weights of the named blocks for crops [N, 3, S, S] in 0..1 (one forward
    pass): name -> [N, heads, queries, keys] float32 on the CPU, queries and keys in raster order."""
    device, dtype = model_device_dtype(model)
    trace = Trace()
    model(to_model_input(crops.to(device=device), model.config, dtype), trace)
    missing = [n for n in names if n not in trace.attention]
    if missing:
        raise ValueError(f"the model has no attention block named {missing}")
    return {n: trace.attention[n].float().cpu() for n in names}


@dataclass(frozen=True)
class AttentionMaps:
    """Attention of one query cell per level: maps[name] is [N, heads, grid, grid], each head's
    weights over the key positions (sum 1 per head)."""

    levels: list[AttentionLevel]
    maps: dict[str, torch.Tensor]
    cells: dict[str, tuple[int, int]]
    point: tuple[float, float]  # relative 0..1 (x, y)


@torch.no_grad()
def attention_maps(
    model: RestoreFormer,
    crops: torch.Tensor,
    point: tuple[float, float],
    block: str = "first",
    batch_size: int = 4,
    on_step: StepCallback | None = None,
) -> AttentionMaps:
    """Cross-attention weights, per head, from the latent cell under `point` (relative x, y in 0..1)
    to every key position, for the chosen block at every decoder attention level."""
    x, y = point
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ValueError(f"the point must lie inside the crop (relative 0..1); got ({x:.3f}, {y:.3f})")
    levels = attention_levels(model, block)
    names = [lv.name for lv in levels]
    cells = {lv.name: query_cell(point, lv.grid) for lv in levels}
    collected: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    for start in range(0, crops.shape[0], max(1, batch_size)):
        chunk = crops[start : start + max(1, batch_size)]
        weights = trace_attention(model, chunk, names)
        for lv in levels:
            row, col = cells[lv.name]
            w = weights[lv.name][:, :, row * lv.grid + col, :]  # [n, heads, keys]
            collected[lv.name].append(w.reshape(w.shape[0], w.shape[1], lv.grid, lv.grid))
        if on_step is not None:
            on_step(chunk.shape[0])
    maps = {n: torch.cat(v) for n, v in collected.items()}
    return AttentionMaps(levels, maps, cells, (x, y))


def attention_sheet(
    crops: torch.Tensor, maps: AttentionMaps, tile: int = 256, opacity: float = 0.65, labels: bool = True
) -> torch.Tensor:
    """Figure 6 (d, e) for every face: [N, 3, rows * tile, (heads + 1) * tile].

    One row per attention level (coarsest first); one column per head, then the mean over heads.
    Each map is upsampled bilinearly, scaled so its largest weight is full heat, and laid over the
    face; a ring marks the query point; a small label names the level and head.
    """
    n = crops.shape[0]
    faces = resize(crops, tile)
    rows = []
    px, py = maps.point[0] * tile, maps.point[1] * tile
    for lv in maps.levels:
        m = maps.maps[lv.name].to(crops.device, crops.dtype)  # [N, heads, g, g]
        m = torch.cat([m, m.mean(1, keepdim=True)], 1)
        heads = m.shape[1]
        up = resize(m.reshape(n * heads, 1, lv.grid, lv.grid), tile).reshape(n, heads, tile, tile)
        up = up / up.flatten(2).amax(2).clamp_min(1e-12)[..., None, None]
        tiles = blend(faces.unsqueeze(1), heat_map(up.reshape(n * heads, tile, tile)).reshape(n, heads, 3, tile, tile), opacity)
        tiles = draw_ring(tiles.reshape(n * heads, 3, tile, tile), px, py, max(3.0, tile / 40)).reshape(n, heads, 3, tile, tile)
        if labels:
            size = max(10, tile // 16)
            names = [f"{lv.grid}x{lv.grid} head {h + 1}" for h in range(heads - 1)] + [f"{lv.grid}x{lv.grid} mean"]
            tiles = torch.stack([stamp(tiles[:, h], text_label(names[h], size)) for h in range(heads)], 1)
        rows.append(torch.cat(list(tiles.unbind(1)), dim=-1))  # [N, 3, tile, heads*tile]
    width = max(r.shape[-1] for r in rows)
    padded = [torch.nn.functional.pad(r, (0, width - r.shape[-1])) for r in rows]
    return torch.cat(padded, dim=-2)


def attention_mask(maps: AttentionMaps, size: int) -> torch.Tensor:
    """Mean attention over heads at the coarsest shown level, [N, size, size], scaled to max 1."""
    m = maps.maps[maps.levels[0].name].mean(1, keepdim=True)
    up = resize(m, size).squeeze(1)
    return (up / up.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).clamp(0, 1)
