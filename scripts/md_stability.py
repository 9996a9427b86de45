"""Hot-MD stability benchmark (issue 24): Langevin MD at 1000 K, 5000 steps of 0.5 fs, on 20
systems over every category of the distillation space, checked for close contacts, broken
or formed adsorbate bonds, and, where bonds changed, against the labeller.

Per system (scripts/md_stability_systems.py builds them): the model relaxes the start
(`simulate.relax`, fmax 0.05 eV/Å, at most 300 steps), equilibrates it (`simulate.run_md`,
nvt-langevin, friction 0.05/fs, 200 steps) and runs the production (nvt-langevin, friction
0.01/fs, the product's default), bottom layers of slabs fixed. A `BondWatch`
(geomformer_md.simulate.stability) sees every step: the smallest interatomic distance, and
which bonds between adsorbate atoms of the start broke (> 1.5 x the covalent bond length) or
formed (< 1.25 x). Checks:

  min distance   fail below 0.7 Å (any two atoms, any step)
  bonds          no change: "intact". A change: the labeller (SevenNet-0 in its own
                 environment, through distill.teacher_process) judges it (docs/md.md, "Hot-MD
                 stability benchmark"): each bond-change event (changes within 20 steps of
                 each other) must be reproduced by labeller MD from the model's last stored
                 frame before it (positions and momenta, same thermostat; 2 replicas of 200
                 steps, the first that reproduces it ends the check), and the labeller's
                 relaxation of the model's end frame must keep the model's end connectivity.
                 Both: "labeller agrees" (pass); otherwise "labeller disagrees" (fail).
  temperature    the production's mean temperature within 3 standard errors of the target
  uncertainty    a committee's largest force std and whether it passed its threshold (report)

Output in --out/<model>/: one folder per system (start, relaxed, trajectories, logs, the
watch state, labeller runs, result.json), results.json (for the model card) and table.md.
Resumable: a finished system (its result.json) is not redone, an unfinished one continues
from its last MD checkpoint. Exit status 1 when a system fails, 2 on bad input.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python scripts/md_stability.py \\
        --model geomformer-catalysis-v11 --out runs/md-stability
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # this checkout's package
sys.path.insert(0, str(HERE))

from ase import Atoms  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402
from ase.io import read  # noqa: E402
from ase.io.trajectory import Trajectory  # noqa: E402
from md_stability_systems import DISTILL_CONFIG, SYSTEMS, System  # noqa: E402

from geomformer_md.io.files import write_frames, write_text  # noqa: E402
from geomformer_md.simulate.md import read_md_restart, run_md  # noqa: E402
from geomformer_md.simulate.relax import bottom_layer_indices, relax  # noqa: E402
from geomformer_md.simulate.stability import (  # noqa: E402
    MIN_DISTANCE,
    BondWatch,
    end_state_kept,
    pair_label,
    reproduces,
)

SEVENNET = {"calculator": "sevenn.calculator.SevenNetCalculator",
            "kwargs": {"model": "7net-0", "device": "cpu"}, "python": "/work/venv-label/bin/python"}
RESULT_VERSION = 1




def _atomic_traj(path: Path, atoms: Atoms) -> None:
    write_frames(path, [atoms], format="traj")


def holdout_rules() -> list[dict]:
    """The hold-out rules of the issue-24 distillation (what its committee never sees)."""
    import yaml

    from geomformer_md.distill.space import parse_space

    raw = yaml.safe_load(DISTILL_CONFIG.read_text())
    return list(parse_space(raw["space"]).holdout)


def held_out(atoms: Atoms, rules) -> str:
    from geomformer_md.distill.space import matches, rule_name

    hits = [rule_name(r) for r in rules if matches(atoms.info, r)]
    return ", ".join(hits) if hits else "no"


# --------------------------------------------------------------------- one MD stage, watched


def _watched_md(atoms, calc_factory, watch_path: Path, watch: BondWatch, offset: int, files: str,
                progress: bool, **md) -> tuple[object, BondWatch]:
    """run_md with a BondWatch on every step (global step = offset + MD step), its state
    saved atomically one step before each MD checkpoint, so that a run resumed from a
    checkpoint at step c has a watch that has seen every step up to c - 1 (and step c is
    seen from the checkpoint itself, below)."""
    if watch_path.is_file():
        watch = BondWatch.from_json(watch_path.read_text())
    restart = Path(f"{files}.restart.npz")
    if restart.is_file():
        meta, arrays = read_md_restart(restart)
        state = atoms.copy()
        state.positions = arrays["positions"]
        watch.observe(state, offset + meta["step"])
    interval = md["restart_interval"]

    def callback(a, step):
        watch.observe(a, offset + step)
        if (step + 1) % interval == 0:
            write_text(watch_path, watch.to_json())

    # killed before its first checkpoint: nothing to continue (run_md would refuse the files)
    res = run_md(atoms, calc_factory(), ensemble="nvt-langevin", trajectory=f"{files}.traj",
                 log=f"{files}.log", callback=callback, progress=progress,
                 overwrite=not restart.is_file(), **md)
    watch.observe(res.atoms, offset + res.steps_done)
    write_text(watch_path, watch.to_json())
    return res, watch


def _frames(sysdir: Path, eq_steps: int) -> list[tuple[int, Atoms]]:
    """(global step, frame) of the stored frames of both MD stages."""
    out = []
    for name, offset in (("eq", 0), ("md", eq_steps)):
        path = sysdir / f"{name}.traj"
        if path.is_file():
            with Trajectory(str(path)) as traj:
                out += [(offset + int(f.info.get("md_step", 0)), f) for f in traj]
    return out


# --------------------------------------------------------------------- the labeller's verdict


def labeller_check(sysdir: Path, start: Atoms, relaxed: Atoms, watch: BondWatch,
                   a: argparse.Namespace, labeller_factory, fixed) -> dict:
    """Does the labeller make the model's bond changes? (see the module docstring)"""
    ldir = sysdir / "labeller"
    ldir.mkdir(exist_ok=True)
    frames = _frames(sysdir, a.equil_steps)
    events = watch.events(a.event_window)
    out = {"events": [], "unchecked_events": max(0, len(events) - a.max_events)}
    calc = None
    for k, ev in enumerate(events[: a.max_events]):
        if any(not e["reproduced"] for e in out["events"]):
            out["unchecked_events"] += 1  # the verdict is decided: spare the labeller's time
            continue
        rec_path = ldir / f"event{k}.json"
        if rec_path.is_file():
            out["events"].append(json.loads(rec_path.read_text()))
            continue
        calc = calc or labeller_factory()
        label = {"step": ev["step"],
                 "broken": [pair_label(watch.numbers, p) for p in ev["broken"]],
                 "formed": [pair_label(watch.numbers, p) for p in ev["formed"]], "runs": []}
        if ev["step"] == 0:  # the model's relaxation changed the start: relax with the labeller
            lw = BondWatch(start_bonds=set(watch.start_bonds), numbers=watch.numbers)
            lrel, _ = relax(_fixed(start, fixed), calc, fmax=0.05, steps=300, progress=False)
            lw.observe(lrel, 0)
            label["from_step"], label["how"] = 0, "labeller relaxation of the start"
            label["runs"].append(lw.summary())
            label["reproduced"] = reproduces(ev, lw)
        else:
            before = [(s, f) for s, f in frames if s < ev["step"]]
            s0, f0 = before[-1] if before else (0, relaxed)
            label["from_step"] = s0
            label["how"] = (f"labeller Langevin MD from the model's frame at step {s0}, "
                            f"{a.window} steps, up to {a.replicas} replicas")
            label["reproduced"] = False
            for r in range(a.replicas):
                lw = BondWatch(start_bonds=set(watch.start_bonds), numbers=watch.numbers)
                run_md(_fixed(f0, fixed), calc, ensemble="nvt-langevin",
                       temperature_K=a.temperature, timestep_fs=a.timestep, steps=a.window,
                       friction=0.01, seed=1000 + r, init_velocities=False,
                       trajectory=str(ldir / f"event{k}-rep{r}.traj"),
                       log=str(ldir / f"event{k}-rep{r}.log"), loginterval=a.interval,
                       callback=lambda at, st, lw=lw, s0=s0: lw.observe(at, s0 + st),
                       progress=a.progress, overwrite=True)
                label["runs"].append(lw.summary())
                if reproduces(ev, lw):
                    label["reproduced"] = True
                    break
        write_text(rec_path, json.dumps(label, indent=1))
        out["events"].append(label)
    end_path = ldir / "end_relax.json"
    if any(not e["reproduced"] for e in out["events"]):
        out["end"] = {"kept": None, "not_kept": [], "skipped": "an event was not reproduced"}
    elif end_path.is_file():
        out["end"] = json.loads(end_path.read_text())
    else:
        calc = calc or labeller_factory()
        end = frames[-1][1] if frames else relaxed
        lrel, res = relax(_fixed(end, fixed), calc, fmax=0.05, steps=300, progress=False)
        kept, bad = end_state_kept(watch, lrel)
        out["end"] = {"kept": kept, "not_kept": bad, "converged": bool(res.converged),
                      "steps": int(res.steps)}
        _atomic_traj(ldir / "end_relaxed.traj", lrel)
        write_text(end_path, json.dumps(out["end"], indent=1))
    if calc is not None and hasattr(calc, "close"):
        calc.close()
    reasons = [f"event at step {e['step']} ("
               + ", ".join([f"-{b}" for b in e["broken"]] + [f"+{f}" for f in e["formed"]])
               + ") not reproduced" for e in out["events"] if not e["reproduced"]]
    if out["end"]["kept"] is False:
        reasons.append("labeller relaxation of the end frame: " + "; ".join(out["end"]["not_kept"]))
    if out["unchecked_events"] and not reasons:
        reasons.append(f"{out['unchecked_events']} later event(s) not checked (--max-events)")
    out["agrees"] = not reasons
    out["reasons"] = reasons
    return out


def _fixed(atoms: Atoms, fixed) -> Atoms:
    out = atoms.copy()
    out.calc = None
    out.constraints = [FixAtoms(indices=fixed)] if len(fixed) else []
    return out


# --------------------------------------------------------------------- one system


def run_system(system: System, a: argparse.Namespace, outdir: Path, calc_factory,
               labeller_factory, rules) -> dict:
    sysdir = outdir / system.name
    sysdir.mkdir(parents=True, exist_ok=True)
    result_path = sysdir / "result.json"
    if result_path.is_file():
        return json.loads(result_path.read_text())
    wall_path = sysdir / "wall.json"
    wall_before = json.loads(wall_path.read_text())["wall_s"] if wall_path.is_file() else 0.0
    t0 = time.perf_counter()
    start = system.make(a.seed)
    fixed = (bottom_layer_indices(start, system.fix_layers) if system.fix_layers
             else np.zeros(0, int))
    start = _fixed(start, fixed)
    if not (sysdir / "start.traj").is_file():
        _atomic_traj(sysdir / "start.traj", start)
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        watch = BondWatch.of(start)
        rel_path = sysdir / "relaxed.traj"
        if rel_path.is_file():
            relaxed = read(rel_path)
        else:
            relaxed, _ = relax(start, calc_factory(), fmax=0.05, steps=a.relax_steps,
                               progress=False)
            _atomic_traj(rel_path, relaxed)
        relaxed = _fixed(relaxed, fixed)
        watch.observe(start, 0)
        watch.observe(relaxed, 0)
        interval = a.interval * math.ceil(100 / a.interval)
        md = {"temperature_K": a.temperature, "timestep_fs": a.timestep,
              "loginterval": a.interval, "restart_interval": interval, "seed": a.seed}
        eq, watch = _watched_md(relaxed, calc_factory, sysdir / "watch-eq.json", watch, 0,
                                str(sysdir / "eq"), a.progress, steps=a.equil_steps,
                                friction=0.05, **md)
        prod, watch = _watched_md(_fixed(eq.atoms, fixed), calc_factory,
                                  sysdir / "watch-md.json", watch, a.equil_steps,
                                  str(sysdir / "md"), a.progress, steps=a.steps, friction=0.01,
                                  init_velocities=False, **md)
        caught += [f"{w.category.__name__}: {str(w.message)[:160]}" for w in seen]
    write_text(wall_path, json.dumps({"wall_s": wall_before + time.perf_counter() - t0}))
    verdict, labeller = "intact", None
    if watch.changed:
        if labeller_factory is None:
            verdict = "changed (labeller not asked)"
        else:
            labeller = labeller_check(sysdir, start, relaxed, watch, a, labeller_factory, fixed)
            verdict = "labeller agrees" if labeller["agrees"] else "labeller disagrees"
    n_dof = 3 * (len(start) - len(fixed))
    # Standard error of the run's mean temperature: per-frame relative spread sqrt(2/N_dof),
    # one independent sample per 2/friction = 200 fs (Langevin at 0.01/fs decorrelates the
    # kinetic energy in ~1/friction); 3 standard errors, at least 5 %.
    n_eff = max(1.0, a.steps * a.timestep / 200.0)
    t_tol = max(0.05, 3 * math.sqrt(2 / max(n_dof, 1)) / math.sqrt(n_eff))
    t_ok = abs(prod.mean_temperature_K / a.temperature - 1) <= t_tol
    wall = json.loads(wall_path.read_text())["wall_s"]
    result = {
        "version": RESULT_VERSION, "name": system.name, "description": system.description,
        "category": start.info["category"], "held_out": held_out(start, rules),
        "tags": {k: str(start.info.get(k)) for k in ("elements", "facet", "adsorbate",
                                                     "shape", "cluster_size")},
        "n_atoms": len(start), "n_fixed": len(fixed), "steps": a.steps,
        "equil_steps": a.equil_steps, **watch.summary(),
        "bond_verdict": verdict, "labeller": labeller,
        "mean_temperature_K": prod.mean_temperature_K, "temperature_tolerance": t_tol,
        "temperature_ok": bool(t_ok), "final_temperature_K": prod.final_temperature_K,
        "max_force_std": max(eq.max_force_std, prod.max_force_std)
        if not math.isnan(prod.max_force_std) else None,
        "uncertain": bool(eq.uncertain or prod.uncertain),
        "warnings": sorted(set(caught)), "md_wall_s": wall,
    }
    result["failures"] = judge(result)
    result["passed"] = not result["failures"]
    write_text(result_path, json.dumps(result, indent=1))
    return result


# --------------------------------------------------------------------- report


def judge(r: dict) -> list[str]:
    """Why a system fails (empty: it passes), from its stored result, so that a report
    judges every stored system by the same rules."""
    failures = []
    if r["min_distance_A"] < MIN_DISTANCE:
        failures.append(f"atoms {r['min_distance_pair']} {r['min_distance_A']:.2f} Å apart at "
                        f"step {r['min_distance_step']}")
    # The product's own check, on every force call: a pair below 0.6 of its covalent bond
    # length (a Cu-H at 0.9 Å) is unphysical whatever the 0.7 Å limit says.
    contacts = [w for w in r["warnings"] if w.startswith("CloseContactWarning")]
    if contacts:
        failures.append("the product's close-contact warning: "
                        + contacts[0].split(": ", 1)[1].split(" (below")[0])
    if r["bond_verdict"] not in ("intact", "labeller agrees"):
        why = r["labeller"]["reasons"] if r["labeller"] else ["bonds changed"]
        failures.append(f"bonds: {r['bond_verdict']} ({'; '.join(why)})")
    if not r["temperature_ok"]:
        failures.append(f"mean temperature {r['mean_temperature_K']:.0f} K")
    return failures


COLUMNS = ("system", "category", "held out", "atoms", "min d (Å)", "bonds broken / formed",
           "labeller verdict", "mean T (K)", "max force std (eV/Å)", "model MD wall (min)",
           "result")


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        changes = [f"-{k}" for k in r["broken"]] + [f"+{k}" for k in r["formed"]]
        std = r["max_force_std"]
        std = "–" if std is None else f"{std:.3f}" + (" (flag)" if r["uncertain"] else "")
        held = r["held_out"].replace("heldout:", "").replace("|", "/")  # a table cell
        rows.append([r["name"], r["category"], held, str(r["n_atoms"]),
                     f"{r['min_distance_A']:.2f}", " ".join(changes) or "none",
                     r["bond_verdict"], f"{r['mean_temperature_K']:.0f}"
                     + ("" if r["temperature_ok"] else " (off)"), std,
                     f"{r['md_wall_s'] / 60:.1f}", "pass" if r["passed"] else
                     "FAIL: " + ", ".join(_short(f) for f in r["failures"])])
    return rows


def _short(failure: str) -> str:
    """A failure in a word or two for the table (the JSON has the sentence)."""
    for start, word in (("atoms", "< 0.7 Å"), ("the product's close", "close contact"),
                        ("bonds", "bonds"), ("mean temperature", "temperature")):
        if failure.startswith(start):
            return word
    return failure


def markdown(results: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    return "\n".join(lines) + "\n"


def write_report(outdir: Path, results: list[dict], a: argparse.Namespace, model: str) -> dict:
    for r in results:
        r["failures"] = judge(r)
        r["passed"] = not r["failures"]
    report = {
        "benchmark": "md-stability", "version": RESULT_VERSION, "model": model,
        "command": (f"OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python scripts/md_stability.py "
                    f"--model {model} --out {a.out} --steps {a.steps} --equil-steps "
                    f"{a.equil_steps} --temperature {a.temperature:g} --timestep {a.timestep:g} "
                    f"--seed {a.seed}"),
        "settings": {"temperature_K": a.temperature, "timestep_fs": a.timestep,
                     "steps": a.steps, "equil_steps": a.equil_steps,
                     "relax_steps": a.relax_steps, "interval": a.interval,
                     "seed": a.seed, "min_distance_A": MIN_DISTANCE,
                     "labeller": None if a.no_labeller else {
                         "calculator": a.labeller, "kwargs": json.loads(a.labeller_kwargs),
                         "replicas": a.replicas, "window": a.window,
                         "event_window": a.event_window, "max_events": a.max_events}},
        "passed": sum(r["passed"] for r in results),
        "failed": sum(not r["passed"] for r in results),
        "systems": results,
    }
    write_text(outdir / "results.json", json.dumps(report, indent=1))
    write_text(outdir / "table.md", markdown(results))
    return report


# --------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="geomformer-catalysis-v11",
                   help="shipped potential name or model file (default: %(default)s)")
    p.add_argument("--out", default="runs/md-stability", help="output folder (one per model "
                   "inside it; default: %(default)s)")
    p.add_argument("--systems", help="comma-separated system names (default: all; --list)")
    p.add_argument("--list", action="store_true", help="list the systems and exit")
    p.add_argument("--report", action="store_true", help="only rewrite results.json and "
                   "table.md from the finished systems of --model (nothing runs)")
    p.add_argument("--steps", type=int, default=5000, help="production steps (default 5000)")
    p.add_argument("--equil-steps", type=int, default=200)
    p.add_argument("--relax-steps", type=int, default=300, help="the model's relaxation of the "
                   "start (fmax 0.05 eV/Å) before the MD; 0: none")
    p.add_argument("--temperature", type=float, default=1000.0, help="K (default 1000)")
    p.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    p.add_argument("--interval", type=int, default=10, help="steps between stored frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-labeller", action="store_true",
                   help="do not ask the labeller (a changed bond then fails the system)")
    p.add_argument("--labeller", default=SEVENNET["calculator"],
                   help="import path of the labeller's ASE calculator (default: SevenNet-0)")
    p.add_argument("--labeller-kwargs", default=json.dumps(SEVENNET["kwargs"]),
                   help="its keyword arguments, JSON")
    p.add_argument("--labeller-python", default=SEVENNET["python"],
                   help="the labeller's interpreter (default: %(default)s)")
    p.add_argument("--replicas", type=int, default=2, help="labeller MD runs per event")
    p.add_argument("--window", type=int, default=200, help="steps of each labeller MD run")
    p.add_argument("--event-window", type=int, default=20,
                   help="bond changes within this many steps form one event")
    p.add_argument("--max-events", type=int, default=3, help="events checked per system")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no MD progress")
    a = p.parse_args(argv)
    for name in ("steps", "equil_steps", "relax_steps", "interval", "replicas", "window",
                 "event_window", "max_events"):
        if getattr(a, name) < (0 if name in ("equil_steps", "relax_steps") else 1):
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if not (a.temperature > 0 and a.timestep > 0):
        p.error("--temperature and --timestep must be > 0")
    try:
        if not isinstance(json.loads(a.labeller_kwargs), dict):
            raise ValueError
    except ValueError:
        p.error(f"--labeller-kwargs must be a JSON object, got {a.labeller_kwargs!r}")
    known = {s.name: s for s in SYSTEMS}
    if a.systems:
        names = [n.strip() for n in a.systems.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown or not names:
            p.error(f"--systems: unknown system(s) {unknown or a.systems!r}; known: "
                    f"{', '.join(known)}")
        a.chosen = [known[n] for n in names]
    else:
        a.chosen = list(SYSTEMS)
    return a


def _tag(model: str) -> str:
    return Path(model).stem if model.endswith(".pt") else model


def run(a: argparse.Namespace, calc_factory, model: str, labeller_factory) -> dict:
    """Run (or resume) the chosen systems; returns the report written to results.json."""
    outdir = Path(a.out) / _tag(model)
    outdir.mkdir(parents=True, exist_ok=True)
    rules = holdout_rules()
    results, report = [], None
    for k, system in enumerate(a.chosen, 1):
        done = (outdir / system.name / "result.json").is_file()
        print(f"[{k}/{len(a.chosen)}] {system.name}: {system.description}"
              + (" (done)" if done else ""), flush=True)
        r = run_system(system, a, outdir, calc_factory, labeller_factory, rules)
        print(f"    min d {r['min_distance_A']:.2f} Å, bonds {r['bond_verdict']}, "
              f"T {r['mean_temperature_K']:.0f} K, {'pass' if r['passed'] else 'FAIL: '}"
              + "; ".join(r["failures"]), flush=True)
        results.append(r)
        report = _report_all(outdir, results, a, model)  # after each system: a partial run
    return report  # has its report too


def _report_all(outdir: Path, results: list[dict], a, model: str) -> dict:
    """The report of these results and every other finished system of this model (earlier
    calls with other --systems), in catalogue order."""
    results = list(results)
    order = {s.name: i for i, s in enumerate(SYSTEMS)}
    for path in sorted(outdir.glob("*/result.json")):
        r = json.loads(path.read_text())
        if r["name"] not in {x["name"] for x in results}:
            results.append(r)
    results.sort(key=lambda r: order.get(r["name"], len(order)))
    return write_report(outdir, results, a, model)


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.list:
        for s in SYSTEMS:
            print(f"{s.name:14s} {s.description}")
        return 0
    if a.report:
        report = _report_all(Path(a.out) / _tag(a.model), [], a, a.model)
        print(markdown(report["systems"]))
        return 1 if report["failed"] else 0
    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.distill.teacher import TeacherError

    try:
        GeoMFormerCalculator(a.model)  # a bad name or file: one line, before any file
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"error: --model {a.model}: {exc}", file=sys.stderr)
        return 2

    def calc_factory():
        return GeoMFormerCalculator(a.model, skin=1.0)

    labeller_factory = None
    if not a.no_labeller:
        from geomformer_md.distill.teacher_process import SubprocessCalculator

        def labeller_factory():
            return SubprocessCalculator(a.labeller_python, a.labeller,
                                        json.loads(a.labeller_kwargs), timeout=600)
    try:
        report = run(a, calc_factory, a.model, labeller_factory)
    except TeacherError as exc:
        print(f"error: the labeller: {exc}", file=sys.stderr)
        return 2
    print()
    print(markdown(report["systems"]))
    print(f"{report['passed']} passed, {report['failed']} failed "
          f"({Path(a.out) / _tag(a.model)})")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
