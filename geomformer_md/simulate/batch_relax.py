"""Batched relaxation: :func:`relax_many` relaxes many structures with ordinary ASE
optimizers, each owning its optimizer state and constraints, served by one batched
forward pass (:class:`~geomformer_md.simulate.batch.BatchEvaluator`) per step."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
    all_properties,
)
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter

from ..committee import UncertaintyMonitor
from ._progress import progress_bar
from .batch import BatchEvaluator, NonFiniteResultError
from .relax import RelaxResult, _fixed_indices, _optimizer_class, bottom_layer_indices

__all__ = ["BatchProxyCalculator", "BatchRelaxResult", "relax_many"]


@dataclass(frozen=True)
class BatchRelaxResult(RelaxResult):
    """:class:`~geomformer_md.simulate.relax.RelaxResult` plus what batching adds.

    Attributes:
        n_extra_calls: evaluations the optimizer asked for outside the batched
            schedule (line searches, FIRE's downhill check), computed alone.
        error: why the structure was stopped early (non-finite results), else None.
    """

    n_extra_calls: int = 0
    error: str | None = None


class BatchProxyCalculator(Calculator):
    """Stands in for the model on one structure during batched runs.

    The batch driver fills in results computed for many structures at once
    (:meth:`set_results`); ASE then serves them from its cache as long as the
    structure has not changed. An optimizer that asks for a structure the batch
    has not seen (a line search) gets it computed alone, so ASE semantics hold.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, evaluator: BatchEvaluator, index: int = 0) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.index = index
        self.n_extra_calls = 0

    @property
    def uncertainty_threshold(self) -> float | None:
        return self.evaluator.uncertainty_threshold

    def set_results(self, atoms: Atoms, results: dict) -> None:
        self.atoms = atoms.copy()
        self.results = dict(results)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if "stress" in properties and not self.atoms.pbc.all():
            raise PropertyNotImplementedError(
                f"stress is only defined for cells periodic in all 3 directions; structure "
                f"{self.index} has pbc={self.atoms.pbc.tolist()}"
            )
        self.n_extra_calls += 1
        self.results = self.evaluator.evaluate([self.atoms], indices=[self.index])[0]


class _Job:
    """One structure being relaxed: its Atoms, proxy calculator and optimizer."""

    def __init__(self, index, atoms, proxy, opt, opt_name, trajectory):
        self.index, self.atoms, self.proxy, self.opt = index, atoms, proxy, opt
        self.opt_name, self.trajectory = opt_name, trajectory
        self.monitor = UncertaintyMonitor(proxy)  # committee: largest force std seen
        self.initial_energy: float | None = None
        self.t0 = time.perf_counter()


def relax_many(
    atoms_list: Sequence[Atoms],
    model=None,
    *,
    fmax: float = 0.05,
    steps: int = 500,
    optimizer="FIRE",
    relax_cell: bool = False,
    fix_bottom_layers: int | None = None,
    max_batch: int = 64,
    progress: bool = True,
    device: str = "cpu",
    dtype: str | None = None,
    neighbor_backend: str = "auto",
    trajectories: Sequence[str | os.PathLike | None] | None = None,
    logfile=None,
    pressure_bar: float = 0.0,
    layer_tolerance: float = 0.3,
    optimizer_kwargs: dict | None = None,
    dispersion: str | None = None,
) -> list[tuple[Atoms, BatchRelaxResult]]:
    """Relax many structures with ASE optimizers, one batched forward pass per step.

    Each structure gets a copy of its Atoms (constraints such as ``FixAtoms``
    kept), its own optimizer object and a :class:`BatchProxyCalculator`. At every
    step all active structures are evaluated in one batch, then each optimizer
    logs, writes its trajectory frame, checks convergence and takes one
    ``step()``, exactly as ``Optimizer.run`` would. Structures that converge or
    reach ``steps`` leave the batch and waiting ones join, keeping at most
    ``max_batch`` active. Results equal :func:`~geomformer_md.simulate.relax.relax`
    on each structure with the same optimizer (to round-off the optimizer may
    amplify), and the arguments mean the same.

    Args:
        atoms_list: structures (never modified).
        model: potential name (None = default), model file, GeoMFormer, or a
            :class:`BatchEvaluator` to reuse.
        fmax: convergence threshold on the largest per-atom force (eV/Å).
        steps: maximum optimizer steps per structure.
        optimizer: a name of ``relax.OPTIMIZERS`` (case-insensitive) or an ASE
            Optimizer class. Line-search optimizers work, but their extra
            evaluations are computed one structure at a time.
        relax_cell: relax the cell too (``FrechetCellFilter`` per structure;
            structures must be periodic in 3-D).
        fix_bottom_layers: add FixAtoms on this many lowest layers, as ``relax``.
        max_batch: most structures relaxed at the same time.
        progress: show a progress bar of finished structures.
        device, dtype, neighbor_backend: as :class:`BatchEvaluator`.
        trajectories: one trajectory path (or None) per structure.
        logfile: optimizer log shared by all (None = silent, "-" = stdout).
        pressure_bar: external pressure of the cell relaxation.
        layer_tolerance: Å, see ``fix_bottom_layers``.
        optimizer_kwargs: extra optimizer arguments (e.g. ``{"maxstep": 0.1}``).
        dispersion: "d3bj" adds PBE-D3(BJ) dispersion (see :class:`BatchEvaluator`).

    Returns:
        Per structure, in input order: a relaxed copy (with a SinglePointCalculator
        holding the final results) and a :class:`BatchRelaxResult`. A structure
        that does not converge within ``steps`` has ``converged=False``; one whose
        results turn non-finite is stopped with ``error`` set while the others go on.
    """
    if isinstance(atoms_list, Atoms):
        atoms_list = [atoms_list]
    n = len(atoms_list)
    opt_cls, opt_name = _optimizer_class(optimizer)
    if not fmax > 0:
        raise ValueError(f"fmax must be > 0, got {fmax}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps}")
    if int(max_batch) != max_batch or max_batch < 1:
        raise ValueError(f"max_batch must be an integer >= 1, got {max_batch}")
    if trajectories is not None and len(trajectories) != n:
        raise ValueError(f"got {len(trajectories)} trajectories for {n} structures")
    if isinstance(model, BatchEvaluator):
        evaluator = model
    else:
        evaluator = BatchEvaluator(model, device, dtype, neighbor_backend,
                                   dispersion=dispersion)
    for k, atoms in enumerate(atoms_list):
        evaluator._validate(atoms, k)
        if relax_cell and not (atoms.pbc.all() and atoms.cell.rank == 3):
            raise ValueError(
                f"structure {k}: relax_cell needs a cell periodic in 3 "
                f"directions; pbc={atoms.pbc.tolist()}"
            )

    def start(k: int) -> _Job:
        atoms = atoms_list[k].copy()  # copies constraints; the caller's object is untouched
        if fix_bottom_layers:
            bottom = bottom_layer_indices(atoms, int(fix_bottom_layers), layer_tolerance)
            atoms.set_constraint([*atoms.constraints, FixAtoms(indices=bottom)])
        proxy = BatchProxyCalculator(evaluator, k)
        atoms.calc = proxy
        target = atoms
        if relax_cell:
            target = FrechetCellFilter(atoms, scalar_pressure=pressure_bar * units.bar)
        traj = None if trajectories is None or trajectories[k] is None else str(trajectories[k])
        opt = opt_cls(target, logfile=logfile, trajectory=traj, **(optimizer_kwargs or {}))
        opt.fmax = fmax  # what Optimizer.run(fmax=...) sets
        opt.max_steps = int(steps)
        return _Job(k, atoms, proxy, opt, opt_name, traj)

    out: list = [None] * n

    def finish(job: _Job, final_fmax: float, error: str | None = None) -> None:
        job.opt.close()  # closes a logfile it opened
        relaxed = job.atoms.copy()
        res = {} if error else {k: v for k, v in job.proxy.results.items()
                                if k != "free_energy" and k in all_properties}  # no *_std
        if res:
            relaxed.calc = SinglePointCalculator(relaxed, **res)
        stress = res.get("stress")
        out[job.index] = (
            relaxed,
            BatchRelaxResult(
                converged=error is None and bool(final_fmax < fmax),
                steps=int(job.opt.nsteps),
                energy=float(res.get("energy", np.nan)),
                initial_energy=float(np.nan if job.initial_energy is None else job.initial_energy),
                fmax=final_fmax,
                fmax_target=float(fmax),
                optimizer=job.opt_name,
                relax_cell=bool(relax_cell),
                fixed_atoms=_fixed_indices(job.atoms),
                stress=None if stress is None else np.asarray(stress).copy(),
                trajectory=job.trajectory,
                wall_time_s=time.perf_counter() - job.t0,
                n_extra_calls=job.proxy.n_extra_calls,
                error=error,
                **job.monitor.fields(),
            ),
        )

    bar = progress_bar(n, "relax_many", progress, unit="structure")
    waiting = deque(range(n))
    active: list[_Job] = []
    try:
        while waiting or active:
            while waiting and len(active) < max_batch:
                active.append(start(waiting.popleft()))
            batch = evaluator.evaluate(
                [j.atoms for j in active], errors="return", indices=[j.index for j in active]
            )
            still = []
            for job, res in zip(active, batch, strict=True):
                if _advance(job, res, int(steps), finish):
                    bar.update(1)
                else:
                    still.append(job)
            active = still
    finally:
        bar.close()
        for job in active:  # only after an exception
            job.opt.close()
    return out


def _advance(job: _Job, res, steps: int, finish) -> bool:
    """One iteration of ``Optimizer.irun`` for one structure; True when it is done.

    ASE's loop is: gradient, log, observers, convergence check, step. The
    gradient comes from the batch results just stored in the proxy.
    """
    if isinstance(res, Exception):
        finish(job, float("nan"), error=str(res))
        return True
    opt = job.opt
    job.proxy.set_results(job.atoms, res)
    job.monitor()
    if job.initial_energy is None:
        job.initial_energy = float(res["energy"])
    try:
        gradient = opt.optimizable.get_gradient()
        opt.log(gradient)
        opt.call_observers()
        if opt.gradient_converged(gradient) or opt.nsteps >= steps:
            finish(job, float(opt.optimizable.gradient_norm(gradient)))
            return True
        opt.step()
        opt.nsteps += 1
    except (NonFiniteResultError, ValueError) as err:  # an evaluation made inside step()
        if isinstance(err, ValueError) and not str(err).startswith("structure "):
            raise  # not about this structure's geometry: a bug, do not hide it
        finish(job, float("nan"), error=str(err))
        return True
    return False
