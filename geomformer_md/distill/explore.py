"""Exploration with the committee, and the choice of frames for the teacher.

Each starting structure is explored one way: Langevin MD at one of the temperatures
(a snapshot every ``snapshot_every`` steps), a FIRE relaxation (every step), random
rattles, or a minimization (FIRE with one member to convergence; its end is the one
candidate). Every snapshot is a candidate carrying ``force_std_max``, the committee's
largest per-atom force std (eV/Å), and ``energy_std_per_atom`` (eV) in its info. A
trajectory stops early where the committee goes unphysical (atoms closer than 0.5 Å, forces
above 50 eV/Å, non-finite values): the snapshots up to there remain, and the last ones are
the most informative to label.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.optimize import FIRE

from ..simulate.md import thermalize_momenta

MIN_DISTANCE = 0.5  # Å: closer than this, a trajectory stops
MAX_FORCE = 50.0  # eV/Å


def _physical_forces(work: Atoms) -> np.ndarray | None:
    """The forces of ``work``'s calculator, or None where the structure is unphysical to it
    (the calculator fails, forces non-finite or above MAX_FORCE, atoms within MIN_DISTANCE)."""
    try:
        forces = work.get_forces()
    except Exception:  # noqa: BLE001 - any failure ends the trajectory
        return None
    if not np.isfinite(forces).all() or np.abs(forces).max() > MAX_FORCE:
        return None
    if len(work) > 1:
        d = work.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        if d.min() < MIN_DISTANCE:
            return None
    return forces


def _snapshot(atoms: Atoms, calc, trajectory: int, step: int, mode: str,
              temperature) -> Atoms | None:
    """A bare copy of the structure with its committee uncertainty, or None if unphysical."""
    work = atoms.copy()
    work.calc = calc
    if _physical_forces(work) is None:
        return None
    snap = atoms.copy()
    snap.calc = None
    snap.info.update(trajectory=trajectory, step=step, mode=mode,
                     temperature_K=float(temperature or 0.0),
                     force_std_max=float(calc.results["forces_std"].max()),
                     energy_std_per_atom=float(calc.results["energy_std"]) / len(atoms))
    return snap


def explore_structure(atoms: Atoms, calc, mode: str, cfg, rng: np.random.Generator,
                      trajectory: int, driver=None) -> list[Atoms]:
    """Candidates from one starting structure (see the module docstring). ``driver``: the
    calculator that moves the atoms in MD (default ``calc``, the committee, which always
    gives the snapshots' uncertainty)."""
    out = []
    work = atoms.copy()
    work.calc = calc
    if mode == "rattle":
        n = max(1, cfg.md_steps // cfg.snapshot_every)
        free = np.ones(len(work), bool)
        for c in work.constraints:
            free[c.get_indices()] = False
        for k in range(n):
            trial = atoms.copy()
            sigma = cfg.rattle * (k + 1) / n
            trial.positions[free] += rng.normal(0, sigma / np.sqrt(3), (int(free.sum()), 3))
            snap = _snapshot(trial, calc, trajectory, k, mode, None)
            if snap is None:
                break
            out.append(snap)
        return out
    if mode == "minimize":
        return _minimize(atoms, calc, driver if driver is not None else calc, cfg, trajectory)
    if mode == "relax":
        opt = FIRE(work, logfile=None)
        for step in range(cfg.relax_steps):
            snap = _snapshot(work, calc, trajectory, step, mode, None)
            if snap is None:
                break
            out.append(snap)
            opt.run(fmax=0.0, steps=1)
        return out
    temperature = float(rng.choice(cfg.temperatures))
    if driver is not None:
        work.calc = driver
    thermalize_momenta(work, temperature_K=temperature, rng=rng)
    dyn = Langevin(work, cfg.timestep_fs * units.fs, temperature_K=temperature,
                   friction=0.02 / units.fs, fixcm=False, rng=rng)
    for step in range(0, cfg.md_steps + 1, cfg.snapshot_every):
        snap = _snapshot(work, calc, trajectory, step, mode, temperature)
        if snap is None:
            break
        out.append(snap)
        if step < cfg.md_steps:
            dyn.run(cfg.snapshot_every)
    return out


def _minimize(atoms: Atoms, calc, driver, cfg, trajectory: int) -> list[Atoms]:
    """FIRE with ``driver`` (one member) until its largest force is below
    ``cfg.minimize_fmax`` or ``cfg.minimize_steps`` have run; the structure it ends at,
    scored by the committee, is the one candidate (``converged`` says which way it ended).
    A path that goes unphysical, or an end the committee finds unphysical, gives none."""
    work = atoms.copy()
    work.calc = driver
    opt = FIRE(work, logfile=None)
    converged, steps = False, 0
    for steps in range(cfg.minimize_steps + 1):
        forces = _physical_forces(work)
        if forces is None:
            return []
        if np.linalg.norm(forces, axis=1).max() < cfg.minimize_fmax:
            converged = True
            break
        if steps < cfg.minimize_steps:
            opt.run(fmax=0.0, steps=1)  # the forces above, cached: one call per step
    snap = _snapshot(work, calc, trajectory, steps, "minimize", None)
    if snap is None:
        return []
    snap.info["converged"] = converged
    return [snap]


def _geometry(atoms: Atoms) -> tuple[tuple, np.ndarray]:
    """(composition and cell, positions relative to their mean): two frames with the same
    key whose relative positions agree are the same structure, whatever its translation."""
    pos = atoms.get_positions()
    key = (atoms.numbers.tobytes(), np.round(atoms.cell.array, 6).tobytes(),
           atoms.pbc.tobytes())
    return key, pos - pos.mean(axis=0)


def _ordered(candidates: list[Atoms], idx: list[int], key: str, cfg,
             rng: np.random.Generator) -> list[int]:
    """``idx`` in selection order: by ``info[key]`` highest first ("uncertainty") or at
    random ("random"), then dealt round-robin over categories with ``balance: category``."""
    if not idx:
        return []
    if cfg.selection == "uncertainty":
        score = np.array([candidates[k].info[key] for k in idx])
        order = [idx[m] for m in np.lexsort((np.arange(len(idx)), -score))]  # ties: in order
    else:
        order = [idx[m] for m in rng.permutation(len(idx))]
    if cfg.balance == "category":
        groups: dict[str, list[int]] = {}
        for k in order:  # each group keeps the order above; groups by their first member
            groups.setdefault(str(candidates[k].info.get("category", "")), []).append(int(k))
        queues = list(groups.values())
        order = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]
    return order


def select_frames(candidates: list[Atoms], cfg, rng: np.random.Generator) -> list[Atoms]:
    """Up to ``frames_per_iteration`` candidates: the most uncertain first ("uncertainty")
    or in random order ("random"), at most ``max_per_trajectory`` per trajectory and at
    least ``min_separation`` snapshots apart within one (the diversity rule). A candidate
    whose atoms all lie within ``min_displacement`` of a frame already chosen (same
    composition and cell, rigid translations aside) is skipped: relaxations of perfect
    crystals do not move, and every snapshot of an isolated atom is the same structure.

    With ``balance: category`` the budget is dealt round-robin over the categories of the
    space (bulk, alloy, surface, cluster, ...; each category's candidates in the order
    above, categories by their most uncertain candidate): clusters and surfaces have larger
    forces and so larger force spreads than bulk, and a single ranking spends the whole
    budget on them.

    With ``minima_per_iteration`` that many of the budget go first to the ends of
    "minimize" explorations, ranked by the committee's energy std per atom (their forces,
    and so their force stds, are near zero by construction); the rest of the budget then
    goes as above, over every candidate left."""
    if not candidates:
        return []
    minima = [k for k, a in enumerate(candidates) if a.info.get("mode") == "minimize"]
    n_min = cfg.minima_per_iteration  # at most frames_per_iteration (the config checks)
    first = _ordered(candidates, minima, "energy_std_per_atom", cfg, rng) if n_min else []
    rest = _ordered(candidates, list(range(len(candidates))), "force_std_max", cfg, rng)
    seen: dict[int, int] = {}
    position = []  # index of each candidate within its trajectory (stored in order)
    for a in candidates:
        t = int(a.info["trajectory"])
        position.append(seen.get(t, 0))
        seen[t] = position[-1] + 1
    taken: dict[int, list[int]] = {}
    chosen: list[Atoms] = []
    picked: set[int] = set()
    kept: dict[tuple, list[np.ndarray]] = {}  # the chosen geometries, by composition and cell

    def take(k: int) -> bool:
        a = candidates[k]
        traj, idx = int(a.info["trajectory"]), position[k]
        mine = taken.setdefault(traj, [])
        if k in picked or len(mine) >= cfg.max_per_trajectory:
            return False
        if any(abs(idx - j) < cfg.min_separation for j in mine):
            return False
        if cfg.min_displacement > 0:
            key, shape = _geometry(a)
            same = kept.setdefault(key, [])
            if any(np.abs(shape - other).max() < cfg.min_displacement for other in same):
                return False  # a duplicate: the teacher would label the same structure again
            same.append(shape)
        mine.append(idx)
        picked.add(k)
        chosen.append(a)
        return True

    for k in first:
        if len(chosen) == n_min:
            break
        take(k)
    for k in rest:
        if len(chosen) == cfg.frames_per_iteration:
            break
        take(k)
    return chosen
