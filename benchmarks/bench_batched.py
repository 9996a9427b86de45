"""Batched vs sequential throughput on slab + adsorbate structures.

    python benchmarks/bench_batched.py [--n 64] [--threads 2 1] [--repeat 3]
                                       [--relax-n 16] [--relax-steps 20] [--compile]

Builds Cu/Pt fcc(111) 3x3x4 slabs with O, H, CO or OH at ontop/bridge/fcc/hcp
sites (37-38 atoms, bottom two layers fixed), then measures side by side, in
one run and on the same model:

1. single points: a loop of GeoMFormerCalculator calls vs ``predict``, for
   each torch thread count given, interleaved ``--repeat`` times, best kept;
2. relaxation (last thread count): a loop of ASE FIRE runs vs ``relax_many``
   (same optimizer, fmax and step limit; final energies are compared too).

``--compile`` adds the same batched runs with a torch.compile'd network
(compilation is timed separately, not in the throughput).

Model: the default shipped potential if there is one, else a random model
with the default GeoMFormerConfig (d_model 64, 3 layers, cutoff 5 Å).
Prints structures/s, atoms/s, the ratios, CPU seconds (less sensitive to other
load on a shared machine than wall time) and where the batched time goes.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, fcc111
from ase.constraints import FixAtoms
from ase.optimize import FIRE

from geomformer_md import GeoMFormerCalculator
from geomformer_md.model import GeoMFormer, GeoMFormerConfig
from geomformer_md.simulate.batch import BatchEvaluator, relax_many

ADSORBATES = {  # symbols and offsets (Å) from the binding atom
    "O": [("O", (0, 0, 0))],
    "H": [("H", (0, 0, 0))],
    "CO": [("C", (0, 0, 0)), ("O", (0, 0, 1.15))],
    "OH": [("O", (0, 0, 0)), ("H", (0, 0, 0.97))],
}
SITES = ("ontop", "bridge", "fcc", "hcp")


def make_structures(n: int, seed: int = 0) -> list[Atoms]:
    """Slab + adsorbate structures cycling over metals, adsorbates and sites."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        metal = ("Cu", "Pt")[k % 2]
        name = list(ADSORBATES)[(k // 2) % len(ADSORBATES)]
        site = SITES[(k // (2 * len(ADSORBATES))) % len(SITES)]
        slab = fcc111(metal, (3, 3, 4), vacuum=10.0)
        height = 1.9 if name == "CO" else 1.3 if name == "H" else 1.6
        sym, off = ADSORBATES[name][0]
        add_adsorbate(slab, sym, height, site)
        base = slab.positions[-1].copy()
        for sym, off in ADSORBATES[name][1:]:
            slab += Atoms(sym, positions=[base + np.array(off)])
        slab.set_constraint(FixAtoms(mask=slab.positions[:, 2] < slab.positions[:, 2].min() + 2.5))
        slab.positions += rng.normal(0.0, 0.05, slab.positions.shape)
        out.append(slab)
    return out


def load_model() -> tuple[GeoMFormer, str]:
    try:
        from geomformer_md import load_potential

        return load_potential(None), "default shipped potential"
    except Exception:  # no shipped potential yet
        torch.manual_seed(0)
        model = GeoMFormer(GeoMFormerConfig(species=(1, 6, 7, 8, 29, 78)))
        return model.eval(), "random model, default GeoMFormerConfig (float32)"


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def sequential_breakdown(model, structures) -> str:
    """Where one calculator call's time goes: conversion + neighbours vs the model."""
    from geomformer_md.data.graph import atoms_to_graph
    from geomformer_md.potential import Potential

    pot = Potential(model)
    t_graph = t_model = 0.0
    for a in structures:
        t0 = time.perf_counter()
        g = atoms_to_graph(a, model.config.cutoff, "matscipy")
        t1 = time.perf_counter()
        with torch.enable_grad():
            pot(g, forces=True, stress=False)
        t_model += time.perf_counter() - t1
        t_graph += t1 - t0
    n = len(structures)
    return (
        f"sequential per structure: conversion + neighbour list {1e3 * t_graph / n:.1f} ms, "
        f"model {1e3 * t_model / n:.1f} ms"
    )


def _line(name: str, n: int, n_atoms: int, wall: float, cpu: float) -> str:
    return (
        f"{name:24s} {n / wall:8.2f} structures/s {n_atoms / wall:9.1f} atoms/s  "
        f"(wall {wall:.2f} s, cpu {cpu:.2f} s)"
    )


def bench_single_points(model, structures, threads: int, repeat: int, compiled=None) -> None:
    """Sequential calculator loop vs predict, interleaved ``repeat`` times, best of each."""
    torch.set_num_threads(threads)
    calc = GeoMFormerCalculator(model)
    n, n_atoms = len(structures), sum(len(a) for a in structures)

    def sequential():
        res = []
        for a in structures:
            a = a.copy()
            a.calc = calc
            res.append((a.get_potential_energy(), a.get_forces(apply_constraint=False)))
        return res

    evaluator = BatchEvaluator(model)
    evaluator.max_edges()  # measure bytes/edge outside the timing
    warm = structures[0].copy()  # warm up both paths
    warm.calc = calc
    warm.get_forces()
    evaluator.evaluate(structures[:2])
    runs = {
        "sequential calculator": sequential,
        "batched predict": lambda: evaluator.evaluate(structures),
    }
    if compiled is not None:
        runs["batched, compiled"] = lambda: compiled.evaluate(structures)
    best: dict[str, tuple[float, float]] = {}
    outputs = {}
    for _ in range(repeat):
        for name, fn in runs.items():
            if name == "batched predict":
                for key in evaluator.timings:
                    evaluator.timings[key] = 0.0
                evaluator.n_batches = 0
            out, wall, cpu = timed(fn)
            outputs[name] = out
            old = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(old[0], wall), min(old[1], cpu))
    print(
        f"\n== single points, {threads} torch thread(s): {n} structures, {n_atoms} atoms, "
        f"best of {repeat} =="
    )
    for name, (wall, cpu) in best.items():
        print(_line(name, n, n_atoms, wall, cpu))
    seq = best["sequential calculator"]
    for name in list(best)[1:]:
        err = max(
            np.abs(f - r["forces"]).max()
            for (_, f), r in zip(outputs["sequential calculator"], outputs[name], strict=True)
        )
        print(
            f"ratio {name} / sequential: wall {seq[0] / best[name][0]:.2f}x, "
            f"cpu {seq[1] / best[name][1]:.2f}x; max |dF| {err:.1e} eV/Å"
        )
    tm = evaluator.timings
    print(
        f"batched time (last run): model {tm['model']:.2f} s (summed over "
        f"{evaluator._n_workers()} worker(s)), neighbours {tm['neighbors']:.3f} s, convert "
        f"{tm['convert']:.3f} s, unpack {tm['unpack']:.3f} s; {evaluator.n_batches} forward "
        f"passes, max_edges {evaluator.max_edges()}"
    )


def bench_relax(model, structures, steps, fmax, compiled=None) -> None:
    """A loop of ASE FIRE runs vs relax_many (same optimizer, fmax and step limit)."""
    calc = GeoMFormerCalculator(model)
    n, n_atoms = len(structures), sum(len(a) for a in structures)

    def sequential():
        out = []
        for a in structures:
            a = a.copy()
            a.calc = calc
            opt = FIRE(a, logfile=None)
            conv = opt.run(fmax=fmax, steps=steps)
            out.append((a.get_potential_energy(), opt.nsteps, conv))
        return out

    runs = {
        "sequential FIRE loop": sequential,
        "relax_many": lambda: relax_many(structures, model, fmax=fmax, steps=steps, progress=False),
    }
    if compiled is not None:
        runs["relax_many, compiled"] = lambda: relax_many(
            structures, compiled, fmax=fmax, steps=steps, progress=False
        )
    res = {name: timed(fn) for name, fn in runs.items()}
    seq, t_seq, c_seq = res["sequential FIRE loop"]
    print(
        f"\n== relaxation (FIRE, fmax {fmax}, <= {steps} steps): {n} structures, "
        f"{sum(s for _, s, _ in seq)} steps in all =="
    )
    for name, (_, wall, cpu) in res.items():
        print(_line(name, n, n_atoms, wall, cpu))
    for name in list(res)[1:]:
        bat, wall, cpu = res[name]
        d_e = max(abs(e - r.energy) for (e, _, _), (_, r) in zip(seq, bat, strict=True))
        print(
            f"ratio {name} / sequential: wall {t_seq / wall:.2f}x, cpu {c_seq / cpu:.2f}x; "
            f"max |dE| final {d_e:.1e} eV; converged {sum(r.converged for _, r in bat)} "
            f"(sequential {sum(c for *_, c in seq)})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="structures for single points")
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[2, 1],
        help="torch thread counts to measure single points with",
    )
    ap.add_argument("--relax-n", type=int, default=16, help="structures to relax (0 = skip)")
    ap.add_argument("--relax-steps", type=int, default=20)
    ap.add_argument("--fmax", type=float, default=0.05)
    ap.add_argument("--repeat", type=int, default=3, help="single-point repeats (best kept)")
    ap.add_argument(
        "--compile",
        action="store_true",
        help="also time predict with a torch.compile'd network (compiles first)",
    )
    args = ap.parse_args()
    model, what = load_model()
    structures = make_structures(args.n)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"model: {what}; torch {torch.__version__}; {os.cpu_count()} cores, "
        f"load average {load:.1f} at start"
    )
    torch.set_num_threads(1)
    print(sequential_breakdown(model, structures[:8]))
    compiled = None
    if args.compile:
        torch.set_num_threads(1)
        compiled = BatchEvaluator(model, compile=True)
        _, wall, _ = timed(lambda: compiled.evaluate(structures))
        print(f"torch.compile warm-up (compilation + first pass): {wall:.1f} s")
    for threads in args.threads:
        bench_single_points(model, structures, threads, args.repeat, compiled)
    if args.relax_n:
        torch.set_num_threads(args.threads[-1])
        print(f"(relaxation with {args.threads[-1]} torch thread(s))")
        bench_relax(model, structures[: args.relax_n], args.relax_steps, args.fmax, compiled)


if __name__ == "__main__":
    main()
