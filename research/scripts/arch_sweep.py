"""Architecture sweep at an equal number of optimiser steps, on the CPU.

On a GPU at the batch sizes of our equal-budget runs the step time is set by kernel
launches, not by the model's width (research/mace_compare/README.md), so there the
wall-clock budget is a budget of steps. This script trains each variant for the same
epochs and global batch (torchrun, 2 CPU ranks) from one base config and prints
their validation and test errors side by side, so that the next GPU session knows
which variants to spend device time on.

    python research/scripts/arch_sweep.py research/configs/catalysis-v4.yaml --out runs/arch-sweep \
        --epochs 4 --batch-size 12 --variant base --variant rmlp32:radial_mlp=32

A variant is NAME or NAME:KEY=VALUE[,KEY=VALUE...]: model settings, or training
settings (lr, seed, energy_weight, ...: any key of the training section); values are
read as YAML. A finished variant is skipped; a killed one
resumes from its checkpoint. Results: OUT/summary.json and the printed table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from geomformer_md.train.config import (
    TrainingConfig,
    load_train_config,
    read_variant,
    train_config_from_dict,
)

TRAINING_KEYS = {f.name for f in dataclasses.fields(TrainingConfig)}


def parse_variant(text: str) -> tuple[str, dict, dict]:
    name, settings = read_variant(text)
    if not name or "/" in name:
        raise ValueError(f"variant {text!r}: NAME must be a plain, non-empty name")
    model = {k: v for k, v in settings.items() if k not in TRAINING_KEYS}
    training = {k: v for k, v in settings.items() if k in TRAINING_KEYS}
    return name, model, training


def variant_config(base: Path, out: Path, epochs: int, batch: int, model: dict, training: dict):
    """The base config with the sweep's schedule and the variant's settings, validated."""
    raw = load_train_config(base).to_dict()
    raw["out_dir"] = str(out)
    raw["model"] = {**raw["model"], **model}
    raw["training"] = {
        **raw["training"], **training, "epochs": epochs, "batch_size": batch,
        "max_minutes": None, "num_threads": 1,
    }
    for key in [k for k in raw["training"] if k.startswith("stage_two")]:
        raw["training"].pop(key)  # one cosine schedule for every variant
    train_config_from_dict(raw)  # raises naming any bad key or value
    return raw


def last_row(path: Path) -> dict:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return rows[-1] if rows else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("config", type=Path, help="base training config (data, model, training)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--batch-size", type=int, required=True, help="global batch")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME[:K=V,...]")
    ap.add_argument("--nproc", type=int, default=2, help="torchrun ranks (CPU processes)")
    args = ap.parse_args(argv)
    try:
        variants = [parse_variant(v) for v in args.variant]
        configs = {
            name: variant_config(args.config, args.out / name, args.epochs, args.batch_size, m, t)
            for name, m, t in variants
        }
    except ValueError as err:
        ap.error(str(err))

    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, raw in configs.items():
        run = args.out / name
        if (run / "test_metrics.json").exists():
            print(f"{name}: done already, skipped", flush=True)
        else:
            run.mkdir(parents=True, exist_ok=True)
            (run / "sweep-config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
            cmd = [
                sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}",
                "-m", "geomformer_md.cli", "train", str(run / "sweep-config.yaml"),
            ]
            if (run / "checkpoint.pt").exists():
                cmd.append("--resume")
            print(f"{name}: {' '.join(cmd[2:])}", flush=True)
            with open(run / "train.log", "a") as log:
                subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        test = json.loads((run / "test_metrics.json").read_text())
        val = last_row(run / "metrics.csv")
        summary[name] = {
            "model": raw["model"], "lr": raw["training"]["lr"], "epochs": args.epochs,
            "batch_size": args.batch_size, "n_parameters": test.get("n_parameters"),
            "steps": test.get("steps"), "seconds": float(val.get("elapsed_s", "nan")),
            "val": test.get("val"), "test": test["test"],
        }
        summary_path.write_text(json.dumps(summary, indent=1))

    heads = ("params", "s/step", "val E", "val F", "test E", "test F")
    print(f"\n{'variant':<14}{heads[0]:>9}" + "".join(f"{h:>8}" for h in heads[1:]))
    for name, r in summary.items():
        per_step = r["seconds"] / r["steps"] if r.get("steps") else float("nan")
        print(
            f"{name:<14}{r['n_parameters'] or 0:>9}{per_step:>8.3f}"
            f"{r['val']['energy_mae_meV_atom']:>8.2f}{r['val']['forces_mae_meV_A']:>8.1f}"
            f"{r['test']['energy_mae_meV_atom']:>8.2f}{r['test']['forces_mae_meV_A']:>8.1f}"
        )
    print("(E meV/atom, F meV/Å; s/step: CPU wall time, not the GPU's)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
