"""A run directory: the resolved config, a manifest, per-model seeds and prediction chunks.

The files and their layout: ``poisoncert.runlayout`` (every file written atomically: a
temporary file in the same folder, fsync, rename); the manifest: ``poisoncert.runmanifest``;
the chunk files: ``poisoncert.runchunks``.

A chunk file holds base classifiers ``start .. stop - 1``; a run is resumed by re-training
only the chunks whose file is missing, unreadable, or written for other seeds or another config
hash (chunks written before the hash was recorded are taken on their seeds). Classifier ``i``
depends on its own seed alone, so the assembled predictions equal those of an uninterrupted run.

Faults and concurrency (``poisoncert.runsafe``). A new run is built in a temporary sibling
folder and renamed into place once its config and manifest are written (into an existing empty
folder, which is kept, its entries move in with the config last), so a kill at any instant
leaves no run or a resumable one. One process at a time works in a run: ``train`` and
``certify`` hold an exclusive lock for their whole duration and a second one is refused with
one line (not queued). Temporary files a killed writer left are removed by the next process
that takes the lock. ``RunDir.verify`` checks a finished run against its manifest (checksums,
config hash, consistency of votes, predictions and labels) before it is certified; runs made
before checksums were recorded are checked for consistency only, with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from poisoncert.config import (
    ConfigError,
    EditsPath,
    ExperimentConfig,
    config_diff,
    config_hash,
    load_config,
    to_yaml,
)
from poisoncert.runchunks import CHUNK_FORMAT, ChunkFiles, chunk_ranges, save_npy, save_npz
from poisoncert.runlayout import (  # the file names, re-exported
    CERTIFICATES,
    CERTIFIED_ACCURACY,
    CERTIFIED_ACCURACY_PNG,
    CERTIFY_JSON,
    CHECKSUMMED,
    CHUNKS,
    CLASSIFIERS,
    CLEAN_INDICES,
    CONFIG,
    EDITS,
    ENSEMBLE,
    LABELS,
    MANIFEST,
    NEIGHBORS,
    PHASE2,
    PREDICTIONS,
    RANKS,
    RANKS_DIR,
    SEEDS,
    SUBSET_SIZES,
    VOTES,
    WEIGHTS,
)
from poisoncert.runmanifest import array_checksum, build_manifest, git_revision, now_iso
from poisoncert.runsafe import (
    LOCK,
    MANIFEST_DIGEST,
    RUN_TMP_PREFIX,
    RunError,
    RunLock,
    RunLockedError,
    atomic_write,
    create_locked,
    fault_point,
    file_sha256,
    manifest_changed,
    manifest_digest,
    remove_leftovers,
    remove_stale_run_tmps,
    save_bytes,
    save_json,
    save_text,
    save_with,
)
from poisoncert.votes import votes_from_predictions as votes_from_predictions  # runs' name

__all__ = [
    "CERTIFICATES",
    "CERTIFIED_ACCURACY",
    "CERTIFIED_ACCURACY_PNG",
    "CERTIFY_JSON",
    "CHECKSUMMED",
    "CHUNKS",
    "CLASSIFIERS",
    "CLEAN_INDICES",
    "CONFIG",
    "EDITS",
    "ENSEMBLE",
    "LABELS",
    "MANIFEST",
    "NEIGHBORS",
    "PHASE2",
    "PREDICTIONS",
    "RANKS",
    "RANKS_DIR",
    "SEEDS",
    "SUBSET_SIZES",
    "VOTES",
    "WEIGHTS",
    "RunDir",
    "RunError",
    "RunLockedError",
    "atomic_write",
    "chunk_ranges",
    "array_checksum",
    "own_edits",
    "build_manifest",
    "git_revision",
    "save_all",
    "save_bytes",
    "save_json",
    "save_npy",
    "save_npz",
    "save_text",
    "save_with",
]


_TMP_PREFIX = ".tmp-"


def own_edits(cfg: ExperimentConfig, run_dir: str | Path) -> ExperimentConfig:
    """``cfg`` reading its ``data.edits`` from the run folder ``run_dir``'s own ``EDITS`` file
    when the config names an ``EDITS`` file and the folder has one (an updated run: ``poisoncert
    update`` writes its composed edits there and names them by the path it wrote them to).

    The config's text, and so its hash, stays the path it names (``config.EditsPath``): a run
    folder moved or copied elsewhere reads the edits it was trained with, not whatever is (or
    is not) at its old place. The data checksum that every resume, update and check compares
    covers the edits' content.
    """
    named = cfg.data.edits
    own = Path(run_dir) / EDITS
    if named is None or Path(named).name != EDITS or not own.is_file():
        return cfg
    data = dataclasses.replace(cfg.data, edits=EditsPath(str(named), str(own.absolute())))
    return dataclasses.replace(cfg, data=data)


# --------------------------------------------------------------------------------------------
# The run directory


def refuse_changed_data(run_dir: str | Path, manifest: dict | None, sha256_arrays: str, *,
                        since: str = "has changed since it started",
                        then: str = "it cannot be resumed", sources=None) -> None:
    """A ``RunError`` where the data a process loaded (``sha256_arrays``, its
    ``DataSplit.summary``) are not the data the run's ``manifest`` records: its ``n``, labels
    and certificates are of those. Nothing for a manifest without a data checksum.
    ``sources``: the files read now (``DataSummary.sources``); those whose SHA-256 differs
    from the manifest's record of the same file name are named too."""
    old = (manifest or {}).get("data", {}).get("sha256_arrays")
    if old is not None and old != sha256_arrays:
        files = _changed_sources((manifest or {}).get("data", {}).get("sources"), sources)
        raise RunError(f"The data of the run '{run_dir}' {since} (array checksum {old[:12]}... "
                       f"is now {sha256_arrays[:12]}...{files}): {then}.")


def require_data_checksum(run_dir: str | Path, manifest: dict | None) -> None:
    """A ``RunError`` where the run's ``manifest`` records no checksum of its data
    (``data.sha256_arrays``: a run made by an earlier version): nothing then says whether
    the data loaded now are those it was trained on, which whatever reuses its classifiers or
    neighbours beside the data (predict of a knn run, update, attack) relies on. The remedy
    is a new run (restoring the data, the remedy of ``refuse_changed_data``, cannot help:
    nothing says which data to restore)."""
    data = (manifest or {}).get("data")
    if not (isinstance(data, dict) and data.get("sha256_arrays")):
        raise RunError(f"The manifest of the run '{run_dir}' records no checksum of its data "
                       "(data.sha256_arrays), so the data loaded now cannot be checked "
                       "against those it was trained on: train a new run on these data.")


def save_all(outputs: dict[Path, bytes], *, others: str, again: str,
             clean: bool = False) -> None:
    """``save_bytes`` of each of a command's ``outputs``, in order, as one set: where a write
    fails (a full disk), the files this call wrote are removed (a certificates.csv without
    its certify.json is no part of the set) and the ``RunError`` says so (``others`` "were
    removed", or "nothing was written" where the first failed) and what to do (``again``)."""
    written: list[Path] = []
    try:
        for path, content in outputs.items():
            save_bytes(path, content, clean=clean)
            written.append(path)
    except OSError as e:
        for path in written:
            path.unlink(missing_ok=True)
        why = str(e) if isinstance(e, RunError) else f"{e.strerror or e}"
        done = f"{others} were removed" if written else "nothing was written"
        raise RunError(f"{why.rstrip('.')}: {done}; {again} once the cause is fixed.") from None


#: The data sizes a manifest records, which the data a resume loads must give again.
_DATA_SIZES = ("n", "n_train", "n_clean", "n_test", "n_classes")


def _refuse_other_sizes(*, path: Path, old, new) -> None:
    """A ``RunError`` where the manifest at ``path`` of a run being resumed records data sizes
    (``old``, its ``data``) that the data loaded now (``new``) do not give, although their
    checksum is the same: edited by hand in a manifest without a digest (an earlier
    version's, or one stripped of it), the larger ``data.n`` was kept, recorded under the new
    checksums and certified."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return
    for key in _DATA_SIZES:
        if key in old and key in new and old[key] != new[key]:
            raise RunError(f"The manifest '{path}' records data.{key} = {old[key]!r}, but the "
                           f"run's data give {new[key]!r} (edited by hand?): the run cannot "
                           "be resumed. Delete the folder and train again.")


def _changed_sources(recorded, now) -> str:
    """``"; the file 'x.npz' had SHA-256 ab12... and has cd34... now"`` for each file read now
    whose name the manifest records with another SHA-256; ``""`` where none (or no record)."""
    if not isinstance(recorded, list) or not now:
        return ""
    then = {Path(str(r.get("path", ""))).name: str(r.get("sha256", ""))
            for r in recorded if isinstance(r, dict)}
    out = []
    for s in now:
        name = Path(s.path).name
        if name in then and then[name] != s.sha256:
            out.append(f"; the file '{name}' had SHA-256 {then[name][:12]}... and has "
                       f"{s.sha256[:12]}... now")
    return "".join(out)


def check_writable(path: str | Path, what: str = "the run directory", note: str = "") -> None:
    """Raise a ``RunError`` unless ``path`` is, or could be created as, a writable folder
    (``what``: the folder's role, as the error names it; ``note``: after its path, e.g.
    ``" (CLI: --out)"``).

    Creates nothing: walks up to the first existing ancestor and checks it.
    """
    path = Path(path).absolute()
    probe = path
    while not probe.exists():
        if probe.is_symlink():  # dangling: the creation failed with "Not a directory"
            raise RunError(f"Cannot write {what} '{path}'{note}: '{probe}' is a symbolic "
                           f"link to '{os.readlink(probe)}', which does not exist. Create "
                           "that folder, or give another path.")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RunError(f"Cannot write {what} '{path}'{note}: '{probe}' is not a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"Cannot write {what} '{path}'{note}: '{probe}' is not writable.")


def _weights_unset(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with ``training.save_weights`` null: a choice that changes no prediction, which
    the caller checks by what it resolves to (``keeps_weights``; null is on for a torch model,
    so a run made with null resumes under ``true``). The hash keeps null as ``false``, as for
    runs made before null meant on, so the hashes alone would refuse it."""
    return dataclasses.replace(cfg, execution=dataclasses.replace(cfg.execution,
                                                                  save_weights=None))


class RunDir(ChunkFiles):
    """Paths and atomic I/O of one run directory; ``RunDir(path)`` touches nothing.

    ``prepare`` creates or resumes the run and holds its lock; ``lock()`` holds it for a
    block (``train`` and ``certify`` run inside one); ``verify`` checks a finished run.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock: RunLock | None = None
        self._config_hash: str | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def exists(self) -> bool:
        return (self.path / CONFIG).is_file()

    # -- lock --------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """True while this object holds the run's lock."""
        return self._lock is not None and self._lock.held

    @contextlib.contextmanager
    def lock(self) -> Iterator[RunDir]:
        """Hold the run's exclusive lock for the block and release it after (and on a kill).

        Taken at once when the run exists; for a new run ``prepare`` creates the folder with
        the lock already held. Another process holding it raises ``RunLockedError`` (one
        line; nobody waits). Temporary files left by killed writers are removed once the lock
        is held. Nested blocks on one object keep the outer block's lock.
        """
        outer = self.locked
        if not outer and self.exists():
            self._acquire()
        try:
            yield self
        finally:
            if not outer:
                self.release()

    def release(self) -> None:
        """Drop the lock if this object holds it."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _acquire(self) -> None:
        self._lock = RunLock.acquire(self.path)
        remove_leftovers(self.path, (CHUNKS, WEIGHTS, RANKS_DIR))
        remove_stale_run_tmps(self.path)  # a creation into an empty folder, killed at its end

    # -- config ------------------------------------------------------------------------------

    def load_config(self) -> ExperimentConfig:
        """The resolved config stored with the run, read in the ranges of the version that
        wrote it (``config.later_bounds``: a seed or ``training.lr`` beyond a bound added
        since; whether the file is the run's own, ``verify`` checks)."""
        if not self.exists():
            if not self.path.exists():
                why = "it does not exist"
            elif not self.path.is_dir():
                why = ("it is a file; a run directory is the folder 'poisoncert train CONFIG "
                       "--run-dir DIR' writes")
            else:
                why = f"no {CONFIG}"
            raise RunError(f"'{self.path}' is not a poisoncert run directory ({why}).")
        try:
            empty = not (self.path / CONFIG).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):  # load_config says what
            empty = False
        if empty:  # it was read as the default config
            raise RunError(f"The config '{self.path / CONFIG}' of the run is empty (a run's "
                           "config holds every setting it was trained with): the run cannot "
                           "be read.")
        try:
            cfg = load_config(self.path / CONFIG, stored=True)  # as the run was written
        except ConfigError as e:  # named as a file; a changed one (a flipped byte) says so
            raise RunError(f"The config '{self.path / CONFIG}' of the run "
                           f"{self._changed(CONFIG)}is invalid: {e}") from None
        return own_edits(cfg, self.path)

    def _changed(self, name: str) -> str:
        """"was changed after the run finished (...) and " when the manifest records another
        SHA-256 for the file ``name``; "" when it records none or the same, or is unreadable."""
        try:
            want = self.load_manifest().get("checksums", {}).get(name)
            got = file_sha256(self.path / name) if isinstance(want, str) else None
        except (RunError, OSError, AttributeError):
            return ""
        if got is None or got == want:
            return ""
        return (f"was changed after the run finished (its SHA-256 {got[:12]}... is not the "
                f"{want[:12]}... recorded in {MANIFEST}) and ")

    def load_manifest(self) -> dict[str, Any]:
        """The manifest (``{}`` when there is none); a ``RunError`` naming the file when it is
        unreadable or not a JSON object."""
        path = self.path / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise RunError(f"Cannot read the manifest '{path}': "
                           f"{getattr(e, 'strerror', None) or e}.") from None
        try:
            man = json.loads(text)
        except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
            raise RunError(f"The manifest '{path}' is not valid JSON ({e}).") from None
        if not isinstance(man, dict):
            raise RunError(f"The manifest '{path}' must hold a JSON object; it holds a "
                           f"{type(man).__name__}.")
        return man

    def _save_manifest(self, man: dict[str, Any], folder: Path | None = None) -> None:
        man[MANIFEST_DIGEST] = manifest_digest(man)
        save_json((folder or self.path) / MANIFEST, man)

    def check_config(self, cfg: ExperimentConfig) -> ExperimentConfig | None:
        """The stored config when this folder holds a run of ``cfg`` (resumable), None when
        it holds no run; a ``RunError`` naming the differing keys when it holds a run of
        another config."""
        if not self.exists():
            return None
        old = self.load_config()
        a, b = _weights_unset(old), _weights_unset(cfg)
        if config_hash(a) != config_hash(b):  # save_weights is not what stops it: not named
            diff = "; ".join(config_diff(a, b, hashed=True)) or "the config hash"
            raise RunError(f"The run directory '{self.path}' holds a run with another config "
                           f"({diff}). Use another --run-dir, or the same config to resume "
                           "it.")
        return old

    def prepare(self, cfg: ExperimentConfig, manifest: dict[str, Any]) -> bool:
        """Create the run or check that it holds the same config; return True when resuming.

        Holds the run's lock from then on (until ``release``, the end of a ``lock()`` block,
        or the end of the process); a run locked by another process raises
        ``RunLockedError``. A new run is built in a temporary sibling folder and renamed into
        place (an existing empty folder is kept: the run moves in, its config last), so a
        kill leaves no run or a complete, resumable one. A folder that exists and
        is neither empty nor a run, or a run with another config (other than
        ``config.RESUMABLE_KEYS`` and the ``certify`` section), is refused with a
        ``RunError`` before anything is written. An unwritable folder raises a ``RunError``
        and leaves nothing behind.
        """
        check_writable(self.path)
        self._config_hash = config_hash(cfg)
        if self.exists():
            took = not self.locked
            if took:
                self._acquire()
            try:
                stored = self.check_config(cfg)
                man = self._resumable_manifest()
                if man.get("config_hash") not in (None, config_hash(stored)):
                    # edited by hand (to the config given): every chunk was trained again
                    # and the run finished under a manifest that certify then refused
                    raise RunError(f"The config '{self.path / CONFIG}' was changed by hand "
                                   "after the run started (its hash is not the config_hash "
                                   f"in {MANIFEST}): the run cannot be resumed. Restore it, "
                                   "or delete the folder and train again.")
                _refuse_other_sizes(path=self.path / MANIFEST, old=man.get("data"),
                                    new=manifest.get("data"))
                self.set_run(man)
                man.setdefault("resumed", []).append(now_iso())
                if "device" in manifest:  # where each resumed session trains
                    man.setdefault("resumed_on", []).append(manifest["device"])
                man["finished"] = None
                man.pop("checksums", None)  # recorded again by finish()
                self._save_manifest(man)
            except BaseException:
                if took:
                    self.release()
                raise
            return True
        self._refuse_non_empty()
        if self._create(cfg, manifest):
            return False
        return self.prepare(cfg, manifest)  # another process created it first: resume or refuse

    def create(self, cfg: ExperimentConfig, manifest: dict[str, Any], *,
               files: Callable[[Path], None] | None = None) -> None:
        """Create a new run, never resume one: as ``prepare`` for a new folder, and a
        ``RunError`` (nothing written) when the folder is not empty, another process's run
        put there meanwhile included. ``files(folder)`` writes more of the run's files
        before its config, so that they are there as soon as the run is (``update``'s edits,
        which its config names)."""
        check_writable(self.path)
        self._config_hash = config_hash(cfg)
        self._refuse_non_empty()
        if not self._create(cfg, manifest, files):
            raise RunError(f"The run directory '{self.path}' was filled by another process "
                           "meanwhile: nothing was written. Use an empty or new folder.")

    def _refuse_non_empty(self) -> None:
        self._clear_abandoned_creation()
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            if (self.path / MANIFEST).is_file() and not (self.path / CONFIG).exists():
                raise RunError(f"The run directory '{self.path}' holds a run whose "
                               f"{CONFIG} is missing (deleted?): it cannot be resumed. Put "
                               f"the run's {CONFIG} back, or delete the folder and train "
                               "again.")
            raise RunError(f"The run directory '{self.path}' exists and is not empty. Use an "
                           "empty or new folder.")
        # A new run is built beside its folder and renamed onto it: onto '.' the system
        # refuses ('Device or resource busy', once built); onto the current folder by its
        # full path it succeeds and leaves the shell in a deleted folder. Refused, both.
        here = False
        with contextlib.suppress(OSError):  # (a current folder deleted meanwhile: not it)
            here = self.path.exists() and self.path.resolve() == Path.cwd().resolve()
        if here:
            raise RunError(f"The run directory '{self.path}' is the current folder: a new run "
                           "is built beside its folder and moved into place, which cannot "
                           "replace the folder you are in. Give a new folder's name (e.g. "
                           "--run-dir run).")

    def _resumable_manifest(self) -> dict[str, Any]:
        """The manifest of the run being resumed, refused when it is missing or was changed
        by hand (its content does not match its digest): a resume records new checksums over
        whatever the folder holds, so a changed ``data.n`` would be certified from, and a
        missing manifest would skip the check that the data are the run's."""
        path = self.path / MANIFEST
        man = self.load_manifest()
        if not man:
            raise RunError(f"The run '{self.path}' has no manifest ('{path}' is missing), so "
                           "its chunks cannot be checked against its data: it cannot be "
                           "resumed. Delete the folder and train again.")
        changed = manifest_changed(man)
        if changed:
            raise RunError(f"The manifest '{path}' was changed by hand ({changed}): the run "
                           "cannot be resumed. Delete the folder and train again.")
        return man

    def _create(self, cfg: ExperimentConfig, manifest: dict[str, Any],
                files: Callable[[Path], None] | None = None) -> bool:
        """Build the run in a locked temporary folder and make it the run
        (``runsafe.create_locked``); False when another process put a run there first."""

        manifest["chunk_format"] = CHUNK_FORMAT
        self.set_run(manifest)

        def fill(tmp: Path) -> None:
            (tmp / CHUNKS).mkdir()
            self._save_manifest(manifest, tmp)
            fault_point("create:manifest")
            if files is not None:
                files(tmp)
            save_text(tmp / CONFIG, to_yaml(cfg))  # last: marks a valid run

        lock = create_locked(self.path, fill, last=CONFIG)
        if lock is None:
            return False
        self._lock = lock
        return True

    def _clear_abandoned_creation(self) -> None:
        """A folder that only holds what an interrupted creation left (an empty ``chunks/``,
        a manifest, the edits of an update, a free ``.lock``, temporary files and folders;
        no config) is emptied: a kill while a run was moved into an existing empty folder
        (``create_locked``), or the creation of earlier versions. One that another process
        is creating (its lock held) raises ``RunLockedError``."""
        if self.exists() or not self.path.is_dir():
            return
        remove_stale_run_tmps(self.path)
        lock_file = self.path / LOCK
        if not (self.path / MANIFEST).is_file() and not lock_file.is_file():
            return
        entries = list(self.path.iterdir())
        chunks = self.path / CHUNKS
        if not all(e.name in (MANIFEST, LOCK, CHUNKS, EDITS) or e.name.startswith(_TMP_PREFIX)
                   for e in entries) or (chunks.exists() and (not chunks.is_dir()
                                                              or any(chunks.iterdir()))):
            return
        lock = RunLock.acquire(self.path) if lock_file.is_file() else None
        try:
            if self.exists():  # (created meanwhile, its lock released: not abandoned)
                return
            for e in self.path.iterdir():
                with contextlib.suppress(OSError):
                    if e.name.startswith(RUN_TMP_PREFIX) and e.is_dir():
                        continue  # another process's, alive (kept by remove_stale_run_tmps)
                    e.rmdir() if e.is_dir() else e.unlink()
        finally:
            if lock is not None:
                lock.release()

    def finish(self, **fields: Any) -> None:
        """Record ``fields``, the finish time and the checksums of the run's files."""
        man = self.load_manifest()
        man.update(fields)
        man["finished"] = now_iso()
        man["checksums"] = self._checksums()
        fault_point("finish")
        self._save_manifest(man)

    def _checksums(self) -> dict[str, str]:
        """The SHA-256 of each file ``verify`` checks. A chunk's weights file takes the one its
        chunk file records: the hash of the bytes as they were written (``train`` hashes them
        in memory), which a resume checked against the file before taking the chunk. So the
        file is not read again (a T = 1000 small-CNN run's 200 MB), and a weights file changed
        after its chunk was written is refused by ``verify`` instead of being recorded as the
        run's. Other files, and weights whose chunk records no hash, are read."""
        sums = {n: file_sha256(self.path / n) for n in CHECKSUMMED
                if (self.path / n).is_file()}
        if self.weights_dir.is_dir():
            for p in sorted(self.weights_dir.iterdir()):
                if p.is_file() and not p.name.startswith(_TMP_PREFIX):
                    sums[f"{WEIGHTS}/{p.name}"] = (self._written_sha256(p)
                                                   or file_sha256(p))
        return sums

    def _written_sha256(self, path: Path) -> str | None:
        """The SHA-256 the chunk file of the weights file ``path`` records, or None."""
        m = re.fullmatch(r"chunk-(\d+)\.safetensors", path.name)
        if m is None or self.weights_path(int(m.group(1))) != path:
            return None
        return self.chunk_weights_sha256(int(m.group(1)))

    # -- verification ------------------------------------------------------------------------

    def verify(self, progress=None) -> dict[str, Any]:
        """Check a finished run before it is certified (``poisoncert.runcheck.verify_run``):
        raise a ``RunError`` naming the first file that does not match its manifest.
        ``progress``: a display of the checksums (MiB read), or None."""
        from poisoncert.runcheck import verify_run

        return verify_run(self, progress)

    # -- chunks ------------------------------------------------------------------------------

    # -- results -----------------------------------------------------------------------------

    def load(self, name: str) -> np.ndarray:
        """A ``.npy`` array of the run; a ``RunError`` naming the file when it is missing or
        not a readable array."""
        path = self.path / name
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise RunError(f"'{path}' is missing: the run is not finished (run train "
                           "again to resume it).") from None
        except (ValueError, OSError, EOFError) as e:
            msg = " ".join(str(e).split())
            raise RunError(f"'{path}' is not a readable .npy array ({msg}).") from None
        if not isinstance(arr, np.ndarray):
            arr.close()
            raise RunError(f"'{path}' is not a .npy array (it is an .npz archive).")
        return arr
