"""A tiny random stand-in "speaker encoder" (``random-conv``) for tests and plumbing checks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RandomConvEncoder(nn.Module):
    """A tiny random "speaker encoder" with ``.embed``: random filter bank → log band energies →
    mean-removed → random projection. A fast stand-in for tests and plumbing checks only (it knows
    nothing about speakers, but its embedding depends on the spectral shape). Frozen."""

    def __init__(self, dim: int = 16, bands: int = 16, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.name, self.dim = "random-conv", dim
        self.filters = nn.Parameter(
            torch.randn(bands, 1, 64, generator=generator) / 8, requires_grad=False
        )
        self.projection = nn.Parameter(
            torch.randn(bands, dim, generator=generator), requires_grad=False
        )
        self.eval()

    def embed(self, waves: torch.Tensor) -> torch.Tensor:
        h = F.conv1d(waves.unsqueeze(1), self.filters, stride=16)
        energy = torch.log(h.pow(2).mean(-1) + 1e-6)
        return (energy - energy.mean(-1, keepdim=True)) @ self.projection

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.embed(waves)
