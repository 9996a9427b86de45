import importlib.util
from pathlib import Path

import numpy as np

spec = importlib.util.spec_from_file_location(
    "relax_path_drift",
    Path(__file__).parent.parent / "research" / "scripts" / "relax_path_drift.py")
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


def test_split_parts_follow_the_trainers_split(tmp_path):
    import yaml
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from geomformer_md.train.config import load_train_config
    from geomformer_md.train.data import read_frames, split_indices

    frames = []
    for k in range(30):
        a = bulk("Cu", "fcc", a=3.6 + 0.001 * k)
        a.calc = SinglePointCalculator(a, energy=-3.0, forces=np.zeros((1, 3)))
        a.info.update(config_id=f"p{k // 3}", kind="relax", step=k % 3)
        frames.append(a)
    write(tmp_path / "main.extxyz", frames)
    write(tmp_path / "extra.extxyz", frames[:3])
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {
        "train_file": str(tmp_path / "main.extxyz"),
        "extra_train_files": [str(tmp_path / "extra.extxyz")],
        "val_fraction": 0.3, "test_fraction": 0.3, "split_key": "config_id"}}))
    rows = ([{"file": str(tmp_path / "main.extxyz"), "index": k} for k in range(30)]
            + [{"file": str(tmp_path / "extra.extxyz"), "index": k} for k in range(3)])
    mod.split_parts(rows, str(cfg))
    data = load_train_config(cfg).data
    want = {}
    split = split_indices(read_frames(data.train_file), data)
    for name, idx in zip(("train", "val", "test"), split, strict=True):
        want.update(dict.fromkeys(idx, name))
    assert [r["part"] for r in rows[:30]] == [want[k] for k in range(30)]
    assert {r["part"] for r in rows[:30]} == {"train", "val", "test"}
    assert [r["part"] for r in rows[30:]] == ["train"] * 3  # extra files only ever train
