"""Data sets for poisoncert (numpy only; never imports torch).

>>> from poisoncert.data import load_dataset
>>> ds = load_dataset("mnist17")            # doctest: +SKIP
>>> ds.x_train.shape, ds.classes            # doctest: +SKIP
((13007, 1, 28, 28), (1, 7))

Named data sets: ``mnist``, ``mnist17``, ``fashion_mnist``, ``cifar10``, ``digits`` (bundled
with scikit-learn) and ``npz:<path>``. Files are looked for in the ``data_dir`` argument,
``$POISONCERT_DATA``, ``./data``, ``shared/data`` beside a parent folder, ``~/.cache/poisoncert``
and (Fashion-MNIST) ``/usr/share/datasets``; see :mod:`poisoncert.data.paths`. Every file is
checked against known SHA-256 digests (:mod:`poisoncert.data.registry`).

Modules: ``idx`` (IDX parsing), ``cifar`` (CIFAR-10 binary batches), ``registry`` (known
files, digests, URLs), ``paths`` (search order), ``checksums``, ``download``, ``loaders``.
"""

from __future__ import annotations

from poisoncert.data.dataset import Dataset, SourceFile
from poisoncert.data.errors import (
    ChecksumError,
    DataError,
    DataFormatError,
    DatasetNotFoundError,
    DownloadError,
)
from poisoncert.data.idx import parse_idx, read_idx
from poisoncert.data.loaders import load_dataset
from poisoncert.data.paths import ENV_VAR, search_roots
from poisoncert.data.registry import list_datasets

__all__ = [
    "ENV_VAR",
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "Dataset",
    "DatasetNotFoundError",
    "DownloadError",
    "SourceFile",
    "list_datasets",
    "load_dataset",
    "parse_idx",
    "read_idx",
    "search_roots",
]
