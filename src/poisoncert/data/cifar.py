"""CIFAR-10 "binary version": ``cifar-10-binary.tar.gz`` read in memory, or its extracted folder.

Each batch file is a sequence of 3,073-byte records: one label byte (0-9), then 3,072 pixel
bytes, 1,024 red, 1,024 green and 1,024 blue, each a row-major 32 x 32 plane, so that a record's
pixels reshape directly to (3, 32, 32) (CHW). ``data_batch_1.bin`` ... ``data_batch_5.bin``
hold the 50,000 training images, ``test_batch.bin`` the 10,000 test images, and
``batches.meta.txt`` the class names, one per line.

The archive is decompressed once into memory and its members are read as zero-copy views
(nothing is extracted to disk).
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poisoncert.data.checksums import checksum_error, md5_file, read_file, sha256_hex, verify
from poisoncert.data.errors import ChecksumError, DataFormatError
from poisoncert.data.registry import KnownFile

__all__ = [
    "ARCHIVE_NAME",
    "FOLDER_NAME",
    "RECORD_BYTES",
    "TEST_BATCH",
    "TRAIN_BATCHES",
    "parse_batch",
    "read_cifar10",
]

ARCHIVE_NAME = "cifar-10-binary.tar.gz"
FOLDER_NAME = "cifar-10-batches-bin"
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META_NAME = "batches.meta.txt"
RECORD_BYTES = 1 + 3 * 32 * 32


@dataclass
class CifarBatches:
    """Raw CIFAR-10 batches: (n, 3073) uint8 record arrays, and provenance."""

    train: list[np.ndarray]
    test: list[np.ndarray]
    class_names: tuple[str, ...] | None
    source: list[tuple[Path, str, str]] = field(default_factory=list)  # (path, sha256, how)


def parse_batch(data, *, name: str) -> np.ndarray:
    """View one batch's bytes as (n, 3073) uint8 records; refuse a partial record."""
    n = len(data)
    if n == 0 or n % RECORD_BYTES:
        raise DataFormatError(
            f"{name} is truncated or not a CIFAR-10 binary batch: {n:,} bytes is not a whole, "
            f"non-zero number of {RECORD_BYTES:,}-byte records (1 label byte + 3,072 pixel "
            "bytes)."
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    bad = records[:, 0] > 9
    if bad.any():
        i = int(np.argmax(bad))
        raise DataFormatError(
            f"{name} is not a CIFAR-10 batch: record {i} has label {int(records[i, 0])}, "
            "outside 0-9."
        )
    return records


def read_cifar10(location: Path, files: dict[str, KnownFile], *, verify_files: bool = True
                 ) -> CifarBatches:
    """Read the archive (``location`` is a ``.tar.gz`` file) or the folder of batch files."""
    if location.is_dir():
        return _read_folder(location, files, verify_files)
    return _read_archive(location, files, verify_files)


def _member_files(files: dict[str, KnownFile]) -> dict[str, KnownFile]:
    return {k.name: k for k in files.values() if k.name.endswith(".bin")}


def _read_folder(folder: Path, files: dict[str, KnownFile], verify_files: bool) -> CifarBatches:
    known = _member_files(files)
    out = CifarBatches([], [], None)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        path = folder / name
        raw = read_file(path, decompress=False)
        how = "not verified"
        if verify_files:
            try:
                how = verify(known[name], raw)
            except ChecksumError as exc:
                raise ChecksumError(
                    f"{exc} (The digests of batches extracted from the official archive are "
                    f"not recorded; put {ARCHIVE_NAME} itself in {folder.parent} to have it "
                    "checked.)"
                ) from None
        records = parse_batch(raw.data, name=str(path))
        (out.test if name == TEST_BATCH else out.train).append(records)
        out.source.append((path, raw.sha256, how))
    meta = folder / META_NAME
    if meta.is_file():
        out.class_names = _class_names(meta.read_bytes())
    return out


class _BufferReader(io.RawIOBase):
    """A read-only, seekable file over a buffer, without copying it (for ``tarfile``)."""

    def __init__(self, buf):
        self._view = memoryview(buf)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n is None or n < 0 else min(self._pos + n, len(self._view))
        data = bytes(self._view[self._pos:end])
        self._pos = max(self._pos, end)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _read_archive(path: Path, files: dict[str, KnownFile], verify_files: bool) -> CifarBatches:
    raw = read_file(path)
    if not raw.gzipped:
        raise DataFormatError(f"{path} is not a gzip file (a .tar.gz archive was expected).")
    view = memoryview(raw.data)
    members: dict[str, memoryview] = {}
    meta = None
    try:
        with tarfile.open(fileobj=_BufferReader(raw.data), mode="r:") as tar:
            for info in tar:
                base = info.name.rsplit("/", 1)[-1]
                if not info.isfile() or base not in (*TRAIN_BATCHES, TEST_BATCH, META_NAME):
                    continue
                end = info.offset_data + info.size
                if end > len(view):
                    raise DataFormatError(
                        f"{path} is truncated: member {info.name} needs {end:,} bytes of the "
                        f"archive, which has {len(view):,}."
                    )
                if base == META_NAME:
                    meta = bytes(view[info.offset_data:end])
                else:
                    members[base] = view[info.offset_data:end]
    except tarfile.TarError as exc:
        raise DataFormatError(f"{path} is not a readable tar archive ({exc}).") from None
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH) if n not in members]
    if missing:
        raise DataFormatError(
            f"{path} lacks the member(s) {', '.join(missing)} of the CIFAR-10 binary version "
            f"({FOLDER_NAME}/data_batch_1.bin ... test_batch.bin)."
        )
    how = "not verified"
    if verify_files:
        how = _verify_archive(path, raw.sha256, members, files)
    out = CifarBatches([], [], _class_names(meta) if meta else None)
    for name in TRAIN_BATCHES:
        out.train.append(parse_batch(members[name], name=f"{path}:{name}"))
    out.test.append(parse_batch(members[TEST_BATCH], name=f"{path}:{TEST_BATCH}"))
    out.source.append((path, raw.sha256, how))
    return out


def _verify_archive(path: Path, sha256: str, members: dict[str, memoryview],
                    files: dict[str, KnownFile]) -> str:
    archive = files["archive"]
    if sha256 in archive.sha256:
        return f"sha256: {archive.sha256[sha256]}"
    # A repacked archive of known batches: check each batch instead.
    known = _member_files(files)
    origins = set()
    for name, data in members.items():
        digest = sha256_hex(data)
        if digest not in known[name].sha256:
            break
        origins.add(known[name].sha256[digest])
    else:
        return f"sha256 of each batch: {'; '.join(sorted(origins))}"
    md5 = md5_file(path)
    if md5 in archive.md5:
        return f"md5: {archive.md5[md5]}"
    raise checksum_error(archive, path, sha256, None, md5)


def _class_names(meta: bytes) -> tuple[str, ...] | None:
    names = tuple(line.strip() for line in meta.decode("utf-8", "replace").splitlines())
    names = tuple(n for n in names if n)
    return names if len(names) == 10 else None
