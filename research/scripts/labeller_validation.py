"""Check candidate labellers against GPAW PBE on a small validation set.

The issue asks to choose the training-data labeller by its agreement with PBE on
Cu/Pt lattice constants and a few adsorption energies. This script measures:

* lattice constants of fcc Cu and Pt (Birch-Murnaghan fit of 7 volumes, +-4.5 %
  in a, primitive cell), each method at its own minimum;
* adsorption energies on 2x2x3 (111) slabs (bottom layer fixed): O fcc, H fcc,
  CO top on Cu and Pt, CO fcc on Pt. References: E(CO), E(H2O) - E(H2) for O,
  E(H2)/2 for H (no O2: its triplet ground state is a known PBE weak point and
  needs spin polarisation, too costly here).

Adsorption energies are *vertical*: every method is evaluated on the same
geometries (slab built at SevenNet-0's lattice constant, relaxed with SevenNet-0),
so the comparison measures energies, not each method's own relaxation
(relaxation differences are typically a few 0.01 eV).

Every single calculation is written to ``OUT/results.json`` (atomically) as
soon as it finishes; a rerun skips what is there, so the script resumes after a
kill. Methods are chosen on the command line and each runs in an environment
that has it:

    # labeller env (sevenn, chgnet, gpaw): geometries, then the labellers
    python research/scripts/labeller_validation.py --out research/labeller-validation geometries
    python research/scripts/labeller_validation.py --out research/labeller-validation run \
        7net-0 7net-l3i5 7net-mf-0 chgnet gpaw
    # package env: the shipped potential on the same geometries
    python research/scripts/labeller_validation.py --out research/labeller-validation run geomformer
    python research/scripts/labeller_validation.py --out research/labeller-validation report

GPAW settings: PW 400 eV, PBE, Fermi-Dirac 0.1 eV (0.01 eV for molecules),
k 12x12x12 (bulk), 4x4x1 (slabs), Gamma (molecules in a 10 x 10.5 x 11 Å box).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule
from ase.constraints import FixAtoms
from ase.eos import EquationOfState
from ase.io import read, write
from ase.optimize import BFGS

METALS = ("Cu", "Pt")
A_GUESS = {"Cu": 3.6125, "Pt": 3.9791}  # SevenNet-0 constants used for all slab geometries
STRAINS = np.linspace(-0.045, 0.045, 7)
ADSORBATES = {  # name: (metal, adsorbate, site, height)
    "Cu_O_fcc": ("Cu", "O", "fcc", 1.2),
    "Cu_H_fcc": ("Cu", "H", "fcc", 1.0),
    "Cu_CO_top": ("Cu", "CO", "ontop", 1.85),
    "Pt_O_fcc": ("Pt", "O", "fcc", 1.2),
    "Pt_H_fcc": ("Pt", "H", "fcc", 1.0),
    "Pt_CO_top": ("Pt", "CO", "ontop", 1.85),
    "Pt_CO_fcc": ("Pt", "CO", "fcc", 1.35),
}
GAS = ("H2", "H2O", "CO")
METHODS = ("gpaw", "7net-0", "7net-l3i5", "7net-mf-0", "chgnet", "geomformer")
REFERENCE = {"O": {"H2O": 1.0, "H2": -1.0}, "H": {"H2": 0.5}, "CO": {"CO": 1.0}}


# ----------------------------------------------------------------------------- methods
def make_calc(method: str, kind: str, label: str):
    """An ASE calculator for `method`; kind is bulk/slab/gas (GPAW's k-points differ)."""
    if method in ("7net-0", "7net-l3i5", "7net-mf-0"):  # the checkpoints in the sevenn wheel
        from sevenn.calculator import SevenNetCalculator

        modal = "PBE" if method == "7net-mf-0" else None  # the multi-fidelity model's PBE head
        return SevenNetCalculator(method, device="cpu", modal=modal)
    if method == "chgnet":
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(use_device="cpu")
    if method == "geomformer":
        from geomformer_md import GeoMFormerCalculator

        return GeoMFormerCalculator(dtype="float64")
    if method == "gpaw":
        from gpaw import GPAW, PW, FermiDirac

        kpts = {"bulk": (12, 12, 12), "slab": (4, 4, 1), "gas": (1, 1, 1)}[kind]
        width = 0.01 if kind == "gas" else 0.1
        return GPAW(mode=PW(400), xc="PBE", kpts=kpts, occupations=FermiDirac(width),
                    txt=None if kind == "bulk" else f"/tmp/gpaw-{label}.txt",
                    convergence={"energy": 1e-5})
    raise SystemExit(f"unknown method {method!r}: choose from {', '.join(METHODS)}")


# ----------------------------------------------------------------------------- storage
class Store:
    """results.json: {method: {key: energy_eV}}, rewritten atomically after each entry."""

    def __init__(self, out: Path) -> None:
        self.path = out / "results.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, method, key):
        return self.data.get(method, {}).get(key)

    def put(self, method, key, value) -> None:
        # Merge with what is on disk now: runs of other methods may write the same file.
        if self.path.exists():
            self.data = json.loads(self.path.read_text())
        self.data.setdefault(method, {})[key] = value
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


_POTENTIALS: dict = {}


def energy(store: Store, method: str, key: str, atoms: Atoms, kind: str) -> float:
    done = store.get(method, key)
    if done is not None:
        return done["energy"]
    t0 = time.time()
    a = atoms.copy()
    if method == "gpaw":  # k-points and log file per structure
        a.calc = make_calc(method, kind, key)
    else:  # a potential is loaded once and reused
        if method not in _POTENTIALS:
            _POTENTIALS[method] = make_calc(method, kind, key)
        a.calc = _POTENTIALS[method]
    e = float(a.get_potential_energy())
    dt = time.time() - t0
    store.put(method, key, {"energy": e, "seconds": round(dt, 1), "n_atoms": len(a)})
    print(f"{method:10s} {key:22s} {e:14.5f} eV  ({dt:.0f} s)", flush=True)
    return e


# ----------------------------------------------------------------------------- steps
def build_geometries(out: Path) -> None:
    """Slabs and molecules relaxed with SevenNet-0 (the shared, vertical geometries)."""
    from sevenn.calculator import SevenNetCalculator

    calc = SevenNetCalculator("7net-0", device="cpu")
    frames = []

    def relax(a: Atoms, name: str) -> Atoms:
        a.calc = calc
        BFGS(a, logfile=None).run(fmax=0.02, steps=300)
        a.info["name"] = name
        a.calc = None
        print(f"relaxed {name}: {len(a)} atoms", flush=True)
        return a

    for metal in METALS:
        slab = fcc111(metal, size=(2, 2, 3), a=A_GUESS[metal], vacuum=6.0)
        slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))
        frames.append(relax(slab.copy(), f"{metal}_slab"))
    for name, (metal, ads, site, h) in ADSORBATES.items():
        slab = fcc111(metal, size=(2, 2, 3), a=A_GUESS[metal], vacuum=6.0)
        slab.set_constraint(FixAtoms(mask=slab.get_tags() == 3))
        # C down
        a = Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.15]]) if ads == "CO" else Atoms(ads)
        add_adsorbate(slab, a, h, site)
        frames.append(relax(slab, name))
    for name in GAS:
        m = molecule(name)
        m.cell = [10.0, 10.5, 11.0]
        m.center()
        m.pbc = True
        frames.append(relax(m, name))
    write(out / "geometries.extxyz", frames)


def run(out: Path, methods: list[str]) -> None:
    store = Store(out)
    frames = {a.info["name"]: a for a in read(out / "geometries.extxyz", ":")}
    for method in methods:
        for metal in METALS:
            for s in STRAINS:
                a = bulk(metal, "fcc", a=A_GUESS[metal] * (1 + s))
                energy(store, method, f"{metal}_bulk_{s:+.3f}", a, "bulk")
        for name in GAS:
            energy(store, method, name, frames[name], "gas")
        for metal in METALS:
            energy(store, method, f"{metal}_slab", frames[f"{metal}_slab"], "slab")
        for name in ADSORBATES:
            energy(store, method, name, frames[name], "slab")


def results_table(out: Path) -> dict:
    store = Store(out)
    table = {}
    for method, res in store.data.items():
        row = {}
        for metal in METALS:
            keys = [f"{metal}_bulk_{s:+.3f}" for s in STRAINS]
            if all(k in res for k in keys):
                vols = [bulk(metal, "fcc", a=A_GUESS[metal] * (1 + s)).get_volume()
                        for s in STRAINS]
                eos = EquationOfState(vols, [res[k]["energy"] for k in keys], eos="birchmurnaghan")
                v0, _, b = eos.fit()
                row[f"a0_{metal}"] = (4 * v0) ** (1 / 3)
                row[f"B_{metal}_GPa"] = b * 160.21766208  # eV/Å^3 -> GPa
        for name, (metal, ads, _site, _h) in ADSORBATES.items():
            need = [name, f"{metal}_slab", *REFERENCE[ads]]
            if all(k in res for k in need):
                ref = sum(c * res[g]["energy"] for g, c in REFERENCE[ads].items())
                row[f"Eads_{name}"] = res[name]["energy"] - res[f"{metal}_slab"]["energy"] - ref
        table[method] = row
    return table


def report(out: Path) -> str:
    table = results_table(out)
    methods = [m for m in METHODS if m in table]
    keys = [k for k in dict.fromkeys(k for m in methods for k in table[m])]
    lines = ["| quantity | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for k in keys:
        cells = []
        for m in methods:
            v = table[m].get(k)
            if v is None:
                cells.append("")
                continue
            ref = table.get("gpaw", {}).get(k)
            fmt = ".3f" if k.startswith(("a0", "Eads")) else ".0f"
            d = "" if m == "gpaw" or ref is None else f" ({v - ref:+{fmt}})"
            cells.append(f"{v:{fmt}}{d}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    mad = {}
    for m in methods:
        if m == "gpaw":
            continue
        d = [table[m][k] - table["gpaw"][k] for k in table[m]
             if k.startswith("Eads") and k in table.get("gpaw", {})]
        if d:
            mad[m] = float(np.mean(np.abs(d)))
    lines.append("")
    lines.append("mean |Eads - Eads(PBE)| (eV): "
                 + ", ".join(f"{m} {v:.3f}" for m, v in mad.items()))
    text = "\n".join(lines)
    (out / "report.md").write_text(text + "\n")
    (out / "table.json").write_text(json.dumps(table, indent=1))
    return text


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("research/labeller-validation"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("step", choices=("geometries", "run", "report"))
    ap.add_argument("methods", nargs="*")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    if args.step == "geometries":
        build_geometries(args.out)
    elif args.step == "run":
        if not args.methods:
            sys.exit(f"run needs at least one method: {', '.join(METHODS)}")
        run(args.out, args.methods)
    else:
        print(report(args.out))


if __name__ == "__main__":
    main()
