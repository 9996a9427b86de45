"""Write pt111_co.data: a 6x6x4 Pt(111) slab with four CO molecules (C down, fcc sites),
LAMMPS atom types 1 = Pt, 2 = C, 3 = O (the order of pair_coeff in in.nvt)."""

from ase.build import add_adsorbate, fcc111, molecule

from geomformer_md.lammps.runner import to_lammps_frame, write_data

slab = fcc111("Pt", (6, 6, 4), vacuum=10.0)  # atoms 1-72 are the two bottom layers
co = molecule("CO")
co.rotate(180, "x")  # C towards the surface
for offset in [(0, 0), (3, 0), (0, 3), (3, 3)]:
    add_adsorbate(slab, co, 1.9, "fcc", offset=offset)
slab.pbc = (True, True, False)
write_data(to_lammps_frame(slab), "pt111_co.data", ["Pt", "C", "O"])
print(f"wrote pt111_co.data: {len(slab)} atoms ({slab.get_chemical_formula()})")
