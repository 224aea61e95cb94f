"""The raw form of a data set's inputs: how one raw input becomes a classifier input.

``InputForm`` (recorded in a run's ``ensemble.json``) checks raw inputs, as the data set's
files hold them, and applies the fixed per-input preprocessing (scale, deskewing); no
statistic of the training set enters it. Used by ``Ensemble`` and ``read_inputs``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import numpy as np

from poisoncert._validation import param_error
from poisoncert.config import ExperimentConfig

__all__ = ["UNUSUAL_SHARE", "InputForm", "RunClasses", "UnknownClassId",
           "UnusualInputsWarning", "as_input_array", "class_indices", "describe_array",
           "input_form", "input_means", "outside_stacklevel", "training_means",
           "unusual_inputs", "unusual_share"]


#: The share of the inputs whose mean (after preprocessing) lies outside the range of the
#: training inputs' (``ensemble.json``'s ``input_means``, 99.8% of them) above which
#: ``base_predictions`` warns (``UnusualInputsWarning``): inputs like the training data have
#: about 0.2% there.
UNUSUAL_SHARE = 0.05


class UnusualInputsWarning(UserWarning):
    """Many new inputs do not look like the run's training inputs (their mean value after
    the preprocessing lies outside the training inputs' range): an inverted image, another
    scale. Their certificates are unchanged; what they certify may not be what was meant."""


def outside_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` that puts a warning at the first caller
    outside the poisoncert package (the user's line), however many of the package's
    functions lie between (``Ensemble.certify`` -> ``votes`` -> ``base_predictions``): a fixed
    ``stacklevel=2`` named a line of ``ensemble.py`` or ``nnmodel.py``. Called by the function
    that warns; Python 3.12's ``skip_file_prefixes`` would do this, but 3.11 is supported."""
    package = str(Path(__file__).resolve().parent.parent) + os.sep
    frame, level = sys._getframe(1), 1  # the function that warns is level 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(
            package):
        frame, level = frame.f_back, level + 1
    return level


@dataclasses.dataclass(frozen=True)
class InputForm:
    """How a raw input becomes a classifier input (fixed, per input).

    ``shape``: one input as the classifiers see it, ``(C, H, W)`` or ``(F,)``; ``kind``:
    ``"uint8"`` (pixels 0-255, as the MNIST and CIFAR-10 files hold them), ``"integer"``
    (integer values in ``[0, scale]``: scikit-learn's digits, 0-16), ``"bool"`` or
    ``"unit"`` (floats in [0, 1]); the input is divided by ``scale`` in float32 (exactly the
    data loader's conversion) and deskewed when ``deskew``.
    """

    shape: tuple[int, ...]
    kind: str
    scale: float
    deskew: bool

    def describe(self) -> str:
        """The values and every shape ``arrange`` takes: ``"uint8 pixels 0-255, shape (n, 1,
        28, 28), (n, 28, 28), (n, 28, 28, 1) or (n, 784)"``."""
        what = {"uint8": "uint8 pixels 0-255", "integer": f"integers 0-{self.scale:g}",
                "bool": "booleans", "unit": "floats in [0, 1]"}[self.kind]
        shapes = [self.shape]
        if len(self.shape) == 3:
            c, h, w = self.shape
            shapes += [(h, w)] if self._gray else []
            shapes += [(h, w, c), (c * h * w,)]
        text = [f"(n, {', '.join(map(str, s))})" for s in shapes]
        return f"{what}, shape " + (text[0] if len(text) == 1 else
                                    f"{', '.join(text[:-1])} or {text[-1]}")

    @property
    def _gray(self) -> bool:
        return len(self.shape) == 3 and self.shape[0] == 1

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "kind": self.kind, "scale": self.scale,
                "deskew": self.deskew}

    @classmethod
    def from_dict(cls, d: dict) -> InputForm:
        return cls(tuple(int(s) for s in d["shape"]), str(d["kind"]), float(d["scale"]),
                   bool(d["deskew"]))

    def arrange(self, x, where: str = "Ensemble") -> np.ndarray:
        """``x`` as ``(n, *shape)`` in its raw dtype (no scaling): checks the dtype, the
        values and the shape; ``(n, H, W)`` for one channel and channels-last ``(n, H, W,
        C)`` images (as image files hold them) are rearranged."""
        given = arr = as_input_array(x, where, self.describe())
        shape = self.shape
        if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape:
            pass
        elif self._gray and arr.ndim == 3 and arr.shape[1:] == shape[1:]:
            arr = arr[:, None]
        elif (len(shape) == 3 and arr.ndim == 4 and arr.shape[1:] == (*shape[1:], shape[0])):
            arr = np.moveaxis(arr, -1, 1)
        elif len(shape) == 3 and arr.ndim == 2 and arr.shape[1] == math.prod(shape):
            arr = arr.reshape(len(arr), *shape)  # flat rows (a CSV of pixels)
        else:
            raise param_error("x", where, self.describe(), describe_array(given))
        kind = arr.dtype.kind
        if self.kind == "uint8":
            ok = arr.dtype == np.uint8 or (kind in "iu" and _within(arr, 0, 255))
        elif self.kind == "integer":
            ok = (kind in "iu" and _within(arr, 0, self.scale)) or (
                kind == "f" and _within(arr, 0, self.scale) and bool(np.all(arr == np.rint(arr))))
        elif self.kind == "bool":
            ok = kind == "b" or (kind in "iu" and _within(arr, 0, 1))
        else:
            ok = kind == "f" and _within(arr, 0.0, 1.0)
        if not ok:
            raise param_error("x", where, self.describe(), describe_array(given))
        return arr

    def scaled(self, x, where: str = "Ensemble") -> np.ndarray:
        """Raw inputs -> float32 inputs in [0, 1], as the data loader reads the data set's
        files (``arrange``, then ``to_unit_float32``): ``preprocess`` before deskewing."""
        from poisoncert.data.loaders import to_unit_float32

        arr = self.arrange(x, where)
        if arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        return to_unit_float32(arr, self.scale)

    def preprocess(self, x, where: str = "Ensemble") -> np.ndarray:
        """Raw inputs -> float32 classifier inputs, as the data loader and ``split_data``
        made the run's inputs (``scaled``, then ``deskew``)."""
        out = self.scaled(x, where)
        if self.deskew:
            from poisoncert.data.transforms import deskew

            out = deskew(out)
        return out


def as_input_array(x, where: str, allowed: str) -> np.ndarray:
    """``np.asarray(x)``, or one error naming ``x`` where numpy cannot make an array of it
    (rows of unequal lengths; a tensor that requires grad): numpy's own words ("setting an
    array element with a sequence. The requested array has an inhomogeneous shape ...")
    named no parameter."""
    try:
        return np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as e:
        what = ("rows of unequal lengths" if "inhomogeneous" in str(e) else
                str(e).split(".")[0].strip() or type(e).__name__)
        raise param_error("x", where, allowed, f"a {type(x).__name__} that numpy cannot make "
                          f"an array of ({what})") from None


def input_means(x) -> np.ndarray:
    """Each input's mean value (float64, ``(n,)``) of preprocessed inputs ``x`` (``(n, ...)``
    float32): the statistic a run records of its training inputs (``ensemble.json``'s
    ``input_means``) and ``Ensemble`` compares new inputs with. The same function on both
    sides, so the same input gives the same number."""
    arr = np.asarray(x)
    return arr.reshape(len(arr), -1).mean(axis=1, dtype=np.float64)


def describe_array(x) -> str:
    """``"uint8 values 0..255, shape (5, 28, 28)"``: what an error says was given (``"float64
    values 0.0..255.0 and 1 NaN, shape ..."`` for an array holding NaN). A float32 value is
    shown as float32's shortest text (``0.9411765``, not its float64 widening
    ``0.9411764740943909``)."""
    arr = np.asarray(x)
    values = ""
    if arr.size and arr.dtype.kind in "iu":
        values = f" values {arr.min()}..{arr.max()},"
    elif arr.size and arr.dtype.kind == "f":  # a NaN is named, not shown as the range
        nan = int(np.count_nonzero(np.isnan(arr)))
        values = (" values all NaN," if nan == arr.size else
                  f" values {np.nanmin(arr)!s}..{np.nanmax(arr)!s}"  # float32 as float32
                  + (f" and {nan:,} NaN," if nan else ","))
    elif arr.size and arr.dtype.kind == "b":
        values = " booleans,"
    return f"{arr.dtype}{values} shape {arr.shape}"


def _within(arr: np.ndarray, lo: float, hi: float) -> bool:
    if arr.size == 0:
        return True
    with np.errstate(invalid="ignore"):
        a, b = arr.min(), arr.max()
    return bool(np.isfinite(a) and np.isfinite(b) and a >= lo and b <= hi)


def input_form(cfg: ExperimentConfig, input_shape) -> InputForm:
    """The raw form of ``cfg``'s data set (its files' dtype and the loader's scale)."""
    from poisoncert.data import registry

    name = cfg.data.name
    shape = tuple(int(s) for s in input_shape)
    if name.startswith("npz:"):
        kind, scale = _npz_kind(Path(name[4:]).expanduser())
    else:
        spec = registry.DATASETS[registry.ALIASES.get(name, name)]
        kind, scale = ("integer", 16.0) if spec.kind == "digits" else ("uint8", 255.0)
    return InputForm(shape, kind, scale, bool(cfg.data.deskew))


def _npz_kind(path: Path) -> tuple[str, float]:
    """The loader's reading of a data set ``.npz``: uint8 / 255, bool / 1, floats / 1."""
    with np.load(path, allow_pickle=False) as z:
        dtype = z["x_test"].dtype
    if dtype == np.uint8:
        return "uint8", 255.0
    return ("bool", 1.0) if dtype.kind == "b" else ("unit", 1.0)


class UnknownClassId(ValueError):
    """A value that is not one of a run's class ids (``value``: the first such value)."""

    def __init__(self, value):
        super().__init__(f"{value!r} is not a class id of the run")
        self.value = value


def class_indices(ids, classes) -> np.ndarray:
    """Class indices (int64) of the data set's class ids ``ids``: class index ``k`` is
    ``classes[k]``. A value that is no integer or no class id raises ``UnknownClassId``."""
    index = {int(c): k for k, c in enumerate(np.asarray(classes).tolist())}
    values = np.asarray(ids).reshape(-1).tolist()
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v not in index:
            raise UnknownClassId(v)
    return np.array([index[v] for v in values], dtype=np.int64)


class RunClasses:
    """What ``Ensemble`` and ``nnmodel.NeighborModel`` share: a run's ``classes`` (class
    index ``k`` names ``classes[k]``) and input ``form``, and the checks of ``y`` and ``x``
    that name the class in their error lines."""

    classes: np.ndarray
    form: InputForm

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.form.shape

    def encode(self, y) -> np.ndarray:
        """Class indices of original class ids.

        Parameters
        ----------
        y : array-like of int
            The data set's class ids, each one of ``classes`` (another is one error naming
            ``y``).

        Returns
        -------
        ndarray of int64
            The class index ``k`` of each (``classes[k] == y``), flat.
        """
        try:
            return class_indices(y, self.classes)
        except UnknownClassId as e:
            raise param_error("y", type(self).__name__, "class ids of the run "
                              f"({self.classes.tolist()})", e.value) from None

    def decode(self, indices) -> np.ndarray:
        """Original class ids of class indices.

        Parameters
        ----------
        indices : array-like of int
            Class indices ``0 .. K-1`` (``predict``'s, a certificate's ``prediction``), or
            ``-1``.

        Returns
        -------
        ndarray of int64, the shape of ``indices``
            ``classes[k]`` for each index ``k``; ``-1`` (an abstention or an empty rNN
            ball) stays ``-1``.
        """
        idx = np.asarray(indices, dtype=np.int64)
        return np.where(idx >= 0, self.classes[np.clip(idx, 0, None)], -1)

    def _inputs(self, x, preprocessed: bool) -> np.ndarray:
        """``x`` checked: the raw inputs arranged (``InputForm.arrange``; ``preprocess`` of
        any slice of them is that slice of ``preprocess(x)``, every step being per input), or
        when ``preprocessed`` float32 inputs of the model's shape as they are."""
        where = type(self).__name__
        if not preprocessed:
            return self.form.arrange(x, where)
        allowed = (f"float32 inputs of shape (n, {', '.join(map(str, self.input_shape))}) "
                   "when preprocessed=True")
        arr = as_input_array(x, where, allowed)
        if arr.dtype != np.float32 or arr.shape[1:] != self.input_shape:
            raise param_error("x", where, allowed,
                              f"an array of dtype {arr.dtype} and shape {arr.shape}")
        return arr


def unusual_inputs(means: np.ndarray, training_means: tuple[float, float] | None,
                   share: float) -> str | None:
    """The ``UnusualInputsWarning``'s one line where more than ``share`` of the inputs'
    ``means`` (``inputform.input_means``) lie outside ``training_means`` (the training
    inputs' range), else None (and None without a range): ``Ensemble``'s and
    ``NeighborModel``'s."""
    if training_means is None or not len(means):
        return None
    low, high = training_means
    out = ~((means >= low) & (means <= high))  # a NaN input is outside too
    k = int(np.count_nonzero(out))
    if k <= share * len(means):
        return None
    odd = means[out & ~np.isnan(means)]
    where = f" (from {odd.min():.3g} to {odd.max():.3g})" if len(odd) else ""
    who = ("the 1 input has" if len(means) == 1 else
           f"{k} of the {len(means)} inputs {'has' if k == 1 else 'have'}")
    return (f"{who} a mean value after the run's "
            f"preprocessing{where} outside the range that holds 99.8% of its training "
            f"inputs' ({low:.3g} to {high:.3g}): they do not look like the training data "
            "(inverted? another scale?); their certificates are those of the "
            "classifiers' votes on them as given.")


def training_means(record: dict) -> tuple[float, float] | None:
    """``ensemble.json``'s ``input_means`` as ``(low, high)``; None where the run recorded
    none (runs made before it) or it is not two finite numbers in order."""
    try:
        m = record["input_means"]
        low, high = float(m["low"]), float(m["high"])
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if np.isfinite(low) and np.isfinite(high) and low <= high else None


def unusual_share(record: dict) -> float:
    """The share of new inputs outside the recorded range of the training inputs' means above
    which ``Ensemble`` warns: ``UNUSUAL_SHARE``, or for a small training set ten times
    the chance that an input like them lies outside, ``2 / (n + 1)`` for ``n`` training
    inputs (below 1000 the recorded quantiles are their extremes). 9.5% of ordinary inputs lie
    outside the range of 20, which warned on most calls; the threshold there is 95% (inputs
    all unlike them still warn), 10% for 200, and below 19 training inputs it never warns."""
    try:
        n = int(record["input_means"]["n"])
    except (KeyError, TypeError, ValueError):
        return UNUSUAL_SHARE
    return max(UNUSUAL_SHARE, 20 / (n + 1)) if n > 0 else UNUSUAL_SHARE
