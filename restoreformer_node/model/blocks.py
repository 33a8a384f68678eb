"""Building blocks of the RestoreFormer encoder and decoder (plain PyTorch, no ComfyUI)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swish(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, plus a 1x1 shortcut where the width changes."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(swish(self.norm2(h)))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class AttentionBlock(nn.Module):
    """Multi-head attention over a feature map, as self- or cross-attention.

    `x` is the stream being refined (keys, values and the residual come from it); `query` is the
    optional query source. With `query=None` this is self-attention and `norm2` is unused (it still
    exists in the published weights). Channels are split head-major: head i takes channels
    i*C/heads .. (i+1)*C/heads.
    """

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = group_norm(channels, groups)
        self.norm2 = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        return t.reshape(b, self.heads, c // self.heads, h * w).transpose(2, 3)

    def forward(
        self,
        x: torch.Tensor,
        query: torch.Tensor | None = None,
        record: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        h = self.norm1(x)
        source = h if query is None else self.norm2(query)
        q = self._split_heads(self.q(source))
        k = self._split_heads(self.k(h))
        v = self._split_heads(self.v(h))
        return x + self.proj_out(self._attend(q, k, v, record, x.shape))

    def _attend(self, q, k, v, record: list[torch.Tensor] | None, shape: torch.Size) -> torch.Tensor:
        """Softmax attention of head-split q, k, v [B, heads, n, d], heads merged back to `shape`."""
        if record is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            # Inspection path: materialise the weights [B, heads, queries, keys].
            scale = q.shape[-1] ** -0.5
            weights = torch.softmax((q * scale) @ k.transpose(-1, -2), dim=-1)
            record.append(weights)
            out = weights @ v
        b, c, hh, ww = shape
        return out.transpose(2, 3).reshape(b, c, hh, ww)
