"""Shipped potentials, loadable by name and offline, and archived ones, which are not.

Potentials live in the top-level ``potentials/`` folder, installed as the
package data ``geomformer_md.potentials``. ``potentials/manifest.json`` lists
them::

    {"default": "<name>", "potentials": {"<name>": {"file": ..., "sha256": ...,
     "elements": [...], "cutoff": ..., "description": ..., ...}},
     "archived": {"<old name>": {"repository_path": "research/potentials/<old name>.pt",
                  "sha256": ..., ...}},
     "archive_url": null}

Only the default and the previous potential ship: a user needs those, and every shipped file
is in every wheel. Older ones are ``archived``: their files stay in the source repository
(``research/potentials/``; ``scripts/ship_potential.py --keep 2`` moves them there) and load
by path like any model file. Their names still resolve to a one-line error that says where
the file is, rather than "unknown potential". ``archive_url`` (optional) is a URL pattern
with ``{file}`` and ``{name}`` where releases publish the archived files.

The folder can be overridden with the environment variable GEOMFORMER_MD_POTENTIALS.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from ..model import GeoMFormer
from .checkpoint import ModelFileError, load_any


class ArchivedPotentialError(ModelFileError):
    """A name of an archived potential was given: its file is not shipped, load it by path."""


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


def archived_potentials() -> dict[str, dict]:
    """Name -> manifest entry of every archived (no longer shipped) potential.

    ``entry["repository_path"]`` is its file in the source repository; load it by path.
    """
    return dict(_manifest().get("archived", {}))


def archived_location(name: str) -> str:
    """Where the file of archived potential ``name`` is, in a few words (for messages)."""
    manifest = _manifest()
    entry = manifest.get("archived", {})[name]
    rel = entry["repository_path"]
    where = f"{rel} in the geomformer-md source repository"
    # a source checkout has it right here: name the file itself
    local = (potentials_dir().parent / rel).resolve()
    if local.is_file():
        where += f" (here: {local})"
    url = manifest.get("archive_url")
    if url:
        where += " or " + url.format(file=Path(rel).name, name=name)
    return where


def archive_note() -> str | None:
    """One line for listings: which names are archived and how to load them; None if none."""
    archived = archived_potentials()
    if not archived:
        return None
    folders = sorted({str(Path(e["repository_path"]).parent) for e in archived.values()})
    return (f"archived, not shipped (load their files by path; {', '.join(folders)}/ of the "
            f"source repository): {', '.join(sorted(archived, key=_version_key))}")


def _version_key(name: str) -> tuple:
    """geomformer-catalysis-v9 before -v10 (digits compared as numbers)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


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
    """A shipped name, or a path to a model file, -> the file's path.

    The name of an archived potential raises ``ArchivedPotentialError`` (a ``ModelFileError``)
    saying where its file is; a file of that name in the working directory is loaded instead.
    """
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
    if key in archived_potentials():
        raise ArchivedPotentialError(
            f"{key} is archived, no longer shipped with the package: pass the path of its file "
            f"instead of its name; the file is {archived_location(key)}"
        )
    raise ModelFileError(
        f"{key!r} is neither a shipped potential ({sorted(entries) or 'none shipped'}) "
        f"nor an existing model file"
    )


def load_potential(name_or_path: str | os.PathLike | None = None) -> GeoMFormer:
    """Load a shipped potential by name (None = the default) or a model file by path.

    A committee (several models, committee.py) comes back as a ``Committee``.
    """
    return load_any(resolve_potential(name_or_path))
