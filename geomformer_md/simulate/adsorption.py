"""Adsorption energies on metal slabs: enumerate sites, relax, reference to gas molecules.

    E_ads = E(slab + adsorbate) - E(slab) - sum_k c_k E(gas_k)

where the gas-phase reference is a linear combination of closed-shell molecules
with the adsorbate's composition (``{"H2O": 1, "H2": -0.5}`` for OH). All
energies are relaxed energies from the same calculator, so the result is a
property of the potential alone.

The parts: slabs from a spec (:mod:`.slabs`), their layers and sites (:mod:`.sites`),
the adsorbate and its starting orientations (:mod:`.adsorbates`), the gas references
(:mod:`.references`) and the result table (:mod:`.adsorption_table`). This module is
the workflow that runs the relaxations.

Example::

    table = adsorption_energies(("Pt", "111", (3, 3, 4)), "O", calculator=calc)
    print(table)            # most stable site first
    table.to_csv("O_Pt111.csv")
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from ..data.contacts import closest_contact
from ._progress import progress_bar
from .adsorbates import (
    _bonds,
    _lift_clear,
    _place_height,
    _tilt,
    adsorbate_from_name,
    starting_orientations,
)
from .adsorption_table import AdsorptionRow, AdsorptionTable
from .references import _gas_molecule, resolve_references
from .relax import check_elements, make_calculator, relax
from .sites import nearest_site, site_positions, with_fcc211_sites
from .slabs import build_slab, bulk_lattice_constant, fix_bottom, parse_slab_spec


def _resolve_slab(slab_or_spec, lattice_constant, vacuum, calc) -> tuple[Atoms, str]:
    if isinstance(slab_or_spec, Atoms):
        slab = slab_or_spec.copy()
        slab.calc = None
        if not (slab.pbc[0] and slab.pbc[1]):
            raise ValueError("the slab must be periodic in x and y")
        info = slab.info.get("adsorbate_info", {})
        if info.get("sites") == {} and "cell" not in info:
            slab = with_fcc211_sites(slab)  # ase.build.fcc211 leaves an empty dict
        site_positions(slab)  # raises a clear error without sites
        return slab, slab.get_chemical_formula()
    symbol, facet, size = parse_slab_spec(slab_or_spec)
    a = lattice_constant
    if isinstance(a, str):
        if a != "relax":
            raise ValueError(f"lattice_constant must be a number, None or 'relax', got {a!r}")
        a = bulk_lattice_constant(symbol, calc)
    slab = build_slab(symbol, facet, size, a=a, vacuum=vacuum)
    return slab, f"{symbol}({facet}) {size[0]}x{size[1]}x{size[2]}"


def _relax(atoms, calc, fmax, steps, relax_kwargs):
    kwargs = dict(relax_kwargs)
    kwargs.setdefault("progress", False)
    relaxed, res = relax(
        atoms, calculator=calc, fmax=fmax, steps=steps, fix_bottom_layers=None, **kwargs
    )
    return relaxed, res


def relax_gas(
    name: str, calculator, fmax: float = 0.05, steps: int = 500, box: float = 10.0, **relax_kwargs
):
    """Relax a gas molecule (ase.build.molecule name) alone in a non-periodic box.

    Returns (relaxed atoms, relax result).
    """
    mol = _gas_molecule(name)
    mol.center(vacuum=box)
    mol.pbc = False
    return _relax(mol, calculator, fmax, steps, relax_kwargs)


def adsorption_energies(
    slab,
    adsorbate,
    calculator=None,
    sites=None,
    height: float | None = None,
    fix_bottom_layers: int | None = 2,
    fmax: float = 0.05,
    steps: int = 500,
    references=None,
    gas_energies: dict[str, float] | None = None,
    lattice_constant: float | str | None = "relax",
    vacuum: float = 10.0,
    binding_atom: int | None = None,
    csv: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    orientations: int = 3,
    seed: int | None = 0,
    **relax_kwargs,
) -> AdsorptionTable:
    """Adsorption energy of one adsorbate on every (or chosen) site of a slab.

    Args:
        slab: an ase.Atoms slab carrying ``info["adsorbate_info"]["sites"]`` (ase.build
            fcc111/fcc100/fcc110/hcp0001/bcc*, or fcc211 via :func:`with_fcc211_sites`),
            or a spec: ``"Pt111"``, ``"Cu100"``, ``"Pt211"``, ``("Pt", "111", (3, 3, 4))``.
        adsorbate: element symbol ("O"), ase.build.molecule name ("CO", "OH", "H2O")
            or an ase.Atoms; it is placed binding atom down (C of CO, O of OH).
        calculator: any ASE calculator, a potential name or model path; None = the
            default shipped GeoMFormer potential.
        sites: None or "all" for every site of the slab, or a list of site names.
        height: height of the binding atom above the top slab atom (Å, as in
            ase.build.add_adsorbate); None places it where it touches the surface
            (sum of covalent radii), which adapts to top/bridge/hollow sites.
        fix_bottom_layers: bottom layers held fixed (by tags, else z layers); None
            keeps the slab's own constraints only.
        fmax, steps: convergence of every relaxation (eV/Å, max steps).
        references: None (defaults: H from 1/2 H2, O from 1/2 O2, N from 1/2 N2, C from
            CO - 1/2 O2, OH from H2O - 1/2 H2, stable molecules from themselves), "O2" or
            "H2O" (composition-based schemes), or a dict {molecule: coefficient}.
        gas_energies: energies (eV) of reference molecules to use instead of relaxing them.
        lattice_constant: for specs: "relax" (fit the bulk equation of state with the
            calculator, the consistent choice), None (ASE's experimental value) or Å.
        vacuum: vacuum on each side for specs, Å.
        binding_atom: index in the adsorbate molecule of the atom that binds.
        csv: write the table to this CSV file.
        progress: show progress (a bar on a terminal, plain lines in a log file).
        orientations: starting orientations per site for a molecule (an atom has one):
            upright, then tilted ever further (15° to 70° from the normal, ±5°) with a
            random azimuth and turn about the molecule's axis; each is relaxed and the
            lowest kept (intact and without close contacts first). A start that keeps the
            molecule's symmetry stays on it (OH upright on a top site), so the tilted starts
            are what finds flat or tilted minima. 1: upright only.
        seed: seeds the tilts and turns (per site, so a site's starts do not depend on
            which other sites are scanned); None: fresh entropy.
        **relax_kwargs: passed on to ``geomformer_md.simulate.relax.relax`` (optimizer, ...).

    Returns:
        AdsorptionTable, rows sorted by E_ads (most stable first); rows with a close
        contact (two atoms fused, ``min_bond_ratio`` < 0.6: not physical) come last.
    """
    if not (isinstance(orientations, int) and orientations >= 1):
        raise ValueError(f"orientations must be an integer >= 1, got {orientations!r}")

    calc = make_calculator(calculator)
    name, mol, bind = adsorbate_from_name(adsorbate, binding_atom)  # cheap checks first
    ref = resolve_references(name, mol, references)
    slab, slab_name = _resolve_slab(slab, lattice_constant, vacuum, calc)
    all_sites, _ = site_positions(slab)
    if sites is None or sites == "all":
        chosen = list(all_sites)
    else:
        chosen = [sites] if isinstance(sites, str) else list(sites)
        unknown = [s for s in chosen if s not in all_sites]
        if unknown or not chosen:
            raise ValueError(
                f"unknown site(s) {unknown or chosen} for this slab; it has {list(all_sites)}"
            )
    given = dict(gas_energies or {})
    gases = [g for g in ref if g not in given]
    numbers = set(slab.numbers) | set(mol.numbers)
    for g in gases:
        numbers |= set(_gas_molecule(g).numbers)
    check_elements(calc, numbers)

    n_slab = len(slab)
    clean = fix_bottom(slab, fix_bottom_layers or 0)
    n_orient = orientations if len(mol) > 1 else 1
    bar = progress_bar(
        1 + len(gases) + len(chosen) * n_orient, f"{name}/{slab_name}", progress, unit="relaxation"
    )

    bar.set_postfix_str("clean slab")
    slab_relaxed, slab_res = _relax(clean, calc, fmax, steps, relax_kwargs)
    bar.update()
    gas_e, gas_ok = dict(given), True
    for g in gases:
        bar.set_postfix_str(f"gas {g}")
        _, res = relax_gas(g, calc, fmax=fmax, steps=steps, **relax_kwargs)
        gas_e[g], gas_ok = float(res.energy), gas_ok and bool(res.converged)
        bar.update()
    e_ref = float(sum(c * gas_e[g] for g, c in ref.items()))

    bonds = _bonds(mol)
    rows = []
    for site in chosen:
        tried = []
        for label, rotated in starting_orientations(mol, bind, n_orient, seed, site):
            bar.set_postfix_str(f"site {site} {label}")
            work = clean.copy()
            xy = all_sites[site]
            info = work.info["adsorbate_info"]
            top = info.get("top layer atom index", int(np.argmax(work.positions[:, 2])))
            h = (
                height
                if height is not None
                else _place_height(work, xy, mol[bind].symbol) - work.positions[top, 2]
            )
            from ase.build import add_adsorbate

            add_adsorbate(work, rotated, h, position=site, mol_index=bind)
            _lift_clear(work, n_slab, bind)
            relaxed, res = _relax(work, calc, fmax, steps, relax_kwargs)
            row = _row(site, relaxed, res, n_slab, bind, bonds, float(slab_res.energy), e_ref, slab)
            tried.append(replace(row, orientation=label))
            bar.update()
        # intact and physical first, then the lowest energy
        best = min(
            tried, key=lambda r: (r.close_contact, r.dissociated, math.isnan(r.e_ads), r.e_ads)
        )
        rows.append(replace(best, orientation_e_ads={r.orientation: r.e_ads for r in tried}))
    bar.set_postfix_str("")
    bar.close()
    rows.sort(key=lambda r: (math.isnan(r.e_ads), r.close_contact, r.e_ads))
    table = AdsorptionTable(
        adsorbate=name,
        slab_name=slab_name,
        rows=rows,
        slab_energy=float(slab_res.energy),
        slab_converged=bool(slab_res.converged),
        reference=ref,
        gas_energies=gas_e,
        references_converged=gas_ok,
        reference_energy=e_ref,
        slab=slab_relaxed,
        orientations=n_orient,
        seed=seed,
    )
    if csv is not None:
        table.to_csv(csv)
    return table


def _row(site, relaxed, res, n_slab, bind, bonds, e_slab, e_ref, slab) -> AdsorptionRow:
    pos = relaxed.positions
    b = n_slab + bind
    slab_pos = pos[:n_slab]
    height = float(pos[b, 2] - slab_pos[:, 2].max())
    final, _ = nearest_site(slab, pos[b, :2])
    # Left the surface: no slab atom within 1.5x the bond length of the binding atom.
    d = relaxed.get_distances(b, list(range(n_slab)), mic=True)
    r0 = covalent_radii[relaxed.numbers[b]] + covalent_radii[relaxed.numbers[:n_slab]]
    if np.all(d > 1.5 * r0):
        final = "desorbed"
    # Dissociated: a bond of the gas molecule (< 1.25 x sum of radii) stretched past 1.5 x.
    r = covalent_radii[relaxed.numbers]
    broken = any(
        relaxed.get_distance(n_slab + i, n_slab + j, mic=True)
        > 1.5 * (r[n_slab + i] + r[n_slab + j])
        for i, j in bonds
    )
    e = float(res.energy)
    contact = closest_contact(relaxed)
    return AdsorptionRow(
        site=site,
        final_site=final,
        moved=final != site,
        e_ads=e - e_slab - e_ref,
        energy=e,
        height=height,
        converged=bool(res.converged),
        steps=int(res.steps),
        fmax=float(res.fmax),
        dissociated=bool(broken),
        atoms=relaxed,
        min_bond_ratio=contact.ratio,
        close_contact=contact.close,
        tilt_deg=_tilt(relaxed, n_slab, b),
        max_force_std=float(getattr(res, "max_force_std", math.nan)),
        uncertain=bool(getattr(res, "uncertain", False)),
    )
