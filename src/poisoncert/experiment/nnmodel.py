"""A knn / rnn run as a model in use: ``NeighborModel.load(run_dir)`` (what
``Ensemble.load`` gives for such a run, and so ``poisoncert predict``) predicts and certifies
new inputs given as the data set holds them.

A nearest-neighbour run has no base classifiers: its training set is the model. ``load``
checks the run's files as ``poisoncert certify`` does (``RunDir.verify``), loads the training
data again from the run's config (``split_data``) and refuses them, in one line naming the
file that changed, unless they are exactly the arrays the run searched (the manifest's
``data.sha256_arrays``). A new input then goes the test set's way: the data loader's scale
(``InputForm``), the integer pixels of ``neighbors.pixel_features`` at the run's scale, the
search of ``neighbors.nn_search`` (exact integer distances, ties by training index) and the
certificate of ``experiment.certify.nn_certificate`` with the run's ``n_train``. Each input's
neighbours depend on that input alone, so an input of the run's test set gets exactly its
row of ``certificates.csv``. Inputs are searched a block at a time (``CHUNK_ELEMENTS``), so
the memory beyond the training set's features does not grow with the number of inputs, but
for the results (a few numbers per input).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

from poisoncert import selection
from poisoncert._validation import param_error
from poisoncert.config import ConfigError
from poisoncert.experiment.certify import certify_options, nn_certificate
from poisoncert.experiment.display import ProgressDisplay, progress_display, takes_unit
from poisoncert.experiment.ensemble_record import input_means_record
from poisoncert.experiment.inputform import (
    InputForm,
    RunClasses,
    UnusualInputsWarning,
    as_input_array,
    describe_array,
    input_form,
    input_means,
    outside_stacklevel,
    training_means,
    unusual_inputs,
    unusual_share,
)
from poisoncert.experiment.model import common_description
from poisoncert.experiment.neighbors import nn_search, pixel_features, run_data
from poisoncert.runs import RunDir, RunError

__all__ = ["CHUNK_ELEMENTS", "NeighborModel", "NeighborOutputs", "PixelForm"]

#: Inputs searched at a time: at most this many features (float64, 32 MiB) or neighbour
#: labels of a block, at least one input.
CHUNK_ELEMENTS = 1 << 22

#: The integer kinds of ``InputForm`` whose pixels a float ``u / scale`` may give.
_INTEGER_KINDS = ("uint8", "integer", "bool")


@dataclasses.dataclass(frozen=True)
class PixelForm(InputForm):
    """The ``InputForm`` of a knn / rnn run: the data set's raw inputs, or floats
    ``u / scale`` of its integer pixels ``u`` (as its data loader reads them: what
    ``neighbors.pixel_features`` requires of the run's inputs), turned back into ``u``. Any
    other float is refused: the neighbours are searched on exact integer distances.

    Where a float array is both (for scikit-learn's digits, whose raw form 0-16 may be
    given as floats: values 0.0 and 1.0 only), it is read as the raw form, as ``Ensemble``
    reads it."""

    def describe(self) -> str:
        text = super().describe()
        if self.kind in _INTEGER_KINDS:
            text += (f"; or floats u / {self.scale:g} of such integer pixels u (as the data "
                     "loader reads them)")
        return text

    def arrange(self, x, where: str = "NeighborModel") -> np.ndarray:
        try:
            return super().arrange(x, where)
        except ValueError:
            arr = as_input_array(x, where, self.describe())  # (checked by arrange: no error)
            if arr.dtype.kind != "f" or self.kind not in _INTEGER_KINDS:
                raise
        with np.errstate(invalid="ignore"):
            u = np.rint(arr.astype(np.float64) * self.scale)
            ok = bool(np.isfinite(u).all()) and (u.size == 0 or (u.min() >= 0
                                                                  and u.max() <= self.scale))
            ok = ok and np.array_equal((u / self.scale).astype(arr.dtype), arr)
        if not ok:
            raise param_error("x", where, self.describe(), describe_array(arr))
        return super().arrange(u.astype(np.uint8 if self.scale <= 255 else np.int64), where)


@dataclasses.dataclass(frozen=True)
class NeighborOutputs:
    """``NeighborModel.outputs``: the certificate (``knn.NNCertificate`` with ``classes``),
    the counts its prediction is the majority of (kNN: among the ``k`` nearest; rNN: inside
    the ball; ``votes.npy``'s for the test set) and the radii in DPA's unit
    (``certificates.csv``'s ``radius_dpa``)."""

    certificate: object
    votes: np.ndarray
    radius_dpa: np.ndarray


class NeighborModel(RunClasses):
    """A finished knn / rnn run: its training set, searched for new inputs.

    Use ``NeighborModel.load(run_dir)`` (or ``Ensemble.load``). Inputs ``x`` are raw, as the
    data set's files hold them (``form``), or floats ``u / 255`` (``u / 16`` for digits) of
    integer pixels ``u``. Class indices ``0 .. K-1`` name ``classes[k]``, as in the run's
    ``predictions.npy`` and ``certificates.csv``.

    A ``NeighborModel`` is a ``model.CertifiedModel``, as an ``Ensemble`` is: ``preprocess``,
    ``votes``, ``predict``, ``certify``, ``check_options``, ``encode``, ``decode`` and
    ``describe`` take the same arguments and give the same kinds of results on either. It
    has no base classifiers, so no ``T``, ``base_predictions``, ``certify_predictions`` or
    ``certify_votes`` (a kNN certificate reads the neighbours' order, not the counts alone);
    its own are ``n_train``, ``features``, ``scale``, ``y_train`` and ``outputs``, and ``k``
    or ``r`` in ``config.selection``.
    """

    #: The search runs on the CPU (``load`` refuses another device).
    device: str = "cpu"

    def __init__(self, run_dir: Path, config, manifest: dict, data):
        self.run_dir = Path(run_dir)
        self.config = config
        self.scheme: str = config.selection.scheme
        summary = data.summary
        self.classes = np.asarray(summary.classes, dtype=np.int64)
        self.class_names = tuple(summary.class_names)
        self.n: int = int(summary.n)  # |D^p|
        recorded = manifest.get("data") or {}
        #: The training set's size as ``certify_run`` reads it (the deleting models' cap).
        self.n_train: int = int(recorded.get("n_train", recorded.get("n", summary.n)))
        base = input_form(config, summary.input_shape)
        self.form = PixelForm(base.shape, base.kind, base.scale, base.deskew)
        #: The training set's integer pixels (float64) and their scale: the search's.
        self.features, self.scale = pixel_features(data.x_train)
        self.y_train = np.asarray(data.y_train)
        self.verification: dict = {}
        record = {"input_means": input_means_record(data.x_train)}
        self.training_means = training_means(record)
        self.unusual_share = unusual_share(record)

    def __repr__(self) -> str:
        s = self.config.selection
        size = f"k={s.k}" if self.scheme == "knn" else f"r={s.r:g}"
        return (f"NeighborModel({str(self.run_dir)!r}, {self.scheme}, {size}, "
                f"n_train={len(self.y_train)}, classes={self.classes.tolist()})")

    @property
    def deterministic(self) -> bool:
        """Always True: a knn / rnn certificate holds for sure (``alpha`` and ``method`` do
        not apply, and are refused)."""
        return True

    def describe(self) -> dict:
        """The model in plain values (JSON-serialisable).

        Returns
        -------
        dict
            ``model.common_description``'s keys (``kind`` ``"neighbors"``, ``scheme``, ``n``,
            ``n_classes``, ``classes``, ``class_names``, ``input``, ``input_shape``,
            ``device``, ``deterministic``, ``certify``, ``radius_unit``, ``run_dir``) and a
            neighbour model's own: ``k`` (knn; None for rnn), ``r`` (rnn, the ball's radius
            in integer-pixel distance; None for knn) and ``n_train`` (the training samples
            searched). It has no ``T``: there are no base classifiers.
        """
        s = self.config.selection
        return {**common_description(self, "neighbors"),
                "k": int(s.k) if self.scheme == "knn" else None,
                "r": float(s.r) if self.scheme == "rnn" else None,
                "n_train": int(self.n_train)}

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "cpu",
             verify_progress=None) -> NeighborModel:
        """Load and check a finished knn / rnn run: its files (``RunDir.verify``) and its
        data, loaded again from its config and refused unless they are the arrays it was
        trained on.

        Parameters
        ----------
        run_dir : str or Path
            A finished knn / rnn run directory (another run is refused: load it with
            ``Ensemble.load``).
        device : str, default="cpu"
            ``"cpu"`` (in any case; a ``torch.device('cpu')`` too): the search runs on the
            CPU, and any other device is one error before any file is read, as
            ``Ensemble.load`` refuses it for a knn / rnn run.
        verify_progress : None, bool or ProgressDisplay, default=None
            A display of the checksums read (MiB).

        Returns
        -------
        NeighborModel

        Raises
        ------
        RunError
            Naming the first file that does not match, or the data file that changed.
        """
        if str(device).strip().lower() != "cpu":
            raise param_error("device", "NeighborModel.load", "'cpu' (the knn / rnn neighbour "
                              "search runs on the CPU)", device)
        from poisoncert.experiment.display import checksum_display

        display = checksum_display(verify_progress, "NeighborModel.load")
        rd = RunDir(run_dir)
        cfg = rd.load_config()
        if cfg.selection.scheme not in selection.NEAREST_NEIGHBOURS:
            raise RunError(f"The run '{rd.path}' is a {cfg.selection.scheme} run, not a knn "
                           "or rnn run: load it with Ensemble.load.")
        verification = rd.verify() if display is None else rd.verify(display)
        manifest = rd.load_manifest()
        # require: a manifest without the data's checksum is refused (nothing then says the
        # data loaded now are those the run's n_train and test rows were of)
        data = run_data(rd, cfg, manifest, require=True,
                        then="restore the data it was trained on, or train a new run on "
                             "these data")
        model = cls(rd.path, cfg, manifest, data)
        model.verification = verification
        return model

    def _settings(self, alpha, method, model, where: str, y=None):
        """The run's ``certify`` section with the options given (``certify_options``); ``y``
        is refused, as ``Ensemble`` refuses it for a deterministic certificate."""
        if y is not None:
            raise param_error("y", where, "None (a knn / rnn certificate uses no labels)",
                              "an array")
        return certify_options(self.config, self.scheme, alpha, method, model, where)

    def check_options(self, alpha: float | None = None, method: str | None = None,
                      model: str | None = None, where: str = "NeighborModel.check_options"):
        """The run's ``certify`` section with these options, checked as ``certify`` checks
        them, before any input is searched.

        Parameters
        ----------
        alpha, method :
            Must be None: the certificate is deterministic.
        model : {"P1", ..., "P6"}, optional
            Poisoning model; default: the run's ``certify.model``.
        where : str, default="NeighborModel.check_options"
            The name an error gives these options as parameters of.

        Returns
        -------
        CertifyConfig
            The run's ``certify`` section with the options given.
        """
        return self._settings(alpha, method, model, where)

    # -- predictions -------------------------------------------------------------------------

    def preprocess(self, x) -> np.ndarray:
        """Raw inputs -> the inputs the search takes (the data loader's scale, as
        ``Ensemble.preprocess``).

        Parameters
        ----------
        x : array-like of raw inputs
            As ``votes`` takes them (``form.describe()``), checked the same way.

        Returns
        -------
        ndarray of float32, shape ``(n, *input_shape)``
            What ``votes``, ``predict`` and ``certify`` take with ``preprocessed=True``:
            ``predict(preprocess(x), preprocessed=True)`` is ``predict(x)``.
        """
        return self.form.preprocess(x, "NeighborModel")

    def _pixels(self, block: np.ndarray) -> np.ndarray:
        """The run's integer features of preprocessed inputs (``pixel_features`` at the
        training set's scale), or one error naming ``x``."""
        try:
            return pixel_features(block, scale=self.scale)[0]
        except ConfigError:
            raise param_error("x", "NeighborModel", f"inputs whose values are integer pixels "
                              f"divided by {self.scale} (the run's exact distances)",
                              describe_array(block)) from None

    def outputs(self, x, *, model: str | None = None,
                progress: ProgressDisplay | None = None,
                preprocessed: bool = False) -> NeighborOutputs:
        """The certificate of every input, its counts and its radii in DPA's unit, from one
        search: ``certify_run``'s for the run's own test points, row for row.

        Parameters
        ----------
        x, progress, preprocessed :
            As for ``votes``.
        model : {"P1", ..., "P6"}, optional
            Poisoning model; default: the run's ``certify.model``.

        Returns
        -------
        NeighborOutputs
            ``certificate`` (as ``certify`` returns), ``votes`` (as ``votes`` returns) and
            ``radius_dpa`` (int64 ``(n,)``: the radii in DPA's unit, ``certificates.csv``'s
            column).
        """
        c = self._settings(None, None, model, "NeighborModel.certify")
        xs = self._inputs(x, preprocessed)
        n, C = len(xs), self.n_classes
        s = self.config.selection
        depth = min(2 * s.k, len(self.y_train)) if self.scheme == "knn" else C
        width = max(math.prod(self.input_shape), depth)
        step = max(1, CHUNK_ELEMENTS // width)
        pred = np.empty(n, dtype=np.int64)
        radius, slack, dpa = (np.empty(n, dtype=np.int64) for _ in range(3))
        exact = np.empty(n, dtype=bool)
        votes = np.empty((n, C), dtype=np.int64)
        means = np.full(n, np.nan)
        display = progress_display(progress, "NeighborModel")
        kw = {"unit": "inputs"} if takes_unit(display) else {}
        label = f"{self.scheme}: {n} inputs x {len(self.y_train)} training samples"
        cert = None
        with display(n, 0, label, **kw) as advance:
            for a in range(0, max(n, 1), step):
                b = min(a + step, n)
                block = xs[a:b] if preprocessed else self.form.preprocess(xs[a:b])
                if b > a:
                    means[a:b] = input_means(block)
                    nb, v, _ = nn_search(self.config, self.features, self.y_train,
                                         self._pixels(block), C, progress=advance)
                else:  # no inputs: one empty block, for the certificate's setting
                    nb, v = np.zeros((0, depth), dtype=np.int16), votes
                cert, r_dpa = nn_certificate(self.config, c.model, v, nb, n_train=self.n_train)
                pred[a:b], radius[a:b], slack[a:b] = cert.prediction, cert.radius, cert.slack
                exact[a:b], dpa[a:b], votes[a:b] = cert.exact, r_dpa, v
        cert = dataclasses.replace(cert, prediction=pred, radius=radius, slack=slack,
                                   exact=exact, classes=self.classes)
        if (text := unusual_inputs(means, self.training_means, self.unusual_share)):
            warnings.warn(text, UnusualInputsWarning, stacklevel=outside_stacklevel())
        return NeighborOutputs(certificate=cert, votes=votes, radius_dpa=dpa)

    def certify(self, x, *, alpha: float | None = None, model: str | None = None,
                method: str | None = None, y=None, progress: ProgressDisplay | None = None,
                preprocessed: bool = False):
        """Certified prediction and radius of every input, computed exactly as ``poisoncert
        certify`` computes the run's test set (``experiment.certify.nn_certificate``).
        ``alpha``, ``model``, ``method`` and ``y`` are checked before any input is searched.

        Parameters
        ----------
        x, progress, preprocessed :
            As for ``votes``.
        alpha : None
            ``Ensemble.certify``'s; must be left out (the certificate is deterministic).
        model : {"P1", ..., "P6"}, optional
            Poisoning model; default: the run's ``certify.model``.
        method : None
            ``Ensemble.certify``'s; must be left out (the certificate is deterministic).
        y : None
            ``Ensemble.certify``'s; must be left out (a knn / rnn certificate uses no
            labels).

        Returns
        -------
        NNCertificate
            ``knn.NNCertificate``, its docstring stating the guarantee (deterministic):
            ``prediction`` (int64 class indices, ``-1`` where an rNN ball is empty) and
            ``radius`` (int64 operations, ``-1`` there), shape ``(n,)``; ``exact`` False
            where a kNN radius is only a lower bound. It carries ``classes``, so
            ``cert.predicted_labels()`` gives class ids and
            ``certify.certified_accuracy(cert, y, rhos)`` takes original class ids.
        """
        self._settings(alpha, method, model, "NeighborModel.certify", y)
        return self.outputs(x, model=model, progress=progress,
                            preprocessed=preprocessed).certificate

    def votes(self, x, *, progress: ProgressDisplay | None = None,
              preprocessed: bool = False) -> np.ndarray:
        """The counts each input's prediction is the majority of.

        Parameters
        ----------
        x : array-like, shape ``(n, ...)``
            ``n`` raw inputs as the data set's files hold them (``form.describe()``: the
            forms ``Ensemble.votes`` takes), or floats ``u / scale`` (``u / 255``; ``u / 16``
            for digits) of integer pixels ``u``, as the data loader reads them. Any other
            float (an image scaled otherwise, resized, normalised) is one ``ValueError``
            naming ``x``, before any search: the distances are exact integers.
        progress : None, bool or ProgressDisplay, default=None
            None or False: no display; True: the command line's bar (on stderr); or a
            ``experiment.display.ProgressDisplay`` (given ``unit="inputs"`` where it takes a
            ``unit``). It counts inputs searched: ``total`` is ``n``.
        preprocessed : bool, default=False
            True: ``x`` is already the float32 array of shape ``(n, *input_shape)`` that
            ``preprocess`` returns.

        Returns
        -------
        ndarray of int64, shape ``(n, K)``
            Column ``c`` counts the training samples of class index ``c``: kNN, among the
            ``k`` nearest (each row sums to ``k``); rNN, inside the ball of radius ``r``
            (a row sums to anything from 0, an empty ball, to ``n_train``). Not votes of base
            classifiers: there are none.

        Warns
        -----
        UnusualInputsWarning
            Where more than ``unusual_share`` of the inputs' means after preprocessing lie
            outside the training inputs' range.
        """
        return self.outputs(x, progress=progress, preprocessed=preprocessed).votes

    def predict(self, x, *, progress: ProgressDisplay | None = None,
                preprocessed: bool = False) -> np.ndarray:
        """The classifier's prediction on each input, certified or not (``certify`` says
        which are): the majority of ``votes``.

        Parameters
        ----------
        x, progress, preprocessed :
            As for ``votes``.

        Returns
        -------
        ndarray of int64, shape ``(n,)``
            Class indices ``0 .. K-1`` (ties to the smaller index; ``decode`` gives the data
            set's class ids), ``-1`` (``votes.ABSTAIN``) where an rNN ball is empty.
        """
        return self.outputs(x, progress=progress, preprocessed=preprocessed
                            ).certificate.prediction
