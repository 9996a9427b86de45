"""Calibrating a committee's flag on labelled frames: geomformer_md/uncertainty.py and
``geomformer-md committee``."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from conftest import make_model

from geomformer_md import GeoMFormerCalculator, load_potential, save_model
from geomformer_md.cli import main
from geomformer_md.committee import Committee, ForceStdLimit
from geomformer_md.uncertainty import calibrate, flag_stats, flag_table, limit_from_metadata

# Two elements whose members disagree by different amounts for the same error: the force
# error is SCALE[z] times the force std, times noise.
SCALE = {29: 4.0, 8: 0.5}


def _rows(n_frames=300, seed=0, holdout_every=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_frames):
        numbers = np.array([29] * 6 + [8] * 2)
        std = rng.lognormal(np.log(0.04), 0.8, len(numbers))
        err = std * np.array([SCALE[z] for z in numbers]) * rng.lognormal(0, 0.3, len(numbers))
        direction = rng.normal(size=(len(numbers), 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        cat = "heldout:x" if holdout_every and i % holdout_every == 0 else "surface"
        rows.append({"category": cat, "numbers": numbers, "n": len(numbers),
                     "de": float(rng.normal(0, 0.01)), "df": direction * err[:, None],
                     "fstd": std})
    return rows


def test_calibration_catches_the_target_fraction_and_no_more_than_needed():
    rows = _rows()
    for catch in (0.5, 0.8, 0.95):
        meta = calibrate(rows, catch=catch)
        limit = limit_from_metadata(meta)
        caught = flag_stats(rows, limit)["caught"]
        assert caught >= catch and meta["calibration"]["caught"] == caught
        # the largest threshold that does it: 1 % higher limits catch less than the target
        higher = ForceStdLimit(float(limit) * 1.01,
                               {z: t * 1.01 for z, t in limit.per_element.items()})
        assert flag_stats(rows, higher)["caught"] < catch


def test_per_element_limits_follow_each_elements_error_scale():
    meta = calibrate(_rows(), catch=0.8)
    per = meta["force_std_threshold_per_element"]
    assert set(per) == {"Cu", "O"}
    # errors are 8x larger per unit of std on Cu: its limit on the std is ~8x lower
    assert per["O"] / per["Cu"] == pytest.approx(SCALE[29] / SCALE[8], rel=0.15)
    # at the same catch, limits per element raise fewer false alarms than one limit for all
    one = calibrate(_rows(), catch=0.8, per_element=False)
    assert one["force_std_threshold_per_element"] == {}
    rows = _rows(seed=1)  # new frames: how the calibration transfers
    per_stats = flag_stats(rows, limit_from_metadata(meta))
    one_stats = flag_stats(rows, limit_from_metadata(one))
    assert per_stats["caught"] >= 0.7 and one_stats["caught"] >= 0.7
    assert per_stats["false_alarms"] < 0.7 * one_stats["false_alarms"]


def test_calibration_refuses_what_it_cannot_calibrate():
    rows = _rows()
    with pytest.raises(ValueError, match="catch must be in"):
        calibrate(rows, catch=0)
    quiet = [dict(r, df=r["df"] * 1e-3) for r in rows]
    with pytest.raises(ValueError, match="only 0 of 300 frames have a force error above 0.3"):
        calibrate(quiet)
    with pytest.raises(ValueError, match="no frames"):
        calibrate([])


def test_flag_table_reports_held_out_categories_apart():
    rows = _rows(holdout_every=5)
    table = flag_table(rows, 0.05)
    assert table["heldout:x"]["frames"] == 60 and table["held-out"]["frames"] == 60
    assert table["not held-out"]["frames"] == 240 and table["all"]["frames"] == 300
    # a category named by the caller counts as held out too
    table = flag_table(rows, 0.05, groups=["surface"])
    assert table["held-out"]["frames"] == 300 and "not held-out" not in table
    assert -1 <= table["all"]["spearman"] <= 1


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("committee")
    members = []
    for seed in range(3):
        path = tmp / f"m{seed}.pt"
        save_model(make_model("float64", seed=seed), path)
        members.append(str(path))
    rng = np.random.default_rng(0)
    frames = []
    for i in range(24):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
        atoms.rattle(0.05 + 0.01 * i, seed=i)
        atoms.calc = EMT()
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f)
        atoms.info["category"] = "bulk" if i % 4 else "strained"
        if i % 6 == 0:
            atoms.info["holdout"] = "heldout:test"
        frames.append(atoms)
    write(tmp / "frames.extxyz", frames)
    unlabelled = bulk("Cu", "fcc", a=3.6, cubic=True)
    write(tmp / "unlabelled.extxyz", unlabelled)
    gold = bulk("Au", "fcc", a=4.08, cubic=True)
    gold.calc = SinglePointCalculator(gold, energy=0.0, forces=np.zeros((4, 3)))
    write(tmp / "gold.extxyz", gold)
    del rng
    return tmp, members


def test_cli_builds_checks_and_calibrates_a_committee(files, capsys):
    tmp, members = files
    committee_file = tmp / "committee.pt"
    assert main(["committee", "build", *members, "-o", str(committee_file)]) == 0
    committee = load_potential(str(committee_file))
    assert isinstance(committee, Committee) and len(committee) == 3
    capsys.readouterr()

    assert main(["-q", "committee", "check", str(committee_file), "--frames",
                 str(tmp / "frames.extxyz"), "--threshold", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "| heldout:test | 4 |" in out and "| not held-out | 20 |" in out

    calibrated = tmp / "calibrated.pt"
    report = tmp / "calibration.json"
    assert main(["-q", "committee", "calibrate", str(committee_file), "--frames",
                 str(tmp / "frames.extxyz"), "--large-error", "0.05", "-o", str(calibrated),
                 "--report", str(report), "--plot", str(tmp / "flag.png")]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 20 frames" in out and f"wrote {calibrated}" in out
    meta = load_potential(str(calibrated)).metadata
    record = meta["calibration"]
    assert record["frames"] == 20 and record["held_out_frames"] == 4
    assert record["caught"] >= 0.8
    assert meta["force_std_threshold_per_element"].keys() == {"Cu"}
    # the calculator's "auto" threshold is the calibrated one
    calc = GeoMFormerCalculator(str(calibrated))
    assert calc.uncertainty_threshold.per_element == {29: meta["force_std_threshold_per_element"]
                                                      ["Cu"]}
    assert report.is_file() and (tmp / "flag.png").stat().st_size > 10_000


def _error(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_bad_input_is_one_clear_line(files, capsys):
    tmp, members = files
    frames = str(tmp / "frames.extxyz")
    assert "at least 2 members" in _error(
        capsys, ["committee", "build", members[0], "-o", str(tmp / "one.pt")])
    assert "holds a single model, not a committee" in _error(
        capsys, ["committee", "check", members[0], "--frames", frames])
    committee_file = tmp / "c2.pt"
    assert main(["-q", "committee", "build", *members[:2], "-o", str(committee_file)]) == 0
    assert "exist" in _error(
        capsys, ["committee", "build", *members[:2], "-o", str(committee_file)])
    assert "--frames" in _error(capsys, ["-q", "committee", "check", str(committee_file),
                                         "--frames", str(tmp / "unlabelled.extxyz")])
    assert "Au" in _error(capsys, ["-q", "committee", "check", str(committee_file),
                                   "--frames", str(tmp / "gold.extxyz")])
    assert "--catch" in _error(capsys, ["committee", "calibrate", str(committee_file),
                                        "--frames", frames, "--catch", "1.5", "-o",
                                        str(tmp / "x.pt")])
    assert "--threshold" in _error(capsys, ["-q", "committee", "check", str(committee_file),
                                            "--frames", frames, "--threshold", "-1"])
    # a large error nothing reaches: too few frames to calibrate on, said in one line
    assert "calibrating needs at least 10" in _error(
        capsys, ["-q", "committee", "calibrate", str(committee_file), "--frames", frames,
                 "--large-error", "1000", "-o", str(tmp / "y.pt")])
    assert not (tmp / "y.pt").exists()


def test_cli_finetunes_a_committee_around_a_trained_potential(tmp_path, capsys):
    import yaml
    from test_train import config, emt_frames

    write(tmp_path / "data.extxyz", emt_frames(16))
    raw = config(tmp_path / "data.extxyz", tmp_path / "run", epochs=2)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "committee.pt"
    assert "train" in _error(capsys, ["committee", "finetune", str(path), "-o", str(out)])
    assert main(["-q", "train", str(path)]) == 0
    assert main(["-q", "committee", "finetune", str(path), "--members", "3", "-o",
                 str(out)]) == 0
    committee = load_potential(str(out))
    base = load_potential(str(tmp_path / "run" / "model.pt"))
    assert isinstance(committee, Committee) and len(committee) == 3
    # member 0 is the potential itself; the others moved away from it, each its own way
    members = [dict(m.state_dict()) for m in committee.members]
    for name, value in base.state_dict().items():
        np.testing.assert_array_equal(members[0][name].numpy(), value.numpy())
    name = next(n for n, v in members[0].items() if v.dtype.is_floating_point and v.numel() > 8)
    assert not np.array_equal(members[1][name].numpy(), members[0][name].numpy())
    assert not np.array_equal(members[1][name].numpy(), members[2][name].numpy())
    for k in (1, 2):  # the seeds of the recipe, recorded by the trainer
        cfg = yaml.safe_load((tmp_path / f"run-committee/member_{k}/config.json").read_text())
        assert cfg["training"]["seed"] == k and cfg["data"]["split_seed"] == k
        assert cfg["training"]["epochs"] == 1
    # the spread is zero nowhere
    atoms = emt_frames(1)[0]
    atoms.calc = GeoMFormerCalculator(str(out))
    atoms.get_forces()
    assert (atoms.calc.results["forces_std"] > 0).all()
    assert "--members" in _error(capsys, ["committee", "finetune", str(path), "--members", "1",
                                          "-o", str(tmp_path / "x.pt")])


def test_committee_fine_tunes_train_as_a_stage_two_potential_last_did(tmp_path, capsys):
    """A potential trained with an energy stage: its fine-tunes run at the stage's weights
    and rate, held, not at the first stage's (a one-epoch copy of the config could not even
    hold the stage: stage_two_epoch would lie past its last epoch)."""
    import yaml
    from test_train import config, emt_frames

    write(tmp_path / "data.extxyz", emt_frames(16))
    raw = config(tmp_path / "data.extxyz", tmp_path / "run", epochs=3, warmup_steps=1,
                 energy_weight=2.0, forces_weight=1.0, stage_two_epoch=3, stage_two_lr=1e-3,
                 stage_two_energy_weight=50.0)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["-q", "train", str(path)]) == 0
    out = tmp_path / "committee.pt"
    assert main(["committee", "finetune", str(path), "--members", "2", "-o", str(out)]) == 0
    assert "stage two" in capsys.readouterr().out
    cfg = yaml.safe_load((tmp_path / "run-committee/member_1/config.json").read_text())
    t = cfg["training"]
    assert t["epochs"] == 1 and t["stage_two_epoch"] is None
    assert t["energy_weight"] == 50.0 and t["forces_weight"] == 1.0  # the stage's; its own
    assert t["lr"] == 1e-3 and t["min_lr_ratio"] == 1.0               # forces weight unset
    lrs = [float(r.split(",")[2]) for r in
           (tmp_path / "run-committee/member_1/metrics.csv").read_text().splitlines()[2:]]
    assert lrs and all(abs(lr - 1e-3) < 1e-12 for lr in lrs)           # held
    assert len(load_potential(str(out))) == 2
