"""Toy pair terms added to EMT to give a workflow test a known energy landscape.

A real potential has these features somewhere (a flat adsorbate minimum, a spurious hole at
short range); the toys put them where a test can check that the workflow finds or flags them.
"""

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.mixing import SumCalculator
from ase.neighborlist import neighbor_list


class PairTerm(Calculator):
    """Sum over ordered pairs (atom of element za, atom of element zb) within ``cutoff`` of
    a harmonic bond ``k/2 (d - d0)^2`` (kind="bond") or a Gaussian well
    ``-k exp(-(d - d0)^2 / 2 width^2)`` (kind="well"). Energies in eV, lengths in Å."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, za, zb, kind, d0, k, width=0.3, cutoff=4.0):
        super().__init__()
        assert za != zb, "ordered pairs of one element would count each pair twice"
        self.za, self.zb, self.kind = za, zb, kind
        self.d0, self.k, self.width, self.cutoff = d0, k, width, cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        i, j, d, vec = neighbor_list("ijdD", self.atoms, self.cutoff)
        z = self.atoms.numbers
        keep = (z[i] == self.za) & (z[j] == self.zb)
        i, j, d, vec = i[keep], j[keep], d[keep], vec[keep]
        if self.kind == "bond":
            e = 0.5 * self.k * (d - self.d0) ** 2
            de_dd = self.k * (d - self.d0)
        else:
            e = -self.k * np.exp(-((d - self.d0) ** 2) / (2 * self.width**2))
            de_dd = -e * (d - self.d0) / self.width**2
        grad_j = (de_dd / d)[:, None] * vec  # dE/dr_j; vec = r_j - r_i
        forces = np.zeros((len(self.atoms), 3))
        np.add.at(forces, j, -grad_j)
        np.add.at(forces, i, grad_j)
        self.results = {"energy": float(e.sum()), "forces": forces}


def oh_lies_flat_on_cu():
    """EMT + a stiff O-H bond (OH stays intact) + an H-Cu attraction at 1.8 Å: OH upright on
    a Cu top site is a symmetric stationary point, OH lying flat is ~0.3 eV lower."""
    bond = PairTerm(8, 1, "bond", 0.97, 20.0, cutoff=1.6)
    return SumCalculator([EMT(), bond, PairTerm(29, 1, "well", 1.8, 0.6, 0.4)])


def o_falls_into_cu():
    """EMT + a narrow, deep O-Cu well at 0.9 Å (0.45 of the bond length): a spurious hole such
    as an ML potential can have where it saw no data. Normal placements never feel it."""
    return SumCalculator([EMT(), PairTerm(29, 8, "well", 0.9, 30.0, 0.15)])
