"""``geomformer-md phonons`` and ``adsorb``: phonons of a crystal, adsorption energies on
the sites of a slab."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .common import (
    PROG,
    CLIError,
    _add_fix_bottom_layers,
    _atomic_path,
    _beside,
    _check_elements,
    _claim,
    _in_flags,
    _output,
    _positive,
    _progress,
    _read,
    _warn,
    _write,
    calculator,
)


def cmd_phonons(args) -> int:

    from ..simulate.phonons import phonons

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
    calc = calculator(args)
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

    from ..simulate.adsorption import adsorption_energies
    from ..simulate.slabs import parse_slab_spec

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
    calc = calculator(args)
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


def add_parsers(add) -> None:
    """The subcommands of this module, on the parser of ``geomformer-md``."""
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
    _add_fix_bottom_layers(sp, default=2, help="bottom slab layers held fixed")
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
