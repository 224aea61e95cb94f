"""Errors raised by :mod:`poisoncert.data`.

All derive from :class:`DataError`, so a caller (the CLI) can catch one type and print one
line; each also derives from the builtin that describes it (``FileNotFoundError``,
``ValueError``, ``OSError``), so ordinary ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "DataError",
    "DataFormatError",
    "DatasetNotFoundError",
    "DownloadError",
]


class DataError(Exception):
    """Base class of every error raised while locating, checking or reading a data set."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The data set's files are in none of the places searched (the message lists them)."""


class DataFormatError(DataError, ValueError):
    """A file exists but is not what it should be: bad magic number, truncated, bad arrays."""


class ChecksumError(DataError, ValueError):
    """A file's SHA-256 matches none of the known digests for it (message: file, expected, got)."""


class DownloadError(DataError, OSError):
    """Every URL for a file failed (the message lists each URL, its error, and where to put
    the file by hand)."""
