"""What a hot MD run did to its structure: the closest approach of any two atoms, and which
bonds between adsorbate atoms broke or formed, step by step (`BondWatch`); and how to ask a
labeller whether it would have done the same (`labeller_events`, `verdict`).

Bonds are those of the product's adsorption workflow (`simulate.adsorbates._bonds` and the
"dissociated" flag of `simulate.adsorption`): two light atoms (H, C, N, O) are bonded when
closer than ``BOND_FACTOR`` (1.25) x the sum of their covalent radii (ASE's, as
``ase.neighborlist.natural_cutoffs``), and a bond is broken once they are farther than
``BREAK_FACTOR`` (1.5) x. The gap between the two is hysteresis: at 1000 K an O-H bond
stretches to ~1.2 Å (1.24 x) and back every few femtoseconds, which a single threshold
would count as a break each time. A pair that was not bonded at the start "forms" a bond
when it comes closer than 1.25 x (O-H 1.21 Å, H-H 0.78 Å: a hydrogen bond O...H at
1.5-1.8 Å is not one) and that bond is gone again past 1.5 x. Metal atoms are left out: an
adsorbate hopping between sites makes and breaks metal contacts all the time, which is
diffusion, not chemistry.

The closest approach is the smallest distance between any two atoms (periodic images
included) at every step the watch sees, not only at stored frames.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from matscipy.neighbours import neighbour_list

LIGHT = (1, 6, 7, 8)  # H C N O: the atoms whose bonds are watched
BOND_FACTOR = 1.25  # bonded below this x (r_cov(i) + r_cov(j)), as simulate.adsorbates._bonds
BREAK_FACTOR = 1.5  # broken above this x, as simulate.adsorption's "dissociated"
MIN_DISTANCE = 0.7  # Å: issue 24's limit on the closest approach of two atoms
SEARCH = 3.0  # Å: neighbour search radius; covers every BREAK_FACTOR x bond of H C N O (C-C 2.3)

Pair = tuple[int, int]


def _pairs(atoms: Atoms) -> tuple[float, dict[Pair, float]]:
    """The smallest interatomic distance (inf if no pair within SEARCH) and, for pairs of
    light atoms within SEARCH, their shortest distance over periodic images."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return math.inf, {}
    i, j, d = neighbour_list("ijd", atoms, SEARCH)
    dmin = float(d.min()) if len(d) else math.inf
    light = np.isin(atoms.numbers, LIGHT)
    keep = light[i] & light[j] & (i < j)
    out: dict[Pair, float] = {}
    for a, b, x in zip(i[keep].tolist(), j[keep].tolist(), d[keep].tolist(), strict=True):
        if x < out.get((a, b), math.inf):
            out[(a, b)] = x
    return dmin, out


def _bond_length(numbers: np.ndarray, pair: Pair) -> float:
    return float(covalent_radii[numbers[pair[0]]] + covalent_radii[numbers[pair[1]]])


def bonds(atoms: Atoms, factor: float = BOND_FACTOR) -> set[Pair]:
    """Pairs (i < j) of light atoms closer than ``factor`` x their covalent bond length."""
    _, dist = _pairs(atoms)
    return {p for p, d in dist.items() if d < factor * _bond_length(atoms.numbers, p)}


def pair_label(numbers, pair: Pair) -> str:
    """'C-H(36,38)'."""
    from ase.data import chemical_symbols

    a, b = pair
    return f"{chemical_symbols[numbers[a]]}-{chemical_symbols[numbers[b]]}({a},{b})"


@dataclass
class BondWatch:
    """Closest approach and bond changes over the steps it is shown (`observe`).

    ``broken`` / ``formed``: pair -> first step at which a bond of the start broke / a new
    one formed; ``broken_now`` / ``formed_now``: the pairs in that state at the last step
    seen (a broken bond that re-formed has left ``broken_now`` but stays in ``broken``).
    The state round-trips through JSON (`to_json` / `from_json`), so a run resumed from a
    checkpoint carries on where it stopped.
    """

    start_bonds: set[Pair]
    numbers: list[int]
    min_distance: float = math.inf
    min_distance_step: int | None = None
    min_pair: Pair | None = None
    broken: dict[Pair, int] = field(default_factory=dict)
    formed: dict[Pair, int] = field(default_factory=dict)
    broken_now: set[Pair] = field(default_factory=set)
    formed_now: set[Pair] = field(default_factory=set)
    last_step: int = -1

    @classmethod
    def of(cls, start: Atoms) -> BondWatch:
        """A watch whose reference connectivity is that of ``start``."""
        return cls(start_bonds=bonds(start), numbers=start.numbers.tolist())

    def observe(self, atoms: Atoms, step: int) -> None:
        dmin, dist = _pairs(atoms)
        if dmin < self.min_distance:
            self.min_distance, self.min_distance_step = dmin, int(step)
            i, j, d = neighbour_list("ijd", atoms, min(SEARCH, dmin + 1e-9))
            k = int(np.argmin(d))
            self.min_pair = (int(min(i[k], j[k])), int(max(i[k], j[k])))
        numbers = atoms.numbers
        for p in self.start_bonds:
            d = dist.get(p, math.inf)
            if d > BREAK_FACTOR * _bond_length(numbers, p):
                self.broken.setdefault(p, int(step))
                self.broken_now.add(p)
            elif d < BOND_FACTOR * _bond_length(numbers, p):
                self.broken_now.discard(p)
        for p in list(self.formed_now):
            if dist.get(p, math.inf) > BREAK_FACTOR * _bond_length(numbers, p):
                self.formed_now.discard(p)
        for p, d in dist.items():
            if p not in self.start_bonds and d < BOND_FACTOR * _bond_length(numbers, p):
                self.formed.setdefault(p, int(step))
                self.formed_now.add(p)
        self.last_step = max(self.last_step, int(step))

    def merge(self, other: BondWatch) -> BondWatch:
        """The watch of two consecutive stages (self first) of one run."""
        out = BondWatch.from_json(self.to_json())
        if other.min_distance < out.min_distance:
            out.min_distance, out.min_distance_step = other.min_distance, other.min_distance_step
            out.min_pair = other.min_pair
        for p, s in other.broken.items():
            out.broken.setdefault(p, s)
        for p, s in other.formed.items():
            out.formed.setdefault(p, s)
        out.broken_now, out.formed_now = set(other.broken_now), set(other.formed_now)
        out.last_step = max(out.last_step, other.last_step)
        return out

    @property
    def changed(self) -> bool:
        return bool(self.broken or self.formed)

    def events(self, window: int) -> list[dict[str, dict[Pair, int]]]:
        """Bond changes grouped into events: a change within ``window`` steps of an event's
        first change belongs to it (an H moving from C to O breaks C-H and forms O-H a few
        steps apart). Each event: {"broken": {pair: step}, "formed": {pair: step}}."""
        changes = sorted([(s, "broken", p) for p, s in self.broken.items()]
                         + [(s, "formed", p) for p, s in self.formed.items()])
        out: list[dict] = []
        for s, kind, p in changes:
            if not out or s > out[-1]["step"] + window:
                out.append({"step": s, "broken": {}, "formed": {}})
            out[-1][kind][p] = s
        return out

    def summary(self) -> dict:
        """JSON-able: closest approach and the bond changes with labels."""
        n = self.numbers
        return {
            "min_distance_A": self.min_distance,
            "min_distance_step": self.min_distance_step,
            "min_distance_pair": None if self.min_pair is None else pair_label(n, self.min_pair),
            "start_bonds": sorted(pair_label(n, p) for p in self.start_bonds),
            "broken": {pair_label(n, p): s for p, s in sorted(self.broken.items())},
            "formed": {pair_label(n, p): s for p, s in sorted(self.formed.items())},
            "broken_at_end": sorted(pair_label(n, p) for p in self.broken_now),
            "formed_at_end": sorted(pair_label(n, p) for p in self.formed_now),
        }

    def to_json(self) -> str:
        def pairs(d):
            return [[a, b, s] for (a, b), s in sorted(d.items())]

        return json.dumps({
            "start_bonds": sorted(list(p) for p in self.start_bonds), "numbers": self.numbers,
            "min_distance": self.min_distance if math.isfinite(self.min_distance) else None,
            "min_distance_step": self.min_distance_step,
            "min_pair": None if self.min_pair is None else list(self.min_pair),
            "broken": pairs(self.broken), "formed": pairs(self.formed),
            "broken_now": sorted(list(p) for p in self.broken_now),
            "formed_now": sorted(list(p) for p in self.formed_now),
            "last_step": self.last_step,
        })

    @classmethod
    def from_json(cls, text: str) -> BondWatch:
        d = json.loads(text)
        return cls(
            start_bonds={tuple(p) for p in d["start_bonds"]}, numbers=list(d["numbers"]),
            min_distance=math.inf if d["min_distance"] is None else d["min_distance"],
            min_distance_step=d["min_distance_step"],
            min_pair=None if d["min_pair"] is None else tuple(d["min_pair"]),
            broken={(a, b): s for a, b, s in d["broken"]},
            formed={(a, b): s for a, b, s in d["formed"]},
            broken_now={tuple(p) for p in d["broken_now"]},
            formed_now={tuple(p) for p in d["formed_now"]},
            last_step=d["last_step"],
        )


def reproduces(event: dict, watch: BondWatch) -> bool:
    """Whether a labeller run (``watch``, started from the model's frame before the event)
    made every change of the model's ``event``: each bond the model broke broke, each bond
    it formed formed."""
    return set(event["broken"]) <= set(watch.broken) and set(event["formed"]) <= set(watch.formed)


def end_state_kept(model_end: BondWatch, relaxed: Atoms) -> tuple[bool, list[str]]:
    """Whether the labeller's relaxation of the model's end frame keeps the model's end
    connectivity: every bond broken at the end stays farther than BREAK_FACTOR x and every
    bond formed stays closer than BOND_FACTOR x (a relaxed structure has no thermal
    stretch: a pair between the two factors counts as not kept). Returns (kept, what was
    not kept, as 'C-H(36,38) re-formed')."""
    _, dist = _pairs(relaxed)
    n = relaxed.numbers
    bad = []
    for p in sorted(model_end.broken_now):
        if not dist.get(p, math.inf) > BREAK_FACTOR * _bond_length(n, p):
            bad.append(f"{pair_label(n, p)} re-formed ({dist.get(p, math.inf):.2f} Å)")
    for p in sorted(model_end.formed_now):
        if not dist.get(p, math.inf) < BOND_FACTOR * _bond_length(n, p):
            bad.append(f"{pair_label(n, p)} broke again ({dist.get(p, math.inf):.2f} Å)")
    return not bad, bad
