"""The reference-data generator's task lists (scripts/datagen; no labeller needed)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "datagen"))
tasks = pytest.importorskip("tasks")
structures = pytest.importorskip("structures")


def test_extra_sets_never_place_a_heldout_combination():
    for name in tasks.EXTRA_SETS:
        extra = tasks.build_extra_tasks(name)
        assert not any(t.params.get("heldout") for t in extra), name
        for metal, facet, ads, site in tasks.relaxed_combinations(extra):
            assert not structures.is_heldout(facet, ads, site), (name, facet, ads)


def test_sites_set_fills_every_gap_of_the_main_set():
    """With 'sites', every (metal, facet, adsorbate, site) outside the held-out ones is
    relaxed at least once in training data, and 'sites' repeats none of the main set's."""
    main = {
        c for c in tasks.relaxed_combinations(tasks.build_tasks(0) + tasks._extra_n100())
        if not structures.is_heldout(*c[1:])
    }
    extra = tasks.relaxed_combinations(tasks.build_extra_tasks("sites"))
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
