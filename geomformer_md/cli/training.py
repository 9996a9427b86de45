"""``geomformer-md train``, ``export`` and ``distill``: potentials from data, from a
checkpoint, from a teacher."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .common import CLIError, _mae_text, _progress


def cmd_train(args) -> int:
    config = Path(args.config)
    if not config.is_file():
        raise CLIError(f"cannot read {args.config}: no such file")
    try:
        from ..train import train
        from ..train.config import read_settings
    except ImportError as exc:
        raise CLIError(f"training is not available in this installation ({exc})") from None
    try:
        settings = read_settings(args.set or [])
    except ValueError as exc:
        raise CLIError(f"--set {exc}") from None
    metrics = train(str(config), resume=args.resume, progress=_progress(args), settings=settings)
    if int(os.environ.get("RANK", "0")) == 0 and isinstance(metrics, dict):  # one rank prints
        if not metrics.get("complete", True):
            print(f"stopped at step {metrics.get('step')}; continue with --resume")
        else:
            test, val = metrics.get("test") or {}, metrics.get("val") or {}
            parts = [f"{name} {_mae_text(v)}"
                     for name, v in (("test", test), ("val", val)) if v]
            print("final metrics: " + ("; ".join(parts) if parts else "no val/test frames"))
    return 0


def cmd_export(args) -> int:
    from ..train.trainer import CHECKPOINT, export_checkpoint

    src = Path(args.checkpoint)
    if not src.exists():
        raise CLIError(f"cannot read {args.checkpoint}: no such file or directory")
    if src.is_dir() and not (src / CHECKPOINT).is_file():
        raise CLIError(f"{args.checkpoint} has no {CHECKPOINT} (is it a training out_dir?)")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    from ..io.checkpoint import read_model_file

    export_checkpoint(src, out, use_ema=not args.no_ema)
    meta = read_model_file(out)["metadata"]
    print(f"wrote {out} (epoch {meta.get('epoch')}, step {meta.get('step')}, "
          f"{'EMA' if meta.get('ema') else 'live'} weights)")
    return 0


def cmd_distill(args) -> int:
    from ..distill import distill, load_distill_config

    config = args.config
    if args.workers is not None:
        if args.workers < 1:
            raise CLIError(f"--workers must be at least 1, got {args.workers}")
        config = dataclasses.replace(load_distill_config(args.config), workers=args.workers)
    result = distill(config, progress=not getattr(args, "quiet", False))
    last = result["rows"][-1] if result["rows"] else {}
    summary = ", ".join(f"{k} {last[k]:.4g}" for k in ("E_all", "F_all", "spearman", "caught")
                        if isinstance(last.get(k), float))
    print(f"committee: {result['committee']}" + (f" (validation: {summary})" if summary else ""))
    return 0


def add_parsers(add) -> None:
    """The subcommands of this module, on the parser of ``geomformer-md``."""
    sp = add("train", "train or fine-tune a potential from a YAML config", cmd_train,
             model_options=False)
    sp.add_argument("config", help="training config (YAML; keys in geomformer_md/train/config.py)")
    sp.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    sp.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. training.lr=1e-4 (repeatable)",
    )

    sp = add(
        "export",
        "write a model file from a training checkpoint (a run still going or stopped)",
        cmd_export,
        model_options=False,
    )
    sp.add_argument("checkpoint", help="checkpoint.pt or the run's out_dir")
    sp.add_argument("-o", "--output", required=True, help="model file to write")
    sp.add_argument("--no-ema", action="store_true", help="the live weights, not the EMA average")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    sp = add("distill", "active-learning distillation of a committee potential from a teacher "
             "(any ASE calculator) over a configuration space; re-running the same config "
             "continues the run", cmd_distill, model_options=False)
    sp.add_argument("config", help="distillation config (YAML; see docs/distill.md)")
    sp.add_argument("--workers", type=int, metavar="N",
                    help="train the committee's members in N processes at once (overrides "
                         "the config's workers; results do not depend on it)")
