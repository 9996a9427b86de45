"""The N-body predictor: the package's GeoMFormer on the complete graph of a system.

    x(t + 1000 dt) ~ x0 + c v0 + GeoMFormer(x0, v0, q)["vector"]

c is one learnable scalar (init 1, the free-flight guess); the vector head
learns the interaction correction. EGNN's velocity model has the same kind of
velocity term (phi_v(h_i) v_i). Invariant per-particle inputs: charge q_i and
|v_i| (EGNN's node feature); equivariant input: v_i (one vector channel).
All pairs are edges (no (i, i): the model adds the self edge itself);
positions enter only as r_j - r_i, so the prediction is translation-equivariant
because x0 is added back outside.

Variants (benchmarks only, the package is not changed):
* "full": the model as shipped.
* "no_cross": ablation; InvCross and EquCross of every block are removed
  (set to None: their updates are zero and their parameters are gone, so the
  count drops).
  The self-attentions, FFNs and edge-valued messages are untouched.
* "edge_qq": prototype of a per-edge invariant input (q_i q_j). The Bessel
  features psi_ij are concatenated with e_ij = [q_i q_j] before every consumer
  (initial streams, attention biases, value filters); the self edge gets its
  own learned constant for the extra slot like for the radial slots. In a
  package option this would be ``n_edge_scalars`` + a ``edge_scalars [E, k]``
  argument of ``GeoMFormer.forward``.
"""

from __future__ import annotations

import torch
from torch import nn

from geomformer_md.model import GeoMFormer, GeoMFormerConfig

VARIANTS = ("full", "no_cross", "edge_qq")


class _RadialWithEdgeScalars(nn.Module):
    """psi(d) [E, K] concatenated with edge scalars [E, k] handed in by the caller."""

    def __init__(self, rbf: nn.Module) -> None:
        super().__init__()
        self.rbf = rbf
        self.pending: torch.Tensor | None = None

    def forward(self, d):
        return torch.cat([self.rbf(d), self.pending.to(d.dtype)], dim=-1)


def _widen(lin: nn.Linear, extra: int) -> nn.Linear:
    """Same Linear with `extra` more inputs (new columns start at zero)."""
    new = nn.Linear(lin.in_features + extra, lin.out_features, bias=lin.bias is not None)
    new = new.to(lin.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : lin.in_features] = lin.weight
        if lin.bias is not None:
            new.bias.copy_(lin.bias)
    return new


class EdgeScalarGeoMFormer(GeoMFormer):
    """GeoMFormer with k per-edge invariant inputs appended to the radial basis."""

    def __init__(self, cfg: GeoMFormerConfig, n_edge_scalars: int) -> None:
        super().__init__(cfg)
        k = n_edge_scalars
        self.rbf = _RadialWithEdgeScalars(self.rbf)
        self.self_rbf = nn.Parameter(torch.zeros(cfg.n_rbf + k, dtype=cfg.torch_dtype))
        self.inv_init, self.equ_init = _widen(self.inv_init, k), _widen(self.equ_init, k)
        for block in self.blocks:
            block.edge_proj = _widen(block.edge_proj, k)
            with torch.no_grad():  # small random start so the new inputs get gradients everywhere
                block.edge_proj.weight[:, cfg.n_rbf :].normal_(0.0, 0.1)
        with torch.no_grad():
            self.inv_init.weight[:, cfg.n_rbf :].normal_(0.0, 0.1)
            self.equ_init.weight[:, cfg.n_rbf :].normal_(0.0, 0.1)

    def forward(
        self, numbers, edge_index, edge_vec, node_scalars=None, node_vectors=None, edge_scalars=None
    ):
        self.rbf.pending = edge_scalars
        try:
            return super().forward(numbers, edge_index, edge_vec, node_scalars, node_vectors)
        finally:
            self.rbf.pending = None


def complete_graph(n_systems: int, n_per: int, device=None) -> torch.Tensor:
    """edge_index [2, S n (n-1)] of disjoint complete graphs, row 0 = centre, no (i, i)."""
    a = torch.arange(n_per, device=device)
    i, j = torch.meshgrid(a, a, indexing="ij")
    keep = i != j
    i, j = i[keep], j[keep]
    off = (torch.arange(n_systems, device=device) * n_per).repeat_interleave(i.numel())
    return torch.stack([i.repeat(n_systems) + off, j.repeat(n_systems) + off])


class NBodyPredictor(nn.Module):
    def __init__(self, cfg: GeoMFormerConfig, variant: str = "full") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        if variant == "edge_qq":
            self.net = EdgeScalarGeoMFormer(cfg, n_edge_scalars=1)
        else:
            self.net = GeoMFormer(cfg)
        if variant == "no_cross":
            for block in self.net.blocks:
                block.inv_cross, block.equ_cross = None, None
        self.vel_coef = nn.Parameter(torch.ones((), dtype=cfg.torch_dtype))
        self._graphs: dict = {}

    def forward(self, x0: torch.Tensor, v0: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """x0, v0 [B, n, 3], q [B, n] -> predicted positions [B, n, 3] (dtype of x0)."""
        b, n, _ = x0.shape
        dt = self.vel_coef.dtype
        key = (b, n, x0.device)
        if key not in self._graphs:
            self._graphs[key] = complete_graph(b, n, x0.device)
        ei = self._graphs[key]
        x, v, qf = x0.reshape(b * n, 3), v0.reshape(b * n, 3), q.reshape(b * n)
        # Relative vectors in the input precision, then cast: keeps equivariance
        # checks in float64 meaningful and training inputs in float32.
        edge_vec = (x[ei[1]] - x[ei[0]]).to(dt)
        scalars = torch.stack([qf, v.norm(dim=-1)], dim=-1).to(dt)
        numbers = torch.ones(b * n, dtype=torch.long, device=x0.device)
        kw = {}
        if self.variant == "edge_qq":
            kw["edge_scalars"] = (qf[ei[0]] * qf[ei[1]]).unsqueeze(-1).to(dt)
        out = self.net(numbers, ei, edge_vec, scalars, v.to(dt).unsqueeze(-1), **kw)["vector"]
        delta = self.vel_coef * v.to(dt) + out
        return x0 + delta.reshape(b, n, 3).to(x0.dtype)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def make_config(
    cutoff: float,
    d_model: int = 64,
    n_heads: int = 4,
    n_layers: int = 4,
    n_rbf: int = 32,
    dtype: str = "float32",
    dropout: float = 0.0,
) -> GeoMFormerConfig:
    return GeoMFormerConfig(
        species=(1,),
        cutoff=cutoff,
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        n_rbf=n_rbf,
        n_scalar_inputs=2,
        n_vector_inputs=1,
        vector_head=True,
        energy_head=False,
        avg_neighbors=4.0,
        dropout=dropout,
        dtype=dtype,
    )
