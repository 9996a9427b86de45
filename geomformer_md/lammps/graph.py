"""The graph one LAMMPS rank evaluates, built in Python from an ase.Atoms.

The plugin (plugin/pair_geomformer.cpp) builds the same graph from LAMMPS's neighbour
lists; this mirror gives the exporter example inputs with every layer size different,
and the tests a way to check, without LAMMPS, that energies from a rank's graph equal
the whole structure's. Nodes are atoms (periodic images are the atom itself), numbered
by hop distance from the rank's own atoms: own atoms first, then each further hop.
Layer k of an L-layer model is needed only on nodes within L - k hops, the initial
features within L hops, and nodes at L + 1 hops only as the far ends of edges.

With ``halo=True`` (the plugin's halo mode, lammps/halo.py) the graph is the own atoms,
their edges and the atoms one hop away (ghost nodes, whose features other ranks send):
every layer is computed for the own atoms only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.graph import atoms_to_graph, edge_vectors


@dataclass
class RankGraph:
    """numbers [n] long; edge_index [2, E] long (centre, neighbour), grouped by centre in
    node order; edge_vec [E, 3] float64 Å; layer_sizes: n_layers + 1 pairs (atoms,
    edges) for GeoMFormer.forward; atoms [n]: the atom index of each node; n_own: nodes
    whose energies the rank computes (the first ones); halo: built for the halo mode."""

    numbers: torch.Tensor
    edge_index: torch.Tensor
    edge_vec: torch.Tensor
    layer_sizes: list[tuple[int, int]]
    atoms: np.ndarray
    n_own: int
    halo: bool = False


def hop_depth(edge_index: np.ndarray, n_atoms: int, own: np.ndarray, max_hops: int) -> np.ndarray:
    """Hops from the nearest own atom along edges, for every atom (max_hops + 1 = farther)."""
    i, j = edge_index
    depth = np.full(n_atoms, max_hops + 1)
    depth[own] = 0
    for h in range(1, max_hops + 1):
        front = np.zeros(n_atoms, bool)
        front[depth == h - 1] = True
        reached = j[front[i]]
        depth[reached[depth[reached] > h]] = h
    return depth


def rank_graph(atoms, own, cutoff: float, n_layers: int, halo: bool = False) -> RankGraph:
    """The graph of a rank owning the atoms ``own`` (indices or a boolean mask) of ``atoms``;
    halo: one hop of ghost nodes, every layer on the own atoms (module docstring)."""
    graph = atoms_to_graph(atoms, cutoff, "matscipy")
    ei = graph.edge_index.numpy()
    vec = edge_vectors(graph).detach()
    keep_d = (vec.norm(dim=1) < cutoff).numpy()
    ei, vec = ei[:, keep_d], vec[torch.from_numpy(keep_d)]
    n = len(atoms)
    own = np.flatnonzero(np.asarray(own)) if np.asarray(own).dtype == bool else np.asarray(own)
    reach = 0 if halo else n_layers  # depth of the deepest nodes whose edges are used
    depth = hop_depth(ei, n, own, reach + 1)
    nodes = np.flatnonzero(depth <= reach + 1)
    nodes = nodes[np.argsort(depth[nodes], kind="stable")]
    node_of = np.full(n, -1)
    node_of[nodes] = np.arange(len(nodes))
    use = depth[ei[0]] <= reach  # edges of the nodes whose initial features are needed
    centre, nbr = node_of[ei[0, use]], node_of[ei[1, use]]
    order = np.lexsort((nbr, centre))
    edge_index = torch.from_numpy(np.stack([centre[order], nbr[order]]))
    edge_vec = vec[torch.from_numpy(np.flatnonzero(use)[order])]
    node_depth = depth[nodes]
    sizes = []
    for k in range(n_layers + 1):  # entry 0: initial features (<= L hops); k: layer k
        a = int((node_depth <= (0 if halo else n_layers - k)).sum())
        sizes.append((a, int((edge_index[0] < a).sum())))
    numbers = torch.as_tensor(atoms.numbers[nodes], dtype=torch.long)
    return RankGraph(numbers, edge_index, edge_vec, sizes, nodes, sizes[-1][0], halo)
