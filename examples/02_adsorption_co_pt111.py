"""CO on every site of Pt(111): relax each, subtract slab and CO(g), print the table (most stable first)."""

from geomformer_md.simulate.catalysis import adsorption_energies

table = adsorption_energies("Pt111", "CO", fix_bottom_layers=2, fmax=0.05, csv="co_pt111.csv")
print(table)
print("written co_pt111.csv")
