"""The error metrics of training and of ``geomformer-md eval``: one definition for both.

- energy MAE (meV/atom): the mean over structures of |E_model - E_ref| / N_atoms.
- force MAE (meV/Å): the mean of |F_model - F_ref| over every Cartesian component of every
  atom of every structure (a structure counts with its number of atoms, as in MACE, NequIP
  and SevenNet), not a mean of per-structure means.
- stress MAE (meV/Å³): the mean over the 9 components of the stress of every structure that
  carries one (3-D periodic cells).

Forces are compared as the labeller gave them and as the model predicts them: constraints
(FixAtoms) never enter, on either side.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class ErrorSums:
    """Sums of absolute errors, in total and per category, one structure at a time."""

    def __init__(self) -> None:
        # e_abs, e_n, f_abs, f_n, s_abs, s_n (n: structures / components / components), and
        # the number of structures with forces and with stress
        self._sums = defaultdict(lambda: np.zeros(8))

    def add(self, energy: float, energy_ref: float, n_atoms: int, forces=None, forces_ref=None,
            stress=None, stress_ref=None, category=None) -> None:
        """One structure's predictions and labels (eV, eV/Å, eV/Å³); a label that is None
        is not counted."""
        row = np.zeros(8)
        if energy_ref is not None:
            row[:2] = abs(float(energy) - float(energy_ref)) / n_atoms, 1
        if forces_ref is not None:
            df = np.abs(np.asarray(forces, float) - np.asarray(forces_ref, float))
            row[2:4] = df.sum(), df.size
            row[6] = 1
        if stress_ref is not None and stress is not None:
            from ase.stress import voigt_6_to_full_3x3_stress

            full = [np.asarray(s, float) for s in (stress, stress_ref)]
            full = [voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s for s in full]
            ds = np.abs(full[0] - full[1])
            row[4:6] = ds.sum(), ds.size
            row[7] = 1
        self._sums[None] += row
        if category is not None:
            self._sums[str(category)] += row

    def add_sums(self, other: ErrorSums) -> None:
        for key, row in other._sums.items():
            self._sums[key] += row

    @staticmethod
    def _summary(row: np.ndarray, n_structures: int | None = None) -> dict:
        # plain floats: these go into checkpoints, which load with weights_only
        e_abs, e_n, f_abs, f_n, s_abs, s_n = (float(x) for x in row[:6])
        out = {
            "energy_mae_meV_atom": 1000 * e_abs / e_n if e_n else float("nan"),
            "forces_mae_meV_A": 1000 * f_abs / f_n if f_n else float("nan"),
            "stress_mae_meV_A3": 1000 * s_abs / s_n if s_n else float("nan"),
        }
        if n_structures is not None:
            out["n_structures"] = n_structures
        return out

    def summary(self) -> dict:
        """{energy_mae_meV_atom, forces_mae_meV_A, stress_mae_meV_A3} over every structure added
        (NaN where no label was added)."""
        return self._summary(self._sums[None])

    def counts(self) -> dict:
        """How many structures carried each label: {"energy": n, "forces": n, "stress": n}."""
        row = self._sums[None]
        return {"energy": int(row[1]), "forces": int(row[6]), "stress": int(row[7])}

    def by_category(self) -> dict:
        """Category -> the same dict as summary(), with n_structures, sorted by category."""
        return {key: self._summary(row, int(row[1])) for key, row in sorted(
            ((k, v) for k, v in self._sums.items() if k is not None), key=lambda kv: kv[0])}


def zero_force_atoms(forces) -> np.ndarray:
    """Mask of the atoms whose labelled force is exactly (0, 0, 0) in a structure where other
    atoms' forces are not: the signature of fixed atoms labelled by ``atoms.get_forces()``
    under FixAtoms, which zeroes them (a labeller's force is never exactly zero on an atom
    whose neighbours feel forces). A structure whose forces are all zero (a perfect crystal
    computed with symmetry) is not flagged."""
    f = np.asarray(forces)
    zero = ~np.any(f != 0.0, axis=1)
    return zero if (zero.any() and not zero.all()) else np.zeros(len(f), bool)


def zero_force_message(n_frames: int, example: str, n_atoms: int, source: str) -> str:
    """The warning for frames with zeroed forces, telling how to label them."""
    return (f"{source}: {n_frames} frame(s) have atoms whose force label is exactly zero while "
            f"others are not (e.g. {example}: {n_atoms} atoms), typically fixed atoms labelled "
            f"with atoms.get_forces(), which zeroes the forces of FixAtoms atoms. Those are not "
            f"the labeller's forces: store atoms.get_forces(apply_constraint=False) (or the "
            f"calculator's results['forces']), or remove the constraint before labelling")


def totals(res: dict) -> dict:
    """An evaluation without its per-category errors and parity data."""
    return {k: v for k, v in res.items() if k not in ("pairs", "categories")}


def final_report(metrics: dict) -> str:
    """The final errors, starting model -> trained model, per split and category."""
    lines = [f"{'':22s}{'energy meV/atom':>22s}{'forces meV/Å':>22s}   (starting model -> trained)"]

    def line(label, a, b, n):
        nan = float("nan")
        e = (f"{a.get('energy_mae_meV_atom', nan):8.2f} -> "
             f"{b.get('energy_mae_meV_atom', nan):8.2f}")
        f = f"{a.get('forces_mae_meV_A', nan):8.1f} -> {b.get('forces_mae_meV_A', nan):8.1f}"
        lines.append(f"{label[:22]:22s}{e:>22s}{f:>22s}   n={n}")

    for name in ("val", "test"):
        if not metrics[name]:
            continue
        line(name, metrics["start"][name], metrics[name], metrics[name].get("n_structures", ""))
        for cat, v in metrics.get(f"{name}_categories", {}).items():
            before = metrics["start"][f"{name}_categories"].get(cat, {})
            line(f"  {cat}", before, v, v["n_structures"])
    if "replay" in metrics:
        r = metrics["replay"]
        lines.append(f"replay frames: the trained model is {r['energy_mae_meV_atom']:.2f} "
                     f"meV/atom and {r['forces_mae_meV_A']:.1f} meV/Å from the starting model's "
                     "labels")
    return "final errors:\n" + "\n".join(lines)
