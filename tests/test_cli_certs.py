"""Tests of the certificate commands (``poisoncert radius`` and ``delta``) on the real app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import poisoncert
from poisoncert import bounds
from poisoncert.certify import certify, jia_certify
from poisoncert.cli import app, error_line, main

runner = CliRunner()
SETTING = ["--scheme", "binomial", "--n", "13007", "--ns", "10"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_commands_registered():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "radius" in result.stdout and "delta" in result.stdout


# ---------------------------------------------------------------------------------------------
# radius
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme,expected", [("binomial", 881), ("with_replacement", 852),
                                             ("wor", 852)])
def test_radius_from_counts_json(scheme, expected):
    result = invoke("radius", "--scheme", scheme, "--n", "13007", "--ns", "10",
                    "--counts", "1000,0", "--T", "1000", "--alpha", "0.001", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    (res,) = out["results"]
    assert res["radius"] == expected and res["prediction"] == 0 and res["T"] == 1000
    # the bounds are moved outward by a relative 1e-9 (stats._REL_MARGIN) plus an ulp
    assert res["gap"] == pytest.approx(2 * 0.0005 ** (1 / 1000) - 1, rel=3e-9)
    assert out["setting"]["method"] == "bonferroni" and out["setting"]["model"] == "P6"
    assert out["setting"]["scheme"] == bounds.SelectionBound(scheme, 13007, ns=10).scheme
    assert "modification = 1" in out["setting"]["radius_unit"]


def test_radius_from_counts_matches_library():
    counts = np.array([[990, 10, 0], [500, 450, 50], [700, 200, 100]])
    text = ";".join(",".join(map(str, row)) for row in counts)
    result = invoke("radius", *SETTING, "--counts", text, "--T", "1200", "--alpha", "0.01",
                    "--method", "bonferroni_upper", "--model", "P3", "--json")
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)["results"]
    cert = certify(counts, scheme="binomial", n=13007, ns=10, model="P3", alpha=0.01,
                   method="bonferroni_upper", T=1200)
    assert [r["radius"] for r in res] == cert.radius.tolist()
    assert [r["prediction"] for r in res] == cert.prediction.tolist()
    assert [r["p1_lower"] for r in res] == cert.p1_lower.tolist()
    assert [r["p2_upper"] for r in res] == cert.p2_upper.tolist()
    assert res[1]["prediction"] == -1 and res[1]["radius"] == -1


def test_radius_jia_rule_matches_library():
    counts = np.array([[700, 200, 100], [900, 60, 40], [400, 350, 250]])
    text = ";".join(",".join(map(str, row)) for row in counts)
    args = ["--scheme", "with_replacement", "--n", "60000", "--ns", "30", "--counts", text,
            "--T", "1000", "--alpha", "0.001", "--method", "bonferroni_upper", "--json"]
    jia = invoke("radius", *args, "--rule", "jia")
    ours = invoke("radius", *args)
    assert jia.exit_code == 0 and ours.exit_code == 0, jia.output + ours.output
    got = json.loads(jia.stdout)
    assert got["setting"]["rule"] == "jia"
    want = jia_certify(counts, n=60000, ns=30, alpha=0.001, method="bonferroni_upper", T=1000)
    assert [r["radius"] for r in got["results"]] == want.radius.tolist()
    assert want.radius[1] > 0  # a real radius, not only abstentions
    # erratum 4: Jia et al.'s rounded condition never certifies more than ours
    mine = [r["radius"] for r in json.loads(ours.stdout)["results"]]
    assert all(a <= b for a, b in zip(want.radius.tolist(), mine, strict=True))


def test_radius_takes_the_rule_name_certificates_csv_writes():
    """certificates.csv, certify.json and predict's rows name Theorem 1's rule 'theorem1';
    ``radius --rule theorem1`` was refused ("must be one of 'ours', 'jia'"). It is ours."""
    args = ["--scheme", "wr", "--n", "100", "--ns", "10", "--counts", "9,1", "--json"]
    named = invoke("radius", *args, "--rule", "theorem1")
    assert named.exit_code == 0, named.output
    assert named.stdout == invoke("radius", *args, "--rule", "ours").stdout


def test_radius_names_its_rule_as_certificates_csv_and_predict_do():
    """``radius --json`` said ``"rule": "ours"`` (and its text ``rule ours``) where
    certificates.csv, certify.json and predict name the same rule ``theorem1``: now the one
    name everywhere; ``--rule ours`` is still taken (the option's old name for it)."""
    args = ["--scheme", "wr", "--n", "100", "--ns", "10", "--counts", "9,1"]
    for given in ([], ["--rule", "ours"], ["--rule", "theorem1"], ["--rule", "Theorem1"]):
        r = invoke("radius", *args, *given, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["setting"]["rule"] == "theorem1"
        text = invoke("radius", *args, *given).stdout.splitlines()
        assert "rule        theorem1" in text and not any("ours" in ln for ln in text)
    # the library's certificate names it so (what certificates.csv's rule column holds)
    assert certify(np.array([[9, 1]]), scheme="with_replacement", n=100, ns=10).rule == \
        json.loads(invoke("radius", *args, "--json").stdout)["setting"]["rule"]
    bad = invoke("radius", *args, "--rule", "levine")
    assert bad.exit_code == 1 and bad.stderr == (
        "error: The '--rule' parameter of radius must be one of 'theorem1', 'jia'. Got 'levine' "
        "instead.\n")


@pytest.mark.parametrize("args", [
    ["--scheme", "binomial", "--n", "100", "--ns", "5", "--counts", "90,10"],
    ["--scheme", "wr", "--n", "100", "--ns", "5", "--counts", "90,10", "--model", "P3"],
    ["--scheme", "wr", "--n", "100", "--ns", "5", "--gap", "0.5"],
])
def test_radius_jia_rule_outside_its_setting_is_one_clear_error(args):
    result = invoke("radius", *args, "--rule", "jia")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: The '--rule' parameter of radius")
    bad = invoke("radius", *args, "--rule", "levine")
    assert bad.exit_code == 1 and "'--rule' parameter" in bad.stderr and "'jia'" in bad.stderr


def test_radius_from_gap():
    result = invoke("radius", "--scheme", "wr", "--n", "13007", "--ns", "10", "--gap", "0.5",
                    "--json")
    assert result.exit_code == 0, result.output
    (res,) = json.loads(result.stdout)["results"]
    assert res == {"gap": 0.5, "radius": bounds.certified_radius(
        0.5, scheme="with_replacement", n=13007, ns=10)}
    result = invoke("radius", "--scheme", "binomial", "--n", "1000", "--p", "0.01",
                    "--gap", "-0.1", "--json")
    assert json.loads(result.stdout)["results"][0]["radius"] == -1


def test_radius_plain_output():
    result = invoke("radius", *SETTING, "--counts", "1000,0", "--alpha", "0.001")
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert lines["radius"].startswith("881") and "operation" in lines["radius"]
    assert lines["prediction"] == "0" and lines["method"] == "bonferroni"
    assert float(lines["p1_lower"]) > 0.99
    tie = invoke("radius", *SETTING, "--counts", "50,50")
    assert "ABSTAIN" in tie.stdout and "radius      -1" in tie.stdout


def test_radius_true_label_method():
    result = invoke("radius", *SETTING, "--counts", "90,10;90,10", "--method", "true_label",
                    "--labels", "0,1", "--alpha", "0.01", "--json")
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)["results"]
    assert [r["prediction"] for r in res] == [0, -1]


@pytest.mark.parametrize(
    "args,match",
    [
        # an option the library checks is named as radius's own (it said "of certify" and
        # "of certified_radius", the library functions radius calls)
        (["--counts", "990,10", "--alpha", "1.5"],
         "error: The '--alpha' parameter of radius must be a real number in the range "
         "[1e-100, 1). Got 1.5 instead."),
        (["--counts", "990,10", "--T", "500"], "error: The '--T' parameter of radius"),
        (["--counts", "990,10", "--method", "simuem"], "error: The '--method' parameter of radius"),
        (["--counts", "990,x"], "error: The '--counts' parameter of radius"),
        (["--counts", "990,10;5"], "error: The '--counts' parameter of radius"),
        (["--counts", "990,-10"], "error: The '--counts' parameter of radius"),
        (["--gap", "0.5", "--counts", "990,10"], "error: The '--gap' parameter of radius"),
        ([], "error: radius needs --gap or --counts"),
        (["--gap", "1.5"], "error: The '--gap' parameter of radius"),
        (["--gap", "0.5", "--model", "P9"], "error: The '--model' parameter of radius must be"),
    ],
)
def test_radius_errors_are_one_line(args, match):
    result = invoke("radius", *SETTING, *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(match)
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_radius_bad_scheme_and_missing_option():
    result = invoke("radius", "--scheme", "bootstrap", "--n", "100", "--ns", "5", "--gap", "0.1")
    assert result.exit_code == 1 and "'--scheme' parameter" in result.stderr
    usage = invoke("radius", "--n", "100", "--gap", "0.1")  # --scheme missing: a usage error
    assert usage.exit_code == 2


# ---------------------------------------------------------------------------------------------
# delta
# ---------------------------------------------------------------------------------------------


def test_delta_writes_png(tmp_path):
    import matplotlib.image

    out = tmp_path / "fig2.png"
    result = invoke("delta", "--out", str(out))
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(out)
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 200  # two panels side by side
    assert "n = 13007, ns = 10" in result.stdout and "n = 50000, ns = 1000" in result.stdout
    assert f"wrote {out}" in result.stdout.replace("\n", "")


def test_delta_killed_while_writing_its_png_leaves_no_temporary_file_after_a_rerun(tmp_path):
    """delta --out killed between its write and its rename (the fault hook) left a
    ``.tmp-fig.png.*`` beside the figure, and the next delta --out left it there too; the
    next write of the figure now removes it."""
    out = tmp_path / "fig.png"
    out.write_bytes(b"old")
    src = str(Path(poisoncert.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": src, "POISONCERT_TEST_FAULT": "write:fig.png"}
    proc = subprocess.run([sys.executable, "-m", "poisoncert.cli", "delta", "--steps", "2",
                           "--out", str(out)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert out.read_bytes() == b"old"  # the old file, whole
    assert [p.name[:13] for p in tmp_path.iterdir() if p != out] == [".tmp-fig.png."]
    result = invoke("delta", "--steps", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(tmp_path.iterdir()) == [out]


def test_delta_table_json_matches_bounds():
    result = invoke("delta", "--json", "--steps", "5")
    assert result.exit_code == 0, result.output
    tables = json.loads(result.stdout)["tables"]
    assert [(t["n"], t["ns"]) for t in tables] == [(13007, 10), (50000, 1000)]
    for t in tables:
        assert set(t["delta"]) == set(bounds.SCHEMES)
        assert t["rho"][0] == 0 and len(t["rho"]) == 6
        for scheme, values in t["delta"].items():
            # the same computation, and JSON round-trips floats exactly: equal
            np.testing.assert_array_equal(
                values, bounds.delta(np.array(t["rho"]), scheme=scheme, n=t["n"], ns=t["ns"]))
            # the default range ends where delta reaches 1 for every scheme
            assert values[-1] >= 1.0
        assert min(t["delta"][s][-2] for s in bounds.SCHEMES) < 1.0


def test_delta_single_setting_and_rho_max():
    result = invoke("delta", "--n", "1000", "--ns", "20", "--rho-max", "40", "--steps", "4",
                    "--model", "P1", "--json")
    assert result.exit_code == 0, result.output
    (t,) = json.loads(result.stdout)["tables"]
    assert t["rho"] == [0, 10, 20, 30, 40] and t["model"] == "P1" and t["p"] == 0.02
    bad = invoke("delta", "--n", "1000")
    assert bad.exit_code == 1 and "'--ns' parameter of delta" in bad.stderr
    bad = invoke("delta", "--rho-max", "0")
    assert bad.exit_code == 1 and "'--rho-max' parameter" in bad.stderr


@pytest.mark.parametrize(("args", "option"), [
    (["--steps", "0"], "--steps"),
    (["--rho-max", "0"], "--rho-max"),
    (["--model", "P9"], "--model"),
    (["--scheme", "bootstrap"], "--scheme"),
    (["--n", "10"], "--ns"),  # the one missing
    (["--ns", "5"], "--n"),
    (["--n", "0", "--ns", "1"], "--n"),
    (["--n", "10", "--ns", "0"], "--ns"),
    (["--n", "10", "--ns", "10", "--scheme", "binomial"], "--ns"),
    (["--out", "f.jpg"], "--out"),
])
def test_delta_errors_name_their_option_as_typed(args, option):
    """Every refusal of a delta option names it one way, as the user types it: the line said
    "--rho-max: The 'rho_max' parameter" (a Python name behind the flag) but "The 'steps'
    parameter" for --steps; now "The '--steps' parameter of delta", like predict's '--out'
    and certify's '--rhos'."""
    r = invoke("delta", *args)
    assert r.exit_code == 1 and r.stdout == "", r.output
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"error: The '{option}' parameter of delta must be "), line


def test_delta_marks_a_scheme_the_setting_does_not_define_and_tabulates_the_others(tmp_path):
    """At ns = n binomial selection is not defined (p = ns / n = 1) while both bagging schemes
    are; beyond n only bagging with replacement is (docs/certificates.md). delta refused the
    whole setting for the one scheme; now the defined schemes' values, the same numbers as
    bounds.delta, and the others n/a with their reason, once; refused only where every scheme
    asked for is undefined."""
    r = invoke("delta", "--n", "10", "--ns", "10", "--rho-max", "3", "--steps", "3", "--json")
    assert r.exit_code == 0, r.output
    (t,) = json.loads(r.stdout)["tables"]
    assert list(t["delta"]) == ["without_replacement", "with_replacement"]
    assert t["undefined"] == {"binomial": "ns must be an int in the range [1, 9] for the "
                                          "binomial scheme (p = ns / n must be below 1; n = 10)"}
    for scheme, values in t["delta"].items():
        want = bounds.delta(np.array(t["rho"]), scheme=scheme, n=10, ns=10)
        np.testing.assert_array_equal([np.inf if v is None else v for v in values], want)
    text = invoke("delta", "--n", "10", "--ns", "10", "--rho-max", "3", "--steps", "3")
    assert text.exit_code == 0, text.output
    rows = [line.split("│")[1:-1] for line in text.stdout.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in row] for row in rows] == [
        [str(rho), *(f"{_inf(v):.6g}" for v in (t["delta"]["without_replacement"][i],
                                                 t["delta"]["with_replacement"][i])), "n/a"]
        for i, rho in enumerate(t["rho"])]
    assert text.stdout.splitlines()[-1] == (
        "n/a: binomial is not defined for n = 10, ns = 10: ns must be an int in the range "
        "[1, 9] for the binomial scheme (p = ns / n must be below 1; n = 10).")
    assert text.stdout.count("n/a:") == 1
    # beyond n: with replacement alone; the default range is its own
    (t,) = json.loads(invoke("delta", "--n", "10", "--ns", "11", "--json").stdout)["tables"]
    assert list(t["delta"]) == ["with_replacement"] and set(t["undefined"]) == {
        "without_replacement", "binomial"}
    assert t["delta"]["with_replacement"][-1] >= 1.0
    # the figure draws the defined schemes
    out = tmp_path / "f.png"
    assert invoke("delta", "--n", "10", "--ns", "10", "--out", str(out)).exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # asked for the undefined scheme alone: one refusal line, as before
    r = invoke("delta", "--n", "10", "--ns", "10", "--scheme", "binomial")
    assert r.exit_code == 1 and r.stdout == "" and r.stderr.splitlines() == [
        "error: The '--ns' parameter of delta must be an int in the range [1, 9] for the "
        "binomial scheme (p = ns / n must be below 1; n = 10). Got 10 instead."]
    r = invoke("delta", "--n", "10", "--ns", "0")  # no scheme is defined: refused
    assert r.exit_code == 1 and r.stderr.startswith("error: The '--ns' parameter of delta")
    r = invoke("delta", "--scheme", "bootstrap")
    assert r.exit_code == 1 and "'--scheme' parameter of delta" in r.stderr


def test_delta_scheme_option_keeps_each_schemes_values():
    """--scheme picks columns; a scheme's values are the ones it has beside the others."""
    args = ("delta", "--n", "1000", "--ns", "20", "--rho-max", "40", "--steps", "4", "--json")
    (full,) = json.loads(invoke(*args).stdout)["tables"]
    assert full["undefined"] == {}
    (one,) = json.loads(invoke(*args, "--scheme", "wr", "--scheme", "3").stdout)["tables"]
    assert list(one["delta"]) == ["with_replacement", "binomial"]
    assert one["rho"] == full["rho"]
    assert all(one["delta"][s] == full["delta"][s] for s in one["delta"])
    # the table's title speaks of binomial selection only where a binomial column is shown
    text = invoke(*args[:-1], "--scheme", "wr").stdout
    assert "model P6\n" in text and "binomial" not in text
    assert "(binomial selection: p = ns / n)" in invoke(*args[:-1]).stdout
    # nor where the binomial column is all n/a; its reason names no option delta lacks
    text = invoke("delta", "--n", "1", "--ns", "1").stdout
    assert "n/a: binomial is not defined" in text and "binomial selection" not in text
    assert "give 'p'" not in text


def _inf(v):
    return float("inf") if v is None else v


def test_delta_unwritable_output_is_one_line(tmp_path):
    result = invoke("delta", "--rho-max", "5", "--out", str(tmp_path / "missing" / "f.png"))
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")


# ---------------------------------------------------------------------------------------------
# main() and the module entry point
# ---------------------------------------------------------------------------------------------


def test_errors_name_the_option_as_typed_whoever_checked_it():
    """--ns 0 is checked by SelectionBound, whose errors radius words as its own; --ns left
    out for a scheme that needs it too (not the internal SelectionBound's name); --rho-max 0
    names the option as typed, with its dashes (it was "--rho-max: The 'rho_max' parameter");
    --counts, radius's own parameter, too (it was "The 'counts' parameter of radius")."""
    r = invoke("radius", "--scheme", "wr", "--n", "100", "--ns", "0", "--gap", "0.5")
    assert r.exit_code == 1 and r.stderr.startswith(
        "error: The '--ns' parameter of radius must be an int >= 1. Got 0 instead.")
    r = invoke("radius", "--scheme", "binomial", "--n", "100", "--gap", "0.5")
    assert r.exit_code == 1 and r.stderr.startswith("error: The '--p' parameter of radius must "
                                                    "be a real number in the range (0, 1)")
    r = invoke("delta", "--rho-max", "0")
    assert r.exit_code == 1 and r.stderr.startswith("error: The '--rho-max' parameter of delta")
    r = invoke("radius", *SETTING, "--counts", "990,x")
    assert r.exit_code == 1 and r.stderr.startswith("error: The '--counts' parameter of radius")


def test_main_turns_library_errors_into_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["radius", *SETTING, "--gap", "2"])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: The '--gap' parameter of radius")
    assert error_line(ValueError("a\nb")) == "error: a b"


def test_python_m_poisoncert_cli_error_exit_code():
    src = str(Path(poisoncert.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "poisoncert.cli", "radius", *SETTING, "--counts", "990,10",
         "--alpha", "1.5"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: The '--alpha' parameter of radius must be a real number in the range "
        "[1e-100, 1). Got 1.5 instead."
    ]


# the console script's main with one object whose teardown takes a second: Python's own
# shutdown (module teardown and garbage collection, 0.2-0.9 s after certify or train), after
# it reset a handled SIGINT to the system's default
_SLOW_EXIT = """\
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
class Slow:
    def __del__(self):
        print("tearing down", file=sys.stderr, flush=True)
        time.sleep(1.5)
slow = Slow()
from poisoncert._console import main
sys.argv[1:] = {args!r}
main()
"""


def test_ctrl_c_once_a_command_ended_leaves_its_exit_code():
    """Ctrl-C in the tenths of a second after a command printed its last line (the
    interpreter's shutdown) ended it silently with SIGINT's status (-2; 130 in a shell)
    although its outputs were complete. The console script now ignores Ctrl-C once the
    command has ended: the exit code is the command's."""
    src = str(Path(poisoncert.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["radius", *SETTING, "--counts", "990,10"]
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_EXIT.format(args=args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline() == "tearing down\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == "", (proc.returncode, err)
    assert out == subprocess.run([sys.executable, "-m", "poisoncert.cli", *args], env=env,
                                 capture_output=True, text=True, timeout=60).stdout


_HANGING_EXIT = """\
import signal, sys, threading
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
from poisoncert import _console, cli
real = cli.main
def main():
    threading.Thread(target=threading.Event().wait).start()  # no daemon, never ends
    try:
        real()
    finally:
        print("ended", file=sys.stderr, flush=True)
cli.main = main
sys.argv[1:] = {args!r}
_console.main()
"""


def test_ctrl_c_stops_a_shutdown_that_hangs_once_its_grace_is_over():
    """Once a command ended, the console script ignored Ctrl-C for the rest of the process: a
    shutdown that hung (here a thread that is no daemon and never ends) could be stopped by
    SIGTERM alone. Ctrl-C is still ignored for ``GRACE_S`` seconds after the command ended
    (its exit code would stand), then stops the process with one line and status 130."""
    from poisoncert._console import GRACE_S

    src = str(Path(poisoncert.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["radius", *SETTING, "--counts", "990,10"]
    proc = subprocess.Popen([sys.executable, "-c", _HANGING_EXIT.format(args=args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr.readline() == "ended\n"  # the command has ended
        t_end = time.monotonic()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # within the grace: ignored
        time.sleep(1.0)
        assert proc.poll() is None
        time.sleep(max(0.0, GRACE_S + 0.5 - (time.monotonic() - t_end)))
        assert proc.poll() is None  # the shutdown hangs
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, err)
    assert out == subprocess.run([sys.executable, "-m", "poisoncert.cli", *args], env=env,
                                 capture_output=True, text=True, timeout=60).stdout  # whole
    assert err == ("interrupted while shutting down: the command had ended, its outputs are "
                   "complete.\n"), err


def test_ctrl_c_stopping_a_hanging_shutdown_keeps_a_failed_commands_exit_code():
    """Ctrl-C after ``GRACE_S`` stopped a hanging shutdown with 130 also where the command
    had failed (exit 1): a script saw an interruption, not the error its line named. A
    failed command's status now stands (a succeeded one's 130: the test above)."""
    from poisoncert._console import GRACE_S

    src = str(Path(poisoncert.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["radius", *SETTING, "--counts", "990,10", "--alpha", "1.5"]  # refused: exit 1
    proc = subprocess.Popen([sys.executable, "-c", _HANGING_EXIT.format(args=args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        error = proc.stderr.readline()
        assert error.startswith("error: The '--alpha' parameter of radius"), error
        assert proc.stderr.readline() == "ended\n"  # the command has ended
        time.sleep(GRACE_S + 0.5)
        assert proc.poll() is None  # the shutdown hangs
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1, (proc.returncode, err)
    assert out == "" and err == ("interrupted while shutting down: the command had ended with "
                                 "exit status 1, which it keeps.\n"), err


@pytest.mark.parametrize(("code", "status"), [(None, 0), (0, 0), (1, 1), (130, 130),
                                              (256, 0), (-1, 255), (True, 1), ("bye", 1)])
def test_console_exit_status_is_the_systems(code, status):
    """The status the stopped shutdown keeps is the one ``sys.exit(code)`` would have
    given."""
    from poisoncert._console import _exit_status

    assert _exit_status(code) == status
    assert subprocess.run([sys.executable, "-c", f"import sys; sys.exit({code!r})"],
                          capture_output=True, timeout=60).returncode == status


def test_delta_long_tables_print_as_plain_columns():
    """More than 1,000 rows print as plain right-aligned columns (rich took ~50 s to lay out
    100,000), with the values of --json."""
    args = ("delta", "--n", "1000000", "--ns", "10", "--rho-max", "4000", "--steps", "2000")
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[1].split() == ["rho", *bounds.SCHEMES] and "┃" not in r.stdout
    (t,) = json.loads(invoke(*args, "--json").stdout)["tables"]
    assert len(lines) == 2 + len(t["rho"]) == 2 + 2001
    for line, i in ((lines[2], 0), (lines[-1], -1)):
        assert line.split() == [str(t["rho"][i])] + [f"{t['delta'][s][i]:.6g}"
                                                     for s in bounds.SCHEMES]
    short = invoke("delta", "--n", "1000000", "--ns", "10", "--rho-max", "40", "--steps", "4")
    assert "┃" in short.stdout  # short tables keep rich's layout


@pytest.mark.parametrize(("args", "line"), [
    (["--scheme", "binomial", "--p", "0.1", "--ns", "10"],
     "The '--ns' parameter of radius must be left out when '--p' is given (binomial "
     "selection: give one of '--ns' and '--p'; ns means p = ns / n). Got 10 instead."),
    (["--scheme", "binomial"],
     "The '--p' parameter of radius must be a real number in the range (0, 1) for the "
     "binomial scheme (or give '--ns', meaning p = ns / n). Got nothing (it was not given) "
     "instead."),
    (["--scheme", "without_replacement", "--p", "0.1"],
     "The '--p' parameter of radius must be left out for --scheme without_replacement. Got "
     "0.1 instead."),
])
def test_a_refusal_names_the_commands_other_options_as_typed_too(args, line):
    """What a command's own refusal says after "must be" names its other options as typed
    ('--p', '--scheme without_replacement'): it said 'p', 'ns' and scheme='without_replacement',
    the Python words, which the Python API keeps (the library's message below)."""
    r = invoke("radius", "--n", "100", "--gap", "0.5", *args)
    assert r.exit_code == 1 and r.stderr.strip() == "error: " + line, r.stderr
    with pytest.raises(ValueError, match=r"left out for scheme='without_replacement'|"
                                         r"None for scheme='without_replacement'"):
        bounds.certified_radius(0.5, scheme="without_replacement", n=100, p=0.1, model="P6")


def test_a_command_line_is_told_to_leave_an_option_out_not_that_it_must_be_none():
    """Library errors reached a command line in Python's words: "The 'ns' parameter of radius
    must be None when 'p' is given", "... must be an int ... Got None instead." A user who
    typed a command gave no None: the line says "must be left out" and "Got nothing (it was
    not given)". A value typed as the text 'None' is echoed as typed, in quotes."""
    r = invoke("radius", "--scheme", "binomial", "--n", "100", "--p", "0.1", "--ns", "10",
               "--gap", "0.5")
    assert r.exit_code == 1 and r.stderr.startswith(
        "error: The '--ns' parameter of radius must be left out when '--p' is given"), r.stderr
    r = invoke("radius", "--scheme", "wr", "--n", "100", "--gap", "0.5")
    assert r.exit_code == 1 and r.stderr.rstrip().endswith(
        "must be an int for the with_replacement scheme. Got nothing (it was not given) "
        "instead."), r.stderr
    r = invoke("radius", "--scheme", "None", "--n", "100", "--ns", "10", "--gap", "0.5")
    assert r.exit_code != 0 and "None" in r.stderr and "not given" not in r.stderr, r.stderr
    assert "None" not in error_line(ValueError(
        "The 'p' parameter of radius must be None for this scheme. Got None instead."))
