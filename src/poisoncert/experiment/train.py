"""Train a run: the paper's Algorithm 2 (or 3), chunk by chunk through an executor.

``train_run(config, run_dir)`` draws one sub-dataset per base classifier (``D^c`` in full plus
a draw from ``D^p`` seeded by ``selection.model_seed(root_seed, i)``; ``selection.SubsetPlan``),
trains the classifiers in chunks with the config's learner (``experiment.learners``), writes
each chunk's test predictions atomically (``poisoncert.runs``), and assembles the prediction
matrix and vote counts. Re-running it on the same folder with the same config resumes:
finished chunks are skipped and the result is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisoncert import runs, selection
from poisoncert.config import (
    ConfigError,
    ExperimentConfig,
    as_given,
    config_hash,
    from_dict,
    read_config_file,
    refuse_earlier,
)
from poisoncert.executors import Executor, LocalExecutor, check_workers
from poisoncert.experiment import learners
from poisoncert.experiment.display import (
    ProgressDisplay,
    checksum_display,
    no_display,
    progress_display,
)
from poisoncert.experiment.ensemble_record import check_model_source, model_source
from poisoncert.experiment.resources import check_run_memory
from poisoncert.experiment.split import DataSplit, split_data, subset_plan
from poisoncert.runmanifest import device_record
from poisoncert.runs import RunDir, RunError
from poisoncert.runsafe import fault_point
from poisoncert.votes import majority_vote

__all__ = ["ChunkResult", "ChunkTrainer", "ProgressDisplay", "RunResult", "StartInterrupted",
           "TrainInterrupted", "resolved_config", "run_config", "run_group_size", "run_subsets",
           "train_run"]

PHASE2_JSON = "phase2.json"


class TrainInterrupted(KeyboardInterrupt):
    """``train_run`` stopped by an interrupt (Ctrl-C, SIGINT) while it trained: the finished
    chunks' classifiers are kept in ``run_dir``, ``saved`` of ``T`` (whole chunks of at most
    ``chunk_size``), and the same call resumes the run from them. A ``KeyboardInterrupt``, so
    code that stops on one still does."""

    def __init__(self, run_dir: Path, saved: int, T: int, chunk_size: int):
        self.run_dir, self.saved, self.T, self.chunk_size = Path(run_dir), saved, T, chunk_size
        super().__init__(self.message())

    def message(self) -> str:
        kept = ("none of the" if self.saved == 0 else
                f"{self.saved} of {self.T}" if self.saved < self.T else f"all {self.T}")
        return (f"interrupted: {kept} base classifiers are saved in '{self.run_dir}' (in whole "
                f"chunks of up to {self.chunk_size}); the same command resumes the run.")


class StartInterrupted(KeyboardInterrupt):
    """``train_run`` stopped by an interrupt before it wrote anything (the data loading, the
    checks, a Ray cluster's connection, a finished run's checksums): the command line said
    "the same command resumes the run from the chunks it finished" where no run existed
    (``train --executor ray --address ...`` connecting). ``existed``: whether ``run_dir``
    held a run then (it is as it was). A ``KeyboardInterrupt``, as ``TrainInterrupted``."""

    def __init__(self, run_dir: Path, existed: bool):
        self.run_dir, self.existed = Path(run_dir), existed
        super().__init__(self.message())

    def message(self) -> str:
        if self.existed:
            return (f"interrupted before training began: the run '{self.run_dir}' is as it "
                    "was; the same command resumes it.")
        return (f"interrupted before training began: nothing was written (no run in "
                f"'{self.run_dir}'); the same command starts the run.")


@contextmanager
def _before_writing(rd: RunDir) -> Iterator[None]:
    """A plain interrupt inside (nothing of the run written yet) as ``StartInterrupted``."""
    try:
        yield
    except KeyboardInterrupt as stop:
        if callable(getattr(stop, "message", None)):  # one that says what it keeps
            raise
        raise StartInterrupted(rd.path, rd.exists()) from stop


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
    ranks: np.ndarray | None = None  # int8 (stop - start, n_test, C) with run.store_ranks


class ChunkTrainer:
    """Trains any chunk of one run: ``trainer(chunk_id) -> ChunkResult``.

    Executors call it, in this process or elsewhere. It is picklable and small: the config,
    the chunks' ranges and the run's ``learner`` (``learners.make_learner``); ``data`` (the
    run's ``DataSplit``) and ``progress`` (``progress(chunk_id, k)``, called as groups of
    ``k`` classifiers finish) serve calls in this process and are not pickled: a trainer
    without ``data`` loads the data itself on its first chunk and keeps it (an executor's
    worker keeps its trainer for the whole run, and gives it a ``progress`` that reports to
    the calling process: ``attach_progress``).

    ``data_sha256`` (``data.summary.sha256_arrays``, taken from ``data`` when given) travels
    with the trainer: data a worker loads itself must have it, or the chunk is refused (a
    ``RunError``). The run's manifest, its ``n = |D^p|`` and its test labels are the calling
    process's data; classifiers trained on another copy (another file at the same path on a
    Ray node, a file replaced while the run trains) would be certified for a training set and
    test points they never saw.
    """

    def __init__(self, config: ExperimentConfig, ranges, learner: learners.Learner, *,
                 data: DataSplit | None = None,
                 progress: Callable[[int, int], object] | None = None,
                 data_sha256: str | None = None):
        self.config = config
        self.ranges = tuple(ranges)
        self.learner = learner
        self.data = data
        self.progress = progress
        self.data_sha256 = (data.summary.sha256_arrays
                            if data_sha256 is None and data is not None else data_sha256)
        self._plan: selection.SubsetPlan | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "data": None, "progress": None, "_plan": None}

    def attach_progress(self, send: Callable[[int, int], object]) -> None:
        """Report progress through ``send(chunk_id, k)`` (an executor's worker set-up)."""
        self.progress = send

    def __call__(self, chunk_id: int) -> ChunkResult:
        t0 = time.perf_counter()
        cfg = self.config
        if self.data is None:
            data = split_data(cfg.data)
            got = data.summary.sha256_arrays
            if self.data_sha256 is not None and got != self.data_sha256:
                raise RunError(f"The data set this worker process loaded ({cfg.data.name}) is "
                               f"not the run's: its array checksum {got[:12]}... is not the "
                               f"{self.data_sha256[:12]}... of the data the run started with. "
                               "Every worker loads the data itself: give every node the same "
                               "files (data.data_dir on a shared file system), and do not "
                               "change them while a run trains.")
            self.data = data
        if self._plan is None:
            self._plan = subset_plan(cfg.selection, self.data)
        fault_point("chunk:train")  # tests: a worker killed (e.g. by the kernel when out of memory)
        start, stop = self.ranges[chunk_id]
        seeds = selection.model_seeds(cfg.selection.seed, stop - start, start=start)
        subsets, sizes = self._plan.subsets(start, seeds)
        report = self.progress
        chunk_progress = None if report is None else (lambda k: report(chunk_id, k))
        ranks = None
        if cfg.run.store_ranks:
            from poisoncert.experiment.ranks import train_predict_ranks

            predictions, ranks, weights = train_predict_ranks(self.learner, self.data, subsets,
                                                              seeds, chunk_progress)
        else:
            predictions, weights = self.learner.train_predict(self.data, subsets, seeds,
                                                              chunk_progress)
        if weights is not None:
            from poisoncert.experiment.ensemble_record import weights_metadata
            from poisoncert.training.weights import weights_to_bytes

            weights = weights_to_bytes(weights, weights_metadata(cfg, start, stop, seeds))
        return ChunkResult(chunk_id=chunk_id, start=start, stop=stop, seeds=seeds, sizes=sizes,
                           predictions=np.asarray(predictions, dtype=np.int16), weights=weights,
                           seconds=time.perf_counter() - t0, ranks=ranks)


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
    #: False for a knn / rnn run: nothing is trained (an rNN abstains where no training sample
    #: lies within r, which is no divergence)
    trained: bool = True

    @property
    def T(self) -> int:
        return int(self.predictions.shape[0])

    @property
    def accuracy(self) -> float:
        """Clean accuracy of the majority vote (ties to the smaller class; no votes: wrong)."""
        return float(np.mean(majority_vote(self.votes) == self.labels))

    @property
    def diverged(self) -> int:
        """Classifiers that abstain on some test input although they had something to learn
        from: their outputs were not finite there (``training.labels_of``: a diverged
        training), not an empty sub-dataset's (which abstains on every input). In a
        knn / rnn run, 0 (``trained`` False): an rNN's abstentions are its empty balls."""
        if not self.trained:
            return 0
        out = self.predictions < 0
        some = out.any(axis=1)
        return int((some & ((self.subset_sizes > 0) | ~out.all(axis=1))).sum())

    @property
    def base_accuracy(self) -> float:
        """Mean test accuracy of the base classifiers (abstentions count as wrong)."""
        return float(np.mean(self.predictions == self.labels[None, :]))


def _check_unhashed_settings(rd: RunDir, old: ExperimentConfig, cfg: ExperimentConfig
                             ) -> None:
    """A resume's settings outside the config hash (no prediction depends on them): other
    ``certify`` settings (``train --rhos``, ``--certify.*``) are a warning, the run keeping
    those it started with; another choice of keeping weights is a ``RunError`` (some chunks
    would have weights and some not)."""
    from poisoncert.config import config_diff

    diff = [line for line in config_diff(old, cfg) if line.startswith("certify.")]
    if diff:
        warnings.warn(f"The run '{rd.path}' keeps the certify settings it started with "
                      f"({'; '.join(diff)}: ignored on resume); give them to poisoncert "
                      "certify (--rhos, --alpha, --method, --model).", UserWarning,
                      stacklevel=3)
    kept = old.keeps_weights
    if kept != cfg.keeps_weights:
        raise RunError(
            f"The run '{rd.path}' {'keeps' if kept else 'does not keep'} its classifiers' "
            f"weights and this config {'does not' if kept else 'does'} "
            f"(training.save_weights: {cfg.execution.save_weights}): resumed, some chunks "
            "would have weights and some not, and predict would refuse the run. Resume "
            "it with its own setting (its config.yaml).")


def _config(config, run_dir: str | Path) -> tuple[ExperimentConfig, dict | None]:
    """The config ``train_run`` was given, and the mapping it was read from (None for an
    ``ExperimentConfig``): a later refusal echoes the values as given (``config.as_given``)."""
    if isinstance(config, ExperimentConfig):
        return config, None
    d = dict(config) if isinstance(config, Mapping) else read_config_file(config)
    return run_config(d, run_dir=run_dir), d


def run_config(d: dict | None, overrides: dict | None = None, run_dir: str | Path | None = None,
               *, dropped: list[str] | None = None) -> ExperimentConfig:
    """``config.from_dict(d, overrides, dropped=dropped)``: the config a run is trained with.

    Where it refuses a value beyond a bound added after earlier versions had written runs
    beyond it (``config.later_bounds``: a seed beyond 2^64 - 1, ``training.lr`` beyond 10,
    ...) and ``run_dir`` holds a run of this very config (its hash), made with it (its
    ``config.yaml`` has the hash its manifest recorded when the run began: not edited since),
    the config is read as that run's own: the run resumes with the values it was made with.
    For anything else (a new run, another config, an edited one) the refusal stands."""
    try:
        return from_dict(d, overrides, dropped=dropped)
    except ConfigError as refused:
        rd = RunDir(run_dir) if run_dir is not None else None
        if rd is None or not rd.exists():
            raise
        try:
            cfg = from_dict(d, overrides, stored=True)
            old = rd.check_config(cfg)
            made = rd.load_manifest().get("config_hash") == config_hash(old)
        except (ConfigError, RunError, OSError):
            made = False
        if not made:
            raise refused from None
        return cfg




class _ProgressRelay:
    """Progress of a run's chunks as groups finish, here or in workers: ``report(chunk_id,
    k)`` counts ``k`` more classifiers of a chunk (ignored once the chunk is done: a worker's
    report may arrive after its result), ``finish(chunk_id)`` counts the rest of the
    chunk. ``report(chunk_id, 0)``, a chunk's training beginning (its process started, the
    data loaded), is passed on once, the first time, as ``advance(0)``: the display times its
    rate from then, not from the start-up."""

    def __init__(self, advance: Callable[[int], None], ranges):
        self.advance = advance
        self.size = [b - a for a, b in ranges]
        self.counted = [0] * len(ranges)
        self.done = [False] * len(ranges)
        self.began = False

    def report(self, chunk_id: int, k: int) -> None:
        if k == 0:
            if not self.began:
                self.began = True
                self.advance(0)
            return
        if self.done[chunk_id]:
            return
        k = min(int(k), self.size[chunk_id] - self.counted[chunk_id])
        if k > 0:
            self.counted[chunk_id] += k
            self.advance(k)

    def finish(self, chunk_id: int) -> None:
        self.report(chunk_id, self.size[chunk_id])
        self.done[chunk_id] = True


def _weights_done(rd: RunDir, cfg: ExperimentConfig, cid: int, start: int, stop: int,
                  seeds) -> bool:
    """Whether chunk ``cid``'s weights, if its chunk file says it wrote some, are there as
    written: the file's SHA-256 is the one the chunk file records, and its metadata names these
    classifiers of this config (as ``Ensemble.load`` checks it). Else the chunk is trained
    again on resume (a resume rewrites the manifest's checksums, so a damaged weights file
    would otherwise be recorded as the run's)."""
    recorded = rd.chunk_weights_sha256(cid)
    if recorded is None:
        return True
    try:
        if runs.file_sha256(rd.weights_path(cid)) != recorded:
            return False
    except OSError:  # missing or unreadable
        return False
    return _weights_named(rd, cfg, cid, start, stop, seeds)


def _weights_named(rd: RunDir, cfg: ExperimentConfig, cid: int, start: int, stop: int,
                   seeds) -> bool:
    """Whether chunk ``cid``'s weights file's metadata names these classifiers of this config
    (its header alone is read)."""
    from safetensors import safe_open

    from poisoncert.experiment.ensemble_record import weights_metadata

    try:
        with safe_open(str(rd.weights_path(cid)), framework="np") as f:
            meta = f.metadata() or {}
    except Exception:  # missing, truncated or not a safetensors file
        return False
    want = weights_metadata(cfg, start, stop, seeds)
    return all(meta.get(k) == v for k, v in want.items())


def _map_chunks(executor: Executor, trainer, todo, report):
    """``executor.map_chunks`` with worker progress where the executor takes it (an
    executor written before ``progress`` existed is called without it)."""
    import inspect

    if report is None or "progress" not in inspect.signature(executor.map_chunks).parameters:
        return executor.map_chunks(trainer, todo)
    return executor.map_chunks(trainer, todo, progress=report)


def train_run(config: ExperimentConfig | str | Path | Mapping, run_dir: str | Path, *,
              executor: Executor | None = None,
              progress: ProgressDisplay | None = None,
              verify_progress=None) -> RunResult:
    """Train the ``T`` base classifiers of ``config`` into ``run_dir`` and return the results.

    Everything is checked before anything is written: the config, the data against it, that
    the run fits in memory (``experiment.resources.check_run_memory``: a
    ``resources.ResourceError`` names the parameter), and that ``run_dir`` is (or can be
    created as) a writable folder that is empty or holds a run with the same config. A run
    with the same config is resumed: chunks whose file exists are skipped, and the
    predictions are bit-identical to those of an uninterrupted run; a finished run with
    nothing to train, whose files match its manifest, is read and left as it is (never
    unfinished at any instant). ``executor`` defaults to
    ``LocalExecutor(config.execution.workers)`` (at most the usable CPUs,
    ``executors.check_workers``); ``progress`` is a ``ProgressDisplay`` (None or False: none;
    True: the command line's bar, ``progress_display``); ``verify_progress`` is a display of
    the checksums a finished run's files are checked against before they are read back (MiB;
    None, True or a ``ProgressDisplay``: ``display.checksum_display``).
    """
    t0 = time.perf_counter()
    progress = None if progress in (None, False) else progress_display(progress, "train_run")
    checksums = checksum_display(verify_progress, "train_run")
    cfg, given = _config(config, run_dir)
    try:
        return _train_run(cfg, run_dir, executor, progress, t0, checksums)
    except ConfigError as e:  # "Got 'cuda'" for a device given as 'CUDA': the text given
        raise as_given(e, given) from None


def _train_run(cfg: ExperimentConfig, run_dir: str | Path, executor: Executor | None,
               progress, t0: float, checksums: ProgressDisplay | None = None) -> RunResult:
    """``train_run``'s work, from its config."""
    if executor is None:
        executor = LocalExecutor(check_workers(cfg.execution.workers, "training.workers",
                                               "the config"))
    rd = RunDir(run_dir)
    runs.check_writable(rd.path)
    old = rd.check_config(cfg)  # refuse another run's folder before loading any data
    if old is None:  # a new run keeps every bound: an earlier version's run's values beyond
        refuse_earlier(cfg)  # one added since (a config it was loaded from) resume it only
    else:  # resumed
        cfg = runs.own_edits(cfg, rd.path)  # an updated run: its own edits
        _check_unhashed_settings(rd, old, cfg)
        # the same weights kept whether the run said null or true: its own words, its hash
        cfg = dataclasses.replace(cfg, execution=dataclasses.replace(
            cfg.execution, save_weights=old.execution.save_weights))
    old_manifest = rd.load_manifest() if rd.exists() else None
    if old_manifest is not None:  # before the model's module is imported (changed code
        # must not run)
        check_model_source(cfg, old_manifest.get("model_source"),
                           when=f"the run '{rd.path}' started",
                           then="its saved chunks would mix two versions of the model, so it "
                                "cannot be resumed (restore the code, or train a new run)")
    if old is None:  # (a run started before the check resumes as it was)
        learners.check_cpu_only(cfg)
    if cfg.selection.scheme in selection.NEAREST_NEIGHBOURS:
        from poisoncert.experiment.neighbors import train_nn_run

        with rd.lock():
            return RunResult(**train_nn_run(cfg, rd, t0=t0, progress=progress), trained=False)
    with _before_writing(rd):
        data = split_data(cfg.data)
        data.warn_missing_classes()
        subset_plan(cfg.selection, data)
        learners.check_learner(cfg, data)
        check_run_memory(cfg, data, executor)
        preflight = getattr(executor, "preflight", None)
        if preflight is not None:  # e.g. a Ray cluster that does not answer: before any file
            preflight()
    try:
        with _before_writing(rd):
            runs.refuse_changed_data(rd.path, old_manifest, data.summary.sha256_arrays)
            manifest = runs.build_manifest(cfg, data=data.summary.manifest())
            source = model_source(cfg)
            if source is not None:  # compared when the run is resumed, updated or attacked
                manifest["model_source"] = source
            local = isinstance(executor, LocalExecutor)
            manifest["device"] = device_record(cfg.execution.device,
                                               executor.devices if local else None,
                                               local=local)
        with rd.lock():  # the whole run under its lock; prepare() takes it for a new run
            try:
                return _train_locked(cfg, rd, data, manifest, executor, progress, t0,
                                     checksums)
            except OSError as e:
                raise _resumable(e, rd) from None
    finally:  # what preflight opened (a Ray cluster's connection) if training did not close it
        close = getattr(executor, "close_preflight", None)
        if close is not None:
            close()


def _resumable(e: OSError, rd: RunDir) -> OSError:
    """A write that failed in a run that exists (a full disk): its one line, which named only
    the file ("Cannot write '.../chunk-00002.safetensors': No space left on device."), also
    says that the run keeps its finished chunks and that the same command resumes it. Any
    other error (a refusal; a creation that failed, which leaves no run) as it was."""
    if isinstance(e, RunError):
        if not str(e).startswith("Cannot write '"):
            return e
        why = str(e)
    elif e.strerror and e.filename:
        why = f"Cannot write '{e.filename}': {e.strerror}"
    else:
        return e
    if not rd.exists():
        return e
    return RunError(f"{why.rstrip('.')}: the run '{rd.path}' keeps the chunks it finished; "
                    "the same command resumes it once the cause is fixed.")


def _train_locked(cfg: ExperimentConfig, rd: RunDir, data: DataSplit, manifest: dict,
                  executor: Executor, progress: ProgressDisplay | None,
                  t0: float, checksums: ProgressDisplay | None = None) -> RunResult:
    old_manifest = rd.load_manifest() if rd.exists() else None
    from poisoncert.training.groups import engine_record, recorded_path

    with _before_writing(rd):  # (a finished run's checksums: gigabytes, read)
        path = recorded_path(cfg.execution.path, cfg.execution.device, old_manifest,
                             training=cfg.training)
        group = _group_size(cfg, data, old_manifest, path)
        rows = _subset_rows(cfg, data, old_manifest)
        manifest["engine"] = engine_record(group, rows, path)
        finished = _finished_as_recorded(cfg, rd, group, old_manifest, checksums)
    if finished is not None:  # nothing to train or write: the run is left as it is
        predictions, votes, sizes, n_chunks = finished
        return RunResult(run_dir=rd.path, predictions=predictions, votes=votes,
                         labels=data.y_test.astype(np.int64), subset_sizes=sizes, n=data.n,
                         chunks_trained=0, chunks_skipped=n_chunks,
                         seconds=time.perf_counter() - t0)
    resumed = rd.prepare(cfg, manifest)
    # the learner trains with the group size, subset rows and path resolved ("auto" / null /
    # "fast" -> the recorded values, "off" -> None); the run's own config (its hash, its
    # files) keeps them
    train_cfg = resolved_config(cfg, group, rows, path)

    T = cfg.T
    seeds = selection.model_seeds(cfg.selection.seed, T)
    for name, arr in ((runs.SEEDS, seeds), (runs.CLEAN_INDICES, data.clean_idx)):
        # written on every resume too: update and attack read them, and the checksums
        # recorded at the end cover them (a swapped file was kept, and blessed)
        runs.save_npy(rd / name, arr)
    ranges = runs.chunk_ranges(T, cfg.run.chunk_size, group)
    store_ranks = cfg.run.store_ranks
    if store_ranks:
        from poisoncert.experiment import ranks as ranks_files
    todo = [cid for cid, (a, b) in enumerate(ranges)
            if not (resumed and rd.chunk_done(cid, a, b, seeds[a:b])
                    and (not store_ranks or ranks_files.ranks_done(rd, cid, a, b))
                    and _weights_done(rd, cfg, cid, a, b, seeds[a:b]))]
    done_models = T - sum(ranges[cid][1] - ranges[cid][0] for cid in todo)
    if todo and not rd.chunks_dir.is_dir():  # a run's config and manifest alone, copied
        if rd.chunks_dir.exists():  # not "[Errno 17] ..." or "Cannot write ..." later
            raise RunError(f"'{rd.chunks_dir}' is not a folder: a run keeps its chunk files "
                           "in that folder. Move the file away and train again.")
        rd.chunks_dir.mkdir()
    if cfg.keeps_weights:
        if rd.weights_dir.exists() and not rd.weights_dir.is_dir():  # not "[Errno 17] ..."
            raise RunError(f"'{rd.weights_dir}' is not a folder: a run keeps its classifiers' "
                           "weights in that folder. Move the file away and train again.")
        rd.weights_dir.mkdir(exist_ok=True)
    two_phase = cfg.algorithm.two_phase
    phase2 = (learners.train_phase2(cfg, data)
              if two_phase and (todo or not (rd / PHASE2_JSON).exists()) else None)
    learner = learners.make_learner(train_cfg, data, phase2) if todo else None

    display = progress or no_display
    saved = done_models
    try:
        with display(T, done_models, f"{cfg.selection.scheme} T={T}") as advance:
            relay = _ProgressRelay(advance, ranges)
            report = relay.report if progress else None
            trainer = ChunkTrainer(cfg, ranges, learner, data=data, progress=report)
            for res in _map_chunks(executor, trainer, todo, report):
                if res.weights is not None:
                    runs.save_bytes(rd.weights_path(res.chunk_id), res.weights)
                ranks_sha256 = None
                if res.ranks is not None:  # before the chunk file, which marks the chunk done
                    ranks_sha256 = ranks_files.save_chunk_ranks(rd, res.chunk_id, res.ranks)
                rd.write_chunk(res.chunk_id, start=res.start, stop=res.stop, seeds=res.seeds,
                               sizes=res.sizes, predictions=res.predictions,
                               weights_sha256=(None if res.weights is None
                                               else hashlib.sha256(res.weights).hexdigest()),
                               ranks_sha256=ranks_sha256)
                saved += res.stop - res.start
                relay.finish(res.chunk_id)
    except KeyboardInterrupt as exc:  # what is kept, for the one line the command prints
        raise TrainInterrupted(rd.path, saved, T, max(b - a for a, b in ranges)) from exc
    predictions, votes, sizes = rd.assemble(ranges, data.y_test, data.n_classes)
    if store_ranks:
        ranks_files.assemble_ranks(rd, ranges)
    if cfg.keeps_weights:
        from poisoncert.experiment.ensemble_record import write_ensemble_record

        write_ensemble_record(rd, cfg, data, ranges)
    if two_phase and not (rd / PHASE2_JSON).exists():
        from poisoncert import twophase

        # phase 1's accuracy where its answer can be read: phase 2's abstentions on clean
        # classes were counted as phase 1's errors (twophase.phase1_accuracy)
        acc1 = twophase.phase1_accuracy(predictions, data.y_test, data.poisoned_labels,
                                        data.n_classes, phase2=phase2.predictions)
        # and the mean of its recalls on its own classes ("clean", each poisoned class):
        # plain accuracy is mostly its recall on "clean", most of the test set
        bal1 = twophase.phase1_balanced_accuracy(predictions, data.y_test,
                                                 data.poisoned_labels, data.n_classes,
                                                 phase2=phase2.predictions)
        on_clean = ~np.isin(data.y_test, data.poisoned_labels)
        abstained = int(np.count_nonzero(on_clean & (phase2.predictions < 0)))
        runs.save_json(rd / PHASE2_JSON, {
            "phase2_accuracy": phase2.accuracy, "phase2_seed": phase2.seed,
            "phase2_steps": phase2.steps, "phase2_seconds": round(phase2.seconds, 3),
            "phase2_abstentions": abstained,
            "phase1_test_points": len(data.y_test) - abstained,
            "phase1_accuracy_mean": _finite(acc1.mean()),
            "phase1_accuracy": [_finite(round(float(a), 6)) for a in acc1],
            "phase1_balanced_accuracy_mean": _finite(bal1.mean()),
            "phase1_balanced_accuracy": [_finite(round(float(a), 6)) for a in bal1]})
    seconds = time.perf_counter() - t0
    result = RunResult(run_dir=rd.path, predictions=predictions, votes=votes,
                       labels=data.y_test.astype(np.int64), subset_sizes=sizes, n=data.n,
                       chunks_trained=len(todo), chunks_skipped=len(ranges) - len(todo),
                       seconds=seconds)
    rd.finish(seconds_last=round(seconds, 3),
              results={"accuracy": result.accuracy, "base_accuracy": result.base_accuracy,
                       "subset_size_mean": float(sizes.mean()),
                       "abstaining_classifiers": int(np.all(predictions < 0, axis=1).sum()),
                       "diverged_classifiers": result.diverged})
    return result


def _finite(x) -> float | None:
    """``x`` as a float, None for NaN (JSON has no NaN: phase 1's accuracy on no point)."""
    x = float(x)
    return x if np.isfinite(x) else None


def _finished_as_recorded(cfg: ExperimentConfig, rd: RunDir, group: int,
                          old_manifest: dict | None, checksums: ProgressDisplay | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """A finished run (with checksums) whose every chunk is done and whose files are those its
    manifest records (``RunDir.verify``): its predictions, votes and subset sizes, read back,
    and its number of chunks; otherwise None. ``train`` again on such a run writes nothing:
    it used to mark the run unfinished first (``prepare``) and write every file again, so
    that a kill before the end left a finished run unfinished, refused by ``certify`` and
    ``predict`` until trained again. A run that is not (a chunk to train, a file changed or
    missing) is resumed as before: unfinished until ``finish``. A weights file is taken on
    the SHA-256 its chunk file records, which the manifest records and ``verify`` checks
    (not hashed twice). ``checksums``: the display of the checksums read (MiB), or None
    (gigabytes of weights were read without a word before "Nothing to train")."""
    if not (old_manifest and old_manifest.get("finished")
            and isinstance(old_manifest.get("checksums"), dict)):
        return None
    if cfg.algorithm.two_phase and not (rd / PHASE2_JSON).exists():
        return None
    sums = old_manifest["checksums"]
    # every file train writes is one the manifest records (and verify checks): a run of an
    # earlier version without one (ensemble.json, ranks.npy) is resumed, which writes it
    written = [runs.SEEDS, runs.CLEAN_INDICES, runs.PREDICTIONS, runs.VOTES, runs.LABELS,
               runs.SUBSET_SIZES, runs.CLASSIFIERS]
    written += ([runs.RANKS] if cfg.run.store_ranks else []) + \
        ([runs.ENSEMBLE] if cfg.keeps_weights else [])
    if not all(name in sums for name in written):
        return None
    rd.check_config(cfg)
    rd.set_run(old_manifest)  # what its chunks are checked against
    seeds = selection.model_seeds(cfg.selection.seed, cfg.T)
    ranges = runs.chunk_ranges(cfg.T, cfg.run.chunk_size, group)
    if cfg.run.store_ranks:
        from poisoncert.experiment.ranks import ranks_done
    for cid, (a, b) in enumerate(ranges):
        if not rd.chunk_done(cid, a, b, seeds[a:b]):
            return None
        if cfg.run.store_ranks and not ranks_done(rd, cid, a, b):
            return None
        recorded = rd.chunk_weights_sha256(cid)
        if recorded is not None and (
                sums.get(f"{runs.WEIGHTS}/{rd.weights_path(cid).name}") != recorded
                or not _weights_named(rd, cfg, cid, a, b, seeds[a:b])):
            return None
    try:
        rd.verify(checksums)
        if cfg.keeps_weights:  # in this version's form (train writes it again otherwise)
            from poisoncert.experiment.ensemble_record import read_record

            read_record(rd, cfg)
        arrays = [rd.load(n) for n in (runs.PREDICTIONS, runs.VOTES, runs.SUBSET_SIZES)]
    except RunError:  # a file changed or missing: trained (and written) again below
        return None
    if arrays[2].shape != (cfg.T,):
        return None
    return (*arrays, len(ranges))


def run_group_size(rd: RunDir, cfg: ExperimentConfig) -> int:
    """The group size a trained run used (``training.groups.recorded_group_size``: ``auto``
    resolved from its manifest). Its chunks hold whole groups of it (``runs.chunk_ranges``)."""
    from poisoncert.training.groups import recorded_group_size

    return recorded_group_size(cfg.training, rd.load_manifest())


def resolved_config(cfg: ExperimentConfig, group: int, rows: int | None,
                    path: str) -> ExperimentConfig:
    """``cfg`` with the group size, subset rows and engine path a run resolved (``auto``,
    null, ``fast``) or recorded: the config its learner trains and predicts with."""
    t, e = cfg.training, cfg.execution
    if (t.group_size, t.subset_rows) != (group, rows):
        cfg = dataclasses.replace(cfg, training=dataclasses.replace(
            t, group_size=group, subset_rows=rows))
    if e.path != path:
        cfg = dataclasses.replace(cfg, execution=dataclasses.replace(e, path=path))
    return cfg


def _group_size(cfg: ExperimentConfig, data: DataSplit, old_manifest: dict | None,
                path: str) -> int:
    """The group size of a run: the size a resumed run recorded
    (``training.groups.recorded_group_size``), else the size
    ``training.groups.auto_group_size`` picks for ``training.group_size`` (``auto``: for the
    device, the model and the engine ``path``), at most ``T``."""
    from poisoncert.training.groups import auto_group_size, recorded_group_size

    tr = cfg.training
    if old_manifest is not None or tr.sklearn_learner is not None:
        return recorded_group_size(tr, old_manifest)
    return auto_group_size(tr, cfg.execution.device, data.x_train.shape[1:], data.n_classes,
                           n_models=cfg.T, path=path)


def _subset_rows(cfg: ExperimentConfig, data: DataSplit, old_manifest: dict | None
                 ) -> int | None:
    """The ``training.subset_rows`` of a run: the config's (None for ``"off"``: the draws),
    or for null the value a resumed run recorded (none recorded: None, as runs trained before
    it existed), else ``learners.auto_subset_rows``."""
    from poisoncert.training.groups import recorded_subset_rows

    tr = cfg.training
    if old_manifest is not None or tr.subset_rows is not None or tr.sklearn_learner is not None:
        return recorded_subset_rows(tr, old_manifest)
    return learners.auto_subset_rows(cfg, data)


def run_subsets(run_dir: str | Path) -> tuple[DataSplit, list[np.ndarray]]:
    """The data of a trained run and the training-set indices of each of its sub-datasets,
    from its config, its known-clean part (``clean_indices.npy``) and its seeds
    (``seeds.npy``)."""
    rd = RunDir(run_dir)
    cfg = rd.load_config()
    data = split_data(cfg.data)
    if not np.array_equal(rd.load(runs.CLEAN_INDICES), data.clean_idx):
        raise RunError(f"The known-clean part of the run '{rd.path}' is not its config's: "
                       "the data have changed since it was trained.")
    plan = subset_plan(cfg.selection, data)
    return data, [plan.indices(i, int(s)) for i, s in enumerate(rd.load(runs.SEEDS))]
