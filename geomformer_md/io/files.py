"""Files written whole or not at all.

Every output a crash could leave half-written (model files, checkpoints, tables, frames,
progress records, benchmark results) goes through here: it is written to a temporary file
in the target's folder, flushed to disk, given the mode a new file gets under the umask
(``tempfile.mkstemp`` creates 0600 files), and renamed over the target. A reader sees the
old file or the new one, never a truncated one; a failed write leaves no temporary behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# atomic_path's temporaries: "." + stem + "." + mkstemp's 8 random characters + suffix
_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[^.]*)?$")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of atomic writes that a kill interrupted, below ``folder``.

    A write that fails cleans up after itself, but a SIGKILL (or a power cut) between the
    temporary's creation and its rename leaves it behind: a hidden file beside its target
    with the target's suffix, which a Python glob such as ``data/*.extxyz`` would match. A
    long job calls this when it starts in its own output folder, before it writes anything;
    only names of atomic_path's pattern are touched. Returns the paths removed."""
    removed = []
    for root, _, names in os.walk(folder):
        for name in names:
            if _TEMPORARY.match(name):
                path = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask (0o644 for umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by the
    extension still work); on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:  # on disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """``open(path, mode)`` for writing, atomically (see :func:`atomic_path`)."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes a new file: mode must start with 'w', got {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | os.PathLike, obj, indent: int | None = 2, default=None) -> None:
    write_text(path, json.dumps(obj, indent=indent, default=default) + "\n")


def write_frames(path: str | os.PathLike, frames, format: str = "extxyz") -> None:
    """ASE frames (a list; an empty one gives an empty file) in ``format``."""
    from ase.io import write

    with atomic_path(path) as tmp:
        if len(frames):
            write(tmp, frames, format=format)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
