"""``load_dataset``: named data sets and user ``.npz`` files, as :class:`Dataset` records."""

from __future__ import annotations

import io
import math
import numbers
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from poisoncert._validation import param_error
from poisoncert.data.checksums import read_file, verify
from poisoncert.data.cifar import read_cifar10
from poisoncert.data.dataset import Dataset, SourceFile
from poisoncert.data.download import download_dataset
from poisoncert.data.errors import DataFormatError, DatasetNotFoundError
from poisoncert.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, parse_idx, read_idx_file
from poisoncert.data.npyheader import check_declared, npy_header
from poisoncert.data.paths import ENV_VAR, download_dir, locate, locate_in, search_roots
from poisoncert.data.registry import ALIASES, DATASETS, DatasetSpec, list_datasets

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_TRAIN_FRACTION", "load_dataset", "list_datasets"]

_WHERE = "load_dataset"

#: The digits split: ``numpy.random.default_rng(DIGITS_SPLIT_SEED).permutation(1797)``; the
#: first ``floor(0.8 * 1797) = 1437`` indices are the training set, the other 360 the test set.
DIGITS_SPLIT_SEED = 0
DIGITS_TRAIN_FRACTION = 0.8

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Largest class id of an ``npz:`` data set: predictions are stored as int16 with -1 for an
#: abstaining classifier, so class ids (and their count) stay within [0, 2**15 - 2].
MAX_CLASS_ID = 2**15 - 2
_PARALLEL_MIN = 1 << 22  # elements: below this, converting in one thread is as fast


def load_dataset(name: str, *, data_dir=None, classes=None, download: bool = False,
                 verify: bool = True) -> Dataset:
    """Load a data set as float32 inputs in [0, 1] and int64 labels 0 .. K-1.

    Parameters
    ----------
    name
        ``"mnist"``, ``"mnist17"`` (MNIST restricted to digits 1 and 7: 13,007 training and
        2,163 test images), ``"fashion_mnist"``, ``"cifar10"``, ``"digits"`` (scikit-learn's
        bundled 8 x 8 digits, needing no files; the split is fixed, see
        ``DIGITS_SPLIT_SEED``), or ``"npz:<path>"``: a ``.npz`` holding ``x_train``,
        ``y_train``, ``x_test``, ``y_test`` (and optionally ``class_names``), read with
        ``allow_pickle=False``. ``x`` may be uint8 (scaled by 1/255), bool, or float in [0, 1],
        shaped (N, F), (N, H, W) (a channel axis is added) or (N, C, H, W). The path is
        relative to the working directory; ``data_dir`` and ``download`` do not apply to it
        (nor to ``"digits"``) and are refused, ``verify`` is ignored (its SHA-256 is recorded
        in ``source``). Labels are class ids in ``[0, MAX_CLASS_ID]``.
    data_dir
        The only folder searched when given: one that does not exist or lacks the files is an
        error (with ``download``: the folder the files are downloaded into), never a fallback
        to another copy. Without it (see :mod:`poisoncert.data.paths`) the search order is
        ``$POISONCERT_DATA``, ``./data``, ``shared/data`` above the working directory or the
        package, ``~/.cache/poisoncert``, Debian's ``/usr/share/datasets``.
    classes
        Original class ids to keep, e.g. ``(1, 7)``; label ``k`` of the result is
        ``classes[k]``, in the order given. Default: all classes (``(1, 7)`` for mnist17).
    download
        Fetch missing files from the official URLs (atomically, verified) into ``data_dir``,
        else the first ``$POISONCERT_DATA`` folder, else ``~/.cache/poisoncert``.
    verify
        Check files against their known SHA-256 (or official MD5) digests; a mismatch raises
        :class:`~poisoncert.data.ChecksumError`. ``False`` loads files unchecked (their
        digests are still recorded in ``Dataset.source``).

    Raises
    ------
    ValueError
        An invalid parameter (one message shape: "The 'classes' parameter of load_dataset must
        be ... Got ... instead.").
    DatasetNotFoundError
        Files not found: the message lists the places searched and how to add one.
    DataFormatError, ChecksumError, DownloadError
        A bad file (magic number, truncation, arrays), a digest mismatch, a failed download.
    """
    if not isinstance(name, str):
        raise param_error("name", _WHERE, _names_text(), name)
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise param_error("data_dir", _WHERE, "a path (str or os.PathLike) or None", data_dir)
    for flag, value in (("download", download), ("verify", verify)):
        if not isinstance(value, bool):
            raise param_error(flag, _WHERE, "a bool", value)
    if name.strip().lower().startswith("npz:"):
        _no_files_options(data_dir, download, "an 'npz:<path>' data set (its path is the name)")
        return _load_npz(name.strip(), classes)
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise param_error("name", _WHERE, _names_text(), name)
    spec = DATASETS[key]
    # mnist17 offers only its two classes: classes=(7, 1) reorders them, (2, 3) is refused.
    chosen = _check_classes(classes, spec.default_classes or spec.class_ids, spec.default_classes)
    if spec.kind == "digits":
        _no_files_options(data_dir, download, "'digits' (bundled with scikit-learn)")
        return _load_digits(spec, chosen)

    roots = search_roots(spec, data_dir)
    named_missing = data_dir is not None and not Path(data_dir).expanduser().is_dir()
    if named_missing and (download is False or Path(data_dir).expanduser().exists()):
        folder = Path(data_dir).expanduser()
        state = "is not a folder" if folder.exists() else "does not exist"
        raise DatasetNotFoundError(
            f"The data folder '{folder}' (data_dir; CLI: --data.data_dir) {state}. Name a "
            f"folder holding the {spec.title} files (or a new one with download=True, CLI: "
            "--data.download true, to fetch them into it), or leave data_dir out to search "
            "the usual places.")
    # A named folder is the only place searched (and the download target when it does not
    # exist yet): a copy elsewhere is never read in its place.
    if data_dir is not None:
        roots = roots[:1]
    located, partial = (None, []) if named_missing else locate(spec, roots)
    if located is None:
        if not download:
            raise _not_found(spec, roots, partial, data_dir)
        folder = download_dir(spec, data_dir)
        download_dataset(spec, folder)
        located, missing = locate_in(spec, folder)
        if located is None:  # pragma: no cover - download_dataset raises first
            raise DatasetNotFoundError(f"{spec.title}: {', '.join(missing)} missing in {folder}")

    if spec.kind == "cifar":
        where = located.files.get("batches") or located.files["archive"]
        batches = read_cifar10(where, spec.files, verify_files=verify)
        x_parts = ([_cifar_pixels(b) for b in batches.train],
                   [_cifar_pixels(b) for b in batches.test])
        y_parts = [b[:, 0] for b in batches.train], [b[:, 0] for b in batches.test]
        names = batches.class_names or spec.class_names
        source = tuple(SourceFile(str(p), s, h) for p, s, h in batches.source)
    else:
        arrays, source = _read_idx_files(spec, located.files, verify)
        x_parts = [arrays["train_images"][:, None]], [arrays["test_images"][:, None]]
        y_parts = [arrays["train_labels"]], [arrays["test_labels"]]
        names = spec.class_names
    x_train, y_train = _assemble(x_parts[0], y_parts[0], chosen, spec.class_ids, 255)
    x_test, y_test = _assemble(x_parts[1], y_parts[1], chosen, spec.class_ids, 255)
    return Dataset(
        name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        classes=chosen, class_names=tuple(names[spec.class_ids.index(c)] for c in chosen),
        source=source,
    )


def _no_files_options(data_dir, download: bool, what: str) -> None:
    """``data_dir`` and ``download`` would be ignored for data that needs no search: refuse."""
    if data_dir is not None:
        raise param_error("data_dir", _WHERE, f"None for {what}", str(data_dir))
    if download:
        raise param_error("download", _WHERE, f"False for {what}", download)


def _names_text() -> str:
    return "one of " + ", ".join(repr(n) for n in list_datasets()) + " or 'npz:<path>'"


def _check_classes(classes, available: tuple[int, ...], default: tuple[int, ...] | None
                   ) -> tuple[int, ...]:
    """Validate ``classes`` against the data set's class ids; return them as a tuple of ints."""
    if classes is None:
        return tuple(default) if default is not None else tuple(available)
    allowed = f"None or a sequence of at least 2 distinct class ids from {_ids_text(available)}"
    if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
        raise param_error("classes", _WHERE, allowed, classes)
    values = list(classes)
    if not all(isinstance(c, numbers.Integral) and not isinstance(c, (bool, np.bool_))
               for c in values):
        raise param_error("classes", _WHERE, allowed, classes)
    values = [int(c) for c in values]
    ok = set(available)
    if len(values) < 2 or len(set(values)) != len(values) or not set(values) <= ok:
        raise param_error("classes", _WHERE, allowed, classes)
    return tuple(values)


def _ids_text(ids: tuple[int, ...]) -> str:
    if len(ids) > 4 and list(ids) == list(range(ids[0], ids[-1] + 1)):
        return f"[{ids[0]}, {ids[1]}, ..., {ids[-1]}]"
    return "[" + ", ".join(str(i) for i in ids) + "]"


def _not_found(spec: DatasetSpec, roots, partial, data_dir) -> DatasetNotFoundError:
    if spec.kind == "cifar":
        files = "cifar-10-binary.tar.gz or cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin"
    else:
        files = ", ".join(k.name + "[.gz]" for k in spec.files.values())
    subs = ", ".join(f"{s}/" for s in spec.subfolders)
    if data_dir is not None:  # the one place searched
        folder = Path(data_dir).expanduser()
        lines = [f"The data folder '{folder}' (data_dir; CLI: --data.data_dir) holds no "
                 f"{spec.title} files: looked for {files} in a subfolder {subs} or directly in "
                 "it (a named data_dir is the only place searched)."]
        lines += [f"  incomplete: {p}" for p in partial]
        lines.append(f"Put the files there, pass download=True (CLI: --data.download true) to "
                     f"fetch them into {download_dir(spec, data_dir)}, or leave data_dir out to "
                     "search the usual places.")
        return DatasetNotFoundError("\n".join(lines))
    lines = [
        f"{spec.title} files not found. Looked for {files} in each of these places (in a "
        f"subfolder {subs} or directly in it), in this order:"
    ]
    for path, why in roots:
        state = "" if path.is_dir() else "; does not exist"
        lines.append(f"  {path}  ({why}{state})")
    unset = []
    if data_dir is None:
        unset.append("no data_dir was given")
    if not os.environ.get(ENV_VAR, "").strip():
        unset.append(f"${ENV_VAR} is not set")
    if unset:
        lines.append(f"  ({'; '.join(unset)})")
    lines += [f"  incomplete: {p}" for p in partial]
    first_url = next(iter(spec.files.values())).urls[:1]
    lines.append(
        "Put the files in one of these places, or point data_dir= (CLI: --data.data_dir) or "
        f"${ENV_VAR} at a folder holding them, or pass download=True (CLI: --data.download "
        "true) to fetch them"
        + (f" (from {first_url[0]} ...)" if first_url else "")
        + f" into {download_dir(spec, data_dir)}."
    )
    return DatasetNotFoundError("\n".join(lines))


def _read_idx_files(spec: DatasetSpec, files: dict[str, Path], verify_files: bool):
    arrays, source = {}, []
    for role, path in files.items():
        raw = read_idx_file(path)
        magic = IDX_IMAGES_MAGIC if role.endswith("images") else IDX_LABELS_MAGIC
        arrays[role] = parse_idx(raw.data, name=str(path), magic=magic)
        how = verify(spec.files[role], raw) if verify_files else "not verified"
        source.append(SourceFile(str(path), raw.sha256, how))
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise DataFormatError(
                f"{spec.title} {split} files disagree: {files[f'{split}_images']} holds "
                f"{len(x):,} images but {files[f'{split}_labels']} holds {len(y):,} labels."
            )
        if len(y) and int(y.max()) >= len(spec.class_ids):
            raise DataFormatError(
                f"{files[f'{split}_labels']} holds label {int(y.max())}, outside "
                f"0-{len(spec.class_ids) - 1}."
            )
    return arrays, tuple(source)


def _cifar_pixels(records: np.ndarray) -> np.ndarray:
    """(n, 3073) records -> (n, 3, 32, 32) pixel view (no copy)."""
    return records[:, 1:].reshape(len(records), 3, 32, 32)


def _assemble(x_parts, y_parts, chosen: tuple[int, ...], available: tuple[int, ...],
              scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep the rows of ``chosen`` classes, relabel them 0..K-1, convert inputs to float32.

    ``x_parts[i]`` are raw inputs (uint8, bool or float) for the labels ``y_parts[i]``;
    inputs are divided by ``scale``.
    """
    chosen_arr = np.asarray(chosen, dtype=np.int64)
    keep_all = set(chosen) == set(available)
    masks = [None if keep_all else np.isin(y, chosen_arr) for y in y_parts]
    sizes = [len(y) if m is None else int(m.sum()) for y, m in zip(y_parts, masks, strict=True)]
    shape = x_parts[0].shape[1:]
    x = np.empty((sum(sizes), *shape), dtype=np.float32)
    y = np.empty(sum(sizes), dtype=np.int64)
    order = np.argsort(chosen_arr)
    pos = 0
    for xp, yp, m, n in zip(x_parts, y_parts, masks, sizes, strict=True):
        xs, ys = (xp, yp) if m is None else (xp[m], yp[m])
        to_unit_float32(xs, scale, out=x[pos:pos + n])
        y[pos:pos + n] = order[np.searchsorted(chosen_arr, ys, sorter=order)]
        pos += n
    return x, y


def to_unit_float32(src: np.ndarray, scale: float, out: np.ndarray | None = None) -> np.ndarray:
    """``src / scale`` as float32, in row chunks on several threads for large arrays.

    Equal, bit for bit, to the plain reference ``src.astype(np.float32) / np.float32(scale)``
    (each element is the same float32 division); the threads only split the rows.
    """
    if out is None:
        out = np.empty(src.shape, dtype=np.float32)
    divisor = np.float32(scale)
    n_threads = min(8, os.cpu_count() or 1)
    if src.size < _PARALLEL_MIN or n_threads == 1 or len(src) < 2 * n_threads:
        np.divide(src, divisor, out=out, dtype=np.float32, casting="unsafe")
        return out
    step = math.ceil(len(src) / (4 * n_threads))

    def work(start: int) -> None:
        s = slice(start, start + step)
        np.divide(src[s], divisor, out=out[s], dtype=np.float32, casting="unsafe")

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(work, range(0, len(src), step)))
    return out


def _load_digits(spec: DatasetSpec, chosen: tuple[int, ...]) -> Dataset:
    import sklearn
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images)  # (1797, 8, 8), values 0..16
    target = np.asarray(bunch.target)
    n = len(target)
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(n)
    n_train = math.floor(DIGITS_TRAIN_FRACTION * n)
    tr, te = perm[:n_train], perm[n_train:]
    x_train, y_train = _assemble([images[tr, None]], [target[tr]], chosen, spec.class_ids, 16)
    x_test, y_test = _assemble([images[te, None]], [target[te]], chosen, spec.class_ids, 16)
    csv = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    source = ()
    if csv.is_file():
        source = (SourceFile(str(csv), read_file(csv, decompress=False).sha256,
                             f"bundled with scikit-learn {sklearn.__version__}"),)
    return Dataset(
        name=spec.name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        classes=chosen, class_names=tuple(spec.class_names[c] for c in chosen), source=source,
    )


def _load_npz(name: str, classes) -> Dataset:
    path = Path(name[4:]).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} (from the data set name {name!r}) is not a file.")
    raw = read_file(path, decompress=False)
    head = bytes(raw.data[:6])
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        raise DataFormatError(
            f"{path} is not a .npz archive (a zip file of arrays, as numpy.savez writes): it "
            f"starts with {head!r}.")
    try:
        npz = np.load(io.BytesIO(raw.data), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"{path} is not a readable .npz archive ({exc}).") from None
    if not hasattr(npz, "files"):
        raise DataFormatError(
            f"{path} holds a single array, not a .npz archive of x_train, y_train, x_test, "
            "y_test (save one with numpy.savez(path, x_train=..., y_train=..., ...))."
        )
    with npz:
        missing = [k for k in _NPZ_KEYS if k not in npz.files]
        if missing:
            raise DataFormatError(
                f"{path} lacks the array(s) {', '.join(missing)}; it holds "
                f"{', '.join(sorted(npz.files)) or 'nothing'}. A data set .npz needs x_train, "
                "y_train, x_test and y_test."
            )
        arrays = {}
        for key in (*_NPZ_KEYS, "class_names"):
            if key not in npz.files:
                continue
            if f"{key}.npy" in npz.zip.namelist():  # its header, before its data is read
                with npz.zip.open(f"{key}.npy") as f:
                    check_declared(path, f"the array {key!r}", *npy_header(f))
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                raise DataFormatError(
                    f"{path}: array {key!r} cannot be loaded without pickle ({exc}). poisoncert "
                    "reads .npz files with allow_pickle=False: save plain numeric arrays, not "
                    "object arrays."
                ) from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise DataFormatError(f"{path}: array {key!r} is unreadable ({exc}).") from None
    x_train, scale = _check_npz_x(arrays["x_train"], "x_train", path)
    x_test, scale_test = _check_npz_x(arrays["x_test"], "x_test", path)
    y_train = _check_npz_y(arrays["y_train"], "y_train", len(x_train), path)
    y_test = _check_npz_y(arrays["y_test"], "y_test", len(x_test), path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataFormatError(
            f"{path}: x_train inputs have shape {x_train.shape[1:]} but x_test inputs "
            f"{x_test.shape[1:]}."
        )
    available = tuple(int(c) for c in np.union1d(y_train, y_test))
    if len(available) < 2:
        raise DataFormatError(f"{path}: the labels hold {len(available)} class(es); need 2+.")
    names = tuple(str(c) for c in available)
    if "class_names" in arrays:
        cn = arrays["class_names"]
        if cn.ndim != 1 or cn.dtype.kind not in "US" or len(cn) != len(available):
            raise DataFormatError(
                f"{path}: class_names must be a 1-D string array with one name per class id "
                f"({len(available)}: {_ids_text(available)}); got dtype {cn.dtype}, shape "
                f"{cn.shape}."
            )
        names = tuple(str(s.decode() if isinstance(s, bytes) else s) for s in cn.tolist())
    chosen = _check_classes(classes, available, None)
    xtr, ytr = _assemble([x_train], [y_train], chosen, available, scale)
    xte, yte = _assemble([x_test], [y_test], chosen, available, scale_test)
    return Dataset(
        name=name, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=chosen,
        class_names=tuple(names[available.index(c)] for c in chosen),
        source=(SourceFile(str(path), raw.sha256, "not verified"),),
    )


def _check_npz_x(x: np.ndarray, key: str, path: Path) -> tuple[np.ndarray, float]:
    kind = x.dtype.kind
    if x.dtype == np.uint8:
        scale = 255.0
    elif kind == "b":
        scale = 1.0
    elif kind == "f":
        scale = 1.0
        if x.size:
            with np.errstate(invalid="ignore"):
                lo, hi = float(np.min(x)), float(np.max(x))
            if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
                raise DataFormatError(
                    f"{path}: {key} must hold values in [0, 1] (found min {lo}, max {hi}); "
                    "scale the inputs before saving, or save uint8 pixels (0-255)."
                )
    else:
        raise DataFormatError(
            f"{path}: {key} has dtype {x.dtype}; expected uint8 pixels (0-255, scaled by "
            "1/255), bool, or floats in [0, 1]."
        )
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4) or len(x) == 0:
        raise DataFormatError(
            f"{path}: {key} has shape {x.shape}; expected a non-empty (N, F), (N, H, W) or "
            "(N, C, H, W) array."
        )
    return x, scale


def _check_npz_y(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != n:
        raise DataFormatError(
            f"{path}: {key} must be a 1-D integer array of {n:,} labels (one per input); got "
            f"dtype {y.dtype}, shape {y.shape}."
        )
    if len(y):
        lo, hi = y.min(), y.max()
        if lo < 0 or hi > MAX_CLASS_ID:
            bad = int(lo) if lo < 0 else int(hi)
            raise DataFormatError(
                f"{path}: {key} holds the label {bad}, outside the allowed class ids "
                f"[0, {MAX_CLASS_ID}]."
            )
    return y.astype(np.int64, copy=False)
