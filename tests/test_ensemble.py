"""A trained run in use: ``poisoncert.Ensemble`` and ``poisoncert predict`` on new inputs.

The acceptance case of issue 12 on a small scale: an MNIST 1/7 run (``experiments/mnist17.yaml``
with a small ``T``, on MNIST-format IDX files written here with learnable 1s and 7s, so the
test needs no download), its test images written as PNG files, and ``poisoncert predict``
giving each the prediction, radius, bounds and votes of ``poisoncert certify`` on the same
test point; ``Ensemble.load(...).certify(x)`` likewise. Then every damaged, foreign or
mismatched file and input gives one clear line and exit code 1.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

pytest.importorskip("torch")

import poisoncert  # noqa: E402
from poisoncert import Ensemble, experiment, runs  # noqa: E402
from poisoncert.certify import certified_accuracy  # noqa: E402
from poisoncert.cli import app  # noqa: E402
from poisoncert.experiment.ensemble import ENSEMBLE_JSON  # noqa: E402
from poisoncert.runs import RunError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

def _idx(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                    for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _digits(labels: np.ndarray, rng) -> np.ndarray:
    """28x28 uint8 images: a 1 is a vertical stroke, a 7 a bar and a slanted stroke (with
    jitter and noise), other digits a blob; learnable by LeNet-5 in a few steps."""
    x = rng.integers(0, 40, (len(labels), 28, 28)).astype(np.int64)
    for i, c in enumerate(labels):
        dy, dx = rng.integers(-2, 3, 2)
        if c == 1:
            x[i, 5 + dy:23 + dy, 12 + dx:16 + dx] += 200
        elif c == 7:
            x[i, 5 + dy:9 + dy, 7 + dx:21 + dx] += 200
            for r in range(9, 23):
                col = 19 - (r - 9) // 2 + dx
                x[i, r + dy, col - 2:col + 1] += 200
        else:
            x[i, 10:18, 10:18] += 150
    return np.clip(x, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """An MNIST-like data set as uint8 28x28 images (a data set ``.npz``: the loader's
    checksums refuse made-up MNIST files): 300 training images, 60 test images (40 of them
    1s and 7s), and the test images as a gzipped IDX file."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("data")
    ytr = np.array([1, 7] * 130 + [3, 5] * 20, dtype=np.uint8)
    yte = np.array([1, 7, 1, 7, 0] * 12, dtype=np.uint8)
    arrays = {"x_train": _digits(ytr, rng), "y_train": ytr,
              "x_test": _digits(yte, rng), "y_test": yte}
    np.savez(root / "mnist_like.npz", **arrays)
    (root / "t10k-images.gz").write_bytes(gzip.compress(_idx(arrays["x_test"]), mtime=0))
    return root, arrays


def _config(tmp: Path, data_dir: Path, **over) -> Path:
    """experiments/mnist17.yaml at a small T, on the data above (classes 1 and 7)."""
    cfg = yaml.safe_load((ROOT / "experiments" / "mnist17.yaml").read_text())
    cfg["data"] = {"name": f"npz:{data_dir / 'mnist_like.npz'}", "classes": [1, 7]}
    cfg["selection"].update(scheme="binomial", ns=10, T=24)
    cfg["training"].update(steps=30, group_size=4)
    cfg["run"]["chunk_size"] = 8
    for key, value in over.items():
        section, name = key.split("__")
        cfg[section][name] = value
    path = tmp / f"mnist17_small_{len(list(tmp.glob('*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """A run trained and certified through the CLI, and the raw 1/7 test images."""
    data_dir, arrays = mnist_dir
    tmp = tmp_path_factory.mktemp("run")
    cfg = _config(tmp, data_dir)
    run = tmp / "run"
    r = runner.invoke(app, ["train", str(cfg), "--run-dir", str(run), "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["certify", str(run), "--no-plot"])
    assert r.exit_code == 0, r.output
    keep = np.isin(arrays["y_test"], (1, 7))
    return run, arrays["x_test"][keep], arrays["y_test"][keep]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


SAME = ("index", "label", "prediction", "correct", "radius", "top_class", "p1_lower",
        "p2_upper", "T", "top1_class", "top1_votes", "top2_class", "top2_votes",
        "abstain_votes")


def test_png_folder_gives_the_certificates_of_certify(tmp_path, trained):
    from PIL import Image

    run, x, y = trained
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img, mode="L").save(folder / f"test-{i:05d}.png")
    (folder / "notes.txt").write_text("not an image: ignored")
    out = tmp_path / "pred.csv"
    r = runner.invoke(app, ["predict", str(run), str(folder), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"{len(x)} inputs" in r.output
    got, want = _rows(out), _rows(run / runs.CERTIFICATES)
    assert len(got) == len(want) == len(x)
    certified = 0
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g["input"] == f"test-{i:05d}.png"
        for key in SAME:
            if key not in ("label", "correct"):
                assert g[key] == w[key], (i, key)
        assert g["label"] == "" and g["correct"] == ""
        p = int(g["prediction"])
        assert g["class"] == ("" if p < 0 else str((1, 7)[p]))
        certified += p >= 0
    assert certified > len(x) // 2  # the case is not vacuous: most points are certified
    assert max(int(g["radius"]) for g in got) > 0
    # the header carries every column of certificates.csv
    assert set(want[0]) <= set(got[0])


def test_ensemble_certify_equals_certify_run(trained):
    run, x, y = trained
    ens = Ensemble.load(run)
    assert ens.T == 24 and ens.classes.tolist() == [1, 7] and ens.input_shape == (1, 28, 28)
    assert "binomial" in repr(ens) and "T=24" in repr(ens)
    want, _ = experiment.certify_run(run, plot=False)
    for form in (x, x[:, None], x[..., None], x.astype(np.int64)):  # (n,H,W), NCHW, NHWC
        cert = ens.certify(form)
        for field in ("prediction", "radius", "p1_lower", "p2_upper", "top_class", "T"):
            np.testing.assert_array_equal(getattr(cert, field), getattr(want, field))
    np.testing.assert_array_equal(ens.votes(x), np.load(run / runs.VOTES))
    np.testing.assert_array_equal(ens.base_predictions(x), np.load(run / runs.PREDICTIONS))
    np.testing.assert_array_equal(ens.predict(x), np.load(run / runs.VOTES).argmax(1))
    # labels: the certificate names its classes, so certified accuracy takes class ids
    labels = np.load(run / runs.LABELS)
    np.testing.assert_array_equal(ens.decode(labels), y)
    rhos = [0, 1, 2, 5]
    np.testing.assert_array_equal(certified_accuracy(cert, y, rhos),
                                  certified_accuracy(want, labels, rhos))
    assert "classes=[1, 7]" in repr(cert) and len(repr(cert)) < 400
    seen = []
    ens.votes(x, progress=_recording(seen))
    assert seen[0][:2] == (ens.T * len(x), 0) and sum(seen[1:]) == ens.T * len(x)


def test_inputs_are_preprocessed_a_block_at_a_time(trained, monkeypatch):
    """The classifiers' float32 inputs of every input were made at once, before the first
    block ran: 4 times the raw uint8 inputs' memory (8 with deskewing; 100,000 MNIST inputs of
    a deskewing run: 944 MB peak in base_predictions, 571 MB a block at a time). Each block
    is preprocessed as it is predicted, to the same votes."""
    from poisoncert.experiment import ensemble as ensemble_module
    from poisoncert.experiment.inputform import InputForm

    run, x, _ = trained
    ens = Ensemble.load(run)
    many = np.resize(x, (1100, *x.shape[1:]))
    whole = ens.base_predictions(ens.preprocess(many), preprocessed=True)
    sizes = []
    real = InputForm.preprocess

    def recorded(self, arr, where="Ensemble"):
        sizes.append(len(arr))
        return real(self, arr, where)

    monkeypatch.setattr(InputForm, "preprocess", recorded)
    monkeypatch.setattr(ensemble_module, "BLOCK", 1)  # blocks of eval_batch_size inputs
    step = ens.config.training.eval_batch_size
    np.testing.assert_array_equal(ens.base_predictions(many), whole)
    assert sizes == [step, step, len(many) - 2 * step]
    with pytest.raises(ValueError, match="The 'x' parameter of Ensemble must be uint8 pixels"):
        ens.base_predictions(many.astype(np.float32))  # still checked whole, before any block
    assert len(sizes) == 3


def _recording(seen):
    from contextlib import contextmanager

    @contextmanager
    def display(total, completed, label):
        seen.append((total, completed, label))
        yield seen.append

    return display


def test_the_predicting_display_counts_predictions_chunk_by_chunk(trained, monkeypatch):
    """The display counts predictions (one classifier on one input, ``T * n`` in all) as each
    chunk of inputs is through a group of classifiers: it counted whole classifiers, so it
    moved once per block of 8,192 inputs (4 ResNet-18s on the CPU: 0/4 with no rate and no
    ETA for the whole call under 8,192 inputs, 82 % of it for 10,000). However many blocks
    the inputs take, the total is counted once; the labels are the same bits; True is the
    command line's bar and anything else not a display is one clear error."""
    from contextlib import contextmanager

    import poisoncert.experiment.ensemble as ensemble_mod
    from poisoncert.training.settings import EVAL_BATCH_CAP, EVAL_GROUP

    run, x, _ = trained
    ens = Ensemble.load(run)
    batch = ens.config.training.eval_batch_size
    chunk, group = min(batch, EVAL_BATCH_CAP["cpu"]), EVAL_GROUP["cpu"]
    x = np.resize(x, (2 * batch + 7, *x.shape[1:]))
    n = len(x)
    want = ens.base_predictions(x)
    monkeypatch.setattr(ensemble_mod, "BLOCK", 7)  # blocks of eval_batch_size inputs: three
    seen = []
    np.testing.assert_array_equal(ens.base_predictions(x, progress=_recording(seen)), want)
    assert seen[0] == (ens.T * n, 0, f"predict {ens.T} classifiers x {n} inputs")
    # one step per chunk of a block through a group (groups run in threads: in any order)
    groups = [min(group, ens.T - a) for a in range(0, ens.T, group)]
    expected = [g * min(chunk, b - a0) for a, b in ((0, batch), (batch, 2 * batch), (2 * batch, n))
                for g in groups for a0 in range(a, b, chunk)]
    assert sorted(seen[1:]) == sorted(expected) and sum(expected) == ens.T * n
    assert len(seen[1:]) == 3 * 17 and max(seen[1:]) == group * chunk == 512
    assert all(type(k) is int for k in seen[1:])

    # a display that takes a unit is told it; an abstaining classifier is done at the start
    @contextmanager
    def with_unit(total, completed, label, unit="models"):
        told.append((total, completed, unit))
        yield told.append

    told = []
    monkeypatch.setattr(ens, "state_dicts", [None] + list(ens.state_dicts[1:]))
    got = ens.base_predictions(x, progress=with_unit)
    assert (got[0] == -1).all()
    np.testing.assert_array_equal(got[1:], want[1:])
    assert told[0] == (ens.T * n, n, "predictions") and sum(told[1:]) == (ens.T - 1) * n
    monkeypatch.undo()
    np.testing.assert_array_equal(ens.base_predictions(x[:5], progress=True), want[:, :5])
    with pytest.raises(ValueError, match=r"^The 'progress' parameter of Ensemble must be "
                                         r"None, False, True \(a progress bar\) or a progress "
                                         r"display .*Got 'bar' instead\.$"):
        ens.votes(x[:5], progress="bar")


@pytest.mark.parametrize("option,words", [
    (["--alpha", "3"], "The '--alpha' parameter of predict must be a real number in the range"),
    (["--model", "P7"], "The '--model' parameter of predict must be one of 'P1'"),
    (["--method", "foo"], "The '--method' parameter of predict must be one of 'auto'")])
def test_predict_refuses_a_bad_certify_option_before_any_prediction(tmp_path, trained,
                                                                     monkeypatch, option, words):
    """A bad --alpha, --model or --method is one line in predict's own words, before the
    run is loaded: Ensemble.load reads and checks every weights file (gigabytes for a large
    run; it did so before the options were checked), and the base classifiers would take
    minutes on many inputs."""
    run, x, _ = trained
    np.savez(tmp_path / "x.npz", x=x[:3])

    def never(*args, **kwargs):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(Ensemble, "load", never)
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz"), *option]),
                    words)


@pytest.mark.parametrize("where", ["a folder", "no folder"])
def test_predict_refuses_an_unwritable_out_before_any_prediction(tmp_path, trained,
                                                                  monkeypatch, where):
    """--out naming a folder, or a file in a folder that does not exist, was refused only
    when the rows were written, after every input had been predicted (hours on many)."""
    run, x, _ = trained
    np.savez(tmp_path / "x.npz", x=x[:3])
    out = tmp_path if where == "a folder" else tmp_path / "missing" / "rows.csv"

    def never(*args, **kwargs):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(Ensemble, "load", never)
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz"),
                                         "--out", str(out)]),
                    f"The '--out' parameter of predict must be a file in an existing, "
                    f"writable folder (not a folder). Got '{out}' instead.")


@pytest.mark.parametrize("target", ["inputs", "inputs by another path", "config.yaml",
                                    "certificates.csv", "weights/chunk-00000.safetensors",
                                    "an image of a folder INPUTS"])
def test_predict_refuses_an_out_that_would_replace_the_inputs_or_a_run_file(
        tmp_path, trained, monkeypatch, target):
    """--out naming INPUTS replaced the user's inputs with the rows made from them, and --out
    naming a file of the run directory replaced it (config.yaml: a run that no longer loads;
    certificates.csv: certify's rows of the test set): both are refused before any work, and
    the file is left as it was."""
    run, x, _ = trained
    run = _copy_run(run, tmp_path / "run")
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=x[:3])
    out = {"inputs": inputs, "inputs by another path": tmp_path / "." / ".." / tmp_path.name
           / "x.npz"}.get(target, run / target)
    if target.startswith("an image"):
        from PIL import Image

        inputs = tmp_path / "pngs"
        inputs.mkdir()
        for i in range(3):
            Image.fromarray(x[i]).save(inputs / f"{i}.png")
        out = inputs / "1.png"
    before = out.read_bytes()

    def never(*args, **kwargs):
        raise AssertionError("the run was loaded")

    monkeypatch.setattr(Ensemble, "load", never)
    _one_error_line(runner.invoke(app, ["predict", str(run), str(inputs), "--out", str(out)]),
                    "The '--out' parameter of predict must be ", f"Got '{out}' instead.",
                    "INPUTS" if target.startswith(("inputs", "an image"))
                    else target.split("/")[0])
    assert out.read_bytes() == before
    monkeypatch.undo()  # a file of its own beside the run's files, and beside the inputs
    for mine in (run / "my_rows.csv", tmp_path / "rows.csv"):
        r = runner.invoke(app, ["predict", str(run), str(inputs), "--out", str(mine)])
        assert r.exit_code == 0, r.output
        assert len(_rows(mine)) == 3


def test_predict_out_killed_while_written_leaves_no_temporary_file_after_a_rerun(
        tmp_path, trained):
    """predict --out killed between its write and its rename (the fault hook) kept the old
    rows whole but left a ``.tmp-rows.csv.*`` beside them, which the next predict --out left
    there too; that next write now removes it."""
    run, x, _ = trained
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=x[:3])
    out = tmp_path / "rows.csv"
    out.write_text("old\n")
    src = str(Path(poisoncert.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "POISONCERT_TEST_FAULT": "write:rows.csv"}
    proc = subprocess.run([sys.executable, "-m", "poisoncert.cli", "predict", str(run),
                           str(inputs), "--out", str(out)], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert out.read_text() == "old\n"
    assert [p.name[:14] for p in tmp_path.iterdir() if p not in (out, inputs)] == [
        ".tmp-rows.csv."]
    r = runner.invoke(app, ["predict", str(run), str(inputs), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(_rows(out)) == 3
    assert sorted(tmp_path.iterdir()) == sorted([inputs, out])


def test_predict_keeps_its_rows_on_stdout_and_the_bar_on_stderr(tmp_path, trained):
    """Rows printed to stdout (``predict RUN INPUTS > rows.csv``) are the CSV alone: the bar
    (shown from 20,000 classifier-inputs on) is drawn on stderr, in predictions (one
    classifier on one input) with their rate."""
    run, x, _ = trained
    ens = Ensemble.load(run)
    n = -(-20_000 // ens.T)
    npz = tmp_path / "many.npz"
    np.savez(npz, x=np.resize(x, (n, *x.shape[1:])))
    r = runner.invoke(app, ["predict", str(run), str(npz)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(r.stdout.splitlines()))
    assert len(rows) == n and rows[0]["index"] == "0"
    assert f"predict {ens.T} classifiers x {n} inputs" in r.stderr
    total = ens.T * n
    assert f"{total}/{total} predictions, " in r.stderr and " predictions/s, " in r.stderr
    assert "predictions/s" not in r.stdout


def test_prediction_blocks_are_the_columns_of_base_predictions(trained, monkeypatch):
    """``Ensemble.prediction_blocks`` (what predict streams from): blocks of whole
    ``eval_batch_size`` multiples whose columns are ``base_predictions``' (the same
    numbers), the UnusualInputsWarning once, for all the inputs, after the last block and
    attributed to the caller; bad inputs refused at the first block."""
    import warnings

    from poisoncert.experiment import ensemble

    run, x, _ = trained
    monkeypatch.setattr(ensemble, "BLOCK", 1)  # eval_batch_size 500: blocks of 500
    ens = Ensemble.load(run)
    x = np.resize(x, (1100, *x.shape[1:]))
    got = list(ens.prediction_blocks(x))
    assert [(a, b) for a, b, _ in got] == [(0, 500), (500, 1000), (1000, 1100)]
    assert all(p.dtype == np.int16 and p.shape == (ens.T, b - a) for a, b, p in got)
    np.testing.assert_array_equal(np.concatenate([p for *_, p in got], axis=1),
                                  ens.base_predictions(x))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in ens.prediction_blocks(255 - x):
            assert not seen
    assert len(seen) == 1 and seen[0].filename == __file__, seen
    assert str(seen[0].message).startswith("1100 of the 1100 inputs")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ens.base_predictions(255 - x)
    assert len(seen) == 1 and seen[0].filename == __file__, seen
    assert list(ens.prediction_blocks(x[:0])) == []
    with pytest.raises(ValueError, match=r"^The 'x' parameter of Ensemble must be "):
        next(ens.prediction_blocks(x.astype(np.float32)))


def _whole_output(run: Path, inputs: Path, x, y, *, as_json: bool) -> str:
    """predict's output as it was made before it was streamed, independently of the
    streaming code: every base prediction at once (``base_predictions``), one certificate of
    them all, every row at once and its text in one piece (``csv.DictWriter``, or
    ``json_text`` of the whole document), with its final newline."""
    import io

    from poisoncert.cli.predict import _plain, _summary
    from poisoncert.experiment.certify import certificate_rows
    from poisoncert.experiment.inputform import class_indices
    from poisoncert.runsafe import json_text
    from poisoncert.votes import votes_from_predictions

    ens = Ensemble.load(run)
    base = ens.base_predictions(x)
    cert = ens.certify_predictions(base)
    labels = None if y is None else class_indices(y, ens.classes)
    fa = ens.scheme == "finite_aggregation"
    rows = certificate_rows(cert, votes_from_predictions(base, ens.n_classes), labels, ens.T,
                            extra={"input": [str(i) for i in range(len(x))]},
                            radius_dpa=cert.buckets if fa else None, classes=ens.classes,
                            class_names=ens.class_names, missing=None if as_json else "")
    if as_json:
        return json_text({"run": str(ens.run_dir), "inputs": str(inputs),
                          "summary": _summary(cert, labels, ens, len(x)), "rows": rows},
                         indent=1, default=_plain) + "\n"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@pytest.fixture(scope="module")
def fa_run(tmp_path_factory):
    """A small finite_aggregation run (k = 4, d = 2: 8 classifiers) on digits, whose
    certificate is made from the base predictions (not vote counts): predict certifies it a
    block of inputs at a time and joins the blocks."""
    tmp = tmp_path_factory.mktemp("fa")
    cfg = tmp / "fa.yaml"
    cfg.write_text("data: {name: digits, test_limit: 80}\nselection: {scheme: "
                   "finite_aggregation, k: 4, d: 2, seed: 3}\ntraining: {model: mlp, steps: 5, "
                   "batch_size: 16, group_size: 4, save_weights: true, eval_batch_size: 16}\n"
                   "run: {chunk_size: 8}\n")
    r = runner.invoke(app, ["train", str(cfg), "--run-dir", str(tmp / "run"), "-q"])
    assert r.exit_code == 0, r.output
    from sklearn.datasets import load_digits

    return tmp / "run", load_digits().images[:300].astype(np.int64)


@pytest.mark.parametrize("which", ["binomial", "finite_aggregation"])
def test_predict_streams_exactly_the_bytes_it_made_whole(tmp_path, trained, fa_run, monkeypatch,
                                                         which):
    """predict made every prediction, then the whole text of its rows, then wrote it: the
    text of 10^6 inputs took gigabytes. It now predicts a block of inputs at a time and
    writes its rows a block at a time; the bytes are those of the whole output made at once
    (``_whole_output``), for CSV and JSON, into --out and on stdout, with the inputs cut into
    several blocks of predictions (2 or 3 here) and of rows (7 rows a block): the
    finite_aggregation certificate, made a block at a time and joined, included."""
    from poisoncert.experiment import ensemble

    if which == "binomial":  # eval_batch_size 500: blocks of 500 inputs
        run, x, _ = trained
        x = np.resize(x, (1100, *x.shape[1:]))
        y = np.resize(trained[2], 1100)
    else:  # eval_batch_size 16: blocks of 16 inputs (digits' own classes 0-9, no y)
        run, x = fa_run
        x, y = x[:40], None
    inputs = tmp_path / "x.npz"
    np.savez(inputs, **({"x": x} if y is None else {"x": x, "y": y}))
    monkeypatch.setattr(ensemble, "BLOCK", 1)  # a block: one eval_batch_size of inputs
    monkeypatch.setattr(ensemble, "PREDICT_ROW_BLOCK", 7)
    blocks = []
    real = Ensemble.prediction_blocks

    def counted(self, *a, **kw):
        for block in real(self, *a, **kw):
            blocks.append(block[:2])
            yield block

    monkeypatch.setattr(Ensemble, "prediction_blocks", counted)
    for as_json in (False, True):
        want = _whole_output(run, inputs, x, y, as_json=as_json)
        flag = ["--json"] if as_json else []
        out = tmp_path / ("p.json" if as_json else "p.csv")
        blocks.clear()
        r = runner.invoke(app, ["predict", str(run), str(inputs), "--out", str(out), "-q",
                                *flag])
        assert r.exit_code == 0, r.output
        assert out.read_bytes() == want.encode()
        assert len(blocks) >= 2 and blocks[-1][1] == len(x), blocks
        r = runner.invoke(app, ["predict", str(run), str(inputs), "-q", *flag])
        assert r.exit_code == 0, r.output
        assert r.stdout_bytes == want.encode()
        assert r.stderr == "" if as_json else r.stderr.startswith(f"{len(x)} inputs: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.csv", "p.json", "x.npz"]


@pytest.mark.parametrize("as_json", [False, True])
def test_predict_interrupted_while_writing_its_rows(tmp_path, trained, monkeypatch, as_json):
    """Ctrl-C once the rows are being written: with --out the file is as it was and no
    temporary file is left (``nothing was written``); on stdout the rows printed cannot be
    taken back, and stderr says they are an incomplete output (JSON cut short: not valid),
    where predict used to say nothing was written once it wrote its rows at the end."""
    from poisoncert.experiment import certify as exp_certify
    from poisoncert.experiment import ensemble

    run, x, _ = trained
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=x)
    monkeypatch.setattr(ensemble, "PREDICT_ROW_BLOCK", 7)
    real = exp_certify.counted_blocks

    def ctrl_c(blocks, advance):  # Ctrl-C when the rows of a second block are asked for
        for i, block in enumerate(real(blocks, advance)):
            if i == 1:
                raise KeyboardInterrupt
            yield block

    monkeypatch.setattr(exp_certify, "counted_blocks", ctrl_c)
    flag = ["--json"] if as_json else []
    out = tmp_path / "rows.out"
    out.write_text("old\n")
    r = runner.invoke(app, ["predict", str(run), str(inputs), "--out", str(out), "-q", *flag])
    assert r.exit_code == 130, r.output
    assert r.stderr == "interrupted: nothing was written; the same command starts over.\n"
    assert out.read_text() == "old\n" and r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.out", "x.npz"]
    r = runner.invoke(app, ["predict", str(run), str(inputs), "-q", *flag])
    assert r.exit_code == 130, r.output
    want = _whole_output(run, inputs, x, None, as_json=as_json)
    assert r.stdout and want.startswith(r.stdout) and len(r.stdout) < len(want)
    if as_json:
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.stdout)
        assert r.stdout.count('"index": ') == 7
    else:
        assert len(r.stdout.splitlines()) == 1 + 7
    cut = ", JSON cut short: not valid JSON" if as_json else ""
    assert r.stderr == (f"interrupted: the rows printed so far are not all {len(x)} inputs' "
                        f"(an incomplete output{cut}); the same command starts over.\n")


def test_predict_rows_on_stdout_stay_there_while_a_bar_is_drawn_on_a_terminal(
        tmp_path, trained, monkeypatch):
    """A rich bar on a terminal replaces sys.stdout, while it is drawn, with a proxy that
    prints on the bar's console (stderr): rows streamed to sys.stdout under the rows bar
    (``predict RUN INPUTS > rows.csv`` from ``ROWS_BAR`` inputs on) went to the terminal,
    re-wrapped, and not into the file. They are written to the stdout predict started with;
    the bar still counts every row."""
    import io

    from rich.console import Console

    import poisoncert.cli.predict as cli_predict
    import poisoncert.cli.progress as cli_progress

    run, x, _ = trained
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=x)
    screen = io.StringIO()
    monkeypatch.setattr(cli_progress, "_console",
                        lambda: Console(file=screen, force_terminal=True, width=120))
    monkeypatch.setattr(cli_predict, "ROWS_BAR", len(x))
    for as_json in (False, True):
        flag = ["--json"] if as_json else []
        r = runner.invoke(app, ["predict", str(run), str(inputs), *flag])
        assert r.exit_code == 0, r.output
        assert r.stdout_bytes == _whole_output(run, inputs, x, None, as_json=as_json).encode()
        assert "top1_votes" not in screen.getvalue() and f"{len(x)}/{len(x)}" in \
            screen.getvalue()


def test_npz_idx_and_csv_inputs(tmp_path, trained, mnist_dir):
    run, x, y = trained
    want = _rows(run / runs.CERTIFICATES)
    npz = tmp_path / "x.npz"
    np.savez(npz, x=x, y=y)
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["predict", str(run), str(npz), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    doc = json.loads(out.read_text())
    assert doc["summary"] == summary and len(doc["rows"]) == len(x)
    for g, w in zip(doc["rows"], want, strict=True):
        for key in SAME:  # labels given: label and correct equal certificates.csv's too
            assert str(g[key]) == w[key], key
    correct = np.mean([int(w["correct"]) for w in want])
    assert summary["accuracy"] == pytest.approx(correct, abs=1e-12)
    # a .json name is JSON without --json (it held CSV)
    r = runner.invoke(app, ["predict", str(run), str(npz), "--out", str(tmp_path / "q.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "q.json").read_text())["rows"] == doc["rows"]
    # an IDX file of raw images (all ten digits), gzipped: the 1/7 rows are the test points
    data_dir, arrays = mnist_dir
    idx_file = data_dir / "t10k-images.gz"
    r = runner.invoke(app, ["predict", str(run), str(idx_file), "--out", str(tmp_path / "i.csv")])
    assert r.exit_code == 0, r.output
    rows = _rows(tmp_path / "i.csv")
    keep = np.flatnonzero(np.isin(arrays["y_test"], (1, 7)))
    for j, w in zip(keep[:8], want[:8], strict=True):  # same inputs, other batches: to rounding
        assert rows[j]["top1_class"] == w["top1_class"]
    # a CSV of flat pixel rows, printed to stdout
    flat = tmp_path / "x.csv"
    np.savetxt(flat, x.reshape(len(x), -1), fmt="%d", delimiter=",",
               header=",".join(f"p{i}" for i in range(784)), comments="")
    r = runner.invoke(app, ["predict", str(run), str(flat)])
    assert r.exit_code == 0, r.output
    printed = list(csv.DictReader(r.stdout.splitlines()))
    assert [p["radius"] for p in printed] == [w["radius"] for w in want]
    # a .npy of the inputs alone (it was read as an IDX file: "bad magic number")
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npy")])
    assert r.exit_code == 0, r.output
    printed = list(csv.DictReader(r.stdout.splitlines()))
    assert [p["radius"] for p in printed] == [w["radius"] for w in want]


def test_json_rows_hold_null_where_a_value_is_missing(tmp_path, trained):
    """A review's case: --json wrote "" for the predicted class id and name where the
    certificate abstains (and for label and correct without y), a string where a JSON
    consumer expects null; the CSV keeps its empty cells."""
    run, x, y = trained
    ones, sevens = x[y == 1], x[y == 7]
    k = min(len(ones), len(sevens))
    # a 1 and a 7 overlaid at several weights: inputs on which the classifiers disagree
    blends = np.concatenate([np.rint(w * ones[:k] + (1 - w) * sevens[:k])
                             for w in (0.4, 0.5, 0.6)]).astype(np.uint8)
    np.save(tmp_path / "x.npy", np.concatenate([x, blends]))
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npy"), "--json", "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    abstains = [g for g in rows if g["prediction"] == -1]
    certified = [g for g in rows if g["prediction"] != -1]
    assert abstains and certified  # the case is not vacuous: both kinds of row
    for g in abstains:
        assert g["radius"] == -1 and g["class"] is None and g["class_name"] is None, g
    for g in certified:
        p = g["prediction"]
        assert (g["class"], g["class_name"]) == ((1, 7)[p], ("1", "7")[p]), g
    assert all(g["label"] is None and g["correct"] is None for g in rows)  # no y given
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npy"), "-q"])
    printed = list(csv.DictReader(r.stdout.splitlines()))
    assert [p["class"] for p in printed if p["prediction"] == "-1"] == [""] * len(abstains)


def test_csv_and_single_image_inputs_are_read_as_written(tmp_path, trained):
    """A review's cases: a headerless CSV whose first row has a byte-order mark or a typo
    lost that row as a "header" silently (every later row took the wrong input number); a
    CSV of 0.0/1.0 floats was read as uint8 pixels (the same .npy is refused); a CSV that is
    not UTF-8, or holds a 26-digit number, gave Python's messages; one PNG was called a bad
    IDX file."""
    from PIL import Image

    run, x, y = trained
    want = _rows(run / runs.CERTIFICATES)
    flat = x.reshape(len(x), -1)
    text = "\n".join(",".join(str(v) for v in row) for row in flat) + "\n"
    (tmp_path / "bom.csv").write_text(text, encoding="utf-8-sig")
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "bom.csv")])
    assert r.exit_code == 0, r.output
    printed = list(csv.DictReader(r.stdout.splitlines()))
    assert [p["radius"] for p in printed] == [w["radius"] for w in want]
    # headers: pandas' names for unnamed columns (0, 1, ...), and names with a number among
    for name, head in (("pandas", range(flat.shape[1])),
                       ("named", [f"p{i}" for i in range(flat.shape[1] - 1)] + ["783"])):
        (tmp_path / f"{name}.csv").write_text(",".join(map(str, head)) + "\n" + text)
        r = runner.invoke(app, ["predict", str(run), str(tmp_path / f"{name}.csv")])
        assert r.exit_code == 0, r.output
        printed = list(csv.DictReader(r.stdout.splitlines()))
        assert [p["radius"] for p in printed] == [w["radius"] for w in want], name
    lines = text.splitlines()
    (tmp_path / "typo.csv").write_text("\n".join([lines[0].replace("0", "O", 1)] + lines[1:]))
    typo = lines[0].replace("0", "O", 1).split(",")
    col = next(j for j, c in enumerate(typo) if "O" in c)
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "typo.csv")]),
                    "typo.csv", f"line 1 (input 0) is not all numbers: column {col + 1} "
                    f"holds {typo[col]!r}.")
    # after a header and a blank line: the file's line, and the input's index as predict's
    # rows count them (it said "row 2", which was neither)
    head = ",".join(f"p{i}" for i in range(flat.shape[1]))
    (tmp_path / "typo2.csv").write_text("\n".join([head, lines[0], "", "\t", lines[1].replace(
        "0", "O", 1)] + lines[2:]))
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "typo2.csv")]),
                    "typo2.csv", "line 5 (input 1) is not all numbers")
    # pandas' to_csv with its index: a first column of row numbers, not a pixel
    (tmp_path / "index.csv").write_text(
        "," + ",".join(map(str, range(flat.shape[1]))) + "\n"
        + "\n".join(f"{i},{line}" for i, line in enumerate(lines)) + "\n")
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "index.csv")]),
                    "index.csv", "index=False")
    np.savetxt(tmp_path / "bin.csv", (flat > 127).astype(float), fmt="%.1f", delimiter=",")
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "bin.csv")]),
                    "bin.csv", "float64 values 0.0..1.0")
    (tmp_path / "latin.csv").write_bytes(b"caf\xe9,b\n1,2\n")
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "latin.csv")]),
                    "latin.csv", "byte 0xe9 at offset 3 is not UTF-8 text")
    (tmp_path / "huge.csv").write_text("\n".join([",".join(["1" * 26] * flat.shape[1])] * 2))
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "huge.csv")]),
                    "huge.csv", "float64 values 1.111111111111111e+25..")
    Image.fromarray(x[3]).save(tmp_path / "one.png")
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "one.png")])
    assert r.exit_code == 0, r.output
    printed = list(csv.DictReader(r.stdout.splitlines()))
    assert len(printed) == 1 and printed[0]["input"] == "one.png"
    assert printed[0]["radius"] == want[3]["radius"]


def _one_error_line(r, *words):
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


def _damaged_runs(run: Path, tmp_path: Path, other_run: Path) -> dict:
    """Copies of ``run`` with one file damaged: name -> (run dir, words of the loader's own
    error, which names the file)."""
    w0 = Path(runs.WEIGHTS) / "chunk-00000.safetensors"
    out = {}
    bad = _copy_run(run, tmp_path / "truncated")
    data = (bad / w0).read_bytes()
    (bad / w0).write_bytes(data[: len(data) // 2])
    out["truncated"] = (bad, [str(bad / w0), "damaged"])
    bad = _copy_run(run, tmp_path / "garbage")
    (bad / w0).write_bytes(b"\x00" * 100)
    out["garbage"] = (bad, [str(bad / w0), "damaged"])
    bad = _copy_run(run, tmp_path / "missing")
    (bad / w0).unlink()
    out["missing"] = (bad, [str(bad / w0), "missing"])
    bad = _copy_run(run, tmp_path / "foreign")  # same shapes, another seed
    shutil.copy(other_run / w0, bad / w0)
    out["foreign"] = (bad, [str(bad / w0), "another run"])
    bad = _copy_run(run, tmp_path / "swapped")  # another chunk of this run
    shutil.copy(bad / runs.WEIGHTS / "chunk-00001.safetensors", bad / w0)
    out["swapped"] = (bad, [str(bad / w0), "does not hold classifiers 0..7"])
    bad = _copy_run(run, tmp_path / "record")
    (bad / ENSEMBLE_JSON).write_text("{not json")
    out["record"] = (bad, [ENSEMBLE_JSON, "damaged"])
    bad = _copy_run(run, tmp_path / "other_record")
    record = json.loads((run / ENSEMBLE_JSON).read_text())
    record["config_hash"] = "0" * 64
    (bad / ENSEMBLE_JSON).write_text(json.dumps(record))
    out["other_record"] = (bad, [ENSEMBLE_JSON, "another run"])
    return out


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, trained, mnist_dir):
    run, _, _ = trained
    tmp = tmp_path_factory.mktemp("damaged")
    data_dir, _ = mnist_dir
    other = tmp / "other"
    experiment.train_run(_config(tmp, data_dir, selection__seed=5), other, progress=False)
    return _damaged_runs(run, tmp, other)


def test_damaged_and_foreign_files_are_one_clear_error(tmp_path, trained, damaged):
    """Through the CLI: the manifest's checksums (``RunDir.verify``) name the file."""
    run, x, _ = trained
    npz = tmp_path / "x.npz"
    np.savez(npz, x=x)
    for name, (bad, words) in damaged.items():
        r = runner.invoke(app, ["predict", str(bad), str(npz)])
        _one_error_line(r, words[0])
        assert "changed after the run finished" in r.output or "missing" in r.output, name


def test_the_loader_checks_each_file_itself(trained, damaged, monkeypatch):
    """A run made before checksums were recorded is checked by the loader's own checks:
    format, metadata (config hash, seeds, chunk), tensors."""
    from poisoncert.runs import RunDir

    monkeypatch.setattr(RunDir, "verify", lambda self: {"verified": False, "files": 0,
                                                         "note": "warning: no checksums"})
    run, x, _ = trained
    assert Ensemble.load(run).verification["verified"] is False
    for name, (bad, words) in damaged.items():
        with pytest.raises(RunError) as e:
            Ensemble.load(bad)
        for w in words:
            assert w in str(e.value), (name, w, str(e.value))


def _rewrite_weights(path: Path, change) -> None:
    """Rewrite a weights file with ``change(tensors, metadata) -> (tensors, metadata)``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors, meta = change(tensors, meta)
    save_file(tensors, str(path), metadata=meta)


def _per_classifier(tensors: dict, meta: dict):
    """The stacked layout rewritten as the per-classifier one (runs written before it)."""
    from poisoncert.training.weights import FORMAT_PER_CLASSIFIER, FORMAT_STACKED, unflatten

    assert meta["format"] == FORMAT_STACKED
    sds = unflatten(tensors, meta)
    meta = {k: v for k, v in meta.items() if k != "absent"}
    meta["format"] = FORMAT_PER_CLASSIFIER
    return {f"{i}.{n}": t.clone() for i, sd in enumerate(sds) if sd is not None
            for n, t in sd.items()}, meta


def test_weights_of_either_layout_load_and_a_misfit_is_one_clear_error(tmp_path, trained,
                                                                        monkeypatch):
    """A run's weights files stack each tensor over a chunk's classifiers; files written per
    classifier (by earlier releases) load and predict the same; a file whose tensors do not fit
    the run's model, or contradict its own metadata, is one error naming it."""
    import torch

    from poisoncert.runs import RunDir

    monkeypatch.setattr(RunDir, "verify", lambda self: {"verified": False, "files": 0,
                                                         "note": "warning: no checksums"})
    run, x, _ = trained
    want = Ensemble.load(run).base_predictions(x)
    old = _copy_run(run, tmp_path / "per_classifier")
    for w in sorted((old / runs.WEIGHTS).iterdir()):
        _rewrite_weights(w, _per_classifier)
    np.testing.assert_array_equal(Ensemble.load(old).base_predictions(x), want)

    w0 = Path(runs.WEIGHTS) / "chunk-00000.safetensors"
    name = "fc1.weight"

    def narrower(t, m):
        return {**t, name: t[name][..., :-1].contiguous()}, m

    def extra(t, m):
        return {**t, "extra": torch.zeros(len(t[name]))}, m

    def fewer(t, m):
        return {**t, name: t[name][:-1].contiguous()}, m

    def bad_absent(t, m):
        return t, {**m, "absent": "1,x"}

    def foreign_index(t, m):
        t, m = _per_classifier(t, m)
        return {("99." + k.partition(".")[2] if k.startswith("0.") else k): v
                for k, v in t.items()}, m

    def unknown_format(t, m):
        return t, {**m, "format": "poisoncert.training.weights/9"}

    cases = {narrower: [name, "does not fit the run's model", "the model's is"],
             extra: ["not the model's: extra"],
             fewer: [name, "stacks 7 classifiers, the file has 8"],
             bad_absent: ["'1,x'"],
             foreign_index: ["'99.", "not a tensor of classifier 0..7"],
             unknown_format: ["not a poisoncert weights file", "weights/9"]}
    for change, words in cases.items():
        bad = _copy_run(run, tmp_path / change.__name__)
        _rewrite_weights(bad / w0, change)
        with pytest.raises(RunError) as e:
            Ensemble.load(bad)
        assert str(bad / w0) in str(e.value), change.__name__
        for w in words:
            assert w in str(e.value), (change.__name__, w, str(e.value))


def test_ensemble_errors_name_its_own_parameters(trained):
    """An option of ``Ensemble.certify`` is named as its parameter, not as the run config's key
    or a function the user did not call."""
    run, x, y = trained
    ens = Ensemble.load(run)
    cases = [
        (dict(alpha=2), r"^The 'alpha' parameter of Ensemble.certify must be a real number in "
                        r"the range \[1e-100, 1\)\. Got 2 instead\.$"),
        (dict(model="P7"), r"^The 'model' parameter of Ensemble.certify must be one of "),
        (dict(method="true_label"), r"^The 'y' parameter of Ensemble.certify must be .*true "
                                    r"labels.*Got None instead\.$"),
        (dict(method="true_label", y=y - y.min()),  # indices for ids
         r"^The 'y' parameter of Ensemble.certify must be class ids of the run \(\[1, 7\]\)"
         r"\. Got 0 instead\.$"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            ens.certify(x[:4], **{k: (v[:4] if k == "y" else v) for k, v in kw.items()})
    with pytest.raises(ValueError, match=r"^The 'alpha' parameter of Ensemble.certify_votes "):
        ens.certify_votes(ens.votes(x[:4]), alpha=0)


def test_labels_the_certificate_does_not_use_are_an_error(trained):
    """``y`` with a method that uses no labels would be ignored (the certificate bounds the
    majority vote, not the label): an error, as in ``certify.certify`` and the estimator."""
    run, x, y = trained
    ens = Ensemble.load(run)
    match = r"^The 'y' parameter of Ensemble.certify must be None unless the method is "
    with pytest.raises(ValueError, match=match):
        ens.certify(x[:4], y=y[:4])
    with pytest.raises(ValueError, match=r"^The 'y' parameter of Ensemble.certify_votes "):
        ens.certify_votes(ens.votes(x[:4]), method="bonferroni", y=y[:4])
    cert = ens.certify(x[:4], method="true_label", y=y[:4])
    assert cert.method == "true_label"


@pytest.mark.parametrize(("labels", "said"), [
    (None, "the true labels for the 'true_label' method. Got None instead."),
    ("short", "an int array of shape (10,). Got 'an array of shape (3,)' instead."),
    ("indices", "class ids of the run ([1, 7]). Got 0 instead.")])
def test_labels_a_true_label_certificate_cannot_use_are_refused_before_any_prediction(
        trained, monkeypatch, labels, said):
    """Ensemble.certify(x, method='true_label', y=...) with y missing, of another length or
    holding class indices instead of ids was refused only once every base classifier had run
    on every input (minutes to hours on many inputs); it is refused before, with the same
    message, and a good y still certifies."""
    run, x, y = trained
    ens = Ensemble.load(run)
    x = x[:10]
    want = ens.certify(x, method="true_label", y=y[:10])
    y_given = {None: None, "short": y[:3], "indices": ens.encode(y[:10])}[labels]

    def never(*args, **kwargs):
        raise AssertionError("the base classifiers ran")

    monkeypatch.setattr(Ensemble, "base_predictions", never)
    monkeypatch.setattr(Ensemble, "_prediction_blocks", never)  # where the classifiers run
    with pytest.raises(ValueError) as e:
        ens.certify(x, method="true_label", y=y_given)
    assert str(e.value) == f"The 'y' parameter of Ensemble.certify must be {said}"
    monkeypatch.undo()
    np.testing.assert_array_equal(ens.certify(x, method="true_label", y=y[:10]).radius,
                                  want.radius)


def test_inputs_of_the_wrong_form_are_one_clear_error(tmp_path, trained):
    from PIL import Image

    run, x, _ = trained
    cases = {}
    npz = tmp_path / "shape.npz"
    np.savez(npz, x=x[:, :, :27])
    cases["shape"] = (npz, ["(n, 1, 28, 28)", f"shape ({len(x)}, 28, 27)"])
    npz = tmp_path / "float.npz"
    np.savez(npz, x=x.astype(np.float32) / 255)
    cases["dtype"] = (npz, ["uint8 pixels 0-255", "float32"])
    npz = tmp_path / "noarray.npz"
    np.savez(npz, images=x)
    cases["key"] = (npz, ["'x'", "images"])
    small = tmp_path / "small"
    small.mkdir()
    Image.fromarray(x[0, :20, :20], mode="L").save(small / "a.png")
    cases["size"] = (small, ["a.png", "28x28", "20x20"])
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    colour = np.stack([x[0], x[0] // 2, x[0]], -1)  # not grey: one channel cannot hold it
    Image.fromarray(colour, mode="RGB").save(rgb / "b.png")
    cases["mode"] = (rgb, ["b.png", "grayscale (mode L)", "mode RGB", "colour",
                           "convert('L')"])
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(np.stack([x[0]] * 4, -1), mode="CMYK").save(cmyk)
    cases["mode CMYK"] = (cmyk, ["cmyk.jpg", "grayscale (mode L)", "in mode CMYK"])
    empty = tmp_path / "empty"
    empty.mkdir()
    cases["empty"] = (empty, ["no PNG or JPEG"])
    cases["missing"] = (tmp_path / "nope.npz", ["no such file"])
    junk = tmp_path / "junk.npz"
    junk.write_text("not an archive")
    cases["not npz"] = (junk, ["junk.npz: not a .npz archive"])
    npz = tmp_path / "indices.npz"
    np.savez(npz, x=x, y=(x[:, 0, 0] > 300).astype(np.int64))  # 0s: indices for ids 1, 7
    cases["y indices"] = (npz, ["indices.npz: its 'y' must hold the run's class ids (1, 7)",
                                "not class indices", "it holds 0"])
    npz_in_npy = tmp_path / "archive.npy"
    np.savez(tmp_path / "archive.npz", x=x)
    (tmp_path / "archive.npz").rename(npz_in_npy)
    cases["npz named npy"] = (npz_in_npy, ["archive.npy: is a .npz archive, not a .npy"])
    for name, (path, words) in cases.items():
        _one_error_line(runner.invoke(app, ["predict", str(run), str(path)]), *words)
        assert name
    # a true-label method without true labels: the inputs are named, not Ensemble's 'y'
    np.savez(tmp_path / "nolabels.npz", x=x)
    _one_error_line(runner.invoke(app, ["predict", str(run), str(tmp_path / "nolabels.npz"),
                                        "--method", "true_label"]),
                    "The method true_label (--method, or the run's certify.method) needs the "
                    "inputs' true classes", "nolabels.npz' has none")
    # in Python: the array as given, and every shape the run takes
    ens = Ensemble.load(run)
    every = re.escape("shape (n, 1, 28, 28), (n, 28, 28), (n, 28, 28, 1) or (n, 784). Got ")
    for bad, got in ((x.astype(np.float32) / 255, rf"'float32 values 0\.0\.\.[0-9.]+, shape "
                                                  rf"\({len(x)}, 28, 28\)' instead\.$"),
                     (x[:, :27], rf"'uint8 values [0-9]+\.\.[0-9]+, shape \({len(x)}, 27, 28\)' "
                                 r"instead\.$")):
        with pytest.raises(ValueError, match=every + got):
            ens.certify(bad)


def test_runs_without_weights_say_why(tmp_path, mnist_dir):
    data_dir, _ = mnist_dir
    cfg = _config(tmp_path, data_dir, training__save_weights=False, selection__T=4)
    experiment.train_run(cfg, tmp_path / "now", progress=False)
    assert not (tmp_path / "now" / runs.WEIGHTS).exists()
    with pytest.raises(RunError, match="save_weights: false") as err:
        Ensemble.load(tmp_path / "now")
    # the command the message gives trains the same run with its weights, which then loads
    cmd = str(err.value).split(": ", 1)[1].split("them: ", 1)[1].rstrip(".").split()
    assert cmd[:2] == ["poisoncert", "train"] and cmd[-1] == "NEW_DIR", cmd
    r = runner.invoke(app, [*cmd[1:-1], str(tmp_path / "again"), "-q"])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.load(tmp_path / "again" / runs.PREDICTIONS),
                          np.load(tmp_path / "now" / runs.PREDICTIONS))
    Ensemble.load(tmp_path / "again")
    r = runner.invoke(app, ["predict", str(tmp_path / "none"), str(tmp_path)])
    _one_error_line(r, "not a poisoncert run directory")


def test_digits_run_with_deskew_and_partition(tmp_path):
    """Other input forms: scikit-learn's digits (integers 0-16) deskewed, and DPA."""
    from poisoncert.config import from_dict
    from poisoncert.data import load_dataset

    raw = np.rint(load_dataset("digits").x_test[:50] * 16)
    for name, over in (("deskew", {"data": {"deskew": True}}),
                       ("dpa", {"selection": {"scheme": "partition", "k": 8}})):
        d = {"data": {"name": "digits", "test_limit": 50},
             "selection": {"scheme": "without_replacement", "ns": 60, "T": 8, "seed": 2},
             "training": {"model": "cnn_small", "steps": 20, "group_size": 4},
             "run": {"chunk_size": 4}}
        for section, values in over.items():
            d[section].update(values)
        if name == "dpa":
            d["selection"] = {"scheme": "partition", "k": 8, "seed": 2}
        run = tmp_path / name
        experiment.train_run(from_dict(d), run, progress=False)
        want, _ = experiment.certify_run(run, plot=False)
        ens = Ensemble.load(run)
        cert = ens.certify(raw[:, 0].astype(np.int64))
        predictions = np.load(run / runs.PREDICTIONS)
        np.testing.assert_array_equal(ens.base_predictions(raw), predictions)
        assert (predictions >= 0).mean() > 0.5 and len(np.unique(predictions)) > 3
        np.testing.assert_array_equal(cert.prediction, want.prediction)
        np.testing.assert_array_equal(cert.radius, want.radius)
        assert type(cert) is type(want)
        with pytest.raises(ValueError, match="integers 0-16"):
            ens.certify(raw / 16)
        if name == "dpa":  # statistics a deterministic certificate would ignore: refused
            for kw in (dict(alpha=0.01), dict(method="pairwise")):
                with pytest.raises(ValueError, match=r"^The '(alpha|method)' parameter of "
                                   r"Ensemble.certify must be left out for a partition \(DPA\) "
                                   "run, whose certificate is deterministic"):
                    ens.certify(raw[:2], **kw)


def _shared_data() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "shared" / "data" / "mnist").is_dir():
            return parent / "shared" / "data"
    return None


@pytest.mark.skipif(_shared_data() is None, reason="shared/data (real MNIST) absent")
def test_real_mnist17_png_files_through_the_cli(tmp_path):
    """The acceptance case on the real MNIST 1/7 (first 60 test images, T = 16): the test
    images as PNG files, read back from the IDX file, predicted as certify has them."""
    from PIL import Image

    from poisoncert.data.idx import read_idx

    shared = _shared_data()
    cfg = yaml.safe_load((ROOT / "experiments" / "mnist17.yaml").read_text())
    cfg["data"].update(data_dir=str(shared), test_limit=60)
    cfg["selection"].update(T=16)
    cfg["training"].update(steps=40, group_size=4)
    cfg["run"]["chunk_size"] = 8
    path = tmp_path / "mnist17.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(path), "--run-dir", str(run), "-q"]).exit_code == 0
    assert runner.invoke(app, ["certify", str(run), "--no-plot"]).exit_code == 0
    images = read_idx(next((shared / "mnist").glob("t10k-images*")))
    labels = read_idx(next((shared / "mnist").glob("t10k-labels*")))
    x = images[np.isin(labels, (1, 7))][:60]
    folder = tmp_path / "png"
    folder.mkdir()
    for i, img in enumerate(x):
        Image.fromarray(img, mode="L").save(folder / f"{i:04d}.png")
    r = runner.invoke(app, ["predict", str(run), str(folder), "--out", str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    got, want = _rows(tmp_path / "p.csv"), _rows(run / runs.CERTIFICATES)
    assert [(g["prediction"], g["radius"]) for g in got] == [
        (w["prediction"], w["radius"]) for w in want]
    assert sum(int(w["radius"]) > 0 for w in want) > 30
    cert = Ensemble.load(run).certify(x)
    assert cert.radius.tolist() == [int(w["radius"]) for w in want]


def _bare_ensemble(scheme: str, **selection) -> Ensemble:
    """An ``Ensemble`` of a ``scheme`` run with three classes, made without training (no
    weights: only its certificates of given votes are used)."""
    from poisoncert.config import from_dict

    cfg = from_dict({"data": {"name": "digits"}, "selection": {"scheme": scheme, **selection}})
    record = {"input": {"shape": [1, 8, 8], "kind": "integer", "scale": 16.0,
                        "deskew": False},
              "classes": [0, 1, 2], "class_names": ["0", "1", "2"],
              "selection": {"scheme": scheme, "n": 200, "ns": selection.get("ns"), "p": None,
                            "T": cfg.T, "n_clean": 0}}
    return Ensemble(Path("."), cfg, record, [], "cpu", "twin")


def test_votes_of_other_classifiers_are_not_certified_as_the_ensembles():
    """``certify_predictions`` and ``certify_votes`` certify the ensemble's own outputs:
    predictions of another number of classifiers (Finite Aggregation reads its k from the
    rows: the rows stacked twice were certified as an ensemble of twice as many buckets, with
    larger radii), or counts of more votes than it has classifiers (DPA reads the gaps
    alone), are one error naming the parameter, never a certificate."""
    rng = np.random.default_rng(0)
    fa = _bare_ensemble("finite_aggregation", k=4, d=2)
    P = np.where(rng.random((8, 30)) < 0.8, 0, rng.integers(0, 3, (8, 30))).astype(np.int16)
    own = fa.certify_predictions(P)
    assert own.radius.max() >= 1
    # array-likes that are no list (a torch tensor, a pandas frame: __array__) are arrays

    class Tensorish:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    assert fa.certify_predictions(Tensorish(P)).radius.tolist() == own.radius.tolist()
    for bad in (np.concatenate([P, P]), P[:4], P[:, :, None]):
        with pytest.raises(ValueError, match=r"^The 'predictions' parameter of "
                                             r"Ensemble.certify_predictions must be an int "
                                             r"array of shape \(T, n\) = \(8, n\)"):
            fa.certify_predictions(bad)
    with pytest.raises(ValueError, match=r"'predictions' .* Got 3 instead"):
        fa.certify_predictions(np.where(P == 2, 3, P))

    dpa = _bare_ensemble("partition", k=5)
    votes = np.array([[5, 0, 0], [3, 2, 0]])
    assert dpa.certify_votes(votes).radius.tolist() == [1, 0]
    assert dpa.certify_votes(Tensorish(votes)).radius.tolist() == [1, 0]
    assert dpa.certify_votes(votes, model="P1").radius.tolist() == [2, 0]
    for bad, got in ((2 * votes, "row 0 summing to 10"), (votes[:, :2], r"shape \(2, 2\)")):
        with pytest.raises(ValueError, match=r"^The 'votes' parameter of Ensemble.certify_votes "
                                             rf"must be .*\(n, 3\).* Got '.*{got}' instead"):
            dpa.certify_votes(bad)
    with pytest.raises(ValueError, match=r"^The 'predictions' parameter"):
        dpa.certify_predictions(np.zeros((6, 2), dtype=np.int16))

    bag = _bare_ensemble("without_replacement", ns=20, T=6)
    assert len(bag.certify_votes([[6, 0, 0]], alpha=0.1).radius) == 1
    with pytest.raises(ValueError, match=r"^The 'votes' parameter .* Got '.*shape \(1, 4\)'"):
        bag.certify_votes([[6, 0, 0, 0]], alpha=0.1)


def test_experiment_certify_votes_refuses_more_votes_than_a_partition_run_has():
    """``experiment.certify.certify_votes`` (public; ``certify_run`` and ``Ensemble`` call it)
    gave a partition run's counts to ``dpa_certify``, which reads the gaps alone: counts of more
    votes than the run's ``T`` classifiers were certified with larger radii. The random schemes
    were refused by ``certify.certify``'s ``T``."""
    from poisoncert.config import from_dict
    from poisoncert.experiment.certify import certify_votes

    cfg = from_dict({"data": {"name": "digits"}, "selection": {"scheme": "partition", "k": 5}})
    votes = np.array([[5, 0, 0], [3, 2, 0]])
    opts = dict(alpha=0.001, method="auto", model="P6")
    from poisoncert.certify import dpa_certify

    assert certify_votes(cfg, 200, votes, **opts).radius.tolist() == \
        dpa_certify(votes).radius.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"^The 'votes' parameter of certify_votes must be "
                                         r"counts of at most T = 5 votes a row .* Got 'a row "
                                         r"of 10 votes' instead"):
        certify_votes(cfg, 200, 2 * votes, **opts)
    bag = from_dict({"data": {"name": "digits"},
                     "selection": {"scheme": "without_replacement", "ns": 20, "T": 5}})
    with pytest.raises(ValueError, match=r"^The 'T' parameter of certify"):
        certify_votes(bag, 200, 2 * votes, **opts)


def _shared_mnist() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data"
        if (candidate / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
            return candidate
    return None


@pytest.mark.skipif(_shared_mnist() is None, reason="shared/data/mnist beside the repo absent")
def test_a_small_training_set_does_not_warn_of_ordinary_inputs():
    """Of n training inputs' means, a new input like them lies outside their range (the
    recorded quantiles are the extremes below 1000 inputs) with chance 2 / (n + 1): 9.5% for
    n = 20, above the 5% that warns. Ordinary inputs of a small training set then warned on
    most calls (n = 200: 5 of 200 calls); the threshold grows for small n, and inputs all
    outside still warn."""
    from poisoncert.experiment.ensemble import unusual_share
    from poisoncert.experiment.ensemble_record import INPUT_MEAN_QUANTILES

    rng = np.random.default_rng(0)
    for n in (20, 40, 200, 2000):
        ens = object.__new__(Ensemble)
        train = rng.random(n)
        ens.training_means = tuple(np.quantile(train, INPUT_MEAN_QUANTILES))
        ens.unusual_share = unusual_share({"input_means": {"n": n}})
        warned = sum(ens._unusual(rng.random(50)) is not None for _ in range(200))
        assert warned <= 2, (n, warned)  # 200 calls of 50 ordinary inputs each
        assert ens._unusual(rng.random(50) + 2.0) is not None, n  # every input outside
    assert unusual_share({}) == unusual_share({"input_means": {"n": 10**6}}) == 0.05
    assert unusual_share({"input_means": {"n": 12}}) > 1  # too few to say: never warns


def test_inputs_unlike_the_training_data_get_one_warning_line(tmp_path):
    """A review's case: an inverted MNIST digit (dark on white) was certified with no word
    of how unlike the training digits it is. The run records the range of its training
    inputs' means (ensemble.json's input_means); inputs mostly outside it get one warning
    line, and the same certificates. Real MNIST 1/7: its test images do not warn, their
    inverted copies do; a run without the record (made before it) never warns."""
    import subprocess
    import sys
    import warnings

    from poisoncert.data.idx import read_idx
    from poisoncert.experiment.ensemble import UnusualInputsWarning

    data = _shared_mnist()
    cfg = yaml.safe_load((ROOT / "experiments" / "mnist17.yaml").read_text())
    cfg["data"]["data_dir"] = str(data)
    cfg["selection"]["T"] = 2
    cfg["training"]["steps"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", str(tmp_path / "c.yaml"), "--run-dir", str(run), "-q"])
    assert r.exit_code == 0, r.output
    means = json.loads((run / ENSEMBLE_JSON).read_text())["input_means"]
    assert 0 < means["low"] < means["high"] < 0.5 and means["n"] == 13007
    x = read_idx(data / "mnist" / "t10k-images-idx3-ubyte.gz")
    y = read_idx(data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    x = x[np.isin(y, (1, 7))]  # the run's 2163 test images
    ens = Ensemble.load(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails
        plain = ens.certify(x)
    with pytest.warns(UnusualInputsWarning, match=r"2163 of the 2163 inputs .* outside"):
        inverted = ens.certify(255 - x)
    assert plain.prediction.shape == inverted.prediction.shape == (2163,)
    # the command line: one line on stderr, the rows as without it
    np.save(tmp_path / "inv.npy", 255 - x[:50])
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "poisoncert.cli", "predict", str(run),
                           str(tmp_path / "inv.npy"), "-q", "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: 50 of the 50 inputs"), lines
    with pytest.warns(UnusualInputsWarning):
        want = ens.certify(255 - x[:50]).radius  # the same batches as the command's
    assert [int(g["radius"]) for g in _rows(tmp_path / "p.csv")] == want.tolist()
    ens.training_means = None  # a run that recorded no range (made before it)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ens.certify(255 - x)
    np.testing.assert_array_equal(again.radius, inverted.radius)  # a warning, nothing else


def test_train_load_and_predict_leave_the_callers_torch_state_as_it_was(tmp_path):
    """A user's script: ``train_run`` from a dict with a factory of its own, then
    ``Ensemble.load`` and ``certify``, under ``torch.set_default_dtype(torch.float64)``.
    ``train_run`` failed ("Input type (float) and bias type (double) should be the same":
    the factory's check built its module float64), and ``train_run`` and ``Ensemble.load``
    drew from the caller's torch generator (the checks' and the loader's models were built
    on it). Now each leaves the RNG state, the default dtype and the thread count as they
    were, and the run is the one trained under float32."""
    import torch

    d = {"data": {"name": "digits", "test_limit": 30},
         "selection": {"scheme": "without_replacement", "ns": 60, "T": 4, "seed": 2},
         "training": {"model": "examples.custom_model.net:make_model",
                      "model_kwargs": {"width": 4}, "steps": 5, "group_size": 2},
         "run": {"chunk_size": 2}}
    experiment.train_run(d, tmp_path / "f32", progress=False)

    def state():
        return (torch.get_rng_state(), torch.get_default_dtype(), torch.get_num_threads())

    def same(a, b):
        return torch.equal(a[0], b[0]) and a[1:] == b[1:]

    from sklearn.datasets import load_digits

    x = load_digits().images[:20].astype(np.int64)  # the data set's own form (0-16)
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(7)
        before = state()
        experiment.train_run(d, tmp_path / "f64", progress=False)
        assert same(state(), before)
        ens = Ensemble.load(tmp_path / "f64")
        assert same(state(), before)
        votes = ens.votes(x)
        assert same(state(), before)
    finally:
        torch.set_default_dtype(torch.float32)
    np.testing.assert_array_equal(np.load(tmp_path / "f64" / runs.PREDICTIONS),
                                  np.load(tmp_path / "f32" / runs.PREDICTIONS))
    np.testing.assert_array_equal(votes, Ensemble.load(tmp_path / "f32").votes(x))


def test_predict_shows_a_bar_in_rows_while_it_writes_many_rows(tmp_path, trained, monkeypatch):
    """From ``ROWS_BAR`` inputs predict shows a bar in rows while it makes the rows' text
    (10^6 inputs spent 30 s (CSV) to 90 s (JSON) on it with no bar, after the predictions'
    bar had ended); every row is counted, and --quiet shows none."""
    from contextlib import contextmanager

    import poisoncert.cli.predict as cli_predict
    import poisoncert.cli.progress as cli_progress

    run, x, _ = trained
    np.savez(tmp_path / "x.npz", x=x)
    shown = []

    @contextmanager
    def recorder(total, completed, label, *, unit="models"):
        done = []
        shown.append((total, completed, label, unit, done))
        yield done.append

    monkeypatch.setattr(cli_progress, "rich_progress", recorder)
    monkeypatch.setattr(cli_predict, "ROWS_BAR", len(x), raising=False)
    for fmt in ("csv", "json"):
        shown.clear()
        out = tmp_path / f"p.{fmt}"
        r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz"), "--out", str(out)])
        assert r.exit_code == 0, r.output
        rows = [s for s in shown if s[3] == "rows"]
        assert len(rows) == 1 and rows[0][:3] == (len(x), 0, "rows"), shown
        assert sum(rows[0][4]) == len(x)
    shown.clear()
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz"), "-q", "--out",
                            str(tmp_path / "q.csv")])
    assert r.exit_code == 0 and shown == [], (r.output, shown)
    monkeypatch.setattr(cli_predict, "ROWS_BAR", len(x) + 1)
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz"), "--out",
                            str(tmp_path / "s.csv")])
    assert r.exit_code == 0 and [s for s in shown if s[3] == "rows"] == [], shown


@pytest.mark.parametrize("name", ["preprocess", "base_predictions", "prediction_blocks",
                                  "votes", "predict", "certify", "certify_predictions",
                                  "certify_votes"])
def test_ensemble_methods_document_every_parameter_and_what_they_return(name):
    """``votes``, ``predict`` and ``certify`` said what they return in a phrase and nothing
    of ``x`` (its shapes and dtypes, raw or preprocessed), ``progress`` or ``preprocessed``:
    each public method has a numpy-style Parameters section naming every parameter (alone or
    in a group such as ``x, progress, preprocessed :``) and a Returns section."""
    import inspect

    from poisoncert import Ensemble

    method = getattr(Ensemble, name)
    doc = inspect.getdoc(method)
    assert "\nParameters\n----------\n" in doc and "\nReturns\n-------\n" in doc, name
    section = doc.split("\nParameters\n----------\n", 1)[1].split("\nReturns\n", 1)[0]
    named = set()
    for line in section.splitlines():
        if line and not line.startswith(" ") and " :" in line:
            named |= {p.strip() for p in line.split(" :", 1)[0].split(",")}
    params = [p for p in inspect.signature(method).parameters if p != "self"]
    assert set(params) <= named, (name, sorted(set(params) - named))


def test_predict_counts_its_output_text_in_the_memory_check(tmp_path, monkeypatch):
    """predict's memory check counted the predictions (T x n int16) and vote counts only,
    while the rows' text (made a block at a time, but joined whole and held with its
    encoding: 2.1 times it, 174 CSV / 593 JSON bytes a row here) was left out: 150,000
    inputs of a run of 8 classifiers planned 9.6 MB and made 2 x 26 MB of CSV, 2 x 89 MB of
    JSON. The text then counted twice per input, and those 150,000 inputs were refused under
    a limit of 100 MiB. The output is now streamed (predictions a block of inputs at a time,
    rows written a block at a time), so the check counts what is held: each input's votes
    and certificate, one block's predictions and one block's rows (a bound of one row's text,
    its columns from a row certified from made-up votes, numbers at their widest): the
    150,000 inputs are predicted under 100 MiB, in CSV and JSON. 400,000 under 80 MiB are
    refused before any prediction, in one line naming INPUTS and the most inputs that fit
    (the most that the check itself lets through). The bound is checked against the text
    predict writes."""
    from poisoncert import resources
    from poisoncert.experiment import ensemble

    rng = np.random.default_rng(0)
    x = rng.random((300, 12)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{name: 'npz:{tmp_path / 'd.npz'}'}}\nselection: {{scheme: "
                   "with_replacement, ns: 40, T: 8, seed: 1}\ntraining: {model: mlp, steps: 2, "
                   "group_size: 4}\nrun: {chunk_size: 8}\n")
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(cfg), "--run-dir", str(run), "-q"]).exit_code == 0
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "100M")
    seen = {}
    np.savez(tmp_path / "many.npz", x=np.zeros((150_000, 12), np.float32))
    for fmt in ("csv", "json"):
        out = tmp_path / f"many.{fmt}"
        r = runner.invoke(app, ["predict", str(run), str(tmp_path / "many.npz"), "--out",
                                str(out), "-q"])
        assert r.exit_code == 0, r.output
        data = out.read_bytes()
        if fmt == "csv":  # a header and a line a row
            assert data.count(b"\n") == 150_001 and data.endswith(b"\n")
        else:  # each row's index, the list and the document closed
            assert data.count(b'\n   "index": ') == 150_000 and data.endswith(b"\n ]\n}\n")
        out.unlink()
    # 400,000 inputs (19 MB) under 80 MiB: the array read, their certificates refused
    np.savez(tmp_path / "more.npz", x=np.zeros((400_000, 12), np.float32))
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "80M")
    real = ensemble.check_predict_memory
    args = {}
    monkeypatch.setattr(ensemble, "check_predict_memory",
                        lambda *a, **kw: args.update({a[4]: (a, kw)}) or real(*a, **kw))
    for fmt in ("csv", "json"):
        r = runner.invoke(app, ["predict", str(run), str(tmp_path / "more.npz"), "--out",
                                str(tmp_path / f"many.{fmt}"), "-q"])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        m = re.fullmatch(r"error: The 'INPUTS' parameter of predict must be a file of at most "
                         r"([\d,]+) inputs for their certificates to fit in memory \(it needs "
                         r"about .+ for the 400,000 inputs' vote counts and certificates, .+ "
                         rf"for a block of [\d,]+ {fmt.upper()} rows \(at most ([\d,]+) bytes "
                         r"each\) and .+ for a block of [\d,]+ inputs' predictions; .+\)\. "
                         r"Got 400,000 inputs instead\.\n", r.output)
        assert m, r.output
        most = int(m[1].replace(",", ""))
        seen[fmt.upper()] = int(m[2].replace(",", ""))
        a, kw = args[fmt.upper()]
        assert a[1] == 400_000 and 150_000 < most < 400_000
        real(a[0], most, *a[2:], **kw)  # fits
        with pytest.raises(resources.ResourceError, match=f"at most {m[1]} inputs"):
            real(a[0], most + 1, *a[2:], **kw)
        assert not (tmp_path / f"many.{fmt}").exists()
    monkeypatch.delenv(resources.MEMORY_LIMIT_ENV)
    # the bound holds for every row written (and is no more than about 2.5 times them)
    monkeypatch.setattr(ensemble, "check_predict_memory",
                        lambda *a, **kw: seen.update({a[4]: a[3]}) or real(*a, **kw))
    np.savez(tmp_path / "small.npz", x=rng.random((2000, 12)).astype(np.float32))
    for fmt in ("csv", "json"):
        r = runner.invoke(app, ["predict", str(run), str(tmp_path / "small.npz"), "--out",
                                str(tmp_path / f"p.{fmt}"), "-q"])
        assert r.exit_code == 0, r.output
    lines = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert len(lines) == 2000 and max(len(ln) + 1 for ln in lines) <= seen["CSV"] \
        <= 2.5 * max(len(ln) + 1 for ln in lines), seen
    text = (tmp_path / "p.json").read_text()
    rows = text[text.index('"rows": ['):]
    assert len(rows) <= 2000 * seen["JSON"] <= 2.5 * len(rows), seen
    for r in json.loads(text)["rows"]:  # each row as rows_json writes it
        assert len(json.dumps(r, indent=1).replace("\n", "\n  ")) + 6 <= seen["JSON"]
    # names the csv module quotes and JSON escapes: their widest cell, at least as written
    import io

    from poisoncert.experiment.certify import text_width

    for names in (["a,b", "x\"y\"", "é.png", "t\tab"], ["12", "3"], ["naïve 𝟙.png"]):
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([[v] for v in names])
        widest = max(len(ln.encode()) for ln in buf.getvalue().splitlines())
        assert widest <= text_width(names, as_json=False)[0] <= 2 * widest + 2, names
        widest = max(len(json.dumps(v)) for v in names)
        assert widest <= text_width(names, as_json=True)[0] <= widest + 2, names
        assert text_width(names, as_json=False)[1] == all(v.isascii() for v in names)


def test_predict_rows_on_a_pipe_its_reader_closed_end_quietly(tmp_path, trained):
    """``predict RUN INPUTS | head -1``: once the rows were streamed, the reader closing the
    pipe made predict print "note: the rows printed so far are not all ..." and "error:
    [Errno 32] Broken pipe" and exit 1 (it wrote its whole text at once before, and exited
    0). A reader that stopped reading asked for no more rows: predict stops writing them,
    says nothing of it, prints its summary on stderr and exits 0, as before."""
    import os
    import subprocess
    import sys

    run, x, _ = trained
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.concatenate([x] * max(1, -(-3000 // len(x)))))  # > a pipe's 64 KiB
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "poisoncert.cli", "predict", str(run),
                             str(inputs), "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    head = proc.stdout.readline()
    proc.stdout.close()  # as `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert head.startswith(b"input,") or head.startswith(b"index,"), head
    assert "Broken pipe" not in err and "note:" not in err and "error" not in err, err
    assert "certified" in err  # the summary, on stderr as always without --out
