"""Benchmark: certified radii for 10^6 gaps (issue 2's acceptance figure).

Cases: n = 60,000, ns = 30, P6, each scheme; and n = 10^7, ns = 1, P6, each scheme.
Gaps are uniform in (0, 1), all distinct (the worst case: real vote counts give far fewer
distinct gaps). Each case is timed `--repeat` times from a cold `SelectionBound` (no caches
carried over); the median and min are printed as a markdown table.

    python benchmarks/bench_bounds.py [--repeat 5] [--gaps 1000000]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from _args import at_least  # benchmarks/_args.py

from poisoncert.bounds import SCHEMES, SelectionBound


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=at_least(1), default=5)
    ap.add_argument("--gaps", type=at_least(1), default=10**6)
    args = ap.parse_args()
    gaps = np.random.default_rng(0).random(args.gaps)
    print(f"{args.gaps:,} gaps, {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}\n")
    print("| n | ns | scheme | median s | min s | max radius |")
    print("|---|---|---|---|---|---|")
    for n, ns in [(60_000, 30), (10**7, 1)]:
        for scheme in SCHEMES:
            times = []
            for _ in range(args.repeat):
                b = SelectionBound(scheme, n, ns=ns, model="P6")
                t0 = time.perf_counter()
                r = b.radius(gaps)
                times.append(time.perf_counter() - t0)
            print(f"| {n:,} | {ns} | {scheme} | {statistics.median(times):.3f} | "
                  f"{min(times):.3f} | {int(r.max()):,} |")


if __name__ == "__main__":
    main()
