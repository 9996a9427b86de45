"""Configuration-space builders: whole-plane slabs of every facet, ordered alloy surfaces,
co-adsorbed pairs, adsorbate sites, the adsorbates ase.build.molecule lacks."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.data import covalent_radii

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
    ({"adsorbates": ["XYZ"]}, "also knows ['CHO', 'COH', 'OOH']"),
    ({"adsorbates": [{"formula": "OOH", "binding": "N"}]}, "binding 'N' is not an atom of OOH"),
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
