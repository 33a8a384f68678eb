"""Draw detections onto a copy of an IMAGE batch, on its device, with torch only.

Boxes, the 5 landmarks (one colour per point: see LANDMARK_COLOURS) and a label "index score"
in a small built-in bitmap font, so the preview needs neither OpenCV nor a font file.
"""

from __future__ import annotations

import torch

from .detectors.base import Detection, as_rgb
from .types import Faces

BOX_COLOUR = (0.1, 0.9, 1.0)  # cyan: a chosen face
UNCHOSEN_COLOUR = (0.55, 0.55, 0.55)  # grey: found, but not selected
# left eye, right eye, nose, left mouth corner, right mouth corner
LANDMARK_COLOURS = (
    (1.0, 0.15, 0.15),  # red
    (0.15, 0.9, 0.15),  # green
    (0.25, 0.45, 1.0),  # blue
    (1.0, 0.9, 0.1),  # yellow
    (1.0, 0.2, 1.0),  # magenta
)

# 3x5 glyphs, rows top to bottom, '#' = ink.
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
    ".": ("...", "...", "...", "...", ".#."),
    " ": ("...", "...", "...", "...", "..."),
}


def text_mask(text: str) -> torch.Tensor:
    """[5, 4 * len(text) - 1] bool bitmap of `text` (digits, '.' and spaces)."""
    columns = []
    for k, char in enumerate(text):
        glyph = _GLYPHS.get(char, _GLYPHS[" "])
        columns.append(torch.tensor([[c == "#" for c in row] for row in glyph]))
        if k < len(text) - 1:
            columns.append(torch.zeros(5, 1, dtype=torch.bool))
    return torch.cat(columns, dim=1) if columns else torch.zeros(5, 0, dtype=torch.bool)


def draw_detections(
    images: torch.Tensor,
    per_image: list[tuple[Detection, tuple[int, ...]]],
    labels: bool = True,
) -> torch.Tensor:
    """images [B, H, W, C] (C = 1..4) -> [B, H, W, 3] float32 copy with faces drawn.

    per_image[b] = (faces of image b in order, positions chosen): every face is labelled with its
    position and score; chosen ones are drawn in colour with landmarks, the others in grey.
    """
    out = as_rgb(images).clone()
    _, height, width, _ = out.shape
    line = max(1, round(min(height, width) / 320))
    text_scale = max(1, round(min(height, width) / 240))
    for b, (found, chosen) in enumerate(per_image):
        if b >= out.shape[0]:
            break
        for position in range(len(found)):
            is_chosen = position in chosen
            box = found.boxes[position].tolist()
            _draw_box(out[b], box, BOX_COLOUR if is_chosen else UNCHOSEN_COLOUR, line)
            if is_chosen:
                radius = max(1.5, 1.5 * line + 0.25 * (box[2] - box[0]) / 40)
                for point, colour in zip(found.landmarks[position].tolist(), LANDMARK_COLOURS):
                    _draw_disc(out[b], point, radius, colour)
            if labels:
                label = f"{position} {float(found.scores[position]):.2f}"
                _draw_label(out[b], box, label, text_scale, BOX_COLOUR if is_chosen else UNCHOSEN_COLOUR)
    return out


def draw_faces(images: torch.Tensor, faces: Faces, labels: bool = True) -> torch.Tensor:
    """Draw a FACES value (all its faces chosen, numbered in their order per image)."""
    per_image = []
    for b in range(faces.batch_size):
        mine = faces.for_image(b)
        if mine:
            found = Detection(
                torch.stack([f.box for f in mine]),
                torch.stack([f.landmarks for f in mine]),
                torch.tensor([f.score for f in mine]),
            )
        else:
            found = Detection.empty()
        per_image.append((found, tuple(range(len(mine)))))
    return draw_detections(images, per_image, labels)


def _fill(img: torch.Tensor, y0: int, y1: int, x0: int, x1: int, colour) -> None:
    """Fill img[y0:y1, x0:x1] (clipped to the image) with an RGB colour."""
    height, width, _ = img.shape
    y0, y1, x0, x1 = max(0, y0), min(height, y1), max(0, x0), min(width, x1)
    if y0 < y1 and x0 < x1:
        img[y0:y1, x0:x1] = torch.tensor(colour, dtype=img.dtype, device=img.device)


def _draw_box(img: torch.Tensor, box: list[float], colour, line: int) -> None:
    x0, y0, x1, y1 = (round(v) for v in box)
    half = line // 2
    _fill(img, y0 - half, y0 - half + line, x0 - half, x1 + line - half, colour)  # top
    _fill(img, y1 - half, y1 - half + line, x0 - half, x1 + line - half, colour)  # bottom
    _fill(img, y0 - half, y1 + line - half, x0 - half, x0 - half + line, colour)  # left
    _fill(img, y0 - half, y1 + line - half, x1 - half, x1 - half + line, colour)  # right


def _draw_disc(img: torch.Tensor, point: list[float], radius: float, colour) -> None:
    height, width, _ = img.shape
    x, y = point
    x0, x1 = max(0, int(x - radius)), min(width, int(x + radius) + 2)
    y0, y1 = max(0, int(y - radius)), min(height, int(y + radius) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    ys = torch.arange(y0, y1, device=img.device, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(x0, x1, device=img.device, dtype=torch.float32).view(1, -1)
    inside = ((xs - x) ** 2 + (ys - y) ** 2) <= radius**2
    region = img[y0:y1, x0:x1]
    region[inside] = torch.tensor(colour, dtype=img.dtype, device=img.device)


def _draw_label(img: torch.Tensor, box: list[float], text: str, scale: int, colour) -> None:
    """Text in `colour` on a dark plate, above the box (inside it when the box touches the top)."""
    height, width, _ = img.shape
    mask = text_mask(text).to(img.device)
    mask = mask.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    pad = scale
    plate_h, plate_w = mask.shape[0] + 2 * pad, mask.shape[1] + 2 * pad
    x = min(max(0, round(box[0])), max(0, width - plate_w))
    y = round(box[1]) - plate_h - 1
    if y < 0:
        y = max(0, round(box[1]) + 1)
    y = min(y, max(0, height - plate_h))
    _fill(img, y, y + plate_h, x, x + plate_w, (0.0, 0.0, 0.0))
    ty, tx = y + pad, x + pad
    th, tw = min(mask.shape[0], height - ty), min(mask.shape[1], width - tx)
    if th > 0 and tw > 0:
        region = img[ty : ty + th, tx : tx + tw]
        region[mask[:th, :tw]] = torch.tensor(colour, dtype=img.dtype, device=img.device)
