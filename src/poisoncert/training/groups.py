"""How many classifiers train as one stacked group: ``group_size: auto``.

``auto_group_size(cfg, device, input_shape, n_classes, n_models=None, path="fast")``:

- on the CPU, ``DEFAULT_GROUP_SIZE`` (8): measured fastest there for every built-in model
  (``benchmarks/bench_training.py --study``: larger groups leave the caches);
- on CUDA, as many as fit in half the free device memory, measured by one probe step of a
  stacked pair of the model at the run's batch size, up to a cap that already fills the device
  with work (256 classifiers of a model under a million parameters, 32 of a larger one such
  as ResNet-18); with ``n_models`` (a run's ``T``) the groups are then evened out
  (``ceil(T / ceil(T / G))``) so that the last group is not mostly padding;
- on CUDA for ``path="graphed"`` (one module per lane, nothing stacked),
  ``graphed.CUDA_GROUP`` (16), evened out the same way.

The size is part of the numerics (kernels depend on shapes), so a run directory records the
size it used and a resumed run keeps it (``poisoncert.experiment.train_run``); calls of
``train_predict`` that must agree bit for bit on CUDA should give an explicit ``group_size``.
"""

from __future__ import annotations

import math

from poisoncert.training.settings import DEFAULT_GROUP_SIZE, TrainConfig, graphed_obstacle

__all__ = ["CUDA_CAP_LARGE", "CUDA_CAP_SMALL", "CUDA_FAST_LOOP", "auto_group_size",
           "engine_record", "even_groups", "recorded_group_size", "recorded_path",
           "recorded_subset_rows", "resolve_path"]

#: Largest auto group on CUDA for models under / over a million parameters.
CUDA_CAP_SMALL, CUDA_CAP_LARGE = 256, 32
#: Share of the free device memory an auto group may plan to use.
MEMORY_SHARE = 0.5
#: The path ``training.path: fast`` means on CUDA for a built-in model that trains faster one
#: module at a time than stacked, where the training settings allow it: ResNet-18 on the
#: graphed loop (one H200, bfloat16: 19.7k training images/s with 4 lanes, 21.3k with 8,
#: against 5.8-6.2k for its grouped twin, the fastest stacking; docs/benchmarks.md). Settings
#: the graphed path cannot train (a learning-rate schedule, an optimizer it cannot capture:
#: ``settings.graphed_obstacle``) keep the stacking ``fast.CUDA_FAST`` names.
CUDA_FAST_LOOP = {"resnet18": "graphed"}


def even_groups(G: int, n_models: int) -> int:
    """The smallest group size that trains ``n_models`` in as many groups as ``G`` does."""
    if n_models <= 0:
        return G
    k = math.ceil(n_models / G)
    return math.ceil(n_models / k)


def recorded_group_size(cfg: TrainConfig, manifest: dict | None) -> int:
    """The group size of a run with training settings ``cfg`` whose manifest is ``manifest``:
    the size the manifest records (``engine.group_size``), at most ``cfg.group_size`` when
    that is an int (a run of ``T`` below it records ``T``: ``auto_group_size``); without a
    record (runs that predate it) ``cfg.group_size``, or ``DEFAULT_GROUP_SIZE`` for
    ``auto``; 1 for a scikit-learn learner."""
    if cfg.sklearn_learner is not None:
        return 1
    recorded = (manifest or {}).get("engine", {}).get("group_size")
    if cfg.group_size != "auto":
        return int(cfg.group_size) if recorded is None else min(int(cfg.group_size),
                                                                 int(recorded))
    return DEFAULT_GROUP_SIZE if recorded is None else int(recorded)


def recorded_subset_rows(cfg: TrainConfig, manifest: dict | None) -> int | None:
    """The ``subset_rows`` of a run with training settings ``cfg``: ``cfg.subset_rows``
    (None for ``"off"``), or for null the value the manifest records (``engine.subset_rows``;
    None when absent, as in runs trained before it existed)."""
    if cfg.subset_rows is not None or cfg.sklearn_learner is not None:
        return cfg.rows_per_step
    rows = (manifest or {}).get("engine", {}).get("subset_rows")
    return None if rows is None else int(rows)


def resolve_path(path: str, device, model=None, training: TrainConfig | None = None) -> str:
    """The path a new run of ``model`` (``training.model``) records for ``execution.path`` on
    ``device``: ``fast`` is, on CUDA, ``CUDA_FAST_LOOP``'s path for the model where the
    training settings ``training`` allow it (``graphed`` for ResNet-18 with a constant
    learning rate and SGD or Adam; without ``training`` no loop is chosen), else the stacking
    it stands for there (on CUDA ``cmajor`` for LeNet-5 and the small CNN, ``twin`` for the
    others and elsewhere: ``fast.path_stacking``); the other paths are themselves."""
    from poisoncert.training.fast import path_stacking

    if path != "fast":
        return path
    if model is None and training is not None:
        model = training.model
    if _fast_loop(device, model, training):
        return CUDA_FAST_LOOP[model]
    how = path_stacking(path, device, model)
    return "twin" if how == "auto" else how


def _fast_loop(device, model, training: TrainConfig | None) -> bool:
    """Whether ``fast`` is ``CUDA_FAST_LOOP``'s path for ``model`` on ``device``."""
    if (device is None or training is None or training.sklearn_learner is not None
            or not isinstance(model, str) or model not in CUDA_FAST_LOOP):
        return False
    import torch

    return torch.device(device).type == "cuda" and graphed_obstacle(training) is None


def recorded_path(path: str, device, manifest: dict | None, model=None,
                  training: TrainConfig | None = None) -> str:
    """The engine path of a run of ``model`` (training settings ``training``) whose config
    says ``path`` and whose manifest is ``manifest`` (None: a new run, trained on
    ``device``): the path the manifest records (``engine.path``), ``twin`` for a ``fast`` run
    whose manifest predates the record (what ``fast`` meant on every device then), else
    ``resolve_path``."""
    if path != "fast":
        return path
    if manifest is None:
        return resolve_path(path, device, model, training)
    return str(manifest.get("engine", {}).get("path", "twin"))


def engine_record(group: int, subset_rows: int | None, path: str | None = None) -> dict:
    """A manifest's ``engine`` section: the numerics a run resolved for itself (the group
    size; the subset rows when set; the engine path ``fast`` resolved to)."""
    record = {"group_size": int(group)}
    if subset_rows is not None:
        record["subset_rows"] = int(subset_rows)
    if path is not None:
        record["path"] = str(path)
    return record


def auto_group_size(cfg: TrainConfig, device, input_shape, n_classes: int,
                    n_models: int | None = None, path: str = "fast") -> int:
    """The group size ``cfg.group_size`` stands for on ``device`` (itself when it is an int),
    for the engine's ``path``; with ``n_models`` (a run's ``T``) at most ``n_models``: a
    group larger than the run would train copies of its last classifier and discard them."""
    if cfg.group_size != "auto":
        return min(int(cfg.group_size), n_models) if n_models else int(cfg.group_size)
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return min(DEFAULT_GROUP_SIZE, n_models) if n_models else DEFAULT_GROUP_SIZE
    if path == "graphed":  # one module per lane: the group only sets how often it captures
        from poisoncert.training.graphed import CUDA_GROUP

        return even_groups(CUDA_GROUP, n_models) if n_models else CUDA_GROUP
    G = _cuda_group(cfg, device, tuple(input_shape), n_classes, path)
    return even_groups(G, n_models) if n_models else G


def _cuda_group(cfg: TrainConfig, device, input_shape, n_classes,
                path: str) -> int:  # pragma: no cover
    """Probe one training step of two stacked models and size the group by memory."""
    import torch
    from torch.nn import functional as F

    from poisoncert.training.fast import path_stacking, stack_models, stackable
    from poisoncert.training.models import init_model

    how = path_stacking(path, device, cfg.model)
    models = [init_model(cfg.model, input_shape, n_classes, s).to(device, cfg.torch_dtype)
              for s in (1, 2)]
    n_params = sum(p.numel() for p in models[0].parameters())
    cap = CUDA_CAP_SMALL if n_params < 1_000_000 else CUDA_CAP_LARGE
    if path == "reference" or not stackable(models[0], how):
        return 1
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    net = stack_models(models, how=how)
    B = cfg.batch_size
    x = torch.zeros(2, B, *input_shape, device=device, dtype=cfg.torch_dtype)
    if net.batch_first:
        x = x.transpose(0, 1)
    y = torch.zeros(2 * B, dtype=torch.int64, device=device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.autocast_dtype is not None):
        logits = net.forward_train(x)
    F.cross_entropy(logits.float().reshape(2 * B, -1), y).backward()
    torch.cuda.synchronize(device)
    # optimizer state: up to 3 more copies of the parameters
    per_model = (torch.cuda.max_memory_allocated(device) - base) / 2 + 3 * 4 * n_params
    del net, logits, x
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(MEMORY_SHARE * free / max(per_model, 1.0))))
