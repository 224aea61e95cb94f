"""Shared by the kill tests: stop a training process by SIGKILL once it wrote its first chunk."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from poisoncert import runs


def kill_at_first_chunk(proc, run: Path, timeout: float, poll: float) -> bool:
    """Wait (at most ``timeout`` seconds, or until ``proc`` ends) for the run's first chunk
    file, SIGKILL ``proc`` and reap it; whether the chunk was there."""
    first = run / runs.CHUNKS / "chunk-00000.npz"
    deadline = time.time() + timeout
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(poll)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return first.exists()
