"""Nearest-neighbour runs: ``selection.scheme: knn`` (``k`` neighbours) or ``rnn`` (the ball
of radius ``r``), certified intrinsically by ``poisoncert.knn`` (Jia, Liu, Cao and Gong).

There are no base classifiers: the run stores, per test point, the labels of its nearest
training samples (``neighbors.npy``, int16 ``(n_test, depth)``, nearest first: ``depth = 2k``
for kNN, enough for every radius but long deletion-only attacks, which ``exact`` flags) or
its class counts inside the ball (rNN). ``votes.npy`` holds the counts the prediction is the
majority of (kNN: among the ``k`` nearest), ``predictions.npy`` the prediction as a single row
(``-1``: an empty rNN ball), so ``poisoncert certify`` and the report read it like any run.

Features are the raw pixels as integers 0-255 (``pixel_features``; 0-16 for scikit-learn's
digits), so squared distances are exact integers and the neighbour order (ties by training
index) does not depend on rounding.
The whole training set (``D^c`` and ``D^p``) is searched; every neighbour is treated as
attackable, which is sound (a known-clean neighbour only makes the attack harder).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from poisoncert import knn, runs
from poisoncert.config import ExperimentConfig, config_error
from poisoncert.experiment.display import no_display, takes_unit
from poisoncert.experiment.split import DataSplit, split_data
from poisoncert.runs import RunDir

__all__ = ["NEIGHBORS", "nn_outputs", "nn_search", "pixel_features", "run_data",
           "search_nn", "train_nn_run", "write_nn_outputs"]

NEIGHBORS = runs.NEIGHBORS


#: Integer pixel scales tried in turn: 8-bit images (MNIST, CIFAR-10), then scikit-learn's
#: digits (0-16).
PIXEL_SCALES = (255, 16)


def pixel_features(x: np.ndarray, key: str = "data.deskew", scale: int | None = None,
                   deskew: bool = True) -> tuple[np.ndarray, int]:
    """``x`` (floats in [0, 1] that are ``u / s`` for integers ``u`` and a scale ``s`` of
    ``PIXEL_SCALES``, or the ``scale`` given) as float64 integers ``u``, flattened, and ``s``;
    a ``ConfigError`` naming ``key`` when the inputs are not such pixels. Integer features
    make every squared distance exact, so the order of two training samples never depends on
    rounding (or on which other samples are searched), which the certificates assume.
    ``deskew``: whether the config deskews the inputs (the usual cause); where it does not, the
    error names the data instead (a data set whose own values are not such pixels)."""
    arr = np.asarray(x)
    flat = arr.reshape(len(arr), int(np.prod(arr.shape[1:])))  # no inputs: (0, F), not an error
    scales = PIXEL_SCALES if scale is None else (scale,)
    for s in scales:
        u = flat.astype(np.float64)  # in place from here: one array of the features' size
        np.rint(np.multiply(u, s, out=u), out=u)
        step = max(1, (1 << 22) // max(1, flat.shape[1]))
        if all(np.array_equal((u[i:i + step] / s).astype(flat.dtype), flat[i:i + step])
               for i in range(0, len(u), step)):
            return u, s
    if not deskew:  # the data set's own values: the config's data.deskew is false already
        which = (f"one of {', '.join(map(str, PIXEL_SCALES))}" if scale is None else
                 f"{scale}, the training inputs' scale")
        raise ValueError("A knn / rnn run needs inputs whose values are integer pixels divided "
                         f"by {which} (exact distances; the loaders give images so). Got "
                         f"inputs that are not, e.g. {_off_scale_value(flat, scales)!r}: use "
                         "another selection scheme for them.")
    raise config_error(key, "false for a knn / rnn run (exact distances need pixels that are "
                       "integers 0-255 divided by 255)", True)


def _off_scale_value(flat: np.ndarray, scales: tuple[int, ...] = PIXEL_SCALES) -> float:
    """An input value that is no pixel of any of ``scales`` (for the error line)."""
    v = np.unique(flat.reshape(-1)[:1 << 20])  # the check's comparison, in the inputs' dtype
    off = np.ones(v.shape, bool)
    for s in scales:
        off &= (np.rint(v.astype(np.float64) * s) / s).astype(v.dtype) != v
    return float(v[off][0]) if off.any() else float("nan")


def nn_outputs(cfg: ExperimentConfig, data: DataSplit, x_test: np.ndarray | None = None,
               x_train: np.ndarray | None = None, y_train: np.ndarray | None = None,
               progress=None):
    """``(neighbors, votes, predictions)`` of the run's classifier on ``x_test`` (default: the
    test set) with training set ``x_train`` / ``y_train`` (default: the run's);
    ``progress(m)`` as blocks of ``m`` test points are searched."""
    xt, scale = pixel_features(data.x_train if x_train is None else x_train,
                               deskew=bool(cfg.data.deskew))
    yt = data.y_train if y_train is None else y_train
    xq, _ = pixel_features(data.x_test if x_test is None else x_test, scale=scale,
                           deskew=bool(cfg.data.deskew))  # (the test set's own values too)
    return nn_search(cfg, xt, yt, xq, data.n_classes, progress=progress)


def nn_search(cfg: ExperimentConfig, xt: np.ndarray, yt: np.ndarray, xq: np.ndarray, C: int,
              progress=None):
    """``nn_outputs`` from the features (``pixel_features``: integers as float64, the
    training set's ``xt`` with labels ``yt``, the queries' ``xq`` at the same scale) and the
    class count ``C``: the one search and vote of the run's classifier, for its test set
    (training) and for new inputs (``nnmodel.NeighborModel``, a block of inputs at a time).
    Every query's row depends on that query alone."""
    s = cfg.selection
    if s.scheme == "knn":
        depth = min(2 * s.k, len(yt))
        if s.k > len(yt):
            raise config_error("selection.k", f"an int in the range [1, {len(yt)}] (the "
                               "training set's size)", s.k)
        labels, _ = knn.nearest_labels(xt, yt, xq, depth, progress=progress)
        votes = knn._prefix_counts(labels[:, :s.k], C)[:, s.k].astype(np.int64)
        pred = votes.argmax(axis=1)
        return labels.astype(np.int16), votes, pred[None, :].astype(np.int16)
    votes = knn.rnn_votes(xt, yt, xq, s.r, n_classes=C, progress=progress).astype(np.int64)
    pred = np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), -1)
    return None, votes, pred[None, :].astype(np.int16)


def run_data(rd: RunDir, cfg: ExperimentConfig, manifest: dict, *, then: str,
             require: bool = False) -> DataSplit:
    """The run's data loaded again from its config (``split_data``), refused (``RunError``,
    one line) where they are not the arrays it was trained on (the manifest's
    ``data.sha256_arrays``; the files whose SHA-256 changed are named): its stored neighbours
    and its size ``n_train`` are of those. ``require``: a manifest without the checksum is
    refused too (nothing then says which data the run searched)."""
    data = split_data(cfg.data)
    if require:
        runs.require_data_checksum(rd.path, manifest)
    runs.refuse_changed_data(rd.path, manifest, data.summary.sha256_arrays,
                             since="have changed since it was trained", then=then,
                             sources=data.summary.sources)
    return data


class SearchInterrupted(KeyboardInterrupt):
    """A knn / rnn run's neighbour search stopped by Ctrl-C: nothing is written (the run is
    written whole at the search's end), so the same command starts the search again."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        super().__init__(self.message())

    def message(self) -> str:
        return (f"interrupted: the neighbour search keeps nothing (a knn / rnn run is written "
                f"whole when its search ends; '{self.run_dir}' is as it was); the same command "
                "starts it again.")


def train_nn_run(cfg: ExperimentConfig, rd: RunDir, *, t0: float | None = None,
                 progress=None) -> dict:
    """The ``train_run`` of a knn / rnn config: search the neighbours, write the run; returns
    the fields of its ``train.RunResult``. ``progress``: a ``ProgressDisplay`` of the search,
    in test points (given ``unit="test points"`` where it takes a ``unit``, as
    ``cli.progress.rich_progress`` does)."""
    t0 = time.perf_counter() if t0 is None else t0
    data = split_data(cfg.data)
    data.warn_missing_classes()
    manifest = rd.load_manifest() if rd.exists() else None
    # as train_run refuses it for other runs: a resumed run keeps its manifest, whose data
    # (n_train, checksum) certify reads
    runs.refuse_changed_data(rd.path, manifest, data.summary.sha256_arrays)
    if manifest is not None and manifest.get("finished"):  # a finished run: read it
        names = [runs.VOTES, runs.PREDICTIONS, runs.LABELS] + \
            ([NEIGHBORS] if cfg.selection.scheme == "knn" else [])
        same = manifest.get("data", {}).get("sha256_arrays") is not None  # and equal: above
        if same and all((rd / n).exists() for n in names):
            pred = rd.load(runs.PREDICTIONS)
            return dict(run_dir=rd.path, predictions=pred, votes=rd.load(runs.VOTES),
                        labels=rd.load(runs.LABELS),
                        subset_sizes=np.array([data.n + len(data.clean_idx)]), n=data.n,
                        chunks_trained=0, chunks_skipped=1,
                        seconds=time.perf_counter() - t0)
    neighbors, votes, pred = search_nn(cfg, data, rd.path, progress)
    rd.prepare(cfg, runs.build_manifest(cfg, data=data.summary.manifest()))
    labels, seconds = write_nn_outputs(rd, data, neighbors, votes, pred, t0)
    return dict(run_dir=rd.path, predictions=pred, votes=votes, labels=labels,
                subset_sizes=np.array([data.n + len(data.clean_idx)]), n=data.n,
                chunks_trained=1, chunks_skipped=0, seconds=seconds)


def search_nn(cfg: ExperimentConfig, data: DataSplit, run_dir: Path, progress=None):
    """``nn_outputs`` of ``cfg`` on ``data``'s test set, shown on ``progress`` (a
    ``ProgressDisplay`` in test points, opened when the search begins: a bad
    ``selection.k`` is one error line, not a bar first); Ctrl-C raises ``SearchInterrupted``
    for ``run_dir`` (nothing of the run is written before the search ends)."""
    display = progress or no_display
    n_test = len(data.y_test)
    kw = {"unit": "test points"} if takes_unit(display) else {}
    s = cfg.selection
    label = f"{s.scheme} {'k' if s.scheme == 'knn' else 'r'}={s.k if s.scheme == 'knn' else s.r}"
    with contextlib.ExitStack() as stack:
        shown: list = []

        def advance(k: int) -> None:
            if not shown:
                shown.append(stack.enter_context(display(n_test, 0, label, **kw)))
            shown[0](k)

        try:  # checks the inputs before any file
            return nn_outputs(cfg, data, progress=advance)
        except KeyboardInterrupt:
            raise SearchInterrupted(run_dir) from None


def write_nn_outputs(rd: RunDir, data: DataSplit, neighbors, votes, pred, t0: float,
                     **fields) -> tuple[np.ndarray, float]:
    """Write a knn / rnn run's arrays into ``rd`` (created and locked by the caller) and
    finish it (``fields`` recorded in its manifest too); returns its labels and the seconds
    since ``t0``."""
    labels = data.y_test.astype(np.int64)
    if neighbors is not None:
        runs.save_npy(rd / NEIGHBORS, neighbors)
    runs.save_npy(rd / runs.VOTES, votes)
    runs.save_npy(rd / runs.PREDICTIONS, pred)
    runs.save_npy(rd / runs.LABELS, labels)
    runs.save_npy(rd / runs.CLEAN_INDICES, data.clean_idx)
    seconds = time.perf_counter() - t0
    acc = float(np.mean(pred[0] == labels))
    rd.finish(seconds_last=round(seconds, 3), **fields,
              results={"accuracy": acc, "base_accuracy": acc,
                       "abstain_rate": float(np.mean(pred[0] < 0))})
    return labels, seconds
