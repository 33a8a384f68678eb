"""Five-point landmarks for a training set: computed once, stored beside the dataset, keyed by file.

The component losses need eye and mouth positions for every training image. They are detected once
per dataset with the project's face detector (MTCNN, whose weights ship with facenet-pytorch) and
written to a JSON file keyed by each image's path relative to the dataset root, never by position,
so adding, removing or re-sorting files cannot pair an image with another image's boxes.

File format (JSON):
    {"format": "restoreformer-landmarks", "version": 1,
     "points": ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"],
     "coordinates": "fraction of the centre square crop (x right, y down)",
     "detector": "...",
     "landmarks": {"<relative/path.png>": [[x, y] x 5] or null}}
Coordinates are fractions of the centre square crop that the dataset resizes, so one file serves
every training size. `null` marks an image where no face was found; those images use the aligned
FFHQ template (`fallback_landmarks`), which is where FFHQ-aligned faces put their landmarks.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from restoreformer_node.faces.template import TEMPLATE_512

FORMAT = "restoreformer-landmarks"
POINTS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def default_landmarks_path(root: str | Path) -> Path:
    """Where landmarks for the dataset at `root` live by default: `<root>_landmarks5.json` beside it."""
    root = Path(root).resolve()
    return root.with_name(root.name + "_landmarks5.json")


def fallback_landmarks() -> torch.Tensor:
    """The FFHQ/RestoreFormer 512 template as fractions [5, 2] (for images without a detection)."""
    return (TEMPLATE_512.double() / 512.0).float()


def _centre_square(image: Image.Image) -> Image.Image:
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


class _Detector:
    """The largest face's five landmarks in an RGB uint8 image [H, W, 3], or None.

    Uses the project's detector (`restoreformer_node.faces`) when it is available, else
    facenet-pytorch's MTCNN directly (the same network and weights)."""

    def __init__(self, device: str = "cpu") -> None:
        try:
            from restoreformer_node.faces.detection import find_faces
            from restoreformer_node.faces.detectors import load_detector

            detector = load_detector("mtcnn")
            self.name = "restoreformer_node mtcnn"

            def run(image: np.ndarray) -> np.ndarray | None:
                batch = torch.from_numpy(np.array(image)).float().div(255)[None]
                faces = find_faces(detector, batch)
                if not len(faces):
                    return None
                best = max(faces.faces, key=lambda f: f.size)
                return best.landmarks.numpy()

        except ImportError:
            from facenet_pytorch import MTCNN

            mtcnn = MTCNN(keep_all=True, device=device)
            self.name = "facenet-pytorch MTCNN"

            def run(image: np.ndarray) -> np.ndarray | None:
                boxes, _, points = mtcnn.detect(Image.fromarray(image), landmarks=True)
                if boxes is None:
                    return None
                areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                return np.asarray(points[int(np.argmax(areas))], dtype=np.float32)

        self._run = run

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        return self._run(image)


def list_relative(root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[str]:
    exts = {e.lower() for e in extensions}
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def compute_landmarks(
    root: str | Path,
    out_path: str | Path | None = None,
    *,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    device: str = "cpu",
    progress: bool = False,
) -> Path:
    """Detect landmarks for every image under `root` and write the JSON file (atomically).

    Entries already in an existing file are kept (keyed by relative path), so the command can be
    re-run after adding images. Returns the file's path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {str(root)!r} is not a folder")
    out_path = Path(out_path) if out_path else default_landmarks_path(root)
    known: dict[str, list | None] = {}
    if out_path.is_file():
        known = read_landmarks_file(out_path)
    files = list_relative(root, extensions)
    todo = [f for f in files if f not in known]
    detector = _Detector(device) if todo else None
    iterator = todo
    if progress:
        from tqdm import tqdm

        iterator = tqdm(todo, desc="landmarks", unit="img")
    for rel in iterator:
        with Image.open(root / rel) as im:
            square = _centre_square(im.convert("RGB"))
            side = square.size[0]
            points = detector(np.asarray(square))
        known[rel] = None if points is None else (np.asarray(points, dtype=np.float64) / side).round(6).tolist()
    payload = {
        "format": FORMAT,
        "version": 1,
        "points": list(POINTS),
        "coordinates": "fraction of the centre square crop (x right, y down)",
        "detector": detector.name if detector else "",
        "landmarks": {k: known[k] for k in sorted(known)},
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temp = out_path.with_name(f".{out_path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temp.write_text(json.dumps(payload, indent=0))
    os.replace(temp, out_path)
    return out_path


def read_landmarks_file(path: str | Path) -> dict[str, list | None]:
    """{relative path: [[x, y] x 5] fractions or None} from a landmarks JSON file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"landmarks file {str(path)!r} does not exist; write it with "
            f"`python -m training landmarks --root DATASET` or set data.landmarks to a file"
        )
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "landmarks" not in payload:
        raise ValueError(f"{str(path)!r} is not a {FORMAT} file (see training/landmarks.py for the format)")
    table = payload["landmarks"]
    for key, value in table.items():
        if value is not None and np.asarray(value).shape != (5, 2):
            raise ValueError(f"{str(path)!r}: entry {key!r} must be 5 [x, y] pairs or null, got {value!r}")
    return table


class LandmarkTable:
    """Landmarks of a dataset's images by relative path, in pixels of the training size."""

    def __init__(self, table: dict[str, list | None], size: int) -> None:
        self.table = table
        self.size = size
        self._fallback = fallback_landmarks() * size

    @classmethod
    def from_file(cls, path: str | Path, size: int) -> LandmarkTable:
        return cls(read_landmarks_file(path), size)

    def missing(self, names: Sequence[str]) -> list[str]:
        """Names that have no entry at all (the file was made for another file list)."""
        return [n for n in names if n not in self.table]

    def undetected(self) -> list[str]:
        return [k for k, v in self.table.items() if v is None]

    def __call__(self, name: str) -> torch.Tensor:
        """[5, 2] float32 pixels (x, y) for image `name` at the training size."""
        value = self.table[name]
        if value is None:
            return self._fallback.clone()
        return torch.tensor(value, dtype=torch.float32) * self.size


def add_arguments(parser) -> None:
    parser.add_argument("--root", required=True, help="dataset folder of face images")
    parser.add_argument("--out", default="", help="JSON file to write (default: <root>_landmarks5.json)")
    parser.add_argument("--device", default="cpu")


def main(args) -> int:
    path = compute_landmarks(args.root, args.out or None, device=args.device, progress=True)
    table = read_landmarks_file(path)
    undetected = [k for k, v in table.items() if v is None]
    print(f"wrote {path}: {len(table)} images, {len(undetected)} without a face (template used)")
    for name in undetected[:10]:
        print("  no face:", name)
    return 0
