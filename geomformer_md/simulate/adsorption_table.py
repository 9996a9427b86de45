"""The result of an adsorption scan: one :class:`AdsorptionRow` per site, and the
:class:`AdsorptionTable` of them with its CSV file and its printed form."""

from __future__ import annotations

import csv as _csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ..io.files import atomic_open
from .references import format_reference


@dataclass
class AdsorptionRow:
    """One site: the best of its starting orientations. Energies in eV, lengths in Å."""

    site: str  # where the adsorbate was placed
    final_site: str  # nearest site after relaxation ("desorbed" if it left the surface)
    moved: bool  # final_site != site
    e_ads: float  # E(slab+ads) - E(slab) - E_ref(ads)
    energy: float  # relaxed total energy of slab + adsorbate
    height: float  # binding-atom z minus the topmost slab atom z, after relaxation
    converged: bool
    steps: int
    fmax: float  # eV/Å, final
    dissociated: bool  # a bond of the adsorbate broke
    atoms: Atoms | None = field(default=None, repr=False)  # relaxed structure
    # closest pair over its covalent bond length (geomformer_md.data.contacts); close_contact:
    # below 0.6, two atoms fused far outside any training data: not a physical result
    min_bond_ratio: float = math.inf
    close_contact: bool = False
    orientation: str = "upright"  # the starting orientation that won (see ORIENTATIONS doc)
    tilt_deg: float = math.nan  # final angle of the molecule's axis from the surface normal
    # every starting orientation tried: label -> relaxed E_ads (eV)
    orientation_e_ads: dict[str, float] = field(default_factory=dict, repr=False)
    # with a committee potential: largest per-atom force std over the relaxation (eV/Å; nan
    # for a single model) and whether it passed the uncertainty threshold
    max_force_std: float = math.nan
    uncertain: bool = False


# CSV columns of a row, in order, with their values (eV, Å, degrees). A new column is one
# line here; the table-level columns follow in CSV_COLUMNS.
ROW_COLUMNS = {
    "site": lambda r: r.site,
    "final_site": lambda r: r.final_site,
    "moved": lambda r: r.moved,
    "E_ads_eV": lambda r: r.e_ads,
    "E_total_eV": lambda r: r.energy,
    "height_A": lambda r: r.height,
    "converged": lambda r: r.converged,
    "steps": lambda r: r.steps,
    "fmax_eV_per_A": lambda r: r.fmax,
    "dissociated": lambda r: r.dissociated,
    "min_bond_ratio": lambda r: r.min_bond_ratio,
    "close_contact": lambda r: r.close_contact,
    "orientation": lambda r: r.orientation,
    "tilt_deg": lambda r: r.tilt_deg,
    "max_force_std_eV_per_A": lambda r: r.max_force_std,
    "uncertain": lambda r: r.uncertain,
}
CSV_COLUMNS = (*ROW_COLUMNS, "slab_converged", "references_converged")


@dataclass
class AdsorptionTable:
    """Rows sorted with the most stable site first, and what they were computed from."""

    adsorbate: str
    slab_name: str
    rows: list[AdsorptionRow]
    slab_energy: float
    slab_converged: bool
    reference: dict[str, float]  # {gas molecule: coefficient}
    gas_energies: dict[str, float]  # relaxed (or given) energies of the molecules, eV
    references_converged: bool
    reference_energy: float  # sum_k c_k E(gas_k)
    slab: Atoms | None = field(default=None, repr=False)  # relaxed clean slab
    orientations: int = 1  # starting orientations tried per site (1 for an atom)
    seed: int | None = 0  # of their random tilts and turns

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    @property
    def best(self) -> AdsorptionRow:
        return self.rows[0]

    def as_dicts(self) -> list[dict]:
        table = {
            "slab_converged": self.slab_converged,
            "references_converged": self.references_converged,
        }
        return [{**{k: get(r) for k, get in ROW_COLUMNS.items()}, **table} for r in self.rows]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the rows as CSV (atomically: a crash never leaves half a file)."""
        path = Path(path)
        with atomic_open(path, "w", newline="") as fh:
            w = _csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
            w.writeheader()
            for d in self.as_dicts():
                w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in d.items()})
        return path

    def __str__(self) -> str:
        head = (
            f"{self.adsorbate} on {self.slab_name}: E_ads = E(slab+{self.adsorbate}) - E(slab) - "
            f"[{format_reference(self.reference)}]\n"
            f"E(slab) = {self.slab_energy:.4f} eV"
            f"{'' if self.slab_converged else ' (NOT converged)'}, "
            f"E_ref = {self.reference_energy:.4f} eV"
            f"{'' if self.references_converged else ' (NOT converged)'}\n"
        )
        if self.orientations > 1:
            head += (
                f"each site: the lowest of {self.orientations} starting orientations "
                f"(seed {self.seed})\n"
            )
        molecule = any(r.orientation_e_ads and len(r.orientation_e_ads) > 1 for r in self.rows)
        lines = [
            f"{'site':<14}{'E_ads/eV':>10}{'height/Å':>10}  {'converged':<10}{'final site':<14}"
            + (f"{'orientation (won)':<22}" if molecule else "")
            + "note"
        ]
        for r in self.rows:
            note = []
            if r.moved:
                note.append("moved")
            if r.dissociated:
                note.append("dissociated")
            if r.close_contact:
                note.append(f"CLOSE CONTACT ({r.min_bond_ratio:.2f} of a bond): not physical")
            if r.uncertain:
                note.append(f"UNCERTAIN (committee force std {r.max_force_std:.2f} eV/Å)")
            lines.append(
                f"{r.site:<14}{r.e_ads:>10.4f}{r.height:>10.3f}  "
                f"{('yes' if r.converged else 'NO'):<10}"
                f"{r.final_site:<14}"
                + (f"{r.orientation:<22}" if molecule else "")
                + ",".join(note)
            )
        return head + "\n".join(lines)
