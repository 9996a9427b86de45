"""The model a training would ship if it stopped now: a training checkpoint's averaged (EMA)
weights written as a model file, to evaluate a long run part-way (its per-epoch validation
sees only the validation split; the test categories come at the end).

    .venv/bin/python research/scripts/model_from_checkpoint.py runs/final-v20/checkpoint.pt \\
        runs/final-v20-epoch5.pt

The trainer writes model.pt from the same averaged weights at the end of a run, so a
snapshot taken at the last step equals it. Read with weights_only=True, as every model file.
"""

from __future__ import annotations

import argparse

import torch

from geomformer_md.io.checkpoint import save_model
from geomformer_md.model import GeoMFormer, GeoMFormerConfig
from geomformer_md.train.trainer import EMA


def snapshot(checkpoint: str) -> tuple[GeoMFormer, dict]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if state.get("format") != "geomformer-md-train-checkpoint-1":
        raise SystemExit(f"{checkpoint}: not a training checkpoint of this package")
    model = GeoMFormer(GeoMFormerConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    ema = EMA(model.parameters(), decay=0.0)  # as the trainer builds it: the same order
    shadow = state["ema"]["shadow"]
    if len(shadow) != len(ema.params):
        raise SystemExit(f"{checkpoint}: {len(shadow)} averaged tensors for {len(ema.params)} "
                         f"parameters")
    ema.load_state_dict(state["ema"])
    ema.swap()  # the averaged weights into the model, as the trainer does before it saves
    where = {"step": int(state["step"]), "epoch": int(state["epoch"]),
             "step_in_epoch": int(state["step_in_epoch"])}
    return model.eval(), {"training_config": state["config"], "snapshot_of": checkpoint,
                          **where}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("output")
    args = ap.parse_args()
    model, meta = snapshot(args.checkpoint)
    save_model(model, args.output, meta)
    print(f"wrote {args.output}: averaged weights at step {meta['step']} (epoch "
          f"{meta['epoch']} + {meta['step_in_epoch']} steps)")


if __name__ == "__main__":
    main()
