"""The surface of a slab: its atomic layers and its adsorption sites.

Sites come from ASE: slabs built by ``ase.build.fcc111/fcc100/fcc110/hcp0001/
bcc100/bcc110/bcc111`` carry ``info["adsorbate_info"]["sites"]`` with the
symmetry-distinct sites of the surface unit cell, and ``ase.build.add_adsorbate``
places an adsorbate on them by name. ``ase.build.fcc211`` carries no sites, so
:func:`with_fcc211_sites` derives a few from the step geometry of the built slab.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms

_LAYER_TOL = 0.3  # Å: atoms within this z range form one layer (prebuilt slabs without tags)


def surface_layers(slab: Atoms) -> np.ndarray:
    """Layer index per atom, 1 = top. Uses ASE's tags when set, else z clustering."""
    tags = slab.get_tags()
    if len(tags) and tags.min() >= 1:
        return tags.astype(int)
    z = slab.positions[:, 2]
    order = np.argsort(-z)
    layer = np.zeros(len(slab), int)
    current, ztop = 1, z[order[0]]
    for i in order:
        if ztop - z[i] > _LAYER_TOL:
            current, ztop = current + 1, z[i]
        layer[i] = current
    return layer


def _wrap_xy(d: np.ndarray, cell2: np.ndarray) -> np.ndarray:
    """Shortest 2-D images of xy differences ``d [..., 2]`` in the lattice ``cell2`` (rows)."""
    frac = d @ np.linalg.inv(cell2)
    frac -= np.round(frac)
    best = None
    for i in (-1, 0, 1):  # rounding alone is not the minimum image in skewed cells
        for j in (-1, 0, 1):
            cand = (frac + [i, j]) @ cell2
            if best is None:
                best = cand
            else:
                take = np.linalg.norm(cand, axis=-1) < np.linalg.norm(best, axis=-1)
                best = np.where(take[..., None], cand, best)
    return best


def with_fcc211_sites(slab: Atoms) -> Atoms:
    """A copy of an ``ase.build.fcc211`` slab with step sites and layer tags.

    Sites, derived from the atom rows of the slab (not from tabulated numbers):
    ``step_ontop`` (on a step-edge atom), ``step_bridge`` (between two edge atoms
    along the step), ``step_fcc`` / ``step_hcp`` (3-fold hollows of the upper
    terrace touching the edge), ``step_hollow4`` (4-fold hollow of the (100)
    step facet, the B5 site). One 211 layer (tag) is 3 rows, as in ase.build.
    """
    slab = slab.copy()
    pos = slab.positions
    rows = surface_layers(Atoms(slab.get_chemical_symbols(), positions=pos))  # 1 = top row
    cell2 = slab.cell[:2, :2]
    edge = np.where(rows == 1)[0]
    if len(edge) == 0 or rows.max() < 4:
        raise ValueError("slab is too thin to locate a (211) step (needs >= 4 atom rows)")
    e0 = edge[np.argmin(pos[edge, 1])]
    # Primitive surface cell: one step repeat across (x), one edge spacing along (y).
    n_steps = len(np.unique(np.round(pos[edge, 0], 2)))
    n_along = len(edge) // n_steps
    prim = np.array([cell2[0] / n_steps, cell2[1] / n_along])
    b = prim[1]

    def nearest(idx, xy, k=1):
        d = np.linalg.norm(_wrap_xy(pos[idx, :2] - xy, cell2), axis=1)
        return idx[np.argsort(d)[:k]]

    def unwrap(i, ref_xy):  # xy of atom i, imaged next to ref_xy
        return ref_xy + _wrap_xy(pos[i, :2] - ref_xy, cell2)

    p0 = pos[e0, :2]
    row2 = np.where(rows == 2)[0]
    row3 = np.where(rows == 3)[0]
    sites = {"step_ontop": p0, "step_bridge": p0 + b / 2}
    # Upper-terrace hollows touching the edge: (edge, edge, row2) and (edge, row2, row2).
    t = nearest(row2, p0 + b / 2)[0]
    tri_a = [p0, p0 + b, unwrap(t, p0 + b / 2)]
    t1, t2 = nearest(row2, p0, k=2)
    tri_b = [p0, unwrap(t1, p0), unwrap(t2, p0)]
    for tri, zs in (
        (tri_a, [pos[e0, 2], pos[e0, 2], pos[t, 2]]),
        (tri_b, [pos[e0, 2], pos[t1, 2], pos[t2, 2]]),
    ):
        corners = np.column_stack([np.array(tri), zs])
        name = "step_hcp" if _atom_beneath(slab, corners) else "step_fcc"
        sites[name] = np.mean(tri, axis=0)
    # (100) step facet: the edge pair and the row-3 pair on the step-down side.
    s = nearest(row3, p0)[0]
    sites["step_hollow4"] = (p0 + unwrap(s, p0)) / 2 + b / 2
    if set(sites) != {"step_ontop", "step_bridge", "step_fcc", "step_hcp", "step_hollow4"}:
        raise ValueError(
            "could not tell the fcc and hcp step hollows apart; is this an fcc(211) slab?"
        )
    # Store as ASE does: fractional coordinates of the primitive surface cell.
    inv = np.linalg.inv(prim)
    info = {
        "cell": prim,
        "sites": {k: tuple(float(x) for x in (v @ inv)) for k, v in sites.items()},
        "top layer atom index": int(np.argmax(pos[:, 2])),
    }
    slab.info["adsorbate_info"] = info
    if slab.get_tags().max() < 1:
        slab.set_tags((rows - 1) // 3 + 1)
    return slab


def _atom_beneath(slab: Atoms, corners: np.ndarray) -> bool:
    """True if a deeper atom sits under the centre of a 3-fold hollow (an hcp site).

    Works along the normal of the triangle, so it holds on tilted microfacets too.
    """
    n = np.cross(corners[1] - corners[0], corners[2] - corners[0])
    n /= np.linalg.norm(n)
    if n[2] < 0:
        n = -n
    c = corners.mean(axis=0)
    cell2 = slab.cell[:2, :2]
    d = slab.positions - c
    d[:, :2] = _wrap_xy(d[:, :2], cell2)
    depth = -(d @ n)  # > 0 below the facet
    lateral = np.linalg.norm(d + depth[:, None] * n, axis=1)
    return bool(np.any((depth > 1.0) & (depth < 3.0) & (lateral < 0.6)))


def site_positions(slab: Atoms) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Site name -> xy (Å) of one instance, and the primitive surface cell [2, 2] (rows)."""
    info = slab.info.get("adsorbate_info", {})
    sites = info.get("sites") or {}
    if not sites:
        raise ValueError(
            "this slab has no adsorption-site information: build it with ase.build "
            "(fcc111, fcc100, fcc110, hcp0001, bcc100/110/111), use with_fcc211_sites() on an "
            "ase.build.fcc211 slab, or pass a spec like 'Pt111'"
        )
    cell2 = np.asarray(info.get("cell", slab.cell[:2, :2]), float)
    return {k: np.asarray(v, float) @ cell2 for k, v in sites.items()}, cell2


def site_images(slab: Atoms) -> dict[str, np.ndarray]:
    """Site name -> xy [k, 2] of every symmetry-equivalent instance in the slab's cell.

    ASE lists one instance per site type (e.g. one of the three bridge orientations
    of fcc(111)); the others follow from the symmetry operations of the slab
    (spglib) that keep the top side on top.
    """
    import warnings

    sites, _ = site_positions(slab)
    cell = np.array(slab.cell[:])
    ops = [(np.eye(3, dtype=int), np.zeros(3))]
    if np.allclose(cell[2, :2], 0.0) and abs(cell[2, 2]) > 0:
        try:
            import spglib

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                sym = spglib.get_symmetry(
                    (cell, slab.get_scaled_positions(), slab.numbers), symprec=1e-3
                )
        except ImportError:
            sym = None
        if sym:
            ops += [
                (r, t)
                for r, t in zip(sym["rotations"], sym["translations"], strict=True)
                if np.array_equal(r[2], [0, 0, 1]) and abs(t[2] - round(t[2])) < 1e-6
            ]
    ztop = slab.positions[:, 2].max() + 1.0
    cell2 = cell[:2, :2]
    out = {}
    for name, xy in sites.items():
        f = np.linalg.solve(cell.T, [xy[0], xy[1], ztop])
        imgs = np.array([((r @ f + t) @ cell)[:2] for r, t in ops])
        frac = np.round(imgs @ np.linalg.inv(cell2), 6) % 1.0  # into the cell, then dedupe
        out[name] = np.unique(np.round(frac, 6) % 1.0, axis=0) @ cell2
    return out


def nearest_site(slab: Atoms, xy) -> tuple[str, float]:
    """The name of the site nearest to ``xy`` (any symmetry-equivalent instance) and the
    lateral distance to it (Å)."""
    cell2 = slab.cell[:2, :2]
    best, dist = "", math.inf
    for name, imgs in site_images(slab).items():
        d = np.linalg.norm(_wrap_xy(np.asarray(xy, float)[:2] - imgs, cell2), axis=-1).min()
        if d < dist - 1e-9:
            best, dist = name, float(d)
    return best, dist


# A metal atom counts as touching an adsorbate atom within this fraction of the nearest
# one's distance; beyond DESORBED_RATIO covalent bond lengths nothing touches (as the
# adsorption table's "desorbed"). On Pt(111), O in a hollow is 2.05 Å from its three Pt
# atoms and 3.4 Å from the next; H 1.87 Å and 3.3 Å; the atom beneath a (100) hollow
# is 1.4x the distance of the four around it.
SITE_SHELL = 1.2
DESORBED_RATIO = 1.5


def site_by_coordination(atoms: Atoms, index: int, metals=None) -> tuple[str, int]:
    """The site of atom ``index`` (an adsorbate's binding atom) from the metal atoms it
    touches, on any slab, facet, alloy or particle (no ASE site table needed).

    Returns ``(site, n)``: ``n`` metal atoms touch it (those within SITE_SHELL x the
    nearest one's distance); site is ``"top"`` (1), ``"bridge"`` (2), ``"fcc"`` or
    ``"hcp"`` (3: ``"hcp"`` when a metal atom lies right beneath the triangle, 1-3 Å
    deep along its normal and within 0.6 Å of its axis, as on (111) and on the facets
    of particles), ``"hollow4"`` (4, the (100) hollow), ``"hollow5"`` ... and
    ``"desorbed"`` (0: no metal atom within DESORBED_RATIO covalent bond lengths).

    Args:
        atoms: the structure (periodic images count where it is periodic).
        index: the atom whose site is wanted.
        metals: indices of the metal atoms (default: every atom that is not H, C, N, O).
    """
    if metals is None:
        metals = np.flatnonzero(~np.isin(atoms.numbers, (1, 6, 7, 8)))
    metals = np.asarray([m for m in metals if m != index], int)
    if not len(metals):
        return "desorbed", 0
    from ase.data import covalent_radii

    vec = atoms.get_distances(index, metals, mic=bool(atoms.pbc.any()), vector=True)
    d = np.linalg.norm(vec, axis=1)
    ratio = d / (covalent_radii[atoms.numbers[index]] + covalent_radii[atoms.numbers[metals]])
    if ratio.min() > DESORBED_RATIO:
        return "desorbed", 0
    near = np.flatnonzero(d <= SITE_SHELL * d.min())
    n = len(near)
    if n == 1:
        return "top", 1
    if n == 2:
        return "bridge", 2
    if n > 3:
        return f"hollow{n}", n
    # 3-fold: is there a metal atom under the triangle (positions relative to the adsorbate
    # atom, images included)?
    corners = vec[near]
    normal = np.cross(corners[1] - corners[0], corners[2] - corners[0])
    normal /= np.linalg.norm(normal)
    centre = corners.mean(axis=0)
    if normal @ centre > 0:  # point away from the metal, towards the adsorbate (origin)
        normal = -normal
    rel = vec - centre
    depth = -(rel @ normal)
    lateral = np.linalg.norm(rel + depth[:, None] * normal, axis=1)
    beneath = (depth > 1.0) & (depth < 3.0) & (lateral < 0.6)
    return ("hcp" if beneath.any() else "fcc"), 3
