"""Fine-tuning a trained potential: reference energies, replay frames, frozen layers.

Each function acts on the starting model before the first step and says in the log what it
did, so that a fine-tune never changes what the base model knew without telling.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from ase.data import chemical_symbols

from ..model import GeoMFormer
from ..potential import Potential
from .data import Sample, composition_matrix, make_samples, offsets_from_counts


@torch.no_grad()
def predict_energies(model: GeoMFormer, samples: list[Sample], device,
                     batch_size: int = 16) -> np.ndarray:
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
        delta = offsets_from_counts(a * per_atom, (labels - pred) * per_atom[:, 0])
        new[present] = old[present] + delta[present]
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
        report[sym] = {"old": float(old[k]), "new": float(new[k]), "atoms": n_atoms,
                       "frames": n_frames}
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
            tops = sorted({".".join(n.split(".")[: 2 if n.startswith("blocks.") else 1])
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
    return make_samples(labelled, model.config.cutoff, model.config.species, source, max_force,
                        backend)


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


class Replay:
    """The replay frames of ``cfg.replay``: structures of the starting model's domain (generated,
    or drawn from ``replay.file``) labelled by the starting model, each with the replay loss
    weight. With ``replay.resample`` every epoch gets new structures (seeded by the seed and
    the epoch, so a resumed run sees the same ones), always ``frames`` of them."""

    def __init__(self, model: GeoMFormer, cfg, new_samples: list[Sample], device, log=print):
        from .data import read_frames
        from .replay import mostly_covered

        self.cfg, self.device, self.log = cfg, device, log
        self.labeller = copy.deepcopy(model).eval()  # the starting model, never trained
        r = cfg.replay
        self.covered = ({int(z) for s in new_samples for z in s.graph.numbers.tolist()}
                        if r.skip_covered else set())
        self.pool = None
        if r.file:
            self.pool = [a for a in read_frames(r.file)
                         if not mostly_covered(a.numbers, self.covered)]
        else:
            get, known = model_lattice_constant(self.labeller, device), {}

            def lattice(sym: str) -> float:  # fitted once per metal, then reused every epoch
                if sym not in known:
                    known[sym] = get(sym)
                return known[sym]

            self.lattice = lattice
        self.dropped = 0

    def _label(self, structures, source) -> list[Sample]:
        data = self.cfg.data
        samples, dropped = label_with_model(self.labeller, structures, self.device, source,
                                            data.max_force, self.cfg.training.neighbor_backend)
        self.dropped += dropped
        return samples

    def samples(self, epoch: int) -> list[Sample]:
        """The replay frames of ``epoch`` (0-based; every epoch's are epoch 0's unless
        replay.resample)."""
        from .replay import generate_replay_structures

        r = self.cfg.replay
        seed = [r.seed, epoch] if r.resample else [r.seed]
        out: list[Sample] = []
        if self.pool is not None:  # in a seeded order until `frames` are kept (or none left)
            order = np.random.default_rng(seed).permutation(len(self.pool))
            for start in range(0, len(order), r.frames):
                if len(out) >= r.frames:
                    break
                chunk = [self.pool[k] for k in order[start : start + r.frames]]
                out += self._label(chunk, r.file)
        else:  # generated: more candidates than needed, then the first `frames` kept
            for rnd in range(20):
                want = r.frames - len(out)
                if want <= 0:
                    break
                structures = generate_replay_structures(
                    self.labeller.config.species, want + want // 4 + 4, self.lattice,
                    covered=self.covered, rattle=r.rattle, seed=[*seed, rnd])
                out += self._label(structures, "replay")
        out = out[: r.frames]
        for s in out:
            s.weight = float(r.weight)
        return out

    def describe(self, samples: list[Sample]) -> str:
        r, data = self.cfg.replay, self.cfg.data
        kinds: dict[str, int] = {}
        for s in samples:
            kind = str(s.info.get("replay", "file")).split("/")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        skipped = ", ".join(chemical_symbols[z] for z in sorted(self.covered)) or "none"
        counts = ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        dropped = (f"; {self.dropped} candidates dropped, |F| > {data.max_force} eV/Å"
                   if self.dropped else "")
        every = "new ones every epoch" if r.resample else "the same every epoch"
        return (f"replay: {len(samples)} structures from {r.file or 'generated recipes'} labelled "
                f"by the starting model, {every}, loss weight {r.weight:g} ({counts}{dropped}); "
                f"structures made mostly of the new data's elements ({skipped}) left out")
