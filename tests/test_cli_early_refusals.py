"""Bad options refused before the expensive work: one line naming the option, before torch is
imported, a run's weights are read or anything is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=cwd, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("spec", ["abc", "tpu:0", "cuda:x", ",", "cpu:1"])
def test_devices_syntax_is_refused_before_torch_is_imported(tmp_path, spec):
    """``train --devices abc`` imported torch (seconds) to count the CUDA devices before it
    read the text; a list that names no device is now refused from its syntax alone."""
    (tmp_path / "exp.yaml").write_text("selection: {scheme: binomial, ns: 30, T: 2}\n")
    proc = _python(f"""
        import sys
        from poisoncert.cli import main
        try:
            main(["train", "exp.yaml", "--run-dir", "run", "--devices", {spec!r}])
        except SystemExit as e:
            print("exit", e.code, "torch" in sys.modules)
        """, tmp_path)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "'--devices' parameter of train" in lines[0], proc.stderr
    assert proc.stdout.split() == ["exit", "1", "False"], proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_devices_of_cpus_alone_train_on_the_cpu(tmp_path):
    """``--devices cpu,cpu`` (accepted: a worker per device) set training.device to cuda and
    was refused ('must be 'cpu' ... Got 'cuda''), a value the user never gave; a list of
    CPUs alone is a CPU run, one worker per entry."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.config import load_config

    (tmp_path / "exp.yaml").write_text("data: {name: digits}\nselection: {T: 4}\n"
                                       "training: {model: mlp, steps: 2}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), "--devices", "cpu, CPU", "-q"])
    assert r.exit_code == 0, r.output
    assert load_config(tmp_path / "run" / "config.yaml").execution.device == "cpu"


def test_attack_refuses_settings_that_do_not_fit_the_run_before_reading_it(tmp_path,
                                                                          monkeypatch):
    """``attack`` verified every checksum of the run and loaded its weights (seconds to
    minutes for a large run) before it refused ``--copies`` for a bagging run, a ``--patch`` as
    large as the images or a folder holding an earlier attack's results; now those come from
    the run's config and manifest, before its files are read."""
    from test_runs import small, use_engine
    from typer.testing import CliRunner

    from poisoncert import runs
    from poisoncert.cli import app
    from poisoncert.experiment import train_run

    use_engine(monkeypatch)
    run = tmp_path / "run"
    train_run(small(), run)  # digits: 8 x 8 images, bagging without replacement
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "attack.json").write_text("{}")

    def read(*args, **kwargs):
        raise AssertionError("the run's files were read before the options were checked")

    monkeypatch.setattr(runs.RunDir, "verify", read)
    runner = CliRunner()
    for args, words in (
            (["--attacks", "insert", "--copies", "2"],
             "'--copies' parameter of attack must be 1 for a without_replacement run"),
            (["--attacks", "backdoor", "--patch", "8"],
             "'--patch' parameter of attack must be an int in the range [1, 7]"),
            (["--attacks", "flip", "--out", str(tmp_path / "out")],
             "already holds an earlier attack's results (attack.json)")):
        r = runner.invoke(app, ["attack", str(run), *args, "-q"])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output.startswith("error: ") and words in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["attack.json"]


@pytest.mark.parametrize("args", [["--training.workers", "0"], ["--workers", "0"],
                                  ["--training.workers", "-3"],
                                  ["--training.workers", str(2**60)]])
def test_workers_refusals_name_the_same_true_range(tmp_path, args):
    """``--training.workers 0`` said the range was [1, 2^53] where ``--workers 0`` (and
    ``--training.workers 100`` on this machine) said [1, CPUs]: a run takes at most the CPUs
    it may use, and every refusal now says so, naming what was typed: the option
    (``--workers``) or the config key (``--training.workers``)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.resources import usable_cpus

    (tmp_path / "exp.yaml").write_text("selection: {scheme: binomial, ns: 30, T: 2}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), *args])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    name = ("'--workers' parameter of train" if args[0] == "--workers" else
            "'training.workers' parameter of the config")
    assert (f"{name} must be an int in the range [1, {usable_cpus()}] (the CPUs this "
            f"process may use). Got {args[1]} instead." in r.output), r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text", ["", "# a comment only\n", "{}\n", "data:\nselection:\n"])
def test_a_config_file_without_settings_is_said_to_train_the_defaults(tmp_path, monkeypatch,
                                                                      text):
    """An empty config file (or comments only, ``{}``, sections without keys) trained the
    default experiment without a word; it now says so in one line naming the file. With
    ``--section.key`` overrides (an empty file and ``--selection.T 8``, a documented path)
    nothing is said."""
    from test_runs import use_engine
    from typer.testing import CliRunner

    from poisoncert.cli import app

    use_engine(monkeypatch)
    config = tmp_path / "exp.yaml"
    config.write_text(text)
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "a"), "-q",
                            "--selection.T", "4", "--data.test_limit", "10"])
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output
    monkeypatch.setattr("poisoncert.config.sections.DEFAULT_SELECTION",
                        {"scheme": "binomial", "ns": 50, "T": 4})
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 0, r.output
    assert r.stderr.splitlines() == [
        f"warning: the config file '{config}' holds no settings (it is empty, comments or "
        "sections without keys): training the default experiment (digits, binomial ns 50, "
        "T 4, model mlp). Name the settings in the file, or give them as --section.key "
        "value."], r.stderr


@pytest.mark.parametrize("args, key", [
    (["--selection.seed", str(2**64)], "'selection.seed' parameter of the config"),
    (["--data.clean_seed", str(2**64), "--data.n_clean", "5"],
     "'data.clean_seed' parameter of the config")])
def test_seeds_beyond_64_bits_are_refused(tmp_path, args, key):
    """A root seed had no upper bound (a 5,000-digit one ended in Python's int-conversion
    error); a seed is now a 64-bit int, as the classifiers' own seeds are."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    (tmp_path / "exp.yaml").write_text("selection: {scheme: binomial, ns: 30, T: 2}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), *args])
    assert r.exit_code == 1 and r.output.splitlines() == [
        f"error: The {key} must be an int in the range [0, 2^64 - 1]. Got {2**64} instead."]
    assert not (tmp_path / "run").exists()
    big = tmp_path / "big.yaml"  # an int YAML reads but Python will not convert
    big.write_text("selection: {scheme: binomial, ns: 30, T: 2, seed: " + "9" * 5000 + "}\n")
    r = CliRunner().invoke(app, ["train", str(big), "--run-dir", str(tmp_path / "run")])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert r.output.startswith(f"error: The config file '{big}' cannot be read: "), r.output
    assert not (tmp_path / "run").exists()


def test_attack_seed_beyond_64_bits_is_refused_before_the_run_is_read(tmp_path):
    from typer.testing import CliRunner

    from poisoncert.cli import app

    r = CliRunner().invoke(app, ["attack", str(tmp_path / "no-run"), "--seed", str(2**64)])
    assert r.exit_code == 1 and r.output.splitlines() == [
        "error: The '--seed' parameter of attack must be an int in the range "
        f"[0, 2^64 - 1]. Got {2**64} instead."], r.output


def test_an_elastic_strength_beyond_any_image_is_refused(tmp_path):
    """``training.elastic 1e300`` was accepted: its float32 grids overflowed to inf (numpy's
    'overflow encountered in multiply' warning), and every classifier diverged. The strength
    (pixels) is now at most ``ELASTIC_MAX``, far beyond any image, and every draw of that
    strength is finite in float32."""
    import numpy as np
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.config import from_dict
    from poisoncert.training.minibatches import FieldStream
    from poisoncert.training.settings import ELASTIC_MAX

    (tmp_path / "exp.yaml").write_text("selection: {scheme: binomial, ns: 30, T: 2}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), "--training.elastic", "1e300"])
    assert r.exit_code == 1 and r.output.splitlines() == [
        "error: The 'training.elastic' parameter of the config must be a real number in the "
        "range [0, 1e+06]. Got 1e+300 instead."], r.output
    assert not (tmp_path / "run").exists()
    assert from_dict({"training": {"elastic": ELASTIC_MAX}}).training.elastic == ELASTIC_MAX
    # a standard normal draw beyond 40 has probability below 1e-340: never met
    grid = FieldStream(np.random.default_rng(0), ELASTIC_MAX, 64, (8, 8)).take(64)
    assert np.isfinite(grid).all() and np.abs(grid).max() < 40 * ELASTIC_MAX < 3e38


@pytest.mark.parametrize("args, why", [
    (["--training.model", "sklearn:knn"], "training.model sklearn:knn (scikit-learn trains on "
                                          "the CPU)"),
    (["--training.model", "sklearn:svm"], "training.model sklearn:svm (scikit-learn"),
    (["--selection.scheme", "knn", "--selection.k", "3"],
     "selection.scheme knn (the neighbour search runs on the CPU)"),
    (["--selection.scheme", "rnn", "--selection.r", "3"], "selection.scheme rnn")])
def test_cuda_for_a_learner_that_runs_on_the_cpu_is_refused(tmp_path, args, why):
    """``--device cuda`` with a scikit-learn learner or the kNN / rNN search was ignored: the
    run trained on the CPU and its manifest recorded a CUDA device ("CUDA not available" on
    a machine without one). One line now, before anything is written (with or without a
    GPU)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    (tmp_path / "exp.yaml").write_text("data: {name: digits}\nselection: {T: 2, ns: 30}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), "-q", "--device", "cuda", *args])
    lines = [x for x in r.output.splitlines() if not x.startswith("note:")]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert (f"The '--device' parameter of train must be 'cpu' for {why}" in lines[0]
            and "Got 'cuda' instead." in lines[0]), r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["--training.device", "--device", "file"])
def test_a_refused_device_is_echoed_as_typed(tmp_path, where):
    """``--training.device CUDA`` (``--device Cuda``, ``device: CUDA`` in the file) refused
    after the config was built (the knn search runs on the CPU; no CUDA device) said "Got
    'cuda'", a value the user never typed: the line echoes the text given. A library call
    with a mapping says the same."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.config import ConfigError
    from poisoncert.experiment import train_run

    typed = {"--training.device": "CUDA", "--device": "Cuda", "file": "cUDA"}[where]
    body = "data: {name: digits}\nselection: {scheme: knn, k: 3}\n"
    if where == "file":
        body += f"training: {{device: {typed}}}\n"
    (tmp_path / "exp.yaml").write_text(body)
    args = [] if where == "file" else [where, typed]
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), "-q", *args])
    lines = [x for x in r.output.splitlines() if not x.startswith("note:")]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    name = ("'--device' parameter of train" if where == "--device" else
            "'training.device' parameter of the config")
    assert (f"The {name} must be 'cpu' for selection.scheme knn (the neighbour search runs on "
            f"the CPU). Got '{typed}' instead." in lines[0]), r.output
    config = {"data": {"name": "digits"}, "selection": {"scheme": "knn", "k": 3},
              "training": {"device": typed}}
    with pytest.raises(ConfigError, match=f"Got '{typed}' instead"):
        train_run(config, tmp_path / "run2")
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


_LOCAL_RAY = ("The '--workers' parameter of train must be an int in the range [1, 2] with a "
              "local Ray instance (the CPUs this process may use, as for local workers, or "
              "the tasks its GPUs hold at --gpus-per-task each; a cluster, --address, takes up "
              "to 2^53). Got {} instead.")


@pytest.mark.parametrize("args, line", [
    (["--executor", "ray", "--address", "auto", "--workers", "0"],
     "The '--workers' parameter of train must be an int in the range [1, 2^53] with --executor "
     "ray --address (chunks in flight on the cluster). Got 0 instead."),
    (["--executor", "ray", "--workers", "0"], _LOCAL_RAY.format(0)),
    (["--executor", "ray", "--workers", "3"], _LOCAL_RAY.format(3)),
    (["--executor", "ray", "--workers", str(2 ** 53)], _LOCAL_RAY.format(2 ** 53)),
    (["--devices", ",".join(["cpu"] * 3)], None)])
def test_worker_counts_say_their_true_range(tmp_path, monkeypatch, args, line):
    """``--executor ray --workers 0`` said the range was [1, CPUs] (the local executor's),
    while a cluster takes more chunks in flight than this machine has CPUs; ``--devices
    cpu,cpu,cpu`` started three local workers on 2 CPUs, where ``--workers 3`` is refused.
    A local Ray instance (no --address) runs its workers here: ``--workers 2^53`` reached
    ``ray.init``, which refused it ('Resource quantities must be at most 1e14') after the run
    folder was written, and ``--workers 3`` on 2 CPUs started 3 worker processes where local
    workers are refused; at most the CPUs now, as local workers. One line each, before
    anything is written."""
    from typer.testing import CliRunner

    from poisoncert import executors
    from poisoncert.cli import app

    monkeypatch.setattr(executors, "usable_cpus", lambda: 2)
    (tmp_path / "exp.yaml").write_text("data: {name: digits}\nselection: {T: 2, ns: 30}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), "-q", *args])
    line = line or ("The '--devices' parameter of train must be at most 2 'cpu' entries (a "
                    "worker process each; the CPUs this process may use). Got 'cpu,cpu,cpu' "
                    "instead.")
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert line in r.output and "[1, 2] (the CPUs" not in r.output, r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["8.0", "1e9", "[8]", "{a: 1}", "true"])
def test_a_group_size_of_another_type_in_the_file_names_its_range(tmp_path, value):
    """``group_size: 8.0`` in a config file was refused as 'must be an int or a string or
    null' (no range, and no string but 'auto' is taken), where ``--training.group_size 8.0``
    said "'auto' or an int in the range [1, 2^53]"; both say the latter now."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    (tmp_path / "exp.yaml").write_text("data: {name: digits}\nselection: {T: 2, ns: 30}\n"
                                       f"training: {{group_size: {value}}}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), "-q"])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert ("The 'training.group_size' parameter of the config must be 'auto' or an int in "
            "the range [1, 2^53]. Got " in r.output), r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, line", [
    (["--devices", "cpu,cuda:0"], "The '--devices' parameter of train must be 'cpu' entries "
     "alone or CUDA devices alone (one training.device for the run). Got 'cpu,cuda:0'"),
    (["--device", "cpu", "--devices", "cuda:0"], "The '--devices' parameter of train must be "
     "cpu entries with --device cpu (or leave --device out). Got 'cuda:0'"),
    (["--device", "cpu", "--devices", "all"], "must be cpu entries with --device cpu"),
    (["--device", "cuda", "--devices", "cpu,cpu"], "The '--devices' parameter of train must be "
     "CUDA devices with --device cuda (or leave --device out). Got 'cpu,cpu'"),
    (["--executor", "ray", "--device", "cpu", "--gpus-per-task", "1"], "The "
     "'--gpus-per-task' parameter of train must be 0 or none with --device cpu (its tasks "
     "would reserve GPUs and train on the CPU). Got 1.0")])
def test_devices_of_two_kinds_are_refused_in_one_line(tmp_path, args, line):
    """A run trains on one training.device: ``--devices cpu,cuda:0`` made its 'cpu' worker
    train on cuda:0, ``--device cpu --devices cuda:0,cuda:1`` left the GPUs idle and
    ``--device cpu --gpus-per-task 1`` had Ray tasks reserve GPUs they never used (on a
    machine with GPUs; without, the refusals blamed the missing GPU, not the contradiction).
    One line naming it now, before anything is written, with or without a GPU."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    (tmp_path / "exp.yaml").write_text("data: {name: digits}\nselection: {T: 2, ns: 30}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), "-q", *args])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert line in r.output, r.output
    assert not (tmp_path / "run").exists()
