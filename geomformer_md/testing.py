"""Physics checks shared by every model config and every shipped potential.

Each ``check_*`` function raises AssertionError with the measured error when a
physical law is broken; tests call them for many configs, and users can call
them on their own trained models. Tolerances live in one table keyed by dtype.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, fcc111, molecule

# Relative tolerances of exact symmetries and of batch-vs-single agreement.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def sample_structures(seed: int = 0) -> dict[str, Atoms]:
    """Rattled molecule, slab with adsorbate and triclinic bulk (Cu, O, H, C)."""
    rng = np.random.default_rng(seed)
    mol = molecule("CH3OH")
    mol.positions += rng.normal(0, 0.05, mol.positions.shape)
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    slab += Atoms("O", positions=[slab.positions[-1] + [0.0, 1.4, 1.3]])
    slab.positions += rng.normal(0, 0.05, slab.positions.shape)
    tri = bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))
    tri.set_cell(tri.cell[:] + rng.normal(0, 0.2, (3, 3)), scale_atoms=True)
    tri += Atoms("H", positions=[tri.positions[0] + [0.9, 0.8, 0.7]])
    tri.positions += rng.normal(0, 0.05, tri.positions.shape)
    return {"molecule": mol, "slab": slab, "triclinic": tri}


def _eval(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    e = atoms.get_potential_energy()
    f = atoms.get_forces()
    s = atoms.get_stress(voigt=False) if atoms.pbc.all() else None
    return e, f, s


def check_symmetries(calc, atoms: Atoms, rotation: np.ndarray, tol: float) -> None:
    """Energy invariant, forces and stress equivariant under an orthogonal map,
    a translation and a permutation (rotation may be a reflection)."""
    e0, f0, s0 = _eval(calc, atoms)
    rng = np.random.default_rng(1)

    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + rng.normal(0, 3.0, 3)
    moved.set_cell(atoms.cell[:] @ rotation.T, scale_atoms=False)
    e1, f1, s1 = _eval(calc, moved)
    assert abs(e1 - e0) <= tol * max(abs(e0), 1.0), \
        f"energy changed by {e1 - e0:.3e} under rotation"
    assert _rel(f1, f0 @ rotation.T) <= tol, \
        f"forces not equivariant: rel err {_rel(f1, f0 @ rotation.T):.3e}"
    if s0 is not None:
        err = _rel(s1, rotation @ s0 @ rotation.T)
        assert err <= tol, f"stress not equivariant: rel err {err:.3e}"

    perm = rng.permutation(len(atoms))
    e2, f2, _ = _eval(calc, atoms[perm])
    assert abs(e2 - e0) <= tol * max(abs(e0), 1.0), \
        f"energy changed by {e2 - e0:.3e} under permutation"
    assert _rel(f2, f0[perm]) <= tol, \
        f"forces not permutation-equivariant: {_rel(f2, f0[perm]):.3e}"


def check_forces_fd(calc, atoms: Atoms, delta: float = 1e-4, tol: float = 1e-6,
                    n_atoms: int = 4) -> None:
    """Forces equal central finite differences of the energy (float64 models)."""
    _, f, _ = _eval(calc, atoms)
    work = atoms.copy()
    work.calc = calc
    idx = np.linspace(0, len(atoms) - 1, min(n_atoms, len(atoms))).astype(int)
    for a in idx:
        for k in range(3):
            x0 = work.positions[a, k]
            work.positions[a, k] = x0 + delta
            ep = work.get_potential_energy()
            work.positions[a, k] = x0 - delta
            em = work.get_potential_energy()
            work.positions[a, k] = x0
            fd = -(ep - em) / (2 * delta)
            assert abs(fd - f[a, k]) <= tol * max(1.0, abs(fd)), (
                f"atom {a} dir {k}: autograd force {f[a, k]:.8f} vs finite difference {fd:.8f}"
            )


def check_stress_fd(calc, atoms: Atoms, tol: float = 1e-6) -> None:
    """Stress equals ASE's numerical stress (finite differences under strain)."""
    work = atoms.copy()
    work.calc = calc
    s = work.get_stress()
    num = calc.calculate_numerical_stress(work, d=1e-5)
    err = np.abs(s - num).max()
    assert err <= tol * max(1.0, np.abs(num).max() * 1e3), \
        f"stress {s} vs numerical {num} (err {err:.2e})"


def check_supercell(calc, atoms: Atoms, tol: float) -> None:
    """A 2x2x2 supercell has 8x the energy and the same per-atom forces (and stress)."""
    e0, f0, s0 = _eval(calc, atoms)
    sc = atoms.repeat((2, 2, 2))
    e1, f1, s1 = _eval(calc, sc)
    assert abs(e1 - 8 * e0) <= tol * max(abs(e1), 1.0), f"supercell energy {e1} vs 8 x {e0}"
    assert _rel(f1, np.tile(f0, (8, 1))) <= max(tol, 1e-12 / max(np.abs(f0).max(), 1e-12)), (
        f"supercell forces differ: {np.abs(f1 - np.tile(f0, (8, 1))).max():.3e}"
    )
    if s0 is not None:
        assert np.abs(s1 - s0).max() <= tol * max(np.abs(s0).max(), 1e-6), \
            "supercell stress differs"


def dimer_scan(calc, symbol: str, cutoff: float, n: int = 201, width: float = 0.2):
    """Energies and forces of a dimer scanned through the cutoff, and the isolated energy."""
    rs = np.linspace(cutoff - width, cutoff + width, n)
    es, fs = [], []
    for r in rs:
        a = Atoms(symbol * 2, positions=[[0, 0, 0], [r, 0, 0]])
        e, f, _ = _eval(calc, a)
        es.append(e)
        fs.append(f[1, 0])
    iso = 2 * _eval(calc, Atoms(symbol, positions=[[0, 0, 0]]))[0]
    return rs, np.array(es), np.array(fs), iso


def check_cutoff_smoothness(calc, symbol: str, cutoff: float) -> None:
    """Energy and force go continuously to their isolated values at r_c; no jump anywhere."""
    rs, es, fs, iso = dimer_scan(calc, symbol, cutoff)
    beyond = rs >= cutoff
    assert np.abs(es[beyond] - iso).max() < 1e-12, \
        "energy beyond the cutoff differs from isolated atoms"
    assert np.abs(fs[beyond]).max() < 1e-12, "force beyond the cutoff is not zero"
    # Near r_c the envelope makes E - E_iso ~ (r_c - r)^3: the last steps are tiny.
    last = np.where(~beyond)[0][-3:]
    step = rs[1] - rs[0]
    assert np.abs(es[last] - iso).max() < 1e3 * step**3 * max(1.0, np.abs(es - iso).max()), (
        "energy approaches its isolated value too slowly at r_c (a jump?)"
    )
    assert np.abs(fs[last]).max() < 1e3 * step**2 * max(1.0, np.abs(fs).max()), "force jumps at r_c"
    # No jump anywhere: each energy step is what the forces allow (mean value theorem;
    # two atoms move apart, the force on one is half the pair's dE/dr budget x 2).
    jumps = np.abs(np.diff(es))
    allowed = 2.0 * np.maximum(np.abs(fs[1:]), np.abs(fs[:-1])) * step * 1.5 + 1e-12
    assert np.all(jumps <= allowed), f"energy jumps by {jumps.max():.3e} in one scan step"


# Displacements (Å) of the lattice-site checks: two tiny ones, then what phonopy and MD probe.
LATTICE_AMPLITUDES = (1e-4, 1e-3, 2e-2)


def lattice_force_constants(calc, atoms: Atoms, amplitudes=LATTICE_AMPLITUDES, index: int = 0,
                            direction=(1.0, 0.0, 0.0)) -> np.ndarray:
    """Force constant k(h) = -(F(h) - F(0)) . u / h on a displaced atom, for each amplitude h.

    For a physical potential k(h) is nearly constant over 1e-4..2e-2 Å (harmonic
    regime). A model with a narrow well at the symmetric site has k(1e-4) >> k(2e-2).
    """
    u = np.asarray(direction, float)
    u = u / np.linalg.norm(u)
    f0 = _eval(calc, atoms)[1][index]
    ks = []
    for h in amplitudes:
        a = atoms.copy()
        a.positions[index] += h * u
        ks.append(-float((_eval(calc, a)[1][index] - f0) @ u) / h)
    return np.array(ks)


def check_lattice_stiffness(calc, atoms: Atoms, factor: float = 3.0, **kw) -> np.ndarray:
    """No narrow well at a symmetric site: the force constant for tiny displacements
    (1e-4, 1e-3 Å) is within ``factor`` of the one at 2e-2 Å (what phonopy and a
    300 K MD step probe). Pass a perfect crystal (e.g. ``bulk("Cu", cubic=True) * 2``).
    Returns the force constants k(h), eV/Å^2."""
    k = lattice_force_constants(calc, atoms, **kw)
    ref = max(abs(k[-1]), 0.5)  # eV/Å^2; metals' on-site constants are a few eV/Å^2
    assert np.all(np.abs(k[:-1] - k[-1]) <= (factor - 1.0) * ref), (
        f"force constant at the lattice site depends on the displacement: k(h) = "
        f"{np.round(k, 3)} eV/Å^2 for h = {kw.get('amplitudes', LATTICE_AMPLITUDES)} Å "
        f"(a narrow well at the symmetric site)"
    )
    return k


def dimer_curves(model, grids: dict, dtype: str = "float64") -> dict:
    """E(r) - E(two free atoms) (eV) and the repulsive force on the second atom (eV/Å; > 0
    pushes the atoms apart) of isolated dimers, ``grids`` {(symbol_a, symbol_b): distances (Å)},
    all in one batched evaluation. ``model``: what :func:`geomformer_md.simulate.predict`
    takes (a shipped name, a file, a GeoMFormer). Returns {pair: (energies, forces)}."""
    from .simulate.batch import predict

    structures = []
    for (a, b), rs in grids.items():
        structures += [Atoms([a, b], positions=[[0, 0, 0], [0, 0, r]]) for r in rs]
        structures += [Atoms([a]), Atoms([b])]
    res = predict(structures, model, dtype=dtype)
    out, k = {}, 0
    for pair, rs in grids.items():
        chunk, k = res[k : k + len(rs) + 2], k + len(rs) + 2
        free = chunk[-2]["energy"] + chunk[-1]["energy"]
        out[pair] = (np.array([r["energy"] for r in chunk[:-2]]) - free,
                     np.array([r["forces"][1, 2] for r in chunk[:-2]]))
    return out


def short_range_wall(model, elements=None, r_low: float = 0.15, step: float = 0.01,
                     wall: float = 0.75, probe: float = 0.5) -> list[dict]:
    """The repulsive wall of every element pair: one row per pair with ``R`` (sum of covalent
    radii, Å), the probe distance ``r_probe`` = min(probe, R / 2), ``rise`` = E(r_probe) -
    E(R) (eV), ``min_force`` (the least repulsive force on [r_low, wall * R], eV/Å) and
    ``monotonic`` (E strictly rises as r falls on that range, on a ``step`` grid).

    Why min(0.5 Å, R / 2): for H-H, 0.5 Å is 0.81 R, only 0.24 Å inside H2's bond (0.74 Å),
    where the true curve is ~1.5 eV above E(R), not yet the wall; for every other pair of
    H C N O and the fcc metals it is 0.5 Å (H-O: 0.485 Å).
    """
    from itertools import combinations_with_replacement

    from ase.data import atomic_numbers, chemical_symbols, covalent_radii

    from .simulate.batch import BatchEvaluator

    evaluator = BatchEvaluator(model, dtype="float64")
    if elements is None:
        elements = [chemical_symbols[z] for z in evaluator.potential.model.config.species]
    grids, meta = {}, {}
    for a, b in combinations_with_replacement(elements, 2):
        R = float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])
        r_probe = min(probe, 0.5 * R)
        grid = np.arange(r_low, wall * R + 1e-9, step)
        grids[(a, b)] = np.concatenate([grid, [r_probe, R]])
        meta[(a, b)] = (R, r_probe, len(grid))
    rows = []
    for pair, (e, f) in dimer_curves(evaluator, grids).items():
        R, r_probe, n = meta[pair]
        rows.append({"pair": "-".join(pair), "R": R, "r_probe": r_probe,
                     "rise": float(e[-2] - e[-1]), "E_probe": float(e[-2]), "E_R": float(e[-1]),
                     "min_force": float(f[:n].min()),
                     "monotonic": bool(np.all(np.diff(e[:n]) < 0))})
    return rows


def check_short_range_wall(model, elements=None, rise: float = 3.0, **kw) -> list[dict]:
    """Every element pair has a repulsive wall: below 0.75 R (R: sum of covalent radii) the
    dimer energy rises monotonically as r falls, with a repulsive force everywhere, and
    E(min(0.5 Å, R / 2)) is more than ``rise`` eV above E(R). See :func:`short_range_wall`."""
    rows = short_range_wall(model, elements, **kw)
    bad = [r for r in rows if not (r["monotonic"] and r["min_force"] > 0 and r["rise"] > rise)]
    assert not bad, "no repulsive wall for " + "; ".join(
        f"{r['pair']}: E(r_probe={r['r_probe']:.3f}) - E(R) = {r['rise']:.2f} eV, least force "
        f"{r['min_force']:.3g} eV/Å, monotonic {r['monotonic']}" for r in bad)
    return rows
