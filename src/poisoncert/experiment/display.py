"""Progress displays of long library calls (training a run, predicting many inputs).

A ``ProgressDisplay`` is ``display(total, completed, label)``, a context manager yielding
``advance(k)``, called as ``k`` more base classifiers are done (``Ensemble``'s predictions:
``k`` more predictions, one classifier on one input, of ``T * n``; it passes
``unit="predictions"`` to a display that takes a ``unit``), and once with ``k = 0`` where
the work itself begins (training's worker processes started, data loaded: a display that
shows a rate may time it from then, leaving the start-up out); ``poisoncert.cli.progress.
rich_progress`` draws a bar. ``progress_display`` turns a call's ``progress`` argument into
one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from poisoncert._validation import param_error

__all__ = ["ProgressDisplay", "checksum_display", "no_display", "progress_display"]

#: ``display(total, completed, label)`` -> context manager yielding ``advance(k)``.
ProgressDisplay = Callable[[int, int, str], AbstractContextManager[Callable[[int], None]]]


@contextmanager
def no_display(total: int, completed: int, label: str) -> Iterator[Callable[[int], None]]:
    """The display that shows nothing."""
    yield lambda k: None


def progress_display(progress, where: str, name: str = "progress") -> ProgressDisplay:
    """The display a ``progress`` argument asks for: None or False, none; True, the rich bar
    of the command line (``poisoncert.cli.progress.rich_progress``, on stderr); otherwise a
    ``ProgressDisplay`` of the caller's (anything else: one error naming the argument,
    ``name``)."""
    if progress is None or progress is False:
        return no_display
    if progress is True:
        from poisoncert.cli.progress import rich_progress

        return rich_progress
    if not callable(progress):
        raise param_error(name, where, "None, False, True (a progress bar) or a "
                          "progress display such as poisoncert.cli.progress.rich_progress",
                          progress)
    return progress


def checksum_display(progress, where: str) -> ProgressDisplay | None:
    """The display of a run's checksums (``RunDir.verify``, in MiB read) a
    ``verify_progress`` argument asks for: None or False, none (None); True, the rich bar in
    MiB; otherwise a ``ProgressDisplay`` of the caller's (the command line's
    ``cli.runs.checksum_bar``: a bar for large runs only)."""
    if progress is None or progress is False:
        return None
    display = progress_display(progress, where, "verify_progress")
    if progress is True:
        import functools

        display = functools.partial(display, unit="MiB")
    return display


def takes_unit(display) -> bool:
    """Whether a ``ProgressDisplay`` takes a ``unit`` (``cli.progress.rich_progress`` does)."""
    import inspect

    try:
        return "unit" in inspect.signature(display).parameters
    except (TypeError, ValueError):  # no signature to read (a builtin)
        return False
