"""``CertifiedModel``: a finished run as a model in use, whatever kind of run it was.

``Ensemble.load(run_dir)`` gives an ``ensemble.Ensemble`` (the ``T`` saved base classifiers of
a run and their majority vote) or, for a knn / rnn run, an ``nnmodel.NeighborModel`` (its
training set, searched for each input's neighbours). Both are ``CertifiedModel``:
``isinstance(model, CertifiedModel)`` holds for either, and code written against the members
below (load, preprocess, votes, predict, certify on new raw inputs, encode / decode, describe)
works with either, with the same argument names and the same kinds of results.

What differs is left different, not faked:

- ``Ensemble`` has base classifiers: ``T``, ``ns`` or ``p``, ``n_clean``, ``base_predictions``
  (each classifier's labels), ``certify_predictions`` and ``certify_votes`` (the certificate
  of labels or votes made earlier). A neighbour model has none: its ``votes`` are the classes
  of the ``k`` nearest training samples (kNN) or of those inside the ball of radius ``r``
  (rNN), so a row sums to ``k`` (or the ball's size), not to at most ``T``, and a kNN
  certificate is not a function of the counts (it reads the neighbours' order): it has no
  ``certify_votes``.
- ``NeighborModel`` has ``k`` or ``r`` (``config.selection``), ``n_train`` (the training set
  searched, ``D^c`` and ``D^p``), ``features`` / ``scale`` / ``y_train`` (the training set's
  integer pixels and labels) and ``outputs`` (the certificate, the counts and the radii in
  DPA's unit of one search).
- Certificates: ``Ensemble.certify`` gives ``certify.Certificate`` (randomized schemes: each
  radius holds with probability at least ``1 - alpha``), ``DPACertificate`` (partition) or
  ``aggregation.FACertificate``; ``NeighborModel.certify`` gives ``knn.NNCertificate``
  (deterministic; ``exact`` False where a kNN radius is only a lower bound). All carry
  ``prediction`` and ``radius`` (int64 ``(n,)``, ``-1`` where nothing is certified),
  ``classes``, ``predicted_labels()``, ``setting()``, ``summary()`` and ``records()``, and
  ``certify.certified_accuracy(cert, y, rhos)`` takes any of them.
- ``alpha`` and ``method`` apply to randomized schemes only (``deterministic`` False); a
  deterministic certificate refuses them. ``y`` (true labels) is taken only by the
  ``true_label*`` methods of a randomized scheme, and refused elsewhere.
- ``device``: an ensemble predicts on the CPU or a CUDA device; the neighbour search runs on
  the CPU only (``load(device=...)`` refuses another).

``poisoncert.CertifiedEnsembleClassifier`` (scikit-learn) is not a ``CertifiedModel``: it is
fitted, not loaded from a run, takes feature rows ``X``, and follows scikit-learn in
``predict`` returning labels rather than class indices (docs/sklearn.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from poisoncert.certify import _UNIT_TEXT

if TYPE_CHECKING:
    import numpy as np

    from poisoncert.config import ExperimentConfig
    from poisoncert.experiment.inputform import InputForm

__all__ = ["RADIUS_UNIT", "CertifiedModel", "common_description"]

#: The unit of the radius ``certify`` gives, for every kind of run (``setting()["radius_unit"]``
#: of its certificates): each insertion, deletion or modification of a training sample counts
#: one operation, under the poisoning model (``certify.model``, P1 ... P6) it names.
RADIUS_UNIT: str = _UNIT_TEXT["operation"]


@runtime_checkable
class CertifiedModel(Protocol):
    """What ``Ensemble`` and ``NeighborModel`` both are: a finished run, loaded and checked,
    that predicts and certifies new raw inputs.

    Attributes
    ----------
    run_dir : Path
        The run directory it was loaded from.
    config : ExperimentConfig
        The run's config (its ``certify`` section gives ``certify``'s defaults).
    scheme : str
        ``config.selection.scheme``: ``"knn"`` or ``"rnn"`` for a ``NeighborModel``, a
        selection scheme (``"binomial"``, ``"partition"``, ...) for an ``Ensemble``.
    n : int
        ``|D^p|``, the training samples an attacker may change (the certificate's ``n``).
    classes : ndarray of int64, shape ``(K,)``
        Class index ``k`` names the data set's class id ``classes[k]``.
    class_names : tuple of str
        ``class_names[k]`` names class index ``k``.
    n_classes : int
        ``K``, the number of classes (the columns of ``votes``).
    form : InputForm
        The raw inputs it takes (``form.describe()``) and their fixed preprocessing.
    input_shape : tuple of int
        One preprocessed input's shape (``preprocess(x).shape[1:]``).
    device : str
        Where it computes (``"cpu"`` or ``"cuda[:K]"``; always ``"cpu"`` for a neighbour
        model).
    deterministic : bool
        True where the certificate holds for sure (partition, finite_aggregation, knn, rnn):
        ``alpha`` and ``method`` do not apply and are refused. False for the randomized
        schemes, whose every radius holds with probability at least ``1 - alpha``.
    verification : dict
        What ``RunDir.verify`` said when it was loaded (``verified``, ``files``, ``note``).
    training_means : tuple of float or None
        The range of 99.8% of the training inputs' means after preprocessing (the
        ``UnusualInputsWarning``'s), None where the run recorded none.
    unusual_share : float
        The share of inputs outside ``training_means`` above which it warns.
    """

    run_dir: Path
    config: ExperimentConfig
    scheme: str
    n: int
    classes: np.ndarray
    class_names: tuple[str, ...]
    form: InputForm
    device: str
    verification: dict
    training_means: tuple[float, float] | None
    unusual_share: float

    @property
    def n_classes(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def deterministic(self) -> bool: ...

    @classmethod
    def load(cls, run_dir: str | Path, *, device: str = "cpu",
             verify_progress=None) -> CertifiedModel:
        """Load and check a finished run (``Ensemble.load`` loads either kind)."""
        ...

    def preprocess(self, x) -> np.ndarray:
        """Raw inputs -> float32 ``(n, *input_shape)``, what the methods below take with
        ``preprocessed=True``."""
        ...

    def votes(self, x, *, progress=None, preprocessed: bool = False) -> np.ndarray:
        """int64 ``(n, K)``: the counts each prediction is the majority of."""
        ...

    def predict(self, x, *, progress=None, preprocessed: bool = False) -> np.ndarray:
        """int64 ``(n,)``: class indices, certified or not; ``-1`` where there is no vote."""
        ...

    def certify(self, x, *, alpha: float | None = None, model: str | None = None,
                method: str | None = None, y=None, progress=None,
                preprocessed: bool = False) -> Any:
        """The certificate of every input (``prediction`` and ``radius``, int64 ``(n,)``,
        ``-1`` where nothing is certified, and ``classes``)."""
        ...

    def check_options(self, alpha: float | None = None, method: str | None = None,
                      model: str | None = None, where: str = "CertifiedModel.check_options"
                      ) -> Any:
        """The run's ``certify`` section with these options, checked as ``certify`` checks
        them, before any input is read."""
        ...

    def encode(self, y) -> np.ndarray:
        """Class indices of the data set's class ids ``y``."""
        ...

    def decode(self, indices) -> np.ndarray:
        """The data set's class ids of class indices (``-1`` stays ``-1``)."""
        ...

    def describe(self) -> dict:
        """The model in plain values (JSON-serialisable): ``common_description``'s keys and
        the kind's own."""
        ...


def common_description(model: CertifiedModel, kind: str) -> dict:
    """The keys of ``describe()`` that every ``CertifiedModel`` has, in plain values:
    ``kind`` (``"ensemble"`` or ``"neighbors"``), ``run_dir``, ``scheme``, ``n``,
    ``n_classes``, ``classes``, ``class_names``, ``input`` (``form.describe()``),
    ``input_shape``, ``device``, ``deterministic``, ``certify`` (the defaults ``certify``
    uses: ``model``, and ``alpha`` and ``method`` for a randomized scheme, None where they do
    not apply) and ``radius_unit`` (``RADIUS_UNIT``)."""
    c = model.config.certify
    random = not model.deterministic
    return {
        "kind": kind,
        "run_dir": str(model.run_dir),
        "scheme": model.scheme,
        "n": int(model.n),
        "n_classes": int(model.n_classes),
        "classes": [int(k) for k in model.classes],
        "class_names": [str(k) for k in model.class_names],
        "input": model.form.describe(),
        "input_shape": [int(d) for d in model.input_shape],
        "device": str(model.device),
        "deterministic": bool(model.deterministic),
        "certify": {"model": c.model, "alpha": c.alpha if random else None,
                    "method": c.method if random else None},
        "radius_unit": RADIUS_UNIT,
    }
