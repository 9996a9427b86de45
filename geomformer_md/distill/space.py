"""The configuration space of a distillation run: which structures to start from.

A space is elements plus any of: bulk (strained fcc), alloys (random solid solutions and
ordered L1_2 / L1_0 phases of element pairs), surfaces by Miller index (for alloy pairs
with a random or segregated top layer or cut from an ordered phase; adatoms and
vacancies), clusters (icosahedra, octahedra / truncated octahedra / cuboctahedra,
decahedra; pure or alloyed), and adsorbates by formula with a binding atom and their
sites at coverages on surfaces and clusters, co-adsorbed pairs on surfaces, plus the
gas-phase molecules themselves. ``sample`` draws starting structures, each tagged in
``atoms.info`` with its ``category`` and the keys a hold-out rule can match:

    category      bulk | alloy | surface | surface+ads | cluster | cluster+ads | gas
    elements      metal elements, sorted and joined ("Cu", "Ag-Cu")
    facet         Miller index of a surface ("111", "211"), "none" otherwise
    adsorbate     adsorbate name, "CO+O" for a co-adsorbed pair, "none" for none
    shape         cluster shape and metal atom count ("icosahedron13"), "none" otherwise
    cluster_size  metal atoms of a cluster ("55"), "none" otherwise

A hold-out rule matches a structure when every key it gives matches: a value or a list
of values (any of them); ``elements`` in any order ("Pd-Au" is "Au-Pd"); ``adsorbate``
matches a structure holding that adsorbate, alone or co-adsorbed ({adsorbate: [NH, NH2,
NH3]} holds out the whole NHx family, "NH3+H" included, and the gas-phase molecules).

and, for what a test set reports per structure (not hold-out keys):

    order      alloy surface: random | segregated | L12 | L10; "none" otherwise
    defect     adatom | vacancy | "none"
    coverage   adsorbates placed per atom of the clean top layer (surfaces), "none" otherwise

(never an empty string: extxyz cannot read an empty value back)

Slabs are whole atomic planes: ``surface_layers`` is the number of atomic planes for every
facet (ase.build.surface counts layers of the cubic cell, which hold one plane on (111)
and (311), two on (100) and (110), and can leave the outer planes part-filled).

Lattice constants (fcc) come from the teacher (distill.teacher.lattice_constants) and mix
by Vegard's law in alloys. Structures are built with ASE (ase.build, ase.cluster).
"""

from __future__ import annotations

import itertools

import numpy as np
from ase import Atoms
from ase.build import bulk, surface
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, covalent_radii

from .space_config import (
    CATEGORIES,
    CLUSTER_SHAPES,
    EXTRA_MOLECULES,
    HOLDOUT_KEYS,
    ORIENTATIONS,
    SITES,
    SURFACE_SITES,
    Adsorbate,
    SpaceConfig,
    _binding_index,
    adsorbate_molecule,
    matches,
    parse_space,
    reference_molecules,
    rule_name,
)

__all__ = ["ADSORBATE_MIN_DISTANCE", "ADSORBATE_NO_BOND", "CATEGORIES", "CLUSTER_SHAPES",
           "EXTRA_MOLECULES", "HOLDOUT_KEYS", "KIND_CATEGORY", "ORIENTATIONS", "SITES",
           "SURFACE_SITES", "Adsorbate", "Space", "SpaceConfig", "adsorbate_molecule",
           "bottom_layer", "exposed_atoms", "matches", "parse_space", "reference_molecules",
           "rule_name", "top_layer"]

KIND_CATEGORY = {"alloy_random": "alloy", "alloy_ordered": "alloy"}  # builder -> category

# Atoms of different adsorbates stay at least max(ADSORBATE_MIN_DISTANCE, ADSORBATE_NO_BOND x
# the covalent bond length) apart: no bond between them (a hydrogen bond O...H, ~1.8 Å, stays)
ADSORBATE_MIN_DISTANCE = 1.8  # Å
ADSORBATE_NO_BOND = 1.3


# --------------------------------------------------------------------------- builders


def _fcc(symbol: str, a: float, size: int) -> Atoms:
    return bulk(symbol, "fcc", a=a, cubic=True) * (size, size, size)


def _strain(atoms: Atoms, rng: np.random.Generator, amount: float) -> Atoms:
    eps = rng.uniform(-amount, amount, (3, 3))
    eps = 0.5 * (eps + eps.T)
    atoms.set_cell(atoms.cell @ (np.eye(3) + eps), scale_atoms=True)
    return atoms


def _ordered(kind: str, a_el: str, b_el: str, a0: float) -> Atoms:
    cell = bulk(a_el, "fcc", a=a0, cubic=True)  # 4 atoms at (0,0,0), (0,½,½), (½,0,½), (½,½,0)
    symbols = [b_el, a_el, a_el, a_el] if kind == "L12" else [a_el, a_el, b_el, b_el]
    if kind == "L10":  # layers along z: atoms at z = 0 are A, at z = ½ are B
        symbols = [a_el if abs(p[2]) < 1e-6 else b_el for p in cell.positions]
    cell.set_chemical_symbols(symbols)
    return cell


def _substitute(atoms: Atoms, rng, b_el: str, fraction: float, where=None) -> Atoms:
    idx = np.arange(len(atoms)) if where is None else np.asarray(where)
    n = max(1, int(round(fraction * len(idx))))
    chosen = rng.choice(idx, size=min(n, len(idx)), replace=False)
    symbols = atoms.get_chemical_symbols()
    for k in chosen:
        symbols[k] = b_el
    atoms.set_chemical_symbols(symbols)
    return atoms


def top_layer(atoms: Atoms, tol: float = 0.5) -> np.ndarray:
    z = atoms.positions[:, 2]
    return np.flatnonzero(z > z.max() - tol)


def bottom_layer(atoms: Atoms, tol: float = 0.5) -> np.ndarray:
    z = atoms.positions[:, 2]
    return np.flatnonzero(z < z.min() + tol)


def _slab(cell: Atoms, miller: str, layers: int, size, vacuum: float) -> Atoms:
    """``layers`` whole atomic planes of the cubic cell ``cell`` (an fcc element or an
    ordered alloy) cut at ``miller``. ase.build.surface counts layers of the cubic cell,
    which hold one or more atomic planes and can leave the outer ones part-filled (a
    "3-layer" (311) slab had a top plane of one atom): cut a thick slab, keep whole planes."""
    hkl = tuple(int(c) for c in miller)
    thick = surface(cell, hkl, 2 * layers + 4, vacuum=vacuum, periodic=True)
    thick.pbc = (True, True, False)
    thick.wrap()
    order = np.argsort(thick.positions[:, 2], kind="stable")
    planes = np.split(order, np.flatnonzero(np.diff(thick.positions[order, 2]) > 0.3) + 1)
    full = max(len(p) for p in planes)
    first = next(k for k in range(len(planes))
                 if all(len(p) == full for p in planes[k:k + layers]))
    slab = thick[np.sort(np.concatenate(planes[first:first + layers]))]
    slab.center(vacuum=vacuum, axis=2)
    slab = slab * (size[0], size[1], 1)
    slab.wrap()
    return slab


def exposed_atoms(atoms: Atoms) -> np.ndarray:
    """Metal atoms of the upper half of a slab with fewer than 12 metal neighbours (within
    1.2x the nearest-neighbour distance): the top layer, and below it every atom that the
    vacuum can reach (terrace and step-foot atoms of (211), the troughs of (110))."""
    metal = np.flatnonzero(~np.isin(atoms.numbers, list(_LIGHT)))
    d = atoms.get_all_distances(mic=True)[np.ix_(metal, metal)]
    np.fill_diagonal(d, np.inf)
    cn = (d < 1.2 * d.min()).sum(1)
    z = atoms.positions[metal, 2]
    return metal[(cn < 12) & (z > 0.5 * (z.min() + z.max()))]


def _surface_normal_sites(atoms: Atoms, rng, n: int, periodic: bool, exposed: bool = False):
    """n (position, outward normal) pairs on the outer atoms: top layer (or, with
    ``exposed``, every exposed atom) of a slab, or the atoms farthest from a cluster's
    centre."""
    if periodic:
        outer = exposed_atoms(atoms) if exposed else top_layer(atoms)
        normals = np.tile([0.0, 0.0, 1.0], (len(outer), 1))
    else:
        centre = atoms.positions.mean(0)
        r = np.linalg.norm(atoms.positions - centre, axis=1)
        outer = np.flatnonzero(r > r.max() - 0.8)
        normals = (atoms.positions[outer] - centre) / r[outer, None]
    order = rng.permutation(len(outer))[:n]
    return outer[order], normals[order]


def _place(atoms: Atoms, ads: Adsorbate, rng, anchor: int, normal, tilt_deg: float,
           tries: int = 10, orientations: tuple[str, ...] = (),
           min_contact: float = 0.75) -> Atoms:
    """One adsorbate on a top, bridge or hollow site (one of ``ads.sites``) next to atom
    ``anchor``, tilted (0 to ``tilt_deg``, or within the range of an orientation drawn from
    ``orientations``) and spun at random. A placement with any atom closer than
    ``min_contact`` x the covalent bond length to a metal atom, or bonded to another
    adsorbate (see ADSORBATE_MIN_DISTANCE), is redrawn; after ``tries`` the structure is
    returned unchanged."""
    _, mol0, bind = adsorbate_molecule(ads.formula, _binding_index(ads))
    for _ in range(tries):
        mol = mol0.copy()
        if len(mol) > 1:  # upright along +z, then a random tilt and spin
            low, high = (0.0, tilt_deg) if not orientations else ORIENTATIONS[
                orientations[rng.integers(len(orientations))]]
            mol.rotate(rng.uniform(low, high), rng.normal(size=3) * [1, 1, 0] + [1e-9, 0, 0])
            mol.rotate(rng.uniform(0, 360), "z")
        mol.rotate("z", normal)
        kind = rng.choice(list(ads.sites or SITES))
        site = _site(atoms, anchor, np.asarray(normal, float), kind, rng)
        bond = covalent_radii[atoms.numbers[anchor]] + covalent_radii[mol.numbers[bind]]
        height = {"top": 1.0, "bridge": 0.8, "hollow": 0.7}[kind] * bond
        mol.positions += site + height * np.asarray(normal) - mol.positions[bind]
        if _clear(atoms, mol, min_contact):
            return atoms + mol
    return atoms


SITE_DEPTH = 1.5  # Å: neighbours deeper than this below the anchor (along the normal) are
#                  not part of its bridge and hollow sites ((111) and (100) subsurface
#                  atoms are 2.0-2.3 Å deeper, the (110) second row 1.4 Å)


def _site(atoms: Atoms, anchor: int, normal: np.ndarray, kind: str, rng) -> np.ndarray:
    """Position of a top, bridge or hollow site at metal atom ``anchor``: the midpoint to
    one of its nearest metal neighbours, or the centre of the 3-fold or 4-fold hollow it
    spans with two of them (60° or 90° apart: the circumcentre of the three atoms), drawn
    at random among the neighbours at the surface (periodic images included)."""
    origin = atoms.positions[anchor].copy()
    if kind == "top":
        return origin
    vec = atoms.get_distances(anchor, range(len(atoms)), mic=bool(atoms.pbc.any()), vector=True)
    dist = np.linalg.norm(vec, axis=1)
    ok = (dist > 0.1) & (vec @ normal > -SITE_DEPTH) & ~np.isin(atoms.numbers, list(_LIGHT))
    if not ok.any():
        return origin
    near = np.flatnonzero(ok & (dist < 1.2 * dist[ok].min()))
    pairs = [(vec[i], vec[j]) for i, j in itertools.combinations(near, 2)
             if vec[i] @ vec[j] > np.cos(np.radians(100)) * dist[i] * dist[j]]
    if kind == "hollow" and pairs:
        a, b = pairs[rng.integers(len(pairs))]
        axb = np.cross(a, b)
        return origin + np.cross((a @ a) * b - (b @ b) * a, axb) / (2 * axb @ axb)
    return origin + 0.5 * vec[rng.choice(near)]


def _clear(atoms: Atoms, mol: Atoms, fraction: float = 0.75) -> bool:
    """No atom of ``mol`` closer than fraction x the covalent bond length to ``atoms``, nor
    bonded to its adsorbate atoms (ADSORBATE_MIN_DISTANCE; periodic images included)."""
    both = atoms + mol
    n = len(atoms)
    light = np.isin(atoms.numbers, list(_LIGHT))
    for k in range(n, len(both)):
        d = both.get_distances(k, range(n), mic=bool(both.pbc.any()))
        bond = covalent_radii[both.numbers[k]] + covalent_radii[both.numbers[:n]]
        limit = np.where(light, np.maximum(ADSORBATE_NO_BOND * bond, ADSORBATE_MIN_DISTANCE),
                         fraction * bond)
        if (d < limit).any():
            return False
    return True


class Space:
    """Draws tagged starting structures from a SpaceConfig."""

    def __init__(self, cfg: SpaceConfig, lattice_constants: dict[str, float]) -> None:
        self.cfg = cfg
        self.a0 = dict(lattice_constants)
        self.kinds = self._kinds()
        if not self.kinds:
            raise ValueError("the configuration space is empty: no structure kind to sample")
        self._by_category: dict[str, list[int]] = {}
        for k, (kind, _) in enumerate(self.kinds):
            self._by_category.setdefault(KIND_CATEGORY.get(kind, kind), []).append(k)
        self._categories = sorted(self._by_category)
        w = np.array([cfg.category_weights.get(c, 1.0) for c in self._categories])
        if cfg.category_weights and not w.sum() > 0:
            raise ValueError(f"space.category_weights give weight 0 to every category of the "
                             f"space {self._categories}")
        self._weights = w / w.sum() if w.sum() > 0 else w

    def _kinds(self) -> list[tuple]:
        """Every (builder, arguments) the space offers, in a fixed order."""
        c, kinds = self.cfg, []
        if c.bulk:
            kinds += [("bulk", (el,)) for el in c.elements]
        for pair in c.alloy_pairs:
            kinds += [("alloy_random", (pair, x)) for x in c.alloy_compositions]
            kinds += [("alloy_ordered", (pair, o)) for o in c.ordered]
        hosts = [(el,) for el in c.elements] + list(c.alloy_pairs)
        for m, host in itertools.product(c.miller, hosts):
            kinds.append(("surface", (host, m)))
            kinds += [("surface+ads", (host, m, a)) for a in c.adsorbates]
            kinds += [("surface+ads", (host, m, pair)) for pair in c.coadsorption]
        for shape, host in itertools.product(c.clusters, hosts):
            kinds.append(("cluster", (host, shape)))
            kinds += [("cluster+ads", (host, shape, a)) for a in c.adsorbates]
        if c.gas:
            gas = list(c.adsorbates)
            if c.gas_references:
                have = {a.formula for a in gas}
                gas += [Adsorbate(m) for m in reference_molecules(c.all_adsorbates)
                        if m not in have]
            kinds += [("gas", (a,)) for a in gas]
        return kinds

    def vegard(self, host) -> float:
        return float(np.mean([self.a0[e] for e in host]))

    def sample(self, rng: np.random.Generator, n: int, rule: dict | None = None) -> list[Atoms]:
        """n structures, kinds drawn uniformly: those that no hold-out rule matches (for
        training), or with ``rule`` those that it matches (held-out validation)."""
        out, tries = [], 0
        while len(out) < n:
            tries += 1
            if tries > 50 * n + 100:
                which = f"structures matching hold-out rule {rule}" if rule else (
                    "structures outside the hold-out rules")
                raise ValueError(f"the configuration space has no {which} (check space)")
            if self.cfg.category_weights and rule is None:
                cat = self._categories[rng.choice(len(self._categories), p=self._weights)]
                members = self._by_category[cat]
                kind, args = self.kinds[members[rng.integers(len(members))]]
            else:
                kind, args = self.kinds[rng.integers(len(self.kinds))]
            atoms = self.build(kind, args, rng)
            if rule is not None:
                keep = matches(atoms.info, rule)
            else:
                keep = not any(matches(atoms.info, r) for r in self.cfg.holdout)
            if keep:
                out.append(atoms)
        return out

    def build(self, kind: str, args: tuple, rng: np.random.Generator) -> Atoms:
        c = self.cfg
        ads_names = "none"
        if kind == "bulk":
            (el,) = args
            atoms = _strain(_fcc(el, self.a0[el], c.bulk_size), rng, c.strain)
            tags = {"category": "bulk", "elements": el}
        elif kind in ("alloy_random", "alloy_ordered"):
            (a_el, b_el), x = args
            x_b = {"L12": 0.25, "L10": 0.5}.get(x, x)  # fraction of B, for Vegard's law
            a0 = (1 - x_b) * self.a0[a_el] + x_b * self.a0[b_el]
            if kind == "alloy_random":
                atoms = _substitute(_fcc(a_el, a0, c.bulk_size), rng, b_el, x)
            else:
                atoms = _ordered(x, a_el, b_el, a0) * ((c.bulk_size,) * 3)
            atoms = _strain(atoms, rng, c.strain)
            tags = {"category": "alloy", "elements": "-".join(sorted((a_el, b_el)))}
        elif kind in ("surface", "surface+ads"):
            host, miller = args[0], args[1]
            order, cell = "none", bulk(host[0], "fcc", a=self.vegard(host), cubic=True)
            if len(host) == 2:
                order = c.alloy_surfaces[rng.integers(len(c.alloy_surfaces))]
                if order in ("L12", "L10"):  # cut from the ordered phase (Vegard's law)
                    x_b = {"L12": 0.25, "L10": 0.5}[order]
                    a0 = (1 - x_b) * self.a0[host[0]] + x_b * self.a0[host[1]]
                    cell = _ordered(order, host[0], host[1], a0)
            atoms = _slab(cell, miller, c.layers(miller), c.size(miller), c.vacuum)
            if order in ("random", "segregated"):  # random sites, everywhere or top layer
                where = top_layer(atoms) if order == "segregated" else None
                atoms = _substitute(atoms, rng, host[1], rng.choice([0.25, 0.5, 0.75]), where)
            n_top = len(top_layer(atoms))  # of the clean surface: the coverage unit
            defect = "none"
            if c.defects and rng.random() < 0.5:
                defect = str(rng.choice(list(c.defects)))
                atoms = self._defect(atoms, rng, defect)
            atoms.set_constraint(FixAtoms(indices=bottom_layer(atoms)))
            coverage = "none"
            if kind == "surface+ads":
                ads = args[2] if isinstance(args[2], tuple) else (args[2],)
                cov = rng.choice(list(c.coverages))
                n_ads = max(len(ads), int(round(cov * n_top)))
                anchors, normals = _surface_normal_sites(
                    atoms, rng, n_ads, periodic=True, exposed=c.surface_sites == "exposed")
                placed = []  # formulas of the adsorbates that found room
                for j, (k, nrm) in enumerate(zip(anchors, normals, strict=True)):
                    before = len(atoms)
                    atoms = _place(atoms, ads[j % len(ads)], rng, int(k), nrm, tilt_deg=60,
                                   orientations=c.orientations, min_contact=c.min_contact)
                    if len(atoms) > before:
                        placed.append(ads[j % len(ads)].formula)
                ads_names = "+".join(a.formula for a in ads if a.formula in placed) or "none"
                coverage = round(len(placed) / n_top, 4)
            tags = {"category": kind, "elements": "-".join(sorted(set(host))), "facet": miller,
                    "order": order, "defect": defect, "coverage": coverage}
        elif kind in ("cluster", "cluster+ads"):
            host, shape = args[0], args[1]
            build, keys = CLUSTER_SHAPES[shape["shape"]]
            atoms = build(host[0], **{k: shape[k] for k in keys},
                          latticeconstant=self.vegard(host))
            atoms = Atoms(atoms.get_chemical_symbols(), atoms.positions)
            if len(host) == 2:
                atoms = _substitute(atoms, rng, host[1], rng.choice([0.25, 0.5]))
            if kind == "cluster+ads":
                anchors, normals = _surface_normal_sites(atoms, rng, 1, periodic=False)
                before = len(atoms)
                atoms = _place(atoms, args[2], rng, int(anchors[0]), normals[0], tilt_deg=60,
                               orientations=c.orientations, min_contact=c.min_contact)
                ads_names = args[2].formula if len(atoms) > before else "none"
            atoms.center(vacuum=c.vacuum)
            n_metal = sum(1 for z in atoms.numbers if z not in _LIGHT)
            tags = {"category": kind, "elements": "-".join(sorted(set(host))),
                    "shape": f"{shape['shape']}{n_metal}", "cluster_size": n_metal}
        elif kind == "gas":
            (ads,) = args
            _, atoms, _ = adsorbate_molecule(ads.formula)
            atoms = atoms.copy()
            atoms.center(vacuum=c.vacuum)
            atoms.pbc = False
            ads_names = ads.formula
            tags = {"category": "gas", "elements": "none"}
        else:  # pragma: no cover - kinds come from _kinds
            raise AssertionError(kind)
        info = {"category": "none", "elements": "none", "facet": "none", "adsorbate": ads_names,
                "shape": "none", "cluster_size": "none", "order": "none", "defect": "none",
                "coverage": "none"}
        info.update(tags)
        atoms.info.update(info)
        return atoms

    def _defect(self, atoms: Atoms, rng, kind: str) -> Atoms:
        top = top_layer(atoms)
        if kind == "vacancy" and len(top) > 1:
            keep = np.ones(len(atoms), bool)
            keep[rng.choice(top)] = False
            return atoms[keep]
        anchor = int(rng.choice(top))  # an adatom of a top-layer element, in a hollow
        el = atoms[anchor].symbol
        nearest = np.argsort(np.linalg.norm(atoms.positions[top] - atoms.positions[anchor], axis=1))
        hollow = atoms.positions[top[nearest[:3]]].mean(0)
        atoms += Atoms(el, [hollow + [0, 0, 0.8 * 2 * covalent_radii[atomic_numbers[el]]]])
        return atoms


_LIGHT = {1, 6, 7, 8}
