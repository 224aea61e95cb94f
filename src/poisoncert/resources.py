"""Memory and CPUs: what a piece of work will need, checked before it starts (issue 9).

Every count and size of a run or an ensemble has a type bound (``_validation.INT_LIMIT``) and,
where it drives an allocation, a memory estimate checked before anything is allocated or
written: ``check_memory(estimate, values, where=...)`` adds the ``Term`` s of an estimate
(bytes of the arrays the work will hold, each derived from the code that allocates them;
``poisoncert.experiment.resources`` for a run, ``estimator_checks.fit_memory`` for the
estimator) and compares the total, times ``SAFETY``, with ``available_memory()``. When it
does not fit, the one error names the parameter of the largest term and the range of values
that would fit (found by bisection: every estimate grows with each of its parameters)::

    The 'selection.T' parameter of the config must be an int in the range [1, 9543216] for
    the run to fit in memory (...). Got 1000000000 instead.

A big machine is never held to a small fixed cap: the limits follow from its free memory.

``available_memory()`` is the smallest of the figures this process can know: the kernel's
estimate of memory available without swapping (``MemAvailable`` of ``/proc/meminfo``: free
memory plus reclaimable page cache; elsewhere free physical pages from ``os.sysconf``), the
memory left under this process's cgroup limit (v2 ``memory.max``, v1
``memory.limit_in_bytes``, less the usage that cannot be reclaimed), the address space left
under ``RLIMIT_AS`` (``ulimit -v``), and ``$POISONCERT_MEMORY_LIMIT`` (bytes, or with a
``K``/``M``/``G``/``T`` suffix), a limit a user may set to leave memory to others.

A few quick checks of small amounts (``small_need``: below ``SMALL_BYTES``, 64 MiB) skip
reading ``/proc``, except where ``$POISONCERT_MEMORY_LIMIT`` is set: a limit the user gives
is honoured whatever the amount.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from poisoncert._validation import param_error

__all__ = [
    "MEMORY_LIMIT_ENV",
    "SAFETY",
    "SMALL_BYTES",
    "ResourceError",
    "Term",
    "available_memory",
    "available_words",
    "check_memory",
    "format_bytes",
    "shortfall",
    "small_need",
    "usable_cpus",
]

#: An estimate times ``SAFETY`` must fit in the available memory, i.e. work plans for at most
#: 80% of it. The estimates count the arrays a computation holds at its peak, derived from the
#: code that allocates them; what they leave out (Python objects, allocator fragmentation and
#: caches, library workspaces, other processes growing meanwhile) is covered by the other 20%.
SAFETY = 1.25
#: A limit (bytes; ``K``, ``M``, ``G``, ``T`` suffixes of 1024) on the memory poisoncert plans
#: to use, below what the machine has free.
MEMORY_LIMIT_ENV = "POISONCERT_MEMORY_LIMIT"
#: Bytes below which a quick check (``small_need``) may take it that memory suffices
#: without reading ``/proc``: 64 MiB, while no ``$POISONCERT_MEMORY_LIMIT`` is set.
SMALL_BYTES = 1 << 26
#: cgroup limits at or above this mean "no limit" (the kernel's "max" is about 2**63).
_NO_LIMIT = 2**60


class ResourceError(ValueError):
    """A count or size whose work would not fit in this machine's memory (one line naming
    the parameter, the values that would fit and the value given)."""


@dataclass(frozen=True)
class Term:
    """``nbytes`` of an estimate, held for ``what`` (e.g. ``"prediction matrix"``), growing with
    the parameters ``keys`` (the first one named when the estimate does not fit, see
    ``check_memory``)."""

    what: str
    nbytes: int
    keys: tuple[str, ...] = ()


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``300 MiB``, ``12 KiB``, ``100 B``; beyond ``PiB`` in powers of ten."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20),
                       ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def workers_text() -> str:
    """What a number of local worker processes must be, in the words of every error about
    it (``--workers``, ``training.workers``): an int in ``[1, usable_cpus()]``."""
    return f"an int in the range [1, {usable_cpus()}] (the CPUs this process may use)"


# --------------------------------------------------------------------------------------------
# Available memory


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _int_file(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:  # "max" (no limit) or garbage
        return None


def _stat_field(path: Path, field: str) -> int:
    text = _read(path) or ""
    m = re.search(rf"^{field} (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def _meminfo(proc: Path) -> tuple[int, str] | None:
    text = _read(proc / "meminfo")
    if text is not None:
        m = re.search(r"^MemAvailable:\s+(\d+) kB$", text, re.M)
        if m:
            return int(m.group(1)) * 1024, "MemAvailable in /proc/meminfo"
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - no such sysconf name
        return None
    if pages > 0 and size > 0:
        return pages * size, "free physical pages (os.sysconf)"
    return None  # pragma: no cover


def _cgroup_paths(proc: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and v1 memory-controller path (``/proc/self/cgroup``)."""
    v2 = v1 = None
    for line in (_read(proc / "self" / "cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _cgroup(proc: Path, root: Path) -> tuple[int, str] | None:
    """Memory left under this process's cgroup limit: the limit less the usage that the
    kernel cannot reclaim (usage minus inactive page cache)."""
    v2, v1 = _cgroup_paths(proc)
    candidates = []
    if v2 is not None:
        for folder in (root / v2.lstrip("/"), root):
            candidates.append((folder / "memory.max", folder / "memory.current",
                               folder / "memory.stat", "inactive_file", "cgroup memory.max"))
    mem = root / "memory"
    for folder in ([mem / v1.lstrip("/")] if v1 else []) + [mem]:
        candidates.append((folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes",
                           folder / "memory.stat", "total_inactive_file",
                           "cgroup memory.limit_in_bytes"))
    for limit_path, usage_path, stat_path, field, name in candidates:
        limit = _int_file(limit_path)
        if limit is None:
            continue
        if limit >= _NO_LIMIT:
            return None
        usage = _int_file(usage_path) or 0
        used = max(0, usage - _stat_field(stat_path, field))
        return max(0, limit - used), name
    return None


def _address_space(proc: Path) -> tuple[int, str] | None:
    """Address space left under ``RLIMIT_AS`` (``ulimit -v``), if one is set."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    statm = (_read(proc / "self" / "statm") or "0").split()
    used = int(statm[0]) * os.sysconf("SC_PAGE_SIZE") if statm and statm[0].isdigit() else 0
    return max(0, soft - used), "RLIMIT_AS (ulimit -v)"


_SUFFIX = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def _env_limit() -> tuple[int, str] | None:
    text = os.environ.get(MEMORY_LIMIT_ENV)
    if text is None or not text.strip():
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise ResourceError(str(param_error(
            MEMORY_LIMIT_ENV, "the environment", "a number of bytes, optionally with a suffix "
            "K, M, G or T (powers of 1024), such as 8G", text)))
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()]), f"${MEMORY_LIMIT_ENV}"


def small_need(need: int) -> bool:
    """True when ``need`` bytes may go unchecked: fewer than ``SMALL_BYTES`` and no
    ``$POISONCERT_MEMORY_LIMIT`` set. Where the user set one, every amount is checked
    (against it, and the other figures of ``available_memory``), however small."""
    text = os.environ.get(MEMORY_LIMIT_ENV)
    return need < SMALL_BYTES and (text is None or not text.strip())


def available_memory(*, proc: str | Path = "/proc",
                     cgroup: str | Path = "/sys/fs/cgroup") -> tuple[int, str] | None:
    """``(bytes, source)``: the memory this process may still use without swapping, the
    smallest figure of those the module docstring lists, and which one it is; None where none
    is known (then nothing is checked against memory). ``proc`` and ``cgroup`` are the roots
    the figures are read from (for tests)."""
    proc, cgroup = Path(proc), Path(cgroup)
    figures = [f for f in (_meminfo(proc), _cgroup(proc, cgroup), _address_space(proc),
                           _env_limit()) if f is not None]
    return min(figures, key=lambda f: f[0]) if figures else None


# --------------------------------------------------------------------------------------------
# The check


def _total(terms) -> int:
    return sum(int(t.nbytes) for t in terms)


def _fits(need: int, available: int) -> bool:
    return need * SAFETY <= available


def shortfall(need: int, available: tuple[int, str] | None | bool = True
              ) -> tuple[int, str] | None:
    """``(bytes, source)`` of the available memory (``True``: ``available_memory()``) when
    ``need`` bytes, times ``SAFETY``, do not fit in it; None when they fit or nothing is
    known. For checks whose refusal names no parameter range (``check_memory`` does)."""
    if available is True:
        available = available_memory()
    return None if available is None or _fits(need, available[0]) else available


def available_words(avail: int, source: str) -> str:
    """How a refusal says what memory there is: '1 GiB are available (source), of which at
    most 80% is planned for'."""
    return (f"{format_bytes(avail)} are available ({source}), of which at most "
            f"{100 / SAFETY:.0f}% is planned for")


def check_memory(estimate: Callable[[dict[str, int]], list[Term]], values: Mapping[str, int],
                 *, where: str, lows: Mapping[str, int] | None = None,
                 defaults: Mapping[str, int] | None = None, subject: str = "this",
                 available: tuple[int, str] | None | bool = True,
                 prefer: Sequence[str] = ()) -> int:
    """Raise a ``ResourceError`` unless the memory ``estimate(values)`` needs, times
    ``SAFETY``, fits in ``available`` (``True``: ``available_memory()``); return the bytes it
    needs.

    ``estimate`` maps parameter values (``values``: name -> int) to ``Term`` s and must grow
    with each parameter. The error names the first parameter, in the order of the terms from
    the largest and within a term from the largest ratio to its ``defaults`` value, for which
    a smaller value (down to ``lows``, default 1) fits; its range is the largest such value
    (``where`` and ``subject`` make its text: "The 'T' parameter of <where> must be an int in
    the range [1, 99] for <subject> to fit in memory (...)"). The parameters of ``prefer``
    (those that do not change the results, such as a run's chunk size) are tried first.
    """
    if available is True:
        available = available_memory()
    terms = estimate(dict(values))
    need = _total(terms)
    if available is None or _fits(need, available[0]):
        return need
    avail, source = available
    lows = lows or {}
    defaults = defaults or {}

    def ratio(key: str) -> float:
        return values[key] / max(1, defaults.get(key, 1))

    tried = []
    order = [k for k in prefer if k in values] + [
        k for term in sorted(terms, key=lambda t: -t.nbytes)
        for k in sorted((k for k in term.keys if k in values), key=lambda k: -ratio(k))]
    for key in order:
        if key in tried:
            continue
        tried.append(key)
        high = _largest_fitting(estimate, values, key, lows.get(key, 1), avail)
        if high is not None:
            raise ResourceError(str(param_error(
                key, where, f"an int in the range [{lows.get(key, 1)}, {high}] for {subject} "
                f"to fit in memory ({_detail(terms, need, avail, source, key, values)})",
                values[key])))
    top = max(terms, key=lambda t: t.nbytes)
    together = _fitting_together(estimate, values, tried, lows, avail)
    if together is not None:  # no one parameter is enough, several together are
        raise ResourceError(
            f"{subject[0].upper() + subject[1:]} ({where}) does not fit in memory whatever "
            f"the value of any one of {', '.join(repr(k) for k in tried)}, but fits with "
            f"{', '.join(f'{k} = {v}' for k, v in together.items())} together: "
            f"{_detail(terms, need, avail, source, None, values)}; the largest part is the "
            f"{top.what}.")
    raise ResourceError(f"{subject[0].upper() + subject[1:]} ({where}) does not fit in memory "
                        "whatever the value of "
                        f"{', '.join(repr(k) for k in tried) or 'its parameters'}: "
                        f"{_detail(terms, need, avail, source, None, values)}; the largest part "
                        f"is the {top.what}.")


def _fitting_together(estimate, values, order: list[str], lows, avail: int
                      ) -> dict[str, int] | None:
    """Parameters lowered together, in ``order``, until the estimate fits (each to its low,
    then each raised back, last first, as far as it still fits): ``{name: value}`` of those
    that changed, or None when even all of them at their lows do not fit."""
    def fits(v: Mapping[str, int]) -> bool:
        return _fits(_total(estimate(dict(v))), avail)

    chosen, changed = dict(values), []
    for key in order:
        chosen[key] = lows.get(key, 1)
        changed.append(key)
        if fits(chosen):
            break
    else:
        return None
    for key in reversed(changed):
        if fits({**chosen, key: values[key]}):
            chosen[key] = values[key]
            continue
        best = _largest_fitting(estimate, {**chosen, key: values[key]}, key,
                                lows.get(key, 1), avail)
        chosen[key] = best if best is not None else chosen[key]
    return {k: chosen[k] for k in changed if chosen[k] != values[k]}


def _largest_fitting(estimate, values, key: str, low: int, avail: int) -> int | None:
    """The largest ``v`` in ``[low, values[key])`` for which the estimate fits (bisection)."""
    def fits(v: int) -> bool:
        return _fits(_total(estimate({**values, key: v})), avail)

    hi = int(values[key]) - 1
    if hi < low or not fits(low):
        return None
    lo = low  # fits(lo) holds; find the largest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _detail(terms, need: int, avail: int, source: str, key: str | None, values) -> str:
    shown = sorted((t for t in terms if t.nbytes > 0), key=lambda t: -t.nbytes)[:3]
    parts = ", ".join(f"{t.what} {format_bytes(t.nbytes)}" for t in shown)
    given = f" with {key} = {values[key]}" if key is not None else ""
    return (f"it needs about {format_bytes(need)}{given}: {parts}; "
            f"{available_words(avail, source)}")
