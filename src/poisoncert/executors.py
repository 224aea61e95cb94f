"""Executors run the chunks of a run: ``executor.map_chunks(fn, chunk_ids)``.

The one parallel layer: every process poisoncert starts is started by an executor (the
training engine trains what it is given in the calling process, and fans out through
``LocalExecutor`` when asked for several workers). ``fn`` is a picklable callable of one chunk
id (in practice a ``poisoncert.experiment.ChunkTrainer``), so an executor may ship it to
another process or machine. ``map_chunks`` yields ``fn(chunk_id)`` results in the order they
complete; the caller writes them to the run directory. A chunk's result never depends on the
executor or on the number of workers.

A worker process keeps the ``fn`` it was given for the whole ``map_chunks`` call, so what
``fn`` loads once (the data) serves every chunk that worker runs.

Progress: ``map_chunks(fn, chunk_ids, progress=report)`` calls ``report(chunk_id, k)`` in the
calling process as ``k`` more units of a chunk finish, wherever the chunk runs: a chunk run in
another process reports through a queue (``fn.attach_progress(send)`` is called in the worker
when ``fn`` has that method; ``send(chunk_id, k)`` puts on the queue), drained by
``map_chunks`` between results. A chunk run in the calling process reports through ``fn``'s
own callback (its caller's business).

``LocalExecutor`` runs chunks in local processes; ``poisoncert.ray_executor.RayExecutor``
(the optional ``ray`` extra) runs them as Ray tasks, locally or on a cluster. Both set up
their workers' math threads with ``poisoncert.threads.limit_threads``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from poisoncert._validation import check_choice, check_int, param_error
from poisoncert.resources import usable_cpus, workers_text
from poisoncert.threads import attach_progress, keep_heap, limit_threads

__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "check_workers", "device_of",
           "make_executor", "parse_devices", "worker_device"]

R = TypeVar("R")

#: Names accepted by ``make_executor`` (and ``poisoncert train --executor``).
EXECUTORS = ("local", "ray")


@runtime_checkable
class Executor(Protocol):
    """Runs independent chunks; ``workers`` is how many run at once.

    ``fn`` is called in this process by an executor that runs chunks here (it may say so
    with ``in_process = True``) and pickled by the others, so what it holds for this process
    only (loaded data, a progress callback) must be left out of its pickled state.
    """

    workers: int

    def map_chunks(self, fn: Callable[[int], R], chunk_ids: Iterable[int], *,
                   progress: Callable[[int, int], None] | None = None) -> Iterator[R]:
        """Yield ``fn(chunk_id)`` for every id, in completion order.

        The first exception raised by ``fn`` propagates; chunks not yet started are
        cancelled. Closing the iterator early also cancels them. ``progress(chunk_id, k)``
        is called in this process as chunks run elsewhere report progress (see the module
        docstring).
        """
        ...


#: The chunk function of this worker process (set once when a ``LocalExecutor`` starts it).
_worker_fn: Callable | None = None
#: The device this process was given (``LocalExecutor(devices=...)``), or None.
_worker_device: str | None = None

_DEVICE_HELP = "'all' or a comma-separated list of devices such as 'cuda:0,cuda:1'"

#: Seconds ``map_chunks`` waits for a result before it drains the progress queue again.
PROGRESS_POLL = 0.2

def parse_devices(spec: str | Sequence[str] | None, *, cuda_count: int | None = None,
                  where: str = "parse_devices") -> list[str] | None:
    """The device list of ``--devices``: ``"all"`` (every visible CUDA device),
    ``"cuda:0,cuda:1"``, ``"cpu"`` or a list of such names; None stays None.

    ``cuda_count``: the number of visible CUDA devices (default: ``torch.cuda.device_count()``).
    ``where``: the caller an error names (the command line's ``train``).
    """
    if spec is None:
        return None
    every = isinstance(spec, str) and spec.strip().lower() == "all"
    if every:
        names = []
    elif isinstance(spec, str):
        names = [d.strip().lower() for d in spec.split(",") if d.strip()]
    else:
        names = [str(d).strip().lower() for d in spec]
    if not every and not names:
        raise param_error("devices", where, _DEVICE_HELP, spec)
    parsed = []  # the syntax first: a misspelt list is refused before torch is imported
    for name in names:
        kind, _, index = name.partition(":")
        if kind == "cpu" and not index:
            parsed.append((name, None))
        elif kind != "cuda" or not (index == "" or index.isdigit()):
            raise param_error("devices", where, _DEVICE_HELP, spec)
        else:
            parsed.append((name, int(index or 0)))
    if cuda_count is None and (every or any(i is not None for _, i in parsed)):
        import torch

        cuda_count = torch.cuda.device_count()
    if every:
        if cuda_count == 0:
            raise param_error("devices", where, "a list of devices ('all' needs a visible "
                              "CUDA device, and none is visible)", spec)
        return [f"cuda:{i}" for i in range(cuda_count)]
    out = []
    for name, i in parsed:
        if i is None:
            out.append("cpu")
            continue
        if i >= cuda_count:
            raise param_error("devices", where, f"CUDA devices 0 to {cuda_count - 1} "
                              f"({cuda_count} visible)" if cuda_count else
                              "'cpu' (no CUDA device is visible)", name)
        out.append(f"cuda:{i}")
    return out


def worker_device() -> str | None:
    """The device this worker process was given by ``LocalExecutor(devices=...)``."""
    return _worker_device


def device_of(k: int, devices: Sequence[str]) -> str:
    """The device of the ``k``-th worker process started (round robin)."""
    return devices[k % len(devices)]


def _use_device(device: str | None) -> None:
    """Make ``device`` this process's device: ``"cuda"`` then means it."""
    global _worker_device
    _worker_device = device
    if device is not None and device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))


class QueueSender:
    """``send(chunk_id, k)``: progress put on a queue (in a worker process)."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, chunk_id: int, k: int) -> None:
        self.queue.put((int(chunk_id), int(k)))


def _exit_with_parent() -> None:
    """End this worker process as soon as the process that started it ends (a SIGKILL or
    SIGTERM of ``train`` left its workers training, holding memory and the caller's pipes, for
    as long as their chunks took): a daemon thread waits on multiprocessing's sentinel of the
    parent, which is ready once the parent is gone (also when it went before this worker
    finished starting), and exits."""
    import threading

    parent = mp.parent_process()
    if parent is None:  # not a multiprocessing child
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="poisoncert-parent-watch", daemon=True).start()


def _start_worker(fn: Callable, threads: int, queue=None, devices=None, counter=None) -> None:
    global _worker_fn
    import signal

    # Ctrl-C is the driver's to handle (it stops the workers): a worker that took it printed
    # "Exception in initializer" with a traceback each while starting
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    limit_threads(threads)
    keep_heap()
    if devices:
        with counter.get_lock():
            k = counter.value
            counter.value += 1
        _use_device(device_of(k, devices))
    attach_progress(fn, None if queue is None else QueueSender(queue))
    _worker_fn = fn


def _run_in_worker(chunk_id: int):
    return _worker_fn(chunk_id)


class LocalExecutor:
    """Chunks in local processes; with ``workers=1`` they run in this process, in order.

    Processes are started with ``start_method``: ``spawn`` by default (safe with torch's
    thread pools), or ``forkserver`` with ``preload``, modules the fork server imports once so
    that workers start in well under a second (it never runs torch's thread pools, so forking
    it is safe). Each worker gets ``threads`` math threads (``threads.limit_threads``), by
    default the CPU count divided among the workers, and is given ``fn`` once.

    ``devices`` (``parse_devices``: ``["cuda:0", "cuda:1"]``): worker ``k`` is given device
    ``devices[k % len(devices)]`` (``torch.cuda.set_device``, so a learner's ``"cuda"`` is
    that GPU; ``worker_device()`` tells it); ``workers`` defaults to one per device. Results
    do not depend on which device of one type runs a chunk.
    """

    def __init__(self, workers: int | None = None, *, threads: int | None = None,
                 start_method: str = "spawn", preload: Sequence[str] = (),
                 devices: Sequence[str] | None = None):
        where = "LocalExecutor"
        self.devices = None if devices is None else list(parse_devices(devices))
        if workers is None:
            workers = len(self.devices) if self.devices else 1
        self.workers = check_int(workers, "workers", where, low=1)
        cpus = os.cpu_count() or 1
        self.threads = (max(1, cpus // self.workers) if threads is None
                        else check_int(threads, "threads", where, low=1))
        self.start_method = check_choice(start_method, "start_method", where,
                                         mp.get_all_start_methods())
        self.preload = tuple(preload)
        if self.preload and self.start_method != "forkserver":
            raise param_error("preload", where, "() unless start_method='forkserver'", preload)

    def __repr__(self) -> str:
        return f"LocalExecutor(workers={self.workers})"

    @property
    def in_process(self) -> bool:
        """True when chunks run in the calling process (they may then report progress
        through closures)."""
        return self.workers == 1

    def map_chunks(self, fn: Callable[[int], R], chunk_ids: Iterable[int], *,
                   progress: Callable[[int, int], None] | None = None) -> Iterator[R]:
        chunk_ids = list(chunk_ids)
        if self.workers == 1 or len(chunk_ids) <= 1:
            if self.devices:
                _use_device(self.devices[0])
            for cid in chunk_ids:
                yield fn(cid)
            return
        ctx = mp.get_context(self.start_method)
        if self.preload:
            ctx.set_forkserver_preload(list(self.preload))
        queue = ctx.Queue() if progress is not None else None
        counter = ctx.Value("i", 0) if self.devices else None
        pool = cf.ProcessPoolExecutor(
            max_workers=min(self.workers, len(chunk_ids)), mp_context=ctx,
            initializer=_start_worker,
            initargs=(fn, self.threads, queue, self.devices, counter))
        try:
            pending = {pool.submit(_run_in_worker, cid) for cid in chunk_ids}
            while pending:
                done, pending = cf.wait(pending, timeout=PROGRESS_POLL if queue else None,
                                        return_when=cf.FIRST_COMPLETED)
                _drain(queue, progress)
                for fut in done:
                    yield fut.result()
        except BaseException:  # Ctrl-C, an error, a consumer that stopped: the chunks still
            _stop_workers(pool)  # running would be thrown away, after running to their end
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            if queue is not None:
                queue.close()
                queue.join_thread()


def _stop_workers(pool: cf.ProcessPoolExecutor) -> None:
    """Terminate the pool's worker processes now (``ProcessPoolExecutor`` has no public way
    before Python 3.14's ``terminate_workers``; its ``_processes`` otherwise)."""
    stop = getattr(pool, "terminate_workers", None)
    if stop is not None:
        stop()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            proc.terminate()
        except Exception:  # noqa: BLE001 - already gone
            pass


def _drain(queue, progress) -> None:
    """Call ``progress`` for every report waiting on ``queue``."""
    if queue is None:
        return
    import queue as queue_mod

    while True:
        try:
            cid, k = queue.get_nowait()
        except queue_mod.Empty:
            return
        progress(cid, k)


def check_workers(workers, name: str = "workers", where: str = "make_executor") -> int:
    """A number of local worker processes: an int in ``[1, usable CPUs]`` (more processes
    than CPUs only add memory: every chunk is CPU bound). Checked where a config or the
    command line chooses the workers (``make_executor``, ``train_run``, the CLI); a
    ``LocalExecutor`` built by hand takes any number."""
    cpus = usable_cpus()
    try:
        return check_int(workers, name, where, low=1, high=cpus)
    except ValueError:
        raise param_error(name, where, workers_text(), workers) from None


def make_executor(name: str = "local", *, workers: int | None = 1,
                  address: str | None = None, devices: str | Sequence[str] | None = None,
                  gpus_per_task: float | None = None, where: str = "make_executor"
                  ) -> Executor:
    """An executor by name (``poisoncert train --executor NAME``).

    ``local``: ``LocalExecutor(workers, devices=devices)`` (``workers`` ``None``: one per
    device, else 1; else ``check_workers``). ``ray``: ``RayExecutor(address, workers=workers,
    num_gpus_per_task=gpus_per_task)``; ``address`` ``None`` starts a local Ray instance,
    ``"auto"`` or ``"ray://host:port"`` joins a cluster, and ``workers`` ``None`` uses all its
    CPUs (or GPUs, with ``gpus_per_task``). ``where``: the caller an error names (the command
    line's ``train``, whose options these are).
    """
    name = check_choice(name, "executor", where, EXECUTORS)
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:  # fail before any file is written
            raise param_error("executor", where, "'local' unless Ray is installed "
                              '(pip install "poisoncert[ray]")', name)
        try:  # installed but broken: one line now, not a traceback after the run folder
            import ray  # noqa: F401
        except Exception as e:
            raise param_error("executor", where, "'local' unless Ray can be imported (it is "
                              f"installed, and importing it raised {type(e).__name__}: "
                              f"{' '.join(str(e).split())})", name) from None
        if devices is not None:
            raise param_error("devices", where, "None with --executor ray (Ray assigns GPUs: "
                              "use gpus_per_task)", devices)
        from poisoncert.ray_executor import RayExecutor, check_gpus_per_task

        gpus = 0.0 if gpus_per_task is None else check_gpus_per_task(gpus_per_task,
                                                                     "gpus_per_task", where)
        return RayExecutor(address, workers=workers, num_gpus_per_task=gpus)
    if address is not None:
        raise param_error("address", where,
                          "None for the local executor (an address is for 'ray')", address)
    if gpus_per_task is not None:
        raise param_error("gpus_per_task", where, "None for the local executor (it is for "
                          "'ray'; the local executor takes devices)", gpus_per_task)
    if devices is not None:
        spec, devices = devices, parse_devices(devices, where=where)
        cpus = usable_cpus()
        if workers is None and len(devices) > cpus and all(d == "cpu" for d in devices):
            # a worker process per entry: at most the CPUs, as --workers
            raise param_error("devices", where, f"at most {cpus} 'cpu' entries (a worker "
                              "process each; the CPUs this process may use)", spec)
    return LocalExecutor(None if workers is None else check_workers(workers, where=where),
                         devices=devices)
