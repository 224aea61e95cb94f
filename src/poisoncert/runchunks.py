"""A run's chunk files: classifiers ``start .. stop - 1`` each, written atomically, checked
on resume and joined into the run's arrays (the layout: ``poisoncert.runlayout``).

``ChunkFiles`` is the chunk half of ``runs.RunDir``; ``chunk_ranges`` splits the ``T``
classifiers into chunks on the training engine's group boundaries.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from poisoncert.runlayout import (
    CHUNKS,
    CLASSIFIERS,
    LABELS,
    PREDICTIONS,
    SUBSET_SIZES,
    VOTES,
    WEIGHTS,
)
from poisoncert.runsafe import RunError, atomic_write, save_text
from poisoncert.votes import votes_from_predictions

__all__ = ["ChunkFiles", "chunk_ranges", "save_npy", "save_npz"]


# --------------------------------------------------------------------------------------------
# Atomic writes of arrays


def save_npy(path: str | Path, arr: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, np.asarray(arr), allow_pickle=False)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.savez(f, **arrays)


# --------------------------------------------------------------------------------------------
# Chunks

_DIGESTED = ("start", "stop", "seeds", "sizes", "predictions", "config_hash",
             "weights_sha256", "data_sha256", "ranks_sha256")

#: The chunk files of a run whose manifest records ``chunk_format`` 2 (every run created
#: since) all hold a digest, the config hash and the data checksum: one without them was
#: edited, and is trained again (runs of earlier versions keep taking their older chunks).
CHUNK_FORMAT = 2
_REQUIRED = ("digest", "config_hash", "data_sha256")


def _chunk_digest(arrays) -> str:
    """SHA-256 of a chunk's arrays (their names, dtypes, shapes and bytes), which the chunk
    file stores beside them: a chunk edited or damaged after it was written no longer matches
    and is trained again on resume, instead of its predictions entering the run."""
    h = hashlib.sha256()
    for key in _DIGESTED:
        if key in arrays:
            a = np.asarray(arrays[key])
            h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def chunk_ranges(T: int, chunk_size: int, group_size: int = 1) -> list[tuple[int, int]]:
    """Classifier ranges ``[start, stop)`` of ``chunk_size`` (rounded up to a multiple of
    ``group_size``, so that every chunk starts on a group boundary of the training engine)."""
    group_size = max(1, int(group_size))
    size = -(-int(chunk_size) // group_size) * group_size
    return [(s, min(s + size, T)) for s in range(0, T, size)]


class ChunkFiles:
    """The chunk files of the run directory at ``path`` (a base of ``runs.RunDir``, which sets
    ``path`` and, in ``prepare``, the run's config hash)."""

    path: Path
    _config_hash: str | None
    _data_sha256: str | None = None  # the run's data checksum (manifest data.sha256_arrays)
    _strict: bool = False            # the run's chunks hold every _REQUIRED field

    def set_run(self, manifest: dict) -> None:
        """What the chunks of the run with this manifest record and are checked against."""
        data = manifest.get("data")
        sha = data.get("sha256_arrays") if isinstance(data, dict) else None
        self._data_sha256 = sha if isinstance(sha, str) else None
        self._strict = manifest.get("chunk_format") == CHUNK_FORMAT

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

    def write_chunk(self, chunk_id: int, *, start: int, stop: int, seeds: np.ndarray,
                    sizes: np.ndarray, predictions: np.ndarray,
                    weights_sha256: str | None = None, ranks_sha256: str | None = None) -> Path:
        """Write a chunk atomically, with the config hash and data checksum of the run (after
        ``prepare``) and a digest of its arrays; ``weights_sha256`` / ``ranks_sha256``: the
        SHA-256 of its weights / rankings file, written before it (a resume then checks that
        file too)."""
        predictions = np.asarray(predictions)
        if predictions.shape[0] != stop - start:
            raise ValueError(f"chunk {chunk_id} has {predictions.shape[0]} rows of predictions "
                             f"for classifiers {start}..{stop - 1}")
        path = self.chunk_path(chunk_id)
        arrays = {"start": np.int64(start), "stop": np.int64(stop),
                  "seeds": np.asarray(seeds, dtype=np.uint64),
                  "sizes": np.asarray(sizes, dtype=np.int64),
                  "predictions": predictions.astype(np.int16, copy=False)}
        if self._config_hash is not None:
            arrays["config_hash"] = np.str_(self._config_hash)
        if weights_sha256 is not None:
            arrays["weights_sha256"] = np.str_(weights_sha256)
        if self._data_sha256 is not None:
            arrays["data_sha256"] = np.str_(self._data_sha256)
        if ranks_sha256 is not None:
            arrays["ranks_sha256"] = np.str_(ranks_sha256)
        save_npz(path, **arrays, digest=np.str_(_chunk_digest(arrays)))
        return path

    def read_chunk(self, chunk_id: int) -> dict[str, np.ndarray] | None:
        """The chunk's arrays, or None when its file is missing or unreadable."""
        try:
            with np.load(self.chunk_path(chunk_id), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception:  # missing, truncated or corrupt (zipfile.BadZipFile, OSError, ...)
            return None

    def _chunk_matches(self, z: dict[str, np.ndarray] | None, start: int, stop: int) -> bool:
        if z is None or not {"start", "stop", "seeds", "sizes", "predictions"} <= set(z):
            return False
        if self._strict and not set(_REQUIRED) <= set(z):
            return False  # fields removed (a digest among them): edited, retrained
        if "digest" in z and str(z["digest"]) != _chunk_digest(z):
            return False  # edited or damaged since it was written: retrained
        h = z.get("config_hash")
        if h is not None and self._config_hash is not None and str(h) != self._config_hash:
            return False  # written for another config: retrained
        d = z.get("data_sha256")
        if d is not None and self._data_sha256 is not None and str(d) != self._data_sha256:
            return False  # trained on other data (a chunk of another run): retrained
        return int(z["start"]) == start and int(z["stop"]) == stop

    def chunk_done(self, chunk_id: int, start: int, stop: int, seeds: np.ndarray) -> bool:
        """True when the chunk file is complete and matches the expected classifiers and the
        run's config hash (a chunk without one, from earlier versions, on its seeds)."""
        z = self.read_chunk(chunk_id)
        return (self._chunk_matches(z, start, stop)
                and np.array_equal(z["seeds"], np.asarray(seeds, dtype=np.uint64)))

    def chunk_weights_sha256(self, chunk_id: int) -> str | None:
        """The SHA-256 of its weights file the chunk file records, or None (chunks of runs
        without weights, and of earlier versions, record none)."""
        return self._chunk_text(chunk_id, "weights_sha256")

    def chunk_ranks_sha256(self, chunk_id: int) -> str | None:
        """The SHA-256 of its rankings file the chunk file records, or None (runs without
        rankings, and earlier versions)."""
        return self._chunk_text(chunk_id, "ranks_sha256")

    def _chunk_text(self, chunk_id: int, key: str) -> str | None:
        z = self.read_chunk(chunk_id)
        return None if z is None or key not in z else str(z[key])

    def assemble(self, ranges: list[tuple[int, int]], labels: np.ndarray, n_classes: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Join the chunk files into ``predictions.npy``, ``votes.npy``, ``labels.npy``,
        ``subset_sizes.npy`` and ``classifiers.csv``; return predictions, votes and subset
        sizes."""
        preds, sizes, seeds = [], [], []
        for cid, (start, stop) in enumerate(ranges):
            z = self.read_chunk(cid)
            if not self._chunk_matches(z, start, stop):
                raise RunError(f"The chunk {self.chunk_path(cid)} is missing or does not hold "
                               f"classifiers {start}..{stop - 1} of this config: re-run train "
                               "to finish it.")
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
