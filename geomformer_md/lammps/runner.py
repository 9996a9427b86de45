"""Run LAMMPS with pair_style geomformer from Python: what the tests and the benchmark use.

``run_lammps`` writes a structure as a LAMMPS data file, runs an input script on N MPI
ranks (``mpirun`` and ``lmp`` of this environment), and reads back the per-atom dump and
the thermo table. Structures are turned into LAMMPS's orientation first (``to_lammps_frame``:
a along x, b in the xy plane), so that forces compare component by component.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.cell import Cell

from .build import lammps_run_env

NKTV2P_METAL = 1.6021765e6  # LAMMPS's pressure conversion in metal units (eV/Å^3 -> bar)


@dataclass
class LammpsResult:
    frames: list[dict[str, np.ndarray]]  # per-atom columns of each dumped step, sorted by id
    thermo: list[dict[str, float]]  # one row per thermo output
    log: str

    @property
    def dump(self) -> dict[str, np.ndarray]:
        """The last dumped step."""
        return self.frames[-1] if self.frames else {}


def to_lammps_frame(atoms):
    """A copy with the cell in LAMMPS's lower-triangular form (same fractional positions):
    for a cell already in that form, positions and forces are unchanged."""
    out = atoms.copy()
    out.set_cell(Cell.fromcellpar(atoms.cell.cellpar()), scale_atoms=True)
    return out


def write_data(atoms, path: str | os.PathLike, elements: list[str]) -> None:
    from ase.io.lammpsdata import write_lammps_data

    with open(path, "w") as fh:
        write_lammps_data(fh, atoms, specorder=elements, masses=True, units="metal",
                          atom_style="atomic", velocities=atoms.has("momenta"))


def mpirun_command(nprocs: int) -> list[str]:
    bin_ = Path(sys.prefix) / "bin"
    lmp = str(bin_ / "lmp") if (bin_ / "lmp").is_file() else "lmp"
    if nprocs == 1:
        return [lmp]
    mpirun = str(bin_ / "mpirun") if (bin_ / "mpirun").is_file() else "mpirun"
    return [mpirun, "-np", str(nprocs), lmp]


def run_lammps(script: str, workdir: str | os.PathLike, nprocs: int = 1, timeout: float = 600,
               dump: str | None = "dump.txt", check: bool = True) -> LammpsResult:
    """Run ``script`` (an input file's text) in ``workdir`` on ``nprocs`` ranks.

    With check=False a failed run returns its log (the tests read LAMMPS's error lines)."""
    workdir = Path(workdir)
    (workdir / "in.lmp").write_text(script)
    env = lammps_run_env()
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = mpirun_command(nprocs) + ["-in", "in.lmp", "-log", "log.lammps", "-nocite"]
    done = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    log = done.stdout + done.stderr
    if done.returncode and check:
        errors = [line for line in log.splitlines() if "ERROR" in line]
        raise RuntimeError(f"LAMMPS failed ({errors[0] if errors else log[-2000:]})")
    frames = _read_dump(workdir / dump) if dump and (workdir / dump).is_file() else []
    return LammpsResult(frames, _read_thermo(log), log)


def _read_dump(path: Path) -> list[dict[str, np.ndarray]]:
    """Every frame of a 'dump custom' file, rows sorted by atom id."""
    lines = path.read_text().splitlines()
    frames, n_atoms = [], 0
    for k, line in enumerate(lines):
        if line.startswith("ITEM: NUMBER OF ATOMS"):
            n_atoms = int(lines[k + 1])
        elif line.startswith("ITEM: ATOMS"):
            names = line.split()[2:]
            rows = np.array([row.split() for row in lines[k + 1 : k + 1 + n_atoms]], dtype=float)
            rows = rows[np.argsort(rows[:, names.index("id")])] if "id" in names else rows
            frames.append({name: rows[:, c] for c, name in enumerate(names)})
    return frames


def _read_thermo(log: str) -> list[dict[str, float]]:
    """Rows of every thermo table in the screen output (headers start with 'Step')."""
    rows, header = [], None
    for line in log.splitlines():
        words = line.split()
        if words[:1] == ["Step"]:
            header = words
        elif header and len(words) == len(header):
            try:
                rows.append(dict(zip(header, map(float, words), strict=True)))
            except ValueError:
                header = None
        else:
            header = None
    return rows
