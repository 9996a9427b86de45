"""Adsorption energies on metal slabs: the old import path, kept.

The code lives in modules with one job each; every name this module defined is
re-exported here, so ``from geomformer_md.simulate.catalysis import ...`` keeps working:

- :mod:`.slabs`: slabs from a spec (``"Pt111"``), the bulk lattice constant of a
  calculator, fixed bottom layers.
- :mod:`.sites`: the layers and adsorption sites of a slab (fcc(211) step sites too).
- :mod:`.adsorbates`: an adsorbate from its name, its starting orientations, its
  starting height.
- :mod:`.references`: the gas-phase references of adsorption energies.
- :mod:`.adsorption_table`: :class:`AdsorptionRow` and :class:`AdsorptionTable`.
- :mod:`.adsorption`: :func:`adsorption_energies`, the workflow.
- :func:`check_elements` is in :mod:`.relax`, beside ``make_calculator``.
"""

# ruff: noqa: F401  (a module of re-exports; the private names are used by the tests and
# train/replay.py)
from .adsorbates import (
    _bonds,
    _lift_clear,
    _place_height,
    _tilt,
    adsorbate_from_name,
    starting_orientations,
)
from .adsorption import _relax, _resolve_slab, _row, adsorption_energies, relax_gas
from .adsorption_table import CSV_COLUMNS, ROW_COLUMNS, AdsorptionRow, AdsorptionTable
from .references import (
    DEFAULT_REFERENCES,
    ELEMENT_REFERENCES,
    GAS_MOLECULES,
    _check_balance,
    _composition_reference,
    _gas_molecule,
    format_reference,
    resolve_references,
)
from .relax import _model_species, check_elements
from .sites import (
    _LAYER_TOL,
    _atom_beneath,
    _wrap_xy,
    nearest_site,
    site_images,
    site_positions,
    surface_layers,
    with_fcc211_sites,
)
from .slabs import (
    _BUILDERS,
    DEFAULT_SIZE,
    _crystal,
    build_slab,
    bulk_lattice_constant,
    fix_bottom,
    parse_slab_spec,
)

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_REFERENCES",
    "DEFAULT_SIZE",
    "ELEMENT_REFERENCES",
    "GAS_MOLECULES",
    "ROW_COLUMNS",
    "AdsorptionRow",
    "AdsorptionTable",
    "adsorbate_from_name",
    "adsorption_energies",
    "build_slab",
    "bulk_lattice_constant",
    "check_elements",
    "fix_bottom",
    "format_reference",
    "nearest_site",
    "parse_slab_spec",
    "relax_gas",
    "resolve_references",
    "site_images",
    "site_positions",
    "starting_orientations",
    "surface_layers",
    "with_fcc211_sites",
]
