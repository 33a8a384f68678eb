"""The CPU convolution routes (runtime/conv_routes.py): every route's output against float64, and
the timed choice ("auto"): measured once per shape, kept per machine in a JSON file, a corrupt file
ignored, the off switch, a failing route.

Random networks of the real architecture at the tiny geometry stand in for the published weights.
The choice is made deterministic with a fake clock that each route advances by a scripted cost, so
no test depends on how fast anything runs here.
"""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers.models import random_restoreformer

from restoreformer_node.model import RESTOREFORMER, RESTOREFORMER_PLUSPLUS, tiny_config
from restoreformer_node.runtime import conv_routes
from restoreformer_node.runtime.conv_routes import (
    CONV_ROUTES,
    ROUTES_ENV,
    ConvRouting,
    RouteTable,
    machine_key,
    route_available,
)
from restoreformer_node.runtime.fast import FastConv3x3, FastUpsample, optimize_for_inference, restore_plain
from restoreformer_node.runtime.machine import CACHE_ENV, cpu_model, vector_extensions

# Bounds on a route's error against float64, as a multiple of the plain fp32 forward's error on the
# same weights and input. Direct convolutions (oneDNN NCHW, NHWC, packed) differ from the plain one
# only in summation order: the same O(n u) bound, a small constant apart (measured 0.8-3x here).
# Winograd F(6x6, 3x3) multiplies rounding by the norms of its 8-point transforms (about an order
# of magnitude for NNPACK's points; measured 9-14x here with every 3x3 convolution on it).
DIRECT_FACTOR = 8.0
WINOGRAD_FACTOR = 32.0


def _input(batch: int = 2, size: int = 64, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=g) * 2 - 1


def _skip_unless_available(route: str) -> None:
    if route in CONV_ROUTES and not route_available(route):
        reasons = {
            "winograd": "this PyTorch build or CPU has no working NNPACK",
            "packed": "this PyTorch build has no torch.ops.mkldnn convolution ops (oneDNN)",
        }
        pytest.skip(f"route {route!r} cannot run here: {reasons.get(route, 'unavailable')}")


@pytest.fixture(scope="module", params=[RESTOREFORMER, RESTOREFORMER_PLUSPLUS], ids=["RF", "RF++"])
def reference(request):
    """(model, input, float64 output, the plain fp32 forward's absolute error against it)."""
    model = random_restoreformer(tiny_config(request.param))
    x = _input()
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        plain = (model(x).double() - ref).abs()
    return model, x, ref, plain


@pytest.mark.parametrize("route", ["fixed", *CONV_ROUTES])
def test_every_route_stays_near_float64(reference, route):
    """Each route, forced on every 3x3 convolution (and the upsamples it implies), against a float64
    run of the same weights: within a small multiple of the plain fp32 path's own error."""
    _skip_unless_available(route)
    model, x, ref, plain = reference
    with torch.no_grad():
        out = optimize_for_inference(copy.deepcopy(model), routes=route)(x)
    err = (out.double() - ref).abs()
    factor = WINOGRAD_FACTOR if route in ("winograd", "fixed") else DIRECT_FACTOR
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert err.max() <= factor * plain.max(), f"{route}: max {err.max():.3g} vs plain {plain.max():.3g}"
    assert err.mean() <= factor * plain.mean(), f"{route}: mean {err.mean():.3g} vs plain {plain.mean():.3g}"


class FakeClock:
    """A clock that only moves when a route runs: route -> cost in seconds (missing: 0)."""

    def __init__(self, costs: dict[str, float]):
        self.costs = costs
        self.now = 0.0
        self.calls: dict[str, int] = {}

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(monkeypatch):
    """Wrap every route runner so that it advances a FakeClock by its cost and counts its calls."""

    def make(costs: dict[str, float]) -> FakeClock:
        clock = FakeClock(costs)
        for name, runner in list(conv_routes.RUNNERS.items()):
            def timed(conv, x, name=name, runner=runner):
                clock.now += clock.costs.get(name, 0.0)
                clock.calls[name] = clock.calls.get(name, 0) + 1
                return runner(conv, x)

            monkeypatch.setitem(conv_routes.RUNNERS, name, timed)
        return clock

    return make


def _available_routes() -> list[str]:
    return [r for r in CONV_ROUTES if route_available(r)]


def test_auto_measures_each_shape_once_and_the_next_process_reads_the_file(tmp_path, clocked):
    routes = _available_routes()
    cheapest = routes[-1]
    clock = clocked({r: (1.0 if r == cheapest else 5.0) for r in routes})
    path = tmp_path / "routes.json"
    model = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS))
    fast = optimize_for_inference(copy.deepcopy(model), routes=ConvRouting("auto", RouteTable(path, timer=clock)))
    x = _input()
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        plain = (model(x).double() - ref).abs().max()
        out = fast(x)
    assert (out.double() - ref).abs().max() <= WINOGRAD_FACTOR * plain

    data = json.loads(path.read_text())
    records = data["machines"][machine_key()]
    conv_shapes = {k for k in records if k.startswith("conv3x3")}
    seen = {
        f"conv3x3 {m.in_channels}->{m.out_channels}" for m in fast.modules() if isinstance(m, FastConv3x3)
    }
    assert {k.rsplit(" ", 1)[0] for k in conv_shapes} == seen  # every conv shape, nothing else
    assert all(records[k]["route"] == cheapest for k in conv_shapes)
    assert all(set(records[k]["ms"]) == set(routes) for k in conv_shapes)
    # Upsamples: the sub-pixel form costs nothing on the fake clock, nearest costs its conv.
    ups = [k for k in records if k.startswith("upsample")]
    assert len(ups) == sum(isinstance(m, FastUpsample) for m in fast.modules()) and ups
    assert all(records[k]["route"] == "subpixel" for k in ups)

    # A new process (a new table on the same file) measures nothing: its clock must not be read.
    def no_clock() -> float:
        raise AssertionError("a cached shape was timed again")

    again = optimize_for_inference(copy.deepcopy(model), routes=ConvRouting("auto", RouteTable(path, timer=no_clock)))
    clock.calls.clear()
    with torch.no_grad():
        out2 = again(x)
    assert set(clock.calls) == {cheapest}
    assert torch.equal(out2, out)


def test_the_cheapest_route_wins_per_shape(tmp_path, clocked):
    """Costs that depend on the map size: each shape gets its own winner."""
    routes = _available_routes()
    if len(routes) < 2:
        pytest.skip(f"only {routes} can run here")
    big, small = routes[0], routes[1]
    clock = clocked({})
    table = RouteTable(tmp_path / "r.json", timer=clock)
    routing = ConvRouting("auto", table)
    conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    conv.__class__ = FastConv3x3
    conv.routing = routing
    with torch.no_grad():
        for side, winner in ((40, big), (12, small)):
            clock.costs = {r: 3.0 for r in routes} | {winner: 1.0}
            x = torch.randn(2, 8, side, side)
            torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=0, atol=2e-5)
            assert table.route(f"conv3x3 8->8 {side}x{side}", tuple(routes)) == winner


def test_the_key_names_the_cpu_the_torch_version_and_the_threads(tmp_path, clocked):
    key = machine_key()
    assert cpu_model() in key and torch.__version__ in key
    assert all(ext in key for ext in vector_extensions())
    clock = clocked({})
    table = RouteTable(tmp_path / "r.json", timer=clock)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    conv.__class__ = FastConv3x3
    conv.routing = ConvRouting("auto", table)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = machine_key()
        with torch.no_grad():
            conv(torch.randn(1, 4, 8, 8))
        assert table.route("conv3x3 4->4 8x8", CONV_ROUTES) is not None
        torch.set_num_threads(2)
        assert machine_key() == one.replace("| 1 threads", "| 2 threads") != one
        assert table.route("conv3x3 4->4 8x8", CONV_ROUTES) is None  # not measured with 2 threads yet
    finally:
        torch.set_num_threads(before)
    assert list(json.loads((tmp_path / "r.json").read_text())["machines"]) == [one]


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", '{"format": 99, "machines": {}}', '{"format": 1, "machines": []}', "\x00\xff"],
    ids=["truncated", "a list", "other format", "bad machines", "binary"],
)
def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, clocked, content, caplog):
    path = tmp_path / "routes.json"
    path.write_text(content, encoding="latin-1")
    clock = clocked({})
    table = RouteTable(path, timer=clock)
    assert table.route("conv3x3 4->4 8x8", CONV_ROUTES) is None
    assert "ignoring the convolution route cache" in caplog.text
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    conv.__class__ = FastConv3x3
    conv.routing = ConvRouting("auto", table)
    with torch.no_grad():
        conv(torch.randn(1, 4, 8, 8))
    data = json.loads(path.read_text())
    assert data["format"] == conv_routes.CACHE_FORMAT
    assert "conv3x3 4->4 8x8" in data["machines"][machine_key()]


def test_records_naming_unknown_routes_are_dropped_and_other_machines_kept(tmp_path, clocked):
    path = tmp_path / "routes.json"
    other = "Some Other CPU | avx2 | torch 0.0 | 4 threads"
    path.write_text(json.dumps({"format": 1, "machines": {
        machine_key(): {"conv3x3 4->4 8x8": {"route": "gpu_magic"}, "conv3x3 4->4 9x9": "nonsense"},
        other: {"conv3x3 4->4 8x8": {"route": "nchw", "ms": {"nchw": 1.0}}},
    }}))
    clock = clocked({})
    table = RouteTable(path, timer=clock)
    assert table.route("conv3x3 4->4 8x8", CONV_ROUTES) is None
    table.measure("conv3x3 4->4 8x8", {"nchw": lambda: None})
    machines = json.loads(path.read_text())["machines"]
    assert machines[other] == {"conv3x3 4->4 8x8": {"route": "nchw", "ms": {"nchw": 1.0}}}
    assert machines[machine_key()] == {"conv3x3 4->4 8x8": {"route": "nchw", "ms": {"nchw": 0.0}}}


def test_the_off_switch_runs_the_fixed_rule_without_timing_or_files(tmp_path, monkeypatch, clocked):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(conv_routes, "_default_table", None)
    clock = clocked({})
    model = random_restoreformer()
    x = _input(1)
    monkeypatch.setenv(ROUTES_ENV, "fixed")
    fixed = optimize_for_inference(copy.deepcopy(model))
    monkeypatch.setenv(ROUTES_ENV, "auto")
    by_argument = optimize_for_inference(copy.deepcopy(model), routes="fixed")  # the argument wins
    with torch.no_grad():
        out_env, out_arg = fixed(x), by_argument(x)
    assert torch.equal(out_env, out_arg)
    assert not (tmp_path / "cache").exists()
    expected = {"winograd"} if route_available("winograd") else set()
    assert set(clock.calls) == expected  # the fixed rule: Winograd on 32+ px maps, plain elsewhere
    # "auto" from the environment does write the cache folder the environment names.
    auto = optimize_for_inference(copy.deepcopy(model))
    with torch.no_grad():
        auto(x)
    assert (tmp_path / "cache" / conv_routes.CACHE_FILE).is_file()


def test_a_wrong_switch_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(ROUTES_ENV, "fastest")
    with pytest.raises(ValueError, match=ROUTES_ENV):
        optimize_for_inference(random_restoreformer())


def test_a_failing_route_warns_once_and_runs_the_plain_convolution(monkeypatch):
    monkeypatch.setattr(conv_routes, "_available", {})

    def broken(conv, x):
        raise RuntimeError("kernel exploded")

    monkeypatch.setitem(conv_routes.RUNNERS, "nchw", broken)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1)
    conv.__class__ = FastConv3x3
    conv.routing = ConvRouting("nchw")
    x = torch.randn(2, 4, 10, 10)
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = conv(x), conv(x)
    assert [str(w.message) for w in caught] == [
        "CPU convolution route 'nchw' failed (kernel exploded); using the plain convolution"
    ]
    expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_a_candidate_that_fails_while_measured_is_left_out(tmp_path, monkeypatch, clocked):
    clock = clocked({})

    def broken(conv, x):
        raise RuntimeError("no kernel for this shape")

    monkeypatch.setitem(conv_routes.RUNNERS, "channels_last", broken)
    table = RouteTable(tmp_path / "r.json", timer=clock)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    conv.__class__ = FastConv3x3
    conv.routing = ConvRouting("auto", table)
    with torch.no_grad():
        conv(torch.randn(1, 4, 8, 8))
    record = table.records()["conv3x3 4->4 8x8"]
    assert record["route"] != "channels_last" and "channels_last" not in record["ms"]
    assert record["failed"] == {"channels_last": "RuntimeError: no kernel for this shape"}


@pytest.mark.parametrize("route", CONV_ROUTES)
def test_route_weights_follow_new_weights_and_other_batch_sizes(route):
    """Each route keeps its own copy of the weights (NCHW, NHWC, oneDNN-packed); loading new
    weights rebuilds it, and a batch of another size than the one packed for still convolves right."""
    _skip_unless_available(route)
    model = optimize_for_inference(random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS)), routes=route)
    other = random_restoreformer(tiny_config(RESTOREFORMER_PLUSPLUS), seed=5)
    with torch.no_grad():
        model(_input(1))
        model.load_state_dict(other.state_dict(), strict=True)
        for batch in (3, 1):
            x = _input(batch, seed=batch)
            ref = copy.deepcopy(other).double()(x.double())
            plain = (other(x).double() - ref).abs().max()
            factor = WINOGRAD_FACTOR if route == "winograd" else DIRECT_FACTOR
            assert (model(x).double() - ref).abs().max() <= factor * plain
    assert list(model.state_dict()) == list(other.state_dict())
    restore_plain(model)
    assert not any("_route_weights" in m.__dict__ or "routing" in m.__dict__ for m in model.modules())


def test_a_copied_network_shares_its_routing(tmp_path):
    table = RouteTable(tmp_path / "r.json")
    model = optimize_for_inference(random_restoreformer(), routes=ConvRouting("auto", table))
    copied = copy.deepcopy(model)
    assert copied.decoder.conv_out.routing is model.decoder.conv_out.routing
    assert copied.decoder.conv_out.routing.table is table


@pytest.mark.parametrize("route", CONV_ROUTES)
def test_a_network_that_ran_can_be_copied_and_pickled(route):
    """oneDNN's packed weights cannot be copied or pickled; the copy rebuilds them on use."""
    _skip_unless_available(route)
    model = optimize_for_inference(random_restoreformer(), routes=route)
    x = _input(1)
    with torch.no_grad():
        out = model(x)
        copied = copy.deepcopy(model)
        assert not copied.decoder.conv_out.__dict__["_route_weights"]
        assert torch.equal(copied(x), out)
        pickled = pickle.loads(pickle.dumps(model))
        assert torch.equal(pickled(x), out)
