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

__all__ = [
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
