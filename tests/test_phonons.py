"""Phonons through phonopy with forces from an ASE calculator (EMT Cu; shipped potential if any)."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import kB
from conftest import make_model

import geomformer_md
from geomformer_md import GeoMFormerCalculator
from geomformer_md.simulate.phonons import band_path, phonons
from geomformer_md.simulate.relax import relax

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cu_emt(tmp_path_factory):
    png = tmp_path_factory.mktemp("ph") / "cu.png"
    # symmetrize=False: the acoustic sum rule must come out of the forces themselves
    res = phonons(
        bulk("Cu"),
        calculator=EMT(),
        supercell=(3, 3, 3),
        mesh=(8, 8, 8),
        npoints=21,
        symmetrize=False,
        plot=png,
        progress=False,
    )
    return res, png


def test_acoustic_sum_rule_and_stability(cu_emt):
    res, _ = cu_emt
    assert res.relax_result is not None and res.relax_result.converged
    assert res.n_atoms_primitive == 1 and res.gamma_frequencies.shape == (3,)
    assert np.abs(res.gamma_frequencies).max() < 0.05  # THz
    assert not res.has_imaginary()
    assert res.min_frequency > -0.05
    top = max(f.max() for f in res.band_frequencies)
    assert 6.0 < top < 10.0  # Cu: ~7-8 THz (EMT)


def test_band_path_and_thermal(cu_emt):
    res, _ = cu_emt
    assert res.band_labels[0] == "G" and "X" in res.band_labels and "L" in res.band_labels
    assert len(res.band_label_positions) == len(res.band_labels) == len(res.band_distances) + 1
    t = res.thermal["temperature"]
    assert t[0] == 0 and t[-1] == 1000
    # Dulong-Petit at high T: 3 k_B per atom of the primitive cell
    assert res.thermal["heat_capacity"][-1] == pytest.approx(3 * kB, rel=0.02)
    assert res.thermal["heat_capacity"][0] == pytest.approx(0.0, abs=1e-8)
    assert np.all(np.diff(res.thermal["free_energy"][10:]) < 0)  # F falls with T
    assert res.dos.shape == res.dos_frequencies.shape and res.dos.max() > 0


def test_png_and_files(cu_emt, tmp_path):
    res, png = cu_emt
    assert res.plot == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res.save(tmp_path / "ph.yaml")
    assert "force_constants" in (tmp_path / "ph.yaml").read_text()
    res.thermal_to_csv(tmp_path / "thermal.csv")
    lines = (tmp_path / "thermal.csv").read_text().splitlines()
    assert lines[0].startswith("T_K") and len(lines) == 102
    assert "Gamma" in res.summary()


def test_custom_path_and_conventional_cell():
    res = phonons(
        bulk("Cu", cubic=True),
        calculator=EMT(),
        supercell=2,
        mesh=(4, 4, 4),
        npoints=5,
        path="GXKGL",
        plot=None,
        progress=False,
        temperatures=[300.0],
    )
    assert res.n_atoms_primitive == 1  # phonopy found the primitive cell
    assert res.band_labels == ["G", "X", "K", "G", "L"]
    with pytest.raises(ValueError, match="special point"):
        band_path(np.array(bulk("Cu").cell), "GXQ")


def test_errors():
    from ase.build import molecule

    with pytest.raises(ValueError, match="periodic in 3"):
        phonons(molecule("H2O"), calculator=EMT(), progress=False, plot=None)
    with pytest.raises(ValueError, match="supercell"):
        phonons(bulk("Cu"), calculator=EMT(), supercell=(2, 2), progress=False, plot=None)


def test_random_model_smoke():
    calc = GeoMFormerCalculator(make_model("float64"))
    res = phonons(
        bulk("Cu"),
        calculator=calc,
        supercell=2,
        relax_first=False,
        mesh=(3, 3, 3),
        npoints=3,
        temperatures=[300.0],
        plot=None,
        progress=False,
    )
    assert np.isfinite(res.min_frequency) and res.relax_result is None


@pytest.mark.slow
def test_shipped_potential_phonons(tmp_path):
    pots = geomformer_md.list_potentials()
    if not pots:
        pytest.skip("no shipped potential")
    elements = set().union(*(set(e.get("elements", [])) for e in pots.values()))
    symbol = next((s for s in ("Cu", "Pt", "Ag", "Au", "Ni", "Pd") if s in elements), None)
    if symbol is None:
        pytest.skip("the shipped potentials have no fcc metal")
    calc = GeoMFormerCalculator(dtype="float64")
    cell, summary = relax(bulk(symbol), calculator=calc, relax_cell=True, fmax=1e-3, steps=200,
                          optimizer="BFGS", progress=False)
    assert summary.converged
    res = phonons(
        cell,
        calculator=calc,
        supercell=(4, 4, 4),
        plot=tmp_path / "ph.png",
        progress=False,
    )
    assert np.abs(res.gamma_frequencies).max() < 0.05
    assert not res.has_imaginary()
    assert (tmp_path / "ph.png").is_file()
