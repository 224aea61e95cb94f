"""The data of an experiment split into the known-clean ``D^c`` and the attackable ``D^p``.

``split_data(cfg.data)`` loads the data set (``poisoncert.data``), deskews it when asked,
keeps the first ``test_limit`` test points and chooses ``D^c`` (none, a random subset, given
indices, or the poisoned classes' complement); ``DataSplit`` holds the arrays and the split,
``DataSummary`` what the run's manifest records about them. ``subset_plan(selection, data)``
checks the selection against ``n = |D^p|`` and gives the ``selection.SubsetPlan`` of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poisoncert import selection
from poisoncert.config import ConfigError, DataConfig, SelectionConfig, config_error
from poisoncert.runs import array_checksum

__all__ = ["DataSplit", "DataSummary", "split_data", "subset_plan"]


@dataclass(frozen=True)
class DataSummary:
    """What a run records about its data (``manifest.json``'s ``data``).

    ``sources`` are the files read (``poisoncert.data.SourceFile``); ``sha256_arrays`` is the
    checksum of the arrays as loaded (before deskewing; ``runs.array_checksum``), which a
    resumed run must match; ``poisoned_labels`` the labels of ``data.poisoned_classes``.
    """

    name: str
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    n_train: int
    n_clean: int
    n: int
    n_test: int
    n_classes: int
    input_shape: tuple[int, ...]
    sources: tuple
    sha256_arrays: str
    deskew: bool = False
    poisoned_labels: tuple[int, ...] | None = None
    edits: dict | None = None

    def manifest(self) -> dict:
        """The manifest's ``data`` entry (JSON-ready)."""
        out = {"name": self.name, "classes": list(self.classes),
               "class_names": list(self.class_names), "n_train": self.n_train,
               "n_clean": self.n_clean, "n": self.n, "n_test": self.n_test,
               "n_classes": self.n_classes, "input_shape": list(self.input_shape),
               "sources": [{"path": s.path, "sha256": s.sha256, "verified": s.verified}
                           for s in self.sources],
               "sha256_arrays": self.sha256_arrays}
        if self.deskew:
            out["deskew"] = True
        if self.poisoned_labels is not None:
            out["poisoned_labels"] = list(self.poisoned_labels)
        if self.edits is not None:
            out["edits"] = dict(self.edits)
        return out


@dataclass(frozen=True, eq=False)
class DataSplit:
    """The arrays of an experiment and its split of the training set.

    ``clean_idx`` (``D^c``) and ``poison_idx`` (``D^p``) are sorted training-set indices;
    ``n = |D^p|`` is the ``n`` of the bounds. ``x_test``/``y_test`` honour
    ``data.test_limit``; ``poisoned_labels`` are the labels of the poisoned classes (case 3).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    clean_idx: np.ndarray
    poison_idx: np.ndarray
    summary: DataSummary
    poisoned_labels: tuple[int, ...] | None = None

    @property
    def n(self) -> int:
        """``|D^p|``."""
        return int(self.poison_idx.shape[0])

    def warn_missing_classes(self) -> None:
        """Warn (``warnings.warn``) when some classes have no training sample at all: no
        base classifier can predict them, so none of their test points is ever right."""
        count = np.bincount(self.y_train, minlength=self.n_classes)
        gone = [f"{c} ({n})" if str(n) != str(c) else str(c)
                for c, n, k in zip(self.summary.classes, self.summary.class_names, count,
                                   strict=True) if k == 0]
        if gone:
            import warnings

            warnings.warn(f"{len(gone)} of the {self.n_classes} classes of "
                          f"{self.summary.name} have no training sample: {', '.join(gone)}. "
                          "No base classifier can predict them, so their test points are "
                          "never predicted correctly.", stacklevel=2)


def split_data(d: DataConfig) -> DataSplit:
    """Load ``d`` and choose ``D^c``.

    Raises a ``ConfigError`` (a ``ValueError``) naming the key when the data contradicts the
    config (clean indices out of range, a ``D^c`` covering everything, ...).
    """
    from poisoncert._validation import named_as
    from poisoncert.data import load_dataset

    with named_as("the config", classes="data.classes", data_dir="data.data_dir",
                  download="data.download", name="data.name"):
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
        poisoned_labels = tuple(sorted(ds.classes.index(c) for c in d.poisoned_classes))
        clean = np.flatnonzero(~np.isin(ds.y_train, poisoned_labels)).astype(np.int64)
    elif d.clean_indices is not None:
        clean = np.asarray(d.clean_indices, dtype=np.int64)
        if clean.size and clean.max() >= n_train:
            raise config_error("data.clean_indices", f"indices in the range [0, {n_train - 1}] "
                               f"({d.name} has {n_train} training samples)", int(clean.max()))
    else:
        n_clean = d.n_clean if d.clean_fraction is None else int(round(d.clean_fraction * n_train))
        if n_clean >= n_train:
            key = "n_clean" if d.clean_fraction is None else "clean_fraction"
            raise config_error(f"data.{key}", f"less than the {n_train} training samples of "
                               f"{d.name} (D^p must not be empty)", getattr(d, key))
        rng = selection.stream_rng(d.clean_seed, selection.Stream.CLEAN_SPLIT)
        clean = rng.permutation(n_train)[:n_clean]
    clean = np.sort(clean)
    mask = np.ones(n_train, dtype=bool)
    mask[clean] = False
    poison = np.flatnonzero(mask).astype(np.int64)
    if poison.size == 0:
        raise ConfigError("The known-clean part D^c covers the whole training set: D^p "
                          "(the attackable part) must not be empty.")
    summary = DataSummary(
        name=ds.name, classes=tuple(ds.classes), class_names=tuple(ds.class_names),
        n_train=n_train, n_clean=int(clean.size), n=int(poison.size), n_test=int(len(y_test)),
        n_classes=ds.n_classes, input_shape=tuple(ds.input_shape), sources=tuple(ds.source),
        sha256_arrays=array_checksum(ds.x_train, ds.y_train, ds.x_test[:len(y_test)], y_test),
        deskew=d.deskew, poisoned_labels=poisoned_labels)
    split = DataSplit(x_train=x_train, y_train=ds.y_train, x_test=x_test, y_test=y_test,
                      n_classes=ds.n_classes, clean_idx=clean, poison_idx=poison,
                      summary=summary, poisoned_labels=poisoned_labels)
    if d.edits is not None:
        split = _edited(split, d)
    return split


def _edited(split: DataSplit, d: DataConfig, edits=None) -> DataSplit:
    """``split`` after the config's ``data.edits`` (``experiment.edits``; ``edits``: that
    file's content, when already read); the manifest records the edits, and the array checksum
    covers them."""
    import dataclasses
    import hashlib

    from poisoncert.experiment.edits import apply_edits, load_edits

    if edits is None:
        edits = load_edits(d.edits)
    try:
        new, _ = apply_edits(split, edits, deskew_added=d.deskew)
    except ValueError as e:
        raise config_error("data.edits", f"edits that fit {split.summary.name} ({e})",
                           d.edits) from None
    digest = edits.digest()
    s = new.summary
    summary = dataclasses.replace(s, sha256_arrays=hashlib.sha256(
        (s.sha256_arrays + digest).encode()).hexdigest(), edits={
            "path": d.edits, "sha256": digest, "removed": edits.n_removed,
            "relabelled": edits.n_relabelled, "added": edits.n_added})
    return dataclasses.replace(new, summary=summary)


def subset_plan(s: SelectionConfig, data: DataSplit, *, part_of: np.ndarray | None = None
                ) -> selection.SubsetPlan:
    """The run's sub-datasets: ``D^c`` plus a selection from ``D^p`` by ``s`` (a
    ``ConfigError`` naming ``selection.ns`` when it does not fit ``n = |D^p|``); the
    partition scheme's parts and Finite Aggregation's buckets come from a hash of each ``D^p``
    sample and its label (``part_of``: those hashes when already known)."""
    s.size(data.n)
    if s.scheme in selection.NEAREST_NEIGHBOURS:
        raise ValueError(f"The {s.scheme} scheme has no sub-datasets.")
    if s.scheme in selection.BUCKET_SCHEMES and part_of is None:
        p = data.poison_idx
        part_of = selection.partition_ids(data.x_train[p], data.y_train[p],
                                          k=s.n_classifiers)
    if s.scheme == selection.FINITE_AGGREGATION:
        return selection.SubsetPlan(s.scheme, data.poison_idx, data.clean_idx,
                                    part_of=part_of, k=s.k, d=s.d)
    return selection.SubsetPlan(s.scheme, data.poison_idx, data.clean_idx, ns=s.ns, p=s.p,
                                part_of=part_of if s.scheme == selection.PARTITION else None)
