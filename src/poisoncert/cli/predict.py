"""``poisoncert predict RUN_DIR INPUTS``: certified predictions for new inputs.

It loads the run's saved classifiers (``poisoncert.Ensemble.load``, which checks every file;
for a knn / rnn run its training data, checked against the run: ``nnmodel.NeighborModel``),
reads INPUTS as the data set holds its inputs (``experiment.inputs.read_inputs``: a ``.npz``
with ``x`` and optionally ``y``, an IDX file, a folder of PNG/JPEG images or one, a ``.csv`` of
features), certifies them exactly as ``poisoncert certify`` certifies the run's test set, and
writes one row per input with the columns of ``certificates.csv`` (plus ``input``, the file
name or row number, and ``class`` / ``class_name``, the data set's class id and name of the
prediction) as CSV, or JSON with ``--json``.

The output is streamed: the inputs are predicted a block at a time
(``Ensemble.prediction_blocks``: a block's predictions are held, not all ``T x n`` of them),
and once every input is certified (JSON's summary comes before its rows) the rows are made
and written a block at a time (``ensemble.PREDICT_ROW_BLOCK``). What it holds for every
input besides the input itself is its vote counts and certificate (tens of bytes a class);
the rows' text is never held whole (``ensemble.check_predict_memory`` counts what is).
``--out FILE`` is written to a temporary file beside it, renamed to FILE at the end and
removed on Ctrl-C or an error: FILE is the old one or the complete new one. Rows printed
on stdout cannot be taken back: Ctrl-C (or an error) once the first is printed leaves those
printed so far, an incomplete output (JSON cut short is not valid JSON), and a line on
stderr says so.
"""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from poisoncert.cli import progress
from poisoncert.cli.certs import interrupted, library_errors
from poisoncert.runsafe import json_text

__all__ = ["ROWS_BAR", "predict", "register"]

#: From this many inputs predict shows a bar, in rows, while it makes its rows' text
#: (``cli.progress.ROWS_BAR``, certify's too; read here when predict runs).
ROWS_BAR = progress.ROWS_BAR


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by train (with "
                                                 "its weights; a knn / rnn run with the "
                                                 "data it was trained on).")],
    inputs: Annotated[Path, typer.Argument(help="New inputs: a .npz (array x, optional y of "
                                                "class ids), a .npy of inputs, an IDX file, a "
                                                "folder of PNG/JPEG images (sorted by file "
                                                "name), one such image or a .csv of "
                                                "features. Flat rows of colour images "
                                                "(CIFAR-10: 3072 numbers) are read channel-"
                                                "first, as CIFAR-10's files hold them (all "
                                                "red, all green, all blue); rows flattened "
                                                "from (32, 32, 3) images are read wrong: give "
                                                "them as an array (n, 32, 32, 3).")],
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the rows here (CSV, or JSON with --json or a .json name); "
                      "default: print them (the summary then goes to stderr).")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="Error probability per input (default: the run's certify.alpha; a knn / rnn "
             "run takes none).")] = None,
    method: Annotated[str | None, typer.Option(
        help="auto | bonferroni | bonferroni_upper | pairwise | paper | true_label | "
             "true_label_split (default: the run's certify.method; the true_label methods "
             "need a .npz with y; a knn / rnn run takes none).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Poisoning model P1 ... P6 (default: the run's certify.model).")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:K (a knn / rnn run: cpu "
                                             "only).")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of CSV (rows and "
                                                         "summary).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Certify new inputs with a trained run: prediction (or abstain) and radius per input."""
    as_json = as_json or (out is not None and out.suffix.lower() == ".json")  # as it is named
    # the rows' stdout, as it is before any bar: a rich bar on a terminal replaces sys.stdout
    # while it is drawn with a proxy that prints on its console, stderr
    stdout = sys.stdout
    with library_errors():
        from poisoncert.cli.progress import rich_progress
        from poisoncert.experiment.certify import (
            certificate_row_blocks,
            counted_blocks,
            rows_csv_parts,
        )
        from poisoncert.experiment.display import no_display
        from poisoncert.experiment.ensemble import (
            PREDICT_ROW_BLOCK,
            Ensemble,
            check_run_options,
        )
        from poisoncert.experiment.inputs import check_inputs_path, read_inputs
        from poisoncert.runs import RunDir

        if out is not None:  # before any work: it was refused only once every input was done
            _check_out(out, inputs, run_dir)
        RunDir(run_dir).load_config()  # not a run directory: said first, as it was
        check_inputs_path(inputs)  # a missing INPUTS was named once the run was loaded
        printed: list = []  # a row printed on stdout (--out: nothing is written before the end)
        try:  # Ctrl-C before the first row is written leaves nothing
            # the options before the run's weights are read and checked (their checksums)
            check_run_options(run_dir, alpha, method, model, where="predict")
            from poisoncert.cli.runs import checksum_bar

            ens = Ensemble.load(run_dir, device=device,
                                verify_progress=None if quiet else checksum_bar)
            ens.check_options(alpha, method, model, where="predict")  # before any prediction
            if not ens.verification.get("verified", True):
                note = ens.verification.get("note", "")
                typer.echo(note if note.startswith("warning:") else f"warning: {note}", err=True)
            data = read_inputs(inputs, ens.form)
            # the random schemes: vote bounds
            from poisoncert.selection import NEAREST_NEIGHBOURS, SCHEMES

            wanted = str(method or ens.config.certify.method)
            true_label = (ens.config.selection.scheme in SCHEMES
                          and wanted.strip().lower().startswith("true_label"))
            if true_label and data.y is None:
                raise ValueError(f"The method {wanted} (--method, or the run's certify.method) "
                                 f"needs the inputs' true classes: '{inputs}' has none (give a "
                                 ".npz with x and y, y holding class ids).")
            labels = None if data.y is None else _labels(ens, data.y, inputs)
            _check_memory(ens, data, labels, alpha=alpha, method=method, model=model,
                          y=data.y if true_label else None, as_json=as_json)
            if ens.scheme in NEAREST_NEIGHBOURS:  # a NeighborModel: the training set searched
                # the bar where the search takes about a second or more
                work = len(data.x) * len(ens.y_train) * ens.features.shape[1]
                big = not quiet and work >= 10 ** 10
                nn = ens.outputs(data.x, model=model, progress=rich_progress if big else None)
                cert, votes, T = nn.certificate, nn.votes, None  # T: no abstain_votes column
                radius_dpa = nn.radius_dpa  # as certificates.csv's
            else:
                big = not quiet and len(data.x) * ens.T >= 20_000
                cert, votes = _certify_blocks(ens, data.x, alpha=alpha, model=model,
                                              method=method,
                                              y=data.y if true_label else None,
                                              progress=rich_progress if big else None)
                # a finite_aggregation certificate's radius in buckets: certificates.csv's
                # radius_dpa
                radius_dpa = (getattr(cert, "buckets", None)
                              if ens.scheme == "finite_aggregation" else None)
                T = ens.T
            # a block of rows at a time: the text of one block alone is held, and written
            blocks = certificate_row_blocks(cert, votes, labels, T, extra={"input": data.names},
                                            block=PREDICT_ROW_BLOCK,
                                            radius_dpa=radius_dpa, classes=ens.classes,
                                            class_names=ens.class_names,
                                            missing=None if as_json else "")  # JSON: null
            summary = _summary(cert, labels, ens, len(cert))
            # rows printed on a terminal show their own progress (a bar drawn among them
            # would be torn by them)
            rows = (no_display if quiet or (out is None and stdout.isatty()) else
                    functools.partial(progress.rows_bar, least=ROWS_BAR))
            with rows(len(cert), 0, "rows") as advance:
                blocks = counted_blocks(blocks, advance)
                parts = (rows_json_parts({"run": str(ens.run_dir), "inputs": str(inputs),
                                          "summary": summary}, blocks)
                         if as_json else rows_csv_parts(blocks))
                if out is not None:
                    # clean: the temporaries an earlier predict killed while writing it left
                    _write_file(out, parts)
                else:
                    _print_rows(parts, printed, stdout)
        except BrokenPipeError:
            if out is not None:
                raise
            # the reader stopped reading (`predict ... | head -1`): it wants no more rows;
            # nothing more goes to the closed pipe (nor at exit), the summary still follows
            _stdout_to_devnull(stdout)
        except KeyboardInterrupt:
            if printed:  # rows on stdout cannot be taken back
                raise interrupted(_cut_short("interrupted", len(cert), as_json)) from None
            raise interrupted("interrupted: nothing was written; the same command starts "
                              "over.") from None
        except BaseException:
            if printed:  # an error line follows the rows printed: they are not all
                typer.echo(_cut_short("note", len(cert), as_json), err=True)
            raise
    if out is None:
        _print_summary(summary, err=True, as_json=as_json)
    else:
        _print_summary(summary, err=False, as_json=as_json)
        if not as_json:
            typer.echo(f"rows: {out}")


def _stdout_to_devnull(stdout) -> None:
    """Point ``stdout``'s file descriptor at the null device: its reader closed the pipe, and
    the flush of what is still buffered (now, or at exit) would raise again."""
    import os

    try:
        fd = stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no descriptor (a test's stream)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _cut_short(word: str, n: int, as_json: bool) -> str:
    """What the rows printed on stdout are when predict stopped while printing them."""
    return (f"{word}: the rows printed so far are not all {n:,} inputs' (an incomplete "
            f"output{', JSON cut short: not valid JSON' if as_json else ''}); the same "
            "command starts over.")


def _certify_blocks(ens, x, *, alpha, model, method, y, progress):
    """``ens``'s certificate and vote counts of the inputs ``x``, predicted a block at a time
    (``Ensemble.prediction_blocks``): the same as ``certify_predictions`` of
    ``base_predictions(x)`` without the whole ``(T, n)`` matrix. The votes of every block are
    certified together (a certificate of vote counts: ``certify_votes``); a
    finite_aggregation run, certified from the predictions, a block at a time and joined
    (each input's certificate is that of its own predictions)."""
    import contextlib
    import dataclasses

    import numpy as np

    from poisoncert.votes import votes_from_predictions

    n, K = len(x), ens.n_classes
    votes = np.empty((n, K), dtype=np.int64)
    fa = ens.scheme == "finite_aggregation"
    certs = []
    with contextlib.closing(ens.prediction_blocks(x, progress=progress)) as blocks:
        for a, b, predictions in blocks:
            votes[a:b] = votes_from_predictions(predictions, K)
            if fa:
                certs.append(ens.certify_predictions(
                    predictions, alpha=alpha, model=model, method=method,
                    y=None if y is None else y[a:b]))
    if not fa:
        return ens.certify_votes(votes, alpha=alpha, model=model, method=method, y=y), votes
    if not certs:  # no inputs
        return ens.certify_predictions(np.empty((ens.T, 0), dtype=np.int16), alpha=alpha,
                                       model=model, method=method, y=y), votes
    joined = {f.name: np.concatenate([getattr(c, f.name) for c in certs])
              for f in dataclasses.fields(certs[0])
              if f.name in ("prediction", "radius", "buckets", "counts")}
    return dataclasses.replace(certs[0], **joined), votes


def _write_file(out: Path, parts) -> None:
    """The texts ``parts`` into ``out`` as they come (UTF-8), through a temporary file beside
    it renamed at the end (``runsafe.atomic_write``: removed on Ctrl-C or an error, ``out``
    left as it was), ending in a newline."""
    from poisoncert import runs

    last = ""
    with runs.atomic_write(out, clean=True) as f:
        for part in parts:
            if part:
                f.write(part.encode())
                last = part
        if not last.endswith("\n"):
            f.write(b"\n")


def _print_rows(parts, printed: list, stdout) -> None:
    """The texts ``parts`` on ``stdout`` as they come, ending in a newline; ``printed`` gets
    a True once the first one is out (they cannot be taken back)."""
    last = ""
    for part in parts:
        if part:
            if not printed:
                printed.append(True)
            stdout.write(part)
            last = part
    if not last.endswith("\n"):
        stdout.write("\n")
    stdout.flush()


def _check_memory(ens, data, labels, *, alpha, method, model, y, as_json: bool) -> None:
    """What predict holds for ``data``'s inputs against the memory
    (``ensemble.check_predict_memory``), before any prediction: their vote counts and
    certificates, one block of inputs' predictions and one block of rows. The rows' text is
    written as each block is made, so one block's counts: a bound of one row's text
    (``certify.row_text_bound``) from the columns of a row certified from made-up votes (a
    knn / rnn run: the first input's, one search), the widest input name and class name."""
    import math

    import numpy as np

    from poisoncert.experiment.certify import certificate_rows, row_text_bound, text_width
    from poisoncert.experiment.ensemble import BLOCK, check_predict_memory
    from poisoncert.selection import NEAREST_NEIGHBOURS
    from poisoncert.votes import votes_from_predictions

    if not len(data.x):
        return
    if ens.scheme in NEAREST_NEIGHBOURS:
        one = ens.outputs(data.x[:1], model=model)
        cert, votes, T, dpa = one.certificate, one.votes, None, one.radius_dpa
    else:
        base = np.zeros((ens.T, 1), dtype=np.int16)
        cert = ens.certify_predictions(base, alpha=alpha, model=model, method=method,
                                       y=None if y is None else y[:1])
        votes, T = votes_from_predictions(base, ens.n_classes), ens.T
        dpa = getattr(cert, "buckets", None) if ens.scheme == "finite_aggregation" else None
    row = certificate_rows(cert, votes, None if labels is None else labels[:1], T,
                           extra={"input": data.names[:1]}, radius_dpa=dpa,
                           classes=ens.classes, class_names=ens.class_names,
                           missing=None if as_json else "")[0]
    names, plain = text_width(data.names, as_json=as_json)
    classes, plain_classes = text_width(ens.class_names, as_json=as_json)
    bound = row_text_bound(row, cert.setting(), {"input": names, "class_name": classes},
                           as_json=as_json)
    # a str of CSV text with one character beyond ASCII takes up to 4 bytes a character
    chars = 1 if as_json or (plain and plain_classes) else 4
    ebs = ens.config.training.eval_batch_size
    block = max(1, BLOCK // ebs) * ebs  # Ensemble.prediction_blocks'
    check_predict_memory(0 if T is None else T, len(data.x), ens.n_classes, bound * chars,
                         "JSON" if as_json else "CSV", block=block,
                         input_size=math.prod(ens.input_shape))


def _check_out(out: Path, inputs: Path, run_dir: Path) -> None:
    """``--out`` names a file that can be written: not a folder, in an existing writable
    folder, neither INPUTS (the rows would replace the inputs they were made from), nor an
    image in a folder INPUTS, nor a file of the run directory (its config, manifest,
    certificates, ...: the run would be damaged or its certify outputs replaced); a
    ``ValueError`` naming the option otherwise."""
    import os

    from poisoncert import runlayout, runsafe
    from poisoncert._validation import param_error
    from poisoncert.experiment.inputs import IMAGE_SUFFIXES

    target = out.resolve()
    if runsafe._special_file(out):  # /dev/null, /dev/stdout, a named pipe: written into
        writable = os.access(out, os.W_OK)
    else:  # (a link's target is written, the link kept)
        writable = target.parent.is_dir() and os.access(target.parent, os.W_OK | os.X_OK)
    if out.is_dir() or not writable:
        raise param_error("--out", "predict", "a file in an existing, writable folder (not a "
                          "folder)", str(out))
    if target == inputs.resolve() or (out.exists() and inputs.exists()
                                      and os.path.samefile(out, inputs)):
        raise param_error("--out", "predict", f"another file than INPUTS ('{inputs}': the "
                          "rows would replace the inputs)", str(out))
    if inputs.is_dir() and target.parent == inputs.resolve() and \
            out.suffix.lower() in IMAGE_SUFFIXES:  # one of the images, or read as one later
        raise param_error("--out", "predict", f"a file that is not an image of INPUTS "
                          f"('{inputs}' is a folder of images)", str(out))
    try:
        inside = target.relative_to(run_dir.resolve()).parts
    except ValueError:
        inside = ()
    names = {v for k, v in vars(runlayout).items() if k.isupper() and isinstance(v, str)}
    if inside and inside[0] in names | {runsafe.LOCK}:
        raise param_error("--out", "predict", f"a file that is not one of the run's own "
                          f"('{run_dir}' holds its '{inside[0]}')", str(out))


def _plain(v):
    return v.item() if hasattr(v, "item") else str(v)


def rows_json(head: dict, blocks) -> str:
    """``json_text({**head, "rows": rows}, indent=1)`` for the rows of ``blocks`` (lists of
    rows, ``certificate_row_blocks``), the same text made one block at a time: the rows of
    10^6 inputs at once took 7 GB as Python objects and json's indenting encoder."""
    return "".join(rows_json_parts(head, blocks))


def rows_json_parts(head: dict, blocks):
    """``rows_json(head, blocks)`` a block of rows at a time (a generator of texts whose join
    is it: the head and ``"rows": [``, then each block's rows, then the closing ``]``), so
    that the document is written as its rows are made."""
    text = json_text({**head, "rows": []}, indent=1, default=_plain)
    tail = '"rows": []\n}'
    if not text.endswith(tail):  # pragma: no cover - json's layout of a last empty list
        raise AssertionError("unexpected JSON layout")
    yield text[:-len(tail)] + '"rows": ['
    first = True
    for block in blocks:
        if block:  # '[\n {\n  ...\n }\n]': its rows, one level deeper
            inner = json_text(block, indent=1, default=_plain)[2:-2]
            yield ("\n " if first else ",\n ") + inner.replace("\n", "\n ")
            first = False
    yield "]\n}" if first else "\n ]\n}"


def _summary(cert, labels, ens, n: int) -> dict:
    s = cert.summary(None if labels is None else ens.classes[labels])
    pred = cert.prediction
    counts = {str(ens.classes[k]): int((pred == k).sum()) for k in range(ens.n_classes)}
    out = {"n_inputs": n, "n_certified": s["n_certified"], "abstain_rate": s["abstain_rate"],
           "radius_median": None if math.isnan(s["radius_median"]) else s["radius_median"],
           "radius_max": s["radius_max"], "radius_unit": s["radius_unit"],
           "predicted": counts, "setting": cert.setting()}
    if "accuracy" in s:
        out["accuracy"] = s["accuracy"]
    return out


def _print_summary(summary: dict, *, err: bool, as_json: bool) -> None:
    if as_json:
        if not err:
            typer.echo(json_text(summary, indent=1))
        return
    s = summary
    n = s["n_inputs"]
    lines = [f"{n} input{'s' * (n != 1)}: {s['n_certified']} certified, "
             f"{n - s['n_certified']} abstained"
             + (f", accuracy (abstain = wrong) {s['accuracy']:.4f}" if "accuracy" in s else "")]
    if s["radius_median"] is not None:
        lines.append(f"radius median {s['radius_median']:g}, max {s['radius_max']} "
                     f"[{s['radius_unit']}]")
    lines.append("certified predictions per class: "
                 + ", ".join(f"{c}: {k}" for c, k in s["predicted"].items()))
    for line in lines:
        typer.echo(line, err=err)


def _labels(ens, y, inputs: Path):
    """Class indices of the inputs' ``y``; ids the run does not have are one line naming
    the file (the library's message names ``Ensemble``'s parameter)."""
    from poisoncert.experiment.inputform import UnknownClassId, class_indices

    try:
        return class_indices(y, ens.classes)
    except UnknownClassId as e:
        ids = sorted(ens.classes.tolist())
        raise ValueError(f"{inputs}: its 'y' must hold the run's class ids "
                         f"({', '.join(map(str, ids))}), the data set's own labels, "
                         f"not class indices; it holds {e.value}.") from None
