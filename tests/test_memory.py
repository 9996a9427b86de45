"""Memory: empty volume costs nothing, the lean backward keeps less and changes nothing,
and a call that cannot fit is refused with one line before it starts."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from conftest import make_model

import geomformer_md.memory as memory
import geomformer_md.model.geomformer as gm_module
import geomformer_md.potential as potential_module
from geomformer_md import GeoMFormerCalculator, Potential, atoms_to_graph, load_potential
from geomformer_md.data.neighbors import brute_force_neighbor_list, matscipy_neighbor_list
from geomformer_md.memory import process_memory_mb
from geomformer_md.model.attention import tally_saved
from geomformer_md.simulate.batch import BatchEvaluator


def _call_rise_mb(calc, atoms) -> float:
    """Rise of this process's resident set during one calculator call (Linux)."""
    before = process_memory_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    calc.calculate(atoms, ["energy", "forces"], ["positions"])
    return process_memory_mb("VmHWM") - before


linux_only = pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs"
)


@linux_only
@pytest.mark.parametrize("pbc", [True, False])
def test_empty_volume_costs_no_memory(model64, pbc):
    """A CO molecule in a periodic 3000 Å box took 1.4 GB (matscipy's dense bin grid); two
    far-apart molecules without pbc likewise. Now < 100 MB, with the same energy as in a
    small box."""
    calc = GeoMFormerCalculator(model64)
    small = molecule("CO", cell=[20.0] * 3, pbc=pbc)
    calc.calculate(small, ["energy", "forces"], ["positions"])  # warm up (and calibrate)
    e_small = calc.results["energy"]
    if pbc:
        huge = molecule("CO", cell=[3000.0] * 3, pbc=True)
    else:
        huge = molecule("CO") + molecule("CO")
        huge.positions[2:] += [3000.0, 2000.0, 1000.0]
    rise = _call_rise_mb(calc, huge)
    assert rise < 100, f"{rise:.0f} MB for a CO molecule in empty space"
    expected = e_small if pbc else 2 * e_small
    assert calc.results["energy"] == pytest.approx(expected, abs=1e-9)


def test_sparse_box_neighbours_match_reference():
    """Where matscipy hands a mostly empty cell to the sparse cell list, the edges are
    still exactly the reference ones (triclinic, mixed pbc, atoms across the boundary)."""
    rng = np.random.default_rng(0)
    cell = np.array([[2000.0, 0, 0], [300.0, 1800.0, 0], [10.0, -20.0, 2500.0]])
    frac = np.concatenate([rng.uniform(-0.002, 0.002, (6, 3)), rng.uniform(0.998, 1.0, (4, 3))])
    pos = torch.tensor(frac @ cell)
    for pbc in ([True] * 3, [True, True, False]):
        got = matscipy_neighbor_list(pos, torch.tensor(cell), torch.tensor(pbc), 5.0)
        ref = brute_force_neighbor_list(pos, torch.tensor(cell), torch.tensor(pbc), 5.0)
        assert got[0].shape[1] > 0
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def _batch():
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    cu.rattle(0.05, seed=1)
    mol = molecule("CH3OH")
    mol.center(vacuum=4.0)
    return [cu, mol]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lean_backward_gives_identical_results(monkeypatch, dtype):
    """Recomputed gathers and the index-only scatter backward change nothing, bit for bit,
    also when the attention is split into several centre ranges."""
    monkeypatch.setattr(gm_module, "EDGE_CHUNK_BYTES", 16 * 1024)  # several ranges
    model = make_model(dtype)
    pot = Potential(model)
    graph = atoms_to_graph(_batch(), model.config.cutoff)
    like = graph.positions.to(model.config.torch_dtype)
    n_chunks = model._n_chunks(graph.n_edges + graph.n_atoms, like)
    assert n_chunks > 2
    out = {}
    for lean in (False, True):
        monkeypatch.setattr(potential_module, "LEAN_BACKWARD", lean)
        with torch.enable_grad():
            out[lean] = pot(graph, forces=True, stress=True)
    for key in ("energy", "energies", "forces", "stress"):
        assert torch.equal(out[True][key], out[False][key]), key


def test_lean_backward_keeps_a_third(monkeypatch):
    """What autograd keeps for the force backward: the lean mode keeps < 35 % of the plain
    graph's for the shipped default (measured 25 % on 500 Cu atoms)."""
    model = load_potential(None)
    pot = Potential(model)
    graph = atoms_to_graph(_batch(), model.config.cutoff)
    kept = {}
    for lean in (False, True):
        monkeypatch.setattr(potential_module, "LEAN_BACKWARD", lean)
        saved = {}

        def record(t, saved=saved):
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()

        with torch.enable_grad(), tally_saved(record):
            pot(graph, forces=True, stress=True)
        kept[lean] = sum(saved.values())
    assert kept[True] < 0.35 * kept[False]


def test_force_training_still_has_second_derivatives(model64):
    """create_graph=True (force training) builds the plain graph: the force loss has
    gradients with respect to the weights."""
    pot = Potential(model64)
    graph = atoms_to_graph(_batch(), model64.config.cutoff)
    with torch.enable_grad():
        out = pot(graph, forces=True, stress=True, create_graph=True)
        loss = out["forces"].pow(2).sum()
        params = [p for p in model64.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [g for g in grads if g is not None]
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_call_refused_with_one_line(monkeypatch, model64):
    """Needed vs available, in one line, before anything is allocated."""
    monkeypatch.setattr(memory, "available_memory", lambda device: 5 * 2**20)
    monkeypatch.setattr(memory, "SMALL_CALL_BYTES", 0)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    atoms.calc = GeoMFormerCalculator(model64)
    with pytest.raises(memory.InsufficientMemoryError) as err:
        atoms.get_potential_energy()
    msg = str(err.value)
    assert "\n" not in msg and "108 atoms" in msg and "needs about" in msg
    assert "5 MB is available" in msg and "float32" in msg  # float64 model: suggest float32
    evaluator = BatchEvaluator(model64)
    with pytest.raises(MemoryError, match="structure 0 .*needs about .* MB is available"):
        evaluator.evaluate([atoms])


def test_estimate_scales_with_edges(model64):
    pot = Potential(model64)
    one = memory.estimate_call_bytes(pot, 100, 1000) - memory.CALL_OVERHEAD
    two = memory.estimate_call_bytes(pot, 200, 2000) - memory.CALL_OVERHEAD
    assert two == pytest.approx(2 * one, rel=1e-6) and one > 0


def test_cgroup_limit_lowers_available(monkeypatch, tmp_path):
    limit, usage = tmp_path / "memory.max", tmp_path / "memory.current"
    limit.write_text(f"{3 * 2**30}\n")
    usage.write_text(f"{2 * 2**30}\n")
    monkeypatch.setattr(memory, "CGROUP_FILES", ((str(limit), str(usage)),))
    assert memory.available_memory("cpu") <= 2**30
    limit.write_text("max\n")
    assert memory.available_memory("cpu") > 0


@linux_only
@pytest.mark.slow
def test_estimate_bounds_a_real_call():
    """In a fresh process: the estimate of a 500-atom call of the shipped default is at
    least its real peak and not more than twice it."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import bench_memory as b;"
        "b.memory_worker('after', 500, 'float32', 1)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True)
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["call_mb"] <= res["estimate_mb"] <= 2 * res["call_mb"]

