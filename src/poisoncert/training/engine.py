"""Train base classifiers on sub-datasets and collect their test-set predictions.

``train_predict`` is the entry point: classifier ``i`` is trained on ``x_train[subsets[i]]``
(the paper's Algorithm 2: minibatches drawn with replacement, class-balanced, from the
sub-dataset, ``D^c`` included when the caller appended it) for a fixed number of steps, then
predicts every test sample. Two formulations give the same classifiers:

- ``path="reference"``: one ``torch.nn.Module`` and one optimizer per classifier, a plain loop;
- ``path="fast"``: ``group_size`` classifiers stacked as one network (``poisoncert.training.
  fast``: grouped channels-last convolutions, batched matmuls, one optimizer over the stacked
  tensors), for the architectures that have a stacked twin (``lenet5``, ``cnn``,
  ``cnn_small``, ``mlp``); others use the per-model loop.

Everything about classifier ``i`` (initialisation, minibatches, shifts) derives from
``selection.init_seed(seeds[i])``, its subset and the config, never from its neighbours.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import numbers
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from poisoncert._validation import check_choice, check_int, check_int_array, check_real, param_error
from poisoncert.selection import init_seed
from poisoncert.training.fast import stack_models, stackable
from poisoncert.training.models import ModelSpec, build_model, check_model

__all__ = [
    "ABSTAIN",
    "DEFAULT_GROUP_SIZE",
    "Minibatches",
    "TrainConfig",
    "group_bounds",
    "load_weights",
    "sample_minibatches",
    "save_weights",
    "train_predict",
    "train_predict_with_weights",
    "weights_from_bytes",
    "weights_to_bytes",
]

#: Prediction of a classifier trained on an empty sub-dataset (it abstains).
ABSTAIN = -1

#: Classifiers trained together by the fast path when ``TrainConfig.group_size`` is ``None``.
DEFAULT_GROUP_SIZE = 8

OPTIMIZERS = ("adam", "sgd", "adadelta")
DTYPES = ("float32", "float64")
PATHS = ("fast", "reference")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How every base classifier of a run is trained (stored with the run; hashable).

    - ``model``: ``"lenet5"`` (max pooling), ``"lenet5_avg"`` (average pooling), ``"mlp"``,
      ``"resnet18"`` or a factory ``(input_shape, n_classes) -> torch.nn.Module`` (a
      module-level function, to run in worker processes; one returning a ``LeNet5`` or
      ``MLP`` gets the fast path).
    - ``steps`` minibatches of ``batch_size`` samples each: the sub-dataset is expanded to
      ``steps * batch_size`` draws with replacement (the paper's WeightedRandomSampler),
      whatever its size.
    - ``optimizer`` (``adam``, ``sgd`` with ``momentum``, ``adadelta``), ``lr``,
      ``weight_decay`` (L2, added to the gradient, torch's convention); ``lr_schedule``
      ``"constant"`` or ``"cosine"`` (step ``s`` of ``S`` uses ``lr * (1 + cos(pi s / S)) / 2``).
    - ``balance``: draw sample ``j`` with probability proportional to ``1 / n_{y_j}``, the
      inverse count of its class in the sub-dataset (the paper's weight balance), so every
      class present is drawn equally often in expectation; ``False``: uniformly.
    - ``augment``: shift each drawn image by ``(dy, dx)``, uniform integers in
      ``[-max_shift, max_shift]`` (zero fill); ignored for flat ``(N, F)`` inputs.
    - Random warps (with ``augment``, when any of these is above 0): each drawn image is
      resampled (bilinear, zero fill) through a random affine map, a rotation uniform in
      ``[-rotation, rotation]`` degrees, a scale in ``[1 - scale, 1 + scale]``, a shear in
      ``[-shear, shear]`` degrees and a translation uniform in ``[-max_shift, max_shift]``
      pixels per axis (continuous; it replaces the integer shifts), plus, when
      ``elastic > 0``, a smooth elastic displacement: independent normal displacements of
      standard deviation ``elastic`` pixels on a coarse grid (one node per 4 pixels, at
      least 2 per axis) interpolated bilinearly over the image (Simard et al.'s elastic
      distortions, smoothed by interpolation instead of a Gaussian filter).
    - ``dtype``: ``float32`` or ``float64`` (training and inference).
    - ``group_size``: classifiers trained as one stacked network by the fast path
      (``None``: ``DEFAULT_GROUP_SIZE``); part of the numerics, so keep it fixed within a run.
    - ``eval_batch_size``: test images per forward pass (fixed, so predictions never depend on
      how the test set is split).

    The most accurate setting measured for 30-image MNIST sub-datasets is
    ``model="cnn_small"``, 2000 steps, ``lr=8e-3``, ``lr_schedule="cosine"`` and warps
    ``rotation=15, scale=0.15, shear=10, max_shift=3, elastic=1`` (about 12x the defaults'
    cost; ``experiments/mnist_ns30.yaml``, and the learner ablation in ``docs/results.md``).
    The defaults are the recommended cheap setting for LeNet-5 on MNIST-sized sub-datasets (10-30
    images): 200 Adam steps (lr 3e-3) of 32 class-balanced draws shifted by up to 2 pixels.
    Measured on MNIST (ns = 30, bagging with replacement, 20 classifiers, 10,000 test images):
    mean base accuracy 0.63 (0.58 without the shifts, 0.61 with lr 1e-3, 0.63 with 100 steps
    and 0.64 with 400, 0.59 with ``lenet5_avg``): ``benchmarks/bench_training.py --accuracy``.
    T = 1000 such classifiers on full MNIST, 10,000 test images: about 4 minutes with
    ``workers=2`` on 2 CPU cores.
    """

    model: ModelSpec = "lenet5"
    steps: int = 200
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 3e-3
    lr_schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    balance: bool = True
    augment: bool = True
    max_shift: int = 2
    rotation: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic: float = 0.0
    dtype: str = "float32"
    group_size: int | None = None
    eval_batch_size: int = 64

    def __post_init__(self):
        w = "TrainConfig"
        put = object.__setattr__
        put(self, "model", check_model(self.model, w))
        put(self, "steps", check_int(self.steps, "steps", w, low=1))
        put(self, "batch_size", check_int(self.batch_size, "batch_size", w, low=1))
        put(self, "optimizer", check_choice(self.optimizer, "optimizer", w, OPTIMIZERS))
        put(self, "lr", check_real(self.lr, "lr", w, low=0.0, low_open=True))
        put(self, "lr_schedule", check_choice(self.lr_schedule, "lr_schedule", w, SCHEDULES))
        put(self, "momentum", check_real(self.momentum, "momentum", w, low=0.0, high=1.0,
                                         high_open=True))
        put(self, "weight_decay", check_real(self.weight_decay, "weight_decay", w, low=0.0))
        for name in ("balance", "augment"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise param_error(name, w, "a bool", getattr(self, name))
            put(self, name, bool(getattr(self, name)))
        put(self, "max_shift", check_int(self.max_shift, "max_shift", w, low=0))
        put(self, "rotation", check_real(self.rotation, "rotation", w, low=0.0, high=180.0))
        put(self, "scale", check_real(self.scale, "scale", w, low=0.0, high=1.0, high_open=True))
        put(self, "shear", check_real(self.shear, "shear", w, low=0.0, high=90.0,
                                      high_open=True))
        put(self, "elastic", check_real(self.elastic, "elastic", w, low=0.0))
        put(self, "dtype", check_choice(self.dtype, "dtype", w, DTYPES))
        g = DEFAULT_GROUP_SIZE if self.group_size is None else self.group_size
        put(self, "group_size", check_int(g, "group_size", w, low=1))
        put(self, "eval_batch_size", check_int(self.eval_batch_size, "eval_batch_size", w,
                                               low=1))

    @property
    def warps(self) -> bool:
        """Whether images are augmented by random warps (see the class docstring)."""
        return self.augment and (self.rotation > 0 or self.scale > 0 or self.shear > 0
                                 or self.elastic > 0)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32


# --------------------------------------------------------------------------------------------
# Minibatch sampling (numpy; the same for every path)


@dataclass(frozen=True, eq=False)
class Minibatches:
    """One classifier's training draws: ``positions[s, b]`` indexes its sub-dataset;
    ``shifts[s, b] = (dy, dx)`` (``None`` without augmentation); with warps instead
    ``warps[s, b] = (angle, scale, shear, ty, tx)`` (radians, factor, radians, pixels) and,
    with ``elastic``, ``fields[s, b]``, the coarse displacement grid ``(2, gh, gw)``
    in pixels (``(dy, dx)``)."""

    positions: np.ndarray
    shifts: np.ndarray | None = None
    warps: np.ndarray | None = None
    fields: np.ndarray | None = None


def elastic_grid(image_shape) -> tuple[int, int]:
    """The coarse grid of elastic displacements for images ``(..., H, W)``: one node per 4
    pixels, at least 2 per axis."""
    h, w = image_shape[-2:]
    return max(2, round(h / 4)), max(2, round(w / 4))


def sample_minibatches(labels: np.ndarray, cfg: TrainConfig, seed: int, *,
                       shifts: bool = True, image_shape=None) -> Minibatches:
    """The ``cfg.steps`` minibatches of one classifier, drawn with replacement from its
    sub-dataset whose labels are ``labels`` (see ``TrainConfig.balance``), and their shifts
    or warps when ``cfg.augment`` and ``shifts`` (images; ``image_shape`` ``(C, H, W)`` is
    needed for elastic warps).

    Uses ``numpy.random.default_rng(selection.init_seed(seed))``: positions first, then shifts
    (or the warp parameters, then the elastic grids).
    """
    labels = np.asarray(labels, dtype=np.int64)
    m = len(labels)
    if m == 0:
        raise param_error("labels", "sample_minibatches", "a non-empty array", labels)
    rng = np.random.default_rng(init_seed(seed))
    size = (cfg.steps, cfg.batch_size)
    if cfg.balance:
        counts = np.bincount(labels)
        w = 1.0 / counts[labels]
        positions = rng.choice(m, size=size, replace=True, p=w / w.sum())
    else:
        positions = rng.integers(0, m, size=size)
    positions = np.asarray(positions, dtype=np.int64)
    if shifts and cfg.warps:
        u = rng.uniform(-1.0, 1.0, size=(*size, 5))
        scales = np.array([np.deg2rad(cfg.rotation), cfg.scale, np.deg2rad(cfg.shear),
                           cfg.max_shift, cfg.max_shift])
        warps = u * scales
        warps[..., 1] += 1.0
        fields = None
        if cfg.elastic > 0:
            if image_shape is None:
                raise param_error("image_shape", "sample_minibatches",
                                  "the image shape (C, H, W) for elastic warps", None)
            fields = (cfg.elastic * rng.standard_normal(
                (*size, 2, *elastic_grid(image_shape)))).astype(np.float32)
        return Minibatches(positions, warps=warps, fields=fields)
    drawn = None
    if shifts and cfg.augment and cfg.max_shift > 0:
        drawn = rng.integers(-cfg.max_shift, cfg.max_shift + 1, size=(*size, 2))
    return Minibatches(positions, drawn)


def warp_images(x: torch.Tensor, warps: torch.Tensor, fields: torch.Tensor | None
                ) -> torch.Tensor:
    """Images ``x`` ``(N, C, H, W)`` resampled through ``warps`` ``(N, 5)`` and elastic
    ``fields`` ``(N, 2, gh, gw)`` (see ``Minibatches``; bilinear, zero fill).

    Output pixel ``p`` (centred coordinates) reads input ``A p + t + e(p)``, ``A`` the
    inverse-of-zoom rotation-shear matrix, ``t`` the translation and ``e`` the interpolated
    elastic displacement. Each image is computed on its own (no batch statistics), so an
    image's result does not depend on its neighbours in ``x``.
    """
    n, _, h, w = x.shape
    dt = x.dtype
    warps = warps.to(dt)
    angle, zoom, shear, ty, tx = warps.unbind(-1)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    theta = torch.stack([
        torch.stack([cos / zoom, (tan * cos - sin) / zoom, 2 * tx / w], -1),
        torch.stack([sin / zoom, cos / zoom, 2 * ty / h], -1)], -2)  # (N, 2, 3), (x, y) order
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)  # (N, H, W, 2) as (x, y)
    if fields is not None:
        disp = F.interpolate(fields.to(dt), size=(h, w), mode="bilinear", align_corners=True)
        scale = torch.tensor([2.0 / w, 2.0 / h], dtype=dt, device=x.device)
        grid = grid + disp.flip(1).permute(0, 2, 3, 1) * scale
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _Batcher:
    """Gathers (and shifts) training images from a tensor of the rows a task needs."""

    def __init__(self, x: torch.Tensor, max_shift: int):
        self.x = x
        self.a = a = int(max_shift)
        if a:
            n, c, h, w = x.shape
            hp, wp = h + 2 * a, w + 2 * a
            self.flat = F.pad(x, (a, a, a, a)).contiguous().view(-1)
            ar = lambda k: torch.arange(k, device=x.device)  # noqa: E731
            grid = (ar(c) * hp * wp)[:, None, None] + (ar(h) * wp)[None, :, None] + ar(w)
            self.grid = grid.reshape(-1)
            self.sample_shape = (c, h, w)
            self.stride, self.wp = c * hp * wp, wp

    def __call__(self, rows: torch.Tensor, shifts: torch.Tensor | None,
                 warps: torch.Tensor | None = None, fields: torch.Tensor | None = None
                 ) -> torch.Tensor:
        """``rows``: any shape ``S``; ``shifts``: ``S + (2,)`` -> images ``S + sample_shape``;
        ``out[..., c, r, q] = x[row, c, r + dy, q + dx]`` (0 outside the image). With
        ``warps`` ``S + (5,)`` (and ``fields``) the images are warped instead
        (``warp_images``)."""
        if warps is not None:
            imgs = self.x[rows]
            shape = imgs.shape
            flat = imgs.reshape(-1, *shape[-3:])
            f = None if fields is None else fields.reshape(-1, *fields.shape[-3:])
            return warp_images(flat, warps.reshape(-1, 5), f).view(shape)
        if not self.a or shifts is None:
            return self.x[rows]
        a = self.a
        base = rows * self.stride + (a + shifts[..., 0]) * self.wp + (a + shifts[..., 1])
        return self.flat[base.unsqueeze(-1) + self.grid].view(*rows.shape, *self.sample_shape)


def _make_optimizer(params, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = device.type in ("cpu", "cuda")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """The learning rate of ``step`` (0-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "cosine":
        lr = cfg.lr * 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr


def _init_model(cfg: TrainConfig, input_shape, n_classes: int, seed: int) -> torch.nn.Module:
    """Classifier ``seed``'s initial model: built on the CPU under ``init_seed(seed)`` (the
    same weights on every device), without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed(seed))
        return build_model(cfg.model, input_shape, n_classes)


# --------------------------------------------------------------------------------------------
# One task: a group of classifiers and the training rows they use


@dataclass(eq=False)
class _Task:
    index: np.ndarray  # positions of the classifiers in the call
    x: np.ndarray  # the rows of x_train the group uses (sorted unique rows)
    y: np.ndarray
    subsets: list[np.ndarray]  # indices into x
    seeds: list[int]


@dataclass(frozen=True, eq=False)
class _Common:
    cfg: TrainConfig
    n_classes: int
    device: str
    path: str
    keep_weights: bool
    input_shape: tuple[int, ...] = field(default=())


def _run_task(task: _Task, x_test: torch.Tensor, common: _Common):
    """Train the task's classifiers; their predictions ``(k, n_test)`` int16 and weights."""
    cfg = common.cfg
    device = torch.device(common.device)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    dt = cfg.torch_dtype
    x = torch.as_tensor(task.x).to(device=device, dtype=dt)
    y = torch.as_tensor(task.y, dtype=torch.int64).to(device)
    images = x.ndim == 4
    batcher = _Batcher(x, cfg.max_shift if cfg.augment and images else 0)
    plans = [sample_minibatches(task.y[s], cfg, seed, shifts=images,
                                image_shape=x.shape[1:])
             for s, seed in zip(task.subsets, task.seeds, strict=True)]
    # (steps, B) rows of x per classifier
    rows = [s[p.positions] for s, p in zip(task.subsets, plans, strict=True)]
    shifts = [p.shifts for p in plans]
    if images and cfg.warps:  # (warps, fields) per classifier instead of shifts
        shifts = [(p.warps, p.fields) for p in plans]
    models = [_init_model(cfg, common.input_shape, common.n_classes, s) for s in task.seeds]
    if common.path == "fast" and stackable(models[0]):
        return _train_stacked(models, rows, shifts, batcher, y, x_test, common, device)
    preds, weights = [], []
    for model, r, sh in zip(models, rows, shifts, strict=True):
        p, w = _train_one(model, r, sh, batcher, y, x_test, common, device)
        preds.append(p)
        weights.append(w)
    return np.stack(preds), (weights if common.keep_weights else None)


def _train_one(model, rows, shifts, batcher, y, x_test, common: _Common, device):
    """The reference twin: one module, one optimizer, a plain loop."""
    cfg = common.cfg
    model = model.to(device=device, dtype=cfg.torch_dtype)
    opt = _make_optimizer(model.parameters(), cfg, device)
    rows_t = torch.as_tensor(rows, device=device)
    warps_t = fields_t = shifts_t = None
    if isinstance(shifts, tuple):
        warps_t = torch.as_tensor(shifts[0], device=device)
        fields_t = None if shifts[1] is None else torch.as_tensor(shifts[1], device=device)
    elif shifts is not None:
        shifts_t = torch.as_tensor(shifts, device=device)
    model.train()
    for s in range(cfg.steps):
        r = rows_t[s]
        if warps_t is not None:
            xb = batcher(r, None, warps_t[s], None if fields_t is None else fields_t[s])
        else:
            xb = batcher(r, None if shifts_t is None else shifts_t[s])
        loss = F.cross_entropy(model(xb), y[r])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _set_lr(opt, cfg, s)
        opt.step()
    model.eval()
    with torch.no_grad():
        preds = torch.cat([model(chunk).argmax(1) for chunk in
                           x_test.split(cfg.eval_batch_size)])
    weights = None
    if common.keep_weights:
        weights = {k: v.detach().cpu().contiguous().clone()
                   for k, v in model.state_dict().items()}
    return preds.cpu().numpy().astype(np.int16), weights


def _train_stacked(models, rows, shifts, batcher, y, x_test, common: _Common, device):
    """The fast path: the group padded to ``group_size`` (copies of its last classifier, so
    every group has the same shapes) and trained as one stacked network."""
    cfg = common.cfg
    k, G, B = len(models), cfg.group_size, cfg.batch_size
    pad = G - k
    models = [m.to(device=device, dtype=cfg.torch_dtype) for m in models]
    models += [models[-1]] * pad
    rows = rows + [rows[-1]] * pad
    net = stack_models(models)
    opt = _make_optimizer(net.model_params(), cfg, device)
    rows_t = torch.as_tensor(np.stack(rows, axis=1), device=device)  # (steps, G, B)
    labels_t = y[rows_t]
    shifts_t = warps_t = fields_t = None
    if isinstance(shifts[0], tuple):
        shifts = shifts + [shifts[-1]] * pad
        warps_t = torch.as_tensor(np.stack([w for w, _ in shifts], axis=1), device=device)
        if shifts[0][1] is not None:  # (steps, G, B, 2, gh, gw)
            fields_t = torch.as_tensor(np.stack([f for _, f in shifts], axis=1), device=device)
    elif shifts[0] is not None:
        shifts = shifts + [shifts[-1]] * pad
        shifts_t = torch.as_tensor(np.stack(shifts, axis=1), device=device)  # (steps, G, B, 2)
    if net.batch_first:
        rows_t = rows_t.transpose(1, 2)
        shifts_t = None if shifts_t is None else shifts_t.transpose(1, 2)
        warps_t = None if warps_t is None else warps_t.transpose(1, 2)
        fields_t = None if fields_t is None else fields_t.transpose(1, 2)
    for s in range(cfg.steps):
        if warps_t is not None:
            xb = batcher(rows_t[s], None, warps_t[s],
                         None if fields_t is None else fields_t[s])
        else:
            xb = batcher(rows_t[s], None if shifts_t is None else shifts_t[s])
        logits = net.forward_train(xb)
        loss = F.cross_entropy(logits.reshape(G * B, -1), labels_t[s].reshape(-1),
                               reduction="sum") / B
        net.zero_grad()
        loss.backward()
        net.sync_grads()
        _set_lr(opt, cfg, s)
        opt.step()
    with torch.no_grad():
        preds = torch.cat([net.forward_eval(chunk).argmax(-1) for chunk in
                           x_test.split(cfg.eval_batch_size)], dim=1)
    weights = net.state_dicts()[:k] if common.keep_weights else None
    return preds[:k].cpu().numpy().astype(np.int16), weights


# --------------------------------------------------------------------------------------------
# Worker processes

_WORKER: dict = {}


def _worker_init(x_test: np.ndarray) -> None:
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    _WORKER["x_test_np"] = x_test
    _WORKER["x_test"] = {}


def _context():
    """Worker processes fork from a fork server that has imported torch and this package
    once (a later call's workers start in well under a second), and that never ran torch's
    OpenMP thread pool, so forking it is safe. Spawn where there is no fork server."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["poisoncert.training.engine"])
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_run(task: _Task, common: _Common):
    key = (common.device, common.cfg.dtype)
    cache = _WORKER["x_test"]
    if key not in cache:
        cache[key] = torch.as_tensor(_WORKER["x_test_np"]).to(device=common.device,
                                                               dtype=common.cfg.torch_dtype)
    return _run_task(task, cache[key], common)


# --------------------------------------------------------------------------------------------
# Public entry points


def group_bounds(n: int, group_size: int, start: int = 0) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of consecutive groups of ``group_size`` classifiers covering
    ``start .. start + n - 1`` (the last one possibly shorter): a convenient chunking.

    Results never depend on the chunking (see ``train_predict``); chunks that are multiples
    of ``group_size`` only avoid padding a short last group.
    """
    n = check_int(n, "n", "group_bounds", low=0)
    g = check_int(group_size, "group_size", "group_bounds", low=1)
    return [(start + a, start + min(a + g, n)) for a in range(0, n, g)]


def train_predict(x_train, y_train, subsets: Sequence, seeds: Sequence, x_test,
                  cfg: TrainConfig | None = None, *, n_classes: int, device="cpu",
                  path: str = "fast", workers: int = 1,
                  progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Train classifier ``i`` on ``x_train[subsets[i]]`` and return every classifier's
    predictions on ``x_test``: an int16 array ``(len(subsets), n_test)``.

    - ``x_train`` ``(N, C, H, W)`` images (``(N, H, W)`` means ``C = 1``) or ``(N, F)``
      features, float numpy arrays or torch tensors; ``y_train`` labels in
      ``[0, n_classes)``; ``x_test`` samples of the same shape.
    - ``subsets[i]``: int indices into ``x_train`` (repeats count as repeats). An **empty**
      sub-dataset gives no classifier: its row is ``ABSTAIN`` (-1) throughout.
    - ``seeds[i]``: classifier ``i``'s seed (``selection.model_seed``); its initialisation,
      minibatches and shifts come from ``selection.init_seed(seeds[i])``.
    - ``path``: ``"fast"`` (stacked groups) or ``"reference"`` (one module per classifier).
    - ``workers``: processes sharing the groups, 1 thread each; ``1`` runs in this process.
      Processes are spawned, so a script calling with ``workers > 1`` needs the usual
      ``if __name__ == "__main__":`` guard.
    - ``progress(k)`` is called after each finished group with the number ``k`` of
      classifiers it finished (empty ones are reported first), so ``tqdm.update`` fits.

    Determinism: on the CPU, classifier ``i``'s predictions are bit-identical for the same
    ``(x_train, y_train, subsets[i], seeds[i], x_test, cfg)``, whatever its neighbours, the
    chunking of the classifiers into calls, ``workers`` and the caller's torch thread count:
    every computation runs on **one** intra-op thread (set for the duration of the call in
    this process, and in each worker), and groups are padded to ``cfg.group_size`` (copies
    of their last classifier) so that shapes never change. Tested: with a fixed group size a
    classifier's weights are the same bits whatever the other classifiers of its group and
    its position in it; across group sizes they differ in the last bits (kernels depend on
    shapes), so ``group_size`` is part of ``cfg``. Chunks that are multiples of
    ``group_size`` (``group_bounds``) only avoid padding work. Use ``workers`` (processes),
    not threads, for parallelism. ``path`` and ``cfg`` (``group_size``, ``dtype``,
    ``eval_batch_size`` included) are part of the numerics; the two paths agree to rounding,
    not bitwise. On CUDA, cuDNN is set to deterministic algorithms, but bit-identity across
    devices is not claimed.
    """
    return _train(x_train, y_train, subsets, seeds, x_test, cfg, n_classes=n_classes,
                  device=device, path=path, workers=workers, progress=progress,
                  keep_weights=False)[0]


def train_predict_with_weights(x_train, y_train, subsets: Sequence, seeds: Sequence, x_test,
                               cfg: TrainConfig | None = None, *, n_classes: int,
                               device="cpu", path: str = "fast", workers: int = 1,
                               progress: Callable[[int], object] | None = None):
    """``train_predict`` that also returns each classifier's trained ``state_dict`` (CPU
    tensors, loadable into ``build_model(cfg.model, ...)``; ``None`` for an empty subset)."""
    return _train(x_train, y_train, subsets, seeds, x_test, cfg, n_classes=n_classes,
                  device=device, path=path, workers=workers, progress=progress,
                  keep_weights=True)


def _as_float_array(x, name: str, where: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise param_error(name, where, "a float array (N, C, H, W) or (N, F)",
                          f"an array of dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim not in (2, 4):
        raise param_error(name, where, "a float array (N, C, H, W) or (N, F)",
                          f"an array of shape {arr.shape}")
    return arr


def _train(x_train, y_train, subsets, seeds, x_test, cfg, *, n_classes, device, path,
           workers, progress, keep_weights):
    where = "train_predict"
    if cfg is None:
        cfg = TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise param_error("cfg", where, "a TrainConfig", type(cfg).__name__)
    n_classes = check_int(n_classes, "n_classes", where, low=1)
    path = check_choice(path, "path", where, PATHS)
    workers = check_int(workers, "workers", where, low=1)
    if progress is not None and not callable(progress):
        raise param_error("progress", where, "a callable or None", progress)
    device = torch.device(device)
    x_train = _as_float_array(x_train, "x_train", where)
    x_test = _as_float_array(x_test, "x_test", where)
    n = len(x_train)
    if x_test.shape[1:] != x_train.shape[1:]:
        raise param_error("x_test", where, f"samples of x_train's shape {x_train.shape[1:]}",
                          f"an array of shape {x_test.shape}")
    if isinstance(y_train, torch.Tensor):
        y_train = y_train.detach().cpu().numpy()
    y_train = check_int_array(y_train, "y_train", where, low=0, high=n_classes - 1)
    if y_train.shape != (n,):
        raise param_error("y_train", where, f"a 1-d array of {n} labels (one per x_train row)",
                          f"an array of shape {y_train.shape}")
    if isinstance(subsets, np.ndarray) and subsets.ndim == 2:
        subsets = list(subsets)
    if not isinstance(subsets, Sequence) or isinstance(subsets, str | bytes):
        raise param_error("subsets", where, "a sequence of index arrays", type(subsets).__name__)
    subsets = [check_int_array(np.asarray(s).reshape(-1) if np.ndim(s) else s, "subsets",
                               where, low=0, high=n - 1) for s in subsets]
    if not isinstance(seeds, Sequence | np.ndarray) or isinstance(seeds, str | bytes):
        raise param_error("seeds", where, f"one seed per subset ({len(subsets)})", seeds)
    seeds = [_check_seed(s, where) for s in seeds]
    if len(seeds) != len(subsets):
        raise param_error("seeds", where, f"one seed per subset ({len(subsets)})",
                          f"{len(seeds)} seeds")
    build_model(cfg.model, x_train.shape[1:], n_classes)  # validates the input shape early

    T = len(subsets)
    preds = np.full((T, len(x_test)), ABSTAIN, dtype=np.int16)
    weights: list = [None] * T
    live = [i for i in range(T) if len(subsets[i])]
    if progress is not None and T - len(live):
        progress(T - len(live))
    common = _Common(cfg, n_classes, str(device), path, keep_weights,
                     tuple(int(s) for s in x_train.shape[1:]))
    G = cfg.group_size
    tasks = [_make_task(live[a:a + G], x_train, y_train, subsets, seeds)
             for a in range(0, len(live), G)]

    def collect(task, result):
        p, w = result
        preds[task.index] = p
        if keep_weights:
            for j, i in enumerate(task.index):
                weights[i] = w[j]
        if progress is not None:
            progress(len(task.index))

    if workers == 1 or len(tasks) <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            xt = torch.as_tensor(x_test).to(device=device, dtype=cfg.torch_dtype)
            for task in tasks:
                collect(task, _run_task(task, xt, common))
        finally:
            torch.set_num_threads(threads)
    else:
        ctx = _context()
        with ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx,
                                 initializer=_worker_init, initargs=(x_test,)) as ex:
            futures = {ex.submit(_worker_run, task, common): task for task in tasks}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        for p in pending:
                            p.cancel()
                        raise f.exception()
                    collect(futures[f], f.result())
    return preds, weights


def _check_seed(s, where: str) -> int:
    if isinstance(s, np.integer):
        s = int(s)
    if not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 0:
        raise param_error("seeds", where, "non-negative ints", s)
    return int(s)


def _make_task(index: list[int], x_train, y_train, subsets, seeds) -> _Task:
    rows = np.unique(np.concatenate([subsets[i] for i in index]))
    return _Task(index=np.asarray(index, dtype=np.int64), x=x_train[rows], y=y_train[rows],
                 subsets=[np.searchsorted(rows, subsets[i]) for i in index],
                 seeds=[seeds[i] for i in index])


# --------------------------------------------------------------------------------------------
# Weights (safetensors; never pickle)

_FORMAT = "poisoncert.training.weights/1"


def _flatten(state_dicts: Sequence[dict | None], metadata: dict | None):
    tensors = {}
    for i, sd in enumerate(state_dicts):
        if sd is None:
            continue
        for name, t in sd.items():
            tensors[f"{i}.{name}"] = t.detach().cpu().contiguous().clone()
    meta = {"format": _FORMAT, "n_models": str(len(state_dicts))}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    return tensors, meta


def _unflatten(tensors: dict, meta: dict) -> list[dict | None]:
    n = int(meta.get("n_models", 0))
    out: list[dict | None] = [None] * n
    for key, t in tensors.items():
        i, name = key.split(".", 1)
        i = int(i)
        if i >= len(out):
            out.extend([None] * (i + 1 - len(out)))
        if out[i] is None:
            out[i] = {}
        out[i][name] = t
    return out


def save_weights(path: str | Path, state_dicts: Sequence[dict | None],
                 metadata: dict | None = None) -> Path:
    """Write per-classifier state dicts (``None`` = no classifier) to one safetensors file;
    tensor ``"{i}.{name}"`` is ``state_dicts[i][name]``; ``metadata`` (str -> str) is kept."""
    from safetensors.torch import save_file

    tensors, meta = _flatten(state_dicts, metadata)
    path = Path(path)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_weights(path: str | Path) -> list[dict | None]:
    """The state dicts written by ``save_weights`` (``None`` where there was no classifier)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return _unflatten(tensors, meta)


def weights_to_bytes(state_dicts: Sequence[dict | None], metadata: dict | None = None) -> bytes:
    """``save_weights`` to bytes (safetensors format)."""
    from safetensors.torch import save

    tensors, meta = _flatten(state_dicts, metadata)
    return save(tensors, metadata=meta)


def weights_from_bytes(data: bytes) -> list[dict | None]:
    """The inverse of ``weights_to_bytes``."""
    from safetensors.torch import load

    tensors = load(data)
    # safetensors' ``load`` drops the metadata; read the header for ``n_models``.
    n_header = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n_header]).get("__metadata__", {})
    return _unflatten(tensors, meta)

