"""Progress people can trust: the bar advances per finished group wherever a chunk runs, and
its rate and ETA are the work done since the work began over the time since then."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

from poisoncert import experiment
from poisoncert.cli.progress import rate_and_eta, rich_progress
from poisoncert.config import from_dict
from poisoncert.executors import LocalExecutor

pytest.importorskip("torch")

CONFIG = {"data": {"name": "digits", "test_limit": 40},
          "selection": {"scheme": "without_replacement", "ns": 40, "T": 12, "seed": 1},
          "training": {"model": "mlp", "steps": 3, "group_size": 2},
          "run": {"chunk_size": 6}}


def _recorder(steps):
    @contextmanager
    def display(total, completed, label):
        steps.append(("start", total, completed))
        yield steps.append

    return display


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_is_per_group_in_process_and_in_workers(tmp_path, workers):
    steps: list = []
    res = experiment.train_run(from_dict(CONFIG), tmp_path / "run",
                               executor=LocalExecutor(workers), progress=_recorder(steps))
    assert steps[0] == ("start", 12, 0)
    # the work's beginning (workers started, data loaded) is said once, before any unit, so
    # that the bar's rate leaves the start-up out
    assert steps[1] == 0 and 0 not in steps[2:], steps
    advances = steps[2:]
    assert sum(advances) == 12 and all(0 < k <= 2 for k in advances), advances
    assert len(advances) == 6  # one per group of 2 (chunks hold 3 groups)
    # a finished run trained again is read, not trained: no training bar (the CLI says
    # there is nothing to train)
    steps.clear()
    again = experiment.train_run(from_dict(CONFIG), tmp_path / "run",
                                 executor=LocalExecutor(workers), progress=_recorder(steps))
    assert steps == [] and np.array_equal(again.predictions, res.predictions)
    # a resumed run starts the bar at what is done and adds only what it trains
    (tmp_path / "run" / "chunks" / "chunk-00001.npz").unlink()
    again = experiment.train_run(from_dict(CONFIG), tmp_path / "run",
                                 executor=LocalExecutor(workers), progress=_recorder(steps))
    assert steps[0] == ("start", 12, 6) and steps[1] == 0 and sum(steps[2:]) == 6, steps
    assert np.array_equal(again.predictions, res.predictions)


def test_train_run_takes_true_for_the_bar_and_refuses_what_is_no_display(tmp_path, capsys):
    """``progress=True`` is the command line's bar, drawn on stderr (stdout stays clean);
    anything else that is not a display is one clear error, before anything is written."""
    experiment.train_run(from_dict(CONFIG), tmp_path / "run", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "12/12" in err
    with pytest.raises(ValueError, match=r"^The 'progress' parameter of train_run must be None, "
                                         r"False, True \(a progress bar\) or a progress "
                                         r"display .*Got 'yes' instead\.$"):
        experiment.train_run(from_dict(CONFIG), tmp_path / "other", progress="yes")
    assert not (tmp_path / "other").exists()


def test_rate_and_eta():
    assert rate_and_eta(0, 100, 5.0) == (None, None)
    rate, eta = rate_and_eta(50, 150, 10.0)
    assert rate == 5.0 and eta == 30.0
    assert rate_and_eta(10, 0, 2.0) == (5.0, 0.0)


def test_rich_progress_counts_from_a_resumed_start(monkeypatch):
    """The rate counts only the work done since the bar started (a resumed run's finished
    classifiers do not make it look fast)."""
    from rich.console import Console

    import poisoncert.cli.progress as prog

    now = [100.0]
    monkeypatch.setattr(prog.time, "monotonic", lambda: now[0])
    console = Console(record=True, width=120, force_terminal=False)
    monkeypatch.setattr(prog, "_console", lambda: console)
    with rich_progress(100, 60, "run") as advance:
        now[0] = 110.0
        advance(20)  # 20 in 10 s: 2/s, 20 left: 10 s
    text = console.export_text()
    assert "80/100" in text and "2 models/s" in text and "ETA 00:10" in text


def _fake_bar(monkeypatch, now, terminal=True):
    from rich.console import Console

    import poisoncert.cli.progress as prog

    monkeypatch.setattr(prog.time, "monotonic", lambda: now[0])
    console = Console(record=True, width=120, force_terminal=terminal)
    monkeypatch.setattr(prog, "_console", lambda: console)
    return console


def test_rich_progress_times_its_rate_from_the_work_not_the_start_up(monkeypatch):
    """``train --workers 2`` on MNIST 1/7 spent 8 s starting its workers (spawn, imports, the
    data) before the first classifier trained: timed from the bar's opening, the ETA at 12 %
    said 143 s where 64 s were left. The rate is timed from ``advance(0)``, the work's beginning; a
    resumed run's classifiers still do not count."""
    now = [100.0]
    console = _fake_bar(monkeypatch, now)
    with rich_progress(200, 40, "run") as advance:
        now[0] = 109.0  # 9 s of start-up
        advance(0)
        now[0] = 111.0
        advance(0)  # another worker's beginning changes nothing
        now[0] = 113.0
        advance(16)  # 16 in 4 s since the work began: 4/s, 144 left: 36 s
    text = console.export_text()
    # timed from the bar's start the rate would be 16/13 = 1.23/s, the ETA 1:57
    assert "56/200" in text and "4 models/s" in text and "ETA 00:36" in text, text
    assert "00:13 ETA" in text  # the elapsed time is still the bar's


def test_rate_clock_begins_once_and_counts_only_this_sessions_work():
    from poisoncert.cli.progress import RateClock

    now = [0.0]
    clock = RateClock(60, clock=lambda: now[0])
    assert clock.rate_and_eta(60, 100) == (None, None)
    now[0] = 5.0
    clock.begin(62)  # 2 empty sub-datasets reported before the training began
    clock.begin(70)  # ignored: the first beginning counts
    now[0] = 15.0
    assert clock.rate_and_eta(62, 100) == (None, None)  # nothing trained since it began
    assert clock.rate_and_eta(82, 100) == (2.0, 9.0)  # 20 in 10 s; 18 left
    assert clock.elapsed() == 15.0
    # without a beginning the bar's opening is the start (displays fed by no trainer)
    now[0] = 0.0
    other = RateClock(0, clock=lambda: now[0])
    now[0] = 4.0
    assert other.rate_and_eta(8, 10) == (2.0, 1.0)


def test_the_relay_says_the_work_began_once_before_any_unit():
    from poisoncert.experiment.train import _ProgressRelay

    seen: list = []
    relay = _ProgressRelay(seen.append, [(0, 4), (4, 8)])
    relay.report(1, 0)
    relay.report(0, 0)
    relay.report(1, 2)
    relay.finish(1)
    relay.report(0, 4)
    assert seen == [0, 2, 2, 4]


def test_a_log_file_gets_a_line_a_minute_with_the_rate_and_eta(monkeypatch):
    """Where stderr is no terminal (``train ... 2> log``, ``nohup``), a run of hours wrote one
    line at its end: now a plain line (no escape codes) when work finishes a minute or more
    after the last one, and one at the end, with the rate timed from the work's beginning."""
    from poisoncert.cli.progress import LOG_INTERVAL

    assert LOG_INTERVAL == 60.0
    now = [0.0]
    console = _fake_bar(monkeypatch, now, terminal=False)
    with rich_progress(1000, 100, "bagging T=1000") as advance:
        now[0] = 10.0
        advance(0)  # 10 s of start-up
        for _ in range(90):  # 10 a second for 90 s
            now[0] += 1.0
            advance(10)
        now[0] = 200.0
    lines = console.export_text().splitlines()
    assert lines == [
        # a minute after the bar opened: 500 done in the 50 s since the work began, 400 left
        "bagging T=1000: 600/1000 models, 10 models/s, 01:00 elapsed, ETA 00:40",
        # the end (here after a pause): 900 in 190 s
        "bagging T=1000: 1000/1000 models, 4.74 models/s, 03:20 elapsed, ETA 00:00"], lines
    assert "\x1b" not in console.export_text(styles=True)


def test_the_log_line_is_written_when_the_work_stops(monkeypatch):
    now = [0.0]
    console = _fake_bar(monkeypatch, now, terminal=False)
    with pytest.raises(KeyboardInterrupt), rich_progress(10, 0, "run") as advance:
        now[0] = 5.0
        advance(2)
        raise KeyboardInterrupt
    assert console.export_text() == "run: 2/10 models, 0.4 models/s, 00:05 elapsed, ETA 00:20\n"
