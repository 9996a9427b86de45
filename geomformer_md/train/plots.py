"""Parity plots of predicted vs reference energies and forces, with the starting model.

Energies are shown per atom relative to per-element reference energies fitted to the
reference labels of the plotted frames (least squares on the compositions), the same
offsets for every curve: what is left is the part a potential has to learn, so errors of a
few meV/atom are visible instead of being lost on an axis that spans compositions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def relative_energies(pairs: dict, offsets: np.ndarray | None = None, elements=None):
    """(reference, predicted) energies per atom (meV/atom) relative to per-element offsets
    fitted to the reference energies; returns them with the offsets and elements used."""
    from .data import composition_matrix, offsets_from_counts

    numbers = pairs["numbers"]
    if elements is None:
        elements = sorted({int(z) for n in numbers for z in n})
    a = composition_matrix(numbers, elements)
    e = np.asarray(pairs["energy"], float)
    if offsets is None:
        offsets = offsets_from_counts(a, e[:, 0])
    shift = a @ offsets
    n = np.asarray(pairs["n_atoms"], float)
    return 1000 * (e[:, 0] - shift) / n, 1000 * (e[:, 1] - shift) / n, offsets, elements


def parity_plots(pairs: dict, path: str | Path, metrics: dict | None = None,
                 start: dict | None = None, start_metrics: dict | None = None,
                 title: str = "") -> None:
    """Two panels: energy per atom (relative to fitted per-element references) and force
    components, reference vs model; the starting model's predictions in grey behind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, start_metrics = metrics or {}, start_metrics or {}
    ref, pred, offsets, elements = relative_energies(pairs)
    energy = {"final": (ref, pred)}
    forces = {"final": (pairs["forces"][:, 0], pairs["forces"][:, 1])}
    if start is not None:
        s_ref, s_pred, _, _ = relative_energies(start, offsets, elements)
        energy["start"] = (s_ref, s_pred)
        forces["start"] = (start["forces"][:, 0], start["forces"][:, 1])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    panels = [
        (energy, "energy - Σ per-element references (meV/atom)", "energy_mae_meV_atom", "meV/atom"),
        (forces, "force component (eV/Å)", "forces_mae_meV_A", "meV/Å"),
    ]
    for ax, (data, label, key, unit) in zip(axes, panels, strict=True):
        size = 12 if len(data["final"][0]) < 1000 else 4  # a few frames' energies stay visible
        values = np.concatenate([np.concatenate(v) for v in data.values()])
        lo, hi = float(values.min()), float(values.max())
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        if "start" in data:
            mae = start_metrics.get(key)
            note = f": MAE {mae:.1f} {unit}" if mae is not None else ""
            ax.scatter(*data["start"], s=size, alpha=0.35, color="0.55", edgecolors="none",
                       label=f"starting model{note}")
        mae = metrics.get(key)
        ax.scatter(*data["final"], s=size, alpha=0.6, color="C0", edgecolors="none",
                   label="trained" + (f": MAE {mae:.1f} {unit}" if mae is not None else ""))
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"GeoMFormer {label}")
        ax.set_title(f"{title} {key.split('_')[0]}".strip())
        ax.legend(loc="upper left", fontsize=8, markerscale=3)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
