import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location(
    "relax_path_drift", Path(__file__).parent.parent / "scripts" / "relax_path_drift.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)


def _row(cid, step, err, e_ref, ads="OH", kind="relax"):
    return {"file": "f", "config_id": cid, "kind": kind, "ads": ads, "step": step,
            "e_ref": e_ref, "err": err}


def test_drift_is_last_minus_first_in_step_order():
    # given out of order: steps 6, 0, 3
    rows = [_row("a", 6, 0.05, -1.0), _row("a", 0, -0.10, 0.0), _row("a", 3, 0.0, -0.5),
            _row("b", 0, 0.0, 0.0, ads="H"), _row("b", 3, 0.0, -0.1, ads="H"),
            _row("b", 6, -0.02, -0.2, ads="H"),
            _row("c", 0, 9.0, 0.0, kind="md"), _row("c", 1, 9.0, 0.0, kind="md"),
            _row("c", 2, 0.0, 0.0, kind="md"),
            _row("d", 0, 1.0, 0.0), _row("d", 1, 2.0, 0.0)]   # too short: skipped
    d = mod.path_drifts(rows)
    assert set(d) == {"OH", "H"}                               # md paths and short paths ignored
    np.testing.assert_allclose(d["OH"], [[0.15, -1.0, 0.05]])
    np.testing.assert_allclose(d["H"], [[-0.02, -0.2, -0.02]])
