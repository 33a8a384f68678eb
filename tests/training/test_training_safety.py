"""No training command runs code from a file, and --resume survives a damaged newest checkpoint.

Every entry point that reads a file is fed a pickle whose unpickling would run `touch MARKER` (a
`__reduce__` to os.system), in torch's zip format and as a plain pickle stream: `--set init.stage1=`,
`export --checkpoint`, `--resume` (a planted newest checkpoint) and the loss networks' weight files
(VGG, LPIPS heads, ArcFace). Each payload is first shown to be live (a normal torch.load runs it, in a
separate process), so the tests could fail. Networks are tiny random initialisations of the real
architectures; the runs are the real Trainer and command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import REPO
from helpers.training_data import stage1_tiny_config, write_face_folder, write_payload

from training.__main__ import main
from training.config import load_config
from training.stage1 import Stage1Config, build
from training.trainer import list_checkpoints

ROOT = REPO
CONFIGS = ROOT / "training" / "configs"


# Every test on one intra-op thread (conftest's fixture): the runs compare numbers across processes.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces(tmp_path_factory, astronaut, grace_hopper):
    return write_face_folder(tmp_path_factory.mktemp("faces"), astronaut, grace_hopper, generated=2)


@pytest.fixture(scope="module")
def run(faces, tmp_path_factory):
    """A finished 6-step stage-1 run with checkpoints at steps 3 and 6 (copied per test)."""
    out = tmp_path_factory.mktemp("run") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests that resume it (module fixtures start before `one_thread`)
    try:
        build(load_config(Stage1Config, data=stage1_tiny_config(faces, out))).fit()
    finally:
        torch.set_num_threads(before)
    return out


def copy_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


def yaml_for(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def payload(tmp_path: Path, name: str, kind: str, checkpoint_like: bool = True) -> tuple[Path, Path]:
    """(payload file, its marker); the payload is checked to be live first (then the marker removed)."""
    marker = tmp_path / f"{name}.marker"
    path = write_payload(tmp_path / name, marker, kind, checkpoint_like)
    code = ("import torch, sys; torch.load(sys.argv[1], weights_only=False)" if kind == "zip"
            else "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))")
    subprocess.run([sys.executable, "-c", code, str(path)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                   capture_output=True, timeout=120)
    assert marker.exists(), "the payload does not run when loaded normally: the test would prove nothing"
    marker.unlink()
    return path, marker


# ---- our checkpoint format ----------------------------------------------------------------------


def test_checkpoints_need_no_global_beyond_torchs_weights_only_set(run):
    from training.trainer import rng_state, set_rng_state

    path = list_checkpoints(run / "checkpoints")[-1][1]
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain torch, nothing allow-listed
    assert state["format"] == "restoreformer-training-checkpoint/2" and state["step"] == 6
    assert set(state["optimizers"]) == {"generator", "discriminator"} and state["schedulers"]
    # The RNG states survive as tensors and numbers: restoring them replays the same draws.
    import random

    import numpy as np

    saved = rng_state(torch.device("cpu"))
    first = (random.random(), float(np.random.rand()), float(torch.rand(())), np.random.randn())
    set_rng_state(saved, torch.device("cpu"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(())), np.random.randn()) == first


# ---- payloads through each entry point -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_init_stage1_payload_never_runs(faces, tmp_path, capsys, kind):
    evil, marker = payload(tmp_path, "evil.pt", kind)
    from training.landmarks import compute_landmarks

    compute_landmarks(faces)
    config = CONFIGS / "stage2_tiny_cpu.yaml"
    code = main(["stage2", "--config", str(config), "--set", f"data.root={faces}", "--set",
                 f"run.out_dir={tmp_path / 'run'}", "--set", f"init.stage1={evil}", "--set", "run.steps=1"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(evil) in err and "stage-1 network (init.stage1)" in err and "run code" in err
    assert "posix.system" in err and "RestoreFormer weights" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_export_payload_never_runs(tmp_path, capsys, kind):
    evil, marker = payload(tmp_path, "step_00000003.pt", kind)
    code = main(["export", "--checkpoint", str(evil), "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists() and not (tmp_path / "x.safetensors").exists()
    assert f"training checkpoint '{evil}'" in err and "run code" in err


def test_export_of_a_run_folder_skips_a_planted_newest_checkpoint(run, tmp_path, capsys):
    folder = copy_run(run, tmp_path / "run")
    evil, marker = payload(tmp_path, "evil.pt", "zip")
    planted = folder / "checkpoints" / "step_00000009.pt"
    planted.write_bytes(evil.read_bytes())
    out = tmp_path / "x.safetensors"
    assert main(["export", "--checkpoint", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert not marker.exists() and out.exists()
    assert str(planted) in err and "step_00000006.pt" in err
    assert planted.exists()  # export only reads


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_resume_payload_never_runs_and_the_run_continues_from_the_intact_checkpoint(run, faces, tmp_path, capsys,
                                                                                    kind):
    folder = copy_run(run, tmp_path / "run")
    evil, marker = payload(tmp_path, "evil.pt", kind)
    planted = folder / "checkpoints" / "step_00000009.pt"
    planted.write_bytes(evil.read_bytes())
    cfg = yaml_for(stage1_tiny_config(faces, folder, run=dict(steps=8, checkpoint_every=100)), tmp_path / "c.yaml")
    assert main(["stage1", "--config", str(cfg), "--resume"]) == 0
    captured = capsys.readouterr()
    assert not marker.exists()
    assert str(planted) in captured.err and "run code" in captured.err
    assert "step_00000006.pt" in captured.err and "resumed from" in captured.out
    assert not planted.exists() and (folder / "checkpoints" / "step_00000009.pt.refused").exists()  # kept aside


@pytest.mark.parametrize("key", ["loss.perceptual.vgg_weights", "loss.perceptual.lpips_heads"])
def test_loss_network_weight_file_payload_never_runs(faces, tmp_path, capsys, key):
    evil, marker = payload(tmp_path, "vgg.pth", "pickle", checkpoint_like=False)
    cfg = stage1_tiny_config(faces, tmp_path / "run", run=dict(steps=1))
    cfg["loss"] = dict(cfg["loss"], allow_random_loss_networks=False, perceptual=dict(kind="lpips", weight=1.0))
    other = "loss.perceptual.lpips_heads" if key.endswith("vgg_weights") else "loss.perceptual.vgg_weights"
    heads = tmp_path / "fine.pth"
    torch.save({"x": torch.zeros(1)}, heads)
    code = main(["stage1", "--config", str(yaml_for(cfg, tmp_path / "c.yaml")), "--set", f"{key}={evil}",
                 "--set", f"{other}={heads}"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(evil) in err and key in err and "run code" in err


def test_arcface_weight_file_payload_never_runs(tmp_path):
    from training.errors import TrainingFileError
    from training.losses.identity import load_arcface

    evil, marker = payload(tmp_path, "arcface_resnet18.pth", "zip", checkpoint_like=False)
    with pytest.raises(TrainingFileError, match="loss.identity.weights.*run code") as info:
        load_arcface(str(evil), config_key="loss.identity.weights")
    assert info.value.kind == "code" and not marker.exists()


# ---- damaged checkpoints ---------------------------------------------------------------------------


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if how == "truncated" else b"this is not a checkpoint\n" * 40)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_resume_from_damaged_newest_names_it_and_continues_exactly(run, faces, tmp_path, capsys, how):
    """Newest checkpoint (step 6) damaged: the run names it, keeps it as .damaged, resumes from step 3 and
    ends with the weights of an uninterrupted run."""
    folder = copy_run(run, tmp_path / "run")
    newest = folder / "checkpoints" / "step_00000006.pt"
    damage(newest, how)
    before = newest.read_bytes()
    cfg = stage1_tiny_config(faces, folder)
    trainer = build(load_config(Stage1Config, data=cfg))
    trainer.fit(resume=True)
    captured = capsys.readouterr()
    assert f"'{newest}'" in captured.err and "damaged" in captured.err
    assert "step_00000003.pt" in captured.err and trainer.resumed_from.name == "step_00000003.pt"
    kept = folder / "checkpoints" / "step_00000006.pt.damaged"
    assert kept.read_bytes() == before  # nothing deleted
    assert trainer.step == 6
    reference = torch.load(run / "checkpoints" / "step_00000006.pt", weights_only=True)
    for name, module in trainer.modules.items():
        for key, value in module.state_dict().items():
            torch.testing.assert_close(value, reference["modules"][name][key], rtol=0, atol=1e-6)


def test_resume_with_no_intact_checkpoint_is_one_clear_error(run, faces, tmp_path, capsys):
    folder = copy_run(run, tmp_path / "run")
    for _, path in list_checkpoints(folder / "checkpoints"):
        damage(path, "truncated")
    sizes = {p.name: p.stat().st_size for p in (folder / "checkpoints").iterdir()}
    cfg = yaml_for(stage1_tiny_config(faces, folder), tmp_path / "c.yaml")
    assert main(["stage1", "--config", str(cfg), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "no checkpoint in it is intact" in err and "step_00000003.pt" in err and "step_00000006.pt" in err
    assert {p.name: p.stat().st_size for p in (folder / "checkpoints").iterdir()} == sizes  # nothing touched


def test_export_of_a_damaged_file_names_it(run, tmp_path, capsys):
    folder = copy_run(run, tmp_path / "run")
    path = folder / "checkpoints" / "step_00000006.pt"
    damage(path, "truncated")
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"training checkpoint '{path}'" in err and "damaged" in err and "Traceback" not in err


def test_init_stage1_reads_our_checkpoint_and_names_a_truncated_one(run, tmp_path):
    from training.errors import TrainingFileError
    from training.stage2 import read_stage1

    source = read_stage1(str(run))
    assert source.discriminator is not None and source.config.heads == 8
    path = copy_run(run, tmp_path / "run") / "checkpoints" / "step_00000006.pt"
    damage(path, "truncated")
    with pytest.raises(TrainingFileError, match="stage-1 network .init.stage1.*damaged") as info:
        read_stage1(str(path))
    assert info.value.kind == "damaged"


def test_evaluate_weight_file_payload_never_runs(faces, tmp_path, capsys):
    evil, marker = payload(tmp_path, "arcface_resnet18.pth", "pickle", checkpoint_like=False)
    code = main(["evaluate", "--restored", str(faces), "--gt", str(faces), "--arcface", str(evil), "--no-fid",
                 "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(evil) in err and "--arcface" in err and "run code" in err
