"""Workflows on top of the calculator: relaxation, MD, phonons, adsorption energies and
batched inference.

>>> from geomformer_md.simulate import relax, run_md, adsorption_energies, phonons
>>> from geomformer_md.simulate import predict, relax_many, run_md_many
"""

# relax and phonons share their names with their modules: bound here eagerly, so that
# ``from geomformer_md.simulate import relax`` is the function even after something
# imported the module (which makes the module an attribute of this package). Both modules
# are light (phonopy loads on first use); the rest load on first use, as in the top level.
from .phonons import PhononResult, phonons
from .relax import RelaxResult, relax

_LAZY = {
    "run_md": "md",
    "MDResult": "md",
    "adsorption_energies": "adsorption",
    "AdsorptionTable": "adsorption_table",
    "predict": "batch_predict",
    "relax_many": "batch_relax",
    "BatchEvaluator": "batch",
    "BatchRelaxResult": "batch_relax",
    "NonFiniteResultError": "batch",
    "run_md_many": "batch_md",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'geomformer_md.simulate' has no attribute {name!r}")


__all__ = [*_LAZY, "PhononResult", "RelaxResult", "phonons", "relax"]
