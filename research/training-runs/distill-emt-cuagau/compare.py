"""The distillation demo's arms side by side: force / energy MAE on the fixed validation set
per iteration, and the per-category errors at the last iteration.

    python research/training-runs/distill-emt-cuagau/compare.py            # the records here
    python research/training-runs/distill-emt-cuagau/compare.py runs       # live runs/ dirs
"""

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARMS = [  # (label, record file here, run dir under runs/)
    ("s0 uncertainty, balance: category", "progress-s0-balanced.csv", "distill-emt-cuagau-balanced"),
    ("s0 random", "progress-s0-random.csv", "distill-emt-cuagau-random2"),
    ("s1 uncertainty, balance: category", "progress-s1-balanced.csv", "distill-emt-cuagau-s1-balanced"),
    ("s1 random", "progress-s1-random.csv", "distill-emt-cuagau-s1-random"),
    ("s0 uncertainty, one ranking (session 15)", "progress-uncertainty.csv", "distill-emt-cuagau"),
    ("s0 random (session 15)", "progress-random.csv", "distill-emt-cuagau-random"),
]
CATS = ["bulk", "alloy", "surface", "cluster", "heldout:elements=Ag-Au", "all"]


def rows(label, record, run):
    path = (Path(sys.argv[1]) / run / "progress.csv") if len(sys.argv) > 1 else HERE / record
    with open(path) as fh:
        return [{k: float(v) if v not in ("", None) else None for k, v in r.items()}
                for r in csv.DictReader(fh)]


data = {label: rows(label, rec, run) for label, rec, run in ARMS}
n = max(len(r) for r in data.values())
print("| arm | " + " | ".join(f"it {i}" for i in range(n)) + " |")
print("|---|" + "---:|" * n)
for label, r in data.items():
    print(f"| {label} | " + " | ".join(f"{x['F_all']:.1f} / {x['E_all']:.1f}" for x in r)
          + " |" * (n - len(r) + 1))
print("\nlast iteration, force MAE per category (meV/Å) and energy MAE over all (meV/atom):")
print("| arm | frames | " + " | ".join(f"F {c}" for c in CATS) + " | E all | Spearman | caught |")
print("|---|---:|" + "---:|" * (len(CATS) + 3))
for label, r in data.items():
    x = r[-1]
    print(f"| {label} (it {int(x['iteration'])}) | {int(x['frames_total'])} | "
          + " | ".join(f"{x[f'F_{c}']:.1f}" for c in CATS)
          + f" | {x['E_all']:.1f} | {x['spearman']:.2f} | {x['caught']:.2f} |")
