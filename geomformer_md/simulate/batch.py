"""Batched inference: many structures, one forward pass per batch.

:class:`BatchEvaluator` is the engine under :func:`~.batch_predict.predict`,
:func:`~.batch_relax.relax_many` and :func:`~.batch_md.run_md_many`: it packs
structures into batches under an edge budget, builds each batch's neighbour graph
in one call, runs one forward+backward pass per batch, splits a batch that runs out
of memory, and returns per-structure results in input order (the same dicts a
:class:`~geomformer_md.GeoMFormerCalculator` stores).

Why an edge budget: cost and activation memory of the model grow with attention
edges (neighbour pairs within the cutoff plus one self edge per atom), not with
atoms or structures. A batch is therefore limited to ``max_edges`` such edges,
derived from the free memory of the device and a measured bytes-per-edge figure
(see :meth:`BatchEvaluator.max_edges`, docs/batching.md).

``predict``, ``relax_many``, ``BatchRelaxResult`` and ``run_md_many`` used to live
here and are still importable from here (re-exported on first use: their modules
import this one, so importing them here at load time would be an import cycle).
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
from ase import Atoms
from ase.stress import full_3x3_to_voigt_6_stress

from ..calculator import private_model
from ..committee import (
    Committee,
    make_potential,
    resolve_uncertainty_threshold,
)
from ..data.graph import AtomGraph, build_edges, validate_atoms
from ..data.neighbors import get_neighbor_backend
from ..dispersion import add_results, make_dispersion
from ..memory import available_memory, bytes_per_edge, check_call_memory
from ._progress import progress_bar

__all__ = [  # F822: the moved names resolve through __getattr__ below
    "BatchEvaluator",
    "BatchRelaxResult",  # noqa: F822
    "NonFiniteResultError",
    "available_memory",
    "is_out_of_memory",
    "predict",  # noqa: F822
    "relax_many",  # noqa: F822
    "run_md_many",  # noqa: F822
]

# Names that moved to their own modules, re-exported for ``from .batch import ...``.
_MOVED = {
    "predict": "batch_predict",
    "relax_many": "batch_relax",
    "BatchRelaxResult": "batch_relax",
    "BatchProxyCalculator": "batch_relax",
    "run_md_many": "batch_md",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_MOVED])


# Fraction of the available memory a batch may use: on CPU the RAM is shared with
# everything else on the machine, on CUDA the device is (normally) ours.
MEMORY_FRACTION = {"cpu": 0.5, "cuda": 0.8}
# On CPU, batches beyond this many attention edges are no faster per structure
# (measured with benchmarks/bench_batched.py, docs/batching.md) and only cost memory.
CPU_MAX_EDGES = 24_000
# A batch is shared among CPU worker threads only if each gets at least this many edges.
MIN_EDGES_PER_WORKER = 2_000
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory")


class NonFiniteResultError(FloatingPointError):
    """The model returned NaN or inf for a structure (named in the message)."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for the errors torch and Python raise when an allocation fails."""
    if isinstance(err, MemoryError):
        return True
    cuda_oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if cuda_oom is not None and isinstance(err, cuda_oom):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _OOM_MESSAGES)


def _assemble(atoms_list: Sequence[Atoms], device: torch.device) -> AtomGraph:
    """Flat AtomGraph without edges from already validated Atoms (read only)."""
    sizes = torch.tensor([len(a) for a in atoms_list])
    pos = np.concatenate([a.positions for a in atoms_list])
    nums = np.concatenate([a.numbers for a in atoms_list])
    cell = np.stack([a.cell.array for a in atoms_list])
    pbc = np.stack([a.pbc for a in atoms_list])
    return AtomGraph(
        positions=torch.from_numpy(pos).to(device, torch.float64),
        numbers=torch.from_numpy(nums).to(device, torch.long),
        cell=torch.from_numpy(cell).to(device, torch.float64),
        pbc=torch.from_numpy(pbc).to(device),
        system_idx=torch.repeat_interleave(torch.arange(len(atoms_list)), sizes).to(device),
        edge_index=torch.zeros(2, 0, dtype=torch.long, device=device),
        shifts=torch.zeros(0, 3, dtype=torch.long, device=device),
    )


def take_systems(graph: AtomGraph, lo: int, hi: int) -> AtomGraph:
    """Systems ``lo..hi-1`` of a batch as a batch of their own (atoms are contiguous)."""
    if lo == 0 and hi == graph.n_systems:
        return graph
    counts = graph.atoms_per_system()
    a0, a1 = int(counts[:lo].sum()), int(counts[:hi].sum())
    centre = graph.edge_index[0]
    keep = (centre >= a0) & (centre < a1)

    def atoms_slice(t):
        return None if t is None else t[a0:a1]

    return replace(
        graph,
        positions=graph.positions[a0:a1],
        numbers=graph.numbers[a0:a1],
        cell=graph.cell[lo:hi],
        pbc=graph.pbc[lo:hi],
        system_idx=graph.system_idx[a0:a1] - lo,
        edge_index=graph.edge_index[:, keep] - a0,
        shifts=graph.shifts[keep],
        node_scalars=atoms_slice(graph.node_scalars),
        node_vectors=atoms_slice(graph.node_vectors),
    )


def _cat_outputs(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


def _label(atoms: Atoms, index: int) -> str:
    return f"structure {index} ({atoms.get_chemical_formula()}, {len(atoms)} atoms)"


class BatchEvaluator:
    """Energies, forces and stress for many structures, in batches.

    Args:
        model: a shipped potential name (None = the default), a model file path,
            a GeoMFormer or a Potential.
        device: "cpu", "cuda", "cuda:1", ... or "auto".
        dtype: "float32" or "float64"; None keeps the model's own on CPU and
            uses float32 on CUDA.
        neighbor_backend: "auto" (matscipy on CPU, the batched torch cell list on
            CUDA), "matscipy", "torch" or "brute".
        max_edges: attention edges (neighbour pairs + atoms) per batch; None
            derives it from free memory (:meth:`max_edges`).
        workers: CPU only: a batch is cut into this many parts computed by as
            many threads at once, each with one torch thread (torch's thread
            count is set to 1 for the duration). None: ``torch.get_num_threads()``
            at call time. Why: the model is many small memory-bound ops, and two
            OpenMP threads per op spend much of their time waiting on each other
            (and, on a busy machine, spin against other processes); whole
            batches in parallel threads do not wait (docs/batching.md).
        compile: run the network through ``torch.compile(dynamic=True)``.
            Measured 3.8x less time than eager batches for the default config
            (fused elementwise kernels), after a one-off compilation of 1.5-3
            minutes on 2 cores. Worth it for thousands of structures or long
            relaxations, not for a few. Float64 results equal eager ones to
            ~1e-10 (tests, marked slow).
        dispersion, dispersion_xc, dispersion_cutoff: add DFT-D3(BJ) dispersion, as
            in :class:`~geomformer_md.GeoMFormerCalculator` (computed per batch in
            float64; not counted in the edge budget).

    ``timings`` accumulates seconds spent in conversion ("convert"),
    neighbour lists ("neighbors"), the model ("model") and unpacking ("unpack");
    ``n_batches`` and ``n_oom_splits`` count forward passes and OOM splits.
    """

    def __init__(
        self,
        model=None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        neighbor_backend: str = "auto",
        max_edges: int | None = None,
        workers: int | None = None,
        compile: bool = False,
        dispersion: str | None = None,
        dispersion_xc: str = "pbe",
        dispersion_cutoff: float | None = None,
        uncertainty_threshold: float | str | None = "auto",
    ) -> None:
        self.dispersion = make_dispersion(dispersion, dispersion_xc, dispersion_cutoff)
        self._warned_uncertain = False
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch sees no CUDA device")
        if dtype is None and self.device.type == "cuda":
            dtype = "float32"
        gm = private_model(model, dtype, self.device)
        # committee: warn once when a structure's largest force std passes this (eV/Å)
        self.uncertainty_threshold = resolve_uncertainty_threshold(gm, uncertainty_threshold)
        self.potential = make_potential(gm)
        self.is_committee = isinstance(gm, Committee)
        self.compiled = bool(compile)
        if compile and self.is_committee:
            raise ValueError("compile=True is not available for a committee; use one member")
        if compile:
            self.potential.model = torch.compile(gm, dynamic=True)
        self.cutoff = gm.config.cutoff
        self.neighbor_backend = get_neighbor_backend(neighbor_backend, self.device).name
        if max_edges is not None and max_edges < 1:
            raise ValueError(f"max_edges must be >= 1, got {max_edges}")
        self._max_edges = max_edges
        if workers is not None and (int(workers) != workers or workers < 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers}")
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._known = np.zeros(119, dtype=bool)
        self._known[list(gm.config.species)] = True
        self._edges_per_atom: float | None = None  # learned from built graphs
        self.timings = {"convert": 0.0, "neighbors": 0.0, "model": 0.0, "unpack": 0.0}
        self.n_batches = 0
        self.n_oom_splits = 0

    # ------------------------------------------------------------------ budget
    def bytes_per_edge(self) -> float:
        """Peak bytes of a forward+backward pass per attention edge (measured once,
        :func:`geomformer_md.memory.bytes_per_edge`)."""
        return bytes_per_edge(self.potential)

    def max_edges(self) -> int:
        """Attention edges allowed in one batch.

        ``MEMORY_FRACTION`` of :func:`available_memory` divided by
        :meth:`bytes_per_edge`; on CPU also at most ``CPU_MAX_EDGES``, beyond
        which batches get no faster. Lowered to half a failed batch after an
        out-of-memory error.
        """
        if self._max_edges is None:
            frac = MEMORY_FRACTION.get(self.device.type, 0.5)
            budget = int(frac * available_memory(self.device) / self.bytes_per_edge())
            if self.device.type == "cpu":
                budget = min(budget, CPU_MAX_EDGES)
            self._max_edges = max(budget, 1)
        return self._max_edges

    # ------------------------------------------------------------------ public
    def evaluate(
        self,
        atoms_list: Sequence[Atoms],
        batch_size: int | str = "auto",
        stress: bool | str = "auto",
        progress: bool = False,
        errors: str = "raise",
        indices: Sequence[int] | None = None,
    ) -> list:
        """Results for every structure, in input order.

        Args:
            atoms_list: the structures (only read).
            batch_size: "auto" (pack under :meth:`max_edges`) or structures per batch.
            stress: "auto" computes stress where the cell is periodic in 3-D;
                False skips it.
            progress: show a tqdm bar.
            errors: "raise" raises :class:`NonFiniteResultError` for the first
                structure with non-finite results (ValueError for overlapping
                atoms); "return" puts the exception in that structure's place and
                goes on. Invalid input (empty, NaN positions, unknown elements)
                always raises.
            indices: numbers used for the structures in messages (default 0..n-1).

        Returns:
            Per structure a dict: ``energy``, ``free_energy`` (eV), ``energies``
            [n] (eV), ``forces`` [n, 3] (eV/Å) and, for 3-D periodic cells
            with ``stress`` on, ``stress`` (6 Voigt, eV/Å³, ASE sign).
        """
        if isinstance(atoms_list, Atoms):
            atoms_list = [atoms_list]
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        if not (batch_size == "auto" or (isinstance(batch_size, int) and batch_size >= 1)):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}")
        n = len(atoms_list)
        indices = list(range(n)) if indices is None else list(indices)
        t0 = time.perf_counter()
        for k, atoms in enumerate(atoms_list):
            self._validate(atoms, indices[k])
        self.timings["convert"] += time.perf_counter() - t0
        results: list = [None] * n
        sizes = np.array([len(a) for a in atoms_list])
        order = np.argsort(-sizes, kind="stable")  # largest first: a misfit shows early
        bar = progress_bar(n, "predict", progress, unit="structure")
        try:
            for chunk in self._chunks(order, sizes, batch_size):
                sub = [atoms_list[k] for k in chunk]
                try:
                    graph = self._graph(sub, [indices[k] for k in chunk])
                except ValueError as err:  # overlapping atoms (e.g. a relaxation collapsed)
                    if errors == "raise":
                        raise
                    if len(chunk) == 1:
                        results[chunk[0]] = err
                    else:  # find the culprit(s): each structure of the chunk on its own
                        for k in chunk:
                            results[k] = self.evaluate(
                                [atoms_list[k]], 1, stress, False, errors, [indices[k]]
                            )[0]
                    bar.update(len(chunk))
                    continue
                for lo, hi in self._split_by_edges(graph, batch_size):
                    part = take_systems(graph, lo, hi)
                    ids = chunk[lo:hi]
                    out = self.forward(part, stress=stress, labels=[indices[k] for k in ids])
                    self._unpack(part, out, ids, atoms_list, indices, results, stress, errors)
                bar.update(len(chunk))
        finally:
            bar.close()
        return results

    def forward(
        self, graph: AtomGraph, stress: bool | str = "auto", labels: Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """One batch through the potential (detached outputs, on the device).

        On CPU with several workers the batch is cut into that many parts
        (contiguous systems, balanced by edges) computed in parallel threads.
        A part that runs out of memory is split in half and each half retried,
        recursively; a single structure that does not fit raises MemoryError
        naming it. The edge budget is lowered to half the failed batch.
        """
        labels = list(range(graph.n_systems)) if labels is None else list(labels)
        want_stress = bool(graph.pbc.all(dim=1).any()) if stress == "auto" else bool(stress)
        ranges = self._worker_ranges(graph)
        if len(ranges) == 1:
            return self._forward_or_split(graph, want_stress, labels)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # one torch thread per worker: no OpenMP waits
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(len(ranges), thread_name_prefix="geomformer")
            jobs = [
                self._pool.submit(
                    self._forward_or_split, take_systems(graph, lo, hi), want_stress, labels[lo:hi]
                )
                for lo, hi in ranges
            ]
            outs = [job.result() for job in jobs]
        finally:
            torch.set_num_threads(threads)
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}

    def _n_workers(self) -> int:
        if self.device.type != "cpu":
            return 1
        return self.workers if self.workers is not None else max(1, torch.get_num_threads())

    def _worker_ranges(self, graph: AtomGraph) -> list[tuple[int, int]]:
        """Contiguous system ranges of about equal edges, one per worker."""
        n_workers = min(self._n_workers(), graph.n_systems)
        total = graph.n_edges + graph.n_atoms
        if n_workers == 1 or total < MIN_EDGES_PER_WORKER * n_workers:
            return [(0, graph.n_systems)]
        per_sys = torch.bincount(graph.system_idx[graph.edge_index[0]], minlength=graph.n_systems)
        cum = torch.cumsum(per_sys + graph.atoms_per_system(), 0).tolist()
        cuts = [0]
        for w in range(1, n_workers):
            k = bisect.bisect_left(cum, total * w / n_workers) + 1  # systems before the cut
            cuts.append(min(max(k, cuts[-1] + 1), graph.n_systems - (n_workers - w)))
        cuts.append(graph.n_systems)
        return list(zip(cuts[:-1], cuts[1:], strict=True))

    def _forward_or_split(
        self, graph: AtomGraph, stress: bool, labels: list[int]
    ) -> dict[str, torch.Tensor]:
        failure = None
        if graph.n_systems == 1:  # refused up front with needed vs available
            d3 = self.dispersion.estimate_bytes(graph) if self.dispersion is not None else 0
            check_call_memory(self.potential, graph, f"structure {labels[0]}", d3)
        try:
            return self._forward(graph, stress)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            failure = f"{type(err).__name__}: {str(err)[:200]}"
        # Retry outside the except block so the failed batch's tensors (held by the
        # traceback) are freed first.
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if graph.n_systems == 1:
            raise MemoryError(
                f"structure {labels[0]} ({graph.n_atoms} atoms, {graph.n_edges} edges) does "
                f"not fit in memory on {self.device} even alone ({failure})"
            )
        with self._lock:
            self.n_oom_splits += 1
            self._max_edges = max(1, min(self.max_edges(), (graph.n_edges + graph.n_atoms) // 2))
        half = graph.n_systems // 2
        first = self._forward_or_split(take_systems(graph, 0, half), stress, labels[:half])
        second = self._forward_or_split(
            take_systems(graph, half, graph.n_systems), stress, labels[half:]
        )
        return _cat_outputs(first, second)

    # ------------------------------------------------------------------ steps
    def _forward(self, graph: AtomGraph, stress: bool) -> dict[str, torch.Tensor]:
        """The potential on one batch; the single place tests inject failures."""
        t0 = time.perf_counter()
        with torch.enable_grad():
            out = self.potential(graph, forces=True, stress=stress)
        out = {k: v.detach() for k, v in out.items()}
        if self.dispersion is not None:
            out = add_results(out, self.dispersion(graph, forces=True, stress=stress))
        if not stress:
            out["has_stress"] = torch.zeros(graph.n_systems, dtype=torch.bool, device=self.device)
            out["stress"] = torch.zeros(
                graph.n_systems, 3, 3, dtype=out["energy"].dtype, device=self.device
            )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # honest timings
        with self._lock:
            self.timings["model"] += time.perf_counter() - t0
            self.n_batches += 1
        return out

    def _validate(self, atoms: Atoms, index: int) -> None:
        if not isinstance(atoms, Atoms):
            raise TypeError(f"structure {index} is a {type(atoms).__name__}, not an ase.Atoms")
        validate_atoms(atoms, index)
        z = atoms.numbers
        bad = (z < 0) | (z > 118)
        bad[~bad] = ~self._known[z[~bad]]
        if bad.any():
            from ase.data import chemical_symbols

            names = sorted({chemical_symbols[int(v)] if 0 <= v <= 118 else str(v) for v in z[bad]})
            known = [chemical_symbols[int(v)] for v in np.flatnonzero(self._known)]
            raise ValueError(
                f"structure {index}: element(s) {names} unknown to this model; it knows {known}"
            )

    def _chunks(self, order: np.ndarray, sizes: np.ndarray, batch_size):
        """Greedy packing in size order under the (estimated) edge budget."""
        if batch_size != "auto":
            for s in range(0, len(order), batch_size):
                yield order[s : s + batch_size].tolist()
            return
        chunk: list[int] = []
        cost = 0.0
        for k in order.tolist():
            # Before any graph was built, assume 60 neighbours per atom (dense metal, 5 Å).
            per_atom = 1.0 + (self._edges_per_atom if self._edges_per_atom is not None else 60.0)
            c = sizes[k] * per_atom
            if chunk and cost + c > self.max_edges():
                yield chunk
                chunk, cost = [], 0.0
            chunk.append(k)
            cost += c
        if chunk:
            yield chunk

    def _graph(self, atoms_list: Sequence[Atoms], labels: Sequence[int]) -> AtomGraph:
        """Flat graph of a batch; all edges from one neighbour-list call."""
        t0 = time.perf_counter()
        graph = _assemble(atoms_list, self.device)
        t1 = time.perf_counter()
        try:
            graph = build_edges(graph, self.cutoff, self.neighbor_backend)
        except ValueError as err:  # name the structure by its input index
            msg = re.sub(
                r"^(structure|system) (\d+)",
                lambda m: f"structure {labels[int(m.group(2))]}",
                str(err),
            )
            raise ValueError(msg) from None
        self.timings["convert"] += t1 - t0
        self.timings["neighbors"] += time.perf_counter() - t1
        return graph

    def _split_by_edges(self, graph: AtomGraph, batch_size) -> list[tuple[int, int]]:
        """Cut a built batch into contiguous system ranges under the exact edge budget."""
        per_sys = torch.bincount(graph.system_idx[graph.edge_index[0]], minlength=graph.n_systems)
        atoms = graph.atoms_per_system()
        ratio = float((per_sys.double() / atoms.double()).max())
        self._edges_per_atom = max(self._edges_per_atom or 0.0, ratio)
        if batch_size != "auto":
            return [(0, graph.n_systems)]
        cost = (per_sys + atoms).tolist()
        budget = self.max_edges()
        ranges, lo, acc = [], 0, 0
        for s, c in enumerate(cost):
            if s > lo and acc + c > budget:
                ranges.append((lo, s))
                lo, acc = s, 0
            acc += c
        ranges.append((lo, graph.n_systems))
        return ranges

    def _warn_uncertain(self, forces_std: np.ndarray, numbers, label: str) -> None:
        limit = self.uncertainty_threshold
        if limit is None or self._warned_uncertain:
            return
        ratio, k = limit.excess(numbers, forces_std)
        if ratio <= 1.0:
            return
        self._warned_uncertain = True
        import warnings

        from ..calculator import UncertaintyWarning

        warnings.warn(
            f"{label}: committee force uncertainty {forces_std[k]:.3f} eV/Å exceeds "
            f"{limit.describe(numbers[k])}: outside what the potential was trained on; each "
            f"result's forces_std tells which structures (warned once per evaluator)",
            UncertaintyWarning, stacklevel=4)

    def _unpack(self, graph, out, ids, atoms_list, indices, results, stress, errors) -> None:
        t0 = time.perf_counter()
        energy = out["energy"].to("cpu", torch.float64).numpy()
        energies = out["energies"].to("cpu", torch.float64).numpy()
        forces = out["forces"].to("cpu", torch.float64).numpy()
        sigma = out["stress"].to("cpu", torch.float64).numpy()
        has_stress = out["has_stress"].cpu().numpy() & (stress is not False)
        bounds = np.concatenate([[0], np.cumsum(graph.atoms_per_system().cpu().numpy())])
        atom_ok = np.isfinite(forces).all(1) & np.isfinite(energies)
        sys_ok = np.isfinite(energy) & np.logical_and.reduceat(atom_ok, bounds[:-1])
        sys_ok &= ~has_stress | np.isfinite(sigma).all((1, 2))
        for s, k in enumerate(ids):
            a, b = bounds[s], bounds[s + 1]
            if not sys_ok[s]:
                err = NonFiniteResultError(
                    f"{_label(atoms_list[k], indices[k])}: the model returned non-finite "
                    "energy, forces or stress (atoms too close, far outside the training "
                    "data, or a float32 overflow)"
                )
                if errors == "raise":
                    raise err
                results[k] = err
                continue
            res = {
                "energy": float(energy[s]),
                "free_energy": float(energy[s]),
                "energies": energies[a:b].copy(),
                "forces": forces[a:b].copy(),
            }
            if has_stress[s]:
                res["stress"] = full_3x3_to_voigt_6_stress(sigma[s])
            if "forces_std" in out:  # a committee: the members' spread
                res["energy_std"] = float(out["energy_std"][s])
                res["energies_std"] = out["energies_std"][a:b].to("cpu", torch.float64).numpy()
                res["forces_std"] = out["forces_std"][a:b].to("cpu", torch.float64).numpy()
                self._warn_uncertain(res["forces_std"], atoms_list[k].numbers,
                                     _label(atoms_list[k], indices[k]))
            results[k] = res
        self.timings["unpack"] += time.perf_counter() - t0
