"""Short-range prior: Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion.

For a pair of atomic numbers (Z_i, Z_j) at distance r (Å):

    V(r) = k_e Z_i Z_j / r * phi(r / a) * s(r)        (eV)
    a    = 0.46850 Å / (Z_i^0.23 + Z_j^0.23)           the universal screening length
    phi  = 0.18175 e^{-3.19980 x} + 0.50986 e^{-0.94229 x}
         + 0.28022 e^{-0.40290 x} + 0.02817 e^{-0.20162 x}

(Ziegler, Biersack, Littmark 1985; 0.46850 Å = 0.8854 Bohr radii: the constants of LAMMPS's
pair_style zbl and NequIP's ZBL, so the term equals theirs, switch aside.) As r -> 0 it is the
bare Coulomb repulsion of the nuclei. It has no chemical bonding, so at bond lengths it is far
too repulsive (Pt-Pt: 1.4 eV at 2.77 Å, where the bond is several eV deep), and it must be off
where the network is trained on bonded structures.

The switch s(r) is the quintic smoothstep (the envelope of radial.py; value, slope and
curvature continuous) from 1 at r_in = inner * R to 0 at r_out = outer * R, R the sum of the
pair's covalent radii (Cordero et al. 2008, ASE's table). MACE switches ZBL off at R itself and
NequIP at the model cutoff; both leave it non-zero at bonded distances, where the network must
learn to cancel it, which suits a model trained from scratch with it. We switch it off well
inside R instead, defaults 0.55 R to 0.75 R:

- outer 0.75: the closest pairs in the catalysis training data are at 0.734 R (Cu-Cu and Ni-Ni
  in rattled bulk; N2 and CO compressed by 8 %: 0.75 R). The prior is exactly zero on all but
  4 of its 10860 frames (rattled bulk, at most 31 meV), so a potential fine-tuned onto it
  starts from its own energies in its domain, and the network does not fight the prior there.
  (0.78 R would touch 22 frames by up to 0.44 eV, compressed N2 and CO among them.)
- inner 0.55, a narrow ramp: the network cannot make a steep wall by itself (its radial basis
  resolves ~0.4 Å). With the prior off above 0.70 or 0.72 R, fine-tuned v11 models kept small
  dips in their dimer curves between 0.64 and 0.76 R for 5 to 29 of 55 element pairs
  (docs/short-range.md). Between 0.55 and 0.75 R the network is trained on compressed
  structures where the labeller is still trustworthy (scripts/datagen/short_range.py) and
  learns the difference; below 0.55 R the prior is the wall (the labeller's own curves break
  at 0.37-0.63 R).

Each directed edge (i, j) gives half of V to its centre i; the neighbour list holds both
directions of every pair, so each atom gets half of each of its pairs' energy.
Plain tensor ops only (no data-dependent Python control flow), so the module scripts and
exports with the rest of the model.
"""

from __future__ import annotations

import torch
from torch import nn

from .radial import envelope

# The constants are literals inside the functions: TorchScript cannot read module-level floats.
# k_e = e^2 / (4 pi eps0) = 14.399645 eV Å; screening length 0.46850 Å = 0.8854 a_0.


def zbl_screening(x: torch.Tensor) -> torch.Tensor:
    """The universal screening function phi(x), x = r / a."""
    return (0.18175 * torch.exp(-3.19980 * x) + 0.50986 * torch.exp(-0.94229 * x)
            + 0.28022 * torch.exp(-0.40290 * x) + 0.02817 * torch.exp(-0.20162 * x))


def smooth_switch(r: torch.Tensor, r_in: torch.Tensor, r_out: torch.Tensor) -> torch.Tensor:
    """1 for r <= r_in, 0 for r >= r_out, the quintic smoothstep between (C2 at both ends)."""
    t = ((r - r_in) / (r_out - r_in)).clamp(min=0.0)
    return envelope(t, 1.0)


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies [n] (eV) from species indices and the directed edges.

    Args:
        species: atomic numbers of the model, in embedding order.
        inner, outer: the switch runs from inner * R to outer * R (R: the pair's covalent
            radii sum); 0 < inner < outer.
    """

    def __init__(self, species: tuple[int, ...], inner: float, outer: float) -> None:
        super().__init__()
        from ase.data import covalent_radii  # a table of constants, read once here

        z = torch.tensor(species, dtype=torch.float64)
        # Non-persistent: derived from the config, so files without the prior load unchanged
        # and a model without it can be rebuilt with it (fine-tuning onto the prior).
        self.register_buffer("z", z, persistent=False)
        self.register_buffer("z_pow", z.pow(0.23), persistent=False)
        radii = torch.tensor([float(covalent_radii[s]) for s in species], dtype=torch.float64)
        self.register_buffer("radii", radii, persistent=False)
        self.inner, self.outer = float(inner), float(outer)

    def pair_energy(self, si: torch.Tensor, sj: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """V(r) of pairs with species indices si, sj [E] at distances r [E] (Å)."""
        a = 0.46850 / (self.z_pow.index_select(0, si) + self.z_pow.index_select(0, sj))
        radius = self.radii.index_select(0, si) + self.radii.index_select(0, sj)
        coulomb = 14.399645 * self.z.index_select(0, si) * self.z.index_select(0, sj) / r
        switch = smooth_switch(r, self.inner * radius, self.outer * radius)
        return coulomb * zbl_screening(r / a) * switch

    def forward(
        self, species: torch.Tensor, edge_index: torch.Tensor, dist: torch.Tensor
    ) -> torch.Tensor:
        """species [n] embedding indices, edge_index [2, E] (centre, neighbour), dist [E] Å
        -> [n] eV: half of each directed edge's pair energy on its centre."""
        i, j = edge_index[0], edge_index[1]
        v = self.pair_energy(species.index_select(0, i), species.index_select(0, j), dist)
        return dist.new_zeros(species.shape[0]).index_add(0, i, 0.5 * v)
