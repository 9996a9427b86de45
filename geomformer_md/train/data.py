"""Labelled structures for training: reading, checking, splitting, batching."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.data import chemical_symbols

from ..data.graph import AtomGraph, atoms_to_graph, collate


@dataclass
class Sample:
    """One labelled structure with its neighbour graph (built once, positions are fixed)."""

    graph: AtomGraph
    energy: float  # eV
    forces: torch.Tensor  # [n, 3] eV/Å
    stress: torch.Tensor | None  # [3, 3] eV/Å^3 (ASE sign), only for 3-D periodic frames
    info: dict
    energy_weight: float = 1.0  # multiplier of this structure's energy term in the training loss
    weight: float = 1.0  # multiplier of all its loss terms (energy, forces, stress): replay frames
    frame: int = -1  # index in the file it came from (for messages)
    forces_weight: float = 1.0  # multiplier of its atoms' force terms

    @property
    def n_atoms(self) -> int:
        return self.graph.n_atoms


@dataclass
class Batch:
    graph: AtomGraph
    energy: torch.Tensor  # [S]
    n_atoms: torch.Tensor  # [S]
    forces: torch.Tensor  # [n, 3]
    stress: torch.Tensor  # [S, 3, 3] (zeros where absent)
    has_stress: torch.Tensor  # [S] bool
    energy_weight: torch.Tensor  # [S] multipliers of the energy terms in the training loss
    weight: torch.Tensor  # [S] multipliers of all loss terms of each structure
    forces_weight: torch.Tensor  # [n] multipliers of each atom's force terms

    def to(self, device) -> Batch:
        fields = (self.energy, self.n_atoms, self.forces, self.stress, self.has_stress,
                  self.energy_weight, self.weight, self.forces_weight)
        return Batch(self.graph.to(device), *(t.to(device) for t in fields))


_OPENERS = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}


def _read_all(path: Path) -> list:
    """ase.io.read(path, ":"), but a compressed file is decompressed once, into memory.

    ASE's extxyz reader indexes frames by seeking, and every seek in an .xz stream
    decompresses from the start again: 5.5k frames took over 10 minutes; from memory, seconds.
    """
    from ase.io import read
    from ase.io.formats import filetype

    opener = _OPENERS.get(path.suffix.lower())
    if opener is None:
        return read(path, index=":")
    with opener(path, "rt") as fd:
        text = io.StringIO(fd.read())  # ASE seeks in a file object too
    return read(text, index=":", format=filetype(path.with_suffix("").name, read=False))


def read_frames(path: str | Path) -> list:
    """All frames of any ASE-readable file; a clear error if it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data file not found: {path}")
    try:
        frames = _read_all(path)
    except Exception as exc:
        raise ValueError(f"cannot read {path} with ASE: {type(exc).__name__}: {exc}") from None
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise ValueError(f"{path} holds no structures")
    return frames


def labels_of(atoms, where: str):
    """(energy, forces, stress or None) of a labelled frame; ValueError naming what is missing."""
    results = getattr(atoms.calc, "results", None) or {}
    energy = results.get("energy", results.get("free_energy"))
    forces = results.get("forces")
    missing = [k for k, v in (("energy", energy), ("forces", forces)) if v is None]
    if missing:
        raise ValueError(f"{where} has no {' and no '.join(missing)} label(s); training needs both")
    energy = float(energy)
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"{where}: forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    stress = results.get("stress")
    if stress is not None:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (6,):
            from ase.stress import voigt_6_to_full_3x3_stress

            stress = voigt_6_to_full_3x3_stress(stress)
        if not atoms.pbc.all():
            stress = None  # stress of a slab or molecule is not defined; ignore it
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)) or (
        stress is not None and not np.all(np.isfinite(stress))
    ):
        raise ValueError(f"{where} has NaN or inf labels")
    return energy, forces, stress


def make_samples(frames, cutoff: float, species, source: str, max_force: float, backend="matscipy"):
    """Frames -> Samples, refusing unknown elements and bad labels; drops |F| > max_force."""
    known = set(int(z) for z in species)
    samples, dropped = [], 0
    for k, atoms in enumerate(frames):
        where = f"{source} frame {k}"
        unknown = sorted(set(atoms.get_atomic_numbers().tolist()) - known)
        if unknown:
            raise ValueError(
                f"{where} contains element(s) {[chemical_symbols[z] for z in unknown]} outside the "
                f"model's species {[chemical_symbols[z] for z in sorted(known)]}"
            )
        energy, forces, stress = labels_of(atoms, where)
        if np.abs(forces).max(initial=0.0) > max_force:
            dropped += 1
            continue
        try:
            graph = atoms_to_graph(atoms, cutoff, backend=backend)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        samples.append(
            Sample(
                graph=graph,
                energy=energy,
                forces=torch.as_tensor(forces, dtype=torch.float64),
                stress=None if stress is None else torch.as_tensor(stress, dtype=torch.float64),
                info=dict(atoms.info),
                frame=k,
            )
        )
    return samples, dropped


def collate_samples(samples: list[Sample]) -> Batch:
    return Batch(
        graph=collate([s.graph for s in samples]),
        energy=torch.tensor([s.energy for s in samples], dtype=torch.float64),
        n_atoms=torch.tensor([s.n_atoms for s in samples], dtype=torch.float64),
        forces=torch.cat([s.forces for s in samples]),
        stress=torch.stack([s.stress if s.stress is not None
                            else torch.zeros(3, 3, dtype=torch.float64) for s in samples]),
        has_stress=torch.tensor([s.stress is not None for s in samples]),
        energy_weight=torch.tensor([s.energy_weight for s in samples], dtype=torch.float64),
        weight=torch.tensor([s.weight for s in samples], dtype=torch.float64),
        forces_weight=torch.cat([torch.full((s.n_atoms,), s.forces_weight, dtype=torch.float64)
                                 for s in samples]),
    )


def weight_by_tag(samples: list[Sample], data) -> dict[str, int]:
    """Multiply the energy and force weights of frames by ``data.energy_weights`` /
    ``data.forces_weights`` of their ``info[data.weight_key]`` (e.g. ``kind``), as MACE's
    config_type_weights. Frames whose tag is not listed keep 1. Returns {tag: frames weighted}."""
    if data.weight_key is None:
        return {}
    counts: dict[str, int] = {}
    for s in samples:
        tag = str(s.info.get(data.weight_key))
        if tag in data.energy_weights or tag in data.forces_weights:
            s.energy_weight *= float(data.energy_weights.get(tag, 1.0))
            s.forces_weight *= float(data.forces_weights.get(tag, 1.0))
            counts[tag] = counts.get(tag, 0) + 1
    return counts


def weight_path_ends(samples: list[Sample], data) -> int:
    """Set ``energy_weight = data.path_end_weight`` on the last frame of each path.

    A path is the frames sharing ``info[data.path_key]`` (e.g. ``config_id``: one
    relaxation), in the order of ``info[data.path_step_key]``; with ``data.path_kinds``
    only paths whose ``info["kind"]`` is one of them count (relaxations, not MD runs).
    The end of a relaxation is the minimum that adsorption and surface energies are
    differences of; a model fitted to whole paths can be right on average and still
    too shallow there. Returns how many frames were weighted.
    """
    if data.path_key is None or data.path_end_weight == 1.0:
        return 0
    kinds = {str(k) for k in data.path_kinds}
    ends: dict[str, Sample] = {}
    for s in samples:
        name = s.info.get(data.path_key)
        if name is None or (kinds and str(s.info.get("kind")) not in kinds):
            continue
        step = s.info.get(data.path_step_key)
        if step is None:
            raise ValueError(f"a frame of path {name!r} has no info[{data.path_step_key!r}] "
                             "to order the path by (data.path_step_key)")
        best = ends.get(str(name))
        if best is None or float(step) > float(best.info[data.path_step_key]):
            ends[str(name)] = s
    for s in ends.values():
        s.energy_weight = float(data.path_end_weight)
    return len(ends)


def weight_by_size(samples: list[Sample], exponent: float) -> None:
    """Multiply each sample's energy weight by ``N**exponent / mean(N**exponent)``.

    The loss's energy term is the squared error of the energy per atom; with exponent 2
    it becomes the squared error of the total energy (normalised so the mean weight is 1),
    which weights the large cells that adsorption energies are computed in as much as
    their total-energy error matters there.
    """
    if exponent == 0 or not samples:
        return
    w = [float(s.n_atoms) ** exponent for s in samples]
    mean = sum(w) / len(w)
    for s, x in zip(samples, w, strict=True):
        s.energy_weight *= x / mean


def split_indices(frames, data) -> tuple[list[int], list[int], list[int]]:
    """Reproducible train/val/test indices from a :class:`DataConfig`.

    Frames sharing ``info[data.split_key]`` (e.g. one relaxation path) stay together,
    so the test set is not a near-copy of training frames. Frames whose
    ``info[holdout_key] == holdout_value`` always go to test; frames whose
    ``info[train_key] == train_value`` always go to train (e.g. the gas-phase
    molecules every adsorption energy is referenced to: a molecule seen only in test
    would make those references an extrapolation). ``holdout_value`` may be a list of
    values. The random test split's fraction is ``test_fraction_of(data)``.
    """
    from .config import test_fraction_of

    def values(value):
        return {str(v) for v in (value if isinstance(value, (list, tuple)) else [value])}

    def tagged(k, key, wanted):
        return key is not None and str(frames[k].info.get(key)) in wanted

    n = len(frames)
    held = [k for k in range(n) if tagged(k, data.holdout_key, values(data.holdout_value))]
    forced = [k for k in range(n) if tagged(k, data.train_key, values(data.train_value))]
    clash = set(held) & set(forced)
    if clash:
        raise ValueError(
            f"{len(clash)} frames are tagged both for the held-out test set "
            f"({data.holdout_key}={data.holdout_value}) and for training "
            f"({data.train_key}={data.train_value}); e.g. frame {min(clash)}"
        )
    fixed = set(held) | set(forced)
    pool = [k for k in range(n) if k not in fixed]
    groups: dict = {}
    for k in pool:
        key = frames[k].info.get(data.split_key, k) if data.split_key else k
        groups.setdefault(str(key), []).append(k)
    strata: dict = {}
    for name in sorted(groups):
        first = frames[groups[name][0]].info
        stratum = tuple(str(first.get(key)) for key in (data.stratify_keys or ()))
        strata.setdefault(stratum, []).append(name)
    rng = np.random.default_rng(data.split_seed)
    fractions = {"val": data.val_fraction, "test": test_fraction_of(data)}
    parts: dict = {"train": [], "val": [], "test": []}
    for stratum in sorted(strata):
        names = strata[stratum]
        rng.shuffle(names)
        n_frames = sum(len(groups[name]) for name in names)
        got = {"val": 0, "test": 0}
        for pos, name in enumerate(names):
            short = {s: f * n_frames - got[s] for s, f in fractions.items()
                     if f * n_frames > got[s]}
            if data.stratify_keys is None:  # one stratum: fill val, then test, then train
                dest = next(iter(short), "train")
            elif pos == 0 or not short:  # each stratum's first group stays in training
                dest = "train"
            else:  # where this stratum is furthest below its share (ties: the whole split)
                dest = max(short,
                           key=lambda s: (short[s], fractions[s] * len(pool) - len(parts[s])))
            parts[dest] += groups[name]
            if dest != "train":
                got[dest] += len(groups[name])
    train, val, test = parts["train"], parts["val"], parts["test"]
    return sorted(train + forced), sorted(val), sorted(test + held)


def composition_matrix(numbers, species) -> np.ndarray:
    """Counts [n_structures, n_species] of each species in each structure, from a list of
    atomic-number arrays."""
    index = {z: k for k, z in enumerate(species)}
    a = np.zeros((len(numbers), len(species)))
    for r, nums in enumerate(numbers):
        for z, c in zip(*np.unique(np.asarray(nums), return_counts=True), strict=True):
            a[r, index[int(z)]] = c
    return a


def offsets_from_counts(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-element constants e0 that best explain y ~ a @ e0 (least squares), with a the
    composition matrix. Elements absent from the data get 0. rcond keeps the fit stable
    when the compositions are nearly collinear (e.g. only bulk of one metal)."""
    present = a.sum(0) > 0
    e0 = np.zeros(a.shape[1])
    e0[present] = np.linalg.lstsq(a[:, present], y, rcond=None)[0]
    return e0


def fit_e0(samples: list[Sample], species, residual: np.ndarray | None = None) -> np.ndarray:
    """Per-element reference energies by least squares on (residual) total energies."""
    a = composition_matrix([s.graph.numbers.numpy() for s in samples], species)
    y = np.array([s.energy for s in samples]) if residual is None else residual
    return offsets_from_counts(a, y)


def describe(samples: list[Sample]) -> str:
    n_atoms = sum(s.n_atoms for s in samples)
    n_stress = sum(s.stress is not None for s in samples)
    return f"{len(samples)} structures, {n_atoms} atoms, {n_stress} with stress"
