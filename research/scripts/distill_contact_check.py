"""How often the teacher rejects rattled adsorbate starts of the issue-24 space, by the
closest adsorbate-metal contact allowed at placement (space.min_contact).

The pilot (research/configs/distill-catalysis-pilot.yaml) lost 10 of its 40 initial frames,
all surfaces with adsorbates, to SevenNet-0 forces above teacher.max_force (15 eV/Å): their
closest adsorbate-metal pair was 0.71-0.83 of the covalent bond length after the rattle. This
labels the same kind of starts (surface+ads of the catalysis space, rattled as initial frames
are) with min_contact 0.75 (the default) and 0.9 and prints the share above 15 eV/Å.

Run (about a minute of one core; needs the teacher environment /work/venv-label):
    OMP_NUM_THREADS=1 nice -n 10 python research/scripts/distill_contact_check.py [N]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from geomformer_md.distill.config import load_distill_config
from geomformer_md.distill.run import _rattled
from geomformer_md.distill.space import Space
from geomformer_md.distill.teacher import Teacher, lattice_guess

CONFIG = "research/configs/distill-catalysis-pilot.yaml"


def main(n: int = 30) -> None:
    cfg = load_distill_config(CONFIG)
    stored = Path(cfg.out_dir) / "lattice_constants.json"  # the pilot's, if it ran
    a0 = (json.loads(stored.read_text()) if stored.exists()
          else {e: lattice_guess(e) for e in cfg.space.elements})
    teacher = Teacher(**{**cfg.teacher, "max_force": 1e9})
    print(f"teacher {teacher.name}: {teacher.version}")
    for contact in (0.75, 0.9):
        space = Space(dataclasses.replace(cfg.space, min_contact=contact,
                                          category_weights={"surface+ads": 1.0, "bulk": 0,
                                                            "alloy": 0, "surface": 0,
                                                            "cluster": 0, "cluster+ads": 0,
                                                            "gas": 0}), a0)
        rng = np.random.default_rng([0, 3])
        fmax = []
        for atoms in space.sample(rng, n):
            labelled, why = teacher.label(_rattled(atoms, rng, cfg.rattle))
            if labelled is None:
                print(f"  failed: {why}")
                continue
            fmax.append(np.linalg.norm(labelled.get_forces(), axis=1).max())
        fmax = np.array(fmax)
        print(f"min_contact {contact}: {len(fmax)} frames, max |F| median {np.median(fmax):.1f} "
              f"eV/Å, above 15 eV/Å: {(fmax > 15).sum()} ({(fmax > 15).mean():.0%}), above 10: "
              f"{(fmax > 10).sum()}")
    teacher.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
