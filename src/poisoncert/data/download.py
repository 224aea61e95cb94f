"""Downloading a data set's official files, only when asked (``download=True``).

Each file is streamed to a temporary file beside its destination, checked against its known
digests, then renamed into place (``os.replace``), so that an interrupted or failed download
never leaves a partial file under the real name. Mirrors are tried in order; when all fail,
:class:`DownloadError` lists each URL with its error and says where to put the file by hand.
"""

from __future__ import annotations

import http.client
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from poisoncert.data.checksums import read_file, verify
from poisoncert.data.errors import ChecksumError, DataFormatError, DownloadError
from poisoncert.data.paths import ENV_VAR
from poisoncert.data.registry import DatasetSpec, KnownFile

__all__ = ["TIMEOUT_S", "download_dataset", "download_file"]

log = logging.getLogger(__name__)

#: Seconds a connection or a read may stall before a mirror is given up.
TIMEOUT_S = 30.0

# Indirection so that tests can replace the network (``monkeypatch.setattr``).
_urlopen = urllib.request.urlopen

_CHUNK = 1 << 20


def download_dataset(spec: DatasetSpec, folder: Path) -> None:
    """Fetch every file of ``spec`` that ``folder`` lacks (IDX: ``.gz``; CIFAR: the archive)."""
    if spec.kind == "cifar":
        known_files = [spec.files["archive"]]
    else:
        known_files = list(spec.files.values())
    names = [k.name if k.name.endswith(".tar.gz") else k.name + ".gz" for k in known_files]
    created = _missing_folders(folder)
    for known, name in zip(known_files, names, strict=True):
        dest = folder / name
        if dest.is_file() or (spec.kind == "idx" and (folder / known.name).is_file()):
            continue
        try:
            download_file(known, dest)
        except DownloadError as exc:
            _remove_if_empty(created)
            if len(names) == 1:
                raise
            raise DownloadError(f"{exc}\n{spec.title} needs all of {', '.join(names)} there."
                                ) from None


def _missing_folders(folder: Path) -> list[Path]:
    """The folders of ``folder``'s path that do not exist yet, deepest first."""
    out = []
    p = Path(folder).absolute()
    while not p.exists() and p != p.parent:
        out.append(p)
        p = p.parent
    return out


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created, deepest first, while they are empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def download_file(known: KnownFile, dest: Path, *, timeout: float | None = None) -> Path:
    """Download ``known`` to ``dest`` atomically, trying each of its URLs; verify it."""
    timeout = TIMEOUT_S if timeout is None else timeout
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"Cannot create {dest.parent} to download into: {exc}") from None
    failures = []
    for url in known.urls:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part",
                                        dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s to %s", url, dest)
            with os.fdopen(fd, "wb") as out, _urlopen(url, timeout=timeout) as response:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
            # IDX files are also accepted by their decompressed content (a recompressing
            # mirror); an archive is only hashed.
            verify(known, read_file(tmp, decompress=bool(known.content_sha256)))
            os.replace(tmp, dest)
            return dest
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reason = str(exc) if isinstance(exc, (ChecksumError, DataFormatError)) else repr(exc)
            failures.append(f"  {url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    tried = "\n".join(failures) if failures else "  (no URL is known for this file)"
    raise DownloadError(
        f"Could not download {dest.name}. Tried:\n{tried}\n"
        f"Download it by hand from one of these URLs and put it in {dest.parent}, or put it "
        f"in a folder that you name with data_dir (CLI: --data.data_dir) or ${ENV_VAR}."
    )
