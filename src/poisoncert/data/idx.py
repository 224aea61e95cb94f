"""IDX files (MNIST, Fashion-MNIST): parsing with ``np.frombuffer``, gzipped or plain.

Format (as published with the MNIST database by LeCun et al.): a 4-byte magic number
``0x00 0x00 TYPE NDIM``, then ``NDIM`` big-endian uint32 dimensions, then the data in row-major
order. MNIST images are ``0x00000803`` (uint8, 3 dimensions: N x 28 x 28), labels
``0x00000801`` (uint8, N).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from poisoncert.data.checksums import read_file
from poisoncert.data.errors import DataFormatError

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "parse_idx", "read_idx"]

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data, *, name: str = "<IDX data>", magic: int | None = None) -> np.ndarray:
    """Parse IDX bytes into an array (a zero-copy view for uint8 data).

    ``magic``, when given, is the magic number the file must have (``IDX_IMAGES_MAGIC``).
    Raises :class:`DataFormatError` naming ``name`` on a bad magic number, a header or data
    shorter than the header declares (truncation), or trailing bytes.
    """
    n = len(data)
    if n < 4:
        raise DataFormatError(
            f"{name} is not an IDX file: it has {n} bytes, fewer than the 4 of a magic number."
        )
    found = int.from_bytes(bytes(data[:4]), "big")
    code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or code not in _IDX_DTYPES:
        raise DataFormatError(
            f"{name} is not an IDX file: bad magic number 0x{found:08X} (an IDX magic number "
            f"is 0x0000TTDD, e.g. 0x{IDX_IMAGES_MAGIC:08X} for images and "
            f"0x{IDX_LABELS_MAGIC:08X} for labels)."
        )
    if magic is not None and found != magic:
        raise DataFormatError(
            f"{name} has magic number 0x{found:08X}; expected 0x{magic:08X}. Are the image and "
            "label files swapped, or is this another kind of IDX file?"
        )
    header = 4 + 4 * ndim
    if n < header:
        raise DataFormatError(
            f"{name} is truncated: its header declares {ndim} dimensions ({header} bytes) "
            f"but the file has {n} bytes."
        )
    shape = tuple(int.from_bytes(bytes(data[4 + 4 * i:8 + 4 * i]), "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    count = math.prod(shape)
    expected = header + count * dtype.itemsize
    if n != expected:
        dims = " x ".join(str(s) for s in shape) or "scalar"
        what = "truncated" if n < expected else "longer than its header declares"
        raise DataFormatError(
            f"{name} is {what}: the header declares {dims} values of {dtype.itemsize} "
            f"byte(s), {expected:,} bytes in all, but the data has {n:,} bytes."
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


def read_idx(path, *, magic: int | None = None) -> np.ndarray:
    """Read an IDX file, gzipped (detected by its magic bytes, whatever its name) or plain."""
    raw = read_file(Path(path))
    return parse_idx(raw.data, name=str(path), magic=magic)
