"""GeoMFormer (Chen et al., ICML 2024) as a local, smooth force field.

Two streams per atom: invariant Z^I [n, d] and equivariant Z^E [n, 3, d],
updated by pre-norm residual blocks whose self- and cross-attentions run over
the neighbour graph plus a self edge (see attention.py). The model sees edge
vectors, never cells or ASE objects: strain and periodic images are applied by
the caller (potential.py), which is what makes forces and stress one autograd.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .angular import AngularInvariants, spherical_harmonics
from .attention import (
    Edges,
    EquCrossAttention,
    EquSelfAttention,
    InvCrossAttention,
    InvSelfAttention,
    edge_scores,
    edge_softmax,
    index_add,
    scatter_sum,
)
from .config import GeoMFormerConfig
from .radial import EquRMSNorm, EquWhitenNorm, RadialBasis, envelope
from .zbl import ZBLRepulsion

# Largest [E, 3, d] per-edge tensor the attention makes on CPU (see GeoMFormer._n_chunks).
EDGE_CHUNK_BYTES = 8 * 2**20
# Fused attention kernels (GeoMFormerBlock._attentions): None = on for GPU tensors, off on
# the CPU; True / False force them (tests, benchmarks/bench_train_step.py).
FUSE_KERNELS: bool | None = None


def _equ_norm(cfg: GeoMFormerConfig) -> nn.Module:
    norm = EquRMSNorm if cfg.equ_norm == "rms" else EquWhitenNorm
    return norm(cfg.d_model, eps=cfg.equ_norm_eps)


class InvFFN(nn.Module):
    """GELU(x W1 + b1) W2 + b2."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

    def forward(self, x):
        return self.net(x)


class EquFFN(nn.Module):
    """((v W1) * GELU(x W2 + b)) W3: channel mixing of vectors, gated by invariants."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d, hidden, bias=False)
        self.gate = nn.Linear(d, hidden)
        self.w3 = nn.Linear(hidden, d, bias=False)

    def forward(self, v, x):
        return self.w3(self.w1(v) * F.gelu(self.gate(x)).unsqueeze(1))


def channel_dropout(t: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout of [n, d] features, or of whole channels of [n, 3, d] vector features
    (one mask shared by x, y, z: a rotated input gets the rotated output)."""
    if not training or p == 0.0:
        return t
    shape = (t.shape[0], 1, t.shape[2]) if t.dim() == 3 else t.shape
    keep = torch.empty(shape, dtype=t.dtype, device=t.device).bernoulli_(1.0 - p)
    return t * keep / (1.0 - p)


class GeoMFormerBlock(nn.Module):
    """Pre-norm block; the self/cross pairs of each stream run in parallel.

    ``update_equ=False`` drops the equivariant half of the update: in the last
    block of an energy-only model it never reaches the output (the energy head
    reads Z^I), so computing it would cost time and leave untrained weights.
    """

    def __init__(self, cfg: GeoMFormerConfig, update_equ: bool = True) -> None:
        super().__init__()
        d, h, hidden = cfg.d_model, cfg.n_heads, cfg.ffn_mult * cfg.d_model
        self.h, self.d, self.p = h, d, cfg.dropout
        self.edge_values, self.update_equ = cfg.edge_values, update_equ
        n_att = 4 if update_equ else 2
        n_filt = (3 if update_equ else 1) if cfg.edge_values else 0
        # Per-head attention biases of the attentions (+ value filters), one matmul.
        self.edge_proj = nn.Linear(cfg.radial_mlp or cfg.n_rbf, n_att * h + n_filt * d)
        self.ln_att, self.eln_att = nn.LayerNorm(d), _equ_norm(cfg)
        self.inv_self = InvSelfAttention(d, h)
        self.inv_cross = InvCrossAttention(d, h, cfg.edge_values)
        self.ln_ffn, self.inv_ffn = nn.LayerNorm(d), InvFFN(d, hidden)
        if update_equ:
            self.equ_self = EquSelfAttention(d, h, cfg.edge_values)
            self.equ_cross = EquCrossAttention(d, h)
            self.eln_ffn, self.ln_gate = _equ_norm(cfg), nn.LayerNorm(d)
            self.equ_ffn = EquFFN(d, hidden)
        self.angular = None
        if cfg.angular_lmax:
            n_feat, lmax = cfg.radial_mlp or cfg.n_rbf, cfg.angular_lmax
            self.angular = AngularInvariants(
                d, n_feat, cfg.angular_channels, lmax, cfg.avg_neighbors
            )

    def _edge_terms(self, rbf: torch.Tensor, fuse: bool):
        """Attention biases ([E, n_att H], per attention in the order inv_self, inv_cross,
        equ_self, equ_cross) and value filters (3 x [E, d] or None) of the edge features
        rbf [E, K] (the basis, or the radial MLP's output).

        fuse: one linear map and a split (whose backward is one cat): fewest kernels, for a
        GPU. Otherwise each part is its own linear map, so the filters are contiguous, which
        the CPU's elementwise products need to be fast (strided ones cost the float64
        calculator ~8 %); slicing one output instead would zero-fill and copy per slice in
        backward.
        """
        h, d, w, wb = self.h, self.d, self.edge_proj.weight, self.edge_proj.bias
        n_att = 4 if self.update_equ else 2
        n_filt = (w.shape[0] - n_att * h) // d
        if fuse:
            b, *filt = self.edge_proj(rbf).split([n_att * h] + [d] * n_filt, dim=-1)
        else:
            b = F.linear(rbf, w[: n_att * h], wb[: n_att * h])
            rows = range(n_att * h, w.shape[0], d)
            filt = [F.linear(rbf, w[r : r + d], wb[r : r + d]) for r in rows]
        return b, tuple(filt) + (None,) * (3 - n_filt)

    @staticmethod
    def _message(att, edges: Edges, a: torch.Tensor, extra: tuple):
        module, nodes = att
        return module.message(nodes, edges, a, *extra)

    def _attentions(self, x, v, chunks: list[Edges]):
        """The four attention updates (two without update_equ; the self ones alone where the
        cross attentions were removed, inv_cross = equ_cross = None, an ablation in
        benchmarks/nbody): one edge softmax over the concatenated [E, n H] scores serves all
        of them. Per-head columns are independent, so this equals four separate softmaxes;
        it saves three softmaxes' worth of small kernels, which bound a GPU training step.
        With fused kernels (FUSE_KERNELS; a GPU by default) one scatter_sum per stream joins
        the messages of its attentions ([E, 2d] and [E, 3, 2d]; their [n, 3, d] halves are
        still plain strided matrices for ``out``)."""
        equ = self.update_equ
        atts = [(self.inv_self, self.inv_self.project(x))]
        cross = self.inv_cross is not None
        atts.append((self.inv_cross, self.inv_cross.project(x, v)) if cross else None)
        if equ:
            atts.append((self.equ_self, self.equ_self.project(v, x)))
            atts.append((self.equ_cross, self.equ_cross.project(v, x)) if cross else None)
        live = [k for k, att in enumerate(atts) if att is not None]
        # Kernel fusion where launches bound the step (a GPU), not where memory traffic does
        # (the CPU): see edge_scores and _edge_terms. Both give the same results to round-off.
        fuse = FUSE_KERNELS if FUSE_KERNELS is not None else x.device.type != "cpu"
        groups = [[k for k in live if k < 2], [k for k in live if k >= 2]]  # [E, d]; [E, 3, d]
        if not fuse:  # one scatter_sum per attention
            groups = [[k] for k in live]
        sums = [[] for _ in groups]  # per group, per range: the joined sums of its messages
        for edges in chunks:
            bias, (filt_i, filt_e, gate_e) = self._edge_terms(edges.rbf, fuse)
            if len(live) < len(atts):  # the bias columns of the attentions that run
                e = bias.shape[0]
                bias = bias.view(e, len(atts), self.h)[:, live].reshape(e, -1)
            s = edge_scores([atts[k][1][:2] for k in live], edges, self.h, fuse) + bias
            a = dict(zip(live, edge_softmax(s, edges).split(self.h, dim=1), strict=True))
            extra = {0: (filt_i,), 2: (filt_e, gate_e)}
            for g, group in enumerate(groups):
                msg = [self._message(atts[k], edges, a[k], extra.get(k, ())) for k in group]
                if msg:
                    joined = torch.cat(msg, dim=-1) if len(msg) > 1 else msg[0]
                    sums[g].append(scatter_sum(joined, edges))
        out = {}
        for group, parts in zip(groups, sums, strict=True):
            if group:
                joined = parts[0] if len(parts) == 1 else torch.cat(parts)
                out.update(zip(group, joined.split(self.d, dim=-1), strict=True))

        n_out = sum(edges.n_atoms for edges in chunks)  # all atoms, or the first ones

        def update(k, like):
            return atts[k][0].out(out[k]) if k in out else like.new_zeros((n_out, *like.shape[1:]))

        inv = update(0, x) + update(1, x)
        return inv, (update(2, v) + update(3, v)) if equ else None

    def forward(self, zi, ze, chunks: list[Edges], geo=None):
        """chunks: the edges of consecutive ranges of centres covering all atoms, or only
        the first ones (GeoMFormer.forward's layer_sizes), in order; the block returns the
        updated streams of those centres. geo: (i, j, m, edge features, harmonics) of the
        geometric edges of those centres, for the angular invariants (None when the model
        has none)."""
        def drop(t):
            return channel_dropout(t, self.p, self.training)

        n_out = sum(edges.n_atoms for edges in chunks)
        x, v = self.ln_att(zi), self.eln_att(ze)
        inv, equ = self._attentions(x, v, chunks)
        if self.angular is not None:
            inv = inv + self.angular(x, *geo)[:n_out]
        zi, ze = zi[:n_out] + drop(inv), ze[:n_out]
        if self.update_equ:
            ze = ze + drop(equ)
        zi = zi + drop(self.inv_ffn(self.ln_ffn(zi)))
        if self.update_equ:
            ze = ze + drop(self.equ_ffn(self.eln_ffn(ze), self.ln_gate(zi)))
        return zi, ze


class GeoMFormer(nn.Module):
    """Per-atom energies (and optionally per-atom vectors) from a neighbour graph.

    Buffers set by training and stored in checkpoints: ``e0`` [n_species]
    per-element reference energies (eV) and ``energy_scale`` (eV), so that
    E_i = MLP(LN(Z^I_i)) * energy_scale + e0[z_i].
    """

    def __init__(self, cfg: GeoMFormerConfig) -> None:
        super().__init__()
        self.config = cfg
        d, ns = cfg.d_model, len(cfg.species)
        table = torch.full((119,), -1, dtype=torch.long)
        table[list(cfg.species)] = torch.arange(ns)
        self.register_buffer("z_to_index", table, persistent=False)
        self.register_buffer("e0", torch.zeros(ns))
        self.register_buffer("energy_scale", torch.ones(()))

        self.rbf = RadialBasis(cfg.n_rbf, cfg.cutoff, cfg.rbf)
        self.self_rbf = nn.Parameter(torch.zeros(cfg.n_rbf))  # constant features of the self edge
        w = cfg.radial_mlp
        self.radial = None  # the basis itself, or an MLP of it (config.radial_mlp)
        if w:
            self.radial = nn.Sequential(
                nn.Linear(cfg.n_rbf, w), nn.SiLU(), nn.Linear(w, w), nn.SiLU()
            )
        self.embed = nn.Embedding(ns, d)
        self.inv_init = nn.Linear(w or cfg.n_rbf, d, bias=False)
        self.equ_init = nn.Linear(w or cfg.n_rbf, d, bias=False)
        self.scalar_in = nn.Linear(cfg.n_scalar_inputs, d) if cfg.n_scalar_inputs else None
        self.vector_in = (
            nn.Linear(cfg.n_vector_inputs, d, bias=False) if cfg.n_vector_inputs else None
        )
        self.blocks = nn.ModuleList(
            GeoMFormerBlock(cfg, update_equ=cfg.vector_head or k < cfg.n_layers - 1)
            for k in range(cfg.n_layers)
        )
        if cfg.energy_head:
            self.energy_norm = nn.LayerNorm(d)
            self.energy_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        if cfg.vector_head:
            self.vector_norm = _equ_norm(cfg)
            self.vector_out = nn.Linear(d, 1, bias=False)
        # Short-range prior (config.zbl): no parameters, so adding it keeps a state_dict valid.
        self.zbl = ZBLRepulsion(cfg.species, cfg.zbl_inner, cfg.zbl_outer) if cfg.zbl else None
        self.harmonics = spherical_harmonics(cfg.angular_lmax) if cfg.angular_lmax else None
        self.to(cfg.torch_dtype)

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    def species_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers -> embedding rows; raises ValueError naming unknown elements."""
        bad = (numbers < 0) | (numbers > 118)
        idx = self.z_to_index[numbers.clamp(0, 118)]
        if bool((bad | (idx < 0)).any()):
            from ase.data import chemical_symbols  # only for the message

            unknown = sorted({int(z) for z in numbers[bad | (idx < 0)].tolist()})
            names = [chemical_symbols[z] if 0 <= z <= 118 else str(z) for z in unknown]
            known = [chemical_symbols[z] for z in self.config.species]
            raise ValueError(f"element(s) {names} unknown to this model; it knows {known}")
        return idx

    def forward(
        self,
        numbers: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vec: torch.Tensor,
        node_scalars: torch.Tensor | None = None,
        node_vectors: torch.Tensor | None = None,
        layer_sizes: list[tuple[int, int]] | None = None,
        exchange=None,
    ) -> dict[str, torch.Tensor]:
        """Run the model.

        Args:
            numbers: [n] atomic numbers.
            edge_index: [2, E] (centre i, neighbour j); no (i, i, 0) pairs.
            edge_vec: [E, 3] r_ij = r_j (+ image shift) - r_i in Å.
            node_scalars: [n, n_scalar_inputs] extra invariant inputs.
            node_vectors: [n, 3, n_vector_inputs] extra vector inputs.
            layer_sizes: None (every atom, every layer), or n_layers + 1 pairs (atoms,
                edges): the initial streams (entry 0) and block k (entry k) are computed
                for the first ``atoms`` atoms only, from the first ``edges`` edges, which
                must be all the edges of those atoms, grouped by centre in ascending
                order. For a caller that needs the energies of a few atoms of a larger
                graph (a LAMMPS rank: its own atoms, then ghosts ordered by hops from
                them; geomformer_md/lammps). Atomic numbers are not checked (the check
                reads tensor values, which an exported graph cannot). Energies are then
                valid for the first layer_sizes[-1][0] atoms only; the vector head is off.
            exchange: with layer_sizes, a function (zi [a, d], ze [a, 3, d]) -> ([n, d],
                [n, 3, d]) called before every block: the rows of the atoms the previous
                layer computed -> the streams of all atoms, the other rows filled from
                elsewhere (a LAMMPS rank's ghost atoms from the ranks that own them:
                geomformer_md/lammps/halo.py). Then every layer can be computed for the
                same first atoms only.

        Returns:
            {"energy": [n] per-atom energies} and/or {"vector": [n, 3]}.
        """
        cfg, n = self.config, numbers.shape[0]
        pruned = layer_sizes is not None
        species = self.z_to_index[numbers] if pruned else self.species_index(numbers)
        i = edge_index[0]
        n_chunks = 1 if pruned else self._n_chunks(i.shape[0] + n, edge_vec)
        if n_chunks > 1 and bool((i[1:] < i[:-1]).any()):
            order = torch.argsort(i, stable=True)  # chunks need edges grouped by centre
            edge_index, edge_vec = edge_index[:, order], edge_vec.index_select(0, order)
        dist = edge_vec.norm(dim=-1)  # no zero-length edges: the self edge is added below
        m = envelope(dist, cfg.cutoff)
        rbf = self.rbf(dist)
        self_rbf = self.self_rbf
        if self.radial is not None:  # the self edge's features go through the same MLP
            rbf, self_rbf = self.radial(rbf), self.radial(self_rbf)
        unit = edge_vec / dist.unsqueeze(-1)
        i, j = edge_index[0], edge_index[1]

        # Initial streams from geometric neighbours only (translation-invariant).
        norm = 1.0 / cfg.avg_neighbors
        zi = index_add(self.embed(species), i, (m.unsqueeze(-1) * self.inv_init(rbf)) * norm)
        msg = (m.unsqueeze(-1) * unit).unsqueeze(-1) * (self.equ_init(rbf) * norm).unsqueeze(1)
        ze = index_add(torch.zeros(n, 3, cfg.d_model, dtype=zi.dtype, device=zi.device), i, msg)
        if self.scalar_in is not None:
            zi = zi + self.scalar_in(node_scalars.to(zi.dtype))
        if self.vector_in is not None:
            ze = ze + self.vector_in(node_vectors.to(ze.dtype))

        geo = None
        if cfg.angular_lmax:
            geo = (i, j, m, rbf, self.harmonics(unit))
        if pruned:
            zi, ze = self._pruned_blocks(zi, ze, layer_sizes, (i, j, m, rbf, self_rbf, unit), geo,
                                         exchange)
        else:
            chunks = self._chunks(i, j, m, rbf, self_rbf, unit, n, n_chunks)
            for block in self.blocks:
                zi, ze = block(zi, ze, chunks, geo)

        out = {}
        if cfg.energy_head:
            e = self.energy_mlp(self.energy_norm(zi)).squeeze(-1)
            if pruned:  # rows of atoms whose last layer was not computed: 0 (not energies).
                # Terms added to the per-atom energies below must cover all n atoms.
                e = torch.cat([e, e.new_zeros(n - e.shape[0])])
            out["energy"] = e * self.energy_scale + self.e0[species]
            if self.zbl is not None:  # pair terms of every edge: all n atoms (see above)
                out["energy"] = out["energy"] + self.zbl(species, edge_index, dist)
        if cfg.vector_head and not pruned:
            out["vector"] = self.vector_out(self.vector_norm(ze)).squeeze(-1)
        return out

    def _pruned_blocks(self, zi, ze, layer_sizes, edge_feats, geo, exchange=None):
        """The blocks of forward(layer_sizes=...): each on a prefix of atoms and edges.

        Why: the energy of atom i depends on the layer-(L-1) features of its neighbours,
        ..., on the initial features of atoms up to L hops away, so a rank that needs
        the energies of its own atoms computes layer k only for atoms within L - k hops
        of them. Every layer on the whole graph would cost a rank of a 4200-atom slab on
        2 ranks 1.4x the atom-layers (1.85 instead of 1.33 per own atom and layer). With
        ``exchange`` (forward's docstring) the other rows come from outside before each block.
        """
        if len(layer_sizes) != len(self.blocks) + 1:
            raise ValueError(f"layer_sizes needs {len(self.blocks) + 1} (atoms, edges) pairs, "
                             f"got {len(layer_sizes)}")
        i, j, m, rbf, self_rbf, unit = edge_feats
        zi, ze = zi[: layer_sizes[0][0]], ze[: layer_sizes[0][0]]
        for block, (n_k, e_k) in zip(self.blocks, layer_sizes[1:], strict=True):
            if exchange is not None:
                zi, ze = exchange(zi, ze)
            ij, m_k, rbf_k, unit_k = (i[:e_k], j[:e_k]), m[:e_k], rbf[:e_k], unit[:e_k]
            chunks = self._chunks(*ij, m_k, rbf_k, self_rbf, unit_k, n_k, 1)
            zi, ze = block(zi, ze, chunks, geo and tuple(t[:e_k] for t in geo))
        return zi, ze

    def _n_chunks(self, n_edges: int, like: torch.Tensor) -> int:
        """How many centre ranges to split the attention's edge work into.

        On CPU, per-edge tensors ([E, 3, d] and the like) above glibc's largest mmap
        threshold (32 MiB) are mmap-ed fresh at every allocation and page-faulted in:
        unchunked, a float64 call cost 1.15x more per atom at 2048 Cu atoms than at 500
        (float32 1.1x), and float64 at 2048 atoms ran 1.5x slower than chunked. Ranges
        of at most EDGE_CHUNK_BYTES per [E, 3, d] tensor keep temporaries in the reused
        heap (and in cache), so the cost per atom stays flat with size. Each centre's
        edges stay in one range, so results agree to round-off. Off on GPU (its caching
        allocator has no such cost and larger kernels are better there).
        """
        if like.device.type != "cpu":
            return 1
        per_edge = 3 * self.config.d_model * torch.finfo(self.config.torch_dtype).bits // 8
        return max(1, -(-n_edges * per_edge // EDGE_CHUNK_BYTES))  # ceil

    def _chunks(self, i, j, m, rbf, self_rbf, unit, n: int, n_chunks: int) -> list[Edges]:
        """Edges (plus one self edge per atom: envelope 1, constant rbf, no direction)
        of consecutive centre ranges; geometric edges must be grouped by centre when
        there is more than one range."""
        ar = torch.arange(n, device=i.device)
        if n_chunks == 1:
            bounds = [(0, n, 0, i.shape[0])]
        else:  # centre boundaries that split the edges (self edges included) evenly
            counts = torch.bincount(i, minlength=n)
            start = (torch.cumsum(counts, 0) - counts).tolist() + [i.shape[0]]  # first edge
            cum = torch.cumsum(counts + 1, 0).double()
            targets = torch.arange(1, n_chunks, dtype=cum.dtype) * (float(cum[-1]) / n_chunks)
            cuts = sorted({0, n, *(torch.searchsorted(cum, targets) + 1).clamp(max=n).tolist()})
            ranges = zip(cuts[:-1], cuts[1:], strict=True)
            bounds = [(c0, c1, start[c0], start[c1]) for c0, c1 in ranges]
        chunks = []
        for c0, c1, e0, e1 in bounds:
            centre = torch.cat([i[e0:e1], ar[c0:c1]])
            chunks.append(Edges(
                centre=centre,
                neighbour=torch.cat([j[e0:e1], ar[c0:c1]]),
                weight=torch.cat([m[e0:e1], m.new_ones(c1 - c0)]),
                rbf=torch.cat([rbf[e0:e1], self_rbf.expand(c1 - c0, -1)]),
                unit=torch.cat([unit[e0:e1], unit.new_zeros(c1 - c0, 3)]),
                n_atoms=c1 - c0,
                score_cap=self.config.score_cap,
                slot=centre - c0 if c0 else None,
            ))
        return chunks

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def init_summary(model: GeoMFormer) -> str:
    cfg = model.config
    return (
        f"GeoMFormer d={cfg.d_model} H={cfg.n_heads} L={cfg.n_layers} K={cfg.n_rbf}"
        f"{f' radial MLP {cfg.radial_mlp}' if cfg.radial_mlp else ''}"
        f"{f' angular l<={cfg.angular_lmax} x{cfg.angular_channels}' if cfg.angular_lmax else ''}"
        f"{f' + ZBL prior ({cfg.zbl_inner:g}-{cfg.zbl_outer:g} R)' if cfg.zbl else ''} "
        f"r_c={cfg.cutoff} Å, {model.n_parameters() / 1e3:.1f}k parameters, {cfg.dtype}"
    )

