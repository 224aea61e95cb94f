"""The progress bar of ``poisoncert train``, ``demo``, ``predict`` and ``certify`` (rich).

The rate is the work done since the work began divided by the time since then (so bursts of
finished chunks, as from workers or Ray, do not inflate it, nor do a resumed run's finished
classifiers), and the ETA is the work left at that rate; before the first unit of work is done
both show ``--``. The work begins at the first ``advance(0)`` (training says so once its
worker processes are started, the data loaded and torch imported), or, where no
``advance(0)`` comes, when the bar opened: ``train --workers 2`` on MNIST 1/7 spent 8 s of
86 starting up, and an ETA timed from the bar's opening said 143 s at 12 % where 64 s were
left (84 s timed from the beginning). The elapsed time is the bar's. The bar is drawn on
stderr, so that a command's output on stdout (``predict``'s rows) stays clean when piped.
Where stderr is no terminal (a log file, ``nohup``), there is no bar: a plain line with the
same counts, rate and ETA at most every ``LOG_INTERVAL`` seconds as work finishes, and one
when the work ends or stops (a run of hours logged one line at its end showed nothing while
it trained).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from poisoncert.rates import clock_text as _clock
from poisoncert.rates import rate_and_eta
from poisoncert.rates import speed_text as _speed

__all__ = ["LOG_INTERVAL", "ROWS_BAR", "RateClock", "log_lines", "rate_and_eta",
           "rich_progress", "rows_bar"]

#: Seconds between two progress lines where stderr is no terminal (a log file).
LOG_INTERVAL = 60.0

#: From this many rows predict and certify show a bar, in rows, while they make the rows'
#: text (CSV about 10-30 microseconds a row, JSON about 3 times more): predict's 10^6 inputs
#: spent 30 s (CSV) to 90 s (JSON) on it, silent, after the predictions' bar had ended;
#: certify's certificates.csv of 200,000 test points 5-20 s, silent.
ROWS_BAR = 50_000


class RateClock:
    """The rate and ETA of a bar opened with ``completed`` units already done: the units done
    since ``begin`` (the work began; by default the bar's opening) over the time since then.
    ``clock`` gives the seconds (default ``time.monotonic``; tests give a fake one)."""

    def __init__(self, completed: float, clock: Callable[[], float] | None = None):
        self.clock = time.monotonic if clock is None else clock
        self.opened = self.since = self.clock()
        self.base = completed
        self.began = False

    def begin(self, completed: float) -> None:
        """The work itself begins now, ``completed`` units done (the first call counts)."""
        if not self.began:
            self.began = True
            self.since, self.base = self.clock(), completed

    def elapsed(self) -> float:
        """Seconds since the bar opened."""
        return self.clock() - self.opened

    def rate_and_eta(self, completed: float, total: float
                     ) -> tuple[float | None, float | None]:
        return rate_and_eta(completed - self.base, total - completed, self.clock() - self.since)


def _console():
    """stderr: a terminal as it is, anything else (a log) wide enough for one unwrapped line."""
    from rich.console import Console

    con = Console(stderr=True)
    return con if con.is_terminal else Console(stderr=True, width=200)


@contextmanager
def rich_progress(total: int, completed: int, label: str, *, unit: str = "models"
                  ) -> Iterator[Callable[[int], None]]:
    """A rich progress bar in ``unit`` s (base classifiers by default), with the rate and ETA
    since the work began (``RateClock``); yields ``advance(k)`` (a
    ``poisoncert.experiment.ProgressDisplay``; ``advance(0)``: the work begins now).
    ``advance`` may be called from any thread. Where stderr is no terminal: lines
    (``log_lines``)."""
    console = _console()
    if not console.is_terminal:
        with log_lines(total, completed, label, unit=unit, console=console) as advance:
            yield advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
    from rich.text import Text

    clock = RateClock(completed)

    class RateColumn(ProgressColumn):
        def render(self, task):
            rate, eta = clock.rate_and_eta(task.completed, task.total)
            return Text(f"{_speed(rate)} {unit}/s {_clock(clock.elapsed())} ETA {_clock(eta)}")

    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(bar_width=12),
                   MofNCompleteColumn(), RateColumn(), console=console)
    with bar:
        tid = bar.add_task(label, total=total, completed=completed)

        def advance(k: int) -> None:
            if k == 0:
                clock.begin(bar.tasks[0].completed)
            else:
                bar.advance(tid, k)

        yield advance


@contextmanager
def log_lines(total: int, completed: int, label: str, *, unit: str = "models", console=None,
              interval: float = LOG_INTERVAL, clock: Callable[[], float] | None = None
              ) -> Iterator[Callable[[int], None]]:
    """The display of a log file: ``label: done/total unit, rate unit/s, elapsed, ETA`` on
    ``console`` (stderr), when work finishes at least ``interval`` seconds after the last line
    (or the start), and once at the end, also when the work stops on an error or Ctrl-C. No
    escape codes, no redrawn lines: a run of hours writes about one line a minute."""
    if console is None:
        console = _console()
    rates = RateClock(completed, clock)
    lock = threading.Lock()
    state = {"done": completed, "said": rates.opened}

    def say() -> None:
        done = state["done"]
        rate, eta = rates.rate_and_eta(done, total)
        console.print(f"{label}: {done}/{total} {unit}, {_speed(rate)} {unit}/s, "
                      f"{_clock(rates.elapsed())} elapsed, ETA {_clock(eta)}",
                      highlight=False, markup=False, soft_wrap=True)
        state["said"] = rates.clock()

    def advance(k: int) -> None:
        with lock:
            if k == 0:
                rates.begin(state["done"])
                return
            state["done"] += k
            if rates.clock() - state["said"] >= interval:
                say()

    try:
        yield advance
    finally:
        with lock:
            say()


def rows_bar(total: int, completed: int, label: str, *, least: int | None = None):
    """The display of rows whose text is made (predict's rows, certify's certificates.csv):
    ``rich_progress`` in rows (lines where stderr is no terminal) from ``least`` rows
    (default ``ROWS_BAR``), nothing for fewer."""
    if total < (ROWS_BAR if least is None else least):
        return _nothing()
    return rich_progress(total, completed, label, unit="rows")


@contextmanager
def _nothing() -> Iterator[Callable[[int], None]]:
    """No display (``experiment.display.no_display``'s, which imports this module)."""
    yield lambda k: None
