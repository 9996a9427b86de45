"""AtomGraph: the one batch type, from ase.Atoms to the model and back.

One structure or many, stored flat: atoms of all structures are concatenated
and ``system_idx`` says which structure each atom belongs to. Edges follow the
neighbour-list convention of neighbors.py: ``edge_index[0]`` is the centre i,
``edge_index[1]`` the neighbour j, and r_ij = r_j + shifts_ij @ cell - r_i.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .neighbors import edge_vectors as neighbor_edge_vectors
from .neighbors import neighbor_list

# Atoms closer than this are "at the same position": no force field is defined there.
MIN_DISTANCE = 0.1  # Å


@dataclass
class AtomGraph:
    """A batch of structures with their neighbour graph.

    Attributes:
        positions: [n_atoms, 3] Å, float64 unless cast.
        numbers: [n_atoms] long, atomic numbers.
        cell: [n_systems, 3, 3] Å, rows are lattice vectors (as ASE).
        pbc: [n_systems, 3] bool.
        system_idx: [n_atoms] long, structure of each atom (sorted, 0..n_systems-1).
        edge_index: [2, n_edges] long, (centre i, neighbour j).
        shifts: [n_edges, 3] long, integer image shifts of j.
        node_scalars: optional [n_atoms, k] extra invariant inputs.
        node_vectors: optional [n_atoms, 3, k] extra vector inputs.
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    system_idx: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    node_scalars: torch.Tensor | None = None
    node_vectors: torch.Tensor | None = None

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[0]

    @property
    def n_systems(self) -> int:
        return self.cell.shape[0]

    @property
    def n_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def atoms_per_system(self) -> torch.Tensor:
        return torch.bincount(self.system_idx, minlength=self.n_systems)

    def to(self, device=None, dtype: torch.dtype | None = None) -> AtomGraph:
        """Copy to a device; ``dtype`` casts the floating-point fields."""
        out = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                out[f.name] = None
                continue
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            out[f.name] = t.to(device) if device is not None else t
        return AtomGraph(**out)

    def with_edges(self, edge_index: torch.Tensor, shifts: torch.Tensor) -> AtomGraph:
        return replace(self, edge_index=edge_index, shifts=shifts)


def validate_atoms(atoms, index: int | None = None) -> None:
    """Raise ValueError naming the problem for input no force field can take."""
    where = "" if index is None else f"structure {index}: "
    if len(atoms) == 0:
        raise ValueError(f"{where}empty structure (no atoms)")
    pos = atoms.get_positions()
    if not np.all(np.isfinite(pos)):
        bad = np.where(~np.isfinite(pos).all(axis=1))[0]
        raise ValueError(f"{where}positions contain NaN or inf (atoms {bad[:10].tolist()})")
    cell = np.asarray(atoms.cell[:], dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if not np.all(np.isfinite(cell)):
        raise ValueError(f"{where}cell contains NaN or inf")
    for k in np.where(pbc)[0]:
        if np.linalg.norm(cell[k]) < 1e-8:
            raise ValueError(f"{where}periodic direction {k} has a zero-length cell vector")
    if pbc.any():
        # The periodic vectors must be linearly independent (a flat cell has no images grid).
        sub = cell[pbc]
        gram = np.linalg.det(sub @ sub.T)
        scale = np.prod(np.linalg.norm(sub, axis=1)) ** 2
        if gram <= 1e-12 * scale:
            raise ValueError(f"{where}periodic cell vectors are degenerate (zero volume/area)")


def atoms_to_graph(
    atoms_list,
    cutoff: float,
    backend: str | None = "matscipy",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> AtomGraph:
    """Build an AtomGraph from one ase.Atoms or a sequence of them.

    The user's Atoms are only read, never modified (no wrapping, no cell added).
    Raises ValueError for empty structures, NaN positions, degenerate periodic
    cells and atoms closer than MIN_DISTANCE. ``backend=None`` leaves the edges
    empty for the caller to fill (e.g. from a Verlet list).
    """
    if not isinstance(atoms_list, Sequence) or hasattr(atoms_list, "get_positions"):
        atoms_list = [atoms_list]
    if len(atoms_list) == 0:
        raise ValueError("no structures given")
    multi = len(atoms_list) > 1
    for k, a in enumerate(atoms_list):
        validate_atoms(a, k if multi else None)
    device = torch.device(device) if device is not None else torch.device("cpu")
    pos = np.concatenate([a.get_positions() for a in atoms_list])
    nums = np.concatenate([a.get_atomic_numbers() for a in atoms_list])
    sizes = [len(a) for a in atoms_list]
    graph = AtomGraph(
        positions=torch.as_tensor(pos, dtype=dtype, device=device),
        numbers=torch.as_tensor(nums, dtype=torch.long, device=device),
        cell=torch.as_tensor(np.stack([a.cell[:] for a in atoms_list]), dtype=dtype, device=device),
        pbc=torch.as_tensor(np.stack([a.pbc for a in atoms_list]), dtype=torch.bool, device=device),
        system_idx=torch.repeat_interleave(
            torch.arange(len(sizes), device=device), torch.as_tensor(sizes, device=device)
        ),
        edge_index=torch.zeros(2, 0, dtype=torch.long, device=device),
        shifts=torch.zeros(0, 3, dtype=torch.long, device=device),
    )
    return graph if backend is None else build_edges(graph, cutoff, backend, label_systems=multi)


def build_edges(
    graph: AtomGraph, cutoff: float, backend: str = "matscipy", label_systems: bool = True
) -> AtomGraph:
    """Fill in the neighbour graph and refuse overlapping atoms (see `check_overlaps`)."""
    if backend == "auto":
        backend = "torch" if graph.device.type != "cpu" else "matscipy"
    ei, sh = neighbor_list(
        graph.positions, graph.cell, graph.pbc, cutoff, graph.system_idx, backend=backend
    )
    graph = graph.with_edges(ei.to(graph.device), sh.to(graph.device))
    check_overlaps(graph, label_systems)
    return graph


def edge_vectors(graph: AtomGraph) -> torch.Tensor:
    """r_ij [n_edges, 3] = r_j + shift @ cell - r_i."""
    return neighbor_edge_vectors(
        graph.positions, graph.cell, graph.edge_index, graph.shifts, graph.system_idx
    )


def trim_edges(graph: AtomGraph, cutoff: float) -> AtomGraph:
    """Keep only edges shorter than ``cutoff`` (a Verlet list holds cutoff + skin).

    Edges beyond the cutoff have zero envelope and would not change results, but
    evaluating them made skinned MD slower than rebuilding (0.056 vs 0.033 s/step
    on 108 Cu atoms): the skin should only ever save work.
    """
    keep = edge_vectors(graph).norm(dim=-1) < cutoff
    return graph.with_edges(graph.edge_index[:, keep], graph.shifts[keep])


def check_overlaps(graph: AtomGraph, label_systems: bool = True) -> None:
    """ValueError naming two atoms closer than MIN_DISTANCE. ``label_systems``: start the
    message with "structure S: " (batches, which relabel S by input index); False for a
    single structure given alone, whose caller may add its own prefix ("frame 3: ")."""
    if graph.n_edges == 0:
        return
    d = edge_vectors(graph).norm(dim=-1)
    k = int(torch.argmin(d))
    if float(d[k]) < MIN_DISTANCE:
        i, j = (int(x) for x in graph.edge_index[:, k])
        s = int(graph.system_idx[i])
        first = int(torch.searchsorted(graph.system_idx, torch.tensor(s, device=graph.device)))
        what = "itself (a periodic image)" if i == j else f"atom {j - first}"
        where = f"structure {s}: " if label_systems else ""
        raise ValueError(
            f"{where}atom {i - first} is {float(d[k]):.3g} Å from {what}; "
            f"atoms closer than {MIN_DISTANCE} Å are treated as overlapping"
        )


def collate(graphs: Sequence[AtomGraph]) -> AtomGraph:
    """Concatenate graphs (each one or more structures) into one batch."""
    if len(graphs) == 1:
        return graphs[0]
    atom_offsets = torch.cumsum(torch.tensor([0] + [g.n_atoms for g in graphs[:-1]]), 0)
    sys_offsets = torch.cumsum(torch.tensor([0] + [g.n_systems for g in graphs[:-1]]), 0)
    dev = graphs[0].device

    def cat(name):
        parts = [getattr(g, name) for g in graphs]
        return None if parts[0] is None else torch.cat(parts)

    return AtomGraph(
        positions=cat("positions"),
        numbers=cat("numbers"),
        cell=cat("cell"),
        pbc=cat("pbc"),
        system_idx=torch.cat(
            [g.system_idx + int(o) for g, o in zip(graphs, sys_offsets, strict=True)]),
        edge_index=torch.cat(
            [g.edge_index + int(o) for g, o in zip(graphs, atom_offsets, strict=True)], dim=1),
        shifts=cat("shifts"),
        node_scalars=cat("node_scalars"),
        node_vectors=cat("node_vectors"),
    ).to(dev)
