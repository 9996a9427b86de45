"""Batched vs sequential throughput on slab + adsorbate structures.

    python benchmarks/bench_batched.py [--n 64] [--threads 2] [--relax-n 16] [--relax-steps 20]

Builds Cu/Pt fcc(111) 3x3x4 slabs with O, H, CO or OH at ontop/bridge/fcc/hcp
sites (37-38 atoms, bottom two layers fixed), then measures side by side, in
one run and on the same model:

1. single points: a loop of GeoMFormerCalculator calls vs ``predict``;
2. relaxation: a loop of ASE FIRE runs vs ``relax_many`` (same optimizer,
   same fmax and step limit; final energies are compared too).

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


def bench_single_points(model, structures, threads: int) -> float:
    torch.set_num_threads(threads)
    calc = GeoMFormerCalculator(model)
    n_atoms = sum(len(a) for a in structures)

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
    for key in evaluator.timings:
        evaluator.timings[key] = 0.0
    evaluator.n_batches = 0

    seq, t_seq, c_seq = timed(sequential)
    bat, t_bat, c_bat = timed(lambda: evaluator.evaluate(structures))
    err = max(np.abs(f - r["forces"]).max() for (_, f), r in zip(seq, bat, strict=True))
    print(
        f"\n== single points, {threads} torch thread(s): {len(structures)} structures, "
        f"{n_atoms} atoms =="
    )
    print(
        f"sequential calculator: {len(structures) / t_seq:8.2f} structures/s "
        f"{n_atoms / t_seq:9.1f} atoms/s  (wall {t_seq:.2f} s, cpu {c_seq:.2f} s)"
    )
    print(
        f"batched predict:       {len(structures) / t_bat:8.2f} structures/s "
        f"{n_atoms / t_bat:9.1f} atoms/s  (wall {t_bat:.2f} s, cpu {c_bat:.2f} s)"
    )
    print(
        f"ratio batched/sequential: wall {t_seq / t_bat:.2f}x, cpu {c_seq / c_bat:.2f}x; "
        f"max |dF| {err:.1e} eV/Å"
    )
    tm = evaluator.timings
    print(
        f"batched time: model {tm['model']:.2f} s (summed over {evaluator._n_workers()} "
        f"worker(s)), neighbours {tm['neighbors']:.3f} s, convert {tm['convert']:.3f} s, "
        f"unpack {tm['unpack']:.3f} s; {evaluator.n_batches} forward passes, "
        f"max_edges {evaluator.max_edges()}"
    )
    return t_seq / t_bat


def bench_relax(model, structures, steps, fmax):
    calc = GeoMFormerCalculator(model)
    n_atoms = sum(len(a) for a in structures)

    def sequential():
        out = []
        for a in structures:
            a = a.copy()
            a.calc = calc
            opt = FIRE(a, logfile=None)
            conv = opt.run(fmax=fmax, steps=steps)
            out.append((a.get_potential_energy(), opt.nsteps, conv))
        return out

    seq, t_seq, c_seq = timed(sequential)
    bat, t_bat, c_bat = timed(
        lambda: relax_many(
            structures, model, fmax=fmax, steps=steps, optimizer="FIRE", progress=False
        )
    )
    d_e = max(abs(e - r.energy) for (e, _, _), (_, r) in zip(seq, bat, strict=True))
    n_steps = sum(s for _, s, _ in seq)
    print(
        f"\n== relaxation (FIRE, fmax {fmax}, <= {steps} steps): {len(structures)} structures, "
        f"{n_steps} steps in all =="
    )
    print(
        f"sequential FIRE loop: {len(structures) / t_seq:8.3f} structures/s "
        f"{n_atoms / t_seq:8.1f} atoms/s  (wall {t_seq:.2f} s, cpu {c_seq:.2f} s)"
    )
    print(
        f"relax_many:           {len(structures) / t_bat:8.3f} structures/s "
        f"{n_atoms / t_bat:8.1f} atoms/s  (wall {t_bat:.2f} s, cpu {c_bat:.2f} s)"
    )
    print(
        f"ratio batched/sequential: wall {t_seq / t_bat:.2f}x, cpu {c_seq / c_bat:.2f}x; "
        f"max |dE| final {d_e:.1e} eV; converged seq/batched "
        f"{sum(c for *_, c in seq)}/{sum(r.converged for _, r in bat)}"
    )
    return t_seq / t_bat


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
    for threads in args.threads:
        bench_single_points(model, structures, threads)
    if args.relax_n:
        torch.set_num_threads(args.threads[-1])
        print(f"(relaxation with {args.threads[-1]} torch thread(s))")
        bench_relax(model, structures[: args.relax_n], args.relax_steps, args.fmax)


if __name__ == "__main__":
    main()
