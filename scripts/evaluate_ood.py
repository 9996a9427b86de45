"""Errors of a potential or committee on the out-of-domain benchmark, per category, and the
calibration of a committee's uncertainty (float64 evaluation).

    .venv/bin/python scripts/evaluate_ood.py geomformer-catalysis-v11
    .venv/bin/python scripts/evaluate_ood.py research/potentials/geomformer-catalysis-v9.pt \\
        geomformer-catalysis-v10 geomformer-catalysis-v11 --name committee-v9-v11  # a committee
    .venv/bin/python scripts/evaluate_ood.py runs/my-committee.pt  # a committee file
    .venv/bin/python scripts/evaluate_ood.py --compare data/ood-benchmark/eval-*.json

Frames: data/ood-benchmark/frames.extxyz.xz (scripts/ood_benchmark.py; category in
``info``) plus, as the ``in_domain`` row, the held-out frames of the shipped potentials'
data (data/catalysis-v1, ``split_hint=test_heldout``: OH at (111) hcp and N at (100)
bridge, never trained on by v4-v11), which give the flag's false alarms where the model
is right.

Errors (against the labeller, SevenNet-0): force MAE over components (meV/Å, what the
trainer reports), energy MAE per atom (meV/atom), the largest force error on one atom
(|ΔF|, eV/Å). Calibration of a committee (forces_std: the members' per-atom force spread,
eV/Å; a frame's uncertainty is its largest forces_std):

    spearman_atoms   rank correlation of per-atom forces_std and per-atom |ΔF|
    spearman_frames  the same per frame (largest std against largest |ΔF|)
    large            frames with |ΔF| > 0.3 eV/Å on some atom (what the flag should catch)
    caught@thr       fraction of the large ones whose uncertainty is above --threshold
    flagged@thr      fraction of all frames above --threshold (the cost: frames the user
                     is told to distrust)
    t80              the highest threshold that still catches 80 % of the large frames
    t_in95           the 95th percentile of the in-domain frames' uncertainty: a threshold
                     chosen without out-of-domain data (5 % of in-domain structures flagged);
                     what it catches out of domain
                     (uncertainty >= t80), over all frames; caught / flagged at it per row
    auc              ROC AUC of the uncertainty as a detector of large frames
    held-out-category calibration: for each category, the threshold that catches 80 % of
                     the large frames of the OTHER categories, applied to it (caught, false
                     alarms); summed over categories, it says how a threshold calibrated on
                     some kinds of structure transfers to a kind it never saw

and, for any model, the same two scores for the naive uncertainty every model has, the
size of its own predicted force (|F| per atom, the largest per frame): a committee is
worth its cost where it ranks errors better than this.

Writes the table and the per-frame numbers as JSON (default data/ood-benchmark/eval-NAME.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from geomformer_md.train.data import read_frames  # noqa: E402  (an .xz read once, in memory)

LARGE_ERROR = 0.3  # eV/Å, as geomformer_md.distill.evaluate
CATCH = 0.8
ORDER = ["in_domain", "alloy_surface", "high_coverage", "facets_defects", "nanoparticle",
         "intermediate", "hot_md"]


def load_frames(path: Path, in_domain: Path | None) -> list:
    frames = read_frames(path)
    if in_domain is not None:
        held = [a for a in read_frames(in_domain)
                if a.info.get("split_hint") == "test_heldout"]
        for a in held:
            a.info["category"] = "in_domain"
            a.info.setdefault("config_id", str(a.info.get("config_id")))
        frames = held + frames
    return frames


def evaluate(model, frames: list, log=print) -> list[dict]:
    """Per frame: category, atoms, energy error (eV), force errors [n, 3] and forces_std [n]."""
    from geomformer_md import GeoMFormerCalculator

    calc = GeoMFormerCalculator(model, dtype="float64", uncertainty_threshold=None)
    rows, t0 = [], time.time()
    for i, atoms in enumerate(frames):
        work = atoms.copy()
        work.constraints = []
        work.calc = calc
        e = work.get_potential_energy()
        f = work.get_forces()
        rows.append({"category": str(atoms.info["category"]),
                     "config_id": str(atoms.info.get("config_id", i)),
                     "mode": str(atoms.info.get("mode", atoms.info.get("kind", "none"))),
                     "n": len(atoms), "numbers": atoms.numbers.copy(),
                     "de": e - atoms.get_potential_energy(),
                     "df": f - atoms.get_forces(apply_constraint=False),
                     "fmag": np.linalg.norm(f, axis=1),
                     "fstd": calc.results["forces_std"].copy() if calc.is_committee else None})
        if (i + 1) % 100 == 0:
            log(f"  {i + 1}/{len(frames)} frames, {time.time() - t0:.0f} s")
    return rows


def t_catch(unc_large: np.ndarray, fraction: float = CATCH) -> float:
    """The highest t with at least ``fraction`` of unc_large >= t."""
    s = np.sort(unc_large)
    return float(s[len(s) - int(np.ceil(fraction * len(s)))]) if len(s) else float("nan")


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation; nan where it is undefined (a constant input)."""
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC of ``score`` for telling ``positive`` frames from the rest."""
    from scipy.stats import mannwhitneyu

    if not positive.any() or positive.all():
        return None
    stat = mannwhitneyu(score[positive], score[~positive]).statistic
    return float(stat / (positive.sum() * (~positive).sum()))


def summarise(rows: list[dict], threshold: float) -> dict:
    committee = rows[0]["fstd"] is not None
    err = [np.linalg.norm(r["df"], axis=1) for r in rows]
    frame_err = np.array([e.max() for e in err])
    large = frame_err > LARGE_ERROR
    unc = np.array([r["fstd"].max() for r in rows]) if committee else None
    fmag = np.array([r["fmag"].max() for r in rows])
    t80 = t_catch(unc[large]) if committee else None
    # flagged by the threshold as the calculator applies it (per element where it has them)
    flag = (np.array([threshold.excess(r["numbers"], r["fstd"])[0] > 1.0 for r in rows])
            if committee and hasattr(threshold, "excess")
            else unc > threshold if committee else None)
    cats = [c for c in ORDER if any(r["category"] == c for r in rows)]
    cats += sorted({r["category"] for r in rows} - set(cats))
    table = {}
    for cat in [*cats, "ood", "all"]:
        idx = np.array([cat == "all" or r["category"] == cat
                        or (cat == "ood" and r["category"] != "in_domain") for r in rows])
        mine = [r for r, k in zip(rows, idx, strict=True) if k]
        if not mine:
            continue
        row = {
            "frames": len(mine), "atoms": int(sum(r["n"] for r in mine)),
            "force_mae_meV_A": 1000 * float(np.mean(np.abs(np.concatenate(
                [r["df"].ravel() for r in mine])))),
            "energy_mae_meV_atom": 1000 * float(np.mean([abs(r["de"]) / r["n"] for r in mine])),
            "max_force_error_eV_A": float(frame_err[idx].max()),
            "large": int(large[idx].sum()),
            "force_spearman_atoms": _spearman(np.concatenate([r["fmag"] for r in mine]),
                                              np.concatenate([e for e, k in zip(err, idx,
                                                              strict=True) if k])),
            "force_auc": _auc(fmag[idx], large[idx]),
        }
        if committee:
            e_atoms = np.concatenate([e for e, k in zip(err, idx, strict=True) if k])
            s_atoms = np.concatenate([r["fstd"] for r in mine])
            u, lg = unc[idx], large[idx]
            row.update({
                "spearman_atoms": _spearman(s_atoms, e_atoms),
                "spearman_frames": _spearman(u, frame_err[idx]),
                "median_uncertainty_eV_A": float(np.median(u)),
                "caught_at_threshold": float(np.mean(flag[idx][lg])) if lg.any() else None,
                "flagged_at_threshold": float(np.mean(flag[idx])),
                "caught_at_t80": float(np.mean(u[lg] >= t80)) if lg.any() else None,
                "flagged_at_t80": float(np.mean(u >= t80)),
                "t80_in_category_eV_A": t_catch(u[lg]) if lg.any() else None,
                "auc": _auc(u, lg),
            })
        table[cat] = row
    out = {"table": table, "large_error_eV_A": LARGE_ERROR}
    if committee:
        ok = unc[~large]
        from ase.data import chemical_symbols

        per = getattr(threshold, "per_element", {}) or {}
        out.update(threshold_eV_A=float(threshold), t80_eV_A=t80,
                   threshold_per_element={chemical_symbols[z]: t for z, t in per.items()},
                   false_alarms_at_t80=float(np.mean(ok >= t80)) if len(ok) else None,
                   false_alarms_at_threshold=float(np.mean(flag[~large])) if len(ok) else None)
        cat = np.array([r["category"] for r in rows])
        ind = cat == "in_domain"
        if ind.any() and (~ind).any():
            # calibrated on in-domain frames alone: flags 5 % of held-out structures of the
            # kinds the potential was trained on, whatever lies outside
            t95 = float(np.quantile(unc[ind], 0.95))
            out.update(t_in95_eV_A=t95,
                       caught_ood_at_t_in95=float(np.mean(unc[~ind & large] >= t95))
                       if (~ind & large).any() else None,
                       flagged_ood_at_t_in95=float(np.mean(unc[~ind] >= t95)),
                       caught_at_t_in95={c: float(np.mean(unc[(cat == c) & large] >= t95))
                                         for c in cats if c != "in_domain"
                                         and ((cat == c) & large).any()})
    return out


def held_out_category_calibration(frames: list[dict]) -> dict:
    """Per category c: t = the threshold catching CATCH of the large-error frames of the other
    categories; caught / false alarms of c at t. From the stored per-frame maxima, so that
    older evaluation files give it too."""
    cat = np.array([f["category"] for f in frames])
    unc = np.array([f["max_fstd_eV_A"] for f in frames])
    large = np.array([f["max_df_eV_A"] for f in frames]) > LARGE_ERROR
    rows, caught, n_large, alarms, n_ok = {}, 0, 0, 0, 0
    for c in [c for c in ORDER if c in set(cat)] + sorted(set(cat) - set(ORDER)):
        t = t_catch(unc[large & (cat != c)])
        lg, ok = unc[large & (cat == c)], unc[~large & (cat == c)]
        rows[c] = {"threshold_eV_A": t, "large": int(len(lg)), "caught": int((lg >= t).sum()),
                   "ok": int(len(ok)), "false_alarms": int((ok >= t).sum())}
        caught, n_large = caught + rows[c]["caught"], n_large + len(lg)
        alarms, n_ok = alarms + rows[c]["false_alarms"], n_ok + len(ok)
    return {"categories": rows, "caught": caught / n_large if n_large else None,
            "false_alarms": alarms / n_ok if n_ok else None}


def print_held_out(h: dict) -> None:
    print("\nheld-out-category calibration (threshold from the other categories):")
    for c, r in h["categories"].items():
        print(f"  {c:15s} threshold {r['threshold_eV_A']:.4f} eV/Å: caught {r['caught']}/"
              f"{r['large']}, false alarms {r['false_alarms']}/{r['ok']}")
    print(f"  all: caught {_fmt(h['caught'], '.0%')}, "
          f"false alarms {_fmt(h['false_alarms'], '.0%')}")


def _fmt(v, spec=".1f"):
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def print_table(summary: dict, name: str) -> None:
    table = summary["table"]
    committee = "spearman_atoms" in table["all"]
    head = ["category", "frames", "F MAE meV/Å", "E MAE meV/atom", "max ‖ΔF‖ eV/Å",
            f">{LARGE_ERROR}", "Spearman ‖F‖", "AUC ‖F‖"]
    if committee:
        thr = f"{summary['threshold_eV_A']:g}" + ("/el" if summary.get("threshold_per_element")
                                                    else "")
        head += ["Spearman atoms", "Spearman frames", f"caught@{thr}", f"flagged@{thr}",
                 "caught@t80", "flagged@t80", "AUC"]
    print(f"\n{name}\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for cat, r in table.items():
        cells = [cat, str(r["frames"]), _fmt(r["force_mae_meV_A"]),
                 _fmt(r["energy_mae_meV_atom"]), _fmt(r["max_force_error_eV_A"], ".2f"),
                 str(r["large"]), _fmt(r["force_spearman_atoms"], ".2f"),
                 _fmt(r["force_auc"], ".2f")]
        if committee:
            cells += [_fmt(r["spearman_atoms"], ".2f"), _fmt(r["spearman_frames"], ".2f"),
                      _fmt(r["caught_at_threshold"], ".0%"), _fmt(r["flagged_at_threshold"], ".0%"),
                      _fmt(r["caught_at_t80"], ".0%"), _fmt(r["flagged_at_t80"], ".0%"),
                      _fmt(r["auc"], ".2f")]
        print("| " + " | ".join(cells) + " |")
    if committee:
        print(f"\nt80 (catches {CATCH:.0%} of frames with |ΔF| > {LARGE_ERROR} eV/Å): "
              f"{_fmt(summary['t80_eV_A'], '.4f')} eV/Å; false alarms there (frames without a "
              f"large error that are flagged): {_fmt(summary['false_alarms_at_t80'], '.0%')}; at "
              f"{summary['threshold_eV_A']:g} eV/Å: "
              f"{_fmt(summary['false_alarms_at_threshold'], '.0%')}")
        if "t_in95_eV_A" in summary:
            print(f"t_in95 (flags 5% of the in-domain frames): {summary['t_in95_eV_A']:.4f} eV/Å; "
                  f"out-of-domain frames with |ΔF| > {LARGE_ERROR} eV/Å caught there: "
                  f"{_fmt(summary['caught_ood_at_t_in95'], '.0%')} ("
                  + ", ".join(f"{c} {v:.0%}" for c, v in summary["caught_at_t_in95"].items())
                  + f"); out-of-domain frames flagged: "
                  f"{_fmt(summary['flagged_ood_at_t_in95'], '.0%')}")


def compare(paths: list[str]) -> None:
    """One line per evaluation file: errors out of domain and calibration over all frames."""
    print("| evaluation | F MAE ood | E MAE ood | Spearman atoms all / ood | Spearman frames "
          "all | caught@thr | flagged@thr | t80 eV/Å | flagged@t80 | false alarms@t80 | "
          "AUC all / ood | AUC of ‖F‖ all / ood | held-out category: caught / false alarms "
          "|\n|" + "---|" * 13)
    for path in paths:
        s = json.loads(Path(path).read_text())
        a, o = s["table"]["all"], s["table"]["ood"]
        c = "spearman_atoms" in a
        cells = [s["name"], _fmt(o["force_mae_meV_A"]), _fmt(o["energy_mae_meV_atom"])]
        if c:
            cells += [f"{_fmt(a['spearman_atoms'], '.2f')} / {_fmt(o['spearman_atoms'], '.2f')}",
                      _fmt(a["spearman_frames"], ".2f"),
                      f"{_fmt(a['caught_at_threshold'], '.0%')} at {s['threshold_eV_A']:g}",
                      _fmt(a["flagged_at_threshold"], ".0%"), _fmt(s["t80_eV_A"], ".4f"),
                      _fmt(a["flagged_at_t80"], ".0%"), _fmt(s["false_alarms_at_t80"], ".0%"),
                      f"{_fmt(a['auc'], '.2f')} / {_fmt(o['auc'], '.2f')}"]
        else:
            cells += ["-"] * 8
        cells.append(f"{_fmt(a['force_auc'], '.2f')} / {_fmt(o['force_auc'], '.2f')}")
        if c and s.get("frames"):
            h = held_out_category_calibration(s["frames"])
            cells.append(f"{_fmt(h['caught'], '.0%')} / {_fmt(h['false_alarms'], '.0%')}")
        else:
            cells.append("-")
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help="a shipped name or model/committee file; several "
                   "make a committee of them")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="print earlier evaluations side by side instead")
    p.add_argument("--data", default=str(REPO / "data/ood-benchmark/frames.extxyz.xz"))
    p.add_argument("--in-domain", default=str(REPO / "data/catalysis-v1/frames.extxyz.xz"),
                   help="file whose split_hint=test_heldout frames form the in_domain row "
                        "('none' to leave it out)")
    p.add_argument("--threshold", type=float, default=None,
                   help="flag threshold on the largest forces_std, eV/Å (default: the one "
                        "stored in a committee file, else "
                        "geomformer_md.committee.DEFAULT_FORCE_STD_THRESHOLD)")
    p.add_argument("--name", help="name in the table and the output file (default: the model)")
    p.add_argument("--out", help="JSON output (default data/ood-benchmark/eval-NAME.json)")
    args = p.parse_args(argv)
    if args.compare:
        compare(args.compare)
        return 0
    if not args.models:
        p.error("give a model (a shipped name or a file), several for a committee, or --compare")
    import torch

    from geomformer_md.committee import as_committee, resolve_uncertainty_threshold
    from geomformer_md.io.registry import load_potential

    torch.set_num_threads(1)
    if args.threshold is not None and not args.threshold > 0:
        p.error(f"--threshold must be > 0 eV/Å, got {args.threshold}")
    for path in (args.data, args.in_domain):
        if path != "none" and not Path(path).is_file():
            p.error(f"file not found: {path}")
    try:
        model = (as_committee(args.models, {"members": args.models}) if len(args.models) > 1
                 else load_potential(args.models[0]))
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    threshold = resolve_uncertainty_threshold(
        model, "auto" if args.threshold is None else args.threshold)
    name = args.name or Path(args.models[0]).stem
    frames = load_frames(Path(args.data),
                         None if args.in_domain == "none" else Path(args.in_domain))
    print(f"{name}: {len(frames)} frames, float64")
    t0 = time.time()
    rows = evaluate(model, frames)
    summary = summarise(rows, threshold)
    print_table(summary, name)
    summary.update(name=name, models=args.models, dtype="float64", data=args.data,
                   in_domain=args.in_domain, seconds=round(time.time() - t0),
                   frames=[{"category": r["category"], "config_id": r["config_id"],
                            "mode": r["mode"], "n": r["n"], "de_eV": round(r["de"], 6),
                            "max_df_eV_A": round(float(np.linalg.norm(r["df"], axis=1).max()), 5),
                            **({"max_fstd_eV_A": round(float(r["fstd"].max()), 6)}
                               if r["fstd"] is not None else {})} for r in rows])
    if rows[0]["fstd"] is not None:
        summary["held_out_category"] = held_out_category_calibration(summary["frames"])
        print_held_out(summary["held_out_category"])
    out = Path(args.out or REPO / "data/ood-benchmark" / f"eval-{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
