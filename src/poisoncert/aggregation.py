"""Finite Aggregation (Wang, Levine and Feizi, ICML'22): spreading and certificate (numpy only).

The training set is split into ``k * d`` buckets by a hash of each sample (``selection.
fa_bucket_ids``, the DPA hash with ``k * d`` parts). There are ``T = k * d`` base classifiers;
bucket ``b`` is used by the ``d`` classifiers ``(b + s) mod T`` for ``s`` in ``fa_shifts(k,
d)`` (row ``b`` of ``fa_spread``), so each sample reaches ``d`` classifiers and each classifier
trains on ``d`` buckets. ``d = 1`` is DPA with ``k`` parts (``fa_shifts(k, 1) == [0]``).

Threat model: an insertion or a deletion changes the content of one bucket, a modification of
at most two (the sample's old and new bucket). Every classifier that uses a changed bucket may
afterwards vote (or rank classes) arbitrarily; the others are unchanged. A certificate is first
computed in *buckets*: ``buckets[i]`` is a number such that no change of at most that many
buckets alters the prediction. ``radius`` then converts it (``bucket_radius``): in DPA's unit
(insertion or deletion = 1, modification = 2) and under P1/P2 it is ``buckets``; with a
modification counted as one operation (P3-P6) it is ``buckets // 2``.

The FA certificate (the paper's Theorem, restated): with prediction ``y`` (majority of the ``T``
votes, ties to the smaller class) and any other class ``c``, class ``c`` needs the margin
``g_c = N_y - N_c - [c < y]`` to become negative. A classifier voting ``y`` can lower it by 2,
one voting neither ``y`` nor ``c`` (or abstaining) by 1, one voting ``c`` by 0; a bucket by at
most the sum over its ``d`` classifiers. So ``rho`` buckets cannot make ``c`` win while the
``rho`` largest bucket sums add up to at most ``g_c``: ``buckets = min over c != y`` of the
largest such ``rho`` (``topsum_radius``). With ``d = 1`` this is DPA's ``floor(slack / 2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poisoncert._validation import check_choice, check_int, check_int_array, param_error
from poisoncert.bounds import MODEL_ALIASES, MODELS
from poisoncert.certify import (
    _UNIT_TEXT,
    DPA_UNITS,
    _predicted_labels,
    _TopIsPrediction,
    record_range,
)
from poisoncert.selection import fa_shifts, fa_spread
from poisoncert.votes import check_counts_fit, votes_from_predictions

__all__ = [
    "FACertificate",
    "bucket_radius",
    "fa_bucket_votes",
    "fa_certify",
    "fa_shifts",
    "fa_spread",
    "topsum_radius",
]

#: Elements processed per block (buckets x test points x classes), bounding temporary memory.
_BLOCK = 1 << 22


def bucket_radius(buckets, model: str, unit: str) -> np.ndarray:
    """Convert a certificate in buckets to operations (see the module docstring)."""
    buckets = np.asarray(buckets, dtype=np.int64)
    if unit == "dpa" or model in ("P1", "P2"):
        return buckets
    return np.where(buckets >= 0, buckets // 2, -1)


def topsum_radius(weights, gaps, vmax: int | None = None) -> np.ndarray:
    """Largest ``rho`` whose ``rho`` largest weights sum to at most ``gap``, per column.

    ``weights``: non-negative ints ``(n_buckets, K)``; ``gaps``: ints ``(K,)``. Returns int64
    ``(K,)``: ``-1`` where ``gap < 0``, ``n_buckets`` where even all weights fit. Exact (integer
    arithmetic on a histogram of the weights, no sorting).
    """
    w = np.asarray(weights)
    g = np.asarray(gaps, dtype=np.int64)
    if vmax is None:
        vmax = int(w.max()) if w.size else 0
    K = w.shape[1]
    if vmax <= 8:  # a few comparisons beat building an int64 index (measured)
        hist = np.stack([np.count_nonzero(w == v, axis=0) for v in range(vmax + 1)], axis=1)
    else:
        idx = w.astype(np.int64) + (np.arange(K, dtype=np.int64) * (vmax + 1))[None, :]
        hist = np.bincount(idx.ravel(), minlength=K * (vmax + 1)).reshape(K, vmax + 1)
    return radius_from_histogram(hist, g)


def radius_from_histogram(hist: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """``topsum_radius`` from ``hist[..., v]`` = number of buckets of weight ``v``."""
    vmax = hist.shape[-1] - 1
    v = np.arange(vmax, -1, -1, dtype=np.int64)  # weights in decreasing order
    h = hist[..., ::-1].astype(np.int64)
    before = np.cumsum(h * v, axis=-1) - h * v   # sum of all larger weights
    room = gaps[..., None] - before
    # take whole blocks while they fit, part of the first block that does not, then nothing
    # (after a partial block the room is negative); weight-0 buckets fit once room >= 0
    take = np.where(v > 0, np.clip(room // np.maximum(v, 1), 0, h), np.where(room >= 0, h, 0))
    return np.where(gaps < 0, -1, take.sum(axis=-1)).astype(np.int64)


def radius_from_counts(by_weight: dict[int, np.ndarray], gaps) -> np.ndarray:
    """``topsum_radius`` when bucket ``b`` is one classifier and the weights are given as
    ``by_weight[v]`` = number of buckets of weight ``v`` (arrays broadcasting with ``gaps``)."""
    g = np.asarray(gaps, dtype=np.int64)
    vmax = max(by_weight)
    hist = np.stack([np.broadcast_to(np.asarray(by_weight.get(v, 0), dtype=np.int64), g.shape)
                     for v in range(vmax + 1)], axis=-1)
    return radius_from_histogram(hist, g)


def _check_predictions(predictions, n_classes, d, where: str) -> tuple[np.ndarray, int, int]:
    n_classes = check_int(n_classes, "n_classes", where, low=2)
    pred = np.asarray(predictions)
    if pred.ndim == 2:  # before anything of n_classes' size is allocated: int64 counts
        T, n_test = pred.shape  # (n_test, C) and their temporaries, and a block of
        check_counts_fit(n_test, n_classes, where, low=2, extra=5 * T,  # fa_bucket_votes
                         subject="the certificate")
    if pred.ndim != 2 or pred.shape[0] < 1:
        raise param_error("predictions", where, "a 2-D int array (T, n_test) with T >= 1",
                          f"an array of shape {pred.shape}")
    pred = check_int_array(pred, "predictions", where, low=-1, high=n_classes - 1)
    T = pred.shape[0]
    d = check_int(d, "d", where, low=1, high=T)
    if T % d:
        raise param_error("d", where, f"a divisor of the number of classifiers T = {T}", d)
    return pred, n_classes, d


def fa_bucket_votes(predictions, spread: np.ndarray, n_classes: int) -> np.ndarray:
    """``V[b, t, c]``: how many classifiers of bucket ``b`` vote ``c`` on test point ``t``.

    ``predictions`` int ``(T, n_test)`` (``-1`` = abstain, counted for no class); ``spread``
    ``(n_buckets, d)`` classifier indices. Returns int32 ``(n_buckets, n_test, n_classes)``.
    """
    onehot = predictions[:, :, None] == np.arange(n_classes)[None, None, :]
    out = np.zeros((spread.shape[0], predictions.shape[1], n_classes), dtype=np.int32)
    for j in range(spread.shape[1]):
        out += onehot[spread[:, j]]
    return out


def _top_class(counts: np.ndarray) -> np.ndarray:
    return np.argmax(counts, axis=-1)  # ties to the smaller index


def _margins(counts: np.ndarray, top: np.ndarray) -> np.ndarray:
    """``N_top - N_c - [c < top]`` per class (``(n, C)``; the top column is meaningless)."""
    rows = np.arange(counts.shape[0])
    return (counts[rows, top][:, None] - counts
            - (np.arange(counts.shape[1])[None, :] < top[:, None]))


def class_bucket_radii(V: np.ndarray, counts: np.ndarray, top: np.ndarray, d: int) -> np.ndarray:
    """Per class ``c != top``: the most buckets that cannot make ``c`` overtake ``top``.

    ``V`` as from ``fa_bucket_votes`` for these test points, ``counts`` their votes ``(n, C)``.
    Bucket weight ``d + V[b, t, top] - V[b, t, c]`` (the most it can lower the margin), gap
    ``N_top - N_c - [c < top]``. The ``top`` column is set to ``n_buckets`` (no constraint).
    """
    nb, n, C = V.shape
    rows = np.arange(n)
    w = d + V[:, rows, top][:, :, None] - V            # (nb, n, C)
    gaps = _margins(counts, top)
    rad = topsum_radius(w.reshape(nb, n * C), gaps.reshape(-1), vmax=2 * d).reshape(n, C)
    rad[rows, top] = nb
    return rad


@dataclass(frozen=True, eq=False, repr=False)
class FACertificate(_TopIsPrediction):
    """Finite Aggregation: certified predictions, one entry per test point (deterministic).

    Guarantee: with buckets assigned by a hash of each sample's content and label and spread by
    ``fa_spread(k, d)``, the majority vote of the ``k * d`` base classifiers (ties to the
    smaller class index) stays ``prediction[i]`` whenever at most ``buckets[i]`` buckets change,
    hence under every attack of ``model`` with at most ``radius[i]`` operations counted in
    ``unit`` (``"operation"``: modification = 1, so ``radius = buckets // 2`` under P3-P6;
    ``"dpa"``: modification = 2, ``radius = buckets``). The bound is Wang et al.'s: sound for
    every ``d`` and exact (equal to DPA's) for ``d = 1``; for ``d > 1`` it may be below the
    exact value because it adds bucket sums where buckets share classifiers. FA abstains
    (prediction, radius and buckets ``-1``) only where no classifier votes.
    """

    prediction: np.ndarray
    radius: np.ndarray
    buckets: np.ndarray
    counts: np.ndarray
    k: int
    d: int
    model: str
    unit: str
    aggregation: str = "fa"
    classes: np.ndarray | None = None  # what the class indices name (``Ensemble.certify``)
    n_classes: int | None = None  # the number of classes (``certify.Certificate.n_classes``)

    def predicted_labels(self, abstain=None) -> np.ndarray:
        """``classes[prediction]`` as an object array, ``abstain`` where abstaining (needs
        ``classes``: ``Ensemble.certify``'s certificates carry them)."""
        return _predicted_labels(self, abstain)

    def setting(self) -> dict:
        return {"scheme": "finite_aggregation", "aggregation": self.aggregation, "k": self.k,
                "d": self.d, "model": self.model, "unit": self.unit,
                "radius_unit": _UNIT_TEXT[self.unit]}

    def records(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """One flat dict per test point (of ``record_range(len(self), start, stop)``)."""
        s = self.setting()
        return [{"index": i, "prediction": int(self.prediction[i]),
                 "radius": int(self.radius[i]), "buckets": int(self.buckets[i]), **s}
                for i in record_range(len(self), start, stop)]


def fa_certify(predictions, *, d: int, n_classes: int, model: str = "P6",
               unit: str = "operation") -> FACertificate:
    """Certify the votes of a Finite Aggregation ensemble (Wang et al.'s Theorem).

    Parameters
    ----------
    predictions : int array ``(T, n_test)``
        Vote of base classifier ``j`` (trained on buckets ``(j - s) mod T``, ``s`` in
        ``fa_shifts(T // d, d)``) on each test point; ``-1`` = abstained (counts for no class).
    d : int
        Buckets per classifier, a divisor of ``T``; ``k = T // d``. ``d = 1`` is DPA.
    n_classes : int >= 2
    model, unit :
        Poisoning model P1-P6 and unit (``"operation"`` or ``"dpa"``), as in
        ``certify.dpa_certify``.
    """
    where = "fa_certify"
    pred, C, d = _check_predictions(predictions, n_classes, d, where)
    model = check_choice(model, "model", where, MODELS, MODEL_ALIASES)
    unit = check_choice(unit, "unit", where, DPA_UNITS)
    T, n_test = pred.shape
    spread = fa_spread(T // d, d)
    counts = votes_from_predictions(pred, C)  # one pass, not one per class
    top = _top_class(counts)
    buckets = np.empty(n_test, dtype=np.int64)
    if d == 1:  # a bucket is one classifier: weights 2 (votes top), 0 (votes c), 1 (others)
        n_top = counts[np.arange(n_test), top][:, None]
        rad = radius_from_counts({2: n_top, 1: T - n_top - counts, 0: counts},
                                 _margins(counts, top))
        rad[np.arange(n_test), top] = T
        buckets[:] = rad.min(axis=1)
    else:
        step = max(1, _BLOCK // (T * C))
        for s in range(0, n_test, step):
            sl = slice(s, min(s + step, n_test))
            V = fa_bucket_votes(pred[:, sl], spread, C)
            buckets[sl] = class_bucket_radii(V, counts[sl], top[sl], d).min(axis=1)
    radius = bucket_radius(buckets, model, unit)
    none = counts.sum(axis=1) == 0  # no classifier votes: abstain, as the majority vote does
    top, radius, buckets = (np.where(none, -1, a) for a in (top, radius, buckets))
    return FACertificate(prediction=top.astype(np.int64),
                         radius=radius, buckets=buckets,
                         counts=counts, k=T // d, d=d, model=model, unit=unit, n_classes=C)
