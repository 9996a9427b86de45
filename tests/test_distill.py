"""Active-learning distillation end to end with EMT as the teacher, kill-and-resume,
teacher failures, the configuration space, selection, and one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.calculators.emt import EMT
from ase.data import covalent_radii
from ase.io import read

from geomformer_md.cli import main
from geomformer_md.committee import Committee
from geomformer_md.distill.config import distill_config_from_dict
from geomformer_md.distill.explore import select_frames
from geomformer_md.distill.space import Space, parse_space

TINY = {
    "seed": 0,
    "teacher": {"calculator": "ase.calculators.emt.EMT"},
    "space": {
        "elements": ["Cu", "Ag"], "bulk_size": 1, "alloy_pairs": [["Cu", "Ag"]],
        "miller": ["111"], "surface_size": [2, 2], "surface_layers": 2,
        "adsorbates": [{"formula": "O"}], "coverages": [0.25],
        "clusters": [{"shape": "octahedron", "length": 3, "cutoff": 1}], "gas": False,
    },
    "model": {"d_model": 8, "n_heads": 2, "n_layers": 1, "n_rbf": 6, "cutoff": 4.0},
    "committee_size": 2, "iterations": 1, "initial_frames": 8, "frames_per_iteration": 4,
    "structures_per_iteration": 3, "md_steps": 8, "snapshot_every": 2, "relax_steps": 4,
    "validation_per_category": 1,
    "training": {"epochs": 2, "batch_size": 4, "lr": 3.0e-3, "warmup_steps": 2},
    "finetune": {"epochs": 1},
}


def _write(tmp_path: Path, name: str, **changes) -> Path:
    cfg = {**TINY, "out_dir": str(tmp_path / name), **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# The uninterrupted run, the killed one and its resumption all run as fresh processes in the
# same environment: bit-for-bit equality is promised for equal conditions, and a pytest process
# carries state from earlier tests (thread pools, library settings) that a fresh one does not.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _distill_process(cfg: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "geomformer_md.cli", "-q", "distill", str(cfg),
                             *flags],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distill")
    cfg = _write(tmp, "straight")
    proc = _distill_process(cfg)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    return tmp, tmp / "straight"


def test_distill_end_to_end_with_emt(finished, capsys):
    _, out = finished
    committee = torch.load(out / "committee.pt", weights_only=True)
    assert committee["kind"] == "committee" and len(committee["members"]) == 2
    from geomformer_md import load_potential

    assert isinstance(load_potential(str(out / "committee.pt")), Committee)
    rows = list(yaml.safe_load((out / "progress.json").read_text()))
    assert [r["iteration"] for r in rows] == [0, 1]
    assert rows[1]["frames_total"] == rows[0]["frames_total"] + rows[1]["frames_added"]
    assert 0 < rows[1]["frames_added"] <= TINY["frames_per_iteration"]
    assert rows[1]["candidates"] >= rows[1]["frames_added"]
    assert all(np.isfinite(r["F_all"]) and np.isfinite(r["E_all"]) for r in rows)
    assert (out / "progress.csv").read_text().count("\n") == 3
    assert (out / "progress.png").stat().st_size > 0
    # labels are the teacher's, recomputed here
    for frame in read(out / "data" / "iter_001.extxyz", ":"):
        ref = frame.copy()
        ref.calc = EMT()
        assert frame.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame.get_forces(), ref.get_forces(), atol=1e-5)
        assert frame.info["teacher"] == "EMT" and frame.info["force_std_max"] > 0
    validation = read(out / "validation.extxyz", ":")
    assert {a.info["category"] for a in validation} >= {"bulk", "alloy", "surface", "cluster"}
    # each iteration's committee carries flag thresholds calibrated on the validation frames
    final = load_potential(str(out / "committee.pt"))
    record = final.metadata["calibration"]
    assert record["frames"] == len(validation) and record["caught"] >= 0.8
    assert rows[-1]["caught_calibrated"] == record["caught"]
    assert rows[-1]["flag_threshold"] == final.metadata["force_std_threshold"] > 0


def test_same_config_continues_and_another_is_refused(finished, capsys):
    tmp, out = finished
    before = (out / "progress.json").read_text()
    assert main(["-q", "distill", str(tmp / "straight.yaml")]) == 0  # finished: nothing to redo
    assert (out / "progress.json").read_text() == before
    other = _write(tmp, "straight", seed=1)
    assert main(["-q", "distill", str(other)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different config (differs in seed)" in err[0]


def test_a_run_resumes_from_its_data_and_newest_members_alone(finished, tmp_path):
    """What an archive of a long run must hold: every data file and the newest iteration's
    members; the members and committees of earlier iterations are never read again."""
    import shutil

    tmp, out = finished
    copy = tmp_path / "straight"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "iter_000")
    (copy / "committee.pt").unlink()
    stored = json.loads((copy / "config.json").read_text())  # unpacked somewhere else
    (copy / "config.json").write_text(json.dumps({**stored, "out_dir": str(copy)}))
    cfg = _write(tmp_path, "straight")
    assert main(["-q", "distill", str(cfg)]) == 0
    assert not (copy / "iter_000").exists()  # nothing retrained
    assert _state(copy)[1][0].keys() == _state(out)[1][0].keys()
    for a, b in zip(_state(copy)[1], _state(out)[1], strict=True):
        for name in a:
            assert torch.equal(a[name], b[name])
    # and it can go on from there
    cfg = _write(tmp_path, "straight", iterations=2)
    assert main(["-q", "distill", str(cfg)]) == 0
    rows = yaml.safe_load((copy / "progress.json").read_text())
    assert [r["iteration"] for r in rows] == [0, 1, 2] and not (copy / "iter_000").exists()


def _state(out: Path):
    data = [read(p, ":") for p in sorted((out / "data").glob("*.extxyz"))]
    blob = torch.load(out / "committee.pt", weights_only=True)
    return data, [m["state_dict"] for m in blob["members"]]


def test_killed_run_resumes_to_the_same_data_and_models(finished, tmp_path):
    _, straight = finished
    cfg = _write(tmp_path, "killed")
    out = tmp_path / "killed"
    proc = _distill_process(cfg)
    target = out / "iter_001" / "label" / "00001.extxyz"  # mid-labelling of iteration 1
    deadline = time.time() + 120
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "committee.pt").exists()
    # resumed with the members training two at a time: same results as one at a time
    resumed = _distill_process(cfg, "--workers", "2")
    _, err = resumed.communicate()
    assert resumed.returncode == 0, err
    data_a, models_a = _state(straight)
    data_b, models_b = _state(out)
    assert [len(d) for d in data_a] == [len(d) for d in data_b]
    for fa, fb in zip(data_a, data_b, strict=True):
        for a, b in zip(fa, fb, strict=True):
            np.testing.assert_array_equal(a.positions, b.positions)
            assert a.get_potential_energy() == b.get_potential_energy()
    for sa, sb in zip(models_a, models_b, strict=True):
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


def test_exploration_in_two_workers_gives_the_same_candidates(finished):
    import dataclasses

    from geomformer_md.distill.run import _explore_jobs
    from geomformer_md.io.checkpoint import load_any

    _, out = finished
    cfg = distill_config_from_dict({**TINY, "out_dir": str(out)})
    space = Space(cfg.space, {"Cu": 3.6, "Ag": 4.1})
    starts = space.sample(np.random.default_rng(5), 3)
    jobs = [(k, a, cfg.explore[k % 3], [0, 1, 5, k]) for k, a in enumerate(starts)]
    file = out / "iter_000" / "committee.pt"
    runs = []
    for workers in (1, 2):
        found = dict(_explore_jobs(jobs, load_any(file), dataclasses.replace(cfg, workers=workers),
                                   file))
        runs.append([a for k in sorted(found) for a in found[k]])
    assert len(runs[0]) == len(runs[1]) > 3
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.info["force_std_max"] == b.info["force_std_max"]


def test_md_driven_by_one_member_scores_snapshots_with_the_committee(finished):
    import dataclasses

    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.distill.explore import explore_structure
    from geomformer_md.distill.run import _explore_one
    from geomformer_md.io.checkpoint import load_any

    _, out = finished
    cfg = distill_config_from_dict({**TINY, "out_dir": str(out), "md_steps": 12,
                                    "temperatures": [1200.0]})
    committee = load_any(out / "iter_000" / "committee.pt")
    start = Space(cfg.space, {"Cu": 3.6, "Ag": 4.1}).sample(np.random.default_rng(3), 1)[0]
    runs = {}
    for driver in ("committee", "member"):
        runs[driver] = _explore_one(committee, (1, start, "md", [0, 1, 5, 1]),
                                    dataclasses.replace(cfg, md_driver=driver))
    # structure 1 is moved by member 1: the same trajectory as exploring with it as driver
    calc = GeoMFormerCalculator(committee, uncertainty_threshold=None)
    again = explore_structure(start, calc, "md", cfg, np.random.default_rng([0, 1, 5, 1]), 1,
                              driver=GeoMFormerCalculator(committee.members[1]))
    other = explore_structure(start, calc, "md", cfg, np.random.default_rng([0, 1, 5, 1]), 1,
                              driver=GeoMFormerCalculator(committee.members[0]))
    member, mean = runs["member"], runs["committee"]
    assert len(member) == len(mean) == len(again) == 12 // TINY["snapshot_every"] + 1
    np.testing.assert_array_equal(member[0].positions, mean[0].positions)  # the same start
    for a, b in zip(member, again, strict=True):
        np.testing.assert_array_equal(a.positions, b.positions)
    assert not np.array_equal(member[-1].positions, mean[-1].positions)
    assert not np.array_equal(member[-1].positions, other[-1].positions)
    # every snapshot is scored by the committee at its own positions
    for a in member[1:]:
        work = a.copy()
        work.calc = calc
        work.get_forces()
        assert a.info["force_std_max"] == pytest.approx(calc.results["forces_std"].max(),
                                                        rel=1e-6)
    with pytest.raises(ValueError, match="md_driver must be one of"):
        distill_config_from_dict({**TINY, "md_driver": "fastest"})


def test_minimize_ends_at_a_minimum_of_its_driver_scored_by_the_committee(finished):
    import dataclasses

    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.distill.explore import explore_structure
    from geomformer_md.distill.run import _explore_one
    from geomformer_md.io.checkpoint import load_any

    _, out = finished
    cfg = distill_config_from_dict({**TINY, "out_dir": str(out),
                                    "explore": ["md", "relax", "rattle", "minimize"],
                                    "minima_per_iteration": 2, "minimize_steps": 300})
    committee = load_any(out / "iter_000" / "committee.pt")
    calc = GeoMFormerCalculator(committee, uncertainty_threshold=None)
    space = Space(cfg.space, {"Cu": 3.6, "Ag": 4.1})
    start = space.sample(np.random.default_rng(7), 1)[0]  # Ag6Cu7O: a particle with O
    start.positions += np.random.default_rng(0).normal(0, 0.1, start.positions.shape)
    # minimized by its driver (EMT here, a physical one) to below minimize_fmax
    (end,) = explore_structure(start, calc, "minimize", cfg, np.random.default_rng(0), 3,
                               driver=EMT())
    assert end.info["mode"] == "minimize" and end.info["trajectory"] == 3
    assert end.info["converged"] and 0 < end.info["step"] <= cfg.minimize_steps
    work = end.copy()
    work.calc = EMT()
    assert np.linalg.norm(work.get_forces(), axis=1).max() < cfg.minimize_fmax
    # scored by the committee at its own positions, energy spread per atom included
    work.calc = calc
    work.get_forces()
    assert end.info["force_std_max"] == pytest.approx(calc.results["forces_std"].max(), rel=1e-6)
    assert end.info["energy_std_per_atom"] == pytest.approx(
        calc.results["energy_std"] / len(end), rel=1e-6)
    # in a run, structure 1 is minimized by member 1; a step budget too small to converge
    # still gives its end, marked not converged
    short = dataclasses.replace(cfg, minimize_steps=3, minimize_fmax=1e-9)
    (cut,) = _explore_one(committee, (1, start, "minimize", [0, 1, 5, 1]), short)
    (same,) = explore_structure(start, calc, "minimize", short, np.random.default_rng(0), 1,
                                driver=GeoMFormerCalculator(committee.members[1]))
    assert not cut.info["converged"] and cut.info["step"] == 3
    np.testing.assert_array_equal(cut.positions, same.positions)
    assert not np.array_equal(cut.positions, start.positions)


def test_minima_get_their_share_of_the_budget_by_energy_spread():
    cands = []
    for traj in range(3):  # ordinary trajectories with large force spreads
        for step in range(4):
            a = _dimer(traj, step)
            a.info.update(trajectory=traj, step=step, mode="md", force_std_max=5.0 + step,
                          energy_std_per_atom=0.001)
            cands.append(a)
    for traj in range(3, 7):  # minima: no force spread to speak of, energy spreads differ
        a = _dimer(traj, 0)
        a.info.update(trajectory=traj, step=40, mode="minimize", force_std_max=0.01,
                      energy_std_per_atom=0.01 * traj)
        cands.append(a)
    base = {**TINY, "frames_per_iteration": 4, "max_per_trajectory": 1,
            "explore": ["md", "minimize"]}
    plain = select_frames(cands, distill_config_from_dict(base), np.random.default_rng(0))
    assert [a.info["mode"] for a in plain] == ["md"] * 3 + ["minimize"]
    cfg = distill_config_from_dict({**base, "minima_per_iteration": 2})
    got = [(a.info["mode"], a.info["trajectory"])
           for a in select_frames(cands, cfg, np.random.default_rng(0))]
    # the two minima with the largest energy spread first, then the usual ranking
    assert got == [("minimize", 6), ("minimize", 5), ("md", 0), ("md", 1)]
    for bad, message in (({"minima_per_iteration": 2}, "needs the minimize mode in explore"),
                         ({"minima_per_iteration": 5, "explore": ["minimize"]},
                          "must be at most frames_per_iteration"),
                         ({"minimize_fmax": 0}, "minimize_fmax must be a positive number"),
                         ({"minimize_steps": 0}, "minimize_steps must be >= 1"),
                         ({"explore": ["md", "anneal"]}, "explore must be a non-empty list")):
        with pytest.raises(ValueError, match=message):
            distill_config_from_dict({**TINY, "frames_per_iteration": 4, **bad})


def test_a_run_with_minima_labels_them(tmp_path):
    cfg = _write(tmp_path, "minima", explore=["md", "minimize"], minima_per_iteration=1,
                 structures_per_iteration=2, minimize_steps=20, minimize_fmax=0.2)
    assert main(["-q", "distill", str(cfg)]) == 0
    added = read(tmp_path / "minima" / "data" / "iter_001.extxyz", ":")
    mins = [a for a in added if a.info.get("mode") == "minimize"]
    assert len(mins) == 1 and mins[0].info["trajectory"] == 1  # structure 1 was minimized
    assert all("energy_std_per_atom" in a.info for a in added)


def test_finetune_frames_caps_what_members_continue_on(tmp_path):
    from ase.build import bulk

    from geomformer_md.distill.run import DistillRun

    cfg = distill_config_from_dict({**TINY, "out_dir": str(tmp_path / "cap"), "finetune_frames": 5,
                                    "bootstrap": False})
    run = DistillRun(cfg, log=lambda m: None, progress=False)
    try:
        old = [bulk("Cu", cubic=True) for _ in range(8)]
        new = [bulk("Ag", cubic=True) for _ in range(3)]
        for i, a in enumerate(old + new):
            a.info["n"] = i
        picks = [run._member_frames(1, k, [old, new]) for k in range(2)]
        for frames in picks:  # this iteration's frames, then 2 of the 8 earlier ones
            assert len(frames) == 5 and [a.info["n"] for a in frames[-3:]] == [8, 9, 10]
            assert all(a.info["n"] < 8 for a in frames[:2])
        assert [a.info["n"] for a in picks[0]] != [a.info["n"] for a in picks[1]]
        assert len(run._member_frames(0, 0, [old + new])) == 11  # iteration 0: all of it
    finally:
        run.close()


def test_a_label_does_not_depend_on_the_structure_labelled_before():
    """The teacher's calculator is reused; EMT keeps its neighbour list between structures,
    which changed the last bits of a label, so a resumed run (fresh calculator) differed
    from an uninterrupted one (CI saw 0.16875432209670205 against 0.1687543220966985 eV)."""
    from ase.build import bulk

    from geomformer_md.distill.teacher import Teacher

    rng = np.random.default_rng(0)
    base = bulk("Cu", "fcc", a=3.6, cubic=True)
    base[0].symbol = "Ag"
    frames = []
    for _ in range(6):
        a = base.copy()
        a.positions += rng.normal(0, 0.01, a.positions.shape)
        frames.append(a)
    shared = Teacher("ase.calculators.emt.EMT")
    for a in frames:
        fresh = Teacher("ase.calculators.emt.EMT")
        one, _ = shared.label(a)
        two, _ = fresh.label(a)
        assert one.get_potential_energy() == two.get_potential_energy()
        np.testing.assert_array_equal(one.get_forces(), two.get_forces())


class FlakyEMT(EMT):
    """EMT that fails on every structure with oxygen and a metal (a stand-in for an SCF
    failure); a lone O atom (the element check) passes."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if "O" in atoms.get_chemical_symbols() and len(atoms) > 1:
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, properties, system_changes or [])


def test_teacher_failures_are_logged_and_never_stored(tmp_path):
    space = {**TINY["space"], "elements": ["Cu"], "alloy_pairs": [], "clusters": []}
    cfg = _write(tmp_path, "flaky", space=space, iterations=0, initial_frames=6,
                 teacher={"calculator": "test_distill.FlakyEMT"})
    assert main(["-q", "distill", str(cfg)]) == 0
    out = tmp_path / "flaky"
    stored = [a for p in (out / "data").glob("*.extxyz") for a in read(p, ":")]
    stored += read(out / "validation.extxyz", ":")
    assert stored and not any("O" in a.get_chemical_symbols() for a in stored)
    failures = (out / "failures.csv").read_text()
    assert "SCF did not converge" in failures
    # the structures it failed on are kept apart, unlabelled, for inspection
    kept = [a for p in out.rglob("*.failed.extxyz") for a in read(p, ":")]
    assert len(kept) == failures.count("SCF did not converge") > 0
    assert all("O" in a.get_chemical_symbols() and a.calc is None for a in kept)
    assert all("SCF" in a.info["teacher_failure"] for a in kept)


def _error(tmp_path, capsys, name, **changes) -> str:
    cfg = _write(tmp_path, name, **changes)
    assert main(["-q", "distill", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


class Broken:
    def __init__(self, **kwargs):
        raise RuntimeError("licence server down")


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    err = _error(tmp_path, capsys, "a", teacher={"calculator": "nosuchpkg.Calc"})
    assert "teacher.calculator 'nosuchpkg.Calc' cannot be imported" in err
    err = _error(tmp_path, capsys, "b", teacher={"calculator": "test_distill.Broken"})
    assert "could not be created" in err and "licence server down" in err
    space = {**TINY["space"], "elements": ["Cu", "Fe"], "alloy_pairs": []}
    err = _error(tmp_path, capsys, "c", space=space)
    assert "fails on element Fe" in err
    space = {**TINY["space"], "elements": ["Cu", "Al"], "alloy_pairs": []}
    err = _error(tmp_path, capsys, "d", space=space, model={},
                 init_from="geomformer-catalysis-v11")
    assert "does not know element(s) ['Al']" in err
    err = _error(tmp_path, capsys, "e", space={"elements": []})
    assert "space.elements is empty" in err
    err = _error(tmp_path, capsys, "f", space={"elements": ["Cu"], "bulk": False})
    assert "configuration space is empty" in err
    err = _error(tmp_path, capsys, "g", training={"lr": "2e-4"})
    assert "training.lr must be a number" in err
    err = _error(tmp_path, capsys, "h", iterations="3")
    assert "iterations must be an integer" in err


def test_space_structures_are_physical_and_respect_holdout():
    cfg = parse_space({
        "elements": ["Cu", "Pt"], "alloy_pairs": [["Cu", "Pt"]], "miller": ["111", "100", "211"],
        "defects": ["adatom", "vacancy"], "adsorbates": [{"formula": "CO", "binding": "C"},
                                                         {"formula": "OH"}],
        "coverages": [0.25, 1.0], "clusters": [{"shape": "icosahedron", "noshells": 2}],
        "holdout": [{"facet": "100"}, {"category": "cluster+ads"}],
    })
    space = Space(cfg, {"Cu": 3.6, "Pt": 3.97})
    rng = np.random.default_rng(0)
    seen = set()
    for atoms in space.sample(rng, 80):
        seen.add(atoms.info["category"])
        assert atoms.info["facet"] != "100" and atoms.info["category"] != "cluster+ads"
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        limit = 0.6 * (covalent_radii[atoms.numbers][:, None] + covalent_radii[atoms.numbers])
        assert (d > limit).all(), atoms.info
    assert seen >= {"bulk", "alloy", "surface", "surface+ads", "cluster", "gas"}
    held = space.sample(rng, 5, rule={"facet": "100"})
    assert all(a.info["facet"] == "100" for a in held)


def _dimer(traj: int, step: int):
    """A candidate of its own geometry (the selection skips repeated structures)."""
    from ase import Atoms

    return Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.0 + 0.5 * traj + 0.03 * step]])


def test_selection_skips_structures_it_has_already_chosen():
    """Relaxations of a perfect crystal do not move and every snapshot of an isolated atom
    is the same structure: labelling them again teaches nothing. A translated copy is the
    same structure; a displacement above min_displacement is a new one."""
    from ase import Atoms
    from ase.build import bulk

    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    cands = []
    for step in range(5):  # a relaxation that does not move
        a = crystal.copy()
        a.info.update(trajectory=0, step=step, force_std_max=0.0)
        cands.append(a)
    for traj in (1, 2, 3):  # isolated atoms, one trajectory each, placed anywhere
        a = Atoms("O", positions=[[traj, 0.5, 0]], cell=[8, 8, 8])
        a.info.update(trajectory=traj, step=0, force_std_max=0.0)
        cands.append(a)
    moved = crystal.copy()
    moved.positions += [0.3, -0.2, 0.1]  # the crystal translated: the same structure
    moved.info.update(trajectory=4, step=0, force_std_max=0.0)
    strained = crystal.copy()
    strained.positions[0, 0] += 0.05  # one atom 0.05 Å away: a new structure
    strained.info.update(trajectory=5, step=0, force_std_max=0.0)
    cands += [moved, strained]
    cfg = distill_config_from_dict({**TINY, "frames_per_iteration": 20, "max_per_trajectory": 5,
                                    "min_separation": 1})
    got = [(a.info["trajectory"], a.info["step"])
           for a in select_frames(cands, cfg, np.random.default_rng(0))]
    assert got == [(0, 0), (1, 0), (5, 0)]
    off = distill_config_from_dict({**TINY, "frames_per_iteration": 20, "max_per_trajectory": 5,
                                    "min_separation": 1, "min_displacement": 0})
    assert len(select_frames(cands, off, np.random.default_rng(0))) == len(cands)
    for bad in (-0.1, "small", True):
        with pytest.raises(ValueError, match="min_displacement must be a number >= 0"):
            distill_config_from_dict({**TINY, "min_displacement": bad})


def test_selection_takes_the_most_uncertain_within_the_diversity_rule():

    cands = []
    for traj in range(3):
        for step in range(6):
            a = _dimer(traj, step)
            a.info.update(trajectory=traj, step=step, force_std_max=float(traj * 10 + step))
            cands.append(a)
    cfg = distill_config_from_dict({**TINY, "frames_per_iteration": 4, "max_per_trajectory": 2,
                                    "min_separation": 2})
    chosen = select_frames(cands, cfg, np.random.default_rng(0))
    got = [(a.info["trajectory"], a.info["step"]) for a in chosen]
    assert got == [(2, 5), (2, 3), (1, 5), (1, 3)]  # two per trajectory, two steps apart
    cfg = distill_config_from_dict({**TINY, "selection": "random", "frames_per_iteration": 4})
    rand = select_frames(cands, cfg, np.random.default_rng(0))
    picked = [(a.info["trajectory"], a.info["step"]) for a in rand]
    assert len(picked) == 4 and picked != got


def test_balanced_selection_deals_the_budget_over_categories():
    """A single ranking spends the budget on the category with the largest spreads; with
    balance: category each category gets its turn, most uncertain first within it."""

    cands = []
    for traj, (category, base) in enumerate([("cluster", 100), ("cluster", 90), ("bulk", 1),
                                             ("surface", 10)]):
        for step in range(4):
            a = _dimer(traj, step)
            a.info.update(trajectory=traj, step=step, category=category,
                          force_std_max=float(base + step))
            cands.append(a)
    common = {**TINY, "frames_per_iteration": 6, "max_per_trajectory": 2, "min_separation": 2}
    ranked = select_frames(cands, distill_config_from_dict(common), np.random.default_rng(0))
    assert [a.info["category"] for a in ranked] == ["cluster"] * 4 + ["surface"] * 2  # no bulk
    cfg = distill_config_from_dict({**common, "balance": "category"})
    got = [(a.info["category"], a.info["step"])
           for a in select_frames(cands, cfg, np.random.default_rng(0))]
    assert got == [("cluster", 3), ("surface", 3), ("bulk", 3),
                   ("cluster", 1), ("surface", 1), ("bulk", 1)]
    cfg = distill_config_from_dict({**common, "balance": "category", "selection": "random"})
    rand = select_frames(cands, cfg, np.random.default_rng(1))
    assert sorted(a.info["category"] for a in rand) == ["bulk"] * 2 + ["cluster"] * 2 + [
        "surface"] * 2
    with pytest.raises(ValueError, match="balance must be one of"):
        distill_config_from_dict({**common, "balance": "element"})


def test_extra_data_is_checked_filtered_and_trained_on(tmp_path, capsys):
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for k, atoms in enumerate([bulk("Cu", "fcc", a=3.6), bulk("Cu", "fcc", a=3.7),
                               bulk("Cu", "fcc", a=3.5), bulk("Ag", "fcc", a=4.1) * (2, 1, 1)]):
        if k == 3:
            atoms[0].symbol = "Cu"  # an Ag-Cu alloy: held out below
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(),
                                           forces=atoms.get_forces())
        atoms.info["source"] = "EMT"
        frames.append(atoms)
    write(tmp_path / "old.extxyz", frames)
    space = {**TINY["space"], "holdout": [{"elements": "Cu-Ag"}]}
    cfg = _write(tmp_path, "extra", space=space, iterations=0,
                 extra_data=[str(tmp_path / "old.extxyz")])
    assert main(["-q", "distill", str(cfg)]) == 0
    out = tmp_path / "extra"
    kept = read(out / "data" / "extra.extxyz", ":")
    assert len(kept) == 3 and all(a.get_chemical_symbols() == ["Cu"] for a in kept)
    assert "extra_data: 3 frames from 1 file(s); 1 dropped by the hold-out rules" in (
        out / "log.txt").read_text()
    stored = yaml.safe_load((out / "iter_000" / "member_0" / "config.json").read_text())
    assert stored["data"]["extra_train_files"] == [str(out / "data" / "extra.extxyz")]
    frames[1].info["source"] = "7net-0"
    write(tmp_path / "mixed.extxyz", frames)
    capsys.readouterr()
    err = _error(tmp_path, capsys, "mixed", iterations=0,
                 extra_data=[str(tmp_path / "mixed.extxyz")])
    assert "frame 1 was labelled by 7net-0" in err and "this run's teacher EMT" in err
