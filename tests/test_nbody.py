"""Charged N-body benchmark (benchmarks/nbody): generator physics, predictor symmetry, quick run."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

NBODY = Path(__file__).resolve().parents[1] / "benchmarks" / "nbody"
sys.path.insert(0, str(NBODY))

import evaluate  # noqa: E402
import generate  # noqa: E402
from nbody_model import VARIANTS, NBodyPredictor, complete_graph, make_config  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_generator_is_deterministic_and_seeded():
    a = generate.generate(seed=5, n_train_sims=4, n_train=2, n_val=1, n_test=1, n_steps=300)
    b = generate.generate(seed=5, n_train_sims=4, n_train=2, n_val=1, n_test=1, n_steps=300)
    c = generate.generate(seed=6, n_train_sims=4, n_train=2, n_val=1, n_test=1, n_steps=300)
    for split in a:
        for key in a[split]:
            np.testing.assert_array_equal(a[split][key], b[split][key])
    assert not np.allclose(a["train"]["loc"], c["train"]["loc"])
    assert a["train"]["loc"].shape == (2, 2, 5, 3)  # 300 steps / 100 - 1 frames


def test_initial_conditions_follow_the_simulation_spec():
    loc, vel, q = generate.draw_initial_conditions(np.random.RandomState(0), 200)
    assert set(np.unique(q)) == {-1.0, 1.0}
    np.testing.assert_allclose(np.linalg.norm(vel, axis=1), 0.5, rtol=1e-12)
    assert abs(loc.std() - 1.0) < 0.05 and np.all(np.abs(loc) <= generate.BOX_SIZE)


def test_forces_sum_to_zero_without_clipping():
    rs = np.random.RandomState(1)
    loc, q = rs.randn(8, 3, 5), rs.choice([-1.0, 1.0], size=(8, 5))
    f = generate.coulomb_forces(loc, q[:, :, None] * q[:, None, :], max_f=None)
    assert np.abs(f.sum(axis=2)).max() < 1e-10 * np.abs(f).max()
    # like charges repel: two particles with q = +1 on the x axis at distance 2
    two = np.array([[[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]]])
    f2 = generate.coulomb_forces(two, np.ones((1, 2, 2)), max_f=None)
    np.testing.assert_allclose(f2[0, :, 0], [-0.25, 0.0, 0.0])


def test_momentum_is_conserved_without_clipping():
    loc0, vel0, q = generate.draw_initial_conditions(np.random.RandomState(2), 4, n_steps=500)
    loc, vel = generate.simulate(loc0, vel0, q, n_steps=500, max_f=None)
    p0 = vel0.sum(axis=2)  # unit masses; initial kick conserves it too
    np.testing.assert_allclose(vel.sum(axis=2), p0[:, None, :].repeat(vel.shape[1], 1), atol=1e-10)


def _reference_trajectory(loc, vel, q, n_steps, freq=100, dt=0.001, max_f=100.0):
    """The original per-trajectory loop (NRI / EGNN ChargedParticlesSim), written out plainly."""
    loc, vel = loc.copy(), vel.copy()

    def force(x):
        f = np.zeros_like(x)
        for i in range(x.shape[1]):
            for j in range(x.shape[1]):
                if i != j:
                    r = x[:, i] - x[:, j]
                    f[:, i] += q[i] * q[j] * r / np.linalg.norm(r) ** 3
        return np.clip(f, -max_f, max_f)

    vel += dt * force(loc)
    frames = []
    for i in range(1, n_steps):
        loc += dt * vel
        if i % freq == 0:
            frames.append(loc.T.copy())
        vel += dt * force(loc)
    return np.stack(frames[: n_steps // freq - 1])


def test_flipping_all_charges_leaves_the_trajectory_unchanged():
    # the premise of train.py --flip-charges: forces depend on q_i q_j only
    loc0, vel0, q = generate.draw_initial_conditions(np.random.RandomState(4), 3, n_steps=400)
    a, _ = generate.simulate(loc0, vel0, q, n_steps=400)
    b, _ = generate.simulate(loc0, vel0, -q, n_steps=400)
    np.testing.assert_array_equal(a, b)
    c, _ = generate.simulate(loc0, vel0, q * np.array([1, 1, 1, 1, -1.0]), n_steps=400)
    assert not np.allclose(a, c)  # flipping one charge does change it


def test_vectorised_simulation_matches_plain_loop():
    loc0, vel0, q = generate.draw_initial_conditions(np.random.RandomState(3), 3, n_steps=400)
    loc, _ = generate.simulate(loc0, vel0, q, n_steps=400)
    for s in range(3):
        ref = _reference_trajectory(loc0[s], vel0[s], q[s], 400)
        np.testing.assert_allclose(loc[s], ref, atol=1e-9)


def test_complete_graph_has_all_ordered_pairs_and_no_self_edges():
    ei = complete_graph(2, 5)
    assert ei.shape == (2, 40)
    assert bool((ei[0] != ei[1]).all())
    assert bool(((ei[0] // 5) == (ei[1] // 5)).all())
    assert len({(int(a), int(b)) for a, b in ei.T}) == 40


@pytest.mark.parametrize("variant", VARIANTS)
def test_untrained_predictor_is_e3_and_permutation_equivariant(variant):
    torch.manual_seed(0)
    model = NBodyPredictor(
        make_config(30.0, d_model=16, n_heads=2, n_layers=2, n_rbf=8, dtype="float64"), variant
    )
    with torch.no_grad():  # make every term matter
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64)
    v0 = 0.5 * torch.randn(4, 5, 3, generator=gen, dtype=torch.float64)
    q = torch.randint(0, 2, (4, 5), generator=gen).double() * 2 - 1
    for seed in range(3):
        assert evaluate.equivariance_error(model, x0, v0, q, seed=seed) < 1e-10
    perm = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        out, out_p = model(x0, v0, q), model(x0[:, perm], v0[:, perm], q[:, perm])
    torch.testing.assert_close(out[:, perm], out_p, atol=1e-10, rtol=0)


@pytest.mark.slow
def test_quick_training_end_to_end(tmp_path):
    import train

    data, out = tmp_path / "data", tmp_path / "run"
    generate.main(
        [
            "--out",
            str(data),
            "--n-train-sims",
            "200",
            "--n-train",
            "200",
            "--n-val",
            "100",
            "--n-test",
            "100",
        ]
    )
    metrics = train.main(["--quick", "--data", str(data), "--out", str(out)])
    assert np.isfinite(metrics["test_mse"]) and metrics["test_mse"] < 1.0
    assert metrics["equivariance_err_f64"] < 1e-9 and metrics["equivariance_err_f32"] < 1e-3
    assert (out / "checkpoint.pt").exists() and (out / "best.pt").exists()
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 3
    resumed = train.main(["--quick", "--data", str(data), "--out", str(out), "--resume"])
    assert resumed["epochs_done"] == 3 and resumed["test_mse"] == pytest.approx(metrics["test_mse"])
    assert "ours: full" in evaluate.table([out])
    again = evaluate.recompute(out, data)
    assert again["test_mse"] == pytest.approx(metrics["test_mse"], rel=1e-6)
    assert again["charge_flip_rms"] > 0  # an untrained-ish net is not flip invariant
    plain = train.main(
        ["--quick", "--data", str(data), "--out", str(tmp_path / "plain"), "--no-flip-charges"]
    )
    assert np.isfinite(plain["test_mse"]) and plain["test_mse"] != metrics["test_mse"]
