"""Run commands: ``poisoncert train``, ``poisoncert certify`` and ``poisoncert demo``.

Each command parses its options and calls one function of ``poisoncert.experiment``; config
values can be overridden spaCy style (``poisoncert train exp.yaml --training.steps 300``). The
progress bar is ``cli/progress.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from poisoncert.cli.certs import library_errors

__all__ = ["certify", "demo", "register", "train"]

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def register(app: typer.Typer) -> None:
    """Add ``train``, ``certify`` and ``demo`` to ``app``."""
    app.command("train", context_settings=_EXTRA)(train)
    app.command("certify")(certify)
    app.command("demo")(demo)


def _console():
    from rich.console import Console

    return Console(width=110)


def train(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Experiment config (YAML).")],
    run_dir: Annotated[Path | None, typer.Option(
        "--run-dir", help="Run directory (default: runs/<config name>). An existing run with "
                          "the same config is resumed.")] = None,
    executor: Annotated[str, typer.Option(
        help="Where chunks run: local | ray (needs poisoncert[ray]).")] = "local",
    workers: Annotated[int | None, typer.Option(
        help="Local worker processes (overrides training.workers); with --executor ray, "
             "chunks at once (default: all CPUs of the Ray instance).")] = None,
    address: Annotated[str | None, typer.Option(
        help="--executor ray: an existing cluster ('auto', 'ray://host:10001'); default: "
             "start a local Ray instance.")] = None,
    device: Annotated[str | None, typer.Option(
        help="cpu | cuda (overrides training.device).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train the base classifiers of an experiment and store their test predictions.

    Extra options override config values: --training.steps 300 --selection.ns 10.
    """
    with library_errors():
        from poisoncert.cli.progress import rich_progress
        from poisoncert.config import load_config, parse_overrides
        from poisoncert.executors import make_executor
        from poisoncert.experiment import train_run

        overrides = parse_overrides(ctx.args)
        if workers is not None:
            overrides["training.workers"] = str(workers)
        if device is not None:
            overrides["training.device"] = device
        cfg = load_config(config, overrides)
        ray = executor.strip().lower() == "ray"
        ex = make_executor(executor, workers=workers if ray else cfg.execution.workers,
                           address=address)
        run_dir = run_dir if run_dir is not None else Path("runs") / config.stem
        res = train_run(cfg, run_dir, executor=ex, progress=None if quiet else rich_progress)
    typer.echo(f"Trained {res.T} base classifiers ({res.chunks_trained} chunks trained, "
               f"{res.chunks_skipped} resumed) in {res.seconds:.1f} s.")
    typer.echo(f"Majority-vote accuracy {res.accuracy:.4f}, mean base-classifier accuracy "
               f"{res.base_accuracy:.4f} on {len(res.labels)} test points; n = |D^p| = {res.n}.")
    typer.echo(f"Run directory: {res.run_dir}")
    typer.echo(f"Next: poisoncert certify {res.run_dir}")


def certify(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by train.")],
    alpha: Annotated[float | None, typer.Option(
        help="Error probability per test point (default: the run's certify.alpha).")] = None,
    method: Annotated[str | None, typer.Option(
        help="bonferroni | bonferroni_upper | paper | true_label | true_label_split "
             "(default: the run's certify.method).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Poisoning model P1 ... P6 (default: the run's certify.model).")] = None,
    rho: Annotated[list[int] | None, typer.Option(
        "--rho", help="Radius for the table; repeat for several (default: certify.rhos).")
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Skip the PNG.")] = False,
    aggregation: Annotated[str | None, typer.Option(
        help="vote | roe (run-off election: partition / finite_aggregation runs trained with "
             "run.store_ranks; writes certificates_roe.csv, ...).")] = None,
) -> None:
    """Certify every test example of a run; print certified accuracy against rho."""
    with library_errors():
        from poisoncert.experiment import certify_run

        res = certify_run(run_dir, alpha=alpha, method=method, model=model, rhos=rho or None,
                          plot=not no_plot, aggregation=aggregation)
    from rich.table import Table

    s = res.summary
    table = Table(title="Certified accuracy")
    table.add_column("rho", justify="right")
    table.add_column("certified accuracy", justify="right")
    for r, a in res.table.rows():
        table.add_row(str(r), f"{a:.4f}")
    con = _console()
    setting = ", ".join(f"{k} {s[k]}" for k in ("scheme", "n", "ns", "p", "model", "alpha",
                                                 "method", "T") if s.get(k) is not None)
    con.print(setting, markup=False, highlight=False)
    con.print(f"accuracy (abstain = wrong) {s.get('accuracy', float('nan')):.4f}, abstain rate "
              f"{s['abstain_rate']:.4f}, median radius {s['radius_median']:g} "
              f"[{s['radius_unit']}]"
              + (f"; in DPA's unit {s['radius_dpa_median']:g}" if "radius_dpa_median" in s
                 else ""), markup=False, highlight=False)
    con.print(table)
    for name, path in res.paths.items():
        con.print(f"{name}: {path}", highlight=False, soft_wrap=True)


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("runs/demo"),
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    quick: Annotated[bool, typer.Option(hidden=True, help="A tiny version (tests).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train and certify on scikit-learn's digits with the three selection schemes (no
    downloads); print the certified accuracy against rho and draw the three curves."""
    with library_errors():
        from poisoncert.cli.progress import rich_progress
        from poisoncert.executors import LocalExecutor
        from poisoncert.experiment import DEMO_SCHEMES, run_demo

        res = run_demo(out, quick=quick, progress=None if quiet else rich_progress,
                       executor=LocalExecutor(workers))
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
