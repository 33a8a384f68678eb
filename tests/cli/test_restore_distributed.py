"""`restore` under torchrun: two CPU processes (gloo) on 127.0.0.1, each restoring its own share.

Real parts: photos from the test fixtures, MTCNN, a randomly initialised tiny RestoreFormer the
fixture writes as .safetensors. torchrun's --tee labels every line with the local rank that
printed it ("[default1]:..."), which is how the test knows which process wrote which file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO
from helpers.live_server import free_port
from PIL import Image

LINE = re.compile(r"^\[default(\d)\]:(.*)$")


def torchrun(tmp_path: Path, *argv) -> tuple[int, dict[int, list[str]]]:
    """Run `restore ARGV` in two processes; (exit status, each rank's lines, stdout and stderr)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), "--log-dir", str(tmp_path / "torchrun-logs"), "--tee", "3",
        "-m", "restoreformer_node", "restore", *map(str, argv), "--device", "cpu",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    lines: dict[int, list[str]] = {0: [], 1: []}
    for line in (run.stdout + run.stderr).splitlines():
        match = LINE.match(line)
        if match:
            lines[int(match.group(1))].append(match.group(2))
    return run.returncode, lines


def written(lines: list[str]) -> list[str]:
    """The outputs a process says it wrote."""
    return [line.rsplit(" -> ", 1)[1] for line in lines if " -> " in line]


def summaries(lines: list[str]) -> list[str]:
    return [line for line in lines if re.match(r"\d+ images?, \d+ faces?", line)]


@pytest.mark.slow  # three interpreters per run, MTCNN and the network on 2 shared cores: ~40 s
def test_two_processes_write_every_input_once_and_rank_0_sums_up(tmp_path, tiny_weights, astronaut, grace_hopper):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "astronaut.png")
    Image.fromarray(astronaut).convert("L").save(src / "astronaut_gray.jpg", quality=95)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(grace_hopper).save(src / "hopper.png")
    Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(src / "wall.png")
    inputs = sorted(src.iterdir())  # the order the inputs are planned in; rank r takes inputs[r::2]

    status, lines = torchrun(tmp_path, src, "--model", tiny_weights, "--out", out)
    assert status != 0, lines  # a file failed on rank 0: the run fails
    for rank in (0, 1):
        share = [p for p in inputs[rank::2] if p.name != "broken.png"]
        assert sorted(written(lines[rank])) == sorted(str(out / (p.stem + ".png")) for p in share), lines[rank]
    everything = written(lines[0]) + written(lines[1])
    assert len(everything) == len(set(everything)) == 4  # every good input exactly once
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "astronaut_gray.png", "hopper.png", "wall.png"]
    assert any(line.startswith(f"{src / 'broken.png'}: cannot be read") for line in lines[0])
    assert summaries(lines[1]) == []
    assert [s.rsplit(", ", 1)[0] for s in summaries(lines[0])] == ["4 images, 3 faces, 1 file failed"]

    # a rerun without the broken file restores nothing, says so, and touches nothing
    (src / "broken.png").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    status, lines = torchrun(tmp_path, src, "--model", tiny_weights, "--out", out, "--skip-existing")
    assert status == 0, lines
    assert f"[rank 0/2] 2 outputs already in {out}, skipped (--overwrite replaces them)" in lines[0]
    assert f"[rank 1/2] 2 outputs already in {out}, skipped (--overwrite replaces them)" in lines[1]
    assert [s.rsplit(", ", 1)[0] for s in summaries(lines[0])] == ["0 images, 0 faces, 4 skipped (exist)"]
    assert written(lines[0]) + written(lines[1]) == []
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.slow  # 16 frames searched and restored by two processes and by one: ~60 s
def test_a_sequence_split_over_two_processes_equals_one_process(tmp_path, tiny_weights, astronaut, one_thread):
    """Each process takes a contiguous block of 8 frames (one detector chunk); the detections are
    exchanged, so the tracks and the smoothing see the whole sequence and the seam leaves no mark:
    the frames are the same bit for bit as one process's with as many threads (one: a float sum's
    last bits depend on how many threads split it)."""
    from restoreformer_node.cli import main

    frames = tmp_path / "frames"
    frames.mkdir()
    face = astronaut[:256, 96:352]
    for k in range(16):
        Image.fromarray(np.roll(face, (k // 2, k), axis=(0, 1))).save(frames / f"f{k}.png")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["restore", str(frames), "--sequence", "--model", str(tiny_weights), "--out", str(one),
                 "--device", "cpu", "--quiet"]) == 0
    status, lines = torchrun(tmp_path, frames, "--sequence", "--model", tiny_weights, "--out", two)
    assert status == 0, lines
    assert sorted(written(lines[0])) == sorted(str(two / f"f{k}.png") for k in range(8))
    assert sorted(written(lines[1])) == sorted(str(two / f"f{k}.png") for k in range(8, 16))
    assert f"{frames}: 1 face track through 16 frames" in lines[0]
    assert not any("face track" in line for line in lines[1])  # said once, by rank 0
    assert [s.rsplit(", ", 1)[0] for s in summaries(lines[0])] == ["16 images, 16 faces"]
    for k in range(16):
        assert (two / f"f{k}.png").read_bytes() == (one / f"f{k}.png").read_bytes(), k
