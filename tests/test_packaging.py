"""The wheel holds every subpackage: pyproject lists packages by name, and a subpackage left
out of that list works in an editable install and is missing from `pip install .`."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(cfg["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "geomformer_md").rglob("__init__.py")}
    assert found - listed == set(), f"not in pyproject's packages: {sorted(found - listed)}"
