"""Neighbour lists for periodic, partially periodic and non-periodic structures.

Every backend has the same signature::

    fn(positions, cell, pbc, cutoff, system_idx=None) -> (edge_index, shifts)

Conventions (shared by the whole package):

* ``positions``: float tensor ``[n_atoms, 3]`` in Å (float32 or float64).
* ``cell``: ``[n_systems, 3, 3]`` with the lattice vectors as *rows* (as in ASE);
  ``[3, 3]`` (or ``None`` for molecules) is accepted and broadcast to all systems.
* ``pbc``: bool ``[n_systems, 3]`` (``[3]`` or ``None`` = non-periodic also accepted).
* ``system_idx``: long ``[n_atoms]``, the structure each atom belongs to
  (``None`` = a single system).
* ``edge_index``: long ``[2, n_edges]``; row 0 is the centre atom ``i``, row 1 the
  neighbour ``j``. ``shifts``: long ``[n_edges, 3]`` integer cell shifts such that
  ``r_ij = positions[j] + shifts @ cell[system] - positions[i]`` and
  ``|r_ij| < cutoff`` (strict). Shifts refer to the positions *as passed in*
  (they need not be wrapped into the cell). Both directions ``i->j`` and ``j->i``
  are present, edges never cross systems, ``(i, i, 0)`` is never present but an
  atom's own periodic images ``(i, i, S != 0)`` are. No shift is ever applied
  along a non-periodic direction, whose cell vector may be zero.
* Edges are sorted lexicographically by ``(i, j, shift)`` (:func:`sort_edges`),
  so all backends return identical tensors; outputs live on the positions' device.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

EdgeList = tuple[Tensor, Tensor]
NeighborFn = Callable[..., EdgeList]

__all__ = [
    "NEIGHBOR_BACKENDS", "NeighborBackend", "VerletNeighborList", "brute_force_neighbor_list",
    "edge_vectors", "get_neighbor_backend", "matscipy_neighbor_list", "neighbor_list",
    "sort_edges", "torch_cell_list",
]


# --------------------------------------------------------------------------- helpers
def _empty(device: torch.device) -> EdgeList:
    return (torch.zeros(2, 0, dtype=torch.long, device=device),
            torch.zeros(0, 3, dtype=torch.long, device=device))


def _prepare(positions: Tensor, cell: Tensor | None, pbc: Tensor | None, cutoff: float,
             system_idx: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate inputs and bring them to batched form (never modifies the inputs).

    Returns:
        ``(positions [N,3] detached, cell [S,3,3] in positions' dtype, pbc bool [S,3],
        system_idx long [N])``.
    """
    if not isinstance(positions, Tensor) or positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError("positions must be a tensor of shape [n_atoms, 3]")
    if not float(cutoff) > 0:
        raise ValueError(f"cutoff must be > 0, got {cutoff}")
    pos = positions.detach()
    dev, dtype, n = pos.device, pos.dtype if pos.is_floating_point() else torch.float64, len(pos)
    pos = pos.to(dtype)
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("positions contain NaN or inf")
    if system_idx is None:
        system_idx = torch.zeros(n, dtype=torch.long, device=dev)
    system_idx = system_idx.to(device=dev, dtype=torch.long)
    if system_idx.shape != (n,):
        raise ValueError(f"system_idx must have shape [{n}], got {tuple(system_idx.shape)}")
    n_sys = int(system_idx.max()) + 1 if n else 1
    if cell is None:
        cell = torch.zeros(3, 3)
    cell = torch.as_tensor(cell).to(device=dev, dtype=dtype)
    cell = cell.reshape(-1, 3, 3)
    pbc = torch.zeros(3, dtype=torch.bool) if pbc is None else torch.as_tensor(pbc)
    pbc = pbc.to(device=dev, dtype=torch.bool).reshape(-1, 3)
    n_sys = max(n_sys, cell.shape[0], pbc.shape[0])
    if cell.shape[0] == 1:
        cell = cell.expand(n_sys, 3, 3)
    if pbc.shape[0] == 1:
        pbc = pbc.expand(n_sys, 3)
    if cell.shape[0] != n_sys or pbc.shape[0] != n_sys:
        raise ValueError(f"cell/pbc have {cell.shape[0]}/{pbc.shape[0]} systems, "
                         f"system_idx needs {n_sys}")
    if n and int(system_idx.min()) < 0:
        raise ValueError("system_idx must be non-negative")
    if not bool(torch.isfinite(cell).all()):
        raise ValueError("cell contains NaN or inf")
    # Periodic lattice vectors must be non-zero and linearly independent, otherwise the
    # set of images is infinite within any cutoff.
    zero = (cell.norm(dim=-1) == 0) & pbc
    if bool(zero.any()):
        s, d = (int(v) for v in zero.nonzero()[0])
        raise ValueError(f"system {s}: cell vector {d} is zero but pbc[{d}] is True")
    sv = torch.linalg.svdvals((cell * pbc[..., None]).double())  # descending
    k = pbc.sum(1)
    kth = sv.gather(1, (k - 1).clamp(min=0)[:, None])[:, 0]
    bad = (k > 0) & (kth <= 1e-8 * sv[:, 0])
    if bool(bad.any()):
        s = int(bad.nonzero()[0, 0])
        raise ValueError(f"system {s}: periodic cell vectors are (nearly) linearly dependent "
                         "(zero-volume periodic cell)")
    return pos, cell, pbc, system_idx


def _effective_cell(cell: Tensor, pbc: Tensor) -> Tensor:
    """Full-rank float64 cells: periodic rows kept, non-periodic rows replaced by
    orthonormal vectors spanning the complement of the periodic ones.

    Fractional coordinates along periodic directions are then well defined even for
    slabs/wires/molecules whose non-periodic cell vectors are zero or tilted. Shifts are
    only ever non-zero along periodic rows, so ``shift @ cell == shift @ eff_cell``.
    """
    masked = (cell * pbc[..., None]).double()
    vh = torch.linalg.svd(masked).Vh  # rows beyond rank span the null space
    # Non-periodic direction number r (in order) takes null-space row k + r.
    rank = torch.argsort(torch.argsort((~pbc).long(), dim=1, stable=True), dim=1)
    repl = vh.gather(1, rank[..., None].expand(-1, -1, 3))
    return torch.where(pbc[..., None], cell.double(), repl)


def sort_edges(edge_index: Tensor, shifts: Tensor) -> EdgeList:
    """Sort edges lexicographically by ``(i, j, shift_x, shift_y, shift_z)``."""
    if edge_index.shape[1] == 0:
        return edge_index, shifts
    keys = [edge_index[0], edge_index[1], shifts[:, 0], shifts[:, 1], shifts[:, 2]]
    los = [int(k.min()) for k in keys]
    spans = [int(k.max()) - lo + 1 for k, lo in zip(keys, los, strict=True)]
    if float(np.prod(spans, dtype=np.float64)) < 2.0**62:
        # Common case: pack all keys into one int64 for a single (fast) sort.
        packed = torch.zeros_like(keys[0])
        for k, lo, span in zip(keys, los, spans, strict=True):
            packed = packed * span + (k - lo)
        order = torch.argsort(packed)
    else:  # stable sorts from least to most significant key
        order = torch.arange(edge_index.shape[1], device=edge_index.device)
        for key in reversed(keys):
            order = order[torch.sort(key[order], stable=True).indices]
    return edge_index.index_select(1, order), shifts.index_select(0, order)


def edge_vectors(positions: Tensor, cell: Tensor | None, edge_index: Tensor, shifts: Tensor,
                 system_idx: Tensor | None = None) -> Tensor:
    """``r_ij = positions[j] + shifts @ cell[system] - positions[i]`` (differentiable)."""
    i, j = edge_index
    rel = positions.index_select(0, j) - positions.index_select(0, i)
    if cell is None or shifts.numel() == 0:
        return rel
    cell = cell.to(positions.dtype).reshape(-1, 3, 3)
    if cell.shape[0] == 1 or system_idx is None:
        offset = shifts.to(positions.dtype) @ cell[0]
    else:
        offset = torch.einsum("ek,ekl->el", shifts.to(positions.dtype), cell[system_idx[i]])
    return rel + offset


def _finalize(pos: Tensor, cell: Tensor, sys_idx: Tensor, cutoff: float, i: Tensor, j: Tensor,
              shifts: Tensor, exact: bool = True) -> EdgeList:
    """Apply the exact strict-cutoff test in the caller's dtype and sort.

    Backends pre-select candidates with a slightly larger radius; re-testing with the same
    formula callers use guarantees ``|r_ij| < cutoff`` holds bit-for-bit downstream.
    ``exact=False`` returns the candidates as they are (within the cutoff plus a round-off
    margin, unsorted): for callers that test distances themselves (D3's pair lists, with
    10^4 pairs per atom, spent 70 % of their neighbour-list time here).
    """
    edge_index = torch.stack([i, j])
    if not exact:
        return edge_index, shifts
    r = edge_vectors(pos, cell, edge_index, shifts, sys_idx)
    keep = torch.nonzero(torch.linalg.norm(r, dim=-1) < cutoff)[:, 0]
    return sort_edges(edge_index.index_select(1, keep), shifts.index_select(0, keep))


def _margin(pos: Tensor, cutoff: float) -> float:
    """Pre-selection slack covering round-off of the caller's dtype."""
    scale = 2.0 * float(pos.abs().max()) + cutoff if len(pos) else cutoff
    return 1e-6 * cutoff + 64.0 * torch.finfo(pos.dtype).eps * scale


# Above this many bins (and 8 per atom), a structure is mostly empty space and
# matscipy_neighbor_list hands it to the sparse torch cell list; matscipy keeps ~4 bytes
# per bin of its dense grid (measured), so this bounds its grid to ~16 MB.
SPARSE_BINS = 1 << 22


def _dense_bins(cell: np.ndarray, rc: float) -> float:
    """Bins of edge >= rc of a dense grid over ``cell`` (heights between opposite faces)."""
    vol = abs(np.linalg.det(cell))
    heights = [vol / np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3]))
               for d in range(3)]
    return float(np.prod([max(1.0, np.floor(h / rc)) for h in heights]))


# --------------------------------------------------------------------------- backends
def matscipy_neighbor_list(positions: Tensor, cell: Tensor | None, pbc: Tensor | None,
                           cutoff: float, system_idx: Tensor | None = None,
                           exact: bool = True) -> EdgeList:
    """CPU neighbour list using ``matscipy.neighbours.neighbour_list`` (loops over systems).

    matscipy needs a non-degenerate cell that contains atoms along non-periodic directions,
    so each non-periodic cell vector is replaced by a bounding-box vector orthogonal to the
    periodic ones and the (copied) positions are translated inside that box.
    """
    from matscipy.neighbours import neighbour_list as _ms_nl

    pos, cell, pbc, sys_idx = _prepare(positions, cell, pbc, cutoff, system_idx)
    eff = _effective_cell(cell, pbc).cpu().numpy()
    pos_np, pbc_np, sys_np = pos.double().cpu().numpy(), pbc.cpu().numpy(), sys_idx.cpu().numpy()
    rc = cutoff + _margin(pos, cutoff)
    out_i, out_j, out_s = [], [], []
    for s in range(len(eff)):
        atoms = np.flatnonzero(sys_np == s)
        if len(atoms) == 0:
            continue
        p, c = pos_np[atoms].copy(), eff[s].copy()
        for d in np.flatnonzero(~pbc_np[s]):
            u = c[d]  # unit vector orthogonal to periodic rows and other replacements
            proj = p @ u
            c[d] = u * (proj.max() - proj.min() + 2 * rc + 1.0)
            p -= (proj.min() - rc) * u
        if _dense_bins(c, rc) > max(SPARSE_BINS, 8 * len(atoms)):
            # Mostly empty space: matscipy's bins would fill it (a CO molecule in a periodic
            # 3000 Å box took 0.8 GB); the torch cell list only stores occupied bins.
            ei, shift = torch_cell_list(pos[atoms], cell[s], pbc[s], cutoff)
            i, j, shift = ei[0].cpu().numpy(), ei[1].cpu().numpy(), shift.cpu().numpy()
        else:
            i, j, shift = _ms_nl("ijS", positions=p, cell=c, pbc=pbc_np[s], cutoff=rc)
        out_i.append(atoms[i]), out_j.append(atoms[j]), out_s.append(shift)
    if not out_i:
        return _empty(positions.device)
    dev = pos.device
    i, j, shift = (torch.as_tensor(np.concatenate(x), dtype=torch.long, device=dev)
                   for x in (out_i, out_j, out_s))
    return _finalize(pos, cell, sys_idx, cutoff, i, j, shift.reshape(-1, 3), exact)


def torch_cell_list(positions: Tensor, cell: Tensor | None, pbc: Tensor | None, cutoff: float,
                    system_idx: Tensor | None = None, exact: bool = True) -> EdgeList:
    """Vectorised O(N) cell list in pure torch over a whole batch (CPU or CUDA).

    Algorithm: wrap atoms into their cell along periodic directions (remembering the
    integer wrap so shifts refer to the original positions); create the periodic images
    ("ghosts") that lie within ``cutoff`` of the cell, in fractional units per periodic
    direction; hash all ghosts into cubic Cartesian bins of edge ``>= cutoff`` keyed by
    (system, bin); for each real atom gather ghosts from the 27 surrounding bins with
    ``searchsorted`` + ``repeat_interleave``, and keep pairs within the cutoff. Sparse
    hashing keeps memory O(N) even for molecules spread over a huge empty volume.
    """
    pos, cell, pbc, sys_idx = _prepare(positions, cell, pbc, cutoff, system_idx)
    n, dev = len(pos), pos.device
    if n == 0:
        return _empty(dev)
    rc = cutoff + _margin(pos, cutoff)
    eff = _effective_cell(cell, pbc)
    inv = torch.linalg.inv(eff)
    pos64 = pos.double()
    frac = torch.einsum("ni,nij->nj", pos64, inv[sys_idx])
    wrap = torch.where(pbc[sys_idx], torch.floor(frac), torch.zeros_like(frac))
    frac_w = frac - wrap
    pos_w = pos64 - torch.einsum("nk,nkl->nl", wrap, eff[sys_idx])
    # |column d of inv| = 1/height of the cell along d: fractional reach of the cutoff.
    reach = rc * inv.norm(dim=1) + 1e-9  # [S, 3]
    n_rep = torch.where(pbc, torch.ceil(reach), torch.zeros_like(reach)).long()

    # Enumerate all candidate images per atom (vectorised over batch, varying n_rep).
    dims = 2 * n_rep + 1
    per_atom = dims.prod(1)[sys_idx]
    atom_g = torch.repeat_interleave(torch.arange(n, device=dev), per_atom)
    local = torch.arange(len(atom_g), device=dev) - (torch.cumsum(per_atom, 0) - per_atom)[atom_g]
    sys_g = sys_idx[atom_g]
    dg = dims[sys_g]
    img = torch.stack([local // (dg[:, 1] * dg[:, 2]), (local // dg[:, 2]) % dg[:, 1],
                       local % dg[:, 2]], 1) - n_rep[sys_g]
    fg = frac_w[atom_g] + img
    rg = reach[sys_g]
    keep = (((fg > -rg) & (fg < 1 + rg)) | ~pbc[sys_g]).all(1)
    atom_g, sys_g, img = atom_g[keep], sys_g[keep], img[keep]
    gpos = pos_w[atom_g] + torch.einsum("gk,gkl->gl", img.double(), eff[sys_g])

    # Hash ghosts into per-system bins of edge rc.
    n_sys = len(cell)
    lo = torch.full((n_sys, 3), float("inf"), dtype=torch.float64, device=dev)
    hi = torch.full((n_sys, 3), float("-inf"), dtype=torch.float64, device=dev)
    lo = lo.scatter_reduce(0, sys_g[:, None].expand(-1, 3), gpos, "amin")
    hi = hi.scatter_reduce(0, sys_g[:, None].expand(-1, 3), gpos, "amax")
    lo, hi = torch.nan_to_num(lo, posinf=0.0), torch.nan_to_num(hi, neginf=0.0)
    # Bins of edge rc, wider where a system spans more than 2^16 of them (a molecule in a
    # periodic box of 10^6 Å) so the packed keys below (2^48 per system at most) cannot
    # overflow int64 in a batch; wider bins are still exact, only less selective.
    width = torch.clamp((hi - lo) / 2**16, min=rc)
    nb = (torch.floor((hi - lo) / width).long() + 1).clamp(min=1)
    sys_off = torch.cumsum(nb.prod(1), 0) - nb.prod(1)

    def bin_key(b: Tensor, s: Tensor) -> Tensor:
        return sys_off[s] + (b[:, 0] * nb[s, 1] + b[:, 1]) * nb[s, 2] + b[:, 2]

    gbin = torch.floor((gpos - lo[sys_g]) / width[sys_g]).long().clamp(min=0)
    gbin = torch.minimum(gbin, nb[sys_g] - 1)
    gkey = bin_key(gbin, sys_g)
    order = torch.argsort(gkey)
    # Keep ghosts in bin order so candidate slots index them directly (saves a gather).
    atom_g, img, gpos, gkey = atom_g[order], img[order], gpos[order], gkey[order]
    uniq, counts = torch.unique_consecutive(gkey, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts

    # Query the 27 neighbouring bins of every real atom.
    cbin = torch.floor((pos_w - lo[sys_idx]) / width[sys_idx]).long().clamp(min=0)
    cbin = torch.minimum(cbin, nb[sys_idx] - 1)
    offs = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), device=dev)
    qbin = (cbin[:, None, :] + offs[None]).reshape(-1, 3)
    qsys = sys_idx.repeat_interleave(27)
    valid = ((qbin >= 0) & (qbin < nb[qsys])).all(1)
    qkey = bin_key(qbin, qsys)
    pos_in = torch.searchsorted(uniq, qkey).clamp(max=len(uniq) - 1)
    found = valid & (uniq[pos_in] == qkey)
    cnt = torch.where(found, counts[pos_in], torch.zeros_like(pos_in))
    centre = torch.arange(n, device=dev).repeat_interleave(27).repeat_interleave(cnt)
    first = torch.repeat_interleave(starts[pos_in] - (torch.cumsum(cnt, 0) - cnt), cnt)
    slot = first + torch.arange(len(first), device=dev)

    # Coarse float64 test, drop the (i, i, 0) self pair, then map to original positions.
    # Per-coordinate 1-D gathers are ~2x faster on CPU than gathering [n, 3] rows, and
    # this is the hot loop (~6x more candidates than edges).
    d2 = torch.zeros(len(slot), dtype=torch.float64, device=dev)
    for g, c in zip(gpos.T.contiguous(), pos_w.T.contiguous(), strict=True):
        diff = g.index_select(0, slot) - c.index_select(0, centre)
        d2 += diff * diff
    ok = torch.nonzero(d2 < rc * rc)[:, 0]
    slot, centre = slot.index_select(0, ok), centre.index_select(0, ok)
    j, sh = atom_g.index_select(0, slot), img.index_select(0, slot)
    ok = torch.nonzero((j != centre) | (sh != 0).any(1))[:, 0]
    centre, j, sh = centre.index_select(0, ok), j.index_select(0, ok), sh.index_select(0, ok)
    shifts = sh - wrap.long().index_select(0, j) + wrap.long().index_select(0, centre)
    return _finalize(pos, cell, sys_idx, cutoff, centre, j, shifts, exact)


def brute_force_neighbor_list(positions: Tensor, cell: Tensor | None, pbc: Tensor | None,
                              cutoff: float, system_idx: Tensor | None = None,
                              exact: bool = True) -> EdgeList:
    """O(N^2 x images) reference: test every pair against every shift that could matter.

    For unwrapped positions, a shift ``S`` can only give ``|r_ij| < cutoff`` if
    ``S_d`` lies within ``(frac_i - frac_j)_d +- cutoff/height_d``; all such shifts are
    enumerated from the per-system range of fractional coordinates.
    """
    pos, cell, pbc, sys_idx = _prepare(positions, cell, pbc, cutoff, system_idx)
    eff = _effective_cell(cell, pbc)
    inv = torch.linalg.inv(eff)
    rc = cutoff + _margin(pos, cutoff)
    out_i, out_j, out_s = [], [], []
    for s in range(len(cell)):
        atoms = torch.nonzero(sys_idx == s)[:, 0]
        if len(atoms) == 0:
            continue
        p = pos[atoms].double()
        f = p @ inv[s]
        reach = rc * inv[s].norm(dim=0)
        span = f.max(0).values - f.min(0).values + reach
        n_max = torch.where(pbc[s], torch.ceil(span), torch.zeros_like(span)).long().tolist()
        grid = [torch.arange(-m, m + 1, device=pos.device) for m in n_max]
        all_s = torch.cartesian_prod(*grid).reshape(-1, 3)
        chunk = max(1, 2_000_000 // (len(atoms) ** 2))
        for c0 in range(0, len(all_s), chunk):
            sh = all_s[c0:c0 + chunk]
            r = p[None, None, :] + (sh.double() @ eff[s])[:, None, None] - p[None, :, None]
            hit = ((r**2).sum(-1) < rc * rc).nonzero()  # (shift, i, j)
            hit = hit[~((hit[:, 1] == hit[:, 2]) & (sh[hit[:, 0]] == 0).all(1))]
            out_i.append(atoms[hit[:, 1]]), out_j.append(atoms[hit[:, 2]])
            out_s.append(sh[hit[:, 0]])
    if not out_i:
        return _empty(pos.device)
    return _finalize(pos, cell, sys_idx, cutoff, torch.cat(out_i), torch.cat(out_j),
                     torch.cat(out_s), exact)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class NeighborBackend:
    """A named neighbour-list implementation with the common signature."""

    name: str
    fn: NeighborFn
    supports_cuda: bool
    description: str


NEIGHBOR_BACKENDS: dict[str, NeighborBackend] = {
    "matscipy": NeighborBackend("matscipy", matscipy_neighbor_list, False,
                                "matscipy C cell list, CPU; loops over systems"),
    "torch": NeighborBackend("torch", torch_cell_list, True,
                             "vectorised pure-torch cell list over the whole batch"),
    "brute": NeighborBackend("brute", brute_force_neighbor_list, True,
                             "O(N^2) reference over all relevant image shifts"),
}


def get_neighbor_backend(name: str, device: torch.device | str | None = None) -> NeighborBackend:
    """Look up a backend; ``"auto"`` picks matscipy on CPU and torch on CUDA."""
    if name == "auto":
        name = "torch" if torch.device(device or "cpu").type == "cuda" else "matscipy"
    if name not in NEIGHBOR_BACKENDS:
        raise ValueError(f"unknown neighbour backend {name!r}; valid: "
                         f"{sorted(NEIGHBOR_BACKENDS) + ['auto']}")
    return NEIGHBOR_BACKENDS[name]


def neighbor_list(positions: Tensor, cell: Tensor | None, pbc: Tensor | None, cutoff: float,
                  system_idx: Tensor | None = None, backend: str = "matscipy",
                  exact: bool = True) -> EdgeList:
    """Compute a neighbour list with the named backend (see module docstring; ``exact=False``
    skips the strict re-test and the sort, see ``_finalize``)."""
    fn = get_neighbor_backend(backend, positions.device).fn
    return fn(positions, cell, pbc, cutoff, system_idx, exact=exact)


class VerletNeighborList:
    """Neighbour list with a Verlet skin, rebuilt only when needed.

    The list is built with radius ``cutoff + skin`` and reused until some atom moved by
    more than ``skin / 2`` since the last build (then no pair can have crossed into the
    cutoff unseen), or the cell, pbc, atom count or ``system_idx`` changed. Displacements
    are measured on the positions passed in, so pass UNWRAPPED positions (wrapping an
    atom back into the cell would look like a huge jump and force a rebuild; returned
    shifts refer to the passed positions anyway).

    The returned list is a SUPERSET of the exact ``cutoff`` list (it may contain pairs up
    to ``cutoff + skin``); the model must mask edges beyond ``cutoff``, which its smooth
    envelope does.
    """

    def __init__(self, cutoff: float, skin: float, backend: str = "matscipy") -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.cutoff, self.skin, self.backend = float(cutoff), float(skin), backend
        self.n_builds = 0
        self._ref: tuple[Tensor, ...] | None = None
        self._edges: EdgeList | None = None

    def _needs_rebuild(self, pos: Tensor, cell: Tensor, pbc: Tensor, sys_idx: Tensor) -> bool:
        if self._ref is None:
            return True
        rpos, rcell, rpbc, rsys = self._ref
        if (pos.shape != rpos.shape or pos.device != rpos.device or cell.shape != rcell.shape
                or pbc.shape != rpbc.shape):
            return True
        if not (torch.equal(cell, rcell) and torch.equal(pbc, rpbc) and torch.equal(sys_idx, rsys)):
            return True
        return len(pos) > 0 and bool((pos - rpos).norm(dim=1).max() > 0.5 * self.skin)

    def update(self, positions: Tensor, cell: Tensor | None, pbc: Tensor | None,
               system_idx: Tensor | None = None) -> EdgeList:
        """Return the ``cutoff + skin`` edge list, rebuilding it only if necessary."""
        pos, cell_b, pbc_b, sys_idx = _prepare(positions, cell, pbc, self.cutoff, system_idx)
        if self._needs_rebuild(pos, cell_b, pbc_b, sys_idx):
            self._edges = neighbor_list(pos, cell_b, pbc_b, self.cutoff + self.skin, sys_idx,
                                        backend=self.backend)
            self._ref = (pos.clone(), cell_b.clone(), pbc_b.clone(), sys_idx.clone())
            self.n_builds += 1
        assert self._edges is not None
        return self._edges
