"""Benchmark: certified radii for 10^6 gaps (issue 2's acceptance figure).

Cases: n = 60,000, ns = 30, P6, each scheme; and n = 10^7, ns = 1, P6, each scheme.
Gaps are uniform in (0, 1), all distinct (the worst case: real vote counts give far fewer
distinct gaps). Each case is timed `--repeat` times from a cold `SelectionBound` (no caches
carried over); the median and min are printed as a markdown table. `--case N,NS,MODEL` (any
number of times) times bagging without replacement at other settings instead.

    python benchmarks/bench_bounds.py [--repeat 5] [--gaps 1000000]
    python benchmarks/bench_bounds.py --gaps 2000 --case 1000000000,1000,P6
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from _args import at_least  # benchmarks/_args.py

from poisoncert.bounds import MODELS, SCHEMES, SelectionBound


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=at_least(1), default=5)
    ap.add_argument("--gaps", type=at_least(1), default=10**6)
    ap.add_argument("--case", type=_case, action="append", default=[],
                    help="N,NS,MODEL: bagging without replacement at this setting")
    args = ap.parse_args()
    gaps = np.random.default_rng(0).random(args.gaps)
    print(f"{args.gaps:,} gaps, {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}\n")
    print("| n | ns | scheme | model | median s | min s | max radius |")
    print("|---|---|---|---|---|---|---|")
    cases = args.case or [(n, ns, scheme, "P6") for n, ns in [(60_000, 30), (10**7, 1)]
                          for scheme in SCHEMES]
    for n, ns, scheme, model in cases:
        times = []
        for _ in range(args.repeat):
            b = SelectionBound(scheme, n, ns=ns, model=model)
            t0 = time.perf_counter()
            r = b.radius(gaps)
            times.append(time.perf_counter() - t0)
        print(f"| {n:,} | {ns} | {scheme} | {model} | {statistics.median(times):.3f} | "
              f"{min(times):.3f} | {int(r.max()):,} |", flush=True)


def _case(text: str) -> tuple[int, int, str, str]:
    parts = text.split(",")
    try:
        n, ns, model = int(parts[0]), int(parts[1]), parts[2]
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"must be N,NS,MODEL (e.g. 1000000000,1000,P6); "
                                         f"got {text!r}") from None
    if len(parts) != 3 or not 1 <= ns <= n or model not in MODELS:
        raise argparse.ArgumentTypeError(f"must be N,NS,MODEL with 1 <= NS <= N and MODEL one "
                                         f"of {', '.join(MODELS)}; got {text!r}")
    return n, ns, "without_replacement", model


if __name__ == "__main__":
    main()
