"""What a ``.npy`` array (alone or inside a ``.npz``) declares in its header, and a refusal of
one that would not fit in memory, before any of its data is read: a few megabytes of
compressed zeros, or a cut file, can declare terabytes (``predict``'s inputs, ``npz:`` data
sets)."""

from __future__ import annotations

from math import prod
from pathlib import Path

import numpy as np

__all__ = ["check_declared", "npy_header"]


def npy_header(f) -> tuple[tuple[int, ...], np.dtype] | tuple[()]:
    """The shape and dtype the ``.npy`` stream ``f`` declares (read from its start); ``()``
    where it has no header numpy's public readers parse (``np.load`` then names the
    problem)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}[version]
        shape, _, dtype = read(f)
    except (ValueError, KeyError, EOFError, OSError):
        return ()
    return tuple(int(s) for s in shape), np.dtype(dtype)


def check_declared(path: Path, what: str, shape: tuple[int, ...] | None = None,
                   dtype: np.dtype | None = None) -> None:
    """Refuse (``resources.ResourceError``) the array ``what`` of ``path`` when its declared
    ``shape`` and ``dtype``, with the copies using it makes (the array, a copy and float32
    values: ``2 * itemsize + 4`` bytes a value), exceed the planned share of the available
    memory. Nothing is checked without a shape (no header read)."""
    if shape is None:
        return
    from poisoncert import resources

    need = prod(shape) * (2 * dtype.itemsize + 4)
    avail = resources.shortfall(need)
    if avail is not None:
        raise resources.ResourceError(
            f"{path}: {what} of shape {shape} ({dtype}) does not fit in memory: using it needs "
            f"about {resources.format_bytes(need)} (the array, a copy and float32 values); "
            f"{resources.available_words(*avail)}.")
