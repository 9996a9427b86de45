"""Cost of a K-member committee call against one member, side by side in one run.

A committee shares conversion and the neighbour list and runs its members one after
the other (geomformer_md/committee.py says why not torch.func.vmap). This prints, for
a 66-atom Pt(111) 3x3x7-like slab with CO and a 500-atom Cu crystal, the median time of
one energy + forces (+ stress for the crystal) call through GeoMFormerCalculator for a
single model and for committees of K = 2, 4 and 8 copies of it (perturbed weights), and
the ratio committee / single, which the committee is designed to keep at most K.
Timings interleave single and committee calls round-robin so load drift hits both.

    python benchmarks/bench_committee.py                 # shipped default, 5 rounds
    python benchmarks/bench_committee.py --model FILE --ks 4 --rounds 9
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111

from geomformer_md import GeoMFormerCalculator, load_potential
from geomformer_md.committee import Committee


def systems() -> dict[str, Atoms]:
    slab = fcc111("Pt", (4, 4, 4), vacuum=8.0)  # 64 Pt + CO = 66 atoms
    add_adsorbate(slab, Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.15]]), 1.85, "ontop")
    cu = bulk("Cu", "fcc", a=3.61, cubic=True) * (5, 5, 5)
    cu.rattle(0.03, seed=0)
    return {"Pt(111)+CO 66 atoms": slab, "Cu 500 atoms": cu}


def perturbed(model, k: int):
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(k)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def time_call(calc, atoms: Atoms) -> float:
    a = atoms.copy()
    calc.reset()  # same positions as the last call: no cached results
    a.calc = calc
    t0 = time.perf_counter()
    a.get_forces()
    if a.pbc.all():
        a.get_stress()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="potential name or file (default: shipped)")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = load_potential(args.model)
    calcs = {"single": GeoMFormerCalculator(base)}
    for k in args.ks:
        calcs[f"K={k}"] = GeoMFormerCalculator(
            Committee([perturbed(base, i) for i in range(k)]), uncertainty_threshold=None)
    print(f"model {args.model or 'default'}, {args.threads} torch thread(s), "
          f"{args.rounds} rounds, load {os.getloadavg()[0]:.2f}")
    for name, atoms in systems().items():
        times = {c: [] for c in calcs}
        for c in calcs:
            time_call(calcs[c], atoms)  # warm-up
        for r in range(args.rounds):
            order = list(calcs)[r % len(calcs):] + list(calcs)[: r % len(calcs)]
            for c in order:
                times[c].append(time_call(calcs[c], atoms))
        single = statistics.median(times["single"])
        print(f"\n{name}: single model {1000 * single:.1f} ms per call")
        for c in calcs:
            if c == "single":
                continue
            med = statistics.median(times[c])
            k = int(c.split("=")[1])
            print(f"  committee {c:5s} {1000 * med:8.1f} ms  = {med / single:5.2f} x single "
                  f"({med / single / k:.2f} x K single calls)")
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
