"""Train a MACE model with mace-torch's own command (`mace_run_train`) on a split written
by export_split.py, under a wall-clock budget, so it can be compared with a geomformer-md
model trained on the same frames for the same time on the same machine.

    python research/mace_compare/train_mace.py runs/mace-v1/data --out runs/mace-v1 --minutes 45

mace_run_train has no time limit, so this wrapper stops it when the budget is spent
(SIGTERM) and runs it once more with --restart_latest and --max_num_epochs set to the
last saved epoch: that run trains nothing, loads the best checkpoint (mace saves one
whenever the validation loss improves), evaluates it and writes <out>/mace.model.
Run it from an environment that has mace-torch (its e3nn pin differs from other tools').
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# ~209k parameters for the 10 elements of the catalysis data (geomformer-catalysis: ~194k).
HYPERS = [
    "--model=MACE", "--r_max=4.5", "--num_radial_basis=8", "--num_cutoff_basis=5", "--max_ell=3",
    "--interaction=RealAgnosticResidualInteractionBlock", "--num_interactions=2",
    "--hidden_irreps=48x0e + 48x1o", "--MLP_irreps=16x0e", "--correlation=3",
    "--lr=0.01", "--amsgrad", "--ema", "--ema_decay=0.99",
    "--energy_weight=1.0", "--forces_weight=100.0", "--scheduler_patience=5", "--clip_grad=10",
    "--default_dtype=float32", "--eval_interval=1", "--error_table=PerAtomMAE",
]


def mace_command(data: Path, out: Path, e0s: dict, epochs: int, seed: int, restart: bool,
                 device: str = "cpu", batch_size: int = 6) -> list[str]:
    exe = shutil.which("mace_run_train") or str(Path(sys.executable).with_name("mace_run_train"))
    cmd = [
        exe, "--name=mace", f"--seed={seed}",
        f"--train_file={data / 'train.extxyz'}", f"--valid_file={data / 'valid.extxyz'}",
        f"--test_file={data / 'test.extxyz'}",
        "--energy_key=REF_energy", "--forces_key=REF_forces", "--stress_key=REF_stress",
        f"--E0s={ {int(k): float(v) for k, v in e0s.items()} !r}",
        f"--max_num_epochs={epochs}", f"--device={device}",
        f"--batch_size={batch_size}", f"--valid_batch_size={2 * batch_size}",
        f"--checkpoints_dir={out / 'checkpoints'}", f"--model_dir={out}",
        f"--results_dir={out / 'results'}", f"--log_dir={out / 'logs'}",
        *HYPERS,
    ]
    return cmd + (["--restart_latest"] if restart else [])


def last_epoch(out: Path) -> int:
    epochs = [int(m.group(1)) for p in (out / "checkpoints").glob("*.pt")
              if (m := re.search(r"epoch-(\d+)", p.name))]
    return max(epochs, default=-1)


def cpu_copy(model: Path, out: Path) -> None:
    """Write a CPU copy of a mace model trained on a GPU. torch.load's map_location does not
    reach the TorchScript parts that e3nn pickles inside the model, so those are mapped here.
    (MACE's own model file: a trusted artefact of this run, not user input.)"""
    import torch

    jit_load = torch.jit.load
    torch.jit.load = lambda f, map_location=None, **kw: jit_load(f, map_location="cpu", **kw)
    try:
        m = torch.load(model, map_location="cpu", weights_only=False)
    finally:
        torch.jit.load = jit_load
    torch.save(m.to("cpu"), out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="folder with train/valid/test.extxyz and e0s.json")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget for training")
    ap.add_argument("--max-epochs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=6)
    args = ap.parse_args(argv)
    e0s = json.loads((args.data / "e0s.json").read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    restart = last_epoch(args.out) >= 0
    t0 = time.time()
    proc = subprocess.Popen(mace_command(args.data, args.out, e0s, args.max_epochs, args.seed,
                                         restart, args.device, args.batch_size), env=env)
    try:
        proc.wait(timeout=args.minutes * 60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    trained = time.time() - t0
    epoch = last_epoch(args.out)
    if epoch < 0:
        print("mace_run_train saved no checkpoint within the budget", file=sys.stderr)
        return 1
    # Final pass: no training (max epochs = the saved epoch), evaluate, write mace.model.
    final = mace_command(args.data, args.out, e0s, epoch, args.seed, restart=True,
                         device=args.device, batch_size=args.batch_size)
    subprocess.run(final, env=env, check=True)
    if args.device != "cpu":  # evaluate_potential.py --mace runs on the CPU
        cpu_copy(args.out / "mace.model", args.out / "mace-cpu.model")
    summary = {"train_seconds": trained, "best_epoch": epoch, "hypers": HYPERS,
               "device": args.device, "batch_size": args.batch_size,
               "model": str(args.out / "mace.model")}
    (args.out / "budget.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
