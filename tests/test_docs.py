"""The README's Python runs as written, its paths exist, and no document names an old
potential as the default."""

import json
import re
from pathlib import Path

import pytest

import geomformer_md
from geomformer_md.io.registry import default_potential_name

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", README, flags=re.S)

needs_potential = pytest.mark.skipif(
    not geomformer_md.list_potentials(), reason="no shipped potential"
)


def test_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@needs_potential
@pytest.mark.parametrize("k", range(len(SNIPPETS)))
def test_readme_snippet_runs(k, tmp_path, monkeypatch, capsys):
    """Each ```python block of the README, run as a user would paste it (in an empty
    working directory: the MD snippet writes md.traj and md.log there)."""
    if "dispersion=" in SNIPPETS[k]:
        pytest.importorskip("tad_dftd3")
    monkeypatch.chdir(tmp_path)
    exec(compile(SNIPPETS[k], f"README.md python block {k}", "exec"), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip(), "the snippet printed nothing"


def test_readme_paths_exist():
    """Every repository path the README names exists, and none points outside it."""
    assert "../" not in README
    paths = set(re.findall(r"`((?:docs|potentials|scripts|benchmarks|examples|data|geomformer_md"
                           r"|research)/[^`\s]*)`", README))
    assert paths, "the README names no repository paths"
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, f"README names missing paths: {missing}"


# Every document a user or maintainer reads, and the configs and shell scripts whose comments
# say how to run them (CHANGELOG.md is history: its old entries keep the paths of their day).
DOCUMENTS = sorted({ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("potentials/*.md"),
                    *ROOT.glob("data/*/README.md"),
                    *(p for top in ("research", "scripts", "benchmarks", "examples")
                      for ext in ("md", "yaml", "sh") for p in (ROOT / top).rglob(f"*.{ext}"))})
REPO_PATH = re.compile(r"(?<![\w./$-])((?:docs|potentials|scripts|benchmarks|examples|data"
                       r"|geomformer_md|research|tests)/[\w./*<>{}-]*)")
NOT_PATHS = {
    "data/iter_000.extxyz", "data/iter_i.extxyz",  # inside a distill run's folder (docs/distill.md)
    "data/extra.extxyz",
    "tests/conftest.make_model",  # a Python name
}


def test_every_document_names_existing_paths():
    """Paths moved (research/, archived potentials) leave no stale reference: every repository
    path a document names exists, except outputs of the commands it shows (after --out)."""
    missing = []
    for doc in DOCUMENTS:
        text = doc.read_text()
        outputs = set(re.findall(r"(?:--out|-o) (\S+)", text))
        for m in REPO_PATH.finditer(text):
            path = m.group(1).rstrip(".,:;")
            if any(c in path for c in "*<>{}"):  # a pattern or a placeholder, not one path
                continue
            if path in NOT_PATHS or path in outputs or (ROOT / path.rstrip("/")).exists():
                continue
            missing.append(f"{doc.relative_to(ROOT)}: {path}")
        for target in re.findall(r"\]\(([^)\s#]+)\)", text):  # markdown links, relative
            if not re.match(r"[a-z]+:", target) and not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(ROOT)}: link {target}")
    assert len(DOCUMENTS) > 50 and not missing, missing


def test_simulate_exports_what_the_readme_lists():
    from geomformer_md import simulate

    for name in ("relax", "run_md", "adsorption_energies", "phonons", "predict", "relax_many",
                 "run_md_many"):
        obj = getattr(simulate, name)
        assert callable(obj) and not isinstance(obj, type(simulate)), name
    import geomformer_md.simulate.relax  # noqa: F401  (the module, imported by name)
    from geomformer_md.simulate import relax

    assert callable(relax), "the module shadowed the function"


@needs_potential
def test_only_the_default_model_card_says_default():
    """Model cards of superseded potentials (shipped or archived) say so; only the default's
    card claims it."""
    default = default_potential_name()
    manifest = json.loads((ROOT / "potentials" / "manifest.json").read_text())
    committees = {n: e["committee_of"] for n, e in manifest["potentials"].items()
                  if e.get("kind") == "committee"}
    cards = [*(ROOT / "potentials").glob("*.md"), *(ROOT / "research" / "potentials").glob("*.md")]
    for card in sorted(cards):
        status = card.read_text().split("\n\n")[1]  # the bold status paragraph
        if card.stem in committees:  # a committee of a shipped potential says whose
            assert f"committee of {committees[card.stem]}" in status, card.name
        elif card.stem == default:
            assert "the default" in status and "superseded" not in status, card.name
        else:
            assert "superseded" in status.lower(), f"{card.name} does not say it is superseded"
    assert f"`{default}`" in README


def test_license_and_citation():
    """MIT as pyproject says; CITATION.cff cites GeoMFormer and SevenNet (the labeller)."""
    import yaml

    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == geomformer_md.__version__
    refs = {r["title"].split(":")[0]: r for r in cff["references"]}
    geom = refs["GeoMFormer"]
    assert geom["year"] == 2024 and "Machine Learning" in geom["collection-title"]
    assert [a["family-names"] for a in geom["authors"]][0] == "Chen"
    seven = next(r for r in cff["references"] if "SevenNet" in r.get("notes", ""))
    assert seven["doi"] == "10.1021/acs.jctc.4c00190"
