"""GeoMFormer as a TorchSim model (``pip install torch-sim-atomistic``).

TorchSim runs batched MD and relaxation entirely in torch, on a ``SimState``
(flat positions, column-vector cell, ``system_idx``) much like our AtomGraph.
This adapter builds the neighbour graph of the whole state in one call (the
batched torch cell list on CUDA) and returns energy [S], forces [n, 3] and
stress [S, 3, 3] (ASE sign, as TorchSim's MACE model) from one autograd pass::

    import torch_sim as ts
    from geomformer_md.integrations.torchsim import GeoMFormerTorchSimModel

    model = GeoMFormerTorchSimModel(device="cuda")           # default potential
    relaxed = ts.optimize(system=atoms_list, model=model, optimizer=ts.frechet_cell_fire)

Notes:
    TorchSim 0.3 stores one ``pbc`` flag for the whole state; a slab is therefore
    periodic in all directions there (give it vacuum, as usual). A per-direction
    ``pbc`` tensor ([3] or [n_systems, 3]) is used as given. Stress is only
    meaningful for 3-D periodic systems (0 elsewhere).
"""

from __future__ import annotations

import torch

try:
    from torch_sim.models.interface import ModelInterface
    from torch_sim.state import SimState
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "geomformer_md.integrations.torchsim needs TorchSim: pip install torch-sim-atomistic"
    ) from err

from ..data.graph import AtomGraph, build_edges
from ..simulate.batch import BatchEvaluator

__all__ = ["GeoMFormerTorchSimModel"]


class GeoMFormerTorchSimModel(ModelInterface):
    """A GeoMFormer potential behind TorchSim's ``ModelInterface``.

    Args:
        model: a shipped potential name (None = the default), a model file,
            a GeoMFormer, or a :class:`~geomformer_md.simulate.batch.BatchEvaluator`.
        device: torch device (None: CUDA if available, else CPU).
        dtype: dtype of the returned tensors and of the states this model is
            used with (TorchSim's ``model.dtype``); geometry is always handled in
            float64 and the network runs in its own dtype.
        model_dtype: network dtype ("float32"/"float64"); None: float32 on CUDA,
            the model's own on CPU.
        compute_stress, compute_forces: what ``forward`` returns.
        neighbor_backend: "auto" (torch cell list on CUDA, matscipy on CPU), ...
    """

    def __init__(
        self,
        model=None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        model_dtype: str | None = None,
        compute_stress: bool = True,
        compute_forces: bool = True,
        neighbor_backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(model, BatchEvaluator):
            self.evaluator = model
        else:
            dev = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
            self.evaluator = BatchEvaluator(model, dev, model_dtype, neighbor_backend)
        self._device = self.evaluator.device
        self._dtype = dtype
        self._compute_stress = bool(compute_stress)
        self._compute_forces = bool(compute_forces)
        self._memory_scales_with = "n_atoms_x_density"  # radial cutoff: edges ~ atoms x density
        self.potential = self.evaluator.potential  # registered, so .parameters() work

    def forward(self, state: SimState | dict, **kwargs) -> dict[str, torch.Tensor]:
        """Energy [S], forces [n, 3] and stress [S, 3, 3] of every system in ``state``."""
        if isinstance(state, dict):
            state = SimState(**state, masses=torch.ones_like(state["positions"]))
        dev = self._device
        pos = state.positions.detach().to(dev, torch.float64)
        cell = state.row_vector_cell.detach().to(dev, torch.float64).reshape(-1, 3, 3)
        n_sys = cell.shape[0]
        pbc = torch.as_tensor(state.pbc, device=dev, dtype=torch.bool)
        pbc = pbc.expand(n_sys, 3) if pbc.ndim < 2 else pbc  # bool or [3] -> [S, 3]
        if pbc.ndim == 2 and pbc.shape[0] == 1:
            pbc = pbc.expand(n_sys, 3)
        system_idx = state.system_idx
        if system_idx is None:
            system_idx = torch.zeros(len(pos), dtype=torch.long)
        graph = AtomGraph(
            positions=pos,
            numbers=state.atomic_numbers.to(dev, torch.long),
            cell=cell,
            pbc=pbc.contiguous(),
            system_idx=system_idx.to(dev, torch.long),
            edge_index=torch.zeros(2, 0, dtype=torch.long, device=dev),
            shifts=torch.zeros(0, 3, dtype=torch.long, device=dev),
        )
        graph = build_edges(graph, self.evaluator.cutoff, self.evaluator.neighbor_backend)
        out = self.evaluator.forward(graph, stress=self._compute_stress)
        results = {"energy": out["energy"].to(self._dtype)}
        if self._compute_forces:
            results["forces"] = out["forces"].to(self._dtype)
        if self._compute_stress:
            results["stress"] = out["stress"].to(self._dtype)
        return results
