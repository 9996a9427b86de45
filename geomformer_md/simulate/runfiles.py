"""Output files of a run: never overwrite another run's files silently; normal permissions.

`RunConflictError` is what a workflow raises when its output files already exist and
belong to another run (or their origin is unknown). It keeps the facts (which files, what
differs, whether resuming is possible) apart from the words, so the Python API can say
``resume=True`` / ``overwrite=True`` and the command line ``--resume`` / ``--overwrite``
(`message`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.files import new_file_mode  # noqa: F401  (where it used to live)


@dataclass(frozen=True)
class Words:
    """How one interface names the ways out of a conflict, and a setting's value."""

    resume: str
    overwrite: str
    elsewhere: str
    flags: dict  # setting name -> how this interface spells it (missing: the name itself)
    assign: str  # "{name}={value!r}" for Python, "{name} {value}" for a command line

    def setting(self, name: str, value) -> str:
        return self.assign.format(name=self.flags.get(name, name), value=value)


API_WORDS = Words(
    resume="resume=True",
    overwrite="overwrite=True",
    elsewhere="other file names",
    flags={},
    assign="{name}={value!r}",
)


class RunConflictError(ValueError):
    """Output files exist and do not belong to this request; nothing was changed.

    Attributes:
        files: the existing files.
        reason: why they are not this run's, in words common to every interface, or None
            when ``setting`` says it.
        setting: ``(name, stored value, requested value)`` of the first setting that differs.
        can_resume: continuing the stored run (``resume``) is a way out.
    """

    def __init__(
        self,
        files,
        reason: str | None = None,
        *,
        setting: tuple | None = None,
        can_resume: bool = True,
    ) -> None:
        self.files = [Path(f) for f in files]
        self.reason, self.setting, self.can_resume = reason, setting, can_resume
        super().__init__(self.message(API_WORDS))

    def message(self, words: Words) -> str:
        names = [str(f) for f in self.files]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        exist = "exists" if len(names) == 1 else "exist"
        if self.setting is not None:
            name, old, new = self.setting
            old, new = words.setting(name, old), words.setting(name, new)
            why = f"from a run with {old} (this one: {new})"
        else:
            why = self.reason or "from another run"
        if self.can_resume:
            ways = f"{words.resume} to continue that run, or {words.overwrite} to start over"
        else:
            ways = f"{words.overwrite} to replace {'it' if len(names) == 1 else 'them'}"
        return f"{listed} already {exist} {why}; pass {ways} (or use {words.elsewhere})"


def existing(paths) -> list[Path]:
    """The paths (None skipped) that exist."""
    return [Path(p) for p in paths if p is not None and Path(p).exists()]


def structure_id(atoms, momenta: bool = False) -> str:
    """A hash of a starting structure: numbers, positions, cell, pbc, constraints (and the
    momenta when they are part of the input)."""
    h = hashlib.sha256()
    for arr in (atoms.numbers, atoms.positions, atoms.cell[:], atoms.pbc):
        h.update(np.ascontiguousarray(arr).tobytes())
    if momenta:
        h.update(np.ascontiguousarray(atoms.get_momenta()).tobytes())
    constraints = [c.todict() for c in atoms.constraints]
    h.update(json.dumps(constraints, sort_keys=True, default=str).encode())
    return h.hexdigest()


def calculator_id(calc) -> str:
    """A short identity of a calculator: the weights' hash for a torch model, else the class
    and its parameters. Two runs with different potentials are different runs."""
    model = getattr(calc, "model", None)
    if model is not None and hasattr(model, "state_dict"):
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return f"{type(calc).__name__}:{h.hexdigest()[:16]}"
    try:
        params = json.dumps(calc.todict(), sort_keys=True, default=str)
    except Exception:
        params = ""
    return f"{type(calc).__module__}.{type(calc).__name__}:{params}"
