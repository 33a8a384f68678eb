"""Impact Pack's SEGS, built and read by its contract, without importing Impact Pack.

SEGS is `((height, width), [SEG, ...])`: the size of the image the segments were found in and one
SEG per segment, a namedtuple of

    cropped_image        [1, h, w, C] float tensor: the image inside crop_region (or None)
    cropped_mask         numpy float32 [h, w] in 0..1: the segment inside crop_region
    confidence           the detector's confidence
    crop_region          [x0, y0, x1, y1] Python ints, end exclusive, inside the image
    bbox                 numpy float32 [x0, y0, x1, y1], pixels of the image
    label                a string ("face")
    control_net_wrapper  None

Impact's consumers index `cropped_image[i]`, call `.astype` on `cropped_mask` and read `segs[0]`
as (height, width), so exactly these types are produced. When Impact Pack is loaded in the same
process its SEG class is used (it is a namedtuple of the same fields either way).
"""

from __future__ import annotations

import sys
from collections import namedtuple
from collections.abc import Sequence

import numpy as np
import torch

from ..options import DEFAULT_DETECTOR
from .boxes import landmarks_in_boxes
from .detection import build_faces
from .detectors import Detection, FaceDetector, as_rgb, load_detector
from .types import Faces

SEG_FIELDS = ("cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label", "control_net_wrapper")
SEG = namedtuple("SEG", SEG_FIELDS, defaults=[None])

FACE_LABEL = "face"
DEFAULT_CROP_FACTOR = 3.0  # Impact's default for its BBOX detectors


def seg_class() -> type:
    """Impact Pack's SEG when Impact is already loaded (never imported from here), else ours."""
    impact_core = sys.modules.get("impact.core")
    cls = getattr(impact_core, "SEG", None)
    if cls is not None and tuple(getattr(cls, "_fields", ())) == SEG_FIELDS:
        return cls
    return SEG


def shift_inside(limit: int, start: int, size: float) -> tuple[int, int]:
    """A span of `size` starting at `start`, moved (not clipped) to lie inside [0, limit]; it only
    shrinks when it is longer than the image. Impact's rule, so crop regions match its own."""
    if start < 0:
        return 0, int(min(limit, size))
    if start + size > limit:
        return int(max(0, limit - size)), int(limit)
    return int(start), int(min(limit, start + size))


def crop_region(width: int, height: int, bbox: Sequence[float], crop_factor: float) -> list[int]:
    """[x0, y0, x1, y1] (ints, end exclusive): the box scaled by crop_factor about its centre and
    shifted inside the image, as Impact Pack's detectors make it."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    crop_w, crop_h = (x1 - x0) * crop_factor, (y1 - y0) * crop_factor
    left = int(x0 + (x1 - x0) / 2 - crop_w / 2)
    top = int(y0 + (y1 - y0) / 2 - crop_h / 2)
    rx0, rx1 = shift_inside(width, left, crop_w)
    ry0, ry1 = shift_inside(height, top, crop_h)
    return [rx0, ry0, rx1, ry1]


def box_mask(region: Sequence[int], bbox: Sequence[float]) -> np.ndarray:
    """float32 [h, w] of the crop region: 1 inside the box (rounded to pixels), 0 elsewhere (what
    Impact's BBOX detectors put in cropped_mask)."""
    rx0, ry0, rx1, ry1 = region
    mask = np.zeros((ry1 - ry0, rx1 - rx0), dtype=np.float32)
    bx0, by0, bx1, by1 = (round(float(v)) for v in bbox)
    mask[max(0, by0 - ry0) : max(0, by1 - ry0), max(0, bx0 - rx0) : max(0, bx1 - rx0)] = 1.0
    return mask


def faces_to_segs(
    image: torch.Tensor, faces: Faces, crop_factor: float = DEFAULT_CROP_FACTOR, label: str = FACE_LABEL
) -> tuple[tuple[int, int], list]:
    """SEGS of the faces of a one-image batch [1, H, W, C]: one SEG per face, in the faces' order."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(
            f"SEGS describe one image, got a batch of {image.shape[0] if image.ndim == 4 else '?'}: "
            "detect and convert one image at a time (e.g. through Impact's Image batch to Image List)"
        )
    if crop_factor < 1.0:
        raise ValueError(f"crop_factor must be at least 1 (the face box itself), got {crop_factor}")
    _, H, W, _ = image.shape
    if (faces.batch_size, faces.image_height, faces.image_width) != (1, H, W):
        raise ValueError(
            f"the faces were found in {faces.batch_size} image(s) of {faces.image_width}x{faces.image_height}, "
            f"but the image is {W}x{H}: connect the image the faces were detected in"
        )
    make = seg_class()
    segs = []
    for face in faces.faces:
        bbox = face.box.to(torch.float32).numpy().copy()
        region = crop_region(W, H, bbox, crop_factor)
        rx0, ry0, rx1, ry1 = region
        segs.append(
            make(
                cropped_image=image[:, ry0:ry1, rx0:rx1, :],
                cropped_mask=box_mask(region, bbox),
                confidence=np.float32(face.score),
                crop_region=region,
                bbox=bbox,
                label=label,
                control_net_wrapper=None,
            )
        )
    return ((int(H), int(W)), segs)


def check_segs(segs: object, name: str = "segs") -> tuple[tuple[int, int], list]:
    """A SEGS value read by its contract; anything else gets one error naming the input."""
    ok = (
        isinstance(segs, (tuple, list)) and len(segs) == 2
        and isinstance(segs[0], (tuple, list, torch.Size)) and len(segs[0]) >= 2
        and isinstance(segs[1], (list, tuple))
    )
    if ok:
        for seg in segs[1]:
            if not all(hasattr(seg, f) for f in ("bbox", "crop_region")):
                ok = False
                break
    if not ok:
        raise ValueError(
            f"{name}: expected Impact Pack SEGS ((height, width), [SEG, ...]), got {type(segs).__name__}; "
            "connect a SEGS output (e.g. BBOX Detector (SEGS) or Faces to SEGS)"
        )
    return (int(segs[0][0]), int(segs[0][1])), list(segs[1])


def seg_box(seg) -> torch.Tensor:
    """The SEG's bbox as float64 [4] x0, y0, x1, y1 (its crop region when the bbox is missing)."""
    box = seg.bbox if seg.bbox is not None else seg.crop_region
    return torch.as_tensor(np.asarray(box, dtype=np.float64).reshape(-1)[:4])


def segs_boxes(segs, height: int, width: int, name: str = "segs") -> torch.Tensor:
    """[n, 4] float64 boxes of a SEGS found in a height x width image (scaled when SEGS carry
    another size, as Impact's own consumers do)."""
    (seg_h, seg_w), items = check_segs(segs, name)
    boxes = torch.stack([seg_box(s) for s in items]) if items else torch.zeros(0, 4, dtype=torch.float64)
    if (seg_h, seg_w) != (height, width) and seg_h > 0 and seg_w > 0:
        boxes = boxes * torch.tensor([width / seg_w, height / seg_h] * 2, dtype=torch.float64)
    return boxes


def boxes_to_faces(
    detector: FaceDetector,
    images: torch.Tensor,
    boxes: list[torch.Tensor],
    source: str,
    notes: tuple[str, ...] = (),
) -> tuple[Faces, list[Detection]]:
    """FACES for given boxes (one [n, 4] tensor per image): landmarks from `detector` inside each
    box (faces.boxes). Returns the faces and, per image, the Detection they were built from."""
    B, H, W, _ = images.shape
    per_image = landmarks_in_boxes(detector, images, boxes)
    notes = list(notes)
    for b, result in enumerate(per_image):
        if result.missed:
            where = f"image {b}: " if B > 1 else ""
            listed = ", ".join(map(str, result.missed[:20])) + (" ..." if len(result.missed) > 20 else "")
            notes.append(f"{where}no face found by {detector.name} inside box(es) {listed} of {len(boxes[b])}")
    detections = [r.found for r in per_image]
    name = f"{source}, landmarks by {detector.name}"
    return build_faces(detections, H, W, name, tuple(notes)), detections


def segs_to_faces(detector: FaceDetector, images: torch.Tensor, segs) -> Faces:
    """FACES for a SEGS: every SEG's box in every image of the batch (Impact applies one SEGS to
    all frames), landmarks from `detector` inside it, in the SEGS' order."""
    B, H, W, _ = images.shape
    boxes = segs_boxes(segs, H, W)
    notes = ()
    if not len(boxes):
        notes = ("the SEGS hold no segment",)
    return boxes_to_faces(detector, images, [boxes] * B, "SEGS", notes)[0]


BBOX_THRESHOLD = 0.5  # Impact's default threshold for its BBOX detectors


def is_bbox_detector(obj: object) -> bool:
    """Impact Pack's BBOX_DETECTOR contract: detect(image, threshold, dilation, crop_factor, ...)."""
    return callable(getattr(obj, "detect", None)) and callable(getattr(obj, "detect_combined", None))


class BoxDetector(FaceDetector):
    """An Impact Pack BBOX_DETECTOR (e.g. a YOLO face model) as a face detector: it finds the boxes,
    `landmarks` (the pack's detector) finds the 5 landmarks inside each box. A face's score is the
    landmark detector's confidence, so min_score means the same whichever detector found the box."""

    kind = "bbox_detector"

    def __init__(self, bbox_detector: object, landmarks: FaceDetector, threshold: float = BBOX_THRESHOLD):
        if not is_bbox_detector(bbox_detector):
            raise TypeError(
                f"expected an Impact Pack BBOX_DETECTOR (with detect and detect_combined), got "
                f"{type(bbox_detector).__name__}"
            )
        super().__init__(landmarks.device)
        self.bbox_detector = bbox_detector
        self.landmarks = landmarks
        self.threshold = threshold
        self.name = f"BBOX_DETECTOR ({type(bbox_detector).__name__}), landmarks by {landmarks.name}"

    def _detect_chunk(self, rgb255: torch.Tensor) -> list[Detection]:  # detect() is overridden
        raise NotImplementedError("BoxDetector.detect works on full-size images")

    def boxes(self, images: torch.Tensor) -> list[torch.Tensor]:
        """[n, 4] boxes per image, from the BBOX_DETECTOR called as Impact's own nodes call it (one
        [1, H, W, 3] CPU image at a time; no dilation; crop factor 1; drop size 1)."""
        boxes = []
        for b in range(images.shape[0]):
            image = as_rgb(images[b : b + 1]).cpu()
            segs = self.bbox_detector.detect(image, self.threshold, 0, 1.0, 1, None)
            boxes.append(segs_boxes(segs, images.shape[1], images.shape[2], "the BBOX_DETECTOR's result"))
        return boxes

    def detect(self, images, max_side=None, progress=None) -> list[Detection]:
        boxes = self.boxes(images)
        if progress is not None:
            progress(images.shape[0], images.shape[0])
        return [r.found for r in landmarks_in_boxes(self.landmarks, images, boxes)]


def as_face_detector(detector: object, device: torch.device | str | None = None, name: str = "detector"):
    """The pack's FaceDetector for a detector input: one of ours as is, an Impact Pack BBOX_DETECTOR
    with MTCNN landmarks inside its boxes, None as None. Anything else: one error naming the input."""
    if detector is None or isinstance(detector, FaceDetector):
        return detector
    if is_bbox_detector(detector):
        return BoxDetector(detector, load_detector(DEFAULT_DETECTOR, device=device))
    raise TypeError(
        f"{name}: expected a face detector from Load Face Detector or an Impact Pack BBOX_DETECTOR "
        f"(e.g. UltralyticsDetectorProvider's bbox output), got {type(detector).__name__}"
    )
