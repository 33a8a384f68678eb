"""The faces an inspection looks at: aligned crops given directly, or an image's faces aligned here.

Inspection works on aligned square crops [N, 3, S, S] in 0..1. They come from an IMAGE of crops
(e.g. Align Faces' output) or from an image plus its faces (found with the default detector when
none are given); `paste_mask` carries a crop-space mask back into the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..faces.detection import faces_or_detect
from ..faces.pipeline import align_faces, paste_crops
from ..faces.types import Faces


@dataclass(frozen=True)
class FaceBatch:
    """Face crops [N, 3, S, S] in 0..1 on the compute device, and where they came from."""

    crops: torch.Tensor
    image: torch.Tensor | None = None  # [B, H, W, C] the crops were aligned from (None: crops given)
    faces: Faces | None = None
    notes: tuple[str, ...] = ()  # how the faces were found, when that is worth saying

    @property
    def size(self) -> int:
        return self.crops.shape[-1]

    def with_notes(self, text: str) -> str:
        """`text` followed by this batch's notes, one per line."""
        return "\n".join([text, *self.notes])


def crops_from_image(crops: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """An IMAGE of aligned crops [N, S, S, C] (C = 1..4) -> [N, 3, S, S] RGB float32 on `device`."""
    if crops.ndim != 4 or crops.shape[0] == 0 or crops.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"crops: expected an IMAGE batch [N, S, S, C] of face crops, got {tuple(crops.shape)}")
    if crops.shape[1] != crops.shape[2]:
        raise ValueError(
            f"crops: aligned face crops are square; got {crops.shape[2]}x{crops.shape[1]}. Connect the "
            "crops output of Align Faces, or connect the image (and faces) instead."
        )
    if not crops.is_floating_point():
        crops = crops.float() / 255.0
    rgb = crops[..., :3] if crops.shape[-1] >= 3 else crops[..., :1].expand(-1, -1, -1, 3)
    return rgb.to(device, torch.float32).permute(0, 3, 1, 2).contiguous()


def gather_faces(
    device: torch.device | str,
    crops: torch.Tensor | None = None,
    image: torch.Tensor | None = None,
    faces: Faces | None = None,
    required: bool = True,
) -> FaceBatch | None:
    """The faces to inspect: `crops` if given, else the faces of `image` aligned to the template
    (the given `faces`, or the default detector's). None when neither is given and not `required`."""
    if crops is not None:
        return FaceBatch(crops_from_image(crops, device))
    if image is None:
        if required:
            raise ValueError(
                "connect face crops (crops, e.g. from Align Faces) or an image (with faces from Detect Faces)"
            )
        return None
    found, notes = faces_or_detect(image, faces, device=device)
    if len(found) == 0:
        raise ValueError(
            "image: no face was found to inspect; connect faces from Detect Faces with a lower threshold, "
            "or connect aligned crops"
        )
    aligned = align_faces(image, found, device=device)  # [N, S, S, 3]
    return FaceBatch(aligned.permute(0, 3, 1, 2).to(device, torch.float32).contiguous(), image, found, tuple(notes))


def paste_mask(batch: FaceBatch, mask: torch.Tensor) -> torch.Tensor:
    """A crop-space mask [N, S, S] -> image space [B, H, W]: each face's mask warped back by its
    transform and weighted by the paste mask Face Restore uses (0 away from faces). Crops given
    directly have no image: the mask is returned as it is."""
    if batch.image is None or batch.faces is None:
        return mask
    image = batch.image
    blank = torch.zeros(image.shape[0], image.shape[1], image.shape[2], 3, device=image.device)
    grey = mask.unsqueeze(-1).expand(-1, -1, -1, 3).to(image.device)
    pasted, _ = paste_crops(blank, grey, batch.faces)
    return pasted[..., 0].clamp(0, 1)
