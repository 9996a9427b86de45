"""Shipped potentials, loadable by name and offline.

Potentials live in the top-level ``potentials/`` folder, installed as the
package data ``geomformer_md.potentials``. ``potentials/manifest.json`` lists
them::

    {"default": "<name>", "potentials": {"<name>": {"file": ..., "sha256": ...,
     "elements": [...], "cutoff": ..., "description": ..., ...}}}

The folder can be overridden with the environment variable GEOMFORMER_MD_POTENTIALS.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..model import GeoMFormer
from .checkpoint import ModelFileError, load_any


def potentials_dir() -> Path:
    env = os.environ.get("GEOMFORMER_MD_POTENTIALS")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "potentials", here.parent / "potentials"):  # wheel, then source tree
        if (cand / "manifest.json").is_file():
            return cand
    return here.parent / "potentials"


def _manifest() -> dict:
    path = potentials_dir() / "manifest.json"
    if not path.is_file():
        return {"default": None, "potentials": {}}
    with open(path) as fh:
        return json.load(fh)


def list_potentials() -> dict[str, dict]:
    """Name -> manifest entry of every shipped potential."""
    return dict(_manifest().get("potentials", {}))


def default_potential_name() -> str:
    name = _manifest().get("default")
    if not name:
        raise ModelFileError(f"no default potential is shipped (looked in {potentials_dir()})")
    return name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_potential(name_or_path: str | os.PathLike | None = None) -> Path:
    """A shipped name, or a path to a model file, -> the file's path."""
    if name_or_path is None:
        name_or_path = default_potential_name()
    entries = list_potentials()
    key = str(name_or_path)
    if key in entries:
        path = potentials_dir() / entries[key]["file"]
        expected = entries[key].get("sha256")
        if expected and path.is_file() and _sha256(path) != expected:
            raise ModelFileError(f"shipped potential {key!r} ({path}) fails its sha256 check")
        return path
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    raise ModelFileError(
        f"{key!r} is neither a shipped potential ({sorted(entries) or 'none shipped'}) "
        f"nor an existing model file"
    )


def load_potential(name_or_path: str | os.PathLike | None = None) -> GeoMFormer:
    """Load a shipped potential by name (None = the default) or a model file by path.

    A committee (several models, committee.py) comes back as a ``Committee``.
    """
    return load_any(resolve_potential(name_or_path))
