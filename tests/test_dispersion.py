"""D3(BJ) dispersion: equal to tad-dftd3's own results on molecules and, for periodic
cells and slabs, on a cluster of their images; forces and stress are derivatives of the
energy; composed into the calculator, the batched evaluator and the CLI."""

import sys

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read, write
from conftest import make_model

from geomformer_md import GeoMFormerCalculator, atoms_to_graph
from geomformer_md.cli import main
from geomformer_md.simulate.batch import BatchEvaluator

d3 = pytest.importorskip("tad_dftd3")
from geomformer_md.dispersion import D3Dispersion  # noqa: E402

PBE_BJ = {"s6": 1.0, "s8": 0.7875, "a1": 0.4289, "a2": 4.4407}  # Grimme 2011, PBE-D3(BJ)


def tad_energies(atoms, cutoff_bohr=60.0, cn_bohr=40.0):
    """Per-atom energies (eV) and forces (eV/Å) from tad-dftd3 itself, two-body only."""
    param = d3.param.get_functional_params("pbe", damping="bj", dtype=torch.float64)
    param["s9"] = torch.tensor(0.0, dtype=torch.float64)
    pos = torch.tensor(atoms.positions / units.Bohr, requires_grad=True)
    cut = d3.cutoff.Cutoff(disp2=cutoff_bohr, cn=cn_bohr, dtype=torch.float64)
    e = d3.dftd3(torch.tensor(atoms.numbers), pos, param, cutoff=cut)
    f = -torch.autograd.grad(e.sum(), pos)[0] * units.Hartree / units.Bohr
    return e.detach().numpy() * units.Hartree, f.numpy()


def ours(atoms, **kw):
    out = D3Dispersion(**kw)(atoms_to_graph(atoms, 3.0), stress=bool(atoms.pbc.all()))
    return {k: v.numpy() for k, v in out.items()}


def test_pbe_parameters_are_grimmes():
    assert {k: round(float(v), 4) for k, v in D3Dispersion().param.items()} == PBE_BJ


def test_molecules_equal_tad_dftd3():
    """A water-ethanol pair (no pbc): energies and forces as tad-dftd3 gives them."""
    a = molecule("CH3CH2OH")
    b = molecule("H2O")
    b.positions += [3.2, 0.4, 0.3]
    atoms = a + b
    e_ref, f_ref = tad_energies(atoms)
    out = ours(atoms)
    assert e_ref.sum() < -1e-3  # a real, attractive contribution
    np.testing.assert_allclose(out["energies"], e_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["forces"], f_ref, rtol=0, atol=1e-11)


def _cluster(atoms, reps):
    """The cell surrounded by its images (reps per periodic direction); cell atoms first."""
    shifts = [np.arange(-r, r + 1) if p else [0] for r, p in zip(reps, atoms.pbc, strict=True)]
    grid = sorted(np.stack(np.meshgrid(*shifts, indexing="ij"), -1).reshape(-1, 3).tolist(),
                  key=lambda s: any(s))
    pos = np.concatenate([atoms.positions + np.array(s) @ atoms.cell[:] for s in grid])
    return Atoms(numbers=np.tile(atoms.numbers, len(grid)), positions=pos)


@pytest.mark.parametrize("kind", ["bulk", "slab", "primitive"])
def test_periodic_equals_tad_dftd3_on_a_cluster_of_images(kind):
    """Per-atom energies of a triclinic periodic cell (and of a slab: images in-plane only;
    and of a one-atom cell, whose own images come with shifts such as (1, -2, 0)) equal
    those tad-dftd3 gives the cell's atoms inside a cluster of images large enough for both
    the pair cutoff and the coordination numbers of every partner."""
    cell = np.array([[4.6, 0.0, 0.0], [0.9, 4.4, 0.0], [0.3, -0.5, 4.8]])
    atoms = Atoms("PtCOH", cell=cell, pbc=True,
                  positions=[[0.2, 0.1, 0.0], [1.5, 1.6, 1.9], [2.3, 2.4, 2.6], [3.4, 0.4, 3.6]])
    if kind == "slab":
        atoms.pbc = [True, True, False]
    if kind == "primitive":
        atoms = bulk("Cu", "fcc", a=3.6)
        cell = atoms.cell[:]
    cut, cn = 6.0, 4.0  # Å: small, so the cluster stays small (the code is cutoff-agnostic)
    vol = abs(np.linalg.det(cell))
    heights = [vol / np.linalg.norm(np.cross(cell[d - 2], cell[d - 1])) for d in range(3)]
    reps = [int(np.ceil((cut + cn) / h)) for h in heights]  # covers pairs and their CNs
    e_ref, _ = tad_energies(_cluster(atoms, reps), cut / units.Bohr, cn / units.Bohr)
    out = ours(atoms, cutoff=cut, cn_cutoff=cn)
    assert out["energies"].sum() < -1e-3
    np.testing.assert_allclose(out["energies"], e_ref[: len(atoms)], rtol=0, atol=1e-11)


def test_forces_and_stress_are_derivatives_of_the_energy():
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms += Atoms("O", positions=[[1.0, 0.9, 0.4]])
    atoms.rattle(0.05, seed=2)
    calc = GeoMFormerCalculator(make_model("float64"), dispersion="d3bj")
    f = calc.get_forces(atoms)
    s = calc.get_stress(atoms)
    h = 1e-4
    for i, d in [(0, 0), (2, 2), (1, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, d] += h
        minus.positions[i, d] -= h
        num = -(calc.get_potential_energy(plus) - calc.get_potential_energy(minus)) / (2 * h)
        assert f[i, d] == pytest.approx(num, abs=2e-6)
    atoms.calc = calc
    num = calc.calculate_numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(s, num, atol=2e-6)


def test_slab_and_molecule_have_no_stress_and_add_to_the_model():
    """Composition: model + D3 energies, forces per atom; stress only for 3-D cells."""
    model = make_model("float64")
    slab = fcc111("Cu", (2, 2, 2), vacuum=6.0)
    slab += Atoms("O", positions=[slab.positions[-1] + [0.0, 1.4, 1.4]])
    plain, disp = GeoMFormerCalculator(model), GeoMFormerCalculator(model, dispersion="d3bj")
    d = ours(slab)
    assert disp.get_potential_energy(slab) == pytest.approx(
        plain.get_potential_energy(slab) + d["energy"][0], abs=1e-10)
    np.testing.assert_allclose(disp.get_forces(slab), plain.get_forces(slab) + d["forces"],
                               atol=1e-10)
    with pytest.raises(PropertyNotImplementedError):
        disp.get_stress(slab)
    # the batched evaluator gives the calculator's numbers, with stress where defined
    cu = bulk("Cu", cubic=True)
    cu.rattle(0.02, seed=3)
    res = BatchEvaluator(model, dispersion="d3bj").evaluate([slab, cu])
    assert res[0]["energy"] == pytest.approx(disp.get_potential_energy(slab), abs=1e-9)
    assert "stress" not in res[0]
    np.testing.assert_allclose(res[1]["stress"], disp.get_stress(cu), atol=1e-10)


def test_isolated_molecules_far_apart_do_not_interact():
    a = molecule("CO")
    b = molecule("CO")
    b.positions += 40.0  # beyond the 31.75 Å pair cutoff
    assert ours(a + b)["energy"][0] == pytest.approx(2 * ours(a)["energy"][0], abs=1e-12)


def test_bad_options_are_one_line():
    with pytest.raises(ValueError, match="dispersion must be one of"):
        GeoMFormerCalculator(make_model("float64"), dispersion="d4")
    with pytest.raises(ValueError, match="dispersion_xc: no D3"):
        GeoMFormerCalculator(make_model("float64"), dispersion="d3bj", dispersion_xc="nope")


def test_missing_library_is_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tad_dftd3", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"needs the tad-dftd3 package: pip install"):
        GeoMFormerCalculator(make_model("float64"), dispersion="d3bj")
    from geomformer_md import save_model

    model = tmp_path / "tiny.pt"
    save_model(make_model("float64"), model)
    path = tmp_path / "cu.extxyz"
    write(path, bulk("Cu", cubic=True))
    assert main(["eval", str(path), "--model", str(model), "--dispersion", "d3bj", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'geomformer-md[d3]'" in err[0], err


def test_cli_flag(tmp_path, capsys):
    from geomformer_md import save_model

    model = tmp_path / "tiny.pt"
    save_model(make_model("float64"), model)
    cu = bulk("Cu", cubic=True)
    cu.rattle(0.02, seed=1)
    path = tmp_path / "cu.extxyz"
    write(path, cu)
    args = ["eval", str(path), "--model", str(model), "--device", "cpu", "-q"]
    assert main([*args, "--dispersion", "d3bj"]) == 0
    e = read(tmp_path / "cu.eval.extxyz").get_potential_energy()
    ref = GeoMFormerCalculator(str(model), dispersion="d3bj").get_potential_energy(cu)
    assert e == pytest.approx(ref, abs=1e-6)
    capsys.readouterr()
    assert main([*args, "--dispersion", "d4"]) != 0
    assert "invalid choice" in capsys.readouterr().err


def test_chunks_change_nothing(monkeypatch):
    """Pairs are processed in chunks (bounded memory); many small chunks give the same
    energies, forces and stress as one."""
    import geomformer_md.dispersion as dispersion

    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms += Atoms("O", positions=[[1.0, 0.9, 0.4]])
    graph = atoms_to_graph(atoms, 3.0)
    one = D3Dispersion(cutoff=8.0, cn_cutoff=6.0)(graph)
    monkeypatch.setattr(dispersion, "EDGE_CHUNK", 97)
    many = D3Dispersion(cutoff=8.0, cn_cutoff=6.0)(graph)
    for key in ("energies", "forces", "stress"):
        np.testing.assert_allclose(many[key].numpy(), one[key].numpy(), rtol=0, atol=1e-12)


def test_memory_check_counts_the_pair_list(monkeypatch):
    """The up-front memory check adds D3's pair list: memory enough for the model alone
    runs without D3 and is refused with it, in one line."""
    import geomformer_md.memory as memory

    model = make_model("float64")
    atoms = bulk("Cu", cubic=True) * (2, 2, 2)
    plain, disp = GeoMFormerCalculator(model), GeoMFormerCalculator(model, dispersion="d3bj")
    graph = atoms_to_graph(atoms, model.config.cutoff)
    need = memory.estimate_call_bytes(plain.potential, graph.n_atoms, graph.n_edges)
    pairs = disp.dispersion.estimate_bytes(graph)
    assert pairs > 10 * 2**20  # ~10^4 pairs per atom at 31.75 Å
    monkeypatch.setattr(memory, "SMALL_CALL_BYTES", 0)
    monkeypatch.setattr(memory, "available_memory", lambda device: need + pairs // 2)
    plain.get_potential_energy(atoms)
    with pytest.raises(memory.InsufficientMemoryError, match="needs about"):
        disp.get_potential_energy(atoms)
