"""scripts/adsorption_benchmark.py and scripts/evaluate_adsorption.py: the cases are the same
for a seed and spread over the categories and the held-out rules; a labelling (EMT as the
labeller) and an evaluation (a tiny model) give the documented columns, flag unphysical
ends and resume after a kill without redoing finished cases."""

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase.build import add_adsorbate, fcc111
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from conftest import make_model

from geomformer_md import save_model
from geomformer_md.simulate.sites import site_by_coordination

SCRIPTS = Path(__file__).parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[name] = mod
    return mod


sc = _load("adsorption_scoring")
ab = _load("adsorption_benchmark")
ev = _load("evaluate_adsorption")

A0 = {"Cu": 3.62, "Ag": 4.16, "Au": 4.16, "Ni": 3.52, "Pd": 3.94, "Pt": 3.98}
TINY = {
    "facet": {"parts": [
        {"space": {"elements": ["Cu"], "miller": ["111"],
                   "adsorbates": [{"formula": "O"}, {"formula": "OH", "binding": "O"}],
                   "coverages": [0.125]},
         "mix": ["surface+ads"], "balance": "adsorbate", "starts": 2}]},
    "nanoparticle": {"parts": [
        {"space": {"elements": ["Cu"], "clusters": [{"shape": "icosahedron", "noshells": 2}],
                   "adsorbates": [{"formula": "H", "sites": ["top"]}]},
         "mix": ["cluster+ads"], "starts": 1}]},
}


@pytest.fixture(scope="module")
def cases():
    return ab.build_cases(0)


def test_cases_spread_over_categories_and_held_out_rules(cases):
    assert len(cases) >= 120
    cats = Counter(c["category"] for c, _ in cases)
    assert set(cats) == set(ab.DESCRIPTION) and min(cats.values()) >= 12
    tags = [c["tags"] for c, _ in cases]
    assert {str(t["facet"]) for t in tags} >= {"111", "100", "110", "211", "311"}
    assert {t["order"] for t in tags} >= {"random", "segregated", "L12", "L10"}
    assert {t["defect"] for t in tags} >= {"adatom", "vacancy"}
    sizes = {t["cluster_size"] for t in tags if t["cluster_size"] != "none"}
    assert min(sizes) == 13 and max(sizes) == 79 and 55 in sizes
    assert {t["coverage"] for t in tags if t["coverage"] != "none"} >= {0.125, 0.25, 0.5, 1.0}
    assert any("+" in t["adsorbate"] for t in tags)
    assert {t["adsorbate"] for t in tags} >= {"CH3", "CH3O", "COH", "CHO", "OOH", "CO", "NO",
                                              "NH2", "NH3"}
    rules = Counter(r for c, _ in cases for r in c["heldout"])
    assert len(rules) == 4 and min(rules.values()) >= 4  # Cu-Ni, (311), 55 atoms, NHx
    assert sum(not c["heldout"] for c, _ in cases) >= 80
    for case, atoms in cases:  # every adsorbate found, its binding atom among its atoms
        n = case["n_host"]
        assert not np.isin(atoms.numbers[:n], (1, 6, 7, 8)).any()
        assert sum(len(a["atoms"]) for a in case["adsorbates"]) == len(atoms) - n
        assert all(a["binding"] in a["atoms"] for a in case["adsorbates"])


def test_cases_are_the_same_for_a_seed_and_differ_for_another(cases):
    again = ab.build_cases(0, {"alloy_surface": ab.DESCRIPTION["alloy_surface"]})
    first = {c["id"]: (c, a) for c, a in cases}
    for case, atoms in again:
        assert case == first[case["id"]][0]
        assert np.array_equal(atoms.positions, first[case["id"]][1].positions)
    other = ab.build_cases(1, {"alloy_surface": ab.DESCRIPTION["alloy_surface"]})
    assert any(len(a) != len(b) or not np.allclose(a.positions, b.positions)
               for (_, a), (_, b) in zip(again, other, strict=True))


def test_site_by_coordination_names_the_sites_of_fcc111():
    for site, height, want in [("ontop", 1.8, "top"), ("bridge", 1.5, "bridge"),
                               ("fcc", 1.2, "fcc"), ("hcp", 1.2, "hcp"), ("fcc", 6.0, "desorbed")]:
        slab = fcc111("Pt", (3, 3, 3), vacuum=8.0)
        add_adsorbate(slab, "O", height, site)
        assert site_by_coordination(slab, len(slab) - 1)[0] == want


def _case_on_cu111():
    slab = fcc111("Cu", (2, 2, 3), vacuum=8.0)
    slab.set_constraint(FixAtoms(indices=list(range(4))))
    n = len(slab)
    add_adsorbate(slab, "O", 1.2, "fcc")
    add_adsorbate(slab, "H", 1.0, "hcp")
    slab.positions[n + 1, :2] = slab.positions[n, :2]
    slab.positions[n + 1, 2] = slab.positions[n, 2] + 0.97  # OH upright at the fcc site
    case = {"n_host": n, "adsorbates": [{"formula": "OH", "atoms": [n, n + 1], "binding": n,
                                         "reference": {"H2O": 1.0, "H2": -0.5}}]}
    return case, slab


def test_assess_flags_unphysical_ends():
    case, start = _case_on_cu111()
    n = case["n_host"]
    ok = sc.assess(case, start, start)
    assert ok["flags"] == [] and ok["sites"] == ["fcc"]
    far = start.copy()
    far.positions[n:, 2] += 5.0
    assert sc.assess(case, start, far)["flags"] == ["desorbed"]
    broken = start.copy()
    broken.positions[n + 1, 2] += 1.5
    assert sc.assess(case, start, broken)["flags"] == ["dissociated"]
    fused = start.copy()
    fused.positions[n] = fused.positions[n - 1] + [0.0, 0.0, 0.5]
    fused.positions[n + 1] = fused.positions[n] + [0.0, 0.0, 0.97]
    assert "close_contact" in sc.assess(case, start, fused)["flags"]
    host = start[:n]
    same = sc.assess(case, start, start, host)
    rebuilt = start.copy()
    rebuilt.positions[4, 0] += 1.2  # a second-layer atom pushed out of its place
    moved = sc.assess(case, start, rebuilt, host)
    assert moved["flags"] == [] and moved["host_displacement"] == pytest.approx(1.2)
    assert sc.restructured(same, moved) and not sc.restructured(moved, moved)


def _label(tmp_path):
    cases = ab.build_cases(0, TINY, a0=A0)
    lab = ab.Labeller(EMT(), tmp_path / "work", log=lambda m: None)
    return cases, lab


def test_labelling_resumes_and_evaluation_gives_the_columns(tmp_path, monkeypatch):
    monkeypatch.setitem(sc.RELAX, "steps", 100)  # the shared settings, both sides
    cases, lab = _label(tmp_path)
    assert lab.run(cases, limit=1) == 1  # as if killed after one case
    first = tmp_path / "work" / "cases" / f"{cases[0][0]['id']}.json"
    stamp = first.stat().st_mtime_ns
    again = ab.Labeller(EMT(), tmp_path / "work", log=lambda m: None)
    assert again.run(cases) == len(cases) - 1
    assert first.stat().st_mtime_ns == stamp
    assert again.relaxations <= 2 * (len(cases) - 1)  # no gas molecule relaxed again
    ab.assemble(cases, tmp_path / "work", tmp_path / "data", {"labeller": "EMT"})
    items, gas = ev.load_benchmark(tmp_path / "data")
    assert [it["case"]["id"] for it in items] == [c["id"] for c, _ in cases]
    assert set(gas) == {"O2", "H2", "H2O"}
    for it, (_, start) in zip(items, cases, strict=True):  # the same starts, constraints kept
        assert sc.host_key(it["start"]) == sc.host_key(start)

    model = tmp_path / "tiny.pt"
    save_model(make_model("float64"), model)
    out = tmp_path / "eval.json"
    work = tmp_path / "eval"
    runner = ev.ModelRunner(str(model), work, batch=1, log=lambda m: None)

    def killed(*a, **k):  # a kill during the second case
        raise KeyboardInterrupt

    runner.run(items[:1], runner.gas(["O2", "H2", "H2O"]))
    stamp = (work / f"{items[0]['case']['id']}.json").stat().st_mtime_ns
    monkeypatch.setattr(runner, "_relax", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run(items, {})
    args = [str(model), "--data", str(tmp_path / "data"), "--work", str(work), "--out", str(out),
            "--name", "tiny"]
    assert ev.main([*args, "--limit", "0"]) == 0  # what is done so far, marked partial
    partial = json.loads(out.read_text())
    assert partial["partial"] and partial["table"]["all"]["n"] == 1
    monkeypatch.setitem(sc.RELAX, "fmax", 1e-6)  # out of reach in 2 steps: flagged
    monkeypatch.setitem(sc.RELAX, "steps", 2)
    assert ev.main(args) == 0
    assert (work / f"{items[0]['case']['id']}.json").stat().st_mtime_ns == stamp
    summary = json.loads(out.read_text())
    table = summary["table"]
    assert list(table) == ["facet", "nanoparticle", "not held-out", "all"]
    for row in table.values():
        assert {"n", "labeller_flagged", "model_flagged", "within", "mae", "max",
                "sites_differ", "sites_labeller", "sites_model", "flags_model"} <= set(row)
    assert table["all"]["n"] == len(cases) and not summary["partial"]
    rows = summary["cases"]
    assert len(rows) == len(cases)
    # the cases relaxed with 2 steps end unconverged: flagged, counted, never averaged
    late = [r for r in rows if r["id"] != items[0]["case"]["id"]]
    assert all("not_converged" in r["flags_model"] and r["error"] is None for r in late)
    assert table["all"]["model_flagged"] >= len(late) - table["all"]["labeller_flagged"]
    assert table["all"]["labeller_flagged"] == sum(bool(r["flags_labeller"]) for r in rows)
    assert not summary["acceptance"]["cases_min_100"]
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
