"""Physics of the model: symmetries, derivatives, supercells, cutoff smoothness.

Run for several model configs (plain paper form, edge values, whitening norm,
Gaussian basis, radial MLP, angular invariants, ZBL prior) so every code path is held to the
same laws.
"""

import numpy as np
import pytest
from ase.build import bulk
from conftest import make_model
from scipy.spatial.transform import Rotation

from geomformer_md import GeoMFormerCalculator
from geomformer_md.testing import (
    TOLERANCE,
    check_cutoff_smoothness,
    check_forces_fd,
    check_lattice_stiffness,
    check_stress_fd,
    check_supercell,
    check_symmetries,
    sample_structures,
)

CONFIGS = {
    "edge_values": {},
    "plain": {"edge_values": False},
    "whiten": {"equ_norm": "whiten"},
    "gaussian": {"rbf": "gaussian", "n_heads": 4},
    "radial_mlp": {"radial_mlp": 16},
    "angular": {"angular_lmax": 3, "angular_channels": 8},
    # The ZBL prior switched off at R (sum of covalent radii) instead of 0.65 R, so that the
    # bonded sample structures have pairs inside the switch (O-H, Cu-H, Cu-Cu, Cu-O).
    "zbl": {"zbl": True, "zbl_inner": 0.5, "zbl_outer": 1.0},
}
STRUCTURES = sample_structures()


@pytest.fixture(scope="module", params=list(CONFIGS))
def calc(request):
    return GeoMFormerCalculator(make_model("float64", **CONFIGS[request.param]))


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_rotation_reflection_translation_permutation(calc, name):
    rot = Rotation.random(random_state=3).as_matrix()  # float64, orthogonal to 1e-16
    check_symmetries(calc, STRUCTURES[name], rot, TOLERANCE["float64"])
    check_symmetries(calc, STRUCTURES[name], -rot, TOLERANCE["float64"])  # improper: a reflection


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_forces_are_minus_energy_gradient(calc, name):
    check_forces_fd(calc, STRUCTURES[name])


def test_stress_matches_numerical_stress(calc):
    check_stress_fd(calc, STRUCTURES["triclinic"])


@pytest.mark.parametrize(
    "atoms",
    [
        bulk("Cu", "fcc", a=3.6),  # 1-atom cell much smaller than the cutoff
        STRUCTURES["triclinic"],
        bulk("Pt", "fcc", a=3.9, cubic=True),
    ],
    ids=["fcc-primitive", "triclinic", "fcc-cubic"],
)
def test_supercell_consistency(calc, atoms):
    atoms = atoms.copy()
    atoms.rattle(0.05, seed=2)
    check_supercell(calc, atoms, 1e-10)


def test_cutoff_smoothness(calc):
    check_cutoff_smoothness(calc, "Cu", calc.model.config.cutoff)


def test_no_narrow_well_at_lattice_sites(calc):
    check_lattice_stiffness(calc, bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2))


# SevenNet-0 (the labeller of the shipped potential) at its own lattice constants:
# a0 (Å) and the on-site force constant of one atom of a 2x2x2 cubic cell (eV/Å^2),
# measured with testing.lattice_force_constants (docs/model-notes.md section 1).
LABELLER_LATTICE = {"Cu": (3.6125, 5.99), "Pt": (3.9791, 5.11)}


@pytest.mark.slow
@pytest.mark.parametrize("symbol", ["Cu", "Pt"])
def test_shipped_potential_has_no_narrow_well_at_lattice_sites(symbol):
    """geomformer-catalysis-v0 (equ_norm_eps 1e-3) had k = 2000 eV/Å^2 at 1e-4 Å
    and 137 eV/Å^2 at 2e-2 Å on perfect Cu; its labeller has 6.0 at both."""
    import geomformer_md

    if not geomformer_md.list_potentials():
        pytest.skip("no shipped potential")
    calc = GeoMFormerCalculator(dtype="float64")
    a0, k_ref = LABELLER_LATTICE[symbol]
    crystal = bulk(symbol, a=a0, cubic=True) * (2, 2, 2)
    k = check_lattice_stiffness(calc, crystal)
    check_lattice_stiffness(calc, crystal, direction=(1.0, 2.0, 3.0), index=5)
    assert np.all(np.abs(k - k_ref) <= 0.5 * k_ref), f"k(h) = {k} eV/Å^2, labeller {k_ref}"


def test_float32_model_is_close_to_float64():
    m64 = make_model("float64")
    c64, c32 = GeoMFormerCalculator(m64), GeoMFormerCalculator(m64, dtype="float32")
    atoms = STRUCTURES["slab"].copy()
    atoms.calc = c64
    f64 = atoms.get_forces()
    atoms.calc = c32
    f32 = atoms.get_forces()
    assert np.abs(f32 - f64).max() <= TOLERANCE["float32"] * max(1.0, np.abs(f64).max())
    assert c32.model.config.dtype == "float32" and m64.config.dtype == "float64"


def test_edge_leaving_the_cutoff_cannot_hold_the_attention():
    """A vanishing edge (m = 1e-6) with a score 40 above the self edge's took all the
    attention with raw scores, and gave 1e9 eV/Å forces in a trained model."""
    import torch

    from geomformer_md.model.attention import Edges, edge_softmax

    def weights(cap):
        edges = Edges(
            centre=torch.tensor([0, 0]), neighbour=torch.tensor([1, 0]),
            weight=torch.tensor([1e-6, 1.0], dtype=torch.float64), rbf=torch.zeros(2, 1),
            unit=torch.zeros(2, 3), n_atoms=2, score_cap=cap,
        )
        return edge_softmax(torch.tensor([[40.0], [0.0]], dtype=torch.float64), edges)[:, 0]

    assert float(weights(0.0)[0]) > 0.99  # raw scores: the leaving edge dominates
    assert float(weights(5.0)[0]) < 1e-4  # capped and faded: it no longer does
    assert float(weights(5.0).sum()) == pytest.approx(1.0)


def test_dropout_keeps_equivariance_and_is_off_in_eval():
    """Residual dropout (training only) drops whole vector channels: for one mask, a rotated
    and translated input gives the rotated vector output and the same energies."""
    import torch

    model = make_model("float64", dropout=0.3, vector_head=True, n_vector_inputs=1)
    plain = make_model("float64", vector_head=True, n_vector_inputs=1)
    plain.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(0)
    pos = 2.0 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    vel = torch.randn(6, 3, 1, generator=gen, dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    keep = i != j
    ei = torch.stack([i[keep], j[keep]])
    numbers = torch.tensor([1, 8, 29, 29, 8, 1])
    rot = torch.as_tensor(Rotation.random(random_state=1).as_matrix())

    def run(m, p, v, seed):
        torch.manual_seed(seed)
        return m(numbers, ei, p[ei[1]] - p[ei[0]], node_vectors=v)

    model.train()
    a = run(model, pos, vel, 7)
    b = run(model, pos @ rot.T + 1.5, torch.einsum("ab,nbc->nac", rot, vel), 7)
    torch.testing.assert_close(b["vector"], a["vector"] @ rot.T, atol=1e-10, rtol=0)
    torch.testing.assert_close(b["energy"], a["energy"], atol=1e-10, rtol=0)
    other = run(model, pos, vel, 8)
    assert (other["vector"] - a["vector"]).abs().max() > 1e-3  # the masks do act
    model.eval()
    torch.testing.assert_close(run(model, pos, vel, 7)["vector"], run(plain, pos, vel, 9)["vector"])
    with pytest.raises(ValueError, match="dropout"):
        make_model("float64", dropout=1.0)


@pytest.mark.parametrize("config", ["edge_values", "radial_mlp", "angular"])
def test_edge_ranges_give_the_same_result_as_one_pass(monkeypatch, config):
    """On CPU the attention runs over ranges of centres when the per-edge tensors are
    large (geomformer.EDGE_CHUNK_BYTES); energies and forces must not depend on that."""
    from geomformer_md.model import geomformer

    model = make_model("float64", **CONFIGS[config])
    atoms = bulk("Cu", "fcc", a=3.6).repeat((3, 3, 2))
    atoms.rattle(0.1, seed=3)
    chunks_of = model._chunks
    n_ranges = []

    def spy(*args):
        n_ranges.append(len(chunks := chunks_of(*args)))
        return chunks

    monkeypatch.setattr(model, "_chunks", spy)
    results = {}
    for name, limit in (("one", geomformer.EDGE_CHUNK_BYTES), ("ranges", 64 * 1024)):
        monkeypatch.setattr(geomformer, "EDGE_CHUNK_BYTES", limit)
        x = atoms.copy()
        x.calc = GeoMFormerCalculator(model)
        results[name] = (x.get_potential_energy(), x.get_forces())
    assert n_ranges[0] == 1 and n_ranges[-1] > 2
    assert results["ranges"][0] == pytest.approx(results["one"][0], abs=1e-9)
    np.testing.assert_allclose(results["ranges"][1], results["one"][1], atol=1e-9)


@pytest.mark.parametrize("config", [*CONFIGS, "no_cross", "vector_head"])
def test_fused_kernels_give_the_same_result(monkeypatch, config):
    """The attention's fused kernels (GPU default) and per-attention kernels (CPU default)
    are two orderings of the same sums: equal energies, forces and vector outputs."""
    import torch

    from geomformer_md.model import geomformer

    over = {"no_cross": {}, "vector_head": {"vector_head": True}}.get(config, CONFIGS.get(config))
    model = make_model("float64", **over)
    if config == "no_cross":  # the ablation of benchmarks/nbody: no cross attentions
        for block in model.blocks:
            block.inv_cross, block.equ_cross = None, None
    atoms = STRUCTURES["slab"].copy()
    atoms.rattle(0.05, seed=4)
    out = {}
    for fuse in (True, False):
        monkeypatch.setattr(geomformer, "FUSE_KERNELS", fuse)
        x = atoms.copy()
        x.calc = GeoMFormerCalculator(model)
        out[fuse] = (x.get_potential_energy(), x.get_forces())
    assert out[True][0] == pytest.approx(out[False][0], abs=1e-10)
    np.testing.assert_allclose(out[True][1], out[False][1], atol=1e-10)
    if config == "vector_head":
        pos = torch.as_tensor(atoms.positions)
        numbers = torch.as_tensor(atoms.numbers)
        n = len(atoms)
        ei = torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j]).T
        vec = {}
        for fuse in (True, False):
            monkeypatch.setattr(geomformer, "FUSE_KERNELS", fuse)
            vec[fuse] = model(numbers, ei, pos[ei[1]] - pos[ei[0]])["vector"]
        torch.testing.assert_close(vec[True], vec[False], atol=1e-10, rtol=0)


def test_radial_mlp_is_validated():
    from geomformer_md.model import GeoMFormerConfig

    with pytest.raises(ValueError, match="radial_mlp must be >= 0"):
        GeoMFormerConfig(species=(29,), radial_mlp=-1)


def test_angular_settings_are_validated():
    from geomformer_md.model import GeoMFormerConfig

    with pytest.raises(ValueError, match="angular_lmax must be 0"):
        GeoMFormerConfig(species=(29,), angular_lmax=4)
    with pytest.raises(ValueError, match="angular_channels must be > 0"):
        GeoMFormerConfig(species=(29,), angular_lmax=2, angular_channels=0)


def test_real_harmonics_obey_the_addition_theorem():
    """sum_m Y_lm(u) Y_lm(u') = P_l(u . u') for l = 1, 2, 3: what makes the angular
    invariants rotation-invariant and equal to Legendre three-body sums."""
    import torch
    from numpy.polynomial import legendre

    from geomformer_md.model.angular import real_harmonics

    g = torch.Generator().manual_seed(0)
    u, w = (
        torch.nn.functional.normalize(torch.randn(50, 3, generator=g, dtype=torch.float64), dim=-1)
        for _ in range(2)
    )
    cos = (u * w).sum(-1).numpy()
    pairs = zip(real_harmonics(u, 3), real_harmonics(w, 3), strict=True)
    for l, (yu, yw) in enumerate(pairs, start=1):
        assert yu.shape[1] == 2 * l + 1
        p_l = legendre.legval(cos, [0] * l + [1])
        np.testing.assert_allclose((yu * yw).sum(-1).numpy(), p_l, atol=1e-12)
    with pytest.raises(ValueError, match="angular_lmax"):
        real_harmonics(u, 4)


def test_angular_invariants_reach_the_forces():
    """The angular module is wired into the energy: zeroing its output map changes the
    forces by a sizeable fraction (so the symmetry tests of that config test it)."""
    import torch

    model = make_model("float64", **CONFIGS["angular"])
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    atoms.rattle(0.1, seed=1)
    atoms.calc = GeoMFormerCalculator(model)
    with_angular = atoms.get_forces()
    with torch.no_grad():
        for block in model.blocks:
            block.angular.out.weight.zero_()
    atoms.calc = GeoMFormerCalculator(model)
    change = np.abs(atoms.get_forces() - with_angular).max()
    assert change > 0.05 * np.abs(with_angular).max()
