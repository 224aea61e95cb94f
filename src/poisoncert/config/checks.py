"""The checks every config value goes through, and the one error they raise: a
``ConfigError`` of the project's shape naming the dotted key ("The 'selection.ns' parameter of
the config must be ... Got ... instead.")."""

from __future__ import annotations

import numbers

from poisoncert._validation import INT_LIMIT, check_int, check_real, param_error

__all__ = ["WHERE", "ConfigError", "choice", "config_error", "first_out", "int_ok", "integer",
           "ints_ok", "put", "real"]

WHERE = "the config"


class ConfigError(ValueError):
    """An invalid experiment configuration (unknown key, bad type or value)."""


def config_error(key: str, allowed: str, got) -> ConfigError:
    """The one error shape, for a config key: "The 'selection.ns' parameter of the config
    must be ... Got ... instead."."""
    return ConfigError(str(param_error(key, WHERE, allowed, got)))


def choice(value: str, key: str, choices, aliases=None) -> str:
    key_text = value.strip().lower().replace("-", "_") if isinstance(value, str) else None
    for c in choices:
        if key_text == c.lower():
            return c
    if aliases and key_text in aliases:
        return aliases[key_text]
    raise config_error(key, "one of " + ", ".join(repr(c) for c in choices), value)


def integer(value, key: str, low=None, high=None):
    if value is None:
        return None
    try:
        return check_int(value, key, WHERE, low=low, high=high)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def real(value, key: str, low: float, high: float | None, low_open=True, high_open=True):
    if value is None:
        return None
    try:
        return check_real(value, key, WHERE, low=low, high=high, low_open=low_open,
                          high_open=high_open)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def put(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def int_ok(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= INT_LIMIT


def ints_ok(values, min_len: int = 0) -> bool:
    """``values`` is a list of at least ``min_len`` distinct ints in ``[0, INT_LIMIT]``."""
    return (isinstance(values, list | tuple) and len(values) >= min_len
            and all(int_ok(v) for v in values) and len(set(values)) == len(values))


def first_out(values):
    """The first entry of a list that is not an int in ``[0, INT_LIMIT]``, else the list (a
    long list of indices is not repeated in an error)."""
    bad = [v for v in values if not int_ok(v)] if isinstance(values, list | tuple) else []
    return bad[0] if bad else values
