"""Parity plots of predicted vs reference energies and forces."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def parity_plots(pairs: dict, path: str | Path, metrics: dict | None = None) -> None:
    """Two panels: energy per atom and force components, reference vs model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = metrics or {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    panels = [
        ("energy", "energy (eV/atom)", metrics.get("energy_mae_meV_atom"), "meV/atom"),
        ("forces", "force component (eV/Å)", metrics.get("forces_mae_meV_A"), "meV/Å"),
    ]
    for ax, (key, label, mae, unit) in zip(axes, panels, strict=True):
        ref, pred = np.asarray(pairs[key])[:, 0], np.asarray(pairs[key])[:, 1]
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(ref, pred, s=4, alpha=0.5, edgecolors="none")
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"GeoMFormer {label}")
        title = key if mae is None else f"{key}: MAE {mae:.1f} {unit}"
        ax.set_title(title)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
