"""Cost of the close-contact checks (geomformer_md.data.contacts), side by side.

- calculator: a GeoMFormerCalculator call (energy, forces, stress) with its per-call
  contact check (from the edges it already built) against the same call with the check
  switched off;
- MD log row: `closest_contact` (a neighbour search of its own, done once per log row)
  against one force call of the same structure, i.e. its cost relative to one MD step.

    OMP_NUM_THREADS=1 python benchmarks/bench_contacts.py [--repeat 20]

Prints ratios; absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import time

import torch
from ase.build import add_adsorbate, bulk, fcc111, molecule

import geomformer_md.calculator as calc_mod
from geomformer_md import GeoMFormerCalculator
from geomformer_md.data.contacts import closest_contact


def structures():
    slab = fcc111("Pt", (3, 3, 4), vacuum=10.0)
    add_adsorbate(slab, molecule("CO")[::-1], 1.9, "ontop")
    cu = bulk("Cu", "fcc", a=3.61, cubic=True) * (5, 5, 5)
    cu.rattle(0.05, seed=0)
    return {"CO/Pt(111) 38 atoms": slab, "Cu bulk 500 atoms": cu}


def best_times(fns, repeat: int) -> list[float]:
    """Minimum time of each function over ``repeat`` rounds, interleaved so that a busy
    machine slows all of them alike."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(1)
    calc = GeoMFormerCalculator()
    print(f"{'structure':<22}{'calc+check/s':>14}{'calc/s':>10}{'ratio':>8}"
          f"{'closest_contact/s':>20}{'vs one call':>13}")
    for name, atoms in structures().items():

        def call(a=atoms):
            calc.reset()  # no cached results: a full evaluation every time
            b = a.copy()
            b.calc = calc
            b.get_forces()
            if b.pbc.all():
                b.get_stress()

        def call_unchecked(a=atoms, original=calc_mod.GeoMFormerCalculator._check_contacts):
            calc_mod.GeoMFormerCalculator._check_contacts = lambda self, graph: None
            try:
                call(a)
            finally:
                calc_mod.GeoMFormerCalculator._check_contacts = original

        with_check, without, search = best_times(
            [call, call_unchecked, lambda a=atoms: closest_contact(a)], args.repeat
        )
        print(f"{name:<22}{with_check:>14.4f}{without:>10.4f}{with_check / without:>8.3f}"
              f"{search:>20.4f}{search / without:>13.3f}")


if __name__ == "__main__":
    main()
