"""Misbehaving teachers for tests/test_distill_teacher.py, imported by the teacher worker
(which runs in its own process and so needs them importable without pytest): only ASE."""

import os
import signal
import time

from ase.calculators.emt import EMT


def _oxidised(atoms) -> bool:
    return "O" in atoms.get_chemical_symbols() and len(atoms) > 1


class CrashingEMT(EMT):
    """EMT whose process dies (SIGKILL, as a segfault or the OOM killer would) on any
    structure with oxygen and another atom."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if _oxidised(atoms):
            os.kill(os.getpid(), signal.SIGKILL)
        super().calculate(atoms, properties, system_changes or [])


class HangingEMT(EMT):
    """EMT that never returns on a structure with oxygen and another atom."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if _oxidised(atoms):
            time.sleep(3600)
        super().calculate(atoms, properties, system_changes or [])


class RaisingEMT(EMT):
    """EMT that raises (an SCF failure) on a structure with oxygen and another atom."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        if _oxidised(atoms):
            raise RuntimeError("SCF did not converge\nafter 300 iterations")
        super().calculate(atoms, properties, system_changes or [])


class Chatty(EMT):
    """EMT that prints to stdout on every call (must not disturb the protocol)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        print("iteration 1 energy -1.0 {not json")
        super().calculate(atoms, properties, system_changes or [])


def broken(**kwargs):
    raise RuntimeError("licence server down")


class BondedH2EMT(EMT):
    """EMT plus a stiff harmonic bond (150 eV/Å², 0.74 Å) between H atoms closer than 1.2 Å:
    a labeller that keeps an H2 molecule that plain EMT pulls apart (md_stability tests)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        import numpy as np

        super().calculate(atoms, properties, system_changes or [])
        h = np.flatnonzero(self.atoms.numbers == 1)
        energy, forces = 0.0, np.zeros((len(self.atoms), 3))
        for n, i in enumerate(h):
            for j in h[n + 1:]:
                v = self.atoms.positions[j] - self.atoms.positions[i]
                d = float(np.linalg.norm(v))
                if d < 1.2:
                    energy += 150.0 * (d - 0.74) ** 2
                    f = -300.0 * (d - 0.74) * v / d  # on j; minus that on i
                    forces[j] += f
                    forces[i] -= f
        self.results["energy"] += energy
        self.results["free_energy"] += energy
        self.results["forces"] = self.results["forces"] + forces
