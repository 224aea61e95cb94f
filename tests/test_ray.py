"""The Ray executor (``poisoncert.ray_executor``) on a small local Ray instance.

Ray is part of the ``test`` extra, so these tests run in CI (they are not skipped when Ray is
missing: the import fails loudly). One Ray instance with 2 CPUs, advertised on 127.0.0.1, is
shared by the module and shut down at its end. Faults are injected by wrapping the chunk
function (``_Faulty``), which runs inside the Ray workers: this module is pickled by value so
the workers need not import it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import yaml
from typer.testing import CliRunner

from poisoncert import experiment
from poisoncert.cli import app
from poisoncert.config import from_dict
from poisoncert.executors import EXECUTORS, Executor, LocalExecutor, make_executor
from poisoncert.ray_executor import RayExecutor, import_ray
from poisoncert.runs import RunDir

CONFIG = {
    "data": {"name": "digits", "test_limit": 60},
    "selection": {"scheme": "without_replacement", "ns": 40, "T": 8, "seed": 5},
    "training": {"model": "mlp", "steps": 4, "group_size": 2},
    "run": {"chunk_size": 2},
}


def small():
    return from_dict(CONFIG)


def _children(pid: int) -> set[int]:
    """Every live descendant of process ``pid`` (Linux /proc; empty elsewhere)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parent[int(entry.name)] = int(fields[1])
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out.update(kids)
        todo.extend(kids)
    return out


def _wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists()
                 and "Z" not in (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1][:3])}
        time.sleep(0.2)
    return alive


# --------------------------------------------------------------------------------------------
# Without a shared instance (these run first, before the module's Ray instance starts)


def test_parameters_and_factory():
    assert "ray" in EXECUTORS
    ex = make_executor("ray", workers=3)
    assert isinstance(ex, RayExecutor) and isinstance(ex, Executor)
    assert ex.workers == 3 and ex.address is None and not ex.ship_code
    assert ex.job_runtime_env() == {}
    cluster = make_executor("ray", workers=None, address="auto")
    assert cluster.ship_code
    (module,) = cluster.job_runtime_env()["py_modules"]
    assert Path(module).name == "poisoncert" and (Path(module) / "ray_executor.py").exists()
    with pytest.raises(ValueError, match="'workers' parameter of RayExecutor"):
        RayExecutor(workers=0)
    with pytest.raises(ValueError, match="'max_retries' parameter of RayExecutor"):
        RayExecutor(max_retries=-1)
    with pytest.raises(ValueError, match="'address' parameter of RayExecutor"):
        RayExecutor(address="")
    with pytest.raises(ValueError, match="'address' parameter of make_executor"):
        make_executor("local", address="auto")
    assert not ray.is_initialized()  # nothing connects before map_chunks


@pytest.mark.parametrize("gpus", [-1, float("nan"), float("inf"), 1.5, 2.25, 1e-9, "x"])
def test_gpus_per_task_ray_refuses_is_one_line_before_anything(gpus):
    """``--gpus-per-task 1.5`` (or 1e-9) passed the check (a non-negative real) and Ray
    refused it when the first chunk was submitted, after the run directory was written; -1
    was refused naming RayExecutor's own 'num_gpus_per_task', not the option given."""
    allowed = "0, a fraction in [0.0001, 1] (tasks share a GPU) or a whole number of GPUs"
    with pytest.raises(ValueError, match=r"'gpus_per_task' parameter of train must be "
                       + re.escape(allowed)):
        make_executor("ray", gpus_per_task=gpus, where="train")
    with pytest.raises(ValueError, match="'num_gpus_per_task' parameter of RayExecutor"):
        RayExecutor(num_gpus_per_task=gpus)
    for fine in (0, 0.0001, 0.25, 1, 2.0, 8):
        assert RayExecutor(num_gpus_per_task=fine).num_gpus_per_task == fine


@pytest.mark.parametrize("gpus, have", [(1, 0), (0.5, 0), (2, 1), (3.0, 2)])
def test_more_gpus_per_task_than_the_local_instance_has_is_refused_first(monkeypatch, gpus,
                                                                         have):
    """A local Ray instance with one GPU and ``--gpus-per-task 2``: every chunk task waited
    for two GPUs forever (the autoscaler's "No available node types can fulfill resource
    request"), after the run directory was written. ``preflight`` (before any file) now
    refuses it in one line."""
    from poisoncert import ray_executor

    monkeypatch.setattr(ray_executor, "_ray_running", lambda: False)
    monkeypatch.setattr(ray_executor, "_local_gpus", lambda: have)
    ex = RayExecutor(num_gpus_per_task=gpus)
    with pytest.raises(ValueError, match=r"'num_gpus_per_task' parameter of RayExecutor must "
                       rf"be (at most {have}, the GPUs|0: the local Ray instance has no GPU)"):
        ex.preflight()
    RayExecutor(num_gpus_per_task=have or 0).preflight()  # as many as it has: fine
    monkeypatch.setattr(ray_executor, "_local_gpus", lambda: 8)
    ex.preflight()


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"poisoncert\[ray\]"):
        import_ray()
    with pytest.raises(ImportError, match=r"poisoncert\[ray\]"):
        next(RayExecutor().map_chunks(abs, [1]))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match=r"'executor' parameter.*poisoncert\[ray\]"):
        make_executor("ray")


def test_a_ray_that_fails_to_import_is_one_line_before_anything_is_written(monkeypatch):
    """Ray installed but broken: make_executor says so (it was a traceback from ray.init's
    import, after the run folder had been made)."""
    import builtins

    real = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("libfoo.so: cannot open shared object file\nmore")
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "ray", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(ValueError, match=r"^The 'executor' parameter of make_executor must be "
                       r"'local' unless Ray can be imported \(it is installed, and importing "
                       r"it raised ImportError: libfoo\.so: cannot open shared object file "
                       r"more\)\. Got 'ray' instead\.$"):
        make_executor("ray")


def test_ctrl_c_while_connecting_to_a_cluster_says_nothing_was_written(tmp_path, monkeypatch):
    """Ctrl-C while ``train --executor ray --address ...`` connected to the cluster (before
    any file) said "the same command resumes the run from the chunks it finished" where no
    run existed: it now says nothing was written and the same command starts the run, and of
    a run that existed, that it is as it was (byte for byte) and the same command resumes
    it. A finished run's checksums read before "Nothing to train" are that window too."""
    from contextlib import contextmanager

    from poisoncert import ray_executor

    def ctrl_c(address, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_executor, "check_reachable", ctrl_c)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    args = ["train", str(cfg), "--run-dir", str(run), "--executor", "ray", "--address",
            "127.0.0.1:6379", "-q"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 130 and out.output == (
        f"interrupted before training began: nothing was written (no run in '{run}'); the "
        "same command starts the run.\n"), out.output
    assert not run.exists()
    experiment.train_run(small(), run, executor=LocalExecutor(1), progress=False)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 130 and out.output == (
        f"interrupted before training began: the run '{run}' is as it was; the same command "
        "resumes it.\n"), out.output

    @contextmanager
    def stopped(total, completed, label):
        raise KeyboardInterrupt
        yield

    with pytest.raises(experiment.StartInterrupted) as stop:
        experiment.train_run(small(), run, executor=LocalExecutor(1), verify_progress=stopped)
    assert stop.value.existed
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_a_local_instance_takes_at_most_the_usable_cpus_before_any_file(tmp_path,
                                                                        monkeypatch):
    """``RayExecutor(workers=2**53)`` (no address) reached ``ray.init``, which refused it
    ('Resource quantities must be at most 1e14') after the run folder was written, and more
    workers than CPUs started that many worker processes here, where local workers are
    refused: ``preflight`` refuses them in one line, before any file; a cluster's and a Ray
    this process joined take any number."""
    from poisoncert import ray_executor

    monkeypatch.setattr(ray_executor, "usable_cpus", lambda: 2)
    monkeypatch.setattr(ray_executor, "_ray_running", lambda: False)
    for workers in (3, 2 ** 53):
        with pytest.raises(ValueError, match=r"^The 'workers' parameter of RayExecutor must be "
                           r"at most 2 for a local Ray instance \(the CPUs this process may "
                           r"use, as for local workers, or the tasks its GPUs hold at "
                           r"num_gpus_per_task each; a cluster, address, takes more\)\. "
                           rf"Got {workers} instead\.$"):
            experiment.train_run(small(), tmp_path / "run", executor=RayExecutor(
                workers=workers), progress=False)
        assert not (tmp_path / "run").exists()
    RayExecutor(workers=2).preflight()
    # GPU tasks: as many as the GPUs hold, where that is more than the CPUs (2 GPUs at 0.25
    # a task: 8 at once on 2 CPUs); the cap had refused them (review rev32)
    monkeypatch.setattr(ray_executor, "_local_gpus", lambda: 2)
    RayExecutor(workers=8, num_gpus_per_task=0.25).preflight()
    assert ray_executor.local_workers_limit(0.25) == 8 and ray_executor.local_workers_limit(
        1.5) == 2 and ray_executor.local_workers_limit() == 2
    with pytest.raises(ValueError, match=r"^The 'workers' parameter of RayExecutor must be "
                                         r"at most 8 .*Got 9 instead\.$"):
        RayExecutor(workers=9, num_gpus_per_task=0.25).preflight()
    monkeypatch.setattr(ray_executor, "_ray_running", lambda: True)
    RayExecutor(workers=3).preflight()


def test_progress_survives_a_dead_queue():
    """The progress queue's actor gone (killed, its node lost): the tasks' sender and the
    driver's drain stop reporting, the chunks go on (a 74-line traceback ended the run)."""
    from poisoncert.ray_executor import RayExecutorError, _drain_ray, _RaySender

    class Dead:
        def put_nowait(self, item):
            raise RuntimeError("ActorDiedError")

        def qsize(self):
            raise RuntimeError("ActorDiedError")

    sender = _RaySender(Dead())
    sender(3, 1)
    sender(3, 2)  # no error, no more tries
    assert sender.queue is None
    assert _drain_ray(Dead(), lambda cid, k: None) is None
    assert issubclass(RayExecutorError, OSError)  # one line on the command line


@contextlib.contextmanager
def _pickled_by_value():
    """Ship this module's functions and classes to the Ray workers by value."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _poisoncert_file(chunk_id: int) -> str:
    import poisoncert

    return poisoncert.__file__


def test_own_local_instance_is_started_and_shut_down():
    """``address=None`` starts Ray for the call and stops it after: no process is left.

    With ``ship_code`` (the default on a cluster) the workers import the shipped package.
    """
    before = _children(os.getpid())
    assert sorted(RayExecutor(workers=2).map_chunks(abs, [-3, -1, -2])) == [1, 2, 3]
    assert not ray.is_initialized()
    with _pickled_by_value():
        files = list(RayExecutor(workers=1, ship_code=True).map_chunks(_poisoncert_file, [0]))
    assert "py_modules" in files[0] and Path(files[0]).name == "__init__.py"
    assert not ray.is_initialized()
    assert not _wait_gone(_children(os.getpid()) - before)


# --------------------------------------------------------------------------------------------
# On the module's Ray instance


@pytest.fixture(scope="module")
def ray_instance():
    before = _children(os.getpid())
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             _node_ip_address="127.0.0.1", logging_level="warning")
    try:
        with _pickled_by_value():
            yield
    finally:
        ray.shutdown()
        assert not _wait_gone(_children(os.getpid()) - before), "Ray processes left behind"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The reference: the same config with the local executor, in this process."""
    return experiment.train_run(small(), tmp_path_factory.mktemp("local") / "run",
                              executor=LocalExecutor(1), progress=False)


class _Faulty:
    """A chunk function that records each attempt in ``folder`` and injects faults.

    ``kill``: on its first attempt the chunk kills its own worker process (SIGKILL).
    ``fail``: the chunk waits until every other chunk's file is in ``run_dir``, then raises
    an application error.
    """

    def __init__(self, fn, folder, *, kill=(), fail=(), run_dir=None, others=()):
        self.fn, self.folder = fn, str(folder)
        self.kill, self.fail = tuple(kill), tuple(fail)
        self.run_dir, self.others = run_dir, tuple(others)

    def __call__(self, chunk_id):
        folder = Path(self.folder)
        n = len(list(folder.glob(f"attempt-{chunk_id}-*")))
        (folder / f"attempt-{chunk_id}-{n}").touch()
        if chunk_id in self.kill and n == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        if chunk_id in self.fail:
            rd = RunDir(self.run_dir)
            deadline = time.monotonic() + 600  # a safety net only: loaded CI machines are slow
            while (not all(rd.chunk_path(c).exists() for c in self.others)
                   and time.monotonic() < deadline):
                time.sleep(0.05)
            raise ValueError(f"injected failure in chunk {chunk_id}")
        return self.fn(chunk_id)


class FaultyRay(RayExecutor):
    """A RayExecutor whose chunk function is wrapped in ``_Faulty``; records what it yields."""

    def __init__(self, folder, *, kill=(), fail=(), run_dir=None, others=(), **kw):
        super().__init__(**kw)
        self.wrap = dict(folder=folder, kill=kill, fail=fail, run_dir=run_dir, others=others)
        self.yielded: list[int] = []

    def map_chunks(self, fn, chunk_ids):
        for res in super().map_chunks(_Faulty(fn, **self.wrap), chunk_ids):
            self.yielded.append(res.chunk_id)
            yield res

    def attempts(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for p in Path(self.wrap["folder"]).glob("attempt-*"):
            cid = int(p.name.split("-")[1])
            out[cid] = out.get(cid, 0) + 1
        return out


@pytest.mark.parametrize("workers", [1, 2])
def test_ray_and_local_predictions_are_bit_identical(ray_instance, local_run, tmp_path,
                                                     workers):
    res = experiment.train_run(small(), tmp_path / "run", executor=RayExecutor(workers=workers),
                             progress=False)
    assert res.chunks_trained == 4 and res.chunks_skipped == 0
    assert res.predictions.dtype == local_run.predictions.dtype
    assert np.array_equal(res.predictions, local_run.predictions)
    assert np.array_equal(res.votes, local_run.votes)
    assert ray.is_initialized()  # an instance the executor did not start is left running


def test_killed_worker_loses_and_duplicates_no_chunk(ray_instance, local_run, tmp_path):
    ex = FaultyRay(tmp_path, kill=[1, 2], workers=2, max_retries=2)
    res = experiment.train_run(small(), tmp_path / "run", executor=ex, progress=False)
    assert sorted(ex.yielded) == [0, 1, 2, 3]  # every chunk yielded exactly once
    assert ex.attempts() == {0: 1, 1: 2, 2: 2, 3: 1}  # only the killed ones re-ran
    assert res.chunks_trained == 4
    assert np.array_equal(res.predictions, local_run.predictions)


def test_worker_dying_past_max_retries_is_a_clear_error(ray_instance, tmp_path):
    class AlwaysKill:
        def __call__(self, chunk_id):
            os.kill(os.getpid(), signal.SIGKILL)

    from poisoncert.ray_executor import RayExecutorError

    with pytest.raises(RayExecutorError, match=r"Chunk 7 .*retried 0 times"):
        list(RayExecutor(workers=1, max_retries=0).map_chunks(AlwaysKill(), [7]))


def test_interrupted_run_keeps_finished_chunks_and_resumes(ray_instance, local_run, tmp_path):
    run_dir = tmp_path / "run"
    ex = FaultyRay(tmp_path, fail=[3], run_dir=str(run_dir), others=[0, 1, 2], workers=2)
    with pytest.raises(ValueError, match="injected failure in chunk 3"):
        experiment.train_run(small(), run_dir, executor=ex, progress=False)
    assert ex.attempts()[3] == 1  # an application error is not retried
    rd = RunDir(run_dir)
    assert [rd.chunk_path(c).exists() for c in range(4)] == [True, True, True, False]
    res = experiment.train_run(small(), run_dir, executor=RayExecutor(workers=2), progress=False)
    assert (res.chunks_trained, res.chunks_skipped) == (1, 3)
    assert np.array_equal(res.predictions, local_run.predictions)


def test_cli_train_with_the_ray_executor(ray_instance, local_run, tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "run"),
                                   "--executor", "ray", "--workers", "2", "-q"])
    assert out.exit_code == 0, out.output
    assert "4 chunks trained" in out.output
    assert np.array_equal(RunDir(tmp_path / "run").load("predictions.npy"),
                          local_run.predictions)
    bad = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "other"),
                                   "--address", "auto"])
    assert bad.exit_code == 1 and "'--address' parameter" in bad.output


def test_ray_workers_are_not_stored_as_training_workers(ray_instance, local_run, tmp_path,
                                                        monkeypatch):
    """``train --executor ray --workers 2`` stored ``training.workers: 2`` in the run's
    config.yaml, so that the local resume from it on a machine of fewer CPUs was refused
    until --workers was given; the run keeps the file's value now. A ``training.workers``
    of the file, which Ray does not read, was ignored without a word: a note names it."""
    from poisoncert import executors

    monkeypatch.setattr(executors, "usable_cpus", lambda: 2)
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    out = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(run), "--executor",
                                   "ray", "--workers", "2", "-q"])
    assert out.exit_code == 0 and "training.workers" not in out.stderr, out.output
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["workers"] == 1
    monkeypatch.setattr(executors, "usable_cpus", lambda: 1)
    out = CliRunner().invoke(app, ["train", str(run / "config.yaml"), "--run-dir", str(run),
                                   "-q"])
    assert out.exit_code == 0 and "Nothing to train" in out.stdout, out.output
    assert np.array_equal(RunDir(run).load("predictions.npy"), local_run.predictions)
    note = ("note: training.workers (2: local worker processes) does not apply to --executor "
            "ray, which runs --workers chunks at once (default: the Ray instance's CPUs); it "
            "is ignored.\n")
    cfg.write_text(yaml.safe_dump({**CONFIG, "training": {**CONFIG["training"],
                                                          "workers": 2}}))
    for more in ([], ["--address", "auto"]):
        out = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(run), "--executor",
                                       "ray", "-q", *more])
        assert out.exit_code == 0 and out.stderr == note, out.output
    out = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(run), "--executor",
                                   "ray", "--workers", "1", "-q"])
    assert out.exit_code == 0 and out.stderr == "", out.output


def test_progress_advances_per_group_from_ray_tasks(ray_instance, local_run, tmp_path):
    """A chunk of two groups reports each group as it finishes, through a Ray queue."""
    from contextlib import contextmanager

    steps = []

    @contextmanager
    def display(total, completed, label):
        steps.append(("start", total, completed))
        yield steps.append

    cfg = from_dict({**CONFIG, "run": {"chunk_size": 4}})
    res = experiment.train_run(cfg, tmp_path / "run", executor=RayExecutor(workers=2),
                               progress=display)
    assert steps[0] == ("start", 8, 0)
    assert steps[1] == 0 and 0 not in steps[2:], steps  # the work began, said once, first
    assert sum(steps[2:]) == 8 and all(0 < k <= 2 for k in steps[2:]), steps
    assert len(steps[2:]) >= 4  # per group (2 classifiers), not per chunk (4)
    assert np.array_equal(res.predictions, local_run.predictions)


def test_an_address_no_ray_head_answers_is_one_clear_error(tmp_path):
    """``--address HOST:PORT`` with nothing listening fails at once with one line; ``ray.init``
    would retry it for a long time (the process ignored SIGTERM meanwhile). ``auto`` is
    resolved by Ray, then checked the same way; other forms are left to Ray."""
    from poisoncert.ray_executor import check_reachable

    t0 = time.perf_counter()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(ConnectionError, match=rf"^No Ray head answers at '{address}' "
                                                  r"\(address; CLI: --address\): "):
            check_reachable(address)
    assert time.perf_counter() - t0 < 30
    # "auto": the cluster Ray finds, or one line when it finds none (Ray raises for that: the
    # next test) or one that does not answer
    from ray._private import services

    for found, match in ((None, r"^No running Ray cluster was found for the address 'auto' "
                                r"\(address; CLI: --address\): start one"),
                         ("127.0.0.1:1", r"^No Ray head answers at '127\.0\.0\.1:1' .* "
                                         r"\('auto' found '127\.0\.0\.1:1', ")):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(services, "canonicalize_bootstrap_address",
                       lambda a, t=None, found=found: found)
            with pytest.raises(ConnectionError, match=match):
                check_reachable("auto")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    # a process of its own: Ray already running in this one (a fixture) would be used as it is
    import subprocess

    out = subprocess.run([sys.executable, "-c", "from poisoncert.cli import main; main()",
                          "train", str(cfg), "--run-dir", str(tmp_path / "run"), "--executor",
                          "ray", "--address", "127.0.0.1:1", "-q"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("error: No Ray head answers at "
                                                         "'127.0.0.1:1'"), out.stderr
    assert len(out.stderr.splitlines()) == 1 and out.stdout == ""
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_quiet_train_hides_rays_token_notice_and_keeps_it_otherwise(tmp_path):
    """``train --executor ray -q`` starting its own local Ray instance printed Ray's notice
    "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt
    out. ..." (Ray 2.60, RAY_AUTH_MODE unset): -q now hides it (that logger's warnings only);
    without -q it is shown as Ray logs it."""
    import subprocess

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["HOME"] = str(tmp_path)  # Ray writes the token it makes to ~/.ray/auth_token
    notice = "Token authentication is enabled for this Ray cluster"
    for quiet in (True, False):
        out = subprocess.run([sys.executable, "-m", "poisoncert.cli", "train", str(cfg),
                              "--run-dir", str(tmp_path / f"run-{quiet}"), "--executor",
                              "ray", "--workers", "1", *(["-q"] if quiet else [])],
                             capture_output=True, text=True, timeout=300, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (notice in out.stderr) is not quiet, (quiet, out.stderr)
        assert RunDir(tmp_path / f"run-{quiet}").verify()["verified"] is True


def test_address_auto_with_no_ray_running_is_one_line_before_any_file(tmp_path, monkeypatch):
    """``--address auto`` where Ray finds no running instance: Ray's own resolution raises
    ``ConnectionError`` (it never returns None for "auto"), which was let through to
    ``ray.init`` after the run folder had been written (config, manifest, seeds), with Ray's
    message naming a ``--address`` flag. Now it is poisoncert's one line, and no folder."""
    from ray._private import services

    from poisoncert.ray_executor import check_reachable

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # nothing running on this machine, as Ray sees it (another process's Ray would be found)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir=None: None)
    with pytest.raises(ConnectionError, match=r"^No running Ray cluster was found for the "
                                              r"address 'auto' \(address; CLI: --address\)"):
        check_reachable("auto")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    out = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "run"),
                                   "--executor", "ray", "--address", "auto", "-q"])
    assert out.exit_code == 1, out.output
    assert out.output.startswith("error: No running Ray cluster was found for the address "
                                 "'auto'"), out.output
    assert len(out.output.strip().splitlines()) == 1, out.output
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@contextlib.contextmanager
def _servers():
    """Two local servers that are no Ray head: an HTTP/1 one (a dashboard, say) and one that
    accepts connections and says nothing; yields their ports."""
    import http.server
    import socket
    import threading

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    mute = socket.create_server(("127.0.0.1", 0))
    try:
        yield web.server_address[1], mute.getsockname()[1]
    finally:
        web.shutdown()
        web.server_close()
        mute.close()


def test_an_address_where_something_else_answers_is_one_line_before_any_file(tmp_path):
    """``--address HOST:PORT`` where a server that is no Ray head listens (the dashboard's
    8265, a typo): the TCP check passed, ``ray.init`` then retried for minutes, printing a
    line every few seconds, after the run folder was written. A Ray head speaks gRPC (HTTP/2),
    which ``check_reachable`` now asks for; ``--address nonsense`` (Ray's "Invalid address
    format") is refused before any file too, as ``preflight`` now connects."""
    from poisoncert.ray_executor import check_reachable

    with _servers() as (web, mute):
        t0 = time.perf_counter()
        for port, why in ((web, "it answered b'<"), (mute, "it sent nothing within 1 s")):
            with pytest.raises(ConnectionError, match=rf"^What answers at '127\.0\.0\.1:{port}' "
                               rf"is not a Ray head \(address; CLI: --address\): {why}"):
                check_reachable(f"127.0.0.1:{port}", timeout=1)
        assert time.perf_counter() - t0 < 10
        cfg = tmp_path / "exp.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG))
        import subprocess

        for address, start in ((f"127.0.0.1:{web}", "What answers at"),
                               ("nonsense", "Ray could not connect to 'nonsense'")):
            out = subprocess.run([sys.executable, "-c", "from poisoncert.cli import main; main()",
                                  "train", str(cfg), "--run-dir", str(tmp_path / "run"),
                                  "--executor", "ray", "--address", address, "-q"],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 1 and out.stderr.startswith(f"error: {start}"), out.stderr
            assert len(out.stderr.splitlines()) == 1 and out.stdout == ""
            assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_preflight_connects_to_a_cluster_once_and_the_executor_closes_it(monkeypatch):
    """``preflight`` connects to a cluster (so Ray's refusals come before any file);
    ``map_chunks`` uses that connection and shuts it down, as ``close_preflight`` does when
    no chunk is left to train (``train_run`` calls it at its end)."""
    from poisoncert import ray_executor

    class FakeRay:
        def __init__(self):
            self.on, self.inits, self.shutdowns = False, 0, 0

        def is_initialized(self):
            return self.on

        def init(self, **kw):
            self.on, self.inits = True, self.inits + 1

        def shutdown(self):
            self.on, self.shutdowns = False, self.shutdowns + 1

    fake = FakeRay()
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    monkeypatch.setattr(ray_executor, "check_reachable", lambda address: None)
    ex = RayExecutor(address="auto", ship_code=False)
    ex.preflight()
    assert (fake.on, fake.inits) == (True, 1)
    assert ex._connect(fake) is True and fake.inits == 1  # map_chunks owns it: shuts it down
    ex.close_preflight()  # (train_run's end) not twice
    assert fake.shutdowns == 0
    fake.shutdown()  # (what map_chunks does at its end)
    ex.preflight()
    assert list(ex.map_chunks(abs, [])) == [] and (fake.on, fake.shutdowns) == (False, 2)
    ex.preflight()
    ex.close_preflight()
    assert (fake.on, fake.inits, fake.shutdowns) == (False, 3, 3)
    fake.on = True  # Ray initialised by the caller: used, and left running
    ex.preflight()
    ex.close_preflight()
    assert (fake.inits, fake.shutdowns) == (3, 3) and ex._connect(fake) is False


def test_a_real_ray_head_passes_the_grpc_check(ray_instance):
    """The module's Ray instance's GCS answers HTTP/2 as ``check_reachable`` asks."""
    from poisoncert.ray_executor import check_reachable

    check_reachable(ray.get_runtime_context().gcs_address, timeout=5)


def test_a_local_instance_has_the_cpus_this_process_may_use(monkeypatch):
    """Under ``taskset -c 0`` (or a cpuset) on a machine of many cores, ``--executor ray``
    started a local Ray instance of ``os.cpu_count()`` CPUs, so that many worker processes
    (each with torch and the data) shared the one CPU the process may use; local workers are
    refused beyond it. The default is now ``resources.usable_cpus()``."""
    from poisoncert import ray_executor

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(ray_executor, "usable_cpus", lambda: 3)
    assert RayExecutor().workers == 3 and RayExecutor(workers=5).workers == 5
    seen = {}

    class FakeRay:
        def is_initialized(self):
            return False

        def init(self, **kw):
            seen.update(kw)

    assert RayExecutor(num_cpus_per_task=2)._connect(FakeRay()) and seen["num_cpus"] == 6
