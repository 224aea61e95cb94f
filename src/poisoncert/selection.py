"""Random selection of sub-datasets (the paper's schemes 1-3) and hash partitions (DPA).

Pure functions and small records, numpy only: a seed goes in, indices into the attackable part
``D^p`` come out. Classifier ``i`` of a run is seeded by ``model_seed(root_seed, i)``, which
depends on ``i`` and the root seed alone, so a sub-dataset never depends on chunking, worker
count or resume. Every random draw made from a seed goes through a named ``Stream`` of it.

The rules of a selection live here, once: ``check_size`` resolves ``ns`` or ``p`` of a scheme
for ``n = |D^p|`` (used by ``bounds``, ``config`` and ``estimator``), and a ``SubsetPlan``
gives classifier ``i``'s training-set indices from its seed (used by runs and the estimator).
The known-clean part ``D^c`` (the paper's case 2) is never sampled: it joins every sub-dataset.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

import numpy as np

from poisoncert._validation import check_choice, check_int, check_real, param_error

__all__ = [
    "ALL_SCHEMES",
    "ALL_SCHEME_ALIASES",
    "BUCKET_SCHEMES",
    "FINITE_AGGREGATION",
    "NEAREST_NEIGHBOURS",
    "PARTITION",
    "PLAN_SCHEMES",
    "PLAN_SCHEME_ALIASES",
    "SCHEMES",
    "SCHEME_ALIASES",
    "Stream",
    "SubsetPlan",
    "check_size",
    "draw",
    "fa_bucket_ids",
    "fa_classifier_indices",
    "fa_sample_classifiers",
    "fa_shifts",
    "fa_spread",
    "init_seed",
    "module_seed",
    "model_seed",
    "model_seeds",
    "partition_ids",
    "stream_rng",
    "subset_indices",
]

#: The paper's random selection schemes (1: bagging without replacement, 2: with replacement,
#: 3: binomial selection).
SCHEMES = ("without_replacement", "with_replacement", "binomial")
SCHEME_ALIASES = {
    "1": "without_replacement",
    "scheme1": "without_replacement",
    "wor": "without_replacement",
    "bagging_without_replacement": "without_replacement",
    "subsampling": "without_replacement",
    "2": "with_replacement",
    "scheme2": "with_replacement",
    "wr": "with_replacement",
    "bagging": "with_replacement",
    "bagging_with_replacement": "with_replacement",
    "3": "binomial",
    "scheme3": "binomial",
    "binomial_selection": "binomial",
    "bernoulli": "binomial",
}
#: Name of the deterministic-partition scheme (DPA); not a random selection.
PARTITION = "partition"
#: Every scheme a run or the estimator accepts, and their aliases.
ALL_SCHEMES = (*SCHEMES, PARTITION)
ALL_SCHEME_ALIASES = {**SCHEME_ALIASES, "dpa": PARTITION}
#: Finite Aggregation (Wang et al.): ``k * d`` hash buckets, classifier ``j`` trains on ``d`` of
#: them (``fa_spread``); with ``d = 1`` it is the partition scheme.
FINITE_AGGREGATION = "finite_aggregation"
#: The deterministic schemes: every sample's bucket is a hash of its content and label.
BUCKET_SCHEMES = (PARTITION, FINITE_AGGREGATION)
#: Every scheme a ``SubsetPlan`` (a run) accepts, and their aliases.
PLAN_SCHEMES = (*ALL_SCHEMES, FINITE_AGGREGATION)
PLAN_SCHEME_ALIASES = {**ALL_SCHEME_ALIASES, "fa": FINITE_AGGREGATION}
#: Runs without base classifiers: k-nearest and radius-nearest neighbours on the whole
#: training set (``poisoncert.knn``), certified intrinsically.
NEAREST_NEIGHBOURS = ("knn", "rnn")

_MASK63 = (1 << 63) - 1


class Stream(enum.IntEnum):
    """Independent random streams of one seed: ``SeedSequence([seed, stream])``.

    A classifier's seed feeds ``SELECTION`` (its sub-dataset), ``TRAINING`` (initialisation,
    minibatches, augmentation, a scikit-learn ``random_state``), ``BALANCE`` (the
    estimator's class-balanced resampling) and ``MODULES`` (what its torch modules draw while
    training: dropout); ``data.clean_seed`` feeds ``CLEAN_SPLIT`` (the
    random known-clean part ``D^c``).
    """

    SELECTION = 0
    TRAINING = 1
    BALANCE = 2
    MODULES = 3
    CLEAN_SPLIT = 7


def stream_rng(seed: int, stream: Stream) -> np.random.Generator:
    """The generator of ``stream`` of ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream)]))


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


def module_seed(seed: int) -> int:
    """A 63-bit seed for the random numbers a classifier's torch modules draw in training
    (dropout), from its own stream: the same masks whatever else the process has drawn."""
    sequence = np.random.SeedSequence([int(seed), int(Stream.MODULES)])
    return int(sequence.generate_state(1, np.uint64)[0]) & _MASK63


def init_seed(seed: int) -> int:
    """A 63-bit seed for the model initialisation / training randomness of one classifier.

    Derived from the classifier's seed through a different stream than its selection, so that
    the sub-dataset and the initialisation are independent.
    """
    sequence = np.random.SeedSequence([int(seed), int(Stream.TRAINING)])
    return int(sequence.generate_state(1, np.uint64)[0]) & _MASK63


def check_size(scheme: str, n: int | None, *, ns=None, p=None, where: str,
               names: tuple[str, str] = ("ns", "p"), n_text: str | None = None
               ) -> tuple[int | None, float | None]:
    """The size of a selection: ``(ns, p)`` for ``scheme`` on ``n = |D^p|`` samples.

    - bagging (``without_replacement``, ``with_replacement``): ``ns`` draws, an int in
      ``[1, n]`` without replacement, ``>= 1`` with; ``p`` must be None. Returns ``(ns, None)``.
    - ``binomial``: each sample kept with probability ``p`` in ``(0, 1)``, or ``ns`` meaning
      ``p = ns / n`` held fixed (then ``ns < n``); exactly one of the two. Returns
      ``(ns or None, p)``.
    - ``partition``, ``finite_aggregation``: neither (their size is the number of buckets).
      Returns ``(None, None)``.

    ``n`` None (not known yet, e.g. a config before its data is loaded) skips the checks that
    need it. ``where`` and ``names`` (the names of ``ns`` and ``p``) make the one error shape:
    "The 'ns' parameter of <where> must be ... Got ... instead."; ``n_text`` (e.g.
    ``"n = |D^p|"``) adds what ``n`` is to a range error.
    """
    ns_name, p_name = names
    if scheme in BUCKET_SCHEMES:
        for name, value in ((ns_name, ns), (p_name, p)):
            if value is not None:
                raise param_error(name, where, f"None for scheme={scheme!r}", value)
        return None, None
    if scheme != "binomial":
        if p is not None:
            raise param_error(p_name, where, f"None for scheme={scheme!r}", p)
        if ns is None:
            raise param_error(ns_name, where, f"an int for the {scheme} scheme", None)
        high = n if scheme == "without_replacement" else None
        try:
            return check_int(ns, ns_name, where, low=1, high=high), None
        except ValueError:
            if n_text is None or high is None:
                raise
            raise param_error(ns_name, where, f"an int in the range [1, {high}] for the "
                              f"{scheme} scheme ({n_text} = {n})", ns) from None
    if ns is not None and p is not None:
        raise param_error(ns_name, where, f"None when {p_name!r} is given (binomial selection: "
                          f"give one of {ns_name!r} and {p_name!r}; ns means p = ns / n)", ns)
    if ns is None:
        if p is None:
            raise param_error(p_name, where, "a real number in the range (0, 1) for the binomial "
                              f"scheme (or give {ns_name!r}, meaning p = ns / n)", None)
        return None, check_real(p, p_name, where, low=0.0, high=1.0, low_open=True,
                                high_open=True)
    if n is None:
        return check_int(ns, ns_name, where, low=1), None
    if n < 2:
        raise param_error(ns_name, where, f"None for n = {n} (p = ns / n must be below 1; give "
                          f"{p_name!r})", ns)
    try:
        ns = check_int(ns, ns_name, where, low=1, high=n - 1)
    except ValueError:
        raise param_error(ns_name, where, f"an int in the range [1, {n - 1}] for the binomial "
                          f"scheme (p = ns / n must be below 1; {n_text or 'n'} = {n})",
                          ns) from None
    return ns, ns / n


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
    ns, p = check_size(scheme, n, ns=ns, p=p, where=where)
    rng = stream_rng(seed, Stream.SELECTION)
    if scheme == "binomial":
        size = int(rng.binomial(n, p))
        idx = rng.choice(n, size=size, replace=False)
    elif scheme == "without_replacement":
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


@dataclass(frozen=True, eq=False)
class SubsetPlan:
    """How sub-dataset ``i`` of an ensemble is made from its seed (small and picklable).

    ``attackable_idx`` maps positions in ``D^p`` to training-set indices, ``clean_idx`` is
    ``D^c`` (joined to every sub-dataset), ``ns`` or ``p`` the size (resolved by
    ``check_size`` on construction: a binomial ``ns`` also sets ``p = ns / n``), and
    ``part_of`` the part of each ``D^p`` sample for the partition scheme (classifier ``i``
    gets part ``i``), or its bucket (of ``k * d``) for Finite Aggregation, where classifier
    ``i`` gets buckets ``(i - s) mod k*d`` for ``s`` in ``fa_shifts(k, d)`` (``d`` given, ``k =
    number of buckets / d``). Sub-dataset ``i`` depends on ``i`` and its seed alone.
    """

    scheme: str
    attackable_idx: np.ndarray
    clean_idx: np.ndarray | None = None
    ns: int | None = None
    p: float | None = None
    part_of: np.ndarray | None = None
    d: int | None = None
    k: int | None = None

    def __post_init__(self) -> None:
        where = "SubsetPlan"
        scheme = check_choice(self.scheme, "scheme", where, PLAN_SCHEMES, PLAN_SCHEME_ALIASES)
        ns, p = check_size(scheme, self.n, ns=self.ns, p=self.p, where=where)
        if scheme in BUCKET_SCHEMES and (self.part_of is None
                                         or len(self.part_of) != len(self.attackable_idx)):
            raise param_error("part_of", where, f"the bucket of every attackable sample for the "
                              f"{scheme} scheme", self.part_of)
        if scheme == FINITE_AGGREGATION:
            if self.d is None or self.k is None:
                raise param_error("d", where, "an int >= 1 (with k) for the finite_aggregation "
                                  "scheme", self.d)
            object.__setattr__(self, "d", check_int(self.d, "d", where, low=1))
            object.__setattr__(self, "k", check_int(self.k, "k", where, low=1))
            object.__setattr__(self, "_shifts", fa_shifts(self.k, self.d))
        elif self.d is not None:
            raise param_error("d", where, f"None for the {scheme} scheme", self.d)
        object.__setattr__(self, "scheme", scheme)
        object.__setattr__(self, "ns", ns)
        object.__setattr__(self, "p", p)

    @property
    def n(self) -> int:
        """``|D^p|``."""
        return int(len(self.attackable_idx))

    @property
    def n_clean(self) -> int:
        """``|D^c|``, the first samples of every sub-dataset."""
        return 0 if self.clean_idx is None else int(len(self.clean_idx))

    def drawn(self, i: int, seed: int) -> np.ndarray:
        """Positions in ``D^p`` of sub-dataset ``i`` (with repeats for scheme 2)."""
        if self.scheme == PARTITION:
            return np.flatnonzero(self.part_of == i)
        if self.scheme == FINITE_AGGREGATION:
            buckets = (i - self._shifts) % (self.k * self.d)
            return np.flatnonzero(np.isin(self.part_of, buckets))
        if self.scheme == "binomial":
            return draw(self.scheme, self.n, p=self.p, seed=seed)
        return draw(self.scheme, self.n, ns=self.ns, seed=seed)

    def indices(self, i: int, seed: int) -> np.ndarray:
        """Training-set indices of sub-dataset ``i``: ``D^c`` first, then the drawn samples."""
        return subset_indices(self.attackable_idx, self.clean_idx, self.drawn(i, seed))

    def subsets(self, start: int, seeds) -> tuple[list[np.ndarray], np.ndarray]:
        """Sub-datasets ``start, start + 1, ...`` (one per seed of ``seeds``) and the sizes of
        their draws from ``D^p`` (int64)."""
        subsets = [self.indices(start + j, int(s)) for j, s in enumerate(seeds)]
        return subsets, np.asarray([len(s) - self.n_clean for s in subsets], dtype=np.int64)


def fa_shifts(k: int, d: int) -> np.ndarray:
    """The ``d`` distinct offsets (sorted, int64) by which a bucket is spread over classifiers.

    Offset 0 and the ``d - 1`` values of ``1 .. k*d - 1`` whose SHA-256 digest of
    ``"fa:{k}:{d}:{j}"`` is smallest: a fixed function of ``(k, d)`` on every machine and numpy
    version. Any set of distinct offsets gives a valid certificate; random-looking offsets make
    two buckets share few classifiers.
    """
    k = check_int(k, "k", "fa_shifts", low=1)
    d = check_int(d, "d", "fa_shifts", low=1)
    n = k * d
    keys = sorted(range(1, n), key=lambda j: hashlib.sha256(f"fa:{k}:{d}:{j}".encode()).digest())
    return np.array(sorted([0, *keys[: d - 1]]), dtype=np.int64)


def fa_spread(k: int, d: int) -> np.ndarray:
    """``(k*d, d)`` int64: row ``b`` holds the base classifiers that use bucket ``b``.

    Classifier ``j`` trains on buckets ``(j - s) mod k*d``; every row and every classifier
    appears ``d`` times in total.
    """
    shifts = fa_shifts(k, d)
    n = k * d
    return (np.arange(n, dtype=np.int64)[:, None] + shifts[None, :]) % n


def fa_bucket_ids(X, y=None, *, k: int, d: int) -> np.ndarray:
    """Finite Aggregation: the bucket (of ``k * d``) of each sample, ``partition_ids`` with
    ``k * d`` parts, so with ``d = 1`` the buckets are DPA's parts."""
    k = check_int(k, "k", "fa_bucket_ids", low=1)
    d = check_int(d, "d", "fa_bucket_ids", low=1)
    return partition_ids(X, y, k=k * d)


def fa_sample_classifiers(bucket_ids, *, k: int, d: int) -> np.ndarray:
    """``(n, d)`` int64: the base classifiers that train on each sample, ``(bucket + s) mod
    k*d`` for ``s`` in ``fa_shifts(k, d)``. A change to a sample touches only these
    (and, for a modification, those of its new bucket)."""
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
