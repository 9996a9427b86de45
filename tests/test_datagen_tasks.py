"""The reference-data generator's task lists (scripts/datagen; no labeller needed)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "datagen"))
tasks = pytest.importorskip("tasks")
structures = pytest.importorskip("structures")


def _relaxed_combos(task_list):
    out = set()
    for t in task_list:
        p = t.params
        if t.runner == "run_relax" and len(p.get("ads_list", ())) == 1 and p.get("sites"):
            out.add((t.metal, p["facet"], p["ads_list"][0], p["sites"][0], bool(p.get("heldout"))))
    return out


def test_extra_sets_never_place_a_heldout_combination():
    for name in tasks.EXTRA_SETS:
        for metal, facet, ads, site, heldout in _relaxed_combos(tasks.build_extra_tasks(name)):
            assert not heldout and not structures.is_heldout(facet, ads, site), (name, facet, ads)


def test_sites_set_fills_every_gap_of_the_main_set():
    """With 'sites', every (metal, facet, adsorbate, site) outside the held-out ones is
    relaxed at least once in training data, and 'sites' repeats none of the main set's."""
    main = {c[:4] for c in _relaxed_combos(tasks.build_tasks(0) + tasks._extra_n100()) if not c[4]}
    extra = {c[:4] for c in _relaxed_combos(tasks.build_extra_tasks("sites"))}
    assert not main & extra
    wanted = {
        (m, f, a, s)
        for f in tasks.FACETS
        for a in tasks.ADS_MAIN
        for s in structures.SITES[f]
        if not structures.is_heldout(f, a, s)
        for m in tasks.METALS
    }
    assert extra <= wanted and wanted <= main | extra
    assert len(extra) == len(tasks.build_extra_tasks("sites")) - len(tasks.METALS)  # + EOS
