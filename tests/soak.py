"""Soak the certificates' exactness and property tests: more, and new, cases than CI runs.

    python tests/soak.py        # factor 20, 200 oracle settings, 1000 CP cases, 1000 radii
    python tests/soak.py --factor 100 --oracle-cases 1000 --seed 7

1. Every Hypothesis property test of the certificate modules (``test_bounds``,
   ``test_runoff``, ``test_aggregation``) with ``--factor`` times the examples CI gives it,
   fresh random examples each run (``--seed`` repeats one), no example database written.
2. The exhaustive-enumeration oracle of ``tests/test_bounds.py`` (every sub-dataset of D and
   D' enumerated in exact rational arithmetic, every attack of every model) on random small
   settings beyond its 12 fixed ones: without replacement n <= 9, ns <= 4; with replacement
   n <= 6, ns <= 3; binomial n <= 6 with a random rational p (redrawn where the test's table
   up to rho = n + 2 would not reach every gap); all six poisoning models. The radius may
   never exceed the exact one, and equals it away from ties.
3. The seeded brute-force attack searches, reseeded, with ``--factor`` times their cases: kNN
   (C = 2 and 3, every model and unit), Finite Aggregation with d > 1, Run-Off Election.
4. The Clopper-Pearson bounds (every vote bound and so every gap rests on them) on
   ``--cp-cases`` random ``(k, T, beta)``: T log-uniform in 1..20,000, k uniform in 0..T,
   beta log-uniform in 1e-15..0.5; each on the safe side of the exact binomial quantile
   (60-digit sums) and within a relative 3e-12 of it (``test_stats.check_clopper_pearson_
   exactly``).
5. The radius on ``--mp-cases`` random large settings against 60-digit arithmetic
   (``test_bounds.check_radius_in_60_digits``): each scheme and poisoning model, n
   log-uniform in 100..10^9, the gap uniform in (0.001, 0.999), ns chosen for a radius of
   about 1..2,000 (log-uniform); exact delta(r) < gap (sound) and delta(r + 1) >= gap (not
   smaller than exact). This is where floating point matters most: n large, delta =
   1 + R - 2Q cancelling. Every fourth setting is bagging without replacement with n
   log-uniform in 10^10..10^12 and ns in 1025..31,623, where radii pass ``TABLE_MAX`` and
   ``Q`` and ``R`` come from Stirling differences.

The default run took 290 s on the 2-core AMD EPYC development machine before the 60-digit
section was added, which took 58.5 s per 2,000 P6 radii there.

Prints one line per test (examples, seconds) and exits 1 at the first failure, with the
falsifying example. Not part of CI (its time is unbounded by design); a soak's result goes
into the note of the change that ran it.
"""

from __future__ import annotations

import argparse
import importlib
import math
import random
import sys
import time
from fractions import Fraction
from pathlib import Path

from hypothesis import seed as hypothesis_seed
from hypothesis import settings

from poisoncert.bounds import MODELS, certified_radius

HERE = Path(__file__).resolve().parent
MODULES = ("test_bounds", "test_runoff", "test_aggregation")
SCHEMES = ("without_replacement", "with_replacement", "binomial")


def _tests(name: str):
    """The test module ``name`` of this folder."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return importlib.import_module(name)


def _progress(label: str, unit: str, done: int, total: int, every: int, t0: float) -> None:
    """``label: done/total unit, seconds`` every ``every`` and at the end."""
    if done % every == 0 or done == total:
        print(f"{label}: {done}/{total} {unit}, {time.perf_counter() - t0:.1f} s", flush=True)


def property_tests(modules=MODULES):
    """``(module name, test name, test)`` for every Hypothesis test of ``modules``."""
    for name in modules:
        mod = _tests(name)
        for attr in sorted(vars(mod)):
            fn = getattr(mod, attr)
            if attr.startswith("test_") and hasattr(fn, "hypothesis"):
                yield name, attr, fn


def soak_property(fn, factor: int, seed: int | None) -> int:
    """Run the Hypothesis test ``fn`` with ``factor`` times its examples; their number."""
    base = fn._hypothesis_internal_use_settings
    had_seed = hasattr(fn, "_hypothesis_internal_use_seed")
    old_seed = getattr(fn, "_hypothesis_internal_use_seed", None)
    n = base.max_examples * factor
    fn._hypothesis_internal_use_settings = settings(base, max_examples=n, database=None,
                                                    derandomize=False)
    try:
        (hypothesis_seed(seed)(fn) if seed is not None else fn)()
    finally:  # the test as it was (a soak inside pytest leaves no fixed seed behind)
        fn._hypothesis_internal_use_settings = base
        if had_seed:
            fn._hypothesis_internal_use_seed = old_seed
        elif hasattr(fn, "_hypothesis_internal_use_seed"):
            del fn._hypothesis_internal_use_seed
    return n


def oracle_setting(rng: random.Random, tb):
    """A random small ``(scheme, n, ns, p)`` the enumeration oracle can afford, and whose
    table up to ``rho = n + 2`` (the test's) reaches every gap: P1's exact delta (the slowest
    growing of the uncapped models) at least 1 there. Redrawn otherwise (a binomial p below
    about 0.16 at n = 2: delta(rho) = (1 - p)^-rho - 1 grows too slowly)."""
    while True:
        case = _draw_setting(rng)
        if tb._oracle_delta(*case, "P1", case[1] + 2) >= 1:
            return case


def _draw_setting(rng: random.Random):
    scheme = rng.choice(SCHEMES)
    if scheme == "without_replacement":
        n = rng.randint(2, 9)
        return scheme, n, rng.randint(1, min(4, n - 1)), None
    if scheme == "with_replacement":
        n = rng.randint(2, 6)
        return scheme, n, rng.randint(1, 3), None
    m = rng.randint(2, 12)
    return scheme, rng.randint(2, 6), None, Fraction(rng.randint(1, m - 1), m)


def soak_oracle(cases: int, seed: int) -> None:
    """The exhaustive-enumeration oracle on ``cases`` random small settings, every model."""
    tb = _tests("test_bounds")
    rng = random.Random(seed)
    t0 = time.perf_counter()
    for i in range(cases):
        case = oracle_setting(rng, tb)
        for model in MODELS:
            try:
                tb.test_delta_matches_exhaustive_enumeration(*case, model)
            except AssertionError:
                print(f"FAILED: the enumeration oracle at {case}, {model}", flush=True)
                raise
        _progress("oracle", "settings x 6 models", i + 1, cases, 25, t0)


def searches(factor: int, seed: int):
    """``(name, run)`` for each seeded brute-force search; ``run()`` returns its cases."""
    import numpy as np

    def rng(k: int):  # one stream per search, all from the soak's seed
        return np.random.default_rng([seed, k])

    def knn(C: int, k: int):
        def run():
            n = (60 if C == 2 else 30) * factor
            _tests("test_knn").knn_against_brute_force(C, rng(k), n)
            return n
        return run

    def fa():
        _tests("test_aggregation").fa_against_brute_force(rng(3), 25 * factor)
        return 3 * 25 * factor

    def roe():
        _tests("test_runoff").roe_against_brute_force(rng(4), 500 * factor)
        return 500 * factor

    return [("test_knn::knn_against_brute_force[C=2]", knn(2, 1)),
            ("test_knn::knn_against_brute_force[C=3]", knn(3, 2)),
            ("test_aggregation::fa_against_brute_force", fa),
            ("test_runoff::roe_against_brute_force", roe)]


def soak_clopper_pearson(cases: int, seed: int) -> None:
    """The Clopper-Pearson bounds on ``cases`` random ``(k, T, beta)`` against exact tails."""
    ts = _tests("test_stats")
    rng = random.Random(seed + 1)
    t0 = time.perf_counter()
    for i in range(cases):
        T = round(10 ** rng.uniform(0, math.log10(20_000)))
        k = rng.randint(0, T)
        beta = 10 ** rng.uniform(-15, math.log10(0.5))
        ts.check_clopper_pearson_exactly(k, T, beta)
        _progress("clopper-pearson", "cases", i + 1, cases, 500, t0)


def soak_radii(cases: int, seed: int) -> None:
    """Radii of every scheme and model on ``cases`` random large settings in 60 digits."""
    tb = _tests("test_bounds")
    rng = random.Random(seed + 2)
    t0, done = time.perf_counter(), 0
    while done < cases:
        scheme, model = rng.choice(SCHEMES), rng.choice(MODELS)
        gap = rng.uniform(0.001, 0.999)
        huge = done % 4 == 3
        if huge:  # ns > 1024 and radii past TABLE_MAX: the Stirling differences
            scheme = "without_replacement"
            n = round(10 ** rng.uniform(10, 12))
            ns = round(10 ** rng.uniform(math.log10(1025), 4.5))
        else:
            n = round(10 ** rng.uniform(2, 9))
            target = 10 ** rng.uniform(0, math.log10(2000))
            ns = max(1, min(n - 1, round(gap * n / (2 * target))))
        r = certified_radius(gap, scheme=scheme, n=n, ns=ns, model=model)
        # the 60-digit maximum over insertions loops over r, except without replacement
        if r < 0 or (r >= 3000 and scheme != "without_replacement"):
            continue
        tb.check_radius_in_60_digits(scheme, n, ns, gap, r, model)
        done += 1
        _progress("60 digits", "radii", done, cases, 500, t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--factor", type=int, default=20,
                   help="times the examples CI runs (at least 1)")
    p.add_argument("--oracle-cases", type=int, default=200,
                   help="random settings for the enumeration oracle (0 to skip)")
    p.add_argument("--cp-cases", type=int, default=1000,
                   help="random Clopper-Pearson cases (0 to skip)")
    p.add_argument("--mp-cases", type=int, default=1000,
                   help="random large settings checked in 60 digits (0 to skip)")
    p.add_argument("--seed", type=int, default=None, help="repeat a soak (default: fresh)")
    p.add_argument("-k", default="", help="only tests whose name contains this")
    args = p.parse_args(argv)
    if args.factor < 1:
        p.error(f"--factor: at least 1, got {args.factor}")
    for name in ("oracle_cases", "cp_cases", "mp_cases"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')}: at least 0, got {getattr(args, name)}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"soak: factor {args.factor}, {args.oracle_cases} oracle settings, {args.cp_cases} "
          f"Clopper-Pearson cases, {args.mp_cases} 60-digit radii, seed {seed}", flush=True)
    t_all = time.perf_counter()
    for mod, name, fn in property_tests():
        if args.k in name:
            t0 = time.perf_counter()
            n = soak_property(fn, args.factor, seed)
            print(f"{mod}::{name}: {n} examples, {time.perf_counter() - t0:.1f} s", flush=True)
    if args.oracle_cases and args.k in "test_delta_matches_exhaustive_enumeration":
        soak_oracle(args.oracle_cases, seed)
    for name, run in searches(args.factor, seed):
        if args.k in name:
            t0 = time.perf_counter()
            cases = run()
            print(f"{name}: {cases} cases, {time.perf_counter() - t0:.1f} s", flush=True)
    if args.cp_cases and args.k in "check_clopper_pearson_exactly":
        soak_clopper_pearson(args.cp_cases, seed)
    if args.mp_cases and args.k in "check_radius_in_60_digits":
        soak_radii(args.mp_cases, seed)
    print(f"soak passed in {time.perf_counter() - t_all:.1f} s (seed {seed})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
