"""The loaded data set: one frozen record of arrays, classes and provenance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "SourceFile"]


@dataclass(frozen=True)
class SourceFile:
    """A file a data set was read from.

    ``sha256`` is the digest of the file as stored on disk; ``verified`` says how it was
    checked: ``"sha256: official"``, ``"sha256 of content: ..."`` (a recompressed copy whose
    decompressed bytes are the official ones), ``"md5: official"``, ``"not verified"``
    (``verify=False``, or a user's ``.npz``) or ``"bundled with scikit-learn X"``.
    """

    path: str
    sha256: str
    verified: str


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test split ready for training.

    ``x_train``/``x_test`` are float32 in [0, 1], shaped (N, C, H, W) for images and (N, F)
    for tabular data; ``y_train``/``y_test`` are int64 labels relabelled to ``0 .. K-1``, label
    ``k`` standing for the original class id ``classes[k]`` (named ``class_names[k]``).
    ``source`` lists the files read, with their SHA-256 and how each was verified.

    The record is frozen (attributes cannot be rebound) but the arrays are ordinary, writable
    NumPy arrays: copy before changing them in place if the data set is shared.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    source: tuple[SourceFile, ...] = ()

    def __post_init__(self) -> None:
        k = len(self.classes)
        if len(self.class_names) != k:
            raise ValueError(
                f"Dataset {self.name!r}: {len(self.class_names)} class names for {k} classes."
            )
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim < 2:
                raise ValueError(
                    f"Dataset {self.name!r}: x_{split} must be a float32 array of shape (N, ...)."
                )
            if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.shape != x.shape[:1]:
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} must be an int64 array of shape "
                    f"({len(x)},)."
                )
            if len(y) and (y.min() < 0 or y.max() >= k):
                raise ValueError(
                    f"Dataset {self.name!r}: y_{split} must hold labels in [0, {k - 1}]."
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"Dataset {self.name!r}: train inputs {self.x_train.shape[1:]} and test inputs "
                f"{self.x_test.shape[1:]} differ in shape."
            )

    @property
    def n_classes(self) -> int:
        """Number of classes K (labels are 0 .. K-1)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: (C, H, W) for images, (F,) for tabular data."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"input_shape={self.input_shape}, classes={self.classes})"
        )
