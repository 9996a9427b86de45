"""Force errors of models on the nanoparticle frames of the out-of-domain benchmark, split
at 15 atoms (mean of per-frame force MAEs, meV/Å; float64).

    python research/training-runs/catalysis-v12/nanoparticle_errors.py geomformer-catalysis-v11 runs/catalysis-v12c/model.pt
"""
import sys, numpy as np
from ase.io import read
from geomformer_md.simulate.batch import BatchEvaluator
fr = [a for a in read("data/ood-benchmark/frames.extxyz.xz", ":") if a.info.get("category") == "nanoparticle"]
small = [i for i, a in enumerate(fr) if len(a) <= 15]
for p in sys.argv[1:]:
    res = BatchEvaluator(p, dtype="float64").evaluate(fr)
    err = [np.abs(r["forces"] - a.get_forces()).mean() * 1000 for r, a in zip(res, fr)]
    print(f"{p:45s} all {np.mean(err):6.0f}  <=15 atoms {np.mean([err[i] for i in small]):6.0f}  >15 {np.mean([e for i, e in enumerate(err) if i not in small]):6.0f}")
