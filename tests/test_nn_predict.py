"""``poisoncert predict`` and ``Ensemble.load`` on knn / rnn runs (``nnmodel.NeighborModel``).

A nearest-neighbour run keeps no classifiers: its training set, loaded again from the config
and checked against the run's data checksum, is searched for each new input. The certificate
of an input must be exactly the one ``poisoncert certify`` gives it as a test point: the run's
own test inputs, given as new inputs, reproduce ``certificates.csv`` row for row (knn and
rnn, several poisoning models, raw and ``u / 16`` inputs, inputs searched in blocks of a few);
inputs tied at the neighbour cut-off take the smaller training index first, as the search of
training does (checked against a plain integer-arithmetic sort); other data and non-integer
pixels are one error line.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from poisoncert import Ensemble, knn
from poisoncert.cli import app
from poisoncert.config import from_dict
from poisoncert.experiment import certify_run, split_data, train_run
from poisoncert.runs import RunError

runner = CliRunner()

_DIGITS = {"data": {"name": "digits", "test_limit": 90}, "selection": {"scheme": "knn", "k": 3}}


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _predict(run, inputs, *args) -> list[dict]:
    r = runner.invoke(app, ["predict", str(run), str(inputs), *args])
    assert r.exit_code == 0, r.output
    return _csv(r.stdout)


def _same_rows(pred: list[dict], cert: list[dict]) -> None:
    """Every column of certificates.csv equal in predict's rows, row for row."""
    assert len(pred) == len(cert)
    for p, c in zip(pred, cert, strict=True):
        assert {k: p[k] for k in c} == c, (p, c)


@pytest.mark.parametrize("selection", [{"scheme": "knn", "k": 3},
                                       {"scheme": "rnn", "r": 20.0}])
def test_predicting_the_test_set_gives_certify_rows(tmp_path, selection, monkeypatch):
    cfg = from_dict({**_DIGITS, "selection": selection})
    run = tmp_path / "run"
    train_run(cfg, run)
    data = split_data(cfg.data)
    x = data.x_test  # float32 u / 16, as the loader reads digits
    raw = np.rint(x * 16).astype(np.uint8)
    assert np.array_equal(raw.astype(np.float32) / np.float32(16), x)
    np.save(tmp_path / "floats.npy", x)
    np.savez(tmp_path / "raw.npz", x=raw, y=np.asarray(data.summary.classes)[data.y_test])
    empty_balls = 0
    for model in ("P6", "P1", "P2", "P3"):
        certify_run(run, plot=False, model=model)
        cert_rows = _csv((run / "certificates.csv").read_text())
        # raw pixels with their labels: the label and correct columns too
        _same_rows(_predict(run, tmp_path / "raw.npz", "--model", model), cert_rows)
        no_label = [{**r, "label": "", "correct": ""} for r in cert_rows]
        _same_rows(_predict(run, tmp_path / "floats.npy", "--model", model), no_label)
        empty_balls += sum(r["prediction"] == "-1" for r in cert_rows)
    if selection["scheme"] == "rnn":
        assert 0 < empty_balls  # abstentions (empty balls) are among the rows compared
    # the library, searched a few inputs at a time: the same certificate
    from poisoncert.experiment import nnmodel
    from poisoncert.experiment.nnmodel import NeighborModel

    monkeypatch.setattr(nnmodel, "CHUNK_ELEMENTS", 7 * 64)
    ens = Ensemble.load(run)
    assert isinstance(ens, NeighborModel)
    cert, _ = certify_run(run, plot=False, model="P2")
    mine = ens.certify(raw, model="P2")
    for name in ("prediction", "radius", "slack", "exact"):
        assert np.array_equal(getattr(mine, name), getattr(cert, name)), name
    assert np.array_equal(ens.votes(x), np.load(run / "votes.npy"))
    assert np.array_equal(ens.predict(raw), np.load(run / "predictions.npy")[0])
    none = ens.certify(raw[:0])  # no inputs: an empty certificate, as Ensemble's
    assert none.prediction.shape == none.radius.shape == (0,)
    assert list(mine.predicted_labels()[:3]) == [ens.classes[p] if p >= 0 else None
                                                 for p in mine.prediction[:3]]
    # preprocess, as Ensemble's (it was missing: AttributeError): the same certificate
    pre = ens.preprocess(raw)
    assert pre.dtype == np.float32 and pre.shape == (len(raw), *ens.input_shape)
    again = ens.certify(pre, model="P2", preprocessed=True)
    for name in ("prediction", "radius", "slack", "exact"):
        assert np.array_equal(getattr(again, name), getattr(cert, name)), name
    assert np.array_equal(ens.predict(ens.preprocess(x), preprocessed=True),
                          np.load(run / "predictions.npy")[0])


def _tie_data(path, rng):
    """4-pixel images of values 0-2 (81 possible images for 300 samples: many samples at
    equal distances, duplicates with other labels), 3 classes."""
    x = rng.integers(0, 3, (340, 1, 2, 2)).astype(np.uint8)
    y = rng.integers(0, 3, 340)
    np.savez(path, x_train=x[:300], y_train=y[:300], x_test=x[300:], y_test=y[300:])
    return x, y


def test_ties_take_the_smaller_training_index_as_training_did(tmp_path):
    rng = np.random.default_rng(5)
    x, y = _tie_data(tmp_path / "d.npz", rng)
    k = 4
    cfg = from_dict({"data": {"name": f"npz:{tmp_path / 'd.npz'}"},
                     "selection": {"scheme": "knn", "k": k}, "certify": {"model": "P1"}})
    run = tmp_path / "run"
    train_run(cfg, run)
    certify_run(run, plot=False)
    # the test points and new ones, each with distance ties across the k-th neighbour
    queries = np.concatenate([x[300:], rng.integers(0, 3, (40, 1, 2, 2)).astype(np.uint8)])
    np.save(tmp_path / "q.npy", queries)
    rows = _predict(run, tmp_path / "q.npy")
    cert_rows = _csv((run / "certificates.csv").read_text())
    _same_rows(rows[:40], [{**r, "label": "", "correct": ""} for r in cert_rows])
    # by hand: exact integer squared distances, then the training index
    xt = x[:300].reshape(300, -1).astype(np.int64)
    q = queries.reshape(len(queries), -1).astype(np.int64)
    d2 = ((q[:, None, :] - xt[None, :, :]) ** 2).sum(axis=2)
    order = np.array([np.lexsort((np.arange(300), row)) for row in d2])
    labels = y[:300][order[:, :2 * k]]
    ties = sum(d2[i, order[i, k - 1]] == d2[i, order[i, k]] for i in range(len(q)))
    assert ties >= 40  # most queries have a tie across the cut-off
    ref = knn.knn_certify(labels, k=k, n_classes=3, model="P1", n_train=300)
    assert [int(r["prediction"]) for r in rows] == ref.prediction.tolist()
    assert [int(r["radius"]) for r in rows] == ref.radius.tolist()
    # the other order of tied samples would change some predictions: the test can tell
    rev = np.array([np.lexsort((-np.arange(300), row)) for row in d2])
    other = knn.knn_certify(y[:300][rev[:, :2 * k]], k=k, n_classes=3, model="P1",
                            n_train=300)
    assert not np.array_equal(other.radius, ref.radius) or \
        not np.array_equal(other.prediction, ref.prediction)


def test_other_data_than_the_run_was_trained_on_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    _tie_data(tmp_path / "d.npz", rng)
    cfg = from_dict({"data": {"name": f"npz:{tmp_path / 'd.npz'}"},
                     "selection": {"scheme": "knn", "k": 3}})
    run = tmp_path / "run"
    train_run(cfg, run)
    q = rng.integers(0, 3, (5, 1, 2, 2)).astype(np.uint8)
    np.save(tmp_path / "q.npy", q)
    _predict(run, tmp_path / "q.npy")  # its own data: predicted
    x = np.load(tmp_path / "d.npz")
    changed = dict(x)
    changed["y_train"] = changed["y_train"].copy()
    changed["y_train"][7] = (changed["y_train"][7] + 1) % 3  # one label
    np.savez(tmp_path / "d.npz", **changed)
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "q.npy")])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert lines[0].startswith(f"error: The data of the run '{run}' have changed since it was "
                               "trained (array checksum "), lines[0]
    assert "the file 'd.npz' had SHA-256 " in lines[0]
    assert lines[0].endswith("restore the data it was trained on, or train a new run on "
                             "these data."), lines[0]
    with pytest.raises(RunError, match="have changed since it was trained"):
        Ensemble.load(run)


def test_non_integer_pixels_are_refused_in_one_line(tmp_path):
    cfg = from_dict(_DIGITS)
    run = tmp_path / "run"
    train_run(cfg, run)
    x = split_data(cfg.data).x_test[:5]
    for bad in (x * 0.999, x * 255.0 / 16.0 * 1.5, -x):
        np.save(tmp_path / "bad.npy", bad.astype(np.float32))
        r = runner.invoke(app, ["predict", str(run), str(tmp_path / "bad.npy")])
        assert r.exit_code == 1
        lines = r.output.strip().splitlines()
        assert len(lines) == 1, r.output
        assert lines[0].startswith(f"error: {tmp_path / 'bad.npy'}: the run takes integers "
                                   "0-16"), lines[0]
        assert "or floats u / 16 of such integer pixels u" in lines[0]
        assert "this file holds float32 values" in lines[0]
        with pytest.raises(ValueError, match=r"^The 'x' parameter of NeighborModel must be "
                                             r"integers 0-16.*Got 'float32 values"):
            Ensemble.load(run).certify(bad.astype(np.float32))
    # u / 16 in float64 is as good as in float32; raw integers 0-16 as floats too
    ens = Ensemble.load(run)
    ref = ens.predict(np.rint(x * 16).astype(np.uint8))
    assert np.array_equal(ens.predict(x.astype(np.float64)), ref)
    assert np.array_equal(ens.predict(np.rint(x * 16)), ref)


def test_the_search_is_shown_and_options_checked_first(tmp_path):
    cfg = from_dict(_DIGITS)
    run = tmp_path / "run"
    train_run(cfg, run)
    x = np.rint(split_data(cfg.data).x_test * 16).astype(np.uint8)
    seen = []

    def display(total, done, label, unit=None):
        import contextlib

        seen.append((total, done, label, unit))

        @contextlib.contextmanager
        def cm():
            yield lambda k: seen.append(k)
        return cm()

    ens = Ensemble.load(run)
    ens.votes(x, progress=display)
    assert seen[0] == (90, 0, "knn: 90 inputs x 1437 training samples", "inputs")
    assert sum(k for k in seen[1:]) == 90
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "none.npy"), "--method",
                            "pairwise"])
    assert r.exit_code == 1 and "none.npy" in r.output
    np.save(tmp_path / "x.npy", x)
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npy"), "--method",
                            "pairwise"])
    assert r.exit_code == 1
    assert r.output.strip() == ("error: The '--method' parameter of predict must be left out "
                                "for a knn run, whose certificate is deterministic. Got "
                                "'pairwise' instead.")
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npy"), "--json"])
    doc = json.loads(r.stdout)
    assert doc["summary"]["setting"]["scheme"] == "knn" and len(doc["rows"]) == 90


def test_a_manifest_without_the_data_checksum_is_refused(tmp_path):
    """``docs/predict.md`` says a knn / rnn run whose manifest records no data checksum is
    refused (nothing says the data loaded now are the ones it searched), and ``run_data`` has
    ``require`` for it, but ``NeighborModel.load`` did not pass it: such a run (a manifest
    intact by its own digest) predicted on whatever data its config loaded now, here with a
    training label changed (a fresh-eyes review). Now one error line, before any search."""
    from poisoncert.runsafe import MANIFEST_DIGEST, manifest_digest

    rng = np.random.default_rng(2)
    _tie_data(tmp_path / "d.npz", rng)
    cfg = from_dict({"data": {"name": f"npz:{tmp_path / 'd.npz'}"},
                     "selection": {"scheme": "knn", "k": 3}})
    run = tmp_path / "run"
    train_run(cfg, run)
    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["data"]["sha256_arrays"]
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))
    changed = dict(np.load(tmp_path / "d.npz"))
    changed["y_train"] = (changed["y_train"] + 1) % 3  # every label
    np.savez(tmp_path / "d.npz", **changed)
    np.save(tmp_path / "q.npy", changed["x_test"][:5])
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "q.npy")])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "records no checksum of its data (data.sha256_arrays)" \
        in lines[0], r.output
    with pytest.raises(RunError, match="records no checksum"):
        Ensemble.load(run)


def test_cuda_for_a_neighbour_run_and_a_gpu_beyond_the_visible_are_refused(tmp_path,
                                                                           monkeypatch):
    """On a machine with a GPU, ``predict knn_run x.npy --device cuda`` searched on the CPU
    without a word (the search is numpy's), and ``--device cuda:5`` with one GPU passed the
    check and failed in torch later ('invalid device ordinal'). One line each now, before
    the run is read."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    run = tmp_path / "run"
    train_run(from_dict(_DIGITS), run)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=r"'device' parameter of Ensemble.load must be "
                           r"'cpu' for a knn run \(the neighbour search runs on the CPU\)\. "
                           f"Got '{device}' instead"):
            Ensemble.load(run, device=device)
    assert Ensemble.load(run, device="cpu") is not None
    with pytest.raises(ValueError, match=r"must be 'cpu', 'cuda' or 'cuda:0' to 'cuda:0' "
                       r"\(1 visible\)\. Got 'cuda:5' instead"):
        Ensemble.load(tmp_path / "no such run", device="cuda:5")
    x = split_data(from_dict(_DIGITS).data).x_test[:2]
    np.save(tmp_path / "q.npy", x)
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "q.npy"), "--device", "cuda"])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert "'cpu' for a knn run" in r.output, r.output


def test_neighbor_model_load_takes_the_device_ensemble_load_takes(tmp_path):
    """``NeighborModel.load(run, device='cpu')`` was a TypeError where ``Ensemble.load(run,
    device='cpu')`` loads the same knn run (as a NeighborModel): it takes 'cpu' as
    Ensemble.load does ('CPU', ' cpu ', torch.device('cpu')), and any other device is one
    line naming the parameter, before the run is read (a folder that is no run: still the
    device's error)."""
    import torch

    from poisoncert.experiment.nnmodel import NeighborModel

    run = tmp_path / "run"
    train_run(from_dict(_DIGITS), run)
    x = split_data(from_dict(_DIGITS).data).x_test[:3]
    want = Ensemble.load(run, device="cpu").predict(x)
    for device in ("cpu", "CPU", " cpu ", torch.device("cpu")):
        model = NeighborModel.load(run, device=device)
        assert np.array_equal(model.predict(x), want)
    for device in ("cuda", "cuda:0", "gpu", None):
        with pytest.raises(ValueError, match=r"^The 'device' parameter of NeighborModel\.load "
                           r"must be 'cpu' \(the knn / rnn neighbour search runs on the "
                           r"CPU\)\. Got .* instead\.$"):
            NeighborModel.load(tmp_path / "no such run", device=device)
