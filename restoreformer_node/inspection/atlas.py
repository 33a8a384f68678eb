"""The dictionary atlas: every HQ-dictionary entry decoded to an image patch by the model's decoder.

What a tile shows
-----------------
Tile k is the decoder's picture of a `cells` x `cells` latent grid in which every cell holds entry
k (`post_quant_conv` + the full decoder), mapped from -1..1 to 0..1. It is the stage-1 view (the
paper's Figure 3 (b)): the dictionary network decodes the priors alone, so every decoder attention
block runs as self-attention over the prior stream, its queries taken from that same stream. In a
RestoreFormer the decoder attention normally takes its queries from the degraded face; there is no
degraded face here, and this choice changes little: over a grid filled with one entry the keys are
(near) identical, so the softmax is (near) uniform whatever the queries; with `cells=1` the 1x1
attention levels have a single key and the queries do not matter at all. Stage 2 is initialised
from the stage-1 decoder, so the self-attention reading is the one its weights were first trained
for (RF++'s 32x32 attention has no stage-1 counterpart and runs the same way).

Decoding a grid of one entry shows its colour and texture as the decoder paints it in isolation,
including the decoder's own border behaviour (its convolutions pad with zeros); it is not the
entry's appearance inside a particular face, which depends on its neighbours (see the code map).
Each tile depends on its own entry only: changing entry k changes tile k and no other tile.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..lru import LRUCache
from ..model import RestoreFormer
from ..options import ATLAS_ORDERS
from .codes import model_device_dtype, usage_order
from .render import grid_position, resize, tile_grid

StepCallback = Callable[[int], None]
MAX_CELLS = 4


def tile_size(model: RestoreFormer, cells: int) -> int:
    """Side in pixels of the patch decoded from a cells x cells latent grid."""
    return cells * model.config.size_multiple


# Fusion modes whose decoder blocks need the degraded face's features and cannot decode priors alone.
NEEDS_DEGRADED = frozenset({"sft", "mhca_d"})


def decode_prior_stream(model: RestoreFormer, z_q: torch.Tensor) -> torch.Tensor:
    """Decode quantised latents [B, embed_dim, h, w] as the stage-1 dictionary decoder does: the
    model's own decoder with no degraded features, every attention block as self-attention over
    the prior stream. Raw output, -1..1 scale."""
    if model.config.fusion in NEEDS_DEGRADED:
        raise ValueError(
            f"the dictionary atlas decodes through attention blocks; this model's fusion mode "
            f"{model.config.fusion!r} has fusion blocks that need the degraded face's features"
        )
    return model.decode(z_q)


@torch.no_grad()
def decode_entries(
    model: RestoreFormer,
    entries: Sequence[int] | torch.Tensor,
    cells: int = 1,
    batch_size: int = 64,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Tiles of the given dictionary entries: [K, 3, t, t] float32 in 0..1 on the CPU,
    t = cells * 2**(levels - 1) (32 px per cell for the published models).

    Decoded `batch_size` entries at a time; each sample of a batch is independent of the others.
    """
    if not 1 <= cells <= MAX_CELLS:
        raise ValueError(f"cells must be between 1 and {MAX_CELLS}; got {cells}")
    device, dtype = model_device_dtype(model)
    entries = torch.as_tensor(entries, dtype=torch.long).reshape(-1)
    check_entries(entries, model.config.n_embed)
    codebook = model.quantize.embedding.weight
    out = []
    for start in range(0, entries.numel(), max(1, batch_size)):
        chunk = entries[start : start + max(1, batch_size)].to(codebook.device)
        z = codebook[chunk].to(device=device, dtype=dtype)[:, :, None, None]
        z = z.expand(-1, -1, cells, cells).contiguous()
        raw = decode_prior_stream(model, z)
        out.append(((raw.float().clamp(-1, 1) + 1) / 2).cpu())
        if on_step is not None:
            on_step(chunk.numel())
    if not out:
        t = tile_size(model, cells)
        return torch.zeros(0, 3, t, t)
    return torch.cat(out)


def check_entries(entries: torch.Tensor, n_embed: int) -> None:
    if entries.numel() and (int(entries.min()) < 0 or int(entries.max()) >= n_embed):
        raise ValueError(f"dictionary entries must lie in 0..{n_embed - 1}; got {entries.tolist()[:8]}...")


def parse_entries(text: str, n_embed: int) -> list[int] | None:
    """Parse a subset such as "0-63, 100, 512-" (ranges inclusive, open ends allowed).

    Returns None for an empty string (all entries). Order is kept; repeats are dropped.
    """
    text = text.strip()
    if not text:
        return None
    chosen: list[int] = []
    seen: set[int] = set()
    for part in re.split(r"[,\s;]+", text):
        if not part:
            continue
        match = re.fullmatch(r"(\d*)\s*-\s*(\d*)|(\d+)", part)
        if match is None:
            raise ValueError(
                f"entries: cannot read {part!r}; write indices and ranges like '0-63, 100, 512-'"
            )
        if match.group(3) is not None:
            lo = hi = int(match.group(3))
        else:
            lo = int(match.group(1)) if match.group(1) else 0
            hi = int(match.group(2)) if match.group(2) else n_embed - 1
        if lo > hi:
            raise ValueError(f"entries: range {part!r} runs backwards; write it low-high")
        if hi >= n_embed:
            raise ValueError(
                f"entries: {part!r} goes past the dictionary, which has entries 0..{n_embed - 1}"
            )
        for k in range(lo, hi + 1):
            if k not in seen:
                seen.add(k)
                chosen.append(k)
    return chosen


def similarity_order(codebook: torch.Tensor, entries: Sequence[int] | None = None) -> torch.Tensor:
    """Order entries so that neighbours in the order are near each other in feature space.

    A greedy nearest-neighbour chain: start at the entry lowest on the first principal axis, then
    repeatedly step to the nearest entry not yet visited (Euclidean distance, the metric the
    quantiser uses). O(K^2) with K entries; about a millisecond per hundred entries.
    """
    index = torch.arange(codebook.shape[0]) if entries is None else torch.as_tensor(entries, dtype=torch.long)
    if index.numel() <= 2:
        return index
    vectors = codebook.detach()[index.to(codebook.device)].double().cpu()
    centred = vectors - vectors.mean(0, keepdim=True)
    # First principal axis from the SVD of the centred entries (exact, K x C is small).
    axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    start = int(torch.argmin(centred @ axis))
    dist = torch.cdist(vectors, vectors)
    visited = torch.zeros(index.numel(), dtype=torch.bool)
    chain = [start]
    visited[start] = True
    current = start
    for _ in range(index.numel() - 1):
        row = dist[current].masked_fill(visited, math.inf)
        current = int(torch.argmin(row))
        visited[current] = True
        chain.append(current)
    return index[torch.tensor(chain)]


def arrange(
    n_embed: int,
    order: str = "index",
    counts: torch.Tensor | None = None,
    codebook: torch.Tensor | None = None,
    subset: Sequence[int] | None = None,
    limit: int = 0,
) -> torch.Tensor:
    """Which entries to show and in which order: [K] indices.

    order: "index" (as stored, or the subset's own order), "usage" (most chosen first, needs
    `counts`), "similarity" (nearest-neighbour chain, needs `codebook`). `subset` restricts the
    entries; `limit` > 0 keeps the first `limit` after ordering (e.g. the 64 most used).
    """
    if order not in ATLAS_ORDERS:
        raise ValueError(f"order must be one of {ATLAS_ORDERS}; got {order!r}")
    entries = torch.arange(n_embed) if subset is None else torch.as_tensor(list(subset), dtype=torch.long)
    check_entries(entries, n_embed)
    if order == "usage":
        if counts is None:
            raise ValueError("ordering by usage needs faces to count codes over; connect face crops")
        entries = entries[usage_order(counts.cpu()[entries])]
    elif order == "similarity":
        if codebook is None:
            raise ValueError("ordering by similarity needs the codebook")
        entries = similarity_order(codebook, entries)
    if limit > 0:
        entries = entries[:limit]
    return entries


@dataclass(frozen=True)
class Atlas:
    """Tiles laid out as one image.

    image [3, H, W] in 0..1; entries [K]: entry shown in slot s (slots fill rows left to right, or
    boustrophedon when `serpentine`); tile: side of a tile in the image; gap: pixels between tiles.
    """

    image: torch.Tensor
    entries: torch.Tensor
    columns: int
    tile: int
    gap: int
    serpentine: bool

    def box(self, slot: int) -> tuple[int, int, int, int]:
        """(y0, x0, y1, x1) of slot `slot` in the image."""
        row, col = grid_position(slot, self.columns, self.serpentine)
        y, x = row * (self.tile + self.gap), col * (self.tile + self.gap)
        return y, x, y + self.tile, x + self.tile

    def slot_of(self, entry: int) -> int:
        hits = torch.nonzero(self.entries == entry)
        if not hits.numel():
            raise KeyError(f"entry {entry} is not shown in this atlas")
        return int(hits[0])

    def tile_of(self, entry: int) -> torch.Tensor:
        y0, x0, y1, x1 = self.box(self.slot_of(entry))
        return self.image[:, y0:y1, x0:x1]


def layout(
    tiles: torch.Tensor,
    entries: torch.Tensor,
    columns: int = 0,
    gap: int = 1,
    scale: int = 1,
    serpentine: bool = False,
    background: float = 0.0,
) -> Atlas:
    """Lay tiles [K, 3, t, t] (already in display order) out as an Atlas.

    columns 0 picks a near-square grid; `scale` enlarges tiles by pixel repetition.
    """
    if scale > 1:
        tiles = resize(tiles, tiles.shape[-1] * scale, mode="nearest")
    k = tiles.shape[0]
    if columns <= 0:
        columns = max(1, math.ceil(math.sqrt(k)))
    columns = max(1, min(columns, max(k, 1)))
    image = tile_grid(tiles, columns, gap=gap, background=background, serpentine=serpentine)
    return Atlas(image, entries, columns, tiles.shape[-1], gap, serpentine)


# Tensors fingerprinted for the cache key: the whole dictionary plus the decoder's first and last
# layers. Hashing all 36M decoder weights would cost more than decoding a small atlas; together
# with the weights file's name these catch an edited dictionary or a different file.
_FINGERPRINTED = (
    "quantize.embedding.weight",
    "post_quant_conv.weight",
    "post_quant_conv.bias",
    "decoder.conv_in.weight",
    "decoder.conv_out.weight",
    "decoder.conv_out.bias",
)


def model_fingerprint(model: RestoreFormer) -> str:
    """A digest of the model's geometry, dictionary and decoder end layers (a cache key)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(model.config.to_json().encode())
    state = model.state_dict()
    for name in _FINGERPRINTED:
        digest.update(name.encode())
        digest.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TileCache:
    """Decoded tiles per (model, cells), filled on demand, at most `capacity` models kept.

    The key combines the caller's model name (the weights file) with a fingerprint of the weights,
    so an edited or reloaded model never reuses stale tiles. Tiles are held on the CPU in float16
    (1024 entries at 32 px cost 6 MB; at 128 px, 100 MB).
    """

    def __init__(self, capacity: int = 2) -> None:
        self._store: LRUCache[tuple[torch.Tensor, torch.Tensor]] = LRUCache(capacity)
        self.decoded_entries = 0  # entries decoded so far (for tests and benchmarks)

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)

    def tiles(
        self,
        model: RestoreFormer,
        entries: torch.Tensor,
        cells: int = 1,
        model_name: str = "",
        batch_size: int = 64,
        on_step: StepCallback | None = None,
    ) -> torch.Tensor:
        """Tiles [K, 3, t, t] float32 in 0..1 for `entries`, decoding only those not cached."""
        entries = torch.as_tensor(entries, dtype=torch.long).reshape(-1)
        check_entries(entries, model.config.n_embed)
        t, n = tile_size(model, cells), model.config.n_embed
        store, done = self._store.get_or_make(
            (model_name, model_fingerprint(model), cells),
            lambda: (torch.zeros(n, 3, t, t, dtype=torch.float16), torch.zeros(n, dtype=torch.bool)),
        )
        missing = entries[~done[entries]].unique()
        if missing.numel():
            store[missing] = decode_entries(model, missing, cells, batch_size, on_step).half()
            done[missing] = True
            self.decoded_entries += missing.numel()
        return store[entries].float()


DEFAULT_CACHE = TileCache()


def build_atlas(
    model: RestoreFormer,
    cells: int = 1,
    order: str = "index",
    counts: torch.Tensor | None = None,
    subset: Sequence[int] | None = None,
    limit: int = 0,
    columns: int = 0,
    gap: int = 1,
    scale: int = 1,
    model_name: str = "",
    cache: TileCache | None = DEFAULT_CACHE,
    batch_size: int = 64,
    on_step: StepCallback | None = None,
) -> Atlas:
    """The dictionary atlas of `model`: one tile per shown entry, in the chosen order.

    With `cache=None` everything is decoded afresh. Similarity order is laid out boustrophedon so
    consecutive (similar) tiles stay adjacent across row ends.
    """
    entries = arrange(
        model.config.n_embed, order, counts=counts, codebook=model.quantize.embedding.weight,
        subset=subset, limit=limit,
    )
    if cache is None:
        tiles = decode_entries(model, entries, cells, batch_size, on_step)
    else:
        tiles = cache.tiles(model, entries, cells, model_name, batch_size, on_step)
    return layout(tiles, entries, columns=columns, gap=gap, scale=scale, serpentine=order == "similarity")
