"""Predict with trained base classifiers: the one inference entry point.

``predict(cfg, state_dicts, x, input_shape=..., n_classes=...)`` rebuilds every classifier
from its ``state_dict`` (``training.weights``) and evaluates it on ``x`` exactly as the
training engine evaluated the test set: the same groups of ``cfg.models_per_group`` (a short
last group padded with copies of its last classifier), the stacked network where the
architecture has one (``training.fast``) and ``path="fast"``, the same chunks of
``cfg.eval_batch_size`` inputs, one intra-op thread. So the labels it returns for the test
set are bit-identical to the ``predictions.npy`` of the run that produced the weights (on the
same device type); ``output="logits"`` gives the scores those labels are the argmax of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from poisoncert._validation import check_choice, param_error
from poisoncert.training.fast import stack_models, stackable
from poisoncert.training.models import build_model
from poisoncert.training.settings import TrainConfig
from poisoncert.votes import ABSTAIN

__all__ = ["OUTPUTS", "predict"]

#: What ``predict`` returns: argmax labels (int16 ``(T, n)``, ``-1`` for an abstaining
#: classifier) or the logits (float32 ``(T, n, n_classes)``, NaN for an abstaining one).
OUTPUTS = ("labels", "logits")


def _models(cfg: TrainConfig, state_dicts, input_shape, n_classes, device) -> list:
    models = []
    for sd in state_dicts:
        m = build_model(cfg.model, input_shape, n_classes)
        m.load_state_dict(sd)
        models.append(m.to(device=device, dtype=cfg.torch_dtype).eval())
    return models


def _group_outputs(models: list, x: torch.Tensor, cfg: TrainConfig, path: str) -> torch.Tensor:
    """``(len(models), n, n_classes)`` logits of one group (padded to the group size)."""
    k, G = len(models), cfg.models_per_group
    chunks = x.split(cfg.eval_batch_size)
    if path == "fast" and stackable(models[0]):
        net = stack_models(models + [models[-1]] * (G - k))
        out = torch.cat([net.forward_eval(c) for c in chunks], dim=1)
        return out[:k]
    return torch.stack([torch.cat([m(c) for c in chunks]) for m in models])


def predict(cfg: TrainConfig, state_dicts: Sequence[dict | None], x, *,
            input_shape: Sequence[int], n_classes: int, device="cpu", path: str = "fast",
            output: str = "labels",
            progress: Callable[[int], object] | None = None) -> np.ndarray:
    """Every classifier's output on ``x`` (``(n, *input_shape)`` float, preprocessed as the
    training inputs were).

    ``state_dicts[i]`` is classifier ``i``'s trained ``state_dict`` (``None``: it had an empty
    sub-dataset and abstains). ``path`` is the run's ``execution.path``. ``progress(k)`` is
    called as groups of ``k`` classifiers finish.
    """
    where = "predict"
    if not isinstance(cfg, TrainConfig) or cfg.sklearn_learner is not None:
        raise param_error("cfg", where, "a TrainConfig of a torch model", cfg)
    output = check_choice(output, "output", where, OUTPUTS)
    path = check_choice(path, "path", where, ("fast", "reference"))
    shape = tuple(int(s) for s in input_shape)
    x = np.asarray(x)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise param_error("x", where, f"an array of shape (n, {', '.join(map(str, shape))})",
                          f"an array of shape {x.shape}")
    device = torch.device(device)
    T, n = len(state_dicts), len(x)
    if output == "labels":
        out = np.full((T, n), ABSTAIN, dtype=np.int16)
    else:
        out = np.full((T, n, int(n_classes)), np.nan, dtype=np.float32)
    live = [i for i, sd in enumerate(state_dicts) if sd is not None]
    if progress is not None and T - len(live):
        progress(T - len(live))
    G = cfg.models_per_group
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine's numerics (see train_predict's determinism note)
    try:
        with torch.no_grad():
            xt = torch.as_tensor(x).to(device=device, dtype=cfg.torch_dtype)
            for a in range(0, len(live), G):
                index = live[a:a + G]
                models = _models(cfg, [state_dicts[i] for i in index], shape, n_classes,
                                 device)
                logits = _group_outputs(models, xt, cfg, path)
                if output == "labels":
                    out[index] = logits.argmax(-1).cpu().numpy().astype(np.int16)
                else:
                    out[index] = logits.float().cpu().numpy()
                if progress is not None:
                    progress(len(index))
    finally:
        torch.set_num_threads(threads)
    return out
