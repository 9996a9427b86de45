"""Training: end to end, resume after SIGKILL, DDP equivalence, fine-tuning, bad input."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk, fcc111
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from conftest import make_model

from geomformer_md import load_potential, save_model
from geomformer_md.train import train, train_config_from_dict

TINY_MODEL = {"d_model": 8, "n_heads": 2, "n_layers": 1, "n_rbf": 6, "cutoff": 3.5}


def emt_frames(n=24, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        if k % 2 == 0:
            a = bulk("Cu", "fcc", a=3.6, cubic=True)
            a.set_cell(a.cell[:] * (1 + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        else:
            a = fcc111("Cu", (1, 1, 3), vacuum=4.0)
            a += Atoms("O", positions=[a.positions[-1] + [0, 0, 1.8]])
        a.positions += rng.normal(0, 0.1, a.positions.shape)
        a = emt_labelled(a)
        a.info["config_id"] = f"c{k % 8}"
        frames.append(a)
    return frames


def emt_labelled(a):
    """``a`` with EMT's energy, forces and (3-D periodic cells) stress stored as labels."""
    a.calc = EMT()
    res = {"energy": a.get_potential_energy(), "forces": a.get_forces()}
    if a.pbc.all():
        res["stress"] = a.get_stress()
    a.calc = SinglePointCalculator(a, **res)
    return a


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "emt.extxyz"
    write(path, emt_frames())
    return path


def config(data_file, out_dir, **training):
    t = {"epochs": 3, "batch_size": 4, "lr": 3e-3, "warmup_steps": 3, "checkpoint_every": 2,
         "num_threads": 1, "dtype": "float64"}
    t.update(training)
    return {
        "out_dir": str(out_dir),
        "data": {"train_file": str(data_file), "val_fraction": 0.25, "test_fraction": 0.25,
                 "split_key": "config_id"},
        "model": TINY_MODEL,
        "training": t,
    }


def final_weights(out_dir):
    return load_potential(os.path.join(out_dir, "model.pt")).state_dict()


def test_train_writes_model_metrics_and_plots(data_file, tmp_path):
    res = train(config(data_file, tmp_path / "run"), progress=False, log=lambda *a: None)
    assert res["complete"]
    for name in ("model.pt", "metrics.csv", "checkpoint.pt", "parity.png", "test_metrics.json"):
        assert (tmp_path / "run" / name).is_file(), name
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 1 + 3  # header, the starting model (epoch 0), one row per epoch
    assert rows[1].startswith("0,0,")
    model = load_potential(tmp_path / "run" / "model.pt")
    assert model.config.species == (8, 29)
    assert np.isfinite(res["test"]["forces_mae_meV_A"])
    # Training must learn: loss of the last epoch below the first.
    losses = [float(r.split(",")[3]) for r in rows[2:]]
    assert losses[-1] < losses[0]


def test_interrupted_and_resumed_equals_uninterrupted(data_file, tmp_path):
    quiet = {"progress": False, "log": lambda *a: None}
    straight = train(config(data_file, tmp_path / "a"), **quiet)
    part = train(config(data_file, tmp_path / "b", max_steps=5), **quiet)  # stops mid-epoch 2
    assert not part["complete"]
    stopped_at = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["elapsed_s"]
    resumed = train(config(data_file, tmp_path / "b"), resume=True, **quiet)
    assert resumed["test"] == pytest.approx(straight["test"], rel=1e-9)
    # metrics.csv's training time keeps counting across the resume
    lines = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    col = lines[0].split(",").index("elapsed_s")
    elapsed = [float(line.split(",")[col]) for line in lines[2:]]  # after the epoch-0 row
    assert elapsed == sorted(elapsed) and elapsed[1] > stopped_at >= elapsed[0] > 0
    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-10, atol=1e-12)


def test_stage_two_switches_loss_weights_and_holds_the_learning_rate(data_file, tmp_path):
    quiet = {"progress": False, "log": lambda *a: None}
    two = {"stage_two_epoch": 3, "stage_two_lr": 1e-4}
    same = train(config(data_file, tmp_path / "same", **two), **quiet)
    two_heavy = {**two, "stage_two_energy_weight": 100.0}
    heavy = train(config(data_file, tmp_path / "heavy", **two_heavy), **quiet)
    rows = {}
    for name in ("same", "heavy"):
        lines = (tmp_path / name / "metrics.csv").read_text().strip().splitlines()[1:]
        rows[name] = [[float(x) for x in line.split(",")[:7]] for line in lines[1:]]  # epochs 1..3
    # Stage one is the same run; the energy weight changes only the stage-two epoch.
    assert rows["same"][:2] == rows["heavy"][:2]
    assert rows["same"][2][3] != rows["heavy"][2][3]
    assert heavy["test"] != same["test"]
    # The cosine ends where stage two begins, then the learning rate is held.
    lrs = [r[2] for r in rows["heavy"]]
    assert lrs[2] == pytest.approx(1e-4) and lrs[0] > lrs[1] > 3e-3 * 0.02
    # Killed in stage one and resumed: the same model as the straight run.
    part = train(config(data_file, tmp_path / "part", max_steps=5, **two_heavy), **quiet)
    assert not part["complete"]
    resumed = train(config(data_file, tmp_path / "part", **two_heavy), resume=True, **quiet)
    assert resumed["test"] == pytest.approx(heavy["test"], rel=1e-9)


def test_extra_train_files_add_training_frames_without_moving_the_split(data_file, tmp_path):
    from geomformer_md.train.trainer import Trainer

    extra = tmp_path / "extra.extxyz"
    write(extra, emt_frames(n=5, seed=7))
    quiet = {"progress": False, "log": lambda *a: None}
    plain = Trainer(train_config_from_dict(config(data_file, tmp_path / "a")), **quiet)
    raw = config(data_file, tmp_path / "b")
    raw["data"]["extra_train_files"] = [str(extra)]
    more = Trainer(train_config_from_dict(raw), **quiet)
    assert len(more.train_set) == len(plain.train_set) + 5
    for name in ("val_set", "test_set"):
        a, b = getattr(plain, name), getattr(more, name)
        assert [s.energy for s in a] == [s.energy for s in b]
    assert more.run()["complete"]
    raw["data"]["extra_train_files"] = str(extra)  # a single string is a likely slip
    with pytest.raises(ValueError, match="must be a list of file paths"):
        train_config_from_dict(raw)


def test_path_end_weight_weights_the_last_frame_of_each_relaxation_in_the_loss(tmp_path):
    from geomformer_md.train.data import collate_samples
    from geomformer_md.train.trainer import Trainer, batch_errors

    frames = emt_frames()  # config ids c0..c7, three frames each (frames k, k + 8, k + 16)
    for k, a in enumerate(frames):
        a.info["step"] = 10 * (k // 8)  # along the path: 0, 10, 20
        a.info["kind"] = "relax" if k % 8 < 4 else "md"
    write(tmp_path / "paths.extxyz", frames)
    quiet = {"progress": False, "log": lambda *a: None}
    raw = config(tmp_path / "paths.extxyz", tmp_path / "w", epochs=1)
    raw["data"].update(path_key="config_id", path_kinds=["relax"], path_end_weight=5.0)
    weighted = Trainer(train_config_from_dict(raw), **quiet)
    heavy = [s for s in weighted.train_set if s.energy_weight != 1.0]
    relax_paths = {s.info["config_id"] for s in weighted.train_set if s.info["kind"] == "relax"}
    # One frame per relaxation path in training, its last step; no MD frame.
    assert sorted(s.info["config_id"] for s in heavy) == sorted(relax_paths) and heavy
    assert all(s.energy_weight == 5.0 and s.info["step"] == 20 for s in heavy)

    # The loss's squared energy error carries the weights; the metrics' absolute error does not.
    batch = collate_samples(weighted.train_set)
    out = {"energy": batch.energy + 0.1 * batch.n_atoms, "forces": batch.forces.clone()}
    err = batch_errors(out, batch)
    n_heavy, n = len(heavy), len(weighted.train_set)
    assert float(err["e_sq"]) == pytest.approx(0.01 * (n - n_heavy + 5.0 * n_heavy))
    assert float(err["e_abs"]) == pytest.approx(0.1 * n)
    # Weighting off: the same run as without the keys; on: a different one.
    plain = train(config(tmp_path / "paths.extxyz", tmp_path / "p", epochs=1), **quiet)
    assert weighted.run()["test"] != plain["test"]

    for bad, message in [({"path_end_weight": 5.0}, "needs data.path_key"),
                         ({"path_key": "config_id", "path_end_weight": -1.0}, "positive number"),
                         ({"path_key": "config_id", "path_kinds": "relax"}, "list of kinds")]:
        raw = config(tmp_path / "paths.extxyz", tmp_path / "x")
        raw["data"].update(bad)
        with pytest.raises(ValueError, match=message):
            train_config_from_dict(raw)
    for a in frames:
        del a.info["step"]
    write(tmp_path / "nostep.extxyz", frames)
    raw = config(tmp_path / "nostep.extxyz", tmp_path / "y")
    raw["data"].update(path_key="config_id", path_end_weight=2.0)
    with pytest.raises(ValueError, match="no info\\['step'\\]"):
        Trainer(train_config_from_dict(raw), **quiet)


def test_energy_size_exponent_turns_the_per_atom_energy_loss_into_a_total_energy_loss(tmp_path):
    from geomformer_md.train.data import collate_samples
    from geomformer_md.train.trainer import Trainer, batch_errors

    frames = []
    for k, a in enumerate(emt_frames()):  # 4-atom cells; every third one made a 12-atom cell
        if k % 3 == 0:
            a = emt_labelled(a.repeat((3, 1, 1)))  # repeat() keeps info
        frames.append(a)
    write(tmp_path / "sizes.extxyz", frames)
    quiet = {"progress": False, "log": lambda *a: None}
    raw = config(tmp_path / "sizes.extxyz", tmp_path / "s", epochs=1)
    raw["data"]["energy_size_exponent"] = 2.0
    trainer = Trainer(train_config_from_dict(raw), **quiet)
    n = np.array([s.n_atoms for s in trainer.train_set], dtype=float)
    w = np.array([s.energy_weight for s in trainer.train_set])
    assert set(n) == {4.0, 12.0}
    assert w.mean() == pytest.approx(1.0) and w == pytest.approx(n**2 / np.mean(n**2))
    # With exponent 2 the loss's energy term is the mean squared error of the total energy,
    # scaled by 1 / mean(N^2): a 0.1 eV error per cell costs the same in every cell.
    batch = collate_samples(trainer.train_set)
    out = {"energy": batch.energy + 0.1, "forces": batch.forces.clone()}
    err = batch_errors(out, batch)
    assert float(err["e_sq"]) == pytest.approx(len(n) * 0.01 / np.mean(n**2))
    for bad in (-1.0, 3.0, float("nan"), "2"):
        raw["data"]["energy_size_exponent"] = bad
        with pytest.raises(ValueError, match="energy_size_exponent must be a number"):
            train_config_from_dict(raw)


@pytest.mark.parametrize("training, message", [
    ({"stage_two_epoch": 2}, "needs training.stage_two_lr"),
    ({"stage_two_lr": 1e-4}, "stage_two_lr is set but training.stage_two_epoch is not"),
    ({"stage_two_epoch": 9, "stage_two_lr": 1e-4}, "must be in 2..epochs"),
])
def test_stage_two_settings_are_checked(data_file, tmp_path, training, message):
    with pytest.raises(ValueError, match=message):
        train_config_from_dict(config(data_file, tmp_path, **training))


def test_sigkill_then_resume_equals_uninterrupted(data_file, tmp_path):
    quiet = {"progress": False, "log": lambda *a: None}
    cfg = config(data_file, tmp_path / "killed", epochs=12, checkpoint_every=1)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    code = f"from geomformer_md.train import train; train({str(cfg_path)!r}, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    assert not (tmp_path / "killed" / "model.pt").exists()
    resumed = train(str(cfg_path), resume=True, **quiet)
    straight = train(config(data_file, tmp_path / "straight", epochs=12, checkpoint_every=1),
                     **quiet)
    assert resumed["test"] == pytest.approx(straight["test"], rel=1e-9)


def _ddp_worker(rank, world, port, cfg):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    train(cfg, progress=False, log=lambda *a: None)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("batch_size", [4, 11])  # 12 training frames: 11 leaves a last batch of 1
def test_two_process_ddp_trains_the_same_model(data_file, tmp_path, batch_size):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ddp_cfg = config(data_file, tmp_path / "ddp", epochs=2, batch_size=batch_size)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, ddp_cfg), nprocs=2, join=True)
    train(config(data_file, tmp_path / "single", epochs=2, batch_size=batch_size), progress=False,
          log=lambda *a: None)
    a, b = final_weights(tmp_path / "ddp"), final_weights(tmp_path / "single")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-8, atol=1e-10)


def test_fine_tune_from_model_file_refits_reference_energies(data_file, tmp_path):
    base = make_model("float64", **TINY_MODEL)
    path = tmp_path / "base.pt"
    save_model(base, path)
    # Shift all labels by a per-atom constant: a new labeller with another zero of energy.
    frames = emt_frames(16, seed=1)
    for a in frames:
        r = a.calc.results
        a.calc = SinglePointCalculator(a, energy=r["energy"] - 7.0 * len(a), forces=r["forces"])
    write(tmp_path / "shifted.extxyz", frames)
    cfg = config(tmp_path / "shifted.extxyz", tmp_path / "ft", epochs=1)
    cfg["init_from"] = str(path)
    cfg["replay"] = {"frames": 8}  # the default route, kept small (tests/test_finetune.py)
    cfg.pop("model")
    res = train(cfg, progress=False, log=lambda *a: None)
    tuned = load_potential(tmp_path / "ft" / "model.pt")
    assert tuned.config.species == base.config.species
    assert res["test"]["energy_mae_meV_atom"] < 1000  # the 7 eV/atom shift went into E0
    cu = base.config.species.index(29)
    assert float(tuned.e0[cu]) < float(base.e0[cu]) - 5


def test_bad_training_input_is_refused_clearly(tmp_path):
    nolabel = tmp_path / "nolabel.extxyz"
    write(nolabel, [bulk("Cu", "fcc", a=3.6)])
    with pytest.raises(ValueError, match="no energy"):
        train(config(nolabel, tmp_path / "r1"), progress=False, log=lambda *a: None)

    a = bulk("Cu", "fcc", a=3.6)
    a.calc = SinglePointCalculator(a, energy=float("nan"), forces=np.zeros((1, 3)))
    write(tmp_path / "nan.extxyz", [a])
    with pytest.raises(ValueError, match="NaN"):
        train(config(tmp_path / "nan.extxyz", tmp_path / "r2"), progress=False, log=lambda *a: None)

    with pytest.raises(ValueError, match="unknown key.*valid keys"):
        train_config_from_dict({"data": {"train_file": "x"}, "training": {"epochz": 3}})

    # An element the fine-tuned model does not know.
    base = make_model("float64", **TINY_MODEL)
    save_model(base, tmp_path / "base.pt")
    au = bulk("Au", "fcc", a=4.1)
    au.calc = SinglePointCalculator(au, energy=-3.0, forces=np.zeros((1, 3)))
    write(tmp_path / "au.extxyz", [au] * 4)
    cfg = config(tmp_path / "au.extxyz", tmp_path / "r3")
    cfg["init_from"] = str(tmp_path / "base.pt")
    cfg.pop("model")
    with pytest.raises(ValueError, match="Au.*outside the model"):
        train(cfg, progress=False, log=lambda *a: None)


@pytest.mark.parametrize("suffix", [".xz", ".gz", ".bz2"])
def test_compressed_training_file_reads_like_the_plain_one(tmp_path, suffix):
    import bz2
    import gzip
    import lzma

    from geomformer_md.train.data import read_frames

    frames = []
    for k in range(5):
        a = bulk("Cu", cubic=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_forces()
        a.get_stress()
        frames.append(a)
    plain = tmp_path / "frames.extxyz"
    write(plain, frames)
    opener = {".xz": lzma.open, ".gz": gzip.open, ".bz2": bz2.open}[suffix]
    packed = tmp_path / f"frames.extxyz{suffix}"
    with opener(packed, "wb") as fd:
        fd.write(plain.read_bytes())
    got, ref = read_frames(packed), read_frames(plain)
    assert len(got) == len(ref) == 5
    for a, b in zip(got, ref, strict=True):
        assert np.array_equal(a.positions, b.positions)
        assert np.array_equal(a.get_forces(), b.get_forces())
        assert a.get_potential_energy() == b.get_potential_energy()


def test_split_keeps_groups_together_and_honours_forced_frames():
    from geomformer_md.train.config import DataConfig
    from geomformer_md.train.data import split_indices

    frames = []
    for k in range(60):
        a = Atoms("Cu")
        a.info.update(config_id=f"path{k // 5}", kind="gas" if k >= 55 else "relax",
                      split_hint="test_heldout" if 50 <= k < 55 else "pool")
        frames.append(a)
    cfg = DataConfig(val_fraction=0.2, test_fraction=0.2, split_seed=3, split_key="config_id",
                     holdout_key="split_hint", holdout_value="test_heldout",
                     train_key="kind", train_value="gas")
    tr, va, te = split_indices(frames, cfg)
    assert sorted(tr + va + te) == list(range(60))
    assert set(range(55, 60)) <= set(tr)          # forced into training
    assert set(range(50, 55)) <= set(te)          # held out
    assert va and len(te) > 5
    for part in (tr, va, te):                     # no path is split across sets
        others = set(range(60)) - set(part)
        ids = {frames[k].info["config_id"] for k in part if frames[k].info["kind"] != "gas"}
        assert not any(frames[k].info["config_id"] in ids for k in others if k < 50)
    assert split_indices(frames, cfg) == (tr, va, te)   # reproducible
    clash = DataConfig(holdout_key="kind", holdout_value="gas", train_key="kind", train_value="gas")
    with pytest.raises(ValueError, match="both"):
        split_indices(frames, clash)


def test_stratified_split_keeps_every_combination_in_training():
    import dataclasses

    from geomformer_md.train.config import DataConfig
    from geomformer_md.train.data import split_indices

    frames = []
    for k in range(120):  # 12 sites x 2 paths x 5 frames: plain splits orphan some sites
        a = Atoms("Cu")
        a.info.update(config_id=f"path{k // 5}", site=f"s{k // 10}")
        frames.append(a)
    plain = DataConfig(val_fraction=0.25, test_fraction=0.25, split_seed=1, split_key="config_id")
    strat = dataclasses.replace(plain, stratify_keys=("site",))

    def orphans(split):
        trained = {frames[k].info["site"] for k in split[0]}
        return {frames[k].info["site"] for k in split[1] + split[2]} - trained

    assert orphans(split_indices(frames, plain))  # the problem: sites never trained on
    tr, va, te = split_indices(frames, strat)
    assert not orphans((tr, va, te)) and va and te
    assert sorted(tr + va + te) == list(range(120))
    assert split_indices(frames, strat) == (tr, va, te)


def test_fine_tune_adds_the_zbl_prior_to_a_model_without_it(data_file, tmp_path):
    """init_from a model without the prior plus model: {zbl: true} fine-tunes it onto the prior;
    the network's weights carry over (the prior has none). Other model keys cannot change."""
    base = make_model("float64", **TINY_MODEL)
    save_model(base, tmp_path / "base.pt")
    cfg = config(data_file, tmp_path / "ft", epochs=1)
    cfg["init_from"] = str(tmp_path / "base.pt")
    cfg["model"] = {"zbl": True, "zbl_outer": 0.8}
    train(cfg, progress=False, log=lambda *a: None)
    tuned = load_potential(tmp_path / "ft" / "model.pt")
    assert tuned.config.zbl and tuned.config.zbl_outer == 0.8 and tuned.config.zbl_inner == 0.55
    assert tuned.config.d_model == base.config.d_model
    assert load_potential(tmp_path / "base.pt").config.zbl is False
    cfg["out_dir"] = str(tmp_path / "ft2")
    cfg["model"] = {"zbl": True, "d_model": 16}
    with pytest.raises(ValueError,
                       match=r"not used with init_from .* except for zbl, zbl_inner, zbl_outer"):
        train(cfg, progress=False, log=lambda *a: None)


def test_weights_by_tag_scale_the_energy_and_force_terms_of_tagged_frames(data_file, tmp_path):
    from geomformer_md.train.data import collate_samples
    from geomformer_md.train.trainer import Trainer, batch_errors

    frames = emt_frames()
    for k, a in enumerate(frames):
        a.info["kind"] = "short" if k % 2 else "normal"
    write(tmp_path / "tagged.extxyz", frames)
    raw = config(tmp_path / "tagged.extxyz", tmp_path / "w", epochs=1)
    raw["data"].update(weight_key="kind", energy_weights={"short": 0.1},
                       forces_weights={"short": 0.0})
    trainer = Trainer(train_config_from_dict(raw), progress=False, log=lambda *a: None)
    short = [s for s in trainer.train_set if s.info["kind"] == "short"]
    normal = [s for s in trainer.train_set if s.info["kind"] == "normal"]
    assert short and normal
    assert all(s.energy_weight == 0.1 and s.forces_weight == 0.0 for s in short)
    assert all(s.energy_weight == 1.0 and s.forces_weight == 1.0 for s in normal)
    # A 0.1 eV/Å force error costs nothing on the short frames, the full square on the others.
    batch = collate_samples(trainer.train_set)
    err = batch_errors({"energy": batch.energy.clone(), "forces": batch.forces + 0.1}, batch)
    n_normal = sum(s.n_atoms for s in normal)
    assert float(err["f_sq"]) == pytest.approx(3 * n_normal * 0.01)
    raw["data"]["weight_key"] = None
    with pytest.raises(ValueError, match="energy_weights needs data.weight_key"):
        train_config_from_dict(raw)
    raw["data"].update(weight_key="kind", forces_weights={"short": -1})
    with pytest.raises(ValueError, match="forces_weights must map tags to numbers >= 0"):
        train_config_from_dict(raw)


def test_huber_loss_is_the_square_inside_delta_and_linear_beyond(data_file, tmp_path):
    from geomformer_md.train.data import collate_samples
    from geomformer_md.train.trainer import Trainer, batch_errors, pointwise_loss

    x = torch.tensor([-0.3, -0.01, -0.004, 0.0, 0.002, 0.01, 0.05, 2.0], dtype=torch.float64,
                     requires_grad=True)
    assert torch.equal(pointwise_loss(x, "mse"), x**2)
    h = pointwise_loss(x, "huber", 0.01)
    inside = x.abs() <= 0.01
    assert torch.allclose(h[inside], x[inside] ** 2)
    assert torch.allclose(h[~inside], 0.02 * x[~inside].abs() - 1e-4)
    (grad,) = torch.autograd.grad(h.sum(), x)
    # the pull of an error never exceeds 2 delta: an outlier weighs like any large error
    assert float(grad.abs().max()) == pytest.approx(0.02)
    assert torch.allclose(grad[inside], 2 * x[inside])

    # in a batch: a 0.1 eV/Å error on every force component costs 2 * 0.01 * 0.1 - 1e-4 each
    raw = config(data_file, tmp_path / "h", epochs=1, loss="huber", huber_delta=0.01)
    trainer = Trainer(train_config_from_dict(raw), progress=False, log=lambda *a: None)
    batch = collate_samples(trainer.train_set)
    err = batch_errors({"energy": batch.energy.clone(), "forces": batch.forces + 0.1}, batch,
                       "huber", 0.01)
    n = sum(s.n_atoms for s in trainer.train_set)
    assert float(err["f_sq"]) == pytest.approx(3 * n * (0.002 - 1e-4))
    assert float(err["f_abs"]) == pytest.approx(3 * n * 0.1)  # the metric stays the MAE
    trainer.run()
    assert np.isfinite([h["train_loss"] for h in trainer.history[1:]]).all()
    for bad, message in (({"loss": "l1"}, "training.loss must be one of"),
                         ({"huber_delta": 0}, "training.huber_delta must be > 0")):
        with pytest.raises(ValueError, match=message):
            train_config_from_dict(config(data_file, tmp_path / "b", **bad))


def test_exclude_rules_keep_whole_categories_out_of_every_split(tmp_path):
    from ase.build import fcc100

    from geomformer_md.train.trainer import Trainer

    frames = emt_frames()
    for k in range(6):  # Cu(100) with O: the category to hold out, in the main and an extra file
        a = fcc100("Cu", (1, 1, 3), vacuum=4.0)
        a += Atoms("O", positions=[a.positions[-1] + [0, 0, 1.8]])
        a.positions += np.random.default_rng(k).normal(0, 0.05, a.positions.shape)
        a = emt_labelled(a)
        a.info.update(facet="100", adsorbate="O", config_id=f"h{k}")
        frames.append(a)
    write(tmp_path / "all.extxyz", frames)
    write(tmp_path / "extra.extxyz", frames[-3:])
    raw = config(tmp_path / "all.extxyz", tmp_path / "x", epochs=1)
    raw["data"].update(extra_train_files=[str(tmp_path / "extra.extxyz")],
                       exclude=[{"facet": "100"}])
    lines = []
    trainer = Trainer(train_config_from_dict(raw), progress=False, log=lines.append)
    everything = trainer.train_set + trainer.val_set + trainer.test_set
    assert len(everything) == len(frames) - 6
    assert not any(s.info.get("facet") == "100" for s in everything)
    assert sum("data.exclude: 6 of 30 frames" in m for m in lines) == 1
    assert sum("data.exclude: 3 of 3 frames" in m for m in lines) == 1
    # a test file's matching frames are what transfer is measured on: with a category key
    # they stay in the test as the rule's own category, without one they are dropped
    write(tmp_path / "test.extxyz", frames[-4:])
    raw["data"].update(test_file=str(tmp_path / "test.extxyz"), test_fraction=0.0)
    for key, tested in ((None, 0), ("adsorbate", 4)):
        raw["data"]["category_key"] = key
        raw["out_dir"] = str(tmp_path / f"t-{key}")
        trainer = Trainer(train_config_from_dict(raw), progress=False, log=lambda *a: None)
        assert len(trainer.test_set) == tested
        if tested:
            assert {s.info["adsorbate"] for s in trainer.test_set} == {"heldout:facet=100"}
            assert not any(s.info.get("facet") == "100"
                           for s in trainer.train_set + trainer.val_set)
    # a frame two rules match counts under the first, unless its "holdout" info names the
    # other (the rule a distillation sampled it for), as in the run's own table
    raw["data"]["exclude"] = [{"facet": "100"}, {"adsorbate": "O"}]
    marked = read(tmp_path / "test.extxyz", ":")
    for a in marked[:2]:
        a.info["holdout"] = "heldout:adsorbate=O"
    marked[2].info["holdout"] = "heldout:elements=Ag-Au"  # a rule this config does not have
    write(tmp_path / "test-marked.extxyz", marked)
    raw["data"].update(test_file=str(tmp_path / "test-marked.extxyz"), category_key="adsorbate")
    raw["out_dir"] = str(tmp_path / "t-marked")
    trainer = Trainer(train_config_from_dict(raw), progress=False, log=lambda *a: None)
    assert sorted(s.info["adsorbate"] for s in trainer.test_set) == \
        ["heldout:adsorbate=O"] * 2 + ["heldout:facet=100"] * 2
    raw["data"].update(test_file=None, test_fraction=None, category_key=None,
                       exclude=[{"facet": "100"}])
    # a co-adsorbed frame matches a rule naming one of its adsorbates, as in distillation
    raw["data"]["exclude"] = [{"adsorbate": ["O", "OH"]}]
    raw["out_dir"] = str(tmp_path / "y")
    trainer = Trainer(train_config_from_dict(raw), progress=False, log=lambda *a: None)
    assert len(trainer.train_set + trainer.val_set + trainer.test_set) == len(frames) - 6
    for bad in ([{"miller": "100"}], {"facet": "100"}, [{"facet": []}]):
        raw["data"]["exclude"] = bad
        with pytest.raises(ValueError, match="data.exclude"):
            train_config_from_dict(raw)
