"""Start a distillation arm from another run's finished iteration 0.

    python research/scripts/branch_distill_run.py RUN_DIR CONFIG.yaml

Iteration 0 (initial frames, validation set, the first committee) does not depend on
``selection`` or ``balance``: arms that differ only there share it, and this copies it into
CONFIG's out_dir (which must not exist) so the arm's first selection starts from the same
committee. ``space`` may differ only where it does not change iteration 0 (keys added to the
space code since RUN_DIR was made); anything else is refused.
"""
import json
import shutil
import sys
from pathlib import Path

import yaml

from geomformer_md.distill.config import distill_config_from_dict

src, cfg_path = Path(sys.argv[1]), Path(sys.argv[2])
raw = yaml.safe_load(cfg_path.read_text())
cfg = distill_config_from_dict(raw)
dst = Path(cfg.out_dir)
if dst.exists():
    raise SystemExit(f"{dst} exists: an arm starts in a new out_dir")
old = json.loads((src / "config.json").read_text())
new = json.loads(json.dumps(cfg.to_dict(), default=str))
diff = sorted(k for k in set(old) | set(new) if k != "iterations" and old.get(k) != new.get(k))
if not set(diff) <= {"selection", "balance", "out_dir", "space"}:
    raise SystemExit(f"{cfg_path} differs from {src} in {diff}: iteration 0 would differ")
dst.mkdir(parents=True)
for name in ["lattice_constants.json", "validation.extxyz"]:
    shutil.copy2(src / name, dst / name)
shutil.copytree(src / "validation", dst / "validation")
shutil.copytree(src / "iter_000", dst / "iter_000")
(dst / "data").mkdir()
shutil.copy2(src / "data" / "iter_000.extxyz", dst / "data" / "iter_000.extxyz")
rows = json.loads((src / "progress.json").read_text())[:1]
(dst / "progress.json").write_text(json.dumps(rows))
(dst / "config.json").write_text(json.dumps(new))
print("branched", src, "->", dst, "differs in", diff)
