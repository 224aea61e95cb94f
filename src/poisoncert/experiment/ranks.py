"""Every base classifier's ranking of the classes on every test point (``run.store_ranks``).

The run-off election (``poisoncert.runoff``) needs each classifier's full order of the classes,
not only its vote. A chunk that stores them trains its classifiers with the engine
(``training.train_predict_with_weights``, evaluated on the first ``eval_batch_size`` test
points only), then evaluates the fresh weights on the whole test set with
``training.predict(..., output="logits")``, which reproduces the engine's own evaluation bit
for bit: the votes are the logits' argmax, checked against the engine's on the first test
points, and the rankings ``runoff.rankings_from_scores`` of the logits (int8 ``(k, n_test,
C)``, 0 = preferred; equal scores to the smaller class). A classifier with an empty
sub-dataset abstains from the vote and ranks the classes in index order (it is a fixed function
of its empty bucket, like every other classifier of its own buckets).

Each chunk's rankings are written to ``ranks/chunk-XXXXX.npy`` before its chunk file (so a
chunk file means its rankings are there) and joined into ``ranks.npy``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from poisoncert import runs
from poisoncert.runs import RunDir, RunError

__all__ = ["RANKS", "RANKS_DIR", "assemble_ranks", "chunk_ranks_path", "logits_to_votes",
           "ranks_done", "train_predict_ranks"]

RANKS = runs.RANKS
RANKS_DIR = runs.RANKS_DIR


def chunk_ranks_path(rd: RunDir, chunk_id: int) -> Path:
    return rd.path / RANKS_DIR / f"chunk-{chunk_id:05d}.npy"


def logits_to_votes(logits: np.ndarray, abstain: np.ndarray, *, ranks: bool = True
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Votes (int16 ``(k, n)``, ``-1`` for the ``abstain`` classifiers and where a logit is
    not finite, as ``training.labels_of`` gives them) and, with ``ranks``, rankings (int8
    ``(k, n, C)``) of logits ``(k, n, C)``; an ``abstain`` classifier (an empty sub-dataset)
    ranks the classes in index order. A classifier whose logits are not finite has no
    ranking: with ``ranks`` it is a ``ValueError`` (the run-off election would count it for
    class 0 first, the confident vote a diverged classifier never learned)."""
    from poisoncert.runoff import rankings_from_scores

    bad = ~np.isfinite(logits).all(-1) & ~abstain[:, None]
    if ranks and bad.any():
        k = int(bad.any(axis=1).sum())
        raise ValueError(f"{k} of {len(bad)} base classifiers gave outputs that are not "
                         "finite (diverged training: a lower training.lr, say); the run-off "
                         "election (run.store_ranks) needs a ranking from every classifier "
                         "that trained.")
    out = abstain[:, None] | bad
    scores = np.where(out[:, :, None], 0.0, logits).astype(np.float32)
    votes = np.where(out, -1, scores.argmax(-1)).astype(np.int16)
    return votes, (rankings_from_scores(scores) if ranks else None)


def train_predict_ranks(learner, data, subsets, seeds, progress=None):
    """``learner.train_predict`` (a ``TorchLearner``) that also returns the rankings:
    ``(predictions, ranks, weights)``; ``weights`` only when the learner keeps them."""
    from poisoncert import training
    from poisoncert.experiment.learners import TorchLearner

    if not isinstance(learner, TorchLearner):
        raise ValueError("Rankings (run.store_ranks) need a torch learner.")
    cfg = learner.settings
    head = data.x_test[:cfg.eval_batch_size]
    full = dataclasses.replace(learner, keep_weights=True)
    head_pred, weights = full.train_predict(dataclasses.replace(data, x_test=head), subsets,
                                            seeds, progress)
    logits = training.predict(cfg, weights, data.x_test, input_shape=data.x_test.shape[1:],
                              n_classes=data.n_classes, device=learner.device,
                              path=learner.path, output="logits")
    abstain = np.array([w is None for w in weights], dtype=bool)
    predictions, ranks = logits_to_votes(logits, abstain)
    if not np.array_equal(predictions[:, :len(head)], np.asarray(head_pred, dtype=np.int16)):
        raise RuntimeError("training.predict's votes differ from the engine's on the first "
                           "test points: the rankings would not match the run's votes.")
    return predictions, ranks, (weights if learner.keep_weights else None)


def ranks_done(rd: RunDir, chunk_id: int, start: int, stop: int) -> bool:
    """True when the chunk's rankings file is there, holds ``stop - start`` classifiers and,
    where the chunk file records its SHA-256, has it (an edited file is trained again, not
    joined into ``ranks.npy``)."""
    path = chunk_ranks_path(rd, chunk_id)
    try:
        r = np.load(path, mmap_mode="r", allow_pickle=False)
        recorded = rd.chunk_ranks_sha256(chunk_id)
        if recorded is not None and runs.file_sha256(path) != recorded:
            return False
    except (OSError, ValueError):
        return False
    return r.ndim == 3 and r.shape[0] == stop - start


def save_chunk_ranks(rd: RunDir, chunk_id: int, ranks: np.ndarray) -> str:
    """Write the chunk's rankings file; its SHA-256, for the chunk file to record."""
    (rd.path / RANKS_DIR).mkdir(exist_ok=True)
    path = chunk_ranks_path(rd, chunk_id)
    runs.save_npy(path, np.asarray(ranks, dtype=np.int8))
    return runs.file_sha256(path)


def assemble_ranks(rd: RunDir, ranges: list[tuple[int, int]]) -> Path:
    """Join the chunks' rankings into ``ranks.npy`` (int8 ``(T, n_test, C)``)."""
    parts = []
    for cid, (a, b) in enumerate(ranges):
        if not ranks_done(rd, cid, a, b):
            raise RunError(f"The rankings of chunk {cid} ({chunk_ranks_path(rd, cid)}) are "
                           "missing: re-run train to finish the run.")
        parts.append(np.load(chunk_ranks_path(rd, cid), allow_pickle=False))
    path = rd.path / RANKS
    runs.save_npy(path, np.concatenate(parts, axis=0).astype(np.int8, copy=False))
    return path
