"""Replay for fine-tuning: structures of the starting model's domain, labelled by that model.

A potential fine-tuned on a few hundred frames of one surface drifts everywhere else: the
network's weights are shared by every element and environment. Training on the new frames
together with frames of the old domain, labelled by the starting model itself (pseudo-label
replay), holds the old domain where it was while the new data moves the new one. Nothing of
the base model's training data is needed, so this works from an installed wheel.

The generated structures follow the recipes of the catalysis data the shipped potentials were
trained on (scripts/datagen): bulk crystals, clean slabs, slabs with one adsorbate made of the
model's non-metal elements, and gas molecules, all small and rattled, built at the starting
model's own lattice constants.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols, reference_states

# Adsorbates and gas molecules tried, kept where the model knows all their elements.
ADSORBATES = ("H", "C", "N", "O", "OH", "CO", "NH", "H2O")
GAS = ("H2", "O2", "N2", "CO", "H2O", "NH3", "CH4", "OH")
FACETS = {"fcc": ("111", "100", "211"), "bcc": ("110", "100"), "hcp": ("0001",)}
SLAB_SIZE = {"211": (3, 2, 4)}  # every other facet: (2, 2, 4), 16 atoms
# Share of each kind among the generated structures (each kind's recipes are drawn uniformly).
KIND_SHARE = {"bulk": 0.2, "slab": 0.15, "adsorbate": 0.55, "gas": 0.1}


def _crystal(z: int) -> str | None:
    state = reference_states[z] or {}
    return state.get("symmetry") if state.get("symmetry") in FACETS else None


def _elements(name: str) -> set[int]:
    from ase.symbols import string2symbols

    return {atomic_numbers[s] for s in string2symbols(name)}


def mostly_covered(numbers, covered) -> bool:
    """Whether more than half of these atoms are of the ``covered`` elements (the new data's).

    Such a structure's chemistry is what the new labels are meant to change: replaying the
    starting model's labels there would pull against them (a Pt slab with N replayed at the
    old level of theory contradicts the new data's clean Pt slabs), while a Cu slab with O
    keeps the old Cu and lets O on Pt follow the new data.
    """
    numbers = np.asarray(numbers)
    return bool(np.isin(numbers, list(covered)).sum() * 2 > len(numbers))


def replay_recipes(species, covered=frozenset()) -> list[tuple[str, tuple]]:
    """(kind, recipe) of every structure type the model's elements allow, minus those made
    mostly of the ``covered`` elements (mostly_covered; a slab counts as 16 metal atoms)."""
    species = set(int(z) for z in species)
    metals = sorted(z for z in species if _crystal(z))
    recipes = []
    for z in metals:
        sym = chemical_symbols[z]
        recipes.append(("bulk", (sym,)))
        for facet in FACETS[_crystal(z)]:
            recipes.append(("slab", (sym, facet)))
            recipes += [("adsorbate", (sym, facet, ads)) for ads in ADSORBATES
                        if _elements(ads) <= species]
    recipes += [("gas", (name,)) for name in GAS if _elements(name) <= species]

    def numbers(kind, recipe):
        if kind == "gas":
            return list(_gas_or_atom(recipe[0]).numbers)
        host = [atomic_numbers[recipe[0]]] * 16
        return host + (list(_gas_or_atom(recipe[2]).numbers) if kind == "adsorbate" else [])

    return [(k, r) for k, r in recipes if not mostly_covered(numbers(k, r), covered)]


def _gas_or_atom(name: str) -> Atoms:
    from ase.build import molecule

    return Atoms(name) if name in atomic_numbers else molecule(name)


def _bulk(sym: str, a: float, rng) -> Atoms:
    from ase.build import bulk

    atoms = bulk(sym, a=a).repeat((3, 3, 3) if rng.random() < 0.3 else (2, 2, 2))
    strain = np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))  # equations of state span ±5 %
    atoms.set_cell(atoms.cell[:] @ (0.5 * (strain + strain.T)), scale_atoms=True)
    return atoms


def _slab(sym: str, facet: str, a: float, ads: str | None, rng) -> Atoms:
    from ..simulate.catalysis import (
        _place_height,  # the contact height of the package's adsorption workflow
        adsorbate_from_name,
        build_slab,
        site_positions,
    )

    slab = build_slab(sym, facet, SLAB_SIZE.get(facet, (2, 2, 4)), a=a, vacuum=6.0)
    if ads is None:
        return slab
    sites, _ = site_positions(slab)
    site = sorted(sites)[rng.integers(len(sites))]
    _, mol, bind = adsorbate_from_name(ads)
    xy = sites[site]
    # From contact to 0.6 Å above it: the start of a relaxation path down to its end.
    z = _place_height(slab, xy, mol.get_chemical_symbols()[bind]) + rng.uniform(-0.05, 0.6)
    mol.positions += np.array([xy[0], xy[1], z]) - mol.positions[bind]
    out = slab.copy()
    out.info.pop("adsorbate_info", None)
    return out + mol


def _gas(name: str) -> Atoms:
    mol = _gas_or_atom(name)
    mol.center(vacuum=5.0)
    mol.pbc = False
    return mol


def generate_replay_structures(species, n: int, lattice_constant: Callable[[str], float],
                               covered=frozenset(), rattle: float = 0.05,
                               seed: int = 0) -> list[Atoms]:
    """``n`` rattled structures of the domain of a model knowing ``species``.

    Args:
        species: the model's atomic numbers.
        n: how many structures.
        lattice_constant: symbol -> lattice constant in Å (the starting model's own).
        covered: atomic numbers of the new data; structures made mostly of them are left out.
        rattle: the scale of the random displacements, Å: each structure's atoms are
            displaced with a standard deviation drawn from 0.5 to 3 times it.
        seed: random seed; the same arguments give the same structures.
    """
    recipes = replay_recipes(species, covered)
    if not recipes or n <= 0:
        return []
    by_kind: dict[str, list] = {}
    for kind, recipe in recipes:
        by_kind.setdefault(kind, []).append(recipe)
    kinds = sorted(by_kind)
    share = np.array([KIND_SHARE[k] for k in kinds])
    rng = np.random.default_rng(seed)
    constants: dict[str, float] = {}
    out = []
    for k in range(n):
        kind = kinds[rng.choice(len(kinds), p=share / share.sum())]
        recipe = by_kind[kind][rng.integers(len(by_kind[kind]))]
        if kind == "gas":
            atoms = _gas(recipe[0])
        else:
            sym = recipe[0]
            if sym not in constants:
                constants[sym] = lattice_constant(sym)
            a = constants[sym]
            if kind == "bulk":
                atoms = _bulk(sym, a, rng)
            else:
                atoms = _slab(sym, recipe[1], a, recipe[2] if kind == "adsorbate" else None, rng)
        # From near a minimum to hot MD (the base data's MD ran at 300-1200 K): each
        # structure's displacement scale is drawn from 0.5 to 3 times ``rattle``.
        sigma = rattle * rng.uniform(0.5, 3.0)
        atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        atoms.info = {"replay": "/".join((kind, *recipe)), "replay_index": k}
        out.append(atoms)
    return out
