"""geomformer-md: a GeoMFormer machine-learning force field for ASE.

>>> from geomformer_md import GeoMFormerCalculator
>>> atoms.calc = GeoMFormerCalculator()          # the default shipped potential
"""

__version__ = "0.1.0"

from .calculator import GeoMFormerCalculator
from .data.graph import AtomGraph, atoms_to_graph
from .io.checkpoint import ModelFileError, load_model, save_model
from .io.registry import list_potentials, load_potential
from .model import GeoMFormer, GeoMFormerConfig
from .potential import Potential

# Workflows import ASE optimizers, phonopy etc.; load them on first use.
_LAZY = {
    "relax": "simulate.relax",
    "RelaxResult": "simulate.relax",
    "run_md": "simulate.md",
    "MDResult": "simulate.md",
    "adsorption_energies": "simulate.adsorption",
    "AdsorptionTable": "simulate.adsorption_table",
    "phonons": "simulate.phonons",
    "PhononResult": "simulate.phonons",
    "predict": "simulate.batch_predict",
    "relax_many": "simulate.batch_relax",
    "run_md_many": "simulate.batch_md",
    "BatchEvaluator": "simulate.batch",
    "BatchRelaxResult": "simulate.batch_relax",
    "NonFiniteResultError": "simulate.batch",
    "train": "train",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'geomformer_md' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "AtomGraph",
    "GeoMFormer",
    "GeoMFormerCalculator",
    "GeoMFormerConfig",
    "ModelFileError",
    "Potential",
    "atoms_to_graph",
    "list_potentials",
    "load_model",
    "load_potential",
    "save_model",
]
