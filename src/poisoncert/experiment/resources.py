"""The memory a run will need, estimated and checked before its directory is written.

``check_run_memory(cfg, data, executor)`` is called by ``train_run`` once the data is loaded
and the learner checked, before ``RunDir.prepare``: it estimates the bytes of the arrays the
run will hold at its peak (``run_memory``) and refuses, with one line naming the parameter and
the values that would fit, a run whose estimate times ``resources.SAFETY`` does not fit in the
available memory (``poisoncert.resources``).

The estimate is a sum of terms, each derived from the code that allocates it (the byte
constants below name their arrays). The driver holds the prediction matrix of all ``T``
classifiers when the run is assembled; each training process (the driver itself, or each of
``min(workers, T)`` worker processes) holds one chunk's sub-datasets and predictions and one
group's training rows, minibatch tables, activations, weights and evaluation batch. Sizes that
depend on the draw are bounded above (a binomial or partition sub-dataset by ``n + |D^c|``,
a chunk by ``chunk_size + group_size - 1`` classifiers), so every term grows with each of its
parameters, as the check's bisection needs. Activations and parameter counts come from one
forward pass of the model on one sample (``model_footprint``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from poisoncert import resources
from poisoncert.config import DEFAULT_SELECTION, ExperimentConfig, RunConfig
from poisoncert.resources import Term
from poisoncert.selection import PARTITION
from poisoncert.training.settings import EVAL_BATCH_CAP, EVAL_GROUP, TrainConfig

__all__ = ["ModelFootprint", "RunShape", "check_run_memory", "model_footprint", "run_memory",
           "run_shape", "run_values"]

#: Per (classifier, test point), in the driver when the run is assembled
#: (``runs.RunDir.assemble``): the chunk files' int16 arrays (2) and the joined matrix (2);
#: ``votes.votes_from_predictions``'s temporaries: the validity masks (2), the column indices
#: and their int64 copy (8 + 8), the flat index (8), the valid predictions (2): 32 bytes
#: (NumPy's elision of temporaries brings the measured peak to about 23).
PREDICTION_BYTES = 32
#: Per classifier, in the driver: its seed (``model_seeds``' Python int and list slot, the
#: uint64 array, the chunk copies and the joined array), its sub-dataset size (three int64
#: copies) and its line of ``classifiers.csv`` (a str in a list, then the joined text).
CLASSIFIER_BYTES = 256
#: Per (classifier, test point) of a chunk, in its process: the engine's int16 matrix, the
#: result's int16 copy, and the pickled copy sent back by a worker.
CHUNK_PREDICTION_BYTES = 6
#: Per index of a sub-dataset (int64), for every classifier of a chunk
#: (``SubsetPlan.subsets``), plus 32 bytes per index for the one being drawn: the draw, its
#: sorted copy, the mapped indices and the concatenation with ``D^c`` (``selection.draw``,
#: ``selection.subset_indices``).
INDEX_BYTES = 8
DRAWING_BYTES = 32
#: Per minibatch draw (classifier, step, batch position) of a group, held until the group is
#: trained (``training.minibatches.sample_minibatches`` and the engine's stacking): the
#: positions (int64), the rows of the classifier's table, the stacked rows and their labels:
#: 4 x 8 bytes; and per draw of the one classifier being drawn, ``rng.choice``'s float64
#: variates.
DRAW_BYTES = 32
DRAW_TEMP_BYTES = 8
#: Per row of the sub-dataset being drawn from (``sample_minibatches``' class-balance
#: weights): its labels (int64), their weights, the probabilities and ``rng.choice``'s
#: cumulative sums (float64), one more for the division's temporary: 5 x 8 bytes.
WEIGHT_BYTES = 40
#: With integer shifts, per draw: ``(dy, dx)`` as int64 and their stacked copy.
SHIFT_BYTES = 32
#: With random warps, per draw: the warps (5 float64) and their stacked copy; while a
#: classifier is drawn, its uniform variates.
WARP_BYTES = 80
WARP_TEMP_BYTES = 40
#: With elastic warps, per draw and node of the coarse grid and axis: the float32 field and
#: its stacked copy; while a classifier is drawn, its float64 normal variates and their
#: scaled copy.
ELASTIC_BYTES = 8
ELASTIC_TEMP_BYTES = 16
#: On the ``cmajor`` path, per sample and model, in percent of its convolutions' patches: the
#: patches each convolution keeps for the backward pass, and the largest one's gradient and
#: its fold-back while that pass runs (``training.fast.patches``).
PATCH_PERCENT = 100
#: Activations of a training step per sample and model, in percent of one forward pass's
#: outputs (summed over the modules): the outputs kept for the backward pass, their
#: gradients, and what the kernels keep besides (max-pooling indices, ReLU masks,
#: workspaces). Stacked groups (``training.fast``) measured 2.2 to 2.4 times the outputs
#: (LeNet-5, the small CNN), one model at a time (torch's autograd) 1.0 to 1.2 times
#: (ResNet-18): ``benchmarks/bench_memory.py``.
ACTIVATION_PERCENT_STACKED = 300
ACTIVATION_PERCENT = 150
#: Activations of an evaluation batch (no gradients) per sample and model: a stacked group
#: measured 1.2 to 1.3 times one pass's outputs (so 150%) for the small models; a pass
#: frees outputs as it goes on, measured 4 to 5 times the largest output for ResNet-18 (one
#: model at a time; stacked, 0.6 of ``EVAL_LARGEST`` times it), so at most ``EVAL_LARGEST``
#: times it either way (and never more than the outputs of one pass).
EVAL_PERCENT_STACKED = 150
EVAL_LARGEST = 6
#: Parameter state of a group: each classifier's own module, the stacked tensors, their
#: gradients and two optimizer moments (Adam's; SGD and Adadelta keep fewer or as many).
#: Trained one at a time (no stacked twin, or the reference path), the group's modules and
#: their gradients, and the optimizer state of the one being trained.
PARAMETER_COPIES = 5
#: Per feature value of a scikit-learn classifier's sub-dataset: its float64 rows and the
#: fitted model's own copy (k-nearest neighbours keeps them); plus 32 bytes per row (labels,
#: weights, indices).
SKLEARN_VALUE_BYTES = 16
SKLEARN_ROW_BYTES = 32
#: A worker process before it loads anything: Python with numpy, torch and poisoncert
#: imported is about 240 MiB resident (measured: ``ru_maxrss`` after importing
#: ``poisoncert.training.engine``), rounded up for torch's allocator and thread pools.
PROCESS_BYTES = 512 * 2**20

#: The parameters an estimate names, and the values their ratios are taken against.
_TRAIN = TrainConfig()
DEFAULTS = {"selection.T": DEFAULT_SELECTION["T"], "selection.k": DEFAULT_SELECTION["T"],
            "selection.ns": DEFAULT_SELECTION["ns"], "run.chunk_size": RunConfig().chunk_size,
            "training.steps": _TRAIN.steps, "training.batch_size": _TRAIN.batch_size,
            "training.group_size": 8, "training.eval_batch_size": _TRAIN.eval_batch_size,
            "training.max_shift": _TRAIN.max_shift, "training.phase2_steps": 2000,
            "training.workers": 1}
LOWS = {"training.max_shift": 0}


@dataclass(frozen=True)
class ModelFootprint:
    """A torch model's ``parameters`` (count), ``activations``: the values one forward pass
    on one sample produces (every module's output, plus the input), the ``largest`` output,
    whether a group trains as one ``stacked`` network (the fast path and a model with a
    stacked twin) or one model at a time, and on the ``cmajor`` path the values of every
    convolution's patches per sample (``patches``: each output pixel's ``k k C`` inputs, kept
    for the backward pass) and of the largest one's (``largest_patches``)."""

    parameters: int
    activations: int
    largest: int = 0
    stacked: bool = True
    patches: int = 0
    largest_patches: int = 0


@dataclass(frozen=True)
class RunShape:
    """What a run's estimate needs besides the parameters it names: the data's sizes
    (``n_train``, ``n = |D^p|``, ``n_clean``, ``n_test``, ``input_shape``, the bytes of a
    loaded input value and of the loaded arrays), the selection scheme, the training dtype's
    bytes, the model (None for a scikit-learn learner), the augmentation, whether Algorithm 3
    trains a phase-2 model, whether weights are kept, how chunks run (``in_process``: in the
    driver; else in worker processes that each load the data), and whether the model trains
    on a GPU (``on_gpu``: its activations, weights and evaluation batch are in GPU memory,
    which is not checked here)."""

    n_train: int
    n: int
    n_clean: int
    n_test: int
    input_shape: tuple[int, ...]
    input_bytes: int
    data_bytes: int
    scheme: str
    dtype_bytes: int
    model: ModelFootprint | None
    shifts: bool
    warps: bool
    elastic_nodes: int
    two_phase: bool
    save_weights: bool
    in_process: bool
    local_workers: bool
    on_gpu: bool = False
    #: Rows a stacked step forwards per classifier: None, the batch's draws; ``"subset"``,
    #: the sub-dataset when it is smaller than the batch (``training.subset_rows`` null, where
    #: ``learners.auto_subset_rows`` applies it); an int, an explicit ``subset_rows``.
    step_rows: int | str | None = None
    #: The run's chunks (at most ``ceil(T / chunk_size)``): no executor runs more processes
    #: at once (None: no bound but ``T``).
    chunks: int | None = None


def model_footprint(model, input_shape, n_classes: int, path: str = "fast"
                    ) -> ModelFootprint:
    """Parameters and activations per sample of ``training.build_model(model, ...)``: one
    forward pass (evaluation mode, no gradients) on one zero sample, counting the output of
    every module that has no children; ``stacked`` for a stacked path (every path but
    ``reference``) and a model that stacks (``training.fast.stackable``); the patches of
    its convolutions where the path is ``cmajor`` and the model has that form. The graphed
    loop counts as stacked: it evaluates stacked groups, and counting its training (one
    module per lane) as a group's over-estimates, on the safe side."""
    import torch

    from poisoncert.training.fast import stackable, stacking
    from poisoncert.training.models import float32_default, probe_model

    net = probe_model(model, tuple(input_shape), n_classes).eval()
    count = [math.prod(input_shape), math.prod(input_shape)]  # the sum and the largest
    patches = [0, 0]  # the sum and the largest

    def hook(module, inputs, output):
        for t in output if isinstance(output, tuple | list) else (output,):
            if isinstance(t, torch.Tensor):
                count[0] += t.numel()
                count[1] = max(count[1], t.numel())
        if isinstance(module, torch.nn.Conv2d) and isinstance(output, torch.Tensor):
            kh, kw = module.kernel_size
            values = output[0, 0].numel() * kh * kw * module.in_channels // module.groups
            patches[0] += values
            patches[1] = max(patches[1], values)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if next(m.children(), None) is None]
    try:
        with torch.no_grad(), float32_default():
            net(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    cmajor = path == "cmajor" and stacking(net, how="cmajor") == "cmajor"
    return ModelFootprint(parameters=sum(p.numel() for p in net.parameters()),
                          activations=count[0], largest=count[1],
                          stacked=path != "reference" and stackable(net),
                          patches=patches[0] if cmajor else 0,
                          largest_patches=patches[1] if cmajor else 0)


def run_memory(v: dict[str, int], s: RunShape) -> list[Term]:
    """The terms of a run's memory estimate for parameter values ``v`` (config keys:
    ``selection.T`` or ``selection.k``, ``selection.ns``, ``run.chunk_size``,
    ``training.steps``, ``batch_size``, ``group_size``, ``eval_batch_size``, ``max_shift``,
    ``phase2_steps``, ``workers``) and the run's shape ``s``."""
    t_key = "selection.k" if s.scheme == PARTITION else "selection.T"
    T = v[t_key]
    if "training.group_size" in v:  # a run's groups hold at most its T classifiers
        v = {**v, "training.group_size": min(v["training.group_size"], T)}  # (auto_group_size)
    G = v.get("training.group_size", 1)
    workers = "training.workers"
    # the largest sub-dataset: D^c and ns draws, or (binomial, partition) at most all of D^p
    bagging = s.scheme in ("without_replacement", "with_replacement")
    m = s.n_clean + (v.get("selection.ns", 0) if bagging else s.n)
    size_keys = ("selection.ns",) if bagging else ()
    chunk = min(T, v["run.chunk_size"] + G - 1)  # runs.chunk_ranges: whole groups
    procs = (min(v[workers], T, s.chunks or T) if s.local_workers and not s.in_process
             else 1)
    sample = math.prod(s.input_shape)
    dt = s.dtype_bytes
    terms = [Term("prediction matrix and per-classifier records",
                  T * (s.n_test * PREDICTION_BYTES + CLASSIFIER_BYTES), (t_key,))]
    each: list[Term] = [  # in every training process
        Term("sub-datasets of a chunk", chunk * m * INDEX_BYTES + m * DRAWING_BYTES,
             (*size_keys, "run.chunk_size", "training.group_size")),
        Term("predictions of a chunk", chunk * s.n_test * CHUNK_PREDICTION_BYTES,
             ("run.chunk_size", "training.group_size")),
    ]
    if not s.in_process:
        each.append(Term("worker process and its copy of the data",
                         PROCESS_BYTES + 2 * s.data_bytes, ()))
    if s.model is None:  # scikit-learn: one classifier at a time
        each.append(Term("a classifier's sub-dataset", m * (sample * SKLEARN_VALUE_BYTES
                                                            + SKLEARN_ROW_BYTES), size_keys))
    else:
        each += _torch_terms(v, s, m, size_keys, chunk)
    keys_of = {t.what: t.keys + ((workers,) if procs > 1 else ()) for t in each}
    terms += [Term(t.what + (f" (x {procs} worker processes)" if procs > 1 else ""),
                   t.nbytes * procs, keys_of[t.what]) for t in each]
    if s.two_phase and s.model is not None:  # the run's one phase-2 model, in the driver
        B = v["training.batch_size"]
        rows = s.n_clean * sample * (s.input_bytes + dt)
        terms.append(Term("phase-2 minibatch tables and training rows",
                          v["training.phase2_steps"] * B * DRAW_BYTES + rows,
                          ("training.phase2_steps", "training.batch_size")))
    return terms


def _torch_terms(v: dict[str, int], s: RunShape, m: int, size_keys, chunk: int) -> list[Term]:
    G, B, S = v["training.group_size"], v["training.batch_size"], v["training.steps"]
    E = min(v["training.eval_batch_size"], s.n_test)  # test_x.split(E): at most the test set
    sample = math.prod(s.input_shape)
    dt, fp = s.dtype_bytes, s.model
    live = G if fp.stacked else 1  # models whose activations exist at once
    live_keys = ("training.group_size",) if fp.stacked else ()
    if fp.stacked:
        train_acts = fp.activations * ACTIVATION_PERCENT_STACKED // 100
        eval_acts = min(fp.activations * EVAL_PERCENT_STACKED // 100, EVAL_LARGEST * fp.largest)
    else:
        train_acts = fp.activations * ACTIVATION_PERCENT // 100
        eval_acts = min(fp.activations, EVAL_LARGEST * fp.largest)
    train_acts += (fp.patches + fp.largest_patches) * PATCH_PERCENT // 100
    eval_acts += fp.largest_patches  # one convolution's, freed before the next
    gpu = 0 if s.on_gpu else 1  # what lives on the training device counts on the CPU only
    # rows forwarded per classifier and step: the draws, or the sub-dataset's rows
    step_rows, step_keys = B, ("training.batch_size",)
    if isinstance(s.step_rows, int):
        step_rows, step_keys = s.step_rows, ()
    elif s.step_rows == "subset":
        step_rows, step_keys = min(B, m), ("training.batch_size", *size_keys)
    # on the CPU, test inputs go through stacked groups of EVAL_GROUP, at most
    # EVAL_BATCH_CAP at a time (training.inference.evaluate)
    eval_live = EVAL_GROUP["cpu"] if fp.stacked else 1
    E = min(E, EVAL_BATCH_CAP["cpu"])
    images = len(s.input_shape) == 3
    a = v["training.max_shift"] if s.shifts or s.warps else 0
    rows = min(s.n_train, G * m)  # the training rows a group uses, and their tensor
    terms = [Term("training rows of a group", rows * sample * (s.input_bytes + gpu * dt),
                  (*size_keys, "training.group_size"))]
    if images and a > 0:  # minibatches.ImageBatcher pads them by max_shift
        c, h, w = s.input_shape
        terms.append(Term("padded training images",
                          gpu * rows * c * (h + 2 * a) * (w + 2 * a) * dt,
                          ("training.max_shift", *size_keys, "training.group_size")))
    per_draw, temp = DRAW_BYTES, DRAW_TEMP_BYTES
    per_image = sample * dt + train_acts * dt
    if s.warps:
        per_draw += WARP_BYTES + s.elastic_nodes * ELASTIC_BYTES
        temp += WARP_TEMP_BYTES + s.elastic_nodes * ELASTIC_TEMP_BYTES
        per_image += sample * dt * 3 + (sample // max(1, s.input_shape[0])) * 2 * dt
    elif s.shifts and a > 0:
        per_draw += SHIFT_BYTES
        per_image += sample * 8  # the gather index of the shifted images
    params = fp.parameters * dt
    weights = G * params * PARAMETER_COPIES if fp.stacked else G * params * 2 + params * 3
    terms += [
        Term("minibatch tables of a group", S * B * (G * per_draw + temp) + m * WEIGHT_BYTES,
             ("training.steps", "training.batch_size", "training.group_size")),
        Term("training batch and activations", gpu * live * step_rows * per_image,
             (*step_keys, *live_keys)),
        Term("weights and optimizer state", gpu * weights, ("training.group_size",)),
        Term("test set and evaluation batch", gpu * (s.n_test * sample * dt
                                                     + eval_live * E * eval_acts * dt)
             + G * s.n_test * 8, ("training.eval_batch_size",)),
    ]
    if s.save_weights:
        terms.append(Term("weights of a chunk", chunk * params * 2,
                          ("run.chunk_size", "training.group_size")))
    return terms


def run_shape(cfg: ExperimentConfig, data, *, in_process: bool, local_workers: bool
              ) -> RunShape:
    """The ``RunShape`` of ``cfg`` on its loaded ``data`` (an ``experiment.DataSplit``)."""
    tc = cfg.training
    shape = tuple(int(d) for d in data.x_train.shape[1:])
    model, step_rows = None, None
    if tc.sklearn_learner is None:
        from poisoncert.training.groups import resolve_path

        path = resolve_path(cfg.execution.path, cfg.execution.device, training=tc)
        model = model_footprint(tc.model, shape, data.n_classes, path)
        step_rows = _step_rows(cfg, data)
    images = len(shape) == 3
    nodes = 0
    if tc.warps and tc.elastic > 0 and images:
        from poisoncert.training.minibatches import elastic_grid

        nodes = 2 * math.prod(elastic_grid(shape))
    data_bytes = sum(int(a.nbytes) for a in (data.x_train, data.y_train, data.x_test,
                                               data.y_test))
    return RunShape(
        n_train=len(data.y_train), n=data.n, n_clean=len(data.clean_idx),
        n_test=len(data.y_test), input_shape=shape, input_bytes=data.x_train.itemsize,
        data_bytes=data_bytes * (2 if cfg.data.deskew else 1), scheme=cfg.selection.scheme,
        dtype_bytes=8 if tc.dtype == "float64" else 4, model=model,
        shifts=tc.augment and images and tc.max_shift > 0, warps=tc.warps and images,
        elastic_nodes=nodes, two_phase=cfg.algorithm.two_phase,
        save_weights=cfg.keeps_weights, in_process=in_process,
        local_workers=local_workers, on_gpu=cfg.execution.device == "cuda",
        step_rows=step_rows, chunks=-(-cfg.T // cfg.run.chunk_size))


def _step_rows(cfg: ExperimentConfig, data) -> int | str | None:
    """``RunShape.step_rows`` of a torch run: an explicit ``training.subset_rows``; for null
    ``"subset"`` where ``learners.auto_subset_rows`` would apply it to a sub-dataset smaller
    than the batch (the conditions that do not depend on the sizes the estimate varies);
    else None."""
    from poisoncert.experiment import learners

    tc = cfg.training
    if cfg.execution.path in ("reference", "graphed") or tc.subset_rows == "off":
        return None
    if tc.rows_per_step is not None:
        return tc.rows_per_step
    obstacle, _ = learners.subset_rows_obstacle(cfg, data)
    return "subset" if obstacle is None else None


def run_values(cfg: ExperimentConfig, workers: int) -> dict[str, int]:
    """The parameters of ``cfg`` an estimate names (``workers``: the executor's)."""
    s, t = cfg.selection, cfg.training
    return {("selection.k" if s.scheme == PARTITION else "selection.T"): cfg.T,
            "selection.ns": s.ns or 0, "run.chunk_size": cfg.run.chunk_size,
            "training.steps": t.steps, "training.batch_size": t.batch_size,
            "training.group_size": t.models_per_group,
            "training.eval_batch_size": t.eval_batch_size, "training.max_shift": t.max_shift,
            "training.phase2_steps": cfg.algorithm.phase2_steps, "training.workers": workers}


#: Parameters that do not change a run's results (its predictions do not depend on the chunk
#: size or the number of workers): a memory refusal names them first.
RESULT_FREE = ("run.chunk_size", "training.workers")


def check_run_memory(cfg: ExperimentConfig, data, executor=None, *,
                     available: tuple[int, str] | None | bool = True) -> int:
    """Raise a ``resources.ResourceError`` naming the parameter unless the run of ``cfg`` on
    ``data`` fits in memory with ``executor`` (None: ``LocalExecutor(training.workers)``);
    return the bytes it is estimated to need."""
    from poisoncert.executors import LocalExecutor

    workers = cfg.execution.workers if executor is None else getattr(executor, "workers", 1)
    # a Ray instance started here (no address) runs its worker processes on this machine too
    local_ray = type(executor).__name__ == "RayExecutor" and executor.address is None
    local = executor is None or isinstance(executor, LocalExecutor) or local_ray
    in_process = local and workers == 1 and not local_ray
    shape = run_shape(cfg, data, in_process=in_process, local_workers=local)
    values = run_values(cfg, int(workers))
    if cfg.selection.scheme not in ("without_replacement", "with_replacement"):
        values.pop("selection.ns")
    if cfg.training.sklearn_learner is not None:
        for key in ("training.steps", "training.batch_size", "training.eval_batch_size",
                    "training.max_shift", "training.phase2_steps", "training.group_size"):
            values.pop(key)  # one classifier at a time (group size 1)
    try:
        return resources.check_memory(
            lambda v: run_memory(v, shape), values, where="the config", lows=LOWS,
            defaults=DEFAULTS, subject="the run", available=available,
            prefer=RESULT_FREE)
    except resources.ResourceError as e:
        if not local_ray:
            raise
        # the Ray executor's workers are train's --workers, not the config's training.workers
        # (which Ray does not read): the refusal names what the user can set
        text = str(e).replace("The 'training.workers' parameter of the config",
                              "The 'workers' parameter of the Ray executor (train --workers)")
        raise resources.ResourceError(text.replace("'training.workers'", "'--workers'")
                                      .replace("training.workers = ", "--workers = ")) from None
