"""The teacher of a distillation run: any ASE calculator, named by import path.

``teacher: {calculator: ase.calculators.emt.EMT, kwargs: {}}`` imports the class (or a
factory function returning a calculator) and calls it with the keyword arguments, once.
For SevenNet-0: ``{calculator: sevenn.calculator.SevenNetCalculator, kwargs: {model:
7net-0}}``; for DFT: ``{calculator: gpaw.GPAW, kwargs: {mode: {name: pw, ecut: 350},
...}}``. Only an import path and plain YAML values are accepted: nothing from the config
is evaluated.

With ``python: /path/to/other/venv/bin/python`` the calculator is built and run in that
interpreter instead, in one long-lived process (teacher_process.SubprocessCalculator):
the teacher's packages stay out of this environment, a crash or a hang (``timeout``
seconds) of the teacher fails one structure, not the run, and the process is restarted.

``label`` returns the structure with energy, forces and (for cells periodic in 3-D)
stress in a SinglePointCalculator, or the reason it failed: an exception, a non-finite
result or forces above ``max_force``. Failed structures are logged by the caller and
never stored. Each labelled frame carries the teacher's name, the versions of what
labelled it (the calculator's package, ASE, torch, Python) and its keyword arguments in
``info``: ``teacher``, ``teacher_version``, ``teacher_kwargs``.
"""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import reference_states


class TeacherError(ValueError):
    """The teacher cannot be built or cannot handle what the run asks of it."""


def import_calculator(path: str):
    """'package.module.Name' -> the object; TeacherError naming the path otherwise."""
    if not isinstance(path, str) or "." not in path:
        raise TeacherError(f"teacher.calculator must be an import path like "
                           f"ase.calculators.emt.EMT, got {path!r}")
    module, _, name = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise TeacherError(f"teacher.calculator {path!r} cannot be imported: {exc}") from None
    except AttributeError:
        raise TeacherError(
            f"teacher.calculator {path!r}: module {module} has no {name!r}") from None
    if not callable(obj):
        raise TeacherError(f"teacher.calculator {path!r} is not a class or function")
    return obj


class Teacher:
    """An ASE calculator that labels structures, with failures caught per structure."""

    def __init__(self, calculator: str, kwargs: dict | None = None, name: str | None = None,
                 max_force: float = 50.0, python: str | None = None,
                 timeout: float | None = None, log_path=None) -> None:
        self.path = calculator
        self.name = name or calculator.rpartition(".")[2]
        self.max_force = max_force
        self.python = python
        self.kwargs = dict(kwargs or {})
        self.calls = 0
        if python is not None:
            from .teacher_process import SubprocessCalculator

            if not isinstance(calculator, str) or "." not in calculator:
                import_calculator(calculator)  # the same one-line error as in-process
            self.calc = SubprocessCalculator(python, calculator, self.kwargs, timeout=timeout,
                                             log_path=log_path)
            self.versions = dict(self.calc.versions)
        else:
            from .teacher_worker import versions

            factory = import_calculator(calculator)
            try:
                self.calc = factory(**self.kwargs)
            except Exception as exc:
                raise TeacherError(f"teacher {calculator} could not be created with kwargs "
                                   f"{kwargs or {}}: {type(exc).__name__}: {exc}") from None
            self.versions = versions(calculator)

    @property
    def version(self) -> str:
        """'sevenn 0.13.0, ase 3.29.0, torch 2.13.0+cpu, python 3.11.2'."""
        return ", ".join(f"{k} {v}" for k, v in self.versions.items())

    def record(self) -> dict:
        """What labels this run's data: stored in the run's config record."""
        return {"name": self.name, "calculator": self.path, "kwargs": self.kwargs,
                "python": self.python, "versions": self.versions}

    def close(self) -> None:
        """Stop the teacher's process, if it has one."""
        close = getattr(self.calc, "close", None)
        if self.python is not None and close is not None:
            close()

    def label(self, atoms: Atoms) -> tuple[Atoms | None, str | None]:
        """(labelled copy, None) or (None, reason)."""
        from .teacher_process import RemoteError, TeacherProcessError

        work = atoms.copy()
        # A calculator keeps state between structures (EMT its neighbour list): without a
        # reset, a label depends on the structure labelled before it, in the last bits, and a
        # resumed run (a fresh calculator) would not reproduce an uninterrupted one.
        if hasattr(self.calc, "reset"):
            self.calc.reset()
        work.calc = self.calc
        self.calls += 1
        periodic = bool(np.all(work.pbc))
        try:
            energy = float(work.get_potential_energy())
            forces = np.array(work.get_forces(apply_constraint=False), dtype=float)
            stress = np.array(work.get_stress(), dtype=float) if periodic else None
        except (RemoteError, TeacherProcessError) as exc:  # already one line, with its type
            return None, str(exc)
        except Exception as exc:  # SCF failure, unknown element, ...
            msg = str(exc).splitlines()[0][:200] if str(exc) else ""
            return None, f"{type(exc).__name__}: {msg}"
        finite = math.isfinite(energy) and np.isfinite(forces).all() and (
            stress is None or np.isfinite(stress).all())
        if not finite:
            return None, "non-finite energy, forces or stress"
        fmax = float(np.linalg.norm(forces, axis=1).max()) if len(forces) else 0.0
        if fmax > self.max_force:
            return None, f"max |F| {fmax:.1f} eV/Å above teacher.max_force {self.max_force:g}"
        out = atoms.copy()
        out.constraints = []  # labels are raw forces on every atom; constraints not stored
        results = {"energy": energy, "free_energy": energy, "forces": forces}
        if stress is not None:
            results["stress"] = stress
        out.calc = SinglePointCalculator(out, **results)
        out.info["teacher"] = self.name
        out.info["teacher_version"] = self.version
        out.info["teacher_kwargs"] = json.dumps(self.kwargs, sort_keys=True, default=str)
        return out, None

    def check_elements(self, elements) -> None:
        """One small structure per element; a TeacherError names the first it cannot do."""
        for el in elements:
            a0 = lattice_guess(el)
            probe = bulk(el, "fcc", a=a0) if a0 else Atoms(el, [[0, 0, 0]], cell=[8, 8, 8])
            _, why = self.label(probe)
            if why is not None:
                raise TeacherError(f"teacher {self.name} fails on element {el}: {why}")

    def lattice_constant(self, el: str, strain: float = 0.03, n: int = 7) -> float:
        """fcc lattice constant of the teacher from a parabola through E(a) (one atom)."""
        a_ref = lattice_guess(el)
        if a_ref is None:
            raise TeacherError(f"{el} has no fcc reference lattice constant in ASE; give "
                               f"lattice_constants: {{{el}: ...}} in the config")
        grid = a_ref * np.linspace(1 - strain, 1 + strain, n)
        energies = []
        for a in grid:
            labelled, why = self.label(bulk(el, "fcc", a=a))
            if why is not None:
                raise TeacherError(f"teacher {self.name} fails on fcc {el} at a = {a:.3f} Å: {why}")
            energies.append(labelled.get_potential_energy())
        c2, c1, _ = np.polyfit(grid, energies, 2)
        if c2 <= 0:
            raise TeacherError(f"teacher {self.name}: fcc {el} has no energy minimum near "
                               f"a = {a_ref:.2f} Å")
        a0 = -c1 / (2 * c2)
        return float(np.clip(a0, grid[0], grid[-1]))


def lattice_guess(el: str) -> float | None:
    """ASE's reference fcc lattice constant of an element, a starting guess."""
    from ase.data import atomic_numbers

    ref = reference_states[atomic_numbers[el]]
    if ref and ref.get("symmetry") == "fcc":
        return float(ref["a"])
    return None
