"""Configuration-space builders: whole-plane slabs of every facet, ordered alloy surfaces,
co-adsorbed pairs, adsorbate sites, the adsorbates ase.build.molecule lacks; and what issue
24 adds: hold-out rules for an alloy pair, a facet, a particle size and an adsorbate family,
orientations, per-facet slabs, exposed sites, category weights."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.data import covalent_radii
from ase.io import read

from geomformer_md.distill.space import (
    ADSORBATE_MIN_DISTANCE,
    ADSORBATE_NO_BOND,
    EXTRA_MOLECULES,
    Space,
    _slab,
    adsorbate_molecule,
    parse_space,
    top_layer,
)

A0 = {"Pt": 3.98, "Ni": 3.50, "Cu": 3.61}
_LIGHT = [1, 6, 7, 8]


def _planes(atoms):
    order = np.argsort(atoms.positions[:, 2])
    return np.split(order, np.flatnonzero(np.diff(atoms.positions[order, 2]) > 0.3) + 1)


@pytest.mark.parametrize("miller", ["111", "100", "110", "211", "311"])
@pytest.mark.parametrize("layers", [3, 4])
def test_slabs_are_whole_atomic_planes_at_the_fcc_spacing(miller, layers):
    slab = _slab(bulk("Pt", "fcc", a=3.98, cubic=True), miller, layers, (1, 1), 6.0)
    planes = _planes(slab)
    assert len(planes) == layers
    assert len({len(p) for p in planes}) == 1  # every plane full
    h, k, l = (int(c) for c in miller)
    n = h * h + k * k + l * l
    d = 3.98 / np.sqrt(n) if h % 2 and k % 2 and l % 2 else 3.98 / (2 * np.sqrt(n))
    z = [slab.positions[p, 2].mean() for p in planes]
    np.testing.assert_allclose(np.diff(z), d, atol=1e-6)
    assert list(slab.pbc) == [True, True, False]
    assert slab.positions[:, 2].min() == pytest.approx(6.0)  # the vacuum asked for below
    dist = slab.get_all_distances(mic=True)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() == pytest.approx(3.98 / np.sqrt(2), abs=1e-6)  # fcc nearest neighbours


def _space(**raw):
    return Space(parse_space({"elements": ["Pt", "Ni", "Cu"], "bulk": False, "gas": False,
                              **raw}), A0)


def _surfaces(space, n=30, seed=0, kind="surface"):
    """n structures of the space's kinds whose name starts with ``kind``, in turn."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in space.kinds if k[0].startswith(kind)]
    return [space.build(*kinds[i % len(kinds)], rng) for i in range(n)]


def test_ordered_l12_surfaces_have_the_pt3ni_order():
    space = _space(alloy_pairs=[["Pt", "Ni"]], alloy_surfaces=["L12"], miller=["111", "100"],
                   surface_layers=4)
    slabs = [a for a in _surfaces(space) if a.info["elements"] == "Ni-Pt"]
    assert slabs and all(a.info["order"] == "L12" for a in slabs)
    for slab in slabs:
        ni = slab.symbols == "Ni"
        assert ni.sum() * 4 == len(slab)  # Pt3Ni
        if str(slab.info["facet"]) == "111":
            assert all((ni[p].sum() * 4 == len(p)) for p in _planes(slab))
        # in L1_2 a minority atom has only majority nearest neighbours
        d = slab.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        assert d[np.ix_(ni, ni)].min() > 1.2 * d.min()


def _molecules(atoms, idx):
    """Molecule index of each atom of ``idx`` (joined by bonds up to 1.2x the covalent bond
    length), their covalent bond lengths and distances."""
    d = atoms.get_all_distances(mic=True)[np.ix_(idx, idx)]
    r = covalent_radii[atoms.numbers[idx]]
    group = np.arange(len(idx))
    for i, j in zip(*np.nonzero(d < 1.2 * (r[:, None] + r)), strict=True):
        group[group == group[j]] = group[i]
    return group, r[:, None] + r, d


def test_coadsorbed_pairs_keep_apart_and_are_tagged_with_what_was_placed():
    space = _space(miller=["111"], surface_size=[2, 1], surface_layers=3,
                   coadsorption=[["CO", "O"], [{"formula": "OH"}, "H"]], coverages=[0.5, 1.0])
    seen = set()
    for atoms in _surfaces(space, 24, kind="surface+ads"):
        seen.add(atoms.info["adsorbate"])
        light = np.flatnonzero(np.isin(atoms.numbers, _LIGHT))
        group, bond, d = _molecules(atoms, light)
        names = {"".join(sorted(atoms[light[group == g]].get_chemical_symbols()))
                 for g in set(group)}
        expected = {"".join(sorted(Atoms(n).get_chemical_symbols()))
                    for n in atoms.info["adsorbate"].split("+")}
        assert names == expected, (names, atoms.info)
        n_top = len(top_layer(atoms[:light[0]]))
        assert atoms.info["coverage"] * n_top == pytest.approx(len(set(group)))
        # atoms of different adsorbates: no bond between them
        other = group[:, None] != group
        limit = np.maximum(ADSORBATE_NO_BOND * bond, ADSORBATE_MIN_DISTANCE)
        assert (d[other] >= limit[other] - 1e-9).all()
    assert {"CO+O", "OH+H"} <= seen


@pytest.mark.parametrize("name", sorted(EXTRA_MOLECULES))
def test_extra_adsorbates_bind_through_their_binding_atom_and_stay_intact(name):
    _, mol, bind = adsorbate_molecule(name)
    assert mol.get_chemical_symbols()[bind] == name[0]
    space = _space(miller=["111"], surface_size=[2, 1], adsorbates=[{"formula": name}],
                   coverages=[0.125])
    for atoms in _surfaces(space, 6, kind="surface+ads"):
        ads = np.flatnonzero(np.isin(atoms.numbers, _LIGHT))
        assert len(ads) == len(mol)
        metal = np.flatnonzero(~np.isin(atoms.numbers, _LIGHT))
        binding = ads[bind]  # placed in the molecule's atom order
        assert atoms[binding].symbol == name[0]
        d = atoms.get_distances(binding, metal, mic=True)
        bond = covalent_radii[atoms.numbers[binding]] + covalent_radii[atoms.numbers[metal]]
        assert 0.9 < (d / bond).min() < 1.1  # at bonding distance of the surface
        np.testing.assert_allclose(  # the molecule is placed rigidly
            np.sort(atoms.get_all_distances(mic=True)[np.ix_(ads, ads)].ravel()),
            np.sort(mol.get_all_distances().ravel()), atol=1e-6)


def test_sites_restrict_where_an_adsorbate_sits():
    space = _space(miller=["111"], surface_size=[2, 1], coverages=[0.125],
                   adsorbates=[{"formula": "NH3", "binding": "N", "sites": ["top"]}])
    for atoms in _surfaces(space, 8, kind="surface+ads"):
        n = np.flatnonzero(atoms.numbers == 7)[0]
        top = top_layer(atoms[:n])
        lateral = np.linalg.norm((atoms.positions[top] - atoms.positions[n])[:, :2], axis=1)
        assert lateral.min() < 1e-6  # right above a surface atom


@pytest.mark.parametrize("raw, message", [
    ({"adsorbates": [{"formula": "CO", "sites": ["fcc"]}]}, "sites of CO must be some of"),
    ({"alloy_surfaces": ["B2"]}, "space.alloy_surfaces: 'B2' is not"),
    ({"coadsorption": [["CO"]]}, "must be a pair of adsorbates"),
    ({"adsorbates": ["XYZ"]}, "also knows ['CH2', 'CH2O', 'CHO', 'COH', 'OOH']"),
    ({"adsorbates": [{"formula": "OOH", "binding": "N"}]}, "binding 'N' is not an atom of OOH"),
    ({"adsorbates": [False]}, "YAML reads an unquoted NO as false: write \"NO\""),
    ({"coadsorption": [[False, "O"]]}, "YAML reads an unquoted NO as false"),
])
def test_bad_space_entries_name_the_problem(raw, message):
    with pytest.raises(ValueError) as exc:
        parse_space({"elements": ["Pt"], "miller": ["111"], **raw})
    assert message in str(exc.value)


@pytest.mark.parametrize("miller, site, n_equal, lateral", [
    ("111", "hollow", 3, 1 / np.sqrt(3)), ("100", "hollow", 4, 1 / np.sqrt(2)),
    ("111", "bridge", 2, 0.5), ("100", "bridge", 2, 0.5)])
def test_bridge_and_hollow_sites_are_between_top_layer_atoms(miller, site, n_equal, lateral):
    space = _space(elements=["Pt"], miller=[miller], surface_size=[2, 2], surface_layers=3,
                   coverages=[0.05],
                   adsorbates=[{"formula": "H", "sites": [site]}])
    for atoms in _surfaces(space, 6, kind="surface+ads"):
        h = np.flatnonzero(atoms.numbers == 1)
        assert len(h) == 1
        top = top_layer(atoms[:h[0]])
        vec = atoms.get_distances(h[0], top, mic=True, vector=True)
        assert (vec[:, 2] < -0.5).all()  # above the top plane
        r = np.sort(np.linalg.norm(vec[:, :2], axis=1))
        nn = 3.98 / np.sqrt(2)
        np.testing.assert_allclose(r[:n_equal], lateral * nn, atol=1e-6)
        assert r[n_equal] > lateral * nn + 0.3


# ------------------------------------------------------------------ issue 24 extensions

HELD = [{"elements": "Pd-Au"}, {"facet": 311}, {"cluster_size": 55},
        {"adsorbate": ["NH", "NH2", "NH3"]}]
BROAD = {
    "elements": ["Cu", "Pd", "Au"], "bulk_size": 1, "alloy_pairs": [["Pd", "Au"], ["Cu", "Pd"]],
    "miller": ["111", "311"], "surface_layers": {"111": 3, "311": 4},
    "surface_size": {"111": [1, 1], "311": [1, 1]},
    "clusters": [{"shape": "icosahedron", "noshells": 2}, {"shape": "icosahedron", "noshells": 3},
                 {"shape": "octahedron", "length": 5, "cutoff": 2}],
    "adsorbates": ["H", "O", "NH", "NH2", "NH3"], "coadsorption": [["NH3", "H"], ["O", "H"]],
    "coverages": [0.25, 0.5], "holdout": HELD,
}


def _held(atoms) -> list[int]:
    """Which of HELD a structure falls under, judged from the structure itself."""
    metals = sorted({s for s in atoms.get_chemical_symbols() if s not in "HCNO"})
    n_metal = sum(s not in "HCNO" for s in atoms.get_chemical_symbols())
    out = []
    if metals == ["Au", "Pd"]:
        out.append(0)
    if str(atoms.info["facet"]) == "311":
        out.append(1)
    if atoms.info["category"].startswith("cluster") and n_metal == 55:
        out.append(2)
    sym = np.array(atoms.get_chemical_symbols())
    n_idx, h_idx = np.flatnonzero(sym == "N"), np.flatnonzero(sym == "H")
    if len(n_idx) and len(h_idx) and atoms.get_all_distances()[np.ix_(n_idx, h_idx)].min() < 1.3:
        out.append(3)  # an N-H bond: the NHx family (N2, the N reference, is not in it)
    return out


def test_held_out_categories_are_never_sampled_for_training_and_each_is_validated(tmp_path):
    from geomformer_md.distill.config import distill_config_from_dict
    from geomformer_md.distill.run import DistillRun
    from geomformer_md.distill.space import rule_name

    space = Space(parse_space(BROAD), {"Cu": 3.6, "Pd": 3.9, "Au": 4.08})
    training = space.sample(np.random.default_rng(0), 150)
    assert not any(_held(a) for a in training)
    seen = {a.info["category"] for a in training}
    assert seen == {"bulk", "alloy", "surface", "surface+ads", "cluster", "cluster+ads", "gas"}
    for r, rule in enumerate(space.cfg.holdout):
        held = space.sample(np.random.default_rng(r), 8, rule=rule)
        assert all(r in _held(a) for a in held), rule
    # the same through a run: training data never held out, validation has every rule
    cfg = distill_config_from_dict({
        "out_dir": str(tmp_path / "run"), "teacher": {"calculator": "ase.calculators.emt.EMT"},
        "space": BROAD, "initial_frames": 12, "validation_per_category": 2,
        "validation_every_kind": False, "model": {"d_model": 8, "n_layers": 1}})
    run = DistillRun(cfg, log=lambda m: None, progress=False)
    run_space = Space(cfg.space, run.lattice_constants())
    validation = run.validation_set(run_space)
    names = [rule_name(rule) for rule in cfg.space.holdout]
    assert names[0] == "heldout:elements=Au-Pd" and names[3] == "heldout:adsorbate=NH|NH2|NH3"
    by_rule = {n: [a for a in validation if a.info.get("holdout") == n] for n in names}
    # 2 per rule, less the starts the teacher refused (logged: EMT fails on crowded ones).
    # Validation structures come 2 per category (7), then 2 per rule in the rules' order.
    log = tmp_path / "run" / "failures.csv"
    failed = [int(line.split(",")[1]) for line in
              (log.read_text().splitlines() if log.exists() else [])
              if line.startswith("label validation,")]
    for r, name in enumerate(names):
        refused = sum(14 + 2 * r <= k < 16 + 2 * r for k in failed)
        assert len(by_rule[name]) + refused == 2 and by_rule[name], (name, refused)
    for r, name in enumerate(names):
        assert all(r in _held(a) for a in by_rule[name])
    plain = [a for a in validation if not a.info.get("holdout")]
    assert not any(_held(a) for a in plain)
    initial = read(run.initial_data(run_space), ":")
    assert len(initial) >= 10 and not any(_held(a) for a in initial)  # EMT may fail one


def test_gas_phase_includes_the_reference_molecules_of_the_adsorption_energies():
    from ase.build import molecule

    from geomformer_md.distill.space import reference_molecules
    from geomformer_md.simulate.references import resolve_references

    def gas(**raw):
        space = _space(miller=["111"], adsorbates=["H", "OH", "CH3"], **raw)
        return sorted(args[0].formula for kind, args in space.kinds if kind == "gas")

    # every molecule an adsorption energy of these adsorbates is referenced to is in the
    # space: above all H2 (H from 1/2 H2), which no adsorbate is
    names = gas(gas=True)
    assert names == ["CH3", "CO", "H", "H2", "H2O", "O2", "OH"]
    for ads in ("H", "OH", "CH3"):
        _, mol, _ = adsorbate_molecule(ads)
        assert set(resolve_references(ads, mol)) <= set(names)
    assert gas(gas=True, gas_references=False) == ["CH3", "H", "OH"]
    assert gas(gas=False) == []
    # a reference molecule is built and tagged like any gas-phase structure
    space = _space(miller=["111"], adsorbates=["H"], gas=True)
    (args,) = [args for kind, args in space.kinds if kind == "gas" and args[0].formula == "H2"]
    atoms = space.build("gas", args, np.random.default_rng(0))
    assert atoms.get_chemical_formula() == "H2" and not atoms.pbc.any()
    assert atoms.info["category"] == "gas" and atoms.info["adsorbate"] == "H2"
    assert np.isclose(atoms.get_distance(0, 1), molecule("H2").get_distance(0, 1))
    # only molecules of the adsorbates' own elements: C alone brings no CO (no O in the space)
    assert reference_molecules(parse_space({"elements": ["Cu"], "adsorbates": ["C"]}
                                           ).adsorbates) == ()
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match="space.gas_references must be true or false"):
            parse_space({"elements": ["Cu"], "bulk": True, "gas_references": bad})


def test_validation_without_every_kind_draws_n_per_category_outside_the_holdout():
    from geomformer_md.distill.run import _validation_structures

    space = Space(parse_space(BROAD), {"Cu": 3.6, "Pd": 3.9, "Au": 4.08})
    frames = _validation_structures(space, 3, False, seed=0)
    cats = [a.info["category"] for a in frames]
    assert {c: cats.count(c) for c in set(cats)} == {c: 3 for c in (
        "bulk", "alloy", "surface", "surface+ads", "cluster", "cluster+ads", "gas")}
    assert not any(_held(a) for a in frames)
    # every kind once is more: the old behaviour, kept as the default
    every = _validation_structures(space, 3, True, seed=0)
    assert len(every) > len(frames) and not any(_held(a) for a in every)


def _tilt(atoms, formula):
    """Angle (°) between the surface normal and the binding atom -> rest of the molecule."""
    light = np.flatnonzero(np.isin(atoms.numbers, _LIGHT))
    mol = atoms[light]
    _, _, bind = adsorbate_molecule(formula)
    axis = mol.positions.mean(0) - mol.positions[bind]
    return np.degrees(np.arccos(axis[2] / np.linalg.norm(axis)))


@pytest.mark.parametrize("orientation, low, high", [("upright", 0, 10), ("tilted", 20, 60),
                                                    ("flat", 80, 90)])
def test_orientations_set_the_tilt_of_adsorbates(orientation, low, high):
    space = _space(miller=["111"], surface_size=[1, 1], coverages=[0.25],
                   adsorbates=["NO", "CH3O"], orientations=[orientation])
    tilts = [_tilt(a, a.info["adsorbate"]) for a in _surfaces(space, 12, kind="surface+ads")
             if a.info["adsorbate"] != "none"]
    assert len(tilts) >= 8
    assert all(low - 1e-6 <= t <= high + 1e-6 for t in tilts), tilts


def test_per_facet_slab_thickness_and_size():
    space = _space(elements=["Pt"], miller=["111", "211"], surface_layers={"111": 3, 211: 9},
                   surface_size={"111": [1, 1], "211": [1, 2]})
    for atoms in _surfaces(space, 4):
        facet = str(atoms.info["facet"])
        n_planes = {"111": 3, "211": 9}[facet]
        per_plane = {"111": 4, "211": 4}[facet]  # (211) 1x2: two step cells of two atoms
        assert len(_planes(atoms)) == n_planes
        assert len(atoms) + (atoms.info["defect"] == "vacancy") - (
            atoms.info["defect"] == "adatom") == n_planes * per_plane
    with pytest.raises(ValueError, match=r"space.surface_layers has no entry for facet\(s\) "
                                         r"\['211'\]"):
        parse_space({"elements": ["Pt"], "miller": ["111", "211"], "surface_layers": {111: 3}})


def test_exposed_sites_put_adsorbates_on_terraces_and_step_feet_of_211():
    def anchors(sites):
        space = _space(elements=["Pt"], miller=["211"], surface_layers=9,
                       surface_size=[1, 2], coverages=[0.5], surface_sites=sites,
                       adsorbates=[{"formula": "H", "sites": ["top"]}])
        depths = []
        for atoms in _surfaces(space, 20, kind="surface+ads"):
            metal = np.flatnonzero(atoms.numbers != 1)
            for h in np.flatnonzero(atoms.numbers == 1):
                d = atoms.get_distances(h, metal, mic=True)
                depths.append(atoms.positions[metal, 2].max()
                              - atoms.positions[metal[d.argmin()], 2])
        return np.array(depths)

    top = anchors("top_layer")
    assert (top < 0.5).all()  # step-edge atoms only
    exposed = anchors("exposed")
    assert (exposed > 0.5).sum() >= 5 and (exposed < 2.0).all()  # terrace and step foot


def test_category_weights_set_how_often_each_category_is_drawn():
    space = _space(elements=["Pt", "Cu"], bulk=True, miller=["111"], surface_size=[1, 1],
                   adsorbates=["H", "O", "OH", "CO"],
                   category_weights={"bulk": 3, "surface": 1, "surface+ads": 0})
    cats = [a.info["category"] for a in space.sample(np.random.default_rng(0), 200)]
    assert "surface+ads" not in cats
    assert 2.0 < cats.count("bulk") / cats.count("surface") < 4.5
    plain = _space(elements=["Pt", "Cu"], bulk=True, miller=["111"], surface_size=[1, 1],
                   adsorbates=["H", "O", "OH", "CO"])
    cats = [a.info["category"] for a in plain.sample(np.random.default_rng(0), 200)]
    assert cats.count("surface+ads") > cats.count("bulk")  # 8 kinds against 2


@pytest.mark.parametrize("rule, message", [
    ({"elements": "Pd-Ag"}, "space.holdout: elements ['Ag-Pd'] are not among space.elements"),
    ({"facet": "110"}, "facet(s) ['110'] are not in space.miller"),
    ({"adsorbate": ["NH", "NH4"]}, "adsorbate(s) ['NH4'] are not among the space's adsorbates"),
    ({"category": "slab"}, "category ['slab'] is not one of"),
    ({"size": 55}, "must match on category, elements, facet, adsorbate, shape, cluster_size"),
])
def test_bad_holdout_rules_name_the_problem(rule, message):
    with pytest.raises(ValueError) as exc:
        parse_space({**BROAD, "holdout": [rule]})
    assert message in str(exc.value)


def test_the_issue_24_config_and_its_pilot_share_one_space_that_builds_every_category():
    from pathlib import Path

    from geomformer_md.distill.config import load_distill_config
    from geomformer_md.distill.teacher import lattice_guess

    root = Path(__file__).parent.parent / "research" / "configs"
    real = load_distill_config(root / "distill-catalysis.yaml")
    pilot = load_distill_config(root / "distill-catalysis-pilot.yaml")
    assert pilot.space == real.space and pilot.teacher == real.teacher
    assert pilot.out_dir != real.out_dir
    names = {a.formula for a in real.space.adsorbates}
    assert names == {"H", "O", "OH", "H2O", "O2", "OOH", "C", "CH", "CH2", "CH3", "CO", "COH",
                     "CHO", "CH2O", "CH3O", "CO2", "N", "NH", "NH2", "NH3", "NO", "N2"}
    space = Space(real.space, {e: lattice_guess(e) for e in real.space.elements})
    frames = space.sample(np.random.default_rng(0), 40)
    assert {a.info["category"] for a in frames} >= {"surface+ads", "surface", "alloy"}
    for r, rule in enumerate(real.space.holdout):
        assert len(space.sample(np.random.default_rng(r), 2, rule=rule)) == 2
