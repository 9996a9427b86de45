"""What D3(BJ) dispersion adds to a call: time with and without, side by side.

The shipped default potential through ``GeoMFormerCalculator`` (energy + forces, and
stress for bulk), with ``dispersion=None`` and ``dispersion="d3bj"`` at s-dftd3's default
pair cutoff (60 bohr = 31.75 Å) and at MACE's (40 bohr = 21.2 Å), on

* the main job's structure: Pt(111) 3x3x4 with CO on top (38 atoms, slab),
* rattled fcc Cu bulk of 108 and 500 atoms.

Calls are interleaved round-robin (load drift hits all alike) and the median is printed,
with the ratio to the call without dispersion, the number of D3 pairs (both directions)
and the time of the D3 neighbour list alone.

    python benchmarks/bench_dispersion.py --rounds 5

Results: docs/performance.md ("Dispersion").
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from ase import units
from ase.build import add_adsorbate, bulk, fcc111, molecule

from geomformer_md import GeoMFormerCalculator, atoms_to_graph
from geomformer_md.data.neighbors import neighbor_list


def structures():
    slab = fcc111("Pt", (3, 3, 4), vacuum=10.0)
    co = molecule("CO")
    co.rotate(180, "x")  # C down
    add_adsorbate(slab, co, 1.9, "ontop")
    out = {"Pt(111)+CO (38, slab)": slab}
    for k in (3, 5):
        cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((k, k, k))
        cu.rattle(0.05, seed=0)
        out[f"Cu bulk ({len(cu)})"] = cu
    return out


def call(calc, atoms) -> float:
    props = ["energy", "forces"] + (["stress"] if atoms.pbc.all() else [])
    t0 = time.perf_counter()
    calc.calculate(atoms, props, ["positions"])
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    calcs = {
        "none": GeoMFormerCalculator(),
        "d3bj 60 bohr": GeoMFormerCalculator(dispersion="d3bj"),
        "d3bj 40 bohr": GeoMFormerCalculator(dispersion="d3bj", dispersion_cutoff=40 * units.Bohr),
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    print(f"{'structure':<24}{'dispersion':<15}{'ms/call':>9}{'ratio':>7}{'D3 pairs':>10}"
          f"{'D3 NL ms':>10}")
    for name, atoms in structures().items():
        samples = {k: [] for k in calcs}
        for calc in calcs.values():
            call(calc, atoms)  # warm-up
        for r in range(args.rounds):
            for k in (list(calcs) if r % 2 == 0 else list(calcs)[::-1]):
                samples[k].append(call(calcs[k], atoms))
        med = {k: statistics.median(v) for k, v in samples.items()}
        graph = atoms_to_graph(atoms, 3.0)
        for k, calc in calcs.items():
            extra = ""
            if calc.dispersion is not None:
                rc = max(calc.dispersion.cutoff, calc.dispersion.cn_cutoff)
                t0 = time.perf_counter()
                ei, _ = neighbor_list(graph.positions, graph.cell, graph.pbc, rc, exact=False)
                nl_ms = 1000 * (time.perf_counter() - t0)
                extra = f"{ei.shape[1]:>10}{nl_ms:>10.1f}"
            print(f"{name:<24}{k:<15}{1000 * med[k]:>9.1f}{med[k] / med['none']:>7.2f}{extra}",
                  flush=True)
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
