"""Labeller wrapper, frame snapshots, seeding and atomic file output.

Everything that touches the teacher model (SevenNet-0) goes through
:class:`Labeller` so that calls are counted and timed, and so that a global
deadline can abort a running task cleanly (the task is then simply not
written and will be redone on the next run).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

LABELLER_NAME = "7net-0"
MAX_FORCE = 10.0  # eV/A; frames with a larger max |F| are dropped


class BudgetExceeded(RuntimeError):
    """Raised inside a task when the global time budget is exhausted."""


def task_rng(seed: int, name: str) -> np.random.Generator:
    """A generator seeded from --seed and the task name (stable across runs)."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), h])


class CountingCalculator(Calculator):
    """ASE calculator forwarding to an inner calculator; counts and times calls
    and raises :class:`BudgetExceeded` once the deadline has passed."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, inner, owner: Labeller):
        super().__init__()
        self.inner = inner
        self.owner = owner

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        owner = self.owner
        if owner.deadline is not None and time.time() > owner.deadline:
            raise BudgetExceeded("time budget exhausted")
        t0 = time.time()
        props = ["energy", "forces"]
        if self.atoms.pbc.all():
            props.append("stress")
        self.inner.calculate(self.atoms, properties=props, system_changes=all_changes)
        res = {k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
               for k, v in self.inner.results.items()}
        res["energy"] = float(res["energy"])
        res.setdefault("free_energy", res["energy"])
        self.results = res
        owner.n_calls += 1
        owner.t_calls += time.time() - t0


class Labeller:
    def __init__(self, name: str = LABELLER_NAME, threads: int = 2, device: str = "cpu"):
        import warnings

        import torch

        self._torch = torch
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
        self.threads = threads
        warnings.filterwarnings("ignore", message=".*accelerator.*")
        import sevenn
        from sevenn.calculator import SevenNetCalculator

        self.name = name
        self.version = f"sevenn {sevenn.__version__}, torch {torch.__version__}"
        self.inner = SevenNetCalculator(name, device=device)
        self.n_calls = 0
        self.t_calls = 0.0
        self.deadline: float | None = None

    def tune_threads(self, n=2) -> dict:
        """Time a fixed 16-atom slab with 1 and with 2 intra-op threads and keep
        the faster.  On a shared, oversubscribed machine 2 threads can be ~10x
        slower than 1 (spin-waiting), so this is re-checked during long runs.
        The 2-thread probe is abandoned after one call if that call is already
        slower than 1.5x the 1-thread median."""
        from ase.build import fcc111

        rng = np.random.default_rng(0)
        base = fcc111("Cu", (2, 2, 4), a=3.61, vacuum=8.0)
        deadline, self.deadline = self.deadline, None
        n_calls, t_calls = self.n_calls, self.t_calls

        def one():
            a = base.copy()
            a.positions += rng.normal(0, 0.03, a.positions.shape)
            t0 = time.time()
            self.label(a)
            return time.time() - t0

        timing = {}
        try:
            self._torch.set_num_threads(1)
            one()  # warm-up
            timing[1] = float(np.median([one() for _ in range(n)]))
            self._torch.set_num_threads(2)
            t = one()
            if t < 1.5 * timing[1]:
                timing[2] = float(np.median([one() for _ in range(n)]))
            else:
                timing[2] = t
        finally:
            self.deadline = deadline
            self.n_calls, self.t_calls = n_calls, t_calls
        self.threads = min(timing, key=timing.get)
        self._torch.set_num_threads(self.threads)
        return timing

    def calc(self) -> CountingCalculator:
        """A fresh calculator object (one per Atoms object avoids stale caches)."""
        return CountingCalculator(self.inner, self)

    def attach(self, atoms: Atoms) -> Atoms:
        atoms.calc = self.calc()
        return atoms

    def label(self, atoms: Atoms) -> dict:
        """Single point on a copy of ``atoms``; returns the results dict."""
        a = atoms.copy()
        a.calc = self.calc()
        a.get_potential_energy()
        return dict(a.calc.results)


# --------------------------------------------------------------------------
# frames
# --------------------------------------------------------------------------

INFO_DEFAULTS = {
    "source": LABELLER_NAME,
    "metal": "none",
    "facet": "none",
    "adsorbate": "none",
    "site": "none",
    "kind": "none",
    "config_id": "none",
    "split_hint": "pool",
    "task": "none",
    "size": "none",
    "coverage": "none",
    "temperature_K": 0.0,
    "step": 0,
}


def snapshot(atoms: Atoms, results: dict | None = None, **info) -> Atoms:
    """Constraint-free copy of ``atoms`` carrying a SinglePointCalculator with
    energy, raw (unconstrained) forces and -- for 3-D periodic cells only --
    stress, plus the standard info tags."""
    if results is None:
        results = atoms.calc.results
    a = Atoms(
        symbols=atoms.get_chemical_symbols(),
        positions=atoms.get_positions(),
        cell=atoms.get_cell(),
        pbc=atoms.get_pbc(),
    )
    kw = {"energy": float(results["energy"]), "forces": np.array(results["forces"], dtype=float)}
    if a.pbc.all() and "stress" in results:
        kw["stress"] = np.array(results["stress"], dtype=float)
    a.calc = SinglePointCalculator(a, **kw)
    tags = dict(INFO_DEFAULTS)
    tags.update(info)
    a.info.update(tags)
    return a


def max_force(frame: Atoms) -> float:
    return float(np.linalg.norm(frame.calc.results["forces"], axis=1).max())


def frames_to_text(frames: list[Atoms]) -> str:
    from ase.io import write

    buf = io.StringIO()
    if frames:
        write(buf, frames, format="extxyz")
    return buf.getvalue()


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str, data: bytes) -> None:
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path,
                      json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
