"""The run commands on the real app: ``poisoncert train``, ``certify`` and ``demo``."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import yaml
from test_runs import use_engine  # the shared stand-in engine
from typer.testing import CliRunner

from poisoncert import experiment, runs
from poisoncert.cli import app

runner = CliRunner()

CONFIG = {
    "data": {"name": "digits", "test_limit": 60},
    "selection": {"scheme": "with_replacement", "ns": 40, "T": 20, "seed": 1},
    "training": {"model": "mlp", "steps": 3, "group_size": 4},
    "certify": {"rhos": [0, 2, 4]},
    "run": {"chunk_size": 8},
}


@pytest.fixture
def engine(monkeypatch):
    use_engine(monkeypatch)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_train_with_overrides_then_certify(tmp_path, config, engine):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(run), "--quiet",
                            "--selection.T", "16", "--training.steps=4", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "Trained 16 base classifiers" in r.output and str(run) in r.output
    cfg = yaml.safe_load((run / runs.CONFIG).read_text())
    assert cfg["selection"]["T"] == 16 and cfg["training"]["steps"] == 4
    assert np.load(run / runs.PREDICTIONS).shape == (16, 60)

    r = runner.invoke(app, ["certify", str(run), "--rho", "0", "--rho", "3",
                            "--model", "P3"])
    assert r.exit_code == 0, r.output
    assert "Certified accuracy" in r.output and "P3" in r.output
    for name in (runs.CERTIFICATES, runs.CERTIFIED_ACCURACY, runs.CERTIFIED_ACCURACY_PNG):
        assert (run / name).is_file()
        assert name in r.output.replace("\n", "")
    rows = [line.split("│") for line in r.output.splitlines() if line.startswith("│")]
    assert [row[1].strip() for row in rows] == ["0", "3"]

    # the same command resumes (nothing to train); another config is refused
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q",
                            "--selection.T", "16", "--training.steps=4"])
    assert r.exit_code == 0 and ("Nothing to train: the 16 base classifiers were trained "
                                 "before (2 chunks resumed") in r.output
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q"])
    assert r.exit_code == 1
    assert r.output.startswith("error: ") and "another config" in r.output
    assert "Traceback" not in r.output
    # one chunk is one chunk
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "one"), "-q",
                            "--selection.T", "8", "--training.steps=4"])
    assert r.exit_code == 0 and "(1 chunk trained, 0 resumed)" in r.output, r.output


def test_train_warns_of_a_class_without_training_samples(tmp_path, engine, monkeypatch):
    """An .npz whose training labels miss a class of its test labels trains, with one warning
    naming that class (its test points are never predicted correctly); a kNN run too. The
    folder the data was read from is shown whole for a relative path (it was empty)."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 6), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=np.full(40, 3),
             x_test=x[40:], y_test=np.array([3, 8] * 5))
    cfg = {"data": {"name": "npz:d.npz"}, "training": {"steps": 2},
           "selection": {"scheme": "with_replacement", "ns": 10, "T": 4}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    for extra in ([], ["--selection.scheme", "knn", "--selection.k", "3", "--selection.T",
                       "null", "--selection.ns", "null"]):
        with pytest.warns(UserWarning) as caught:
            r = runner.invoke(app, ["train", str(tmp_path / "c.yaml"), "--run-dir",
                                    str(tmp_path / f"run{len(extra)}"), "-q", *extra])
        assert r.exit_code == 0 and f"Data read from {tmp_path}\n" in r.output, r.output
        assert [str(w.message).split(": ", 1)[1] for w in caught] == [
            "8. No base classifier can predict them, so their test points are never "
            "predicted correctly."], [str(w.message) for w in caught]
        assert str(caught[0].message).startswith("1 of the 2 classes of npz:")
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=np.arange(40) % 2 * 5 + 3,
             x_test=x[40:], y_test=np.array([3, 8] * 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = runner.invoke(app, ["train", str(tmp_path / "c.yaml"), "--run-dir",
                                str(tmp_path / "both"), "-q"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("args, words", [
    (["--training.stepz", "3"], ["error:", "'training.stepz'", "Did you mean"]),
    (["--selection.ns", "x"], ["error:", "'selection.ns'", "Got 'x'"]),
    (["--device", "tpu"], ["error:", "'--device' parameter of train", "'cuda'"]),
    (["--training.device", "tpu"], ["error:", "'training.device' parameter of the config"]),
    (["--executor", "dask"], ["error:", "'--executor' parameter of train", "'local'"]),
    (["--selection.ns", "100000", "--selection.scheme", "without_replacement"],
     ["error:", "'selection.ns'", "[1, 1437]"]),
])
def test_train_errors_are_one_line(tmp_path, config, engine, args, words):
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q", *args])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    for w in words:
        assert w in lines[0]
    assert not run.exists()


def test_train_into_unwritable_folder(tmp_path, config, engine):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(blocker / "run"), "-q"])
    assert r.exit_code == 1 and "Cannot write the run directory" in r.output


def test_certify_wraps_at_a_terminals_width(tmp_path, config, engine):
    """In a terminal (rich's FORCE_COLOR) certify's lines wrap at words within its width, the
    paths excepted; piped, every line stays whole (logs and the tests that read them)."""
    import re

    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q"]).exit_code == 0
    term = runner.invoke(app, ["certify", str(run), "--no-plot"],
                         env={"FORCE_COLOR": "1", "COLUMNS": "80"})
    assert term.exit_code == 0, term.output
    lines = re.sub(r"\x1b\[[0-9;]*m", "", term.output).splitlines()
    # (the file paths are never broken: a path is copied whole)
    assert max(len(line.rstrip()) for line in lines if str(run) not in line) <= 80, lines
    assert any(line.startswith("verified: ") for line in lines)
    piped = runner.invoke(app, ["certify", str(run), "--no-plot"], env={"COLUMNS": "80"})
    assert any(line.startswith("verified: ") and len(line) > 80
               for line in piped.output.splitlines()), piped.output
    whole = [line for line in piped.output.splitlines() if line.startswith("accuracy ")]
    assert len(whole) == 1 and whole[0].endswith("= 1 each)]"), piped.output


def test_certify_shows_a_bar_in_rows_while_it_writes_many_certificates(tmp_path, config,
                                                                      engine, monkeypatch):
    """certify of a run of 200,000 test points made its certificates.csv for 5-20 s with
    nothing on screen; now from ``ROWS_BAR`` test points it shows predict's bar in rows (a
    line with the rate and ETA where stderr is no terminal), every row counted as its block's
    text is made; -q and --json show none, nor does a smaller run."""
    from contextlib import contextmanager

    import poisoncert.cli.progress as cli_progress
    from poisoncert.experiment import certify as exp_certify

    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q"]).exit_code == 0
    monkeypatch.setattr(cli_progress, "ROWS_BAR", 60)  # the run's 60 test points
    monkeypatch.setattr(exp_certify, "ROW_BLOCK", 16)  # 16, 16, 16, 12
    r = runner.invoke(app, ["certify", str(run), "--no-plot"])  # not a terminal: lines
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("certificates.csv: ")]
    assert len(lines) == 1 and lines[0].startswith("certificates.csv: 60/60 rows, ") \
        and " rows/s, " in lines[0] and "elapsed, ETA 00:00" in lines[0], r.stderr
    shown = []

    @contextmanager
    def recorder(total, completed, label, *, unit="models"):
        done = []
        shown.append((total, completed, label, unit, done))
        yield done.append

    monkeypatch.setattr(cli_progress, "rich_progress", recorder)
    r = runner.invoke(app, ["certify", str(run), "--no-plot"])
    assert r.exit_code == 0, r.output
    assert [s[:4] for s in shown] == [(60, 0, "certificates.csv", "rows")], shown
    assert shown[0][4] == [16, 16, 16, 12]
    for args in (["-q"], ["--json"]):
        shown.clear()
        assert runner.invoke(app, ["certify", str(run), "--no-plot", *args]).exit_code == 0
        assert shown == [], (args, shown)
    monkeypatch.setattr(cli_progress, "ROWS_BAR", 61)
    assert runner.invoke(app, ["certify", str(run), "--no-plot"]).exit_code == 0
    assert shown == [], shown


def test_certify_leaves_no_stale_plot_and_writes_standard_json(tmp_path, config, engine):
    """``--no-plot`` removes an earlier certify's plot (it showed another method's curve
    beside this one's CSV), and nothing certified gives null medians, not a bare NaN that JSON
    readers refuse."""
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q"]).exit_code == 0
    assert runner.invoke(app, ["certify", str(run)]).exit_code == 0
    assert (run / runs.CERTIFIED_ACCURACY_PNG).is_file()
    r = runner.invoke(app, ["certify", str(run), "--no-plot", "--alpha", "1e-100", "--json"])
    assert r.exit_code == 0, r.output
    assert not (run / runs.CERTIFIED_ACCURACY_PNG).exists()
    for text in (r.stdout, (run / "certify.json").read_text()):
        assert "NaN" not in text
        doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
        summary = doc.get("summary", doc)
        assert summary["radius_median"] is None and summary["accuracy"] == 0.0
    text = runner.invoke(app, ["certify", str(run), "--no-plot", "--alpha", "1e-100"])
    assert "median radius n/a (nothing certified)" in text.output and "nan" not in text.output


def test_errors_name_the_option_typed(tmp_path, config, engine):
    """A library error that names a config key or a library function's parameter set by an
    option on the command line starts with that option; a config override
    (--training.steps) is named as typed already, and so is a command's own parameter."""
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(config), "--run-dir", str(run), "-q"]).exit_code == 0
    cases = {
        ("certify", str(run), "--method", "bogus"):
            "error: The '--method' parameter of certify must be ",
        # held to the vote bounds' range, certify's own words (the config's said (0, 1))
        ("certify", str(run), "--alpha", "2"):
            "error: The '--alpha' parameter of certify must be a real number in the range "
            "[1e-100, 1)",
        ("update", str(run), "--out", str(tmp_path / "u"), "--remove", "99999"):
            "error: The '--remove' parameter of update must be ",
        # the library's parameter has another name: the line named no option at all
        ("update", str(run), "--out", str(tmp_path / "u"), "--relabel", "99999:1"):
            "error: The '--relabel' parameter of update must be ",
        ("train", str(config), "--run-dir", str(tmp_path / "t"), "--training.steps", "0"):
            "error: The 'training.steps' parameter of the config must be ",
        ("certify", str(run), "--rhos", "0,x"): "error: The '--rhos' parameter",
        ("certify", str(run), "--rhos", "0,,5"): "error: The '--rhos' parameter",
        ("certify", str(run), "--rhos", "0,5,"): "error: The '--rhos' parameter",
        ("train", str(config), "--run-dir", str(tmp_path / "t"), "--certify.rhos", "0,,5"):
            "error: The 'certify.rhos' parameter of the config must be ",
        ("attack", str(run), "--budgets", "1,,2"): "error: The '--budgets' parameter of attack",
        ("attack", str(run), "--targets", "0"):  # it ran the backdoor attack only, silently
            "error: The '--targets' parameter of attack must be an int >= 1. Got "
            "0 instead.",
        ("attack", str(run), "--attacks", "insert,,flip"):
            "error: The '--attacks' parameter of attack must be ",
    }
    for args, start in cases.items():
        r = runner.invoke(app, list(args))
        assert r.exit_code == 1 and r.output.startswith(start), (args, r.output)
        assert len(r.output.splitlines()) == 1, r.output


def test_certify_missing_run(tmp_path, config):
    """A missing folder, a config given for a run, and an empty folder: each one line saying
    which of the three it is."""
    (tmp_path / "empty").mkdir()
    for path, why in ((tmp_path / "nope", "it does not exist"),
                      (config, "it is a file; a run directory is the folder 'poisoncert train "
                               "CONFIG --run-dir DIR' writes"),
                      (tmp_path / "empty", "no config.yaml")):
        # update --relabel / --add read the run's class ids first: they said "The manifest
        # of ... does not give the data set's classes ...: is it a poisoncert run?"
        for args in (["certify", str(path)],
                     ["update", str(path), "--out", str(tmp_path / "o"), "--relabel", "5:2"],
                     ["update", str(path), "--out", str(tmp_path / "o"), "--add", "x.npz"]):
            r = runner.invoke(app, args)
            assert r.exit_code == 1 and r.output.strip().splitlines() == [
                f"error: '{path}' is not a poisoncert run directory ({why})."], (args, r.output)
            assert not (tmp_path / "o").exists()
    # an emptied config.yaml is not the default config (resume named the "differences")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "config.yaml").write_text("\n")
    for args in (["certify", str(tmp_path / "blank")],
                 ["train", str(config), "--run-dir", str(tmp_path / "blank")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and r.output.strip().splitlines() == [
            f"error: The config '{tmp_path / 'blank' / 'config.yaml'}' of the run is empty (a "
            "run's config holds every setting it was trained with): the run cannot be "
            "read."], r.output


def test_help_lists_run_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("train", "certify", "demo"):
        assert cmd in r.output
    assert "--quick" not in runner.invoke(app, ["demo", "--help"]).output


def test_demo_interrupted_says_what_is_kept_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C in the second chunk of the demo's first run: one line (what is kept, that the
    same command resumes) and exit code 130; the same command then finishes the demo."""
    from test_runs import _centroid_engine

    calls = []

    def interrupted(cfg, prep, subsets, seeds, progress=None):
        calls.append(len(seeds))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _centroid_engine(cfg, prep, subsets, seeds)

    use_engine(monkeypatch, interrupted)
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "-q"])
    assert r.exit_code == 130, r.output
    assert r.output.strip().splitlines() == [
        f"interrupted: 16 of 32 base classifiers are saved in '{out / 'without_replacement'}' "
        "(in whole chunks of up to 16); the same command resumes the run."], r.output
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "-q"])
    assert r.exit_code == 0, r.output
    assert calls[:2] == [16, 16] and len(calls) == 2 + 1 + 2 * 2  # one resumed chunk


def test_demo_interrupted_before_a_later_run_began_names_the_runs_it_kept(tmp_path,
                                                                           monkeypatch):
    """Ctrl-C while the demo's second run loaded its data said "nothing was written (no run
    in 'DEMO/with_replacement'); the same command starts the run", where the demo had
    trained its first run in full: the line names the runs kept and that the same command
    resumes the demo, which it then finishes without training the first again."""
    from test_runs import _centroid_engine

    from poisoncert.experiment import train as train_module

    calls = []

    def counted(cfg, prep, subsets, seeds, progress=None):
        calls.append(len(seeds))
        return _centroid_engine(cfg, prep, subsets, seeds)

    use_engine(monkeypatch, counted)
    loads = []
    split = train_module.split_data

    def stopped(*args, **kwargs):
        loads.append(1)
        if len(loads) == 2:
            raise KeyboardInterrupt
        return split(*args, **kwargs)

    monkeypatch.setattr(train_module, "split_data", stopped)
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "-q"])
    assert r.exit_code == 130, r.output
    assert r.output.strip().splitlines() == [
        f"interrupted before the run '{out / 'with_replacement'}' began training: the demo's "
        f"run '{out / 'without_replacement'}' is trained and kept; the same command resumes "
        "the demo."], r.output
    assert not (out / "with_replacement").exists() and calls == [16, 16]
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "-q"])
    assert r.exit_code == 0, r.output
    assert len(calls) == 2 + 2 * 2  # the first run was not trained again


def test_demo_refuses_a_run_folder(tmp_path, engine):
    """The demo writes certified_accuracy.csv / .png at its top: into a run's folder it would
    replace the run's own. One line, nothing written."""
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.CONFIG).write_text("data: {name: digits}\n")
    (run / runs.MANIFEST).write_text("{}\n")
    before = sorted(p.name for p in run.iterdir())
    r = runner.invoke(app, ["demo", "--out", str(run), "--quick", "-q"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"error: The demo's folder '{run}' (out_dir; CLI: --out) holds a run (its "
        "manifest.json). Use another folder."], r.output
    assert sorted(p.name for p in run.iterdir()) == before


def test_train_says_which_data_folder_it_read(tmp_path, engine):
    """The data search (data_dir, $POISONCERT_DATA, ./data, shared/data, ...) can find a copy
    the user did not expect: train names the folder it read, in text and in --json."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mydata"
    folder.mkdir()
    x, y = rng.random((80, 6)).astype(np.float32), np.arange(80) % 3
    np.savez(folder / "tiny.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "data": {"name": f"npz:{folder / 'tiny.npz'}"}}))
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "a"), "-q"])
    assert r.exit_code == 0, r.output
    assert f"Data read from {folder}" in r.output.splitlines()
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["data_folder"] == str(folder)


def _has_engine() -> bool:
    try:
        from poisoncert import training
    except ImportError:
        return False
    return hasattr(training, "train_predict")


@pytest.mark.skipif(not _has_engine(), reason="poisoncert.training not available")
def test_demo_quick_with_the_real_engine(tmp_path):
    out = tmp_path / "demo"
    r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "-q"])
    assert r.exit_code == 0, r.output
    for scheme in experiment.DEMO_SCHEMES:
        assert (out / scheme / runs.PREDICTIONS).is_file()
        assert (out / scheme / runs.CERTIFICATES).is_file()
        assert scheme in r.output
    assert (out / runs.CERTIFIED_ACCURACY_PNG).stat().st_size > 1000
    table = (out / runs.CERTIFIED_ACCURACY).read_text().splitlines()
    assert table[0] == "rho," + ",".join(experiment.DEMO_SCHEMES)
    assert str(out / runs.CERTIFIED_ACCURACY_PNG) in r.output.replace("\n", "")


def test_ctrl_c_in_a_knn_search_says_nothing_is_kept(tmp_path, monkeypatch):
    """Ctrl-C in a knn run's neighbour search said "the run keeps every chunk it finished; the
    same command resumes it", but a knn / rnn run is written whole at the search's end: one
    line that nothing is kept and the run folder untouched, exit code 130."""
    from poisoncert.experiment import neighbors

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(neighbors, "nn_outputs", stopped)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, 6), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x[:40], y_train=np.arange(40) % 2,
             x_test=x[40:], y_test=np.arange(10) % 2)
    cfg = {"data": {"name": f"npz:{tmp_path / 'd.npz'}"}, "selection": {"scheme": "knn", "k": 3}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(tmp_path / "c.yaml"), "--run-dir", str(run), "-q"])
    assert r.exit_code == 130, r.output
    assert r.output.strip().splitlines() == [
        f"interrupted: the neighbour search keeps nothing (a knn / rnn run is written whole "
        f"when its search ends; '{run}' is as it was); the same command starts it again."]
    assert not run.exists() or not any(run.iterdir())


def test_demo_refuses_a_folder_of_other_files_and_reruns_into_its_own(tmp_path, engine):
    """``demo --out DIR`` wrote its table and figure into any folder, replacing a user's
    certified_accuracy.csv there; a folder holding anything but the demo's own output is now
    refused in one line naming what it holds (as train --run-dir refuses a non-empty folder),
    and the same command into the demo's own folder still reruns."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    (mine / runs.CERTIFIED_ACCURACY).write_text("my table\n")
    r = runner.invoke(app, ["demo", "--out", str(mine), "--quick", "-q"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"error: The demo's folder '{mine}' (out_dir; CLI: --out) holds files that are not "
        "the demo's (notes.txt). Use a new or empty folder, or an earlier demo's."], r.output
    assert sorted(p.name for p in mine.iterdir()) == [runs.CERTIFIED_ACCURACY, "notes.txt"]
    assert (mine / runs.CERTIFIED_ACCURACY).read_text() == "my table\n"
    out = tmp_path / "demo"
    for _ in range(2):  # new, then its own output again
        r = runner.invoke(app, ["demo", "--out", str(out), "--quick", "-q"])
        assert r.exit_code == 0, r.output


def _ignored_note(output: str) -> list[str] | None:
    """The names the note of settings a run ignores gives (None: no such note)."""
    notes = [line for line in output.splitlines()
             if line.startswith("note: ") and line.endswith("ignored.")]
    assert len(notes) <= 1, output
    return notes[0][len("note: "):notes[0].index(" do")].split(", ") if notes else None


def _exp(tmp_path, name: str, d: dict):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.parametrize("scheme, size", [("knn", {"k": 3}), ("rnn", {"r": 20.0})])
def test_train_names_what_a_knn_or_rnn_run_ignores(tmp_path, scheme, size):
    """``--training.dtype float64 --training.group_size 4 --devices cpu,cpu`` for a knn / rnn
    run (it trains nothing) were taken without a word: one note on stderr names exactly the
    keys and options given that it ignores (the file's at a non-default value; not the
    file's defaults, nor selection.k / r, nor --device cpu), with -q and --json too (stdout
    stays JSON); none when nothing ignored is given."""
    exp = _exp(tmp_path, scheme, {
        "data": {"name": "digits", "test_limit": 30}, "selection": {"scheme": scheme, **size},
        "training": {"steps": 60, "batch_size": 32, "balance": True}})  # two of them defaults
    r = runner.invoke(app, ["train", str(exp), "--run-dir", str(tmp_path / "a"), "--json",
                            "--training.dtype", "float64", "--training.group_size", "4",
                            "--devices", "cpu,cpu", "--selection.seed", "5"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["T"] == 1 and _ignored_note(r.stdout) is None
    assert _ignored_note(r.stderr) == ["--devices", "training.steps", "training.dtype",
                                       "training.group_size", "selection.seed"], r.stderr
    assert f"do not apply to the {scheme} scheme (it trains no classifiers)" in r.stderr
    r = runner.invoke(app, ["train", str(exp), "--run-dir", str(tmp_path / "b"), "-q",
                            "--workers", "1", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert _ignored_note(r.stderr) == ["--workers", "training.steps"], r.stderr
    plain = _exp(tmp_path, "plain", {"data": {"name": "digits", "test_limit": 30},
                                     "selection": {"scheme": scheme, **size}})
    r = runner.invoke(app, ["train", str(plain), "--run-dir", str(tmp_path / "c"), "-q"])
    assert r.exit_code == 0 and _ignored_note(r.output) is None, r.output
    # the run's own config.yaml (every key written out, at its default) given again
    r = runner.invoke(app, ["train", str(tmp_path / "c" / runs.CONFIG), "--run-dir",
                            str(tmp_path / "d"), "-q"])
    assert r.exit_code == 0 and _ignored_note(r.output) is None, r.output
    if scheme == "knn":  # a refused run: its one line, the note said only once it has run
        r = runner.invoke(app, ["train", str(exp), "--run-dir", str(tmp_path / "e"), "-q",
                                "--selection.k", "100000"])
        assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
        assert r.output.startswith("error: The 'selection.k' parameter")


@pytest.mark.parametrize("model", ["sklearn:svm", "sklearn:knn"])
def test_train_names_what_a_scikit_learn_learner_ignores(tmp_path, model, monkeypatch):
    """``training.dtype``, ``group_size``, ``steps``, ``lr`` and the augmentation keys for a
    scikit-learn learner (fitted with its own settings) were taken without a word: one note
    names exactly those given; training.balance and --workers, which it uses, are not named,
    and alone they give no note."""
    exp = _exp(tmp_path, "sk", {"data": {"name": "digits", "test_limit": 30},
                                "selection": {"scheme": "partition", "k": 4},
                                "training": {"model": model, "balance": False, "lr": 0.5}})
    r = runner.invoke(app, ["train", str(exp), "--run-dir", str(tmp_path / "a"), "-q",
                            "--workers", "1", "--training.dtype", "float64",
                            "--training.group_size", "4", "--training.steps", "7",
                            "--training.augment", "--training.rotation", "10"])
    assert r.exit_code == 0, r.output
    assert _ignored_note(r.stderr) == ["training.steps", "training.lr", "training.augment",
                                       "training.rotation", "training.dtype",
                                       "training.group_size"], r.stderr
    assert f"do not apply to training.model {model} (scikit-learn" in r.stderr
    exp = _exp(tmp_path, "sk2", {"data": {"name": "digits", "test_limit": 30},
                                 "selection": {"scheme": "partition", "k": 4},
                                 "training": {"model": model, "balance": False}})
    r = runner.invoke(app, ["train", str(exp), "--run-dir", str(tmp_path / "b"), "-q",
                            "--workers", "1", "--training.balance", "true"])
    assert r.exit_code == 0 and _ignored_note(r.output) is None, r.output
    monkeypatch.setenv("POISONCERT_MEMORY_LIMIT", "64K")  # refused: one line, no note
    r = runner.invoke(app, ["train", str(exp), "--run-dir", str(tmp_path / "c"), "-q",
                            "--training.steps", "7"])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "does not fit in memory" in r.output


def test_train_names_phase2_steps_without_two_phase(tmp_path, config, engine):
    """``training.phase2_steps`` trains nothing without ``training.two_phase``: named alone;
    a torch run's own keys give no note."""
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "a"), "-q",
                            "--training.phase2_steps", "10", "--training.dtype", "float64"])
    assert r.exit_code == 0, r.output
    assert _ignored_note(r.stderr) == ["training.phase2_steps"], r.stderr
    assert "training.two_phase" in r.stderr
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "b"), "-q"])
    assert r.exit_code == 0 and _ignored_note(r.output) is None, r.output


#: A value other than the default for every key ``learners.ignored_keys`` may name.
_NOT_DEFAULT = {
    "training.model": "nosuch_module:factory", "training.model_kwargs": {"width": 3},
    "training.steps": 7, "training.batch_size": 5, "training.optimizer": "sgd",
    "training.lr": 0.5, "training.lr_schedule": "cosine", "training.momentum": 0.5,
    "training.weight_decay": 0.1, "training.balance": False, "training.augment": True,
    "training.max_shift": 1, "training.rotation": 10.0, "training.scale": 0.1,
    "training.shear": 5.0, "training.elastic": 1.0, "training.dtype": "float64",
    "training.group_size": 4, "training.eval_batch_size": 3, "training.subset_rows": 1000,
    "training.path": "reference", "training.workers": 2, "training.save_weights": True,
    "training.phase2_steps": 5, "selection.seed": 12345, "run.chunk_size": 1}


@pytest.mark.parametrize("base", [
    {"selection": {"scheme": "knn", "k": 3}}, {"selection": {"scheme": "rnn", "r": 20.0}},
    {"selection": {"scheme": "partition", "k": 4}, "training": {"model": "sklearn:svm"}},
    {"selection": {"scheme": "with_replacement", "ns": 40, "T": 4},
     "training": {"model": "sklearn:random_forest"}}])
def test_the_keys_named_ignored_change_nothing(tmp_path, base):
    """What the note calls ignored is: every key ``ignored_keys`` names, all set at once to
    values other than their defaults, leaves the run's predictions, votes, neighbours and
    sub-dataset sizes bit for bit as they were."""
    from poisoncert.config import from_dict
    from poisoncert.executors import LocalExecutor
    from poisoncert.experiment.learners import ignored_keys

    d = {"data": {"name": "digits", "test_limit": 40}, **base}
    keys, _ = ignored_keys(from_dict(d))
    assert set(keys) <= set(_NOT_DEFAULT) and len(keys) > 10
    changed = yaml.safe_load(yaml.safe_dump(d))
    for key in keys:
        if key == "training.model_kwargs" and "training.model" not in keys:
            continue
        section, name = key.split(".")
        changed.setdefault(section, {})[name] = _NOT_DEFAULT[key]
    a = experiment.train_run(from_dict(d), tmp_path / "a", executor=LocalExecutor(1))
    b = experiment.train_run(from_dict(changed), tmp_path / "b", executor=LocalExecutor(1))
    for name in ("predictions.npy", "votes.npy", "neighbors.npy", "subset_sizes.npy"):
        if (tmp_path / "a" / name).exists():
            assert np.array_equal(np.load(tmp_path / "a" / name),
                                  np.load(tmp_path / "b" / name)), name
    assert np.array_equal(a.predictions, b.predictions)


@pytest.mark.parametrize("key, given, more", [
    ("training.dtype", "BFloat16", []), ("training.dtype", " TF32", []),
    ("training.lr_schedule", "Cosine", ["--training.path", "graphed"])])
def test_a_refusal_across_sections_echoes_what_was_given(tmp_path, config, key, given, more):
    """``--training.dtype BFloat16`` on a CPU run was refused with "Got 'bfloat16'", a value
    the user never typed (the section had spelt it its own way): the text given is echoed,
    in one line, before anything is written."""
    r = runner.invoke(app, ["train", str(config), "--run-dir", str(tmp_path / "r"),
                            f"--{key}", given, *more])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert r.output.startswith(f"error: The '{key}' parameter of the config must be ")
    assert r.output.rstrip().endswith(f"Got {given!r} instead."), r.output
    assert not (tmp_path / "r").exists()
