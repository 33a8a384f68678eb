"""The command line against bad arguments, hostile files and odd images (issue 15): every argument
is checked before any work with one line and status 2; outputs stay inside --out, never replace an
input and never follow a planted link; every per-file failure stays per file (status 1, counted in
the summary); every pixel format is written at its own scale or refused with a reason.

The weights are a randomly initialised RestoreFormer at the tiny test geometry, written by the test
(pretrained weights cannot be had offline); faces come from MTCNN.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO
from helpers import hostile as h
from helpers.models import random_restoreformer
from PIL import Image

from restoreformer_node.cli import main


@pytest.fixture(scope="module")
def weights(tiny_weights) -> Path:
    return tiny_weights


@pytest.fixture(scope="module")
def overflowing_weights(tmp_path_factory) -> Path:
    """Finite weights whose output is not: the last convolution's weights are +-3e38, so its sums
    meet +inf and -inf and give NaN (what an fp16 overflow or a bad fine-tune does)."""
    from restoreformer_node.weights import save_restoreformer

    net = random_restoreformer()
    with torch.no_grad():
        w = net.decoder.conv_out.weight
        sign = torch.ones_like(w)
        sign.view(-1)[::2] = -1
        w.copy_(sign * 3e38)
    path = tmp_path_factory.mktemp("models") / "overflowing.safetensors"
    save_restoreformer(net, path, net.config)
    return path


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory) -> Path:
    """A weight file that tries to run code: passed as --model where an argument error must be
    found first, it shows that no model was loaded before the arguments were checked."""
    path = tmp_path_factory.mktemp("models") / "payload.pth"
    return h.torch_zip(path, h.calls("posix", "system", "REDUCE", "touch /tmp/never"))


def wall(path: Path, size=(96, 64), value=90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def restore(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    code = main(["restore", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def one_line_error(code: int, err: list[str], *words: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    for word in words:
        assert word in err[0], err[0]


# --- arguments: checked before any work, one line, status 2 -----------------------------------


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--device", "nonsense"], ["--device 'nonsense'"]),
        (["--device", "cuda:99"], ["--device cuda:99"]),
        (["--device", "meta"], ["--device meta"]),
        (["--erode", "nan"], ["--erode", "nan"]),
        (["--erode", "inf"], ["--erode"]),
        (["--erode", "-1"], ["--erode"]),
        (["--feather", "nan"], ["--feather", "nan"]),
        (["--feather=-inf"], ["--feather"]),
        (["--strength", "nan"], ["--strength"]),
        (["--batch", "0"], ["--batch"]),
        (["--max-pixels", "0"], ["--max-pixels"]),
        (["--detector", "retinaface_resnet50"], ["needs --detector-weights"]),
        (["--detector", "retinaface_resnet50", "--detector-weights", "/nonexistent/w.pth"], ["--detector-weights", "no such file"]),
        (["--detector-weights", "WEIGHTS"], ["--detector-weights is for the retinaface detectors"]),
        (["--out", "FILE"], ["--out", "is a file"]),
        (["--out", "FILE/sub"], ["--out", "is a file"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None,
)
def test_arguments_are_checked_before_any_work(extra, words, tmp_path, hostile_model, weights, capsys):
    """Each gave a raw traceback (some after all the work was done) or ran and silently wrote the
    input unchanged (non-finite --feather/--erode). The --model here is a refused file: the
    argument error comes first, so nothing was loaded, and nothing is written."""
    image = wall(tmp_path / "in" / "x.png")
    file = tmp_path / "a_file"
    file.write_text("keep")
    extra = [str(file) if a == "FILE" else str(file / "sub") if a == "FILE/sub" else str(weights) if a == "WEIGHTS" else a
             for a in extra]
    out = tmp_path / "out"
    if "--out" not in extra:
        extra += ["--out", str(out)]
    code, _, err = restore(capsys, str(image), "--model", str(hostile_model), "--device", "cpu", *extra)
    one_line_error(code, err, *words)
    assert not out.exists() and file.read_text() == "keep"


def test_device_that_exists_but_is_not_here_is_refused(tmp_path, weights, capsys):
    image = wall(tmp_path / "x.png")
    device = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    code, _, err = restore(capsys, str(image), "--model", str(weights), "--out", str(tmp_path / "o"), "--device", device)
    one_line_error(code, err, f"--device {device}")


@pytest.mark.parametrize("kind", ["code", "deep", "not-retinaface"])
def test_bad_detector_weights_are_refused_in_one_line(kind, tmp_path, weights, capsys):
    """Hostile detector weights were refused safely, but with a traceback."""
    marker = tmp_path / "ran"
    path = tmp_path / "detection_mobilenet0.25_Final.pth"
    if kind == "code":
        h.torch_zip(path, h.calls("posix", "system", "REDUCE", f"touch {marker}"))
        words = ["tries to run code", "posix.system"]
    elif kind == "deep":
        h.torch_zip(path, h.nested(100_000, "list"), deflate=True)
        words = ["nesting depth"]
    else:
        shutil.copy(weights, path)
        words = ["--detector-weights", "does not fit"]
    image = wall(tmp_path / "x.png")
    code, _, err = restore(capsys, str(image), "--model", str(weights), "--out", str(tmp_path / "o"),
                           "--device", "cpu", "--detector", "retinaface_mobilenet0.25", "--detector-weights", str(path))
    one_line_error(code, err, path.name, *words)
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_unwritable_out_is_refused_before_any_work(tmp_path, weights):
    image = wall(tmp_path / "x.png")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    command = h.unprivileged([sys.executable, "-m", "restoreformer_node", "restore", str(image), "--model",
                             str(weights), "--out", str(locked / "out"), "--device", "cpu"])
    if command is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0] and "not writable" in lines[0], run.stderr
    assert not (locked / "out").exists()


def test_convert_refuses_a_folder_as_output(tmp_path, weights, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    assert main(["convert", str(weights), str(folder)]) == 2
    err = capsys.readouterr().err.splitlines()
    one_line_error(2, err, "OUTPUT", "is a folder")
    named = tmp_path / "x.safetensors"
    named.mkdir()
    assert main(["convert", str(weights), str(named), "--force"]) == 2
    one_line_error(2, capsys.readouterr().err.splitlines(), "is a folder")
    assert list(folder.iterdir()) == [] and list(named.iterdir()) == []


# --- outputs never replace inputs -------------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["out-inside-recursive", "out-is-input", "case-differs", "out-links-to-input",
                                  "target-links-to-input"])
def test_an_output_is_never_an_input(case, tmp_path, weights, capsys):
    """--recursive with --out inside the input tree and --overwrite replaced an input file. Any
    output that is an input (resolved, case and links included) is refused before any work."""
    src = tmp_path / "in"
    wall(src / "x.png")
    args = [str(src), "--model", str(weights), "--device", "cpu", "--overwrite"]
    if case == "out-inside-recursive":  # a previous run's output is now an input too
        wall(src / "restored" / "x.png", value=10)
        args += ["--recursive", "--out", str(src / "restored")]
    elif case == "out-is-input":
        args += ["--out", str(src)]
    elif case == "case-differs":  # one file on Windows and macOS
        (src / "x.png").rename(src / "X.PNG")
        args += ["--out", str(src)]
    elif case == "out-links-to-input":
        (tmp_path / "out").symlink_to(src, target_is_directory=True)
        args += ["--out", str(tmp_path / "out")]
    else:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "x.png").symlink_to(src / "x.png")
        args += ["--out", str(tmp_path / "out")]
    before = _tree(src)
    code, _, err = restore(capsys, *args)
    one_line_error(code, err, "is the input file")
    assert _tree(src) == before


def test_outputs_that_differ_only_in_case_are_refused(tmp_path, weights, capsys):
    """X.png and x.png are two files here and one on Windows and macOS: the plan is refused
    wherever it runs, before any work."""
    src = tmp_path / "in"
    wall(src / "X.png")
    wall(src / "x.png", value=20)
    code, _, err = restore(capsys, str(src), "--model", str(weights), "--out", str(tmp_path / "out"), "--device", "cpu")
    one_line_error(code, err, "would both be written", "differ only in case")
    assert not (tmp_path / "out").exists()


# --- crops: mirrored, and --overwrite obeyed for every file ------------------------------------


def test_crops_mirror_the_input_tree_and_obey_overwrite(tmp_path, weights, astronaut, grace_hopper, capsys):
    """Crops of same-named files in two folders collided into one file, and existing crops were
    replaced without --overwrite."""
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    Image.fromarray(astronaut).save(src / "a" / "p.png")
    Image.fromarray(grace_hopper).save(src / "b" / "p.png")
    out = tmp_path / "out"
    code, lines, err = restore(capsys, str(src), "--recursive", "--save-crops", "--model", str(weights), "--out",
                               str(out), "--device", "cpu")
    assert code == 0, err
    a, b = out / "crops" / "a" / "p_face0.png", out / "crops" / "b" / "p_face0.png"
    assert a.is_file() and b.is_file() and a.read_bytes() != b.read_bytes()
    assert sorted(p.name for p in out.rglob("*.png")) == ["p.png", "p.png", "p_face0.png", "p_face0.png"]

    (out / "a" / "p.png").unlink()  # the image is restored again, its crop exists
    a.write_bytes(b"keep")
    code, lines, err = restore(capsys, str(src), "--recursive", "--save-crops", "--model", str(weights), "--out",
                               str(out), "--device", "cpu")
    assert code == 0 and a.read_bytes() == b"keep"
    assert any(f"crop {a} exists, skipped" in line for line in lines), lines


def test_restored_images_never_land_among_the_crops(tmp_path, weights, capsys):
    src = tmp_path / "in"
    wall(src / "crops" / "x_face0.png")
    code, _, err = restore(capsys, str(src), "--recursive", "--save-crops", "--model", str(weights), "--out",
                           str(tmp_path / "out"), "--device", "cpu")
    one_line_error(code, err, "among the crops")
    assert not (tmp_path / "out").exists()


# --- writing: inside --out, never through links, temporary files created exclusively ----------


def test_planted_links_in_out_are_never_followed(tmp_path, weights, capsys):
    """Outputs went through a predictable NAME.png.part that followed links: a planted link made
    the PNG land outside --out. Now temporary names are fresh and created exclusively, and links
    inside --out (a planted sub-folder link too) are refused, per file."""
    src = tmp_path / "in"
    wall(src / "x.png")
    wall(src / "sub" / "y.png")
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.png.part").symlink_to(outside / "planted.png")
    (out / "sub").symlink_to(outside, target_is_directory=True)
    code, lines, err = restore(capsys, str(src), "--recursive", "--model", str(weights), "--out", str(out),
                               "--device", "cpu")
    assert code == 1
    assert list(outside.iterdir()) == []  # nothing landed outside --out
    assert (out / "x.png").is_file() and not (out / "x.png").is_symlink()
    assert np.array_equal(np.asarray(Image.open(out / "x.png")), np.asarray(Image.open(src / "x.png")))
    assert any("y.png" in line and "link" in line and "not restored" in line for line in err), err
    assert lines[-1].startswith("1 image, 0 faces, 1 file failed")
    assert sorted(p.name for p in out.iterdir()) == ["sub", "x.png", "x.png.part"]  # no temporary left


# --- pixel formats --------------------------------------------------------------------------


def _gradient(h_: int = 64, w: int = 80) -> np.ndarray:
    return np.linspace(0.0, 1.0, h_ * w, dtype=np.float64).reshape(h_, w)


def _write_inputs(src: Path) -> dict[str, object]:
    """Flat or smooth images (no face, so written unchanged) in every format, and the pixel values
    each output must hold."""
    src.mkdir()
    g = _gradient()
    expected: dict[str, object] = {}
    Image.fromarray(g.astype(np.float32)).save(src / "float.tif")
    expected["float.png"] = np.round(g * 65535).astype(np.uint16)
    i32 = np.round(g * (2**31 - 1)).astype(np.int32)
    Image.fromarray(i32).save(src / "int32.tif")
    expected["int32.png"] = np.round(i32 / (2**31 - 1) * 65535).astype(np.uint16)
    u16 = np.round(g * 65535).astype(np.uint16)
    Image.fromarray(u16).save(src / "gray16.png")
    expected["gray16.png"] = u16
    palette = Image.fromarray((g * 3).astype(np.uint8)).convert("P")
    palette.info["transparency"] = 0
    palette.save(src / "palette.png", transparency=0)
    expected["palette.png"] = np.asarray(Image.open(src / "palette.png").convert("RGBA"))
    cmyk = Image.fromarray(np.full((64, 80, 4), (10, 200, 30, 5), np.uint8), "CMYK")
    cmyk.save(src / "cmyk.tif")
    expected["cmyk.png"] = np.asarray(cmyk.convert("RGB"))
    frames = [Image.fromarray(np.full((64, 80, 3), v, np.uint8)) for v in (40, 200)]
    frames[0].save(src / "animated.png", save_all=True, append_images=frames[1:])
    expected["animated.png"] = np.asarray(frames[0])
    return expected


def test_every_pixel_format_is_written_at_its_own_scale(tmp_path, weights, capsys):
    """Float and 32-bit integer TIFFs were written black ("written unchanged", mean 0.0); 16-bit
    gray lost its low byte. Each format is read by its own range and written back exactly (16-bit
    gray PNG for the wide ones), colour spaces and animation are said."""
    src = tmp_path / "in"
    expected = _write_inputs(src)
    out = tmp_path / "out"
    code, lines, err = restore(capsys, str(src), "--model", str(weights), "--out", str(out), "--device", "cpu")
    assert code == 0, err
    for name, want in expected.items():
        got = np.asarray(Image.open(out / name))
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.abs(got.astype(np.int64) - want.astype(np.int64)).max() <= 1, name
    said = "\n".join(lines)
    assert "animated.png" in said and "only the first frame was restored" in said
    assert "CMYK colours converted to RGB" in said
    assert "32-bit float gray written as a 16-bit PNG" in said


@pytest.mark.parametrize("bad", ["nan.tif", "truncated.png", "truncated.jpg", "bomb.png", "empty.png", "text.png"])
def test_a_bad_file_fails_alone_and_the_batch_goes_on(bad, tmp_path, weights, capsys):
    """A 13000x13000 PNG of 0.5 MB took 8.5 GB and a traceback, and the good images after it were
    never restored. Each bad file is refused from what it declares (before decoding), the others
    of its folder and batch are restored, and the status and summary count the failure."""
    src = tmp_path / "in"
    for name in ("a.png", "c.png"):
        wall(src / name)
    path = src / bad
    if bad == "nan.tif":
        g = _gradient().astype(np.float32)
        g[3, 4] = np.nan
        Image.fromarray(g).save(path)
        words = "NaN"
    elif bad.startswith("truncated"):
        wall(tmp_path / ("full" + path.suffix))
        full = (tmp_path / ("full" + path.suffix)).read_bytes()
        path.write_bytes(full[: len(full) * 2 // 3])
        words = "damaged or truncated"
    elif bad == "bomb.png":
        Image.new("1", (10_000, 6_000)).save(path)
        assert path.stat().st_size < 200_000
        words = "--max-pixels"
    elif bad == "empty.png":
        path.write_bytes(b"")
        words = "not an image"
    else:
        path.write_text("<html>not an image</html>")
        words = "not an image"
    out = tmp_path / "out"
    code, lines, err = restore(capsys, str(src), "--model", str(weights), "--out", str(out), "--device", "cpu")
    assert code == 1
    assert any(line.startswith(str(path)) and words in line and "not restored" in line for line in err), err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert lines[-1].startswith("2 images, 0 faces, 1 file failed")


def test_the_pixel_limit_is_documented_and_can_be_raised(tmp_path, weights, capsys):
    image = wall(tmp_path / "x.png", size=(300, 200))
    code, _, err = restore(capsys, str(image), "--model", str(weights), "--out", str(tmp_path / "o"), "--device",
                           "cpu", "--max-pixels", "50000")
    assert code == 1 and "60,000 pixels, more than the limit of 50,000" in err[0]
    code, _, err = restore(capsys, str(image), "--model", str(weights), "--out", str(tmp_path / "o"), "--device",
                           "cpu", "--max-pixels", "60000")
    assert code == 0 and (tmp_path / "o" / "x.png").is_file()
    readme = (REPO / "README.md").read_text()
    assert "--max-pixels" in readme and "50,000,000" in readme


# --- non-finite output: the original face is kept, and the face counts as failed ---------------


def test_a_face_whose_output_is_not_finite_keeps_the_original(tmp_path, overflowing_weights, astronaut, capsys):
    """NaN output pasted a black face with status 0 and "1 face restored"."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "astronaut.png")
    out = tmp_path / "out"
    code, lines, err = restore(capsys, str(src), "--model", str(overflowing_weights), "--out", str(out),
                               "--device", "cpu", "--save-crops")
    assert code == 1
    assert any("0 faces restored, 1 failed" in line and "not finite" in line for line in err), err
    assert np.array_equal(np.asarray(Image.open(out / "astronaut.png")), astronaut)  # untouched
    assert not (out / "crops").exists()
    assert lines[-1].startswith("1 image, 0 faces, 1 face failed")


def test_exit_status_is_documented():
    readme = (REPO / "README.md").read_text()
    table = readme.split("| exit status |", 1)[1].split("\n\n", 1)[0]
    for status in ("| 0 |", "| 1 |", "| 2 |"):
        assert status in table
