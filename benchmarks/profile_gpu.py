"""Profile: where one stacked group's training time goes on a device (``torch.profiler``).

    python benchmarks/profile_gpu.py                     # CUDA: the four cases below
    python benchmarks/profile_gpu.py --device cpu --quick   # tiny settings: that it works

For each case (MNIST 1/7's shape of work: LeNet-5 on 10-row sub-datasets, G = 250; the
improved learner's: the small CNN with random warps and elastic fields, G = 250; each on the
grouped-convolution path ``fast`` and the batched-matmul path ``bmm``) it times one call of
``training.train_predict`` (after a warm-up call) without the profiler, then profiles a second
call and prints:

- the wall time per step, and the device's kernel time per step (the sum of its kernels'
  durations): kernel time near the wall time means the device's arithmetic bounds the step;
  far under it, the host (Python, kernel launches, preparing draws) does;
- kernels launched per step;
- the operators and kernels with the most device time (self), then the most host time.

Measured, never estimated; the table is the profiler's own.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import WARPS, sync  # noqa: E402

from poisoncert.training import TrainConfig, train_predict  # noqa: E402


def cases(quick: bool):
    if quick:
        lenet = TrainConfig(model="lenet5", steps=3, batch_size=8, subset_rows=4)
        small = TrainConfig(model="cnn_small", steps=3, batch_size=8, **WARPS)
        return [("lenet5 rows 4", lenet, 2, 4, "fast"), ("cnn_small + warps", small, 2, 30,
                                                         "bmm")]
    lenet = TrainConfig(model="lenet5", steps=40, batch_size=32, subset_rows=10)
    small = TrainConfig(model="cnn_small", steps=40, batch_size=32, **WARPS)
    return [(f"lenet5 rows 10, {p}", lenet, 250, 10, p) for p in ("fast", "bmm")] + \
           [(f"cnn_small + warps, {p}", small, 250, 30, p) for p in ("fast", "bmm")]


def _kernel_rows(prof):
    """The profiler's averaged rows that are device kernels (no host time of their own)."""
    rows = []
    for r in prof.key_averages():
        dev = getattr(r, "self_device_time_total", 0) or 0
        if str(getattr(r, "device_type", "")).endswith("CUDA") or (
                dev > 0 and getattr(r, "self_cpu_time_total", 0) == 0):
            rows.append(r)
    return rows


def profile_case(name, cfg, G, subset, path, device, dtype):
    cfg = replace(cfg, group_size=G, dtype=dtype)
    rng = np.random.default_rng(0)
    n = max(64, 4 * cfg.batch_size)
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n)
    subsets = [rng.integers(0, n, subset) for _ in range(G)]
    seeds = list(range(G))
    run = dict(n_classes=10, device=device, path=path)
    args = (x, y, subsets, seeds, x[:2], cfg)
    train_predict(*args, **run)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    train_predict(*args, **run)
    sync(device)
    wall = time.perf_counter() - t0
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda")
                                     else [])
    with profile(activities=acts) as prof:
        train_predict(*args, **run)
        sync(device)
    kernels = _kernel_rows(prof)
    k_time = sum(r.self_device_time_total for r in kernels) / 1e6  # us -> s
    k_count = sum(r.count for r in kernels)
    steps = cfg.steps
    print(f"\n## {name}, G = {G}, {dtype}: {1e3 * wall / steps:.2f} ms/step wall, "
          f"{1e3 * k_time / steps:.2f} ms/step in kernels ({100 * k_time / wall:.0f}% of the "
          f"wall time), {k_count / steps:.0f} kernels/step", flush=True)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70))
    if device.startswith("cuda"):
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10,
                                        max_name_column_width=70))
    return {"case": name, "G": G, "dtype": dtype, "wall_ms_per_step": 1e3 * wall / steps,
            "kernel_ms_per_step": 1e3 * k_time / steps, "kernels_per_step": k_count / steps}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dtypes", default="float32")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible (use --device cpu --quick)")
    out = [profile_case(*c, args.device, dt) for dt in args.dtypes.split(",")
           for c in cases(args.quick)]
    print("\n| case | G | dtype | wall ms/step | kernel ms/step | kernels/step |")
    print("|---|---:|---|---:|---:|---:|")
    for r in out:
        print(f"| {r['case']} | {r['G']} | {r['dtype']} | {r['wall_ms_per_step']:.2f} | "
              f"{r['kernel_ms_per_step']:.2f} | {r['kernels_per_step']:.0f} |")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
