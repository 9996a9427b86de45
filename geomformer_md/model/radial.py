"""Radial pieces: smooth cutoff envelope, radial bases, equivariant norms."""

from __future__ import annotations

import math

import torch
from torch import nn


def envelope(d: torch.Tensor, cutoff: float) -> torch.Tensor:
    """m(d) = 1 - 6x^5 + 15x^4 - 10x^3, x = d / r_c, and 0 beyond r_c.

    m(r_c) = m'(r_c) = m''(r_c) = 0, so an edge leaving the cutoff changes
    neither energy nor forces discontinuously.
    """
    x = (d / cutoff).clamp(max=1.0)
    return 1.0 + x**3 * (-10.0 + x * (15.0 - 6.0 * x))


class RadialBasis(nn.Module):
    """K radial functions of the distance (fixed, no trainable parameters).

    bessel: sqrt(2/r_c) sin(n pi d / r_c) / d (DimeNet); gaussian: K Gaussians
    evenly spaced on [0, r_c] with width r_c / K.
    """

    def __init__(self, n_rbf: int, cutoff: float, kind: str = "bessel") -> None:
        super().__init__()
        self.kind, self.cutoff = kind, cutoff
        self.register_buffer("freq", torch.arange(1, n_rbf + 1) * math.pi / cutoff)
        self.register_buffer("centers", torch.linspace(0.0, cutoff, n_rbf))
        self.width = cutoff / n_rbf

    def forward(self, d: torch.Tensor) -> torch.Tensor:  # d [E] -> [E, K]
        d = d.unsqueeze(-1)
        if self.kind == "bessel":
            return math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq * d) / d
        return torch.exp(-0.5 * ((d - self.centers) / self.width) ** 2)


class EquRMSNorm(nn.Module):
    """v / sqrt(mean_k |v_k|^2 + eps) * gamma for v [n, 3, d]: rotation-equivariant.

    On symmetric sites (perfect crystals) v is 0 up to round-off and the
    norm's gain there is 1/sqrt(eps) per layer. With 1e-6, three layers
    amplified float64 round-off to 3e-8 eV/Å of spurious force on a translated
    fcc supercell; with 1e-3 a trained model built a stiff well at lattice
    sites. Models set eps through GeoMFormerConfig.equ_norm_eps (default 1).
    """

    def __init__(self, d: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        ms = v.pow(2).sum(dim=1).mean(dim=-1, keepdim=True)  # [n, 1]
        return v * torch.rsqrt(ms + self.eps).unsqueeze(-1) * self.gamma


class EquWhitenNorm(nn.Module):
    """The paper's EquLN: C^{-1/2} v * gamma with C = v v^T / d (a 3x3 per atom).

    C^{-1/2} comes from coupled Newton-Schulz iterations instead of an
    eigendecomposition: eigh's gradient is infinite at degenerate eigenvalues
    (any atom on a cubic site), Newton-Schulz is a polynomial and stays finite
    under the double backward that force training needs.
    """

    def __init__(self, d: int, eps: float = 1e-3, iters: int = 8) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))
        self.eps, self.iters = eps, iters

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        n, _, d = v.shape
        eye = torch.eye(3, dtype=v.dtype, device=v.device).expand(n, 3, 3)
        cov = v @ v.transpose(1, 2) / d + self.eps * eye
        norm = cov.diagonal(dim1=1, dim2=2).sum(-1).view(n, 1, 1)  # trace >= largest eigenvalue
        y, z = cov / norm, eye
        for _ in range(self.iters):
            t = 0.5 * (3.0 * eye - z @ y)
            y, z = y @ t, t @ z
        return (z / norm.sqrt()) @ v * self.gamma
