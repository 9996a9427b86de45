"""``geomformer-md committee``: build a committee file from member models, measure its flag
on labelled frames, and calibrate the flag's thresholds (geomformer_md/uncertainty.py)."""

from __future__ import annotations

from pathlib import Path

from .common import CLIError, _claim, _positive, _progress, _read


def _fraction(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value

EPILOG = """\
examples:
  geomformer-md committee build a.pt b.pt c.pt d.pt -o committee.pt
  geomformer-md committee finetune my-training.yaml --members 4 -o committee.pt
  geomformer-md committee check geomformer-catalysis-v11-committee --frames labelled.extxyz
  geomformer-md committee calibrate committee.pt --frames validation.extxyz -o calibrated.pt

The frames of check and calibrate must carry the teacher's energies and forces (an extxyz
written by distill, or by ase.io.write from atoms with a SinglePointCalculator). Frames
with info["holdout"] set (a distillation run's held-out categories) and the categories
named by --hold-out are never calibrated on: they show how the thresholds transfer.
"""


def _load(name: str, what: str):
    from ..committee import Committee
    from ..io.checkpoint import ModelFileError, load_any
    from ..io.registry import resolve_potential

    try:
        model = load_any(resolve_potential(name))
    except (ModelFileError, ValueError, KeyError) as exc:
        raise CLIError(f"{what} {name}: {exc}") from None
    return model, isinstance(model, Committee)


def _load_committee(name: str):
    model, is_committee = _load(name, "committee")
    if not is_committee:
        raise CLIError(f"{name} holds a single model, not a committee; build one with "
                       f"'geomformer-md committee build MEMBER... -o FILE'")
    return model


def _rows(args, committee):
    from ..calculator import GeoMFormerCalculator
    from ..simulate._progress import progress_bar
    from ..uncertainty import committee_errors
    from .common import _check_elements

    frames = _read(args.frames)
    _check_elements(GeoMFormerCalculator(committee, uncertainty_threshold=None), frames)
    bar = progress_bar(len(frames), "committee on frames", _progress(args), unit="frame")
    try:
        rows = committee_errors(committee, frames, dtype=args.dtype,
                                progress=lambda done, total: bar.update(1))
    except ValueError as exc:
        raise CLIError(f"--frames {args.frames}: {exc}") from None
    finally:
        bar.close()
    return rows


def _report(args, payload: dict) -> None:
    if args.report:
        from ..io.files import write_json

        write_json(args.report, payload, indent=1)
        print(f"wrote {args.report}")


def _plot(args, rows, limit) -> None:
    if args.plot:
        from ..io.files import atomic_path
        from ..uncertainty import plot_flag

        with atomic_path(args.plot) as tmp:
            plot_flag(rows, limit, tmp, args.large_error)
        print(f"wrote {args.plot}")


def cmd_build(args) -> int:
    from ..committee import Committee
    from ..io.checkpoint import save_committee

    out = Path(args.output)
    _claim(args, out)
    members = []
    for name in args.members:
        model, is_committee = _load(name, "member")
        if is_committee:
            raise CLIError(f"member {name} is itself a committee; give its member model files")
        members.append(model)
    try:
        committee = Committee(members, {"members": [str(m) for m in args.members]})
    except (TypeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    save_committee(committee, out)
    from ase.data import chemical_symbols

    elements = " ".join(chemical_symbols[z] for z in sorted(committee.config.species))
    print(f"wrote {out}: {len(members)} members, elements {elements}, "
          f"cutoff {committee.cutoff:g} Å; "
          f"calibrate its flag with 'geomformer-md committee calibrate {out} --frames FILE -o "
          f"FILE'")
    return 0


def cmd_finetune(args) -> int:
    from ..train.committee import finetune_committee

    config = Path(args.config)
    if not config.is_file():
        raise CLIError(f"cannot read {args.config}: no such file")
    out = Path(args.output)
    _claim(args, out)
    if args.members < 2:
        raise CLIError(f"--members must be at least 2 (the base and one fine-tune), got "
                       f"{args.members}")
    if args.epochs < 1:
        raise CLIError(f"--epochs must be at least 1, got {args.epochs}")
    quiet = getattr(args, "quiet", False)
    try:
        finetune_committee(config, args.members, out, base=args.base, work_dir=args.work_dir,
                           epochs=args.epochs, progress=not quiet,
                           log=(lambda m: None) if quiet else print)
    except FileNotFoundError as exc:
        raise CLIError(str(exc).replace(" as base", " with --base")) from None
    print(f"calibrate its flag on labelled frames it was not trained on: geomformer-md "
          f"committee calibrate {out} --frames FILE -o FILE")
    return 0


def cmd_check(args) -> int:
    from ..committee import resolve_uncertainty_threshold
    from ..uncertainty import flag_table, format_table

    committee = _load_committee(args.committee)
    try:
        limit = resolve_uncertainty_threshold(
            committee, "auto" if args.threshold == "auto" else float(args.threshold))
    except ValueError:
        raise CLIError(f"--threshold must be a number > 0 (eV/Å) or 'auto', got "
                       f"{args.threshold!r}") from None
    rows = _rows(args, committee)
    table = flag_table(rows, limit, args.large_error, args.hold_out or ())
    where = (f"per-element limits ({len(limit.per_element)} elements)" if limit.per_element
             else f"{float(limit):g} eV/Å")
    print(f"{args.committee} on {args.frames}: flag at {where}; large error: a force error "
          f"above {args.large_error:g} eV/Å on some atom")
    print(format_table(table))
    _report(args, {"committee": args.committee, "frames": args.frames, "table": table})
    _plot(args, rows, limit)
    return 0


def cmd_calibrate(args) -> int:
    from ..io.checkpoint import save_committee
    from ..uncertainty import calibrate, flag_table, format_table, is_held_out, limit_from_metadata

    out = Path(args.output)
    _claim(args, out)
    committee = _load_committee(args.committee)
    rows = _rows(args, committee)
    extra = set(args.hold_out or ())
    train = [r for r in rows if not (is_held_out(r["category"]) or r["category"] in extra)]
    try:
        meta = calibrate(train, catch=args.catch, large_error=args.large_error,
                         per_element=not args.one_threshold)
    except ValueError as exc:
        raise CLIError(f"--frames {args.frames}: {exc}") from None
    meta["calibration"].update(frames_file=str(args.frames), held_out_frames=len(rows) - len(train),
                               dtype=args.dtype or committee.config.dtype)
    limit = limit_from_metadata(meta)
    table = flag_table(rows, limit, args.large_error, extra)
    meta["calibration"]["table"] = table
    committee.metadata.update(meta)
    save_committee(committee, out)
    per = meta["force_std_threshold_per_element"]
    print(f"calibrated on {len(train)} frames ({meta['calibration']['large_error_frames']} with "
          f"a force error above {args.large_error:g} eV/Å): flag at force std above "
          + (", ".join(f"{el} {t:.4g}" for el, t in sorted(per.items())) + ", other elements "
             if per else "")
          + f"{meta['force_std_threshold']:.4g} eV/Å")
    print(format_table(table))
    print(f"wrote {out} (GeoMFormerCalculator's uncertainty_threshold='auto' uses these)")
    _report(args, {"committee": args.committee, "frames": args.frames, **meta})
    _plot(args, rows, limit)
    return 0


def add_parser(sub, parents, formatter_class) -> None:
    """The ``committee`` command and its subcommands, on the main parser's subparsers."""
    cp = sub.add_parser(
        "committee",
        help="build a committee file from member models; measure and calibrate its "
             "uncertainty flag on labelled frames",
        description="Committees of GeoMFormer models: their mean is the prediction, their "
                    "spread the uncertainty (docs/committee.md).",
        epilog=EPILOG, formatter_class=formatter_class, parents=parents)
    csub = cp.add_subparsers(dest="committee_command", metavar="SUBCOMMAND", required=True,
                             parser_class=type(cp))

    sp = csub.add_parser("build", parents=parents, formatter_class=formatter_class,
                         help="one committee file from K >= 2 model files (same elements, "
                              "cutoff and dtype)")
    sp.add_argument("members", nargs="+", help="model files or shipped names")
    sp.add_argument("-o", "--output", required=True, help="committee file to write")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    sp.set_defaults(func=cmd_build)

    def frames_options(sp):
        sp.add_argument("committee", help="committee file or shipped committee name")
        sp.add_argument("--frames", required=True,
                        help="labelled frames (energies and forces of the teacher)")
        sp.add_argument("--large-error", type=_positive(), default=0.3, metavar="EV_PER_A",
                        help="a frame whose force error passes this on some atom should be "
                             "flagged")
        sp.add_argument("--hold-out", action="append", metavar="CATEGORY",
                        help="a category (info['category']) to report apart and never "
                             "calibrate on (repeatable; frames with info['holdout'] always are)")
        sp.add_argument("--dtype", choices=("float32", "float64"), default=None,
                        help="evaluation precision (default: the committee's own)")
        sp.add_argument("--report", metavar="FILE.json", help="also write the table as JSON")
        sp.add_argument("--plot", metavar="FILE.png",
                        help="also plot each frame's largest std / limit against its largest "
                             "force error")

    sp = csub.add_parser("finetune", parents=parents, formatter_class=formatter_class,
                         help="a committee around a trained potential: it and K-1 short "
                              "fine-tunes of it with other seeds (the shipped committee's "
                              "recipe)")
    sp.add_argument("config", help="the training config the potential was trained with (its "
                                   "data and settings are reused)")
    sp.add_argument("--members", type=int, default=4, help="K, the base included")
    sp.add_argument("--base", metavar="MODEL",
                    help="the potential (default: the config's out_dir/model.pt)")
    sp.add_argument("--epochs", type=int, default=1, help="epochs of each fine-tune")
    sp.add_argument("--work-dir", metavar="DIR",
                    help="where the fine-tunes train (default: the config's out_dir + "
                         "'-committee'); rerunning resumes them")
    sp.add_argument("-o", "--output", required=True, help="committee file to write")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    sp.set_defaults(func=cmd_finetune)

    sp = csub.add_parser("check", parents=parents, formatter_class=formatter_class,
                         help="how well the flag catches large force errors, per category")
    frames_options(sp)
    sp.add_argument("--threshold", default="auto",
                    help="eV/Å, or auto: the thresholds stored in the committee file")
    sp.set_defaults(func=cmd_check)

    sp = csub.add_parser("calibrate", parents=parents, formatter_class=formatter_class,
                         help="choose per-element thresholds so that the flag catches a "
                              "given fraction of large force errors; write them into a copy")
    frames_options(sp)
    sp.add_argument("-o", "--output", required=True, help="calibrated committee file to write")
    sp.add_argument("--catch", type=_fraction, default=0.8,
                    help="fraction of large-error frames (not held out) the flag must catch")
    sp.add_argument("--one-threshold", action="store_true",
                    help="one threshold for every element instead of one per element")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    sp.set_defaults(func=cmd_calibrate)
