"""A small convolutional network of your own, as a poisoncert base classifier.

``config.yaml`` beside this file names it as ``training.model:
"examples.custom_model.net:make_model"`` with ``training.model_kwargs: {width: 12}``; poisoncert
calls ``make_model(input_shape, n_classes, width=12)`` once per base classifier, under that
classifier's seed, and trains what it returns with the config's ``training`` settings, a group
of classifiers at a time stacked through ``torch.func.vmap`` (a model that draws random numbers
in training, such as dropout, or whose state dict is not one entry per parameter and buffer
trains one classifier at a time; docs/predict.md).

What a factory must do for the certificate to hold: return a fresh ``torch.nn.Module`` whose
initial weights come from torch's global random generator (poisoncert seeds it per
classifier) and whose ``forward`` maps a batch ``(B, *input_shape)`` of float inputs to
unnormalised logits ``(B, n_classes)``; no statistic of the training data may enter it.
"""

from __future__ import annotations

from torch import nn


def make_model(input_shape, n_classes: int, width: int = 8) -> nn.Module:
    """conv 3x3 (``width`` channels) -> ReLU -> 2x2 max pooling -> dense ``n_classes``."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(width * (h // 2) * (w // 2), n_classes),
    )
