"""Stacked networks: ``G`` independent models of one architecture trained as one network.

Each model of a group sees its own minibatch; the models never mix: the loss is the sum of
the ``G`` per-model mean losses, so each model's gradient is its own, and the update
(``optim.StackedOptimizer``) is elementwise. What is shared is the kernel launches, which is
where a small CPU loses its time training one tiny LeNet at a time, and a GPU is idle.

Every stacked net keeps the ``G`` models' parameters in **one** ``(G, P)`` tensor (``flat``;
each parameter a view of it) so that the optimizer, the loss and the schedule run over the
whole stack in a few kernels. Formulations ("stackings"):

- ``"twin"``: a hand-written stacked twin of a built-in architecture:
  ``StackedLeNet5`` (the models' channels side by side, each convolution one grouped
  (``groups=G``) channels-last convolution, dense layers batched matmuls (``baddbmm``); max
  pooling as grouped conv -> max-pool -> ReLU; average pooling: ``avgpool2x2(conv5x5(x))``
  is one stride-2 6x6 convolution with kernel ``k (*) box2x2 / 4``), ``StackedSmallCNN``,
  ``StackedMLP`` (batched matmuls) and ``StackedResNet18`` (grouped convolutions; BatchNorm
  over the ``G * C`` channels, so every classifier has its own batch statistics and its own
  running statistics);
- ``"bmm"``: the LeNet-5 and small-CNN twins with every convolution as unfold + one batched
  matmul over the group (``bmm_conv``: each classifier's patches times its kernels). On
  CUDA, cuDNN runs a grouped convolution's weight gradient as one kernel per classifier;
  this runs a step 1.45x (LeNet-5) to 1.56x (small CNN with warps) faster on an H100
  (``bench_gpu.py``, docs/benchmarks.md). On the CPU a LeNet-5 step measured 3.5-4x slower
  than the twin's; other models stack as ``"auto"`` does;
- ``"cmajor"``: the same twins with the activations classifier-major and channels-last,
  ``(G * B, H, W, C)``: each convolution is one patch copy (``patches``, its ``k k C``
  values per output pixel, already in the batched product's layout) and one batched
  matmul whose result is the next layer's input, with no permuted copy before or after
  (``bmm`` spends about 40% of an H100 step's kernel time in those copies); the patches'
  gradient folds back with ``k k`` strided additions. The batch arrives ``(G, B, ...)``
  (``batch_first`` False). ``StackedResNet18`` has this form too (its BatchNorm over each
  classifier's ``(B H W, C)`` rows, ``row_batch_norm``): every convolution a batched matmul
  at the device's matmul rate instead of cuDNN's grouped kernels. On an H100 LeNet-5 and
  the small CNN train and predict faster this way than on ``bmm`` (MNIST 1/7 T = 1000
  trained in 6.1 s against 7.5 s; predicting 1.8-2.6x), so ``fast`` picks it for them
  there (``CUDA_FAST``); ResNet-18's grouped twin measured faster (training in 5 of 6
  group sizes and precisions, up to 1.36x; predicting 3.5-3.8x), so among the stackings
  ``fast`` keeps the twin for it (on CUDA a run's ``fast`` trains it on the graphed loop,
  faster still where its settings allow: ``groups.CUDA_FAST_LOOP``);
- ``"vmap"``: any ``nn.Module`` (a user factory's): ``torch.func.functional_call`` over the
  stacked parameters and buffers under ``torch.func.vmap`` (BatchNorm's running statistics
  per classifier: its buffers are stacked too). Modules that draw random numbers (dropout)
  cannot be stacked this way (a classifier's draws would depend on its group), nor modules
  whose state dict is not their parameters and buffers (tied weights, non-persistent
  buffers): they are trained by the per-model loop.

``stacking(model, device, how)`` says which applies; ``stack_models(models, how)`` builds it.
``state_dicts()`` gives state dicts loadable into the plain modules (the reference twins).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from poisoncert.training.models import MLP, LeNet5, ResNet18, SmallCNN

__all__ = ["STACKINGS", "StackedFunctional", "StackedLeNet5", "StackedMLP", "StackedResNet18",
           "StackedSmallCNN", "batch_dependent", "bmm_conv", "cmajor_conv", "draws_random",
           "forward_draws", "fuse_avgpool", "patches", "path_stacking", "row_batch_norm",
           "shared_conv", "stack_models", "stackable", "stacking", "state_dict_is_own"]

#: Formulations ``stack_models`` knows (``"auto"`` picks one per model and device).
STACKINGS = ("auto", "twin", "bmm", "cmajor", "vmap")
_TWINS = {LeNet5: "StackedLeNet5", SmallCNN: "StackedSmallCNN", MLP: "StackedMLP",
          ResNet18: "StackedResNet18"}
#: The stacking ``training.path: fast`` means on CUDA, per built-in model: the fastest measured
#: there (docs/benchmarks.md, one H100; ``benchmarks/gpu_session.sh`` compares ``twin``, ``bmm``
#: and ``cmajor``). Models not listed (ResNet-18, whose grouped twin measured faster than its
#: ``cmajor`` form, and the models not measured) and user factories stack as ``"auto"``.
CUDA_FAST = {"lenet5": "cmajor", "cnn_small": "cmajor"}
#: Twins whose convolutions have the unfold + batched-matmul form (``"bmm"``).
_BMM_TWINS = (LeNet5, SmallCNN)
#: Twins with the classifier-major batched-matmul form (``"cmajor"``).
_CMAJOR_TWINS = (LeNet5, SmallCNN, ResNet18)
#: Most images (classifiers x inputs) one ``cmajor`` ResNet-18 evaluation pass holds: its
#: first block's 3x3 patches take 2.4 MB (float32) per image, 4.8 GB for 2,048, what a
#: training step of 32 classifiers x 64 images holds; the slices are fixed by the chunk and
#: the group, so predictions do not depend on anything else.
CMAJOR_EVAL_IMAGES = 2048
#: Half-precision dtypes, which ``patches``' gradient and ``row_batch_norm`` sum and normalise
#: in float32 (rounded once at the end).
_HALF = (torch.bfloat16, torch.float16)
#: Each model's segment of ``flat`` is padded to a multiple of this many elements (64 bytes
#: of float32: every model starts on a cache line).
_ALIGN = 16


def fuse_avgpool(w: torch.Tensor) -> torch.Tensor:
    """Kernel of ``avgpool2x2(conv(x, w))`` as one stride-2 convolution: ``(O, I, k+1, k+1)``."""
    return 0.25 * (F.pad(w, (0, 1, 0, 1)) + F.pad(w, (1, 0, 0, 1))
                   + F.pad(w, (0, 1, 1, 0)) + F.pad(w, (1, 0, 1, 0)))


def _random_modules(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def forward_draws(model: nn.Module, x: torch.Tensor) -> tuple[object, bool]:
    """``model(x)`` without gradients, and whether it drew from torch's random generators
    (the CPU's, and ``x``'s CUDA device's); torch's random state is restored after. The
    forward's own exceptions propagate."""
    cuda = x.device.type == "cuda"

    def state():
        return (torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if cuda else None)

    with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if cuda else []):
        before = state()
        out = model(x)
        after = state()
    return out, not torch.equal(before[0], after[0]) or (
        cuda and not torch.equal(before[1], after[1]))


def draws_random(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``model``'s forward in training mode on the first two rows of ``x`` (one row
    is repeated: BatchNorm needs two) draws from torch's random generators (``F.dropout``,
    ``torch.randn_like`` and the like, outside ``nn.Dropout`` modules, which ``stacking``
    sees without running anything): ``vmap`` keeps no stream per classifier, so such a model
    trains one classifier at a time. Run on a copy of the model (``forward_draws``); a model
    that cannot be copied or whose forward fails says False (training reports its error)."""
    x = x[:2] if len(x) >= 2 else x[:1].expand(2, *x.shape[1:])
    try:
        return forward_draws(copy.deepcopy(model).to(device=x.device, dtype=x.dtype).train(),
                             x)[1]
    except Exception:  # noqa: BLE001 - the user's code: training reports it
        return False


def state_dict_is_own(model: nn.Module) -> bool:
    """Whether the module's state dict is one entry per parameter and buffer: not so for a
    tied parameter (two names) or a non-persistent buffer (none), whose stacked state dicts
    could not be loaded back."""
    own = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    return sorted(own) == sorted(model.state_dict())


def batch_dependent(model: nn.Module) -> bool:
    """Whether a sample's output in training mode depends on the rest of its batch
    (BatchNorm's batch statistics)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def stacking(model: nn.Module, device=None, how: str = "auto") -> str | None:
    """The formulation that stacks ``model`` (``"twin"``, ``"bmm"``, ``"cmajor"`` or
    ``"vmap"``), or None (the per-model loop). ``how="auto"``: the hand-written twin where
    there is one (measured faster on the CPU than ``vmap``, which lowers convolutions to the
    same grouped kernels on CUDA but without the channels-last layout), else ``vmap``.
    ``how="bmm"``: the twin with unfold + batched-matmul convolutions for LeNet-5 and the
    small CNN; ``how="cmajor"``: the classifier-major batched-matmul twin of those and of
    ResNet-18; other models as ``"auto"``."""
    if how not in STACKINGS:
        raise ValueError(f"The 'stacking' parameter must be one of {STACKINGS}. Got {how!r}.")
    if (how == "bmm" and type(model) in _BMM_TWINS
            or how == "cmajor" and type(model) in _CMAJOR_TWINS):
        return how
    if how != "vmap" and type(model) in _TWINS:
        return "twin"
    if how == "twin" or _random_modules(model) or not state_dict_is_own(model):
        return None
    return "vmap"


def path_stacking(path: str, device=None, model=None) -> str:
    """The ``how`` of ``stacking`` for the engine's ``path`` on ``device`` for ``model`` (a
    built-in model's name, as ``training.model``; a factory or None: no built-in's):
    ``"vmap"``, ``"bmm"`` and ``"cmajor"`` name their stacking, ``"twin"`` is ``"auto"`` (the
    grouped-convolution twins), and ``"fast"`` is the device's fastest: ``CUDA_FAST``'s entry
    for the model on CUDA (``"cmajor"`` for LeNet-5 and the small CNN), ``"auto"`` elsewhere
    (``"reference"`` stacks nothing). A run records the path ``fast`` resolved to
    (``training.groups.recorded_path``): its formulation does not change with the device
    that resumes it or predicts with it."""
    if path == "fast":
        if device is None or torch.device(device).type != "cuda":
            return "auto"
        return CUDA_FAST.get(model, "auto") if isinstance(model, str) else "auto"
    return path if path in ("vmap", "bmm", "cmajor") else "auto"


def stackable(model: nn.Module, how: str = "auto") -> bool:
    """Whether ``stack_models(..., how)`` can stack this module's type."""
    return stacking(model, how=how) is not None


def stack_models(models: Sequence[nn.Module], how: str = "auto", *,
                 state_dicts: Sequence[dict] | None = None, device=None,
                 dtype: torch.dtype | None = None):
    """The stacked form of ``G`` same-shaped models (their current parameters, copied), on
    ``device`` in ``dtype`` (default: the parameters'), one copy per parameter name. With
    ``state_dicts``, the ``G`` models are those state dicts loaded into ``models[0]``'s
    architecture (a template: it may live on the meta device), without building them."""
    kind = stacking(models[0], how=how)
    if kind is None:
        raise TypeError(f"no stacked form ({how}) for {type(models[0]).__name__}")
    kw = dict(state_dicts=state_dicts, device=device, dtype=dtype)
    if kind == "vmap":
        return StackedFunctional(models, **kw)
    net = globals()[_TWINS[type(models[0])]](models, **kw)
    if kind in ("bmm", "cmajor"):
        net.conv = kind
    return net


class _Stacked:
    """Stacked parameters in one flat tensor, stacked buffers, and per-model state dicts.

    ``flat`` ``(G, P)`` holds model ``g``'s parameters in row ``g`` (each parameter's elements
    in the module's order, a ``Linear`` weight transposed to ``(in, out)``, the plain ``bmm``
    layout); ``stack(name)`` is parameter ``name`` of all models, a ``(G, *shape)`` view of
    ``flat`` that autograd fills (a leaf), ``cat(name)`` the same with the first two axes
    merged (``conv1.weight``: ``(6 G, 1, 5, 5)``). ``flat_grad()`` gathers the gradients in
    the same layout, so that one elementwise update serves the whole stack.
    """

    #: Whether the grouped-convolution and ``bmm`` forms take the batch as ``(B, G, ...)``
    #: (the LeNet-5, small-CNN and ResNet-18 twins); ``cmajor`` and the others take
    #: ``(G, B, ...)``.
    grouped_batch_first = False
    #: Convolutions as grouped convolutions (``"grouped"``), unfold + batched matmul
    #: (``"bmm"``), or patches + batched matmul on classifier-major activations (``"cmajor"``).
    conv = "grouped"
    #: Whether ``nn.Linear`` weights are stored transposed, ``(in, out)``.
    transpose_linear = True

    def __init__(self, models: Sequence[nn.Module], state_dicts: Sequence[dict] | None = None,
                 device=None, dtype: torch.dtype | None = None):
        first = models[0]
        if state_dicts is None:  # the models' own parameters and buffers
            named = [dict(m.named_parameters()) for m in models]
            bufs = [dict(m.named_buffers()) for m in models]
        else:  # models[0] is a template (the meta device will do); the values are these
            pnames = [n for n, _ in first.named_parameters()]
            bnames = [n for n, _ in first.named_buffers()]
            named = [{n: sd[n] for n in pnames} for sd in state_dicts]
            bufs = [{n: sd[n] for n in bnames} for sd in state_dicts]
        self.G = G = len(named)
        p0 = next(iter(named[0].values()))
        self.device = p0.device if device is None else torch.device(device)
        self.dtype = p0.dtype if dtype is None else dtype
        self.names = list(named[0])
        self.transposed = {f"{name}.weight" for name, mod in first.named_modules()
                           if isinstance(mod, nn.Linear) and self.transpose_linear}
        self.shapes = {n: tuple(self._layout(n, named[0][n]).shape) for n in self.names}
        self.offsets, off = {}, 0
        for n in self.names:
            self.offsets[n] = off
            off += math.prod(self.shapes[n])
        self.P = -(-off // _ALIGN) * _ALIGN
        self.flat = torch.zeros(G, self.P, device=self.device, dtype=self.dtype)
        with torch.no_grad():  # a copy per parameter name, converted where it lands
            for n in self.names:
                self._view(self.flat, n).copy_(torch.stack([self._layout(n, d[n])
                                                            for d in named]))
        self._leaves = {n: self._view(self.flat, n).requires_grad_(True) for n in self.names}
        self._grad = torch.zeros_like(self.flat)
        self.buffer_names = [n for n, _ in first.named_buffers()]
        self.buffers = {}
        for n in self.buffer_names:
            b = torch.stack([d[n].detach() for d in bufs])
            self.buffers[n] = b.to(self.device, self.dtype if b.is_floating_point() else b.dtype,
                                   copy=True)

    @property
    def batch_first(self) -> bool:
        """Whether ``forward_train`` wants the batch as ``(B, G, ...)`` (else ``(G, B, ...)``)."""
        return self.grouped_batch_first and self.conv != "cmajor"

    def _layout(self, name: str, p: torch.Tensor) -> torch.Tensor:
        return p.detach().t() if name in self.transposed else p.detach()

    def _view(self, flat: torch.Tensor, name: str) -> torch.Tensor:
        o = self.offsets[name]
        return flat[:, o:o + math.prod(self.shapes[name])].view(self.G, *self.shapes[name])

    def parameters(self) -> list[torch.Tensor]:
        """The stacked leaves ``(G, *shape)`` (what autograd fills), views of ``flat``."""
        return list(self._leaves.values())

    def zero_grad(self) -> None:
        for leaf in self._leaves.values():
            leaf.grad = None

    def flat_grad(self) -> torch.Tensor:
        """The gradients of the last backward pass in ``flat``'s layout ``(G, P)``."""
        with torch.no_grad():
            for n, leaf in self._leaves.items():
                view = self._view(self._grad, n)
                if leaf.grad is None:
                    view.zero_()
                else:
                    view.copy_(leaf.grad)
        return self._grad

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

    def state_dicts(self, device="cpu") -> list[dict[str, torch.Tensor]]:
        """Per-model state dicts (copies on ``device``) loadable into the plain modules: one
        transfer of the stack, one contiguous copy per name (not one per model and name: a
        thousand models' ``state_dicts`` took 0.4-0.6 s on the CPU that way), then each
        model's own copy."""
        flat = self.flat.detach().to(device)
        stacked = {}
        for n in self.names:
            v = self._view(flat, n)
            stacked[n] = (v.transpose(1, 2) if n in self.transposed else v).contiguous()
        for n in self.buffer_names:
            stacked[n] = self.buffers[n].detach().to(device)
        return [{n: t[g].clone() for n, t in stacked.items()} for g in range(self.G)]

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class StackedLeNet5(_Stacked):
    """``G`` LeNet-5 models (same input shape and pooling) as one grouped network."""

    grouped_batch_first = True

    def __init__(self, models: Sequence[LeNet5], **kw):
        super().__init__(models, **kw)
        m0 = models[0]
        self.pools = m0.pools
        self.padding = m0.padding
        self.feature_shape = m0.feature_shape

    def _convs(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``x``: ``(B, G * C, H, W)`` channels-last (``cmajor``: ``(G * B, H, W, C)``), or
        with ``shared`` ``(N, C, H, W)`` shown to every model (the first convolution then
        runs as one matrix product)."""
        for name, pad, pool in (("conv1", self.padding, self.pools[0]),
                                ("conv2", 0, self.pools[1])):
            w, b = self.cat(f"{name}.weight"), self.cat(f"{name}.bias")
            w, stride = (fuse_avgpool(w), 2) if pool == "avg" else (w, 1)
            if shared:
                x, shared = shared_conv(x, w, b, stride, pad), False
            else:
                x = self._gconv(x, w, b, stride, pad)
            if pool == "max":
                x = self._max_pool(x)
            x = F.relu_(x)
        return x

    def _gconv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int,
               padding: int) -> torch.Tensor:
        """The group's convolution ``w`` (``(G * O, C, k, k)``) on ``x`` ``(B, G * C, H, W)``
        (``cmajor``: ``(G * B, H, W, C)``, the result ``(G * B, oh, ow, O)``)."""
        if self.conv == "cmajor":
            return cmajor_conv(x, w, b, self.G, stride, padding)
        if self.conv == "bmm":
            return bmm_conv(x, w, b, self.G, stride, padding)
        return F.conv2d(x, w, b, stride=stride, padding=padding, groups=self.G)

    def _max_pool(self, x: torch.Tensor) -> torch.Tensor:
        """2x2 max pooling; ``cmajor``'s ``(N, H, W, C)`` as the channels-last ``(N, C, H, W)``
        it is."""
        if self.conv == "cmajor":
            return F.max_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        return F.max_pool2d(x, 2)

    def _features(self, h: torch.Tensor) -> torch.Tensor:
        """The last convolution's output as ``(G, n, c * hh * ww)``, each model's features
        flattened in its module's ``(c, h, w)`` order."""
        c, hh, ww = self.feature_shape
        if self.conv == "cmajor":  # (G * n, hh, ww, c)
            return h.reshape(self.G, -1, hh, ww, c).permute(0, 1, 4, 2, 3).reshape(
                self.G, -1, c * hh * ww)
        return h.reshape(h.shape[0], self.G, c * hh * ww).transpose(0, 1)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        h = self._features(h)  # (G, n, 400)
        return self.dense(self.dense(self.dense(h, "fc1", True), "fc2", True), "fc3", False)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """``forward_train``'s ``x`` in the layout the first convolution takes."""
        if self.conv == "cmajor":  # (G, B, C, H, W) -> (G * B, H, W, C)
            G, B, C, H, W = x.shape
            return x.permute(0, 1, 3, 4, 2).reshape(G * B, H, W, C)
        B, G, C, H, W = x.shape
        return x.reshape(B, G * C, H, W).contiguous(
            memory_format=torch.contiguous_format if self.conv == "bmm" else torch.channels_last)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, G, C, H, W)``, model ``g``'s minibatch in ``x[:, g]`` (``cmajor``:
        ``(G, B, C, H, W)``, in ``x[g]``); logits ``(G, B, K)``."""
        return self._head(self._convs(self._input(x)))

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C, H, W)`` shown to every model; logits ``(G, N, K)``.

        ``cmajor`` copies the images ``G`` times, classifier-major. Otherwise, on the CPU the
        first convolution of all ``G`` models is one matrix product of the shared input's
        patches (``shared_conv``); elsewhere the images are copied ``G`` times into the
        grouped layout.
        """
        if self.conv == "cmajor":
            return self.forward_train(x.unsqueeze(0).expand(self.G, *x.shape))
        if x.device.type == "cpu":
            return self._head(self._convs(x, shared=True))
        return self.forward_train(x.unsqueeze(1).expand(-1, self.G, *x.shape[1:]))


def bmm_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, G: int, stride: int,
             padding: int) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride, padding, groups=G)`` as unfold + one batched matmul:
    group ``g``'s patches (``B oh ow`` rows of ``C k k`` values, ``F.unfold``'s order) times
    its ``O`` kernels, ``(B, G * O, oh, ow)``. Each output is one dot product over ``C k k``
    values of its own group, so a classifier's outputs do not depend on the others'."""
    B = x.shape[0]
    O, C, kh, kw = w.shape[0] // G, w.shape[1], w.shape[2], w.shape[3]
    oh = (x.shape[2] + 2 * padding - kh) // stride + 1
    ow = (x.shape[3] + 2 * padding - kw) // stride + 1
    K = C * kh * kw
    cols = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (B, G * K, oh * ow)
    cols = cols.view(B, G, K, oh * ow).permute(1, 0, 3, 2).reshape(G, B * oh * ow, K)
    wt = w.reshape(G, O, K).transpose(1, 2)  # (G, K, O)
    out = torch.bmm(cols, wt) if b is None else torch.baddbmm(b.view(G, 1, O), cols, wt)
    return out.view(G, B, oh, ow, O).permute(1, 0, 4, 2, 3).reshape(B, G * O, oh, ow)


class _Patches(torch.autograd.Function):
    """``patches``' forward (one strided copy) and backward (``kh kw`` strided additions, in
    float32 for bfloat16 and float16 gradients, rounded once at the end, as ``col2im``
    accumulates)."""

    @staticmethod
    def forward(ctx, x, kh: int, kw: int, stride: int, padding: int):
        ctx.geometry = (x.shape, kh, kw, stride, padding)
        if padding:
            x = F.pad(x, (0, 0, padding, padding, padding, padding))
        N, H, W, C = x.shape
        oh, ow = (H - kh) // stride + 1, (W - kw) // stride + 1
        s0, s1, s2, s3 = x.stride()
        view = x.as_strided((N, oh, ow, kh, kw, C),
                            (s0, s1 * stride, s2 * stride, s1, s2, s3))
        return view.clone(memory_format=torch.contiguous_format).view(N, oh, ow, kh * kw * C)

    @staticmethod
    def backward(ctx, grad):
        shape, kh, kw, stride, padding = ctx.geometry
        N, H, W, C = shape
        oh, ow = grad.shape[1:3]
        g = grad.reshape(N, oh, ow, kh, kw, C)
        acc = torch.float32 if grad.dtype in _HALF else grad.dtype
        out = grad.new_zeros(N, H + 2 * padding, W + 2 * padding, C, dtype=acc)
        for i in range(kh):  # a fixed order: every pixel's sum is the same in every group
            for j in range(kw):
                out[:, i:i + stride * (oh - 1) + 1:stride,
                    j:j + stride * (ow - 1) + 1:stride] += g[:, :, :, i, j]
        out = out[:, padding:padding + H, padding:padding + W]
        return out.to(grad.dtype), None, None, None, None


def patches(x: torch.Tensor, kh: int, kw: int, stride: int = 1,
            padding: int = 0) -> torch.Tensor:
    """The ``kh x kw`` patches of channels-last images ``x`` ``(N, H, W, C)``, zero-padded by
    ``padding``: ``(N, oh, ow, kh kw C)``, each output pixel's values in ``(kh, kw, C)``
    order (one copy; its gradient adds each patch value back to its pixel)."""
    return _Patches.apply(x, kh, kw, stride, padding)


def cmajor_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, G: int, stride: int,
                padding: int) -> torch.Tensor:
    """``G`` models' convolutions on classifier-major channels-last activations: ``x``
    ``(G * B, H, W, C)``, model ``g``'s images in rows ``g B:(g + 1) B``, kernels ``w``
    ``(G * O, C, kh, kw)``; ``(G * B, oh, ow, O)``. Model ``g``'s patches
    ``(B oh ow, kh kw C)`` times its kernels ``(kh kw C, O)``: one batched matmul whose
    result is already the next layer's layout. Each output is one dot product over its own
    model's ``kh kw C`` values, so a classifier's outputs do not depend on the others'."""
    O, C, kh, kw = w.shape[0] // G, w.shape[1], w.shape[2], w.shape[3]
    cols = patches(x, kh, kw, stride, padding)  # (G * B, oh, ow, K)
    N, oh, ow, K = cols.shape
    wt = w.reshape(G, O, C, kh, kw).permute(0, 3, 4, 2, 1).reshape(G, K, O)
    rows = cols.view(G, (N // G) * oh * ow, K)
    out = torch.bmm(rows, wt) if b is None else torch.baddbmm(b.view(G, 1, O), rows, wt)
    return out.view(N, oh, ow, O)


def shared_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int,
                padding: int) -> torch.Tensor:
    """``F.conv2d(x, w, b, stride, padding)`` (no groups) as one matrix product of ``x``'s
    patches with the ``O`` kernels: ``(N, O, oh, ow)``, channels-last.

    The stacked models' first convolution on inputs they share (evaluation): ``O = G * c``
    kernels of ``C`` channels. oneDNN runs this shape (1 input channel, ``6 G`` outputs)
    slowly on the CPU: grouped (``groups=G``) it pads each group's 6 outputs to 16, ungrouped
    it measured 3-5x slower still; the patches (``N oh ow x C k k``, copied once) times the
    kernels is one well-shaped ``mm`` (docs/benchmarks.md). Each output is one dot product
    over ``C k k`` patch values, whatever ``O``, so a model's outputs do not depend on the
    others'.
    """
    N, C = x.shape[:2]
    O, _, kh, kw = w.shape
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    patches = x.unfold(2, kh, stride).unfold(3, kw, stride)  # (N, C, oh, ow, kh, kw)
    oh, ow = patches.shape[2:4]
    rows = patches.permute(0, 2, 3, 1, 4, 5).reshape(N * oh * ow, C * kh * kw)
    out = torch.mm(rows, w.reshape(O, C * kh * kw).t()).view(N, oh, ow, O)
    if b is not None:
        out += b
    return out.permute(0, 3, 1, 2)


class _RowBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of ``G`` classifiers' classifier-major rows ``x`` ``(G, M, C)``:
    classifier ``g``'s channel ``c`` normalised by the mean and biased variance of its own
    ``M`` values ``x[g, :, c]`` (its minibatch's pixels), as ``nn.BatchNorm2d`` does. Returns
    ``y`` (``x``'s dtype) and, without gradient, the mean and the biased variance ``(G, C)``
    (for the running statistics).

    Statistics and normalisation run in float32 for bfloat16 and float16 inputs (as cuDNN's
    batch norm does) and in the input's dtype otherwise; the backward pass is the usual
    three-term formula, two reductions and one elementwise pass."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float):
        xf = x.float() if x.dtype in _HALF else x
        var, mean = torch.var_mean(xf, dim=1, correction=0, keepdim=True)  # (G, 1, C)
        invstd = torch.rsqrt(var + eps)
        scale = weight.unsqueeze(1).to(xf.dtype) * invstd
        y = torch.addcmul(bias.unsqueeze(1).to(xf.dtype) - mean * scale, xf, scale)
        ctx.save_for_backward(x, weight, mean, invstd)
        stats = mean.squeeze(1), var.squeeze(1)
        ctx.mark_non_differentiable(*stats)
        return y.to(x.dtype), *stats

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):
        x, weight, mean, invstd = ctx.saved_tensors
        xf = x.float() if x.dtype in _HALF else x
        dyf = dy.to(xf.dtype)
        M = x.shape[1]
        xhat = (xf - mean) * invstd
        dbias = dyf.sum(1, keepdim=True)  # (G, 1, C)
        dweight = (dyf * xhat).sum(1, keepdim=True)
        dx = None
        if ctx.needs_input_grad[0]:
            scale = weight.unsqueeze(1).to(xf.dtype) * invstd
            # dx = scale * (dy - dbias / M - xhat * dweight / M)
            dx = (dyf - dbias / M - xhat * (dweight / M)) * scale
            dx = dx.to(x.dtype)
        return (dx, dweight.squeeze(1).to(weight.dtype), dbias.squeeze(1).to(weight.dtype),
                None)


def row_batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``_RowBatchNorm``: ``x`` ``(G, M, C)``, ``weight`` and ``bias`` ``(G, C)``; returns
    ``(y, mean, biased variance)``."""
    return _RowBatchNorm.apply(x, weight, bias, eps)


class StackedSmallCNN(StackedLeNet5):
    """``G`` ``SmallCNN`` models (same input shape and widths) as one grouped network."""

    def __init__(self, models: Sequence[SmallCNN], **kw):
        _Stacked.__init__(self, models, **kw)
        self.feature_shape = models[0].feature_shape

    def _convs(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        for name in ("conv1", "conv2"):
            w, b = self.cat(f"{name}.weight"), self.cat(f"{name}.bias")
            if shared:
                x, shared = shared_conv(x, w, b, 1, 1), False
            else:
                x = self._gconv(x, w, b, 1, 1)
            x = F.relu_(self._max_pool(x))
        return x

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.dense(self.dense(self._features(h), "fc1", True), "fc2", False)


class StackedMLP(_Stacked):
    """``G`` MLPs (same sizes) as batched matmuls."""

    def __init__(self, models: Sequence[MLP], **kw):
        super().__init__(models, **kw)
        self.layers = [f"layers.{i}" for i in range(len(models[0].layers))] + ["out"]

    def _rest(self, h: torch.Tensor) -> torch.Tensor:
        for name in self.layers[:-1]:
            h = self.dense(h, name, True)
        return self.dense(h, self.layers[-1], False)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(G, B, ...)``; logits ``(G, B, K)``."""
        return self._rest(x.flatten(2))

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, ...)`` shown to every model; logits ``(G, N, K)``."""
        x = x.flatten(1)
        return self._rest(x.unsqueeze(0).expand(self.G, *x.shape))


class StackedResNet18(_Stacked):
    """``G`` CIFAR ResNet-18 models as one grouped network with per-classifier BatchNorm.

    Activations are ``(B, G * C, H, W)``: every convolution is grouped (``groups=G``), and
    BatchNorm over the ``G * C`` channels normalises each classifier's channels by its own
    minibatch's statistics and updates its own running statistics (``buffers``), exactly as
    ``G`` separate ``nn.BatchNorm2d`` modules do. The layout is channels-last on CUDA (where
    cuDNN prefers it) and contiguous on the CPU.

    ``conv = "cmajor"``: activations classifier-major and channels-last, ``(G * B, H, W, C)``;
    every convolution is ``cmajor_conv`` (one patch copy and one batched matmul with ``G``
    products of ``B oh ow x 9 C`` patches by ``9 C x O`` kernels, at the matmul rate of the
    device instead of cuDNN's grouped kernels), BatchNorm ``row_batch_norm`` over each
    classifier's ``(B H W, C)`` rows, the average pool a mean over each image's rows.
    """

    grouped_batch_first = True

    def __init__(self, models: Sequence[ResNet18], **kw):
        super().__init__(models, **kw)
        m0 = models[0]
        self.momentum = m0.bn1.momentum
        self.eps = m0.bn1.eps
        self.blocks = []
        for li in range(1, 5):
            for bi in range(2):
                blk = getattr(m0, f"layer{li}")[bi]
                self.blocks.append((f"layer{li}.{bi}", blk.conv1.stride[0],
                                    len(blk.shortcut) > 0))
        self.memory_format = (torch.channels_last if self.device.type == "cuda"
                              else torch.contiguous_format)
        self.training = True

    def _conv(self, x, name: str, stride: int = 1, padding: int = 1):
        if self.conv == "cmajor":
            return cmajor_conv(x, self.cat(f"{name}.weight"), None, self.G, stride, padding)
        return F.conv2d(x, self.cat(f"{name}.weight"), None, stride=stride, padding=padding,
                        groups=self.G)

    def _bn(self, x, name: str):
        rm, rv = self.buffers[f"{name}.running_mean"], self.buffers[f"{name}.running_var"]
        if self.training:
            self.buffers[f"{name}.num_batches_tracked"].add_(1)
        if self.conv == "cmajor":
            return self._row_bn(x, name, rm, rv)
        return F.batch_norm(x, rm.view(-1), rv.view(-1), self.cat(f"{name}.weight"),
                            self.cat(f"{name}.bias"), self.training, self.momentum, self.eps)

    def _row_bn(self, x, name: str, rm: torch.Tensor, rv: torch.Tensor) -> torch.Tensor:
        """``_bn`` on ``cmajor``'s ``(G * B, H, W, C)``: each classifier's ``B H W`` rows."""
        w, b = self.stack(f"{name}.weight"), self.stack(f"{name}.bias")  # (G, C)
        rows = x.view(self.G, -1, x.shape[-1])
        if not self.training:  # the running statistics, as BatchNorm's eval mode (bfloat16
            # inputs in float32, rounded once, as in training)
            scale = (w * torch.rsqrt(rv + self.eps)).unsqueeze(1)
            shift = b.unsqueeze(1) - rm.unsqueeze(1) * scale
            y = torch.addcmul(shift, rows.to(scale.dtype) if rows.dtype in _HALF else rows,
                              scale)
            return y.to(rows.dtype).view(x.shape)
        y, mean, var = row_batch_norm(rows, w, b, self.eps)
        n, m = rows.shape[1], self.momentum
        with torch.no_grad():  # BatchNorm's update: the unbiased variance, as torch's
            rm.mul_(1 - m).add_(mean.to(rm.dtype), alpha=m)
            rv.mul_(1 - m).add_(var.to(rv.dtype) * (n / max(n - 1, 1)), alpha=m)
        return y.view(x.shape)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, G, C, H, W)`` (``cmajor``: ``(G, B, C, H, W)``); logits ``(G, B, K)``."""
        cmajor = self.conv == "cmajor"
        if cmajor:  # (G B, H, W, C)
            G, B, C, H, W = x.shape
            x = x.permute(0, 1, 3, 4, 2).reshape(G * B, H, W, C)
        else:  # (B, G C, H, W)
            B = x.shape[0]
            x = x.reshape(B, -1, *x.shape[-2:]).contiguous(memory_format=self.memory_format)
        x = F.relu(self._bn(self._conv(x, "conv1"), "bn1"))
        for name, stride, proj in self.blocks:
            out = F.relu(self._bn(self._conv(x, f"{name}.conv1", stride), f"{name}.bn1"))
            out = self._bn(self._conv(out, f"{name}.conv2"), f"{name}.bn2")
            if proj:
                sc = self._bn(self._conv(x, f"{name}.shortcut.0", stride, 0), f"{name}.shortcut.1")
            else:
                sc = x
            x = F.relu(out + sc)
        if cmajor:  # the average pool: the mean of each image's rows
            h = x.view(self.G, B, -1, x.shape[-1]).mean(2)
        else:
            h = F.adaptive_avg_pool2d(x, 1).reshape(B, self.G, -1).transpose(0, 1)
        return self.dense(h, "fc", False)  # (G, B, 512) -> (G, B, K)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, G, C, H, W)`` (``cmajor``: ``(G, B, C, H, W)``); logits ``(G, B, K)``
        (BatchNorm in training mode)."""
        self.training = True
        return self._forward(x)

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, C, H, W)`` shown to every model; logits ``(G, N, K)`` (running
        statistics)."""
        self.training = False
        try:
            if self.conv == "cmajor":  # at most CMAJOR_EVAL_IMAGES copies at once
                step = max(1, CMAJOR_EVAL_IMAGES // self.G)
                return torch.cat([self._forward(p.unsqueeze(0).expand(self.G, *p.shape))
                                  for p in x.split(step)], dim=1)
            return self._forward(x.unsqueeze(1).expand(-1, self.G, *x.shape[1:]))
        finally:
            self.training = True


def _input_in_statistics_dtype(module: nn.Module, args: tuple) -> tuple | None:
    """A BatchNorm's input in its running statistics' dtype: under bfloat16 autocast a
    convolution hands it bfloat16, and CUDA's batched (``vmap``) batch-norm backward refuses
    float32 statistics with a bfloat16 input; in float32 it is the plain module's arithmetic
    (cuDNN computes a bfloat16 batch norm in float32). A no-op without autocast."""
    stats = getattr(module, "running_mean", None)
    x = args[0]
    if stats is None or x.dtype == stats.dtype:
        return None
    return (x.to(stats.dtype), *args[1:])


class StackedFunctional(_Stacked):
    """Any ``G`` same-shaped modules through ``torch.func.vmap`` of ``functional_call``.

    Parameters are views of ``flat`` (in the module's own layout), buffers are stacked
    ``(G, *shape)`` and updated in place by the modules (BatchNorm's running statistics are
    each classifier's own).
    """

    transpose_linear = False

    def __init__(self, models: Sequence[nn.Module], **kw):
        super().__init__(models, **kw)
        self.base = copy.deepcopy(models[0]).to("meta")
        for m in self.base.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_input_in_statistics_dtype)

    def _call(self, x: torch.Tensor, in_dims_x) -> torch.Tensor:
        from torch.func import functional_call, vmap

        base = self.base

        def one(params, buffers, xb):
            return functional_call(base, (params, buffers), (xb,))

        return vmap(one, in_dims=(0, 0, in_dims_x))(self._leaves, self.buffers, x)

    def forward_train(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(G, B, ...)``; logits ``(G, B, K)``."""
        self.base.train()
        return self._call(x, 0)

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(N, ...)`` shown to every model; logits ``(G, N, K)``."""
        self.base.eval()
        try:
            return self._call(x, None)
        finally:
            self.base.train()
