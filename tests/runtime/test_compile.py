"""Optional torch.compile for restoration (faces/compiled.py, the Compile Model (RestoreFormer) node,
`restore --compile`).

The network is a randomly initialised RestoreFormer at the tiny test geometry (random weights of
the real architecture stand in for the published ones, which cannot be had offline). Compiling
runs for real on the CPU: TorchDynamo captures the graphs and inductor builds them with the
machine's C++ compiler; the fast tests use a backend that records each captured graph and runs it
as captured, the slow ones inductor itself.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from helpers.compile import SIZE, FailingBackend, RecordingBackend
from helpers.models import random_restoreformer
from helpers.numerics import COMPILED, forced_codes, half_precision_budget, recorded_codes, restore_budget

from restoreformer_node.options import COMPILE_MODES
from restoreformer_node.runtime import fast
from restoreformer_node.runtime.batching import restore_crops
from restoreformer_node.runtime.compile import (
    CompileOptions,
    compile_failure,
    compiled_batch,
    pad_batch,
)
from restoreformer_node.runtime.fast import optimize_for_inference, prefers_channels_last


def _crops(n: int, seed: int = 0) -> torch.Tensor:
    """n smooth face-sized crops [n, 3, 64, 64] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(SIZE, SIZE), mode="bicubic", align_corners=False).clamp(0, 1)


def _loaded_like_the_nodes(seed: int = 0):
    """The tiny network with the inference fast paths the loader installs, as they run on a GPU
    (where compiling pays): NCHW, without the CPU-only NNPACK convolutions (eager CPU runs use
    them and round differently from the direct convolutions inductor generates; see
    test_compiling_keeps_the_cpu_nnpack_path_and_traces_it)."""
    return optimize_for_inference(random_restoreformer(seed=seed).eval(), channels_last=False, winograd=False)


def test_compiled_batch_is_a_power_of_two_within_the_chunk_and_never_doubles_the_work():
    for chunk in range(1, 70):
        for n in range(1, 140):
            b = compiled_batch(n, chunk)
            assert b & (b - 1) == 0 and 1 <= b <= chunk, (n, chunk, b)
            padded = -(-n // b) * b
            assert padded < 2 * n or padded == b  # a partial single chunk at most doubles
            assert b >= chunk // 2 or b >= n  # the memory budget is used to at least half
    assert compiled_batch(5, 2) == 2 and compiled_batch(3, 64) == 4 and compiled_batch(100, 48) == 32
    with pytest.raises(ValueError, match="chunk_size"):
        compiled_batch(3, 0)
    x = torch.arange(6.0).view(3, 2)
    padded = pad_batch(x, 5)
    assert padded.shape == (5, 2) and torch.equal(padded[:3], x) and torch.equal(padded[3:], x[[2, 2]])
    assert pad_batch(x, 3) is x


def test_compile_options_name_the_bad_mode():
    assert CompileOptions().mode == "default" and "reduce-overhead" in COMPILE_MODES
    with pytest.raises(ValueError, match="compile mode must be one of"):
        CompileOptions(mode="fastest")


def test_five_crops_in_chunks_of_two_compile_one_graph_and_equal_eager():
    """The plain network traces as one graph; padding the last chunk (1 crop) to 2 means the
    three chunks and a later call of 3 crops all run that graph: exactly one capture."""
    net = random_restoreformer(seed=1).eval()
    crops = _crops(5)
    eager = restore_crops(net, crops, chunk_size=2)
    backend = RecordingBackend()
    options = CompileOptions(backend=backend, on_cpu=True)
    out = restore_crops(net, crops, chunk_size=2, compile_options=options)
    again = restore_crops(net, crops[:3], chunk_size=2, compile_options=options)
    assert backend.batches == [2]
    assert compile_failure(net) is None
    # The last chunk ran padded to 2, and kernels may round differently per batch size: as close
    # to a float64 run as an eager call is.
    budget, truth = restore_budget(net, crops)
    budget.check(eager, truth, "eager, chunks of 2")
    budget.check(out, truth, "compiled, chunks of 2")
    budget.check(again, truth[:3], "compiled again, 3 crops")


def test_a_cpu_restores_uncompiled_unless_asked_and_says_why(monkeypatch):
    """On a CPU the eager network is faster than inductor's (3.5 s against 5.8 s per 512x512 face,
    bench/compile_restore.py), so the default options capture nothing, keep the memory chunks
    (no power-of-two padding) and the pipeline tells the user; on_cpu or the environment variable
    compiles anyway."""
    from helpers.pipeline import landmarks_at, make_faces

    from restoreformer_node.faces.pipeline import restore_faces
    from restoreformer_node.runtime.compile import CPU_ENV, compile_skipped

    monkeypatch.delenv(CPU_ENV, raising=False)
    net = _loaded_like_the_nodes(seed=6)
    crops = _crops(3, seed=6)
    backend = RecordingBackend()
    calls = []
    net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    out = restore_crops(net, crops, chunk_size=2, compile_options=CompileOptions(backend=backend))
    assert backend.batches == [] and calls == [2, 1]  # eager chunks, the last one not padded
    assert torch.equal(out, restore_crops(net, crops, chunk_size=2))
    note = compile_skipped(CompileOptions(), "cpu")
    assert "skipped on the CPU" in note and CPU_ENV in note
    assert compile_skipped(CompileOptions(), "cuda") is None
    assert compile_skipped(CompileOptions(on_cpu=True), "cpu") is None
    images = torch.rand(1, 96, 96, 3)
    faces = make_faces([(0, landmarks_at(48, 48, 40, 0))], 1, 96, 96)
    result = restore_faces(images, net, faces, compile_options=CompileOptions(backend=backend))
    assert result.report.compile_note == note and result.report.compiled is None and backend.batches == []
    monkeypatch.setenv(CPU_ENV, "1")
    assert compile_skipped(CompileOptions(), "cpu") is None
    restore_crops(net, crops, chunk_size=2, compile_options=CompileOptions(backend=backend))
    assert backend.batches == [2]


def test_a_channels_last_input_traces_one_graph_and_restores_like_eager():
    """The layout switch for the compiled graph (CHANNELS_LAST_INPUT, measured per device by
    bench/gpu_all.sh): the graph sees NHWC crops, still one graph for every chunk, same result."""
    from restoreformer_node.runtime.compile import CHANNELS_LAST_INPUT, uses_channels_last

    assert uses_channels_last(CompileOptions(), "cpu") is False
    assert uses_channels_last(CompileOptions(), "cuda") is CHANNELS_LAST_INPUT["cuda"]
    assert uses_channels_last(CompileOptions(channels_last=True), "cpu") is True
    net = _loaded_like_the_nodes(seed=3)
    crops = _crops(5, seed=3)
    eager = restore_crops(net, crops, chunk_size=2)
    for channels_last in (False, True):
        backend = RecordingBackend()
        options = CompileOptions(backend=backend, on_cpu=True, channels_last=channels_last)
        out = restore_crops(net, crops, chunk_size=2, compile_options=options)
        assert backend.batches == [2] and backend.channels_last == [channels_last]
        budget, truth = restore_budget(net, crops, channels_last=channels_last)
        budget.check(out, truth, f"compiled, channels-last input {channels_last}")
        if not channels_last:
            budget.check(eager, truth, "eager")


def test_a_bf16_weights_network_compiles_with_bf16_crops_and_its_own_cache_key():
    """Load Model (RestoreFormer)'s weight_dtype bf16 with the Compile node: the graph gets the crops in
    bf16 (no autocast), one graph for all chunks, the uncompiled bf16 result; an fp32 network of
    the same weights compiles separately (the cache key holds the weight dtype)."""
    from restoreformer_node.runtime.precision import cast_weights

    fp32 = _loaded_like_the_nodes(seed=11)
    net = cast_weights(_loaded_like_the_nodes(seed=11), "bf16")
    crops = _crops(3, seed=11)
    # The eager reference runs the chunks the compiled call runs ([2 crops], [last crop twice]):
    # the captured graph calls the same kernels on the same shapes, so the bits agree. (A chunk
    # of 1 may take other kernels, and one bf16 rounding step is 2^-8.)
    with recorded_codes(net) as codes:
        eager = restore_crops(net, pad_batch(crops, 4), chunk_size=2)[:3]
    backend = RecordingBackend()
    dtypes = []
    net.register_forward_pre_hook(lambda m, args: dtypes.append((args[0].dtype, torch.is_autocast_enabled("cpu"))))
    out = restore_crops(net, crops, chunk_size=2, compile_options=CompileOptions(backend=backend, on_cpu=True))
    assert backend.batches == [2] and set(dtypes) == {(torch.bfloat16, False)}
    assert torch.equal(out, eager)
    restore_crops(fp32, crops, chunk_size=2, compile_options=CompileOptions(backend=backend, on_cpu=True))
    assert backend.batches == [2, 2]
    # Near the fp32 network on the dictionary entries the bf16 run picked: bf16 rounding only, on
    # the 0..1 scale (half the network's output), which clamping can only shrink.
    padded = pad_batch(crops, 4)
    with forced_codes(fp32, codes + codes):
        ref = restore_crops(fp32, padded, chunk_size=2)[:3]
        with torch.no_grad():
            raw = torch.cat([fp32(padded[:2] * 2 - 1), fp32(padded[2:] * 2 - 1)])[:3]
    half_precision_budget(fp32, torch.bfloat16, raw, scale=0.5).check(out, ref, "bf16 network against fp32")


def test_the_fast_network_compiles_nothing_after_the_first_chunk():
    """The network as the nodes load it: every graph is captured while the first chunk runs and
    the padded last chunk reuses them (no recompile)."""
    net = _loaded_like_the_nodes()
    crops = _crops(5, seed=2)
    eager = restore_crops(net, crops, chunk_size=2)
    backend = RecordingBackend()
    after_chunk: list[int] = []
    out = restore_crops(
        net, crops, chunk_size=2, compile_options=CompileOptions(backend=backend, on_cpu=True),
        callback=lambda done, total: after_chunk.append(len(backend.batches)),
    )
    assert after_chunk == [1, 1, 1]  # one graph, no break, no recompile for the padded chunk
    assert backend.batches == [2]
    budget, truth = restore_budget(net, crops)
    budget.check(eager, truth, "eager")
    budget.check(out, truth, "compiled")


def test_the_fast_network_traces_as_one_graph():
    net = _loaded_like_the_nodes()
    with torch.inference_mode():
        explained = torch._dynamo.explain(net)(_crops(2) * 2 - 1)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]


def test_compiling_keeps_the_cpu_nnpack_path_and_traces_it():
    net = optimize_for_inference(random_restoreformer(seed=9).eval(), channels_last=prefers_channels_last("cpu"))
    if not fast.winograd_available():
        pytest.skip("no NNPACK in this PyTorch build or on this CPU")
    backend = RecordingBackend()
    restore_crops(net, _crops(2, seed=9), chunk_size=2, compile_options=CompileOptions(backend=backend, on_cpu=True))
    assert fast.winograd_available(), "compiling switched NNPACK off for eager runs too"
    assert backend.batches[:1] == [2]  # the first graph starts at the input crops


def test_a_failing_compile_warns_once_and_restores_eagerly(caplog):
    net = _loaded_like_the_nodes(seed=3)
    crops = _crops(5, seed=3)
    eager = restore_crops(net, crops, chunk_size=2)
    backend = FailingBackend()
    options = CompileOptions(backend=backend, on_cpu=True)
    with caplog.at_level(logging.WARNING, logger="restoreformer"):
        out = restore_crops(net, crops, chunk_size=2, compile_options=options)
        again = restore_crops(net, crops, chunk_size=2, compile_options=options)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "Cause: " in warnings[0] and "triton installation" in warnings[0]
    assert "Fix: install Triton" in warnings[0] and "restores without compiling" in warnings[0]
    assert backend.calls == 1  # the failure is remembered, not retried for every chunk or call
    assert compile_failure(net, options, "cpu", "fp32") == warnings[0].removeprefix("RestoreFormer: ")
    assert compile_failure(net, options, "cpu", "bf16") is None
    budget, truth = restore_budget(net, crops)  # the fallback runs eagerly, the last chunk padded
    budget.check(eager, truth, "eager")
    budget.check(out, truth, "eager fallback")
    assert torch.equal(again, out)  # the same fallback on the same chunks: the same bits


@pytest.mark.slow
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_inductor_compiled_restore_equals_eager(channels_last):
    """What the node does, for real: inductor generates and compiles C++ kernels on this CPU, for
    either input layout of the graph (CHANNELS_LAST_INPUT)."""
    from torch._dynamo.utils import counters

    net = _loaded_like_the_nodes(seed=4)
    crops = _crops(5, seed=4)
    eager = restore_crops(net, crops, chunk_size=2)
    counters.clear()
    graphs_after_chunk: list[int] = []
    out = restore_crops(
        net, crops, chunk_size=2, compile_options=CompileOptions(on_cpu=True, channels_last=channels_last),
        callback=lambda done, total: graphs_after_chunk.append(counters["stats"]["unique_graphs"]),
    )
    assert compile_failure(net) is None, compile_failure(net)
    assert graphs_after_chunk[0] >= 1 and graphs_after_chunk == [graphs_after_chunk[0]] * 3
    # Inductor generates its own kernels (fused, reordered reductions; vectorised exp): held to a
    # float64 run of the same weights within COMPILED x the eager network's error.
    budget, truth = restore_budget(net, crops, channels_last=channels_last, factor=COMPILED)
    budget.check(eager, truth, "eager")
    budget.check(out, truth, "inductor")


@pytest.mark.slow
def test_without_a_cxx_compiler_inductor_fails_and_restoration_goes_on(caplog):
    """A real failure: inductor pointed at a C++ compiler that does not exist (caches off, so it
    has to build)."""
    net = _loaded_like_the_nodes(seed=5)
    crops = _crops(3, seed=5)
    eager = restore_crops(net, crops, chunk_size=4)
    patch = {"cpp.cxx": (None, "/nonexistent/bin/g++"), "force_disable_caches": True}
    with torch._inductor.config.patch(patch), caplog.at_level(logging.WARNING, logger="restoreformer"):
        out = restore_crops(net, crops, chunk_size=4, compile_options=CompileOptions(on_cpu=True))
    warnings = [r.getMessage() for r in caplog.records if r.name == "restoreformer" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "install a C++ compiler" in warnings[0], warnings
    budget, truth = restore_budget(net, crops)  # the eager fallback, the last chunk padded
    budget.check(eager, truth, "eager")
    budget.check(out, truth, "eager fallback")


def test_compile_options_travel_on_a_copy_of_the_model_value():
    """RFModel stays frozen: the compile node's value is a replace()d copy with the same patcher."""
    from restoreformer_node.nodes.model_nodes import RFModel

    net = random_restoreformer()
    loaded = RFModel(patcher=object(), config=net.config, name="tiny.safetensors")
    assert loaded.compile_options is None
    compiled = dataclasses.replace(loaded, compile_options=CompileOptions(mode="reduce-overhead"))
    assert loaded.compile_options is None and compiled.patcher is loaded.patcher
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.compile_options = CompileOptions()  # type: ignore[misc]


def test_cli_compile_flags():
    from restoreformer_node.cli import build_parser

    args = build_parser().parse_args(["restore", "a.png", "--model", "m.safetensors", "--out", "o", "--compile"])
    assert args.compile is True and args.compile_mode == "default"
    args = build_parser().parse_args(["restore", "a.png", "--model", "m", "--out", "o"])
    assert args.compile is False


@pytest.mark.slow
def test_cli_compile_restores_like_the_cli_without_it(tmp_path, astronaut, grace_hopper, capsys, caplog, monkeypatch):
    """`restore --compile` on two real photos (MTCNN finds the faces), against the same command
    without --compile: the PNGs agree to one 8-bit level and nothing fell back."""
    import numpy as np
    from PIL import Image

    from restoreformer_node.cli import main
    from restoreformer_node.runtime.compile import CPU_ENV
    from restoreformer_node.weights import save_restoreformer

    net = random_restoreformer(seed=8)
    weights = tmp_path / "tiny_rf.safetensors"
    save_restoreformer(net, weights, net.config)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(astronaut).save(src / "astronaut.png")
    Image.fromarray(grace_hopper).save(src / "hopper.png")
    common = ["restore", str(src), "--model", str(weights), "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "eager")]) == 0
    capsys.readouterr()
    from torch._dynamo.utils import counters

    counters.clear()
    monkeypatch.setenv(CPU_ENV, "1")  # a CPU restores uncompiled by default (faster there)
    with caplog.at_level(logging.WARNING, logger="restoreformer"):
        assert main([*common, "--out", str(tmp_path / "compiled"), "--compile"]) == 0
    assert counters["stats"]["unique_graphs"] >= 1  # graphs were really compiled
    stdout = capsys.readouterr().out
    assert "torch.compile inductor/default" in stdout.splitlines()[0]
    assert stdout.count("1 face restored") == 2
    assert not [r for r in caplog.records if r.name == "restoreformer" and r.levelno >= logging.WARNING]
    for name, original in (("astronaut.png", astronaut), ("hopper.png", grace_hopper)):
        eager = np.asarray(Image.open(tmp_path / "eager" / name)).astype(int)
        compiled = np.asarray(Image.open(tmp_path / "compiled" / name)).astype(int)
        # Float rounding (orders of magnitude below a level) can move a value across an 8-bit
        # rounding boundary, never by more than one level.
        assert np.abs(compiled - eager).max() <= 1, name
        assert np.abs(compiled - original.astype(int)).max() > 10, name  # the face was restored
