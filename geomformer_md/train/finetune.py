"""Fine-tuning a trained potential: reference energies, replay frames, frozen layers.

Each function acts on the starting model before the first step and says in the log what it
did, so that a fine-tune never changes what the base model knew without telling.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import chemical_symbols

from ..model import GeoMFormer
from ..potential import Potential
from .data import Sample, composition_matrix, make_samples, offsets_from_counts


@torch.no_grad()
def predict_energies(model: GeoMFormer, samples: list[Sample], device, batch_size: int = 16) -> np.ndarray:
    """The model's total energies (eV) of the samples, without forces."""
    from .data import collate_samples

    pot, out = Potential(model), []
    for start in range(0, len(samples), batch_size):
        batch = collate_samples(samples[start : start + batch_size]).to(device)
        out.append(pot(batch.graph, forces=False, stress=False)["energy"].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def refit_reference_energies(model: GeoMFormer, samples: list[Sample], mode: str, device,
                             log=print) -> dict[str, dict]:
    """Refit the model's per-element reference energies ``e0`` to the new data (in place).

    ``present``: the elements of the new data get e0 + delta, delta the least-squares fit
    (minimum norm) of the new labels' residual against the model; every other element keeps
    its e0. ``all``: every element is fitted from the new data alone, the network part
    taken as it is (each element must occur in the data). ``none``: nothing changes.
    The fits minimise the squared error of the energy per atom, the quantity of the
    training loss: a fit of total energies would let the large slabs pull the small gas
    molecules (whose per-atom error it multiplies by 1/N) far off.
    Returns element -> {old, new, atoms, frames} and logs one line per element.
    """
    species = list(model.config.species)
    old = model.e0.detach().double().cpu().numpy().copy()
    a = composition_matrix([s.graph.numbers.numpy() for s in samples], species)
    labels = np.array([s.energy for s in samples])
    present = a.sum(0) > 0
    if mode == "all" and not present.all():
        missing = [chemical_symbols[z] for z, p in zip(species, present, strict=True) if not p]
        raise ValueError(f"refit_e0: all needs every element of the model in the new data; "
                         f"missing {missing} (use refit_e0: present to keep their references)")
    pred = predict_energies(model, samples, device)
    before = np.abs(labels - pred) / a.sum(1)
    new = old.copy()
    per_atom = 1.0 / a.sum(1, keepdims=True)
    if mode == "present":
        new[present] = old[present] + offsets_from_counts(a * per_atom, (labels - pred) * per_atom[:, 0])[present]
    elif mode == "all":
        new = offsets_from_counts(a * per_atom, (labels - (pred - a @ old)) * per_atom[:, 0])
    with torch.no_grad():
        model.e0.copy_(torch.as_tensor(new, dtype=model.e0.dtype))
    after = np.abs(labels - (pred + a @ (new - old))) / a.sum(1)
    report = {}
    lines = []
    for k, z in enumerate(species):
        sym = chemical_symbols[z]
        n_atoms, n_frames = int(a[:, k].sum()), int((a[:, k] > 0).sum())
        report[sym] = {"old": float(old[k]), "new": float(new[k]), "atoms": n_atoms, "frames": n_frames}
        if mode != "none" and present[k]:
            lines.append(f"  {sym:>2} {old[k]:12.5f} -> {new[k]:12.5f} eV ({new[k] - old[k]:+.5f}; "
                         f"{n_atoms} atoms in {n_frames} frames)")
        else:
            why = "refit_e0: none" if mode == "none" else "not in the new data"
            lines.append(f"  {sym:>2} {old[k]:12.5f} eV kept ({why})")
    log(f"reference energies (refit_e0: {mode}); new data vs starting model, energy MAE "
        f"{1000 * before.mean():.2f} meV/atom before, {1000 * after.mean():.2f} after:\n"
        + "\n".join(lines))
    return report


def freeze_parameters(model: GeoMFormer, prefixes) -> list[str]:
    """Stop training the parameters whose names start with one of ``prefixes`` (a prefix
    matches a whole name component: ``blocks.1`` is block 1, not block 10). Returns their
    names; ValueError naming a prefix that matches nothing."""
    names = [n for n, _ in model.named_parameters()]
    frozen = []
    for prefix in prefixes:
        hit = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hit:
            tops = sorted({".".join(n.split(".")[:2]) if n.startswith("blocks.") else n.split(".")[0]
                           for n in names})
            raise ValueError(f"training.freeze: {prefix!r} names no parameter of this model; "
                             f"valid prefixes include {tops}")
        frozen += [n for n in hit if n not in frozen]
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    return frozen


def label_with_model(model: GeoMFormer, structures, device, source: str, max_force: float,
                     backend: str = "matscipy") -> tuple[list[Sample], int]:
    """Samples of ``structures`` labelled by ``model`` (energy, forces, stress of 3-D periodic
    cells): pseudo-labels. Structures with |F| above max_force are dropped."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..data.graph import atoms_to_graph

    pot = Potential(model)
    labelled = []
    for atoms in structures:
        graph = atoms_to_graph(atoms, model.config.cutoff, backend=backend).to(device)
        periodic = bool(atoms.pbc.all())
        out = pot(graph, forces=True, stress=periodic)
        res = {"energy": float(out["energy"][0]), "forces": out["forces"].double().cpu().numpy()}
        if periodic:
            from ase.stress import full_3x3_to_voigt_6_stress

            res["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].double().cpu().numpy())
        a = atoms.copy()
        a.calc = SinglePointCalculator(a, **res)
        labelled.append(a)
    return make_samples(labelled, model.config.cutoff, model.config.species, source, max_force, backend)


def model_lattice_constant(model: GeoMFormer, device):
    """symbol -> the model's own lattice constant (ASE's reference if it has no minimum)."""
    import copy

    from ase.data import atomic_numbers, reference_states

    from ..calculator import GeoMFormerCalculator
    from ..simulate.catalysis import bulk_lattice_constant

    calc = GeoMFormerCalculator(copy.deepcopy(model), device=str(device))  # it sets eval mode

    def get(symbol: str) -> float:
        try:
            return bulk_lattice_constant(symbol, calc)
        except ValueError:
            return float(reference_states[atomic_numbers[symbol]]["a"])

    return get
