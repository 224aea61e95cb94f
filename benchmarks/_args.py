"""Option checks shared by the benchmark scripts (each runs as ``python benchmarks/NAME.py``,
so this folder is on ``sys.path``): a count out of range is argparse's one line naming the
option, the range and the value, not a traceback from deep inside the benchmark."""

from __future__ import annotations

import argparse


def at_least(low: int):
    """An argparse ``type``: an int >= ``low``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {value}")
        return value

    return check
