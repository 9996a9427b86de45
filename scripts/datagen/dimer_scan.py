#!/usr/bin/env python
"""Dimer curves of the labeller for every element pair: where is it trustworthy at short range?

    /work/venv-label/bin/python scripts/datagen/dimer_scan.py --out teacher_dimers.json

For each pair of ELEMENTS, E(r) - E(free atoms) of an isolated dimer from 0.10 Å to 3.50 Å
(step 0.02 Å). A physical curve rises monotonically as r falls below its minimum and keeps
rising (the nuclei repel as 1/r). The labeller was trained on MPtrj, which has almost no
close contacts, so below some distance its curve turns over. Per pair the script prints

- ``r_min``: the position of the minimum of the scanned curve (above 0.5 Å);
- ``r_turn``: the largest r below r_min at which the curve stops rising inward (E(r - dr) <
  E(r)), i.e. where the repulsive wall breaks; 0 if it never does;
- ``E(0.5 Å)`` and the energy at the sum of covalent radii (ASE's table).

The trusted range (``scripts/datagen/short_range.py``) is derived from these numbers.
Only the labeller venv is needed (no geomformer-md).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

ELEMENTS = ["H", "C", "N", "O", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"]


def scan(lab, a: str, b: str, rs: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """E(r) - E(free atoms) and the radial force -dE/dr on atom b (eV, eV/Å)."""
    from ase import Atoms

    def one(r):
        d = Atoms(a + b if len(a) + len(b) > 2 else [a, b], positions=[[0, 0, 0], [0, 0, r]],
                  cell=[20, 20, 20 + r], pbc=False)
        res = lab.label(d)
        return float(res["energy"]), float(np.asarray(res["forces"])[1, 2])

    e_free = one(12.0)[0]  # beyond the labeller's 5 Å cutoff: two free atoms
    out = np.array([one(float(r)) for r in rs])
    return out[:, 0] - e_free, out[:, 1], e_free


def analyse(rs, es) -> dict:
    above = rs >= 0.5
    k_min = int(np.flatnonzero(above)[np.argmin(es[above])])
    r_turn = 0.0
    for k in range(k_min, 0, -1):  # walk inward from the minimum
        if es[k - 1] < es[k]:
            r_turn = float(rs[k])
            break
    return {"r_min": float(rs[k_min]), "E_min": float(es[k_min]), "r_turn": r_turn}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file for the curves")
    ap.add_argument("--labeller", default="7net-0")
    ap.add_argument("--elements", default=",".join(ELEMENTS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    from ase.data import atomic_numbers, covalent_radii
    from labeller import Labeller, atomic_write_json

    lab = Labeller(args.labeller, threads=args.threads)
    elements = [e.strip() for e in args.elements.split(",") if e.strip()]
    rs = np.round(np.arange(0.10, 3.5001, 0.02), 4)
    result = {"labeller": args.labeller, "r": rs.tolist(), "pairs": {}}
    t0 = time.time()
    print(f"{'pair':6s} {'R_cov':>6s} {'r_min':>6s} {'E_min':>8s} {'r_turn':>7s} "
          f"{'E(0.5)':>9s} {'E(R_cov)':>9s}", flush=True)
    for a, b in itertools.combinations_with_replacement(elements, 2):
        es, fs, e_free = scan(lab, a, b, rs)
        info = analyse(rs, es)
        r_cov = float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])
        info.update(R_cov=r_cov, E_free=e_free, E=es.tolist(), F=fs.tolist(),
                    E_at_0p5=float(np.interp(0.5, rs, es)),
                    E_at_Rcov=float(np.interp(r_cov, rs, es)))
        result["pairs"][f"{a}-{b}"] = info
        print(f"{a + '-' + b:6s} {r_cov:6.2f} {info['r_min']:6.2f} {info['E_min']:8.3f} "
              f"{info['r_turn']:7.2f} {info['E_at_0p5']:9.3f} {info['E_at_Rcov']:9.3f}", flush=True)
        atomic_write_json(args.out, result)
    print(f"{len(result['pairs'])} pairs in {time.time() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
