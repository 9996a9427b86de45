"""The systems of the hot-MD stability benchmark (scripts/md_stability.py, issue 24).

Each system is built by the product's own builders, seeded and reproducible: pure (111),
(100) and (211) slabs by `geomformer_md.simulate.slabs.build_slab` with adsorbates placed
as `adsorption_energies` places them (named ASE site, touching height, lifted clear);
alloy slabs, the (311) facet, particles, bulk and gas molecules by the distillation space
(`geomformer_md.distill.space.Space.build`) with a one-kind space. Lattice constants are
the labeller's (SevenNet-0, data/catalysis-v1/lattice_constants.json; Vegard's law in
alloys). Every system carries the tags of the distillation space in ``atoms.info``
(category, elements, facet, adsorbate, shape, cluster_size), so whether it is held out
comes from the hold-out rules of research/configs/distill-catalysis.yaml, not from a list
kept here.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate

from geomformer_md.distill.space import Space, parse_space
from geomformer_md.distill.space_config import Adsorbate, adsorbate_molecule
from geomformer_md.simulate.adsorbates import _lift_clear, _place_height
from geomformer_md.simulate.slabs import build_slab

REPO = Path(__file__).resolve().parent.parent
LATTICE_FILE = REPO / "data" / "catalysis-v1" / "lattice_constants.json"
DISTILL_CONFIG = REPO / "research" / "configs" / "distill-catalysis.yaml"
VACUUM = 10.0


def lattice_constants() -> dict[str, float]:
    metals = json.loads(LATTICE_FILE.read_text())["metals"]
    return {el: float(v["a0"]) for el, v in metals.items()}


@dataclass(frozen=True)
class System:
    """One benchmark system: ``build(rng)`` makes the starting structure (tags in info);
    ``fix_layers`` bottom atomic layers are held fixed (0: none, e.g. particles, bulk)."""

    name: str
    description: str
    build: Callable[[np.random.Generator], Atoms]
    fix_layers: int = 0

    def make(self, seed: int) -> Atoms:
        """The starting structure, from a generator seeded by (seed, name)."""
        rng = np.random.default_rng([int(seed), zlib.crc32(self.name.encode())])
        atoms = self.build(rng)
        atoms.constraints = []  # the benchmark fixes layers itself (fix_layers)
        return atoms


# --------------------------------------------------------------------- pure slabs


def _slab(metal: str, facet: str, size, placements, **tags) -> Callable:
    """A build_slab slab with adsorbates at named ASE sites: placements are
    (formula, binding element or None, site, (i, j) offset in surface cells)."""

    def build(rng):
        slab = build_slab(metal, facet, size, a=lattice_constants()[metal], vacuum=VACUUM)
        n_slab = len(slab)
        names = []
        for formula, binding, site, offset in placements:
            name, mol, bind = adsorbate_molecule(formula)
            if binding is not None:
                bind = mol.get_chemical_symbols().index(binding)
                _, mol, bind = adsorbate_molecule(formula, bind)
            before = len(slab)
            xy = _site_xy(slab, site, offset)
            top = slab.info["adsorbate_info"].get("top layer atom index",
                                                  int(np.argmax(slab.positions[:n_slab, 2])))
            h = _place_height(slab[:n_slab], xy, mol[bind].symbol) - slab.positions[top, 2]
            add_adsorbate(slab, mol, h, position=site, offset=offset, mol_index=bind)
            work = slab[:n_slab] + slab[before:]  # lift this adsorbate clear of the metal only
            _lift_clear(work, n_slab, bind)
            slab.positions[before:] = work.positions[n_slab:]
            names.append(name)
        info = {"category": "surface+ads" if placements else "surface", "elements": metal,
                "facet": facet, "adsorbate": "+".join(dict.fromkeys(names)) or "none",
                "shape": "none", "cluster_size": "none"}
        info.update(tags)
        slab.info.update(info)
        return slab

    return build


def _site_xy(slab: Atoms, site: str, offset) -> np.ndarray:
    info = slab.info["adsorbate_info"]
    spos = np.array(info["sites"][site]) + np.array(offset)
    return spos @ np.asarray(info["cell"])[:2, :2]


def _h_monolayer(metal: str) -> Callable:
    """1 ML H: one H in every fcc hollow of a 3x3 (111) cell."""
    return _slab(metal, "111", (3, 3, 4),
                 [("H", None, "fcc", (i, j)) for i in range(3) for j in range(3)],
                 coverage=1.0)


# --------------------------------------------------------------------- the distillation space


def _space(kind: str, args_of: Callable[[Space], tuple], **space) -> Callable:
    """A structure of one kind of the distillation space (distill.space.Space.build)."""

    def build(rng):
        raw = {"vacuum": VACUUM, "min_contact": 0.9, "orientations": ["upright"], **space}
        s = Space(parse_space(raw), lattice_constants())
        return s.build(kind, args_of(s), rng)

    return build


def _ads(s: Space, k: int = 0):
    return s.cfg.adsorbates[k]


SYSTEMS = [
    System("pt111_ch3o", "CH3O (O down) on the top site of Pt(111) 3x3x4",
           _slab("Pt", "111", (3, 3, 4), [("CH3O", "O", "ontop", (0, 0))]), fix_layers=2),
    System("pt111_coh", "COH (C down) in the fcc hollow of Pt(111) 3x3x4",
           _slab("Pt", "111", (3, 3, 4), [("COH", "C", "fcc", (0, 0))]), fix_layers=2),
    System("cu111_ch3o", "CH3O (O down) in the fcc hollow of Cu(111) 3x3x4",
           _slab("Cu", "111", (3, 3, 4), [("CH3O", "O", "fcc", (0, 0))]), fix_layers=2),
    System("cu111_coh", "COH (C down) in the fcc hollow of Cu(111) 3x3x4",
           _slab("Cu", "111", (3, 3, 4), [("COH", "C", "fcc", (0, 0))]), fix_layers=2),
    System("pt38_o", "O at a random site of a Pt38 truncated octahedron",
           _space("cluster+ads", lambda s: (("Pt",), s.cfg.clusters[0], _ads(s)),
                  elements=["Pt"], clusters=[{"shape": "octahedron", "length": 4, "cutoff": 1}],
                  adsorbates=["O"])),
    System("ptni111_co", "CO on an L1_0 PtNi(111) slab (2x2 cell, 4 planes, 64 atoms)",
           _space("surface+ads", lambda s: (("Pt", "Ni"), "111", _ads(s)),
                  elements=["Pt", "Ni"], alloy_pairs=[["Pt", "Ni"]], alloy_surfaces=["L10"],
                  miller=["111"], surface_layers=4, surface_size=[2, 2],
                  adsorbates=[{"formula": "CO", "binding": "C"}], coverages=[0.0625]),
           fix_layers=2),
    System("pt111_h_1ml", "1 ML H (9 H in the fcc hollows) on Pt(111) 3x3x4",
           _h_monolayer("Pt"), fix_layers=2),
    System("cuni111_co_o", "CO and O on a random Cu-Ni(111) slab (held-out pair)",
           _space("surface+ads", lambda s: (("Cu", "Ni"), "111", s.cfg.coadsorption[0]),
                  elements=["Cu", "Ni"], alloy_pairs=[["Cu", "Ni"]], alloy_surfaces=["random"],
                  miller=["111"], surface_layers=4, surface_size=[2, 2],
                  coadsorption=[[{"formula": "CO", "binding": "C"}, "O"]], coverages=[0.125]),
           fix_layers=2),
    System("pt311_oh", "OH on Pt(311) (held-out facet; 1x2 cell, 6 planes)",
           _space("surface+ads", lambda s: (("Pt",), "311", _ads(s)),
                  elements=["Pt"], miller=["311"], surface_layers=6, surface_size=[1, 2],
                  surface_sites="exposed", adsorbates=[{"formula": "OH", "binding": "O"}],
                  coverages=[0.125]),
           fix_layers=2),
    System("cu111_nh3", "NH3 (N down) on the top site of Cu(111) 3x3x4 (held-out family)",
           _slab("Cu", "111", (3, 3, 4), [("NH3", "N", "ontop", (0, 0))]), fix_layers=2),
    System("cu111_nh2", "NH2 (N down) on the bridge site of Cu(111) 3x3x4 (held-out family)",
           _slab("Cu", "111", (3, 3, 4), [("NH2", "N", "bridge", (0, 0))]), fix_layers=2),
    System("pt55_co", "CO on a Pt55 icosahedron (held-out size)",
           _space("cluster+ads", lambda s: (("Pt",), s.cfg.clusters[0], _ads(s)),
                  elements=["Pt"], clusters=[{"shape": "icosahedron", "noshells": 3}],
                  adsorbates=[{"formula": "CO", "binding": "C"}])),
    System("pt111_h2o_oh", "H2O and OH on neighbouring top sites of Pt(111) 3x3x4",
           _slab("Pt", "111", (3, 3, 4), [("OH", "O", "ontop", (0, 0)),
                                          ("H2O", "O", "ontop", (1, 0))]), fix_layers=2),
    System("pd100_no", "NO (N down) in the hollow of Pd(100) 3x3x4",
           _slab("Pd", "100", (3, 3, 4), [("NO", "N", "hollow", (0, 0))]), fix_layers=2),
    System("ni111_cho", "CHO (C down) in the fcc hollow of Ni(111) 3x3x4",
           _slab("Ni", "111", (3, 3, 4), [("CHO", "C", "fcc", (0, 0))]), fix_layers=2),
    System("au211_clean", "clean Au(211) 3x3 (36 atoms, 12 atomic planes)",
           _slab("Au", "211", (3, 3, 4), []), fix_layers=4),
    System("pt_bulk", "fcc Pt, 32-atom cubic cell, unstrained",
           _space("bulk", lambda s: ("Pt",), elements=["Pt"], strain=0.0)),
    System("pt3ni_bulk", "L1_2 Pt3Ni, 32-atom cubic cell, unstrained",
           _space("alloy_ordered", lambda s: (("Pt", "Ni"), "L12"), elements=["Pt", "Ni"],
                  alloy_pairs=[["Pt", "Ni"]], ordered=["L12"], strain=0.0)),
    System("au13_clean", "clean Au13 icosahedron",
           _space("cluster", lambda s: (("Au",), s.cfg.clusters[0]), elements=["Au"],
                  clusters=[{"shape": "icosahedron", "noshells": 2}])),
    System("gas_ch2o", "a formaldehyde molecule in vacuum",
           _space("gas", lambda s: (_ads(s),), elements=["Pt"],
                  adsorbates=[{"formula": "CH2O", "binding": "C"}])),
]

__all__ = ["SYSTEMS", "System", "Adsorbate", "lattice_constants"]
