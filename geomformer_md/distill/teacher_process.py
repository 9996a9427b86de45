"""An ASE calculator that runs another calculator in a separate, long-lived Python process.

A teacher such as SevenNet pins its own e3nn and torch, so it lives in its own environment
and never becomes a dependency of geomformer-md. ``SubprocessCalculator(python, calculator,
kwargs)`` starts ``python teacher_worker.py`` once, builds the calculator there, and sends
it one structure per call (any size, cell, periodicity and composition: the protocol is in
teacher_worker.py, with why ASE's socket I/O does not fit).

What happens when things go wrong:
- the interpreter is missing or cannot import or build the calculator: TeacherError at
  start, one line naming ``teacher.python`` / ``teacher.calculator``;
- the calculator raises: RemoteError("Type: message") for that structure; the worker lives on;
- the worker dies or gives no answer within ``timeout`` seconds: it is stopped (its whole
  process group), TeacherProcessError for that structure, and a new worker starts at the
  next call; a worker found dead between calls is restarted without failing anything.
The worker dies with this process (closed here, at exit, or from its side when its
parent is gone).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from .teacher import TeacherError

WORKER = Path(__file__).with_name("teacher_worker.py")
START_TIMEOUT = 600.0  # s: importing torch and loading a model on a busy machine


class TeacherProcessError(RuntimeError):
    """The teacher's process died or hung on a structure (it is restarted for the next)."""


class RemoteError(RuntimeError):
    """The teacher's calculator raised; the message is 'Type: message' from the worker."""


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _stop(proc: subprocess.Popen | None) -> None:
    """Kill the worker and anything it started (it leads its own process group)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _shutdown(proc: subprocess.Popen | None) -> None:
    """Ask the worker to exit, then make sure it has."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.stdin.write(b'{"exit": true}\n')
        proc.stdin.flush()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        _stop(proc)


class SubprocessCalculator(Calculator):
    """``calculator`` (an import path) built with ``kwargs`` in ``python``'s environment.

    Args:
        python: the teacher's interpreter (a path, or a name on PATH).
        calculator: import path of an ASE calculator class or factory in that environment.
        kwargs: its keyword arguments (plain JSON values).
        timeout: seconds one structure may take before the worker is stopped and
            restarted (None: no limit).
        log_path: where the worker's stderr (the calculator's output) goes; a temporary
            file if None.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, python: str, calculator: str, kwargs: dict | None = None,
                 timeout: float | None = None, log_path: str | Path | None = None) -> None:
        super().__init__()
        self.python = _interpreter(python)
        self.calculator = calculator
        self.kwargs = dict(kwargs or {})
        self.timeout = timeout
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="teacher-", suffix=".log")
            os.close(fd)
        self.log_path = Path(log_path)
        self.versions: dict = {}
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._ended = False
        self._finalizer = None
        self._start()

    # ----------------------------------------------------------------- process
    def _start(self) -> None:
        self._buffer = b""
        with open(self.log_path, "ab") as log:
            try:
                self._proc = subprocess.Popen(
                    [self.python, str(WORKER), str(os.getpid())], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=log, bufsize=0, start_new_session=True)
            except OSError as exc:
                raise TeacherError(f"teacher.python {self.python} cannot be run: "
                                   f"{exc.strerror or exc}") from None
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _shutdown, self._proc)
        try:
            self._send({"calculator": self.calculator, "kwargs": self.kwargs})
        except OSError:  # already exited (not a worker at all): its exit code says why, below
            pass
        wait = START_TIMEOUT if self.timeout is None else max(START_TIMEOUT, self.timeout)
        reply = self._receive(wait)
        if reply is None or "ready" not in reply:
            code = self._exit_code() if self._ended else None
            _stop(self._proc)
            self._proc = None
            if reply is None:
                why = (f"no answer within {wait:g} s" if not self._ended
                       else f"{_exit_reason(code)}; {self._log_tail() or 'no output'}")
                raise TeacherError(f"teacher.python {self.python} did not start the teacher "
                                   f"worker ({why}; log: {self.log_path})")
            if reply.get("stage") == "import":
                raise TeacherError(f"teacher.calculator {self.calculator!r} cannot be imported "
                                   f"by teacher.python {self.python}: {reply['error']}")
            raise TeacherError(f"teacher {self.calculator} could not be created with kwargs "
                               f"{self.kwargs} in teacher.python {self.python}: {reply['error']}")
        self.versions = dict(reply.get("versions", {}))

    def _send(self, obj: dict) -> None:
        self._proc.stdin.write((json.dumps(obj) + "\n").encode())
        self._proc.stdin.flush()

    def _receive(self, timeout: float | None) -> dict | None:
        """The next reply, or None at end of output or after ``timeout`` seconds. A line
        that is not a JSON object (a wrapper script's banner) goes to the log."""
        self._ended = False
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self._proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" not in self._buffer:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    if not sel.select(left):
                        continue
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        self._ended = True
                        return None
                    self._buffer += chunk
                line, _, self._buffer = self._buffer.partition(b"\n")
                try:
                    reply = json.loads(line)
                except ValueError:
                    reply = None
                if isinstance(reply, dict):
                    return reply
                with open(self.log_path, "ab") as log:
                    log.write(line + b"\n")

    def _exit_code(self) -> int | None:
        """The worker's exit status once its output has ended (it may take a moment to
        exit after closing its end of the pipe); None if it keeps running."""
        try:
            return self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return None

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1].strip()[:200] if lines else ""

    @property
    def pid(self) -> int | None:
        """The worker's process id (None when none runs)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def close(self) -> None:
        """Stop the worker (a later call starts a new one)."""
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None

    # ----------------------------------------------------------------- ASE
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self._proc is None or self._proc.poll() is not None:  # gone between calls
            self.restarts += self._proc is not None
            self._start()
        a = self.atoms
        periodic = bool(np.all(a.pbc) and a.cell.rank == 3)
        request = {"numbers": a.numbers.tolist(), "positions": a.positions.tolist(),
                   "cell": a.cell.array.tolist(), "pbc": a.pbc.tolist(), "stress": periodic}
        if a.has("initial_magmoms"):
            request["magmoms"] = a.get_initial_magnetic_moments().tolist()
        if a.has("initial_charges"):
            request["charges"] = a.get_initial_charges().tolist()
        try:
            self._send(request)
        except OSError:  # died just now: its reply below is the end of output
            pass
        reply = self._receive(self.timeout)
        if reply is None:
            code = self._exit_code() if self._ended else None
            _stop(self._proc)
            self._proc = None
            self.restarts += 1
            if not self._ended:
                raise TeacherProcessError(f"no answer within teacher.timeout {self.timeout:g} s: "
                                          "teacher process stopped, restarting")
            tail = self._log_tail()
            raise TeacherProcessError(f"teacher process died ({_exit_reason(code)})"
                                      + (f": {tail}" if tail else "") + ", restarting")
        if "error" in reply:
            raise RemoteError(reply["error"])
        energy = reply["energy"]
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": np.array(reply["forces"], dtype=float).reshape(-1, 3)}
        if reply.get("stress") is not None:
            self.results["stress"] = np.array(reply["stress"], dtype=float)


def _interpreter(python) -> str:
    if not isinstance(python, str) or not python:
        raise TeacherError(f"teacher.python must be the path of a Python interpreter, got "
                           f"{python!r}")
    found = python if os.sep in python else shutil.which(python)
    if not found or not Path(found).exists():
        raise TeacherError(f"teacher.python {python} does not exist")
    if Path(found).is_dir() or not os.access(found, os.X_OK):
        raise TeacherError(f"teacher.python {python} is not an executable file")
    return str(found)
