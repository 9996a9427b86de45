"""Fine-tuning: reference energies, replay, freezing, the starting model's row, one error
definition in the trainer and in eval, zeroed fixed-atom forces, config checks before data."""

import csv
import json
import re

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.data import covalent_radii
from ase.io import write
from conftest import SPECIES, make_model
from test_train import TINY_MODEL, emt_frames, emt_labelled

from geomformer_md import load_potential, save_model
from geomformer_md.cli import main
from geomformer_md.train import train, train_config_from_dict
from geomformer_md.train.data import collate_samples, read_frames, split_indices
from geomformer_md.train.trainer import Trainer, batch_errors

QUIET = {"progress": False, "log": lambda *a: None}
CU, O, PT = 29, 8, 78


@pytest.fixture(scope="module")
def base_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "base.pt"
    save_model(make_model("float64", **TINY_MODEL), path)
    return path


def sized_frames(n=16, seed=1):
    """EMT Cu / Cu+O frames of 4, 12 and 36 atoms (so per-frame and per-atom means differ)."""
    frames = []
    for k, a in enumerate(emt_frames(n, seed)):
        if k % 4 == 1:
            a = emt_labelled(a.repeat((3, 1, 1)))
        elif k % 4 == 3:
            a = emt_labelled(a.repeat((3, 3, 1)))
        a.info["config_type"] = "bulk" if a.pbc.all() else "slab"
        frames.append(a)
    return frames


def ft_config(train_file, out_dir, base_file, replay=0, **training):
    t = {"epochs": 1, "batch_size": 4, "lr": 3e-3, "warmup_steps": 2, "num_threads": 1,
         "dtype": "float64", "checkpoint_every": 2}
    t.update(training)
    return {
        "out_dir": str(out_dir), "init_from": str(base_file),
        "data": {"train_file": str(train_file), "val_fraction": 0.25, "test_fraction": 0.25,
                 "split_key": "config_id", "category_key": "config_type", "max_force": 1e3},
        "training": t, "replay": {"frames": replay},
    }


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("ft") / "frames.extxyz"
    write(path, sized_frames())
    return path


def e0_of(model, z):
    return float(model.e0[model.config.species.index(z)])


def test_elements_absent_from_the_new_data_keep_their_reference_energies(base_file, data_file,
                                                                        tmp_path):
    # A new labeller with another zero of energy: every label shifted by -7 eV per atom.
    frames = read_frames(data_file)
    for a in frames:
        r = a.calc.results
        a.calc = SinglePointCalculator(a, energy=r["energy"] - 7.0 * len(a), forces=r["forces"])
    write(tmp_path / "shifted.extxyz", frames)
    base = load_potential(base_file)
    lines = []

    def refit(path, **top):
        cfg = {**ft_config(path, tmp_path / "run", base_file), **top}
        return Trainer(train_config_from_dict(cfg), progress=False, log=lines.append).model

    plain, shifted = refit(data_file), refit(tmp_path / "shifted.extxyz")
    for z in SPECIES:
        if z in (CU, O):  # in the new data: moved to the new zero of energy, exactly
            assert e0_of(shifted, z) - e0_of(plain, z) == pytest.approx(-7.0, abs=1e-9)
        else:  # absent: the base model's, and the log says so
            assert e0_of(shifted, z) == e0_of(base, z)
    log = "\n".join(lines)
    assert re.search(r"Pt\s+\S+ eV kept \(not in the new data\)", log)
    assert re.search(r"Cu\s+\S+ ->\s+\S+ eV", log)
    kept = refit(tmp_path / "shifted.extxyz", refit_e0=False)  # false of earlier versions = none
    assert all(e0_of(kept, z) == e0_of(base, z) for z in SPECIES)
    with pytest.raises(ValueError, match=r"refit_e0: all needs every element.*'H'"):
        refit(tmp_path / "shifted.extxyz", refit_e0="all")
    # The trained model keeps them too (e0 is not a trained parameter).
    train(ft_config(tmp_path / "shifted.extxyz", tmp_path / "t", base_file), **QUIET)
    tuned = load_potential(tmp_path / "t" / "model.pt")
    assert all(e0_of(tuned, z) == e0_of(shifted, z) for z in SPECIES)


def test_replay_frames_are_the_starting_models_labels_and_enter_the_loss(base_file, data_file,
                                                                         tmp_path):
    cfg = ft_config(data_file, tmp_path / "r", base_file, replay=8)
    cfg["replay"]["weight"] = 2.5
    trainer = Trainer(train_config_from_dict(cfg), **QUIET)
    replay = trainer.replay_set
    assert len(replay) == 8 and all(s.weight == 2.5 for s in replay)
    assert all(any(s is r for s in trainer.train_set) for r in replay)
    # Nothing made only of the new data's elements (Cu, O): that chemistry is what changes.
    assert all(not set(s.graph.numbers.tolist()) <= {CU, O} for s in replay)
    # Pseudo-labels: the starting model reproduces them exactly.
    start = trainer.evaluate(replay)
    assert start["energy_mae_meV_atom"] < 1e-8 and start["forces_mae_meV_A"] < 1e-8
    # Their weight multiplies every loss term; the metrics stay unweighted.
    batch = collate_samples(replay)
    out = {"energy": batch.energy + 0.1 * batch.n_atoms, "forces": batch.forces + 0.1}
    err = batch_errors(out, batch)
    assert float(err["e_sq"]) == pytest.approx(2.5 * 0.01 * len(replay))
    assert float(err["f_sq"]) == pytest.approx(2.5 * 0.01 * batch.forces.numel())
    assert float(err["f_abs"]) == pytest.approx(0.1 * batch.forces.numel())
    res = trainer.run()
    plain = train(ft_config(data_file, tmp_path / "p", base_file, replay=0), **QUIET)
    assert res["test"] != plain["test"]  # the replay frames changed the training
    rows = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    assert float(rows[0]["replay_forces_mae_meV_A"]) < 1e-8  # epoch 0: the starting model
    assert float(rows[1]["replay_forces_mae_meV_A"]) > 0  # trained: it moved, and it is measured


def test_replay_is_resampled_every_epoch_and_a_resumed_run_sees_the_same(base_file, data_file,
                                                                         tmp_path):
    cfg = ft_config(data_file, tmp_path / "a", base_file, replay=6, epochs=2)
    trainer = Trainer(train_config_from_dict(cfg), **QUIET)
    first = [s.graph.positions.clone() for s in trainer.replay.samples(0)]
    second = trainer.replay.samples(1)
    assert len(second) == len(first) == 6
    assert not all(torch.equal(a, b.graph.positions) for a, b in zip(first, second, strict=True))
    straight = trainer.run()
    part = train(ft_config(data_file, tmp_path / "b", base_file, replay=6, epochs=2,
                           max_steps=trainer.steps_per_epoch + 1), **QUIET)  # stops in epoch 2
    assert not part["complete"]
    resumed = train(ft_config(data_file, tmp_path / "b", base_file, replay=6, epochs=2),
                    resume=True, **QUIET)
    assert resumed["test"] == pytest.approx(straight["test"], rel=1e-9)
    assert resumed["replay"] == pytest.approx(straight["replay"], rel=1e-9, nan_ok=True)


def test_generated_replay_structures_are_reproducible_and_sane():
    from ase.build import bulk as ase_bulk

    from geomformer_md.train.replay import generate_replay_structures

    def a0(symbol):
        return ase_bulk(symbol).cell.cellpar()[0] * 2**0.5

    one = generate_replay_structures(SPECIES, 40, a0, covered={CU, O}, seed=3)
    two = generate_replay_structures(SPECIES, 40, a0, covered={CU, O}, seed=3)
    assert [a.get_chemical_formula() for a in one] == [a.get_chemical_formula() for a in two]
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(one, two, strict=True))
    kinds = {a.info["replay"].split("/")[0] for a in one}
    assert kinds == {"bulk", "slab", "adsorbate", "gas"}
    for a in one:
        z = set(a.numbers.tolist())
        assert z <= set(SPECIES) and not z <= {CU, O}
        d = a.get_all_distances(mic=True) + 1e3 * np.eye(len(a))
        bond = covalent_radii[a.numbers][:, None] + covalent_radii[a.numbers][None, :]
        assert (d > 0.6 * bond).all(), a.info["replay"]  # no atoms on top of each other


def test_epoch_zero_row_and_trainer_errors_equal_eval(base_file, data_file, tmp_path, capsys):
    cfg = {**ft_config(data_file, tmp_path / "run", base_file), "refit_e0": "none"}
    cfg["data"].update(split_key=None, val_fraction=0.4)
    res = train(cfg, **QUIET)
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rows[0]["epoch"] == "0" and rows[0]["step"] == "0"
    frames = read_frames(data_file)
    _, val, test = split_indices(frames, train_config_from_dict(cfg).data)
    sizes = {len(frames[k]) for k in val}
    assert len(sizes) > 1  # different sizes: a per-frame mean of forces would differ

    def eval_mae(model, idx, name):
        chosen = []
        for k in idx:  # FixAtoms in the file must not change what is compared
            a = frames[k].copy()
            a.calc = frames[k].calc
            a.set_constraint(FixAtoms(indices=[0]))
            chosen.append(a)
        write(tmp_path / name, chosen)
        assert main(["eval", str(tmp_path / name), "--model", str(model), "--dtype", "float64",
                     "--device", "cpu", "--by", "config_type"]) == 0
        out = capsys.readouterr().out
        m = re.search(r"MAE against the file's labels: "
                      r"energy ([\d.]+) meV/atom \(n=\d+\), forces ([\d.]+) meV/Å", out)
        return float(m.group(1)), float(m.group(2)), out

    e, f, _ = eval_mae(base_file, val, "val.extxyz")  # the starting model on val: row 0
    assert float(rows[0]["val_energy_mae_meV_atom"]) == pytest.approx(e, abs=0.006)
    assert float(rows[0]["val_forces_mae_meV_A"]) == pytest.approx(f, abs=0.006)
    e, f, out = eval_mae(tmp_path / "run" / "model.pt", test, "test.extxyz")  # the trained model
    assert res["test"]["energy_mae_meV_atom"] == pytest.approx(e, abs=0.006)
    assert res["test"]["forces_mae_meV_A"] == pytest.approx(f, abs=0.006)
    for cat, v in res["test_categories"].items():  # per category, in both
        assert f"config_type={cat}: energy {v['energy_mae_meV_atom']:.2f}" in out
    # per-category columns in metrics.csv; the starting model's errors in the report; plots
    assert any(k.startswith("val_forces_mae_meV_A[") for k in rows[0])
    report = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    row0 = float(rows[0]["val_forces_mae_meV_A"])
    assert report["start"]["val"]["forces_mae_meV_A"] == pytest.approx(row0)
    assert set(report["start"]["test_categories"]) == set(report["test_categories"])
    assert all((tmp_path / "run" / name).is_file() for name in ("parity.png", "parity-val.png"))


def test_zeroed_forces_of_fixed_atoms_are_reported(base_file, tmp_path, capsys):
    frames = []
    for k in range(8):
        slab = fcc111("Cu", (2, 2, 3), vacuum=5.0)
        slab.info.clear()
        slab.rattle(0.05, seed=k)
        slab.set_constraint(FixAtoms(indices=[a.index for a in slab if a.tag == 3]))
        slab.calc = EMT()
        # The common mistake: get_forces() applies FixAtoms and returns zeros for fixed atoms.
        e, f = slab.get_potential_energy(), slab.get_forces()
        slab.calc = SinglePointCalculator(slab, energy=e, forces=f)
        slab.info["config_id"] = f"s{k}"
        frames.append(slab)
    good = bulk("Cu", cubic=True)
    good.calc = SinglePointCalculator(good, energy=-1.0, forces=np.zeros((4, 3)))  # all zero: fine
    write(tmp_path / "fixed.extxyz", frames + [good])
    lines = []
    cfg = ft_config(tmp_path / "fixed.extxyz", tmp_path / "run", base_file)
    Trainer(train_config_from_dict(cfg), progress=False, log=lines.append)
    warned = [line for line in lines if "exactly zero" in line]
    assert len(warned) == 3  # train, val and test each hold some of the 8 flagged frames
    assert "apply_constraint=False" in warned[0] and "4 atoms" in warned[0]
    assert main(["eval", str(tmp_path / "fixed.extxyz"), "--model", str(base_file),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "8 frame(s) have atoms whose force label is exactly zero" in err


def test_bad_config_is_refused_before_the_data_is_read(base_file, tmp_path, capsys):
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("this is not a structure file\n")  # reading it would fail
    cfg = ft_config(garbage, tmp_path / "run", base_file)

    def refused(raw, message, text=None):
        path = tmp_path / "cfg.yaml"
        path.write_text(text if text is not None else yaml.safe_dump(raw))
        with pytest.raises((ValueError, FileExistsError, FileNotFoundError), match=message):
            train(str(path), **QUIET)
        assert main(["train", str(path)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0] and re.search(message, err[0])

    text = yaml.safe_dump(cfg).replace("lr: 0.003", "lr: '2e-4'")
    refused(None, r"training.lr must be a number, got the text '2e-4'", text)
    refused({**cfg, "training": {**cfg["training"], "epochs": 2.5}},
            "training.epochs must be an integer")
    refused({**cfg, "data": {**cfg["data"], "stratify_keys": "metal"}},
            "data.stratify_keys must be a list of strings")
    refused({**cfg, "model": {"d_model": 8}}, "the model section is not used with init_from")
    refused({**cfg, "training": {**cfg["training"], "freeze": ["blocks.7"]}},
            r"training.freeze: 'blocks.7' names no parameter")
    refused({**cfg, "init_from": "no-such-potential"}, "neither a shipped potential")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    refused(cfg, "checkpoint.pt exists: pass resume")
    # YAML 1.1 reads 2e-4 (no decimal point) as text; the loader reads it as the number meant.
    from geomformer_md.train.config import load_train_config

    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(cfg).replace("lr: 0.003", "lr: 2e-4"))
    assert load_train_config(path).training.lr == 2e-4
    assert load_train_config(path, {"training.lr": 1e-5}).training.lr == 1e-5


def test_holdout_list_test_file_with_random_split_and_frozen_layers(base_file, data_file, tmp_path):
    frames = read_frames(data_file)
    cfg = ft_config(data_file, tmp_path / "run", base_file, freeze=["embed", "blocks.0"])
    cfg["data"].update(holdout_key="config_id", holdout_value=["c1", "c2"])
    extra = tmp_path / "more_test.extxyz"
    write(extra, emt_frames(3, seed=9))
    cfg["data"]["test_file"] = str(extra)
    trainer = Trainer(train_config_from_dict(cfg), **QUIET)
    _, _, test = split_indices(frames, trainer.cfg.data)
    held = [k for k, a in enumerate(frames) if a.info["config_id"] in ("c1", "c2")]
    assert set(held) < set(test)  # both held-out values, and a random part besides
    assert len(trainer.test_set) == len(test) + 3  # plus the test file's frames
    base = load_potential(base_file)
    trainer.run()
    tuned = load_potential(tmp_path / "run" / "model.pt")
    a, b = base.state_dict(), tuned.state_dict()
    frozen = [k for k in a if k.startswith(("embed.", "blocks.0."))]
    assert frozen and all(torch.equal(a[k], b[k]) for k in frozen)
    assert not torch.equal(a["energy_mlp.0.weight"], b["energy_mlp.0.weight"])


def test_set_on_the_command_line_and_export_of_a_stopped_run(base_file, data_file, tmp_path,
                                                             capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(ft_config(data_file, tmp_path / "run", base_file, epochs=5)))
    assert main(["train", str(path), "--set", "training.max_steps=3",
                 "--set", "training.lr=1e-4"]) == 0
    assert "continue with --resume" in capsys.readouterr().out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["training"]["max_steps"] == 3 and saved["training"]["lr"] == 1e-4
    assert not (tmp_path / "run" / "model.pt").exists()
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "m.pt")]) == 0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    model = load_potential(tmp_path / "m.pt")
    for p, s in zip(model.parameters(), state["ema"]["shadow"], strict=True):
        assert torch.equal(p, s)
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "m.pt")]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "x.pt")]) == 1
    assert "not a geomformer-md training checkpoint" in capsys.readouterr().err
    assert main(["train", str(path), "--set", "training.lr"]) == 1
    assert "not KEY=VALUE" in capsys.readouterr().err


def test_only_rank_zero_prints_the_final_line(base_file, data_file, tmp_path, capsys, monkeypatch):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(ft_config(data_file, tmp_path / "r0", base_file)))
    assert main(["train", str(path)]) == 0
    assert "final metrics: test energy" in capsys.readouterr().out
    monkeypatch.setenv("RANK", "1")  # what torchrun sets for the second process
    assert main(["train", str(path), "--set", f"out_dir={tmp_path / 'r1'}"]) == 0
    assert "final metrics" not in capsys.readouterr().out
