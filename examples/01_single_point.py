"""Energy, forces, stress and per-atom energies of a few structures with the shipped potential."""

from ase.build import add_adsorbate, bulk, fcc111

from geomformer_md import GeoMFormerCalculator

calc = GeoMFormerCalculator()  # the default shipped potential; device="cuda" on a GPU

cu = bulk("Cu", "fcc", a=3.62, cubic=True)
cu.calc = calc
print(f"Cu bulk   E = {cu.get_potential_energy():10.4f} eV   stress (eV/Å³) = {cu.get_stress().round(5)}")

slab = fcc111("Pt", (3, 3, 4), vacuum=10.0)
add_adsorbate(slab, "O", 1.2, "fcc")
slab.calc = calc
forces = slab.get_forces()
print(f"O/Pt(111) E = {slab.get_potential_energy():10.4f} eV   max |F| = {abs(forces).max():.3f} eV/Å")
print(f"energy of the O atom: {slab.get_potential_energies()[-1]:.4f} eV")
