"""scripts/average_models.py: weight averages of model files ("model soups")."""

import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model

from geomformer_md import load_model, save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import average_models  # noqa: E402


def test_average_is_the_mean_of_the_weights(tmp_path):
    a, b = make_model("float64", seed=0), make_model("float64", seed=1)
    save_model(a, tmp_path / "a.pt")
    save_model(b, tmp_path / "b.pt")
    assert average_models.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                                "--out", str(tmp_path / "soup.pt")]) == 0
    soup = load_model(tmp_path / "soup.pt")
    for (name, p), pa, pb in zip(soup.state_dict().items(), a.state_dict().values(),
                                 b.state_dict().values(), strict=True):
        if p.is_floating_point():
            torch.testing.assert_close(p, (pa + pb) / 2, msg=name)
    assert soup.metadata["averaged_from"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]


def test_models_of_different_configs_are_refused(tmp_path, capsys):
    save_model(make_model("float64"), tmp_path / "a.pt")
    save_model(make_model("float64", d_model=8), tmp_path / "b.pt")
    with pytest.raises(SystemExit):
        average_models.main([str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                             "--out", str(tmp_path / "soup.pt")])
    assert "another config" in capsys.readouterr().err
    assert not (tmp_path / "soup.pt").exists()
