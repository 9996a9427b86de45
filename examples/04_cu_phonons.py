"""Phonon band structure, DOS and thermal properties of fcc Cu with phonopy."""

from ase.build import bulk

from geomformer_md.simulate.phonons import phonons

result = phonons(bulk("Cu", "fcc", a=3.62), supercell=(3, 3, 3), plot="cu_phonons.png")
print(result.summary())
print("written cu_phonons.png")
