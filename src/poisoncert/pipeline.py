"""Train a run (the paper's Algorithm 2, chunk by chunk through an executor) and certify it.

``train_run(config, run_dir)`` draws one sub-dataset per base classifier (``D^c`` in full plus
a draw from ``D^p`` seeded by ``selection.model_seed(root_seed, i)``), trains the classifiers
in chunks with ``poisoncert.training``, writes each chunk's test predictions atomically, and
assembles the prediction matrix and vote counts. Re-running it on the same folder with the same
config resumes: finished chunks are skipped and the result is bit-identical to an
uninterrupted run.

``certify_run(run_dir)`` reads the votes and writes one certificate per test example, the
certified accuracy against ``rho`` and its plot. ``run_demo(out_dir)`` does both for the three
selection schemes on scikit-learn's digits.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from poisoncert import runs, selection
from poisoncert.config import (
    SKLEARN_PREFIX,
    ExperimentConfig,
    from_dict,
    load_config,
    to_dict,
)
from poisoncert.executors import Executor, LocalExecutor
from poisoncert.runs import RunDir, RunError

__all__ = [
    "DEMO_CONFIG",
    "DEMO_SCHEMES",
    "CertifiedAccuracy",
    "CertifyResult",
    "ChunkResult",
    "ChunkTask",
    "DemoResult",
    "PreparedData",
    "RunResult",
    "certify_run",
    "prepare_data",
    "run_demo",
    "train_chunk",
    "train_run",
]


# --------------------------------------------------------------------------------------------
# Data: load, split into D^c and D^p, validate against the config


@dataclass(frozen=True, eq=False)
class PreparedData:
    """The loaded data set split into the known-clean ``D^c`` and the attackable ``D^p``.

    ``clean_idx`` and ``poison_idx`` are sorted training-set indices; ``n = |D^p|`` is the
    ``n`` of the bounds. ``x_test``/``y_test`` honour ``data.test_limit``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    clean_idx: np.ndarray
    poison_idx: np.ndarray
    info: dict = field(default_factory=dict)
    _parts: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.poison_idx.shape[0])

    def partition_ids(self, k: int) -> np.ndarray:
        """Part (0..k-1) of every sample of ``D^p``, from a hash of its content (DPA)."""
        if k not in self._parts:
            p = self.poison_idx
            self._parts[k] = selection.partition_ids(self.x_train[p], self.y_train[p], k=k)
        return self._parts[k]


def _data_key(cfg: ExperimentConfig) -> str:
    return json.dumps(to_dict(cfg)["data"], sort_keys=True)


_DATA_CACHE: dict[str, PreparedData] = {}


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load ``cfg.data``, choose ``D^c`` and check the selection against ``|D^p|``.

    Raises a ``ConfigError`` (a ``ValueError``) naming the key when the data contradicts the
    config (``ns`` larger than ``|D^p|`` without replacement, clean indices out of range, ...).
    The last result is cached per process, so chunks do not reload the data.
    """
    from poisoncert.config import ConfigError, config_error
    from poisoncert.data import load_dataset

    key = _data_key(cfg)
    prep = _DATA_CACHE.get(key)
    if prep is None:
        d = cfg.data
        ds = load_dataset(d.name, data_dir=d.data_dir, download=d.download,
                          classes=None if d.classes is None else tuple(d.classes))
        n_train = len(ds.y_train)
        x_test, y_test = ds.x_test, ds.y_test
        if d.test_limit is not None:
            x_test, y_test = x_test[:d.test_limit], y_test[:d.test_limit]
        x_train = ds.x_train
        if d.deskew:
            from poisoncert.data.transforms import deskew

            if x_train.ndim != 4:
                raise config_error("data.deskew", f"false for {d.name} (its samples are not "
                                   "images)", True)
            x_train, x_test = deskew(x_train), deskew(x_test)
        poisoned_labels = None
        if d.poisoned_classes is not None:  # case 3: D^p = the poisoned classes' samples
            missing = [c for c in d.poisoned_classes if c not in ds.classes]
            if missing or len(d.poisoned_classes) >= ds.n_classes:
                raise config_error("data.poisoned_classes", f"a list of class ids of {d.name} "
                                   f"({list(ds.classes)}) leaving at least one clean class",
                                   d.poisoned_classes)
            poisoned_labels = sorted(ds.classes.index(c) for c in d.poisoned_classes)
            clean = np.flatnonzero(~np.isin(ds.y_train, poisoned_labels)).astype(np.int64)
        elif d.clean_indices is not None:
            clean = np.asarray(d.clean_indices, dtype=np.int64)
            if clean.size and clean.max() >= n_train:
                raise config_error("data.clean_indices", f"indices in the range [0, {n_train - 1}] "
                                   f"({d.name} has {n_train} training samples)", int(clean.max()))
        else:
            n_clean = (d.n_clean if d.clean_fraction is None
                       else int(round(d.clean_fraction * n_train)))
            if n_clean >= n_train:
                key_name = "data.n_clean" if d.clean_fraction is None else "data.clean_fraction"
                raise config_error(key_name, f"less than the {n_train} training samples of "
                                   f"{d.name} (D^p must not be empty)",
                                   getattr(d, key_name.split(".")[1]))
            rng = np.random.default_rng(np.random.SeedSequence([d.clean_seed, 7]))
            clean = rng.permutation(n_train)[:n_clean]
        clean = np.sort(clean)
        mask = np.ones(n_train, dtype=bool)
        mask[clean] = False
        poison = np.flatnonzero(mask).astype(np.int64)
        if poison.size == 0:
            raise ConfigError("The known-clean part D^c covers the whole training set: D^p "
                              "(the attackable part) must not be empty.")
        info = {
            "name": ds.name, "classes": list(ds.classes), "class_names": list(ds.class_names),
            "n_train": n_train, "n_clean": int(clean.size), "n": int(poison.size),
            "n_test": int(len(y_test)), "n_classes": ds.n_classes,
            "input_shape": list(ds.input_shape),
            "sources": [{"path": s.path, "sha256": s.sha256, "verified": s.verified}
                        for s in ds.source],
            "sha256_arrays": runs.array_checksum(ds.x_train, ds.y_train, ds.x_test[:len(y_test)],
                                                 y_test),
        }
        if d.deskew:
            info["deskew"] = True
        if poisoned_labels is not None:
            info["poisoned_labels"] = poisoned_labels
        prep = PreparedData(x_train=x_train, y_train=ds.y_train, x_test=x_test,
                            y_test=y_test, n_classes=ds.n_classes, clean_idx=clean,
                            poison_idx=poison, info=info)
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = prep
    _check_selection(cfg, prep.n)
    return prep


def _check_selection(cfg: ExperimentConfig, n: int) -> None:
    from poisoncert.config import config_error

    s = cfg.selection
    if s.scheme in ("without_replacement", "binomial") and s.ns is not None and s.ns > n:
        extra = "" if s.scheme == "without_replacement" else " (binomial: p = ns / n < 1)"
        raise config_error("selection.ns", f"an int in the range [1, {n}] for the {s.scheme} "
                           f"scheme (n = |D^p| = {n}){extra}", s.ns)
    if s.scheme == "binomial" and s.ns is not None and s.ns == n:
        raise config_error("selection.ns", f"an int in the range [1, {n - 1}] for the binomial "
                           f"scheme (p = ns / n must be below 1; n = |D^p| = {n})", s.ns)


def chunk_subsets(cfg: ExperimentConfig, prep: PreparedData, start: int, seeds: np.ndarray
                  ) -> tuple[list[np.ndarray], np.ndarray]:
    """Training-set indices of classifiers ``start ..`` (one per seed) and the sizes of their
    draws from ``D^p``. Classifier ``i`` depends only on its seed (and, for the partition
    scheme, on ``i``)."""
    s = cfg.selection
    subsets, sizes = [], []
    for j, seed in enumerate(seeds):
        if s.scheme == selection.PARTITION:
            drawn = np.flatnonzero(prep.partition_ids(s.k) == start + j)
        else:
            drawn = selection.draw(s.scheme, prep.n, ns=s.ns, p=s.p, seed=int(seed))
        subsets.append(selection.subset_indices(prep.poison_idx, prep.clean_idx, drawn))
        sizes.append(drawn.size)
    return subsets, np.asarray(sizes, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# One chunk


@dataclass(frozen=True)
class ChunkTask:
    """Everything a worker needs to train any chunk of a run (small and picklable)."""

    config: dict
    ranges: tuple[tuple[int, int], ...]
    root_seed: int


@dataclass(frozen=True, eq=False)
class ChunkResult:
    """Test predictions of classifiers ``start .. stop - 1`` (int16, -1 = abstain)."""

    chunk_id: int
    start: int
    stop: int
    seeds: np.ndarray
    sizes: np.ndarray
    predictions: np.ndarray
    weights: bytes | None = None
    seconds: float = 0.0


def train_chunk(task: ChunkTask, chunk_id: int, progress=None) -> ChunkResult:
    """Train chunk ``chunk_id`` of a run and predict the test set (a top-level function, so
    executors can ship it to other processes or machines). ``progress(k)``, when given, is
    called as groups of ``k`` classifiers finish (in-process executors only)."""
    t0 = time.perf_counter()
    cfg = from_dict(task.config)
    prep = prepare_data(cfg)
    start, stop = task.ranges[chunk_id]
    seeds = selection.model_seeds(task.root_seed, stop - start, start=start)
    subsets, sizes = chunk_subsets(cfg, prep, start, seeds)
    predictions, weights = _train_predict(cfg, prep, subsets, seeds, progress=progress)
    if weights is not None:
        from poisoncert import training

        weights = training.weights_to_bytes(weights, {"start": start, "stop": stop})
    return ChunkResult(chunk_id=chunk_id, start=start, stop=stop, seeds=seeds, sizes=sizes,
                       predictions=np.asarray(predictions, dtype=np.int16), weights=weights,
                       seconds=time.perf_counter() - t0)


def _train_predict(cfg: ExperimentConfig, prep: PreparedData, subsets: list[np.ndarray],
                   seeds: np.ndarray, progress=None) -> tuple[np.ndarray, list | None]:
    """The one place that calls the training engine: predictions ``(len(subsets), n_test)``
    and, with ``training.save_weights``, the classifiers' ``state_dict`` s."""
    from poisoncert import training

    t = cfg.training
    if t.model.startswith(SKLEARN_PREFIX):
        preds = training.train_predict_sklearn(
            t.model[len(SKLEARN_PREFIX):], prep.x_train, prep.y_train, subsets, seeds,
            prep.x_test, n_classes=prep.n_classes, balance=t.balance, progress=progress)
        return preds, None
    kwargs = dict(n_classes=prep.n_classes, device=t.device, path=t.path, progress=progress)
    tcfg = training_config(cfg)
    if t.two_phase:
        return _train_predict_two_phase(cfg, prep, subsets, seeds, tcfg, kwargs), None
    if t.save_weights:
        return training.train_predict_with_weights(prep.x_train, prep.y_train, subsets, seeds,
                                                   prep.x_test, tcfg, **kwargs)
    preds = training.train_predict(prep.x_train, prep.y_train, subsets, seeds, prep.x_test,
                                   tcfg, **kwargs)
    return preds, None


def _train_predict_two_phase(cfg, prep, subsets, seeds, tcfg, kwargs) -> np.ndarray:
    """Algorithm 3 (``poisoncert.twophase``): phase 1 per sub-dataset, the run's one phase 2."""
    from poisoncert import training, twophase

    poisoned = prep.info["poisoned_labels"]
    y1 = twophase.phase1_labels(prep.y_train, poisoned, prep.n_classes)
    pred1 = training.train_predict(prep.x_train, y1, subsets, seeds, prep.x_test, tcfg,
                                   **{**kwargs, "n_classes": len(poisoned) + 1})
    pred2 = phase2_predictions(cfg, prep)["predictions"]
    return twophase.combine(pred1, pred2, poisoned, prep.n_classes)


_PHASE2_CACHE: dict[str, dict] = {}


def phase2_predictions(cfg: ExperimentConfig, prep: PreparedData) -> dict:
    """The run's one phase-2 model (two-phase runs): trained on ``D^c`` alone for
    ``training.phase2_steps`` steps with seed ``twophase.phase2_seed(selection.seed)``.
    Returns its test ``predictions`` (positions among the clean classes), its ``accuracy``
    on the clean-class test points and the ``seconds`` it took; cached per process."""
    import dataclasses

    from poisoncert import training, twophase
    from poisoncert.config import config_hash

    key = config_hash(cfg)
    if key not in _PHASE2_CACHE:
        t0 = time.perf_counter()
        poisoned = prep.info["poisoned_labels"]
        tcfg = dataclasses.replace(training_config(cfg), steps=cfg.training.phase2_steps,
                                   group_size=1)
        y2 = twophase.phase2_labels(prep.y_train, poisoned, prep.n_classes)
        y2 = np.maximum(y2, 0)  # poisoned-class rows are never used by phase 2
        clean = twophase.clean_classes(poisoned, prep.n_classes)
        seed = twophase.phase2_seed(cfg.selection.seed)
        pred = training.train_predict(prep.x_train, y2, [prep.clean_idx], [seed], prep.x_test,
                                      tcfg, n_classes=clean.size, device=cfg.training.device,
                                      path=cfg.training.path)[0].astype(np.int64)
        on_clean = np.isin(prep.y_test, clean)
        acc = float(np.mean(clean[pred[on_clean]] == prep.y_test[on_clean]))
        _PHASE2_CACHE.clear()
        _PHASE2_CACHE[key] = {"predictions": pred, "accuracy": acc, "seed": seed,
                              "steps": cfg.training.phase2_steps,
                              "seconds": time.perf_counter() - t0}
    return _PHASE2_CACHE[key]


_TRAIN_KEYS = ("model", "steps", "batch_size", "optimizer", "lr", "lr_schedule", "momentum",
               "weight_decay", "balance", "augment", "max_shift", "rotation", "scale", "shear",
               "elastic", "dtype", "group_size", "eval_batch_size")


def training_config(cfg: ExperimentConfig):
    """``poisoncert.training.TrainConfig`` of a torch model (None for a scikit-learn learner).

    Its errors are reported against the config key: "The 'training.optimizer' parameter of
    the config must be ...".
    """
    from poisoncert import training

    t = cfg.training
    if t.model.startswith(SKLEARN_PREFIX):
        return None
    try:
        return training.TrainConfig(**{k: getattr(t, k) for k in _TRAIN_KEYS})
    except ValueError as e:
        from poisoncert.config import ConfigError

        raise ConfigError(re.sub(r"The '(\w+)' parameter of TrainConfig ",
                                 r"The 'training.\1' parameter of the config ", str(e))) from None


def check_training(cfg: ExperimentConfig, prep: PreparedData) -> None:
    """Check the ``training`` section against the engine and the data, before any file is
    written: the learner or model exists and fits the inputs, the device is available."""
    from poisoncert import training
    from poisoncert.config import config_error

    t = cfg.training
    if t.model.startswith(SKLEARN_PREFIX):
        name = t.model[len(SKLEARN_PREFIX):]
        if name not in training.SKLEARN_LEARNERS:
            shown = ", ".join(repr(SKLEARN_PREFIX + n) for n in training.SKLEARN_LEARNERS)
            models = ", ".join(map(repr, training.MODELS))
            raise config_error("training.model", f"one of {models} or {shown}", t.model)
        if t.save_weights:
            raise config_error("training.save_weights", "false for a scikit-learn learner", True)
        return
    tcfg = training_config(cfg)
    try:
        training.build_model(tcfg.model, prep.x_train.shape[1:], prep.n_classes)
    except ValueError as e:
        raise config_error("training.model", f"a model for inputs of shape "
                           f"{tuple(prep.x_train.shape[1:])} ({e})", t.model) from None
    if t.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise config_error("training.device", "'cpu' (no CUDA device is available)", t.device)


def group_size(cfg: ExperimentConfig) -> int:
    """The number of classifiers the engine trains as one group: chunks are rounded up to a
    multiple of it so that no group is padded (results never depend on the chunking)."""
    tcfg = training_config(cfg)
    return 1 if tcfg is None else int(tcfg.group_size)


# --------------------------------------------------------------------------------------------
# A run


@dataclass(frozen=True, eq=False)
class RunResult:
    """A trained run: the prediction matrix, votes and labels (also in ``run_dir``)."""

    run_dir: Path
    predictions: np.ndarray
    votes: np.ndarray
    labels: np.ndarray
    subset_sizes: np.ndarray
    n: int
    chunks_trained: int
    chunks_skipped: int
    seconds: float

    @property
    def T(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def accuracy(self) -> float:
        """Clean accuracy of the majority vote (ties to the smaller class; no votes: wrong)."""
        pred = np.where(self.votes.sum(axis=1) > 0, self.votes.argmax(axis=1), -1)
        return float(np.mean(pred == self.labels))

    @property
    def base_accuracy(self) -> float:
        """Mean test accuracy of the base classifiers (abstentions count as wrong)."""
        return float(np.mean(self.predictions == self.labels[None, :]))


def _resolve(config) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, Mapping):
        return from_dict(dict(config))
    return load_config(config)


def train_run(config: ExperimentConfig | str | Path | Mapping, run_dir: str | Path, *,
              executor: Executor | None = None, progress: bool = True) -> RunResult:
    """Train the ``T`` base classifiers of ``config`` into ``run_dir`` and return the results.

    Everything is checked before anything is written: the config, the data against it, and
    that ``run_dir`` is (or can be created as) a writable folder that is empty or holds a run
    with the same config. A run with the same config is resumed: chunks whose file exists are
    skipped, and the predictions are bit-identical to those of an uninterrupted run.
    ``executor`` defaults to ``LocalExecutor(config.training.workers)``.
    """
    t0 = time.perf_counter()
    cfg = _resolve(config)
    rd = RunDir(run_dir)
    runs.check_writable(rd.path)
    rd.check_config(cfg)  # refuse another run's folder before loading any data
    prep = prepare_data(cfg)
    check_training(cfg, prep)
    if rd.exists():
        old = rd.load_manifest().get("data", {}).get("sha256_arrays")
        if old is not None and old != prep.info["sha256_arrays"]:
            raise RunError(f"The data of the run '{rd.path}' has changed since it started "
                           f"(array checksum {old[:12]}... is now "
                           f"{prep.info['sha256_arrays'][:12]}...): it cannot be resumed.")
    manifest = runs.build_manifest(cfg, data=prep.info)
    with rd.lock():  # the whole run under its lock (issue 9); prepare() takes it for a new run
        return _train_locked(cfg, rd, prep, manifest, executor, progress, t0)


def _train_locked(cfg, rd, prep, manifest, executor, progress, t0) -> RunResult:
    resumed = rd.prepare(cfg, manifest)

    T = cfg.T
    seeds = selection.model_seeds(cfg.selection.seed, T)
    for name, arr in ((runs.SEEDS, seeds), (runs.CLEAN_INDICES, prep.clean_idx)):
        if not (rd / name).exists():
            runs.save_npy(rd / name, arr)
    ranges = runs.chunk_ranges(T, cfg.run.chunk_size, group_size(cfg))
    todo = [cid for cid, (a, b) in enumerate(ranges)
            if not (resumed and rd.chunk_done(cid, a, b, seeds[a:b]))]
    done_models = T - sum(ranges[cid][1] - ranges[cid][0] for cid in todo)
    if cfg.training.save_weights:
        rd.weights_dir.mkdir(exist_ok=True)

    task = ChunkTask(config=to_dict(cfg), ranges=tuple(ranges), root_seed=cfg.selection.seed)
    if executor is None:
        executor = LocalExecutor(cfg.training.workers)
    label = f"{cfg.selection.scheme} T={T}"
    with _progress(T, done_models, label, enabled=progress) as advance:
        # in this process the engine reports every group; otherwise every finished chunk
        reported = [0]

        def on_group(k: int) -> None:
            reported[0] += k
            advance(k)

        in_process = progress and getattr(executor, "in_process", False)
        fn = functools.partial(train_chunk, task, progress=on_group if in_process else None)
        for res in executor.map_chunks(fn, todo):
            if res.weights is not None:
                runs.save_bytes(rd.weights_path(res.chunk_id), res.weights)
            rd.write_chunk(res.chunk_id, start=res.start, stop=res.stop, seeds=res.seeds,
                           sizes=res.sizes, predictions=res.predictions)
            advance(res.stop - res.start - reported[0])
            reported[0] = 0
    predictions, votes, sizes = rd.assemble(ranges, prep.y_test, prep.n_classes)
    if cfg.training.two_phase and not (rd / "phase2.json").exists():
        from poisoncert import twophase

        ph2 = phase2_predictions(cfg, prep)
        acc1 = twophase.phase1_accuracy(predictions, prep.y_test, prep.info["poisoned_labels"],
                                        prep.n_classes)
        runs.save_json(rd / "phase2.json", {
            "phase2_accuracy": ph2["accuracy"], "phase2_seed": ph2["seed"],
            "phase2_steps": ph2["steps"], "phase2_seconds": round(ph2["seconds"], 3),
            "phase1_accuracy_mean": float(acc1.mean()),
            "phase1_accuracy": [round(float(a), 6) for a in acc1]})
    seconds = time.perf_counter() - t0
    result = RunResult(run_dir=rd.path, predictions=predictions, votes=votes,
                       labels=prep.y_test.astype(np.int64), subset_sizes=sizes, n=prep.n,
                       chunks_trained=len(todo), chunks_skipped=len(ranges) - len(todo),
                       seconds=seconds)
    rd.finish(seconds_last=round(seconds, 3),
              results={"accuracy": result.accuracy, "base_accuracy": result.base_accuracy,
                       "subset_size_mean": float(sizes.mean()),
                       "abstaining_classifiers": int(np.all(predictions < 0, axis=1).sum())})
    return result


@contextmanager
def _progress(total: int, completed: int, label: str, *, enabled: bool) -> Iterator[Any]:
    """A rich progress bar in base classifiers, with models/s and ETA; yields ``advance(k)``."""
    if not enabled:
        yield lambda k: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text("-- models/s" if speed is None else f"{speed:.1f} models/s")

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                   MofNCompleteColumn(), RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn())
    with bar:
        tid = bar.add_task(label, total=total, completed=completed)
        yield lambda k: bar.advance(tid, k)


# --------------------------------------------------------------------------------------------
# Certify a run


@dataclass(frozen=True, eq=False)
class CertifiedAccuracy:
    """Certified accuracy ``accuracy[j]`` at radius ``rho[j]`` (abstentions count as wrong)."""

    rho: np.ndarray
    accuracy: np.ndarray

    def rows(self) -> list[tuple[int, float]]:
        return [(int(r), float(a)) for r, a in zip(self.rho, self.accuracy, strict=True)]


class CertifyResult(tuple):
    """``(certificate, table)``: the ``Certificate`` (or ``DPACertificate``) and the certified
    accuracy at the requested ``rhos``; ``paths`` names the files written."""

    def __new__(cls, certificate, table: CertifiedAccuracy, paths: dict[str, Path],
                summary: dict):
        self = super().__new__(cls, (certificate, table))
        self.paths = paths
        self.summary = summary
        return self

    @property
    def certificate(self):
        return self[0]

    @property
    def table(self) -> CertifiedAccuracy:
        return self[1]


def _run_info(rd: RunDir) -> dict:
    data = rd.load_manifest().get("data") or {}
    if "n" not in data:
        raise RunError(f"The manifest of '{rd.path}' does not give |D^p| (data.n): is it a "
                       "poisoncert run?")
    return data


def certify_run(run_dir: str | Path, *, alpha: float | None = None, method: str | None = None,
                model: str | None = None, rhos=None, plot: bool = True,
                verify: bool = True) -> CertifyResult:
    """Certify every test example of a trained run and write the results beside it.

    Options default to the run's ``certify`` config section. ``n`` is ``|D^p|``, the number of
    attackable training samples, and ``T`` the number of base classifiers (abstaining ones
    included). The partition scheme is certified by ``certify.dpa_certify`` (deterministic;
    ``alpha`` and ``method`` do not apply). Writes ``certificates.csv`` (one flat row per test
    example), ``certified_accuracy.csv`` (the whole curve, every integer ``rho`` up to the
    largest radius, plus ``rhos``), ``certify.json`` and ``certified_accuracy.png``.
    Returns ``(certificate, table)`` with the certified accuracy at ``rhos``.

    The run is certified under its lock, after ``RunDir.verify`` (checksums, config hash,
    consistency; a ``RunError`` names the first file that does not match); ``verify=False``
    skips that, and ``summary["verification"]`` says which was done.
    """
    rd = RunDir(run_dir)
    with rd.lock():  # issue 9: one process at a time; verified before anything is read
        return _certify_locked(rd, alpha, method, model, rhos, plot, verify)


def _certify_locked(rd, alpha, method, model, rhos, plot, verify) -> CertifyResult:
    from poisoncert import certify as _certify
    from poisoncert.config import from_dict as _from_dict

    cfg = rd.load_config()
    if cfg.selection.scheme == selection.PARTITION and (alpha, method) != (None, None):
        from poisoncert._validation import param_error

        name, value = ("alpha", alpha) if alpha is not None else ("method", method)
        raise param_error(name, "certify", "left out for a partition (DPA) run, whose "
                          "certificate is deterministic", value)
    checked = rd.verify() if verify else {
        "verified": None, "note": "not verified (--no-verify): the run's files were not "
                                  "checked against its manifest"}
    overrides = {f"certify.{k}": v for k, v in (("alpha", alpha), ("method", method),
                                                ("model", model)) if v is not None}
    if rhos is not None:
        overrides["certify.rhos"] = [int(r) if isinstance(r, (int, np.integer)) else r
                                     for r in np.atleast_1d(rhos).tolist()]
    c = _from_dict(to_dict(cfg), overrides).certify
    info = _run_info(rd)
    votes = rd.load(runs.VOTES)
    labels = rd.load(runs.LABELS)
    T = cfg.T
    if cfg.selection.scheme == selection.PARTITION:
        cert = _certify.dpa_certify(votes, model=c.model)
    else:
        sel = cfg.selection  # binomial with ns: p = ns / n, as drawn
        cert = _certify.certify(
            votes, scheme=sel.scheme, n=int(info["n"]), ns=sel.ns, p=sel.p,
            model=c.model, alpha=c.alpha, method=c.method, T=T,
            labels=labels if c.method.startswith("true_label") else None)
    table = CertifiedAccuracy(np.asarray(c.rhos, dtype=np.int64),
                              np.atleast_1d(_certify.certified_accuracy(cert, labels, c.rhos)))
    curve = accuracy_curve(cert, labels, extra=c.rhos)

    paths = {"certificates": rd / runs.CERTIFICATES,
             "certified_accuracy": rd / runs.CERTIFIED_ACCURACY,
             "summary": rd / runs.CERTIFY_JSON}
    runs.save_text(paths["certificates"], _certificate_csv(cert, votes, labels, T))
    runs.save_text(paths["certified_accuracy"], _curve_csv(curve))
    summary = {**cert.summary(labels), "T": T, "n_classes": int(votes.shape[1]),
               "certified_accuracy": {str(r): a for r, a in table.rows()},
               "verified": checked["verified"], "verification": checked["note"]}
    runs.save_json(paths["summary"], summary)
    if plot:
        from poisoncert.plots import plot_certified_accuracy

        fig = plot_certified_accuracy({_curve_label(cfg): (curve.rho, curve.accuracy)},
                                      title=f"{info.get('name', '')}: certified accuracy "
                                            f"(model {c.model})")
        paths["plot"] = rd / runs.CERTIFIED_ACCURACY_PNG
        runs.save_with(paths["plot"], lambda f: fig.savefig(f, format="png", dpi=150))
    return CertifyResult(cert, table, paths, summary)


def accuracy_curve(cert, labels, *, extra=()) -> CertifiedAccuracy:
    """Certified accuracy at every integer ``rho`` from 0 to one past the largest radius (and
    at the ``extra`` radii)."""
    from poisoncert import certify as _certify

    top = int(max(np.max(cert.radius, initial=-1), 0)) + 1
    rho = np.union1d(np.arange(top + 1), np.asarray(list(extra), dtype=np.int64))
    return CertifiedAccuracy(rho, np.atleast_1d(_certify.certified_accuracy(cert, labels, rho)))


def _curve_label(cfg: ExperimentConfig) -> str:
    s = cfg.selection
    if s.scheme == selection.PARTITION:
        return f"partition (DPA), k = {s.k}"
    size = f"ns = {s.ns}" if s.ns is not None else f"p = {s.p:g}"
    if s.scheme == "binomial" and s.ns is not None:
        size += " (p = ns / n)"
    return f"{s.scheme.replace('_', ' ')}, {size}, T = {s.T}"


def _certificate_csv(cert, votes: np.ndarray, labels: np.ndarray, T: int) -> str:
    """One flat row per test example: the certificate's record plus label, correctness and
    the vote counts of the two top classes."""
    order = np.argsort(-votes, axis=1, kind="stable")
    rows = np.arange(votes.shape[0])
    first, second = order[:, 0], order[:, 1] if votes.shape[1] > 1 else order[:, 0]
    extra = {
        "label": labels, "correct": (np.asarray(cert.prediction) == labels).astype(int),
        "top1_class": first, "top1_votes": votes[rows, first],
        "top2_class": second, "top2_votes": votes[rows, second],
        "abstain_votes": T - votes.sum(axis=1),
    }
    records = cert.records()
    out = io.StringIO()
    head = ["index", "label", "prediction", "correct", "radius"]
    keys = head + [k for k in records[0] if k not in head] + [k for k in extra if k not in head]
    w = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for i, rec in enumerate(records):
        w.writerow({**rec, **{k: _plain(v[i]) for k, v in extra.items()}})
    return out.getvalue()


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _curve_csv(curve: CertifiedAccuracy) -> str:
    lines = ["rho,certified_accuracy"]
    lines += [f"{r},{a:.6g}" for r, a in curve.rows()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Demo

#: The demo experiment (also in ``experiments/demo.yaml``); ``run_demo`` trains it once per
#: scheme of ``DEMO_SCHEMES``.
DEMO_CONFIG = """\
# poisoncert demo: scikit-learn's 8x8 digits (1,437 training, 360 test images, no download).
# `poisoncert demo` trains this once per selection scheme (without_replacement,
# with_replacement, binomial with p = ns / n) and plots the three certified-accuracy curves.
data:
  name: digits
selection:
  scheme: without_replacement
  ns: 50
  T: 500
  seed: 0
training:
  model: mlp
  steps: 60
  batch_size: 32
  optimizer: adam
  lr: 0.003
  balance: true
certify:
  alpha: 0.001
  method: bonferroni
  model: P6
  rhos: [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
run:
  chunk_size: 128
"""

DEMO_SCHEMES = ("without_replacement", "with_replacement", "binomial")

#: Overrides of ``run_demo(quick=True)``: a few seconds, for tests.
_QUICK = {"selection.T": 32, "training.steps": 10, "run.chunk_size": 16}


@dataclass(frozen=True, eq=False)
class DemoResult:
    out_dir: Path
    runs: dict[str, RunResult]
    tables: dict[str, CertifiedAccuracy]
    curves: dict[str, CertifiedAccuracy]
    paths: dict[str, Path]
    seconds: float


def demo_config(scheme: str = "without_replacement", *, quick: bool = False
                ) -> ExperimentConfig:
    """The demo experiment for one scheme (``quick``: a tiny version for tests)."""
    overrides: dict[str, Any] = {"selection.scheme": scheme}
    if quick:
        overrides.update(_QUICK)
    return from_dict(yaml.safe_load(DEMO_CONFIG), overrides)


def run_demo(out_dir: str | Path, *, quick: bool = False, progress: bool = True,
             executor: Executor | None = None) -> DemoResult:
    """Train and certify the demo once per scheme into ``out_dir/<scheme>``; write the three
    curves to ``out_dir/certified_accuracy.png`` and a table to ``certified_accuracy.csv``."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    cfgs = {s: demo_config(s, quick=quick) for s in DEMO_SCHEMES}
    for s in DEMO_SCHEMES:  # check every folder before training any
        runs.check_writable(out / s)
    results, tables, curves, labels = {}, {}, {}, {}
    for s, cfg in cfgs.items():
        results[s] = train_run(cfg, out / s, executor=executor, progress=progress)
        cert, table = certify_run(out / s, plot=False)
        tables[s] = table
        curves[s] = accuracy_curve(cert, results[s].labels, extra=table.rho)
        labels[s] = _curve_label(cfg)
    rho = tables[DEMO_SCHEMES[0]].rho  # the same rhos for every scheme
    lines = ["rho," + ",".join(DEMO_SCHEMES)]
    lines += [f"{r}," + ",".join(f"{tables[s].accuracy[j]:.6g}" for s in DEMO_SCHEMES)
              for j, r in enumerate(rho)]
    paths = {"table": out / runs.CERTIFIED_ACCURACY, "plot": out / runs.CERTIFIED_ACCURACY_PNG}
    runs.save_text(paths["table"], "\n".join(lines) + "\n")
    from poisoncert.plots import plot_certified_accuracy

    fig = plot_certified_accuracy({labels[s]: (curves[s].rho, curves[s].accuracy)
                                   for s in DEMO_SCHEMES},
                                  title="digits: certified accuracy (model P6)")
    runs.save_with(paths["plot"], lambda f: fig.savefig(f, format="png", dpi=150))
    return DemoResult(out_dir=out, runs=results, tables=tables, curves=curves, paths=paths,
                      seconds=time.perf_counter() - t0)
