"""Base-classifier architectures: LeNet-5, a CIFAR ResNet-18, an MLP, or a user factory.

- ``lenet5``: LeNet-5 with max pooling (the usual modern variant; the most accurate here);
- ``lenet5_avg``: LeNet-5 with the original's average subsampling (about 2x faster to
  train and evaluate with the fast path, some points less accurate on tiny sub-datasets);
- ``mlp``: two hidden layers (256, 128) on the flattened input;
- ``cnn``: a small VGG-style CNN for tiny sub-datasets: two 3x3 convolutions (16 and 32
  channels, padding 1), each followed by ReLU and 2x2 max pooling, then dense 128 and the
  output layer (no dropout: it measured no gain on 30-image MNIST sub-datasets);
- ``cnn_small``: the same with 8 and 16 channels and dense 64 (cheaper than LeNet-5);
- ``resnet18``: the CIFAR ResNet-18 (BatchNorm; trained by the per-model loop).

``build_model(name_or_factory, input_shape, n_classes)`` is the one constructor the trainers
use. ``input_shape`` is one sample's shape without the batch axis: ``(C, H, W)`` for images,
``(F,)`` for flat features (an MLP flattens whatever it gets). A factory is any callable
``factory(input_shape, n_classes) -> torch.nn.Module`` returning unnormalised logits; to run
it in worker processes it must be picklable (a module-level function).

Models see the inputs as given (no normalisation inside).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F

from poisoncert._validation import param_error
from poisoncert.training.settings import MODELS, ModelSpec, check_model

__all__ = ["CNN_WIDTHS", "MODELS", "LeNet5", "MLP", "ResNet18", "SmallCNN", "build_model",
           "check_model", "float32_default", "init_model", "probe_model"]

#: ``(conv1 channels, conv2 channels, hidden units)`` of the named ``SmallCNN`` variants.
CNN_WIDTHS = {"cnn": (16, 32, 128), "cnn_small": (8, 16, 64)}



class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998): conv 5x5 (6) -> pool -> conv 5x5 (16) -> pool -> 120 -> 84.

    Each 2x2 pooling comes before the ReLU, ``relu(pool(conv(x)))`` (as in the original's
    subsampling; for max pooling identical to the common ``pool(relu(conv(x)))``). Inputs
    smaller than 32x32 (MNIST's 28x28) get ``padding=2`` in the first convolution, the classic
    zero-padding to 32x32. ``pool``: ``"max"``, ``"avg"`` (the original's average
    subsampling) or one per pooling layer, e.g. ``("avg", "max")``.

    Because average pooling is linear, ``avgpool(conv5x5(x))`` is one stride-2 6x6
    convolution; the fast trainer (``poisoncert.training.fast``) uses that identity.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, input_size: int | Sequence[int]
                 = 28, pool: str | Sequence[str] = "max"):
        super().__init__()
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        pools = (pool, pool) if isinstance(pool, str) else tuple(pool)
        if len(pools) != 2 or any(p not in ("avg", "max") for p in pools):
            raise param_error("pool", "LeNet5", "'avg', 'max' or a pair of them", pool)
        self.pools = pools
        self.padding = 2 if min(h, w) < 32 else 0
        h1, w1 = (h + 2 * self.padding - 4) // 2, (w + 2 * self.padding - 4) // 2
        h2, w2 = (h1 - 4) // 2, (w1 - 4) // 2
        self.feature_shape = (16, h2, w2)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=self.padding)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * h2 * w2, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, pool in zip((self.conv1, self.conv2), self.pools, strict=True):
            x = F.relu(_POOL[pool](conv(x), 2))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


_POOL = {"avg": F.avg_pool2d, "max": F.max_pool2d}


class SmallCNN(nn.Module):
    """conv 3x3 (``c1``, padding 1) -> ReLU -> max-pool 2 -> conv 3x3 (``c2``, padding 1) ->
    ReLU -> max-pool 2 -> dense ``hidden`` -> ReLU -> dense ``n_classes``.

    The shape of Jia et al.'s bagging CNN (3x3 convolutions of 32 and 64 filters, dense 128)
    with a pooling after each convolution, which makes it about 6x cheaper at the same
    widths; without dropout. For 28x28 inputs the features are ``c2 x 7 x 7``.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, input_size: int | Sequence[int]
                 = 28, widths: Sequence[int] = CNN_WIDTHS["cnn"]):
        super().__init__()
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        c1, c2, hidden = (int(v) for v in widths)
        self.feature_shape = (c2, h // 2 // 2, w // 2 // 2)
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * self.feature_shape[1] * self.feature_shape[2], hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class MLP(nn.Module):
    """A multilayer perceptron on the flattened input: ``Linear -> ReLU`` per hidden layer."""

    def __init__(self, in_features: int, n_classes: int, hidden: Sequence[int] = (256, 128)):
        super().__init__()
        sizes = [int(in_features), *[int(h) for h in hidden]]
        self.layers = nn.ModuleList(nn.Linear(a, b)
                                    for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.out = nn.Linear(sizes[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.out(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 images (CIFAR variant: 3x3 stem, stride 1, no max pooling)."""

    def __init__(self, in_channels: int = 3, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def build_model(name_or_factory: ModelSpec, input_shape: Sequence[int], n_classes: int
                ) -> nn.Module:
    """A freshly initialised model (parameters from torch's global RNG; seed it first).

    ``input_shape``: one sample's shape, ``(C, H, W)`` or ``(F,)``. ``lenet5`` needs images of
    at least 12x12 (16x16 after its padding), ``resnet18`` images of any size >= 8x8.
    """
    spec = check_model(name_or_factory, "build_model", "name_or_factory")
    shape = tuple(int(s) for s in input_shape)
    if n_classes is None or int(n_classes) < 1:
        raise param_error("n_classes", "build_model", "an int >= 1", n_classes)
    n_classes = int(n_classes)
    if callable(spec):
        model = spec(shape, n_classes)
        if not isinstance(model, nn.Module):
            raise param_error("name_or_factory", "build_model", "a factory returning a "
                              "torch.nn.Module", type(model).__name__)
        return model
    if spec == "mlp":
        n_features = 1
        for s in shape:
            n_features *= s
        return MLP(n_features, n_classes)
    if len(shape) != 3:
        raise param_error("input_shape", "build_model", f"an image shape (C, H, W) for {spec}",
                          shape)
    c, h, w = shape
    if spec.startswith("lenet5"):
        if min(h, w) < 12:
            raise param_error("input_shape", "build_model",
                              f"an image shape (C, H, W) with H, W >= 12 for {spec}", shape)
        return LeNet5(c, n_classes, (h, w), pool="avg" if spec == "lenet5_avg" else "max")
    if spec in CNN_WIDTHS:
        if min(h, w) < 4:
            raise param_error("input_shape", "build_model",
                              f"an image shape (C, H, W) with H, W >= 4 for {spec}", shape)
        return SmallCNN(c, n_classes, (h, w), CNN_WIDTHS[spec])
    if min(h, w) < 8:
        raise param_error("input_shape", "build_model",
                          "an image shape (C, H, W) with H, W >= 8 for resnet18", shape)
    return ResNet18(c, n_classes)


#: Held while the process's RNG is forked, or its default dtype set, around a model built
#: from another thread's: two threads' forks interleaved would restore the state the second
#: one saved, not the one before (``probe_model``, ``inference``'s modules).
RNG_LOCK = threading.RLock()


#: ``float32_default``'s blocks open in all threads, and the caller's default before the first
#: of them: two threads' blocks interleaved (A enters, B enters, A leaves, B leaves) set the
#: caller's float64 back while B still built and trained, and left float32 for good after.
_F32_LOCK = threading.Lock()
_F32_DEPTH = 0
_F32_SAVED = torch.float32


@contextmanager
def float32_default() -> Iterator[None]:
    """torch's default dtype float32 (a fresh process's) for the block, the caller's restored
    after: a model is built, and trained, as in a fresh process whatever the caller set.
    Under ``torch.set_default_dtype(torch.float64)`` every parameter was made float64 and
    its initialisation drew other numbers, so a run's classifiers depended on the caller's
    default dtype (and a factory's module failed the float32 check of its forward)."""
    global _F32_DEPTH, _F32_SAVED
    with _F32_LOCK:  # the default is the process's: threads' blocks nest as one
        if _F32_DEPTH == 0:
            _F32_SAVED = torch.get_default_dtype()
        _F32_DEPTH += 1
        torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        with _F32_LOCK:
            _F32_DEPTH -= 1
            if _F32_DEPTH == 0:
                torch.set_default_dtype(_F32_SAVED)


def probe_model(name_or_factory: ModelSpec, input_shape: Sequence[int], n_classes: int
                ) -> nn.Module:
    """``build_model`` for a check or a shape (not a classifier): built under float32 as the
    classifiers are (``float32_default``), with the CPU generator forked, so the caller's
    torch RNG state and default dtype are as they were (``Ensemble.load`` and ``train_run``
    drew from the caller's generator before)."""
    with RNG_LOCK, torch.random.fork_rng(devices=[]), float32_default():
        return build_model(name_or_factory, input_shape, n_classes)


def init_model(name_or_factory: ModelSpec, input_shape: Sequence[int], n_classes: int,
               seed: int) -> nn.Module:
    """``build_model`` with the CPU generator seeded with ``seed``: built on the CPU (the same
    weights on every device), without touching the caller's global RNG state (the CPU's is
    forked; no device generator is seeded: ``torch.manual_seed`` would also seed CUDA's,
    which changes its state and took 0.75 s of a cProfiled 12 s MNIST 1/7 run of 1,000
    models on an H100). A factory must build on the CPU (the default device)."""
    with torch.random.fork_rng(devices=[]), float32_default():
        torch.random.default_generator.manual_seed(seed)
        return build_model(name_or_factory, input_shape, n_classes)
