"""Committees: K GeoMFormer models behind one potential, their spread as an uncertainty.

The prediction is the members' mean; the uncertainty is how far they disagree:

    energy_std  [n_systems]  eV    std over members of each structure's total energy
    energies_std [n_atoms]   eV    std over members of each per-atom energy
    forces_std  [n_atoms]    eV/Å  sqrt(sum over x, y, z of the std of each force component):
                                   the root-mean-square distance of the members' force
                                   vectors from their mean force on that atom

All stds are over the K members with ddof = 0. A committee of models that agree where
they were trained and disagree elsewhere flags structures outside the training data;
docs/committee.md says how the shipped committees were built and how well the flag
catches large force errors.

Cost: the members share the neighbour list and graph and run one after the other. A
``torch.func.vmap`` over stacked member weights was measured at 6x slower than this loop
on CPU (torch 2.13: the scatter and index operations of the attention have no batching
rules and fall back to a per-member loop inside vmap), so the loop is the batched form
we ship; benchmarks/bench_committee.py prints the cost ratio to one member.
"""

from __future__ import annotations

import numpy as np
import torch

from .data.graph import AtomGraph
from .model import GeoMFormer
from .potential import Potential, model_with_dtype

# Force uncertainty (max over atoms of forces_std, eV/Å) above which workflows warn and
# flag a result as uncertain. Chosen on held-out frames of the shipped committee so that
# the flag catches most frames with force errors above 0.3 eV/Å (docs/committee.md).
DEFAULT_FORCE_STD_THRESHOLD = 0.05


class Committee(torch.nn.Module):
    """K GeoMFormer energy models with the same elements, cutoff and dtype.

    ``config`` is the first member's (every member shares species, cutoff and dtype,
    which is all the code around a model reads from it).
    """

    def __init__(self, members, metadata: dict | None = None) -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        for k, m in enumerate(members):
            if not isinstance(m, GeoMFormer):
                raise TypeError(f"committee member {k} is a {type(m).__name__}, not a GeoMFormer")
        first = members[0].config
        for k, m in enumerate(members[1:], start=1):
            c = m.config
            if (set(c.species), c.cutoff, c.dtype) != (set(first.species), first.cutoff,
                                                       first.dtype):
                raise ValueError(
                    f"committee member {k} differs from member 0 in elements, cutoff or dtype "
                    f"({sorted(c.species)}, {c.cutoff} Å, {c.dtype} against "
                    f"{sorted(first.species)}, {first.cutoff} Å, {first.dtype})")
            if not c.energy_head:
                raise ValueError(f"committee member {k} has no energy head")
        self.members = torch.nn.ModuleList(members)
        self.metadata = dict(metadata or {})

    @property
    def config(self):
        return self.members[0].config

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    def __len__(self) -> int:
        return len(self.members)

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        return self.members[0].species_index(numbers)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ForceStdLimit(float):
    """A force-uncertainty threshold, eV/Å: the float itself for every atom, or, where
    ``per_element`` ({atomic number: eV/Å}) names an element, that element's own. A committee
    calibrated per element (its members disagree more on O and H than on Ag, even in domain)
    stores both; a user's number is one value for all."""

    def __new__(cls, value: float, per_element: dict | None = None):
        obj = super().__new__(cls, value)
        obj.per_element = {int(z): float(t) for z, t in (per_element or {}).items()}
        return obj

    def limits(self, numbers) -> np.ndarray:
        return np.array([self.per_element.get(int(z), float(self)) for z in numbers])

    def excess(self, numbers, forces_std) -> tuple[float, int]:
        """(largest forces_std / limit over atoms, that atom); (0, -1) for no atoms."""
        fs = np.asarray(forces_std, dtype=float)
        if fs.size == 0:
            return 0.0, -1
        ratio = fs / self.limits(numbers)
        k = int(ratio.argmax())
        return float(ratio[k]), k

    def describe(self, z: int) -> str:
        from ase.data import chemical_symbols

        if int(z) in self.per_element:
            return f"{self.per_element[int(z)]:.4g} eV/Å (the limit for {chemical_symbols[z]})"
        return f"{float(self):g} eV/Å"


def resolve_uncertainty_threshold(model, value) -> ForceStdLimit | None:
    """The force-uncertainty threshold (eV/Å) for ``model``: ``value`` itself (> 0), None (never
    warn), or "auto": the threshold calibrated for this committee and stored in its file
    (``metadata["force_std_threshold"]``, and per element
    ``metadata["force_std_threshold_per_element"]``, see docs/committee.md), else
    DEFAULT_FORCE_STD_THRESHOLD."""
    from ase.data import atomic_numbers

    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"uncertainty_threshold must be a number > 0 (eV/Å), None or "
                             f"'auto', got {value!r}")
        meta = model.metadata if isinstance(model, Committee) else {}
        stored = meta.get("force_std_threshold")
        per = {atomic_numbers[el]: t
               for el, t in (meta.get("force_std_threshold_per_element") or {}).items()}
        return ForceStdLimit(float(stored) if stored else DEFAULT_FORCE_STD_THRESHOLD, per)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"uncertainty_threshold must be > 0 eV/Å, None or 'auto', got {value!r}")
    return ForceStdLimit(value)


def committee_with_dtype(committee: Committee, dtype) -> Committee:
    """The committee itself if every member already has ``dtype``, else a converted copy."""
    members = [model_with_dtype(m, dtype) for m in committee.members]
    if all(a is b for a, b in zip(members, committee.members, strict=True)):
        return committee
    return Committee(members, committee.metadata).train(committee.training)


class CommitteePotential(torch.nn.Module):
    """Mean energies, forces and stress of a Committee, and their spread.

    Returns what Potential returns (the members' mean) plus ``energy_std`` [n_systems],
    ``energies_std`` [n_atoms], ``forces_std`` [n_atoms] (see the module docstring) and,
    with ``members=True``, the stacked member results under ``member_energy``
    [K, n_systems] and ``member_forces`` [K, n_atoms, 3].
    """

    def __init__(self, committee: Committee) -> None:
        super().__init__()
        self.committee = committee
        self.potentials = torch.nn.ModuleList(Potential(m) for m in committee.members)

    @property
    def model(self) -> Committee:
        return self.committee

    @property
    def cutoff(self) -> float:
        return self.committee.cutoff

    @property
    def dtype(self) -> torch.dtype:
        return self.committee.config.torch_dtype

    def forward(
        self,
        graph: AtomGraph,
        forces: bool = True,
        stress: bool = True,
        create_graph: bool = False,
        members: bool = False,
    ) -> dict[str, torch.Tensor]:
        outs = [p(graph, forces=forces, stress=stress, create_graph=create_graph)
                for p in self.potentials]
        res = {}
        for key in outs[0]:
            stacked = torch.stack([o[key] for o in outs])
            if key == "has_stress":
                res[key] = stacked[0]
                continue
            res[key] = stacked.mean(0)
            if key == "energy":
                res["energy_std"] = stacked.std(0, correction=0)
                if members:
                    res["member_energy"] = stacked
            elif key == "energies":
                res["energies_std"] = stacked.std(0, correction=0)
            elif key == "forces":
                res["forces_std"] = (stacked - res[key]).pow(2).sum(-1).mean(0).sqrt()
                if members:
                    res["member_forces"] = stacked
        return res


def make_potential(model, direct_forces: bool = False):
    """Potential for a GeoMFormer, CommitteePotential for a Committee."""
    if isinstance(model, Committee):
        if direct_forces:
            raise ValueError("direct_forces is not available for a committee")
        return CommitteePotential(model)
    return Potential(model, direct_forces=direct_forces)


def as_committee(models, metadata: dict | None = None) -> Committee:
    """A Committee from GeoMFormer objects, model files or shipped names (a list)."""
    from .io.registry import load_potential

    loaded = []
    for m in models:
        if isinstance(m, GeoMFormer):
            loaded.append(m)
            continue
        one = load_potential(m)
        if isinstance(one, Committee):  # members of a committee join as members
            loaded.extend(one.members)
        else:
            loaded.append(one)
    return Committee(loaded, metadata)


def max_force_std(results: dict) -> float:
    """Largest per-atom force uncertainty in a results dict (eV/Å); nan without one."""
    fs = results.get("forces_std")
    if fs is None or len(fs) == 0:
        return float("nan")
    return float(max(fs))



class UncertaintyMonitor:
    """Largest per-atom force std a calculator reports over a workflow (nan without a
    committee); call it after each evaluation (an optimizer or MD observer)."""

    def __init__(self, calc, start: float = float("nan"),
                 start_ratio: float | None = None) -> None:
        self.calc = calc
        self.max = float(start)
        limit = getattr(calc, "uncertainty_threshold", DEFAULT_FORCE_STD_THRESHOLD)
        self.threshold = (ForceStdLimit(DEFAULT_FORCE_STD_THRESHOLD) if limit is None
                          else limit if isinstance(limit, ForceStdLimit) else ForceStdLimit(limit))
        # largest forces_std / threshold seen (per element where the threshold is); a run
        # resumed from a file without it falls back on its stored largest std
        self.max_ratio = (float(start_ratio) if start_ratio is not None
                          else self.max / float(self.threshold))

    def __call__(self, *args) -> None:
        fs = (getattr(self.calc, "results", None) or {}).get("forces_std")
        if fs is not None and len(fs):
            worst = float(max(fs))
            self.max = worst if self.max != self.max else max(self.max, worst)  # nan: first
            atoms = getattr(self.calc, "atoms", None)
            ok = atoms is not None and len(atoms) == len(fs)
            numbers = atoms.numbers if ok else [0] * len(fs)  # [0]: no element, the default
            ratio, _ = self.threshold.excess(numbers, fs)
            self.max_ratio = ratio if self.max_ratio != self.max_ratio else max(self.max_ratio,
                                                                                 ratio)

    @property
    def uncertain(self) -> bool:
        return bool(self.max_ratio > 1.0)  # False for nan

    def fields(self) -> dict:
        return {"max_force_std": self.max, "uncertain": self.uncertain}
