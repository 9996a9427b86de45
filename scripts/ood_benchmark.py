"""Build the out-of-domain benchmark: categorised structures labelled by SevenNet-0.

The kinds of structure that geomformer-catalysis-v11's data never listed (issue 23's
table), each a category of ~50 frames built by geomformer_md.distill.space from the seeded
DESCRIPTION below:

    alloy_surface    Pt3Ni (L1_2) and random / segregated PdAu, AgPd, CuNi (111) and (100)
                     slabs, clean and with O, CO, H, OH
    high_coverage    1/2 to 1 ML of O, H, CO, OH, N and co-adsorbed pairs on (111), (100)
    facets_defects   (110) and (311) slabs, clean and with adsorbates, adatoms and
                     vacancies; (111) and (100) slabs with an adatom or a vacancy
    nanoparticle     Pt, Au, Cu, Pd icosahedra (13, 55), cuboctahedra (13), truncated
                     octahedra (38), clean and with O or CO
    intermediate     CH3, CH3O, COH, CHO, OOH, NH2, NO, NH3 on Pt, Cu, Ni, Pd (111)
    hot_md           Langevin MD at 600-900 K of in-domain systems (2x2x4 slabs with one
                     adsorbate: Pt(111)+O, Cu(111)+CO, ...)

Each starting structure gives, with the teacher as the calculator: the start rattled, the
end of a short FIRE relaxation, and snapshots of Langevin MD from there (hot_md: MD
snapshots only). Frames carry energy, forces (raw, on every atom) and, for 3-D periodic
cells, stress, in a SinglePointCalculator, and in ``info`` the category, the structure
tags of the space (metal/elements, facet, adsorbate, shape, order, defect, coverage), how
the frame was made (mode, step, temperature_K, config_id) and the labeller (name,
version, settings). Frames above --max-force are dropped and counted.

Resumable: every starting structure writes its frames to ``--work/<category>/`` atomically
and is skipped when that file exists; every random choice comes from numpy generators
seeded by (seed, category, part, structure). The last step writes
``--out/frames.extxyz.xz`` and ``--out/build.json``. Runs in the labeller venv:

    OMP_NUM_THREADS=1 nice -n 10 /work/venv-label/bin/python scripts/ood_benchmark.py \\
        --work runs/ood-benchmark --out data/ood-benchmark --seed 0
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's package, whatever the venv has installed

from ase import Atoms, units  # noqa: E402
from ase.io import read, write  # noqa: E402
from ase.md.langevin import Langevin  # noqa: E402
from ase.optimize import FIRE  # noqa: E402

from geomformer_md.distill.space import Space, parse_space  # noqa: E402
from geomformer_md.distill.teacher import Teacher  # noqa: E402
from geomformer_md.io.files import write_bytes, write_frames, write_text  # noqa: E402
from geomformer_md.simulate.md import thermalize_momenta  # noqa: E402

VERSION = "ood-v1"
SEVENNET = {"calculator": "sevenn.calculator.SevenNetCalculator",
            "kwargs": {"model": "7net-0", "device": "cpu"}, "name": "7net-0"}
LATTICE_FILE = REPO / "data" / "catalysis-v1" / "lattice_constants.json"  # SevenNet-0's a0
METALS = ["Ag", "Au", "Cu", "Ni", "Pd", "Pt"]
LIGHT = (1, 6, 7, 8)

# Slab cell per facet: (surface_size, atomic planes): 8 atoms per plane on every facet.
FACET_CELL = {"111": ((2, 1), 4), "100": ((2, 2), 4), "110": ((2, 2), 5), "311": ((1, 2), 6)}
SMALL_CELL = {"111": ((1, 1), 4), "100": ((2, 1), 4)}  # 2x2x4 (111), the in-domain cells

SIMPLE = [{"formula": "O"}, {"formula": "CO", "binding": "C"}, {"formula": "H"},
          {"formula": "OH", "binding": "O"}]
SAMPLING = {"rattle_metal": 0.05, "rattle_adsorbate": 0.02, "relax_steps": 25, "fmax": 0.05,
            "md_temperatures": [300, 500], "md_steps": 40, "md_keep": [20, 40],
            "timestep_fs": 1.0, "friction_per_fs": 0.02}

# category -> parts; a part is a space (distill.space keys; "miller" is expanded into one
# space per facet with FACET_CELL), the structure kinds it draws in turn ("mix"), what a
# start must be ("hosts": alloy | pure, "require": info values), how kinds are balanced
# ("balance": an info key whose values are visited in turn) and the number of starts.
DESCRIPTION = {
    "alloy_surface": {
        "label": "binary alloy surfaces (Pt3Ni, PdAu, AgPd, CuNi)",
        "parts": [
            {"space": {"elements": ["Pt", "Ni"], "alloy_pairs": [["Pt", "Ni"]],
                       "alloy_surfaces": ["L12"], "miller": ["111", "100"],
                       "adsorbates": SIMPLE, "coverages": [0.25]},
             "hosts": "alloy", "mix": ["surface", "surface+ads"], "balance": "adsorbate",
             "starts": 2},
        ] + [
            {"space": {"elements": pair, "alloy_pairs": [pair],
                       "alloy_surfaces": ["random", "segregated"], "miller": ["111", "100"],
                       "adsorbates": SIMPLE, "coverages": [0.25]},
             "hosts": "alloy", "mix": ["surface", "surface+ads"], "balance": "adsorbate",
             "starts": 2}
            for pair in (["Pd", "Au"], ["Ag", "Pd"], ["Cu", "Ni"])
        ],
    },
    "high_coverage": {
        "label": "coverage 1/2-1 ML, co-adsorption",
        "parts": [
            {"space": {"elements": METALS, "miller": ["111", "100"],
                       "adsorbates": [*SIMPLE, {"formula": "N"}],
                       "coadsorption": [["CO", "O"], ["O", "H"], ["OH", "H"], ["CO", "H"],
                                        ["N", "H"]],
                       "coverages": [0.5, 0.75, 1.0]},
             "mix": ["surface+ads"], "balance": "adsorbate", "starts": 6},
        ],
    },
    "facets_defects": {
        "label": "(110), (311), adatoms, vacancies",
        "parts": [
            {"space": {"elements": METALS, "miller": ["110", "311"],
                       "defects": ["adatom", "vacancy"], "adsorbates": SIMPLE,
                       "coverages": [0.25]},
             "mix": ["surface", "surface+ads"], "balance": "elements", "starts": 4},
            {"space": {"elements": METALS, "miller": ["111", "100"],
                       "defects": ["adatom", "vacancy"], "adsorbates": SIMPLE,
                       "coverages": [0.25]},
             "mix": ["surface", "surface+ads"], "balance": "elements",
             "require": {"defect": ["adatom", "vacancy"]}, "starts": 2},
        ],
    },
    "nanoparticle": {
        "label": "nanoparticles (Pt13-Au55)",
        "parts": [
            {"space": {"elements": ["Pt", "Au", "Cu", "Pd"],
                       "clusters": [{"shape": "icosahedron", "noshells": 2},
                                    {"shape": "octahedron", "length": 3, "cutoff": 1},
                                    {"shape": "octahedron", "length": 4, "cutoff": 1},
                                    {"shape": "icosahedron", "noshells": 3}],
                       "adsorbates": [{"formula": "O"}, {"formula": "CO", "binding": "C"}]},
             "mix": ["cluster", "cluster+ads"], "balance": "shape", "starts": 12},
        ],
    },
    "intermediate": {
        "label": "C/N/O intermediates (CH3, CH3O, COH, CHO, OOH, NH2, NO, NH3)",
        "parts": [
            {"space": {"elements": ["Pt", "Cu", "Ni", "Pd"], "miller": ["111"],
                       "adsorbates": [
                           {"formula": "CH3", "binding": "C", "sites": ["top", "hollow"]},
                           {"formula": "CH3O", "binding": "O", "sites": ["hollow", "bridge"]},
                           {"formula": "COH", "binding": "C", "sites": ["hollow"]},
                           {"formula": "CHO", "binding": "C", "sites": ["bridge", "top"]},
                           {"formula": "OOH", "binding": "O", "sites": ["top", "bridge"]},
                           {"formula": "NH2", "binding": "N", "sites": ["bridge"]},
                           {"formula": "NO", "binding": "N", "sites": ["hollow", "top"]},
                           {"formula": "NH3", "binding": "N", "sites": ["top"]}],
                       "coverages": [0.125]},
             "mix": ["surface+ads"], "balance": "adsorbate", "starts": 16},
        ],
    },
    "hot_md": {
        "label": "hot MD frames 600-900 K",
        "mode": "hot_md",
        "sampling": {"md_temperatures": [600, 750, 900], "md_steps": 200,
                     "md_keep": [40, 60, 80, 100, 120, 140, 160, 180, 200]},
        "parts": [
            {"space": {"elements": [el], "miller": [facet], "adsorbates": [ads],
                       "coverages": [0.25]},
             "cell": "small", "mix": ["surface+ads"], "starts": 1}
            for el, facet, ads in [("Pt", "111", {"formula": "O"}),
                                   ("Cu", "111", {"formula": "CO", "binding": "C"}),
                                   ("Pd", "111", {"formula": "H"}),
                                   ("Ni", "100", {"formula": "OH", "binding": "O"}),
                                   ("Au", "111", {"formula": "CO", "binding": "C"}),
                                   ("Ag", "100", {"formula": "O"})]
        ],
    },
}


# --------------------------------------------------------------------------- structures


def part_spaces(part: dict, a0: dict) -> list[Space]:
    """The part's Space objects: one per facet (its cell from FACET_CELL), or one."""
    raw = {"bulk": False, "gas": False, **part["space"]}
    if "miller" not in raw:
        return [Space(parse_space(raw), a0)]
    cells = SMALL_CELL if part.get("cell") == "small" else FACET_CELL
    out = []
    for facet in raw["miller"]:
        size, planes = cells[facet]
        out.append(Space(parse_space({**raw, "miller": [facet], "surface_size": list(size),
                                      "surface_layers": planes}), a0))
    return out


def _key(kind: tuple, balance: str | None) -> str:
    """The value of the info key ``balance`` that a kind will carry (before building)."""
    name, args = kind
    if balance == "adsorbate" and len(args) > 2:
        a = args[2]
        return "+".join(x.formula for x in a) if isinstance(a, tuple) else a.formula
    if balance == "elements":
        return "-".join(sorted(set(args[0])))
    if balance == "shape" and name.startswith("cluster"):
        return json.dumps(args[1], sort_keys=True)
    return ""


def schedule(part: dict, space: Space, rng: np.random.Generator) -> list[tuple]:
    """``part["starts"]`` kinds of ``space``: the part's ``mix`` of kind names in turn, within
    each name the values of ``balance`` in turn (in a random order), kinds shuffled within
    them."""
    queues = {}
    for name in dict.fromkeys(part["mix"]):
        kinds = [k for k in space.kinds if k[0] == name and (
            part.get("hosts") is None or (len(k[1][0]) == 2) == (part["hosts"] == "alloy"))]
        if not kinds:
            raise ValueError(f"a part of the description has no structure kind {name}")
        groups = defaultdict(list)
        for k in kinds:
            groups[_key(k, part.get("balance"))].append(k)
        order = [groups[g] for g in rng.permutation(sorted(groups))]
        order = [[grp[i] for i in rng.permutation(len(grp))] for grp in order]
        queues[name] = [g[i % len(g)] for i in range(max(map(len, order))) for g in order]
    out, used = [], Counter()
    for i in range(part["starts"]):
        name = part["mix"][i % len(part["mix"])]
        out.append(queues[name][used[name] % len(queues[name])])
        used[name] += 1
    return out


def build_start(space: Space, kind: tuple, part: dict, rng) -> Atoms:
    for _ in range(50):
        atoms = space.build(*kind, rng)
        req = part.get("require", {})
        if all(str(atoms.info.get(k)) in map(str, v) for k, v in req.items()):
            return atoms
    raise RuntimeError(f"no structure of kind {kind[0]} meets {part['require']}")


def rattled(atoms: Atoms, rng, sampling: dict) -> Atoms:
    out = atoms.copy()
    free = np.ones(len(out), bool)
    for c in out.constraints:
        free[c.get_indices()] = False
    sigma = np.where(np.isin(out.numbers, LIGHT), sampling["rattle_adsorbate"],
                     sampling["rattle_metal"])
    out.positions[free] += rng.normal(size=(int(free.sum()), 3)) * sigma[free, None]
    return out


# --------------------------------------------------------------------------- sampling


class Builder:
    def __init__(self, teacher: Teacher, labeller: dict, seed: int, work: Path,
                 description: dict = DESCRIPTION, sampling: dict = SAMPLING,
                 a0: dict | None = None, log=print) -> None:
        self.teacher, self.labeller, self.seed, self.work = teacher, labeller, seed, work
        self.description, self.sampling, self.log = description, sampling, log
        self.a0 = a0 or {el: v["a0"] for el, v in
                         json.loads(LATTICE_FILE.read_text())["metals"].items()}

    def starts(self):
        """Every (category, part index, structure index, space, kind) in a fixed order."""
        for ci, (cat, spec) in enumerate(self.description.items()):
            for pi, part in enumerate(spec["parts"]):
                k = 0  # structure index within the part, over its facets
                for si, space in enumerate(part_spaces(part, self.a0)):
                    rng = np.random.default_rng([self.seed, ci, pi, si])
                    for kind in schedule(part, space, rng):
                        yield ci, cat, pi, part, k, space, kind
                        k += 1

    def run(self, only: set | None = None) -> None:
        todo = [s for s in self.starts() if not only or s[1] in only]
        t0 = time.time()
        for n, (ci, cat, pi, part, k, space, kind) in enumerate(todo, 1):
            path = self.work / cat / f"{pi}-{k:03d}.extxyz"
            if path.exists():
                continue
            t = time.time()
            calls = self.teacher.calls
            frames, drops = self.sample(ci, cat, pi, part, k, space, kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            meta = {"frames": len(frames), "dropped": drops, "calls": self.teacher.calls - calls,
                    "seconds": round(time.time() - t, 1)}
            write_text(path.with_suffix(".json"), json.dumps(meta))
            write_frames(path, frames)  # last: its existence marks the structure done
            self.log(f"[{n}/{len(todo)}] {cat} {pi}-{k:03d} {kind[0]} {_key(kind, 'adsorbate')}: "
                     f"{len(frames)} frames, {meta['calls']} calls, {meta['seconds']} s "
                     f"(total {time.time() - t0:.0f} s)")

    def sample(self, ci, cat, pi, part, k, space, kind):
        spec = self.description[cat]
        sampling = {**self.sampling, **spec.get("sampling", {})}
        rng = np.random.default_rng([self.seed, ci, pi, k, 1])
        start = build_start(space, kind, part, rng)
        tags = {key: start.info[key] for key in
                ("elements", "facet", "adsorbate", "shape", "order", "defect", "coverage")}
        tags.update(category=cat, space_category=start.info["category"],
                    metal=start.info["elements"], config_id=f"{cat}-{pi}-{k:03d}",
                    benchmark=VERSION, seed=self.seed, **self.labeller)
        keep, drops = [], []

        def take(atoms, mode, step, temperature):
            labelled, why = self.teacher.label(atoms)
            if why is not None:
                drops.append(f"{mode} {step}: {why}")
                return
            labelled.info.clear()
            labelled.info.update(tags, mode=mode, step=int(step),
                                 temperature_K=float(temperature))
            keep.append(labelled)

        work = start.copy()
        self.teacher.calc.reset()  # no state from the structure before: a rebuild repeats it
        work.calc = self.teacher.calc
        if spec.get("mode") != "hot_md":
            take(rattled(start, rng, sampling), "start", 0, 0.0)
        opt = FIRE(work, logfile=None)
        steps = 0
        for _ in opt.irun(fmax=sampling["fmax"], steps=sampling["relax_steps"]):
            steps = opt.nsteps
        if spec.get("mode") != "hot_md":
            take(work, "relax", steps, 0.0)
        temps = sampling["md_temperatures"]  # hot_md: parts in turn; else at random
        temperature = float(temps[(pi + k) % len(temps)] if spec.get("mode") == "hot_md"
                            else rng.choice(temps))
        thermalize_momenta(work, temperature_K=temperature, rng=rng)
        dyn = Langevin(work, sampling["timestep_fs"] * units.fs, temperature_K=temperature,
                       friction=sampling["friction_per_fs"] / units.fs, fixcm=False, rng=rng)
        done = 0
        for step in sampling["md_keep"]:
            dyn.run(step - done)
            done = step
            take(work, "hot_md" if spec.get("mode") == "hot_md" else "md", step, temperature)
        return keep, drops


# --------------------------------------------------------------------------- output




def assemble(builder: Builder, out: Path) -> dict:
    """All frames in description order -> out/frames.extxyz.xz and out/build.json."""
    frames, meta, missing = [], Counter(), []
    for _, cat, pi, _, k, _, _ in builder.starts():
        path = builder.work / cat / f"{pi}-{k:03d}.extxyz"
        if not path.exists():
            missing.append(f"{cat} {pi}-{k:03d}")
            continue
        if path.stat().st_size:
            frames += read(path, index=":", format="extxyz")
        m = json.loads(path.with_suffix(".json").read_text())
        meta["calls"] += m["calls"]
        meta["dropped"] += len(m["dropped"])
        meta["label_seconds"] += m["seconds"]
    if missing:
        raise SystemExit(f"{len(missing)} structures not built yet (first: {missing[0]}); "
                         f"run the build again to finish them")
    import io

    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "frames.extxyz.xz", lzma.compress(buf.getvalue().encode(), preset=9))
    counts = defaultdict(Counter)
    for a in frames:
        c = a.info["category"]
        counts[c]["frames"] += 1
        counts[c]["atoms"] += len(a)
        counts[c][f"mode={a.info['mode']}"] += 1
    summary = {
        "benchmark": VERSION, "seed": builder.seed, "n_frames": len(frames),
        "labeller": builder.labeller, "teacher_max_force_eV_A": builder.teacher.max_force,
        "teacher_label_calls": meta["calls"], "dropped_frames": meta["dropped"],
        "teacher_seconds": round(meta["label_seconds"]),
        "counts": {c: dict(v) for c, v in counts.items()},
        "lattice_constants": builder.a0, "sampling": builder.sampling,
        "description": builder.description,
    }
    write_text(out / "build.json", json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def labeller_info(spec: dict) -> dict:
    info = {"labeller": spec["name"],
            "labeller_settings": json.dumps({"calculator": spec["calculator"],
                                             **spec["kwargs"]}, sort_keys=True)}
    if "sevenn" in spec["calculator"]:
        import sevenn
        import torch

        info["labeller_version"] = f"sevenn {sevenn.__version__}, torch {torch.__version__}"
    else:
        import ase

        info["labeller_version"] = f"ase {ase.__version__}"
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/ood-benchmark", help="per-structure frames (resume)")
    p.add_argument("--out", default="data/ood-benchmark", help="frames.extxyz.xz, build.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="categories to build now (default: all)")
    p.add_argument("--max-force", type=float, default=10.0,
                   help="drop frames with any |F| above this (eV/Å), as the training data")
    p.add_argument("--list", action="store_true", help="print the starts and exit")
    args = p.parse_args(argv)
    unknown = set(args.only or ()) - set(DESCRIPTION)
    if unknown:
        p.error(f"--only: unknown categories {sorted(unknown)}; known: {list(DESCRIPTION)}")
    import torch

    torch.set_num_threads(1)
    if args.list:
        builder = Builder(None, {}, args.seed, Path(args.work))
        for _, cat, pi, _, k, _, kind in builder.starts():
            print(cat, pi, k, kind[0], _key(kind, "adsorbate"), _key(kind, "elements"))
        return 0
    teacher = Teacher(SEVENNET["calculator"], SEVENNET["kwargs"], name=SEVENNET["name"],
                      max_force=args.max_force)
    builder = Builder(teacher, labeller_info(SEVENNET), args.seed, Path(args.work))
    builder.run(set(args.only or ()))
    if args.only:
        return 0
    summary = assemble(builder, Path(args.out))
    print(json.dumps({c: v["frames"] for c, v in summary["counts"].items()}), summary["n_frames"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
