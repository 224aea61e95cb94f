"""The optimizer and learning-rate schedule of a ``TrainConfig``.

- ``make_optimizer``: a ``torch.optim`` optimizer (the per-model reference loop);
- ``StackedOptimizer``: the same update over a stacked ``(G, P)`` parameter tensor (the fast
  path), a handful of elementwise kernels per step for the whole group;
- ``lr_at`` / ``set_lr``: the learning rate of a step.

Why ``StackedOptimizer`` is written out: torch's fused and ``foreach`` kernels combine
operations (``addcmul``, ``lerp``, ``add`` with ``alpha``) that a vectorised CPU kernel may
evaluate with a fused multiply-add in its SIMD body and with two roundings in its scalar tail
(ATen's ``add`` with ``alpha`` is ``fmadd`` when vectorised), so on a stacked tensor an
element's update could depend on where it falls (its model's position in the group): the
previous engine measured this on an Intel CPU and gave each model its own views; on the AMD
EPYC development machine, with this torch build, the fused kernels happened not to differ.
Rather than rely on a build's code generation, every kernel here applies **one** correctly
rounded IEEE operation (``+``, ``-``, ``*``, ``/``, ``sqrt``; ``add``/``sub`` with ``alpha``
1 only) per element, whose result is the same in any lane, in the tail, on any thread and in
any kernel: a classifier's update depends only on its own values (tested, and tested equal
bit for bit to the same operations in numpy on the CPU).

The square root on the CPU is numpy's (the processor's square-root instruction), not
``torch.sqrt``: torch's CPU ``sqrt`` calls MKL's vector math library, whose generic code path
(the one it takes on AMD processors) is faithfully rounded only, 1 ulp off for about 17% of
float32 inputs, and slow: 0.22 ms for a LeNet-5 group's 494k moments, 1.3 ms when they are
zeros (parameters a step left untouched), against 0.18 ms for numpy (measured on the AMD EPYC
development machine; docs/benchmarks.md). On CUDA ``torch.sqrt`` is IEEE's.

The formulas are torch's (``Adam``, ``SGD``, ``Adadelta``, L2 ``weight_decay`` added to the
gradient); the reference twin's torch optimizer agrees to rounding (tested step by step).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from poisoncert.training.settings import TrainConfig

__all__ = ["StackedOptimizer", "lr_at", "make_optimizer", "set_lr", "sqrt_"]

#: torch's defaults, used by both paths.
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
ADADELTA_RHO, ADADELTA_EPS = 0.9, 1e-6


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params`` (fused kernels on CPU and CUDA)."""
    fused = device.type in ("cpu", "cuda")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of ``step`` (0-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
    return cfg.lr


def sqrt_(src: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out = sqrt(src)``, correctly rounded (numpy's on the CPU: see the module docstring);
    ``out`` may be ``src``."""
    if src.device.type == "cpu" and src.dtype in (torch.float32, torch.float64):
        np.sqrt(src.numpy(), out=out.numpy())
    else:
        torch.sqrt(src, out=out)
    return out


def set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """Set the learning rate of ``step`` (0-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "cosine":
        lr = lr_at(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr


class StackedOptimizer:
    """``cfg.optimizer`` over ``flat`` ``(G, P)`` (updated in place), from correctly rounded
    elementwise operations only (see the module docstring).

    ``step(grad, lr)`` applies one update with the gradient ``grad`` (same shape; used as
    scratch space) and learning rate ``lr``. Scalars (``lr``, betas, bias corrections) are
    Python floats, the same for every classifier, so nothing waits for the device.
    """

    def __init__(self, flat: torch.Tensor, cfg: TrainConfig):
        self.flat, self.cfg = flat, cfg
        self.t = 0
        z = lambda: torch.zeros_like(flat)  # noqa: E731
        self.tmp = z()
        if cfg.optimizer == "adam":
            self.m, self.v, self.tmp2 = z(), z(), z()
        elif cfg.optimizer == "sgd":
            self.buf = z() if cfg.momentum > 0 else None
        else:
            self.v, self.u, self.tmp2 = z(), z(), z()

    @torch.no_grad()
    def step(self, grad: torch.Tensor, lr: float) -> None:
        cfg, p, tmp = self.cfg, self.flat, self.tmp
        self.t += 1
        if cfg.weight_decay:
            torch.mul(p, cfg.weight_decay, out=tmp)
            grad.add_(tmp)
        if cfg.optimizer == "adam":
            b1, b2 = ADAM_BETAS
            m, v, tmp2 = self.m, self.v, self.tmp2
            m.mul_(b1)
            torch.mul(grad, 1.0 - b1, out=tmp)
            m.add_(tmp)                       # m = b1 m + (1 - b1) g
            torch.mul(grad, grad, out=tmp)
            tmp.mul_(1.0 - b2)
            v.mul_(b2)
            v.add_(tmp)                       # v = b2 v + (1 - b2) g^2
            bc1, bc2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
            sqrt_(v, tmp)
            tmp.div_(math.sqrt(bc2))
            tmp.add_(ADAM_EPS)                # sqrt(v / bc2) + eps, as torch computes it
            torch.div(m, tmp, out=tmp2)
            tmp2.mul_(lr / bc1)
            p.sub_(tmp2)                      # p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
        elif cfg.optimizer == "sgd":
            d = grad
            if self.buf is not None:
                self.buf.mul_(cfg.momentum)
                self.buf.add_(grad)           # buf = momentum buf + g (buf_1 = g)
                d = self.buf
            torch.mul(d, lr, out=tmp)
            p.sub_(tmp)
        else:  # adadelta
            rho, eps = ADADELTA_RHO, ADADELTA_EPS
            v, u, tmp2 = self.v, self.u, self.tmp2
            torch.mul(grad, grad, out=tmp)
            tmp.mul_(1.0 - rho)
            v.mul_(rho)
            v.add_(tmp)                       # v = rho v + (1 - rho) g^2
            torch.add(v, eps, out=tmp)
            sqrt_(tmp, tmp)                   # std = sqrt(v + eps)
            torch.add(u, eps, out=tmp2)
            sqrt_(tmp2, tmp2)
            tmp2.div_(tmp)
            tmp2.mul_(grad)                   # delta = sqrt(u + eps) / std * g
            torch.mul(tmp2, tmp2, out=tmp)
            tmp.mul_(1.0 - rho)
            u.mul_(rho)
            u.add_(tmp)                       # u = rho u + (1 - rho) delta^2
            tmp2.mul_(lr)
            p.sub_(tmp2)
