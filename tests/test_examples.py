"""Every example runs to completion with the shipped potential and writes what it promises."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import geomformer_md

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES = {
    "01_single_point.py": [],
    "02_adsorption_co_pt111.py": ["co_pt111.csv"],
    "03_nvt_md_slab.py": ["slab_md.traj", "slab_md.log", "slab_md.png"],
    "04_cu_phonons.py": ["cu_phonons.png"],
    "05_screening_batched.py": ["screening.csv"],
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not geomformer_md.list_potentials(), reason="no shipped potential"),
]


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_runs(script, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in CASES[script]:
        assert (tmp_path / name).is_file(), f"{script} did not write {name}"
    assert proc.stdout.strip(), "example printed nothing"
