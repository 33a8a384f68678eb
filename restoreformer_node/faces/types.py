"""The FACES value: what detection hands to alignment, restoration, paste-back and inspection."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .template import CROP_SIZE


@dataclass(frozen=True)
class DetectedFace:
    """One face in one image of a batch. Coordinates are pixels of the source image."""

    image_index: int  # index of the image in the IMAGE batch
    box: torch.Tensor  # [4] float32: x0, y0, x1, y1
    landmarks: torch.Tensor  # [5, 2] float32: left eye, right eye, nose, left / right mouth corner
    score: float  # detector confidence in [0, 1]
    affine: torch.Tensor  # [2, 3] float64: source pixel coords -> crop (template) pixel coords

    @property
    def size(self) -> float:
        """Side of the box's bounding square (the larger of width and height)."""
        x0, y0, x1, y1 = self.box.tolist()
        return max(x1 - x0, y1 - y0)


@dataclass(frozen=True)
class Faces:
    """All faces found in an IMAGE batch (the node type `RF_FACES`).

    `faces` is in a stable order (by image index, then the selection's order). `notes` say what
    the detection could not do as asked (a downscaled copy, a face index not found); images without
    faces are `images_without_faces`.
    """

    faces: tuple[DetectedFace, ...]
    batch_size: int  # images in the batch the faces were found in
    image_height: int
    image_width: int
    crop_size: int = CROP_SIZE
    detector: str = ""  # which detector produced them, for messages
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.faces)

    def for_image(self, index: int) -> tuple[DetectedFace, ...]:
        return tuple(f for f in self.faces if f.image_index == index)

    @property
    def images_without_faces(self) -> tuple[int, ...]:
        """Indices of the batch's images in which no face was found (or none was selected)."""
        found = {f.image_index for f in self.faces}
        return tuple(i for i in range(self.batch_size) if i not in found)

    def no_face_line(self, what: str = "no face found") -> str | None:
        """One line naming the images without faces ("... in image(s) 0, 3 of 8"), or None."""
        missing = self.images_without_faces
        if not missing:
            return None
        by = f" by {self.detector}" if self.detector else ""
        if len(missing) == self.batch_size:
            where = "the image" if self.batch_size == 1 else f"any of the {self.batch_size} images"
        else:
            listed = ", ".join(str(i) for i in missing[:20]) + (" ..." if len(missing) > 20 else "")
            where = f"image(s) {listed} of {self.batch_size}"
        return f"{what}{by} in {where}"

    def affines(self) -> torch.Tensor:
        """[N, 2, 3] float64 transforms of all faces (empty [0, 2, 3] when none)."""
        if not self.faces:
            return torch.zeros(0, 2, 3, dtype=torch.float64)
        return torch.stack([f.affine for f in self.faces])

    def resized(self, height: int, width: int) -> Faces:
        """The same faces on the images resized to width x height (e.g. upscaled): boxes, landmarks
        and affines follow the resize (pixel centres: x' = (x + 0.5) * W'/W - 0.5)."""
        if (height, width) == (self.image_height, self.image_width):
            return self
        sx, sy = width / self.image_width, height / self.image_height
        scale = torch.tensor([sx, sy], dtype=torch.float64)
        # new pixels -> old pixels, as a 3x3 matrix, to compose with each face's affine
        back = torch.tensor([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5], [0, 0, 1]], dtype=torch.float64)
        moved = []
        for f in self.faces:
            box = ((f.box.to(torch.float64).view(2, 2) + 0.5) * scale - 0.5).view(4)
            landmarks = (f.landmarks.to(torch.float64) + 0.5) * scale - 0.5
            moved.append(
                replace(f, box=box.to(f.box.dtype), landmarks=landmarks.to(f.landmarks.dtype), affine=f.affine.to(torch.float64) @ back)
            )
        return replace(self, faces=tuple(moved), image_height=height, image_width=width)
