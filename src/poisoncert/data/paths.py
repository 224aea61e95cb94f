"""Where data sets are looked for, and where downloads go.

Places searched, in order (the first place holding a data set's complete set of files wins):

1. the ``data_dir`` argument (CLI: ``--data.data_dir``); a named folder that does not exist
   is an error (or, with ``download``, the download target: nothing else is searched);
2. the ``POISONCERT_DATA`` environment variable (several folders may be joined with
   ``os.pathsep``);
3. ``./data`` in the working directory;
4. ``shared/data`` beside any folder above the working directory or above the installed
   package (the project's read-only shared copies: ``<repo>/../shared/data``);
5. the user cache, ``$XDG_CACHE_HOME/poisoncert`` or ``~/.cache/poisoncert``;
6. for Fashion-MNIST, ``/usr/share/datasets`` (Debian's package ``dataset-fashion-mnist``
   installs ``/usr/share/datasets/fashion-mnist/{train,t10k}-*-ubyte.gz``).

Within a place, a data set's files may sit in its subfolder (``mnist/``, ``fashion-mnist/``,
``cifar10/``, and torchvision's ``MNIST/raw/`` ...) or directly in the place.

Downloads go to the ``data_dir`` argument, else the first ``POISONCERT_DATA`` folder, else the
user cache: never into the working directory (which may be a repository) nor into the shared
folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from poisoncert.data.cifar import ARCHIVE_NAME, FOLDER_NAME, TEST_BATCH, TRAIN_BATCHES
from poisoncert.data.registry import DatasetSpec

__all__ = ["ENV_VAR", "Located", "cache_dir", "download_dir", "locate", "search_roots"]

ENV_VAR = "POISONCERT_DATA"
_PACKAGE_DIR = Path(__file__).resolve().parent
# The folder at which the walk up for ``shared/data`` stops (it is still looked in); None: the
# filesystem root. Tests set it to their temporary folder, so that a ``shared/data`` above it
# (``/tmp/shared/data``, ``/shared/data``) is not found.
_WALK_CEILING: Path | None = None


@dataclass(frozen=True)
class Located:
    """A data set found on disk: the folder, and each role's file (or the CIFAR location)."""

    folder: Path
    files: dict[str, Path]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/poisoncert``, else ``~/.cache/poisoncert``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "poisoncert"


def search_roots(spec: DatasetSpec | None = None, data_dir=None) -> list[tuple[Path, str]]:
    """The places searched for a data set, in order, each with why it is searched.

    Only the ``data_dir`` argument and ``POISONCERT_DATA`` folders are listed whether or not
    they exist; duplicates (after resolving links) are dropped.
    """
    roots: list[tuple[Path, str]] = []
    if data_dir is not None:
        roots.append((Path(data_dir).expanduser(), "the data_dir argument"))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            roots.append((Path(part.strip()).expanduser(), f"${ENV_VAR}"))
    cwd = Path.cwd()
    roots.append((cwd / "data", "./data"))
    for start, why in ((cwd, "the working directory"), (_PACKAGE_DIR, "the package")):
        for parent in _up_to_ceiling(start):
            shared = parent / "shared" / "data"
            if shared.is_dir():
                roots.append((shared, f"shared/data above {why}"))
    roots.append((cache_dir(), "the user cache"))
    if spec is not None:
        roots.extend((p, f"{spec.title} system package") for p in spec.extra_roots)
    seen: set[Path] = set()
    unique = []
    for path, why in roots:
        key = path.resolve() if path.exists() else path.absolute()
        if key not in seen:
            seen.add(key)
            unique.append((path, why))
    return unique


def _up_to_ceiling(start: Path) -> list[Path]:
    """``start`` and the folders above it, up to ``_WALK_CEILING`` where that is one of them."""
    chain = [start, *start.parents]
    if _WALK_CEILING is not None and _WALK_CEILING in chain:
        chain = chain[:chain.index(_WALK_CEILING) + 1]
    return chain


def download_dir(spec: DatasetSpec, data_dir=None) -> Path:
    """The folder a download of ``spec`` is written to (see the module docstring)."""
    if data_dir is not None:
        base = Path(data_dir).expanduser()
    else:
        env = [p.strip() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
        base = Path(env[0]).expanduser() if env else cache_dir()
    return base / spec.subfolders[0]


def candidate_folders(spec: DatasetSpec, root: Path) -> list[Path]:
    return [root / sub for sub in spec.subfolders] + [root]


def locate_in(spec: DatasetSpec, folder: Path) -> tuple[Located | None, list[str]]:
    """Find ``spec``'s files in ``folder``: (the result or None, names of missing files)."""
    if spec.kind == "cifar":
        return _locate_cifar(folder)
    found: dict[str, Path] = {}
    missing = []
    for role, known in spec.files.items():
        plain, gz = folder / known.name, folder / (known.name + ".gz")
        # An already decompressed file loads faster; either is verified the same way.
        path = plain if plain.is_file() else gz if gz.is_file() else None
        if path is None:
            missing.append(known.name + "[.gz]")
        else:
            found[role] = path
    return (Located(folder, found) if not missing else None), missing


def _locate_cifar(folder: Path) -> tuple[Located | None, list[str]]:
    batches = (*TRAIN_BATCHES, TEST_BATCH)
    for sub in (folder / FOLDER_NAME, folder):
        if all((sub / b).is_file() for b in batches):
            return Located(folder, {"batches": sub}), []
    if (folder / ARCHIVE_NAME).is_file():
        return Located(folder, {"archive": folder / ARCHIVE_NAME}), []
    return None, [f"{ARCHIVE_NAME} or {FOLDER_NAME}/"]


def locate(spec: DatasetSpec, roots: list[tuple[Path, str]]
           ) -> tuple[Located | None, list[str]]:
    """Search ``roots`` in order; return the first complete location and notes on partial ones.

    A folder that holds some but not all of the files is noted (and skipped), so that the
    not-found error can say what is missing where.
    """
    partial = []
    for root, _why in roots:
        if not root.is_dir():
            continue
        for folder in candidate_folders(spec, root):
            if not folder.is_dir():
                continue
            located, missing = locate_in(spec, folder)
            if located is not None:
                return located, partial
            if spec.kind == "idx" and len(missing) < len(spec.files):
                partial.append(f"{folder} lacks {', '.join(missing)}")
    return None, partial
