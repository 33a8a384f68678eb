"""`restore --sequence`: one video (a folder of frames or a video file) restored with its faces
tracked and smoothed through all its frames, as Detect Faces does with video_smoothing.

Two passes over the frames, a batch at a time, so memory stays bounded on long videos:

1. faces: the detector runs on every frame of this process's block; only the detections are kept
   (boxes, landmarks and scores: about 100 bytes per face and frame). Under torchrun the processes
   then exchange their detections, so every process holds those of the whole sequence;
2. tracking and smoothing run over the whole sequence at once (`select_all`, the code Detect
   Faces runs on a batch), then the frames are read again and restored with those faces.

Why not carry a tracker's state from batch to batch, or smooth over a sliding window: the filter
is centred (forward and backward in time, so steady motion is not delayed), so a frame's face
depends on the frames after it as well; a window would change the result at every window edge,
and a state carried forward would give a causal filter that lags. Keeping the detections of all
frames is cheap, and makes the result the same as Detect Faces on the whole batch, however the
frames are cut into batches or blocks: in particular the seam between two processes' blocks is
invisible, since every process tracks the same detections of the whole sequence.

With --video-smoothing 0 there is no tracking: each frame is detected and restored on its own,
exactly as without --sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..faces.detectors.base import DEFAULT_MAX_SIDE, frames_per_chunk
from .distributed import Ranks, gather
from .images import LoadedImage
from .jobs import Job
from .restore import BATCH_PIXELS, Restorer, Settings, loaded_batches
from .sequence import FrameSequence, SequenceError


class _Unread:
    """Frames that cannot be read while their faces are searched: they are reported (and counted)
    when they are to be restored, or not at all when their outputs exist."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self.advance = advance

    def fail(self, source, reason: str) -> None:
        self.advance(1)


def frame_batches(sequence: FrameSequence, jobs: list[Job], settings: Settings, tally) -> Iterator[list]:
    """(job, LoadedImage) lists of the sequence's frames `jobs` (in frame order), read a batch at
    a time; a frame that cannot be read is reported through `tally.fail`."""
    if sequence.video is None:
        yield from loaded_batches(jobs, settings, tally)
        return
    if not jobs:
        return
    wanted = {job.frame: job for job in jobs}
    current: list = []
    try:
        for index, pixels in sequence.video.frames(range(jobs[0].frame, jobs[-1].frame + 1)):
            job = wanted.pop(index, None)
            if job is None:
                continue
            height, width = pixels.shape[:2]
            if height * width > settings.max_pixels:
                tally.fail(job.label, f"{width}x{height} is more pixels than the limit of {settings.max_pixels:,} (--max-pixels)")
                continue
            if current and (len(current) >= settings.batch or (len(current) + 1) * height * width > BATCH_PIXELS):
                yield current
                current = []
            current.append((job, LoadedImage(pixels, "RGB")))
    except SequenceError as error:
        for job in wanted.values():
            tally.fail(job.label, f"cannot be read: {error}")
    if current:
        yield current


def search_chunks(sequence: FrameSequence, jobs: list[Job], settings: Settings, unread: _Unread) -> Iterator[list]:
    """The frames `jobs` in the detector's own chunks of the whole sequence (frames k*c to
    (k+1)*c - 1 for its chunk size c), as Detect Faces searches a whole batch: the detector's
    numbers for a frame can differ in the last bits with the other frames of its chunk."""
    current: list = []
    for group in frame_batches(sequence, jobs, settings, unread):
        for job, image in group:
            shape = image.pixels.shape
            chunk = frames_per_chunk(shape[0], shape[1], DEFAULT_MAX_SIDE)
            if current and (current[0][1].pixels.shape != shape or current[0][0].frame // chunk != job.frame // chunk):
                yield current
                current = []
            current.append((job, image))
    if current:
        yield current


def find_sequence_faces(sequence: FrameSequence, jobs: list[Job], restorer: Restorer, advance) -> dict:
    """frame -> Detection for this process's frames `jobs` (frames that cannot be read or searched
    have none)."""
    import torch

    found = {}
    for group in search_chunks(sequence, jobs, restorer.settings, _Unread(advance)):
        images = torch.stack([image.pixels for _, image in group])
        try:
            detections = restorer.detector.detect(images, DEFAULT_MAX_SIDE)
        except Exception as error:  # these frames only; they are restored with the faces tracking gives them
            reason = " ".join(str(error).split())[:300]
            print(f"{group[0][0].label}: faces not searched in {len(group)} frame(s) ({type(error).__name__}: {reason})")
        else:
            found.update((job.frame, detection) for (job, _), detection in zip(group, detections))
        advance(len(group))
    return found


def restore_sequence(
    sequence: FrameSequence, jobs: list[Job], todo: list[Job], restorer: Restorer, ranks: Ranks, advance
) -> None:
    """Restore the frames `todo` of this process's block `jobs` of `sequence`. With tracking every
    process must call this for the sequence (they exchange detections), even with nothing to do."""
    args, settings, tally = restorer.args, restorer.settings, restorer.tally
    if settings.smoothing == 0:
        for group in frame_batches(sequence, todo, settings, tally):
            restorer.run_group(group)
        return
    from ..faces.detection import Detection, FaceSelection, TrackingOptions, build_faces, select_all

    found: dict = {}
    for share in gather(find_sequence_faces(sequence, jobs, restorer, advance), ranks):
        found.update(share)
    detections = [found.get(k, Detection.empty()) for k in range(len(sequence.jobs))]
    chosen, notes = select_all(
        detections, FaceSelection(mode=args.select), TrackingOptions(settings.smoothing, settings.max_gap)
    )
    if ranks.lead and not args.quiet:
        for note in notes:
            print(f"{sequence.source}: {note}")

    def faces_for(group: list):
        height, width = group[0][1].pixels.shape[:2]
        return build_faces([chosen[job.frame].kept() for job, _ in group], height, width, restorer.detector.name)

    for group in frame_batches(sequence, todo, settings, tally):
        restorer.run_group(group, faces_for)


__all__ = ["find_sequence_faces", "frame_batches", "restore_sequence"]
