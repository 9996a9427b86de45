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
from pathlib import Path

import numpy as np
from ase.io import read, write

from geomformer_md.distill import load_distill_config
from geomformer_md.distill.explore import select_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = load_distill_config(args.config)
    out = Path(cfg.out_dir)
    found = []
    for it_dir in sorted(out.glob("iter_[0-9][0-9][0-9]")):
        it = int(it_dir.name[5:])
        failed = sorted((it_dir / "label").glob("*.failed"))
        cands = it_dir / "candidates.extxyz"
        if it == 0 or not failed or not cands.exists():
            continue
        selected = select_frames(read(cands, ":"), cfg, np.random.default_rng([cfg.seed, it, 7]))
        for path in failed:
            k = int(path.stem)
            atoms = selected[k].copy()
            # the same structure the teacher saw: its label files, when present, agree
            atoms.info.update(iteration=it, frame=k, teacher_failure=path.read_text().strip())
            found.append(atoms)
        ok = sorted((it_dir / "label").glob("[0-9]*.extxyz"))
        if ok:  # check the reconstruction on a labelled neighbour
            j = int(ok[0].name[:5])
            assert np.allclose(read(ok[0]).positions, selected[j].positions, atol=1e-6), it
        print(f"iteration {it}: {len(failed)} failed frames rebuilt")
    write(args.out, found, format="extxyz")
    print(f"wrote {len(found)} structures to {args.out}")


if __name__ == "__main__":
    main()
