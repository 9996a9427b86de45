"""Write the exact train/val/test split of a geomformer-md training config as three
extxyz files that `mace_run_train` reads, plus the least-squares E0s of the train split.

    python research/mace_compare/export_split.py research/configs/catalysis-v1.yaml \
        --out runs/mace-v1/data

Both models then see the same frames (same seed, same grouping by config_id, the same
held-out adsorbate/site combinations in test, frames with |F| > max_force dropped) and
start from the same per-element reference energies. Labels are written under
REF_energy / REF_forces / REF_stress, the keys mace-torch recommends.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import write

from geomformer_md.train.config import load_train_config
from geomformer_md.train.data import labels_of, read_frames, split_indices


def relabel(atoms, where: str):
    e, f, s = labels_of(atoms, where)
    a = atoms.copy()
    a.calc = None
    a.info = {k: v for k, v in atoms.info.items() if k not in ("energy", "stress", "free_energy")}
    a.info["REF_energy"] = e
    a.arrays["REF_forces"] = f
    if s is not None:
        a.info["REF_stress"] = s.reshape(9)
    return a, e, f


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    d = load_train_config(args.config).data
    frames = read_frames(d.train_file)
    split = list(split_indices(frames, d))
    for path in d.extra_train_files:  # train-only files, as in the trainer
        more = read_frames(path)
        split[0] = list(split[0]) + list(range(len(frames), len(frames) + len(more)))
        frames = frames + more
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    species = sorted({int(z) for a in frames for z in a.numbers})
    rows, energies = [], []
    for name, idx in zip(("train", "valid", "test"), split, strict=True):
        kept = []
        for k in idx:
            a, e, f = relabel(frames[k], f"frame {k}")
            if np.abs(f).max() > d.max_force:
                continue
            kept.append(a)
            if name == "train":
                rows.append([np.sum(a.numbers == z) for z in species])
                energies.append(e)
        write(out / f"{name}.extxyz", kept, format="extxyz")
        print(f"{name}: {len(kept)} frames -> {out / f'{name}.extxyz'}")
    e0, *_ = np.linalg.lstsq(np.array(rows, float), np.array(energies), rcond=None)
    e0s = {int(z): float(v) for z, v in zip(species, e0, strict=True)}
    (out / "e0s.json").write_text(json.dumps(e0s, indent=1))
    print("E0s:", e0s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
