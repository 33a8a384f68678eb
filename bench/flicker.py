"""Flicker of restored faces in video, with and without temporal smoothing, and the lag on a fast pan.

    python -m bench.flicker                      # ~5 min on 2 idle cores
    python -m bench.flicker --full --frames 16   # the random network at 512 px (slow on a CPU)

Sequences come from real photos (scikit-image's astronaut, matplotlib's Grace Hopper) moved along
known camera paths (bench/sequences.py): still, a slow pan, a zoom, and a fast pan that starts
and stops (peak speed about a sixth of the face per frame). MTCNN finds the faces in every frame;
then known synthetic jitter is added to its boxes and landmarks (Gaussian, `--jitter` pixels per
coordinate, seeded), as a noisier detector on compressed video would give.

Each strength runs the same detections through Detect Faces' selection (strength 0: the images
separately, as before; above 0: tracked and smoothed), then restore_faces, pasted back at
strength 1, with two restorers (pretrained weights cannot be had offline):
- "crop grid": a stand-in whose output detail is tied to the pixel grid of the aligned crop, as a
  restorer's synthesized detail is: each 16x16 block of the 512 crop becomes its mean. A crop
  that moves by a fraction of a pixel moves the blocks over the face, in proportion to the move;
- "random RF": a randomly initialised RestoreFormer of the real architecture (tiny geometry, 64 px
  crops, unless --full). Its random dictionary lookups flip for the smallest change of the crop,
  so its output changes completely between frames whether the crop moved by 0.05 or 1 pixel: it
  shows how far a restorer that unstable is from any alignment fix. It runs at strength 0 and the
  default strength only (slow on a CPU).

Measured:
- flicker: every output frame is warped back onto the photo (the known camera motion undone) and
  the mean absolute difference of consecutive frames (0..255) over the middle of the face box is
  taken. Two references: "input", the same measure on the unrestored frames (what resampling
  alone gives), and "true landmarks", the restorer's output aligned with the exact landmarks (the
  photo's, moved by the camera path), the least any smoothing of the landmarks can reach. "Above
  true" compares raw and smoothed by what they add to that;
- landmark step: the mean frame-to-frame change of the landmarks with the motion undone (pixels);
- on the fast pan, the lag: the time shift (frames) that best aligns the smoothed landmark track
  with the true one, and the largest local lag (deviation / true speed) where the pan runs at half
  its peak speed or more.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from bench import sequences as sq
from bench.common import cpu_name
from bench.model_forward import Table
from restoreformer_node.faces.detection import (
    Detection,
    FaceSelection,
    build_faces,
    load_detector,
    select_all,
)
from restoreformer_node.faces.pipeline import restore_faces
from restoreformer_node.faces.template import invert_affine
from restoreformer_node.faces.tracking import TrackingOptions
from restoreformer_node.model import RESTOREFORMER, tiny_config
from restoreformer_node.options import DEFAULT_TRACK_GAP, DEFAULT_VIDEO_SMOOTHING
from restoreformer_node.runtime import optimize_for_inference
from restoreformer_node.testing import random_model

FRAME = 256  # frames are FRAME x FRAME pixels
WINDOW = 128  # the face region compared, in pixels, after undoing the motion


class CropGridRestorer(torch.nn.Module):
    """[n, 3, S, S] -> each BLOCK x BLOCK block replaced by its mean (detail tied to the crop grid)."""

    BLOCK = 16

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return F.interpolate(F.avg_pool2d(crops, self.BLOCK), scale_factor=self.BLOCK, mode="nearest")


def photos() -> dict[str, np.ndarray]:
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return {"astronaut": data.astronaut(), "grace_hopper": hopper}


def camera_paths(photo: np.ndarray, face: Detection, frames: int) -> list[sq.CameraPath]:
    """Still, slow pan, zoom and fast pan, framed so the face (about 90 px in the frame) stays in view."""
    size = float(face.sizes()[0])
    scale = 90.0 / size
    centre = face.landmarks[0].mean(0).double()
    view = FRAME / scale
    # the camera looks a little below the face (more of the person in the frame), inside the photo
    h, w = photo.shape[:2]
    cx = float(centre[0].clamp(view / 2, w - view / 2)) if w > view else w / 2
    cy = float((centre[1] + 0.15 * size).clamp(view / 2, h - view / 2)) if h > view else h / 2
    c = (cx, cy)
    return [
        sq.still(c, frames, FRAME, scale),
        sq.pan(c, frames, FRAME, 40.0 / scale, scale),
        sq.zoom(c, frames, FRAME, 0.8 * scale, 1.25 * scale),
        sq.fast_pan(c, frames, FRAME, 120.0 / scale, max(6, frames // 3), scale),
    ]


def jittered(detections: list[Detection], sigma: float, seed: int) -> list[Detection]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for found in detections:
        boxes = found.boxes + sigma * torch.randn(found.boxes.shape, generator=g)
        landmarks = found.landmarks + sigma * torch.randn(found.landmarks.shape, generator=g)
        out.append(Detection(boxes, landmarks, found.scores))
    return out


def true_faces(face: Detection, path: sq.CameraPath):
    """The photo's face moved by the camera path: exact landmarks and box in every frame."""
    affines = path.affines()
    landmarks = sq.map_points(affines, face.landmarks).float()
    corners = sq.map_points(affines, face.boxes.view(1, 2, 2)).float()
    found = [Detection(corners[t].reshape(1, 4), landmarks[t : t + 1], face.scores) for t in range(len(path))]
    return build_faces(found, FRAME, FRAME, "true landmarks")


def face_window(face: Detection) -> torch.Tensor:
    """(x0, y0, side) of the middle 70% of the photo's face box."""
    x0, y0, x1, y1 = face.boxes[0].tolist()
    side = 0.7 * max(x1 - x0, y1 - y0)
    return torch.tensor([(x0 + x1 - side) / 2, (y0 + y1 - side) / 2, side])


def flicker(frames: torch.Tensor, path: sq.CameraPath, window: torch.Tensor) -> float:
    undone = sq.undo_motion(frames.float(), path, window, WINDOW) * 255.0
    return float((undone[1:] - undone[:-1]).abs().mean())


def landmark_step(landmarks: torch.Tensor, path: sq.CameraPath) -> float:
    """Mean frame-to-frame landmark change with the motion undone, in frame pixels."""
    back = sq.map_points(invert_affine(path.affines()), landmarks)
    return float(((back[1:] - back[:-1]).norm(dim=-1) * path.scales[1:, None]).mean())


def lag(landmarks: torch.Tensor, truth: torch.Tensor, raw: torch.Tensor, path: sq.CameraPath) -> tuple[float, float, float]:
    """(best time shift in frames, largest local lag in frames, largest deviation in pixels) of the
    landmark centroid along the pan's direction (x), over the frames where the pan moves at half
    its peak speed or more. The detector's constant offset (measured on the raw track while the
    camera is still) is taken off first."""
    x, true_x, raw_x = landmarks.mean(1)[:, 0], truth.mean(1)[:, 0], raw.mean(1)[:, 0]
    speed = torch.zeros_like(true_x)
    speed[1:-1] = (true_x[2:] - true_x[:-2]) / 2
    still = speed.abs() < 1e-6
    offset = float((raw_x - true_x)[still].mean()) if still.any() else 0.0
    fast = speed.abs() >= speed.abs().max() / 2
    deviation = x - true_x - offset
    frames = np.arange(len(x), dtype=np.float64)
    shifts = np.arange(-300, 301) / 100.0
    errors = [
        float(((x - offset - torch.from_numpy(np.interp(frames - s, frames, true_x.numpy())))[fast] ** 2).sum())
        for s in shifts
    ]
    local = (-deviation[fast] / speed[fast]).abs().max()
    return float(shifts[int(np.argmin(errors))]), float(local), float(deviation[fast].abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--jitter", type=float, default=0.5, help="synthetic detector jitter, pixels (sigma)")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.25, DEFAULT_VIDEO_SMOOTHING, 1.0])
    parser.add_argument("--full", action="store_true", help="the random RestoreFormer at 512 px instead of 64")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    config = RESTOREFORMER if args.full else tiny_config(RESTOREFORMER)
    restorers = {
        "crop grid": CropGridRestorer(),
        f"random RF {config.resolution} px": optimize_for_inference(random_model(config)),
    }
    detector = load_detector("mtcnn")
    strengths = [0.0, *[s for s in args.strengths if s > 0]]
    default = DEFAULT_VIDEO_SMOOTHING
    started = time.perf_counter()
    setup = f"{cpu_name()}, torch {torch.__version__}; jitter {args.jitter} px, {args.frames} frames"
    flick = Table(
        f"Flicker: mean |frame - previous frame| over the face, 0..255, motion undone ({setup})",
        ["photo", "path", "restorer", "input", "true landmarks", *[f"strength {s:g}" for s in strengths],
         f"raw / {default:g}", f"above true: raw / {default:g}"],
    )
    steps_table = Table(
        f"Landmark step: mean frame-to-frame landmark change, motion undone, frame pixels ({setup})",
        ["photo", "path", *[f"strength {s:g}" for s in strengths], f"raw / {default:g}"],
    )
    lags = []
    for name, photo in photos().items():
        face = detector.detect(sq.photo_tensor(photo))[0]
        window = face_window(face)
        for path in camera_paths(photo, face, args.frames):
            frames = sq.render(photo, path)
            found = jittered(detector.detect(frames), args.jitter, args.seed)
            truth = sq.map_points(path.affines(), face.landmarks)
            floor = flicker(frames, path, window)
            ideal = true_faces(face, path)
            values: dict[str, dict[float, float]] = {r: {} for r in restorers}
            steps, tracks = {}, {}
            for strength in strengths:
                tracking = TrackingOptions(strength, DEFAULT_TRACK_GAP) if strength else None
                chosen, notes = select_all(found, FaceSelection(mode="largest"), tracking)
                faces = build_faces([c.kept() for c in chosen], FRAME, FRAME, detector.name, tuple(notes))
                if len(faces) != len(path):
                    raise RuntimeError(f"{name}, {path.name}: {len(faces)} faces in {len(path)} frames")
                for restorer, model in restorers.items():
                    if strength in (0.0, default) or isinstance(model, CropGridRestorer):  # RF: slow on a CPU
                        values[restorer][strength] = flicker(restore_faces(frames, model, faces).images, path, window)
                tracks[strength] = torch.stack([f.landmarks for f in faces.faces]).double()
                steps[strength] = landmark_step(tracks[strength], path)
            for restorer, v in values.items():
                best = flicker(restore_faces(frames, restorers[restorer], ideal).images, path, window)
                flick.row(
                    name, path.name, restorer, f"{floor:.2f}", f"{best:.2f}",
                    *[f"{v[s]:.2f}" if s in v else "-" for s in strengths],
                    f"{v[0] / v[default]:.2f}x", f"{(v[0] - best) / max(v[default] - best, 1e-9):.2f}x",
                )
            steps_table.row(name, path.name, *[f"{steps[s]:.3f}" for s in strengths], f"{steps[0] / steps[default]:.2f}x")
            if path.name == "fast pan":
                peak = float(path.speeds().max())
                for strength in strengths:
                    shift, local, deviation = lag(tracks[strength], truth, tracks[0], path)
                    lags.append((name, peak, strength, shift, local, deviation))
    lag_table = Table(
        f"Lag on the fast pan: frames (deviation: frame pixels) ({setup})",
        ["photo", "peak speed (px/frame)", "strength", "best time shift", "largest local lag", "largest deviation"],
    )
    for name, peak, strength, shift, local, deviation in lags:
        lag_table.row(name, f"{peak:.1f}", f"{strength:g}", f"{shift:+.2f}", f"{local:.2f}", f"{deviation:.2f}")
    print(f"\n{flick.text()}\n{steps_table.text()}\n{lag_table.text()}\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
