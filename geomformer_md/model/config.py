"""The frozen configuration every GeoMFormer is built from.

A checkpoint stores ``dataclasses.asdict(config)``; a model is rebuilt only from
that dict (never by reading attributes of a live module back), so a config key
is part of the file format: add keys with defaults, never rename them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class GeoMFormerConfig:
    """Hyperparameters of a GeoMFormer force field.

    Attributes:
        species: atomic numbers the model knows, in embedding order.
        cutoff: attention cutoff r_c in Å; edges at r_c get zero weight and slope.
        d_model: channels d of both streams.
        n_heads: attention heads H (d_model must divide by it).
        n_layers: number of GeoMFormer blocks.
        n_rbf: radial basis functions K.
        rbf: "bessel" or "gaussian".
        radial_mlp: hidden width of a radial MLP (K -> w -> w, SiLU) that turns the
            radial basis into the edge features every layer reads (attention biases,
            value filters, the initial streams), as in NequIP and MACE. 0 (default,
            and every file written before this key) uses the K basis functions
            directly, so each filter is a linear combination of them.
        angular_lmax: add three-body invariants of each atom's neighbourhood with
            Legendre degrees 1..angular_lmax (at most 3) to the invariant stream in
            every block (model/angular.py). 0 (default, and every file written before
            this key) leaves directions to the l = 1 vectors alone.
        angular_channels: channels c of those angular moments.
        ffn_mult: hidden width of the FFNs as a multiple of d_model.
        equ_norm: "rms" (channel-RMS, default) or "whiten" (3x3 inverse square
            root, the paper's choice; computed by Newton-Schulz so its double
            backward stays finite at degenerate covariances).
        equ_norm_eps: the equivariant norm's floor, v / sqrt(mean |v|^2 + eps).
            A small eps gives a gain of 1/sqrt(eps) at v = 0 (every atom of a
            perfect crystal) and lets the network build a narrow, stiff well at
            symmetric sites that no training frame constrains (docs/model-notes.md
            section 1). The default 1.0 makes the norm soft: linear for small v,
            normalising only for large v. Files written before this key existed
            load with 1e-3, the value they were trained with.
        edge_values: let attention values carry the edge (distance filters on
            values, u_ij (x) f(psi_ij, x_j) in equivariant values, u_ij . v_j in
            invariant cross values). Off gives the plain paper form, where
            directions enter only through the initial equivariant stream.
        score_cap: attention scores become m C tanh(s / C) with C = score_cap, so
            an edge leaving the cutoff cannot hold the attention (and the forces)
            hostage; 0 keeps the raw scores of the paper. See attention.edge_softmax.
        avg_neighbors: normaliser of the neighbour sums that seed both streams.
        dropout: residual dropout on every attention and FFN update, during
            training only (0 = off, the default). Equivariant updates drop whole
            channels (one mask for x, y and z), so equivariance holds for every
            mask. A regulariser for small data sets (benchmarks/nbody).
        n_scalar_inputs: extra per-atom invariant inputs (e.g. charges); 0 = none.
        n_vector_inputs: extra per-atom vector inputs (e.g. velocities); 0 = none.
        vector_head: add a direct equivariant per-atom vector output
            (``vector = EquLN(Z^E) w``). Used as a direct, NON-conservative force
            head, or as the displacement head of equivariant prediction tasks.
        energy_head: add the invariant per-atom energy head (on for force fields).
        dtype: parameter dtype, "float32" or "float64" (per model; torch's global
            default dtype is never touched).
        zbl: add the ZBL screened nuclear repulsion to the per-atom energies, a physical
            wall at short range where no training data reach (model/zbl.py). Off by
            default, and in every file written before this key.
        zbl_inner / zbl_outer: the ZBL term is switched off smoothly between
            zbl_inner * R and zbl_outer * R, R the pair's sum of covalent radii: full below,
            zero above. With the defaults 0.55 / 0.75 it is exactly zero on all but 4 of the
            10860 frames the shipped potentials were trained on (model/zbl.py).
    """

    species: tuple[int, ...]
    cutoff: float = 5.0
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 3
    n_rbf: int = 16
    rbf: str = "bessel"
    radial_mlp: int = 0
    angular_lmax: int = 0
    angular_channels: int = 16
    ffn_mult: int = 2
    equ_norm: str = "rms"
    equ_norm_eps: float = 1.0
    edge_values: bool = True
    score_cap: float = 5.0
    avg_neighbors: float = 20.0
    dropout: float = 0.0
    n_scalar_inputs: int = 0
    n_vector_inputs: int = 0
    vector_head: bool = False
    energy_head: bool = True
    dtype: str = "float32"
    zbl: bool = False
    zbl_inner: float = 0.55
    zbl_outer: float = 0.75
    extra: dict = field(default_factory=dict)  # free-form, ignored by the model

    def __post_init__(self) -> None:
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        problems = []
        if not self.species:
            problems.append("species is empty")
        if len(set(self.species)) != len(self.species):
            problems.append(f"species has duplicates: {self.species}")
        if any(z < 0 or z > 118 for z in self.species):
            problems.append(f"species must be atomic numbers 0..118, got {self.species}")
        if not self.cutoff > 0:
            problems.append(f"cutoff must be > 0, got {self.cutoff}")
        if self.d_model <= 0 or self.n_heads <= 0 or self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) must be a positive multiple of n_heads "
                            f"({self.n_heads})")
        if not self.equ_norm_eps > 0:
            problems.append(f"equ_norm_eps must be > 0, got {self.equ_norm_eps}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.score_cap < 0:
            problems.append(f"score_cap must be >= 0, got {self.score_cap}")
        if self.n_layers < 0 or self.n_rbf <= 0 or self.ffn_mult <= 0:
            problems.append("n_layers must be >= 0, n_rbf and ffn_mult > 0")
        if self.radial_mlp < 0:
            problems.append(f"radial_mlp must be >= 0 (0 = no radial MLP), got {self.radial_mlp}")
        if not 0 <= self.angular_lmax <= 3:
            problems.append(f"angular_lmax must be 0 (off), 1, 2 or 3, got {self.angular_lmax}")
        if self.angular_channels <= 0:
            problems.append(f"angular_channels must be > 0, got {self.angular_channels}")
        if self.rbf not in ("bessel", "gaussian"):
            problems.append(f"rbf must be 'bessel' or 'gaussian', got {self.rbf!r}")
        if self.equ_norm not in ("rms", "whiten"):
            problems.append(f"equ_norm must be 'rms' or 'whiten', got {self.equ_norm!r}")
        if self.dtype not in _DTYPES:
            problems.append(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.zbl, bool):
            problems.append(f"zbl must be true or false, got {self.zbl!r}")
        bounds = (self.zbl_inner, self.zbl_outer)
        if not (all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
                and 0.0 < self.zbl_inner < self.zbl_outer <= 1.0):
            problems.append("zbl_inner and zbl_outer must satisfy 0 < zbl_inner < zbl_outer <= 1 "
                            "(fractions of the covalent radii sum), got "
                            f"{self.zbl_inner!r}, {self.zbl_outer!r}")
        if not (self.energy_head or self.vector_head):
            problems.append("at least one of energy_head and vector_head must be on")
        if problems:
            raise ValueError("invalid GeoMFormerConfig: " + "; ".join(problems))

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["species"] = list(self.species)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GeoMFormerConfig:
        """Build from a stored dict; unknown keys are an error naming them.

        A key missing from an older file takes the value that reproduces how that
        file's model behaved (LEGACY_DEFAULTS), not today's default.
        """
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown GeoMFormerConfig keys {unknown}; "
                             f"valid keys: {sorted(valid)}")
        return cls(**{**LEGACY_DEFAULTS, **d})


# Keys added after the first model files were written, with their behaviour-preserving values.
LEGACY_DEFAULTS = {"score_cap": 0.0, "equ_norm_eps": 1e-3}
