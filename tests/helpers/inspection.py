"""Helpers for the inspection tests: square face crops cut from the real test photos.

The inspection functions take aligned 512x512 crops. Their statistics do not depend on how well
a face is aligned, so the library tests cut a fixed square around each photo's face (boxes read
off the photos once) and resize it; the node tests align with the pack's own detector and warp.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# x0, y0, x1, y1 squares around the face in each photo (pixels of the original photo).
ASTRONAUT_FACE = (125, 20, 285, 180)
GRACE_HOPPER_FACE = (112, 90, 412, 390)


def box_crop(photo: np.ndarray, box: tuple[int, int, int, int], size: int = 512) -> torch.Tensor:
    """uint8 HxWx3 photo -> the box resized to [1, 3, size, size] float in 0..1."""
    x0, y0, x1, y1 = box
    patch = torch.from_numpy(np.ascontiguousarray(photo[y0:y1, x0:x1])).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def face_crops(astronaut: np.ndarray, grace_hopper: np.ndarray, size: int = 512) -> torch.Tensor:
    """[2, 3, size, size]: the astronaut's and Grace Hopper's faces."""
    return torch.cat([box_crop(astronaut, ASTRONAUT_FACE, size), box_crop(grace_hopper, GRACE_HOPPER_FACE, size)])
