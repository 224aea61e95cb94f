"""The set-up of a worker process, shared by every executor.

``limit_threads(k)`` is what ``executors.LocalExecutor`` runs in each of its worker processes
and ``ray_executor.RayExecutor`` in each task, so that a chunk runs with the same threads
whichever executor runs it; ``reproducible_blas()`` (run when ``poisoncert`` is imported, and
by ``limit_threads``) asks MKL for results that do not depend on where a matrix lies in
memory; ``keep_heap()`` (run there too, and by the command line) keeps
freed memory for reuse instead of handing it back to the kernel after every training step;
``attach_progress(fn, send)`` gives the chunk function a way to report its progress to the
calling process.
"""

from __future__ import annotations

import os

__all__ = ["HEAP_KEEP", "MKL_MODE", "attach_progress", "keep_heap", "limit_threads",
           "reproducible_blas"]

#: ``keep_heap``'s thresholds: allocations below ``HEAP_KEEP`` bytes come from the heap, and
#: up to ``2 * HEAP_KEEP`` bytes of freed memory stay in it.
HEAP_KEEP = 256 * 2**20


#: MKL's conditional numerical reproducibility mode: its automatic code path, results
#: independent of the operands' alignment (``STRICT``).
MKL_MODE = "AUTO,STRICT"


def reproducible_blas() -> None:
    """Ask MKL (torch's CPU matrix products) for results that do not depend on the operands'
    alignment in memory: ``MKL_CBWR=AUTO,STRICT``, unless the environment sets ``MKL_CBWR``.

    A stacked group's batched products (``torch.bmm`` / ``baddbmm``) hand MKL one matrix per
    classifier, at an address that depends on the classifier's position in the group. In
    its default mode MKL rounds some shapes differently at different alignments: on the AMD
    EPYC development machine the logits of a dense layer with 10 outputs on an odd number of
    rows (``subset_rows`` 13, say), and the weight gradient of a ``Linear(13, 6)``, came out
    with other bits at odd positions of a group, so a classifier's weights depended on its
    neighbours (tested). MKL reads the variable at its first call, so this must run before
    torch's first matrix product in the process: importing ``poisoncert`` does it (it is a
    no-op afterwards; set ``MKL_CBWR=AUTO,STRICT`` in the environment when torch computes
    before ``poisoncert`` is imported). Measured cost on that machine: none beyond noise
    (docs/benchmarks.md).
    """
    os.environ.setdefault("MKL_CBWR", MKL_MODE)


def attach_progress(fn, send) -> None:
    """Give a chunk function run in a worker ``send(chunk_id, k)`` to report that ``k`` more
    units of a chunk are done (when ``fn`` has ``attach_progress``; otherwise nothing)."""
    if send is not None and hasattr(fn, "attach_progress"):
        fn.attach_progress(send)


def limit_threads(threads: int) -> None:
    """Limit this process's math libraries (OpenMP, MKL, OpenBLAS and torch, when it is
    installed) to ``threads`` threads (and ``reproducible_blas``)."""
    reproducible_blas()
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


def keep_heap(threshold: int = HEAP_KEEP) -> bool:
    """Keep this process's freed memory for reuse (glibc's ``mallopt``); whether it applied.

    torch's CPU tensors come from ``malloc``. glibc serves an allocation of more than 128 KiB
    (or what its dynamic threshold has grown to) with a fresh ``mmap`` and gives it back on
    free, and trims the heap's top above twice that threshold, so a training step's
    activations and gradients (megabytes each, freed and allocated again every step) page-
    fault afresh: on the 2-core AMD EPYC development machine, 3,000-4,000 faults and 9 ms of
    kernel time per stacked LeNet-5 group step, none with this setting
    (``benchmarks/bench_training.py --heap``). Memory freed stays with the process (up to
    ``2 * threshold`` bytes), which suits worker processes that train and exit; the library
    does not call it in a caller's process (call it there to get the same speed). Other C
    libraries and platforms: no-op, False. Results do not depend on it.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    value = int(threshold)
    ok = mallopt(m_mmap_threshold, ctypes.c_int(value))
    ok = mallopt(m_trim_threshold, ctypes.c_int(min(2 * value, 2**31 - 1))) and ok
    return bool(ok)
