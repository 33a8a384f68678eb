"""Weight files: every accepted layout loads strictly and round-trips bit-identically through
conversion; bad files (code-carrying pickles, corrupt bytes, other architectures, partial or
wrong-variant weights) give the promised errors.

All weight files are written by the tests from randomly initialised networks of the real
architecture (tiny geometry; pretrained weights cannot be had offline and tests never download).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import REPO
from helpers.weights import (
    calibrated_restoreformer,
    esrgan_state_dict,
    image_batch,
    lightning_checkpoint,
    write_gfpgan,
    write_lightning,
)
from safetensors import safe_open
from safetensors.torch import save_file

from restoreformer_node import cli
from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, tiny_config
from restoreformer_node.weights import (
    FORMAT_VERSION,
    LAYOUT_BARE,
    LAYOUT_LIGHTNING,
    LAYOUT_OURS,
    LAYOUT_PARAMS,
    LAYOUT_PARAMS_EMA,
    LAYOUT_SAFETENSORS,
    WeightLoadError,
    load_restoreformer,
    read_state_dict,
    save_restoreformer,
)

VARIANTS = {"RF": RESTOREFORMER, "RF++": RESTOREFORMER_PLUSPLUS}


# One intra-op thread for the module: its outputs are compared bit for bit with module-scoped ones.
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def x(astronaut) -> torch.Tensor:
    return image_batch(astronaut, 64, batch=1)


@pytest.fixture(scope="module")
def nets(x):
    """name -> (model, its output on x) for a tiny RF and a tiny RF++."""
    out = {}
    for seed, (name, base) in enumerate(VARIANTS.items()):
        model = calibrated_restoreformer(tiny_config(base), x, seed=seed)
        with torch.no_grad():
            out[name] = (model, model(x))
    return out


def run(model, x) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def assert_same_weights(loaded, model) -> None:
    """Identical tensors under identical names (so outputs are identical too; the round-trip
    tests check outputs directly)."""
    got, want = loaded.state_dict(), model.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def convert(src: Path, dst: Path) -> Path:
    assert cli.main(["convert", str(src), str(dst)]) == 0
    return dst


def assert_load_convert_load(path: Path, layout: str, name: str, nets, x, tmp_path) -> None:
    model, expected = nets[name]
    loaded = load_restoreformer(path)
    assert loaded.weights_info.layout == layout
    assert loaded.config == model.config  # variant and heads detected, geometry read from shapes
    assert not loaded.training
    assert torch.equal(run(loaded, x), expected)

    converted = convert(path, tmp_path / "converted.safetensors")
    again = load_restoreformer(converted)
    assert again.weights_info.layout == LAYOUT_OURS
    assert again.weights_info.source == path.name
    assert again.config == model.config
    assert torch.equal(run(again, x), expected)
    with safe_open(converted, framework="pt") as f:
        meta = f.metadata()
    assert meta["variant"] == model.config.variant
    assert meta["source"] == path.name
    assert meta["tensor_count"] == str(len(model.state_dict()))
    assert meta["format_version"] == FORMAT_VERSION


# --- accepted layouts ----------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_lightning_ckpt_round_trip(name, nets, x, tmp_path):
    """Official layout: `state_dict` with `vqvae.` keys beside optimizer states, callbacks and
    hyper-parameters, all loadable under weights_only=True."""
    path = write_lightning(tmp_path / "RestoreFormer.ckpt", nets[name][0].state_dict())
    assert_load_convert_load(path, LAYOUT_LIGHTNING, name, nets, x, tmp_path)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("key", ["params_ema", "params"])
def test_gfpgan_pth_round_trip(name, key, nets, x, tmp_path):
    path = write_gfpgan(tmp_path / "RestoreFormer.pth", **{key: nets[name][0].state_dict()})
    layout = LAYOUT_PARAMS_EMA if key == "params_ema" else LAYOUT_PARAMS
    assert_load_convert_load(path, layout, name, nets, x, tmp_path)


def test_params_ema_is_preferred_over_params(nets, x, tmp_path):
    other = calibrated_restoreformer(tiny_config(RESTOREFORMER), x, seed=7)
    path = write_gfpgan(tmp_path / "both.pth", params_ema=nets["RF"][0].state_dict(), params=other.state_dict())
    assert_same_weights(load_restoreformer(path), nets["RF"][0])


def test_bare_state_dict_with_module_prefix(nets, x, tmp_path):
    path = tmp_path / "dataparallel.pth"
    torch.save({f"module.{k}": v for k, v in nets["RF++"][0].state_dict().items()}, path)
    state, layout, _ = read_state_dict(path)
    assert layout == LAYOUT_BARE and "encoder.conv_in.weight" in state
    assert_same_weights(load_restoreformer(path), nets["RF++"][0])


def test_lightning_training_modules_beside_vqvae_are_set_aside(nets, tmp_path):
    """A LightningModule's state_dict may also hold its loss networks; only `vqvae.` is the model."""
    checkpoint = lightning_checkpoint(nets["RF"][0].state_dict())
    checkpoint["state_dict"]["loss.discriminator.main.0.weight"] = torch.zeros(8, 3, 4, 4)
    checkpoint["state_dict"]["loss.perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    path = tmp_path / "with_losses.ckpt"
    torch.save(checkpoint, path)
    state, layout, meta = read_state_dict(path)
    assert layout == LAYOUT_LIGHTNING and meta["ignored_keys"] == "2"
    assert_same_weights(load_restoreformer(path), nets["RF"][0])


def test_save_handles_tensors_sharing_memory(nets, tmp_path):
    state = dict(nets["RF"][0].state_dict())
    shared = torch.zeros(2, 64)
    state["encoder.conv_out.bias"], state["quant_conv.bias"] = shared[0], shared[1]
    path = save_restoreformer(state, tmp_path / "shared.safetensors", nets["RF"][0].config)
    assert torch.equal(read_state_dict(path)[0]["quant_conv.bias"], shared[1])


def test_legacy_non_zip_torch_format(nets, tmp_path):
    """torch.save's pre-1.6 format (a pickle stream, not a zip) is read the same safe way."""
    path = tmp_path / "old.pth"
    torch.save({"params_ema": nets["RF"][0].state_dict()}, path, _use_new_zipfile_serialization=False)
    loaded = load_restoreformer(path)
    assert "PyTorch pickle" not in loaded.weights_info.layout and loaded.weights_info.layout == LAYOUT_PARAMS_EMA
    assert_same_weights(loaded, nets["RF"][0])


def test_foreign_safetensors_without_metadata(nets, x, tmp_path):
    path = tmp_path / "exported.safetensors"
    save_file({k: v.contiguous() for k, v in nets["RF++"][0].state_dict().items()}, path)
    loaded = load_restoreformer(path)
    assert loaded.weights_info.layout == LAYOUT_SAFETENSORS
    assert loaded.config.variant == "RestoreFormer++" and loaded.config.heads == 4
    assert_same_weights(loaded, nets["RF++"][0])


@contextlib.contextmanager
def fake_lightning(classes: dict[str, dict]):
    """Temporarily importable stand-ins for Lightning classes ("module.Class" -> class body), so
    the test can pickle objects that name them; removed again before anything is loaded."""
    fake: dict[str, types.ModuleType] = {}
    made = {}
    for full_name, body in classes.items():
        mod, cls_name = full_name.rsplit(".", 1)
        parts = mod.split(".")
        for i in range(1, len(parts) + 1):  # pickle imports the parent packages too
            fake.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        made[full_name] = type(cls_name, (dict,), {"__module__": mod, **body})
        setattr(fake[mod], cls_name, made[full_name])
    saved = {k: sys.modules.get(k) for k in fake}
    sys.modules.update(fake)
    try:
        yield made
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_lightning_bookkeeping_classes_load_without_their_code(nets, x, tmp_path):
    """PL 1.x keys callback states by the callback class and may store hyper-parameters as an
    AttributeDict. Such a file loads under weights_only=True without importing Lightning: the
    classes are bound to inert stand-ins."""
    path = tmp_path / "pl108.ckpt"
    checkpoint_cls = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"
    attrdict_cls = "pytorch_lightning.utilities.parsing.AttributeDict"
    with fake_lightning({checkpoint_cls: {}, attrdict_cls: {}}) as cls:
        torch.save(
            {
                "epoch": 3,
                "state_dict": {f"vqvae.{k}": v for k, v in nets["RF"][0].state_dict().items()},
                "callbacks": {cls[checkpoint_cls]: {"best_model_score": torch.tensor(0.5)}},
                "hyper_parameters": cls[attrdict_cls](lr=7e-6),
            },
            path,
        )
    assert "pytorch_lightning" not in sys.modules
    loaded = load_restoreformer(path)
    assert "pytorch_lightning" not in sys.modules  # nothing of Lightning was imported
    assert loaded.weights_info.layout == LAYOUT_LIGHTNING
    assert_same_weights(loaded, nets["RF"][0])


def test_lightning_bookkeeping_that_needs_its_code_is_refused_clearly(tmp_path):
    odd = "pytorch_lightning.trainer.states.Odd"
    path = tmp_path / "odd.ckpt"
    with fake_lightning({odd: {"__reduce__": lambda self: (type(self), (), (None, {"slot": 1}))}}) as cls:
        torch.save({"state_dict": {"vqvae.x": torch.zeros(1)}, "trainer": cls[odd]()}, path)
    with pytest.raises(WeightLoadError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert "odd.ckpt" in msg and odd in msg and "Nothing in the file was run" in msg
    assert "state_dict" in err.value.fix


def test_dtype_and_eval_mode(nets, tmp_path):
    path = write_gfpgan(tmp_path / "w.pth", params_ema=nets["RF"][0].state_dict())
    loaded = load_restoreformer(path, dtype=torch.float64)
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    assert not loaded.training


# --- variants: detected, never assumed -----------------------------------------------------


@pytest.mark.parametrize(("name", "file_name"), [("RF++", "RestoreFormer.ckpt"), ("RF", "RestoreFormer++.ckpt")])
def test_variant_comes_from_the_keys_not_the_file_name(name, file_name, nets, x, tmp_path):
    path = write_lightning(tmp_path / file_name, nets[name][0].state_dict())
    loaded = load_restoreformer(path)
    assert loaded.config.variant == nets[name][0].config.variant
    assert loaded.config.heads == {"RF": 8, "RF++": 4}[name]
    assert_same_weights(loaded, nets[name][0])


def test_plusplus_weights_forced_into_restoreformer_fail_naming_the_extra_keys(nets, tmp_path):
    """The official code's strict=False would silently drop RF++'s 32x32 attention here."""
    path = write_lightning(tmp_path / "RestoreFormer++.ckpt", nets["RF++"][0].state_dict())
    with pytest.raises(WeightLoadError) as err:
        load_restoreformer(path, config=tiny_config(RESTOREFORMER))
    msg = str(err.value)
    assert "RestoreFormer++.ckpt" in msg and LAYOUT_LIGHTNING in msg
    assert "unexpected keys (36)" in msg and "decoder.up.1.attn.0.norm1.weight" in msg


def test_restoreformer_weights_forced_into_plusplus_fail_naming_the_missing_keys(nets, tmp_path):
    path = write_gfpgan(tmp_path / "RestoreFormer.pth", params_ema=nets["RF"][0].state_dict())
    with pytest.raises(WeightLoadError) as err:
        load_restoreformer(path, config=tiny_config(RESTOREFORMER_PLUSPLUS))
    msg = str(err.value)
    assert "RestoreFormer.pth" in msg and LAYOUT_PARAMS_EMA in msg
    assert "missing keys (36)" in msg and "decoder.up.1.attn.0.norm1.weight" in msg


def test_partial_file_names_the_missing_keys(nets, tmp_path):
    state = dict(nets["RF"][0].state_dict())
    dropped = ["encoder.down.1.block.0.conv1.weight", "decoder.conv_out.bias"]
    for key in dropped:
        del state[key]
    path = write_gfpgan(tmp_path / "partial.pth", params=state)
    with pytest.raises(WeightLoadError) as err:
        load_restoreformer(path)
    msg = str(err.value)
    assert "partial.pth" in msg and LAYOUT_PARAMS in msg and "missing keys (2)" in msg
    assert all(key in msg for key in dropped)


def test_partial_file_missing_a_key_detection_needs(nets, tmp_path):
    state = dict(nets["RF"][0].state_dict())
    del state["encoder.down.1.block.0.conv2.weight"]
    path = write_gfpgan(tmp_path / "partial.pth", params_ema=state)
    with pytest.raises(WeightLoadError, match=r"missing key 'encoder\.down\.1\.block\.0\.conv2\.weight'"):
        load_restoreformer(path)


def test_shape_mismatch_is_named(nets, tmp_path):
    path = write_gfpgan(tmp_path / "w.pth", params_ema=nets["RF"][0].state_dict())
    with pytest.raises(WeightLoadError) as err:
        load_restoreformer(path, config=tiny_config(RESTOREFORMER, n_embed=256))
    assert "shape mismatches (1)" in str(err.value) and "quantize.embedding.weight (128, 64)" in str(err.value)


# --- refused files -------------------------------------------------------------------------


class _RunsShellCommand:
    """Pickles as a call to os.system: unpickling it runs the shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_payload_of_the_malicious_files_is_live(tmp_path):
    """Control: plain pickle.loads of the payload does run the command, so the refusal tests
    below would notice if the loader ran it."""
    marker = tmp_path / "control-ran"
    pickle.loads(pickle.dumps(_RunsShellCommand(f"touch '{marker}'")))
    assert marker.exists()


@pytest.mark.parametrize("container", ["raw-pickle", "torch-zip"])
def test_pickle_that_would_run_code_is_refused_without_running(container, tmp_path):
    marker = tmp_path / "payload-ran"
    payload = _RunsShellCommand(f"touch '{marker}'")
    path = tmp_path / "RestoreFormer.pth"
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps({"params_ema": payload}))
    else:
        torch.save({"state_dict": {"vqvae.encoder.conv_in.weight": torch.zeros(1)}, "callbacks": payload}, path)
    with pytest.raises(WeightLoadError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert not marker.exists(), "the pickle's command ran"
    assert "RestoreFormer.pth" in msg and "PyTorch" in msg
    assert "tries to execute code" in msg and "was not loaded" in msg and "nothing in it was run" in msg
    assert "posix.system" in msg or "nt.system" in msg
    # `convert` refuses the file too, so the advice must not send the user there.
    assert "convert" not in err.value.fix
    assert cli.main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    assert cli.main(["info", str(path)]) == 2
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated; users still have such files
def test_torchscript_program_is_not_a_weight_file(tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 3, 1)), path)
    with pytest.raises(WeightLoadError, match="TorchScript program, not a weight file") as err:
        read_state_dict(path)
    assert "scripted.pt" in str(err.value)


def _truncated_ckpt(tmp_path: Path) -> Path:
    full = write_lightning(tmp_path / "full.ckpt", {"a": torch.randn(5000)}).read_bytes()
    path = tmp_path / "cut.ckpt"
    path.write_bytes(full[: len(full) // 2])
    return path


def _truncated_safetensors(tmp_path: Path) -> Path:
    save_file({"a": torch.randn(5000)}, tmp_path / "full.safetensors")
    full = (tmp_path / "full.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(full[: len(full) // 2])
    return path


def _random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "noise.pth"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).numpy().tobytes())
    return path


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.ckpt"
    path.touch()
    return path


def _directory(tmp_path: Path) -> Path:
    path = tmp_path / "weights_dir"
    path.mkdir()
    return path


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "not_there.safetensors"


def _html_page(tmp_path: Path) -> Path:
    path = tmp_path / "RestoreFormer.ckpt"
    path.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    return path


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_truncated_ckpt, ["damaged or truncated", "PyTorch zip checkpoint", "download the file again"]),
        (_truncated_safetensors, ["damaged or truncated", "safetensors"]),
        (_random_bytes, ["not a weight file", "download the file again"]),
        (_empty, ["empty (0 bytes)", "download it again"]),
        (_directory, ["directory"]),
        (_missing, ["does not exist", "models/facerestore_models"]),
        (_html_page, ["not a weight file", "HTML"]),
    ],
    ids=lambda v: getattr(v, "__name__", "")[1:],
)
def test_corrupt_files_give_clear_errors(make, words, tmp_path):
    path = make(tmp_path)
    with pytest.raises(WeightLoadError) as err:
        load_restoreformer(path)
    msg = str(err.value)
    assert path.name in msg and "Fix:" in msg
    for word in words:
        assert word in msg
    # `convert` refuses these files too: the advice may name it only for the original file.
    if path.exists():
        assert cli.main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    assert "convert" not in err.value.fix or "the original" in err.value.fix, err.value.fix


@pytest.mark.parametrize("container", ["pth", "safetensors"])
def test_other_architecture_is_named_as_such(container, tmp_path):
    state = esrgan_state_dict()
    if container == "pth":
        path = write_gfpgan(tmp_path / "RealESRGAN_x4plus.pth", params_ema=state)
        layout = LAYOUT_PARAMS_EMA
    else:
        path = tmp_path / "4x_ESRGAN.safetensors"
        save_file(state, path)
        layout = LAYOUT_SAFETENSORS
    with pytest.raises(WeightLoadError) as err:
        load_restoreformer(path)
    msg = str(err.value)
    assert path.name in msg and layout in msg
    assert "not a RestoreFormer network" in msg and "encoder.conv_in.weight" in msg
    assert any(key in msg for key in state) and "upscale_models" in msg


def test_checkpoint_without_weights(tmp_path):
    path = tmp_path / "trainer_state.ckpt"
    torch.save({"epoch": 3, "global_step": 10, "optimizer_states": []}, path)
    with pytest.raises(WeightLoadError, match=r"no weights found.*epoch, global_step, optimizer_states"):
        read_state_dict(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(WeightLoadError, match="holds a Tensor"):
        read_state_dict(path)


# --- saving --------------------------------------------------------------------------------


def test_save_is_checked_and_atomic(nets, tmp_path):
    model = nets["RF"][0]
    path = save_restoreformer(model, tmp_path / "rf.safetensors", model.config, source="/somewhere/RestoreFormer.pth")
    before = path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rf.safetensors"]  # no temp file left

    with pytest.raises(ValueError, match="missing keys"):  # RF weights do not fit RF++
        save_restoreformer(model, path, tiny_config(RESTOREFORMER_PLUSPLUS))
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_restoreformer(model, tmp_path / "rf.pth", model.config)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rf.safetensors"]
    _, layout, meta = read_state_dict(path)
    assert layout == LAYOUT_OURS and meta["source"] == "RestoreFormer.pth"
    assert int(meta["parameter_count"]) == sum(p.numel() for p in model.parameters())


# --- command line --------------------------------------------------------------------------


def test_convert_command_in_a_subprocess(nets, x, tmp_path):
    src = write_lightning(tmp_path / "RestoreFormer++.ckpt", nets["RF++"][0].state_dict())
    dst = tmp_path / "out" / "rfpp.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-m", "restoreformer_node", "convert", str(src), str(dst)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "RestoreFormer++ (4 heads)" in done.stdout
    assert f"tensors: {len(nets['RF++'][0].state_dict())}" in done.stdout
    assert torch.equal(run(load_restoreformer(dst), x), nets["RF++"][1])


def test_convert_refuses_to_overwrite_and_info_reports(nets, tmp_path, capsys):
    src = write_gfpgan(tmp_path / "RestoreFormer.pth", params_ema=nets["RF"][0].state_dict())
    dst = tmp_path / "rf.safetensors"
    dst.write_bytes(b"keep me")
    assert cli.main(["convert", str(src), str(dst)]) == 2
    assert dst.read_bytes() == b"keep me"
    assert "--force" in capsys.readouterr().err
    assert cli.main(["convert", str(src), str(dst), "--force"]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(dst)]) == 0
    out = capsys.readouterr().out
    assert "layout: restoreformer safetensors" in out and "variant: RestoreFormer (8 heads)" in out
    assert f"parameters: {sum(p.numel() for p in nets['RF'][0].parameters()):,}" in out
    assert "strict check: passes" in out
