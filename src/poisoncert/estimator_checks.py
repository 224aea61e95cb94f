"""Parameter and input checks of ``CertifiedEnsembleClassifier``, in scikit-learn's manner.

``ensemble_size`` resolves the selection of an ensemble (its defaults, then the one rule of
``selection.check_size``), ``check_clean_mask`` the known-clean rows given to ``fit``,
``validate_input`` checks ``X`` with what the base estimator accepts (sparse input, NaN), as
its tags (``base_tags``) say, and ``check_fit_memory`` / ``check_predict_memory`` check the
memory a fit or a prediction will need before anything is allocated
(``poisoncert.resources``).
"""

from __future__ import annotations

import math
import pickle

import numpy as np

from poisoncert import resources
from poisoncert._validation import param_error
from poisoncert.base_learners import balance_setting
from poisoncert.resources import Term
from poisoncert.selection import PARTITION, check_size

try:  # scikit-learn >= 1.6
    from sklearn.utils import get_tags as _get_tags
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _get_tags = None

    def _validate_data(est, *args, **kwargs):
        if "ensure_all_finite" in kwargs:
            kwargs["force_all_finite"] = kwargs.pop("ensure_all_finite")
        return est._validate_data(*args, **kwargs)


__all__ = ["base_tags", "check_base_estimator", "check_clean_mask", "check_fit_memory",
           "check_predict_memory", "default_ns", "ensemble_size", "fit_memory", "validate_input"]

#: Per base classifier of a fitted ensemble, besides the classifier itself: its seed (the
#: uint64 entry and the Python int of ``model_seeds``' list), its slots in ``estimators_`` and
#: in the joblib results, the ``(i, seed)`` pair of its task.
CLASSIFIER_BYTES = 160
#: Per index of a sub-dataset being fitted (``base_learners.fit_one``): the draw, its sorted
#: copy, the mapped indices and the concatenation with ``D^c`` (``selection.draw``,
#: ``subset_indices``), the content keys gathered and their sort order: 6 x 8 bytes.
INDEX_BYTES = 48
#: Per row of a sub-dataset handed to the base estimator: its label and class-balanced
#: resampling (int64), besides its features (``X[idx]``, at the input's item size).
ROW_BYTES = 24
#: Per (classifier, test point) of a prediction (``base_predictions``, ``vote_counts``): each
#: job's int16 block and the joined matrix (2 + 2), ``votes_from_predictions``'s temporaries
#: (validity masks 2, column indices and their int64 copy 16, the flat index 8, the valid
#: predictions 2): 32 bytes.
PREDICTION_BYTES = 32


def default_ns(n: int) -> int:
    """``ceil(sqrt(n))``, the default sub-dataset size."""
    return max(1, math.ceil(math.sqrt(n)))


def ensemble_size(scheme: str, n: int, *, ns, p, n_estimators: int, n_partitions,
                  where: str) -> tuple[int | None, float | None, int]:
    """Effective ``(ns, p, T)`` for ``n`` attackable rows, or an error of the one shape.

    ``ns`` / ``p`` follow ``selection.check_size`` after the defaults: ``ns = ceil(sqrt(n))``
    for bagging, ``p = min(ceil(sqrt(n)) / n, 1/2)`` for binomial selection; a binomial ``ns``
    becomes ``p = ns / n`` (and ``ns`` None). ``T`` is ``n_partitions`` (or ``n_estimators``)
    for the partition scheme, else ``n_estimators``.
    """
    if scheme != PARTITION and n_partitions is not None:
        raise param_error("n_partitions", where, f"None for scheme={scheme!r}", n_partitions)
    for name, value in (("n_estimators", n_estimators), ("n_partitions", n_partitions)):
        if isinstance(value, (bool, np.bool_)):  # scikit-learn's Integral takes True as 1
            raise param_error(name, where, "an int in the range [1, 2^53]", value)
    if scheme == "binomial" and ns is None and p is None:
        p = min(default_ns(n) / n, 0.5)
    elif scheme in ("without_replacement", "with_replacement") and ns is None:
        ns = default_ns(n)
    ns, p = check_size(scheme, n, ns=ns, p=p, where=where)
    if scheme == PARTITION:
        return None, None, int(n_estimators if n_partitions is None else n_partitions)
    return (None if scheme == "binomial" else ns), p, int(n_estimators)


def check_clean_mask(clean_mask, n_samples: int, *, where: str) -> np.ndarray:
    """The known-clean rows as a boolean array of ``n_samples`` (all False for None) that
    leaves at least one row attackable."""
    if clean_mask is None:
        return np.zeros(n_samples, dtype=bool)
    mask = np.asarray(clean_mask)
    if mask.dtype != bool or mask.shape != (n_samples,):
        raise param_error("clean_mask", where,
                          f"a boolean array of shape (n_samples,) = ({n_samples},)",
                          f"an array of dtype {mask.dtype} and shape {mask.shape}")
    if mask.all():
        raise param_error("clean_mask", where,
                          "a boolean array leaving at least one row attackable (the "
                          "sub-datasets are drawn from the rows not marked clean)",
                          "an all-True mask")
    return mask.copy()


def base_tags(base):
    """scikit-learn's tags of ``base`` (None where they cannot be read: assume the defaults)."""
    if _get_tags is None:  # pragma: no cover
        return None
    try:
        return _get_tags(base)
    except Exception:  # a base estimator with broken tags
        return None


def check_base_estimator(base, *, where: str) -> None:
    """Refuse a base estimator whose tags say it is not a classifier (a regressor, a
    clusterer): its ``predict`` gives numbers or cluster ids, not the class indices it was
    fitted on, and votes made of them (a regressor's ``0.67`` cast to class 0) would be
    certified as the ensemble's. An estimator without tags is taken at its word."""
    tags = base_tags(base)
    kind = None if tags is None else tags.estimator_type
    if kind not in (None, "classifier"):
        raise param_error("estimator", where, "a classifier (or None: a decision tree)",
                          f"{type(base).__name__}, a {kind}")


def validate_input(ensemble, X, *, base, reset: bool, y=None):
    """``X`` (and ``y`` when ``reset``) checked by scikit-learn's ``validate_data`` for
    ``ensemble``, accepting sparse input (as CSR) and NaN where the ``base`` estimator does."""
    tags = base_tags(base)
    sparse_ok = tags is not None and tags.input_tags.sparse
    nan_ok = tags is not None and tags.input_tags.allow_nan
    kwargs = dict(accept_sparse="csr" if sparse_ok else False,
                  ensure_all_finite="allow-nan" if nan_ok else True, reset=reset)
    if not reset:
        return _validate_data(ensemble, X, **kwargs)
    return _validate_data(ensemble, X, y, **kwargs)


def _row_bytes(X) -> float:
    """Bytes of one row of ``X`` as ``X[idx]`` copies it (sparse: the mean row's entries)."""
    if hasattr(X, "nnz"):
        return (X.data.itemsize + X.indices.itemsize) * X.nnz / max(1, X.shape[0])
    return X.shape[1] * X.itemsize


def fit_memory(v: dict[str, int], *, base_bytes: int, n_samples: int, n_clean: int, n: int,
               row_bytes: float, bagging: bool, jobs: int, t_key: str) -> list[Term]:
    """The terms of a fit's memory for ``v`` (``n_estimators`` or ``n_partitions`` as
    ``t_key``, ``ns`` for the bagging schemes, ``balance`` when an int): the fitted base
    classifiers (at least ``base_bytes``, the pickled size of an unfitted clone, each), the
    sub-datasets being fitted by ``jobs`` joblib jobs at once, the row keys (and parts)."""
    T = v[t_key]
    m = n_clean + (v.get("ns", 0) if bagging else n)  # binomial, partition: at most all of D^p
    rows = v.get("balance", m)
    size_keys = ("ns",) if bagging else ()
    return [
        Term("fitted base classifiers", T * (base_bytes + CLASSIFIER_BYTES), (t_key,)),
        Term("sub-datasets being fitted", min(jobs, T) * (m * INDEX_BYTES
                                                           + rows * (row_bytes + ROW_BYTES)),
             (*size_keys, "balance")),
        Term("row keys and parts", n_samples * 16, ()),
    ]


def check_fit_memory(estimator, X, *, base, T: int, ns, n_clean: int, n: int, jobs: int,
                     where: str, available=True) -> int:
    """Raise a ``resources.ResourceError`` naming ``n_estimators`` (``n_partitions``), ``ns``
    or ``balance`` unless the fit fits in memory (``fit_memory``); the bytes it needs."""
    try:
        base_bytes = len(pickle.dumps(base))
    except Exception:  # an unpicklable base estimator: count it as nothing
        base_bytes = 0
    scheme = estimator.scheme
    t_key = ("n_partitions" if scheme == PARTITION and estimator.n_partitions is not None
             else "n_estimators")
    values = {t_key: int(T)}
    bagging = scheme in ("without_replacement", "with_replacement")
    if bagging:
        values["ns"] = int(ns)
    balance = balance_setting(estimator.balance)
    if not isinstance(balance, bool):
        values["balance"] = balance
    kw = dict(base_bytes=base_bytes, n_samples=X.shape[0], n_clean=n_clean, n=n,
              row_bytes=_row_bytes(X), bagging=bagging, jobs=jobs, t_key=t_key)
    return resources.check_memory(
        lambda v: fit_memory(v, **kw), values, where=where, subject="the ensemble",
        defaults={"n_estimators": 100, "n_partitions": 100, "ns": max(1, default_ns(n))},
        available=available)


def check_predict_memory(T: int, n_test: int, *, where: str, available=True) -> int:
    """Raise a ``resources.ResourceError`` naming ``X`` unless the prediction matrix of ``T``
    classifiers on ``n_test`` rows and its vote count fit in memory; the bytes they need."""
    need = T * n_test * PREDICTION_BYTES
    short = resources.shortfall(need, available)
    if short is None:
        return need
    rows = int(short[0] / resources.SAFETY) // (T * PREDICTION_BYTES)
    raise resources.ResourceError(
        f"The 'X' parameter of {where} must have at most {rows} rows for the predictions of "
        f"the {T} base classifiers to fit in memory (they need about "
        f"{resources.format_bytes(need)} for {n_test} rows; "
        f"{resources.available_words(*short)}). Got {n_test} rows instead.")
