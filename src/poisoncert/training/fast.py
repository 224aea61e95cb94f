"""Stacked networks: ``G`` independent models of one architecture trained as one network.

Each model of a group sees its own minibatch; the models never mix: the loss is the sum of
the ``G`` per-model mean losses, so each model's gradient is its own, and the optimizer's
update is elementwise. What is shared is only the kernel launches, which is where a small
CPU loses its time when it trains one tiny LeNet at a time.

- ``StackedLeNet5`` (average pooling): ``avgpool2x2(conv5x5(x))`` equals one stride-2 6x6
  convolution with kernel ``k (*) box2x2 / 4``, so each conv+pool pair is a single grouped
  (``groups=G``) channels-last convolution on a 4x smaller output: 2.2x fewer FLOPs than
  conv-then-pool and no pooling kernels. Dense layers are batched matmuls (``baddbmm``).
  Max pooling keeps the plain grouped conv -> max-pool.
- ``StackedMLP``: batched matmuls.

At evaluation all ``G`` models see the same test images: the first layer is one ordinary
convolution (or matmul) with ``G`` times the output channels, so the test batch is never
copied ``G`` times.

Parameters are kept in the per-model modules' parameterisation (5x5 kernels, ``fc.weight``
transposed to ``(G, in, out)``), and ``state_dicts()`` gives back state dicts loadable into
``LeNet5`` / ``MLP``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from poisoncert.training.models import MLP, LeNet5

__all__ = ["StackedLeNet5", "StackedMLP", "fuse_avgpool", "stackable", "stack_models"]


def fuse_avgpool(w: torch.Tensor) -> torch.Tensor:
    """Kernel of ``avgpool2x2(conv(x, w))`` as one stride-2 convolution: ``(O, I, k+1, k+1)``."""
    return 0.25 * (F.pad(w, (0, 1, 0, 1)) + F.pad(w, (1, 0, 0, 1))
                   + F.pad(w, (0, 1, 1, 0)) + F.pad(w, (1, 0, 1, 0)))


def stackable(model: nn.Module) -> bool:
    """Whether ``stack_models`` has a stacked twin for this module's type."""
    return type(model) in (LeNet5, MLP)


def stack_models(models: Sequence[nn.Module]):
    """The stacked twin of ``G`` same-shaped models (their current parameters, copied)."""
    first = models[0]
    if type(first) is LeNet5:
        return StackedLeNet5(models)
    if type(first) is MLP:
        return StackedMLP(models)
    raise TypeError(f"no stacked twin for {type(first).__name__}")


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().contiguous().requires_grad_(True)


def _stack_linear(layers: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.stack([lin.weight.detach().t() for lin in layers])  # (G, in, out)
    b = torch.stack([lin.bias.detach() for lin in layers])  # (G, out)
    return _leaf(w), _leaf(b)


def _dense(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor, relu: bool) -> torch.Tensor:
    out = torch.baddbmm(b.unsqueeze(1), h, w)
    return F.relu(out) if relu else out


class StackedLeNet5:
    """``G`` LeNet-5 models (same input shape and pooling) as one grouped network."""

    #: ``forward_train`` wants the batch as ``(B, G, ...)`` (cheapest gather for grouped conv).
    batch_first = True

    def __init__(self, models: Sequence[LeNet5]):
        m0 = models[0]
        self.G = len(models)
        self.pools = m0.pools
        self.padding = m0.padding
        self.feature_shape = m0.feature_shape
        self.in_channels = m0.conv1.in_channels
        self.w1 = _leaf(torch.cat([m.conv1.weight.detach() for m in models]))
        self.b1 = _leaf(torch.cat([m.conv1.bias.detach() for m in models]))
        self.w2 = _leaf(torch.cat([m.conv2.weight.detach() for m in models]))
        self.b2 = _leaf(torch.cat([m.conv2.bias.detach() for m in models]))
        self.fc = [_stack_linear([getattr(m, name) for m in models])
                   for name in ("fc1", "fc2", "fc3")]

    def parameters(self) -> list[torch.Tensor]:
        return [self.w1, self.b1, self.w2, self.b2] + [t for wb in self.fc for t in wb]

    def _convs(self, x: torch.Tensor, first_groups: int) -> torch.Tensor:
        layers = ((self.w1, self.b1, self.padding, first_groups), (self.w2, self.b2, 0, self.G))
        for (w, b, pad, groups), pool in zip(layers, self.pools, strict=True):
            if pool == "avg":
                x = F.conv2d(x, fuse_avgpool(w), b, stride=2, padding=pad, groups=groups)
            else:
                x = F.max_pool2d(F.conv2d(x, w, b, padding=pad, groups=groups), 2)
            x = F.relu_(x)
        return x

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        c, hh, ww = self.feature_shape
        h = h.reshape(n, self.G, c * hh * ww).transpose(0, 1)  # (G, n, 400), flatten order (c,h,w)
        (w3, b3), (w4, b4), (w5, b5) = self.fc
        return _dense(_dense(_dense(h, w3, b3, True), w4, b4, True), w5, b5, False)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, G, C, H, W)``, model ``g``'s minibatch in ``x[:, g]``; logits
        ``(G, B, K)``."""
        B, G, C, H, W = x.shape
        x = x.reshape(B, G * C, H, W).contiguous(memory_format=torch.channels_last)
        return self._head(self._convs(x, G))

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C, H, W)`` shown to every model; logits ``(G, N, K)``."""
        x = x.contiguous(memory_format=torch.channels_last)
        return self._head(self._convs(x, 1))

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        out = []
        w1, b1 = self.w1.detach().cpu(), self.b1.detach().cpu()
        w2, b2 = self.w2.detach().cpu(), self.b2.detach().cpu()
        for g in range(self.G):
            sd = {"conv1.weight": w1[6 * g:6 * g + 6], "conv1.bias": b1[6 * g:6 * g + 6],
                  "conv2.weight": w2[16 * g:16 * g + 16], "conv2.bias": b2[16 * g:16 * g + 16]}
            for name, (w, b) in zip(("fc1", "fc2", "fc3"), self.fc, strict=True):
                sd[f"{name}.weight"] = w.detach()[g].t().cpu()
                sd[f"{name}.bias"] = b.detach()[g].cpu()
            out.append({k: v.contiguous().clone() for k, v in sd.items()})
        return out


class StackedMLP:
    """``G`` MLPs (same sizes) as batched matmuls."""

    batch_first = False

    def __init__(self, models: Sequence[MLP]):
        self.G = len(models)
        n_layers = len(models[0].layers)
        self.layers = [_stack_linear([m.layers[i] for m in models]) for i in range(n_layers)]
        self.out = _stack_linear([m.out for m in models])

    def parameters(self) -> list[torch.Tensor]:
        return [t for wb in [*self.layers, self.out] for t in wb]

    def _rest(self, h: torch.Tensor, start: int) -> torch.Tensor:
        for w, b in self.layers[start:]:
            h = _dense(h, w, b, True)
        return _dense(h, *self.out, False)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(G, B, ...)``; logits ``(G, B, K)``."""
        return self._rest(x.flatten(2), 0)

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, ...)`` shown to every model; logits ``(G, N, K)``."""
        x = x.flatten(1)
        if not self.layers:
            return self._rest(x.expand(self.G, *x.shape), 0)
        w, b = self.layers[0]
        G, f_in, f_out = w.shape
        h = (x @ w.permute(1, 0, 2).reshape(f_in, G * f_out)).view(-1, G, f_out).transpose(0, 1)
        h = F.relu(h + b.unsqueeze(1))
        return self._rest(h, 1)

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        out = []
        for g in range(self.G):
            sd = {}
            for i, (w, b) in enumerate(self.layers):
                sd[f"layers.{i}.weight"] = w.detach()[g].t()
                sd[f"layers.{i}.bias"] = b.detach()[g]
            sd["out.weight"] = self.out[0].detach()[g].t()
            sd["out.bias"] = self.out[1].detach()[g]
            out.append({k: v.cpu().contiguous().clone() for k, v in sd.items()})
        return out
