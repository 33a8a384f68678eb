"""Faces through the frames of a video batch: tracks, short misses filled, landmarks smoothed.

A video batch differs from a batch of photos in what this module uses: a face is found near where
it was in the previous frame, and its true landmarks move smoothly while the detector's
estimates jitter by a pixel or two from frame to frame (which makes the aligned crop, and with
it the restored face, shimmer).

    tracks = track_faces(detections, max_gap=5)       # one Detection per frame -> Tracks
    tracks = [smooth_track(t, 0.5) for t in tracks]   # 0 < strength <= 1

Tracking: the faces of each frame are matched to the tracks seen in the last `max_gap` + 1
frames, by the mean distance of their landmarks to where the track's landmarks are predicted
(its last landmarks moved by its velocity), in face sizes; closest pairs first, and a pair only
if the boxes overlap (IoU >= MIN_IOU) or the landmarks are within MAX_DISTANCE face sizes. A face
left over starts a new track; a track unmatched for more than `max_gap` frames ends. Frames a
track misses between two of its detections get its box and landmarks interpolated linearly.

Smoothing: an adaptive low-pass filter in the manner of the one-euro filter (Casiez, Roussel and
Vogel, CHI 2012): its cutoff rises with the speed of the face, so a still face is smoothed
strongly and a fast one hardly at all. It runs forward and backward over the track and the two
are averaged, a centred filter: a face moving at constant speed is not delayed.

Everything here is a pure function of CPU tensors; the arithmetic of the filter is float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..options import DEFAULT_TRACK_GAP, DEFAULT_VIDEO_SMOOTHING
from .detectors.base import Detection

# Matching: a track and a face are the same person only if their boxes overlap this much (IoU
# of the predicted box and the found one) or their landmarks are this close (mean distance, in
# sizes of the larger face).
MIN_IOU = 0.3
MAX_DISTANCE = 0.5

# The filter, in frames: cutoffs in cycles per frame, speeds in face sizes per frame.
# strength 1 -> still faces with cutoff STRONGEST_CUTOFF (time constant ~16 frames); strength -> 0
# approaches WEAKEST_CUTOFF (a weight of 0.86 on the current frame).
WEAKEST_CUTOFF = 1.0
STRONGEST_CUTOFF = 0.01
# Cutoff gained per face size per frame of speed: a face crossing a sixth of its size per frame (a
# fast pan) gains 0.5 (at strength 0.5 its current frame is then weighted 0.79 instead of 0.39),
# while a still face whose landmarks jitter by half a pixel (100 px face) gains about 0.01. The
# centred filter does not delay steady motion, so the gain is set only as high as the start and
# stop of a fast pan need (bench/flicker.py measures both).
SPEED_GAIN = 3.0
# Cutoff of the speed estimate itself.
SPEED_CUTOFF = 0.25


@dataclass(frozen=True)
class TrackingOptions:
    """How a batch is treated as a video sequence.

    smoothing: 0 < smoothing <= 1, strength of the temporal filter (0 is no tracking at all:
        callers keep the per-image path for it).
    max_gap: frames a face may be missed and still keep its track (those frames are filled).
    """

    smoothing: float = DEFAULT_VIDEO_SMOOTHING
    max_gap: int = DEFAULT_TRACK_GAP

    def __post_init__(self):
        if not 0.0 <= self.smoothing <= 1.0 or math.isnan(self.smoothing):
            raise ValueError(f"temporal smoothing {self.smoothing}: choose a strength from 0 (off) to 1")
        if self.max_gap < 0:
            raise ValueError(f"max gap {self.max_gap}: choose 0 or more frames")


@dataclass(frozen=True)
class Track:
    """One face through consecutive frames first .. first + len - 1 (source pixels, CPU).

    boxes [n, 4] and landmarks [n, 5, 2] float32, scores [n] float32 (interpolated in filled
    frames), detected [n] bool (False where the frame was filled by interpolation).
    """

    first: int
    boxes: torch.Tensor
    landmarks: torch.Tensor
    scores: torch.Tensor
    detected: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def last(self) -> int:
        return self.first + len(self) - 1

    def covers(self, frame: int) -> bool:
        return self.first <= frame <= self.last

    def sizes(self) -> torch.Tensor:
        """[n] side of each box's bounding square."""
        wh = self.boxes[:, 2:] - self.boxes[:, :2]
        return wh.max(dim=1).values


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[A, 4] x [N, 4] boxes (x0, y0, x1, y1) -> [A, N] intersection over union."""
    lo = torch.maximum(a[:, None, :2], b[None, :, :2])
    hi = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def match_faces(
    predicted_boxes: torch.Tensor, predicted_landmarks: torch.Tensor, boxes: torch.Tensor, landmarks: torch.Tensor
) -> list[tuple[int, int]]:
    """Pairs (track, face) of the same person: [A] predicted tracks against [N] found faces.

    Closest landmarks first (mean distance in sizes of the larger of the two faces), each track
    and face used once, a pair only if it passes the gate (IoU >= MIN_IOU or distance <= MAX_DISTANCE).
    """
    if not len(predicted_boxes) or not len(boxes):
        return []
    size_a = (predicted_boxes[:, 2:] - predicted_boxes[:, :2]).max(dim=1).values
    size_n = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values
    scale = torch.maximum(size_a[:, None], size_n[None, :]).clamp(min=1.0)
    distance = (predicted_landmarks[:, None] - landmarks[None]).norm(dim=-1).mean(-1) / scale
    allowed = (box_iou(predicted_boxes, boxes) >= MIN_IOU) | (distance <= MAX_DISTANCE)
    candidates = sorted(
        (float(distance[a, n]), a, n) for a, n in allowed.nonzero().tolist()
    )
    pairs, used_a, used_n = [], set(), set()
    for _, a, n in candidates:
        if a not in used_a and n not in used_n:
            pairs.append((a, n))
            used_a.add(a)
            used_n.add(n)
    return pairs


class _TrackBuilder:
    """A track while the frames are read: its detections (frame, box, landmarks, score) and velocity."""

    def __init__(self, frame: int, box: torch.Tensor, landmarks: torch.Tensor, score: torch.Tensor):
        self.frames = [frame]
        self.boxes = [box]
        self.landmarks = [landmarks]
        self.scores = [score]
        self.velocity = torch.zeros(2)  # landmark centroid, pixels per frame

    def predicted(self, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        shift = self.velocity * (frame - self.frames[-1])
        return self.boxes[-1] + shift.repeat(2), self.landmarks[-1] + shift

    def add(self, frame: int, box: torch.Tensor, landmarks: torch.Tensor, score: torch.Tensor) -> None:
        seen = (landmarks.mean(0) - self.landmarks[-1].mean(0)) / (frame - self.frames[-1])
        self.velocity = seen if len(self.frames) == 1 else (self.velocity + seen) / 2
        self.frames.append(frame)
        self.boxes.append(box)
        self.landmarks.append(landmarks)
        self.scores.append(score)

    def build(self) -> Track:
        """The track with the frames it missed between detections interpolated linearly."""
        first, last = self.frames[0], self.frames[-1]
        values = torch.cat(
            [torch.stack(self.boxes), torch.stack(self.landmarks).flatten(1), torch.stack(self.scores)[:, None]], dim=1
        ).to(torch.float64)
        known = torch.tensor(self.frames, dtype=torch.float64)
        filled = torch.empty(last - first + 1, values.shape[1], dtype=torch.float64)
        detected = torch.zeros(last - first + 1, dtype=torch.bool)
        for k, frame in enumerate(self.frames):
            filled[frame - first] = values[k]
            detected[frame - first] = True
            if k and frame - self.frames[k - 1] > 1:
                before = self.frames[k - 1]
                t = (torch.arange(before + 1, frame, dtype=torch.float64) - known[k - 1]) / (known[k] - known[k - 1])
                filled[before + 1 - first : frame - first] = torch.lerp(values[k - 1], values[k], t[:, None])
        filled = filled.to(torch.float32)
        return Track(first, filled[:, :4].contiguous(), filled[:, 4:14].reshape(-1, 5, 2), filled[:, 14], detected)


def track_faces(detections: Sequence[Detection], max_gap: int = DEFAULT_TRACK_GAP) -> list[Track]:
    """The faces of consecutive frames (one Detection per frame) as tracks, in the order they
    first appear (faces appearing in the same frame: in that frame's order)."""
    if max_gap < 0:
        raise ValueError(f"max gap {max_gap}: choose 0 or more frames")
    builders: list[_TrackBuilder] = []
    for frame, found in enumerate(detections):
        live = [b for b in builders if frame - b.frames[-1] <= max_gap + 1]
        pairs: list[tuple[int, int]] = []
        if live and len(found):
            predicted = [b.predicted(frame) for b in live]
            pairs = match_faces(
                torch.stack([p[0] for p in predicted]),
                torch.stack([p[1] for p in predicted]),
                found.boxes.float(),
                found.landmarks.float(),
            )
        for a, n in pairs:
            live[a].add(frame, found.boxes[n].float(), found.landmarks[n].float(), found.scores[n].float())
        matched = {n for _, n in pairs}
        for n in range(len(found)):
            if n not in matched:
                builders.append(
                    _TrackBuilder(frame, found.boxes[n].float(), found.landmarks[n].float(), found.scores[n].float())
                )
    return [b.build() for b in builders]


@dataclass(frozen=True)
class FilterSettings:
    """The adaptive filter: cutoffs in cycles per frame, speed in face sizes per frame."""

    min_cutoff: float
    speed_gain: float = SPEED_GAIN
    speed_cutoff: float = SPEED_CUTOFF


def filter_settings(strength: float) -> FilterSettings:
    """Strength 0 < s <= 1 -> the filter: the still-face cutoff falls geometrically from
    WEAKEST_CUTOFF towards STRONGEST_CUTOFF as s goes from 0 to 1."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"smoothing strength must be in (0, 1], got {strength}")
    return FilterSettings(WEAKEST_CUTOFF * (STRONGEST_CUTOFF / WEAKEST_CUTOFF) ** strength)


def smoothing_factor(cutoff: float) -> float:
    """Weight of the new sample in an exponential filter with this cutoff (cycles per sample)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau)


def adaptive_filter(points: torch.Tensor, sizes: torch.Tensor, settings: FilterSettings) -> torch.Tensor:
    """One causal pass of the adaptive filter over [n, P, 2] points with face sizes [n] (float64).

    All points of a frame share one weight, chosen from the speed of the face (the mean of the
    points' velocities, low-passed, in face sizes per frame), so the filtered points stay a
    weighted mean of whole frames' points and the face's shape is kept.
    """
    out = points.clone()
    state = points[0].clone()
    velocity = torch.zeros_like(state)
    speed_weight = smoothing_factor(settings.speed_cutoff)
    for t in range(1, points.shape[0]):
        velocity += speed_weight * (points[t] - points[t - 1] - velocity)
        speed = float(velocity.mean(0).norm()) / max(float(sizes[t]), 1.0)
        weight = smoothing_factor(settings.min_cutoff + settings.speed_gain * speed)
        state += weight * (points[t] - state)
        out[t] = state
    return out


def centred_filter(points: torch.Tensor, sizes: torch.Tensor, settings: FilterSettings) -> torch.Tensor:
    """The mean of the adaptive filter run forward and backward in time (no delay at constant speed)."""
    points = points.to(torch.float64)
    sizes = sizes.to(torch.float64)
    forward = adaptive_filter(points, sizes, settings)
    backward = adaptive_filter(points.flip(0), sizes.flip(0), settings).flip(0)
    return (forward + backward) / 2


def smooth_track(track: Track, strength: float) -> Track:
    """The track with its landmarks and box corners filtered over time (scores and which frames
    were detected unchanged). strength 0 returns the track itself."""
    if strength == 0 or len(track) < 2:
        return track
    points = torch.cat([track.landmarks, track.boxes.view(-1, 2, 2)], dim=1)
    smoothed = centred_filter(points, track.sizes(), filter_settings(strength)).to(torch.float32)
    return Track(
        track.first, smoothed[:, 5:].reshape(-1, 4).contiguous(), smoothed[:, :5].contiguous(), track.scores,
        track.detected,
    )


def faces_in_frame(tracks: Sequence[Track], frame: int) -> tuple[list[int], Detection]:
    """The faces of the tracks that cover `frame`, in the order of `tracks`: (their positions in
    `tracks`, a Detection whose track_ids are those positions and whose `filled` marks the
    interpolated ones)."""
    present = [number for number, track in enumerate(tracks) if track.covers(frame)]
    if not present:
        return [], Detection.empty()
    rows = [frame - tracks[n].first for n in present]
    return present, Detection(
        torch.stack([tracks[n].boxes[k] for n, k in zip(present, rows)]),
        torch.stack([tracks[n].landmarks[k] for n, k in zip(present, rows)]),
        torch.stack([tracks[n].scores[k] for n, k in zip(present, rows)]),
        torch.tensor(present, dtype=torch.long),
        torch.stack([~tracks[n].detected[k] for n, k in zip(present, rows)]),
    )
