"""Video batches: tracking faces through frames, filling short misses, smoothing over time, and the
selection following the tracks. Pure tensor tests on synthetic detections (faces of the 512 template
shape moved along known paths), plus MTCNN on a real photo moved along a known camera path."""

from __future__ import annotations

import pytest
import torch
from helpers.detection import network_blocked

from bench import sequences as sq
from restoreformer_node.faces.detection import (
    Detection,
    FaceSelection,
    TrackingOptions,
    build_faces,
    find_faces,
    load_detector,
    select_all,
    select_faces,
    summarize,
)
from restoreformer_node.faces.template import TEMPLATE_512, similarity_transform, template_points
from restoreformer_node.faces.tracking import (
    FilterSettings,
    adaptive_filter,
    centred_filter,
    filter_settings,
    smooth_track,
    smoothing_factor,
    track_faces,
)


def face(centre, size: float, score: float = 0.99) -> Detection:
    """One face of the template's shape, `size` px wide (box), centred at `centre`."""
    cx, cy = centre
    unit = (TEMPLATE_512 - TEMPLATE_512.mean(0)) / 512  # about 0.25 wide
    landmarks = (unit * size * 2 + torch.tensor([cx, cy], dtype=torch.float64)).float()
    box = torch.tensor([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
    return Detection(box[None], landmarks[None], torch.tensor([score]))


def frames_of(*per_frame: list[Detection]) -> list[Detection]:
    """Per frame, the faces listed (Detection.empty() for none), concatenated into one Detection."""
    out = []
    for faces in per_frame:
        faces = [f for f in faces if len(f)]
        if not faces:
            out.append(Detection.empty())
            continue
        out.append(Detection(*(torch.cat([getattr(f, k) for f in faces]) for k in ("boxes", "landmarks", "scores"))))
    return out


def crossing(frames: int = 21, size: float = 80.0, speed: float = 12.0):
    """Two faces walking past each other: A from left to right, B from right to left, 10 px apart
    vertically; the detector reports each frame's faces left to right (so A is first before the
    crossing and second after it)."""
    middle = (frames - 1) / 2
    a = [(200 + speed * (t - middle), 200.0) for t in range(frames)]
    b = [(200 - speed * (t - middle), 210.0) for t in range(frames)]
    per_frame = []
    for t in range(frames):
        pair = sorted([face(a[t], size), face(b[t], size * 0.97)], key=lambda d: float(d.boxes[0, 0]))
        per_frame.append(pair)
    return frames_of(*per_frame), torch.tensor(a), torch.tensor(b)


def centres(found: Detection) -> torch.Tensor:
    return (found.boxes[:, :2] + found.boxes[:, 2:]) / 2


# -- tracking ---------------------------------------------------------------------------------------


def test_tracks_keep_identities_when_two_faces_cross():
    detections, a, b = crossing()
    tracks = track_faces(detections, max_gap=2)
    assert len(tracks) == 2
    for track, truth in zip(tracks, (a, b)):
        assert (track.first, track.last) == (0, len(a) - 1) and bool(track.detected.all())
        got = (track.boxes[:, :2] + track.boxes[:, 2:]) / 2
        torch.testing.assert_close(got, truth.float(), rtol=0, atol=1e-4)


def test_tracks_keep_identities_through_an_occlusion_and_fill_it():
    """B disappears behind A for three frames at the crossing (the detector sees one face there):
    B keeps its track and gets the positions a constant-speed walk has there."""
    detections, a, b = crossing()
    hidden = (9, 10, 11)
    for t in hidden:
        detections[t] = frames_of([face(tuple(a[t].tolist()), 80.0)])[0]
    tracks = track_faces(detections, max_gap=3)
    assert len(tracks) == 2
    track_b = tracks[1]
    assert torch.equal(~track_b.detected, torch.tensor([t in hidden for t in range(len(b))]))
    got = (track_b.boxes[:, :2] + track_b.boxes[:, 2:]) / 2
    torch.testing.assert_close(got, b.float(), rtol=0, atol=1e-4)  # linear walk: interpolation is exact
    assert bool(tracks[0].detected.all())


def test_a_gap_longer_than_max_gap_starts_a_new_track():
    still = face((150.0, 150.0), 90.0)
    detections = frames_of([still], [still], [], [], [], [still], [still])
    assert [(t.first, t.last) for t in track_faces(detections, max_gap=3)] == [(0, 6)]
    split = track_faces(detections, max_gap=2)
    assert [(t.first, t.last) for t in split] == [(0, 1), (5, 6)]
    assert all(bool(t.detected.all()) for t in split)


def test_interpolated_frames_are_linear_between_the_detections_around_them():
    first, last = face((100.0, 120.0), 60.0, score=0.9), face((130.0, 90.0), 90.0, score=0.99)
    (track,) = track_faces(frames_of([first], [], [], [last]), max_gap=2)
    for k, weight in ((1, 1 / 3), (2, 2 / 3)):
        for field in ("boxes", "landmarks", "scores"):
            expected = torch.lerp(getattr(first, field)[0].double(), getattr(last, field)[0].double(), weight)
            torch.testing.assert_close(getattr(track, field)[k].double(), expected, rtol=0, atol=1e-5)
    assert track.detected.tolist() == [True, False, False, True]


def test_faces_far_apart_are_not_matched():
    left, right = face((60.0, 100.0), 50.0), face((300.0, 100.0), 50.0)
    tracks = track_faces(frames_of([left], [right]), max_gap=5)
    assert [(t.first, t.last) for t in tracks] == [(0, 0), (1, 1)]


# -- smoothing --------------------------------------------------------------------------------------


def test_strength_maps_to_cutoffs_between_the_weakest_and_strongest():
    cutoffs = [filter_settings(s).min_cutoff for s in (0.01, 0.25, 0.5, 1.0)]
    assert cutoffs == sorted(cutoffs, reverse=True)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        filter_settings(0.0)
    with pytest.raises(ValueError, match="strength from 0"):
        TrackingOptions(smoothing=1.5)


def test_strength_zero_returns_the_track_unchanged():
    detections, _, _ = crossing()
    (track, _) = track_faces(detections, max_gap=2)
    assert smooth_track(track, 0.0) is track


def test_constant_speed_is_not_delayed():
    """At constant speed the forward pass lags and the backward pass leads by the same amount: away
    from the ends (where the start-up transients, which shrink at least as fast as the slower of
    the two exponential filters forgets, have decayed below 1e-9) the centred filter returns the
    true positions (to 1e-6: the transients are sums of k r^k terms, not one geometric series)."""
    n, speed, size = 200, 3.0, 100.0
    t = torch.arange(n, dtype=torch.float64)
    points = torch.stack([t * speed, t * speed / 2], dim=-1)[:, None].repeat(1, 7, 1)
    settings = filter_settings(0.5)
    out = centred_filter(points, torch.full((n,), size), settings)
    slowest = 1 - min(smoothing_factor(settings.min_cutoff), smoothing_factor(settings.speed_cutoff))
    margin = int(torch.tensor(1e-9 / (speed * n)).log().div(torch.tensor(slowest).log()).ceil())
    assert margin < n // 2 - 5
    middle = slice(margin, n - margin)
    torch.testing.assert_close(out[middle], points[middle], rtol=0, atol=1e-6)


def test_the_weight_rises_with_speed_as_designed():
    """A causal pass at constant speed v settles on a lag of v (1 - w) / w behind the input, where w
    is the weight the settings give the speed v / size: the adaptation, checked in the steady state."""
    n, size = 300, 100.0
    settings = filter_settings(0.5)
    for speed in (0.0, 1.0, 5.0, 15.0):
        t = torch.arange(n, dtype=torch.float64)
        points = torch.stack([t * speed, torch.zeros(n, dtype=torch.float64)], dim=-1)[:, None]
        out = adaptive_filter(points, torch.full((n,), size, dtype=torch.float64), settings)
        lag = float(points[-1, 0, 0] - out[-1, 0, 0])
        weight = smoothing_factor(settings.min_cutoff + settings.speed_gain * speed / size)
        assert lag == pytest.approx(speed * (1 - weight) / weight, rel=1e-6, abs=1e-9)


def test_smoothing_keeps_the_shape_of_a_rigidly_moving_face():
    """All points of a frame share one weight, so a face that only moves keeps its shape exactly."""
    generator = torch.Generator().manual_seed(0)
    n = 40
    moves = torch.randn(n, 1, 2, generator=generator, dtype=torch.float64).cumsum(0) * 2
    shape = torch.randn(1, 7, 2, generator=generator, dtype=torch.float64) * 30
    out = centred_filter(shape + moves, torch.full((n,), 90.0), filter_settings(0.7))
    torch.testing.assert_close(out - out.mean(1, keepdim=True), (shape - shape.mean(1, keepdim=True)).expand(n, 7, 2))


def test_jitter_on_a_still_face_is_reduced_between_the_fixed_filter_and_none():
    """Known jitter on a still face: the frame-to-frame change after smoothing lies between what the
    non-adaptive filter at the still-face cutoff gives (the most smoothing possible) and the raw
    change, and strength orders it."""
    generator = torch.Generator().manual_seed(1)
    n, sigma = 200, 0.5
    truth = face((128.0, 128.0), 100.0)
    landmarks = truth.landmarks.double() + sigma * torch.randn(n, 5, 2, generator=generator, dtype=torch.float64)
    boxes = truth.boxes.double() + sigma * torch.randn(n, 4, generator=generator, dtype=torch.float64)
    (track,) = track_faces([Detection(b[None].float(), lm[None].float(), torch.ones(1)) for b, lm in zip(boxes, landmarks)])

    def step(points: torch.Tensor) -> float:
        return float((points[1:] - points[:-1]).norm(dim=-1).mean())

    raw = step(track.landmarks.double())
    steps = []
    for strength in (0.25, 0.5, 1.0):
        smoothed = smooth_track(track, strength)
        fixed = centred_filter(track.landmarks.double(), track.sizes(), FilterSettings(filter_settings(strength).min_cutoff, 0.0))
        assert step(fixed) <= step(smoothed.landmarks.double()) < raw
        steps.append(step(smoothed.landmarks.double()))
        assert torch.equal(smoothed.scores, track.scores) and torch.equal(smoothed.detected, track.detected)
    assert steps == sorted(steps, reverse=True)


def test_fast_motion_adapts_where_a_fixed_filter_blurs_it():
    """A pan that starts and stops abruptly (15 px per frame on a 100 px face): the adaptive filter
    stays much closer to the true path than the same filter without its speed term."""
    n, size = 60, 100.0
    x = torch.cat([torch.zeros(20), torch.arange(1, 21) * 15.0, torch.full((20,), 300.0)]).double()
    points = torch.stack([x, torch.zeros(n, dtype=torch.float64)], dim=-1)[:, None].repeat(1, 7, 1)
    settings = filter_settings(0.5)
    sizes = torch.full((n,), size)
    adaptive = (centred_filter(points, sizes, settings) - points).abs().max()
    fixed = (centred_filter(points, sizes, FilterSettings(settings.min_cutoff, 0.0)) - points).abs().max()
    assert adaptive < fixed / 2, (adaptive, fixed)


# -- selection through the tracks -----------------------------------------------------------------


def test_selection_by_index_follows_the_track_not_the_frame_order():
    detections, a, b = crossing()
    by_index = FaceSelection(mode="by index", indices=(0,), order="left to right")
    per_image = [select_faces(found, by_index).kept() for found in detections]
    swapped = torch.cat([centres(k) for k in per_image])
    assert not torch.allclose(swapped, a.float(), atol=1) and not torch.allclose(swapped, b.float(), atol=1)
    chosen, notes = select_all(detections, by_index, TrackingOptions(smoothing=0.5, max_gap=2))
    kept = [c.kept() for c in chosen]
    # Both tracks' median x is the middle: "left to right" falls to the median y, so A (higher) is 0.
    followed = torch.cat([centres(k) for k in kept])
    assert bool(((followed - a).norm(dim=-1) < (followed - b).norm(dim=-1)).all())
    assert all(k.track_ids.tolist() == [0] for k in kept)
    assert notes == ["2 face tracks through 21 frames"]


def test_largest_follows_the_larger_track_when_sizes_jitter():
    """Two faces of 100 and 97 px whose detected sizes jitter by +-4 px: per frame the largest flips
    between them, through the tracks it is always the same face."""
    per_frame = []
    for t in range(12):
        wobble = 4.0 if t % 2 else -4.0
        per_frame.append([face((100.0, 100.0), 100.0 + wobble), face((300.0, 100.0), 97.0 - wobble)])
    detections = frames_of(*per_frame)
    largest = FaceSelection(mode="largest")
    per_image = {float(centres(select_faces(found, largest).kept())[0, 0]) for found in detections}
    assert per_image == {100.0, 300.0}
    chosen, _ = select_all(detections, largest, TrackingOptions(smoothing=0.5))
    assert {round(float(centres(c.kept())[0, 0])) for c in chosen} == {100}


def test_filled_faces_are_marked_in_the_faces_value_and_the_summary():
    still = face((150.0, 150.0), 90.0)
    detections = frames_of([still], [], [still])
    chosen, notes = select_all(detections, FaceSelection(), TrackingOptions(smoothing=0.5, max_gap=1))
    faces = build_faces([c.kept() for c in chosen], 300, 300, "test", tuple(notes))
    assert len(faces) == 3
    assert [f.interpolated for f in faces.faces] == [False, True, False]
    assert [f.track for f in faces.faces] == [0, 0, 0]
    text = summarize(faces)
    assert "image 1 face 0:" in text and "track 0 (filled: the detector missed it here)" in text
    assert "track 0: missed in image(s) 1, filled by interpolation" in text
    # the filled face's affine is the alignment of its (interpolated) landmarks
    expected = similarity_transform(faces.faces[1].landmarks.double(), template_points())
    torch.testing.assert_close(faces.faces[1].affine, expected)


def test_strength_zero_is_the_per_image_selection():
    detections, _, _ = crossing()
    for tracking in (None, TrackingOptions(smoothing=0.0)):
        chosen, notes = select_all(detections, FaceSelection(), tracking)
        assert notes == []
        for got, found in zip(chosen, detections):
            expected = select_faces(found, FaceSelection())
            assert got.chosen == expected.chosen and got.ordered.track_ids is None
            assert torch.equal(got.ordered.landmarks, expected.ordered.landmarks)


# -- a real detector on a real photo moved along a known path ---------------------------------------


@pytest.fixture(scope="module")
def mtcnn():
    with network_blocked():
        yield load_detector("mtcnn")


def test_mtcnn_pan_with_missed_frames(mtcnn, astronaut):
    """The astronaut panned at 3 px per frame, MTCNN on every frame, and its answers for frames 5
    and 6 thrown away: through the track those frames get a face whose landmarks are as close to
    the true ones as the detections around them, and every frame is restored."""
    reference = mtcnn.detect(sq.photo_tensor(astronaut))[0]
    path = sq.pan((230.0, 180.0), 10, 192, 27.0)
    frames = sq.render(astronaut, path)
    with network_blocked():
        per_frame = find_faces(mtcnn, frames).faces
        assert len(per_frame) == 10
        tracked = find_faces(mtcnn, frames, tracking=TrackingOptions(smoothing=0.5, max_gap=2))
    truth = sq.map_points(path.affines(), reference.landmarks)
    raw_error = (torch.stack([f.landmarks for f in per_frame]).double() - truth).norm(dim=-1).mean(-1)

    detected = mtcnn.detect(frames)
    for t in (5, 6):
        detected[t] = Detection.empty()
    chosen, notes = select_all(detected, FaceSelection(), TrackingOptions(smoothing=0.5, max_gap=2))
    faces = build_faces([c.kept() for c in chosen], 192, 192, "MTCNN", tuple(notes))
    assert [f.image_index for f in faces.faces] == list(range(10))
    assert [f.interpolated for f in faces.faces] == [t in (5, 6) for t in range(10)]
    error = (torch.stack([f.landmarks for f in faces.faces]).double() - truth).norm(dim=-1).mean(-1)
    assert float(error[5:7].max()) <= float(raw_error[3:9].max()), (error, raw_error)
    # The tracked run over all frames gives every frame its one face, tracked as 0.
    assert [f.track for f in tracked.faces] == [0] * 10
