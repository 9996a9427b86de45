"""Do the minima that tilted starts find (``adsorb --orientations``) exist for the labeller?

For each (adsorbate, site): the model's upright-only row and its best-of-orientations row,
then the labeller (SevenNet-0) on both structures: single points, and a labeller relaxation
from each. A tilted minimum the labeller confirms lowers both; a hole of the model is low for
the model and high for the labeller, and relaxes back with the labeller.

    for n in 1 3; do for a in CO OH; do
      geomformer-md adsorb Pt111 $a --orientations $n -o runs/orient/o$n --overwrite
    done; done
    /work/venv-label/bin/python research/scripts/orientations_vs_labeller.py runs/orient \\
        CO:hcp OH:bridge OH:ontop

(runs in the labeller's venv, see docs/labeller.md; ~10 min on one core).
"""

import argparse
import time

import numpy as np
import torch
from ase.constraints import FixAtoms
from ase.io import read
from ase.optimize import FIRE
from ase.symbols import string2symbols


def tilt(atoms, n_slab: int, bind: int) -> float:
    """Angle (degrees) of the binding atom -> other adsorbate atoms axis from +z."""
    others = [k for k in range(n_slab, len(atoms)) if k != bind]
    v = atoms.get_distances(bind, others, mic=True, vector=True).mean(axis=0)
    return float(np.degrees(np.arccos(v[2] / np.linalg.norm(v))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", help="holds o1/ and o3/ from geomformer-md adsorb -o")
    p.add_argument("cases", nargs="+", help="ADSORBATE:SITE, e.g. CO:hcp")
    p.add_argument("--slab", default="Pt111")
    p.add_argument("--fmax", type=float, default=0.05)
    args = p.parse_args()
    torch.set_num_threads(1)
    from sevenn.calculator import SevenNetCalculator

    calc = SevenNetCalculator("7net-0", device="cpu")
    for case in args.cases:
        ads, site = case.split(":")
        out = {}
        for tag in ("o1", "o3"):
            rows = read(f"{args.folder}/{tag}/{args.slab}_{ads}_adsorption.extxyz", ":")
            a = next(r for r in rows if r.info["site"] == site)
            metal = a.numbers[0]
            n_slab = int(np.sum(a.numbers == metal))
            # the binding atom: the first non-H element of the name, as adsorbate_from_name
            element = next(s for s in string2symbols(ads) if s != "H")
            bind = n_slab + a.get_chemical_symbols()[n_slab:].index(element)
            z = a.positions[:n_slab, 2]
            a.set_constraint(FixAtoms(indices=np.where(z < z.min() + 2.5)[0]))
            e_model, start = a.info["E_ads"], tilt(a, n_slab, bind)
            a.calc = calc
            e_at_model = a.get_potential_energy()
            t0 = time.time()
            FIRE(a, logfile=None).run(fmax=args.fmax, steps=300)
            out[tag] = (e_model, e_at_model, a.get_potential_energy())
            print(
                f"{ads} {site} {tag} ({a.info.get('orientation', 'upright')}, tilt {start:.0f}°): "
                f"model E_ads {e_model:.3f} eV; labeller E {e_at_model:.3f} at the model's "
                f"structure, {a.get_potential_energy():.3f} after its own relaxation "
                f"(tilt {tilt(a, n_slab, bind):.0f}°, {time.time() - t0:.0f} s)",
                flush=True,
            )
        d = [out["o3"][k] - out["o1"][k] for k in range(3)]
        print(
            f"{ads} {site}: best-of-orientations minus upright: model {d[0]:+.3f} eV, labeller "
            f"at the model's structures {d[1]:+.3f} eV, labeller relaxed {d[2]:+.3f} eV",
            flush=True,
        )


if __name__ == "__main__":
    main()
