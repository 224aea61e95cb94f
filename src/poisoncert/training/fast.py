"""Stacked networks: ``G`` independent models of one architecture trained as one network.

Each model of a group sees its own minibatch; the models never mix: the loss is the sum of
the ``G`` per-model mean losses, so each model's gradient is its own, and the optimizer's
update is elementwise. What is shared is only the kernel launches, which is where a small
CPU loses its time when it trains one tiny LeNet at a time.

- ``StackedLeNet5``: the ``G`` models' channels side by side, each convolution one grouped
  (``groups=G``) channels-last convolution, dense layers batched matmuls (``baddbmm``).
  Max pooling: grouped conv -> max-pool -> ReLU (ReLU after the pooling: the same function,
  on a 4x smaller tensor). Average pooling: ``avgpool2x2(conv5x5(x))`` equals one stride-2
  6x6 convolution with kernel ``k (*) box2x2 / 4``, so conv+pool is a single convolution on
  a 4x smaller output (2.2x fewer FLOPs, no pooling kernels).
- ``StackedSmallCNN``: the same layout for ``SmallCNN`` (3x3 convolutions, padding 1, each
  conv -> max-pool -> ReLU).
- ``StackedMLP``: batched matmuls.

Parameters are stacked in the modules' own parameterisation (5x5 kernels; ``nn.Linear``
weights transposed, ``(G, in, out)``); the optimizer updates per-model views of them (see
``_Stacked``: this makes the results bit-identical whatever a model's position in its
group). ``state_dicts()`` gives state dicts loadable into ``LeNet5`` / ``MLP``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from poisoncert.training.models import MLP, LeNet5, SmallCNN

__all__ = ["StackedLeNet5", "StackedMLP", "StackedSmallCNN", "fuse_avgpool", "stackable",
           "stack_models"]


def fuse_avgpool(w: torch.Tensor) -> torch.Tensor:
    """Kernel of ``avgpool2x2(conv(x, w))`` as one stride-2 convolution: ``(O, I, k+1, k+1)``."""
    return 0.25 * (F.pad(w, (0, 1, 0, 1)) + F.pad(w, (1, 0, 0, 1))
                   + F.pad(w, (0, 1, 1, 0)) + F.pad(w, (1, 0, 1, 0)))


def stackable(model: nn.Module) -> bool:
    """Whether ``stack_models`` has a stacked twin for this module's type."""
    return type(model) in (LeNet5, MLP, SmallCNN)


def stack_models(models: Sequence[nn.Module]):
    """The stacked twin of ``G`` same-shaped models (their current parameters, copied)."""
    first = models[0]
    if type(first) is LeNet5:
        return StackedLeNet5(models)
    if type(first) is SmallCNN:
        return StackedSmallCNN(models)
    if type(first) is MLP:
        return StackedMLP(models)
    raise TypeError(f"no stacked twin for {type(first).__name__}")


class _Stacked:
    """Stacked leaf parameters, and per-model views of them for the optimizer.

    ``cat(name)`` is parameter ``name`` of all ``G`` models concatenated along its first
    axis (``conv1.weight``: ``(6 G, 1, 5, 5)``), ``stack(name)`` the same viewed as
    ``(G, *shape)``. The optimizer does not see the stacked tensors: an elementwise kernel
    (fused Adam included) treats the last ``numel mod vector-width`` elements of a tensor in a
    scalar tail loop with different rounding, so on a stacked ``(G, K)`` bias a model's update
    would depend on its position in the group (measured). It sees ``model_params()``, one view
    per model and parameter with the module's own shape, so each model's update is computed
    exactly as the reference twin's optimizer computes it, whatever its position.
    """

    def __init__(self, models: Sequence[nn.Module]):
        self.G = len(models)
        named = [dict(m.named_parameters()) for m in models]
        self.names = list(named[0])
        #: ``nn.Linear`` weights are stored transposed, ``(G, in, out)``: the plain ``bmm``
        #: layout (a transposed operand measured ~10% slower per dense layer).
        self.transposed = {f"{name}.weight" for name, mod in models[0].named_modules()
                           if isinstance(mod, nn.Linear)}

        def layout(n, p):
            return p.detach().t() if n in self.transposed else p.detach()

        self._leaves = {n: torch.stack([layout(n, d[n]) for d in named]).requires_grad_(True)
                        for n in self.names}
        self._views = [[self._leaves[n].detach()[g] for n in self.names] for g in range(self.G)]

    def parameters(self) -> list[torch.Tensor]:
        """The stacked leaves ``(G, *shape)`` (what autograd fills)."""
        return list(self._leaves.values())

    def model_params(self) -> list[torch.Tensor]:
        """One view per model and parameter (what the optimizer updates, in place)."""
        return [v for views in self._views for v in views]

    def sync_grads(self) -> None:
        """Point each view's ``.grad`` at its slice of the stacked gradient (no copy)."""
        for i, leaf in enumerate(self._leaves.values()):
            grad = leaf.grad
            for g in range(self.G):
                self._views[g][i].grad = None if grad is None else grad[g]

    def zero_grad(self) -> None:
        for leaf in self._leaves.values():
            leaf.grad = None

    def stack(self, name: str) -> torch.Tensor:
        return self._leaves[name]

    def cat(self, name: str) -> torch.Tensor:
        leaf = self._leaves[name]
        return leaf.reshape(self.G * leaf.shape[1], *leaf.shape[2:])

    def dense(self, h: torch.Tensor, name: str, relu: bool) -> torch.Tensor:
        """Model ``g``'s ``nn.Linear`` ``name`` on ``h[g]``: ``(G, n, in) -> (G, n, out)``."""
        out = torch.baddbmm(self.stack(f"{name}.bias").unsqueeze(1), h,
                            self.stack(f"{name}.weight"))
        return F.relu(out) if relu else out

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        return [{n: (v.t() if n in self.transposed else v).detach().cpu().contiguous().clone()
                 for n, v in zip(self.names, views, strict=True)} for views in self._views]


class StackedLeNet5(_Stacked):
    """``G`` LeNet-5 models (same input shape and pooling) as one grouped network."""

    #: ``forward_train`` wants the batch as ``(B, G, ...)`` (cheapest gather for grouped conv).
    batch_first = True

    def __init__(self, models: Sequence[LeNet5]):
        super().__init__(models)
        m0 = models[0]
        self.pools = m0.pools
        self.padding = m0.padding
        self.feature_shape = m0.feature_shape

    def _convs(self, x: torch.Tensor) -> torch.Tensor:
        for name, pad, pool in (("conv1", self.padding, self.pools[0]),
                                ("conv2", 0, self.pools[1])):
            w, b = self.cat(f"{name}.weight"), self.cat(f"{name}.bias")
            if pool == "avg":
                x = F.conv2d(x, fuse_avgpool(w), b, stride=2, padding=pad, groups=self.G)
            else:
                x = F.max_pool2d(F.conv2d(x, w, b, padding=pad, groups=self.G), 2)
            x = F.relu_(x)
        return x

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        c, hh, ww = self.feature_shape
        h = h.reshape(n, self.G, c * hh * ww).transpose(0, 1)  # (G, n, 400), flatten order (c,h,w)
        return self.dense(self.dense(self.dense(h, "fc1", True), "fc2", True), "fc3", False)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, G, C, H, W)``, model ``g``'s minibatch in ``x[:, g]``; logits
        ``(G, B, K)``."""
        B, G, C, H, W = x.shape
        x = x.reshape(B, G * C, H, W).contiguous(memory_format=torch.channels_last)
        return self._head(self._convs(x))

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C, H, W)`` shown to every model; logits ``(G, N, K)``.

        The images are copied ``G`` times into the grouped layout: measured 2-4x faster than
        one ungrouped first convolution with ``6 G`` output channels on the shared input.
        """
        return self.forward_train(x.unsqueeze(1).expand(-1, self.G, *x.shape[1:]))


class StackedSmallCNN(StackedLeNet5):
    """``G`` ``SmallCNN`` models (same input shape and widths) as one grouped network."""

    def __init__(self, models: Sequence[SmallCNN]):
        _Stacked.__init__(self, models)
        self.feature_shape = models[0].feature_shape

    def _convs(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("conv1", "conv2"):
            w, b = self.cat(f"{name}.weight"), self.cat(f"{name}.bias")
            x = F.relu_(F.max_pool2d(F.conv2d(x, w, b, padding=1, groups=self.G), 2))
        return x

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        c, hh, ww = self.feature_shape
        h = h.reshape(n, self.G, c * hh * ww).transpose(0, 1)
        return self.dense(self.dense(h, "fc1", True), "fc2", False)


class StackedMLP(_Stacked):
    """``G`` MLPs (same sizes) as batched matmuls."""

    batch_first = False

    def __init__(self, models: Sequence[MLP]):
        super().__init__(models)
        self.layers = [f"layers.{i}" for i in range(len(models[0].layers))] + ["out"]

    def _rest(self, h: torch.Tensor, start: int) -> torch.Tensor:
        for name in self.layers[start:-1]:
            h = self.dense(h, name, True)
        return self.dense(h, self.layers[-1], False)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(G, B, ...)``; logits ``(G, B, K)``."""
        return self._rest(x.flatten(2), 0)

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, ...)`` shown to every model; logits ``(G, N, K)``."""
        x = x.flatten(1)
        return self._rest(x.unsqueeze(0).expand(self.G, *x.shape), 0)
