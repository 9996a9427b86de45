"""The teacher's side of a teacher run in its own Python environment.

Run by path in the teacher's interpreter (``/work/venv-label/bin/python teacher_worker.py``),
which need not have geomformer-md installed: this file imports only the standard library,
numpy, ASE and the calculator it is asked for, and must stay that way. The parent side is
``distill.teacher_process.SubprocessCalculator``.

Why not ASE's socket I/O (``SocketIOCalculator`` with a ``SocketClient``): its i-PI
protocol sends positions and cell only, and refuses any other change between calls
("Cannot change numbers through IPI protocol"); a distillation labels structures of every
size, periodicity and composition in turn. An exception in the client also ends it without
a message back. So the protocol here is the smallest that fits: one JSON line per message,
floats written with ``repr`` (exact round trip), on the worker's stdin and on a private
copy of its stdout.

    parent -> worker   {"calculator": "sevenn.calculator.SevenNetCalculator", "kwargs": {...}}
    worker -> parent   {"ready": true, "versions": {"sevenn": "0.13.0", ...}}
                       or {"error": "Type: message", "stage": "import" | "create"}
    parent -> worker   {"numbers": [...], "positions": [[...]], "cell": [[...]], "pbc": [...],
                        "stress": true if the cell is periodic in 3-D}
    worker -> parent   {"energy": e, "forces": [[...]], "stress": [6] or null}
                       or {"error": "Type: message"}
    parent -> worker   {"exit": true}            (or the parent's end of the pipe closes)

Anything the calculator prints goes to stderr (the run's teacher.log), never into the
protocol. The worker ends with its parent: at end of input, and, while a calculation runs,
through the parent-death signal (Linux) and a thread that watches the parent's pid.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time


def one_line(exc: BaseException) -> str:
    """'Type: first line of the message' (at most 300 characters)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:300] if msg else type(exc).__name__


def import_object(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def versions(calculator_path: str) -> dict:
    """Versions of what labels: the calculator's distribution, ASE, torch if loaded, Python."""
    from importlib import metadata

    top = calculator_path.split(".")[0]
    out = {}
    try:
        dists = metadata.packages_distributions().get(top, [top])
    except Exception:  # noqa: BLE001 - Python < 3.10
        dists = [top]
    for dist in dists[:1]:
        try:
            out[top] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            mod = sys.modules.get(top)
            out[top] = str(getattr(mod, "__version__", "unknown"))
    for name in ("ase", "torch"):
        mod = sys.modules.get(name)
        if mod is not None and name not in out:
            out[name] = str(getattr(mod, "__version__", "unknown"))
    out["python"] = sys.version.split()[0]
    return out


def _die_with_parent(parent: int) -> None:
    """Exit when the parent process is gone, even in the middle of a calculation."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - the thread below still watches
            pass

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(1.0)

    if os.getppid() != parent:  # the parent died before the signal was set
        os._exit(3)
    threading.Thread(target=watch, daemon=True).start()


def compute(calc, request: dict) -> dict:
    import numpy as np
    from ase import Atoms

    atoms = Atoms(numbers=request["numbers"], positions=request["positions"],
                  cell=request["cell"], pbc=request["pbc"])
    if request.get("magmoms") is not None:
        atoms.set_initial_magnetic_moments(request["magmoms"])
    if request.get("charges") is not None:
        atoms.set_initial_charges(request["charges"])
    if hasattr(calc, "reset"):  # no state from the structure before (see teacher.label)
        calc.reset()
    atoms.calc = calc
    energy = float(atoms.get_potential_energy())
    forces = np.asarray(atoms.get_forces(), dtype=float)
    stress = None
    if request.get("stress"):
        stress = np.asarray(atoms.get_stress(), dtype=float).tolist()
    return {"energy": energy, "forces": forces.tolist(), "stress": stress}


def main() -> int:
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the calculator's prints go to stderr, never into the protocol

    def reply(obj: dict) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    if len(sys.argv) > 1:
        _die_with_parent(int(sys.argv[1]))
    setup = json.loads(sys.stdin.readline() or "{}")
    path = setup.get("calculator", "")
    try:
        factory = import_object(path)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent in one line
        reply({"error": one_line(exc), "stage": "import"})
        return 1
    try:
        calc = factory(**setup.get("kwargs", {}))
    except BaseException as exc:  # noqa: BLE001
        reply({"error": one_line(exc), "stage": "create"})
        return 1
    reply({"ready": True, "versions": versions(path), "pid": os.getpid()})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("exit"):
            break
        try:
            reply(compute(calc, request))
        except Exception as exc:  # noqa: BLE001 - a failed structure, reported in one line
            reply({"error": one_line(exc)})
    return 0


if __name__ == "__main__":
    # run by path, Python put this file's folder first on sys.path, where config.py, space.py
    # and run.py would shadow modules of the teacher's environment: use the working
    # directory instead, as ``python -c`` does
    if os.path.abspath(sys.path[0] or os.curdir) == os.path.dirname(os.path.abspath(__file__)):
        sys.path[0] = os.getcwd()
    sys.exit(main())
