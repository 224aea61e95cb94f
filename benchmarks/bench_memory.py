"""Benchmark: a run's memory estimate against the memory it really takes (issue 9).

``poisoncert.experiment.resources`` estimates the bytes a run holds at its peak from the code
that allocates them. This script trains small runs whose memory is dominated by one term (the
training batch and its activations, the minibatch tables, the evaluation batch) on a synthetic
28 x 28 image set, each in a fresh process: one warm-up run of the same model with tiny
batches first (torch's one-time allocations), then the measured run; the measurement is the
rise of the process's peak resident memory (``ru_maxrss``) over the run. It prints one row per
case: the measured rise, the whole estimate, its largest term and that term against the
measured rise (the other terms, weights and data, were already reached by the warm-up, so
the rise is the largest term's memory), and the resident memory of a fresh process after
importing the training engine (``PROCESS_BYTES``' basis).

A term should be at least the measured rise (the check is then on the safe side) and not
many times it (a user would be refused what fits).

``--evaluate``: the resident rise of ``training.inference.evaluate`` (8 classifiers, fresh
weights) over 64 and 10,000 random 28 x 28 inputs in a caller's process, which keeps glibc's
default heap (the library does not call ``threads.keep_heap`` there): it should not grow with
the number of inputs, only with a chunk's (at most 64 on the CPU).

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --only resnet18     # the cases of one model
    python benchmarks/bench_memory.py --evaluate
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

#: (model, group_size, batch_size, steps, augment, eval_batch_size, the term each exercises,
#: training.path).
CASES = [
    ("lenet5", 8, 2048, 3, False, 2, "training batch and activations", "fast"),
    ("cnn_small", 8, 1024, 3, False, 2, "training batch and activations", "fast"),
    ("mlp", 8, 320, 4000, True, 2, "minibatch tables of a group", "fast"),
    ("lenet5", 8, 2, 3, False, 2000, "test set and evaluation batch", "fast"),
    ("cnn_small", 8, 2, 3, False, 2000, "test set and evaluation batch", "fast"),
    ("resnet18", 2, 64, 2, False, 2, "training batch and activations", "fast"),
    ("resnet18", 2, 2, 2, False, 1000, "test set and evaluation batch", "fast"),
    # the classifier-major path keeps every convolution's patches for its backward pass
    ("lenet5", 8, 2048, 3, False, 2, "training batch and activations", "cmajor"),
    ("cnn_small", 8, 1024, 3, False, 2, "training batch and activations", "cmajor"),
    ("resnet18", 2, 64, 2, False, 2, "training batch and activations", "cmajor"),
    ("cnn_small", 8, 2, 3, False, 2000, "test set and evaluation batch", "cmajor"),
    ("resnet18", 2, 2, 2, False, 1000, "test set and evaluation batch", "cmajor"),
]


#: (model, training.path, inputs) of ``--evaluate``.
EVAL_CASES = [(m, p, n) for m in ("lenet5", "cnn_small") for p in ("fast", "cmajor")
              for n in (64, 10_000)]


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _case(folder: Path, model: str, G: int, B: int, steps: int, augment: bool, E: int,
          path: str = "fast") -> dict:
    import dataclasses

    import numpy as np
    import torch

    from poisoncert import experiment
    from poisoncert.config import from_dict
    from poisoncert.experiment.resources import run_memory, run_shape, run_values
    from poisoncert.experiment.split import split_data

    rng = np.random.default_rng(0)
    x = rng.random((3000, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 3000)
    npz = folder / "img.npz"
    n_test = 200 if model == "resnet18" else 2000  # ResNet-18 on the CPU: 8 per group
    np.savez(npz, x_train=x, y_train=y, x_test=x[:n_test], y_test=y[:n_test])
    cfg = from_dict({"data": {"name": f"npz:{npz}"},
                     "selection": {"scheme": "with_replacement", "ns": 100, "T": G, "seed": 0},
                     "training": {"model": model, "steps": steps, "batch_size": B,
                                  "group_size": G, "augment": augment, "eval_batch_size": E,
                                  "path": path},
                     "run": {"chunk_size": G}})
    terms = run_memory(run_values(cfg, 1), run_shape(cfg, split_data(cfg.data),
                                                     in_process=True, local_workers=True))
    torch.set_num_threads(1)
    warm = dataclasses.replace(cfg, training=dataclasses.replace(
        cfg.training, steps=1, batch_size=2, eval_batch_size=2))
    experiment.train_run(warm, folder / "warm", progress=False)
    before = _rss()
    experiment.train_run(cfg, folder / "run", progress=False)
    top = max(terms, key=lambda t: t.nbytes)
    return {"measured": _rss() - before, "estimate": sum(t.nbytes for t in terms),
            "top": top.what, "top_bytes": top.nbytes}


def _evaluate_case(model: str, path: str, n: int) -> dict:
    import torch

    from poisoncert.training import TrainConfig
    from poisoncert.training.inference import evaluate
    from poisoncert.training.models import init_model

    torch.set_num_threads(1)
    cfg, shape = TrainConfig(model=model), (1, 28, 28)
    states = [init_model(model, shape, 10, s).state_dict() for s in range(8)]
    x = torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))
    evaluate(states, x[:2], cfg, shape, 10, "cpu", path)  # torch's one-time allocations
    before = _rss()
    with torch.no_grad():
        evaluate(states, x, cfg, shape, 10, "cpu", path)
    return {"rise": _rss() - before}


def _evaluate_table() -> None:
    print("\n| model | path | inputs | resident rise MiB |")
    print("|---|---|---:|---:|")
    for model, path, n in EVAL_CASES:
        proc = subprocess.run([sys.executable, __file__, "--evaluate-case", model, path, str(n)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.splitlines()[-1])
        print(f"| {model} | {path} | {n:,} | {r['rise'] / 2**20:.0f} |", flush=True)


def main() -> None:
    # the internal modes the script runs itself in fresh processes
    if len(sys.argv) > 1 and sys.argv[1] == "--evaluate-case":
        model, path, n = sys.argv[2:5]
        print(json.dumps(_evaluate_case(model, path, int(n))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--case":
        model, G, B, steps, augment, E, path = sys.argv[2:9]
        with tempfile.TemporaryDirectory() as tmp:
            out = _case(Path(tmp), model, int(G), int(B), int(steps), augment == "1", int(E),
                        path)
        print(json.dumps(out))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--process":
        import poisoncert.training.engine  # noqa: F401

        print(json.dumps({"rss": _rss()}))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted({c[0] for c in CASES}), default=None,
                    help="the cases of one model (default: all)")
    ap.add_argument("--evaluate", action="store_true",
                    help="the resident rise of training.inference.evaluate instead")
    args = ap.parse_args()
    from poisoncert.runmanifest import device_name

    print(f"{device_name('cpu')}, Python {platform.python_version()}")
    if args.evaluate:
        _evaluate_table()
        return
    print("\n| model | path | group | batch | steps | augment | eval batch | measured rise MiB | "
          "estimate MiB | its largest term | that term MiB | term / measured |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for model, G, B, steps, augment, E, _, path in CASES:
        if args.only is not None and model != args.only:
            continue
        proc = subprocess.run([sys.executable, __file__, "--case", model, str(G), str(B),
                               str(steps), "1" if augment else "0", str(E), path],
                              capture_output=True, text=True)
        if proc.returncode:  # the case's own error, not CalledProcessError's exit status
            print(f"| {model} | {path} | {G} | {B} | {steps} | {augment} | {E} | failed: "
                  f"{(proc.stderr.strip().splitlines() or ['?'])[-1]} | | | | |", flush=True)
            continue
        r = json.loads(proc.stdout.splitlines()[-1])
        print(f"| {model} | {path} | {G} | {B} | {steps} | {augment} | {E} | "
              f"{r['measured'] / 2**20:.0f} | {r['estimate'] / 2**20:.0f} | {r['top']} | "
              f"{r['top_bytes'] / 2**20:.0f} | {r['top_bytes'] / max(1, r['measured']):.2f} |")
    proc = subprocess.run([sys.executable, __file__, "--process"], capture_output=True,
                          text=True, check=True)
    rss = json.loads(proc.stdout.splitlines()[-1])["rss"]
    print(f"\nA fresh process after importing poisoncert.training.engine: {rss / 2**20:.0f} MiB "
          "resident.")


if __name__ == "__main__":
    main()
