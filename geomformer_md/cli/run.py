"""``geomformer-md eval``, ``relax`` and ``md``: the potential on the frames of a structure
file."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from .common import (
    PROG,
    CLIError,
    _add_fix_bottom_layers,
    _check_elements,
    _claim,
    _in_flags,
    _mae_text,
    _output,
    _positive,
    _progress,
    _read,
    _warn,
    _words,
    _write,
    calculator,
)


def cmd_eval(args) -> int:
    import numpy as np
    from ase.calculators.calculator import PropertyNotImplementedError
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.units import GPa

    from ..simulate._progress import progress_bar
    from ..train.metrics import ErrorSums, zero_force_atoms, zero_force_message

    frames = _read(args.file, args.index)
    out = Path(args.output) if args.output else _output(args, args.file, ".eval.extxyz")
    _claim(args, out)
    calc = calculator(args)
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
        from ..train.data import composition_matrix, offsets_from_counts

        counts = composition_matrix([n for n, _ in offsets], elements)
        diff = np.array([d for _, d in offsets])
        left = np.abs(diff - counts @ offsets_from_counts(counts, diff)) / counts.sum(axis=1)
        print(f"energy MAE after fitting per-element offsets: {1e3 * left.mean():.2f} meV/atom")
    print(f"wrote {out}")
    return 0


def cmd_relax(args) -> int:
    from ..simulate.relax import relax

    atoms = _read(args.file, args.index)[0]
    out = Path(args.output) if args.output else _output(args, args.file, ".relaxed.extxyz")
    traj = _output(args, args.file, ".relax.traj")
    _claim(args, out, traj)
    calc = calculator(args)
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
    from ..simulate.md import ENSEMBLES, NPT_ENSEMBLES, run_md
    from ..simulate.runfiles import RunConflictError

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
    calc = calculator(args, skin=args.skin)
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


def add_parsers(add) -> None:
    """The subcommands of this module, on the parser of ``geomformer-md``."""
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
    _add_fix_bottom_layers(sp)
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
    _add_fix_bottom_layers(sp)
    sp.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the output files even if it was made with another seed or "
        "length (--steps larger than its own extends it)",
    )
    sp.add_argument("--no-resume", action="store_true", help=argparse.SUPPRESS)  # = --overwrite
