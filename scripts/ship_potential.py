"""Copy a trained model into potentials/ and register it in the manifest.

    python scripts/ship_potential.py runs/catalysis-v0/model.pt geomformer-catalysis-v0 \
        --eval runs/catalysis-v0/eval.json --default --description "..."

Writes potentials/<name>.pt, its sha256, elements, cutoff and test errors into
potentials/manifest.json. The model card (potentials/<name>.md) is written by hand
from the same eval.json; this script prints the numbers it needs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from ase.data import chemical_symbols

from geomformer_md import load_model

ROOT = Path(__file__).resolve().parent.parent / "potentials"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("name")
    p.add_argument("--eval", default=None, help="eval.json from scripts/evaluate_potential.py")
    p.add_argument("--description", default="")
    p.add_argument("--default", action="store_true", help="make it the default potential")
    a = p.parse_args()

    model = load_model(a.model)  # refuses broken files before anything is copied
    target = ROOT / f"{a.name}.pt"
    shutil.copyfile(a.model, target)
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    entry = {
        "file": target.name,
        "sha256": sha,
        "elements": [chemical_symbols[z] for z in model.config.species],
        "cutoff": model.config.cutoff,
        "n_parameters": model.n_parameters(),
        "dtype": model.config.dtype,
        "description": a.description,
        "model_card": f"{a.name}.md",
    }
    if a.eval:
        ev = json.loads(Path(a.eval).read_text())
        entry["test_errors"] = {k: ev["test"][k] for k in ("all", "heldout", "in-pool") if k in ev["test"]}
        ads = ev.get("adsorption", [])
        if ads:
            entry["adsorption_mae_vs_labeller_eV"] = sum(abs(r["diff"]) for r in ads) / len(ads)
    manifest_path = ROOT / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"potentials": {}}
    manifest["potentials"][a.name] = entry
    if a.default or not manifest.get("default"):
        manifest["default"] = a.name
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
