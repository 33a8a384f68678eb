"""The detector interface shared by MTCNN and RetinaFace: image preparation, downscaling, chunking.

A detector sees RGB images on the 0..255 scale at a size it can handle; this module turns any
IMAGE-like batch (1 to 4 channels, any size, any float dtype, any device) into that, and maps the
boxes and landmarks it finds back to the pixels of the original images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Faces smaller than this (in pixels of the detection copy) are not looked for: MTCNN's pyramid
# starts at 20 px, RetinaFace's smallest anchor is 16 px. Smaller images give no faces.
MIN_IMAGE_SIDE = 20

# Longest side of the copy detection runs on; larger images are downscaled first.
DEFAULT_MAX_SIDE = 1280

# Pixels per forward pass of a chunk of the batch (bounds activation memory for video batches).
CHUNK_PIXELS = 16 * 1024 * 1024
# Frames per chunk at most, so a long video batch reports progress and can be interrupted
# every few frames rather than once per 60 small frames.
CHUNK_FRAMES = 8


@dataclass(frozen=True)
class Detection:
    """The faces a detector found in one image, in pixels of that image (pixel centres at integers).

    boxes: [N, 4] float32 x0, y0, x1, y1 (may reach outside the image for faces cut by the border)
    landmarks: [N, 5, 2] float32 x, y of left eye, right eye, nose, left / right mouth corner, where
        "left" is the image's left (smaller x), as in the 512 template
    scores: [N] float32 confidence in [0, 1]
    track_ids: None, or [N] int64 track numbers when the faces were tracked through a video batch
    filled: None, or [N] bool, True for a tracked face the detector missed in this frame (its box
        and landmarks interpolated between the frames around it)
    All live on the CPU (they are small and feed Python-side selection).
    """

    boxes: torch.Tensor
    landmarks: torch.Tensor
    scores: torch.Tensor
    track_ids: torch.Tensor | None = None
    filled: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detection:
        return Detection(torch.zeros(0, 4), torch.zeros(0, 5, 2), torch.zeros(0))

    def take(self, index: torch.Tensor | list[int]) -> Detection:
        index = torch.as_tensor(index, dtype=torch.long)
        return Detection(
            self.boxes[index],
            self.landmarks[index],
            self.scores[index],
            None if self.track_ids is None else self.track_ids[index],
            None if self.filled is None else self.filled[index],
        )

    def sizes(self) -> torch.Tensor:
        """[N] side of each box's bounding square (the larger of width and height)."""
        wh = self.boxes[:, 2:] - self.boxes[:, :2]
        return wh.max(dim=1).values if len(self) else torch.zeros(0)


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Accept [B, H, W, C] or [H, W, C] with C in 1..4; returns the 4-d view. Raises a message
    naming the shape for anything else."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor [B,H,W,C], got {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"images must be [B,H,W,C] with 1 to 4 channels (ComfyUI IMAGE layout), got shape "
            f"{tuple(images.shape)}; convert the image to RGB first"
        )
    return images


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W, C] or [H, W, C] with C in 1..4 -> [B, H, W, 3] float32 in 0..1 (alpha dropped,
    gray repeated, NaN -> 0, integer pixels scaled by their type's maximum), on the same device."""
    images = check_images(images)
    channels = images.shape[-1]
    if channels in (1, 2):  # gray, gray + alpha
        images = images[..., :1].expand(*images.shape[:-1], 3)
    elif channels == 4:  # RGBA: faces are found on the colour
        images = images[..., :3]
    if images.dtype == torch.bool:
        return images.to(torch.float32)
    if not images.is_floating_point():  # 8-bit (or other integer) pixels
        return images.to(torch.float32) / float(torch.iinfo(images.dtype).max)
    return images.to(torch.float32).nan_to_num(0.0).clamp(0.0, 1.0)


def detection_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """Size of the copy detection runs on: the image shrunk so its longest side is <= max_side,
    but never so far that its shortest side drops under MIN_IMAGE_SIDE."""
    if max_side < MIN_IMAGE_SIDE:
        raise ValueError(f"max_side must be at least {MIN_IMAGE_SIDE} pixels, got {max_side}")
    ratio = min(1.0, max_side / max(height, width))
    ratio = max(ratio, min(1.0, MIN_IMAGE_SIDE / min(height, width)))
    return max(1, round(height * ratio)), max(1, round(width * ratio))


def frames_per_chunk(height: int, width: int, max_side: int = DEFAULT_MAX_SIDE) -> int:
    """Images of this size searched in one forward pass. Chunks bound the memory of both the
    full-size copy on the device and the activations. (A detector's numbers for an image can
    differ in the last bits with the other images of its chunk, as any batched float sum does.)"""
    det_h, det_w = detection_size(height, width, max_side)
    return max(1, min(CHUNK_FRAMES, CHUNK_PIXELS // (max(height * width, det_h * det_w))))


class FaceDetector(ABC):
    """A face detector bound to one device. Subclasses implement `_detect_chunk`."""

    kind: str = ""  # "mtcnn", "retinaface_resnet50", ...
    name: str = ""  # for messages

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)

    @abstractmethod
    def _detect_chunk(self, rgb255: torch.Tensor) -> list[Detection]:
        """rgb255: [b, 3, h, w] float32 RGB in 0..255 (whole numbers) on self.device, h and w >=
        MIN_IMAGE_SIDE. Returns one Detection per image in the coordinates of `rgb255`."""

    def detect(
        self,
        images: torch.Tensor,
        max_side: int = DEFAULT_MAX_SIDE,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Detection]:
        """Find faces in every image of a batch.

        images: [B, H, W, C] float in 0..1 (C = 1..4, any device). Returns B Detections in pixels of
        the original images. Images whose shortest side is under MIN_IMAGE_SIDE give no faces.
        progress(done, total) is called after each chunk of images (it may raise to interrupt).
        """
        images = check_images(images)
        batch, height, width, _ = images.shape
        if min(height, width) < MIN_IMAGE_SIDE or batch == 0:
            return [Detection.empty() for _ in range(batch)]
        det_h, det_w = detection_size(height, width, max_side)
        per_chunk = frames_per_chunk(height, width, max_side)
        results: list[Detection] = []
        with torch.inference_mode():
            for start in range(0, batch, per_chunk):
                chunk = images[start : start + per_chunk].to(self.device, non_blocking=True)
                chunk = as_rgb(chunk).permute(0, 3, 1, 2)
                if (det_h, det_w) != (height, width):
                    chunk = F.interpolate(
                        chunk, size=(det_h, det_w), mode="bilinear", antialias=True, align_corners=False
                    )
                # Whole 0..255 values: what the detectors were trained and tested on (8-bit images).
                rgb255 = (chunk * 255.0).round_().clamp_(0.0, 255.0)
                for found in self._detect_chunk(rgb255):
                    results.append(_rescale(found, width / det_w, height / det_h))
                if progress is not None:
                    progress(len(results), batch)
        return results


def _rescale(found: Detection, sx: float, sy: float) -> Detection:
    """Map coordinates of the resized copy back to the original (pixel centres at integers,
    the geometry of bilinear resizing without align_corners)."""
    if sx == 1.0 and sy == 1.0:
        return found
    scale = torch.tensor([sx, sy], dtype=torch.float32)
    boxes = ((found.boxes.view(-1, 2, 2) + 0.5) * scale - 0.5).view(-1, 4)
    landmarks = (found.landmarks + 0.5) * scale - 0.5
    return Detection(boxes, landmarks, found.scores)


def finite_detection(boxes: torch.Tensor, landmarks: torch.Tensor, scores: torch.Tensor) -> Detection:
    """Build a CPU float32 Detection, dropping rows with non-finite values (a detector running in
    reduced precision or on a degenerate image can produce them)."""
    boxes = boxes.detach().to("cpu", torch.float32).reshape(-1, 4)
    landmarks = landmarks.detach().to("cpu", torch.float32).reshape(-1, 5, 2)
    scores = scores.detach().to("cpu", torch.float32).reshape(-1)
    keep = boxes.isfinite().all(dim=1) & landmarks.flatten(1).isfinite().all(dim=1) & scores.isfinite()
    return Detection(boxes[keep], landmarks[keep], scores[keep].clamp(0.0, 1.0))
