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

import math

import torch
from ase import units

from .data.graph import AtomGraph, edge_vectors
from .data.neighbors import neighbor_list

DISPERSION_METHODS = ("d3bj",)
# s-dftd3's (and tad-dftd3's) default real-space cutoffs, bohr
DISP2_CUTOFF_BOHR = 60.0
CN_CUTOFF_BOHR = 40.0
EDGE_CHUNK = 1 << 17  # pairs per chunk: ~50 MB of autograd state at a time
# Peak bytes per pair (both directions) of a D3 call: the pair list and its conversions;
# measured ~90 on 500 Cu atoms (5.7 M pairs at 60 bohr), rounded up.
BYTES_PER_PAIR = 128


def _tad():
    try:
        import tad_dftd3
        import tad_mctc
    except ImportError:
        raise ImportError(
            "D3 dispersion needs the tad-dftd3 package: pip install 'geomformer-md[d3]' "
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

    def estimate_bytes(self, graph: AtomGraph) -> int:
        """Peak bytes of the pair list of the largest structure of ``graph``, from the
        density the graph's own (model) edges see: pairs ~ n * rho * 4/3 pi r^3, at most
        n^2 for a structure periodic in no direction (an upper bound for slabs)."""
        if graph.n_edges == 0:
            return 0
        sizes = graph.atoms_per_system()
        per_sys = torch.bincount(graph.system_idx[graph.edge_index[0]], minlength=len(sizes))
        r_model = float(edge_vectors(graph).norm(dim=-1).max().clamp(min=1.0))
        ball = 4.0 / 3.0 * math.pi
        rho = per_sys.double() / sizes.double().clamp(min=1) / (ball * r_model**3)
        rc = max(self.cutoff, self.cn_cutoff)
        pairs = sizes.double() * rho * ball * rc**3
        finite = ~graph.pbc.any(dim=1)
        pairs = torch.where(finite, torch.minimum(pairs, sizes.double() ** 2), pairs)
        return int(BYTES_PER_PAIR * float(pairs.max()))

    def __call__(
        self, graph: AtomGraph, forces: bool = True, stress: bool = True
    ) -> dict[str, torch.Tensor]:
        """Dispersion of every structure of ``graph`` (its own edges are not used).

        Returns the same dict as :class:`~geomformer_md.potential.Potential`:
        ``energy`` [n_systems], ``energies`` [n_atoms] (eV), ``forces`` [n_atoms, 3]
        (eV/Å), ``stress`` [n_systems, 3, 3] (eV/Å³, ASE sign) and ``has_stress``
        (3-D periodic cells only; 0 elsewhere), all float64 and detached.
        """
        ref = self._data(graph.device)[0]
        numbers = graph.numbers
        if int(numbers.max()) >= ref.c6.shape[0]:
            raise ValueError(f"D3 has no parameters for atomic numbers >= {ref.c6.shape[0]}")
        pos = graph.positions.detach().to(torch.float64)
        cell = graph.cell.detach().to(torch.float64)
        bounds = [0, *torch.cumsum(graph.atoms_per_system(), 0).tolist()]
        parts = [  # one structure at a time: its own pair list, 3x3 strain algebra
            self._system(numbers[a:b], pos[a:b], cell[k], graph.pbc[k], forces, stress)
            for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
        energies = torch.cat([p[0] for p in parts])
        out = {"energy": torch.stack([p[0].sum() for p in parts]), "energies": energies}
        if forces:
            out["forces"] = -torch.cat([p[1] for p in parts])
        if stress:
            vol = torch.linalg.det(cell).abs()
            periodic = graph.pbc.all(dim=1) & (vol > 1e-8)
            safe = torch.where(periodic, vol, torch.ones_like(vol)).view(-1, 1, 1)
            virial = torch.stack([p[2] for p in parts])
            out["stress"] = torch.where(periodic.view(-1, 1, 1), virial / safe, 0.0)
            out["has_stress"] = periodic
        return out

    def _system(self, numbers, pos, cell, pbc, forces: bool, stress: bool):
        """One structure: per-atom energies [n] (eV), dE/dpos [n, 3] (eV/Å) and
        dE/dstrain [3, 3] (eV), zeros where not asked."""
        dev = pos.device
        ref, rcov_z, r4r2_z, param = self._data(dev)
        backend = self.neighbor_backend
        if backend == "auto":
            backend = "torch" if dev.type == "cuda" else "matscipy"
        (i, j), shifts = neighbor_list(pos, cell, pbc, max(self.cutoff, self.cn_cutoff),
                                       backend=backend, exact=False)  # r is tested below
        # Each pair once (the list has i -> j and j -> i; an atom's own images +S and -S):
        # half the work, and each pair's energy goes half to i and half to j.
        shifts = shifts.to(dev)
        sx, sy, sz = shifts.sign().unbind(1)
        sign = torch.where(sx != 0, sx, torch.where(sy != 0, sy, sz))  # first non-zero of S
        once = torch.nonzero((i < j) | ((i == j) & (sign > 0)))[:, 0]
        i, j = i.to(dev)[once], j.to(dev)[once]
        offset = shifts[once].to(pos.dtype) @ cell  # [E, 3] Å, image offsets (unstrained)
        del shifts, sign, once, sx, sy, sz
        d3, n = self._d3, numbers.shape[0]
        to_bohr = 1.0 / units.Bohr
        strain = torch.zeros(3, 3, dtype=pos.dtype, device=dev)
        pos = pos.clone().requires_grad_(forces)
        strain.requires_grad_(stress)
        leaves = ([pos] if forces else []) + ([strain] if stress else [])
        acc = [torch.zeros_like(x) for x in leaves]  # dE/d(pos, strain), summed over chunks

        def distances(k: slice) -> torch.Tensor:
            """|r_ij| (bohr) of edges k under the symmetric strain (differentiable):
            positions and cell scale alike, so r_ij -> r_ij (1 + eps)."""
            ik, jk = i[k], j[k]
            rel = pos.index_select(0, jk) - pos.index_select(0, ik) + offset[k]
            rel = rel + rel @ (0.5 * (strain + strain.T))
            return rel.norm(dim=-1) * to_bohr

        def backward(value: torch.Tensor, extra=(), grad_outputs=None) -> list:
            """Gradients of value with respect to the leaves (added to acc) and extra."""
            wrt = leaves + list(extra)
            if not wrt:
                return []
            g = torch.autograd.grad(value, wrt, grad_outputs=grad_outputs, allow_unused=True)
            for a, x in zip(acc, g, strict=False):
                if x is not None:
                    a += x
            return [torch.zeros_like(x) if gx is None else gx
                    for gx, x in zip(g[len(leaves):], extra, strict=True)]

        # Chunks of pairs bound the memory: the 31.75 Å default cutoff gives ~10^4 pairs
        # per atom in a metal, and autograd keeps a few hundred bytes for each.
        chunks = [slice(a, a + EDGE_CHUNK) for a in range(0, i.shape[0], EDGE_CHUNK)]
        rcov = rcov_z[numbers]
        cn_cut, cut = self.cn_cutoff * to_bohr, self.cutoff * to_bohr
        count = self._mctc.ncoord.count.exp_count

        def cn_terms(k: slice, r: torch.Tensor) -> torch.Tensor:
            rc = rcov.index_select(0, i[k]) + rcov.index_select(0, j[k])
            return torch.where(r <= cn_cut, count(r, rc), 0.0)

        # 1. Coordination numbers (tad-mctc's counting function, D3 covalent radii).
        with torch.no_grad():
            cn = torch.zeros(n, dtype=pos.dtype, device=dev)
            for k in chunks:
                terms = cn_terms(k, distances(k))
                cn.index_add_(0, i[k], terms).index_add_(0, j[k], terms)  # both ends
        # 2. Reference weights and the per-atom half of C6 (tad-dftd3), as leaves:
        # C6_ij = sum_a w_ia g[Z_i, j, a], g[u, j, a] = sum_b C6ref[u, Z_j, a, b] w_jb,
        # factored over the elements present as tad-dftd3's atomic_c6 (no [n, n] table).
        grad = forces or stress
        elements, slot = torch.unique(numbers, return_inverse=True)
        with torch.enable_grad():
            cn_leaf = cn.requires_grad_(grad)
            weights = d3.model.weight_references(numbers, cn_leaf, ref)  # [n, 7]
            rc6 = ref.c6[elements.unsqueeze(-1), numbers]  # [U, n, 7, 7]
            g = torch.einsum("ujab,jb->uja", rc6, weights)  # [U, n, 7]
        w_leaf = weights.detach().requires_grad_(grad)
        g_leaf = g.detach().requires_grad_(grad)
        gw, gg = torch.zeros_like(w_leaf), torch.zeros_like(g_leaf)
        # 3. Pair energies with BJ damping, chunk by chunk, each with its backward.
        qq_z = 3.0 * r4r2_z[numbers]
        r4r2 = r4r2_z[numbers]
        damp = d3.damping.rational_damping
        energies = torch.zeros(n, dtype=pos.dtype, device=dev)
        for k in chunks:
            ik, jk = i[k], j[k]
            with torch.enable_grad():
                r = distances(k)
                c6 = (w_leaf.index_select(0, ik) * g_leaf[slot[ik], jk]).sum(-1)
                qq = qq_z.index_select(0, ik) * r4r2.index_select(0, jk)
                e = -(param["s6"] * c6 * damp(6, r, qq, param)
                      + param["s8"] * c6 * qq * damp(8, r, qq, param))
                e = torch.where(r <= cut, e, 0.0) * units.Hartree  # eV
            half = 0.5 * e.detach()
            energies.index_add_(0, ik, half).index_add_(0, jk, half)
            if grad:
                dw, dg = backward(e.sum(), (w_leaf, g_leaf))
                gw += dw
                gg += dg
        # 4. Through the weights to the coordination numbers, and on to the geometry.
        if grad:
            (gcn,) = torch.autograd.grad([weights, g], [cn_leaf], [gw, gg], allow_unused=True)
            if gcn is not None:
                for k in chunks:
                    with torch.enable_grad():
                        terms = cn_terms(k, distances(k))
                    backward(terms, grad_outputs=gcn.index_select(0, i[k])
                             + gcn.index_select(0, j[k]))
        grads = {"pos": torch.zeros_like(pos), "strain": torch.zeros_like(strain)}
        grads.update(zip(["pos"] * forces + ["strain"] * stress, acc, strict=True))
        return energies, grads["pos"].detach(), grads["strain"].detach()


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
