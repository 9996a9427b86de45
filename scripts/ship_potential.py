"""Copy a trained model into potentials/ and register it in the manifest; archive older ones.

    python scripts/ship_potential.py runs/catalysis-v12/model.pt geomformer-catalysis-v12 \
        --eval runs/catalysis-v12/eval.json --default --description "..." --keep 2

Writes potentials/<name>.pt, its sha256, elements, cutoff and test errors into
potentials/manifest.json. The model card (potentials/<name>.md) is written by hand
from the same eval.json; this script prints the numbers it needs.

``--keep N`` then keeps N potentials shipped, the default and the most recently shipped
others (manifest order), and archives the rest: their model file, card and parity plot move
to research/potentials/ (``git mv``, so history follows) and their manifest entry moves to
``archived`` with the file's repository path, so that loading them by name says where the
file is. ``--keep N`` alone (no model) only archives. A rerun after a kill finishes the job.
The card of a potential that stops being the default must then say it is superseded
(tests/test_docs.py checks).

A committee file (several members, geomformer_md.committee) ships the same way with
``--committee-of BASE``: it loads by name like a potential, is not counted by ``--keep``, and is
archived together with BASE.

    python scripts/ship_potential.py runs/v11-committee.pt geomformer-catalysis-v11-committee \
        --committee-of geomformer-catalysis-v11 --description "..."
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ship(manifest: dict, model_file: str, name: str, pot_dir: Path, description: str,
         eval_file: str | None, default: bool, committee_of: str | None = None) -> dict:
    from ase.data import chemical_symbols

    from geomformer_md.committee import Committee
    from geomformer_md.io.checkpoint import load_any

    model = load_any(model_file)  # refuses broken files before anything is copied
    if isinstance(model, Committee) != (committee_of is not None):
        raise SystemExit(f"ship_potential.py: {model_file} is "
                         + ("a committee: give --committee-of BASE" if committee_of is None
                            else "not a committee file: drop --committee-of"))
    if committee_of is not None and committee_of not in manifest["potentials"]:
        raise SystemExit(f"ship_potential.py: --committee-of {committee_of}: no such shipped "
                         f"potential")
    target = pot_dir / f"{name}.pt"
    shutil.copyfile(model_file, target)
    entry = {
        "file": target.name,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "elements": [chemical_symbols[z] for z in model.config.species],
        "cutoff": model.config.cutoff,
        "n_parameters": model.n_parameters(),
        "dtype": model.config.dtype,
        "description": description,
        "model_card": f"{name}.md",
    }
    if committee_of is not None:
        entry.update(kind="committee", committee_of=committee_of, members=len(model))
    if eval_file:
        ev = json.loads(Path(eval_file).read_text())
        entry["test_errors"] = {k: ev["test"][k] for k in ("all", "heldout", "in-pool")
                                if k in ev["test"]}
        ads = ev.get("adsorption", [])
        if ads:
            entry["adsorption_mae_vs_labeller_eV"] = sum(abs(r["diff"]) for r in ads) / len(ads)
    manifest["potentials"].pop(name, None)  # a re-shipped name counts as the newest
    manifest["potentials"][name] = entry
    manifest.get("archived", {}).pop(name, None)
    if committee_of is None and (default or not manifest.get("default")):
        manifest["default"] = name
    return entry


def to_keep(manifest: dict, keep: int) -> list[str]:
    """The default, then the most recently shipped others, `keep` potentials in all, and the
    committees of those."""
    if keep < 1:
        raise SystemExit("ship_potential.py: --keep must be at least 1 (the default)")
    entries = manifest["potentials"]
    shipped = [n for n in entries if entries[n].get("kind") != "committee"]
    default = manifest.get("default")
    kept = [default] if default in shipped else []
    kept += [n for n in reversed(shipped) if n != default][: keep - len(kept)]
    return kept + [n for n in entries if entries[n].get("committee_of") in kept]


def _move(src: Path, dst: Path) -> None:
    """git mv when the file is tracked (history follows), else a plain move."""
    tracked = subprocess.run(["git", "-C", str(src.parent), "ls-files", "--error-unmatch",
                              src.name], capture_output=True).returncode == 0
    if not tracked or subprocess.run(["git", "-C", str(src.parent), "mv", src.name,
                                      os.path.relpath(dst, src.parent)],
                                     capture_output=True).returncode != 0:
        shutil.move(src, dst)


def archive(manifest: dict, keep: int, pot_dir: Path, archive_dir: Path) -> list[str]:
    """Move every shipped potential but `keep` to archive_dir; returns the names moved."""
    kept = to_keep(manifest, keep)
    root = pot_dir.resolve().parent  # repository_path is relative to the repository root
    archive_dir.mkdir(parents=True, exist_ok=True)
    moved = []
    for name in [n for n in manifest["potentials"] if n not in kept]:
        entry = manifest["potentials"][name]
        stem = Path(entry["file"]).stem
        for fname in (entry["file"], entry.get("model_card") or f"{stem}.md", f"{stem}-parity.png"):
            src, dst = pot_dir / fname, archive_dir / fname
            if src.exists() and not dst.exists():  # a rerun after a kill skips what moved
                _move(src, dst)
        if not (archive_dir / entry["file"]).is_file():
            raise SystemExit(f"ship_potential.py: {name}: {entry['file']} is in neither "
                             f"{pot_dir} nor {archive_dir}")
        entry = dict(entry)
        rel = os.path.relpath(archive_dir.resolve() / entry.pop("file"), root)
        entry = {"repository_path": rel, **entry}
        if entry.get("model_card"):
            entry["model_card"] = os.path.relpath(archive_dir.resolve() / entry["model_card"],
                                                  root)
        manifest.setdefault("archived", {})[name] = entry
        del manifest["potentials"][name]
        moved.append(name)
    return moved


def write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)  # atomic: a kill leaves the old manifest or the new one


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", help="model file to ship (omit with --keep to only archive)")
    p.add_argument("name", nargs="?", help="its shipped name, e.g. geomformer-catalysis-v12")
    p.add_argument("--eval", default=None, help="eval.json from scripts/evaluate_potential.py")
    p.add_argument("--description", default="")
    p.add_argument("--default", action="store_true", help="make it the default potential")
    p.add_argument("--committee-of", metavar="BASE", default=None,
                   help="MODEL is a committee file of the shipped potential BASE")
    p.add_argument("--keep", type=int, default=None,
                   help="keep this many shipped (the default and the newest) and archive the rest")
    p.add_argument("--potentials-dir", type=Path, default=REPO / "potentials")
    p.add_argument("--archive-dir", type=Path, default=REPO / "research" / "potentials")
    a = p.parse_args(argv)
    if (a.model is None) != (a.name is None):
        p.error("give both MODEL and NAME, or neither (with --keep)")
    if a.model is None and a.keep is None:
        p.error("nothing to do: give MODEL NAME to ship, or --keep N to archive")

    manifest_path = a.potentials_dir / "manifest.json"
    manifest = (json.loads(manifest_path.read_text()) if manifest_path.exists()
                else {"potentials": {}})
    if a.keep is not None and a.name:  # refuse before copying if the new one would go at once
        check = {"potentials": {n: {} for n in manifest["potentials"] if n != a.name},
                 "default": manifest.get("default")}
        check["potentials"][a.name] = ({"kind": "committee", "committee_of": a.committee_of}
                                       if a.committee_of else {})
        if not a.committee_of and (a.default or not check["default"]):
            check["default"] = a.name
        if a.name not in to_keep(check, a.keep):
            p.error(f"--keep {a.keep} would archive {a.name} right away; add --default or "
                    f"keep more")
    if a.model:
        if a.committee_of and a.default:
            p.error("--default with --committee-of: a committee is shipped beside its base, "
                    "which stays the default")
        print(json.dumps(ship(manifest, a.model, a.name, a.potentials_dir, a.description,
                              a.eval, a.default, a.committee_of), indent=2))
    if a.keep is not None:
        moved = archive(manifest, a.keep, a.potentials_dir, a.archive_dir)
        print(f"shipped: {', '.join(manifest['potentials'])} (default {manifest['default']}); "
              f"archived now: {', '.join(moved) or 'none'}")
    write_manifest(manifest_path, manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
