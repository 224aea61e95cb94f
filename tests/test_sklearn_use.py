"""scikit-learn in use: pipelines (``poisoncert.sklearn``), string labels with one convention
for labels and class indices, the estimator's ``verbose``, and short certificate reprs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeClassifier

from poisoncert import CertifiedEnsembleClassifier
from poisoncert import sklearn as pc_sklearn
from poisoncert.certify import ABSTAIN, certified_accuracy, certify, dpa_certify


@pytest.fixture(scope="module")
def data():
    X, y = load_breast_cancer(return_X_y=True)
    names = np.array(["malignant", "benign"])[y]  # string labels
    return X[:400], names[:400], X[400:], names[400:]


def _clf(**kw):
    return CertifiedEnsembleClassifier(DecisionTreeClassifier(max_depth=3), ns=20,
                                       n_estimators=40, random_state=0, **kw)


def test_pipeline_certify_and_string_labels(data):
    X, y, Xt, yt = data
    log = FunctionTransformer(np.log1p)  # a fixed transform: nothing fitted on the data
    pipe = make_pipeline(log, _clf()).fit(X, y)
    with pytest.raises(AttributeError):
        pipe.certify  # noqa: B018 - scikit-learn does not forward it
    cert = pc_sklearn.certify(pipe, Xt, alpha=0.01)
    clf = pipe[-1]
    direct = clf.certify(np.log1p(Xt), alpha=0.01)
    np.testing.assert_array_equal(cert.prediction, direct.prediction)
    np.testing.assert_array_equal(cert.radius, direct.radius)
    assert list(cert.classes) == ["benign", "malignant"]
    # one convention: true labels are labels; certificate predictions are class indices
    labels = cert.predicted_labels()
    ok = cert.prediction != ABSTAIN
    assert set(labels[ok]) <= {"benign", "malignant"} and all(v is None for v in labels[~ok])
    rhos = [0, 1, 2, 4]
    acc = certified_accuracy(cert, yt, rhos)
    by_hand = [np.mean((labels == yt) & (cert.radius >= r)) for r in rhos]
    np.testing.assert_allclose(acc, by_hand, rtol=0, atol=1e-12)
    assert acc[0] > 0.5
    np.testing.assert_array_equal(pc_sklearn.certified_accuracy(pipe, Xt, yt, rhos, alpha=0.01),
                                  acc)
    np.testing.assert_array_equal(clf.certified_accuracy(np.log1p(Xt), yt, rhos, alpha=0.01),
                                  acc)
    # the true-label methods take labels too
    tl = pc_sklearn.certify(pipe, Xt, method="true_label", y=yt)
    assert np.all((tl.prediction == ABSTAIN) | (tl.prediction == clf.encode(yt)))
    # class indices where labels are expected: one clear error, not a silent mismatch
    with pytest.raises(ValueError, match="'labels' parameter of certified_accuracy must be "
                                         "labels from the certificate's classes"):
        certified_accuracy(cert, clf.encode(yt), rhos)
    summary = cert.summary(yt)
    assert summary["accuracy"] == pytest.approx(np.mean(labels == yt))
    np.testing.assert_array_equal(pc_sklearn.vote_counts(pipe, Xt), clf.vote_counts(
        np.log1p(Xt)))


def test_search_and_nested_pipelines(data):
    X, y, Xt, yt = data
    search = GridSearchCV(make_pipeline(FunctionTransformer(np.log1p), _clf()),
                          {"certifiedensembleclassifier__ns": [10, 20]}, cv=2).fit(X, y)
    cert = pc_sklearn.certify(search, Xt)
    assert len(cert) == len(Xt)
    nested = make_pipeline(FunctionTransformer(np.log1p),
                           make_pipeline(FunctionTransformer(np.sqrt), _clf())).fit(X, y)
    cert = pc_sklearn.certify(nested, Xt)
    inner = nested[-1][-1]
    np.testing.assert_array_equal(cert.radius, inner.certify(np.sqrt(np.log1p(Xt))).radius)
    with pytest.raises(ValueError, match="'estimator' parameter of poisoncert.sklearn"):
        pc_sklearn.certify(make_pipeline(DecisionTreeClassifier()).fit(X, y), Xt)


def test_verbose_reports_progress_and_changes_nothing(data, capsys):
    X, y, Xt, _ = data
    quiet = _clf().fit(X, y)
    loud = _clf(verbose=1).fit(X, y)
    err = capsys.readouterr().err.splitlines()
    fit_lines = [line for line in err if "CertifiedEnsembleClassifier.fit]" in line]
    assert len(fit_lines) == 20 and fit_lines[-1].startswith(
        "[CertifiedEnsembleClassifier.fit] 40/40 base classifiers")
    assert "2/40" in fit_lines[0] and "s left" in fit_lines[0]
    np.testing.assert_array_equal(loud.base_predictions(Xt), quiet.base_predictions(Xt))
    assert "CertifiedEnsembleClassifier.predict]" in capsys.readouterr().err
    with pytest.raises(ValueError, match="'verbose' parameter"):
        _clf(verbose="yes").fit(X, y)


def test_certificate_reprs_are_short():
    from poisoncert.aggregation import fa_certify
    from poisoncert.knn import knn_certify, rnn_certify
    from poisoncert.runoff import roe_certify

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, (500, 3))
    preds = rng.integers(0, 3, (12, 500))
    ranks = np.argsort(rng.random((12, 500, 3)), axis=-1).astype(np.int8)
    certs = [certify(counts, scheme="binomial", n=1000, ns=10, T=150),
             dpa_certify(counts), fa_certify(preds, d=3, n_classes=3),
             roe_certify(ranks, d=1), knn_certify(rng.integers(0, 3, (500, 5)), k=5,
                                                  n_classes=3),
             rnn_certify(counts)]
    for c in certs:
        text = repr(c)
        assert text.startswith(type(c).__name__ + "(n_test=500, certified=")
        assert len(text) < 300 and "array(" not in text and "\n" not in text, text
    assert "scheme='binomial'" in repr(certs[0]) and "ns=10" in repr(certs[0])
