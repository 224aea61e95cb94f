"""The optimizer and learning-rate schedule of a ``TrainConfig`` (both training paths)."""

from __future__ import annotations

import math

import torch

from poisoncert.training.settings import TrainConfig

__all__ = ["make_optimizer", "set_lr"]


def make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params`` (fused kernels on CPU and CUDA)."""
    fused = device.type in ("cpu", "cuda")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """The learning rate of ``step`` (0-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "cosine":
        lr = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
