"""The certified bound ``delta(rho)`` and the certified radius (numpy and scipy only).

Implements the unified form of Theorem 1 given in ``docs/certificates.md``: a prediction
``c1`` survives the attack ``(a, d, r)`` (``a`` insertions, ``d`` deletions, ``r``
modifications) when

    p1 - p2 > delta(a, d, r) = 1 + R(m) - 2 Q(|Omega|),     m = n + a - d,  |Omega| = n - d - r,

and ``delta(rho)`` is the maximum over the attacks a poisoning model allows with
``a + d + r <= rho`` (and ``d + r <= n``):

=====  ======================  ===========================================================
model  allowed                 ``delta(rho)``
=====  ======================  ===========================================================
P1     insert                  ``R(n + rho) - 1``
P2     delete                  ``1 - Q(n - rho)``
P3     modify                  ``2 - 2 Q(n - rho)``
P4     insert, modify          ``max_a 1 + R(n + a) - 2 Q(n - rho + a)``, ``rho - n <= a <= rho``
P5     delete, modify          as P3 (deleting never beats modifying)
P6     insert, delete, modify  as P4 (``m < n`` never beats ``m = n``)
=====  ======================  ===========================================================

with, for the three selection schemes (``w`` elements of ``D`` kept, ``m`` the poisoned size):

- bagging without replacement (scheme 1, ``ns`` distinct draws): ``Q(w) = C(w, ns) / C(n, ns)``,
  ``R(m) = C(m, ns) / C(n, ns)``. This corrects the paper's Corollary 1, which inverts ``pi``
  (erratum 1); ``delta = +inf`` where ``m < ns`` or ``|Omega| < ns``.
- bagging with replacement (scheme 2, ``ns`` ordered draws): ``Q(w) = (w / n)^ns``,
  ``R(m) = (m / n)^ns``.
- binomial selection (scheme 3, each sample kept with a *fixed* probability ``p``):
  ``Q(w) = (1 - p)^(n - w)``, ``R(m) = (1 - p)^(n - m)``.

Numerics (``poisoncert.schemedelta``). Every ``Q`` and ``R`` is evaluated in log space
(``log1p`` sums, never huge integers or ``lgamma`` differences where those would cancel)
together with a rigorous bound on its floating-point error. Radii are searched against
``delta + error + 1e-12``, so a computed radius is never larger than the one exact arithmetic
gives; it is smaller only when the gap lies within about ``1e-12`` of a value of ``delta`` (a
tie or near-tie, resolved toward the smaller radius). ``delta(0) = 0`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from poisoncert._validation import (
    INT_LIMIT,
    check_choice,
    check_int,
    check_int_array,
    check_real_array,
    named_as,
)
from poisoncert.schemedelta import TABLE_MAX, SchemeDelta
from poisoncert.selection import SCHEME_ALIASES, SCHEMES, check_size

__all__ = [
    "MODELS",
    "MODEL_ALIASES",
    "SCHEMES",
    "SCHEME_ALIASES",
    "SelectionBound",
    "certified_radius",
    "delta",
    "jia_certified_radius",
    "jia_round",
]

MODELS = ("P1", "P2", "P3", "P4", "P5", "P6")
MODEL_ALIASES = {
    "1": "P1", "insert": "P1", "insertion": "P1", "insertions": "P1",
    "2": "P2", "delete": "P2", "deletion": "P2", "deletions": "P2",
    "3": "P3", "modify": "P3", "modification": "P3", "modifications": "P3",
    "4": "P4", "insert_modify": "P4",
    "5": "P5", "delete_modify": "P5",
    "6": "P6", "all": "P6", "any": "P6", "insert_delete_modify": "P6",
}

#: Absolute safety margin added to ``delta`` (beyond its computed error bound) in radius searches.
MARGIN = 1e-12
# Block size for tabulating delta (keeps temporaries in cache).
_BLOCK = 1 << 15


@dataclass(frozen=True)
class SelectionBound:
    """A validated setting ``(scheme, n, ns or p, model)`` with its ``delta`` and radius.

    ``n`` is the size of the attackable part ``D^p``; the known-clean part does not enter.
    For binomial selection give ``p``, or ``ns`` meaning ``p = ns / n`` held fixed (``p``
    must not be recomputed from the poisoned set's size, see ``docs/certificates.md``).
    """

    scheme: str
    n: int
    ns: int | None = None
    p: float | None = None
    model: str = "P6"

    def __post_init__(self) -> None:
        where = "SelectionBound"
        scheme = check_choice(self.scheme, "scheme", where, SCHEMES, SCHEME_ALIASES)
        model = check_choice(self.model, "model", where, MODELS, MODEL_ALIASES)
        n = check_int(self.n, "n", where, low=1, high=INT_LIMIT)
        ns, p = check_size(scheme, n, ns=self.ns, p=self.p, where=where)
        if ns is not None:  # with replacement ns has no other bound: keep it int64-safe
            ns = check_int(ns, "ns", where, low=1, high=INT_LIMIT)
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "ns", ns)
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "_delta", SchemeDelta(scheme, n, ns, p, model))

    # ------------------------------------------------------------------ public
    def delta(self, rho):
        """``delta(rho)``: vectorised over integer ``rho >= 0``; ``+inf`` where nothing holds."""
        rho_arr, scalar = _as_rho(rho, "delta")
        val, _ = self._delta.delta_err(np.atleast_1d(rho_arr).ravel())
        return float(val[0]) if scalar else val.reshape(rho_arr.shape)

    def radius(self, gap):
        """Largest integer ``rho >= 0`` with ``delta(rho) < gap``; ``-1`` where ``gap <= 0``.

        Vectorised over ``gap`` (a real number in ``[-1, 1]``, such as ``p1_lower - p2_upper``).
        Under P2, P3 and P5 at most ``n`` samples can be deleted or modified, so a radius of
        ``n`` there means every such attack is covered.
        """
        gap_arr = check_real_array(gap, "gap", "certified_radius", low=-1.0, high=1.0)
        scalar = gap_arr.ndim == 0
        out = self._radius(np.atleast_1d(gap_arr).ravel()).reshape(gap_arr.shape)
        return int(out) if scalar else out

    def delta_upper(self, rho) -> np.ndarray:
        """An upper bound on ``delta(rho)`` used by the radius search (error bound + margin)."""
        rho_arr, _ = _as_rho(rho, "delta_upper")
        return self._upper(np.atleast_1d(rho_arr).ravel()).reshape(rho_arr.shape)

    # ------------------------------------------------------------ radius search
    @property
    def rho_cap(self) -> int | None:
        """Largest rho that can change ``delta``: ``n`` under P2/P3/P5, else None (unbounded)."""
        return self.n if self.model in ("P2", "P3", "P5") else None

    def _upper(self, rho: np.ndarray) -> np.ndarray:
        val, err = self._delta.delta_err(rho)
        with np.errstate(over="ignore"):  # a delta near the float maximum: +inf, the safe side
            up = val + err + MARGIN
        return np.where(rho == 0, 0.0, up)

    def _radius(self, gaps: np.ndarray) -> np.ndarray:
        out = np.full(gaps.shape, -1, dtype=np.int64)
        pos = gaps > 0
        if not pos.any():
            return out
        uniq, inv = np.unique(gaps[pos], return_inverse=True)
        gmax = np.array([uniq[-1]])
        # Every radius is at most the radius of the largest gap: find that one first
        # (exponential search, then bisection), then tabulate delta up to it. The search
        # stops at INT_LIMIT (a tiny binomial p lets delta grow so slowly that it would run
        # past int64): a radius of at least INT_LIMIT is reported as INT_LIMIT, which is sound.
        cap = INT_LIMIT if self.rho_cap is None else min(int(self.rho_cap), INT_LIMIT)
        hi = 1
        while hi < cap and self._upper(np.array([hi]))[0] < gmax[0]:
            hi *= 2
        if hi >= cap:
            hi = cap
            if self._upper(np.array([cap]))[0] < gmax[0]:
                # delta stays below these gaps for every possible attack of this kind.
                hi = cap + 1
        top = int(self._bisect(gmax, hi - 1)[0]) + 1  # delta_upper(top) >= gmax or top > cap
        top = min(top, cap)
        if top <= TABLE_MAX:
            table = np.empty(top + 1)
            for start in range(0, top + 1, _BLOCK):
                stop = min(start + _BLOCK, top + 1)
                table[start:stop] = self._upper(np.arange(start, stop, dtype=np.int64))
            np.maximum.accumulate(table, out=table)
            r = np.searchsorted(table, uniq, side="left") - 1
            r = np.minimum(r, cap)
        else:
            r = self._bisect(uniq, top)
        out[pos] = r[inv]
        return out

    def _bisect(self, gaps: np.ndarray, top: int) -> np.ndarray:
        """Vectorised bisection: largest rho in [0, top] with ``delta_upper(rho) < gap``.

        Keeps the invariant ``delta_upper(lo) < gap``; sound even if the computed upper
        values were not monotone, because exact ``delta`` is.
        """
        lo = np.zeros(gaps.shape, dtype=np.int64)  # delta(0) = 0 < gap
        hi = np.full(gaps.shape, top + 1, dtype=np.int64)  # exclusive
        while True:
            active = hi - lo > 1
            if not active.any():
                return lo
            mid = (lo + hi) // 2
            ok = self._upper(mid) < gaps
            lo = np.where(active & ok, mid, lo)
            hi = np.where(active & ~ok, mid, hi)


def _as_rho(rho, where: str) -> tuple[np.ndarray, bool]:
    # beyond INT_LIMIT, n + rho would approach int64's range (delta is +inf or 1 long before)
    arr = check_int_array(rho, "rho", where, low=0, high=INT_LIMIT)
    return arr, arr.ndim == 0


def delta(rho, *, scheme: str, n: int, model: str = "P6", ns: int | None = None,
          p: float | None = None):
    """``delta(rho)`` of Theorem 1 (corrected, see ``docs/certificates.md``).

    Vectorised: a scalar ``rho`` gives a float, an array gives an array. ``scheme`` is
    ``"without_replacement"``, ``"with_replacement"`` or ``"binomial"``; ``model`` is
    ``"P1"`` ... ``"P6"``; ``n = |D^p|``; ``ns`` the selection size (binomial: ``p = ns / n``,
    or give ``p``). ``+inf`` where nothing can be certified (bagging without replacement when
    the attack leaves fewer than ``ns`` samples).
    """
    with _named("delta"):
        return SelectionBound(scheme, n, ns=ns, p=p, model=model).delta(rho)


def certified_radius(gap, *, scheme: str, n: int, model: str = "P6", ns: int | None = None,
                     p: float | None = None):
    """Largest integer ``rho >= 0`` with ``delta(rho) < gap`` (strict), ``-1`` when ``gap <= 0``.

    ``gap`` is a lower bound on ``p1 - p2`` (e.g. ``p1_lower - p2_upper``), a real number in
    ``[-1, 1]``; vectorised. Never larger than exact arithmetic gives; under P2/P3/P5 a radius of
    ``n`` means every possible deletion/modification attack is covered.
    """
    with _named("certified_radius"):
        return SelectionBound(scheme, n, ns=ns, p=p, model=model).radius(gap)


def _named(where: str):
    """Errors of ``SelectionBound`` in the words of the public function ``where`` (its
    parameters have the same names)."""
    return named_as(where, scheme="scheme", n="n", ns="ns", p="p", model="model", rho="rho",
                    gap="gap")


# ---------------------------------------------------------------- Jia et al.
def jia_round(p1_lower, p2_upper, *, n: int, ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Jia et al.'s rounding of the vote probabilities to multiples of ``1 / n^ns``.

    ``p1_lower`` is rounded down and ``p2_upper`` up, exactly (integer arithmetic on the
    floats' binary fractions); the results are returned as floats rounded outward, so the
    rounded gap is never larger than Jia et al.'s exact one. When ``n^ns`` exceeds ``2^2000``
    the rounding (below ``1e-600``) is applied as a one-ulp outward step.
    """
    where = "jia_round"
    n = check_int(n, "n", where, low=1, high=INT_LIMIT)
    ns = check_int(ns, "ns", where, low=1, high=INT_LIMIT)
    p1 = check_real_array(p1_lower, "p1_lower", where, low=0.0, high=1.0)
    p2 = check_real_array(p2_upper, "p2_upper", where, low=0.0, high=1.0)
    # n = 1: the grid is the integers (1^ns = 1), however large ns is: round exactly
    if ns * math.log2(n) > 2000:
        return np.nextafter(p1, -np.inf).clip(0, 1), np.nextafter(p2, np.inf).clip(0, 1)
    N = n**ns
    return _round_grid(p1, N, down=True), _round_grid(p2, N, down=False)


def _round_grid(x: np.ndarray, N: int, down: bool) -> np.ndarray:
    out = np.empty(x.shape)
    uniq, inv = np.unique(x, return_inverse=True)
    vals = np.empty(uniq.shape)
    for i, u in enumerate(uniq):
        num, den = float(u).as_integer_ratio()
        k = (num * N) // den if down else -((-num * N) // den)
        exact = Fraction(k, N)
        f = float(exact)  # nearest float
        if down and Fraction(f) > exact:
            f = float(np.nextafter(f, -np.inf))
        elif not down and Fraction(f) < exact:
            f = float(np.nextafter(f, np.inf))
        vals[i] = f
    out[...] = vals[inv.reshape(x.shape)] if x.ndim else vals[0]
    return out


def jia_certified_radius(p1_lower, p2_upper, *, n: int, ns: int):
    """Jia et al.'s certified radius for bagging with replacement (their Theorem 1).

    Their condition is ours for scheme 2 under P6 (``delta`` of ``"with_replacement"``),
    applied after rounding ``p1_lower`` down and ``p2_upper`` up to multiples of ``1 / n^ns``
    (erratum 4: the paper's "tighter than Jia" is this rounding, at most ``2 / n^ns``).
    Vectorised; ``-1`` where the rounded gap is not positive.
    """
    p1r, p2r = jia_round(p1_lower, p2_upper, n=n, ns=ns)
    gap = np.clip(p1r - p2r, -1.0, 1.0)
    out = SelectionBound("with_replacement", n, ns=ns, model="P6").radius(gap)
    return out
