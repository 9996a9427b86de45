"""Cost of one call against the labeller's (SevenNet-0), side by side in one run.

Issue 24's speed target: per call (energy and forces, through ASE), at a 66-atom Pt(111) + CO
slab and at 500 Cu atoms, a potential must be at least 15x faster than SevenNet-0 on the CPU.
This times, interleaved round-robin in a rotated order each round (so load drift hits all
alike), the median over rounds:

* our models: shipped names or model files, and ``d48x3`` style sizes (random weights of
  that width and depth, 4 heads, 12 Bessel, r_c 4.5 Å, the ZBL prior: the cost of a size
  does not depend on its weights; optional suffixes ``f4`` FFN width 4x d, ``k24`` 24
  Bessel functions, ``a2`` angular invariants to degree 2, in that order: ``d48x3f4k24``),
  each through ``GeoMFormerCalculator`` in its own dtype;
* SevenNet-0 through its own ASE calculator (float32, as it runs on the CPU).

It needs sevenn, so it runs in the labeller's environment with this checkout importable:

    PYTHONPATH=. OMP_NUM_THREADS=1 /work/venv-label/bin/python benchmarks/bench_vs_labeller.py \\
        geomformer-catalysis-v11 d48x3 d64x3 d96x3 --rounds 5

and prints milliseconds per call and the ratio SevenNet-0 / model per system.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111
from ase.constraints import FixAtoms

SPECIES = (1, 6, 7, 8, 28, 29, 46, 47, 78, 79)  # H C N O Ni Cu Pd Ag Pt Au


def systems() -> dict[str, Atoms]:
    slab = fcc111("Pt", (4, 4, 4), a=3.97, vacuum=8.0)
    add_adsorbate(slab, "C", 1.85, "ontop")
    slab += Atoms("O", positions=[slab.positions[-1] + [0, 0, 1.15]])
    slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag >= 3]))
    cu = bulk("Cu", "fcc", a=3.63, cubic=True).repeat((5, 5, 5))
    rng = np.random.default_rng(0)
    for atoms in (slab, cu):
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
    return {f"Pt(111)+CO, {len(slab)} atoms": slab, f"Cu bulk, {len(cu)} atoms": cu}


def our_calculator(spec: str):
    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.model import GeoMFormer, GeoMFormerConfig

    size = re.fullmatch(r"d(\d+)x(\d+)(?:f(\d+))?(?:k(\d+))?(?:a(\d))?", spec)
    if size is None:
        return GeoMFormerCalculator(spec, uncertainty_threshold=None)
    torch.manual_seed(0)
    cfg = GeoMFormerConfig(species=SPECIES, d_model=int(size[1]), n_layers=int(size[2]),
                           n_heads=4, n_rbf=int(size[4] or 12), cutoff=4.5, zbl=True,
                           ffn_mult=int(size[3] or 2), angular_lmax=int(size[5] or 0))
    return GeoMFormerCalculator(GeoMFormer(cfg).eval())


def sevennet_calculator():
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator(model="7net-0", device="cpu")


def one_call(calc, atoms: Atoms) -> float:
    work = atoms.copy()
    work.calc = calc
    t0 = time.perf_counter()
    work.get_potential_energy()
    work.get_forces()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+",
                    help="shipped names, model files or sizes like d48x3, d48x3f4k24a2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    calcs = {"SevenNet-0": sevennet_calculator(), **{m: our_calculator(m) for m in args.models}}
    cases = systems()
    for calc in calcs.values():  # warm-up: lazy imports, first allocations
        for atoms in cases.values():
            one_call(calc, atoms)
    times = {(c, s): [] for c in calcs for s in cases}
    keys = list(times)
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            times[k].append(one_call(calcs[k[0]], cases[k[1]]))
    print(f"median of {args.rounds} rounds, {args.threads} torch thread(s), ms per call "
          f"(energy + forces through ASE); ratio = SevenNet-0 / model")
    for s in cases:
        ref = statistics.median(times[("SevenNet-0", s)])
        print(f"\n{s}: SevenNet-0 {1000 * ref:.1f} ms")
        for m in args.models:
            t = statistics.median(times[(m, s)])
            print(f"  {m:32s} {1000 * t:8.1f} ms   {ref / t:6.1f}x")


if __name__ == "__main__":
    main()
