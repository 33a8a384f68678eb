"""The frames of one video for `restore --sequence`: a folder of frame images or a video file.

A folder's frames are its image files in natural order (frame_2 before frame_10); a video file is
decoded by OpenCV (which comes with facexlib), one frame at a time, so a long video never sits in
memory: the command reads it twice, once to find the faces and once to restore them.

Outputs: a frame file `NAME.ext` gives `OUT/NAME.png` (as for any folder, so the names the frames
were exported with are kept); frame k of a video `clip.mp4` gives `OUT/clip_<k>.png` with k
zero-padded to six digits (more for a video of a million frames or more), so the names sort in
frame order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from ..options import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from .arguments import UsageError
from .jobs import Job, check_plan


class SequenceError(Exception):
    """A sequence input that cannot be read; the message is one line naming it."""


def natural_key(path: Path) -> tuple:
    """Sort key that orders the numbers inside names by value: frame_2 < frame_10."""
    return tuple(int(part) if part.isdigit() else part.casefold() for part in re.split(r"(\d+)", path.name))


def frame_files(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, in natural order."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=natural_key)


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def frame_target(video: Path, out: Path, index: int, digits: int = 6) -> Path:
    return out / f"{video.stem}_{index:0{digits}d}.png"


class VideoReader:
    """Frames of a video file as RGB float32 tensors [H, W, 3] in 0..1, read in order."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._count: int | None = None
        self._open().release()  # fails now, with the file named, if OpenCV cannot read it

    def _open(self):
        import cv2

        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise SequenceError(
                f"{self.path}: OpenCV cannot open this as a video (a damaged file, or a codec its FFmpeg "
                "lacks); convert it to frames (e.g. PNG) and pass the folder"
            )
        return capture

    def count(self) -> int:
        """The number of frames, counted by decoding (containers' own counts can be wrong)."""
        if self._count is None:
            capture = self._open()
            count = 0
            try:
                while capture.grab():
                    count += 1
            finally:
                capture.release()
            if count == 0:
                raise SequenceError(f"{self.path}: no frame could be decoded from this video")
            self._count = count
        return self._count

    def frames(self, indices: range) -> Iterator[tuple[int, object]]:
        """(index, frame) for the frames in `indices` (consecutive, ascending), decoding the
        frames before them without converting them."""
        import cv2
        import torch

        if not len(indices):
            return
        capture = self._open()
        try:
            for _ in range(indices.start):
                if not capture.grab():
                    raise SequenceError(f"{self.path}: the video ended before frame {indices.start}")
            for index in indices:
                ok, bgr = capture.read()
                if not ok:
                    raise SequenceError(f"{self.path}: frame {index} could not be decoded")
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield index, torch.from_numpy(rgb).float().div_(255.0)
        finally:
            capture.release()


@dataclass(frozen=True)
class FrameSequence:
    """One sequence input: a folder of frames or a video file, and one job per frame (in order;
    `job.frame` is the frame's position)."""

    source: Path
    jobs: list[Job]
    video: VideoReader | None  # None for a folder of frames


def plan_sequences(inputs: Sequence[str], out: Path, save_crops: bool = False) -> list[FrameSequence]:
    """Sequence inputs -> their frames and outputs. A video is opened and its frames counted now,
    so a file OpenCV cannot read is refused before any work. Raises UsageError."""
    sequences: list[FrameSequence] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                frames = frame_files(path)
            except OSError as error:
                raise UsageError(f"{path}: the folder cannot be read ({error.strerror or error})") from None
            if not frames:
                raise UsageError(f"{path}: no frames ({', '.join(IMAGE_SUFFIXES)}) directly in this folder")
            jobs = [Job(f, out / (f.stem + ".png"), PurePath(f.name), k) for k, f in enumerate(frames)]
            sequences.append(FrameSequence(path, jobs, None))
        elif path.is_file() and is_video(path):
            try:
                reader = VideoReader(path)
                count = reader.count()
            except SequenceError as error:
                raise UsageError(str(error)) from None
            digits = max(6, len(str(count - 1)))
            jobs = []
            for k in range(count):
                target = frame_target(path, out, k, digits)
                jobs.append(Job(path, target, PurePath(target.name), k, video=True))
            sequences.append(FrameSequence(path, jobs, reader))
        elif path.is_file():
            raise UsageError(
                f"{path}: --sequence takes folders of frames or video files ({', '.join(VIDEO_SUFFIXES)}); "
                "restore single images without --sequence"
            )
        elif path.exists():
            raise UsageError(f"{path}: not a file or folder")
        else:
            raise UsageError(f"{path}: no such file or folder")
    check_plan([job for sequence in sequences for job in sequence.jobs], out, save_crops)
    return sequences
