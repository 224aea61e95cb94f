"""Random selection of sub-datasets (the paper's schemes 1-3) and hash partitions (DPA).

Pure functions, numpy only: a seed goes in, indices into the attackable part ``D^p`` come out.
Classifier ``i`` of a run is seeded by ``model_seed(root_seed, i)``, which depends on ``i`` and
the root seed alone, so a sub-dataset never depends on chunking, worker count or resume.

The known-clean part ``D^c`` (the paper's case 2) is never sampled: callers append its indices
to every sub-dataset (see ``subset_indices``).
"""

from __future__ import annotations

import hashlib

import numpy as np

from poisoncert._validation import check_choice, check_int, check_real
from poisoncert.bounds import SCHEME_ALIASES, SCHEMES

__all__ = [
    "PARTITION",
    "draw",
    "fa_bucket_ids",
    "fa_classifier_indices",
    "fa_sample_classifiers",
    "init_seed",
    "model_seed",
    "model_seeds",
    "partition_ids",
    "subset_indices",
]

#: Name of the deterministic-partition scheme (DPA); not a random selection.
PARTITION = "partition"

_MASK63 = (1 << 63) - 1


def model_seed(root_seed: int, i: int) -> int:
    """The 64-bit seed of base classifier ``i``: ``SeedSequence(root_seed).spawn(...)[i]``.

    Equal to the ``i``-th child of ``numpy.random.SeedSequence(root_seed)``, computed directly,
    so it does not depend on how many classifiers the run has or which are trained together.
    """
    root_seed = check_int(root_seed, "root_seed", "model_seed", low=0)
    i = check_int(i, "i", "model_seed", low=0)
    child = np.random.SeedSequence(root_seed, spawn_key=(i,))
    return int(child.generate_state(1, np.uint64)[0])


def model_seeds(root_seed: int, T: int, start: int = 0) -> np.ndarray:
    """Seeds of classifiers ``start .. start + T - 1`` as a uint64 array."""
    T = check_int(T, "T", "model_seeds", low=0)
    return np.array([model_seed(root_seed, start + i) for i in range(T)], dtype=np.uint64)


def init_seed(seed: int) -> int:
    """A 63-bit seed for the model initialisation / training randomness of one classifier.

    Derived from the classifier's seed through a different stream than its selection, so that
    the sub-dataset and the initialisation are independent.
    """
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1, np.uint64)[0]) & _MASK63


def _selection_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0]))


def draw(scheme: str, n: int, *, ns: int | None = None, p: float | None = None,
         seed: int) -> np.ndarray:
    """Indices into ``D^p`` (``0 .. n-1``) of one random sub-dataset.

    - ``without_replacement``: ``ns`` distinct indices, uniformly (scheme 1);
    - ``with_replacement``: ``ns`` independent uniform draws, repeats kept (scheme 2);
    - ``binomial``: each index kept independently with probability ``p`` (scheme 3), or
      ``p = ns / n`` when only ``ns`` is given. The draw may be empty.

    Returned sorted (with multiplicity for scheme 2), as int64.
    """
    where = "draw"
    scheme = check_choice(scheme, "scheme", where, SCHEMES, SCHEME_ALIASES)
    n = check_int(n, "n", where, low=1)
    rng = _selection_rng(seed)
    if scheme == "binomial":
        if p is None:
            if ns is None:
                raise ValueError("The 'p' parameter of draw must be given (or 'ns', meaning "
                                 "p = ns / n) for the binomial scheme. Got None instead.")
            ns = check_int(ns, "ns", where, low=1, high=n)
            p = ns / n
        p = check_real(p, "p", where, low=0.0, high=1.0, low_open=True, high_open=True)
        size = int(rng.binomial(n, p))
        idx = rng.choice(n, size=size, replace=False)
    else:
        if ns is None:
            raise ValueError(f"The 'ns' parameter of draw must be an int for the {scheme} "
                             "scheme. Got None instead.")
        high = n if scheme == "without_replacement" else None
        ns = check_int(ns, "ns", where, low=1, high=high)
        if scheme == "without_replacement":
            idx = rng.choice(n, size=ns, replace=False)
        else:
            idx = rng.integers(0, n, size=ns)
    return np.sort(np.asarray(idx, dtype=np.int64))


def subset_indices(poison_idx: np.ndarray, clean_idx: np.ndarray | None, drawn: np.ndarray
                   ) -> np.ndarray:
    """Training-set indices of one sub-dataset: ``D^c`` in full plus the drawn part of ``D^p``.

    ``poison_idx`` maps positions in ``D^p`` to training-set indices; ``drawn`` are positions.
    """
    part = np.asarray(poison_idx, dtype=np.int64)[drawn]
    if clean_idx is None or len(clean_idx) == 0:
        return part
    return np.concatenate([np.asarray(clean_idx, dtype=np.int64), part])


def partition_ids(X, y=None, *, k: int) -> np.ndarray:
    """Deterministic partition (DPA): part of each sample from a stable hash of its content.

    The hash is SHA-256 of the sample's raw bytes (and its label, when given), so it is the
    same on every machine and run, and a modified sample may move to another part.
    """
    k = check_int(k, "k", "partition_ids", low=1)
    X = np.ascontiguousarray(X)
    ids = np.empty(len(X), dtype=np.int64)
    labels = None if y is None else np.asarray(y).astype(np.int64)
    for i in range(len(X)):
        h = hashlib.sha256(X[i].tobytes())
        if labels is not None:
            h.update(int(labels[i]).to_bytes(8, "little", signed=True))
        ids[i] = int.from_bytes(h.digest()[:8], "little") % k
    return ids


def fa_bucket_ids(X, y=None, *, k: int, d: int) -> np.ndarray:
    """Finite Aggregation: the bucket (of ``k * d``) of each sample, ``partition_ids`` with
    ``k * d`` parts, so with ``d = 1`` the buckets are DPA's parts."""
    k = check_int(k, "k", "fa_bucket_ids", low=1)
    d = check_int(d, "d", "fa_bucket_ids", low=1)
    return partition_ids(X, y, k=k * d)


def fa_sample_classifiers(bucket_ids, *, k: int, d: int) -> np.ndarray:
    """``(n, d)`` int64: the base classifiers that train on each sample, ``(bucket + s) mod
    k*d`` for ``s`` in ``aggregation.fa_shifts(k, d)``. A change to a sample touches only these
    (and, for a modification, those of its new bucket)."""
    from poisoncert.aggregation import fa_shifts

    shifts = fa_shifts(k, d)
    b = np.asarray(bucket_ids, dtype=np.int64)
    return (b[:, None] + shifts[None, :]) % (k * d)


def fa_classifier_indices(bucket_ids, *, k: int, d: int) -> list[np.ndarray]:
    """Per base classifier ``j`` (``k * d`` of them), the sorted sample indices it trains on:
    the samples of buckets ``(j - s) mod k*d``."""
    users = fa_sample_classifiers(bucket_ids, k=k, d=d)
    order = np.argsort(users.ravel(), kind="stable")
    samples = order // d
    cuts = np.searchsorted(users.ravel()[order], np.arange(k * d + 1))
    return [np.sort(samples[cuts[j]:cuts[j + 1]]) for j in range(k * d)]
