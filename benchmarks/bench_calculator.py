"""Cost of one energy + forces + stress call per atom, and its peak memory.

Compares, on slightly rattled fcc Cu supercells of 32, 108, 500 and 2048 atoms:

* ``ours-f32`` / ``ours-f64``: GeoMFormer at its default size
  (``GeoMFormerConfig(species=SPECIES)``: d 64, 4 heads, 3 layers, 16 Bessel,
  r_c 5 Å) with random weights, through ``GeoMFormerCalculator`` (matscipy
  neighbour list, rebuilt at every call: no Verlet skin);
* ``mace-f32`` (and ``mace-f64`` on request): a MACE with the hyperparameters of
  the MACE-MP-0 "small" foundation model (see ``build_mace``), random weights,
  through mace-torch's own ``MACECalculator`` (also matscipy, also every call);
* ``emt``: ASE's EMT, as a floor.

Every call is a full ASE ``calculate`` (conversion, neighbour list, forward,
backward). Timings interleave all models and sizes round-robin, in a rotated
order each round, so machine-load drift hits them alike; the median over rounds
is reported. The neighbour list is timed on its own in the same rounds
(matscipy and the torch cell list, and ``atoms_to_graph``, which adds the
conversion and the overlap check). Peak memory comes from a fresh subprocess per
model and size: the rise of the resident set (VmHWM after resetting it, minus
VmRSS before) during one call, and the process's max RSS.

Run from the repository root (mace-torch is optional; see benchmarks/README.md):

    python benchmarks/bench_calculator.py --rounds 3       # everything: ~7 min on 2 cores
    python benchmarks/bench_calculator.py --threads 1 --sizes 500 2048 --models ours-f32 mace-f32

Results and discussion: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.calculator import all_changes

SPECIES = (1, 6, 7, 8, 29, 46, 47, 28, 78, 79)
SIZES = (32, 108, 500, 2048)
MODELS = ("ours-f32", "ours-f64", "mace-f32", "emt")
PROPERTIES = ["energy", "forces", "stress"]
# The 89 elements of MACE-MP-0 (H..Bi, Ac..Pu): sets the size of its element-dependent weights.
MACE_MP_Z = tuple(range(1, 84)) + tuple(range(89, 95))


def cu_supercell(n_atoms: int, seed: int = 0):
    """fcc Cu (a = 3.61 Å), cubic 4-atom cell repeated k^3 times, rattled by 0.05 Å."""
    k = round((n_atoms / 4) ** (1 / 3))
    if 4 * k**3 != n_atoms:
        raise ValueError(f"{n_atoms} atoms is not a cubic fcc supercell (4 k^3)")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((k, k, k))
    atoms.rattle(0.05, seed=seed)
    return atoms


def build_mace(dtype: str = "float32"):
    """A random-weight MACE with the MACE-MP-0 "small" hyperparameters, as a calculator.

    From the training log of 2023-12-10-mace-128-L0 (MACE-MP-0 small): ScaleShiftMACE,
    RealAgnosticResidualInteractionBlock (first and later), r_max 6 Å, 10 Bessel functions
    with a p=5 polynomial cutoff, max_ell 3, correlation 3, 2 interactions, 128 channels
    with max_L 0 (hidden irreps 128x0e), MLP_irreps 16x0e, radial MLP [64, 64, 64], SiLU
    gate, 89 elements. avg_num_neighbors only rescales messages (no effect on cost). Other
    options are mace-torch's constructor defaults (e.g. use_reduced_cg=True in 0.3.16).
    """
    import mace.modules  # noqa: F401  (before e3nn.o3: it allow-lists what e3nn 0.4.4 loads)
    from e3nn import o3
    from mace.calculators import MACECalculator
    from mace.modules import blocks, models

    torch.manual_seed(0)
    model = models.ScaleShiftMACE(
        r_max=6.0,
        num_bessel=10,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=blocks.RealAgnosticResidualInteractionBlock,
        interaction_cls_first=blocks.RealAgnosticResidualInteractionBlock,
        num_interactions=2,
        num_elements=len(MACE_MP_Z),
        hidden_irreps=o3.Irreps("128x0e"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(MACE_MP_Z)),
        avg_num_neighbors=60.0,
        atomic_numbers=list(MACE_MP_Z),
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    return MACECalculator(models=model, device="cpu", default_dtype=dtype)


def build(name: str):
    """A fresh ASE calculator for a model name of MODELS (or mace-f64)."""
    if name.startswith("ours-"):
        from geomformer_md import GeoMFormerCalculator
        from geomformer_md.model import GeoMFormer, GeoMFormerConfig

        torch.manual_seed(0)
        dtype = {"f32": "float32", "f64": "float64"}[name.split("-")[1]]
        model = GeoMFormer(GeoMFormerConfig(species=SPECIES, dtype=dtype))
        return GeoMFormerCalculator(model, neighbor_backend="matscipy")
    if name.startswith("mace-"):
        return build_mace({"f32": "float32", "f64": "float64"}[name.split("-")[1]])
    if name == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    raise ValueError(f"unknown model {name!r}")


def call(calc, atoms) -> float:
    """Wall seconds of one full energy + forces + stress evaluation."""
    t = time.perf_counter()
    calc.calculate(atoms, PROPERTIES, all_changes)
    return time.perf_counter() - t


def neighbour_timers(cutoff: float):
    """Name -> function(atoms) timing one neighbour-list build (seconds)."""
    from geomformer_md.data.graph import atoms_to_graph
    from geomformer_md.data.neighbors import matscipy_neighbor_list, torch_cell_list

    def nl(fn):
        def run(atoms):
            pos = torch.tensor(atoms.positions)
            cell, pbc = torch.tensor(atoms.cell[:]), torch.tensor(atoms.pbc)
            t = time.perf_counter()
            fn(pos, cell, pbc, cutoff)
            return time.perf_counter() - t

        return run

    def graph(atoms):
        t = time.perf_counter()
        atoms_to_graph(atoms, cutoff, "matscipy")
        return time.perf_counter() - t

    return {"nl-matscipy": nl(matscipy_neighbor_list), "nl-torch": nl(torch_cell_list),
            "atoms_to_graph": graph}


def time_all(models, sizes, rounds: int) -> dict:
    """Median wall seconds per call for every (name, size), measured round-robin."""
    calcs = {m: build(m) for m in models}
    timers = dict(calcs)
    timers.update(neighbour_timers(5.0) if any(m.startswith("ours") for m in models) else {})
    structures = {n: cu_supercell(n) for n in sizes}
    jobs = [(name, n) for n in sizes for name in timers]
    samples: dict = {job: [] for job in jobs}
    for name, n in jobs:  # warm-up (first-call allocations, lazy imports)
        _run(timers[name], structures[n])
    for r in range(rounds):
        shift = (r * len(jobs)) // max(rounds, 1)
        for name, n in jobs[shift:] + jobs[:shift]:
            inner = max(1, min(3, 500 // n))  # a few calls for the small cells
            total = sum(_run(timers[name], structures[n]) for _ in range(inner))
            samples[(name, n)].append(total / inner)
        load = os.getloadavg()[0]
        print(f"  round {r + 1}/{rounds} done, load {load:.1f}", file=sys.stderr, flush=True)
    return {job: statistics.median(v) for job, v in samples.items()}


def _run(timer, atoms) -> float:
    return call(timer, atoms) if hasattr(timer, "calculate") else timer(atoms)


def memory_worker(name: str, n: int) -> None:
    """In a fresh process: the RSS rise during one call, and the max RSS."""
    from geomformer_md.memory import process_memory_mb

    torch.set_num_threads(2)
    calc, atoms = build(name), cu_supercell(n)
    before, setup_peak = process_memory_mb("VmRSS"), process_memory_mb("VmHWM")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    call(calc, atoms)
    peak = process_memory_mb("VmHWM")
    # Not ru_maxrss: Linux carries it over exec from the (big) parent process.
    print(json.dumps({"call_mb": peak - before, "maxrss_mb": max(peak, setup_peak)}))


def measure_memory(name: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-worker", name, str(n)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--models", nargs="+", default=list(MODELS),
                   help=f"subset of {list(MODELS) + ['mace-f64']}")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (median reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--memory-worker", nargs=2, metavar=("MODEL", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_worker:
        return memory_worker(args.memory_worker[0], int(args.memory_worker[1]))

    torch.set_num_threads(args.threads)
    models = list(args.models)
    if any(m.startswith("mace") for m in models):
        try:
            import mace  # noqa: F401
        except ImportError:
            print("mace-torch not installed: skipping MACE", file=sys.stderr)
            models = [m for m in models if not m.startswith("mace")]
    load0 = os.getloadavg()
    t0 = time.time()
    times = time_all(models, args.sizes, args.rounds)
    memory = {}
    if not args.no_memory:
        for name in models:
            for n in args.sizes:
                memory[(name, n)] = measure_memory(name, n)
    load1 = os.getloadavg()

    versions = f"torch {torch.__version__}, {args.threads} threads"
    versions += f", python {platform.python_version()}"
    try:
        import e3nn
        import mace

        versions += f", mace-torch {mace.__version__}, e3nn {e3nn.__version__}"
    except ImportError:
        pass
    print(f"\n{versions}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"load average (1/5/15 min) before {load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f}, "
          f"after {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f}; took {time.time() - t0:.0f} s; "
          f"median of {args.rounds} interleaved rounds\n")
    print(f"{'model':<15}{'atoms':>6}{'ms/call':>11}{'ms/atom':>10}{'call MB':>9}{'maxRSS MB':>11}")
    nls = ("nl-matscipy", "nl-torch", "atoms_to_graph")
    names = models + [k for k in nls if (k, args.sizes[0]) in times]
    for name in names:
        for n in args.sizes:
            t = times[(name, n)]
            mem = memory.get((name, n))
            mem_s = f"{mem['call_mb']:>9.0f}{mem['maxrss_mb']:>11.0f}" if mem else " " * 20
            print(f"{name:<15}{n:>6}{1e3 * t:>11.1f}{1e3 * t / n:>10.3f}{mem_s}")

    print()
    per_atom = {k: v / k[1] for k, v in times.items()}
    if ("ours-f32", 500) in per_atom and ("mace-f32", 500) in per_atom:
        r = per_atom[("ours-f32", 500)] / per_atom[("mace-f32", 500)]
        print(f"ours-f32 / mace-f32 per-atom time at 500 atoms: {r:.2f}  (target <= 1)")
    if ("ours-f64", 500) in per_atom and ("mace-f32", 500) in per_atom:
        r = per_atom[("ours-f64", 500)] / per_atom[("mace-f32", 500)]
        print(f"ours-f64 / mace-f32 per-atom time at 500 atoms: {r:.2f}")
    for m in ("ours-f32", "ours-f64"):
        if (m, 500) in per_atom and (m, 2048) in per_atom:
            r = per_atom[(m, 2048)] / per_atom[(m, 500)]
            print(f"{m} per-atom time 2048 / 500 atoms: {r:.2f}  (target <= 1.2)")
    for m in ("ours-f32", "ours-f64"):
        if (m, 2048) in times:
            for nl in ("nl-matscipy", "nl-torch", "atoms_to_graph"):
                if (nl, 2048) in times:
                    share = times[(nl, 2048)] / times[(m, 2048)]
                    print(f"{nl} share of a {m} call at 2048 atoms: {100 * share:.1f}%"
                          "  (target < 10%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": versions, "load_before": load0, "load_after": load1,
                       "rounds": args.rounds,
                       "times_s": {f"{k[0]}@{k[1]}": v for k, v in times.items()},
                       "memory_mb": {f"{k[0]}@{k[1]}": v for k, v in memory.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
