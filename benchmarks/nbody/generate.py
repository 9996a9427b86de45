"""Charged-particle N-body data (EGNN's "nbody_small"), seeded and vectorised.

Re-implements the 3-D ``ChargedParticlesSim`` of Satorras et al. (2021),
itself the 3-D form of Kipf et al.'s (2018) NRI simulation, with the same
random-number call sequence, so that ``--seed 43`` draws the initial
conditions of EGNN's ``*_charged5_initvel1small.npy`` files (EGNN's
``generate_dataset.py --num-train 10000 --seed 43 --sufix small``):

* 5 particles, charges q in {-1, +1} with p = 1/2 each (NRI's choice over
  [-1, 0, +1] with p = [1/2, 0, 1/2]; the draw is kept so the stream matches).
* x0 ~ N(0, loc_std^2 = 1) per component; v0 ~ N(0, 1) rescaled to |v0| = 0.5.
* Initial state reflected into the box [-5, 5]^3 once (never triggers in
  practice at 5 sigma); NO walls during the simulation (EGNN commented them out).
* Force on i: F_i = sum_j q_i q_j (x_i - x_j) / |x_i - x_j|^3 (interaction
  strength 1, unit masses; like charges repel). No softening of the distance:
  each Cartesian force component is clipped to [-max_F, max_F], max_F = 0.1/dt = 100.
* Integrator (NRI's "leapfrog"): one kick v += dt F(x0), then for steps
  i = 1..T-1: x += dt v; record (x, v) if i % sample_freq == 0; v += dt F(x).
  dt = 0.001, T = 5000, sample_freq = 100. A recorded v is the velocity that
  moved the particles into the recorded x (before that step's kick).
* Frames: the recording counter starts at 0 and overwrites the initial state,
  so frame k holds step 100 (k + 1), k = 0..48. EGNN uses frame 30 (step 3100)
  as input and frame 40 (step 4100) as target: 1000 steps = 1.0 time unit ahead.
* Per trajectory the original also draws two (49, 3, 5) Gaussian noise arrays
  scaled by noise_var = 0; they are drawn and discarded to keep the stream.
* EGNN simulates 10000 training trajectories and trains on the first 3000;
  validation (2000) and test (2000) follow in the same stream. Only the kept
  trajectories are integrated here (drawing the rest is cheap).

Files: {out}/{train,val,test}.npz with
  loc [S, 49, 5, 3] float64, vel [S, 49, 5, 3] float64, charges [S, 5] float64,
  plus scalars seed, dt, sample_freq, frame_in, frame_out.

Usage:
  python benchmarks/nbody/generate.py --out benchmarks/nbody/data          # full, ~1 min
  python benchmarks/nbody/generate.py --out /tmp/nb --n-train-sims 300 --n-train 300 \\
      --n-val 100 --n-test 100                                              # tiny
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

N_BALLS = 5
DIM = 3
LOC_STD = 1.0  # NRI scales it by (n_balls / 5) ** (1/3) = 1 for 5 balls
VEL_NORM = 0.5
BOX_SIZE = 5.0
STRENGTH = 1.0
DT = 0.001
MAX_F = 0.1 / DT
N_STEPS = 5000
SAMPLE_FREQ = 100
FRAME_IN, FRAME_OUT = 30, 40


def draw_initial_conditions(
    rs: np.random.RandomState, n_sims: int, n_steps: int = N_STEPS, sample_freq: int = SAMPLE_FREQ
):
    """Per-trajectory draws in the original order. Returns loc0, vel0 [S, 3, 5], charges [S, 5]."""
    n_save = n_steps // sample_freq - 1
    charges = np.empty((n_sims, N_BALLS))
    loc0 = np.empty((n_sims, DIM, N_BALLS))
    vel0 = np.empty((n_sims, DIM, N_BALLS))
    for s in range(n_sims):
        types = np.array([-1.0, 0.0, 1.0])
        charges[s] = rs.choice(types, size=(N_BALLS, 1), p=[0.5, 0.0, 0.5])[:, 0]
        loc = rs.randn(DIM, N_BALLS) * LOC_STD
        vel = rs.randn(DIM, N_BALLS)
        vel = vel * VEL_NORM / np.sqrt((vel**2).sum(axis=0)).reshape(1, -1)
        loc0[s], vel0[s] = _reflect_into_box(loc, vel)
        rs.randn(n_save, DIM, N_BALLS)  # observation noise on loc (noise_var = 0), discarded
        rs.randn(n_save, DIM, N_BALLS)  # ... and on vel
    return loc0, vel0, charges


def _reflect_into_box(loc, vel, box=BOX_SIZE):
    """NRI's _clamp: elastic reflection at the walls (applied to the initial state only)."""
    loc, vel = loc.copy(), vel.copy()
    assert np.all(np.abs(loc) < 3 * box)
    over = loc > box
    loc[over], vel[over] = 2 * box - loc[over], -np.abs(vel[over])
    under = loc < -box
    loc[under], vel[under] = -2 * box - loc[under], np.abs(vel[under])
    return loc, vel


def coulomb_forces(loc: np.ndarray, qq: np.ndarray, max_f: float | None = MAX_F) -> np.ndarray:
    """F_i = sum_j q_i q_j (x_i - x_j) / |r_ij|^3, component-clipped to +-max_f.

    loc [S, 3, n], qq [S, n, n] = q q^T. |r|^2 uses NRI's expanded form
    |a|^2 + |b|^2 - 2 a.b so that rounding follows the original; max_f=None
    disables the clipping (then sum_i F_i = 0 exactly up to round-off).
    """
    sq = (loc**2).sum(axis=1)  # [S, n]
    l2 = sq[:, :, None] + sq[:, None, :] - 2.0 * np.einsum("sdi,sdj->sij", loc, loc)
    with np.errstate(divide="ignore", invalid="ignore"):
        size = STRENGTH * qq / np.power(l2, 1.5)
    idx = np.arange(loc.shape[2])
    size[:, idx, idx] = 0.0  # self forces are zero (fixes the division by zero)
    diff = loc[:, :, :, None] - loc[:, :, None, :]  # [S, 3, i, j] = x_i - x_j
    f = (size[:, None] * diff).sum(axis=-1)
    if max_f is not None:
        f = np.clip(f, -max_f, max_f)
    return f


def simulate(
    loc0,
    vel0,
    charges,
    n_steps: int = N_STEPS,
    sample_freq: int = SAMPLE_FREQ,
    dt: float = DT,
    max_f: float | None = MAX_F,
):
    """Integrate all trajectories at once.

    Returns loc, vel [S, n_frames, n, 3]; frame k is step sample_freq * (k + 1).
    """
    assert n_steps % sample_freq == 0
    n_save = n_steps // sample_freq - 1
    qq = charges[:, :, None] * charges[:, None, :]
    loc, vel = loc0.astype(np.float64).copy(), vel0.astype(np.float64).copy()
    out_loc = np.zeros((loc.shape[0], n_save, DIM, loc.shape[2]))
    out_vel = np.zeros_like(out_loc)
    vel += dt * coulomb_forces(loc, qq, max_f)
    counter = 0
    for i in range(1, n_steps):
        loc += dt * vel
        if i % sample_freq == 0 and counter < n_save:
            out_loc[:, counter], out_vel[:, counter] = loc, vel
            counter += 1
        vel += dt * coulomb_forces(loc, qq, max_f)
    return out_loc.transpose(0, 1, 3, 2), out_vel.transpose(0, 1, 3, 2)


def generate(
    seed: int = 43,
    n_train_sims: int = 10000,
    n_train: int = 3000,
    n_val: int = 2000,
    n_test: int = 2000,
    n_steps: int = N_STEPS,
) -> dict[str, dict[str, np.ndarray]]:
    """The three splits as dicts of arrays (see module docstring)."""
    assert n_train <= n_train_sims
    rs = np.random.RandomState(seed)
    draws = {
        name: draw_initial_conditions(rs, n, n_steps)
        for name, n in (("train", n_train_sims), ("val", n_val), ("test", n_test))
    }
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    out = {}
    for name, (loc0, vel0, q) in draws.items():
        k = sizes[name]
        loc, vel = simulate(loc0[:k], vel0[:k], q[:k], n_steps)
        out[name] = {"loc": loc, "vel": vel, "charges": q[:k].copy()}
    return out


def save(splits: dict, out_dir: Path, seed: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, arrays in splits.items():
        path = out_dir / f"{name}.npz"
        tmp = out_dir / f".{name}.npz.tmp"
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                **arrays,
                seed=seed,
                dt=DT,
                sample_freq=SAMPLE_FREQ,
                frame_in=FRAME_IN,
                frame_out=FRAME_OUT,
            )
        os.replace(tmp, path)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    p.add_argument("--seed", type=int, default=43, help="EGNN's nbody_small seed")
    p.add_argument(
        "--n-train-sims",
        type=int,
        default=10000,
        help="training trajectories drawn (EGNN: 10000; the first --n-train are kept)",
    )
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-val", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=2000)
    args = p.parse_args(argv)
    t0 = time.time()
    splits = generate(args.seed, args.n_train_sims, args.n_train, args.n_val, args.n_test)
    save(splits, args.out, args.seed)
    for name, a in splits.items():
        x = a["loc"][:, FRAME_IN]
        d = np.linalg.norm(x[:, :, None] - x[:, None, :], axis=-1).max(axis=(1, 2))
        print(
            f"{name}: {len(a['charges'])} trajectories, max pair distance at frame {FRAME_IN}: "
            f"{d.max():.2f} (99th pct {np.percentile(d, 99):.2f})"
        )
    print(f"wrote {args.out} in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
