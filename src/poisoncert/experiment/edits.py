"""Changes to a training set (samples removed, relabelled, added) and what they touch.

An ``Edits`` record lists the changes against one training set (indices as loaded): the edited
set keeps the other samples in their order, with relabelled samples in place, and appends the
added ones. The known-clean part ``D^c`` keeps its samples that were not removed; added samples
join ``D^p``. ``apply_edits`` makes the edited ``DataSplit`` (``split_data`` applies a config's
``data.edits`` file this way) and says where each row came from.

``changed_classifiers`` compares each base classifier's training sequence before and after: a
classifier is retrained only if the samples it trains on (their content and label, in order)
or its draw from ``D^p`` changed. Classifier ``i`` depends only on that sequence, its seed and
the config (``training.train_predict``'s determinism), so the others are unchanged bit for bit.
For the partition and finite_aggregation schemes only the classifiers whose buckets changed
are touched; for bagging, a relabelling touches the classifiers whose draw holds the sample,
while a removal or insertion changes ``n`` and with it every draw. A relabelling to the label
a sample already has touches nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisoncert import selection
from poisoncert._validation import param_error
from poisoncert.config import EditsPath

__all__ = ["EditPlan", "Edits", "apply_edits", "changed_classifiers", "edited_bucket_ids",
           "load_edits", "relabel_changes"]

_KEYS = ("remove", "relabel_index", "relabel_label", "add_x", "add_y")


@dataclass(frozen=True, eq=False)
class Edits:
    """Changes to a training set of ``n_train`` samples (indices as loaded, labels ``0..K-1``).

    ``remove``: indices of removed samples; ``relabel_index`` / ``relabel_label``: samples given
    a new label; ``add_x`` / ``add_y``: samples appended (inputs preprocessed like the loaded
    ones: floats in [0, 1], deskewed by ``split_data`` when the config asks). An index may
    appear once, in ``remove`` or in ``relabel_index``.
    """

    remove: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    relabel_index: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    relabel_label: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    add_x: np.ndarray | None = None
    add_y: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        for name in ("remove", "relabel_index", "relabel_label", "add_y"):
            a = np.asarray(getattr(self, name))
            if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
                raise param_error(name, "Edits", "a 1-d int array", f"an array of shape "
                                  f"{a.shape} and dtype {a.dtype}")
            object.__setattr__(self, name, a.astype(np.int64))
        if len(self.relabel_index) != len(self.relabel_label):
            raise param_error("relabel_label", "Edits", f"one label per relabelled index "
                              f"({len(self.relabel_index)})", f"{len(self.relabel_label)} labels")
        n_add = len(self.add_y)
        if self.add_x is None:
            if n_add:
                raise param_error("add_x", "Edits", f"the {n_add} added samples", None)
        else:
            x = np.asarray(self.add_x)
            if len(x) != n_add or (x.size and not np.issubdtype(x.dtype, np.floating)):
                raise param_error("add_x", "Edits", f"a float array of {n_add} samples (one per "
                                  "add_y label)", f"an array of shape {x.shape} and dtype "
                                  f"{x.dtype}")
        touched = np.concatenate([self.remove, self.relabel_index])
        if len(np.unique(touched)) != len(touched):
            raise param_error("remove", "Edits", "distinct indices (each sample removed or "
                              "relabelled once)", "repeated indices")

    @property
    def n_removed(self) -> int:
        return int(len(self.remove))

    @property
    def n_relabelled(self) -> int:
        return int(len(self.relabel_index))

    @property
    def n_added(self) -> int:
        return int(len(self.add_y))

    def is_empty(self) -> bool:
        return not (self.n_removed or self.n_relabelled or self.n_added)

    def check(self, n_train: int, n_classes: int, input_shape: tuple[int, ...],
              where: str = "Edits") -> None:
        """Indices in ``[0, n_train)``, labels in ``[0, n_classes)``, added inputs of the
        training inputs' shape (a ``ValueError`` of the project's shape)."""
        for name in ("remove", "relabel_index"):
            a = getattr(self, name)
            if a.size and (a.min() < 0 or a.max() >= n_train):
                bad = int(a[(a < 0) | (a >= n_train)][0])
                raise param_error(name, where, f"training-set indices in the range "
                                  f"[0, {n_train - 1}]", bad)
        for name in ("relabel_label", "add_y"):
            a = getattr(self, name)
            if a.size and (a.min() < 0 or a.max() >= n_classes):
                bad = int(a[(a < 0) | (a >= n_classes)][0])
                raise param_error(name, where, f"labels in the range [0, {n_classes - 1}]", bad)
        if self.n_added and tuple(np.asarray(self.add_x).shape[1:]) != tuple(input_shape):
            raise param_error("add_x", where, f"samples of shape {tuple(input_shape)}",
                              f"samples of shape {tuple(np.asarray(self.add_x).shape[1:])}")

    def arrays(self, input_shape=()) -> dict[str, np.ndarray]:
        add_x = (np.zeros((0, *input_shape), np.float32) if self.add_x is None
                 else np.ascontiguousarray(self.add_x))
        return {"remove": self.remove, "relabel_index": self.relabel_index,
                "relabel_label": self.relabel_label, "add_x": add_x, "add_y": self.add_y}

    def digest(self) -> str:
        """SHA-256 of the changes (dtypes, shapes and bytes)."""
        h = hashlib.sha256()
        for k, a in self.arrays().items():
            a = np.ascontiguousarray(a)
            h.update(f"{k}{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()

    def save(self, path: str | Path, input_shape=()) -> None:
        from poisoncert.runs import save_npz

        save_npz(path, **self.arrays(input_shape))

    def then(self, later: Edits, n_train: int) -> Edits:
        """These edits followed by ``later`` (whose indices refer to the set these edits
        make), as one set of edits against the original ``n_train`` samples."""
        kept = np.setdiff1d(np.arange(n_train), self.remove)      # edited row -> original
        n_kept = len(kept)
        label = dict(zip(self.relabel_index.tolist(), self.relabel_label.tolist(), strict=True))
        add_y = self.add_y.copy()
        add_keep = np.ones(self.n_added, dtype=bool)
        remove = list(self.remove.tolist())
        for j in later.remove.tolist():
            if j < n_kept:
                remove.append(int(kept[j]))
                label.pop(int(kept[j]), None)
            else:
                add_keep[j - n_kept] = False
        for j, c in zip(later.relabel_index.tolist(), later.relabel_label.tolist(), strict=True):
            if j < n_kept:
                label[int(kept[j])] = int(c)
            else:
                add_y[j - n_kept] = c
        xs = [] if self.add_x is None else [np.asarray(self.add_x)[add_keep]]
        if later.add_x is not None:
            xs.append(np.asarray(later.add_x))
        add_x = np.concatenate(xs) if xs else None
        idx = np.array(sorted(label), dtype=np.int64)
        return Edits(remove=np.sort(np.array(remove, dtype=np.int64)), relabel_index=idx,
                     relabel_label=np.array([label[i] for i in idx.tolist()], dtype=np.int64),
                     add_x=add_x, add_y=np.concatenate([add_y[add_keep], later.add_y]))


def load_edits(path: str | Path, where: str = "data.edits") -> Edits:
    """Read an edits ``.npz`` (keys ``remove``, ``relabel_index``, ``relabel_label``,
    ``add_x``, ``add_y``; any may be missing). An ``EditsPath`` is read from its ``file``."""
    path = path.file if isinstance(path, EditsPath) else path
    if Path(path).is_file() and not zipfile.is_zipfile(path):  # np.load would try a pickle
        raise ValueError(f"The edits file '{path}' ({where}) is not a .npz archive (a zip of "
                         ".npy arrays, as Edits.save or numpy.savez writes it).")
    try:
        with np.load(path, allow_pickle=False) as z:
            unknown = sorted(set(z.files) - set(_KEYS))
            if unknown:
                raise ValueError(f"The edits file '{path}' holds unknown arrays {unknown}; it "
                                 f"may hold {', '.join(_KEYS)}.")
            a = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, ValueError) as e:
        if str(e).startswith("The edits file"):
            raise
        raise ValueError(f"The edits file '{path}' ({where}) is not a readable .npz archive "
                         f"({e}).") from None
    except OSError as e:
        from poisoncert.runlayout import EDITS

        moved = (f" (poisoncert update names a run's {EDITS} by the path it wrote it to; the "
                 "run reads the one in its own folder wherever it is moved, and a new run of "
                 "its config needs --data.edits naming where that file is now)"
                 if isinstance(e, FileNotFoundError) and Path(path).name == EDITS else "")
        raise ValueError(f"Cannot read the edits file '{path}' ({where}): "
                         f"{e.strerror or e}{moved}.") from None
    add_x = a.get("add_x")
    if add_x is not None and len(add_x) == 0:
        add_x = None
    return Edits(**{k: v for k, v in a.items() if k != "add_x"}, add_x=add_x)


@dataclass(frozen=True, eq=False)
class EditPlan:
    """An edited training set described against the one it came from.

    ``origin[j]``: the row of the old set that new row ``j`` is (same input and label), or
    ``-1`` for a row relabelled with another label or added. ``x_new`` / ``y_new`` hold the
    new rows' content where ``origin == -1`` (indexed by ``fresh``: new row ``j`` is
    ``x_new[fresh[j]]``).
    ``clean_idx`` / ``poison_idx``: the new ``D^c`` and ``D^p`` (new row indices).
    """

    origin: np.ndarray
    fresh: np.ndarray
    x_new: np.ndarray
    y_new: np.ndarray
    clean_idx: np.ndarray
    poison_idx: np.ndarray

    @property
    def n_train(self) -> int:
        return int(len(self.origin))


def relabel_changes(data, edits: Edits) -> np.ndarray:
    """Which of ``edits``' relabellings give a sample of ``data`` (a ``DataSplit``) another
    label than it has (a boolean per relabelled index); the others change nothing."""
    return np.asarray(data.y_train)[edits.relabel_index] != edits.relabel_label


def edit_plan(data, edits: Edits) -> EditPlan:
    """``edits`` applied to ``data`` (a ``DataSplit``), without copying its arrays."""
    n_train = len(data.y_train)
    edits.check(n_train, data.n_classes, tuple(data.x_train.shape[1:]))
    keep = np.ones(n_train, dtype=bool)
    keep[edits.remove] = False
    kept = np.flatnonzero(keep)
    origin = np.concatenate([kept, np.full(edits.n_added, -1, dtype=np.int64)])
    new_pos = np.full(n_train, -1, dtype=np.int64)
    new_pos[kept] = np.arange(len(kept))
    # a sample relabelled with the label it has is unchanged: its row keeps its origin, so no
    # classifier retrains for it and a hash partition keeps its bucket
    moved = relabel_changes(data, edits)
    rel_index, rel_label = edits.relabel_index[moved], edits.relabel_label[moved]
    is_clean = np.zeros(n_train, dtype=bool)
    is_clean[data.clean_idx] = True
    poisoned = getattr(data, "poisoned_labels", None)
    if poisoned is not None:  # case 3: D^c is the clean classes' samples
        bad = is_clean[rel_index] & np.isin(rel_label, poisoned)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"Sample {int(rel_index[i])} is in D^c, the samples of the clean "
                             f"classes (data.poisoned_classes), and cannot be relabelled to "
                             f"the poisoned class index {int(rel_label[i])}: D^c stays as "
                             "chosen, and phase 2 would learn it as a clean class. Remove it "
                             "and add it back with that label instead.")
    relabelled = new_pos[rel_index]
    origin[relabelled] = -1
    fresh = np.full(len(origin), -1, dtype=np.int64)
    n_rel = len(rel_index)
    fresh[relabelled] = np.arange(n_rel)
    fresh[len(kept):] = n_rel + np.arange(edits.n_added)
    x_parts = [data.x_train[rel_index]]
    if edits.n_added:
        x_parts.append(np.asarray(edits.add_x, dtype=data.x_train.dtype))
    x_new = np.concatenate(x_parts) if x_parts else data.x_train[:0]
    y_new = np.concatenate([rel_label, edits.add_y]).astype(data.y_train.dtype)
    clean_new = np.flatnonzero(np.concatenate([is_clean[kept],
                                               np.zeros(edits.n_added, dtype=bool)]))
    poison_new = np.setdiff1d(np.arange(len(origin)), clean_new)
    return EditPlan(origin=origin, fresh=fresh, x_new=x_new, y_new=y_new,
                    clean_idx=clean_new.astype(np.int64), poison_idx=poison_new.astype(np.int64))


def apply_edits(data, edits: Edits, *, deskew_added: bool = False):
    """The ``DataSplit`` of ``data`` after ``edits`` and its ``EditPlan``. Added inputs are
    deskewed when ``deskew_added`` (a config with ``data.deskew``)."""
    if deskew_added and edits.n_added:
        from poisoncert.data.transforms import deskew

        edits = dataclasses.replace(edits, add_x=deskew(np.asarray(edits.add_x)))
    ep = edit_plan(data, edits)
    x = data.x_train[np.maximum(ep.origin, 0)]
    y = data.y_train[np.maximum(ep.origin, 0)].copy()
    f = ep.origin < 0
    x[f] = ep.x_new[ep.fresh[f]]
    y[f] = ep.y_new[ep.fresh[f]]
    summary = dataclasses.replace(data.summary, n_train=ep.n_train,
                                  n_clean=int(len(ep.clean_idx)), n=int(len(ep.poison_idx)))
    new = dataclasses.replace(data, x_train=x, y_train=y, clean_idx=ep.clean_idx,
                              poison_idx=ep.poison_idx, summary=summary)
    return new, ep


def edited_bucket_ids(old_part_of: np.ndarray, data, ep: EditPlan, n_buckets: int
                      ) -> np.ndarray:
    """The bucket of every new ``D^p`` sample: the old one for an unchanged sample, the hash
    (``selection.partition_ids``) of the new content for a relabelled or added one."""
    old_pos = np.full(len(data.y_train), -1, dtype=np.int64)
    old_pos[data.poison_idx] = np.arange(len(data.poison_idx))
    src = ep.origin[ep.poison_idx]
    out = np.empty(len(ep.poison_idx), dtype=np.int64)
    same = src >= 0  # an unchanged D^p sample (a kept D^c sample stays in D^c)
    out[same] = old_part_of[old_pos[src[same]]]
    if np.any(~same):
        f = ep.fresh[ep.poison_idx[~same]]
        out[~same] = selection.partition_ids(ep.x_new[f], ep.y_new[f], k=n_buckets)
    return out


def changed_classifiers(old_subsets: list[np.ndarray], new_subsets: list[np.ndarray],
                        ep: EditPlan) -> np.ndarray:
    """Classifiers whose training sequence differs: new subset ``i`` (new row indices) is not
    old subset ``i`` row for row, or holds a relabelled or added row."""
    out = []
    for i, (a, b) in enumerate(zip(old_subsets, new_subsets, strict=True)):
        src = ep.origin[b]
        if len(a) != len(b) or np.any(src < 0) or not np.array_equal(src, a):
            out.append(i)
    return np.asarray(out, dtype=np.int64)
