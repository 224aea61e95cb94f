"""Base learners of an experiment, chosen once from its config: ``make_learner(cfg, data)``.

A ``Learner`` trains one classifier per sub-dataset and predicts the test set:
``learner.train_predict(data, subsets, seeds, progress)`` returns the int16 prediction matrix
``(len(subsets), n_test)`` (``-1``: an empty sub-dataset abstains) and, where kept, the
classifiers' ``state_dict`` s. The three kinds:

- ``TorchLearner``: a torch model of ``poisoncert.training`` (``train_predict``);
- ``SklearnLearner``: a scikit-learn classifier (``training.model: sklearn:<name>``);
- ``TwoPhaseLearner``: the paper's Algorithm 3 (``training.two_phase``): a torch phase 1 per
  sub-dataset and the run's one phase-2 model (``train_phase2``), combined by
  ``poisoncert.twophase``.

Torch is imported when a torch learner trains, not before.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from poisoncert import twophase
from poisoncert.config import ConfigError, ExperimentConfig, config_error
from poisoncert.experiment.split import DataSplit
from poisoncert.training.settings import TrainConfig
from poisoncert.training.user_model import ModelRef

__all__ = ["Learner", "Phase2Model", "SklearnLearner", "TorchLearner", "TwoPhaseLearner",
           "auto_subset_rows", "check_learner", "ignored_keys", "make_learner",
           "subset_rows_obstacle", "train_phase2"]

Progress = Callable[[int], object] | None


class Learner(Protocol):
    def train_predict(self, data: DataSplit, subsets: list[np.ndarray], seeds: np.ndarray,
                      progress: Progress = None) -> tuple[np.ndarray, list | None]:
        """Predictions ``(len(subsets), n_test)`` and the weights (or None)."""
        ...


@dataclass(frozen=True)
class TorchLearner:
    """A torch model trained by ``poisoncert.training.train_predict`` with ``settings``;
    ``keep_weights`` also returns each classifier's ``state_dict``."""

    settings: TrainConfig
    device: str = "cpu"
    path: str = "fast"
    keep_weights: bool = False

    def train_predict(self, data: DataSplit, subsets, seeds, progress: Progress = None,
                      *, labels: np.ndarray | None = None, n_classes: int | None = None):
        """``labels`` / ``n_classes``: other training labels than ``data``'s (phase 1)."""
        from poisoncert import training

        y = data.y_train if labels is None else labels
        kwargs = dict(n_classes=data.n_classes if n_classes is None else n_classes,
                      device=self.device, path=self.path, progress=progress)
        if self.keep_weights:
            return training.train_predict_with_weights(data.x_train, y, subsets, seeds,
                                                       data.x_test, self.settings, **kwargs)
        return training.train_predict(data.x_train, y, subsets, seeds, data.x_test,
                                      self.settings, **kwargs), None


@dataclass(frozen=True)
class SklearnLearner:
    """A scikit-learn classifier of ``training.SKLEARN_LEARNERS`` by ``name``, trained by
    ``poisoncert.training.train_predict_sklearn`` (class-balanced with ``balance``)."""

    name: str
    balance: bool = True

    def train_predict(self, data: DataSplit, subsets, seeds, progress: Progress = None):
        from poisoncert.training.sklearn_learner import train_predict_sklearn

        return train_predict_sklearn(self.name, data.x_train, data.y_train, subsets, seeds,
                                     data.x_test, n_classes=data.n_classes,
                                     balance=self.balance, progress=progress), None


@dataclass(frozen=True)
class Phase2Model:
    """The run's one phase-2 model of Algorithm 3: its test ``predictions`` (positions among
    the clean classes), its ``accuracy`` on the clean-class test points, its ``seed``,
    ``steps`` and the ``seconds`` it took to train."""

    predictions: np.ndarray
    accuracy: float
    seed: int
    steps: int
    seconds: float


@dataclass(frozen=True)
class TwoPhaseLearner:
    """Algorithm 3: ``phase1`` trained per sub-dataset on the phase-1 labels (a clean class
    against each poisoned class, ``twophase.phase1_labels``), then combined with the run's
    ``phase2`` predictions (``twophase.combine``)."""

    phase1: TorchLearner
    poisoned_labels: tuple[int, ...]
    phase2: Phase2Model

    def train_predict(self, data: DataSplit, subsets, seeds, progress: Progress = None):
        poisoned = self.poisoned_labels
        y1 = twophase.phase1_labels(data.y_train, poisoned, data.n_classes)
        pred1, _ = self.phase1.train_predict(data, subsets, seeds, progress, labels=y1,
                                             n_classes=len(poisoned) + 1)
        return twophase.combine(pred1, self.phase2.predictions, poisoned, data.n_classes), None


def _torch_learner(cfg: ExperimentConfig, *, keep_weights: bool) -> TorchLearner:
    e = cfg.execution
    return TorchLearner(cfg.training, device=e.device, path=e.path, keep_weights=keep_weights)


def auto_subset_rows(cfg: ExperimentConfig, data: DataSplit) -> int | None:
    """The ``training.subset_rows`` a new run trains with when its config leaves it null: the
    size of every sub-dataset (``|D^c| + ns``) when the selection scheme fixes it (with and
    without replacement) and it is below ``training.batch_size``, the training images are
    not augmented, the model is a torch model without BatchNorm and the path is not the
    reference or the graphed loop; else None (each step forwards the draws).

    The value comes from the config and ``|D^c|`` alone, never from the attackable samples
    (schemes whose sizes vary, such as binomial selection or partitions, get None rather than
    their largest draw): classifier ``i``'s training stays a function of its own sub-dataset,
    its seed and the config, which is what the certificates assume, and a poisoned training
    set (``D^p`` changed) keeps the same value. An edit that removes a ``D^c`` sample changes
    it: ``update`` then writes the run's value into the new config. ``training.subset_rows:
    off``: None."""
    t = cfg.training
    if t.sklearn_learner is not None or cfg.execution.path in ("reference", "graphed") or \
            t.subset_rows == "off":
        return None
    obstacle, size = subset_rows_obstacle(cfg, data)
    return None if obstacle is not None or size >= t.batch_size else size


def subset_rows_obstacle(cfg: ExperimentConfig, data: DataSplit) -> tuple[str | None, int]:
    """``_subset_rows_obstacle`` for the config's torch model (built on the meta device, and
    only when the cheaper conditions hold)."""
    t = cfg.training

    def meta_model():
        import torch

        from poisoncert.training import build_model

        with torch.device("meta"):
            return build_model(t.model, tuple(data.x_train.shape[1:]), data.n_classes)

    return _subset_rows_obstacle(cfg, data, meta_model)


def _subset_rows_obstacle(cfg: ExperimentConfig, data: DataSplit, model: Callable
                          ) -> tuple[str | None, int]:
    """Why ``training.subset_rows`` cannot apply to the run (what it must be instead), or
    None, and the size every sub-dataset has (0 when the scheme does not fix one).
    ``model()`` gives the model, built only when the cheaper conditions hold."""
    from poisoncert.experiment.split import subset_plan
    from poisoncert.training.fast import batch_dependent

    scheme = cfg.selection.scheme
    if scheme not in ("with_replacement", "without_replacement"):
        return f"null for the {scheme} scheme (sub-datasets of varying sizes)", 0
    if data.x_train.ndim >= 3 and cfg.training.augments_images:
        return ("null when training images are augmented (training.augment with max_shift > "
                "0, or warps)", 0)
    plan = subset_plan(cfg.selection, data)
    size = plan.n_clean + int(plan.ns)
    if batch_dependent(model()):
        return ("null for a model with BatchNorm (its batch statistics depend on the rows "
                "forwarded)", size)
    return None, size


def make_learner(cfg: ExperimentConfig, data: DataSplit,
                 phase2: Phase2Model | None = None) -> Learner:
    """The learner of ``cfg``: scikit-learn (``training.model: sklearn:<name>``), two-phase
    (``training.two_phase``; needs the run's ``phase2`` model) or a torch model."""
    name = cfg.training.sklearn_learner
    if name is not None:
        return SklearnLearner(name, balance=cfg.training.balance)
    if cfg.algorithm.two_phase:
        if phase2 is None:
            raise ValueError("A two-phase learner needs the run's phase-2 model "
                             "(experiment.learners.train_phase2).")
        return TwoPhaseLearner(_torch_learner(cfg, keep_weights=False), data.poisoned_labels,
                               phase2)
    return _torch_learner(cfg, keep_weights=cfg.keeps_weights)


#: The ``training`` keys of the training settings (``TrainConfig``) in file order.
_TRAIN_KEYS = tuple(f"training.{f.name}" for f in dataclasses.fields(TrainConfig))
#: Keys a knn / rnn run never reads (it trains no classifiers: ``neighbors.train_nn_run``
#: searches with ``data`` and ``selection.k`` / ``r`` alone). Not named: ``training.device``
#: (``cuda`` is refused, ``cpu`` is what the search runs on) and ``training.two_phase``
#: (``true`` is refused).
_NN_IGNORED = (*_TRAIN_KEYS, "training.path", "training.workers", "training.save_weights",
               "training.phase2_steps", "selection.seed", "run.chunk_size")
#: Keys a scikit-learn learner never reads (``SklearnLearner``: its name and
#: ``training.balance``; chunks of one classifier, ``groups.recorded_group_size``). Not named:
#: ``training.model_kwargs`` and ``training.save_weights: true`` (refused), ``false`` (what
#: it does anyway), and ``training.subset_rows`` / ``path`` are recorded in the manifest's
#: ``engine`` but train nothing.
_SKLEARN_IGNORED = tuple(k for k in _TRAIN_KEYS if k not in (
    "training.model", "training.balance", "training.model_kwargs")) + (
    "training.path", "training.phase2_steps")


def ignored_keys(cfg: ExperimentConfig) -> tuple[tuple[str, ...], str]:
    """The dotted config keys that ``cfg``'s run accepts and never reads, and the words of a
    note saying why (``train`` names those a user gave): every training setting for the knn
    / rnn scheme (no classifiers are trained), those of the torch engine for a scikit-learn
    learner, ``training.phase2_steps`` without ``training.two_phase``. Each was checked to
    leave the run's predictions, votes, neighbours and manifest as they were (but for the
    config hash, and the ``engine`` record of a scikit-learn run's ``subset_rows`` and
    ``path``)."""
    from poisoncert.selection import NEAREST_NEIGHBOURS

    scheme = cfg.selection.scheme
    if scheme in NEAREST_NEIGHBOURS:
        return _NN_IGNORED, f"the {scheme} scheme (it trains no classifiers)"
    if cfg.training.sklearn_learner is not None:
        return _SKLEARN_IGNORED, (f"training.model {cfg.training.model} (scikit-learn fits it "
                                  "with its own settings; it takes training.balance)")
    if not cfg.algorithm.two_phase:
        return ("training.phase2_steps",), ("a run without training.two_phase (no phase-2 model "
                                             "is trained)")
    return (), ""


def check_cpu_only(cfg: ExperimentConfig) -> None:
    """``training.device: cuda`` for a run that never uses a GPU, the exact kNN / rNN search
    (numpy) or a scikit-learn learner: one ``ConfigError`` (it was ignored, and the run's
    manifest recorded a CUDA device it never trained on, ``CUDA not available`` included)."""
    if cfg.execution.device != "cuda":
        return
    from poisoncert.selection import NEAREST_NEIGHBOURS

    scheme = cfg.selection.scheme
    if scheme in NEAREST_NEIGHBOURS:
        why = f"selection.scheme {scheme} (the neighbour search runs on the CPU)"
    elif cfg.training.sklearn_learner is not None:
        why = f"training.model {cfg.training.model} (scikit-learn trains on the CPU)"
    else:
        return
    raise config_error("training.device", f"'cpu' for {why}", "cuda")


def check_learner(cfg: ExperimentConfig, data: DataSplit) -> None:
    """Check the learner against the data, before any file is written: the torch model
    accepts the input shape and the device is available (a ``ConfigError`` naming the key)."""
    if cfg.training.sklearn_learner is not None:
        return
    from poisoncert.training.models import probe_model

    shape = tuple(data.x_train.shape[1:])
    model = cfg.training.model
    try:
        built = probe_model(model, shape, data.n_classes)
    except ValueError as e:
        if str(e).startswith("The 'training.model' parameter"):
            raise ConfigError(str(e)) from None
        raise config_error("training.model", f"a model for inputs of shape {shape} ({e})",
                           model) from None
    except Exception as e:  # noqa: BLE001 - a user's factory failed: one line naming it
        if not isinstance(model, ModelRef):
            raise
        key = "training.model_kwargs" if isinstance(e, TypeError) and model.kwargs else \
            "training.model"
        raise config_error(key, f"what {model}(input_shape={shape}, n_classes="
                           f"{data.n_classes}, **model_kwargs) accepts ({type(e).__name__}: "
                           f"{e})", model.kwargs if key.endswith("kwargs") else str(model)
                           ) from None
    if isinstance(model, ModelRef) and not any(p.requires_grad for p in built.parameters()):
        raise config_error("training.model", "a factory of a network with trainable "
                           "parameters (this one has none: there is nothing to train)",
                           str(model))
    if isinstance(model, ModelRef) and cfg.execution.device == "cpu":
        _check_forward(model, built, data)  # (on CUDA its forward may need CUDA's kernels)
    if cfg.execution.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise config_error("training.device", "'cpu' (no CUDA device is available)", "cuda")
    if cfg.training.rows_per_step is not None:
        _check_subset_rows(cfg, data, built)


def _check_forward(model: ModelRef, built, data: DataSplit) -> None:
    """A user's factory's module maps two training inputs to two rows of ``n_classes``
    float logits, in evaluation and in training mode (without gradients; torch's random
    state restored after, so nothing the run draws changes): else one line naming
    ``training.model``, before any file is written (the engine's first step would fail
    with a traceback, leaving a run folder behind)."""
    import torch

    from poisoncert.training.fast import forward_draws
    from poisoncert.training.models import float32_default

    shape = tuple(data.x_train.shape[1:])
    want = f"a model whose forward maps a batch (B, {', '.join(map(str, shape))}) of float " \
           f"inputs to logits (B, {data.n_classes})"
    x = torch.as_tensor(np.asarray(data.x_train[:2], dtype=np.float32))
    was_training = built.training
    for mode in ("evaluation", "training"):
        try:
            built.train(mode == "training")
            with float32_default():  # as the engine runs it, whatever the caller's default
                out, drew = forward_draws(built, x)
        except Exception as e:  # noqa: BLE001 - the user's code: one line naming it
            raise config_error("training.model", f"{want} (its forward in {mode} mode on 2 "
                               f"training inputs failed: {type(e).__name__}: "
                               f"{' '.join(str(e).split())})", str(model)) from None
        finally:
            built.train(was_training)
        got = (f"a {type(out).__name__}" if not isinstance(out, torch.Tensor) else
               f"{out.dtype} {tuple(out.shape)}")
        if (not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), data.n_classes)
                or not out.is_floating_point()):
            raise config_error("training.model", f"{want} (in {mode} mode, for 2 training "
                               f"inputs it returned {got})", str(model))
        if drew and mode == "evaluation":
            raise config_error("training.model", f"{want}, drawing no random numbers in "
                               "evaluation mode (its forward did: its predictions, and so "
                               "the certificates, could not be reproduced)", str(model))


def _check_subset_rows(cfg: ExperimentConfig, data: DataSplit, model) -> None:
    """An explicit ``training.subset_rows`` fits the run (the engine's conditions, checked
    before anything is written)."""
    key, U = "training.subset_rows", cfg.training.subset_rows
    obstacle, size = _subset_rows_obstacle(cfg, data, lambda: model)
    if obstacle is not None:
        raise config_error(key, obstacle, U)
    if U < size:
        raise config_error(key, f"at least the size of every sub-dataset ({size} rows), or null",
                           U)


def train_phase2(cfg: ExperimentConfig, data: DataSplit) -> Phase2Model:
    """The run's one phase-2 model (two-phase runs): trained on ``D^c`` alone, over the clean
    classes, for ``training.phase2_steps`` steps (the ``training`` settings otherwise, one
    model per group) with seed ``twophase.phase2_seed(selection.seed)``."""
    from poisoncert import training

    t0 = time.perf_counter()
    poisoned = data.poisoned_labels
    settings = dataclasses.replace(cfg.training, steps=cfg.algorithm.phase2_steps, group_size=1,
                                   subset_rows=None)
    y2 = twophase.phase2_labels(data.y_train, poisoned, data.n_classes)
    y2 = np.maximum(y2, 0)  # poisoned-class rows are never used by phase 2
    clean = twophase.clean_classes(poisoned, data.n_classes)
    seed = twophase.phase2_seed(cfg.selection.seed)
    pred = training.train_predict(data.x_train, y2, [data.clean_idx], [seed], data.x_test,
                                  settings, n_classes=clean.size, device=cfg.execution.device,
                                  path=cfg.execution.path)[0].astype(np.int64)
    on_clean = np.isin(data.y_test, clean)
    # an abstaining output (-1: non-finite logits) is wrong, not the last clean class
    said = np.concatenate([clean, [-1]])[pred[on_clean]]
    accuracy = float(np.mean(said == data.y_test[on_clean]))
    return Phase2Model(predictions=pred, accuracy=accuracy, seed=seed,
                       steps=cfg.algorithm.phase2_steps, seconds=time.perf_counter() - t0)
