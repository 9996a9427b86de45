"""research/scripts/arch_sweep.py: variants trained from one base config, a summary, skip when
done."""

import json
import sys
from pathlib import Path

import pytest
import yaml
from ase.io import write

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "research" / "scripts"))
import arch_sweep  # noqa: E402
from test_train import TINY_MODEL, emt_frames  # noqa: E402


def test_variant_parsing_and_validation(tmp_path):
    assert arch_sweep.parse_variant("base") == ("base", {}, {})
    text = "r:radial_mlp=32,lr=3e-3,edge_values=false,seed=1"
    name, model, training = arch_sweep.parse_variant(text)
    assert (name, model) == ("r", {"radial_mlp": 32, "edge_values": False})
    assert training == {"lr": 0.003, "seed": 1}
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        arch_sweep.parse_variant("r:radial_mlp")
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"out_dir": "x", "data": {"train_file": "f.extxyz"},
                                    "model": TINY_MODEL, "training": {"epochs": 9}}))
    with pytest.raises(ValueError, match="radial_mpl"):
        arch_sweep.variant_config(base, tmp_path / "r", 1, 4, {"radial_mpl": 8}, {})


def test_sweep_trains_each_variant_once(tmp_path, capsys):
    data = tmp_path / "emt.extxyz"
    write(data, emt_frames(16))
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "out_dir": "unused",
        "data": {"train_file": str(data), "val_fraction": 0.25, "test_fraction": 0.25},
        "model": TINY_MODEL,
        "training": {"epochs": 50, "lr": 3e-3, "warmup_steps": 2, "dtype": "float64"},
    }))
    args = [str(base), "--out", str(tmp_path / "sweep"), "--epochs", "1", "--batch-size", "4",
            "--nproc", "1", "--variant", "base", "--variant", "rmlp:radial_mlp=8"]
    assert arch_sweep.main(args) == 0
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert set(summary) == {"base", "rmlp"}
    assert summary["rmlp"]["model"]["radial_mlp"] == 8
    assert summary["rmlp"]["n_parameters"] > summary["base"]["n_parameters"]
    assert summary["base"]["steps"] == 2  # 1 epoch of the 8 training frames at batch 4
    capsys.readouterr()
    assert arch_sweep.main(args) == 0  # both finished: nothing is trained again
    assert capsys.readouterr().out.count("done already") == 2
