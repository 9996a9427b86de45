"""Structure builders: bulk cells, slabs, adsorbates, adsorption sites and a
simple site classifier (used to keep the held-out adsorbate/site combinations
out of the training pool)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc100, fcc111, fcc211, molecule
from ase.constraints import FixAtoms

METALS = ["Cu", "Ag", "Au", "Ni", "Pd", "Pt"]
FACETS = ["111", "100", "211"]
VACUUM = 8.0  # A on each side of the slab
N_LAYERS = 4
N_FIXED_LAYERS = 2

SITES = {
    "111": ["top", "bridge", "fcc", "hcp"],
    "100": ["top", "bridge", "hollow"],
    "211": ["top", "bridge", "hollow"],  # step-edge top / step-edge bridge / 3-fold at the step
}
# ASE site names for add_adsorbate
ASE_SITE = {"top": "ontop", "bridge": "bridge", "fcc": "fcc", "hcp": "hcp", "hollow": "hollow"}

# The held-out adsorbate/site combinations (never trained on).
HELDOUT = {("111", "OH", "hcp"), ("100", "N", "bridge")}


def is_heldout(facet: str, ads: str, site: str) -> bool:
    return (facet, ads, site) in HELDOUT


# Adsorbates: binding atom first, at the origin; the rest points away from the
# surface (+z).
ADSORBATES: dict[str, list[tuple[str, tuple[float, float, float]]]] = {
    "H": [("H", (0.0, 0.0, 0.0))],
    "C": [("C", (0.0, 0.0, 0.0))],
    "N": [("N", (0.0, 0.0, 0.0))],
    "O": [("O", (0.0, 0.0, 0.0))],
    "OH": [("O", (0.0, 0.0, 0.0)), ("H", (0.0, 0.0, 0.98))],
    "CO": [("C", (0.0, 0.0, 0.0)), ("O", (0.0, 0.0, 1.16))],
    "NH": [("N", (0.0, 0.0, 0.0)), ("H", (0.0, 0.0, 1.03))],
    # nearly flat water, O down
    "H2O": [("O", (0.0, 0.0, 0.0)), ("H", (0.757, 0.56, 0.22)), ("H", (-0.757, 0.56, 0.22))],
}


def adsorbate_atoms(name: str) -> Atoms:
    spec = ADSORBATES[name]
    return Atoms([s for s, _ in spec], positions=[p for _, p in spec])


# ----------------------------------------------------------------------------
# bulk
# ----------------------------------------------------------------------------

def conventional(metal: str, a: float) -> Atoms:
    return bulk(metal, "fcc", a=a, cubic=True)


def primitive(metal: str, a: float) -> Atoms:
    return bulk(metal, "fcc", a=a)


def random_strain(rng: np.random.Generator, amp: float) -> np.ndarray:
    """Symmetric strain tensor, components uniform in [-amp, amp] (shear incl.)."""
    e = rng.uniform(-amp, amp, size=(3, 3))
    e = 0.5 * (e + e.T)
    return e


def apply_strain(atoms: Atoms, eps: np.ndarray) -> Atoms:
    a = atoms.copy()
    a.set_cell(a.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
    return a


def rattle(atoms: Atoms, rng: np.random.Generator, sigma: float, idx=None,
           cap: float | None = None):
    """Gaussian displacement of atoms ``idx`` (all if None); optionally capped in norm."""
    n = len(atoms)
    idx = np.arange(n) if idx is None else np.asarray(idx, dtype=int)
    if len(idx) == 0:
        return atoms
    d = rng.normal(0.0, sigma, size=(len(idx), 3))
    if cap is not None:
        norms = np.linalg.norm(d, axis=1, keepdims=True)
        d = np.where(norms > cap, d * cap / np.maximum(norms, 1e-12), d)
    pos = atoms.get_positions()
    pos[idx] += d
    atoms.set_positions(pos)
    return atoms


# ----------------------------------------------------------------------------
# slabs
# ----------------------------------------------------------------------------

def layer_index(slab: Atoms, facet: str) -> np.ndarray:
    """Layer index per metal atom, 1 = top layer."""
    if facet in ("111", "100"):
        return slab.get_tags().copy()
    # fcc211: 3 distinct atom rows (z values) per layer
    z = np.round(slab.positions[:, 2], 2)
    levels = np.sort(np.unique(z))[::-1]
    row = np.searchsorted(-levels, -z)
    return row // 3 + 1


def make_slab(metal: str, facet: str, size: tuple[int, int, int], a: float,
              vacuum: float = VACUUM) -> Atoms:
    if facet == "111":
        s = fcc111(metal, size, a=a, vacuum=vacuum)
    elif facet == "100":
        s = fcc100(metal, size, a=a, vacuum=vacuum)
    elif facet == "211":
        s = fcc211(metal, size, a=a, vacuum=vacuum)
    else:
        raise ValueError(facet)
    layers = layer_index(s, facet)
    nlay = int(layers.max())
    s.set_tags(layers)
    s.set_constraint(FixAtoms(mask=layers > nlay - N_FIXED_LAYERS))
    s.info["facet"] = facet
    return s


def size_str(size) -> str:
    return "x".join(str(int(v)) for v in size)


def surface_cell_2d(slab: Atoms) -> np.ndarray:
    return slab.cell[:2, :2].copy()


def _mic2d(d: np.ndarray, cell2: np.ndarray) -> np.ndarray:
    """Minimum-image 2-D displacement vectors (rows)."""
    inv = np.linalg.inv(cell2)
    f = d @ inv
    f -= np.round(f)
    best = f @ cell2
    # check neighbouring images (non-orthogonal cells)
    out = best.copy()
    bn = np.linalg.norm(best, axis=-1)
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            c = (f + np.array([i, j])) @ cell2
            cn = np.linalg.norm(c, axis=-1)
            m = cn < bn
            out[m] = c[m]
            bn = np.minimum(bn, cn)
    return out


def sites_211(slab: Atoms, a: float) -> dict[str, list[dict]]:
    """Candidate sites at the step edge of an fcc211 slab:
    top (step-edge atom), bridge (between two step-edge atoms),
    hollow (3-fold hollows that contain a step-edge atom).
    Each entry: {'xy': (x, y), 'atoms': [indices], 'r': lateral radius}."""
    layers = slab.get_tags()
    metal = [i for i in range(len(slab)) if layers[i] >= 1]
    pos = slab.positions
    zmax = pos[metal, 2].max()
    edge = [i for i in metal if abs(pos[i, 2] - zmax) < 0.1]
    surf = [i for i in metal if pos[i, 2] > zmax - 1.8 and layers[i] == 1]
    dnn = a / np.sqrt(2)
    cell = slab.cell[:]

    def mic3(v):
        f = np.linalg.solve(cell.T, v)
        f[:2] -= np.round(f[:2])
        return cell.T @ f

    out = {"top": [], "bridge": [], "hollow": []}
    for i in edge:
        out["top"].append({"xy": pos[i, :2].copy(), "atoms": [i], "r": 0.0})
    # bridge: midpoint between edge atom and its +y neighbour (step direction)
    for i in edge:
        best = None
        for j in edge:
            v = mic3(pos[j] - pos[i])
            if j == i:
                v = cell[1].copy()  # own image along y (if cell is 1 atom wide)
            if abs(np.linalg.norm(v) - dnn) < 0.2 and v[1] > 0:
                best = v
        if best is None:
            best = np.array([0.0, dnn, 0.0])
        out["bridge"].append({"xy": pos[i, :2] + 0.5 * best[:2], "atoms": [i], "r": dnn / 2})
    # 3-fold hollows: triangles of mutual nearest neighbours among surface atoms
    # that include a step-edge atom.
    cand = []
    for i in edge:
        nbrs = []
        for j in surf:
            for sx in (-1, 0, 1):
                for sy in (-1, 0, 1):
                    v = pos[j] + sx * cell[0] + sy * cell[1] - pos[i]
                    if 0.1 < np.linalg.norm(v) < dnn + 0.2:
                        nbrs.append(pos[i] + v)
        for p in range(len(nbrs)):
            for q in range(p + 1, len(nbrs)):
                if abs(np.linalg.norm(nbrs[p] - nbrs[q]) - dnn) < 0.2:
                    tri = np.array([pos[i], nbrs[p], nbrs[q]])
                    c = tri.mean(axis=0)
                    cand.append({"xy": c[:2].copy(), "atoms": [i], "r": dnn / np.sqrt(3)})
    # dedupe by position
    uniq = []
    for c in cand:
        if all(np.linalg.norm(_mic2d((c["xy"] - u["xy"])[None], cell[:2, :2])[0]) > 0.3
               for u in uniq):
            uniq.append(c)
    out["hollow"] = uniq
    return out


def place_at_xy(slab: Atoms, ads: Atoms, xy, height: float, r_lat: float) -> Atoms:
    """Put ``ads`` (binding atom = index 0) above lateral point ``xy`` such that the
    shortest distance from the binding atom to any slab atom equals
    sqrt(height^2 + r_lat^2) (i.e. ``height`` above an ideal flat site)."""
    target = float(np.hypot(height, r_lat))
    pos = slab.positions
    cell = slab.cell[:]
    zmax = pos[:, 2].max()

    def dmin(z):
        p = np.array([xy[0], xy[1], z])
        best = np.inf
        for sx in (-1, 0, 1):
            for sy in (-1, 0, 1):
                d = np.linalg.norm(pos + sx * cell[0] + sy * cell[1] - p, axis=1).min()
                best = min(best, d)
        return best

    lo, hi = zmax - 1.5, zmax + target + 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if dmin(mid) < target:
            lo = mid
        else:
            hi = mid
    z = hi
    a = ads.copy()
    a.translate(np.array([xy[0], xy[1], z]) - a.positions[0])
    out = slab.copy()
    out.extend(a)
    return out


def add_ads(slab: Atoms, facet: str, ads_name: str, site: str, height: float,
            offset=(0, 0), a: float | None = None,
            site_211: dict | None = None) -> tuple[Atoms, int]:
    """Adds one adsorbate; returns (new slab, index of the binding atom)."""
    ads = adsorbate_atoms(ads_name)
    n0 = len(slab)
    if facet in ("111", "100"):
        out = slab.copy()
        add_adsorbate(out, ads, height, position=ASE_SITE[site], offset=offset, mol_index=0)
        out.set_constraint(slab.constraints)
    else:
        assert site_211 is not None
        out = place_at_xy(slab, ads, site_211["xy"], height, site_211["r"])
        out.set_constraint(slab.constraints)
    tags = out.get_tags()
    tags[n0:] = 0
    out.set_tags(tags)
    return out, n0


# ----------------------------------------------------------------------------
# site classification (111 / 100)
# ----------------------------------------------------------------------------

class SiteClassifier:
    """Nearest ideal site (lateral, minimum image) on an ideal (111)/(100) slab."""

    def __init__(self, slab: Atoms, facet: str):
        self.facet = facet
        self.cell2 = slab.cell[:2, :2].copy()
        tags = slab.get_tags()
        pos = slab.positions
        top = pos[tags == 1, :2]
        l2 = pos[tags == 2, :2]
        l3 = pos[tags == 3, :2]
        # bridges: midpoints of nearest-neighbour top-layer pairs
        br = []
        dists = []
        for i in range(len(top)):
            d = _mic2d(top - top[i], self.cell2)
            n = np.linalg.norm(d, axis=1)
            dists.append(n[n > 1e-3].min())
        dnn = min(dists)
        for i in range(len(top)):
            d = _mic2d(top - top[i], self.cell2)
            n = np.linalg.norm(d, axis=1)
            for j in np.where(np.abs(n - dnn) < 0.1)[0]:
                br.append(top[i] + 0.5 * d[j])
        self.sites = {"top": top, "bridge": np.array(br)}
        if facet == "111":
            self.sites["hcp"] = l2
            self.sites["fcc"] = l3
        elif facet == "100":
            self.sites["hollow"] = l2
        else:
            raise ValueError(facet)

    def classify(self, xy) -> str:
        best, bname = np.inf, "none"
        for name, pts in self.sites.items():
            d = np.linalg.norm(_mic2d(pts - np.asarray(xy)[None, :2], self.cell2), axis=1).min()
            if d < best:
                best, bname = d, name
        return bname


# ----------------------------------------------------------------------------
# gas phase
# ----------------------------------------------------------------------------

GAS = ["H2", "O2", "N2", "CO", "H2O", "OH", "NH3", "CH4"]


def gas_molecule(name: str, box: float = 12.0) -> Atoms:
    m = molecule(name)
    m.set_cell([box, box, box])
    m.center()
    m.pbc = False
    return m
