"""Reading one video for `restore --sequence`: frame folders in natural order, video files frame by
frame (a lossless FFV1 video written by the test with OpenCV, so frames compare exactly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from restoreformer_node.cli.sequence import SequenceError, VideoReader, frame_files, natural_key


def write_video(path: Path, frames_rgb: np.ndarray, fps: float = 25.0) -> Path:
    """uint8 [T, H, W, 3] RGB -> a lossless FFV1 .mkv."""
    import cv2

    t, h, w, _ = frames_rgb.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames_rgb:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    return path


def test_frames_are_in_natural_order(tmp_path):
    for name in ("frame_10.png", "frame_2.png", "frame_1.png", "Frame_3.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "frame_0.png").mkdir()  # a folder is not a frame
    assert [p.name for p in frame_files(tmp_path)] == ["frame_1.png", "frame_2.png", "Frame_3.jpg", "frame_10.png"]
    assert natural_key(Path("a9")) < natural_key(Path("a10"))


def test_a_video_is_read_frame_by_frame_and_exactly(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (7, 48, 64, 3), dtype=np.uint8)
    video = VideoReader(write_video(tmp_path / "clip.mkv", frames))
    assert video.count() == 7
    got = list(video.frames(range(2, 5)))
    assert [i for i, _ in got] == [2, 3, 4]
    for index, frame in got:
        assert frame.dtype == torch.float32 and frame.shape == (48, 64, 3)
        assert torch.equal((frame * 255).round().to(torch.uint8), torch.from_numpy(frames[index]))
    assert list(video.frames(range(0))) == []
    with pytest.raises(SequenceError, match="ended before frame 9"):
        list(video.frames(range(9, 10)))


def test_a_file_that_is_no_video_is_named(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SequenceError, match="broken.mp4: OpenCV cannot open this as a video"):
        VideoReader(bad)
