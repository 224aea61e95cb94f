"""scikit-learn estimator: a certified ensemble over random sub-datasets or hash partitions.

``CertifiedEnsembleClassifier`` trains ``T`` clones of a base estimator, each on one sub-dataset
of the training set drawn by a selection scheme (``poisoncert.selection``), predicts by majority
vote, and certifies each prediction with ``poisoncert.certify`` (``docs/certificates.md``). It
follows scikit-learn's bagging conventions: ``__init__`` only stores parameters, ``fit``
validates them and returns ``self``, fitted attributes end in ``_``, one seed per base
classifier is kept so every sub-dataset can be regenerated (``estimators_samples_``).
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings

import numpy as np
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, column_or_1d

from poisoncert._validation import INT_LIMIT, check_int_array, named_as, param_error
from poisoncert.base_learners import (
    balance_setting,
    fit_chunk,
    hash_parts,
    job_chunks,
    predict_chunk,
    row_keys,
)
from poisoncert.estimator_checks import (
    base_tags,
    check_base_estimator,
    check_clean_mask,
    check_fit_memory,
    check_predict_memory,
    ensemble_size,
    validate_input,
)
from poisoncert.selection import ALL_SCHEMES, PARTITION, SubsetPlan, model_seeds
from poisoncert.votes import votes_from_predictions

__all__ = ["CertifiedEnsembleClassifier"]

_NAME = "CertifiedEnsembleClassifier"


class CertifiedEnsembleClassifier(ClassifierMixin, BaseEstimator):
    """Majority vote of base classifiers trained on random sub-datasets, with certificates.

    Each of ``T`` base classifiers is a clone of ``estimator`` trained on one sub-dataset of the
    training set: ``D^c`` (rows marked by ``fit(..., clean_mask=...)``, known clean, joined to
    every sub-dataset and never sampled) plus a selection from the attackable rows ``D^p``
    (``n = |D^p|``) by ``scheme``:

    - ``"without_replacement"``: ``ns`` distinct rows (the paper's scheme 1);
    - ``"with_replacement"``: ``ns`` independent draws, repeats kept (scheme 2);
    - ``"binomial"``: each row kept independently with probability ``p`` (scheme 3), or
      ``p = ns / n`` when ``ns`` is given instead; a draw may be empty;
    - ``"partition"``: deterministic partition aggregation (DPA): ``D^p`` is split into
      ``n_partitions`` disjoint parts by a SHA-256 hash of each row's features (as float64), one
      base classifier per part.

    ``certify`` returns, for each test point, the prediction and a certified radius ``rho``: the
    prediction provably stays the same after any ``rho`` insertions, deletions or
    modifications of ``D^p`` allowed by the poisoning model (``P1``-``P6``), with probability at
    least ``1 - alpha`` over the sampling of the ``T`` sub-datasets, per test point (for
    ``"partition"`` the guarantee is deterministic). The set of classes ``classes_`` is taken as
    fixed (an attack does not add a new class), and so is the selection's size found by ``fit``
    (``ns_``, ``p_``): a learner that computes ``ns`` or ``p`` anew from a changed set's size
    is another learner, which the certificate does not cover (``p = ns / m`` of a poisoned set,
    for instance). To refit on changed data under the same guarantee, pass ``ns=est.ns_`` or
    ``p=est.p_``.

    Parameters
    ----------
    estimator : estimator object, default=None
        The base estimator, cloned for each sub-dataset. ``None`` means
        ``DecisionTreeClassifier()``. Every ``random_state`` parameter of the clone (nested ones
        too) is set from the classifier's seed, so its randomness depends on nothing but its
        seed, as the certificate requires.
    scheme : {"without_replacement", "with_replacement", "binomial", "partition"}, \
default="without_replacement"
        Selection scheme.
    ns : int, default=None
        Sub-dataset size (number of draws from ``D^p``). Must be in ``[1, n]`` without
        replacement, ``>= 1`` with replacement; for ``"binomial"`` it sets ``p = ns / n`` (then
        ``p`` must be ``None``, and ``ns < n``); must be ``None`` for ``"partition"``. ``None``
        means ``ceil(sqrt(n))`` for the bagging schemes and, for ``"binomial"`` with ``p=None``,
        ``p = min(ceil(sqrt(n)) / n, 1/2)``.
    p : float in (0, 1), default=None
        Selection probability of the binomial scheme; only for ``"binomial"``.
    n_estimators : int, default=100
        Number ``T`` of base classifiers (random schemes).
    n_partitions : int, default=None
        Number of parts ``k`` for ``"partition"`` (then ``T = k``); ``None`` means
        ``n_estimators``. Must be ``None`` for the random schemes.
    balance : bool or int, default=False
        Class-balanced resampling of each sub-dataset (the paper's weight balance): the
        sub-dataset (``D^c`` plus the drawn rows) is replaced by a sample with replacement in
        which every class present gets an equal share of the rows. ``True`` keeps the
        sub-dataset's size, an int gives a fixed size. The resampling uses its own stream of
        the classifier's seed, so it is a randomised function of the sub-dataset alone and the
        certificate still holds.
    random_state : int, RandomState instance or None, default=None
        Root seed. An int is used directly as the root (so it matches a ``poisoncert`` run
        with the same root seed); otherwise a root is drawn from it. Classifier ``i`` gets
        ``selection.model_seed(root, i)``.
    n_jobs : int, default=None
        Number of joblib jobs for ``fit`` and the predict-like methods, over base classifiers.
        Results are identical for every ``n_jobs``. ``None`` means 1 unless in a
        ``joblib.parallel_backend`` context; ``-1`` means all processors.
    verbose : int, default=0
        ``0``: silent. ``1`` or more: ``fit`` and ``base_predictions`` (hence ``predict``,
        ``certify``, ...) print their progress to stderr as base classifiers finish (about
        twenty lines per call), with the rate and the time left. Results do not depend on it.

    Attributes
    ----------
    estimator_ : estimator
        The base estimator (``estimator`` or the default).
    estimators_ : list of length ``n_estimators_``
        Fitted base classifiers, trained on class *indices* into ``classes_``. An entry is
        ``None`` where the sub-dataset was empty (that classifier abstains: it never votes),
        and a ``DummyClassifier(strategy="constant")`` where the sub-dataset had one class
        (the base estimator is never fitted on a single class).
    estimators_seeds_ : uint64 array ``(n_estimators_,)``
        Seed of each base classifier: ``selection.model_seed(root_seed_, i)``.
    estimators_samples_ : list of int64 arrays
        Training-row indices of each sub-dataset (``D^c`` first, then the drawn rows, with
        repeats for ``"with_replacement"``), regenerated from the seeds; before balancing.
    root_seed_ : int
        The root seed.
    n_estimators_ : int
        ``T``, the number of base classifiers (abstaining ones included).
    classes_ : ndarray ``(n_classes,)``
        Class labels, sorted.
    n_classes_ : int
    n_attackable_ : int
        ``n = |D^p|``, the number of training rows not marked clean: the ``n`` of the
        certificate.
    clean_mask_ : bool ndarray ``(n_samples,)``
        The known-clean rows ``D^c``.
    ns_ : int or None
        Effective ``ns`` of the bagging schemes (``None`` for binomial and partition).
    p_ : float or None
        Effective ``p`` of the binomial scheme (``None`` otherwise).
    scheme_ : str
        The scheme the ensemble was fitted with; ``certify`` uses it (``set_params(scheme=...)``
        takes effect at the next ``fit``).
    partition_ids_ : int64 ndarray ``(n_samples,)`` or None
        Part of each training row for ``"partition"`` (``-1`` for ``D^c`` rows); else ``None``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string column names.

    Notes
    -----
    - ``predict`` is the majority vote over the non-abstaining classifiers, ties to the
      smaller class index (the first in ``classes_``), the same rule as ``certify``. Where
      every classifier abstains (only if every sub-dataset is empty) it predicts
      ``classes_[0]``; ``certify`` then abstains (random schemes; a partition of ``n >= 1`` rows
      always has a non-empty part).
    - ``predict_proba`` gives vote shares among the non-abstaining classifiers, so rows sum to
      one (uniform where all abstain); they are not calibrated probabilities. Raw counts, with
      ``T = n_estimators_``, come from ``vote_counts``.
    - Each sub-dataset reaches the base estimator in a canonical order (by a content hash of
      each row and its label), so a base classifier is a function of the multiset of rows it
      gets and of its seed, never of where the rows sit in ``X``, as the certificate requires.
    - Sub-datasets are made, and base estimators trained, on class indices; the set of
      classes is taken as known and fixed by the certificate.
    - scikit-learn's ``check_estimator`` passes with no expected failure (tested for every
      scheme, with and without ``balance``; ``tests/test_estimator.py``). One check skips
      itself: ``check_array_api_input`` (without ``SCIPY_ARRAY_API``; the estimator converts
      input to NumPy and does not support the array API); the pandas checks run where pandas
      is installed (the ``test`` extra has it) and skip themselves otherwise.

    Examples
    --------
    >>> from sklearn.datasets import load_breast_cancer
    >>> from poisoncert import CertifiedEnsembleClassifier
    >>> X, y = load_breast_cancer(return_X_y=True)
    >>> clf = CertifiedEnsembleClassifier(ns=20, n_estimators=200, random_state=0).fit(X, y)
    >>> cert = clf.certify(X[:5])
    >>> labels = clf.decode(cert.prediction)  # None where the certificate abstains
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "scheme": [StrOptions(set(ALL_SCHEMES))],
        # ns's range depends on n, the data: checked in fit with the full range.
        "ns": [numbers.Integral, None],
        "p": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "n_estimators": [Interval(numbers.Integral, 1, INT_LIMIT, closed="both")],
        "n_partitions": [Interval(numbers.Integral, 1, INT_LIMIT, closed="both"), None],
        "balance": ["boolean", Interval(numbers.Integral, 1, INT_LIMIT, closed="both")],
        "random_state": ["random_state"],
        "n_jobs": [Interval(numbers.Integral, None, -1, closed="right"),  # not 0 (joblib's
                   Interval(numbers.Integral, 1, None, closed="left"), None],  # error then)
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        estimator=None,
        *,
        scheme="without_replacement",
        ns=None,
        p=None,
        n_estimators=100,
        n_partitions=None,
        balance=False,
        random_state=None,
        n_jobs=None,
        verbose=0,
    ):
        self.estimator = estimator
        self.scheme = scheme
        self.ns = ns
        self.p = p
        self.n_estimators = n_estimators
        self.n_partitions = n_partitions
        self.balance = balance
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------ tags, validation
    def _base(self):
        return DecisionTreeClassifier() if self.estimator is None else self.estimator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        base = base_tags(self._base())
        if base is not None:
            tags.input_tags.sparse = base.input_tags.sparse
            tags.input_tags.allow_nan = base.input_tags.allow_nan
        return tags

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)  # the base estimator is validated later
    def fit(self, X, y, clean_mask=None):
        """Train the ``T`` base classifiers on their sub-datasets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Sparse input is accepted (as CSR) where the base estimator accepts it.
        y : array-like of shape (n_samples,)
            Class labels (any hashable, sortable labels: ints, strings, ...).
        clean_mask : bool array-like of shape (n_samples,), default=None
            Rows known to be clean (``D^c``): added to every sub-dataset, never sampled, and
            not counted in ``n``. A fit argument because it is data (aligned with the rows of
            ``X``), as scikit-learn does for ``sample_weight``.

        Returns
        -------
        self : object
        """
        # All or nothing: a fit that fails (a data-dependent check such as ns's range or the
        # memory, a base estimator's error, Ctrl-C) leaves the estimator as it was. It had
        # set classes_, n_attackable_, ns_ or n_estimators_ of the new data beside the old
        # estimators_, so certify computed radii for a setting the ensemble was not trained
        # with (larger ones too) and predict mapped old class indices to the new labels.
        state = dict(vars(self))
        try:
            return self._fit(X, y, clean_mask)
        except BaseException:
            vars(self).clear()
            vars(self).update(state)
            raise

    def _fit(self, X, y, clean_mask):
        """``fit``'s work (``fit`` restores the previous state when it fails)."""
        check_base_estimator(self._base(), where=_NAME)
        X, y = validate_input(self, X, base=self._base(), reset=True, y=y)
        check_classification_targets(y)
        y = column_or_1d(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        self.n_classes_ = len(self.classes_)
        y_idx = y_idx.astype(np.int64).ravel()
        n_samples = X.shape[0]

        self.clean_mask_ = check_clean_mask(clean_mask, n_samples, where=f"{_NAME}.fit")
        clean_idx = np.flatnonzero(self.clean_mask_)
        attackable_idx = np.flatnonzero(~self.clean_mask_)
        n = len(attackable_idx)
        self.n_attackable_ = n
        ns, p, T = ensemble_size(self.scheme, n, ns=self.ns, p=self.p,
                                 n_estimators=self.n_estimators,
                                 n_partitions=self.n_partitions, where=_NAME)
        self.ns_, self.p_, self.n_estimators_ = ns, p, T
        self.scheme_ = self.scheme  # certify uses the fitted scheme, whatever set_params does
        check_fit_memory(self, X, base=self._base(), T=T, ns=ns, n_clean=len(clean_idx), n=n,
                         jobs=effective_n_jobs(self.n_jobs), where=_NAME)

        if isinstance(self.random_state, numbers.Integral):
            self.root_seed_ = int(self.random_state)
        else:
            self.root_seed_ = int(check_random_state(self.random_state)
                                  .randint(np.iinfo(np.int32).max))
        self.estimators_seeds_ = model_seeds(self.root_seed_, T)

        part_of = None
        self.partition_ids_ = None
        if self.scheme_ == PARTITION:
            part_of = hash_parts(X[attackable_idx], T)
            self.partition_ids_ = np.full(n_samples, -1, dtype=np.int64)
            self.partition_ids_[attackable_idx] = part_of
        self._plan = SubsetPlan(self.scheme_, attackable_idx, clean_idx, ns=ns, p=p,
                                part_of=part_of)
        self.estimator_ = self._base()
        keys = row_keys(X, y_idx)

        seeds = [int(s) for s in self.estimators_seeds_]
        chunks = self._chunks(T)
        balance = balance_setting(self.balance)
        results = self._parallel("fit", chunks, (
            delayed(fit_chunk)(self.estimator_, X, y_idx, keys, self._plan,
                               [(int(i), seeds[i]) for i in chunk], balance)
            for chunk in chunks))
        self.estimators_ = [est for chunk in results for est in chunk]
        if all(est is None for est in self.estimators_):
            warnings.warn(f"Every one of the {T} sub-datasets is empty, so every base "
                          "classifier abstains: predict gives classes_[0] and certify "
                          "abstains. Increase p (or ns) or n_estimators.", UserWarning,
                          stacklevel=4)  # the caller of fit (_fit, fit, _fit_context)
        return self

    @property
    def estimators_samples_(self) -> list[np.ndarray]:
        """Training-row indices of each sub-dataset, regenerated from ``estimators_seeds_``."""
        check_is_fitted(self)
        return [self._plan.indices(i, int(s)) for i, s in enumerate(self.estimators_seeds_)]

    # ------------------------------------------------------------------ predict-like
    def base_predictions(self, X) -> np.ndarray:
        """The prediction matrix: ``(n_estimators_, n_test)`` class indices into ``classes_``.

        int16 (int32 beyond 32767 classes); ``-1`` where a base classifier abstains.
        """
        check_is_fitted(self)
        return self._base_predictions(validate_input(self, X, base=self.estimator_,
                                                     reset=False))

    def _base_predictions(self, X) -> np.ndarray:
        """``base_predictions`` of an ``X`` already validated (``validate_input``)."""
        n_test = X.shape[0]
        check_predict_memory(self.n_estimators_, n_test, where=_NAME)
        dtype = np.int16 if self.n_classes_ <= np.iinfo(np.int16).max else np.int32
        chunks = self._chunks(self.n_estimators_)
        parts = self._parallel("predict", chunks, (
            delayed(predict_chunk)([self.estimators_[i] for i in chunk], X, n_test, dtype,
                                   self.n_classes_, _NAME)
            for chunk in chunks))
        return np.concatenate(parts, axis=0)

    # ------------------------------------------------------------------ progress
    def _chunks(self, T: int) -> list[np.ndarray]:
        """One block of classifiers per job; with ``verbose``, about twenty blocks, so that
        progress can be reported (results never depend on the blocks)."""
        if not self.verbose:
            return job_chunks(T, self.n_jobs)
        n = max(len(job_chunks(T, self.n_jobs)), min(T, 20))
        return [c for c in np.array_split(np.arange(T), n) if c.size]

    def _parallel(self, what: str, chunks, tasks) -> list:
        """Run joblib ``tasks`` (one per chunk, in order); with ``verbose``, print a line to
        stderr as each finishes: classifiers done, rate and time left."""
        if not self.verbose:
            return Parallel(n_jobs=self.n_jobs)(tasks)
        import sys
        import time

        total = sum(len(c) for c in chunks)
        start = time.perf_counter()
        out, done = [], 0
        for chunk, result in zip(chunks, Parallel(n_jobs=self.n_jobs, return_as="generator")(
                tasks), strict=True):
            out.append(result)
            done += len(chunk)
            elapsed = time.perf_counter() - start
            rate = done / elapsed if elapsed > 0 else float("inf")
            left = (total - done) / rate if rate > 0 else float("nan")
            print(f"[{_NAME}.{what}] {done}/{total} base classifiers, {elapsed:.1f} s, "
                  f"{rate:.3g}/s, {left:.1f} s left", file=sys.stderr, flush=True)
        return out

    def vote_counts(self, X) -> np.ndarray:
        """Votes per class: int64 ``(n_test, n_classes_)``; rows sum to at most
        ``n_estimators_`` (abstaining classifiers vote for no class)."""
        check_is_fitted(self)
        return votes_from_predictions(self.base_predictions(X), self.n_classes_)

    def predict_proba(self, X) -> np.ndarray:
        """Vote shares over ``classes_`` among the non-abstaining classifiers (rows sum to 1;
        uniform where every classifier abstains). Not calibrated probabilities."""
        check_is_fitted(self)
        counts = self.vote_counts(X).astype(np.float64)
        total = counts.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            proba = np.where(total > 0, counts / np.maximum(total, 1), 1.0 / self.n_classes_)
        return proba

    def predict(self, X) -> np.ndarray:
        """Majority vote, ties to the smaller class index (``classes_[0]`` if all abstain)."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.vote_counts(X), axis=1)]

    # ------------------------------------------------------------------ certificates
    def certify(self, X, *, alpha=0.001, model="P6", method="auto", y=None,
                unit="operation"):
        """Certified prediction and radius of every row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_test, n_features)
        alpha : float in (0, 1), default=0.001
            Error probability per test point: each certificate holds with probability at
            least ``1 - alpha`` over the sampling of the sub-datasets (``method`` says how
            the vote bounds are made simultaneous over classes). Checked but not used for
            ``"partition"``, whose certificate is deterministic.
        model : {"P1", ..., "P6"}, default="P6"
            Poisoning model (insertions, deletions, modifications; ``docs/certificates.md``).
        method : str, default="auto"
            Vote-bound method of ``poisoncert.stats.vote_bounds`` (``"auto"``:
            ``"bonferroni"`` for two classes, ``"pairwise"`` for more); the ``"true_label*"``
            methods need ``y``. Checked but not used for ``"partition"``.
        y : array-like of shape (n_test,), default=None
            True labels (from ``classes_``), for the ``"true_label*"`` methods only (given
            with another method, or for ``"partition"``, it is an error).
        unit : {"operation", "dpa"}, default="operation"
            Only for ``"partition"``: the unit of the DPA radius (``"dpa"`` counts a
            modification as two operations, as the DPA paper does); other schemes take
            ``"operation"`` only.

        Returns
        -------
        Certificate or DPACertificate
            ``poisoncert.certify.Certificate`` (``DPACertificate`` for ``"partition"``) in
            class-*index* space: ``prediction`` indexes ``classes_`` and is
            ``poisoncert.certify.ABSTAIN`` (``-1``, radius ``-1``) where nothing is certified;
            ``cert.classes`` is ``classes_``, so ``cert.predicted_labels()`` (or ``decode``)
            gives labels, and ``poisoncert.certify.certified_accuracy(cert, y, rhos)`` takes
            the true labels ``y`` as given to ``fit`` (one convention: every true label you
            pass is a label, every prediction in a certificate an index into ``classes``).
            ``n`` is ``n_attackable_``: rows in ``D^c`` are not attackable and not counted.
        """
        check_is_fitted(self)
        return self._certify(*self._certify_inputs(X, alpha=alpha, model=model, method=method,
                                                   y=y, unit=unit))

    def _certify_inputs(self, X, *, alpha=0.001, model="P6", method="auto", y=None,
                        unit="operation"):
        """``(X, labels, settings)`` of ``certify``, every setting and input checked before a
        base classifier predicts (a mistyped ``model`` or a wrong ``y`` was refused only after
        the whole prediction): ``X`` validated, ``y`` as class indices (or None)."""
        self._check_certify_params(alpha, method, y, unit, model=model)
        X = validate_input(self, X, base=self.estimator_, reset=False)
        settings = dict(alpha=alpha, model=model, method=method, unit=unit)
        if y is None:
            return X, None, settings
        with named_as(f"{_NAME}.certify", y="y"):
            labels = self.encode(y)
        if len(labels) != X.shape[0]:
            raise param_error("y", f"{_NAME}.certify", f"the {X.shape[0]} labels of "
                              "X's rows (values of classes_)",
                              f"an array of {len(labels)} labels")
        return X, labels, settings

    def _certify(self, X, labels, settings):
        """``certify`` on what ``_certify_inputs`` checked."""
        from poisoncert import certify as _certify

        scheme = self._fitted_scheme()
        counts = votes_from_predictions(self._base_predictions(X), self.n_classes_)
        model, unit = settings["model"], settings["unit"]
        # errors of the calls below name this method's parameters (not SelectionBound's)
        with named_as(f"{_NAME}.certify", model="model", alpha="alpha", method="method",
                      unit="unit", labels="y", y="y"):
            if scheme == PARTITION:  # one class: a rival with no votes, as stats gives it
                rivals = np.pad(counts, ((0, 0), (0, 1))) if counts.shape[1] < 2 else counts
                cert = dataclasses.replace(_certify.dpa_certify(rivals, model=model, unit=unit),
                                           n_classes=counts.shape[1])
            else:
                cert = _certify.certify(counts, scheme=scheme, n=self.n_attackable_,
                                        ns=self.ns_, p=self.p_, model=model,
                                        alpha=settings["alpha"], method=settings["method"],
                                        T=self.n_estimators_, labels=labels)
        return dataclasses.replace(cert, classes=self.classes_)

    def _fitted_scheme(self) -> str:
        """The scheme the ensemble was fitted with (``set_params`` after ``fit`` changes
        ``scheme``, not the ensemble; an estimator pickled before ``scheme_``: its plan's)."""
        return getattr(self, "scheme_", None) or self._plan.scheme

    def _check_certify_params(self, alpha, method, y, unit, model="P6") -> None:
        """``certify``'s settings, each valid and each used by this scheme (as the
        constructor's: a mistyped or misplaced setting is an error, not silently ignored)."""
        from poisoncert._validation import check_choice, check_real
        from poisoncert.bounds import MODEL_ALIASES, MODELS
        from poisoncert.certify import DPA_UNITS
        from poisoncert.stats import ALPHA_MIN, METHODS

        where = f"{_NAME}.certify"
        check_choice(model, "model", where, MODELS, MODEL_ALIASES)
        check_real(alpha, "alpha", where, low=ALPHA_MIN, high=1.0, high_open=True)
        method = check_choice(method, "method", where, METHODS)
        unit = check_choice(unit, "unit", where, DPA_UNITS)
        if self._fitted_scheme() == PARTITION:
            if y is not None:
                raise param_error("y", where, "None for scheme='partition' (its certificate "
                                  "uses no labels)", "an array")
            return
        if unit != "operation":
            raise param_error("unit", where, "'operation' unless scheme='partition' (the DPA "
                              "unit counts a modification of a hash partition as two)", unit)
        true_label = method.startswith("true_label")
        if true_label and y is None:
            raise param_error("y", where, f"the true labels of X's rows (values of classes_) "
                              f"for method={method!r}", None)
        if y is not None and not true_label:
            raise param_error("y", where, "None unless method is 'true_label' or "
                              "'true_label_split' (the other methods use no labels)",
                              "an array")

    def certified_accuracy(self, X, y, rhos, **certify_params) -> np.ndarray:
        """Fraction of rows of ``X`` predicted as ``y`` (labels, as given to ``fit``) and
        certified at radius ``rho``, per ``rho`` (``certify(X, **certify_params)``;
        abstentions count as wrong). The ``"true_label*"`` methods take their labels from
        ``y``."""
        from poisoncert import certify as _certify

        check_is_fitted(self)
        where = f"{_NAME}.certified_accuracy"
        # rhos and y are checked with certify's settings, before a base classifier predicts
        check_int_array(rhos, "rhos", where, low=0, high=INT_LIMIT)
        unknown = sorted(set(certify_params) - {"alpha", "model", "method", "y", "unit"})
        if unknown:
            raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r} "
                            "(certify's settings are alpha, model, method, y and unit)")
        if str(certify_params.get("method", "")).startswith("true_label"):
            certify_params = {**certify_params, "y": y}
        X, labels, settings = self._certify_inputs(X, **certify_params)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1 or y_arr.shape[0] != X.shape[0]:
            raise param_error("y", where, f"an array of shape ({X.shape[0]},) of the "
                              "certificate's classes", f"an array of shape {y_arr.shape}")
        with named_as(where, y="y"):
            self.encode(y_arr)  # labels from classes_
        cert = self._certify(X, labels, settings)
        with named_as(where, labels="y"):
            return _certify.certified_accuracy(cert, y, rhos)

    def encode(self, y) -> np.ndarray:
        """Class indices into ``classes_`` of labels ``y`` (every label must be in ``classes_``)."""
        check_is_fitted(self)
        y = column_or_1d(np.asarray(y))
        try:
            idx = np.clip(np.searchsorted(self.classes_, y), 0, self.n_classes_ - 1)
            unknown = np.asarray(self.classes_[idx] != y, dtype=bool)
        except TypeError:  # labels not comparable with classes_ (e.g. str vs int)
            unknown = np.ones(len(y), dtype=bool)
        if unknown.any():
            raise param_error("y", f"{_NAME}.encode", "labels from classes_",
                              y[np.flatnonzero(unknown)[0]])
        return idx.astype(np.int64)

    def decode(self, prediction, *, abstain=None) -> np.ndarray:
        """Labels of class indices (e.g. ``certify(X).prediction``): an object array with
        ``abstain`` where the index is ``ABSTAIN`` (``-1``). Indices must be ints in
        ``[-1, n_classes_ - 1]``."""
        check_is_fitted(self)
        idx = check_int_array(prediction, "prediction", f"{_NAME}.decode", low=-1,
                              high=self.n_classes_ - 1)
        out = self.classes_[np.clip(idx, 0, None)].astype(object)
        out[idx < 0] = abstain
        return out

