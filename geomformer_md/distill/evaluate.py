"""Errors of a committee per category, its calibration, and the progress plot.

Force MAE is the mean absolute error over force components (x, y, z of every atom),
meV/Å, the definition the trainer reports; energy MAE is per atom, meV/atom.
Calibration: the Spearman rank correlation between each atom's force std and the norm
of its force error, and the fraction of frames with a force error above 0.3 eV/Å (on
any atom) whose largest force std passes the flag threshold (``caught``).
"""

from __future__ import annotations

import numpy as np

from ..committee import DEFAULT_FORCE_STD_THRESHOLD

# The per-frame errors and the category of a frame are the uncertainty module's; they are
# imported here under their old names (the distillation loop and scripts use them).
from ..uncertainty import LARGE_ERROR, category_of, committee_errors, flag_stats  # noqa: F401


def summarise(rows: list[dict], threshold: float = DEFAULT_FORCE_STD_THRESHOLD) -> dict:
    """One progress row's errors (``E_<category>``, ``F_<category>``, ``E_all``, ``F_all``)
    and calibration at ``threshold`` (``spearman``, ``large_error_frames``, ``caught``,
    ``flagged_frames``), from :func:`geomformer_md.uncertainty.flag_stats`."""
    out = {}
    parts = {cat: [r for r in rows if r["category"] == cat]
             for cat in sorted({r["category"] for r in rows})}
    for cat, mine in [*parts.items(), ("all", rows)]:
        stats = flag_stats(mine, threshold)
        out[f"E_{cat}"] = stats["E_mae_meV_atom"]
        out[f"F_{cat}"] = stats["F_mae_meV_A"]
    # the calibration columns are over all frames: ``stats`` of the last entry
    out.update({k: stats[k] for k in ("spearman", "large_error_frames", "caught",
                                      "flagged_frames")})
    return out


def plot_progress(rows: list[dict], path, title: str = "") -> None:
    """Force and energy MAE per category, the uncertainty of candidates, and the calibrated
    flag (large-error frames caught and false alarms, apart for the held-out categories),
    by iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in rows]
    cats = sorted({k[2:] for r in rows for k in r if k.startswith("F_")})
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
    for cat in cats:
        style = dict(lw=2.5, color="k") if cat == "all" else dict(lw=1.2)
        axes[0].plot(its, [r.get(f"F_{cat}", np.nan) for r in rows], "o-", label=cat, **style)
        axes[1].plot(its, [r.get(f"E_{cat}", np.nan) for r in rows], "o-", label=cat, **style)
    axes[0].set(xlabel="iteration", ylabel="force MAE (meV/Å)", yscale="log",
                title="validation forces by category")
    axes[1].set(xlabel="iteration", ylabel="energy MAE (meV/atom)", yscale="log",
                title="validation energies by category")
    axes[0].legend(fontsize=7)
    for key, label in (("unc_median", "median"), ("unc_p90", "90th pct"), ("unc_max", "max")):
        axes[2].plot(its, [r.get(key, np.nan) for r in rows], "o-", label=label)
    axes[2].set(xlabel="iteration", ylabel="committee force std of candidates (eV/Å)",
                yscale="log", title="exploration uncertainty")
    axes[2].legend(fontsize=7)
    for key, label, style in (("caught_calibrated", "caught (calibration frames)", "o-"),
                              ("caught_calibrated_heldout", "caught (held out)", "s-"),
                              ("false_alarms", "false alarms (calibration frames)", "o--"),
                              ("false_alarms_heldout", "false alarms (held out)", "s--")):
        axes[3].plot(its, [100 * r.get(key, np.nan) for r in rows], style, label=label)
    axes[3].set(xlabel="iteration", ylabel="% of frames", ylim=(0, 105),
                title="calibrated flag (force error > 0.3 eV/Å)")
    axes[3].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
