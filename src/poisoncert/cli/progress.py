"""The progress bar of ``poisoncert train``, ``demo`` and ``predict`` (rich).

The rate is the work done since the bar started divided by the time since then (so bursts of
finished chunks, as from workers or Ray, do not inflate it), and the ETA is the work left at
that rate; before the first unit of work is done both show ``--``. The bar is drawn on stderr,
so that a command's output on stdout (``predict``'s rows) stays clean when piped; where stderr
is no terminal (a log file), rich writes the bar's last state once, on one line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["rich_progress", "rate_and_eta"]


def rate_and_eta(done: float, left: float, seconds: float) -> tuple[float | None, float | None]:
    """``(rate, eta)``: units per second since the start, and the seconds left at that rate;
    ``(None, None)`` before anything is done."""
    if done <= 0 or seconds <= 0:
        return None, None
    rate = done / seconds
    return rate, max(0.0, left) / rate


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _console():
    """stderr: a terminal as it is, anything else (a log) wide enough for one unwrapped line."""
    from rich.console import Console

    con = Console(stderr=True)
    return con if con.is_terminal else Console(stderr=True, width=200)


@contextmanager
def rich_progress(total: int, completed: int, label: str, *, unit: str = "models"
                  ) -> Iterator[Callable[[int], None]]:
    """A rich progress bar in ``unit`` s (base classifiers by default), with the rate and ETA
    since it started; yields ``advance(k)`` (a ``poisoncert.experiment.ProgressDisplay``).
    ``advance`` may be called from any thread."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
    from rich.text import Text

    start = time.monotonic()

    class RateColumn(ProgressColumn):
        def render(self, task):
            elapsed = time.monotonic() - start
            rate, eta = rate_and_eta(task.completed - completed, task.total - task.completed,
                                     elapsed)
            speed = "--" if rate is None else f"{rate:.3g}" if rate < 100 else f"{rate:.0f}"
            return Text(f"{speed} {unit}/s {_clock(elapsed)} ETA {_clock(eta)}")

    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(bar_width=12),
                   MofNCompleteColumn(), RateColumn(), console=_console())
    with bar:
        tid = bar.add_task(label, total=total, completed=completed)
        yield lambda k: bar.advance(tid, k)
