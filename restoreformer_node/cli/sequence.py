"""The frames of one video for `restore --sequence`: a folder of frame images or a video file.

A folder's frames are its image files in natural order (frame_2 before frame_10); a video file is
decoded by OpenCV (which comes with facexlib), one frame at a time, so a long video never sits in
memory: the command reads it twice, once to find the faces and once to restore them.

Outputs: a frame file `NAME.ext` gives `OUT/NAME.png` (as for any folder); frame k of a video
`clip.mp4` gives `OUT/clip_<k, six digits>.png`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ..options import IMAGE_SUFFIXES, VIDEO_SUFFIXES


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


def frame_target(video: Path, out: Path, index: int) -> Path:
    return out / f"{video.stem}_{index:06d}.png"


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
