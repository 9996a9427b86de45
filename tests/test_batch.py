"""Batched inference, relaxation and MD equal their one-structure counterparts."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.constraints import FixAtoms
from ase.io import read
from conftest import make_model

from geomformer_md import GeoMFormerCalculator
from geomformer_md.simulate import batch
from geomformer_md.simulate.batch import (
    BatchEvaluator,
    NonFiniteResultError,
    available_memory,
    is_out_of_memory,
    predict,
    relax_many,
    run_md_many,
)
from geomformer_md.simulate.md import run_md
from geomformer_md.simulate.relax import relax
from geomformer_md.testing import TOLERANCE

torch.set_num_threads(1)
TOL = TOLERANCE["float64"]


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """FrechetCellFilter's 3x3 scipy solves take ~15 ms each when OpenBLAS threads
    spin on a busy machine; one thread makes them microseconds."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def mixed_structures() -> list[Atoms]:
    """Molecule, slab + adsorbate, bulk, triclinic, a 1-atom cell, another molecule."""
    rng = np.random.default_rng(0)
    mol = molecule("CH3OH")
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    slab += Atoms("O", positions=[slab.positions[-1] + [0.0, 1.4, 1.3]])
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    tri = bulk("Pt", "fcc", a=3.9).repeat((2, 1, 1))
    tri.set_cell(tri.cell[:] + rng.normal(0, 0.2, (3, 3)), scale_atoms=True)
    one = Atoms(
        "Cu",
        positions=[[0.1, 0.2, 0.3]],
        cell=[[2.6, 0, 0], [0.3, 2.5, 0], [0.2, 0.1, 2.7]],
        pbc=True,
    )
    h2o = molecule("H2O")
    out = [mol, slab, cu, tri, one, h2o]
    for a in out:
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    return out


def _single(calc, atoms):
    a = atoms.copy()
    a.calc = calc
    res = {"energy": a.get_potential_energy(), "forces": a.get_forces(apply_constraint=False)}
    if a.pbc.all():
        res["stress"] = a.get_stress()
    return res


def _assert_same(batched, single, tol=TOL):
    assert set(batched) >= set(single)
    assert ("stress" in batched) == ("stress" in single)
    for key in single:
        assert _rel(batched[key], single[key]) <= tol, key


@pytest.fixture(scope="module")
def model():
    return make_model("float64")


@pytest.fixture(scope="module")
def reference(model):
    calc = GeoMFormerCalculator(model)
    structures = mixed_structures()
    return structures, [_single(calc, a) for a in structures]


# ------------------------------------------------------------------ predict
def test_predict_equals_calculator_and_keeps_order(model, reference):
    structures, single = reference
    before = [a.copy() for a in structures]
    results = predict(structures, model)
    assert len(results) == len(structures)
    for r, s in zip(results, single, strict=True):
        _assert_same(r, s)
        assert r["free_energy"] == r["energy"] and r["energies"].shape == (len(r["forces"]),)
    for a, b in zip(structures, before, strict=True):  # inputs never modified
        assert np.array_equal(a.positions, b.positions) and a.calc is None


@pytest.mark.parametrize(
    "settings, batch_size",
    [
        ({"max_edges": 1}, "auto"),  # every structure alone
        ({"max_edges": 150}, "auto"),
        ({}, 4),
        ({"neighbor_backend": "torch"}, 2),
        ({"workers": 2}, "auto"),  # parts of each batch in parallel threads
    ],
)
def test_small_budgets_and_backends_give_identical_results(
    model, reference, settings, batch_size, monkeypatch
):
    monkeypatch.setattr(batch, "MIN_EDGES_PER_WORKER", 1)
    structures, single = reference
    evaluator = BatchEvaluator(model, **settings)
    results = evaluator.evaluate(structures, batch_size=batch_size)
    for r, s in zip(results, single, strict=True):
        _assert_same(r, s)
    assert evaluator.n_batches > 1


def test_auto_budget_from_memory(model):
    evaluator = BatchEvaluator(model)
    assert evaluator.bytes_per_edge() > 0 and available_memory("cpu") > 0
    assert 1 <= evaluator.max_edges()


def _failing_forward(evaluator, when, exc):
    real = evaluator._forward
    calls = []

    def forward(graph, stress):
        calls.append(graph.n_systems)
        if when(graph):
            raise exc
        return real(graph, stress)

    evaluator._forward = forward
    return calls


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"),
        MemoryError(),
        torch.cuda.OutOfMemoryError("fake"),
    ],
)
def test_out_of_memory_batches_are_split_and_retried(model, reference, exc):
    structures, single = reference
    evaluator = BatchEvaluator(model, max_edges=10**6)
    calls = _failing_forward(evaluator, lambda g: g.n_systems > 2, exc)
    results = evaluator.evaluate(structures)
    for r, s in zip(results, single, strict=True):  # nothing lost, nothing changed
        _assert_same(r, s)
    assert calls[0] == len(structures) and evaluator.n_oom_splits >= 1
    assert evaluator.max_edges() < 10**6  # the budget learned from the failure


def test_a_structure_that_never_fits_is_named(model, reference):
    structures, _ = reference
    evaluator = BatchEvaluator(model)
    big = max(range(len(structures)), key=lambda k: len(structures[k]))
    _failing_forward(
        evaluator, lambda g: g.n_atoms == len(structures[big]), RuntimeError("CUDA out of memory")
    )
    with pytest.raises(MemoryError, match=f"structure {big} "):
        evaluator.evaluate(structures, batch_size=1)


def test_other_errors_are_not_taken_for_out_of_memory(model, reference):
    evaluator = BatchEvaluator(model)
    _failing_forward(evaluator, lambda g: True, RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluator.evaluate(reference[0])
    assert evaluator.n_oom_splits == 0
    assert not is_out_of_memory(ValueError("out of memory"))


def _poison(evaluator, element: int, after_calls: int = 0):
    """Make the model return NaN forces for atoms of ``element`` after some calls."""
    real = evaluator._forward
    count = [0]

    def forward(graph, stress):
        out = real(graph, stress)
        count[0] += 1
        if count[0] > after_calls:
            out["forces"][graph.numbers == element] = float("nan")
        return out

    evaluator._forward = forward


def test_non_finite_results_raise_naming_the_structure(model, reference):
    structures, _ = reference
    evaluator = BatchEvaluator(model)
    _poison(evaluator, element=78)  # only the triclinic Pt cell, input index 3
    with pytest.raises(NonFiniteResultError, match=r"structure 3 \(Pt2"):
        evaluator.evaluate(structures)
    out = evaluator.evaluate(structures, errors="return")
    assert isinstance(out[3], NonFiniteResultError)
    assert all(isinstance(r, dict) for k, r in enumerate(out) if k != 3)
    squashed = structures[1].copy()  # overlapping atoms: named, the others still computed
    squashed.positions[1] = squashed.positions[0] + 0.01
    out = BatchEvaluator(model).evaluate(
        [*structures[:1], squashed, *structures[2:]], errors="return"
    )
    assert isinstance(out[1], ValueError) and str(out[1]).startswith("structure 1: atom")
    assert all(isinstance(r, dict) for k, r in enumerate(out) if k != 1)


def test_invalid_input_is_named_by_input_index(model, reference):
    structures = list(reference[0])
    bad = structures[2].copy()
    bad.positions[1] = bad.positions[0] + 0.01
    with pytest.raises(ValueError, match="^structure 4: atom"):
        predict([*structures[:4], bad], model)
    with pytest.raises(ValueError, match="structure 1: element"):
        predict([structures[0], Atoms("Au", positions=[[0, 0, 0]])], model)
    with pytest.raises(ValueError, match="structure 1: empty"):
        predict([structures[0], Atoms()], model)


# ------------------------------------------------------------------ relax_many
def slabs(n: int = 4) -> list[Atoms]:
    out = []
    for k in range(n):
        s = fcc111(("Cu", "Pt")[k % 2], (2, 2, 3), vacuum=5.0)
        s += Atoms("OH"[k % 2], positions=[s.positions[-1] + [0.0, 1.4, 1.4]])
        s.positions += np.random.default_rng(k).normal(0, 0.08, s.positions.shape)
        out.append(s)
    return out


def _assert_relax_equal(batched, single, tol=1e-8):
    (a, r), (b, q) = batched, single
    assert r.converged == q.converged and r.steps == q.steps
    assert abs(r.energy - q.energy) <= tol and abs(r.initial_energy - q.initial_energy) <= tol
    assert abs(r.fmax - q.fmax) <= tol and r.fixed_atoms == q.fixed_atoms
    assert np.abs(a.positions - b.positions).max() <= tol
    assert abs(a.get_potential_energy() - b.get_potential_energy()) <= tol


@pytest.mark.parametrize("optimizer", ["FIRE", "BFGS"])
def test_relax_many_equals_a_loop_of_relax(model, optimizer):
    structures = slabs(4) + [molecule("CH3OH")]
    out = relax_many(
        structures,
        model,
        fmax=0.05,
        steps=40,
        optimizer=optimizer,
        fix_bottom_layers=1,
        max_batch=2,
        progress=False,
    )
    calc = GeoMFormerCalculator(model)
    for atoms, got in zip(structures, out, strict=True):
        ref = relax(
            atoms,
            calc,
            fmax=0.05,
            steps=40,
            optimizer=optimizer,
            fix_bottom_layers=1,
            progress=False,
        )
        _assert_relax_equal(got, ref)
        fixed = list(got[1].fixed_atoms)
        assert len(fixed) == (4 if len(atoms) == 13 else 1)
        assert np.array_equal(got[0].positions[fixed], atoms.positions[fixed])
    assert sum(r.converged for _, r in out) >= 3, [(r.converged, r.steps) for _, r in out]


def test_relax_many_keeps_user_constraints_and_reports_non_converged(model):
    calc = GeoMFormerCalculator(model)
    easy, _ = relax(slabs(1)[0], calc, fmax=0.001, steps=400, progress=False)
    easy = easy.copy()  # already relaxed: converges at step 0
    hard = slabs(2)[1]
    hard.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    out = relax_many([hard, easy], model, fmax=0.005, steps=3, max_batch=1, progress=False)
    (h_atoms, h), (_, e) = out
    assert e.converged and e.steps == 0
    assert not h.converged and h.steps == 3 and h.error is None
    assert np.array_equal(h_atoms.positions[:4], hard.positions[:4])
    _assert_relax_equal(out[0], relax(hard, calc, fmax=0.005, steps=3, progress=False))


def test_relax_many_cell_and_line_search(model):
    rng = np.random.default_rng(3)
    cells = []
    for a in (3.5, 3.75):
        b = bulk("Cu", "fcc", a=a, cubic=True)
        b.positions += rng.normal(0, 0.05, b.positions.shape)
        cells.append(b)
    calc = GeoMFormerCalculator(model)
    out = relax_many(cells, model, relax_cell=True, fmax=0.05, steps=6, progress=False)
    for atoms, got in zip(cells, out, strict=True):
        ref = relax(atoms, calc, relax_cell=True, fmax=0.05, steps=6, progress=False)
        _assert_relax_equal(got, ref)
        assert np.abs(got[0].cell[:] - ref[0].cell[:]).max() < 1e-8
        assert got[1].stress is not None
    out = relax_many(
        slabs(2), model, optimizer="BFGSLineSearch", fmax=0.005, steps=10, progress=False
    )
    for atoms, got in zip(slabs(2), out, strict=True):
        _assert_relax_equal(
            got,
            relax(atoms, calc, optimizer="BFGSLineSearch", fmax=0.005, steps=10, progress=False),
        )
        assert got[1].n_extra_calls > 0  # line-search points computed alone


def test_relax_many_stops_a_structure_that_blows_up(model, tmp_path):
    structures = slabs(3)
    structures[1] += Atoms("N", positions=[structures[1].positions[-1] + [1.5, 0.0, 1.0]])
    evaluator = BatchEvaluator(model)
    _poison(evaluator, element=7, after_calls=2)
    trajs = [tmp_path / f"r{k}.traj" for k in range(3)]
    out = relax_many(structures, evaluator, fmax=0.05, steps=40, trajectories=trajs, progress=False)
    assert out[1][1].error and "structure 1" in out[1][1].error and not out[1][1].converged
    assert out[0][1].converged and out[2][1].converged
    assert len(read(trajs[0], ":")) == out[0][1].steps + 1


# ------------------------------------------------------------------ run_md_many
@pytest.mark.parametrize("ensemble", ["nve", "nvt-langevin"])
def test_run_md_many_replicas_equal_run_md(model, ensemble, tmp_path):
    structures = mixed_structures()[:4]
    structures[1].set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    temps, seeds = [300, 500, 800, 400], [3, 4, 5, 6]
    trajs = [tmp_path / f"md{k}.traj" for k in range(4)]
    out = run_md_many(
        structures, temps, 1.0, 12, seeds, ensemble, trajs, model=model, loginterval=4, max_batch=3
    )
    calc = GeoMFormerCalculator(model, skin=1.0)
    for atoms, got, t, seed, traj in zip(structures, out, temps, seeds, trajs, strict=True):
        ref = run_md(
            atoms,
            calc,
            ensemble=ensemble,
            temperature_K=t,
            timestep_fs=1.0,
            steps=12,
            seed=seed,
            trajectory=None,
            log=None,
            progress=False,
        ).atoms
        assert np.abs(got.positions - ref.positions).max() < 1e-10
        assert np.abs(got.get_momenta() - ref.get_momenta()).max() < 1e-10
        assert abs(got.get_potential_energy() - ref.get_potential_energy()) < 1e-10
        frames = read(traj, ":")
        assert [f.info["md_step"] for f in frames] == [0, 4, 8, 12]
    assert np.array_equal(out[1].positions[:4], structures[1].positions[:4])


def test_run_md_many_nve_conserves_energy_and_groups_by_budget(model):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    out = run_md_many([atoms, atoms], [300, 600], 1.0, 0, [1, 2], model=model)
    e0 = [a.get_potential_energy() + a.get_kinetic_energy() for a in out]
    out = run_md_many([atoms, atoms], [300, 600], 1.0, 40, [1, 2], model=model)
    e1 = [a.get_potential_energy() + a.get_kinetic_energy() for a in out]
    assert np.allclose(e0, e1, atol=2e-3)
    tiny = BatchEvaluator(model, max_edges=50)  # one replica per group
    alone = run_md_many([atoms, atoms], [300, 600], 1.0, 40, [1, 2], model=tiny)
    for a, b in zip(out, alone, strict=True):
        assert np.abs(a.positions - b.positions).max() < 1e-10
    assert tiny.n_batches == 2 * 41


# ------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batched_equals_cpu(model, reference):
    structures, single = reference
    evaluator = BatchEvaluator(model, device="cuda", dtype="float64")
    assert evaluator.neighbor_backend == "torch" and evaluator.max_edges() > 1000
    for r, s in zip(evaluator.evaluate(structures), single, strict=True):
        _assert_same(r, s, tol=1e-9)
    f32 = BatchEvaluator(model, device="cuda")  # float32 by default on GPU
    assert f32.potential.dtype == torch.float32
    for r, s in zip(f32.evaluate(structures), single, strict=True):
        assert abs(r["energy"] - s["energy"]) <= 1e-4 * max(1.0, abs(s["energy"]))
    out = run_md_many(structures[:4], 300, 1.0, 5, 0, model=model, device="cuda", dtype="float64")
    ref = run_md_many(structures[:4], 300, 1.0, 5, 0, model=model)
    for a, b in zip(out, ref, strict=True):
        assert np.abs(a.positions - b.positions).max() < 1e-8


@pytest.mark.slow
def test_compiled_network_gives_the_same_results(model, reference):
    structures, single = reference
    evaluator = BatchEvaluator(model, compile=True)  # compiles once: minutes on 2 cores
    for r, s in zip(evaluator.evaluate(structures), single, strict=True):
        _assert_same(r, s, tol=1e-9)
    out = relax_many(structures[:2], evaluator, fmax=0.05, steps=5, progress=False)
    ref = relax_many(structures[:2], model, fmax=0.05, steps=5, progress=False)
    for a, b in zip(out, ref, strict=True):
        _assert_relax_equal(a, b, tol=1e-7)
