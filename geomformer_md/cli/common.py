"""What the commands share: reading structure files, naming and writing outputs, the
calculator of --model/--device/--dtype, argument types, one-line errors (:class:`CLIError`)
and the wording of API errors in the command line's flags."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

# outputs that are only meaningful when complete go through a temporary file
from ..io.files import atomic_path as _atomic_path  # noqa: F401

PROG = "geomformer-md"


# How the command line names the settings of simulate.md, for messages about another run.
_MD_FLAGS = {
    "ensemble": "--ensemble",
    "temperature_K": "--temperature",
    "initial_temperature_K": "--temperature",
    "timestep_fs": "--timestep",
    "steps": "--steps",
    "loginterval": "--interval",
    "restart_interval": "checkpoint interval",
    "friction": "--friction",
    "taut_fs": "--taut",
    "pressure_bar": "--pressure",
    "taup_fs": "--taup",
    "seed": "--seed",
}


# Python argument names that API errors may name, as the command line spells them.
_API_FLAGS = {
    **_MD_FLAGS,
    "fix_bottom_layers": "--fix-bottom-layers",
    "pressure_bar": "--pressure",
    "fmax": "--fmax",
    "lattice_constant": "--lattice-constant",
    "relax_cell": "--relax-cell",
}


_STRUCTURE_SUFFIXES = {".extxyz", ".xyz", ".traj", ".cif", ".vasp", ".pdb", ".json", ".csv", ".png"}


class CLIError(Exception):
    """A user error to report in one line (no traceback)."""


def _positive(kind=float, allow_zero=False):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value > 0 or (allow_zero and value == 0)):
            raise argparse.ArgumentTypeError(
                f"must be {'>= 0' if allow_zero else '> 0'}, got {text}"
            )
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_fix_bottom_layers(sp, default=None,
                           help="hold the N lowest atomic layers of a slab fixed") -> None:
    """--fix-bottom-layers N, as relax, md and adsorb take it."""
    sp.add_argument("--fix-bottom-layers", type=_positive(int, allow_zero=True),
                    default=default, metavar="N", help=help)


def _read(path: str, index=":"):
    """Frames of any ASE-readable file, as a list; one-line errors (``--index`` checked)."""
    from ase.io import read
    from ase.io.formats import string2index

    p = Path(path)
    if not p.exists():
        raise CLIError(f"cannot read {path}: no such file")
    if p.is_dir():
        raise CLIError(f"cannot read {path}: it is a directory")
    parsed = string2index(index) if isinstance(index, str) else index
    if isinstance(parsed, str) or (isinstance(parsed, slice) and parsed.step == 0):
        raise CLIError(
            f"--index {index!r} is not a frame index: use e.g. 0, -1, ':' or '10:20:2'"
        )
    try:
        frames = read(str(p), index=parsed)
    except (StopIteration, IndexError):
        frames = None  # past the end: say how many frames there are, below
    except Exception as exc:  # ASE raises many kinds for unknown/garbled formats
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"cannot read {path} as a structure file: {msg[:200]}") from None
    if frames is None or frames == [] or (isinstance(parsed, int) and parsed < -1):
        # ASE raises StopIteration past the end, and wraps some negative indices around
        n = len(read(str(p), index=":"))
        if frames is None or (isinstance(parsed, int) and not -n <= parsed < n):
            raise CLIError(
                f"--index {index} is out of range: {path} has {n} frame{'s' * (n != 1)} "
                f"(0 to {n - 1}, or -1 for the last)"
            )
        if frames == [] and n:
            raise CLIError(
                f"--index {index} selects no frames: {path} has {n} frame{'s' * (n != 1)}"
            )
    frames = frames if isinstance(frames, list) else [frames]
    if not frames:
        raise CLIError(f"{path} contains no structures")
    return frames


def _beside(path: str, suffix: str) -> Path:
    """``dir/name.ext`` -> ``dir/name{suffix}``."""
    p = Path(path)
    return p.with_name(p.stem + suffix)


def _output(args, path: str | Path, suffix: str) -> Path:
    """The output ``STEM{suffix}`` of input ``path``: in --output-dir, else beside the input."""
    p = Path(path)
    folder = Path(args.output_dir) if getattr(args, "output_dir", None) else p.parent
    return folder / (p.stem + suffix)


def _claim(args, *paths) -> None:
    """Stop (one line, nothing written) if outputs exist, unless --overwrite."""
    from ..simulate.runfiles import RunConflictError, existing

    found = existing(paths)
    if found and not getattr(args, "overwrite", False):
        error = RunConflictError(found, reason="from an earlier run", can_resume=False)
        raise CLIError(error.message(_words()))


@contextlib.contextmanager
def _in_flags():
    """Re-word a ValueError of the Python API in the command line's words
    ("fix_bottom_layers=5 would fix ..." -> "--fix-bottom-layers 5 would fix ...")."""
    import re

    try:
        yield
    except ValueError as exc:
        from ..io.checkpoint import ModelFileError
        from ..simulate.runfiles import RunConflictError

        if isinstance(exc, (ModelFileError, RunConflictError)):
            raise  # worded by their own handlers
        msg = str(exc)
        for name, flag in _API_FLAGS.items():
            if flag.startswith("--"):
                msg = re.sub(rf"\b{name}=", f"{flag} ", msg)
                if "_" in name:  # an identifier, never an English word ("steps")
                    msg = re.sub(rf"\b{name}\b", flag, msg)
        raise CLIError(msg) from None


def _words():
    from ..simulate.runfiles import Words

    return Words(
        resume="--resume",
        overwrite="--overwrite",
        elsewhere="-o/--output-dir DIR",
        flags=_MD_FLAGS,
        assign="{name} {value}",
    )


def _check_output_dir(args) -> None:
    out = getattr(args, "output_dir", None)
    if out is None:
        return
    if Path(out).suffix.lower() in _STRUCTURE_SUFFIXES:
        hint = " (name the output file with --output)" if hasattr(args, "output") else ""
        raise CLIError(f"-o/--output-dir takes a folder, got {out!r}{hint}")
    if Path(out).exists() and not Path(out).is_dir():
        raise CLIError(f"-o/--output-dir {out}: exists and is not a folder")


def _write(path: Path, frames, fmt: str | None = None) -> None:
    from ase.io import write

    with _atomic_path(path) as tmp:
        write(str(tmp), frames, format=fmt or _format_of(path))


def _format_of(path: Path) -> str | None:
    return {".extxyz": "extxyz", ".xyz": "extxyz", ".traj": "traj"}.get(path.suffix)


def _calculator(args, skin: float = 0.0):
    from ..calculator import GeoMFormerCalculator

    return GeoMFormerCalculator(args.model, device=args.device, dtype=args.dtype, skin=skin,
                                dispersion=getattr(args, "dispersion", None))


def calculator(args, **kwargs):
    """The calculator a command runs with: ``geomformer_md.cli._calculator``, looked up when
    called, so that replacing that one name (the tests put a Lennard-Jones calculator
    there) reaches every command."""
    from . import _calculator

    return _calculator(args, **kwargs)


def _check_elements(calc, frames) -> None:
    from ..simulate.relax import check_elements

    for k, atoms in enumerate(frames):
        try:
            check_elements(calc, atoms.numbers)
        except ValueError as exc:
            where = f"frame {k}: " if len(frames) > 1 else ""
            raise CLIError(f"{where}{exc}") from None


def _progress(args) -> bool:
    """Progress unless -q: a bar on a terminal, plain lines in a log (simulate._progress)."""
    return not args.quiet


def _device(text: str) -> str:
    """--device, checked when parsed (one line naming --device, never a torch error)."""
    from ..calculator import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def _mae_text(v: dict, counts: dict | None = None) -> str:
    """'energy 1.23 meV/atom (n=4), forces ...': each MAE with the number of structures it is
    over (``counts`` per quantity, or v's n_structures after the last)."""
    import math

    parts = []
    for name, key, unit in (("energy", "energy_mae_meV_atom", "meV/atom"),
                            ("forces", "forces_mae_meV_A", "meV/Å"),
                            ("stress", "stress_mae_meV_A3", "meV/Å³")):
        if not math.isnan(v[key]):
            parts.append(f"{name} {v[key]:.2f} {unit}"
                         + (f" (n={counts[name]})" if counts else ""))
    return ", ".join(parts) + ("" if counts else f" (n={v.get('n_structures', '?')})")
