"""Energy, forces and stress from one GeoMFormer energy, in one autograd call.

Forces are -dE/dr. Stress follows ASE's sign, sigma = (1/V) dE/d(epsilon): a
symmetric strain epsilon is applied to positions and cell (r -> r (1 + eps),
rows are vectors), and the gradient with respect to positions and strain comes
from the same backward pass (as in MACE and NequIP).
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

from .data.graph import AtomGraph
from .model import GeoMFormer
from .model.attention import recompute_gathers
from .model.config import _DTYPES as _DTYPE_NAMES  # the one name <-> dtype table

# Inference keeps less for its backward (model.attention.recompute_gathers); False gives
# the plain autograd graph (benchmarks/bench_memory.py compares the two).
LEAN_BACKWARD = True


def model_with_dtype(model: GeoMFormer, dtype: str | torch.dtype | None) -> GeoMFormer:
    """The model itself if it already has ``dtype``, else a converted copy (config updated)."""
    if dtype is None:
        return model
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        dtype = _DTYPE_NAMES[dtype]
    name = {v: k for k, v in _DTYPE_NAMES.items()}.get(dtype)
    if name is None:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if name == model.config.dtype:
        return model
    copy = GeoMFormer(dataclasses.replace(model.config, dtype=name))
    copy.load_state_dict(model.state_dict())
    copy.metadata = dict(getattr(model, "metadata", {}))
    return copy.train(model.training)


class Potential(torch.nn.Module):
    """Wraps a GeoMFormer energy model into energies, forces and stress.

    Args:
        model: a GeoMFormer with an energy head.
        direct_forces: use the model's direct equivariant vector head as forces.
            Faster, but NOT conservative (no energy conservation in NVE, no
            stress); never the default.
    """

    def __init__(self, model: GeoMFormer, direct_forces: bool = False) -> None:
        super().__init__()
        if not model.config.energy_head:
            raise ValueError("this model has no energy head; it cannot be used as a potential")
        if direct_forces and not model.config.vector_head:
            raise ValueError("direct_forces=True needs a model built with vector_head=True")
        self.model = model
        self.direct_forces = direct_forces

    @property
    def cutoff(self) -> float:
        return self.model.config.cutoff

    @property
    def dtype(self) -> torch.dtype:
        return self.model.config.torch_dtype

    @property
    def lean(self) -> bool:
        """Whether inference calls keep less for their backward (recompute_gathers):
        on unless switched off (LEAN_BACKWARD) or the model is torch.compile-d, whose
        graphs take no saved-tensor hooks."""
        return LEAN_BACKWARD and not hasattr(self.model, "_orig_mod")

    def forward(
        self,
        graph: AtomGraph,
        forces: bool = True,
        stress: bool = True,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Evaluate a batch.

        Returns a dict with ``energy`` [n_systems] eV, ``energies`` [n_atoms] eV,
        and when asked ``forces`` [n_atoms, 3] eV/Å, ``stress`` [n_systems, 3, 3]
        eV/Å^3 with ``has_stress`` [n_systems] bool (False where the structure is
        not periodic in 3-D; its stress entries are then 0 and meaningless).
        Geometry is handled in the graph's dtype (float64 from conversion) and
        cast to the model's dtype only for the network.
        """
        pos = graph.positions
        s = graph.system_idx
        want_grad = (forces and not self.direct_forces) or stress
        strain = torch.zeros(graph.n_systems, 3, 3, dtype=pos.dtype, device=pos.device)
        if want_grad:
            pos = pos.detach().requires_grad_(True)
            strain.requires_grad_(True)
        sym = 0.5 * (strain + strain.transpose(1, 2))
        pos_s = pos + torch.einsum("ni,nij->nj", pos, sym[s])
        cell_s = graph.cell + graph.cell @ sym
        i, j = graph.edge_index
        # index_select rather than t[idx]: its backward (index_add_) is much faster on CPU.
        shifts = graph.shifts.to(pos.dtype)
        if graph.n_systems == 1:
            offset = shifts @ cell_s[0]
        else:
            cell_e = cell_s.index_select(0, s.index_select(0, i))  # [E, 3, 3]
            offset = torch.bmm(shifts.unsqueeze(1), cell_e).squeeze(1)
        edge_vec = pos_s.index_select(0, j) - pos_s.index_select(0, i) + offset
        lean = want_grad and not create_graph and self.lean
        with recompute_gathers() if lean else contextlib.nullcontext():
            out = self.model(
                graph.numbers,
                graph.edge_index,
                edge_vec.to(self.dtype),
                node_scalars=graph.node_scalars,
                node_vectors=graph.node_vectors,
            )
        energies = out["energy"].to(pos.dtype)
        energy = torch.zeros(graph.n_systems, dtype=pos.dtype, device=pos.device)
        energy = energy.index_add(0, s, energies)
        res = {"energy": energy, "energies": energies}
        if want_grad:
            inputs = [pos] if (forces and not self.direct_forces) else []
            if stress:
                inputs.append(strain)
            grads = torch.autograd.grad(
                energy.sum(), inputs, create_graph=create_graph, allow_unused=True
            )
            grads = [torch.zeros_like(x) if g is None else g
                     for g, x in zip(grads, inputs, strict=True)]
            if forces and not self.direct_forces:
                res["forces"] = -grads[0]
            if stress:
                vol = torch.linalg.det(graph.cell).abs()
                periodic = graph.pbc.all(dim=1) & (vol > 1e-8)
                safe = torch.where(periodic, vol, torch.ones_like(vol))
                per_volume = grads[-1] / safe.view(-1, 1, 1)
                res["stress"] = torch.where(periodic.view(-1, 1, 1), per_volume, 0.0)
                res["has_stress"] = periodic
        if forces and self.direct_forces:
            res["forces"] = out["vector"].to(pos.dtype)
        if not create_graph:  # inference: free the graph, hand back plain tensors
            res = {k: v.detach() for k, v in res.items()}
        return res
