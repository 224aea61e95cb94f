"""New inputs for a trained ensemble, read from files as they come (``poisoncert predict``).

``read_inputs(path, form)`` reads

- a ``.npz`` holding an array ``x`` (and optionally ``y``, the data set's original class ids),
- a ``.npy`` holding the inputs' array alone (as ``x`` of a ``.npz``),
- an IDX images file (MNIST's format, gzipped or plain),
- a folder of PNG or JPEG images (one input per file, in sorted file-name order; Pillow),
  or one such image,
- a ``.csv`` of features (UTF-8, a byte-order mark allowed; one input per row,
  ``prod(shape)`` numbers; a first line whose cells are mostly not numbers, or exactly
  ``0, 1, ..., w - 1`` (pandas' names for unnamed columns), is a header; a number written
  with a point or an exponent is a float, so a file of ``0.0``/``1.0`` is refused by a run
  of 8-bit images, as a float ``.npy`` is),

and checks them against the run's raw input form (``inputform.InputForm``): dtype, value
range, shape, and for images their mode (``L`` for one channel, ``RGB`` for three; other
8-bit modes where they convert without loss) and size. Every problem is one ``ValueError``
naming the file and what was expected.
"""

from __future__ import annotations

import csv
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisoncert.data.npyheader import check_declared, npy_header
from poisoncert.experiment.inputform import InputForm, describe_array

__all__ = ["IMAGE_SUFFIXES", "Inputs", "check_inputs_path", "read_npz", "read_inputs"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True, eq=False)
class Inputs:
    """Raw inputs ``x``, their names (file names, or row numbers) and optional original class
    ids ``y``."""

    x: np.ndarray
    names: list[str]
    y: np.ndarray | None = None


def _error(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: {what}")


def read_inputs(path: str | Path, form: InputForm) -> Inputs:
    """Read the inputs in ``path`` (see the module docstring) and check them against
    ``form``; the result's ``x`` is in the raw form ``Ensemble`` takes."""
    path = Path(path)
    files = _files(path)  # a folder's images; a file of no known suffix checked as IDX
    if files is not None:
        inputs = _read_images(path, files, form)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        inputs = _read_images(path, [path], form)
    elif path.suffix.lower() == ".npz":
        inputs = read_npz(path)
    elif path.suffix.lower() == ".npy":
        inputs = _read_npy(path)
    elif path.suffix.lower() == ".csv":
        inputs = _read_csv(path)
    else:
        inputs = _read_idx(path)
    try:
        x = form.arrange(inputs.x)
    except ValueError:
        raise _error(path, f"the run takes {form.describe()}; this file holds "
                     f"{describe_array(inputs.x)}.") from None
    if len(x) == 0:
        raise _error(path, "holds no inputs.")
    return Inputs(x=x, names=inputs.names, y=inputs.y)


def check_inputs_path(path: str | Path) -> None:
    """The checks of ``read_inputs`` that need no run: ``path`` exists, a folder holds PNG or
    JPEG images, a file of no known suffix starts as an IDX file does. ``poisoncert predict``
    makes them before it loads the run (checking the weights of a large run takes minutes)."""
    _files(Path(path))


def _files(path: Path) -> list[Path] | None:
    """The images of a folder ``path`` in sorted file-name order (None for a file), or the
    error of a ``path`` that is none of the inputs read here (module docstring)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise _error(path, "holds no PNG or JPEG images (" + ", ".join(IMAGE_SUFFIXES)
                         + ").")
        return files
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder (INPUTS is a .npz, a .npy, "
                                "an IDX file, a folder of PNG/JPEG images, one such image or "
                                "a .csv).")
    if path.suffix.lower() not in (*IMAGE_SUFFIXES, ".npz", ".npy", ".csv"):
        _check_idx(path)
    return None


def read_npz(path: Path) -> Inputs:
    """The arrays ``x`` and (optionally) ``y`` of the ``.npz`` at ``path``, unchecked against
    a run's form (``read_inputs`` does that; ``update --add`` reads its files here too): an
    archive that is no zip, is cut short, or declares arrays beyond the memory is one
    ``ValueError`` naming the file, before its data are read."""
    if path.is_file() and not zipfile.is_zipfile(path):  # np.load would try it as a pickle
        raise _error(path, "not a .npz archive (a zip of .npy arrays, as numpy.savez writes "
                     "it).")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files") or "x" not in z.files:
                held = ", ".join(z.files) if hasattr(z, "files") else "one array"
                raise _error(path, f"a .npz of inputs holds an array 'x' (and optionally 'y'); "
                             f"this one holds {held or 'nothing'}.")
            for key in ("x", "y"):  # their headers, before a byte of data is read
                if f"{key}.npy" in z.zip.namelist():
                    with z.zip.open(f"{key}.npy") as f:
                        check_declared(path, f"its array {key!r}", *npy_header(f))
            x = z["x"]
            y = z["y"] if "y" in z.files else None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise _error(path, f"not a readable .npz archive ({e}).") from None
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        raise _error(path, f"its arrays cannot be read without pickle ({e}).") from None
    if y is not None and (y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu"):
        raise _error(path, f"'y' must be a 1-d integer array of {len(x)} class ids (one per "
                     f"input); got dtype {y.dtype}, shape {y.shape}.")
    return Inputs(x=x, names=[str(i) for i in range(len(x))], y=y)


def _read_npy(path: Path) -> Inputs:
    if path.is_file() and not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":  # np.load would take it for a pickle and say so
                raise _error(path, "not a .npy array: it does not start with the header "
                             "numpy.save writes (b'\\x93NUMPY').")
            f.seek(0)
            check_declared(path, "its array 'x'", *npy_header(f))
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, EOFError) as e:
        raise _error(path, f"not a readable .npy array ({e}).") from None
    except ValueError as e:
        raise _error(path, f"not a .npy array readable without pickle ({e}).") from None
    if not isinstance(x, np.ndarray):  # an .npz archive under a .npy name
        x.close()
        raise _error(path, "is a .npz archive, not a .npy array: name it .npz.")
    return Inputs(x=x, names=[str(i) for i in range(len(x))] if x.ndim else [])


#: What INPUTS may be, for the error of a file that is none of them.
FORMS = ("a .npz, a .npy, a .csv, a PNG or JPEG image (or a folder of them) or an IDX file "
         "(MNIST's format, gzipped or not)")


def _read_idx(path: Path) -> Inputs:
    from poisoncert.data.idx import read_idx

    x = read_idx(path)  # a DataFormatError (a ValueError) names the file
    return Inputs(x=x, names=[str(i) for i in range(len(x))])


def _check_idx(path: Path) -> None:
    """Refuse a file that does not start as an IDX file does, naming the forms read here."""
    from poisoncert.data.idx import looks_like_idx

    if not looks_like_idx(path):  # from its first bytes: a large file is not read whole
        kind = _image_format(path)
        if kind:
            raise _error(path, f"a {kind} image; predict reads PNG and JPEG images (save it "
                         "as PNG), and besides a .npz, a .npy, a .csv or an IDX file.")
        raise _error(path, "none of the inputs predict reads (it starts neither as an IDX "
                     f"file nor as an image): INPUTS is {FORMS}.")


def _read_csv(path: Path) -> Inputs:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is dropped
    except UnicodeDecodeError as e:
        raise _error(path, f"not a .csv of numbers: byte {data[e.start]:#04x} at offset "
                     f"{e.start} is not UTF-8 text.") from None
    # each row with its line in the file (1-based, as an editor shows it)
    lines, rows = [], []
    for i, r in enumerate(csv.reader(text.splitlines()), start=1):
        if r and any(c.strip() for c in r):
            lines.append(i)
            rows.append(r)
    if rows and len(rows[0]) > 1 and not rows[0][0].strip() and \
            [c.strip() for c in rows[0][1:]] == [str(i) for i in range(len(rows[0]) - 1)]:
        raise _error(path, "its first column looks like the row index pandas' "
                     "DataFrame.to_csv writes (a header ',0,1,...'): write it with "
                     "index=False, or drop that column.")
    if rows and _header(rows[0], {len(r) for r in rows[1:]}):
        rows, lines = rows[1:], lines[1:]
    if not rows:
        raise _error(path, "holds no rows of numbers.")
    width = {len(r) for r in rows}
    if len(width) != 1:
        raise _error(path, f"every row must have the same number of values; found "
                     f"{sorted(width)}.")
    try:
        x = np.array([[float(c) for c in r] for r in rows], dtype=np.float64)
    except ValueError:
        bad = next(i for i, r in enumerate(rows) if not all(_number(c) for c in r))
        col = next(j for j, c in enumerate(rows[bad]) if not _number(c))
        # the file's line, and the input's index as predict's rows give it (from 0): the
        # row count from 1 (after a header, without blank lines) was neither
        raise _error(path, f"line {lines[bad]} (input {bad}) is not all numbers: column "
                     f"{col + 1} holds {rows[bad][col]!r}.") from None
    written_as_ints = not any(_FLOAT_MARKS.intersection(c.lower()) for r in rows for c in r)
    if written_as_ints and np.all(np.abs(x) <= 2**53):  # exact in float64 and in int64
        x = x.astype(np.int64)
    return Inputs(x=x, names=[str(i) for i in range(len(x))])


def _header(row: list[str], widths: set[int]) -> bool:
    """Whether a CSV's first row is a header: most of its cells are not numbers (``p0, p1,
    ...``; a data row with a typo has one or a few), or it is exactly ``0, 1, ..., w - 1``,
    the column names ``pandas.DataFrame.to_csv`` writes by default for unnamed columns."""
    names = sum(not _number(c) for c in row)
    if 2 * names > len(row):
        return True
    return not names and widths == {len(row)} and len(row) > 1 and \
        [c.strip() for c in row] == [str(i) for i in range(len(row))]


#: Characters that make a CSV cell a float (``1.0``, ``1e3``, ``inf``, ``nan``).
_FLOAT_MARKS = frozenset(".ein")


def _number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _image_format(path: Path) -> str | None:
    """Pillow's name of the image format of ``path`` (``"BMP"``, ``"TIFF"``, ...) from its
    header, or None when Pillow does not recognise it."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.format
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is no image to name
        return None


# 8-bit modes whose pixels convert to L or RGB exactly where the image allows it (checked
# per image: opaque, and grey for L); 1-bit is black and white.
_LOSSLESS_MODES = ("L", "RGB", "RGBA", "LA", "P", "PA", "1")


def _as_mode(img, mode: str, f: Path, kind: str) -> np.ndarray:
    """The pixels of an opened ``img`` in ``mode`` (``L`` or ``RGB``) as uint8, when that
    loses nothing: an RGB, RGBA, LA or palette PNG of a grey digit (as many tools save one),
    or a grey image for an RGB run. Transparency, or colour for an L run, is refused."""
    if img.mode == mode:
        return np.asarray(img, dtype=np.uint8)
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)  # exact for every mode above
    how = f"convert it yourself, e.g. PIL.Image.open(f).convert({mode!r}), if that is meant"
    if (rgba[..., 3] != 255).any():
        raise _error(f, f"the run takes {kind} images; this one (mode {img.mode}) has "
                     f"transparent pixels, which {mode} cannot hold: {how}.")
    rgb = rgba[..., :3]
    if mode == "RGB":
        return np.ascontiguousarray(rgb)
    if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
        raise _error(f, f"the run takes {kind} images; this one (mode {img.mode}) is in "
                     f"colour, which one grey channel cannot hold: {how}.")
    return np.ascontiguousarray(rgb[..., 0])


def _read_images(folder: Path, files: list[Path], form: InputForm) -> Inputs:
    """``files`` (PNG/JPEG) as one input each; ``folder`` (or the one file) names errors that
    are not one file's."""
    from PIL import Image, UnidentifiedImageError

    shape = form.shape
    if len(shape) != 3 or shape[0] not in (1, 3) or form.kind != "uint8":
        raise _error(folder, "this run's inputs are not 8-bit images (it takes "
                     f"{form.describe()}); give a .npz or a .csv instead.")
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    arrays = []
    kind = "grayscale (mode L)" if c == 1 else "RGB"
    for f in files:
        try:
            with warnings.catch_warnings():  # a size beyond Pillow's limit is refused below
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(f)
        except Image.DecompressionBombError as e:  # too many pixels to even open
            raise _error(f, f"the run takes {w}x{h} {kind} images; this one is larger than "
                         f"Pillow opens ({e}).") from None
        except (UnidentifiedImageError, OSError) as e:
            raise _error(f, f"not a readable image ({e}).") from None
        try:
            with img:
                # the header's size and mode are checked before any pixel is decoded
                if img.mode not in _LOSSLESS_MODES or img.size != (w, h):
                    raise _error(f, f"the run takes {w}x{h} {kind} images; this one is "
                                 f"{img.size[0]}x{img.size[1]} in mode {img.mode}.")
                img.load()
                arrays.append(_as_mode(img, mode, f, kind))
        except (UnidentifiedImageError, OSError) as e:
            raise _error(f, f"not a readable image ({e}).") from None
    x = np.stack(arrays)
    return Inputs(x=x, names=[f.name for f in files])
