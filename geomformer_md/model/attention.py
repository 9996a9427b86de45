"""The four GeoMFormer attentions over a neighbour graph with smooth cutoff.

Attention weights (per head) over k in N(i) and the self edge (i, i):

    A_ij = m_ij exp(s_ij - c_i) / sum_k m_ik exp(s_ik - c_i)

m is the cutoff envelope (1 on the self edge), c_i a detached per-centre max.
An edge at r_c has weight 0 and slope 0, so forces are continuous when atoms
cross the cutoff; the self edge keeps the denominator >= exp(s_ii - c_i) > 0.

Shapes: n atoms, E edges (self edges included), d channels, H heads, dh = d/H.
Invariant features [n, d]; equivariant features [n, 3, d]. Every linear map that
touches the equivariant stream has no bias (a bias breaks equivariance).
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import NamedTuple

import torch
from torch import nn


class Edges(NamedTuple):
    """The edges of a contiguous range of centre atoms (all atoms, or one chunk of
    them; see geomformer.py). Self edges have u = 0 and constant rbf."""

    centre: torch.Tensor  # [E] long, i (receives the message), atom index
    neighbour: torch.Tensor  # [E] long, j, atom index
    weight: torch.Tensor  # [E] envelope m_ij (1 on self edges)
    rbf: torch.Tensor  # [E, K] radial basis psi_ij
    unit: torch.Tensor  # [E, 3] u_ij = r_ij / d_ij (0 on self edges)
    n_atoms: int  # centres in the range = rows of the outputs (all atoms if one range)
    score_cap: float = 0.0  # bound on attention scores, faded by the envelope (0 = raw)
    slot: torch.Tensor | None = None  # [E] long, i - first centre of the range; None = i

    @property
    def rows(self) -> torch.Tensor:
        """[E] output row of each edge's centre."""
        return self.centre if self.slot is None else self.slot


def gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """t[index] along dim 0. index_select, not t[index]: on CPU the backward of
    advanced indexing is an index_put_ with accumulate, several times slower than
    index_select's index_add_ (measured: gather + backward of [E, 3, 64] 1.7x faster).

    Inside :func:`recompute_gathers` the result remembers where it came from, so that
    the ops that save it for backward store (t, index) instead and gather again."""
    out = t.index_select(0, index)
    if _LEAN.active:
        out._gathered_from = (t, index)
    return out


class _Lean(threading.local):
    active = False
    tally = None  # callable(tensor) told of every tensor kept for backward (memory.py)


_LEAN = _Lean()  # per thread: BatchEvaluator runs one forward per worker thread


def _pack(t: torch.Tensor):
    """Saved tensors hook: an edge tensor gathered from node features (or a view of
    one) is stored as its recipe, ~E/n times smaller than the tensor itself."""
    base = t if t._base is None else t._base
    recipe = getattr(base, "_gathered_from", None)
    if recipe is None or t.numel() != base.numel() or not t.is_contiguous():
        if _LEAN.tally is not None:
            _LEAN.tally(t)
        return t
    return (*recipe, t.shape)


def _unpack(packed):
    if isinstance(packed, torch.Tensor):
        return packed
    src, index, shape = packed
    return src.index_select(0, index).view(shape)


@contextlib.contextmanager
def tally_saved(record):
    """Call ``record(t)`` for every tensor that forward passes inside keep for backward,
    also those kept inside :func:`recompute_gathers` (whose hook hides them from outer
    saved-tensor hooks)."""
    before = _LEAN.tally
    _LEAN.tally = record
    try:
        with torch.autograd.graph.saved_tensors_hooks(lambda t: record(t) or t, lambda t: t):
            yield
    finally:
        _LEAN.tally = before


@contextlib.contextmanager
def recompute_gathers():
    """Forward passes inside keep no gathered [E, ...] copies of node features for
    backward; the backward gathers them again (one index_select each).

    Why: such copies (queries, keys and values of every edge, in every layer) were
    ~45 % of the memory a force call keeps for its backward (measured), and a
    gather is one of the cheapest ops of the backward it serves, so the
    recomputation costs little time. Results are bitwise the same. For inference
    (one backward): the training step's double backward is not built this way.
    The recipe holds the node tensor itself, so code inside must not modify a node
    tensor in place after gathering from it (autograd's version check cannot see
    that here; tests/test_memory.py compares against the plain graph bit for bit).
    """
    before = _LEAN.active
    _LEAN.active = True
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _LEAN.active = before


def edge_softmax(scores: torch.Tensor, edges: Edges) -> torch.Tensor:
    """Envelope-weighted softmax of scores [E, H] over each centre's edges.

    With ``edges.score_cap = C > 0`` the scores are first bounded and faded with
    the envelope, s -> m C tanh(s / C). Why: with raw scores an edge about to
    leave the cutoff (m ~ 1e-6) but with a score 40 above the self edge's still
    takes all the attention, and hands it over within microns of r_c. The energy
    stays continuous but its slope does not stay finite in practice: a trained
    float32 model gave |F| = 1e9 eV/Å on an N/Ni(211) frame. Bounded, faded
    scores make every edge's weight at most m e^{C(1+m)} relative to the self
    edge, so the hand-over is spread over a few tenths of an Å.
    """
    i, m = edges.rows, edges.weight.unsqueeze(-1)
    n, h = edges.n_atoms, scores.shape[1]
    if edges.score_cap > 0:
        cap = edges.score_cap
        scores = m * cap * torch.tanh(scores / cap)
    # The max only stabilises exp(); edges with m = 0 are left out of it so a
    # large score beyond the cutoff cannot underflow the live ones.
    masked = scores.detach().masked_fill(m <= 0, float("-inf"))
    c = torch.full((n, h), float("-inf"), dtype=scores.dtype, device=scores.device)
    c = c.scatter_reduce(0, i.unsqueeze(-1).expand_as(masked), masked, "amax")
    w = m * torch.exp(scores - gather(c, i))
    denom = torch.zeros_like(c).index_add_(0, i, w)
    return w / gather(denom, i)


def weigh(attn: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-head weights attn [E, H] times t [E, d] or [E, 3, d] (heads are contiguous
    channel blocks of d), as a broadcast over a view: no [E, d] copy of the weights."""
    e, h = attn.shape
    if t.dim() == 2:
        return (attn.unsqueeze(-1) * t.view(e, h, -1)).view(t.shape)
    return (attn.view(e, 1, h, 1) * t.view(e, 3, h, -1)).view(t.shape)


class _IndexAdd(torch.autograd.Function):
    """base.index_add(0, rows, msg) (zeros for base=None), whose backward keeps only the
    index: autograd's own index_add keeps its whole [E, ...] source alive, only to read
    its shape (measured: 15 % of what a lean force call kept for backward)."""

    @staticmethod
    def forward(ctx, base, rows: torch.Tensor, msg: torch.Tensor, n: int) -> torch.Tensor:
        ctx.save_for_backward(rows)
        if base is None:
            return msg.new_zeros((n, *msg.shape[1:])).index_add_(0, rows, msg)
        return base.index_add(0, rows, msg)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        g_base = grad if ctx.needs_input_grad[0] else None
        g_msg = grad.index_select(0, rows) if ctx.needs_input_grad[2] else None
        return g_base, None, g_msg, None  # differentiable ops: a double backward still works


def index_add(base: torch.Tensor, index: torch.Tensor, msg: torch.Tensor) -> torch.Tensor:
    """base.index_add(0, index, msg), keeping less for backward inside recompute_gathers."""
    if _LEAN.active and torch.is_grad_enabled():
        return _IndexAdd.apply(base, index, msg, base.shape[0])
    return base.index_add(0, index, msg)


def scatter_sum(msg: torch.Tensor, edges: Edges) -> torch.Tensor:
    """sum over each centre's edges: msg [E, ...] -> [n_atoms, ...]."""
    if _LEAN.active and torch.is_grad_enabled():
        return _IndexAdd.apply(None, edges.rows, msg, edges.n_atoms)
    out = msg.new_zeros((edges.n_atoms, *msg.shape[1:]))
    return out.index_add_(0, edges.rows, msg)


def head_major(v: torch.Tensor, h: int) -> torch.Tensor:
    """[n, 3, d] -> [n, H * 3 dh], each head's (xyz, channel) block contiguous.

    A node-level copy (cheap) that makes the per-head sum over xyz and channels of
    the equivariant scores a contiguous last-dim reduction on the edges (1.6x faster
    forward + backward than summing [E, 3, H, dh] over dims (1, 3)).
    """
    n, _, d = v.shape
    return v.view(n, 3, h, d // h).transpose(1, 2).reshape(n, 3 * d)


def edge_scores(qk, edges: Edges, h: int, fuse: bool = True) -> torch.Tensor:
    """Per-head scores [E, n H] of n attentions on one range of edges, q_i . k_j / sqrt(c),
    with qk = [(q, k)] the node-level queries and keys of each attention from its
    ``project``, q, k [n, h * c] (heads contiguous).

    For invariant features c = dh; for head-major equivariant ones c = 3 dh, which is
    sum_{xyz, head channels} Q_i K_j / sqrt(3 dh). All attentions share one gather of
    queries, one of keys and one product; each run of attentions with the same c is one
    sum. On a GPU a training step is bound by the number of kernels (forward, forces and
    their backward), so this is 11 kernels in place of 21 per layer's forward. On the CPU
    the concatenations and strided sums cost more time than the calls they save (float64
    calculator +15 %), so ``fuse=False`` scores each attention on its own.
    """
    if not fuse:
        out = []
        for q, k in qk:
            p = gather(q, edges.centre) * gather(k, edges.neighbour)
            e, w = p.shape
            out.append(p.view(e, h, w // h).sum(-1) / math.sqrt(w // h))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]
    q = torch.cat([q for q, _ in qk], dim=1) if len(qk) > 1 else qk[0][0]
    k = torch.cat([k for _, k in qk], dim=1) if len(qk) > 1 else qk[0][1]
    p = gather(q, edges.centre) * gather(k, edges.neighbour)
    runs: list[list[int]] = []  # [width per head, attentions] of consecutive equal widths
    for q, _ in qk:
        c = q.shape[1] // h
        if runs and runs[-1][0] == c:
            runs[-1][1] += 1
        else:
            runs.append([c, 1])
    parts = p.split([c * h * n for c, n in runs], dim=1) if len(runs) > 1 else (p,)
    e = p.shape[0]
    s = [
        t.view(e, n * h, c).sum(-1) * (1.0 / math.sqrt(c))
        for t, (c, n) in zip(parts, runs, strict=True)
    ]
    return torch.cat(s, dim=1) if len(s) > 1 else s[0]


# Each attention is split up: ``project`` makes the node-level queries, keys and values
# once per layer (queries and keys first); for one range of centres (see
# GeoMFormer._chunks), ``edge_scores`` gives the per-edge, per-head scores of all of them
# and each attention's ``message`` its attention-weighted values per edge, [E, d] or
# [E, 3, d]. GeoMFormerBlock._attentions runs them, with one edge softmax (+ bias) over the
# scores of all four attentions and one scatter_sum of all their messages; ``out`` is
# applied after the ranges are joined.


class InvSelfAttention(nn.Module):
    """Invariant queries, keys and values: s_ij = q_i . k_j / sqrt(dh) + B_ij."""

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def project(self, x):
        return self.qkv(x).chunk(3, dim=-1)  # q, k, val [n, d]

    def message(self, nodes, edges: Edges, a, filt=None):
        val = gather(nodes[2], edges.neighbour)
        val = val if filt is None else val * filt  # distance-filtered values
        return weigh(a, val)


class InvCrossAttention(nn.Module):
    """Invariant queries; keys/values are inner products of equivariant features.

    k_j = <v_j W_K1, v_j W_K2> / sqrt(3), likewise the values. With edge values,
    the value also gets the projection u_ij . (v_j W_V3) of the neighbour's
    vectors on the bond, an invariant the plain form cannot see.
    """

    def __init__(self, d: int, h: int, edge_values: bool) -> None:
        super().__init__()
        self.h, self.d = h, d
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, (5 if edge_values else 4) * d, bias=False)
        self.out = nn.Linear(d, d)

    def project(self, x, v):
        d, p = self.d, self.kv(v)  # [n, 3, 4d or 5d]: K1, K2, V1, V2 (, V3)
        n = p.shape[0]
        pairs, vec = p.split(4 * d, dim=-1) if p.shape[-1] == 5 * d else (p, None)
        a, b = pairs.view(n, 3, 2, 2, d).unbind(3)  # (K1, V1), (K2, V2): [n, 3, 2, d]
        k, val = ((a * b).sum(1) * (1.0 / math.sqrt(3.0))).unbind(1)
        return self.q(x), k, val, vec  # vec [n, 3, d]: v_j W_V3

    def message(self, nodes, edges: Edges, a):
        (_, _, val, vec), j = nodes, edges.neighbour
        val = gather(val, j)
        if vec is not None:  # + u_ij . (v_j W_V3)
            val = val + (edges.unit.unsqueeze(-1) * gather(vec, j)).sum(1)
        return weigh(a, val)


class EquSelfAttention(nn.Module):
    """Equivariant Q, K, V [n, 3, d]; s_ij = sum_{xyz, head channels} Q_i K_j / sqrt(3 dh).

    With edge values, V_ij = V_j * f(psi_ij) + u_ij (x) (x_j W_u * g(psi_ij)),
    the PaiNN/TorchMD-Net style message that lets directions enter every layer.
    """

    def __init__(self, d: int, h: int, edge_values: bool) -> None:
        super().__init__()
        self.h = h
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.u = nn.Linear(d, d) if edge_values else None
        self.out = nn.Linear(d, d, bias=False)

    def project(self, v, x):
        q, k, val = self.qkv(v).chunk(3, dim=-1)
        u = self.u(x) if self.u is not None else None
        return head_major(q, self.h), head_major(k, self.h), val, u

    def message(self, nodes, edges: Edges, a, filt=None, gate=None):
        (_, _, val, u), j = nodes, edges.neighbour
        val = gather(val, j)
        if u is None:
            return weigh(a, val)
        # A_ij V_ij = (A_ij f_ij) V_j + u_ij (x) (A_ij g_ij x_j W_u): the weights are folded
        # into [E, d] factors first, so only two [E, 3, d] products are formed.
        along = edges.unit.unsqueeze(-1) * weigh(a, gate * gather(u, j)).unsqueeze(1)
        return torch.addcmul(along, weigh(a, filt).unsqueeze(1), val)


class EquCrossAttention(nn.Module):
    """Equivariant queries; keys/values are equivariant features gated by invariant ones.

    K_j = (v_j W_K1) * (x_j W_K2), V_j = (v_j W_V1) * (x_j W_V2), gate broadcast over xyz.
    """

    def __init__(self, d: int, h: int) -> None:
        super().__init__()
        self.h = h
        self.vproj = nn.Linear(d, 3 * d, bias=False)  # Q, K1, V1
        self.gates = nn.Linear(d, 2 * d)  # K2, V2 (invariant, may have a bias)
        self.out = nn.Linear(d, d, bias=False)

    def project(self, v, x):
        q, k1, v1 = self.vproj(v).chunk(3, dim=-1)
        k2, v2 = self.gates(x).chunk(2, dim=-1)
        k, val = k1 * k2.unsqueeze(1), v1 * v2.unsqueeze(1)
        return head_major(q, self.h), head_major(k, self.h), val

    def message(self, nodes, edges: Edges, a):
        return weigh(a, gather(nodes[2], edges.neighbour))
