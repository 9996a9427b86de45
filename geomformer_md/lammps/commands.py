"""``geomformer-md lammps build-plugin | export | env``: the command line of the LAMMPS route."""

from __future__ import annotations

import shlex
import sys

EPILOG = """\
examples:
  geomformer-md lammps build-plugin                 compile the plugin; prints its path last
  geomformer-md lammps export geomformer-catalysis-v11 -o v11.pt2 --dtype float64
  eval "$(geomformer-md lammps env)"                 LD_LIBRARY_PATH for a bare liblammps

then in a LAMMPS input (units metal, newton_pair on, the default):
  plugin load /path/printed/by/build-plugin/geomformer.so
  pair_style geomformer
  pair_coeff * * v11.pt2 Pt C O

See docs/lammps.md.
"""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_build_plugin(args) -> int:
    from ..cli import CLIError
    from .build import BuildError, build_plugin

    try:
        path = build_plugin(force=args.force, jobs=args.jobs, log=_log)
    except BuildError as exc:
        raise CLIError(str(exc)) from None
    print(path)  # the last line of stdout: PLUGIN=$(geomformer-md lammps build-plugin)
    return 0


def cmd_export(args) -> int:
    from .export import export

    path = export(args.model, args.output, dtype=args.dtype, log=_log, ghost_mode=args.ghost_mode)
    _log(f"wrote {path}; in LAMMPS: pair_coeff * * {path} <element of type 1> <type 2> ...")
    return 0


def cmd_env(args) -> int:
    from .build import lammps_run_env

    print(f"export LD_LIBRARY_PATH={shlex.quote(lammps_run_env()['LD_LIBRARY_PATH'])}")
    return 0


def add_parser(sub, parents, formatter_class) -> None:
    """The ``lammps`` command and its subcommands, on the main parser's subparsers."""
    lp = sub.add_parser(
        "lammps",
        help="run MD in LAMMPS: build the pair_style geomformer plugin, export a model for it",
        description="LAMMPS integration: pair_style geomformer, exact on any number of MPI ranks.",
        epilog=EPILOG,
        formatter_class=formatter_class,
        parents=parents,
    )
    lsub = lp.add_subparsers(dest="lammps_command", metavar="SUBCOMMAND", required=True,
                             parser_class=type(lp))

    sp = lsub.add_parser(
        "build-plugin", parents=parents, formatter_class=formatter_class,
        help="compile the plugin for the installed LAMMPS and torch (cached); prints its path",
        description="Compile pair_style geomformer against the LAMMPS wheel and torch of this "
        "environment (needs cmake and a C++ compiler). Cached by versions; the path of the "
        ".so is the last line printed.",
    )
    sp.add_argument("--force", action="store_true", help="rebuild even if a cached build exists")
    sp.add_argument("--jobs", type=int, default=2, help="parallel compile jobs")
    sp.set_defaults(func=cmd_build_plugin)

    sp = lsub.add_parser(
        "export", parents=parents, formatter_class=formatter_class,
        help="write a model as an AOTInductor package (.pt2) for pair_style geomformer",
        description="Compile a model (and its gradient) for pair_style geomformer. Takes a few "
        "minutes (C++ compilation); run it on the kind of CPU the MD will run on.",
    )
    sp.add_argument("model", help="shipped potential name or model file")
    sp.add_argument("-o", "--output", required=True, help="output file, .pt2")
    sp.add_argument("--dtype", choices=("float32", "float64"), default=None,
                    help="precision (default: the model's own)")
    sp.add_argument("--ghost-mode", choices=("halo", "recompute"), default="halo",
                    help="halo (default): one cutoff of ghost atoms, whose features the ranks "
                    "exchange at every layer; recompute: (layers + 1) cutoffs of ghosts, whose "
                    "lower layers each rank computes itself (no exchange inside the model, "
                    "more work per rank; docs/lammps.md)")
    sp.set_defaults(func=cmd_export)

    sp = lsub.add_parser(
        "env", parents=parents, formatter_class=formatter_class,
        help="print the LD_LIBRARY_PATH export that liblammps needs (python -m lammps, mpirun)",
    )
    sp.set_defaults(func=cmd_env)
