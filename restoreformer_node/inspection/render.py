"""Small drawing helpers shared by the inspection views: palettes, colour maps, overlays, grids.

Everything works on batched float tensors in 0..1, channels first ([N, 3, H, W]), on any device.
Text and plots go through Pillow (a dependency of ComfyUI), not matplotlib (which is not).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Anchor colours of the heat colour map: dark violet through red and orange to pale yellow, a
# dark-to-bright ramp whose lightness rises monotonically (readable in grey too).
_HEAT_ANCHORS = (
    (0.00, (0.000, 0.000, 0.016)),
    (0.20, (0.196, 0.039, 0.369)),
    (0.40, (0.471, 0.110, 0.427)),
    (0.60, (0.737, 0.216, 0.329)),
    (0.80, (0.957, 0.490, 0.086)),
    (0.90, (0.980, 0.690, 0.110)),
    (1.00, (0.988, 1.000, 0.643)),
)

# Multipliers of the additive-recurrence palette (golden ratio and its 2-D/3-D analogues):
# consecutive indices land far apart in hue, so neighbouring codes stay distinguishable.
_PHI_1 = 0.6180339887498949
_PHI_2 = 0.7548776662466927
_PHI_3 = 0.5698402909980532


def code_palette(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A fixed colour per dictionary index: [n, 3] in 0..1.

    Entry k always gets the same colour (whatever the dictionary size), so code maps of different
    faces and the usage plot can be compared by colour.
    """
    k = torch.arange(n, dtype=torch.float64, device=device)
    hue = torch.frac(k * _PHI_1)
    sat = 0.55 + 0.45 * torch.frac(k * _PHI_2 + 0.5)
    val = 0.70 + 0.30 * torch.frac(k * _PHI_3 + 0.25)
    return hsv_to_rgb(hue, sat, val).float()


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Element-wise HSV (each in 0..1) to RGB; returns [..., 3]."""
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v], -1).gather(-1, i.unsqueeze(-1)).squeeze(-1)
    g = torch.stack([t, v, v, q, p, p], -1).gather(-1, i.unsqueeze(-1)).squeeze(-1)
    b = torch.stack([p, p, t, v, v, q], -1).gather(-1, i.unsqueeze(-1)).squeeze(-1)
    return torch.stack([r, g, b], -1)


def heat_colours(values: torch.Tensor) -> torch.Tensor:
    """Map values in 0..1 (any shape [...]) to heat-map colours [..., 3] by linear interpolation."""
    stops = torch.tensor([a for a, _ in _HEAT_ANCHORS], dtype=values.dtype, device=values.device)
    colours = torch.tensor([c for _, c in _HEAT_ANCHORS], dtype=values.dtype, device=values.device)
    v = values.clamp(0, 1)
    upper = torch.searchsorted(stops, v.contiguous(), right=False).clamp(1, len(stops) - 1)
    lower = upper - 1
    span = stops[upper] - stops[lower]
    t = ((v - stops[lower]) / span).unsqueeze(-1)
    return colours[lower] * (1 - t) + colours[upper] * t


def heat_map(values: torch.Tensor) -> torch.Tensor:
    """[N, H, W] in 0..1 -> heat-map image [N, 3, H, W]."""
    return heat_colours(values).permute(0, 3, 1, 2).contiguous()


def blend(base: torch.Tensor, overlay: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """(1 - alpha) * base + alpha * overlay; alpha a number or a [N, 1, H, W] weight."""
    return base * (1 - alpha) + overlay * alpha


def resize(images: torch.Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize [N, C, H, W]; antialiased when shrinking with a smooth mode."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    if mode == "nearest":
        return F.interpolate(images, size=size, mode="nearest-exact")
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode=mode, align_corners=False, antialias=shrinking)


def cell_grid_lines(size: int, cells: int, device=None) -> torch.Tensor:
    """A [size, size] 0/1 mask of the boundaries between `cells` x `cells` equal cells."""
    step = size / cells
    # A pixel is on a line when it is the first pixel of a cell (but not of the first cell).
    starts = torch.floor(torch.arange(1, cells, device=device) * step).long()
    on = torch.zeros(size, dtype=torch.bool, device=device)
    on[starts] = True
    return (on[:, None] | on[None, :]).float()


def draw_ring(images: torch.Tensor, x: float, y: float, radius: float) -> torch.Tensor:
    """Draw a white ring with a dark outline centred at pixel (x, y) on every image [N, 3, H, W]."""
    _, _, h, w = images.shape
    ys = torch.arange(h, device=images.device, dtype=images.dtype).view(h, 1) + 0.5
    xs = torch.arange(w, device=images.device, dtype=images.dtype).view(1, w) + 0.5
    dist = torch.sqrt((xs - x) ** 2 + (ys - y) ** 2)
    width = max(1.0, radius / 4)
    dark = ((dist - radius).abs() <= width * 1.6).to(images.dtype)
    light = ((dist - radius).abs() <= width * 0.6).to(images.dtype)
    out = images * (1 - dark) + 0.0 * dark
    return out * (1 - light) + 1.0 * light


def tile_grid(
    tiles: torch.Tensor,
    columns: int,
    gap: int = 0,
    background: float = 0.0,
    serpentine: bool = False,
) -> torch.Tensor:
    """Lay tiles [K, C, t, t] out row by row into one image [C, H, W].

    With `serpentine`, odd rows run right to left, so consecutive tiles stay adjacent across row
    ends (used for similarity orderings). Empty slots of the last row are `background`.
    """
    k, c, th, tw = tiles.shape
    columns = max(1, min(columns, k)) if k else 1
    rows = max(1, math.ceil(k / columns))
    height = rows * th + (rows - 1) * gap
    width = columns * tw + (columns - 1) * gap
    out = torch.full((c, height, width), background, dtype=tiles.dtype, device=tiles.device)
    for slot in range(k):
        r, col = grid_position(slot, columns, serpentine)
        y, x = r * (th + gap), col * (tw + gap)
        out[:, y : y + th, x : x + tw] = tiles[slot]
    return out


def grid_position(slot: int, columns: int, serpentine: bool = False) -> tuple[int, int]:
    """(row, column) of tile `slot` in a grid laid out by `tile_grid`."""
    row, col = divmod(slot, columns)
    if serpentine and row % 2 == 1:
        col = columns - 1 - col
    return row, col


def pil_font(size: int):
    """Pillow's built-in font at `size` px (older Pillow: its fixed bitmap font)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no scalable default font
        return ImageFont.load_default()


def pil_to_tensor(image) -> torch.Tensor:
    """A Pillow RGB image -> [3, H, W] float in 0..1."""
    import numpy as np

    array = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255.0


def text_label(text: str, height: int) -> torch.Tensor:
    """White text on a dark box, [3, height, w] in 0..1 (for labelling tiles)."""
    from PIL import Image, ImageDraw

    font = pil_font(max(8, int(height * 0.75)))
    box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    width = box[2] - box[0] + height // 2
    img = Image.new("RGB", (max(1, width), height), (16, 16, 16))
    ImageDraw.Draw(img).text((height // 4 - box[0], (height - (box[3] - box[1])) // 2 - box[1]), text,
                             fill=(240, 240, 240), font=font)
    return pil_to_tensor(img)


def stamp(images: torch.Tensor, label: torch.Tensor, x: int = 0, y: int = 0) -> torch.Tensor:
    """Paste a label [3, h, w] at (x, y) into every image [N, 3, H, W] (clipped at the edges)."""
    h = min(label.shape[1], images.shape[2] - y)
    w = min(label.shape[2], images.shape[3] - x)
    if h > 0 and w > 0:
        images = images.clone()
        images[:, :, y : y + h, x : x + w] = label[:, :h, :w].to(images.device, images.dtype)
    return images
