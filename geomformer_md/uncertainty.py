"""How well a committee's flag finds large force errors, and its calibration.

A committee flags an atom when its force std passes a limit (``committee.ForceStdLimit``:
one value, or one per element). Which limit is right depends on the committee: how
diverse its members are, and how their spread relates to their error on each element.
This module measures that on frames labelled by the teacher and chooses the limits.

Calibration (``calibrate``), on frames the committee was not trained on:

1. Per element, a scale ``c_el = median(|force error|) / median(force std)`` over that
   element's atoms (all atoms pooled for elements with fewer than ``min_atoms``): the
   spread of members, times ``c_el``, estimates the error. Members disagree less on some
   elements (Ag) than on others (O, H) for the same error; one threshold for all would
   either miss the errors on the quiet elements or flag every structure with an O.
2. A frame's estimated error is the largest ``c_el * std`` over its atoms. The threshold
   ``T`` (eV/Å of estimated error) is the largest value at which the flag catches at least
   the fraction ``catch`` of the frames whose force error passes ``large_error`` on some atom.
3. The stored limits are ``T / c_el`` per element and ``T / c`` (all atoms pooled) for
   elements the frames did not hold.

A frame counts as *large-error* when any atom's force error (the norm of the difference
of force vectors) passes ``large_error`` (0.3 eV/Å by default, issue 23's criterion);
*caught* when its largest std / limit passes 1; a *false alarm* when it is flagged but
not large-error. Frames of held-out categories (``atoms.info["holdout"]`` set, as in
a distillation run's validation set, or categories named by the caller) are never used to
calibrate: they measure how the calibration transfers to kinds of structure it never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from .committee import ForceStdLimit

LARGE_ERROR = 0.3  # eV/Å: a frame with a larger force error on any atom should be flagged


def category_of(atoms: Atoms) -> str:
    """The category a labelled frame belongs to: its held-out rule, else its category."""
    return str(atoms.info.get("holdout") or atoms.info.get("category") or "unknown")


def is_held_out(category: str) -> bool:
    return category.startswith("heldout")


def committee_errors(committee, frames: Sequence[Atoms], dtype: str | None = None,
                     progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Per frame: category, atomic numbers, n, energy error (eV), force errors [n, 3] and
    force stds [n] (eV/Å). ``dtype``: the evaluation precision (None: the model's own);
    ``progress(done, total)`` is called after each frame. A single model (no committee)
    gives the same rows with ``fstd`` None: the per-frame errors behind any table."""
    from .calculator import GeoMFormerCalculator

    calc = GeoMFormerCalculator(committee, uncertainty_threshold=None, dtype=dtype)
    rows = []
    for i, atoms in enumerate(frames):
        try:
            ref_e = atoms.get_potential_energy()
            ref_f = atoms.get_forces(apply_constraint=False)
        except Exception:
            raise ValueError(f"frame {i} ({atoms.get_chemical_formula()}) carries no energy "
                             f"and forces: the frames must be labelled by the teacher") from None
        work = atoms.copy()
        work.constraints = []
        work.calc = calc
        e = work.get_potential_energy()
        f = work.get_forces()
        rows.append({"category": category_of(atoms), "numbers": atoms.numbers.copy(),
                     "n": len(atoms), "de": e - ref_e, "df": f - ref_f,
                     "fstd": (calc.results["forces_std"].copy()
                              if "forces_std" in calc.results else None)})
        if progress is not None:
            progress(i + 1, len(frames))
    return rows


def _atom_err(row) -> np.ndarray:
    return np.linalg.norm(row["df"], axis=1)


def calibrate(rows: Sequence[dict], catch: float = 0.8, large_error: float = LARGE_ERROR,
              per_element: bool = True, min_atoms: int = 30,
              min_large_frames: int = 10) -> dict:
    """Thresholds for a committee from ``rows`` of :func:`committee_errors` (only the frames
    to calibrate on: leave held-out ones out). Returns the metadata a committee file stores
    (``force_std_threshold``, ``force_std_threshold_per_element`` as {symbol: eV/Å}) and a
    record of how they were chosen (``calibration``)."""
    if not 0 < catch <= 1:
        raise ValueError(f"catch must be in (0, 1], got {catch}")
    if not large_error > 0:
        raise ValueError(f"large_error must be > 0 eV/Å, got {large_error}")
    if not rows:
        raise ValueError("no frames to calibrate on")
    z = np.concatenate([r["numbers"] for r in rows])
    std = np.concatenate([r["fstd"] for r in rows])
    err = np.concatenate([_atom_err(r) for r in rows])
    large = np.array([_atom_err(r).max() > large_error for r in rows])
    if large.sum() < min_large_frames:
        raise ValueError(
            f"only {int(large.sum())} of {len(rows)} frames have a force error above "
            f"{large_error:g} eV/Å; calibrating needs at least {min_large_frames}: label more "
            f"frames, or frames further from the training data")

    def scale(mask) -> float:
        s = float(np.median(std[mask]))
        return float(np.median(err[mask])) / s if s > 0 else 1.0

    pooled = scale(np.ones_like(z, dtype=bool))
    scales = {}
    if per_element:
        for el in np.unique(z):
            mask = z == el
            if mask.sum() >= min_atoms:
                scales[int(el)] = scale(mask)
    estimate = np.array([np.max(r["fstd"] * np.array([scales.get(int(x), pooled)
                                                      for x in r["numbers"]]))
                         for r in rows])
    # the largest T with mean(estimate[large] > T) >= catch: just below the k-th largest
    ordered = np.sort(estimate[large])[::-1]
    k = int(np.ceil(catch * len(ordered)))
    t = float(np.nextafter(ordered[k - 1], 0.0))
    record = {"catch_target": catch, "large_error_eV_A": large_error, "frames": len(rows),
              "large_error_frames": int(large.sum()), "per_element": per_element,
              "error_scale": pooled, "threshold_estimated_error_eV_A": t,
              "error_scale_per_element": {chemical_symbols[e]: round(c, 4)
                                          for e, c in scales.items()}}
    meta = {"force_std_threshold": t / pooled,
            "force_std_threshold_per_element": {chemical_symbols[e]: t / c
                                                for e, c in scales.items()}}
    limit = limit_from_metadata(meta)
    stats = flag_stats(rows, limit)
    record.update(caught=stats["caught"], false_alarms=stats["false_alarms"])
    meta["calibration"] = record
    return meta


def limit_from_metadata(meta: dict) -> ForceStdLimit:
    per = {atomic_numbers[el]: float(t)
           for el, t in (meta.get("force_std_threshold_per_element") or {}).items()}
    return ForceStdLimit(float(meta["force_std_threshold"]), per)


def flag_stats(rows: Sequence[dict], limit: ForceStdLimit | float,
               large_error: float = LARGE_ERROR) -> dict:
    """For ``rows`` of :func:`committee_errors` and a flag ``limit``: frames, large-error
    frames, the fraction of them caught, frames flagged, the fraction of the other frames
    flagged (false alarms), force and energy MAE, and the per-atom Spearman correlation
    between force std and the norm of the force error."""
    from scipy.stats import spearmanr

    limit = limit if isinstance(limit, ForceStdLimit) else ForceStdLimit(float(limit))
    flagged = np.array([limit.excess(r["numbers"], r["fstd"])[0] > 1 for r in rows])
    large = np.array([_atom_err(r).max() > large_error for r in rows])
    err = np.concatenate([_atom_err(r) for r in rows])
    std = np.concatenate([r["fstd"] for r in rows])
    return {
        "frames": len(rows),
        "E_mae_meV_atom": float(np.mean([abs(r["de"]) / r["n"] for r in rows]) * 1000),
        "F_mae_meV_A": float(np.mean(np.abs(np.concatenate([r["df"].ravel() for r in rows])))
                             * 1000),
        "spearman": float(spearmanr(std, err).statistic) if len(err) > 2 else float("nan"),
        "large_error_frames": int(large.sum()),
        "caught": float(flagged[large].mean()) if large.any() else float("nan"),
        "caught_frames": int(flagged[large].sum()),
        "flagged_frames": int(flagged.sum()),
        "false_alarms": float(flagged[~large].mean()) if (~large).any() else float("nan"),
        "false_alarm_frames": int(flagged[~large].sum()),
    }


def flag_table(rows: Sequence[dict], limit: ForceStdLimit | float,
               large_error: float = LARGE_ERROR,
               groups: Iterable[str] = ()) -> dict[str, dict]:
    """:func:`flag_stats` per category, and over the held-out categories ("held-out"), the
    others ("not held-out") and all frames ("all"); ``groups``: more categories to
    count as held out."""
    extra = set(groups)

    def held(cat):
        return is_held_out(cat) or cat in extra

    table = {}
    for cat in sorted({r["category"] for r in rows}):
        table[cat] = flag_stats([r for r in rows if r["category"] == cat], limit, large_error)
    for name, keep in (("held-out", held), ("not held-out", lambda c: not held(c)),
                       ("all", lambda c: True)):
        mine = [r for r in rows if keep(r["category"])]
        if mine:
            table[name] = flag_stats(mine, limit, large_error)
    return table


def format_table(table: dict[str, dict]) -> str:
    """A markdown table of :func:`flag_table`: caught is of the large-error frames, false
    alarms of the others."""
    lines = ["| frames | n | F MAE (meV/Å) | E MAE (meV/atom) | Spearman | caught | false alarms |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def part(k, m):
        return f"{k}/{m} ({100 * k / m:.0f} %)" if m else "0/0"

    for cat, s in table.items():
        n_large = s["large_error_frames"]
        lines.append(f"| {cat} | {s['frames']} | {s['F_mae_meV_A']:.1f} | "
                     f"{s['E_mae_meV_atom']:.1f} | {s['spearman']:.2f} | "
                     f"{part(s['caught_frames'], n_large)} | "
                     f"{part(s['false_alarm_frames'], s['frames'] - n_large)} |")
    return "\n".join(lines)


def plot_flag(rows: Sequence[dict], limit: ForceStdLimit | float, path,
              large_error: float = LARGE_ERROR, title: str = "") -> None:
    """One point per frame: its largest force std relative to the flag's limit (x) against
    its largest per-atom force error (y), held-out categories apart. The lines x = 1 and
    y = ``large_error`` split the frames into caught (upper right), missed (upper left),
    false alarms (lower right) and quiet ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limit = limit if isinstance(limit, ForceStdLimit) else ForceStdLimit(float(limit))
    x = np.array([limit.excess(r["numbers"], r["fstd"])[0] for r in rows])
    y = np.array([_atom_err(r).max() for r in rows])
    held = np.array([is_held_out(r["category"]) for r in rows])
    fig, ax = plt.subplots(figsize=(6.2, 5))
    for mask, label, style in ((~held, "calibration / in-domain frames", dict(marker="o")),
                               (held, "held-out categories", dict(marker="s"))):
        if mask.any():
            ax.scatter(x[mask], y[mask], s=14, alpha=0.6, label=label, **style)
    ax.axvline(1.0, color="k", lw=1)
    ax.axhline(large_error, color="k", lw=1, ls="--")
    ax.set(xscale="log", yscale="log", xlabel="largest force std / its element's limit",
           ylabel="largest per-atom force error (eV/Å)",
           title=title or "committee flag: caught upper right, missed upper left")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
