"""Simulation: error rate and power of the vote-bound methods (``poisoncert.stats``).

Part 1 (``--part errors``): per setting (class probabilities, ``T``), ``--draws`` vote vectors
``~ Multinomial(T, p)`` (probabilities summing below 1 leave the rest to abstaining votes); per
method, the rate at which the certified gap ``p1_lower - p2_upper`` exceeds the true gap
``Pr(c1) - max over c != c1 of Pr(c)`` of the chosen class (the event each method bounds by
alpha), its binomial standard error, and for the methods that bound ``p1`` and ``p2`` one by
one the rate at which either bound is wrong.

Part 2 (``--part power``): the same draws certified with binomial selection (n = 60,000,
ns = 30, P6) at ``--alpha-power``; per method the fraction of draws certified and the mean
radius (0 where not certified). This is the measurement behind ``stats.auto_method``.

    python benchmarks/sim_vote_bounds.py [--part errors|power|both] [--draws 100000]
"""

from __future__ import annotations

import argparse

import numpy as np
from _args import at_least  # benchmarks/_args.py

from poisoncert.bounds import SelectionBound
from poisoncert.stats import vote_bounds

ERROR_SETTINGS = [
    ("C=2 tie 0.5/0.5", [0.5, 0.5], 100),
    ("C=2 close 0.55/0.45", [0.55, 0.45], 50),
    ("C=2 0.7/0.3", [0.7, 0.3], 200),
    ("C=2 with 20% abstaining 0.45/0.35", [0.45, 0.35], 100),
    ("C=10 all equal (ties)", [0.1] * 10, 100),
    ("C=10 tied top 0.4/0.4", [0.4, 0.4] + [0.025] * 8, 200),
    ("C=10 close 0.3/0.28/0.27", [0.3, 0.28, 0.27] + [0.15 / 7] * 7, 100),
    ("C=10 runner-up 0.45/0.35", [0.45, 0.35] + [0.025] * 8, 200),
    ("C=10 dominant 0.6", [0.6, 0.06, 0.05, 0.05, 0.05, 0.05, 0.04, 0.04, 0.03, 0.03], 50),
]
ERROR_METHODS = ["bonferroni", "bonferroni_upper", "pairwise", "auto", "paper"]
POWER_METHODS = ["bonferroni", "bonferroni_upper", "pairwise"]


def draw(probs, T, n, seed):
    probs = np.asarray(probs, dtype=float)
    rng = np.random.default_rng(seed)
    return rng.multinomial(T, [*probs, max(0.0, 1.0 - probs.sum())], size=n)[:, :-1], probs


def errors(args) -> None:
    print(f"alpha = {args.alpha}, {args.draws:,} draws per setting (seed 0); rates in %, "
          "(standard error); 'either bound wrong' only for methods bounding p1 and p2 one by "
          "one\n")
    print("| setting | T | method | gap above the true gap | either bound wrong | certified |")
    print("|---|---|---|---|---|---|")
    for name, probs, T in ERROR_SETTINGS:
        counts, p = draw(probs, T, args.draws, 0)
        rows = np.arange(len(counts))
        for method in ERROR_METHODS:
            vb = vote_bounds(counts, alpha=args.alpha, method=method, T=T)
            others = np.broadcast_to(p, counts.shape).copy()
            others[rows, vb.top_class] = -np.inf
            true_gap = p[vb.top_class] - others.max(axis=1)
            err = np.mean(vb.gap > true_gap)
            se = np.sqrt(max(err, 1e-12) * (1 - err) / len(counts))
            if vb.method == "pairwise":
                wrong = "n/a"
            else:
                bad = (vb.p1_lower > p[vb.top_class]) | (vb.p2_upper < others.max(axis=1))
                wrong = f"{100 * np.mean(bad):.3f}"
            shown = method if method == vb.method else f"{method} ({vb.method})"
            flag = " **> alpha**" if err - 3 * se > args.alpha else ""
            print(f"| {name} | {T} | {shown} | {100 * err:.3f} ({100 * se:.3f}){flag} | "
                  f"{wrong} | {100 * np.mean(vb.gap > 0):.1f} |")


def power(args) -> None:
    bound = SelectionBound("binomial", 60_000, ns=30, model="P6")
    print(f"\nalpha = {args.alpha_power}, {args.draws_power:,} draws per setting, binomial "
          "selection n = 60,000, ns = 30, P6; certified % / mean radius (0 if not certified)\n")
    print("| C | T | p1 | rest | " + " | ".join(POWER_METHODS) + " | best |")
    print("|---|---|---|---|" + "---|" * (len(POWER_METHODS) + 1))
    wins = {}
    for C in (2, 3, 5, 10):
        for T in (100, 1000):
            for p1 in (0.99, 0.9, 0.7, 0.55, 0.45):
                for rest in ("one runner-up", "spread"):
                    if C == 2 and rest == "spread":
                        continue
                    if C == 2 and p1 < 0.5:
                        continue
                    if C == 2:
                        probs = [p1, 1 - p1]
                    elif rest == "one runner-up":
                        probs = [p1, (1 - p1) * 0.8] + [(1 - p1) * 0.2 / (C - 2)] * (C - 2)
                    else:
                        probs = [p1] + [(1 - p1) / (C - 1)] * (C - 1)
                    counts, _ = draw(probs, T, args.draws_power, 1)
                    cells, score = [], {}
                    for method in POWER_METHODS:
                        vb = vote_bounds(counts, alpha=args.alpha_power, method=method, T=T)
                        ok = vb.gap > 0
                        rad = np.where(ok, bound.radius(np.where(ok, vb.gap, 0.5)), 0)
                        score[method] = (ok.mean(), rad.mean())
                        cells.append(f"{100 * ok.mean():.1f} / {rad.mean():.0f}")
                    best = max(score, key=lambda m: (round(score[m][1], 6), score[m][0]))
                    top = [m for m in POWER_METHODS if score[m] == score[best]]
                    wins.setdefault(C, []).append(best if len(top) == 1 else "tie")
                    print(f"| {C} | {T} | {p1} | {rest} | " + " | ".join(cells) +
                          f" | {best if len(top) == 1 else 'tie'} |")
    print("\nbest method by mean radius, per number of classes:")
    for C, w in wins.items():
        print(f"  C = {C}: " + ", ".join(f"{m} {w.count(m)}" for m in sorted(set(w))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["errors", "power", "both"], default="both")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--draws", type=at_least(1), default=100_000)
    ap.add_argument("--alpha-power", type=float, default=0.001)
    ap.add_argument("--draws-power", type=at_least(1), default=2_000)
    args = ap.parse_args()
    if args.part in ("errors", "both"):
        import warnings

        # the 'paper' method warns on every call that it is not sound with abstentions or
        # ties: measuring exactly that is this part's point, so the warning is said once here
        print("(the 'paper' rows measure a method poisoncert warns against: valid only for two "
              "classes with no abstaining votes, it can err more often than alpha otherwise)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*paper.*", category=UserWarning)
            errors(args)
    if args.part in ("power", "both"):
        power(args)


if __name__ == "__main__":
    main()
