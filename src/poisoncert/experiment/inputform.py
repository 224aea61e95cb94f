"""The raw form of a data set's inputs: how one raw input becomes a classifier input.

``InputForm`` (recorded in a run's ``ensemble.json``) checks raw inputs, as the data set's
files hold them, and applies the fixed per-input preprocessing (scale, deskewing); no
statistic of the training set enters it. Used by ``Ensemble`` and ``read_inputs``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from poisoncert._validation import param_error
from poisoncert.config import ExperimentConfig

__all__ = ["InputForm", "UnknownClassId", "class_indices", "describe_array", "input_form",
           "input_means"]


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
        given = arr = np.asarray(x)
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


def input_means(x) -> np.ndarray:
    """Each input's mean value (float64, ``(n,)``) of preprocessed inputs ``x`` (``(n, ...)``
    float32): the statistic a run records of its training inputs (``ensemble.json``'s
    ``input_means``) and ``Ensemble`` compares new inputs with. The same function on both
    sides, so the same input gives the same number."""
    arr = np.asarray(x)
    return arr.reshape(len(arr), -1).mean(axis=1, dtype=np.float64)


def describe_array(x) -> str:
    """``"uint8 values 0..255, shape (5, 28, 28)"``: what an error says was given (``"float64
    values 0.0..255.0 and 1 NaN, shape ..."`` for an array holding NaN)."""
    arr = np.asarray(x)
    values = ""
    if arr.size and arr.dtype.kind in "iu":
        values = f" values {arr.min()}..{arr.max()},"
    elif arr.size and arr.dtype.kind == "f":  # a NaN is named, not shown as the range
        nan = int(np.count_nonzero(np.isnan(arr)))
        values = (" values all NaN," if nan == arr.size else
                  f" values {np.nanmin(arr)}..{np.nanmax(arr)}"
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
