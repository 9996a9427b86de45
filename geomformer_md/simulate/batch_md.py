"""Batched molecular dynamics: independent replicas advanced together.

All replicas of a group live in one flat state (positions and momenta
[n_atoms, 3], float64, on the device), so one batched force call per step
serves them all and a time step is a handful of tensor operations: no
per-replica Python in the step, except Langevin's random numbers, which each
replica draws from its own numpy Generator.

The integrators are ASE's ``VelocityVerlet`` and ``Langevin(fixcm=False)``
written over the batch line for line, and the start is that of
:func:`~geomformer_md.simulate.md.run_md` (Maxwell-Boltzmann momenta from
``np.random.default_rng(seed)``, then ``Stationary``; the same Generator then
drives the Langevin noise). So each replica reproduces ``run_md`` (or ASE's
integrators) with the same seed, to round-off; tests/test_batch.py checks this.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io.trajectory import Trajectory
from ase.md.velocitydistribution import Stationary

from ..data.graph import MIN_DISTANCE, edge_vectors, trim_edges
from ..data.neighbors import VerletNeighborList
from ._progress import progress_bar
from .batch import BatchEvaluator, NonFiniteResultError, _assemble, _label

try:
    from ase.md.velocitydistribution import thermalize_momenta  # ase >= 3.29
except ImportError:  # pragma: no cover
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, *, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


ENSEMBLES = ("nve", "nvt-langevin")


def _per_replica(value, n: int, name: str) -> list:
    if np.ndim(value) == 0:
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"got {len(value)} {name} for {n} structures")
    return value


def _fixed_mask(atoms: Atoms, index: int) -> np.ndarray:
    """Atoms held by FixAtoms; other constraints are not supported here."""
    mask = np.zeros(len(atoms), dtype=bool)
    for c in atoms.constraints:
        if not isinstance(c, FixAtoms):
            raise NotImplementedError(
                f"structure {index}: constraint {type(c).__name__} is not supported by "
                "run_md_many (only FixAtoms); use run_md for it"
            )
        mask[c.index] = True
    return mask


class _Replicas:
    """A group of replicas: flat state on the device, forces from one batched call."""

    def __init__(self, atoms_list, momenta, labels, evaluator: BatchEvaluator, skin: float):
        dev = evaluator.device
        self.evaluator, self.labels, self.atoms_list = evaluator, list(labels), atoms_list
        self.graph = _assemble(atoms_list, dev)
        self.r = self.graph.positions.clone()  # [n, 3] Å, unwrapped
        self.p = torch.from_numpy(np.concatenate(momenta)).to(dev, torch.float64)  # [n, 3]
        m = np.concatenate([a.get_masses() for a in atoms_list])[:, None]
        self.m_np = m
        self.m = torch.from_numpy(m).to(dev, torch.float64)  # [n, 1] amu
        fixed = np.concatenate([_fixed_mask(a, k) for a, k in zip(atoms_list, labels, strict=True)])
        has_c = np.concatenate([np.full(len(a), bool(a.constraints)) for a in atoms_list])
        self.fixed = torch.from_numpy(fixed).to(dev)[:, None]  # [n, 1]
        self.any_fixed = bool(fixed.any())
        self.constrained = torch.from_numpy(has_c).to(dev)[:, None]  # replica has constraints
        self.any_constrained = bool(has_c.any())
        self.sizes = [len(a) for a in atoms_list]
        self.verlet = VerletNeighborList(evaluator.cutoff, skin, evaluator.neighbor_backend)
        self.forces()

    def forces(self) -> None:
        """Energies [S] and forces [n, 3] at ``self.r``; FixAtoms zeroes ``self.f``."""
        g = self.graph
        ei, sh = self.verlet.update(self.r, g.cell, g.pbc, g.system_idx)
        graph = trim_edges(
            replace(g, positions=self.r, edge_index=ei, shifts=sh), self.evaluator.cutoff
        )
        self._check(graph)
        out = self.evaluator.forward(graph, stress=False, labels=self.labels)
        self.energy, self.f_raw = out["energy"], out["forces"]
        bad = ~torch.isfinite(self.energy)
        bad |= (
            torch.zeros_like(bad).index_add_(
                0, g.system_idx, (~torch.isfinite(self.f_raw).all(1)).to(bad.dtype)
            )
            > 0
        )
        if bool(bad.any()):
            s = int(bad.nonzero()[0, 0])
            raise NonFiniteResultError(
                f"{_label(self.atoms_list[s], self.labels[s])}: non-finite "
                "energy or forces during MD"
            )
        self.f = self.f_raw.masked_fill(self.fixed, 0.0) if self.any_fixed else self.f_raw

    def _check(self, graph) -> None:
        if graph.n_edges == 0:
            return
        d = edge_vectors(graph).norm(dim=-1)
        k = int(torch.argmin(d))
        if float(d[k]) < MIN_DISTANCE:
            s = int(graph.system_idx[graph.edge_index[0, k]])
            raise ValueError(
                f"{_label(self.atoms_list[s], self.labels[s])}: atoms came closer "
                f"than {MIN_DISTANCE} Å during MD ({float(d[k]):.3g} Å)"
            )

    # ASE VelocityVerlet.step, over the batch.
    def verlet_step(self, dt: float) -> None:
        p = self.p + 0.5 * dt * self.f
        r = self.r
        r_new = r + dt * p / self.m
        if self.any_fixed:  # FixAtoms.adjust_positions
            r_new = torch.where(self.fixed, r, r_new)
        if self.any_constrained:  # first half of RATTLE, as ASE does for any constraint
            p = torch.where(self.constrained, (r_new - r) * self.m / dt, p)
        self.r = r_new
        self.forces()
        self.p = self._adjust_momenta(p + 0.5 * dt * self.f)

    # ASE Langevin.step with fixcm=False, over the batch.
    def langevin_step(self, dt: float, c: dict, rngs) -> None:
        xi, eta = [], []
        for rng, n in zip(rngs, self.sizes, strict=True):  # the order ASE draws them
            xi.append(rng.standard_normal(size=(n, 3)))
            eta.append(rng.standard_normal(size=(n, 3)))
        dev = self.r.device
        xi = torch.from_numpy(np.concatenate(xi)).to(dev)
        eta = torch.from_numpy(np.concatenate(eta)).to(dev)
        rnd_pos = c["c5"] * eta
        rnd_vel = c["c3"] * xi - c["c4"] * eta
        v = self.p / self.m
        v = v + (c["c1"] * self.f / self.m - c["c2"] * v + rnd_vel)
        x = self.r
        r_new = x + dt * v + rnd_pos
        if self.any_fixed:
            r_new = torch.where(self.fixed, x, r_new)
        v = (r_new - x - rnd_pos) / dt
        self.r = r_new
        self.forces()
        v = v + (c["c1"] * self.f / self.m - c["c2"] * v + rnd_vel)
        self.p = self._adjust_momenta(v * self.m)

    def _adjust_momenta(self, p: torch.Tensor) -> torch.Tensor:
        return p.masked_fill(self.fixed, 0.0) if self.any_fixed else p

    def snapshots(self, step: int) -> list[Atoms]:
        """Atoms copies of the current state (positions, momenta, energy, forces)."""
        r = self.r.cpu().numpy()
        p = self.p.cpu().numpy()
        f = self.f_raw.to("cpu", torch.float64).numpy()
        e = self.energy.to("cpu", torch.float64).numpy()
        out, a0 = [], 0
        for s, atoms in enumerate(self.atoms_list):
            a1 = a0 + self.sizes[s]
            snap = atoms.copy()
            snap.positions = r[a0:a1]
            snap.set_momenta(p[a0:a1], apply_constraint=False)
            snap.info["md_step"] = step
            snap.calc = SinglePointCalculator(snap, energy=float(e[s]), forces=f[a0:a1].copy())
            out.append(snap)
            a0 = a1
        return out


def _langevin_constants(dt: float, temperatures_K, friction: float, sizes, masses) -> dict:
    """ASE Langevin.updatevars per atom (temperatures per replica)."""
    temp = np.concatenate(
        [np.full(n, units.kB * t) for n, t in zip(sizes, temperatures_K, strict=True)]
    )[:, None]
    fr = friction
    sigma = np.sqrt(2 * temp * fr / masses)
    c = {
        "c1": dt / 2.0 - dt * dt * fr / 8.0,
        "c2": dt * fr / 2 - dt * dt * fr * fr / 8.0,
        "c3": np.sqrt(dt) * sigma / 2.0 - dt**1.5 * fr * sigma / 8.0,
        "c5": dt**1.5 * sigma / (2 * np.sqrt(3)),
    }
    c["c4"] = fr / 2.0 * c["c5"]
    return c


def run_md_many(
    atoms_list: Sequence[Atoms],
    temperatures_K: float | Sequence[float] = 300.0,
    timestep_fs: float = 1.0,
    steps: int = 1000,
    seeds: int | Sequence[int] | None = 0,
    ensemble: str = "nve",
    trajectories: Sequence[str | os.PathLike | None] | None = None,
    *,
    model=None,
    friction: float = 0.01,
    loginterval: int = 10,
    init_velocities: bool = True,
    skin: float = 1.0,
    max_batch: int | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    neighbor_backend: str = "auto",
    progress: bool = False,
) -> list[Atoms]:
    """Run independent MD replicas together, one batched force call per step.

    Each replica starts as :func:`~geomformer_md.simulate.md.run_md` does
    (Maxwell-Boltzmann momenta at its temperature from
    ``np.random.default_rng(seed)``, then zero total momentum) and follows ASE's
    ``VelocityVerlet`` ("nve") or ``Langevin`` with ``fixcm=False``
    ("nvt-langevin"), so it reproduces ``run_md`` with the same arguments.

    Args:
        atoms_list: starting structures (never modified); FixAtoms is the only
            constraint supported.
        temperatures_K: one temperature, or one per replica (initial velocities,
            and the Langevin target).
        timestep_fs: time step in fs.
        steps: steps per replica.
        seeds: one Generator seed per replica; an int ``s`` gives seeds
            ``s, s+1, ...``; None draws fresh entropy.
        ensemble: "nve" or "nvt-langevin".
        trajectories: one ASE trajectory path (or None) per replica; a frame
            every ``loginterval`` steps (step 0 included) with energy, forces,
            momenta and ``info["md_step"]``.
        model: potential name (None = default), model file, GeoMFormer, or a
            :class:`~geomformer_md.simulate.batch.BatchEvaluator`.
        friction: Langevin friction in 1/fs.
        loginterval: steps between trajectory frames.
        init_velocities: False keeps the momenta already on the Atoms.
        skin: Verlet skin in Å of the batched neighbour list (rebuilt when any
            atom has moved skin/2; edges beyond the cutoff are dropped before
            the model, so results do not depend on it).
        max_batch: most replicas advanced together; None packs replicas under
            the evaluator's memory-derived edge budget. Groups run one after another.
        device, dtype, neighbor_backend: as ``BatchEvaluator``.
        progress: show a progress bar of steps.

    Returns:
        The final state of each replica, in input order: Atoms with positions,
        momenta and a SinglePointCalculator (energy, forces).
    """
    if isinstance(atoms_list, Atoms):
        atoms_list = [atoms_list]
    n = len(atoms_list)
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps}")
    if int(loginterval) != loginterval or loginterval < 1:
        raise ValueError(f"loginterval must be an integer >= 1, got {loginterval}")
    if not timestep_fs > 0 or skin < 0 or friction < 0:
        raise ValueError("timestep_fs must be > 0, skin and friction >= 0")
    temps = [float(t) for t in _per_replica(temperatures_K, n, "temperatures")]
    if isinstance(seeds, (int, np.integer)):
        seeds = [int(seeds) + k for k in range(n)]
    seeds = _per_replica(seeds, n, "seeds")
    trajs = [None] * n if trajectories is None else _per_replica(trajectories, n, "trajectories")
    evaluator = (
        model
        if isinstance(model, BatchEvaluator)
        else BatchEvaluator(model, device, dtype, neighbor_backend)
    )
    for k, atoms in enumerate(atoms_list):
        evaluator._validate(atoms, k)
        _fixed_mask(atoms, k)

    # Per replica: its own Generator, initial momenta as run_md draws them.
    rngs, momenta = [], []
    for atoms, t, seed in zip(atoms_list, temps, seeds, strict=True):
        rng = np.random.default_rng(seed)
        work = atoms.copy()
        if init_velocities:
            thermalize_momenta(work, t, rng=rng)
            Stationary(work)
        rngs.append(rng)
        momenta.append(work.get_momenta())

    dt = timestep_fs * units.fs
    groups = _groups(atoms_list, evaluator, max_batch)
    final: list = [None] * n
    bar = progress_bar(int(steps) * len(groups), "run_md_many", progress)
    try:
        for group in groups:
            reps = _Replicas(
                [atoms_list[k] for k in group], [momenta[k] for k in group], group, evaluator, skin
            )
            consts = None
            if ensemble == "nvt-langevin":
                consts = _langevin_constants(
                    dt, [temps[k] for k in group], friction / units.fs, reps.sizes, reps.m_np
                )
                consts = {
                    k: torch.as_tensor(v, dtype=torch.float64, device=evaluator.device)
                    if isinstance(v, np.ndarray)
                    else v
                    for k, v in consts.items()
                }
            writers = {k: Trajectory(str(trajs[k]), "w") for k in group if trajs[k] is not None}
            try:
                _write(reps, group, writers, 0)
                for step in range(1, int(steps) + 1):
                    if consts is None:
                        reps.verlet_step(dt)
                    else:
                        reps.langevin_step(dt, consts, [rngs[k] for k in group])
                    if step % loginterval == 0:
                        _write(reps, group, writers, step)
                    bar.update(1)
            finally:
                for w in writers.values():
                    w.close()
            for k, snap in zip(group, reps.snapshots(int(steps)), strict=True):
                final[k] = snap
    finally:
        bar.close()
    return final


def _write(reps: _Replicas, group, writers, step: int) -> None:
    if writers:
        for k, snap in zip(group, reps.snapshots(step), strict=True):
            if k in writers:
                writers[k].write(snap)


def _groups(atoms_list, evaluator: BatchEvaluator, max_batch: int | None) -> list[list[int]]:
    """Replicas advanced together: ``max_batch`` at a time, or packed by edge budget."""
    n = len(atoms_list)
    if max_batch is not None:
        if int(max_batch) != max_batch or max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {max_batch}")
        return [list(range(s, min(s + max_batch, n))) for s in range(0, n, max_batch)]
    # Edges at the start, plus 20 % for density fluctuations during the run.
    graph = evaluator._graph(atoms_list, list(range(n)))
    per_sys = torch.bincount(graph.system_idx[graph.edge_index[0]], minlength=n)
    cost = (1.2 * (per_sys + graph.atoms_per_system())).tolist()
    budget = evaluator.max_edges()
    groups, cur, acc = [], [], 0.0
    for k, c in enumerate(cost):
        if cur and acc + c > budget:
            groups.append(cur)
            cur, acc = [], 0.0
        cur.append(k)
        acc += c
    groups.append(cur)
    return groups
