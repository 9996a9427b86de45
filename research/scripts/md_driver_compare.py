"""Exploration MD driven by the committee's mean against one member (distill ``md_driver``).

The same starting structures, temperatures and seeds are explored by MD with a committee of
a distillation run, once with the mean forces moving the atoms (``committee``) and once with
one member (``member``: member k % K for structure k, the committee at the snapshots only).
Prints the wall time of each and the distribution of the candidates' committee uncertainty
(largest per-atom force std), the quantity selection ranks by, and how many trajectories
stopped early (unphysical).

    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/md_driver_compare.py \\
        research/configs/distill-catalysis.yaml --iteration 3 --structures 24 \\
        --out research/training-runs/distill-catalysis/md-driver-compare.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from geomformer_md.distill import load_distill_config
from geomformer_md.distill.run import _explore_one
from geomformer_md.distill.space import Space
from geomformer_md.io.checkpoint import load_any
from geomformer_md.io.files import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--iteration", type=int, required=True, help="whose committee explores")
    ap.add_argument("--structures", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out")
    args = ap.parse_args()
    cfg = load_distill_config(args.config)
    out = Path(cfg.out_dir)
    committee = load_any(out / f"iter_{args.iteration:03d}" / "committee.pt")
    lattice = json.loads((out / "lattice_constants.json").read_text())
    space = Space(cfg.space, lattice)
    starts = space.sample(np.random.default_rng(args.seed), args.structures)
    result = {}
    for driver in ("committee", "member"):
        c = dataclasses.replace(cfg, md_driver=driver)
        t0 = time.perf_counter()
        cands, short = [], 0
        for k, atoms in enumerate(starts):
            frames = _explore_one(committee, (k, atoms, "md", [args.seed, 5, k]), c)
            cands += frames
            short += len(frames) < cfg.md_steps // cfg.snapshot_every + 1
        took = time.perf_counter() - t0
        unc = np.array([a.info["force_std_max"] for a in cands])
        result[driver] = {"seconds": took, "candidates": len(cands), "stopped_early": short,
                          "unc_median": float(np.median(unc)),
                          "unc_p90": float(np.quantile(unc, 0.9)), "unc_max": float(unc.max()),
                          "unc_top20_mean": float(np.sort(unc)[-20:].mean())}
        print(driver, {k: round(v, 3) if isinstance(v, float) else v
                       for k, v in result[driver].items()})
    print(f"time ratio committee / member: "
          f"{result['committee']['seconds'] / result['member']['seconds']:.2f}")
    if args.out:
        write_json(args.out, {"config": args.config, "iteration": args.iteration,
                              "structures": args.structures, "seed": args.seed, **result})


if __name__ == "__main__":
    main()
