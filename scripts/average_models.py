"""Average the weights of model files trained from one parent (a "model soup").

    python scripts/average_models.py runs/a/model.pt runs/b/model.pt --out soup.pt

Runs that start from the same model and differ only in seed or data order end in one
basin, and their weight average is usually at least as good as each, with less run-to-run
scatter (Wortsman et al. 2022). The files must have identical configs; every floating-point
parameter and buffer is averaged, others must agree. Evaluate the result like any model
(scripts/evaluate_potential.py) before using it.
"""

from __future__ import annotations

import argparse

import torch

from geomformer_md import load_model, save_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if len(a.models) < 2:
        ap.error("give at least two model files")
    models = [load_model(p) for p in a.models]
    for p, m in zip(a.models[1:], models[1:], strict=True):
        if m.config != models[0].config:
            ap.error(f"{p} has another config than {a.models[0]}; only runs of one model average")
    states = [m.state_dict() for m in models]
    avg = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            avg[key] = torch.stack([s[key] for s in states]).mean(0)
        elif all(torch.equal(s[key], first) for s in states):
            avg[key] = first
        else:
            ap.error(f"non-float entry {key} differs between the files")
    out = models[0]
    out.load_state_dict(avg)
    meta = {"averaged_from": list(a.models)}
    if "training_config" in out.metadata:
        meta["training_config"] = out.metadata["training_config"]
    save_model(out, a.out, meta)
    print(f"wrote {a.out}: the mean of {len(models)} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
