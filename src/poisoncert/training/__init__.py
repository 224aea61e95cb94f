"""Training base classifiers on sub-datasets (the only part of poisoncert that imports torch).

- ``train_predict(x_train, y_train, subsets, seeds, x_test, cfg, n_classes=...)``: the
  ``(T, n_test)`` int16 prediction matrix (``-1``: an empty sub-dataset abstains);
- ``TrainConfig``: model, step budget, batch size, optimizer, class balance, augmentation;
- ``build_model``: ``lenet5``, ``cnn``, ``mlp``, ``resnet18`` or a factory;
- ``train_predict_sklearn``: any scikit-learn classifier as the base learner;
- ``save_weights`` / ``load_weights``: safetensors.
"""

from poisoncert.training.engine import (
    ABSTAIN,
    DEFAULT_GROUP_SIZE,
    Minibatches,
    TrainConfig,
    group_bounds,
    load_weights,
    sample_minibatches,
    save_weights,
    train_predict,
    train_predict_with_weights,
    warp_images,
    weights_from_bytes,
    weights_to_bytes,
)
from poisoncert.training.models import MLP, MODELS, LeNet5, ResNet18, SmallCNN, build_model
from poisoncert.training.sklearn_learner import (
    SKLEARN_LEARNERS,
    sklearn_estimator,
    train_predict_sklearn,
)

__all__ = [
    "ABSTAIN",
    "DEFAULT_GROUP_SIZE",
    "MLP",
    "MODELS",
    "SKLEARN_LEARNERS",
    "LeNet5",
    "Minibatches",
    "ResNet18",
    "SmallCNN",
    "TrainConfig",
    "build_model",
    "group_bounds",
    "load_weights",
    "sample_minibatches",
    "save_weights",
    "sklearn_estimator",
    "train_predict",
    "train_predict_sklearn",
    "train_predict_with_weights",
    "warp_images",
    "weights_from_bytes",
    "weights_to_bytes",
]
