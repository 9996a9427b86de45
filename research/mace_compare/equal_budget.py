"""Train GeoMFormer and MACE one after the other on the same machine, the same frames and split,
and the same wall-clock budget each, then write both models and a summary.

    python research/mace_compare/equal_budget.py research/configs/catalysis-v3.yaml --out runs/cmp \
        --minutes 3.5 --device cuda --batch-size 12

Each budget starts before the model's own data preparation (reading frames, neighbour lists),
so that cost counts on both sides. GeoMFormer's learning rate follows a cosine to the end of
its last epoch, so the number of epochs must be known first: the script times 20 real training
steps and one validation pass, then picks the most epochs that fit what is left of the budget
(the timed steps stay in the run; the schedule restarts from step 0 after them). MACE
(`train_mace.py`, mace-torch's own `mace_run_train`) is stopped when its budget is spent and
its best checkpoint is kept. Both models are then evaluated alike with
`scripts/evaluate_potential.py` (`--mace` for MACE), on any machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def train_geomformer(
    config: Path,
    out: Path,
    minutes: float,
    device: str,
    batch_size: int | None,
    weights: list[float] | None = None,
    model: dict | None = None,
    lr: float | None = None,
    seed: int | None = None,
) -> dict:
    from geomformer_md.train.config import load_train_config
    from geomformer_md.train.trainer import Trainer

    t0 = time.time()
    cfg = load_train_config(config)
    tcfg = dataclasses.replace(
        cfg.training,
        device=device,
        max_minutes=None,
        batch_size=batch_size or cfg.training.batch_size,
    )
    if weights:
        tcfg = dataclasses.replace(
            tcfg, energy_weight=weights[0], forces_weight=weights[1], stress_weight=weights[2]
        )
    if lr is not None:
        tcfg = dataclasses.replace(tcfg, lr=lr)
    if seed is not None:
        tcfg = dataclasses.replace(tcfg, seed=seed)
    cfg = dataclasses.replace(
        cfg, out_dir=str(out), training=tcfg, model={**cfg.model, **(model or {})}
    )
    if (out / "checkpoint.pt").exists():
        raise FileExistsError(f"{out} holds a run already; use a new --out")
    trainer = Trainer(cfg, progress=False)
    setup_s = time.time() - t0

    # Time real steps (they stay in the run) and one validation pass.
    order = trainer._epoch_order(10_000)
    items = [
        order[(i * tcfg.batch_size) % len(order) :][: tcfg.batch_size].tolist() for i in range(25)
    ]
    for it in items[:5]:  # warm-up (allocator, kernels)
        trainer._train_step(it)
    t1 = time.time()
    for it in items[5:]:
        trainer._train_step(it)
    step_s = (time.time() - t1) / 20
    t2 = time.time()
    trainer.evaluate(trainer.val_set)
    val_s = time.time() - t2
    # 10 % for checkpoints and other per-epoch costs (an H200 run: 27 s/epoch, 25 s estimated)
    epoch_s = 1.1 * (trainer.steps_per_epoch * step_s + val_s)
    left = 60 * minutes - (time.time() - t0) - 2 * val_s  # the final test + val evaluation
    epochs = max(1, math.floor(left / epoch_s))
    trainer.tcfg = dataclasses.replace(tcfg, epochs=epochs, max_minutes=left / 60)
    trainer.cfg = dataclasses.replace(cfg, training=trainer.tcfg)
    trainer.total_steps = epochs * trainer.steps_per_epoch
    trainer.step = 0
    print(
        f"GeoMFormer: setup {setup_s:.1f} s, {step_s * 1000:.1f} ms/step, "
        f"validation {val_s:.1f} s, "
        f"{trainer.steps_per_epoch} steps/epoch -> {epochs} epochs in {left:.0f} s",
        flush=True,
    )
    result = trainer.run()
    if not result.get("complete"):  # the time guard cut the last epoch: keep what was trained
        result = trainer.finish()
    return {
        "seconds": time.time() - t0,
        "epochs": epochs,
        "ms_per_step": 1000 * step_s,
        "setup_s": setup_s,
        "batch_size": tcfg.batch_size,
        "test": result.get("test"),
        "loss_weights": [tcfg.energy_weight, tcfg.forces_weight, tcfg.stress_weight],
        "lr": tcfg.lr,
        "seed": tcfg.seed,
        "model_overrides": model or {},
        "n_parameters": result.get("n_parameters"),
        "model": str(out / "model.pt"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "config",
        type=Path,
        help="geomformer-md training config (its data section defines the split)",
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget for each model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--batch-size", type=int, default=None, help="for both models (default: the config's)"
    )
    ap.add_argument("--only", choices=["geomformer", "mace"], default=None)
    ap.add_argument(
        "--weights",
        type=float,
        nargs=3,
        metavar=("E", "F", "S"),
        default=None,
        help="GeoMFormer loss weights instead of the config's (e.g. 1 100 0: MACE's defaults)",
    )
    ap.add_argument(
        "--name", default="geomformer", help="sub-folder and summary key of the GeoMFormer run"
    )
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="GeoMFormer model setting instead of the config's, e.g. --model d_model=64 "
        "--model n_rbf=16 (repeatable; values are read as YAML, 1e-3 as a number)",
    )
    ap.add_argument("--lr", type=float, default=None, help="GeoMFormer peak learning rate")
    ap.add_argument(
        "--seed", type=int, default=None,
        help="training seed of both models (default: the config's for GeoMFormer, 0 for MACE); "
        "run-to-run scatter of ~5 %% in force MAE needs more than one seed to compare",
    )
    args = ap.parse_args(argv)
    from geomformer_md.train.config import read_settings

    try:
        overrides = read_settings(args.model)
    except ValueError as err:
        ap.error(f"--model wants KEY=VALUE: {err}")
    if overrides:  # checked by the trainer's own config validation, before any training
        from geomformer_md.train.config import load_train_config, train_config_from_dict

        raw = load_train_config(args.config).to_dict()
        try:
            train_config_from_dict({**raw, "model": {**raw["model"], **overrides}})
        except ValueError as err:
            ap.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.update({"config": str(args.config), "minutes": args.minutes, "device": args.device})
    if args.device.startswith("cuda"):
        import torch

        summary["gpu"] = torch.cuda.get_device_name()

    if args.only in (None, "geomformer"):
        summary[args.name] = train_geomformer(
            args.config,
            args.out / args.name,
            args.minutes,
            args.device,
            args.batch_size,
            args.weights,
            overrides,
            args.lr,
            args.seed,
        )
        summary_path.write_text(json.dumps(summary, indent=1))
    if args.only in (None, "mace"):
        mace_name = f"mace-seed{args.seed}" if args.seed else "mace"  # seed 0: the first runs
        data = args.out / "mace-data"
        subprocess.run(
            [sys.executable, str(HERE / "export_split.py"), str(args.config), "--out", str(data)],
            check=True,
        )
        from geomformer_md.train.config import load_train_config

        batch = args.batch_size or load_train_config(args.config).training.batch_size
        t0 = time.time()
        subprocess.run(
            [
                sys.executable,
                str(HERE / "train_mace.py"),
                str(data),
                "--out",
                str(args.out / mace_name),
                "--minutes",
                str(args.minutes),
                "--device",
                args.device,
                "--batch-size",
                str(batch),
                "--threads",
                "1" if args.device.startswith("cuda") else "2",
                "--seed",
                str(args.seed or 0),
            ],
            check=True,
        )
        budget = json.loads((args.out / mace_name / "budget.json").read_text())
        summary[mace_name] = {"seconds_with_final_pass": time.time() - t0, **budget}
        summary_path.write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
