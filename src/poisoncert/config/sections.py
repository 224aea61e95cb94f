"""The typed sections of an experiment config, each checked when it is made.

An experiment (``ExperimentConfig``) holds ``data`` (``DataConfig``), ``selection``
(``SelectionConfig``), ``training`` (``poisoncert.training.TrainConfig``, the one
training-settings type, used as it is by the engine), ``execution`` (``ExecutionConfig``: how
a run executes, never what it predicts but for ``path``), ``algorithm`` (``AlgorithmConfig``:
Algorithm 2 or the two-phase Algorithm 3), ``certify`` (``CertifyConfig``) and ``run``
(``RunConfig``). In a YAML file ``training``, ``execution`` and ``algorithm`` share the
``training`` section (``SECTIONS``). Every error is a ``ConfigError`` of the project's one
shape, naming the dotted key::

    The 'selection.scheme' parameter of the config must be one of 'without_replacement', ...
    Got 'bagging' instead.

Checks that need the data (``ns`` at most ``|D^p|``, class labels, clean indices, the model
against the input shape) are made by ``poisoncert.experiment`` after loading it, still before
any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from poisoncert import bounds
from poisoncert._validation import INT_LIMIT, INT_LIMIT_TEXT, SEED_LIMIT, later_high, plain
from poisoncert.config.checks import WHERE, ConfigError, config_error
from poisoncert.config.checks import choice as _choice
from poisoncert.config.checks import first_out as _first_out
from poisoncert.config.checks import integer as _int
from poisoncert.config.checks import ints_ok as _ints_ok
from poisoncert.config.checks import put as _put
from poisoncert.config.checks import real as _real
from poisoncert.data import registry as data_registry
from poisoncert.resources import workers_text
from poisoncert.selection import (
    FINITE_AGGREGATION,
    NEAREST_NEIGHBOURS,
    PARTITION,
    PLAN_SCHEME_ALIASES,
    PLAN_SCHEMES,
    check_size,
)
from poisoncert.stats import METHODS
from poisoncert.training.settings import PATHS, TrainConfig, graphed_obstacle

__all__ = [
    "DATASETS",
    "DEFAULT_SELECTION",
    "SCHEMES",
    "SECTIONS",
    "AlgorithmConfig",
    "CertifyConfig",
    "ConfigError",
    "DataConfig",
    "EditsPath",
    "ExecutionConfig",
    "ExperimentConfig",
    "RunConfig",
    "SelectionConfig",
    "config_error",
    "fixed_T",
]

#: Dataset names ``poisoncert.data.load_dataset`` knows, besides ``npz:<path>``.
DATASETS = tuple(data_registry.list_datasets())
#: Selection schemes: the paper's three random ones, the deterministic partition (DPA), Finite
#: Aggregation, and the nearest-neighbour classifiers (no base classifiers).
SCHEMES = (*PLAN_SCHEMES, *NEAREST_NEIGHBOURS)
def fixed_T(scheme: str, k: int | None, d: int | None) -> int | None:
    """``T`` as ``scheme`` fixes it: ``k`` for partition (one classifier per part), ``k * d``
    for finite_aggregation, 1 for knn / rnn (no base classifiers); None for the random
    schemes, whose ``T`` is the config's own."""
    if scheme in NEAREST_NEIGHBOURS:
        return 1
    if scheme == PARTITION:
        return k
    if scheme == FINITE_AGGREGATION:
        return k * d
    return None


#: Aggregations ``certify`` offers: the majority vote, or the run-off election (partition and
#: finite_aggregation runs that stored their base classifiers' rankings, ``run.store_ranks``).
AGGREGATIONS = ("vote", "roe")
DEVICES = ("cpu", "cuda")


class EditsPath(str):
    """``data.edits`` as a run's config records it, read from another file: ``file``.

    The text is the path the config names (what the config writes, hashes and compares, as
    for any ``str``); ``file`` is where the edits are read. ``RunDir.load_config`` gives an
    updated run (``poisoncert update``) its own copy of its edits this way, so the run folder
    may be moved or copied: its config still names the path it was written to.
    """

    def __new__(cls, text: str, file: str):
        self = super().__new__(cls, text)
        self.file = str(file)
        return self

    def __reduce__(self):
        return (EditsPath, (str(self), self.file))



def _python_values(section) -> None:
    """A section made in Python holds what a config file holds: numpy scalars as Python
    numbers, 1-d arrays as lists (and their items), paths as text (``_validation.plain``).
    ``SelectionConfig(T=np.int64(8))`` and ``DataConfig(data_dir=Path(...))`` passed their
    checks and failed deep in ``train_run``, json refusing them in the config's hash."""
    for f in fields(section):
        value = getattr(section, f.name)
        new = plain(value, nested=False)
        if isinstance(new, list | tuple):
            new = type(new)(plain(v, nested=False) for v in new)
        if new is not value:
            _put(section, f.name, new)


@dataclass(frozen=True)
class DataConfig:
    """The data set and its split into a known-clean part ``D^c`` and an attackable ``D^p``.

    At most one of ``n_clean``, ``clean_fraction`` and ``clean_indices`` chooses ``D^c`` (the
    paper's case 2): ``n_clean`` / ``clean_fraction`` take a random subset of the training set
    (drawn with ``clean_seed``), ``clean_indices`` lists training-set indices. ``D^c`` joins every
    sub-dataset and is never sampled; ``D^p`` is the rest, and ``n = |D^p|`` enters the bounds.
    ``test_limit`` keeps the first test points only. ``deskew`` deskews every training and
    test image (``poisoncert.data.transforms.deskew``: a fixed per-image preprocessing, so the
    certificates are unchanged).

    ``poisoned_classes`` (the paper's case 3; original class ids, e.g. ``[9]``) instead makes
    ``D^p`` the training samples of those classes and ``D^c`` all the others; it excludes the
    three options above. With ``training.two_phase`` (``AlgorithmConfig``) it gives Algorithm 3.

    ``edits`` names a ``.npz`` of changes to the training set (``experiment.edits``: samples
    removed, relabelled, added), applied after ``D^c`` is chosen; ``poisoncert update`` writes
    it for the run it makes (into that run's folder, where the run reads it wherever the
    folder is moved: ``EditsPath``).
    """

    name: str = "digits"
    classes: list[int] | None = None
    data_dir: str | None = None
    download: bool = False
    n_clean: int = 0
    clean_fraction: float | None = None
    clean_indices: list[int] | None = None
    clean_seed: int = 0
    test_limit: int | None = None
    poisoned_classes: list[int] | None = None
    deskew: bool = False
    edits: str | None = None

    def __post_init__(self) -> None:
        _python_values(self)
        if not (isinstance(self.name, str) and self.name.startswith("npz:")
                and len(self.name) > 4):
            name = _choice(self.name, "data.name", DATASETS + ("npz:<path>",),
                           data_registry.ALIASES)
            if name == "npz:<path>":
                raise config_error("data.name", "one of " + ", ".join(repr(x) for x in DATASETS)
                                   + " or 'npz:<path>'", name)
            _put(self, "name", name)
        if self.classes is not None and not _ints_ok(self.classes, 2):
            raise config_error("data.classes", "null or a list of at least two distinct "
                               f"class labels in the range [0, {INT_LIMIT_TEXT}]", self.classes)
        _int(self.n_clean, "data.n_clean", low=0, high=INT_LIMIT)
        _real(self.clean_fraction, "data.clean_fraction", 0.0, 1.0, low_open=False)
        given = [k for k, v in (("n_clean", self.n_clean or None),
                                ("clean_fraction", self.clean_fraction),
                                ("clean_indices", self.clean_indices),
                                ("poisoned_classes", self.poisoned_classes)) if v is not None]
        if len(given) > 1:
            raise ConfigError("At most one of 'data.n_clean', 'data.clean_fraction', "
                              "'data.clean_indices' and 'data.poisoned_classes' may be given. "
                              f"Got {', '.join(given)}.")
        poisoned = self.poisoned_classes
        if poisoned is not None and not _ints_ok(poisoned, 1):
            raise config_error("data.poisoned_classes", "null or a non-empty list of distinct "
                               f"class labels in the range [0, {INT_LIMIT_TEXT}]", poisoned)
        clean = self.clean_indices
        if clean is not None and not _ints_ok(clean):
            raise config_error("data.clean_indices", "a list of distinct training-set indices "
                               f"in the range [0, {INT_LIMIT_TEXT}]", _first_out(clean))
        _int(self.clean_seed, "data.clean_seed", low=0,  # an earlier version's: any
             high=later_high(self.clean_seed, SEED_LIMIT))
        _int(self.test_limit, "data.test_limit", low=1, high=INT_LIMIT)
        if self.edits is not None and (not isinstance(self.edits, str) or not self.edits.strip()):
            raise config_error("data.edits", "null or the path of an edits .npz file",
                               self.edits)


@dataclass(frozen=True)
class SelectionConfig:
    """How the ``T`` sub-datasets are drawn from ``D^p`` (``poisoncert.selection``).

    ``ns`` is the sub-dataset size (bagging) or, for ``binomial`` without ``p``, means
    ``p = ns / n`` (``selection.check_size``); ``k`` is the number of parts of ``partition``
    (then ``T = k``); ``finite_aggregation`` has ``k * d`` hash buckets and ``T = k * d``
    classifiers, each trained on ``d`` buckets (``d = 1``: the partition scheme). ``seed`` is
    the root seed: classifier ``i`` uses ``selection.model_seed(seed, i)``.

    ``knn`` (``k`` nearest neighbours) and ``rnn`` (the neighbours within Euclidean distance
    ``r``, in the data's integer feature units: 0-255 for images, 0-16 for scikit-learn's
    digits) train no base classifiers: the run stores each test point's
    nearest labels (``poisoncert.knn``), ``T = 1``.

    ``ns``/``p`` and ``T`` have no defaults: a config that has a ``selection`` section states
    them, unless the section names no scheme and no size (``scheme``, ``ns``, ``p``, ``k``,
    ``d``, ``r``): then, as a config without one, it takes ``DEFAULT_SELECTION`` for the keys
    it does not give (``--selection.T 8`` alone: binomial, ``ns`` 50, ``T`` 8).
    """

    scheme: str = "binomial"
    ns: int | None = None
    p: float | None = None
    k: int | None = None
    T: int | None = None
    seed: int = 0
    d: int | None = None
    r: float | None = None

    def __post_init__(self) -> None:
        _python_values(self)
        scheme = _choice(self.scheme, "selection.scheme", SCHEMES, PLAN_SCHEME_ALIASES)
        _put(self, "scheme", scheme)
        _int(self.seed, "selection.seed", low=0,  # an earlier version's: any (Earlier)
             high=later_high(self.seed, SEED_LIMIT))
        k_schemes = (PARTITION, FINITE_AGGREGATION, "knn")
        what = {PARTITION: "the number of parts",
                FINITE_AGGREGATION: "with selection.d: k * d buckets and classifiers",
                "knn": "the number of neighbours"}
        if scheme in k_schemes:
            if self.k is None:
                raise config_error("selection.k", f"an int >= 1 for the {scheme} scheme "
                                   f"({what[scheme]})", None)
            _int(self.k, "selection.k", low=1, high=INT_LIMIT)
        elif self.k is not None:
            raise config_error("selection.k", f"null for the {scheme} scheme (k is for "
                               "partition, finite_aggregation and knn)", self.k)
        if scheme == FINITE_AGGREGATION:
            if self.d is None:
                raise config_error("selection.d", "an int >= 1 for the finite_aggregation "
                                   "scheme (buckets per classifier)", None)
            _int(self.d, "selection.d", low=1, high=INT_LIMIT)
        elif self.d is not None:
            raise config_error("selection.d", f"null for the {scheme} scheme (d is for "
                               "finite_aggregation)", self.d)
        if scheme == "rnn":
            if self.r is None:
                raise config_error("selection.r", "a real number > 0 for the rnn scheme (the "
                                   "ball's radius in the data's integer feature units, "
                                   "0-255 for images)", None)
            _real(self.r, "selection.r", 0.0, 1e12)
        elif self.r is not None:
            raise config_error("selection.r", f"null for the {scheme} scheme (r is for rnn)",
                               self.r)
        fixed = fixed_T(scheme, self.k, self.d)  # k and d are checked above
        if fixed is not None and self.T is not None and self.T != fixed:
            text = {PARTITION: f"equal to selection.k = {self.k} for the partition scheme "
                               "(one classifier per part)",
                    FINITE_AGGREGATION: f"equal to selection.k * selection.d = {fixed} "
                                        "for the finite_aggregation scheme",
                    }.get(scheme, f"1 for the {scheme} scheme (no base classifiers)")
            raise config_error("selection.T", f"null or {text}", self.T)
        if scheme in NEAREST_NEIGHBOURS:
            for name, value in (("ns", self.ns), ("p", self.p)):
                if value is not None:
                    raise config_error(f"selection.{name}", f"null for the {scheme} scheme",
                                       value)
            return
        try:
            check_size(scheme, None, ns=self.ns, p=self.p, where=WHERE,
                       names=("selection.ns", "selection.p"))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _int(self.ns, "selection.ns", low=1, high=INT_LIMIT)
        if fixed is None:
            if self.T is None:
                raise config_error("selection.T", "an int >= 1 (the number of base "
                                   "classifiers)", None)
            _int(self.T, "selection.T", low=1, high=INT_LIMIT)

    @property
    def n_classifiers(self) -> int:
        """``T``: ``k`` for partition, ``k * d`` for finite_aggregation, 1 for knn / rnn."""
        fixed = fixed_T(self.scheme, self.k, self.d)
        return int(self.T if fixed is None else fixed)

    def size(self, n: int) -> tuple[int | None, float | None]:
        """``(ns, p)`` for ``n = |D^p|`` (``selection.check_size``; a ``ConfigError``
        naming ``selection.ns`` when ``ns`` does not fit ``n``)."""
        if self.scheme in NEAREST_NEIGHBOURS:
            return None, None
        try:
            return check_size(self.scheme, n, ns=self.ns, p=self.p, where=WHERE,
                              names=("selection.ns", "selection.p"), n_text="n = |D^p|")
        except ValueError as e:
            raise ConfigError(str(e)) from None


#: The selection of a config that has no ``selection`` section.
DEFAULT_SELECTION = {"scheme": "binomial", "ns": 50, "T": 100}


@dataclass(frozen=True)
class ExecutionConfig:
    """How a run executes (YAML keys of the ``training`` section).

    ``path`` is ``fast`` (stacked groups, the device's fastest stacking: ``twin`` on the CPU;
    on CUDA ``cmajor`` for LeNet-5 and the small CNN, ``twin`` for the others; a run records
    which), ``twin`` (the hand-written stacked twins: grouped convolutions), ``vmap`` (stacked
    through ``torch.func.vmap`` even where a twin exists), ``bmm`` (the twins with LeNet-5's
    and the small CNN's convolutions as batched matmuls), ``cmajor`` (the same with
    classifier-major channels-last activations, ResNet-18's too), ``reference`` (one model at
    a time) or ``graphed`` (the same, each training step a replayed CUDA graph,
    ``training.graphed``: a constant learning rate, Adam or SGD); they agree to rounding.
    ``workers`` is the number of local processes (it never changes the predictions);
    ``device`` ``cpu`` or ``cuda`` (``cpu`` only for a scikit-learn learner and the kNN / rNN
    search, which run on the CPU: a new run refuses ``cuda`` for them);
    ``save_weights`` keeps every trained torch classifier's weights in the run directory
    (``weights/``, read by ``poisoncert.Ensemble``):
    ``None`` (the default) means on for a torch model trained by Algorithm 2 and off
    otherwise (``ExperimentConfig.keeps_weights``); ``false`` opts out.
    """

    path: str = "fast"
    workers: int = 1
    device: str = "cpu"
    save_weights: bool | None = None

    def __post_init__(self) -> None:
        _python_values(self)
        _put(self, "path", _choice(self.path, "training.path", PATHS))
        try:  # at most the CPUs where a run starts (a recorded run resumes elsewhere too)
            _int(self.workers, "training.workers", low=1, high=INT_LIMIT)
        except ConfigError:  # in the words of --workers and of a run that starts
            raise config_error("training.workers", workers_text(), self.workers) from None
        _put(self, "device", _choice(self.device, "training.device", DEVICES))


@dataclass(frozen=True)
class AlgorithmConfig:
    """Algorithm 2 (each base classifier trained on its sub-dataset plus ``D^c``), or with
    ``two_phase`` (needs ``data.poisoned_classes``) the paper's Algorithm 3
    (``poisoncert.twophase``): each base classifier's phase 1 separates "a clean class" from
    each poisoned class with the ``training`` settings; one phase-2 model, trained on ``D^c``
    alone for ``phase2_steps`` steps (same settings otherwise), resolves the clean classes.
    YAML keys of the ``training`` section.
    """

    two_phase: bool = False
    phase2_steps: int = 2000

    def __post_init__(self) -> None:
        _python_values(self)
        _int(self.phase2_steps, "training.phase2_steps", low=1, high=INT_LIMIT)


@dataclass(frozen=True)
class CertifyConfig:
    """Defaults for certifying a run; ``alpha`` is the failure probability per test point.

    ``aggregation``: ``vote`` (the majority vote) or ``roe`` (the run-off election of
    ``poisoncert.runoff``, for partition and finite_aggregation runs that stored their
    classifiers' rankings with ``run.store_ranks``)."""

    alpha: float = 0.001
    method: str = "auto"
    model: str = "P6"
    rhos: list[int] = field(default_factory=lambda: [0, 1, 2, 5, 10, 20, 50])
    aggregation: str = "vote"

    def __post_init__(self) -> None:
        _python_values(self)
        _put(self, "aggregation", _choice(self.aggregation, "certify.aggregation",
                                          AGGREGATIONS, {"run_off": "roe", "runoff": "roe",
                                                         "majority": "vote"}))
        # (stats.ALPHA_MIN is checked where alpha is used, so earlier runs still open)
        _real(self.alpha, "certify.alpha", 0.0, 1.0)
        _put(self, "method", _choice(self.method, "certify.method", METHODS))
        _put(self, "model", _choice(self.model, "certify.model", bounds.MODELS,
                                    bounds.MODEL_ALIASES))
        if any(isinstance(rho, bool) or not isinstance(rho, int) or not 0 <= rho <= INT_LIMIT
               for rho in self.rhos):  # no int64 overflow later
            raise config_error("certify.rhos", f"a list of ints in the range [0, {INT_LIMIT_TEXT}]",
                               self.rhos)
        _put(self, "rhos", sorted(set(self.rhos)))


@dataclass(frozen=True)
class RunConfig:
    """``chunk_size`` classifiers are trained, saved and resumed as one unit; ``store_ranks``
    also stores every classifier's ranking of the classes on every test point (``ranks.npy``,
    int8 ``(T, n_test, C)``, from its logits), which the run-off election certifies."""

    chunk_size: int = 50
    store_ranks: bool = False

    def __post_init__(self) -> None:
        _python_values(self)
        _int(self.chunk_size, "run.chunk_size", low=1, high=INT_LIMIT)
        if not isinstance(self.store_ranks, bool):
            raise config_error("run.store_ranks", "a boolean (true or false)", self.store_ranks)


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment; ``config.to_dict`` / ``config.from_dict`` turn it into the nested
    dicts of its YAML file and back."""

    data: DataConfig = field(default_factory=DataConfig)
    selection: SelectionConfig = field(
        default_factory=lambda: SelectionConfig(**DEFAULT_SELECTION))
    training: TrainConfig = field(default_factory=TrainConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    certify: CertifyConfig = field(default_factory=CertifyConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        """The checks across sections."""
        learner = self.training.sklearn_learner
        if self.algorithm.two_phase:
            if self.data.poisoned_classes is None:
                raise config_error("training.two_phase", "false unless data.poisoned_classes is "
                                   "given (the two-phase classifier needs clean classes)", True)
            if learner is not None:
                raise config_error("training.two_phase", "false for a scikit-learn learner",
                                   True)
        if self.training.dtype in ("tf32", "bfloat16") and self.execution.device != "cuda":
            raise config_error("training.dtype", "'float32' or 'float64' with training.device "
                               f"{self.execution.device!r} (tf32 and bfloat16 are for cuda)",
                               self.training.dtype)
        if self.execution.path == "graphed" and (why := graphed_obstacle(self.training)):
            raise config_error(*why)
        if learner is not None and self.execution.save_weights:
            raise config_error("training.save_weights", "false or null for a scikit-learn "
                               "learner", True)
        scheme = self.selection.scheme
        if self.run.store_ranks:
            if scheme not in (PARTITION, FINITE_AGGREGATION):
                raise config_error("run.store_ranks", "false unless selection.scheme is "
                                   "partition or finite_aggregation (the run-off election's "
                                   f"schemes); the scheme is {scheme!r}", True)
            if learner is not None or self.algorithm.two_phase:
                raise config_error("run.store_ranks", "false for a scikit-learn or two-phase "
                                   "learner (rankings come from a torch model's logits)", True)
        if self.certify.aggregation == "roe" and scheme not in (PARTITION, FINITE_AGGREGATION):
            raise config_error("certify.aggregation", "'vote' unless selection.scheme is "
                               f"partition or finite_aggregation; the scheme is {scheme!r}",
                               "roe")
        if scheme in NEAREST_NEIGHBOURS and self.algorithm.two_phase:
            raise config_error("training.two_phase", f"false for the {scheme} scheme", True)

    @property
    def keeps_weights(self) -> bool:
        """Whether a run keeps its classifiers' weights: ``training.save_weights``, or when
        it is null (the default) for a torch model trained by Algorithm 2 (a scikit-learn
        learner has none; a two-phase run's classifiers are not kept; knn / rnn have no base
        classifiers)."""
        if (self.training.sklearn_learner is not None or self.algorithm.two_phase
                or self.selection.scheme in NEAREST_NEIGHBOURS):
            return False
        save = self.execution.save_weights
        return True if save is None else bool(save)

    @property
    def T(self) -> int:
        """The number of base classifiers (``k`` for the partition scheme, ``k * d`` for
        finite_aggregation, 1 for knn / rnn)."""
        return self.selection.n_classifiers


#: YAML section -> the ``ExperimentConfig`` attributes whose keys it holds, in file order.
SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("data",),
    "selection": ("selection",),
    "training": ("training", "execution", "algorithm"),
    "certify": ("certify",),
    "run": ("run",),
}
