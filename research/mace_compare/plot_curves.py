"""Validation error against wall-clock time for the runs of one equal-budget comparison.

    python research/mace_compare/plot_curves.py RUN/summary.json --mace-log RUN/mace_run-0.log \
        --geomformer geomformer=RUN/geomformer-metrics.csv --out curves.png

GeoMFormer's times are the trainer's `elapsed_s` plus its setup and the timed steps before
it (from summary.json); MACE's are the timestamps of its log, from the first line (which
comes a few seconds after the process starts, so MACE's curve sits slightly early).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from datetime import datetime
from pathlib import Path

EPOCH = re.compile(
    r"^(\S+ \S+) INFO: (?:Epoch (\d+)|Initial):.*"
    r"MAE_E_per_atom=\s*([\d.]+) meV, MAE_F=\s*([\d.]+) meV"
)


def mace_curve(log: Path) -> list[tuple[float, float, float]]:
    rows, t0 = [], None
    for line in log.read_text().splitlines():
        stamp = line[:23]
        try:
            t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
        except ValueError:
            continue
        t0 = t0 or t
        m = EPOCH.match(line)
        if m and m.group(2) is not None:  # skip the initial and the final-pass evaluations
            rows.append(((t - t0).total_seconds(), float(m.group(3)), float(m.group(4))))
    return rows


def geomformer_curve(metrics: Path, run: dict) -> list[tuple[float, float, float]]:
    offset = run["setup_s"] + 25 * run["ms_per_step"] / 1000  # setup and the timed steps
    with open(metrics) as fh:
        return [
            (
                offset + float(r["elapsed_s"]),
                float(r["val_energy_mae_meV_atom"]),
                float(r["val_forces_mae_meV_A"]),
            )
            for r in csv.DictReader(fh)
        ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("summary", type=Path, nargs="+", help="summary.json file(s) of equal_budget.py")
    ap.add_argument("--mace-log", type=Path, required=True)
    ap.add_argument(
        "--geomformer",
        action="append",
        default=[],
        metavar="NAME=METRICS_CSV",
        help="a GeoMFormer run (its key in summary.json) and its metrics.csv",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, minutes = {}, set()
    for s in args.summary:
        one = json.loads(s.read_text())
        minutes.add(one.get("minutes"))
        runs.update(one)
    curves = {"MACE": mace_curve(args.mace_log)}
    for item in args.geomformer:
        name, path = item.split("=", 1)
        w = runs[name].get("loss_weights")
        label = f"GeoMFormer ({name})" + (f", loss E:F:S = {w[0]:g}:{w[1]:g}:{w[2]:g}" if w else "")
        curves[label] = geomformer_curve(Path(path), runs[name])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in curves.items():
        t, e, f = zip(*rows, strict=True)
        axes[0].plot(t, e, "o-", label=label)
        axes[1].plot(t, f, "o-", label=label)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("validation energy MAE (meV/atom)")
    axes[1].set_ylabel("validation force MAE (meV/Å)")
    for ax in axes:
        ax.set_xlabel("wall-clock time since start (s)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    dev = runs.get("gpu") or runs.get("device", "")
    budget = "/".join(f"{m:g}" for m in sorted(minutes))
    fig.suptitle(f"Equal budget ({budget} min each, {dev}), same frames and split")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
