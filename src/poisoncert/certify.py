"""Certified prediction from vote counts: the seed paper's Algorithm 1, certified accuracy, and
deterministic partition aggregation (DPA) for comparison (numpy and scipy only).

Input is always a vote-count matrix ``counts`` of shape ``(n_test, n_classes)``:
``counts[i, c]`` base classifiers voted ``c`` on test point ``i``. Results are frozen dataclasses
holding one entry per test point, with ``ABSTAIN = -1`` as the named abstain value, and give one
flat record per test point (``records()``) for writing to a table.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from poisoncert._validation import INT_LIMIT, check_choice, check_int_array, named_as, param_error
from poisoncert.bounds import MODEL_ALIASES, MODELS, SelectionBound, jia_certified_radius
from poisoncert.stats import _check_counts, _vote_bounds

__all__ = [
    "ABSTAIN",
    "Certificate",
    "DPACertificate",
    "DPA_UNITS",
    "certificate_repr",
    "certified_accuracy",
    "certify",
    "dpa_certify",
    "jia_certify",
    "record_range",
]

#: Prediction (and top class) of a test point that is not certified; its radius is also -1.
ABSTAIN = -1

#: Units of a DPA radius: "operation" counts a modification as one operation (as P1-P6 do);
#: "dpa" is the DPA paper's unit, where a modification counts as two (a deletion + an insertion).
DPA_UNITS = ("operation", "dpa")

_UNIT_TEXT = {
    "operation": "operations (insertion, deletion or modification = 1 each)",
    "dpa": "DPA operations (insertion or deletion = 1, modification = 2)",
}


def record_range(n: int, start: int = 0, stop: int | None = None) -> range:
    """The test points ``records(start, stop)`` lists: ``range(n)[start:stop]``, so a table
    of many points can be made a block of rows at a time (each row keeps its own index)."""
    return range(n)[start:stop]


def _summary_stats(prediction: np.ndarray, radius: np.ndarray, labels) -> dict:
    n_test = int(prediction.shape[0])
    cert = prediction != ABSTAIN
    r = radius[cert]
    out = {
        "n_test": n_test,
        "n_certified": int(cert.sum()),
        "abstain_rate": float(np.mean(~cert)) if n_test else float("nan"),
        "radius_median": float(np.median(r)) if r.size else float("nan"),
        "radius_mean": float(np.mean(r)) if r.size else float("nan"),
        "radius_max": int(r.max()) if r.size else -1,
    }
    if labels is not None:
        lab = _check_labels(labels, n_test, "summary")
        out["accuracy"] = float(np.mean(prediction == lab)) if n_test else float("nan")
    return out


def _columns(counts) -> int | None:
    """The number of classes of a vote-count matrix (checked by then), or None."""
    shape = np.shape(counts)
    return int(shape[1]) if len(shape) == 2 else None


def _check_labels(labels, n_test: int, where: str, n_classes: int | None = None
                  ) -> np.ndarray:
    lab = check_int_array(labels, "labels", where, low=0)
    if n_classes is not None and lab.size and lab.max() >= n_classes:  # ids for indices
        raise param_error("labels", where, f"class indices in [0, {n_classes - 1}] (the "
                          "columns of the vote counts; a certificate without classes takes "
                          "indices, not the data set's class ids)", lab.max())
    if lab.shape != (n_test,):
        raise param_error("labels", where, f"an int array of shape ({n_test},)",
                          f"an array of shape {lab.shape}")
    return lab


def _true_indices(result, labels, where: str) -> np.ndarray:
    """True classes as indices: ``labels`` mapped through ``result.classes`` when the
    certificate names its classes (an estimator's or an ``Ensemble``'s), else class indices."""
    n_test = int(np.asarray(result.prediction).shape[0])
    classes = getattr(result, "classes", None)
    if classes is None:
        return _check_labels(labels, n_test, where, getattr(result, "n_classes", None))
    classes = np.asarray(classes)
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n_test:
        raise param_error("labels", where, f"an array of shape ({n_test},) of the certificate's "
                          "classes", f"an array of shape {y.shape}")
    order = np.argsort(classes, kind="stable")
    try:
        pos = np.clip(np.searchsorted(classes, y, sorter=order), 0, len(classes) - 1)
        idx = order[pos]
        with warnings.catch_warnings():  # numpy 1.x: str == int warns and gives one False
            warnings.simplefilter("ignore", FutureWarning)
            known = np.asarray(classes[idx] == y, dtype=bool)
    except TypeError:  # labels not comparable with the classes (str vs int)
        known = np.zeros(n_test, dtype=bool)
        idx = np.zeros(n_test, dtype=np.int64)
    if known.shape != (n_test,):  # that one False
        known = np.zeros(n_test, dtype=bool)
    if not known.all():
        shown = ", ".join(repr(c) for c in classes.tolist()[:10])
        raise param_error("labels", where, f"labels from the certificate's classes ({shown}"
                          f"{', ...' if len(classes) > 10 else ''})",
                          y[np.flatnonzero(~known)[0]])
    return idx.astype(np.int64)


def certificate_repr(cert) -> str:
    """A short description of a certificate (what ``repr`` shows): its size, how many points
    are certified, the radii, and its setting."""
    pred = np.asarray(cert.prediction)
    radius = np.asarray(cert.radius)
    n = int(pred.shape[0])
    ok = pred != ABSTAIN
    r = radius[ok]
    parts = [f"n_test={n}", f"certified={int(ok.sum())}"]
    if r.size:
        parts.append(f"radius median {np.median(r):g}, max {int(r.max())}")
    parts += [f"{k}={v!r}" for k, v in cert.setting().items()
              if k != "radius_unit" and v is not None]
    classes = getattr(cert, "classes", None)
    if classes is not None:
        shown = ", ".join(repr(c) for c in np.asarray(classes).tolist()[:6])
        parts.append(f"classes=[{shown}{', ...' if len(classes) > 6 else ''}]")
    return f"{type(cert).__name__}({', '.join(parts)})"


class _CertificateCommon:
    """What every certificate type shares: ``repr`` (``certificate_repr``), ``len`` (its test
    points) and ``to_rows`` (``records``). The dataclasses take it with ``repr=False``."""

    def __repr__(self) -> str:
        return certificate_repr(self)

    def __len__(self) -> int:
        return int(self.prediction.shape[0])

    def to_rows(self) -> list[dict]:
        """``records()``: one flat dict per test point."""
        return self.records()

    def summary(self, labels=None) -> dict:
        """Counts, abstain rate and radius statistics over certified points, plus the setting;
        with ``labels`` (as ``certified_accuracy`` takes them) also ``accuracy``, the share
        of the certificate's predictions equal to the label, abstentions counting as wrong.
        Where a point not certified at radius 0 abstains (the random schemes), that is the
        certified accuracy at radius 0, not the majority vote's clean accuracy."""
        labels = None if labels is None else _true_indices(self, labels, "summary")
        return {**_summary_stats(self.prediction, self.radius, labels), **self.setting()}


class _TopIsPrediction(_CertificateCommon):
    """A certificate whose certified class is its prediction (``top_class``), as DPA's,
    Finite Aggregation's, the run-off election's and kNN's are."""

    @property
    def top_class(self) -> np.ndarray:
        return self.prediction


@dataclass(frozen=True, eq=False, repr=False)
class Certificate(_CertificateCommon):
    """Certified predictions of a randomized-selection ensemble, one entry per test point.

    Guarantee: with probability at least ``1 - alpha`` over the sampling of the ``T``
    sub-datasets (per test point; see ``poisoncert.stats.vote_bounds`` for what ``method``
    covers), where ``prediction[i] != ABSTAIN`` the smoothed classifier trained on any data set
    reachable from the clean one by at most ``radius[i]`` operations of poisoning model
    ``model`` still predicts ``prediction[i]``. ``radius`` counts insertions, deletions and
    modifications as one operation each.

    Attributes
    ----------
    prediction : int64 array
        ``top_class`` where ``p1_lower > p2_upper`` (strict, erratum 5), else ``ABSTAIN``.
    radius : int64 array
        Certified radius (number of operations), ``-1`` where abstaining.
    p1_lower, p2_upper : float64 arrays
        The vote-probability bounds the radius comes from.
    top_class : int64 array
        The class the bounds are about (majority vote, or the label for ``true_label*``).
    scheme, n, ns, p, model :
        The selection setting (canonical names, see ``poisoncert.bounds``).
    alpha, method : the statistics (``poisoncert.stats.vote_bounds``).
    T : int64 array
        Base classifiers behind each test point (abstaining ones included).
    rule : str
        ``"theorem1"`` (the corrected Theorem 1) or ``"jia"`` (Jia et al.'s rounding).
    classes : array or None
        What the class indices name: ``classes[k]`` is class ``k``'s label (set by
        ``CertifiedEnsembleClassifier.certify``, ``classes_``, and ``Ensemble.certify``, the
        data set's class ids); ``None`` for certificates of bare vote counts. Where it is set,
        ``certified_accuracy`` and ``summary`` take true labels, not indices.
    n_classes : int or None
        Columns of the vote counts it was made from (``None``: not recorded); class indices
        given to ``certified_accuracy`` and ``summary`` must be below it.
    """

    prediction: np.ndarray
    radius: np.ndarray
    p1_lower: np.ndarray
    p2_upper: np.ndarray
    top_class: np.ndarray
    scheme: str
    n: int
    ns: int | None
    p: float | None
    model: str
    alpha: float
    method: str
    T: np.ndarray
    rule: str = "theorem1"
    classes: np.ndarray | None = None
    n_classes: int | None = None

    @property
    def gap(self) -> np.ndarray:
        """``p1_lower - p2_upper``."""
        return self.p1_lower - self.p2_upper

    @property
    def certified(self) -> np.ndarray:
        """Boolean mask of the test points that are not abstained on."""
        return self.prediction != ABSTAIN

    def setting(self) -> dict:
        """The setting shared by every test point, as a flat dict."""
        return {
            "scheme": self.scheme, "n": self.n, "ns": self.ns, "p": self.p,
            "model": self.model, "alpha": self.alpha, "method": self.method, "rule": self.rule,
            "radius_unit": _UNIT_TEXT["operation"],
        }

    def records(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """One flat dict per test point (those of ``record_range(len(self), start, stop)``):
        its index, results, bounds and the setting."""
        s = self.setting()
        return [
            {
                "index": i,
                "prediction": int(self.prediction[i]),
                "radius": int(self.radius[i]),
                "top_class": int(self.top_class[i]),
                "p1_lower": float(self.p1_lower[i]),
                "p2_upper": float(self.p2_upper[i]),
                "T": int(self.T[i]),
                **s,
            }
            for i in record_range(len(self), start, stop)
        ]

    def predicted_labels(self, abstain=None) -> np.ndarray:
        """``classes[prediction]`` as an object array, ``abstain`` where abstaining (needs
        ``classes``)."""
        return _predicted_labels(self, abstain)


def _finish(vb, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 1, lines 5-10, with the strict inequality of erratum 5."""
    ok = (vb.p1_lower > vb.p2_upper) & (radius >= 0)
    prediction = np.where(ok, vb.top_class, ABSTAIN).astype(np.int64)
    radius = np.where(ok, radius, -1).astype(np.int64)
    return prediction, radius


def certify(counts, *, scheme: str, n: int, ns: int | None = None, p: float | None = None,
            model: str = "P6", alpha: float = 0.001, method: str = "auto", T=None,
            labels=None) -> Certificate:
    """Certify every test point of a vote-count matrix (Algorithm 1, with erratum 5's ``>``).

    For each test point: bound the vote probabilities with ``stats.vote_bounds`` (``method``,
    ``alpha``), predict the top class ``c1`` with radius ``max {rho : delta(rho) < p1_lower -
    p2_upper}`` when ``p1_lower > p2_upper``, else ``ABSTAIN`` with radius ``-1``. All radii
    come from one vectorised ``SelectionBound.radius`` call (``delta`` depends only on the
    setting).

    Parameters
    ----------
    counts : int array ``(n_test, n_classes)``
    scheme, n, ns, p, model :
        The selection setting of ``poisoncert.bounds.SelectionBound``; ``n = |D^p|``.
    alpha : float in (0, 1)
        Error probability per test point, over the sampling of the sub-datasets.
    method : str
        How the bounds are computed; see ``poisoncert.stats.vote_bounds``. The default
        ``"auto"`` is fixed by the number of classes (``"bonferroni"`` for two,
        ``"pairwise"`` for more, ``stats.auto_method``); ``Certificate.method`` names the one
        used.
    T : int or int array, optional
        Number of base classifiers (defaults to row sums; abstaining ones count in ``T``).
    labels : int array, optional
        True labels, required by the ``true_label*`` methods (certified-accuracy evaluation;
        then a certified prediction is the label) and refused by the others.
    """
    with named_as("certify", scheme="scheme", n="n", ns="ns", p="p", model="model"):
        bound = SelectionBound(scheme, n, ns=ns, p=p, model=model)
    vb = _vote_bounds(counts, alpha=alpha, method=method, T=T, labels=labels, where="certify")
    prediction, radius = _finish(vb, bound.radius(vb.gap))
    return Certificate(
        prediction=prediction, radius=radius, p1_lower=vb.p1_lower, p2_upper=vb.p2_upper,
        top_class=vb.top_class, scheme=bound.scheme, n=bound.n, ns=bound.ns, p=bound.p,
        model=bound.model, alpha=vb.alpha, method=vb.method, T=vb.T, rule="theorem1",
        n_classes=_columns(counts),
    )


def jia_certify(counts, *, n: int, ns: int, alpha: float = 0.001, method: str = "bonferroni",
                T=None, labels=None) -> Certificate:
    """Certify with Jia et al.'s condition, for the baseline comparison.

    Bagging with replacement (``ns`` draws from ``n``), any insertions, deletions and
    modifications (P6); the bounds of ``method`` are rounded to multiples of ``1 / n^ns``
    before the radius search (``poisoncert.bounds.jia_certified_radius``). By erratum 4 the
    radii equal ``certify(..., scheme="with_replacement")``'s except within ``2 / n^ns`` of a
    threshold. ``rule == "jia"`` in the result.
    """
    bound = SelectionBound("with_replacement", n, ns=ns, model="P6")
    vb = _vote_bounds(counts, alpha=alpha, method=method, T=T, labels=labels,
                      where="jia_certify")
    radius = np.asarray(jia_certified_radius(vb.p1_lower, vb.p2_upper, n=bound.n, ns=bound.ns))
    prediction, radius = _finish(vb, radius.reshape(vb.p1_lower.shape))
    return Certificate(
        prediction=prediction, radius=radius, p1_lower=vb.p1_lower, p2_upper=vb.p2_upper,
        top_class=vb.top_class, scheme=bound.scheme, n=bound.n, ns=bound.ns, p=None,
        model="P6", alpha=vb.alpha, method=vb.method, T=vb.T, rule="jia",
        n_classes=_columns(counts),
    )


def _predicted_labels(cert, abstain) -> np.ndarray:
    if cert.classes is None:
        raise ValueError("This certificate has no classes (it was made from bare vote "
                         "counts): its predictions are class indices.")
    idx = np.asarray(cert.prediction, dtype=np.int64)
    out = np.asarray(cert.classes)[np.clip(idx, 0, None)].astype(object)
    out[idx < 0] = abstain
    return out


def certified_accuracy(result, labels, rhos) -> np.ndarray:
    """Fraction of test points with ``prediction == label`` and ``radius >= rho``, per ``rho``.

    ``result`` is a ``Certificate`` or ``DPACertificate`` (anything with ``prediction`` and
    ``radius``); abstentions count as wrong. ``labels`` are the true labels in the
    certificate's terms: labels from ``result.classes`` where the certificate has them (the
    estimator's and ``Ensemble``'s certificates: pass ``y`` as given to ``fit``), class
    indices otherwise. ``rhos``: non-negative integers (scalar or array); the result has the
    shape of ``rhos`` and is non-increasing in ``rho``.
    """
    where = "certified_accuracy"
    allowed = "a Certificate or DPACertificate (1-D prediction and radius of one length)"
    try:
        prediction = check_int_array(result.prediction, "result", where, low=ABSTAIN)
        radius = check_int_array(result.radius, "result", where, low=-1)
    except AttributeError:
        raise param_error("result", where, allowed, type(result).__name__) from None
    if prediction.ndim != 1 or radius.shape != prediction.shape:
        raise param_error("result", where, allowed, type(result).__name__)
    n_test = int(prediction.shape[0])
    lab = _true_indices(result, labels, where)
    rho = check_int_array(rhos, "rhos", where, low=0, high=INT_LIMIT)
    if n_test == 0:
        raise param_error("labels", where, "a non-empty int array", "an empty array")
    good = np.sort(radius[(prediction == lab) & (prediction != ABSTAIN)])
    # number of correct points with radius >= rho
    n_ok = good.size - np.searchsorted(good, rho, side="left")
    out = n_ok / n_test
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True, eq=False, repr=False)
class DPACertificate(_TopIsPrediction):
    """Deterministic partition aggregation: certified predictions, one entry per test point.

    Guarantee (deterministic): with parts assigned by a hash of each sample's content, the
    majority vote (ties to the smaller class index) stays ``prediction[i]`` under any attack of
    model ``model`` with at most ``radius[i]`` operations, counted in ``unit``:

    - ``"operation"``: an insertion, deletion or modification is one operation (as in P1-P6).
      An insertion or deletion changes one part's vote, a modification up to two (old and new
      hash), so ``radius = floor(slack / 2)`` under P1/P2 and ``floor(slack / 4)`` under P3-P6.
    - ``"dpa"``: the DPA paper's unit, a modification counts as two operations;
      ``radius = floor(slack / 2)`` whatever the model.

    ``slack = N_c1 - max over c != c1 of (N_c + [c < c1])``. DPA abstains (prediction and
    radius ``-1``, slack ``-1``) only where no part votes: every base classifier abstained
    (empty parts, or outputs that were not finite), as the ensemble's vote does.
    ``classes``: as ``Certificate.classes``.
    """

    prediction: np.ndarray
    radius: np.ndarray
    slack: np.ndarray
    model: str
    unit: str
    classes: np.ndarray | None = None
    n_classes: int | None = None  # columns of the vote counts (as ``Certificate.n_classes``)

    @property
    def radius_dpa(self) -> np.ndarray:
        """The radius in the DPA paper's unit (modification = two operations)."""
        return self.slack // 2

    def setting(self) -> dict:
        return {"scheme": "partition", "model": self.model, "unit": self.unit,
                "radius_unit": _UNIT_TEXT[self.unit]}

    def records(self, start: int = 0, stop: int | None = None) -> list[dict]:
        """One flat dict per test point (of ``record_range(len(self), start, stop)``)."""
        s = self.setting()
        return [
            {"index": i, "prediction": int(self.prediction[i]), "radius": int(self.radius[i]),
             "slack": int(self.slack[i]), "radius_dpa": int(self.slack[i] // 2), **s}
            for i in record_range(len(self), start, stop)
        ]

    def predicted_labels(self, abstain=None) -> np.ndarray:
        """``classes[prediction]`` as an object array (needs ``classes``)."""
        return _predicted_labels(self, abstain)


def dpa_certify(counts, *, model: str = "P6", unit: str = "operation") -> DPACertificate:
    """Certify DPA votes (one base classifier per hash-partition part; ``counts`` per class).

    ``prediction`` = majority vote with ties to the smaller class index, ``slack = N_c1 -
    max over c != c1 of (N_c + [c < c1])``, and ``radius`` in ``unit`` (see
    ``DPACertificate``): with ``unit="operation"`` ``floor(slack / 2)`` under P1/P2 and
    ``floor(slack / 4)`` under P3-P6; with ``unit="dpa"`` (the DPA paper's numbers,
    a modification counted as two operations) ``floor(slack / 2)``. Needs at least two classes.
    """
    where = "dpa_certify"
    model = check_choice(model, "model", where, MODELS, MODEL_ALIASES)
    unit = check_choice(unit, "unit", where, DPA_UNITS)
    counts = _check_counts(counts, where)
    n_test, C = counts.shape
    if C < 2:
        raise param_error("counts", where, "a 2-D array with at least 2 classes (columns)",
                          f"an array of shape {counts.shape}")
    c1 = np.argmax(counts, axis=1)
    rows = np.arange(n_test)
    # N_c + [c < c1]: a class below c1 wins a tie, so it needs one vote less.
    rival = counts + (np.arange(C)[None, :] < c1[:, None])
    rival[rows, c1] = np.iinfo(np.int64).min
    slack = counts[rows, c1] - rival.max(axis=1)
    if unit == "dpa" or model in ("P1", "P2"):
        radius = slack // 2
    else:
        radius = slack // 4
    none = counts.sum(axis=1) == 0  # no part votes: abstain, as the majority vote does
    c1, radius, slack = (np.where(none, ABSTAIN, a) for a in (c1, radius, slack))
    return DPACertificate(prediction=c1.astype(np.int64), radius=radius.astype(np.int64),
                          slack=slack.astype(np.int64), model=model, unit=unit, n_classes=C)
