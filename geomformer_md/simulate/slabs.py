"""Slabs from a spec: ``"Pt111"`` or ``("Pt", "211", (3, 3, 4))`` -> an ase.build slab
with adsorption sites and layer tags; the bulk lattice constant of a calculator; the
bottom layers held fixed."""

from __future__ import annotations

import re

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, reference_states

from .sites import surface_layers, with_fcc211_sites

# Slab builders by (crystal structure, facet).
_BUILDERS = {
    ("fcc", "111"): "fcc111",
    ("fcc", "100"): "fcc100",
    ("fcc", "110"): "fcc110",
    ("fcc", "211"): "fcc211",
    ("hcp", "0001"): "hcp0001",
    ("bcc", "100"): "bcc100",
    ("bcc", "110"): "bcc110",
    ("bcc", "111"): "bcc111",
}
DEFAULT_SIZE = (3, 3, 4)


def parse_slab_spec(spec) -> tuple[str, str, tuple[int, int, int]]:
    """``"Pt111"``, ``"Cu(100)"``, ``("Pt", "211", (3, 3, 4))`` -> (symbol, facet, size)."""
    if isinstance(spec, str):
        m = re.fullmatch(r"([A-Za-z]{1,2})\(?(\d{3,4})\)?", spec.strip())
        if not m:
            raise ValueError(
                f"cannot read slab spec {spec!r}: expected an element and a facet such as "
                f"'Pt111', 'Cu100', 'Pt211' or 'Ru0001'"
            )
        symbol, facet, size = m.group(1).capitalize(), m.group(2), DEFAULT_SIZE
    else:
        try:
            symbol, facet, *rest = spec
        except (TypeError, ValueError):
            raise ValueError(
                f"slab spec must be a string like 'Pt111' or a tuple (symbol, facet, size), "
                f"got {spec!r}"
            ) from None
        symbol, facet = str(symbol), str(facet).strip("()")
        size = tuple(int(n) for n in rest[0]) if rest else DEFAULT_SIZE
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"slab size must be 3 positive integers, got {size}")
    if symbol not in atomic_numbers:
        raise ValueError(f"unknown element {symbol!r} in slab spec {spec!r}")
    return symbol, facet, tuple(size)


def _crystal(symbol: str) -> str:
    state = reference_states[atomic_numbers[symbol]]
    return (state or {}).get("symmetry", "?")


def build_slab(
    symbol: str,
    facet: str,
    size: tuple[int, int, int] = DEFAULT_SIZE,
    a: float | None = None,
    vacuum: float = 10.0,
) -> Atoms:
    """A slab from ase.build with adsorption sites and layer tags (1 = top layer).

    Args:
        symbol: metal element (its ASE reference crystal structure picks the builder).
        facet: "111", "100", "110", "211" (fcc), "0001" (hcp), "100"/"110"/"111" (bcc).
        size: (nx, ny, layers); for 211 nx must be a multiple of 3 (3 rows per terrace).
        a: lattice constant in Å (None = ASE's reference value).
        vacuum: vacuum on each side, Å.
    """
    import ase.build

    crystal = _crystal(symbol)
    builder = _BUILDERS.get((crystal, facet))
    if builder is None:
        known = sorted(f for (c, f) in _BUILDERS if c == crystal)
        raise ValueError(
            f"unknown facet {facet!r} for {symbol} ({crystal}); supported: {known or 'none'} "
            f"(all: {sorted({f'{c}({f})' for c, f in _BUILDERS})})"
        )
    kwargs = {"a": a, "vacuum": vacuum}
    if builder == "fcc211":
        if size[0] % 3:
            raise ValueError(
                f"fcc(211) needs size[0] divisible by 3 (3 rows per terrace), got {size}"
            )
        # ASE's size[2] for 211 counts "layers" of 3 rows; one 211 layer is one terrace repeat.
        slab = ase.build.fcc211(symbol, size, **kwargs)
        return with_fcc211_sites(slab)
    slab = getattr(ase.build, builder)(symbol, size, **kwargs)
    return slab


def fix_bottom(atoms: Atoms, n_layers: int) -> Atoms:
    """A copy of a slab, its bottom ``n_layers`` held by FixAtoms (existing constraints kept)."""
    atoms = atoms.copy()
    if n_layers <= 0:
        return atoms
    layers = surface_layers(atoms)
    n_total = layers.max()
    if n_layers >= n_total:
        raise ValueError(
            f"fix_bottom_layers={n_layers} would fix the whole slab ({n_total} layers)"
        )
    idx = np.where(layers > n_total - n_layers)[0]
    atoms.constraints = list(atoms.constraints) + [FixAtoms(indices=idx)]
    return atoms


def bulk_lattice_constant(symbol: str, calculator, strain: float = 0.04, n: int = 9) -> float:
    """Equilibrium lattice constant of the element's reference crystal for this calculator.

    Fits an equation of state to a volume scan of the primitive cell (c/a of hcp kept).
    """
    from ase.build import bulk
    from ase.eos import EquationOfState

    atoms = bulk(symbol)
    a_ref = float(reference_states[atomic_numbers[symbol]]["a"])
    cell0 = atoms.cell[:].copy()
    scales = np.linspace(1 - strain, 1 + strain, n)
    vols, ens = [], []
    for s in scales:
        at = atoms.copy()
        at.set_cell(cell0 * s, scale_atoms=True)
        at.calc = calculator
        vols.append(at.get_volume())
        ens.append(at.get_potential_energy())
    k = int(np.argmin(ens))
    if k in (0, n - 1):
        raise ValueError(
            f"the energy of bulk {symbol} has no minimum within ±{strain:.0%} of a = {a_ref} Å for "
            f"this calculator; pass lattice_constant explicitly"
        )
    v0, _, _ = EquationOfState(vols, ens, eos="birchmurnaghan").fit()
    return a_ref * (v0 / atoms.get_volume()) ** (1 / 3)
