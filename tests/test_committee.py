"""Committees: mean and spread of K models behind the calculator, files, warnings."""

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111
from conftest import make_model

from geomformer_md import GeoMFormerCalculator, ModelFileError, load_model, load_potential
from geomformer_md.calculator import UncertaintyWarning
from geomformer_md.committee import Committee
from geomformer_md.io.checkpoint import load_committee, save_committee, save_model
from geomformer_md.testing import check_forces_fd, check_stress_fd


@pytest.fixture(scope="module")
def members():
    return [make_model("float64", seed=s) for s in range(4)]


def _slab():
    slab = fcc111("Cu", (2, 2, 2), vacuum=5.0, a=3.6)
    slab.append("O")
    slab.positions[-1] = slab.positions[-2] + [0.3, 0.2, 1.6]
    return slab


def test_committee_is_the_members_mean_and_spread(members):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
    atoms.rattle(0.05, seed=1)
    singles = []
    for m in members:
        a = atoms.copy()
        a.calc = GeoMFormerCalculator(m)
        singles.append((a.get_potential_energy(), a.get_forces(), a.get_potential_energies(),
                        a.get_stress()))
    a = atoms.copy()
    a.calc = GeoMFormerCalculator(members, uncertainty_threshold=None)
    e = np.array([s[0] for s in singles])
    f = np.array([s[1] for s in singles])
    ea = np.array([s[2] for s in singles])
    assert a.get_potential_energy() == pytest.approx(e.mean(), abs=1e-10)
    np.testing.assert_allclose(a.get_forces(), f.mean(0), atol=1e-10)
    np.testing.assert_allclose(a.get_stress(), np.mean([s[3] for s in singles], 0), atol=1e-12)
    res = a.calc.results
    assert res["energy_std"] == pytest.approx(e.std(), abs=1e-10)
    np.testing.assert_allclose(res["energies_std"], ea.std(0), atol=1e-10)
    expected = np.sqrt(((f - f.mean(0)) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(res["forces_std"], expected, atol=1e-10)
    assert res["forces_std"].shape == (len(atoms),) and res["forces_std"].max() > 0
    assert a.calc.get_property("forces_std", a).shape == (len(atoms),)


def test_committee_mean_forces_are_conservative(members):
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.rattle(0.05, seed=2)
    calc = GeoMFormerCalculator(members[:2], uncertainty_threshold=None)
    check_forces_fd(calc, _slab(), tol=1e-6)
    check_stress_fd(calc, atoms, tol=1e-6)


def test_identical_members_have_zero_spread(members):
    atoms = _slab()
    atoms.calc = GeoMFormerCalculator([members[0], members[0]], uncertainty_threshold=None)
    atoms.get_forces()
    assert atoms.calc.results["energy_std"] == 0.0
    assert np.all(atoms.calc.results["forces_std"] == 0.0)


def test_warns_once_above_threshold(members):
    calc = GeoMFormerCalculator(members, uncertainty_threshold=1e-6)
    atoms = _slab()
    atoms.calc = calc
    with pytest.warns(UncertaintyWarning, match="outside what the potential was trained on"):
        atoms.get_forces()
    atoms.positions[0, 0] += 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncertaintyWarning)
        atoms.get_forces()  # once per calculator
    assert calc.max_forces_std >= atoms.calc.results["forces_std"].max()


def test_auto_threshold_is_the_one_stored_with_the_committee(members, tmp_path):
    """A shipped committee carries the threshold calibrated for it; "auto" (the default) uses
    it in the calculator and the batched evaluator, 0.05 eV/Å without one."""
    from geomformer_md.committee import DEFAULT_FORCE_STD_THRESHOLD
    from geomformer_md.simulate.batch import BatchEvaluator

    path = tmp_path / "calibrated.pt"
    save_committee(Committee(members[:2], {"force_std_threshold": 0.02}), path)
    assert GeoMFormerCalculator(str(path)).uncertainty_threshold == 0.02
    assert BatchEvaluator(str(path)).uncertainty_threshold == 0.02
    assert GeoMFormerCalculator(str(path), uncertainty_threshold=0.1).uncertainty_threshold == 0.1
    assert GeoMFormerCalculator(members[:2]).uncertainty_threshold == DEFAULT_FORCE_STD_THRESHOLD
    for bad in ("high", -1.0, 0):
        with pytest.raises(ValueError, match="uncertainty_threshold must be"):
            GeoMFormerCalculator(members[:2], uncertainty_threshold=bad)


def test_single_model_has_no_uncertainty(members):
    atoms = _slab()
    atoms.calc = GeoMFormerCalculator(members[0])
    atoms.get_forces()
    assert "forces_std" not in atoms.calc.results


def test_committee_file_round_trip_and_loading_by_path(members, tmp_path):
    path = tmp_path / "committee.pt"
    save_committee(Committee(members, {"note": "test"}), path)
    back = load_committee(path)
    assert len(back) == 4 and back.metadata["note"] == "test"
    same = load_potential(str(path))
    assert isinstance(same, Committee)
    atoms = _slab()
    atoms.calc = GeoMFormerCalculator(str(path), uncertainty_threshold=None)
    e_file = atoms.get_potential_energy()
    atoms.calc = GeoMFormerCalculator(members, uncertainty_threshold=None)
    assert e_file == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    with pytest.raises(ModelFileError, match="is a committee of 4 models"):
        load_model(path)
    single = tmp_path / "one.pt"
    save_model(members[0], single)
    with pytest.raises(ModelFileError, match="single model, not a committee"):
        load_committee(single)
    # a list of files is a committee too
    atoms.calc = GeoMFormerCalculator([str(single), str(single)], uncertainty_threshold=None)
    atoms.get_forces()
    assert atoms.calc.results["energy_std"] == 0.0


def test_committee_float32_cast_keeps_all_members(members):
    calc = GeoMFormerCalculator(members, dtype="float32", uncertainty_threshold=None)
    assert len(calc.model) == 4
    assert all(m.config.dtype == "float32" for m in calc.model.members)
    assert all(m.config.dtype == "float64" for m in members)  # the caller's are untouched


def test_bad_committees_are_one_clear_line(members):
    other = make_model("float64", cutoff=3.0)
    with pytest.raises(ValueError, match="differs from member 0 in elements, cutoff or dtype"):
        GeoMFormerCalculator([members[0], other])
    with pytest.raises(ValueError, match="at least 2 members"):
        Committee([members[0]])
    with pytest.raises(ValueError, match="uncertainty_threshold must be > 0"):
        GeoMFormerCalculator(members, uncertainty_threshold=-1)
    with pytest.raises(ValueError, match="direct_forces is not available for a committee"):
        GeoMFormerCalculator(members, direct_forces=True)


def test_molecule_without_cell(members):
    mol = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.15]])
    mol.calc = GeoMFormerCalculator(members, uncertainty_threshold=None)
    assert np.isfinite(mol.get_potential_energy())
    assert mol.calc.results["forces_std"].shape == (2,)


def test_batched_predict_gives_the_calculators_mean_and_spread(members):
    from geomformer_md.simulate.batch import predict

    structures = [_slab(), bulk("Cu", "fcc", a=3.6) * (2, 1, 1)]
    structures[1].rattle(0.05, seed=3)
    batched = predict(structures, model=members)
    for atoms, res in zip(structures, batched, strict=True):
        atoms.calc = GeoMFormerCalculator(members, uncertainty_threshold=None)
        atoms.get_forces()
        one = atoms.calc.results
        assert res["energy"] == pytest.approx(one["energy"], abs=1e-9)
        assert res["energy_std"] == pytest.approx(one["energy_std"], abs=1e-9)
        np.testing.assert_allclose(res["forces_std"], one["forces_std"], atol=1e-9)
        np.testing.assert_allclose(res["energies_std"], one["energies_std"], atol=1e-9)


def test_workflows_report_the_largest_force_uncertainty(members, tmp_path):
    from geomformer_md.simulate.batch import relax_many
    from geomformer_md.simulate.md import run_md
    from geomformer_md.simulate.relax import relax

    slab = _slab()
    calc = GeoMFormerCalculator(members, uncertainty_threshold=1e-6)
    with pytest.warns(UncertaintyWarning):
        _, res = relax(slab, calc, steps=3, progress=False)
    assert res.max_force_std > 0 and res.uncertain
    assert res.max_force_std >= calc.results["forces_std"].max()
    _, single = relax(slab, GeoMFormerCalculator(members[0]), steps=2, progress=False)
    assert np.isnan(single.max_force_std) and not single.uncertain

    md = run_md(slab, GeoMFormerCalculator(members, uncertainty_threshold=None), steps=4,
                temperature_K=300, trajectory=tmp_path / "a.traj", log=tmp_path / "a.log",
                progress=False)
    assert md.max_force_std > 0 and not md.uncertain  # no threshold: reported, not flagged

    with pytest.warns(UncertaintyWarning, match="structure 1"):
        from geomformer_md.simulate.batch import BatchEvaluator

        ev = BatchEvaluator(members, uncertainty_threshold=1e-6)
        out = relax_many([bulk("Cu", "fcc", a=3.6), slab], ev, steps=2)
    assert out[1][1].max_force_std > 0 and out[1][1].uncertain



def test_shipped_committee_loads_by_name_with_its_calibrated_threshold():
    """geomformer-catalysis-v11-committee: v11 and three fine-tunes of it, by name, with the
    threshold stored in its file; its mean stays close to v11 on a structure v11 knows."""
    from geomformer_md.io.registry import list_potentials

    name = "geomformer-catalysis-v11-committee"
    if name not in list_potentials():
        pytest.skip(f"{name} is not shipped")
    committee = load_potential(name)
    assert isinstance(committee, Committee) and len(committee) == 4
    v11 = load_potential("geomformer-catalysis-v11")
    assert committee.config.species == v11.config.species
    stored = committee.metadata["force_std_threshold"]
    assert 0 < stored < 0.05
    calc = GeoMFormerCalculator(name, uncertainty_threshold="auto")
    assert calc.uncertainty_threshold == stored
    atoms = fcc111("Pt", (2, 2, 3), vacuum=6.0, a=3.97)
    atoms.calc = calc
    mean = atoms.get_forces()
    single = atoms.copy()
    single.calc = GeoMFormerCalculator(v11)
    assert np.abs(mean - single.get_forces()).max() < 0.05  # eV/Å: members agree in-domain
    assert atoms.calc.results["forces_std"].max() > 0
    # per-element thresholds for the elements it was calibrated on; a clean Pt(111) slab,
    # the middle of its training data, is not flagged
    from geomformer_md.committee import UncertaintyMonitor

    per = committee.metadata["force_std_threshold_per_element"]
    assert {"Pt", "O", "H", "Cu"} <= set(per) and all(0 < t < 0.1 for t in per.values())
    monitor = UncertaintyMonitor(calc)
    monitor()
    assert not monitor.uncertain and monitor.max_ratio < 0.5


def test_per_element_thresholds_flag_by_each_elements_own_limit(members, tmp_path):
    """A committee file may store a threshold per element (its members disagree more on some
    elements than others even in domain): an atom is uncertain above its element's limit."""
    from geomformer_md.committee import UncertaintyMonitor

    slab = _slab()  # Cu slab + O
    probe = GeoMFormerCalculator(members[:2], uncertainty_threshold=None)
    slab.calc = probe
    slab.get_forces()
    fs = probe.results["forces_std"]
    o, cu = float(fs[-1]), float(fs[:-1].max())
    # Cu's limit just above its largest spread, O's just below its spread: flagged by O only
    meta = {"force_std_threshold": 10.0,
            "force_std_threshold_per_element": {"Cu": 1.01 * cu, "O": 0.99 * o}}
    path = tmp_path / "per_element.pt"
    save_committee(Committee(members[:2], meta), path)
    calc = GeoMFormerCalculator(str(path))
    atoms = _slab()
    atoms.calc = calc
    monitor = UncertaintyMonitor(calc)
    with pytest.warns(UncertaintyWarning, match=r"on atom 8 \(O\) exceeds .*the limit for O"):
        atoms.get_forces()
    monitor()
    assert monitor.uncertain and monitor.max_ratio == pytest.approx(1 / 0.99, rel=1e-6)
    meta["force_std_threshold_per_element"]["O"] = 1.01 * o  # now nobody passes
    save_committee(Committee(members[:2], meta), path)
    calc = GeoMFormerCalculator(str(path))
    atoms = _slab()
    atoms.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncertaintyWarning)
        atoms.get_forces()
    monitor = UncertaintyMonitor(calc)
    monitor()
    assert not monitor.uncertain
