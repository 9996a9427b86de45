"""OH on Pt(111): where a model's energy error sits, by coverage and site (model-notes §15).

For each model: model minus labeller (eV) on the last, relaxed frame of the trained-on 1/9 ML
(3x3x4) top and bridge relaxations of `extra-low`, on the two 1/9 ML reference structures
(fcc, hcp) at the labeller's relaxed geometry, and the same-composition differences
E(hollow) - E(top or bridge), whose element references cancel; first, the labeller's own
energies of the four structures relative to the fcc one (the site order a model should give).
With --groups, also the mean signed error (meV/atom) over every OH / Pt(111) frame of each
(set, site, coverage, kind).

    python research/scripts/oh_pt111_errors.py research/potentials/geomformer-catalysis-v9.pt \
        MODEL.pt --threads 2

The selected frames are written once to --frames (default runs/oh_pt111_frames.extxyz; reading
the four compressed sets takes a few minutes); research/configs/oh_pt111_only.yaml trains on
that file.
"""

import argparse
import collections
import json
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from geomformer_md import GeoMFormerCalculator

SETS = ["catalysis-v1", "catalysis-v1-extra-sites", "catalysis-v1-extra-low",
        "catalysis-v1-extra-ohmd"]


def oh_pt111_frames(data: Path, path: Path) -> list:
    if path.exists():
        return ase.io.read(path, index=":")
    out = []
    for name in SETS:
        for f in ase.io.read(data / name / "frames.extxyz.xz", index=":"):
            i = f.info
            oh_pt = i.get("metal") == "Pt" and i.get("adsorbate") == "OH"
            if oh_pt and str(i.get("facet")) == "111":
                i["set"] = name.removeprefix("catalysis-v1").removeprefix("-") or "main"
                out.append(f)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--data", default="data", type=Path)
    p.add_argument("--frames", default="runs/oh_pt111_frames.extxyz", type=Path)
    p.add_argument("--groups", action="store_true", help="also the mean error of every frame group")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    frames = oh_pt111_frames(a.data, a.frames)
    low = {}
    for f in frames:  # the last step of each 1/9 ML relaxation path
        if f.info["set"] == "extra-low" and f.info["kind"] == "relax":
            s = f.info["site"]
            if s not in low or f.info["step"] > low[s].info["step"]:
                low[s] = f
    ref_json = json.loads((a.data / "catalysis-v1" / "adsorption_reference.json").read_text())
    cases = {c["case"]: c for c in ref_json["cases"]}
    refs = {}
    for site in ("fcc", "hcp"):
        name = f"ref_ads_Pt_111_OH_{site}"
        x = ase.io.read(a.data / "catalysis-v1" / "reference" / f"{name}.extxyz", index=1)
        x.calc = SinglePointCalculator(x, energy=cases[name]["E_slab_ads"])
        refs[site] = x
    lab = {"top": low["top"], "bridge": low["bridge"], **refs}
    e_fcc = refs["fcc"].get_potential_energy()
    print("labeller, E - E(fcc ref) (eV): " + ", ".join(
        f"{k} {x.get_potential_energy() - e_fcc:+.3f}" for k, x in lab.items()))
    print(f"{'model minus labeller':44s} {'top':>7s} {'bridge':>7s} {'fcc ref':>7s} "
          f"{'hcp ref':>7s} {'fcc-top':>7s} {'fcc-br':>7s} {'hcp-top':>7s} {'hcp-br':>7s}   (eV)")
    for m in a.models:
        calc = GeoMFormerCalculator(m, dtype="float64")

        def err(atoms, calc=calc):
            x = atoms.copy()
            x.calc = calc
            return x.get_potential_energy() - atoms.get_potential_energy()

        e = {k: err(x) for k, x in lab.items()}
        diffs = [e[h] - e[s] for h in ("fcc", "hcp") for s in ("top", "bridge")]
        print(f"{m[-44:]:44s} " + " ".join(f"{v:+7.3f}" for v in
                                            [e["top"], e["bridge"], e["fcc"], e["hcp"], *diffs]))
        if a.groups:
            by = collections.defaultdict(list)
            for f in frames:
                key = (f.info["set"], f.info["site"], f.info["coverage"], f.info["kind"])
                by[key].append(err(f) * 1e3 / len(f))
            for k, v in sorted(by.items()):
                name = "/".join(map(str, k))
                print(f"    {name:36s} n={len(v):3d} mean {np.mean(v):+6.2f} meV/atom")


if __name__ == "__main__":
    main()
