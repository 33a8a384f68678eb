"""Face detection for the pipeline: run a detector, select and order faces, build the FACES value.

    detector = load_detector("mtcnn", device=device)            # or a RetinaFace kind + weight path
    faces = find_faces(detector, images, FaceSelection(mode="largest"))
    faces.faces[0].affine                                         # source pixels -> 512 template

Selection works per image (for a video batch, "largest" keeps the largest face of every frame and
index "0" the first face of every frame, in the chosen order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..options import DEFAULT_DETECTOR, DETECTORS, FACE_ORDERS, FACE_SELECT_MODES
from .detectors import (
    DEFAULT_MAX_SIDE,
    MIN_IMAGE_SIDE,
    Detection,
    DetectorWeightsMissing,
    FaceDetector,
    clear_detector_cache,
    load_detector,
    missing_weights_message,
    needs_weights,
    weight_file_name,
)
from .detectors.base import check_images, detection_size
from .template import CROP_SIZE, similarity_transform, template_points
from .types import DetectedFace, Faces


def parse_indices(text: str) -> tuple[int, ...]:
    """ "0,2" -> (0, 2); "1-3" -> (1, 2, 3); "-1" -> (-1,) (the last face); "" -> ().

    Raises ValueError naming the input and the accepted format.
    """
    indices: list[int] = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if not part:
            continue
        try:
            if "-" in part[1:]:  # a range a-b (a leading '-' is a negative index)
                cut = part.index("-", 1)
                first, last = int(part[:cut]), int(part[cut + 1 :])
                if first < 0 or last < first:
                    raise ValueError
                indices.extend(range(first, last + 1))
            else:
                indices.append(int(part))
        except ValueError:
            raise ValueError(
                f"face index list {text!r}: {part!r} is not an index; write indices from 0 separated "
                f"by commas, ranges as 1-3, -1 for the last face (e.g. '0,2' or '0-2,-1')"
            ) from None
    return tuple(dict.fromkeys(indices))  # without repeats, first occurrence kept


@dataclass(frozen=True)
class FaceSelection:
    """Which faces of each image to keep, and in which order.

    mode: "all", "largest" (one per image) or "by index" (positions in the ordered list, see
        parse_indices; negative counts from the end).
    min_size: smallest box side (the larger of width and height) in source pixels.
    min_score: smallest detector confidence.
    order: "left to right" (box centre x, then y) or "largest first" (then left to right).
    """

    mode: str = "all"
    indices: tuple[int, ...] = ()
    min_size: float = 0.0
    min_score: float = 0.0
    order: str = "left to right"

    def __post_init__(self):
        if self.mode not in FACE_SELECT_MODES:
            raise ValueError(f"selection mode {self.mode!r}: choose one of {', '.join(FACE_SELECT_MODES)}")
        if self.order not in FACE_ORDERS:
            raise ValueError(f"face order {self.order!r}: choose one of {', '.join(FACE_ORDERS)}")
        if self.mode == "by index" and not self.indices:
            raise ValueError("selection 'by index' needs at least one face index (e.g. '0' or '0,2')")


def order_faces(found: Detection, order: str) -> Detection:
    """The same faces in a stable order: left to right, or largest first (ties left to right)."""
    if len(found) < 2:
        return found
    cx = ((found.boxes[:, 0] + found.boxes[:, 2]) / 2).tolist()
    cy = ((found.boxes[:, 1] + found.boxes[:, 3]) / 2).tolist()
    size = found.sizes().tolist()
    if order == "left to right":
        keys = [(cx[i], cy[i]) for i in range(len(found))]
    elif order == "largest first":
        keys = [(-size[i], cx[i], cy[i]) for i in range(len(found))]
    else:
        raise ValueError(f"face order {order!r}: choose one of {', '.join(FACE_ORDERS)}")
    return found.take(sorted(range(len(found)), key=keys.__getitem__))


@dataclass(frozen=True)
class ImageSelection:
    """How one image's faces were chosen: the candidates that passed min_score and min_size, in
    the selection's order (their positions are the indices "by index" refers to), and the
    positions kept."""

    ordered: Detection
    chosen: tuple[int, ...]
    found: int  # faces the detector reported before filtering
    notes: tuple[str, ...] = ()

    def kept(self) -> Detection:
        return self.ordered.take(list(self.chosen))


def select_faces(found: Detection, selection: FaceSelection) -> ImageSelection:
    """Filter by score and size, order, then keep all / the largest / the listed positions."""
    notes: list[str] = []
    total = len(found)
    if total:
        keep = (found.scores >= selection.min_score) & (found.sizes() >= selection.min_size)
        found = found.take(keep.nonzero().flatten())
    ordered = order_faces(found, selection.order)
    count = len(ordered)
    if selection.mode == "all":
        chosen = list(range(count))
    elif selection.mode == "largest":
        # argmax returns the first of equal maxima: ties go to the first in the chosen order.
        chosen = [int(ordered.sizes().argmax())] if count else []
    else:
        chosen = list(dict.fromkeys(i % count for i in selection.indices if -count <= i < count))
        missing = [i for i in selection.indices if not -count <= i < count]
        if missing and count:  # with no candidate at all, the note below (or the no-face line) says it
            notes.append(f"face index {', '.join(map(str, missing))} not found ({_faces(count)})")
    # One note per image, none that only repeats "no face found": the report's no-face line says that.
    if total and not count:
        notes.append(f"{_faces(total)} found, none passed the minimum score and size")
    return ImageSelection(ordered, tuple(chosen), total, tuple(notes))


def _faces(count: int) -> str:
    return f"{count} face{'s' if count != 1 else ''}"


def build_faces(
    detections: list[Detection],
    image_height: int,
    image_width: int,
    detector: str = "",
    notes: tuple[str, ...] = (),
    crop_size: int = CROP_SIZE,
) -> Faces:
    """The FACES value for already selected detections (one Detection per image, in order).

    Each face's affine is the least-squares similarity from its 5 landmarks to the template
    scaled to `crop_size` (float64, source pixels -> crop pixels).
    """
    dst = template_points(crop_size)
    faces: list[DetectedFace] = []
    for image_index, found in enumerate(detections):
        if not len(found):
            continue
        affines = similarity_transform(found.landmarks.to(torch.float64), dst.expand(len(found), 5, 2))
        for k in range(len(found)):
            faces.append(
                DetectedFace(
                    image_index=image_index,
                    box=found.boxes[k].clone(),
                    landmarks=found.landmarks[k].clone(),
                    score=float(found.scores[k]),
                    affine=affines[k].clone(),
                )
            )
    return Faces(
        faces=tuple(faces),
        batch_size=len(detections),
        image_height=image_height,
        image_width=image_width,
        crop_size=crop_size,
        detector=detector,
        notes=tuple(notes),
    )


def find_faces(
    detector: FaceDetector,
    images: torch.Tensor,
    selection: FaceSelection | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    crop_size: int = CROP_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> Faces:
    """Detect, select and order faces in an IMAGE batch [B, H, W, C] (0..1, C = 1..4, any device).

    Images with no (selected) face are named in `Faces.notes`, as is a downscaled detection copy.
    progress(done, total) is called after each chunk of images (it may raise to interrupt).
    """
    return find_faces_detailed(detector, images, selection, max_side, crop_size, progress)[0]


def find_faces_detailed(
    detector: FaceDetector,
    images: torch.Tensor,
    selection: FaceSelection | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    crop_size: int = CROP_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Faces, list[ImageSelection]]:
    """find_faces, plus each image's ordered candidates and chosen positions (for previews)."""
    selection = selection or FaceSelection()
    images = check_images(images)
    batch, height, width, _ = images.shape
    notes: list[str] = []
    if min(height, width) < MIN_IMAGE_SIDE:
        notes.append(
            f"image {width}x{height} is smaller than {MIN_IMAGE_SIDE} px on a side: too small to search for faces"
        )
    elif max(height, width) > max_side:
        det_h, det_w = detection_size(height, width, max_side)
        notes.append(f"faces were looked for on a {det_w}x{det_h} copy of the {width}x{height} image")
    per_image = [select_faces(found, selection) for found in detector.detect(images, max_side, progress)]
    for index, chosen in enumerate(per_image):
        prefix = f"image {index}: " if batch > 1 else ""
        notes.extend(prefix + note for note in chosen.notes)
    faces = build_faces([c.kept() for c in per_image], height, width, detector.name, tuple(notes), crop_size)
    return faces, per_image


def faces_or_detect(
    images: torch.Tensor,
    faces: Faces | None = None,
    detector: FaceDetector | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Faces, list[str]]:
    """The faces to work on: `faces` if given, else those `detector` finds, else those the default
    detector (MTCNN, whose weights ship with facenet-pytorch) finds on `device`. Returns (faces,
    notes saying which source was used when that is not obvious)."""
    notes: list[str] = []
    if faces is not None:
        if detector is not None:
            notes.append("both faces and a detector are connected: the connected faces are used")
        return faces, notes
    if detector is None:
        detector = load_detector(DEFAULT_DETECTOR, device=device)
        notes.append(f"neither faces nor a detector connected: detected with {DEFAULT_DETECTOR.upper()}")
    return find_faces(detector, images, progress=progress), notes


def summarize(faces: Faces) -> str:
    """A few lines for people: how many faces, where, with what confidence, and the notes."""
    images = "image" if faces.batch_size == 1 else f"{faces.batch_size} images"
    found = f"{len(faces)} face{'s' if len(faces) != 1 else ''}" if len(faces) else "no face found"
    lines = [f"{found} in {images} ({faces.image_width}x{faces.image_height}) by {faces.detector or 'unknown detector'}"]
    if len(faces) and faces.images_without_faces:
        lines.append(faces.no_face_line())
    for image_index in range(faces.batch_size):
        for number, face in enumerate(faces.for_image(image_index)):
            x0, y0, x1, y1 = face.box.tolist()
            where = f"image {image_index} " if faces.batch_size > 1 else ""
            lines.append(
                f"{where}face {number}: box ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}), "
                f"size {face.size:.0f} px, score {face.score:.3f}"
            )
    lines.extend(f"note: {note}" for note in faces.notes)
    return "\n".join(lines)


__all__ = [
    "DEFAULT_MAX_SIDE",
    "DETECTORS",
    "MIN_IMAGE_SIDE",
    "FACE_ORDERS",
    "FACE_SELECT_MODES",
    "Detection",
    "DetectorWeightsMissing",
    "FaceDetector",
    "FaceSelection",
    "ImageSelection",
    "build_faces",
    "faces_or_detect",
    "clear_detector_cache",
    "find_faces",
    "find_faces_detailed",
    "load_detector",
    "missing_weights_message",
    "needs_weights",
    "order_faces",
    "parse_indices",
    "select_faces",
    "summarize",
    "weight_file_name",
]
