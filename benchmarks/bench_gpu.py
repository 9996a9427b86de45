"""GPU against CPU, side by side in one run, with the shipped default potential.

1. One ASE call (energy, forces, stress) of `GeoMFormerCalculator` on rattled fcc
   Cu supercells, CUDA float32 and float64 against the CPU (float32, --cpu-threads),
   and MD throughput implied by it (steps/s).
2. Many small structures (Cu/Pt slabs with adsorbates) through `BatchEvaluator`
   on CUDA against one structure at a time on CUDA.

    python benchmarks/bench_gpu.py                 # needs a CUDA device
    python benchmarks/bench_gpu.py --sizes 500 4000 --n 256

Times are medians over rounds, after a warm-up call; CUDA work is synchronised.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from ase.build import add_adsorbate, bulk, fcc111

from geomformer_md import GeoMFormerCalculator
from geomformer_md.simulate.batch import BatchEvaluator


def cu_supercell(n_target: int, seed: int = 0):
    reps = max(1, round((n_target / 4) ** (1 / 3)))
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((reps, reps, reps))
    atoms.rattle(0.05, seed=seed)
    return atoms


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_call(calc, atoms, rounds: int) -> float:
    times = []
    for k in range(rounds + 1):
        a = atoms.copy()
        a.positions += 1e-4 * k  # a new geometry each call: no cached results
        a.calc = calc
        sync()
        t0 = time.perf_counter()
        a.get_potential_energy(), a.get_forces(), a.get_stress()
        sync()
        if k:  # first call is the warm-up
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def slabs(n: int):
    out, rng = [], np.random.default_rng(0)
    for k in range(n):
        metal = ("Cu", "Pt", "Ni", "Pd")[k % 4]
        slab = fcc111(metal, size=(3, 3, 4), vacuum=8.0)
        add_adsorbate(slab, ("O", "H", "N")[k % 3], 1.5, ("fcc", "hcp", "ontop")[k % 3])
        slab.positions += rng.normal(0.0, 0.03, slab.positions.shape)
        out.append(slab)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[108, 500, 2048, 8788])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=128, help="structures for the batched part")
    ap.add_argument("--cpu-threads", type=int, default=4,
                    help="torch threads of the CPU column (16 on small tensors ran slower than 4)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA device")
    torch.set_num_threads(args.cpu_threads)
    print(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; CPU side: "
          f"{args.cpu_threads} of {os.cpu_count()} cores")
    calcs = {
        "cuda-f32": GeoMFormerCalculator(device="cuda", dtype="float32"),
        "cuda-f64": GeoMFormerCalculator(device="cuda", dtype="float64"),
        "cpu-f32": GeoMFormerCalculator(device="cpu", dtype="float32"),
    }
    head = " | ".join(f"{k} ms/call" for k in calcs)
    print(f"atoms | {head} | cpu/cuda-f32 | cuda-f32 steps/s")
    for n in args.sizes:
        atoms = cu_supercell(n)
        t = {}
        for name, calc in calcs.items():
            if name.startswith("cpu") and len(atoms) > 2100:
                t[name] = float("nan")  # minutes on the CPU; not needed for the ratio trend
                continue
            t[name] = time_call(calc, atoms, args.rounds)
        cells = " | ".join(f"{1e3 * t[k]:.1f}" for k in calcs)
        ratio = t["cpu-f32"] / t["cuda-f32"]
        print(f"{len(atoms)} | {cells} | {ratio:.1f}x | {1 / t['cuda-f32']:.0f}", flush=True)

    structures = slabs(args.n)
    ev = BatchEvaluator(device="cuda", dtype="float32")
    ev.evaluate(structures[:8])  # warm-up
    warm_batches = ev.n_batches
    sync()
    t0 = time.perf_counter()
    ev.evaluate(structures)
    sync()
    t_batch = time.perf_counter() - t0
    one = calcs["cuda-f32"]
    sync()
    t0 = time.perf_counter()
    for s in structures:
        a = s.copy()
        a.calc = one
        a.get_potential_energy(), a.get_forces()
    sync()
    t_seq = time.perf_counter() - t0
    print(f"{args.n} slabs (37 atoms): batched {1e3 * t_batch / args.n:.2f} ms/structure, "
          f"one at a time {1e3 * t_seq / args.n:.2f} ms/structure, ratio {t_seq / t_batch:.1f}x "
          f"({ev.n_batches - warm_batches} batches)")


if __name__ == "__main__":
    main()
