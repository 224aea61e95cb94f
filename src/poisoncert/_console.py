"""The ``poisoncert`` console script: the command line, imported under a Ctrl-C guard.

Importing the command line (numpy, scipy, typer, rich) takes about half a second. A Ctrl-C
then raised ``KeyboardInterrupt`` out of the console script's own import: a traceback of
20-70 lines where every command promises one line. ``import poisoncert`` itself imports
nothing heavy, so this module is reached at once.

Once the command has ended (its files written, its last line printed), the process ignores
Ctrl-C while the interpreter shuts down: Python resets a handled SIGINT to the system's
default before it collects and tears down its modules (a few tenths of a second: 0.2-0.9 s
measured after ``certify`` and ``train``), and a Ctrl-C there ended the process silently
with SIGINT's status (-2; 130 in a shell) although its outputs were complete. Pools of
worker processes and Ray are shut down by the commands themselves, before that: what is
left is bounded work of the interpreter's own. ``python -m poisoncert.cli`` runs this too.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["main"]


def main() -> None:
    """Import ``poisoncert.cli`` and run it; Ctrl-C during the import is one line, exit 130;
    Ctrl-C after the command ended is ignored (its exit code stands)."""
    try:
        from poisoncert.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted while starting: nothing was done.", file=sys.stderr)
        raise SystemExit(130) from None
    try:
        cli_main()
    finally:  # the command's work and lines are done: the exit code stands
        _ignore_ctrl_c()


def _ignore_ctrl_c() -> None:
    """Ignore SIGINT for the rest of the process (an ignored SIGINT stays ignored through
    the interpreter's shutdown, where a handled one is reset to the default first)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread: left as it is
        pass
