"""The structures a distillation's teacher failed on in iterations >= 1, rebuilt from the
candidates (for runs made before distill kept them as ``label/NNNNN.failed.extxyz``).

An iteration's selection is a pure function of its candidates file and the run's seed
(``select_frames(candidates, cfg, rng(it, 7))``), so the frame behind ``label/NNNNN.failed``
is the NNNNN-th selected candidate. The issue-24 run skips frames whose teacher forces pass
15 eV/Å; the labeller's curves stay walls up to ~50 eV/Å (data/catalysis-v1-extra-short), so
these structures, found where the committee let atoms crowd, can be labelled later as a
hole-filling set for the final training. Candidates are not archived, so run this on the
machine that has them:

    .venv/bin/python research/scripts/distill_failed_frames.py \\
        research/configs/distill-catalysis.yaml \\
        --out research/training-runs/distill-catalysis/failed-frames.extxyz.xz
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from ase.io import read, write

from geomformer_md.distill import load_distill_config
from geomformer_md.distill.explore import select_frames


def _same(a, b) -> bool:
    return len(a) == len(b) and np.allclose(a.positions, b.positions, atol=1e-6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = load_distill_config(args.config)
    # the selection rules a run used can change between iterations (min_displacement came in
    # at iteration 8 of the issue-24 run): the one whose choice matches every labelled frame
    variants = [cfg, dataclasses.replace(cfg, min_displacement=0.0)]
    out = Path(cfg.out_dir)
    found = []
    for it_dir in sorted(out.glob("iter_[0-9][0-9][0-9]")):
        it = int(it_dir.name[5:])
        failed = sorted((it_dir / "label").glob("*.failed"))
        cands = it_dir / "candidates.extxyz"
        if it == 0 or not failed or not cands.exists():
            continue
        candidates = read(cands, ":")
        ok = {int(p.name[:5]): p for p in (it_dir / "label").glob("[0-9]*.extxyz")
              if not p.name.endswith(".failed.extxyz")}
        for variant in variants:
            selected = select_frames(candidates, variant,
                                     np.random.default_rng([cfg.seed, it, 7]))
            if len(selected) > max(ok, default=-1) and all(
                    _same(read(path), selected[j]) for j, path in ok.items()):
                break
        else:
            raise SystemExit(f"iteration {it}: no selection rule reproduces its labelled frames")
        for path in failed:
            k = int(path.stem)
            atoms = selected[k].copy()
            # the same structure the teacher saw: every labelled neighbour agrees (above)
            atoms.info.update(iteration=it, frame=k, teacher_failure=path.read_text().strip())
            found.append(atoms)
        print(f"iteration {it}: {len(failed)} failed frames rebuilt "
              f"(min_displacement {variant.min_displacement})")
    write(args.out, found, format="extxyz")
    print(f"wrote {len(found)} structures to {args.out}")


if __name__ == "__main__":
    main()
