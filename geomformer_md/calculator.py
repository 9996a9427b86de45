"""The ASE calculator: convert, call the potential, convert units, store results."""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import torch
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
)
from ase.stress import full_3x3_to_voigt_6_stress

from .committee import (
    Committee,
    CommitteePotential,
    as_committee,
    committee_with_dtype,
    make_potential,
    resolve_uncertainty_threshold,
)
from .data.contacts import CloseContactWarning, contact_from_edges
from .data.graph import atoms_to_graph, check_overlaps, edge_vectors, trim_edges
from .data.neighbors import VerletNeighborList
from .dispersion import add_results, make_dispersion
from .io.registry import load_potential
from .memory import check_call_memory
from .model import GeoMFormer
from .potential import Potential, model_with_dtype


def resolve_model(model) -> GeoMFormer | Committee:
    """A shipped name, a model-file path, a GeoMFormer, a Potential, a Committee, or a list
    of any of these (a committee) -> GeoMFormer or Committee."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_potential(model)  # a shipped name first, else a file path
    if isinstance(model, (Potential, CommitteePotential)):
        return model.model
    if isinstance(model, (GeoMFormer, Committee)):
        return model
    if isinstance(model, (list, tuple)):
        return as_committee(model)
    raise TypeError(f"model must be a potential name, a path, a GeoMFormer or a list of them "
                    f"(a committee), not {type(model).__name__}")


def resolve_device(device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"auto"`` or a torch.device -> a usable
    torch.device; anything else, or a device this machine lacks, is a one-line ValueError."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {device!r} requested but torch sees no CUDA device")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {device!r} requested but torch sees {n} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but torch sees no MPS device")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return dev


def private_model(model, dtype, device) -> GeoMFormer:
    """The network a calculator or evaluator runs: ``model`` resolved, cast to
    ``dtype``, moved to ``device``, in eval mode.

    A module handed in by the caller is copied first: building a calculator never
    moves, casts, freezes or switches to eval mode the caller's own module (one that
    is still training, or shared with a calculator on another device; found on a
    GPU, where a CUDA calculator moved the model of a CPU calculator under it).
    """
    given = resolve_model(model)
    # already a new module when the dtype changes
    cast = committee_with_dtype if isinstance(given, Committee) else model_with_dtype
    gm = cast(given, dtype)
    if gm is given and isinstance(model, (GeoMFormer, Potential, Committee, CommitteePotential)):
        gm = copy.deepcopy(gm)
    return gm.to(device).eval()


class GeoMFormerCalculator(Calculator):
    """ASE calculator for a GeoMFormer potential.

    Args:
        model: a shipped potential name (None = the default), a model file path,
            or a GeoMFormer object.
        device: "cpu", "cuda", "cuda:1", ... ("auto" = cuda when available).
        dtype: "float32" or "float64"; None keeps the model's own.
        neighbor_backend: "auto" (matscipy on CPU, torch cell list on GPU),
            "matscipy", "torch" or "brute".
        skin: Verlet skin in Å. With skin > 0 the neighbour list (built with
            cutoff + skin) is reused until an atom has moved more than skin/2;
            worth it in MD. 0 rebuilds at every call.
        direct_forces: use the direct (non-conservative) force head; only for
            models trained with one, never for NVE.
        uncertainty_threshold: with a committee, warn (once per calculator) when the
            largest per-atom force uncertainty passes this value in eV/Å; None never warns;
            "auto" (the default): the threshold calibrated for the committee and stored in
            its file, else committee.DEFAULT_FORCE_STD_THRESHOLD (0.05).
        dispersion: None, or "d3bj" to add two-body DFT-D3(BJ) dispersion (needs
            tad-dftd3: ``pip install 'geomformer-md[d3]'``); see
            :class:`~geomformer_md.dispersion.D3Dispersion`.
        dispersion_xc: the functional of the D3(BJ) parameters ("pbe": the shipped
            potentials' labeller, SevenNet-0, learned PBE data).
        dispersion_cutoff: Å, D3 two-body cutoff (default 60 bohr = 31.75 Å).

    Results: energy and free_energy (eV), energies (eV per atom), forces (eV/Å),
    and stress (eV/Å^3, Voigt, ASE sign) for cells periodic in all three directions.
    With a committee (a committee potential's name or file, or a list of models) these
    are the members' mean, and ``energy_std`` (eV), ``energies_std`` (eV per atom) and
    ``forces_std`` (eV/Å per atom) give their spread (committee.py).

    Close contacts: when two atoms are closer than ``CLOSE_CONTACT_RATIO`` (0.6) of their
    covalent bond length (`geomformer_md.data.contacts`), the structure is far outside any
    training data; the calculator then issues a `CloseContactWarning`, once per structure
    (the same atoms in a relaxation or MD run warn once). ``last_contact`` holds the closest
    pair of the last call.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    committee_properties = ["energy_std", "energies_std", "forces_std"]

    def __init__(
        self,
        model=None,
        device: str = "cpu",
        dtype: str | None = None,
        neighbor_backend: str = "auto",
        skin: float = 0.0,
        direct_forces: bool = False,
        uncertainty_threshold: float | str | None = "auto",
        dispersion: str | None = None,
        dispersion_xc: str = "pbe",
        dispersion_cutoff: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.dispersion = make_dispersion(dispersion, dispersion_xc, dispersion_cutoff)
        self.device = resolve_device(device)
        self.model = private_model(model, dtype, self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)  # forces need grads of inputs, not of weights
        self.potential = make_potential(self.model, direct_forces=direct_forces)
        self.is_committee = isinstance(self.model, Committee)
        if self.is_committee:
            self.implemented_properties = [*self.implemented_properties, *self.committee_properties]
        self.uncertainty_threshold = resolve_uncertainty_threshold(self.model,
                                                                   uncertainty_threshold)
        self.max_forces_std = float("nan") if not self.is_committee else 0.0  # largest seen
        self._warned_uncertain = False
        if neighbor_backend == "auto":
            neighbor_backend = "torch" if self.device.type == "cuda" else "matscipy"
        self.neighbor_backend = neighbor_backend
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.skin = skin
        self._verlet = (
            VerletNeighborList(self.model.config.cutoff, skin, backend=neighbor_backend)
            if skin > 0
            else None
        )
        self.last_contact = None  # data.contacts.Contact of the last calculation
        self._warned = set()  # structures (atomic numbers) already warned about

    def _graph(self, atoms):
        cutoff = self.model.config.cutoff
        if self._verlet is None:
            return atoms_to_graph(atoms, cutoff, self.neighbor_backend, device=self.device)
        graph = atoms_to_graph(atoms, cutoff, backend=None, device=self.device)
        ei, sh = self._verlet.update(graph.positions, graph.cell, graph.pbc, graph.system_idx)
        graph = trim_edges(graph.with_edges(ei.to(self.device), sh.to(self.device)), cutoff)
        check_overlaps(graph, label_systems=False)
        return graph

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        periodic = bool(np.all(self.atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                f"stress is only defined for cells periodic in all 3 directions; this structure "
                f"has pbc={self.atoms.pbc.tolist()}"
            )
        graph = self._graph(self.atoms)
        d3_bytes = self.dispersion.estimate_bytes(graph) if self.dispersion is not None else 0
        check_call_memory(self.potential, graph, extra_bytes=d3_bytes)  # one line, up front
        self._check_contacts(graph)
        with torch.enable_grad():
            out = self.potential(graph, forces=True, stress=periodic)
        if self.dispersion is not None:
            out = add_results(out, self.dispersion(graph, forces=True, stress=periodic))
        e = float(out["energy"].detach()[0])
        self.results = {
            "energy": e,
            "free_energy": e,
            "energies": out["energies"].detach().cpu().numpy().astype(np.float64),
            "forces": out["forces"].detach().cpu().numpy().astype(np.float64),
        }
        if periodic:
            s = out["stress"].detach()[0].cpu().numpy().astype(np.float64)
            self.results["stress"] = full_3x3_to_voigt_6_stress(s)
        if self.is_committee:
            self._store_uncertainty(out)

    def _store_uncertainty(self, out: dict) -> None:
        fs = out["forces_std"].detach().cpu().numpy().astype(np.float64)
        self.results["energy_std"] = float(out["energy_std"][0])
        self.results["energies_std"] = out["energies_std"].detach().cpu().numpy().astype(np.float64)
        self.results["forces_std"] = fs
        worst = float(fs.max()) if fs.size else 0.0
        self.max_forces_std = max(self.max_forces_std, worst)
        limit = self.uncertainty_threshold
        if limit is None or self._warned_uncertain:
            return
        ratio, k = limit.excess(self.atoms.numbers, fs)
        if ratio > 1.0:
            self._warned_uncertain = True
            warnings.warn(
                f"committee force uncertainty {fs[k]:.4g} eV/Å on atom {k} "
                f"({self.atoms.get_chemical_symbols()[k]}) exceeds "
                f"{limit.describe(self.atoms.numbers[k])}: this structure is outside what the "
                f"potential was trained on; treat its energies and forces with caution (warned "
                f"once per calculator)", UncertaintyWarning, stacklevel=3)

    def _check_contacts(self, graph) -> None:
        """Warn once per structure about atoms far inside their bond length (see class doc)."""
        contact = contact_from_edges(
            graph.numbers, graph.edge_index, edge_vectors(graph).norm(dim=-1)
        )
        self.last_contact = contact
        key = self.atoms.numbers.tobytes()
        if contact.close and key not in self._warned:
            self._warned.add(key)
            warnings.warn(CloseContactWarning(contact.warning()), stacklevel=2)


class UncertaintyWarning(UserWarning):
    """A committee disagrees more than its threshold: the structure is outside the training data."""
