"""Build the adsorption-energy benchmark of issue 24 and label it with SevenNet-0.

Each case is a clean host (slab or particle) with one or more adsorbates placed on it by
geomformer_md.distill.space from the seeded DESCRIPTION below. The labeller relaxes, from
the same starts that every evaluated model gets (scripts/evaluate_adsorption.py):
the clean host, the host with its adsorbates and the gas references of
geomformer_md.simulate.references (O2 scheme: H from H2, O from O2, N from N2, C from
CO - 1/2 O2; CO, NO, NH3, H2O from themselves). A case's adsorption energy is per
adsorbate (the average at its coverage):

    E_ads = [E(host + adsorbates) - E(host) - sum_a sum_g c_ag E(g)] / n_adsorbates

Categories (``case["category"]``): alloy_surface (random, segregated, L1_2/L1_0 slabs of
Pt-Ni, Pd-Au, Ag-Pd, Pt-Cu, Pd-Cu and the held-out Cu-Ni), facet ((111), (100), (110),
(211) and the held-out (311) of the six metals), defect (adatoms and vacancies on (111) and
(100)), nanoparticle (13 to 79 atoms, pure and alloyed, the held-out 55-atom size; the
adsorbate at a top, bridge or hollow site of a facet), coverage (1/4 to 1 ML and
co-adsorbed pairs), intermediate (CH3, CH2, CH3O, COH, CHO, OOH, NO and the held-out NH,
NH2, NH3). ``heldout`` lists the hold-out rules of research/configs/distill-catalysis.yaml
that a case matches.

Resumable: each case writes ``--work/cases/<id>.json`` (and the relaxed structures,
``<id>.extxyz``) atomically and is skipped when the JSON exists; relaxed clean hosts are
shared between cases with the same host (``--work/hosts/``), gas references are relaxed
once (``--work/gas/``). The last step writes ``--out/cases.extxyz.xz`` (per case: the
start, the labeller's relaxed host and relaxed host + adsorbates; the relaxed gas
molecules) and ``--out/cases.json``. Runs in the labeller venv:

    OMP_NUM_THREADS=1 nice -n 15 /work/venv-label/bin/python scripts/adsorption_benchmark.py \\
        --work runs/adsorption-benchmark --out data/adsorption-benchmark
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's package, whatever the venv has installed
sys.path.insert(0, str(REPO / "scripts"))

from adsorption_scoring import (  # noqa: E402
    BOND,
    GEOMETRY_FLAGS,
    RELAX,
    Result,
    assess,
    gas_molecules,
    host_key,
    score,
)
from ase import Atoms  # noqa: E402
from ase.data import covalent_radii  # noqa: E402
from ase.io import read, write  # noqa: E402
from ood_benchmark import labeller_info, schedule  # noqa: E402

from geomformer_md.distill.space import (  # noqa: E402
    Space,
    _binding_index,
    adsorbate_molecule,
    matches,
    parse_space,
    rule_name,
)
from geomformer_md.io.files import write_bytes, write_frames, write_text  # noqa: E402
from geomformer_md.simulate.references import resolve_references  # noqa: E402

VERSION = "adsorption-v1"
LATTICE_FILE = REPO / "data" / "catalysis-v1" / "lattice_constants.json"  # SevenNet-0's a0
HOLDOUT_CONFIG = REPO / "research" / "configs" / "distill-catalysis.yaml"
METALS = ["Ag", "Au", "Cu", "Ni", "Pd", "Pt"]
LIGHT = (1, 6, 7, 8)

# Slab cell per facet: (surface_size, atomic planes); 8 atoms per plane, 6-7 Å thick.
FACET_CELL = {"111": ((2, 1), 4), "100": ((2, 2), 4), "110": ((2, 2), 5),
              "211": ((1, 2), 9), "311": ((1, 2), 6)}
SIMPLE = [{"formula": "O"}, {"formula": "CO", "binding": "C"}, {"formula": "H"},
          {"formula": "OH", "binding": "O"}, {"formula": "N"}]
LOW = [0.125]  # one adsorbate on 8 top atoms


def _alloy(pair, orders, n, miller=("111", "100")):
    return {"space": {"elements": pair, "alloy_pairs": [pair], "alloy_surfaces": orders,
                      "miller": list(miller), "adsorbates": SIMPLE, "coverages": LOW},
            "hosts": "alloy", "mix": ["surface+ads"], "balance": "adsorbate", "starts": n}


def _on_sites(formulas):  # one adsorbate entry per site kind: the site is balanced too
    return [{**a, "sites": [s]} for a in formulas for s in ("top", "bridge", "hollow")]


# category -> parts, as scripts/ood_benchmark.py: a part is a space (distill.space keys;
# "miller" is expanded into one space per facet with FACET_CELL), the structure kinds it
# draws in turn (mix), what a host must be (hosts: alloy | pure), how kinds are balanced
# (balance: an info key whose values are visited in turn) and the number of starts.
DESCRIPTION = {
    "alloy_surface": {"parts": [
        _alloy(["Pt", "Ni"], ["L12", "L10"], 4),
        _alloy(["Pd", "Au"], ["random", "segregated"], 4),
        _alloy(["Ag", "Pd"], ["random", "segregated"], 4),
        _alloy(["Pt", "Cu"], ["L12", "random"], 4),
        _alloy(["Pd", "Cu"], ["segregated", "L10"], 2),
        _alloy(["Cu", "Ni"], ["random", "segregated", "L12"], 6),  # held out
    ]},
    "facet": {"parts": [
        {"space": {"elements": METALS, "miller": ["111", "100", "110", "211", "311"],
                   "adsorbates": SIMPLE, "coverages": LOW, "surface_sites": "exposed"},
         "mix": ["surface+ads"], "balance": "elements", "starts": 25},
    ]},
    "defect": {"parts": [
        {"space": {"elements": METALS, "miller": ["111", "100"], "defects": ["adatom", "vacancy"],
                   "adsorbates": SIMPLE, "coverages": LOW},
         "mix": ["surface+ads"], "balance": "elements", "require_defect": True, "starts": 12},
    ]},
    "nanoparticle": {"parts": [
        {"space": {"elements": ["Pt", "Au", "Cu", "Pd", "Ag", "Ni"],
                   "clusters": [{"shape": "icosahedron", "noshells": 2},         # 13
                                {"shape": "octahedron", "length": 3, "cutoff": 1},  # 13
                                {"shape": "octahedron", "length": 4, "cutoff": 1},  # 38
                                {"shape": "decahedron", "p": 3, "q": 2, "r": 0},    # 39
                                {"shape": "icosahedron", "noshells": 3},         # 55
                                {"shape": "octahedron", "length": 5, "cutoff": 2},  # 55
                                {"shape": "octahedron", "length": 5, "cutoff": 1}],  # 79
                   "adsorbates": _on_sites([{"formula": "O"}, {"formula": "CO", "binding": "C"},
                                            {"formula": "H"}, {"formula": "OH",
                                                               "binding": "O"}])},
         "mix": ["cluster+ads"], "balance": "shape", "starts": 20},
        {"space": {"elements": ["Pt", "Ni", "Pd", "Au"], "alloy_pairs": [["Pt", "Ni"],
                                                                         ["Pd", "Au"]],
                   "clusters": [{"shape": "icosahedron", "noshells": 2},
                                {"shape": "octahedron", "length": 4, "cutoff": 1}],
                   "adsorbates": _on_sites([{"formula": "O"}, {"formula": "CO",
                                                               "binding": "C"}])},
         "hosts": "alloy", "mix": ["cluster+ads"], "balance": "shape", "starts": 4},
    ]},
    "coverage": {"parts": [
        {"space": {"elements": METALS, "miller": ["111", "100"],
                   "adsorbates": [{"formula": "O"}, {"formula": "H"},
                                  {"formula": "CO", "binding": "C"},
                                  {"formula": "OH", "binding": "O"}, {"formula": "N"}],
                   "coverages": [cov]},
         "mix": ["surface+ads"], "balance": "adsorbate", "starts": 3}
        for cov in (0.25, 0.5, 0.75)
    ] + [
        # 1 ML: every top-layer atom gets one, placed on top (random bridge and hollow sites
        # collide at this coverage); the relaxation takes them where they go
        {"space": {"elements": METALS, "miller": ["111", "100"],
                   "adsorbates": [{**a, "sites": ["top"]} for a in
                                  [{"formula": "O"}, {"formula": "H"},
                                   {"formula": "CO", "binding": "C"},
                                   {"formula": "OH", "binding": "O"}, {"formula": "N"}]],
                   "coverages": [1.0]},
         "mix": ["surface+ads"], "balance": "adsorbate", "require_coverage": 1.0, "starts": 3},
    ] + [
        {"space": {"elements": METALS, "miller": ["111", "100"],
                   "coadsorption": [["CO", "O"], ["O", "H"], ["OH", "H"], ["CO", "H"],
                                    ["N", "O"], ["CO", "OH"]],
                   "coverages": [0.25, 0.5]},
         "mix": ["surface+ads"], "balance": "adsorbate", "require_pair": True, "starts": 6},
    ]},
    "intermediate": {"parts": [
        {"space": {"elements": METALS, "miller": ["111", "100"],
                   "adsorbates": [
                       {"formula": "CH3", "binding": "C"}, {"formula": "CH2", "binding": "C"},
                       {"formula": "CH3O", "binding": "O"}, {"formula": "COH", "binding": "C"},
                       {"formula": "CHO", "binding": "C"}, {"formula": "OOH", "binding": "O"},
                       {"formula": "NO", "binding": "N"}, {"formula": "NH", "binding": "N"},
                       {"formula": "NH2", "binding": "N"}, {"formula": "NH3", "binding": "N"}],
                   "coverages": LOW, "orientations": ["upright", "tilted"]},
         "mix": ["surface+ads"], "balance": "adsorbate", "starts": 30},
    ]},
}


# --------------------------------------------------------------------------- cases


def holdout_rules(path: Path = HOLDOUT_CONFIG) -> list[dict]:
    import yaml

    return list(parse_space(yaml.safe_load(path.read_text())["space"]).holdout)


def part_spaces(part: dict, a0: dict) -> list[Space]:
    raw = {"bulk": False, "gas": False, **part["space"]}
    if "miller" not in raw:
        return [Space(parse_space(raw), a0)]
    return [Space(parse_space({**raw, "miller": [f], "surface_size": list(FACET_CELL[f][0]),
                               "surface_layers": FACET_CELL[f][1]}), a0)
            for f in raw["miller"]]


def lattice_constants() -> dict:
    return {el: v["a0"] for el, v in json.loads(LATTICE_FILE.read_text())["metals"].items()}


def build_cases(seed: int = 0, description: dict = DESCRIPTION, a0: dict | None = None,
                rules: list[dict] | None = None) -> list[tuple[dict, Atoms]]:
    """Every case of the description as (case record, starting structure), in a fixed
    order; every random choice comes from generators seeded by (seed, category, part,
    space, case)."""
    a0 = a0 or lattice_constants()
    rules = holdout_rules() if rules is None else rules
    out = []
    for ci, (cat, spec) in enumerate(description.items()):
        for pi, part in enumerate(spec["parts"]):
            spaces = part_spaces(part, a0)
            starts = part["starts"]  # spread over the part's facets: first ones get the rest
            per = [starts // len(spaces) + (si < starts % len(spaces))
                   for si in range(len(spaces))]
            k = 0
            for si, space in enumerate(spaces):
                # a kind with no room for its adsorbate (a hollow on a 13-atom particle can
                # be too tight) gives way to the next one of the schedule
                kinds = schedule({**part, "starts": 3 * per[si]}, space,
                                 np.random.default_rng([seed, ci, pi, si]))
                made = 0
                for kind in kinds:
                    if made == per[si]:
                        break
                    rng = np.random.default_rng([seed, ci, pi, si, k])
                    atoms = _build(space, kind, part, rng)
                    if atoms is None:
                        continue
                    case = describe(atoms, kind, f"{cat}-{pi}-{k:03d}", cat, rules)
                    out.append((case, atoms))
                    k, made = k + 1, made + 1
    return out


def _build(space: Space, kind: tuple, part: dict, rng) -> Atoms | None:
    """A start of ``kind`` with its adsorbates placed (and a defect where the part asks);
    None after 10 tries (a 13-atom particle never has room at its hollows; every other
    kind of the description is built at the first to third try)."""
    for _ in range(10):
        atoms = space.build(*kind, rng)
        if atoms.info["adsorbate"] == "none":
            continue
        if part.get("require_defect") and atoms.info["defect"] == "none":
            continue
        if part.get("require_pair") and "+" not in atoms.info["adsorbate"]:
            continue
        if atoms.info["coverage"] != "none" and atoms.info["coverage"] < part.get(
                "require_coverage", 0.0):
            continue
        return atoms
    return None


def describe(atoms: Atoms, kind: tuple, case_id: str, category: str, rules) -> dict:
    """The case record: tags of the space, held-out rules matched, the host's atoms (first)
    and each adsorbate's atoms, binding atom and gas reference."""
    light = np.isin(atoms.numbers, LIGHT)
    n_host = int((~light).sum())
    if light[:n_host].any():
        raise AssertionError("adsorbate atoms must follow the host's")
    wanted = kind[1][2] if isinstance(kind[1][2], tuple) else (kind[1][2],)
    adsorbates = []
    for group in _molecules(atoms, n_host):
        symbols = atoms[group].get_chemical_symbols()
        for ads in wanted:
            name, mol, bind = adsorbate_molecule(ads.formula, _binding_index(ads))
            if mol.get_chemical_symbols() == symbols:
                break
        else:
            raise AssertionError(f"an adsorbate {symbols} of {case_id} is not one of {wanted}")
        ref = resolve_references(name, mol)
        adsorbates.append({"formula": name, "atoms": [int(i) for i in group],
                           "binding": int(group[bind]), "reference": ref})
    tags = {k: (v.item() if hasattr(v, "item") else v) for k, v in atoms.info.items()}
    return {"id": case_id, "category": category, "tags": tags, "n_host": n_host,
            "heldout": [rule_name(r) for r in rules if matches(atoms.info, r)],
            "adsorbates": adsorbates}


def _molecules(atoms: Atoms, n_host: int) -> list[list[int]]:
    """The adsorbate atoms split into molecules: atoms appended together and bonded."""
    r = covalent_radii[atoms.numbers]
    groups: list[list[int]] = []
    for i in range(n_host, len(atoms)):
        if groups and any(atoms.get_distance(i, j, mic=True) < BOND * (r[i] + r[j])
                          for j in groups[-1]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


# --------------------------------------------------------------------------- labelling


def _relax_record(res) -> dict:
    return {"energy": float(res.energy), "converged": bool(res.converged),
            "steps": int(res.steps), "fmax": float(res.fmax),
            "seconds": round(float(res.wall_time_s), 2)}


class Labeller:
    """Relaxes cases with one ASE calculator, one structure at a time, storing each case,
    each distinct host and each gas molecule in ``work`` as it finishes."""

    def __init__(self, calc, work: Path, relax_settings: dict = RELAX, log=print) -> None:
        self.calc, self.work, self.settings, self.log = calc, Path(work), relax_settings, log
        for sub in ("cases", "hosts", "gas"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self.relaxations = 0

    def _relax(self, atoms: Atoms):
        from geomformer_md.simulate.relax import relax

        if hasattr(self.calc, "reset"):
            self.calc.reset()
        self.relaxations += 1
        return relax(atoms, calculator=self.calc, progress=False, **self.settings)

    def gas(self, names: list[str]) -> dict[str, float]:
        from geomformer_md.simulate.references import _gas_molecule

        out = {}
        for name in names:
            path = self.work / "gas" / f"{name}.json"
            if not path.exists():
                mol = _gas_molecule(name)
                mol.center(vacuum=10.0)
                mol.pbc = False
                relaxed, res = self._relax(mol)
                write_frames(path.with_suffix(".extxyz"), [relaxed])
                write_text(path, json.dumps(_relax_record(res)))
            rec = json.loads(path.read_text())
            if not rec["converged"]:
                self.log(f"warning: gas reference {name} did not converge")
            out[name] = rec["energy"]
        return out

    def host(self, clean: Atoms):
        key = host_key(clean)
        path = self.work / "hosts" / f"{key}.json"
        if not path.exists():
            relaxed, res = self._relax(clean)
            write_frames(path.with_suffix(".extxyz"), [relaxed])
            write_text(path, json.dumps({**_relax_record(res), "key": key}))
        return (read(path.with_suffix(".extxyz")), Result(json.loads(path.read_text()))), key

    def run(self, cases: list[tuple[dict, Atoms]], limit: int | None = None) -> int:
        """Label every case not done yet (at most ``limit`` of them); the number labelled."""
        gas = self.gas(gas_molecules([c for c, _ in cases]))
        done, t0 = 0, time.time()
        for n, (case, start) in enumerate(cases, 1):
            path = self.work / "cases" / f"{case['id']}.json"
            if path.exists():
                continue
            if limit is not None and done >= limit:
                break
            t = time.time()
            calls = self.relaxations
            clean, key = self.host(start[:case["n_host"]])
            relaxed, res = self._relax(start)
            result = score(case, start, clean, (relaxed, res), gas)
            result.update(host_key=key, seconds=round(time.time() - t, 1),
                          relaxations=self.relaxations - calls)
            write_frames(path.with_suffix(".extxyz"), [relaxed])
            write_text(path, json.dumps({"case": case, "labeller": result}))  # last: done
            done += 1
            self.log(f"[{n}/{len(cases)}] {case['id']} {case['tags']['adsorbate']} "
                     f"{case['tags']['elements']}: E_ads {result['e_ads']:.3f} eV, sites "
                     f"{result['sites']}, flags {result['flags']}, {result['steps']}+"
                     f"{result['host_steps']} steps, {result['seconds']} s "
                     f"(total {time.time() - t0:.0f} s)")
        return done


def assemble(cases: list[tuple[dict, Atoms]], work: Path, out: Path, meta: dict) -> dict:
    """Per case (build order) its start, the labeller's relaxed host and relaxed host +
    adsorbates -> out/cases.extxyz.xz; the gas molecules after them; the case records and
    the labeller's results -> out/cases.json."""
    work = Path(work)
    frames, records, missing = [], [], []
    for case, start in cases:
        path = work / "cases" / f"{case['id']}.json"
        if not path.exists():
            missing.append(case["id"])
            continue
        rec = json.loads(path.read_text())
        relaxed = read(path.with_suffix(".extxyz"))
        host = read(work / "hosts" / f"{rec['labeller']['host_key']}.extxyz")
        geo = assess(case, start, relaxed, host)  # the current rules (a resumed run: older)
        rec["labeller"].update(
            sites=geo["sites"], min_distance=geo["min_distance"],
            host_displacement=geo["host_displacement"], flags=sorted(
                {*(f for f in rec["labeller"]["flags"] if f not in GEOMETRY_FLAGS),
                 *geo["flags"]}))
        for role, atoms in (("start", start), ("host", host), ("relaxed", relaxed)):
            a = atoms.copy()
            if role != "start":
                a.calc = atoms.calc
            a.info.clear()
            a.info.update(case=case["id"], role=role, category=case["category"])
            frames.append(a)
        records.append(rec)
    if missing:
        raise SystemExit(f"{len(missing)} cases not labelled yet (first: {missing[0]}); run "
                         f"the labelling again to finish them")
    gas = {}
    for name in gas_molecules([c for c, _ in cases]):
        mol = read(work / "gas" / f"{name}.extxyz")
        mol.info.clear()
        mol.info.update(case="gas", role="gas", molecule=name)
        frames.append(mol)
        gas[name] = json.loads((work / "gas" / f"{name}.json").read_text())
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "cases.extxyz.xz", lzma.compress(buf.getvalue().encode(), preset=9))
    seconds = sum(r["labeller"]["seconds"] for r in records)
    summary = {"benchmark": VERSION, **meta, "relax": RELAX, "n_cases": len(records),
               "labeller_seconds": round(seconds), "gas": gas,
               "counts": dict(Counter(r["case"]["category"] for r in records)),
               "heldout_cases": sum(bool(r["case"]["heldout"]) for r in records),
               "description": DESCRIPTION, "cases": records}
    write_text(out / "cases.json", json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def sevennet_calculator(name: str = "7net-0"):
    """SevenNet-0 on the CPU in its own float32: its node embedding and graph builder
    hard-code float32 (a float64 copy of the model fails in e3nn with 'both inputs should
    have same dtype'), so float64 is not available from this labeller."""
    from sevenn.calculator import SevenNetCalculator

    return SevenNetCalculator(model=name, device="cpu")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="runs/adsorption-benchmark", help="per-case results (resume)")
    p.add_argument("--out", default="data/adsorption-benchmark",
                   help="cases.extxyz.xz and cases.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="label at most this many cases now")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    args = p.parse_args(argv)
    cases = build_cases(args.seed)
    if args.list:
        for case, atoms in cases:
            print(case["id"], len(atoms), case["tags"]["elements"], case["tags"]["facet"],
                  case["tags"]["shape"], case["tags"]["order"], case["tags"]["defect"],
                  case["tags"]["adsorbate"], case["tags"]["coverage"],
                  "heldout" if case["heldout"] else "")
        print(len(cases), dict(Counter(c["category"] for c, _ in cases)),
              "held out:", sum(bool(c["heldout"]) for c, _ in cases))
        return 0
    import torch

    torch.set_num_threads(1)
    labeller = Labeller(sevennet_calculator(), Path(args.work))
    labeller.run(cases, args.limit)
    if args.limit is not None and any(
            not (Path(args.work) / "cases" / f"{c['id']}.json").exists() for c, _ in cases):
        return 0
    meta = {"seed": args.seed, **labeller_info(
        {"name": "7net-0", "calculator": "sevenn.calculator.SevenNetCalculator",
         "kwargs": {"model": "7net-0", "device": "cpu"}}), "labeller_dtype": "float32"}
    summary = assemble(cases, Path(args.work), Path(args.out), meta)
    print(summary["counts"], summary["n_cases"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
