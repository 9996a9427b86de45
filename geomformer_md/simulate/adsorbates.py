"""The adsorbate: from a name to a molecule standing binding atom down, its starting
orientations, and where it starts on the slab (touching the surface, clear of it); after
the relaxation, its bonds and tilt."""

from __future__ import annotations

import math
import re
import zlib

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from ase.symbols import string2symbols

from .sites import _wrap_xy


def adsorbate_from_name(adsorbate, binding_atom: int | None = None) -> tuple[str, Atoms, int]:
    """An element symbol, an ase.build.molecule name or an Atoms -> (name, molecule, binding index).

    The molecule is oriented with the binding atom down (+z from it to the rest):
    C of CO, O of OH, N of NH3. The default binding atom is the first non-H element
    of the name ("CO" -> C, "OH" -> O, "H2O" -> O); for an Atoms, its first non-H atom.
    """
    from ase.build import molecule

    if isinstance(adsorbate, Atoms):
        mol = adsorbate.copy()
        name = mol.get_chemical_formula(mode="hill")
        order = list(mol.get_chemical_symbols())
    elif isinstance(adsorbate, str):
        name = adsorbate.strip()
        if name in atomic_numbers and name != "X":
            mol = Atoms(name)
            order = [name]
        else:
            try:
                mol = molecule(name)
            except KeyError:
                raise ValueError(
                    f"unknown adsorbate {adsorbate!r}: give an element symbol (O, H, N, C), an "
                    f"ase.build.molecule name (CO, OH, H2O, NH3, CH3, NO, ...) or an ase.Atoms"
                ) from None
            order = (
                string2symbols(name)
                if re.fullmatch(r"([A-Z][a-z]?\d*)+", name)
                else list(mol.get_chemical_symbols())
            )
    else:
        raise ValueError(f"adsorbate must be a str or an ase.Atoms, not {type(adsorbate).__name__}")
    symbols = mol.get_chemical_symbols()
    mol.pbc = False
    mol.cell = None
    mol.constraints = []
    if binding_atom is None:
        heavy = [s for s in order if s != "H"] or ["H"]
        binding_atom = symbols.index(heavy[0])
    if not 0 <= binding_atom < len(mol):
        raise ValueError(f"binding_atom {binding_atom} out of range for {name} ({len(mol)} atoms)")
    origin = mol.positions[binding_atom].copy()
    mol.positions -= origin
    others = np.delete(np.arange(len(mol)), binding_atom)
    if len(others):
        up = mol.positions[others].mean(axis=0)
        if np.linalg.norm(up) > 1e-6:
            mol.rotate(up, "z")
    return name, mol, binding_atom


def starting_orientations(mol: Atoms, bind: int, n: int, seed: int | None, site: str):
    """``n`` starting orientations ``(label, molecule)`` of an upright molecule (binding atom
    at the origin, the rest along +z): "upright", then tilts from 15° to 70° (±5°, random
    azimuth, random turn about the axis). Seeded per site: ``(seed, crc32(site))``."""
    out = [("upright", mol)]
    if n == 1:
        return out
    rng = np.random.default_rng(None if seed is None else [int(seed), zlib.crc32(site.encode())])
    for tilt in np.linspace(15.0, 70.0, n - 1) if n > 2 else [40.0]:
        tilt = max(5.0, tilt + rng.uniform(-5.0, 5.0))
        azimuth, spin = rng.uniform(0.0, 360.0, size=2)
        m = mol.copy()
        m.rotate(spin, "z", center=m.positions[bind])
        axis = (-math.sin(math.radians(azimuth)), math.cos(math.radians(azimuth)), 0.0)
        m.rotate(tilt, axis, center=m.positions[bind])  # +z leans towards the azimuth
        out.append((f"tilt {tilt:.0f}° az {azimuth:.0f}°", m))
    return out


def _place_height(slab: Atoms, xy: np.ndarray, symbol: str) -> float:
    """z at which the binding atom touches the slab (sum of covalent radii), >= 0.7 Å above.

    The lowest z at which no slab atom is closer than r_ads + r_metal: a hollow
    sits lower than a top site, and a site on a lower terrace lower than the step.
    """
    cell2 = slab.cell[:2, :2]
    lat = np.linalg.norm(_wrap_xy(slab.positions[:, :2] - xy, cell2), axis=1)
    z = slab.positions[:, 2]
    r_b = covalent_radii[atomic_numbers[symbol]]
    d = r_b + covalent_radii[slab.numbers]
    close = lat < d
    touch = (
        np.max(z[close] + np.sqrt(d[close] ** 2 - lat[close] ** 2))
        if close.any()
        else z.max() + d.max()
    )
    near = lat < 1.2 * d
    floor = (z[near].max() if near.any() else z.max()) + 0.7
    return float(max(touch, floor))


def _lift_clear(work: Atoms, n_slab: int, bind: int, min_ratio: float = 0.85) -> None:
    """Raise a placed adsorbate in 0.1 Å steps (at most 3 Å) until none of its atoms but the
    binding one is closer to a slab atom than ``min_ratio`` of their bond length: a tilted
    molecule must not start inside the surface."""
    ads = np.arange(n_slab, len(work))
    rest = [k for k in ads if k != n_slab + bind]
    if not rest:
        return
    r = covalent_radii[work.numbers]
    bond = r[rest][:, None] + r[None, :n_slab]
    for _ in range(30):
        d = np.array([work.get_distances(k, range(n_slab), mic=True) for k in rest])
        if (d / bond).min() >= min_ratio:
            return
        work.positions[ads, 2] += 0.1


def _bonds(mol: Atoms) -> list[tuple[int, int]]:
    r = covalent_radii[mol.numbers]
    out = []
    for i in range(len(mol)):
        for j in range(i + 1, len(mol)):
            if np.linalg.norm(mol.positions[i] - mol.positions[j]) < 1.25 * (r[i] + r[j]):
                out.append((i, j))
    return out


def _tilt(atoms: Atoms, n_slab: int, b: int) -> float:
    """Angle (degrees) between the surface normal and the line from the binding atom to the
    centre of the adsorbate's other atoms; nan for a single atom."""
    others = [k for k in range(n_slab, len(atoms)) if k != b]
    if not others:
        return math.nan
    v = atoms.get_distances(b, others, mic=True, vector=True).mean(axis=0)
    return float(np.degrees(np.arccos(np.clip(v[2] / np.linalg.norm(v), -1.0, 1.0))))
