"""Probe: one stacked convolution layer, forward and backward, in three formulations.

    python benchmarks/probe_conv_layouts.py                   # CUDA: G = 250, B = 32
    python benchmarks/probe_conv_layouts.py --device cpu --quick

A question for the next GPU lease, outside the engine: on an H100 the batched-matmul path
(``training.path: bmm``) spends about 40% of a step's kernel time in strided copies around
its unfold and products (docs/benchmarks.md). This times, per layer of LeNet-5 and the small
CNN at the engine's group size:

- ``grouped``: ``F.conv2d(..., groups=G)`` on ``(B, G * C, H, W)`` channels-last (the twin);
- ``bmm``: ``training.fast.bmm_conv`` on the same layout (the engine's ``bmm`` path: unfold,
  a permuted copy to ``(G, B * L, K)``, ``baddbmm``, a permuted copy back);
- ``classifier-major``: the batch as ``(G * B, C, H, W)``, so that the unfold is already
  ``(G, B, K, L)`` and each classifier's kernels multiply its patches without a permuted
  copy (``matmul`` of ``(G, 1, O, K)`` by ``(G, B, K, L)``), the output ``(G * B, O, oh, ow)``
  in the layout the next layer wants;
- ``cmajor``: ``training.fast.cmajor_conv`` (the engine's ``cmajor`` path): the activations
  ``(G * B, H, W, C)``, one patch copy and one ``baddbmm`` whose result is the next layer's
  input; timed on its own layout (a network lays its input out once), its input's gradient
  folded back by ``k k`` strided additions;

after checking that the four agree (float64, on a small group). Forward + backward (the
gradients of the input and the kernels), median of ``--repeats`` timed calls after a warm-up,
device events on CUDA. Nothing here changes the engine; it says which layout to build.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from poisoncert.training.fast import bmm_conv, cmajor_conv  # noqa: E402

#: (name, C, O, k, padding, H) of the layers: LeNet-5 (MNIST) and the small CNN.
LAYERS = [("lenet5 conv1", 1, 6, 5, 2, 28), ("lenet5 conv2", 6, 16, 5, 0, 14),
          ("cnn_small conv1", 1, 8, 3, 1, 28), ("cnn_small conv2", 8, 16, 3, 1, 14)]


def grouped(x, w, b, G, pad):
    """``x``: ``(B, G, C, H, W)``."""
    B, _, C, H, W = x.shape
    h = x.reshape(B, G * C, H, W).contiguous(memory_format=torch.channels_last)
    return F.conv2d(h, w, b, padding=pad, groups=G)


def engine_bmm(x, w, b, G, pad):
    B, _, C, H, W = x.shape
    return bmm_conv(x.reshape(B, G * C, H, W), w, b, G, 1, pad)


def classifier_major(x, w, b, G, pad):
    """``x``: ``(B, G, C, H, W)``, laid out once as ``(G * B, C, H, W)``; output
    ``(G * B, O, oh, ow)`` (returned as ``(B, G * O, oh, ow)`` for the comparison only)."""
    B, _, C, H, W = x.shape
    O, k = w.shape[0] // G, w.shape[-1]
    h = x.transpose(0, 1).reshape(G * B, C, H, W)
    oh, ow = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    cols = F.unfold(h, k, padding=pad).view(G, B, C * k * k, oh * ow)
    out = torch.matmul(w.view(G, 1, O, C * k * k), cols) + b.view(G, 1, O, 1)
    return out.view(G * B, O, oh, ow)


def _as_group_layout(out, G, B):
    """``(G * B, O, oh, ow)`` -> ``(B, G * O, oh, ow)`` (comparison only)."""
    O, oh, ow = out.shape[1:]
    return out.view(G, B, O, oh, ow).transpose(0, 1).reshape(B, G * O, oh, ow)


def _to_cmajor(x):
    """``(B, G, C, H, W)`` -> ``(G * B, H, W, C)``: the ``cmajor`` path's layout."""
    B, G, C, H, W = x.shape
    return x.permute(1, 0, 3, 4, 2).reshape(G * B, H, W, C)


def engine_cmajor(x, w, b, G, pad):
    """``x`` already ``(G * B, H, W, C)`` (``PREPARE``); ``(G * B, oh, ow, O)``."""
    return cmajor_conv(x, w, b, G, 1, pad)


def _cmajor_as_group_layout(out, G, B):
    return _as_group_layout(out.permute(0, 3, 1, 2), G, B)


VARIANTS = {"grouped": grouped, "bmm": engine_bmm, "classifier-major": classifier_major,
            "cmajor": engine_cmajor}
#: A variant's input layout, made before timing (default: ``(B, G, C, H, W)``), and its
#: output as ``(B, G * O, oh, ow)`` for the agreement check (default: as it is).
PREPARE = {"cmajor": _to_cmajor}
AS_GROUP = {"classifier-major": _as_group_layout, "cmajor": _cmajor_as_group_layout}


def check(device: str) -> None:
    """The three formulations agree in float64 (G = 3, B = 4)."""
    torch.manual_seed(0)
    for name, C, O, k, pad, H in LAYERS:
        G, B = 3, 4
        x = torch.randn(B, G, C, H, H, dtype=torch.float64, device=device)
        w = torch.randn(G * O, C, k, k, dtype=torch.float64, device=device)
        b = torch.randn(G * O, dtype=torch.float64, device=device)
        ref = grouped(x, w, b, G, pad)
        for vname, f in VARIANTS.items():
            got = f(PREPARE.get(vname, lambda t: t)(x), w, b, G, pad)
            if vname in AS_GROUP:
                got = AS_GROUP[vname](got, G, B)
            err = (got - ref).abs().max().item()
            if err > 1e-10:
                raise AssertionError(f"{name}, {vname}: max |diff| {err:.3g} against grouped")


def time_variant(f, x, w, b, G, pad, device, repeats):
    x.requires_grad_(True)
    w.requires_grad_(True)

    def once():
        out = f(x, w, b, G, pad)
        gx, gw = torch.autograd.grad(out, (x, w), torch.ones_like(out))
        return gx, gw

    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                enable_timing=True)
            start.record()
            once()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            once()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true", help="G = 4, B = 8")
    p.add_argument("--group", type=int, default=250)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible (use --device cpu --quick)")
    check(args.device)
    G, B = (4, 8) if args.quick else (args.group, args.batch)
    name = (torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
            else "CPU")
    print(f"# {name}, torch {torch.__version__}: G = {G}, B = {B}, float32, forward + "
          f"backward, median of {args.repeats}; the four agree (float64 check)\n")
    print("| layer | " + " | ".join(f"{v} ms" for v in VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    torch.manual_seed(0)
    for lname, C, O, k, pad, H in LAYERS:
        x = torch.randn(B, G, C, H, H, device=args.device)
        w = torch.randn(G * O, C, k, k, device=args.device)
        b = torch.randn(G * O, device=args.device)
        ms = [1e3 * time_variant(f, PREPARE.get(v, lambda t: t)(x).clone(), w.clone(), b, G,
                                 pad, args.device, args.repeats)
              for v, f in VARIANTS.items()]
        print(f"| {lname} | " + " | ".join(f"{t:.3f}" for t in ms) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
