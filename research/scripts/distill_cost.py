"""What the issue-24 distillation (research/configs/distill-catalysis.yaml) costs on this
machine, measured from its pilot, and the plan that follows.

Measures, one core each (OMP_NUM_THREADS=1):
  teacher   SevenNet-0 seconds per frame by category: the pilot's teacher_times.csv
  committee seconds per force call of a K-member committee of each model size (random
            weights: the cost does not depend on them) on the pilot's labelled frames, and
            of one member; exploration costs follow from the calls each candidate takes
            (an MD candidate: snapshot_every steps + its snapshot; a relaxation candidate: a
            step + its snapshot; a rattle: one call), checked against a real exploration
            with the pilot's committee
  training  seconds per epoch per 100 frames of one member of each size: two epochs on the
            pilot's frames, the second timed (metrics.csv elapsed_s)
and prints the cost of each phase of an iteration and of the whole run for the config.

Run after the pilot (about 5 minutes of one core):
    OMP_NUM_THREADS=1 nice -n 10 geomformer-md distill research/configs/distill-catalysis-pilot.yaml
    OMP_NUM_THREADS=1 nice -n 10 python research/scripts/distill_cost.py [--sizes 48x3 64x3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from geomformer_md.distill.config import load_distill_config

PILOT = "research/configs/distill-catalysis-pilot.yaml"
REAL = "research/configs/distill-catalysis.yaml"


def teacher_cost(out: Path) -> dict[str, tuple[int, float, float]]:
    """category -> (frames, median s, mean atoms) over the pilot's successful labels."""
    by = defaultdict(list)
    with open(out / "teacher_times.csv") as fh:
        for row in csv.DictReader(fh):
            if row["ok"] == "1":
                by[row["category"]].append((float(row["seconds"]), int(row["n_atoms"])))
    return {c: (len(v), statistics.median(s for s, _ in v), statistics.mean(n for _, n in v))
            for c, v in sorted(by.items())}


def _models(d: int, layers: int, k: int, species, zbl: bool):
    from geomformer_md.model import GeoMFormer, GeoMFormerConfig

    cfg = GeoMFormerConfig(species=tuple(species), cutoff=4.5, d_model=d, n_heads=4,
                           n_layers=layers, n_rbf=12, zbl=zbl, dtype="float32")
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(GeoMFormer(cfg).eval())
    return out


def call_cost(frames, models, repeats: int = 2) -> float:
    """Median seconds of one energy + forces call over ``frames``."""
    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.committee import Committee

    model = Committee(models) if len(models) > 1 else models[0]
    calc = GeoMFormerCalculator(model, uncertainty_threshold=None) if len(models) > 1 else (
        GeoMFormerCalculator(model))
    times = []
    for atoms in frames:
        work = atoms.copy()
        work.calc = calc
        for r in range(repeats + 1):
            work.positions[0, 0] += 1e-4  # a new structure each call
            t0 = time.perf_counter()
            work.get_forces()
            if r:  # the first call builds caches
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_cost(frames_file: Path, d: int, layers: int, species, zbl: bool, batch: int) -> float:
    """Seconds per epoch per 100 frames of one member (the second of two epochs)."""
    from ase.io import read

    from geomformer_md.train import train

    n = len(read(frames_file, ":"))
    with tempfile.TemporaryDirectory() as tmp:
        train({"out_dir": tmp, "data": {"train_file": str(frames_file), "val_fraction": 0.0,
                                        "test_fraction": 0.0, "max_force": 15.0},
               "model": {"species": sorted(species), "cutoff": 4.5, "d_model": d,
                         "n_heads": 4, "n_layers": layers, "n_rbf": 12, "zbl": zbl},
               "training": {"epochs": 2, "batch_size": batch, "lr": 1e-3, "warmup_steps": 2,
                            "num_threads": 1, "checkpoint_every": 10_000}},
              progress=False, log=lambda m: None)
        with open(Path(tmp) / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
    epoch = float(rows[-1]["elapsed_s"]) - float(rows[-2]["elapsed_s"])
    return epoch * 100 / n


def explore_check(out: Path, cfg, frames) -> tuple[float, int, float]:
    """A real exploration (md, relax, rattle of three structures) with the pilot's committee:
    (seconds, candidates, force calls it should take by the call model)."""
    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.distill.explore import explore_structure
    from geomformer_md.io.checkpoint import load_any

    calc = GeoMFormerCalculator(load_any(out / "committee.pt"), uncertainty_threshold=None)
    t0, n, calls = time.perf_counter(), 0, 0
    for k, (atoms, mode) in enumerate(zip(frames, ("md", "relax", "rattle"), strict=False)):
        cands = explore_structure(atoms, calc, mode, cfg, np.random.default_rng(k), k)
        n += len(cands)
        calls += {"md": cfg.snapshot_every + 1, "relax": 2, "rattle": 1}[mode] * len(cands)
    return time.perf_counter() - t0, n, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["48x3", "64x3"],
                    help="model sizes as d_model x n_layers")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pilot, real = load_distill_config(PILOT), load_distill_config(REAL)
    out = Path(pilot.out_dir)
    from ase.data import atomic_numbers
    from ase.io import read

    teacher = teacher_cost(out)
    print("SevenNet-0 per frame (pilot, one core):")
    print(f"  {'category':32s} {'frames':>6s} {'median s':>9s} {'atoms':>6s}")
    for c, (n, s, a) in teacher.items():
        print(f"  {c:32s} {n:6d} {s:9.3f} {a:6.1f}")
    trained = [c for c in teacher if not c.startswith("heldout")]
    label_s = statistics.mean(teacher[c][1] for c in trained)
    print(f"  mean over trained categories (balance: category): {label_s:.3f} s")

    data = out / "data" / "iter_000.extxyz"
    frames = read(data, ":")
    species = sorted({int(z) for a in frames for z in a.numbers}
                     | {atomic_numbers[e] for e in ("H", "C", "N", "O", *real.space.elements)})
    sample = [frames[i] for i in np.linspace(0, len(frames) - 1, 8).astype(int)]
    mean_atoms = statistics.mean(len(a) for a in frames)
    zbl = bool(real.model.get("zbl", False))
    k = real.committee_size

    seconds, n_cand, calls = explore_check(out, real, sample[:3])
    tiny = _models(pilot.model["d_model"], pilot.model["n_layers"], pilot.committee_size,
                   species, zbl)
    tiny_call = call_cost(sample[:3], tiny)
    print(f"\nexploration check, pilot committee: {n_cand} candidates in {seconds:.1f} s; the "
          f"call model predicts {calls * tiny_call:.1f} s ({calls} calls x {tiny_call:.3f} s)")

    per_candidate_calls = {"md": real.snapshot_every + 1, "relax": 2, "rattle": 1}
    cands = {"md": real.md_steps // real.snapshot_every + 1, "relax": real.relax_steps,
             "rattle": max(1, real.md_steps // real.snapshot_every)}
    calls_per_structure = statistics.mean(per_candidate_calls[m] * cands[m]
                                          for m in real.explore)
    cands_per_structure = statistics.mean(cands[m] for m in real.explore)
    print(f"\nper frame of the pilot ({mean_atoms:.0f} atoms on average), one core:")
    print(f"  {'size':>6s} {'1 member s/call':>15s} {f'{k} members s/call':>16s} "
          f"{'explore s/candidate':>19s} {'train s/epoch/100 fr':>21s}")
    costs = {}
    for size in args.sizes:
        d, layers = (int(x) for x in size.split("x"))
        members = _models(d, layers, k, species, zbl)
        one, many = call_cost(sample, members[:1]), call_cost(sample, members)
        per_cand = calls_per_structure * many / cands_per_structure
        train_s = train_cost(data, d, layers, species, zbl, real.training.get("batch_size", 6))
        costs[size] = (many, per_cand, train_s)
        print(f"  {size:>6s} {one:15.3f} {many:16.3f} {per_cand:19.3f} {train_s:21.1f}")

    print(f"\nplan for {REAL} ({real.iterations} iterations, {real.frames_per_iteration} frames "
          f"each, {real.structures_per_iteration} structures explored, K = {k}), one core:")
    n0, f, it = real.initial_frames, real.frames_per_iteration, real.iterations
    v = real.validation_per_category * (7 + len(real.space.holdout))
    ft = {**real.training, **real.finetune}
    steps_cap = ft.get("max_steps")
    for size, (call, per_cand, train_s) in costs.items():
        explore = real.structures_per_iteration * cands_per_structure * per_cand
        label = f * label_s
        evaluate = v * call
        first = (n0 + v) * label_s + k * real.training["epochs"] * n0 / 100 * train_s
        total, rows = first + evaluate, []
        for i in range(1, it + 1):
            n = n0 + i * f
            epochs_frames = ft["epochs"] * n
            if steps_cap:
                epochs_frames = min(epochs_frames, steps_cap * ft.get("batch_size", 6))
            train = k * epochs_frames / 100 * train_s
            rows.append((explore, label, train, evaluate))
            total += explore + label + train + evaluate
        e, lab, tr, ev = rows[-1]
        print(f"  {size}: iteration 0 {first / 3600:.1f} h; last iteration: explore "
              f"{e / 3600:.2f} h, label {lab / 3600:.2f} h, train {tr / 3600:.2f} h, evaluate "
              f"{ev / 3600:.2f} h; whole run {total / 3600:.0f} core-hours = "
              f"{total / 3600 / 24:.1f} days on one core ({total / 3600 / 48:.1f} days on two "
              f"if the phases could share them), {n0 + it * f} frames")


if __name__ == "__main__":
    main()
