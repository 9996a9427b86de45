"""research/scripts/labeller_validation.py: the analysis (EOS fit, adsorption energies),
resumable store."""

import json
import sys
from pathlib import Path

import pytest
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research" / "scripts"))
import labeller_validation as lv  # noqa: E402


def test_report_recovers_lattice_constant_and_adsorption_energy(tmp_path):
    store = lv.Store(tmp_path)
    a_true, b_true = {"Cu": 3.64, "Pt": 3.97}, 0.9  # E(V) = B (V - V0)^2 / (2 V0), B in eV/Å^3
    for metal in lv.METALS:
        v0 = a_true[metal] ** 3 / 4
        for s in lv.STRAINS:
            v = bulk(metal, "fcc", a=lv.A_GUESS[metal] * (1 + s)).get_volume()
            energy = 0.5 * b_true * (v - v0) ** 2 / v0
            store.put("fake", f"{metal}_bulk_{s:+.3f}", {"energy": energy})
    energies = {"Cu_slab": -40.0, "Cu_O_fcc": -46.0, "H2O": -14.0, "H2": -6.5}
    for key, e in energies.items():
        store.put("fake", key, {"energy": e})
    table = lv.results_table(tmp_path)["fake"]
    for metal in lv.METALS:
        assert table[f"a0_{metal}"] == pytest.approx(a_true[metal], abs=2e-3)
    # E(slab+O) - E(slab) - (E(H2O) - E(H2)) = -46 + 40 + 14 - 6.5
    assert table["Eads_Cu_O_fcc"] == pytest.approx(1.5)
    assert "Eads_Pt_O_fcc" not in table  # missing inputs give no number, not a wrong one
    again = json.loads((tmp_path / "results.json").read_text())  # written as it goes
    assert again["fake"]["H2"]["energy"] == -6.5
