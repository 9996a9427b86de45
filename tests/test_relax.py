"""relax: convergence, constraints, bottom layers, cell relaxation, honest reporting."""

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io import read
from conftest import make_model
from test_md import _single_thread_blas

from geomformer_md import GeoMFormerCalculator
from geomformer_md.simulate.relax import OPTIMIZERS, bottom_layer_indices, relax

torch.set_num_threads(1)  # after conftest (it sets 2): OpenMP threads fight on a shared 2-core box
_single_thread_blas()

QUIET = dict(progress=False)


def slab_with_o(layers=3):
    slab = fcc111("Cu", (2, 2, layers), vacuum=6.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    return slab


def max_force(atoms):
    return np.linalg.norm(atoms.get_forces(), axis=1).max()


def test_slab_with_adsorbate_converges(tmp_path):
    slab = slab_with_o()
    relaxed, res = relax(
        slab, EMT(), fmax=0.05, fix_bottom_layers=1, trajectory=tmp_path / "r.traj", **QUIET
    )
    assert res.converged and res.fmax < 0.05 and res.optimizer == "FIRE"
    assert isinstance(relaxed.calc, SinglePointCalculator)
    assert max_force(relaxed) == pytest.approx(res.fmax)  # constraint-applied forces
    assert relaxed.get_potential_energy() == res.energy < res.initial_energy
    check = relaxed.copy()
    check.calc = EMT()
    assert check.get_potential_energy() == pytest.approx(res.energy, abs=1e-10)
    assert len(read(tmp_path / "r.traj", ":")) == res.steps + 1


def test_input_is_not_mutated():
    slab = slab_with_o()
    slab.set_constraint(FixAtoms(indices=[0]))
    calc = EMT()
    slab.calc = calc
    snapshot = slab.copy()
    relaxed, _ = relax(slab, EMT(), fix_bottom_layers=1, **QUIET)
    assert slab == snapshot and slab.calc is calc
    assert [c.todict() for c in slab.constraints] == [c.todict() for c in snapshot.constraints]
    assert not np.array_equal(relaxed.positions, slab.positions)


def test_user_fixatoms_hold_exactly():
    slab = slab_with_o()
    fixed = [0, 5, 9]
    slab.set_constraint(FixAtoms(indices=fixed))
    slab.rattle(0.05, seed=2)
    relaxed, res = relax(slab, EMT(), optimizer="BFGS", **QUIET)
    assert res.converged and res.fixed_atoms == tuple(fixed)
    assert np.array_equal(relaxed.positions[fixed], slab.positions[fixed])
    free = np.setdiff1d(np.arange(len(slab)), fixed)
    assert np.abs(relaxed.positions[free] - slab.positions[free]).max() > 1e-3
    assert any(isinstance(c, FixAtoms) for c in relaxed.constraints)


def test_fix_bottom_layers():
    slab = slab_with_o(layers=4)  # 4 Cu layers of 4 atoms + O on top
    z = slab.positions[:, 2]
    bottom2 = np.sort(np.argsort(z)[:8])
    np.testing.assert_array_equal(bottom_layer_indices(slab, 2), bottom2)
    slab.rattle(0.05, seed=3)
    relaxed, res = relax(slab, EMT(), fix_bottom_layers=2, **QUIET)
    assert res.converged and res.fixed_atoms == tuple(bottom2)
    assert np.array_equal(relaxed.positions[bottom2], slab.positions[bottom2])
    top = np.setdiff1d(np.arange(len(slab)), bottom2)
    assert np.abs(relaxed.positions[top] - slab.positions[top]).max() > 1e-3
    with pytest.raises(ValueError, match="all 5 layers"):
        relax(slab, EMT(), fix_bottom_layers=5, **QUIET)


def test_bottom_layers_of_periodic_slab_below_zero():
    """A fully periodic slab whose bottom atoms sit at z < 0 (no wrapping to the top)."""
    slab = fcc111("Pt", (2, 2, 3), vacuum=5.0, periodic=True)
    slab.positions[:, 2] -= slab.positions[:, 2].min() + 0.2
    slab.positions[:, 2] += np.random.default_rng(0).uniform(-0.1, 0.1, len(slab))  # rumpling < tol
    expected = np.sort(np.argsort(slab.positions[:, 2])[:4])
    np.testing.assert_array_equal(bottom_layer_indices(slab, 1, tolerance=0.3), expected)


def test_relax_cell_reduces_stress():
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True)  # EMT Cu is at a ~ 3.59 A
    atoms.calc = EMT()
    s0 = np.abs(atoms.get_stress()).max()
    relaxed, res = relax(atoms, EMT(), relax_cell=True, fmax=0.01, **QUIET)
    assert res.converged and res.relax_cell
    assert np.abs(res.stress).max() < 0.05 * s0
    assert np.abs(relaxed.get_stress()).max() < 0.05 * s0
    assert relaxed.get_volume() < atoms.get_volume()
    assert np.array_equal(atoms.cell, bulk("Cu", "fcc", a=3.75, cubic=True).cell)  # input intact


def test_non_convergence_is_reported():
    slab = slab_with_o()
    slab.rattle(0.1, seed=1)
    relaxed, res = relax(slab, EMT(), fmax=1e-4, steps=3, **QUIET)
    assert not res.converged and res.steps == 3 and res.fmax > 1e-4
    assert max_force(relaxed) == pytest.approx(res.fmax)
    _, res0 = relax(slab, EMT(), fmax=1e-4, steps=0, **QUIET)
    assert not res0.converged and res0.steps == 0 and res0.energy == res0.initial_energy


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer(name):
    slab = slab_with_o()
    _, res = relax(slab, EMT(), optimizer=name.lower(), fix_bottom_layers=2, steps=200, **QUIET)
    assert res.converged and res.optimizer == name


def test_bad_arguments():
    slab = slab_with_o()
    with pytest.raises(ValueError, match="unknown optimizer 'Newton'.*FIRE.*BFGS"):
        relax(slab, EMT(), optimizer="Newton", **QUIET)
    with pytest.raises(ValueError, match="fmax"):
        relax(slab, EMT(), fmax=0, **QUIET)
    with pytest.raises(ValueError, match="steps"):
        relax(slab, EMT(), steps=-1, **QUIET)
    with pytest.raises(ValueError, match="relax_cell"):
        relax(slab, EMT(), relax_cell=True, **QUIET)


def test_with_our_calculator_and_progress_bar(capsys):
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.numbers[0] = 78
    atoms.rattle(0.05, seed=4)
    relaxed, res = relax(
        atoms, GeoMFormerCalculator(make_model("float64")), fmax=0.05, steps=5, progress=True
    )
    assert res.steps <= 5 and res.energy <= res.initial_energy
    assert "relax FIRE" in capsys.readouterr().err
    assert relaxed.get_stress().shape == (6,)


def test_a_fused_pair_is_flagged_not_reported_as_a_minimum():
    """Two Cu atoms started 0.2 Å apart on a potential with a spurious short-range minimum
    (Lennard-Jones with sigma 0.25 Å: minimum at 0.28 Å) 'converge' to a fused pair. The result
    says so: the ratio to the Cu-Cu bond length, from the final distance, below 0.6."""
    from ase import Atoms
    from ase.calculators.lj import LennardJones
    from ase.data import covalent_radii

    pair = Atoms("Cu2", positions=[[0, 0, 0], [0.2, 0, 0]])
    relaxed, res = relax(pair, LennardJones(sigma=0.25, epsilon=1.0, rc=2.0), fmax=0.01, **QUIET)
    d = relaxed.get_distance(0, 1)
    assert res.converged and d == pytest.approx(2 ** (1 / 6) * 0.25, abs=0.01)
    assert res.min_bond_ratio == pytest.approx(d / (2 * covalent_radii[29]))
    assert res.close_contact and "atom 0 (Cu)" in res.contact and "atom 1 (Cu)" in res.contact
    _, normal = relax(slab_with_o(), EMT(), fmax=0.05, fix_bottom_layers=1, **QUIET)
    assert not normal.close_contact and 0.8 < normal.min_bond_ratio < 1.2
