"""Bad options refused before the expensive work: one line naming the option, before torch is
imported, a run's weights are read or anything is written."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=cwd, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("spec", ["abc", "tpu:0", "cuda:x", ",", "cpu:1"])
def test_devices_syntax_is_refused_before_torch_is_imported(tmp_path, spec):
    """``train --devices abc`` imported torch (seconds) to count the CUDA devices before it
    read the text; a list that names no device is now refused from its syntax alone."""
    (tmp_path / "exp.yaml").write_text("selection: {scheme: binomial, ns: 30, T: 2}\n")
    proc = _python(f"""
        import sys
        from poisoncert.cli import main
        try:
            main(["train", "exp.yaml", "--run-dir", "run", "--devices", {spec!r}])
        except SystemExit as e:
            print("exit", e.code, "torch" in sys.modules)
        """, tmp_path)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "'devices' parameter of train" in lines[0], proc.stderr
    assert proc.stdout.split() == ["exit", "1", "False"], proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


@pytest.mark.parametrize("args", [["--training.workers", "0"], ["--workers", "0"],
                                  ["--training.workers", "-3"],
                                  ["--training.workers", str(2**60)]])
def test_workers_refusals_name_the_same_true_range(tmp_path, args):
    """``--training.workers 0`` said the range was [1, 2^53] where ``--workers 0`` (and
    ``--training.workers 100`` on this machine) said [1, CPUs]: a run takes at most the CPUs
    it may use, and every refusal now says so."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.resources import usable_cpus

    (tmp_path / "exp.yaml").write_text("selection: {scheme: binomial, ns: 30, T: 2}\n")
    r = CliRunner().invoke(app, ["train", str(tmp_path / "exp.yaml"), "--run-dir",
                                 str(tmp_path / "run"), *args])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert (f"'training.workers' parameter of the config must be an int in the range "
            f"[1, {usable_cpus()}] (the CPUs this process may use). Got {args[1]} instead."
            in r.output), r.output
    assert not (tmp_path / "run").exists()
