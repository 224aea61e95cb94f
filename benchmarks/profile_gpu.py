"""Profile: where one stacked group's training time goes on a device (``torch.profiler``).

    python benchmarks/profile_gpu.py                     # CUDA: the cases below
    python benchmarks/profile_gpu.py --device cpu --quick   # tiny settings: that it works
    # one case, in another precision and group size (the improved learner's fastest run)
    python benchmarks/profile_gpu.py --only "cnn_small + warps, cmajor" --dtypes bfloat16 \
        --group 1000

For each case (MNIST 1/7's shape of work: LeNet-5 on 10-row sub-datasets, G = 250; the
improved learner's: the small CNN with random warps and elastic fields, G = 250; each on the
batched-matmul paths ``bmm`` and ``cmajor``; the CIFAR-10 experiment's: ResNet-18, G = 32,
batches of 64 in bfloat16, on the grouped twin, ``cmajor`` and the ``graphed`` loop, whose
"step" is then one step of each of the 32 classifiers, ``graphed.CUDA_LANES`` at a time (8),
and whose kernels run inside graph replays) it times one call of ``training.train_predict``
(after a warm-up call) without the profiler, then profiles a call of 1 step and one of
``PROFILED_STEPS``, and prints:

- the wall time per step (the call's, set-up and predicting included), the steady wall time
  per step (the call less a call of 1 step, per further step) and the device's kernel time
  per step (the sum of its kernels' durations, the difference of the two profiled calls per
  step): a steady wall time near the kernel time means the device's kernels bound the step;
  far above it, the host (Python, kernel launches, preparing draws) does;
- kernels launched per step, and the kernel time of set-up + 1 step + predicting;
- the kernels' time per step by name (the same difference), with their share;
- the operators and kernels with the most device time (self), then the most host time.

Measured, never estimated; the table is the profiler's own.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _args import at_least  # noqa: E402
from bench_gpu import WARPS, random_group, sync, timed_call  # noqa: E402

from poisoncert.training import TrainConfig, train_predict  # noqa: E402

#: Steps of the profiled call (the profiler's parsing grows with its events: 40 steps of 250
#: classifiers on the grouped-convolution path took over a minute).
PROFILED_STEPS = 6
#: The paths profiled (the grouped-convolution twins were profiled on an H100 in session 6,
#: docs/benchmarks.md): batched matmuls, and the same on classifier-major activations.
PATHS = ("bmm", "cmajor")
#: ``--dtypes``' values (training.dtype's on CUDA; the CPU runs float32).
DTYPES = ("float32", "tf32", "bfloat16")


MNIST = (1, 28, 28)


def cases(quick: bool):
    """(name, config, G, sub-dataset rows, path, image shape, dtype or None: ``--dtypes``)."""
    if quick:
        lenet = TrainConfig(model="lenet5", steps=3, batch_size=8, subset_rows=4)
        small = TrainConfig(model="cnn_small", steps=3, batch_size=8, **WARPS)
        resnet = TrainConfig(model="resnet18", steps=3, batch_size=4, optimizer="sgd", lr=0.05)
        # the small CNN's cases named as on the device, so a lease's --only (PROFILE_ONLY)
        # selects the same case in a dry run
        return [("lenet5 rows 4", lenet, 2, 4, "fast", MNIST, None),
                *[(f"cnn_small + warps, {p}", small, 2, 30, p, MNIST, None) for p in PATHS],
                ("resnet18, cmajor", resnet, 2, 30, "cmajor", (3, 16, 16), "float32"),
                ("resnet18, graphed", resnet, 2, 30, "graphed", (3, 16, 16), "float32")]
    lenet = TrainConfig(model="lenet5", steps=40, batch_size=32, subset_rows=10)
    small = TrainConfig(model="cnn_small", steps=40, batch_size=32, **WARPS)
    # the CIFAR-10 experiment's step (cifar10_bagging.yaml), in bfloat16, on both forms
    resnet = TrainConfig(model="resnet18", steps=10, batch_size=64, optimizer="sgd", lr=0.05,
                         momentum=0.9, weight_decay=5e-4, augment=True, max_shift=4)
    return ([(f"lenet5 rows 10, {p}", lenet, 250, 10, p, MNIST, None) for p in PATHS]
            + [(f"cnn_small + warps, {p}", small, 250, 30, p, MNIST, None) for p in PATHS]
            + [(f"resnet18, {p}", resnet, 32, 1000, p, (3, 32, 32), "bfloat16")
               for p in ("twin", "cmajor", "graphed")])


def _kernel_rows(prof):
    """The profiler's averaged rows that are device kernels (no host time of their own)."""
    rows = []
    for r in prof.key_averages():
        dev = getattr(r, "self_device_time_total", 0) or 0
        if str(getattr(r, "device_type", "")).endswith("CUDA") or (
                dev > 0 and getattr(r, "self_cpu_time_total", 0) == 0):
            rows.append(r)
    return rows


def profile_case(name, cfg, G, subset, path, shape, fixed_dtype, device, dtype, group=0):
    """One case; ``group``: its group size instead of the case's own (0: the case's)."""
    dtype = fixed_dtype or dtype
    G = group or G
    if dtype != "float32" and not device.startswith("cuda"):
        dtype = "float32"  # tf32 and bfloat16 are CUDA's
    cfg = replace(cfg, group_size=G, dtype=dtype)
    args = random_group(cfg, shape, G, subset)
    wall = timed_call(args, cfg, device, path)
    wall1 = timed_call(args, replace(cfg, steps=1), device, path)
    steady = (wall - wall1) / max(cfg.steps - 1, 1)
    run = dict(n_classes=10, device=device, path=path)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda")
                                     else [])
    # the profiled call: fewer steps (the profiler's own cost grows with the events), and a
    # call of one step to subtract what does not scale with the steps (set-up, predicting)
    few = replace(cfg, steps=PROFILED_STEPS)
    per_call, by_name = [], []
    for c in (replace(cfg, steps=1), few):
        with profile(activities=acts) as prof:
            train_predict(*args, c, **run)
            sync(device)
        kernels = _kernel_rows(prof)
        per_call.append((sum(r.self_device_time_total for r in kernels) / 1e6,  # us -> s
                         sum(r.count for r in kernels)))
        by_name.append({r.key: r.self_device_time_total / 1e6 for r in kernels})
    (t1, n1), (tk, nk) = per_call
    steps = cfg.steps
    k_time, k_count = (tk - t1) / (PROFILED_STEPS - 1), (nk - n1) / (PROFILED_STEPS - 1)
    print(f"\n## {name}, G = {G}, {dtype}: {1e3 * wall / steps:.2f} ms/step wall "
          f"({steps} steps, set-up and predicting included), {1e3 * steady:.2f} ms/step "
          f"steady wall, {1e3 * k_time:.2f} ms/step in "
          f"kernels, {k_count:.0f} kernels/step (profiled: {PROFILED_STEPS} steps less 1); "
          f"set-up + 1 step + predicting: {1e3 * t1:.1f} ms in {n1} kernels", flush=True)
    print(per_step_kernels(*by_name, k_time))
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=70))
    if device.startswith("cuda"):
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10,
                                        max_name_column_width=70))
    return {"case": name, "G": G, "dtype": dtype, "wall_ms_per_step": 1e3 * wall / steps,
            "steady_ms_per_step": 1e3 * steady, "kernel_ms_per_step": 1e3 * k_time,
            "kernels_per_step": k_count}


def per_step_kernels(one: dict, few: dict, k_time: float, rows: int = 12) -> str:
    """A table of the kernels' device time per step by name: the profiled call of
    ``PROFILED_STEPS`` less the call of 1 step, per further step (seconds in, ms out)."""
    per = {k: (few.get(k, 0.0) - one.get(k, 0.0)) / (PROFILED_STEPS - 1)
           for k in set(one) | set(few)}
    top = sorted(per.items(), key=lambda kv: -kv[1])[:rows]
    lines = ["| kernel (per step) | ms | share |", "|---|---:|---:|"]
    lines += [f"| {k[:90]} | {1e3 * v:.3f} | {100 * v / k_time if k_time > 0 else 0:.0f}% |"
              for k, v in top]
    return "\n".join("  " + line for line in lines)  # indented: not in the session summary


def profile_run(key: str, device: str, quick: bool, dtype: str | None = None,
                group: int = 0) -> dict:
    """One end-to-end run (train + certify), the second of two, under cProfile: where the
    host's time goes
    (functions by cumulative, then by own time; the device's work shows up in the calls that
    wait for it)."""
    import cProfile
    import pstats

    from bench_gpu import end_to_end

    if dtype and dtype != "float32" and not device.startswith("cuda"):
        dtype = "float32"  # tf32 and bfloat16 are CUDA's
    run = dict(dtype=dtype, group=str(group) if group else None)
    end_to_end(key, device, quick, **run)  # warm-up: imports, CUDA's start, cuBLAS handles
    prof = cProfile.Profile()
    prof.enable()
    r = end_to_end(key, device, quick, **run)
    prof.disable()
    print(f"## {r['run']}: train {r.get('train_s')} s, certify {r.get('certify_s')} s, "
          f"under cProfile")
    stats = pstats.Stats(prof)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    return r


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dtypes", default="", help="comma-separated precisions of the "
                   "cases that do not fix one: float32, tf32, bfloat16 (the CPU runs float32; "
                   "default: float32; with --e2e: its first, default the config's)")
    p.add_argument("--only", default="", help="only the cases whose name contains this")
    p.add_argument("--group", type=at_least(1), default=0, help="every case's group size "
                   "(default: each case's: 250 for LeNet-5 and the small CNN, 32 for "
                   "ResNet-18; e.g. 1000, the improved learner's fastest measured run)")
    p.add_argument("--e2e", default="", help="instead: one of bench_gpu.py's end-to-end runs "
                   "(e.g. mnist17) under cProfile, the host's time by function")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible (use --device cpu --quick)")
    dtypes = [d.strip() for d in (args.dtypes or "float32").split(",")]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        p.error(f"--dtypes: comma-separated {', '.join(DTYPES)}; got {bad[0]!r}")
    if args.e2e:
        from bench_gpu import E2E, QUICK_E2E

        table = QUICK_E2E if args.quick else E2E
        if args.e2e not in table:
            p.error(f"--e2e: unknown run {args.e2e!r} (one of {', '.join(table)}"
                    f"{'; --quick runs the digits ones' if args.quick else ''})")
        return profile_run(args.e2e, args.device, args.quick,
                           dtypes[0] if args.dtypes else None, args.group)
    chosen = [c for c in cases(args.quick) if args.only in c[0]]
    if not chosen:  # a lease's call would print an empty table
        p.error(f"--only: no case's name contains {args.only!r} (cases"
                f"{' with --quick' if args.quick else ''}: "
                f"{'; '.join(c[0] for c in cases(args.quick))})")
    out = [profile_case(*c, args.device, dt, args.group) for c in chosen
           for dt in (dtypes if c[6] is None else dtypes[:1])]
    print("\n| case | G | dtype | wall ms/step | steady wall ms/step | kernel ms/step "
          "| kernels/step |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in out:
        print(f"| {r['case']} | {r['G']} | {r['dtype']} | {r['wall_ms_per_step']:.2f} | "
              f"{r['steady_ms_per_step']:.2f} | {r['kernel_ms_per_step']:.2f} | "
              f"{r['kernels_per_step']:.0f} |")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
