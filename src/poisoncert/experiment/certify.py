"""Certify a trained run: one certificate per test example, the certified accuracy against
``rho``, and their files (CSV, JSON, PNG) beside the run.

The math is ``poisoncert.certify`` (Algorithm 1 on the vote counts; ``dpa_certify`` for the
partition scheme); this module reads the run's votes and config and writes the results.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisoncert import certify as certificates
from poisoncert import runs, selection
from poisoncert._validation import INT_LIMIT, check_real, named_as, param_error
from poisoncert.config import ExperimentConfig
from poisoncert.experiment.ranks import RANKS
from poisoncert.runs import RunDir, RunError
from poisoncert.runsafe import json_text

#: Schemes whose certificate is deterministic (``alpha`` and ``method`` do not apply).
DETERMINISTIC = (selection.PARTITION, selection.FINITE_AGGREGATION,
                 *selection.NEAREST_NEIGHBOURS)

__all__ = ["DETERMINISTIC", "FLOAT_WIDTH", "INT_WIDTH", "ROW_BLOCK", "CertifiedAccuracy",
           "CertifyResult", "accuracy_curve", "certificate_row_blocks", "certificate_rows",
           "certify_options", "certify_run", "certify_votes", "counted_blocks", "curve_label",
           "data_text", "figure_title", "nn_certificate", "row_text_bound", "rows_csv",
           "rows_csv_parts", "text_width"]


@dataclass(frozen=True, eq=False)
class CertifiedAccuracy:
    """Certified accuracy ``accuracy[j]`` at radius ``rho[j]`` (abstentions count as wrong)."""

    rho: np.ndarray
    accuracy: np.ndarray

    def rows(self) -> list[tuple[int, float]]:
        return [(int(r), float(a)) for r, a in zip(self.rho, self.accuracy, strict=True)]


class CertifyResult(tuple):
    """``(certificate, table)``: the ``Certificate`` (or ``DPACertificate``) and the certified
    accuracy at the requested ``rhos``; ``paths`` names the files written."""

    def __new__(cls, certificate, table: CertifiedAccuracy, paths: dict[str, Path],
                summary: dict):
        self = super().__new__(cls, (certificate, table))
        self.paths = paths
        self.summary = summary
        return self

    @property
    def certificate(self):
        return self[0]

    @property
    def table(self) -> CertifiedAccuracy:
        return self[1]


def refuse_statistics(scheme: str, alpha, method, where: str) -> None:
    """``alpha`` and ``method`` (the vote bounds' statistics) given for a run whose certificate
    is deterministic (``DETERMINISTIC``) are an error: they would be ignored."""
    if scheme in DETERMINISTIC and (alpha, method) != (None, None):
        name, value = ("alpha", alpha) if alpha is not None else ("method", method)
        what = "partition (DPA)" if scheme == selection.PARTITION else scheme
        raise param_error(name, where, f"left out for a {what} run, whose certificate is "
                          "deterministic", value)


def check_given_alpha(alpha, where: str) -> None:
    """An ``alpha`` given now (an option, not a stored run's config, which keeps any value in
    (0, 1) so that earlier runs still open) against the vote bounds' own range,
    ``[stats.ALPHA_MIN, 1)``, before any work: the config's check said (0, 1), so a 1e-200
    passed it and was refused only once the run's files had been verified and read."""
    if alpha is not None:
        from poisoncert.stats import ALPHA_MIN

        check_real(alpha, "alpha", where, low=ALPHA_MIN, high=1.0, high_open=True)


def certify_options(config: ExperimentConfig, scheme: str, alpha, method, model, where: str):
    """``config``'s ``certify`` section with the options given, checked, an error naming the
    option as ``where``'s parameter (``Ensemble``'s and ``NeighborModel``'s ``_settings``)."""
    refuse_statistics(scheme, alpha, method, where)
    options = {k: v for k, v in (("alpha", alpha), ("method", method), ("model", model))
               if v is not None}
    check_given_alpha(alpha, where)  # first: the range it is held to (not the config's)
    with named_as(where, certify__alpha="alpha", certify__method="method",
                  certify__model="model"):
        return dataclasses.replace(config.certify, **options)


def _manifest_data(rd: RunDir) -> dict:
    """The manifest's ``data`` entry (``experiment.split.DataSummary.manifest``)."""
    data = rd.load_manifest().get("data") or {}
    if "n" not in data:
        raise RunError(f"The manifest of '{rd.path}' does not give |D^p| (data.n): is it a "
                       "poisoncert run?")
    return data


def certify_run(run_dir: str | Path, *, alpha: float | None = None, method: str | None = None,
                model: str | None = None, rhos=None, plot: bool = True,
                aggregation: str | None = None, verify: bool = True,
                progress=None, rows_progress=None) -> CertifyResult:
    """Certify every test example of a trained run and write the results beside it.

    Options default to the run's ``certify`` config section. ``n`` is ``|D^p|``, the number of
    attackable training samples, and ``T`` the number of base classifiers (abstaining ones
    included). Deterministic certificates (``alpha`` and ``method`` do not apply): the
    partition scheme by ``certify.dpa_certify``, finite_aggregation by
    ``aggregation.fa_certify``, ``aggregation="roe"`` (partition or finite_aggregation runs with
    ``run.store_ranks``) by ``runoff.roe_certify``, knn / rnn by ``knn.knn_certify`` /
    ``knn.rnn_certify``; each also gives the radius in DPA's unit (``radius_dpa``: insertion
    or deletion 1, modification 2). Writes ``certificates.csv`` (one flat row per test
    example), ``certified_accuracy.csv`` (the whole curve, ``accuracy_curve``: every integer
    ``rho`` up to the largest radius, plus ``rhos``), ``certify.json`` and
    ``certified_accuracy.png``; the run-off election writes them with the suffix ``_roe``
    (``certificates_roe.csv``, ...), so both aggregations of one run sit side by side.
    Returns ``(certificate, table)`` with the certified accuracy at ``rhos``.

    The run is certified under its lock, after ``RunDir.verify`` (checksums, config hash,
    consistency; a ``RunError`` names the first file that does not match); ``verify=False``
    skips that, and ``summary["verification"]`` says which was done. ``progress``: a display
    of the checksums, in MiB read (as ``train_run``'s: None, True or a ``ProgressDisplay``);
    ``rows_progress``: a display of ``certificates.csv``'s rows as their text is made (one
    unit a test point; the same kinds; ``poisoncert certify`` shows it from
    ``cli.predict.ROWS_BAR`` test points, as predict does: 200,000 took 5-20 s, silent).
    """
    from poisoncert.experiment.display import progress_display

    display = progress_display(progress, "certify_run")
    if progress is True:  # the command line's bar, in MiB
        display = functools.partial(display, unit="MiB")
    rows_display = progress_display(rows_progress, "certify_run", "rows_progress")
    if rows_progress is True:
        rows_display = functools.partial(rows_display, unit="rows")
    rd = RunDir(run_dir)
    with rd.lock():  # one process at a time; verified before anything is read
        return _certify_locked(rd, alpha, method, model, rhos, plot, verify, aggregation,
                               display, rows_display)


def _certify_locked(rd: RunDir, alpha, method, model, rhos, plot: bool, verify: bool,
                    aggregation: str | None, display=None, rows_display=None
                    ) -> CertifyResult:
    cfg = rd.load_config()
    refuse_statistics(cfg.selection.scheme, alpha, method, "certify")
    options = {k: v for k, v in (("alpha", alpha), ("method", method), ("model", model),
                                 ("aggregation", aggregation)) if v is not None}
    if rhos is not None:
        options["rhos"] = [int(r) if isinstance(r, (int, np.integer)) else r
                           for r in np.atleast_1d(rhos).tolist()]
    check_given_alpha(alpha, "certify")  # first: the range it is held to (not the config's)
    c = dataclasses.replace(cfg.certify, **options)  # checked before the files are read
    checked = rd.verify(display) if verify else {
        "verified": None, "note": "not verified (--no-verify): the run's files were not "
                                  "checked against its manifest"}
    data = _manifest_data(rd)
    votes = rd.load(runs.VOTES)
    labels = rd.load(runs.LABELS)
    T = cfg.T
    cert, radius_dpa = _certificate(rd, cfg, c, votes, labels, int(data["n"]),
                                    n_train=int(data.get("n_train", data["n"])))
    table = CertifiedAccuracy(np.asarray(c.rhos, dtype=np.int64),
                              np.atleast_1d(certificates.certified_accuracy(cert, labels,
                                                                            c.rhos)))
    curve = accuracy_curve(cert, labels, extra=c.rhos)

    suffix = "_roe" if c.aggregation == "roe" else ""
    paths = {"certificates": rd / _suffixed(runs.CERTIFICATES, suffix),
             "certified_accuracy": rd / _suffixed(runs.CERTIFIED_ACCURACY, suffix),
             "summary": rd / _suffixed(runs.CERTIFY_JSON, suffix)}
    nn = cfg.selection.scheme in selection.NEAREST_NEIGHBOURS
    summary = {**cert.summary(labels), "T": T, "n_classes": int(votes.shape[1]),
               "certified_accuracy": {str(r): a for r, a in table.rows()},
               "verified": checked["verified"], "verification": checked["note"]}
    if radius_dpa is not None:
        summary["radius_dpa_median"] = float(np.median(radius_dpa[cert.prediction >= 0])) \
            if np.any(cert.prediction >= 0) else float("nan")
    # every output made first, then the earlier set removed and the new one written, the
    # summary last: a kill or a full disk leaves files of this certify only, never beside
    # an earlier one's (whose certify.json then described another model or alpha)
    png = rd / _suffixed(runs.CERTIFIED_ACCURACY_PNG, suffix)
    outputs = {paths["certificates"]: _certificate_csv(
                   cert, votes, labels, None if nn else T, radius_dpa, data,
                   progress=rows_display, label=paths["certificates"].name).encode(),
               paths["certified_accuracy"]: _curve_csv(curve).encode()}
    if plot:
        from poisoncert.plots import plot_certified_accuracy, radius_label

        fig = plot_certified_accuracy({curve_label(cfg, c.aggregation): (curve.rho,
                                                                         curve.accuracy)},
                                      title=figure_title(cfg, c.model, summary.get("alpha"),
                                                         data),
                                      xlabel=radius_label(c.model))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150)
        paths["plot"] = png
        outputs[png] = buf.getvalue()
    outputs[paths["summary"]] = (json_text(summary, indent=2, sort_keys=False)
                                  + "\n").encode()
    for path in (paths["summary"], paths["certificates"], paths["certified_accuracy"], png):
        path.unlink(missing_ok=True)
    runs.save_all(outputs, others="the certify's other outputs", again="run it again")
    return CertifyResult(cert, table, paths, summary)


def _suffixed(name: str, suffix: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return f"{stem}{suffix}{dot}{ext}"


def _certificate(rd: RunDir, cfg: ExperimentConfig, c, votes, labels, n: int, *,
                 n_train: int | None = None):
    """The run's certificate under the certify settings ``c``, and its radii in DPA's unit
    (None where the unit does not apply: randomized selection, and DPA's own certificate,
    whose records hold them)."""
    from poisoncert import aggregation, runoff

    sel = cfg.selection
    scheme = sel.scheme
    C = int(votes.shape[1])
    if c.aggregation == "roe":
        if scheme not in selection.BUCKET_SCHEMES:
            raise RunError(f"The run-off election certifies partition and finite_aggregation "
                           f"runs; '{rd.path}' is a {scheme} run.")
        if not (rd / RANKS).exists():
            raise RunError(f"'{rd / RANKS}' is missing: the run-off election needs every "
                           "classifier's ranking; train the run with run.store_ranks: true.")
        d = sel.d if scheme == selection.FINITE_AGGREGATION else 1
        cert = runoff.roe_certify(np.load(rd / RANKS, allow_pickle=False), d=d, model=c.model)
        return cert, cert.buckets
    if scheme == selection.PARTITION:
        return certify_votes(cfg, n, votes, labels, alpha=c.alpha, method=c.method,
                             model=c.model), None
    if scheme == selection.FINITE_AGGREGATION:
        cert = aggregation.fa_certify(rd.load(runs.PREDICTIONS), d=sel.d, n_classes=C,
                                      model=c.model)
        return cert, cert.buckets
    if scheme == "knn":
        from poisoncert.experiment.neighbors import NEIGHBORS

        return nn_certificate(cfg, c.model, votes, rd.load(NEIGHBORS), n_train=n_train)
    if scheme == "rnn":
        return nn_certificate(cfg, c.model, votes)
    return certify_votes(cfg, n, votes, labels, alpha=c.alpha, method=c.method,
                         model=c.model), None


def nn_certificate(cfg: ExperimentConfig, model: str, votes: np.ndarray,
                   neighbors: np.ndarray | None = None, *, n_train: int | None = None):
    """The certificate of a knn / rnn run's outputs (``knn.knn_certify`` of the ``neighbors``'
    labels, ``knn.rnn_certify`` of the ball's ``votes``) under ``model``, and its radii in
    DPA's unit: what ``certify_run`` writes for the test set and
    ``nnmodel.NeighborModel`` gives new inputs. ``n_train``: the run's training set size (the
    manifest's ``data.n_train``; the deleting models' cap)."""
    from poisoncert import knn

    sel = cfg.selection
    if sel.scheme == "knn":
        neighbors = np.asarray(neighbors).astype(np.int64)
        C = int(votes.shape[1])
        cert = knn.knn_certify(neighbors, k=sel.k, n_classes=C, model=model, n_train=n_train)
        dpa = knn.knn_certify(neighbors, k=sel.k, n_classes=C, model=model, unit="dpa",
                              n_train=n_train)
        return cert, dpa.radius
    cert = knn.rnn_certify(votes, model=model)
    return cert, knn.rnn_certify(votes, model=model, unit="dpa").radius


def certify_votes(cfg: ExperimentConfig, n: int, votes: np.ndarray, labels=None, *,
                  alpha: float, method: str, model: str):
    """The certificates of a run's vote counts: ``certify.dpa_certify`` for the partition
    scheme (deterministic; ``alpha`` and ``method`` do not apply), else ``certify.certify``
    with the run's selection, ``n = |D^p|`` and ``T`` (``labels``, class indices, only for the
    ``true_label*`` methods). ``certify_run`` and ``poisoncert.Ensemble.certify`` both call
    this, so new inputs are certified exactly as a run's test set is. The vote counts do not
    determine the certificates of finite_aggregation (which classifiers voted matters:
    ``aggregation.fa_certify`` of the predictions) or knn / rnn runs: a ``ValueError``."""
    if cfg.selection.scheme not in selection.ALL_SCHEMES:
        raise ValueError(f"The certificate of a {cfg.selection.scheme} run is not a function of "
                         "its vote counts: certify its predictions (experiment.certify_run).")
    if cfg.selection.scheme == selection.PARTITION:
        # dpa_certify reads the gaps alone: counts of more votes than the run's T classifiers
        # (another ensemble's) would be certified with larger radii
        sums = np.asarray(votes).sum(axis=-1) if np.ndim(votes) == 2 else None
        if sums is not None and sums.size and sums.max() > cfg.T:
            raise param_error("votes", "certify_votes", f"counts of at most T = {cfg.T} votes "
                              "a row (the run's classifiers)",
                              f"a row of {int(sums.max())} votes")
        return certificates.dpa_certify(votes, model=model)
    sel = cfg.selection  # binomial with ns: p = ns / n, as drawn
    if method.startswith("true_label") and labels is None:
        raise ValueError(f"The 'labels' parameter of certify must be the true labels for the "
                         f"{method!r} method. Got None instead.")
    return certificates.certify(
        votes, scheme=sel.scheme, n=int(n), ns=sel.ns, p=sel.p, model=model, alpha=alpha,
        method=method, T=cfg.T, labels=labels if method.startswith("true_label") else None)


#: ``accuracy_curve`` lists every integer radius while the largest radius is below this;
#: beyond, only the radii where the curve may change (the same step curve, in at most
#: ``2 n_test + 1`` rows plus the requested ones).
DENSE_CURVE_LIMIT = 100_000


def accuracy_curve(cert, labels, *, extra=()) -> CertifiedAccuracy:
    """Certified accuracy at every integer ``rho`` from 0 to one past the largest radius (and
    at the ``extra`` radii).

    The accuracy at ``rho`` counts the correct points of radius at least ``rho``, so it only
    changes between ``r`` and ``r + 1`` for a certified radius ``r``. When the largest radius
    reaches ``DENSE_CURVE_LIMIT``, the curve lists only ``0``, each certified radius ``r`` and
    ``r + 1``, and the ``extra`` radii: the same step curve (drawn with ``steps-post``, or
    read as "the value of the last row at or below ``rho``") in rows bounded by the test set.
    """
    radius = np.asarray(cert.radius, dtype=np.int64)
    top = int(max(np.max(radius, initial=-1), 0)) + 1
    if top < DENSE_CURVE_LIMIT:
        points = np.arange(top + 1)
    else:
        r = np.unique(radius[radius >= 0])
        points = np.union1d(np.union1d(r, np.minimum(r + 1, INT_LIMIT)), [0])
    rho = np.union1d(points, np.asarray(list(extra), dtype=np.int64))
    return CertifiedAccuracy(rho, np.atleast_1d(certificates.certified_accuracy(cert, labels,
                                                                                rho)))


def data_text(cfg: ExperimentConfig, data: dict | None = None) -> str:
    """The data as a run took it, for a figure's title: its name, the classes where it took
    some (e.g. "digits 1 vs 7"), the attackable classes of case 3 ("poisoned class 9") or the
    clean samples of case 2 ("n_c = 100"). ``data``: the manifest's ``data`` (its class
    names, n_clean) where there is one."""
    data = data or {}
    d = cfg.data
    what = str(data.get("name") or d.name)
    if d.classes is not None:
        names = [str(v) for v in (data.get("class_names") or d.classes)]
        what += " " + (" vs ".join(names) if len(names) == 2 else "classes " + ", ".join(names))
    if d.poisoned_classes is not None:
        k = len(d.poisoned_classes)
        what += (f", poisoned class{'es' * (k > 1)} "
                 + ", ".join(str(v) for v in d.poisoned_classes))
    elif data.get("n_clean"):
        what += f", n_c = {int(data['n_clean'])}"
    return what


def figure_title(cfg: ExperimentConfig, model: str, alpha: float | None = None,
                 data: dict | None = None) -> str:
    """The title of a run's certified-accuracy figure: the data as the run took it
    (``data_text``), the poisoning model and, for a probabilistic certificate, alpha. It
    said "digits: certified accuracy (model P6)" of all the 10 classes, of 1 vs 7 and of a
    two-phase run alike, and gave no alpha."""
    how = f"model {model}" + (f", alpha {alpha:g}" if alpha is not None else "")
    return f"{data_text(cfg, data)}: certified accuracy ({how})"


def curve_label(cfg: ExperimentConfig, aggregation: str = "vote") -> str:
    """The legend of a run's certified-accuracy curve: its scheme and size (and two-phase,
    Algorithm 3, where the run trained so)."""
    s = cfg.selection
    roe = ", run-off election" if aggregation == "roe" else ""
    if s.scheme == selection.PARTITION:
        return f"partition (DPA), k = {s.k}" + roe
    if s.scheme == selection.FINITE_AGGREGATION:
        return f"finite aggregation, k = {s.k}, d = {s.d}" + roe
    if s.scheme == "knn":
        return f"kNN, k = {s.k}"
    if s.scheme == "rnn":
        return f"rNN, r = {s.r:g}"
    size = f"ns = {s.ns}" if s.ns is not None else f"p = {s.p:g}"
    if s.scheme == "binomial" and s.ns is not None:
        size += " (p = ns / n)"
    two = ", two-phase" if cfg.algorithm.two_phase else ""
    return f"{s.scheme.replace('_', ' ')}, {size}, T = {s.T}{two}"


def _certificate_csv(cert, votes: np.ndarray, labels: np.ndarray, T: int,
                     radius_dpa: np.ndarray | None = None, data: dict | None = None, *,
                     progress=None, label: str = "rows") -> str:
    """One flat row per test example: the certificate's record plus label, correctness and
    the vote counts of the two top classes (and the radius in DPA's unit, where given), and
    the prediction's class id and name where the manifest's ``data`` gives them.
    ``progress``: a ``ProgressDisplay`` advanced by each block's rows as it is written
    (``label``: its label)."""
    data = data or {}
    blocks = certificate_row_blocks(cert, votes, labels, T, radius_dpa=radius_dpa,
                                    classes=data.get("classes"),
                                    class_names=data.get("class_names"))
    if progress is None:
        return rows_csv(blocks)
    with progress(len(cert), 0, label) as advance:
        return rows_csv(counted_blocks(blocks, advance))


def counted_blocks(blocks, advance):
    """``blocks`` (lists of rows), calling ``advance(len(block))`` as each one is used (a
    display of the rows as their text is made: certify's, predict's)."""
    for block in blocks:
        yield block
        advance(len(block))


#: Rows ``certificate_row_blocks`` makes at a time: a row is a dict of about 20 Python
#: objects (about 2 KB, 6 KB while json indents it), so a table of 10^6 test points held as
#: rows took 2 GB (7 GB as JSON); a block of them takes about 16 MB (50 MB as JSON).
ROW_BLOCK = 8192


def certificate_row_blocks(cert, votes: np.ndarray, labels: np.ndarray | None,
                           T: int | None, extra: dict[str, list] | None = None, *,
                           block: int | None = None, **kw):
    """``certificate_rows`` a block of ``block`` rows (default ``ROW_BLOCK``) at a time (a
    generator of lists of rows, at least one list), so that a table of many points is written
    in bounded memory: the rows of the whole table joined are ``certificate_rows``' rows."""
    block = ROW_BLOCK if block is None else block
    n = len(cert)
    for a in range(0, max(n, 1), block):
        yield certificate_rows(cert, votes, labels, T, extra, start=a, stop=a + block, **kw)


def certificate_rows(cert, votes: np.ndarray, labels: np.ndarray | None, T: int | None,
                     extra: dict[str, list] | None = None, *,
                     radius_dpa: np.ndarray | None = None, classes=None,
                     class_names=None, missing="", start: int = 0,
                     stop: int | None = None) -> list[dict]:
    """The rows of ``certificates.csv``: per test point its index, ``label`` and ``correct``
    (empty without ``labels``), ``prediction`` and ``radius``, the rest of the certificate's
    record, the radius in DPA's unit (``radius_dpa``, where given), the two top classes with
    their votes and the abstaining votes (not for nearest neighbours, ``T`` None, whose counts
    are neighbours). ``extra``: more columns (name -> one value per row), placed after
    ``index``. ``classes`` (the data set's class id of each class index) and ``class_names``
    add the last two columns, ``class`` and ``class_name``: the prediction's id and name, empty
    where it abstains (``label``, ``prediction`` and ``top*_class`` are class indices).
    ``missing``: what stands in an empty cell (``""`` for CSV; ``None`` for JSON, null).
    ``start``, ``stop``: the rows of those test points only (``certify.record_range``; a
    table made a block at a time: ``certificate_row_blocks``)."""
    span = certificates.record_range(len(cert), start, stop)
    part = slice(span.start, span.stop)
    votes = np.asarray(votes)[part]
    labels = None if labels is None else np.asarray(labels)[part]
    pred = np.asarray(cert.prediction)[part]
    order = np.argsort(-votes, axis=1, kind="stable")
    rows = np.arange(votes.shape[0])
    first, second = order[:, 0], order[:, 1] if votes.shape[1] > 1 else order[:, 0]
    more = {
        "label": labels,
        "correct": None if labels is None else (pred == labels).astype(int),
        "top1_class": first, "top1_votes": votes[rows, first],
        "top2_class": second, "top2_votes": votes[rows, second],
        "abstain_votes": None if T is None else T - votes.sum(axis=1),
    }
    if T is None:  # nearest neighbours: the counts are neighbours, not classifiers
        del more["abstain_votes"]
    if radius_dpa is not None:
        more = {"radius_dpa": np.asarray(radius_dpa)[part], **more}
    records = cert.records(span.start, span.stop)
    extra = {k: v[part] for k, v in (extra or {}).items()}
    head = ["index", *extra, "label", "prediction", "correct", "radius"]
    keys = head + [k for k in (records[0] if records else {}) if k not in head] + \
        [k for k in more if k not in head]
    # each column as Python numbers once (``tolist``: what ``_plain`` gives element by element)
    cols = {k: None if v is None else np.asarray(v).tolist() for k, v in more.items()}
    out = []
    for i, rec in enumerate(records):
        row = {**rec, **{k: missing if v is None else v[i] for k, v in cols.items()},
               **{k: v[i] for k, v in extra.items()}}
        out.append({k: row[k] for k in keys})
    for name, of in (("class", classes), ("class_name", class_names)):
        if of is not None:
            for r, p in zip(out, pred, strict=True):
                r[name] = missing if p < 0 else _plain(of[p])
    return out


#: The widest text of a value that varies from row to row (``row_text_bound``): an int64 with
#: its sign (20 characters) and a float's ``repr`` (at most 24, e.g. -2.2250738585072014e-308).
INT_WIDTH, FLOAT_WIDTH = 20, 24


def text_width(values, *, as_json: bool) -> tuple[int, bool]:
    """The widest of ``values`` (strings) as a cell of ``rows_csv`` (UTF-8 bytes, quoted and
    its quotes doubled where the csv module quotes it) or a JSON string (ASCII, escaped),
    and whether any of them is not ASCII (CSV text then holds up to 4 bytes a character in
    memory)."""
    import json

    values = [str(v) for v in values]
    joined = "".join(values)
    if joined.isascii() and joined.isprintable() and not any(c in joined for c in ',"\\'):
        # plain text (row numbers, most file names): as it is, a JSON string quoted; a CSV
        # cell quoted where it starts or ends with a space
        wide = max(map(len, values), default=0)
        return wide + 2, True
    wide, ascii_only = 0, True
    for v in values:
        v = str(v)
        if as_json:
            w = len(json.encoder.encode_basestring_ascii(v))
        else:
            w = len(v.encode())
            if any(c in v for c in ',"\r\n') or v != v.strip():
                w = 2 * w + 2  # quoted, its quotes doubled (at most)
            ascii_only = ascii_only and v.isascii()
        wide = max(wide, w)
    return wide, ascii_only


def row_text_bound(row: dict, constant=(), widths: dict | None = None, *,
                   as_json: bool) -> int:
    """An upper bound of the characters one row of ``certificate_rows`` takes in the text of
    ``rows_csv`` or ``cli.predict.rows_json`` (indent 1, a row at depth 2), for every row of a
    table whose columns are ``row``'s: the columns in ``constant`` (the certificate's
    ``setting()``) hold ``row``'s value in every row, those in ``widths`` a text at most that
    wide (``text_width``: input names, class names), any other a number (``INT_WIDTH`` or
    ``FLOAT_WIDTH``), an empty cell / null, or a text as wide as ``row``'s."""
    import json

    widths = widths or {}
    total = 0
    for key, v in row.items():
        if key in widths:
            w = widths[key]
        elif key in constant or isinstance(v, str):
            w = len(json.dumps(v) if as_json else rows_csv([{key: v}]).split("\n")[1])
        elif isinstance(v, float):
            w = FLOAT_WIDTH
        else:  # an int, a bool, None (an empty cell, null)
            w = INT_WIDTH
        # JSON: '   "key": value,\n'; CSV: 'value,' (the last one's comma: its newline)
        total += w + (len(json.dumps(key)) + 7 if as_json else 1)
    return total + (8 if as_json else 0)  # JSON: the row's '  {\n', '  },\n'


def rows_csv(rows) -> str:
    """Flat rows (same keys) as CSV text: a list of rows, or an iterable of lists of rows
    (``certificate_row_blocks``; written one list at a time, the header once)."""
    return "".join(rows_csv_parts(rows))


def rows_csv_parts(rows):
    """``rows_csv(rows)`` a list of rows at a time (a generator of texts whose join is it:
    the header with the first rows), so that a table is written as its rows are made; a
    ``ValueError`` after the last list where there was no row."""
    blocks = [rows] if isinstance(rows, list) else rows
    keys = None
    for block in blocks:
        if not block:
            continue
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")  # DictWriter's rows, without its checks
        if keys is None:
            keys = list(block[0])
            w.writerow(keys)
        w.writerows([[r.get(k, "") for k in keys] for r in block])
        yield out.getvalue()
    if keys is None:
        raise ValueError("rows_csv needs at least one row (the header comes from its keys)")


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _curve_csv(curve: CertifiedAccuracy) -> str:
    lines = ["rho,certified_accuracy"]
    lines += [f"{r},{a:.6g}" for r, a in curve.rows()]
    return "\n".join(lines) + "\n"
