"""Benchmark: certifying many test points from their votes, and counting the votes.

Two library calls on a test set of ``--points`` points, ``T = --T`` votes over ``--classes``
classes (vote rows drawn from Dirichlet(0.3) class shares; 2,000 distinct rows, repeated as
real test sets repeat them):

- ``certify.certify`` (bagging with replacement, n = 60,000, ns = 100, P6, alpha = 0.001,
  each ``--method``): seconds;
- ``votes.votes_from_predictions`` of a ``(T, points)`` int16 prediction matrix: seconds and
  the peak of traced memory beyond the predictions.

With ``--baseline-src DIR`` the same cases run in fresh processes on that code's ``src``
beside this one, alternated ``--repeat`` times, and the script checks that both codes give
the same radii, predictions and counts (a SHA-256 of their bytes).

    python benchmarks/bench_votes.py [--points 1000000] [--repeat 2] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from _args import at_least  # benchmarks/_args.py

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import hashlib, json, sys, time, tracemalloc
import numpy as np
from poisoncert import certify as C
from poisoncert.votes import votes_from_predictions

points, T, K, methods = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
rows = np.stack([rng.multinomial(T, p) for p in rng.dirichlet(np.full(K, 0.3), size=2000)])
counts = rows[rng.integers(0, len(rows), points)]
out = {}
for method in methods.split(","):
    t = time.perf_counter()
    cert = C.certify(counts, scheme="with_replacement", n=60000, ns=100, model="P6",
                     alpha=0.001, method=method)
    dt = time.perf_counter() - t
    h = hashlib.sha256(cert.radius.tobytes() + cert.prediction.tobytes()).hexdigest()[:16]
    out["certify " + method] = [dt, None, h]
pred = rng.integers(-1, K, size=(T, points // 10)).astype(np.int16)
tracemalloc.start()
t = time.perf_counter()
v = votes_from_predictions(pred, K)
dt = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1] / 2**20
out[f"votes_from_predictions ({T} x {points // 10})"] = [
    dt, peak, hashlib.sha256(v.tobytes()).hexdigest()[:16]]
print(json.dumps(out))
"""


def _run(src: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    res = subprocess.run([sys.executable, "-c", _CHILD, str(args.points), str(args.T),
                          str(args.classes), args.methods], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=at_least(10), default=10**6)
    ap.add_argument("--T", type=at_least(1), default=1000)
    ap.add_argument("--classes", type=at_least(2), default=10)
    ap.add_argument("--methods", default="pairwise,bonferroni")
    ap.add_argument("--repeat", type=at_least(1), default=2)
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="another code's src folder, run alternately beside this one")
    args = ap.parse_args()
    codes = {"this code": ROOT / "src"}
    if args.baseline_src is not None:
        if not (args.baseline_src / "poisoncert").is_dir():
            ap.error(f"--baseline-src: no poisoncert package in '{args.baseline_src}'")
        codes = {"baseline": args.baseline_src, **codes}
    print(f"{args.points:,} test points, T = {args.T}, {args.classes} classes; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    results: dict[str, dict[str, list]] = {name: {} for name in codes}
    for _ in range(args.repeat):
        for name, src in codes.items():
            for case, (dt, peak, h) in _run(src, args).items():
                results[name].setdefault(case, []).append((dt, peak, h))
    print("| case | " + " | ".join(f"{n}: s (peak MiB)" for n in codes) + " | same bytes |")
    print("|---|" + "---|" * len(codes) + "---|")
    for case in results["this code"]:
        cells, hashes = [], set()
        for name in codes:
            runs = results[name][case]
            hashes.update(h for _, _, h in runs)
            cells.append(" / ".join(f"{dt:.2f}" + ("" if pk is None else f" ({pk:.0f})")
                                    for dt, pk, _ in runs))
        print(f"| {case} | " + " | ".join(cells) + f" | {'yes' if len(hashes) == 1 else 'NO'} |")


if __name__ == "__main__":
    main()
