"""Run commands: ``poisoncert train``, ``poisoncert certify`` and ``poisoncert demo``.

Each command parses its options and calls one function of ``poisoncert.experiment``; config
values can be overridden spaCy style (``poisoncert train exp.yaml --training.steps 300``). The
progress bar is ``cli/progress.py``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from poisoncert._validation import INT_LIMIT, INT_LIMIT_TEXT, param_error, parse_int_list
from poisoncert.cli.certs import interrupted, library_errors
from poisoncert.runsafe import json_text, shell_path

__all__ = ["VERIFY_BAR_MIB", "certify", "checksum_bar", "demo", "register", "train"]

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
#: How certify's summary shows an aggregation: as ``--aggregation`` spells it.
_AGGREGATION_SHOWN = {"run_off": "roe (run-off election)"}


def register(app: typer.Typer) -> None:
    """Add ``train``, ``certify`` and ``demo`` to ``app``."""
    app.command("train", context_settings=_EXTRA)(train)
    app.command("certify")(certify)
    app.command("demo")(demo)


def parse_rhos(text: str | None, name: str = "--rhos", where: str = "certify") -> list[int]:
    """``"0,50,100"`` -> ``[0, 50, 100]`` (a ``ValueError`` naming the option otherwise)."""
    return [] if text is None else parse_int_list(text, name, where, low=0)


def _console():
    """A terminal's own width (rich wraps the long lines at words); otherwise (a pipe or a
    log file) tables 110 columns wide at most and lines whole, unwrapped."""
    from rich.console import Console

    con = Console()
    return con if con.is_terminal else Console(width=110, soft_wrap=True)


def _refuse_misspelt_options(ctx: typer.Context) -> None:
    """An extra word ``--run_dir`` (no dot: no config key) that is one of the command's own
    options spelt with underscores or in capitals: one line naming the option meant (it would
    be read as an unknown config key)."""
    from poisoncert.config import ConfigError

    own = {o for p in ctx.command.params for o in getattr(p, "opts", ()) if o.startswith("--")}
    for word in ctx.args:
        name = word.split("=", 1)[0]
        if name.startswith("--") and "." not in name:
            meant = "--" + name[2:].replace("_", "-").lower()
            if meant in own:
                raise ConfigError(f"No such option: {name}. Did you mean {meant}?")


def _refuse_mixed_devices(device: str | None, devices: str | None,
                          gpus_per_task: float | None) -> None:
    """A run trains on one kind of device (training.device): ``--devices cpu,cuda:0`` (the
    'cpu' worker trained on cuda:0), ``--device cpu --devices cuda:0,cuda:1`` (the GPUs idle,
    each worker on the CPU) and ``--device cpu --gpus-per-task 1`` (Ray tasks reserving GPUs
    they never use) were taken without a word: one line each."""
    kinds = set()
    if devices is not None:
        for name in (d.strip().lower() for d in devices.split(",") if d.strip()):
            if name == "cpu":
                kinds.add("cpu")
            elif name == "all" or name.startswith("cuda"):
                kinds.add("cuda")  # (other words: parse_devices' syntax error)
    if len(kinds) > 1:
        raise param_error("devices", "train", "'cpu' entries alone or CUDA devices alone (one "
                          "training.device for the run)", devices)
    given = None if device is None else device.strip().lower()
    if given not in (None, "cpu", "cuda"):
        return  # training.device's own check names it
    if kinds and given is not None and given not in kinds:
        kind = "cpu entries" if given == "cpu" else "CUDA devices"
        raise param_error("devices", "train", f"{kind} with --device {device.strip()} (or leave "
                          "--device out)", devices)
    if gpus_per_task and given == "cpu":
        raise param_error("gpus_per_task", "train", "0 or none with --device cpu (its tasks "
                          "would reserve GPUs and train on the CPU)", gpus_per_task)


def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", help="Run directory (default: runs/<config name>). An existing run with "
                          "the same config is resumed.")] = None,
    executor: Annotated[str, typer.Option(
        help="Where chunks run: local | ray (needs the extra: pip install "
             "\"poisoncert\\[ray]\").")] = "local",
    workers: Annotated[int | None, typer.Option(
        help="Local worker processes (overrides training.workers); with --executor ray, "
             "chunks at once (not training.workers, which Ray does not read): at most the "
             "CPUs for the local Ray instance (with --gpus-per-task, the tasks its GPUs hold "
             "where that is more), default all of them; on a cluster "
             "(--address) any number, default its CPUs.")] = None,
    address: Annotated[str | None, typer.Option(
        help="--executor ray: an existing cluster ('auto', 'ray://host:10001'); default: "
             "start a local Ray instance.")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu | cuda (overrides training.device, whose default is cpu; a scikit-learn "
             "learner and the knn / rnn search take cpu only).")] = None,
    devices: Annotated[str | None, typer.Option(
        help="Local executor: one worker process per entry: 'all' (every visible GPU), "
             "'cuda:0,cuda:1', or 'cpu,cpu' (at most the CPUs). Default: training.workers "
             "on training.device.")] = None,
    gpus_per_task: Annotated[float | None, typer.Option(
        help="--executor ray: GPUs each chunk task reserves (sets training.device to cuda): "
             "a fraction in [0.0001, 1] (tasks share a GPU) or a whole number. Default: "
             "none (a CPU run).")] = None,
    rhos: Annotated[str | None, typer.Option(
        "--rhos", help="Radii for certify's table, comma-separated, e.g. 0,50,100 (sets "
                       "certify.rhos).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (nor Ray's "
                                                         "token notice).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (no "
                                                         "progress bar).")] = False,
) -> None:
    """Train the base classifiers of an experiment and store their test predictions.

    Extra options override config values: --training.steps 300 --selection.ns 10. The
    file's values that they contradict give way: another --selection.scheme drops the
    file's selection keys it does not take (give its own: --selection.scheme knn
    --selection.k 3), --selection.p replaces a binomial file's ns; a note names them.

    Another note names the settings given that the run never reads (the training keys,
    --workers and --devices of a knn / rnn run; those of the torch engine for a
    scikit-learn learner).
    """
    with library_errors():
        from poisoncert.cli.progress import rich_progress
        from poisoncert.config import ConfigError, as_given, parse_overrides, read_config_file
        from poisoncert.executors import check_workers, make_executor
        from poisoncert.experiment import train_run
        from poisoncert.experiment.train import run_config
        from poisoncert.ray_executor import _ray_running, local_workers_limit, quiet_ray_notices

        _refuse_misspelt_options(ctx)
        overrides = parse_overrides(ctx.args)
        given = bool(overrides)  # the experiment's own settings (not how it runs)
        typed = list(overrides)  # the keys given as --section.key (the options' come below)
        ray = executor.strip().lower() == "ray"
        if workers is not None:
            if not ray:  # local processes: [1, CPUs], for 0 as for too many
                check_workers(workers, "training.workers", "the config")
                overrides["training.workers"] = str(workers)
            elif address is None and not _ray_running():  # a local Ray instance started
                # here: its workers are processes on this machine, as many as local workers
                # may be (--workers 2^53 reached ray.init, which refused it after the run
                # folder was written)
                g = gpus_per_task if isinstance(gpus_per_task, (int, float)) else 0.0
                most = local_workers_limit(g if math.isfinite(g) and g > 0 else 0.0)
                if isinstance(workers, bool) or not 1 <= workers <= most:
                    raise param_error("workers", "train", f"an int in the range [1, {most}] "
                                      "with a local Ray instance (the CPUs this process may "
                                      "use, as for local workers, or the tasks its GPUs hold "
                                      "at --gpus-per-task each; a cluster, --address, takes "
                                      f"up to {INT_LIMIT_TEXT})", workers)
            elif isinstance(workers, bool) or not 1 <= workers <= INT_LIMIT:
                # a cluster's chunks in flight (or those of the Ray this process joined):
                # not bounded by this machine's CPUs
                raise param_error("workers", "train", f"an int in the range [1, "
                                  f"{INT_LIMIT_TEXT}] with --executor ray --address (chunks "
                                  "in flight on the cluster)", workers)
            # Ray's --workers is the executor's, not training.workers (local processes): the
            # run's config.yaml keeps the file's value (--workers 5 stored there made a local
            # resume from it refused on 2 CPUs until --workers was given)
        if device is not None:
            overrides["training.device"] = device
        _refuse_mixed_devices(device, devices, gpus_per_task)
        if (devices is not None or gpus_per_task) and device is None:
            # the devices' kind ('--devices cpu,cpu': two CPU workers, not a CUDA run)
            cpus_only = devices is not None and all(
                d.strip().lower() == "cpu" for d in devices.split(",") if d.strip())
            overrides["training.device"] = "cpu" if cpus_only and devices.strip() else "cuda"
        if rhos is not None:  # certify's words and check: "" (no radius) is refused, not
            # stored as an empty table, and the error gives the range
            overrides["certify.rhos"] = ",".join(map(str, parse_rhos(rhos, "--rhos", "train")))
        settings = read_config_file(config)
        dropped: list[str] = []
        run_dir = run_dir if run_dir is not None else Path("runs") / config.stem
        # (a value beyond a bound added since, in a run an earlier version made: resumed)
        cfg = run_config(settings, overrides, run_dir, dropped=dropped)
        if dropped:  # the file's values the command line overrode by implication
            one = len(dropped) == 1  # (in the words of _ignored_note's line below it)
            typer.echo(f"note: the config file's {', '.join(dropped)} "
                       f"{'does' if one else 'do'} not apply to the {cfg.selection.scheme} "
                       f"scheme; {'it is' if one else 'they are'} ignored.", err=True)
        options = [name for name, on in (("--executor ray", ray), ("--address", address),
                                          ("--workers", workers), ("--devices", devices))
                   if on is not None and on is not False]
        # said once the run has trained (a refusal stays one line)
        note = _ignored_note(cfg, settings, typed, options)
        if ray and workers is None:
            note = "\n".join(filter(None, (note, _ray_workers_note(cfg, settings, typed))))
        if not given and not any((settings or {}).values()):
            typer.echo(f"warning: the config file '{config}' holds no settings (it is empty, "
                       "comments or sections without keys): training the default experiment "
                       f"({cfg.data.name}, {cfg.selection.scheme} ns {cfg.selection.ns}, "
                       f"T {cfg.T}, model {cfg.training.model}). Name the settings in the "
                       "file, or give them as --section.key value.", err=True)
        if address is not None and not ray:  # would be ignored: an error (issue 9)
            raise param_error("address", "train", "given only with --executor ray", address)
        local_workers = None if devices is not None and workers is None else (
            cfg.execution.workers)
        if not ray and local_workers is not None:  # local processes: at most the CPUs
            check_workers(local_workers, "training.workers", "the config")
        ex = make_executor(executor, workers=workers if ray else local_workers,
                           address=address, devices=devices, gpus_per_task=gpus_per_task,
                           where="train")
        from poisoncert.data.download import quiet_downloads

        with interrupt_line(), quiet_downloads(quiet or as_json), quiet_ray_notices(quiet):
            try:
                res = train_run(cfg, run_dir, executor=ex,
                                progress=None if quiet or as_json else rich_progress,
                                verify_progress=None if quiet or as_json else checksum_bar)
            except ConfigError as e:  # the value as typed (--device CUDA: not 'cuda')
                raise as_given(e, settings, overrides) from None
    if note:
        typer.echo(note, err=True)
    if res.diverged:  # their NaN outputs abstain; a certificate of them is rarely wanted
        typer.echo(f"warning: {res.diverged} of {res.T} base classifiers gave outputs that "
                   "are not finite (diverged training: a lower training.lr, say); they "
                   "abstain on those inputs.", err=True)
    if as_json:
        typer.echo(json_text({
            "run_dir": str(res.run_dir), "T": res.T, "n": res.n, "n_test": len(res.labels),
            "diverged": res.diverged,
            "chunks_trained": res.chunks_trained, "chunks_resumed": res.chunks_skipped,
            "data_folder": _data_folder(res.run_dir),
            "seconds": round(res.seconds, 3), "accuracy": res.accuracy,
            "base_accuracy": res.base_accuracy}, indent=1))
        return
    chunks = "chunk" if res.chunks_trained == 1 else "chunks"
    models = f"{res.T} base classifier{'' if res.T == 1 else 's'}"
    neighbours = cfg.selection.scheme in ("knn", "rnn")
    if neighbours:  # one classifier, nothing trained
        typer.echo(f"Searched the neighbours of {len(res.labels)} test points "
                   f"({cfg.selection.scheme}; no base classifiers) in {res.seconds:.1f} s.")
    elif res.chunks_trained == 0:  # a finished run given again: everything was on disk
        typer.echo(f"Nothing to train: the {models} were trained before "
                   f"({res.chunks_skipped} chunk{'' if res.chunks_skipped == 1 else 's'} "
                   f"resumed, {res.seconds:.1f} s).")
    else:
        typer.echo(f"Trained {models} ({res.chunks_trained} {chunks} trained, "
                   f"{res.chunks_skipped} resumed) in {res.seconds:.1f} s.")
    accuracy = (f"Accuracy {res.accuracy:.4f} (the {cfg.selection.scheme} vote)" if neighbours
                else f"Majority-vote accuracy {res.accuracy:.4f}, mean base-classifier "
                     f"accuracy {res.base_accuracy:.4f}")
    typer.echo(f"{accuracy} on {len(res.labels)} test points; n = |D^p| = {res.n}.")
    folder = _data_folder(res.run_dir)
    if folder is not None:  # which copy the search found ($POISONCERT_DATA, ./data, ...)
        typer.echo(f"Data read from {folder}")
    typer.echo(f"Run directory: {res.run_dir}")
    typer.echo(f"Next: poisoncert certify {shell_path(res.run_dir)}")


def _ignored_note(cfg, settings: dict | None, typed: list[str], options: list[str]
                  ) -> str | None:
    """The note naming what the user gave that the run never reads
    (``experiment.learners.ignored_keys``: ``--training.dtype float64`` for a knn run, or
    ``training.steps`` for a scikit-learn learner, were taken without a word), or None: the
    keys typed on the command line (``typed``), the config file's (``settings``) whose value
    is not the default (a run's own ``config.yaml``, given again, states every key), and for
    a knn / rnn run the command's ``options`` that choose where classifiers train (the search
    runs here, in this process)."""
    from poisoncert.config import ExperimentConfig, to_dict
    from poisoncert.experiment.learners import ignored_keys
    from poisoncert.selection import NEAREST_NEIGHBOURS

    ignored, why = ignored_keys(cfg)
    if not ignored:
        return None
    values, defaults = to_dict(cfg), to_dict(ExperimentConfig())
    filed = {f"{section}.{key}" for section, body in (settings or {}).items()
             if isinstance(body, dict) for key in body
             if values.get(section, {}).get(key) != defaults.get(section, {}).get(key)}
    names = [key for key in ignored if key in filed or key in typed]
    if cfg.selection.scheme in NEAREST_NEIGHBOURS:
        names = options + [k for k in names if not (k == "training.workers" and
                                                    "--workers" in options)]
    if not names:
        return None
    one = len(names) == 1
    return (f"note: {', '.join(names)} {'does' if one else 'do'} not apply to {why}; "
            f"{'it is' if one else 'they are'} ignored.")


def _ray_workers_note(cfg, settings: dict | None, typed: list[str]) -> str | None:
    """The note that ``training.workers`` (local worker processes), given in the config file
    (not its default) or as ``--training.workers``, is not read by ``--executor ray``, which
    runs ``--workers`` chunks at once (it was ignored without a word: the Ray instance's
    CPUs); None where it was not given, or for a knn / rnn run (``_ignored_note`` names it)."""
    from poisoncert.config import ExecutionConfig
    from poisoncert.selection import NEAREST_NEIGHBOURS

    if cfg.selection.scheme in NEAREST_NEIGHBOURS:
        return None
    body = (settings or {}).get("training")
    filed = (isinstance(body, dict) and "workers" in body
             and cfg.execution.workers != ExecutionConfig().workers)
    if not (filed or "training.workers" in typed):
        return None
    return (f"note: training.workers ({cfg.execution.workers}: local worker processes) does "
            "not apply to --executor ray, which runs --workers chunks at once (default: the "
            "Ray instance's CPUs); it is ignored.")


def _data_folder(run_dir: Path) -> str | None:
    """The folder the run's data files were read from (its manifest's ``data.sources``);
    None for data without files (scikit-learn's bundled digits) or a manifest without them."""
    import os

    from poisoncert.runs import RunDir

    data = RunDir(run_dir).load_manifest().get("data")
    sources = data.get("sources") if isinstance(data, dict) else None
    paths = [os.path.abspath(Path(src["path"]).parent) for src in sources or ()  # "d.npz"
             if isinstance(src, dict) and isinstance(src.get("path"), str)]
    return os.path.commonpath(paths) if paths else None


#: The size (MiB) of a run's checksummed files from which certify shows a bar while it reads
#: them (at about 0.5 GiB/s, from half a second on; a smaller run's bar would only flash).
VERIFY_BAR_MIB = 256


def checksum_bar(total: int, completed: int, label: str):
    """The display of the checksums a command reads before it uses a run (MiB): the rich
    bar for large runs (from ``VERIFY_BAR_MIB``), nothing for small ones (certify, attack,
    update, predict)."""
    from poisoncert.cli.progress import rich_progress
    from poisoncert.experiment.display import no_display

    if total < VERIFY_BAR_MIB:
        return no_display(total, completed, label)
    return rich_progress(total, completed, "verifying checksums", unit="MiB")


def certify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by train.")],
    alpha: Annotated[float | None, typer.Option(
        help="Error probability per test point (default: the run's certify.alpha).")] = None,
    method: Annotated[str | None, typer.Option(
        help="auto | bonferroni | bonferroni_upper | pairwise | paper | true_label | "
             "true_label_split (default: the run's certify.method).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Poisoning model P1 ... P6 (default: the run's certify.model).")] = None,
    rhos: Annotated[str | None, typer.Option(
        "--rhos", help="Radii for the table, comma-separated, e.g. 0,50,100 (default: "
                       "certify.rhos).")] = None,
    rho: Annotated[list[int] | None, typer.Option(
        "--rho", metavar="<int>",
        help="One radius for the table; repeat for several (the same as --rhos).")
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Skip the PNG.")] = False,
    aggregation: Annotated[str | None, typer.Option(
        help="vote | roe (run-off election: partition / finite_aggregation runs trained with "
             "run.store_ranks; writes certificates_roe.csv, ...). Default: the run's "
             "certify.aggregation, vote unless set.")] = None,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Certify without checking the run: neither its files against "
                            "the checksums and config hash in its manifest nor the "
                            "consistency of its votes, predictions and labels; config.yaml's "
                            "values are used as they are (for files edited on purpose; said "
                            "in the output).")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar (shown while the checksums of a run's files "
                              f"are read, from {VERIFY_BAR_MIB} MiB, and while "
                              "certificates.csv is written, for many test points)."
    )] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (no "
                                                         "progress bar).")] = False,
) -> None:
    """Certify every test example of a run; print certified accuracy against rho.

    The run's files are first checked against its manifest (checksums, config hash,
    consistency of votes, predictions and labels); a file that does not match is an error.
    """
    with library_errors():
        from poisoncert.cli.progress import rows_bar
        from poisoncert.experiment import certify_run

        radii = parse_rhos(rhos, "--rhos") + list(rho or [])
        for r in rho or []:
            if r < 0:
                raise param_error("--rho", "certify", "an int >= 0 (repeat it for several "
                                  "radii)", r)
        try:
            res = certify_run(run_dir, alpha=alpha, method=method, model=model,
                              rhos=radii or None, plot=not no_plot, verify=not no_verify,
                              aggregation=aggregation,
                              progress=None if quiet or as_json else checksum_bar,
                              rows_progress=None if quiet or as_json else rows_bar)
        except KeyboardInterrupt:
            raise interrupted("interrupted: the run itself is untouched; the same command "
                              "certifies it (certify.json, written last, marks a whole set of "
                              "outputs).") from None
    if as_json:
        typer.echo(json_text({"summary": res.summary,
                               "certified_accuracy": [{"rho": r, "certified_accuracy": a}
                                                      for r, a in res.table.rows()],
                               "files": {k: str(v) for k, v in res.paths.items()}},
                              indent=1, default=str))
        return
    from rich.table import Table

    s = res.summary
    table = Table(title="Certified accuracy")
    table.add_column("rho", justify="right")
    table.add_column("certified accuracy", justify="right")
    for r, a in res.table.rows():
        table.add_row(str(r), f"{a:.4f}")
    con = _console()
    note = s.get("verification", "")
    if s.get("verified"):
        con.print(note, markup=False, highlight=False, soft_wrap=not con.is_terminal)
    else:  # skipped (--no-verify) or a run without checksums: a warning on stderr
        typer.echo(note if note.startswith("warning:") else f"warning: {note}", err=True)
    # the run-off election as --aggregation spells it (its summary's value is "run_off")
    rule = s.get("aggregation")
    shown = {**s, "aggregation": _AGGREGATION_SHOWN.get(rule, rule)}
    keys = ("scheme", "aggregation", "n", "ns", "p", "model", "alpha", "method", "T")
    if s.get("scheme") in ("knn", "rnn"):  # no base classifiers ('T 1'): k or r instead
        keys = ("scheme", "k", "r", "model")
    setting = ", ".join(f"{k} {shown[k]}" for k in keys if shown.get(k) is not None)
    con.print(setting, markup=False, highlight=False)
    median = ("n/a (nothing certified)" if math.isnan(s["radius_median"])
              else f"{s['radius_median']:g} [{s['radius_unit']}]")
    con.print(f"accuracy (abstain = wrong) {s.get('accuracy', float('nan')):.4f}, abstain rate "
              f"{s['abstain_rate']:.4f}, median radius {median}"
              + (f"; in DPA's unit {s['radius_dpa_median']:g}" if "radius_dpa_median" in s
                 and not math.isnan(s["radius_dpa_median"]) else ""),
              markup=False, highlight=False)
    con.print(table)
    for name, path in res.paths.items():
        con.print(f"{name}: {path}", highlight=False, soft_wrap=True)


@contextmanager
def interrupt_line() -> Iterator[None]:
    """Training stopped by Ctrl-C (``experiment.TrainInterrupted``): one line on stderr, what
    is kept and that the same command resumes, and the shell's exit code for it, 130. Ctrl-C
    outside the training loop (loading the data, joining the chunks, the manifest) says so
    too (it exited 130 without a word)."""
    from poisoncert.experiment import TrainInterrupted

    try:
        yield
    except TrainInterrupted as stop:
        raise interrupted(stop.message()) from None
    except KeyboardInterrupt as stop:  # a knn / rnn search says what it keeps (nothing)
        raise interrupted(stop.message() if callable(getattr(stop, "message", None)) else
                          "interrupted: the same command resumes the run from the chunks it "
                          "finished (none if it was still loading its data).") from None


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    quick: Annotated[bool, typer.Option(hidden=True, help="A tiny version (tests).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (no "
                                                         "progress bars).")] = False,
) -> None:
    """Train and certify on scikit-learn's digits with the three selection schemes (no
    downloads); print the certified accuracy against rho and draw the three curves."""
    with library_errors():
        from poisoncert.cli.progress import rich_progress
        from poisoncert.executors import LocalExecutor, check_workers
        from poisoncert.experiment import DEMO_SCHEMES, run_demo

        ex = LocalExecutor(check_workers(workers, "workers", "demo"))
        with interrupt_line():
            res = run_demo(out, quick=quick, executor=ex,
                           progress=None if quiet or as_json else rich_progress)
    if as_json:
        typer.echo(json_text({
            "runs": {s: {"run_dir": str(res.out_dir / s), "accuracy": res.runs[s].accuracy,
                         "certified_accuracy": [{"rho": r, "certified_accuracy": a}
                                                for r, a in res.tables[s].rows()]}
                     for s in DEMO_SCHEMES},
            "files": {k: str(v) for k, v in res.paths.items()},
            "seconds": round(res.seconds, 3)}, indent=1))
        return
    from rich.table import Table

    table = Table(title="Certified accuracy on digits (model P6, alpha 0.001)")
    table.add_column("rho", justify="right")
    for s in DEMO_SCHEMES:
        r = res.runs[s]
        table.add_column(f"{s}\n(clean acc. {r.accuracy:.3f})", justify="right")
    rho = res.tables[DEMO_SCHEMES[0]].rho
    for j, r in enumerate(rho):
        table.add_row(str(r), *[f"{res.tables[s].accuracy[j]:.3f}" for s in DEMO_SCHEMES])
    con = _console()
    con.print(table)
    con.print(f"Runs: {', '.join(str(res.out_dir / s) for s in DEMO_SCHEMES)}",
              highlight=False, soft_wrap=True)
    con.print(f"Table: {res.paths['table']}", highlight=False, soft_wrap=True)
    con.print(f"Figure: {res.paths['plot']}", highlight=False, soft_wrap=True)
    con.print(f"Done in {res.seconds:.1f} s.", highlight=False)
