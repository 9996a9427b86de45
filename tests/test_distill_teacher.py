"""A distillation teacher in its own Python process (teacher.python): labels equal to the
in-process teacher, one process reused, crashes and hangs are failures of one structure
after which the worker restarts, the worker dies with its parent, one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase
import numpy as np
import pytest
import yaml
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.cluster import Icosahedron
from ase.io import read

from geomformer_md.cli import main
from geomformer_md.distill.teacher import Teacher

PY = sys.executable
TESTS = Path(__file__).parent
LABEL_PY = os.environ.get("GEOMFORMER_TEACHER_PYTHON", "/work/venv-label/bin/python")


@pytest.fixture
def toys(monkeypatch):
    """The worker imports teacher_toys from tests/ (it inherits the environment)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))


def _structures():
    """Every kind a run labels, changing size, cell and periodicity from call to call."""
    rattled = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    rattled.rattle(0.05, seed=1)
    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    cluster = Icosahedron("Ag", 2)
    cluster.center(vacuum=5.0)
    triclinic = bulk("Au", "fcc", a=4.1)
    triclinic.rattle(0.02, seed=2)
    return [rattled, slab, cluster, molecule("CO"), triclinic]


def _oxidised_slab():
    slab = fcc111("Cu", (1, 1, 2), vacuum=5.0)
    add_adsorbate(slab, "O", 1.5, "fcc")
    return slab


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_labels_equal_the_in_process_teacher_and_one_process_serves_all(tmp_path):
    remote = Teacher("ase.calculators.emt.EMT", python=PY, log_path=tmp_path / "t.log")
    local = Teacher("ase.calculators.emt.EMT")
    pid = remote.calc.pid
    assert pid is not None and pid != os.getpid()
    for atoms in _structures():
        a, why = remote.label(atoms)
        b, _ = local.label(atoms)
        assert why is None
        assert a.get_potential_energy() == b.get_potential_energy()
        np.testing.assert_array_equal(a.get_forces(), b.get_forces())
        if atoms.pbc.all():
            np.testing.assert_array_equal(a.get_stress(), b.get_stress())
        else:
            assert "stress" not in a.calc.results
        assert f"ase {ase.__version__}" in a.info["teacher_version"]
        assert a.info["teacher"] == "EMT" and a.info["teacher_kwargs"] == "{}"
    assert remote.calc.pid == pid and remote.calc.restarts == 0
    remote.close()
    assert not _alive(pid)


def test_an_exception_in_the_teacher_comes_back_as_one_line(tmp_path, toys):
    teacher = Teacher("teacher_toys.RaisingEMT", python=PY, log_path=tmp_path / "t.log")
    pid = teacher.calc.pid
    labelled, why = teacher.label(_oxidised_slab())
    assert labelled is None and why == "RuntimeError: SCF did not converge"
    labelled, why = teacher.label(bulk("Cu", "fcc", a=3.6))
    assert why is None and teacher.calc.pid == pid  # the worker lived on
    teacher.close()


def test_a_crash_fails_one_structure_and_the_worker_restarts(tmp_path, toys):
    teacher = Teacher("teacher_toys.CrashingEMT", python=PY, log_path=tmp_path / "t.log")
    first = teacher.calc.pid
    labelled, why = teacher.label(_oxidised_slab())
    assert labelled is None and "teacher process died (killed by signal SIGKILL)" in why
    labelled, why = teacher.label(bulk("Cu", "fcc", a=3.6))
    reference, _ = Teacher("ase.calculators.emt.EMT").label(bulk("Cu", "fcc", a=3.6))
    assert why is None and labelled.get_potential_energy() == reference.get_potential_energy()
    second = teacher.calc.pid
    assert second != first and not _alive(first)
    os.kill(second, signal.SIGKILL)  # killed between calls: restarted, nothing fails
    deadline = time.time() + 10
    while teacher.calc.pid is not None and time.time() < deadline:
        time.sleep(0.02)
    labelled, why = teacher.label(bulk("Cu", "fcc", a=3.6))
    assert why is None and teacher.calc.pid not in (first, second)
    teacher.close()


def test_a_hang_is_stopped_after_the_timeout(tmp_path, toys):
    teacher = Teacher("teacher_toys.HangingEMT", python=PY, timeout=1.0,
                      log_path=tmp_path / "t.log")
    hung = teacher.calc.pid
    t0 = time.time()
    labelled, why = teacher.label(_oxidised_slab())
    assert labelled is None and why.startswith("no answer within teacher.timeout 1 s")
    assert time.time() - t0 < 10 and not _alive(hung)
    labelled, why = teacher.label(bulk("Cu", "fcc", a=3.6))
    assert why is None
    teacher.close()


def test_printing_teacher_does_not_disturb_the_protocol(tmp_path, toys):
    teacher = Teacher("teacher_toys.Chatty", python=PY, log_path=tmp_path / "t.log")
    labelled, why = teacher.label(bulk("Cu", "fcc", a=3.6))
    assert why is None
    teacher.close()
    assert "{not json" in (tmp_path / "t.log").read_text()  # its output went to the log


def test_the_worker_dies_with_its_parent(tmp_path):
    script = ("import sys, time\n"
              "from geomformer_md.distill.teacher import Teacher\n"
              f"t = Teacher('ase.calculators.emt.EMT', python={PY!r}, "
              f"log_path={str(tmp_path / 't.log')!r})\n"
              "print(t.calc.pid, flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.kill()
    parent.wait()
    deadline = time.time() + 15
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


BASE = {
    "seed": 0,
    "space": {"elements": ["Cu"], "bulk_size": 1, "miller": ["111"], "surface_size": [1, 1],
              "surface_layers": 2, "adsorbates": ["O"], "coverages": [0.25], "gas": False},
    "model": {"d_model": 8, "n_heads": 2, "n_layers": 1, "n_rbf": 6, "cutoff": 4.0},
    "committee_size": 2, "iterations": 0, "initial_frames": 5, "validation_per_category": 1,
    "training": {"epochs": 1, "batch_size": 4, "lr": 3.0e-3, "warmup_steps": 1},
}


def _config(tmp_path: Path, name: str, teacher: dict, **changes) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**BASE, "out_dir": str(tmp_path / name),
                                    "teacher": teacher, **changes}))
    return path


def _one_line_error(tmp_path, capsys, name, teacher, **changes) -> str:
    assert main(["-q", "distill", str(_config(tmp_path, name, teacher, **changes))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_teacher_settings_are_one_line(tmp_path, capsys, toys):
    emt = "ase.calculators.emt.EMT"
    err = _one_line_error(tmp_path, capsys, "a", {"calculator": emt, "python": "/no/such/python"})
    assert "teacher.python /no/such/python does not exist" in err
    err = _one_line_error(tmp_path, capsys, "b", {"calculator": emt, "python": str(tmp_path)})
    assert "is not an executable file" in err
    err = _one_line_error(tmp_path, capsys, "c", {"calculator": "nosuchpkg.Calc", "python": PY})
    assert (f"teacher.calculator 'nosuchpkg.Calc' cannot be imported by teacher.python {PY}: "
            "ModuleNotFoundError: No module named 'nosuchpkg'") in err
    err = _one_line_error(tmp_path, capsys, "d", {"calculator": "teacher_toys.broken",
                                                  "python": PY})
    assert "could not be created" in err and "RuntimeError: licence server down" in err
    err = _one_line_error(tmp_path, capsys, "e", {"calculator": emt, "python": "/bin/true"})
    assert "teacher.python /bin/true did not start the teacher worker (exit code 0" in err
    space = {**BASE["space"], "elements": ["Cu", "Fe"]}
    err = _one_line_error(tmp_path, capsys, "f", {"calculator": emt, "python": PY}, space=space)
    assert "teacher EMT fails on element Fe: NotImplementedError" in err
    err = _one_line_error(tmp_path, capsys, "g", {"calculator": emt, "timeout": 10})
    assert "teacher.timeout needs teacher.python" in err
    err = _one_line_error(tmp_path, capsys, "h", {"calculator": emt, "python": PY,
                                                  "timeout": -1})
    assert "teacher.timeout must be a positive number" in err


def test_a_run_survives_a_crashing_teacher_and_records_its_versions(tmp_path, capsys, toys):
    teacher = {"calculator": "teacher_toys.CrashingEMT", "python": PY, "name": "EMT",
               "timeout": 60}
    cfg = _config(tmp_path, "run", teacher)
    assert main(["-q", "distill", str(cfg)]) == 0
    out = tmp_path / "run"
    failures = (out / "failures.csv").read_text()
    assert "teacher process died (killed by signal SIGKILL)" in failures
    row = json.loads((out / "progress.json").read_text())[0]
    assert row["teacher_failures"] == failures.count("label initial")
    stored = read(out / "data" / "iter_000.extxyz", ":") + read(out / "validation.extxyz", ":")
    assert stored and not any("O" in a.get_chemical_symbols() for a in stored)
    assert all(f"ase {ase.__version__}" in a.info["teacher_version"] for a in stored)
    record = json.loads((out / "config.json").read_text())["teacher_record"]
    assert record["versions"]["ase"] == ase.__version__ and record["python"] == PY
    times = (out / "teacher_times.csv").read_text().splitlines()
    assert times[0] == "phase,frame,category,n_atoms,seconds,ok" and len(times) > len(stored)
    # the same run, now labelled by another version of the teacher: refused
    config = json.loads((out / "config.json").read_text())
    config["teacher_record"]["versions"]["ase"] = "0.0"
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["-q", "distill", str(cfg)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels of two versions would mix" in err[0]


@pytest.mark.slow
@pytest.mark.skipif(not Path(LABEL_PY).exists(), reason=f"no teacher environment at {LABEL_PY}")
def test_sevennet_teaches_from_its_own_environment(tmp_path):
    teacher = Teacher("sevenn.calculator.SevenNetCalculator", kwargs={"model": "7net-0"},
                      python=LABEL_PY, timeout=300, log_path=tmp_path / "t.log")
    assert "sevenn" in teacher.versions and "torch" in teacher.versions
    assert teacher.lattice_constant("Cu") == pytest.approx(3.612, abs=0.01)  # shared/DATA.md
    slab = fcc111("Pt", (2, 2, 3), vacuum=6.0)
    add_adsorbate(slab, ase.Atoms("CO", [[0, 0, 0], [0, 0, 1.15]]), 1.9, "ontop")
    labelled, why = teacher.label(slab)
    assert why is None
    forces = labelled.get_forces()
    assert np.abs(forces.sum(axis=0)).max() < 1e-3 * len(slab)  # translation invariance
    assert json.loads(labelled.info["teacher_kwargs"]) == {"model": "7net-0"}
    teacher.close()
