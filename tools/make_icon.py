"""Draw the pack's Comfy Registry icon (assets/icon.png, 400x400): a face, degraded on the left
half and restored on the right.

    python -m tools.make_icon
"""
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ICON = Path(__file__).resolve().parents[1] / "assets" / "icon.png"


def main() -> None:
    S = 1600  # drawn at 4x, saved at 400x400
    img = Image.new("RGB", (S, S), (24, 28, 38))
    d = ImageDraw.Draw(img)
    # rounded tile
    d.rounded_rectangle([40, 40, S - 40, S - 40], radius=220, fill=(34, 41, 58))
    cx, cy = S // 2, S // 2 + 40
    # hair
    d.ellipse([cx - 470, cy - 600, cx + 470, cy + 260], fill=(70, 46, 34))
    # face
    d.ellipse([cx - 400, cy - 480, cx + 400, cy + 520], fill=(236, 190, 160))
    # eyes
    for ex in (cx - 170, cx + 170):
        d.ellipse([ex - 70, cy - 110, ex + 70, cy - 20], fill=(255, 255, 255))
        d.ellipse([ex - 38, cy - 98, ex + 38, cy - 30], fill=(60, 90, 140))
        d.ellipse([ex - 16, cy - 80, ex + 16, cy - 48], fill=(15, 15, 20))
        d.arc([ex - 100, cy - 200, ex + 100, cy - 90], 200, 340, fill=(70, 46, 34), width=28)
    # nose and mouth
    d.line([cx, cy - 10, cx - 40, cy + 120, cx + 10, cy + 135], fill=(196, 140, 112), width=22, joint="curve")
    d.arc([cx - 170, cy + 120, cx + 170, cy + 330], 20, 160, fill=(176, 70, 70), width=34)
    # left half degraded: blocky, blurred and noisy
    left = img.crop((0, 0, cx, S))
    small = left.resize((cx // 64, S // 64), Image.BILINEAR).resize(left.size, Image.NEAREST)
    small = small.filter(ImageFilter.GaussianBlur(18))
    noise = (np.random.default_rng(0).normal(0, 10, (S, cx, 3))).astype(np.int16)
    small = Image.fromarray(np.clip(np.asarray(small, np.int16) + noise, 0, 255).astype(np.uint8))
    mask = Image.new("L", (S, S), 0)
    ImageDraw.Draw(mask).rounded_rectangle([40, 40, S - 40, S - 40], radius=220, fill=255)
    img.paste(small, (0, 0), mask.crop((0, 0, cx, S)))
    # divider with a sparkle on the restored side
    d = ImageDraw.Draw(img)
    d.line([cx, 110, cx, S - 110], fill=(0, 229, 255), width=18)
    sx, sy = cx + 430, 300
    for dx, dy in ((0, 90), (90, 0)):
        d.polygon([(sx - dx, sy - dy), (sx + 22, sy), (sx + dx, sy + dy), (sx - 22, sy)], fill=(0, 229, 255))
        d.polygon([(sx - dx, sy - dy), (sx, sy + 22), (sx + dx, sy + dy), (sx, sy - 22)], fill=(0, 229, 255))
    img = img.resize((400, 400), Image.LANCZOS)
    img.quantize(128, dither=Image.Dither.NONE).save(ICON, optimize=True)
    print(f"wrote {ICON} {img.size}")


if __name__ == "__main__":
    main()
