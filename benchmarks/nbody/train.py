"""Train the package's GeoMFormer on EGNN's charged N-body task (x at step 3100 -> 4100).

Adam (lr 5e-4, weight decay 1e-12, batch 100) as EGNN; cosine decay of the
learning rate over --epochs or --max-minutes, whichever ends first (EGNN keeps
it constant for 10000 epochs, which a CPU cannot afford); the state with the
best validation MSE is kept and used for the test MSE. A checkpoint is
written atomically after every epoch; ``--resume`` continues from it (same
arguments). ``--max-minutes`` stops cleanly (checkpoint + metrics of the best
state so far) when the accumulated training time runs out; resume later with
a larger budget.

  python benchmarks/nbody/train.py --out benchmarks/nbody/runs/full
  python benchmarks/nbody/train.py --out benchmarks/nbody/runs/no_cross --variant no_cross
  python benchmarks/nbody/train.py --quick --data /tmp/nb --out /tmp/nb_run   # minutes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate import evaluate_predictor, load_split  # noqa: E402
from nbody_model import VARIANTS, NBodyPredictor, make_config  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=HERE / "data")
    p.add_argument("--out", type=Path, default=HERE / "runs" / "full")
    p.add_argument("--variant", choices=VARIANTS, default="full")
    p.add_argument("--epochs", type=int, default=220, help="the lr follows a cosine over these")
    p.add_argument("--max-minutes", type=float, default=None, help="training budget, all sessions")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=1e-12)
    p.add_argument("--cutoff", type=float, default=30.0, help="> max pair distance (23.6)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--rbf", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.1,
                   help="residual dropout (GeoMFormerConfig.dropout)")
    p.add_argument("--eval-every", type=int, default=2, help="epochs between validations")
    p.add_argument("--patience", type=int, default=25, help="validations without improvement")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--flip-charges", action=argparse.BooleanOptionalAction, default=True,
        help="augment: flip the sign of all charges of a training system at random "
        "(the dynamics depend only on q_i q_j, so the target is unchanged)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (evaluation runs on the CPU)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quick", action="store_true", help="small model, 200 trajectories, 3 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train = args.n_train or 200
        args.n_val = args.n_val or 100
        args.n_test = args.n_test or 100
        args.epochs, args.d_model, args.layers, args.rbf, args.eval_every = 3, 32, 2, 8, 1
    return args


def mse(model, split, batch: int = 250) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(split["q"]), batch):
            sl = slice(s, s + batch)
            pred = model(split["x0"][sl], split["v0"][sl], split["q"][sl])
            total += float(((pred - split["x1"][sl]) ** 2).sum())
    return total / split["x1"].numel()


def cpu_state(model) -> dict:
    """A detached CPU copy of the weights (kept as the best state, saved with best.pt)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "checkpoint.pt"

    splits = {
        name: load_split(args.data, name, n, torch.float32)
        for name, n in (("train", args.n_train), ("val", args.n_val), ("test", args.n_test))
    }
    dmax = max(float(s["dmax"]) for s in splits.values())
    if dmax >= args.cutoff:
        print(f"WARNING: max pair distance {dmax:.2f} >= cutoff {args.cutoff}: far pairs cut")
    cfg = make_config(args.cutoff, args.d_model, args.heads, args.layers, args.rbf,
                      dropout=args.dropout)
    model = NBodyPredictor(cfg, args.variant).to(args.device)
    dev = {name: {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in split.items()}
           for name, split in splits.items() if name != "test"}
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    n_batches = len(splits["train"]["q"]) // args.batch  # drop_last, as EGNN
    total_steps = max(1, args.epochs * n_batches)
    budget = None if args.max_minutes is None else 60.0 * args.max_minutes

    def set_lr(step: int, elapsed: float) -> float:
        # Cosine decay over whichever runs out first, the epochs or the time budget,
        # so a time-limited run still ends annealed.
        frac = step / total_steps if budget is None else max(step / total_steps, elapsed / budget)
        lr = 0.5 * args.lr * (1 + math.cos(math.pi * min(frac, 1.0)))
        for g in opt.param_groups:
            g["lr"] = lr
        return lr

    state = {
        "step": 0,
        "epoch": 0,
        "elapsed": 0.0,
        "best_val": float("inf"),
        "best_epoch": -1,
        "best_state": None,
        "bad_evals": 0,
        "history": [],
    }
    if args.resume and ckpt_path.exists():
        # our own file (optimizer state + history), hence weights_only=False
        ck = torch.load(ckpt_path, weights_only=False, map_location="cpu")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        torch.set_rng_state(ck["rng"])
        print(f"resumed at epoch {state['epoch']} ({state['elapsed'] / 60:.1f} min trained)")
    print(
        f"{args.variant}: {model.n_parameters()} parameters, {len(splits['train']['q'])} train, "
        f"cutoff {args.cutoff} (max pair distance {dmax:.2f})",
        flush=True,
    )

    stop_reason = "epochs"
    train = dev["train"]
    while state["epoch"] < args.epochs:
        if budget is not None and state["elapsed"] >= budget:
            stop_reason = "time budget"
            break
        if state["bad_evals"] >= args.patience:
            stop_reason = "early stopping"
            break
        t0 = time.time()
        model.train()
        perm = torch.randperm(len(train["q"])).to(args.device)
        run = 0.0
        for b in range(n_batches):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            q = train["q"][idx]
            if args.flip_charges:
                q = q * (2.0 * torch.randint(0, 2, (len(idx), 1)) - 1.0).to(q)
            pred = model(train["x0"][idx], train["v0"][idx], q)
            loss = ((pred - train["x1"][idx]) ** 2).mean()
            lr = set_lr(state["step"], state["elapsed"] + time.time() - t0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            run += float(loss.detach())
        state["epoch"] += 1
        rec = {"epoch": state["epoch"], "train_mse": run / n_batches, "lr": lr}
        if state["epoch"] % args.eval_every == 0 or state["epoch"] == args.epochs:
            val = mse(model, dev["val"])
            rec["val_mse"] = val
            if val < state["best_val"]:
                state.update(
                    best_val=val,
                    best_epoch=state["epoch"],
                    bad_evals=0,
                    best_state=cpu_state(model),
                )
            else:
                state["bad_evals"] += 1
        state["elapsed"] += time.time() - t0
        rec["elapsed_min"] = state["elapsed"] / 60
        state["history"].append(rec)
        save_atomic(
            {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "state": state,
                "rng": torch.get_rng_state(),
                "config": cfg.to_dict(),
                "variant": args.variant,
                "args": vars(args) | {"data": str(args.data), "out": str(args.out)},
            },
            ckpt_path,
        )
        print(
            " ".join(
                f"{k} {v:.5g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()
            ),
            flush=True,
        )

    if state["best_state"] is None:  # budget ran out before the first validation
        state["best_state"] = cpu_state(model)
        state["best_val"], state["best_epoch"] = mse(model, dev["val"]), state["epoch"]
    model.load_state_dict(state["best_state"])
    model.cpu()
    metrics = evaluate_predictor(model, splits["test"])
    metrics.update(
        variant=args.variant,
        val_mse=state["best_val"],
        best_epoch=state["best_epoch"],
        epochs_done=state["epoch"],
        epochs_planned=args.epochs,
        stop_reason=stop_reason,
        train_time_min=state["elapsed"] / 60,
        n_train=len(train["q"]),
        config=cfg.to_dict(),
        machine=f"{os.cpu_count()} CPU cores (shared), torch {torch.__version__}, "
        f"{args.threads} thread(s), load avg {os.getloadavg()[0]:.1f} at end",
    )
    with open(args.out / "metrics.json", "w") as fh:
        json.dump(metrics, fh, indent=1)
    torch.save(
        {"config": cfg.to_dict(), "variant": args.variant, "state_dict": state["best_state"]},
        args.out / "best.pt",
    )
    print(
        f"stopped: {stop_reason}; best val {state['best_val']:.5f} at epoch {state['best_epoch']}; "
        f"test MSE {metrics['test_mse']:.5f}; {metrics['n_parameters']} parameters; "
        f"{state['elapsed'] / 60:.1f} min; equivariance err {metrics['equivariance_err_f32']:.1e}"
    )
    if stop_reason == "time budget":
        print(f"resume: {' '.join(sys.argv)} --resume --max-minutes <larger>")
    return metrics


if __name__ == "__main__":
    main()
