"""Gas-phase references of adsorption energies: which molecules, with which coefficients.

    E_ads = E(slab + adsorbate) - E(slab) - sum_k c_k E(gas_k)

The reference is a linear combination of closed-shell molecules with the adsorbate's
composition (``{"H2O": 1, "H2": -0.5}`` for OH); :func:`resolve_references` picks it
and checks that it balances.
"""

from __future__ import annotations

from collections import Counter

from ase import Atoms

# Gas-phase references. Each entry: molecule name (ase.build.molecule) -> coefficient.
# The defaults follow common practice in computational catalysis: elements from
# their diatomic gases, C from CO - 1/2 O2 (graphite/CH4 are worse for an ML
# potential trained on surfaces), OH from water (computational-hydrogen-electrode
# convention), stable molecules from themselves.
DEFAULT_REFERENCES: dict[str, dict[str, float]] = {
    "H": {"H2": 0.5},
    "O": {"O2": 0.5},
    "N": {"N2": 0.5},
    "C": {"CO": 1.0, "O2": -0.5},
    "OH": {"H2O": 1.0, "H2": -0.5},
}
# Per-element references of the two schemes offered for any other adsorbate
# (``references="O2"`` or ``"H2O"``); composition decides the coefficients.
ELEMENT_REFERENCES: dict[str, dict[str, dict[str, float]]] = {
    "O2": {
        "H": {"H2": 0.5},
        "O": {"O2": 0.5},
        "N": {"N2": 0.5},
        "C": {"CO": 1.0, "O2": -0.5},
    },
    "H2O": {
        "H": {"H2": 0.5},
        "O": {"H2O": 1.0, "H2": -1.0},
        "N": {"N2": 0.5},
        "C": {"CO": 1.0, "H2O": -1.0, "H2": 1.0},
    },
}
# Closed-shell molecules that are their own reference when adsorbed intact.
GAS_MOLECULES = ("H2", "O2", "N2", "CO", "CO2", "H2O", "NH3", "CH4", "NO")


def resolve_references(name: str, mol: Atoms, references=None) -> dict[str, float]:
    """The gas-phase reference of adsorbate ``name`` as {molecule: coefficient}.

    ``references``: None (DEFAULT_REFERENCES, a stable molecule references itself,
    anything else by composition with the "O2" scheme), "O2" or "H2O" (composition
    with that scheme), a dict {molecule: coefficient} for this adsorbate, or a dict
    {adsorbate: {molecule: coefficient}}. The composition must balance.
    """
    if (
        isinstance(references, dict)
        and references
        and all(isinstance(v, dict) for v in references.values())
    ):
        references = references.get(name)
    if references is None:
        if name in DEFAULT_REFERENCES:
            ref = dict(DEFAULT_REFERENCES[name])
        elif name in GAS_MOLECULES:
            ref = {name: 1.0}
        else:
            ref = _composition_reference(mol, "O2", name)
    elif isinstance(references, str):
        if references not in ELEMENT_REFERENCES:
            raise ValueError(
                f"unknown reference scheme {references!r}; use one of {sorted(ELEMENT_REFERENCES)} "
                f"or a dict like {{'H2O': 1, 'H2': -0.5}}"
            )
        ref = _composition_reference(mol, references, name)
    elif isinstance(references, dict):
        ref = {str(k): float(v) for k, v in references.items()}
    else:
        raise ValueError(f"references must be None, 'O2', 'H2O' or a dict, got {references!r}")
    _check_balance(name, mol, ref)
    return ref


def _composition_reference(mol: Atoms, scheme: str, name: str) -> dict[str, float]:
    table = ELEMENT_REFERENCES[scheme]
    ref: dict[str, float] = {}
    for el, n in Counter(mol.get_chemical_symbols()).items():
        if el not in table:
            raise ValueError(
                f"no default gas reference for element {el} of adsorbate {name}; pass "
                f"references={{molecule: coefficient, ...}}"
            )
        for gas, c in table[el].items():
            ref[gas] = ref.get(gas, 0.0) + n * c
    return {k: v for k, v in ref.items() if abs(v) > 1e-12}


def _gas_molecule(name: str) -> Atoms:
    from ase.build import molecule

    try:
        return molecule(name)
    except KeyError:
        raise ValueError(
            f"unknown gas reference molecule {name!r} (must be an ase.build.molecule name)"
        ) from None


def _check_balance(name: str, mol: Atoms, ref: dict[str, float]) -> None:
    have = Counter()
    for gas, c in ref.items():
        for el, n in Counter(_gas_molecule(gas).get_chemical_symbols()).items():
            have[el] += c * n
    want = Counter(mol.get_chemical_symbols())
    bad = {el for el in set(have) | set(want) if abs(have[el] - want[el]) > 1e-9}
    if bad:
        raise ValueError(
            f"gas reference {ref} for {name} does not have its composition: "
            + ", ".join(f"{el} {have[el]:g} vs {want[el]}" for el in sorted(bad))
        )


def format_reference(ref: dict[str, float]) -> str:
    parts = []
    for gas, c in ref.items():
        sign = "-" if c < 0 else "+"
        mag = "" if abs(abs(c) - 1) < 1e-12 else f"{abs(c):g} "
        parts.append(f"{sign} {mag}{gas}")
    s = " ".join(parts)
    return s[2:] if s.startswith("+ ") else s
