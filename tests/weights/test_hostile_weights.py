"""Hostile and malformed weight files (issue 15): every class is refused before anything is built,
with one error that names the file and, for a resource limit, the limit.

Weight files are written by the tests: pickles built opcode by opcode (tests/helpers/hostile.py)
and small random networks of the real architecture (pretrained weights cannot be had offline).
Cases that could crash or hang the interpreter on a loader without bounds run in a subprocess with
a timeout, so a regression fails the test instead of the test run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import REPO
from helpers import hostile as h
from helpers.models import random_restoreformer
from helpers.weights import lightning_checkpoint
from safetensors.torch import save_file

from restoreformer_node import cli
from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, tiny_config
from restoreformer_node.weights import (
    LAYOUT_LIGHTNING,
    WeightLoadError,
    load_restoreformer,
    read_state_dict,
    save_restoreformer,
)
from restoreformer_node.weights.pickle_scan import LIMITS
from restoreformer_node.weights.read import CONTAINER_PICKLE, CONTAINER_ZIP

pytestmark = pytest.mark.usefixtures("one_thread_per_module")


@pytest.fixture(scope="module")
def net():
    return random_restoreformer(tiny_config(RESTOREFORMER), seed=3)


@pytest.fixture(scope="module")
def state(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def refused(path: Path) -> str:
    """The one-line refusal `info` prints (exit status 2) and the library's message, which agree."""
    with pytest.raises(WeightLoadError) as err:
        read_state_dict(path)
    assert path.name in str(err.value) and "Fix:" in str(err.value)
    return str(err.value)


def cli_lines(args: list[str], capsys) -> tuple[int, list[str], list[str]]:
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def run_info(path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m restoreformer_node info PATH` in a fresh interpreter (a crash or hang there
    fails the test, not the run)."""
    return subprocess.run(
        [sys.executable, "-m", "restoreformer_node", "info", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_refusal(run: subprocess.CompletedProcess, *words: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in run.stderr, run.stderr
    for word in words:
        assert word in lines[0], lines[0]


# --- resource bounds, before anything is built --------------------------------------------


@pytest.mark.parametrize("how", ["list", "dict", "tuple", "mark", "late"])
@pytest.mark.parametrize("container", ["zip", "zip-deflated", "legacy"])
def test_nesting_depth_is_bounded(how, container, tmp_path):
    """A million levels fit in a 2 KB deflated file; the scan refuses past `max_depth` levels,
    whichever container opcode nests (also lists filled through memo references after they were
    put in another list, which no single step shows)."""
    pkl = h.nested(LIMITS.max_depth * 50, how)
    path = tmp_path / "deep.pth"
    if container == "legacy":
        h.legacy_file(path, pkl)
    else:
        h.torch_zip(path, pkl, deflate=container == "zip-deflated")
    msg = refused(path)
    assert f"nesting depth {LIMITS.max_depth}" in msg and "nothing in it was built or run" in msg.lower()


def test_nesting_inside_a_dict_key_does_not_crash_the_interpreter(tmp_path):
    """Hashing a tuple recurses in C without a guard: a million-deep tuple as a dict key crashed
    every command. It is refused from the opcode scan instead."""
    pkl = h.PROTO2 + b"}" + b")" + b"\x85" * 1_000_000 + b"K\x01s."
    path = h.torch_zip(tmp_path / "deep_key.pth", pkl, deflate=True)
    assert path.stat().st_size < 10_000
    assert_one_line_refusal(run_info(path), "deep_key.pth", f"nesting depth {LIMITS.max_depth}")


def test_memo_shared_tuple_key_is_refused_instead_of_hashed_forever(tmp_path):
    """A few hundred bytes: a dict key t_60 with t_i = (t_i-1, t_i-1) through the memo unfolds to
    2**60 tuples, which hashing visits one by one."""
    path = h.torch_zip(tmp_path / "shared.pth", h.shared_tuple_key(60))
    assert path.stat().st_size < 2_000
    assert_one_line_refusal(run_info(path, timeout=120), "shared.pth", "shared tuple size", "memo")


def test_opcode_count_is_bounded(tmp_path):
    path = h.torch_zip(tmp_path / "long.pth", h.many_opcodes(LIMITS.max_opcodes + 10))
    assert f"opcode count {LIMITS.max_opcodes:,}" in refused(path)


def test_pickle_size_is_bounded_from_the_directory(tmp_path):
    """The directory's size of data.pkl is checked before a byte of it is read."""
    big = h.PROTO2 + h.text("a" * (LIMITS.max_pickle_bytes + 1)) + b"."
    path = h.torch_zip(tmp_path / "huge_pickle.pth", big)
    assert f"pickle size {LIMITS.max_pickle_bytes:,}" in refused(path)


def test_pickle_size_is_bounded_in_the_legacy_format(tmp_path):
    """A pre-1.6 file has no directory: its pickles are read up to the limit, and one that runs past
    it is refused by the limit's name (not called malformed because the read cut it off)."""
    big = h.PROTO2 + h.text("a" * (LIMITS.max_pickle_bytes + 1)) + b"."
    path = tmp_path / "huge_legacy.pth"
    h.legacy_file(path, big)
    msg = refused(path)
    assert f"pickle size {LIMITS.max_pickle_bytes:,}" in msg and "malformed" not in msg


def test_deflate_bomb_is_refused_before_it_is_inflated(tmp_path):
    """256 MiB of zeros deflate to about 256 KB. The compression ratio is read from the directory,
    so refusing inflates nothing: the peak memory of the refusing process grows by far less than
    the bomb's size (bound: half of it; inflating it, as torch.load would, needs all of it)."""
    inflated = 256 << 20
    path = h.deflate_bomb(tmp_path / "bomb.pth", inflated)
    assert path.stat().st_size < inflated // 200
    probe = (
        "import resource, sys\n"
        "from restoreformer_node.weights import read_state_dict, WeightLoadError\n"
        "import torch; torch.zeros(1)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_state_dict(sys.argv[1]); print('loaded')\n"
        "except WeightLoadError as e:\n    print('refused', e)\n"
        "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe, str(path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused" in run.stdout and "compression ratio" in run.stdout, run.stdout[-2000:]
    grew_kb = int(run.stdout.rsplit("grew_kb", 1)[1])
    assert grew_kb * 1024 < inflated // 2


# --- zip archives that parsers may read differently ----------------------------------------


def _archive_case(case: str, tmp_path: Path, state) -> tuple[Path, str]:
    base = tmp_path / "base.pth"
    torch.save({"params": {"encoder.conv_in.bias": state["encoder.conv_in.bias"]}}, base)
    path = tmp_path / f"{case}.pth"
    prefix = zipfile.ZipFile(base).namelist()[0].split("/")[0]
    if case == "duplicate-name":  # a second data.pkl: which one a reader takes is up to the reader
        payload = h.calls("collections", "OrderedDict")
        return h.rezip(base, path, add={f"{prefix}/data.pkl": payload}), "same name"
    if case == "path-traversal":
        return h.rezip(base, path, add={f"{prefix}/../../evil.sh": b"echo hi"}), "named"
    if case == "absolute-name":
        return h.rezip(base, path, add={"/etc/evil": b"x"}), "one top-level folder"
    if case == "appended-data":
        shutil.copy(base, path)
        with open(path, "ab") as f:
            f.write(b"PK\x03\x04 trailing data")
        return path, "end with its directory"
    if case == "comment":
        h.rezip(base, path)
        with zipfile.ZipFile(path, "a") as z:
            z.comment = b"hello"
        return path, "end with its directory"
    if case == "stored-size-lie":  # stored, yet two sizes: readers pick either
        h.rezip(base, path)
        name = f"{prefix}/data.pkl"
        return h.patch_central(path, name, usize=h.central_field(path, name, "usize") + 1000), "declares two sizes"
    if case == "deflated-size-lie":  # the directory understates what data.pkl inflates to
        h.rezip(base, path, deflate=True)
        name = f"{prefix}/data.pkl"
        return h.patch_central(path, name, usize=h.central_field(path, name, "usize") // 2), "other sizes"
    if case == "overlapping-entries":  # one entry's bytes claimed by another: the zip-bomb trick
        h.rezip(base, path)
        with zipfile.ZipFile(path) as z:
            first, second = z.infolist()[:2]
        return h.patch_central(path, second.filename, offset=first.header_offset), "differs"
    if case == "encrypted":
        h.rezip(base, path)
        name = f"{prefix}/byteorder"
        with zipfile.ZipFile(path) as z:
            flags = z.getinfo(name).flag_bits
        return h.patch_central(path, name, flags=flags | 1), "encrypted"
    if case == "zip64-mismatch":
        shutil.copy(base, path)
        raw = bytearray(path.read_bytes())
        at = raw.rfind(b"PK\x06\x06")
        raw[at + 32 : at + 40] = (7 + 1).to_bytes(8, "little")  # zip64 entry count on this disk
        path.write_bytes(bytes(raw))
        return path, "two end records disagree"
    raise ValueError(case)


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile warns while the test writes the duplicate
@pytest.mark.parametrize(
    "case",
    ["duplicate-name", "path-traversal", "absolute-name", "appended-data", "comment", "stored-size-lie",
     "deflated-size-lie", "overlapping-entries", "encrypted", "zip64-mismatch"],
)
def test_malformed_archives_are_refused_from_the_directory(case, tmp_path, state):
    """Zip features torch.save never writes, where two readers (Python's zipfile for the scan,
    torch's for loading) could see different files, are refused before anything is read."""
    path, words = _archive_case(case, tmp_path, state)
    msg = refused(path)
    assert words in msg and "Nothing in it was built or run" in msg, msg


def test_storage_sizes_must_match_the_bytes_the_file_has(tmp_path, state):
    """A pickle may claim a storage of any size; torch's legacy reader allocates the claim before
    reading. Both containers check the claim against the bytes that are really there."""
    t = state["encoder.conv_in.bias"]
    zipped = tmp_path / "zip_claim.pth"
    torch.save({"params": {"w": t}}, zipped)
    pkl = h.zip_data_pkl(zipped)
    numel = t.numel()
    forged = pkl.replace(b"K" + bytes([numel]) + b"t", b"J" + (10**9).to_bytes(4, "little") + b"t", 1)
    assert forged != pkl
    h.rezip(zipped, tmp_path / "zip_forged.pth", replace={"data.pkl": forged})
    assert "1,000,000,000 elements" in refused(tmp_path / "zip_forged.pth")

    legacy = tmp_path / "legacy_claim.pth"
    torch.save({"params": {"w": t}}, legacy, _use_new_zipfile_serialization=False)
    raw = legacy.read_bytes()
    at = raw.find(b"K" + bytes([numel]) + b"N")  # numel, then view_metadata None
    assert at > 0
    legacy.write_bytes(raw[:at] + b"J" + (2**31 - 1).to_bytes(4, "little") + raw[at + 2 :])
    assert "bytes of tensor data, but only" in refused(legacy)


# --- our own metadata is input too ---------------------------------------------------------


def _with_config(state, tmp_path: Path, **changes) -> Path:
    """A safetensors file of `state` whose `config` metadata has `changes` (raw JSON values)."""
    config = json.loads(tiny_config(RESTOREFORMER).to_json())
    config.update(changes)
    path = tmp_path / "ours.safetensors"
    meta = {"format": "restoreformer", "format_version": "1", "variant": "RestoreFormer", "config": json.dumps(config)}
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata=meta)
    return path


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"heads": 0}, "heads must be in"),
        ({"heads": -4}, "heads must be in"),
        ({"heads": 3}, "not divisible by heads"),
        ({"norm_groups": 0}, "norm_groups must be in"),
        ({"norm_groups": 5}, "not divisible by norm_groups"),
        ({"ch_mult": []}, "ch_mult must hold"),
        ({"ch_mult": [1, 2, 0]}, "ch_mult must hold"),
        ({"ch_mult": [[1], 2, 2]}, "ch_mult must be a tuple of integers"),
        ({"encoder_blocks": 200_000}, "encoder_blocks must be in"),
        ({"decoder_blocks": 0}, "decoder_blocks must be in"),
        ({"resolution": 8192}, "resolution must be in"),
        ({"resolution": 2048}, "feature map would hold"),
        ({"resolution": 70}, "must be a multiple of 4"),
        ({"resolution": 0}, "resolution must be in"),
        ({"heads": "8"}, "heads must be an integer"),
        ({"heads": 8.0}, "heads must be an integer"),
        ({"heads": True}, "heads must be an integer"),
        ({"n_embed": None}, "n_embed must be an integer"),
        ({"decoder_attn_resolutions": [16, 24]}, "must name distinct level resolutions"),
        ({"decoder_attn_resolutions": [64]}, "attention map would hold"),
        ({"fusion": "mhca"}, "unknown fusion mode"),
        ({"variant": ""}, "variant must be"),
        ({"surprise": 1}, "unknown RestoreFormer config fields"),
    ],
    ids=lambda v: "-".join(f"{k}={v[k]}" for k in v) if isinstance(v, dict) else None,
)
def test_config_metadata_is_validated_before_anything_is_built(changes, words, state, tmp_path, capsys):
    """heads=0 gave ZeroDivisionError, 200,000 blocks ran for minutes, a 16x resolution passed
    `info` and then needed gigabytes in `restore`: every field is checked, and `info`, `convert`
    and loading refuse alike, with one line."""
    path = _with_config(state, tmp_path, **changes)
    with pytest.raises(WeightLoadError, match="configuration stored in the file's metadata is invalid") as err:
        load_restoreformer(path)
    assert words in str(err.value)
    for args in (["info", str(path)], ["convert", str(path), str(tmp_path / "out.safetensors")]):
        code, _, err_lines = cli_lines(args, capsys)
        assert code == 2 and len(err_lines) == 1 and words in err_lines[0]
    assert not (tmp_path / "out.safetensors").exists()


def test_metadata_and_tensors_must_agree(state, tmp_path, capsys):
    """RestoreFormer++ metadata over RestoreFormer tensors: the strict check names the missing
    keys before any network is built, and `info` says so too."""
    plus = json.loads(tiny_config(RESTOREFORMER_PLUSPLUS).to_json())
    path = _with_config(state, tmp_path, **plus)
    with pytest.raises(WeightLoadError, match=r"missing keys \(36\)"):
        load_restoreformer(path)
    code, out, _ = cli_lines(["info", str(path)], capsys)
    assert code == 1 and any(line.startswith("strict check: missing keys (36)") for line in out)


def test_config_bounds_are_upper_bounds_of_real_networks():
    """`parameter_bound` never undercounts: compared with the real parameter count of networks
    built (on the meta device) from a spread of configurations."""
    from restoreformer_node.weights import expected_shapes

    configs = [RESTOREFORMER, RESTOREFORMER_PLUSPLUS, tiny_config(RESTOREFORMER, ch_mult=(1, 4, 2, 8), resolution=64),
               tiny_config(RESTOREFORMER, encoder_blocks=4, decoder_blocks=1, ch=16, norm_groups=16, z_channels=512),
               RESTOREFORMER.with_(in_channels=4, out_channels=1, n_embed=4096, embed_dim=64)]
    for config in configs:
        real = sum(torch.Size(s).numel() for s in expected_shapes(config).values())
        assert real <= config.parameter_bound <= 3 * real


# --- the strict check: dense floating tensors, each element stored once ----------------------


def _altered(state, key: str, how: str) -> dict[str, torch.Tensor]:
    t = state[key]
    out = dict(state)
    if how == "int32":
        out[key] = t.round().to(torch.int32)
    elif how == "bool":
        out[key] = t > 0
    elif how == "quantized":
        out[key] = torch.quantize_per_tensor(t, 0.01, 0, torch.qint8)
    elif how == "meta":
        out[key] = torch.empty(t.shape, device="meta")
    elif how == "sparse":
        out[key] = t.to_sparse()
    elif how == "stride-0":
        out[key] = t.flatten()[:1].expand(t.shape)
    elif how == "overlapping":
        base = t.flatten()[: sum(n - 1 for n in t.shape) + 1].clone()
        out[key] = base.as_strided(t.shape, (1,) * t.dim())
    elif how == "complex":
        out[key] = t.to(torch.complex64)
    else:
        raise ValueError(how)
    return out


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns about sparse/quantized pickling
@pytest.mark.parametrize("how", ["int32", "bool", "quantized", "meta", "sparse", "stride-0", "overlapping", "complex"])
def test_strict_check_refuses_tensors_no_restoreformer_has(how, state, tmp_path, capsys):
    """Right shapes, wrong kind: `info` said "strict check: passes" and `convert` wrote them. Now
    loading, `info` and `convert` refuse alike, naming the tensor and its kind."""
    key = "decoder.conv_out.weight"
    path = tmp_path / "odd.pth"
    torch.save({"params_ema": _altered(state, key, how)}, path)
    with pytest.raises(WeightLoadError, match="not dense floating-point weights") as err:
        load_restoreformer(path)
    assert key in str(err.value)
    code, out, err_lines = cli_lines(["info", str(path)], capsys)
    assert code == 2 and not any("passes" in line for line in out) and key in err_lines[0]
    code, _, err_lines = cli_lines(["convert", str(path), str(tmp_path / "odd.safetensors")], capsys)
    assert code == 2 and key in err_lines[0] and not (tmp_path / "odd.safetensors").exists()


def test_expanded_views_cannot_make_a_small_file_a_huge_network(tmp_path):
    """Every tensor of the full-size RestoreFormer as a stride-0 view of one number: a file of a
    few hundred KB whose tensors would expand to 290 MB (and to any size with wider shapes) is
    refused before its shapes are used."""
    from restoreformer_node.weights import expected_shapes

    views = {k: torch.zeros(1).expand(shape) for k, shape in expected_shapes(RESTOREFORMER).items()}
    path = tmp_path / "RestoreFormer.pth"
    torch.save({"params_ema": views}, path)
    assert path.stat().st_size < 2_000_000
    with pytest.raises(WeightLoadError, match="stride-0"):
        load_restoreformer(path)


def test_build_cannot_forge_a_view(tmp_path):
    """BUILD's legacy path re-points a loaded tensor at its storage with any size and stride
    (`set_`): the strict check sees the tensor as it came out, a stride-0 view, and refuses it."""
    pkl = h.tensor_set_by_build(4, (64, 64, 3, 3), (0, 0, 0, 0))
    path = h.torch_zip(tmp_path / "build.pth", pkl, {"0": bytes(16)})
    with pytest.raises(WeightLoadError, match=r"w \(a stride-0 \(expanded\) view\)"):
        load_restoreformer(path)


# --- non-finite weights ------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [("quantize.embedding.weight", float("nan")),
                                            ("encoder.down.1.block.0.conv1.weight", float("inf"))])
def test_non_finite_weights_are_refused_naming_the_tensors(key, value, state, tmp_path, capsys):
    """NaN in the codebook or Inf in a convolution restored black faces with exit status 0."""
    bad = dict(state)
    bad[key] = state[key].clone()
    bad[key].view(-1)[5] = value
    path = save_restoreformer(state, tmp_path / "ok.safetensors", tiny_config(RESTOREFORMER))
    save_file(bad, tmp_path / "bad.safetensors", metadata={k: v for k, v in _metadata(path).items()})
    path = tmp_path / "bad.safetensors"
    with pytest.raises(WeightLoadError, match="non-finite values") as err:
        load_restoreformer(path)
    assert key in str(err.value) and "diverged" in err.value.fix
    code, out, _ = cli_lines(["info", str(path)], capsys)
    assert code == 1 and any(line.startswith("strict check: non-finite") and key in line for line in out)
    code, _, err_lines = cli_lines(["convert", str(path), str(tmp_path / "c.safetensors")], capsys)
    assert code == 2 and key in err_lines[0] and not (tmp_path / "c.safetensors").exists()
    with pytest.raises(ValueError, match="non-finite"):  # a file that saves always loads
        save_restoreformer(bad, tmp_path / "again.safetensors", tiny_config(RESTOREFORMER))


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return dict(f.metadata())


# --- refusal wording -------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["REDUCE", "INST", "OBJ", "STACK_GLOBAL_POP", "EXT1"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_code_is_called_code_whatever_opcode_imports_it(via, container, tmp_path):
    """INST and STACK_GLOBAL (names kept in the memo, a decoy popped) were refused as "damaged or
    truncated, download again"; every route is said to try to run code, naming what it imports."""
    pkl = h.calls("posix", "system", via, "touch /tmp/never")
    path = tmp_path / "payload.pth"
    if container == "zip":
        h.torch_zip(path, pkl)
    else:
        h.legacy_file(path, pkl)
    msg = refused(path)
    named = "does not name" if via == "EXT1" else "posix.system"
    assert "tries to run code" in msg and named in msg and "damaged" not in msg
    assert "convert" not in msg.split("Fix:")[1]


def test_unreadable_file_is_one_line_not_a_traceback(state, tmp_path):
    path = save_restoreformer(state, tmp_path / "locked.safetensors", tiny_config(RESTOREFORMER))
    path.chmod(0)
    command = h.unprivileged([sys.executable, "-m", "restoreformer_node", "info", str(path)])
    if command is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert_one_line_refusal(run, "locked.safetensors", "cannot be read", "permissions")


# --- training bookkeeping of the code that made a checkpoint ----------------------------------


@pytest.fixture
def training_classes(tmp_path, monkeypatch):
    """Classes of a "training repository", importable only while the test pickles them: the
    package is deleted and unimported before anything is loaded, as on a user's machine."""
    pkg = tmp_path / "trainrepo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "config.py").write_text(
        "from dataclasses import dataclass, field\n"
        "@dataclass\nclass Optim:\n    lr: float = 1e-4\n    betas: tuple = (0.5, 0.9)\n"
        "@dataclass\nclass TrainConfig:\n    name: str = 'rf'\n    optim: Optim = field(default_factory=Optim)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import trainrepo.config as config

    def forget() -> None:
        for name in [n for n in sys.modules if n.startswith("trainrepo")]:
            del sys.modules[name]
        shutil.rmtree(pkg, ignore_errors=True)

    yield {"TrainConfig": config.TrainConfig, "Optim": config.Optim, "forget": forget}
    forget()


def test_bookkeeping_classes_of_the_training_code_load_inertly(state, tmp_path, training_classes):
    """`hyper_parameters` holding a config object of the training repository's own classes and a
    torch loss module, callback states keyed by a class of that code: bound to inert stand-ins,
    nothing of them imported or run, and the weights load (they were refused, with advice to run
    `convert`, which refused them too)."""
    import argparse
    import collections
    import datetime
    import pathlib
    import types

    import numpy as np

    checkpoint = lightning_checkpoint(state)
    checkpoint["hyper_parameters"] = {
        "config": training_classes["TrainConfig"](),
        "loss": torch.nn.L1Loss(),
        "log_dir": pathlib.PurePosixPath("runs/rf"),
        "started": datetime.datetime(2022, 3, 1, 12, 0),
        "args": argparse.Namespace(lr=1e-4),
        "extra": types.SimpleNamespace(seed=3),
        "groups": collections.defaultdict(list, {"a": [1]}),
        "types": {"object_type": dict, "element_type": list},
        "score": np.float64(0.25),
        "history": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    checkpoint["callbacks"] = {training_classes["Optim"]: {"best": torch.tensor(0.5)}}
    path = tmp_path / "trained.ckpt"
    torch.save(checkpoint, path)
    training_classes["forget"]()
    loaded = load_restoreformer(path)
    assert "trainrepo" not in sys.modules
    assert loaded.weights_info.layout == LAYOUT_LIGHTNING
    got = loaded.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    assert cli.main(["convert", str(path), str(tmp_path / "trained.safetensors")]) == 0


@pytest.mark.parametrize(
    "target",
    [os.system, subprocess.Popen, eval, exec, getattr, __import__, __import__("importlib").import_module,
     __import__("runpy").run_path, __import__("pickle").loads, __import__("marshal").loads,
     __import__("functools").partial(print), torch.load, __import__("torch").storage._load_from_bytes,
     __import__("numpy").load, __import__("shutil").rmtree],
    ids=lambda t: getattr(t, "__name__", type(t).__name__),
)
def test_names_that_execute_things_are_still_refused(target, state, tmp_path):
    """The same bookkeeping slot holding something that runs code: refused as code, and the fix
    never advises `convert`, which refuses the file too."""
    checkpoint = lightning_checkpoint(state)
    checkpoint["hyper_parameters"] = {"callback": target}
    path = tmp_path / "hostile.ckpt"
    torch.save(checkpoint, path)
    msg = refused(path)
    assert "tries to run code" in msg and "convert" not in msg.split("Fix:")[1]


def test_a_pickled_whole_object_is_named_as_such(tmp_path, training_classes):
    path = tmp_path / "whole.pth"
    torch.save(training_classes["TrainConfig"](), path)
    training_classes["forget"]()
    msg = refused(path)
    assert "pickled trainrepo.config.TrainConfig object" in msg and "state_dict()" in msg


def test_containers_are_named_in_refusals(tmp_path):
    path = h.torch_zip(tmp_path / "z.pth", h.calls("posix", "system"))
    assert CONTAINER_ZIP in refused(path)
    legacy = h.legacy_file(tmp_path / "l.pth", h.calls("posix", "system"))
    assert CONTAINER_PICKLE in refused(legacy)
