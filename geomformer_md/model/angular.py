"""Angular (three-body) invariants of each atom's neighbourhood, l = 1..L.

Why: the rest of the model sees directions only through vectors (l = 1). The
invariants it can build from them, <sum_j a_j u_ij, sum_k b_k u_ik>, are sums of
a_j b_k cos(theta_jk): three-body terms with the first Legendre polynomial only.
MACE and NequIP carry l = 2, 3 as well. This module adds the power spectrum of
the neighbourhood, the invariants of the moments

    A_i,l = sum_j w_ij Y_l(u_ij)        (w_ij [c] from distance and neighbour features)
    I_i,l = sum_m A_i,lm (A_i,l W_l)_m  = sum_jk w_ij (W_l w_ik) P_l(cos theta_jk)

(the addition theorem), with P_l up to l = L. No Clebsch-Gordan coefficients
are needed for invariants: any orthonormal real basis of degree-l harmonics gives
the same sums over m. The harmonics are e3nn's.
"""

from __future__ import annotations

import torch
from torch import nn


def spherical_harmonics(lmax: int) -> nn.Module:
    """e3nn's real spherical harmonics of l = 1..lmax (at most 3) as one module: unit vectors
    u [E, 3] -> [E, M], the degrees side by side (M = lmax (lmax + 2)).

    Normalised ("norm") so that sum_m Y_lm(u) Y_lm(u') = P_l(u . u'): the invariants below
    depend on that and on nothing else of the basis, so e3nn's ordering of m is as good
    as any. No parameters: a model's state_dict does not change with it.
    """
    if not 1 <= lmax <= 3:
        raise ValueError(f"angular_lmax must be 1, 2 or 3, got {lmax}")
    from e3nn import o3  # here: importing e3nn costs ~1 s, paid only by models that use it

    return o3.SphericalHarmonics(list(range(1, lmax + 1)), normalize=False, normalization="norm")


def real_harmonics(u: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """The harmonics of spherical_harmonics(lmax) for unit vectors u [E, 3], one tensor
    [E, 2l + 1] per degree l = 1..lmax."""
    return list(spherical_harmonics(lmax)(u).split([2 * l + 1 for l in range(1, lmax + 1)], -1))


class AngularInvariants(nn.Module):
    """I_i = W_out [I_i,1 | ... | I_i,L], added to the invariant stream in every block.

    Edge weights w_ij = m_ij (psi_ij W_r) * (x_j W_x): smooth at the cutoff through the
    envelope m_ij, and dependent on the neighbour's element and environment (x_j).
    Only geometric edges enter (the self edge has no direction).
    """

    def __init__(
        self, d: int, n_edge_features: int, channels: int, lmax: int, avg_neighbors: float
    ):
        super().__init__()
        # The moments of l >= 1 mostly cancel over a neighbourhood (all of them, up to l = 3,
        # in a perfect fcc crystal), and the invariants are quadratic in them: with default
        # initialisation and a 1 / N_avg norm they start ~1e-6 and Adam cannot grow them
        # in a short run. A 1 / sqrt(N_avg) norm and unit-variance radial weights start them
        # at ~1e-2 at surface atoms (measured on catalysis-v1 frames).
        self.lmax, self.norm = lmax, avg_neighbors**-0.5
        self.radial = nn.Linear(n_edge_features, channels, bias=False)
        nn.init.normal_(self.radial.weight)
        self.nbr = nn.Linear(d, channels)
        self.mix = nn.Parameter(torch.stack([torch.eye(channels)] * lmax))  # W_l [L, c, c]
        self.out = nn.Linear(lmax * channels, d)
        degree = torch.cat([torch.full((2 * l + 1,), l - 1) for l in range(1, lmax + 1)])
        self.register_buffer("degree_of_row", degree, persistent=False)  # [M]: l - 1 of each row

    def forward(self, x: torch.Tensor, i, j, m, feats, harmonics: torch.Tensor):
        """x [n, d] (normed invariant stream); i, j, m, feats: the geometric edges' centres,
        neighbours, envelopes and edge features [E, K]; harmonics [E, M]: spherical_harmonics(L)
        of l = 1..L side by side (M = L (L + 2)).

        All degrees go through one scatter and one batched matmul: a loop over l made 1.46x
        this module's operator calls per training step, and on a GPU those calls, not FLOPs,
        set the step time (benchmarks/bench_train_step.py).
        """
        n, c = x.shape[0], self.mix.shape[-1]
        w = (m.unsqueeze(-1) * self.radial(feats)) * self.nbr(x).index_select(0, j)  # [E, c]
        msg = (harmonics.unsqueeze(-1) * w.unsqueeze(1)).flatten(1)  # [E, M c]
        a = x.new_zeros(n, msg.shape[1]).index_add_(0, i, msg) * self.norm
        a = a.view(n, -1, c).transpose(0, 1)  # [M, n, c]
        degree = self.degree_of_row
        prod = a * torch.bmm(a, self.mix.index_select(0, degree))  # [M, n, c]: A_lm (A_l W_l)_m
        inv = x.new_zeros(self.lmax, n, c).index_add_(0, degree, prod)  # sum over m per l
        return self.out(inv.transpose(0, 1).reshape(n, -1))
