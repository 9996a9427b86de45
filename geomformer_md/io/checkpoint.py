"""The model file format: plain tensors and dicts, loaded with weights_only=True.

A model file is a dict::

    {format_version, package_version, config, state_dict, species, cutoff, e0, metadata}

A committee file (several models whose spread is an uncertainty, committee.py) is::

    {format_version, package_version, kind: "committee", members: [model dict, ...], metadata}

Nothing in it is pickled code, so ``torch.load(..., weights_only=True)`` reads
it and a file from an untrusted source cannot execute anything.

Format versions (bump on incompatible change; loaders refuse newer ones):
    1: first version (2026-11).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..model import GeoMFormer, GeoMFormerConfig
from .files import atomic_open

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "config", "state_dict")
COMMITTEE_KEYS = ("format_version", "kind", "members")


class ModelFileError(ValueError):
    """A model file is missing, corrupt, truncated or from an incompatible version."""


def _package_version() -> str:
    from .. import __version__

    return __version__


def model_to_dict(model: GeoMFormer, metadata: dict | None = None) -> dict:
    cfg = model.config
    return {
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "config": cfg.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "species": list(cfg.species),
        "cutoff": float(cfg.cutoff),
        "e0": model.e0.detach().cpu().tolist(),
        "metadata": dict(metadata or {}),
    }


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save, atomically (io/files.py): a crash mid-write leaves the old file intact."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def save_model(model: GeoMFormer, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a model file atomically."""
    atomic_save(model_to_dict(model, metadata), path)


def save_committee(committee, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a committee (committee.Committee) as one file, atomically."""
    meta = dict(committee.metadata if metadata is None else metadata)
    atomic_save({
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "kind": "committee",
        "members": [model_to_dict(m, getattr(m, "metadata", {})) for m in committee.members],
        "metadata": meta,
    }, path)


def is_committee_blob(blob: dict) -> bool:
    return isinstance(blob, dict) and blob.get("kind") == "committee"


def read_model_file(path: str | os.PathLike) -> dict:
    """Read and check a model or committee file without building the model.

    Errors are one short line about the file (what is wrong with it), never torch's text:
    torch's weights_only refusal, for one, is a paragraph about its own API.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled code...
        why = _why_unreadable(path, exc)
        raise ModelFileError(f"cannot read model file {path}: {why}") from None
    needed = COMMITTEE_KEYS if is_committee_blob(blob) else REQUIRED_KEYS
    if not isinstance(blob, dict) or any(k not in blob for k in needed):
        raise ModelFileError(f"{path} is not a geomformer-md model file (missing {needed})")
    version = blob["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise ModelFileError(
            f"{path} has model format version {version!r}, this geomformer-md "
            f"({_package_version()}) reads versions 1..{FORMAT_VERSION}; "
            f"upgrade geomformer-md (the file was written by {blob.get('package_version', '?')})"
        )
    return blob


def _why_unreadable(path: Path, exc: Exception) -> str:
    import pickle
    import zipfile

    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "it is corrupt, truncated or not a geomformer-md model (not a torch zip archive)"
    if isinstance(exc, pickle.UnpicklingError):
        # weights_only refused a Python object: a pickled module or code, never in our files
        return (
            "it holds pickled Python objects (e.g. a whole torch module), which geomformer-md "
            "model files never contain; refused without running anything"
        )
    return "it is corrupt, truncated or not a geomformer-md model"


def model_from_dict(blob: dict, source: str = "<dict>") -> GeoMFormer:
    import dataclasses

    stored = dict(blob["config"])
    unknown = sorted(set(stored) - {f.name for f in dataclasses.fields(GeoMFormerConfig)})
    if unknown:
        raise ModelFileError(
            f"model in {source} has config keys this geomformer-md ({_package_version()}) does "
            f"not know: {unknown}; it was written by {blob.get('package_version', '?')}"
        )
    try:
        cfg = GeoMFormerConfig.from_dict(stored)
        model = GeoMFormer(cfg)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"model in {source} does not match its config: {exc}") from None
    weights = blob["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = [
        k for k in sorted(set(expected) & set(weights))
        if tuple(expected[k].shape) != tuple(getattr(weights[k], "shape", ()))
    ]
    if missing or extra or wrong:
        parts = [
            f"{len(names)} {what} (e.g. {names[0]!r})"
            for names, what in ((missing, "missing"), (extra, "unexpected"), (wrong, "misshapen"))
            if names
        ]
        raise ModelFileError(
            f"model in {source} does not match its config: weights {', '.join(parts)}"
        )
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:150]
        raise ModelFileError(f"model in {source} does not match its config: {first}") from None
    model.metadata = dict(blob.get("metadata", {}))
    return model.eval()


def load_model(path: str | os.PathLike) -> GeoMFormer:
    """Load a GeoMFormer from a model file (weights_only; nothing is executed)."""
    blob = read_model_file(path)
    if is_committee_blob(blob):
        raise ModelFileError(
            f"{path} is a committee of {len(blob['members'])} models, not a single model: load it "
            f"with load_potential(), load_committee() or GeoMFormerCalculator()")
    return model_from_dict(blob, str(path))


def load_committee(path: str | os.PathLike):
    """Load a committee file (weights_only; nothing is executed)."""
    blob = read_model_file(path)
    if not is_committee_blob(blob):
        raise ModelFileError(f"{path} is a single model, not a committee")
    return committee_from_dict(blob, str(path))


def committee_from_dict(blob: dict, path: str = "<dict>"):
    from ..committee import Committee

    members = blob["members"]
    if not isinstance(members, list) or len(members) < 2:
        raise ModelFileError(f"{path}: a committee file needs a list of at least 2 members")
    models = []
    for k, m in enumerate(members):
        if not isinstance(m, dict) or any(key not in m for key in REQUIRED_KEYS):
            raise ModelFileError(
                f"{path}: committee member {k} is not a model (missing {REQUIRED_KEYS})")
        models.append(model_from_dict(m, f"{path} (member {k})"))
    try:
        return Committee(models, blob.get("metadata", {})).eval()
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def load_any(path: str | os.PathLike):
    """A GeoMFormer or a Committee, whichever the file holds."""
    blob = read_model_file(path)
    if is_committee_blob(blob):
        return committee_from_dict(blob, str(path))
    return model_from_dict(blob, str(path))
