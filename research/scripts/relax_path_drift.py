"""How a model's energy error changes along the labeller's relaxation paths, by adsorbate.

    python research/scripts/relax_path_drift.py research/potentials/geomformer-catalysis-v8.pt \
        data/catalysis-v1/frames.extxyz.xz data/catalysis-v1-extra-sites/frames.extxyz.xz

With ``--config TRAIN.yaml`` the paths of the config's train_file are reported per split
(train / val / test, as the trainer splits them) and those of other files as train, so a
model can be selected by its drift on paths it never trained on.

For each relaxation path (frames of kind "relax" sharing a config_id, ordered by step) the
drift is err(last frame) - err(first frame), err = E_model - E_labeller. A positive mean
drift means the model recovers less of the relaxation energy than the labeller, i.e. its
minima are too shallow and adsorption energies come out too weak (too positive). This is
what a per-frame MAE hides: the adsorption energy is a difference taken at the minimum.
"""

from __future__ import annotations

import argparse
import collections
import json

import numpy as np


def path_drifts(rows: list[dict], min_frames: int = 3) -> dict[str, np.ndarray]:
    """rows: dicts with file, config_id, kind, ads, step, e_ref, err. Returns adsorbate ->
    array of (drift, labeller's energy change, error at the last frame) per path."""
    paths = collections.defaultdict(list)
    for r in rows:
        if r["kind"] == "relax":
            paths[(r["file"], r["config_id"])].append(r)
    by = collections.defaultdict(list)
    for p in paths.values():
        if len(p) < min_frames:
            continue
        p.sort(key=lambda r: r["step"])
        first, last = p[0], p[-1]
        by[str(first["ads"])].append(
            (last["err"] - first["err"], last["e_ref"] - first["e_ref"], last["err"]))
    return {a: np.array(v) for a, v in by.items()}


def frame_errors(model: str, files: list[str], dtype: str = "float64") -> list[dict]:
    from geomformer_md import GeoMFormerCalculator
    from geomformer_md.train.data import labels_of, read_frames  # .xz read once, not per seek

    calc = GeoMFormerCalculator(model, dtype=dtype)
    rows = []
    for f in files:
        for k, a in enumerate(read_frames(f)):
            if a.info.get("kind") != "relax":
                continue
            e_ref = labels_of(a, f"{f} frame {k}")[0]
            b = a.copy()
            b.calc = calc
            rows.append({"file": f, "index": k, "config_id": a.info.get("config_id"),
                         "kind": "relax", "ads": a.info.get("adsorbate"),
                         "step": int(a.info.get("step", -1)),
                         "split": a.info.get("split_hint"), "e_ref": e_ref,
                         "err": b.get_potential_energy() - e_ref})
    return rows


def split_parts(rows: list[dict], config: str) -> None:
    """Set each row's "part" to train / val / test as the trainer splits the config's data."""
    import os

    from geomformer_md.train.config import load_train_config
    from geomformer_md.train.data import read_frames, split_indices

    data = load_train_config(config).data
    parts = {}
    split = split_indices(read_frames(data.train_file), data)
    for name, idx in zip(("train", "val", "test"), split, strict=True):
        parts.update(dict.fromkeys(idx, name))
    for r in rows:
        main_file = os.path.samefile(r["file"], data.train_file)
        r["part"] = parts[r["index"]] if main_file else "train"


def print_table(rows: list[dict]) -> None:
    print(f"{'adsorbate':10s} {'paths':>5s} {'drift eV':>9s} {'|drift|':>8s} {'frac>0':>6s} "
          f"{'dE_lab':>7s} {'err_last':>8s}")
    drifts = path_drifts(rows)
    lines = sorted(drifts.items())
    if drifts:
        lines.append(("all", np.concatenate(list(drifts.values()))))
    for name, v in lines:
        print(f"{name:10s} {len(v):5d} {v[:, 0].mean():+9.3f} {abs(v[:, 0]).mean():8.3f} "
              f"{np.mean(v[:, 0] > 0):6.2f} {v[:, 1].mean():+7.3f} {v[:, 2].mean():+8.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("files", nargs="+", help="labelled extxyz files with kind/config_id/step info")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write the per-frame errors as JSON")
    ap.add_argument("--config", help="training config: report its train / val / test paths apart")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    rows = frame_errors(a.model, a.files)
    if a.config:
        split_parts(rows, a.config)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows, fh)
    for part in ("train", "val", "test") if a.config else (None,):
        if part is not None:
            print(f"\n{part} paths")
        print_table([r for r in rows if part is None or r["part"] == part])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
