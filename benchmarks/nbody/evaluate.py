"""Test MSE beside the published table, parameters, training time, equivariance.

  python benchmarks/nbody/evaluate.py benchmarks/nbody/runs/full benchmarks/nbody/runs/no_cross

reads each run's metrics.json (written by train.py from the best-validation
state) and prints one table. ``evaluate_predictor`` is the measurement itself.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

FRAME_IN, FRAME_OUT = 30, 40

# Test MSE on EGNN's nbody_small (3000 training trajectories), as published
# (Satorras et al. 2021, Table 2; GeoMFormer: Chen et al. 2024).
PUBLISHED = {
    "Linear (EGNN paper)": 0.0819,
    "SE(3) Transformer": 0.0244,
    "TFN": 0.0155,
    "GNN": 0.0107,
    "Radial Field": 0.0104,
    "EGNN": 0.0071,
    "GeoMFormer (paper)": 0.0047,
}


def load_split(data_dir: Path, name: str, n: int | None = None, dtype=torch.float32) -> dict:
    """x0, v0 [S, 5, 3] at frame 30, x1 at frame 40, q [S, 5]; dmax: largest pair distance at 30."""
    with np.load(Path(data_dir) / f"{name}.npz") as a:
        loc, vel, q = a["loc"], a["vel"], a["charges"]
    if n is not None:
        loc, vel, q = loc[:n], vel[:n], q[:n]
    x0 = loc[:, FRAME_IN]
    dmax = np.linalg.norm(x0[:, :, None] - x0[:, None, :], axis=-1).max()

    def t(a):
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype)

    return {
        "x0": t(x0),
        "v0": t(vel[:, FRAME_IN]),
        "x1": t(loc[:, FRAME_OUT]),
        "q": t(q),
        "dmax": dmax,
    }


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    """Uniform proper rotation (float64) from the QR of a Gaussian matrix."""
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    qm, r = torch.linalg.qr(a)
    qm = qm * torch.sign(torch.diagonal(r))
    if torch.det(qm) < 0:
        qm[:, 0] = -qm[:, 0]
    return qm


def equivariance_error(model, x0, v0, q, seed: int = 0) -> float:
    """max |f(x R^T + t, v R^T) - (f(x, v) R^T + t)| over the given systems (float64 inputs)."""
    gen = torch.Generator().manual_seed(seed)
    rot = random_rotation(gen)
    shift = 3.0 * torch.randn(3, generator=gen, dtype=torch.float64)
    x0, v0, q = x0.double(), v0.double(), q.double()
    with torch.no_grad():
        a = model(x0 @ rot.T + shift, v0 @ rot.T, q)
        b = model(x0, v0, q) @ rot.T + shift
    return float((a - b).abs().max())


def evaluate_predictor(model, test: dict, batch: int = 250) -> dict:
    """Test MSE, and the same for the charge-symmetrised predictor (f(q) + f(-q)) / 2.

    The dynamics are unchanged when all charges flip sign (forces go with q_i q_j);
    the network sees q_i, so it is invariant to the flip only as far as it learned it.
    ``charge_flip_rms`` is the RMS of f(q) - f(-q) on the test set.
    """
    model.eval()
    sq = sq_sym = flip = 0.0
    with torch.no_grad():
        for s in range(0, len(test["q"]), batch):
            sl = slice(s, s + batch)
            pred = model(test["x0"][sl], test["v0"][sl], test["q"][sl])
            pred_f = model(test["x0"][sl], test["v0"][sl], -test["q"][sl])
            sq += float(((pred - test["x1"][sl]) ** 2).sum())
            sq_sym += float((((pred + pred_f) / 2 - test["x1"][sl]) ** 2).sum())
            flip += float(((pred - pred_f) ** 2).sum())
    x0, v0, q = test["x0"], test["v0"], test["q"]
    n = test["x1"].numel()
    return {
        "test_mse": sq / n,
        "test_mse_charge_symmetrised": sq_sym / n,
        "charge_flip_rms": (flip / n) ** 0.5,
        "n_test": len(q),
        "n_parameters": model.n_parameters(),
        # trained float32 weights; inputs transformed in float64, relative vectors cast to float32
        "equivariance_err_f32": equivariance_error(model, x0, v0, q),
        # the same weights in float64: exact up to round-off
        "equivariance_err_f64": equivariance_error(copy.deepcopy(model).double(), x0, v0, q),
    }


def table(runs: list[Path]) -> str:
    rows = [("method", "test MSE", "params", "train time", "notes")]
    rows += [(k, f"{v:.4f}", "", "", "published") for k, v in PUBLISHED.items()]
    for run in runs:
        m = json.loads((Path(run) / "metrics.json").read_text())
        rows.append(
            (
                f"ours: {m['variant']}",
                f"{m['test_mse']:.4f}",
                f"{m['n_parameters'] / 1e3:.0f}k",
                f"{m['train_time_min']:.0f} min",
                f"best epoch {m['best_epoch']}/{m['epochs_done']} ({m['stop_reason']}), "
                f"charge-symmetrised {m.get('test_mse_charge_symmetrised', float('nan')):.4f}, "
                f"val {m['val_mse']:.4f}, equiv. err f32 {m['equivariance_err_f32']:.1e} "
                f"f64 {m['equivariance_err_f64']:.1e}",
            )
        )
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(" | ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows)


def val_at_matched_epochs(runs: list[Path], every: int = 10) -> str:
    """Validation MSE of each run at the same epochs (from the checkpoint's history).

    Time-budgeted runs of cheaper variants reach more epochs; this separates
    "better per epoch" from "better per minute". The learning rates at a given
    epoch differ slightly (the cosine follows each run's own clock).
    """
    hist = {}
    for run in runs:
        ck = torch.load(Path(run) / "checkpoint.pt", weights_only=False)  # our own file
        hist[Path(run).name] = {h["epoch"]: h for h in ck["state"]["history"] if "val_mse" in h}
    common = sorted(set.intersection(*(set(h) for h in hist.values())))
    picks = [e for e in common if e % every == 0] + common[-1:]
    lines = ["epoch | " + " | ".join(f"{n} val MSE (min)" for n in hist)]
    for e in sorted(set(picks)):
        cells = [f"{hist[n][e]['val_mse']:.4f} ({hist[n][e]['elapsed_min']:.0f})" for n in hist]
        lines.append(f"{e} | " + " | ".join(cells))
    return "\n".join(lines)


def recompute(run: Path, data_dir: Path) -> dict:
    """Re-measure a finished run's best.pt on the test split and update its metrics.json
    (for runs written by an older evaluate_predictor)."""
    from nbody_model import NBodyPredictor

    from geomformer_md.model import GeoMFormerConfig

    saved = torch.load(Path(run) / "best.pt", weights_only=True)
    model = NBodyPredictor(GeoMFormerConfig(**saved["config"]), saved["variant"])
    model.load_state_dict(saved["state_dict"])
    path = Path(run) / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics.update(evaluate_predictor(model, load_split(data_dir, "test")))
    path.write_text(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--recompute":  # evaluate.py --recompute RUN... (data in ./data)
        args = args[1:]
        for run in args:
            recompute(Path(run), Path(__file__).resolve().parent / "data")
    runs = [Path(p) for p in args]
    print(table(runs))
    if len(runs) > 1 and all((r / "checkpoint.pt").exists() for r in runs):
        print()
        print(val_at_matched_epochs(runs))
