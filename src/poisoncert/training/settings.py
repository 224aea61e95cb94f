"""How base classifiers are trained: ``TrainConfig``, the one training-settings type (no torch).

``TrainConfig`` is held by an experiment config (its ``training`` section) and used as it is by
the engine (``poisoncert.training.train_predict``); its model names are checked here, without
importing torch, so that a config is checked in full when it is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import InitVar, dataclass
from typing import Any, ClassVar

import numpy as np

from poisoncert._validation import (
    INT_LIMIT,
    INT_LIMIT_TEXT,
    NotPlain,
    as_given,
    check_choice,
    check_int,
    check_real,
    later_high,
    param_error,
    plain,
    shown,
)
from poisoncert.training.sklearn_learner import SKLEARN_LEARNERS
from poisoncert.training.user_model import ModelRef, is_model_ref

__all__ = [
    "CUDA_DTYPES",
    "DEFAULT_GROUP_SIZE",
    "ELASTIC_MAX",
    "LR_MAX",
    "WEIGHT_DECAY_MAX",
    "GRAPHED_OPTIMIZERS",
    "LENET5_MNIST",
    "MODELS",
    "PATHS",
    "SKLEARN_PREFIX",
    "ModelSpec",
    "TrainConfig",
    "check_model",
    "graphed_obstacle",
]

#: Names of the torch models (``build_model``), and their aliases.
MODELS = ("lenet5", "lenet5_avg", "cnn", "cnn_small", "mlp", "resnet18")
_MODEL_ALIASES = {"lenet5": "lenet5", "lenet": "lenet5", "lenet5avg": "lenet5_avg",
                  "mlp": "mlp", "resnet18": "resnet18", "cnn": "cnn", "cnnsmall": "cnn_small"}
#: A scikit-learn learner is named ``sklearn:<name>`` (``sklearn:knn``).
SKLEARN_PREFIX = "sklearn:"
#: Classifiers trained together by the fast path on the CPU with ``group_size: auto`` (the
#: fastest measured there, ``benchmarks/bench_training.py --study``), and by runs started
#: before ``auto`` existed (their manifest records no group size).
DEFAULT_GROUP_SIZE = 8
OPTIMIZERS = ("adam", "sgd", "adadelta")
#: ``tf32`` and ``bfloat16`` (autocast) are for CUDA devices only.
DTYPES = ("float32", "float64", "tf32", "bfloat16")
CUDA_DTYPES = ("tf32", "bfloat16")
#: The engine's paths (``execution.path``): stacked groups (``fast``, the device's fastest
#: stacking; ``twin``, ``vmap``, ``bmm`` and ``cmajor`` name one,
#: ``training.fast.path_stacking``) or one model at a time (``reference``; ``graphed``, the
#: same loop with each step captured once as a CUDA graph, ``training.graphed``).
PATHS = ("fast", "twin", "vmap", "bmm", "cmajor", "reference", "graphed")
SCHEDULES = ("constant", "cosine")
#: Largest ``elastic`` (the displacements' standard deviation, pixels): far beyond any image's
#: size (a displacement that large only blanks it), and small enough that every float32 grid
#: draw is finite (1e300 overflowed to inf: numpy's overflow warning, then a diverged run).
ELASTIC_MAX = 1e6
#: Largest ``lr``: ten times Adadelta's customary 1.0 and a hundred times the SGD rates in
#: common use (0.01-0.1), so no real setting is refused, while a slip of the exponent (``1e3``
#: for ``1e-3``) or an absurd value is refused before a run trains on it (``lr 1e300`` trained
#: every classifier to non-finite outputs; Adam at 10 on the demo already gives chance
#: accuracy, but finite).
LR_MAX = 10.0
#: Largest ``weight_decay`` (L2 added to the gradient): ten times the largest in common use
#: (0.1); at 1 with SGD at lr 1 a step already sends every weight to zero.
WEIGHT_DECAY_MAX = 1.0
#: Optimizers the ``graphed`` path captures (torch's fused Adam and SGD steps).
GRAPHED_OPTIMIZERS = ("adam", "sgd")
#: Classifiers evaluated as one stacked group by ``training.inference.evaluate``, per device
#: type (CPU: measured; 8 to 32 run at the same rate there, ``benchmarks/bench_training.py
#: --study``); the memory estimate (``experiment.resources``) counts them.
EVAL_GROUP = {"cpu": 8, "cuda": 64}
#: Most inputs per forward pass, per device type: on the CPU a stacked LeNet-5 group
#: evaluates 64 images 1.7x faster per image than 500 (its activations stay in the caches;
#: ``--study``), so ``eval_batch_size`` chunks are cut to this size there.
EVAL_BATCH_CAP = {"cpu": 64}

#: A model name or a factory ``(input_shape, n_classes) -> torch.nn.Module``.
ModelSpec = str | Callable[..., Any]


def check_model(model, where: str = "TrainConfig", name: str = "model") -> ModelSpec:
    """A torch model name in canonical form, the factory itself, or a ``ModelRef`` for
    ``"package.module:factory"`` (not imported here); a ``ValueError`` else."""
    if isinstance(model, ModelRef):
        return model
    if callable(model) and not isinstance(model, str):
        return model
    if isinstance(model, str):
        key = model.strip().lower().replace("-", "").replace("_", "")
        if key in _MODEL_ALIASES:
            return _MODEL_ALIASES[key]
        if is_model_ref(model) and not model.strip().lower().startswith(SKLEARN_PREFIX):
            return ModelRef(model)
    shown = ", ".join(repr(m) for m in MODELS)
    raise param_error(name, where, f"one of {shown}, 'package.module:factory' or a callable "
                      "(input_shape, n_classes) -> torch.nn.Module", model)


def _check_learner(model, where: str, name: str) -> ModelSpec:
    """``check_model``, or ``sklearn:<name>`` with a name of ``SKLEARN_LEARNERS``."""
    if isinstance(model, str) and model.strip().lower().startswith(SKLEARN_PREFIX):
        learner = model.strip()[len(SKLEARN_PREFIX):].strip().lower().replace("-", "_")
        if learner in SKLEARN_LEARNERS:
            return SKLEARN_PREFIX + learner
    try:
        return check_model(model, where, name)
    except ValueError:
        models = ", ".join(repr(m) for m in MODELS)
        learners = ", ".join(repr(SKLEARN_PREFIX + n) for n in SKLEARN_LEARNERS)
        raise param_error(name, where, f"one of {models}, 'package.module:factory' (a "
                          "factory (input_shape, n_classes, **model_kwargs) -> "
                          "torch.nn.Module), a callable (input_shape, n_classes) -> "
                          f"torch.nn.Module, or one of {learners}", model) from None


@dataclass(frozen=True)
class TrainConfig:
    """How every base classifier is trained: the one training-settings type, with one set of
    defaults. An experiment config's ``training`` section holds it (``ExperimentConfig.
    training``, stored with the run), and the engine uses it as it is (``train_predict``).

    - ``model``: a torch model of ``poisoncert.training`` (``"lenet5"``, max pooling;
      ``"lenet5_avg"``, average pooling; ``"cnn"``, ``"cnn_small"``, ``"mlp"``,
      ``"resnet18"``), a factory ``(input_shape, n_classes) -> torch.nn.Module`` (a
      module-level function, to run in worker processes; one returning a built-in model gets
      its hand-written stacked twin, any other module without dropout is stacked through
      ``torch.func.vmap``), the import path of such a factory,
      ``"package.module:factory"``, called as ``factory(input_shape, n_classes,
      **model_kwargs)`` (``user_model.ModelRef``; the module is imported when a model is
      built, never when the config is read), or a scikit-learn learner ``"sklearn:<name>"``
      (a name of ``SKLEARN_LEARNERS``; it uses ``balance`` only, see
      ``train_predict_sklearn``).
    - ``model_kwargs``: keyword arguments of a ``"package.module:factory"`` model (a mapping
      with string keys, or null).
    - ``steps`` minibatches of ``batch_size`` samples each: the sub-dataset is expanded to
      ``steps * batch_size`` draws with replacement (the paper's WeightedRandomSampler),
      whatever its size.
    - ``optimizer`` (``adam``, ``sgd`` with ``momentum``, ``adadelta``), ``lr`` (at most
      ``LR_MAX``), ``weight_decay`` (L2, added to the gradient, torch's convention; at most
      ``WEIGHT_DECAY_MAX``); ``lr_schedule``
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
      standard deviation ``elastic`` pixels (at most ``ELASTIC_MAX``) on a coarse grid (one
      node per 4 pixels, at least 2 per axis) interpolated bilinearly over the image (Simard
      et al.'s elastic distortions, smoothed by interpolation instead of a Gaussian filter).
    - ``dtype``: ``float32`` or ``float64`` (training and inference); on CUDA also ``tf32``
      (float32 with TensorFloat-32 matmuls and convolutions) and ``bfloat16`` (float32
      parameters and optimizer, forward and backward under bfloat16 autocast).
    - ``group_size``: classifiers trained as one stacked network by the fast path; ``"auto"``
      (the default; ``None`` means the same) picks it from the device, the model and the free
      memory (``training.groups.auto_group_size``: ``DEFAULT_GROUP_SIZE`` on the CPU). A
      run's groups are at most its ``T`` classifiers (a larger group would train copies of
      the last one only to discard them). Part of the numerics: a run directory records the
      size it used, and a resumed run keeps it.
    - ``eval_batch_size``: test images per forward pass (fixed, so predictions never depend on
      how the test set is split).
    - ``subset_rows``: ``None`` (the default; ``"auto"`` means the same), ``"off"``, or
      ``U``, at least every classifier's
      sub-dataset size: the stacked fast path then forwards each classifier's sub-dataset
      (padded to ``U`` rows) once per step and weights each row's loss by how many of the
      step's ``batch_size`` draws picked it, the same gradient as forwarding the draws
      (rounded differently), at ``U / batch_size`` of the cost: a 10-image sub-dataset with
      batches of 32 trains about 2x faster. For models whose output for a sample does not
      depend on the rest of the batch (no BatchNorm) and draws without augmentation; the
      reference path always forwards the draws. Part of the numerics. A run sets it itself
      (``experiment.learners.auto_subset_rows``: the sub-dataset size when the selection
      scheme fixes it and it is below ``batch_size``) and records it, so a resumed run keeps
      it; ``"off"`` keeps a run on the draws (in a library call ``None`` and ``"off"`` both
      forward the draws: ``train_predict`` never picks ``U`` itself).

    The defaults (an MLP, 200 Adam steps at lr 1e-3 of 32 class-balanced draws, no
    augmentation) are those of an experiment config. The most accurate setting measured for
    30-image MNIST sub-datasets is ``model="cnn_small"``, 2000 steps, ``lr=8e-3``,
    ``lr_schedule="cosine"`` and warps ``rotation=15, scale=0.15, shear=10, max_shift=3,
    elastic=1`` (about 12x the cost of ``LENET5_MNIST``; ``experiments/mnist_ns30.yaml``, and
    the learner ablation in ``docs/results.md``). ``LENET5_MNIST`` is the recommended cheap
    setting for LeNet-5 on MNIST-sized sub-datasets (10-30 images): 200 Adam steps (lr 3e-3)
    of 32 class-balanced draws shifted by up to 2 pixels. Measured on MNIST (ns = 30, bagging
    with replacement, 20 classifiers, 10,000 test images): mean base accuracy 0.63 (0.58
    without the shifts, 0.61 with lr 1e-3, 0.63 with 100 steps and 0.64 with 400, 0.59 with
    ``lenet5_avg``): ``benchmarks/bench_training.py --accuracy``. T = 1000 such classifiers
    on full MNIST, 10,000 test images: about 4 minutes with ``workers=2`` on 2 CPU cores.

    ``where`` and ``key_prefix`` (not fields) name the parameters in errors: a config builds
    its section with ``where="the config", key_prefix="training."``.
    """

    #: What a key takes, in an error's words, where its type cannot say it (a config's loader
    #: uses it too).
    ALLOWED: ClassVar[dict[str, str]] = {
        "subset_rows": f"null ('auto'), 'off' or an int in the range [1, {INT_LIMIT_TEXT}]",
        "group_size": f"'auto' or an int in the range [1, {INT_LIMIT_TEXT}]"}

    model: ModelSpec = "mlp"
    steps: int = 200
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.0
    balance: bool = True
    augment: bool = False
    max_shift: int = 2
    rotation: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    elastic: float = 0.0
    dtype: str = "float32"
    group_size: int | str | None = "auto"
    eval_batch_size: int = 500
    model_kwargs: dict[str, Any] | None = None
    subset_rows: int | str | bool | None = None  # bool: YAML reads a bare off as false
    where: InitVar[str] = "TrainConfig"
    key_prefix: InitVar[str] = ""

    def __post_init__(self, where: str, key_prefix: str) -> None:
        w, k = where, key_prefix

        def put(name: str, value) -> None:
            object.__setattr__(self, name, value)

        model = _check_learner(self.model, w, k + "model")
        kwargs = self.model_kwargs
        if kwargs is not None:
            if not isinstance(model, ModelRef):
                raise param_error(k + "model_kwargs", w, "null unless the model is "
                                  "'package.module:factory'", kwargs)
            if not isinstance(kwargs, dict) or not all(isinstance(x, str) for x in kwargs):
                raise param_error(k + "model_kwargs", w, "a mapping with string keys, or null",
                                  kwargs)
            try:  # config.yaml and the config's hash hold them (np.int64(3) became a
                kwargs = plain(kwargs)  # TypeError from json deep in train_run)
            except NotPlain as e:
                raise param_error(k + "model_kwargs", w, "a mapping of numbers, strings, "
                                  "booleans, nulls, and lists and mappings of them (what "
                                  "config.yaml holds), or null", f"a {type(e.args[0]).__name__}"
                                  f" among its values ({shown(e.args[0])})") from None
            put("model_kwargs", dict(kwargs))
        if isinstance(model, ModelRef):
            model = ModelRef(model, self.model_kwargs)
        put("model", model)
        put("steps", check_int(self.steps, k + "steps", w, low=1, high=INT_LIMIT))
        put("batch_size", check_int(self.batch_size, k + "batch_size", w, low=1,
                                    high=INT_LIMIT))
        put("optimizer", check_choice(self.optimizer, k + "optimizer", w, OPTIMIZERS))
        # LR_MAX, WEIGHT_DECAY_MAX and ELASTIC_MAX came after runs beyond them: a run of an
        # earlier version keeps its stored value (_validation.Earlier)
        put("lr", as_given(self.lr, check_real(self.lr, k + "lr", w, low=0.0, low_open=True,
                                               high=later_high(self.lr, LR_MAX))))
        put("lr_schedule", check_choice(self.lr_schedule, k + "lr_schedule", w, SCHEDULES))
        put("momentum", check_real(self.momentum, k + "momentum", w, low=0.0, high=1.0,
                                   high_open=True))
        put("weight_decay", as_given(self.weight_decay, check_real(
            self.weight_decay, k + "weight_decay", w, low=0.0,
            high=later_high(self.weight_decay, WEIGHT_DECAY_MAX))))
        for name in ("balance", "augment"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise param_error(k + name, w, "a bool", getattr(self, name))
            put(name, bool(getattr(self, name)))
        put("max_shift", check_int(self.max_shift, k + "max_shift", w, low=0, high=INT_LIMIT))
        put("rotation", check_real(self.rotation, k + "rotation", w, low=0.0, high=180.0))
        put("scale", check_real(self.scale, k + "scale", w, low=0.0, high=1.0, high_open=True))
        put("shear", check_real(self.shear, k + "shear", w, low=0.0, high=90.0, high_open=True))
        put("elastic", as_given(self.elastic, check_real(
            self.elastic, k + "elastic", w, low=0.0, high=later_high(self.elastic,
                                                                      ELASTIC_MAX))))
        put("dtype", check_choice(self.dtype, k + "dtype", w, DTYPES))
        if self.group_size is None or (isinstance(self.group_size, str)
                                       and self.group_size.strip().lower() == "auto"):
            put("group_size", "auto")
        else:
            try:
                put("group_size", check_int(self.group_size, k + "group_size", w, low=1,
                                            high=INT_LIMIT))
            except ValueError:
                raise param_error(k + "group_size", w,
                                  f"'auto' or an int in the range [1, {INT_LIMIT_TEXT}]",
                                  self.group_size) from None
        put("eval_batch_size", check_int(self.eval_batch_size, k + "eval_batch_size", w, low=1,
                                         high=INT_LIMIT))
        rows = self.subset_rows
        if rows is None or (isinstance(rows, str) and rows.strip().lower() == "auto"):
            put("subset_rows", None)
        elif rows is False or (isinstance(rows, str) and rows.strip().lower() == "off"):
            put("subset_rows", "off")  # YAML reads a bare off as false
        else:
            try:
                put("subset_rows", check_int(rows, k + "subset_rows", w, low=1,
                                             high=INT_LIMIT))
            except ValueError:
                allowed = self.ALLOWED["subset_rows"] if k else (  # a config / a library call
                    f"None, 'off' or an int in the range [1, {INT_LIMIT_TEXT}]")
                raise param_error(k + "subset_rows", w, allowed, rows) from None

    @property
    def sklearn_learner(self) -> str | None:
        """The scikit-learn learner's name (``model`` without ``sklearn:``), or None for a
        torch model."""
        if isinstance(self.model, str) and self.model.startswith(SKLEARN_PREFIX):
            return self.model[len(SKLEARN_PREFIX):]
        return None

    @property
    def models_per_group(self) -> int:
        """Classifiers trained as one group (``group_size``; 1 for a scikit-learn learner,
        trained one by one; ``DEFAULT_GROUP_SIZE`` for ``"auto"``, whose size for a device is
        ``training.groups.auto_group_size``). Chunks of a run hold whole groups."""
        if self.sklearn_learner is not None:
            return 1
        return DEFAULT_GROUP_SIZE if self.group_size == "auto" else self.group_size

    @property
    def rows_per_step(self) -> int | None:
        """The ``U`` rows a stacked step forwards per classifier (``subset_rows`` when it is
        an int), or None: each step forwards the draws (``None``, ``"off"``)."""
        return self.subset_rows if isinstance(self.subset_rows, int) else None

    @property
    def warps(self) -> bool:
        """Whether images are augmented by random warps (see the class docstring)."""
        return self.augment and (self.rotation > 0 or self.scale > 0 or self.shear > 0
                                 or self.elastic > 0)

    @property
    def augments_images(self) -> bool:
        """Whether image inputs are augmented (integer shifts or warps; flat inputs never)."""
        return self.warps or (self.augment and self.max_shift > 0)

    @property
    def torch_dtype(self):
        """The dtype of parameters and inputs: ``torch.float64`` for ``float64``, else
        ``torch.float32``."""
        import torch

        return torch.float64 if self.dtype == "float64" else torch.float32

    @property
    def autocast_dtype(self):
        """``torch.bfloat16`` for ``dtype="bfloat16"`` (autocast), else None."""
        import torch

        return torch.bfloat16 if self.dtype == "bfloat16" else None


#: The recommended cheap setting for LeNet-5 on MNIST-sized sub-datasets (see ``TrainConfig``).
LENET5_MNIST = TrainConfig(model="lenet5", lr=3e-3, augment=True, eval_batch_size=64)


def graphed_obstacle(cfg: TrainConfig) -> tuple[str, str, object] | None:
    """Why the training settings ``cfg`` cannot train on the ``graphed`` path, as
    ``(training key, allowed, got)``, or None: a CUDA graph keeps the learning rate it
    captured (so the schedule must be constant), and only the fused Adam and SGD steps can be
    captured. (A scikit-learn learner has no training steps: the path does not apply.)"""
    if cfg.sklearn_learner is not None:
        return None
    if cfg.lr_schedule != "constant":
        return ("training.lr_schedule", "'constant' with training.path 'graphed' (a CUDA graph "
                "keeps the learning rate it captured)", cfg.lr_schedule)
    if cfg.optimizer not in GRAPHED_OPTIMIZERS:
        return ("training.optimizer", f"one of {GRAPHED_OPTIMIZERS} with training.path "
                "'graphed' (their fused steps can be captured)", cfg.optimizer)
    return None
