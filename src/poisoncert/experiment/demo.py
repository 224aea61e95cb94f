"""The demo: the experiment ``experiments/demo.yaml`` (scikit-learn's digits, no download)
trained and certified once per selection scheme, and the three curves in one figure.

The package reads the config through ``poisoncert/experiment/demo.yaml``, a link to the file
in ``experiments/`` (a wheel holds a copy of it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from poisoncert import runs
from poisoncert.config import ExperimentConfig, from_dict
from poisoncert.executors import Executor
from poisoncert.experiment.certify import (
    CertifiedAccuracy,
    accuracy_curve,
    certify_run,
    curve_label,
    figure_title,
)
from poisoncert.experiment.train import (
    ProgressDisplay,
    RunResult,
    StartInterrupted,
    train_run,
)
from poisoncert.runsafe import TMP_PREFIX

__all__ = ["DEMO_CONFIG", "DEMO_SCHEMES", "DemoResult", "demo_config", "run_demo"]

#: The demo experiment (``experiments/demo.yaml``); ``run_demo`` trains it once per scheme of
#: ``DEMO_SCHEMES``.
DEMO_CONFIG = resources.files("poisoncert.experiment").joinpath("demo.yaml").read_text()

DEMO_SCHEMES = ("without_replacement", "with_replacement", "binomial")

#: Overrides of ``run_demo(quick=True)``: a few seconds, for tests.
_QUICK = {"selection.T": 32, "training.steps": 10, "run.chunk_size": 16}


class DemoInterrupted(KeyboardInterrupt):
    """The demo stopped by an interrupt before one scheme's run began training, after the
    runs of the schemes before it were trained in full (``StartInterrupted`` said "nothing was
    written" of that one run, where ``poisoncert demo`` had written those). A
    ``KeyboardInterrupt``, with the ``message`` the command line prints."""

    def __init__(self, out: Path, done: list[str], stop: StartInterrupted):
        self.out, self.done, self.stop = Path(out), list(done), stop
        super().__init__(self.message())

    def message(self) -> str:
        kept = ", ".join(f"'{self.out / s}'" for s in self.done)
        return (f"interrupted before the run '{self.stop.run_dir}' began training: the demo's "
                f"run{'' if len(self.done) == 1 else 's'} {kept} "
                f"{'is' if len(self.done) == 1 else 'are'} trained and kept; the same command "
                "resumes the demo.")


@dataclass(frozen=True, eq=False)
class DemoResult:
    out_dir: Path
    runs: dict[str, RunResult]
    tables: dict[str, CertifiedAccuracy]
    curves: dict[str, CertifiedAccuracy]
    paths: dict[str, Path]
    seconds: float


def demo_config(scheme: str = "without_replacement", *, quick: bool = False
                ) -> ExperimentConfig:
    """The demo experiment for one scheme (``quick``: a tiny version for tests)."""
    overrides: dict[str, Any] = {"selection.scheme": scheme}
    if quick:
        overrides.update(_QUICK)
    return from_dict(yaml.safe_load(DEMO_CONFIG), overrides)


def _refuse_foreign_files(out: Path) -> None:
    """The demo's folder holds nothing but the demo's own output (its three runs, its table
    and figure, leftovers of its writes): it replaces its table and figure and resumes its
    runs (the same command again), and is refused where those names may be someone else's
    files, as ``train --run-dir`` refuses a folder that is not empty."""
    own = {*DEMO_SCHEMES, runs.CERTIFIED_ACCURACY, runs.CERTIFIED_ACCURACY_PNG}
    if out.exists() and not out.is_dir():
        raise runs.RunError(f"The demo's folder '{out}' (out_dir; CLI: --out) is a file. Use "
                            "a new or empty folder.")
    if not out.is_dir():
        return
    other = sorted(p.name for p in out.iterdir()
                   if p.name not in own and not p.name.startswith(TMP_PREFIX))
    if other:
        shown = ", ".join(other[:5]) + (f", ... ({len(other)} in all)" if len(other) > 5 else "")
        raise runs.RunError(f"The demo's folder '{out}' (out_dir; CLI: --out) holds files that "
                            f"are not the demo's ({shown}). Use a new or empty folder, or an "
                            "earlier demo's.")


def run_demo(out_dir: str | Path, *, quick: bool = False,
             progress: ProgressDisplay | None = None,
             executor: Executor | None = None) -> DemoResult:
    """Train and certify the demo once per scheme into ``out_dir/<scheme>``; write the three
    curves to ``out_dir/certified_accuracy.png`` and a table to ``certified_accuracy.csv``."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    cfgs = {s: demo_config(s, quick=quick) for s in DEMO_SCHEMES}
    if (out / runs.MANIFEST).exists():
        # its certified_accuracy.csv / .png would be replaced by the demo's
        raise runs.RunError(f"The demo's folder '{out}' (out_dir; CLI: --out) holds a run "
                            f"(its {runs.MANIFEST}). Use another folder.")
    _refuse_foreign_files(out)
    for s in DEMO_SCHEMES:  # check every folder before training any
        runs.check_writable(out / s)
    results, tables, curves, labels = {}, {}, {}, {}
    for s, cfg in cfgs.items():
        try:
            results[s] = train_run(cfg, out / s, executor=executor, progress=progress)
        except StartInterrupted as stop:  # not "nothing was written": the runs before it were
            if not results:
                raise
            raise DemoInterrupted(out, list(results), stop) from stop
        cert, table = certify_run(out / s, plot=False)
        tables[s] = table
        curves[s] = accuracy_curve(cert, results[s].labels, extra=table.rho)
        labels[s] = curve_label(cfg)
    rho = tables[DEMO_SCHEMES[0]].rho  # the same rhos for every scheme
    lines = ["rho," + ",".join(DEMO_SCHEMES)]
    lines += [f"{r}," + ",".join(f"{tables[s].accuracy[j]:.6g}" for s in DEMO_SCHEMES)
              for j, r in enumerate(rho)]
    paths = {"table": out / runs.CERTIFIED_ACCURACY, "plot": out / runs.CERTIFIED_ACCURACY_PNG}
    runs.save_text(paths["table"], "\n".join(lines) + "\n")
    from poisoncert.plots import plot_certified_accuracy

    fig = plot_certified_accuracy({labels[s]: (curves[s].rho, curves[s].accuracy)
                                   for s in DEMO_SCHEMES},
                                  title=figure_title(cfgs[DEMO_SCHEMES[0]],
                                                     cfgs[DEMO_SCHEMES[0]].certify.model,
                                                     cfgs[DEMO_SCHEMES[0]].certify.alpha))
    runs.save_with(paths["plot"], lambda f: fig.savefig(f, format="png", dpi=150))
    return DemoResult(out_dir=out, runs=results, tables=tables, curves=curves, paths=paths,
                      seconds=time.perf_counter() - t0)
