"""The configuration of a distillation space: SpaceConfig and its validation from YAML,
the adsorbate molecules (ase.build.molecule's and those it lacks), and the hold-out rules
(``matches``, ``rule_name``). distill/space.py builds structures from it; its docstring
lists the tags a rule can match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.cluster import Decahedron, Icosahedron, Octahedron
from ase.data import atomic_numbers

from ..simulate.catalysis import adsorbate_from_name

CATEGORIES = ("bulk", "alloy", "surface", "surface+ads", "cluster", "cluster+ads", "gas")
CLUSTER_SHAPES = {
    # name -> (ASE builder, the keyword arguments a config entry may give)
    "icosahedron": (Icosahedron, ("noshells",)),
    "octahedron": (Octahedron, ("length", "cutoff")),
    "decahedron": (Decahedron, ("p", "q", "r")),
}


SITES = ("top", "bridge", "hollow")


def _hydroperoxyl() -> Atoms:  # HO2 (OOH): O-O 1.33 Å, O-H 0.97 Å, O-O-H 104° (CCCBDB)
    t = np.radians(180 - 104.3)
    return Atoms("O2H", [[0, 0, 0], [1.331, 0, 0], [1.331 + 0.971 * np.cos(t),
                                                      0.971 * np.sin(t), 0]])


def _hydroxymethylidyne() -> Atoms:  # COH: C-O 1.27 Å, O-H 0.98 Å, C-O-H 110°, a start
    t = np.radians(180 - 110.0)         # geometry (the adsorbed radical relaxes from it)
    return Atoms("COH", [[0, 0, 0], [1.27, 0, 0], [1.27 + 0.98 * np.cos(t),
                                                   0.98 * np.sin(t), 0]])


def _formyl() -> Atoms:  # CHO: ase.build.molecule's HCO (atoms C, O, H)
    from ase.build import molecule

    return molecule("HCO")


def _methylene() -> Atoms:  # CH2: ase.build.molecule's triplet ground state CH2_s3B1d
    from ase.build import molecule

    return molecule("CH2_s3B1d")


def _formaldehyde() -> Atoms:  # CH2O: ase.build.molecule's H2CO, carbon first
    from ase.build import molecule

    mol = molecule("H2CO")
    return mol[np.argsort([s != "C" for s in mol.get_chemical_symbols()], kind="stable")]


# Adsorbates that ase.build.molecule lacks (or names otherwise), binding atom first.
EXTRA_MOLECULES = {"OOH": _hydroperoxyl, "COH": _hydroxymethylidyne, "CHO": _formyl,
                   "CH2": _methylene, "CH2O": _formaldehyde}
ORIENTATIONS = {  # tilt of the molecule's axis (binding atom -> the rest) from the normal, °
    "upright": (0.0, 10.0), "tilted": (20.0, 60.0), "flat": (80.0, 90.0)}
HOLDOUT_KEYS = ("category", "elements", "facet", "adsorbate", "shape", "cluster_size")
SURFACE_SITES = ("top_layer", "exposed")


def adsorbate_molecule(formula: str, binding_atom: int | None = None) -> tuple[str, Atoms, int]:
    """simulate.catalysis.adsorbate_from_name, knowing EXTRA_MOLECULES as well."""
    if formula in EXTRA_MOLECULES:
        _, mol, bind = adsorbate_from_name(EXTRA_MOLECULES[formula](), binding_atom)
        return formula, mol, bind
    try:
        return adsorbate_from_name(formula, binding_atom)
    except ValueError as exc:
        raise ValueError(f"{exc}; the configuration space also knows "
                         f"{sorted(EXTRA_MOLECULES)}") from None


def reference_molecules(adsorbates) -> tuple[str, ...]:
    """The gas-phase molecules the adsorption energies of ``adsorbates`` are referenced to:
    their default references and both element schemes of ``simulate.references`` ("O2" and
    "H2O"), keeping those made only of the adsorbates' own elements; sorted."""
    from ase.build import molecule

    from ..simulate.references import ELEMENT_REFERENCES, resolve_references

    elements: set[str] = set()
    names: set[str] = set()
    for ads in adsorbates:
        _, mol, _ = adsorbate_molecule(ads.formula)
        mine = set(mol.get_chemical_symbols())
        elements |= mine
        try:
            names |= set(resolve_references(ads.formula, mol))
        except ValueError:  # an element no scheme covers: the schemes below name what they can
            pass
        for scheme in ELEMENT_REFERENCES.values():
            for el in mine:
                names |= set(scheme.get(el, {}))
    return tuple(n for n in sorted(names)
                 if set(molecule(n).get_chemical_symbols()) <= elements)


@dataclass(frozen=True)
class Adsorbate:
    """An adsorbate by name (element, ase.build.molecule name or one of EXTRA_MOLECULES),
    its binding element and the sites it is placed on (None: top, bridge and hollow)."""

    formula: str
    binding: str | None = None
    sites: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SpaceConfig:
    """What to sample. Every section is optional; at least one must give structures.

    Attributes:
        elements: metal elements (fcc), e.g. [Cu, Ag, Au].
        bulk: sample strained / rattled fcc bulk of each element.
        bulk_size: repetitions of the 4-atom cubic cell (2 -> 32 atoms).
        strain: largest strain component of bulk and alloy cells (0.04 = ±4 %).
        alloy_pairs: element pairs for alloys, alloy surfaces and alloy clusters.
        alloy_compositions: fractions x of the second element in random solid solutions.
        ordered: ordered phases to build for each pair: "L12" (A3B) and/or "L10" (AB).
        alloy_surfaces: how alloy slabs are made, one drawn per slab: "random" (the second
            element at random sites), "segregated" (only in the top layer), "L12" / "L10"
            (cut from the ordered phase).
        miller: surfaces by Miller index ("111", "100", "110", "211", "311").
        surface_layers: atomic planes of a slab (the bottom one is fixed in exploration),
            or a mapping by facet ({"111": 4, "211": 9}: open facets have closely spaced
            planes, 0.8 Å on (211), so they need more of them for the same thickness).
        surface_size: in-plane repetitions of the surface cell, [a, b], or a mapping by
            facet (the cells of ase.build.surface hold 4 atoms per plane on (111) and
            (311), 2 on (100), (110) and (211)).
        surface_sites: which atoms adsorbates sit on: "top_layer" (the outermost plane) or
            "exposed" (every under-coordinated atom of the upper half, so terraces and
            step feet of (211) and (311) and the troughs of (110) get adsorbates too).
            Coverage counts adsorbates per top-layer atom either way.
        vacuum: vacuum on each side of slabs and around clusters and molecules, Å.
        defects: surface defects to draw from: "adatom", "vacancy".
        clusters: cluster shapes, e.g. {shape: icosahedron, noshells: 2} (13 atoms),
            {shape: octahedron, length: 4, cutoff: 1} (38, truncated octahedron),
            {shape: octahedron, length: 3, cutoff: 1} (13, cuboctahedron).
        adsorbates: adsorbates with their binding element and sites.
        coadsorption: pairs of adsorbates placed together on surfaces (alternately, at
            least one of each).
        coverages: adsorbates per top-layer surface atom (1/9 ... 1 ML) on surfaces.
        orientations: how polyatomic adsorbates are placed, one drawn per adsorbate:
            "upright" (axis 0-10° from the normal), "tilted" (20-60°), "flat" (80-90°);
            empty: any tilt from 0 to 60°.
        min_contact: the closest an adsorbate atom is placed to a metal atom, as a fraction
            of their covalent bond length (sites themselves are at 1.0 (top) or more). 0.75
            lets H sit 1.3 Å from Pd; after the rattle, a quarter of SevenNet-0's labels of
            such starts passed 15 eV/Å (docs/distill.md): 0.9 avoids most.
        gas: include the adsorbates as gas-phase molecules.
        gas_references: with ``gas``, also the molecules their adsorption energies are
            referenced to (``reference_molecules``: H2, O2, N2, CO, H2O, ... as
            ``simulate.references`` uses them), those made of the adsorbates' elements. Without
            them an H adsorbate's energy is referenced to an H2 molecule the potential never
            saw (the issue-24 run before iteration 15: H2 off by 2.4 eV, every adsorption
            energy with H in it off by 1.2 eV per H atom).
        category_weights: relative weights of the categories when starting structures are
            drawn ({bulk: 1, surface+ads: 4}; a category not listed weighs 1); empty: every
            kind of structure equally likely, so the categories with the most kinds
            (adsorbates x facets x hosts) dominate.
        holdout: hold-out rules (module docstring): matching structures are never trained
            on and get their own validation category.
    """

    elements: tuple[str, ...] = ()
    bulk: bool = True
    bulk_size: int = 2
    strain: float = 0.04
    alloy_pairs: tuple[tuple[str, str], ...] = ()
    alloy_compositions: tuple[float, ...] = (0.25, 0.5)
    ordered: tuple[str, ...] = ("L12", "L10")
    alloy_surfaces: tuple[str, ...] = ("random", "segregated")
    miller: tuple[str, ...] = ()
    surface_layers: int | dict = 3
    surface_size: tuple[int, int] | dict = (2, 2)
    surface_sites: str = "top_layer"
    vacuum: float = 6.0
    defects: tuple[str, ...] = ()
    clusters: tuple[dict, ...] = ()
    adsorbates: tuple[Adsorbate, ...] = ()
    coadsorption: tuple[tuple[Adsorbate, Adsorbate], ...] = ()
    coverages: tuple[float, ...] = (0.25,)
    orientations: tuple[str, ...] = ()
    min_contact: float = 0.75
    gas: bool = True
    gas_references: bool = True
    category_weights: dict = field(default_factory=dict)
    holdout: tuple[dict, ...] = field(default=())

    @property
    def all_adsorbates(self) -> tuple[Adsorbate, ...]:
        """Every adsorbate of the space, alone or in a co-adsorbed pair."""
        return self.adsorbates + tuple(a for pair in self.coadsorption for a in pair)

    def layers(self, facet: str) -> int:
        """Atomic planes of a slab of this facet."""
        return self.surface_layers[facet] if isinstance(self.surface_layers, dict) else (
            self.surface_layers)

    def size(self, facet: str) -> tuple[int, int]:
        """In-plane repetitions of a slab of this facet."""
        return tuple(self.surface_size[facet] if isinstance(self.surface_size, dict)
                     else self.surface_size)


def parse_space(raw: dict) -> SpaceConfig:
    """A ``space:`` mapping from YAML -> SpaceConfig; ValueError names the bad key."""
    if not isinstance(raw, dict):
        raise ValueError(f"space must be a mapping, got {type(raw).__name__}")
    valid = {f.name for f in dataclasses.fields(SpaceConfig)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in space; valid keys: {sorted(valid)}")
    d = dict(raw)
    els = d.get("elements", ())
    if isinstance(els, str) or not all(isinstance(e, str) for e in els):
        raise ValueError(f"space.elements must be a list of element symbols, got {els!r}")
    bad = [e for e in els if e not in atomic_numbers]
    if bad:
        raise ValueError(f"space.elements: {bad} are not element symbols")
    d["elements"] = tuple(els)
    pairs = []
    for p in d.get("alloy_pairs", ()):
        if isinstance(p, str):
            p = p.split("-")
        if len(p) != 2 or any(e not in d["elements"] for e in p) or p[0] == p[1]:
            raise ValueError(f"space.alloy_pairs: {p!r} must be two different elements of "
                             f"space.elements {list(d['elements'])}")
        pairs.append(tuple(p))
    d["alloy_pairs"] = tuple(pairs)
    d["miller"] = tuple(_miller(m) for m in d.get("miller", ()))
    for key in ("ordered", "defects", "alloy_surfaces"):
        d[key] = tuple(d.get(key, SpaceConfig.__dataclass_fields__[key].default))
    for o in d["ordered"]:
        if o not in ("L12", "L10"):
            raise ValueError(f"space.ordered: {o!r} is not L12 or L10")
    for o in d["alloy_surfaces"]:
        if o not in ("random", "segregated", "L12", "L10"):
            raise ValueError(f"space.alloy_surfaces: {o!r} is not random, segregated, L12 or L10")
    if not d["alloy_surfaces"]:
        raise ValueError("space.alloy_surfaces is empty: give random, segregated, L12 or L10")
    for o in d["defects"]:
        if o not in ("adatom", "vacancy"):
            raise ValueError(f"space.defects: {o!r} is not adatom or vacancy")
    clusters = []
    for c in d.get("clusters", ()):
        if not isinstance(c, dict) or c.get("shape") not in CLUSTER_SHAPES:
            raise ValueError(f"space.clusters: {c!r} needs shape: one of {sorted(CLUSTER_SHAPES)}")
        allowed = CLUSTER_SHAPES[c["shape"]][1]
        extra = sorted(set(c) - {"shape", *allowed})
        if extra or any(not isinstance(c.get(k), int) for k in allowed):
            raise ValueError(
                f"space.clusters: {c['shape']} takes integer {list(allowed)}, got {c!r}")
        clusters.append(dict(c))
    d["clusters"] = tuple(clusters)
    d["adsorbates"] = tuple(_adsorbate(a, "space.adsorbates") for a in d.get("adsorbates", ()))
    pairs = []
    for p in d.get("coadsorption", ()):
        if isinstance(p, (str, dict)) or len(p) != 2:
            raise ValueError(f"space.coadsorption: {p!r} must be a pair of adsorbates, "
                             f"e.g. [CO, O]")
        pairs.append(tuple(_adsorbate(a, "space.coadsorption") for a in p))
    d["coadsorption"] = tuple(pairs)
    for key in ("alloy_compositions", "coverages"):
        vals = tuple(float(x) for x in d.get(key, SpaceConfig.__dataclass_fields__[key].default))
        if not all(0 < x <= 1 for x in vals):
            raise ValueError(f"space.{key} must be fractions in (0, 1], got {list(vals)}")
        d[key] = vals
    d["surface_size"] = _per_facet(d.get("surface_size", (2, 2)), "surface_size", d["miller"],
                                   _size)
    d["surface_layers"] = _per_facet(d.get("surface_layers", 3), "surface_layers", d["miller"],
                                     _layers)
    if d.get("surface_sites", "top_layer") not in SURFACE_SITES:
        raise ValueError(f"space.surface_sites must be one of {list(SURFACE_SITES)}, got "
                         f"{d['surface_sites']!r}")
    contact = d.get("min_contact", 0.75)
    if isinstance(contact, bool) or not isinstance(contact, (int, float)) or not (
            0 < contact <= 1.2):
        raise ValueError(f"space.min_contact must be a fraction in (0, 1.2], got {contact!r}")
    d["orientations"] = tuple(d.get("orientations", ()))
    bad = [o for o in d["orientations"] if o not in ORIENTATIONS]
    if bad:
        raise ValueError(f"space.orientations: {bad} are not among {list(ORIENTATIONS)}")
    weights = d.get("category_weights") or {}
    if not isinstance(weights, dict) or set(weights) - set(CATEGORIES) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0
            for w in weights.values()):
        raise ValueError(f"space.category_weights must map categories {list(CATEGORIES)} to "
                         f"weights >= 0, got {weights!r}")
    d["category_weights"] = {k: float(v) for k, v in weights.items()}
    d["holdout"] = tuple(_holdout_rule(h, d) for h in d.get("holdout", ()))
    for key in ("bulk", "gas", "gas_references"):
        if key in d and not isinstance(d[key], bool):
            raise ValueError(f"space.{key} must be true or false, got {d[key]!r}")
    cfg = SpaceConfig(**d)
    if not cfg.elements:
        raise ValueError("space.elements is empty: the configuration space has no structures")
    if not (cfg.bulk or cfg.alloy_pairs or cfg.miller or cfg.clusters):
        raise ValueError("the configuration space is empty: give bulk, alloy_pairs, miller or "
                         "clusters")
    return cfg


def _adsorbate(a, where: str) -> Adsorbate:
    formula = a.get("formula") if isinstance(a, dict) else a
    if isinstance(formula, bool):  # YAML 1.1 reads unquoted NO, ON, YES, OFF as booleans
        raise ValueError(f"{where}: {formula!r} is not an adsorbate name (YAML reads an "
                         f"unquoted NO as false: write \"NO\")")
    if not isinstance(a, (str, dict)):
        raise ValueError(f"{where}: {a!r} must be a name or {{formula: ..., binding: ..., "
                         f"sites: ...}}")
    a = {"formula": a} if isinstance(a, str) else dict(a)
    if set(a) - {"formula", "binding", "sites"} or "formula" not in a:
        raise ValueError(f"{where}: {a!r} must be {{formula: ..., binding: ..., sites: ...}}")
    adsorbate_molecule(str(a["formula"]))  # raises a clear ValueError for unknown names
    sites = a.get("sites")
    if sites is not None:
        sites = (sites,) if isinstance(sites, str) else tuple(sites)
        if not sites or set(sites) - set(SITES):
            raise ValueError(f"{where}: sites of {a['formula']} must be some of {list(SITES)}, "
                             f"got {a['sites']!r}")
    ads = Adsorbate(str(a["formula"]), a.get("binding"), sites)
    _binding_index(ads)  # raises if the binding element is not in the molecule
    return ads


def _size(v, where: str) -> tuple[int, int]:
    if (isinstance(v, (str, dict)) or len(v) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
        raise ValueError(f"{where} must be two positive integers [a, b], got {v!r}")
    return tuple(v)


def _layers(v, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
        raise ValueError(f"{where} must be an integer >= 2, got {v!r}")
    return v


def _per_facet(value, key: str, miller: tuple[str, ...], check):
    """One value for every facet, or a mapping facet -> value that covers ``miller``."""
    if not isinstance(value, dict):
        return check(value, f"space.{key}")
    out = {_miller(f): check(v, f"space.{key}[{f}]") for f, v in value.items()}
    missing = [m for m in miller if m not in out]
    if missing:
        raise ValueError(f"space.{key} has no entry for facet(s) {missing}")
    return out


def _values(v) -> list[str]:
    return [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]


def _holdout_rule(raw, space: dict) -> dict:
    """A hold-out rule with its values as lists of tag strings, checked against the space
    where a mistake would otherwise match nothing."""
    if not isinstance(raw, dict) or not raw or set(raw) - set(HOLDOUT_KEYS):
        raise ValueError(f"space.holdout: {raw!r} must match on {', '.join(HOLDOUT_KEYS)}")
    rule = {}
    for key, value in raw.items():
        vals = _values(value)
        if not vals:
            raise ValueError(f"space.holdout: {key} of {raw!r} is empty")
        if key == "elements":
            vals = ["-".join(sorted(v.split("-"))) for v in vals]
            bad = [v for v in vals if set(v.split("-")) - set(space["elements"])]
            if bad:
                raise ValueError(f"space.holdout: elements {bad} are not among space.elements "
                                 f"{list(space['elements'])}")
        elif key == "facet":
            vals = [_miller(v) for v in vals]
            bad = [v for v in vals if v not in space["miller"]]
            if bad:
                raise ValueError(f"space.holdout: facet(s) {bad} are not in space.miller "
                                 f"{list(space['miller'])}")
        elif key == "adsorbate":
            known = {a.formula for a in space["adsorbates"]} | {
                a.formula for pair in space["coadsorption"] for a in pair} | {"none"}
            bad = [v for v in vals if v not in known]
            if bad:
                raise ValueError(f"space.holdout: adsorbate(s) {bad} are not among the space's "
                                 f"adsorbates {sorted(known - {'none'})}")
        elif key == "category":
            bad = [v for v in vals if v not in CATEGORIES]
            if bad:
                raise ValueError(f"space.holdout: category {bad} is not one of {list(CATEGORIES)}")
        rule[key] = vals if len(vals) > 1 else vals[0]
    return rule


def _miller(m) -> str:
    s = str(m).strip().strip("()").replace(",", "").replace(" ", "")
    if len(s) != 3 or not s.isdigit() or s == "000":
        raise ValueError(f"space.miller: {m!r} is not a Miller index like 111 or 211")
    return s


def matches(info: dict, rule: dict) -> bool:
    """Does a structure's tag set match a hold-out rule (module docstring)?"""
    for key, value in rule.items():
        wanted = set(_values(value))
        tag = str(info.get(key, ""))
        if key == "elements":
            tag = "-".join(sorted(tag.split("-")))
        mine = set(tag.split("+")) if key == "adsorbate" else {tag}
        if not mine & wanted:
            return False
    return True


def frame_tags(atoms) -> dict:
    """Hold-out tags of a frame from elsewhere: its own info where it has the key, the metal
    elements from its atoms otherwise (so {elements: Cu-Ni} catches any Cu-Ni frame)."""
    metals = sorted({s for s in atoms.get_chemical_symbols() if s not in ("H", "C", "N", "O")})
    tags = {"elements": "-".join(metals) or "none"}
    tags.update({k: atoms.info[k] for k in HOLDOUT_KEYS if k in atoms.info})
    return tags


def rule_name(rule: dict) -> str:
    return "heldout:" + ",".join(f"{k}={'|'.join(_values(v))}" for k, v in sorted(rule.items()))


def _binding_index(ads: Adsorbate) -> int | None:
    if ads.binding is None:
        return None
    _, mol, _ = adsorbate_molecule(ads.formula)
    symbols = mol.get_chemical_symbols()
    if ads.binding not in symbols:
        raise ValueError(
            f"space.adsorbates: binding {ads.binding!r} is not an atom of {ads.formula}")
    return symbols.index(ads.binding)
