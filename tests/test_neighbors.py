"""Neighbour-list backends agree with each other and with ASE on awkward geometries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from geomformer_md.data.neighbors import (
    NEIGHBOR_BACKENDS,
    VerletNeighborList,
    edge_vectors,
    get_neighbor_backend,
    neighbor_list,
    sort_edges,
)

torch.set_num_threads(2)
BACKENDS = sorted(NEIGHBOR_BACKENDS)


def _molecule_no_cell() -> tuple[Atoms, float]:
    return molecule("CH3CH2OH"), 2.5


def _molecule_zero_cell_negative() -> tuple[Atoms, float]:
    atoms = molecule("C6H6")
    atoms.positions -= [20.0, 35.0, 7.0]
    atoms.cell = np.zeros((3, 3))
    return atoms, 3.1


def _slab() -> tuple[Atoms, float]:
    atoms = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    atoms.positions[0, 2] += 14.0  # beyond the top of the cell in z (non-periodic)
    atoms.positions[1, 2] -= 9.0  # below the bottom
    atoms.positions[2, :2] += [11.3, -7.9]  # outside the cell in x/y (periodic)
    atoms.positions[3, 0] -= 25.0
    return atoms, 4.7


def _triclinic() -> tuple[Atoms, float]:
    rng = np.random.default_rng(0)
    cell = np.array([[5.1, 0.0, 0.0], [1.7, 4.6, 0.0], [-1.2, 0.9, 5.4]])
    frac = rng.random((7, 3)) * 1.6 - 0.3  # some atoms outside the cell
    return Atoms("Si7", scaled_positions=frac, cell=cell, pbc=True), 4.3


def _primitive_big_cutoff() -> tuple[Atoms, float]:
    return bulk("Cu", "fcc", a=3.6), 7.9  # many images incl. the atom's own


def _isolated() -> tuple[Atoms, float]:
    return Atoms("Ar", positions=[[3.0, 4.0, 5.0]], cell=[20.0, 20.0, 20.0], pbc=True), 5.0


def _wire() -> tuple[Atoms, float]:
    rng = np.random.default_rng(1)
    atoms = Atoms("C5", positions=rng.random((5, 3)) * [3, 3, 6] - [0, 0, 4], cell=[0, 0, 3.3],
                  pbc=[False, False, True])
    return atoms, 3.7


STRUCTURES = {
    "molecule_no_cell": _molecule_no_cell,
    "molecule_zero_cell_negative": _molecule_zero_cell_negative,
    "slab": _slab,
    "triclinic": _triclinic,
    "primitive_big_cutoff": _primitive_big_cutoff,
    "isolated": _isolated,
    "wire": _wire,
}


def _tensors(atoms: Atoms, dtype: torch.dtype = torch.float64):
    return (torch.tensor(atoms.positions, dtype=dtype),
            torch.tensor(atoms.cell.array, dtype=dtype), torch.tensor(atoms.pbc))


def _ase_reference(atoms: Atoms, cutoff: float):
    i, j, s = ase_neighbor_list("ijS", atoms, cutoff)
    return sort_edges(torch.as_tensor(np.stack([i, j]), dtype=torch.long),
                      torch.as_tensor(s, dtype=torch.long).reshape(-1, 3))


def _assert_same(a, b) -> None:
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_matches_ase(name: str, backend: str, dtype: torch.dtype) -> None:
    atoms, cutoff = STRUCTURES[name]()
    pos, cell, pbc = _tensors(atoms, dtype)
    pos_before, cell_before = pos.clone(), cell.clone()
    edge_index, shifts = NEIGHBOR_BACKENDS[backend].fn(pos, cell, pbc, cutoff)
    assert edge_index.dtype == shifts.dtype == torch.long
    assert edge_index.shape[0] == 2 and shifts.shape == (edge_index.shape[1], 3)
    _assert_same((edge_index, shifts), _ase_reference(atoms, cutoff))
    # Inputs untouched; vectors rebuilt from the shifts respect the strict cutoff.
    assert torch.equal(pos, pos_before) and torch.equal(cell, cell_before)
    r = edge_vectors(pos, cell, edge_index, shifts)
    assert bool((r.norm(dim=1) < cutoff).all())
    assert bool((shifts[:, ~pbc] == 0).all())
    assert not bool(((edge_index[0] == edge_index[1]) & (shifts == 0).all(1)).any())


def test_special_cases() -> None:
    atoms, cutoff = _isolated()
    for backend in BACKENDS:
        edge_index, shifts = neighbor_list(*_tensors(atoms), cutoff, backend=backend)
        assert edge_index.shape == (2, 0) and shifts.shape == (0, 3)
        assert edge_index.dtype == shifts.dtype == torch.long
    # Own periodic images appear for a 1-atom cell.
    edge_index, shifts = neighbor_list(*_tensors(_primitive_big_cutoff()[0]), 3.0)
    assert edge_index.shape[1] == 12 and bool((edge_index == 0).all())
    # Molecule given without any cell or pbc.
    mol = molecule("H2O")
    ref = _ase_reference(mol, 2.0)
    _assert_same(neighbor_list(torch.tensor(mol.positions), None, None, 2.0), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_matches_per_structure(backend: str) -> None:
    structures = [STRUCTURES[k]() for k in ("slab", "molecule_zero_cell_negative", "isolated",
                                            "triclinic", "primitive_big_cutoff", "wire")]
    cutoff = 4.5
    fn = NEIGHBOR_BACKENDS[backend].fn
    pos = torch.cat([_tensors(a)[0] for a, _ in structures])
    cell = torch.stack([_tensors(a)[1] for a, _ in structures])
    pbc = torch.stack([_tensors(a)[2] for a, _ in structures])
    sizes = torch.tensor([len(a) for a, _ in structures])
    system_idx = torch.repeat_interleave(torch.arange(len(structures)), sizes)
    expected_e, expected_s, offset = [], [], 0
    for atoms, _ in structures:
        e, s = _ase_reference(atoms, cutoff)
        expected_e.append(e + offset)
        expected_s.append(s)
        offset += len(atoms)
    expected = sort_edges(torch.cat(expected_e, 1), torch.cat(expected_s))
    got = fn(pos, cell, pbc, cutoff, system_idx)
    _assert_same(got, expected)
    r = edge_vectors(pos, cell, got[0], got[1], system_idx)
    assert bool((r.norm(dim=1) < cutoff).all())
    assert bool((system_idx[got[0][0]] == system_idx[got[0][1]]).all())


def test_rattled_supercell_backends_agree() -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.1, seed=3)
    atoms.positions += 7.3  # unwrapped positions
    pos, cell, pbc = _tensors(atoms)
    ref = _ase_reference(atoms, 5.2)
    for backend in ("matscipy", "torch"):
        _assert_same(neighbor_list(pos, cell, pbc, 5.2, backend=backend), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(backend: str) -> None:
    fn = NEIGHBOR_BACKENDS[backend].fn
    pos = torch.zeros(2, 3, dtype=torch.float64)
    pos[1, 0] = 1.0
    good_cell = torch.eye(3, dtype=torch.float64) * 4.0
    nan_pos = pos.clone()
    nan_pos[0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fn(nan_pos, good_cell, torch.ones(3, dtype=torch.bool), 2.0)
    flat = good_cell.clone()
    flat[2] = flat[0] + flat[1]  # zero volume
    with pytest.raises(ValueError, match="zero-volume"):
        fn(pos, flat, torch.ones(3, dtype=torch.bool), 2.0)
    with pytest.raises(ValueError, match="zero but pbc"):
        fn(pos, torch.zeros(3, 3, dtype=torch.float64), torch.tensor([True, False, False]), 2.0)
    with pytest.raises(ValueError, match="cutoff"):
        fn(pos, good_cell, torch.ones(3, dtype=torch.bool), 0.0)


def test_registry() -> None:
    assert get_neighbor_backend("auto").name == "matscipy"
    assert get_neighbor_backend("auto", "cuda").name == "torch"
    assert NEIGHBOR_BACKENDS["torch"].supports_cuda
    with pytest.raises(ValueError, match="brute"):
        get_neighbor_backend("nope")


@pytest.mark.parametrize("backend", ["matscipy", "torch"])
def test_verlet_skin(backend: str) -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    pos, cell, pbc = _tensors(atoms)
    cutoff, skin = 4.0, 0.6
    verlet = VerletNeighborList(cutoff, skin, backend=backend)
    verlet.update(pos, cell, pbc)
    assert verlet.n_builds == 1
    small = pos + 0.25 * torch.nn.functional.normalize(torch.randn_like(pos), dim=1)
    verlet.update(small, cell, pbc)
    assert verlet.n_builds == 1  # every displacement < skin / 2: reused
    big = pos.clone()
    big[0, 0] += 0.31
    verlet.update(big, cell, pbc)
    assert verlet.n_builds == 2
    verlet.update(big, cell * 1.01, pbc)
    assert verlet.n_builds == 3  # cell change forces a rebuild

    gen = torch.Generator().manual_seed(0)
    x = pos.clone()
    for _ in range(25):  # random walk: the cached list must always cover the exact one
        x = x + 0.08 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        e, s = verlet.update(x, cell, pbc)
        exact_e, exact_s = neighbor_list(x, cell, pbc, cutoff, backend=backend)
        cached = {tuple(v) for v in torch.cat([e.T, s], 1).tolist()}
        exact = {tuple(v) for v in torch.cat([exact_e.T, exact_s], 1).tolist()}
        assert exact <= cached
    assert 3 < verlet.n_builds < 3 + 25
