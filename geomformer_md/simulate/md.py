"""Molecular dynamics on ASE's integrators, with a CSV log, a trajectory, a progress bar
and exact resume after a crash.

>>> from geomformer_md.simulate.md import run_md
>>> result = run_md(atoms, ensemble="nvt-langevin", temperature_K=300, steps=10_000)

Files of one run (``trajectory="md.traj"``, ``log="md.log"``):

- ``md.traj``: ASE trajectory, one frame every ``loginterval`` steps (step 0 included),
  with energy, forces, stress (if computed) and momenta; ``atoms.info["md_step"]`` is the step.
- ``md.log``: CSV, one row per frame: step, time_ps, epot_eV, ekin_eV, etot_eV,
  temperature_K (+ volume_A3, pressure_bar for NPT; pressure includes the kinetic term).
- ``md.restart.npz``: the checkpoint, rewritten atomically (temp file + os.replace) every
  ``restart_interval`` steps: positions, momenta, cell, step, thermostat/barostat state and
  the random generator's state. Its ``meta`` JSON says ``"completed": true`` only once the
  run has reached its target; see `read_md_restart`.

Re-runs never return another run's results. When the output files already exist,
``run_md`` continues (or, if finished, returns) the stored run only when asked
(``resume=True``) or when the stored run was made with exactly this request (settings, seed,
starting structure, constraints, calculator); otherwise it raises `RunConflictError` naming
the files and the ways out (``resume=True``, ``overwrite=True``, other file names) and
changes nothing. A resumed run drops the frames and log rows written after its checkpoint
first, so the files end up exactly as in an uninterrupted run: bit-for-bit for a
deterministic calculator, to float round-off for ours (the neighbour list is rebuilt on
resume, which may change summation order).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io.trajectory import Trajectory
from ase.md.bussi import Bussi
from ase.md.langevin import Langevin
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.md import MolecularDynamics
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import Stationary
from ase.md.verlet import VelocityVerlet

from ..committee import UncertaintyMonitor
from ..data.contacts import CLOSE_CONTACT_RATIO, closest_contact
from ..io.files import atomic_open, atomic_path, write_text
from ._progress import progress_bar
from .relax import bottom_layer_indices, make_calculator
from .runfiles import RunConflictError, calculator_id, existing, structure_id

try:
    from ase.md.velocitydistribution import thermalize_momenta  # ase >= 3.29
except ImportError:  # pragma: no cover
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    def thermalize_momenta(atoms, temperature_K, *, rng=None):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


ENSEMBLES = ("nve", "nvt-langevin", "nvt-nose-hoover", "nvt-bussi", "npt", "npt-berendsen")
NPT_ENSEMBLES = ("npt", "npt-berendsen")

# Restart-file format. 1: first version. 2: meta["request"] (what made the run, to tell a
# re-run of the same request from another run) and meta["min_bond_ratio"].
RESTART_VERSION = 2

# Settings a resumed run must share with the run that wrote the checkpoint, per ensemble
# (initial-velocity settings such as seed do not matter once a checkpoint exists).
_MUST_MATCH = ("ensemble", "timestep_fs", "loginterval")
_ENSEMBLE_SETTINGS = {
    "nve": (),
    "nvt-langevin": ("temperature_K", "friction"),
    "nvt-nose-hoover": ("temperature_K", "taut_fs"),
    "nvt-bussi": ("temperature_K", "taut_fs"),
    "npt": ("temperature_K", "friction", "pressure_bar", "taup_fs", "isotropic"),
    "npt-berendsen": (
        "temperature_K",
        "taut_fs",
        "pressure_bar",
        "taup_fs",
        "compressibility_per_bar",
    ),
}


@dataclass(frozen=True)
class MDSettings:
    """The physical and bookkeeping settings of a run, validated on construction."""

    ensemble: str
    temperature_K: float
    timestep_fs: float
    steps: int
    loginterval: int
    restart_interval: int | None  # None: the first multiple of loginterval >= 100
    friction: float  # 1/fs
    taut_fs: float
    pressure_bar: float
    taup_fs: float
    compressibility_per_bar: float
    isotropic: bool
    seed: int | None  # None: fresh entropy

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {self.ensemble!r}; valid: {', '.join(ENSEMBLES)}")
        _check(
            math.isfinite(self.timestep_fs) and self.timestep_fs > 0,
            f"timestep_fs must be > 0, got {self.timestep_fs}",
        )
        _check(
            math.isfinite(self.temperature_K) and self.temperature_K >= 0,
            f"temperature_K must be >= 0, got {self.temperature_K}",
        )
        _check(
            _is_int(self.steps) and self.steps >= 0,
            f"steps must be an integer >= 0, got {self.steps}",
        )
        _check(
            _is_int(self.loginterval) and self.loginterval >= 1,
            f"loginterval must be an integer >= 1, got {self.loginterval}",
        )
        if self.restart_interval is None:
            object.__setattr__(
                self, "restart_interval", self.loginterval * math.ceil(100 / self.loginterval)
            )
        _check(
            _is_int(self.restart_interval)
            and self.restart_interval >= 1
            and self.restart_interval % self.loginterval == 0,
            f"restart_interval must be a positive multiple of loginterval={self.loginterval}, "
            f"got {self.restart_interval}",
        )
        for name in ("steps", "loginterval", "restart_interval"):
            object.__setattr__(self, name, int(getattr(self, name)))  # numpy ints -> JSON-able
        if self.seed is not None:
            object.__setattr__(self, "seed", int(self.seed))
        used = _ENSEMBLE_SETTINGS[self.ensemble]
        for name in ("friction", "taut_fs", "taup_fs", "compressibility_per_bar"):
            if name in used:
                value = getattr(self, name)
                _check(
                    math.isfinite(value) and value > 0,
                    f"{name} must be > 0 for ensemble {self.ensemble!r}, got {value}",
                )
        if "pressure_bar" in used:
            _check(
                math.isfinite(self.pressure_bar),
                f"pressure_bar must be finite, got {self.pressure_bar}",
            )

    def must_match(self) -> dict:
        keys = _MUST_MATCH + _ENSEMBLE_SETTINGS[self.ensemble]
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class MDResult:
    """What `run_md` did. The atoms carry a SinglePointCalculator with the final results."""

    atoms: Atoms  # final state (a copy), momenta included
    ensemble: str
    steps_done: int  # steps of the whole run, including those before a resume
    steps_this_call: int
    resumed_from: int | None  # checkpoint step this call started from (None: fresh start)
    completed: bool  # reached the target number of steps
    time_ps: float  # simulated time of the whole run
    mean_temperature_K: float  # average over logged steps > 0, whole run (nan if none)
    final_temperature_K: float
    trajectory: Path | None
    log: Path | None
    restart: Path | None
    wall_time_s: float
    # closest approach over the logged frames, as a fraction of the covalent bond length
    # (geomformer_md.data.contacts); close_contact: below CLOSE_CONTACT_RATIO at some frame
    min_bond_ratio: float = math.inf
    close_contact: bool = False
    close_contact_step: int | None = None  # the first logged step below the ratio
    # With a committee potential: the largest per-atom force std over the whole run (eV/Å;
    # nan for a single model) and whether it passed the calculator's uncertainty_threshold.
    max_force_std: float = math.nan
    uncertain: bool = False


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


# ---------------------------------------------------------------- integrators and their state


def make_dynamics(atoms: Atoms, s: MDSettings, rng: np.random.Generator) -> MolecularDynamics:
    """The ASE integrator for ``s.ensemble`` (no files attached). Units converted here, once."""
    dt, T = s.timestep_fs * units.fs, s.temperature_K
    if s.ensemble == "nve":
        return VelocityVerlet(atoms, dt)
    if s.ensemble == "nvt-langevin":
        # fixcm=False: ASE deprecates fixcm=True (it biases the sampled distribution)
        return Langevin(
            atoms, dt, temperature_K=T, friction=s.friction / units.fs, fixcm=False, rng=rng
        )
    if s.ensemble == "nvt-nose-hoover":
        return NoseHooverChainNVT(atoms, dt, temperature_K=T, tdamp=s.taut_fs * units.fs)
    if s.ensemble == "nvt-bussi":
        return Bussi(atoms, dt, temperature_K=T, taut=s.taut_fs * units.fs, rng=rng)
    if s.ensemble == "npt":
        # Langevin BAOAB for atoms + Langevin-Hoover for the cell: a correct NPT ensemble
        # whose friction on the cell damps the volume oscillations Nose-Hoover/MTK barostats
        # ring with. Stress is minus pressure, hence the sign.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using heuristic P_mass")
            return LangevinBAOAB(
                atoms,
                dt,
                temperature_K=T,
                externalstress=-s.pressure_bar * units.bar,
                hydrostatic=s.isotropic,
                T_tau=units.fs / s.friction,
                P_tau=s.taup_fs * units.fs,
                rng=rng,
            )
    assert s.ensemble == "npt-berendsen"
    return NPTBerendsen(
        atoms,
        dt,
        temperature_K=T,
        pressure_au=s.pressure_bar * units.bar,
        taut=s.taut_fs * units.fs,
        taup=s.taup_fs * units.fs,
        compressibility_au=s.compressibility_per_bar / units.bar,
    )


def _dynamics_state(dyn: MolecularDynamics) -> dict[str, np.ndarray]:
    """Integrator variables beyond positions/momenta/cell/RNG that a resume needs."""
    if isinstance(dyn, NoseHooverChainNVT):
        th = dyn._thermostat  # no public accessor in ASE 3.29
        return {"nhc_eta": th._eta.copy(), "nhc_p_eta": th._p_eta.copy()}
    if isinstance(dyn, LangevinBAOAB) and dyn.externalstress is not None:
        # force_eps is computed mid-step from the kinetic energy before the last half-kick,
        # so recomputing it from the checkpoint would differ: store it.
        return {
            "baoab_p_eps": np.array(dyn.p_eps, float),
            "baoab_force_eps": np.array(dyn.force_eps, float),
        }
    if isinstance(dyn, Bussi):
        return {"bussi_transferred_energy": np.array(dyn.transferred_energy, float)}
    return {}


def _restore_dynamics_state(dyn: MolecularDynamics, arrays: dict[str, np.ndarray]) -> None:
    def value(a):
        return float(a) if a.ndim == 0 else a.copy()

    if isinstance(dyn, NoseHooverChainNVT):
        dyn._thermostat._eta[:] = arrays["nhc_eta"]
        dyn._thermostat._p_eta[:] = arrays["nhc_p_eta"]
    elif isinstance(dyn, LangevinBAOAB) and dyn.externalstress is not None:
        dyn.p_eps = value(arrays["baoab_p_eps"])
        dyn.force_eps = value(arrays["baoab_force_eps"])
    elif isinstance(dyn, Bussi):
        dyn.transferred_energy = value(arrays["bussi_transferred_energy"])


# ---------------------------------------------------------------- files


def _fsync(fh) -> None:
    try:
        fh.flush()
        os.fsync(fh.fileno())
    except (AttributeError, OSError, ValueError):
        pass


def _atomic_savez(path: Path, arrays: dict, meta: dict) -> None:
    with atomic_open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)


def read_md_restart(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a restart file; ``meta["completed"]`` marks a finished run."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if k != "meta"}
        meta = json.loads(str(data["meta"]))
    if meta.get("version", 0) > RESTART_VERSION:
        raise ValueError(
            f"{path} has restart format version {meta['version']}; this "
            f"geomformer-md reads up to {RESTART_VERSION}"
        )
    return meta, arrays


def _count_frames(path: Path) -> int:
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    with Trajectory(str(path)) as traj:
        return len(traj)


def _truncate_trajectory(path: Path, n_keep: int) -> None:
    """Keep the first n_keep frames (rewritten to a temp file, then renamed over)."""
    if _count_frames(path) == n_keep:
        return
    with atomic_path(path) as tmp, Trajectory(str(path)) as src, \
            Trajectory(str(tmp), "w") as dst:
        for i in range(n_keep):
            dst.write(src[i])


def _truncate_log(path: Path, last_step: int, header: str) -> None:
    """Keep the header and the complete rows with step <= last_step."""
    lines = path.read_text().splitlines(keepends=True) if path.is_file() else []
    keep = [header]
    for line in lines[1:]:
        if not line.endswith("\n"):
            break  # a row cut off by the crash
        try:
            step = int(line.split(",", 1)[0])
        except ValueError:
            break
        if step <= last_step:
            keep.append(line)
    write_text(path, "".join(keep))


def log_columns(npt: bool) -> list[str]:
    """The columns of the CSV log, in order. A new column: add it here and in `_Recorder.row`."""
    cols = ["step", "time_ps", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]
    if npt:
        cols += ["volume_A3", "pressure_bar"]  # pressure includes the kinetic term
    return cols + ["min_bond_ratio"]  # closest pair / covalent bond length (data.contacts)


def _results(atoms: Atoms) -> dict:
    """The calculator's results for the current state, copied."""
    atoms.get_potential_energy()
    atoms.get_forces()
    return {
        k: (v.copy() if isinstance(v, np.ndarray) else v)
        for k, v in atoms.calc.results.items()
        if k in ("energy", "free_energy", "forces", "stress", "energies")
    }


def _with_results(atoms: Atoms, results: dict) -> Atoms:
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, **results)
    return out


def _set_state(atoms: Atoms, arrays: dict[str, np.ndarray]) -> None:
    """Cell, positions and momenta of a checkpoint, exactly (no constraint adjustment)."""
    atoms.set_cell(arrays["cell"], scale_atoms=False)
    atoms.set_positions(arrays["positions"], apply_constraint=False)
    atoms.set_momenta(arrays["momenta"], apply_constraint=False)


def _output_paths(trajectory, log, restart_file) -> tuple[Path | None, Path | None, Path | None]:
    traj = None if trajectory is None else Path(trajectory)
    log = None if log is None else Path(log)
    if restart_file is not None:
        restart = Path(restart_file)
    else:
        base = traj or log
        restart = None if base is None else base.with_suffix(".restart.npz")
    named = [p.resolve() for p in (traj, log, restart) if p is not None]
    _check(
        len(set(named)) == len(named), "trajectory, log and restart_file must be different files"
    )
    return traj, log, restart


# ---------------------------------------------------------------- which run the files belong to


def _request(s: MDSettings, atoms: Atoms, init_velocities: bool, t_init: float) -> dict:
    """What makes a run this run (JSON-able): settings, the starting structure (positions,
    cell, pbc, constraints; momenta when kept) and the calculator."""
    return {
        "settings": asdict(s),
        "init_velocities": bool(init_velocities),
        "initial_temperature_K": float(t_init),
        "structure": structure_id(atoms, momenta=not init_velocities),
        "calculator": calculator_id(atoms.calc),
    }


def _difference(old: dict | None, new: dict) -> dict:
    """How a stored request differs from this one, as RunConflictError keyword arguments
    (empty when identical)."""
    if old is None:
        return {"reason": "from a run of an older geomformer-md that did not record its settings"}
    if new["settings"]["seed"] is None:  # fresh entropy: never the same run twice
        return {"reason": "from an earlier run (with seed=None every run is a new one)"}
    for key, value in new["settings"].items():
        if old["settings"].get(key) != value:
            return {"setting": (key, old["settings"].get(key), value)}
    for key in ("init_velocities", "initial_temperature_K"):
        if old.get(key) != new[key]:
            return {"setting": (key, old.get(key), new[key])}
    if old.get("structure") != new["structure"]:
        return {
            "reason": "from a run that started from another structure "
            "(positions, cell, constraints or momenta)"
        }
    if old.get("calculator") != new["calculator"]:
        return {"reason": "from a run with another calculator or potential"}
    return {}


def _prior_run(s: MDSettings, request: dict, numbers, paths, resume, overwrite):
    """``(meta, arrays)`` of the stored run this call continues, or None for a fresh start.

    Raises RunConflictError (changing nothing) when files exist that this call may not
    continue or replace; see `run_md`'s ``resume`` and ``overwrite``. Reads only.
    """
    traj, log, restart = paths
    found = existing(paths)
    if not found or overwrite:
        return None
    if resume is False:
        _refuse(found, reason="from an earlier run", can_resume=False)
    if restart is None or not restart.is_file():
        _refuse(found, reason="from a run without a checkpoint to resume from", can_resume=False)
    meta, arrays = read_md_restart(restart)
    for key, new in s.must_match().items():  # these change the dynamics: no continuing
        old = meta["settings"].get(key)
        if old != new:
            _refuse(found, setting=(key, old, new), can_resume=False)
    if not np.array_equal(arrays["numbers"], numbers):
        _refuse(found, reason="from a run on different atoms", can_resume=False)
    if meta["step"] > s.steps:
        _refuse(found, setting=("steps", meta["steps_target"], s.steps), can_resume=False)
    if resume is None:  # not asked: only the identical request continues
        diff = _difference(meta.get("request"), request)
        if diff:
            _refuse(found, **diff)
    if traj is not None:
        n_have, n_need = _count_frames(traj), meta["step"] // s.loginterval + 1
        if n_have < n_need:
            _refuse(
                found,
                reason=f"from a run whose trajectory has {n_have} frames where its checkpoint "
                f"at step {meta['step']} needs {n_need}",
                can_resume=False,
            )
    if _stored_columns(log, s) is None:
        _refuse(found, reason="from a run whose log has unknown columns", can_resume=False)
    return meta, arrays


def _stored_columns(log: Path | None, s: MDSettings) -> list[str] | None:
    """The columns a continued run writes: the stored log's own (a log of an older version
    lacks newer columns; its rows keep its layout), or None if it has columns we do not
    know or is not a log."""
    columns = log_columns(s.ensemble in NPT_ENSEMBLES)
    if log is None or not log.is_file():
        return columns
    with open(log) as fh:
        stored = fh.readline().strip().split(",")
    if stored == [""]:
        return columns
    return stored if stored[:2] == columns[:2] and set(stored) <= set(columns) else None


def _refuse(files, **kwargs):
    raise RunConflictError(files, **kwargs)


class _Recorder:
    """Trajectory frames, log rows, checkpoints and the progress display of one run.

    Attached to the dynamics in this order, so that at a step that is due for all three, the
    frame and the row are on disk before the checkpoint that vouches for them.
    """

    def __init__(self, dyn, s, rng, paths, start, stats: dict, request: dict, progress: bool):
        self.dyn, self.s, self.rng, self.start, self.request = dyn, s, rng, start, request
        self.traj_path, self.log_path, self.restart_path = paths
        self.columns = log_columns(s.ensemble in NPT_ENSEMBLES)  # a resumed run: the log's
        # running over logged steps: temperature sum and count (steps > 0), closest contact
        self.t_sum, self.t_count = stats.get("t_sum", 0.0), stats.get("t_count", 0)
        self.min_ratio = stats.get("min_bond_ratio", math.inf)
        self.close_step = stats.get("close_contact_step")
        self.uncertainty = UncertaintyMonitor(dyn.atoms.calc, stats.get("max_force_std", math.nan),
                                              stats.get("max_force_std_ratio"))
        self.npt = s.ensemble in NPT_ENSEMBLES
        self.traj = self.log_fh = None
        self.bar = progress_bar(s.steps, f"MD {s.ensemble}", progress, initial=start)

    def open(self, resumed: bool) -> None:
        """Create (fresh run) or cut back to the checkpoint (resumed run) the output files."""
        if not resumed:
            if self.restart_path is not None:
                # a stale checkpoint must not outlive the files it vouches for
                self.restart_path.unlink(missing_ok=True)
            if self.log_path is not None:
                self.log_path.write_text(",".join(self.columns) + "\n")
        else:
            if self.traj_path is not None:
                _truncate_trajectory(self.traj_path, self.start // self.s.loginterval + 1)
            if self.log_path is not None:
                self.columns = _stored_columns(self.log_path, self.s)  # checked by _prior_run
                _truncate_log(self.log_path, self.start, ",".join(self.columns) + "\n")
        if self.traj_path is not None:
            self.traj = Trajectory(str(self.traj_path), "a" if resumed else "w")
        if self.log_path is not None:
            self.log_fh = open(self.log_path, "a", buffering=1)

    def attach(self, callback) -> None:
        dyn, s = self.dyn, self.s
        if self.traj is not None:
            dyn.attach(self.frame, interval=s.loginterval)
        dyn.attach(self.row, interval=s.loginterval)
        dyn.attach(self.checkpoint, interval=s.restart_interval)
        dyn.attach(self.tick, interval=1, callback=callback)

    def frame(self) -> None:
        atoms = self.dyn.atoms
        atoms.info["md_step"] = self.dyn.nsteps
        self.traj.write(atoms)

    def row(self) -> None:
        atoms, n = self.dyn.atoms, self.dyn.nsteps
        epot, ekin, temp = (
            atoms.get_potential_energy(),
            atoms.get_kinetic_energy(),
            atoms.get_temperature(),
        )
        if n > 0:
            self.t_sum, self.t_count = self.t_sum + temp, self.t_count + 1
        ratio = closest_contact(atoms).ratio
        if ratio < self.min_ratio:
            self.min_ratio = ratio
        if ratio < CLOSE_CONTACT_RATIO and self.close_step is None:
            self.close_step = n
        if self.log_fh is not None:
            values = {
                "step": n,
                "time_ps": n * self.s.timestep_fs / 1000,
                "epot_eV": epot,
                "ekin_eV": ekin,
                "etot_eV": epot + ekin,
                "temperature_K": temp,
                "min_bond_ratio": ratio,
            }
            if self.npt:
                stress = atoms.get_stress(voigt=False, include_ideal_gas=True)
                values["volume_A3"] = atoms.get_volume()
                values["pressure_bar"] = -np.trace(stress) / 3 / units.bar
            row = [values[c] for c in self.columns]
            self.log_fh.write(
                ",".join(str(x) if isinstance(x, int) else f"{x:.12g}" for x in row) + "\n"
            )
        self.bar.set_postfix(T=f"{temp:.1f}K", Etot=f"{epot + ekin:.4f}", refresh=False)

    def checkpoint(self, completed: bool = False) -> None:
        if self.restart_path is None:
            return
        for fh in (None if self.traj is None else self.traj.backend.fd, self.log_fh):
            if fh is not None:
                _fsync(fh)  # what the checkpoint vouches for is on disk before it
        atoms = self.dyn.atoms
        arrays = {
            "positions": atoms.positions,
            "momenta": atoms.get_momenta(),
            "cell": np.asarray(atoms.cell),
            "numbers": atoms.numbers,
            **{f"result_{k}": np.asarray(v) for k, v in _results(atoms).items()},
            **_dynamics_state(self.dyn),
        }
        meta = {
            "version": RESTART_VERSION,
            "step": int(self.dyn.nsteps),
            "steps_target": self.s.steps,
            "completed": completed,
            "settings": asdict(self.s),
            "request": self.request,
            "t_sum": self.t_sum,
            "t_count": self.t_count,
            "min_bond_ratio": self.min_ratio,
            "close_contact_step": self.close_step,
            "max_force_std": self.uncertainty.max,
            "max_force_std_ratio": self.uncertainty.max_ratio,
            "rng_state": self.rng.bit_generator.state,
        }
        _atomic_savez(self.restart_path, arrays, meta)

    def tick(self, callback) -> None:
        self.uncertainty()
        if self.dyn.nsteps > self.start:
            self.bar.update(1)
        if callback is not None:
            callback(self.dyn.atoms, self.dyn.nsteps)

    def finish(self) -> None:
        """Mark the run complete (after syncing every frame and row), then close."""
        self.checkpoint(completed=True)
        self.close()

    def close(self) -> None:
        if self.traj is not None:
            self.traj.close()
            self.traj = None
        if self.log_fh is not None:
            self.log_fh.close()
            self.log_fh = None
        self.bar.close()

    def mean_temperature(self) -> float:
        return self.t_sum / self.t_count if self.t_count else float("nan")


# ---------------------------------------------------------------- the driver


def run_md(
    atoms: Atoms,
    calculator=None,
    ensemble: str = "nvt-langevin",
    temperature_K: float = 300.0,
    timestep_fs: float = 1.0,
    steps: int = 1000,
    trajectory: str | os.PathLike | None = "md.traj",
    log: str | os.PathLike | None = "md.log",
    loginterval: int = 10,
    friction: float = 0.01,
    taut_fs: float = 100.0,
    pressure_bar: float = 1.0,
    taup_fs: float = 1000.0,
    compressibility_per_bar: float = 1e-6,
    seed: int | None = 0,
    progress: bool = True,
    resume: bool | None = None,
    skin: float = 1.0,
    *,
    overwrite: bool = False,
    fix_bottom_layers: int | None = None,
    isotropic: bool = False,
    restart_interval: int | None = None,
    restart_file: str | os.PathLike | None = None,
    init_velocities: bool = True,
    initial_temperature_K: float | None = None,
    callback: Callable[[Atoms, int], None] | None = None,
) -> MDResult:
    """Run molecular dynamics; the input atoms are never modified.

    Ensembles (ASE integrators):
        "nvt-langevin" (the default, as on the command line: ``temperature_K`` means what
        it says from the first step on, whatever the starting structure): Langevin
        (friction, fixcm=False). "nve": VelocityVerlet (a constant-energy run starting from
        Maxwell-Boltzmann velocities at ``temperature_K`` settles near half of it once the
        kinetic energy shares out with the potential energy).
        "nvt-nose-hoover": NoseHooverChainNVT (taut_fs). "nvt-bussi": Bussi (taut_fs).
        "npt": LangevinBAOAB with a Langevin-Hoover barostat (friction for the atoms,
        taup_fs for the cell; full cell, or volume only with isotropic=True).
        "npt-berendsen": NPTBerendsen (taut_fs, taup_fs, compressibility_per_bar); isotropic,
        does not sample NPT exactly, but robust for equilibration.

    Args:
        atoms: the starting structure (constraints kept). NPT needs a 3-D periodic cell.
        calculator: an ASE calculator, a potential name or model path, or None for the
            default shipped potential. A GeoMFormerCalculator created here gets
            ``skin`` (Å): its neighbour list is reused until an atom has moved skin/2
            (NPT changes the cell every step, which forces a rebuild every step).
        temperature_K: thermostat target and Maxwell-Boltzmann temperature of the initial
            velocities (also for NVE).
        timestep_fs, steps: time step and TOTAL number of steps of the run (a resumed run
            does the remaining ones; a larger ``steps`` with ``resume=True`` extends a
            completed run).
        trajectory, log: output files (None to skip), written every ``loginterval`` steps.
        friction: Langevin friction in 1/fs ("nvt-langevin", "npt").
        taut_fs, taup_fs: thermostat and barostat time constants.
        pressure_bar: NPT target pressure. compressibility_per_bar: NPTBerendsen only.
        seed: seeds one numpy Generator used for the initial velocities and then the noise.
        progress: progress display with temperature and total energy: a bar on a terminal,
            plain lines every 30 s or so where stderr is a file.
        resume: what to do when the output files exist. None (default): continue the stored
            run (or return it, if complete) only if it was made with exactly this request
            (settings, seed, starting structure, constraints, calculator); otherwise raise
            `RunConflictError` and change nothing. True: continue the stored run whatever
            its seed, starting structure or length (settings that change the dynamics must
            still match); with no files, start fresh. False: never continue (a conflict if
            files exist, unless ``overwrite``).
        skin: Verlet skin of a GeoMFormerCalculator created here (see ``calculator``).
        overwrite: start over, replacing existing output files.
        fix_bottom_layers: hold the N lowest atomic layers fixed (FixAtoms), as in `relax`.
        isotropic: "npt" scales the volume only.
        restart_interval: steps between checkpoints, a multiple of loginterval
            (default: the first multiple >= 100).
        restart_file: default: the trajectory (else the log) name with suffix ".restart.npz".
        init_velocities: False keeps the momenta already on ``atoms``.
        initial_temperature_K: temperature of the initial velocities if not temperature_K
            (e.g. a cold start for a thermostat test).
        callback: called as ``callback(atoms, step)`` after every step, after the files are
            written. An exception it raises stops the run, which can then be resumed.

    Returns:
        An `MDResult`. ``min_bond_ratio`` / ``close_contact`` report the closest approach
        of two atoms over the logged frames (`geomformer_md.data.contacts`); a run that
        flags a close contact went far outside any training data.

    Raises:
        ValueError: bad settings or structure (NaN positions, unknown elements, atoms on
            top of each other: the starting state is evaluated before any file is created
            or changed). RunConflictError (a ValueError): the output files belong to
            another run.
    """
    t_start = time.perf_counter()
    s = MDSettings(
        ensemble=str(ensemble).lower(),
        temperature_K=float(temperature_K),
        timestep_fs=float(timestep_fs),
        steps=steps,
        loginterval=loginterval,
        restart_interval=restart_interval,
        friction=float(friction),
        taut_fs=float(taut_fs),
        pressure_bar=float(pressure_bar),
        taup_fs=float(taup_fs),
        compressibility_per_bar=float(compressibility_per_bar),
        isotropic=bool(isotropic),
        seed=seed,
    )
    _check(len(atoms) > 0, "atoms is empty")
    _check(len(atoms) > 1, "atoms has one atom: MD keeps the centre of mass at rest, which leaves "
           "a single atom nothing to move; repeat the cell, e.g. atoms * (3, 3, 3)")
    _check(
        bool(np.isfinite(atoms.positions).all()),
        f"atoms has NaN or inf positions (atoms "
        f"{np.where(~np.isfinite(atoms.positions).all(axis=1))[0][:10].tolist()})",
    )
    _check(bool(np.isfinite(atoms.cell[:]).all()), "atoms has a NaN or inf cell")
    t_init = s.temperature_K if initial_temperature_K is None else float(initial_temperature_K)
    _check(
        math.isfinite(t_init) and t_init >= 0, f"initial_temperature_K must be >= 0, got {t_init}"
    )
    _check(skin >= 0, f"skin must be >= 0, got {skin}")
    _check(resume in (None, True, False), f"resume must be None, True or False, got {resume!r}")
    if fix_bottom_layers is not None:
        _check(
            _is_int(fix_bottom_layers) and fix_bottom_layers >= 0,
            f"fix_bottom_layers must be an integer >= 0, got {fix_bottom_layers}",
        )
    if s.ensemble in NPT_ENSEMBLES:
        _check(
            bool(atoms.pbc.all()) and atoms.cell.rank == 3 and atoms.get_volume() > 0,
            f"ensemble {s.ensemble!r} needs a cell periodic in 3 directions; "
            f"got pbc={atoms.pbc.tolist()}, cell rank {atoms.cell.rank}",
        )
    paths = _output_paths(trajectory, log, restart_file)

    # ---- the system (may still raise: no file touched yet)
    md_atoms = atoms.copy()
    if fix_bottom_layers:
        bottom = bottom_layer_indices(md_atoms, int(fix_bottom_layers))
        md_atoms.set_constraint([*md_atoms.constraints, FixAtoms(indices=bottom)])
    md_atoms.calc = make_calculator(calculator, skin=skin)
    request = _request(s, md_atoms, init_velocities, t_init)
    prior = _prior_run(s, request, md_atoms.numbers, paths, resume, overwrite)

    if prior is not None and prior[0]["completed"] and prior[0]["step"] == s.steps:
        meta, arrays = prior  # nothing left to do: report the finished run, touch no file
        done = atoms.copy()
        _set_state(done, arrays)
        results = {
            k[len("result_") :]: (float(v) if v.ndim == 0 else v)
            for k, v in arrays.items()
            if k.startswith("result_")
        }
        return MDResult(
            atoms=_with_results(done, results),
            ensemble=s.ensemble,
            steps_done=s.steps,
            steps_this_call=0,
            resumed_from=s.steps,
            completed=True,
            time_ps=s.steps * s.timestep_fs / 1000,
            mean_temperature_K=meta["t_sum"] / meta["t_count"] if meta["t_count"] else float("nan"),
            final_temperature_K=done.get_temperature(),
            trajectory=paths[0],
            log=paths[1],
            restart=paths[2],
            wall_time_s=time.perf_counter() - t_start,
            **_contact_fields(meta.get("min_bond_ratio", math.inf), meta.get("close_contact_step")),
            **UncertaintyMonitor(atoms.calc, meta.get("max_force_std", math.nan),
                                 meta.get("max_force_std_ratio")).fields(),
        )

    # ---- its integrator and starting state
    rng = np.random.default_rng(s.seed)
    if prior is not None:
        _set_state(md_atoms, prior[1])
        rng.bit_generator.state = prior[0]["rng_state"]
    elif init_velocities:
        thermalize_momenta(md_atoms, t_init, rng=rng)  # Maxwell-Boltzmann
        Stationary(md_atoms)  # zero total momentum: the system as a whole does not drift
    if s.ensemble == "nvt-bussi":
        _check(
            md_atoms.get_kinetic_energy() > 0,
            "nvt-bussi rescales velocities and needs a nonzero initial kinetic energy "
            "(initial temperature > 0, or init_velocities=False with momenta set)",
        )
    dyn = make_dynamics(md_atoms, s, rng)
    start, stats = 0, {}
    if prior is not None:
        _restore_dynamics_state(dyn, prior[1])
        start, stats = prior[0]["step"], prior[0]
        dyn.nsteps = start  # also keeps ASE from logging step 0 again
    # The starting state's energy and forces (cached for the first step): a structure the
    # calculator refuses (unknown element, overlapping atoms) fails here, before any file.
    md_atoms.get_forces()
    if s.ensemble in NPT_ENSEMBLES:
        md_atoms.get_stress()

    # ---- files: from here on a crash leaves a resumable run that is not marked complete
    rec = _Recorder(dyn, s, rng, paths, start, stats, request, progress)
    try:
        rec.open(resumed=prior is not None)
        rec.attach(callback)
        dyn.run(s.steps - start)
        rec.finish()
    finally:
        rec.close()

    return MDResult(
        atoms=_with_results(md_atoms, _results(md_atoms)),
        ensemble=s.ensemble,
        steps_done=dyn.nsteps,
        steps_this_call=dyn.nsteps - start,
        resumed_from=None if prior is None else start,
        completed=True,
        time_ps=dyn.nsteps * s.timestep_fs / 1000,
        mean_temperature_K=rec.mean_temperature(),
        final_temperature_K=md_atoms.get_temperature(),
        trajectory=paths[0],
        log=paths[1],
        restart=paths[2],
        wall_time_s=time.perf_counter() - t_start,
        **_contact_fields(rec.min_ratio, rec.close_step),
        **rec.uncertainty.fields(),
    )


def _contact_fields(min_ratio: float, close_step: int | None) -> dict:
    return {
        "min_bond_ratio": float(min_ratio),
        "close_contact": close_step is not None,
        "close_contact_step": close_step,
    }
