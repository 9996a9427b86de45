"""The ASE calculator: caching, batches, model files, and clear errors on bad input."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.calculator import PropertyNotImplementedError

from geomformer_md import (
    GeoMFormerCalculator,
    ModelFileError,
    Potential,
    atoms_to_graph,
    load_model,
    save_model,
)
from geomformer_md.io.checkpoint import FORMAT_VERSION
from geomformer_md.testing import sample_structures


@pytest.fixture(scope="module")
def calc(model64):
    return GeoMFormerCalculator(model64)


def test_results_shapes_and_per_atom_energies(calc):
    atoms = sample_structures()["triclinic"]
    atoms.calc = calc
    e = atoms.get_potential_energy()
    assert atoms.get_forces().shape == (len(atoms), 3)
    assert atoms.get_stress().shape == (6,)
    assert atoms.get_potential_energies().sum() == pytest.approx(e, abs=1e-10)
    assert atoms.get_potential_energy(force_consistent=True) == e
    assert np.abs(atoms.get_forces().sum(0)).max() < 1e-10  # Newton's third law


def test_caching_follows_ase_rules(model64):
    calls = []

    class Counting(GeoMFormerCalculator):
        def calculate(self, *a, **k):
            calls.append(1)
            super().calculate(*a, **k)

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = Counting(model64)
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert len(calls) == 1  # one pass gave everything
    atoms.get_forces()
    assert len(calls) == 1
    for change in (
        lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 0.01),
        lambda a: a.set_cell(a.cell[:] * 1.01, scale_atoms=False),
        lambda a: a.set_pbc([True, True, False]),
        lambda a: a.numbers.__setitem__(0, 78),
    ):
        change(atoms)
        atoms.get_potential_energy()
    assert len(calls) == 5


def test_user_atoms_are_never_mutated(calc):
    slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    slab.positions[0] += [10.0, -7.0, 0.0]  # outside the cell: must not be wrapped
    before = (slab.positions.copy(), slab.cell[:].copy(), slab.pbc.copy())
    slab.calc = calc
    slab.get_forces()
    assert np.array_equal(slab.positions, before[0]) and np.array_equal(slab.cell[:], before[1])
    assert np.array_equal(slab.pbc, before[2])


def test_stress_only_for_3d_periodic_cells(calc):
    slab = sample_structures()["slab"]
    slab.calc = calc
    slab.get_forces()
    with pytest.raises(PropertyNotImplementedError, match="periodic in all 3"):
        slab.get_stress()


@pytest.mark.parametrize("backend", ["matscipy", "torch", "brute"])
def test_batch_equals_single(model64, backend):
    structs = list(sample_structures().values()) + [bulk("Cu", "fcc", a=3.6), molecule("H2O")]
    pot = Potential(model64)
    batch = pot(atoms_to_graph(structs, model64.cutoff, backend))
    start = 0
    for k, atoms in enumerate(structs):
        one = pot(atoms_to_graph(atoms, model64.cutoff, backend))
        n = len(atoms)
        assert float(batch["energy"][k]) == pytest.approx(float(one["energy"][0]), rel=1e-12)
        torch.testing.assert_close(batch["forces"][start : start + n], one["forces"], rtol=1e-10, atol=1e-12)
        if atoms.pbc.all():
            torch.testing.assert_close(batch["stress"][k], one["stress"][0], rtol=1e-10, atol=1e-12)
        start += n


def test_skin_reuses_neighbour_list_and_gives_same_results(model64):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    plain, skinned = GeoMFormerCalculator(model64), GeoMFormerCalculator(model64, skin=0.5)
    rng = np.random.default_rng(0)
    for _ in range(6):
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = plain, skinned
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=1e-10, atol=1e-12)
    assert skinned._verlet.n_builds < 6


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "atoms, message",
    [
        (Atoms(), "empty structure"),
        (Atoms("Cu2", positions=[[0, 0, 0], [np.nan, 0, 0]]), "NaN or inf"),
        (Atoms("Cu2", positions=[[0, 0, 0], [np.inf, 0, 0]]), "NaN or inf"),
        (Atoms("CuAu", positions=[[0, 0, 0], [2.5, 0, 0]]), r"\['Au'\] unknown to this model"),
        (Atoms("Cu2", positions=[[0, 0, 0], [1e-9, 0, 0]]), "overlapping"),
        (Atoms("Cu", cell=np.zeros((3, 3)), pbc=True), "zero-length cell vector"),
        (Atoms("Cu", cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]], pbc=True), "degenerate"),
    ],
    ids=["empty", "nan", "inf", "unknown-element", "same-position", "zero-cell", "flat-cell"],
)
def test_bad_structures_raise_clear_errors(calc, atoms, message):
    atoms.calc = calc
    with pytest.raises(ValueError, match=message):
        atoms.get_potential_energy()


def test_model_file_round_trip(tmp_path, model64):
    path = tmp_path / "m.pt"
    save_model(model64, path, {"note": "test"})
    loaded = load_model(path)
    assert loaded.config == model64.config and loaded.metadata["note"] == "test"
    atoms = sample_structures()["slab"]
    e = [GeoMFormerCalculator(m).get_potential_energy(atoms) for m in (model64, loaded)]
    assert e[0] == e[1]
    assert GeoMFormerCalculator(str(path)).get_potential_energy(atoms) == e[0]  # by path


def test_model_file_has_the_permissions_of_a_new_file(tmp_path, model64):
    # The atomic write goes through mkstemp (mode 0600); a model file shared with a group
    # must not come out unreadable to everyone but its writer.
    import os
    import stat

    old = os.umask(0o022)
    try:
        save_model(model64, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.pt").stat().st_mode) == 0o644


def test_bad_model_files_raise_clear_errors(tmp_path, model64):
    with pytest.raises(ModelFileError, match="neither a shipped potential .* nor an existing model file"):
        GeoMFormerCalculator(str(tmp_path / "missing.pt"))
    good = tmp_path / "good.pt"
    save_model(model64, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="corrupt, truncated"):
        load_model(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a model" * 10)
    with pytest.raises(ModelFileError, match="corrupt, truncated"):
        load_model(garbage)
    blob = torch.load(good, weights_only=True)
    blob["format_version"] = FORMAT_VERSION + 1
    newer = tmp_path / "newer.pt"
    torch.save(blob, newer)
    with pytest.raises(ModelFileError, match="format version .* reads versions"):
        load_model(newer)
    blob["format_version"] = FORMAT_VERSION
    blob["config"]["d_model"] = 999
    wrong = tmp_path / "wrong.pt"
    torch.save(blob, wrong)
    with pytest.raises(ModelFileError, match="does not match its config"):
        load_model(wrong)


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "config": {}, "state_dict": Evil()}, path)
    with pytest.raises(ModelFileError):
        load_model(path)


def test_dtype_is_per_model_not_global(model64):
    before = torch.get_default_dtype()
    c32 = GeoMFormerCalculator(model64, dtype="float32")
    c32.get_potential_energy(bulk("Cu", "fcc", a=3.6))
    assert torch.get_default_dtype() == before
    assert next(c32.model.parameters()).dtype == torch.float32
    assert next(model64.parameters()).dtype == torch.float64  # the caller's model untouched
    with pytest.raises(ValueError, match="dtype"):
        GeoMFormerCalculator(model64, dtype="float16")


def test_older_model_file_keeps_its_behaviour(model64):
    """A file written before a config key existed loads with the key's legacy value."""
    from geomformer_md.model import GeoMFormerConfig

    cfg = model64.config.to_dict()
    cfg.pop("score_cap")
    cfg.pop("equ_norm_eps")
    old = GeoMFormerConfig.from_dict(cfg)
    assert old.score_cap == 0.0 and old.equ_norm_eps == 1e-3
    new = GeoMFormerConfig(species=(1,))
    assert new.score_cap > 0 and new.equ_norm_eps == 1.0


def test_calculator_leaves_the_callers_model_alone():
    """Two calculators of one module (another dtype here; on a GPU another device) stay
    independent, and the caller's module keeps its dtype, grad flags and train mode."""
    from conftest import make_model

    model = make_model("float32").train()
    a = GeoMFormerCalculator(model)
    b = GeoMFormerCalculator(model, dtype="float64")
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32
    atoms = bulk("Cu", "fcc", a=3.6).repeat(2)
    atoms.rattle(0.05, seed=1)
    e = {}
    for name, calc in (("a", a), ("b", b)):
        x = atoms.copy()
        x.calc = calc
        e[name] = x.get_potential_energy()
    assert e["a"] == pytest.approx(e["b"], rel=1e-5)
