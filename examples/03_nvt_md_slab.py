"""NVT (Langevin) MD of a Cu(111) slab with O and H at 500 K: trajectory, log and an energy/temperature plot."""

import numpy as np
from ase.build import add_adsorbate, fcc111

from geomformer_md.simulate.md import run_md

slab = fcc111("Cu", (3, 3, 4), vacuum=8.0)
add_adsorbate(slab, "O", 1.2, "fcc")
add_adsorbate(slab, "H", 1.0, "hcp", offset=(1, 1))
result = run_md(slab, ensemble="nvt-langevin", temperature_K=500, timestep_fs=1.0, steps=400,
                trajectory="slab_md.traj", log="slab_md.log", loginterval=10, seed=0)
print(result)

# The log is a CSV: step, time_ps, epot_eV, ekin_eV, etot_eV, temperature_K
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

log = np.genfromtxt("slab_md.log", delimiter=",", names=True)
fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(6, 5))
ax1.plot(log["time_ps"], log["epot_eV"], label="potential")
ax1.plot(log["time_ps"], log["etot_eV"], label="total")
ax1.set_ylabel("energy (eV)")
ax1.legend()
ax2.plot(log["time_ps"], log["temperature_K"])
ax2.axhline(500, color="0.5", ls="--")
ax2.set_ylabel("temperature (K)")
ax2.set_xlabel("time (ps)")
fig.tight_layout()
fig.savefig("slab_md.png", dpi=110)
print("written slab_md.traj, slab_md.log, slab_md.png")
