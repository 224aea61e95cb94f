"""The progress bar of ``poisoncert train`` and ``poisoncert demo`` (rich)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["rich_progress"]


@contextmanager
def rich_progress(total: int, completed: int, label: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar in base classifiers, with models/s and ETA; yields ``advance(k)``
    (a ``poisoncert.experiment.ProgressDisplay``)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text("-- models/s" if speed is None else f"{speed:.1f} models/s")

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                   MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn())
    with bar:
        tid = bar.add_task(label, total=total, completed=completed)
        yield lambda k: bar.advance(tid, k)
