"""A trained run as a model in use: ``Ensemble.load(run_dir)`` predicts and certifies new
inputs given as the data set holds them.

A run that keeps its weights (``training.save_weights``, on by default for torch models)
writes ``ensemble.json`` beside them when it finishes: what turns a raw input into the
classifiers' input (the fixed per-input preprocessing: the raw dtype and shape, the scale,
deskewing), the classes, the selection facts the certificate needs (scheme, ``n = |D^p|``,
``ns`` or ``p``, ``T``, ``|D^c|``), the model and the weights files. No statistic of the
training set enters the preprocessing (docs/certificates.md, "Setting and notation"):
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
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from poisoncert import selection
from poisoncert._validation import check_int_array, named_as, param_error
from poisoncert.config import ExperimentConfig
from poisoncert.experiment.certify import DETERMINISTIC, certify_votes
from poisoncert.experiment.certify import certify_options as _certify_options
from poisoncert.experiment.display import ProgressDisplay, progress_display
from poisoncert.experiment.display import takes_unit as _takes_unit
from poisoncert.experiment.ensemble_record import (
    ENSEMBLE_FORMAT,
    ENSEMBLE_JSON,
    WEIGHTS_FORMATS,
    read_record,
    read_weights,
    run_path,
    weights_metadata,
    write_ensemble_record,
)
from poisoncert.experiment.inputform import (
    UNUSUAL_SHARE,
    InputForm,
    RunClasses,
    UnusualInputsWarning,
    describe_array,
    input_form,
    input_means,
    outside_stacklevel,
    unusual_inputs,
    unusual_share,
)
from poisoncert.experiment.inputform import training_means as _training_means
from poisoncert.experiment.model import common_description
from poisoncert.runs import RunDir, RunError
from poisoncert.votes import ABSTAIN, majority_vote, votes_from_predictions

if TYPE_CHECKING:
    from poisoncert.experiment.nnmodel import NeighborModel

__all__ = ["ENSEMBLE_FORMAT", "ENSEMBLE_JSON", "UNUSUAL_SHARE", "WEIGHTS_FORMATS", "Ensemble",
           "InputForm", "UnusualInputsWarning", "check_predict_memory", "check_run_options",
           "describe_array", "input_form", "unusual_inputs", "weights_metadata",
           "write_ensemble_record"]

#: Inputs per ``training.predict`` call (rounded to a multiple of ``eval_batch_size``, so
#: the forward passes see exactly the batches of one call over all inputs).
BLOCK = 8192

# --------------------------------------------------------------------------------------------
# The ensemble


def _check_predictions_fit(T: int, n: int, n_classes: int) -> None:
    """Refuse (``resources.ResourceError``) ``n`` inputs whose predictions by ``T``
    classifiers (int16) and vote counts (int64) would not fit in memory, before any is made
    (an input file that fits can still ask for ``T`` times more)."""
    from poisoncert import resources

    one = T * 2 + n_classes * 16
    need = n * one
    if resources.small_need(need):  # no reading of /proc
        return
    avail = resources.shortfall(need)
    if avail is not None:
        most = int(avail[0] / resources.SAFETY // one)
        fit = (f"Give at most {most:,} inputs at a time." if most else
               "Not even one input's fits: free memory first.")
        raise resources.ResourceError(
            f"The predictions of {n:,} inputs by {T} base classifiers do not fit in memory: "
            f"they need about {resources.format_bytes(need)}; "
            f"{resources.available_words(*avail)}. {fit}")


#: Bytes ``predict`` holds for each input until its rows are written, besides the input
#: itself: per class, its vote count (int64) and as much again twice over while they are
#: certified (a finite_aggregation certificate keeps counts of its own, joined from its
#: blocks); and the certificate's arrays (6 of 8 bytes) with their transients. tracemalloc,
#: 100,000 inputs of a two-class run: 64 bytes held, 125 at the peak (40 + 128 counted).
PREDICT_CLASS_BYTES, PREDICT_INPUT_BYTES = 24, 128
#: Rows ``predict`` makes and writes at a time (``certificate_row_blocks``' ``block``): the
#: rows' Python objects and their text are held for one block alone.
PREDICT_ROW_BLOCK = 2048
#: Bytes of a row's Python objects while its block is made into text, beside the text
#: itself (held twice: the text and its encoding). tracemalloc, blocks of 8,192 rows: 2.6 KB
#: a CSV row of 191 bytes, 7.3 KB a JSON row of 610 (2 x the text + these: 2.9, 7.9 KB).
ROW_OBJECT_BYTES = {"CSV": 2560, "JSON": 6656}


def check_predict_memory(T: int, n: int, n_classes: int, row_text: int, fmt: str, *,
                         block: int = BLOCK, input_size: int = 0) -> None:
    """``predict``'s check before any prediction: what it holds, with ``n`` inputs read.
    For every input its vote counts and certificate (``PREDICT_CLASS_BYTES`` a class and
    ``PREDICT_INPUT_BYTES``); for one block of ``block`` inputs at a time their
    predictions by ``T`` classifiers (int16; 0 for a knn / rnn run) and their classifier
    inputs (``input_size`` float32 numbers each, 8 bytes a number counted: deskewing's
    copies); for one block of
    ``PREDICT_ROW_BLOCK`` rows their objects and text (``row_text``: bytes of a row at most,
    ``certify.row_text_bound`` times the bytes of a character in memory) as ``fmt`` (CSV or
    JSON). The output is written as its rows are made (nothing grows with ``n`` but the
    first part). A ``resources.ResourceError`` naming INPUTS and the most inputs that fit,
    or that not even one does."""
    from poisoncert import resources

    def need(m: int) -> tuple[int, int, int]:
        held = m * (PREDICT_CLASS_BYTES * n_classes + PREDICT_INPUT_BYTES)
        inputs = min(m, block) * (2 * T + 8 * input_size)
        rows = min(m, PREDICT_ROW_BLOCK) * (ROW_OBJECT_BYTES[fmt] + 2 * row_text)
        return held, inputs, rows

    total = sum(need(n))
    if resources.small_need(total):  # no reading of /proc
        return
    avail = resources.shortfall(total)
    if avail is None:
        return

    def fits(m: int) -> bool:
        return resources.shortfall(sum(need(m)), avail) is None

    lo, hi = 0, n - 1  # the most inputs that fit: lo fits (none needs nothing), hi + 1 not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    held, inputs, rows = (resources.format_bytes(b) for b in need(n))
    what = (f"it needs about {resources.format_bytes(total)}: {held} for the {n:,} inputs' "
            f"vote counts and certificates, {rows} for a block of {min(n, PREDICT_ROW_BLOCK):,} "
            f"{fmt} rows (at most {row_text:,} bytes each) and {inputs} for a block of "
            f"{min(n, block):,} inputs' predictions; {resources.available_words(*avail)}")
    allowed = (f"a file of at most {lo:,} inputs for their certificates to fit in memory "
               f"({what})" if lo else
               f"a file whose certificates fit in memory: not even one input's does ({what}); "
               "free memory first")
    # param_error's shape, the count given as a count (it would quote a text)
    raise resources.ResourceError(f"The 'INPUTS' parameter of predict must be {allowed}. "
                                  f"Got {n:,} inputs instead.")


class Ensemble(RunClasses):
    """The ``T`` saved classifiers of a run, their preprocessing and their certificate.

    Use ``Ensemble.load(run_dir, device="cpu")``. Inputs ``x`` are raw, as the data set's
    files hold them (``form``: uint8 pixels for MNIST and CIFAR-10, ``(n, H, W)`` or
    ``(n, C, H, W)`` or channels-last; 0-16 integers for digits; a data set ``.npz``'s dtype):
    the saved preprocessing is applied to them. Class indices ``0 .. K-1`` name
    ``classes[k]`` (the data set's original class ids; ``class_names[k]``), as in the run's
    ``predictions.npy`` and ``certificates.csv``.

    An ``Ensemble`` is a ``model.CertifiedModel``, as a knn / rnn run's ``NeighborModel``
    (which ``load`` gives for such a run) is: ``preprocess``, ``votes``, ``predict``,
    ``certify``, ``check_options``, ``encode``, ``decode`` and ``describe`` take the same
    arguments and give the same kinds of results on either. Its own, which a neighbour model
    has no counterpart of: ``T``, ``ns``, ``p``, ``n_clean``, ``base_predictions``,
    ``certify_predictions`` and ``certify_votes``.
    """

    def __init__(self, run_dir: Path, config: ExperimentConfig, record: dict,
                 state_dicts: list, device: str, path: str):
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
        #: The engine path the run trained with (``fast`` resolved; its manifest's record):
        #: the stacked formulation ``predict`` evaluates the classifiers with.
        self.path = path
        #: What ``RunDir.verify`` said: ``{"verified": bool, "files": int, "note": str}``
        #: (``verified`` False for a run made before checksums were recorded).
        self.verification: dict = {}
        #: ``(low, high)``: the range of 99.8% of the training inputs' means after
        #: preprocessing (``ensemble.json``'s ``input_means``); None for a run that did not
        #: record it (then no ``UnusualInputsWarning``).
        self.training_means: tuple[float, float] | None = _training_means(record)
        #: The share of the inputs outside ``training_means`` above which it warns
        #: (``UNUSUAL_SHARE``, more for a small training set: ``unusual_share``).
        self.unusual_share: float = unusual_share(record)

    def __repr__(self) -> str:
        size = (f"k={self.T}" if self.scheme == selection.PARTITION else
                f"k={self.config.selection.k}, d={self.config.selection.d}"
                if self.scheme == selection.FINITE_AGGREGATION else
                f"ns={self.ns}" if self.ns is not None else f"p={self.p:g}")
        return (f"Ensemble({str(self.run_dir)!r}, {self.scheme}, n={self.n}, {size}, "
                f"T={self.T}, classes={self.classes.tolist()}, device={self.device!r})")

    @property
    def deterministic(self) -> bool:
        """True for the partition and finite_aggregation schemes (``alpha`` and ``method``
        do not apply, and are refused); False for the randomized schemes, whose every
        radius holds with probability at least ``1 - alpha`` over the draw of the
        sub-datasets."""
        return self.scheme in DETERMINISTIC

    def describe(self) -> dict:
        """The ensemble in plain values (JSON-serialisable).

        Returns
        -------
        dict
            ``model.common_description``'s keys (``kind`` ``"ensemble"``, ``scheme``, ``n``,
            ``n_classes``, ``classes``, ``class_names``, ``input``, ``input_shape``,
            ``device``, ``deterministic``, ``certify``, ``radius_unit``, ``run_dir``) and an
            ensemble's own: ``T`` (base classifiers), ``ns`` or ``p`` (None where the scheme
            has neither), ``n_clean`` (``|D^c|``), and ``d`` for finite_aggregation (None
            otherwise).
        """
        d = self.config.selection.d if self.scheme == selection.FINITE_AGGREGATION else None
        return {**common_description(self, "ensemble"), "T": int(self.T),
                "ns": None if self.ns is None else int(self.ns),
                "p": None if self.p is None else float(self.p),
                "n_clean": int(self.n_clean), "d": None if d is None else int(d)}

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "cpu",
             verify_progress=None) -> Ensemble | NeighborModel:
        """Load and check a trained run (see the module docstring).

        Parameters
        ----------
        run_dir : str or Path
            A finished run directory.
        device : str, default="cpu"
            ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``: where the classifiers predict
            (``"cpu"`` only for a knn / rnn run), checked before any file is read.
        verify_progress : None, bool or ProgressDisplay, default=None
            A display of the checksums read (MiB; as ``certify_run``'s ``progress``).

        Returns
        -------
        Ensemble or NeighborModel
            An ``Ensemble``; for a knn / rnn run, which has no base classifiers, a
            ``nnmodel.NeighborModel``. Either is a ``model.CertifiedModel``: the same
            ``preprocess``, ``votes``, ``predict``, ``certify`` and ``describe``.

        Raises
        ------
        RunError
            (An ``OSError``) naming the file, for a run that is not finished, kept no
            weights, or has a damaged or foreign file.
        """
        device = _check_device(device)
        from poisoncert.experiment.display import checksum_display

        display = checksum_display(verify_progress, "Ensemble.load")
        rd = RunDir(run_dir)
        cfg = rd.load_config()
        if cfg.selection.scheme in selection.NEAREST_NEIGHBOURS:
            # no base classifiers: the training data are the model (checked against the run)
            from poisoncert.experiment.nnmodel import NeighborModel

            if device != "cpu":  # (it was ignored)
                raise param_error("device", "Ensemble.load", f"'cpu' for a "
                                  f"{cfg.selection.scheme} run (the neighbour search runs on "
                                  "the CPU)", device)

            return NeighborModel.load(run_dir, verify_progress=display)  # on the CPU
        if not cfg.keeps_weights and not (rd / ENSEMBLE_JSON).is_file():
            if cfg.training.sklearn_learner:
                why, then = ("a scikit-learn learner has no weights", "predicting new inputs "
                             "needs a torch model (training.model)")
            elif cfg.algorithm.two_phase:
                why, then = ("a two-phase run does not keep its classifiers", "predicting new "
                             "inputs needs a run without training.two_phase")
            else:  # the run's own config, weights kept: the same run, into a new folder
                import shlex

                from poisoncert.runs import CONFIG
                why, then = ("it was trained with training.save_weights: false", "to predict "
                             "new inputs, train it again keeping them: poisoncert train "
                             f"{shlex.quote(str(rd / CONFIG))} --training.save_weights true "
                             "--run-dir NEW_DIR")
            raise RunError(f"The run '{rd.path}' kept no classifier weights ({why}); {then}.")
        # checksums, config hash, arrays (poisoncert.runcheck)
        verification = rd.verify() if display is None else rd.verify(display)
        record = read_record(rd, cfg)
        state_dicts = read_weights(rd, cfg, record)
        ens = cls(rd.path, cfg, record, state_dicts, device, run_path(rd, cfg))
        ens.verification = verification
        return ens

    # -- predictions -------------------------------------------------------------------------

    def preprocess(self, x) -> np.ndarray:
        """Raw inputs -> the classifiers' inputs (the run's fixed preprocessing).

        Parameters
        ----------
        x : array-like of raw inputs
            As ``votes`` takes them (``form.describe()``), checked the same way.

        Returns
        -------
        ndarray of float32, shape ``(n, *input_shape)``
            Scaled to [0, 1] (and deskewed where the run was): what ``votes``, ``predict``
            and ``certify`` take with ``preprocessed=True``.
        """
        return self.form.preprocess(x, "Ensemble")

    def base_predictions(self, x, *, progress: ProgressDisplay | None = None,
                         preprocessed: bool = False) -> np.ndarray:
        """Every base classifier's label on every input.

        Parameters
        ----------
        x, progress, preprocessed :
            As for ``votes``.

        Returns
        -------
        ndarray of int16, shape ``(T, n)``
            Row ``i``: classifier ``i``'s class indices (``0 .. K-1``), ``-1`` where it
            abstains (an empty sub-dataset, or non-finite outputs). ``certify_predictions``
            certifies it.
        """
        # checked whole, preprocessed a block at a time: the classifiers' float inputs of all
        # of them at once took 4 (8 with deskewing) times the raw uint8 inputs' memory
        xs = self._inputs(x, preprocessed)
        n = len(xs)
        if n == 0:
            return np.empty((self.T, 0), dtype=np.int16)
        _check_predictions_fit(self.T, n, self.n_classes)
        out = np.empty((self.T, n), dtype=np.int16)
        for a, b, block in self._prediction_blocks(xs, progress, preprocessed):
            out[:, a:b] = block
        return out

    def prediction_blocks(self, x, *, progress: ProgressDisplay | None = None,
                          preprocessed: bool = False):
        """``base_predictions`` a block of inputs at a time, in bounded memory: a generator
        of ``(start, stop, predictions)``, the columns ``start:stop`` of
        ``base_predictions(x)`` (the same numbers: the blocks are those it computes), so that
        many inputs can be certified and written without the whole ``(T, n)`` matrix.

        Parameters
        ----------
        x, progress, preprocessed :
            As for ``votes``; ``x`` is checked before the first block. One display counts
            the predictions of every block (``T * n``), and the ``UnusualInputsWarning`` is
            given once, for all the inputs, after the last block.

        Returns
        -------
        generator of (int, int, ndarray of int16, shape ``(T, stop - start)``)
            Blocks of ``BLOCK`` inputs (rounded to a multiple of the run's
            ``eval_batch_size``) in order, the last one shorter; none for no inputs.
        """
        xs = self._inputs(x, preprocessed)  # (a generator: checked at the first block)
        yield from self._prediction_blocks(xs, progress, preprocessed)

    def _prediction_blocks(self, xs: np.ndarray, progress, preprocessed: bool):
        """The blocks of ``prediction_blocks`` for checked inputs ``xs`` (the warning given
        at the first caller outside the package: ``outside_stacklevel``)."""
        from poisoncert import training

        t = self.config.training
        n = len(xs)
        if n == 0:
            return
        step = max(1, BLOCK // t.eval_batch_size) * t.eval_batch_size
        # abstaining classifiers (empty sub-datasets) are done before the work begins: the
        # display opens with them, so that the rate counts only predictions made
        live = [i for i, sd in enumerate(self.state_dicts) if sd is not None]
        state_dicts = [self.state_dicts[i] for i in live]
        display = progress_display(progress, "Ensemble")
        # one unit is one classifier's label on one input, reported as each chunk of
        # eval_batch_size inputs is through a group: a display in whole classifiers moved
        # once per block of 8,192 inputs (4 ResNet-18s on 192 CIFAR-10 images on the CPU:
        # 0/4, no rate, no ETA, for the whole 113 s; now a first update after 37 s)
        kw = {"unit": "predictions"} if _takes_unit(display) else {}
        label = f"predict {self.T} classifiers x {n} inputs"
        means = np.full(n, np.nan)  # each input's mean after preprocessing: the warning's
        with display(self.T * n, (self.T - len(live)) * n, label, **kw) as advance:
            for a in range(0, n, step):
                b = min(a + step, n)
                out = np.full((self.T, b - a), ABSTAIN, dtype=np.int16)
                if live:
                    block = xs[a:b] if preprocessed else self.form.preprocess(xs[a:b])
                    means[a:b] = input_means(block)
                    out[live] = training.predict(
                        t, state_dicts, block, input_shape=self.input_shape,
                        n_classes=self.n_classes, device=self.device,
                        path=self.path, progress=advance, progress_unit="predictions")
                    del block
                yield a, b, out
        if live and (text := self._unusual(means)) is not None:
            warnings.warn(text, UnusualInputsWarning, stacklevel=outside_stacklevel())

    def _unusual(self, means: np.ndarray) -> str | None:
        """The ``UnusualInputsWarning``'s one line where more than ``unusual_share`` of the
        inputs' means lie outside the training inputs' range, else None (and None for a run
        that recorded no range)."""
        return unusual_inputs(means, self.training_means, self.unusual_share)

    def votes(self, x, *, progress: ProgressDisplay | None = None,
              preprocessed: bool = False) -> np.ndarray:
        """The base classifiers' vote counts on each input.

        Parameters
        ----------
        x : array-like, shape ``(n, ...)``
            ``n`` raw inputs as the data set's files hold them (``form.describe()`` names the
            run's values and shapes; a numpy array, a nested list or a CPU torch tensor, or
            anything ``numpy.asarray`` reads): for MNIST and CIFAR-10 pixels 0-255 of an
            integer dtype (uint8 as the files hold them; floats are refused), for
            scikit-learn's digits integers 0-16 (floats holding whole numbers too), for a
            data set ``.npz`` its ``x_test``'s kind (uint8 pixels, booleans, or floats in
            [0, 1]). Shapes: ``(n, C, H, W)``, channels-last ``(n, H, W, C)``, ``(n, H,
            W)`` for one channel, or flat rows ``(n, C * H * W)``; ``(n, F)`` for vectors.
            One input is a batch of one, ``x[None]``. The run's preprocessing (scale,
            deskewing) is applied to them.
            Another dtype, value range or shape is one ``ValueError`` naming ``x``, before
            any classifier runs.
        progress : None, bool or ProgressDisplay, default=None
            None or False: no display; True: the command line's bar (on stderr); or a
            ``experiment.display.ProgressDisplay``: ``display(total, completed, label)`` (and
            ``unit="predictions"`` where it takes a ``unit``), a context manager yielding
            ``advance(k)``. It counts predictions (one classifier on one input): ``total`` is
            ``T * n``, ``completed`` the abstaining classifiers' ``(T - live) * n``.
        preprocessed : bool, default=False
            True: ``x`` is already the classifiers' input, the float32 array of shape ``(n,
            *input_shape)`` that ``preprocess`` returns (any other dtype or shape is refused;
            its values are not checked).

        Returns
        -------
        ndarray of int64, shape ``(n, K)``
            Column ``k`` counts the votes for class index ``k`` (``classes[k]``); each row
            sums to at most ``T`` (abstaining classifiers vote for no class).

        Warns
        -----
        UnusualInputsWarning
            Where more than ``unusual_share`` of the inputs' means after preprocessing lie
            outside the training inputs' range (an inverted image, another scale); the
            votes are those of the inputs as given.
        """
        return votes_from_predictions(self.base_predictions(
            x, progress=progress, preprocessed=preprocessed), self.n_classes)

    def predict(self, x, *, progress: ProgressDisplay | None = None,
                preprocessed: bool = False) -> np.ndarray:
        """The ensemble's prediction on each input, certified or not (``certify`` says which
        are): the majority vote of ``votes``.

        Parameters
        ----------
        x, progress, preprocessed :
            As for ``votes``.

        Returns
        -------
        ndarray of int64, shape ``(n,)``
            Class indices ``0 .. K-1`` (ties to the smaller index; ``decode`` gives the data
            set's class ids), ``-1`` (``votes.ABSTAIN``) where no classifier voted.
        """
        return majority_vote(self.votes(x, progress=progress, preprocessed=preprocessed))

    def certify(self, x, *, alpha: float | None = None, model: str | None = None,
                method: str | None = None, y=None, progress: ProgressDisplay | None = None,
                preprocessed: bool = False):
        """Certified prediction and radius of every input, computed exactly as ``poisoncert
        certify`` computes a run's test set (``certify_predictions``; the majority vote: a
        run's run-off election is ``poisoncert certify --aggregation roe`` on its test set).
        ``alpha``, ``model``, ``method`` and ``y`` are checked before any classifier runs.

        Parameters
        ----------
        x, progress, preprocessed :
            As for ``votes``.
        alpha : float in (0, 1), optional
            Error probability per input (randomized schemes); default: the run's
            ``certify.alpha``.
        model : {"P1", ..., "P6"}, optional
            Poisoning model; default: the run's ``certify.model``.
        method : str, optional
            Vote-bound method (``stats.vote_bounds``); default: the run's ``certify.method``.
        y : array-like of shape ``(n,)``, optional
            True classes as the data set's original class ids (``classes``), for the
            ``true_label*`` methods only (refused with any other method and for the
            deterministic schemes).

        Returns
        -------
        Certificate, DPACertificate or FACertificate
            ``certify.Certificate`` (``DPACertificate`` for the partition scheme,
            ``aggregation.FACertificate`` for finite_aggregation), its docstring stating the
            guarantee: ``prediction`` (int64 class indices, ``ABSTAIN`` = -1 where nothing
            is certified) and ``radius`` (int64, -1 there), shape ``(n,)``. It carries
            ``classes``, so ``cert.predicted_labels()`` gives class ids (None where it
            abstains) and ``certify.certified_accuracy(cert, y, rhos)`` takes original
            class ids.
        """
        c = self._settings(alpha, method, model, "Ensemble.certify", y)  # before the predictions
        if y is not None or (self.scheme not in DETERMINISTIC
                             and c.method.startswith("true_label")):
            # the labels too: missing, of unknown classes or of another length, they were
            # refused only once every base classifier had run on every input
            self._check_y(y, len(self._inputs(x, preprocessed)), c.method)
        predictions = self.base_predictions(x, progress=progress, preprocessed=preprocessed)
        with named_as("Ensemble.certify", y="y"):
            return self.certify_predictions(predictions, alpha=alpha, model=model,
                                            method=method, y=y)

    def certify_predictions(self, predictions, *, alpha: float | None = None,
                            model: str | None = None, method: str | None = None, y=None):
        """``certify`` from the base classifiers' labels (``base_predictions(x)``): the same
        certificate. A finite_aggregation run is certified from them
        (``aggregation.fa_certify``: which classifiers voted matters), every other scheme
        from their vote counts (``certify_votes``).

        Parameters
        ----------
        predictions : int array-like, shape ``(T, n)``
            One row per classifier of the run in its order, labels ``-1 .. K-1``
            (``base_predictions``' int16 matrix is taken as it is): the certificate is that
            of this ensemble's votes.
        alpha, model, method, y :
            As for ``certify``.

        Returns
        -------
        Certificate, DPACertificate or FACertificate
            As ``certify`` returns.
        """
        predictions = self._check_predictions(predictions, "Ensemble.certify_predictions")
        if self.scheme != selection.FINITE_AGGREGATION:
            return self.certify_votes(votes_from_predictions(predictions, self.n_classes),
                                      alpha=alpha, model=model, method=method, y=y)
        from poisoncert.aggregation import fa_certify

        c = self._settings(alpha, method, model, "Ensemble.certify_predictions", y)
        cert = fa_certify(predictions, d=self.config.selection.d, n_classes=self.n_classes,
                          model=c.model)
        return dataclasses.replace(cert, classes=self.classes)

    def certify_votes(self, votes, *, alpha: float | None = None, model: str | None = None,
                      method: str | None = None, y=None):
        """``certify`` from vote counts (``votes(x)``): the same certificate (not for a
        finite_aggregation run, whose certificate needs ``certify_predictions``).

        Parameters
        ----------
        votes : int array-like, shape ``(n, K)``
            Counts of this ensemble's classifiers, at most ``T`` votes a row (the partition
            scheme's certificate reads the gaps alone).
        alpha, model, method, y :
            As for ``certify``.

        Returns
        -------
        Certificate or DPACertificate
            As ``certify`` returns.
        """
        c = self._settings(alpha, method, model, "Ensemble.certify_votes", y)
        votes = self._check_votes(votes, "Ensemble.certify_votes")
        labels = None if y is None else self.encode(y)
        with named_as("Ensemble.certify_votes", labels="y"):
            cert = certify_votes(self.config, self.n, np.asarray(votes), labels, alpha=c.alpha,
                                 method=c.method, model=c.model)
        return dataclasses.replace(cert, classes=self.classes)

    def _check_predictions(self, predictions, where: str) -> np.ndarray:
        """``predictions`` as the run's ``(T, n)`` labels in ``[-1, K - 1]``, or one error
        naming it: rows of other classifiers (fewer, repeated, another run's) would be
        certified as this ensemble's (Finite Aggregation reads its ``k`` from the rows)."""
        allowed = (f"an int array of shape (T, n) = ({self.T}, n): every base classifier's "
                   f"label (-1 to {self.n_classes - 1}), one row per classifier of the run")
        predictions = _matrix(predictions, "predictions", where, allowed,
                              lambda shape: shape[0] == self.T)
        if isinstance(predictions, np.ndarray) and predictions.dtype.kind in "iu":
            # base_predictions' int16 matrix as it is: an int64 copy would take four times
            # the memory _check_predictions_fit allowed for it
            if predictions.size and (predictions.min() < -1
                                     or predictions.max() > self.n_classes - 1):
                bad = predictions.min() if predictions.min() < -1 else predictions.max()
                raise param_error("predictions", where, allowed, int(bad))
            return predictions
        return check_int_array(predictions, "predictions", where, low=-1,
                               high=self.n_classes - 1)

    def _check_votes(self, votes, where: str) -> np.ndarray:
        """``votes`` as ``(n, K)`` counts with rows summing to at most ``T``, or one error
        naming it (more votes than classifiers would widen the gaps the radius reads)."""
        allowed = (f"an int array of shape (n, {self.n_classes}) of vote counts by the run's "
                   f"{self.T} base classifiers (each row summing to at most {self.T})")
        votes = _matrix(votes, "votes", where, allowed,
                        lambda shape: shape[1] == self.n_classes)
        arr = check_int_array(votes, "votes", where, low=0)
        over = np.flatnonzero(arr.sum(axis=1) > self.T)
        if over.size:
            raise param_error("votes", where, allowed,
                              f"row {int(over[0])} summing to {int(arr[over[0]].sum())}")
        return arr

    def check_options(self, alpha: float | None = None, method: str | None = None,
                      model: str | None = None, where: str = "Ensemble.check_options"):
        """The run's ``certify`` section with these options, checked as ``certify`` checks
        them: before a long prediction, so that a bad option is refused before the base
        classifiers run.

        Parameters
        ----------
        alpha, method, model :
            As for ``certify`` (None: the run's).
        where : str, default="Ensemble.check_options"
            The name an error gives these options as parameters of.

        Returns
        -------
        CertifyConfig
            The run's ``certify`` section with the options given.
        """
        return self._settings(alpha, method, model, where)

    def _settings(self, alpha, method, model, where: str, y=None):
        """The run's ``certify`` section with the options given (an error names the option
        as ``where``'s parameter, not the config's key); ``y`` given where the certificate
        uses no labels is an error, as in ``certify.certify`` (it would be ignored)."""
        c = _certify_options(self.config, self.scheme, alpha, method, model, where)
        if y is not None and (self.scheme in DETERMINISTIC
                              or not c.method.startswith("true_label")):
            raise param_error("y", where, "None unless the method is 'true_label' or "
                              "'true_label_split' (the other methods and deterministic "
                              "certificates use no labels)", "an array")
        return c

    def _check_y(self, y, n: int, method: str) -> None:
        """``certify``'s ``y`` for ``n`` inputs and the ``true_label*`` ``method``: the errors
        ``certify_votes`` would give once the predictions are made."""
        where = "Ensemble.certify"
        if y is None:
            raise param_error("y", where, f"the true labels for the {method!r} method", None)
        with named_as(where, y="y"):
            labels = self.encode(y)  # flat, as certify_votes reads them
        if labels.shape != (n,):
            raise param_error("y", where, f"an int array of shape ({n},)",
                              f"an array of shape {labels.shape}")

def _matrix(x, name: str, where: str, allowed: str, fits):
    """``x`` (``_as_array``) if it is a 2-d array-like whose shape ``fits``, else one
    ``param_error`` naming ``name`` and the shape given."""
    x = _as_array(x)
    shape = np.shape(x) if _array_like(x) else None
    if shape is None or len(shape) != 2 or not fits(shape):
        raise param_error(name, where, allowed,
                          f"an array of shape {shape}" if shape is not None else x)
    return x


def _as_array(x):
    """An array-like that is no list (a torch tensor, a pandas frame: ``__array__``) as a numpy
    array; anything else as it is."""
    if not isinstance(x, (np.ndarray, list, tuple)) and hasattr(x, "__array__"):
        try:
            return np.asarray(x)
        except (TypeError, ValueError, RuntimeError):  # e.g. a tensor that requires grad
            return x
    return x


def _array_like(x) -> bool:
    """An array or a (nested) list or tuple of numbers with a shape (not ragged)."""
    if isinstance(x, np.ndarray):
        return True
    if not isinstance(x, (list, tuple)):
        return False
    try:
        return np.asarray(x).dtype != object
    except (TypeError, ValueError):  # ragged rows
        return False


def _check_device(device) -> str:
    text = str(device).strip().lower()
    kind, colon, index = text.partition(":")
    if kind not in ("cpu", "cuda") or (colon and not index.isdigit()):  # named as given
        raise param_error("device", "Ensemble.load", "'cpu', 'cuda' or 'cuda:<index>'", device)
    if kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise param_error("device", "Ensemble.load", "'cpu' (no CUDA device is available)",
                              device)
        count = torch.cuda.device_count()
        if index and int(index) >= count:  # not torch's 'invalid device ordinal' later
            raise param_error("device", "Ensemble.load", f"'cpu', 'cuda' or 'cuda:0' to "
                              f"'cuda:{count - 1}' ({count} visible)", device)
    return text


def check_run_options(run_dir: str | Path, alpha: float | None = None, method: str | None = None,
                      model: str | None = None, where: str = "check_run_options"):
    """``Ensemble.check_options`` from the run's config alone: before ``Ensemble.load`` reads
    and checks every weights file (gigabytes for a large run), as ``certify`` checks its
    options before the run's files are read."""
    cfg = RunDir(run_dir).load_config()
    return _certify_options(cfg, cfg.selection.scheme, alpha, method, model, where)
