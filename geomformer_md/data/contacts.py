"""Close contacts: the shortest interatomic distance relative to the covalent bond length.

A force field trained on sensible structures knows nothing about two atoms pressed far
inside their bond length: there it can return any energy, often a deep spurious minimum
(two Cu atoms fusing at 0.3 Å, an O atom sinking into a Pt bridge at 1.2 Å). Every
workflow result therefore carries

    min_bond_ratio = min over atom pairs of  d_ij / (r_cov(i) + r_cov(j))

with ASE's covalent radii (``ase.data.covalent_radii``), and flags the structure when the
ratio is below ``CLOSE_CONTACT_RATIO`` (0.6). For scale: bonded pairs sit near 0.8-1.1
(C-O in CO 0.81, Pt-O at a hollow ~0.98, Pt-Pt in the bulk 1.02, H-H in H2 1.19); the
hardest compressions in high-temperature MD stay above ~0.7; 0.6 is far outside any
training data of the shipped potentials.

Pairs are searched out to ``SEARCH_RATIO`` times their bond length; with no pair that
close (an isolated atom, a dilute gas), the ratio is ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from ase.data import chemical_symbols, covalent_radii

from .neighbors import neighbor_list

CLOSE_CONTACT_RATIO = 0.6
SEARCH_RATIO = 1.5


class CloseContactWarning(UserWarning):
    """Two atoms are much closer than their covalent bond length (see `CLOSE_CONTACT_RATIO`)."""


@dataclass(frozen=True)
class Contact:
    """The closest pair of a structure relative to its covalent bond length."""

    ratio: float  # d / (r_cov(i) + r_cov(j)); inf when no pair is within SEARCH_RATIO
    distance: float  # Å (inf when none)
    i: int = -1
    j: int = -1  # j == i: an atom and its own periodic image
    symbols: tuple[str, str] = ("", "")

    @property
    def close(self) -> bool:
        return self.ratio < CLOSE_CONTACT_RATIO

    def describe(self) -> str:
        """One phrase naming the pair, e.g. 'atoms 3 (Cu) and 7 (Cu) are 0.285 Å apart, ...'."""
        if not math.isfinite(self.ratio):
            return "no two atoms are within 1.5 covalent bond lengths"
        a, b = self.symbols
        other = "its own periodic image" if self.i == self.j else f"atom {self.j} ({b})"
        # rounded down: a ratio just below the threshold never prints as the threshold
        ratio = math.floor(self.ratio * 1000) / 1000
        return (
            f"atom {self.i} ({a}) is {self.distance:.3g} Å from {other}, "
            f"{ratio:.3f} of their covalent bond length"
        )

    def warning(self, where: str = "") -> str:
        return (
            f"{where}{self.describe()} (below {CLOSE_CONTACT_RATIO}): far outside any training "
            f"data, so energies and forces of this structure are not physical"
        )


NO_CONTACT = Contact(ratio=math.inf, distance=math.inf)


def contact_from_edges(
    numbers: torch.Tensor, edge_index: torch.Tensor, distances: torch.Tensor
) -> Contact:
    """The closest pair among given edges (``numbers [N]``, ``edge_index [2, E]``,
    ``distances [E]`` Å, all on one device).

    The calculator calls it on the neighbour graph it already built: no second search,
    and on a GPU only the closest pair comes back to the host.
    """
    if distances.numel() == 0:
        return NO_CONTACT
    radii = torch.as_tensor(covalent_radii, dtype=distances.dtype, device=distances.device)
    r = radii.index_select(0, numbers)
    i, j = edge_index
    ratio = distances.detach() / (r.index_select(0, i) + r.index_select(0, j))
    k = int(torch.argmin(ratio))
    best = float(ratio[k])
    if not best < SEARCH_RATIO:
        return NO_CONTACT
    a, b = sorted((int(i[k]), int(j[k])))
    za, zb = int(numbers[a]), int(numbers[b])
    return Contact(best, float(distances[k]), a, b, (chemical_symbols[za], chemical_symbols[zb]))


def closest_contact(atoms) -> Contact:
    """The pair of ``atoms`` with the smallest distance / covalent bond length.

    Periodic images count (an atom against its own image in a tiny cell, too). Uses the
    package's neighbour search, so its cost is that of one neighbour list (~ms per
    thousand atoms).
    """
    if len(atoms) < 1:
        return NO_CONTACT
    numbers = atoms.get_atomic_numbers()
    pos = torch.as_tensor(atoms.get_positions(), dtype=torch.float64)
    if not torch.isfinite(pos).all():
        return NO_CONTACT  # validation elsewhere names NaN positions
    cell = torch.as_tensor(np.asarray(atoms.cell[:], dtype=float))
    pbc = torch.as_tensor(np.asarray(atoms.pbc, dtype=bool))
    cutoff = SEARCH_RATIO * 2.0 * float(covalent_radii[numbers].max())
    edge_index, shifts = neighbor_list(pos, cell, pbc, cutoff)
    if edge_index.shape[1] == 0:
        return NO_CONTACT
    i, j = edge_index
    vec = pos[j] - pos[i] + shifts.to(pos.dtype) @ cell
    return contact_from_edges(torch.as_tensor(numbers), edge_index, vec.norm(dim=1))
