"""A shipped committee on the validation frames of the issue 24 distillation run, per category.

The distillation run (research/configs/distill-catalysis.yaml) labels with SevenNet-0 a
fixed validation set over its whole space: 50 frames per category and per held-out rule
(Cu-Ni alloys, the (311) facet, 55-atom particles, the NHx family). Those frames were drawn
from a space that v11's data never listed, so they test a committee's errors and its flag
away from its data (issue 23's committee acceptance is on held-out frames of a distillation
run). Prints per category: frames, energy and force MAE, per-atom Spearman (force std vs
|force error|), frames with an error above 0.3 eV/Å, the fraction of those the committee's
stored thresholds (uncertainty_threshold="auto", per element) catch, and the fraction of
all frames flagged.

    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/committee_on_distill_validation.py \
        geomformer-catalysis-v11-committee --frames runs/distill-catalysis/validation.extxyz \
        --out research/training-runs/distill-catalysis/v11-committee-on-validation.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from ase.io import read
from scipy.stats import spearmanr

from geomformer_md.committee import resolve_uncertainty_threshold
from geomformer_md.distill.evaluate import LARGE_ERROR, committee_errors
from geomformer_md.io.checkpoint import load_any
from geomformer_md.io.registry import resolve_potential


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("committee", help="shipped committee name or committee file")
    ap.add_argument("--frames", required=True, help="validation.extxyz of a distillation run")
    ap.add_argument("--out", help="JSON file for the table")
    args = ap.parse_args()
    committee = load_any(resolve_potential(args.committee))
    limit = resolve_uncertainty_threshold(committee, "auto")
    frames = read(args.frames, ":")
    rows = committee_errors(committee, frames, dtype="float64")
    for r, atoms in zip(rows, frames, strict=True):
        r["ratio"] = float(np.max(r["fstd"] / limit.limits(atoms.numbers)))
        r["err"] = np.linalg.norm(r["df"], axis=1)
    table = {}
    cats = sorted({r["category"] for r in rows})
    for cat in [*cats, "held-out", "not held-out", "all"]:
        mine = [r for r in rows if cat == "all" or r["category"] == cat
                or (cat == "held-out" and r["category"].startswith("heldout"))
                or (cat == "not held-out" and not r["category"].startswith("heldout"))]
        err = np.concatenate([r["err"] for r in mine])
        std = np.concatenate([r["fstd"] for r in mine])
        large = [r for r in mine if r["err"].max() > LARGE_ERROR]
        table[cat] = {
            "frames": len(mine),
            "E_mae_meV_atom": float(np.mean([abs(r["de"]) / r["n"] for r in mine]) * 1000),
            "F_mae_meV_A": float(np.mean(np.abs(np.concatenate([r["df"].ravel() for r in mine])))
                                 * 1000),
            "spearman_atoms": float(spearmanr(std, err).statistic),
            "large_error_frames": len(large),
            "caught": float(np.mean([r["ratio"] > 1 for r in large])) if large else None,
            "flagged": float(np.mean([r["ratio"] > 1 for r in mine])),
        }
    head = f"{'category':32s} {'n':>4s} {'E meV/at':>9s} {'F meV/Å':>8s} {'rho':>5s} " \
           f"{'large':>5s} {'caught':>6s} {'flagged':>7s}"
    print(head)
    for cat, t in table.items():
        caught = "-" if t["caught"] is None else f"{t['caught']:.2f}"
        print(f"{cat:32s} {t['frames']:4d} {t['E_mae_meV_atom']:9.1f} {t['F_mae_meV_A']:8.1f} "
              f"{t['spearman_atoms']:5.2f} {t['large_error_frames']:5d} {caught:>6s} "
              f"{t['flagged']:7.2f}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"committee": args.committee, "frames": args.frames,
                       "large_error_eV_A": LARGE_ERROR, "table": table}, fh, indent=2)


if __name__ == "__main__":
    main()
