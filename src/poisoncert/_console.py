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
left is bounded work of the interpreter's own. But a shutdown that hangs (a thread that is
no daemon and never ends, an exit handler that waits forever) could then be stopped by
SIGTERM alone: so while the interpreter waits for threads and runs its exit handlers, a
Ctrl-C more than ``GRACE_S`` seconds after the command ended stops the process with one
line; the modules' teardown, after them, ignores it as before.
``python -m poisoncert.cli`` runs this too.

The status of a process so stopped: a command that failed keeps its own (1, or whatever it
exited with): the stopped shutdown changes nothing of the failure, and 130 would hide it
from a script (a retry where an error needed reading). A command that succeeded exits 130,
not 0: its outputs are complete (the line says so), but the process did not end on its
own (its exit handlers, and whatever the hanging thread did, were cut short), and a Ctrl-C
that ends a process is 130 everywhere else. The more serious of the two stands: a failure
over an interruption over a success.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import time

__all__ = ["GRACE_S", "main"]

#: Seconds after the command ended in which Ctrl-C is ignored whatever the shutdown does
#: (measured shutdowns take 0.2-0.9 s); after them, one stops a shutdown that still waits.
GRACE_S = 3.0

_registered = False


def main() -> None:
    """Import ``poisoncert.cli`` and run it; Ctrl-C during the import is one line, exit 130;
    Ctrl-C after the command ended is ignored (its exit code stands), but for one more than
    ``GRACE_S`` seconds later while the interpreter still waits for threads or exit
    handlers (one line; the command's exit code where it failed, else 130)."""
    global _registered
    if not _registered:  # first: the exit handler that runs last (they run in reverse)
        atexit.register(_ignore_ctrl_c)
        _registered = True
    try:
        from poisoncert.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted while starting: nothing was done.", file=sys.stderr)
        raise SystemExit(130) from None
    status = 1  # an error that is no SystemExit: the traceback's status
    try:
        cli_main()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
        raise
    except KeyboardInterrupt:
        status = 130
        raise
    finally:  # the command's work and lines are done: the exit code stands
        _ctrl_c_after(time.monotonic(), status)


def _exit_status(code: object) -> int:
    """The process status that ``SystemExit(code)`` gives: None 0, an int modulo 256 (what
    the system keeps of it), anything else 1 (Python prints it)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    return 1


def _ctrl_c_after(ended: float, status: int = 0) -> None:
    """Until the last exit handler: Ctrl-C ignored for ``GRACE_S`` seconds after ``ended``,
    then the end of a shutdown that is still waiting: with ``status``, the command's, where
    it failed, else 130 (the module docstring says why)."""
    if status:
        line = (f"interrupted while shutting down: the command had ended with exit status "
                f"{status}, which it keeps.\n").encode()
    else:
        line = (b"interrupted while shutting down: the command had ended, its outputs are "
                b"complete.\n")

    def handler(signum, frame) -> None:
        if time.monotonic() - ended < GRACE_S:
            return
        for f in (sys.stdout, sys.stderr):  # (os._exit flushes nothing)
            try:
                f.flush()
            except Exception:  # noqa: BLE001 - a closed or broken stream: nothing to keep
                pass
        try:
            os.write(2, line)
        except OSError:
            pass
        os._exit(status or 130)

    try:
        signal.signal(signal.SIGINT, handler)
    except (ValueError, OSError):  # not the main thread: left as it is
        pass


def _ignore_ctrl_c() -> None:
    """Ignore SIGINT for the rest of the process (an ignored SIGINT stays ignored through
    the interpreter's shutdown, where a handled one is reset to the default first)."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread: left as it is
        pass
