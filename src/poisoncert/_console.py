"""The ``poisoncert`` console script: the command line, imported under a Ctrl-C guard.

Importing the command line (numpy, scipy, typer, rich) takes about half a second. A Ctrl-C
then raised ``KeyboardInterrupt`` out of the console script's own import: a traceback of
20-70 lines where every command promises one line. ``import poisoncert`` itself imports
nothing heavy, so this module is reached at once.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Import ``poisoncert.cli`` and run it; Ctrl-C during the import is one line, exit 130."""
    try:
        from poisoncert.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted while starting: nothing was done.", file=sys.stderr)
        raise SystemExit(130) from None
    cli_main()
