"""``geomformer-md lammps export``: a model as an AOTInductor package the plugin loads.

What is exported is the function one LAMMPS rank needs, in one of two ghost modes
(``ghost_mode``, stored in the package's metadata; docs/lammps.md compares them):

* "halo" (the default): (numbers [n], edge_index [2, E], edge_vec [E, 3], own [n_own, 0])
  -> (energies of the own atoms [n_own], dE/d edge_vec [E, 3]). Every layer is computed
  for the own atoms only; before each block the ghost nodes' features are filled from the
  ranks that own them, and in the backward pass the gradients with respect to them are
  summed into their owners, by the custom operators geomformer::halo / halo_reverse
  (halo.py), which the plugin implements with LAMMPS's forward and reverse communication.
  One cutoff of ghosts; no work is done twice.
* "recompute": (numbers [n], edge_index [2, E], edge_vec [E, 3], layer sizes) -> the same.
  The rank computes the lower layers of the ghosts its atoms depend on itself, from
  (layers + 1) cutoffs of ghosts; no communication inside the model. The layer sizes
  (graph.py) are passed as the shapes of empty tensors, so that they stay dynamic.

Either way it is the model's whole per-atom energy (GeoMFormer.forward, so any term added
there, such as a short-range repulsion, comes along) and its gradient in one graph: the
forward pass's activations serve the backward pass.

How: make_fx traces the function, backward included, into one graph of aten operations
(and the two custom operators) with symbolic sizes (torch.export alone cannot trace
autograd.grad; NequIP does the same); torch.export and AOTInductor compile it to a shared
library packaged with the weights and metadata (.pt2); the custom operators become calls
into torch's dispatcher by name. Why AOTInductor and not TorchScript: on the same traced
graph (288-atom slab), the compiled package ran energy + gradient 2.2x faster than
TorchScript in float32 and 2.3x in float64, and 1.7x / 1.4x faster than eager PyTorch
(docs/lammps.md, benchmarks/bench_lammps.py --parts formats). The price is a few minutes
of C++ compilation at export, and a package tied to the torch version and CPU type it
was compiled for.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..model import GeoMFormer
from ..model.config import _DTYPES
from . import halo as _halo  # registers geomformer::halo / halo_reverse
from .graph import RankGraph, rank_graph

# 1: AOTInductor package, the "recompute" mode (no ghost_mode key).
# 2: adds the metadata keys ghost_mode ("halo" or "recompute") and halo_width.
FORMAT_VERSION = 2
GHOST_MODES = ("halo", "recompute")
TOLERANCE = {torch.float64: 1e-9, torch.float32: 2e-4}  # export-time check, relative


class RankEnergy(torch.nn.Module):
    """The exported function (module docstring). recompute: ``sizes[k]`` has shape (atoms,
    edges, 0); halo: one size, ``own`` of shape (own atoms, 0)."""

    def __init__(self, model: GeoMFormer, halo: bool = False) -> None:
        super().__init__()
        self.model, self.halo = model, halo

    def forward(self, numbers, edge_index, edge_vec, *sizes):
        edge_vec = edge_vec.requires_grad_(True)
        exchange = None
        if self.halo:
            (own,) = sizes
            layer_sizes = [(own.shape[0], edge_index.shape[1])] * (len(self.model.blocks) + 1)

            def exchange(zi, ze):
                return _halo.exchange(zi, ze, numbers)
        else:
            layer_sizes = [(s.shape[0], s.shape[1]) for s in sizes]
        energies = self.model(numbers, edge_index, edge_vec, layer_sizes=layer_sizes,
                              exchange=exchange)["energy"]
        energies = energies[: layer_sizes[-1][0]]
        (grad,) = torch.autograd.grad([energies.sum()], [edge_vec])
        return energies, grad


def inputs(graph: RankGraph, dtype: torch.dtype) -> list[torch.Tensor]:
    """The exported function's arguments for a rank graph (as the plugin builds them)."""
    if graph.halo:
        sizes = [torch.empty(graph.n_own, 0, dtype=torch.uint8)]
    else:
        sizes = [torch.empty(a, e, 0, dtype=torch.uint8) for a, e in graph.layer_sizes]
    return [graph.numbers, graph.edge_index, graph.edge_vec.to(dtype), *sizes]


def _rod(model: GeoMFormer, own_length: float, seed: int):
    """A rod of random elements, long enough for (layers + 3) cutoffs past ``own_length``
    lattice constants; and its lattice constant."""
    from ase.build import bulk

    cfg = model.config
    a = 0.6 * cfg.cutoff * math.sqrt(2.0)  # nearest neighbours at 0.6 r_c
    cells = math.ceil(own_length + (cfg.n_layers + 3) * cfg.cutoff / a)
    rod = bulk("Cu", "fcc", a=a, cubic=True).repeat((cells, 1, 1))
    rod.pbc = False
    rng = np.random.default_rng(seed)
    rod.numbers = rng.choice(cfg.species, len(rod))
    rod.positions += rng.normal(scale=0.03 * a, size=rod.positions.shape)
    return rod, a


def example_graph(model: GeoMFormer, own_length: float = 0.8, seed: int = 0,
                  halo: bool = False) -> RankGraph:
    """A rank graph in which every layer size differs and exceeds 1 (so that tracing keeps
    them symbolic): a rod of random elements whose atoms within ``own_length`` lattice
    constants of its end are the rank's own."""
    rod, a = _rod(model, own_length, seed)
    cfg = model.config
    return rank_graph(rod, rod.positions[:, 0] < own_length * a, cfg.cutoff, cfg.n_layers, halo)


def example_ranks(model: GeoMFormer, own_length: float = 0.8, seed: int = 0):
    """The rod of example_graph split in two ranks at ``own_length`` lattice constants, as
    halo-mode graphs (rank 0's is example_graph's); and the number of atoms."""
    rod, a = _rod(model, own_length, seed)
    cfg = model.config
    left = rod.positions[:, 0] < own_length * a
    graphs = [rank_graph(rod, own, cfg.cutoff, cfg.n_layers, halo=True) for own in (left, ~left)]
    return graphs, len(rod)


@contextlib.contextmanager
def _no_duck_shapes():
    """Sizes that happen to be equal in the example stay separate symbols (NequIP does the
    same): otherwise tracing would assume they are always equal."""
    from torch.fx.experimental import _config

    old = _config.use_duck_shape
    _config.use_duck_shape = False
    try:
        yield
    finally:
        _config.use_duck_shape = old


def trace(model: GeoMFormer, halo: bool = False):
    """RankEnergy(model, halo) as an FX graph of aten operations with symbolic sizes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    fn = RankEnergy(model, halo)
    example = inputs(example_graph(model, halo=halo), model.config.torch_dtype)
    with _no_duck_shapes():
        return make_fx(fn, tracing_mode="symbolic", _allow_non_fake_inputs=True,
                       _error_on_data_dependent_ops=True)(*example), example


def exportable_model(model: GeoMFormer, dtype: str | None) -> GeoMFormer:
    """A private copy of ``model`` in ``dtype``, in eval mode, without weight gradients;
    ValueError for models the plugin cannot run."""
    from ..calculator import private_model

    if dtype is not None and dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    gm = private_model(model, dtype, "cpu")
    cfg = gm.config
    if not cfg.energy_head:
        raise ValueError("this model has no energy head; only potentials can be exported")
    if cfg.n_scalar_inputs or cfg.n_vector_inputs:
        raise ValueError("this model needs extra per-atom inputs (node_scalars / node_vectors), "
                         "which LAMMPS does not provide")
    for p in gm.parameters():
        p.requires_grad_(False)
    return gm


def metadata(model: GeoMFormer, source: str, ghost_mode: str) -> dict[str, str]:
    """What the plugin reads (format, ghost mode, cutoff, layers, elements, dtype) and what
    a person may want to know about the file. Values are strings (AOTInductor's metadata)."""
    from ase.data import chemical_symbols

    from .. import __version__

    cfg = model.config
    halo = ghost_mode == "halo"
    return {
        "geomformer_lammps_format": str(FORMAT_VERSION),
        "ghost_mode": ghost_mode,
        "halo_width": str(4 * cfg.d_model),  # numbers exchanged per atom and layer (zi, ze)
        "cutoff": repr(float(cfg.cutoff)),
        "n_layers": str(cfg.n_layers),
        "elements": " ".join(chemical_symbols[z] for z in cfg.species),
        "atomic_numbers": " ".join(str(z) for z in cfg.species),
        "dtype": cfg.dtype,
        "ghost_cutoff_without_skin": repr((1 if halo else cfg.n_layers + 1) * float(cfg.cutoff)),
        "source": source,
        "config": json.dumps(cfg.to_dict()),
        "geomformer_md_version": __version__,
        "torch_version": torch.__version__,
    }


def _deviation(model: GeoMFormer, want, got, n_atoms: int) -> float:
    worst = 0.0
    for w, o, what in zip(want, got, ("energies", "gradients"), strict=True):
        scale = float(w.abs().max()) + 1.0
        err = float((w - o).abs().max()) / scale
        worst = max(worst, err)
        if not err <= TOLERANCE[model.config.torch_dtype]:
            raise ValueError(f"the compiled model's {what} differ from the model's by "
                             f"{err:.2e} (relative) on a {n_atoms}-atom graph")
    return worst


def check_against_eager(model: GeoMFormer, load, halo: bool = False) -> float:
    """Largest relative deviation of the compiled function (``load()`` returns one) from
    the eager one, on two rank graphs of different sizes (halo: two splits of a rod in two
    simulated ranks that exchange ghost features); ValueError above TOLERANCE."""
    eager = RankEnergy(model, halo)
    dtype = model.config.torch_dtype
    worst = 0.0
    if not halo:
        run = load()
        for g in (example_graph(model), example_graph(model, own_length=2.3, seed=1)):
            args = inputs(g, dtype)
            want = [t.detach() for t in eager(*args)]
            worst = max(worst, _deviation(model, want, run(*args), g.numbers.shape[0]))
        return worst
    runs = [load(), load()]  # one per simulated rank: a package runs one call at a time
    for own_length, seed in ((0.8, 0), (2.3, 1)):
        graphs, n_atoms = example_ranks(model, own_length, seed)
        ranks = _halo.SimulatedRanks(graphs, n_atoms)
        args = [inputs(g, dtype) for g in graphs]
        want = ranks.run(lambda r, args=args: [t.detach() for t in eager(*args[r])])
        got = ranks.run(lambda r, args=args: runs[r](*args[r]))
        for w, o, g in zip(want, got, graphs, strict=True):
            worst = max(worst, _deviation(model, w, o, g.numbers.shape[0]))
    return worst


def export(model, output: str | os.PathLike, dtype: str | None = None, log=print,
           ghost_mode: str = "halo") -> Path:
    """Write ``model`` (a shipped name, a model file or a GeoMFormer) for pair_style
    geomformer to ``output`` (.pt2), atomically; returns the path.

    ghost_mode: "halo" (ghost features exchanged between ranks at every layer) or
    "recompute" (each rank recomputes them from (layers + 1) cutoffs of ghosts); see the
    module docstring and docs/lammps.md. Compiles C++ (a few minutes); checks the compiled
    package against the model on two graphs of different sizes before writing it.
    """
    from torch.export import Dim

    from ..io.registry import default_potential_name

    if ghost_mode not in GHOST_MODES:
        raise ValueError(f"ghost_mode must be 'halo' or 'recompute', got {ghost_mode!r}")
    output = Path(output)
    if output.suffix != ".pt2":
        raise ValueError(f"the output file must end in .pt2 (an AOTInductor package), got {output}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"the folder of the output file does not exist: {output.parent}")
    gm = exportable_model(model, dtype)
    source = model if isinstance(model, (str, os.PathLike)) else type(model).__name__
    source = default_potential_name() if model is None else str(source)
    halo = ghost_mode == "halo"
    t0 = time.perf_counter()
    fx, example = trace(gm, halo)
    log(f"traced the model and its gradient ({len(fx.graph.nodes)} operations, "
        f"{time.perf_counter() - t0:.0f} s)")
    auto = {0: Dim.AUTO, 1: Dim.AUTO}
    shapes = [{0: Dim.AUTO}, {1: Dim.AUTO}, {0: Dim.AUTO}]
    shapes += [{0: Dim.AUTO}] if halo else [auto] * (gm.config.n_layers + 1)
    # Compiled under its final name in a private folder (the name is the package's top
    # folder), then moved into place: a failed export leaves no file that looks finished.
    # torch's own deprecation notices (FutureWarning) are not the user's to act on.
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmpdir, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.export.export(fx, tuple(example), dynamic_shapes=shapes, strict=False)
        log("compiling with AOTInductor (a few minutes) ...")
        t0 = time.perf_counter()
        tmp = os.path.join(tmpdir, output.name)
        torch._inductor.aoti_compile_and_package(
            program, package_path=tmp,
            inductor_configs={"aot_inductor.metadata": metadata(gm, source, ghost_mode)},
        )
        log(f"compiled in {time.perf_counter() - t0:.0f} s; checking it against the model")
        worst = check_against_eager(gm, lambda: torch._inductor.aoti_load_package(tmp), halo)
        log(f"largest relative deviation from the model: {worst:.1e}")
        os.replace(tmp, output)
    return output
