"""The base classifiers of ``CertifiedEnsembleClassifier``: fitting and predicting them.

Functions of the joblib tasks and of the sub-dataset order: a base classifier gets its
sub-dataset (``selection.SubsetPlan``) in a canonical order fixed by the rows' contents, is
class-balanced from its own seed stream when asked, and has every ``random_state`` set from
its seed, so it is a function of its sub-dataset and its seed alone (as the certificate needs).
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse
from sklearn.base import clone
from sklearn.dummy import DummyClassifier

from poisoncert._validation import param_error
from poisoncert.selection import Stream, SubsetPlan, partition_ids, stream_rng
from poisoncert.votes import ABSTAIN

__all__ = ["balanced_rows", "fit_chunk", "fit_one", "hash_parts", "job_chunks",
           "predict_chunk", "row_keys", "seeded_clone"]

#: Rows made dense (sparse input) and float64 at a time to hash them.
HASH_BLOCK = 4096


def balanced_rows(idx: np.ndarray, y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Class-balanced resample of ``idx`` to ``size`` rows (with replacement).

    Each class present gets ``size // C`` rows (the first ``size % C`` classes, in index order,
    one more), drawn uniformly with replacement from that class's rows (in the canonical order
    of ``idx``), then shuffled; the randomness comes from the classifier's seed alone.
    """
    rng = stream_rng(seed, Stream.BALANCE)
    classes = np.unique(y[idx])
    per, extra = divmod(size, len(classes))
    parts = []
    for j, c in enumerate(classes):
        k = per + (j < extra)
        if k:
            rows = idx[y[idx] == c]
            parts.append(rows[rng.integers(0, len(rows), size=k)])
    return rng.permutation(np.concatenate(parts))


def seeded_clone(base, seed: int):
    """Clone of ``base`` with every ``random_state`` parameter (nested ones too) derived from
    the classifier's seed through its training stream (independent of its sub-dataset)."""
    est = clone(base)
    keys = sorted(k for k in est.get_params(deep=True)
                  if k == "random_state" or k.endswith("__random_state"))
    if keys:
        sequence = np.random.SeedSequence([int(seed), int(Stream.TRAINING)])
        states = sequence.generate_state(len(keys), np.uint32)
        est.set_params(**{k: int(s) for k, s in zip(keys, states, strict=True)})
    return est


def row_keys(X, y: np.ndarray) -> np.ndarray:
    """A 64-bit content key of every row: SHA-256 of its features (as float64; sparse rows as
    their sorted non-zero entries) and its label.

    Sub-datasets are handed to the base estimator sorted by this key, so a base classifier sees
    an order fixed by the rows themselves, never by their positions in the training set (which
    an attacker's insertions and deletions shift): it is a function of the multiset of rows.
    Rows with equal keys are identical, so how ties fall does not matter.
    """
    keys = np.empty(X.shape[0], dtype=np.uint64)
    is_sparse = sparse.issparse(X)
    if is_sparse:
        X = X.tocsr(copy=True)
        X.eliminate_zeros()
        X.sort_indices()
    else:
        X = np.asarray(X)
    for i in range(X.shape[0]):
        h = hashlib.sha256()
        if is_sparse:
            lo, hi = X.indptr[i], X.indptr[i + 1]
            h.update(np.ascontiguousarray(X.indices[lo:hi], dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(X.data[lo:hi], dtype=np.float64).tobytes())
        else:
            h.update(np.ascontiguousarray(X[i], dtype=np.float64).tobytes())
        h.update(int(y[i]).to_bytes(8, "little", signed=True))
        keys[i] = int.from_bytes(h.digest()[:8], "little")
    return keys


def balance_setting(balance) -> bool | int:
    """The estimator's ``balance`` as ``fit_one`` takes it: ``True`` / ``False`` for booleans,
    numpy's ``np.True_`` / ``np.False_`` included (``GridSearchCV`` over an array of them
    gives those), otherwise the int size."""
    if isinstance(balance, (bool, np.bool_)):
        return bool(balance)
    return int(balance)


def fit_one(base, X, y, keys, plan: SubsetPlan, i: int, seed: int, balance):
    """Base classifier ``i``: ``base`` fitted on sub-dataset ``i`` of ``plan`` in canonical
    order (balanced when asked); None for an empty sub-dataset (it abstains), a constant
    predictor for a sub-dataset of one class."""
    idx = plan.indices(i, seed)
    if idx.size == 0:
        return None  # empty sub-dataset: this classifier abstains
    idx = idx[np.argsort(keys[idx], kind="stable")]  # canonical order (see row_keys)
    if balance is not False:
        size = idx.size if balance is True else int(balance)
        idx = balanced_rows(idx, y, size, seed)
    X_sub, y_sub = X[idx], y[idx]
    if np.all(y_sub == y_sub[0]):
        # One class: a constant predictor; the base estimator is never fitted on one class.
        return DummyClassifier(strategy="constant", constant=y_sub[0]).fit(X_sub[:1], y_sub[:1])
    return seeded_clone(base, seed).fit(X_sub, y_sub)


def fit_chunk(base, X, y, keys, plan: SubsetPlan, items, balance) -> list:
    """``fit_one`` for every ``(i, seed)`` of ``items`` (one joblib task)."""
    return [fit_one(base, X, y, keys, plan, i, seed, balance) for i, seed in items]


def predict_chunk(estimators, X, n_test: int, dtype, n_classes: int | None = None,
                  where: str = "CertifiedEnsembleClassifier") -> np.ndarray:
    """Predictions of ``estimators`` on ``X``: ``(len(estimators), n_test)``, ``ABSTAIN``
    where an estimator is None. Each must be ``n_test`` class indices (whole numbers in
    ``[0, n_classes - 1]``, the labels it was fitted on): anything else (a regressor's
    ``0.67``, which a cast to ints would make a vote for class 0) is an error naming the
    base estimator."""
    out = np.full((len(estimators), n_test), ABSTAIN, dtype=dtype)
    for j, est in enumerate(estimators):
        if est is not None:
            pred = np.asarray(est.predict(X))
            high = np.iinfo(dtype).max if n_classes is None else n_classes - 1
            bad = _not_class_indices(pred, n_test, high)
            if bad is not None:
                raise param_error("estimator", where, "a classifier whose predict gives the "
                                  f"class indices it was fitted on (whole numbers in [0, "
                                  f"{high}])", f"{type(est).__name__} predicting {bad}")
            out[j] = pred
    return out


def _not_class_indices(pred: np.ndarray, n_test: int, high: int) -> str | None:
    """None where ``pred`` is ``n_test`` whole numbers in ``[0, high]``, else what it is."""
    if pred.shape != (n_test,):
        return f"an array of shape {pred.shape} for {n_test} rows"
    if pred.dtype.kind not in "biuf":
        return f"values of dtype {pred.dtype}"
    if pred.size == 0:
        return None
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(pred) & (pred == np.round(pred)) if pred.dtype.kind == "f" \
            else np.ones(pred.shape, dtype=bool)
        bad = ~whole | (pred < 0) | (pred > high)
    if bad.any():
        return repr(pred[np.flatnonzero(bad)[0]].item())
    return None


def job_chunks(T: int, n_jobs) -> list[np.ndarray]:
    """Classifier indices ``0 .. T - 1`` split into one contiguous block per joblib job."""
    from joblib import effective_n_jobs

    n = max(1, min(effective_n_jobs(n_jobs), T))
    return [c for c in np.array_split(np.arange(T), n) if c.size]

def hash_parts(X, k: int) -> np.ndarray:
    """DPA part of each row: ``selection.partition_ids`` on the features as float64 (sparse
    rows are hashed as their dense values, so the part does not depend on the format), with
    ``-0.0`` as ``0.0`` (``+ 0.0``): a CSR matrix stores no zero of either sign, so a dense
    row holding ``-0.0`` (``np.round(-0.4)``, ``-x`` of a zero) went to another part than
    the same row stored sparse."""
    def block(s: int) -> np.ndarray:  # HASH_BLOCK rows at a time: no copy of the whole X
        rows = X[s:s + HASH_BLOCK]
        rows = rows.toarray() if sparse.issparse(rows) else rows
        return np.asarray(rows, dtype=np.float64) + 0.0

    out = [partition_ids(block(s), k=k) for s in range(0, X.shape[0], HASH_BLOCK)]
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)
