"""Which dictionary entries a batch of faces chooses: per-cell codes and their usage statistics.

A face crop is encoded once (encoder + quant_conv + nearest-entry search, no decoder). Every
latent cell chooses one entry of the HQ dictionary; `Codes` holds those indices and the squared
distance between the encoder feature and the entry it was replaced by.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..model import RestoreFormer, RestoreFormerConfig, Trace
from .render import code_palette, pil_font, pil_to_tensor, resize

StepCallback = Callable[[int], None]


def model_device_dtype(model: RestoreFormer) -> tuple[torch.device, torch.dtype]:
    weight = model.quant_conv.weight
    return weight.device, weight.dtype


def to_model_input(
    crops: torch.Tensor, config: RestoreFormerConfig, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Aligned face crops [N, 3, S, S] in 0..1 -> network input [N, 3, R, R] in -1..1.

    R is the resolution the network was built for (`config.resolution`: 512 for the published
    models, 64 for the tiny test geometry), so the latent grid and the attention levels have the
    sizes the model was trained at whatever the crop size. Crops are resized (antialiased) when
    S != R.
    """
    if crops.ndim != 4 or crops.shape[1] != 3:
        raise ValueError(f"face crops must be [N, 3, S, S] RGB; got shape {tuple(crops.shape)}")
    if crops.shape[-1] != crops.shape[-2]:
        raise ValueError(
            f"face crops must be square aligned crops; got {crops.shape[-2]}x{crops.shape[-1]} "
            "(align faces to the template first, or pass RF_FACES with the image)"
        )
    if crops.shape[0] == 0:
        raise ValueError("no face crops were given (the batch is empty)")
    # Resized in fp32 (antialiased resizing has no bf16 kernel on CPUs), then cast to the network's
    # weight dtype (bf16 for a model loaded with weight_dtype bf16).
    x = resize(crops.float(), config.resolution) * 2 - 1
    return x if dtype is None else x.to(dtype)


@dataclass(frozen=True)
class Codes:
    """Per-face codes. indices [N, h, w] int64; distances [N, h, w] float32 (squared L2)."""

    indices: torch.Tensor
    distances: torch.Tensor

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.indices.shape[-2:])


@torch.no_grad()
def encode_codes(
    model: RestoreFormer,
    crops: torch.Tensor,
    batch_size: int = 8,
    on_step: StepCallback | None = None,
) -> Codes:
    """Codes of aligned face crops [N, 3, S, S] in 0..1, encoded `batch_size` faces at a time.

    `on_step(n)` is called after each chunk with the number of faces done in it (progress and
    interruption hooks). Results are returned on the CPU.
    """
    device, dtype = model_device_dtype(model)
    indices, distances = [], []
    for start in range(0, crops.shape[0], max(1, batch_size)):
        chunk = crops[start : start + max(1, batch_size)].to(device=device)
        trace = Trace()
        model.encode(to_model_input(chunk, model.config, dtype), trace)
        indices.append(trace.indices.cpu())
        distances.append(trace.distances.float().cpu())
        if on_step is not None:
            on_step(chunk.shape[0])
    return Codes(torch.cat(indices), torch.cat(distances))


@dataclass(frozen=True)
class CodeUsage:
    """How often each dictionary entry was chosen over a set of faces.

    counts [n_embed] int64. Perplexity is exp(entropy) of the usage distribution: the number of
    equally used entries that would give the same entropy (it equals k when k entries are used
    equally often, and 1 when a single entry is used everywhere).
    """

    counts: torch.Tensor
    faces: int
    cells_per_face: int

    @property
    def n_embed(self) -> int:
        return self.counts.numel()

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    @property
    def probabilities(self) -> torch.Tensor:
        return self.counts.double() / max(1, self.total)

    @property
    def entropy(self) -> float:
        """Shannon entropy of the usage distribution, in nats."""
        p = self.probabilities
        p = p[p > 0]
        return float(-(p * p.log()).sum())

    @property
    def perplexity(self) -> float:
        return math.exp(self.entropy)

    @property
    def used(self) -> int:
        return int((self.counts > 0).sum())

    @property
    def share_used(self) -> float:
        return self.used / self.n_embed

    def top(self, k: int = 10) -> list[tuple[int, int]]:
        """The k most used entries as (index, count), most used first (ties: lower index first);
        unused entries are never listed."""
        order = usage_order(self.counts)[:k]
        return [(int(i), int(self.counts[i])) for i in order if self.counts[i] > 0]

    def coverage(self, fraction: float) -> int:
        """How many of the most used entries together cover `fraction` of all cells."""
        if self.total == 0:
            return 0
        sorted_counts = self.counts[usage_order(self.counts)].double()
        reached = torch.cumsum(sorted_counts, 0) >= fraction * self.total - 1e-9
        return int(torch.nonzero(reached)[0]) + 1

    def summary(self, top: int = 10) -> str:
        lines = [
            f"faces: {self.faces}, latent cells per face: {self.cells_per_face}, cells: {self.total}",
            f"entries used: {self.used} of {self.n_embed} ({100 * self.share_used:.1f}% of the dictionary)",
            f"perplexity: {self.perplexity:.2f} (exp of the usage entropy {self.entropy:.3f} nats; "
            f"{self.n_embed} if every entry were used equally)",
            f"entries covering 50% / 90% of cells: {self.coverage(0.5)} / {self.coverage(0.9)}",
        ]
        if self.total:
            ranked = ", ".join(f"#{i} x{c} ({100 * c / self.total:.1f}%)" for i, c in self.top(top))
            lines.append(f"most used: {ranked}")
        return "\n".join(lines)


def usage_order(counts: torch.Tensor) -> torch.Tensor:
    """Entry indices sorted by count, most used first; ties keep index order."""
    return torch.sort(counts, descending=True, stable=True).indices


def code_usage(indices: torch.Tensor, n_embed: int) -> CodeUsage:
    """Usage statistics of codes [N, h, w] (int) over a dictionary of n_embed entries."""
    if indices.ndim != 3:
        raise ValueError(f"codes must be [N, h, w]; got shape {tuple(indices.shape)}")
    flat = indices.reshape(-1).long().cpu()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= n_embed):
        raise ValueError(f"code indices must lie in 0..{n_embed - 1}")
    counts = torch.bincount(flat, minlength=n_embed)
    return CodeUsage(counts, faces=indices.shape[0], cells_per_face=indices.shape[1] * indices.shape[2])


def text_height(draw, font) -> int:
    box = draw.textbbox((0, 0), "Ag", font=font)
    return box[3] - box[1]


def usage_plot(usage: CodeUsage, width: int = 1024, height: int = 512) -> torch.Tensor:
    """The usage histogram as an image [3, height, width] in 0..1.

    Top panel: count per entry index (bars in each entry's code-map colour; where several entries
    share a pixel column the largest count is drawn). Bottom panel: counts sorted from most to
    least used, with the cumulative share of cells as a line. Header: the summary figures.
    """
    from PIL import Image, ImageDraw

    if width < 256 or height < 192:
        raise ValueError(f"plot size {width}x{height} is too small; use at least 256x192")
    img = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(img)
    font = pil_font(max(10, height // 40))
    small = pil_font(max(9, height // 48))
    header = (
        f"{usage.faces} face{'s' if usage.faces != 1 else ''} x {usage.cells_per_face} cells   used {usage.used}/{usage.n_embed} "
        f"({100 * usage.share_used:.1f}%)   perplexity {usage.perplexity:.1f}   "
        f"50%/90% of cells: {usage.coverage(0.5)}/{usage.coverage(0.9)} entries"
    )
    draw.text((10, 6), header, fill=(20, 20, 20), font=font)

    left, right = 56, width - 16
    line = text_height(draw, font)
    small_line = text_height(draw, small)
    header_h = 12 + line
    gap = 2 * small_line + 14
    panel_h = (height - header_h - 2 * gap) // 2
    top_box = (left, header_h + 14, right, header_h + 14 + panel_h)
    bottom_box = (left, top_box[3] + gap, right, top_box[3] + gap + panel_h)
    counts = usage.counts.double()
    peak = max(1.0, float(counts.max())) if counts.numel() else 1.0
    colours = (code_palette(usage.n_embed) * 255).round().byte().tolist()

    def frame(box, title, y_label):
        draw.rectangle(box, outline=(120, 120, 120))
        draw.text((box[0], box[1] - small_line - 3), title, fill=(60, 60, 60), font=small)
        draw.text((4, box[1]), y_label, fill=(60, 60, 60), font=small)
        draw.text((4, box[3] - small_line), "0", fill=(60, 60, 60), font=small)

    def bars(box, values, colour_of):
        x0, y0, x1, y1 = box
        n = len(values)
        span = (x1 - x0 - 1) / max(1, n)
        # One pass per pixel column: keep the tallest bar that falls in it.
        columns: dict[int, tuple[float, int]] = {}
        for i, value in enumerate(values):
            if value <= 0:
                continue
            for px in range(int(x0 + 1 + i * span), max(int(x0 + 1 + i * span) + 1, int(x0 + 1 + (i + 1) * span))):
                if px not in columns or columns[px][0] < value:
                    columns[px] = (value, i)
        for px, (value, i) in columns.items():
            top = y1 - 1 - (y1 - y0 - 2) * value / peak
            draw.line([(px, y1 - 1), (px, top)], fill=colour_of(i))

    frame(top_box, "count per dictionary entry (index order, code-map colours)", f"{int(peak)}")
    bars(top_box, counts.tolist(), lambda i: tuple(colours[i]))
    for frac in (0.0, 0.5, 1.0):
        index = round(frac * (usage.n_embed - 1))
        x = top_box[0] + 1 + (top_box[2] - top_box[0] - 1) * (index + 0.5) / usage.n_embed
        draw.text((x - 8, top_box[3] + 2), str(index), fill=(60, 60, 60), font=small)

    order = usage_order(usage.counts)
    ranked = counts[order].tolist()
    frame(bottom_box, "entries sorted by use (bars) and cumulative share of cells (line, 0-100%)", f"{int(peak)}")
    bars(bottom_box, ranked, lambda r: tuple(colours[int(order[r])]))
    if usage.total:
        cumulative = torch.cumsum(counts[order], 0) / usage.total
        x0, y0, x1, y1 = bottom_box
        step = max(1, usage.n_embed // (x1 - x0))
        points = [
            (x0 + 1 + (x1 - x0 - 1) * (i + 1) / usage.n_embed, y1 - 1 - (y1 - y0 - 2) * float(cumulative[i]))
            for i in range(0, usage.n_embed, step)
        ]
        points.append((x1 - 1, y1 - 1 - (y1 - y0 - 2) * float(cumulative[-1])))
        draw.line(points, fill=(30, 90, 200), width=2)
    draw.text((bottom_box[0], bottom_box[3] + 2), "rank 1", fill=(60, 60, 60), font=small)
    draw.text((bottom_box[2] - 60, bottom_box[3] + 2), f"rank {usage.n_embed}", fill=(60, 60, 60), font=small)
    return pil_to_tensor(img)
