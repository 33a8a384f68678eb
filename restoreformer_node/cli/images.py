"""Image files in and out of the command line: PIL <-> float tensors [H, W, C] in 0..1.

Reading refuses (ImageError, one line) what it cannot restore faithfully, instead of writing a
wrong image: more pixels than the pixel limit (checked from the header, before decoding: a small
file can declare an enormous image), truncated or damaged files, NaN or infinite float pixels, and
pixel kinds whose range the file does not state. Every PIL mode is scaled by its own range:

| mode | read as | written as |
|---|---|---|
| 1, L, LA, P (with or without transparency), PA | 8-bit gray / RGB(A) | the same layout, 8-bit |
| RGB, RGBA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV | RGB(A) 8-bit | RGB(A) PNG (colour spaces converted, said) |
| I;16 (16-bit gray) | / 65535 | 16-bit gray PNG |
| I (32-bit integer TIFF) | / 2**31 - 1 (signed) or 2**32 - 1 (unsigned) | 16-bit gray PNG (said) |
| F (32-bit float) | 0..1 as it is, values outside clipped (said) | 16-bit gray PNG (said) |

Animated and multi-page files restore their first frame, and the result says so.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..options import DEFAULT_MAX_PIXELS

# Modes PIL reads that the pipeline takes as they are (gray, gray + alpha, RGB, RGBA).
_DIRECT = ("L", "LA", "RGB", "RGBA")
_CONVERT = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB"}
_COLOUR_SPACES = ("CMYK", "YCbCr", "LAB", "HSV")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
WIDE_GRAY = "I;16"  # how 16-bit, 32-bit and float gray images are written back


class ImageError(Exception):
    """An input image that cannot be restored faithfully; the message is one line."""


@dataclass(frozen=True)
class LoadedImage:
    pixels: object  # torch.Tensor [H, W, C] float32 in 0..1, C = 1, 2, 3 or 4
    mode: str  # the PIL mode it is written back in (L, LA, RGB, RGBA or I;16)
    notes: tuple[str, ...] = ()  # what the user should know about how it was read


@contextlib.contextmanager
def _pixel_limit(max_pixels: int):
    """PIL's own decompression-bomb check set to our limit for the duration (it also guards the
    places where PIL learns a size later than the header)."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _too_many(width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(
        f"{width}x{height} is {width * height:,} pixels, more than the limit of {max_pixels:,} "
        "(--max-pixels; raise it to restore this image if the machine has the memory)"
    )


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """An image file -> LoadedImage (EXIF orientation applied). Raises ImageError."""
    from PIL import Image, UnidentifiedImageError

    notes: list[str] = []
    try:
        with _pixel_limit(max_pixels), Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise _too_many(width, height, max_pixels)
            if width < 1 or height < 1:
                raise ImageError(f"the image is {width}x{height} pixels")
            frames = getattr(img, "n_frames", 1)
            if frames > 1:
                notes.append(f"{frames} frames (animated or multi-page): only the first frame was restored")
            img.load()
            pixels, mode = _pixels(img, notes)
    except Image.DecompressionBombError:
        raise ImageError(
            f"the image declares more than the limit of {max_pixels:,} pixels (--max-pixels)"
        ) from None
    except UnidentifiedImageError:
        raise ImageError("not an image file PIL can read") from None
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # truncated data, bad chunks, CRC
        raise ImageError(f"the file is damaged or truncated ({' '.join(str(error).split())})") from None
    return LoadedImage(pixels, mode, tuple(notes))


def _pixels(img, notes: list[str]):
    """(float tensor [H, W, C] in 0..1, mode to write) of a loaded PIL image."""
    import numpy as np
    import torch
    from PIL import ImageOps

    source = (img.format, getattr(img, "tag_v2", None))  # a transposed copy keeps neither
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        notes.append("its EXIF orientation could not be read and was ignored")
    mode = img.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        arr = _wide_gray(img, source, notes)
        return torch.from_numpy(arr)[..., None], WIDE_GRAY
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in _CONVERT:
        img = img.convert(_CONVERT[mode])
    elif mode in _COLOUR_SPACES:
        img = img.convert("RGB")
        notes.append(f"{mode} colours converted to RGB")
    elif mode not in _DIRECT:
        try:
            img = img.convert("RGBA" if "A" in mode else "RGB")
        except ValueError:
            raise ImageError(f"PIL mode {mode} cannot be converted to RGB") from None
        notes.append(f"{mode} pixels converted to {img.mode}")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    return torch.from_numpy(arr.copy()).float().div_(255.0), img.mode


def _wide_gray(img, source: tuple, notes: list[str]):
    """A 16-bit, 32-bit integer or float gray image as float32 [H, W] in 0..1. `source`: the
    file's (format, TIFF tags), which state the range of 32-bit integers."""
    import numpy as np

    mode = img.mode
    arr = np.asarray(img)
    if mode in _SIXTEEN_BIT:
        return (arr.astype(np.float32) / 65535.0).clip(0, 1)
    if mode == "F":
        arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise ImageError(f"{int((~np.isfinite(arr)).sum()):,} pixels are NaN or infinite")
        if arr.min() < 0 or arr.max() > 1:
            notes.append("float pixels outside 0..1 were clipped")
        notes.append("32-bit float gray written as a 16-bit PNG")
        return arr.clip(0, 1)
    # mode "I": 32-bit integers; the file must say their range.
    file_format, tags = source
    bits = tags.get(258) if tags is not None else None
    bits = bits[0] if isinstance(bits, tuple) else bits
    if file_format == "PNG" or bits == 16:
        return (arr.astype(np.float32) / 65535.0).clip(0, 1)
    if bits != 32:
        raise ImageError(
            f"32-bit integer pixels ({file_format}) whose range the file does not state; convert it to 8- or 16-bit"
        )
    sample_format = tags.get(339, 1)
    sample_format = sample_format[0] if isinstance(sample_format, tuple) else sample_format
    if sample_format == 2:  # signed
        if arr.min() < 0:
            notes.append("negative pixels were clipped to black")
        scaled = arr.astype(np.float64).clip(0, None) / (2**31 - 1)
    else:
        scaled = (arr.astype(np.int64) & 0xFFFFFFFF).astype(np.float64) / (2**32 - 1)
    notes.append("32-bit integer gray written as a 16-bit PNG")
    return scaled.astype(np.float32).clip(0, 1)


def encode_png(pixels, mode: str) -> bytes:
    """float [H, W, C] in 0..1 -> PNG bytes in `mode` (8-bit, or 16-bit gray for I;16)."""
    import numpy as np
    from PIL import Image

    t = pixels.clamp(0, 1).to("cpu")
    buffer = io.BytesIO()
    if mode == WIDE_GRAY:
        arr = (t[..., 0].double() * 65535.0).round().numpy().astype(np.uint16)
        Image.fromarray(arr).save(buffer, format="PNG")
    else:
        arr = (t * 255.0).round_().numpy().astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        Image.fromarray(arr).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["ImageError", "LoadedImage", "WIDE_GRAY", "encode_png", "read_image"]
