"""Run-Off Election (Rezaei, Banihashem, Chegini and Feizi, ICML'23) on DPA and FA ensembles.

Each base classifier ranks all classes. Round 1: every classifier votes its top class; the two
classes with most votes go on (``m1``, then ``m2``; ties to the smaller class index). Round 2:
every classifier votes for whichever of ``m1``, ``m2`` it ranks higher; the winner ``y`` (a tie
goes to the smaller index) is the prediction, and the other finalist is ``o0``.

Rankings are stored as int8 ``ranks`` of shape ``(T, n_test, C)``: ``ranks[j, t, c]`` is the
place of class ``c`` in classifier ``j``'s order on test point ``t`` (0 = preferred). A run
stores this array (one byte per classifier, test point and class); ``rankings_from_scores``
makes it from scores, higher first, equal scores to the smaller class index.

The certificate (in buckets, converted to operations as in ``aggregation``) is the minimum,
over the ways the prediction can change, of a count of buckets that cannot achieve it. Every
way needs some margins to turn negative; a corrupted classifier lowers a margin by at most a
fixed weight, a bucket by at most the sum over its classifiers, so ``topsum_radius`` bounds
each margin, and several margins needed together are bounded by their sum (plus one). Margins:
``g_a = N_y - N_a - [a < y]`` (round-1 order of ``y`` over ``a``), ``e_o = #(y over o) -
#(o over y) - [o < y]`` (round-2 duel), ``h_o = N_o0 - N_o - [o < o0]``. The ways:

- R1, ``y`` out in round 1. If ``y = m1``: two classes ``a, b`` must pass ``y`` (margins
  ``g_a``, ``g_b``, and their sum ``g_a + g_b + 1``). If ``y = m2``: some ``a`` not ``m1``
  must pass ``y`` (``g_a``).
- R2(o), ``y`` loses the final to ``o``: ``e_o`` must turn negative, and for ``o != o0`` also
  ``h_o`` (``o`` must pass ``o0`` to reach the final), and their sum ``e_o + h_o + 1``.

This is Rezaei et al.'s case analysis with two sums they do not use (``e_o + h_o`` and, for
FA, ``g_a + g_b + 1`` where they bound ``g_a + g_b``), so it is never below theirs; it is
sound for every input (checked against exhaustive attacks in the tests) and not always exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poisoncert._validation import check_choice, check_int, number_array, param_error
from poisoncert.aggregation import (
    _BLOCK,
    _margins,
    _top_class,
    bucket_radius,
    class_bucket_radii,
    fa_spread,
    radius_from_counts,
    topsum_radius,
)
from poisoncert.bounds import MODEL_ALIASES, MODELS
from poisoncert.certify import _UNIT_TEXT, DPA_UNITS, _TopIsPrediction, record_range

__all__ = ["ROECertificate", "check_ranks", "rankings_from_scores", "roe_certify", "roe_predict"]


def rankings_from_scores(scores, *, dtype=np.int8) -> np.ndarray:
    """Ranks ``(T, n_test, C)`` from class scores of the same shape: higher score first, equal
    scores to the smaller class index. NaN scores are refused."""
    where = "rankings_from_scores"
    s = number_array(scores, "scores", where, "a 3-D array of real numbers").astype(np.float64)
    if s.ndim != 3 or s.shape[2] < 2:
        raise param_error("scores", where, "a 3-D array (T, n_test, C) with C >= 2",
                          f"an array of shape {s.shape}")
    if np.isnan(s).any():
        raise param_error("scores", where, "scores without NaN", "NaN")
    if s.shape[2] > np.iinfo(dtype).max + 1:
        raise param_error("scores", where, f"at most {np.iinfo(dtype).max + 1} classes",
                          s.shape[2])
    order = np.argsort(-s, axis=2, kind="stable")
    ranks = np.empty(s.shape, dtype=dtype)
    np.put_along_axis(ranks, order, np.arange(s.shape[2], dtype=dtype)[None, None, :], axis=2)
    return ranks


def check_ranks(ranks, where: str = "check_ranks") -> np.ndarray:
    """Return ``ranks`` as an integer array ``(T, n_test, C)`` whose every ``[j, t, :]`` is a
    permutation of ``0 .. C-1``, or raise a ``ValueError``."""
    allowed = "an int array (T, n_test, C), C >= 2, each [j, t, :] a permutation of 0..C-1"
    r = np.asarray(ranks)
    if r.ndim != 3 or r.shape[0] < 1 or r.shape[2] < 2 or not np.issubdtype(r.dtype, np.integer):
        raise param_error("ranks", where, allowed, f"an array of shape {r.shape}, {r.dtype}")
    C = r.shape[2]
    if r.size and (r.min() < 0 or r.max() >= C):
        raise param_error("ranks", where, allowed, int(r.min() if r.min() < 0 else r.max()))
    ok = np.empty(r.shape[:2], dtype=bool)
    step = max(1, _BLOCK // (r.shape[0] * C))
    for s in range(0, r.shape[1], step):  # in blocks: the check needs int64 temporaries
        b = r[:, s:s + step].astype(np.int64)
        if C <= 62:  # C distinct powers of two sum to 2^C - 1, and only they do
            ok[:, s:s + step] = np.left_shift(np.int64(1), b).sum(axis=2) == (1 << C) - 1
        else:
            ok[:, s:s + step] = (np.sort(b, axis=2) == np.arange(C)).all(axis=2)
    if not ok.all():
        j, t = np.argwhere(~ok)[0]
        raise param_error("ranks", where, allowed, f"ranks[{j}, {t}] = {r[j, t].tolist()}")
    return r


def _round_one(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Top votes ``(T, n)``, counts ``(n, C)``, and the finalists ``m1``, ``m2``."""
    C = r.shape[2]
    top = np.argmin(r, axis=2)
    counts = np.stack([(top == c).sum(axis=0) for c in range(C)], axis=1).astype(np.int64)
    m1 = _top_class(counts)
    masked = counts.copy()
    masked[np.arange(len(m1)), m1] = -1
    return top, counts, m1, _top_class(masked)


def _rank_of(r: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """``r[j, t, cls[t]]`` as ``(T, n)``."""
    return np.take_along_axis(r, cls[None, :, None], axis=2)[:, :, 0]


def roe_predict(ranks) -> np.ndarray:
    """The run-off prediction of every test point (int64 ``(n_test,)``)."""
    r = check_ranks(ranks, "roe_predict")
    return _winner(r)[0]


def _winner(r):
    T = r.shape[0]
    top, counts, m1, m2 = _round_one(r)
    duel = 2 * (_rank_of(r, m1) < _rank_of(r, m2)).sum(axis=0) - T   # #(m1 over m2) - #(m2 over m1)
    y = np.where((duel > 0) | ((duel == 0) & (m1 < m2)), m1, m2)
    return y.astype(np.int64), top, counts, m1, m2


@dataclass(frozen=True, eq=False, repr=False)
class ROECertificate(_TopIsPrediction):
    """Run-off election on a DPA (``d = 1``) or FA ensemble; one entry per test point.

    Guarantee (deterministic): the run-off prediction stays ``prediction[i]`` whenever at most
    ``buckets[i]`` buckets change (every classifier using a changed bucket ranking classes
    arbitrarily), hence under every attack of ``model`` with at most ``radius[i]`` operations
    counted in ``unit`` (as ``aggregation.FACertificate``). ``finalists`` ``(n, 2)`` are the
    round-1 top two ``m1, m2``. Never abstains.
    """

    prediction: np.ndarray
    radius: np.ndarray
    buckets: np.ndarray
    finalists: np.ndarray
    k: int
    d: int
    model: str
    unit: str
    n_classes: int | None = None  # the number of classes (``certify.Certificate.n_classes``)

    def setting(self) -> dict:
        scheme = "partition" if self.d == 1 else "finite_aggregation"
        return {"scheme": scheme, "aggregation": "run_off", "k": self.k, "d": self.d,
                "model": self.model, "unit": self.unit, "radius_unit": _UNIT_TEXT[self.unit]}

    def records(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """One flat dict per test point (of ``record_range(len(self), start, stop)``)."""
        s = self.setting()
        return [{"index": i, "prediction": int(self.prediction[i]),
                 "radius": int(self.radius[i]), "buckets": int(self.buckets[i]),
                 "m1": int(self.finalists[i, 0]), "m2": int(self.finalists[i, 1]), **s}
                for i in record_range(len(self), start, stop)]


def roe_certify(ranks, *, d: int = 1, model: str = "P6",
                unit: str = "operation") -> ROECertificate:
    """Certify run-off predictions from the base classifiers' rankings.

    Parameters
    ----------
    ranks : int array ``(T, n_test, C)``
        ``ranks[j, t, c]`` = place of class ``c`` for classifier ``j`` on test point ``t``
        (see ``rankings_from_scores``). Classifier ``j`` trains on buckets ``(j - s) mod T``,
        ``s`` in ``aggregation.fa_shifts(T // d, d)``; with ``d = 1`` it is DPA's part ``j``.
    d : int
        Buckets per classifier, a divisor of ``T`` (1 = DPA).
    model, unit : as in ``certify.dpa_certify``.
    """
    where = "roe_certify"
    r = check_ranks(ranks, where)
    T, n_test, C = r.shape
    d = check_int(d, "d", where, low=1, high=T)
    if T % d:
        raise param_error("d", where, f"a divisor of the number of classifiers T = {T}", d)
    model = check_choice(model, "model", where, MODELS, MODEL_ALIASES)
    unit = check_choice(unit, "unit", where, DPA_UNITS)
    spread = fa_spread(T // d, d)
    y, top, counts, m1, m2 = _winner(r)
    buckets = np.empty(n_test, dtype=np.int64)
    step = max(1, _BLOCK // (T * C * 4))
    for s in range(0, n_test, step):
        sl = slice(s, min(s + step, n_test))
        buckets[sl] = _roe_buckets(r[:, sl], top[:, sl], counts[sl], y[sl], m1[sl], m2[sl],
                                   spread, d)
    return ROECertificate(prediction=y, radius=bucket_radius(buckets, model, unit),
                          buckets=buckets, finalists=np.stack([m1, m2], axis=1), k=T // d, d=d,
                          model=model, unit=unit, n_classes=C)


def _bucket_sum(x: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per bucket, the sum of ``x`` (per classifier, leading axis) over its classifiers."""
    out = np.zeros((spread.shape[0], *x.shape[1:]), dtype=np.int32)
    for j in range(spread.shape[1]):
        out += x[spread[:, j]]
    return out


class _Buckets:
    """Margin radii from per-bucket sums: ``V`` top votes, ``Q`` rankings of ``y`` over ``c``."""

    def __init__(self, top, above, counts, y, o0, spread, d):
        C = counts.shape[1]
        self.V = _bucket_sum(top[:, :, None] == np.arange(C), spread)
        self.Q = _bucket_sum(above, spread)
        self.counts, self.y, self.o0, self.d, self.nb = counts, y, o0, d, spread.shape[0]
        self.rows = np.arange(len(y))

    def _flat(self, w, gaps, vmax):
        return topsum_radius(w.reshape(self.nb, -1), gaps.reshape(-1), vmax).reshape(gaps.shape)

    def g(self, gaps):                 # weights d + V_y - V_a
        return class_bucket_radii(self.V, self.counts, self.y, self.d)

    def e(self, gaps):                 # weights 2 Q_o
        return self._flat(2 * self.Q, gaps, 2 * self.d)

    def h(self, gaps):                 # weights d + V_o0 - V_o
        return self._flat(self.d + self.V[:, self.rows, self.o0][:, :, None] - self.V, gaps,
                          2 * self.d)

    def eh(self, ti, oi, gaps):        # weights 2 Q_o + d + V_o0 - V_o
        V, d = self.V, self.d
        w = 2 * self.Q[:, ti, oi] + d + V[:, ti, self.o0[ti]] - V[:, ti, oi]
        return topsum_radius(w, gaps, 4 * d)

    def pair(self, ti, a, b, gaps):    # weights d + 2 V_y - V_a - V_b
        V, d = self.V, self.d
        return topsum_radius(d + 2 * V[:, ti, self.y[ti]] - V[:, ti, a] - V[:, ti, b], gaps, 3 * d)


class _Classifiers:
    """The same radii for ``d = 1`` (a bucket is one classifier), from counts of classifier
    types instead of per-classifier weights."""

    def __init__(self, top, above, counts, y, o0, T):
        rows = np.arange(len(y))
        self.N, self.T, self.nb = counts, T, T
        self.Ny = counts[rows, y][:, None]
        self.No0 = counts[rows, o0][:, None]
        self.ahead = above.sum(axis=0)                                  # #(y over c)
        self.B = ((top == o0[None, :])[:, :, None] & above).sum(axis=0)  # votes o0, y over c

    def g(self, gaps):
        return radius_from_counts({2: self.Ny, 1: self.T - self.Ny - self.N, 0: self.N}, gaps)

    def e(self, gaps):
        return radius_from_counts({2: self.ahead, 0: self.T - self.ahead}, gaps)

    def h(self, gaps):
        return radius_from_counts({2: self.No0, 1: self.T - self.No0 - self.N, 0: self.N}, gaps)

    def eh(self, ti, oi, gaps):
        B, A, No0, No = self.B[ti, oi], self.ahead[ti, oi], self.No0[ti, 0], self.N[ti, oi]
        return radius_from_counts({4: B, 3: A - B, 2: No0 - B, 1: self.T - A - No0 + B - No,
                                   0: No}, gaps)

    def pair(self, ti, a, b, gaps):
        Ny, Nab = self.Ny[ti, 0], self.N[ti, a] + self.N[ti, b]
        return radius_from_counts({3: Ny, 1: self.T - Ny - Nab, 0: Nab}, gaps)


def _roe_buckets(r, top, counts, y, m1, m2, spread, d, generic=False) -> np.ndarray:
    T, n, C = r.shape
    rows = np.arange(n)
    o0 = np.where(y == m1, m2, m1)
    cls = np.arange(C)
    above = _rank_of(r, y)[:, :, None] < r                      # (T, n, C): y over c
    if d == 1 and not generic:
        w = _Classifiers(top, above, counts, y, o0, T)
    else:
        w = _Buckets(top, above, counts, y, o0, spread, d)
    nb = w.nb
    ahead = above.sum(axis=0)
    g = _margins(counts, y)
    e = 2 * ahead - T - (cls[None, :] < y[:, None])
    h = _margins(counts, o0)
    rad_g = w.g(g)
    rad_g[rows, y] = nb
    rad_e = w.e(e)
    rad_h = w.h(h)
    not_y = cls[None, :] != y[:, None]
    # exact route values: R2(o0), and R1 when y = m2 (some a other than m1, y passes y)
    best = rad_e[rows, o0].copy()
    third = not_y & (cls[None, :] != m1[:, None])
    r1_m2 = np.where(third, rad_g, nb).min(axis=1)
    best = np.where(y == m2, np.minimum(best, r1_m2), best)
    # R2(o), o not in {y, o0}: max(rad_e, rad_h, sum margin); the sum only where it can matter
    lb = np.maximum(rad_e, rad_h)
    rival = not_y & (cls[None, :] != o0[:, None])
    ti, oi = np.nonzero(rival & (lb < best[:, None]))
    value = lb.copy()
    if ti.size:
        value[ti, oi] = np.maximum(lb[ti, oi], w.eh(ti, oi, e[ti, oi] + h[ti, oi] + 1))
    best = np.minimum(best, np.where(rival, value, nb).min(axis=1))
    # R1 when y = m1: pairs a < b (neither y) with max(rad_a, rad_b, sum margin)
    if C >= 3:
        pa, pb = np.triu_indices(C, 1)
        ok = (pa[None, :] != y[:, None]) & (pb[None, :] != y[:, None]) & (y == m1)[:, None]
        lb2 = np.maximum(rad_g[:, pa], rad_g[:, pb])
        val2 = lb2.copy()
        ti, pi = np.nonzero(ok & (lb2 < best[:, None]))
        if ti.size:
            a, b = pa[pi], pb[pi]
            val2[ti, pi] = np.maximum(lb2[ti, pi], w.pair(ti, a, b, g[ti, a] + g[ti, b] + 1))
        best = np.minimum(best, np.where(ok, val2, nb).min(axis=1))
    return best
