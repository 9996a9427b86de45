"""The TorchSim adapter (optional extra: skipped without torch-sim-atomistic)."""

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.stress import voigt_6_to_full_3x3_stress

ts = pytest.importorskip("torch_sim")

from conftest import make_model  # noqa: E402
from torch_sim.models.interface import validate_model_outputs  # noqa: E402

from geomformer_md import GeoMFormerCalculator  # noqa: E402
from geomformer_md.integrations.torchsim import GeoMFormerTorchSimModel  # noqa: E402

torch.set_num_threads(1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    # TorchSim's validator uses Si and Fe structures.
    return make_model("float64", species=(1, 6, 8, 14, 26, 29, 78))


def crystals():
    cu = bulk("Cu", "fcc", a=3.3, cubic=True)  # compressed: a clear stress to relax
    pt = bulk("Pt", "fcc", a=3.6).repeat((2, 1, 1))
    cu.rattle(0.05, seed=1)
    pt.rattle(0.05, seed=2)
    return [cu, pt]


def test_follows_the_model_interface(model):
    validate_model_outputs(GeoMFormerTorchSimModel(model, device=CPU), CPU, torch.float64)


def test_equals_the_ase_calculator(model):
    atoms = crystals()
    out = GeoMFormerTorchSimModel(model, device=CPU)(
        ts.io.atoms_to_state(atoms, CPU, torch.float64)
    )
    calc = GeoMFormerCalculator(model)
    offset = 0
    for k, a in enumerate(atoms):
        a = a.copy()
        a.calc = calc
        assert abs(a.get_potential_energy() - float(out["energy"][k])) < 1e-10
        f = out["forces"][offset : offset + len(a)].numpy()
        assert np.abs(a.get_forces() - f).max() < 1e-10
        s = voigt_6_to_full_3x3_stress(a.get_stress())
        assert np.abs(s - out["stress"][k].numpy()).max() < 1e-10  # ASE sign, as TorchSim
        offset += len(a)


def test_cell_relaxation_in_torchsim_lowers_stress(model):
    model = copy.deepcopy(model)
    model.energy_scale.fill_(10.0)  # random weights give a nearly flat cell landscape
    tsm = GeoMFormerTorchSimModel(model, device=CPU)
    state = ts.io.atoms_to_state(crystals(), CPU, torch.float64)
    s0 = tsm(state)["stress"].abs().amax(dim=(1, 2))
    final = ts.optimize(system=state, model=tsm, optimizer=ts.frechet_cell_fire, max_steps=60)
    out = tsm(final)
    assert torch.all(out["stress"].abs().amax(dim=(1, 2)) <= s0)
    assert torch.all(out["energy"] <= tsm(state)["energy"] + 1e-8)
