"""scikit-learn classifiers as base learners (no torch needed by this module's logic)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from poisoncert._validation import check_int, check_int_array, param_error
from poisoncert.selection import init_seed

__all__ = ["SKLEARN_LEARNERS", "sklearn_estimator", "train_predict_sklearn"]

#: Names accepted by ``sklearn_estimator`` (and ``train_predict_sklearn``).
SKLEARN_LEARNERS = ("logistic_regression", "linear_svm", "svm", "knn", "decision_tree",
                    "random_forest", "naive_bayes")


def sklearn_estimator(name: str):
    """A default-configured scikit-learn classifier by name (``SKLEARN_LEARNERS``)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    factories = {
        "logistic_regression": lambda: LogisticRegression(max_iter=1000),
        "linear_svm": lambda: LinearSVC(),
        "svm": lambda: SVC(),
        "knn": lambda: KNeighborsClassifier(n_neighbors=1),
        "decision_tree": lambda: DecisionTreeClassifier(),
        "random_forest": lambda: RandomForestClassifier(n_estimators=50),
        "naive_bayes": lambda: GaussianNB(),
    }
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else None
    if key not in factories:
        shown = ", ".join(repr(k) for k in SKLEARN_LEARNERS)
        raise param_error("name", "sklearn_estimator", f"one of {shown}", name)
    return factories[key]()


def _flat(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim < 2 or not np.issubdtype(arr.dtype, np.number):
        raise param_error(name, "train_predict_sklearn", "a numeric array (N, ...)",
                          f"an array of shape {arr.shape}")
    return arr.reshape(len(arr), -1)


def train_predict_sklearn(estimator, x_train, y_train, subsets: Sequence, seeds: Sequence,
                          x_test, *, n_classes: int, balance: bool = True,
                          progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Fit ``sklearn.base.clone(estimator)`` on each sub-dataset; predictions ``(T, n_test)``.

    ``estimator``: an unfitted scikit-learn classifier or a name of ``SKLEARN_LEARNERS``.
    Images are flattened. Classifier ``i`` gets ``random_state = init_seed(seeds[i]) mod 2^32``
    when the estimator has that parameter. ``balance``: class-balanced sample weights
    (``1 / count`` of the sample's class in the sub-dataset) when ``fit`` accepts
    ``sample_weight``; otherwise the sub-dataset is redrawn to its own size with those
    probabilities (with replacement, from the same seed). A sub-dataset with one class predicts
    that class; an empty one abstains (``-1``). Runs sequentially; ``progress(0)`` first (the
    fitting begins), then ``progress(1)`` after each.
    """
    from sklearn.utils.validation import has_fit_parameter

    where = "train_predict_sklearn"
    if isinstance(estimator, str):
        estimator = sklearn_estimator(estimator)
    if not (hasattr(estimator, "fit") and hasattr(estimator, "predict")):
        raise param_error("estimator", where, "a scikit-learn classifier or a learner name",
                          estimator)
    n_classes = check_int(n_classes, "n_classes", where, low=1)
    X, Xt = _flat(x_train, "x_train"), _flat(x_test, "x_test")
    if X.shape[1] != Xt.shape[1]:
        raise param_error("x_test", where, f"samples with x_train's {X.shape[1]} features",
                          f"{Xt.shape[1]} features")
    y = check_int_array(np.asarray(y_train).reshape(-1), "y_train", where, low=0,
                        high=n_classes - 1)
    if len(y) != len(X):
        raise param_error("y_train", where, f"{len(X)} labels (one per x_train row)", len(y))
    subsets = [check_int_array(np.asarray(s).reshape(-1), "subsets", where, low=0,
                               high=len(X) - 1) for s in subsets]
    seeds = [int(s) for s in seeds]
    if len(seeds) != len(subsets):
        raise param_error("seeds", where, f"one seed per subset ({len(subsets)})",
                          f"{len(seeds)} seeds")
    weighted = has_fit_parameter(estimator, "sample_weight")
    has_rs = "random_state" in estimator.get_params()
    out = np.full((len(subsets), len(Xt)), -1, dtype=np.int16)
    if progress is not None:
        progress(0)  # the fitting begins (a display's rate leaves the set-up out)
    for i, (idx, seed) in enumerate(zip(subsets, seeds, strict=True)):
        if len(idx):
            out[i] = _fit_predict_one(estimator, X, y, idx, seed, Xt, balance=balance,
                                      weighted=weighted, has_rs=has_rs)
        if progress is not None:
            progress(1)
    return out


def _fit_predict_one(estimator, X, y, idx, seed, Xt, *, balance, weighted, has_rs):
    from sklearn.base import clone

    s = init_seed(seed)
    yi = y[idx]
    kw = {}
    if balance:
        w = 1.0 / np.bincount(yi)[yi]
        if weighted:
            kw["sample_weight"] = w * (len(yi) / w.sum())
        else:
            rng = np.random.default_rng(s)
            idx = idx[rng.choice(len(idx), size=len(idx), p=w / w.sum())]
            yi = y[idx]
    classes = np.unique(yi)
    if len(classes) == 1:
        return classes[0]
    est = clone(estimator)
    if has_rs:
        est.set_params(random_state=s % 2**32)
    est.fit(X[idx], yi, **kw)
    return np.asarray(est.predict(Xt)).astype(np.int16)
