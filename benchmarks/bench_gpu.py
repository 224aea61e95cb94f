"""Benchmark: the training engine on one device (a GPU; the CPU for a quick check).

    python benchmarks/bench_gpu.py                          # one CUDA device, every row
    python benchmarks/bench_gpu.py --device cpu --quick     # tiny settings: that it works
    python benchmarks/bench_gpu.py --e2e none               # throughput only
    python benchmarks/bench_gpu.py --no-throughput --e2e cifar10   # one end-to-end run
    python benchmarks/bench_gpu.py --json out.json          # also write the figures
    python benchmarks/bench_gpu.py --no-throughput --e2e none --inference   # predicting only

Prints, for the device:

1. its measured matmul rate (a large square ``torch.mm``) per precision;
2. training images/s of one stacked group (``training.train_predict`` on random images, one
   warm-up call first) for ``lenet5`` (MNIST shape; also with ``training.subset_rows`` on
   10-row sub-datasets, MNIST 1/7's shape of work), ``cnn_small`` with random warps and
   elastic fields, and ``resnet18`` (CIFAR shape; its grouped twin and ``torch.func.vmap``
   side by side; the LeNet-5 and small-CNN rows also with their convolutions as batched
   matmuls, paths ``bmm`` and ``cmajor``), at several group sizes and precisions
   (``float32``, and on CUDA ``tf32`` and ``bfloat16``), with the fraction of the matmul
   rate of that precision it represents (training FLOPs per image counted by
   ``torch.utils.flop_counter`` on one plain model's forward and backward pass, times
   ``U / B`` with ``subset_rows``: the arithmetic a step does per draw);
3. end to end, train + certify: MNIST 1/7 T = 1000 (``experiments/mnist17.yaml``), MNIST
   ns = 30 T = 1000 (``experiments/mnist_ns30.yaml``) and CIFAR-10 ResNet-18 ns = 1000,
   T = 500, 400 steps (``experiments/cifar10_bagging.yaml``), each with ``group_size: auto``
   (data from ``../shared/data``; a run whose data is missing is reported as skipped). With
   ``--quick`` these are replaced by small runs on scikit-learn's digits that exercise the
   same code.

With ``--inference``, also the test-set predicting rate (``training.inference.evaluate``, what
a run does after training and ``predict`` does on new inputs): model-images/s of 256 trained
LeNet-5 and small-CNN classifiers on 10,000 random images, per path (``twin``, ``bmm``,
``cmajor``) and precision.

Nothing here is an estimate: every figure printed was measured by this run. The last line
is the run's own wall time (the issue's target for the whole command is 6 minutes on one H100;
not met: the CIFAR-10 end-to-end run alone took 374 s on one H200 in bfloat16, and its three
end-to-end runs at their fastest measured settings add up to 440 s (docs/benchmarks.md,
session 18), so ``gpu_session.sh`` runs the rows in parts).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from poisoncert.training import TrainConfig, build_model, train_predict

ROOT = Path(__file__).resolve().parents[1]

WARPS = dict(augment=True, rotation=15.0, scale=0.15, shear=10.0, max_shift=3, elastic=1.0,
             lr_schedule="cosine", lr=8e-3)


@dataclass(frozen=True)
class Case:
    name: str
    cfg: TrainConfig
    shape: tuple[int, ...]
    groups: tuple[int, ...]
    #: Rows of each classifier's sub-dataset (drawn with replacement from random images).
    subset: int = 30
    #: ``train_predict``'s path: ``"twin"`` (the grouped-convolution twins; ``"fast"`` is
    #: per model on CUDA), ``"vmap"``, ``"bmm"``, ``"cmajor"`` or ``"graphed"``.
    path: str = "twin"
    #: A diagnostic: cuDNN free to pick any algorithm (``benchmark`` on, ``deterministic``
    #: off) instead of the engine's deterministic heuristics, whose bits do not change from
    #: run to run; what that guarantee costs the grouped convolutions.
    free_cudnn: bool = False
    #: ``path="graphed"``: classifiers trained at once (default ``graphed.CUDA_LANES``) and
    #: whether channels-last on CUDA (default ``graphed.CUDA_CHANNELS_LAST``).
    lanes: int | None = None
    channels_last: bool | None = None
    #: Precisions measured (default: all of the device's).
    dtypes: tuple[str, ...] | None = None


def cases(quick: bool, device: str, short: bool = False) -> list[Case]:
    if quick:
        return [Case("lenet5", TrainConfig(model="lenet5", steps=3, batch_size=8),
                     (1, 28, 28), (2, 4)),
                Case("lenet5, sub-dataset rows 4", TrainConfig(model="lenet5", steps=3,
                                                               batch_size=8, subset_rows=4),
                     (1, 28, 28), (2,), subset=4),
                Case("cnn_small + warps", TrainConfig(model="cnn_small", steps=3,
                                                      batch_size=8, **WARPS),
                     (1, 28, 28), (2,)),
                Case("cnn_small + warps (bmm)", TrainConfig(model="cnn_small", steps=3,
                                                            batch_size=8, **WARPS),
                     (1, 28, 28), (2,), path="bmm"),
                Case("cnn_small + warps (cmajor)", TrainConfig(model="cnn_small", steps=3,
                                                               batch_size=8, **WARPS),
                     (1, 28, 28), (2,), path="cmajor"),
                Case("resnet18 (twin)", TrainConfig(model="resnet18", steps=2, batch_size=4,
                                                    optimizer="sgd", lr=0.05), (3, 16, 16),
                     (2,)),
                Case("resnet18 (vmap)", TrainConfig(model="resnet18", steps=2, batch_size=4,
                                                    optimizer="sgd", lr=0.05), (3, 16, 16),
                     (2,), path="vmap"),
                Case("resnet18 (cmajor)", TrainConfig(model="resnet18", steps=2, batch_size=4,
                                                      optimizer="sgd", lr=0.05), (3, 16, 16),
                     (2,), path="cmajor"),
                Case("resnet18 (twin, cuDNN free)", TrainConfig(
                    model="resnet18", steps=2, batch_size=4, optimizer="sgd", lr=0.05),
                    (3, 16, 16), (2,), free_cudnn=True),
                Case("resnet18 (graphed, 2 lanes)", TrainConfig(
                    model="resnet18", steps=3, batch_size=4, optimizer="sgd", lr=0.05),
                    (3, 16, 16), (3,), path="graphed", lanes=2)]
    small = (8, 256) if short else (8, 64, 256)
    resnet = TrainConfig(model="resnet18", steps=10, batch_size=64, optimizer="sgd", lr=0.05,
                         momentum=0.9, weight_decay=5e-4, augment=True, max_shift=4)
    return [Case("lenet5", TrainConfig(model="lenet5", steps=40, batch_size=32),
                 (1, 28, 28), small),
            # MNIST 1/7's shape of work (ns = 10): training.subset_rows, as a run picks it
            Case("lenet5, sub-dataset rows 10", TrainConfig(model="lenet5", steps=40,
                                                            batch_size=32, subset_rows=10),
                 (1, 28, 28), (8, 256) if short else (8, 256, 1000), subset=10),
            Case("cnn_small + warps", TrainConfig(model="cnn_small", steps=40, batch_size=32,
                                                  **WARPS), (1, 28, 28), small),
            # the convolutions as unfold + batched matmuls (path "bmm"), beside the twins
            Case("lenet5, sub-dataset rows 10 (bmm)", TrainConfig(
                model="lenet5", steps=40, batch_size=32, subset_rows=10), (1, 28, 28),
                (256,) if short else (8, 256, 1000), subset=10, path="bmm"),
            Case("cnn_small + warps (bmm)", TrainConfig(model="cnn_small", steps=40,
                                                        batch_size=32, **WARPS), (1, 28, 28),
                 (256,) if short else (8, 256), path="bmm"),
            # the same with classifier-major channels-last activations (no permuted copies)
            Case("lenet5, sub-dataset rows 10 (cmajor)", TrainConfig(
                model="lenet5", steps=40, batch_size=32, subset_rows=10), (1, 28, 28),
                (256,) if short else (8, 256, 1000), subset=10, path="cmajor"),
            Case("cnn_small + warps (cmajor)", TrainConfig(model="cnn_small", steps=40,
                                                           batch_size=32, **WARPS),
                 (1, 28, 28), (256,) if short else (8, 256), path="cmajor"),
            # one plain module per classifier, each step a replayed CUDA graph, graphed.CUDA_LANES
            # (8) classifiers at once on their own streams (the captures are part of the time:
            # 60 steps each here, 400 in the CIFAR-10 run); then 1 and 4 lanes, and the plain
            # NCHW layout instead of channels-last, in bfloat16; before the stacked forms, as
            # a call's time limit cuts the table's end
            Case("resnet18 (graphed)", replace(resnet, steps=60), (3, 32, 32), (16,),
                 path="graphed"),
            Case("resnet18 (graphed, 1 lane)", replace(resnet, steps=60), (3, 32, 32), (16,),
                 path="graphed", lanes=1, dtypes=("bfloat16",)),
            Case("resnet18 (graphed, 4 lanes)", replace(resnet, steps=60), (3, 32, 32), (16,),
                 path="graphed", lanes=4, dtypes=("bfloat16",)),
            Case("resnet18 (graphed, NCHW)", replace(resnet, steps=60), (3, 32, 32), (16,),
                 path="graphed", channels_last=False, dtypes=("bfloat16",)),
            Case("resnet18 (twin)", resnet, (3, 32, 32), (8, 32) if short else (1, 8, 32)),
            # the other stacking, side by side: torch.func.vmap over the plain module (the
            # issue's probe outside the engine measured it 3x the grouped twin's rate)
            Case("resnet18 (vmap)", resnet, (3, 32, 32), (32,) if short else (8, 32),
                 path="vmap"),
            # every convolution one patch copy and one batched matmul (tensor cores), instead
            # of cuDNN's grouped kernels; BatchNorm over each classifier's rows
            Case("resnet18 (cmajor)", resnet, (3, 32, 32), (8, 32), path="cmajor"),
            # what the deterministic cuDNN heuristics cost the grouped twin (a diagnostic)
            Case("resnet18 (twin, cuDNN free)", resnet, (3, 32, 32), (32,), free_cudnn=True)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(device: str, dtype: str, n: int) -> float:
    """FLOP/s of an ``n x n`` matmul in ``dtype`` (tf32: float32 with TensorFloat-32)."""
    dt = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
    try:
        a @ b
        sync(device)
        reps = 3
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        return reps * 2 * n ** 3 / (time.perf_counter() - t0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def flops_per_image(cfg: TrainConfig, shape) -> float:
    """Training FLOPs per image: one plain model's forward and backward on a batch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg.model, shape, 10)
    x = torch.randn(cfg.batch_size, *shape)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / cfg.batch_size


def random_group(cfg: TrainConfig, shape, G: int, subset: int) -> tuple:
    """``train_predict``'s data arguments for one group of ``G`` on random images of
    ``shape``: each classifier ``subset`` rows drawn with replacement, 2 test images."""
    rng = np.random.default_rng(0)
    n = max(64, 4 * cfg.batch_size)
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, 10, n)
    subsets = [rng.integers(0, n, subset) for _ in range(G)]
    return x, y, subsets, list(range(G)), x[:2]


def timed_call(args: tuple, cfg: TrainConfig, device: str, path: str) -> float:
    """Seconds of ``train_predict(*args, cfg)`` on ``device``: the second of two calls."""
    run = dict(n_classes=10, device=device, path=path)
    train_predict(*args, cfg, **run)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    train_predict(*args, cfg, **run)
    sync(device)
    return time.perf_counter() - t0


@contextmanager
def free_cudnn(on: bool):
    """Within: the engine's calls leave cuDNN free (``benchmark`` on, ``deterministic``
    off) after setting their precision (a diagnostic; the engine itself never does)."""
    if not on:
        yield
        return
    from poisoncert.training import engine

    keep = engine.precision

    @contextmanager
    def free(cfg, device):
        with keep(cfg, device):
            b = torch.backends.cudnn
            saved = b.benchmark, b.deterministic
            b.benchmark, b.deterministic = True, False
            try:
                yield
            finally:
                b.benchmark, b.deterministic = saved

    engine.precision = free
    try:
        yield
    finally:
        engine.precision = keep


def throughput(case: Case, G: int, dtype: str, device: str) -> float:
    """Training images/s of one group of ``G`` (the second of two calls): the draws of the
    group's steps per second (with ``subset_rows`` a step forwards each sub-dataset's rows
    once, weighted by the draws: the same work counted the same way)."""
    cfg = replace(case.cfg, group_size=G, dtype=dtype)
    with free_cudnn(case.free_cudnn), graphed_settings(case.lanes, case.channels_last):
        seconds = timed_call(random_group(cfg, case.shape, G, case.subset), cfg, device,
                             case.path)
    return G * cfg.steps * cfg.batch_size / seconds


@contextmanager
def graphed_settings(lanes: int | None, channels_last: bool | None):
    """Within: the graphed path trains ``lanes`` classifiers at once, channels-last on CUDA
    or not (None: its defaults)."""
    from poisoncert.training import graphed

    keep = graphed.lanes_for, graphed.CUDA_CHANNELS_LAST
    if lanes is not None:
        graphed.lanes_for = lambda device: lanes
    if channels_last is not None:
        graphed.CUDA_CHANNELS_LAST = channels_last
    try:
        yield
    finally:
        graphed.lanes_for, graphed.CUDA_CHANNELS_LAST = keep


def inference_rate(model: str, path: str, k: int, n: int, dtype: str, device: str,
                   shape: tuple[int, ...] = (1, 28, 28)) -> float:
    """Model-images/s of ``training.inference.evaluate``: ``k`` classifiers (fresh weights)
    on ``n`` random images of ``shape`` already on the device (the second of two calls)."""
    from poisoncert.training.inference import evaluate
    from poisoncert.training.models import init_model

    cfg = TrainConfig(model=model, dtype=dtype)
    states = [init_model(model, shape, 10, s).state_dict() for s in range(k)]
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)).to(
        device=device, dtype=cfg.torch_dtype)
    evaluate(states, x[:64], cfg, shape, 10, device, path)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    evaluate(states, x, cfg, shape, 10, device, path)
    sync(device)
    return k * n / (time.perf_counter() - t0)


E2E = {
    "mnist17": ("MNIST 1/7, ns = 10, T = 1000, LeNet-5", "mnist17.yaml", {}),
    "mnist_ns30": ("MNIST, ns = 30, T = 1000, improved learner", "mnist_ns30.yaml", {}),
    "cifar10": ("CIFAR-10, ResNet-18, ns = 1000, T = 500, 400 steps", "cifar10_bagging.yaml",
                {}),
}
QUICK_E2E = {
    "digits_cnn": ("digits, T = 8, cnn_small (quick)", None,
                     {"data": {"name": "digits", "test_limit": 50},
                      "selection": {"scheme": "with_replacement", "ns": 40, "T": 8},
                      "training": {"model": "cnn_small", "steps": 5, "batch_size": 48},
                      "certify": {"rhos": [0, 1]}}),
    "digits_resnet": ("digits, T = 2, resnet18 (quick)", None,
                      {"data": {"name": "digits", "test_limit": 10},
                       "selection": {"scheme": "with_replacement", "ns": 20, "T": 2},
                       "training": {"model": "resnet18", "steps": 2, "batch_size": 4,
                                    "optimizer": "sgd", "lr": 0.05, "group_size": 2},
                       "certify": {"rhos": [0]}}),
}


@contextmanager
def _print_progress(total: int, completed: int, label: str):
    """A ``ProgressDisplay`` for logs: a line per finished group, with the rate so far (a run
    stopped at a time limit still leaves its measured rate). ``advance(0)``, the training's
    beginning, prints nothing."""
    start, done = time.perf_counter(), [completed]

    def advance(k: int) -> None:
        if k == 0:
            return
        done[0] += k
        dt = time.perf_counter() - start
        print(f"  {label}: {done[0]}/{total} classifiers, {dt:.1f} s, "
              f"{(done[0] - completed) / dt:.2f} classifiers/s", flush=True)

    yield advance


def end_to_end(key: str, device: str, quick: bool, dtype: str | None = None,
               path: str | None = None, progress: bool = False,
               group: str | None = None) -> dict:
    from poisoncert.config import from_dict, load_config
    from poisoncert.data import DataError
    from poisoncert.experiment import certify_run, train_run

    label, yaml_name, inline = (QUICK_E2E if quick else E2E)[key]
    over = {"training.device": "cuda" if device.startswith("cuda") else "cpu"}
    if dtype:
        over["training.dtype"] = dtype
        label = f"{label}, {dtype}"
    if path:
        over["training.path"] = path
        label = f"{label}, path {path}"
    if group:
        over["training.group_size"] = group if group == "auto" else int(group)
        label = f"{label}, group {group}"
    cfg = (load_config(ROOT / "experiments" / yaml_name, over) if yaml_name
           else from_dict(inline, over))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            res = train_run(cfg, Path(tmp) / key,
                            progress=_print_progress if progress else False)
        except (DataError, FileNotFoundError) as e:
            return {"run": label, "skipped": f"data missing: {e}"}
        t1 = time.perf_counter()
        cert = certify_run(Path(tmp) / key, plot=False)
        t2 = time.perf_counter()
        man = json.loads((Path(tmp) / key / "manifest.json").read_text())
    out = {"run": label, "train_s": round(t1 - t0, 2), "certify_s": round(t2 - t1, 2),
           "total_s": round(t2 - t0, 2), "group_size": man.get("engine", {}).get("group_size"),
           "subset_rows": man.get("engine", {}).get("subset_rows"),
           "vote_accuracy": round(res.accuracy, 4),
           "base_accuracy": round(res.base_accuracy, 4)}
    out["certified_accuracy"] = {str(r): round(a, 4) for r, a in cert.table.rows()}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny settings (a check that it runs)")
    p.add_argument("--e2e", default="all", help="'all', 'none' or a comma-separated list of "
                   f"{', '.join(E2E)}")
    p.add_argument("--short", action="store_true",
                   help="two group sizes per model instead of three")
    p.add_argument("--no-throughput", action="store_true", help="only the end-to-end runs")
    p.add_argument("--only", default="", help="the throughput table's cases whose name "
                   "contains one of these comma-separated strings (default: all)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--e2e-dtypes", default="", help="comma-separated training.dtype values "
                   "to run each end-to-end run with (default: the config's)")
    p.add_argument("--e2e-paths", default="", help="comma-separated training.path values "
                   "to run each end-to-end run with (default: the config's), e.g. fast,bmm")
    p.add_argument("--e2e-groups", default="", help="comma-separated training.group_size "
                   "values to run each end-to-end run with (default: the config's), e.g. "
                   "auto,500,1000")
    p.add_argument("--inference", action="store_true",
                   help="also the test-set predicting rate per model, path and precision")
    p.add_argument("--progress", action="store_true",
                   help="print a line per trained group of the end-to-end runs, with the rate")
    args = p.parse_args(argv)
    device = args.device
    try:
        torch.device(device)
    except RuntimeError:
        p.error(f"--device: 'cpu', 'cuda' or 'cuda:K'; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible (use --device cpu --quick)")
    if device.startswith("cuda:"):  # the end-to-end runs' training.device 'cuda' is this one
        try:
            torch.cuda.set_device(device)
        except (RuntimeError, ValueError) as e:
            p.error(f"--device: {device!r} is not a visible CUDA device ({e})")
    # the end-to-end runs' names and group sizes, checked before minutes of measuring
    table = QUICK_E2E if args.quick else E2E
    keys = (list(table) if args.e2e == "all" else [] if args.e2e == "none"
            else [k.strip() for k in args.e2e.split(",")])
    for key in keys:
        if key not in table:
            p.error(f"--e2e: unknown run {key!r} (one of {', '.join(table)}, or all, none"
                    f"{'; --quick runs the digits ones' if args.quick else ''})")
    listed = lambda text: [v.strip() for v in text.split(",") if v.strip()] or [None]  # noqa: E731
    for g in listed(args.e2e_groups):
        if g not in (None, "auto") and not (g.isdigit() and int(g) >= 1):
            p.error(f"--e2e-groups: 'auto' or ints >= 1, comma-separated; got {g!r}")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if only and not args.no_throughput and not any(
            s in case.name for case in cases(args.quick, device, args.short) for s in only):
        # a mistyped --only printed an empty table and exited 0 (a lease's step lost); a
        # string that matches nothing beside others that do is fine (the lease's default
        # list names cases of both the GPU and the quick CPU tables)
        p.error(f"--only: no throughput case's name contains any of {only} (cases: "
                + "; ".join(c.name for c in cases(args.quick, device, args.short)) + ")")
    dtypes = ("float32", "tf32", "bfloat16") if device.startswith("cuda") else ("float32",)
    name = (torch.cuda.get_device_name(device) if device.startswith("cuda")
            else f"CPU ({torch.get_num_threads()} threads)")
    started = time.perf_counter()
    report: dict = {"device": name, "date": time.strftime("%Y-%m-%d"),
                    "torch": torch.__version__, "quick": args.quick}
    print(f"# {name}, torch {torch.__version__}, {report['date']}")
    n = 1024 if (args.quick or not device.startswith("cuda")) else 8192
    rates = {dt: matmul_rate(device, dt, n) for dt in dtypes}
    report["matmul_tflops"] = {dt: round(r / 1e12, 3) for dt, r in rates.items()}
    print(f"\nmatmul (n = {n}): " + ", ".join(f"{dt} {r / 1e12:.2f} TFLOP/s"
                                               for dt, r in rates.items()))
    print("\n| model | group | dtype | training images/s | GFLOP/image | of matmul rate |")
    print("|---|---:|---|---:|---:|---:|")
    rows = []
    for case in [] if args.no_throughput else cases(args.quick, device, args.short):
        if only and not any(s in case.name for s in only):
            continue
        fpi = flops_per_image(case.cfg, case.shape)
        if case.cfg.subset_rows:  # a step's arithmetic: U rows forwarded for B draws
            fpi *= case.cfg.subset_rows / case.cfg.batch_size
        for G in case.groups:
            for dt in [d for d in dtypes if case.dtypes is None or d in case.dtypes]:
                try:
                    rate = throughput(case, G, dt, device)
                except (RuntimeError, NotImplementedError) as e:  # out of memory included
                    why = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    rows.append({"model": case.name, "group": G, "dtype": dt, "failed": why})
                    print(f"| {case.name} | {G} | {dt} | failed: {why} | | |", flush=True)
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
                    continue
                frac = rate * fpi / rates[dt]
                rows.append({"model": case.name, "group": G, "dtype": dt,
                             "images_per_s": round(rate, 1), "gflop_per_image": fpi / 1e9,
                             "fraction_of_matmul": round(frac, 4)})
                print(f"| {case.name} | {G} | {dt} | {rate:,.0f} | {fpi / 1e9:.4f} | "
                      f"{100 * frac:.1f}% |", flush=True)
    report["throughput"] = rows
    inference = []
    if args.inference:
        k, n = (4, 64) if args.quick else (256, 10_000)
        print(f"\n| model | path | classifiers | dtype | predicting model-images/s "
              f"({n:,} images) |")
        print("|---|---|---:|---|---:|")
        # ResNet-18 (CIFAR-10's test set after each group): fewer classifiers, 32 x 32 x 3
        runs = [(m, p, k, (1, 28, 28)) for m in ("lenet5", "cnn_small")
                for p in ("twin", "bmm", "cmajor")]
        runs += [("resnet18", p, 2 if args.quick else 16, (3, 16, 16) if args.quick
                  else (3, 32, 32)) for p in ("twin", "cmajor")]
        for model, path, kk, shape in runs:
            for dt in [d for d in dtypes if d != "tf32"]:
                rate = inference_rate(model, path, kk, n, dt, device, shape)
                inference.append({"model": model, "path": path, "classifiers": kk,
                                  "dtype": dt, "model_images_per_s": round(rate, 1)})
                print(f"| {model} | {path} | {kk} | {dt} | {rate:,.0f} |", flush=True)
    report["inference"] = inference
    if keys:
        print("\n| run (train + certify) | group | rows / step | train s | certify s | total s "
              "| vote acc |")
        print("|---|---:|---|---:|---:|---:|---:|")
    e2e = []
    for key in keys:
        for group, path, dt in [(g, q, d) for g in listed(args.e2e_groups)
                                for q in listed(args.e2e_paths) for d in listed(args.e2e_dtypes)]:
            r = end_to_end(key, device, args.quick, dt, path, args.progress, group)
            e2e.append(r)
            if "skipped" in r:
                print(f"| {r['run']} | | | | | skipped: {r['skipped']} | |")
            else:
                rows_step = (f"sub-datasets ({r['subset_rows']})" if r["subset_rows"]
                             else "draws")
                print(f"| {r['run']} | {r['group_size']} | {rows_step} | {r['train_s']} "
                      f"| {r['certify_s']} | {r['total_s']} | {r['vote_accuracy']} |",
                      flush=True)
                print("  certified accuracy:", r["certified_accuracy"], flush=True)
    report["end_to_end"] = e2e
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"\nbench_gpu: {report['wall_s']} s in all on {name}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
