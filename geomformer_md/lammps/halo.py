"""The ghost-feature exchange of the "halo" mode: two custom operators and their Python side.

In this mode a LAMMPS rank computes every layer for its own atoms only. Before each block
the features of its ghost nodes (atoms another rank owns, within one cutoff of its own)
are filled from their owners, and in the backward pass the gradients with respect to
those ghost features are summed into the owners' (docs/lammps.md). Two operators do it,
so that the whole forward + backward stays one exported graph:

    geomformer::halo(Tensor own, Tensor like) -> Tensor
        own [n_own, ...] rows of the own nodes -> [like.shape[0], ...] rows of all nodes,
        the ghost rows filled from their owners (``like`` carries only the node count)
    geomformer::halo_reverse(Tensor grad, Tensor own) -> Tensor
        grad [n_nodes, ...] -> [n_own, ...]: the own rows plus the ghost rows that other
        ranks hold of these atoms, summed (``own`` carries only the own count)

halo_reverse is halo's backward (torch.library.register_autograd), so make_fx traces both
into the graph and AOTInductor compiles them as calls into the dispatcher by name. In
LAMMPS the plugin registers the same schema with C++ kernels that run LAMMPS's forward and
reverse communication (plugin/pair_geomformer.cpp). Here the kernels are Python: with no
exchange set, a graph without ghost nodes (one rank: every ghost is an image of an own
atom) passes its rows through; ``SimulatedRanks`` runs several rank graphs in threads and
exchanges rows between them as LAMMPS would, for tests and for the export-time check.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

_local = threading.local()  # .exchange: the simulated rank of this thread, or None

# A fragment, and the schema only if missing: the plugin, loaded into this process by the
# lammps module, may have defined it already (its C++ kernels then serve CPU tensors).
_lib = torch.library.Library("geomformer", "FRAGMENT")
if not hasattr(torch.ops.geomformer, "halo"):
    _lib.define("halo(Tensor own, Tensor like) -> Tensor")
    _lib.define("halo_reverse(Tensor grad, Tensor own) -> Tensor")


def _halo(own: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    ex = getattr(_local, "exchange", None)
    if ex is not None:
        return ex.forward(own, like.shape[0])
    if like.shape[0] != own.shape[0]:
        raise RuntimeError("geomformer::halo: this graph has ghost nodes, whose features come "
                           "from other ranks; run it inside SimulatedRanks (or in LAMMPS)")
    return own.clone()  # a custom operator may not return its input


def _halo_reverse(grad: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    ex = getattr(_local, "exchange", None)
    if ex is not None:
        return ex.reverse(grad, own.shape[0])
    return grad[: own.shape[0]].clone()


_lib.impl("halo", _halo, "CompositeExplicitAutograd")
_lib.impl("halo_reverse", _halo_reverse, "CompositeExplicitAutograd")


@torch.library.register_fake("geomformer::halo")
def _halo_fake(own, like):
    return own.new_empty((like.shape[0], *own.shape[1:]))


@torch.library.register_fake("geomformer::halo_reverse")
def _halo_reverse_fake(grad, own):
    return grad.new_empty(own.shape)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad):
    (own,) = ctx.saved_tensors
    return torch.ops.geomformer.halo_reverse(grad, own), None


torch.library.register_autograd("geomformer::halo", _backward, setup_context=_setup_context)


def exchange(zi: torch.Tensor, ze: torch.Tensor, like: torch.Tensor):
    """GeoMFormer.forward's ``exchange`` for a rank graph: the own rows of both streams
    (zi [n_own, d], ze [n_own, 3, d]) -> all rows ([n, d], [n, 3, d]; n = like.shape[0]),
    in one operator call (one message per neighbouring rank and layer: 4d numbers per atom)."""
    full = torch.ops.geomformer.halo(torch.cat([zi.unsqueeze(1), ze], dim=1), like)
    return full[:, 0], full[:, 1:]


class SimulatedRanks:
    """Several rank graphs of one structure (graph.rank_graph(..., halo=True)), run in
    threads that exchange ghost rows as LAMMPS's forward and reverse communication would.

    ``run(fn)`` calls ``fn(rank)`` in one thread per rank and returns their results; every
    geomformer::halo / halo_reverse call inside is an exchange step in which all ranks
    take part (so every rank must make the same calls, as in LAMMPS)."""

    def __init__(self, graphs, n_atoms: int) -> None:
        self.graphs, self.n_atoms = graphs, n_atoms
        self.barrier = threading.Barrier(len(graphs))
        self.posted: list = [None] * len(graphs)

    def run(self, fn):
        results, errors = [None] * len(self.graphs), []

        def work(rank):
            _local.exchange = _Rank(self, rank)
            try:
                results[rank] = fn(rank)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller
                errors.append(exc)
                self.barrier.abort()  # the other ranks would wait for this one forever
            finally:
                _local.exchange = None

        threads = [threading.Thread(target=work, args=(r,)) for r in range(len(self.graphs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                       errors[0])
        return results


class _Rank:
    def __init__(self, ranks: SimulatedRanks, rank: int) -> None:
        self.ranks, self.rank = ranks, rank
        g = ranks.graphs[rank]
        self.own_atoms = torch.from_numpy(np.asarray(g.atoms[: g.n_own]))
        self.ghost_atoms = torch.from_numpy(np.asarray(g.atoms[g.n_own :]))

    def forward(self, own: torch.Tensor, n_nodes: int) -> torch.Tensor:
        if own.shape[0] + len(self.ghost_atoms) != n_nodes:
            raise RuntimeError(f"geomformer::halo: {n_nodes} nodes, but rank {self.rank}'s "
                               f"graph has {own.shape[0] + len(self.ghost_atoms)}")
        r = self.ranks
        r.posted[self.rank] = (self.own_atoms, own.detach())
        r.barrier.wait()  # every rank has posted its own rows
        table = own.new_zeros((r.n_atoms, *own.shape[1:]))
        for atoms, rows in r.posted:
            table[atoms] = rows
        r.barrier.wait()  # every rank has read them
        return torch.cat([own, table[self.ghost_atoms]])

    def reverse(self, grad: torch.Tensor, n_own: int) -> torch.Tensor:
        r = self.ranks
        r.posted[self.rank] = (self.ghost_atoms, grad[n_own:].detach())
        r.barrier.wait()
        total = grad.new_zeros((r.n_atoms, *grad.shape[1:]))
        for atoms, rows in r.posted:
            total.index_add_(0, atoms, rows)
        r.barrier.wait()
        return grad[:n_own] + total[self.own_atoms]
