"""Screening: O, H and OH at the fcc and hcp sites of (111) on six metals, relaxed together in one batch.

relax_many keeps one ASE optimizer per structure (FixAtoms on the bottom layers is
respected) and serves all of them with one batched forward pass per step.
"""

import csv

from ase import Atoms
from ase.build import add_adsorbate, fcc111

from geomformer_md import relax_many

ADSORBATES = {"O": Atoms("O"), "H": Atoms("H"), "OH": Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.98]])}
LATTICE = {"Cu": 3.61, "Ag": 4.17, "Au": 4.17, "Ni": 3.50, "Pd": 3.96, "Pt": 3.98}
structures, labels = [], []
for metal, a in LATTICE.items():
    for ads in ("O", "H", "OH"):
        for site in ("fcc", "hcp"):
            slab = fcc111(metal, (2, 2, 3), a=a, vacuum=8.0)
            add_adsorbate(slab, ADSORBATES[ads], 1.9 if site == "ontop" else 1.3, site)
            structures.append(slab)
            labels.append((metal, ads, site))

results = relax_many(structures, fmax=0.05, steps=200, optimizer="FIRE", fix_bottom_layers=1)
with open("screening.csv", "w", newline="") as fh:
    w = csv.writer(fh)
    w.writerow(["metal", "adsorbate", "site", "energy_eV", "converged", "steps"])
    for (metal, ads, site), (atoms, res) in zip(labels, results):
        w.writerow([metal, ads, site, f"{res.energy:.4f}", res.converged, res.steps])
n_conv = sum(res.converged for _, res in results)
print(f"relaxed {len(results)} structures together, {n_conv} converged; written screening.csv")
