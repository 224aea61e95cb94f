"""Experiment config, run directories (atomic writes, resume) and the train/certify pipeline.

Most pipeline tests replace the training engine with a small deterministic learner
(nearest class centroid, ``_centroid_engine``) so they run in milliseconds; the tests marked
``engine`` train real models with ``poisoncert.training`` (tiny steps) to check that the
pipeline's guarantees (resume, chunking, workers) hold with the real engine too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from killing import kill_at_first_chunk  # tests/killing.py

from poisoncert import certify, experiment, runs, runsafe, selection
from poisoncert.config import (
    ConfigError,
    ExperimentConfig,
    config_hash,
    from_dict,
    load_config,
    parse_overrides,
    to_dict,
    to_yaml,
)
from poisoncert.runcheck import verify_run
from poisoncert.runs import RunDir, RunError

ROOT = Path(__file__).resolve().parents[1]


def _centroid_engine(cfg, prep, subsets, seeds, progress=None):
    """Nearest class centroid of each sub-dataset; -1 (abstain) on an empty one."""
    X = prep.x_train.reshape(len(prep.x_train), -1)
    Xt = prep.x_test.reshape(len(prep.x_test), -1)
    out = np.full((len(subsets), len(Xt)), -1, dtype=np.int16)
    for j, s in enumerate(subsets):
        if len(s) == 0:
            continue
        ys = prep.y_train[s]
        cls = np.unique(ys)
        cent = np.stack([X[s][ys == c].mean(axis=0) for c in cls])
        out[j] = cls[((Xt[:, None, :] - cent[None]) ** 2).sum(-1).argmin(axis=1)]
    return out, None


class _CentroidLearner:
    """A learner (``experiment.learners.Learner``) made of ``engine``: by default the
    centroid engine."""

    def __init__(self, engine=_centroid_engine):
        self.engine = engine

    def train_predict(self, data, subsets, seeds, progress=None):
        return self.engine(None, data, subsets, seeds, progress)


def use_engine(monkeypatch, engine=_centroid_engine) -> None:
    """Runs train with ``engine(cfg, data, subsets, seeds, progress)`` as their learner."""
    monkeypatch.setattr(experiment.learners, "make_learner",
                        lambda cfg, data, phase2=None: _CentroidLearner(engine))


@pytest.fixture
def engine(monkeypatch):
    """The centroid engine in place of poisoncert.training; records the seeds it trains."""
    calls = []

    def fake(cfg, prep, subsets, seeds, progress=None):
        calls.append(np.asarray(seeds).copy())
        return _centroid_engine(cfg, prep, subsets, seeds)

    use_engine(monkeypatch, fake)
    return calls


def small(**over) -> ExperimentConfig:
    """A small digits experiment (100 test points), with dotted overrides."""
    base = {"data": {"name": "digits", "test_limit": 100},
            "selection": {"scheme": "without_replacement", "ns": 40, "T": 30, "seed": 3},
            "training": {"model": "mlp", "steps": 5, "group_size": 4},
            "run": {"chunk_size": 8}}
    return from_dict(base, {k.replace("__", "."): v for k, v in over.items()})


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.name.startswith(runs._TMP_PREFIX)]


# --------------------------------------------------------------------------------------------
# Config


def test_default_config_is_valid_and_round_trips_through_yaml(tmp_path):
    cfg = ExperimentConfig()
    assert load_config(None) == cfg and cfg.selection.ns == 50 and cfg.T == 100
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)


def test_overrides_are_coerced_to_the_field_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"selection": {"scheme": "binomial", "ns": 20, "T": 9}}))
    cfg = load_config(path, ["--training.steps", "300", "--training.lr=1e-3",
                             "--training.balance", "false", "--data.classes", "1,7",
                             "--selection.ns", "null", "--selection.p", "0.25",
                             "--certify.rhos", "[5, 1, 1]", "--training.augment"])
    assert cfg.training.steps == 300 and cfg.training.lr == 1e-3
    assert cfg.training.balance is False and cfg.training.augment is True
    assert cfg.data.classes == [1, 7]
    assert cfg.selection.ns is None and cfg.selection.p == 0.25
    assert cfg.certify.rhos == [1, 5]


def test_aliases_are_canonicalised():
    cfg = small(selection__scheme="bagging", certify__model="p3", data__name="digits")
    assert cfg.selection.scheme == "with_replacement" and cfg.certify.model == "P3"


@pytest.mark.parametrize("overrides, words", [
    (["--training.step", "3"], ["'training.step'", "Did you mean 'training.steps'"]),
    (["--trainig.steps", "3"], ["'trainig'", "Did you mean 'training'"]),
    (["--steps", "3"], ["'steps'", "section.key"]),
    (["--selection.scheme", "bag"], ["'selection.scheme'", "'binomial'", "Got 'bag'"]),
    (["--training.steps", "abc"], ["'training.steps'", "an int", "Got 'abc'"]),
    (["--training.steps", "0"], ["'training.steps'", "[1, 2^53]", "Got 0"]),
    (["--selection.p", "2"], ["'selection.p'", "(0, 1)", "Got 2.0"]),
    (["--data.name", "imagenet"], ["'data.name'", "'mnist'", "Got 'imagenet'"]),
    (["--training.device", "tpu"], ["'training.device'", "'cuda'", "Got 'tpu'"]),
    (["--certify.method", "x"], ["'certify.method'", "'bonferroni'"]),
    (["--selection.scheme", "partition"], ["'selection.k'", "partition"]),
    (["--selection.scheme", "with_replacement", "--selection.ns", "null"],
     ["'selection.ns'", "with_replacement"]),
    (["--selection.p", "0.1", "--selection.ns", "5"], ["one of 'selection.ns' and 'selection.p'"]),
    (["--selection.ns", "5"], ["'selection.T'", "base classifiers", "Got None"]),
    (["--data.n_clean", "5", "--data.clean_fraction", "0.1"], ["At most one"]),
    (["--training.balance", "maybe"], ["'training.balance'", "boolean"]),
    (["training.steps", "3"], ["--section.key value"]),
    (["--training.rotation", "-5"], ["'training.rotation'", "[0, 180]", "Got -5"]),
    (["--training.scale", "1"], ["'training.scale'", "[0, 1)", "Got 1"]),
    (["--training.elastic", "x"], ["'training.elastic'", "Got 'x'"]),
    (["--training.lr_schedule", "step"], ["'training.lr_schedule'", "'cosine'", "Got 'step'"]),
])
def test_bad_config_values_give_one_clear_error(overrides, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    for w in words:
        assert w in str(e.value)


def test_a_number_with_an_exponent_is_a_number_in_a_config_file(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-3`` as text, so ``lr: 1e-3`` was refused ("must be a real
    number. Got '1e-3'") while ``--training.lr 1e-3`` was accepted (a user-path review)."""
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  lr: 1e-3\n  momentum: 9E-1\ncertify:\n  alpha: 1e-4\n"
                    "data:\n  name: digits\n")
    cfg = load_config(path)
    assert cfg.training.lr == 0.001 and cfg.certify.alpha == 1e-4
    assert cfg.training.lr == load_config(None, ["--training.lr", "1e-3"]).training.lr
    path.write_text('training:\n  model: "1e3"\n')  # quoted: text, as written
    with pytest.raises(ConfigError, match="'training.model'.*Got '1e3'"):
        load_config(path)
    # text shaped like such a number is written quoted, so a run's config.yaml reads back
    cfg = load_config(None, {"data.data_dir": "1e5"})
    path.write_text(to_yaml(cfg))
    assert load_config(path).data.data_dir == "1e5"


def test_a_selection_naming_no_scheme_and_no_size_takes_the_default_selection():
    """An empty config with ``--selection.T 8`` (a selection section with only ``T``) failed
    on ``selection.p``, a key the user never set; without a section it was the default
    (a user-path review). A section with a scheme or a size still states its own."""
    from poisoncert.config import DEFAULT_SELECTION, from_dict

    cfg = load_config(None, ["--selection.T", "8"])
    assert (cfg.selection.scheme, cfg.selection.ns, cfg.selection.T) == \
        (DEFAULT_SELECTION["scheme"], DEFAULT_SELECTION["ns"], 8)
    assert from_dict({"selection": {"seed": 3}}).selection.ns == DEFAULT_SELECTION["ns"]
    assert from_dict({"selection": {"scheme": "binomial", "p": 0.1, "T": 5}}).selection.ns \
        is None
    with pytest.raises(ConfigError, match="'selection.p'"):
        from_dict({"selection": {"scheme": "binomial", "T": 5}})


def test_unknown_yaml_key_and_unreadable_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match="'training.stepz'.*Did you mean 'training.steps'"):
        load_config(path)
    with pytest.raises(ConfigError, match="Cannot read the config file"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("data: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_parse_overrides_forms():
    got = parse_overrides(["--training.steps", "1", "--data.name=npz:a=b.npz",
                           "--training.augment", "--run.chunk-size", "4"])
    assert got == {"training.steps": "1", "data.name": "npz:a=b.npz",
                   "training.augment": "true", "run.chunk_size": "4"}


@pytest.mark.parametrize("words", [["--training.steps"], ["--training.steps", "--selection.T", "4"],
                                   ["--training.group-size"]])
def test_a_bare_option_of_a_key_that_is_no_boolean_is_refused(words):
    """``--training.steps`` with no value is the error of a missing value, not of 'true'."""
    name = words[0][2:].replace("-", "_")
    with pytest.raises(ConfigError, match=f"'{name}' parameter .* Got no value after "
                                          f"'{words[0]}' instead"):
        parse_overrides(words)


def test_config_hash_ignores_workers_and_certify_only():
    a = small()
    assert config_hash(a) == config_hash(small(training__workers=4, certify__alpha=0.01))
    assert config_hash(a) != config_hash(small(training__steps=6))
    assert config_hash(a) != config_hash(small(run__chunk_size=9))


def test_config_hash_ignores_phase2_steps_without_two_phase():
    assert config_hash(small()) == config_hash(small(training__phase2_steps=123))


def test_config_hash_of_runs_made_before_warps_is_unchanged():
    """A run directory written before the warp, schedule, deskew and model_kwargs keys existed
    (its config.yaml lacks them, and says save_weights: false, then the default) keeps its
    hash, so it still resumes; turning any of them on changes it."""
    cfg = small()
    assert cfg.execution.save_weights is None  # the default: on for torch models
    assert config_hash(cfg) == config_hash(small(training__save_weights=False))
    # the hash as the code before these keys computed it: the same JSON without them
    d = to_dict(cfg)
    d.pop("certify")
    for key in ("workers", "phase2_steps", "rotation", "scale", "shear", "elastic",
                "lr_schedule", "model_kwargs"):
        del d["training"][key]
    d["training"]["save_weights"] = False
    del d["data"]["deskew"]
    for section, key in (("selection", "d"), ("selection", "r"), ("run", "store_ranks"),
                         ("data", "edits"),  # issue 13's keys, left out at their defaults
                         ("training", "subset_rows")):  # and issue 11's
        del d[section][key]
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()
    for over in (dict(training__subset_rows=7), dict(training__rotation=5),
                 dict(training__scale=0.1), dict(training__shear=3), dict(training__elastic=0.5),
                 dict(training__lr_schedule="cosine"), dict(data__deskew=True)):
        assert config_hash(small(**over)) != config_hash(cfg), over


def test_example_configs_load_and_demo_yaml_is_the_embedded_demo():
    files = sorted((ROOT / "experiments").glob("*.yaml"))
    assert any(f.name == "demo.yaml" for f in files)
    for f in files:
        load_config(f)
    assert (ROOT / "experiments" / "demo.yaml").read_text() == experiment.DEMO_CONFIG


def test_data_dependent_errors_come_before_any_file(tmp_path, engine):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"'selection.ns'.*\[1, 1437\].*Got 5000"):
        experiment.train_run(small(selection__ns=5000), run, progress=False)
    with pytest.raises(ConfigError, match="'data.n_clean'"):
        experiment.train_run(small(data__n_clean=1437), run, progress=False)
    with pytest.raises(ConfigError, match="'data.clean_indices'"):
        experiment.train_run(small(data__clean_indices=[0, 5000]), run, progress=False)
    assert not run.exists() and engine == []


# --------------------------------------------------------------------------------------------
# Atomic writes and chunk ranges


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a.npy"
    with pytest.raises(RuntimeError):
        with runs.atomic_write(target) as f:
            f.write(b"partial")
            raise RuntimeError("killed")
    assert not target.exists() and tmp_files(tmp_path) == []
    runs.save_npy(target, np.arange(3))
    with pytest.raises(RuntimeError):
        with runs.atomic_write(target) as f:
            f.write(b"partial")
            raise RuntimeError("killed")
    assert np.array_equal(np.load(target), np.arange(3)) and tmp_files(tmp_path) == []


def test_failed_chunk_write_leaves_no_temp_file(tmp_path, monkeypatch):
    rd = RunDir(tmp_path)
    (tmp_path / runs.CHUNKS).mkdir()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        rd.write_chunk(0, start=0, stop=2, seeds=np.arange(2), sizes=np.arange(2),
                       predictions=np.zeros((2, 3)))
    assert list((tmp_path / runs.CHUNKS).iterdir()) == []


def _killed_writer(target: Path) -> None:
    """A process that writes ``target`` atomically and is SIGKILLed between the write and
    the rename (the fault hook): it leaves its temporary file beside ``target``."""
    src = str(Path(runs.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "POISONCERT_TEST_FAULT": f"write:{target.name}"}
    code = f"from poisoncert import runsafe; runsafe.save_text({str(target)!r}, 'torn')"
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=60)
    assert proc.returncode == -9


def test_a_killed_writers_temporary_file_is_removed_by_the_next_clean_write(tmp_path):
    """A SIGKILL while predict --out or delta --out wrote its file left a ``.tmp-*`` beside
    it for good (no run lock covers such a folder). The next write of the same file with
    ``clean=True`` removes it; a live writer's temporary file stays: one of a live process,
    one whose flock is held (a writer on another host sharing the folder), and those of other
    files."""
    import fcntl

    target = tmp_path / "rows.csv"
    target.write_text("old\n")
    _killed_writer(target)
    left = tmp_files(tmp_path)
    assert len(left) == 1 and target.read_text() == "old\n"
    live = tmp_path / f".tmp-rows.csv.{os.getpid()}.abc"  # this process: alive
    held = tmp_path / ".tmp-rows.csv.999999999.abc"  # no such process, but its flock held
    other = tmp_path / ".tmp-other.csv.999999999.abc"
    for p in (live, held, other):
        p.write_text("part")
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        runs.save_text(target, "new\n", clean=True)
        assert target.read_text() == "new\n"
        assert sorted(tmp_files(tmp_path)) == sorted([live, held, other])
        # a run's lock holder removes every leftover in the run but a held one
        runsafe.remove_leftovers(tmp_path)
        assert tmp_files(tmp_path) == [held]
    finally:
        os.close(fd)
    runsafe.remove_leftovers(tmp_path)
    assert tmp_files(tmp_path) == []


def test_a_writer_holds_its_temporary_files_flock_until_it_is_renamed(tmp_path):
    """What tells a live writer from a killed one where the pid cannot (another host): the
    flock on its temporary file, held from its creation until after the rename."""
    target = tmp_path / "x.bin"
    with runs.atomic_write(target) as f:
        (tmp,) = tmp_files(tmp_path)
        assert tmp.name.startswith(f".tmp-x.bin.{os.getpid()}.")
        assert runsafe._held(str(tmp))
        f.write(b"x")
    assert target.read_bytes() == b"x" and tmp_files(tmp_path) == []


def test_a_cleaner_between_a_temporary_files_creation_and_its_lock_costs_no_write(
        tmp_path, monkeypatch):
    """A review's case: a cleaner (remove_leftovers under a run's lock, or the next clean
    write) that looked at a writer's new temporary file before the writer took its flock
    found it free and removed it; the writer then wrote into the removed file and failed
    at its rename ('Cannot write ...: No such file or directory'), or, the cleaner's lock
    held that instant, went on without its own flock. Now the writer makes another file
    and holds its lock; the write succeeds."""
    import tempfile

    mkstemp = tempfile.mkstemp
    calls = []

    def cleaned_at_once(*a, **kw):  # a cleaner that runs right after the file appears
        fd, name = mkstemp(*a, **kw)
        calls.append(name)
        if len(calls) == 1:
            assert runsafe.remove_leftovers(tmp_path) == [Path(name)]
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", cleaned_at_once)
    runs.save_text(tmp_path / "rows.csv", "new\n")
    assert (tmp_path / "rows.csv").read_text() == "new\n" and len(calls) == 2
    assert tmp_files(tmp_path) == []


def test_a_cleaners_instant_on_a_new_temporary_file_does_not_leave_it_unlocked(
        tmp_path, monkeypatch):
    """The writer's one non-blocking try of its flock failed while a cleaner looked at the
    new file (held its lock for an instant), and the file went unlocked for the rest of its
    write: the next cleaner took it for a killed writer's. The writer now waits the instant
    out (a second at most)."""
    import fcntl
    import tempfile
    import threading

    mkstemp = tempfile.mkstemp

    def looked_at(*a, **kw):  # a cleaner holding the new file's lock for an instant
        fd, name = mkstemp(*a, **kw)
        look = os.open(name, os.O_RDONLY)
        fcntl.flock(look, fcntl.LOCK_SH | fcntl.LOCK_NB)
        threading.Timer(0.05, os.close, (look,)).start()
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", looked_at)
    with runs.atomic_write(tmp_path / "x.bin") as f:
        (tmp,) = tmp_files(tmp_path)
        time.sleep(0.2)  # the instant is over: the writer's own lock is what is left
        assert runsafe._held(str(tmp))  # so no cleaner takes it for a killed writer's
        assert runsafe.remove_leftovers(tmp_path) == []
        f.write(b"x")
    assert (tmp_path / "x.bin").read_bytes() == b"x" and tmp_files(tmp_path) == []


def test_a_live_writers_temporary_file_looks_held_where_flock_is_a_byte_range_lock(
        tmp_path, monkeypatch):
    """A review's case: on NFS, Linux emulates flock with byte-range locks, and an
    exclusive one on a file opened read-only fails with EBADF (flock(2)). The check of a
    temporary file opened it read-only and asked for an exclusive lock, so on NFS every live
    writer's file looked free: remove_leftovers and the next clean write (a writer on another
    host sharing the folder) removed it under the writer. The check now asks for a shared
    lock, which a read-only file takes and the writer's exclusive lock refuses."""
    import errno
    import fcntl

    real = fcntl.flock

    def nfs_flock(fd, op):  # flock(2) on NFS: an exclusive lock needs a file open to write
        if op & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real(fd, op)

    monkeypatch.setattr(runsafe.fcntl, "flock", nfs_flock)
    target = tmp_path / "rows.csv"
    with runs.atomic_write(target) as f:
        (tmp,) = tmp_files(tmp_path)
        assert runsafe._held(str(tmp))
        assert runsafe.remove_leftovers(tmp_path) == []
        f.write(b"rows\n")
    assert target.read_bytes() == b"rows\n"


def test_atomic_files_have_ordinary_permissions(tmp_path):
    runs.save_text(tmp_path / "x.txt", "hi")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("T, size, group, expect", [
    (10, 4, 1, [(0, 4), (4, 8), (8, 10)]),
    (10, 3, 2, [(0, 4), (4, 8), (8, 10)]),
    (5, 100, 1, [(0, 5)]),
])
def test_chunk_ranges(T, size, group, expect):
    assert runs.chunk_ranges(T, size, group) == expect


def test_votes_from_predictions_skip_abstentions():
    p = np.array([[0, 1, -1], [0, 0, -1], [2, 1, -1]], dtype=np.int16)
    assert runs.votes_from_predictions(p, 3).tolist() == [[2, 0, 1], [1, 2, 0], [0, 0, 0]]


@pytest.mark.parametrize("p, given", [
    (np.array([[5]] * 6 + [[0]] * 4), "int64 values from 0 to 5"),  # a class beyond n_classes
    (np.array([[-2, 0]]), "int64 values from -2 to 0"),
    (np.array([[0.0, 1.0]]), "float64 values from 0.0 to 1.0"),
])
def test_votes_from_predictions_refuses_what_it_cannot_count(p, given):
    """A class id with no column used to be dropped: six votes for class 5 of 3 vanished and
    class 0 was certified from the other four."""
    with pytest.raises(ValueError, match=r"'predictions' parameter of votes_from_predictions "
                       r"must be integer class indices in \[0, 2\] or -1 \(abstain\)\. Got '"
                       + given + "' instead"):
        runs.votes_from_predictions(p, 3)


# --------------------------------------------------------------------------------------------
# Train: layout, resume, chunking


def test_train_run_layout_and_contents(tmp_path, engine):
    cfg = small()
    res = experiment.train_run(cfg, tmp_path / "run", progress=False)
    rd = RunDir(tmp_path / "run")
    for name in (runs.CONFIG, runs.MANIFEST, runs.SEEDS, runs.PREDICTIONS, runs.VOTES,
                 runs.LABELS, runs.SUBSET_SIZES, runs.CLEAN_INDICES):
        assert (rd / name).is_file(), name
    assert sorted(p.name for p in rd.chunks_dir.iterdir()) == [
        f"chunk-{i:05d}.npz" for i in range(4)]
    assert tmp_files(rd.path) == []
    pred = np.load(rd / runs.PREDICTIONS)
    assert pred.dtype == np.int16 and pred.shape == (30, 100)
    assert np.array_equal(pred, res.predictions)
    assert np.array_equal(np.load(rd / runs.VOTES), runs.votes_from_predictions(pred, 10))
    assert np.array_equal(np.load(rd / runs.SEEDS), selection.model_seeds(3, 30))
    assert np.all(np.load(rd / runs.SUBSET_SIZES) == 40)
    assert load_config(rd / runs.CONFIG) == cfg
    man = json.loads((rd / runs.MANIFEST).read_text())
    assert man["config_hash"] == config_hash(cfg)
    assert man["data"]["n"] == 1437 and man["data"]["n_test"] == 100
    assert man["data"]["sources"][0]["sha256"]
    assert {"python", "numpy", "torch", "poisoncert"} <= set(man["versions"])
    assert man["git"] is None or {"commit", "dirty"} <= set(man["git"])
    assert man["finished"] and man["started"]
    assert 0.5 < res.accuracy <= 1.0 and res.chunks_trained == 4
    # what it trained on, in words, and again for each session that resumes it
    from poisoncert.runmanifest import device_name

    here = {"type": "cpu", "names": [device_name("cpu")]}
    assert man["device"] == here and "resumed_on" not in man and here["names"][0]
    before = (rd / runs.MANIFEST).read_bytes()  # a finished run with nothing to train:
    again = experiment.train_run(cfg, tmp_path / "run", progress=False)  # left as it is
    assert (rd / runs.MANIFEST).read_bytes() == before and again.chunks_trained == 0
    assert np.array_equal(again.predictions, res.predictions)
    (rd.chunks_dir / "chunk-00003.npz").unlink()  # a session that resumes it
    experiment.train_run(cfg, tmp_path / "run", progress=False)
    man = json.loads((rd / runs.MANIFEST).read_text())
    assert man["device"] == here and man["resumed_on"] == [here] and len(man["resumed"]) == 1


def test_device_record_names_local_devices_and_leaves_remote_ones_out(monkeypatch):
    from poisoncert import runmanifest

    monkeypatch.setattr(runmanifest, "device_name", lambda d: f"name of {d}")
    assert runmanifest.device_record("cuda", ["cuda:0", "cuda:1"]) == {
        "type": "cuda", "names": ["name of cuda:0", "name of cuda:1"]}
    assert runmanifest.device_record("cuda:1") == {"type": "cuda", "names": ["name of cuda:1"]}
    assert runmanifest.device_record("cuda", local=False) == {"type": "cuda", "names": None}


def test_known_clean_part_joins_every_subset(tmp_path, engine):
    cfg = small(data__n_clean=100, selection__scheme="binomial", selection__ns=30)
    prep = experiment.split_data(cfg.data)
    assert prep.n == 1337 and prep.clean_idx.size == 100
    assert np.intersect1d(prep.clean_idx, prep.poison_idx).size == 0
    seeds = selection.model_seeds(3, 20)
    subsets, sizes = experiment.subset_plan(cfg.selection, prep).subsets(0, seeds)
    for s, k in zip(subsets, sizes, strict=True):
        assert np.isin(prep.clean_idx, s).all() and len(s) == 100 + k
    assert len(set(sizes.tolist())) > 1  # binomial sizes vary
    res = experiment.train_run(cfg, tmp_path / "run", progress=False)
    assert res.n == 1337
    assert np.array_equal(np.load(tmp_path / "run" / runs.CLEAN_INDICES), prep.clean_idx)
    assert np.array_equal(res.subset_sizes[:20], sizes)
    rows = _read_csv(tmp_path / "run" / runs.CLASSIFIERS)
    assert len(rows) == 30 and [int(r["subset_size"]) for r in rows[:20]] == sizes.tolist()
    assert int(rows[3]["seed"]) == selection.model_seed(3, 3)
    acc = [float(r["test_accuracy"]) for r in rows]
    # classifiers.csv holds '.6g' (at most 5e-7 off for values in [0, 1])
    assert np.allclose(acc, (res.predictions == res.labels).mean(axis=1), rtol=0, atol=1e-6)


def test_resume_after_a_fault_is_bit_identical(tmp_path, engine, monkeypatch):
    cfg = small()
    full = experiment.train_run(cfg, tmp_path / "full", progress=False)
    engine.clear()
    written = []
    real_write = RunDir.write_chunk

    def dying_write(self, chunk_id, **kw):
        if len(written) == 2:
            raise KeyboardInterrupt("killed after two chunks")
        written.append(chunk_id)
        return real_write(self, chunk_id, **kw)

    monkeypatch.setattr(RunDir, "write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt) as stop:
        experiment.train_run(cfg, tmp_path / "run", progress=False)
    # what is kept: the two chunks written (16 of 30), in the exception the command prints
    assert isinstance(stop.value, experiment.TrainInterrupted)
    assert (stop.value.saved, stop.value.T, stop.value.chunk_size) == (16, 30, 8)
    assert str(stop.value).startswith("interrupted: 16 of 30 base classifiers are saved in")
    monkeypatch.setattr(RunDir, "write_chunk", real_write)
    assert not (tmp_path / "run" / runs.PREDICTIONS).exists()
    engine.clear()
    res = experiment.train_run(cfg, tmp_path / "run", progress=False)
    assert (res.chunks_trained, res.chunks_skipped) == (2, 2)
    assert [int(s[0]) for s in engine] == [int(selection.model_seed(3, 16)),
                                           int(selection.model_seed(3, 24))]
    assert np.array_equal(res.predictions, full.predictions)
    assert np.array_equal(np.load(tmp_path / "run" / runs.PREDICTIONS), full.predictions)
    man = json.loads((tmp_path / "run" / runs.MANIFEST).read_text())
    assert len(man["resumed"]) == 1
    # a finished run resumes to the same result without training
    engine.clear()
    again = experiment.train_run(cfg, tmp_path / "run", progress=False)
    assert engine == [] and np.array_equal(again.predictions, full.predictions)


_KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_runs import _CentroidLearner, _centroid_engine, small
from poisoncert import experiment

def slow(*a, **k):
    time.sleep(0.4)
    return _centroid_engine(*a)

experiment.learners.make_learner = lambda *a, **k: _CentroidLearner(slow)
experiment.train_run(small(), {run!r}, progress=False)
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path, engine):
    run = tmp_path / "run"
    script = tmp_path / "kill.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(Path(__file__).parent), run=str(run)))
    proc = subprocess.Popen([sys.executable, str(script)])
    assert kill_at_first_chunk(proc, run, timeout=60, poll=0.02)
    assert not (run / runs.PREDICTIONS).exists()
    res = experiment.train_run(small(), run, progress=False)
    assert res.chunks_skipped >= 1
    full = experiment.train_run(small(), tmp_path / "full", progress=False)
    assert np.array_equal(res.predictions, full.predictions)
    assert tmp_files(run) == [] or all(p.parent == run / runs.CHUNKS for p in tmp_files(run))


def test_predictions_do_not_depend_on_chunk_size(tmp_path, engine):
    a = experiment.train_run(small(run__chunk_size=7), tmp_path / "a", progress=False)
    b = experiment.train_run(small(run__chunk_size=100), tmp_path / "b", progress=False)
    assert np.array_equal(a.predictions, b.predictions)


def test_another_config_is_refused_and_workers_may_change(tmp_path, engine, monkeypatch):
    # two workers are refused on a one-CPU machine; nothing is trained here (the engine is
    # recorded, and every chunk is done)
    monkeypatch.setattr("poisoncert.executors.usable_cpus", lambda: 2)
    experiment.train_run(small(), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / runs.CONFIG).read_text()
    engine.clear()
    with pytest.raises(RunError, match=r"another config \(training.steps: 5 -> 6\)\."):
        experiment.train_run(small(training__steps=6), tmp_path / "run", progress=False)
    # the refusal names only what stops the resume, not the workers or certify settings
    with pytest.raises(RunError, match=r"another config \(training.steps: 5 -> 6\)\."):
        experiment.train_run(small(training__steps=6, training__workers=2,
                                   certify__alpha=0.01), tmp_path / "run", progress=False)
    # nor training.save_weights null -> true, which resumes (both keep the weights)
    with pytest.raises(RunError, match=r"another config \(training.steps: 5 -> 6\)\."):
        experiment.train_run(small(training__steps=6, training__save_weights=True),
                             tmp_path / "run", progress=False)
    assert engine == [] and (tmp_path / "run" / runs.CONFIG).read_text() == before
    res = experiment.train_run(small(training__workers=2), tmp_path / "run", progress=False)
    assert res.chunks_trained == 0


def test_unwritable_run_dir_fails_before_training(tmp_path, engine):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(RunError, match="Cannot write the run directory.*not a folder"):
        experiment.train_run(small(), blocker / "run", progress=False)
    assert engine == [] and blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_non_empty_folder_that_is_not_a_run_is_refused(tmp_path, engine):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RunError, match="exists and is not empty"):
        experiment.train_run(small(), tmp_path, progress=False)
    assert engine == []


def test_a_run_whose_config_was_deleted_is_named_so_not_as_any_full_folder(tmp_path, engine):
    """A run folder (its manifest there) without its config.yaml said only 'exists and is
    not empty'; now that the run's config is missing and the two ways on."""
    (tmp_path / runs.MANIFEST).write_text("{}")
    (tmp_path / "votes.npy").write_bytes(b"x")
    with pytest.raises(RunError, match=r"holds a run whose config\.yaml is missing"):
        experiment.train_run(small(), tmp_path, progress=False)
    assert engine == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        runs.MANIFEST, "votes.npy"]


def test_the_current_folder_as_a_new_run_is_refused_before_training(tmp_path, engine,
                                                                    monkeypatch):
    """``--run-dir .`` in an empty folder trained nothing and said 'Cannot write the run
    directory '.': Device or resource busy' (the run is renamed onto its folder); now one
    line before any work, and nothing left beside it."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    with pytest.raises(RunError, match=r"'\.' is the current folder.*--run-dir run"):
        experiment.train_run(small(), ".", progress=False)
    assert engine == [] and list(here.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_unwritable_run_dir_as_non_root(tmp_path, engine):
    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(RunError, match="not writable"):
        experiment.train_run(small(), ro / "run", progress=False)
    assert engine == [] and list(ro.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Certify


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_certify_run_outputs_agree_with_certify(tmp_path, engine):
    cfg = small(selection__scheme="binomial", selection__ns=40, data__n_clean=37)
    res = experiment.train_run(cfg, tmp_path / "run", progress=False)
    cert, table = experiment.certify_run(tmp_path / "run", rhos=[0, 1, 3, 100])
    direct = certify.certify(res.votes, scheme="binomial", n=1400, ns=40, model="P6",
                             alpha=0.001, method=cfg.certify.method, T=30)
    assert cert.method == direct.method
    assert np.array_equal(cert.radius, direct.radius)
    assert np.array_equal(cert.prediction, direct.prediction)
    assert table.rho.tolist() == [0, 1, 3, 100]
    # the same function on equal certificates: equal
    assert np.array_equal(table.accuracy, certify.certified_accuracy(direct, res.labels,
                                                                     [0, 1, 3, 100]))
    rows = _read_csv(tmp_path / "run" / runs.CERTIFICATES)
    assert len(rows) == 100
    for col in ("index", "label", "prediction", "correct", "radius", "p1_lower", "p2_upper",
                "top1_class", "top1_votes", "top2_class", "top2_votes", "abstain_votes",
                "scheme", "n", "alpha", "method", "model"):
        assert col in rows[0], col
    assert [int(r["radius"]) for r in rows] == direct.radius.tolist()
    assert [int(r["label"]) for r in rows] == res.labels.tolist()
    curve = _read_csv(tmp_path / "run" / runs.CERTIFIED_ACCURACY)
    rho = np.array([int(r["rho"]) for r in curve])
    acc = np.array([float(r["certified_accuracy"]) for r in curve])
    assert np.allclose(acc, certify.certified_accuracy(direct, res.labels, rho), rtol=0,
                       atol=1e-6)  # '.6g' in the CSV
    assert rho[0] == 0 and acc[-1] == 0 and np.all(np.diff(acc) <= 0)
    assert (tmp_path / "run" / runs.CERTIFIED_ACCURACY_PNG).stat().st_size > 1000
    summary = json.loads((tmp_path / "run" / runs.CERTIFY_JSON).read_text())
    assert summary["n"] == 1400 and summary["method"] == direct.method == "pairwise"
    # options override the run's certify section
    cert3, _ = experiment.certify_run(tmp_path / "run", model="P1", alpha=0.01, plot=False)
    assert cert3.model == "P1" and cert3.alpha == 0.01


def test_certificates_name_the_predicted_class(tmp_path, engine):
    """certificates.csv's ``class`` and ``class_name``: the data set's id and name of the
    prediction (``label``, ``prediction`` and ``top*_class`` are class indices); empty where
    the certificate abstains."""
    from poisoncert.experiment.certify import certificate_rows

    res = experiment.train_run(small(data__classes=[8, 3]), tmp_path / "run", progress=False)
    cert, _ = experiment.certify_run(tmp_path / "run", plot=False)
    rows = _read_csv(tmp_path / "run" / runs.CERTIFICATES)
    assert list(rows[0])[-2:] == ["class", "class_name"]
    ids = {0: "8", 1: "3", -1: ""}  # index k is the k-th class given; -1: abstain
    assert {r["class"] for r in rows} >= {"3", "8"} and len({r["label"] for r in rows}) == 2
    for r, p, y in zip(rows, cert.prediction, res.labels, strict=True):
        assert int(r["prediction"]) == p and int(r["label"]) == y
        assert r["class"] == r["class_name"] == ids[p]
    # an abstaining prediction has neither
    cert.prediction[1] = -1
    cert.prediction[0] = max(cert.prediction[0], 0)
    votes = np.load(tmp_path / "run" / runs.VOTES)
    got = certificate_rows(cert, votes, None, 30, classes=(3, 8), class_names=("three", "eight"))
    assert (got[1]["class"], got[1]["class_name"]) == ("", "")
    p0 = int(cert.prediction[0])
    assert (got[0]["class"], got[0]["class_name"]) == ((3, 8)[p0], ("three", "eight")[p0])


def test_certify_votes_counts_abstaining_classifiers_in_T():
    """A run's certificate uses its T classifiers, also where some abstained (an empty
    binomial draw) and the votes of a row sum to less: those count against every class."""
    from poisoncert.experiment.certify import certify_votes
    from poisoncert.stats import clopper_pearson_lower

    cfg = small(selection__scheme="binomial", selection__ns=None, selection__p=0.02)
    votes = np.array([[20, 2], [25, 0], [30, 0]])  # 8, 5 and 0 of the 30 abstained
    cert = certify_votes(cfg, 2000, votes, alpha=0.01, method="bonferroni", model="P6")
    assert cert.T.tolist() == [30, 30, 30]
    assert cert.p1_lower[0] == clopper_pearson_lower(20, 30, 0.005)
    want = certify.certify(votes, scheme="binomial", n=2000, p=0.02, alpha=0.01,
                           method="bonferroni", T=30)
    np.testing.assert_array_equal(cert.radius, want.radius)
    assert cert.radius[1] < cert.radius[2]


def test_certify_partition_uses_dpa(tmp_path, engine):
    cfg = small(selection__scheme="partition", selection__ns=None, selection__T=None,
                selection__k=20)
    res = experiment.train_run(cfg, tmp_path / "run", progress=False)
    assert res.T == 20 and res.subset_sizes.sum() == 1437
    cert, table = experiment.certify_run(tmp_path / "run", rhos=[0, 1])
    direct = certify.dpa_certify(res.votes, model="P6")
    assert np.array_equal(cert.radius, direct.radius)
    assert table.accuracy[0] == certify.certified_accuracy(direct, res.labels, 0)


def test_certify_an_unfinished_run_is_a_clear_error(tmp_path, engine):
    with pytest.raises(RunError, match="not a poisoncert run"):
        experiment.certify_run(tmp_path)


# --------------------------------------------------------------------------------------------
# With the real training engine


def _has_engine() -> bool:
    try:
        from poisoncert import training  # noqa: F401
    except ImportError:
        return False
    return hasattr(training, "train_predict")


engine_only = pytest.mark.skipif(not _has_engine(), reason="poisoncert.training not available")


@engine_only
def test_save_weights_null_and_true_resume_each_other_and_false_is_refused(tmp_path,
                                                                          monkeypatch):
    """training.save_weights null keeps a torch model's weights, as true does: a run started
    with one resumes under the other (before: refused as another config), keeps its own
    config and verifies; false, which keeps none, is refused with the reason."""
    cfg = small(selection__T=8, training__steps=2, run__chunk_size=4, data__test_limit=20)
    assert cfg.execution.save_weights is None and cfg.keeps_weights
    real_write = RunDir.write_chunk

    def dying_write(self, chunk_id, **kw):
        if chunk_id > 0:
            raise KeyboardInterrupt
        return real_write(self, chunk_id, **kw)

    for first, then in ((None, True), (True, None)):
        run = tmp_path / f"run_{first}"
        monkeypatch.setattr(RunDir, "write_chunk", dying_write)
        with pytest.raises(KeyboardInterrupt):
            experiment.train_run(small(selection__T=8, training__steps=2, run__chunk_size=4,
                                       data__test_limit=20, training__save_weights=first),
                                 run, progress=False)
        monkeypatch.setattr(RunDir, "write_chunk", real_write)
        before = (run / runs.CONFIG).read_text()
        with pytest.raises(RunError, match="keeps its classifiers' weights and this config "
                                           "does not"):
            experiment.train_run(small(selection__T=8, training__steps=2, run__chunk_size=4,
                                       data__test_limit=20, training__save_weights=False),
                                 run, progress=False)
        res = experiment.train_run(small(selection__T=8, training__steps=2, run__chunk_size=4,
                                         data__test_limit=20, training__save_weights=then),
                                   run, progress=False)
        assert (res.chunks_trained, res.chunks_skipped) == (1, 1)
        assert (run / runs.CONFIG).read_text() == before
        assert verify_run(RunDir(run))["verified"]
        assert len(list((run / "weights").glob("chunk-*.safetensors"))) == 2


def test_real_engine_resume_chunking_and_workers_agree(tmp_path, monkeypatch):
    cfg = small(selection__T=8, training__steps=3, run__chunk_size=4, data__test_limit=50)
    full = experiment.train_run(cfg, tmp_path / "full", progress=False)
    assert full.predictions.shape == (8, 50) and full.predictions.max() < 10
    real_write = RunDir.write_chunk

    def dying_write(self, chunk_id, **kw):
        if chunk_id > 0:
            raise KeyboardInterrupt
        return real_write(self, chunk_id, **kw)

    monkeypatch.setattr(RunDir, "write_chunk", dying_write)
    with pytest.raises(KeyboardInterrupt):
        experiment.train_run(cfg, tmp_path / "run", progress=False)
    monkeypatch.setattr(RunDir, "write_chunk", real_write)
    resumed = experiment.train_run(cfg, tmp_path / "run", progress=False)
    assert resumed.chunks_skipped == 1
    assert np.array_equal(resumed.predictions, full.predictions)
    g = cfg.training.models_per_group
    other = experiment.train_run(small(selection__T=8, training__steps=3, data__test_limit=50,
                                     run__chunk_size=max(g, 8)),
                               tmp_path / "chunk8", progress=False)
    assert np.array_equal(other.predictions, full.predictions)
    from poisoncert.executors import LocalExecutor

    two = experiment.train_run(cfg, tmp_path / "two", executor=LocalExecutor(2),
                             progress=False)
    assert np.array_equal(two.predictions, full.predictions)


def test_local_executor_in_process_and_pool_agree():
    from poisoncert.executors import Executor, LocalExecutor

    one, two = LocalExecutor(1), LocalExecutor(2)
    assert isinstance(one, Executor) and isinstance(two, Executor)
    assert list(one.map_chunks(abs, [-1, -2, -3])) == [1, 2, 3]
    assert sorted(two.map_chunks(abs, [-1, -2, -3])) == [1, 2, 3]
    with pytest.raises(ValueError, match="'workers' parameter of LocalExecutor"):
        LocalExecutor(0)


@engine_only
def test_engine_settings_are_checked_before_any_file(tmp_path):
    import torch

    run = tmp_path / "run"
    cases = [({"training.model": "lenet5"}, "'training.model'.*shape \\(1, 8, 8\\)"),
             ({"training.model": "sklearn:nope"}, "'training.model'.*'sklearn:knn'"),
             ({"training.model": "sklearn:knn", "training.save_weights": True},
              "'training.save_weights'"),
             ({"training.optimizer": "rmsprop"}, "'training.optimizer' parameter of the config"),
             ({"training.momentum": 1.0}, "'training.momentum' parameter of the config")]
    if not torch.cuda.is_available():
        cases.append(({"training.device": "cuda"}, "'training.device'.*no CUDA"))
    for over, pattern in cases:
        with pytest.raises(ConfigError, match=pattern):
            experiment.train_run(small(**{k.replace(".", "__"): v for k, v in over.items()}),
                               run, progress=False)
    assert not run.exists()


@engine_only
def test_sklearn_learner_and_saved_weights(tmp_path):
    from poisoncert import training

    res = experiment.train_run(small(training__model="sklearn:svm", selection__T=10),
                             tmp_path / "svm", progress=False)
    assert res.predictions.shape == (10, 100) and res.accuracy > 0.7
    cfg = small(selection__T=6, training__steps=2, training__save_weights=True,
                run__chunk_size=4, data__test_limit=10)
    experiment.train_run(cfg, tmp_path / "w", progress=False)
    files = sorted((tmp_path / "w" / runs.WEIGHTS).iterdir())
    assert [f.name for f in files] == ["chunk-00000.safetensors", "chunk-00001.safetensors"]
    assert [len(training.load_weights(f)) for f in files] == [4, 2]


def test_a_worker_that_loads_other_data_refuses_its_chunk(tmp_path):
    """Workers (local processes, Ray tasks) load the data themselves; the run's manifest, its
    n and its test labels are the driver's. A worker that finds other arrays (another file at
    the same path on a node, a file replaced while the run trains) must refuse the chunk, not
    train on them: their votes would be certified for a training set and test points they
    never saw."""
    import pickle

    from poisoncert.experiment.split import split_data
    from poisoncert.experiment.train import ChunkTrainer

    rng = np.random.default_rng(0)

    def write(path):
        x = rng.integers(0, 256, (60, 1, 4, 4)).astype(np.uint8)
        y = np.arange(60) % 2
        np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])

    path = tmp_path / "d.npz"
    write(path)
    cfg = small(data__name=f"npz:{path}", data__test_limit=None, selection__ns=5,
                selection__T=4, training__model="sklearn:naive_bayes")
    data = split_data(cfg.data)
    ranges = runs.chunk_ranges(cfg.T, cfg.run.chunk_size, 1)
    trainer = ChunkTrainer(cfg, ranges, experiment.learners.make_learner(cfg, data),
                           data=data)
    worker = pickle.loads(pickle.dumps(trainer))  # what an executor's worker gets: no data
    assert worker.data is None
    np.testing.assert_array_equal(worker(0).predictions, trainer(0).predictions)
    write(path)  # other arrays of the same shapes and classes at the same path
    worker = pickle.loads(pickle.dumps(trainer))
    with pytest.raises(RunError, match=r"this worker process loaded .* is not the run's"):
        worker(0)


@pytest.mark.parametrize("over, expect", [
    (["--selection.scheme", "knn", "--selection.k", "3"], ("knn", None, None, 3, None)),
    (["--selection.scheme", "rnn", "--selection.r", "3"], ("rnn", None, None, None, None)),
    (["--selection.scheme", "partition", "--selection.k", "10"],
     ("partition", None, None, 10, None)),
    (["--selection.scheme", "fa", "--selection.k", "10", "--selection.d", "2"],
     ("finite_aggregation", None, None, 10, None)),
    (["--selection.scheme", "binomial"], ("binomial", 50, None, None, 500)),
    (["--selection.scheme", "binomial", "--selection.p", "0.05"],
     ("binomial", None, 0.05, None, 500)),
    (["--selection.p", "0.05", "--selection.scheme", "bernoulli"],
     ("binomial", None, 0.05, None, 500)),
])
def test_switching_the_scheme_on_the_command_line_drops_the_files_keys_it_does_not_take(
        over, expect):
    """``train experiments/demo.yaml --selection.scheme knn --selection.k 3`` was refused on
    the file's ``T: 500``, then (after ``--selection.T null``) on its ``ns: 50``: the user found
    the keys to null one error at a time, and the same for partition, finite_aggregation,
    rnn and binomial with ``--selection.p`` (a fresh-eyes review). The command line wins:
    the file's keys the new scheme does not take give way."""
    s = load_config(ROOT / "experiments" / "demo.yaml", over).selection
    assert (s.scheme, s.ns, s.p, s.k, s.T) == expect


def test_a_scheme_switch_keeps_what_the_command_line_gives_and_what_stays_valid():
    """Only the file's values give way, and only those the overrides contradict: a value
    given on the command line is still checked, a config that was valid keeps its values
    (and hash), and a ``k`` that counts something else under the new scheme (partition's
    parts, knn's neighbours) is not carried over."""
    demo = ROOT / "experiments" / "demo.yaml"
    agg = ROOT / "experiments" / "mnist_agg.yaml"
    with pytest.raises(ConfigError, match=r"'selection.T'.*knn.*Got 500 instead"):
        load_config(demo, ["--selection.scheme", "knn", "--selection.k", "3",
                           "--selection.T", "500"])
    with pytest.raises(ConfigError, match=r"'selection.ns'.*'selection.p'"):
        load_config(demo, ["--selection.scheme", "binomial", "--selection.p", "0.05",
                           "--selection.ns", "50"])
    with pytest.raises(ConfigError, match=r"'selection.k'.*knn.*neighbours.*Got None") as e:
        load_config(agg, ["--selection.scheme", "knn"])  # not the file's 1200 parts
    # the refusal names the file's k that gave way (it said "Got None" for a key the file
    # gives), in its one line
    assert "config file's selection.k (1200), run.store_ranks (True) are not carried" \
        in str(e.value) \
        and "\n" not in str(e.value)
    # ... and only where the refusal is of the section that gave way
    with pytest.raises(ConfigError, match=r"'training.lr'") as e:
        load_config(agg, ["--selection.scheme", "knn", "--selection.k", "3",
                          "--training.lr", "1e300"])
    assert "carried over" not in str(e.value), str(e.value)
    cfg = load_config(agg, ["--selection.scheme", "knn", "--selection.k", "100"])
    assert (cfg.selection.k, cfg.run.store_ranks) == (100, False)
    cfg = load_config(agg, ["--selection.scheme", "fa", "--selection.d", "2"])
    assert (cfg.selection.k, cfg.selection.d, cfg.run.store_ranks) == (1200, 2, True)
    cfg = load_config(agg, ["--selection.k", "600"])  # the file's T (none here) follows k
    assert cfg.T == 600
    with pytest.raises(ConfigError, match=r"'run.store_ranks'"):
        load_config(agg, ["--selection.scheme", "wr", "--selection.ns", "50",
                          "--selection.T", "8", "--run.store_ranks", "true"])
    with pytest.raises(ConfigError, match=r"'selection.T'.*an int >= 1"):
        load_config(agg, ["--selection.scheme", "wr", "--selection.ns", "50"])
    base = load_config(demo)
    same = load_config(demo, ["--selection.scheme", "without_replacement",
                              "--selection.T", "500"])
    assert config_hash(same) == config_hash(base)
    # a file that is inconsistent by itself stays refused
    with pytest.raises(ConfigError, match=r"'selection.T'.*partition"):
        from_dict({"selection": {"scheme": "partition", "k": 4, "T": 9}}, {"selection.seed": 1})


@pytest.mark.parametrize("selection, scheme, expect", [
    ({"k": 10}, "partition", (10, None)), ({"scheme": None, "k": 10}, "knn", (10, None)),
    ({"k": 10, "d": 2}, "finite_aggregation", (10, 2)),
])
def test_a_file_that_names_no_scheme_keeps_its_k_for_the_command_lines_scheme(
        selection, scheme, expect):
    """A file giving ``selection.k`` but no scheme, trained with ``--selection.scheme
    partition``, loaded as partition with k = 10 before the scheme switch's give-way; the
    give-way then dropped the file's k (the file's scheme read as binomial, whose k counts
    nothing, so not the new scheme's) and refused the config with "Got None" for the k the
    file gives (a fresh-eyes review). Its k counted nothing else: it stays, as before."""
    dropped: list[str] = []
    cfg = from_dict({"selection": selection}, {"selection.scheme": scheme}, dropped=dropped)
    assert (cfg.selection.scheme, cfg.selection.k, cfg.selection.d) == (scheme, *expect)
    assert dropped == []


def test_the_values_that_give_way_are_said(tmp_path):
    """The file's values a scheme switch drops are not used silently: ``from_dict`` lists them
    (``dropped``), and ``train`` says them in one note line before it trains; a config whose
    values all hold gives no note."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.config import read_config_file

    demo = ROOT / "experiments" / "demo.yaml"
    dropped: list[str] = []
    from_dict(read_config_file(demo), {"selection.scheme": "knn", "selection.k": "3"},
              dropped=dropped)
    assert sorted(dropped) == ["selection.T (500)", "selection.ns (50)"]
    dropped.clear()
    from_dict(read_config_file(demo), {"selection.T": "20"}, dropped=dropped)
    assert dropped == []
    r = CliRunner().invoke(app, ["train", str(demo), "--selection.scheme", "knn",
                                 "--selection.k", "3", "--run-dir", str(tmp_path / "k"),
                                 "-q"])
    assert r.exit_code == 0, r.output
    notes = [line for line in r.output.splitlines() if line.startswith("note:")]
    # the give-way note, then the one naming the file's torch settings knn ignores
    assert len(notes) == 2 and "selection.ns (50)" in notes[0] \
        and "selection.T (500)" in notes[0] and "knn" in notes[0], r.output
    # in the same words (it said "... do not apply to knn: not used.")
    assert notes[0].endswith("do not apply to the knn scheme; they are ignored."), r.output
    assert notes[1].startswith("note: training.steps, training.lr, training.save_weights, "
                               "run.chunk_size do not apply to the knn scheme"), r.output


@pytest.mark.parametrize("key, value, allowed", [
    ("training.lr", "1e300", "(0, 10]"), ("training.lr", "1e3", "(0, 10]"),
    ("training.weight_decay", "1e300", "[0, 1]"), ("training.weight_decay", "5", "[0, 1]"),
])
def test_learning_rate_and_weight_decay_have_an_upper_bound(key, value, allowed):
    """``--training.lr 1e300`` trained every classifier to non-finite outputs (a warning
    after the whole run), and ``1e3`` (a slip for ``1e-3``) trained a useless ensemble:
    neither had an upper bound (a fresh-eyes review). Now one line before anything runs;
    the largest values in real use still pass."""
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"--{key}", value])
    assert str(e.value).startswith(f"The '{key}' parameter of the config must be a real "
                                   f"number in the range {allowed}. Got ")
    cfg = load_config(None, ["--training.lr", "10", "--training.weight_decay", "1",
                             "--training.optimizer", "adadelta"])
    assert (cfg.training.lr, cfg.training.weight_decay) == (10.0, 1.0)
    from poisoncert.training import TrainConfig
    with pytest.raises(ValueError, match=r"'lr' parameter of TrainConfig.*\(0, 10\]"):
        TrainConfig(lr=11.0)


def test_a_dict_config_takes_what_a_python_caller_computed():
    """A user's script builds the config from its own numbers: ``np.int64`` from a
    computation, ``np.float32`` from an array, ``np.array`` of classes, a ``pathlib.Path``.
    They were refused in lines that contradicted themselves ("The 'selection.T' parameter of
    the config must be an int or null. Got 8 instead."), and numpy values in
    ``training.model_kwargs`` passed the checks and failed deep in ``train_run`` (a
    TypeError from json, building the manifest). Now they are the plain values a YAML file
    gives, with the same config and hash; what no file can hold is one line naming the key."""
    from pathlib import Path

    factory = "examples.custom_model.net:make_model"
    plain = {"data": {"name": "digits", "data_dir": "/tmp/d", "classes": [1, 7]},
             "selection": {"scheme": "without_replacement", "ns": 100, "T": 8, "seed": 3},
             "training": {"model": factory, "model_kwargs": {"width": 3, "k": [1.5, 2.5]},
                          "lr": 0.25, "batch_size": 16},
             "certify": {"alpha": 0.5, "rhos": [0, 2]}}
    numpy = {"data": {"name": "digits", "data_dir": Path("/tmp/d"), "classes": np.array([1, 7])},
             "selection": {"scheme": "without_replacement", "ns": np.int32(100),
                           "T": np.int64(8), "seed": np.uint64(3)},
             "training": {"model": factory, "lr": np.float32(0.25), "batch_size": np.uint8(16),
                          "model_kwargs": {"width": np.int64(3),
                                           "k": np.array([1.5, 2.5], dtype=np.float32)}},
             "certify": {"alpha": np.float64(0.5), "rhos": [np.int64(0), np.int16(2)]}}
    want, got = from_dict(plain), from_dict(numpy)
    assert got == want and config_hash(got) == config_hash(want)
    assert to_yaml(got) == to_yaml(want)
    assert type(got.selection.T) is int and type(got.training.model.kwargs["width"]) is int
    for key, value in (("selection.T", np.float64(8.0)), ("selection.T", np.bool_(True)),
                       ("data.classes", np.zeros((2, 2), dtype=int))):
        with pytest.raises(ConfigError, match=rf"^The '{re.escape(key)}' parameter of the "
                           "config must be"):
            from_dict(plain, {key: value})
    with pytest.raises(ConfigError, match=r"^The 'training.model_kwargs' parameter of the "
                       r"config must be a mapping of numbers, .* Got 'a function among its "
                       r"values \(<function"):
        from_dict(plain, {"training.model_kwargs": {"act": lambda x: x}})
    # the sections made in Python (they passed their checks and failed in config_hash)
    from poisoncert.config import CertifyConfig, DataConfig, SelectionConfig

    made = ExperimentConfig(
        data=DataConfig(name="digits", data_dir=Path("/tmp/d"), classes=np.array([1, 7])),
        selection=SelectionConfig(scheme="without_replacement", ns=np.int32(100),
                                  T=np.int64(8), seed=np.uint64(3)),
        training=got.training,
        certify=CertifyConfig(alpha=np.float64(0.5), rhos=[np.int64(2), np.int16(0)]))
    assert made == want and config_hash(made) == config_hash(want)
    assert to_yaml(made) == to_yaml(want)


def test_vote_counts_take_bounded_temporaries_whatever_the_predictions(monkeypatch):
    """``votes_from_predictions`` counts whole test points a block of ``VOTE_BLOCK``
    predictions at a time: the same counts, bit for bit, for any block, and temporaries of
    one block (about 35 bytes a prediction) beside the counts, not of the whole matrix
    (T = 200 classifiers on 200,000 test points took 0.9 GB at every certify)."""
    import tracemalloc

    from poisoncert import votes as votes_module

    rng = np.random.default_rng(4)
    pred = rng.integers(-1, 3, size=(20, 20_000)).astype(np.int16)
    want = np.zeros((20_000, 3), dtype=np.int64)
    for c in range(3):
        want[:, c] = (pred == c).sum(axis=0)
    for block in (1, 19, 20, 4096, 10**9):
        monkeypatch.setattr(votes_module, "VOTE_BLOCK", block, raising=False)
        got = votes_module.votes_from_predictions(pred, 3)
        assert got.dtype == np.int64 and np.array_equal(got, want), block
    monkeypatch.setattr(votes_module, "VOTE_BLOCK", 4096, raising=False)
    tracemalloc.start()
    try:
        votes_module.votes_from_predictions(pred, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * want.nbytes + 64 * 4096, (peak, want.nbytes)
    assert votes_module.votes_from_predictions(pred[:, :0], 3).shape == (0, 3)
