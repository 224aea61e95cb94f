"""The set-up of a worker process, shared by every executor.

``limit_threads(k)`` is what ``executors.LocalExecutor`` runs in each of its worker processes
and ``ray_executor.RayExecutor`` in each task, so that a chunk runs with the same threads
whichever executor runs it; ``attach_progress(fn, send)`` gives the chunk function a way to
report its progress to the calling process.
"""

from __future__ import annotations

import os

__all__ = ["attach_progress", "limit_threads"]


def attach_progress(fn, send) -> None:
    """Give a chunk function run in a worker ``send(chunk_id, k)`` to report that ``k`` more
    units of a chunk are done (when ``fn`` has ``attach_progress``; otherwise nothing)."""
    if send is not None and hasattr(fn, "attach_progress"):
        fn.attach_progress(send)


def limit_threads(threads: int) -> None:
    """Limit this process's math libraries (OpenMP, MKL, OpenBLAS and torch, when it is
    installed) to ``threads`` threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        return
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set, or inter-op work already ran in this process
        pass
