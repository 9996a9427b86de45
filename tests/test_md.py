"""run_md: ensembles, energy conservation, thermostats, barostats, resume, bad input.

EMT (a smooth physical potential) drives the workflow tests; our random float64 model
drives NVE conservation and resume; the shipped potential drives the slow NVE-drift test.
"""

import ctypes

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.emt import EMT
from ase.io import read
from conftest import make_model

import geomformer_md
from geomformer_md import GeoMFormerCalculator, save_model
from geomformer_md.simulate.md import ENSEMBLES, read_md_restart, run_md

torch.set_num_threads(1)  # after conftest (it sets 2): OpenMP threads fight on a shared 2-core box


def _single_thread_blas():
    """scipy's OpenBLAS (expm/logm in cell filters and barostats) spins threads that, on a
    loaded 2-core machine, make 3x3 solves 10-40x slower. Best effort; Linux only."""
    try:
        paths = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line}
    except OSError:
        return
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in (
            "scipy_openblas_set_num_threads",
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            if hasattr(lib, sym):
                getattr(lib, sym)(1)


_single_thread_blas()

QUIET = dict(progress=False)


def cu_bulk(n=2, a=3.6):
    return bulk("Cu", "fcc", a=a, cubic=True) * (n, n, n)


def cupt_cell():
    """8 atoms, Cu with Pt: small enough for the random model to be quick."""
    atoms = bulk("Cu", "fcc", a=3.65) * (2, 2, 2)
    atoms.numbers[[0, 3, 5]] = 78
    return atoms


def random_calc(skin=0.5):
    return GeoMFormerCalculator(make_model("float64"), skin=skin)


def read_log(path):
    return np.genfromtxt(path, delimiter=",", names=True)


# ---------------------------------------------------------------- NVE


def test_nve_conserves_energy_random_model(tmp_path):
    atoms = cupt_cell()
    model = make_model("float64")
    model.energy_scale.fill_(10.0)  # random weights alone give a nearly flat landscape
    res = run_md(
        atoms,
        GeoMFormerCalculator(model, skin=0.5),
        ensemble="nve",
        temperature_K=300,
        timestep_fs=1.0,
        steps=300,
        trajectory=None,
        log=tmp_path / "md.log",
        loginterval=1,
        **QUIET,
    )
    log = read_log(tmp_path / "md.log")
    assert res.completed and res.steps_done == 300 and len(log) == 301
    etot = log["etot_eV"]
    assert np.ptp(log["epot_eV"]) > 0.05  # something actually moved
    drift = np.max(np.abs(etot - etot[0])) / len(atoms)
    assert drift < 2e-5, f"max |Etot - Etot0| = {drift:.2e} eV/atom"


@pytest.mark.slow
def test_nve_drift_shipped_potential(tmp_path):
    if not geomformer_md.list_potentials():
        pytest.skip("no shipped potential yet")
    calc = GeoMFormerCalculator(dtype="float64", skin=1.0)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3)  # 108 atoms
    res = run_md(
        atoms,
        calc,
        ensemble="nve",
        temperature_K=300,
        timestep_fs=1.0,
        steps=2000,
        trajectory=None,
        log=tmp_path / "md.log",
        loginterval=10,
        **QUIET,
    )
    log = read_log(tmp_path / "md.log")
    etot, t_ps = log["etot_eV"], log["time_ps"]
    assert res.completed
    assert np.max(np.abs(etot - etot[0])) / len(atoms) <= 1e-3
    slope = np.polyfit(t_ps, etot, 1)[0]  # eV/ps
    assert abs(slope * t_ps[-1]) / len(atoms) <= 2e-4, f"secular drift {slope:.2e} eV/ps"


# ---------------------------------------------------------------- thermostats and barostats


@pytest.mark.parametrize("ensemble", ["nvt-langevin", "nvt-bussi"])
def test_thermostat_heats_cold_crystal(tmp_path, ensemble):
    atoms = cu_bulk(2)  # 32 atoms, perfect crystal, (almost) at rest
    res = run_md(
        atoms,
        EMT(),
        ensemble=ensemble,
        temperature_K=500,
        timestep_fs=4.0,
        steps=600,
        initial_temperature_K=20,
        friction=0.02,
        taut_fs=40,
        trajectory=None,
        log=tmp_path / "md.log",
        loginterval=2,
        **QUIET,
    )
    log = read_log(tmp_path / "md.log")
    assert log["temperature_K"][0] < 40
    second_half = log["temperature_K"][len(log) // 2 :]
    assert abs(second_half.mean() - 500) < 50, second_half.mean()
    assert res.mean_temperature_K == pytest.approx(log["temperature_K"][1:].mean())


@pytest.mark.parametrize("ensemble", ["npt", "npt-berendsen"])
def test_npt_moves_volume_towards_equilibrium(tmp_path, ensemble):
    atoms = cu_bulk(2, a=3.75)  # EMT's Cu is at a ~ 3.59 A: this cell is under tension
    res = run_md(
        atoms,
        EMT(),
        ensemble=ensemble,
        temperature_K=300,
        timestep_fs=2.0,
        steps=200,
        pressure_bar=0.0,
        taup_fs=200,
        taut_fs=50,
        compressibility_per_bar=1e-5,
        trajectory=None,
        log=tmp_path / "md.log",
        loginterval=5,
        **QUIET,
    )
    log = read_log(tmp_path / "md.log")
    v0, v_eq = atoms.get_volume(), 32 * 3.6**3 / 4
    v_end = log["volume_A3"][-10:].mean()
    assert log["pressure_bar"][0] < -1e4  # tension
    assert v_end < v0 - 0.5 * (v0 - v_eq), (v0, v_end, v_eq)
    assert res.atoms.get_volume() == pytest.approx(log["volume_A3"][-1])


def test_nose_hoover_runs_and_logs(tmp_path):
    res = run_md(
        cu_bulk(2),
        EMT(),
        ensemble="nvt-nose-hoover",
        temperature_K=300,
        steps=20,
        trajectory=tmp_path / "md.traj",
        log=tmp_path / "md.log",
        loginterval=5,
        **QUIET,
    )
    assert res.completed and len(read(tmp_path / "md.traj", ":")) == 5


# ---------------------------------------------------------------- resume


class Killed(RuntimeError):
    pass


def kill_at(step):
    def callback(atoms, n):
        if n == step:
            raise Killed(f"killed at step {n}")

    return callback


def frames(path):
    images = read(path, ":")
    return (
        np.array([im.info["md_step"] for im in images]),
        np.array([im.positions for im in images]),
        np.array([im.get_momenta() for im in images]),
        np.array([im.cell[:] for im in images]),
    )


def run_pair(tmp_path, atoms, calc_factory, kill, **kw):
    """An uninterrupted run and a killed-then-resumed one; returns their output folders."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    full.mkdir(), cut.mkdir()
    common = dict(loginterval=5, restart_interval=10, seed=7, **QUIET, **kw)
    run_md(atoms, calc_factory(), trajectory=full / "md.traj", log=full / "md.log", **common)
    with pytest.raises(Killed):
        run_md(
            atoms,
            calc_factory(),
            trajectory=cut / "md.traj",
            log=cut / "md.log",
            callback=kill_at(kill),
            **common,
        )
    meta, _ = read_md_restart(cut / "md.restart.npz")
    assert not meta["completed"] and meta["step"] == (kill // 10) * 10
    res = run_md(atoms, calc_factory(), trajectory=cut / "md.traj", log=cut / "md.log", **common)
    assert res.resumed_from == meta["step"] and res.completed
    assert read_md_restart(cut / "md.restart.npz")[0]["completed"]
    return full, cut


def test_resume_nve_random_model_equals_uninterrupted(tmp_path):
    full, cut = run_pair(tmp_path, cupt_cell(), random_calc, kill=37, ensemble="nve", steps=60)
    (s1, x1, p1, _), (s2, x2, p2, _) = frames(full / "md.traj"), frames(cut / "md.traj")
    np.testing.assert_array_equal(s1, np.arange(0, 61, 5))
    np.testing.assert_array_equal(s2, s1)  # no duplicate, no lost frame
    np.testing.assert_allclose(x2, x1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(p2, p1, rtol=0, atol=1e-10)
    l1, l2 = read_log(full / "md.log"), read_log(cut / "md.log")
    np.testing.assert_array_equal(l1["step"], l2["step"])
    np.testing.assert_allclose(l2["etot_eV"], l1["etot_eV"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("ensemble", ENSEMBLES)
def test_resume_is_exact_for_every_ensemble(tmp_path, ensemble):
    """Positions, momenta, cell, thermostat/barostat variables and the random stream all
    continue as if uninterrupted (to round-off: EMT's neighbour list, rebuilt on resume,
    sums in another order)."""
    full, cut = run_pair(
        tmp_path,
        cu_bulk(2),
        EMT,
        kill=28,
        ensemble=ensemble,
        steps=40,
        temperature_K=400,
        timestep_fs=2.0,
        taut_fs=40,
        taup_fs=200,
        compressibility_per_bar=1e-5,
    )
    (s1, *rest1), (s2, *rest2) = frames(full / "md.traj"), frames(cut / "md.traj")
    np.testing.assert_array_equal(s2, s1)
    for a, b in zip(rest1, rest2, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10)
    l1, l2 = read_log(full / "md.log"), read_log(cut / "md.log")
    assert l1.dtype.names == l2.dtype.names
    for name in l1.dtype.names:
        np.testing.assert_allclose(l2[name], l1[name], rtol=1e-9, atol=1e-9, err_msg=name)


def test_completed_run_is_not_rerun_and_can_be_extended(tmp_path):
    kw = dict(
        ensemble="nvt-langevin",
        trajectory=tmp_path / "md.traj",
        log=tmp_path / "md.log",
        loginterval=5,
        restart_interval=10,
        **QUIET,
    )
    first = run_md(cu_bulk(2), EMT(), steps=20, **kw)
    before = (tmp_path / "md.traj").read_bytes()
    again = run_md(cu_bulk(2), EMT(), steps=20, **kw)
    assert again.steps_this_call == 0 and again.completed
    assert (tmp_path / "md.traj").read_bytes() == before
    np.testing.assert_array_equal(again.atoms.positions, first.atoms.positions)
    assert again.atoms.get_potential_energy() == first.atoms.get_potential_energy()
    longer = run_md(cu_bulk(2), EMT(), steps=30, resume=True, **kw)  # extending is asked for
    assert longer.resumed_from == 20 and longer.steps_this_call == 10
    np.testing.assert_array_equal(frames(tmp_path / "md.traj")[0], np.arange(0, 31, 5))
    fresh = run_md(cu_bulk(2), EMT(), steps=10, overwrite=True, **kw)
    assert fresh.resumed_from is None and len(read(tmp_path / "md.traj", ":")) == 3


def test_resume_with_other_settings_is_refused(tmp_path):
    kw = dict(trajectory=tmp_path / "md.traj", log=tmp_path / "md.log", loginterval=5, **QUIET)
    run_md(cu_bulk(2), EMT(), ensemble="nvt-langevin", steps=10, **kw)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="friction"):
        run_md(cu_bulk(2), EMT(), ensemble="nvt-langevin", steps=20, friction=0.05, **kw)
    with pytest.raises(ValueError, match="ensemble"):
        run_md(cu_bulk(2), EMT(), ensemble="nve", steps=20, **kw)
    with pytest.raises(ValueError, match="different atoms"):
        run_md(
            bulk("Ni", "fcc", a=3.5, cubic=True) * (2, 2, 2),
            EMT(),
            ensemble="nvt-langevin",
            steps=20,
            **kw,
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------- inputs, outputs, calculator


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ensemble="nvt-berendsen"), "unknown ensemble.*nvt-langevin"),
        (dict(timestep_fs=0.0), "timestep_fs"),
        (dict(timestep_fs=-1.0), "timestep_fs"),
        (dict(temperature_K=-5.0), "temperature_K"),
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(loginterval=0), "loginterval"),
        (dict(loginterval=5, restart_interval=7), "restart_interval"),
        (dict(ensemble="nvt-langevin", friction=0.0), "friction"),
        (dict(ensemble="nvt-bussi", temperature_K=0.0), "kinetic energy"),
    ],
)
def test_bad_input_fails_before_any_file(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_md(
            cu_bulk(1),
            EMT(),
            trajectory=tmp_path / "md.traj",
            log=tmp_path / "md.log",
            **{"steps": 5, **kwargs},
            **QUIET,
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "atoms", [fcc111("Cu", (2, 2, 3), vacuum=5.0), molecule("H2O")], ids=["slab", "molecule"]
)
@pytest.mark.parametrize("ensemble", ["npt", "npt-berendsen"])
def test_npt_needs_3d_periodic_cell(tmp_path, atoms, ensemble):
    with pytest.raises(ValueError, match="periodic in 3 directions"):
        run_md(
            atoms,
            EMT(),
            ensemble=ensemble,
            trajectory=tmp_path / "md.traj",
            log=tmp_path / "md.log",
            steps=5,
            **QUIET,
        )
    assert list(tmp_path.iterdir()) == []


def test_input_atoms_untouched_and_result_files(tmp_path):
    atoms = cu_bulk(2)
    atoms.rattle(0.02, seed=1)
    snapshot = atoms.copy()
    res = run_md(
        atoms,
        EMT(),
        ensemble="nve",
        steps=12,
        trajectory=tmp_path / "md.traj",
        log=tmp_path / "md.log",
        loginterval=4,
        progress=True,
    )
    assert atoms == snapshot and atoms.calc is None and not atoms.get_momenta().any()
    assert res.trajectory.is_file() and res.log.is_file() and res.restart.is_file()
    assert res.restart.name == "md.restart.npz"
    assert res.time_ps == pytest.approx(0.012)
    assert (tmp_path / "md.log").read_text().splitlines()[0].startswith("step,time_ps,epot_eV")
    assert res.atoms.get_potential_energy() == pytest.approx(
        read(tmp_path / "md.traj", -1).get_potential_energy()
    )


def test_fixed_atoms_stay_fixed(tmp_path):
    from ase.constraints import FixAtoms

    atoms = cu_bulk(2)
    atoms.set_constraint(FixAtoms(indices=[0, 1, 2]))
    res = run_md(
        atoms, EMT(), ensemble="nvt-langevin", steps=20, trajectory=None, log=None, **QUIET
    )
    np.testing.assert_array_equal(res.atoms.positions[:3], atoms.positions[:3])
    assert res.restart is None


def test_model_path_gets_the_verlet_skin(tmp_path):
    path = tmp_path / "model.pt"
    save_model(make_model("float64"), path)
    seen = []
    run_md(
        cupt_cell(),
        str(path),
        steps=3,
        skin=0.7,
        trajectory=None,
        log=None,
        callback=lambda atoms, n: seen.append(atoms.calc.skin),
        **QUIET,
    )
    assert seen == [0.7] * 4


def test_default_potential_gets_the_verlet_skin(tmp_path, monkeypatch):
    import geomformer_md.calculator as calc_mod

    monkeypatch.setattr(calc_mod, "load_potential", lambda name: make_model("float64"))
    seen = []
    run_md(
        cupt_cell(),
        steps=1,
        trajectory=None,
        log=None,
        callback=lambda atoms, n: seen.append((type(atoms.calc).__name__, atoms.calc.skin)),
        **QUIET,
    )
    assert seen[-1] == ("GeoMFormerCalculator", 1.0)


def test_empty_atoms_rejected():
    with pytest.raises(ValueError, match="empty"):
        run_md(Atoms(), EMT(), trajectory=None, log=None, **QUIET)


# ---------------------------------------------------------------- re-runs never return another run


def test_another_seed_in_the_same_files_is_refused_not_returned(tmp_path):
    """A loop over seeds in one folder used to get the first run back every time. Now: the
    identical request returns the stored run, any other is refused (naming the files, what
    differs and the ways out) without touching a file; resume=True and overwrite=True are
    the ways out."""
    kw = dict(trajectory=tmp_path / "md.traj", log=tmp_path / "md.log", loginterval=5, steps=10)
    first = run_md(cu_bulk(2), EMT(), seed=1, **kw, **QUIET)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError) as err:
        run_md(cu_bulk(2), EMT(), seed=2, **kw, **QUIET)
    from geomformer_md.simulate.runfiles import RunConflictError

    assert isinstance(err.value, RunConflictError)
    msg = str(err.value)
    for part in ("md.traj", "md.log", "md.restart.npz", "seed=1", "seed=2", "resume=True",
                 "overwrite=True"):
        assert part in msg, part
    assert "\n" not in msg
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    same = run_md(cu_bulk(2), EMT(), seed=1, **kw, **QUIET)  # identical: the stored run
    assert same.steps_this_call == 0
    np.testing.assert_array_equal(same.atoms.positions, first.atoms.positions)
    asked = run_md(cu_bulk(2), EMT(), seed=2, resume=True, **kw, **QUIET)  # continue it
    np.testing.assert_array_equal(asked.atoms.positions, first.atoms.positions)
    fresh = run_md(cu_bulk(2), EMT(), seed=2, overwrite=True, **kw, **QUIET)
    (tmp_path / "clean").mkdir()
    clean = run_md(
        cu_bulk(2), EMT(), seed=2, **{**kw, "trajectory": tmp_path / "clean" / "md.traj",
                                      "log": tmp_path / "clean" / "md.log"}, **QUIET
    )
    np.testing.assert_array_equal(fresh.atoms.positions, clean.atoms.positions)
    assert not np.array_equal(fresh.atoms.positions, first.atoms.positions)


def test_an_interrupted_run_continues_only_for_its_own_request(tmp_path):
    kw = dict(trajectory=tmp_path / "md.traj", log=tmp_path / "md.log", loginterval=5,
              restart_interval=10, steps=30, **QUIET)
    with pytest.raises(Killed):
        run_md(cu_bulk(2), EMT(), seed=1, callback=kill_at(17), **kw)
    for other in (dict(seed=2), dict(temperature_K=500.0), dict(fix_bottom_layers=None,
                                                                 init_velocities=False)):
        with pytest.raises(ValueError, match="already exist from a run with"):
            run_md(cu_bulk(2), EMT(), **{"seed": 1, **other}, **kw)
    atoms = cu_bulk(2)
    atoms.rattle(0.01, seed=3)  # another starting structure
    with pytest.raises(ValueError, match="another structure"):
        run_md(atoms, EMT(), seed=1, **kw)
    res = run_md(cu_bulk(2), EMT(), seed=1, **kw)  # its own request: resumed
    assert res.resumed_from == 10 and res.steps_done == 30


def test_a_restart_file_of_format_1_continues_only_when_asked(tmp_path):
    """Files written before runs recorded their request: not silently continued, and
    resume=True still continues them."""
    import json

    kw = dict(trajectory=tmp_path / "md.traj", log=tmp_path / "md.log", loginterval=5,
              restart_interval=10, steps=20, seed=1, **QUIET)
    with pytest.raises(Killed):
        run_md(cu_bulk(1), EMT(), callback=kill_at(12), **kw)
    path = tmp_path / "md.restart.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["version"] = 1
    for key in ("request", "min_bond_ratio", "close_contact_step"):
        del meta[key]
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
    log = tmp_path / "md.log"  # and the log of that version, without min_bond_ratio
    log.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in log.read_text().splitlines()))
    with pytest.raises(ValueError, match="older geomformer-md"):
        run_md(cu_bulk(1), EMT(), **kw)
    res = run_md(cu_bulk(1), EMT(), resume=True, **kw)
    assert res.resumed_from == 10 and res.steps_done == 20
    rows = read_log(log)  # continued in its own layout
    assert "min_bond_ratio" not in rows.dtype.names
    np.testing.assert_array_equal(rows["step"], [0, 5, 10, 15, 20])


def test_seed_none_never_returns_an_earlier_run(tmp_path):
    kw = dict(trajectory=tmp_path / "md.traj", log=tmp_path / "md.log", steps=4, seed=None)
    run_md(cu_bulk(1), EMT(), **kw, **QUIET)
    with pytest.raises(ValueError, match="seed=None"):
        run_md(cu_bulk(1), EMT(), **kw, **QUIET)


def test_files_without_a_checkpoint_are_not_overwritten(tmp_path):
    """A log of something else under the default name is never replaced silently."""
    (tmp_path / "md.log").write_text("my notes\n")
    for resume in (None, True, False):
        with pytest.raises(ValueError, match="without a checkpoint|earlier run"):
            run_md(cu_bulk(1), EMT(), steps=2, trajectory=tmp_path / "md.traj",
                   log=tmp_path / "md.log", resume=resume, **QUIET)
    assert [p.name for p in tmp_path.iterdir()] == ["md.log"]
    assert (tmp_path / "md.log").read_text() == "my notes\n"


def test_resume_true_with_no_files_starts_a_run(tmp_path):
    res = run_md(cu_bulk(1), EMT(), steps=4, loginterval=2, trajectory=tmp_path / "md.traj",
                 log=tmp_path / "md.log", resume=True, **QUIET)
    assert res.resumed_from is None and res.steps_done == 4


@pytest.mark.parametrize("what", ["nan", "inf", "unknown-element", "overlap"])
def test_a_structure_the_calculator_refuses_fails_before_any_file(tmp_path, what):
    atoms = cupt_cell()
    if what == "nan":
        atoms.positions[2] = np.nan
    elif what == "inf":
        atoms.positions[1, 0] = np.inf
    elif what == "unknown-element":
        atoms.numbers[0] = 79  # Au: not in the test model's species
    else:
        atoms.positions[1] = atoms.positions[0] + 0.01
    with pytest.raises(ValueError, match="NaN or inf|unknown to this model|overlapping"):
        run_md(atoms, random_calc(), steps=3, trajectory=tmp_path / "md.traj",
               log=tmp_path / "md.log", **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_a_single_atom_is_refused_in_words_before_any_file(tmp_path):
    """One atom in a periodic cell has no degrees of freedom once the centre of mass is held:
    the momenta came out NaN and the error blamed the positions."""
    from ase.build import bulk

    with pytest.raises(ValueError, match="one atom: MD keeps the centre of mass at rest"):
        run_md(bulk("Cu"), EMT(), steps=3, trajectory=tmp_path / "md.traj",
               log=tmp_path / "md.log", **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_fix_bottom_layers_holds_the_bottom_layer(tmp_path):
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    res = run_md(slab, EMT(), steps=20, temperature_K=600, fix_bottom_layers=1,
                 trajectory=tmp_path / "md.traj", log=None, **QUIET)
    bottom = np.argsort(slab.positions[:, 2])[:4]
    for frame in read(tmp_path / "md.traj", ":"):
        np.testing.assert_array_equal(frame.positions[bottom], slab.positions[bottom])
    others = np.setdiff1d(np.arange(len(slab)), bottom)
    assert np.abs(res.atoms.positions[others] - slab.positions[others]).max() > 1e-3
    with pytest.raises(ValueError, match="fix_bottom_layers"):
        run_md(slab, EMT(), steps=2, fix_bottom_layers=-1, trajectory=None, log=None, **QUIET)


def test_api_and_command_line_default_to_the_same_ensemble():
    import inspect

    from geomformer_md.cli import build_parser

    api = inspect.signature(run_md).parameters["ensemble"].default
    cli = build_parser().parse_args(["md", "x.xyz"]).ensemble
    assert api == cli == "nvt-langevin"


# ---------------------------------------------------------------- close contacts in the log


def test_log_carries_the_closest_contact_and_flags_fused_atoms(tmp_path):
    from ase.data import covalent_radii

    ok = run_md(cu_bulk(2), EMT(), steps=10, loginterval=5, trajectory=None,
                log=tmp_path / "ok.log", **QUIET)
    log = read_log(tmp_path / "ok.log")
    assert log.dtype.names[-1] == "min_bond_ratio"
    assert not ok.close_contact and ok.min_bond_ratio == pytest.approx(log["min_bond_ratio"].min())
    assert 0.8 < ok.min_bond_ratio < 1.1  # Cu-Cu 2.55 Å over 2 x 1.32 Å, thermally shaken
    squeezed = cu_bulk(2)
    squeezed.positions[1] = squeezed.positions[0] + [1.0, 0.0, 0.0]  # 1.0 Å: 0.38 of a bond
    bad = run_md(squeezed, EMT(), steps=2, timestep_fs=0.05, loginterval=1, trajectory=None,
                 log=tmp_path / "bad.log", **QUIET)
    log = read_log(tmp_path / "bad.log")
    assert log["min_bond_ratio"][0] == pytest.approx(1.0 / (2 * covalent_radii[29]))
    assert bad.close_contact and bad.close_contact_step == 0


# ---------------------------------------------------------------- progress in a log file


def test_progress_to_a_log_file_is_plain_lines(tmp_path, capsys, monkeypatch):
    """stderr is not a terminal here (captured): plain lines, no carriage-return redraws."""
    import geomformer_md.simulate._progress as progress

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    run_md(cu_bulk(1), EMT(), steps=20, trajectory=None, log=None, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert len(lines) >= 2 and all(line.startswith("MD nvt-langevin: ") for line in lines)
    assert "20/20 steps (100%)" in lines[-1] and "T=" in lines[-1]
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 3600.0)
    run_md(cu_bulk(1), EMT(), steps=20, trajectory=None, log=None, progress=True)
    assert len(capsys.readouterr().err.strip().splitlines()) == 1  # only the last line
