"""Ray executor: the chunks of a run as Ray tasks, on one machine or a cluster.

Install the extra with ``pip install "poisoncert[ray]"``; Ray is imported only when an executor
runs. ``RayExecutor`` implements the ``poisoncert.executors.Executor`` protocol::

    from poisoncert.ray_executor import RayExecutor
    experiment.train_run(cfg, run_dir, executor=RayExecutor(workers=2))       # local Ray
    experiment.train_run(cfg, run_dir, executor=RayExecutor(address="auto"))  # a cluster

or ``poisoncert train cfg.yaml --executor ray [--address auto]``.

Guarantees (the same as ``LocalExecutor``'s):

* each chunk is one Ray task; results are yielded once each, in completion order, and the
  caller (``poisoncert.experiment.train_run``) writes each to the run directory, so finished
  chunks survive any failure and a restarted run resumes;
* a task whose worker process dies (killed, out of memory, node lost) is re-run by Ray up to
  ``max_retries`` times. A chunk's result depends only on its own seeds, and a task returns
  its result rather than writing it, so a retry neither changes nor duplicates a chunk;
* an exception raised by the chunk function itself (a bug, a bad config, a missing data file)
  is *not* retried: it would fail the same way again. It propagates with its own type, the
  remote traceback chained, and the chunks not yet finished are cancelled;
* each task runs with ``threads`` math threads, set exactly as ``LocalExecutor`` sets its
  workers' (``poisoncert.threads.limit_threads``), so predictions are bit-identical to a
  local run;
* a worker process keeps the chunk function of the current ``map_chunks`` call (Ray
  deserialises it once per worker, not once per chunk), so what it loads once (the data)
  serves every chunk that worker runs.

Code on the workers: on a local Ray instance (``address=None``) the workers run this Python
environment. When connecting to a cluster, the driver's ``poisoncert`` package is shipped
to the workers by default (the job's Ray ``runtime_env`` ``py_modules``, given to
``ray.init``), so every node runs the same code as the driver; the nodes need the
dependencies (numpy, scipy, scikit-learn, PyYAML, torch and Ray, of the driver's versions) but
not poisoncert itself. Pass ``ship_code=False`` to rely on a ``poisoncert`` installed on every
node instead. If Ray is already initialised in this process, its job's runtime environment is
used as it is (code cannot be shipped per task). See ``docs/ray.md``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from poisoncert._validation import check_int, check_real, param_error
from poisoncert.resources import usable_cpus
from poisoncert.threads import attach_progress, keep_heap, limit_threads

__all__ = ["RayExecutor", "RayExecutorError", "check_gpus_per_task", "import_ray",
           "quiet_ray_notices"]

R = TypeVar("R")

_WHERE = "RayExecutor"
_INSTALL_HINT = 'pip install "poisoncert[ray]"'


#: GPUs per task Ray accepts: 0, a fraction of at least ``GPU_UNIT`` (Ray's resource
#: precision) up to 1, or a whole number (Ray refuses 1.5 and 1e-9 when the first task is
#: submitted: after the run directory was written).
GPU_UNIT = 1e-4
_GPUS_ALLOWED = "0, a fraction in [0.0001, 1] (tasks share a GPU) or a whole number of GPUs"


def check_gpus_per_task(value, name: str = "num_gpus_per_task", where: str = _WHERE) -> float:
    """``value`` as GPUs per Ray task, or a ``ValueError`` naming ``name`` (``_GPUS_ALLOWED``)."""
    try:
        g = check_real(value, name, where, low=0.0)
    except ValueError:
        raise param_error(name, where, _GPUS_ALLOWED, value) from None
    if g != 0 and (g < GPU_UNIT or (g > 1 and g != int(g))):
        raise param_error(name, where, _GPUS_ALLOWED, value)
    return g


def _local_gpus() -> int:
    """The CUDA devices a local Ray instance started here sees (torch counts them the same
    way, ``CUDA_VISIBLE_DEVICES`` included)."""
    import torch

    return torch.cuda.device_count()


def local_workers_limit(gpus_per_task: float = 0.0) -> int:
    """The most chunks a local Ray instance runs at once: the CPUs this process may use (as
    for local workers), or, for GPU tasks, as many as its GPUs hold at ``gpus_per_task`` each
    where that is more (a task on a GPU needs little of a CPU: 4 CPUs and 2 GPUs at 0.25 a
    task run 8)."""
    cpus = usable_cpus()
    if gpus_per_task and gpus_per_task > 0:
        return max(cpus, int(_local_gpus() / gpus_per_task + 1e-9))
    return cpus


#: Ray's logger of its token-authentication notices. ``ray.init`` of a local instance (Ray
#: 2.60, ``RAY_AUTH_MODE`` unset) logs at WARNING "Token authentication is enabled for this Ray
#: cluster. Set RAY_AUTH_MODE=disabled to opt out. ..." (docs/ray.md); the refusals (no token,
#: a wrong one) are exceptions, not records of this logger.
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


@contextlib.contextmanager
def quiet_ray_notices(quiet: bool) -> Iterator[None]:
    """With ``quiet`` (``train -q``), Ray's token-authentication notice is not shown: its
    logger (only) takes records of level ERROR and above for the block. Imports no Ray."""
    if not quiet:
        yield
        return
    log = logging.getLogger(RAY_AUTH_LOGGER)
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(old)


def _ray_running() -> bool:
    """Whether this process already joined a Ray instance (its GPUs are its own)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


class RayExecutorError(ChildProcessError):
    """A chunk that Ray could not run (its worker died more than ``max_retries`` times): an
    ``OSError``, so the command line says it in one line, as a killed local worker."""


def import_ray():
    """Import Ray, or raise an ``ImportError`` that names the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            f"The Ray executor needs Ray, an optional extra of poisoncert: {_INSTALL_HINT}"
        ) from err
    return ray


#: ``(object id, function)``: the chunk function this Ray worker process was last given.
_kept: tuple[str, Callable] | None = None


def _run_chunk(fn_box: list, chunk_id: int, threads: int, queue=None):
    """The Ray task: fix the math threads as ``LocalExecutor`` does, then run one chunk.

    ``fn_box`` holds the reference of the chunk function (in a list, so that Ray passes the
    reference rather than the value); it is fetched once per worker process and kept.
    """
    global _kept
    limit_threads(threads)
    keep_heap()
    (ref,) = fn_box
    if _kept is None or _kept[0] != ref.hex():
        _kept = (ref.hex(), import_ray().get(ref))
    if queue is not None:
        attach_progress(_kept[1], _RaySender(queue))
    return _kept[1](chunk_id)


class _RaySender:
    """``send(chunk_id, k)`` onto a ``ray.util.queue.Queue`` (in a task)."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, chunk_id: int, k: int) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait((int(chunk_id), int(k)))
        except Exception:  # noqa: BLE001 - the queue's actor is gone: progress is only a
            self.queue = None  # display, the chunk goes on


def _drain_ray(queue, progress):
    """Report the progress waiting on ``queue``; the queue, or None once its actor is gone
    (killed, or its node lost): the run goes on without progress, which is only a display."""
    if queue is None:
        return None
    try:
        n = queue.qsize()
        items = queue.get_nowait_batch(n) if n else []
    except Exception:  # noqa: BLE001 - ray's ActorDiedError and kin: no more progress
        return None
    for cid, k in items:
        progress(cid, k)
    return queue


class RayExecutor:
    """Chunks as Ray tasks; ``workers`` of them run at once.

    Parameters
    ----------
    address : str or None
        ``None`` starts a local Ray instance for the duration of each ``map_chunks`` call
        (``workers * num_cpus_per_task`` CPUs, no dashboard, advertised on 127.0.0.1).
        ``"auto"`` (a cluster started with ``ray start`` on this node) or
        ``"ray://host:10001"`` (Ray Client) connects to an existing cluster. If Ray is
        already initialised in this process, that instance is used and left running.
    workers : int or None
        Chunks in flight at once. Local default, and at most (``preflight``): the CPUs this
        process may use (``resources.usable_cpus``, its affinity mask, as for local workers;
        ``map_chunks`` called directly takes more). On a cluster
        the default is the cluster's CPUs divided by ``num_cpus_per_task``, read when the
        run starts.
    num_cpus_per_task : int
        CPUs Ray reserves for each chunk task (its scheduling unit).
    max_retries : int
        How many times Ray re-runs a chunk whose worker process died. Exceptions raised by
        the chunk function are never retried.
    threads : int
        Math threads (torch, OpenMP, MKL, OpenBLAS) in each task, as ``LocalExecutor`` sets
        them. The torch engine trains on one intra-op thread whatever this is (that is what
        makes its predictions independent of the executor); it matters for the rest of a
        chunk (scikit-learn learners, data preparation). Scale with ``workers``.
    num_gpus_per_task : float
        GPUs Ray reserves for each chunk task (``poisoncert train --gpus-per-task``; a
        fraction such as 0.25 lets four chunks share one GPU). Ray makes the reserved GPU the
        task's only visible one, so a learner's ``"cuda"`` is it. With ``workers`` ``None``,
        chunks in flight are limited by the cluster's GPUs too.
    ship_code : bool or None
        Ship this ``poisoncert`` package to the workers (``runtime_env={"py_modules": ...}``
        of the job, when this executor initialises Ray). ``None``: only when connecting to a
        cluster (``address`` given).
    runtime_env : dict or None
        Further Ray runtime environment (e.g. ``{"env_vars": {"POISONCERT_DATA": ...}}``):
        the job's when this executor initialises Ray, else each task's.
    """

    def __init__(self, address: str | None = None, *, workers: int | None = None,
                 num_cpus_per_task: int = 1, max_retries: int = 3, threads: int = 1,
                 ship_code: bool | None = None, runtime_env: dict[str, Any] | None = None,
                 num_gpus_per_task: float = 0.0):
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise param_error("address", _WHERE,
                              "None, 'auto' or a cluster address such as 'ray://host:10001'",
                              address)
        self.address = address.strip() if isinstance(address, str) else None
        self._workers = None if workers is None else check_int(workers, "workers", _WHERE, low=1)
        self.num_cpus_per_task = check_int(num_cpus_per_task, "num_cpus_per_task", _WHERE, low=1)
        self.max_retries = check_int(max_retries, "max_retries", _WHERE, low=0)
        self.num_gpus_per_task = check_gpus_per_task(num_gpus_per_task)
        self.threads = check_int(threads, "threads", _WHERE, low=1)
        if ship_code is not None and not isinstance(ship_code, bool):
            raise param_error("ship_code", _WHERE, "None or a bool", ship_code)
        self.ship_code = self.address is not None if ship_code is None else ship_code
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise param_error("runtime_env", _WHERE, "None or a dict", runtime_env)
        self.runtime_env = dict(runtime_env or {})
        self._cluster_workers: int | None = None
        #: Ray initialised by ``preflight`` (a cluster), for ``map_chunks`` to use and shut down
        self._connected = False

    # ----------------------------------------------------------------------------------------

    @property
    def workers(self) -> int:
        """Chunks in flight at once (on a cluster without ``workers``: known once connected)."""
        if self._workers is not None:
            return self._workers
        if self.address is None:
            return usable_cpus()
        return self._cluster_workers or 1

    def __repr__(self) -> str:
        where = "local" if self.address is None else repr(self.address)
        return f"RayExecutor(address={where}, workers={self.workers})"

    def job_runtime_env(self) -> dict[str, Any]:
        """The runtime environment given to ``ray.init`` when this executor starts Ray."""
        env = dict(self.runtime_env)
        if self.ship_code:
            import poisoncert

            env["py_modules"] = [*env.get("py_modules", []), str(Path(poisoncert.__file__).parent)]
        return env

    def preflight(self) -> None:
        """Before a run writes anything (``train_run``): a cluster address that accepts no
        connection is one clear error (``check_reachable``); for a local Ray instance, more
        ``workers`` than the CPUs this process may use (local workers are refused beyond
        them; ``workers=2**53`` reached ``ray.init``, which refused it after the run folder was
        written) and GPUs per task beyond the GPUs it will have (its tasks would wait for
        them forever)."""
        if self.address is None and self._workers is not None and not _ray_running():
            most = local_workers_limit(self.num_gpus_per_task)
            if self._workers > most:
                raise param_error("workers", _WHERE, f"at most {most} for a local Ray instance "
                                  "(the CPUs this process may use, as for local workers, or "
                                  "the tasks its GPUs hold at num_gpus_per_task each; a "
                                  "cluster, address, takes more)", self._workers)
        if self.address is not None:
            check_reachable(self.address)
            ray = import_ray()
            if not ray.is_initialized():  # connect now: a refusal (no token, another Ray
                self._connected = self._connect(ray)  # version, no Ray head) is said before
                # any file is written, not after the run folder was made
        elif self.num_gpus_per_task and not _ray_running():
            gpus = _local_gpus()
            if self.num_gpus_per_task > gpus:
                raise param_error("num_gpus_per_task", _WHERE, f"at most {gpus}, the GPUs of "
                                  "the local Ray instance (a task that asks for more never "
                                  "starts)" if gpus else "0: the local Ray instance has no GPU "
                                  "(a task that asks for one never starts)",
                                  self.num_gpus_per_task)

    def _connect(self, ray) -> bool:
        """Initialise Ray unless it already is; return whether this executor did (here, or in
        ``preflight``): then it shuts Ray down when done."""
        if self._connected:
            self._connected = False
            if ray.is_initialized():
                return True
        if ray.is_initialized():
            return False
        if self.address is None:
            cpus = (self._workers or usable_cpus()) * self.num_cpus_per_task
            ray.init(address="local", num_cpus=cpus, include_dashboard=False,
                     _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
                     runtime_env=self.job_runtime_env() or None)
            return True
        check_reachable(self.address)
        try:
            ray.init(address=self.address, logging_level=logging.WARNING,
                     runtime_env=self.job_runtime_env() or None)
        except (ConnectionError, RuntimeError, ValueError) as e:  # one line, with Ray's cause
            why = [" ".join(str(e).split())]
            if e.__cause__ is not None:  # its text may hold a traceback: its last line
                lines = [ln for ln in str(e.__cause__).splitlines() if ln.strip()]
                why += [" ".join(lines[-1].split())] if lines else []
            why = [w.rstrip(".") for w in why]
            why = [w for w in why if w]
            raise ConnectionError(f"Ray could not connect to '{self.address}' (address; CLI: "
                                  f"--address): {': '.join(why) or type(e).__name__}. Check "
                                  "the address, and that this machine has the cluster's "
                                  "token and its Ray and Python versions (docs/ray.md)."
                                  ) from e
        return True

    def close_preflight(self) -> None:
        """Shut down the connection ``preflight`` made if ``map_chunks`` did not (``train_run``
        calls it at its end: a run with nothing left to train, or refused after preflight)."""
        if self._connected:
            self._connected = False
            ray = import_ray()
            if ray.is_initialized():
                ray.shutdown()

    def task_options(self) -> dict[str, Any]:
        """The Ray options of a chunk task (its scheduling unit)."""
        options: dict[str, Any] = dict(num_cpus=self.num_cpus_per_task,
                                       max_retries=self.max_retries, retry_exceptions=False)
        if self.num_gpus_per_task:
            options["num_gpus"] = self.num_gpus_per_task
        return options

    def concurrency(self, resources: dict[str, float]) -> int:
        """Chunks in flight for a cluster with ``resources`` (``ray.cluster_resources()``):
        ``workers``, else as many tasks as its CPUs (and GPUs, with GPUs per task) hold."""
        if self._workers is not None:
            return self._workers
        n = int(resources.get("CPU", 1)) // self.num_cpus_per_task
        if self.num_gpus_per_task:
            n = min(n, int(resources.get("GPU", 0) / self.num_gpus_per_task + 1e-9))
        return max(1, n)

    def _concurrency(self, ray) -> int:
        if self._workers is not None:
            return self._workers
        self._cluster_workers = self.concurrency(ray.cluster_resources())
        return self._cluster_workers

    def map_chunks(self, fn: Callable[[int], R], chunk_ids: Iterable[int], *,
                   progress: Callable[[int, int], None] | None = None) -> Iterator[R]:
        """Yield ``fn(chunk_id)`` for every id, in completion order (see the module doc).

        At most ``workers`` tasks are submitted at a time, in the order of ``chunk_ids`` (so
        a shared cluster is not flooded, and the results waiting in Ray's object store are
        bounded); the first chunk error propagates and cancels the chunks not finished.
        ``progress(chunk_id, k)`` is called here as tasks report (through a
        ``ray.util.queue.Queue`` actor that reserves no CPU).
        """
        chunk_ids = list(chunk_ids)
        if not chunk_ids:
            self.close_preflight()
            return
        ray = import_ray()
        from ray import exceptions as rex

        started = self._connect(ray)
        pending: dict[Any, int] = {}
        queue = None
        try:
            if progress is not None:
                from ray.util.queue import Queue

                queue = Queue(actor_options={"num_cpus": 0})
            options = self.task_options()
            if not started and self.runtime_env:
                options["runtime_env"] = dict(self.runtime_env)
            task = ray.remote(**options)(_run_chunk)
            fn_ref = ray.put(fn)
            limit = self._concurrency(ray)
            todo = iter(chunk_ids)

            def submit() -> None:
                while len(pending) < limit:
                    cid = next(todo, None)
                    if cid is None:
                        return
                    pending[task.remote([fn_ref], cid, self.threads, queue)] = cid

            submit()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1,
                                    timeout=0.2 if queue is not None else None)
                queue = _drain_ray(queue, progress)
                if not ready:
                    continue
                (ref,) = ready
                cid = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except rex.RayTaskError as err:  # raised by fn itself: its own type
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from err
                    raise
                except rex.RayError as err:
                    first = (str(err).strip().splitlines() or [""])[0]
                    raise RayExecutorError(
                        f"Chunk {cid} could not be run by Ray (its worker died, retried "
                        f"{self.max_retries} times): {type(err).__name__}: {first}") from err
                submit()
                yield result
        finally:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort; the task may have finished
                    pass
            if queue is not None:
                try:
                    queue.shutdown()
                except Exception:  # noqa: BLE001 - best effort
                    pass
            if started:
                ray.shutdown()


#: Seconds ``check_reachable`` waits for a Ray head to accept a connection.
CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A ``host:port`` (or ``ray://host:port``) address that accepts no TCP connection within
    ``timeout`` seconds is one clear error, before ``ray.init``, which retries such an address
    for a long time with only Ray's own log lines. ``"auto"`` is the running cluster Ray finds
    (``RAY_ADDRESS``, or the one this machine started last): none is one clear error too, before
    the run folder is made (Ray raises ``ConnectionError`` for it; returning None is handled
    the same), and its address is checked as above. Other forms are Ray's to resolve."""
    import re
    import socket

    if address.strip().lower() == "auto":
        try:  # Ray's own resolution of "auto" (not a public API: if it moves, Ray decides)
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address("auto")
        except ConnectionError:  # what Ray raises when it finds no running instance
            found = None
        except Exception:
            return
        if found is None:
            raise ConnectionError("No running Ray cluster was found for the address 'auto' "
                                  "(address; CLI: --address): start one (ray start --head), "
                                  "give its address, or leave the address out for a local "
                                  "Ray.")
        try:
            check_reachable(found, timeout)
        except ConnectionError as e:
            raise ConnectionError(f"{e} ('auto' found '{found}', the cluster this machine "
                                  "started last or RAY_ADDRESS.)") from None
        return
    m = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d+)", address)
    if m is None or "://" in m[1]:  # another scheme (http://: Ray says what it expects)
        return
    host, port = m[1], int(m[2])
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise ConnectionError(f"No Ray head answers at '{address}' (address; CLI: --address): "
                              f"{e.strerror or e}. Start one there (ray start --head) or give "
                              "its address, or leave the address out for a local Ray.") from None
    with sock:
        if _tls_on():  # a TLS handshake comes first: Ray's to check
            return
        why = _not_grpc(sock)
    if why is not None:
        raise ConnectionError(f"What answers at '{address}' is not a Ray head (address; CLI: "
                              f"--address): {why}, and a Ray head (its GCS, or a Ray Client "
                              "server for ray://) speaks gRPC. Give the port 'ray start --head' "
                              "printed (6379 by default; not the dashboard's 8265), or leave the "
                              "address out for a local Ray.")


#: HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5).
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _tls_on() -> bool:
    """Whether Ray is told to use TLS (``RAY_USE_TLS``): its servers then expect a TLS
    handshake, not plain HTTP/2."""
    return os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true", "yes")


def _not_grpc(sock) -> str | None:
    """Why what answers on ``sock`` is not a gRPC server, or None: a gRPC server (Ray's GCS,
    a Ray Client server) answers HTTP/2's connection preface with its own, a SETTINGS frame
    (type 4, stream 0, not an ACK). An HTTP/1 server (a dashboard) answers with text or hangs
    up; ``ray.init`` retried such an address for minutes, printing a line every few seconds."""
    try:
        sock.sendall(_H2_PREFACE)
        head = b""
        while len(head) < 9:
            part = sock.recv(9 - len(head))
            if not part:
                break
            head += part
    except TimeoutError:
        return f"it sent nothing within {sock.gettimeout():g} s"
    except OSError as e:
        return f"it hung up ({e.strerror or e})"
    if len(head) < 9:
        return "it hung up" if not head else f"it answered {head!r}"
    if head[3] == 4 and not head[4] & 1 and not int.from_bytes(head[5:9], "big") & 0x7FFFFFFF:
        return None
    text = head.decode("ascii", "replace")
    return (f"it answered {text!r}..., HTTP/1" if text.startswith("HTTP/") else
            f"it answered {head!r}, not HTTP/2")
