"""Parameter checks shared by the whole package (numpy only).

Every check raises ``ValueError`` with one message shape, after scikit-learn's:

    The 'ns' parameter of delta must be an int in the range [1, 100]. Got 0 instead.

so that a user always learns the parameter, the allowed values and what was given.

Types are checked the same way for every parameter, scalar or array: a real parameter takes
numbers (Python, NumPy), never text (``"0.5"``) or booleans; an integer parameter takes
integers (arrays also integral floats such as ``3.0``). Counts and sizes are bounded by
``INT_LIMIT`` (``2**53``, the largest range a float64 holds exactly), so that nothing
downstream overflows a 64-bit integer or loses integer precision.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np

__all__ = [
    "Earlier",
    "EarlierFloat",
    "EarlierInt",
    "INT_LIMIT",
    "INT_LIMIT_TEXT",
    "SEED_LIMIT",
    "SEED_LIMIT_TEXT",
    "as_given",
    "check_choice",
    "check_int",
    "check_int_array",
    "check_real",
    "check_real_array",
    "earlier",
    "later_high",
    "named_as",
    "number_array",
    "param_error",
    "parse_int_list",
    "shown",
]


#: Largest count or size accepted by the checks that take ``high=INT_LIMIT`` (n, ns, T, vote
#: counts, rho): every integer up to it is exact in float64, and sums of a few of them stay far
#: inside int64.
INT_LIMIT = 2**53
#: How messages write ``INT_LIMIT`` (exactly; 9007199254740992 is harder to read).
INT_LIMIT_TEXT = "2^53"
#: Largest root seed a run or an attack takes (``selection.seed``, ``data.clean_seed``,
#: ``attack --seed``): a 64-bit seed, as the classifiers' own seeds (``seeds.npy``, uint64) and
#: ``torch.manual_seed``'s range. numpy's ``SeedSequence`` would take any int, but pools it into
#: 128 bits, and a larger one was an unreadable error (a Python int of over 4,300 digits).
SEED_LIMIT = 2**64 - 1
#: How messages write ``SEED_LIMIT``.
SEED_LIMIT_TEXT = "2^64 - 1"


class Earlier:
    """A number that a run made by an earlier version stored beyond an upper bound added
    since (``config.files.later_bounds``: seeds beyond 2^64 - 1, ``training.lr`` beyond 10,
    ...). A run's own ``config.yaml`` is read with such values as ``EarlierInt`` /
    ``EarlierFloat``, which the checks take in the range that version took
    (``later_high``), so the run still loads, certifies, predicts and retrains as it was
    made; a value given anew keeps the bound. It equals, hashes, prints and is written as the
    plain number, and stays marked through ``dataclasses.replace``."""

    __slots__ = ()


class EarlierInt(Earlier, int):
    __slots__ = ()


class EarlierFloat(Earlier, float):
    __slots__ = ()


def earlier(value):
    """``value`` marked as a stored run's (``Earlier``); anything but an int or a float (a
    bool, text, None) as it is."""
    if isinstance(value, Earlier | bool) or not isinstance(value, numbers.Real):
        return value
    return EarlierInt(value) if isinstance(value, numbers.Integral) else EarlierFloat(value)


def later_high(value, high):
    """The upper bound ``high`` of a check, or None (the range before the bound was added)
    for a value a run of an earlier version stored (``Earlier``)."""
    return None if isinstance(value, Earlier) else high


def as_given(given, checked):
    """A check's result ``checked`` of the value ``given``, marked as ``given`` was."""
    return earlier(checked) if isinstance(given, Earlier) else checked


#: Longest echo of a given value in an error (``shown``): a refused value is named, not
#: reproduced (a 5,000-digit seed or a pasted file filled the terminal); a long path is
#: still given whole.
SHOWN_MAX = 200
_HEAD, _TAIL = 100, 40


def shown(value: object) -> str:
    """``repr(value)`` for an error's echo of what was given, shortened where longer than
    ``SHOWN_MAX`` characters to its start and end and its size, so it stays recognisable:
    ``'xxxxxxxx...xxxx' (5,000 characters)``, ``99999999...9999 (5,000 digits)``, ``[0, 1,
    ...] (2,000 items, 10,890 characters)``. A numpy scalar shows as the Python value it
    holds (``7``, not ``np.int64(7)``); an int too long for ``str`` (over 4,300 digits) is
    shortened all the same."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool):
        return _shown_int(value)
    try:
        text = repr(value)
    except ValueError:  # a container of an int too long for str
        text = None
    if text is not None and len(text) <= SHOWN_MAX:
        return text
    try:
        n = len(value)
        size = f"{n:,} {'character' if isinstance(value, str) else 'item'}{'s' * (n != 1)}"
    except TypeError:
        size = None
    if text is None:
        return f"a {type(value).__name__} of {size}" if size else type(value).__name__
    if isinstance(value, str) or size is None:
        size = f"{len(text) if size is None else len(value):,} characters"
    else:
        size = f"{size}, {len(text):,} characters"
    return f"{text[:_HEAD]}...{text[-_TAIL:]} ({size})"


def _shown_int(value: int) -> str:
    """An int's digits, or its first and last digits and their count where they are more
    than ``SHOWN_MAX`` (also beyond the 4,300 digits ``str`` converts)."""
    v = abs(value)
    digits = max(1, int(v.bit_length() * 0.30102999566398120))  # log10(2): digits or 1 less
    if v >= 10 ** digits:
        digits += 1
    sign = "-" if value < 0 else ""
    if digits + len(sign) <= SHOWN_MAX:
        return f"{value}"
    head = v // 10 ** (digits - _HEAD)
    tail = f"{v % 10 ** _TAIL:0{_TAIL}d}"
    return f"{sign}{head}...{tail} ({digits:,} digits)"


class NotPlain(TypeError):
    """A value ``plain`` cannot write as a config file holds it (``args[0]``: the value)."""


def plain(value, *, nested: bool = True):
    """``value`` as a config file (YAML, and JSON for its hash) holds it, from what a Python
    caller computed: a numpy scalar as the Python number or bool (``np.int64(8)`` -> ``8``;
    ``np.float32(0.1)`` -> the float it holds), a numpy array as lists, a path
    (``os.PathLike``) as its text; lists, tuples and mappings converted inside. ``nested``:
    convert inside containers and refuse (``NotPlain``) anything else: an object, a
    function; else (a key's top-level value, which its type checks next) only numpy scalars,
    1-d arrays and paths are converted, anything else returned as it is."""
    if isinstance(value, np.generic | np.ndarray):  # first: np.float64 is a float
        if nested or value.ndim <= 1:
            return value.tolist()
        return value
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if not nested:
        return value
    if isinstance(value, list | tuple):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    raise NotPlain(value)


def param_error(name: str, where: str, allowed: str, got: object) -> ValueError:
    """The one error shape for an invalid parameter; the value given is ``shown``: a
    numpy scalar as the Python value it holds, a long one shortened."""
    return ValueError(f"The {name!r} parameter of {where} must be {allowed}. "
                      f"Got {shown(got)} instead.")


@contextmanager
def named_as(where: str, **names: str) -> Iterator[None]:
    """Errors of the calls inside, in the words of their caller ``where``: a ``ValueError``
    about the parameter ``inner`` of whatever function checked it (``"The 'inner' parameter
    of SelectionBound must be ..."``) for a key of ``names`` (the parameter's dotted name as
    that message spells it, written ``certify__alpha`` for ``certify.alpha``) is raised again
    about ``names[inner]`` of ``where``, with the same allowed range and value."""
    try:
        yield
    except ValueError as exc:
        m = re.match(r"The '([^']+)' parameter of (.+?) must be ", str(exc))
        outer = names.get(m[1].replace(".", "__")) if m else None
        if outer is None:
            raise
        raise ValueError(f"The {outer!r} parameter of {where} must be "
                         f"{str(exc)[m.end():]}") from None


def number_array(x, name: str, where: str, allowed: str) -> np.ndarray:
    """``x`` as an array of numbers (booleans, ints or floats), or one error naming it:
    ragged rows, text, objects and complex numbers (whose imaginary part a float conversion
    would drop) are refused with ``allowed`` as the range."""
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # ragged rows
        raise param_error(name, where, allowed, "ragged rows") from None
    if a.dtype.kind not in "biuf":
        raise param_error(name, where, allowed, f"an array of {a.dtype}")
    return a


def parse_int_list(text: str, name: str, where: str, *, low: int | None = None,
                   example: str = "0,50,100") -> list[int]:
    """``"0, 50,100"`` -> ``[0, 50, 100]``: comma-separated decimal integers in
    ``[low, INT_LIMIT]``, spaces allowed around them. An empty element (``"0,,5"``, a
    trailing comma) is refused, as is text with no element at all."""
    bound = (f"of at most {INT_LIMIT_TEXT} in size" if low is None
             else f"in the range [{low}, {INT_LIMIT_TEXT}]")
    allowed = f"comma-separated ints {bound}, e.g. {example}"
    items = [t.strip() for t in str(text).split(",")]
    if not all(re.fullmatch(r"[+-]?[0-9]+", t) for t in items) or any(
            len(t.lstrip("+-").lstrip("0")) > len(str(INT_LIMIT)) for t in items):
        raise param_error(name, where, allowed, text)  # (int() takes at most 4,300 digits)
    out = [int(t) for t in items]
    if (low is not None and min(out) < low) or max(abs(v) for v in out) > INT_LIMIT:
        raise param_error(name, where, allowed, text)
    return out


def _is_int(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_int(x, name: str, where: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``x`` as a Python int in ``[low, high]`` or raise a ``ValueError``.

    Integral floats such as ``3.0`` are refused: a radius or a sample count is an integer.
    """
    allowed = _range_text("an int", low, high)
    if not _is_int(x):
        raise param_error(name, where, allowed, x)
    x = int(x)
    if (low is not None and x < low) or (high is not None and x > high):
        raise param_error(name, where, allowed, x)
    return x


def check_real(
    x,
    name: str,
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``x`` as a finite float in the given (open or closed) interval."""
    allowed = _interval_text("a real number", low, high, low_open, high_open)
    if not isinstance(x, numbers.Real) or isinstance(x, bool):
        raise param_error(name, where, allowed, x)
    v = float(x)
    if not np.isfinite(v) or not _in_interval(np.asarray(v), low, high, low_open, high_open):
        raise param_error(name, where, allowed, x)
    return v


def check_real_array(
    x,
    name: str,
    where: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> np.ndarray:
    """Return ``x`` as a float64 array whose every (non-NaN-free) entry lies in the interval."""
    allowed = _interval_text("real numbers", low, high, low_open, high_open)
    try:
        raw = np.asarray(x)
        if raw.dtype.kind not in "iuf":  # text, bool, object (e.g. huge ints), complex
            raise TypeError
        arr = raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        raise param_error(name, where, allowed, x) from None
    bad = ~np.isfinite(arr) | ~_in_interval(arr, low, high, low_open, high_open)
    if bad.any():
        raise param_error(name, where, allowed, _first_bad(arr, bad))
    return arr


def check_int_array(x, name: str, where: str, *, low: int | None = None,
                    high: int | None = None) -> np.ndarray:
    """Return ``x`` as an int64 array of integers in ``[low, high]``.

    Float arrays are accepted only where every entry is integral (``3.0``); ``2.5`` is refused.
    """
    allowed = _range_text("integers", low, high)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError, OverflowError):  # ragged rows
        raise param_error(name, where, allowed, x) from None
    if arr.dtype == bool or arr.dtype == object:
        raise param_error(name, where, allowed, _first_big(arr) if arr.dtype == object else x)
    if np.issubdtype(arr.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arr) | (np.floor(arr) != arr) | (np.abs(arr) >= 2.0**63)
        if bad.any():
            raise param_error(name, where, allowed, _first_bad(arr, bad))
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise param_error(name, where, allowed, x)
    elif arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise param_error(name, where, allowed, int(arr.max()))
    arr = arr.astype(np.int64, copy=False)
    bad = np.zeros(arr.shape, dtype=bool)
    if low is not None:
        bad |= arr < low
    if high is not None:
        bad |= arr > high
    if bad.any():
        raise param_error(name, where, allowed, _first_bad(arr, bad))
    return arr


def check_choice(x, name: str, where: str, choices: Iterable[str],
                 aliases: dict[str, str] | None = None) -> str:
    """Return the canonical choice for ``x`` (case-insensitive, aliases allowed)."""
    choices = list(choices)
    aliases = aliases or {}
    if isinstance(x, str):
        key = x.strip().lower().replace("-", "_")
        for c in choices:
            if key == c.lower():
                return c
        if key in aliases:
            return aliases[key]
    shown = ", ".join(repr(c) for c in choices)
    raise param_error(name, where, f"one of {shown}", x)


def _range_text(kind: str, low, high) -> str:
    texts = {INT_LIMIT: INT_LIMIT_TEXT, SEED_LIMIT: SEED_LIMIT_TEXT}
    low, high = (texts.get(v, v) if v is not None and not isinstance(v, bool) else v
                 for v in (low, high))
    if low is not None and high is not None:
        return f"{kind} in the range [{low}, {high}]"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def _interval_text(kind: str, low, high, low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return f"a finite {kind}" if kind == "a real number" else f"finite {kind}"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{kind} in the range {'(' if low_open or low is None else '['}{lo}, {hi}" \
        f"{')' if high_open or high is None else ']'}"


def _in_interval(arr: np.ndarray, low, high, low_open: bool, high_open: bool) -> np.ndarray:
    ok = np.ones(arr.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        if low is not None:
            ok &= (arr > low) if low_open else (arr >= low)
        if high is not None:
            ok &= (arr < high) if high_open else (arr <= high)
    return ok


def _first_big(arr: np.ndarray):
    """The first Python int of an object array too large for int64 (else the array)."""
    for v in arr.ravel():
        if isinstance(v, numbers.Integral) and not isinstance(v, bool) \
                and not -(2**63) <= int(v) < 2**63:
            return int(v)
    return arr.tolist() if arr.size <= 8 else f"an array of dtype {arr.dtype}"


def _first_bad(arr: np.ndarray, bad: np.ndarray):
    v = arr[bad].ravel()[0]
    return v.item() if hasattr(v, "item") else v
