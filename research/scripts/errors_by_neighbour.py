"""Force errors of a model per element and per (element, nearest neighbour) pair.

Which atoms carry a model's force error? Per element, and for H, C, N, O per kind of
nearest neighbour (H, C, N, O, or "metal"), split into held-out and in-domain frames: the
mean absolute error per atom (mean over the three components), the mean |F| of the
labels, and their ratio (rel). Session 19 found with it that iteration 7's members had
never seen an N-H bond (the NHx hold-out included the gas phase): N-H forces off by 1.6-2x
their own size, against ~0.2 for H-C, H-O and the metals.

    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/errors_by_neighbour.py \\
        runs/distill-catalysis/iter_007/member_0/model.pt \\
        --frames runs/distill-catalysis/validation.extxyz
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from ase.io import read

from geomformer_md.io.files import write_json
from geomformer_md.uncertainty import committee_errors, is_held_out

LIGHT = ("H", "C", "N", "O")


def errors(model: str, frames, dtype: str | None = None) -> dict[str, dict]:
    rows: dict[str, list] = defaultdict(list)
    for atoms, row in zip(frames, committee_errors(model, frames, dtype=dtype), strict=True):
        err = np.abs(row["df"]).mean(axis=1)
        mag = np.abs(atoms.get_forces(apply_constraint=False)).mean(axis=1)
        where = "held out" if is_held_out(row["category"]) else "in domain"
        sym = np.array(atoms.get_chemical_symbols())
        near = np.full(len(atoms), "", dtype=object)
        if len(atoms) > 1:
            d = atoms.get_all_distances(mic=True)
            np.fill_diagonal(d, np.inf)
            nn = sym[d.argmin(axis=1)]
            near = np.where(np.isin(nn, LIGHT), nn, "metal")
        for i, s in enumerate(sym):
            rows[f"{s} ({where})"].append((err[i], mag[i]))
            if s in LIGHT and near[i]:
                rows[f"{s}-{near[i]} ({where})"].append((err[i], mag[i]))
    out = {}
    for key, v in sorted(rows.items()):
        v = np.array(v)
        out[key] = {"atoms": len(v), "F_MAE_meV_A": 1000 * float(v[:, 0].mean()),
                    "mean_abs_F_meV_A": 1000 * float(v[:, 1].mean()),
                    "rel": float(v[:, 0].mean() / max(v[:, 1].mean(), 1e-12))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--frames", required=True)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--out")
    args = ap.parse_args()
    table = errors(args.model, read(args.frames, ":"), args.dtype)
    print("| atoms (nearest neighbour) | n | force MAE (meV/Å) | mean abs F (meV/Å) | rel |")
    print("|---|---:|---:|---:|---:|")
    for key, r in table.items():
        print(f"| {key} | {r['atoms']} | {r['F_MAE_meV_A']:.0f} | {r['mean_abs_F_meV_A']:.0f} "
              f"| {r['rel']:.2f} |")
    if args.out:
        write_json(args.out, {"model": args.model, "frames": args.frames, "rows": table})


if __name__ == "__main__":
    main()
