"""`python -m training demo-data`: a few synthetic face-like images to try the tiny CPU presets on.

Nothing is downloaded: each image is drawn here (a skin-toned ellipse with darker eyes and mouth on a
smooth background; shapes and colours vary with the image number). The faces are cartoons, not
photographs: the landmark detector finds none and the aligned FFHQ template stands in (see
training/landmarks.py). For a real run use aligned 512x512 faces (training/README.md, "Data").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def draw_face(index: int, size: int = 128) -> np.ndarray:
    """One RGB uint8 image [size, size, 3]; the same index always gives the same image."""
    rng = np.random.default_rng(1000 + index)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    top, bottom = rng.random(3), rng.random(3)
    image = top[None, None] * (1 - yy[..., None]) + bottom[None, None] * yy[..., None]
    cx, cy = 0.5 + 0.03 * rng.standard_normal(), 0.52 + 0.03 * rng.standard_normal()
    rx, ry = 0.27 + 0.03 * rng.random(), 0.36 + 0.03 * rng.random()
    skin = np.array([0.85, 0.65, 0.5]) * (0.7 + 0.3 * rng.random())
    image[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1] = skin
    # Eyes where aligned FFHQ faces have them (about 0.38 / 0.62 across, 0.47 down), then the mouth.
    for ex in (cx - 0.12, cx + 0.12):
        image[((xx - ex) / 0.05) ** 2 + ((yy - (cy - 0.05)) / 0.025) ** 2 < 1] = [0.95, 0.95, 0.95]
        image[((xx - ex) / 0.02) ** 2 + ((yy - (cy - 0.05)) / 0.02) ** 2 < 1] = rng.random(3) * 0.4
    image[((xx - cx) / 0.1) ** 2 + ((yy - (cy + 0.2)) / 0.025) ** 2 < 1] = [0.6, 0.2, 0.25]
    return (image.clip(0, 1) * 255).round().astype(np.uint8)


def write_demo_faces(out: str | Path, count: int = 8, size: int = 128) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = out / f"{i:05d}.png"
        Image.fromarray(draw_face(i, size)).save(path)
        paths.append(path)
    return paths


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="datasets/faces", help="folder to write the images into")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="side in pixels (the tiny presets resize to 64)")


def main(args) -> int:
    paths = write_demo_faces(args.out, args.count, args.size)
    print(f"wrote {len(paths)} synthetic faces of {args.size}x{args.size} to {args.out}")
    return 0
