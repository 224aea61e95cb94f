"""``delta(rho)`` of one selection setting and a bound on its floating-point error.

``SchemeDelta(scheme, n, ns, p, model)`` evaluates the maximum of Theorem 1's
``1 + R(m) - 2 Q(|Omega|)`` over the attacks of ``rho`` operations a poisoning model allows
(the table in ``poisoncert.bounds``), with ``Q`` and ``R`` of the three selection schemes in
log space (``log1p`` sums, cumulative tables for large ``ns``, differences of Stirling's series
beyond them) and, for every value, a rigorous absolute bound on its error. It takes values
already checked by ``bounds.SelectionBound``, which searches radii against ``delta + error +
MARGIN``. numpy and scipy only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

__all__ = ["TABLE_MAX", "SchemeDelta"]

_EPS = float(np.finfo(np.float64).eps)
# Bagging without replacement: up to this ns, log C(w, ns)/C(n, ns) is a direct ns-term log1p
# sum; above it, cumulative tables over the number of removed / added samples, built once,
# then one lookup per value, and with their TwoSum-corrected error no less accurate (P6 at
# n = 10^9, ns = 1000, 2,000 gaps: 28 s with ns-term sums, 0.6 s with tables; docs/
# benchmarks.md). A handful of terms is cheaper than a table.
_NS_DIRECT = 8
#: Largest table of delta values built for a radius search, and largest cumulative log table.
TABLE_MAX = 1 << 23


class SchemeDelta:
    """``delta(rho)`` and its error bound for a checked ``(scheme, n, ns, p, model)``
    (``ns`` None for binomial selection, which uses the fixed ``p``)."""

    def __init__(self, scheme: str, n: int, ns: int | None, p: float | None, model: str):
        self.scheme, self.n, self.ns, self.p, self.model = scheme, n, ns, p, model
        if scheme == "binomial":
            lq = math.log1p(-p)
            # log(1 - p) and an absolute error bound on it.
            self._logq = lq
            self._logq_err = 2 * _EPS * (abs(lq) + p / (1 - p))
        self._tables: dict = {}

    def delta_err(self, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``delta(rho)`` and an absolute bound on its floating-point error."""
        n, model = self.n, self.model
        rho = np.asarray(rho, dtype=np.int64)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if model == "P1":
                lr, er = self._logR(rho)
                R = np.exp(lr)
                # the error of R, plus the rounding of the subtraction (half an ulp of val)
                val, err = R - 1.0, R * _exp_err(er) + _EPS * np.abs(R - 1.0)
            elif model == "P2":
                k = np.minimum(rho, n)
                lq, eq = self._logQ(k)
                Q = np.exp(lq)
                val, err = 1.0 - Q, Q * _exp_err(eq) + _EPS * np.abs(1.0 - Q)
                val, err = self._wor_inf(val, err, n - k)
            elif model in ("P3", "P5"):
                k = np.minimum(rho, n)
                lq, eq = self._logQ(k)
                Q = np.exp(lq)
                val, err = 2.0 - 2.0 * Q, 2.0 * Q * _exp_err(eq) + _EPS * np.abs(2.0 - 2.0 * Q)
                val, err = self._wor_inf(val, err, n - k)
            else:  # P4, P6
                val, err = self._delta_insert_modify(rho)
        val = np.where(rho == 0, 0.0, val)
        err = np.where(rho == 0, 0.0, err)
        return val, err

    def _wor_inf(self, val, err, omega):
        if self.scheme == "without_replacement":
            bad = omega < self.ns
            val = np.where(bad, np.inf, val)
            err = np.where(bad, 0.0, err)
        return val, err

    def _g(self, rho: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``1 + R(n + a) - 2 Q(n - rho + a)`` for ``a`` insertions and ``rho - a`` changes."""
        lr, er = self._logR(a)
        lq, eq = self._logQ(rho - a)
        R, Q = np.exp(lr), np.exp(lq)
        val = 1.0 + R - 2.0 * Q
        err = R * _exp_err(er) + 2.0 * Q * _exp_err(eq) + 4 * _EPS * (1.0 + R)
        return val, err

    def _delta_insert_modify(self, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P4/P6: ``max over a`` of ``g(a)``, from candidates that can hold the maximum.

        The value is the largest ``g`` of the candidates (each a valid attack); the error
        bound reaches every candidate's ``g + err``, and for bagging without replacement an
        upper bound on ``g`` over the whole interval the turning point may lie in
        (``_wor_turning_bracket``), so ``val + err`` bounds the exact maximum from above.
        """
        n, scheme, ns = self.n, self.scheme, self.ns
        rho = np.asarray(rho, dtype=np.int64)
        # Modifications cannot exceed n: a >= rho - n.
        a_lo = np.maximum(rho - n, 0)
        best_v, best_e = self._g(rho, a_lo)
        best_u = best_v + best_e
        extra: list[np.ndarray] = []
        if scheme == "binomial":
            # g = 1 + (1 - 2 q^rho) q^(-a) is monotone in a: the max is at an endpoint, at
            # a = rho where 2 q^rho < 1 (both endpoints where that is close to a tie).
            q_rho = np.exp(rho * self._logq)
            extra.append(np.where(2.0 * q_rho < 1.0 + 1e-9, rho, a_lo))
        elif ns >= 2 and scheme == "with_replacement":
            # g increases then decreases in a (g' changes sign once, where
            # (1 - rho / (n + a))^(ns - 1) = 1/2): the integer max is next to that point.
            c = -math.expm1(-math.log(2.0) / (ns - 1))  # 1 - 2^(-1/(ns-1))
            a_c = np.floor(rho / c - n)
            a_c = np.where(np.isfinite(a_c), a_c, -1.0)
            a_c = np.minimum(a_c, np.iinfo(np.int64).max // 4).astype(np.int64)
            for off in (-1, 0, 1, 2):
                extra.append(np.clip(a_c + off, a_lo, rho))
        elif ns >= 2:  # without replacement: the discrete turning point, bracketed
            a_p, a_c = self._wor_turning_bracket(rho, a_lo)
            for a in (a_p - 1, a_p, a_c, a_c + 1):
                extra.append(np.clip(a, a_lo, rho))
            wide = np.flatnonzero(a_p < a_c)
            if wide.size:
                # g(a) <= 1 + R(n + a_c) - 2 Q(n - rho + a_p) for every a in [a_p, a_c]: R
                # grows with a, and so does Q (fewer samples modified).
                lr, er = self._logR(a_c[wide])
                lq, eq = self._logQ(rho[wide] - a_p[wide])
                R, Q = np.exp(lr), np.exp(lq)
                up = 1.0 + R - 2.0 * Q + (R * _exp_err(er) + 2.0 * Q * _exp_err(eq)
                                          + 4 * _EPS * (1.0 + R))
                best_u[wide] = np.maximum(best_u[wide], up)
        for a in extra:
            sel = np.flatnonzero(a != a_lo)
            if sel.size == 0:
                continue
            v, e = self._g(rho[sel], a[sel])
            take = v > best_v[sel]
            best_v[sel] = np.where(take, v, best_v[sel])
            best_e[sel] = np.where(take, e, best_e[sel])
            best_u[sel] = np.maximum(best_u[sel], v + e)
        # The value is the best candidate's (within its own error of an attack's delta); the
        # bound reaches the largest candidate upper bound, plus the rounding of that sum.
        # (A value that overflowed to inf has an infinite bound, not inf - inf.)
        spread = np.where(np.isfinite(best_u), best_u - np.where(np.isfinite(best_v), best_v,
                                                                 best_u), np.inf)
        best_e = np.maximum(best_e, spread) + 4 * _EPS * np.abs(best_u)
        if scheme == "without_replacement":
            # An attack leaving |Omega| < ns exists whenever rho > n - ns (a = a_lo): inf.
            inf = n - rho + a_lo < ns
            best_v = np.where(inf, np.inf, best_v)
            best_e = np.where(inf, 0.0, best_e)
        return best_v, best_e

    def _wor_turning_bracket(self, rho: np.ndarray,
                             a_lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integers ``a_p <= a_t <= a_c`` around the turning point ``a_t`` of bagging without
        replacement: the first ``a`` in ``[a_lo, rho]`` where ``g(a + 1) - g(a) <= 0`` (``rho``
        if none), where ``g`` is largest.

        ``g(a + 1) - g(a) = [C(n + a, ns - 1) - 2 C(n - rho + a, ns - 1)] / C(n, ns)``, whose sign
        is that of ``1/2 - prod_{i < ns - 1} (1 - rho / (n + a - i))``; the product increases
        with ``a``. Its log is computed with an error bound: one bisection on "turned for
        certain" (lower end at or above log 1/2) gives ``a_c``, one on "possibly turned"
        gives ``a_p``. Each holds whatever the rounding: ``a_c`` is ``rho`` or a point where
        the exact product is at least 1/2, ``a_p`` is ``a_lo`` or one past a point where it is
        below. Usually ``a_p == a_c == a_t``.
        """
        n, ns = self.n, self.ns
        log_half = math.log(0.5)

        def log_product(a, r):
            # log C(n - r + a, ns - 1) - log C(n + a, ns - 1)
            # = [logQ(r - a) - logR(a)] + log((n + a - ns + 1) / (n - r + a - ns + 1))
            lq, eq = self._logQ(r - a)
            lr, er = self._logR(a)
            omega = n - r + a
            with np.errstate(divide="ignore", invalid="ignore"):
                corr = np.log((n + a - ns + 1) / np.maximum(omega - ns + 1, 1).astype(float))
            live = omega >= ns
            val = np.where(live, lq - lr + corr, -np.inf)
            err = np.where(live, eq + er + 4 * _EPS * (1.0 + np.abs(corr) + np.abs(val)), 0.0)
            return val, err

        def possible(a, r):  # possibly turned; and whether for certain
            val, err = log_product(a, r)
            return val + err >= log_half, val - err >= log_half

        def certain(a, r):
            val, err = log_product(a, r)
            sure = val - err >= log_half
            return sure, sure

        a_p, sure = _first_true(possible, rho, a_lo, rho)
        a_c = a_p.copy()
        unsure = np.flatnonzero(~sure)
        if unsure.size:  # rare: the turn lies within rounding of a_p
            a_c[unsure], _ = _first_true(certain, rho[unsure], a_p[unsure], rho[unsure])
        return a_p, a_c

    # --------------------------------------------------------- Q and R in logs
    def _logQ(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log Q(n - k) for ``0 <= k <= n`` removed samples, and an absolute error bound."""
        n, scheme = self.n, self.scheme
        k = np.asarray(k, dtype=np.int64)
        if scheme == "with_replacement":
            x = k / n
            v = self.ns * np.log1p(-x)
            e = 2 * _EPS * (np.abs(v) + self.ns * x / np.maximum(1.0 - x, 1.0 / n))
            return np.where(k >= n, -np.inf, v), np.where(k >= n, 0.0, e)
        if scheme == "binomial":
            v = k * self._logq
            e = k * self._logq_err + _EPS * np.abs(v)
            return v, e
        return self._wor_log_ratio(k, sign=-1)

    def _logR(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log R(n + a) for ``a >= 0`` inserted samples, and an absolute error bound."""
        n, scheme = self.n, self.scheme
        a = np.asarray(a, dtype=np.int64)
        if scheme == "with_replacement":
            x = a / n
            v = self.ns * np.log1p(x)
            e = 2 * _EPS * (np.abs(v) + self.ns * x)
            return v, e
        if scheme == "binomial":
            v = -a * self._logq
            e = a * self._logq_err + _EPS * np.abs(v)
            return v, e
        return self._wor_log_ratio(a, sign=+1)

    def _wor_log_ratio(self, k: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
        """Bagging without replacement.

        ``sign = -1``: ``log C(n - k, ns) / C(n, ns)`` (``-inf`` when ``n - k < ns``).
        ``sign = +1``: ``log C(n + k, ns) / C(n, ns)``.
        """
        n, ns = self.n, self.ns
        k = np.asarray(k, dtype=np.int64)
        kf = k.astype(np.float64)
        if ns <= _NS_DIRECT:
            # sum_{i < ns} log(1 -/+ k / (n - i)): ns terms, each accurate to a few ulps.
            v = np.zeros(k.shape)
            cond = np.zeros(k.shape)
            for i in range(ns):
                x = kf / (n - i)
                if sign < 0:
                    t = np.log1p(-np.minimum(x, 1.0))
                    cond += x / np.maximum(1.0 - x, 1e-300)
                else:
                    t = np.log1p(x)
                    cond += x
                v += t
            e = 4 * _EPS * ((ns + 2) * np.abs(v) + cond)
        else:
            v, e = self._wor_table_lookup(k, sign)
        if sign < 0:
            dead = n - k < ns
            v = np.where(dead, -np.inf, v)
            e = np.where(dead | ~np.isfinite(e), 0.0, e)
        return v, e

    def _wor_table_lookup(self, k: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
        """Large ``ns``: cumulative sums over the removed (or added) samples, else Stirling."""
        n, ns = self.n, self.ns
        kmax = int(k.max()) if k.size else 0
        v = np.empty(k.shape)
        e = np.empty(k.shape)
        small = k <= TABLE_MAX
        if small.any():
            # Sizes rounded up to powers of two (a radius search asks for ever larger k):
            # a handful of tables per setting, not one per block of radii.
            size = 1 << min(kmax, TABLE_MAX).bit_length()
            size = size if size < TABLE_MAX else TABLE_MAX + 1
            # one table per direction: a larger one holds every smaller one's entries
            tab = self._tables.get(sign)
            if tab is None or tab[0].size < size:
                tab = self._tables[sign] = None  # free the smaller table before the larger
                tab = self._tables[sign] = _log_table(n, ns, size, sign)
            cs, err = tab
            ks = k[small]
            v[small] = cs[ks]
            e[small] = err[ks]
        big = ~small
        if big.any():
            v[big], e[big] = _wor_log_ratio_stirling(n, ns, k[big], sign)
        return v, e


# Entries per block of a cumulative table's build: its temporaries stay a few MB, so a
# full table (TABLE_MAX + 1 entries each way) holds 4 x 67 MB, not 0.9 GB of temporaries.
_TABLE_BLOCK = 1 << 20


def _log_table(n: int, ns: int, size: int, sign: int) -> tuple[np.ndarray, np.ndarray]:
    """``cs[k] = log Q(n - k)`` (``sign = -1``) or ``log R(n + k)`` (``sign = +1``) for
    ``0 <= k < size``, as running sums of one term per removed / added sample, and a bound
    on each entry's error; built a block at a time, the same bits as one whole-array pass.
    """
    cs = np.empty(size)
    err = np.empty(size)
    cs[0] = err[0] = 0.0
    carry = _RunningSum()
    cond_sum = 0.0
    for start in range(1, size, _TABLE_BLOCK):
        j = np.arange(start, min(start + _TABLE_BLOCK, size), dtype=np.float64)
        if sign < 0:
            # Q(n - k) = prod_{j < k} (n - ns - j) / (n - j)
            x = ns / (n - (j - 1))
            terms = np.log1p(-np.minimum(x, 1.0))
            cond = x / np.maximum(1.0 - x, 1e-300)
        else:
            # R(n + a) = prod_{j = 1..a} (n + j) / (n + j - ns)
            x = ns / (n + j)
            terms = -np.log1p(-x)
            cond = x / (1.0 - x)
        out, sum_err = carry.add(terms)
        cc = _running(cond, cond_sum)
        cond_sum = cc[-1]
        blk = slice(start, start + j.size)
        cs[blk] = out
        err[blk] = 4 * _EPS * (3 * np.abs(out) + cc) + sum_err
    return cs, err


def _running(t: np.ndarray, s0: float) -> np.ndarray:
    """``s0 + t0, s0 + t0 + t1, ...``, summed left to right as one running sum from ``s0``."""
    s = np.empty(t.size + 1)
    s[0] = s0
    s[1:] = t
    np.cumsum(s, out=s)
    return s[1:]


class _RunningSum:
    """A running sum of terms of one sign fed a block at a time, each prefix with a bound on
    its rounding error (given exact terms); blocks give the same bits as one pass.

    A running sum of ``k`` terms may be off by ``k eps`` times its size in the worst case
    (7e-9 relative at 8 million terms). Knuth's TwoSum recovers each step's rounding error
    exactly; their running sum corrects the prefixes, leaving a few ulps plus a second-order
    ``k^2 eps^2`` times the sum (each step's error is below half an ulp of a prefix, and the
    prefixes grow in size). If numpy's running sum is not the step-by-step one TwoSum
    assumes (checked on every block), that block and every later one get the worst-case bound.
    """

    def __init__(self):
        self.raw = 0.0  # the uncorrected running sum so far
        self.corr = 0.0  # the running sum of its steps' exact rounding errors
        self.count = 0  # terms summed so far
        self.exact = True  # every block so far passed the step-by-step check

    def add(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The prefixes ending at each of the next terms ``t``, and their error bounds."""
        s = np.empty(t.size + 1)
        s[0] = self.raw
        s[1:] = t
        np.cumsum(s, out=s)
        prev, cur = s[:-1], s[1:]
        # a prefix of g + 1 terms: k = g + 3 in the bounds (as a whole-array pass's index + 2)
        k = np.arange(self.count + 3, self.count + 3 + t.size, dtype=np.float64)
        self.raw, self.count = float(s[-1]), self.count + t.size
        p = prev + t
        self.exact = self.exact and np.array_equal(p, cur)
        if not self.exact:
            return cur.copy(), _EPS * k * np.abs(cur)
        with np.errstate(invalid="ignore"):
            bb = p - prev
            p -= bb
            np.subtract(prev, p, out=p)
            bb = np.subtract(t, bb, out=bb)
            q = np.add(p, bb, out=p)  # exact: prev + t == cur + q
        q[~np.isfinite(q)] = 0.0  # a -inf term (a dead prefix) stays -inf
        q = _running(q, self.corr)
        self.corr = float(q[-1]) if q.size else self.corr
        out = np.add(cur, q, out=q)
        return out, _EPS * np.abs(out) * (1.0 + _EPS * k * k)


def _cumsum_with_error(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[0, t0, t0 + t1, ...]`` for terms ``t`` of one sign, and a bound on each prefix's
    rounding error (given exact ``t``): ``_RunningSum`` in one block."""
    out, e = _RunningSum().add(np.asarray(t, dtype=np.float64))
    return np.concatenate([[0.0], out]), np.concatenate([[0.0], e])


def _first_true(pred, rho: np.ndarray, lo: np.ndarray,
                hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised bisection for the first ``a`` in ``[lo, hi]`` where ``pred(a, rho)``'s first
    array holds (``hi`` itself is never tested), and ``pred``'s second array at that point
    (True at an untested ``hi``). The result is ``hi`` or a point where the first held, and
    ``lo`` or one past a point where it failed, whether or not ``pred`` is monotone."""
    lo = lo.copy()
    hi = hi.copy()
    flag = np.ones(lo.shape, dtype=bool)
    t, f = pred(lo, rho)  # already true at lo (the usual case)
    hi = np.where(t, lo, hi)
    flag = np.where(t, f, flag)
    while True:
        idx = np.flatnonzero(lo < hi)
        if not idx.size:
            return lo, flag
        mid = (lo[idx] + hi[idx]) // 2
        t, f = pred(mid, rho[idx])
        hi[idx] = np.where(t, mid, hi[idx])
        flag[idx] = np.where(t, f, flag[idx])
        lo[idx] = np.where(t, lo[idx], mid + 1)


#: Below this, ``_wor_log_ratio_stirling`` takes lgamma itself (Stirling's series to
#: ``x^-5`` is then off by less than ``1 / (1680 x^7)``, far below a float's resolution).
_STIRLING_MIN = 1e4


def _stirling_tail(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``lgamma(x) - [(x - 1/2) log x - x + log(2 pi) / 2]`` for ``x >= _STIRLING_MIN`` and an
    absolute error bound: the series ``1/(12x) - 1/(360x^3) + 1/(1260x^5)``, whose remainder
    is below its first omitted term ``1/(1680x^7)`` for real ``x > 0`` (DLMF 5.11.10)."""
    x2 = x * x
    t = (1.0 / 12.0 - (1.0 / 360.0 - 1.0 / (1260.0 * x2)) / x2) / x
    return t, 8 * _EPS * np.abs(t) + 1.0 / (1680.0 * x2 * x2 * x2 * x)


def _stirling_lead(x: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """``(x - 1/2) log1p(h / x) - h`` and an absolute error bound, without subtracting two
    numbers of size ``h``: with ``u = h / x`` it is ``x (log1p(u) - u) - log1p(u) / 2``, and
    ``log1p(u) - u`` is its series ``-u^2/2 + u^3/3 - ...`` (to ``u^10``; the rest is below
    ``u^11 / 11``) while ``u <= 1/100``. The rounding of ``x`` and ``u`` themselves moves the
    value by less than ``2 eps h min(u, 1)`` (its derivative in ``x`` is below ``u^2``)."""
    u = h / x
    small = u <= 0.01
    us = np.where(small, u, 0.0)
    ser = np.zeros(np.shape(u))
    for j in range(10, 1, -1):  # Horner: sum_{j=2..10} (-1)^(j+1) u^j / j
        ser = (ser + (-1.0) ** (j + 1) / j) * us
    ser = ser * us
    lg = np.log1p(u)
    direct = lg - u
    l2 = np.where(small, ser, direct)
    l2_err = np.where(small, 4 * _EPS * np.abs(ser) + us**11 / 11,
                      2 * _EPS * (np.abs(lg) + u))
    val = x * l2 - 0.5 * lg
    err = (x * l2_err + 2 * _EPS * np.abs(x * l2) + _EPS * np.abs(lg)
           + 2 * _EPS * h * np.minimum(u, 1.0) + _EPS * np.abs(val))
    return val, err


def _wor_log_ratio_stirling(n: int, ns: int, k: np.ndarray,
                            sign: int) -> tuple[np.ndarray, np.ndarray]:
    """Bagging without replacement, many samples removed or added: ``log C(n -/+ k, ns) /
    C(n, ns)`` and an absolute error bound, without lgamma's cancellation.

    With ``a = m - ns + 1`` for ``m = n -/+ k`` and ``b = n - ns + 1``, the ratio is
    ``[lgamma(a + ns) - lgamma(a)] - [lgamma(b + ns) - lgamma(b)]``. Stirling's series turns
    each bracket into ``(x - 1/2) log1p(ns / x) + ns log(x + ns) - ns + tail(x + ns) -
    tail(x)``, so the difference is ``(a - 1/2) log1p(ns / a) - (b - 1/2) log1p(ns / b) + ns
    log((m + 1) / (n + 1))`` plus the tails: terms of size ``ns``, not ``n log n`` (lgamma of
    ``n = 10^12`` is 2.7e13, whose rounding alone moved the log by 0.4). Where ``a`` or ``b`` is
    below ``_STIRLING_MIN`` (``ns`` near ``n``, or all but a few samples removed), lgamma's
    difference with a bound of its cancellation.
    """
    h = float(ns)
    kf = k.astype(np.float64)
    nf = float(n)
    m = nf - kf if sign < 0 else nf + kf
    a = m - h + 1.0
    b = nf - h + 1.0
    v = np.empty(k.shape)
    e = np.empty(k.shape)
    ok = np.minimum(a, b) >= _STIRLING_MIN
    if ok.any():
        ka, aa, ma = kf[ok], a[ok], m[ok]
        # (x - 1/2) log1p(ns / x) - ns for x = a and x = b: the ns cancel exactly
        t_a, e_a = _stirling_lead(aa, h)
        t_b, e_b = _stirling_lead(np.array(b), h)
        t1 = t_a - t_b
        # n + k beyond 2^53 is not a float: a is off by up to 2 ulps of m, and t_a moves by
        # less than log1p(ns / a) per unit of a (R is then far beyond any float anyway)
        e1 = e_a + e_b + _EPS * np.abs(t1) \
            + np.where(ma > 2.0**53, np.log1p(h / aa) * 2 * np.spacing(ma), 0.0)
        x = ka / (nf + 1.0)
        if sign < 0:
            # log((n - k + 1) / (n + 1)): log1p(-x) while x <= 1/2 (condition x / (1 - x) <= 1),
            # else the difference of two logs of exact integers
            near = x <= 0.5
            lg = np.where(near, np.log1p(-np.minimum(x, 0.5)),
                          np.log(np.maximum(ma + 1.0, 1.0)) - math.log(nf + 1.0))
            lg_err = np.where(near, 2 * _EPS * (np.abs(lg) + 2 * x),
                              4 * _EPS * (np.log(np.maximum(ma + 1.0, 1.0)) + math.log(nf + 1.0)))
        else:
            lg = np.log1p(x)
            lg_err = 2 * _EPS * (np.abs(lg) + x)
        t2 = h * lg
        e2 = h * lg_err + _EPS * np.abs(t2)
        sa, sea = _stirling_tail(aa)
        sah, seah = _stirling_tail(aa + h)
        sb, seb = _stirling_tail(np.array(b))
        sbh, sebh = _stirling_tail(np.array(b + h))
        t3 = (sah - sa) - (sbh - sb)
        e3 = sea + seah + seb + sebh + 4 * _EPS * (np.abs(sa) + np.abs(sah) + abs(sb) + abs(sbh))
        val = t1 + t2 + t3
        v[ok] = val
        e[ok] = e1 + e2 + e3 + 4 * _EPS * (np.abs(t1) + np.abs(t2) + np.abs(t3))
    far = ~ok
    if far.any():
        mf = m[far]
        val = gammaln(mf + 1) - gammaln(np.maximum(mf - h + 1, 1)) - gammaln(nf + 1.0) \
            + gammaln(nf - h + 1.0)
        v[far] = val
        # lgamma differences of huge arguments cancel: a generous bound.
        e[far] = 64 * _EPS * (gammaln(np.maximum(mf, nf) + 1.0) + np.abs(val) + 1.0)
    return v, e


def _exp_err(log_err: np.ndarray) -> np.ndarray:
    """Relative error of ``exp(x)`` given an absolute error in ``x`` (plus exp's own ulp)."""
    return np.expm1(np.minimum(log_err, 700.0)) + 2 * _EPS
