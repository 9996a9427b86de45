"""Adsorption energies: sites, placement, references, arithmetic, CSV (ASE EMT + a random model)."""

import csv

import numpy as np
import pytest
import torch
from ase.build import fcc100, fcc111, fcc211
from ase.calculators.emt import EMT
from ase.optimize import BFGS
from conftest import make_model

from geomformer_md import GeoMFormerCalculator
from geomformer_md.simulate.catalysis import (
    _atom_beneath,
    _wrap_xy,
    adsorbate_from_name,
    adsorption_energies,
    build_slab,
    nearest_site,
    resolve_references,
    site_positions,
    with_fcc211_sites,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def o_on_cu111(tmp_path_factory):
    path = tmp_path_factory.mktemp("ads") / "O_Cu111.csv"
    table = adsorption_energies(
        ("Cu", "111", (2, 2, 3)), "O", calculator=EMT(), csv=path, progress=False, fmax=0.02
    )
    return table, path


def test_sites_enumerated_and_sorted(o_on_cu111):
    table, _ = o_on_cu111
    assert sorted(r.site for r in table) == ["bridge", "fcc", "hcp", "ontop"]
    e = [r.e_ads for r in table]
    assert e == sorted(e) and table.best is table.rows[0]
    assert all(r.converged for r in table) and table.slab_converged and table.references_converged
    # EMT: O binds in the 3-fold hollows more strongly than on top
    assert table.best.site in ("fcc", "hcp")
    ontop = next(r for r in table if r.site == "ontop")
    assert ontop.e_ads > table.best.e_ads + 0.05
    for r in table:
        assert 0.5 < r.height < 2.5
        assert not r.dissociated and r.final_site == r.site and not r.moved


def test_energy_arithmetic_and_references(o_on_cu111):
    """E_ads = E(slab+O) - E(slab) - 1/2 E(O2), each energy checked independently with EMT."""
    table, _ = o_on_cu111
    assert table.reference == {"O2": 0.5}
    # O2 relaxed independently, with another optimizer
    from ase.build import molecule

    o2 = molecule("O2")
    o2.center(vacuum=10.0)
    o2.calc = EMT()
    BFGS(o2, logfile=None).run(fmax=0.005)
    assert table.gas_energies["O2"] == pytest.approx(o2.get_potential_energy(), abs=2e-3)
    assert table.reference_energy == pytest.approx(0.5 * table.gas_energies["O2"], abs=1e-12)
    # total energies are those of the returned structures
    slab = table.slab.copy()
    slab.calc = EMT()
    assert slab.get_potential_energy() == pytest.approx(table.slab_energy, abs=1e-9)
    for r in table:
        a = r.atoms.copy()
        a.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(r.energy, abs=1e-9)
        manual = r.energy - table.slab_energy - 0.5 * table.gas_energies["O2"]
        assert r.e_ads == pytest.approx(manual, abs=1e-12)
        # the 2 bottom layers (tags 2, 3; default fix_bottom_layers=2) held fixed, O added last
        assert len(a) == 13 and a[-1].symbol == "O"
        fixed = set(np.concatenate([c.index for c in r.atoms.constraints]))
        assert fixed == set(np.where(r.atoms.get_tags()[:12] >= 2)[0])


def test_csv_written(o_on_cu111):
    table, path = o_on_cu111
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["site"] for r in rows] == [r.site for r in table]
    assert float(rows[0]["E_ads_eV"]) == pytest.approx(table.best.e_ads, abs=1e-6)
    for key in ("converged", "moved", "final_site", "height_A", "slab_converged"):
        assert key in rows[0]
    assert "E_ads" in str(table) and "fcc" in str(table)


def test_given_gas_energies_and_h2o_scheme():
    t = adsorption_energies(
        ("Cu", "111", (2, 2, 3)),
        "O",
        calculator=EMT(),
        sites=["fcc"],
        references="H2O",
        gas_energies={"H2O": -1.0, "H2": 0.5},
        lattice_constant=None,
        progress=False,
    )
    assert t.reference == {"H2O": 1.0, "H2": -1.0}
    assert t.reference_energy == pytest.approx(-1.5)
    r = t.best
    assert r.e_ads == pytest.approx(r.energy - t.slab_energy + 1.5, abs=1e-12)


def test_references_defaults_and_balance():
    def ref(name, references=None):
        n, mol, _ = adsorbate_from_name(name)
        return resolve_references(n, mol, references)

    assert ref("H") == {"H2": 0.5}
    assert ref("N") == {"N2": 0.5}
    assert ref("C") == {"CO": 1.0, "O2": -0.5}
    assert ref("OH") == {"H2O": 1.0, "H2": -0.5}
    assert ref("CO") == {"CO": 1.0}
    assert ref("O", "H2O") == {"H2O": 1.0, "H2": -1.0}
    assert ref("CH3", "H2O") == {"CO": 1.0, "H2O": -1.0, "H2": 2.5}
    assert ref("OH", {"O2": 0.5, "H2": 0.5}) == {"O2": 0.5, "H2": 0.5}
    with pytest.raises(ValueError, match="composition"):
        ref("OH", {"H2O": 1.0})
    with pytest.raises(ValueError, match="reference scheme"):
        ref("O", "CO2")


def test_adsorbate_orientation():
    for name, bind in (("CO", "C"), ("OH", "O"), ("NH3", "N"), ("H2O", "O")):
        _, mol, b = adsorbate_from_name(name)
        assert mol[b].symbol == bind
        assert np.allclose(mol.positions[b], 0.0)
        others = np.delete(mol.positions, b, axis=0)
        assert others[:, 2].min() > 0.1, name  # binding atom lowest


def test_fcc_hcp_classifier_on_111():
    """The 'atom beneath' test that names the 211 hollows agrees with ASE's 111 sites."""
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    sites, _ = site_positions(slab)
    top = np.where(slab.get_tags() == 1)[0]
    for name, beneath in (("fcc", False), ("hcp", True)):
        xy = sites[name]
        d = _wrap_xy(slab.positions[top, :2] - xy, slab.cell[:2, :2])
        idx = top[np.argsort(np.linalg.norm(d, axis=1))[:3]]
        corners = np.column_stack(
            [xy + _wrap_xy(slab.positions[idx, :2] - xy, slab.cell[:2, :2]), slab.positions[idx, 2]]
        )
        assert _atom_beneath(slab, corners) is beneath


def test_211_sites():
    slab = build_slab("Pt", "211", (3, 2, 4))
    sites, _ = site_positions(slab)
    assert set(sites) == {"step_ontop", "step_bridge", "step_fcc", "step_hcp", "step_hollow4"}
    assert set(slab.get_tags()) == {1, 2, 3, 4}
    for name, xy in sites.items():
        assert nearest_site(slab, xy)[0] == name
    # a plain ase.build.fcc211 slab gets the same sites
    plain = with_fcc211_sites(fcc211("Pt", (3, 2, 4), vacuum=10.0))
    assert (
        plain.info["adsorbate_info"]["sites"].keys() == slab.info["adsorbate_info"]["sites"].keys()
    )


def test_nearest_site_detects_moves():
    slab = fcc111("Cu", (3, 3, 3), vacuum=5.0)
    sites, cell = site_positions(slab)
    # an image of the fcc site one surface cell away, slightly off
    assert nearest_site(slab, sites["fcc"] + cell[0] + cell[1] + [0.1, 0.0])[0] == "fcc"
    assert nearest_site(slab, sites["hcp"] - cell[1])[0] == "hcp"
    # ASE lists one bridge orientation; the other two are found by symmetry
    for frac in ((0.0, 0.5), (0.5, 0.5)):
        name, dist = nearest_site(slab, np.array(frac) @ cell)
        assert name == "bridge" and dist < 1e-4
    s100 = fcc100("Cu", (2, 2, 3), vacuum=5.0)
    _, cell100 = site_positions(s100)
    name, dist = nearest_site(s100, np.array([0.0, 0.5]) @ cell100)
    assert name == "bridge" and dist < 1e-4


def test_errors():
    with pytest.raises(ValueError, match="unknown facet"):
        adsorption_energies(("Cu", "311", (2, 2, 3)), "O", calculator=EMT(), progress=False)
    with pytest.raises(ValueError, match="unknown adsorbate"):
        adsorption_energies("Cu111", "Xyz", calculator=EMT(), progress=False)
    with pytest.raises(ValueError, match="unknown site"):
        adsorption_energies(
            ("Cu", "111", (2, 2, 3)),
            "O",
            calculator=EMT(),
            sites=["hollow"],
            lattice_constant=None,
            progress=False,
        )
    with pytest.raises(ValueError, match="slab spec"):
        adsorption_energies("copper", "O", calculator=EMT(), progress=False)
    no_sites = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    no_sites.info.clear()
    with pytest.raises(ValueError, match="no adsorption-site information"):
        adsorption_energies(no_sites, "O", calculator=EMT(), progress=False)


def test_random_model_smoke(tmp_path):
    """Our calculator end to end (tiny random model: numbers meaningless, pipeline exercised)."""
    calc = GeoMFormerCalculator(make_model("float64"))
    t = adsorption_energies(
        fcc111("Cu", (2, 2, 2), vacuum=6.0),
        "OH",
        calculator=calc,
        steps=3,
        fmax=0.5,
        fix_bottom_layers=1,
        progress=False,
        csv=tmp_path / "oh.csv",
    )
    assert len(t) == 4 and all(np.isfinite(r.e_ads) for r in t)
    assert set(t.gas_energies) == {"H2O", "H2"}
    assert (tmp_path / "oh.csv").is_file()
    with pytest.raises(ValueError, match="unknown to this model"):
        adsorption_energies(
            fcc111("Au", (2, 2, 2), vacuum=6.0), "O", calculator=calc, progress=False
        )


def test_row_flags_moved_desorbed_dissociated():
    from types import SimpleNamespace

    from ase.build import add_adsorbate

    from geomformer_md.simulate.catalysis import _bonds, _row

    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    res = SimpleNamespace(energy=-1.0, converged=True, steps=7, fmax=0.01)
    _, co, bind = adsorbate_from_name("CO")
    for site, height, expect in (("hcp", 1.2, "hcp"), ("ontop", 6.0, "desorbed")):
        work = slab.copy()
        add_adsorbate(work, co, height, position=site, mol_index=bind)
        row = _row("fcc", work, res, len(slab), bind, _bonds(co), 0.5, 0.25, slab)
        assert row.final_site == expect and row.moved
        assert row.e_ads == pytest.approx(-1.75) and not row.dissociated
        assert row.height == pytest.approx(height)
    work = slab.copy()
    add_adsorbate(work, co, 1.2, position="fcc", mol_index=bind)
    work.positions[-2, 2] += 2.0  # pull O away from C
    row = _row("fcc", work, res, len(slab), bind, _bonds(co), 0.0, 0.0, slab)
    assert row.dissociated and not row.moved


# --------------------------------------------------------------- orientations, close contacts


def test_tilted_starts_find_the_flat_minimum_upright_misses():
    """OH upright on a top site is a symmetric stationary point: a relaxation from it stays
    upright. With an H-Cu attraction OH is ~0.3 eV lower lying flat; the tilted starts find
    that minimum, the row reports which start won, and the upright-only scan does not."""
    from toys import oh_lies_flat_on_cu

    kw = dict(
        calculator=oh_lies_flat_on_cu(),
        sites=["ontop"],
        lattice_constant=None,
        fix_bottom_layers=1,
        gas_energies={"H2O": 0.0, "H2": 0.0},  # a common offset; the comparison is all
        optimizer="BFGS",
        progress=False,
    )
    upright = adsorption_energies(("Cu", "111", (2, 2, 3)), "OH", orientations=1, **kw).best
    best = adsorption_energies(("Cu", "111", (2, 2, 3)), "OH", orientations=3, seed=0, **kw).best
    assert upright.orientation == "upright" and upright.tilt_deg < 1.0
    assert best.orientation.startswith("tilt") and best.tilt_deg > 60.0
    assert best.e_ads < upright.e_ads - 0.2
    assert not best.dissociated and not best.close_contact
    assert best.orientation_e_ads["upright"] == pytest.approx(upright.e_ads, abs=1e-6)
    assert min(best.orientation_e_ads.values()) == best.e_ads


def test_orientations_are_seeded_per_site_and_tilt_as_labelled():
    from geomformer_md.simulate.catalysis import starting_orientations

    _, mol, bind = adsorbate_from_name("NH3")
    a = starting_orientations(mol, bind, 4, 7, "fcc")
    b = starting_orientations(mol, bind, 4, 7, "fcc")
    c = starting_orientations(mol, bind, 4, 7, "hcp")
    assert [lab for lab, _ in a] == [lab for lab, _ in b] != [lab for lab, _ in c]
    assert a[0][0] == "upright" and a[0][1] is mol
    for label, m in a[1:]:
        tilt = float(label.split()[1].rstrip("°"))
        axis = np.delete(m.positions, bind, axis=0).mean(axis=0) - m.positions[bind]
        measured = np.degrees(np.arccos(axis[2] / np.linalg.norm(axis)))
        assert measured == pytest.approx(tilt, abs=0.5)  # the label says what was done
        assert np.allclose(m.positions[bind], mol.positions[bind])  # pivots on the binding atom
        d0 = np.linalg.norm(mol.positions[:, None] - mol.positions[None], axis=-1)
        d1 = np.linalg.norm(m.positions[:, None] - m.positions[None], axis=-1)
        np.testing.assert_allclose(d1, d0, atol=1e-12)  # a rigid rotation
    with pytest.raises(ValueError, match="orientations"):
        adsorption_energies("Cu111", "OH", calculator=EMT(), orientations=0, progress=False)


def test_close_contact_row_is_flagged_and_sorted_last(tmp_path):
    """O placed 0.3 Å above a Cu atom falls into a spurious hole of the potential 0.9 Å from
    it (0.45 of the Cu-O bond length) with a very negative E_ads: the row carries the ratio
    (checked against the distance), says so, and does not become the table's best."""
    from ase.data import covalent_radii
    from toys import o_falls_into_cu

    table = adsorption_energies(
        ("Cu", "111", (2, 2, 3)),
        "O",
        calculator=o_falls_into_cu(),
        sites=["ontop", "fcc"],
        height=0.3,
        lattice_constant=None,
        fix_bottom_layers=1,
        gas_energies={"O2": 0.0},
        optimizer="BFGS",
        progress=False,
        csv=tmp_path / "o.csv",
    )
    fused = next(r for r in table if r.site == "ontop")
    fine = next(r for r in table if r.site == "fcc")
    n = len(fused.atoms) - 1
    d = fused.atoms.get_distances(n, range(n), mic=True).min()
    assert fused.min_bond_ratio == pytest.approx(d / (covalent_radii[8] + covalent_radii[29]))
    assert fused.close_contact and fused.min_bond_ratio < 0.6
    assert not fine.close_contact and fine.min_bond_ratio > 0.8
    assert fused.e_ads < fine.e_ads  # the hole is deep...
    assert table.best is fine and table.rows[-1] is fused  # ...and still never the answer
    assert "CLOSE CONTACT" in str(table)
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert [r["close_contact"] for r in rows] == ["False", "True"]
    assert float(rows[1]["min_bond_ratio"]) == pytest.approx(fused.min_bond_ratio, abs=1e-6)
