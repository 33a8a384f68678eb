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
from restoreformer_node.runtime.fast import (
    FastConv,
    FastResnetBlock,
    FastUpsample,
    optimize_for_inference,
    restore_plain,
)
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
    conv_shapes = {k for k in records if k.startswith("conv")}

    def kind(m: torch.nn.Conv2d) -> str:  # 3x3 stride 1 keep the first format's keys
        k = m.kernel_size[0]
        return f"conv{k}x{k}" + ("" if m.stride == (1, 1) and m.padding == (k // 2, k // 2) else f"/{m.stride[0]}p{m.padding[0]}")

    seen = {f"{kind(m)} {m.in_channels}->{m.out_channels}" for m in fast.modules() if isinstance(m, FastConv)}
    assert {k.rsplit(" ", 1)[0] for k in conv_shapes} == seen  # every conv shape, nothing else
    assert {"conv1x1", "conv3x3/2p0", "conv3x3"} <= {k.split(" ")[0] for k in conv_shapes}
    assert all(records[k]["route"] == cheapest for k in conv_shapes)
    direct = set(routes) - {"winograd"}  # NNPACK runs only 3x3 stride-1 convolutions
    assert all(set(records[k]["ms"]) == (set(routes) if k.startswith("conv3x3 ") else direct) for k in conv_shapes)
    # Upsamples: the sub-pixel and transposed forms cost nothing on the fake clock (the first
    # listed wins the tie), nearest costs its conv.
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
    conv.__class__ = FastConv
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
    conv.__class__ = FastConv
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
    [
        "{not json", "[]", '{"format": 99, "machines": {}}', '{"format": 1, "machines": {}}',
        f'{{"format": {conv_routes.CACHE_FORMAT}, "machines": []}}', "\x00\xff",
    ],
    ids=["truncated", "a list", "other format", "the first format", "bad machines", "binary"],
)
def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, clocked, content, caplog):
    path = tmp_path / "routes.json"
    path.write_text(content, encoding="latin-1")
    clock = clocked({})
    table = RouteTable(path, timer=clock)
    assert table.route("conv3x3 4->4 8x8", CONV_ROUTES) is None
    assert "ignoring the convolution route cache" in caplog.text
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    conv.__class__ = FastConv
    conv.routing = ConvRouting("auto", table)
    with torch.no_grad():
        conv(torch.randn(1, 4, 8, 8))
    data = json.loads(path.read_text())
    assert data["format"] == conv_routes.CACHE_FORMAT
    assert "conv3x3 4->4 8x8" in data["machines"][machine_key()]


def test_records_naming_unknown_routes_are_dropped_and_other_machines_kept(tmp_path, clocked):
    path = tmp_path / "routes.json"
    other = "Some Other CPU | avx2 | torch 0.0 | 4 threads"
    path.write_text(json.dumps({"format": conv_routes.CACHE_FORMAT, "machines": {
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
    conv.__class__ = FastConv
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
    conv.__class__ = FastConv
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


# --- the convolutions outside the 3x3 stride-1 shape, the fused residual, the upsample forms -------


@pytest.mark.parametrize("route", CONV_ROUTES)
@pytest.mark.parametrize(
    "shape", [(16, 24, 1, 1, 0), (16, 16, 3, 2, 0), (8, 12, 3, 2, 1)], ids=["1x1", "3x3 stride 2", "3x3 stride 2 pad 1"]
)
def test_strided_and_1x1_convolutions_on_every_route_stay_near_float64(route, shape):
    """The downsamples' stride-2 and the shortcuts' and projections' 1x1 convolutions run every
    direct route (NNPACK's Winograd does not apply: they run plain there). Elementwise within the
    bound of any summation order (helpers/numerics.py: conv2d_bound), float64 as the truth."""
    from helpers.numerics import conv2d_bound, elementwise_check

    _skip_unless_available(route)
    ci, co, k, stride, pad = shape
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(ci, co, k, stride=stride, padding=pad)
    conv.__class__ = FastConv
    conv.routing = ConvRouting(route)
    for x in (torch.randn(2, ci, 13, 10), torch.randn(1, ci, 9, 9).contiguous(memory_format=torch.channels_last)):
        with torch.no_grad():
            got = conv(x)
            truth = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), stride, pad)
        assert got.shape == truth.shape
        elementwise_check(got.double() - truth, conv2d_bound(x, conv.weight, conv.bias, torch.float32, stride=stride, padding=pad), f"{route} {shape}")


@pytest.mark.parametrize("widths", [(16, 16), (16, 24)], ids=["identity shortcut", "1x1 shortcut"])
def test_the_packed_route_adds_the_residual_in_the_convolution(widths, monkeypatch):
    """On the packed route a residual block's second convolution adds the shortcut in oneDNN's
    epilogue; a 1x1 shortcut's output (a temporary) takes the sum, the block's input is never
    written. Against a float64 run of the same block: within the direct routes' factor of the plain
    fp32 block's error."""
    from restoreformer_node.model.blocks import ResnetBlock

    _skip_unless_available("packed")
    calls: list[bool] = []
    real = conv_routes.packed_conv_add

    def counted(conv, x, other, into_other):
        calls.append(into_other)
        return real(conv, x, other, into_other)

    monkeypatch.setattr(conv_routes, "packed_conv_add", counted)
    torch.manual_seed(0)
    block = ResnetBlock(*widths, groups=8)
    x = torch.randn(2, widths[0], 12, 12) + 0.5
    with torch.no_grad():
        truth = copy.deepcopy(block).double()(x.double())
        plain = (block(x).double() - truth).abs()
        fast = copy.deepcopy(block)
        fast.__class__ = FastResnetBlock
        for conv in (fast.conv1, fast.conv2, fast.nin_shortcut):
            if conv is not None:
                conv.__class__ = FastConv
                conv.routing = ConvRouting("packed")
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        before = x_nhwc.clone()
        out = fast(x_nhwc)
    assert calls == [widths[0] != widths[1]]  # fused once; into the shortcut's temporary when it has one
    assert torch.equal(x_nhwc, before)
    err = (out.double() - truth).abs()
    assert err.max() <= DIRECT_FACTOR * plain.max() and err.mean() <= DIRECT_FACTOR * plain.mean()


def test_the_fused_add_is_skipped_off_the_packed_route(monkeypatch):
    """Other routes (and NCHW or half-precision shortcuts) run the convolution, then the add."""
    from restoreformer_node.model.blocks import ResnetBlock

    monkeypatch.setattr(conv_routes, "packed_conv_add", lambda *a: pytest.fail("fused off the packed route"))
    torch.manual_seed(0)
    block = ResnetBlock(8, 8, groups=4)
    x = torch.randn(1, 8, 10, 10)
    fast = copy.deepcopy(block)
    fast.__class__ = FastResnetBlock
    for conv in (fast.conv1, fast.conv2):
        conv.__class__ = FastConv
        conv.routing = ConvRouting("nchw")
    with torch.no_grad():
        torch.testing.assert_close(fast(x), block(x), rtol=0, atol=1e-5)
        assert conv_routes.ConvRouting("packed").conv_add(fast.conv2, x, x.clone(), False) is None  # NCHW other


def test_auto_picks_the_quickest_upsample_form(tmp_path, clocked):
    """Each upsample shape times the sub-pixel, transposed and nearest forms and runs the quickest
    (here the transposed one, by a fake clock on which every convolution route costs more)."""
    clock = clocked(dict.fromkeys(CONV_ROUTES, 5.0))
    table = RouteTable(tmp_path / "r.json", timer=clock)
    model = optimize_for_inference(random_restoreformer(), routes=ConvRouting("auto", table))
    up = next(m for m in model.modules() if isinstance(m, FastUpsample))
    costs = {"_subpixel_fp32": 3.0, "_transposed": 1.0}
    ran: list[str] = []
    for name, real in (("_subpixel_fp32", up._subpixel_fp32), ("_transposed", up._transposed)):
        def form(x, name=name, real=real):
            clock.now += costs[name]
            ran.append(name)
            return real(x)
        setattr(up, name, form)  # the forward looks both forms up on the instance
    x = torch.randn(1, up.conv.in_channels, 6, 6)
    with torch.no_grad():
        out = up(x)
        record = table.records()[conv_routes.upsample_key(up.conv, x)]
        assert record["route"] == "transpose" and set(record["ms"]) == {"subpixel", "transpose", "nearest"}
        ran.clear()
        assert torch.equal(up(x), out) and ran == ["_transposed"]
        ref = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), up.conv.weight, up.conv.bias, padding=1)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
