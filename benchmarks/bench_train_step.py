"""Cost of one force-training step (forward, forces by autograd with create_graph, loss
backward) for model variants side by side.

Prints, per variant: the median time per step (CPU, or --device cuda) and the number of
aten operator calls per step. On a GPU at our training batch sizes the step time is set
by kernel launches (research/mace_compare/README.md), so the operator count is the CPU-side
proxy of a GPU step's cost: a variant with 20 % more operators does ~20 % fewer steps in a
GPU budget. Operators are counted with the fused attention kernels a GPU runs
(geomformer.FUSE_KERNELS); CPU timings use the CPU's unfused default.

    python benchmarks/bench_train_step.py --variant base --variant ang3:angular_lmax=3
    python benchmarks/bench_train_step.py --frames 32 --variant base --variant L2:n_layers=2

Variants are NAME[:KEY=VALUE,...] of GeoMFormerConfig over the catalysis-v4 model
(d 48, 4 heads, 3 layers, 12 Bessel functions, r_c 4.5 Å); the batch is the first
--frames frames of data/catalysis-v1 with at least 2 atoms. Timed round-robin, median
over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import ase.io
import torch
from torch.profiler import ProfilerActivity, profile

from geomformer_md.model import GeoMFormer, GeoMFormerConfig, geomformer
from geomformer_md.potential import Potential
from geomformer_md.train.config import read_variant
from geomformer_md.train.data import collate_samples, make_samples

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(d_model=48, n_heads=4, n_layers=3, n_rbf=12, cutoff=4.5, edge_values=True)


def step(potential: Potential, batch) -> None:
    out = potential(batch.graph, forces=True, stress=False, create_graph=True)
    de, df = out["energy"] - batch.energy, out["forces"] - batch.forces
    loss = (de**2).mean() + (df**2).mean()
    potential.zero_grad(set_to_none=True)
    loss.backward()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", action="append", required=True, metavar="NAME[:K=V,...]")
    ap.add_argument("--data", type=Path, default=ROOT / "data/catalysis-v1/frames.extxyz.xz")
    ap.add_argument("--frames", type=int, default=12, help="frames per batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="where steps are timed (ops: on the CPU)")
    ap.add_argument("--top", type=int, default=0, help="list each variant's N most frequent ops")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    # One edge range, as on a GPU (on the CPU large graphs are split into ranges of centres,
    # which multiplies the operator count; geomformer.GeoMFormer._n_chunks).
    geomformer.EDGE_CHUNK_BYTES = 2**62
    frames = [f for f in ase.io.read(a.data, index=f":{4 * a.frames}") if len(f) > 1][: a.frames]
    species = {int(z) for f in frames for z in f.numbers} | {1, 6, 7, 8, 28, 29, 46, 47, 78, 79}
    species = sorted(species)
    try:
        variants = dict(read_variant(v) for v in a.variant)
    except ValueError as err:
        ap.error(str(err))
    pots, ops = {}, {}
    for name, over in variants.items():
        torch.manual_seed(0)
        model = GeoMFormer(GeoMFormerConfig(species=tuple(species), **{**BASE, **over}))
        samples, _ = make_samples(frames, model.cutoff, model.config.species, "bench", 1e9)
        pot, batch = Potential(model).train(), collate_samples(samples)
        step(pot, batch)  # warm-up
        # Count the kernels a GPU runs (fused attention kernels, geomformer.FUSE_KERNELS);
        # the timed steps below use the device's own default.
        geomformer.FUSE_KERNELS = True
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(pot, batch)
        geomformer.FUSE_KERNELS = None
        pots[name] = (pot.to(a.device), batch.to(a.device))
        for _ in range(3):  # warm-up on the device (allocator, kernels)
            step(*pots[name])
        aten = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        counts = sorted(((e.count, e.key) for e in aten), reverse=True)
        ops[name] = sum(c for c, _ in counts)
        if a.top:
            print(name, ", ".join(f"{k[6:]} {c}" for c, k in counts[: a.top]))
    times = {name: [] for name in pots}
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    for r in range(a.rounds):
        for name in list(pots)[r % len(pots):] + list(pots)[: r % len(pots)]:
            sync()
            t0 = time.perf_counter()
            step(*pots[name])
            sync()
            times[name].append(time.perf_counter() - t0)
    n_atoms = sum(len(f) for f in frames)
    first = next(iter(pots))
    print(f"{len(frames)} frames, {n_atoms} atoms, {a.device}, {a.threads} threads, "
          f"{a.rounds} rounds")
    print(f"{'variant':14s} {'params':>8s} {'ms/step':>8s} {'x':>5s} {'aten ops':>9s} {'x':>5s}")
    t_ref = statistics.median(times[first])
    for name, (pot, _) in pots.items():
        t = statistics.median(times[name])
        n_par = sum(p.numel() for p in pot.parameters())
        print(f"{name:14s} {n_par:8d} {1e3 * t:8.1f} {t / t_ref:5.2f} {ops[name]:9d} "
              f"{ops[name] / ops[first]:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
