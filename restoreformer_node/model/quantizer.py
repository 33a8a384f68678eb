"""The HQ dictionary: nearest-entry vector quantisation with a straight-through gradient."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class Quantized(NamedTuple):
    z_q: torch.Tensor  # [B, C, H, W] what the decoder gets: the chosen entries (straight-through to z)
    loss: torch.Tensor  # commitment + beta * codebook, a scalar (the reference's weighting)
    indices: torch.Tensor  # [B, H, W] int64 index of the chosen entry per latent cell
    distances: torch.Tensor  # [B, H, W] squared L2 distance to the chosen entry
    z: torch.Tensor  # [B, C, H, W] the latent before quantisation (Z_d in the paper)
    entries: torch.Tensor  # [B, C, H, W] the chosen entries with their gradient to the dictionary (Z_p)


class VectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.n_embed = n_embed
        self.embed_dim = embed_dim
        self.beta = beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def nearest(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Index of and squared distance to the nearest entry for every cell of z [B, C, H, W].

        Done in fp32 whatever the input precision: the squared norms overflow fp16 on real
        feature ranges, and a flipped nearest entry changes the output far more than rounding.
        The expansion |z|^2 + |e|^2 - 2 z.e and the first-minimum tie rule match the reference.
        """
        b, c, h, w = z.shape
        # Autocast would run the matmul below in half precision despite the fp32 inputs.
        with torch.autocast(z.device.type, enabled=False):
            flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
            codebook = self.embedding.weight.float()
            d = (
                torch.sum(flat**2, dim=1, keepdim=True)
                + torch.sum(codebook**2, dim=1)
                - 2 * torch.matmul(flat, codebook.t())
            )
            dist, idx = torch.min(d, dim=1)
        return idx.view(b, h, w), dist.view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Dictionary entries for indices [B, H, W] as a feature map [B, C, H, W]."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> Quantized:
        idx, dist = self.nearest(z)
        entries = self.lookup(idx).to(z.dtype)
        loss = torch.mean((entries.detach() - z) ** 2) + self.beta * torch.mean((entries - z.detach()) ** 2)
        z_q = z + (entries - z).detach()
        return Quantized(z_q, loss, idx, dist, z, entries)
