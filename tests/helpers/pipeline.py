"""Faces built from known landmarks, for pipeline tests that must not depend on a detector."""

from __future__ import annotations

import math

import torch

from restoreformer_node.faces.template import TEMPLATE_512, similarity_transform
from restoreformer_node.faces.types import DetectedFace, Faces


def landmarks_at(cx: float, cy: float, face_width: float, angle_deg: float = 0.0) -> torch.Tensor:
    """5 template landmarks placed by a similarity: eye-to-eye distance ~ face_width * 0.42,
    centred near (cx, cy), rotated by angle_deg. [5, 2] float64."""
    scale = face_width / 300.0
    a = math.radians(angle_deg)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    centred = TEMPLATE_512 - torch.tensor([256.0, 300.0], dtype=torch.float64)
    return (centred * scale) @ rot.T + torch.tensor([cx, cy], dtype=torch.float64)


def face_from_landmarks(image_index: int, landmarks: torch.Tensor, score: float = 0.99) -> DetectedFace:
    landmarks = landmarks.to(torch.float64)
    affine = similarity_transform(landmarks, TEMPLATE_512)
    lo, hi = landmarks.amin(0), landmarks.amax(0)
    pad = (hi - lo).max() * 0.6
    box = torch.cat([lo - pad, hi + pad]).float()
    return DetectedFace(image_index, box, landmarks.float(), score, affine)


def make_faces(items, batch_size: int, height: int, width: int, detector: str = "synthetic") -> Faces:
    """items: iterable of (image_index, landmarks [5, 2])."""
    faces = tuple(face_from_landmarks(i, lm) for i, lm in items)
    return Faces(faces, batch_size, height, width, detector=detector)

