"""Every experiment config loads and validates, and so does every run of experiments/run.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from poisoncert.config import load_config

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*.yaml"))


def _runner():
    spec = importlib.util.spec_from_file_location("experiments_run", EXPERIMENTS / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.T >= 1


def test_runner_groups_validate():
    run = _runner()
    names = set()
    for group, items in run.GROUPS.items():
        assert items, group
        for name, config, overrides in items:
            assert name not in names, f"duplicate run name {name}"
            names.add(name)
            load_config(EXPERIMENTS / config,
                        {k: str(v) if isinstance(v, bool) else v for k, v in overrides.items()})
            assert run._group_of(name) == group


def _shared_mnist() -> bool:
    return any((p / "shared" / "data" / "mnist").is_dir() for p in EXPERIMENTS.parents)


def test_cheap_version_names_and_overrides():
    run = _runner()
    name, over = run.cheap("mnist17_ns10_binomial", "mnist17.yaml",
                           {"selection.scheme": "binomial"}, 8, {"training.steps": "5"})
    assert name.startswith("mnist17_ns10_binomial_T8_set-")
    assert over == {"selection.scheme": "binomial", "selection.T": 8, "training.steps": "5"}
    name, over = run.cheap("mnist_dpa", "mnist_dpa.yaml", {}, 12, {})
    assert name == "mnist_dpa_T12" and over == {"selection.k": 12}
    load_config(EXPERIMENTS / "mnist_dpa.yaml", over)


@pytest.mark.skipif(not _shared_mnist(), reason="shared/data (MNIST) absent")
def test_a_results_group_runs_cheaply(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import json

    monkeypatch.chdir(EXPERIMENTS.parent)
    run = _runner()
    assert run.main(["mnist17", "--T", "2", "--set", "training.steps=3",
                     "--set", "data.test_limit=20", "--runs-dir", str(tmp_path)]) == 0
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 3 and all("_T2_set-" in f for f in folders)
    timing = json.loads((tmp_path / folders[0] / "timing.json").read_text())
    assert timing["command"].startswith("python experiments/run.py mnist17 --T 2 --set")
    assert (tmp_path / folders[0] / "certificates.csv").is_file()


@pytest.mark.parametrize("args, words", [
    (["mnist17", "--workers", "0"], "--workers must be an int >= 1; got 0"),
    (["mnist17", "--T", "2", "--set", "training.steps=abc"],
     "run.py: mnist17_ns10_without_replacement_T2_set-"),
    (["--verify-update", "nosuch"], "--verify-update: one of mnist_agg_dpa; got 'nosuch'"),
    (["--verify-update", "mnist_agg_dpa"], "no update in"),
    (["mnist17", "--only", "nomatch"], "--only 'nomatch': no run of mnist17"),
])
def test_runner_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, words):
    """A bad option or config value is one line naming it, before any run is written (they
    were tracebacks: ConfigError, KeyError, FileNotFoundError; --only that named no run did
    nothing and exited 0)."""
    run = _runner()
    with pytest.raises(SystemExit) as e:
        run.main([*args, "--runs-dir", str(tmp_path / "runs")])
    text = str(e.value.code) if isinstance(e.value.code, str) else capsys.readouterr().err
    assert e.value.code != 0 and words in text, text
    assert not (tmp_path / "runs").exists()


def test_runner_only_takes_whole_names_or_patterns(tmp_path, monkeypatch, capsys):
    """``--only knn_k100`` also ran ``mnist_agg_knn_k1000`` (a part of a name chose every run
    holding it); now a whole name runs that run, a pattern with * ? [] the runs it matches,
    and a part of a name is one line listing the group's runs."""
    run = _runner()
    ran = []
    monkeypatch.setattr(run, "run_one", lambda name, *args: ran.append(name))
    for only, want in (("mnist_agg_knn_k100", ["mnist_agg_knn_k100"]),
                       ("mnist_agg_knn_*", ["mnist_agg_knn_k100", "mnist_agg_knn_k1000"])):
        ran.clear()
        assert run.main(["mnist_agg", "--only", only, "--runs-dir", str(tmp_path)]) == 0
        assert ran == want, (only, ran)
    ran.clear()
    with pytest.raises(SystemExit) as e:
        run.main(["mnist_agg", "--only", "knn_k100", "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert e.value.code != 0 and ran == [] and not list(tmp_path.iterdir())
    assert "--only 'knn_k100': no run of mnist_agg has that name" in err[-1], err
    assert "mnist_agg_knn_k100, mnist_agg_knn_k1000" in err[-1], err


def test_run_py_writes_its_json_whole_or_not_at_all(tmp_path, monkeypatch):
    """``timing.json`` and ``update.json`` decide what a rerun of experiments/run.py skips; they
    were written with ``write_text``, so a kill mid-write left a truncated file that the next
    run failed to parse. A crash between the write and the rename keeps the earlier file."""
    import json

    from poisoncert import runsafe

    run = _runner()
    path = tmp_path / "timing.json"
    path.write_text('{"sessions": []}\n')

    def crash(name):
        raise KeyboardInterrupt(name)

    monkeypatch.setattr(runsafe, "fault_point", crash)
    with pytest.raises(KeyboardInterrupt, match="write:timing.json"):
        run._write_json(path, {"sessions": [{"train_s": 1.0}]})
    assert json.loads(path.read_text()) == {"sessions": []}
    assert [p.name for p in tmp_path.iterdir()] == ["timing.json"]
    monkeypatch.undo()
    run._write_json(path, {"sessions": [{"train_s": 1.0}]})
    assert json.loads(path.read_text()) == {"sessions": [{"train_s": 1.0}]}


def test_certificate_rows_as_csv_are_what_dictwriter_writes():
    """``certificate_rows`` turns each column into Python numbers once and ``rows_csv`` writes
    lists (a T = 1000, 10,000-point certify spent most of its time in per-element ``item``
    calls and DictWriter's per-row checks): the text is DictWriter's over the per-element
    values, byte for byte, with abstentions, class names holding commas and quotes, and the
    empty cells of a missing label."""
    import csv
    import io

    import numpy as np

    from poisoncert.certify import certify
    from poisoncert.experiment.certify import certificate_rows, rows_csv

    rng = np.random.default_rng(5)
    votes = rng.multinomial(100, [0.5, 0.3, 0.2], size=40)
    votes[:5] = [34, 33, 33]  # abstentions
    cert = certify(votes, scheme="with_replacement", n=1000, ns=10, alpha=0.01)
    labels = rng.integers(0, 3, size=40)
    for lab in (labels, None):
        rows = certificate_rows(cert, votes, lab, 100, classes=np.array([3, 5, 7]),
                                class_names=['a, "b"', "c", "d"])
        want = io.StringIO()
        w = csv.DictWriter(want, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows({k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                    for r in rows)
        assert rows_csv(rows) == want.getvalue()
        assert {type(v) for r in rows for v in r.values()} <= {int, float, str, type(None)}
    assert '"a, ""b"""' in rows_csv(rows)


def _cert_table(n: int, seed: int = 3):
    import numpy as np

    from poisoncert.certify import certify

    rng = np.random.default_rng(seed)
    votes = rng.multinomial(200, [0.6, 0.3, 0.1], size=n)
    votes[:3] = [67, 67, 66]  # abstentions
    cert = certify(votes, scheme="with_replacement", n=5000, ns=100, alpha=0.001, T=200)
    return cert, votes, rng.integers(0, 3, size=n)


def test_every_certificate_type_lists_its_records_a_block_at_a_time():
    """``records(start, stop)`` (what ``certificate_row_blocks`` makes a table from, a block
    of rows at a time) are the records of those test points, with their own indices, for
    every certificate type; the blocks joined are the whole table."""
    import numpy as np

    from poisoncert import aggregation, knn, runoff
    from poisoncert.certify import dpa_certify
    from poisoncert.experiment.certify import certificate_row_blocks, certificate_rows

    rng = np.random.default_rng(11)
    cert, votes, labels = _cert_table(23)
    preds = rng.integers(-1, 3, size=(6, 23))
    scores = rng.normal(size=(6, 23, 3))
    certs = [cert, dpa_certify(votes),
             aggregation.fa_certify(preds, d=2, n_classes=3),
             runoff.roe_certify(runoff.rankings_from_scores(scores)),
             knn.knn_certify(rng.integers(0, 3, size=(23, 3)), k=3, n_classes=3),
             knn.rnn_certify(votes)]
    for c in certs:
        whole = c.records()
        assert [r["index"] for r in whole] == list(range(23))
        for block in (1, 5, 23, 100):
            assert sum((c.records(a, a + block) for a in range(0, 23, block)), []) == whole
            names = {"input": list("abcdefghijklmnopqrstuvw")}
            rows = certificate_rows(c, votes, labels, 200, extra=names)
            got = list(certificate_row_blocks(c, votes, labels, 200, block=block, extra=names))
            assert len(got) == -(-23 // block) and sum(got, []) == rows
        assert c.records(20, 99) == whole[20:]


def _traced_peak(make):
    import tracemalloc

    tracemalloc.start()
    try:
        text = make()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return text, peak


def test_certificates_csv_is_made_in_memory_bounded_by_its_text(monkeypatch):
    """certify's certificates.csv (and predict's CSV) is made a block of rows at a time: the
    memory it takes is the text (held by the writer, then its copy) and one block of rows
    (at most 4 KB a row), not a dict of about 20 Python objects per test point (10^6 test
    points took 2 GB beside 190 MB of text; predict's JSON 7 GB)."""
    from poisoncert.experiment import certify as ec

    monkeypatch.setattr(ec, "ROW_BLOCK", 256, raising=False)
    cert, votes, labels = _cert_table(10_000)
    data = {"classes": [3, 5, 7], "class_names": ["a", "b", "c"]}
    text, peak = _traced_peak(lambda: ec._certificate_csv(cert, votes, labels, 200, data=data))
    assert text.count("\n") == 10_001
    assert peak < 3 * len(text) + 256 * 4096, (peak, len(text))


def test_predict_json_rows_are_made_in_memory_bounded_by_their_text():
    """predict --json's text is json's indent=1 layout of every row, byte for byte, made a
    block of rows at a time in memory bounded by the text and one block (json's indenting
    encoder takes about 6 KB a row), not every row's objects at once."""
    import json

    from poisoncert.cli.predict import _plain, rows_json
    from poisoncert.experiment.certify import certificate_row_blocks, certificate_rows
    from poisoncert.runsafe import json_text

    cert, votes, labels = _cert_table(10_000)
    head = {"run": "r", "inputs": "x.npz", "summary": {"radius_median": float("nan")}}
    kw = {"extra": {"input": [str(i) for i in range(10_000)]}, "classes": [3, 5, 7],
          "missing": None}
    text, peak = _traced_peak(lambda: rows_json(
        head, certificate_row_blocks(cert, votes, labels, 200, block=256, **kw)))
    assert peak < 3 * len(text) + 256 * 16384, (peak, len(text))
    cert, votes, labels = _cert_table(7)
    kw["extra"] = {"input": ["a", 'b"\n', "c", "d", "e", "f", "g"]}
    rows = certificate_rows(cert, votes, labels, 200, **kw)
    for block in (1, 3, 7, 8):
        blocks = certificate_row_blocks(cert, votes, labels, 200, block=block, **kw)
        assert rows_json(head, blocks) == json_text({**head, "rows": rows}, indent=1,
                                                     default=_plain)
    assert json.loads(rows_json(head, [[]])) == {**head, "summary": {"radius_median": None},
                                                 "rows": []}
    assert json.loads(text)["rows"][9_999]["input"] == "9999"
    assert json.loads(text)["rows"][2]["radius"] == -1  # an abstention
