"""Tests of the scikit-learn estimator ``CertifiedEnsembleClassifier``."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy import sparse
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from poisoncert import CertifiedEnsembleClassifier
from poisoncert.selection import draw, model_seeds, subset_indices

NAME = "CertifiedEnsembleClassifier"


@pytest.fixture(scope="module")
def cancer():
    return load_breast_cancer(return_X_y=True)


def small_data(n=120, n_classes=2, seed=0):
    return make_classification(n_samples=n, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=n_classes, random_state=seed)


# ---------------------------------------------------------------- scikit-learn's own checks
# Every applicable check passes: no entry in expected_failed_checks. check_array_api_input
# skips itself without SCIPY_ARRAY_API (and the pandas checks without pandas, which the test
# extra installs); skips are not failures.
@parametrize_with_checks(
    [
        CertifiedEnsembleClassifier(n_estimators=15, random_state=0),
        CertifiedEnsembleClassifier(scheme="binomial", n_estimators=15, random_state=0),
        CertifiedEnsembleClassifier(scheme="with_replacement", n_estimators=15, random_state=0),
        CertifiedEnsembleClassifier(scheme="partition", n_partitions=7, random_state=0),
        CertifiedEnsembleClassifier(LogisticRegression(), n_estimators=9, balance=True,
                                    random_state=0),
    ],
    expected_failed_checks=lambda est: {},
)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of tiny sub-datasets
        check(estimator)


# ---------------------------------------------------------------- parameters
def test_init_stores_parameters_and_clone_roundtrips():
    base = LogisticRegression(C=0.5)
    clf = CertifiedEnsembleClassifier(base, scheme="binomial", p=0.2, n_estimators=7,
                                      balance=30, random_state=3, n_jobs=2)
    params = clf.get_params(deep=False)
    assert params == dict(estimator=base, scheme="binomial", ns=None, p=0.2, n_estimators=7,
                          n_partitions=None, balance=30, random_state=3, n_jobs=2,
                          verbose=0)
    assert clf.get_params()["estimator__C"] == 0.5
    clf.set_params(estimator__C=2.0, n_estimators=9)
    assert base.C == 2.0 and clf.n_estimators == 9
    twin = clone(clf)
    assert twin is not clf and twin.estimator is not base
    assert twin.get_params(deep=False).keys() == params.keys()
    assert twin.get_params()["estimator__C"] == 2.0


def test_ns_range_message(cancer):
    X, y = cancer
    msg = (f"The 'ns' parameter of {NAME} must be an int in the range [1, 569]. "
           "Got 0 instead.")
    with pytest.raises(ValueError, match=re.escape(msg)):
        CertifiedEnsembleClassifier(ns=0).fit(X, y)
    with pytest.raises(ValueError, match=re.escape("in the range [1, 569]. Got 570 instead.")):
        CertifiedEnsembleClassifier(ns=570).fit(X, y)
    # n excludes the clean rows
    mask = np.zeros(len(y), dtype=bool)
    mask[:69] = True
    with pytest.raises(ValueError, match=re.escape("range [1, 500]. Got 501 instead.")):
        CertifiedEnsembleClassifier(ns=501).fit(X, y, clean_mask=mask)
    with pytest.raises(ValueError, match=re.escape("must be an int >= 1. Got 0 instead.")):
        CertifiedEnsembleClassifier(scheme="with_replacement", ns=0).fit(X, y)
    CertifiedEnsembleClassifier(scheme="with_replacement", ns=1000, n_estimators=2).fit(X, y)


@pytest.mark.parametrize("params, pattern", [
    (dict(p=1.5, scheme="binomial"), r"The 'p' parameter of .* must be a float in the range "
                                     r"\(0.0, 1.0\) or None. Got 1.5 instead."),
    (dict(scheme="bagging"), r"The 'scheme' parameter of .* must be a str among"),
    # scikit-learn's own parameter check, which writes 2^53 out
    (dict(n_estimators=0), r"The 'n_estimators' parameter of .* must be an int in the range "
                           r"\[1, 9007199254740992\]. Got 0 instead."),
    (dict(p=0.1), r"The 'p' parameter of CertifiedEnsembleClassifier must be None for "
                  r"scheme='without_replacement'. Got 0.1 instead."),
    (dict(scheme="partition", ns=5), r"The 'ns' parameter .* must be None for "
                                     r"scheme='partition'. Got 5 instead."),
    (dict(n_partitions=5), r"The 'n_partitions' parameter .* must be None for"),
    (dict(scheme="binomial", ns=5, p=0.1), r"The 'ns' parameter .* must be None when 'p' is "
                                           r"given"),
    (dict(ns=2.0), r"The 'ns' parameter .* must be an instance of 'int' or None"),
    (dict(balance=0), r"The 'balance' parameter"),
    # joblib's "n_jobs == 0 in Parallel has no meaning" before; True was T = 1
    (dict(n_jobs=0), r"^The 'n_jobs' parameter of .* must be an int in the range \(-inf, -1\], "
                     r"an int in the range \[1, inf\) or None\. Got 0 instead\.$"),
    (dict(n_estimators=True), r"^The 'n_estimators' parameter of CertifiedEnsembleClassifier "
                              r"must be an int in the range \[1, 2\^53\]\. Got True instead"),
    (dict(scheme="partition", n_partitions=True), r"^The 'n_partitions' parameter .* True"),
])
def test_invalid_parameters(params, pattern):
    X, y = small_data()
    with pytest.raises(ValueError, match=pattern):
        CertifiedEnsembleClassifier(**params).fit(X, y)


def test_clean_mask_validation():
    X, y = small_data()
    with pytest.raises(ValueError, match=r"The 'clean_mask' parameter of "
                                         r"CertifiedEnsembleClassifier.fit must be a boolean "
                                         r"array of shape \(n_samples,\) = \(120,\)"):
        CertifiedEnsembleClassifier().fit(X, y, clean_mask=np.zeros(5, dtype=bool))
    with pytest.raises(ValueError, match="'clean_mask'"):
        CertifiedEnsembleClassifier().fit(X, y, clean_mask=np.zeros(120, dtype=int))
    with pytest.raises(ValueError, match="at least one row attackable"):
        CertifiedEnsembleClassifier().fit(X, y, clean_mask=np.ones(120, dtype=bool))


# ---------------------------------------------------------------- seeds and sub-datasets
@pytest.mark.parametrize("scheme", ["without_replacement", "with_replacement", "binomial"])
def test_seeds_regenerate_sub_datasets(scheme):
    X, y = small_data()
    clf = CertifiedEnsembleClassifier(scheme=scheme, ns=10, n_estimators=6,
                                      random_state=11).fit(X, y)
    assert clf.root_seed_ == 11
    np.testing.assert_array_equal(clf.estimators_seeds_, model_seeds(11, 6))
    kw = dict(p=10 / 120) if scheme == "binomial" else dict(ns=10)
    for seed, idx in zip(clf.estimators_seeds_, clf.estimators_samples_, strict=True):
        expect = subset_indices(np.arange(120), None, draw(scheme, 120, seed=int(seed), **kw))
        np.testing.assert_array_equal(idx, expect)
    if scheme == "without_replacement":
        assert all(len(np.unique(i)) == 10 for i in clf.estimators_samples_)


def test_base_estimators_are_seeded_per_classifier():
    X, y = small_data()
    clf = CertifiedEnsembleClassifier(DecisionTreeClassifier(max_features=2), ns=40,
                                      n_estimators=8, random_state=0).fit(X, y)
    states = [e.random_state for e in clf.estimators_]
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in states)
    assert len(set(states)) == 8
    assert clf.estimator.random_state is None  # the parameter itself is untouched


def test_same_random_state_same_model_and_njobs_invariance():
    X, y = small_data(n=200, n_classes=3)
    kw = dict(ns=25, n_estimators=21, random_state=5)
    a = CertifiedEnsembleClassifier(**kw, n_jobs=1).fit(X, y)
    b = CertifiedEnsembleClassifier(**kw, n_jobs=2).fit(X, y)
    c = CertifiedEnsembleClassifier(**kw).fit(X, y)
    for other in (b, c):
        np.testing.assert_array_equal(a.base_predictions(X), other.base_predictions(X))
        np.testing.assert_array_equal(a.predict_proba(X), other.predict_proba(X))
    b.set_params(n_jobs=1)
    np.testing.assert_array_equal(a.vote_counts(X), b.vote_counts(X))
    a.set_params(n_jobs=3)
    np.testing.assert_array_equal(a.base_predictions(X), c.base_predictions(X))


def test_different_random_state_gives_different_sub_datasets():
    X, y = small_data()
    a = CertifiedEnsembleClassifier(ns=10, n_estimators=5, random_state=0).fit(X, y)
    b = CertifiedEnsembleClassifier(ns=10, n_estimators=5, random_state=1).fit(X, y)
    assert all(not np.array_equal(u, v)
               for u, v in zip(a.estimators_samples_, b.estimators_samples_, strict=True))
    # a RandomState instance or None draws the root seed
    r = CertifiedEnsembleClassifier(ns=10, n_estimators=5,
                                    random_state=np.random.RandomState(0)).fit(X, y)
    assert 0 <= r.root_seed_ < 2**31


# ---------------------------------------------------------------- degenerate sub-datasets
def test_empty_binomial_draws_abstain():
    X, y = small_data(n=20)
    clf = CertifiedEnsembleClassifier(scheme="binomial", p=0.02, n_estimators=60,
                                      random_state=0).fit(X, y)
    empty = np.array([len(i) == 0 for i in clf.estimators_samples_])
    assert 0 < empty.sum() < 60
    assert [e is None for e in clf.estimators_] == list(empty)
    P = clf.base_predictions(X)
    assert P.dtype == np.int16 and P.shape == (60, 20)
    assert (P[empty] == -1).all() and (P[~empty] >= 0).all()
    counts = clf.vote_counts(X)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(20, (~empty).sum()))
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0)


def test_all_abstain_warns_and_predicts_first_class():
    X, y = small_data(n=20)
    with pytest.warns(UserWarning, match="every base classifier abstains"):
        clf = CertifiedEnsembleClassifier(scheme="binomial", p=1e-9, n_estimators=3,
                                          random_state=0).fit(X, y)
    assert all(e is None for e in clf.estimators_)
    np.testing.assert_array_equal(clf.predict(X), np.full(20, clf.classes_[0]))
    np.testing.assert_allclose(clf.predict_proba(X), 0.5)


class _NoSingleClass(ClassifierMixin, BaseEstimator):
    """Refuses to be fitted on one class, to prove the ensemble never asks it to."""

    def fit(self, X, y):
        assert len(np.unique(y)) > 1, "fitted on a single class"
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[-1])


def test_single_class_sub_dataset_is_a_constant_predictor():
    X, y = small_data(n=60)
    clf = CertifiedEnsembleClassifier(_NoSingleClass(), ns=1, n_estimators=10,
                                      random_state=0).fit(X, y)
    for est, idx in zip(clf.estimators_, clf.estimators_samples_, strict=True):
        assert isinstance(est, DummyClassifier)
        np.testing.assert_array_equal(est.predict(X), np.full(60, y[idx[0]]))
    clf = CertifiedEnsembleClassifier(_NoSingleClass(), ns=30, n_estimators=4,
                                      random_state=0).fit(X, y)
    assert all(isinstance(e, _NoSingleClass) for e in clf.estimators_)


# ---------------------------------------------------------------- clean part D^c
@pytest.mark.parametrize("scheme", ["without_replacement", "with_replacement", "binomial",
                                    "partition"])
def test_clean_rows_in_every_sub_dataset_and_not_counted(scheme):
    X, y = small_data(n=100)
    mask = np.zeros(100, dtype=bool)
    mask[[3, 17, 50, 99]] = True
    kw = dict(n_partitions=5) if scheme == "partition" else dict(ns=8, n_estimators=12)
    clf = CertifiedEnsembleClassifier(scheme=scheme, random_state=0, **kw).fit(
        X, y, clean_mask=mask)
    assert clf.n_attackable_ == 96
    np.testing.assert_array_equal(clf.clean_mask_, mask)
    for idx in clf.estimators_samples_:
        np.testing.assert_array_equal(idx[:4], [3, 17, 50, 99])
        assert not mask[idx[4:]].any()  # never sampled
    if scheme == "partition":
        assert (clf.partition_ids_[mask] == -1).all()
        assert sorted(np.concatenate([i[4:] for i in clf.estimators_samples_])) == \
            list(np.flatnonzero(~mask))
    if scheme == "binomial":
        assert clf.p_ == 8 / 96


# ---------------------------------------------------------------- partitions, balance, labels
def test_partition_is_deterministic_and_disjoint():
    X, y = small_data(n=90)
    a = CertifiedEnsembleClassifier(scheme="partition", n_partitions=6, random_state=0).fit(X, y)
    b = CertifiedEnsembleClassifier(scheme="partition", n_estimators=6, random_state=1).fit(X, y)
    assert a.n_estimators_ == b.n_estimators_ == 6
    np.testing.assert_array_equal(a.partition_ids_, b.partition_ids_)
    # the hash does not depend on the row's dtype or storage
    c = CertifiedEnsembleClassifier(scheme="partition", n_partitions=6).fit(sparse.csr_matrix(X), y)
    np.testing.assert_array_equal(a.partition_ids_, c.partition_ids_)
    X32 = X.astype(np.float32)
    d = CertifiedEnsembleClassifier(scheme="partition", n_partitions=6).fit(X32, y)
    e = CertifiedEnsembleClassifier(scheme="partition", n_partitions=6).fit(
        X32.astype(np.float64), y)
    np.testing.assert_array_equal(d.partition_ids_, e.partition_ids_)
    parts = np.concatenate(a.estimators_samples_)
    np.testing.assert_array_equal(np.sort(parts), np.arange(90))


def test_base_classifiers_see_a_content_order_not_positions():
    # Partition parts depend on content only, and each part is handed to the base estimator in
    # a canonical order: shuffling the training rows changes nothing.
    X, y = small_data(n=150)
    perm = np.random.default_rng(1).permutation(150)
    kw = dict(scheme="partition", n_partitions=9, random_state=4,
              estimator=DecisionTreeClassifier(max_features=1))
    a = CertifiedEnsembleClassifier(**kw).fit(X, y)
    b = CertifiedEnsembleClassifier(**kw).fit(X[perm], y[perm])
    np.testing.assert_array_equal(a.base_predictions(X), b.base_predictions(X))


def test_balance_equalises_classes():
    X, y = make_classification(n_samples=200, weights=[0.9, 0.1], random_state=0)
    seen = []

    class Spy(DecisionTreeClassifier):
        def fit(self, X, y, **kw):
            seen.append(np.bincount(y, minlength=2))
            return super().fit(X, y, **kw)

    CertifiedEnsembleClassifier(Spy(), ns=60, n_estimators=10, balance=True,
                                random_state=0).fit(X, y)
    CertifiedEnsembleClassifier(Spy(), ns=60, n_estimators=10, balance=41,
                                random_state=0).fit(X, y)
    assert len(seen) == 20
    assert all(list(c) == [30, 30] for c in seen[:10])
    assert all(sorted(c) == [20, 21] for c in seen[10:])


def test_string_labels_and_sparse_input():
    X, y = small_data(n=150, n_classes=3)
    labels = np.array(["cat", "dog", "emu"])[y]
    clf = CertifiedEnsembleClassifier(ns=40, n_estimators=15, random_state=0).fit(X, labels)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    pred = clf.predict(X)
    assert set(pred) <= {"cat", "dog", "emu"} and (pred == labels).mean() > 0.8
    np.testing.assert_array_equal(clf.encode(["emu", "cat"]), [2, 0])
    with pytest.raises(ValueError, match="labels from classes_"):
        clf.encode(["cow"])
    np.testing.assert_array_equal(clf.decode([1, -1, 0], abstain="?"),
                                  np.array(["dog", "?", "cat"], dtype=object))
    sp = CertifiedEnsembleClassifier(ns=40, n_estimators=15, random_state=0).fit(
        sparse.csr_matrix(X), labels)
    np.testing.assert_array_equal(sp.predict(sparse.csr_matrix(X)), pred)


# ---------------------------------------------------------------- certificates
@pytest.fixture(scope="module")
def certify_mod():
    return pytest.importorskip("poisoncert.certify")


def test_certify_uses_attackable_n_and_scheme_parameters(monkeypatch, certify_mod):
    X, y = small_data(n=100)
    mask = np.zeros(100, dtype=bool)
    mask[:10] = True
    seen = {}
    real = certify_mod.certify

    def spy(counts, **kw):
        seen.update(kw)
        return real(counts, **kw)

    monkeypatch.setattr(certify_mod, "certify", spy)
    clf = CertifiedEnsembleClassifier(scheme="binomial", ns=9, n_estimators=30,
                                      random_state=0).fit(X, y, clean_mask=mask)
    clf.certify(X, alpha=0.01, model="P3")
    assert seen["n"] == 90 and seen["p"] == 0.1 and seen["ns"] is None
    assert seen["T"] == 30 and seen["model"] == "P3" and seen["alpha"] == 0.01
    assert seen["scheme"] == "binomial"


def test_certify_matches_certify_on_vote_counts(certify_mod):
    X, y = small_data(n=150)
    clf = CertifiedEnsembleClassifier(ns=15, n_estimators=50, random_state=0).fit(X, y)
    cert = clf.certify(X)
    ref = certify_mod.certify(clf.vote_counts(X), scheme="without_replacement", n=150, ns=15,
                              T=50)
    np.testing.assert_array_equal(cert.prediction, ref.prediction)
    np.testing.assert_array_equal(cert.radius, ref.radius)
    certified = cert.prediction != certify_mod.ABSTAIN
    # a certified prediction is the majority vote
    np.testing.assert_array_equal(clf.encode(clf.predict(X))[certified],
                                  cert.prediction[certified])


def test_certify_errors_name_its_own_parameters(certify_mod):
    """``certify``'s options are named as its parameters, not as those of the functions it
    calls (``SelectionBound``, ``certify.certify``'s ``labels``)."""
    X, y = small_data(n=150)
    clf = CertifiedEnsembleClassifier(ns=15, n_estimators=20, random_state=0).fit(X, y)
    part = CertifiedEnsembleClassifier(scheme="partition", n_partitions=10).fit(X, y)
    where = r"^The '{}' parameter of CertifiedEnsembleClassifier.certify must be "
    for est, kw, name in [(clf, dict(model="P7"), "model"), (clf, dict(alpha=2), "alpha"),
                          (clf, dict(method="nope"), "method"),
                          (clf, dict(method="true_label"), "y"),
                          (part, dict(unit="ops"), "unit"), (part, dict(model="P0"), "model"),
                          # invalid or misplaced where the scheme ignores them: an error, as
                          # for the constructor's settings (they passed silently)
                          (part, dict(alpha=5), "alpha"), (part, dict(method="foo"), "method"),
                          (part, dict(y=y), "y"), (clf, dict(unit="foo"), "unit"),
                          (clf, dict(unit="dpa"), "unit"), (clf, dict(y=y), "y")]:
        with pytest.raises(ValueError, match=where.format(name)):
            est.certify(X, **kw)
    with pytest.raises(ValueError, match=r"'y' .* must be the true labels of X's rows \(values "
                                         r"of classes_\) for method='true_label'\. Got None"):
        clf.certify(X, method="true_label")
    # labels of the wrong length are counted as labels (it asked for "an int array"), and
    # certified_accuracy names its y (it named 'labels' of certified_accuracy)
    with pytest.raises(ValueError, match=r"^The 'y' parameter of CertifiedEnsembleClassifier"
                       r"\.certify must be the 150 labels of X's rows \(values of classes_\)\. "
                       r"Got 'an array of 3 labels' instead\.$"):
        clf.certify(X, method="true_label", y=y[:3])
    with pytest.raises(ValueError, match=r"^The 'y' parameter of CertifiedEnsembleClassifier"
                       r"\.certified_accuracy must be an array of shape \(150,\)"):
        clf.certified_accuracy(X, y[:3], [0])
    clf.certify(X, method="true_label", y=y)  # what y is for


def test_partition_certify_is_dpa(certify_mod):
    X, y = small_data(n=200)
    clf = CertifiedEnsembleClassifier(scheme="partition", n_partitions=25).fit(X, y)
    for model in ("P1", "P6"):
        cert = clf.certify(X, model=model)
        ref = certify_mod.dpa_certify(clf.vote_counts(X), model=model)
        np.testing.assert_array_equal(cert.radius, ref.radius)
        np.testing.assert_array_equal(cert.prediction, clf.encode(clf.predict(X)))
    dpa = clf.certify(X, unit="dpa")
    np.testing.assert_array_equal(dpa.radius, dpa.slack // 2)


def test_certify_uses_the_fitted_scheme_not_a_later_set_params(certify_mod):
    """``set_params(scheme=...)`` after ``fit`` changes the next fit, not the certificate of
    the fitted ensemble: certifying a random ensemble under DPA's deterministic rule gave
    radii an attack breaks (a reviewer's case: 12 -> 125 insertions, flipped by 125)."""
    import pickle

    X, y = small_data(n=150)
    for first, later in (("without_replacement", "partition"), ("partition", "binomial"),
                         ("with_replacement", "without_replacement")):
        kw = {"n_partitions": 10} if first == "partition" else {"ns": 15, "n_estimators": 30}
        clf = CertifiedEnsembleClassifier(scheme=first, random_state=0, **kw).fit(X, y)
        before = clf.certify(X)
        clf.set_params(scheme=later, n_partitions=None, n_estimators=30, ns=None)
        after = clf.certify(X)
        assert type(after) is type(before) and clf.scheme_ == first, (first, later)
        np.testing.assert_array_equal(after.radius, before.radius)
        old = pickle.loads(pickle.dumps(clf))  # pickled before scheme_ existed: its plan's
        del old.scheme_
        np.testing.assert_array_equal(old.certify(X).radius, before.radius)
        assert clf.fit(X, y).scheme_ == later


def test_numpy_booleans_are_booleans_for_balance():
    """``balance=np.True_`` (``GridSearchCV`` over ``np.array([True, False])`` passes those)
    is ``True``, not a size of 1 row; ``np.False_`` is ``False``, not a size of 0."""
    X, y = small_data(n=150)
    for flag in (True, False):
        ref = CertifiedEnsembleClassifier(ns=30, n_estimators=12, balance=flag,
                                          random_state=0).fit(X, y)
        got = CertifiedEnsembleClassifier(ns=30, n_estimators=12, balance=np.bool_(flag),
                                          random_state=0).fit(X, y)
        np.testing.assert_array_equal(got.vote_counts(X), ref.vote_counts(X))
        assert [type(e) for e in got.estimators_] == [type(e) for e in ref.estimators_]


def test_certified_accuracy_with_the_true_label_methods(certify_mod):
    """``certified_accuracy(X, y, rhos, method="true_label")`` certifies with ``y`` (it asked
    for ``y`` again, and ``y=y`` was a second value of the argument)."""
    from poisoncert import sklearn as pc_sklearn

    X, y = small_data(n=150)
    clf = CertifiedEnsembleClassifier(ns=15, n_estimators=40, random_state=0).fit(X, y)
    for method in ("true_label", "true_label_split"):
        want = certify_mod.certified_accuracy(clf.certify(X, method=method, y=y), y, [0, 2])
        np.testing.assert_array_equal(clf.certified_accuracy(X, y, [0, 2], method=method),
                                      want)
        np.testing.assert_array_equal(
            pc_sklearn.certified_accuracy(clf, X, y, [0, 2], method=method), want)


def test_partition_with_one_training_class_certifies(certify_mod):
    """One training class: every part votes it, and DPA certifies against a rival class with
    no votes (as ``stats`` does for the random schemes), not an error about ``counts``."""
    X, _ = small_data(n=150)
    clf = CertifiedEnsembleClassifier(scheme="partition", n_partitions=12).fit(
        X, np.full(150, 7))
    for model, unit, per in (("P6", "operation", 4), ("P1", "operation", 2), ("P6", "dpa", 2)):
        cert = clf.certify(X[:5], model=model, unit=unit)
        assert cert.prediction.tolist() == [0] * 5 and cert.n_classes == 1
        assert cert.radius.tolist() == [12 // per] * 5 and clf.decode(cert.prediction)[0] == 7


def test_breast_cancer_end_to_end(cancer, certify_mod):
    X, y = cancer
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    tr, te = perm[:450], perm[450:]
    clf = CertifiedEnsembleClassifier(ns=20, n_estimators=300, random_state=0)
    clf.fit(X[tr], y[tr])
    acc = (clf.predict(X[te]) == y[te]).mean()
    assert acc > 0.88
    cert = clf.certify(X[te])
    radius = np.asarray(cert.radius)
    assert (radius >= 0).mean() > 0.7
    assert radius.max() >= 5
    correct = np.asarray(cert.prediction) == clf.encode(y[te])
    ca = [np.mean(correct & (radius >= r)) for r in range(0, int(radius.max()) + 2)]
    assert ca[0] > 0.7 and ca[-1] == 0.0
    assert all(a >= b for a, b in zip(ca, ca[1:], strict=False))


def test_certify_settings_are_checked_before_any_prediction(monkeypatch):
    """A mistyped ``model``, a ``y`` of unknown labels or of the wrong length, negative
    ``rhos``: one error before a base classifier predicts (they came after the whole
    prediction, which for a large ensemble on many rows is minutes of work thrown away)."""
    import poisoncert.estimator as estimator_mod

    X, y = small_data(n=150)
    clf = CertifiedEnsembleClassifier(ns=15, n_estimators=20, random_state=0).fit(X, y)
    part = CertifiedEnsembleClassifier(scheme="partition", n_partitions=10).fit(X, y)
    real = estimator_mod.predict_chunk
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(estimator_mod, "predict_chunk", counted)
    cases = [
        (clf.certify, (X,), dict(model="P7"), r"'model' parameter of \w+\.certify"),
        (part.certify, (X,), dict(model="P0"), r"'model' parameter of \w+\.certify"),
        (clf.certify, (X,), dict(method="true_label", y=np.full(150, 9)),
         r"'y' parameter of \w+\.certify must be labels from classes_\. Got 9"),
        (clf.certify, (X,), dict(method="true_label", y=y[:3]),
         r"'y' parameter of \w+\.certify must be the 150 labels of X's rows"),
        (clf.certified_accuracy, (X, y, [0, -1]), {},
         r"'rhos' parameter of \w+\.certified_accuracy must be integers in the range \[0, "),
        (clf.certified_accuracy, (X, y[:3], [0]), {},
         r"'y' parameter of \w+\.certified_accuracy must be an array of shape \(150,\)"),
        (clf.certified_accuracy, (X, np.full(150, 9), [0]), {},
         r"'y' parameter of \w+\.certified_accuracy must be labels from classes_\. Got 9"),
        (clf.certified_accuracy, (X, y, [0]), dict(model="P9"),
         r"'model' parameter of \w+\.certify"),
    ]
    for method, args, kwargs, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            method(*args, **kwargs)
        assert not calls, (method.__name__, kwargs, pattern)
    with pytest.raises(TypeError, match=r"^\w+\.certified_accuracy\(\) got an unexpected "
                       r"keyword argument 'modle' \(certify's settings are alpha, model, "):
        clf.certified_accuracy(X, y, [0], modle="P6")
    assert not calls
    # and the checks pass what is valid: the same numbers as before
    acc = clf.certified_accuracy(X, y, [0, 1], model="p6")
    assert calls
    np.testing.assert_array_equal(acc, clf.certified_accuracy(X, y, [0, 1]))


def test_base_estimator_must_be_a_classifier_of_class_indices():
    """A regressor or a clusterer as the base estimator is refused at fit (a tree regressor's
    mean class index, 0.67, was cast to a vote for class 0, and the votes certified); an
    untagged estimator whose predict gives other than the class indices it was fitted on is
    an error naming the estimator, not a truncated vote."""
    from sklearn.cluster import KMeans
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    X, y = small_data(n=120, n_classes=3)
    for base, kind in [(DecisionTreeRegressor(), "DecisionTreeRegressor, a regressor"),
                       (KMeans(3, n_init=1), "KMeans, a clusterer"),
                       (make_pipeline(StandardScaler(), DecisionTreeRegressor()),
                        "Pipeline, a regressor")]:
        with pytest.raises(ValueError, match=rf"^The 'estimator' parameter of {NAME} must be a "
                           rf"classifier \(or None: a decision tree\)\. Got '{kind}' instead"):
            CertifiedEnsembleClassifier(base, n_estimators=5, random_state=0).fit(X, y)

    class Untagged:  # no scikit-learn tags: taken at its word, checked by what it predicts
        def __init__(self, value=0.5):
            self.value = value

        def get_params(self, deep=True):
            return {"value": self.value}

        def set_params(self, **params):
            self.value = params.get("value", self.value)
            return self

        def fit(self, X, y):
            self.fitted_ = True
            return self

        def predict(self, X):
            return np.full(len(X), self.value)

    for value, shown in ((0.5, r"0\.5"), (7.0, r"7\.0"), (-1, "-1"), (np.nan, "nan")):
        clf = CertifiedEnsembleClassifier(Untagged(value), ns=60, n_estimators=5,
                                          random_state=0).fit(X, y)
        with pytest.raises(ValueError, match=rf"^The 'estimator' parameter of {NAME} must be "
                           r"a classifier whose predict gives the class indices it was fitted "
                           rf"on \(whole numbers in \[0, 2\]\)\. Got 'Untagged predicting "
                           rf"{shown}' instead\.$"):
            clf.certify(X)
    # whole numbers in range are class indices, as floats too (2.0 is classes_[2])
    whole = CertifiedEnsembleClassifier(Untagged(2.0), ns=60, n_estimators=5,
                                        random_state=0).fit(X, 7 * y)
    assert set(whole.predict(X)) == {14}


def test_negative_zero_is_zero_for_dpa_parts():
    """A row holding ``-0.0`` (``np.round(-0.4)``, ``-x`` of a zero) goes to the part of the
    same row with ``0.0``, which is how a CSR matrix (storing no zero of either sign) has it:
    the dense and the sparse form of one data set gave other DPA parts (156 of 200 rows
    here) and so other base classifiers (all 13), against the documented "parts do not depend
    on sparse storage". Rows without ``-0.0`` keep their parts."""
    from poisoncert.selection import partition_ids

    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(200, 6)) * 0.8)  # most rows hold a -0.0
    y = rng.integers(0, 3, 200)
    dense = CertifiedEnsembleClassifier(scheme="partition", n_partitions=13).fit(X, y)
    for same in (sparse.csr_matrix(X), X + 0.0):
        other = CertifiedEnsembleClassifier(scheme="partition", n_partitions=13).fit(same, y)
        np.testing.assert_array_equal(other.partition_ids_, dense.partition_ids_)
    no_negative_zero = ~(np.signbit(X) & (X == 0)).any(axis=1)
    assert 20 < no_negative_zero.sum() < 180
    np.testing.assert_array_equal(dense.partition_ids_[no_negative_zero],
                                  partition_ids(X[no_negative_zero], k=13))


def test_a_failed_fit_leaves_the_estimator_as_it_was():
    """A refit refused by a data-dependent check (ns's range, memory) or stopped by the base
    estimator or Ctrl-C leaves the fitted ensemble whole: it had set classes_, n_attackable_,
    ns_ or n_estimators_ of the refused fit beside the old estimators_, so certify gave radii
    for a setting the ensemble was not trained with (max 5 -> 61 on 180 of 200 points here)
    and predict mapped old class indices to the new labels. A first fit that fails leaves
    the estimator unfitted (it answered predict with an AttributeError)."""
    import pickle

    from sklearn.exceptions import NotFittedError

    from poisoncert.resources import ResourceError

    X, y = make_classification(n_samples=400, n_features=5, random_state=0)
    big_X, big_y = make_classification(n_samples=4000, n_features=5, random_state=1)
    words = np.array(["cat", "dog", "emu"])[np.arange(400) % 3]

    class Stops(BaseEstimator, ClassifierMixin):
        def __init__(self, error=None):
            self.error = error

        def fit(self, X, y):
            raise self.error

        def predict(self, X):
            return np.zeros(len(X), dtype=int)

    clf = CertifiedEnsembleClassifier(ns=40, n_estimators=200, random_state=0).fit(X, y)
    cert = clf.certify(X[:200])
    assert cert.radius.max() >= 1
    before = pickle.dumps(clf)
    refused = [
        (dict(ns=10**6), (big_X, big_y), ValueError),  # n_attackable_ was 4000
        (dict(ns=1, n_estimators=2**40), (X, y), ResourceError),  # ns_ 1, T 2^40
        (dict(ns=10**6), (X, words), ValueError),  # classes_ cat, dog, emu
        (dict(ns=10**6), (X[:, :3], y), ValueError),  # n_features_in_ 3
        (dict(estimator=Stops(RuntimeError("base"))), (X, y), RuntimeError),
        (dict(estimator=Stops(KeyboardInterrupt())), (X, y), KeyboardInterrupt),
    ]
    for params, (X_new, y_new), error in refused:
        params = {**dict(ns=40, n_estimators=200, estimator=None), **params}
        with pytest.raises(error):
            clf.set_params(**params).fit(X_new, y_new)
        clf.set_params(ns=40, n_estimators=200, estimator=None)
        assert pickle.dumps(clf) == before, params
        again = clf.certify(X[:200])
        np.testing.assert_array_equal(again.radius, cert.radius)
        np.testing.assert_array_equal(again.prediction, cert.prediction)
    mask = np.zeros(400, dtype=bool)
    mask[:10] = True
    with pytest.raises(ValueError, match="clean_mask"):
        clf.fit(X, y, clean_mask=np.ones(400, dtype=bool))
    assert pickle.dumps(clf) == before
    fresh = CertifiedEnsembleClassifier(ns=10**6)
    with pytest.raises(ValueError, match="'ns'"):
        fresh.fit(X, y)
    assert not [k for k in vars(fresh) if k.endswith("_")]
    with pytest.raises(NotFittedError):
        fresh.predict(X)
    assert fresh.set_params(ns=40).fit(X, y, clean_mask=mask).n_attackable_ == 390
