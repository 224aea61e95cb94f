"""Nearest-neighbour classifiers and their intrinsic certificates (numpy only).

After Jia, Liu, Cao and Gong (AAAI'22): kNN and rNN are majority votes over training samples,
so poisoning moves a bounded number of votes. Features must not depend on the training set
(raw pixels, or a fixed feature map). Distances are Euclidean; neighbours are ordered by
squared distance, equal distances by training index. Ties between classes go to the smaller
class index.

The certificates assume that a training sample's distance to a test point depends on that pair
alone: inserting or deleting one sample must not reorder two others. Squared distances are
therefore computed in float64 in one of two forms, both functions of the pair only:

- integer features whose sums stay below 2^53 (e.g. uint8 pixels): ``|x|^2 + |t|^2 - 2 x.t``
  by matrix products, in which every partial sum is an integer held exactly, so the result is
  the exact squared distance whatever order the BLAS sums in;
- any other features (floats, or integers too large for that): the squared differences added
  feature by feature in index order, elementwise (each pair sums its own terms in one fixed
  order). A matrix product here would round each entry in an order that depends on the shapes
  of the blocks, so adding one training row could change other pairs' last bits and with them
  the order (such a case is tested). This form does ``n_test x n_train x features`` elementwise
  work: slower than the products, and exact on the same integer features.

kNN (``k`` nearest, prediction ``y``; ``Y_c(L)`` = samples of class ``c`` among the ``L``
nearest, ``F(L) = min over c != y of Y_y(L) - Y_c(L) - [c < y]``, ``s = F(k)``). One operation
changes the neighbour set by at most one sample out and one in, so the margin by at most 2:

- a modification-bearing model (P3-P6, modification = 1 operation): ``radius = s // 2``,
  exact (relabel ``s // 2 + 1`` neighbours of class ``y``).
- insertions ``a`` and deletions ``b`` (the attacker's best: insert near points of one class
  ``c``, delete class-``y`` points among the nearest): the neighbours are the ``a`` inserted and
  the nearest ``k - a`` of the first ``L = k - a + b`` minus the ``b`` deleted, so ``y`` loses iff
  ``F(L) < a + b``. ``radius`` is the largest ``rho`` with ``F(L) >= rho'`` for every
  ``rho' <= rho`` and every reachable ``L``: P1 (``b = 0``), P2 (``a = 0``) and DPA's unit
  (any mix; a modification counts 2). Exact while the neighbour list is deep enough; with
  ``depth`` labels, deletions beyond ``depth - k`` cannot be checked and the radius found
  there is a lower bound (``exact`` is False).

rNN (all samples within distance ``r``; ``n_c`` per class, ``N`` in all, ``s`` as above;
abstains when the ball is empty, and emptying it changes the prediction): an insertion adds one
vote, a deletion removes one, a modification does both. P1: ``s``; P2 and DPA's unit:
``min(s, N - 1)``; P3-P6: ``s // 2``. All exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poisoncert._validation import (
    check_choice,
    check_int,
    check_int_array,
    check_real,
    named_as,
    number_array,
    param_error,
)
from poisoncert.bounds import MODEL_ALIASES, MODELS
from poisoncert.certify import (
    _UNIT_TEXT,
    ABSTAIN,
    DPA_UNITS,
    _predicted_labels,
    _TopIsPrediction,
    record_range,
)
from poisoncert.votes import check_counts_fit

__all__ = [
    "NNCertificate",
    "knn_certify",
    "knn_votes",
    "nearest_labels",
    "rnn_certify",
    "exact_products",
    "rnn_votes",
    "squared_distances",
]

_BLOCK = 1 << 22  # test x train entries per distance block


def _check_xy(x_train, y_train, x_test, where: str):
    xt = number_array(x_train, "x_train", where, "an array of numbers (n, ...)")
    xs = number_array(x_test, "x_test", where, "an array of numbers (n, ...)")
    if xt.ndim < 2 or xt.shape[0] < 1:
        raise param_error("x_train", where, "an array (n_train, ...) with n_train >= 1",
                          f"an array of shape {xt.shape}")
    if xs.ndim != xt.ndim or xs.shape[1:] != xt.shape[1:]:
        shape = ", ".join(map(str, xt.shape[1:]))
        raise param_error("x_test", where, f"an array (n_test, {shape})",
                          f"an array of shape {xs.shape}")
    y = check_int_array(y_train, "y_train", where, low=0)
    if y.shape != (xt.shape[0],):
        raise param_error("y_train", where, f"an int array of shape ({xt.shape[0]},)",
                          f"an array of shape {y.shape}")
    out = []
    for name, a in (("x_train", xt), ("x_test", xs)):
        # no copy of float64 features (only read): the training set's took its size again
        # on every call, as each block of a prediction's inputs makes one
        a = a.reshape(len(a), -1).astype(np.float64, copy=False)
        if not _all_rows(a, np.isfinite):
            raise param_error(name, where, "finite features (no NaN or infinity)",
                              "an array with non-finite values")
        out.append(a)
    return out[0], y, out[1]


def exact_products(*arrays) -> bool:
    """Whether the matrix-product form of the squared distances between rows of these 2-D
    float64 arrays is exact: every feature an integer and ``4 F m^2 < 2^53`` (``F`` features,
    ``m`` the largest magnitude), which bounds every partial sum of ``|x|^2``, ``|t|^2`` and
    ``x.t``."""
    m, F = 0.0, arrays[0].shape[1]
    for a in arrays:
        if a.size:
            if not _all_rows(a, lambda b: b == np.rint(b)):  # NaN and infinities too
                return False
            m = max(m, float(a.max()), -float(a.min()))  # |a|'s largest, without |a|'s copy
    return 4.0 * F * m * m < 2.0 ** 53


def _all_rows(a: np.ndarray, test) -> bool:
    """Whether ``test`` (elementwise) holds for every entry of the 2-D ``a``, checked in
    blocks of rows: no temporary of ``a``'s size (376 MB for MNIST's training set)."""
    step = max(1, _BLOCK // max(1, a.shape[1]))
    return all(bool(test(a[i:i + step]).all()) for i in range(0, a.shape[0], step))


def squared_distances(x_test, x_train, *, exact: bool | None = None) -> np.ndarray:
    """``(n_test, n_train)`` float64 squared Euclidean distances of 2-D float64 arrays, each a
    function of its pair alone (see the module docstring): by matrix products where they are
    exact (``exact``; None: ``exact_products`` decides), else the squared differences summed
    feature by feature."""
    if exact is None:
        exact = exact_products(x_test, x_train)
    if exact:
        # row sums of squares without a squared copy of the training set (376 MB for MNIST's
        # on every block): exact integers, so the same numbers in any order of summation
        d2 = (np.einsum("ij,ij->i", x_test, x_test)[:, None]
              + np.einsum("ij,ij->i", x_train, x_train)[None, :])
        d2 -= 2.0 * (x_test @ x_train.T)
        return np.maximum(d2, 0.0, out=d2)
    d2 = np.zeros((x_test.shape[0], x_train.shape[0]))
    diff = np.empty_like(d2)
    columns = np.ascontiguousarray(x_train.T)
    for j in range(x_test.shape[1]):  # one fixed order of the terms for every pair
        np.subtract(x_test[:, j:j + 1], columns[j][None, :], out=diff)
        np.multiply(diff, diff, out=diff)
        np.add(d2, diff, out=d2)
    return d2


def nearest_labels(x_train, y_train, x_test, depth: int, *, progress=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Labels and squared distances of the ``depth`` nearest training samples of each test point,
    nearest first (equal distances: smaller training index first). Returns int64 and float64
    arrays ``(n_test, depth)``. ``progress(0)`` is called once the inputs are checked (the
    search begins), then ``progress(m)`` as blocks of ``m`` test points are done."""
    where = "nearest_labels"
    xt, y, xs = _check_xy(x_train, y_train, x_test, where)
    n = xt.shape[0]
    depth = check_int(depth, "depth", where, low=1, high=n)
    labels = np.empty((xs.shape[0], depth), dtype=np.int64)
    dists = np.empty((xs.shape[0], depth), dtype=np.float64)
    step = max(1, _BLOCK // n)
    exact = exact_products(xs, xt)
    if progress is not None:
        progress(0)  # the search begins: the inputs are checked
    for s in range(0, xs.shape[0], step):
        d2 = squared_distances(xs[s:s + step], xt, exact=exact)
        if depth < n:
            cand = np.argpartition(d2, depth - 1, axis=1)[:, :depth]
        else:
            cand = np.broadcast_to(np.arange(n), d2.shape).copy()
        rows = np.arange(d2.shape[0])[:, None]
        edge = d2[rows, cand].max(axis=1)
        # where samples tied at the cut-off distance were split arbitrarily, keep the smallest
        # indices among them (the order the classifier is defined with)
        split = (d2 == edge[:, None]).sum(axis=1) > (d2[rows, cand] == edge[:, None]).sum(axis=1)
        for i in np.flatnonzero(split):
            below = np.flatnonzero(d2[i] < edge[i])
            cand[i] = np.concatenate([below, np.flatnonzero(d2[i] == edge[i])])[:depth]
        vals = d2[rows, cand]
        order = np.lexsort((cand, vals), axis=1)
        cand = np.take_along_axis(cand, order, axis=1)
        labels[s:s + step] = y[cand]
        dists[s:s + step] = np.take_along_axis(vals, order, axis=1)
        if progress is not None:
            progress(len(cand))
    return labels, dists


def _n_classes(y, n_classes, where, rows: int, copies: int = 3):
    """The class count: ``n_classes``, at least the largest label + 1 (default), whose counts
    of ``rows`` test points fit in memory."""
    low = int(y.max()) + 1 if y.size else 1
    C = low if n_classes is None else check_int(n_classes, "n_classes", where, low=low)
    check_counts_fit(rows, C, where, low=low, copies=copies)
    return C


def knn_votes(x_train, y_train, x_test, k: int, *, n_classes: int | None = None) -> np.ndarray:
    """Class counts ``(n_test, C)`` among the ``k`` nearest training samples."""
    with named_as("knn_votes", depth="k", x_train="x_train", y_train="y_train",
                  x_test="x_test"):
        labels, _ = nearest_labels(x_train, y_train, x_test, k)
    C = _n_classes(np.asarray(y_train), n_classes, "knn_votes", len(labels),
                   copies=labels.shape[1] + 3)  # the prefix counts of every depth
    return _prefix_counts(labels, C)[:, -1]


def rnn_votes(x_train, y_train, x_test, r: float, *, n_classes: int | None = None,
              progress=None) -> np.ndarray:
    """Class counts ``(n_test, C)`` of the training samples within distance ``r`` (``d^2 <=
    r^2``, both in float64). ``progress(0)`` is called once the inputs are checked (the
    search begins), then ``progress(m)`` as blocks of ``m`` test points are done."""
    where = "rnn_votes"
    r = check_real(r, "r", where, low=0.0)
    xt, y, xs = _check_xy(x_train, y_train, x_test, where)
    C = _n_classes(y, n_classes, where, xs.shape[0] + xt.shape[0])  # counts, one-hot
    out = np.zeros((xs.shape[0], C), dtype=np.int64)
    step = max(1, _BLOCK // xt.shape[0])
    onehot = (y[:, None] == np.arange(C)[None, :]).astype(np.float64)
    exact = exact_products(xs, xt)
    if progress is not None:
        progress(0)  # the search begins: the inputs are checked
    for s in range(0, xs.shape[0], step):
        inside = squared_distances(xs[s:s + step], xt, exact=exact) <= r * r
        out[s:s + step] = np.rint(inside.astype(np.float64) @ onehot).astype(np.int64)
        if progress is not None:
            progress(len(inside))
    return out


def _prefix_counts(labels: np.ndarray, C: int) -> np.ndarray:
    """``P[t, L, c]`` = samples of class ``c`` among the ``L`` nearest, ``L = 0 .. depth``."""
    onehot = (labels[:, :, None] == np.arange(C)[None, None, :]).astype(np.int32)
    out = np.zeros((labels.shape[0], labels.shape[1] + 1, C), dtype=np.int32)
    np.cumsum(onehot, axis=1, out=out[:, 1:])
    return out


@dataclass(frozen=True, eq=False, repr=False)
class NNCertificate(_TopIsPrediction):
    """Certified nearest-neighbour predictions, one entry per test point (deterministic).

    Guarantee: the classifier (``"knn"`` with ``k`` neighbours, or ``"rnn"``) trained on any
    set reachable from the clean one by at most ``radius[i]`` operations of ``model``, counted
    in ``unit``, predicts ``prediction[i]`` (``ABSTAIN``, radius -1: an empty rNN ball). For
    ``unit="dpa"`` insertions and deletions count one each (a modification two) whatever the
    model, except P1 and P2. ``exact[i]`` is False where the radius is only a lower bound (the
    kNN neighbour list ended before a deletion attack could be checked); ``slack`` is ``s``.
    """

    prediction: np.ndarray
    radius: np.ndarray
    slack: np.ndarray
    exact: np.ndarray
    classifier: str
    k: int | None
    model: str
    unit: str
    n_classes: int | None = None  # the number of classes (``certify.Certificate.n_classes``)
    #: What the class indices name (``certify.Certificate.classes``): set by
    #: ``NeighborModel.certify``, the data set's class ids; None otherwise.
    classes: np.ndarray | None = None

    def predicted_labels(self, abstain=None) -> np.ndarray:
        """``classes[prediction]`` as an object array, ``abstain`` where abstaining (needs
        ``classes``)."""
        return _predicted_labels(self, abstain)

    def setting(self) -> dict:
        return {"scheme": self.classifier, "k": self.k, "model": self.model, "unit": self.unit,
                "radius_unit": _UNIT_TEXT[self.unit]}

    def records(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """One flat dict per test point (of ``record_range(len(self), start, stop)``)."""
        s = self.setting()
        return [{"index": i, "prediction": int(self.prediction[i]),
                 "radius": int(self.radius[i]), "slack": int(self.slack[i]),
                 "exact": bool(self.exact[i]), **s} for i in record_range(len(self), start, stop)]


def _slack(counts: np.ndarray, top: np.ndarray) -> np.ndarray:
    """``min over c != top of counts_top - counts_c - [c < top]`` along the last axis."""
    C = counts.shape[-1]
    top_count = np.take_along_axis(counts, top[..., None], axis=-1)
    m = top_count - counts - (np.arange(C) < top[..., None])
    np.put_along_axis(m, top[..., None], np.iinfo(np.int32).max, axis=-1)
    return m.min(axis=-1)


def _check_model_unit(model, unit, where):
    return (check_choice(model, "model", where, MODELS, MODEL_ALIASES),
            check_choice(unit, "unit", where, DPA_UNITS))


def knn_certify(neighbor_labels, *, k: int, n_classes: int, model: str = "P6",
                unit: str = "operation", n_train: int | None = None) -> NNCertificate:
    """Certify kNN predictions from the labels of each test point's nearest training samples.

    ``neighbor_labels``: int ``(n_test, depth)``, nearest first (``nearest_labels``), ``depth
    >= k``. The modification models need ``depth = k``; P1 uses at most ``k``; P2 and DPA's unit
    look ``depth - k`` samples beyond the ``k``-th (``depth = 2k`` suffices for DPA's unit).
    ``n_train``: the training set's size. Where the model allows deletions, ``n_train - k + 1``
    of them leave fewer than ``k`` samples, where kNN has no prediction, so the radius is at
    most ``n_train - k`` (a smaller training set than ``depth`` is refused). Without it only
    the neighbour list bounds P2 and DPA's unit.
    """
    where = "knn_certify"
    lab = np.asarray(neighbor_labels)
    if lab.ndim != 2 or lab.shape[1] < 1:
        raise param_error("neighbor_labels", where, "a 2-D int array (n_test, depth)",
                          f"an array of shape {lab.shape}")
    depth = lab.shape[1]
    k = check_int(k, "k", where, low=1, high=depth)
    C = check_int(n_classes, "n_classes", where, low=2)
    check_counts_fit(lab.shape[0], C, where, low=2, copies=depth + 3)  # F, counts per depth
    lab = check_int_array(lab, "neighbor_labels", where, low=0, high=C - 1)
    model, unit = _check_model_unit(model, unit, where)
    n = lab.shape[0]
    top = np.empty(n, dtype=np.int64)
    F = np.empty((n, depth + 1), dtype=np.int64)    # F[t, L], see the module docstring
    step = max(1, _BLOCK // ((depth + 1) * C))
    for s0 in range(0, n, step):
        P = _prefix_counts(lab[s0:s0 + step], C)                # (m, depth + 1, C)
        top[s0:s0 + step] = np.argmax(P[:, k], axis=1)
        F[s0:s0 + step] = _slack(P, np.broadcast_to(top[s0:s0 + step, None], P.shape[:2]))
    s = F[:, k].copy()
    exact = np.ones(n, dtype=bool)
    if model in ("P1", "P2") or unit == "dpa":
        radius, exact = _insert_delete_radius(F, k, ins=model != "P2", dels=model != "P1")
    else:
        radius = s // 2
    if n_train is not None:
        n_train = check_int(n_train, "n_train", where, low=depth)
        if model in ("P2", "P5", "P6"):  # the models that delete (a modification does not)
            radius = np.minimum(radius, n_train - k)
        if n_train == depth:  # the list is the whole set: nothing lies beyond it, and
            exact = np.ones(n, dtype=bool)  # n_train - k + 1 deletions always change it
    return NNCertificate(prediction=top, radius=radius, slack=s, exact=exact,
                         classifier="knn", k=k, model=model, unit=unit, n_classes=C)


def _insert_delete_radius(F: np.ndarray, k: int, ins: bool, dels: bool):
    """Largest ``rho`` such that no ``a`` insertions and ``b`` deletions with ``a + b <= rho``
    (``a = 0`` unless ``ins``, ``b = 0`` unless ``dels``) give ``F(k - a + b) < a + b``."""
    depth = F.shape[1] - 1
    F = F.astype(np.int64)
    if not dels:                      # a = rho: L = k - rho; a = k insertions always win
        rhos = np.arange(k + 1)
        worst = F[:, k - rhos]
    elif not ins:                     # b = rho: L = k + rho, as deep as the list goes
        rhos = np.arange(depth - k + 1)
        worst = F[:, k + rhos]
    else:                             # a + b = rho: L = k + rho - 2a, a = 0 .. rho (<= k)
        rhos = np.arange(k + 1)
        hi = k + rhos
        end_hi = np.where(hi <= depth, F[:, np.minimum(hi, depth)], np.iinfo(np.int64).max)
        worst = np.minimum(F[:, k - rhos], end_hi)
        # the L reachable at rho are those at rho - 2 and the two new ends
        for par in (0, 1):
            worst[:, par::2] = np.minimum.accumulate(worst[:, par::2], axis=1)
    # every attack of size <= checked was examined; beyond the list, deletions were not
    checked = k if not dels else min(int(rhos[-1]), depth - k)
    fails = worst < rhos[None, :]
    first = np.where(fails.any(axis=1), np.argmax(fails, axis=1), rhos[-1] + 1)
    exact = first <= checked
    return np.where(exact, first - 1, checked).astype(np.int64), exact


def rnn_certify(counts, *, model: str = "P6", unit: str = "operation") -> NNCertificate:
    """Certify rNN predictions from the class counts inside each test point's ball
    (``rnn_votes``); an empty ball abstains (radius -1)."""
    where = "rnn_certify"
    c = np.asarray(counts)
    if c.ndim != 2 or c.shape[1] < 2:
        raise param_error("counts", where, "a 2-D int array (n_test, n_classes >= 2)",
                          f"an array of shape {c.shape}")
    c = check_int_array(c, "counts", where, low=0)
    model, unit = _check_model_unit(model, unit, where)
    top = np.argmax(c, axis=1)
    s = _slack(c, top).astype(np.int64)
    N = c.sum(axis=1)
    if model == "P1":
        radius = s
    elif model == "P2" or unit == "dpa":
        radius = np.minimum(s, N - 1)
    else:
        radius = s // 2
    empty = N == 0
    return NNCertificate(
        prediction=np.where(empty, ABSTAIN, top).astype(np.int64),
        radius=np.where(empty, -1, radius).astype(np.int64), slack=np.where(empty, -1, s),
        exact=np.ones(len(s), dtype=bool), classifier="rnn", k=None, model=model, unit=unit,
        n_classes=int(c.shape[1]))
