"""Train base classifiers on sub-datasets and collect their test-set predictions.

``train_predict`` is the entry point: classifier ``i`` is trained on ``x_train[subsets[i]]``
(the paper's Algorithm 2: minibatches drawn with replacement, class-balanced, from the
sub-dataset, ``D^c`` included when the caller appended it) for a fixed number of steps, then
predicts every test sample. Three formulations give the same classifiers (to rounding):

- ``path="reference"``: one ``torch.nn.Module`` and one torch optimizer per classifier, a
  plain loop;
- ``path="twin"``: groups of classifiers stacked as one network (``training.fast``: the
  hand-written twins of the built-in models, ``torch.func.vmap`` for other modules), their
  parameters in one ``(G, P)`` tensor updated by one ``optim.StackedOptimizer`` step for the
  whole group; models that cannot be stacked (dropout) use the per-model loop;
- ``path="vmap"``: as ``twin`` but stacked through ``vmap`` even where a twin exists;
- ``path="bmm"``: as ``twin`` with the LeNet-5 and small-CNN twins' convolutions as unfold +
  batched matmuls (``fast.bmm_conv``);
- ``path="cmajor"``: the same with the activations classifier-major and channels-last, so
  that no convolution needs a permuted copy (``fast.cmajor_conv``), for ResNet-18 too
  (BatchNorm over each classifier's rows, ``fast.row_batch_norm``);
- ``path="fast"`` (the default): the device's fastest path, measured: ``twin`` on the
  CPU; on CUDA ``cmajor`` for LeNet-5 and the small CNN, ``graphed`` for ResNet-18 where
  its settings allow that path (below; else ``twin``), ``twin`` for the others
  (``fast.path_stacking``, ``fast.CUDA_FAST``, ``groups.CUDA_FAST_LOOP``);
- ``path="graphed"``: the reference loop with one training step captured as a CUDA graph and
  replayed for every step of every classifier, a few classifiers at once on their own
  streams (``training.graphed``; on the CPU it runs eagerly and is the reference, bit for
  bit).

Training draws (positions, shifts, warps, elastic grids) are numpy streams of the
classifier's seed, moved to the device ``loops.STEP_BLOCK`` steps at a time (the training
loops live in ``training.loops``); test-set predictions come from ``inference.evaluate``, the
function ``training.predict`` uses.

Everything about classifier ``i`` (initialisation, minibatches, shifts) derives from
``selection.init_seed(seeds[i])``, its subset and the config, never from its neighbours.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from poisoncert._validation import check_choice, check_int, check_int_array, param_error
from poisoncert.selection import init_seed, module_seed
from poisoncert.training.fast import batch_dependent, draws_random, path_stacking, stacking
from poisoncert.training.graphed import model_obstacle, train_graphed
from poisoncert.training.groups import auto_group_size
from poisoncert.training.inference import evaluate, labels_of, precision
from poisoncert.training.loops import host_threads, map_threads, train_one, train_stacked
from poisoncert.training.minibatches import ImageBatcher, sample_minibatches
from poisoncert.training.models import float32_default, init_model, probe_model
from poisoncert.training.settings import (
    CUDA_DTYPES,
    DEFAULT_GROUP_SIZE,
    PATHS,
    TrainConfig,
    graphed_obstacle,
)
from poisoncert.training.weights import same_layout
from poisoncert.votes import ABSTAIN

__all__ = [
    "ABSTAIN",
    "DEFAULT_GROUP_SIZE",
    "group_bounds",
    "train_predict",
    "train_predict_with_weights",
]

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
class _CallSettings:
    """What every group of one ``train_predict`` call shares."""

    cfg: TrainConfig
    n_classes: int
    device: str
    path: str
    keep_weights: bool
    input_shape: tuple[int, ...] = field(default=())
    group: int = DEFAULT_GROUP_SIZE


def _run_task(task: _Task, x_test: torch.Tensor, settings: _CallSettings):
    """Train the task's classifiers; their predictions ``(k, n_test)`` int16 and weights."""
    cfg = settings.cfg
    device = torch.device(settings.device)
    dt = cfg.torch_dtype
    x = torch.as_tensor(task.x).to(device=device, dtype=dt)
    y = torch.as_tensor(task.y, dtype=torch.int64).to(device)
    images = x.ndim == 4
    batcher = ImageBatcher(x, cfg.max_shift if cfg.augment and images else 0)
    models = [init_model(cfg.model, settings.input_shape, settings.n_classes, init_seed(s))
              for s in task.seeds]
    kind = None if settings.path in ("reference", "graphed") else stacking(
        models[0], how=path_stacking(settings.path, device, cfg.model))
    if kind == "vmap" and draws_random(models[0], x):
        kind = None  # its forward draws random numbers (not in nn.Dropout): one at a time
    # each classifier's draws from its own generator: by threads on CUDA (1.2 s for 250
    # classifiers of the improved learner on one AMD EPYC core, the device idle meanwhile)
    draws = map_threads(lambda ss: sample_minibatches(
        task.y[ss[0]], cfg, ss[1], shifts=images, image_shape=x.shape[1:],
        lazy_fields=kind is not None), list(zip(task.subsets, task.seeds, strict=True)),
        host_threads(device))
    # (steps, B) rows of x per classifier
    rows = [s[d.positions] for s, d in zip(task.subsets, draws, strict=True)]
    with precision(cfg, device):
        if kind is not None:
            weights = train_stacked(models, rows, draws, batcher, y, cfg, settings.group,
                                    device, kind, subsets=task.subsets)
        elif settings.path == "graphed":
            weights = train_graphed(models, rows, draws, batcher, y, cfg, device)
        else:
            weights = [train_one(m, r, d, batcher, y, cfg, device, module_seed(s))
                       for m, r, d, s in zip(models, rows, draws, task.seeds, strict=True)]
        logits = evaluate(weights, x_test, cfg, settings.input_shape, settings.n_classes,
                          device, settings.path)
    preds = labels_of(logits)
    if settings.keep_weights:
        return preds, host_state_dicts(weights)
    return preds, None


def host_state_dicts(weights: Sequence[dict]) -> list[dict]:
    """Each classifier's state dict as CPU tensors of its own. Off a device, the classifiers'
    tensors of one name (the same shape and dtype: one model) are stacked there and moved in
    one transfer, not one per classifier and name (8,000 small transfers for 1,000 small
    CNNs)."""
    first = weights[0] if weights else {}
    if any(v.device.type != "cpu" for v in first.values()) and same_layout(weights):
        stacked = {k: torch.stack([w[k].detach() for w in weights]).cpu() for k in first}
        return [{k: t[g].clone() for k, t in stacked.items()} for g in range(len(weights))]
    return [{k: v.detach().cpu().contiguous().clone() for k, v in w.items()} for w in weights]


# --------------------------------------------------------------------------------------------
# Groups in worker processes (through the executors, the one parallel layer)


class _GroupRunner:
    """Trains group ``g`` of a call in a worker process: the worker gets this object once
    (``LocalExecutor``), with the test images; their tensor is made on its first group."""

    def __init__(self, tasks: list[_Task], x_test: np.ndarray, settings: _CallSettings):
        self.tasks, self.x_test, self.settings = tasks, x_test, settings
        self._x_test_t: torch.Tensor | None = None

    def __getstate__(self):
        return {**self.__dict__, "_x_test_t": None}

    def __call__(self, g: int):
        if self._x_test_t is None:
            self._x_test_t = torch.as_tensor(self.x_test).to(
                device=self.settings.device, dtype=self.settings.cfg.torch_dtype)
        return g, _run_task(self.tasks[g], self._x_test_t, self.settings)


def _start_method() -> str:
    """Workers fork from a fork server that has imported this module (and torch) once, so a
    later call's workers start in well under a second; spawn where there is none."""
    import multiprocessing

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


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
    - ``path``: ``"fast"`` (the device's fastest: stacked groups, or on CUDA for ResNet-18
      the graphed loop), ``"vmap"`` (stacked through ``torch.func``),
      ``"twin"`` (the grouped-convolution twins), ``"bmm"`` (convolutions as batched
      matmuls), ``"cmajor"`` (the same, classifier-major), ``"reference"`` (one module per
      classifier) or ``"graphed"`` (the same, each step a replayed CUDA graph).
    - ``cfg.group_size``: ``"auto"`` is ``training.groups.auto_group_size`` for ``device``
      (8 on the CPU; on CUDA it depends on the free memory, so give an int when separate
      calls must agree bit for bit). ``cfg.dtype`` ``tf32`` / ``bfloat16`` need CUDA.
    - ``workers``: processes sharing the groups (``poisoncert.executors.LocalExecutor``, 1
      thread each); ``1`` runs in this process. Processes are started from a fork server (or
      spawned), so a script calling with ``workers > 1`` needs the usual
      ``if __name__ == "__main__":`` guard. Workers keep their freed memory
      (``poisoncert.threads.keep_heap``); call it in this process to train as fast here.
    - ``progress(k)`` is called after each finished group with the number ``k`` of
      classifiers it finished (empty ones are reported first), so ``tqdm.update`` fits;
      trained in this process, ``progress(0)`` first says the training begins (torch
      imported, inputs checked: a display may time its rate from then).

    Determinism: on the CPU, classifier ``i``'s predictions are bit-identical for the same
    ``(x_train, y_train, subsets[i], seeds[i], x_test, cfg)``, whatever its neighbours, the
    chunking of the classifiers into calls, ``workers`` and the caller's torch thread count:
    every computation runs on **one** intra-op thread (set for the duration of the call in
    this process, and in each worker), groups are padded to the group size (copies of their
    last classifier) so that shapes never change, and the stacked update applies one
    correctly rounded operation per element (``optim``). Tested: with a fixed group size a
    classifier's weights are the same bits whatever the other classifiers of its group and
    its position in it; across group sizes they may differ in the last bits (kernels depend
    on shapes), so the group size is part of the numerics (a run records it). Chunks that are
    multiples of the group size (``group_bounds``) only avoid padding work. Use ``workers``
    (processes), not threads, for parallelism. ``path`` and ``cfg`` (``group_size``,
    ``dtype``, ``eval_batch_size`` included) are part of the numerics; the paths agree to
    rounding, not bitwise. On CUDA, cuDNN is set to deterministic algorithms (TensorFloat-32
    only for ``dtype="tf32"``), and predictions are the same on any device of one type;
    bit-identity across device types is not claimed.
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
    if cfg.sklearn_learner is not None:
        raise param_error("cfg", where, "a TrainConfig of a torch model (scikit-learn learners "
                          "are trained by train_predict_sklearn)", cfg.model)
    n_classes = check_int(n_classes, "n_classes", where, low=1)
    path = check_choice(path, "path", where, PATHS)
    if path == "fast":  # on CUDA, ResNet-18 trains fastest one module at a time, graphed
        from poisoncert.training.groups import resolve_path

        if resolve_path(path, device, training=cfg) == "graphed":
            path = "graphed"
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
    # its initialisation leaves the caller's RNG be; it checks the input shape
    probe = probe_model(cfg.model, x_train.shape[1:], n_classes)
    if cfg.rows_per_step is not None:
        _check_subset_rows(cfg, probe, subsets, x_train.ndim == 4, where)
    if path == "graphed":
        _check_graphed(cfg, probe, where)

    T = len(subsets)
    preds = np.full((T, len(x_test)), ABSTAIN, dtype=np.int16)
    weights: list = [None] * T
    live = [i for i in range(T) if len(subsets[i])]
    if progress is not None and T - len(live):
        progress(T - len(live))
    if cfg.dtype in CUDA_DTYPES and device.type != "cuda":
        raise param_error("cfg.dtype", where, "'float32' or 'float64' on a "
                          f"{device.type} device ({' and '.join(CUDA_DTYPES)} are for CUDA)",
                          cfg.dtype)
    shape = tuple(int(s) for s in x_train.shape[1:])
    G = auto_group_size(cfg, device, shape, n_classes, path=path)
    settings = _CallSettings(cfg, n_classes, str(device), path, keep_weights, shape, G)
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
            if progress is not None:
                progress(0)  # the training begins (a display's rate leaves the set-up out)
            with float32_default():  # as in a worker process, whatever the caller's default
                for task in tasks:
                    collect(task, _run_task(task, xt, settings))
        finally:
            torch.set_num_threads(threads)
    else:
        from poisoncert.executors import LocalExecutor

        method = _start_method()
        preload = ("poisoncert.training.engine",) if method == "forkserver" else ()
        pool = LocalExecutor(min(workers, len(tasks)), threads=1, start_method=method,
                             preload=preload)
        for g, result in pool.map_chunks(_GroupRunner(tasks, x_test, settings), range(len(tasks))):
            collect(tasks[g], result)
    return preds, weights


def _check_subset_rows(cfg: TrainConfig, model, subsets, images: bool, where: str) -> None:
    """``cfg.subset_rows`` applies: every sub-dataset fits, the draws are not augmented and
    a sample's output does not depend on its batch."""
    U = cfg.subset_rows
    if images and cfg.augments_images:
        raise param_error("cfg.subset_rows", where, "None when training images are augmented "
                          "(augment with max_shift > 0, or warps)", U)
    if batch_dependent(model):
        raise param_error("cfg.subset_rows", where, "None for a model with BatchNorm (its "
                          "batch statistics depend on the rows forwarded)", U)
    largest = max((len(s) for s in subsets), default=0)
    if largest > U:
        raise param_error("cfg.subset_rows", where, f"at least the largest sub-dataset "
                          f"({largest} rows)", U)


def _check_graphed(cfg: TrainConfig, model, where: str) -> None:
    """The graphed path's limits (``settings.graphed_obstacle``, ``graphed.model_obstacle``)."""
    obstacle = graphed_obstacle(cfg)
    if obstacle is not None:
        name, allowed, got = obstacle
        raise param_error("cfg." + name.removeprefix("training."), where, allowed, got)
    why = model_obstacle(model)
    if why is not None:
        raise param_error("path", where, f"a path other than 'graphed' for this model ({why})",
                          "graphed")


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
