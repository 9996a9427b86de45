"""The four GeoMFormer attentions over a neighbour graph with smooth cutoff.

Attention weights (per head) over k in N(i) and the self edge (i, i):

    A_ij = m_ij exp(s_ij - c_i) / sum_k m_ik exp(s_ik - c_i)

m is the cutoff envelope (1 on the self edge), c_i a detached per-centre max.
An edge at r_c has weight 0 and slope 0, so forces are continuous when atoms
cross the cutoff; the self edge keeps the denominator >= exp(s_ii - c_i) > 0.

Shapes: n atoms, E edges (self edges included), d channels, H heads, dh = d/H.
Invariant features [n, d]; equivariant features [n, 3, d]. Every linear map that
touches the equivariant stream has no bias (a bias breaks equivariance).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


class Edges(NamedTuple):
    """Edge data shared by all layers. Self edges have u = 0 and constant rbf."""

    centre: torch.Tensor  # [E] long, i (receives the message)
    neighbour: torch.Tensor  # [E] long, j
    weight: torch.Tensor  # [E] envelope m_ij (1 on self edges)
    rbf: torch.Tensor  # [E, K] radial basis psi_ij
    unit: torch.Tensor  # [E, 3] u_ij = r_ij / d_ij (0 on self edges)
    n_atoms: int


def edge_softmax(scores: torch.Tensor, edges: Edges) -> torch.Tensor:
    """Envelope-weighted softmax of scores [E, H] over each centre's edges."""
    i, m = edges.centre, edges.weight.unsqueeze(-1)
    n, h = edges.n_atoms, scores.shape[1]
    # The max only stabilises exp(); edges with m = 0 are left out of it so a
    # large score beyond the cutoff cannot underflow the live ones.
    masked = scores.detach().masked_fill(m <= 0, float("-inf"))
    c = torch.full((n, h), float("-inf"), dtype=scores.dtype, device=scores.device)
    c = c.scatter_reduce(0, i.unsqueeze(-1).expand_as(masked), masked, "amax")
    w = m * torch.exp(scores - c[i])
    denom = torch.zeros_like(c).index_add_(0, i, w)
    return w / denom[i]


def aggregate(attn: torch.Tensor, values: torch.Tensor, edges: Edges) -> torch.Tensor:
    """sum_j A_ij values_ij. attn [E, H]; values [E, d] or [E, 3, d] -> [n, ...]."""
    h = attn.shape[1]
    shape = values.shape
    vals = values.reshape(*shape[:-1], h, shape[-1] // h)
    a = attn.view(-1, *([1] * (vals.dim() - 3)), h, 1)
    out = torch.zeros((edges.n_atoms, *vals.shape[1:]), dtype=vals.dtype, device=vals.device)
    return out.index_add_(0, edges.centre, a * vals).reshape(edges.n_atoms, *shape[1:])


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    return t.reshape(*t.shape[:-1], h, t.shape[-1] // h)


def _inv_scores(q: torch.Tensor, k: torch.Tensor, h: int) -> torch.Tensor:
    """Per-head dot products of invariant q, k [E, d] -> [E, H]."""
    return (_heads(q, h) * _heads(k, h)).sum(-1) / math.sqrt(q.shape[-1] // h)


def _equ_scores(q: torch.Tensor, k: torch.Tensor, h: int) -> torch.Tensor:
    """Per-head products of equivariant Q, K [E, 3, d], summed over xyz and channels."""
    return (_heads(q, h) * _heads(k, h)).sum(dim=(1, 3)) / math.sqrt(3 * (q.shape[-1] // h))


class InvSelfAttention(nn.Module):
    """Invariant queries, keys and values: s_ij = q_i . k_j / sqrt(dh) + B_ij."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x, edges: Edges, bias, filt=None):
        q, k, val = self.qkv(x).chunk(3, dim=-1)
        i, j = edges.centre, edges.neighbour
        attn = edge_softmax(_inv_scores(q[i], k[j], self.h) + bias, edges)
        val = val[j] if filt is None else val[j] * filt  # distance-filtered values
        return self.out(aggregate(attn, val, edges))


class InvCrossAttention(nn.Module):
    """Invariant queries; keys/values are inner products of equivariant features.

    k_j = <v_j W_K1, v_j W_K2> / sqrt(3), likewise the values. With edge values,
    the value also gets the projection u_ij . (v_j W_V3) of the neighbour's
    vectors on the bond, an invariant the plain form cannot see.
    """

    def __init__(self, d: int, h: int, edge_values: bool) -> None:
        super().__init__()
        self.h, self.d = h, d
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, (5 if edge_values else 4) * d, bias=False)
        self.out = nn.Linear(d, d)

    def forward(self, x, v, edges: Edges, bias):
        d, i, j = self.d, edges.centre, edges.neighbour
        p = self.kv(v)  # [n, 3, 4d or 5d]
        inner = lambda a, b: (p[..., a * d : (a + 1) * d] * p[..., b * d : (b + 1) * d]).sum(1)
        k, val = inner(0, 1) / math.sqrt(3.0), inner(2, 3) / math.sqrt(3.0)
        attn = edge_softmax(_inv_scores(self.q(x)[i], k[j], self.h) + bias, edges)
        val = val[j]
        if p.shape[-1] == 5 * d:
            val = val + (edges.unit.unsqueeze(-1) * p[j, :, 4 * d :]).sum(1)
        return self.out(aggregate(attn, val, edges))


class EquSelfAttention(nn.Module):
    """Equivariant Q, K, V [n, 3, d]; s_ij = sum_{xyz, head channels} Q_i K_j / sqrt(3 dh).

    With edge values, V_ij = V_j * f(psi_ij) + u_ij (x) (x_j W_u * g(psi_ij)),
    the PaiNN/TorchMD-Net style message that lets directions enter every layer.
    """

    def __init__(self, d: int, h: int, edge_values: bool) -> None:
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.u = nn.Linear(d, d) if edge_values else None
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, v, x, edges: Edges, bias, filt=None, gate=None):
        q, k, val = self.qkv(v).chunk(3, dim=-1)
        i, j = edges.centre, edges.neighbour
        attn = edge_softmax(_equ_scores(q[i], k[j], self.h) + bias, edges)
        val = val[j]
        if self.u is not None:
            val = val * filt.unsqueeze(1) + edges.unit.unsqueeze(-1) * (self.u(x)[j] * gate).unsqueeze(1)
        return self.out(aggregate(attn, val, edges))


class EquCrossAttention(nn.Module):
    """Equivariant queries; keys/values are equivariant features gated by invariant ones.

    K_j = (v_j W_K1) * (x_j W_K2), V_j = (v_j W_V1) * (x_j W_V2), gate broadcast over xyz.
    """

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.vproj = nn.Linear(d, 3 * d, bias=False)  # Q, K1, V1
        self.gates = nn.Linear(d, 2 * d)  # K2, V2 (invariant, may have a bias)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, v, x, edges: Edges, bias):
        q, k1, v1 = self.vproj(v).chunk(3, dim=-1)
        k2, v2 = self.gates(x).chunk(2, dim=-1)
        k, val = k1 * k2.unsqueeze(1), v1 * v2.unsqueeze(1)
        i, j = edges.centre, edges.neighbour
        attn = edge_softmax(_equ_scores(q[i], k[j], self.h) + bias, edges)
        return self.out(aggregate(attn, val[j], edges))
