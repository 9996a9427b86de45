"""One progress factory for relax, MD, adsorption scans and batches.

On a terminal (or in a notebook) a tqdm bar. Where stderr is a file or a pipe (a batch job,
``nohup``, ``2> run.log``) a bar would write a ``\\r`` redraw per update, kilobytes of them;
there we print plain lines instead, at a sensible interval:

    MD nvt-langevin: 4200/20000 steps (21%), T=301.2K, Etot=-512.3401, 41.0 step/s, 6.4 min left

A line every ``PLAIN_INTERVAL_S`` (30 s) at first, then every tenth of the elapsed time once
that is longer (about 10 lines per decade of run time: a two-day run logs ~70 lines), and
one at the end.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm as _tqdm_auto
from tqdm.autonotebook import tqdm as _tqdm_picked  # tqdm.notebook's class inside Jupyter

PLAIN_INTERVAL_S = 30.0


def _interactive(stream) -> bool:
    """A terminal, or a notebook (where tqdm.auto draws a widget instead of ``\\r`` text)."""
    if _tqdm_picked.__module__ != "tqdm.std":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(total: int, desc: str, enabled: bool = True, initial: int = 0, unit: str = "step"):
    """A progress display over ``total`` units starting at ``initial``.

    ``enabled=False`` shows nothing. Every kind accepts ``update``/``set_postfix``/
    ``set_postfix_str``/``close`` and has ``n``, so callers never branch.
    """
    if enabled and not _interactive(sys.stderr):
        return PlainProgress(total, desc, initial=initial, unit=unit)
    return _tqdm_auto(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        leave=True,
    )


class PlainProgress:
    """Plain progress lines on stderr (for logs): what tqdm shows, without redraws."""

    def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "step") -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self.start = initial
        self.postfix = ""
        self.t0 = self.t_last = time.monotonic()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.t_last >= max(PLAIN_INTERVAL_S, 0.1 * (now - self.t0)):
            self.t_last = now
            self._print(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if not self.closed:  # always a last line: where it ended, even at 0 steps
            self.closed = True
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        done = self.n - self.start
        elapsed = now - self.t0
        parts = [f"{self.n}/{self.total} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if self.postfix:
            parts.append(self.postfix)
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} {self.unit}/s")
            left = (self.total - self.n) / rate
            if left > 0:
                parts.append(f"{_duration(left)} left")
            else:
                parts.append(f"done in {_duration(elapsed)}")
        print(f"{self.desc}: {', '.join(parts)}", file=sys.stderr, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):  # pragma: no cover - not used as an iterator wrapper
        raise TypeError("PlainProgress does not wrap iterables")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
