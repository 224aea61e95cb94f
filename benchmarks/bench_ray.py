"""Benchmark: one ensemble with the local executor (1 and 2 workers) and with Ray (issue 5).

Trains the same run (default: MNIST 1/7, T = 160 MLPs, ns = 30, 100 steps, chunks of 16, two
engine groups of 8 each on the CPU) with

* ``LocalExecutor(1)`` (in this process) and ``LocalExecutor(2)`` (two spawned processes);
* ``RayExecutor`` with 1 and 2 workers on a local Ray instance (started once and timed on its
  own), twice for 2 workers: cold (fresh worker processes: they import torch and load the data)
  and warm (Ray reuses its idle workers, so this is the steady state of a long run);

checks that every run gives bit-identical predictions, and measures the per-chunk cost (the
chunks' own timers in the warm 1-worker Ray run), Ray's start-up and its per-task overhead
(``--noop`` empty tasks through ``RayExecutor.map_chunks``). Prints markdown tables and the
scaling model

    time(N) ~= startup + warm-up + ceil(C / N) * per_chunk      (C chunks on N workers)

evaluated for ``--project-T`` classifiers, with its inputs. Keep it small on a shared machine.

    python benchmarks/bench_ray.py [--dataset mnist17] [--T 160] [--steps 100] [--chunk-size 16]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _args import at_least  # benchmarks/_args.py

from poisoncert import experiment, runs
from poisoncert.config import from_dict
from poisoncert.executors import LocalExecutor
from poisoncert.ray_executor import RayExecutor


class Recording:
    """Wraps an executor; records each chunk's own training time (``ChunkResult.seconds``)."""

    def __init__(self, inner):
        self.inner, self.workers, self.chunk_seconds = inner, inner.workers, []

    def map_chunks(self, fn, chunk_ids):
        for res in self.inner.map_chunks(fn, chunk_ids):
            self.chunk_seconds.append(res.seconds)
            yield res


def _noop(chunk_id: int) -> int:
    return chunk_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="mnist17")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--T", type=at_least(1), default=160)
    ap.add_argument("--ns", type=at_least(1), default=30)
    ap.add_argument("--steps", type=at_least(1), default=100)
    ap.add_argument("--chunk-size", type=at_least(1), default=16)
    ap.add_argument("--test-limit", type=at_least(1), default=None)
    ap.add_argument("--noop", type=at_least(1), default=200,
                    help="empty Ray tasks for the overhead")
    ap.add_argument("--project-T", type=at_least(1), default=1000)
    ap.add_argument("--project-chunk-size", type=at_least(1), default=50)
    args = ap.parse_args()

    cfg = from_dict({
        "data": {"name": args.dataset, "test_limit": args.test_limit},
        "selection": {"scheme": "without_replacement", "ns": args.ns, "T": args.T, "seed": 0},
        "training": {"model": args.model, "steps": args.steps, "optimizer": "adam",
                     "lr": 1e-3, "batch_size": 32},
        "run": {"chunk_size": args.chunk_size},
    })
    import ray
    import torch

    print(f"{args.dataset}, T = {args.T} {args.model}, ns = {args.ns}, {args.steps} steps, "
          f"chunks of {args.chunk_size}; {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), torch {torch.__version__}, "
          f"ray {ray.__version__}\n")
    load0 = os.getloadavg()[0]
    experiment.split_data(cfg.data)  # warm this process (imports, file cache)
    rows, preds, timers = [], {}, {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))

    def run(name: str, executor) -> float:
        rec = Recording(executor)
        t0 = time.perf_counter()
        res = experiment.train_run(cfg, tmp / name.replace(" ", "-"), executor=rec)
        wall = time.perf_counter() - t0
        preds[name] = res.predictions
        timers[name] = rec.chunk_seconds
        rows.append((name, executor.workers, wall, statistics.median(rec.chunk_seconds)))
        print(f"  {name}: {wall:.2f} s", flush=True)
        return wall

    try:  # the temporary runs and a local Ray go whatever happens
        run("local 1", LocalExecutor(1))
        run("local 2", LocalExecutor(2))
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 _node_ip_address="127.0.0.1", logging_level=logging.WARNING)
        startup = time.perf_counter() - t0
        run("ray 2 (cold)", RayExecutor(workers=2))
        run("ray 2 (warm)", RayExecutor(workers=2))
        run("ray 1 (warm)", RayExecutor(workers=1))
        overhead = {}
        for w in (1, 2):
            list(RayExecutor(workers=w).map_chunks(_noop, range(10)))  # warm
            t0 = time.perf_counter()
            out = list(RayExecutor(workers=w).map_chunks(_noop, range(args.noop)))
            overhead[w] = (time.perf_counter() - t0) / args.noop
            assert sorted(out) == list(range(args.noop))
        t0 = time.perf_counter()
        ray.shutdown()
        shutdown = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if ray.is_initialized():
            ray.shutdown()
    ref = preds["local 1"]
    same = all(np.array_equal(p, ref) for p in preds.values())
    assert same, "predictions differ between executors"
    C = len(timers["local 1"])
    per_chunk = timers["ray 1 (warm)"]
    c = statistics.median(per_chunk)
    models = args.T / C  # per chunk
    base = rows[0][2]
    print("\n| executor | workers | wall s | speed-up vs local 1 | models/s | median chunk s |")
    print("|---|---|---|---|---|---|")
    for name, w, wall, med in rows:
        print(f"| {name} | {w} | {wall:.2f} | {base / wall:.2f} | {args.T / wall:.1f} "
              f"| {med:.2f} |")
    print(f"\nPredictions bit-identical across all {len(preds)} runs: {same}. Load average "
          f"(1 min) {load0:.2f} before, {os.getloadavg()[0]:.2f} after (other processes "
          f"sharing the {os.cpu_count()} CPUs).")
    cold, warm = rows[2][2], rows[3][2]
    warmup = max(0.0, cold - warm)
    print("\n| quantity | value |\n|---|---|")
    print(f"| chunks C | {C} |")
    print(f"| per-chunk cost c (median, warm Ray worker, {models:g} models) | {c:.3f} s |")
    print(f"| per-model cost | {c / models * 1000:.1f} ms |")
    print(f"| Ray start-up (ray.init, local, 2 CPUs) | {startup:.2f} s |")
    print(f"| Ray worker warm-up (cold run - warm run, 2 workers) | {warmup:.2f} s |")
    for w in (1, 2):
        print(f"| Ray per-task overhead, {w} worker(s) ({args.noop} empty tasks: wall / "
              f"tasks) | {overhead[w] * 1000:.1f} ms |")
    print(f"| Ray shutdown | {shutdown:.2f} s |")

    big = runs.chunk_ranges(args.project_T, args.project_chunk_size, cfg.training.models_per_group)
    C_big, size_big = len(big), big[0][1] - big[0][0]
    c_big = c / models * size_big
    print(f"\nProjection: T = {args.project_T}, chunks of {size_big} "
          f"(C = {C_big}, c = {c_big:.2f} s per chunk), "
          f"time(N) = {startup:.1f} + {warmup:.1f} + ceil({C_big} / N) * "
          f"({c_big:.2f} + {overhead[1]:.3f}) s\n")
    print("| N workers | projected s |\n|---|---|")
    for n in (1, 2, 4, 8, 16, 32):
        t = startup + warmup + math.ceil(C_big / n) * (c_big + overhead[1])
        print(f"| {n} | {t:.1f} |")


if __name__ == "__main__":
    main()
