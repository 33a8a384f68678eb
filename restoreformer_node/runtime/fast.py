"""Inference speed paths for the RestoreFormer network, behind the same module names.

`optimize_for_inference(model)` rewrites the blocks of a loaded model in place so that inference
runs faster with the same outputs (up to float rounding), while the module tree, the parameters and
the state-dict keys stay exactly those of the plain definition. Loading and training use the plain
classes; call this once after the weights are in (runtime/prepare.py does).

What it does (each chosen by measurement with bench/model_forward.py; figures in bench/README.md):
- CPU, fp32: each convolution (3x3, the stride-2 downsamples, the 1x1 shortcuts and projections)
  runs through the kernel that is fastest for its shape on this machine (runtime/conv_routes.py:
  NNPACK's Winograd F(6x6, 3x3) one image at a time for 3x3 stride-1 shapes, oneDNN on NCHW or
  NHWC maps, oneDNN with pre-packed weights, which also adds a residual in its epilogue), timed
  once per machine and kept in the user's cache; "fixed" routes keep the rule of the first machine
  measured (Winograd on maps of WINOGRAD_MIN_SIDE and larger, every other convolution plain). Winograd's transforms round a little more than a direct
  convolution (tests bound every route against float64). GPUs, half precision and autograd use
  the normal convolution. Where NNPACK is missing (Windows builds, CPUs without AVX2) the model's
  weights are laid out channels-last.
- channels-last (NHWC) convolutions: oneDNN runs 3x3 convolutions without reordering the
  activations around every call.
- GroupNorm followed by an in-place SiLU and in-place residual adds: fewer full-resolution
  temporaries (these passes are memory-bound).
- Upsample (nearest x2, then a 3x3 conv) as a sub-pixel convolution: the 3x3 kernel acting on a
  nearest-upsampled map is, per output phase (row parity a, column parity b), a 2x2 kernel on the
  low-resolution map. One 2x2 convolution with 4x the output channels on the zero-padded input
  computes all four phases, which are then interleaved. 16 taps at low resolution instead of 9
  at high resolution: 4/9 of the multiply-adds. Exact up to float rounding (the merged taps
  are sums of original weights). On a CPU in fp32 the same taps can also run as one stride-2
  transposed convolution, which writes the interleaved map directly (the routing times both).
- Mixed precision islands (see runtime/precision.py): under fp16 autocast the residual stream
  stays fp32, GroupNorm runs in fp32, and the convolutions that read the raw residual stream
  rescale it by a power of two so that large activations cannot overflow. bf16 (fp32's range)
  runs without them by default (`HALF_ISLANDS`), every map in bf16.

The fast blocks are inference-only: with autograd enabled they run the plain forward, so an
optimised model can still be fine-tuned (slowly) without silent gradient errors.
"""

from __future__ import annotations

import threading
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..model.blocks import AttentionBlock, Downsample, ResnetBlock, Upsample
from ..model.network import RestoreFormer
from .conv_routes import WINOGRAD_MIN_SIDE as WINOGRAD_MIN_SIDE  # re-exported: its old home
from .conv_routes import (
    ConvRouting,
    routable,
    routed_conv,
    routing_of,
    transposed_upsample,
    weight_stamp,
    winograd_available,
)

# Row (or column) merge of a 3x3 kernel acting on a nearest-x2 upsampled map, per output parity.
# For output row 2i+a the three kernel rows read low-resolution rows:
#   a=0: row0 -> i-1, row1 -> i, row2 -> i      => taps (i-1, i) = (k0, k1+k2)
#   a=1: row0 -> i,   row1 -> i, row2 -> i+1    => taps (i, i+1) = (k0+k1, k2)
_PHASE_TAPS = torch.tensor(
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
        [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ],
    dtype=torch.float64,
)

# fp16's largest finite value is 65504; a convolution sums up to C*9 products, so the raw stream
# fed to it in fp16 is kept under this bound by an exact power-of-two rescale.
_FP16_STREAM_LIMIT = 1024.0


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """[Co, Ci, 3, 3] kernel of "nearest x2 then conv 3x3, pad 1" -> [4*Co, Ci, 2, 2] phase kernels.

    Output channel block p = 2*a + b holds the kernel of output phase (row parity a, column
    parity b). Merged in float64, then cast back, so each merged tap is the correctly rounded sum.
    """
    taps = _PHASE_TAPS.to(weight.device)
    w = torch.einsum("atk,bsl,oikl->aboits", taps, taps, weight.double())
    co, ci = weight.shape[:2]
    return w.reshape(4 * co, ci, 2, 2).to(weight.dtype)


# The same merge for a stride-2, padding-1 transposed convolution with a 4x4 kernel: output row
# 2i+a receives input row j through kernel tap t = 2i+a+1-2j, so a=0 reads rows i-1, i through taps
# 3, 1 and a=1 reads rows i, i+1 through taps 2, 0. Tap t as a sum of the 3x3 kernel's rows:
_TRANSPOSE_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)


def transpose_weight(weight: torch.Tensor) -> torch.Tensor:
    """[Co, Ci, 3, 3] kernel of "nearest x2 then conv 3x3, pad 1" -> [Ci, Co, 4, 4] kernel of the
    equal transposed convolution (stride 2, padding 1). The same merged taps as `subpixel_weight`
    (each a correctly rounded float64 sum), laid out so that one call writes the interleaved map."""
    taps = _TRANSPOSE_TAPS.to(weight.device)
    return torch.einsum("ak,bl,oikl->ioab", taps, taps, weight.double()).to(weight.dtype)


def subpixel_upsample_conv(
    x: torch.Tensor, weight4: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """Nearest x2 upsample followed by the 3x3 conv whose phase kernels are `weight4`.

    x [B, C, H, W] -> [B, Co, 2H, 2W], in x's memory format (channels-last stays channels-last).
    """
    b, _, h, w = x.shape
    co = weight4.shape[0] // 4
    bias4 = None if bias is None else bias.repeat(4)
    # Padded by one on every side, the 2x2 conv at (q, r) reads low-res rows q-1, q and columns
    # r-1, r; phase (a, b) of output pixel (2i+a, 2j+b) is the result at (i+a, j+b).
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), weight4, bias4)  # [B, 4Co, H+1, W+1]
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if channels_last:
        out = torch.empty((b, h, 2, w, 2, co), dtype=y.dtype, device=y.device)
        y_hwc = y.permute(0, 2, 3, 1)  # a view when y is channels-last
        for a in (0, 1):
            for bb in (0, 1):
                p = 2 * a + bb
                out[:, :, a, :, bb, :] = y_hwc[:, a : a + h, bb : bb + w, p * co : (p + 1) * co]
        return out.view(b, 2 * h, 2 * w, co).permute(0, 3, 1, 2)
    out = torch.empty((b, co, h, 2, w, 2), dtype=y.dtype, device=y.device)
    for a in (0, 1):
        for bb in (0, 1):
            p = 2 * a + bb
            out[:, :, :, a, :, bb] = y[:, p * co : (p + 1) * co, a : a + h, bb : bb + w]
    return out.view(b, co, 2 * h, 2 * w)


# PyTorch's CPU GroupNorm kernel for channels-last input accumulates the group sums in a way that
# loses ~1e-3 (relative) on groups of 2^18+ elements with a mean offset; the NCHW kernel loses
# ~3e-6. On groups this large, `_channels_last_group_norm` computes the statistics another way.
_CL_PRECISE_MIN_GROUP = 1 << 17


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


# Which half precisions keep the fp32 islands (fp32 GroupNorm and residual stream). fp16 needs them
# against overflow; bf16 has fp32's range, and without them it runs every map in bf16 (half the
# memory traffic of the norm and elementwise passes). bench/model_forward.py measures both.
HALF_ISLANDS: dict[torch.dtype, bool] = {torch.float16: True, torch.bfloat16: False}


def _autocast_dtype(x: torch.Tensor) -> torch.dtype | None:
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def _lean_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The half dtype every map stays in, when autocast runs one without fp32 islands."""
    dtype = _autocast_dtype(x)
    if dtype is None or dtype == torch.float32 or HALF_ISLANDS.get(dtype, True):
        return None
    return dtype


class _Workspace(threading.local):
    """Maps that hold results no one keeps (one per shape and layout, per thread), reused instead of
    allocated: the C allocator serves maps over 32 MB with fresh pages, which the kernel faults in
    and zeroes one by one, costing more than the pass that fills them. Emptied after each forward
    of an optimised network (`_release_workspace`)."""

    def __init__(self) -> None:
        self.maps: dict[tuple, torch.Tensor] = {}

    def like(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.stride(), x.dtype, x.device)
        if key not in self.maps:
            self.maps[key] = torch.empty_like(x)
        return self.maps[key]


_workspace = _Workspace()


def _release_workspace(module: nn.Module, args, output) -> None:
    """Forward hook of an optimised network: free this thread's workspace maps."""
    _workspace.maps.clear()


def _norm(norm: nn.GroupNorm, x: torch.Tensor, scratch: bool = False, transient: bool = False) -> torch.Tensor:
    """GroupNorm. Under autocast with islands: statistics and output in fp32 whatever the input
    dtype. Under autocast without islands: in the half dtype (the kernels still accumulate the
    statistics in fp32). Without autocast: in x's dtype (a model cast to half runs natively).

    `scratch=True` allows x to be overwritten (a temporary no one reads afterwards).
    `transient=True`: the caller drops the result before the next GroupNorm runs, so it may live
    in a reused workspace map.
    """
    lean = _lean_dtype(x)
    if lean is not None or (_autocast_dtype(x) is None and x.dtype != torch.float32):
        dtype = lean or x.dtype
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x.to(dtype), norm.num_groups, norm.weight.to(dtype), norm.bias.to(dtype), norm.eps)
    x = x.float()
    b, c, h, w = x.shape
    g = norm.num_groups
    if x.device.type == "cpu" and _is_channels_last(x) and (c // g) * h * w >= _CL_PRECISE_MIN_GROUP:
        out = x if scratch else _workspace.like(x) if transient else None
        return _channels_last_group_norm(norm, x, out)
    return F.group_norm(x, g, norm.weight.float(), norm.bias.float(), norm.eps)


def _channels_last_group_norm(norm: nn.GroupNorm, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """GroupNorm of a large fp32 channels-last CPU map, from per-channel statistics that read the map
    in its own layout: means from ATen's sum (pairwise accumulation), variances from its batch-norm
    statistics kernel (one image at a time), merged into group statistics in float64, then one
    per-channel scale and shift. At most half the error of ATen's channels-last GroupNorm kernel
    (tests), and cheaper than shifting the map by its group means first (the earlier fix: a whole
    pass more). `out`: where the result goes (x itself, or a workspace map; None: a new map)."""
    b, c, h, w = x.shape
    g, cg = norm.num_groups, c // norm.num_groups
    mean = (x.sum(dim=(2, 3)).double() / (h * w)).view(b, g, cg)
    var = torch.stack([torch.batch_norm_update_stats(x[i : i + 1], None, None, 0.0)[1] for i in range(b)])
    var = var.double().view(b, g, cg)  # biased, per channel
    group_mean = mean.mean(dim=2, keepdim=True)
    group_var = (var + (mean - group_mean) ** 2).mean(dim=2, keepdim=True)  # the law of total variance
    scale = torch.rsqrt(group_var + norm.eps).expand(b, g, cg).reshape(b, c) * norm.weight.double()
    shift = norm.bias.double() - group_mean.expand(b, g, cg).reshape(b, c) * scale
    shift, scale = shift.float().view(b, c, 1, 1), scale.float().view(b, c, 1, 1)
    return torch.addcmul(shift, x, scale) if out is None else torch.addcmul(shift, x, scale, out=out)


# GroupNorm then SiLU as one generated kernel (torch.compile of just these two ops), per device
# type: one read for the statistics and one read and write for the output, where the two ATen
# kernels read the map three times and write it twice. Off until a measurement turns it on
# (bench/gpu_all.sh "switches"); a network compiled as a whole gets the same fusion from inductor.
FUSED_NORM_SILU: dict[str, bool] = {}
_fused_norm_silu_fn: list = []


def _group_norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    return F.silu(F.group_norm(x, groups, weight, bias, eps))


def _fused_norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor | None:
    """norm+SiLU through the compiled kernel where FUSED_NORM_SILU turns it on for x's device and
    the maps stay in one dtype (no fp32 islands); None where the separate kernels run."""
    device = x.device.type
    if not FUSED_NORM_SILU.get(device) or torch.compiler.is_compiling() or torch.is_grad_enabled():
        return None
    dtype = x.dtype if _autocast_dtype(x) is None else _lean_dtype(x)
    if dtype is None:
        return None
    if not _fused_norm_silu_fn:
        _fused_norm_silu_fn.append(torch.compile(_group_norm_silu))  # one graph per shape, then dynamic
    try:
        with torch.autocast(device, enabled=False):
            return _fused_norm_silu_fn[0](x.to(dtype), norm.weight.to(dtype), norm.bias.to(dtype), norm.num_groups, norm.eps)
    except Exception as error:  # noqa: BLE001 - no compiler, no Triton: the separate kernels still run
        FUSED_NORM_SILU[device] = False
        warnings.warn(f"fused GroupNorm+SiLU failed on {device} ({type(error).__name__}: {str(error)[:200]}); "
                      "using the separate kernels", stacklevel=3)
        return None


def norm_silu(norm: nn.GroupNorm, x: torch.Tensor, scratch: bool = False, transient: bool = False) -> torch.Tensor:
    """GroupNorm (see `_norm` for its dtype) then SiLU in place, or both in one fused kernel
    (FUSED_NORM_SILU)."""
    fused = _fused_norm_silu(norm, x)
    if fused is not None:
        return fused
    return F.silu(_norm(norm, x, scratch, transient), inplace=True)


def _residual(stream: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """stream + branch in the stream's memory format, reusing `branch` (a temporary) when it has
    the same layout (attention's projection comes out channels-last from NCHW maps). Under
    autocast with islands, and for mixed dtypes, the sum is fp32."""
    islands = _autocast_dtype(branch) is not None and _lean_dtype(branch) is None
    if islands or branch.dtype != stream.dtype:
        return stream.float() + branch.float()
    return branch.add_(stream) if branch.stride() == stream.stride() else stream + branch


def fp16_stream_scale(x: torch.Tensor) -> torch.Tensor:
    """The power of two (>= 1, a 0-d tensor: no host sync) that brings max|x| under
    `_FP16_STREAM_LIMIT`; dividing by it and multiplying back is exact in floating point."""
    scale = torch.exp2(torch.ceil(torch.log2(x.detach().abs().amax().float() / _FP16_STREAM_LIMIT)))
    return scale.clamp(min=1.0)


def stream_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(x) for a conv that reads the raw (un-normalised) residual stream.

    Under fp16 autocast, x is divided by `fp16_stream_scale(x)` and the result multiplied back in
    fp32, so large activations cannot overflow fp16. Elsewhere it is a plain call.
    """
    if _autocast_dtype(x) != torch.float16:
        return conv(x)
    scale = fp16_stream_scale(x)
    y = conv._conv_forward(x / scale, conv.weight, None).float() * scale
    if conv.bias is not None:
        y = y + conv.bias.float().view(1, -1, 1, 1)
    return y


def prefers_channels_last(device: torch.device | str) -> bool:
    """The memory format `optimize_for_inference` should use for a model that runs on `device`:
    channels-last on a CPU without NNPACK; NCHW on a CPU with it (its kernels read NCHW; the other
    routes lay out their own copies of the weights) and on GPUs (cuDNN's NCHW bf16 path measured
    faster; bench/README.md)."""
    return torch.device(device).type == "cpu" and not winograd_available()


class FastConv(nn.Conv2d):
    """A convolution whose CPU kernel is chosen per layer shape (runtime/conv_routes.py: oneDNN on
    NCHW or NHWC maps or with pre-packed weights, and NNPACK Winograd one image at a time for 3x3
    stride-1 shapes). GPUs, half precision, autograd and traced graphs run the plain convolution.
    """

    def uses_winograd(self, x: torch.Tensor) -> bool:
        """Whether the fixed rule sends x through NNPACK (not switched off by optimize_for_inference's
        `winograd=False`, fp32 CPU inference, a map of WINOGRAD_MIN_SIDE or larger)."""
        return routable(x, self.weight) and routing_of(self).fixed_route(self, x) == "winograd"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not routable(x, self.weight):
            return super().forward(x)
        return routing_of(self).conv(self, x)


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, into_other: bool) -> torch.Tensor | None:
    """conv(x) + other in one call where conv's route can fuse the add (runtime/conv_routes.py,
    ConvRouting.conv_add); None where the caller runs the convolution and adds."""
    if not isinstance(conv, FastConv) or not routable(x, conv.weight) or not routable(other, conv.weight):
        return None
    return routing_of(conv).conv_add(conv, x, other, into_other)


class FastResnetBlock(ResnetBlock):
    """ResnetBlock with fused norm+SiLU, an in-place residual add and (with islands) an fp32
    residual stream."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        h = self.conv1(norm_silu(self.norm1, x, transient=True))  # conv1 only reads it
        h = norm_silu(self.norm2, h, scratch=h.dtype == torch.float32)
        shortcut = x if self.nin_shortcut is None else stream_conv(self.nin_shortcut, x)
        fused = conv_add(self.conv2, h, shortcut, into_other=self.nin_shortcut is not None)
        return fused if fused is not None else _residual(shortcut, self.conv2(h))


class FastUpsample(Upsample):
    """Upsample as a sub-pixel convolution (4 phase kernels of 2x2 taps at low resolution)."""

    def _phase_weight(self) -> torch.Tensor:
        if torch.compiler.is_compiling():
            # Traced: the merged kernel becomes part of the graph (is_inference and the cache
            # below would break it); inductor folds it with the weights.
            return subpixel_weight(self.conv.weight)
        w = self.conv.weight
        stamp = weight_stamp(w)
        if getattr(self, "_subpixel_stamp", None) != stamp:
            # Non-persistent: never in the state dict, rebuilt when the conv weight changes.
            self.register_buffer("subpixel_weight", subpixel_weight(w.detach()), persistent=False)
            memory_format = (
                torch.channels_last
                if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                else torch.contiguous_format
            )
            self.subpixel_weight = self.subpixel_weight.contiguous(memory_format=memory_format)
            self._subpixel_stamp = stamp
        return self.subpixel_weight

    def _subpixel_fp32(self, x: torch.Tensor) -> torch.Tensor:
        return subpixel_upsample_conv(x, self._phase_weight(), self.conv.bias)

    def _transposed(self, x: torch.Tensor) -> torch.Tensor:
        return transposed_upsample(self.conv, x, transpose_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        if isinstance(self.conv, FastConv) and routable(x, self.conv.weight):
            # fp32 on a CPU: the sub-pixel kernels (16 taps at low resolution) then an interleaving
            # copy, the same taps as one transposed convolution, or nearest x2 then the 3x3
            # convolution at full resolution (9 taps, and Winograd needs fewer multiplies than
            # that), whichever the routing picks for this shape.
            forms = {"subpixel": self._subpixel_fp32, "transpose": self._transposed}
            route = routing_of(self.conv).upsample_route(self.conv, x, forms)
            if route == "nearest":
                return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            return forms[route](x)
        weight4 = self._phase_weight()
        lean = _lean_dtype(x)
        if lean is not None:
            with torch.autocast(x.device.type, enabled=False):
                return subpixel_upsample_conv(x.to(lean), weight4.to(lean), self.conv.bias.to(lean))
        if _autocast_dtype(x) is not None:
            # Same rule as stream_conv: the sub-pixel conv reads the raw stream.
            dtype = _autocast_dtype(x)
            scale = None
            if dtype == torch.float16:
                scale = fp16_stream_scale(x)
                x = x / scale
            with torch.autocast(x.device.type, enabled=False):
                y = subpixel_upsample_conv(x.to(dtype), weight4.to(dtype), None).float()
            if scale is not None:
                y = y * scale
            return y + self.conv.bias.float().view(1, -1, 1, 1)
        return subpixel_upsample_conv(x, weight4, self.conv.bias)  # a model cast to half, or a GPU


class FastDownsample(Downsample):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return super().forward(x)
        return stream_conv(self.conv, F.pad(x, (0, 1, 0, 1)))


class FastAttentionBlock(AttentionBlock):
    """Attention with the norms and residual of `_norm` / `_residual`; q, k, v views taken straight
    from NHWC maps."""

    def forward(self, x, query=None, record=None):
        if torch.is_grad_enabled() or record is not None:
            return super().forward(x, query, record)
        h = _norm(self.norm1, x)
        source = h if query is None else _norm(self.norm2, query)
        b, c, hh, ww = x.shape
        d = c // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:  # [B, C, h, w] -> [B, heads, hw, d]
            return t.permute(0, 2, 3, 1).reshape(b, hh * ww, self.heads, d).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(source)), split(self.k(h)), split(self.v(h)))
        out = out.transpose(1, 2).reshape(b, hh, ww, c).permute(0, 3, 1, 2)
        fused = conv_add(self.proj_out, out, x, into_other=False)
        return fused if fused is not None else _residual(x, self.proj_out(out))


_FAST_CLASSES: dict[type, type] = {
    ResnetBlock: FastResnetBlock,
    Upsample: FastUpsample,
    Downsample: FastDownsample,
    AttentionBlock: FastAttentionBlock,
}
_PLAIN_CLASSES = {fast: plain for plain, fast in _FAST_CLASSES.items()}


def is_optimized(model: RestoreFormer) -> bool:
    """True when every block of `model` is in its fast form (the fp32 islands are in place)."""
    return not any(type(m) in _FAST_CLASSES for m in model.modules())


def optimize_for_inference(
    model: RestoreFormer,
    *,
    channels_last: bool | None = None,
    subpixel: bool = True,
    winograd: bool = True,
    routes: str | ConvRouting | None = None,
) -> RestoreFormer:
    """Switch `model`'s blocks to their fast inference forms in place and return it.

    Parameters, buffers saved in the state dict and module names are unchanged (the sub-pixel
    kernels are non-persistent buffers). `channels_last` stores conv weights NHWC (inputs are
    converted on entry by `forward`'s first conv); None picks `prefers_channels_last` for the
    device the weights are on now, so a caller that moves the model later should pass it.
    `subpixel=False` keeps the nearest+conv upsample and `winograd=False` keeps NNPACK out of the
    3x3 convolutions (for ablations). `routes` picks the CPU kernel of each convolution and
    upsample (runtime/conv_routes.py): "auto" (timed per shape on this machine, kept in the user's
    cache), "fixed" (the built-in rule), a route name, or a ConvRouting; None reads the
    RESTOREFORMER_CONV_ROUTES environment variable (default "auto"). Idempotent.
    """
    if channels_last is None:
        channels_last = prefers_channels_last(next(model.parameters()).device)
    if not isinstance(routes, ConvRouting):
        routes = ConvRouting.from_env() if routes is None else ConvRouting(routes)
    for module in model.modules():
        if (type(module) is nn.Conv2d and routed_conv(module)) or isinstance(module, FastConv):
            module.__class__ = FastConv
            module.winograd = winograd
            module.routing = routes
            continue
        fast = _FAST_CLASSES.get(type(module))
        if fast is FastUpsample and not subpixel:
            continue
        if fast is not None:
            module.__class__ = fast
    if _release_workspace not in model._forward_hooks.values():
        model.register_forward_hook(_release_workspace)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model.eval()


def restore_plain(model: RestoreFormer) -> RestoreFormer:
    """Undo `optimize_for_inference` (plain block classes, contiguous NCHW weights)."""
    for module in model.modules():
        if isinstance(module, FastConv):
            module.__class__ = nn.Conv2d
            for name in ("winograd", "routing", "_route_weights"):
                module.__dict__.pop(name, None)
            continue
        plain = _PLAIN_CLASSES.get(type(module))
        if plain is not None:
            module.__class__ = plain
            if plain is Upsample and "subpixel_weight" in module._buffers:
                del module._buffers["subpixel_weight"]
                module.__dict__.pop("_subpixel_stamp", None)
    for key in [k for k, hook in model._forward_hooks.items() if hook is _release_workspace]:
        del model._forward_hooks[key]
    model.to(memory_format=torch.contiguous_format)
    return model

