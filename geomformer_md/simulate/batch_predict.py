"""Single points of many structures: :func:`predict`, the function form of
:class:`~geomformer_md.simulate.batch.BatchEvaluator`."""

from __future__ import annotations

from collections.abc import Sequence

from ase import Atoms

from .batch import BatchEvaluator

__all__ = ["predict"]


def predict(
    atoms_list: Sequence[Atoms],
    model=None,
    batch_size: int | str = "auto",
    device: str = "cpu",
    dtype: str | None = None,
    neighbor_backend: str = "auto",
    progress: bool = False,
    max_edges: int | None = None,
    compile: bool = False,
    dispersion: str | None = None,
) -> list[dict]:
    """Single-point energies, forces and stress of many structures, batched.

    Results equal one-at-a-time :class:`~geomformer_md.GeoMFormerCalculator`
    results (to round-off) and come back in input order.

    Args:
        atoms_list: structures (never modified).
        model: potential name (None = default), model file, GeoMFormer, or a
            :class:`BatchEvaluator` to reuse (its device/dtype settings win).
        batch_size: "auto" packs under a memory-derived edge budget; an int
            fixes the structures per batch (out-of-memory batches are still split).
        device, dtype, neighbor_backend: as :class:`BatchEvaluator`.
        progress: show a progress bar.
        max_edges: override the edge budget per batch.
        compile: ``torch.compile`` the network (see :class:`BatchEvaluator`).
        dispersion: "d3bj" adds PBE-D3(BJ) dispersion (see :class:`BatchEvaluator`).

    Returns:
        One dict per structure: ``energy``, ``free_energy``, ``energies``,
        ``forces`` and, for 3-D periodic cells, ``stress`` (Voigt, eV/Å³).

    Raises:
        ValueError: for invalid structures (named by input index).
        NonFiniteResultError: when the model gives NaN/inf for a structure.
        MemoryError: when a single structure does not fit in memory.
    """
    if isinstance(model, BatchEvaluator):
        evaluator = model
    else:
        evaluator = BatchEvaluator(
            model, device, dtype, neighbor_backend, max_edges, compile=compile,
            dispersion=dispersion,
        )
    return evaluator.evaluate(atoms_list, batch_size=batch_size, progress=progress)
