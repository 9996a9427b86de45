"""Narrow one hold-out rule of a running distillation: config.json and the validation tags.

Session 19 narrowed the issue-24 run's fourth rule from ``{adsorbate: [NH, NH2, NH3]}`` (gas
phase included, so no N-H bond was ever trained on) to the adsorbed family alone. A rule
can only be narrowed this way: the structures it releases were never in the data, so the
data stays valid, and from the next exploration on they may be sampled. The validation
frames tagged with the old rule are re-tagged: those the new rule matches get its name,
the others (here one gas-phase NH3) become in-domain frames of their category. The old
validation file is kept beside it.

    python research/scripts/distill_retag_holdout.py runs/distill-catalysis \\
        '{"adsorbate": ["NH", "NH2", "NH3"]}' \\
        '{"adsorbate": ["NH", "NH2", "NH3"], "category": ["surface+ads", "cluster+ads"]}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ase.io import read

from geomformer_md.distill.space_config import matches, rule_name
from geomformer_md.io.files import copy_file, write_frames, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("old", help="the rule as stored, JSON")
    ap.add_argument("new", help="the narrower rule, JSON")
    args = ap.parse_args()
    run, old, new = Path(args.run), json.loads(args.old), json.loads(args.new)
    cfg = json.loads((run / "config.json").read_text())
    rules = cfg["space"]["holdout"]
    if old not in rules:
        raise SystemExit(f"{run}/config.json has no hold-out rule {old}: {rules}")
    rules[rules.index(old)] = new
    frames = read(run / "validation.extxyz", ":")
    moved = kept = 0
    for atoms in frames:
        if atoms.info.get("holdout") != rule_name(old):
            continue
        if matches(atoms.info, new):
            atoms.info["holdout"] = rule_name(new)
            kept += 1
        else:
            del atoms.info["holdout"]
            moved += 1
    backup = run / "validation.before-retag.extxyz"
    if not backup.exists():
        copy_file(run / "validation.extxyz", backup)
    write_frames(run / "validation.extxyz", frames)
    write_json(run / "config.json", cfg)
    print(f"{rule_name(old)} -> {rule_name(new)}: {kept} validation frames keep the rule, "
          f"{moved} become in-domain; config.json updated; old validation in {backup}")


if __name__ == "__main__":
    main()
