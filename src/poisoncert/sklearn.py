"""Certificates from scikit-learn objects that wrap a ``CertifiedEnsembleClassifier``.

A ``Pipeline`` has no ``certify`` method (scikit-learn forwards only its own set of methods to
the last step), so these functions do it: they run the pipeline's transforms on ``X`` and call
the ensemble at its end::

    from poisoncert.sklearn import certify, certified_accuracy
    pipe = make_pipeline(StandardScaler(), CertifiedEnsembleClassifier(...)).fit(X, y)
    cert = certify(pipe, X_test, alpha=0.001)           # a Certificate
    certified_accuracy(pipe, X_test, y_test, [0, 5, 10])

``estimator`` may be the ensemble itself, a fitted ``Pipeline`` ending in one (pipelines may
nest), or a fitted search (``GridSearchCV``...) whose ``best_estimator_`` is either. Labels
follow one convention: true labels are given as to ``fit`` (strings, ints, ...), and a
certificate's ``prediction`` is an index into ``classes`` (``cert.classes``; ``-1``:
abstain), turned into labels by ``cert.predicted_labels()``.

A note on the certificate: it covers the ensemble's training, given the rows it received.
The steps before it must not be fitted on the attackable training data (a ``StandardScaler``
fitted on a poisoned set is itself poisoned, and the radius says nothing about it); use
fixed transforms, or ones fitted on data you trust (docs/sklearn.md). Likewise a search
fitted on attackable rows chose its parameters from them: the certificate covers
``best_estimator_`` with those parameters fixed, not the choice.
"""

from __future__ import annotations

import numpy as np

from poisoncert._validation import param_error

__all__ = ["certified_accuracy", "certify", "final_ensemble", "vote_counts"]


def final_ensemble(estimator, X):
    """``(ensemble, Xt)``: the ``CertifiedEnsembleClassifier`` at the end of ``estimator`` and
    ``X`` transformed by the steps before it."""
    from sklearn.pipeline import Pipeline
    from sklearn.utils.validation import check_is_fitted

    from poisoncert.estimator import CertifiedEnsembleClassifier

    est = estimator
    while True:
        if isinstance(est, CertifiedEnsembleClassifier):
            check_is_fitted(est)
            return est, X
        if isinstance(est, Pipeline):
            check_is_fitted(est)
            last = est.steps[-1][1]
            if len(est.steps) > 1:
                X = est[:-1].transform(X)
            est = last
            continue
        best = getattr(est, "best_estimator_", None)
        if best is not None:
            est = best
            continue
        raise param_error("estimator", "poisoncert.sklearn", "a fitted "
                          "CertifiedEnsembleClassifier, a Pipeline ending in one, or a search "
                          "whose best_estimator_ is one", type(estimator).__name__)


def certify(estimator, X, **params):
    """``CertifiedEnsembleClassifier.certify`` through ``estimator`` (see the module
    docstring); ``params``: ``alpha``, ``model``, ``method``, ``y`` (labels), ``unit``."""
    ens, Xt = final_ensemble(estimator, X)
    return ens.certify(Xt, **params)


def certified_accuracy(estimator, X, y, rhos, **params) -> np.ndarray:
    """Fraction of rows of ``X`` predicted as their label ``y`` and certified at radius
    ``rho``, per ``rho`` (abstentions count as wrong)."""
    ens, Xt = final_ensemble(estimator, X)
    return ens.certified_accuracy(Xt, y, rhos, **params)


def vote_counts(estimator, X) -> np.ndarray:
    """The ensemble's vote counts ``(n, n_classes)`` through ``estimator``."""
    ens, Xt = final_ensemble(estimator, X)
    return ens.vote_counts(Xt)
