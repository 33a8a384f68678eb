"""Image files in and out of the command line: PIL <-> float tensors [H, W, C] in 0..1."""

from __future__ import annotations

from pathlib import Path


def read_image(path: Path):
    """An image file -> (float32 tensor [H, W, C] in 0..1, PIL mode to write back, note or None).
    C: 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA); EXIF orientation applied."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        note = None
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.float32) / 65535.0
            return torch.from_numpy(arr.clip(0, 1))[..., None], "L", "16-bit gray written as 8-bit"
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode == "1":
            img = img.convert("L")
        elif img.mode == "PA":
            img = img.convert("RGBA")
        elif img.mode not in ("L", "LA", "RGB", "RGBA"):
            img = img.convert("RGB")
        arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr.copy()).float().div_(255.0), img.mode, note


def write_image(t, mode: str, path: Path) -> None:
    """float [H, W, C] in 0..1 -> 8-bit PNG in `mode` (written to a temp name, then renamed)."""
    import numpy as np
    from PIL import Image

    arr = (t.clamp(0, 1) * 255.0).round_().to("cpu").numpy().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(arr, mode=None).convert(mode).save(tmp, format="PNG")
    tmp.replace(path)
