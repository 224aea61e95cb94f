"""Confidence bounds on vote probabilities from ``T`` sampled base classifiers (numpy, scipy).

The certificate of a test point needs a lower bound ``p1_lower`` on the probability of the
predicted class ``c1`` and an upper bound ``p2_upper`` on the probability of every other class
(``docs/certificates.md``, "Bounding p1 and p2 from T votes"). Both come from one-sided
Clopper-Pearson bounds on the vote counts. Because ``c1`` is picked from the same votes it is
bounded with, the default method makes the bounds hold simultaneously for every class that
could have been picked.

Every bound is rounded toward its conservative side, so floating-point error never widens a
certificate.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy
from scipy import special

from poisoncert._validation import (
    INT_LIMIT,
    check_choice,
    check_int_array,
    check_real,
    check_real_array,
    param_error,
)

__all__ = [
    "ALPHA_MIN",
    "BETA_MIN",
    "METHODS",
    "VoteBounds",
    "auto_method",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "vote_bounds",
]

#: Names accepted by ``vote_bounds(method=...)``; the first is the default.
METHODS = ("auto", "bonferroni", "bonferroni_upper", "pairwise", "paper", "true_label",
           "true_label_split")


def auto_method(n_classes: int) -> str:
    """The method ``"auto"`` stands for, fixed by the number of classes before any vote is seen:
    ``"bonferroni"`` for two classes (the other class's probability is at most ``1 - p1``, so
    one bound at ``alpha / 2`` is all there is to spend), ``"pairwise"`` for three or more
    (measured in docs/aggregation.md: it certifies at least as many points as
    ``"bonferroni_upper"`` and ``"bonferroni"`` with larger radii in every setting there)."""
    return "bonferroni" if n_classes <= 2 else "pairwise"

#: Relative margin by which a bound is moved toward its conservative side (plus one ulp). It is
#: far above the relative error of scipy's incomplete-beta inverse (Boost's, scipy >= 1.12),
#: which reaches about 1e-11 for few votes out of many (k = 3, T = 936,425: a former margin
#: of 1e-12 left that bound on the unsafe side; ``tests/test_stats.py`` and ``tests/soak.py``
#: check bounds against exact binomial tails), and far below anything that changes a
#: certified radius except at a gap within about 1e-9 of a step of the radius.
_REL_MARGIN = 1e-9

#: Relative amount by which the error probability ``beta`` of a bound is lowered before the
#: incomplete-beta inverse is taken, for more than ``_BIG_T`` votes. For many votes scipy's
#: inverse misses the exact bound by more than ``_REL_MARGIN``: ``T = 10^9``, ``k = 1``,
#: ``beta = 0.25`` gave an upper bound at which the binomial tail is ``beta * (1 + 3.4e-8)``
#: (a review's exact check: 13 such cases from ``T = 10^8`` up, none at ``T <= 10^7``).
#: Lowering ``beta`` by 1e-6 keeps the tail at or below ``beta`` with 30 times that error to
#: spare; ``tests/test_stats.py`` checks it. Up to ``_BIG_T`` votes the bounds are as before
#: (checked against exact tails there), so no certificate of a run of up to ten million
#: classifiers moves.
_BETA_MARGIN = 1e-6
_BIG_T = 10**7

#: The smallest ``alpha`` the vote bounds accept, and ``BETA_MIN`` the smallest ``beta`` of one
#: Clopper-Pearson bound. Far below them scipy's inverse breaks down: ``beta = 1.1e-273``,
#: ``T = 349,478,751``, ``k = T - 22`` gave a lower bound whose tail is 334,253 times ``beta``
#: (a review's exact check; none failed at or above about 1e-248).
ALPHA_MIN = 1e-100
BETA_MIN = 1e-150

#: The first scipy whose ``betaincinv`` is accurate enough for ``_REL_MARGIN``: scipy 1.10 and
#: 1.11 (Cephes' inverse) missed exact Clopper-Pearson bounds by up to a relative 6.6e-12 on
#: the unsafe side (k = 3, T = 100,000, beta = 1e-9, in ``tests/test_stats.py``).
SCIPY_MIN = (1, 12)


def check_scipy(version: str) -> None:
    """An ``ImportError`` naming the version for a scipy older than ``SCIPY_MIN``: its bounds
    could certify radii that exact arithmetic does not allow."""
    try:
        got = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:  # a development version string: trust its numbers as far as they go
        return
    if got < SCIPY_MIN:
        need = ".".join(map(str, SCIPY_MIN))
        raise ImportError(f"poisoncert needs scipy >= {need}: the incomplete-beta inverse of "
                          f"scipy {version} is not accurate enough for sound Clopper-Pearson "
                          f"bounds. Upgrade it (pip install 'scipy>={need}').")


check_scipy(scipy.__version__)


def _lowered(beta: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``beta`` lowered by ``_BETA_MARGIN`` where there are more than ``_BIG_T`` votes."""
    return np.where(T > _BIG_T, beta * (1.0 - _BETA_MARGIN), beta)


#: From this many bounds in one call, each distinct ``(k, T, beta)`` is computed once and
#: copied to its places: the vote counts of many test points repeat (10^6 test points of
#: ``T = 1000`` votes over 10 classes ask the pairwise method for 10^7 bounds, of at most
#: 500,500 distinct pairs), and ``betaincinv`` took 19 s of such a certify's 20.
_ONCE_EACH_MIN = 4096


def _once_each(bound, k: np.ndarray, T: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``bound(k, T, beta)`` (an elementwise bound), computed once for each distinct triple
    where there are many and they pack into one int64 key (``T`` below ``2^31``, one
    ``beta``): the same numbers, element for element."""
    k, T, beta = np.broadcast_arrays(k, T, beta)
    if k.size >= _ONCE_EACH_MIN:
        top = int(T.max())
        b0 = beta.flat[0]
        ki, Ti = k.astype(np.int64), T.astype(np.int64)
        # a key per triple only for whole counts 0 <= k <= top (else two triples could share
        # one): anything else is bounded element by element, as before
        if (top < 2**31 and int(k.min()) >= 0 and int(k.max()) <= top
                and bool(np.all(ki == k)) and bool(np.all(Ti == T))
                and bool(np.all(beta == b0))):
            key = Ti * (top + 1) + ki
            uniq, inverse = np.unique(key.ravel(), return_inverse=True)
            if 2 * uniq.size <= key.size:
                uT, uk = np.divmod(uniq, top + 1)
                once = bound(uk, uT, np.full(uniq.shape, b0, dtype=beta.dtype))
                return once[inverse.ravel()].reshape(k.shape)
    return bound(k, T, beta)


def _cp_lower(k: np.ndarray, T: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Unchecked one-sided Clopper-Pearson lower bound, rounded down."""
    return _once_each(_cp_lower_each, k, T, beta)


def _cp_upper(k: np.ndarray, T: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Unchecked one-sided Clopper-Pearson upper bound, rounded up (``_cp_upper_each``)."""
    return _once_each(_cp_upper_each, k, T, beta)


def _cp_lower_each(k: np.ndarray, T: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``_cp_lower`` element by element."""
    k, T, beta = np.broadcast_arrays(k, T, beta)
    out = np.zeros(k.shape, dtype=np.float64)
    pos = k > 0
    if pos.any():
        kk = k[pos].astype(np.float64)
        x = special.betaincinv(kk, T[pos] - kk + 1.0, _lowered(beta[pos], T[pos]))
        x = np.where(np.isnan(x), 0.0, x)  # no number from the inverse: the trivial bound
        x = np.nextafter(x * (1.0 - _REL_MARGIN), 0.0)
        out[pos] = np.clip(x, 0.0, 1.0)
    return out


def _cp_upper_each(k: np.ndarray, T: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Unchecked one-sided Clopper-Pearson upper bound, rounded up, element by element.

    ``BetaInv(1 - beta; k + 1, T - k)`` is computed as the inverse of the complemented
    incomplete beta function at ``beta``, which keeps full precision for tiny ``beta`` (where
    ``1 - beta`` rounds to 1).
    """
    k, T, beta = np.broadcast_arrays(k, T, beta)
    out = np.ones(k.shape, dtype=np.float64)
    lt = k < T
    if lt.any():
        kk = k[lt].astype(np.float64)
        x = special.betainccinv(kk + 1.0, T[lt] - kk, _lowered(beta[lt], T[lt]))
        x = np.where(np.isnan(x), 1.0, x)  # no number from the inverse: the trivial bound
        x = np.nextafter(x * (1.0 + _REL_MARGIN), 2.0)
        out[lt] = np.clip(x, 0.0, 1.0)
    return out


def _check_cp(k, T, beta, where: str):
    k = check_int_array(k, "k", where, low=0, high=INT_LIMIT)
    T = check_int_array(T, "T", where, low=1, high=INT_LIMIT)
    beta = check_real_array(beta, "beta", where, low=BETA_MIN, high=1.0, high_open=True)
    try:
        k, T, beta = np.broadcast_arrays(k, T, beta)
    except ValueError:
        raise param_error("T", where, f"broadcastable with k of shape {np.shape(k)}",
                          f"shape {np.shape(T)}") from None
    bad = k > T
    if bad.any():
        raise param_error("k", where, "integers in the range [0, T]", int(k[bad].ravel()[0]))
    return k, T, beta


def _scalar_or_array(x: np.ndarray):
    return float(x) if x.ndim == 0 else x


def clopper_pearson_lower(k, T, beta):
    """One-sided Clopper-Pearson lower bound on a binomial proportion.

    ``BetaInv(beta; k, T - k + 1)``, and 0 when ``k == 0``: for ``k ~ Binomial(T, p)``,
    ``Pr(clopper_pearson_lower(k, T, beta) > p) <= beta`` for every ``p``. ``beta`` is the
    error probability of this one bound. Vectorised: ``k``, ``T`` and ``beta`` broadcast. The
    result is rounded down (relative ``1e-9`` plus one ulp) so float error never raises it.
    Returns a float for scalar input, else a float64 array.
    """
    k, T, beta = _check_cp(k, T, beta, "clopper_pearson_lower")
    return _scalar_or_array(_cp_lower(k, T, beta))


def clopper_pearson_upper(k, T, beta):
    """One-sided Clopper-Pearson upper bound on a binomial proportion.

    ``BetaInv(1 - beta; k + 1, T - k)``, and 1 when ``k == T``: for ``k ~ Binomial(T, p)``,
    ``Pr(clopper_pearson_upper(k, T, beta) < p) <= beta`` for every ``p``. ``beta`` is the
    error probability of this one bound. Vectorised like ``clopper_pearson_lower``; the result
    is rounded up so float error never lowers it.
    """
    k, T, beta = _check_cp(k, T, beta, "clopper_pearson_upper")
    return _scalar_or_array(_cp_upper(k, T, beta))


@dataclass(frozen=True, eq=False)
class VoteBounds:
    """Bounds on the vote probabilities of each test point.

    Attributes
    ----------
    top_class : int64 array ``(n_test,)``
        The class ``c1`` whose probability ``p1_lower`` bounds: the majority vote (ties to the
        smaller index), or the true label for the ``true_label*`` methods.
    p1_lower : float64 array
        Lower bound on ``Pr(f(S) = c1)``.
    p2_upper : float64 array
        Upper bound on ``max over c != c1 of Pr(f(S) = c)``.
    method, alpha :
        How the bounds were computed and the error probability they hold with (per test point;
        see ``vote_bounds``).
    T : int64 array
        Number of base classifiers behind each row (abstaining ones included).
    """

    top_class: np.ndarray
    p1_lower: np.ndarray
    p2_upper: np.ndarray
    method: str
    alpha: float
    T: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """``p1_lower - p2_upper``: positive exactly where a prediction can be certified."""
        return self.p1_lower - self.p2_upper

    def __len__(self) -> int:
        return int(self.top_class.shape[0])


def _check_counts(counts, where: str) -> np.ndarray:
    allowed = "a 2-D array (n_test, n_classes) of non-negative integers"
    try:
        arr = np.asarray(counts)
    except (TypeError, ValueError):  # ragged rows
        raise param_error("counts", where, allowed, counts) from None
    if arr.ndim != 2 or arr.shape[1] < 1:  # a scalar (None, 5) shows as itself
        raise param_error("counts", where, allowed,
                          counts if arr.ndim == 0 else f"an array of shape {arr.shape}")
    return check_int_array(arr, "counts", where, low=0, high=INT_LIMIT)


def _check_T(T, counts: np.ndarray, where: str) -> np.ndarray:
    sums = counts.sum(axis=1)
    if T is None:
        T_arr = sums
    else:
        T_arr = check_int_array(T, "T", where, low=1, high=INT_LIMIT)
        if T_arr.ndim > 1 or (T_arr.ndim == 1 and T_arr.shape[0] != counts.shape[0]):
            raise param_error("T", where, "an int or one int per row of counts",
                              f"an array of shape {T_arr.shape}")
        T_arr = np.broadcast_to(T_arr, sums.shape).astype(np.int64)
    bad = (T_arr < sums) | (T_arr < 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise param_error("T", where,
                          "an int >= 1 and >= each row's sum of counts (abstaining base "
                          f"classifiers count in T); row {i} sums to {int(sums[i])}",
                          int(T_arr[i]))
    return np.ascontiguousarray(T_arr, dtype=np.int64)


def _check_labels(labels, counts: np.ndarray, method: str, where: str) -> np.ndarray:
    n_test, n_classes = counts.shape
    if labels is None:
        raise param_error("labels", where,
                          f"an int array of shape ({n_test},) for method {method!r}", None)
    lab = check_int_array(labels, "labels", where, low=0, high=n_classes - 1)
    if lab.shape != (n_test,):
        raise param_error("labels", where, f"an int array of shape ({n_test},)",
                          f"an array of shape {lab.shape}")
    return lab


def _top_two(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top class (ties to the smaller index) and runner-up (same rule among the others)."""
    rows = np.arange(counts.shape[0])
    c1 = np.argmax(counts, axis=1)
    if counts.shape[1] < 2:
        return c1, np.full_like(c1, -1)
    others = counts.copy()
    others[rows, c1] = -1
    return c1, np.argmax(others, axis=1)


def _max_other(upper: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Row-wise max of ``upper`` over columns other than ``exclude``; 1 where there is none."""
    if upper.shape[1] < 2:
        return np.ones(upper.shape[0])
    masked = upper.copy()
    masked[np.arange(upper.shape[0]), exclude] = -np.inf
    return masked.max(axis=1)


def _pairwise_gap(counts: np.ndarray, c1: np.ndarray, l1: np.ndarray, beta: float) -> np.ndarray:
    """``min over c != c1`` of ``l1 (2 - 1 / pi_l)`` (``-1`` where ``pi_l <= 1/2`` or the pair
    has no votes), ``pi_l`` the lower bound at ``beta`` of ``N_c1`` out of ``N_c1 + N_c``;
    rounded down."""
    n, C = counts.shape
    rows = np.arange(n)
    x1 = np.broadcast_to(counts[rows, c1][:, None], counts.shape)
    m = x1 + counts
    pi_l = np.zeros(counts.shape)
    pos = m > 0
    pi_l[pos] = _cp_lower(x1[pos], m[pos], np.full(int(pos.sum()), beta))
    ok = pi_l > 0.5
    safe = np.where(ok, pi_l, 1.0)
    L = l1[:, None] * (2.0 - 1.0 / safe)
    L = np.nextafter(L - np.abs(L) * _REL_MARGIN, -np.inf)  # rounded toward the smaller gap
    L = np.where(ok, np.maximum(L, -1.0), -1.0)
    L[rows, c1] = np.inf
    return L.min(axis=1) if C > 1 else np.full(n, -1.0)


def vote_bounds(counts, *, alpha, method: str = "auto", T=None, labels=None) -> VoteBounds:
    """Lower bound on the top class's vote probability and upper bound on every other class's.

    Parameters
    ----------
    counts : int array ``(n_test, n_classes)``
        ``counts[i, c]`` = number of base classifiers voting ``c`` on test point ``i``. The
        number of classes ``C`` used in the Bonferroni levels is ``n_classes``.
    alpha : float in (0, 1)
        Error probability per test point: with probability at least ``1 - alpha`` over the
        sampling of the ``T`` sub-datasets, ``p1_lower <= Pr(c1)`` and
        ``p2_upper >= max over c != c1 of Pr(c)`` hold together for that test point, whichever
        class ``c1`` the votes picked (except for ``"paper"``, see below). Nothing is claimed
        jointly over test points.
    method : str
        - ``"auto"`` (default): ``auto_method(C)``, i.e. ``"bonferroni"`` for ``C = 2`` and
          ``"pairwise"`` for ``C >= 3``; ``VoteBounds.method`` names the method used.
        - ``"bonferroni"`` (valid for any number of classes ``C`` and abstaining
          votes): ``c1`` = majority vote (ties to the smaller index), ``p1_lower`` = one-sided
          Clopper-Pearson lower bound at level ``alpha / C``, ``p2_upper = 1 - p1_lower``. The
          ``C`` lower bounds hold simultaneously with probability ``1 - alpha``, so the bound
          is valid for the data-chosen ``c1``.
        - ``"bonferroni_upper"`` (valid for any ``C``): all ``2C`` one-sided bounds (a lower
          and an upper for each class) at level ``alpha / (2C)``; ``p2_upper =
          min(1 - p1_lower, max over c != c1 of upper_c)``.
        - ``"pairwise"`` (valid for any ``C`` and abstaining votes; docs/aggregation.md has
          the proof): bounds the gap ``Pr(c1) - max over c != c1 of Pr(c)`` directly.
          ``p1_lower = l`` is the lower bound of ``Pr(c1)`` at ``alpha / 2``; for each
          ``c != c1``, given ``m = N_c1 + N_c`` votes for the pair, ``N_c1`` is binomial with
          ``pi = Pr(c1) / (Pr(c1) + Pr(c))``, and ``pi_l`` is its lower bound at
          ``alpha / (4 (C - 1))``; then ``Pr(c1) - Pr(c) = Pr(c1) (2 - 1/pi) >= l (2 - 1/pi_l)``
          where ``pi_l > 1/2`` (else ``-1``). The gap bound is the minimum over ``c``, and
          ``p2_upper = min(1, p1_lower - gap)``: for this method only the difference
          ``p1_lower - p2_upper`` carries the guarantee (with probability ``1 - alpha``, at
          most the true gap of the chosen ``c1``), not ``p2_upper`` on its own.
        - ``"paper"``: the seed paper's Eq. 13-14: ``c1``, ``c2`` the top two classes,
          ``p1_lower`` at ``alpha / 2``, ``p2_upper = min(1 - p1_lower, upper(count_c2))`` at
          ``alpha / 2``. Valid only for two classes with no abstaining votes (then ``c2`` is
          the only other class and ``Pr(c2) = 1 - Pr(c1)``); with more classes it ignores that
          ``c1`` and ``c2`` are chosen from the votes, and its error rate can exceed
          ``alpha``. Kept to reproduce the paper. With one class, ``p2_upper = 1 - p1_lower``.
        - ``"true_label"`` (needs ``labels``): bounds the true label ``y``'s probability, no
          selection effect: ``p1_lower`` = lower bound at level ``alpha``,
          ``p2_upper = 1 - p1_lower``, ``top_class = y``. For certified-accuracy evaluation.
        - ``"true_label_split"`` (needs ``labels``; Jia et al.'s evaluation): ``C`` one-sided
          bounds at ``alpha / C`` (lower for ``y``, upper for each other class);
          ``p2_upper = min(1 - lower_y, max over c != y of upper_c)``.
    T : int or int array ``(n_test,)``, optional
        Number of base classifiers; defaults to each row's sum. May exceed the row sum:
        abstaining base classifiers count in ``T`` and against every class.
    labels : int array ``(n_test,)``, optional
        True labels, required by the ``true_label*`` methods and refused by the others.
    """
    return _vote_bounds(counts, alpha=alpha, method=method, T=T, labels=labels,
                        where="vote_bounds")


def _vote_bounds(counts, *, alpha, method, T, labels, where: str) -> VoteBounds:
    alpha = check_real(alpha, "alpha", where, low=ALPHA_MIN, high=1.0, high_open=True)
    method = check_choice(method, "method", where, METHODS)
    counts = _check_counts(counts, where)
    T_arr = _check_T(T, counts, where)
    n_test, C = counts.shape
    rows = np.arange(n_test)
    if labels is not None and not method.startswith("true_label"):  # not silently dropped
        raise param_error("labels", where, "None unless method is 'true_label' or "
                          "'true_label_split' (the other methods use no labels)", "an array")
    if method == "auto":
        method = auto_method(C)
    if method == "pairwise" and C < 2:
        method = "bonferroni"

    if method == "pairwise":
        c1 = np.argmax(counts, axis=1)
        p1 = _cp_lower(counts[rows, c1], T_arr, alpha / 2)
        p2 = np.minimum(p1 - _pairwise_gap(counts, c1, p1, alpha / (4 * (C - 1))), 1.0)
    elif method == "bonferroni":
        c1 = np.argmax(counts, axis=1)
        p1 = _cp_lower(counts[rows, c1], T_arr, alpha / C)
        p2 = 1.0 - p1
    elif method == "bonferroni_upper":
        c1 = np.argmax(counts, axis=1)
        beta = alpha / (2 * C)
        p1 = _cp_lower(counts[rows, c1], T_arr, beta)
        upper = _cp_upper(counts, T_arr[:, None], beta)
        p2 = np.minimum(1.0 - p1, _max_other(upper, c1))
    elif method == "paper":
        abstaining = bool(np.any(T_arr > counts.sum(axis=1)))
        if C > 2 or abstaining:
            warnings.warn(
                f"method 'paper' (the seed paper's Eq. 13-14) is valid only for two classes "
                f"with no abstaining votes; with {f'{C} classes' if C > 2 else 'abstaining votes'}"
                " its bounds can fail more often than alpha ('auto' is valid for any number "
                "of classes)", UserWarning, stacklevel=3)
        c1, c2 = _top_two(counts)
        p1 = _cp_lower(counts[rows, c1], T_arr, alpha / 2)
        if C < 2:
            p2 = 1.0 - p1
        else:
            p2 = np.minimum(1.0 - p1, _cp_upper(counts[rows, c2], T_arr, alpha / 2))
    elif method == "true_label":
        c1 = _check_labels(labels, counts, method, where)
        p1 = _cp_lower(counts[rows, c1], T_arr, alpha)
        p2 = 1.0 - p1
    else:  # true_label_split
        c1 = _check_labels(labels, counts, method, where)
        beta = alpha / C
        p1 = _cp_lower(counts[rows, c1], T_arr, beta)
        upper = _cp_upper(counts, T_arr[:, None], beta)
        p2 = np.minimum(1.0 - p1, _max_other(upper, c1))

    # 1 - p1 is rounded to nearest; move it up so p2_upper is never under-stated.
    p2 = np.minimum(np.nextafter(np.asarray(p2, dtype=np.float64), 2.0), 1.0)
    return VoteBounds(
        top_class=np.asarray(c1, dtype=np.int64),
        p1_lower=np.asarray(p1, dtype=np.float64),
        p2_upper=p2,
        method=method,
        alpha=alpha,
        T=T_arr,
    )
