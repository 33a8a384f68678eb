"""The 5-point face template of the released inference and similarity-transform estimation."""

from __future__ import annotations

import torch

CROP_SIZE = 512

# Left eye, right eye, nose tip, left mouth corner, right mouth corner, for a 512x512 crop
# (facexlib's FaceRestoreHelper template, used by the official RestoreFormer inference).
TEMPLATE_512 = torch.tensor(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=torch.float64,
)


def template_points(crop_size: int = CROP_SIZE) -> torch.Tensor:
    """The template scaled to a square crop of `crop_size` pixels, [5, 2] float64."""
    return TEMPLATE_512 * (crop_size / CROP_SIZE)


def similarity_transform(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transforms (rotation, uniform scale, translation) src -> dst.

    src, dst: [..., N, 2] point sets. Returns [..., 2, 3] matrices A with dst ~= A @ [x, y, 1].
    Solved in float64 as the linear system in (a, b, tx, ty) with A = [[a, -b, tx], [b, a, ty]],
    the same model OpenCV's estimateAffinePartial2D fits (without its RANSAC).
    """
    src = src.to(torch.float64)
    dst = dst.to(torch.float64)
    x, y = src[..., 0], src[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, -y, one, zero], dim=-1)  # u = a x - b y + tx
    rows_v = torch.stack([y, x, zero, one], dim=-1)  # v = b x + a y + ty
    design = torch.cat([rows_u, rows_v], dim=-2)  # [..., 2N, 4]
    target = torch.cat([dst[..., 0], dst[..., 1]], dim=-1).unsqueeze(-1)  # [..., 2N, 1]
    params = torch.linalg.lstsq(design, target).solution.squeeze(-1)  # [..., 4]
    a, b, tx, ty = params.unbind(-1)
    return torch.stack(
        [torch.stack([a, -b, tx], dim=-1), torch.stack([b, a, ty], dim=-1)], dim=-2
    )


def invert_affine(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of [..., 2, 3] affine matrices."""
    linear = matrix[..., :2]
    inv = torch.linalg.inv(linear)
    shift = -(inv @ matrix[..., 2:]).squeeze(-1)
    return torch.cat([inv, shift.unsqueeze(-1)], dim=-1)
