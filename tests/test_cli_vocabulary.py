"""One CLI vocabulary: the same option names on every command, --json wherever results are
printed, and help text that shows what it says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import typer
import yaml
from typer.testing import CliRunner

from poisoncert import runs
from poisoncert.cli import app

runner = CliRunner()

CONFIG = {"data": {"name": "digits", "test_limit": 40},
          "selection": {"scheme": "without_replacement", "ns": 40, "T": 8, "seed": 1},
          "training": {"model": "mlp", "steps": 3, "group_size": 4},
          "run": {"chunk_size": 8}}


def _commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    return dict(group.commands)


def _flat(text: str) -> str:
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_shows_every_option_help_as_written(name):
    """Rich's help renderer reads [..] as markup; nothing of an option's help may vanish."""
    cmd = _commands()[name]
    r = runner.invoke(app, [name, "--help"], terminal_width=200)
    assert r.exit_code == 0
    shown = _flat(r.output)
    for p in cmd.params:
        if getattr(p, "help", None) and not getattr(p, "hidden", False):
            want = _flat(re.sub(r"\\(\[)", r"\1", p.help))
            assert want in shown, (name, p.name, want)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_paragraphs_wrap_at_the_terminal_not_at_the_docstring(name):
    """Each paragraph of a command's help is one line on a wide terminal: the docstring's own
    line breaks are not kept (they wrapped raggedly on an 80-column one)."""
    cmd = _commands()[name]
    r = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"})  # rich reads COLUMNS
    assert r.exit_code == 0
    lines = [" ".join(line.split()) for line in r.output.splitlines()]
    for para in (cmd.help or "").split("\n\n"):
        assert " ".join(para.split()) in lines, (name, para)


def test_commands_that_print_results_take_json():
    for name, cmd in _commands().items():
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert "--json" in opts, name


def test_rhos_on_train_and_certify(tmp_path):
    pytest.importorskip("torch")
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(cfg), "--run-dir", str(run), "--rhos", "0,1,3",
                            "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["T"] == 8 and out["chunks_trained"] == 1 and out["run_dir"] == str(run)
    assert yaml.safe_load((run / "config.yaml").read_text())["certify"]["rhos"] == [0, 1, 3]
    r = runner.invoke(app, ["certify", str(run), "--json", "--no-plot"])
    doc = json.loads(r.stdout)
    assert [row["rho"] for row in doc["certified_accuracy"]] == [0, 1, 3]
    r = runner.invoke(app, ["certify", str(run), "--rhos", "0,2", "--rho", "5", "--json",
                            "--no-plot"])
    assert [row["rho"] for row in json.loads(r.stdout)["certified_accuracy"]] == [0, 2, 5]
    r = runner.invoke(app, ["certify", str(run), "--rhos", "0,x"])
    assert r.exit_code == 1 and r.output.startswith("error: The '--rhos' parameter")


@pytest.mark.parametrize("name", [None, *sorted(_commands())])
def test_help_shows_no_value_for_a_flag(name):
    """typer's rich help gave every flag a type, ``--json <bool>``, ``--help <bool>``, as if it
    took a value (``--json true`` is an error), and a repeatable option ``<list[int]>``, as if
    it took a list: a flag shows none, a repeatable option the type of one value."""
    r = runner.invoke(app, [*([name] if name else []), "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert "<bool>" not in r.output and "<list[" not in r.output, r.output
    for line in r.output.splitlines():
        words = _flat(line).split()
        if words[:1] == ["--json"]:
            assert words[1] == "Print" or words[1:3] == ["JSON", "instead"] or \
                words[1] == "Machine-readable", line


def test_a_usage_error_of_an_option_names_its_commands_help(capsys):
    """``poisoncert certify RUN --json=1`` or ``--alpha`` without a value pointed at
    ``poisoncert --help``, which lists no option of certify."""
    from poisoncert.cli import main

    for argv, words in ((["certify", "run", "--json=1"], "Option '--json' does not take a "
                                                          "value."),
                        (["train", "exp.yaml", "--workers"], "Option '--workers' requires an "
                                                            "argument.")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert err == f"error: {words} (see 'poisoncert {argv[0]} --help')\n", err


def test_certify_shows_the_checksums_it_reads_and_takes_quiet(tmp_path, monkeypatch):
    """certify first reads every checksummed file of a run (its weights: gigabytes for a
    large run) without a word; it shows a bar in MiB, with rate and ETA, from VERIFY_BAR_MIB
    on, and -q / --quiet (as on train, predict, attack and update; 'No such option' here)
    leaves it out, as --json does."""
    pytest.importorskip("torch")
    from contextlib import contextmanager

    import poisoncert.cli.runs as cli_runs
    from poisoncert.experiment import certify_run

    run = _run_with_weights(tmp_path)
    seen = []

    @contextmanager
    def display(total, completed, label):
        seen.append([total, completed, label, 0])
        yield lambda k: seen[-1].__setitem__(3, seen[-1][3] + k)

    certify_run(run, plot=False, progress=display)
    sums = json.loads((run / "manifest.json").read_text())["checksums"]
    size = sum((run / rel).stat().st_size for rel in sums)
    mib = -(-size // 2**20)  # the bytes' MiB, rounded up once (not each file's)
    assert seen == [[mib, 0, "checksums", mib]], (seen, size, len(sums))
    assert mib < len(sums)  # files of less than a MiB each: rounded up each, one per file
    monkeypatch.setattr(cli_runs, "VERIFY_BAR_MIB", 0)
    loud = runner.invoke(app, ["certify", str(run), "--no-plot"])
    assert loud.exit_code == 0, loud.output
    assert "verifying checksums" in loud.stderr and "MiB/s" in loud.stderr, loud.stderr
    for args in (["-q"], ["--quiet"]):
        r = runner.invoke(app, ["certify", str(run), "--no-plot", *args])
        assert r.exit_code == 0 and r.stderr == "" and r.stdout == loud.stdout, r.output
    r = runner.invoke(app, ["certify", str(run), "--no-plot", "--json"])
    assert r.exit_code == 0 and r.stderr == "", r.output
    monkeypatch.setattr(cli_runs, "VERIFY_BAR_MIB", mib + 1)  # a small run: no bar
    r = runner.invoke(app, ["certify", str(run), "--no-plot"])
    assert r.exit_code == 0 and r.stderr == "", r.output


def test_attack_update_and_predict_show_the_checksums_they_read(tmp_path, monkeypatch):
    """attack, update and predict read every checksummed file of a run (gigabytes of
    weights) before their work without a word, so a large run looked hung: they show
    certify's bar in MiB from VERIFY_BAR_MIB on (a knn run's update and predict too), and
    none with -q, nor for a small run, nor with --json but for predict, whose --json is a
    format and whose own bar shows with it."""
    pytest.importorskip("torch")
    import numpy as np

    import poisoncert.cli.runs as cli_runs

    run = _run_with_weights(tmp_path)
    knn_cfg = tmp_path / "knn.yaml"
    knn_cfg.write_text(yaml.safe_dump({**CONFIG, "selection": {"scheme": "knn", "k": 3}}))
    knn_run = tmp_path / "knn"
    assert runner.invoke(app, ["train", str(knn_cfg), "--run-dir", str(knn_run),
                               "-q"]).exit_code == 0
    from sklearn.datasets import load_digits

    np.savez(tmp_path / "x.npz", x=load_digits().images[-3:].astype(np.uint8))
    outs = iter(range(100))

    def commands():
        yield ["attack", str(run), "--attacks", "remove", "--budgets", "1", "--targets", "1",
               "--out", str(tmp_path / "att"), "--force"]
        for r in (run, knn_run):
            yield ["update", str(r), "--out", str(tmp_path / f"u{next(outs)}"), "--remove",
                   "1"]
            yield ["predict", str(r), str(tmp_path / "x.npz"), "--out",
                   str(tmp_path / f"p{next(outs)}.csv")]

    for bar_mib, flags, shown in ((0, [], True), (0, ["-q"], False), (0, ["--json"], False),
                                  (10 ** 6, [], False)):
        monkeypatch.setattr(cli_runs, "VERIFY_BAR_MIB", bar_mib)
        for args in commands():
            r = runner.invoke(app, [*args, *flags])
            assert r.exit_code == 0, (args, r.output)
            # predict's --json is a format (its own bar shows too, on stderr): -q alone
            # hides its bars
            expect = shown or (args[0] == "predict" and flags == ["--json"])
            assert ("verifying checksums" in r.stderr) is expect, (args, flags, r.stderr)
            if shown:
                assert "MiB/s" in r.stderr, r.stderr


def test_train_again_on_a_finished_run_shows_the_checksums_it_reads(tmp_path, monkeypatch):
    """``train`` again on a finished run with nothing to train checks every file against its
    manifest's SHA-256 (gigabytes of weights for a large run) before "Nothing to train",
    without a word: it shows certify's bar in MiB from VERIFY_BAR_MIB on, and none with -q,
    --json, or for a small run; train_run takes ``verify_progress`` as attack_run does."""
    pytest.importorskip("torch")
    from contextlib import contextmanager

    import poisoncert.cli.runs as cli_runs
    from poisoncert.experiment import train_run

    run = _run_with_weights(tmp_path)
    cfg = tmp_path / "exp.yaml"
    seen = []

    @contextmanager
    def display(total, completed, label):
        seen.append([total, completed, label, 0])
        yield lambda k: seen[-1].__setitem__(3, seen[-1][3] + k)

    res = train_run(cfg, run, verify_progress=display)
    assert res.chunks_trained == 0
    sums = json.loads((run / "manifest.json").read_text())["checksums"]
    mib = -(-sum((run / rel).stat().st_size for rel in sums) // 2**20)
    assert seen == [[mib, 0, "checksums", mib]], seen
    for bar_mib, flags, shown in ((0, [], True), (0, ["-q"], False), (0, ["--json"], False),
                                  (10 ** 6, [], False)):
        monkeypatch.setattr(cli_runs, "VERIFY_BAR_MIB", bar_mib)
        r = runner.invoke(app, ["train", str(cfg), "--run-dir", str(run), *flags])
        assert r.exit_code == 0, (flags, r.output)
        assert ("verifying checksums" in r.stderr) is shown, (flags, r.stderr)
        if shown:
            assert "MiB/s" in r.stderr and "Nothing to train" in r.stdout, r.output
        else:
            assert r.stderr == "", (flags, r.stderr)


def test_certify_refuses_its_options_before_reading_the_checksums(tmp_path):
    """``certify RUN --alpha 2`` read every checksummed file of the run (gigabytes of weights,
    under the new bar from VERIFY_BAR_MIB on) and only then refused --alpha: the options are
    now checked before any file is read, the display never opened."""
    pytest.importorskip("torch")
    from contextlib import contextmanager

    from poisoncert.experiment import certify_run

    run = _run_with_weights(tmp_path)
    opened = []

    @contextmanager
    def display(total, completed, label):
        opened.append(label)
        yield lambda k: None

    for bad in ({"alpha": 2.0}, {"model": "P9"}, {"rhos": [-1]}):
        with pytest.raises(ValueError):
            certify_run(run, plot=False, progress=display, **bad)
    assert opened == []
    certify_run(run, plot=False, progress=display)
    assert opened == ["checksums"]


def test_ctrl_c_in_certify_radius_and_delta_is_one_line_and_130(tmp_path, monkeypatch):
    """certify, radius and delta stopped by Ctrl-C exited 130 without a word (typer's own
    handling), where train, predict, attack and update say what is left."""
    import poisoncert.experiment as experiment
    import poisoncert.plots as plots

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "certify_run", stop)
    r = runner.invoke(app, ["certify", str(tmp_path)])
    assert r.exit_code == 130 and r.stderr == (
        "interrupted: the run itself is untouched; the same command certifies it "
        "(certify.json, written last, marks a whole set of outputs).\n"), r.output
    monkeypatch.setattr(plots, "delta_curves", stop)
    r = runner.invoke(app, ["delta", "--out", str(tmp_path / "d.png")])
    assert r.exit_code == 130 and r.stderr == "interrupted: nothing was written.\n", r.output
    assert not (tmp_path / "d.png").exists()
    monkeypatch.setattr("poisoncert.bounds.SelectionBound.radius", stop)
    r = runner.invoke(app, ["radius", "--scheme", "wr", "--n", "100", "--ns", "10", "--gap",
                            "0.5"])
    assert r.exit_code == 130 and r.stderr == "interrupted: nothing was written.\n", r.output


def test_ctrl_c_while_the_command_line_starts_is_one_line_and_130(monkeypatch, capsys):
    """Ctrl-C in the first half second of a command (the console script importing the command
    line, typer building its commands, typer parsing the options) was a traceback of 20-70
    lines, or a silent exit 130 (typer's own handling): now one line and 130, from the
    console script (``_console``) and from ``cli.main``."""
    import importlib.abc
    import sys

    from poisoncert import _console
    from poisoncert.cli import main

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    line = "interrupted while starting: nothing was done.\n"

    class StopImport(importlib.abc.MetaPathFinder):  # Ctrl-C while poisoncert.cli imports
        def find_spec(self, name, path=None, target=None):
            if name == "poisoncert.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "poisoncert.cli")
    monkeypatch.setattr(sys, "meta_path", [StopImport(), *sys.meta_path])
    with pytest.raises(SystemExit) as e:
        _console.main()
    assert e.value.code == 130 and capsys.readouterr().err == line
    monkeypatch.undo()

    for where in ("typer.main.get_command",  # typer builds the click commands
                  "typer.core.TyperGroup.make_context"):  # typer parses the command line
        with monkeypatch.context() as m:
            m.setattr(where, stop)
            with pytest.raises(SystemExit) as e:
                main(["radius", "--scheme", "wr", "--n", "100", "--ns", "10", "--gap", "0.5"])
        assert e.value.code == 130 and capsys.readouterr().err == line, where
    # a command that says what Ctrl-C left says it alone
    monkeypatch.setattr("poisoncert.bounds.SelectionBound.radius", stop)
    with pytest.raises(SystemExit) as e:
        main(["radius", "--scheme", "wr", "--n", "100", "--ns", "10", "--gap", "0.5"])
    assert e.value.code == 130
    assert capsys.readouterr().err == "interrupted: nothing was written.\n"


def test_the_package_lists_its_lazy_names_and_imports_no_numpy():
    """A review's case: certified_radius and delta became names imported on first use
    (import poisoncert without numpy), and dir(poisoncert) (tab completion) no longer listed
    them. A fresh interpreter: every name of __all__ in dir(), numpy not imported by that."""
    import subprocess
    import sys
    from pathlib import Path

    import poisoncert

    code = ("import sys, types, poisoncert; names = dir(poisoncert); "
            "print(all(n in names for n in poisoncert.__all__), 'numpy' in sys.modules, "
            "[n for n in names if not n.startswith('_') and n not in poisoncert.__all__ "
            "and not isinstance(getattr(poisoncert, n), types.ModuleType)])")
    src = str(Path(poisoncert.__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": src}, timeout=60, check=True).stdout
    # and nothing else but submodules: the set-up's helper (reproducible_blas) and the
    # __future__ import (annotations) were listed as the package's own names
    assert out.split() == ["True", "False", "[]"], out


def test_ctrl_c_while_a_finished_command_prints_does_not_say_nothing_was_done(
        tmp_path, monkeypatch, capsys):
    """A review's case: a Ctrl-C after a command's work (a run trained, its files written)
    while it printed its summary reached typer (a silent 130), and cli.main then said
    'interrupted while starting: nothing was done.' of a finished run. Now it says the
    work was done and the printed lines may be cut short."""
    from poisoncert.cli import main

    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("poisoncert.cli.runs._data_folder", stop)  # a line of its summary
    with pytest.raises(SystemExit) as e:
        main(["train", str(cfg), "--run-dir", str(run), "-q"])
    err = capsys.readouterr().err
    assert e.value.code == 130 and err.count("\n") == 1, err
    assert "nothing was done" not in err and err.startswith(
        "interrupted while printing its results: the command's work was done"), err
    assert (run / runs.MANIFEST).is_file()  # the run is whole: train again has nothing to do
    monkeypatch.undo()
    r = runner.invoke(app, ["train", str(cfg), "--run-dir", str(run)])
    assert r.exit_code == 0 and "Nothing to train" in r.output, r.output


def _run_with_weights(tmp_path: Path) -> Path:
    """A small run of ``CONFIG`` that keeps its weights (checksummed files of some size)."""
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "training": {**CONFIG["training"],
                                                          "save_weights": True}}))
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--run-dir", str(run), "-q"]).exit_code == 0
    return run


def test_version_prints_the_package_version_pyproject_gives():
    """``poisoncert --version`` was "No such option: --version": a user reporting a problem had
    to ask Python. It prints the version, which is pyproject.toml's (the two are written in two
    places, so a release that bumps one is caught), and exits 0 before any command."""
    import tomllib

    import poisoncert

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml")
                            .read_text())["project"]
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output == f"poisoncert {project['version']}\n"
    assert poisoncert.__version__ == project["version"]
    assert "--version" in runner.invoke(app, ["--help"]).output


@pytest.mark.parametrize("rhos", ["", "1.5", "0,,5", "-5"])
def test_train_refuses_the_rhos_certify_refuses(tmp_path, rhos):
    """``train --rhos ""`` trained the whole run and stored ``certify.rhos: []``, so that
    ``certify`` printed an empty table (``certify --rhos ""`` is refused); ``--rhos 1.5`` said
    only "a list of ints". Now each is one line naming --rhos, its range and the value,
    before anything is written."""
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(cfg), "--run-dir", str(run), "--rhos", rhos])
    assert r.exit_code == 1, r.output
    assert r.output.startswith("error: The '--rhos' parameter of train must be comma-separated "
                               "ints in the range [0, 2^53]"), r.output
    assert f"Got {rhos!r} instead." in r.output and not run.exists()


def test_certify_of_a_knn_run_names_k_not_t(tmp_path):
    """``certify`` of a knn run printed 'scheme knn, model P6, T 1' (the config's T of a run
    that trains no base classifiers, as train says); it names k, the run's own setting."""
    cfg = tmp_path / "exp.yaml"
    knn = {**CONFIG, "selection": {"scheme": "knn", "k": 3}, "training": {}}
    cfg.write_text(yaml.safe_dump(knn))
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(cfg), "--run-dir", str(run), "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["certify", str(run), "--no-plot"])
    assert r.exit_code == 0, r.output
    assert "scheme knn, k 3, model P6\n" in r.stdout, r.stdout


#: A bad value for every option of every command (``poisoncert --help``), and the option the
#: refusal must name, as typed; RUN, CFG, INPUTS and TMP stand for a small trained run, its
#: config, a .npz of inputs and a scratch folder. Before, radius, train, certify, demo,
#: predict, attack and update named some options by their Python names ("The 'ns' parameter
#: of radius", "The 'workers' parameter of demo") or behind a prefix ("--gpus-per-task: The
#: 'gpus_per_task' parameter of train", "--targets: The 'targets' parameter of attack_run").
_R = ["radius", "--scheme", "wor", "--n", "100", "--ns", "10"]
_T = ["train", "CFG", "--run-dir", "TMP/new", "-q"]
_REFUSALS = [
    (["radius", "--scheme", "xyz", "--n", "100", "--ns", "10", "--gap", "0.5"], "--scheme"),
    (["radius", "--scheme", "wor", "--n", "0", "--ns", "10", "--gap", "0.5"], "--n"),
    (["radius", "--scheme", "wor", "--n", "1e3", "--ns", "10", "--gap", "0.5"], "--n"),
    ([*_R[:-1], "0", "--gap", "0.5"], "--ns"),
    (["radius", "--scheme", "wor", "--n", "100", "--gap", "0.5"], "--ns"),  # not given
    (["radius", "--scheme", "binomial", "--n", "100", "--p", "1.5", "--gap", "0.5"], "--p"),
    ([*_R, "--gap", "0.5", "--model", "P9"], "--model"),
    ([*_R, "--gap", "3"], "--gap"),
    ([*_R, "--gap", "x"], "--gap"),
    ([*_R, "--counts", "a,b"], "--counts"),
    ([*_R, "--counts", "90,10", "--T", "0"], "--T"),
    ([*_R, "--gap", "0.5", "-T", "5"], "--T"),
    ([*_R, "--counts", "90,10", "--alpha", "2"], "--alpha"),
    ([*_R, "--counts", "90,10", "--method", "xyz"], "--method"),
    ([*_R, "--counts", "90,10", "--labels", "0"], "--labels"),
    ([*_R, "--counts", "90,10", "--method", "true_label", "--labels", "7"], "--labels"),
    ([*_R, "--counts", "90,10", "--rule", "xyz"], "--rule"),
    (["delta", "--rho-max", "0"], "--rho-max"),
    (["delta", "--n", "0", "--ns", "1"], "--n"),
    (["delta", "--n", "10", "--ns", "0"], "--ns"),
    (["delta", "--model", "P9"], "--model"),
    (["delta", "--scheme", "xyz"], "--scheme"),
    (["delta", "--steps", "0"], "--steps"),
    (["delta", "--out", "TMP/f.txt"], "--out"),
    ([*_T, "--executor", "xyz"], "--executor"),
    ([*_T, "--workers", "0"], "--workers"),
    ([*_T, "--workers", "0", "--executor", "ray"], "--workers"),
    ([*_T, "--address", "auto"], "--address"),
    ([*_T, "--device", "xyz"], "--device"),
    ([*_T, "--devices", "xyz"], "--devices"),
    ([*_T, "--devices", "cpu,cuda"], "--devices"),
    ([*_T, "--gpus-per-task", "-1", "--executor", "ray"], "--gpus-per-task"),
    ([*_T, "--gpus-per-task", "1", "--device", "cpu"], "--gpus-per-task"),
    ([*_T, "--rhos", "a"], "--rhos"),
    (["certify", "RUN", "--alpha", "2"], "--alpha"),
    (["certify", "RUN", "--method", "xyz"], "--method"),
    (["certify", "RUN", "--model", "P9"], "--model"),
    (["certify", "RUN", "--rhos", "a"], "--rhos"),
    (["certify", "RUN", "--rho", "-1"], "--rho"),
    (["certify", "RUN", "--aggregation", "xyz"], "--aggregation"),
    (["demo", "--workers", "0", "--quick", "-q", "--out", "TMP/demo"], "--workers"),
    (["predict", "RUN", "INPUTS", "--out", "TMP/none/x.csv"], "--out"),
    (["predict", "RUN", "INPUTS", "--alpha", "2"], "--alpha"),
    (["predict", "RUN", "INPUTS", "--method", "xyz"], "--method"),
    (["predict", "RUN", "INPUTS", "--model", "P9"], "--model"),
    (["predict", "RUN", "INPUTS", "--device", "xyz"], "--device"),
    (["attack", "RUN", "--attacks", "xyz"], "--attacks"),
    (["attack", "RUN", "--budgets", "a"], "--budgets"),
    (["attack", "RUN", "--attacks", "flip", "--targets", "0"], "--targets"),
    (["attack", "RUN", "--seed", "-1"], "--seed"),
    (["attack", "RUN", "--attacks", "backdoor", "--backdoor-label", "99"], "--backdoor-label"),
    (["attack", "RUN", "--attacks", "backdoor", "--patch", "0"], "--patch"),
    (["attack", "RUN", "--attacks", "flip", "--patch", "2"], "--patch"),
    (["attack", "RUN", "--attacks", "insert", "--copies", "0"], "--copies"),
    (["attack", "RUN", "--attacks", "flip", "--max-radius", "-1"], "--max-radius"),
    (["update", "RUN", "--out", "TMP/u", "--remove", "x"], "--remove"),
    (["update", "RUN", "--out", "TMP/u", "--remove", "99999"], "--remove"),
    (["update", "RUN", "--out", "TMP/u", "--relabel", "x"], "--relabel"),
    (["update", "RUN", "--out", "TMP/u", "--relabel", "0:99"], "--relabel"),
    (["update", "RUN", "--out", "TMP/u", "--add", "TMP/none.npz"], "--add"),
]
#: Config keys given as ``--section.key`` (or read from the file): the line names the key.
_KEYS = [
    ([*_T, "--training.workers", "0"], "training.workers"),
    ([*_T, "--training.device", "xyz"], "training.device"),
    ([*_T, "--certify.alpha", "2"], "certify.alpha"),
    ([*_T, "--selection.ns", "0"], "selection.ns"),
]


@pytest.fixture(scope="module")
def probe_paths(tmp_path_factory):
    pytest.importorskip("torch")
    import numpy as np

    tmp = tmp_path_factory.mktemp("probe")
    run = _run_with_weights(tmp)
    np.savez(tmp / "inputs.npz", x=np.zeros((3, 64)))
    return {"RUN": str(run), "CFG": str(tmp / "exp.yaml"), "INPUTS": str(tmp / "inputs.npz"),
            "TMP": str(tmp)}


def _refusal(argv: list[str], paths: dict[str, str], capsys) -> str:
    from poisoncert.cli import main

    words = []
    for w in argv:
        for k, v in paths.items():
            w = w.replace(k, v) if w == k or w.startswith(f"{k}/") else w
        words.append(w)
    with pytest.raises(SystemExit) as e:
        main(words)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if not x.startswith(("note:", "warning:"))]
    assert e.value.code == 1 and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv, option", _REFUSALS,
                         ids=[f"{a[0]}{o}-{a[a.index(o) + 1] if o in a else ''}"
                              for a, o in _REFUSALS])
def test_every_option_refusal_names_the_option_as_typed(probe_paths, capsys, argv, option):
    """One shape for every command and every option: "The '--ns' parameter of radius must be
    ... Got 0 instead.", whichever library function or config key checked the value (typer's
    own "Invalid value for '--n'" too, with its pointer to the command's help). The library's
    messages keep the Python names (``test_library_errors_keep_the_python_names``)."""
    line = _refusal(argv, probe_paths, capsys)
    assert line.startswith(f"error: The '{option}' parameter of {argv[0]} must "), line
    if option != "--add":  # (a file that could not be read says why, not what was given)
        assert re.search(r"\. Got .+ instead(\.| \(see 'poisoncert \w+ --help'\))$", line), line


@pytest.mark.parametrize("argv, key", _KEYS, ids=[k for _, k in _KEYS])
def test_a_config_key_given_as_an_override_is_named_as_the_key(probe_paths, capsys, argv,
                                                               key):
    line = _refusal(argv, probe_paths, capsys)
    assert line.startswith(f"error: The '{key}' parameter of the config must be "), line


def test_library_errors_keep_the_python_names():
    """The command line's words are the CLI's (``cli.certs.typed_words``, at its boundary):
    a Python caller still reads the parameter it passed."""
    from poisoncert.bounds import SelectionBound
    from poisoncert.cli.certs import typed_words
    from poisoncert.executors import check_workers

    with pytest.raises(ValueError, match=r"^The 'ns' parameter of SelectionBound must be "):
        SelectionBound("without_replacement", 100, ns=0)
    with pytest.raises(ValueError, match=r"^The 'workers' parameter of demo must be "):
        check_workers(0, "workers", "demo")
    message = "The 'ns' parameter of radius must be an int >= 1. Got 0 instead."
    assert typed_words(message) == message  # outside a command: as it is
