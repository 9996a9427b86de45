"""Short-range frames: compressed dimers and trimers of every element pair, and atoms pushed
into the (111) and (100) surfaces of each metal, labelled by the labeller where it is still
trustworthy (the ``short`` extra set, for a model with the ZBL prior, model/zbl.py).

Every task is a *scan*: one distance d of a pair is decreased step by step and each geometry is
labelled. The labeller (SevenNet-0) was trained on MPtrj, which has almost no close contacts;
its dimer curves rise as a wall below their minimum and then break (they turn over and fall to
-1e4 eV and below; scripts/datagen/dimer_scan.py). So the scan itself decides which of its
frames are kept (``trusted_range``): walking inward from the minimum, the curve must keep
rising and must not flatten. Where it first fails (``d_break``), nothing below
``d_break + MARGIN * R`` is kept (R: the pair's sum of covalent radii), nor anything below
``FLOOR * R`` in any case. The model's ZBL term carries the wall below.

Kept frames: compressed side only (d <= KEEP_ABOVE * R), every STRIDE-th, max |F| <= MAX_FORCE.
The full scan (d, E, max |F|, the decision) goes into the task's meta file.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, covalent_radii
from labeller import snapshot, task_rng
from structures import make_slab, size_str

ELEMENTS = ["H", "C", "N", "O", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"]
PUSHED = ["H", "C", "N", "O"]  # plus the slab's own metal and one other metal per scan
TOL_E = 0.1  # eV: an energy drop on compression larger than this is a break
FLATTEN = 0.25 # a slope below this fraction of the steepest one so far is a break
MARGIN = 0.05  # x R kept clear above a break
FLOOR = 0.45  # x R: nothing closer is kept (the labeller's dimers break at 0.4-0.65 R)
KEEP_ABOVE = 1.0  # x R: only compressed frames are kept
MAX_FORCE = 50.0  # eV/Å
STEP = 0.02  # Å, scan step of dimers and trimers
PUSH_STEP = 0.06  # Å, height step of pushes
STRIDE = {"dimer": 2, "trimer": 2, "push": 2}


def cov_sum(a: str, b: str) -> float:
    return float(covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]])


def trusted_range(d: np.ndarray, e: np.ndarray, R: float) -> tuple[float, float]:
    """(d_break, d_keep) of a scan with distances d (decreasing) and energies e.

    The minimum is searched where d >= 0.7 R (every pair's labeller minimum is at 0.76-1.2 R).
    Walking inward from it, the scan breaks at the first frame whose energy is more than TOL_E
    below the highest energy so far, or whose slope over two steps drops below FLATTEN x the
    steepest such slope so far (once that is above 5 eV/Å): a wall that flattens is about to
    turn over. d_break = 0 if it never breaks. d_keep = max(d_break + MARGIN R, FLOOR R): frames
    at d >= d_keep are trusted.
    """
    ok = np.flatnonzero(d >= 0.7 * R)
    k0 = int(ok[np.argmin(e[ok])]) if len(ok) else 0
    d_break, highest, steepest = 0.0, e[k0], 0.0
    for k in range(k0 + 1, len(d)):
        j = max(k - 2, k0)
        slope = (e[k] - e[j]) / (d[j] - d[k])
        if e[k] < highest - TOL_E or (steepest > 5.0 and slope < FLATTEN * steepest):
            d_break = float(d[k - 1])
            break
        highest, steepest = max(highest, e[k]), max(steepest, slope)
    return d_break, max(d_break + MARGIN * R, FLOOR * R)


def _scan(ctx, task, geoms, ds, R, stride, **info):
    """Label the geometries of a scan, keep the trusted ones; (frames, meta)."""
    if len(ds) < 3:  # nothing to judge the labeller by
        return [], {"R": R, "d_break": None, "d_keep": None, "n_dropped_force": 0, "scan": {}}
    lab = ctx.lab
    res = [lab.label(g) for g in geoms]
    e = np.array([r["energy"] for r in res])
    fmax = np.array([np.linalg.norm(r["forces"], axis=1).max() for r in res])
    d_break, d_keep = trusted_range(ds, e, R)
    keep = [k for k in range(len(ds)) if d_keep <= ds[k] <= KEEP_ABOVE * R][::stride]
    n_force = sum(fmax[k] > MAX_FORCE for k in keep)
    keep = [k for k in keep if fmax[k] <= MAX_FORCE]
    heldout = task.params.get("test_scan", False)
    frames = [snapshot(geoms[k], res[k], config_id=task.name, task=task.name, step=k,
                       r_pair=float(ds[k]), r_over_R=float(ds[k] / R),
                       split_hint="test_short" if heldout else "pool", **info) for k in keep]
    meta = {"R": R, "d_break": d_break, "d_keep": d_keep, "n_dropped_force": int(n_force),
            "scan": {"d": ds.tolist(), "E": e.tolist(), "max_force": fmax.tolist()}}
    return frames, meta


def _molecule(symbols, positions) -> Atoms:
    pos = np.asarray(positions, float)
    return Atoms(symbols, positions=pos - pos.mean(0) + 10.0, cell=[20.0] * 3, pbc=False)


def run_short_dimer(ctx, task):
    a, b = task.params["pair"]
    R = cov_sum(a, b)
    ds = np.round(np.arange(1.2 * R, 0.35 * R, -STEP), 4)
    geoms = [_molecule([a, b], [[0, 0, 0], [0, 0, d]]) for d in ds]
    return _scan(ctx, task, geoms, ds, R, STRIDE["dimer"], kind="short_dimer", facet="gas",
                 adsorbate=f"{a}{b}", pair=f"{a}-{b}", size="dimer")


def run_short_trimer(ctx, task):
    """Pair a-b compressed with a third atom c bound to a (at 0.95-1.2 R_ac, 60-180 degrees
    from the a-b axis, c one of ELEMENTS; all seeded per task)."""
    a, b = task.params["pair"]
    rng = task_rng(ctx.seed, task.name)
    c = ELEMENTS[int(rng.integers(len(ELEMENTS)))]
    r_c = cov_sum(a, c) * rng.uniform(0.95, 1.2)
    th = np.radians(rng.uniform(60.0, 180.0))
    pc = [r_c * np.sin(th), 0.0, r_c * np.cos(th)]
    R = cov_sum(a, b)
    ds = np.round(np.arange(1.2 * R, 0.35 * R, -STEP), 4)
    # Only a-b is compressed: the scan stops before b comes closer than 0.8 R_bc to c.
    ds = ds[np.cumprod(np.linalg.norm(np.array(pc) - ds[:, None] * [0, 0, 1], axis=1)
                       >= 0.8 * cov_sum(b, c)).astype(bool)]
    geoms = [_molecule([a, b, c], [[0, 0, 0], [0, 0, d], pc]) for d in ds]
    return _scan(ctx, task, geoms, ds, R, STRIDE["trimer"], kind="short_trimer", facet="gas",
                 adsorbate=f"{a}{b}{c}", pair=f"{a}-{b}", size="trimer")


def run_short_push(ctx, task):
    """Atom X lowered onto a top or hollow site of a 2x2x4 (111) or (100) slab (at the labeller's
    lattice constant, rattled once by 0.02 Å, X 0-0.15 Å off the site laterally: one seeded
    geometry per task), from where its nearest metal is 1.2 R away until that distance is 0.4 R
    or stops falling (X has reached the plane of a hollow)."""
    p = task.params
    M, F, X, site = task.metal, p["facet"], p["pushed"], p["site"]
    rng = task_rng(ctx.seed, task.name)
    slab = make_slab(M, F, (2, 2, 4), ctx.a0(M))
    slab.set_constraint()
    slab.positions += rng.normal(0.0, 0.02, slab.positions.shape)
    top = slab.positions[slab.get_tags() == 1]
    z_top = top[:, 2].max()
    if site == "top":
        xy = top[0, :2]
    else:  # fcc hollow on (111), fourfold hollow on (100): from ase's site table
        info = slab.info["adsorbate_info"]
        xy = np.asarray(info["sites"]["fcc" if F == "111" else "hollow"]) @ info["cell"]
    xy = xy + rng.uniform(-0.15, 0.15, 2)
    R = cov_sum(X, M)
    geoms, ds = [], []
    for h in np.arange(1.2 * R + 0.5, 1.2 * R - 3.5, -PUSH_STEP):
        g = slab + Atoms(X, positions=[[xy[0], xy[1], z_top + h]])
        d = float(g.get_distances(len(g) - 1, range(len(g) - 1), mic=True).min())
        if d > 1.2 * R:
            continue
        if d < 0.4 * R or (ds and d > ds[-1]):
            break
        geoms.append(g)
        ds.append(d)
    return _scan(ctx, task, geoms, np.array(ds), R, STRIDE["push"], kind="short_push", metal=M,
                 facet=F, adsorbate=X, site=site, pair=f"{X}-{M}", size=size_str((2, 2, 4)))
