"""``geomformer-md``: the command line.

Each subcommand is a thin shell over the Python API (``simulate.relax``,
``simulate.md``, ``simulate.phonons``, ``simulate.adsorption``, ``train``):
parse, check the input, call, write the outputs beside the input file (or into
``-o/--output-dir``). Existing outputs are never replaced silently: a command whose
outputs exist stops with one line naming them, unless ``--overwrite`` (``md`` also
continues its own run, see ``simulate.md``).

Errors in the input end the program with exit code 1 and ONE line on stderr,
``geomformer-md: error: ...``; ``--debug`` shows the traceback instead. Outputs
that are only meaningful when complete (relaxed structures, tables, plots) are
written at the end, via a temporary file and a rename, so a failed run never
leaves a file that looks finished.

The commands live in modules by group (:mod:`.info`, :mod:`.run`, :mod:`.properties`,
:mod:`.training`; the LAMMPS route in :mod:`geomformer_md.lammps.commands`), their shared
helpers in :mod:`.common`; this module builds the parser and runs :func:`main`. Every name
the single ``cli.py`` defined is still importable from here.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from . import info, properties, run, training
from .common import (  # noqa: F401  (re-exported: the names of the former cli.py)
    _API_FLAGS,
    _MD_FLAGS,
    _STRUCTURE_SUFFIXES,
    PROG,
    CLIError,
    _atomic_path,
    _beside,
    _calculator,
    _check_elements,
    _check_output_dir,
    _claim,
    _device,
    _format_of,
    _in_flags,
    _mae_text,
    _output,
    _positive,
    _progress,
    _read,
    _warn,
    _words,
    _write,
)
from .info import _error_line, cmd_info, cmd_list  # noqa: F401
from .properties import _parse_references, cmd_adsorb, cmd_phonons  # noqa: F401
from .run import cmd_eval, cmd_md, cmd_relax  # noqa: F401
from .training import cmd_distill, cmd_export, cmd_train  # noqa: F401

EPILOG = """\
examples:
  geomformer-md info                               versions, devices, shipped potentials
  geomformer-md eval frames.extxyz                 energies/forces -> frames.eval.extxyz
  geomformer-md relax slab.xyz --fix-bottom-layers 2 --fmax 0.03
  geomformer-md relax bulk.cif --relax-cell
  geomformer-md md slab.xyz --ensemble nvt-langevin --temperature 500 --steps 20000
  geomformer-md phonons Cu.cif --supercell 3 3 3
  geomformer-md adsorb Pt111 CO                    CO on every site of Pt(111)
  geomformer-md adsorb Cu211 O --sites step_fcc,step_bridge
  geomformer-md train config.yaml --resume
  geomformer-md distill examples/07_distill/emt_cuagau.yaml   committee from EMT
  geomformer-md committee calibrate committee.pt --frames labelled.extxyz -o calibrated.pt
  geomformer-md lammps export geomformer-catalysis-v11 -o v11.pt2   for pair_style geomformer
  geomformer-md train config.yaml --set training.lr=1e-4 --set training.epochs=20
  geomformer-md export runs/my-potential -o model.pt   model file from a run's checkpoint

Every command accepts --model NAME_OR_FILE (default: the shipped default
potential), --device cpu|cuda|auto and --dtype float32|float64; every command that
writes files accepts -o/--output-dir DIR (default: beside the input) and --overwrite.
Progress: a bar on a terminal, plain lines when stderr is a file (-q: none).
Run 'geomformer-md COMMAND --help' for the options of one command.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks; appends a default only where it says something."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if "default" in text or d in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = " ".join(map(str, d)) if isinstance(d, (list, tuple)) else d
        return f"{text} (default: {shown})"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and raises instead of exiting."""

    def error(self, message):
        raise CLIError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument(
        "--model",
        metavar="NAME_OR_FILE",
        default=None,
        help="shipped potential name or model file (default: the shipped default)",
    )
    g.add_argument(
        "--device", type=_device, default="auto", help="cpu, cuda, cuda:1, ... or auto"
    )
    g.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default=None,
        help="compute precision (default: the model's own)",
    )
    g.add_argument(
        "--dispersion",
        choices=("d3bj",),
        default=None,
        help="add PBE-D3(BJ) dispersion, two-body (needs tad-dftd3: pip install "
        "'geomformer-md[d3]'; default: none)",
    )
    top = argparse.ArgumentParser(add_help=False)
    top.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    top.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    # The same flags after the command; SUPPRESS keeps a value given before it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors",
    )
    debug.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress output"
    )

    outputs = argparse.ArgumentParser(add_help=False)
    g = outputs.add_argument_group("output options")
    g.add_argument(
        "-o",
        "--output-dir",
        metavar="DIR",
        default=None,
        help="folder for the output files, created if needed (default: beside the input; "
        "adsorb with a spec: the current folder)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="replace output files that already exist (default: stop and name them)",
    )

    p = _Parser(
        prog=PROG,
        description="GeoMFormer machine-learning force field: evaluate, relax, run MD, compute "
        "phonons and adsorption energies, train.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
        parents=[top],
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, help_, func, model_options=True):
        """A subcommand; ``model_options=False``: only --debug and -q, no --model, --device,
        --dtype, --dispersion, -o or --overwrite."""
        parents = (common, outputs, debug) if model_options else (debug,)
        example = "\n".join(line for line in EPILOG.splitlines() if f"{PROG} {name} " in line + " ")
        sp = sub.add_parser(
            name,
            help=help_,
            description=help_,
            parents=list(parents),
            formatter_class=_HelpFormatter,
            epilog=f"examples:\n{example}" if example else None,
        )
        sp.set_defaults(func=func)
        return sp

    # In this order in --help: info list | eval relax md | phonons adsorb | train export distill
    for group in (info, run, properties, training):
        group.add_parsers(add)

    from ..lammps.commands import add_parser as add_lammps
    from .committee import add_parser as add_committee

    add_committee(sub, [debug], _HelpFormatter)
    add_lammps(sub, [debug], _HelpFormatter)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return int(exc.code or 0)
        if not getattr(args, "command", None):
            parser.print_help()
            return 1
        _check_output_dir(args)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Our own warnings (close contacts) as 'geomformer-md: warning: ...'; others as Python's."""
    from ..data.contacts import CloseContactWarning

    if issubclass(category, CloseContactWarning):
        _warn(str(message))
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _one_line(exc: BaseException) -> str:
    from ..io.checkpoint import ModelFileError

    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError):
        msg = f"unknown key {msg}"
    elif not isinstance(exc, (CLIError, ValueError, FileNotFoundError, FileExistsError,
                              ModelFileError)):
        msg = f"{type(exc).__name__}: {msg}"
    return msg[:500]
