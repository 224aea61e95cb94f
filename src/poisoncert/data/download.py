"""Downloading a data set's official files, only when asked (``download=True``).

Each file is streamed to a temporary file beside its destination, checked against its known
digests, then renamed into place (``os.replace``), so that an interrupted or failed download
never leaves a partial file under the real name. Mirrors are tried in order; when all fail,
:class:`DownloadError` lists each URL with its error and says where to put the file by hand.
A download says on stderr what it fetches from where, then its progress (MiB, rate, ETA where
the server gives the size): on a terminal one line redrawn every second, elsewhere (a log) a
line every ``PROGRESS_S`` seconds and one at the end (CIFAR-10's 163 MiB downloaded in
silence for minutes).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from poisoncert.data.checksums import read_file, verify
from poisoncert.data.errors import ChecksumError, DataFormatError, DownloadError
from poisoncert.data.paths import ENV_VAR
from poisoncert.data.registry import DatasetSpec, KnownFile
from poisoncert.rates import clock_text, rate_and_eta, speed_text

__all__ = ["PROGRESS_S", "TIMEOUT_S", "download_dataset", "download_file", "quiet_downloads"]

log = logging.getLogger(__name__)

#: Seconds a connection or a read may stall before a mirror is given up.
TIMEOUT_S = 30.0

#: Seconds between two progress lines of a download where stderr is no terminal (on a
#: terminal its line is redrawn every second).
PROGRESS_S = 60.0

# Indirection so that tests can replace the network and the clock (``monkeypatch.setattr``).
_urlopen = urllib.request.urlopen
_clock = time.monotonic

_CHUNK = 1 << 20

#: Whether a download writes what it fetches and its progress on stderr (``quiet_downloads``).
_SHOW = [True]


@contextlib.contextmanager
def quiet_downloads(quiet: bool = True):
    """Within it, downloads write nothing on stderr (``-q`` / ``--json`` on the command line);
    their failures are errors as ever."""
    before = _SHOW[0]
    _SHOW[0] = before and not quiet
    try:
        yield
    finally:
        _SHOW[0] = before


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
                shown = _Shown(dest.name, url, _length(response))
                try:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        shown.add(len(chunk))
                finally:  # also where the connection breaks: the line ends
                    shown.end()
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


def _length(response) -> int | None:
    """The size the server announces (``Content-Length``), or None."""
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None and int(value) > 0 else None
    except ValueError:
        return None


class _Shown:
    """A download's progress on stderr (see the module docstring)."""

    def __init__(self, name: str, url: str, total: int | None):
        self.stream = sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.name, self.total, self.done = name, total, 0
        self.began = self.said = _clock()
        size = "" if total is None else f" ({total / 2**20:.1f} MiB)"
        self._write(f"downloading {name}{size} from {url}\n")

    def _write(self, text: str) -> None:
        if not _SHOW[0]:
            return
        self.stream.write(text)
        self.stream.flush()

    def add(self, k: int) -> None:
        self.done += k
        now = _clock()
        if now - self.said >= (1.0 if self.tty else PROGRESS_S):
            self._say(now)

    def end(self) -> None:
        self._say(_clock(), end=True)

    def _say(self, now: float, end: bool = False) -> None:
        self.said = now
        seconds = now - self.began
        mib = self.done / 2**20
        if self.total is None:
            rate = mib / seconds if seconds > 0 else None
            text = f"  {self.name}: {mib:.1f} MiB, {speed_text(rate)} MiB/s, " \
                   f"{clock_text(seconds)} elapsed"
        else:
            rate, eta = rate_and_eta(mib, (self.total - self.done) / 2**20, seconds)
            text = f"  {self.name}: {mib:.1f}/{self.total / 2**20:.1f} MiB, " \
                   f"{speed_text(rate)} MiB/s, {clock_text(seconds)} elapsed, " \
                   f"ETA {clock_text(eta)}"
        if self.tty:
            self._write("\r\x1b[2K" + text + ("\n" if end else ""))
        else:
            self._write(text + "\n")
