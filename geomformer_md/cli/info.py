"""``geomformer-md info`` and ``list``: versions, devices and the shipped potentials."""

from __future__ import annotations

import sys


def cmd_info(args) -> int:
    import platform

    import ase
    import torch

    from .. import __version__
    from ..io.registry import list_potentials, potentials_dir

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
    from ..io.registry import _manifest, archive_note, potentials_dir

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


def add_parsers(add) -> None:
    """The subcommands of this module, on the parser of ``geomformer-md``."""
    add("info", "show versions, available devices and shipped potentials", cmd_info,
        model_options=False)
    add("list", "list shipped potentials: elements, cutoff, test errors", cmd_list,
        model_options=False)
