"""Progress of long work, on stderr: the one mechanism every command uses.

* On a terminal, a unit of work with many steps (a training run) shows a tqdm bar
  (:func:`bar_enabled`); elsewhere (a log file, a pipe, CI) it prints a line every
  :data:`PROGRESS_LINE_SECONDS` (:class:`ProgressLines`), so a long run is never silent.
* Coarser units (a sweep's grid point, a study, a certificate's round) print one line each as they
  finish (:func:`note`), on a terminal or not.
* Work made of parts that report nothing themselves (a study's symbolic sections) is covered by
  a :class:`Heartbeat`: a line ``"<desc>: running, <elapsed> s"`` whenever no other progress line
  was printed for :data:`PROGRESS_LINE_SECONDS` (not on a terminal, where bars are drawn).
* ``--quiet`` (every command) silences all of it: :func:`quieted` is the switch the command line
  holds while a command runs; :func:`enabled` is what every producer of progress consults.

Progress goes to stderr only, so stdout (tables, JSON) is the same with and without it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterator

__all__ = ["PROGRESS_LINE_SECONDS", "quiet", "quieted", "enabled", "bar_enabled", "note", "ProgressLines",
           "Heartbeat"]

PROGRESS_LINE_SECONDS = 10.0
"""Seconds between two progress lines on stderr when it is not a terminal (no bar there)."""

_QUIET = [False]
_LAST_LINE = [time.perf_counter()]
"""When the last progress line was printed (a :class:`Heartbeat` stays silent while others report)."""


def _emit(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
    _LAST_LINE[0] = time.perf_counter()


def quiet() -> bool:
    """Whether progress is silenced (``--quiet``)."""
    return _QUIET[-1]


@contextlib.contextmanager
def quieted(flag: bool = True) -> Iterator[None]:
    """Silence progress (``flag`` true) or leave it as it is, inside the block; restored on exit.

    Args:
        flag: silence progress in the block.
    """
    _QUIET.append(bool(flag) or _QUIET[-1])
    try:
        yield
    finally:
        _QUIET.pop()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def enabled(progress: bool = True) -> bool:
    """Whether to show progress: asked for (``progress``) and not silenced by ``--quiet``."""
    return bool(progress) and not quiet()


def bar_enabled(progress: bool = True) -> bool:
    """Whether to draw a tqdm bar: progress :func:`enabled` and stderr a terminal."""
    return enabled(progress) and _stderr_is_terminal()


def note(message: str, *, progress: bool = True) -> None:
    """Print one progress line on stderr (unless silenced or ``progress`` is false).

    Args:
        message: the line, e.g. ``"sweep: cell 3/12 (layers=2) trained in 4.1 s"``.
        progress: the caller's own switch.
    """
    if enabled(progress):
        _emit(message)


class ProgressLines:
    """Periodic progress of a stepped task on a non-terminal stderr.

    :meth:`update` prints ``"<desc>: step <k>/<total><detail>, <elapsed> s, ETA <eta> s"`` whenever
    ``interval`` seconds have passed since the last line (nothing for shorter tasks). The ETA is
    the elapsed time per step so far times the steps left.
    """

    def __init__(self, desc: str, step0: int, total: int, *, interval: float = PROGRESS_LINE_SECONDS) -> None:
        """Args:
            desc: what is running (``"train 4 seeds [fused]"``).
            step0: the step it starts at (a resumed run starts later).
            total: the last step.
            interval: seconds between lines.
        """
        self.desc, self.step0, self.total, self.interval = desc, step0, total, float(interval)
        self.t0 = self.last = time.perf_counter()

    def update(self, step: int, detail: str = "") -> None:
        """Report that ``step`` steps are done; ``detail`` (e.g. ``", loss 0.12"``) follows the count."""
        if quiet():
            return
        now = time.perf_counter()
        if now - self.last < self.interval:
            return
        self.last = now
        done = step - self.step0
        eta = (now - self.t0) / done * (self.total - step) if done > 0 else math.nan
        _emit(f"{self.desc}: step {step}/{self.total}{detail}, {now - self.t0:.0f} s, ETA {eta:.0f} s")


class Heartbeat:
    """A context manager printing ``"<desc>: running, <elapsed> s"`` on a non-terminal stderr
    whenever no progress line was printed for ``interval`` seconds (a background thread).

    Silent on a terminal, under ``--quiet``, and when ``progress`` is false.
    """

    def __init__(self, desc: str, *, interval: float | None = None, progress: bool = True) -> None:
        """Args:
            desc: what is running (``"reproduce ahn2023 (quick)"``).
            interval: seconds of silence before a line (default :data:`PROGRESS_LINE_SECONDS`).
            progress: the caller's own switch.
        """
        import threading

        self.desc = desc
        self.interval = float(PROGRESS_LINE_SECONDS if interval is None else interval)
        self.active = enabled(progress) and not _stderr_is_terminal()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self.t0 = time.perf_counter()

    def _beat(self) -> None:
        while not self._stop.wait(min(self.interval, 1.0)):
            now = time.perf_counter()
            if now - _LAST_LINE[0] >= self.interval and not quiet():
                _emit(f"{self.desc}: running, {now - self.t0:.0f} s")

    def __enter__(self) -> "Heartbeat":
        self.t0 = time.perf_counter()
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
