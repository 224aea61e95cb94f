"""Training base classifiers on sub-datasets (the only part of poisoncert that imports torch).

- ``TrainConfig`` (``settings``, no torch): model, step budget, batch size, optimizer, class
  balance, augmentation: the one training-settings type, also an experiment's ``training``;
- ``train_predict(x_train, y_train, subsets, seeds, x_test, cfg, n_classes=...)`` (``engine``):
  the ``(T, n_test)`` int16 prediction matrix (``-1``: an empty sub-dataset abstains);
- ``sample_minibatches``, ``warp_images`` (``minibatches``): one classifier's draws;
- ``build_model`` (``models``): ``lenet5``, ``cnn``, ``mlp``, ``resnet18`` or a factory;
  their stacked forms (``fast``) and the stacked update (``optim.StackedOptimizer``);
- ``auto_group_size`` (``groups``): the group size ``group_size: auto`` stands for;
- ``train_predict_sklearn`` (``sklearn_learner``): a scikit-learn classifier as base learner;
- ``save_weights`` / ``load_weights`` (``weights``): safetensors;
- ``predict(cfg, state_dicts, x, ...)`` (``inference``): trained classifiers on new inputs,
  bit-identical to the engine's own test-set predictions.

Names are imported on first use, so ``poisoncert.training.settings`` (and a config that holds a
``TrainConfig``) does not import torch.
"""

from __future__ import annotations

import importlib

#: Public name -> the submodule that defines it.
_HOMES = {
    "ABSTAIN": "engine",
    "DEFAULT_GROUP_SIZE": "settings",
    "StackedOptimizer": "optim",
    "auto_group_size": "groups",
    "evaluate": "inference",
    "LENET5_MNIST": "settings",
    "MLP": "models",
    "MODELS": "settings",
    "SKLEARN_LEARNERS": "sklearn_learner",
    "LeNet5": "models",
    "Minibatches": "minibatches",
    "ResNet18": "models",
    "SmallCNN": "models",
    "TrainConfig": "settings",
    "build_model": "models",
    "group_bounds": "engine",
    "load_weights": "weights",
    "predict": "inference",
    "sample_minibatches": "minibatches",
    "save_weights": "weights",
    "sklearn_estimator": "sklearn_learner",
    "train_predict": "engine",
    "train_predict_sklearn": "sklearn_learner",
    "train_predict_with_weights": "engine",
    "warp_images": "minibatches",
    "weights_from_bytes": "weights",
    "weights_to_bytes": "weights",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
