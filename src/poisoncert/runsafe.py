"""Run directories under faults: atomic writes, an exclusive lock, leftovers, checksums.

Standard library only; ``poisoncert.runs`` builds the run directory on these.

Atomic writes
    ``atomic_write`` (and ``save_bytes``, ``save_text``, ``save_json``, ``save_with``) write a
    temporary file beside the target, fsync it and rename it into place: a reader sees the old
    file or the complete new one, never a part.
Lock
    A run directory holds an empty file ``.lock``. A process that trains or certifies the run
    holds ``fcntl.flock(LOCK_EX)`` on it for as long as it works there; the operating system
    drops the lock when the process ends in any way (SIGKILL included), so a lock is never
    stale. A second process is refused at once with one line (``RunLockedError``) rather than
    made to wait, since the wait could last as long as a training run.
Leftovers
    Every file is written to a temporary ``.tmp-<name>.<pid>.XXXX`` beside it; a new run is built
    in a temporary sibling folder ``.tmp-run.<pid>.<name>.XXXX`` (locked from its first
    instant) and renamed into place once its config and manifest are written; into an
    existing empty folder, which is kept, it is built in such a folder inside it and its
    entries are moved in, the config last (``create_locked``).
    A kill leaves at most such temporaries. The next process that holds a run's lock removes
    the temporary files in it (``remove_leftovers``); the next one that creates a run beside
    them removes sibling folders whose creator is gone (``remove_stale_run_tmps``: its lock is
    free, or it had not taken it yet and its process no longer exists). Live ones are left.
    A temporary file is named ``.tmp-<name>.<pid>.XXXX`` and its writer holds its ``flock``
    until it is renamed: outside a run directory (``--out`` of predict and delta), the next
    write of the same file removes those whose writer is gone (``remove_stale_tmps``: no
    such process here and the ``flock`` free), and ``remove_leftovers`` leaves a held one.
Checksums
    SHA-256 of files, and of a manifest's own content (``manifest_digest``), so that
    ``RunDir.verify`` can refuse a run whose files changed after it finished.
Test hook
    ``POISONCERT_TEST_FAULT=<point>[:<k>]`` makes the process SIGKILL itself the ``k``-th
    (default first) time it reaches the named point (``fault_point``; ``...@sleep=<s>``
    pauses there instead); the fault tests use it to kill inside the run-directory creation
    window and between a file's write and rename, and to hold a lock while another process
    tries the run. Unset (always, outside tests), a point costs one comparison. Points:
    ``create:tmp``, ``create:locked``, ``create:manifest``, ``create:filled``,
    ``create:claimed`` and ``create:moving`` (into an existing empty folder, before its first
    and its last entry moves in), ``create:renamed``, ``write:<file name>`` (before the
    rename), ``finish``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None

__all__ = [
    "LOCK",
    "atomic_write",
    "json_ready",
    "json_text",
    "save_bytes",
    "save_json",
    "save_text",
    "shell_path",
    "save_with",
    "RUN_TMP_PREFIX",
    "TMP_PREFIX",
    "RunError",
    "RunLock",
    "RunLockedError",
    "create_locked",
    "fault_point",
    "file_sha256",
    "manifest_changed",
    "manifest_digest",
    "new_run_tmp",
    "remove_leftovers",
    "remove_stale_run_tmps",
    "remove_stale_tmps",
]

LOCK = ".lock"
TMP_PREFIX = ".tmp-"
RUN_TMP_PREFIX = TMP_PREFIX + "run."
#: The manifest key holding ``manifest_digest`` of the rest of the manifest.
MANIFEST_DIGEST = "manifest_sha256"
#: Keys that only manifests with a ``manifest_sha256`` record: the digest came with the
#: checksums, and every manifest written since has one (``chunk_format`` came later).
_DIGESTED_KEYS = ("checksums", "chunk_format")


class RunError(OSError):
    """A run directory that cannot be written, is in use, holds another run, or does not
    match its manifest."""


class RunLockedError(RunError):
    """Another process holds the run directory's lock (it is training, certifying or attacking
    it, or an update is writing it)."""


# --------------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", *, clean: bool = False) -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync it and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was, so a
    reader sees either the old file or the complete new one, never a part. The temporary
    file is ``.tmp-<name>.<pid>.XXXX``, held under ``flock`` until it is renamed, so that
    ``clean=True`` (for a file outside a run directory, which no run lock covers: predict's
    and delta's ``--out``) first removes the temporaries of ``path`` that killed writers
    left (``remove_stale_tmps``), never a live writer's. Such a file named by a symbolic link
    is the link's target (the link stays), and one that is no regular file (``/dev/null``,
    ``/dev/stdout``, a named pipe) is written straight into: the temporary file renamed onto
    it replaced it (as root, ``predict --out /dev/null`` made /dev/null a regular file).
    """
    path = Path(path)
    if clean:
        if _special_file(path):  # (through a link too: /dev/stdout, a pipe's /proc name)
            yield from _write_into(path, mode)
            return
        if path.is_symlink():
            path = Path(os.path.realpath(path))
        remove_stale_tmps(path)
    fd, tmp = _new_tmp(path)
    f = None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        f = os.fdopen(fd, mode)
        yield f
        f.flush()
        os.fsync(f.fileno())
        fault_point("write:" + path.name)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, RunError):
            raise RunError(f"Cannot write '{path}': {_why(e, path)}.") from e
        raise
    finally:
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
        else:
            with contextlib.suppress(OSError):
                os.close(fd)
    _fsync(path.parent)


def _special_file(path: Path) -> bool:
    """Whether ``path`` exists and is neither a regular file nor a folder (a device, a named
    pipe, a socket)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _write_into(path: Path, mode: str) -> Iterator[Any]:
    """``atomic_write``'s body for a file that is no regular file: opened and written."""
    try:
        f = open(path, mode)  # noqa: SIM115 - closed below
    except OSError as e:
        raise RunError(f"Cannot write '{path}': {e.strerror or e}.") from None
    try:
        yield f
        f.flush()
    except OSError as e:
        if isinstance(e, RunError):
            raise
        raise RunError(f"Cannot write '{path}': {e.strerror or e}.") from None
    finally:
        with contextlib.suppress(OSError):
            f.close()


def _tmp_prefix(name: str) -> str:
    return f"{TMP_PREFIX}{name}."


#: Tries of ``_flock`` while a checker (``_held``) holds a new temporary file's lock for an
#: instant, and the pause between them (seconds): at most a second in all.
_FLOCK_TRIES, _FLOCK_PAUSE = 100, 0.01


def _new_tmp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (``.tmp-<name>.<pid>.XXXX``), open and under its
    writer's ``flock``. A cleaner (``remove_leftovers``, ``remove_stale_tmps``) that looked
    at it between its creation and the ``flock`` found the lock free and may have removed it
    (or held the lock that instant): the file is then made anew, so that a live writer's file
    is never left without its lock nor written after it was removed."""
    for _ in range(3):
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path.name)
                                       + f"{os.getpid()}.")
        except OSError as e:
            raise RunError(f"Cannot write '{path}': {e.strerror or e}.") from None
        try:
            _flock(fd)  # a sign of life (across hosts too) until it is renamed and closed
            if _still_named(fd, tmp):
                return fd, tmp
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)  # removed by a cleaner before its lock was taken: make another
    raise RunError(f"Cannot write '{path}': its temporary files were removed as they were "
                   "made (another process cleaning the folder).")


def _still_named(fd: int, name: str) -> bool:
    """Whether the open file ``fd`` is still the file at ``name`` (not removed: on NFS a
    removed open file keeps a link, under another name). Without ``fcntl`` no cleaner looks
    at a writer's file while it is made: True."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        return os.path.samestat(os.fstat(fd), os.stat(name, follow_symlinks=False))
    except FileNotFoundError:
        return False


def _flock(fd: int) -> None:
    """Take the ``flock`` of a new temporary file: waits out (for at most a second) a
    checker's instant on it, which a single non-blocking try took for a held lock and left
    the file unlocked for the rest of its life."""
    if fcntl is None:  # pragma: no cover
        return
    import time

    for _ in range(_FLOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return  # a file system without locks: the pid still says
        time.sleep(_FLOCK_PAUSE)


def _held(path: str) -> bool:
    """Whether a live writer holds the temporary file's ``flock`` (or it cannot be told)."""
    if fcntl is None:  # pragma: no cover
        return False
    fd = _open_shared(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def _open_shared(path: str) -> int | None:
    """The temporary file ``path`` open to read under a shared ``flock`` (or none, on a file
    system without locks: the pid still says), or None where a live writer holds its lock or
    it cannot be opened. Shared: it conflicts with the writer's exclusive lock and needs only
    read access (on NFS, flock is a byte-range lock, and an exclusive one on a file opened to
    read fails with EBADF: every live writer's file looked free)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            return None
    return fd


def _unlink_if_free(path: str) -> bool:
    """Remove the temporary file ``path`` where no writer holds its ``flock`` (``_held``),
    removing it while this process holds the lock: a writer that takes its lock after a
    look at it finds it removed (``_new_tmp`` makes another) rather than losing it then.
    Whether it was removed."""
    if fcntl is None:  # pragma: no cover
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            return True
        return False
    fd = _open_shared(path)
    if fd is None:
        return False
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            return True
        return False
    finally:
        os.close(fd)


def _writer_dead(pid: str) -> bool:
    """Whether the process ``pid`` (from a temporary file's name) no longer exists here. An
    unknown pid (a name of another form) is never taken for gone."""
    return pid.isdigit() and not _alive(int(pid))


def remove_stale_tmps(path: str | Path) -> list[Path]:
    """Remove the temporary files of ``path`` (``.tmp-<name>.<pid>.XXXX`` beside it) whose
    writer was killed; leave those of live writers and those of other names or forms."""
    path = Path(path)
    prefix = _tmp_prefix(path.name)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(prefix) or not e.is_file(follow_symlinks=False):
            continue
        pid = e.name[len(prefix):].split(".", 1)[0]
        # gone: its process does not exist here and nobody holds its flock (a writer on
        # another host sharing the folder)
        if _writer_dead(pid) and _unlink_if_free(e.path):
            removed.append(Path(e.path))
    return removed


def _why(e: OSError, path: Path) -> str:
    """An OSError's reason; numpy's short writes carry none ("7200 requested and 4032
    written"), and the cause is then almost always a full disk: said so when it is."""
    if e.strerror:
        return e.strerror
    try:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    return f"{e} (no space left on the device)" if full else str(e)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_bytes(path: str | Path, data: bytes, *, clean: bool = False) -> None:
    with atomic_write(path, clean=clean) as f:
        f.write(data)


def shell_path(path: str | Path) -> str:
    """``path`` as a word to paste into a shell command: quoted where it holds spaces or
    other special characters ("Next: poisoncert certify my run" ran ``certify my``), and a
    relative one that starts with '-' led by './' (not read as an option)."""
    import shlex

    text = str(path)
    if text.startswith("-"):
        text = "./" + text
    return shlex.quote(text)


def save_text(path: str | Path, text: str, *, clean: bool = False) -> None:
    save_bytes(path, text.encode(), clean=clean)


def json_ready(obj: Any) -> Any:
    """``obj`` with every float NaN or infinity as None (JSON has no such numbers: a median
    radius with nothing certified is null, not a bare NaN that JSON readers refuse)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    return obj


def json_text(obj: Any, **kw) -> str:
    """``json.dumps`` of ``json_ready(obj)``: standard JSON, whatever floats ``obj`` holds."""
    return json.dumps(json_ready(obj), allow_nan=False, **kw)


def save_json(path: str | Path, obj: Any) -> None:
    save_text(path, json_text(obj, indent=2, sort_keys=False) + "\n")


def save_with(path: str | Path, write: Callable[[io.BufferedIOBase], None], *,
              clean: bool = False) -> None:
    """Atomically write ``path`` with ``write(file)`` (e.g. a matplotlib ``savefig``)."""
    with atomic_write(path, clean=clean) as f:
        write(f)


# --------------------------------------------------------------------------------------------
# Lock


def _lock_run(fd: int, op: int, folder: Path) -> OSError | None:
    """``flock(fd, op)`` on a run's ``.lock`` without waiting: None when taken; a
    ``RunLockedError`` where another process holds the run's lock; any other failure
    returned. ``fd`` is closed when the lock is not taken."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunLockedError(
                f"The run directory '{folder}' is in use by another poisoncert process "
                "(train, certify and attack hold a run's lock, update its new run's): "
                "wait until it ends, or use another run directory.") from None
        return e
    return None


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` (followed, as ``os.open`` follows it) is the open file ``fd``."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


#: Tries of ``RunLock.acquire`` where the ``.lock`` it locked was removed meanwhile.
_LOCK_TRIES = 5


class RunLock:
    """An exclusive ``flock`` on ``folder/.lock``, held until ``release`` or the process ends."""

    def __init__(self, folder: Path, fd: int | None):
        self.folder = folder
        self._fd = fd

    @classmethod
    def acquire(cls, folder: str | Path) -> RunLock:
        """Lock ``folder`` (creating its ``.lock``) or raise ``RunLockedError`` at once."""
        folder = Path(folder)
        path = folder / LOCK
        for _ in range(_LOCK_TRIES):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                             0o666)
            except OSError as e:
                raise RunError(f"Cannot lock the run directory '{folder}': '{path}' cannot "
                               f"be opened for writing ({e.strerror or e}).") from None
            if fcntl is None:  # pragma: no cover
                return cls(folder, fd)
            e = _lock_run(fd, fcntl.LOCK_EX, folder)
            if e is not None:
                raise RunError(f"Cannot lock the run directory '{folder}': "
                               f"{e.strerror or e} ('{path}').") from None
            if _names(path, fd):
                return cls(folder, fd)
            # the .lock opened was removed before its lock was taken (an attack removing the
            # .lock it made in its results folder, on failure): that lock guards nothing, and
            # a process that made the new .lock may hold it. Opened again.
            os.close(fd)
        raise RunLockedError(f"The run directory '{folder}' is in use by another poisoncert "
                             f"process (its '{path}' was removed and made again as it was "
                             "locked): wait until it ends, or use another run directory.")

    @classmethod
    def acquire_shared(cls, folder: str | Path) -> RunLock | None:
        """A shared ``flock`` on ``folder/.lock`` opened for reading: a reader that cannot
        open it for writing (a read-only mount, another user's ``.lock``) still sees a
        writer's exclusive lock (``RunLockedError`` at once) and keeps writers out while it
        reads. None where there is no ``.lock`` to open (nobody has locked the folder)."""
        folder = Path(folder)
        try:
            fd = os.open(folder / LOCK, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        if fcntl is None:  # pragma: no cover
            return cls(folder, fd)
        if _lock_run(fd, fcntl.LOCK_SH, folder) is not None:
            return None  # no flock there (a file system without it): read as before
        return cls(folder, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (closing the file releases the ``flock``)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def __del__(self) -> None:  # an object dropped without release() still unlocks
        self.release()


# --------------------------------------------------------------------------------------------
# Leftovers


def remove_leftovers(folder: Path, subfolders: tuple[str, ...] = ()) -> list[Path]:
    """Remove the ``.tmp-*`` files that killed writers left in ``folder`` and ``subfolders``.

    Call only with ``folder``'s lock held: then no live writer owns them.
    """
    removed = []
    for d in (folder, *(folder / s for s in subfolders)):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(TMP_PREFIX) and e.is_file(follow_symlinks=False) \
                    and _unlink_if_free(e.path):  # (predict --out naming a file in the run)
                removed.append(Path(e.path))
    return removed


def new_run_tmp(parent: Path, name: str) -> Path:
    """A new temporary sibling folder for building run ``name`` in ``parent``."""
    return Path(tempfile.mkdtemp(prefix=f"{RUN_TMP_PREFIX}{os.getpid()}.{name}.", dir=parent))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_run_tmps(parent: Path) -> list[Path]:
    """Remove temporary run folders in ``parent`` whose creator is gone; leave live ones."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(RUN_TMP_PREFIX) or not e.is_dir(follow_symlinks=False):
            continue
        folder = Path(e.path)
        if (folder / LOCK).exists():
            try:
                lock = RunLock.acquire(folder)
            except RunError:
                continue  # its creator is still building it
            try:
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                lock.release()
        else:  # killed before it took its lock: stale once its process is gone
            pid = e.name[len(RUN_TMP_PREFIX):].split(".", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue
            shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed


# --------------------------------------------------------------------------------------------
# Checksums


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def manifest_changed(manifest: dict[str, Any]) -> str | None:
    """How the manifest was changed by hand, or None: its ``manifest_sha256`` does not match
    its content, or is missing from a manifest that records ``checksums`` or
    ``chunk_format`` (written with one: a manifest stripped of its digest was taken for an
    earlier version's, unchecked, so that an edited ``data.n`` was certified as verified).
    Manifests of earlier versions, without digest, checksums or chunk format: None."""
    if MANIFEST_DIGEST in manifest:
        if manifest[MANIFEST_DIGEST] != manifest_digest(manifest):
            return f"its content does not match its {MANIFEST_DIGEST}"
        return None
    present = [k for k in _DIGESTED_KEYS if k in manifest]
    if present:
        return f"its {MANIFEST_DIGEST} was removed, though it records {present[0]}"
    return None


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON, leaving out its own ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Test hook

def _parse_fault(text: str | None) -> tuple[str, int, float | None] | None:
    """``point[:k]`` (SIGKILL) or ``point[:k]@sleep=<seconds>`` (pause there instead)."""
    if not text:
        return None
    text, _, action = text.partition("@")
    pause = float(action.removeprefix("sleep=")) if action.startswith("sleep=") else None
    head, sep, tail = text.rpartition(":")
    point, k = (head, int(tail)) if sep and tail.isdigit() else (text, 1)
    return point, k, pause


_FAULT = _parse_fault(os.environ.get("POISONCERT_TEST_FAULT"))
_FAULT_SEEN: dict[str, int] = {}


def fault_point(name: str) -> None:
    """SIGKILL this process here (or pause) when ``$POISONCERT_TEST_FAULT`` names this point."""
    if _FAULT is None or _FAULT[0] != name:
        return
    _FAULT_SEEN[name] = _FAULT_SEEN.get(name, 0) + 1
    if _FAULT_SEEN[name] != _FAULT[1]:
        return
    if _FAULT[2] is not None:
        import time

        time.sleep(_FAULT[2])
    else:
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# Atomic creation of a folder


def create_locked(path: Path, fill: Callable[[Path], None], *,
                  last: str | None = None) -> RunLock | None:
    """Create the folder ``path`` as a whole: ``fill(tmp)`` writes its contents into a locked
    temporary folder, which then becomes ``path``.

    Where ``path`` does not exist, the temporary folder is a sibling renamed onto it. Where
    it is an empty folder (a user's, perhaps group-shared with setgid, or a mount point), it
    is kept as it is (inode, mode, owner, group, ACLs): the temporary folder is made inside
    it, ``fill`` writes there, the folder is claimed by linking the temporary folder's
    ``.lock`` into it (one process wins), and the entries are moved in, ``last`` (the file
    that marks a whole run: ``config.yaml``) last. A reader sees no ``last`` until every
    other entry is there; a kill meanwhile leaves what ``RunDir`` clears as an interrupted
    creation (its lock free).

    Returns the lock, held, now on ``path``; or None when another process put anything in
    ``path`` first. Missing parents are created. On any error no part of the run is left:
    a new ``path`` and the parents created here are removed, an empty one is emptied again
    (after a kill, the temporary folder goes with the next ``remove_stale_run_tmps``).
    """
    if path.is_dir():
        return _create_in_place(path, fill, last)
    parent = path.absolute().parent
    created = []
    p = parent
    while not p.exists():
        created.append(p)
        p = p.parent
    tmp: Path | None = None
    lock: RunLock | None = None
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_run_tmps(parent)
        tmp = new_run_tmp(parent, path.name)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        fault_point("create:tmp")
        lock = RunLock.acquire(tmp)
        fault_point("create:locked")
        fill(tmp)
        _fsync(tmp)
        fault_point("create:filled")
        try:
            os.rename(tmp, path)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            lock.release()
            return None
        _fsync(parent)
        fault_point("create:renamed")
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.release()
        for c in created:  # deepest first
            with contextlib.suppress(OSError):
                c.rmdir()
        _raise_creation_error(e, path)
    lock.folder = path
    return lock


def _create_in_place(path: Path, fill: Callable[[Path], None],
                     last: str | None) -> RunLock | None:
    """``create_locked`` into the existing empty folder ``path``, which stays the same folder
    (renaming a folder built beside it onto it replaced the user's folder: a ``chmod 2775``
    group folder became the process's own 0755 one, and a mount point was refused)."""
    tmp: Path | None = None
    lock: RunLock | None = None
    claimed = False
    moved: list[str] = []
    try:
        remove_stale_run_tmps(path)
        tmp = new_run_tmp(path, "new")
        setgid = os.stat(path).st_mode & stat.S_ISGID  # new folders in it keep its group
        os.chmod(tmp, (0o777 & ~_umask()) | setgid)  # mkdtemp makes 0700
        fault_point("create:tmp")
        lock = RunLock.acquire(tmp)
        fault_point("create:locked")
        fill(tmp)
        _fsync(tmp)
        fault_point("create:filled")
        try:  # the claim: the held .lock's inode, linked in; one process's link succeeds
            os.link(tmp / LOCK, path / LOCK)
        except FileExistsError:
            return _gave_up(tmp, lock)
        claimed = True
        os.unlink(tmp / LOCK)  # (a temporary folder without it: stale once its process is gone)
        if any(e.name != LOCK and not e.name.startswith(RUN_TMP_PREFIX)
               for e in os.scandir(path)):  # filled meanwhile (not by a creation)
            claimed = False
            os.unlink(path / LOCK)
            return _gave_up(tmp, lock)
        fault_point("create:claimed")
        names = sorted(os.listdir(tmp), key=lambda n: n == last)  # ``last`` at the end
        for name in names:
            if name == last:
                _fsync(path)
                fault_point("create:moving")
            os.rename(tmp / name, path / name)
            moved.append(name)
        os.rmdir(tmp)
        _fsync(path)
        fault_point("create:renamed")
    except BaseException as e:
        for name in reversed(moved):  # the folder as it was: empty
            p = path / name
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if claimed:
            with contextlib.suppress(OSError):
                os.unlink(path / LOCK)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            lock.release()
        _raise_creation_error(e, path)
    lock.folder = path
    return lock


def _raise_creation_error(e: BaseException, path: Path) -> NoReturn:
    """Raise ``e`` again, an ``OSError`` as the one line a creation of ``path`` fails with."""
    if isinstance(e, OSError) and not isinstance(e, RunError):
        raise RunError(f"Cannot write the run directory '{path}': "
                       f"{e.strerror or e}.") from None
    raise e


def _gave_up(tmp: Path, lock: RunLock) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    lock.release()
    return None


def _fsync(folder: Path) -> None:
    """Persist a folder's entries (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
