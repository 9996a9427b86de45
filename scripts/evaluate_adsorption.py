"""Adsorption energies of a potential or committee on the adsorption benchmark, against
its labeller (SevenNet-0), per category and for the held-out categories (float64).

    .venv/bin/python scripts/evaluate_adsorption.py geomformer-catalysis-v11
    .venv/bin/python scripts/evaluate_adsorption.py geomformer-catalysis-v11-committee
    .venv/bin/python scripts/evaluate_adsorption.py runs/my-model.pt --name my-model

The model relaxes the same starts as the labeller did (scripts/adsorption_benchmark.py:
the clean host, the host with its adsorbates, the gas references; BFGS to 0.05 eV/Å, at
most 300 steps) and its adsorption energies are computed the same way. Columns:

    n             cases
    lab flagged   cases whose labeller end is unphysical or unconverged: no reference
                  value, left out of every column below (counted, never averaged)
    flagged       cases the model ends unphysical (two atoms < 0.7 Å apart, an adsorbate
                  desorbed, dissociated or bonded to another; "restructured": a metal atom
                  > 1 Å from where the model relaxed the clean host, where the labeller's
                  moved less), or does not converge (host or adsorbate): misses in "within"
    within 0.10   fraction of the cases with a labeller value where the model is not
                  flagged and |E_ads(model) - E_ads(labeller)| <= 0.10 eV
    MAE, max      of |ΔE_ads| (eV) over the cases neither flags
    sites differ  cases (neither flagged) whose adsorbates end at other sites
                  (geomformer_md.simulate.sites.site_by_coordination) than the labeller's
    uncertain     a committee: cases whose relaxations passed its uncertainty threshold;
                  caught: of the bad cases (flagged or |ΔE_ads| > 0.10 eV), how many it
                  flags; false alarms: flagged cases that were fine

Resumable: each case writes ``--work/<id>.json`` atomically and is skipped when it exists.
Writes the table, the site counts and every case as JSON (default
data/adsorption-benchmark/eval-NAME.json) for the model card.
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from adsorption_scoring import (  # noqa: E402
    GEOMETRY_FLAGS,
    RELAX,
    Result,
    assess,
    gas_molecules,
    host_key,
    restructured,
    score,
)
from ase.io import read  # noqa: E402

from geomformer_md.io.files import write_frames, write_text  # noqa: E402

WITHIN = 0.10  # eV
ORDER = ["alloy_surface", "facet", "defect", "nanoparticle", "coverage", "intermediate"]


def load_benchmark(path: Path, seed: int = 0) -> tuple[list[dict], dict]:
    """The labelled cases -> ([{case, start, labeller, host, relaxed}], gas energies), from the
    assembled data (``cases.json`` + ``cases.extxyz.xz``) or from a labelling work folder
    (``cases/``, ``hosts/``, ``gas/``: the cases labelled so far, their starts rebuilt
    from ``seed``)."""
    path = Path(path)
    if (path / "cases.json").exists():
        meta = json.loads((path / "cases.json").read_text())
        with lzma.open(path / "cases.extxyz.xz", "rt") as fh:
            frames = read(fh, index=":", format="extxyz")
        by = {(a.info["case"], a.info["role"]): a for a in frames}
        gas = {n: g["energy"] for n, g in meta["gas"].items()}
        out = [{**r, **{role: by[r["case"]["id"], role] for role in ("start", "host", "relaxed")}}
               for r in meta["cases"]]
        return out, gas
    if not (path / "cases").is_dir():
        raise SystemExit(f"--data {path}: neither cases.json nor a cases/ folder")
    from adsorption_benchmark import build_cases

    records = {p.stem: json.loads(p.read_text()) for p in (path / "cases").glob("*.json")}
    out = []
    for case, start in build_cases(seed):
        rec = records.get(case["id"])
        if rec is not None:
            out.append({**rec, "start": start,
                        "relaxed": read(path / "cases" / f"{case['id']}.extxyz"),
                        "host": read(path / "hosts" / f"{rec['labeller']['host_key']}.extxyz")})
    gas = {p.stem: json.loads(p.read_text())["energy"] for p in (path / "gas").glob("*.json")}
    return out, gas


def reassess(stored: dict, item: dict, relaxed, host) -> dict:
    """A stored result with its sites and geometric flags assessed again from its relaxed
    structures, so both sides, and results stored by an older run, are judged by the same,
    current rules."""
    out = dict(stored)
    geo = assess(item["case"], item["start"], relaxed, host)
    kept = [f for f in out["flags"] if f not in GEOMETRY_FLAGS]
    out.update(sites=geo["sites"], min_distance=geo["min_distance"],
               host_displacement=geo["host_displacement"], flags=sorted({*kept, *geo["flags"]}))
    return out


class ModelRunner:
    """Relaxes the benchmark's starts with one potential (relax_many, float64), the hosts
    once each, storing every finished case in ``work``."""

    def __init__(self, model, work: Path, batch: int = 8, log=print) -> None:
        from geomformer_md import GeoMFormerCalculator
        from geomformer_md.simulate.batch import BatchEvaluator

        self.model, self.work, self.batch, self.log = model, Path(work), batch, log
        (self.work / "hosts").mkdir(parents=True, exist_ok=True)
        self.calc = GeoMFormerCalculator(model, dtype="float64")
        self.evaluator = BatchEvaluator(model, dtype="float64")
        self.relaxations = 0

    def gas(self, names: list[str]) -> dict[str, float]:
        from geomformer_md.simulate.adsorption import relax_gas

        path = self.work / "gas.json"
        have = json.loads(path.read_text()) if path.exists() else {}
        for name in names:
            if name not in have:
                _, res = relax_gas(name, self.calc, fmax=RELAX["fmax"], steps=RELAX["steps"],
                                   optimizer=RELAX["optimizer"], progress=False)
                self.relaxations += 1
                have[name] = {"energy": float(res.energy), "converged": bool(res.converged)}
                write_text(path, json.dumps(have))
        return {n: have[n]["energy"] for n in names}

    def _relax(self, structures: list) -> list:
        from geomformer_md.simulate.batch_relax import relax_many

        self.relaxations += len(structures)
        return relax_many(structures, self.evaluator, fmax=RELAX["fmax"], steps=RELAX["steps"],
                          optimizer=RELAX["optimizer"], progress=False)

    def run(self, items: list[dict], gas: dict, limit: int | None = None) -> int:
        """Relax and score the cases not done yet (at most ``limit``); the number done."""
        todo = [it for it in items if not (self.work / f"{it['case']['id']}.json").exists()]
        todo = todo[:limit] if limit is not None else todo
        t0 = time.time()
        for k in range(0, len(todo), self.batch):
            chunk = todo[k:k + self.batch]
            hosts = {}
            for it in chunk:
                clean = it["start"][:it["case"]["n_host"]]
                key = host_key(clean)
                if not (self.work / "hosts" / f"{key}.json").exists():
                    hosts[key] = clean
            ends = self._relax(list(hosts.values()) + [it["start"] for it in chunk])
            for key, (relaxed, res) in zip(hosts, ends[:len(hosts)], strict=False):
                write_frames(self.work / "hosts" / f"{key}.extxyz", [relaxed])
                write_text(self.work / "hosts" / f"{key}.json", json.dumps(_record(res)))
            for it, full in zip(chunk, ends[len(hosts):], strict=True):
                key = host_key(it["start"][:it["case"]["n_host"]])
                clean = (read(self.work / "hosts" / f"{key}.extxyz"),
                         Result(json.loads((self.work / "hosts" / f"{key}.json").read_text())))
                result = score(it["case"], it["start"], clean, full, gas)
                result["host_key"] = key  # a start read back from a file may hash otherwise
                write_frames(self.work / f"{it['case']['id']}.extxyz", [full[0]])
                write_text(self.work / f"{it['case']['id']}.json", json.dumps(result))
            self.log(f"  {min(k + self.batch, len(todo))}/{len(todo)} cases, "
                     f"{time.time() - t0:.0f} s")
        return len(todo)


def _record(res) -> dict:
    return {"energy": float(res.energy), "converged": bool(res.converged),
            "steps": int(res.steps), "fmax": float(res.fmax),
            "max_force_std": None if not np.isfinite(res.max_force_std)
            else float(res.max_force_std), "uncertain": bool(res.uncertain)}


def compare(items: list[dict], work: Path) -> list[dict]:
    """Per case: category, held out, both results and the error."""
    rows = []
    work = Path(work)
    for it in items:
        lab = reassess(it["labeller"], it, it["relaxed"], it["host"])
        stored = json.loads((work / f"{it['case']['id']}.json").read_text())
        key = stored.get("host_key") or host_key(it["start"][:it["case"]["n_host"]])
        model = reassess(stored, it, read(work / f"{it['case']['id']}.extxyz"),
                         read(work / "hosts" / f"{key}.extxyz"))
        if restructured(lab, model):
            model["flags"] = sorted({*model["flags"], "restructured"})
        err = (model["e_ads"] - lab["e_ads"]
               if not lab["flags"] and not model["flags"] else None)
        rows.append({"id": it["case"]["id"], "category": it["case"]["category"],
                     "heldout": bool(it["case"]["heldout"]),
                     "adsorbate": it["case"]["tags"]["adsorbate"],
                     "elements": it["case"]["tags"]["elements"],
                     "e_ads_labeller": lab["e_ads"], "e_ads_model": model["e_ads"],
                     "error": err, "sites_labeller": lab["sites"], "sites_model": model["sites"],
                     "flags_labeller": lab["flags"], "flags_model": model["flags"],
                     "host_displacement_labeller": lab["host_displacement"],
                     "host_displacement_model": model["host_displacement"],
                     "uncertain": model["uncertain"],
                     "max_force_std": max((x for x in (model["max_force_std"],
                                                       model["host_max_force_std"])
                                           if x is not None), default=None)})
    return rows


def summarise(rows: list[dict], committee: bool) -> dict:
    groups = defaultdict(list)
    for r in rows:
        groups[r["category"]].append(r)
        groups["held-out" if r["heldout"] else "not held-out"].append(r)
        groups["all"].append(r)
    names = [c for c in ORDER if c in groups] + sorted(
        set(groups) - set(ORDER) - {"held-out", "not held-out", "all"})
    table = {}
    for name in [*names, "not held-out", "held-out", "all"]:
        if name not in groups:
            continue
        rs = groups[name]
        ref = [r for r in rs if not r["flags_labeller"]]
        both = [r for r in ref if r["error"] is not None]
        err = np.abs([r["error"] for r in both])
        bad = [r for r in ref if r["error"] is None or abs(r["error"]) > WITHIN]
        row = {
            "n": len(rs), "labeller_flagged": len(rs) - len(ref),
            "model_flagged": len(ref) - len(both),
            "within": float(np.mean([r["error"] is not None and abs(r["error"]) <= WITHIN
                                     for r in ref])) if ref else None,
            "mae": float(err.mean()) if len(err) else None,
            "max": float(err.max()) if len(err) else None,
            "sites_differ": sum(r["sites_labeller"] != r["sites_model"] for r in both),
            "flags_model": dict(Counter(f for r in ref for f in r["flags_model"])),
            "flags_labeller": dict(Counter(f for r in rs for f in r["flags_labeller"])),
            "sites_labeller": dict(Counter(s for r in both for s in r["sites_labeller"])),
            "sites_model": dict(Counter(s for r in both for s in r["sites_model"])),
        }
        if committee:
            unc = [r for r in ref if r["uncertain"]]
            row.update(uncertain=len(unc), bad=len(bad),
                       caught=sum(r["uncertain"] for r in bad),
                       false_alarms=sum(r not in bad for r in unc))
        table[name] = row
    a = table["all"]
    return {"table": table, "within_eV": WITHIN,
            "acceptance": {"cases_min_100": a["n"] - a["labeller_flagged"] >= 100,
                           "within_min_80pct": a["within"] is not None and a["within"] >= 0.8,
                           "mae_max_0.10": a["mae"] is not None and a["mae"] <= WITHIN}}


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def _sites(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def print_table(summary: dict, name: str, committee: bool) -> None:
    head = ["category", "n", "lab flagged", "flagged", f"within {WITHIN:.2f} eV", "MAE eV",
            "max eV", "sites differ"] + (["uncertain", "caught / bad", "false alarms"]
                                         if committee else [])
    print(f"\n{name}\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for cat, r in summary["table"].items():
        cells = [cat, str(r["n"]), str(r["labeller_flagged"]), str(r["model_flagged"]),
                 _fmt(r["within"], ".0%"), _fmt(r["mae"]), _fmt(r["max"]),
                 str(r["sites_differ"])]
        if committee:
            cells += [str(r["uncertain"]), f"{r['caught']} / {r['bad']}", str(r["false_alarms"])]
        print("| " + " | ".join(cells) + " |")
    a = summary["table"]["all"]
    print(f"\nflags (model): {a['flags_model']}; flags (labeller): {a['flags_labeller']}")
    print("\n| category | sites, labeller | sites, model |\n|---|---|---|")
    for cat, r in summary["table"].items():
        print(f"| {cat} | {_sites(r['sites_labeller'])} | {_sites(r['sites_model'])} |")
    ok = summary["acceptance"]
    print("issue 24 acceptance (>= 100 cases, >= 80 % within 0.10 eV, MAE <= 0.10 eV): "
          + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in ok.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a shipped name, a model file or a committee file")
    p.add_argument("--data", default=str(REPO / "data/adsorption-benchmark"),
                   help="the benchmark (cases.json + cases.extxyz.xz) or a labelling work folder")
    p.add_argument("--name", help="name in the table and the output (default: the model)")
    p.add_argument("--work", help="per-case results, resumable (default runs/adsorption-eval/NAME)")
    p.add_argument("--out", help="JSON output (default data/adsorption-benchmark/eval-NAME.json)")
    p.add_argument("--seed", type=int, default=0,
                   help="with a work folder as --data: the seed its cases were built with")
    p.add_argument("--limit", type=int, help="relax at most this many new cases now, then "
                   "summarise the cases done so far (marked partial)")
    p.add_argument("--batch", type=int, default=8, help="cases relaxed together (relax_many)")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error(f"--batch must be >= 1, got {args.batch}")
    if args.limit is not None and args.limit < 0:
        p.error(f"--limit must be >= 0, got {args.limit}")
    if not Path(args.data).exists():
        p.error(f"--data: {args.data} not found")
    import warnings

    import torch

    from geomformer_md.calculator import UncertaintyWarning
    from geomformer_md.io.registry import load_potential

    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UncertaintyWarning)  # counted per case in the table
    try:
        model = load_potential(args.model)
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    name = args.name or Path(args.model).stem
    work = Path(args.work or REPO / "runs" / "adsorption-eval" / name)
    items, lab_gas = load_benchmark(Path(args.data), args.seed)
    print(f"{name}: {len(items)} cases, float64")
    t0 = time.time()
    runner = ModelRunner(model, work, args.batch)
    gas = runner.gas(gas_molecules([it["case"] for it in items]))
    runner.run(items, gas, args.limit)
    done = [it for it in items if (work / f"{it['case']['id']}.json").exists()]
    if len(done) < len(items):
        print(f"PARTIAL: {len(done)} of {len(items)} cases evaluated; the same command goes on")
    committee = runner.evaluator.is_committee
    if not done:
        print("no case evaluated yet")
        return 1
    rows = compare(done, work)
    summary = summarise(rows, committee)
    print_table(summary, name, committee)
    summary.update(name=name, model=args.model, dtype="float64", data=str(args.data),
                   relax=RELAX, gas_model=gas, gas_labeller=lab_gas,
                   seconds=round(time.time() - t0), cases_total=len(items),
                   partial=len(done) < len(items), cases=rows)
    out = Path(args.out or REPO / "data/adsorption-benchmark" / f"eval-{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps(summary, indent=1) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
