"""`restore --sequence`: a folder of frames or a video file restored with its faces tracked and
smoothed through all the frames, as Detect Faces does with video_smoothing.

Real parts: frames cut from the astronaut photo and moved by a few pixels per frame (a slow pan),
MTCNN, and a randomly initialised tiny RestoreFormer the fixture writes as .safetensors. The video
is a lossless FFV1 file the test writes with OpenCV, so its frames decode to the same pixels as
the PNG frames.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from restoreformer_node.cli import main

FRAMES = 6


@pytest.fixture(scope="module")
def frames(astronaut) -> np.ndarray:
    """[6, 320, 320, 3] uint8: a slow diagonal pan over the astronaut's face."""
    face = astronaut[:320, 64:384]
    return np.stack([np.roll(face, (k, 2 * k), axis=(0, 1)) for k in range(FRAMES)])


@pytest.fixture
def frame_folder(tmp_path, frames) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{k + 1}.png")  # natural order: frame_1 .. frame_6
    return folder


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def restore(*argv) -> int:
    """The command's exit status (argparse's own refusals exit through SystemExit)."""
    try:
        return main(["restore", *map(str, argv), "--device", "cpu"])
    except SystemExit as stop:
        return stop.code


@pytest.mark.slow  # the command, then Detect Faces and three restores of the same frames: ~35 s on 2 shared cores
def test_sequence_equals_detect_faces_tracking_on_the_whole_batch(frame_folder, frames, tiny_weights, mtcnn, tmp_path):
    """Frames searched and restored two at a time get the faces Detect Faces' tracking path finds
    on the whole batch: restoring those faces in the same pairs gives the same pixels. (The pairs
    are kept because the network's float sums differ by ~1e-5 with the batch it runs in.) And the
    tracking matters: smoothing 0 gives different frames."""
    from restoreformer_node.cli.images import encode_png
    from restoreformer_node.faces.detection import FaceSelection, TrackingOptions, find_faces
    from restoreformer_node.faces.pipeline import restore_faces
    from restoreformer_node.runtime import prepare

    out = tmp_path / "out"
    assert restore(frame_folder, "--sequence", "--model", tiny_weights, "--out", out, "--batch", "2") == 0
    images = torch.from_numpy(frames).float().div(255)
    faces = find_faces(mtcnn, images, FaceSelection(), tracking=TrackingOptions(0.5))
    assert len(faces) == FRAMES and {face.track for face in faces.faces} == {0}
    model = prepare(tiny_weights, torch.device("cpu"), "fp32").model
    tracked = [pixels(out / f"frame_{k + 1}.png") for k in range(FRAMES)]
    for first in range(0, FRAMES, 2):
        pair = dataclasses.replace(
            faces,
            faces=tuple(dataclasses.replace(f, image_index=f.image_index - first) for f in faces.faces
                        if first <= f.image_index < first + 2),
            batch_size=2,
        )
        expected = restore_faces(images[first : first + 2], model, pair).images
        for k in (first, first + 1):
            reference = np.asarray(Image.open(io.BytesIO(encode_png(expected[k - first], "RGB"))))
            assert np.array_equal(tracked[k], reference), f"frame {k}"

    per_frame = tmp_path / "per_frame"
    assert restore(frame_folder, "--sequence", "--video-smoothing", "0", "--model", tiny_weights, "--out", per_frame) == 0
    assert any(not np.array_equal(tracked[k], pixels(per_frame / f"frame_{k + 1}.png")) for k in range(FRAMES))


def test_smoothing_zero_is_the_per_frame_restore_bit_for_bit(frame_folder, tiny_weights, tmp_path):
    plain, sequence = tmp_path / "plain", tmp_path / "sequence"
    assert restore(frame_folder, "--model", tiny_weights, "--out", plain) == 0
    assert restore(frame_folder, "--sequence", "--video-smoothing", "0", "--model", tiny_weights, "--out", sequence) == 0
    names = sorted(p.name for p in plain.iterdir())
    assert names == sorted(p.name for p in sequence.iterdir()) and len(names) == FRAMES
    for name in names:
        assert (plain / name).read_bytes() == (sequence / name).read_bytes(), name


def test_a_video_file_gives_the_frames_results_under_sortable_names(frame_folder, frames, tiny_weights, tmp_path, capsys):
    from test_sequence import write_video

    video = write_video(tmp_path / "clip.mkv", frames)
    from_frames, from_video = tmp_path / "from_frames", tmp_path / "from_video"
    assert restore(frame_folder, "--sequence", "--model", tiny_weights, "--out", from_frames, "--batch", "4") == 0
    assert restore(video, "--sequence", "--model", tiny_weights, "--out", from_video, "--batch", "4") == 0
    assert f"{video} frame 5: 1 face restored" in capsys.readouterr().out
    names = sorted(p.name for p in from_video.iterdir())
    assert names == [f"clip_{k:06d}.png" for k in range(FRAMES)]
    for k, name in enumerate(names):
        assert np.array_equal(pixels(from_video / name), pixels(from_frames / f"frame_{k + 1}.png")), name


def test_a_rerun_skips_what_exists_and_restores_a_missing_frame_as_before(frame_folder, tiny_weights, tmp_path, capsys):
    out = tmp_path / "out"
    args = [frame_folder, "--sequence", "--model", tiny_weights, "--out", out, "--batch", "1"]  # restored alone each time
    assert restore(*args) == 0
    first = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()}
    capsys.readouterr()

    assert restore(*args, "--skip-existing") == 0
    said = capsys.readouterr().out.splitlines()
    assert said[0] == f"{FRAMES} outputs already in {out}, skipped (--overwrite replaces them)"
    assert said[-1].startswith(f"0 images, 0 faces, {FRAMES} skipped (exist), ")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.iterdir()} == first

    # one frame lost: only it is restored, and (tracked through all the frames again) as before
    (out / "frame_4.png").unlink()
    assert restore(*args, "--skip-existing", "--quiet") == 0
    said = capsys.readouterr().out.splitlines()
    assert said[-1].startswith(f"1 image, 1 face, {FRAMES - 1} skipped (exist), ")
    assert not any("face restored" in line for line in said)  # --quiet: no line per file
    assert (out / "frame_4.png").read_bytes() == first["frame_4.png"][0]
    assert all((out / name).stat().st_mtime_ns == first[name][1] for name in first if name != "frame_4.png")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--video-smoothing", "0.5"], "--video-smoothing is for videos: add --sequence"),
        (["--sequence", "--video-smoothing", "1.5"], "--video-smoothing must be a number from 0 to 1, got 1.5"),
        (["--sequence", "--max-gap", "-1"], "--max-gap must be 0 or more, got -1"),
        (["--sequence", "--recursive"], "--recursive is for folders of images"),
        (["--overwrite", "--skip-existing"], "not allowed with argument --overwrite"),
    ],
)
def test_sequence_options_are_checked_before_any_work(frame_folder, tiny_weights, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert restore(frame_folder, "--model", tiny_weights, "--out", out, *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_sequence_inputs_must_be_videos_or_frame_folders(tmp_path, tiny_weights, astronaut, capsys):
    photo = tmp_path / "photo.png"
    Image.fromarray(astronaut).save(photo)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"no video")
    out = tmp_path / "out"
    assert restore(photo, "--sequence", "--model", tiny_weights, "--out", out) == 2
    assert "photo.png: --sequence takes folders of frames or video files" in capsys.readouterr().err
    assert restore(broken, "--sequence", "--model", tiny_weights, "--out", out) == 2
    assert "broken.mp4: OpenCV cannot open this as a video" in capsys.readouterr().err
    assert restore(broken, "--model", tiny_weights, "--out", out) == 2
    assert "broken.mp4: a video file; restore its frames with --sequence" in capsys.readouterr().err
    assert not out.exists()

