"""``CertifiedModel``: what ``Ensemble.load`` gives for any finished run, an ``Ensemble`` or, for
a knn / rnn run, a ``NeighborModel``, used through one surface.

``NeighborModel`` was no ``Ensemble`` and nothing named what both are: code written against
``Ensemble``'s docs could not tell which members a neighbour model has, nor check for either
with ``isinstance``. Both are now ``poisoncert.CertifiedModel`` (a runtime-checkable
protocol): the same ``load``, ``preprocess``, ``votes``, ``predict``, ``certify``,
``check_options``, ``encode``, ``decode`` and ``describe``, with the same arguments, the same
result types, numpy-style docstrings, and the run's own certificates on its test inputs. What
has no meaning for a neighbour model (``T``, ``base_predictions``, ``certify_votes``) is
absent from it, not faked.
"""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from poisoncert import CertifiedModel, Ensemble, NeighborModel
from poisoncert.certify import certified_accuracy
from poisoncert.config import from_dict
from poisoncert.experiment import certify_run, split_data, train_run
from poisoncert.experiment.model import RADIUS_UNIT
from poisoncert.votes import majority_vote

_DATA = {"name": "digits", "test_limit": 40}
#: Small real runs, as tests/test_nn_predict.py and test_ensemble.py build them.
KINDS = {
    "knn": {"selection": {"scheme": "knn", "k": 3}},
    "rnn": {"selection": {"scheme": "rnn", "r": 20.0}},
    "without_replacement": {
        "selection": {"scheme": "without_replacement", "ns": 60, "T": 8, "seed": 2},
        "training": {"model": "cnn_small", "steps": 20, "group_size": 4},
        "run": {"chunk_size": 4}},
    "partition": {
        "selection": {"scheme": "partition", "k": 8, "seed": 2},
        "training": {"model": "cnn_small", "steps": 20, "group_size": 4},
        "run": {"chunk_size": 4}},
    "finite_aggregation": {
        "selection": {"scheme": "finite_aggregation", "k": 4, "d": 2, "seed": 2},
        "training": {"model": "cnn_small", "steps": 20, "group_size": 4},
        "run": {"chunk_size": 4}},
}
NEIGHBOURS = ("knn", "rnn")
SHARED = ("load", "preprocess", "votes", "predict", "certify", "check_options", "encode",
          "decode", "describe")
COMMON_KEYS = {"kind", "run_dir", "scheme", "n", "n_classes", "classes", "class_names", "input",
               "input_shape", "device", "deterministic", "certify", "radius_unit"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each kind of run trained and certified once: ``{kind: (run_dir, certificate)}``, and
    the raw test inputs (digits' integers 0-16) with their class indices."""
    tmp = tmp_path_factory.mktemp("models")
    out = {}
    for kind, over in KINDS.items():
        if kind not in NEIGHBOURS:
            pytest.importorskip("torch")
        run = tmp / kind
        train_run(from_dict({"data": _DATA, **over}), run, progress=False)
        out[kind] = (run, certify_run(run, plot=False)[0])
    data = split_data(from_dict({"data": _DATA, **KINDS["knn"]}).data)
    raw = np.rint(data.x_test * 16).astype(np.uint8)
    assert np.array_equal(raw.astype(np.float32) / np.float32(16), data.x_test)
    return out, raw, np.asarray(data.y_test)


@pytest.mark.parametrize("kind", list(KINDS))
def test_either_kind_of_run_is_a_certified_model_used_the_same_way(runs, kind):
    out, x, y_idx = runs
    run, want = out[kind]
    m = Ensemble.load(run)
    assert isinstance(m, CertifiedModel)
    assert type(m) is (NeighborModel if kind in NEIGHBOURS else Ensemble)
    n, K = len(x), m.n_classes
    assert K == len(m.classes) == len(m.class_names) == 10 and m.device == "cpu"
    assert m.scheme == kind and m.input_shape == (1, 8, 8)

    # votes and predict: int64 (n, K) and (n,), the run's own on its test inputs
    votes = m.votes(x)
    assert votes.dtype == np.int64 and votes.shape == (n, K)
    assert np.array_equal(votes, np.load(run / "votes.npy"))
    pred = m.predict(x)
    assert pred.dtype == np.int64 and pred.shape == (n,)
    assert np.array_equal(pred, majority_vote(votes))  # the majority of votes, for either
    assert np.array_equal(m.predict(m.preprocess(x), preprocessed=True), pred)
    assert ((pred >= -1) & (pred < K)).all()

    # certify: certify_run's certificate of the test set, with classes, in operations
    cert = m.certify(x)
    assert type(cert) is type(want) and len(cert) == n
    for name in ("prediction", "radius"):
        got = getattr(cert, name)
        assert got.dtype == np.int64 and got.shape == (n,), name
        assert np.array_equal(got, getattr(want, name)), name
    assert np.array_equal(cert.classes, m.classes)
    assert ((cert.prediction == -1) == (cert.radius == -1)).all()
    if m.deterministic:  # knn, rnn, partition, FA: the majority vote, certified or not
        assert np.array_equal(cert.prediction, pred)
    described = m.describe()
    assert cert.setting()["radius_unit"] == described["radius_unit"] == RADIUS_UNIT
    assert cert.setting()["model"] == described["certify"]["model"] == m.config.certify.model
    assert m.certify(x[:3], model="P1").setting()["model"] == "P1"
    ids = m.decode(y_idx)
    assert np.array_equal(m.encode(ids), y_idx)
    acc = certified_accuracy(cert, ids, [0, 1])  # original class ids, as the certificate
    manual = [np.mean((cert.prediction == y_idx) & (cert.radius >= r)) for r in (0, 1)]
    assert np.allclose(acc, manual, rtol=0, atol=0)
    labels = cert.predicted_labels()
    assert [v if v is not None else -1 for v in labels] == m.decode(cert.prediction).tolist()

    # docs/predict.md's example, as written, on either kind
    ids_got, radius = _doc_example()(run, x[:5])
    p1 = m.certify(x[:5], model="P1")
    assert np.array_equal(ids_got, m.decode(p1.prediction))
    assert np.array_equal(radius, p1.radius)

    # no inputs: empty results of the same types
    assert m.predict(x[:0]).shape == (0,) and m.votes(x[:0]).shape == (0, K)
    assert len(m.certify(x[:0])) == 0

    # the statistics' options: taken by a randomized scheme, refused by a deterministic one
    assert m.deterministic == (kind != "without_replacement")
    if m.deterministic:
        for kw in (dict(alpha=0.01), dict(method="pairwise")):
            with pytest.raises(ValueError, match=r"^The '(alpha|method)' parameter of "):
                m.certify(x[:2], **kw)
        with pytest.raises(ValueError, match=r"^The 'y' parameter of "):
            m.certify(x[:2], y=ids[:2])
    else:
        assert m.check_options(alpha=0.01).alpha == 0.01
        assert m.certify(x[:2], alpha=0.01).setting()["alpha"] == 0.01
    # a bad input: one error naming x, for either
    with pytest.raises(ValueError, match=r"'x'"):
        m.predict(np.full((2, 3), 0.5))

    # describe: plain values, the common keys and the kind's own; nothing faked
    assert json.loads(json.dumps(described)) == described
    assert COMMON_KEYS <= set(described)
    assert described["kind"] == ("neighbors" if kind in NEIGHBOURS else "ensemble")
    assert described["n"] == m.n and described["classes"] == m.classes.tolist()
    assert described["deterministic"] == m.deterministic
    if kind in NEIGHBOURS:
        assert "T" not in described and not hasattr(m, "T")
        assert not hasattr(m, "base_predictions") and not hasattr(m, "certify_votes")
        assert described["n_train"] == m.n_train
        size = {"knn": ("k", 3), "rnn": ("r", 20.0)}[kind]
        assert described[size[0]] == size[1]
        if kind == "knn":  # the counts among the k nearest
            assert (votes.sum(axis=1) == 3).all()
    else:
        assert described["T"] == m.T == 8
        assert described["d"] == (2 if kind == "finite_aggregation" else None)
        assert (votes.sum(axis=1) <= m.T).all()


def _doc_example():
    """The ``report`` function of docs/predict.md's example of code for either kind."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "predict.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "def report(" in b]
    assert len(blocks) == 1
    space: dict = {}
    exec(compile(blocks[0], "docs/predict.md", "exec"), space)  # noqa: S102 - our own docs
    return space["report"]


def test_other_objects_are_no_certified_model():
    """The protocol asks for the whole surface: the scikit-learn estimator (fitted, not
    loaded; labels, not class indices) is not one, nor is a plain object."""
    from poisoncert import CertifiedEnsembleClassifier

    assert not isinstance(CertifiedEnsembleClassifier(), CertifiedModel)
    assert not isinstance(object(), CertifiedModel)


@pytest.mark.parametrize("cls", [Ensemble, NeighborModel], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", SHARED)
def test_the_shared_methods_take_the_same_arguments(cls, name):
    """The protocol's parameters, in order, with their kinds and defaults (but ``where``'s
    default, each class's own name): what code written for one works with on the other."""
    def params(f):
        return [(p.name, p.kind, None if p.name == "where" else p.default)
                for p in inspect.signature(f).parameters.values() if p.name != "self"]

    assert params(getattr(cls, name)) == params(getattr(CertifiedModel, name)), name


def _documented(doc: str) -> set[str]:
    section = doc.split("\nParameters\n----------\n", 1)[1].split("\nReturns\n", 1)[0]
    named = set()
    for line in section.splitlines():
        if line and not line.startswith(" ") and " :" in line:
            named |= {p.strip() for p in line.split(" :", 1)[0].split(",")}
    return named


@pytest.mark.parametrize("cls", [Ensemble, NeighborModel], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", SHARED)
def test_the_shared_methods_document_every_parameter_and_what_they_return(cls, name):
    """NeighborModel's ``votes``, ``predict`` and ``certify`` said what they return in a
    phrase (not numpy-style, as Ensemble's are): every shared method of both has a Returns
    section and, where it takes parameters, a Parameters section naming each."""
    method = getattr(cls, name)
    doc = inspect.getdoc(method)
    assert "\nReturns\n-------\n" in doc, (cls.__name__, name)
    params = [p for p in inspect.signature(method).parameters if p not in ("self", "cls")]
    if params:
        assert "\nParameters\n----------\n" in doc, (cls.__name__, name)
        assert set(params) <= _documented(doc), (name, sorted(set(params) - _documented(doc)))


@pytest.mark.parametrize("kind", ["knn", "without_replacement"])
def test_unusual_inputs_warning_names_the_callers_line(runs, kind):
    """``UnusualInputsWarning`` was reported at a line of ``ensemble.py`` / ``nnmodel.py``
    (``stacklevel=2`` from a function the public methods call in turn), so a user's
    ``-W error`` traceback or a warnings filter by module named the library, not their code.
    It now names the caller's line, from ``votes``, ``predict`` and ``certify`` alike."""
    import sys
    import warnings

    from poisoncert.experiment.inputform import UnusualInputsWarning

    out, x, _ = runs
    m = Ensemble.load(out[kind][0])
    assert m.training_means is not None
    inverted = (16 - x).astype(np.uint8)
    for call in (m.votes, m.predict, m.certify):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            line = sys._getframe().f_lineno + 1
            call(inverted)
        unusual = [w for w in seen if issubclass(w.category, UnusualInputsWarning)]
        assert len(unusual) == 1, [str(w.message) for w in seen]
        assert (unusual[0].filename, unusual[0].lineno) == (__file__, line), call.__name__
