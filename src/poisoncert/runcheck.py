"""Verification of a finished run directory before it is certified (numpy).

A certificate is only as trustworthy as the files it is computed from, so ``certify`` first
checks (``verify_run``), in this order, and stops at the first file that does not match:

1. the manifest is a finished run's and intact (``manifest_sha256`` over its own content);
2. ``config.yaml`` has the config hash the run was trained with (``config_hash``);
3. every file whose SHA-256 the manifest records (arrays, config, classifier table,
   ``phase2.json``, rankings, neighbours, edits, weights) still has it, and no such file
   (``runlayout.CHECKSUMMED``, a weights file) was added;
4. the arrays agree with each other and with the manifest: ``predictions`` is ``(T, n_test)``
   within ``[-1, n_classes - 1]``, ``votes`` counts exactly those predictions, ``labels`` lie in
   ``[0, n_classes - 1]``, and ``data.n = n_train - n_clean``; ``ranks.npy``
   (``run.store_ranks``) ranks first the class each classifier votes for; a knn / rnn run's
   prediction is the majority of its counts, and a knn run's counts are those of its
   ``neighbors.npy``.

Runs made before checksums were recorded have no ``checksums``: they get 2 and 4 and a
warning (``verified`` False) rather than a refusal, so that earlier experiments can still be
certified. The checks detect changed files, not an adversary who rewrites the checksums too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from poisoncert import runlayout as runs
from poisoncert.config import ExperimentConfig, config_hash
from poisoncert.runsafe import (
    TMP_PREFIX,
    RunError,
    RunLock,
    RunLockedError,
    file_sha256,
    manifest_changed,
    shell_path,
)
from poisoncert.selection import NEAREST_NEIGHBOURS
from poisoncert.votes import votes_from_predictions

__all__ = ["verify_run"]


def _in_training(rd) -> None:
    """A ``RunError`` saying so when another process holds the unfinished run's lock (it is
    training it now: "run train again" would be the wrong advice)."""
    if getattr(rd, "locked", False):
        return
    try:
        RunLock.acquire(rd.path).release()
    except RunLockedError:
        raise RunError(f"The run '{rd.path}' is not finished: another poisoncert process is "
                       "training it now (it holds the run's lock). Wait until it ends.") from None
    except RunError:  # the lock file cannot be opened (a read-only copy): nothing to learn
        return


def verify_run(rd, progress=None) -> dict[str, Any]:
    """Check the finished run ``rd``; raise a ``RunError`` naming the first file that does not
    match. Returns ``{"verified": bool, "files": int, "note": str}`` (``verified`` False for a
    run without checksums, whose ``note`` is a warning). ``progress``: a display of the
    checksums (``display(total, completed, label)`` yielding ``advance(k)``, in MiB read, as
    ``experiment.display.ProgressDisplay``), or None."""
    cfg = rd.load_config()
    man_path = rd / runs.MANIFEST
    man = rd.load_manifest()
    if not man:
        raise RunError(f"The manifest '{man_path}' is missing: is '{rd.path}' a poisoncert run?")
    if man.get("finished") is None:
        _in_training(rd)
        raise RunError(f"The run '{rd.path}' is not finished ('{man_path}' records no finish): "
                       "run train again to resume it.")
    changed = manifest_changed(man)
    if changed:
        raise RunError(f"The manifest '{man_path}' was changed after the run finished "
                       f"({changed}).")
    if man.get("config_hash") != config_hash(cfg):
        raise RunError(f"The config '{rd / runs.CONFIG}' is not the one the run was trained "
                       f"with (its hash is not the config_hash in {runs.MANIFEST}).")
    sums = man.get("checksums")
    if sums is not None:
        _check_files(rd, sums, man_path, progress)
    _check_arrays(rd, cfg, man, man_path)
    if sums is None:
        return {"verified": False, "files": 0,
                "note": f"warning: the run '{rd.path}' records no checksums (made by an earlier "
                        "poisoncert): only its config hash and the consistency of its arrays "
                        "were checked."}
    return {"verified": True, "files": len(sums),
            "note": f"verified: {len(sums)} files match the checksums in {runs.MANIFEST}, the "
                    "config its hash, and the arrays each other."}


def _size(path: Path) -> int:
    """A file's size in bytes (0 for a file that cannot be read: named below)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mib(size: int) -> int:
    """``size`` bytes in MiB, rounded up."""
    return -(-size // (1 << 20))


def _check_files(rd, sums, man_path: Path, progress=None) -> None:
    if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
        raise RunError(f"The manifest '{man_path}' has malformed checksums.")
    for rel in sums:
        parts = Path(rel).parts
        if not parts or Path(rel).is_absolute() or ".." in parts:
            raise RunError(f"The manifest '{man_path}' names the file '{rel}', outside the run "
                           "directory.")
    if progress is None:
        _check_sums(rd, sums, lambda k: None)
    else:
        # the MiB of the bytes read so far, rounded up once (a file's own size rounded up
        # counted 19 MiB for a run of 7.8: 12 files of about a MiB or less)
        sizes = {rel: _size(rd.path / rel) for rel in sums}
        read = [0, 0]  # bytes read, MiB shown

        def done(rel: str) -> None:
            read[0] += sizes[rel]
            mib = _mib(read[0])
            advance(mib - read[1])
            read[1] = mib

        with progress(_mib(sum(sizes.values())), 0, "checksums") as advance:
            _check_sums(rd, sums, done)
    for name in runs.CHECKSUMMED:  # a file the commands read where it is (ranks.npy: the
        # run-off election's rankings), put there after the run finished: never checked
        if name not in sums and (rd.path / name).is_file():
            raise RunError(f"The file '{rd / name}' was added after the run finished (no "
                           f"checksum of it is recorded in {runs.MANIFEST}): remove it.")
    if rd.weights_dir.is_dir():
        for p in sorted(rd.weights_dir.iterdir()):
            if p.is_file() and not p.name.startswith(TMP_PREFIX) \
                    and f"{runs.WEIGHTS}/{p.name}" not in sums:
                raise RunError(f"The file '{p}' was added after the run finished (no checksum "
                               f"of it is recorded in {runs.MANIFEST}).")


def _again(rd) -> str:
    """What to do about a file of the run that is missing or changed: ``train`` on the run
    writes it again (from its chunks; a chunk whose files do not match is trained again)."""
    return (f"Restore it, or write it again with: poisoncert train "
            f"{shell_path(Path(rd.path) / runs.CONFIG)} --run-dir {shell_path(rd.path)}")


def _check_sums(rd, sums, done) -> None:
    """Each file's SHA-256 against the manifest's, in its order; ``done(rel)`` after each."""
    for rel, want in sums.items():
        path = rd.path / rel
        try:
            got = file_sha256(path)
        except FileNotFoundError:
            raise RunError(f"The file '{path}' is missing (its checksum is recorded in "
                           f"{runs.MANIFEST}). {_again(rd)}") from None
        except OSError as e:
            raise RunError(f"Cannot read '{path}': {e.strerror or e}.") from None
        if got != want:
            raise RunError(f"The file '{path}' was changed after the run finished: its SHA-256 "
                           f"{got[:12]}... is not the {want[:12]}... recorded in "
                           f"{runs.MANIFEST}. {_again(rd)}")
        done(rel)


def _check_arrays(rd, cfg: ExperimentConfig, man: dict[str, Any], man_path: Path
                  ) -> None:
    data = man.get("data")
    keys = ("n", "n_test", "n_classes")
    if not isinstance(data, dict) or not all(
            type(data.get(k)) is int and data[k] >= 1 for k in keys):
        raise RunError(f"The manifest '{man_path}' does not give the data sizes (data.n, "
                       "data.n_test, data.n_classes as positive integers).")
    n, n_test, k = (data[key] for key in keys)
    n_train, n_clean = data.get("n_train"), data.get("n_clean")
    if type(n_train) is int and type(n_clean) is int and n != n_train - n_clean:
        raise RunError(f"The manifest '{man_path}' is inconsistent: data.n = {n} is not "
                       f"data.n_train - data.n_clean = {n_train - n_clean}.")
    T = cfg.T
    nn = cfg.selection.scheme in NEAREST_NEIGHBOURS
    # a nearest-neighbour run's counts are neighbours (at most the training set), not votes
    vote_max = (n_train if type(n_train) is int else n + (n_clean or 0)) if nn else T
    predictions, votes, labels = (rd.load(name) for name in
                                  (runs.PREDICTIONS, runs.VOTES, runs.LABELS))
    for name, arr, shape, low, high in (
            (runs.PREDICTIONS, predictions, (T, n_test), -1, k - 1),
            (runs.VOTES, votes, (n_test, k), 0, vote_max),
            (runs.LABELS, labels, (n_test,), 0, k - 1)):
        _check_array(rd, name, arr, shape, low, high, k, T)
    if nn:
        _check_neighbours(rd, cfg, predictions, votes, k, T)
        return
    if not np.array_equal(votes, votes_from_predictions(predictions, k)):
        raise RunError(f"The file '{rd / runs.VOTES}' does not hold the vote counts of "
                       f"'{rd / runs.PREDICTIONS}'.")
    if (rd / runs.RANKS).is_file():
        ranks = rd.load(runs.RANKS)
        _check_array(rd, runs.RANKS, ranks, (T, n_test, k), 0, k - 1, k, T)
        voted = predictions >= 0  # an abstaining classifier ranks the classes in index order
        if not np.array_equal(np.argmin(ranks, axis=2)[voted], predictions[voted]):
            raise RunError(f"The file '{rd / runs.RANKS}' does not rank first the class each "
                           f"classifier votes for in '{rd / runs.PREDICTIONS}'.")


def _check_array(rd, name: str, arr: np.ndarray, shape, low: int, high: int, k: int,
                 T: int) -> None:
    path = rd / name
    if arr.shape != shape or arr.dtype.kind not in "iu":
        raise RunError(f"The file '{path}' holds a {arr.dtype} array of shape {arr.shape}; "
                       f"this run needs integers of shape {shape}.")
    if arr.size and (arr.min() < low or arr.max() > high):
        bad = int(arr.min()) if arr.min() < low else int(arr.max())
        raise RunError(f"The file '{path}' holds the value {bad}, outside [{low}, {high}] "
                       f"for this run ({k} classes, T = {T}).")


def _check_neighbours(rd, cfg: ExperimentConfig, predictions, votes, k: int, T: int) -> None:
    """A knn / rnn run: the prediction is the majority of the counts (-1 for an empty rNN
    ball); a knn run's counts are those of the first ``k`` labels of ``neighbors.npy``."""
    total = votes.sum(axis=1)
    if not np.array_equal(predictions[0], np.where(total > 0, votes.argmax(axis=1), -1)):
        raise RunError(f"The file '{rd / runs.PREDICTIONS}' does not hold the majority of the "
                       f"counts in '{rd / runs.VOTES}'.")
    if cfg.selection.scheme != "knn":
        return
    K = cfg.selection.k
    neighbors = rd.load(runs.NEIGHBORS)
    if neighbors.ndim != 2 or neighbors.shape[0] != votes.shape[0] or neighbors.shape[1] < K:
        raise RunError(f"The file '{rd / runs.NEIGHBORS}' holds an array of shape "
                       f"{neighbors.shape}; this run needs ({votes.shape[0]}, >= {K}).")
    _check_array(rd, runs.NEIGHBORS, neighbors, neighbors.shape, 0, k - 1, k, T)
    counts = np.zeros_like(votes)
    np.add.at(counts, (np.repeat(np.arange(len(votes)), K),
                       neighbors[:, :K].astype(np.int64).ravel()), 1)
    if not np.array_equal(counts, votes):
        raise RunError(f"The file '{rd / runs.VOTES}' does not hold the counts of the "
                       f"{K} nearest labels in '{rd / runs.NEIGHBORS}'.")
