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

__all__ = ["IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC", "looks_like_idx", "parse_idx", "read_idx",
           "read_idx_file"]

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
    raw = read_idx_file(Path(path))
    return parse_idx(raw.data, name=str(path), magic=magic)


def read_idx_file(path: Path):
    """``checksums.read_file`` of an IDX file, refused before it is read when the size its
    header declares does not fit in memory (``resources.ResourceError``), and, gzipped, the
    moment its content grows beyond that size (a small ``.gz`` of zeros decompresses to
    gigabytes): the bytes held never exceed what the header declares."""
    from poisoncert import resources

    path = Path(path)
    head, gzipped = _head(path)
    size = path.stat().st_size
    declared = None
    if len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_DTYPES \
            and len(head) >= 4 + 4 * head[3]:
        ndim = head[3]
        shape = [int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
        declared = 4 + 4 * ndim + math.prod(shape) * _IDX_DTYPES[head[2]].itemsize
    need = declared if gzipped and declared is not None else size
    avail = resources.shortfall(need)
    if avail is not None:
        what = (f"its header declares {' x '.join(map(str, shape))} values"
                if declared is not None else "it holds")
        raise resources.ResourceError(
            f"{path} does not fit in memory: {what}, {resources.format_bytes(need)}; "
            f"{resources.available_words(*avail)}.")
    if not gzipped:
        return read_file(path)
    return read_file(path, max_size=declared,
                     declared=None if declared is None else "its IDX header declares")


def looks_like_idx(path) -> bool:
    """Whether ``path`` starts with an IDX magic number (after gunzip), from its first bytes
    alone: a file that does not is no IDX file, whatever it holds; one that does may still be
    damaged (``read_idx`` names that). A gzip file too damaged to show its first bytes counts
    as one (``read_idx`` names the damage)."""
    head, gzipped = _head(Path(path))
    if gzipped and not head:
        return True
    return len(head) >= 4 and head[0] == 0 and head[1] == 0 and head[2] in _IDX_DTYPES


def _head(path: Path) -> tuple[bytes, bool]:
    """The first bytes of the content of ``path`` (decompressed when it is gzip: enough for
    any IDX header) and whether it is gzip."""
    import zlib

    with open(path, "rb") as f:
        raw = f.read(1 << 16)
    if raw[:2] != b"\x1f\x8b":
        return raw[:1024], False
    try:
        return zlib.decompressobj(wbits=31).decompress(raw, 1024), True
    except zlib.error:
        return b"", True  # read_file names the corruption
