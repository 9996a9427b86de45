"""GPU checks: skipped cleanly without CUDA (`pytest -m gpu` on a GPU machine)."""

import numpy as np
import pytest
import torch
from conftest import make_model

from geomformer_md import GeoMFormerCalculator
from geomformer_md.data.neighbors import neighbor_list
from geomformer_md.testing import sample_structures

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize(
    "config", [{}, {"angular_lmax": 3, "angular_channels": 8}], ids=["base", "angular"]
)
def test_cuda_calculator_matches_cpu_in_float64(config):
    model = make_model("float64", **config)
    cpu, gpu = GeoMFormerCalculator(model), GeoMFormerCalculator(model, device="cuda")
    assert gpu.neighbor_backend == "torch"
    for atoms in sample_structures().values():
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = cpu, gpu
        assert b.get_potential_energy() == pytest.approx(a.get_potential_energy(), rel=1e-10)
        np.testing.assert_allclose(b.get_forces(), a.get_forces(), rtol=1e-8, atol=1e-10)


def test_torch_cell_list_on_cuda_matches_matscipy():
    atoms = sample_structures()["triclinic"].repeat((3, 3, 3))
    pos = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell[:]).unsqueeze(0)
    pbc = torch.tensor(atoms.pbc).unsqueeze(0)
    ref = neighbor_list(pos, cell, pbc, 4.0, backend="matscipy")
    out = neighbor_list(pos.cuda(), cell.cuda(), pbc.cuda(), 4.0, backend="torch")
    assert torch.equal(out[0].cpu(), ref[0]) and torch.equal(out[1].cpu(), ref[1])
