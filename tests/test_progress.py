"""Progress people can trust: the bar advances per finished group wherever a chunk runs, and
its rate and ETA are the work done since the start over the time since then."""

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
    advances = steps[1:]
    assert sum(advances) == 12 and all(0 < k <= 2 for k in advances), advances
    assert len(advances) == 6  # one per group of 2 (chunks hold 3 groups)
    # a resumed run starts the bar at what is done and adds nothing
    steps.clear()
    again = experiment.train_run(from_dict(CONFIG), tmp_path / "run",
                                 executor=LocalExecutor(workers), progress=_recorder(steps))
    assert steps == [("start", 12, 12)]
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
