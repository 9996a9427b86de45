"""Structure relaxation: ASE optimizers, FixAtoms on slab layers, cell relaxation.

>>> from geomformer_md.simulate.relax import relax
>>> relaxed, result = relax(slab, fmax=0.05, fix_bottom_layers=2)
>>> result.converged, result.energy, result.fmax
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_properties
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.data import chemical_symbols
from ase.filters import FrechetCellFilter
from ase.optimize import (
    BFGS,
    FIRE,
    FIRE2,
    LBFGS,
    BFGSLineSearch,
    GPMin,
    LBFGSLineSearch,
    MDMin,
)

from ..committee import UncertaintyMonitor
from ..data.contacts import closest_contact
from ._progress import progress_bar

OPTIMIZERS = {
    "FIRE": FIRE,
    "FIRE2": FIRE2,
    "BFGS": BFGS,
    "LBFGS": LBFGS,
    "BFGSLineSearch": BFGSLineSearch,
    "LBFGSLineSearch": LBFGSLineSearch,
    "MDMin": MDMin,
    "GPMin": GPMin,
}


def make_calculator(calculator=None, skin: float = 0.0) -> Calculator:
    """None -> the default shipped potential; a name or path -> that potential; else as given.

    ``skin`` (Å) is the Verlet skin of a GeoMFormerCalculator created here; a calculator
    passed in is used unchanged.
    """
    if calculator is None or isinstance(calculator, (str, os.PathLike)):
        from ..calculator import GeoMFormerCalculator

        return GeoMFormerCalculator(calculator, skin=skin)
    if not isinstance(calculator, Calculator) and not hasattr(calculator, "get_forces"):
        raise TypeError(
            f"calculator must be an ASE calculator, a potential name or a path, "
            f"not {type(calculator).__name__}"
        )
    return calculator


def _model_species(calc) -> set[int] | None:
    model = getattr(calc, "model", None)
    species = getattr(getattr(model, "config", None), "species", None)
    return set(species) if species is not None else None


def check_elements(calc, numbers) -> None:
    """Raise ValueError if the calculator's model does not know some of these elements."""
    known = _model_species(calc)
    if known is None:
        return
    unknown = sorted(set(int(z) for z in numbers) - known)
    if unknown:
        raise ValueError(
            f"element(s) {[chemical_symbols[z] for z in unknown]} unknown to this model; it knows "
            f"{[chemical_symbols[z] for z in sorted(known)]}"
        )


@dataclass(frozen=True)
class RelaxResult:
    """What `relax` did. Energies in eV, forces in eV/Å, stress in eV/Å^3 (Voigt, ASE sign)."""

    converged: bool  # final fmax < fmax_target, checked on the final structure
    steps: int  # optimizer steps taken
    energy: float  # final potential energy
    initial_energy: float
    fmax: float  # final max |force| per atom (constraints applied; with relax_cell the
    #              cell's generalised force counts too, as in ASE's criterion)
    fmax_target: float
    optimizer: str
    relax_cell: bool = False
    fixed_atoms: tuple[int, ...] = ()  # indices held by FixAtoms (the user's and the layers')
    stress: np.ndarray | None = field(default=None, repr=False)  # final stress if periodic
    trajectory: str | None = None
    wall_time_s: float = 0.0
    # Closest pair of the final structure over its covalent bond length
    # (geomformer_md.data.contacts); close_contact: below CLOSE_CONTACT_RATIO (0.6), i.e. two
    # atoms fused far outside any training data: not a physical minimum, converged or not.
    min_bond_ratio: float = math.inf
    close_contact: bool = False
    contact: str = ""  # the closest pair in words, e.g. "atom 3 (Cu) is 0.285 Å from atom 7 ..."
    # With a committee potential: the largest per-atom force std seen over the relaxation
    # (eV/Å; nan for a single model), and whether it passed the calculator's
    # uncertainty_threshold (the structure left what the potential was trained on).
    max_force_std: float = math.nan
    uncertain: bool = False


def bottom_layer_indices(atoms: Atoms, n_layers: int, tolerance: float = 0.3) -> np.ndarray:
    """Indices of the atoms in the ``n_layers`` lowest layers.

    Heights are measured along the surface normal (a x b when the cell has two in-plane
    vectors, else z) on the unwrapped Cartesian positions, sorted, and split into layers
    wherever consecutive heights differ by more than ``tolerance`` Å. We do not use
    ase.geometry.get_layers: it wraps scaled positions along periodic axes, so a slab with
    pbc=True whose bottom atoms sit slightly below z=0 would have them put on top.
    """
    a, b = np.asarray(atoms.cell[0]), np.asarray(atoms.cell[1])
    normal = np.cross(a, b)
    if np.linalg.norm(normal) < 1e-8:
        normal = np.array([0.0, 0.0, 1.0])
    normal = normal / np.linalg.norm(normal)
    if atoms.cell.rank == 3 and np.dot(normal, atoms.cell[2]) < 0:
        normal = -normal  # "bottom" is the side c points away from
    height = atoms.positions @ normal
    order = np.argsort(height, kind="stable")
    new_layer = np.diff(height[order]) > tolerance
    layer_of_sorted = np.concatenate([[0], np.cumsum(new_layer)])
    n_total = int(layer_of_sorted[-1]) + 1 if len(atoms) else 0
    if n_layers >= n_total:
        raise ValueError(
            f"fix_bottom_layers={n_layers} would fix all {n_total} layers "
            f"(layer tolerance {tolerance} Å)"
        )
    return np.sort(order[layer_of_sorted < n_layers])


def _optimizer_class(optimizer):
    if isinstance(optimizer, type):
        return optimizer, optimizer.__name__
    by_lower = {k.lower(): k for k in OPTIMIZERS}
    name = by_lower.get(str(optimizer).lower())
    if name is None:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name], name


def _fixed_indices(atoms: Atoms) -> tuple[int, ...]:
    fixed: set[int] = set()
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed.update(int(i) for i in c.index)
    return tuple(sorted(fixed))


def _final_results(atoms: Atoms) -> dict:
    """Energy, forces (and stress when available) at the current state, from the calculator.

    Only ASE's standard properties are kept: other calculators (e.g. MACE) add keys such as
    node_energy that SinglePointCalculator refuses."""
    atoms.get_potential_energy()
    atoms.get_forces()
    if atoms.pbc.all():
        try:
            atoms.get_stress()
        except PropertyNotImplementedError:
            pass
    return {
        k: (v.copy() if isinstance(v, np.ndarray) else v)
        for k, v in atoms.calc.results.items()
        if k in all_properties
    }


def relax(
    atoms: Atoms,
    calculator=None,
    fmax: float = 0.05,
    steps: int = 500,
    optimizer="FIRE",
    relax_cell: bool = False,
    fix_bottom_layers: int | None = None,
    trajectory: str | os.PathLike | None = None,
    logfile: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    pressure_bar: float = 0.0,
    layer_tolerance: float = 0.3,
    optimizer_kwargs: dict | None = None,
) -> tuple[Atoms, RelaxResult]:
    """Relax a structure with an ASE optimizer; the input is never modified.

    Args:
        atoms: the structure; its ASE constraints are kept.
        calculator: an ASE calculator, a potential name or model path, or None for the
            default shipped GeoMFormer potential.
        fmax: convergence threshold on the largest per-atom force, eV/Å.
        steps: maximum optimizer steps.
        optimizer: one of OPTIMIZERS (case-insensitive) or an ASE Optimizer class.
        relax_cell: also relax the cell (ase.filters.FrechetCellFilter); needs stress.
        fix_bottom_layers: add FixAtoms on this many lowest layers (see
            `bottom_layer_indices`; layers split where heights differ > layer_tolerance Å).
        trajectory: ASE trajectory file of every step (None: none).
        logfile: the optimizer's text log ("-" for stdout, None for none).
        progress: show a tqdm bar with step, fmax and energy.
        pressure_bar: external pressure for the cell relaxation.
        layer_tolerance: Å, see fix_bottom_layers.
        optimizer_kwargs: extra arguments for the optimizer (e.g. ``{"maxstep": 0.1}``).

    Returns:
        ``(relaxed, result)``: a relaxed copy carrying a SinglePointCalculator with the
        final energy/forces(/stress), and a `RelaxResult`. ``result.converged`` is computed
        from the final forces (constraints applied), never taken on trust;
        ``result.close_contact`` flags a final structure with two atoms far inside their
        bond length (``result.min_bond_ratio`` < 0.6), which no force field describes.
    """
    opt_cls, opt_name = _optimizer_class(optimizer)
    if not fmax > 0:
        raise ValueError(f"fmax must be > 0, got {fmax}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps}")
    if relax_cell and not (atoms.pbc.all() and atoms.cell.rank == 3):
        raise ValueError(
            f"relax_cell needs a cell periodic in 3 directions; pbc={atoms.pbc.tolist()}"
        )
    if fix_bottom_layers is not None and (
        int(fix_bottom_layers) != fix_bottom_layers or fix_bottom_layers < 0
    ):
        raise ValueError(f"fix_bottom_layers must be an integer >= 0, got {fix_bottom_layers}")

    work = atoms.copy()  # copies constraints too; the caller's object is never touched
    if fix_bottom_layers:
        bottom = bottom_layer_indices(work, int(fix_bottom_layers), layer_tolerance)
        work.set_constraint([*work.constraints, FixAtoms(indices=bottom)])
    work.calc = make_calculator(calculator)
    target = (
        FrechetCellFilter(work, scalar_pressure=pressure_bar * units.bar) if relax_cell else work
    )

    t0 = time.perf_counter()
    e0 = work.get_potential_energy()
    monitor = UncertaintyMonitor(work.calc)
    monitor()
    opt = opt_cls(
        target,
        logfile=logfile,
        trajectory=None if trajectory is None else str(trajectory),
        **(optimizer_kwargs or {}),
    )
    bar = progress_bar(int(steps), f"relax {opt_name}", progress)

    def _update():
        g = opt.optimizable.get_gradient()
        bar.update(opt.nsteps - bar.n)
        bar.set_postfix(
            fmax=f"{opt.optimizable.gradient_norm(g):.4f}",
            E=f"{work.get_potential_energy():.4f}",
            refresh=False,
        )

    if progress:
        opt.attach(_update, interval=1)
    opt.attach(monitor, interval=1)
    try:
        opt.run(fmax=fmax, steps=int(steps))
    finally:
        bar.close()
        opt.close()  # closes a logfile it opened

    # our own check on the final state: constraints applied, cell term included
    final_fmax = float(opt.optimizable.gradient_norm(opt.optimizable.get_gradient()))
    results = _final_results(work)
    monitor()
    relaxed = work.copy()
    relaxed.calc = SinglePointCalculator(relaxed, **results)
    stress = results.get("stress")
    contact = closest_contact(relaxed)
    return relaxed, RelaxResult(
        converged=bool(final_fmax < fmax),
        steps=int(opt.nsteps),
        energy=float(results["energy"]),
        initial_energy=float(e0),
        fmax=final_fmax,
        fmax_target=float(fmax),
        optimizer=opt_name,
        relax_cell=bool(relax_cell),
        fixed_atoms=_fixed_indices(work),
        stress=None if stress is None else np.asarray(stress).copy(),
        trajectory=None if trajectory is None else str(trajectory),
        wall_time_s=time.perf_counter() - t0,
        min_bond_ratio=contact.ratio,
        close_contact=contact.close,
        contact=contact.describe(),
        **monitor.fields(),
    )
