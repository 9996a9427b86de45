"""Peak memory per atom of one energy + forces + stress call, before and after the lean
backward (geomformer_md.potential.LEAN_BACKWARD), and what it costs in time.

For the shipped default potential through ``GeoMFormerCalculator`` on rattled fcc Cu
supercells (the matscipy neighbour list, rebuilt at the call):

* memory: a fresh subprocess per (mode, size, dtype) makes one call and reports the rise
  of its resident set during the call (VmHWM after resetting it, minus VmRSS before),
  divided by the atoms: MB/atom, "before" (plain autograd graph) and "after" side by side;
* time: both modes in one process, calls interleaved round-robin (so load drift hits them
  alike), median per mode of the wall time and of the process's CPU time (with one torch
  thread the latter is what the call used, less disturbed by other jobs on shared cores);
  the ratios after/before are printed.

Also prints :func:`geomformer_md.memory.estimate_call_bytes` next to the measured peak,
so the estimate that guards calls is checked against what a call really takes.

    python benchmarks/bench_memory.py                      # 500, 2048, 4000 atoms, float32
    python benchmarks/bench_memory.py --sizes 4000 --dtypes float32 float64 --rounds 7

Results and discussion: docs/performance.md ("Memory").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from bench_calculator import cu_supercell  # the same rattled fcc Cu cells

MODES = ("before", "after")


def set_mode(mode: str) -> None:
    import geomformer_md.potential as potential

    potential.LEAN_BACKWARD = mode == "after"


def call(calc, atoms) -> None:
    calc.reset()
    calc.calculate(atoms, ["energy", "forces", "stress"], ["positions"])


def memory_worker(mode: str, n: int, dtype: str, threads: int) -> None:
    """In a fresh process: the RSS rise during one call."""
    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.data.graph import atoms_to_graph
    from geomformer_md.memory import estimate_call_bytes, process_memory_mb

    torch.set_num_threads(threads)
    set_mode(mode)
    calc, atoms = GeoMFormerCalculator(dtype=dtype), cu_supercell(n)
    n_edges = atoms_to_graph(atoms, calc.potential.cutoff).n_edges
    est = estimate_call_bytes(calc.potential, n, n_edges)  # also runs the calibration
    before = process_memory_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    call(calc, atoms)
    peak = process_memory_mb("VmHWM")
    print(json.dumps({"call_mb": peak - before, "estimate_mb": est / 2**20}))


def measure_memory(mode: str, n: int, dtype: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-worker", mode, str(n), dtype, str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_modes(n: int, dtype: str, rounds: int) -> dict[str, dict[str, float]]:
    """Median wall and process-CPU seconds per call of each mode. With one torch thread
    the CPU time is what the call itself used, much less disturbed than the wall time
    when other jobs share the cores."""
    from geomformer_md import GeoMFormerCalculator

    calc, atoms = GeoMFormerCalculator(dtype=dtype), cu_supercell(n)
    wall: dict[str, list[float]] = {m: [] for m in MODES}
    cpu: dict[str, list[float]] = {m: [] for m in MODES}
    for mode in MODES:  # warm-up
        set_mode(mode)
        call(calc, atoms)
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            set_mode(mode)
            t0, c0 = time.perf_counter(), time.process_time()
            call(calc, atoms)
            wall[mode].append(time.perf_counter() - t0)
            cpu[mode].append(time.process_time() - c0)
    return {"wall": {m: statistics.median(v) for m, v in wall.items()},
            "cpu": {m: statistics.median(v) for m, v in cpu.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2048, 4000])
    p.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"])
    p.add_argument("--rounds", type=int, default=5, help="timed calls per mode (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-time", action="store_true", help="memory only")
    p.add_argument("--no-memory", action="store_true", help="time only")
    p.add_argument("--memory-worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_worker:
        mode, n, dtype, threads = args.memory_worker
        return memory_worker(mode, int(n), dtype, int(threads))
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    head = (f"{'dtype':<8}{'atoms':>6}{'MB/atom before':>16}{'after':>8}{'ratio':>7}"
            f"{'estimate MB/atom':>18}{'wall s before':>15}{'after':>8}{'ratio':>7}"
            f"{'CPU s before':>15}{'after':>8}{'ratio':>7}")
    print(head)
    for dtype in args.dtypes:
        for n in args.sizes:
            line = f"{dtype:<8}{n:>6}" + " " * 49
            if not args.no_memory:
                mem = {m: measure_memory(m, n, dtype, args.threads) for m in MODES}
                mb = {m: mem[m]["call_mb"] / n for m in MODES}
                est = mem["after"]["estimate_mb"] / n
                line = (f"{dtype:<8}{n:>6}{mb['before']:>16.3f}{mb['after']:>8.3f}"
                        f"{mb['after'] / mb['before']:>7.2f}{est:>18.3f}")
            if not args.no_time:
                t = time_modes(n, dtype, args.rounds)
                for kind in ("wall", "cpu"):
                    b, a = t[kind]["before"], t[kind]["after"]
                    line += f"{b:>15.3f}{a:>8.3f}{a / b:>7.2f}"
            print(line, flush=True)
    print(f"load after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
