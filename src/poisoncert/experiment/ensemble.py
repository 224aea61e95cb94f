"""A trained run as a model in use: ``Ensemble.load(run_dir)`` predicts and certifies new
inputs given as the data set holds them.

A run that keeps its weights (``training.save_weights``, on by default for torch models)
writes ``ensemble.json`` beside them when it finishes: what turns a raw input into the
classifiers' input (the fixed per-input preprocessing: the raw dtype and shape, the scale,
deskewing), the classes, the selection facts the certificate needs (scheme, ``n = |D^p|``,
``ns`` or ``p``, ``T``, ``|D^c|``), the model and the weights files. No statistic of the
training set enters the preprocessing (docs/certificates.md, "What the certificate covers"):
every step is a function of one input alone.

``Ensemble.load`` checks the run before it predicts anything: through the run directory
(``RunDir.verify``) every file against the checksums and config hash its manifest recorded when
the run finished (``ensemble.json`` and the weights included), then the format tags, that every
weights file belongs to this run (its config hash and its classifiers' seeds), and the tensor
names, indices, shapes and dtypes of every classifier against the model; a damaged or foreign
file is one ``RunError`` naming it. ``votes``, ``predict`` and ``certify`` then run the saved
classifiers through ``training.predict`` (stacked groups, the engine's own numerics), so the
run's own test set gets exactly the predictions, votes and certificates of ``poisoncert
certify``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from poisoncert import runs, selection
from poisoncert._validation import check_choice, param_error
from poisoncert.config import ExperimentConfig, config_hash
from poisoncert.experiment.certify import certify_votes
from poisoncert.runs import RunDir, RunError
from poisoncert.votes import majority_vote, votes_from_predictions

__all__ = ["ENSEMBLE_FORMAT", "ENSEMBLE_JSON", "Ensemble", "InputForm", "describe_array",
           "input_form", "write_ensemble_record"]

ENSEMBLE_JSON = runs.ENSEMBLE
ENSEMBLE_FORMAT = "poisoncert.ensemble/1"
WEIGHTS_FORMAT = "poisoncert.training.weights/1"

#: ``display(total, completed, label)`` -> context manager yielding ``advance(k)`` (the
#: ``experiment.ProgressDisplay`` protocol; ``poisoncert.cli.progress.rich_progress``).
ProgressDisplay = Callable[[int, int, str], AbstractContextManager[Callable[[int], None]]]

#: Inputs per ``training.predict`` call (rounded to a multiple of ``eval_batch_size``, so
#: the forward passes see exactly the batches of one call over all inputs).
BLOCK = 8192


# --------------------------------------------------------------------------------------------
# The raw form of a data set's inputs


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
        what = {"uint8": "uint8 pixels 0-255", "integer": f"integers 0-{self.scale:g}",
                "bool": "booleans", "unit": "floats in [0, 1]"}[self.kind]
        return f"{what}, shape (n, {', '.join(map(str, self.shape))})" + (
            f" or (n, {', '.join(map(str, self.shape[1:]))})" if self._gray else "") + (
            f" or (n, {self.shape[1]}, {self.shape[2]}, {self.shape[0]})"
            if len(self.shape) == 3 and not self._gray else "")

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
        arr = np.asarray(x)
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
            raise param_error("x", where, self.describe(), describe_array(arr))
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
            raise param_error("x", where, self.describe(), describe_array(arr))
        return arr

    def preprocess(self, x, where: str = "Ensemble") -> np.ndarray:
        """Raw inputs -> float32 classifier inputs, as the data loader and ``split_data``
        made the run's inputs (``to_unit_float32``, then ``deskew``)."""
        from poisoncert.data.loaders import to_unit_float32

        arr = self.arrange(x, where)
        if arr.dtype.kind == "b":
            arr = arr.astype(np.uint8)
        out = to_unit_float32(arr, self.scale)
        if self.deskew:
            from poisoncert.data.transforms import deskew

            out = deskew(out)
        return out


def describe_array(x) -> str:
    """``"uint8 values 0..255, shape (5, 28, 28)"``: what an error says was given."""
    arr = np.asarray(x)
    values = ""
    if arr.size and arr.dtype.kind in "iuf":
        with np.errstate(invalid="ignore"):
            values = f" values {arr.min()}..{arr.max()},"
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


# --------------------------------------------------------------------------------------------
# Writing the record (train_run)


def write_ensemble_record(rd: RunDir, cfg: ExperimentConfig, data, ranges) -> Path:
    """Write ``ensemble.json`` for a run whose chunks and weights are all on disk."""
    summary = data.summary
    form = input_form(cfg, summary.input_shape)
    s = cfg.selection
    ns, p = s.size(summary.n)
    model = cfg.training.model
    source = model.source() if hasattr(model, "source") else None
    record = {
        "format": ENSEMBLE_FORMAT,
        "config_hash": config_hash(cfg),
        "input": form.to_dict(),
        "classes": [int(c) for c in summary.classes],
        "class_names": list(summary.class_names),
        "selection": {"scheme": s.scheme, "n": int(summary.n), "ns": ns, "p": p, "k": s.k,
                      "T": int(cfg.T), "n_clean": int(summary.n_clean), "seed": int(s.seed)},
        "model": {"model": str(model), "model_kwargs": cfg.training.model_kwargs,
                  "dtype": cfg.training.dtype, "group_size": _group(rd, cfg),
                  "eval_batch_size": cfg.training.eval_batch_size,
                  "path": cfg.execution.path, "source": source},
        "weights": [{"file": f"{runs.WEIGHTS}/{rd.weights_path(cid).name}", "start": a,
                     "stop": b} for cid, (a, b) in enumerate(ranges)],
    }
    path = rd / ENSEMBLE_JSON
    runs.save_json(path, record)
    return path


def _group(rd: RunDir, cfg: ExperimentConfig) -> int:
    """The group size the run trained with (``auto`` resolved, from its manifest)."""
    from poisoncert.training.groups import recorded_group_size

    return recorded_group_size(cfg.training, rd.load_manifest())


def weights_metadata(cfg: ExperimentConfig, start: int, stop: int, seeds) -> dict[str, str]:
    """What a chunk's weights file records about its run (checked by ``Ensemble.load``)."""
    return {"start": str(start), "stop": str(stop), "config_hash": config_hash(cfg),
            "seeds_sha256": runs.array_checksum(np.asarray(seeds, dtype=np.uint64))}


# --------------------------------------------------------------------------------------------
# The ensemble


class Ensemble:
    """The ``T`` saved classifiers of a run, their preprocessing and their certificate.

    Use ``Ensemble.load(run_dir, device="cpu")``. Inputs ``x`` are raw, as the data set's
    files hold them (``form``: uint8 pixels for MNIST and CIFAR-10, ``(n, H, W)`` or
    ``(n, C, H, W)`` or channels-last; 0-16 integers for digits; a data set ``.npz``'s dtype):
    the saved preprocessing is applied to them. Class indices ``0 .. K-1`` name
    ``classes[k]`` (the data set's original class ids; ``class_names[k]``), as in the run's
    ``predictions.npy`` and ``certificates.csv``.
    """

    def __init__(self, run_dir: Path, config: ExperimentConfig, record: dict,
                 state_dicts: list, device: str):
        self.run_dir = Path(run_dir)
        self.config = config
        self.record = record
        self.form = InputForm.from_dict(record["input"])
        self.classes = np.asarray(record["classes"], dtype=np.int64)
        self.class_names = tuple(record["class_names"])
        sel = record["selection"]
        self.scheme: str = sel["scheme"]
        self.n: int = int(sel["n"])
        self.ns: int | None = sel["ns"]
        self.p: float | None = sel["p"]
        self.T: int = int(sel["T"])
        self.n_clean: int = int(sel["n_clean"])
        self.state_dicts = state_dicts
        self.device = device
        #: What ``RunDir.verify`` said: ``{"verified": bool, "files": int, "note": str}``
        #: (``verified`` False for a run made before checksums were recorded).
        self.verification: dict = {}

    def __repr__(self) -> str:
        size = (f"k={self.T}" if self.scheme == selection.PARTITION else
                f"k={self.config.selection.k}, d={self.config.selection.d}"
                if self.scheme == selection.FINITE_AGGREGATION else
                f"ns={self.ns}" if self.ns is not None else f"p={self.p:g}")
        return (f"Ensemble({str(self.run_dir)!r}, {self.scheme}, n={self.n}, {size}, "
                f"T={self.T}, classes={self.classes.tolist()}, device={self.device!r})")

    @property
    def n_classes(self) -> int:
        return int(len(self.classes))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.form.shape

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "cpu") -> Ensemble:
        """Load and check a trained run (see the module docstring); a ``RunError`` (an
        ``OSError``) naming the file for a run that is not finished, kept no weights, or has
        a damaged or foreign file."""
        device = _check_device(device)
        rd = RunDir(run_dir)
        cfg = rd.load_config()
        if cfg.selection.scheme in selection.NEAREST_NEIGHBOURS:
            raise RunError(f"The run '{rd.path}' is a {cfg.selection.scheme} run: it has no "
                           "base classifiers to load (poisoncert certify certifies its test "
                           "set).")
        if not cfg.keeps_weights and not (rd / ENSEMBLE_JSON).is_file():
            why = ("a scikit-learn learner has no weights" if cfg.training.sklearn_learner
                   else "a two-phase run does not keep its classifiers"
                   if cfg.algorithm.two_phase else "it was trained with "
                   "training.save_weights: false")
            raise RunError(f"The run '{rd.path}' kept no classifier weights ({why}); train it "
                           "again with training.save_weights (the default for torch models) "
                           "to predict new inputs.")
        verification = rd.verify()  # checksums, config hash, arrays (poisoncert.runcheck)
        record = _read_record(rd, cfg)
        state_dicts = _read_weights(rd, cfg, record)
        ens = cls(rd.path, cfg, record, state_dicts, device)
        ens.verification = verification
        return ens

    # -- predictions -------------------------------------------------------------------------

    def preprocess(self, x) -> np.ndarray:
        """Raw inputs -> the classifiers' float inputs (the run's fixed preprocessing)."""
        return self.form.preprocess(x, "Ensemble")

    def base_predictions(self, x, *, progress: ProgressDisplay | None = None,
                         preprocessed: bool = False) -> np.ndarray:
        """Every base classifier's label on every input: int16 ``(T, n)``, ``-1`` for an
        abstaining classifier (an empty sub-dataset). ``preprocessed``: ``x`` is already the
        classifiers' float input (``preprocess``)."""
        from poisoncert import training

        xs = self._inputs(x, preprocessed)
        t = self.config.training
        n = len(xs)
        if n == 0:
            return np.empty((self.T, 0), dtype=np.int16)
        step = max(1, BLOCK // t.eval_batch_size) * t.eval_batch_size
        blocks = [(a, min(a + step, n)) for a in range(0, n, step)] or [(0, 0)]
        out = np.empty((self.T, n), dtype=np.int16)
        display = progress or _no_display
        label = f"predict {self.T} classifiers x {n} inputs"
        with display(self.T * len(blocks), 0, label) as advance:
            for a, b in blocks:
                out[:, a:b] = training.predict(
                    t, self.state_dicts, xs[a:b], input_shape=self.input_shape,
                    n_classes=self.n_classes, device=self.device,
                    path=self.config.execution.path, progress=advance)
        return out

    def votes(self, x, *, progress: ProgressDisplay | None = None,
              preprocessed: bool = False) -> np.ndarray:
        """Vote counts int64 ``(n, K)`` (rows sum to at most ``T``: abstaining classifiers
        vote for no class)."""
        return votes_from_predictions(self.base_predictions(
            x, progress=progress, preprocessed=preprocessed), self.n_classes)

    def predict(self, x, *, progress: ProgressDisplay | None = None,
                preprocessed: bool = False) -> np.ndarray:
        """The majority vote (class indices, ties to the smaller index): the ensemble's
        prediction, certified or not (``certify`` says which are)."""
        return majority_vote(self.votes(x, progress=progress, preprocessed=preprocessed))

    def certify(self, x, *, alpha: float | None = None, model: str | None = None,
                method: str | None = None, y=None, progress: ProgressDisplay | None = None,
                preprocessed: bool = False):
        """Certified prediction and radius of every input: the ``certify.Certificate`` of the
        run's setting (``DPACertificate`` for the partition scheme, ``FACertificate`` for
        finite_aggregation), computed exactly as ``poisoncert certify`` computes a run's test
        set (``certify_predictions``; the majority vote: a run's run-off election is
        ``poisoncert certify --aggregation roe`` on its test set).

        ``alpha``, ``model`` and ``method`` default to the run's ``certify`` section. ``y``:
        true classes, as the data set's original class ids (``classes``), only for the
        ``true_label*`` methods. The certificate carries ``classes``, so
        ``certify.certified_accuracy(cert, y, rhos)`` takes original class ids too.
        """
        predictions = self.base_predictions(x, progress=progress, preprocessed=preprocessed)
        return self.certify_predictions(predictions, alpha=alpha, model=model, method=method,
                                        y=y)

    def certify_predictions(self, predictions, *, alpha: float | None = None,
                            model: str | None = None, method: str | None = None, y=None):
        """``certify`` from the base classifiers' labels (``base_predictions(x)``): the same
        certificate. A finite_aggregation run is certified from them
        (``aggregation.fa_certify``: which classifiers voted matters), every other scheme
        from their vote counts (``certify_votes``)."""
        predictions = np.asarray(predictions)
        if self.scheme != selection.FINITE_AGGREGATION:
            return self.certify_votes(votes_from_predictions(predictions, self.n_classes),
                                      alpha=alpha, model=model, method=method, y=y)
        from poisoncert.aggregation import fa_certify

        c = self._settings(alpha, method, model)
        cert = fa_certify(predictions, d=self.config.selection.d, n_classes=self.n_classes,
                          model=c.model)
        return dataclasses.replace(cert, classes=self.classes)

    def certify_votes(self, votes, *, alpha: float | None = None, model: str | None = None,
                      method: str | None = None, y=None):
        """``certify`` from vote counts (``votes(x)``): the same certificate (not for a
        finite_aggregation run, whose certificate needs ``certify_predictions``)."""
        c = self._settings(alpha, method, model)
        labels = None if y is None else self.encode(y)
        cert = certify_votes(self.config, self.n, np.asarray(votes), labels, alpha=c.alpha,
                             method=c.method, model=c.model)
        return dataclasses.replace(cert, classes=self.classes)

    def _settings(self, alpha, method, model):
        """The run's ``certify`` section with the options given."""
        options = {k: v for k, v in (("alpha", alpha), ("method", method), ("model", model))
                   if v is not None}
        return dataclasses.replace(self.config.certify, **options)

    def encode(self, y) -> np.ndarray:
        """Class indices of original class ids ``y`` (each must be one of ``classes``)."""
        y = np.asarray(y).reshape(-1)
        idx = {int(c): k for k, c in enumerate(self.classes)}
        try:
            return np.array([idx[int(v)] for v in y], dtype=np.int64)
        except (KeyError, TypeError, ValueError):
            bad = next(v for v in y.tolist() if not _is_int(v) or int(v) not in idx)
            raise param_error("y", "Ensemble", f"class ids of the run ({self.classes.tolist()})",
                              bad) from None

    def decode(self, indices) -> np.ndarray:
        """Original class ids of class indices (``-1``, ABSTAIN, stays ``-1``)."""
        idx = np.asarray(indices, dtype=np.int64)
        return np.where(idx >= 0, self.classes[np.clip(idx, 0, None)], -1)

    def _inputs(self, x, preprocessed: bool) -> np.ndarray:
        if not preprocessed:
            return self.preprocess(x)
        arr = np.asarray(x)
        if arr.dtype != np.float32 or arr.shape[1:] != self.input_shape:
            raise param_error("x", "Ensemble", "float32 inputs of shape (n, "
                              f"{', '.join(map(str, self.input_shape))}) when preprocessed=True",
                              f"an array of dtype {arr.dtype} and shape {arr.shape}")
        return arr


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _no_display(total: int, completed: int, label: str):
    from contextlib import nullcontext

    return nullcontext(lambda k: None)


def _check_device(device) -> str:
    text = str(device).strip().lower()
    kind = text.split(":", 1)[0]
    check_choice(kind, "device", "Ensemble.load", ("cpu", "cuda"))
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise param_error("device", "Ensemble.load", "'cpu' (no CUDA device is available)",
                              device)
    return text


# --------------------------------------------------------------------------------------------
# Checks


def _read_record(rd: RunDir, cfg: ExperimentConfig) -> dict:
    path = rd / ENSEMBLE_JSON
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"'{path}' is missing: the run is not finished (run train again to "
                       "finish it).") from None
    except (OSError, ValueError) as e:
        raise RunError(f"'{path}' is damaged: it is not readable JSON ({e}).") from None
    if not isinstance(record, dict) or record.get("format") != ENSEMBLE_FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise RunError(f"'{path}' is not a poisoncert ensemble record: its format is {got!r}, "
                       f"expected {ENSEMBLE_FORMAT!r}.")
    if record.get("config_hash") != config_hash(cfg):
        raise RunError(f"'{path}' belongs to another run: its config hash "
                       f"{str(record.get('config_hash'))[:12]}... is not this run's "
                       f"{config_hash(cfg)[:12]}....")
    try:
        sel, form = record["selection"], InputForm.from_dict(record["input"])
        ok = (sel["scheme"] == cfg.selection.scheme and int(sel["T"]) == cfg.T
              and len(record["classes"]) == len(record["class_names"]) >= 2
              and len(form.shape) in (1, 3) and form.kind in ("uint8", "integer", "bool",
                                                                "unit"))
        ranges = runs.chunk_ranges(cfg.T, cfg.run.chunk_size, _group(rd, cfg))
        ok = ok and [(int(w["start"]), int(w["stop"])) for w in record["weights"]] == ranges
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise RunError(f"'{path}' is damaged: its fields do not describe this run's config.")
    source = (record.get("model") or {}).get("source")
    model = cfg.training.model
    if source and hasattr(model, "source"):
        now = model.source()
        if source.get("sha256") and now.get("sha256") != source["sha256"]:
            raise RunError(f"The model code {now.get('file')} of '{model}' has changed since the "
                           f"run was trained (SHA-256 {source['sha256'][:12]}... then, "
                           f"{str(now.get('sha256'))[:12]}... now): its classifiers would "
                           "not be the certified ones.")
    return record


def _reference(cfg: ExperimentConfig, record: dict) -> dict:
    """Tensor names -> (shape, dtype) of one classifier of the run's model."""
    from poisoncert import training

    t = cfg.training
    model = training.build_model(t.model, InputForm.from_dict(record["input"]).shape,
                                 len(record["classes"]))
    return {k: (tuple(v.shape), t.torch_dtype if v.is_floating_point() else v.dtype)
            for k, v in model.state_dict().items()}


def _read_weights(rd: RunDir, cfg: ExperimentConfig, record: dict) -> list:
    """Every classifier's state dict (``None`` for an abstaining one), checked."""
    from safetensors import SafetensorError, safe_open

    seeds = rd.load(runs.SEEDS)
    sizes = rd.load(runs.SUBSET_SIZES)
    n_clean = int(record["selection"]["n_clean"])
    if seeds.shape != (cfg.T,) or sizes.shape != (cfg.T,):
        raise RunError(f"The run '{rd.path}' is damaged: {runs.SEEDS} or {runs.SUBSET_SIZES} "
                       f"does not hold {cfg.T} classifiers.")
    ref = _reference(cfg, record)
    want_hash = config_hash(cfg)
    out: list = []
    for w in record["weights"]:
        start, stop = int(w["start"]), int(w["stop"])
        path = rd / w["file"]
        if not path.is_file():
            raise RunError(f"The weights file '{path}' is missing: its chunk was trained "
                           "without keeping weights (training.save_weights: false when it "
                           "ran); train the run again into a new run directory.")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                keys = list(f.keys())
                tensors = {k: f.get_tensor(k) for k in keys}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise RunError(f"The weights file '{path}' is damaged or not a safetensors file "
                           f"({' '.join(str(e).split())}).") from None
        expect_meta = weights_metadata(cfg, start, stop, seeds[start:stop])
        if meta.get("format") != WEIGHTS_FORMAT:
            raise RunError(f"The weights file '{path}' is not a poisoncert weights file (format "
                           f"{meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}).")
        if (meta.get("start"), meta.get("stop"), meta.get("n_models")) != (
                str(start), str(stop), str(stop - start)):
            raise RunError(f"The weights file '{path}' does not hold classifiers "
                           f"{start}..{stop - 1} (it says {meta.get('start')}.."
                           f"{meta.get('stop')}).")
        if meta.get("config_hash") != want_hash or meta.get("seeds_sha256") != expect_meta[
                "seeds_sha256"]:
            raise RunError(f"The weights file '{path}' belongs to another run (its config hash "
                           f"or classifier seeds are not this run's).")
        chunk = _chunk_state_dicts(path, tensors, stop - start, ref)
        for j, sd in enumerate(chunk):
            empty = int(sizes[start + j]) == 0 and n_clean == 0
            if (sd is None) != empty:
                raise RunError(f"The weights file '{path}' is damaged: classifier {start + j} "
                               + ("has weights but its sub-dataset is empty." if empty else
                                  "has no weights."))
        out.extend(chunk)
    return out


def _chunk_state_dicts(path: Path, tensors: dict, n_models: int, ref: dict) -> list:
    chunk: list = [None] * n_models
    for key, t in tensors.items():
        i_text, _, name = key.partition(".")
        if not i_text.isdigit() or int(i_text) >= n_models or name not in ref:
            raise RunError(f"The weights file '{path}' is damaged: tensor {key!r} is not a "
                           f"tensor of classifier 0..{n_models - 1} of this model.")
        shape, dtype = ref[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            raise RunError(f"The weights file '{path}' does not fit the run's model: tensor "
                           f"{key!r} is {t.dtype} {tuple(t.shape)}, the model's is {dtype} "
                           f"{shape}.")
        i = int(i_text)
        if chunk[i] is None:
            chunk[i] = {}
        chunk[i][name] = t
    for i, sd in enumerate(chunk):
        if sd is not None and set(sd) != set(ref):
            missing = sorted(set(ref) - set(sd))
            raise RunError(f"The weights file '{path}' is damaged: classifier {i} of the file "
                           f"lacks {', '.join(missing)}.")
    return chunk
