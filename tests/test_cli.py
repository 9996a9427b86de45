"""geomformer-md command line: help, info, smoke runs of every command, one-line errors."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.io import read, write
from conftest import make_model

from geomformer_md import save_model
from geomformer_md.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(make_model("float64"), path)
    return str(path)


@pytest.fixture
def frames_file(tmp_path):
    slab = fcc111("Cu", (2, 2, 2), vacuum=5.0)
    slab += Atoms("O", positions=[slab.positions[-1] + [0.0, 1.4, 1.4]])
    slab.info.clear()
    cu = bulk("Cu", cubic=True)
    cu.rattle(0.02, seed=1)
    path = tmp_path / "frames.extxyz"
    write(path, [slab, cu])
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("geomformer-md: error: ") and "Traceback" not in err[0]
    return err[0]


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("info", "list", "eval", "relax", "md", "phonons", "adsorb", "train", "examples:"):
        assert cmd in out
    assert main(["adsorb", "--help"]) == 0
    assert "Pt111" in capsys.readouterr().out


def test_info_and_list(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "ase" in out and "devices" in out and "potentials" in out
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    import geomformer_md

    if geomformer_md.list_potentials():  # errors as readable numbers, not raw dicts
        assert "(default)" in out and "meV/atom" in out and "{" not in out


def test_eval(frames_file, model_file, capsys):
    assert main(["eval", str(frames_file), "--model", model_file, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    result = frames_file.with_name("frames.eval.extxyz")
    assert str(result) in out
    frames = read(result, ":")
    assert len(frames) == 2
    assert frames[0].get_forces().shape == (9, 3)
    assert frames[1].get_stress().shape == (6,)  # periodic bulk gets stress
    # the numbers are the calculator's
    from geomformer_md import GeoMFormerCalculator

    a = read(frames_file, 1)
    a.calc = GeoMFormerCalculator(model_file)
    assert frames[1].get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-6)
    assert "MAE against" not in out  # the file has no labels


def test_eval_reports_errors_against_the_files_labels(frames_file, model_file, capsys):
    """Labelled frames (extxyz with energy/forces/stress): the MAEs of the model against them."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from geomformer_md import GeoMFormerCalculator

    calc = GeoMFormerCalculator(model_file)
    labelled = []
    for atoms in read(frames_file, ":"):
        atoms.calc = calc
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        res = {"energy": e + 0.01 * len(atoms), "forces": f + 0.02}  # 10 meV/atom, 20 meV/Å off
        if atoms.pbc.all():
            res["stress"] = atoms.get_stress() + 0.003
        labelled.append(atoms.copy())
        labelled[-1].calc = SinglePointCalculator(labelled[-1], **res)
    path = frames_file.with_name("labelled.extxyz")
    write(path, labelled)
    assert main(["eval", str(path), "--model", model_file, "--device", "cpu", "-q"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("MAE against")]
    assert line == [
        "MAE against the file's labels: energy 10.00 meV/atom (n=2), "
        "forces 20.00 meV/Å (n=2), stress 3.00 meV/Å³ (n=1)"
    ]


def test_eval_separates_per_element_energy_offsets(tmp_path, model_file, capsys):
    """Labels from another DFT set-up differ by per-element constants: the energy MAE after
    fitting them is ~0 when that is all there is, and is reported beside the raw MAE."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from geomformer_md import GeoMFormerCalculator

    calc = GeoMFormerCalculator(model_file)
    frames = []
    for k in range(8):
        atoms = fcc111("Cu", (2, 2, 2), vacuum=5.0)
        atoms += Atoms("O" * (k % 3 + 1), positions=atoms.positions[-(k % 3 + 1):] + [0, 0, 1.8])
        atoms.rattle(0.03, seed=k)
        atoms.info.clear()
        atoms.calc = calc
        shift = -1.5 * np.sum(atoms.numbers == 29) + 0.7 * np.sum(atoms.numbers == 8)
        labelled = atoms.copy()
        labelled.calc = SinglePointCalculator(labelled, energy=atoms.get_potential_energy() + shift)
        frames.append(labelled)
    path = tmp_path / "shifted.extxyz"
    write(path, frames)
    assert main(["eval", str(path), "--model", model_file, "--device", "cpu", "-q"]) == 0
    out = capsys.readouterr().out
    raw = float(out.split("energy ")[1].split(" meV/atom")[0])
    assert raw > 500  # the offsets dominate the raw error
    assert "energy MAE after fitting per-element offsets: 0.00 meV/atom" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["eval", "missing.xyz"], "no such file"),
        (["relax", "FRAMES", "--optimizer", "Newton"], "unknown optimizer"),
        (["md", "FRAMES", "--ensemble", "nvx"], "unknown ensemble"),
        (["md", "FRAMES", "--timestep", "-1"], "--timestep"),
        (["md", "FRAMES", "--temperature", "-5"], "--temperature"),
        (["md", "FRAMES", "--index", "0", "--ensemble", "npt"], "periodic in 3"),
        (["eval", "FRAMES", "--model", "no-such-model"], "neither a shipped potential"),
        (["phonons", "FRAMES", "--index", "0"], "periodic in 3"),
        (["adsorb", "Xx999", "O"], "neither an existing file nor a spec"),
        (["adsorb", "Cu311", "O", "--lattice-constant", "ref"], "unknown facet"),
        (["train", "missing.yaml"], "no such file"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_one_line(argv, fragment, frames_file, model_file, capsys):
    argv = [str(frames_file) if a == "FRAMES" else a for a in argv]
    if argv[0] in ("relax", "md", "phonons", "adsorb") and "--model" not in argv:
        argv += ["--model", model_file]
    assert main(argv) != 0
    assert fragment in one_error_line(capsys)
    # nothing that looks like a finished result was left behind
    leftovers = {p.name for p in frames_file.parent.iterdir()} - {frames_file.name}
    assert not leftovers, leftovers


def test_unknown_element_and_bad_file(tmp_path, model_file, capsys):
    path = tmp_path / "au.extxyz"
    write(path, bulk("Au"))
    assert main(["eval", str(path), "--model", model_file]) == 1
    assert "unknown to this model" in one_error_line(capsys)
    assert not (tmp_path / "au.eval.extxyz").exists()
    garbage = tmp_path / "junk.xyz"
    garbage.write_text("this is not a structure\n")
    assert main(["eval", str(garbage), "--model", model_file]) == 1
    assert "cannot read" in one_error_line(capsys)
    bad_model = tmp_path / "bad.pt"
    bad_model.write_bytes(b"not a model")
    assert main(["eval", str(path), "--model", str(bad_model)]) == 1
    assert "corrupt" in one_error_line(capsys)


def test_debug_shows_traceback(capsys):
    assert main(["eval", "missing.xyz", "--debug"]) == 1
    # CLIError is raised deliberately; --debug prints its traceback too
    assert "Traceback" in capsys.readouterr().err


def test_relax_smoke(frames_file, model_file, capsys):
    argv = [
        "relax",
        str(frames_file),
        "--index",
        "0",
        "--model",
        model_file,
        "--steps",
        "3",
        "--fmax",
        "0.01",
        "--fix-bottom-layers",
        "1",
        "--optimizer",
        "BFGS",
    ]
    assert main(argv) == 0
    out = frames_file.with_name("frames.relaxed.extxyz")
    traj = frames_file.with_name("frames.relax.traj")
    assert out.is_file() and traj.is_file()
    relaxed = read(out)
    assert len(relaxed) == 9 and "converged" in relaxed.info
    assert np.allclose(
        relaxed.positions[:4], read(frames_file, 0).positions[:4]
    )  # bottom layer fixed


def test_md_smoke(frames_file, model_file, capsys):
    argv = [
        "md",
        str(frames_file),
        "--index",
        "0",
        "--model",
        model_file,
        "--steps",
        "4",
        "--interval",
        "2",
        "--ensemble",
        "nvt-langevin",
        "--temperature",
        "100",
    ]
    assert main(argv) == 0
    traj = frames_file.with_name("frames.md.traj")
    log = frames_file.with_name("frames.md.log")
    assert len(read(traj, ":")) == 3  # steps 0, 2, 4
    assert log.read_text().splitlines()[0].startswith("step,")
    assert "4 steps" in capsys.readouterr().out


def test_phonons_smoke(tmp_path, model_file, capsys):
    path = tmp_path / "cu.cif"
    write(path, bulk("Cu"))
    argv = [
        "phonons",
        str(path),
        "--model",
        model_file,
        "--no-relax",
        "--supercell",
        "2",
        "2",
        "2",
        "--mesh",
        "3",
        "3",
        "3",
        "--npoints",
        "3",
        "--tstep",
        "500",
    ]
    assert main(argv) == 0
    for suffix in (".phonons.png", ".phonons.yaml", ".thermal.csv"):
        assert (tmp_path / f"cu{suffix}").is_file()
    assert "Gamma" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_adsorb_smoke(tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        "adsorb",
        "Cu111",
        "O",
        "--model",
        model_file,
        "--size",
        "2",
        "2",
        "2",
        "--lattice-constant",
        "ref",
        "--steps",
        "2",
        "--fix-bottom-layers",
        "1",
        "--sites",
        "fcc,ontop",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fcc" in out and "ontop" in out
    csv = tmp_path / "Cu111_O_adsorption.csv"
    assert csv.is_file() and len(csv.read_text().splitlines()) == 3
    assert len(read(tmp_path / "Cu111_O_adsorption.extxyz", ":")) == 2


# --------------------------------------------------------------------------- outputs


def _model_args(model_file):
    return ["--model", model_file, "--device", "cpu", "-q"]


def _phonons_args():
    return ["--no-relax", "--supercell", "2", "2", "2", "--mesh", "3", "3", "3", "--npoints",
            "3", "--tstep", "500"]


@pytest.mark.parametrize("command", ["eval", "relax", "md", "phonons", "adsorb"])
def test_every_writing_command_takes_an_output_dir(tmp_path, model_file, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "in"
    src.mkdir()
    inputs = {"phonons": ["cu.cif"], "adsorb": []}.get(command, ["cu.extxyz"])
    if command == "phonons":
        write(src / "cu.cif", bulk("Cu"))
        argv = ["phonons", str(src / "cu.cif"), *_phonons_args()]
    elif command == "adsorb":
        argv = ["adsorb", "Cu111", "O", "--size", "2", "2", "2", "--lattice-constant", "ref",
                "--steps", "2", "--fix-bottom-layers", "1", "--sites", "fcc"]
    else:
        write(src / "cu.extxyz", bulk("Cu", cubic=True))
        argv = [command, str(src / "cu.extxyz"), "--steps", "2"][: 2 if command == "eval" else 4]
    out = tmp_path / "results" / "deeper"
    assert main([*argv, *_model_args(model_file), "-o", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written, command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "results"]  # nothing elsewhere
    assert sorted(p.name for p in src.iterdir()) == inputs  # nothing beside the input


def test_another_input_with_the_same_stem_does_not_overwrite(tmp_path, model_file, capsys):
    """relax PtO.POSCAR then PtO.extxyz both write PtO.relaxed.extxyz: the second stops."""
    a = bulk("Cu", cubic=True)
    write(tmp_path / "cu.extxyz", a)
    b = a.copy()
    b.rattle(0.05, seed=2)
    write(tmp_path / "cu.xyz", b, format="extxyz")
    args = ["--steps", "2", *_model_args(model_file)]
    assert main(["relax", str(tmp_path / "cu.extxyz"), *args]) == 0
    out = tmp_path / "cu.relaxed.extxyz"
    before = out.read_bytes()
    capsys.readouterr()
    assert main(["relax", str(tmp_path / "cu.xyz"), *args]) == 1
    line = one_error_line(capsys)
    assert str(out) in line and "--overwrite" in line and "-o/--output-dir" in line
    assert out.read_bytes() == before
    assert main(["relax", str(tmp_path / "cu.xyz"), *args, "--overwrite"]) == 0
    assert out.read_bytes() != before


def test_outputs_follow_the_umask(tmp_path, model_file, monkeypatch):
    import os
    import stat

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "cu.extxyz", bulk("Cu", cubic=True))
    old = os.umask(0o022)
    try:
        assert main(["eval", str(tmp_path / "cu.extxyz"), *_model_args(model_file)]) == 0
        assert main(["adsorb", "Cu111", "O", "--size", "2", "2", "2", "--lattice-constant",
                     "ref", "--steps", "1", "--fix-bottom-layers", "1", "--sites", "fcc",
                     *_model_args(model_file)]) == 0
    finally:
        os.umask(old)
    for name in ("cu.eval.extxyz", "Cu111_O_adsorption.csv", "Cu111_O_adsorption.extxyz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_output_dir_must_be_a_folder(frames_file, model_file, capsys):
    assert main(["relax", str(frames_file), "-o", "out.extxyz", *_model_args(model_file)]) == 1
    assert "--output" in one_error_line(capsys)


# --------------------------------------------------------------------------- md re-runs


def test_md_never_returns_or_replaces_another_runs_files(frames_file, model_file, capsys):
    base = ["md", str(frames_file), "--index", "1", "--steps", "4", "--interval", "2",
            *_model_args(model_file)]
    assert main(base + ["--seed", "1"]) == 0
    traj = frames_file.with_name("frames.md.traj")
    before = traj.read_bytes()
    capsys.readouterr()
    assert main(base + ["--seed", "2"]) == 1
    line = one_error_line(capsys)
    for part in (str(traj), "--seed 1", "--seed 2", "--resume", "--overwrite"):
        assert part in line, part
    assert "resume=" not in line and "overwrite=" not in line  # the API's words
    assert traj.read_bytes() == before
    assert main(base + ["--seed", "1"]) == 0  # the same command: nothing to do
    assert "nothing to do" in capsys.readouterr().out
    assert main(base + ["--seed", "2", "--resume", "--steps", "6"]) == 0  # extend that run
    assert "continued from step 4" in capsys.readouterr().out
    assert [f.info["md_step"] for f in read(traj, ":")] == [0, 2, 4, 6]
    assert main(base + ["--seed", "2", "--overwrite"]) == 0
    assert [f.info["md_step"] for f in read(traj, ":")] == [0, 2, 4]


def test_md_fix_bottom_layers(frames_file, model_file):
    argv = ["md", str(frames_file), "--index", "0", "--steps", "4", "--interval", "2",
            "--temperature", "500", "--fix-bottom-layers", "1", *_model_args(model_file)]
    assert main(argv) == 0
    start = read(frames_file, 0)
    bottom = np.argsort(start.positions[:, 2])[:4]
    for frame in read(frames_file.with_name("frames.md.traj"), ":"):
        np.testing.assert_array_equal(frame.positions[bottom], start.positions[bottom])


def test_progress_is_plain_lines_when_stderr_is_a_file(frames_file, model_file, capsys):
    argv = ["md", str(frames_file), "--index", "1", "--steps", "4", "--model", model_file]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "MD nvt-langevin: 4/4 steps (100%)" in err
    assert main([*argv, "--overwrite", "-q"]) == 0
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- words


def test_index_out_of_range_names_the_frames(frames_file, model_file, capsys):
    for index, fragment in (
        ("99", "--index 99 is out of range"),
        ("-5", "--index -5 is out of range"),
        ("abc", "--index 'abc' is not a frame index"),
        ("5:", "--index 5: selects no frames"),
    ):
        assert main(["eval", str(frames_file), "--index", index, *_model_args(model_file)]) == 1
        line = one_error_line(capsys)
        assert fragment in line, line
        assert "StopIteration" not in line
    assert "2 frames" in line


def test_unknown_device_names_the_flag(frames_file, model_file, capsys):
    assert main(["eval", str(frames_file), "--model", model_file, "--device", "gpu"]) == 1
    line = one_error_line(capsys)
    assert "--device" in line and "'gpu'" in line and "Expected one of" not in line


def test_one_prefix_for_a_bad_frame(tmp_path, model_file, capsys):
    ok = bulk("Cu", cubic=True)
    bad = Atoms("Cu2", positions=[[0, 0, 0], [0.05, 0, 0]])
    write(tmp_path / "two.extxyz", [ok, bad])
    write(tmp_path / "one.extxyz", bad)
    assert main(["eval", str(tmp_path / "two.extxyz"), *_model_args(model_file)]) == 1
    line = one_error_line(capsys)
    assert "frame 1: atom 0 is 0.05 Å from atom 1" in line and "structure" not in line
    assert main(["eval", str(tmp_path / "one.extxyz"), *_model_args(model_file)]) == 1
    assert "error: atom 0 is 0.05 Å" in one_error_line(capsys)


def test_close_contacts_are_warnings_in_the_clis_words(tmp_path, model_file, capsys, monkeypatch):
    """A relaxation that fuses two atoms says so (not a plain 'converged'), and the
    calculator's close-contact warning prints as one 'geomformer-md: warning:' line."""
    from ase.calculators.lj import LennardJones

    import geomformer_md.cli as cli

    write(tmp_path / "pair.extxyz", Atoms("Cu2", positions=[[0, 0, 0], [0.2, 0, 0]]))
    monkeypatch.setattr(cli, "_calculator", lambda args, skin=0.0: LennardJones(
        sigma=0.25, epsilon=1.0, rc=2.0))
    assert main(["relax", str(tmp_path / "pair.extxyz"), "-q"]) == 0
    out, err = capsys.readouterr()
    assert "UNPHYSICAL" in out
    assert err.startswith("geomformer-md: warning: in the relaxed structure atom 0 (Cu)")
    assert read(tmp_path / "pair.relaxed.extxyz").info["close_contact"]
    monkeypatch.undo()
    write(tmp_path / "squeezed.extxyz", Atoms("CuO", positions=[[0, 0, 0], [0.7, 0, 0]]))
    assert main(["eval", str(tmp_path / "squeezed.extxyz"), *_model_args(model_file)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("geomformer-md: warning: atom 0 (Cu)"), err


def test_api_errors_are_reworded_as_flags(frames_file, model_file, capsys):
    argv = ["relax", str(frames_file), "--index", "0", "--fix-bottom-layers", "9", "--steps", "1"]
    assert main([*argv, *_model_args(model_file)]) == 1
    line = one_error_line(capsys)
    assert "--fix-bottom-layers 9 would fix all" in line and "fix_bottom_layers" not in line
    argv = ["md", str(frames_file), "--index", "0", "--fix-bottom-layers", "9", "--steps", "1"]
    assert main([*argv, *_model_args(model_file)]) == 1
    assert "--fix-bottom-layers 9" in one_error_line(capsys)
