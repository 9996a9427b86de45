"""The ZBL short-range prior (model/zbl.py): the formula, its switch, files without it, fine-tuning
onto it, and the repulsive-wall check (testing.check_short_range_wall)."""

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.data import atomic_numbers, covalent_radii
from conftest import make_model

from geomformer_md import GeoMFormerCalculator, load_model, save_model
from geomformer_md.model import GeoMFormer, GeoMFormerConfig
from geomformer_md.testing import check_short_range_wall, short_range_wall


def zbl_reference(z1, z2, r):
    """Universal ZBL (LAMMPS pair_style zbl's constants), written out independently."""
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.19980 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.40290 * x) + 0.02817 * np.exp(-0.20162 * x))
    return 14.399645 * z1 * z2 / r * phi


def smoothstep_off(t):
    t = np.clip(t, 0.0, 1.0)
    return 1 - 10 * t**3 + 15 * t**4 - 6 * t**5


def with_zbl(model, **kw):
    m = GeoMFormer(dataclasses.replace(model.config, zbl=True, **kw))
    m.load_state_dict(model.state_dict())
    return m.eval()


def dimer_energy(calc, a, b, r):
    d = Atoms([a, b], positions=[[0, 0, 0], [0, 0, r]])
    d.calc = calc
    return d.get_potential_energy(), d.get_forces()[1, 2]


def test_prior_is_the_zbl_formula_times_the_switch():
    plain = make_model("float64")
    calc0, calc1 = GeoMFormerCalculator(plain), GeoMFormerCalculator(with_zbl(plain))
    R = covalent_radii[8] + covalent_radii[78]
    inner, outer = calc1.model.config.zbl_inner, calc1.model.config.zbl_outer
    assert (inner, outer) == (0.55, 0.75)  # the defaults
    for r in (0.3, 0.9, 1.2, 1.3, 1.45, 1.6):  # below, inside and above the switch (1.11-1.52 Å)
        added = dimer_energy(calc1, "O", "Pt", r)[0] - dimer_energy(calc0, "O", "Pt", r)[0]
        expected = zbl_reference(8, 78, r) * smoothstep_off((r / R - inner) / (outer - inner))
        assert added == pytest.approx(expected, rel=2e-4, abs=1e-12), r
    assert dimer_energy(calc1, "O", "Pt", 1.6)[0] == dimer_energy(calc0, "O", "Pt", 1.6)[0]


@pytest.mark.parametrize("pair", [("Pt", "Pt"), ("H", "O")])
def test_switch_is_smooth_energy_force_and_curvature_continuous(pair):
    """No kink where the switch starts and ends: the force (from autograd) is continuous and
    its slope too, with one-sided finite differences of the force agreeing at both ends."""
    from geomformer_md.model.zbl import ZBLRepulsion

    z = [atomic_numbers[s] for s in pair]
    species = tuple(sorted(set(z)))
    zbl = ZBLRepulsion(species, 0.55, 0.75).double()
    si = torch.tensor([species.index(z[0])])
    sj = torch.tensor([species.index(z[1])])
    R = float(covalent_radii[z[0]] + covalent_radii[z[1]])

    def energy_force(r):
        r = torch.tensor([r], dtype=torch.float64, requires_grad=True)
        e = zbl.pair_energy(si, sj, r)
        (g,) = torch.autograd.grad(e.sum(), r)
        return float(e.detach()), -float(g)

    def slope(r, h):  # dF/dr by a one-sided difference of autograd forces, toward r + h
        return (energy_force(r + h)[1] - energy_force(r)[1]) / h

    h = 1e-6
    grid = np.linspace(0.3 * R, 0.8 * R, 51)
    f_scale = max(abs(energy_force(r)[1]) for r in grid)
    k_scale = max(abs(slope(r, h)) for r in grid)
    for edge in (0.55 * R, 0.75 * R):
        (e_l, f_l), (e_r, f_r) = energy_force(edge - h), energy_force(edge + h)
        assert abs(e_l - e_r) <= 2.5 * h * f_scale  # energy continuous
        assert abs(f_l - f_r) <= 2.5 * h * k_scale  # force continuous
        assert abs(slope(edge - 2 * h, h) - slope(edge + h, h)) <= 1e-4 * k_scale  # no kink
    assert energy_force(0.75 * R + 1e-9) == (0.0, 0.0)
    # The force is the derivative of the energy everywhere in between.
    for r in np.linspace(0.3 * R, 0.8 * R, 11):
        fd = -(energy_force(r + 1e-6)[0] - energy_force(r - 1e-6)[0]) / 2e-6
        assert fd == pytest.approx(energy_force(r)[1], rel=1e-6, abs=1e-7 * f_scale)


def test_bonded_structures_are_bit_identical_with_the_prior():
    """The prior is exactly zero above 0.75 R, so adding it to a potential changes nothing
    (to the last bit) at bonded distances: a slab with an adsorbate, and bulk with stress."""
    from ase.build import bulk

    plain = make_model("float64")
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.2, "fcc")
    crystal = bulk("Cu", cubic=True)
    crystal.rattle(0.05, seed=1)
    for atoms in (slab, crystal):
        res = []
        for model in (plain, with_zbl(plain)):
            a = atoms.copy()
            a.calc = GeoMFormerCalculator(model)
            res.append((a.get_potential_energy(), a.get_forces(), a.get_potential_energies(),
                        a.get_stress() if a.pbc.all() else None))
        for x, y in zip(*res, strict=True):
            assert np.array_equal(x, y)


def test_files_without_the_key_load_unchanged_and_files_with_it_keep_it(tmp_path):
    plain = make_model("float64")
    blob = plain.config.to_dict()
    for key in ("zbl", "zbl_inner", "zbl_outer"):
        blob.pop(key)
    old = GeoMFormerConfig.from_dict(blob)
    assert old.zbl is False and old == plain.config
    path = tmp_path / "zbl.pt"
    save_model(with_zbl(plain, zbl_inner=0.3, zbl_outer=0.6), path)
    loaded = load_model(path)
    assert (loaded.config.zbl, loaded.config.zbl_inner, loaded.config.zbl_outer) == (True, 0.3, 0.6)
    assert loaded.zbl is not None and plain.zbl is None
    for bad in ({"zbl_inner": 0.7, "zbl_outer": 0.6}, {"zbl_outer": 1.5}, {"zbl": "yes"}):
        with pytest.raises(ValueError, match="zbl"):
            dataclasses.replace(plain.config, **bad)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_prior_scripts_and_exports():
    """Plain tensor ops: TorchScript and torch.export take the module as it is (the LAMMPS
    export goes through GeoMFormer.forward, which calls it)."""
    from geomformer_md.model.zbl import ZBLRepulsion

    zbl = ZBLRepulsion((1, 8, 78), 0.4, 0.65).double()
    species = torch.tensor([0, 1, 2])
    ei = torch.tensor([[0, 1, 1, 2, 0, 2], [1, 0, 2, 1, 2, 0]])
    dist = torch.tensor([0.3, 0.3, 0.9, 0.9, 1.2, 1.2], dtype=torch.float64)
    ref = zbl(species, ei, dist)
    assert float(ref.sum()) > 0
    assert torch.equal(torch.jit.script(zbl)(species, ei, dist), ref)
    exported = torch.export.export(zbl, (species, ei, dist))
    assert torch.allclose(exported.module()(species, ei, dist), ref, rtol=1e-12)


def test_wall_check_fails_without_a_wall_and_passes_with_the_prior():
    """A random network has no wall; with the prior fully on below 0.75 R it has one."""
    plain = make_model("float64")
    elements = ["H", "O", "Pt"]
    rows = short_range_wall(plain, elements, step=0.02)
    assert len(rows) == 6 and not all(r["monotonic"] and r["rise"] > 3 for r in rows)
    with pytest.raises(AssertionError, match="no repulsive wall"):
        check_short_range_wall(plain, elements, step=0.02)
    walled = check_short_range_wall(with_zbl(plain, zbl_inner=0.8, zbl_outer=1.0), elements,
                                    step=0.02)
    assert {r["pair"] for r in walled} == {"H-H", "H-O", "H-Pt", "O-O", "O-Pt", "Pt-Pt"}


def test_batched_predict_and_per_atom_energies_include_the_prior():
    """The batched evaluator gives the calculator's results with the prior on, and the per-atom
    energies split each pair's ZBL energy half and half."""
    from geomformer_md.simulate.batch import predict

    model = with_zbl(make_model("float64"))
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 0.5, "ontop")  # O 0.5 Å above a Cu atom: deep inside the prior
    structures = [slab, Atoms("HO", positions=[[0, 0, 0], [0, 0, 0.3]]),
                  Atoms("Pt2", positions=[[0, 0, 0], [0.7, 0.2, 0.1]])]
    batched = predict(structures, model)
    for atoms, res in zip(structures, batched, strict=True):
        a = atoms.copy()
        a.calc = GeoMFormerCalculator(model)
        assert res["energy"] == pytest.approx(a.get_potential_energy(), rel=1e-10)
        assert np.allclose(res["forces"], a.get_forces(), rtol=1e-10, atol=1e-8)
    plain = GeoMFormerCalculator(make_model("float64"))
    d = Atoms("Pt2", positions=[[0, 0, 0], [0.7, 0.2, 0.1]])
    d.calc = plain
    added = batched[2]["energies"] - d.get_potential_energies()
    assert added[0] == pytest.approx(added[1], rel=1e-12)
    assert added.sum() == pytest.approx(zbl_reference(78, 78, np.linalg.norm([0.7, 0.2, 0.1])),
                                        rel=2e-4)


def _shipped_with_prior() -> list[str]:
    """Shipped potentials that carry the prior (the acceptance checks below apply to them)."""
    from geomformer_md import list_potentials, load_potential

    return [name for name in sorted(list_potentials()) if load_potential(name).config.zbl]


WITH_PRIOR = _shipped_with_prior()
needs_prior = pytest.mark.skipif(not WITH_PRIOR, reason="no shipped potential has the prior")


@needs_prior
@pytest.mark.parametrize("name", WITH_PRIOR or ["none"])
def test_shipped_potential_has_a_repulsive_wall_for_every_element_pair(name):
    """Every pair of its elements: E rises monotonically below 0.75 R, repulsive force down to
    0.15 Å, E(min(0.5 Å, R/2)) > E(R) + 3 eV (testing.check_short_range_wall)."""
    rows = check_short_range_wall(name, step=0.02)
    assert len(rows) == 55


@needs_prior
@pytest.mark.parametrize("name", WITH_PRIOR or ["none"])
def test_oxygen_started_inside_a_platinum_atom_relaxes_out(name):
    """O started 0.4 Å above a Pt(111) top atom: v11 relaxed it to 0.29 Å and called that
    converged. With the prior it must come out to a normal Pt-O distance (the labeller's O on
    Pt is 1.75-2.1 Å from its nearest Pt, top to hollow) and converge."""
    from ase.constraints import FixAtoms

    from geomformer_md import relax

    slab = fcc111("Pt", (3, 3, 3), a=3.979, vacuum=8.0)
    slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))
    add_adsorbate(slab, "O", 0.4, "ontop")
    final, res = relax(slab, name, fmax=0.05, steps=300, progress=False)
    d = final.get_distances(len(final) - 1, range(len(final) - 1)).min()
    assert res.converged and 1.7 < d < 2.2, (res.converged, d)
