"""The ``poisoncert`` command line (typer).

Commands are thin: each parses options and calls one library function. ``radius`` and
``delta`` live in ``cli/certs.py``; ``train``, ``certify`` and ``demo`` in ``cli/runs.py`` when
that module is present (it defines ``register(app)``). Library errors (``ValueError`` and the
other ``EXPECTED_ERRORS``) become one line ``error: <message>`` on stderr and exit code 1.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings

import typer

from poisoncert._validation import shown
from poisoncert.cli import certs
from poisoncert.cli.certs import EXPECTED_ERRORS, error_line, library_errors, option_flag
from poisoncert.threads import keep_heap

__all__ = ["EXPECTED_ERRORS", "app", "error_line", "library_errors", "main"]

app = typer.Typer(
    name="poisoncert",
    help="Certified defences against training-data poisoning by randomized selection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from poisoncert._version import __version__

        typer.echo(f"poisoncert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print poisoncert's version and exit.")) -> None:
    """Certified defences against training-data poisoning by randomized selection
    (bagging with/without replacement, binomial selection) and partition aggregation."""


certs.register(app)



def _register(module: str) -> None:
    """Add the commands of ``poisoncert.cli.<module>``; only that file missing is tolerated."""
    name = f"poisoncert.cli.{module}"
    try:
        commands = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
    else:
        commands.register(app)


for _module in ("runs", "predict", "attack"):
    _register(_module)


def _unwrap_help(typer_app: typer.Typer) -> None:
    """Each command's help as paragraphs of one line each: typer's rich help keeps the line
    breaks of a docstring's later paragraphs, which then wrap raggedly at the terminal's
    width. (No command's help holds a list or an indented block that needs its breaks.)"""
    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback is not None else None)
        if doc:
            info.help = "\n\n".join(" ".join(p.split())
                                     for p in inspect.cleandoc(doc).split("\n\n"))


_unwrap_help(app)


class _NoFlagType:
    """Help that shows no type for a flag: typer's rich help gives every flag (``--json``,
    ``-q``, ``--help``) the type ``<bool>``, as if it took a value (``--json true`` is an
    error)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""  # typer shows an option's metavar in place of its type
        return params


class _Command(_NoFlagType, typer.core.TyperCommand):
    pass


class _Group(_NoFlagType, typer.core.TyperGroup):
    pass


app.info.cls = _Group
for _info in app.registered_commands:
    _info.cls = _Command


def _command_path(argv: list[str] | None) -> str:
    """``poisoncert <command>`` for the command the arguments name (an error of an option's
    value, ``--json=1`` or ``--alpha`` without one, comes without the command's context)."""
    names = {info.name for info in app.registered_commands}
    words = sys.argv[1:] if argv is None else argv
    first = next((w for w in words if not w.startswith("-")), None)
    return f"poisoncert {first}" if first in names else "poisoncert"


def _given(exc: BaseException) -> str:
    """``". Got '1.5' instead"`` for an option's value typer could not convert: typer (0.27
    on) converts through pydantic, whose message ("Input should be a valid integer, unable to
    parse string as an integer") does not say what was given; the value is the input of the
    ``ValidationError`` it raised from. Empty when there is none (click's own messages name
    the value)."""
    errors = getattr(exc.__cause__, "errors", None)
    try:
        first = errors()[0] if callable(errors) else None
    except Exception:  # not pydantic's: say nothing more
        return ""
    if not isinstance(first, dict) or "input" not in first:
        return ""
    return f". Got {shown(first['input'])} instead"


#: What an option of each type pydantic could not parse must be (its error's ``type``).
_TYPE_WORDS = {"int_parsing": "an int", "int_from_float": "an int",
               "float_parsing": "a real number", "bool_parsing": "true or false"}


def _bad_value(exc: BaseException) -> str | None:
    """A value typer could not convert to its option's type (``radius --n 1e3``) in the one
    shape of every refusal, "The '--n' parameter of radius must be an int. Got '1e3'
    instead" (typer said "Invalid value for '--n': Input should be a valid integer, unable
    to parse string as an integer"), or None for any other usage error (an argument's, a
    missing value, an unknown option), which keeps click's words."""
    param, ctx = getattr(exc, "param", None), getattr(exc, "ctx", None)
    if getattr(param, "param_type_name", None) != "option" or ctx is None:
        return None
    errors = getattr(exc.__cause__, "errors", None)
    try:
        first = errors()[0] if callable(errors) else None
    except Exception:  # not pydantic's
        return None
    allowed = _TYPE_WORDS.get(first.get("type")) if isinstance(first, dict) else None
    if allowed is None or "input" not in first:
        return None
    return (f"The '{option_flag(param)}' parameter of {ctx.info_name} must be {allowed}. "
            f"Got {shown(first['input'])} instead")


#: Ctrl-C before a command could say what it left (``_console`` says the same).
_STARTING = "interrupted while starting: nothing was done."
#: Ctrl-C after a command's work, while it printed what it did (outside its
#: ``library_errors``): its files are written, its printed lines may be cut short.
_PRINTING = ("interrupted while printing its results: the command's work was done (any "
             "files it writes are written); what it printed may be incomplete.")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app. Expected library errors and command-line usage
    errors (a missing option, a value of the wrong type, an unknown command or option) become
    one line ``error: <message>`` on stderr and exit code 1, a library warning one line
    ``warning: <message>``; ``--help`` exits 0. The process
    keeps its freed memory (``threads.keep_heap``), as the engine's workers do."""
    keep_heap()
    # a library warning (e.g. a method valid only for two classes) is one line on stderr
    warnings.formatwarning = lambda message, *args, **kw: f"warning: {message}\n"
    state = certs.interrupt_state
    state.began = state.said = False  # (main called again in one process: tests)
    try:
        code = app(args=argv, prog_name="poisoncert", standalone_mode=False)
        if code == 130 and not state.said:  # typer's silent exit for a Ctrl-C
            # while it parsed the command line, or after the command's work: no
            # 'nothing was done' for a run that was trained and is printing its summary
            print(_PRINTING if state.began else _STARTING, file=sys.stderr)
    except KeyboardInterrupt:  # while typer built the commands, before a command ran
        print(_STARTING, file=sys.stderr)
        code = 130
    except typer.TyperException as exc:  # typer's usage errors (its click's ClickException)
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare ``poisoncert``: the help
            typer.echo(exc.format_message())
            code = 0
        else:
            ctx = getattr(exc, "ctx", None)
            cmd = ctx.command_path if ctx is not None else _command_path(argv)
            msg = _bad_value(exc)
            if msg is None:
                msg = exc.format_message() if hasattr(exc, "format_message") else str(exc)
                msg += _given(exc)
            print(error_line(ValueError(f"{msg} (see '{cmd} --help')")), file=sys.stderr)
            code = 1
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        code = 1
    except EXPECTED_ERRORS as exc:
        print(error_line(exc), file=sys.stderr)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
