"""``update_run``: a new run for a changed training set, retraining only what the change touches.

``update_run(run_dir, out_dir, edits)`` applies ``edits`` (samples removed, relabelled, added;
``experiment.edits``) to the run's training set, retrains the base classifiers whose training
sequence changed (``experiment.retrain``), copies the others' votes (and rankings and weights
where the run keeps them), and writes ``out_dir`` as a complete run whose config is the old one
with ``data.edits`` naming the edits against the original data (``out_dir/edits.npz``, the
run's own edits and these composed). Training that config from scratch (``poisoncert train
out_dir/config.yaml``) gives the same predictions bit for bit on the same machine: classifier
``i`` depends only on its sequence of samples, its seed and the config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisoncert import runs, selection
from poisoncert._validation import INT_LIMIT, INT_LIMIT_TEXT, param_error, shown
from poisoncert.experiment.display import checksum_display, progress_display
from poisoncert.experiment.edits import Edits, apply_edits, load_edits, relabel_changes
from poisoncert.experiment.ranks import assemble_ranks, save_chunk_ranks
from poisoncert.experiment.retrain import load_ensemble, retrain, variant
from poisoncert.runs import RunDir, RunError

__all__ = ["EDITS_FILE", "RunTerms", "UpdateResult", "edits_from_options", "finish_command",
           "parse_ids", "parse_relabel", "read_added", "update_run"]

EDITS_FILE = runs.EDITS


@dataclass(frozen=True, eq=False)
class UpdateResult:
    """The new run: its folder, the classifiers retrained, and the time it took (``seconds``
    in all, ``train_seconds`` of it training); the edits it applied (``edits``), of which
    ``unchanged_relabels`` relabellings gave a sample the label it had, and the size of the
    new training set (``n_train``). ``neighbours``: a knn / rnn run, which has no base
    classifiers (``retrained`` is empty): its neighbours were searched again in the new
    training set (in ``train_seconds``)."""

    run_dir: Path
    retrained: np.ndarray
    T: int
    predictions: np.ndarray
    seconds: float
    train_seconds: float
    edits: Edits
    unchanged_relabels: int
    n_train: int
    neighbours: bool = False

    @property
    def n_retrained(self) -> int:
        return int(len(self.retrained))


def _original_size(cfg, data) -> int:
    """Training-set size before the run's own ``data.edits``."""
    if cfg.data.edits is None:
        return len(data.y_train)
    old = load_edits(cfg.data.edits)
    return len(data.y_train) - old.n_added + old.n_removed


def update_run(run_dir: str | Path, out_dir: str | Path, edits: Edits, *,
               progress=None, verify_progress=None) -> UpdateResult:
    """Write ``out_dir``: the run of ``run_dir`` after ``edits`` (indices refer to the run's
    training set, as its config loads it: after the run's own earlier edits, if any).
    ``out_dir`` must be empty or new. ``progress``: a display of the retraining (as
    ``train_run``'s: None, True or a ``ProgressDisplay``; a knn / rnn run's search, in test
    points); ``verify_progress``: a display of the run's checksums, in MiB read (None, True
    or a ``ProgressDisplay``, as ``certify_run``'s ``progress``). Returns the classifiers
    retrained.

    A knn / rnn run has no classifiers: its neighbours are searched again in the edited
    training set, as ``train`` of the new config searches them."""
    t0 = time.perf_counter()
    # the displays asked for, checked before anything is read (a bad one is its own line)
    display = progress_display(progress, "update_run")
    checksums = checksum_display(verify_progress, "update_run")
    src = RunDir(run_dir)
    out = RunDir(out_dir)
    runs.check_writable(out.path, "the new run directory", " (out_dir; CLI: --out)")
    if out.path.exists() and any(out.path.iterdir()):
        _refuse_filled(out)
    if out.path.resolve() == src.path.resolve():
        raise RunError("The updated run needs its own folder (--out), not the run's.")
    if src.load_config().selection.scheme in selection.NEAREST_NEIGHBOURS:
        return _update_nn_run(src, out, edits, t0, display, checksums)
    ens = load_ensemble(src.path, verify_progress=checksums)
    cfg = ens.cfg
    unchanged, total, new_cfg = _checked_edits(cfg, ens.data, edits, out)
    v = variant(ens, edits)
    t1 = time.perf_counter()
    store_ranks = cfg.run.store_ranks
    # a run trained before weights were kept by default has none to copy
    keep_weights = cfg.keeps_weights and src.weights_dir.is_dir()
    with display(len(v.changed), 0, f"retrain {len(v.changed)} of {ens.T}") as advance:
        res = retrain(ens, [v], ranks=store_ranks, weights=keep_weights, progress=advance)[0]
    train_seconds = time.perf_counter() - t1

    # the new run: config with the composed edits (new_cfg), then its files
    new_data, _ = apply_edits(ens.data, edits, deskew_added=cfg.data.deskew)
    new_cfg = _pin_subset_rows(new_cfg, new_data, ens.subset_rows)
    from poisoncert.experiment.split import _edited

    # the manifest's data entry: what split_data records for the new config (the array
    # checksum covers the original arrays and the composed edits)
    summary = _edited_data(cfg, new_cfg, ens.data, total, _edited).summary
    new_data = dataclasses.replace(new_data, summary=summary)
    manifest = runs.build_manifest(new_cfg, data=summary.manifest())
    from poisoncert.training.groups import engine_record

    manifest["engine"] = engine_record(ens.group_size, ens.subset_rows, ens.path)  # as trained
    source = src.load_manifest().get("model_source")
    if source is not None:  # the code its kept classifiers came from (checked on update)
        manifest["model_source"] = source
    manifest["update"] = {"from": str(src.path), "retrained": res.classifiers.tolist(),
                          "n_retrained": int(len(res.classifiers)), "T": ens.T,
                          "removed": edits.n_removed, "relabelled": edits.n_relabelled,
                          "relabelled_to_own_label": unchanged, "added": edits.n_added}
    predictions = ens.predictions.copy()
    predictions[res.classifiers] = res.predictions
    ranks = None
    if store_ranks:
        ranks = ens.ranks.copy()
        if len(res.classifiers):
            ranks[res.classifiers] = res.ranks
    T = ens.T
    ranges = ens.ranges
    shape = tuple(ens.data.x_train.shape[1:])
    with out.lock():  # create() makes the run with its lock held, released at the end
        # a new run or nothing: two updates into one folder each retrained, and the second
        # resumed the first's run with its own files (and the first's manifest); the edits,
        # which the config names, are there as soon as the run is
        was_folder = out.path.is_dir()  # (empty: checked above)
        out.create(new_cfg, manifest, files=lambda tmp: total.save(tmp / EDITS_FILE, shape))
        with _removed_on_error(out, was_folder):
            runs.save_npy(out / runs.SEEDS, ens.seeds)
            runs.save_npy(out / runs.CLEAN_INDICES, new_data.clean_idx)
            digests = _write_weights(out, ens, new_cfg, ranges, res) if keep_weights else {}
            for cid, (a, b) in enumerate(ranges):
                ranks_sha256 = save_chunk_ranks(out, cid, ranks[a:b]) if store_ranks else None
                out.write_chunk(cid, start=a, stop=b, seeds=ens.seeds[a:b],
                                sizes=v.sizes[a:b], predictions=predictions[a:b],
                                weights_sha256=digests.get(cid), ranks_sha256=ranks_sha256)
            out.assemble(ranges, new_data.y_test, new_data.n_classes)
            if store_ranks:
                assemble_ranks(out, ranges)
            if keep_weights:  # what poisoncert.Ensemble loads
                from poisoncert.experiment.ensemble_record import write_ensemble_record

                write_ensemble_record(out, new_cfg, new_data, ranges)
            seconds = time.perf_counter() - t0
            out.finish(seconds_last=round(seconds, 3),
                       update_train_seconds=round(train_seconds, 3))
    return UpdateResult(run_dir=out.path, retrained=res.classifiers, T=T,
                        predictions=predictions, seconds=seconds, train_seconds=train_seconds,
                        edits=edits, unchanged_relabels=unchanged,
                        n_train=len(new_data.y_train))


@contextlib.contextmanager
def _removed_on_error(out: RunDir, was_folder: bool):
    """The block writes the files of the new run ``out``, which this update created (and
    locked): on an error (a full disk) the unfinished run is removed, leaving ``out`` as it
    was (an empty folder, or none), and the error's line says so. It stayed, unfinished,
    under a line that named only the file that could not be written; and finishing it with
    ``train`` retrains every classifier whose chunk is missing, where the same update
    again retrains only those the edits touch. Ctrl-C and a kill leave it (what to do with
    it: the CLI's line, and the same command's refusal, ``_refuse_filled``)."""
    try:
        yield
    except Exception as e:
        import shutil

        if was_folder:  # emptied, kept (its mode and group: a user's shared folder)
            for p in list(out.path.iterdir()) if out.path.is_dir() else ():
                with contextlib.suppress(OSError):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        else:
            shutil.rmtree(out.path, ignore_errors=True)
        gone = not out.path.exists() or (was_folder and not any(out.path.iterdir()))
        if not isinstance(e, OSError):  # (a RunError is one)
            raise
        why = str(e) if isinstance(e, RunError) else f"{e.strerror or e}"
        left = (f"the update's unfinished run was removed from '{out.path}'; run the same "
                "command again once the cause is fixed" if gone else
                f"'{out.path}' still holds part of the update's unfinished run: delete it "
                "and run the same command again")
        raise RunError(f"{why.rstrip('.')}: {left}.") from None


def _checked_edits(cfg, data, edits: Edits, out: RunDir):
    """What both kinds of update do first, before any work: ``edits`` checked against the
    run's training set ``data`` (one error naming ``edits``), how many of its relabellings
    give a sample its own label, the edits composed with the run's own (``data.edits``) and
    the new run's config, which names them in ``out``."""
    if edits.is_empty():
        raise ValueError("The 'edits' parameter of update_run must change something (remove, "
                         "relabel or add samples). Got no change instead.")
    edits.check(len(data.y_train), data.n_classes, tuple(data.x_train.shape[1:]),
                where="update_run")
    unchanged = int(np.count_nonzero(~relabel_changes(data, edits)))
    total = edits if cfg.data.edits is None else \
        load_edits(cfg.data.edits).then(edits, _original_size(cfg, data))
    edits_path = (out.path / EDITS_FILE).absolute()
    new_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data,
                                                                edits=str(edits_path)))
    return unchanged, total, new_cfg


def finish_command(out: str | Path) -> str:
    """The command that finishes the run of an update interrupted once its folder ``out``
    appeared (its config names the edits: ``train`` resumes it)."""
    out = Path(out)
    return f"poisoncert train {out / runs.CONFIG} --run-dir {out}"


def _refuse_filled(out: RunDir) -> None:
    """The ``RunError`` for a folder ``--out`` that is not empty; for the run of an update
    killed before it finished (the same command then was refused as for any full folder,
    with no word of what the folder held), what finishes it."""
    man = {}
    if out.exists():
        with contextlib.suppress(RunError):  # an unreadable manifest: the plain refusal
            man = out.load_manifest()
    if "update" in man and not man.get("finished"):
        with out.lock():  # a live update holds it: RunLockedError, which says so
            pass
        raise RunError(f"The new run's folder '{out.path}' (out_dir; CLI: --out) holds an "
                       "update that was interrupted before it finished: finish it with "
                       f"'{finish_command(out.path)}', or delete the folder and run the same "
                       "command again.")
    raise RunError(f"The new run's folder '{out.path}' (out_dir; CLI: --out) exists and is "
                   "not empty. Use an empty or new folder.")


def _pin_subset_rows(new_cfg, new_data, trained: int | None):
    """The new run's config, with ``training.subset_rows`` written out where the run left it
    null and a new run of the edited set would resolve it otherwise (``|D^c| + ns`` changes
    when a ``D^c`` sample is removed): the kept classifiers and the retrained ones used
    ``trained``, and training the new config from scratch must give the same bits."""
    from poisoncert.experiment import learners

    t = new_cfg.training
    if t.subset_rows is not None or learners.auto_subset_rows(new_cfg, new_data) == trained:
        return new_cfg
    pinned = trained if trained is not None else "off"
    return dataclasses.replace(new_cfg, training=dataclasses.replace(t, subset_rows=pinned))


def _write_weights(out: RunDir, ens, new_cfg, ranges, res) -> dict[int, str]:
    """Every chunk's weights file in the new run: the run's classifiers with the retrained
    ones replaced, recorded as the new config's (``ensemble.weights_metadata``); the files'
    SHA-256 by chunk."""
    import hashlib

    from poisoncert.experiment.ensemble_record import weights_metadata
    from poisoncert.training.weights import weights_to_bytes

    out.weights_dir.mkdir(exist_ok=True)
    new_w = dict(zip(res.classifiers.tolist(), res.weights, strict=True))
    digests = {}
    for cid, (a, b) in enumerate(ranges):
        w = ens.weights(range(a, b))
        w = [new_w.get(i, w[i - a]) for i in range(a, b)]
        data = weights_to_bytes(w, weights_metadata(new_cfg, a, b, ens.seeds[a:b]))
        runs.save_bytes(out.weights_path(cid), data)
        digests[cid] = hashlib.sha256(data).hexdigest()
    return digests


def _edited_data(cfg, new_cfg, data, total, edited):
    """The new run's data as ``split_data`` loads them for the new config: the original
    data (``data``, the run's, reloaded without the run's own edits where it has some) after
    the composed edits ``total``."""
    if cfg.data.edits is None:
        base = data
    else:  # the original data's checksum: reload without the run's edits
        from poisoncert.experiment.split import split_data

        base = split_data(dataclasses.replace(cfg.data, edits=None))
    return edited(base, new_cfg.data, total)


def _update_nn_run(src: RunDir, out: RunDir, edits: Edits, t0: float, progress,
                   checksums) -> UpdateResult:
    """``update_run`` of a knn / rnn run: its files checked (``RunDir.verify``) and its data
    against them, the edits checked, the neighbours of the test set searched in the edited
    training set (``neighbors.search_nn``, ``train``'s search), then the new run written
    whole: nothing is written before the search ends."""
    from poisoncert.experiment.neighbors import run_data, search_nn, write_nn_outputs
    from poisoncert.experiment.split import _edited

    src.verify() if checksums is None else src.verify(checksums)
    cfg = src.load_config()
    data = run_data(src, cfg, src.load_manifest(),
                    then="restore the data it was trained on, or train a new run on these data")
    shape = tuple(data.x_train.shape[1:])
    unchanged, total, new_cfg = _checked_edits(cfg, data, edits, out)
    _check_added_pixels(data.x_train, edits)
    new_data = _edited_data(cfg, new_cfg, data, total, _edited)
    k, left = cfg.selection.k, len(new_data.y_train)
    if cfg.selection.scheme == "knn" and k is not None and k > left:
        # the search would refuse selection.k, which the user did not change
        raise ValueError(f"The 'edits' parameter of update_run must leave at least the run's "
                         f"k = {k} training samples (selection.k) for its knn search. Got "
                         f"edits that leave {left} instead.")
    new_data.warn_missing_classes()
    t1 = time.perf_counter()
    neighbors, votes, pred = search_nn(new_cfg, new_data, out.path, progress)
    search_seconds = time.perf_counter() - t1
    manifest = runs.build_manifest(new_cfg, data=new_data.summary.manifest())
    manifest["update"] = {"from": str(src.path), "removed": edits.n_removed,
                          "relabelled": edits.n_relabelled,
                          "relabelled_to_own_label": unchanged, "added": edits.n_added}
    with out.lock():  # as for other runs: a new run or nothing, its edits there with it
        was_folder = out.path.is_dir()  # (empty: checked by update_run)
        out.create(new_cfg, manifest, files=lambda tmp: total.save(tmp / EDITS_FILE, shape))
        with _removed_on_error(out, was_folder):
            _, seconds = write_nn_outputs(out, new_data, neighbors, votes, pred, t0,
                                          update_search_seconds=round(search_seconds, 3))
    return UpdateResult(run_dir=out.path, retrained=np.zeros(0, np.int64), T=new_cfg.T,
                        predictions=pred, seconds=seconds, train_seconds=search_seconds,
                        edits=edits, unchanged_relabels=unchanged,
                        n_train=len(new_data.y_train), neighbours=True)


def _check_added_pixels(x_train: np.ndarray, edits: Edits) -> None:
    """One error naming ``add_x`` where the added inputs are not integer pixels at a scale the
    training set shares (``neighbors.pixel_features``: a knn / rnn run's distances are exact
    integers); otherwise the search refused the edited set with a line about
    ``data.deskew`` ("Got True" for a config that has it false)."""
    if not edits.n_added:
        return
    from poisoncert.config import ConfigError
    from poisoncert.experiment.inputform import describe_array
    from poisoncert.experiment.neighbors import PIXEL_SCALES, pixel_features

    def fits(x: np.ndarray, scale: int) -> bool:
        step = max(1, (1 << 22) // max(1, int(np.prod(x.shape[1:]))))  # bounded memory
        try:
            for i in range(0, len(x), step):
                pixel_features(x[i:i + step], scale=scale)
        except ConfigError:
            return False
        return True

    add_x = np.asarray(edits.add_x)
    if any(fits(add_x, s) and fits(x_train, s) for s in PIXEL_SCALES):
        return  # the scale the search finds for the edited set
    scale = next((s for s in PIXEL_SCALES if fits(x_train, s)), PIXEL_SCALES[0])
    raise param_error("add_x", "update_run", f"inputs whose values are integer pixels divided "
                      f"by {scale} (the training set's scale: a knn / rnn run's distances are "
                      "exact integers)", describe_array(add_x))


def parse_ids(text: str, where: str = "--remove", most: int | None = None) -> np.ndarray:
    """``"3,17,42"`` (or a ``.npy`` / text file of indices) as int64 indices; ``most``: read
    at most that many values of a text file or a value (``edits_from_options``: one more than
    the run's training samples, which are already too many)."""
    return _ints(text, where, most)


#: One integer of ``--remove`` / ``--relabel`` (digits only: "3 4" is not 34, nor "3_0" 30).
_INT_TOKEN = re.compile(r"[+-]?[0-9]+")


def _ints(text: str, where: str, most: int | None = None) -> np.ndarray:
    """Integers from ``text``: comma-separated, or a ``.npy`` / text file of them; anything
    else (a fraction, a word, a float array) is one line naming ``where``. ``most``: the
    first ``most`` values of a text file or a value only (a ``.npy`` is read whole: its
    header bounds it)."""
    p = Path(text)
    try:
        is_file = p.is_file()
    except OSError:  # a name too long for a file: the value itself
        is_file = False
    if p.suffix == ".npy" and is_file:
        from poisoncert.data.npyheader import check_declared, npy_header

        try:
            with open(p, "rb") as f:  # its header first: an array beyond the memory is refused
                declared = npy_header(f)
        except OSError:
            declared = ()  # np.load names the problem
        check_declared(p, f"the '{where}' option's array", *declared)
        try:
            a = np.load(p, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
            raise ValueError(f"The '{where}' option's file '{p}' is not a readable .npy "
                             f"({e}).") from None
        if a.dtype.kind not in "iu":
            raise ValueError(f"The '{where}' option's file '{p}' must hold integers. Got "
                             f"a {a.dtype} array instead.")
        return a.astype(np.int64).reshape(-1)
    cut = -1 if most is None else most  # split's maxsplit: the rest in one last piece
    tokens, source = ((p.read_text().replace(",", " ").split(None, cut), f"file '{p}'")
                      if is_file else ([t.strip() for t in text.split(",", cut)], "value"))
    if most is not None:  # "3,,4": refused
        tokens = tokens[:most]
    for t in tokens:  # digits only ("3 4" is not 34, nor "3_0" 30), within the int64 range
        if not _INT_TOKEN.fullmatch(t) or len(t.lstrip("+-").lstrip("0")) > \
                len(str(INT_LIMIT)) or abs(int(t)) > INT_LIMIT:  # (int() takes 4,300 digits)
            raise ValueError(f"The '{where}' option must be comma-separated integers (at most "
                             f"{INT_LIMIT_TEXT}) or a file of them. Got {shown(t)} in its {source} "
                             "instead.")
    return np.array([int(t) for t in tokens], dtype=np.int64)


@dataclass(frozen=True)
class RunTerms:
    """How a user names a run's classes and inputs on the command line: ``classes`` (the
    data set's class ids; class index ``k`` is ``classes[k]``) and ``form`` (the raw input
    form, as the data set's files hold its inputs: ``InputForm``), as ``predict`` takes them."""

    classes: tuple[int, ...]
    form: object

    @classmethod
    def of(cls, run_dir: str | Path) -> RunTerms:
        from poisoncert.experiment.inputform import input_form

        rd = RunDir(run_dir)
        config = rd.load_config()  # first: it says what a folder that is no run is
        data = rd.load_manifest().get("data") or {}
        if "classes" not in data or "input_shape" not in data:
            raise RunError(f"The manifest of '{rd.path}' does not give the data set's classes "
                           "and input shape (data.classes, data.input_shape): is it a "
                           "poisoncert run?")
        return cls(tuple(int(c) for c in data["classes"]),
                   input_form(config, data["input_shape"]))

    def indices(self, ids, option: str) -> np.ndarray:
        """Class indices of the class ids ``ids`` (each one of ``classes``)."""
        from poisoncert.experiment.inputform import UnknownClassId, class_indices

        try:
            return class_indices(ids, self.classes)
        except UnknownClassId as e:
            raise ValueError(f"The '{option}' option must give class ids of the run "
                             f"({', '.join(map(str, self.classes))}), the data set's own "
                             f"labels, not class indices. Got {shown(e.value)} instead.") from None


def parse_relabel(text: str, terms: RunTerms) -> tuple[np.ndarray, np.ndarray]:
    """``"IDS:LABELS"`` (``"3,17:1,7"``; one label for all or one per index) as arrays of
    training-set indices and class indices: the labels are the data set's class ids
    (``terms``)."""
    if ":" not in text:
        raise ValueError(f"The '--relabel' option must be IDS:LABELS (e.g. 3,17:1,7). Got "
                         f"{text!r} instead.")
    ids_text, labels_text = text.split(":", 1)
    ids = _ints(ids_text, "--relabel")
    labels = _ints(labels_text, "--relabel")
    if len(labels) == 1:
        labels = np.full(len(ids), labels[0], dtype=np.int64)
    if len(labels) != len(ids):
        raise ValueError(f"The '--relabel' option must give one label, or one per index "
                         f"({len(ids)}). Got {len(labels)} labels instead.")
    return ids, terms.indices(labels, "--relabel")


def read_added(path: str | Path, terms: RunTerms) -> tuple[np.ndarray, np.ndarray]:
    """Samples to add from a ``.npz`` as ``predict`` takes it: ``x`` as the data set's files
    hold its inputs (``terms.form``: uint8 pixels 0-255 for MNIST and CIFAR-10, integers 0-16
    for digits; ``(n, H, W)``, ``(n, C, H, W)``, channels-last or flat rows) and ``y`` the
    data set's class ids; returned as float32 inputs in [0, 1] (the run's deskewing is
    applied with the edits) and class indices."""
    from poisoncert.experiment.inputs import read_npz

    # predict's reader: a file that is no zip (np.load took an empty one for a pickle: EOFError,
    # which click turned into a blank line and "error: aborted"), is cut short, or declares
    # arrays beyond the memory is one line naming it, before its data are read
    try:
        inputs = read_npz(Path(path))
    except OSError as e:
        raise ValueError(f"The '--add' option must name a .npz holding 'x' and 'y'. Reading "
                         f"'{path}' failed: {e}.") from None
    except ValueError as e:  # "<path>: what is wrong."
        why = str(e).removeprefix(f"{path}: ").rstrip(".")
        raise ValueError(f"The '--add' option must name a .npz holding 'x' and 'y'. Reading "
                         f"'{path}' failed: {why}.") from None
    x, y = inputs.x, inputs.y
    if y is None:
        raise ValueError(f"The '--add' option must name a .npz holding 'x' and 'y'. '{path}' "
                         "holds no 'y' (the added samples' class ids).")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"The '--add' option's 'y' in '{path}' must hold one class id per "
                         f"input of 'x' ({len(x)}). Got shape {y.shape} instead.")
    try:
        x = terms.form.scaled(x, where="--add")
    except ValueError as e:
        raise ValueError(f"{path}: {str(e).replace('parameter of --add', 'array')}") from None
    return x, terms.indices(y, "--add")


def _run_n_train(run_dir: str | Path) -> int | None:
    """The run's training-set size (the rows ``--remove`` and ``--relabel`` index: after its
    own earlier updates) from its manifest, before anything else of the run is read; None
    where the manifest does not give it, or (``update_run`` then checks the indices against
    the training set it loads, as it always does) where it has no digest (an earlier
    version's) or does not match it. A manifest without a digest is taken where the run's
    data, as its config loads them, give the same size (``_loaded_n_train``): a file of 10^7
    indices for such a run was parsed whole, sorted and checked once the run was loaded
    (31-79 s, 1.3 GB)."""
    from poisoncert.runsafe import MANIFEST_DIGEST, manifest_digest

    try:
        man = RunDir(run_dir).load_manifest()
        n = man["data"]["n_train"]
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= INT_LIMIT:
            return None
        if MANIFEST_DIGEST in man:
            return n if man[MANIFEST_DIGEST] == manifest_digest(man) else None
    except Exception:  # noqa: BLE001 - update_run names what is wrong with the run
        return None
    return n if _loaded_n_train(run_dir) == n else None


def _loaded_n_train(run_dir: str | Path) -> int | None:
    """The training-set size of the run's data as its config loads them (its data set's
    training samples of its classes, less the samples its own edits remove, plus those they
    add: ``split_data``'s count, without deskewing or splitting); None where they cannot be
    read here (nothing is downloaded)."""
    from poisoncert.data import load_dataset
    from poisoncert.experiment.edits import load_edits

    try:
        d = RunDir(run_dir).load_config().data
        ds = load_dataset(d.name, data_dir=d.data_dir, download=False,
                          classes=None if d.classes is None else tuple(d.classes))
        n = len(ds.y_train)
        if d.edits is not None:
            e = load_edits(d.edits)
            n += e.n_added - e.n_removed
    except Exception:  # noqa: BLE001 - update_run names what is wrong with the run
        return None
    return int(n)


def edits_from_options(remove, relabel, add, run_dir: str | Path) -> Edits:
    """``Edits`` from the command line's ``--remove``, ``--relabel`` and ``--add`` for the run
    in ``run_dir``, whose class ids the labels are and whose raw input form ``--add``'s
    inputs have (``RunTerms``). Each is ``None``, one value or a list of them (an option given
    more than once: the values are joined, as if given once)."""
    def values(v) -> list[str]:
        return [] if v is None else [v] if isinstance(v, (str, Path)) else [str(t) for t in v]

    remove, relabel, add = values(remove), values(relabel), values(add)
    kw = {}
    terms = RunTerms.of(run_dir) if relabel or add else None
    n_train = _run_n_train(run_dir)
    # a file of 10^7 indices for a run of n samples: its first n + 1 are read (one too many
    # already), checked by min / max and a count per index: refused in a fraction of a second,
    # where the whole file was parsed, sorted twice (np.unique) and the run loaded: 66 s
    most = None if n_train is None else n_train + 1
    if remove:
        kw["remove"] = np.concatenate([parse_ids(str(t), most=most) for t in remove])
    if relabel:
        pairs = [parse_relabel(str(t), terms) for t in relabel]
        kw["relabel_index"] = np.concatenate([i for i, _ in pairs])
        kw["relabel_label"] = np.concatenate([lab for _, lab in pairs])
    if n_train is not None:  # update_run's own range check (Edits.check), its words
        for name in ("remove", "relabel_index"):
            a = kw.get(name)
            if a is not None and a.size and (a.min() < 0 or a.max() >= n_train):
                raise param_error(name, "update_run", f"training-set indices in the range "
                                  f"[0, {n_train - 1}]", int(a[(a < 0) | (a >= n_train)][0]))
    touched = np.concatenate([kw.get("remove", np.zeros(0, np.int64)),
                              kw.get("relabel_index", np.zeros(0, np.int64))])
    if n_train is not None:  # all in [0, n_train): a count per index, no sort
        repeated = np.flatnonzero(np.bincount(touched, minlength=n_train) > 1)
    else:
        seen, counts = np.unique(touched, return_counts=True)
        repeated = seen[counts > 1]
    if repeated.size:  # the smallest index named twice
        raise ValueError(f"The '--remove' and '--relabel' options must name each training-set "
                         f"index once (a sample is removed or relabelled). Got index "
                         f"{int(repeated[0])} more than once instead.")
    if add:
        samples = [read_added(t, terms) for t in add]
        kw["add_x"] = np.concatenate([x for x, _ in samples])
        kw["add_y"] = np.concatenate([y for _, y in samples])
    return Edits(**kw)

