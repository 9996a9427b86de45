"""Short-range behaviour and bulk checks of potentials, side by side.

    python scripts/short_range_check.py geomformer-catalysis-v11 runs/catalysis-v12/model.pt \
        --out short_range.json

For each model:

1. The repulsive wall of every element pair (``geomformer_md.testing.short_range_wall``):
   below 0.75 R (R: sum of covalent radii) the dimer energy must rise monotonically as r falls,
   with a repulsive force everywhere down to 0.15 Å, and E(min(0.5 Å, R/2)) must be more than
   3 eV above E(R).
2. Atoms started far too close to a surface: O 0.4 Å above a top atom and above an fcc hollow of
   Pt(111), H 0.3 Å above a Pt top atom, a Pt adatom 0.8 Å above a top atom, each relaxed with
   ``geomformer_md.relax`` (FIRE, fmax 0.05 eV/Å, 500 steps; 3x3x4 slab at the labeller's
   lattice constant, bottom two layers fixed). Printed: the final distance to the nearest Pt,
   converged or not, and the starting max force.
3. Lattice constants of the six metals (Birch-Murnaghan on the primitive cell, 2x9 points, the
   labeller's recipe in scripts/datagen) against the labeller's (data/catalysis-v1), and the
   on-site force constants of perfect Cu and Pt (the model cards' lattice check).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from ase.build import bulk, fcc111
from ase.data import reference_states
from ase.eos import EquationOfState

from geomformer_md import GeoMFormerCalculator, relax
from geomformer_md.simulate.relax import bottom_layer_indices
from geomformer_md.testing import lattice_force_constants, short_range_wall

ROOT = Path(__file__).resolve().parent.parent
METALS = ["Cu", "Ag", "Au", "Ni", "Pd", "Pt"]
# (name, pushed atom, site, start height above the top layer, Å)
PUSHES = [("O top 0.4", "O", "ontop", 0.4), ("O fcc 0.4", "O", "fcc", 0.4),
          ("H top 0.3", "H", "ontop", 0.3), ("Pt top 0.8", "Pt", "ontop", 0.8)]


def walls(model) -> dict:
    rows = short_range_wall(model)
    ok = [r for r in rows if r["monotonic"] and r["min_force"] > 0 and r["rise"] > 3.0]
    return {"pairs": rows, "n_pass": len(ok), "n_pairs": len(rows),
            "failing": [r["pair"] for r in rows if r not in ok]}


def pushes(calc, a0: float) -> list[dict]:
    from ase.build import add_adsorbate
    from ase.constraints import FixAtoms

    out = []
    for name, symbol, site, height in PUSHES:
        slab = fcc111("Pt", (3, 3, 4), a=a0, vacuum=10.0)
        slab.set_constraint(FixAtoms(indices=bottom_layer_indices(slab, 2)))
        add_adsorbate(slab, symbol, height, site)
        start = slab.copy()
        start.calc = calc
        f0 = float(np.linalg.norm(start.get_forces(), axis=1).max())
        try:
            final, res = relax(slab, calc, fmax=0.05, steps=500, progress=False)
        except ValueError as err:  # e.g. the atom collapsed onto a Pt atom (< 0.1 Å)
            out.append({"case": name, "start_max_force": f0, "error": str(err)})
            continue
        k = len(final) - 1
        d = float(final.get_distances(k, range(k), mic=True).min())
        z_top = final.positions[[i for i in range(k) if slab.get_tags()[i] == 1], 2].mean()
        out.append({"case": name, "start_max_force": f0, "final_nearest_Pt": d,
                    "final_height": float(final.positions[k, 2] - z_top),
                    "converged": bool(res.converged), "steps": int(res.steps)})
    return out


def lattice(calc) -> dict:
    res = {}
    for m in METALS:
        a_fit = reference_states[bulk(m).numbers[0]]["a"]
        for span in (0.04, 0.015):
            vols, ens = [], []
            for s in np.linspace(1 - span, 1 + span, 9):
                p = bulk(m, "fcc", a=a_fit * s)
                p.calc = calc
                vols.append(p.get_volume())
                ens.append(p.get_potential_energy())
            v0, _, _ = EquationOfState(vols, ens, eos="birchmurnaghan").fit()
            a_fit = (4.0 * v0) ** (1.0 / 3.0)
        res[m] = float(a_fit)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="shipped names or model files")
    p.add_argument("--out", default=None, help="JSON file for all numbers")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ref = json.loads((ROOT / "data/catalysis-v1/lattice_constants.json").read_text())["metals"]
    a_ref = {m: ref[m]["a0"] for m in METALS}
    result = {"labeller_a0": a_ref, "models": {}}
    for model in a.models:
        calc = GeoMFormerCalculator(model, dtype="float64")
        r = {"wall": walls(calc.model), "pushes": pushes(calc, a_ref["Pt"]), "a0": lattice(calc)}
        r["onsite_force_constants"] = {
            m: lattice_force_constants(calc, bulk(m, a=a_ref[m], cubic=True) * (2, 2, 2)).tolist()
            for m in ("Cu", "Pt")}
        result["models"][model] = r
        w = r["wall"]
        print(f"== {model}")
        print(f"repulsive wall: {w['n_pass']} of {w['n_pairs']} pairs pass"
              + (f"; failing: {', '.join(w['failing'])}" if w["failing"] else ""))
        for row in w["pairs"]:
            print(f"  {row['pair']:6s} E(r_probe={row['r_probe']:.3f}) - E(R={row['R']:.2f}) = "
                  f"{row['rise']:10.2f} eV  least force below 0.75 R {row['min_force']:10.2f} "
                  f"eV/Å  monotonic {row['monotonic']}")
        for c in r["pushes"]:
            if "error" in c:
                print(f"  {c['case']:11s} start max|F| {c['start_max_force']:10.1f} eV/Å -> "
                      f"relaxation failed: {c['error']}")
                continue
            print(f"  {c['case']:11s} start max|F| {c['start_max_force']:10.1f} eV/Å -> nearest Pt "
                  f"{c['final_nearest_Pt']:.3f} Å, height {c['final_height']:.3f} Å, "
                  f"converged {c['converged']} in {c['steps']} steps")
        print("  a0 (Å), model - labeller: " + ", ".join(
            f"{m} {r['a0'][m]:.4f} ({r['a0'][m] - a_ref[m]:+.4f})" for m in METALS))
        k = r["onsite_force_constants"]
        print("  on-site force constants (eV/Å^2, displacements 1e-4, 1e-3, 2e-2 Å): " + "; ".join(
            f"{m} " + " ".join(f"{x:.2f}" for x in v) for m, v in k.items()))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
