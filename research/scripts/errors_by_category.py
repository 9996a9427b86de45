"""Energy and force MAE of several models side by side, per category of labelled frames.

Categories are a distillation run's (``info["holdout"]`` else ``info["category"]``), plus
the 13-atom particles apart ("13-atom particles": clean and with adsorbates, not held out),
where catalysis-v12's short-range fine-tunes were 2-3x worse than v11.

    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/errors_by_category.py \\
        runs/distill-catalysis/iter_002/member_0/model.pt runs/final-pilot-control/model.pt \\
        runs/final-pilot-short/model.pt --frames runs/distill-catalysis/validation.extxyz \\
        --dtype float64 --out research/training-runs/final-pilot/errors.json
"""

from __future__ import annotations

import argparse

import numpy as np
from ase.io import read

from geomformer_md.io.files import write_json
from geomformer_md.uncertainty import committee_errors

SMALL = "13-atom particles"


def errors(model: str, frames, dtype: str | None) -> dict[str, dict]:
    per: dict[str, list] = {}
    for atoms, row in zip(frames, committee_errors(model, frames, dtype=dtype), strict=True):
        de, df = abs(row["de"]) / row["n"], np.abs(row["df"]).ravel()
        cats = [row["category"], "all"]
        if (atoms.info.get("cluster_size") == 13 and not atoms.info.get("holdout")):
            cats.append(SMALL)
        for cat in cats:
            per.setdefault(cat, []).append((de, df))
    return {cat: {"frames": len(v), "E_meV_atom": 1000 * float(np.mean([d for d, _ in v])),
                  "F_meV_A": 1000 * float(np.mean(np.concatenate([f for _, f in v])))}
            for cat, v in sorted(per.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frames", required=True)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--out")
    args = ap.parse_args()
    frames = read(args.frames, ":")
    table = {m: errors(m, frames, args.dtype) for m in args.models}
    cats = list(next(iter(table.values())))
    print("| category | frames | " + " | ".join(f"E / F: {m}" for m in args.models) + " |")
    print("|---|---:|" + "---:|" * len(args.models))
    for cat in cats:
        row = [f"{table[m][cat]['E_meV_atom']:.1f} / {table[m][cat]['F_meV_A']:.1f}"
               for m in args.models]
        print(f"| {cat} | {table[args.models[0]][cat]['frames']} | " + " | ".join(row) + " |")
    if args.out:
        write_json(args.out, {"frames": args.frames, "dtype": args.dtype, "table": table})


if __name__ == "__main__":
    main()
