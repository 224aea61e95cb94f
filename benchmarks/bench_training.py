"""Benchmark: training T LeNet-5 base classifiers on small MNIST sub-datasets.

    python benchmarks/bench_training.py                    # throughput table (about 10 min)
    python benchmarks/bench_training.py --models 32 --repeats 1      # quicker
    python benchmarks/bench_training.py --models 32 --repeats 1 --model lenet5_avg  # avg pool
    python benchmarks/bench_training.py --study [--compile]  # formulations, one train step
    python benchmarks/bench_training.py --accuracy         # base accuracy per setting
    python benchmarks/bench_training.py --full             # T=1000 MNIST and MNIST 1/7 runs
    python benchmarks/bench_training.py --predict --models 1000   # training.predict rate
    python benchmarks/bench_training.py --predict --models 256 --predict-inputs 10  # set-up
    python benchmarks/bench_training.py --baseline-src /tmp/old/src  # + another engine (e)
    python benchmarks/bench_training.py --heap --repeats 5     # threads.keep_heap's effect
    python benchmarks/bench_training.py --sqrt                 # the update's square root

The same work is done every way: ``--models`` classifiers, each on ``--ns`` MNIST images drawn
with replacement, ``--steps`` Adam steps of ``--batch`` class-balanced draws (no shifts, so
that the plain DataLoader procedure does the same work), then predicting all 10,000 test
images. Rows:

(a) the paper's procedure: per classifier a fresh LeNet-5 and a DataLoader with a
    WeightedRandomSampler expanding the sub-dataset to ``steps * batch`` draws (torch's
    default threads);
(b) ``path="reference"``: the per-model loop (minibatch indices precomputed, 1 thread);
(c, d) ``path="fast"``: stacked groups, 1 and 2 worker processes (1 thread each);
(a1) the paper's procedure on one thread (on a shared machine (a)'s two OpenMP threads
    collapse: each parallel region waits for a descheduled thread);
(e) with ``--baseline-src``: another checkout's engine (e.g. ``git archive <rev> src``), 2
    workers, in a fresh process.

docs/benchmarks.md holds the latest figures; those below are the previous engine's.

Timings on a shared machine are noisy: every variant runs ``--repeats`` times, interleaved,
and the median is reported. Before the first, each in-process variant runs once, untimed, on
one classifier of two steps (from 2026-11-28; before, (a) ran first and cold, which its time
included). Samples/s counts training draws (``T * steps * batch``) over the
whole wall time, prediction included.

Recorded 2026-11-24 (2 shared Xeon cores, AVX-512, torch 2.13.0 CPU; other jobs ran at times):

    python benchmarks/bench_training.py --models 64 --repeats 3   (lenet5, max pooling)
    | variant                           | wall s | s/model | samples/s | vs (a) |
    | (a) paper: DataLoader + WRS       |   50.5 |   0.788 |     8,118 |   1.0x |
    | (b) reference path, 1 worker      |   66.6 |   1.041 |     6,150 |   0.8x |
    | (b2) reference path, 2 workers    |   33.7 |   0.527 |    12,147 |   1.5x |
    | (c) fast path, 1 worker           |   32.3 |   0.504 |    12,696 |   1.6x |
    | (d) fast path, 2 workers          |   17.4 |   0.272 |    23,552 |   2.9x |
    (best quiet repeat: (a) 48.4 s, (c) 27.0 s, (d) 14.0 s = 3.5x.) Inference, 1 thread:
    stacked group of 8 in batches of 64: 75,000 model-images/s (0.13 s per model for the
    10,000 test images); batches of 500: 30,000; one module at a time: 23,000.

    --study (one training step, 1 thread, samples/s): per-model loop 8,500 (max pool) /
    9,700 (avg); torch.func vmap 5,500; grouped conv NCHW 6,300; grouped channels-last,
    G=8 B=32: 17,300 (18,000 with one fused Adam on the stacked tensors, which is not
    position-invariant; 14,400 unfused), G=16 16,200, G=32 15,500, B=64 18,300; same with 2
    threads in one process 27,000 (vs ~2 x 17,300 in 2 processes); avg->max 23,800; avg pool
    as fused stride-2 conv 31,000 (G=16 B=64: 36,600). torch.compile: 26 s to compile, then
    2x slower than eager (11,000 vs 21,000).

    --full: T=1000, LENET5_MNIST, 2 workers: MNIST ns=30 251 s (0.25 s/model, mean
    base accuracy 0.625, majority vote 0.902); MNIST 1/7 ns=10 226 s (0.23 s/model, 0.948,
    vote 0.980).

    --accuracy (T=20, ns=30, 10,000 test images): default 0.631; no shifts 0.582; Adam 1e-3
    0.607; 100 steps 0.628; 400 steps 0.640; 400 steps + lr 1e-3 + shifts 3: 0.603; shifts
    3: 0.624; shifts 1: 0.618; lenet5_avg 0.586; LeNet5(pool=("avg", "max")) 0.630.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _args import at_least  # benchmarks/_args.py
from torch.nn import functional as F

from poisoncert import selection
from poisoncert.training import LENET5_MNIST, LeNet5, train_predict
from poisoncert.training.fast import stack_models
from poisoncert.training.optim import StackedOptimizer
from poisoncert.votes import votes_from_predictions

# --------------------------------------------------------------------------------------------
# Data


def load_mnist(classes=None):
    """MNIST as float32 (N, 1, 28, 28) in [0, 1]: ``poisoncert.data`` or the IDX files."""
    try:
        from poisoncert.data import load_dataset

        ds = load_dataset("mnist")
        x, y, xt, yt = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    except Exception:  # the data package missing or no files: read the IDX files directly
        root = Path(os.environ.get("POISONCERT_DATA", Path(__file__).parents[2] / "shared/data"))

        def idx(name):
            with gzip.open(root / "mnist" / name) as f:
                data = f.read()
            ndim = data[3]
            dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)

        x = idx("train-images-idx3-ubyte.gz")[:, None].astype(np.float32) / 255
        xt = idx("t10k-images-idx3-ubyte.gz")[:, None].astype(np.float32) / 255
        y = idx("train-labels-idx1-ubyte.gz").astype(np.int64)
        yt = idx("t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if classes is not None:
        keep, keept = np.isin(y, classes), np.isin(yt, classes)
        remap = np.full(10, -1)
        remap[list(classes)] = np.arange(len(classes))
        x, y, xt, yt = x[keep], remap[y[keep]], xt[keept], remap[yt[keept]]
    return np.ascontiguousarray(x), y, np.ascontiguousarray(xt), yt


def draw_subsets(n, T, ns, root_seed=0):
    seeds = selection.model_seeds(root_seed, T)
    subs = [selection.draw("with_replacement", n, ns=ns, seed=int(s)) for s in seeds]
    return subs, seeds


# --------------------------------------------------------------------------------------------
# (a) the paper's procedure


def plain_procedure(x, y, xt, subsets, seeds, cfg, threads=None):
    """Per classifier: fresh model, DataLoader + WeightedRandomSampler, train, predict
    (torch's default threads, or ``threads``)."""
    if threads is not None:
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return plain_procedure(x, y, xt, subsets, seeds, cfg)
        finally:
            torch.set_num_threads(saved)
    from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

    xt_t = torch.from_numpy(xt)
    preds = []
    for sub, seed in zip(subsets, seeds, strict=True):
        torch.manual_seed(selection.init_seed(int(seed)))
        model = LeNet5(1, 10, (28, 28), pool="max" if cfg.model == "lenet5" else "avg")
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        ys = y[sub]
        w = 1.0 / np.bincount(ys)[ys]
        sampler = WeightedRandomSampler(torch.from_numpy(w), cfg.steps * cfg.batch_size,
                                        replacement=True)
        loader = DataLoader(TensorDataset(torch.from_numpy(x[sub]), torch.from_numpy(ys)),
                            batch_size=cfg.batch_size, sampler=sampler)
        model.train()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            preds.append(torch.cat([model(c).argmax(1) for c in xt_t.split(500)]).numpy())
    return np.stack(preds).astype(np.int16)


# --------------------------------------------------------------------------------------------
# Throughput table


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (not the engine's workers: they are
    children of its fork server, so rows with workers show none)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_BASELINE = """
import sys, time, numpy as np
from dataclasses import replace
from poisoncert import selection
from poisoncert.training import LENET5_MNIST, train_predict
d = np.load(sys.argv[1])
subsets = [d[f"s{i}"] for i in range(int(d["T"]))]
cfg = replace(LENET5_MNIST, model=str(d["model"]), steps=int(d["steps"]),
              batch_size=int(d["batch"]), augment=False)
if __name__ == "__main__":
    t0 = time.perf_counter()
    P = train_predict(d["x"], d["y"], subsets, list(d["seeds"]), d["xt"], cfg, n_classes=10,
                      workers=int(d["workers"]))
    print(time.perf_counter() - t0)
    np.save(sys.argv[2], P)
"""


def baseline_engine(src: Path, x, y, xt, subsets, seeds, cfg, workers: int):
    """``train_predict`` of another checkout's ``src`` (the previous engine), in a fresh
    process; its predictions (the time includes its imports, about 2 s)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d.npz"
        np.savez(data, x=x, y=y, xt=xt, seeds=np.asarray(seeds, dtype=np.uint64),
                 T=len(subsets), model=cfg.model, steps=cfg.steps, batch=cfg.batch_size,
                 workers=workers, **{f"s{i}": s for i, s in enumerate(subsets)})
        script = Path(tmp) / "run.py"
        script.write_text(_BASELINE)
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([sys.executable, str(script), str(data), str(Path(tmp) / "p.npy")],
                       check=True, env=env, cwd=tmp, stdout=subprocess.DEVNULL)
        return np.load(Path(tmp) / "p.npy")


def throughput(args):
    x, y, xt, yt = load_mnist()
    T = args.models
    subsets, seeds = draw_subsets(len(x), T, args.ns)
    cfg = replace(LENET5_MNIST, model=args.model, steps=args.steps, batch_size=args.batch,
                  augment=False)
    # the fast path as a run trains it: sub-datasets smaller than a batch are forwarded once
    # per step, weighted by draw counts (experiment.learners.auto_subset_rows); --draws: not
    fcfg = cfg if args.draws or args.ns >= args.batch else replace(cfg, subset_rows=args.ns)
    draws = T * cfg.steps * cfg.batch_size

    def make(subsets, seeds, cfg, fcfg, xt):
        return {
            "(a) paper: DataLoader + WeightedRandomSampler per model": lambda: plain_procedure(
                x, y, xt, subsets, seeds, cfg),
            "(a1) the same on 1 thread": lambda: plain_procedure(x, y, xt, subsets, seeds, cfg,
                                                                 threads=1),
            "(b) reference path (per-model loop), 1 worker": lambda: train_predict(
                x, y, subsets, seeds, xt, cfg, n_classes=10, path="reference"),
            "(b2) reference path, 2 workers": lambda: train_predict(
                x, y, subsets, seeds, xt, cfg, n_classes=10, path="reference", workers=2),
            "(c) fast path (stacked groups), 1 worker": lambda: train_predict(
                x, y, subsets, seeds, xt, fcfg, n_classes=10),
            "(d) fast path, 2 workers": lambda: train_predict(
                x, y, subsets, seeds, xt, fcfg, n_classes=10, workers=2),
        }

    def chosen(variants):
        for skip in args.skip:
            variants = {k: v for k, v in variants.items() if not k.startswith(f"({skip})")}
        return variants

    variants = make(subsets, seeds, cfg, fcfg, xt)
    if args.baseline_src is not None:
        variants[f"(e) previous engine ({args.baseline_src}), 2 workers"] = (
            lambda: baseline_engine(args.baseline_src, x, y, xt, subsets, seeds, cfg, 2))
    variants = chosen(variants)
    # Untimed, before the first timed call: each in-process variant once on one classifier of
    # two steps, so that no variant's first repeat pays this process's one-time costs (lazy
    # imports, oneDNN's kernels for these shapes) and the others not. The worker variants
    # start fresh processes every call, as a run does, so they pay theirs every time.
    warm = chosen(make(subsets[:1], seeds[:1], replace(cfg, steps=2), replace(fcfg, steps=2),
                       xt[:64]))
    for name, run in warm.items():
        if "workers" not in name:
            run()
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    accs: dict[str, float] = {}
    for r in range(args.repeats):
        for name, run in variants.items():
            c0, t0 = _cpu_seconds(), time.perf_counter()
            P = run()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu_seconds() - c0)
            accs[name] = float((P == yt).mean())
            print(f"  repeat {r}: {name}: {times[name][-1]:.1f} s, {cpu[name][-1]:.1f} CPU s, "
                  f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    if not variants:  # every variant skipped: the inference table only
        inference(args, xt)
        return
    first = next(iter(variants))
    base, base_cpu = statistics.median(times[first]), statistics.median(cpu[first])
    print(f"\nfast path: subset_rows={fcfg.subset_rows} (None: each step forwards the draws)")
    print(f"\nT={T} {cfg.model} models, ns={args.ns}, {cfg.steps} steps x batch {cfg.batch_size}"
          f" (Adam, balanced), predicting {len(xt)} test images; median of {args.repeats}; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average at the end "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| variant | wall s | s / model | training samples/s | vs first (wall) | CPU s | "
          "vs first (CPU s) | mean acc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in variants:
        t, c = statistics.median(times[name]), statistics.median(cpu[name])
        cpu_text = (f"{c:.1f} | {base_cpu / c:.1f}x" if "workers" not in name
                    else "n/a | n/a")
        print(f"| {name} | {t:.1f} | {t / T:.3f} | {draws / t:,.0f} | {base / t:.1f}x | "
              f"{cpu_text} | {accs[name]:.3f} |")
    if not args.skip_inference:
        inference(args, xt)


def inference(args, xt):
    """Test-set inference: one stacked group vs one module at a time (1 thread), with the
    heap kept as in the engine's workers and the command line (``threads.keep_heap``)."""
    from poisoncert.threads import keep_heap

    keep_heap()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    G = args.group_size
    xt_t = torch.from_numpy(xt)
    pool = "max" if args.model == "lenet5" else "avg"
    models = [LeNet5(1, 10, (28, 28), pool=pool).eval() for _ in range(G)]
    net = stack_models(models)
    res: dict[str, list[float]] = {}
    with torch.no_grad():
        for _ in range(args.repeats):
            for bs in (64, 500):
                t0 = time.perf_counter()
                for c in xt_t.split(bs):
                    net.forward_eval(c)
                res.setdefault(f"stacked group of {G}, batches of {bs}", []).append(
                    G * len(xt) / (time.perf_counter() - t0))
            # the previous formulation: the images copied G times, a grouped first convolution
            t0 = time.perf_counter()
            for c in xt_t.split(64):
                net.forward_train(c.unsqueeze(1).expand(-1, G, *c.shape[1:]))
            res.setdefault(f"stacked group of {G}, batches of 64, grouped first convolution "
                           "(previous)", []).append(G * len(xt) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for m in models[:2]:
                for c in xt_t.split(500):
                    m(c)
            res.setdefault("one module at a time, batches of 500", []).append(
                2 * len(xt) / (time.perf_counter() - t0))
    torch.set_num_threads(threads)
    print(f"\nInference over the {len(xt)} test images (1 thread, keep_heap), model-images/s:\n")
    print("| formulation | model-images/s | s per model |")
    print("|---|---:|---:|")
    for k, v in res.items():
        rate = statistics.median(v)
        print(f"| {k} | {rate:,.0f} | {len(xt) / rate:.3f} |")


_HEAP_STEP = """
import resource, sys, time, torch
from torch.nn import functional as F
from poisoncert.threads import keep_heap
if sys.argv[1] == "keep":
    keep_heap()
from poisoncert.training import LeNet5
from poisoncert.training.fast import stack_models
from poisoncert.training.optim import StackedOptimizer
from poisoncert.training.settings import TrainConfig
torch.set_num_threads(1)
torch.manual_seed(0)
G, B = 8, 32
net = stack_models([LeNet5(1, 10, 28) for _ in range(G)])
opt = StackedOptimizer(net.flat, TrainConfig(model="lenet5"))
x, y = torch.rand(4096, 1, 28, 28), torch.randint(0, 10, (4096,))
idx = torch.randint(0, 4096, (120, B, G))
def step(i):
    F.cross_entropy(net.forward_train(x[i]).reshape(G * B, 10), y[i.T].reshape(-1),
                    reduction="sum").div(B).backward()
    opt.step(net.flat_grad(), 1e-3)
    net.zero_grad()
for i in idx[:20]:
    step(i)
r0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
for i in idx[20:]:
    step(i)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print((time.process_time() - c0) * 10, (r1.ru_minflt - r0.ru_minflt) / 100,
      (r1.ru_stime - r0.ru_stime) * 10)
"""


def heap(args):
    """One stacked LeNet-5 group step (G = 8, B = 32, 1 thread) in fresh processes with and
    without ``threads.keep_heap``, interleaved ``--repeats`` times: CPU ms per step, page
    faults per step and kernel ms per step (medians)."""
    import subprocess

    res: dict[str, list[list[float]]] = {"glibc's defaults": [], "keep_heap()": []}
    for _ in range(args.repeats):
        for name, arg in (("glibc's defaults", "plain"), ("keep_heap()", "keep")):
            out = subprocess.run([sys.executable, "-c", _HEAP_STEP, arg], check=True,
                                 capture_output=True, text=True).stdout.split()
            res[name].append([float(v) for v in out])
    print(f"\nOne stacked LeNet-5 group step (G = 8, B = 32, 1 thread), median of "
          f"{args.repeats} processes each, interleaved:\n")
    print("| allocator | CPU ms / step | page faults / step | kernel ms / step |")
    print("|---|---:|---:|---:|")
    for name, rows in res.items():
        med = [statistics.median(r[k] for r in rows) for k in range(3)]
        print(f"| {name} | {med[0]:.2f} | {med[1]:,.0f} | {med[2]:.2f} |")


def sqrt_study(args):
    """The stacked update's square root: torch's CPU ``sqrt`` (MKL's vector math) against
    ``optim.sqrt_`` (numpy's, the processor's instruction) on a LeNet-5 group's moments
    (8 x 61,712 float32) that are random, zero or denormal (1 thread, CPU ms per call, 200
    calls), and how often each differs from the correctly rounded root (float64's, rounded)
    over float32 bit patterns sampled evenly."""
    from poisoncert.training.optim import sqrt_

    torch.set_num_threads(1)
    shape = (8, 61712)
    inputs = {"uniform random": torch.rand(shape), "zeros": torch.zeros(shape),
              "denormals": torch.full(shape, 1e-40)}
    out = torch.empty(shape)
    ways = {"torch.sqrt": lambda v: torch.sqrt(v, out=out), "optim.sqrt_": lambda v: sqrt_(v, out)}
    print("\n| input | " + " | ".join(f"{w} ms" for w in ways) + " |")
    print("|---|" + "---:|" * len(ways))
    for name, v in inputs.items():
        row = []
        for fn in ways.values():
            for _ in range(10):
                fn(v)
            c0 = time.process_time()
            for _ in range(200):
                fn(v)
            row.append(f"{(time.process_time() - c0) / 200 * 1e3:.3f}")
        print(f"| {name} | " + " | ".join(row) + " |")
    f = np.arange(0, 0x7F800000, 97, dtype=np.uint32).view(np.float32)
    exact = np.sqrt(f.astype(np.float64)).astype(np.float32).view(np.uint32)
    t = torch.from_numpy(f)
    for name, got in (("torch.sqrt", torch.sqrt(t)),
                      ("optim.sqrt_", sqrt_(t, torch.empty_like(t)))):
        off = got.numpy().view(np.uint32) != exact
        print(f"{name}: {off.mean():.2%} of {len(f):,} float32 inputs not correctly rounded")


def predict_rate(args):
    """``training.predict``: ``--models`` LeNet-5 classifiers on the 10,000 MNIST test images,
    the previous formulation (one thread, groups of 8, chunks of ``eval_batch_size`` = 500,
    the default) against ``predict`` now (threads over groups, chunks of at most 64), side
    by side, interleaved."""
    from poisoncert.training import predict
    from poisoncert.training.fast import stack_models as stack

    _, _, xt, _ = load_mnist()
    xt = xt[:args.predict_inputs]
    cfg = replace(LENET5_MNIST, eval_batch_size=500)
    torch.manual_seed(0)
    sds = [LeNet5(1, 10, (28, 28)).state_dict() for _ in range(args.models)]
    xt_t = torch.from_numpy(xt)

    def previous():
        out = np.empty((len(sds), len(xt)), dtype=np.int16)
        saved = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.no_grad():
                for a in range(0, len(sds), 8):
                    models = []
                    for sd in sds[a:a + 8]:
                        m = LeNet5(1, 10, (28, 28))
                        m.load_state_dict(sd)
                        models.append(m.eval())
                    net = stack(models)
                    logits = torch.cat([net.forward_eval(c) for c in xt_t.split(500)], dim=1)
                    out[a:a + 8] = logits.argmax(-1).numpy()
        finally:
            torch.set_num_threads(saved)
        return out

    variants = {"previous: 1 thread, groups of 8, batches of 500": previous,
                "predict, 1 thread (batches of at most 64)": lambda: predict(
                    cfg, sds, xt, input_shape=(1, 28, 28), n_classes=10, threads=1),
                f"predict, {os.cpu_count()} threads": lambda: predict(
                    cfg, sds, xt, input_shape=(1, 28, 28), n_classes=10)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    ref = None
    for r in range(args.repeats):
        for name, run in variants.items():
            c0, t0 = _cpu_seconds(), time.perf_counter()
            P = run()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(_cpu_seconds() - c0)
            ref = P if ref is None else ref
            agree = float((P == ref).mean())
            print(f"  repeat {r}: {name}: {times[name][-1]:.1f} s, {cpu[name][-1]:.1f} CPU s, "
                  f"load {os.getloadavg()[0]:.1f}, labels equal to the first: {agree:.5f}",
                  file=sys.stderr, flush=True)
    n = len(sds) * len(xt)
    first = statistics.median(times[next(iter(variants))])
    print(f"\n{len(sds)} LeNet-5 classifiers x {len(xt)} MNIST test images, median of "
          f"{args.repeats}; {os.cpu_count()} CPUs, load average at the end "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| formulation | wall s | model-images/s | vs previous | CPU s |")
    print("|---|---:|---:|---:|---:|")
    for name in variants:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.1f} | {n / t:,.0f} | {first / t:.1f}x | "
              f"{statistics.median(cpu[name]):.1f} |")


# --------------------------------------------------------------------------------------------
# Formulation study: samples/s of one training step, 1 thread


def study(args):
    torch.set_num_threads(1)
    N = 4096
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    steps = 12

    def permodel(pool, B=32, n_models=4):
        ms = [LeNet5(1, 10, 28, pool=pool) for _ in range(n_models)]
        opts = [torch.optim.Adam(m.parameters(), 1e-3, fused=True) for m in ms]
        idx = torch.randint(0, N, (n_models, steps, B), generator=g)
        t0 = time.perf_counter()
        for m, o, ii in zip(ms, opts, idx, strict=True):
            for i in ii:
                loss = F.cross_entropy(m(x[i]), y[i])
                o.zero_grad()
                loss.backward()
                o.step()
        return n_models * steps * B / (time.perf_counter() - t0)

    def grouped(pool, G, B, channels_last=True, fused_adam=True, threads=1, compiled=False,
                stacked_adam=False):
        torch.set_num_threads(threads)
        net = stack_models([LeNet5(1, 10, 28, pool=pool) for _ in range(G)])
        forward = torch.compile(net.forward_train) if compiled else net.forward_train
        # the engine's update: StackedOptimizer over the flat (G, P) parameters;
        # stacked_adam: torch's Adam on the stacked leaves instead
        if stacked_adam:
            opt = torch.optim.Adam(net.parameters(), 1e-3, fused=fused_adam)
        else:
            upd = StackedOptimizer(net.flat, replace(LENET5_MNIST, lr=1e-3))
        idx = torch.randint(0, N, (steps, B, G), generator=g)
        t0 = time.perf_counter()
        for i in idx:
            xb = x[i]
            if channels_last:
                logits = forward(xb)
            else:  # the same network on NCHW tensors
                h = xb.reshape(B, G, 28, 28)
                for name, pad in (("conv1", 2), ("conv2", 0)):
                    h = F.conv2d(h, net.cat(f"{name}.weight"), net.cat(f"{name}.bias"),
                                 padding=pad, groups=G)
                    h = F.relu(F.max_pool2d(h, 2))
                logits = net._head(h)
            loss = F.cross_entropy(logits.reshape(G * B, -1), y[i.T].reshape(-1),
                                   reduction="sum") / B
            net.zero_grad()
            loss.backward()
            if stacked_adam:
                opt.step()
            else:
                upd.step(net.flat_grad(), 1e-3)
        rate = G * B * steps / (time.perf_counter() - t0)
        torch.set_num_threads(1)
        return rate

    def vmapped(B=32, G=8):
        from torch.func import functional_call, grad, stack_module_state, vmap

        ms = [LeNet5(1, 10, 28, pool="max") for _ in range(G)]
        params, buffers = stack_module_state(ms)
        base = LeNet5(1, 10, 28, pool="max").to("meta")

        def loss_fn(p, b, xb, yb):
            return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

        gfn = vmap(grad(loss_fn))
        idx = torch.randint(0, N, (steps, G, B), generator=g)
        t0 = time.perf_counter()
        for i in idx:
            grads = gfn(params, buffers, x[i], y[i])
            for k in params:  # plain SGD, the optimizer is not what is measured
                params[k] = params[k] - 0.01 * grads[k]
        return G * B * steps / (time.perf_counter() - t0)

    variants = {
        "per-model loop, max pool, B=32": lambda: permodel("max"),
        "per-model loop, avg pool, B=32": lambda: permodel("avg"),
        "torch.func vmap(grad), max pool, G=8 B=32": vmapped,
        "grouped conv NCHW, max, G=8 B=32": lambda: grouped("max", 8, 32, channels_last=False),
        "grouped conv channels-last, max, G=8 B=32 (StackedOptimizer)": lambda: grouped(
            "max", 8, 32),
        "same, torch's fused Adam on the stacked leaves": lambda: grouped("max", 8, 32,
                                                                          stacked_adam=True),
        "grouped conv channels-last, max, G=4 B=32": lambda: grouped("max", 4, 32),
        "grouped conv channels-last, max, G=16 B=32": lambda: grouped("max", 16, 32),
        "grouped conv channels-last, max, G=32 B=32": lambda: grouped("max", 32, 32),
        "grouped conv channels-last, max, G=8 B=64": lambda: grouped("max", 8, 64),
        "grouped conv channels-last, max, G=8 B=32, 2 threads (one process)": lambda: grouped(
            "max", 8, 32, threads=2),
        "grouped, avg->max (hybrid), G=8 B=32": lambda: grouped(("avg", "max"), 8, 32),
        "grouped, avg pool fused stride-2 conv, G=8 B=32": lambda: grouped("avg", 8, 32),
        "grouped, avg pool fused stride-2 conv, G=16 B=64": lambda: grouped("avg", 16, 64),
    }
    if args.compile:  # ~25 s of compilation per process and shape
        variants["torch.compile(forward), max, G=8 B=32 (after compiling)"] = lambda: grouped(
            "max", 8, 32, compiled=True)
    res: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, f in variants.items():
            res[k].append(f())
    print(f"\nOne LeNet-5 training step (forward, backward, Adam), 1 thread, median of "
          f"{args.repeats}:\n")
    print("| formulation | training samples/s |")
    print("|---|---:|")
    for k, v in res.items():
        print(f"| {k} | {statistics.median(v):,.0f} |")


# --------------------------------------------------------------------------------------------
# Base accuracy per setting, and the full-size targets


def lenet5_avg_max(input_shape, n_classes):
    """LeNet-5 with average pooling after conv1 and max pooling after conv2 (stackable)."""
    return LeNet5(input_shape[0], n_classes, input_shape[1:], pool=("avg", "max"))


def accuracy(args):
    x, y, xt, yt = load_mnist()
    T = 20
    subsets, seeds = draw_subsets(len(x), T, 30, root_seed=1)
    settings = {
        "default: lenet5 (max), 200 steps x 32, Adam 3e-3, shifts +-2": LENET5_MNIST,
        "same without shifts": replace(LENET5_MNIST, augment=False),
        "same, Adam 1e-3": replace(LENET5_MNIST, lr=1e-3),
        "same, 100 steps": replace(LENET5_MNIST, steps=100),
        "same, 400 steps": replace(LENET5_MNIST, steps=400),
        "400 steps, Adam 1e-3, shifts +-3": replace(LENET5_MNIST, steps=400, lr=1e-3,
                                                   max_shift=3),
        "same as default, shifts +-3": replace(LENET5_MNIST, max_shift=3),
        "same as default, shifts +-1": replace(LENET5_MNIST, max_shift=1),
        "lenet5_avg (classic subsampling), shifts": replace(LENET5_MNIST, model="lenet5_avg"),
        "LeNet5(pool=('avg', 'max')) factory, shifts": replace(LENET5_MNIST,
                                                               model=lenet5_avg_max),
    }
    print(f"\nBase accuracy, MNIST, ns=30 with replacement, T={T}, 10,000 test images, "
          "2 workers:\n")
    print("| setting | mean acc | sd | min | max | s / model (2 workers) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, cfg in settings.items():
        t0 = time.perf_counter()
        P = train_predict(x, y, subsets, seeds, xt, cfg, n_classes=10, workers=2)
        dt = time.perf_counter() - t0
        acc = (P == yt).mean(1)
        print(f"| {name} | {acc.mean():.3f} | {acc.std():.3f} | {acc.min():.3f} | "
              f"{acc.max():.3f} | {dt / T:.3f} |", flush=True)


def full(args):
    """T=1000 on full MNIST (ns=30) and MNIST 1/7 (ns=10) with the default config."""
    print("\n| run | T | wall s | s / model | mean base acc | majority-vote acc |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, classes, ns, k in (("MNIST", None, 30, 10), ("MNIST 1/7", (1, 7), 10, 2)):
        x, y, xt, yt = load_mnist(classes)
        subsets, seeds = draw_subsets(len(x), args.models, ns)
        t0 = time.perf_counter()
        P = train_predict(x, y, subsets, seeds, xt, LENET5_MNIST, n_classes=k,
                          workers=args.workers)
        dt = time.perf_counter() - t0
        votes = votes_from_predictions(P, k)
        print(f"| {name} ns={ns} | {args.models} | {dt:.0f} | {dt / args.models:.3f} | "
              f"{(P == yt).mean():.3f} | {(votes.argmax(1) == yt).mean():.3f} |", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=at_least(1), default=None,
                   help="classifiers (default 64; --full: 1000)")
    p.add_argument("--ns", type=at_least(1), default=30)
    p.add_argument("--steps", type=at_least(1), default=200)
    p.add_argument("--batch", type=at_least(1), default=32)
    p.add_argument("--model", default="lenet5", choices=("lenet5", "lenet5_avg"))
    p.add_argument("--group-size", type=at_least(1), default=8)
    p.add_argument("--repeats", type=at_least(1), default=3)
    p.add_argument("--workers", type=at_least(1), default=2)
    p.add_argument("--study", action="store_true")
    p.add_argument("--compile", action="store_true", help="--study: add torch.compile")
    p.add_argument("--accuracy", action="store_true")
    p.add_argument("--full", action="store_true")
    p.add_argument("--predict-inputs", type=at_least(1), default=None,
                   help="--predict: only the first N test images (few inputs: the time is "
                   "building the stacked groups, what a GPU's evaluation is bound by)")
    p.add_argument("--predict", action="store_true",
                   help="training.predict against the previous formulation (--models 1000)")
    p.add_argument("--baseline-src", type=Path, default=None,
                   help="another checkout's src/ folder: its engine as variant (e)")
    p.add_argument("--skip", action="append", default=[],
                   choices=("a", "a1", "b", "b2", "c", "d", "e"),
                   help="leave out a variant by its letter (b, b2, c, ...)")
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--draws", action="store_true",
                   help="fast path forwards the draws even when ns < batch (no subset_rows)")
    p.add_argument("--heap", action="store_true",
                   help="a training step with and without threads.keep_heap")
    p.add_argument("--sqrt", action="store_true",
                   help="the stacked update's square root: torch's against optim.sqrt_")
    args = p.parse_args()
    if args.models is None and not args.full:
        args.models = 64
    if args.sqrt:
        sqrt_study(args)
    elif args.heap:
        heap(args)
    elif args.predict:
        predict_rate(args)
    elif args.study:
        study(args)
    elif args.accuracy:
        accuracy(args)
    elif args.full:
        if args.models is None:
            args.models = 1000
        full(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
