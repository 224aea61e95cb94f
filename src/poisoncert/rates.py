"""The rate and ETA of long work, as the progress bar (``poisoncert.cli.progress``) and the
progress lines of long library loops (``attack_run``, downloads) write them. No imports: any
layer may use it."""

from __future__ import annotations

__all__ = ["clock_text", "counted", "rate_and_eta", "rate_text", "speed_text"]


def rate_and_eta(done: float, left: float, seconds: float) -> tuple[float | None, float | None]:
    """``(rate, eta)``: units per second since the start, and the seconds left at that rate;
    ``(None, None)`` before anything is done."""
    if done <= 0 or seconds <= 0:
        return None, None
    rate = done / seconds
    return rate, max(0.0, left) / rate


def clock_text(seconds: float | None) -> str:
    """``mm:ss`` or ``h:mm:ss``; ``--:--`` for None."""
    if seconds is None:
        return "--:--"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def speed_text(rate: float | None) -> str:
    return "--" if rate is None else f"{rate:.3g}" if rate < 100 else f"{rate:.0f}"


def rate_text(done: int, total: int, seconds: float, unit: str) -> str:
    """``done/total unit, rate unit/s, elapsed, ETA``: the line of a long loop that prints
    lines (``seconds``: since its work began, so the ETA leaves the start-up out)."""
    rate, eta = rate_and_eta(done, total - done, seconds)
    return (f"{done}/{total} {unit}, {speed_text(rate)} {unit}/s, {clock_text(seconds)} "
            f"elapsed, ETA {clock_text(eta)}")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in its number: ``1 aggregation``, ``2 aggregations``, ``0 test
    points`` (``plural``: where it is not ``noun + "s"``, e.g. ``index`` / ``indices``)."""
    n = int(n)
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
