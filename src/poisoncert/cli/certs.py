"""Certificate commands: ``poisoncert radius`` and ``poisoncert delta``.

Each command parses its options and calls the library (``poisoncert.certify``,
``poisoncert.bounds``, ``poisoncert.plots``); nothing here computes a bound itself.
"""

from __future__ import annotations

import contextlib
import math
import re
import types
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from poisoncert._validation import INT_LIMIT, INT_LIMIT_TEXT, param_error
from poisoncert.runsafe import json_text

__all__ = ["EXPECTED_ERRORS", "delta", "error_line", "library_errors", "radius", "register"]

#: Errors that are the user's to fix (bad parameters, missing or unwritable files) and the
#: machine's limits (memory, numbers beyond 64 bits, a worker process killed, e.g. by the
#: kernel when memory ran out): reported as one line, no traceback. Anything else is a bug and
#: keeps its traceback. An ``EOFError`` (a file cut short, where a reader missed it) is one
#: too: click turned it into a blank line and "error: aborted".
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, MemoryError,
                                                    OverflowError, BrokenProcessPool, EOFError)
#: What an error of the machine's limits says before its own message.
_LIMIT_ERRORS = ((MemoryError, "out of memory"), (OverflowError, "a number is too large"),
                 (BrokenProcessPool, "a worker process ended abruptly (killed, e.g. when "
                                     "memory ran out)"),
                 (EOFError, "a file ended before its data did"))

RADIUS_UNIT = "operations (insertion, deletion or modification = 1 each)"

#: Most rows ``poisoncert delta`` tabulates per setting (a table is printed, not stored).
MAX_STEPS = 100_000


def error_line(exc: BaseException, message: str | None = None) -> str:
    """``error: <message>`` on one line (errors of the machine's limits say which), of
    ``message`` where given (``exc``'s own in a command's words: ``typed_words``). A word of
    the message longer than ``LONG_WORD`` characters is shortened to its start, end and size:
    the values ``param_error`` echoes are ``shown`` short already, this keeps the line
    readable where a message echoes what was given in its own way (typer's "No such option:
    --xxx...", an OSError's file name too long). A path that could exist (a ``/`` in it, at
    most 4,096 characters, no name over 255) is kept whole: the user needs to see it."""
    text = str(exc) if message is None else message
    msg = _command_line_words(" ".join(_short_word(w) for w in text.split()))
    for kind, text in _LIMIT_ERRORS:
        if isinstance(exc, kind):
            return f"error: {text}{': ' + msg if msg else ''} ({kind.__name__})"
    return f"error: {msg or type(exc).__name__}"


def _command_line_words(msg: str) -> str:
    """A library error in a command line's words: a parameter that "must be None" there is
    an option to leave out, and a value "None" one not given (Python's None means nothing to
    the user who typed the command; a typed 'None' is echoed in quotes, and stays)."""
    msg = re.sub(r"(The '[^']+' parameter of .+? must be) None\b", r"\1 left out", msg)
    return msg.replace(" Got None instead.", " Got nothing (it was not given) instead.")


#: Longest word ``error_line`` shows whole: longer than any ordinary path.
LONG_WORD = 200


#: A path's limits on Linux (PATH_MAX, NAME_MAX): a word within them that holds a ``/`` is
#: a path the user may need whole (which of its folders is wrong), whatever its length.
_PATH_MAX, _NAME_MAX = 4096, 255


def _short_word(word: str) -> str:
    if len(word) <= LONG_WORD or (
            "/" in word and len(word) <= _PATH_MAX
            and max(len(part) for part in word.split("/")) <= _NAME_MAX):
        return word
    return f"{word[:60]}...{word[-20:]} ({len(word):,} characters)"


#: What ``main`` needs to know of a Ctrl-C: whether this process's command ``began`` its
#: work (entered ``library_errors``: a Ctrl-C ``main`` then hears of came after that work,
#: while it printed what it did) and whether it ``said`` what a Ctrl-C left
#: (``interrupted``; typer turns a Ctrl-C while it parses the command line into a silent
#: exit 130, for ``main`` to name).
interrupt_state = types.SimpleNamespace(began=False, said=False)


def interrupted(text: str) -> typer.Exit:
    """Print ``text`` (what Ctrl-C left) on stderr and give the exit to raise: code 130."""
    typer.echo(text, err=True)
    interrupt_state.said = True
    return typer.Exit(130)


@contextlib.contextmanager
def library_errors() -> Iterator[None]:
    """Turn an expected library error into ``error: <message>`` on stderr and exit code 1,
    and Ctrl-C (where the command has no word of its own for it) into one line and 130. The
    message is in the command line's words (``typed_words``): ``radius --ns 0``, ``train
    --workers 0`` and ``certify --alpha 2`` say "The '--ns' parameter of radius must be
    ...", whatever library function or config key checked the value."""
    interrupt_state.began = True
    try:
        yield
    except KeyboardInterrupt:  # a command's own handler says more; typer's exit was silent
        raise interrupted("interrupted: nothing was written.") from None
    except EXPECTED_ERRORS as exc:
        typer.echo(error_line(exc, typed_words(str(exc))), err=True)
        raise typer.Exit(1) from None


#: Library parameters set by an option of another name: ``update --relabel 300:1`` gives
#: ``Edits.relabel_index`` and ``relabel_label``, ``--add FILE`` ``add_x`` and ``add_y``.
_PARAMETER_OPTIONS = {"relabel_index": "relabel", "relabel_label": "relabel",
                      "add_x": "add", "add_y": "add"}

#: Config keys that an option sets (``train --workers`` sets ``training.workers``,
#: ``certify --alpha`` ``certify.alpha``), as the option's parameter name. A key's error
#: names the option only where that option was typed: given as ``--certify.alpha 2`` or
#: read from a file, it names the key (the words the user wrote).
_CONFIG_OPTIONS = {"training.workers": "workers", "training.device": "device",
                   "certify.rhos": "rhos", "certify.alpha": "alpha", "certify.method": "method",
                   "certify.model": "model", "certify.aggregation": "aggregation"}

_PARAMETER = re.compile(r"The '([^']+)' parameter of (.+?) must be ")
_OPTION = re.compile(r"The '(--[^']+)' option must ")


def typed_words(message: str) -> str:
    """A library error ``message`` in the words of the running command's line: where it
    names a parameter that an option of the command sets, "The '<option>' parameter of
    <command> must be ..." with the option as typed (``--ns``, ``--gpus-per-task``) and the
    allowed range and value as they were. The parameter is the command's own (the message is
    "of <command>": ``radius``'s ``ns``, typed or not), a library function's or a config
    key's (``attack_run``'s ``targets``, ``the config``'s ``certify.alpha``: only where the
    option was typed), or the option already ("The '--remove' option must ..."). Anything
    else, and a message outside a command, is returned as it is: the library's messages keep
    naming the Python parameter for Python callers; this is the one place that translates."""
    try:  # typer (0.27 on) runs its own copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover
        from click import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None or ctx.info_name is None:
        return message
    options = {p.name: p for p in ctx.command.params
               if getattr(p, "param_type_name", None) == "option" and p.name is not None}
    m = _OPTION.match(message)
    if m is not None:
        if any(m[1] in p.opts for p in options.values()):
            return f"The '{m[1]}' parameter of {ctx.info_name} must {message[m.end():]}"
        return message
    m = _PARAMETER.match(message)
    if m is None or m[1].startswith("-"):
        return message
    name, where = _PARAMETER_OPTIONS.get(m[1], m[1]), m[2]
    own = where == ctx.info_name
    p = options.get(name if own else _CONFIG_OPTIONS.get(name, name))
    if p is None or not (own or getattr(ctx.get_parameter_source(p.name), "name", None)
                         == "COMMANDLINE"):
        return message
    rest = message[m.end():]
    if own:  # the command's other parameters the message names: its options too
        rest = _named_options(rest, options)
    return f"The '{option_flag(p)}' parameter of {ctx.info_name} must be {rest}"


def option_flag(option) -> str:
    """The longest ``--`` name of a click option (``--gpus-per-task``), else its first."""
    return max((o for o in option.opts if o.startswith("--")), key=len, default=option.opts[0])


def _named_options(text: str, options: dict) -> str:
    """``text`` (what a command's own refusal says after "must be") with the command's other
    parameters as options: "'p'" -> "'--p'", "scheme='binomial'" -> "--scheme binomial";
    the value after the last "Got " is left as given."""
    at = text.rfind(" Got ")
    head, tail = (text, "") if at < 0 else (text[:at], text[at:])

    def word(m: re.Match) -> str:
        return f"'{option_flag(options[m[1]])}'" if m[1] in options else m[0]

    def pair(m: re.Match) -> str:
        return f"{option_flag(options[m[1]])} {m[2]}" if m[1] in options else m[0]

    head = re.sub(r"\b(\w+)='([^']*)'", pair, head)
    return re.sub(r"'(\w+)'", word, head) + tail


def register(app: typer.Typer) -> None:
    """Add ``radius`` and ``delta`` to ``app``."""
    app.command("radius")(radius)
    app.command("delta")(delta)


def _parse_int_rows(text: str, name: str) -> np.ndarray:
    """``"990,10"`` -> ``[[990, 10]]``; rows separated by ``;`` (``"990,10;500,500"``).

    Every value must lie in ``[0, INT_LIMIT]`` (no 64-bit overflow downstream)."""
    allowed = (f"comma-separated integers in the range [0, {INT_LIMIT_TEXT}], rows separated by "
               "';' (e.g. \"990,10\")")
    try:
        rows = [[int(v) for v in row.split(",")] for row in text.split(";") if row.strip()]
    except ValueError:
        raise param_error(name, "radius", allowed, text) from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise param_error(name, "radius", allowed + " with the same length", text)
    bad = [v for r in rows for v in r if abs(v) > INT_LIMIT]  # negatives: the library says
    if bad:
        raise param_error(name, "radius", allowed, bad[0])
    return np.array(rows, dtype=np.int64)


def _refuse_with_gap(**given) -> None:
    """Options that only apply to vote counts are errors with ``--gap`` (never ignored)."""
    for name, value in given.items():
        if value is not None:
            raise param_error(name, "radius", "left out with --gap (it applies to --counts "
                              "only: a gap has no votes to bound)", value)


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.10g}"
    return str(x)


def _inf(v):
    return float("inf") if v is None else v


def _print_table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    typer.echo(title)
    cells = [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    if len(cells) > _PLAIN_ROWS:  # rich lays out 100,000 rows in ~50 s: plain columns
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        typer.echo("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
        typer.echo("\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True))
                             for r in cells))
        return
    table = Table()
    for c in columns:
        table.add_column(c, justify="right")
    for r in cells:
        table.add_row(*r)
    Console(width=max(100, 22 * len(columns))).print(table)


#: Tables longer than this print as plain right-aligned columns (rich's layout is slow).
_PLAIN_ROWS = 1000


def _defined_schemes(schemes: list[str], n: int, ns: int, model: str
                     ) -> tuple[list[str], dict[str, str]]:
    """The ``schemes`` that the setting ``(n, ns)`` allows (``SelectionBound``'s checks), and
    the others with the reason each is not defined ("ns must be an int in the range [1, 9]
    for the binomial scheme ..."). Where none is defined, the first one's refusal, in delta's
    words (``--ns 0``, or ``--scheme binomial`` alone at ``ns = n``)."""
    from poisoncert._validation import named_as
    from poisoncert.bounds import SelectionBound

    defined, undefined, first = [], {}, None
    for s in schemes:
        try:
            with named_as("delta", n="n", ns="ns"):
                SelectionBound(s, n, ns=ns, model=model)
        except ValueError as e:
            first = first or e
            m = re.fullmatch(r"The '([^']+)' parameter of delta must be (.+)\. Got .+ instead\.",
                             str(e), re.DOTALL)
            why = f"{m[1]} must be {m[2]}" if m else str(e).rstrip(".")
            undefined[s] = why.replace("; give 'p'", "")  # delta takes ns, not p
        else:
            defined.append(s)
    if not defined:
        raise first
    return defined, undefined


def radius(
    scheme: Annotated[str, typer.Option(
        help="without_replacement | with_replacement | binomial (aliases: wor, wr, 1, 2, 3)")],
    n: Annotated[int, typer.Option("--n", help="Size n of the attackable training set D^p.")],
    ns: Annotated[int | None, typer.Option(
        "--ns", help="Selection size (binomial: p = ns / n).")] = None,
    p: Annotated[float | None, typer.Option(
        "--p", help="Binomial selection probability (instead of --ns).")] = None,
    model: Annotated[str, typer.Option(help="Poisoning model P1 ... P6.")] = "P6",
    gap: Annotated[float | None, typer.Option(
        help="A lower bound on p1 - p2 (instead of --counts).")] = None,
    counts: Annotated[str | None, typer.Option(
        help="Vote counts per class, e.g. \"990,10\"; rows separated by ';'.")] = None,
    T: Annotated[int | None, typer.Option(
        "--T", "-T", help="Number of base classifiers (default: the sum of the counts; "
                          "abstaining ones count).")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="Error probability per test point, over the sampling (with --counts; default "
             "0.001).")] = None,
    method: Annotated[str | None, typer.Option(
        help="auto | bonferroni | bonferroni_upper | pairwise | paper | true_label | "
             "true_label_split (with --counts; default auto: bonferroni for two classes, "
             "pairwise for more; bonferroni with --rule jia)")] = None,
    labels: Annotated[str | None, typer.Option(
        help="True labels, comma-separated (for the true_label methods only).")] = None,
    rule: Annotated[str, typer.Option(
        help="theorem1 (Theorem 1, docs/certificates.md: the name of certificates.csv's rule "
             "column and predict's; 'ours' is taken too) | jia (Jia et al.'s condition: "
             "bagging with replacement, P6, bounds rounded to multiples of 1 / n^ns; needs "
             "--counts)")
    ] = "theorem1",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Certified radius for a gap, or for vote counts (bounds, prediction and radius).

    Options that would be ignored are errors: --alpha, --method, --labels and --T apply to
    --counts only, and --labels to the true_label methods only.
    """
    with library_errors():
        from poisoncert._validation import check_choice, named_as
        from poisoncert.bounds import SelectionBound
        from poisoncert.certify import certify, jia_certify

        rule = check_choice(rule, "rule", "radius", ("theorem1", "jia"), {"ours": "theorem1"})
        with named_as("radius", scheme="scheme", n="n", ns="ns", p="p", model="model"):
            bound = SelectionBound(scheme, n, ns=ns, p=p, model=model)
        if rule == "jia" and (bound.scheme != "with_replacement" or bound.model != "P6"
                              or counts is None or ns is None):
            raise param_error("rule", "radius", "'jia' only with --scheme with_replacement, "
                              "--model P6, --ns and --counts (Jia et al.'s setting)", rule)
        setting = {"scheme": bound.scheme, "n": bound.n, "ns": bound.ns, "p": bound.p,
                   "model": bound.model, "radius_unit": RADIUS_UNIT}
        if gap is None and counts is None:
            raise ValueError("radius needs --gap or --counts (see 'poisoncert radius --help').")
        if gap is not None and counts is not None:
            raise param_error("gap", "radius", "left out with --counts (give one of --gap and "
                              "--counts: the counts' bounds make the gap)", gap)
        if gap is not None:
            _refuse_with_gap(alpha=alpha, method=method, labels=labels, T=T)
            with named_as("radius", gap="gap"):  # (it said "of certified_radius")
                r = int(bound.radius(gap))
            results = [{"gap": gap, "radius": r}]
        else:
            alpha = 0.001 if alpha is None else alpha
            if method is None:  # Jia et al.'s protocol keeps its bound's method
                method = "bonferroni" if rule == "jia" else "auto"
            if labels is not None and not str(method).strip().lower().startswith("true_label"):
                raise param_error("labels", "radius", "left out unless --method is true_label "
                                  "or true_label_split (the other methods do not use labels)",
                                  labels)
            c = _parse_int_rows(counts, "counts")
            if T is None and not c.sum(axis=1).all():
                raise param_error("counts", "radius", "rows with at least one vote each (or "
                                  "give --T, the base classifiers abstaining ones included)",
                                  counts)
            lab = None if labels is None else _parse_int_rows(labels, "labels").ravel()
            # the options' errors as radius's (they said "of certify")
            with named_as("radius", T="T", alpha="alpha", method="method", labels="labels",
                          counts="counts"):
                if rule == "jia":
                    cert = jia_certify(c, n=bound.n, ns=bound.ns, alpha=alpha, method=method,
                                       T=T, labels=lab)
                else:
                    cert = certify(c, scheme=bound.scheme, n=bound.n, ns=ns, p=p,
                                   model=bound.model, alpha=alpha, method=method, T=T,
                                   labels=lab)
            setting.update(alpha=cert.alpha, method=cert.method, rule=rule)
            results = [
                {"counts": c[i].tolist(), "T": rec["T"], "top_class": rec["top_class"],
                 "p1_lower": rec["p1_lower"], "p2_upper": rec["p2_upper"],
                 "gap": rec["p1_lower"] - rec["p2_upper"], "prediction": rec["prediction"],
                 "radius": rec["radius"]}
                for i, rec in enumerate(cert.records())
            ]

    if as_json:
        typer.echo(json_text({"setting": setting, "results": results}, indent=2))
        return
    for k, v in setting.items():
        if v is not None and k != "radius_unit":
            typer.echo(f"{k:<11} {_fmt(v)}")
    for i, res in enumerate(results):
        if len(results) > 1:
            typer.echo(f"-- test point {i}")
        for k, v in res.items():
            if k == "prediction" and v == -1:
                v = "ABSTAIN"
            suffix = f"  [{RADIUS_UNIT}]" if k == "radius" else ""
            typer.echo(f"{k:<11} {_fmt(v)}{suffix}")


def delta(
    rho_max: Annotated[int | None, typer.Option(
        help="Largest rho (default: where delta reaches 1 for every scheme).")] = None,
    n: Annotated[int | None, typer.Option(
        "--n", help="Size of D^p (with --ns: one setting instead of the paper's two).")] = None,
    ns: Annotated[int | None, typer.Option("--ns", help="Selection size.")] = None,
    model: Annotated[str, typer.Option(help="Poisoning model P1 ... P6.")] = "P6",
    scheme: Annotated[list[str] | None, typer.Option(
        "--scheme", metavar="<str>", help="A scheme to tabulate, repeatable: without_replacement | "
                         "with_replacement | binomial (aliases: wor, wr, 1, 2, 3); default: "
                         "the three.")] = None,
    steps: Annotated[int, typer.Option(
        help=f"Steps from rho = 0 to the largest rho, 1 to {MAX_STEPS:,} (the table has "
             "steps + 1 rows per setting, fewer where the largest rho is below steps: rho is "
             "an integer).")] = 10,
    out: Annotated[Path | None, typer.Option(
        help="Write the figure (the paper's Figure 2) as a PNG here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Tabulate delta(rho) of the three schemes (binomial with p = ns / n) and draw Figure 2.

    A scheme the setting does not allow (binomial at ns = n, where p = ns / n is 1; without
    replacement at ns > n) is n/a, its reason said once, beside the others' values; it is
    refused only where no scheme asked for is defined.
    """
    with library_errors():
        from poisoncert._validation import check_choice, check_int
        from poisoncert.bounds import MODEL_ALIASES, MODELS, SCHEME_ALIASES, SCHEMES
        from poisoncert.plots import FIGURE2_SETTINGS, delta_curves, plot_delta

        model = check_choice(model, "model", "delta", MODELS, MODEL_ALIASES)
        asked = {check_choice(s, "scheme", "delta", SCHEMES, SCHEME_ALIASES)
                 for s in scheme or SCHEMES}
        schemes = [s for s in SCHEMES if s in asked]  # the table's order
        steps = check_int(steps, "steps", "delta", low=1, high=MAX_STEPS)
        if rho_max is not None:
            rho_max = check_int(rho_max, "rho_max", "delta", low=1, high=INT_LIMIT)
        if (n is None) != (ns is None):
            given, missing = ("n", "ns") if ns is None else ("ns", "n")
            raise param_error(missing, "delta", f"given with --{given} (--n and --ns name one "
                              "setting together; neither: the paper's two)", None)
        if out is not None and (out.suffix.lower() != ".png" or not out.parent.is_dir()):
            raise param_error("out", "delta", "a .png file in an existing folder", str(out))
        settings = FIGURE2_SETTINGS if n is None else ((n, ns),)
        tables = []
        for nn, nns in settings:
            defined, undefined = _defined_schemes(schemes, nn, nns, model)
            rhos, curves = delta_curves(nn, nns, model=model, rho_max=rho_max,
                                        n_points=steps + 1, schemes=defined)
            tables.append({"n": nn, "ns": nns, "p": nns / nn, "model": model,
                           "rho": rhos.tolist(),
                           "delta": {s: [None if math.isinf(v) else float(v) for v in d]
                                     for s, d in curves.items()},
                           "undefined": undefined})
        if out is not None:  # the schemes every panel defines
            plot_delta(out, settings=settings, model=model, rho_max=rho_max,
                       schemes=[s for s in schemes if all(s in t["delta"] for t in tables)])

    if as_json:
        typer.echo(json_text({"tables": tables, "figure": None if out is None else str(out)},
                              indent=2))
        return
    for t in tables:
        rows = [[rho, *[_inf(t["delta"][s][j]) if s in t["delta"] else "n/a"
                        for s in schemes]]
                for j, rho in enumerate(t["rho"])]
        how = " (binomial selection: p = ns / n)" if "binomial" in t["delta"] else ""
        _print_table(f"delta(rho), n = {t['n']}, ns = {t['ns']}, model {t['model']}{how}",
                     ["rho", *schemes], rows)
        for s, why in t["undefined"].items():
            typer.echo(f"n/a: {s} is not defined for n = {t['n']}, ns = {t['ns']}: {why}.")
    if out is not None:
        typer.echo(f"wrote {out}")
