"""Benchmark: the deterministic-aggregation and nearest-neighbour certificates at realistic sizes.

Synthetic ensembles: ``T`` base classifiers, ``n_test`` test points, 10 classes. Each test point
has a label, a confusable class and a difficulty; each classifier's class scores are Gaussian
noise plus a bonus for the label and a smaller one for the confusable class, so votes range from
unanimous to split (at T = 1200: 73% base accuracy, 95% vote accuracy, median certified DPA
radius about 400, near an MNIST DPA ensemble at k = 1200). Times are the median of
``--repeat`` runs of each certificate function on the same input (rankings and votes made
once, their conversion timed separately). With ``--knn``, kNN / rNN on MNIST pixels (60,000
training images, the first ``--knn-test`` test images): exact search and certificates.

    python benchmarks/bench_aggregation.py [--T 1200] [--n-test 10000] [--repeat 3] [--knn]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from _args import at_least  # benchmarks/_args.py

from poisoncert.aggregation import fa_certify
from poisoncert.certify import dpa_certify
from poisoncert.runoff import rankings_from_scores, roe_certify


def timed(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def synthetic_ranks(T, n, C, seed=0, block=500):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, C, size=n)
    confuser = (label + rng.integers(1, C, size=n)) % C
    strength = 3.5 * rng.beta(3, 1, size=n)
    confusion = 2.0 * rng.random(n)
    ranks = np.empty((T, n, C), dtype=np.int8)
    conv = 0.0
    for s in range(0, n, block):
        sl = slice(s, min(s + block, n))
        m = np.arange(sl.stop - s)
        scores = rng.standard_normal((T, sl.stop - s, C)).astype(np.float32)
        scores[:, m, label[sl]] += strength[sl]
        scores[:, m, confuser[sl]] += confusion[sl]
        t0 = time.perf_counter()
        ranks[:, sl] = rankings_from_scores(scores)
        conv += time.perf_counter() - t0
    return ranks, label, conv


def _med(cert, label) -> float:
    return float(np.median(np.where(cert.prediction == label, cert.radius, -1)))


def aggregation(args):
    C = 10
    ranks, label, conv = synthetic_ranks(args.T, args.n_test, C)
    votes = np.argmin(ranks, axis=2).astype(np.int16)
    counts = np.stack([(votes == c).sum(axis=0) for c in range(C)], axis=1)
    print(f"T = {args.T}, n_test = {args.n_test:,}, C = {C}, median of {args.repeat}; "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(f"rankings_from_scores (float32 scores -> int8 ranks): {conv:.2f} s\n")
    print("| certificate | d | s | median certified radius (DPA unit; -1 if wrong) | accuracy |")
    print("|---|---|---|---|---|")
    t, dpa = timed(lambda: dpa_certify(counts, unit="dpa"), args.repeat)
    print(f"| DPA (dpa_certify, counts) | 1 | {t:.3f} | {_med(dpa, label):.0f} | "
          f"{np.mean(dpa.prediction == label):.4f} |")
    for d in args.d:
        t, fa = timed(lambda d=d: fa_certify(votes, d=d, n_classes=C, unit="dpa"), args.repeat)
        print(f"| FA (fa_certify) | {d} | {t:.3f} | {_med(fa, label):.0f} | "
              f"{np.mean(fa.prediction == label):.4f} |")
        t, roe = timed(lambda d=d: roe_certify(ranks, d=d, unit="dpa"), args.repeat)
        print(f"| ROE (roe_certify) | {d} | {t:.3f} | {_med(roe, label):.0f} | "
              f"{np.mean(roe.prediction == label):.4f} |")


def nearest(args):
    from poisoncert.data import load_dataset
    from poisoncert.knn import knn_certify, nearest_labels, rnn_certify, rnn_votes

    x_train, y_train, x_test, y_test = _mnist_arrays(load_dataset("mnist"))
    x_test, y_test = x_test[: args.knn_test], y_test[: args.knn_test]
    k = args.k
    print(f"\nMNIST pixels as integers 0-255 (exact distances), 60,000 training images, "
          f"{len(x_test):,} test images, k = {k}, depth {2 * k}, r = {args.r}")
    print("| step | s | result |")
    print("|---|---|---|")
    t, (labels, _) = timed(lambda: nearest_labels(x_train, y_train, x_test, 2 * k), 1)
    print(f"| nearest_labels (exact search, depth 2k) | {t:.1f} | |")
    for model, unit in (("P6", "operation"), ("P1", "operation"), ("P6", "dpa")):
        t, c = timed(lambda m=model, u=unit: knn_certify(labels, k=k, n_classes=10, model=m,
                                                           unit=u), args.repeat)
        print(f"| knn_certify {model} {unit} | {t:.3f} | accuracy "
              f"{np.mean(c.prediction == y_test):.4f}, median radius {np.median(c.radius):.0f} |")
    t, counts = timed(lambda: rnn_votes(x_train, y_train, x_test, args.r, n_classes=10), 1)
    c = rnn_certify(counts, model="P6")
    print(f"| rnn_votes + rnn_certify P6 | {t:.1f} | accuracy "
          f"{np.mean(c.prediction == y_test):.4f}, abstain {np.mean(c.prediction < 0):.3f}, "
          f"median radius {np.median(c.radius):.0f} |")


def _mnist_arrays(ds):
    x_train = np.rint(np.asarray(ds.x_train) * 255).reshape(len(ds.x_train), -1)
    x_test = np.rint(np.asarray(ds.x_test) * 255).reshape(len(ds.x_test), -1)
    return x_train, np.asarray(ds.y_train), x_test, np.asarray(ds.y_test)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=at_least(1), default=1200)
    ap.add_argument("--n-test", type=at_least(1), default=10_000)
    ap.add_argument("--d", type=at_least(1), nargs="+", default=[1, 8])
    ap.add_argument("--repeat", type=at_least(1), default=3)
    ap.add_argument("--knn", action="store_true")
    ap.add_argument("--knn-test", type=at_least(1), default=10_000)
    ap.add_argument("--k", type=at_least(1), default=100)
    ap.add_argument("--r", type=float, default=1500.0)
    args = ap.parse_args()
    bad = [d for d in args.d if args.T % d]
    if bad:  # finite aggregation has k * d classifiers: T must be a multiple of every d
        ap.error(f"argument --d: every d must divide --T ({args.T}); got {bad}")
    aggregation(args)
    if args.knn:
        nearest(args)


if __name__ == "__main__":
    main()
