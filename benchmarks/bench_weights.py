"""Benchmark: writing and reading a chunk's weights (``poisoncert.training.weights``).

A run that keeps its weights turns each chunk's trained stack into per-classifier state dicts
(``StackedModel.state_dicts``), writes them as one safetensors file, hashes it, and later
loads it to predict. With large chunks on a GPU (the improved MNIST learner at a group of
1,000) that is on the run's critical path. Side by side in one process, best of
``--repeats``, for ``--models`` classifiers of each model (random initial weights: the cost
does not depend on the values):

- ``state_dicts``: the classifiers' state dicts as CPU tensors of their own, as the engine
  hands them over (``StackedModel.state_dicts``, then ``engine.host_state_dicts``): the
  per-model loop used before (a slice, layout and copy per model and tensor) against the
  current one (one copy per tensor name, then a copy per model); on the CPU both then copy
  each tensor once more (``host_state_dicts``; off a device it moves one stack per name);
- ``to bytes``: the per-classifier layout (``poisoncert.training.weights/1``, one tensor per
  model and name) against the stacked one (``/2``, one tensor per name);
- ``write + sha256``: the bytes to a file and their SHA-256, as the run directory does
  (the same for both layouts: the files are the same size);
- ``load``: ``load_weights`` of each file.

    python benchmarks/bench_weights.py                  # 1,000 classifiers, cnn_small, lenet5
    python benchmarks/bench_weights.py --models 64 --repeats 5
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import tempfile
import time
from pathlib import Path

import torch
from _args import at_least  # benchmarks/_args.py

from poisoncert.training.engine import host_state_dicts
from poisoncert.training.fast import stack_models
from poisoncert.training.models import build_model
from poisoncert.training.weights import _flatten, load_weights, weights_to_bytes

MODELS = {"cnn_small": ((1, 28, 28), 10), "lenet5": ((1, 28, 28), 2)}


def per_model_state_dicts(net, device="cpu") -> list[dict]:
    """``StackedModel.state_dicts`` as it was before the stacked copy, then the engine's host
    copy as it was (for comparison)."""
    return [{k: v.detach().cpu().contiguous().clone() for k, v in w.items()}
            for w in _per_model(net, device)]


def current_state_dicts(net) -> list[dict]:
    """What the engine hands over now."""
    return host_state_dicts(net.state_dicts())


def _per_model(net, device) -> list[dict]:
    out = []
    for g in range(net.G):
        sd = {}
        for n in net.names:
            v = net._view(net.flat, n)[g].detach()
            sd[n] = (v.t() if n in net.transposed else v).to(device).contiguous().clone()
        for n in net.buffer_names:
            sd[n] = net.buffers[n][g].detach().to(device).contiguous().clone()
        out.append(sd)
    return out


def best(repeats: int, fn, *args):
    """The least time of ``repeats`` calls of ``fn(*args)``, and its result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times), out


def to_bytes(state_dicts, stacked: bool) -> bytes:
    """The stacked layout as runs write it (``weights_to_bytes``, its header's metadata
    sorted); the per-classifier layout as safetensors wrote it."""
    from safetensors.torch import save

    if stacked:
        return weights_to_bytes(state_dicts, {"run": "bench"})
    return save(*_flatten(state_dicts, {"run": "bench"}, stacked=False))


def write_and_hash(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def same(a: list[dict], b: list[dict]) -> bool:
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def row(name: str, n_models: int, repeats: int) -> str:
    shape, classes = MODELS[name]
    distinct = [build_model(name, shape, classes) for _ in range(min(n_models, 50))]
    net = stack_models([distinct[i % len(distinct)] for i in range(n_models)])
    t_sd_old, sds_old = best(repeats, per_model_state_dicts, net)
    t_sd_new, sds = best(repeats, current_state_dicts, net)
    assert same(sds, sds_old)
    t_old, b_old = best(repeats, to_bytes, sds_old, False)
    t_new, b_new = best(repeats, to_bytes, sds, True)
    with tempfile.TemporaryDirectory() as tmp:
        old, new = Path(tmp) / "old.safetensors", Path(tmp) / "new.safetensors"
        write_and_hash(old, b_old)
        t_write, _ = best(repeats, write_and_hash, new, b_new)
        t_load_old, w_old = best(repeats, load_weights, old)
        t_load_new, w_new = best(repeats, load_weights, new)
    assert same(w_old, w_new) and same(w_new, sds)
    before = t_sd_old + t_old + t_write
    now = t_sd_new + t_new + t_write
    return (f"| {name} | {len(b_new) / 1e6:.1f} | {t_sd_old:.3f} / {t_sd_new:.3f} | "
            f"{t_old:.3f} / {t_new:.3f} | {t_write:.3f} | {t_load_old:.3f} / "
            f"{t_load_new:.3f} | {before:.3f} / {now:.3f} ({before / now:.1f}x) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=at_least(1), default=1000, help="classifiers per chunk")
    ap.add_argument("--repeats", type=at_least(1), default=3)
    ap.add_argument("--model", action="append", choices=sorted(MODELS),
                    help="default: all")
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.models} classifiers, best of "
          f"{args.repeats}")
    print("| model | MB | state_dicts before / now, s | to bytes per classifier / stacked, s "
          "| write + sha256, s | load per classifier / stacked, s | total before / now, s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    torch.manual_seed(0)
    for name in args.model or sorted(MODELS):
        print(row(name, args.models, args.repeats))


if __name__ == "__main__":
    main()
