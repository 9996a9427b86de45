#!/usr/bin/env python
"""Concatenate the per-task frame files of a generate.py run into
<out>/train_pool.extxyz and <out>/test_heldout.extxyz (by the split_hint tag)
and print counts per metal / facet / adsorbate / kind / site and atom counts.

    /work/venv-label/bin/python scripts/datagen/merge.py --out data_raw/catalysis

Only ase + numpy are needed (no labeller).  Files are concatenated in sorted
task-name order, so the result is deterministic for a given set of tasks.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys

import numpy as np
from ase.io import read

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from labeller import atomic_write_json, atomic_write_text, frames_to_text  # noqa: E402


def table(title, counter, total):
    print(f"\n{title}")
    for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], str(kv[0]))):
        print(f"  {str(k):<22s} {v:6d}  {100.0 * v / max(total, 1):5.1f}%")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data_raw/catalysis")
    args = ap.parse_args(argv)

    files = sorted(glob.glob(os.path.join(args.out, "frames", "*.extxyz")))
    if not files:
        print(f"no frame files under {args.out}/frames")
        return 1
    split = {"pool": [], "test_heldout": []}
    bad = []
    for f in files:
        if os.path.getsize(f) == 0:
            continue
        for a in read(f, index=":", format="extxyz"):
            h = a.info.get("split_hint", "pool")
            if h not in split:
                bad.append((f, h))
                continue
            split[h].append(a)
    if bad:
        print(f"WARNING: {len(bad)} frames with unknown split_hint, ignored")

    # sanity: held-out combos must never be in the pool
    def key(a):
        return (str(a.info["facet"]), str(a.info["adsorbate"]), str(a.info["site"]))

    heldout_keys = {key(a) for a in split["test_heldout"]}
    leak = [a for a in split["pool"] if key(a) in heldout_keys]
    if leak:
        print(f"ERROR: {len(leak)} pool frames carry a held-out (facet, adsorbate, site) tag")
    test_cfg = {a.info["config_id"] for a in split["test_heldout"]}
    pool_cfg = {a.info["config_id"] for a in split["pool"]}
    if test_cfg & pool_cfg:
        print(f"ERROR: config_ids in both splits: {sorted(test_cfg & pool_cfg)[:5]}")

    outs = {"pool": "train_pool.extxyz", "test_heldout": "test_heldout.extxyz"}
    summary = {}
    for h, frames in split.items():
        path = os.path.join(args.out, outs[h])
        atomic_write_text(path, frames_to_text(frames))
        n = len(frames)
        nat = np.array([len(a) for a in frames]) if frames else np.zeros(0, int)
        print("=" * 60)
        print(f"{h}: {n} frames -> {path}")
        if n == 0:
            continue
        print(f"atoms/frame: min {nat.min()} median {int(np.median(nat))} mean {nat.mean():.1f} "
              f"max {nat.max()}; total atoms {nat.sum()}")
        print(f"configs (config_id): {len({a.info['config_id'] for a in frames})}; "
              f"with stress: {sum('stress' in a.calc.results for a in frames)}")
        fmax = np.array([np.linalg.norm(a.get_forces(), axis=1).max() for a in frames])
        print(f"max |F| per frame: median {np.median(fmax):.2f}, "
              f"95% {np.percentile(fmax, 95):.2f}, "
              f"max {fmax.max():.2f} eV/A")
        s = {}
        for key in ("metal", "facet", "adsorbate", "site", "kind"):
            # note: ase's extxyz reader turns facet=111 back into an int -> normalise to str
            c = collections.Counter(str(a.info.get(key, "?")) for a in frames)
            table(f"per {key}:", c, n)
            s[key] = dict(c)
        nb = collections.Counter(
            "1-4" if k <= 4 else "5-16" if k <= 16 else "17-27" if k <= 27
            else "28-40" if k <= 40 else ">40"
            for k in nat)
        table("per atom count:", nb, n)
        s["per_atom_count"] = dict(nb)
        s["n_frames"] = n
        s["atoms"] = {"min": int(nat.min()), "max": int(nat.max()), "mean": float(nat.mean()),
                      "total": int(nat.sum())}
        summary[h] = s
    atomic_write_json(os.path.join(args.out, "merge_summary.json"), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
