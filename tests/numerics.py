"""Error budgets for the numeric tests, derived by analysis or from a reference run in the same test.

The rule (issue 21): a test's numeric bound comes from analysis or from a reference measured in the
same test, never from one machine's run. Summation order, vector width (AVX2, AVX-512) and the
convolution algorithm (oneDNN direct, NNPACK Winograd) differ between CPUs, so a bound tuned on one
CPU fails on another. The tools here:

- rounding analysis: `unit_roundoff`, `gamma` (Higham's bound for a sum of n products, valid for
  every summation order), `conv2d_bound` (worst case), `winograd_bound` (probabilistic);
- budgets relative to a reference: a float64 evaluation of the same weights and inputs is the
  truth, the reference path's own error against it is measured in the test, and the path under
  test may be `REORDER` times as far from it (`relative_budget`), never less than a few float32
  ulps of the output (`ulp_floor`), so a zero reference error cannot make a check impossible;
- the RestoreFormer network: `float64_twin`, `same_kernels` (the plain network running the
  convolution kernels and memory format of a fast path), `recorded_codes` / `forced_codes` (the
  dictionary entries a run picked, so a half-precision run can be compared with fp32 on the same
  entries), `half_precision_budget`;
- `cpu_paths`: the CPU code paths this process takes, for the test output.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

# A different order of the same sums, or a kernel with the same number of roundings per output,
# makes an error of the same size: its maximum over thousands of outputs moves by a few percent
# between two such orders, so twice the reference's error leaves room without hiding a real bug
# (those move outputs by 1e-3 and more).
REORDER = 2.0
# Two independent implementations of one function (spandrel's network and ours, a formula by hand)
# differ in kernels too, not only in order (explicit softmax against fused attention, x*sigmoid(x)
# against SiLU): errors of the same size, not of the same distribution, so a little more room.
INDEPENDENT = 3.0
# Even a correctly rounded result is off by half an ulp: budgets never go below this many ulps of
# the reference's magnitude (max |ref| for the max error, mean |ref| for the mean error).
ULP_FLOOR = 4
# Float64 runs of one function by two implementations: allowed rounding-count ratio (see float64_budget).
FLOAT64_SLACK = 64


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the largest relative error of one rounding to `dtype`."""
    return torch.finfo(dtype).eps / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """Higham's gamma_n = n u / (1 - n u): |fl(sum of n products) - exact| <= gamma_n * sum |products|,
    for any order of the additions (Accuracy and Stability of Numerical Algorithms, eq. 3.4)."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"gamma_{n} is undefined for {dtype}")
    return nu / (1 - nu)


@dataclass(frozen=True)
class Error:
    max: float
    mean: float

    def __str__(self) -> str:
        return f"max {self.max:.3g}, mean {self.mean:.3g}"


def error(got: torch.Tensor, ref: torch.Tensor) -> Error:
    """Absolute error of `got` against `ref`, computed in float64."""
    d = (got.detach().double().cpu() - ref.detach().double().cpu()).abs()
    return Error(float(d.max()), float(d.mean()))


def ulp_floor(ref: torch.Tensor, dtype: torch.dtype = torch.float32) -> Error:
    """`ULP_FLOOR` ulps of `dtype` at the reference's magnitude (max and mean)."""
    a = ref.detach().double().abs()
    eps = torch.finfo(dtype).eps
    return Error(ULP_FLOOR * eps * float(a.max()), ULP_FLOOR * eps * float(a.mean()))


@dataclass(frozen=True)
class Budget:
    """Largest allowed max and mean absolute error, and what they were derived from."""

    max: float
    mean: float
    basis: str

    def check(self, got: torch.Tensor, ref: torch.Tensor, what: str) -> Error:
        """Assert error(got, ref) is within the budget; prints both (visible with -s / -rA)."""
        err = error(got, ref)
        print(f"{what}: error {err}; budget max {self.max:.3g}, mean {self.mean:.3g} ({self.basis})")
        assert err.max <= self.max and err.mean <= self.mean, (
            f"{what}: error {err} exceeds the budget max {self.max:.3g}, mean {self.mean:.3g} ({self.basis})"
        )
        return err


def relative_budget(
    reference: Error, truth: torch.Tensor, factor: float = REORDER, dtype: torch.dtype = torch.float32
) -> Budget:
    """`factor` times a reference path's error against `truth` (float64), floored at `ulp_floor`."""
    floor = ulp_floor(truth, dtype)
    return Budget(
        max(factor * reference.max, floor.max),
        max(factor * reference.mean, floor.mean),
        f"{factor:g} x the reference path's error {reference}, floor {ULP_FLOOR} ulps",
    )


def float64_budget(errors: list[Error], truth: torch.Tensor) -> Budget:
    """Budget for two float64 evaluations of the same function (two implementations of one
    network): their float32 errors against `truth`, scaled by u(float64) / u(float32) = 2^-29,
    bound their float64 errors, up to the number of roundings, which other float64 kernels
    (no oneDNN) may raise: FLOAT64_SLACK covers that. A real difference between the two
    implementations (another epsilon, a missing term) is larger by orders of magnitude."""
    ratio = unit_roundoff(torch.float64) / unit_roundoff(torch.float32)
    floor = ulp_floor(truth, torch.float64)
    return Budget(
        max(FLOAT64_SLACK * ratio * max(e.max for e in errors), floor.max),
        max(FLOAT64_SLACK * ratio * max(e.mean for e in errors), floor.mean),
        f"{FLOAT64_SLACK} x 2^-29 x the float32 errors",
    )


def assert_parity(ours: torch.Tensor, theirs: torch.Tensor, truth: torch.Tensor, what: str) -> None:
    """Two float32 implementations of one function: each is as close to the float64 `truth` as the
    other, up to INDEPENDENT. Were the implementations different by more than rounding, one of
    them would be far from the truth the other meets."""
    ours_err, theirs_err = error(ours, truth), error(theirs, truth)
    relative_budget(theirs_err, truth, INDEPENDENT).check(ours, truth, f"{what}: ours, fp32")
    relative_budget(ours_err, truth, INDEPENDENT).check(theirs, truth, f"{what}: reference implementation, fp32")


def elementwise_check(err: torch.Tensor, bound: torch.Tensor, what: str) -> None:
    """Assert |err| <= bound everywhere; prints the worst ratio."""
    ratio = (err.double().abs() / bound.double().clamp_min(torch.finfo(torch.float64).tiny)).max()
    print(f"{what}: error {float(err.abs().max()):.3g}, at most {float(ratio):.3g} of its elementwise bound")
    assert bool((err.double().abs() <= bound.double()).all()), f"{what}: error exceeds its bound ({float(ratio):.3g}x)"


# --- linear operators: rounding analysis ----------------------------------------------------------


def conv2d_bound(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, *, extra: int = 0, **conv
) -> torch.Tensor:
    """Elementwise bound on |conv2d computed in `dtype` - exact conv2d| (float64 tensor).

    Each output is a sum of Ci*kh*kw products plus the bias: gamma_n times the same convolution of
    absolute values, whatever order the kernel adds in. `extra` adds roundings (operands cast to
    `dtype`, an output cast). The float64 reference's own error (gamma_n in float64) is included.
    """
    n = weight.shape[1] * weight.shape[2] * weight.shape[3] + (bias is not None) + extra
    absolute = F.conv2d(
        x.detach().double().abs(), weight.detach().double().abs(),
        None if bias is None else bias.detach().double().abs(), **conv,
    )
    return (gamma(n, dtype) + gamma(n, torch.float64)) * absolute


def _toom_cook(points: list[Fraction], m: int, r: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A^T [m, a], G [a, r], B^T [a, a] of the Winograd/Toom-Cook algorithm F(m, r) on `points`
    plus the point at infinity, a = m + r - 1: y = A^T ((G g) * (B^T d)) is the correlation
    y_i = sum_k g_k d_(i+k). Built exactly (fractions): the transpose of the linear convolution
    c = C ((E_g g) * (E_h h)), with E the evaluations at the points and C the interpolation."""
    a = m + r - 1
    assert len(points) == a - 1

    def evaluation(n: int) -> list[list[Fraction]]:
        return [[p**k for k in range(n)] for p in points] + [[Fraction(int(k == n - 1)) for k in range(n)]]

    def poly_mul(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
        out = [Fraction(0)] * (len(p) + len(q) - 1)
        for i, pi in enumerate(p):
            for j, qj in enumerate(q):
                out[i + j] += pi * qj
        return out

    columns = []
    for j, pj in enumerate(points):
        coeffs, scale = [Fraction(1)], Fraction(1)
        for i, pi in enumerate(points):
            if i != j:
                coeffs = poly_mul(coeffs, [-pi, Fraction(1)])
                scale *= pj - pi
        columns.append([c / scale for c in coeffs] + [Fraction(0)] * (a - len(coeffs)))
    monic = [Fraction(1)]
    for p in points:
        monic = poly_mul(monic, [-p, Fraction(1)])
    columns.append(monic)
    interpolation = [[columns[j][i] for j in range(a)] for i in range(a)]  # C [a, a]

    def tensor(rows: list[list[Fraction]]) -> torch.Tensor:
        return torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float64)

    e_h = tensor(evaluation(m))  # [a, m]
    return e_h.T.contiguous(), tensor(evaluation(r)), tensor(interpolation).T.contiguous()


# NNPACK's 3x3 Winograd kernel (wt8x8) is F(6x6, 3x3) on these interpolation points and infinity.
WINOGRAD_POINTS = [Fraction(v) for v in (0, 1, -1, 2, -2)] + [Fraction(1, 2), Fraction(-1, 2)]
WINOGRAD_AT, WINOGRAD_G, WINOGRAD_BT = _toom_cook(WINOGRAD_POINTS, 6, 3)


def winograd_bound(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, confidence: float = 7.0
) -> torch.Tensor:
    """Elementwise bound on |Winograd F(6x6, 3x3) convolution (3x3, padding 1) in `dtype` - exact|.

    Y = A^T [sum_c (G g_c G^T) * (B^T d_c B)] A per 6x6 output tile (tiles from the top-left corner,
    8x8 input tiles with the zero padding). The transforms have large entries (32 in A^T, 5.25 in
    B^T) whose products cancel, so a worst-case bound (all roundings aligned) is ~1000x the real
    error; this is the probabilistic one (Higham and Mary 2019): roundings are independent with
    mean 0 and |delta| <= u, so the error's variance is at most u^2 times the sum over roundings of
    (coefficient carrying it to the output x the magnitude rounded)^2, and the error stays within
    `confidence` standard deviations (exceeded with probability < 2 exp(-confidence^2 / 2), 5e-11
    per output at 7). Rounding counts per output: 14 in each of the input and output transforms
    (two passes over 8 terms), 4 in the kernel transform, the product and Ci channel sums, and the
    bias. The magnitudes are exact (float64) transforms of this input and weight.
    """
    b, c, h, w = x.shape
    at, g, bt = WINOGRAD_AT, WINOGRAD_G, WINOGRAD_BT
    th, tw = -(-h // 6), -(-w // 6)
    d = F.pad(x.detach().double(), (1, 6 * tw + 1 - w, 1, 6 * th + 1 - h))  # [b, c, 6 th + 2, 6 tw + 2]
    tiles = d.unfold(2, 8, 6).unfold(3, 8, 6)  # [b, c, th, tw, 8, 8]
    k = weight.detach().double()
    v = torch.einsum("ik,bcyxkl,jl->bcyxij", bt, tiles, bt)
    v_abs = torch.einsum("ik,bcyxkl,jl->bcyxij", bt.abs(), tiles.abs(), bt.abs())
    u = torch.einsum("ik,ockl,jl->ocij", g, k, g)
    u_abs = torch.einsum("ik,ockl,jl->ocij", g.abs(), k.abs(), g.abs())
    products = torch.einsum("ocij,bcyxij->boyxij", u.abs(), v.abs())
    variance = (  # in the transformed domain, per unit u^2
        14 * torch.einsum("ocij,bcyxij->boyxij", u**2, v_abs**2)  # input transform
        + 4 * torch.einsum("ocij,bcyxij->boyxij", u_abs**2, v**2)  # kernel transform
        + (c + 1) * products**2  # products and channel sums (each partial sum <= sum |u v|)
    )
    variance = torch.einsum("ik,boyxkl,jl->boyxij", at**2, variance, at**2)
    summed = torch.einsum("ocij,bcyxij->boyxij", u, v).abs()
    variance = variance + 14 * torch.einsum("ik,boyxkl,jl->boyxij", at.abs(), summed, at.abs()) ** 2
    sd = variance.sqrt().permute(0, 1, 2, 4, 3, 5).reshape(b, k.shape[0], 6 * th, 6 * tw)[:, :, :h, :w]
    if bias is not None:  # the bias add: one more rounding of the output
        sd = sd + bias.detach().double().abs().view(1, -1, 1, 1)
    return confidence * unit_roundoff(dtype) * sd


# --- the RestoreFormer network ---------------------------------------------------------------------


def float64_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A float64 copy of `module` (same weights, same code): the truth for float32 runs."""
    return copy.deepcopy(module).double()


def same_kernels(model: torch.nn.Module, *, winograd: bool, channels_last: bool) -> torch.nn.Module:
    """A copy of the plain network `model` whose convolutions run the kernels a fast path with these
    settings runs (NNPACK Winograd for 3x3 stride-1 convolutions, channels-last memory format),
    with every block still plain: the reference that isolates the block rewrites of the fast path
    from the rounding of its convolution algorithm and layout."""
    from restoreformer_node.model.fast import FastConv3x3, _is_winograd_conv

    twin = copy.deepcopy(model)
    for module in twin.modules():
        if _is_winograd_conv(module):
            module.__class__ = FastConv3x3
            module.winograd = winograd
    if channels_last:
        twin.to(memory_format=torch.channels_last)
    return twin.eval()


@contextlib.contextmanager
def recorded_codes(model: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects the dictionary indices [B, h, w] of every forward of `model` inside the block."""
    got: list[torch.Tensor] = []
    handle = model.quantize.register_forward_hook(lambda m, args, out: got.append(out.indices.detach().clone()))
    try:
        yield got
    finally:
        handle.remove()


@contextlib.contextmanager
def forced_codes(model: torch.nn.Module, codes: list[torch.Tensor]) -> Iterator[None]:
    """Inside the block, the i-th forward of `model` uses the dictionary entries codes[i] instead of
    its own nearest-entry search: the same network on the entries another run picked."""
    queue = list(codes)
    search = model.quantize.nearest

    def nearest(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx, dist = search(z)
        return queue.pop(0).to(idx.device).view_as(idx), dist

    model.quantize.nearest = nearest
    try:
        yield
    finally:
        del model.quantize.nearest
    assert not queue, f"{len(queue)} recorded forwards were not replayed"


def rounding_stages(model: torch.nn.Module) -> int:
    """Convolutions of the network (1x1 projections included): an upper count of the stages whose
    outputs a half-precision run rounds in sequence."""
    return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def half_precision_budget(model: torch.nn.Module, dtype: torch.dtype, ref: torch.Tensor, scale: float = 1.0) -> Budget:
    """Budget of a half-precision run of `model` against the fp32 network on the same dictionary
    entries, `ref` being that fp32 output (times `scale` for outputs mapped to another range).

    First-order analysis: each of the L = `rounding_stages` stages rounds its inputs or outputs to
    `dtype` (relative error u); GroupNorm brings the stream back to unit scale before every
    convolution, so no stage amplifies an earlier error, and L u times the output's magnitude
    bounds the sum (worst case: every rounding in the same direction; in practice they partly
    cancel, about sqrt(L) u)."""
    stages = rounding_stages(model)
    u = unit_roundoff(dtype)
    a = ref.detach().double().abs() * scale
    return Budget(stages * u * float(a.max()), stages * u * float(a.mean()), f"{stages} stages x u({dtype}) x |ref|")


def restored(net: torch.nn.Module, crops: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
    """What `restore_crops` makes of crops [N, 3, S, S] in [0, 1] at strength 1, in one call of `net`
    (input in the weights' dtype, optionally channels-last). float32, or float64 from a float64
    network (`float64_twin`), which makes it the truth for the others."""
    dtype = next(net.parameters()).dtype
    x = (crops.float() * 2 - 1).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = net(x)
    return (out.to(torch.promote_types(out.dtype, torch.float32)).clamp(-1, 1) + 1) / 2


def restore_budget(net: torch.nn.Module, crops: torch.Tensor, *, channels_last: bool = False) -> tuple[Budget, torch.Tensor]:
    """(budget, float64 truth) for restoring `crops` with `net` in some other way than one eager call
    (compiled, in padded chunks, through a node): REORDER x the error of one eager call of `net`
    with the same input layout, against a float64 run of the same weights."""
    truth = restored(float64_twin(net), crops)
    return relative_budget(error(restored(net, crops, channels_last=channels_last), truth), truth), truth


def cpu_paths() -> str:
    """The CPU code paths this process takes: ATen's vector width, oneDNN's ISA cap, NNPACK, and
    the CPU's native bf16 instructions."""
    import os

    from restoreformer_node.model.fast import winograd_available

    def has(name: str) -> str:
        probe = getattr(torch.cpu, name, None)
        return "unknown" if probe is None else ("yes" if probe() else "no")

    return (
        f"ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"oneDNN ISA cap {os.environ.get('ONEDNN_MAX_CPU_ISA', 'none')}, "
        f"NNPACK {'available' if winograd_available() else 'unavailable'}, "
        f"AVX512-BF16 {has('_is_avx512_bf16_supported')}, AMX {has('_is_amx_tile_supported')}"
    )
