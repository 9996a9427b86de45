"""Adsorption energies of a model at the labeller's relaxed geometries (single points).

`scripts/evaluate_adsorption.py` relaxes both models from the same start, so its errors mix
two things: the energy difference at a given geometry, and where the relaxations end. This
script takes the first alone: each case's error is the model's E(relaxed) - E(host) - refs
minus the labeller's, every structure the labeller's relaxed one (data/adsorption-benchmark),
per adsorbate. "slab only" leaves the gas references out (as if the model had them exact):
what the model gets wrong about binding itself. Cases the labeller flags are left out.
Also, per category, the distinct relaxed clean hosts: the model's energy error per atom
(mean, signed, and MAE) and its force MAE there, where the labeller's forces are ~0.

    OMP_NUM_THREADS=1 .venv/bin/python research/scripts/adsorption_at_labeller_geometry.py \\
        runs/distill-catalysis/iter_013/member_0/model.pt geomformer-catalysis-v11
"""

from __future__ import annotations

import argparse
import json
import lzma
from collections import defaultdict
from pathlib import Path

import numpy as np
from ase.io import read

from geomformer_md import GeoMFormerCalculator
from geomformer_md.io.files import write_json

DATA = Path(__file__).resolve().parents[2] / "data" / "adsorption-benchmark"


def errors(model: str, data: Path = DATA) -> dict:
    meta = {c["case"]["id"]: c for c in json.loads((data / "cases.json").read_text())["cases"]}
    with lzma.open(data / "cases.extxyz.xz", "rt") as fh:
        frames = read(fh, index=":", format="extxyz")
    calc = GeoMFormerCalculator(model, dtype="float64", uncertainty_threshold=None)

    def off(atoms) -> tuple[float, float]:  # model - labeller: energy (eV), force MAE (eV/Å)
        work = atoms.copy()
        work.calc = calc
        return (work.get_potential_energy() - atoms.get_potential_energy(),
                float(np.abs(work.get_forces() - atoms.get_forces()).mean()))

    by_case: dict[str, dict] = defaultdict(dict)
    gas = {}
    for a in frames:
        if a.info.get("role") == "gas":
            gas[a.info["molecule"]] = off(a)[0]
        else:
            by_case[a.info["case"]][a.info["role"]] = a
    rows: dict[str, list] = defaultdict(list)
    hosts: dict[str, list] = defaultdict(list)
    host_off: dict[str, float] = {}  # each distinct host once: cases share them
    for cid, roles in by_case.items():
        case, lab = meta[cid]["case"], meta[cid]["labeller"]
        key = lab["host_key"]  # every case has one (scripts/adsorption_benchmark.py)
        if "host" in roles and key not in host_off:
            de, df = off(roles["host"])
            host_off[key] = de
            for group in (case["category"], "all"):
                hosts[group].append((de / len(roles["host"]), df))
        if lab["flags"] or "relaxed" not in roles:
            continue
        n = len(case["adsorbates"])
        ref: dict[str, float] = defaultdict(float)
        for ads in case["adsorbates"]:
            for g, c in ads["reference"].items():
                ref[g] += c
        slab = (off(roles["relaxed"])[0] - host_off[key]) / n
        total = slab - sum(c * gas[g] for g, c in ref.items()) / n
        for group in (case["category"], "held-out" if case["heldout"] else "not held-out", "all"):
            rows[group].append((total, slab))
    table = {}
    for key, v in rows.items():
        v = np.abs(np.array(v))
        table[key] = {"n": len(v), "within_0.10": float(np.mean(v[:, 0] <= 0.10)),
                      "mae": float(v[:, 0].mean()), "mae_slab_only": float(v[:, 1].mean()),
                      "within_0.10_slab_only": float(np.mean(v[:, 1] <= 0.10))}
    host_table = {key: {"n": len(v), "E_mean_meV_atom": 1000 * float(np.mean([e for e, _ in v])),
                        "E_mae_meV_atom": 1000 * float(np.mean([abs(e) for e, _ in v])),
                        "F_mae_meV_A": 1000 * float(np.mean([f for _, f in v]))}
                  for key, v in hosts.items()}
    return {"model": model, "gas_error_eV": gas, "table": table, "relaxed_hosts": host_table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", help="JSON with every model's table")
    args = ap.parse_args()
    results = [errors(m) for m in args.models]
    for r in results:
        print(f"\n{r['model']}; gas molecules, model - labeller (eV): "
              + ", ".join(f"{g} {e:+.3f}" for g, e in sorted(r["gas_error_eV"].items())))
        print("| category | n | within 0.10 eV | MAE (eV) | slab only: within | slab only: MAE |")
        print("|---|---:|---:|---:|---:|---:|")
        for key, t in r["table"].items():
            print(f"| {key} | {t['n']} | {t['within_0.10']:.0%} | {t['mae']:.3f} | "
                  f"{t['within_0.10_slab_only']:.0%} | {t['mae_slab_only']:.3f} |")
        print("\n| relaxed clean hosts | n | E error, mean (meV/atom) | E MAE | F MAE (meV/Å) |")
        print("|---|---:|---:|---:|---:|")
        for key, t in r["relaxed_hosts"].items():
            print(f"| {key} | {t['n']} | {t['E_mean_meV_atom']:+.1f} | {t['E_mae_meV_atom']:.1f} "
                  f"| {t['F_mae_meV_A']:.1f} |")
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
