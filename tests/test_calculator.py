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
        torch.testing.assert_close(
            batch["forces"][start : start + n], one["forces"], rtol=1e-10, atol=1e-12
        )
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
    with pytest.raises(
        ModelFileError, match="neither a shipped potential .* nor an existing model file"
    ):
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


# ----------------------------------------------------------------- close contacts, devices, files


def test_close_contact_warns_once_per_structure(model64):
    """Two atoms at 0.35 of their bond length are outside any training data: one warning per
    structure (not one per step of a relaxation), naming the pair and the ratio."""
    import warnings

    from ase.data import covalent_radii

    calc = GeoMFormerCalculator(model64)
    squeezed = Atoms("CuO", positions=[[0, 0, 0], [0.7, 0, 0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dx in (0.0, 0.01, 0.02):  # the same structure, moving: one warning
            a = squeezed.copy()
            a.positions[1, 0] += dx
            a.calc = calc
            a.get_forces()
        other = Atoms("Cu2", positions=[[0, 0, 0], [0.5, 0, 0]])  # another structure: one more
        other.calc = calc
        other.get_potential_energy()
        fine = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)  # a sensible structure: none
        fine.calc = calc
        fine.get_potential_energy()
    mine = [w for w in caught if "covalent bond length" in str(w.message)]
    assert len(mine) == 2
    from geomformer_md.data.contacts import CloseContactWarning

    assert all(issubclass(w.category, CloseContactWarning) for w in mine)
    ratio = 0.7 / (covalent_radii[29] + covalent_radii[8])
    assert f"{np.floor(ratio * 1000) / 1000:.3f} of their covalent bond length" in str(
        mine[0].message
    )
    assert "atom 0 (Cu)" in str(mine[0].message) and "atom 1 (O)" in str(mine[0].message)
    assert not calc.last_contact.close and 0.9 < calc.last_contact.ratio < 1.1  # Cu bulk


def test_contact_ratio_agrees_with_a_brute_force_search():
    """Periodic images count: the closest pair found through the neighbour list is the one a
    direct search over images finds."""
    from ase.data import covalent_radii

    from geomformer_md.data.contacts import closest_contact

    rng = np.random.default_rng(3)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.numbers[[1, 4]] = 8
    atoms.positions += rng.normal(0, 0.3, atoms.positions.shape)
    r = covalent_radii[atoms.numbers]
    best = np.inf
    for shift in np.array(np.meshgrid(*[range(-1, 2)] * 3)).T.reshape(-1, 3):
        off = shift @ atoms.cell[:]
        d = np.linalg.norm(atoms.positions[None] + off - atoms.positions[:, None], axis=-1)
        if not shift.any():
            np.fill_diagonal(d, np.inf)
        best = min(best, (d / (r[:, None] + r[None])).min())
    assert closest_contact(atoms).ratio == pytest.approx(best, rel=1e-12)
    assert closest_contact(Atoms("O")).ratio == np.inf  # nothing to be close to


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", 7])
def test_an_unknown_device_is_one_clear_line(model64, device):
    with pytest.raises(ValueError) as err:
        GeoMFormerCalculator(model64, device=device)
    msg = str(err.value)
    assert "device" in msg and repr(device) in msg and "\n" not in msg
    assert "Expected one of" not in msg  # torch's own wording


def test_model_file_errors_are_short_and_free_of_torch_internals(tmp_path, model64):
    good = tmp_path / "good.pt"
    save_model(model64, good)
    files = {"empty.pt": b"", "garbage.pt": b"not a model" * 10}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module
    blob = torch.load(good, weights_only=True)
    del blob["state_dict"]["e0"]
    torch.save(blob, tmp_path / "missing.pt")
    blob = torch.load(good, weights_only=True)
    blob["config"]["from_the_future"] = 1
    torch.save(blob, tmp_path / "future.pt")
    expect = {
        "empty.pt": "is empty",
        "garbage.pt": "corrupt, truncated",
        "module.pt": "pickled Python objects",
        "missing.pt": "1 missing",
        "future.pt": "from_the_future",
    }
    for name, fragment in expect.items():
        with pytest.raises(ModelFileError) as err:
            load_model(tmp_path / name)
        msg = str(err.value)
        assert fragment in msg and "\n" not in msg and len(msg) < 250, msg
        for torch_word in ("weights_only", "Weights only", "Error(s) in loading", "valid keys"):
            assert torch_word not in msg, msg


@pytest.mark.parametrize("skin", [0.0, 0.5])
def test_an_overlap_in_one_structure_names_no_structure_index(model64, skin):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0.05, 0, 0]])
    atoms.calc = GeoMFormerCalculator(model64, skin=skin)
    with pytest.raises(ValueError) as err:
        atoms.get_potential_energy()
    assert str(err.value).startswith("atom 0 is 0.05 Å from atom 1")  # no "structure 0:"
