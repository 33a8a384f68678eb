"""Faces given as boxes (Impact Pack's SEGS and BBOX_DETECTOR): boxes alone cannot be aligned, so
the pack's own detector runs inside each box and lends it the 5 landmarks.

Every box becomes a square window around its centre (WINDOW times the box's longer side, padded
with black beyond the image), resized to WINDOW_SIDE pixels; all windows are searched in one
batched detector call. Of the faces found in a window, the one whose landmarks' centre lies inside
the box and whose box overlaps the given box most is kept; a box without one gives no face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .detectors import Detection, FaceDetector

WINDOW = 2.0  # window side / the box's longer side: the context detectors need around a face
WINDOW_SIDE = 320  # pixels the window is resized to: the face then spans about 160 px
MIN_BOX_SIDE = 4.0  # smaller boxes are not looked into


@dataclass(frozen=True)
class BoxLandmarks:
    """What the detector found inside boxes given for one image (all on the CPU)."""

    found: Detection  # the boxes that got landmarks: the given box, the landmarks, the detector's score
    kept: tuple[int, ...]  # positions (in the given boxes) of the rows of `found`
    missed: tuple[int, ...]  # positions of the boxes in which no face was found


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes a [N, 4] with one box b [4] (x0, y0, x1, y1) -> [N]."""
    x0 = torch.maximum(a[:, 0], b[0])
    y0 = torch.maximum(a[:, 1], b[1])
    x1 = torch.minimum(a[:, 2], b[2])
    y1 = torch.minimum(a[:, 3], b[3])
    inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[2] - b[0]).clamp(min=0) * (b[3] - b[1]).clamp(min=0)
    return inter / (area_a + area_b - inter).clamp(min=1e-9)


def window_of(box: torch.Tensor) -> tuple[int, int, int]:
    """(x0, y0, side) of the square source window searched for the face in `box`."""
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(1, math.ceil(WINDOW * max(x1 - x0, y1 - y0)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return math.floor(cx - side / 2 + 0.5), math.floor(cy - side / 2 + 0.5), side


def cut_window(image: torch.Tensor, x0: int, y0: int, side: int) -> torch.Tensor:
    """image [H, W, C] -> the window [WINDOW_SIDE, WINDOW_SIDE, C] (black beyond the image)."""
    H, W, C = image.shape
    window = torch.zeros(side, side, C, dtype=torch.float32, device=image.device)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(W, x0 + side), min(H, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1].float()
    resized = F.interpolate(
        window.permute(2, 0, 1)[None], size=(WINDOW_SIDE, WINDOW_SIDE), mode="bilinear",
        antialias=side > WINDOW_SIDE, align_corners=False,
    )
    return resized[0].permute(1, 2, 0)


def landmarks_in_boxes(
    detector: FaceDetector, images: torch.Tensor, boxes: list[torch.Tensor]
) -> list[BoxLandmarks]:
    """Landmarks for the faces in `boxes` (one [n, 4] tensor of x0, y0, x1, y1 per image of
    images [B, H, W, C], pixels of those images). One batched detector call for all boxes."""
    if len(boxes) != images.shape[0]:
        raise ValueError(f"{len(boxes)} lists of boxes for {images.shape[0]} images")
    jobs: list[tuple[int, int, tuple[int, int, int]]] = []  # (image, box position, window)
    windows = []
    for b, image_boxes in enumerate(boxes):
        for k, box in enumerate(image_boxes.to(torch.float64)):
            if min(float(box[2] - box[0]), float(box[3] - box[1])) < MIN_BOX_SIDE:
                continue
            win = window_of(box)
            jobs.append((b, k, win))
            windows.append(cut_window(images[b], *win))
    found = detector.detect(torch.stack(windows), max_side=WINDOW_SIDE) if windows else []
    rows: list[list[tuple[int, torch.Tensor, torch.Tensor, float]]] = [[] for _ in boxes]
    for (b, k, (x0, y0, side)), candidates in zip(jobs, found):
        if not len(candidates):
            continue
        box = boxes[b][k].to(torch.float32)
        scale = side / WINDOW_SIDE
        landmarks = (candidates.landmarks + 0.5) * scale - 0.5 + torch.tensor([x0, y0], dtype=torch.float32)
        cand_boxes = (candidates.boxes.view(-1, 2, 2) + 0.5) * scale - 0.5 + torch.tensor([x0, y0], dtype=torch.float32)
        centre = landmarks.mean(dim=1)
        inside = (centre[:, 0] >= box[0]) & (centre[:, 0] <= box[2]) & (centre[:, 1] >= box[1]) & (centre[:, 1] <= box[3])
        if not bool(inside.any()):
            continue
        overlap = box_iou(cand_boxes.view(-1, 4), box).masked_fill(~inside, -1.0)
        best = int(overlap.argmax())
        rows[b].append((k, box, landmarks[best], float(candidates.scores[best])))
    results = []
    for b, image_boxes in enumerate(boxes):
        kept = tuple(k for k, *_ in rows[b])
        missed = tuple(k for k in range(len(image_boxes)) if k not in kept)
        if rows[b]:
            detection = Detection(
                torch.stack([r[1] for r in rows[b]]),
                torch.stack([r[2] for r in rows[b]]),
                torch.tensor([r[3] for r in rows[b]], dtype=torch.float32),
            )
        else:
            detection = Detection.empty()
        results.append(BoxLandmarks(detection, kept, missed))
    return results
