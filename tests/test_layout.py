"""What ships and what is archived: shipped names load, archived names say where their file
is, archived files load by path, the wheel carries only the shipped potentials, and
scripts/ship_potential.py --keep moves the older ones out in one command."""

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ase.build import bulk
from ase.data import chemical_symbols
from ase.io import write
from conftest import make_model

from geomformer_md import GeoMFormerCalculator, load_potential, save_model
from geomformer_md.cli import main
from geomformer_md.io.registry import (
    ArchivedPotentialError,
    archived_potentials,
    list_potentials,
    potentials_dir,
)

try:
    import tomllib  # Python 3.11+
except ImportError:  # 3.10: the pyproject checks skip
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text()) if tomllib else None
needs_tomllib = pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
SHIPPED = list_potentials()
ARCHIVED = archived_potentials()
needs_archive = pytest.mark.skipif(not ARCHIVED, reason="no archived potential")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(SHIPPED) or ["none"])
def test_shipped_names_load(name):
    if not SHIPPED:
        pytest.skip("no shipped potential")
    model = load_potential(name)  # checks the sha256 on the way
    assert [chemical_symbols[z] for z in model.config.species] == SHIPPED[name]["elements"]
    assert model.config.cutoff == SHIPPED[name]["cutoff"]


def test_only_the_default_and_the_previous_potential_ship():
    singles = [n for n, e in SHIPPED.items() if e.get("kind") != "committee"]
    assert len(singles) <= 2, (f"{len(singles)} potentials ship: archive the older ones with "
                               f"scripts/ship_potential.py --keep 2")
    for name, entry in SHIPPED.items():  # a committee ships only beside its base
        if entry.get("kind") == "committee":
            assert entry["committee_of"] in singles, name
    assert not set(SHIPPED) & set(ARCHIVED), "a name both shipped and archived"
    if SHIPPED:
        assert json.loads((potentials_dir() / "manifest.json").read_text())["default"] in SHIPPED
    files = {p.name for p in potentials_dir().glob("*.pt")}
    assert files == {e["file"] for e in SHIPPED.values()}, "potentials/ holds unlisted files"


@needs_archive
@pytest.mark.parametrize("name", sorted(ARCHIVED) or ["none"])
def test_archived_name_says_where_its_file_is(name):
    rel = ARCHIVED[name]["repository_path"]
    for load in (load_potential, GeoMFormerCalculator):
        with pytest.raises(ArchivedPotentialError) as info:
            load(name)
        msg = str(info.value)
        assert "\n" not in msg and msg.startswith(f"{name} is archived") and rel in msg
        assert "neither a shipped potential" not in msg


@needs_archive
@pytest.mark.parametrize("name", sorted(ARCHIVED) or ["none"])
def test_archived_file_loads_by_path(name):
    entry = ARCHIVED[name]
    path = ROOT / entry["repository_path"]
    assert path.is_file() and _sha256(path) == entry["sha256"], path
    model = load_potential(str(path))
    assert model.config.cutoff == entry["cutoff"]
    assert model.n_parameters() == entry["n_parameters"]
    assert (ROOT / entry["model_card"]).is_file()


@needs_archive
def test_cli_names_the_archived_file_in_one_line(tmp_path, capsys):
    name = sorted(ARCHIVED)[-1]
    write(tmp_path / "cu.xyz", bulk("Cu"))
    assert main(["eval", str(tmp_path / "cu.xyz"), "--model", name]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"geomformer-md: error: {name} is archived"), err
    assert ARCHIVED[name]["repository_path"] in err[0]
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    note = [line for line in out if line.startswith("archived")]
    assert len(note) == 1 and all(n in note[0] for n in ARCHIVED)
    assert not any(n in note[0] for n in SHIPPED)


@needs_tomllib
def test_wheel_patterns_take_only_the_shipped_potentials():
    """The potentials package data is every file of potentials/ that matches its patterns:
    those must be the shipped files and their cards, and nothing archived."""
    tool = PYPROJECT["tool"]["setuptools"]
    assert tool["package-dir"]["geomformer_md.potentials"] == "potentials"
    patterns = tool["package-data"]["geomformer_md.potentials"]
    packaged = {p.name for pat in patterns for p in (ROOT / "potentials").glob(pat)}
    assert {n for n in packaged if n.endswith(".pt")} == {e["file"] for e in SHIPPED.values()}
    assert {e["model_card"] for e in SHIPPED.values()} <= packaged
    assert not packaged & {Path(e["repository_path"]).name for e in ARCHIVED.values()}


@needs_tomllib
def test_every_package_is_in_the_wheel():
    """pyproject lists packages by hand: a new subpackage left out is missing from the wheel
    (geomformer_md.distill was)."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "geomformer_md").rglob("__init__.py")}
    assert found <= listed, f"not in pyproject's packages: {sorted(found - listed)}"


@pytest.mark.slow
def test_built_wheel_holds_only_the_shipped_potentials(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    pts = {Path(n).name for n in names if n.endswith(".pt")}
    assert pts == {e["file"] for e in SHIPPED.values()}
    assert "geomformer_md/distill/run.py" in names
    assert not any(n.startswith(("research/", "scripts/", "data/")) for n in names)


# ------------------------------------------------------------- scripts/ship_potential.py

spec = importlib.util.spec_from_file_location("ship_potential",
                                              ROOT / "scripts" / "ship_potential.py")
ship_potential = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ship_potential)


def _tree(tmp_path, n):
    """A repository with n potentials shipped (p1 oldest, pn the default) and their cards."""
    pots, archive = tmp_path / "potentials", tmp_path / "research" / "potentials"
    pots.mkdir()
    for k in range(1, n + 1):
        save_model(make_model("float32", seed=k), tmp_path / f"m{k}.pt")
        (pots / f"p{k}.md").write_text(f"# p{k}\n")
        argv = [str(tmp_path / f"m{k}.pt"), f"p{k}", "--default", "--potentials-dir", str(pots),
                "--archive-dir", str(archive)]
        assert ship_potential.main(argv) == 0
    (pots / "p1-parity.png").write_bytes(b"png")
    return pots, archive


def test_ship_with_keep_2_archives_all_but_the_newest_two(tmp_path, monkeypatch, capsys):
    pots, archive = _tree(tmp_path, 3)
    save_model(make_model("float32", seed=4), tmp_path / "m4.pt")
    argv = [str(tmp_path / "m4.pt"), "p4", "--default", "--keep", "2",
            "--potentials-dir", str(pots), "--archive-dir", str(archive)]
    assert ship_potential.main(argv) == 0
    manifest = json.loads((pots / "manifest.json").read_text())
    assert manifest["default"] == "p4" and list(manifest["potentials"]) == ["p3", "p4"]
    assert sorted(manifest["archived"]) == ["p1", "p2"]
    assert sorted(p.name for p in pots.glob("p*")) == ["p3.md", "p3.pt", "p4.pt"]
    assert sorted(p.name for p in archive.iterdir()) == [
        "p1-parity.png", "p1.md", "p1.pt", "p2.md", "p2.pt"]
    entry = manifest["archived"]["p1"]
    assert entry["repository_path"] == "research/potentials/p1.pt"
    assert entry["model_card"] == "research/potentials/p1.md" and "file" not in entry
    # the registry of that tree: p1 by name says where it is; by path it loads
    monkeypatch.setenv("GEOMFORMER_MD_POTENTIALS", str(pots))
    with pytest.raises(ArchivedPotentialError, match=r"p1 is archived.*research/potentials/p1\.pt"):
        load_potential("p1")
    assert load_potential(str(tmp_path / entry["repository_path"])).n_parameters() > 0
    assert load_potential("p3").n_parameters() > 0
    # a second run has nothing left to do and changes nothing
    before = (pots / "manifest.json").read_text()
    assert ship_potential.main(["--keep", "2", "--potentials-dir", str(pots),
                                "--archive-dir", str(archive)]) == 0
    assert (pots / "manifest.json").read_text() == before


def test_a_committee_ships_by_name_beside_its_base_and_is_archived_with_it(tmp_path,
                                                                           monkeypatch, capsys):
    from geomformer_md.committee import Committee, as_committee
    from geomformer_md.io.checkpoint import save_committee

    pots, archive = _tree(tmp_path, 2)
    save_committee(as_committee([make_model("float32", seed=s) for s in (6, 7)]),
                   tmp_path / "c.pt")
    common = ["--potentials-dir", str(pots), "--archive-dir", str(archive)]
    with pytest.raises(SystemExit, match="give --committee-of BASE"):  # its base is named
        ship_potential.main([str(tmp_path / "c.pt"), "p2-committee"] + common)
    assert ship_potential.main([str(tmp_path / "c.pt"), "p2-committee", "--committee-of", "p2",
                                "--keep", "2"] + common) == 0
    manifest = json.loads((pots / "manifest.json").read_text())
    assert manifest["default"] == "p2" and list(manifest["potentials"]) == [
        "p1", "p2", "p2-committee"]  # not counted by --keep
    assert manifest["potentials"]["p2-committee"]["members"] == 2
    monkeypatch.setenv("GEOMFORMER_MD_POTENTIALS", str(pots))
    assert isinstance(load_potential("p2-committee"), Committee)
    save_model(make_model("float32", seed=8), tmp_path / "m3.pt")
    save_model(make_model("float32", seed=9), tmp_path / "m4.pt")
    for k in (3, 4):  # p2 leaves the two kept: its committee goes with it
        assert ship_potential.main([str(tmp_path / f"m{k}.pt"), f"p{k}", "--default",
                                    "--keep", "2"] + common) == 0
    manifest = json.loads((pots / "manifest.json").read_text())
    assert list(manifest["potentials"]) == ["p3", "p4"]
    assert {"p1", "p2", "p2-committee"} <= set(manifest["archived"])


def test_ship_keep_refuses_to_archive_what_it_ships(tmp_path, capsys):
    pots, archive = _tree(tmp_path, 2)
    save_model(make_model("float32", seed=5), tmp_path / "m5.pt")
    before = (pots / "manifest.json").read_text()
    with pytest.raises(SystemExit):
        ship_potential.main([str(tmp_path / "m5.pt"), "p5", "--keep", "1",
                             "--potentials-dir", str(pots), "--archive-dir", str(archive)])
    assert "would archive p5" in capsys.readouterr().err
    assert (pots / "manifest.json").read_text() == before and not (pots / "p5.pt").exists()


def test_ship_keep_finishes_an_archive_cut_short(tmp_path):
    """Killed after moving files but before the manifest was written: a rerun completes it."""
    pots, archive = _tree(tmp_path, 3)
    archive.mkdir(parents=True)
    (pots / "p1.pt").rename(archive / "p1.pt")  # moved, manifest not yet updated
    assert ship_potential.main(["--keep", "2", "--potentials-dir", str(pots),
                                "--archive-dir", str(archive)]) == 0
    manifest = json.loads((pots / "manifest.json").read_text())
    assert sorted(manifest["archived"]) == ["p1"] and list(manifest["potentials"]) == ["p2", "p3"]
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["archived"]["p1"]["sha256"])


# ------------------------------------------------------------------ research/ configs

CONFIGS = sorted((ROOT / "research").rglob("*.yaml"))


def test_research_configs_are_valid_and_name_existing_files(monkeypatch):
    """Every experiment config still reads, and the data and starting models it names exist
    (paths relative to the repository root, as its "Run:" line runs it; runs/ is a run's own
    output, not kept). An archived potential is named by its file, not by its name."""
    import yaml

    from geomformer_md.distill.config import load_distill_config
    from geomformer_md.train.config import load_train_config

    monkeypatch.chdir(ROOT)
    assert len(CONFIGS) >= 40
    missing = []
    for path in CONFIGS:
        if "teacher" in (yaml.safe_load(path.read_text()) or {}):  # a distillation config
            cfg = load_distill_config(path)
            named = [*cfg.extra_data, cfg.init_from]
        else:
            cfg = load_train_config(path)
            named = [cfg.data.train_file, *cfg.data.extra_train_files, cfg.init_from]
        for f in filter(None, named):
            if not (f in SHIPPED or f.startswith("runs/") or Path(f).is_file()):
                missing.append(f"{path.relative_to(ROOT)}: {f}")
    assert not missing, missing
