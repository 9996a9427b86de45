"""``geomformer-md``: the command line.

Each subcommand is a thin shell over the Python API (``simulate.relax``,
``simulate.md``, ``simulate.phonons``, ``simulate.catalysis``, ``train``):
parse, check the input, call, write the outputs beside the input file (or into
``-o/--output-dir``). Existing outputs are never replaced silently: a command whose
outputs exist stops with one line naming them, unless ``--overwrite`` (``md`` also
continues its own run, see ``simulate.md``).

Errors in the input end the program with exit code 1 and ONE line on stderr,
``geomformer-md: error: ...``; ``--debug`` shows the traceback instead. Outputs
that are only meaningful when complete (relaxed structures, tables, plots) are
written at the end, via a temporary file and a rename, so a failed run never
leaves a file that looks finished.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import textwrap
import traceback
import warnings
from pathlib import Path

PROG = "geomformer-md"

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
  geomformer-md lammps export geomformer-catalysis-v11 -o v11.pt2   for pair_style geomformer
  geomformer-md train config.yaml --set training.lr=1e-4 --set training.epochs=20
  geomformer-md export runs/my-potential -o model.pt   model file from a run's checkpoint

Every command accepts --model NAME_OR_FILE (default: the shipped default
potential), --device cpu|cuda|auto and --dtype float32|float64; every command that
writes files accepts -o/--output-dir DIR (default: beside the input) and --overwrite.
Progress: a bar on a terminal, plain lines when stderr is a file (-q: none).
Run 'geomformer-md COMMAND --help' for the options of one command.
"""

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


# --------------------------------------------------------------------------- helpers


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
    from .simulate.runfiles import RunConflictError, existing

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
        from .io.checkpoint import ModelFileError
        from .simulate.runfiles import RunConflictError

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
    from .simulate.runfiles import Words

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


@contextlib.contextmanager
def _atomic_path(path: Path):
    """Yield a temporary path in the same folder; rename it to ``path`` on success only."""
    from .simulate.runfiles import new_file_mode

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, new_file_mode())  # mkstemp's 0600 would ignore the umask
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write(path: Path, frames, fmt: str | None = None) -> None:
    from ase.io import write

    with _atomic_path(path) as tmp:
        write(str(tmp), frames, format=fmt or _format_of(path))


def _format_of(path: Path) -> str | None:
    return {".extxyz": "extxyz", ".xyz": "extxyz", ".traj": "traj"}.get(path.suffix)


def _calculator(args, skin: float = 0.0):
    from .calculator import GeoMFormerCalculator

    return GeoMFormerCalculator(args.model, device=args.device, dtype=args.dtype, skin=skin,
                                dispersion=getattr(args, "dispersion", None))


def _check_elements(calc, frames) -> None:
    from .simulate.catalysis import check_elements

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
    from .calculator import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- commands


def cmd_info(args) -> int:
    import platform

    import ase
    import torch

    from . import __version__
    from .io.registry import list_potentials, potentials_dir

    print(f"geomformer-md {__version__}")
    print(f"python        {platform.python_version()} ({sys.executable})")
    print(f"torch         {torch.__version__}")
    print(f"ase           {ase.__version__}")
    for mod in ("phonopy", "matscipy", "numpy"):
        try:
            print(f"{mod:<13} {__import__(mod).__version__}")
        except Exception:
            print(f"{mod:<13} not installed")
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        print(f"devices       cpu, cuda: {', '.join(f'{i}: {n}' for i, n in enumerate(names))}")
    else:
        print("devices       cpu (no CUDA device visible to torch)")
    pots = list_potentials()
    print(
        f"potentials    {', '.join(sorted(pots)) if pots else 'none shipped'} ({potentials_dir()})"
    )
    return 0


def cmd_list(args) -> int:
    from .io.registry import _manifest, archive_note, potentials_dir

    manifest = _manifest()
    pots = manifest.get("potentials", {})
    if not pots:
        print(f"no shipped potentials (looked in {potentials_dir()})")
        return 0
    default = manifest.get("default")
    for name in sorted(pots):
        e = pots[name]
        star = " (default)" if name == default else ""
        print(f"{name}{star}")
        print(f"  file      {e.get('file', '?')}")
        print(f"  elements  {' '.join(e.get('elements', [])) or '?'}")
        print(f"  cutoff    {e.get('cutoff', '?')} Å")
        if e.get("description"):
            print(f"  about     {e['description']}")
        if e.get("training_data"):
            print(f"  data      {e['training_data']}")
        errors = e.get("test_errors") or e.get("metrics")
        if isinstance(errors, dict):
            for subset, v in errors.items():
                print(f"  test      {_error_line(subset, v)}")
        elif errors:
            print(f"  test      {errors}")
        if isinstance(e.get("adsorption_mae_vs_labeller_eV"), (int, float)):
            mae = e["adsorption_mae_vs_labeller_eV"]
            print(f"  adsorb    {mae:.3f} eV mean |error| against the labeller")
        if e.get("model_card"):
            print(f"  card      {potentials_dir() / e['model_card']}")
    if archive_note():
        print(archive_note())
    return 0


def _error_line(subset: str, v) -> str:
    """One test subset of a manifest entry, e.g.
    'heldout  3.55 meV/atom  34.9 meV/Å  (265 frames)'."""
    if not isinstance(v, dict):
        return f"{subset} {v}"
    parts = [f"{subset:8s}"]
    if isinstance(v.get("energy_mae_meV_atom"), (int, float)):
        parts.append(f"{v['energy_mae_meV_atom']:.2f} meV/atom")
    if isinstance(v.get("forces_mae_meV_A"), (int, float)):
        parts.append(f"{v['forces_mae_meV_A']:.1f} meV/Å")
    if "n_frames" in v:
        parts.append(f"({v['n_frames']} frames)")
    return "  ".join(parts)


def cmd_eval(args) -> int:
    import numpy as np
    from ase.calculators.calculator import PropertyNotImplementedError
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.units import GPa

    from .simulate._progress import progress_bar
    from .train.metrics import ErrorSums, zero_force_atoms, zero_force_message

    frames = _read(args.file, args.index)
    out = Path(args.output) if args.output else _output(args, args.file, ".eval.extxyz")
    _claim(args, out)
    calc = _calculator(args)
    _check_elements(calc, frames)
    results = []
    rows = [
        f"{'frame':>5}  {'formula':<16}{'atoms':>6}{'E/eV':>15}{'E/atom':>12}{'max|F|':>10}"
        f"{'P/GPa':>10}"
    ]
    errors = ErrorSums()  # against the labels the file carries; definitions in train/metrics.py
    offsets = []  # (numbers, E_label - E_model) per labelled frame
    zeroed = []  # (frame, atoms) whose force labels look zeroed by FixAtoms
    bar = progress_bar(len(frames), "eval", _progress(args), unit="frame")
    for k, atoms in enumerate(frames):
        ref = dict(atoms.calc.results) if atoms.calc is not None else {}
        a = atoms.copy()
        a.constraints = []  # labels are raw forces: compare them with raw predictions
        a.calc = calc
        try:
            e = a.get_potential_energy()
            f = a.get_forces()
        except ValueError as exc:
            where = f"frame {k}: " if len(frames) > 1 else ""
            raise CLIError(f"{where}{exc}") from None
        res = {"energy": e, "free_energy": e, "forces": f.copy()}
        p = ""
        if a.pbc.all():
            try:
                s = a.get_stress()
                res["stress"] = s.copy()
                p = f"{-np.mean(s[:3]) / GPa:10.3f}"
            except PropertyNotImplementedError:
                pass
        e_ref = ref.get("energy", ref.get("free_energy"))
        f_ref = ref.get("forces")
        if f_ref is not None and zero_force_atoms(f_ref).any():
            zeroed.append((k, int(zero_force_atoms(f_ref).sum())))
        if e_ref is not None or f_ref is not None:
            errors.add(e, e_ref, len(a), f, f_ref, res.get("stress"), ref.get("stress"),
                       category=atoms.info.get(args.by, "(none)") if args.by else None)
        if e_ref is not None:
            offsets.append((atoms.numbers, e_ref - e))
        done = atoms.copy()
        done.calc = SinglePointCalculator(done, **res)
        results.append(done)
        fmax = float(np.linalg.norm(f, axis=1).max())
        rows.append(
            f"{k:>5}  {a.get_chemical_formula():<16}{len(a):>6}{e:>15.6f}{e / len(a):>12.6f}"
            f"{fmax:>10.4f}{p:>10}"
        )
        bar.update()
    bar.close()
    _write(out, results, "extxyz")
    print("\n".join(rows))
    counts = errors.counts()
    if any(counts.values()):  # the file carries reference labels (e.g. DFT): the MAEs
        print("MAE against the file's labels: " + _mae_text(errors.summary(), counts))
        for cat, v in errors.by_category().items():
            print(f"  {args.by}={cat}: " + _mae_text(v))
    if zeroed:
        print(f"{PROG}: warning: " + zero_force_message(len(zeroed), f"frame {zeroed[0][0]}",
                                                      zeroed[0][1], args.file), file=sys.stderr)
    elements = sorted({int(z) for numbers, _ in offsets for z in numbers})
    if len(offsets) >= 2 * len(elements) + 2:
        # Another DFT code or setting shifts every energy by per-element constants, which
        # fine-tuning refits (init_from); the error left after fitting them is what remains.
        from .train.data import composition_matrix, offsets_from_counts

        counts = composition_matrix([n for n, _ in offsets], elements)
        diff = np.array([d for _, d in offsets])
        left = np.abs(diff - counts @ offsets_from_counts(counts, diff)) / counts.sum(axis=1)
        print(f"energy MAE after fitting per-element offsets: {1e3 * left.mean():.2f} meV/atom")
    print(f"wrote {out}")
    return 0


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


def cmd_relax(args) -> int:
    from .simulate.relax import relax

    atoms = _read(args.file, args.index)[0]
    out = Path(args.output) if args.output else _output(args, args.file, ".relaxed.extxyz")
    traj = _output(args, args.file, ".relax.traj")
    _claim(args, out, traj)
    calc = _calculator(args)
    _check_elements(calc, [atoms])
    traj.parent.mkdir(parents=True, exist_ok=True)
    created = not traj.exists()
    try:
        with _in_flags():
            relaxed, res = relax(
                atoms,
                calculator=calc,
                fmax=args.fmax,
                steps=args.steps,
                optimizer=args.optimizer,
                relax_cell=args.relax_cell,
                fix_bottom_layers=args.fix_bottom_layers,
                trajectory=traj,
                logfile=None,
                progress=_progress(args),
                pressure_bar=args.pressure,
            )
    except BaseException:
        if created and traj.exists():
            traj.unlink()  # a trajectory of a failed run is not a result
        raise
    relaxed.info.update(
        converged=res.converged,
        fmax=res.fmax,
        relax_steps=res.steps,
        min_bond_ratio=res.min_bond_ratio,
        close_contact=res.close_contact,
    )
    _write(out, relaxed)
    status = "converged" if res.converged else "NOT converged"
    if res.close_contact:
        status += " to an UNPHYSICAL structure (close contact)"
    print(
        f"{status} in {res.steps} steps ({res.optimizer}): E = {res.energy:.6f} eV "
        f"(from {res.initial_energy:.6f}), fmax = {res.fmax:.4f} eV/Å, "
        f"closest pair {res.min_bond_ratio:.2f} of a bond length"
    )
    print(f"wrote {out} and {traj}")
    if res.close_contact:
        _warn(
            f"in the relaxed structure {res.contact} (below 0.6): far outside any training "
            f"data; this is not a physical minimum"
        )
    if not res.converged:
        _warn(
            f"fmax {res.fmax:.4f} > {args.fmax} after {res.steps} steps; "
            f"raise --steps or restart from {out}"
        )
    return 0


def cmd_md(args) -> int:
    from .simulate.md import ENSEMBLES, NPT_ENSEMBLES, run_md
    from .simulate.runfiles import RunConflictError

    ensemble = args.ensemble.lower()
    if ensemble not in ENSEMBLES:
        raise CLIError(f"unknown ensemble {args.ensemble!r}; valid: {', '.join(ENSEMBLES)}")
    if ensemble == "nvt-bussi" and args.temperature == 0:
        raise CLIError("--ensemble nvt-bussi rescales velocities and needs --temperature > 0")
    if args.resume and (args.overwrite or args.no_resume):
        raise CLIError("--resume continues a run and --overwrite starts over: give one")
    atoms = _read(args.file, args.index)[0]
    if ensemble in NPT_ENSEMBLES and not (atoms.pbc.all() and atoms.cell.rank == 3):
        raise CLIError(
            f"ensemble {ensemble!r} needs a cell periodic in 3 directions; "
            f"{args.file} has pbc={atoms.pbc.tolist()}"
        )
    calc = _calculator(args, skin=args.skin)
    _check_elements(calc, [atoms])
    traj = _output(args, args.file, ".md.traj")
    log = _output(args, args.file, ".md.log")
    traj.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _in_flags():
            res = run_md(
                atoms,
                calculator=calc,
                ensemble=ensemble,
                temperature_K=args.temperature,
                timestep_fs=args.timestep,
                steps=args.steps,
                trajectory=traj,
                log=log,
                loginterval=args.interval,
                friction=args.friction,
                taut_fs=args.taut,
                pressure_bar=args.pressure,
                taup_fs=args.taup,
                seed=args.seed,
                progress=_progress(args),
                resume=True if args.resume else None,
                overwrite=args.overwrite or args.no_resume,
                fix_bottom_layers=args.fix_bottom_layers,
            )
    except RunConflictError as exc:
        raise CLIError(exc.message(_words())) from None
    if res.steps_this_call == 0 and res.resumed_from is not None:
        print(
            f"{traj} already holds this run, complete (the same settings): nothing to do; "
            f"--overwrite runs it again"
        )
        what = ", stored run"
    elif res.resumed_from is not None:
        what = f", continued from step {res.resumed_from}"
    else:
        what = ""
    print(
        f"{res.ensemble}: {res.steps_done} steps ({res.time_ps:.3f} ps{what}), "
        f"mean T = {res.mean_temperature_K:.1f} K, final T = {res.final_temperature_K:.1f} K, "
        f"closest pair {res.min_bond_ratio:.2f} of a bond length, {res.wall_time_s:.1f} s"
    )
    verb = "results in" if what == ", stored run" else "wrote"
    print(f"{verb} {traj}, {log}" + (f" and {res.restart}" if res.restart else ""))
    if res.close_contact:
        _warn(
            f"atoms came closer than 0.6 of their covalent bond length (first at step "
            f"{res.close_contact_step}, down to {res.min_bond_ratio:.2f}; column "
            f"min_bond_ratio of {log}): far outside any training data, the trajectory is not "
            f"physical from there on"
        )
    return 0


def cmd_phonons(args) -> int:

    from .simulate.phonons import phonons

    atoms = _read(args.file, args.index)[0]
    if not (atoms.pbc.all() and atoms.cell.rank == 3):
        raise CLIError(
            f"phonons need a crystal periodic in 3 directions; {args.file} has "
            f"pbc={atoms.pbc.tolist()}"
        )
    png = _output(args, args.file, ".phonons.png")
    yaml = _output(args, args.file, ".phonons.yaml")
    csv = _output(args, args.file, ".thermal.csv")
    _claim(args, png, yaml, csv)
    calc = _calculator(args)
    _check_elements(calc, [atoms])
    temps = [
        args.tmin + k * args.tstep for k in range(int((args.tmax - args.tmin) / args.tstep) + 1)
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _atomic_path(png) as tmp_png:
            res = phonons(
                atoms,
                calculator=calc,
                supercell=args.supercell,
                displacement=args.displacement,
                relax_first=not args.no_relax,
                fmax=args.fmax,
                relax_cell=not args.no_relax_cell,
                path=args.path,
                npoints=args.npoints,
                mesh=args.mesh,
                temperatures=temps,
                plot=tmp_png,
                progress=_progress(args),
            )
            res.plot = str(png)
    for w in caught:
        if issubclass(w.category, UserWarning) and "geomformer" in str(w.filename):
            print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    with _atomic_path(yaml) as tmp:
        res.save(tmp)
    with _atomic_path(csv) as tmp:
        res.thermal_to_csv(tmp)
    print(res.summary())
    print(f"wrote {png}, {yaml}, {csv}")
    return 0


def _parse_references(text: str | None):
    if text is None:
        return None
    if text in ("O2", "H2O"):
        return text
    ref = {}
    for part in text.split(","):
        name, sep, coef = part.partition(":")
        try:
            ref[name.strip()] = float(coef) if sep else 1.0
        except ValueError:
            raise CLIError(
                f"cannot read --references {text!r}: expected O2, H2O or 'H2O:1,H2:-0.5'"
            ) from None
    return ref


def cmd_adsorb(args) -> int:
    from ase.io import write  # noqa: F401  (fail early if ASE's io is broken)

    from .simulate.catalysis import adsorption_energies, parse_slab_spec

    if Path(args.slab).exists():
        slab = _read(args.slab, -1)[0]
        stem = _beside(args.slab, "")
        if not slab.info.get("adsorbate_info"):
            raise CLIError(
                f"{args.slab} has no adsorption-site information (files do not keep ase.build's "
                f"adsorbate_info); use a spec such as Pt111, Cu100 or Pt211 instead"
            )
    else:
        try:
            symbol, facet, _ = parse_slab_spec(args.slab)
        except ValueError as exc:
            raise CLIError(
                f"SLAB {args.slab!r} is neither an existing file nor a spec: {exc}"
            ) from None
        slab = (symbol, facet, tuple(args.size))
        stem = Path(f"{symbol}{facet}")
    lattice = args.lattice_constant
    if lattice not in ("relax", "ref"):
        try:
            lattice = float(lattice)
        except ValueError:
            raise CLIError(
                f"--lattice-constant must be 'relax', 'ref' or a number in Å, got {lattice!r}"
            ) from None
    elif lattice == "ref":
        lattice = None
    sites = (
        None
        if args.sites in (None, "all")
        else [s.strip() for s in args.sites.split(",") if s.strip()]
    )
    ads_tag = args.adsorbate.replace("/", "_")
    if args.output_dir:
        stem = Path(args.output_dir) / stem.name
    csv = Path(args.csv) if args.csv else stem.with_name(f"{stem.name}_{ads_tag}_adsorption.csv")
    xyz = csv.with_suffix(".extxyz")
    _claim(args, csv, xyz)
    calc = _calculator(args)
    relax_kwargs = {"optimizer": args.optimizer} if args.optimizer else {}
    with _in_flags():
        table = adsorption_energies(
            slab,
            args.adsorbate,
            calculator=calc,
            sites=sites,
            height=args.height,
            fix_bottom_layers=args.fix_bottom_layers,
            fmax=args.fmax,
            steps=args.steps,
            references=_parse_references(args.references),
            lattice_constant=lattice,
            vacuum=args.vacuum,
            progress=_progress(args),
            orientations=args.orientations,
            seed=args.seed,
            **relax_kwargs,
        )
    with _atomic_path(csv) as tmp:
        table.to_csv(tmp)
    frames = []
    for r in table.rows:
        a = r.atoms.copy()
        a.calc = r.atoms.calc
        a.info.pop("adsorbate_info", None)  # nested arrays: extxyz cannot store it
        a.info.update(
            site=r.site,
            final_site=r.final_site,
            E_ads=r.e_ads,
            converged=r.converged,
            orientation=r.orientation,
            min_bond_ratio=r.min_bond_ratio,
            close_contact=r.close_contact,
        )
        frames.append(a)
    _write(xyz, frames, "extxyz")
    print(table)
    print(f"wrote {csv} and {xyz}")
    close = [r.site for r in table.rows if r.close_contact]
    if close:
        _warn(
            f"site(s) {', '.join(close)} relaxed into a close contact (two atoms closer than "
            f"0.6 of their bond length): far outside any training data, not physical; their "
            f"E_ads is not an adsorption energy"
        )
    return 0


def cmd_train(args) -> int:
    config = Path(args.config)
    if not config.is_file():
        raise CLIError(f"cannot read {args.config}: no such file")
    try:
        from .train import train
        from .train.config import read_settings
    except ImportError as exc:
        raise CLIError(f"training is not available in this installation ({exc})") from None
    try:
        settings = read_settings(args.set or [])
    except ValueError as exc:
        raise CLIError(f"--set {exc}") from None
    metrics = train(str(config), resume=args.resume, progress=_progress(args), settings=settings)
    if int(os.environ.get("RANK", "0")) == 0 and isinstance(metrics, dict):  # one rank prints
        if not metrics.get("complete", True):
            print(f"stopped at step {metrics.get('step')}; continue with --resume")
        else:
            test, val = metrics.get("test") or {}, metrics.get("val") or {}
            parts = [f"{name} {_mae_text(v)}"
                     for name, v in (("test", test), ("val", val)) if v]
            print("final metrics: " + ("; ".join(parts) if parts else "no val/test frames"))
    return 0


def cmd_export(args) -> int:
    from .train.trainer import CHECKPOINT, export_checkpoint

    src = Path(args.checkpoint)
    if not src.exists():
        raise CLIError(f"cannot read {args.checkpoint}: no such file or directory")
    if src.is_dir() and not (src / CHECKPOINT).is_file():
        raise CLIError(f"{args.checkpoint} has no {CHECKPOINT} (is it a training out_dir?)")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"{out} exists; pass --overwrite to replace it")
    from .io.checkpoint import read_model_file

    export_checkpoint(src, out, use_ema=not args.no_ema)
    meta = read_model_file(out)["metadata"]
    print(f"wrote {out} (epoch {meta.get('epoch')}, step {meta.get('step')}, "
          f"{'EMA' if meta.get('ema') else 'live'} weights)")
    return 0


def cmd_distill(args) -> int:
    from .distill import distill

    result = distill(args.config, progress=not getattr(args, "quiet", False))
    last = result["rows"][-1] if result["rows"] else {}
    summary = ", ".join(f"{k} {last[k]:.4g}" for k in ("E_all", "F_all", "spearman", "caught")
                        if isinstance(last.get(k), float))
    print(f"committee: {result['committee']}" + (f" (validation: {summary})" if summary else ""))
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

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

    def add(name, help_, func, parents=(common, outputs, debug)):
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

    add("info", "show versions, available devices and shipped potentials", cmd_info, (debug,))
    add("list", "list shipped potentials: elements, cutoff, test errors", cmd_list, (debug,))

    sp = add(
        "eval",
        "energy, forces and stress of every frame of a structure file (and their mean "
        "absolute errors against the labels the file carries, if any)",
        cmd_eval,
    )
    sp.add_argument("file", help="any ASE-readable file (extxyz, cif, POSCAR, traj, ...)")
    sp.add_argument("--index", default=":", help="frames to evaluate (ASE index syntax)")
    sp.add_argument(
        "--output", metavar="FILE", help="output extxyz (default: FILE_STEM.eval.extxyz)"
    )
    sp.add_argument(
        "--by", metavar="INFO_KEY", default=None,
        help="also report the errors per value of this atoms.info key (e.g. config_type)",
    )

    sp = add("relax", "relax a structure (positions, optionally the cell)", cmd_relax)
    sp.add_argument("file", help="structure file (the last frame is used unless --index)")
    sp.add_argument("--index", default="-1", help="frame to relax")
    sp.add_argument("--fmax", type=_positive(), default=0.05, help="force threshold, eV/Å")
    sp.add_argument("--steps", type=_positive(int), default=500, help="maximum optimizer steps")
    sp.add_argument("--optimizer", default="FIRE", help="FIRE, BFGS, LBFGS, ...")
    sp.add_argument(
        "--relax-cell", action="store_true", help="also relax the cell (3-D periodic only)"
    )
    sp.add_argument(
        "--pressure", type=float, default=0.0, help="external pressure with --relax-cell, bar"
    )
    sp.add_argument(
        "--fix-bottom-layers",
        type=_positive(int, allow_zero=True),
        default=None,
        metavar="N",
        help="hold the N lowest atomic layers of a slab fixed",
    )
    sp.add_argument(
        "--output",
        metavar="FILE",
        help="relaxed structure (default: FILE_STEM.relaxed.extxyz; the trajectory is "
        "FILE_STEM.relax.traj)",
    )

    sp = add(
        "md",
        "molecular dynamics -> FILE_STEM.md.traj, FILE_STEM.md.log (CSV) and a checkpoint",
        cmd_md,
    )
    sp.description = textwrap.fill(
        "Molecular dynamics -> FILE_STEM.md.traj, FILE_STEM.md.log (CSV) and "
        "FILE_STEM.md.restart.npz. An interrupted run continues when the same command is "
        "given again; files of another run (other settings or seed) are never replaced: "
        "the command stops and names them (--resume continues that run, --overwrite starts "
        "over). The default ensemble, nvt-langevin, is the Python API's too: --temperature "
        "then holds from the first step, whatever the starting structure.",
        width=79,
    )
    sp.add_argument("file", help="starting structure")
    sp.add_argument("--index", default="-1", help="frame to start from")
    sp.add_argument(
        "--ensemble",
        default="nvt-langevin",
        help="nve, nvt-langevin, nvt-nose-hoover, nvt-bussi, npt, npt-berendsen",
    )
    sp.add_argument("--temperature", type=_positive(allow_zero=True), default=300.0, help="K")
    sp.add_argument("--timestep", type=_positive(), default=1.0, help="fs")
    sp.add_argument(
        "--steps", type=_positive(int, allow_zero=True), default=1000, help="total steps"
    )
    sp.add_argument("--interval", type=_positive(int), default=10, help="write every N steps")
    sp.add_argument("--friction", type=_positive(), default=0.01, help="Langevin friction, 1/fs")
    sp.add_argument("--taut", type=_positive(), default=100.0, help="thermostat time constant, fs")
    sp.add_argument("--pressure", type=float, default=1.0, help="NPT pressure, bar")
    sp.add_argument("--taup", type=_positive(), default=1000.0, help="barostat time constant, fs")
    sp.add_argument("--seed", type=int, default=0, help="random seed (velocities, noise)")
    sp.add_argument(
        "--skin", type=_positive(allow_zero=True), default=1.0, help="Verlet neighbour-list skin, Å"
    )
    sp.add_argument(
        "--fix-bottom-layers",
        type=_positive(int, allow_zero=True),
        default=None,
        metavar="N",
        help="hold the N lowest atomic layers of a slab fixed",
    )
    sp.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output files even if it was made with another seed or "
        "length (--steps larger than its own extends it)",
    )
    sp.add_argument("--no-resume", action="store_true", help=argparse.SUPPRESS)  # = --overwrite

    sp = add(
        "phonons", "phonon bands, DOS and thermal properties of a crystal (phonopy)", cmd_phonons
    )
    sp.add_argument("file", help="3-D periodic unit cell")
    sp.add_argument("--index", default="-1", help="frame to use")
    sp.add_argument("--supercell", type=_positive(int), nargs=3, default=[3, 3, 3], metavar="N")
    sp.add_argument("--displacement", type=_positive(), default=0.01, help="Å")
    sp.add_argument("--no-relax", action="store_true", help="do not relax before displacing")
    sp.add_argument("--no-relax-cell", action="store_true", help="relax positions only")
    sp.add_argument("--fmax", type=_positive(), default=1e-4, help="relaxation threshold, eV/Å")
    sp.add_argument(
        "--path",
        default=None,
        help="band path of special points, e.g. GXKGL (default: standard for the lattice)",
    )
    sp.add_argument("--npoints", type=_positive(int), default=51, help="q-points per band segment")
    sp.add_argument("--mesh", type=_positive(int), nargs=3, default=[20, 20, 20], metavar="N")
    sp.add_argument("--tmin", type=_positive(allow_zero=True), default=0.0, help="K")
    sp.add_argument("--tmax", type=_positive(allow_zero=True), default=1000.0, help="K")
    sp.add_argument("--tstep", type=_positive(), default=10.0, help="K")

    sp = add("adsorb", "adsorption energies of an adsorbate on every site of a slab", cmd_adsorb)
    sp.add_argument(
        "slab", help="a spec (Pt111, Cu100, Pt211, Ru0001, ...) or a slab file with sites"
    )
    sp.add_argument("adsorbate", help="element (O, H, N, C) or molecule (CO, OH, H2O, NH3, ...)")
    sp.add_argument(
        "--size",
        type=_positive(int),
        nargs=3,
        default=[3, 3, 4],
        metavar="N",
        help="slab size for a spec: NX NY LAYERS (211: NX a multiple of 3)",
    )
    sp.add_argument("--sites", default=None, help="comma-separated site names (default: all)")
    sp.add_argument(
        "--height",
        type=float,
        default=None,
        help="initial height above the top layer, Å (default: from covalent radii)",
    )
    sp.add_argument(
        "--fix-bottom-layers",
        type=_positive(int, allow_zero=True),
        default=2,
        metavar="N",
        help="bottom slab layers held fixed",
    )
    sp.add_argument("--fmax", type=_positive(), default=0.05, help="eV/Å")
    sp.add_argument(
        "--steps", type=_positive(int), default=500, help="maximum steps per relaxation"
    )
    sp.add_argument("--optimizer", default=None, help="FIRE (default), BFGS, ...")
    sp.add_argument(
        "--references",
        default=None,
        help="gas references: O2, H2O or e.g. 'H2O:1,H2:-0.5' (default: see docs)",
    )
    sp.add_argument(
        "--lattice-constant",
        default="relax",
        help="'relax' (fit with the model), 'ref' (ASE's experimental) or Å",
    )
    sp.add_argument("--vacuum", type=_positive(), default=10.0, help="Å on each side")
    sp.add_argument(
        "--orientations",
        type=_positive(int),
        default=3,
        help="starting orientations per site for a molecule: upright, then tilted up to 70° "
        "with random azimuths; the lowest is kept (1: upright only)",
    )
    sp.add_argument("--seed", type=int, default=0, help="random seed of the tilted starts")
    sp.add_argument("--csv", default=None, help="CSV path (default: SPEC_ADSORBATE_adsorption.csv)")

    sp = add("train", "train or fine-tune a potential from a YAML config", cmd_train, (debug,))
    sp.add_argument("config", help="training config (YAML; keys in geomformer_md/train/config.py)")
    sp.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    sp.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. training.lr=1e-4 (repeatable)",
    )

    sp = add(
        "export",
        "write a model file from a training checkpoint (a run still going or stopped)",
        cmd_export,
        (debug,),
    )
    sp.add_argument("checkpoint", help="checkpoint.pt or the run's out_dir")
    sp.add_argument("-o", "--output", required=True, help="model file to write")
    sp.add_argument("--no-ema", action="store_true", help="the live weights, not the EMA average")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    sp = add("distill", "active-learning distillation of a committee potential from a teacher "
             "(any ASE calculator) over a configuration space; re-running the same config "
             "continues the run", cmd_distill, (debug,))
    sp.add_argument("config", help="distillation config (YAML; see docs/distill.md)")

    from .lammps.commands import add_parser as add_lammps

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
    from .data.contacts import CloseContactWarning

    if issubclass(category, CloseContactWarning):
        _warn(str(message))
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _one_line(exc: BaseException) -> str:
    from .io.checkpoint import ModelFileError

    msg = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError):
        msg = f"unknown key {msg}"
    elif not isinstance(exc, (CLIError, ValueError, FileNotFoundError, FileExistsError,
                              ModelFileError)):
        msg = f"{type(exc).__name__}: {msg}"
    return msg[:500]


if __name__ == "__main__":
    sys.exit(main())
