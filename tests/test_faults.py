"""Faults and abuse of run directories (issue 9): kills, concurrent processes, tampered files.

``train`` and ``certify`` run as real processes (a driver that imports everything, prints
``go`` and calls the CLI's ``main``) and are killed with SIGKILL: at named points through the
``POISONCERT_TEST_FAULT`` hook (the run-directory creation window, between a file's write and
its rename, before the manifest is finished) and after random delays drawn over the measured
length of an uninterrupted run. Every killed run is resumed and must give predictions
bit-identical to an uninterrupted run's, leave no temporary file behind and still verify.
The data set is a tiny synthetic ``.npz`` (3 classes, 12 features) and the learner a tiny MLP
of the real training engine, so that a whole run takes a fraction of a second after imports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import poisoncert
from poisoncert import pipeline, runs
from poisoncert.cli import app
from poisoncert.config import load_config
from poisoncert.runs import RunDir, RunError, RunLockedError

TIMEOUT = 120  # seconds any one process may take before the test fails as a hang
N_CHUNKS = 6
ARRAYS = (runs.PREDICTIONS, runs.VOTES, runs.LABELS, runs.SUBSET_SIZES, runs.SEEDS,
          runs.CLEAN_INDICES)

DRIVER = """\
import os, signal, sys, time
from poisoncert import cli, pipeline  # noqa: F401
if __name__ == "__main__":  # not again in spawned worker processes
    # Ctrl-C as in a terminal, also where pytest was started with SIGINT ignored (a background
    # job of a shell without job control, nohup), which its children would inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("FAULT_TEST_TORCH"):
        import torch
        from poisoncert import training  # noqa: F401
        torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # one-time set-up before "go"
    go = os.environ.get("FAULT_TEST_GO")
    print("go", flush=True)
    while go and not os.path.exists(go):
        time.sleep(0.005)
    cli.main(sys.argv[1:])
"""


def tmp_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.name.startswith(runs._TMP_PREFIX))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The tiny data set, the config file, the driver and an uninterrupted reference run."""
    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    centres = rng.random((3, 12))

    def draw(n):
        y = rng.integers(0, 3, n)
        x = np.clip(centres[y] + 0.25 * rng.standard_normal((n, 12)), 0, 1)
        return x.astype(np.float32), y

    (xtr, ytr), (xte, yte) = draw(300), draw(60)
    np.savez(root / "tiny.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    cfg = {"data": {"name": f"npz:{root / 'tiny.npz'}"},
           "selection": {"scheme": "with_replacement", "ns": 40, "T": 24, "seed": 5},
           "training": {"model": "mlp", "steps": 3, "group_size": 4},
           "certify": {"rhos": [0, 1, 2]},
           "run": {"chunk_size": 4}}
    (root / "exp.yaml").write_text(yaml.safe_dump(cfg))
    (root / "driver.py").write_text(DRIVER)
    ref = root / "ref" / "run"
    proc, t_go = _start(root, ["train", str(root / "exp.yaml"), "--run-dir", str(ref), "-q"])
    out, err = proc.communicate(timeout=TIMEOUT)
    length = time.monotonic() - t_go
    assert proc.returncode == 0, out + err
    assert f"{N_CHUNKS} chunks trained, 0 resumed" in out
    proc, t_go = _start(root, ["certify", str(ref)], torch=False)
    out, err = proc.communicate(timeout=TIMEOUT)
    certify_length = time.monotonic() - t_go
    assert proc.returncode == 0, out + err
    return {"root": root, "config": root / "exp.yaml", "ref": ref, "length": length,
            "certify_length": certify_length}


def _start(root: Path, args: list[str], *, fault: str | None = None, go: Path | None = None,
           torch: bool = True) -> tuple[subprocess.Popen, float]:
    """Start the driver on ``args``; return the process once it printed ``go`` (its imports
    done) and the time of that."""
    env = {k: v for k, v in os.environ.items() if k != "POISONCERT_TEST_FAULT"}
    if fault:
        env["POISONCERT_TEST_FAULT"] = fault
    if go is not None:
        env["FAULT_TEST_GO"] = str(go)
    if torch:
        env["FAULT_TEST_TORCH"] = "1"
    proc = subprocess.Popen([sys.executable, str(root / "driver.py"), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "go", line + proc.stderr.read()
    return proc, time.monotonic()


def _kill_after(proc: subprocess.Popen, delay: float) -> tuple[int, str]:
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out + err


def _same_run(run: Path, ref: Path) -> None:
    for name in ARRAYS:
        a, b = np.load(run / name), np.load(ref / name)
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    for name in (runs.CLASSIFIERS, runs.CONFIG):
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name


# --------------------------------------------------------------------------------------------
# Kills


TRAIN_POINTS = ("create:tmp", "create:locked", "create:manifest", "create:filled",
                "create:renamed", "write:seeds.npy", "write:chunk-00002.npz",
                "write:votes.npy", "write:classifiers.csv", "finish")
N_RANDOM_KILLS = 10


def test_train_killed_at_20_points_resumes_bit_identical(setup):
    """10 kills at named points (4 inside the run-directory creation window) and 10 at random
    times: each leaves no run or a resumable one; resumed, each equals the uninterrupted run,
    verifies, and leaves no temporary file (also no temporary sibling folder)."""
    root, ref = setup["root"], setup["ref"]
    rng = np.random.default_rng(9)
    plans = [("point", p) for p in TRAIN_POINTS]
    plans += [("delay", float(d)) for d in rng.uniform(0, 0.9 * setup["length"], N_RANDOM_KILLS)]

    def kill(i_plan):
        i, (kind, what) = i_plan
        parent = root / f"kill{i:02d}"
        parent.mkdir()
        args = ["train", str(setup["config"]), "--run-dir", str(parent / "run"), "-q"]
        if kind == "point":
            proc, _ = _start(root, args, fault=what)
            out, err = proc.communicate(timeout=TIMEOUT)
            return parent, proc.returncode, out + err
        delay, draw = what, np.random.default_rng(i)
        for _ in range(4):  # the run ended before the random delay: draw a shorter one
            proc, t_go = _start(root, args)
            rc, out = _kill_after(proc, delay)
            if rc != 0:
                break
            shutil.rmtree(parent / "run")
            delay = float(draw.uniform(0, 0.5 * (time.monotonic() - t_go)))
        return parent, rc, out

    with ThreadPoolExecutor(2) as pool:
        killed = list(pool.map(kill, enumerate(plans)))
    resumed = 0
    for (kind, what), (parent, rc, out) in zip(plans, killed, strict=True):
        assert rc == -signal.SIGKILL, (kind, what, out)
        run = parent / "run"
        # a kill leaves either nothing or a resumable run
        assert not run.exists() or (run / runs.CONFIG).is_file(), (what, list(run.iterdir()))
        if kind == "point" and what.startswith("create:") and what != "create:renamed":
            assert not run.exists(), what
        res = pipeline.train_run(load_config(setup["config"]), run, progress=False)
        assert res.chunks_trained + res.chunks_skipped == N_CHUNKS
        _same_run(run, ref)
        assert RunDir(run).verify()["verified"] is True
        assert tmp_files(parent) == [], (what, tmp_files(parent))
        resumed += 1
    assert resumed == len(TRAIN_POINTS) + N_RANDOM_KILLS == 20


CERTIFY_POINTS = ("write:certificates.csv", "write:certified_accuracy.csv",
                  "write:certify.json", "write:certified_accuracy.png")


def test_certify_killed_midway_leaves_no_earlier_outputs_beside_its_own(setup, tmp_path):
    """certify with other settings, killed after writing some of its outputs: the earlier
    certify's files are gone, never mixed with the new ones (certify.json and the curve said
    P6 while certificates.csv held P1's radii), and no certify.json claims the set is whole."""
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    old = {n: (run / n).read_bytes() for n in (runs.CERTIFICATES, runs.CERTIFIED_ACCURACY,
                                                runs.CERTIFY_JSON, runs.CERTIFIED_ACCURACY_PNG)}
    proc, _ = _start(setup["root"], ["certify", str(run), "--model", "P1", "--alpha", "0.05"],
                     torch=False, fault=f"write:{runs.CERTIFIED_ACCURACY}")
    assert proc.wait(TIMEOUT) == -signal.SIGKILL
    assert not (run / runs.CERTIFY_JSON).exists()
    for name, before in old.items():
        assert not (run / name).exists() or (run / name).read_bytes() != before, name
    assert "P1" in (run / runs.CERTIFICATES).read_text()


def test_certify_killed_then_rerun_gives_the_same_outputs(setup):
    root, ref = setup["root"], setup["ref"]
    rng = np.random.default_rng(11)
    plans = [("point", p) for p in CERTIFY_POINTS]
    plans += [("delay", float(d)) for d in rng.uniform(0, 0.9 * setup["certify_length"], 2)]
    for i, (kind, what) in enumerate(plans):
        parent = root / f"certkill{i}"
        run = parent / "run"
        shutil.copytree(ref, run)
        for name in (runs.CERTIFICATES, runs.CERTIFIED_ACCURACY, runs.CERTIFY_JSON,
                     runs.CERTIFIED_ACCURACY_PNG):
            (run / name).unlink()
        proc, _ = _start(root, ["certify", str(run)], torch=False,
                         fault=what if kind == "point" else None)
        rc, out = _kill_after(proc, what) if kind == "delay" else (proc.wait(TIMEOUT), "")
        assert rc in (-signal.SIGKILL, 0), out  # a random delay may outlast certify
        assert kind == "delay" or rc == -signal.SIGKILL
        pipeline.certify_run(run)
        for name in (runs.CERTIFICATES, runs.CERTIFIED_ACCURACY):
            assert (run / name).read_bytes() == (ref / name).read_bytes(), (what, name)
        assert json.loads((run / runs.CERTIFY_JSON).read_text()) == \
            json.loads((ref / runs.CERTIFY_JSON).read_text())
        assert tmp_files(parent) == [], (what, tmp_files(parent))
        assert RunDir(run).verify()["verified"] is True


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _spawned_workers(pid: int) -> list[int]:
    """The multiprocessing workers among ``pid``'s children (a child may end while read)."""
    out = []
    for p in _children(pid):
        try:
            if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text():
                out.append(p)
        except OSError:
            continue
    return out


def _train_with_two_sleeping_workers(setup, tmp_path) -> tuple[subprocess.Popen, list[int]]:
    """``train --workers 2`` whose two workers sleep in their first chunk (its fault point):
    the process and the workers' ids, once both are in their chunks."""
    args = ["train", str(setup["config"]), "--run-dir", str(tmp_path / "run"), "-q",
            "--workers", "2"]
    proc, _ = _start(setup["root"], args, fault="chunk:train@sleep=120")
    deadline = time.monotonic() + TIMEOUT
    workers = []
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        workers = _spawned_workers(proc.pid)
    assert len(workers) == 2, workers
    time.sleep(3.0)  # in their chunks
    return proc, workers


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists()
                    or __import__("poisoncert.resources").resources.usable_cpus() < 2,
                    reason="reads /proc; two worker processes need two CPUs")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_end_soon_after_train_is_killed(setup, tmp_path, sig):
    """``train --workers 2`` killed (SIGKILL, SIGTERM) while its workers train: the workers
    end within a few seconds (they trained on, orphaned, holding memory and the caller's
    pipes, for minutes)."""
    proc, workers = _train_with_two_sleeping_workers(setup, tmp_path)
    proc.send_signal(sig)
    proc.communicate(timeout=TIMEOUT)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers), workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists()
                    or __import__("poisoncert.resources").resources.usable_cpus() < 2,
                    reason="reads /proc; two worker processes need two CPUs")
def test_sigint_to_train_alone_stops_its_workers_at_once(setup, tmp_path):
    """SIGINT to ``train`` alone (``kill -INT``, a notebook's interrupt), not to its workers:
    it stops them and exits 130 with its one line at once (it waited for the chunks in
    flight to finish, then threw them away)."""
    proc, workers = _train_with_two_sleeping_workers(setup, tmp_path)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert time.monotonic() - t0 < 60, "waited for the chunks in flight"
    assert proc.returncode == 130 and err.startswith("interrupted: "), out + err
    assert "Traceback" not in err
    assert not any(_alive(p) for p in workers), workers


@pytest.mark.skipif(__import__("poisoncert.resources").resources.usable_cpus() < 2,
                    reason="two worker processes need two CPUs")
def test_worker_killed_mid_run_is_one_line_and_the_run_resumes(setup):
    """A worker process killed while it trains (as the kernel's OOM killer does): ``train``
    exits 1 with one line naming what happened, and the next ``train`` resumes the run to the
    uninterrupted one's predictions."""
    root, ref = setup["root"], setup["ref"]
    run = root / "workerkill" / "run"
    args = ["train", str(setup["config"]), "--run-dir", str(run), "-q", "--workers", "2"]
    proc, _ = _start(root, args, fault="chunk:train:2")  # each worker, at its second chunk
    out, err = proc.communicate(timeout=TIMEOUT)
    lines = err.splitlines()
    assert proc.returncode == 1 and out == "", out + err
    assert len(lines) == 1 and lines[0].startswith("error: a worker process ended abruptly"), err
    assert "(BrokenProcessPool)" in lines[0] and "Traceback" not in err
    assert (run / runs.CONFIG).is_file()
    res = pipeline.train_run(load_config(setup["config"]), run, progress=False)
    assert res.chunks_trained + res.chunks_skipped == N_CHUNKS
    for name in ARRAYS:  # its config.yaml keeps workers: 2 (a resumable key)
        assert np.array_equal(np.load(run / name), np.load(ref / name)), name
    assert (run / runs.CLASSIFIERS).read_bytes() == (ref / runs.CLASSIFIERS).read_bytes()
    assert RunDir(run).verify()["verified"] is True
    assert tmp_files(run.parent) == []


# --------------------------------------------------------------------------------------------
# Concurrency


def _trained(out: str) -> int:
    """Chunks a finished train reports having trained (0 for a refused one)."""
    for word in out.split("(")[1:]:
        if re.match(r"\d+ chunks? trained", word):
            return int(word.split()[0])
    return 0


def _refused(rc: int, out: str) -> bool:
    lines = out.strip().splitlines()
    return rc == 1 and len(lines) == 1 and "in use by another poisoncert process" in lines[0] \
        and "Traceback" not in out


def test_two_trains_started_together_never_both_train(setup):
    """Two ``train`` on one new run directory, released at the same instant: one trains
    every chunk; the other is refused with one line or finds the run done. Two rounds."""
    root, ref = setup["root"], setup["ref"]
    for r in range(2):
        parent = root / f"race{r}"
        parent.mkdir()
        go = parent / "go"
        args = ["train", str(setup["config"]), "--run-dir", str(parent / "run"), "-q"]
        procs = [_start(root, args, go=go)[0] for _ in range(2)]
        go.touch()
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
        results = [(p.returncode, o + e) for p, (o, e) in zip(procs, outs, strict=True)]
        assert sum(_trained(out) for _, out in results) == N_CHUNKS, results
        for rc, out in results:
            assert (rc == 0) or _refused(rc, out), results
        _same_run(parent / "run", ref)
        assert tmp_files(parent) == []


def test_second_train_and_certify_refused_while_a_train_holds_the_lock(setup):
    root, ref = setup["root"], setup["ref"]
    parent = root / "held"
    run = parent / "run"
    parent.mkdir()
    go = parent / "go"
    args = ["train", str(setup["config"]), "--run-dir", str(run), "-q"]
    second, _ = _start(root, args, go=go)  # imported, waits for go
    first, _ = _start(root, args, fault="write:chunk-00002.npz@sleep=5")
    deadline = time.monotonic() + TIMEOUT
    while not (run / runs.CHUNKS / "chunk-00001.npz").exists():
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    out, err = second.communicate(timeout=TIMEOUT)
    assert _refused(second.returncode, out + err), out + err
    cert = runner_certify(run)
    assert cert.exit_code == 1 and "in use by another poisoncert process" in cert.output
    assert first.poll() is None  # still paused: the refusals came while it held the lock
    o, e = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0 and _trained(o) == N_CHUNKS, o + e
    _same_run(run, ref)
    assert tmp_files(parent) == []


def test_ctrl_c_says_what_is_kept_and_the_same_command_resumes(setup):
    """SIGINT (Ctrl-C) while the third chunk is written: one line on stderr says how many
    classifiers are kept (the first two chunks, 8 of 24), the exit code is the shell's 130,
    no temporary file is left, and the same command resumes to the uninterrupted run."""
    root, ref = setup["root"], setup["ref"]
    parent = root / "ctrl-c"
    parent.mkdir()
    run = parent / "run"
    args = ["train", str(setup["config"]), "--run-dir", str(run), "-q"]
    proc, _ = _start(root, args, fault="write:chunk-00002.npz@sleep=60")
    deadline = time.monotonic() + TIMEOUT
    while not list((run / runs.CHUNKS).glob(runs._TMP_PREFIX + "chunk-00002.npz*")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # paused inside the third chunk's write
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines() == [
        f"interrupted: 8 of 24 base classifiers are saved in '{run}' (in whole chunks of up "
        "to 4); the same command resumes the run."], err
    assert tmp_files(parent) == []
    proc, _ = _start(root, args)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0 and _trained(out) == N_CHUNKS - 2, out + err
    _same_run(run, ref)


def test_ctrl_c_while_the_chunks_are_joined_says_so(setup, tmp_path):
    """SIGINT after the training loop, while the chunks are joined into votes.npy: one line
    (it exited 130 without a word), and the same command finishes the run."""
    run = tmp_path / "run"
    args = ["train", str(setup["config"]), "--run-dir", str(run), "-q"]
    proc, _ = _start(setup["root"], args, fault=f"write:{runs.VOTES}@sleep=60")
    deadline = time.monotonic() + TIMEOUT
    while not list(run.glob(runs._TMP_PREFIX + runs.VOTES + "*")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130 and err.strip().splitlines() == [
        "interrupted: the same command resumes the run from the chunks it finished (none "
        "if it was still loading its data)."], \
        out + err
    proc, _ = _start(setup["root"], args)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0 and _trained(out) == 0, out + err
    _same_run(run, setup["ref"])


def test_a_run_created_by_another_process_first_is_resumed_not_duplicated(setup):
    """A pauses with its run folder built but not yet renamed into place; B creates and
    trains the run meanwhile (A's locked temporary folder is left alone); A's rename then
    fails and A resumes B's finished run (0 chunks trained)."""
    root, ref = setup["root"], setup["ref"]
    parent = root / "created"
    parent.mkdir()
    run = parent / "run"
    go = parent / "go"
    args = ["train", str(setup["config"]), "--run-dir", str(run), "-q"]
    b, _ = _start(root, args, go=go)
    a, _ = _start(root, args, fault="create:filled@sleep=5")
    deadline = time.monotonic() + TIMEOUT
    while not any((p / runs.CONFIG).exists() for p in parent.glob(".tmp-run.*")):
        assert a.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    ob, eb = b.communicate(timeout=TIMEOUT)
    assert b.returncode == 0 and _trained(ob) == N_CHUNKS, ob + eb
    assert a.poll() is None  # B finished while A held its unrenamed folder
    oa, ea = a.communicate(timeout=TIMEOUT)
    assert a.returncode == 0 and "were trained before (6 chunks resumed" in oa, oa + ea
    _same_run(run, ref)
    assert tmp_files(parent) == []


def runner_certify(run: Path, *args: str):
    return CliRunner().invoke(app, ["certify", str(run), "--no-plot", *args])


def test_the_next_command_names_a_run_dir_with_spaces_as_one_word(setup, tmp_path):
    """train and update end with "Next: poisoncert certify DIR"; with a space in DIR, pasted
    into a shell it certified another folder ('my' of 'my run'). DIR is quoted now."""
    import shlex

    run = tmp_path / "my run's"
    shutil.copytree(setup["ref"], run)  # (train again: nothing to train, the same last line)
    for args in (["train", str(setup["config"]), "--run-dir", str(run), "-q"],
                 ["update", str(run), "--out", str(tmp_path / "v 2"), "--remove", "3", "-q"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        last = r.output.strip().splitlines()[-1]
        out = run if args[0] == "train" else tmp_path / "v 2"
        assert shlex.split(last) == ["Next:", "poisoncert", "certify", str(out)], last


# --------------------------------------------------------------------------------------------
# Locks and leftovers (in process)


def test_lock_refuses_a_second_holder_and_is_released(setup, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    a, b = RunDir(run), RunDir(run)
    with a.lock():
        assert a.locked
        with pytest.raises(RunLockedError, match=r"'.*run' is in use by another poisoncert"):
            with b.lock():
                pass
        with pytest.raises(RunLockedError):
            pipeline.certify_run(run, plot=False)
        # the line named only train and certify as holders, while an attack (or an update,
        # on its new run) holds it as long
        r = CliRunner().invoke(app, ["certify", str(run)])
        assert r.exit_code == 1 and "train, certify and attack hold a run's lock" in r.stderr
        with a.lock():  # nested on the same object: kept
            assert a.locked
        assert a.locked
    assert not a.locked
    with b.lock():
        assert b.locked


def test_an_unfinished_run_being_trained_says_so(setup, tmp_path):
    """``predict``, ``update`` and ``certify`` verify a run first: an unfinished one whose lock
    another process holds is being trained now, so "run train again to resume it" would be the
    wrong advice."""
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    man = json.loads((run / runs.MANIFEST).read_text())
    man["finished"] = None
    (run / runs.MANIFEST).write_text(json.dumps(man))
    trainer = RunDir(run)
    with trainer.lock():
        with pytest.raises(RunError, match=r"is not finished: another poisoncert process is "
                                           r"training it now \(it holds the run's lock\)"):
            RunDir(run).verify()
        with pytest.raises(RunError, match="another poisoncert process is training it now"):
            poisoncert.Ensemble.load(run)
    with pytest.raises(RunError, match=r"is not finished .* run train again to resume it"):
        RunDir(run).verify()


def test_leftovers_of_killed_writers_are_removed_by_the_next_start(setup, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    junk = [run / ".tmp-votes.npy.abc123", run / runs.CHUNKS / ".tmp-chunk-00001.npz.x1",
            run / ".tmp-certify.json.zz"]
    for p in junk:
        p.write_bytes(b"torn")
    stale = tmp_path / ".tmp-run.999999999.run.abcdef"  # creator's pid does not exist
    stale.mkdir()
    (stale / runs.MANIFEST).write_text("{}")
    live = tmp_path / f".tmp-run.{os.getpid()}.other.abcdef"  # this process: alive, no lock
    live.mkdir()
    pipeline.certify_run(run, plot=False)
    assert not any(p.exists() for p in junk)
    pipeline.train_run(load_config(setup["config"]), tmp_path / "second", progress=False)
    assert not stale.exists() and live.exists()
    shutil.rmtree(live)
    assert tmp_files(tmp_path) == []


def test_chunk_of_another_config_is_retrained(setup, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    chunk = run / runs.CHUNKS / "chunk-00003.npz"
    with np.load(chunk) as z:
        arrays = {k: z[k] for k in z.files}
    assert str(arrays["config_hash"]) == json.loads((run / runs.MANIFEST).read_text())[
        "config_hash"]
    arrays["config_hash"] = np.str_("0" * 64)
    arrays["predictions"] = np.zeros_like(arrays["predictions"])  # what it would mix in
    np.savez(chunk, **arrays)
    res = pipeline.train_run(load_config(setup["config"]), run, progress=False)
    assert (res.chunks_trained, res.chunks_skipped) == (1, N_CHUNKS - 1)
    _same_run(run, setup["ref"])


def _rewrite_chunk(path: Path, change) -> None:
    """``change(arrays)`` on a chunk file's arrays, its digest recomputed when it keeps one
    (an edit that a digest alone would not catch)."""
    from poisoncert.runchunks import _chunk_digest

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    if "digest" in arrays:
        arrays["digest"] = np.str_(_chunk_digest(arrays))
    np.savez(path, **arrays)


def test_chunk_of_other_data_or_without_its_fields_is_retrained(setup, tmp_path):
    """A chunk records the run's data checksum: one trained on other data (another run of the
    same config, copied in) is trained again, as is, in a run made since chunks record it, a
    chunk whose digest, config hash and data checksum were removed (it was taken for a chunk
    of an earlier version, and its predictions entered the run). A run that predates
    ``chunk_format`` keeps its older chunks."""
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    man = json.loads((run / runs.MANIFEST).read_text())
    assert man["chunk_format"] == 2
    with np.load(run / runs.CHUNKS / "chunk-00001.npz") as z:
        assert str(z["data_sha256"]) == man["data"]["sha256_arrays"]

    def other_data(a):
        a["data_sha256"] = np.str_("0" * 64)
        a["predictions"] = np.zeros_like(a["predictions"])

    def stripped(a):
        for key in ("digest", "config_hash", "data_sha256"):
            a.pop(key)
        a["predictions"] = np.zeros_like(a["predictions"])

    _rewrite_chunk(run / runs.CHUNKS / "chunk-00001.npz", other_data)
    _rewrite_chunk(run / runs.CHUNKS / "chunk-00004.npz", stripped)
    res = pipeline.train_run(load_config(setup["config"]), run, progress=False)
    assert (res.chunks_trained, res.chunks_skipped) == (2, N_CHUNKS - 2)
    _same_run(run, setup["ref"])
    # an earlier version's run (no chunk_format): a chunk without those fields is its own
    old = tmp_path / "old"
    shutil.copytree(setup["ref"], old)
    man.pop("chunk_format")
    man["finished"] = None
    man[runs.MANIFEST_DIGEST] = runs.manifest_digest(man)
    (old / runs.MANIFEST).write_text(json.dumps(man))
    _rewrite_chunk(old / runs.CHUNKS / "chunk-00004.npz",
                   lambda a: [a.pop(k) for k in ("digest", "config_hash", "data_sha256")])
    res = pipeline.train_run(load_config(setup["config"]), old, progress=False)
    assert (res.chunks_trained, res.chunks_skipped) == (0, N_CHUNKS)
    _same_run(old, setup["ref"])


def test_weights_replaced_by_a_file_and_a_short_write_are_one_clear_line(setup, tmp_path,
                                                                         monkeypatch):
    """``weights`` replaced by a file: one line saying so (it was "[Errno 17] File exists");
    a write that numpy cut short on a full disk says the device is full (its OSError has no
    reason: "7200 requested and 4032 written")."""
    import collections

    from poisoncert import runsafe

    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    shutil.rmtree(run / runs.WEIGHTS)
    (run / runs.WEIGHTS).write_text("not a folder")
    with pytest.raises(runs.RunError, match=r"^'.*/weights' is not a folder: a run keeps its "
                                            r"classifiers' weights in that folder\."):
        pipeline.train_run(load_config(setup["config"]), run, progress=False)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(runsafe.shutil, "disk_usage", lambda p: usage(10, 10, 0))
    with pytest.raises(runs.RunError, match=r"^Cannot write '.*x\.npy': 7200 requested and "
                                            r"4032 written \(no space left on the device\)\.$"):
        with runsafe.atomic_write(tmp_path / "x.npy"):
            raise OSError("7200 requested and 4032 written")


def test_edited_chunk_or_missing_weights_is_retrained(setup, tmp_path):
    """A chunk whose predictions were edited after it was written (its digest no longer
    matches), a chunk whose weights file is gone and one whose weights file was damaged are
    trained again, not trusted: before, the edited predictions entered the run and
    ``certify`` verified it, the missing weights surfaced only when ``predict`` or ``update``
    needed them, and the damaged ones were recorded in the manifest's checksums on resume."""
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    chunk = run / runs.CHUNKS / "chunk-00002.npz"
    with np.load(chunk) as z:
        arrays = {k: z[k] for k in z.files}
    assert "digest" in arrays
    arrays["predictions"] = (arrays["predictions"] + 1) % 3
    np.savez(chunk, **arrays)
    (run / runs.WEIGHTS / "chunk-00004.safetensors").unlink()
    damaged = run / runs.WEIGHTS / "chunk-00005.safetensors"  # its values, not its header
    raw = bytearray(damaged.read_bytes())
    raw[-40:] = b"\x7f" * 40
    damaged.write_bytes(bytes(raw))
    res = pipeline.train_run(load_config(setup["config"]), run, progress=False)
    assert (res.chunks_trained, res.chunks_skipped) == (3, N_CHUNKS - 3)
    _same_run(run, setup["ref"])
    assert (run / runs.WEIGHTS / "chunk-00004.safetensors").is_file()
    from poisoncert.training.weights import load_weights

    good = load_weights(setup["ref"] / runs.WEIGHTS / damaged.name)
    for a, b in zip(load_weights(damaged), good, strict=True):  # retrained, not kept
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in b)


def test_resume_refuses_an_edited_or_missing_manifest(setup, tmp_path):
    """A resume records new checksums over what the folder holds, so it must not take a
    manifest edited by hand (a larger ``data.n`` was then certified, and verified), nor one
    stripped of its digest as well (taken for an earlier version's and resumed: n = 30000
    certified, radii 100 times too large), one that looks like an earlier version's (no
    digest, no chunk format) whose data sizes are not those of its data, or a missing one
    (whose data checksum is what tells the run's data from changed data)."""
    for case in ("edited", "missing", "finished_edited", "stripped", "as_earlier"):
        run = tmp_path / case
        shutil.copytree(setup["ref"], run)
        man_path = run / runs.MANIFEST
        man = json.loads(man_path.read_text())
        if case != "finished_edited":
            man["finished"] = None  # an interrupted run
            man.pop("checksums")
            man[runs.MANIFEST_DIGEST] = runs.manifest_digest(man)
        man["data"]["n"] *= 100
        man["data"]["n_train"] *= 100
        if case == "stripped":  # its digest removed too: taken for an earlier version's
            del man[runs.MANIFEST_DIGEST]
        if case == "as_earlier":  # and its chunk format: an earlier version's manifest
            del man[runs.MANIFEST_DIGEST], man["chunk_format"]
        if case == "missing":
            man_path.unlink()
        else:
            man_path.write_text(json.dumps(man))
        before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        with pytest.raises(runs.RunError) as info:
            pipeline.train_run(load_config(setup["config"]), run, progress=False)
        why = {"missing": "has no manifest", "as_earlier": "records data.n = 30000, but the "
               "run's data give 300 (edited by hand?)"}.get(case, "was changed by hand")
        assert why in str(info.value) and "Delete the folder" in str(info.value), case
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        assert after == before, case  # nothing written


def test_resume_refuses_a_config_yaml_edited_after_the_run_started(setup, tmp_path):
    """An unfinished run's config.yaml edited by hand (ns 40 -> 39), then train with the
    edited config: every chunk was trained again, and the run finished under the manifest's
    old config_hash, so that certify refused it ("not the one the run was trained with").
    It is refused before anything is trained or written."""
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    man = json.loads((run / runs.MANIFEST).read_text())
    man["finished"] = None  # an interrupted run
    man.pop("checksums")
    man[runs.MANIFEST_DIGEST] = runs.manifest_digest(man)
    (run / runs.MANIFEST).write_text(json.dumps(man))
    _edit_yaml(run / runs.CONFIG)
    before = _snapshot(run)
    with pytest.raises(RunError, match=re.escape(
            f"The config '{run / runs.CONFIG}' was changed by hand after the run started")):
        pipeline.train_run(load_config(run / runs.CONFIG), run, progress=False)
    assert _snapshot(run) == before


def test_a_resume_rewrites_the_seeds_and_clean_indices(setup, tmp_path):
    """``seeds.npy`` and ``clean_indices.npy`` follow from the config and the data; a resume
    writes them again (a swapped ``seeds.npy`` was kept, blessed by the new checksums, and
    ``update`` and ``attack`` used it)."""
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    np.save(run / runs.SEEDS, np.load(run / runs.SEEDS)[::-1].copy())
    np.save(run / runs.CLEAN_INDICES, np.arange(3, dtype=np.int64))
    pipeline.train_run(load_config(setup["config"]), run, progress=False)
    for name in (runs.SEEDS, runs.CLEAN_INDICES):
        assert (run / name).read_bytes() == (setup["ref"] / name).read_bytes(), name
    runs.RunDir(run).verify()


def test_train_again_on_a_finished_run_never_leaves_it_unfinished(setup, tmp_path):
    """``train`` on a finished run with nothing to train marked it unfinished first and wrote
    every file again, so that a kill before its end (here at the seeds' write, at the
    votes' and before the manifest's) left the finished run unfinished: ``certify`` and
    ``predict`` refused it until ``train`` ran again. It now writes nothing, and a kill at
    any of those points is never reached."""
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*") if p.is_file()}
    args = ["train", str(setup["config"]), "--run-dir", str(run), "-q"]
    for point in (f"write:{runs.SEEDS}", f"write:{runs.VOTES}", "finish"):
        proc, _ = _start(setup["root"], args, fault=point)
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, (point, proc.returncode, out + err)
        assert "Nothing to train" in out, out
        after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.rglob("*")
                 if p.is_file()}
        assert after == before, point
    assert RunDir(run).load_manifest()["finished"]
    RunDir(run).verify()


def test_update_into_a_folder_that_holds_a_run_writes_nothing(setup, tmp_path):
    """An update creates its run or nothing: a folder filled meanwhile (two updates into one
    ``--out``: the second resumed the first's run with its own files, under the first's
    manifest) is refused; and a kill right after the run appears leaves its edits there (the
    config names them), so that ``train`` finishes it."""
    from poisoncert.experiment.edits import Edits
    from poisoncert.experiment.update import update_run

    out = tmp_path / "out"
    shutil.copytree(setup["ref"], out)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
    with pytest.raises(runs.RunError, match="exists and is not empty"):
        runs.RunDir(out).create(load_config(setup["config"]), {})
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    edits = Edits(relabel_index=np.array([5]), relabel_label=np.array([2]))
    killed = tmp_path / "killed"
    proc, _ = _start(setup["root"], ["update", str(setup["ref"]), "--out", str(killed),
                                     "--relabel", "5:2"], fault="create:renamed")
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL and (killed / "edits.npz").is_file()
    res = pipeline.train_run(load_config(killed / runs.CONFIG), killed, progress=False)
    whole = update_run(setup["ref"], tmp_path / "whole", edits)
    assert np.array_equal(res.predictions, whole.predictions)


def test_the_same_update_after_a_kill_says_how_to_finish_the_interrupted_one(setup, tmp_path):
    """An update killed after its run appeared left an unfinished run at --out, and the same
    command again was refused as for any full folder ('exists and is not empty. Use an
    empty or new folder.'), with no word that the folder held the interrupted update nor
    that train finishes it. It now says both (and a live update's folder is 'in use')."""
    from poisoncert.experiment.edits import Edits
    from poisoncert.experiment.update import update_run

    killed = tmp_path / "killed"
    args = ["update", str(setup["ref"]), "--out", str(killed), "--relabel", "5:2"]
    proc, _ = _start(setup["root"], args, fault=f"write:{runs.VOTES}")
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    edits = Edits(relabel_index=np.array([5]), relabel_label=np.array([2]))
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert (f"error: The new run's folder '{killed}' (out_dir; CLI: --out) holds an update "
            "that was interrupted before it finished: finish it with 'poisoncert train "
            f"{killed / runs.CONFIG} --run-dir {killed}', or delete the folder and run the "
            "same command again.") in r.output
    with runs.RunDir(killed).lock(), pytest.raises(RunLockedError):
        update_run(setup["ref"], killed, edits)  # (another process's lock: a test's own)
    res = pipeline.train_run(load_config(killed / runs.CONFIG), killed, progress=False)
    whole = update_run(setup["ref"], tmp_path / "whole", edits)
    assert np.array_equal(res.predictions, whole.predictions)
    assert tmp_files(tmp_path) == []


@pytest.mark.parametrize("failing", ["chunk-00002.npz", runs.VOTES])
def test_train_on_a_full_disk_says_the_same_command_resumes(setup, tmp_path, monkeypatch,
                                                            failing):
    """A full disk while ``train`` wrote a chunk or the assembled votes: the one line named
    only the file ("Cannot write '...': No space left on device."), not that the run keeps
    its finished chunks and the same command resumes it; it says so now, and the resumed
    run is the uninterrupted one."""
    import errno

    from poisoncert import runsafe

    real = runsafe.fault_point

    def full(name: str) -> None:
        if name == f"write:{failing}":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(name)

    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(runsafe, "fault_point", full)
        with pytest.raises(RunError) as info:
            pipeline.train_run(load_config(setup["config"]), run, progress=False)
    path = run / runs.CHUNKS / failing if failing.startswith("chunk") else run / failing
    assert str(info.value) == (
        f"Cannot write '{path}': No space left on device: the run '{run}' keeps the chunks "
        "it finished; the same command resumes it once the cause is fixed.")
    pipeline.train_run(load_config(setup["config"]), run, progress=False)
    _same_run(run, setup["ref"])
    assert tmp_files(tmp_path) == []


@pytest.mark.parametrize("failing", [runs.VOTES, "chunk-00003.npz"])
def test_update_on_a_full_disk_removes_its_unfinished_run_and_says_so(setup, tmp_path,
                                                                       monkeypatch, failing):
    """A full disk while ``update`` wrote its new run left that run, unfinished, at --out
    under a line that named only the file ('Cannot write ...: No space left on device.'); the
    same command then was refused, and ``train`` finished it by training every classifier
    again. The unfinished run is now removed (an empty folder given as --out stays, empty)
    and the line says so; the same command then writes the run whole."""
    import errno

    from poisoncert import runsafe
    from poisoncert.experiment.edits import Edits
    from poisoncert.experiment.update import update_run

    real = runsafe.fault_point

    def full(name: str) -> None:
        if name == f"write:{failing}":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(name)

    edits = Edits(relabel_index=np.array([5]), relabel_label=np.array([2]))
    new, empty = tmp_path / "new", tmp_path / "empty"
    empty.mkdir()
    was = _identity(empty)
    for out in (new, empty):
        with monkeypatch.context() as m:
            m.setattr(runsafe, "fault_point", full)
            with pytest.raises(RunError) as info:
                update_run(setup["ref"], out, edits)
        msg = str(info.value)
        assert msg.startswith(f"Cannot write '{out}") and "No space left on device: the " \
            f"update's unfinished run was removed from '{out}'; run the same command again" \
            in msg and "\n" not in msg, msg
        assert (not out.exists()) if out is new else list(out.iterdir()) == [], out
        assert out is new or _identity(out) == was  # emptied, not made again
        res = update_run(setup["ref"], out, edits)
        RunDir(out).verify()
        assert res.run_dir == out
    assert _identity(empty) == was
    assert tmp_files(tmp_path) == []


def test_two_attacks_of_different_runs_into_one_out_folder_never_mix(setup, tmp_path):
    """Two ``attack``s of different runs into one --out each held only its own run's lock:
    the second (started while the first wrote its set, paused here after its trials) went
    on, and the folder ended with one attack's trials beside the other's summary and plot.
    The first now holds the folder's lock from its start to its end: the second is refused
    in one line, and the folder holds the first's whole set."""
    import csv

    other = tmp_path / "other"
    shutil.copytree(setup["ref"], other)
    out = tmp_path / "mix"
    common = ["--attacks", "flip", "--targets", "2", "-q", "--out", str(out)]
    go = tmp_path / "go"
    second, _ = _start(setup["root"], ["attack", str(other), "--budgets", "2", *common],
                       go=go, torch=False)
    first, _ = _start(setup["root"], ["attack", str(setup["ref"]), "--budgets", "1", *common],
                      fault="write:attack_summary.csv@sleep=6", torch=False)
    deadline = time.time() + TIMEOUT
    while not (out / "attack_trials.csv").exists() and time.time() < deadline \
            and first.poll() is None:
        time.sleep(0.02)
    go.touch()
    out2, err2 = second.communicate(timeout=TIMEOUT)
    out1, err1 = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 0, out1 + err1
    assert second.returncode == 1 and (out2 + err2).count("\n") == 1, out2 + err2
    assert (f"error: The attack's results folder '{out}' (out_dir; CLI: --out) is in use by "
            "another poisoncert process") in err2, err2
    assert json.loads((out / "attack.json").read_text())["budgets"] == [1]
    for name in ("attack_trials.csv", "attack_summary.csv"):
        with open(out / name) as f:
            assert {row["budget"] for row in csv.DictReader(f)} == {"1"}, name
    assert tmp_files(tmp_path) == []


def test_a_failed_attack_leaves_an_empty_out_folder_empty(setup, tmp_path):
    """An attack that failed (here: its run's files changed) left the '.lock' it made in the
    empty folder given as --out, which ``ls`` does not show and train and update then refused
    as "exists and is not empty". The folder is as it was; one with a .lock of its own keeps
    it."""
    from poisoncert.experiment.attack import AttackSettings, attack_run

    bad = tmp_path / "bad"
    shutil.copytree(setup["ref"], bad)
    with open(bad / "classifiers.csv", "a") as f:
        f.write("x\n")
    s = AttackSettings(attacks=("flip",), budgets=(1,), targets=2)
    res = tmp_path / "res"
    res.mkdir()
    with pytest.raises(RunError, match="was changed after the run finished"):
        attack_run(bad, settings=s, out_dir=res)
    assert list(res.iterdir()) == []
    pipeline.train_run(load_config(setup["config"]), res, progress=False)  # not refused
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / runs.LOCK).write_text("")
    with pytest.raises(RunError, match="was changed after the run finished"):
        attack_run(bad, settings=s, out_dir=mine)
    assert [p.name for p in mine.iterdir()] == [runs.LOCK]


def test_an_attack_that_cannot_write_its_summary_leaves_none_of_its_results(setup, tmp_path,
                                                                            monkeypatch):
    """A full disk at attack.json, the last of the attack's results: its trials, summary and
    plot were left without it, under a line that named only the file. They are removed, and
    the line says so and what to do."""
    from poisoncert.experiment.attack import ATTACK_JSON, AttackSettings, attack_run

    save = runs.save_bytes

    def full_at_summary(path, data, **kw):
        if Path(path).name == ATTACK_JSON:
            raise RunError(f"Cannot write '{path}': No space left on device.")
        return save(path, data, **kw)

    res = tmp_path / "res"
    res.mkdir()  # (a new folder goes with a failed attack; an empty one stays, emptied)
    monkeypatch.setattr(runs, "save_bytes", full_at_summary)
    with pytest.raises(RunError, match=re.escape(
            "attack.json': No space left on device: the attack's other results were "
            "removed; run the same command again once the cause is fixed.")):
        attack_run(setup["ref"], settings=AttackSettings(attacks=("flip",), budgets=(1,),
                                                         targets=2), out_dir=res)
    assert list(res.iterdir()) == []


def test_a_lock_whose_file_was_removed_before_it_was_taken_is_taken_again(tmp_path,
                                                                          monkeypatch):
    """``RunLock.acquire`` opened '.lock', then (before its flock) the holder removed it and
    released, and another process made a new '.lock' and locked it: the flock on the removed
    file succeeded, and two processes held "the" lock. It now checks that '.lock' is still the
    file it locked, and opens it again where not."""
    from poisoncert import runsafe

    folder = tmp_path / "f"
    folder.mkdir()
    real = runsafe._lock_run
    calls = []

    def removed_first(fd, op, where):
        if not calls:  # the file just opened is removed: another process then makes one
            os.unlink(folder / runs.LOCK)
            (folder / runs.LOCK).write_text("")
        calls.append(fd)
        return real(fd, op, where)

    monkeypatch.setattr(runsafe, "_lock_run", removed_first)
    lock = runsafe.RunLock.acquire(folder)
    try:
        assert len(calls) == 2
        assert os.path.samestat(os.fstat(lock._fd), os.stat(folder / runs.LOCK))
        monkeypatch.setattr(runsafe, "_lock_run", real)
        with pytest.raises(RunLockedError):
            runsafe.RunLock.acquire(folder)
    finally:
        lock.release()


def test_folder_left_by_an_interrupted_creation_of_earlier_versions_is_reused(setup,
                                                                               tmp_path):
    run = tmp_path / "run"
    (run / runs.CHUNKS).mkdir(parents=True)
    (run / runs.MANIFEST).write_text("{}")
    (run / ".tmp-manifest.json.q1w2e3").write_text("{")
    res = pipeline.train_run(load_config(setup["config"]), run, progress=False)
    assert res.chunks_trained == N_CHUNKS
    _same_run(run, setup["ref"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="exists and is not empty"):
        pipeline.train_run(load_config(setup["config"]), tmp_path / "other", progress=False)
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------------------------
# Tampering


@pytest.fixture(scope="module")
def weights_run(setup):
    """A finished run with saved weights (two weights files)."""
    run = setup["root"] / "weights" / "run"
    cfg = load_config(setup["config"], {"training.save_weights": "true", "selection.T": "8"})
    pipeline.train_run(cfg, run, progress=False)
    assert len(list((run / runs.WEIGHTS).iterdir())) == 2
    return run


def _edit_yaml(p: Path) -> None:
    p.write_text(p.read_text().replace("ns: 40", "ns: 1"))


def _invalid_yaml(p: Path) -> None:
    """A flipped bit that makes a value invalid ('float32' -> 'flnat32'): said of the run
    ('The config of the run ... is invalid: ...'), neither naming config.yaml nor that it
    changed since the run finished."""
    text = p.read_text()
    assert "dtype: float32" in text
    p.write_text(text.replace("dtype: float32", "dtype: fl" + chr(ord("o") ^ 1) + "at32", 1))


def _edit_json(key: str, value):
    def edit(p: Path) -> None:
        man = json.loads(p.read_text())
        section, _, sub = key.partition(".")
        (man[section] if sub else man)[sub or key] = value
        p.write_text(json.dumps(man))
    return edit


def _strip_digest_and_edit(p: Path) -> None:
    """A larger ``data.n`` (and ``n_train``) with the manifest's digest removed: taken for an
    earlier version's manifest, it was not checked, and the 100-times larger n certified (as
    verified) radii far beyond the run's."""
    man = json.loads(p.read_text())
    del man[runs.MANIFEST_DIGEST]
    man["data"]["n"] *= 100
    man["data"]["n_train"] = man["data"]["n"] + man["data"]["n_clean"]
    p.write_text(json.dumps(man))


def _edit_npy(index, value):
    """Set one entry (``value`` may be a function of the old one); the edit must change it."""
    def edit(p: Path) -> None:
        a = np.load(p)
        old = a[index].item()
        a[index] = value(old) if callable(value) else value
        assert a[index] != old
        np.save(p, a)
    return edit


def _flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))


TAMPER = [
    ("config.yaml", _edit_yaml, "config.yaml' is not the one the run was trained with"),
    ("config.yaml", _invalid_yaml, "config.yaml' of the run was changed after the run "
                                   "finished (its SHA-256 "),
    ("manifest.json", _edit_json("data.n", 10**7), "manifest.json' was changed"),
    ("manifest.json", _edit_json("config_hash", "0" * 64), "manifest.json' was changed"),
    ("manifest.json", _strip_digest_and_edit, "manifest.json' was changed after the run "
                                              "finished (its manifest_sha256 was removed"),
    ("manifest.json", lambda p: p.write_text("[1, 2]"), "must hold a JSON object; it holds a list"),
    ("manifest.json", lambda p: p.write_text("{"), "manifest.json' is not valid JSON"),
    ("votes.npy", _edit_npy((0, 0), lambda v: v + 1), "votes.npy' was changed"),
    ("labels.npy", _edit_npy(0, 99), "labels.npy' was changed"),
    ("predictions.npy", _edit_npy((0, 0), lambda v: (v + 1) % 3), "predictions.npy' was"),
    ("seeds.npy", _edit_npy(0, lambda v: v + 1), "seeds.npy' was changed"),
    ("subset_sizes.npy", _edit_npy(0, lambda v: v - 1), "subset_sizes.npy' was changed"),
    ("classifiers.csv", lambda p: p.write_text(p.read_text() + "\n"), "classifiers.csv' was"),
    ("votes.npy", lambda p: p.write_bytes(p.read_bytes()[:100]), "votes.npy' was changed"),
    ("votes.npy", lambda p: p.unlink(), "votes.npy' is missing"),
    ("weights/chunk-00000.safetensors", _flip_byte, "chunk-00000.safetensors' was changed"),
    ("weights/chunk-00001.safetensors", lambda p: p.unlink(), "safetensors' is missing"),
    ("weights/chunk-00009.safetensors", lambda p: p.write_bytes(b"x"), "was added after"),
]


@pytest.mark.parametrize("name, edit, words", TAMPER,
                         ids=[f"{t[0]}-{i}" for i, t in enumerate(TAMPER)])
def test_tampered_run_is_refused_by_certify_naming_the_file(weights_run, tmp_path, name,
                                                           edit, words):
    run = tmp_path / "run"
    shutil.copytree(weights_run, run)
    edit(run / name)
    before = _snapshot(run)
    with pytest.raises(RunError, match=re.escape(words)):
        pipeline.certify_run(run)
    r = runner_certify(run)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert Path(name).name in lines[0] and "Traceback" not in r.output
    assert _snapshot(run) == before  # nothing written


def test_a_changed_or_missing_file_is_written_again_by_the_command_certify_names(
        weights_run, tmp_path):
    """certify named the changed or missing file and stopped there: nothing said what to do.
    Its line now ends with the command that writes the file again (train on the run, which
    rebuilds what does not match its chunks and retrains a chunk whose weights changed), and
    that command gives the run back, bit for bit, verified."""
    import shlex

    run = tmp_path / "my run"
    shutil.copytree(weights_run, run)
    _flip_byte(run / runs.WEIGHTS / "chunk-00001.safetensors")
    (run / runs.VOTES).unlink()
    r = runner_certify(run)
    assert r.exit_code == 1 and "votes.npy' is missing" in r.output, r.output
    head, _, command = r.output.strip().partition("Restore it, or write it again with: ")
    args = shlex.split(command)
    assert args[:2] == ["poisoncert", "train"] and args[3:] == ["--run-dir", str(run)]
    assert CliRunner().invoke(app, [*args[1:], "-q"]).exit_code == 0
    assert RunDir(run).verify()["verified"] is True  # the changed weights too
    for name in (runs.VOTES, f"{runs.WEIGHTS}/chunk-00001.safetensors"):
        assert (run / name).read_bytes() == (weights_run / name).read_bytes(), name


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_no_verify_certifies_an_edited_run_and_says_so(weights_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(weights_run, run)
    _edit_npy(0, lambda v: (v + 1) % 3)(run / runs.LABELS)
    r = runner_certify(run, "--no-verify")
    assert r.exit_code == 0, r.output
    assert "warning: not verified (--no-verify)" in r.stderr
    assert json.loads((run / runs.CERTIFY_JSON).read_text())["verified"] is None
    r = runner_certify(run)
    assert r.exit_code == 1 and "labels.npy' was changed" in r.output


def test_run_without_checksums_is_certified_with_a_warning(weights_run, tmp_path):
    """Runs made before checksums were recorded: consistency checks and a warning."""
    run = tmp_path / "run"
    shutil.copytree(weights_run, run)
    man = json.loads((run / runs.MANIFEST).read_text())
    for key in ("checksums", "manifest_sha256", "chunk_format"):  # as an earlier version's
        del man[key]
    (run / runs.MANIFEST).write_text(json.dumps(man))
    r = runner_certify(run)
    assert r.exit_code == 0, r.output
    assert "warning: the run" in r.stderr and "records no checksums" in r.stderr
    assert json.loads((run / runs.CERTIFY_JSON).read_text())["verified"] is False
    # without checksums, an edit that breaks the arrays' consistency is still refused
    _edit_npy(0, 99)(run / runs.LABELS)
    with pytest.raises(RunError, match=r"labels\.npy' holds the value 99, outside \[0, 2\]"):
        pipeline.certify_run(run)
    np.save(run / runs.LABELS, np.load(weights_run / runs.LABELS))
    _edit_npy((0, 0), lambda v: v + 1)(run / runs.VOTES)
    with pytest.raises(RunError, match=r"votes\.npy' does not hold the vote counts"):
        pipeline.certify_run(run)
    man["data"]["n"] = 10**7
    (run / runs.MANIFEST).write_text(json.dumps(man))
    with pytest.raises(RunError, match=r"data\.n = 10000000 is not data\.n_train - "):
        pipeline.certify_run(run)


def test_predict_out_a_link_or_a_pipe_writes_through_it_and_keeps_it(weights_run, setup,
                                                                      tmp_path):
    """``predict --out FILE`` wrote a temporary file beside FILE and renamed it onto FILE: a
    symbolic link was replaced by a regular file (its target left as it was), and a named
    pipe or a device by a regular file (as root, ``--out /dev/null`` made /dev/null a regular
    file). The link's target and the pipe get the rows now, and stay what they were."""
    import stat
    import threading

    x = tmp_path / "x.npy"
    np.save(x, np.load(setup["root"] / "tiny.npz")["x_test"])

    def predict(out: Path) -> None:
        r = CliRunner().invoke(app, ["predict", str(weights_run), str(x), "--out", str(out),
                                     "-q"])
        assert r.exit_code == 0, r.output

    predict(tmp_path / "ref.csv")
    rows = (tmp_path / "ref.csv").read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "target.csv")
    predict(link)
    assert link.is_symlink() and (tmp_path / "target.csv").read_bytes() == rows
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    os.link(pipe, tmp_path / "same-pipe")  # (to end the reader if the pipe is replaced)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_bytes()))
    reader.start()
    try:
        predict(pipe)
    finally:
        reader.join(timeout=10)
        if reader.is_alive():  # never opened for writing: a writer that closes at once
            os.close(os.open(tmp_path / "same-pipe", os.O_WRONLY))
            reader.join()
    assert stat.S_ISFIFO(os.lstat(pipe).st_mode) and got == [rows]


def test_a_run_dir_that_is_a_dangling_symlink_is_one_line_naming_the_link(setup, tmp_path):
    """A run directory that is a symbolic link to a folder that does not exist (yet): the run
    was built beside it and the rename onto the link failed, "Cannot write the run directory
    'link': Not a directory.", which named neither the link nor what to do."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    for run in (link, link / "sub"):
        with pytest.raises(RunError, match=re.escape(
                f"'{link}' is a symbolic link to '{tmp_path / 'gone'}', which does not exist. "
                "Create that folder, or give another path.")):
            pipeline.train_run(load_config(setup["config"]), run, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_a_run_in_a_folder_named_in_another_encoding_loads_its_weights(weights_run, setup,
                                                                      tmp_path):
    """A run whose path is not valid UTF-8 (a folder named in Latin-1, 'caf\\xe9'):
    safetensors' torch reader refused the path ("Path ... is not valid UTF-8"), so predict
    called the run's weights damaged, and update and attack failed with a traceback."""
    from poisoncert.training.weights import load_weights

    run = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9"))
    shutil.copytree(weights_run, run)
    x = np.load(setup["root"] / "tiny.npz")["x_test"]
    got = poisoncert.Ensemble.load(run).predict(x)
    assert np.array_equal(got, poisoncert.Ensemble.load(weights_run).predict(x))
    name = f"{runs.WEIGHTS}/chunk-00000.safetensors"
    for a, b in zip(load_weights(run / name), load_weights(weights_run / name), strict=True):
        assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in b)


def test_unwritable_run_directory_is_one_line_naming_the_file(weights_run, tmp_path,
                                                               monkeypatch):
    """As any user: the first write fails and names the file; nothing half-written."""
    run = tmp_path / "run"
    shutil.copytree(weights_run, run)
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(RunError, match=r"Cannot write '.*certificates\.csv': Permission denied"):
        pipeline.certify_run(run)
    assert not (run / runs.CERTIFIED_ACCURACY).exists()


def test_a_certify_that_cannot_write_its_summary_leaves_none_of_its_outputs(weights_run,
                                                                           tmp_path,
                                                                           monkeypatch):
    """A full disk at certify.json, the last of certify's outputs: certificates.csv and
    certified_accuracy.csv were left without it (a set no certify.json describes); they are
    removed, and the one line says so and what to do."""
    run = tmp_path / "run"
    shutil.copytree(weights_run, run)
    before = _snapshot(run)
    save = runs.save_bytes

    def full_at_summary(path, data, **kw):
        if Path(path).name == runs.CERTIFY_JSON:
            raise RunError(f"Cannot write '{path}': No space left on device.")
        return save(path, data, **kw)

    monkeypatch.setattr(runs, "save_bytes", full_at_summary)
    with pytest.raises(RunError, match=re.escape(
            "certify.json': No space left on device: the certify's other outputs were "
            "removed; run it again once the cause is fixed.")):
        pipeline.certify_run(run, plot=False)
    assert _snapshot(run) == before


def test_weights_changed_before_the_run_finishes_are_refused_not_recorded(setup, tmp_path,
                                                                          monkeypatch):
    """A weights file changed after its chunk file recorded its SHA-256, before the run
    finished: ``finish`` hashed the file again and recorded the changed bytes as the run's, so
    ``certify`` verified it. The manifest now takes the hash of the bytes as written (the
    chunk's record), and ``verify`` names the file."""
    run = tmp_path / "run"
    cfg = load_config(setup["config"], {"training.save_weights": "true", "selection.T": "8"})
    finish = runs.RunDir.finish

    def changed_first(self, **fields):
        w = sorted((self.path / runs.WEIGHTS).iterdir())[0]
        data = bytearray(w.read_bytes())
        data[-1] ^= 1  # the last byte of the last tensor: still a readable safetensors file
        w.write_bytes(bytes(data))
        return finish(self, **fields)

    monkeypatch.setattr(runs.RunDir, "finish", changed_first)
    pipeline.train_run(cfg, run, progress=False)
    monkeypatch.undo()
    with pytest.raises(RunError, match=r"chunk-00000\.safetensors' was changed"):
        pipeline.certify_run(run)


def test_a_runs_config_and_manifest_alone_train_again_to_the_same_run(weights_run, setup,
                                                                      tmp_path):
    """A run's config.yaml and manifest.json copied into an empty folder (its chunks and
    outputs left behind): train resumed it and stopped at "Cannot write '.../chunks/chunk-
    00000.npz': No such file or directory", leaving seeds.npy and weights/ behind. It now
    trains every chunk again, to the run's predictions and weights."""
    run = tmp_path / "copy"
    run.mkdir()
    for name in (runs.CONFIG, runs.MANIFEST):
        shutil.copyfile(weights_run / name, run / name)
    cfg = load_config(setup["config"], {"training.save_weights": "true", "selection.T": "8"})
    pipeline.train_run(cfg, run, progress=False)
    for name in (runs.PREDICTIONS, runs.VOTES):
        assert (run / name).read_bytes() == (weights_run / name).read_bytes()
    for w in sorted((weights_run / runs.WEIGHTS).iterdir()):
        assert (run / runs.WEIGHTS / w.name).read_bytes() == w.read_bytes()
    pipeline.certify_run(run)  # verified: the checksums the finish recorded hold


# --------------------------------------------------------------------------------------------
# An existing empty folder given as the run directory


def _identity(folder: Path) -> tuple[int, int, int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino, st.st_mode, st.st_gid


def test_an_empty_folder_given_as_the_run_dir_is_kept_with_its_mode(setup, tmp_path):
    """train and update into an empty folder (a user's group folder, chmod 2775) built the run
    beside it and renamed it onto the folder: the folder was replaced by one of the process's
    own mode (0755, no setgid, so the group's members could not write the run), and a mount
    point was refused. The folder is now kept (device, inode, mode, group) and the run's
    folders inside it take its setgid; the run is whole and verifies."""
    from poisoncert.experiment.edits import Edits
    from poisoncert.experiment.update import update_run

    before = {}
    for name in ("train", "update"):
        (tmp_path / name).mkdir()
        os.chmod(tmp_path / name, 0o2775)
        before[name] = _identity(tmp_path / name)
    pipeline.train_run(load_config(setup["config"]), tmp_path / "train", progress=False)
    _same_run(tmp_path / "train", setup["ref"])
    update_run(setup["ref"], tmp_path / "update",
               Edits(relabel_index=np.array([5]), relabel_label=np.array([2])))
    for name, was in before.items():
        folder = tmp_path / name
        assert _identity(folder) == was, name
        assert RunDir(folder).verify()["verified"] is True, name
        assert os.stat(folder / runs.CHUNKS).st_mode & 0o2000, name
    assert tmp_files(tmp_path) == []


@pytest.mark.parametrize("point", ["create:claimed", "create:moving", "create:renamed"])
def test_a_kill_while_a_run_moves_into_an_empty_folder_leaves_no_run_and_trains_again(
        setup, tmp_path, point):
    """Killed while the new run's entries move into the kept empty folder: before its config
    moves in, the folder holds no run (what it holds is cleared by the next train, which
    then trains it whole); after, the run resumes. The folder stays the same folder."""
    run = tmp_path / "run"
    run.mkdir()
    was = _identity(run)
    proc, _ = _start(setup["root"], ["train", str(setup["config"]), "--run-dir", str(run),
                                     "-q"], fault=point)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL, out + err
    assert (run / runs.CONFIG).is_file() == (point == "create:renamed")
    assert not RunDir(run).exists() or point == "create:renamed"
    res = pipeline.train_run(load_config(setup["config"]), run, progress=False)
    assert res.chunks_trained == N_CHUNKS
    _same_run(run, setup["ref"])
    assert RunDir(run).verify()["verified"] is True
    assert _identity(run) == was
    assert tmp_files(tmp_path) == []


def test_a_train_into_an_empty_folder_being_created_is_refused_as_in_use(setup, tmp_path):
    """A second train into the empty folder that a first is moving its new run into is
    refused in one line as in use (not "not empty", and never clears the first's files);
    the first's run is whole."""
    run = tmp_path / "run"
    run.mkdir()
    args = ["train", str(setup["config"]), "--run-dir", str(run), "-q"]
    go = tmp_path / "go"
    b, _ = _start(setup["root"], args, go=go)
    a, _ = _start(setup["root"], args, fault="create:moving@sleep=5")
    deadline = time.monotonic() + TIMEOUT
    while not (run / runs.MANIFEST).exists():
        assert a.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    go.touch()
    ob, eb = b.communicate(timeout=TIMEOUT)
    assert a.poll() is None  # (B ended while A was still moving its run in)
    assert b.returncode == 1 and (ob + eb).count("\n") == 1, ob + eb
    assert f"The run directory '{run}' is in use by another poisoncert process" in eb, eb
    oa, ea = a.communicate(timeout=TIMEOUT)
    assert a.returncode == 0 and _trained(oa) == N_CHUNKS, oa + ea
    _same_run(run, setup["ref"])
    assert tmp_files(tmp_path) == []


def test_a_failed_creation_leaves_the_empty_folder_as_it_was(tmp_path):
    """A creation that fails once the run's entries have started to move into an existing
    empty folder leaves it empty and the same folder; a failure of the lock's claim too."""
    from poisoncert import runsafe

    folder = tmp_path / "f"
    folder.mkdir()
    os.chmod(folder, 0o2770)
    was = _identity(folder)

    def fill(tmp: Path) -> None:
        (tmp / "a").mkdir()
        (tmp / "a" / "x").write_text("x")
        (tmp / "b").write_text("b")
        (tmp / "last").write_text("")

    real = os.rename

    def fails_on_last(src, dst, *a, **k):
        if Path(dst).name == "last":
            raise OSError(28, "No space left on device")
        return real(src, dst, *a, **k)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(runsafe.os, "rename", fails_on_last)
        with pytest.raises(RunError, match="No space left on device"):
            runsafe.create_locked(folder, fill, last="last")
    assert list(folder.iterdir()) == [] and _identity(folder) == was
    lock = runsafe.create_locked(folder, fill, last="last")
    try:
        assert sorted(p.name for p in folder.iterdir()) == [runs.LOCK, "a", "b", "last"]
        assert _identity(folder) == was and lock.folder == folder
        with pytest.raises(RunLockedError):
            runsafe.RunLock.acquire(folder)
    finally:
        lock.release()
