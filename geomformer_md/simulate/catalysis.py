"""Adsorption energies on metal slabs: enumerate sites, relax, reference to gas molecules.

    E_ads = E(slab + adsorbate) - E(slab) - sum_k c_k E(gas_k)

where the gas-phase reference is a linear combination of closed-shell molecules
with the adsorbate's composition (``{"H2O": 1, "H2": -0.5}`` for OH). All
energies are relaxed energies from the same calculator, so the result is a
property of the potential alone.

Sites come from ASE: slabs built by ``ase.build.fcc111/fcc100/fcc110/hcp0001/
bcc100/bcc110/bcc111`` carry ``info["adsorbate_info"]["sites"]`` with the
symmetry-distinct sites of the surface unit cell, and ``ase.build.add_adsorbate``
places an adsorbate on them by name. ``ase.build.fcc211`` carries no sites, so
:func:`with_fcc211_sites` derives a few from the step geometry of the built slab.

Example::

    table = adsorption_energies(("Pt", "111", (3, 3, 4)), "O", calculator=calc)
    print(table)            # most stable site first
    table.to_csv("O_Pt111.csv")
"""

from __future__ import annotations

import csv as _csv
import math
import os
import re
import tempfile
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, chemical_symbols, covalent_radii, reference_states
from ase.symbols import string2symbols

from ..data.contacts import closest_contact
from ._progress import progress_bar
from .runfiles import new_file_mode

# Gas-phase references. Each entry: molecule name (ase.build.molecule) -> coefficient.
# The defaults follow common practice in computational catalysis: elements from
# their diatomic gases, C from CO - 1/2 O2 (graphite/CH4 are worse for an ML
# potential trained on surfaces), OH from water (computational-hydrogen-electrode
# convention), stable molecules from themselves.
DEFAULT_REFERENCES: dict[str, dict[str, float]] = {
    "H": {"H2": 0.5},
    "O": {"O2": 0.5},
    "N": {"N2": 0.5},
    "C": {"CO": 1.0, "O2": -0.5},
    "OH": {"H2O": 1.0, "H2": -0.5},
}
# Per-element references of the two schemes offered for any other adsorbate
# (``references="O2"`` or ``"H2O"``); composition decides the coefficients.
ELEMENT_REFERENCES: dict[str, dict[str, dict[str, float]]] = {
    "O2": {
        "H": {"H2": 0.5},
        "O": {"O2": 0.5},
        "N": {"N2": 0.5},
        "C": {"CO": 1.0, "O2": -0.5},
    },
    "H2O": {
        "H": {"H2": 0.5},
        "O": {"H2O": 1.0, "H2": -1.0},
        "N": {"N2": 0.5},
        "C": {"CO": 1.0, "H2O": -1.0, "H2": 1.0},
    },
}
# Closed-shell molecules that are their own reference when adsorbed intact.
GAS_MOLECULES = ("H2", "O2", "N2", "CO", "CO2", "H2O", "NH3", "CH4", "NO")

# Slab builders by (crystal structure, facet).
_BUILDERS = {
    ("fcc", "111"): "fcc111",
    ("fcc", "100"): "fcc100",
    ("fcc", "110"): "fcc110",
    ("fcc", "211"): "fcc211",
    ("hcp", "0001"): "hcp0001",
    ("bcc", "100"): "bcc100",
    ("bcc", "110"): "bcc110",
    ("bcc", "111"): "bcc111",
}
DEFAULT_SIZE = (3, 3, 4)
_LAYER_TOL = 0.3  # Å: atoms within this z range form one layer (prebuilt slabs without tags)


# --------------------------------------------------------------------------- slabs


def parse_slab_spec(spec) -> tuple[str, str, tuple[int, int, int]]:
    """``"Pt111"``, ``"Cu(100)"``, ``("Pt", "211", (3, 3, 4))`` -> (symbol, facet, size)."""
    if isinstance(spec, str):
        m = re.fullmatch(r"([A-Za-z]{1,2})\(?(\d{3,4})\)?", spec.strip())
        if not m:
            raise ValueError(
                f"cannot read slab spec {spec!r}: expected an element and a facet such as "
                f"'Pt111', 'Cu100', 'Pt211' or 'Ru0001'"
            )
        symbol, facet, size = m.group(1).capitalize(), m.group(2), DEFAULT_SIZE
    else:
        try:
            symbol, facet, *rest = spec
        except (TypeError, ValueError):
            raise ValueError(
                f"slab spec must be a string like 'Pt111' or a tuple (symbol, facet, size), "
                f"got {spec!r}"
            ) from None
        symbol, facet = str(symbol), str(facet).strip("()")
        size = tuple(int(n) for n in rest[0]) if rest else DEFAULT_SIZE
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"slab size must be 3 positive integers, got {size}")
    if symbol not in atomic_numbers:
        raise ValueError(f"unknown element {symbol!r} in slab spec {spec!r}")
    return symbol, facet, tuple(size)


def _crystal(symbol: str) -> str:
    state = reference_states[atomic_numbers[symbol]]
    return (state or {}).get("symmetry", "?")


def build_slab(
    symbol: str,
    facet: str,
    size: tuple[int, int, int] = DEFAULT_SIZE,
    a: float | None = None,
    vacuum: float = 10.0,
) -> Atoms:
    """A slab from ase.build with adsorption sites and layer tags (1 = top layer).

    Args:
        symbol: metal element (its ASE reference crystal structure picks the builder).
        facet: "111", "100", "110", "211" (fcc), "0001" (hcp), "100"/"110"/"111" (bcc).
        size: (nx, ny, layers); for 211 nx must be a multiple of 3 (3 rows per terrace).
        a: lattice constant in Å (None = ASE's reference value).
        vacuum: vacuum on each side, Å.
    """
    import ase.build

    crystal = _crystal(symbol)
    builder = _BUILDERS.get((crystal, facet))
    if builder is None:
        known = sorted(f for (c, f) in _BUILDERS if c == crystal)
        raise ValueError(
            f"unknown facet {facet!r} for {symbol} ({crystal}); supported: {known or 'none'} "
            f"(all: {sorted({f'{c}({f})' for c, f in _BUILDERS})})"
        )
    kwargs = {"a": a, "vacuum": vacuum}
    if builder == "fcc211":
        if size[0] % 3:
            raise ValueError(
                f"fcc(211) needs size[0] divisible by 3 (3 rows per terrace), got {size}"
            )
        # ASE's size[2] for 211 counts "layers" of 3 rows; one 211 layer is one terrace repeat.
        slab = ase.build.fcc211(symbol, size, **kwargs)
        return with_fcc211_sites(slab)
    slab = getattr(ase.build, builder)(symbol, size, **kwargs)
    return slab


def surface_layers(slab: Atoms) -> np.ndarray:
    """Layer index per atom, 1 = top. Uses ASE's tags when set, else z clustering."""
    tags = slab.get_tags()
    if len(tags) and tags.min() >= 1:
        return tags.astype(int)
    z = slab.positions[:, 2]
    order = np.argsort(-z)
    layer = np.zeros(len(slab), int)
    current, ztop = 1, z[order[0]]
    for i in order:
        if ztop - z[i] > _LAYER_TOL:
            current, ztop = current + 1, z[i]
        layer[i] = current
    return layer


def fix_bottom(atoms: Atoms, n_layers: int) -> Atoms:
    """A copy of a slab, its bottom ``n_layers`` held by FixAtoms (existing constraints kept)."""
    atoms = atoms.copy()
    if n_layers <= 0:
        return atoms
    layers = surface_layers(atoms)
    n_total = layers.max()
    if n_layers >= n_total:
        raise ValueError(
            f"fix_bottom_layers={n_layers} would fix the whole slab ({n_total} layers)"
        )
    idx = np.where(layers > n_total - n_layers)[0]
    atoms.constraints = list(atoms.constraints) + [FixAtoms(indices=idx)]
    return atoms


def _wrap_xy(d: np.ndarray, cell2: np.ndarray) -> np.ndarray:
    """Shortest 2-D images of xy differences ``d [..., 2]`` in the lattice ``cell2`` (rows)."""
    frac = d @ np.linalg.inv(cell2)
    frac -= np.round(frac)
    best = None
    for i in (-1, 0, 1):  # rounding alone is not the minimum image in skewed cells
        for j in (-1, 0, 1):
            cand = (frac + [i, j]) @ cell2
            if best is None:
                best = cand
            else:
                take = np.linalg.norm(cand, axis=-1) < np.linalg.norm(best, axis=-1)
                best = np.where(take[..., None], cand, best)
    return best


def with_fcc211_sites(slab: Atoms) -> Atoms:
    """A copy of an ``ase.build.fcc211`` slab with step sites and layer tags.

    Sites, derived from the atom rows of the slab (not from tabulated numbers):
    ``step_ontop`` (on a step-edge atom), ``step_bridge`` (between two edge atoms
    along the step), ``step_fcc`` / ``step_hcp`` (3-fold hollows of the upper
    terrace touching the edge), ``step_hollow4`` (4-fold hollow of the (100)
    step facet, the B5 site). One 211 layer (tag) is 3 rows, as in ase.build.
    """
    slab = slab.copy()
    pos = slab.positions
    rows = surface_layers(Atoms(slab.get_chemical_symbols(), positions=pos))  # 1 = top row
    cell2 = slab.cell[:2, :2]
    edge = np.where(rows == 1)[0]
    if len(edge) == 0 or rows.max() < 4:
        raise ValueError("slab is too thin to locate a (211) step (needs >= 4 atom rows)")
    e0 = edge[np.argmin(pos[edge, 1])]
    # Primitive surface cell: one step repeat across (x), one edge spacing along (y).
    n_steps = len(np.unique(np.round(pos[edge, 0], 2)))
    n_along = len(edge) // n_steps
    prim = np.array([cell2[0] / n_steps, cell2[1] / n_along])
    b = prim[1]

    def nearest(idx, xy, k=1):
        d = np.linalg.norm(_wrap_xy(pos[idx, :2] - xy, cell2), axis=1)
        return idx[np.argsort(d)[:k]]

    def unwrap(i, ref_xy):  # xy of atom i, imaged next to ref_xy
        return ref_xy + _wrap_xy(pos[i, :2] - ref_xy, cell2)

    p0 = pos[e0, :2]
    row2 = np.where(rows == 2)[0]
    row3 = np.where(rows == 3)[0]
    sites = {"step_ontop": p0, "step_bridge": p0 + b / 2}
    # Upper-terrace hollows touching the edge: (edge, edge, row2) and (edge, row2, row2).
    t = nearest(row2, p0 + b / 2)[0]
    tri_a = [p0, p0 + b, unwrap(t, p0 + b / 2)]
    t1, t2 = nearest(row2, p0, k=2)
    tri_b = [p0, unwrap(t1, p0), unwrap(t2, p0)]
    for tri, zs in (
        (tri_a, [pos[e0, 2], pos[e0, 2], pos[t, 2]]),
        (tri_b, [pos[e0, 2], pos[t1, 2], pos[t2, 2]]),
    ):
        corners = np.column_stack([np.array(tri), zs])
        name = "step_hcp" if _atom_beneath(slab, corners) else "step_fcc"
        sites[name] = np.mean(tri, axis=0)
    # (100) step facet: the edge pair and the row-3 pair on the step-down side.
    s = nearest(row3, p0)[0]
    sites["step_hollow4"] = (p0 + unwrap(s, p0)) / 2 + b / 2
    if set(sites) != {"step_ontop", "step_bridge", "step_fcc", "step_hcp", "step_hollow4"}:
        raise ValueError(
            "could not tell the fcc and hcp step hollows apart; is this an fcc(211) slab?"
        )
    # Store as ASE does: fractional coordinates of the primitive surface cell.
    inv = np.linalg.inv(prim)
    info = {
        "cell": prim,
        "sites": {k: tuple(float(x) for x in (v @ inv)) for k, v in sites.items()},
        "top layer atom index": int(np.argmax(pos[:, 2])),
    }
    slab.info["adsorbate_info"] = info
    if slab.get_tags().max() < 1:
        slab.set_tags((rows - 1) // 3 + 1)
    return slab


def _atom_beneath(slab: Atoms, corners: np.ndarray) -> bool:
    """True if a deeper atom sits under the centre of a 3-fold hollow (an hcp site).

    Works along the normal of the triangle, so it holds on tilted microfacets too.
    """
    n = np.cross(corners[1] - corners[0], corners[2] - corners[0])
    n /= np.linalg.norm(n)
    if n[2] < 0:
        n = -n
    c = corners.mean(axis=0)
    cell2 = slab.cell[:2, :2]
    d = slab.positions - c
    d[:, :2] = _wrap_xy(d[:, :2], cell2)
    depth = -(d @ n)  # > 0 below the facet
    lateral = np.linalg.norm(d + depth[:, None] * n, axis=1)
    return bool(np.any((depth > 1.0) & (depth < 3.0) & (lateral < 0.6)))


def site_positions(slab: Atoms) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Site name -> xy (Å) of one instance, and the primitive surface cell [2, 2] (rows)."""
    info = slab.info.get("adsorbate_info", {})
    sites = info.get("sites") or {}
    if not sites:
        raise ValueError(
            "this slab has no adsorption-site information: build it with ase.build "
            "(fcc111, fcc100, fcc110, hcp0001, bcc100/110/111), use with_fcc211_sites() on an "
            "ase.build.fcc211 slab, or pass a spec like 'Pt111'"
        )
    cell2 = np.asarray(info.get("cell", slab.cell[:2, :2]), float)
    return {k: np.asarray(v, float) @ cell2 for k, v in sites.items()}, cell2


def site_images(slab: Atoms) -> dict[str, np.ndarray]:
    """Site name -> xy [k, 2] of every symmetry-equivalent instance in the slab's cell.

    ASE lists one instance per site type (e.g. one of the three bridge orientations
    of fcc(111)); the others follow from the symmetry operations of the slab
    (spglib) that keep the top side on top.
    """
    import warnings

    sites, _ = site_positions(slab)
    cell = np.array(slab.cell[:])
    ops = [(np.eye(3, dtype=int), np.zeros(3))]
    if np.allclose(cell[2, :2], 0.0) and abs(cell[2, 2]) > 0:
        try:
            import spglib

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                sym = spglib.get_symmetry(
                    (cell, slab.get_scaled_positions(), slab.numbers), symprec=1e-3
                )
        except ImportError:
            sym = None
        if sym:
            ops += [
                (r, t)
                for r, t in zip(sym["rotations"], sym["translations"], strict=True)
                if np.array_equal(r[2], [0, 0, 1]) and abs(t[2] - round(t[2])) < 1e-6
            ]
    ztop = slab.positions[:, 2].max() + 1.0
    cell2 = cell[:2, :2]
    out = {}
    for name, xy in sites.items():
        f = np.linalg.solve(cell.T, [xy[0], xy[1], ztop])
        imgs = np.array([((r @ f + t) @ cell)[:2] for r, t in ops])
        frac = np.round(imgs @ np.linalg.inv(cell2), 6) % 1.0  # into the cell, then dedupe
        out[name] = np.unique(np.round(frac, 6) % 1.0, axis=0) @ cell2
    return out


def nearest_site(slab: Atoms, xy) -> tuple[str, float]:
    """The name of the site nearest to ``xy`` (any symmetry-equivalent instance) and the
    lateral distance to it (Å)."""
    cell2 = slab.cell[:2, :2]
    best, dist = "", math.inf
    for name, imgs in site_images(slab).items():
        d = np.linalg.norm(_wrap_xy(np.asarray(xy, float)[:2] - imgs, cell2), axis=-1).min()
        if d < dist - 1e-9:
            best, dist = name, float(d)
    return best, dist


# --------------------------------------------------------------------------- adsorbates


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


def resolve_references(name: str, mol: Atoms, references=None) -> dict[str, float]:
    """The gas-phase reference of adsorbate ``name`` as {molecule: coefficient}.

    ``references``: None (DEFAULT_REFERENCES, a stable molecule references itself,
    anything else by composition with the "O2" scheme), "O2" or "H2O" (composition
    with that scheme), a dict {molecule: coefficient} for this adsorbate, or a dict
    {adsorbate: {molecule: coefficient}}. The composition must balance.
    """
    if (
        isinstance(references, dict)
        and references
        and all(isinstance(v, dict) for v in references.values())
    ):
        references = references.get(name)
    if references is None:
        if name in DEFAULT_REFERENCES:
            ref = dict(DEFAULT_REFERENCES[name])
        elif name in GAS_MOLECULES:
            ref = {name: 1.0}
        else:
            ref = _composition_reference(mol, "O2", name)
    elif isinstance(references, str):
        if references not in ELEMENT_REFERENCES:
            raise ValueError(
                f"unknown reference scheme {references!r}; use one of {sorted(ELEMENT_REFERENCES)} "
                f"or a dict like {{'H2O': 1, 'H2': -0.5}}"
            )
        ref = _composition_reference(mol, references, name)
    elif isinstance(references, dict):
        ref = {str(k): float(v) for k, v in references.items()}
    else:
        raise ValueError(f"references must be None, 'O2', 'H2O' or a dict, got {references!r}")
    _check_balance(name, mol, ref)
    return ref


def _composition_reference(mol: Atoms, scheme: str, name: str) -> dict[str, float]:
    table = ELEMENT_REFERENCES[scheme]
    ref: dict[str, float] = {}
    for el, n in Counter(mol.get_chemical_symbols()).items():
        if el not in table:
            raise ValueError(
                f"no default gas reference for element {el} of adsorbate {name}; pass "
                f"references={{molecule: coefficient, ...}}"
            )
        for gas, c in table[el].items():
            ref[gas] = ref.get(gas, 0.0) + n * c
    return {k: v for k, v in ref.items() if abs(v) > 1e-12}


def _gas_molecule(name: str) -> Atoms:
    from ase.build import molecule

    try:
        return molecule(name)
    except KeyError:
        raise ValueError(
            f"unknown gas reference molecule {name!r} (must be an ase.build.molecule name)"
        ) from None


def _check_balance(name: str, mol: Atoms, ref: dict[str, float]) -> None:
    have = Counter()
    for gas, c in ref.items():
        for el, n in Counter(_gas_molecule(gas).get_chemical_symbols()).items():
            have[el] += c * n
    want = Counter(mol.get_chemical_symbols())
    bad = {el for el in set(have) | set(want) if abs(have[el] - want[el]) > 1e-9}
    if bad:
        raise ValueError(
            f"gas reference {ref} for {name} does not have its composition: "
            + ", ".join(f"{el} {have[el]:g} vs {want[el]}" for el in sorted(bad))
        )


def format_reference(ref: dict[str, float]) -> str:
    parts = []
    for gas, c in ref.items():
        sign = "-" if c < 0 else "+"
        mag = "" if abs(abs(c) - 1) < 1e-12 else f"{abs(c):g} "
        parts.append(f"{sign} {mag}{gas}")
    s = " ".join(parts)
    return s[2:] if s.startswith("+ ") else s


# --------------------------------------------------------------------------- results


@dataclass
class AdsorptionRow:
    """One site: the best of its starting orientations. Energies in eV, lengths in Å."""

    site: str  # where the adsorbate was placed
    final_site: str  # nearest site after relaxation ("desorbed" if it left the surface)
    moved: bool  # final_site != site
    e_ads: float  # E(slab+ads) - E(slab) - E_ref(ads)
    energy: float  # relaxed total energy of slab + adsorbate
    height: float  # binding-atom z minus the topmost slab atom z, after relaxation
    converged: bool
    steps: int
    fmax: float  # eV/Å, final
    dissociated: bool  # a bond of the adsorbate broke
    atoms: Atoms | None = field(default=None, repr=False)  # relaxed structure
    # closest pair over its covalent bond length (geomformer_md.data.contacts); close_contact:
    # below 0.6, two atoms fused far outside any training data: not a physical result
    min_bond_ratio: float = math.inf
    close_contact: bool = False
    orientation: str = "upright"  # the starting orientation that won (see ORIENTATIONS doc)
    tilt_deg: float = math.nan  # final angle of the molecule's axis from the surface normal
    # every starting orientation tried: label -> relaxed E_ads (eV)
    orientation_e_ads: dict[str, float] = field(default_factory=dict, repr=False)
    # with a committee potential: largest per-atom force std over the relaxation (eV/Å; nan
    # for a single model) and whether it passed the uncertainty threshold
    max_force_std: float = math.nan
    uncertain: bool = False


# CSV columns of a row, in order, with their values (eV, Å, degrees). A new column is one
# line here; the table-level columns follow in CSV_COLUMNS.
ROW_COLUMNS = {
    "site": lambda r: r.site,
    "final_site": lambda r: r.final_site,
    "moved": lambda r: r.moved,
    "E_ads_eV": lambda r: r.e_ads,
    "E_total_eV": lambda r: r.energy,
    "height_A": lambda r: r.height,
    "converged": lambda r: r.converged,
    "steps": lambda r: r.steps,
    "fmax_eV_per_A": lambda r: r.fmax,
    "dissociated": lambda r: r.dissociated,
    "min_bond_ratio": lambda r: r.min_bond_ratio,
    "close_contact": lambda r: r.close_contact,
    "orientation": lambda r: r.orientation,
    "tilt_deg": lambda r: r.tilt_deg,
    "max_force_std_eV_per_A": lambda r: r.max_force_std,
    "uncertain": lambda r: r.uncertain,
}
CSV_COLUMNS = (*ROW_COLUMNS, "slab_converged", "references_converged")


@dataclass
class AdsorptionTable:
    """Rows sorted with the most stable site first, and what they were computed from."""

    adsorbate: str
    slab_name: str
    rows: list[AdsorptionRow]
    slab_energy: float
    slab_converged: bool
    reference: dict[str, float]  # {gas molecule: coefficient}
    gas_energies: dict[str, float]  # relaxed (or given) energies of the molecules, eV
    references_converged: bool
    reference_energy: float  # sum_k c_k E(gas_k)
    slab: Atoms | None = field(default=None, repr=False)  # relaxed clean slab
    orientations: int = 1  # starting orientations tried per site (1 for an atom)
    seed: int | None = 0  # of their random tilts and turns

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    @property
    def best(self) -> AdsorptionRow:
        return self.rows[0]

    def as_dicts(self) -> list[dict]:
        table = {
            "slab_converged": self.slab_converged,
            "references_converged": self.references_converged,
        }
        return [{**{k: get(r) for k, get in ROW_COLUMNS.items()}, **table} for r in self.rows]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (atomically: a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            os.chmod(tmp, new_file_mode())  # mkstemp's 0600 would ignore the umask
            with os.fdopen(fd, "w", newline="") as fh:
                w = _csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
                w.writeheader()
                for d in self.as_dicts():
                    w.writerow(
                        {k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in d.items()}
                    )
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return path

    def __str__(self) -> str:
        head = (
            f"{self.adsorbate} on {self.slab_name}: E_ads = E(slab+{self.adsorbate}) - E(slab) - "
            f"[{format_reference(self.reference)}]\n"
            f"E(slab) = {self.slab_energy:.4f} eV"
            f"{'' if self.slab_converged else ' (NOT converged)'}, "
            f"E_ref = {self.reference_energy:.4f} eV"
            f"{'' if self.references_converged else ' (NOT converged)'}\n"
        )
        if self.orientations > 1:
            head += (
                f"each site: the lowest of {self.orientations} starting orientations "
                f"(seed {self.seed})\n"
            )
        molecule = any(r.orientation_e_ads and len(r.orientation_e_ads) > 1 for r in self.rows)
        lines = [
            f"{'site':<14}{'E_ads/eV':>10}{'height/Å':>10}  {'converged':<10}{'final site':<14}"
            + (f"{'orientation (won)':<22}" if molecule else "")
            + "note"
        ]
        for r in self.rows:
            note = []
            if r.moved:
                note.append("moved")
            if r.dissociated:
                note.append("dissociated")
            if r.close_contact:
                note.append(f"CLOSE CONTACT ({r.min_bond_ratio:.2f} of a bond): not physical")
            if r.uncertain:
                note.append(f"UNCERTAIN (committee force std {r.max_force_std:.2f} eV/Å)")
            lines.append(
                f"{r.site:<14}{r.e_ads:>10.4f}{r.height:>10.3f}  "
                f"{('yes' if r.converged else 'NO'):<10}"
                f"{r.final_site:<14}"
                + (f"{r.orientation:<22}" if molecule else "")
                + ",".join(note)
            )
        return head + "\n".join(lines)


# --------------------------------------------------------------------------- driver


def _resolve_slab(slab_or_spec, lattice_constant, vacuum, calc) -> tuple[Atoms, str]:
    if isinstance(slab_or_spec, Atoms):
        slab = slab_or_spec.copy()
        slab.calc = None
        if not (slab.pbc[0] and slab.pbc[1]):
            raise ValueError("the slab must be periodic in x and y")
        info = slab.info.get("adsorbate_info", {})
        if info.get("sites") == {} and "cell" not in info:
            slab = with_fcc211_sites(slab)  # ase.build.fcc211 leaves an empty dict
        site_positions(slab)  # raises a clear error without sites
        return slab, slab.get_chemical_formula()
    symbol, facet, size = parse_slab_spec(slab_or_spec)
    a = lattice_constant
    if isinstance(a, str):
        if a != "relax":
            raise ValueError(f"lattice_constant must be a number, None or 'relax', got {a!r}")
        a = bulk_lattice_constant(symbol, calc)
    slab = build_slab(symbol, facet, size, a=a, vacuum=vacuum)
    return slab, f"{symbol}({facet}) {size[0]}x{size[1]}x{size[2]}"


def bulk_lattice_constant(symbol: str, calculator, strain: float = 0.04, n: int = 9) -> float:
    """Equilibrium lattice constant of the element's reference crystal for this calculator.

    Fits an equation of state to a volume scan of the primitive cell (c/a of hcp kept).
    """
    from ase.build import bulk
    from ase.eos import EquationOfState

    atoms = bulk(symbol)
    a_ref = float(reference_states[atomic_numbers[symbol]]["a"])
    cell0 = atoms.cell[:].copy()
    scales = np.linspace(1 - strain, 1 + strain, n)
    vols, ens = [], []
    for s in scales:
        at = atoms.copy()
        at.set_cell(cell0 * s, scale_atoms=True)
        at.calc = calculator
        vols.append(at.get_volume())
        ens.append(at.get_potential_energy())
    k = int(np.argmin(ens))
    if k in (0, n - 1):
        raise ValueError(
            f"the energy of bulk {symbol} has no minimum within ±{strain:.0%} of a = {a_ref} Å for "
            f"this calculator; pass lattice_constant explicitly"
        )
    v0, _, _ = EquationOfState(vols, ens, eos="birchmurnaghan").fit()
    return a_ref * (v0 / atoms.get_volume()) ** (1 / 3)


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


def _bonds(mol: Atoms) -> list[tuple[int, int]]:
    r = covalent_radii[mol.numbers]
    out = []
    for i in range(len(mol)):
        for j in range(i + 1, len(mol)):
            if np.linalg.norm(mol.positions[i] - mol.positions[j]) < 1.25 * (r[i] + r[j]):
                out.append((i, j))
    return out


def _relax(atoms, calc, fmax, steps, relax_kwargs):
    from .relax import relax

    kwargs = dict(relax_kwargs)
    kwargs.setdefault("progress", False)
    relaxed, res = relax(
        atoms, calculator=calc, fmax=fmax, steps=steps, fix_bottom_layers=None, **kwargs
    )
    return relaxed, res


def relax_gas(
    name: str, calculator, fmax: float = 0.05, steps: int = 500, box: float = 10.0, **relax_kwargs
):
    """Relax a gas molecule (ase.build.molecule name) alone in a non-periodic box.

    Returns (relaxed atoms, relax result).
    """
    mol = _gas_molecule(name)
    mol.center(vacuum=box)
    mol.pbc = False
    return _relax(mol, calculator, fmax, steps, relax_kwargs)


def adsorption_energies(
    slab,
    adsorbate,
    calculator=None,
    sites=None,
    height: float | None = None,
    fix_bottom_layers: int | None = 2,
    fmax: float = 0.05,
    steps: int = 500,
    references=None,
    gas_energies: dict[str, float] | None = None,
    lattice_constant: float | str | None = "relax",
    vacuum: float = 10.0,
    binding_atom: int | None = None,
    csv: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    orientations: int = 3,
    seed: int | None = 0,
    **relax_kwargs,
) -> AdsorptionTable:
    """Adsorption energy of one adsorbate on every (or chosen) site of a slab.

    Args:
        slab: an ase.Atoms slab carrying ``info["adsorbate_info"]["sites"]`` (ase.build
            fcc111/fcc100/fcc110/hcp0001/bcc*, or fcc211 via :func:`with_fcc211_sites`),
            or a spec: ``"Pt111"``, ``"Cu100"``, ``"Pt211"``, ``("Pt", "111", (3, 3, 4))``.
        adsorbate: element symbol ("O"), ase.build.molecule name ("CO", "OH", "H2O")
            or an ase.Atoms; it is placed binding atom down (C of CO, O of OH).
        calculator: any ASE calculator, a potential name or model path; None = the
            default shipped GeoMFormer potential.
        sites: None or "all" for every site of the slab, or a list of site names.
        height: height of the binding atom above the top slab atom (Å, as in
            ase.build.add_adsorbate); None places it where it touches the surface
            (sum of covalent radii), which adapts to top/bridge/hollow sites.
        fix_bottom_layers: bottom layers held fixed (by tags, else z layers); None
            keeps the slab's own constraints only.
        fmax, steps: convergence of every relaxation (eV/Å, max steps).
        references: None (defaults: H from 1/2 H2, O from 1/2 O2, N from 1/2 N2, C from
            CO - 1/2 O2, OH from H2O - 1/2 H2, stable molecules from themselves), "O2" or
            "H2O" (composition-based schemes), or a dict {molecule: coefficient}.
        gas_energies: energies (eV) of reference molecules to use instead of relaxing them.
        lattice_constant: for specs: "relax" (fit the bulk equation of state with the
            calculator, the consistent choice), None (ASE's experimental value) or Å.
        vacuum: vacuum on each side for specs, Å.
        binding_atom: index in the adsorbate molecule of the atom that binds.
        csv: write the table to this CSV file.
        progress: show progress (a bar on a terminal, plain lines in a log file).
        orientations: starting orientations per site for a molecule (an atom has one):
            upright, then tilted ever further (15° to 70° from the normal, ±5°) with a
            random azimuth and turn about the molecule's axis; each is relaxed and the
            lowest kept (intact and without close contacts first). A start that keeps the
            molecule's symmetry stays on it (OH upright on a top site), so the tilted starts
            are what finds flat or tilted minima. 1: upright only.
        seed: seeds the tilts and turns (per site, so a site's starts do not depend on
            which other sites are scanned); None: fresh entropy.
        **relax_kwargs: passed on to ``geomformer_md.simulate.relax.relax`` (optimizer, ...).

    Returns:
        AdsorptionTable, rows sorted by E_ads (most stable first); rows with a close
        contact (two atoms fused, ``min_bond_ratio`` < 0.6: not physical) come last.
    """
    from .relax import make_calculator

    if not (isinstance(orientations, int) and orientations >= 1):
        raise ValueError(f"orientations must be an integer >= 1, got {orientations!r}")

    calc = make_calculator(calculator)
    name, mol, bind = adsorbate_from_name(adsorbate, binding_atom)  # cheap checks first
    ref = resolve_references(name, mol, references)
    slab, slab_name = _resolve_slab(slab, lattice_constant, vacuum, calc)
    all_sites, _ = site_positions(slab)
    if sites is None or sites == "all":
        chosen = list(all_sites)
    else:
        chosen = [sites] if isinstance(sites, str) else list(sites)
        unknown = [s for s in chosen if s not in all_sites]
        if unknown or not chosen:
            raise ValueError(
                f"unknown site(s) {unknown or chosen} for this slab; it has {list(all_sites)}"
            )
    given = dict(gas_energies or {})
    gases = [g for g in ref if g not in given]
    numbers = set(slab.numbers) | set(mol.numbers)
    for g in gases:
        numbers |= set(_gas_molecule(g).numbers)
    check_elements(calc, numbers)

    n_slab = len(slab)
    clean = fix_bottom(slab, fix_bottom_layers or 0)
    n_orient = orientations if len(mol) > 1 else 1
    bar = progress_bar(
        1 + len(gases) + len(chosen) * n_orient, f"{name}/{slab_name}", progress, unit="relaxation"
    )

    bar.set_postfix_str("clean slab")
    slab_relaxed, slab_res = _relax(clean, calc, fmax, steps, relax_kwargs)
    bar.update()
    gas_e, gas_ok = dict(given), True
    for g in gases:
        bar.set_postfix_str(f"gas {g}")
        _, res = relax_gas(g, calc, fmax=fmax, steps=steps, **relax_kwargs)
        gas_e[g], gas_ok = float(res.energy), gas_ok and bool(res.converged)
        bar.update()
    e_ref = float(sum(c * gas_e[g] for g, c in ref.items()))

    bonds = _bonds(mol)
    rows = []
    for site in chosen:
        tried = []
        for label, rotated in starting_orientations(mol, bind, n_orient, seed, site):
            bar.set_postfix_str(f"site {site} {label}")
            work = clean.copy()
            xy = all_sites[site]
            info = work.info["adsorbate_info"]
            top = info.get("top layer atom index", int(np.argmax(work.positions[:, 2])))
            h = (
                height
                if height is not None
                else _place_height(work, xy, mol[bind].symbol) - work.positions[top, 2]
            )
            from ase.build import add_adsorbate

            add_adsorbate(work, rotated, h, position=site, mol_index=bind)
            _lift_clear(work, n_slab, bind)
            relaxed, res = _relax(work, calc, fmax, steps, relax_kwargs)
            row = _row(site, relaxed, res, n_slab, bind, bonds, float(slab_res.energy), e_ref, slab)
            tried.append(replace(row, orientation=label))
            bar.update()
        # intact and physical first, then the lowest energy
        best = min(
            tried, key=lambda r: (r.close_contact, r.dissociated, math.isnan(r.e_ads), r.e_ads)
        )
        rows.append(replace(best, orientation_e_ads={r.orientation: r.e_ads for r in tried}))
    bar.set_postfix_str("")
    bar.close()
    rows.sort(key=lambda r: (math.isnan(r.e_ads), r.close_contact, r.e_ads))
    table = AdsorptionTable(
        adsorbate=name,
        slab_name=slab_name,
        rows=rows,
        slab_energy=float(slab_res.energy),
        slab_converged=bool(slab_res.converged),
        reference=ref,
        gas_energies=gas_e,
        references_converged=gas_ok,
        reference_energy=e_ref,
        slab=slab_relaxed,
        orientations=n_orient,
        seed=seed,
    )
    if csv is not None:
        table.to_csv(csv)
    return table


def _row(site, relaxed, res, n_slab, bind, bonds, e_slab, e_ref, slab) -> AdsorptionRow:
    pos = relaxed.positions
    b = n_slab + bind
    slab_pos = pos[:n_slab]
    height = float(pos[b, 2] - slab_pos[:, 2].max())
    final, _ = nearest_site(slab, pos[b, :2])
    # Left the surface: no slab atom within 1.5x the bond length of the binding atom.
    d = relaxed.get_distances(b, list(range(n_slab)), mic=True)
    r0 = covalent_radii[relaxed.numbers[b]] + covalent_radii[relaxed.numbers[:n_slab]]
    if np.all(d > 1.5 * r0):
        final = "desorbed"
    # Dissociated: a bond of the gas molecule (< 1.25 x sum of radii) stretched past 1.5 x.
    r = covalent_radii[relaxed.numbers]
    broken = any(
        relaxed.get_distance(n_slab + i, n_slab + j, mic=True)
        > 1.5 * (r[n_slab + i] + r[n_slab + j])
        for i, j in bonds
    )
    e = float(res.energy)
    contact = closest_contact(relaxed)
    return AdsorptionRow(
        site=site,
        final_site=final,
        moved=final != site,
        e_ads=e - e_slab - e_ref,
        energy=e,
        height=height,
        converged=bool(res.converged),
        steps=int(res.steps),
        fmax=float(res.fmax),
        dissociated=bool(broken),
        atoms=relaxed,
        min_bond_ratio=contact.ratio,
        close_contact=contact.close,
        tilt_deg=_tilt(relaxed, n_slab, b),
        max_force_std=float(getattr(res, "max_force_std", math.nan)),
        uncertain=bool(getattr(res, "uncertain", False)),
    )


def _tilt(atoms: Atoms, n_slab: int, b: int) -> float:
    """Angle (degrees) between the surface normal and the line from the binding atom to the
    centre of the adsorbate's other atoms; nan for a single atom."""
    others = [k for k in range(n_slab, len(atoms)) if k != b]
    if not others:
        return math.nan
    v = atoms.get_distances(b, others, mic=True, vector=True).mean(axis=0)
    return float(np.degrees(np.arccos(np.clip(v[2] / np.linalg.norm(v), -1.0, 1.0))))


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
