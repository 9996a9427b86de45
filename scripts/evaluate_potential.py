"""Evaluate a trained catalysis potential against its labeller: test-set errors by
category and adsorption energies on the reference cases (held-out and in-pool).

    python scripts/evaluate_potential.py potentials/geomformer-catalysis-v11.pt --out eval.json
    python scripts/evaluate_potential.py runs/catalysis-v0/model.pt \
        --data data/catalysis-v0 --config research/configs/catalysis-v0.yaml \
        --out runs/catalysis-v0/eval.json
    python scripts/evaluate_potential.py runs/mace-v1/mace.model --mace ...   # a MACE model

Adsorption energies are redone with our potential from the labeller's own starting
structures (same slab, site, height; bottom two layers fixed; BFGS, fmax 0.05), with
slab and gas references relaxed by our potential too, so both sides follow one recipe.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from ase.build import fcc100, fcc111
from ase.constraints import FixAtoms
from ase.io import read

from geomformer_md import GeoMFormerCalculator
from geomformer_md.simulate.relax import bottom_layer_indices, relax
from geomformer_md.train.config import load_train_config
from geomformer_md.train.data import labels_of, read_frames, split_indices


def test_errors(calc, frames, cfg) -> dict:
    """MAE per category on the trainer's own test split (same seed and grouping)."""
    d = cfg.data
    _, _, test = split_indices(frames, d)
    groups = defaultdict(lambda: {"e": [], "f": []})
    for k in test:
        a = frames[k]
        e_ref, f_ref, _ = labels_of(a, f"frame {k}")
        if np.abs(f_ref).max() > d.max_force:
            continue
        b = a.copy()
        b.calc = calc
        de = abs(b.get_potential_energy() - e_ref) / len(a)
        df = np.abs(b.get_forces() - f_ref).ravel()
        held = str(a.info.get(d.holdout_key)) == str(d.holdout_value)
        for key in ("all", "heldout" if held else "in-pool", f"kind:{a.info.get('kind')}",
                    f"metal:{a.info.get('metal')}", f"facet:{a.info.get('facet')}"):
            groups[key]["e"].append(de)
            groups[key]["f"].extend(df)
    return {
        key: {"n_frames": len(v["e"]), "energy_mae_meV_atom": 1000 * float(np.mean(v["e"])),
              "forces_mae_meV_A": 1000 * float(np.mean(v["f"]))}
        for key, v in sorted(groups.items())
    }


def _fixed(atoms, n_layers=2):
    atoms = atoms.copy()
    atoms.set_constraint(FixAtoms(indices=bottom_layer_indices(atoms, n_layers)))
    return atoms


def _relaxed_energy(atoms, calc):
    out, res = relax(atoms, calculator=calc, fmax=0.05, steps=300, optimizer="BFGS", progress=False)
    return res.energy, res.converged


def adsorption(calc, data_dir: Path) -> list[dict]:
    ref = json.loads((data_dir / "adsorption_reference.json").read_text())
    gas = {}
    for name, det in ref["gas_details"].items():
        from ase import Atoms

        mol = Atoms(det["symbols"], positions=det["positions"], cell=[12, 12, 12], pbc=False)
        gas[name] = _relaxed_energy(mol, calc)[0]
    slabs = {}
    rows = []
    for case in ref["cases"]:
        if case.get("status") != "done":
            continue
        r = case["recipe"]
        key = (r["metal"], r["facet"])
        if key not in slabs:
            build = {"111": fcc111, "100": fcc100}[r["facet"]]
            slab = build(r["metal"], tuple(r["size"]), a=r["a"], vacuum=r["vacuum_each_side"])
            slabs[key] = _relaxed_energy(_fixed(slab), calc)[0]
        frames = read(data_dir / "reference" / f"{case['case']}.extxyz", index=":")
        e_ads_struct, conv = _relaxed_energy(_fixed(frames[0]), calc)
        terms = re.findall(r"([-+]?[\d.]+)\*E\((\w+)\)", case["gas_reference"])
        e_gas = sum(float(c) * gas[m] for c, m in terms)
        ours = e_ads_struct - slabs[key] - e_gas
        # Single point on the labeller's relaxed geometry: energy error without relaxation.
        sp = frames[1].copy()
        sp.calc = calc
        rows.append({
            "case": case["case"], "heldout": case["heldout"], "labeller_E_ads": case["E_ads"],
            "ours_E_ads": ours, "diff": ours - case["E_ads"], "converged": conv,
            "sp_energy_error_eV": sp.get_potential_energy() - case["E_slab_ads"],
            # diff = error of E(slab+X) - error of E(slab) - error of E_gas_ref (all relaxed)
            "parts_eV": {"slab_ads": e_ads_struct - case["E_slab_ads"],
                         "slab": slabs[key] - case["E_slab"],
                         "gas_ref": e_gas - case["E_gas_ref"]},
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    # defaults: the data and split every shipped potential since v4 is tested on (v11's recipe)
    p.add_argument("--data", default="data/catalysis-v1",
                   help="data set folder with adsorption_reference.json (default: %(default)s)")
    p.add_argument("--config", default="research/configs/catalysis-v11.yaml",
                   help="training config whose split gives the test frames (default: %(default)s)")
    p.add_argument("--frames", default=None,
                   help="labelled frames to split (default: the config's train_file); the pool "
                        "part must equal the training file's for the test split to be the "
                        "trainer's")
    p.add_argument("--out", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mace", action="store_true",
                   help="MODEL is a mace-torch model file (research/mace_compare); evaluated "
                        "the same way")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.mace:
        from mace.calculators import MACECalculator

        calc = MACECalculator(model_paths=a.model, device="cpu", default_dtype="float64")
    else:
        calc = GeoMFormerCalculator(a.model, dtype="float64")
    cfg = load_train_config(a.config)
    frames = read_frames(a.frames or cfg.data.train_file)
    result = {"test": test_errors(calc, frames, cfg), "adsorption": adsorption(calc, Path(a.data))}
    for key, v in result["test"].items():
        print(f"{key:24s} n={v['n_frames']:4d}  E {v['energy_mae_meV_atom']:7.2f} meV/atom  "
              f"F {v['forces_mae_meV_A']:7.1f} meV/Å")
    for r in result["adsorption"]:
        where = "held-out" if r["heldout"] else "in-pool "
        print(f"{r['case']:28s} {where:8s} labeller {r['labeller_E_ads']:7.3f}  "
              f"ours {r['ours_E_ads']:7.3f}  diff {r['diff']:+.3f} eV  "
              f"(single point on labeller geometry: {r['sp_energy_error_eV']:+.3f} eV)")
        parts = r["parts_eV"]
        print(f"{'':28s} error parts: slab+X {parts['slab_ads']:+.3f}, slab {parts['slab']:+.3f}, "
              f"gas reference {parts['gas_ref']:+.3f} eV")
    diffs = np.array([abs(r["diff"]) for r in result["adsorption"]])
    if len(diffs):
        print(f"adsorption: mean |diff| {diffs.mean():.3f} eV, max {diffs.max():.3f} eV, "
              f"{int((diffs <= 0.10).sum())} of {len(diffs)} within 0.10 eV")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
