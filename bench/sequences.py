"""Video sequences made from a still photo along a known camera path (still, pans, a zoom).

Frame t shows the photo through a similarity transform M_t (photo pixels -> frame pixels): the
photo point `centres[t]` at the frame's centre, magnified `scales[t]` times. Because every M_t is
known, the true landmarks of every frame are M_t applied to the photo's landmarks, and any frame
can be warped back onto the photo to compare frames with the motion undone.

Used by bench/flicker.py and by the tracking tests (tests/faces/test_tracking.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from restoreformer_node.faces.alignment import warp_to_crops
from restoreformer_node.faces.template import invert_affine


@dataclass(frozen=True)
class CameraPath:
    """A camera path over a photo: [T, 2] photo points at the frame centre, [T] magnification,
    square frames of `size` pixels."""

    name: str
    centres: torch.Tensor
    scales: torch.Tensor
    size: int

    def __len__(self) -> int:
        return int(self.scales.shape[0])

    def affines(self) -> torch.Tensor:
        """[T, 2, 3] float64 photo pixels -> frame pixels (pixel centres at integers)."""
        s = self.scales.to(torch.float64)
        middle = (self.size - 1) / 2
        m = torch.zeros(len(self), 2, 3, dtype=torch.float64)
        m[:, 0, 0] = m[:, 1, 1] = s
        m[:, :, 2] = middle - s[:, None] * self.centres.to(torch.float64)
        return m

    def speeds(self) -> torch.Tensor:
        """[T - 1] how far the frame content moves between frames, in frame pixels, at the photo
        point that stays in the middle of the path (the image of centres[t])."""
        moved = map_points(self.affines()[1:], self.centres[:-1].to(torch.float64)[:, None])[:, 0]
        return (moved - (self.size - 1) / 2).norm(dim=-1)


def smoothstep(u: torch.Tensor) -> torch.Tensor:
    """0 for u <= 0, 1 for u >= 1, 3u^2 - 2u^3 between (velocity zero at both ends)."""
    u = u.clamp(0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def still(centre, frames: int, size: int, scale: float = 1.0) -> CameraPath:
    centres = torch.tensor(centre, dtype=torch.float64).expand(frames, 2).clone()
    return CameraPath("still", centres, torch.full((frames,), scale, dtype=torch.float64), size)


def pan(centre, frames: int, size: int, distance: float, scale: float = 1.0, name: str = "slow pan") -> CameraPath:
    """Constant speed from centre - distance/2 to centre + distance/2 (photo pixels, along x;
    a quarter of that along y)."""
    u = torch.linspace(-0.5, 0.5, frames, dtype=torch.float64)[:, None]
    centres = torch.tensor(centre, dtype=torch.float64) + u * torch.tensor([distance, distance / 4])
    return CameraPath(name, centres, torch.full((frames,), scale, dtype=torch.float64), size)


def fast_pan(centre, frames: int, size: int, distance: float, moving: int, scale: float = 1.0) -> CameraPath:
    """Still, then a pan over `distance` photo pixels along x in `moving` frames (smoothstep: it
    starts and stops with zero speed; peak speed 1.5 * distance / moving), then still."""
    start = (frames - moving) // 2
    u = smoothstep((torch.arange(frames, dtype=torch.float64) - start) / moving)
    centres = torch.tensor(centre, dtype=torch.float64) + (u[:, None] - 0.5) * torch.tensor([distance, 0.0])
    return CameraPath("fast pan", centres, torch.full((frames,), scale, dtype=torch.float64), size)


def zoom(centre, frames: int, size: int, first: float, last: float) -> CameraPath:
    """Magnification from `first` to `last` at a constant rate (geometric), centre fixed."""
    scales = first * (last / first) ** torch.linspace(0.0, 1.0, frames, dtype=torch.float64)
    centres = torch.tensor(centre, dtype=torch.float64).expand(frames, 2).clone()
    return CameraPath("zoom", centres, scales, size)


def map_points(affines: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """[T, 2, 3] affines applied to [T or 1, P, 2] points -> [T, P, 2] float64."""
    points = points.to(torch.float64)
    return points @ affines[:, :, :2].transpose(1, 2) + affines[:, None, :, 2]


def photo_tensor(photo: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> IMAGE [1, H, W, 3] float32 in 0..1."""
    return torch.from_numpy(np.array(photo, copy=True)).float()[None] / 255.0


def render(photo: np.ndarray | torch.Tensor, path: CameraPath) -> torch.Tensor:
    """The frames of `path` over `photo` (uint8 [H, W, 3] or IMAGE [1, H, W, 3]) -> IMAGE
    [T, size, size, 3] float32 (bilinear; beyond the photo's edge its last pixel repeats)."""
    image = photo_tensor(photo) if isinstance(photo, np.ndarray) else photo
    index = torch.zeros(len(path), dtype=torch.long)
    crops = warp_to_crops(image, index, path.affines(), path.size, channels=3, border="edge").crops
    return crops.permute(0, 2, 3, 1).contiguous()


def undo_motion(frames: torch.Tensor, path: CameraPath, window: torch.Tensor, size: int) -> torch.Tensor:
    """Frames [T, S, S, C] warped back onto the photo: the square photo region `window` (x0, y0,
    side) sampled at size x size pixels -> [T, size, size, C]. With the motion undone, a static
    scene gives the same pixels in every frame, up to resampling."""
    x0, y0, side = (float(v) for v in window)
    to_window = torch.tensor([[size / side, 0.0, 0.0], [0.0, size / side, 0.0]], dtype=torch.float64)
    to_window[:, 2] = -to_window[:, :2] @ torch.tensor([x0, y0], dtype=torch.float64) + (size / side - 1) / 2
    # frame -> photo -> window: compose the window map with the inverse camera map.
    inverse = invert_affine(path.affines())
    affines = to_window[None, :, :2] @ inverse
    affines[:, :, 2] += to_window[:, 2]
    index = torch.arange(len(path))
    crops = warp_to_crops(frames, index, affines, size, channels=frames.shape[-1], border="edge").crops
    return crops.permute(0, 2, 3, 1).contiguous()
