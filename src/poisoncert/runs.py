"""A run directory: the resolved config, a manifest, per-model seeds and prediction chunks.

Layout (every file written atomically: a temporary file in the same folder, fsync, rename)::

    RUN_DIR/
      config.yaml            the resolved experiment config
      manifest.json          versions, code revision, start time, data checksums, config hash
      seeds.npy              uint64 (T,): selection.model_seed(root_seed, i) of classifier i
      clean_indices.npy      int64: training-set indices of the known-clean part D^c
      chunks/chunk-00000.npz start, stop, seeds, sizes (|drawn part of D^p|), predictions int16
      weights/chunk-00000.safetensors   the chunk's classifier weights (torch models,
                             unless training.save_weights is false)
      ensemble.json          with the weights: preprocessing, classes and selection facts
                             (poisoncert.Ensemble)
      predictions.npy        int16 (T, n_test), -1 for an abstaining base classifier
      votes.npy              int64 (n_test, n_classes): vote counts
      labels.npy             int64 (n_test,): true test labels
      subset_sizes.npy       int64 (T,): size of each drawn sub-dataset of D^p
      classifiers.csv        one row per base classifier: index, seed, subset_size,
                             test_accuracy (empty when it abstains): the paper's Figure 5
      certificates.csv, certified_accuracy.csv, certified_accuracy.png, certify.json
                             (written by ``poisoncert certify``)

A chunk file holds base classifiers ``start .. stop - 1``; a run is resumed by re-training
only the chunks whose file is missing. Classifier ``i`` depends on its own seed alone, so the
assembled predictions equal those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from poisoncert.config import (
    ConfigError,
    ExperimentConfig,
    config_diff,
    config_hash,
    load_config,
    to_yaml,
)
from poisoncert.votes import votes_from_predictions

__all__ = [
    "RunDir",
    "RunError",
    "atomic_write",
    "chunk_ranges",
    "array_checksum",
    "build_manifest",
    "save_json",
    "save_npy",
    "save_npz",
    "save_text",
]

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
SEEDS = "seeds.npy"
CLEAN_INDICES = "clean_indices.npy"
PREDICTIONS = "predictions.npy"
VOTES = "votes.npy"
LABELS = "labels.npy"
SUBSET_SIZES = "subset_sizes.npy"
CLASSIFIERS = "classifiers.csv"
CERTIFICATES = "certificates.csv"
CERTIFIED_ACCURACY = "certified_accuracy.csv"
CERTIFIED_ACCURACY_PNG = "certified_accuracy.png"
CERTIFY_JSON = "certify.json"
CHUNKS = "chunks"
WEIGHTS = "weights"
_TMP_PREFIX = ".tmp-"


class RunError(OSError):
    """A run directory that cannot be written, or that holds another run."""


# --------------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync it and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was, so a
    reader sees either the old file or the complete new one, never a part.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_TMP_PREFIX + path.name + ".")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_bytes(path: str | Path, data: bytes) -> None:
    with atomic_write(path) as f:
        f.write(data)


def save_text(path: str | Path, text: str) -> None:
    save_bytes(path, text.encode())


def save_json(path: str | Path, obj: Any) -> None:
    save_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npy(path: str | Path, arr: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, np.asarray(arr), allow_pickle=False)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def save_with(path: str | Path, write: Callable[[io.BufferedIOBase], None]) -> None:
    """Atomically write ``path`` with ``write(file)`` (e.g. a matplotlib ``savefig``)."""
    with atomic_write(path) as f:
        write(f)


# --------------------------------------------------------------------------------------------
# Chunks


def chunk_ranges(T: int, chunk_size: int, group_size: int = 1) -> list[tuple[int, int]]:
    """Classifier ranges ``[start, stop)`` of ``chunk_size`` (rounded up to a multiple of
    ``group_size``, so that every chunk starts on a group boundary of the training engine)."""
    group_size = max(1, int(group_size))
    size = -(-int(chunk_size) // group_size) * group_size
    return [(s, min(s + size, T)) for s in range(0, T, size)]


# --------------------------------------------------------------------------------------------
# Manifest


def array_checksum(*arrays: np.ndarray) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_revision(path: str | Path | None = None) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout holding ``path`` (this package by default),
    or None when it is not in one (an installed wheel) or git is missing."""
    folder = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain"],
                                cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": rev.stdout.strip(), "dirty": bool(status.stdout.strip())}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def build_manifest(cfg: ExperimentConfig, *, data: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Versions, code revision, start time, data description and the config hash."""
    from poisoncert._version import __version__

    return {
        "poisoncert": __version__,
        "config_hash": config_hash(cfg),
        "started": now_iso(),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": _version("torch"),
            "scikit-learn": _version("scikit-learn"),
            "scipy": _version("scipy"),
            "poisoncert": __version__,
        },
        "platform": platform.platform(),
        "argv": sys.argv,
        "git": git_revision(),
        "data": data or {},
        "resumed": [],
        "finished": None,
    }


# --------------------------------------------------------------------------------------------
# The run directory


def check_writable(path: str | Path) -> None:
    """Raise a ``RunError`` unless ``path`` is, or could be created as, a writable folder.

    Creates nothing: walks up to the first existing ancestor and checks it.
    """
    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunError(f"Cannot write the run directory '{path}': '{probe}' is not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"Cannot write the run directory '{path}': '{probe}' is not writable.")


class RunDir:
    """Paths and atomic I/O of one run directory; ``RunDir(path)`` touches nothing."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def chunks_dir(self) -> Path:
        return self.path / CHUNKS

    @property
    def weights_dir(self) -> Path:
        return self.path / WEIGHTS

    def chunk_path(self, chunk_id: int) -> Path:
        return self.chunks_dir / f"chunk-{chunk_id:05d}.npz"

    def weights_path(self, chunk_id: int) -> Path:
        return self.weights_dir / f"chunk-{chunk_id:05d}.safetensors"

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    # -- config ------------------------------------------------------------------------------

    def load_config(self) -> ExperimentConfig:
        """The resolved config stored with the run."""
        if not self.exists():
            raise RunError(f"'{self.path}' is not a poisoncert run directory (no {CONFIG}).")
        try:
            return load_config(self.path / CONFIG)
        except ConfigError as e:
            raise RunError(f"The config of the run '{self.path}' is invalid: {e}") from None

    def load_manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError):
            return {}

    def check_config(self, cfg: ExperimentConfig) -> bool:
        """True when this folder holds a run of ``cfg`` (resumable), False when it holds no
        run; a ``RunError`` naming the differing keys when it holds a run of another config."""
        if not self.exists():
            return False
        old = self.load_config()
        if config_hash(old) != config_hash(cfg):
            diff = "; ".join(config_diff(old, cfg)) or "the config hash"
            raise RunError(f"The run directory '{self.path}' holds a run with another config "
                           f"({diff}). Use another --run-dir, or the same config to resume "
                           "it.")
        return True

    def prepare(self, cfg: ExperimentConfig, manifest: dict[str, Any]) -> bool:
        """Create the run or check that it holds the same config; return True when resuming.

        A folder that exists and is neither empty nor a run, or a run with another config
        (other than ``config.RESUMABLE_KEYS`` and the ``certify`` section), is refused with a
        ``RunError`` before anything is written. An unwritable folder raises a ``RunError`` and
        leaves nothing behind.
        """
        check_writable(self.path)
        if self.check_config(cfg):
            man = self.load_manifest() or manifest
            man.setdefault("resumed", []).append(now_iso())
            man["finished"] = None
            save_json(self.path / MANIFEST, man)
            return True
        if self.path.exists() and any(self.path.iterdir()):
            raise RunError(f"The run directory '{self.path}' exists and is not empty. Use an "
                           "empty or new folder.")
        created = self._mkdirs()
        try:
            self.chunks_dir.mkdir(exist_ok=True)
            save_json(self.path / MANIFEST, manifest)
            save_text(self.path / CONFIG, to_yaml(cfg))  # last: marks a valid run
        except OSError as e:
            for p in (self.path / MANIFEST, self.chunks_dir, *created):
                with contextlib.suppress(OSError):
                    p.unlink() if p.is_file() else p.rmdir()
            raise RunError(f"Cannot write the run directory '{self.path}': "
                           f"{e.strerror or e}.") from None
        return False

    def _mkdirs(self) -> list[Path]:
        """Create the folder and missing parents; return the created ones, deepest first."""
        missing = []
        p = self.path.absolute()
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            for m in missing:
                with contextlib.suppress(OSError):
                    m.rmdir()
            raise RunError(f"Cannot write the run directory '{self.path}': "
                           f"{e.strerror or e}.") from None
        return missing

    def finish(self, **fields: Any) -> None:
        man = self.load_manifest()
        man.update(fields)
        man["finished"] = now_iso()
        save_json(self.path / MANIFEST, man)

    # -- chunks ------------------------------------------------------------------------------

    def write_chunk(self, chunk_id: int, *, start: int, stop: int, seeds: np.ndarray,
                    sizes: np.ndarray, predictions: np.ndarray) -> Path:
        predictions = np.asarray(predictions)
        if predictions.shape[0] != stop - start:
            raise ValueError(f"chunk {chunk_id} has {predictions.shape[0]} rows of predictions "
                             f"for classifiers {start}..{stop - 1}")
        path = self.chunk_path(chunk_id)
        save_npz(path, start=np.int64(start), stop=np.int64(stop),
                 seeds=np.asarray(seeds, dtype=np.uint64),
                 sizes=np.asarray(sizes, dtype=np.int64),
                 predictions=predictions.astype(np.int16, copy=False))
        return path

    def read_chunk(self, chunk_id: int) -> dict[str, np.ndarray] | None:
        """The chunk's arrays, or None when its file is missing or unreadable."""
        try:
            with np.load(self.chunk_path(chunk_id), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:  # missing, truncated or corrupt (zipfile.BadZipFile, OSError, ...)
            return None

    def chunk_done(self, chunk_id: int, start: int, stop: int, seeds: np.ndarray) -> bool:
        """True when the chunk file is complete and matches the expected classifiers."""
        z = self.read_chunk(chunk_id)
        return (z is not None and int(z["start"]) == start and int(z["stop"]) == stop
                and np.array_equal(z["seeds"], np.asarray(seeds, dtype=np.uint64)))

    def assemble(self, ranges: list[tuple[int, int]], labels: np.ndarray, n_classes: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Join the chunk files into ``predictions.npy``, ``votes.npy``, ``labels.npy``,
        ``subset_sizes.npy`` and ``classifiers.csv``; return predictions, votes and subset
        sizes."""
        preds, sizes, seeds = [], [], []
        for cid, (start, stop) in enumerate(ranges):
            z = self.read_chunk(cid)
            if z is None or int(z["start"]) != start or int(z["stop"]) != stop:
                raise RunError(f"The chunk {self.chunk_path(cid)} is missing or does not hold "
                               f"classifiers {start}..{stop - 1}: re-run train to finish it.")
            preds.append(z["predictions"])
            sizes.append(z["sizes"])
            seeds.append(z["seeds"])
        predictions = np.concatenate(preds, axis=0).astype(np.int16, copy=False)
        subset_sizes = np.concatenate(sizes).astype(np.int64, copy=False)
        votes = votes_from_predictions(predictions, n_classes)
        save_npy(self.path / PREDICTIONS, predictions)
        save_npy(self.path / VOTES, votes)
        save_npy(self.path / LABELS, np.asarray(labels, dtype=np.int64))
        save_npy(self.path / SUBSET_SIZES, subset_sizes)
        seeds = np.concatenate(seeds)
        acc = (predictions == np.asarray(labels)[None, :]).mean(axis=1)
        lines = ["index,seed,subset_size,test_accuracy"]
        lines += [f"{i},{int(seeds[i])},{int(subset_sizes[i])},"
                  f"{'' if np.all(predictions[i] < 0) else format(acc[i], '.6g')}"
                  for i in range(len(predictions))]
        save_text(self.path / CLASSIFIERS, "\n".join(lines) + "\n")
        return predictions, votes, subset_sizes

    # -- results -----------------------------------------------------------------------------

    def load(self, name: str) -> np.ndarray:
        path = self.path / name
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise RunError(f"'{path}' is missing: the run is not finished (run train "
                           "again to resume it).") from None

