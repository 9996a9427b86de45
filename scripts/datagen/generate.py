#!/usr/bin/env python
"""Seeded, resumable generator of a SevenNet-0-labelled training set for the
catalysis force field (fcc metals Cu Ag Au Ni Pd Pt; bulk, clean slabs,
adsorbates, relaxations, MD, gas molecules) plus adsorption-energy references.

    /work/venv-label/bin/python scripts/datagen/generate.py \
        --out data_raw/catalysis --budget-minutes 35 --seed 0

Re-running the same command resumes: finished tasks (frames/<task>.extxyz or
reference/<task>.json present) are skipped.  See scripts/datagen/README.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

T_START = time.time()

import tasks as tk  # noqa: E402
from labeller import BudgetExceeded, atomic_write_json, atomic_write_text, frames_to_text  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.time() - T_START:7.1f}s] {msg}", flush=True)


def task_done(out: str, t: tk.Task) -> bool:
    if t.is_ref:
        return os.path.exists(os.path.join(out, "reference", f"{t.name}.json"))
    return os.path.exists(os.path.join(out, "frames", f"{t.name}.extxyz"))


def load_metas(out: str) -> dict[str, dict]:
    metas = {}
    for p in glob.glob(os.path.join(out, "meta", "*.json")):
        try:
            with open(p) as fh:
                m = json.load(fh)
            metas[m["task"]] = m
        except Exception:
            pass
    return metas


def aggregate(out: str, lab_name: str) -> None:
    """lattice_constants.json and adsorption_reference.json from the pieces."""
    lat = {}
    for p in sorted(glob.glob(os.path.join(out, "eos", "*.json"))):
        with open(p) as fh:
            d = json.load(fh)
        lat[d["metal"]] = {"a0": d["a0"], "B_GPa": d["B_GPa"], "E0_per_atom": d["E0_per_atom"],
                           "fit": "Birch-Murnaghan on the primitive cell, 2x9 points"}
    if lat:
        atomic_write_json(os.path.join(out, "lattice_constants.json"),
                          {"labeller": lab_name, "units": "Angstrom, GPa, eV", "metals": lat})

    refdir = os.path.join(out, "reference")
    pieces = {}
    for p in glob.glob(os.path.join(refdir, "*.json")):
        with open(p) as fh:
            pieces[os.path.basename(p)[:-5]] = json.load(fh)
    if not pieces:
        return
    gas = pieces.get("ref_gas", {}).get("molecules", {})
    gas_e = {k: v["energy"] for k, v in gas.items()}
    cases = []
    for M, F, ads, site, _h in tk.REF_CASES:
        name = tk.ref_case_name(M, F, ads, site)
        c = {"case": name, "metal": M, "facet": F, "adsorbate": ads, "site": site,
             "heldout": tk.is_heldout(F, ads, site), "status": "pending"}
        d = pieces.get(name)
        slab = pieces.get(f"ref_slab_{M}_{F}")
        if d is not None:
            c.update({k: d[k] for k in ("recipe", "energy", "converged", "nsteps", "final_site",
                                        "final_height", "structures")})
            c["E_slab_ads"] = c.pop("energy")
        if slab is not None:
            c["E_slab"] = slab["energy"]
            c["slab_converged"] = slab["converged"]
        refs = tk.GAS_REF[ads]
        c["gas_reference"] = " + ".join(f"{v:g}*E({k})" for k, v in refs.items())
        if d is not None and slab is not None and all(k in gas_e for k in refs):
            e_ref = sum(v * gas_e[k] for k, v in refs.items())
            c["E_gas_ref"] = e_ref
            c["E_ads"] = c["E_slab_ads"] - c["E_slab"] - e_ref
            c["status"] = "done"
        cases.append(c)
    obj = {
        "labeller": lab_name,
        "definition": "E_ads = E(slab+X, relaxed) - E(slab, relaxed) - E_gas_ref(X); 3x3x4 slabs, "
                      "bottom 2 layers fixed, BFGS fmax 0.05 eV/A, lattice constants from "
                      "lattice_constants.json; O from 1/2 O2, H from 1/2 H2, N from 1/2 N2, "
                      "OH from H2O - 1/2 H2, CO from CO(g), C from CO - 1/2 O2",
        "gas_energies": gas_e,
        "gas_details": gas,
        "slabs": {k: v for k, v in pieces.items() if k.startswith("ref_slab_")},
        "lattice_constants": {k: v["a0"] for k, v in lat.items()},
        "cases": cases,
    }
    atomic_write_json(os.path.join(out, "adsorption_reference.json"), obj)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data_raw/catalysis")
    ap.add_argument("--budget-minutes", type=float, default=35.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", default="auto",
                    help="torch intra-op threads: 'auto' (default: time 2 vs 1 thread at start "
                         "and "
                         "every --retune-seconds, keep the faster) or a fixed integer such as 2")
    ap.add_argument("--retune-seconds", type=float, default=240.0)
    ap.add_argument("--list", action="store_true", help="print the ordered task list and exit")
    ap.add_argument("--max-tasks", type=int, default=0,
                    help="stop after this many new tasks (0 = no limit)")
    ap.add_argument("--labeller", default="7net-0",
                    help="SevenNet checkpoint that labels the frames (default 7net-0; "
                         "e.g. 7net-l3i5). "
                         "Use a new --out per labeller: finished tasks are not relabelled")
    ap.add_argument("--buckets", default="",
                    help="comma-separated buckets to run (e.g. 'ref,heldout'); default: all. "
                         "EOS tasks always run first if not done.")
    ap.add_argument("--extra", default="",
                    help="generate an extra set instead of the main one (e.g. 'n100'), for the "
                         "trainer's data.extra_train_files; use its own --out")
    args = ap.parse_args(argv)

    out = args.out
    budget = args.budget_minutes * 60.0
    deadline = T_START + budget
    if args.extra:
        tasks = tk.build_extra_tasks(args.extra)
    else:
        tasks = tk.order_tasks(tk.build_tasks(args.seed), args.seed)
    only = {b.strip() for b in args.buckets.split(",") if b.strip()}

    if args.list:
        for i, t in enumerate(tasks):
            print(i, t.bucket, t.name)
        return 0

    for d in ("frames", "meta", "eos", "reference"):
        os.makedirs(os.path.join(out, d), exist_ok=True)
    atomic_write_json(os.path.join(out, "tasks.json"),
                      {"seed": args.seed,
                       "order": [{"name": t.name, "bucket": t.bucket, "runner": t.runner,
                                  "metal": t.metal, "params": t.params} for t in tasks]})

    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)

    import labeller
    from labeller import Labeller

    labeller.INFO_DEFAULTS["source"] = args.labeller  # the frames' `source` tag

    auto = str(args.threads) == "auto"
    lab = Labeller(args.labeller, threads=2 if auto else int(args.threads))
    lab.deadline = deadline
    ctx = tk.Ctx(out, args.seed, lab)
    log(f"labeller {lab.name} ({lab.version}) loaded; {len(tasks)} tasks; "
        f"budget {budget:.0f}s; out={out}")
    last_tune = -1e9

    def maybe_tune():
        nonlocal last_tune
        if auto and time.time() - last_tune > args.retune_seconds and deadline - time.time() > 30:
            timing = lab.tune_threads()
            last_tune = time.time()
            log("thread timing (s per 16-atom call): "
                + ", ".join(f"{k} thr {v:.3f}" for k, v in timing.items())
                + f" -> using {lab.threads}")

    metas = load_metas(out)
    n_done = sum(task_done(out, t) for t in tasks)
    frames_total = sum(m.get("n_frames", 0) for m in metas.values())
    log(f"resume: {n_done}/{len(tasks)} tasks already done, {frames_total} frames")

    # running per-bucket cost estimates (s) from finished tasks
    est: dict[str, list[float]] = {}
    for m in metas.values():
        est.setdefault(m.get("bucket", "?"), []).append(m.get("seconds", 0.0))

    def estimate(b):
        v = est.get(b)
        return sum(v) / len(v) if v else 8.0

    new_tasks = 0
    stopped = "all tasks done"
    skipped_for_time = 0
    try:
        for t in tasks:
            if task_done(out, t):
                continue
            if only and t.bucket != "eos" and t.bucket not in only:
                continue
            remaining = deadline - time.time()
            if remaining < 3.0:
                stopped = "time budget exhausted"
                break
            if t.bucket != "eos" and estimate(t.bucket) > remaining:
                skipped_for_time += 1
                continue
            if args.max_tasks and new_tasks >= args.max_tasks:
                stopped = "--max-tasks reached"
                break
            maybe_tune()
            c0, tc0, t0 = lab.n_calls, lab.t_calls, time.time()
            fn = getattr(tk, t.runner)
            try:
                res = fn(ctx, t)
            except BudgetExceeded:
                log(f"budget exhausted during {t.name}; task discarded (will be redone on resume)")
                stopped = "time budget exhausted"
                break
            except Exception as e:  # a failing task must not kill the run
                import traceback

                traceback.print_exc()
                log(f"task {t.name} FAILED: {e!r}; skipped")
                continue
            dt = time.time() - t0
            meta = {"task": t.name, "bucket": t.bucket, "runner": t.runner, "metal": t.metal,
                    "params": t.params, "seconds": dt, "n_calls": lab.n_calls - c0,
                    "t_calls": lab.t_calls - tc0, "seed": args.seed, "threads": lab.threads}
            if t.is_ref:
                meta["n_frames"] = 0
                res["task"] = t.name
                res["labeller"] = lab.name
                atomic_write_json(os.path.join(out, "meta", f"{t.name}.json"), meta)
                atomic_write_json(os.path.join(out, "reference", f"{t.name}.json"), res)
                info = f"E={res.get('energy', float('nan')):.4f}" if "energy" in res else ""
                aggregate(out, lab.name)
            else:
                frames, extra = res
                meta.update(extra)
                meta["n_frames"] = len(frames)
                meta["n_atoms"] = [len(f) for f in frames]
                atomic_write_json(os.path.join(out, "meta", f"{t.name}.json"), meta)
                atomic_write_text(os.path.join(out, "frames", f"{t.name}.extxyz"),
                                  frames_to_text(frames))
                frames_total += len(frames)
                info = f"{len(frames)} frames"
                if t.bucket == "eos":
                    info += f", a0={extra['a0']:.4f}"
                    aggregate(out, lab.name)
            est.setdefault(t.bucket, []).append(dt)
            n_done += 1
            new_tasks += 1
            log(f"{n_done}/{len(tasks)} done | frames {frames_total} | {t.name}: {info}, "
                f"{meta['n_calls']} calls, {dt:.1f}s")
    except KeyboardInterrupt as e:
        stopped = f"interrupted ({e})"
    finally:
        aggregate(out, lab.name)
        metas = load_metas(out)
        secs = sum(m.get("seconds", 0) for m in metas.values())
        nfr = sum(m.get("n_frames", 0) for m in metas.values())
        prog = {"tasks_total": len(tasks), "tasks_done": sum(task_done(out, t) for t in tasks),
                "frames": nfr, "task_seconds": secs, "seconds_per_frame": secs / max(nfr, 1),
                "labeller_calls_this_run": lab.n_calls, "labeller_seconds_this_run": lab.t_calls,
                "stopped": stopped, "skipped_for_time_this_run": skipped_for_time}
        atomic_write_json(os.path.join(out, "progress.json"), prog)
        log(f"STOP: {stopped}. {prog['tasks_done']}/{len(tasks)} tasks, {nfr} frames, "
            f"{secs / max(nfr, 1):.3f} s/frame (task time), this run {lab.n_calls} labeller calls "
            f"in {lab.t_calls:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
