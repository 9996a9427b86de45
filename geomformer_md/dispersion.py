"""DFT-D3(BJ) dispersion (Grimme et al. 2010, 2011), added to a potential's energies,
forces and stress, as ``mace_mp(dispersion=True)`` does for MACE.

The D3 model itself comes from tad-dftd3 (pure torch, autodiff; the reference C6 table,
the covalent and r4/r2 radii, the reference-weighting, the BJ damping and the functional
parameters of s-dftd3's data base). tad-dftd3 works on all pairs of a finite set of atoms,
so this module feeds it what periodic cells need: pairs from our neighbour list (periodic
images along periodic directions only, so slabs and molecules are handled as such), one
pair term per edge, and forces and stress from one autograd call with a symmetric strain,
as in potential.py. Results equal tad-dftd3's on molecules (tests/test_dispersion.py).

Only the two-body term: the Axilrod-Teller-Muto three-body term (s-dftd3's default s9=1)
is left out, as in MACE's D3 and VASP's IVDW=12; its triples within 40 bohr cost far more
than the rest.
"""

from __future__ import annotations

import torch
from ase import units

from .data.graph import AtomGraph
from .data.neighbors import neighbor_list

DISPERSION_METHODS = ("d3bj",)
# s-dftd3's (and tad-dftd3's) default real-space cutoffs, bohr
DISP2_CUTOFF_BOHR = 60.0
CN_CUTOFF_BOHR = 40.0


def _tad():
    try:
        import tad_dftd3
        import tad_mctc
    except ImportError:
        raise ImportError(
            "dispersion='d3bj' needs the tad-dftd3 package: pip install 'geomformer-md[d3]' "
            "(or pip install tad-dftd3)"
        ) from None
    return tad_dftd3, tad_mctc


class D3Dispersion:
    """Two-body DFT-D3 dispersion with Becke-Johnson damping for one functional.

    Args:
        method: "d3bj".
        xc: the functional whose D3(BJ) parameters to use (s-dftd3's data base, e.g.
            "pbe": s6 1, s8 0.7875, a1 0.4289, a2 4.4407). The shipped potentials
            learned SevenNet-0, trained on PBE(+U) data (MPtrj): "pbe".
        cutoff: Å, two-body cutoff; default 60 bohr (31.75 Å), s-dftd3's. MACE uses
            40 bohr (21.2 Å): 3.4x fewer pairs, energies a few meV/atom less bound.
        cn_cutoff: Å, cutoff of the coordination numbers; default 40 bohr (21.2 Å).
        neighbor_backend: "auto" (matscipy on CPU, torch on GPU) or a backend name.
    """

    def __init__(
        self,
        method: str = "d3bj",
        xc: str = "pbe",
        cutoff: float | None = None,
        cn_cutoff: float | None = None,
        neighbor_backend: str = "auto",
    ) -> None:
        if method not in DISPERSION_METHODS:
            raise ValueError(f"dispersion must be one of {list(DISPERSION_METHODS)} or None, "
                             f"got {method!r}")
        d3, mctc = _tad()
        try:
            param = d3.param.get_functional_params(xc, damping="bj", dtype=torch.float64)
        except (KeyError, ValueError):
            raise ValueError(f"dispersion_xc: no D3(BJ) parameters for functional {xc!r} "
                             "in tad-dftd3's data base") from None
        bohr = units.Bohr
        self.cutoff = DISP2_CUTOFF_BOHR * bohr if cutoff is None else float(cutoff)
        self.cn_cutoff = CN_CUTOFF_BOHR * bohr if cn_cutoff is None else float(cn_cutoff)
        for name, value in (("dispersion_cutoff", self.cutoff), ("cn_cutoff", self.cn_cutoff)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 Å, got {value}")
        self.method, self.xc, self.neighbor_backend = method, xc, neighbor_backend
        self.param = {k: v for k, v in param.items() if k in ("s6", "s8", "a1", "a2")}
        self._d3, self._mctc = d3, mctc
        self._tables: dict[torch.device, tuple] = {}

    def __repr__(self) -> str:
        return (f"D3Dispersion({self.method!r}, xc={self.xc!r}, cutoff={self.cutoff:.2f} Å, "
                f"cn_cutoff={self.cn_cutoff:.2f} Å)")

    def _data(self, device: torch.device):
        """tad-dftd3's reference tables on ``device`` (float64, bohr), made once."""
        if device not in self._tables:
            dd = {"dtype": torch.float64, "device": device}
            self._tables[device] = (
                self._d3.reference.Reference(**dd),
                self._mctc.data.radii.COV_D3(**dd),
                self._d3.data.R4R2(**dd),
                {k: v.to(device) for k, v in self.param.items()},
            )
        return self._tables[device]

    def __call__(
        self, graph: AtomGraph, forces: bool = True, stress: bool = True
    ) -> dict[str, torch.Tensor]:
        """Dispersion of every structure of ``graph`` (its own edges are not used).

        Returns the same dict as :class:`~geomformer_md.potential.Potential`:
        ``energy`` [n_systems], ``energies`` [n_atoms] (eV), ``forces`` [n_atoms, 3]
        (eV/Å), ``stress`` [n_systems, 3, 3] (eV/Å³, ASE sign) and ``has_stress``
        (3-D periodic cells only; 0 elsewhere), all float64 and detached.
        """
        dev = graph.device
        ref, rcov_z, r4r2_z, param = self._data(dev)
        numbers = graph.numbers
        if int(numbers.max()) >= ref.c6.shape[0]:
            raise ValueError(f"D3 has no parameters for atomic numbers >= {ref.c6.shape[0]}")
        pos = graph.positions.detach().to(torch.float64)
        cell = graph.cell.to(torch.float64)
        s = graph.system_idx
        backend = self.neighbor_backend
        if backend == "auto":
            backend = "torch" if dev.type == "cuda" else "matscipy"
        ei, shifts = neighbor_list(pos, cell, graph.pbc, max(self.cutoff, self.cn_cutoff), s,
                                   backend=backend)
        ei, shifts = ei.to(dev), shifts.to(dev)

        with torch.enable_grad():
            strain = torch.zeros(graph.n_systems, 3, 3, dtype=pos.dtype, device=dev)
            pos = pos.requires_grad_(forces)
            strain.requires_grad_(stress)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            pos_s = pos + torch.einsum("ni,nij->nj", pos, sym[s])
            cell_s = cell + cell @ sym
            i, j = ei
            offset = torch.einsum("ek,ekl->el", shifts.to(pos.dtype), cell_s[s[i]])
            r = (pos_s[j] - pos_s[i] + offset).norm(dim=-1) / units.Bohr  # [E] bohr
            energies = self._pair_energies(numbers, i, j, r, ref, rcov_z, r4r2_z, param)
            energies = energies * units.Hartree  # [n] eV
            energy = torch.zeros(graph.n_systems, dtype=pos.dtype, device=dev)
            energy = energy.index_add(0, s, energies)
            inputs = ([pos] if forces else []) + ([strain] if stress else [])
            grads = torch.autograd.grad(energy.sum(), inputs, allow_unused=True) if inputs else []
        grads = [torch.zeros_like(x) if g is None else g
                 for g, x in zip(grads, inputs, strict=True)]
        out = {"energy": energy.detach(), "energies": energies.detach()}
        if forces:
            out["forces"] = -grads[0]
        if stress:
            vol = torch.linalg.det(cell).abs()
            periodic = graph.pbc.all(dim=1) & (vol > 1e-8)
            safe = torch.where(periodic, vol, torch.ones_like(vol)).view(-1, 1, 1)
            out["stress"] = torch.where(periodic.view(-1, 1, 1), grads[-1] / safe, 0.0)
            out["has_stress"] = periodic
        return out

    def _pair_energies(self, numbers, i, j, r, ref, rcov_z, r4r2_z, param) -> torch.Tensor:
        """Per-atom two-body D3(BJ) energies (Hartree) from directed pairs i -> j at
        distances r (bohr); each pair is in the list both ways, hence the 1/2."""
        d3 = self._d3
        n = numbers.shape[0]
        bohr = units.Bohr
        # Coordination numbers (tad-mctc's counting function, D3 covalent radii).
        near = r <= self.cn_cutoff / bohr
        count = self._mctc.ncoord.count.exp_count(r[near], rcov_z[numbers[i[near]]]
                                                  + rcov_z[numbers[j[near]]])
        cn = torch.zeros(n, dtype=r.dtype, device=r.device).index_add(0, i[near], count)
        weights = d3.model.weight_references(numbers, cn, ref)  # [n, 7]
        # C6_ij = sum_ab w_ia w_jb C6ref[Z_i, Z_j, a, b], factored over the elements present
        # as in tad-dftd3's atomic_c6 (no [n, n] table: pairs can be many more than atoms).
        pair = r <= self.cutoff / bohr
        i, j, r = i[pair], j[pair], r[pair]
        elements, slot = torch.unique(numbers, return_inverse=True)
        rc6 = ref.c6[elements.unsqueeze(-1), numbers]  # [U, n, 7, 7]: C6ref[u, Z_j]
        g = torch.einsum("ujab,jb->uja", rc6, weights)  # [U, n, 7]
        c6 = (weights[i] * g[slot[i], j]).sum(-1)  # [E]
        qq = 3.0 * r4r2_z[numbers[i]] * r4r2_z[numbers[j]]
        damp = d3.damping.rational_damping
        pair_e = -(param["s6"] * c6 * damp(6, r, qq, param)
                   + param["s8"] * c6 * qq * damp(8, r, qq, param))
        return 0.5 * torch.zeros(n, dtype=r.dtype, device=r.device).index_add(0, i, pair_e)


def make_dispersion(dispersion, xc: str = "pbe", cutoff: float | None = None,
                    neighbor_backend: str = "auto") -> D3Dispersion | None:
    """None, a method name ("d3bj") or a ready :class:`D3Dispersion` -> the term or None."""
    if dispersion is None or dispersion is False:
        return None
    if isinstance(dispersion, D3Dispersion):
        return dispersion
    if isinstance(dispersion, str):
        return D3Dispersion(dispersion.lower(), xc=xc, cutoff=cutoff,
                            neighbor_backend=neighbor_backend)
    raise ValueError(f"dispersion must be one of {list(DISPERSION_METHODS)} or None, "
                     f"got {dispersion!r}")


def add_results(out: dict[str, torch.Tensor], extra: dict[str, torch.Tensor]) -> dict:
    """Potential output + dispersion output, in the potential's dtype and device."""
    res = dict(out)
    for key in ("energy", "energies", "forces", "stress"):
        if key in res and key in extra:
            res[key] = res[key] + extra[key].to(res[key].dtype)
    return res
