"""scripts/ood_benchmark.py: the benchmark's description builds what it says, and a build
(EMT as the teacher) labels tagged frames and resumes without relabelling."""

import importlib.util
import lzma
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.data import covalent_radii
from ase.io import read

from geomformer_md.distill.teacher import Teacher

spec = importlib.util.spec_from_file_location(
    "ood_benchmark", Path(__file__).parent.parent / "scripts" / "ood_benchmark.py")
ob = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ob)


def _starts(description=None):
    builder = ob.Builder(None, {}, 0, None, **({"description": description} if description
                                               else {}))
    for ci, cat, pi, part, k, space, kind in builder.starts():
        yield cat, ob.build_start(space, kind, part, np.random.default_rng([0, ci, pi, k, 1]))


def test_description_builds_the_categories_it_names():
    seen = {}
    for cat, atoms in _starts():
        seen.setdefault(cat, []).append(atoms)
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        r = covalent_radii[atoms.numbers]
        assert (d > 0.6 * (r[:, None] + r)).all(), (cat, atoms.info)
    assert set(seen) == set(ob.DESCRIPTION)
    assert all(str(a.info["elements"]).count("-") == 1 for a in seen["alloy_surface"])
    assert {a.info["order"] for a in seen["alloy_surface"]} >= {"L12", "random", "segregated"}
    assert all(a.info["coverage"] >= 0.5 for a in seen["high_coverage"])
    assert any("+" in a.info["adsorbate"] for a in seen["high_coverage"])
    facets = Counter(str(a.info["facet"]) for a in seen["facets_defects"])
    assert facets["110"] and facets["311"]
    assert all(a.info["defect"] != "none" for a in seen["facets_defects"]
               if str(a.info["facet"]) in ("111", "100"))
    assert all(not a.pbc.any() for a in seen["nanoparticle"])
    per_ads = Counter(a.info["adsorbate"] for a in seen["intermediate"])
    assert per_ads == {n: 2 for n in ("CH3", "CH3O", "COH", "CHO", "OOH", "NH2", "NO", "NH3")}


TINY = {
    "nanoparticle": {"label": "clusters", "parts": [
        {"space": {"elements": ["Cu"], "clusters": [{"shape": "icosahedron", "noshells": 2}],
                   "adsorbates": [{"formula": "O"}]},
         "mix": ["cluster", "cluster+ads"], "starts": 2}]},
    "hot_md": {"label": "hot", "mode": "hot_md",
               "sampling": {"md_temperatures": [900], "md_steps": 4, "md_keep": [2, 4]},
               "parts": [{"space": {"elements": ["Cu"], "miller": ["111"],
                                    "adsorbates": [{"formula": "O"}], "coverages": [0.25]},
                          "cell": "small", "mix": ["surface+ads"], "starts": 1}]},
}
SAMPLING = {**ob.SAMPLING, "relax_steps": 3, "md_keep": [2, 4]}


def test_build_labels_tagged_frames_and_resumes(tmp_path):
    teacher = Teacher("ase.calculators.emt.EMT", name="EMT", max_force=10.0)
    labeller = ob.labeller_info({"name": "EMT", "calculator": "ase.calculators.emt.EMT",
                                 "kwargs": {}})
    builder = ob.Builder(teacher, labeller, 0, tmp_path / "work", description=TINY,
                         sampling=SAMPLING, log=lambda m: None)
    builder.run()
    calls = teacher.calls
    summary = ob.assemble(builder, tmp_path / "out")
    frames = read(tmp_path / "out" / "frames.extxyz.xz", index=":")
    assert summary["n_frames"] == len(frames) == 2 * 4 + 2
    modes = Counter((a.info["category"], a.info["mode"]) for a in frames)
    assert modes == {("nanoparticle", "start"): 2, ("nanoparticle", "relax"): 2,
                     ("nanoparticle", "md"): 4, ("hot_md", "hot_md"): 2}
    for a in frames:
        assert a.info["labeller"] == "EMT" and a.info["labeller_version"].startswith("ase ")
        assert a.info["config_id"].startswith(a.info["category"])
        ref = a.copy()
        ref.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-5)
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-5)
    hot = [a for a in frames if a.info["category"] == "hot_md"]
    assert all(a.info["temperature_K"] == 900 and a.pbc.tolist() == [True, True, False]
               for a in hot)
    # a second run labels nothing and writes the same file
    first = lzma.decompress((tmp_path / "out" / "frames.extxyz.xz").read_bytes())
    (tmp_path / "work" / "hot_md" / "0-000.extxyz").unlink()  # as if killed before it
    builder.run()
    assert 0 < teacher.calls - calls < 20  # only the one structure again
    ob.assemble(builder, tmp_path / "out")
    assert lzma.decompress((tmp_path / "out" / "frames.extxyz.xz").read_bytes()) == first


spec_eval = importlib.util.spec_from_file_location(
    "evaluate_ood", Path(__file__).parent.parent / "scripts" / "evaluate_ood.py")
ev = importlib.util.module_from_spec(spec_eval)
spec_eval.loader.exec_module(ev)


def _row(cat, err, std, n=2):
    """A frame whose first atom has force error ``err`` (along x) and force std ``std``."""
    df = np.zeros((n, 3))
    df[0, 0] = err
    return {"category": cat, "n": n, "de": 0.01 * n, "df": df,
            "fstd": np.array([std] + [0.001] * (n - 1)), "fmag": np.array([1.0, 2.0 + err])}


def test_calibration_numbers_follow_their_definitions():
    # 5 frames with a large error (> 0.3 eV/Å) with uncertainties 0.01..0.05, 5 without
    rows = [_row("a", 0.5 + k, 0.01 * (k + 1)) for k in range(5)]
    rows += [_row("b", 0.1, u) for u in (0.001, 0.002, 0.02, 0.03, 0.2)]
    s = ev.summarise(rows, threshold=0.025)
    assert s["t80_eV_A"] == pytest.approx(0.02)  # 4 of the 5 large frames have >= 0.02
    a, b, everything = s["table"]["a"], s["table"]["b"], s["table"]["all"]
    assert a["large"] == 5 and b["large"] == 0
    assert a["caught_at_t80"] == pytest.approx(0.8)
    assert a["caught_at_threshold"] == pytest.approx(0.6)  # 0.03, 0.04, 0.05 > 0.025
    assert b["flagged_at_t80"] == pytest.approx(0.6) and b["caught_at_t80"] is None
    assert s["false_alarms_at_t80"] == pytest.approx(0.6)
    assert everything["flagged_at_t80"] == pytest.approx(0.7)
    assert a["spearman_frames"] == pytest.approx(1.0)  # larger error, larger std
    assert everything["force_mae_meV_A"] == pytest.approx(
        1000 * np.mean([r["df"][0, 0] for r in rows]) / 6)
    assert everything["energy_mae_meV_atom"] == pytest.approx(10.0)
    assert a["max_force_error_eV_A"] == pytest.approx(4.5)
    assert 0.0 <= everything["auc"] <= 1.0
    assert everything["force_auc"] == pytest.approx(1.0)  # |F| grows with the error here
