"""experiments/run.py's attacks and updates name real runs with valid settings, and the report
puts its issue-13 sections in place of their earlier text (report.py --only-agg)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module("run"), importlib.import_module("report")
    finally:
        sys.path.remove(str(EXPERIMENTS))


def test_attacks_and_updates_name_runs_with_valid_settings(modules):
    from poisoncert.experiment.attack import AttackSettings

    run, _ = modules
    names = {n for items in run.GROUPS.values() for n, _, _ in items}
    for name, settings in run.ATTACKS.items():
        assert name in names
        AttackSettings(**settings)
    assert set(run.UPDATES) <= names


def test_splice_replaces_the_issue_13_part_only(modules):
    _, report = modules
    text = ("# R\n\n## Summary\n\nx\n\n## DPA baseline on MNIST\n\ny\n\n"
            "## Figure 2: delta\n\nz\n")
    part = "## Summary of issue 13 (a)\n\n- one.\n\n## Equal-compute comparison on MNIST: b\n\nc\n"
    once = report.splice(text, part)
    assert once.index("## DPA baseline") < once.index(part) < once.index("## Figure 2")
    assert report.splice(once, part) == once
    newer = part.replace("one", "two")
    twice = report.splice(once, newer)
    assert "one" not in twice and "two" in twice and "## DPA baseline on MNIST\n\ny" in twice


def test_replace_section_replaces_one_section_and_names_a_missing_one(modules):
    _, report = modules
    text = "# R\n\n## A\n\na\n\n## CIFAR-10\n\nold\n\n## B\n\nb\n"
    new = report.replace_section(text, "## CIFAR-10", "## CIFAR-10 (x)\n\nnew\n")
    assert new == "# R\n\n## A\n\na\n\n## CIFAR-10 (x)\n\nnew\n\n## B\n\nb\n"
    # a part ending in a blank line (the report's parts do) gets one, not two, before "## B"
    assert report.replace_section(text, "## CIFAR-10", "## CIFAR-10 (x)\n\nnew\n\n") == new
    last = report.replace_section("# R\n\n## CIFAR-10\n\nold\n", "## CIFAR-10", "## CIFAR-10\n")
    assert last == "# R\n\n## CIFAR-10\n"
    with pytest.raises(SystemExit, match="no section '## C' in the report"):
        report.replace_section("# R\n\n## A\n", "## C", "x")


def test_update_summary_replaces_a_bullet_or_adds_it(modules):
    _, report = modules
    text = "# R\n\n## Summary\n\n- MNIST 1/7: a.\n- DPA on MNIST: b.\n\n## Next\n\n- MNIST 1/7: x\n"
    once = report.update_summary(text, "## Summary\n- CIFAR-10, ResNet-18: c.\n")
    assert once == ("# R\n\n## Summary\n\n- MNIST 1/7: a.\n- DPA on MNIST: b.\n"
                    "- CIFAR-10, ResNet-18: c.\n\n## Next\n\n- MNIST 1/7: x\n")
    twice = report.update_summary(once, "## Summary\n- CIFAR-10, ResNet-18: d.\n")
    assert twice == once.replace("c.", "d.")
    assert report.update_summary("# R\n", "## Summary\n- A: b\n") == "# R\n"


def test_update_wall_rows_replaces_a_run_s_row_or_adds_it(modules):
    """report.py --only puts its runs' rows in the wall-time table (the CIFAR-10 CPU run's row
    kept an earlier run's base accuracy and time beside the section's newer ones)."""
    _, report = modules
    text = ("# R\n\n## Wall times of all runs\n\nw\n\n| run | T | base |\n|---|---|---|\n"
            "| a | 1 | 30.4% |\n| b | 2 | 1.0% |\n\n## Z\n\nz\n")
    new = report.update_wall_rows(text, [["a", 1, "30.5%"], ["c", 3, "2.0%"]])
    assert new == text.replace("| a | 1 | 30.4% |\n| b | 2 | 1.0% |\n",
                               "| a | 1 | 30.5% |\n| b | 2 | 1.0% |\n| c | 3 | 2.0% |\n")
    assert report.update_wall_rows(new, [["a", 1, "30.5%"]]) == new
    assert report.update_wall_rows("# R\n", [["a", 1, "x"]]) == "# R\n"


def test_update_groups_lists_every_group_of_run_py(modules):
    run, report = modules
    text = "x `python experiments/run.py GROUP` (groups: `a`, `b`); each run y"
    new = report.update_groups(text)
    assert new == ("x `python experiments/run.py GROUP` (groups: "
                   + ", ".join(f"`{g}`" for g in run.GROUPS) + "); each run y")
    assert "`cifar10_gpu`" in new and report.update_groups("no list") == "no list"


def test_section_text_and_the_runs_a_section_lists_as_not_run(modules):
    _, report = modules
    text = ("# R\n\n## CIFAR-10 (x)\n\n| cifar10_cpu | 1 |\n\n*Not run (yet) in this report: "
            "cifar10_binomial, cifar10_gpu_x; make them with `cifar10_cpu`.*\n\n## B\n\nb\n")
    sec = report.section_text(text, "## CIFAR-10")
    assert sec.startswith("\n## CIFAR-10 (x)") and "## B" not in sec
    assert report.section_text(text, "## Z") == ""
    assert report.not_run_in(sec, "cifar10_binomial") is True
    assert report.not_run_in(sec, "cifar10_cpu") is False  # only named after the ';'


def test_small_shares_print_as_below_a_tenth_not_as_zero(modules):
    _, report = modules
    assert [report.small_pct(x) for x in (0.0, 0.0003, 0.0005, 0.1797)] == [
        "0.0%", "<0.1%", "0.1%", "18.0%"]


def test_the_update_table_gives_the_share_of_training_saved(modules, tmp_path):
    """16.6 s of update against 1896 s of training saves 1879 s: 99.1% of the training (the
    row printed the update's own share, 0.9%, as the share saved)."""
    import json
    from types import SimpleNamespace

    import report_agg

    folder = tmp_path / "mnist_agg_dpa_remove10"
    folder.mkdir()
    (folder / "update.json").write_text(json.dumps(
        {"removed": list(range(10)), "n_retrained": 10, "T": 1200, "update_s": 16.6,
         "update_train_s": 10.8, "full_train_s": 1896.0}))
    parts: list[str] = []
    rep = SimpleNamespace(runs_dir=tmp_path, add=parts.append, summary={})
    report_agg.update(rep)
    assert "| time saved | 1879 s (99.1% of the run's training) |" in "\n".join(parts)


@pytest.mark.parametrize("case", ["no folder", "no runs", "no report"])
def test_report_refuses_a_runs_dir_without_runs_and_writes_nothing(modules, tmp_path, case,
                                                                   monkeypatch):
    """A mistyped --runs-dir used to write a report listing every run as not run over --out
    (docs/results.md by default); --only-agg without an --out file was a FileNotFoundError
    traceback that left an empty figures/ folder."""
    _, report = modules
    runs = tmp_path / "runs"
    out = tmp_path / "doc" / "results.md"
    args = ["--runs-dir", str(runs), "--out", str(out)]
    if case != "no folder":
        runs.mkdir()
    if case == "no report":  # a run found, no report to put the sections in
        monkeypatch.setattr(report, "load_runs", lambda path: {"mnist17_ns10_binomial": None})
        args.append("--only-agg")
    with pytest.raises(SystemExit) as e:
        report.main(args)
    assert str(e.value.code).startswith("report: --")
    assert not (tmp_path / "doc").exists()


def test_the_attack_section_says_a_trial_is_judged_by_its_operations(modules):
    """``attack_run`` files a trial within the radius by the operations it made (fewer than
    ``r`` where the class has fewer samples), not by ``r``: the report says so."""
    from types import SimpleNamespace

    import report_agg

    parts: list[str] = []
    report_agg.attacks(SimpleNamespace(add=parts.append, runs={}, summary={}))
    text = " ".join(" ".join(parts).split())
    assert "radius >= r." not in text
    assert "a radius of at least the operations the trial made" in text


def test_a_report_figure_interrupted_while_drawn_keeps_the_earlier_one(modules, tmp_path,
                                                                       monkeypatch):
    """report.py redraws docs/figures/*.png in place: a Ctrl-C while matplotlib wrote one
    left a truncated PNG where the committed figure was; now the earlier file stays whole."""
    from matplotlib.figure import Figure
    from test_plots import interrupt_savefig

    _, report = modules
    rep = report.Report({}, tmp_path, tmp_path)
    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    rep.fig(fig, "a.png")
    before = (tmp_path / "a.png").read_bytes()
    interrupt_savefig(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        rep.fig(fig, "a.png")
    assert (tmp_path / "a.png").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_only_agg_says_when_and_from_which_revision_its_sections_are(modules, tmp_path,
                                                                     monkeypatch):
    """report.py --only-agg spliced the issue-13 sections under the report's top line (one
    date and code revision) without saying they were regenerated later: docs/results.md gave
    the DPA ensemble of mnist_dpa (60.0% / 43.6% at rho = 150 / 200) and the same ensemble
    trained again by a later engine as mnist_agg_dpa (59.9% / 43.7%) as if from one revision.
    Like --only, it now writes when, at which revision and from which runs; a second splice
    replaces that line with its own."""
    _, report = modules
    runs = tmp_path / "runs"
    runs.mkdir()
    out = tmp_path / "doc" / "results.md"
    out.parent.mkdir()
    top = "Report generated 2026-11-25 02:59 UTC at code revision `7341474f2f3e`.\n"
    out.write_text(f"# R\n\n{top}\n## Summary\n\n- a.\n\n## DPA baseline on MNIST\n\ny\n\n"
                   f"{report.AGG_END}\n\nz\n")
    part = "## Summary of issue 13 (a)\n\n- one.\n\n## Equal-compute comparison on MNIST: b\n"
    monkeypatch.setattr(report, "load_runs", lambda path: {"mnist_agg_dpa": None})
    monkeypatch.setattr(report, "agg_parts", lambda *args: [part])
    monkeypatch.setattr(report, "git_revision", lambda root: {"commit": "a" * 40,
                                                              "dirty": False})
    for _ in range(2):
        assert report.main(["--runs-dir", str(runs), "--out", str(out), "--only-agg"]) == 0
        text = out.read_text()
        assert text.count("regenerated") == 1 and top in text
        note = text[text.index(part) + len(part):text.index(report.AGG_END)]
        assert note.strip().startswith("*The issue-13 sections (from 'Summary of issue 13' "
                                       "to here) regenerated ")
        assert ("at code revision `aaaaaaaaaaaa` (`python experiments/report.py --only-agg`), "
                "from the runs it names (each made at the revision its manifest gives); the "
                "rest of the report is from the revision at the top.*") in note


def test_a_run_whose_certify_was_killed_midway_is_not_reported(modules, tmp_path, monkeypatch):
    """certify removes its earlier outputs, then writes the new ones with certify.json last;
    killed midway it leaves certified_accuracy.csv without certify.json (an earlier
    certify's not yet removed, or its own before the summary). The report took any run with
    a certified_accuracy.csv and votes.npy for a certified one (and its CIFAR-10 section then
    read a certify.json that is not there); it now takes the whole sets only."""
    run, report = modules
    whole, half = [n for items in run.GROUPS.values() for n, _, _ in items][:2]
    for name in (whole, half):
        (tmp_path / name).mkdir()
        for f in ("certified_accuracy.csv", "votes.npy", "certify.json"):
            if not (name == half and f == "certify.json"):
                (tmp_path / name / f).write_text("x")
    monkeypatch.setattr(report, "Run", lambda p: p.name)
    assert report.load_runs(tmp_path) == {whole: whole}


def cifar_report(out: Path, not_run: str = "cifar10_binomial", bullet: bool = True,
                 head: str | None = None) -> str:
    """A report whose CIFAR-10 section shows two paper-scale runs (three rows each, as
    ``Report.cifar`` writes them, under its columns or ``head``), their figures, revisions
    and Summary entries, and lists ``not_run`` as not run (with the ``modules`` fixture)."""
    report = sys.modules["report"]
    head = report.table(report.CIFAR_HEAD, []) if head is None else head
    rows = "".join(f"| cifar10_{s} | {short} | {m} | 34.4% | 49.7% | 18.0% | 10.3% | 4.9% | "
                   f"2.0% | 0.4% | <0.1% | 5 | 27 | {wall} |\n"
                   for s, short in (("without_replacement", "without repl. (1)"),
                                    ("with_replacement", "with repl. (2)"))
                   for m, wall in (("bonferroni (the config's)", "374 s + 0.3 s"),
                                   ("bonferroni_upper", ""), ("auto (pairwise)", "")))
    entries = "; ".join(f"{short}: vote accuracy 49.7%, certified accuracy at rho = 0 / 10 "
                        f"18.0% / 4.9% (bonferroni); wall {w}"
                        for short, w in (("without repl. (1)", "1 s"), ("with repl. (2)", "2 s")))
    text = ("# R\n\n## Summary\n\n- MNIST 1/7: z.\n"
            + (f"- CIFAR-10, ResNet-18, ns = 1000, T = 500 (the paper's scale, one GPU): "
               f"{entries} (see 'CIFAR-10').\n" if bullet else "")
            + "\n## CIFAR-10 (Figure 4, bottom row)\n\nPaper scale.\n\n" + head + "\n"
            + rows + "\nThe runs' manifests name the code revision (`1111111aaaaa` for "
            "cifar10_without_replacement; `2222222bbbbb` for cifar10_with_replacement).\n\n"
            "![fig4_cifar10_without_replacement.png](figures/fig4_cifar10_without_replacement"
            ".png)\n\n![fig4_cifar10_with_replacement.png](figures/fig4_cifar10_with_replacement"
            f".png)\n\n*Not run (yet) in this report: {not_run}; make them with x.*\n\n"
            "## DPA baseline on MNIST\n\nb\n")
    out.parent.mkdir(exist_ok=True)
    (out.parent / "figures").mkdir(exist_ok=True)
    out.write_text(text)
    return text


@pytest.fixture()
def no_runs(modules, tmp_path, monkeypatch):
    """An empty --runs-dir, a fixed code revision; the report's arguments."""
    _, report = modules
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(report, "git_revision", lambda root: {"commit": "c" * 40,
                                                              "dirty": False})
    return ["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "doc" / "results.md"),
            "--only", "cifar"]


def rows_of(report, text: str, name: str) -> list[str]:
    return [line for line in report.section_text(text, "## CIFAR-10").splitlines()
            if line.startswith(f"| {name} |")]


def test_keep_absent_keeps_rows_the_section_also_lists_as_not_run(modules, tmp_path, no_runs):
    """A section that shows a run's rows and also names it in its "Not run (yet)" line (an
    edited report): ``--only cifar`` took the run for one not shown, so it dropped the rows,
    figure, Summary entry and revision without refusing, with ``--keep-absent`` too; the rows
    now count as showing the run."""
    _, report = modules
    out = tmp_path / "doc" / "results.md"
    old = cifar_report(out, not_run="cifar10_with_replacement, cifar10_binomial")
    for name in ("without_replacement", "with_replacement"):
        (out.parent / "figures" / f"fig4_cifar10_{name}.png").write_bytes(b"png")
    with pytest.raises(SystemExit, match="would drop cifar10_without_replacement, "
                                         "cifar10_with_replacement, which"):
        report.main(no_runs)
    assert out.read_text() == old
    report.main(no_runs + ["--keep-absent"])
    new = out.read_text()
    for name in ("cifar10_without_replacement", "cifar10_with_replacement"):
        assert rows_of(report, new, name) == rows_of(report, old, name) and len(
            rows_of(report, old, name)) == 3
        assert f"![fig4_{name}.png](figures/fig4_{name}.png)" in new
    assert "(`1111111aaaaa` for cifar10_without_replacement; `2222222bbbbb` for " \
           "cifar10_with_replacement)" in new
    assert [line for line in new.splitlines() if line.startswith("- CIFAR-10")] == [
        line for line in old.splitlines() if line.startswith("- CIFAR-10")]
    assert "*Not run (yet) in this report: cifar10_binomial; make" in new


def test_keep_absent_says_what_it_kept_and_writes_no_empty_summary_bullet(modules, tmp_path,
                                                                          no_runs):
    """``--keep-absent`` said it kept "the rows, figure and Summary entry" of each run also
    where the figure's file was gone (its link left out) or the Summary gave no entry, and
    with no entry left it wrote the bullet "...one GPU):  (see 'CIFAR-10')." and "the code
    revision ()"; it now names what it kept and what it could not, and writes no empty
    bullet or parentheses."""
    _, report = modules
    out = tmp_path / "doc" / "results.md"
    old = cifar_report(out, bullet=False).replace("`1111111aaaaa` for "
                                                  "cifar10_without_replacement; ", "")
    out.write_text(old.replace("(`2222222bbbbb` for cifar10_with_replacement)", "(`?` for "
                               "cifar10_with_replacement)"))
    (out.parent / "figures" / "fig4_cifar10_with_replacement.png").write_bytes(b"png")
    report.main(no_runs + ["--keep-absent"])
    new = out.read_text()
    assert "- CIFAR-10" not in new and "(`?` for cifar10_with_replacement)" in new
    assert "![fig4_cifar10_without_replacement.png]" not in new
    assert "![fig4_cifar10_with_replacement.png](figures/fig4_cifar10_with_replacement.png)" \
        in new
    assert ("Kept from the report before this one, as it gave them: the rows of "
            "cifar10_without_replacement (its figure figures/fig4_cifar10_without_replacement"
            ".png is not there); the rows and figure of cifar10_with_replacement "
            "(`--keep-absent`") in new
    assert "(`python experiments/report.py --only cifar --keep-absent`)" in new
    out.write_text(old.replace("(`2222222bbbbb` for cifar10_with_replacement)", ""))
    report.main(no_runs + ["--keep-absent"])
    assert "revision ()" not in out.read_text()


@pytest.mark.parametrize("case", ["refused", "both"])
def test_only_refused_writes_nothing_and_takes_one_part(modules, tmp_path, no_runs, case):
    """``--only cifar`` refusing to drop the runs its section shows made ``figures/`` beside
    --out first; ``--only cifar --only-agg`` regenerated the CIFAR-10 section and ignored
    --only-agg without a word. Both are now one line, with nothing written."""
    _, report = modules
    out = tmp_path / "doc" / "results.md"
    old = cifar_report(out)
    (out.parent / "figures").rmdir()
    args = no_runs + (["--only-agg", "--keep-absent"] if case == "both" else [])
    with pytest.raises(SystemExit, match="^report: --only cifar (would drop|and --only-agg)"):
        report.main(args)
    assert out.read_text() == old and [p.name for p in out.parent.iterdir()] == ["results.md"]


def test_keep_absent_refuses_rows_under_columns_the_report_no_longer_writes(modules, tmp_path,
                                                                            no_runs):
    """Kept rows go under this report's columns: rows written under other ones (a radius
    added to the table since) would have every cell shifted under the wrong heading. One line,
    nothing written."""
    _, report = modules
    out = tmp_path / "doc" / "results.md"
    head = report.table([c for c in report.CIFAR_HEAD if c != "rho=25"], [])
    old = cifar_report(out, head=head)
    with pytest.raises(SystemExit, match=r"^report: --keep-absent cannot keep the rows of "
                                         r"cifar10_without_replacement: they sit under the "
                                         r"columns '\| run \| scheme .*rho=20 \| median"):
        report.main(no_runs + ["--keep-absent"])
    assert out.read_text() == old
    assert sorted(p.name for p in out.parent.iterdir()) == ["figures", "results.md"]
    assert not any((out.parent / "figures").iterdir())


def test_only_figure2_redraws_the_pure_math_section_without_runs(modules, tmp_path):
    """Figure 2 needs no runs, but the report redrew it only with every other section, whose
    runs take hours (docs/figures/fig2_delta.png predated the plots' line styles and ticks).
    ``--only figure2`` redraws it alone, with no --runs-dir, leaves the rest of the report as it
    was and says when it was redrawn; --keep-absent (it keeps runs) is refused in one line."""
    _, report = modules
    out = tmp_path / "doc" / "results.md"
    out.parent.mkdir()
    rest = "# Results\n\n## Summary\n\n- a bullet: kept\n\n## Something\n\ntext\n"
    walls = "## Wall times of all runs\n\n| run | T |\n|---|---|\n| x | 1 |\n"
    out.write_text(rest + "\n## Figure 2: delta(rho) of the three schemes\n\nold text\n\n"
                   + walls)
    absent = str(tmp_path / "no_such_runs")
    with pytest.raises(SystemExit, match="^report: --keep-absent keeps the table rows of "
                                         "absent runs, which only --only cifar's section has; "
                                         "--only figure2 regenerates one without"):
        report.main(["--runs-dir", absent, "--out", str(out), "--only", "figure2",
                     "--keep-absent"])
    assert not (out.parent / "figures").exists()
    assert report.main(["--runs-dir", absent, "--out", str(out), "--only", "figure2"]) == 0
    new = out.read_text()
    assert new.startswith(rest) and new.endswith(walls) and "old text" not in new
    assert "![fig2_delta.png](figures/fig2_delta.png)" in new
    assert "(`python experiments/report.py --only figure2`); it needs no runs." in new
    assert (out.parent / "figures" / "fig2_delta.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_figure5_redraws_its_section_and_leaves_table_1_s_wall_times(modules, tmp_path):
    """Figure 5 (the binomial run's sub-dataset sizes) could be redrawn only with the whole
    report. ``--only figure5`` redraws it from the run alone; its run's wall time is Table 1's,
    which it does not regenerate, so the wall-time table and the Summary stay as they were
    (updating them would set that table against Table 1). With the run absent it refuses to
    drop the figure, and --keep-absent (it keeps CIFAR-10's rows) is refused."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    _, report = modules
    runs_dir = tmp_path / "runs"
    name = "mnist17_ns10_binomial"
    cli = CliRunner()
    res = cli.invoke(app, ["train", str(EXPERIMENTS / "demo.yaml"), "--selection.scheme",
                           "binomial", "--selection.T", "6", "--training.steps", "3",
                           "--run-dir", str(runs_dir / name), "-q"])
    assert res.exit_code == 0, res.output
    res = cli.invoke(app, ["certify", str(runs_dir / name), "-q"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "doc" / "results.md"
    out.parent.mkdir()
    head = "# Results\n\n## Summary\n\n- MNIST 1/7, ns = 10: kept\n\n## Figure 4\n\nt\n"
    walls = f"## Wall times of all runs\n\n| run | T |\n|---|---|\n| {name} | 1000 |\n"
    old = (head + "\n## Figure 5: binomial sub-dataset sizes\n\nFrom `runs/"
           f"{name}/classifiers.csv`. 12 classifiers.\n\n![f](figures/fig5_subset_sizes.png)\n\n"
           + walls)
    out.write_text(old)
    (tmp_path / "empty").mkdir()
    for args, match in (([], f"would drop {name}"), (["--keep-absent"], "--keep-absent keeps")):
        # the refusal names --keep-absent only where the section can keep rows (cifar)
        with pytest.raises(SystemExit, match=f"^report: .*{match}") as excinfo:
            report.main(["--runs-dir", str(tmp_path / "empty"), "--out", str(out), "--only",
                         "figure5"] + args)
        assert "with --keep-absent" not in str(excinfo.value)
    assert out.read_text() == old and not (out.parent / "figures").exists()
    assert report.main(["--runs-dir", str(runs_dir), "--out", str(out), "--only",
                        "figure5"]) == 0
    new = out.read_text()
    assert new.startswith(head) and new.endswith(walls) and "12 classifiers" not in new
    assert "6 classifiers;" in new
    assert "(`python experiments/report.py --only figure5`), from the runs" in new
    assert (out.parent / "figures" / "fig5_subset_sizes.png").stat().st_size > 0


def test_only_case3_needs_every_run_of_its_section(modules, tmp_path):
    """Figure 6's table names no run, so ``--only case3`` cannot tell a run it shows from one
    never run: with any of the four runs absent it is one line naming them, nothing written."""
    _, report = modules
    out = tmp_path / "doc" / "results.md"
    out.parent.mkdir()
    old = ("# R\n\n## Figure 6: case 3\n\n| classifier | ns |\n|---|---|\n"
           "| two-phase (Algorithm 3) | 10 |\n\n## Wall times of all runs\n\nw\n")
    out.write_text(old)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match=r"^report: --only case3 needs every run its section "
                                         r"shows .*lacks case3_twophase_ns10, case3_alg2_ns10, "
                                         r"case3_twophase_ns50, case3_alg2_ns50$"):
        report.main(["--runs-dir", str(tmp_path / "empty"), "--out", str(out), "--only",
                     "case3"])
    assert out.read_text() == old and not (out.parent / "figures").exists()


#: The comparison's curves as docs/results.md tabulates them (rho -> certified accuracy, P6 and
#: DPA's unit; the DPA-unit radii are about twice the operation radii), for a synthetic figure.
_AGG_CURVES = {
    "DPA, k = 1200": ((0, 50, 100, 150, 200, 250, 300), (.901, .83, .727, .599, .437, .2, 0)),
    "DPA + run-off election": ((0, 50, 100, 150, 200, 260, 310),
                               (.892, .83, .744, .626, .468, .2, 0)),
    "FA, k = 1200, d = 2": ((0, 50, 100, 150, 200, 250, 300), (.902, .83, .729, .598, .432, .2, 0)),
    "FA + run-off election, d = 2": ((0, 50, 100, 150, 200, 260, 310),
                                     (.893, .831, .741, .623, .466, .2, 0)),
    "bagging without replacement, ns = 50, T = 1200 (pairwise)":
        ((0, 100, 200, 300, 400, 600, 780), (.862, .777, .679, .568, .451, .15, 0)),
    "bagging with replacement, ns = 50, T = 1200 (pairwise)":
        ((0, 100, 200, 300, 400, 600, 790), (.862, .779, .682, .576, .461, .16, 0)),
    "bagging binomial, ns = 50, T = 1200 (pairwise)":
        ((0, 100, 200, 300, 400, 600, 785), (.863, .779, .68, .572, .456, .155, 0)),
    "kNN, k = 100": ((0, 10, 20, 50, 60), (.944, .918, .886, .075, 0)),
    "kNN, k = 1000": ((0, 100, 200, 300, 400, 500, 520), (.873, .786, .663, .509, .347, .1, 0)),
    "rNN, r = 1500": ((0, 10, 20, 50, 100, 300, 400, 1000, 1900), (.899, .606, .495, .341,
                                                                   .231, .124, .112, .08, 0)),
}
_DETERMINISTIC = ("DPA", "FA", "kNN", "rNN")


def _certificate(knots, n: int = 2000):
    """Predictions and radii of ``n`` test points (label 0) whose certified accuracy at each
    rho is the curve through ``knots`` (linear between them)."""
    rho, acc = (np.asarray(k, dtype=float) for k in knots)
    grid = np.arange(int(rho[-1]) + 1)
    curve = np.interp(grid, rho, acc)
    u = (np.arange(n) + 0.5) / n
    radius = np.array([grid[curve >= x].max() if curve[0] >= x else -1 for x in u])
    return np.where(radius >= 0, 0, 1), radius


def _drawn_points(ax):
    """Display coordinates of points every pixel or so along each curve as drawn (steps),
    inside the axes' view."""
    out = []
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for line in ax.get_lines():
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        xs = np.repeat(x, 2)[1:]  # steps-post: across, then down
        ys = np.repeat(y, 2)[:-1]
        for a, b, c, d in zip(xs[:-1], ys[:-1], xs[1:], ys[1:], strict=True):
            t = np.linspace(0, 1, 50)
            out.append(np.c_[a + (c - a) * t, b + (d - b) * t])
    pts = np.concatenate(out)
    pts = pts[(pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)]
    return ax.transData.transform(pts)


def test_agg_comparison_legend_covers_no_curve(modules, monkeypatch):
    """agg_comparison.png put each panel's ten-entry legend in the lower left, over the DPA,
    FA and bagging curves near rho = 0; it now goes where no curve runs (the plots module's
    free-corner placement), on curves shaped like the report's."""
    from types import SimpleNamespace

    import report_agg
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    methods = []
    for label, knots in _AGG_CURVES.items():
        pred, radius = _certificate(knots)
        zeros = np.zeros(len(pred), dtype=np.int64)  # every test point's label: 0
        run = SimpleNamespace(npy=lambda name, z=zeros: z, wall=lambda: "1 s")
        dpa = _certificate((tuple(2 * r for r in knots[0]), knots[1]))[1]
        methods.append(report_agg.Method(label, run, pred, radius,
                                         dpa if label.startswith(_DETERMINISTIC) else None,
                                         "50.0", None))
    monkeypatch.setattr(report_agg, "_methods", lambda runs: methods)
    figs = {}

    def fig(figure, name):
        figs[name] = figure
        return f"![{name}]({name})"

    rep = SimpleNamespace(runs={}, add=lambda text: None, fig=fig, summary={})
    report_agg.comparison(rep)
    figure = figs["agg_comparison.png"]
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    axes = [ax for ax in figure.get_axes() if ax.get_visible()]
    assert len(axes) == 2
    for ax in axes:
        legend = ax.get_legend()
        assert len(legend.get_texts()) == len(ax.get_lines()) >= 7
        box = legend.get_window_extent(renderer)
        assert figure.bbox.contains(box.x0, box.y0) and figure.bbox.contains(box.x1, box.y1)
        for other in axes:  # no curve of any panel under it, no other panel's frame
            pts = _drawn_points(other)
            inside = (pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (
                pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)
            assert not inside.any(), (ax.get_title(), other.get_title(), int(inside.sum()))
            assert other is ax or not box.overlaps(other.get_window_extent(renderer))


def test_only_grid_needs_its_six_runs_and_labels_rows_with_their_T(modules, tmp_path):
    """The MNIST 1/7 grid's table could be regenerated only with the whole report, whose runs
    take hours. ``--only grid`` regenerates it alone. Its table names settings, not runs, and
    falls back to the T = 200 runs of a setting whose T = 1000 runs are not all there, so with
    any of its six runs absent it is one line naming them, nothing written. Its rows give each
    run's own T (they gave the T its name implies: 1000 for these runs of T = 4), and the
    wall-time table's rows of its runs are updated; the rest of the report is left as it was."""
    import shutil

    from typer.testing import CliRunner

    from poisoncert.cli import app

    run, report = modules
    names = [n for n, _, _ in run.GROUPS["mnist17_grid"]]
    out = tmp_path / "doc" / "results.md"
    out.parent.mkdir()
    head = "# R\n\n## Summary\n\n- a bullet: kept\n\n"
    walls = ("## Wall times of all runs\n\n| run | T |\n|---|---|\n| other | 1 |\n"
             f"| {names[0]} | 1000 |\n")
    old = (head + "## MNIST 1/7: a second ns and a known-clean part\n\n| setting | scheme |\n"
           "|---|---|\n| ns = 30, n_c = 0, T = 1000 | without repl. (1) |\n\n" + walls)
    out.write_text(old)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with pytest.raises(SystemExit, match=r"^report: --only grid needs every run its section "
                                         r"shows .*lacks " + ", ".join(names) + "$"):
        report.main(["--runs-dir", str(runs_dir), "--out", str(out), "--only", "grid"])
    assert out.read_text() == old and not (out.parent / "figures").exists()
    cli = CliRunner()
    for name in names[:3]:  # one tiny run per scheme, copied for the second setting
        scheme = name.removeprefix("mnist17_ns30_")
        res = cli.invoke(app, ["train", str(EXPERIMENTS / "demo.yaml"), "--selection.scheme",
                               scheme, "--selection.T", "4", "--training.steps", "2",
                               "--run-dir", str(runs_dir / name), "-q"])
        assert res.exit_code == 0, res.output
        res = cli.invoke(app, ["certify", str(runs_dir / name), "-q"])
        assert res.exit_code == 0, res.output
    for a, b in zip(names[:2], names[3:5], strict=True):
        shutil.copytree(runs_dir / a, runs_dir / b)
    with pytest.raises(SystemExit, match=f"lacks {names[5]}$"):
        report.main(["--runs-dir", str(runs_dir), "--out", str(out), "--only", "grid"])
    assert out.read_text() == old
    shutil.copytree(runs_dir / names[2], runs_dir / names[5])
    assert report.main(["--runs-dir", str(runs_dir), "--out", str(out), "--only", "grid"]) == 0
    new = out.read_text()
    assert new.startswith(head) and "| other | 1 |" in new
    section = report.section_text(new, "## MNIST 1/7: a second ns")
    rows = [line for line in section.splitlines() if line.startswith("| ns = ")]
    assert [r.split(" | ")[0] for r in rows] == ["| ns = 30, n_c = 0, T = 4"] * 3 + [
        "| ns = 10, n_c = 100, T = 4"] * 3
    assert "T = 1000" not in section.split("\n| setting")[1]
    assert "(`python experiments/report.py --only grid`), from the runs" in section
    wall_rows = report.section_text(new, report.WALLS)
    assert f"| {names[0]} | 4 |" in wall_rows and f"| {names[0]} | 1000 |" not in wall_rows
    assert all(f"| {n} | 4 |" in wall_rows for n in names)
