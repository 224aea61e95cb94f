"""Predict with trained base classifiers: the one inference entry point.

``evaluate(state_dicts, x, cfg, ...)`` is how the training engine computes its test-set
predictions **and** how ``predict`` computes predictions of saved classifiers: the
classifiers are evaluated in stacked groups of ``eval_group_size(model, device)``
(independent of the training group size; a short last group is padded with copies of its last
classifier), through the stacked network where the model has one (``training.fast``) unless
``path="reference"``, on chunks of ``cfg.eval_batch_size`` inputs (at most
``EVAL_BATCH_CAP`` on the device type), on one intra-op thread. A
classifier's logits depend only on its weights, the inputs and these settings, so the labels
``predict`` returns for a run's test set are bit-identical to its ``predictions.npy`` (on the
same device type); ``output="logits"`` gives the scores those labels are the argmax of.

``predict(..., threads=k)`` evaluates ``k`` groups at once in threads of this process (each
torch operation still runs on one thread, so the result does not depend on ``k``); with fewer
groups than threads (``T <= 8`` on the CPU: one group) each group's inputs are shared among
them in pieces that begin at chunk boundaries, so every chunk is the one a single thread runs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager

import numpy as np
import torch

from poisoncert._validation import check_choice, check_int, param_error
from poisoncert.training.fast import path_stacking, stack_models, stacking, state_dict_is_own
from poisoncert.training.models import RNG_LOCK, build_model
from poisoncert.training.settings import (
    CUDA_DTYPES,
    EVAL_BATCH_CAP,
    EVAL_GROUP,
    PATHS,
    TrainConfig,
)
from poisoncert.votes import ABSTAIN

__all__ = ["OUTPUTS", "PROGRESS_UNITS", "eval_group_size", "evaluate", "labels_of", "precision",
           "predict"]

#: What ``predict`` returns: argmax labels (int16 ``(T, n)``, ``-1`` for an abstaining
#: classifier) or the logits (float32 ``(T, n, n_classes)``, NaN for an abstaining one).
OUTPUTS = ("labels", "logits")

#: What ``predict``'s ``progress(k)`` counts: classifiers (as each group finishes) or
#: predictions (one classifier on one input, as each chunk of inputs is through a group).
PROGRESS_UNITS = ("classifiers", "predictions")


@contextmanager
def precision(cfg: TrainConfig, device: torch.device):
    """The device's math settings for ``cfg.dtype`` during a call (restored after): on CUDA,
    deterministic cuDNN algorithms, and TensorFloat-32 only for ``dtype="tf32"``."""
    if device.type != "cuda":
        yield
        return
    b = torch.backends
    saved = (b.cudnn.deterministic, b.cudnn.benchmark, b.cudnn.allow_tf32,
             b.cuda.matmul.allow_tf32)
    b.cudnn.deterministic, b.cudnn.benchmark = True, False
    b.cudnn.allow_tf32 = b.cuda.matmul.allow_tf32 = cfg.dtype == "tf32"
    try:
        yield
    finally:
        (b.cudnn.deterministic, b.cudnn.benchmark, b.cudnn.allow_tf32,
         b.cuda.matmul.allow_tf32) = saved


def eval_group_size(model: torch.nn.Module, device) -> int:
    """How many classifiers ``evaluate`` stacks at once on ``device`` (1 for a model that is
    not stacked; 16 on CUDA for models over a million parameters)."""
    device = torch.device(device)
    if stacking(model) is None:
        return 1
    G = EVAL_GROUP.get(device.type, 8)
    if device.type == "cuda" and sum(p.numel() for p in model.parameters()) > 1_000_000:
        G = 16
    return G


def _template(cfg: TrainConfig, input_shape, n_classes) -> torch.nn.Module:
    """The classifiers' architecture on the meta device (no memory, no initialisation): what
    a stacked group is built from, with each classifier's state dict."""
    with torch.device("meta"):
        return build_model(cfg.model, input_shape, n_classes)


def _loadable(template: torch.nn.Module, state_dicts) -> bool:
    """Whether every state dict has exactly the template's entries and shapes, and these are
    its parameters and buffers (no tied or non-persistent ones); else the plain modules load
    them (with ``load_state_dict``'s own error where they do not fit)."""
    if not state_dict_is_own(template):
        return False
    want = {n: t.shape for n, t in template.state_dict().items()}
    return all(isinstance(sd, dict) and sd.keys() == want.keys()
               and all(sd[n].shape == shape for n, shape in want.items())
               for sd in state_dicts)


_FORK_LOCK = RNG_LOCK  # shared with probe_model's forks
#: The largest weights of a group (bytes) whose inputs ``predict`` shares among threads when
#: there are fewer groups than threads: LeNet-5, the small CNNs and MLPs (a few MB), not
#: ResNet-18 (358 MB for 8), each of whose copies holds gigabytes of activations.
SHARE_MAX_BYTES = 64 << 20


def _modules(cfg: TrainConfig, state_dicts, input_shape, n_classes, device) -> list:
    """Modules holding ``state_dicts`` on ``device`` (built on the meta device: no
    initialisation is spent on weights that are replaced; on the CPU, its RNG forked, where
    the state dict does not hold every tensor: a non-persistent buffer keeps the value its
    constructor gives it)."""
    meta = state_dict_is_own(_template(cfg, input_shape, n_classes))
    models = []
    for sd in state_dicts:
        if meta:
            with torch.device("meta"):
                m = build_model(cfg.model, input_shape, n_classes)
            m.load_state_dict(sd, assign=True)
        else:
            # one thread at a time: fork_rng saves and restores the process's RNG, and two
            # threads' forks interleaved would leave it changed (the inputs' parts of one
            # group build their modules in threads at once)
            with _FORK_LOCK, torch.random.fork_rng(devices=[]):
                m = build_model(cfg.model, input_shape, n_classes)
            m.load_state_dict(sd)
        models.append(m.to(device=device, dtype=cfg.torch_dtype).eval())
    return models


def evaluate(state_dicts: Sequence[dict], x: torch.Tensor, cfg: TrainConfig, input_shape,
             n_classes: int, device, path: str = "fast",
             progress: Callable[[int], object] | None = None) -> torch.Tensor:
    """Logits ``(len(state_dicts), n, n_classes)`` of trained classifiers on ``x`` (a tensor
    on ``device`` in ``cfg``'s dtype): the engine's test-set evaluation and ``predict``'s.
    ``progress(k)`` is called as each chunk of inputs is through a group (or one classifier),
    ``k`` the predictions made (classifiers times inputs); it changes no computation."""
    device = torch.device(device)
    k = len(state_dicts)
    if k == 0:
        return torch.empty(0, len(x), n_classes, device=device)
    template = _template(cfg, tuple(input_shape), n_classes)
    stacked = path != "reference" and stacking(template) is not None
    if not (stacked and _loadable(template, state_dicts)):
        models = _modules(cfg, state_dicts, tuple(input_shape), n_classes, device)
    chunks = x.split(_chunk_size(cfg, device))
    bf16 = cfg.autocast_dtype is not None
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    # every chunk's logits go straight into one tensor made once (bfloat16 ones converted to
    # float32 as they land), not into lists joined at the end: on the CPU glibc's heap then
    # keeps no small blocks pinned between the chunks' temporaries, and a caller's resident
    # peak does not grow with the number of inputs (bench_memory.py --evaluate)
    out = torch.empty(k, len(x), n_classes, device=device,
                      dtype=torch.float32 if bf16 else cfg.torch_dtype)
    starts = [0]
    for c in chunks[:-1]:
        starts.append(starts[-1] + len(c))
    with torch.no_grad(), amp:
        if not stacked:
            for i, m in enumerate(models):
                for a0, c in zip(starts, chunks, strict=True):
                    out[i, a0:a0 + len(c)] = m(c)
                    if progress is not None:
                        progress(len(c))
            return out
        E = eval_group_size(template, device)
        how = path_stacking(path, device, cfg.model)
        for a in range(0, k, E):
            group = list(state_dicts[a:a + E])
            net = stack_models([template], how=how, device=device, dtype=cfg.torch_dtype,
                               state_dicts=group + [group[-1]] * (E - len(group)))
            for a0, c in zip(starts, chunks, strict=True):
                out[a:a + len(group), a0:a0 + len(c)] = net.forward_eval(c)[:len(group)]
                if progress is not None:
                    progress(len(group) * len(c))
    return out


def _chunk_size(cfg: TrainConfig, device: torch.device) -> int:
    """The inputs ``evaluate`` runs through a group at once on ``device``."""
    return min(cfg.eval_batch_size, EVAL_BATCH_CAP.get(device.type, cfg.eval_batch_size))


def _input_parts(n: int, chunk: int, parts: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges of ``n`` inputs in at most ``parts`` pieces that begin at multiples
    of ``chunk``: ``evaluate`` on each piece runs exactly the chunks it runs on all of them
    (the same shapes, the same bits), so that fewer groups than threads (``T <= 8`` on the
    CPU: one group) still use every thread."""
    chunks = -(-n // chunk) if n else 1
    per = -(-chunks // max(1, min(parts, chunks))) * chunk
    return [(lo, min(lo + per, n)) for lo in range(0, max(n, 1), per)]


def labels_of(logits: torch.Tensor) -> np.ndarray:
    """Each classifier's label per input (int16 ``(k, n)`` of logits ``(k, n, C)``): the
    argmax, and ``ABSTAIN`` where a logit is not finite. A diverged classifier's NaN logits
    would otherwise all be class 0 (argmax of NaN), a confident vote it never learned; it
    abstains instead, as an empty sub-dataset's classifier does (the certificates count
    abstentions against every class)."""
    finite = torch.isfinite(logits).all(-1)
    labels = torch.where(finite, logits.argmax(-1), torch.full_like(finite, ABSTAIN,
                                                                    dtype=torch.long))
    return labels.cpu().numpy().astype(np.int16)


def predict(cfg: TrainConfig, state_dicts: Sequence[dict | None], x, *,
            input_shape: Sequence[int], n_classes: int, device="cpu", path: str = "fast",
            output: str = "labels", threads: int | None = None,
            progress: Callable[[int], object] | None = None,
            progress_unit: str = "classifiers") -> np.ndarray:
    """Every classifier's output on ``x`` (``(n, *input_shape)`` float, preprocessed as the
    training inputs were).

    ``state_dicts[i]`` is classifier ``i``'s trained ``state_dict`` (``None``: it had an empty
    sub-dataset and abstains). ``path`` is the run's ``execution.path``. ``threads``: groups
    evaluated at once (``None``: the CPU count on the CPU, 1 on CUDA); results do not depend
    on it (fewer groups than threads: the inputs are shared among them, chunk by chunk, the
    same bits). ``progress(k)`` is called as groups of ``k`` classifiers finish, or with
    ``progress_unit="predictions"`` as each chunk of inputs (``eval_batch_size``, at most
    ``EVAL_BATCH_CAP``) is through a group, ``k`` the predictions made (its classifiers times
    its inputs; ``T * n`` in all): where a group of ResNet-18s takes minutes over all inputs,
    a display moves as each chunk is done. Neither changes a prediction.
    """
    where = "predict"
    if not isinstance(cfg, TrainConfig) or cfg.sklearn_learner is not None:
        raise param_error("cfg", where, "a TrainConfig of a torch model", cfg)
    output = check_choice(output, "output", where, OUTPUTS)
    progress_unit = check_choice(progress_unit, "progress_unit", where, PROGRESS_UNITS)
    path = check_choice(path, "path", where, PATHS)
    device = torch.device(device)
    if cfg.dtype in CUDA_DTYPES and device.type != "cuda":
        raise param_error("cfg.dtype", where, f"'float32' or 'float64' on a {device.type} "
                          f"device ({' and '.join(CUDA_DTYPES)} are for CUDA)", cfg.dtype)
    if threads is None:
        threads = (os.cpu_count() or 1) if device.type == "cpu" else 1
    threads = check_int(threads, "threads", where, low=1)
    shape = tuple(int(s) for s in input_shape)
    x = np.asarray(x)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise param_error("x", where, f"an array of shape (n, {', '.join(map(str, shape))})",
                          f"an array of shape {x.shape}")
    T, n = len(state_dicts), len(x)
    if output == "labels":
        out = np.full((T, n), ABSTAIN, dtype=np.int16)
    else:
        out = np.full((T, n, int(n_classes)), np.nan, dtype=np.float32)
    live = [i for i, sd in enumerate(state_dicts) if sd is not None]
    per_input = progress_unit == "predictions"
    if progress is not None and T - len(live) and (n or not per_input):
        progress((T - len(live)) * (n if per_input else 1))
    if not live:
        return out
    with torch.device("meta"):
        probe = build_model(cfg.model, shape, n_classes)
    E = eval_group_size(probe, device) if path != "reference" else 1
    # Fewer groups than threads: a group's inputs are shared among them where its weights
    # are light; each part holds its own copy of the group and its activations at once (4
    # ResNet-18s on 256 CIFAR-sized inputs, 2 threads: 24.9 s and +2.8 GB against 47.7 s and
    # +1.4 GB on one), so heavy models keep one part per group, as before the sharing.
    width = torch.empty((), dtype=cfg.torch_dtype, device="meta").element_size()
    light = E * sum(p.numel() for p in probe.parameters()) * width <= SHARE_MAX_BYTES
    lock = threading.Lock()
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the engine's numerics (see train_predict's determinism note)
    try:
        with precision(cfg, device):
            xt = torch.as_tensor(x).to(device=device, dtype=cfg.torch_dtype)

            def chunk_done(k: int) -> None:
                with lock:
                    progress(k)

            each_chunk = {"progress": chunk_done} if per_input and progress else {}

            def run(a: int, lo: int, hi: int) -> None:
                index = live[a:a + E]
                logits = evaluate([state_dicts[i] for i in index], xt[lo:hi], cfg, shape,
                                  n_classes, device, path, **each_chunk)
                with lock:
                    if output == "labels":
                        out[index, lo:hi] = labels_of(logits)
                    else:
                        out[index, lo:hi] = logits.cpu().numpy()
                    parts_left[a] -= 1
                    if progress is not None and not per_input and not parts_left[a]:
                        progress(len(index))  # the group's last part of the inputs is done

            starts = range(0, len(live), E)
            parts = -(-threads // len(starts)) if light else 1
            tasks = [(a, lo, hi) for a in starts
                     for lo, hi in _input_parts(n, _chunk_size(cfg, device), parts)]
            parts_left = {a: sum(t[0] == a for t in tasks) for a in starts}
            if threads == 1:
                for task in tasks:
                    run(*task)
            else:
                with ThreadPoolExecutor(threads) as pool:
                    futures = [pool.submit(run, *task) for task in tasks]
                    try:  # the first error of any group (or Ctrl-C here) stops the others
                        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                        # raise the group that failed at once, not after the groups before
                        # it in the queue finish (they may still be running)
                        for f in [f for f in futures if f in done] + futures:
                            f.result()
                    except BaseException:  # drop the queued groups, not run them first
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
    finally:
        torch.set_num_threads(saved)
    return out
