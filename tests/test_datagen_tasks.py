"""The reference-data generator's task lists (scripts/datagen; no labeller needed)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts" / "datagen"))
tasks = pytest.importorskip("tasks")
structures = pytest.importorskip("structures")


def test_extra_sets_never_place_a_heldout_combination():
    for name in tasks.EXTRA_SETS:
        extra = tasks.build_extra_tasks(name)
        assert not any(t.params.get("heldout") for t in extra), name
        for _metal, facet, ads, site in tasks.relaxed_combinations(extra):
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


def test_low_set_adds_low_coverage_relaxations_but_no_reference_system():
    """'low' relaxes at 3x3x4 only what no other set relaxes at 3x3x4, never a held-out or
    reference combination, and with the others covers every (111)/(100) combination at 3x3x4."""
    low = [t for t in tasks.build_extra_tasks("low") if t.runner == "run_relax"]
    assert low and all(tuple(t.params["size"]) == tasks.LARGE[t.params["facet"]] for t in low)
    got = tasks.relaxed_combinations(low)
    assert len(got) == len(low)
    refs = {(m, f, a, s) for m, f, a, s, _ in tasks.REF_CASES}
    assert not got & refs
    before = set()
    for t in tasks.build_tasks(0) + tasks._extra_n100() + tasks._extra_sites():
        if tuple(t.params.get("size", ())) == tasks.LARGE.get(t.params.get("facet")):
            before |= tasks.relaxed_combinations([t])
    assert not got & before
    wanted = {(m, f, a, s) for f in ("111", "100") for a in tasks.ADS_MAIN
              for s in structures.SITES[f] if not structures.is_heldout(f, a, s)
              for m in tasks.METALS}
    assert wanted <= got | before | refs


def test_slabs_set_relaxes_every_clean_3x3x4_slab():
    slabs = [t for t in tasks.build_extra_tasks("slabs") if t.runner == "run_slab_relax"]
    assert {(t.metal, t.params["facet"]) for t in slabs} == {
        (m, f) for m in tasks.METALS for f in tasks.FACETS}
    assert all(tuple(t.params["size"]) == tasks.LARGE[t.params["facet"]] for t in slabs)


def test_ohmd_set_runs_md_of_oh_on_every_metal_and_flat_facet():
    md = [t for t in tasks.build_extra_tasks("ohmd") if t.runner == "run_md"]
    assert {(t.metal, t.params["facet"], t.params["T"]) for t in md} == {
        (m, f, T) for m in tasks.METALS for f in ("111", "100") for T in (300, 600)}
    assert all(t.params["ads_list"] == ["OH"] for t in md)


def test_ohfcc_set_relaxes_two_oh_at_fcc_hollows_at_2_9_ml_not_a_reference_case():
    relax = [t for t in tasks.build_extra_tasks("ohfcc") if t.runner == "run_relax"]
    assert {t.metal for t in relax} == set(tasks.METALS)
    assert not tasks.is_heldout("111", "OH", "fcc")
    for t in relax:
        p = t.params
        assert (p["facet"], tuple(p["size"]), p["coverage"]) == ("111", tasks.LARGE["111"], "2/9")
        assert p["ads_list"] == ["OH", "OH"] and p["sites"] == ["fcc", "fcc"]
    # the reference cases are one adsorbate at 1/9 ML; this set never places a single one
    assert all(len(t.params["ads_list"]) == 2 for t in relax)


def test_ohfar_set_places_two_oh_at_the_farthest_fcc_hollows_by_relaxation_and_md():
    extra = [t for t in tasks.build_extra_tasks("ohfar") if t.runner != "run_eos"]
    assert {t.metal for t in extra} == set(tasks.METALS)
    assert sorted(t.params.get("T", 0) for t in extra if t.metal == "Pt") == [0, 300, 600]
    size = tasks.LARGE["111"]
    placed = []
    for t in extra:
        p = t.params
        assert (p["facet"], tuple(p["size"]), p["coverage"]) == ("111", size, "2/9")
        assert [(x["ads"], x["site"]) for x in p["placements"]] == [("OH", "fcc")] * 2
        assert not any(structures.is_heldout("111", x["ads"], x["site"]) for x in p["placements"])
        placed.append(tuple(map(tuple, (x["offset"] for x in p["placements"]))))
    assert len(set(placed)) == 1
    # no other offset puts the second OH farther from the first (minimum image)
    rng = np.random.default_rng(0)
    pls = tasks._task_placements(rng, extra[0].params, "Pt", 3.98)
    assert all(1.2 <= x["height"] <= 1.5 for x in pls)
    atoms, inst, _ = tasks.build_ads_system("Pt", "111", size, 3.98, pls, rng=None,
                                            rattle_start=False)
    d_far = tasks._min_ads_distance(atoms, inst)
    for ox in range(size[0]):
        for oy in range(size[1]):
            other = [dict(pls[0]), dict(pls[1], offset=(ox, oy))]
            at, ins, _ = tasks.build_ads_system("Pt", "111", size, 3.98, other, rng=None,
                                                rattle_start=False)
            assert tasks._min_ads_distance(at, ins) <= d_far + 1e-9
    assert d_far > 4.5   # beyond an O-O hydrogen bond, and beyond the model's cutoff


def test_ohfartb_set_places_the_far_pairs_at_top_and_bridge_never_a_hollow():
    extra = [t for t in tasks.build_extra_tasks("ohfartb") if t.runner != "run_eos"]
    sites = {x["site"] for t in extra for x in t.params["placements"]}
    assert sites == {"top", "bridge"}
    assert len(extra) == 2 * 3 * len(tasks.METALS)
    names = {t.name for t in extra} | {t.name for t in tasks.build_extra_tasks("ohfar")}
    assert len(names) == len(extra) + len(tasks.build_extra_tasks("ohfar")), "task names collide"
    for t in extra:
        offs = [tuple(x["offset"]) for x in t.params["placements"]]
        site = t.params["placements"][0]["site"]
        assert offs == [(0, 0), tuple(tasks.far_pair_offset("111", tasks.LARGE["111"], "OH", site))]


def test_short_set_covers_every_pair_and_metal_and_holds_out_some_scans():
    extra = [t for t in tasks.build_extra_tasks("short") if t.runner != "run_eos"]
    assert len({t.name for t in extra}) == len(extra)
    elements = tasks.SHORT_ELEMENTS
    n_pairs = len(elements) * (len(elements) + 1) // 2
    dimers = [t for t in extra if t.runner == "run_short_dimer"]
    trimers = [t for t in extra if t.runner == "run_short_trimer"]
    pushes = [t for t in extra if t.runner == "run_short_push"]
    assert len(dimers) == len(trimers) == n_pairs
    assert {tuple(sorted(t.params["pair"])) for t in trimers} == {
        tuple(sorted(t.params["pair"])) for t in dimers}
    assert {t.metal for t in pushes} == set(tasks.METALS)
    assert {t.params["pushed"] for t in pushes} >= {"H", "C", "N", "O"} | set(tasks.METALS)
    held = [t for t in extra if t.params["test_scan"]]
    assert all(t.name.startswith("extra_shorttest_") for t in held)
    assert not any(t.params["test_scan"] for t in dimers)  # every pair's dimer is trained on
    assert 0.05 < len(held) / len(trimers + pushes) < 0.3


def test_short_scans_are_kept_only_where_the_labeller_curve_is_a_wall():
    """A Morse wall that turns over below 0.5 R (as the labeller's dimers do) is kept down to
    the turn plus the margin; one that flattens first breaks where it flattens; a clean wall
    is kept down to the floor."""
    short_range = pytest.importorskip("short_range")
    R = 2.0
    d = np.arange(1.2 * R, 0.35 * R, -0.02)
    morse = 3.0 * (1 - np.exp(-1.5 * (d - 0.9 * R))) ** 2
    turned = np.where(d > 0.5 * R, morse, morse.max() - 40.0 * (0.5 * R - d))
    d_break, d_keep = short_range.trusted_range(d, turned, R)
    assert d_break == pytest.approx(0.5 * R, abs=0.03)
    assert d_keep == pytest.approx(d_break + short_range.MARGIN * R)
    at_06 = np.interp(0.6 * R, d[::-1], morse[::-1])
    flat = np.where(d > 0.6 * R, morse, at_06 + 1e-3 * (0.6 * R - d))
    assert short_range.trusted_range(d, flat, R)[0] == pytest.approx(0.6 * R, abs=0.05)
    assert short_range.trusted_range(d, morse, R) == (0.0, short_range.FLOOR * R)


def test_relabel_merges_chunks_of_an_unlabelled_source(tmp_path):
    """Structures to label (a distillation's refused frames: no labels, no config_id) merge
    into one file; a chunk whose positions differ from the source is refused."""
    relabel = pytest.importorskip("relabel")
    from ase.build import bulk
    from ase.calculators.emt import EMT

    src = [bulk("Cu", cubic=True) for _ in range(3)]
    for i, a in enumerate(src):
        a.rattle(0.05, seed=i)
        a.info["category"] = "bulk"
    out = tmp_path / "chunks"
    out.mkdir()
    labelled = []
    for a in src:
        b = a.copy()
        b.calc = EMT()
        b.get_forces()
        labelled.append(relabel.snapshot(b, **a.info))  # as relabel.py writes its chunks
    relabel.write_xz(relabel.chunk_path(out, 0), labelled[:2])
    relabel.write_xz(relabel.chunk_path(out, 1), labelled[2:])
    target = tmp_path / "merged.extxyz.xz"
    relabel.merge(src, out, 2, target, "emt")
    merged = relabel.read_xyz(target)
    assert len(merged) == 3 and merged[2].info["category"] == "bulk"
    assert np.allclose(merged[1].get_forces(), labelled[1].get_forces())
    src[1].positions[0, 0] += 0.1
    with pytest.raises(SystemExit, match="frame order differs"):
        relabel.merge(src, out, 2, target, "emt")
