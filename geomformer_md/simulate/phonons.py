"""Harmonic phonons from finite displacements (phonopy), forces from any ASE calculator.

    result = phonons(bulk("Cu"), calculator=calc, supercell=(3, 3, 3))
    result.gamma_frequencies      # THz, 3 acoustic modes ~ 0
    result.min_frequency          # THz over the band path and mesh; < 0 means imaginary
    result.thermal["free_energy"] # eV per primitive cell at result.thermal["temperature"]

Units: frequencies in THz (phonopy's convention for eV, Å, amu input), thermal
properties converted from phonopy's kJ/mol and J/K/mol to eV and eV/K per
primitive cell. Imaginary frequencies are reported as negative numbers.
"""

from __future__ import annotations

import csv as _csv
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

# phonopy's thermal properties come in kJ/mol and J/K/mol (per primitive cell).
_KJMOL_TO_EV = 1.0 / 96.48533212
_JKMOL_TO_EVK = 1.0 / 96485.33212


@dataclass
class PhononResult:
    """Everything `phonons` computed. Frequencies in THz, imaginary ones negative."""

    atoms: Atoms  # the (relaxed) unit cell the force constants belong to
    phonopy: object = field(repr=False)  # the phonopy.Phonopy object (force constants inside)
    gamma_frequencies: np.ndarray  # [3 n_prim] at Gamma, sorted
    min_frequency: float  # over the band path and the mesh
    band_distances: list[np.ndarray] = field(repr=False)  # per segment, 1/Å (phonopy's)
    band_frequencies: list[np.ndarray] = field(repr=False)  # per segment [n_q, 3 n_prim]
    band_labels: list[str] = field(default_factory=list)  # at each segment boundary
    band_label_positions: list[float] = field(default_factory=list)
    dos_frequencies: np.ndarray = field(default=None, repr=False)  # THz
    dos: np.ndarray = field(default=None, repr=False)  # states/THz per primitive cell
    thermal: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # thermal keys: temperature (K), free_energy (eV), entropy (eV/K), heat_capacity (eV/K),
    # all per primitive cell of n_atoms_primitive atoms
    n_atoms_primitive: int = 0
    n_displacements: int = 0
    relax_result: object = None  # RelaxResult when relax_first, else None
    plot: str | None = None  # PNG path

    def has_imaginary(self, tol: float = 0.05) -> bool:
        """True if a frequency below -tol THz exists (tol absorbs numerical noise near Gamma)."""
        return self.min_frequency < -tol

    def save(self, path: str | os.PathLike) -> Path:
        """phonopy_params.yaml-style file with structure, displacements and force constants."""
        self.phonopy.save(str(path), settings={"force_constants": True})
        return Path(path)

    def thermal_to_csv(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        cols = ("temperature", "free_energy", "entropy", "heat_capacity")
        with open(path, "w", newline="") as fh:
            w = _csv.writer(fh)
            w.writerow(["T_K", "F_eV_per_cell", "S_eV_per_K_per_cell", "Cv_eV_per_K_per_cell"])
            for row in zip(*(self.thermal[c] for c in cols), strict=True):
                w.writerow([f"{row[0]:.2f}", *(f"{x:.8g}" for x in row[1:])])
        return path

    def summary(self) -> str:
        g = ", ".join(f"{f:.3f}" for f in self.gamma_frequencies)
        lines = [
            f"{self.atoms.get_chemical_formula()}: {self.n_atoms_primitive} atom(s) in the "
            f"primitive cell, "
            f"{self.n_displacements} displaced supercells",
            f"frequencies at Gamma (THz): {g}",
            f"lowest frequency (path + mesh): {self.min_frequency:.4f} THz"
            + ("  IMAGINARY modes: the structure is not a minimum" if self.has_imaginary() else ""),
        ]
        if self.thermal:
            t = self.thermal["temperature"]
            k = int(np.argmin(np.abs(t - 300.0)))
            lines.append(
                f"at {t[k]:.0f} K: F = {self.thermal['free_energy'][k]:.4f} eV, "
                f"S = {self.thermal['entropy'][k] * 1e3:.4f} meV/K, "
                f"Cv = {self.thermal['heat_capacity'][k] * 1e3:.4f} meV/K (per primitive cell)"
            )
        if self.plot:
            lines.append(f"plot: {self.plot}")
        return "\n".join(lines)


def _supercell_matrix(supercell) -> np.ndarray:
    m = np.asarray(supercell, dtype=int)
    if m.ndim == 0:
        m = np.eye(3, dtype=int) * int(m)
    elif m.shape == (3,):
        m = np.diag(m)
    if m.shape != (3, 3) or round(abs(np.linalg.det(m))) < 1:
        raise ValueError(
            f"supercell must be an int, 3 ints or a 3x3 integer matrix, got {supercell!r}"
        )
    return m


def _to_phonopy(atoms: Atoms):
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=np.array(atoms.cell[:]),
        scaled_positions=atoms.get_scaled_positions(),
        masses=atoms.get_masses(),
    )


def _to_ase(cell) -> Atoms:
    return Atoms(
        symbols=cell.symbols,
        cell=cell.cell,
        scaled_positions=cell.scaled_positions,
        masses=cell.masses,
        pbc=True,
    )


def band_path(cell: np.ndarray, path=None):
    """Band segments for a primitive cell: (list of sub-paths of q-points, list of labels).

    ``path`` None: the standard path of the cell's Bravais lattice (ASE's, after
    Setyawan & Curtarolo; no seekpath needed), e.g. GXWKGLUWLK,UX for fcc. A string
    of ASE special-point letters ("GXKGL", "GXWK,GL"; G = Gamma), or a list of
    sub-paths of fractional q-points ``[[q1, q2, ...], ...]``.
    """
    from ase.cell import Cell
    from ase.dft.kpoints import parse_path_string

    if path is None or isinstance(path, str):
        bp = Cell(cell).bandpath(npoints=0)
        special = bp.special_points
        names = parse_path_string(path or bp.path)
        unknown = sorted({p for sub in names for p in sub if p not in special})
        if unknown:
            raise ValueError(
                f"unknown special point(s) {unknown} for this "
                f"{Cell(cell).get_bravais_lattice().name} "
                f"lattice; it has {sorted(special)}"
            )
        subpaths = [[special[p] for p in sub] for sub in names]
        labels = [p for sub in names for p in sub]
        return subpaths, labels
    subpaths = [[np.asarray(q, float) for q in sub] for sub in path]
    if any(len(sub) < 2 or any(q.shape != (3,) for q in sub) for sub in subpaths):
        raise ValueError("path must be a list of sub-paths, each >= 2 fractional q-points [3]")
    labels = ["" for sub in subpaths for _ in sub]
    return subpaths, labels


def phonons(
    atoms: Atoms,
    calculator=None,
    supercell=(3, 3, 3),
    displacement: float = 0.01,
    relax_first: bool = True,
    fmax: float = 1e-4,
    relax_cell: bool = True,
    relax_steps: int = 1000,
    optimizer: str = "BFGS",
    path=None,
    npoints: int = 51,
    mesh=(20, 20, 20),
    temperatures=None,
    symmetrize: bool = True,
    plot: str | os.PathLike | None = "phonons.png",
    progress: bool = True,
    primitive_matrix="auto",
    symprec: float = 1e-5,
) -> PhononResult:
    """Phonon band structure, DOS and harmonic thermal properties of a crystal.

    Args:
        atoms: a 3-D periodic unit cell (any cell; phonopy finds the primitive one).
        calculator: ASE calculator, potential name or model path; None = default potential.
        supercell: int, 3 ints or 3x3 matrix; make it larger than the force range
            (the potential's cutoff) in every direction for converged phonons.
        displacement: finite displacement, Å.
        relax_first: relax positions (and the cell if relax_cell) before displacing;
            phonons of an unrelaxed structure show spurious imaginary modes.
        fmax: force threshold of that relaxation, eV/Å (tight: residual forces bias
            the force constants).
        relax_cell, relax_steps, optimizer: passed to ``relax``.
        path: band path (see :func:`band_path`); None = standard path of the lattice.
        npoints: q-points per band segment.
        mesh: q-mesh for DOS and thermal properties (3 ints, or a length in Å).
        temperatures: K; None = 0..1000 K in 10 K steps.
        symmetrize: impose translational invariance and index symmetry on the force
            constants (acoustic sum rule).
        plot: PNG path for band structure + DOS; None for no plot.
        progress: progress bar over the displaced supercells.
        primitive_matrix, symprec: passed to phonopy.

    Returns:
        PhononResult.
    """
    from phonopy import Phonopy

    from .relax import check_elements, make_calculator, relax

    if not (np.all(atoms.pbc) and atoms.cell.rank == 3):
        raise ValueError(
            f"phonons need a cell periodic in 3 directions; got pbc={atoms.pbc.tolist()} and a "
            f"rank-{atoms.cell.rank} cell"
        )
    if not displacement > 0:
        raise ValueError(f"displacement must be > 0 Å, got {displacement}")
    sc_matrix = _supercell_matrix(supercell)
    temps = (
        np.arange(0.0, 1001.0, 10.0) if temperatures is None else np.asarray(temperatures, float)
    )
    if temps.ndim != 1 or len(temps) == 0 or np.any(temps < 0):
        raise ValueError("temperatures must be a non-empty list of temperatures >= 0 K")
    calc = make_calculator(calculator)
    check_elements(calc, atoms.numbers)

    relax_result = None
    unit = atoms.copy()
    unit.calc = None
    unit.constraints = []
    if relax_first:
        unit, relax_result = relax(
            unit,
            calculator=calc,
            fmax=fmax,
            steps=relax_steps,
            optimizer=optimizer,
            relax_cell=relax_cell,
            progress=False,
        )
        if not relax_result.converged:
            warnings.warn(
                f"relaxation before phonons did not reach fmax={fmax} eV/Å in {relax_steps} steps "
                f"(fmax={relax_result.fmax:.2e}); expect spurious soft modes",
                stacklevel=2,
            )
        unit.calc = None

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
        ph = Phonopy(
            _to_phonopy(unit),
            supercell_matrix=sc_matrix,
            primitive_matrix=primitive_matrix,
            symprec=symprec,
        )
    ph.generate_displacements(distance=displacement)
    forces = _supercell_forces(ph, calc, progress)
    ph.forces = forces
    ph.produce_force_constants(show_drift=False)
    if symmetrize:
        ph.symmetrize_force_constants(show_drift=False)

    prim_cell = np.array(ph.primitive.cell)
    subpaths, labels = band_path(prim_cell, path)
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections

    qpoints, connections = get_band_qpoints_and_path_connections(subpaths, npoints=npoints)
    ph.run_band_structure(qpoints, path_connections=connections, labels=labels)
    dists = [np.asarray(d) for d in ph.band_structure.distances]
    freqs = [np.asarray(f) for f in ph.band_structure.frequencies]

    ph.run_mesh(mesh, is_gamma_center=True)
    ph.run_total_dos()
    ph.run_thermal_properties(temperatures=temps, exclude_gamma_acoustic=True)
    t, fe, entropy, cv = (np.asarray(x, float) for x in ph.thermal_properties.thermal_properties)
    thermal = {
        "temperature": t,
        "free_energy": fe * _KJMOL_TO_EV,
        "entropy": entropy * _JKMOL_TO_EVK,
        "heat_capacity": cv * _JKMOL_TO_EVK,
    }
    mesh_freqs = np.asarray(ph.mesh.frequencies)
    ph.run_qpoints([[0.0, 0.0, 0.0]])
    gamma = np.sort(np.asarray(ph.qpoints.frequencies[0]))
    fmin = float(min(min(f.min() for f in freqs), mesh_freqs.min()))

    # Boundaries of segments, with "A|B" where a sub-path ends and the next starts elsewhere.
    label_pos, label_txt = [float(dists[0][0])], []
    flat = iter(labels)
    for k, sub in enumerate(subpaths):
        names = [next(flat) for _ in sub]
        if k == 0:
            label_txt.append(names[0])
        else:
            label_txt[-1] = f"{label_txt[-1]}|{names[0]}" if label_txt[-1] != names[0] else names[0]
        label_txt.extend(names[1:])
    for d in dists:
        label_pos.append(float(d[-1]))

    result = PhononResult(
        atoms=unit,
        phonopy=ph,
        gamma_frequencies=gamma,
        min_frequency=fmin,
        band_distances=dists,
        band_frequencies=freqs,
        band_labels=label_txt,
        band_label_positions=label_pos,
        dos_frequencies=np.asarray(ph.total_dos.frequency_points),
        dos=np.asarray(ph.total_dos.dos),
        thermal=thermal,
        n_atoms_primitive=len(ph.primitive),
        n_displacements=len(forces),
        relax_result=relax_result,
    )
    if plot is not None:
        result.plot = str(plot_phonons(result, plot))
    return result


def _supercell_forces(ph, calc, progress: bool) -> np.ndarray:
    """Forces on every displaced supercell, minus the residual forces of the perfect one.

    Subtracting the perfect supercell's forces removes the bias of an imperfectly
    relaxed structure to first order (phonopy's ``--fz``).
    """
    from ._progress import progress_bar

    ref = _to_ase(ph.supercell)
    ref.calc = calc
    f0 = ref.get_forces().copy()
    out = []
    scs = ph.supercells_with_displacements
    bar = progress_bar(len(scs), "phonon displacements", progress, unit="supercell")
    for sc in scs:
        at = _to_ase(sc)
        at.calc = calc
        out.append(at.get_forces() - f0)
        bar.update()
    bar.close()
    return np.array(out)


def _label(s: str) -> str:
    return "|".join("Γ" if p in ("G", "Gamma", "\\Gamma") else p for p in s.split("|"))


def plot_phonons(result: PhononResult, path: str | os.PathLike) -> Path:
    """Band structure and DOS side by side, written as PNG (Agg; no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)  # attaches an Agg canvas; the global pyplot backend is untouched
    gs = fig.add_gridspec(1, 2, width_ratios=(3, 1), wspace=0.05)
    ax = fig.add_subplot(gs[0])
    ax_dos = fig.add_subplot(gs[1], sharey=ax)
    for d, f in zip(result.band_distances, result.band_frequencies, strict=True):
        ax.plot(d, f, color="C0", lw=1.0)
    for x in result.band_label_positions:
        ax.axvline(x, color="0.6", lw=0.6)
    ax.axhline(0.0, color="0.3", lw=0.6, ls="--")
    ax.set_xticks(result.band_label_positions)
    ax.set_xticklabels([_label(s) for s in result.band_labels])
    ax.set_xlim(result.band_label_positions[0], result.band_label_positions[-1])
    ax.set_ylabel("frequency (THz)")
    ax.set_title(f"{result.atoms.get_chemical_formula()} phonons")
    ax_dos.plot(result.dos, result.dos_frequencies, color="C1", lw=1.0)
    ax_dos.fill_betweenx(result.dos_frequencies, 0, result.dos, color="C1", alpha=0.3)
    ax_dos.axhline(0.0, color="0.3", lw=0.6, ls="--")
    ax_dos.set_xlabel("DOS (1/THz)")
    ax_dos.set_xlim(left=0)
    ax_dos.set_xticks([])
    ax_dos.tick_params(labelleft=False)
    fall = min(min(f.min() for f in result.band_frequencies), 0.0)
    ftop = max(f.max() for f in result.band_frequencies)
    ax.set_ylim(fall - 0.05 * (ftop - fall), ftop * 1.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
