"""``poisoncert attack`` (real poisoning attacks against a trained run) and ``poisoncert
update`` (a new run for a changed training set, retraining only what the change touches).

Each parses its options and calls one function of ``poisoncert.experiment``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from poisoncert._validation import param_error, parse_int_list
from poisoncert.cli.certs import interrupted, library_errors
from poisoncert.rates import counted
from poisoncert.runsafe import json_text, shell_path

__all__ = ["attack", "register", "update"]


def register(app: typer.Typer) -> None:
    """Add ``attack`` and ``update`` to ``app``."""
    app.command("attack")(attack)
    app.command("update")(update)


def _plain(v):
    return v.item() if hasattr(v, "item") else str(v)


def attack(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by train.")],
    attacks: Annotated[str, typer.Option(
        help="Comma-separated: insert, remove, flip, modify, backdoor.")
    ] = "insert,remove,flip,modify,backdoor",
    budgets: Annotated[str, typer.Option(
        help="Comma-separated budgets r (poisoning operations).")] = "1,2,4,8,16",
    targets: Annotated[int | None, typer.Option(
        help="Correctly classified test points attacked by the targeted attacks (insert, "
             "remove, flip, modify; default 20): at most the run's test points, fewer "
             "where fewer are correctly classified.", show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the targets and backdoor samples.")] = 0,
    backdoor_label: Annotated[int | None, typer.Option(
        help="The backdoor's target class: the data set's class id (MNIST 1/7: 1 or 7; "
             "default: the run's first class).")] = None,
    patch: Annotated[int | None, typer.Option(
        help="Side of the backdoor's square, pixels (default 3).", show_default=False)] = None,
    copies: Annotated[int | None, typer.Option(
        help="Copies the insertion puts in each hash bucket it uses (partition and finite "
             "aggregation runs; default 1).", show_default=False)] = None,
    max_radius: Annotated[int | None, typer.Option(
        help="Targets only among points certified at most this radius (targeted attacks).")
    ] = None,
    out: Annotated[Path | None, typer.Option(
        help="Folder of the results (default: the run directory). One that holds an "
             "earlier attack's results is refused unless --force.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an earlier attack's results in the folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (no "
                                                         "progress lines).")] = False,
) -> None:
    """Attack a trained run within budgets r: retrain exactly the base classifiers each
    poisoned training set touches, and count certified predictions that changed (0 for
    deterministic certificates) and the attack's success on the rest."""
    with library_errors():
        from poisoncert.experiment.attack import AttackSettings, attack_run
        from poisoncert.experiment.update import RunTerms

        chosen = tuple(attacks.split(","))  # "insert,,flip": an empty name, refused
        _refuse_unused(chosen, {"--backdoor-label": backdoor_label, "--patch": patch},
                       {"--targets": targets, "--max-radius": max_radius, "--copies": copies})
        label = 0 if backdoor_label is None else int(
            RunTerms.of(run_dir).indices([backdoor_label], "--backdoor-label")[0])
        given = {"targets": targets, "patch": patch, "copies": copies}
        r = parse_int_list(budgets, "--budgets", "attack", low=1, example="1,2,4")
        s = AttackSettings(attacks=chosen, budgets=tuple(r),
                           seed=seed, backdoor_label=label, max_radius=max_radius,
                           **{k: v for k, v in given.items() if v is not None})
        from poisoncert.cli.runs import checksum_bar

        loud = not (quiet or as_json)
        try:
            res = attack_run(run_dir, settings=s, out_dir=out, overwrite=force,
                             log=(lambda t: typer.echo(t, err=True)) if loud else None,
                             verify_progress=checksum_bar if loud else None)
        except KeyboardInterrupt:
            raise interrupted("interrupted: the attack stopped; its result files are written "
                              "only when it finishes.") from None
    _warn_broken_certificates(res.totals["deterministic"], res.paths)
    if as_json:
        typer.echo(json_text({"summary": res.summary, "totals": res.totals,
                               "files": {k: str(v) for k, v in res.paths.items()},
                               "seconds": round(res.seconds, 2)}, indent=1, default=_plain))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # compact (76 columns with six-digit counts): an 80-column terminal shows it whole
    table = Table(title="Attacks: certified points that changed, success beyond the radius",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0))
    for col in ("aggregation", "attack", "r", "trials", "within\nradius", "changed\nwithin",
                "beyond\nradius", "changed\nbeyond", "others\nchecked", "others\nchanged"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in res.summary:
        table.add_row(row["aggregation"] + ("*" if row["probabilistic"] else ""),
                      row["attack"], str(row["budget"]), str(row["trials"]), str(row["within"]),
                      str(row["changed_within"]), str(row["beyond"]),
                      str(row["success_beyond"]), str(row["untargeted_checked"]),
                      str(row["untargeted_changed"]))
    con = Console()  # the terminal's width (80 when not a terminal)
    con.print(table)
    con.print("others: the untargeted checks (the other test points, under the same poisoned "
              "ensembles)"
              + ("; * probabilistic certificates" if any(r["probabilistic"] for r in res.summary)
                 else ""), highlight=False)
    already = [r for r in res.summary if r.get("already_label")]
    if already:  # the backdoor's trials = within + beyond + these (the columns add up)
        counts = ", ".join(f"{r['aggregation']} r={r['budget']}: {r['already_label']}"
                           for r in already)
        con.print(f"backdoor: its trials also count the patched points beyond the radius "
                  f"whose clean prediction already is the backdoor label (neither within nor "
                  f"beyond; already_label): {counts}", highlight=False)
    for kind in ("deterministic", "probabilistic"):
        t = res.totals[kind]
        if t["trials"]:
            con.print(f"{kind}: {counted(t['within'], 'trial')} within radius, "
                      f"{t['changed_within']} changed; "
                      f"{counted(t['untargeted_checked'], 'untargeted check')}, "
                      f"{t['untargeted_changed']} changed", highlight=False)
    got, wanted = len(res.totals["targets"]), res.totals["targets_wanted"]
    if got < wanted and any(a != "backdoor" for a in res.totals["attacks"]):
        limit = res.totals["max_radius"]
        con.print(f"targets: {got} of the {wanted} asked for (--targets): the run has only "
                  f"{counted(got, 'correctly classified test point')}"
                  + ("" if limit is None else f" certified at most --max-radius {limit}"),
                  highlight=False)
    for name, path in res.paths.items():
        con.print(f"{name}: {path}", highlight=False, soft_wrap=True)
    con.print(f"Done in {res.seconds:.1f} s.", highlight=False)


def _warn_broken_certificates(t: dict, paths: dict) -> None:
    """One ``warning:`` line on stderr (with --json and -q too) where a prediction certified
    deterministically at a radius of at least the operations an attack made changed: the
    certificate was wrong, the one thing an attack must never show. It was a count among
    the table's columns only."""
    broken = t["changed_within"] + t["untargeted_changed"]
    if broken:
        where = paths.get("trials", "attack_trials.csv")
        typer.echo(f"warning: {counted(broken, 'prediction')} certified deterministically at a "
                   "radius at least the attack's operations changed (changed within radius "
                   f"{t['changed_within']}, others changed {t['untargeted_changed']}): a "
                   f"certificate failed; please report it with {where} and attack.json.",
                   err=True)


def _refuse_unused(attacks: tuple[str, ...], backdoor: dict, targeted: dict) -> None:
    """An option given for an attack that ``--attacks`` leaves out is one error line (it
    would change nothing); ``--copies`` also needs ``insert`` or ``modify``."""
    from poisoncert.experiment.attack import ATTACKS

    names = [a.strip().lower() for a in attacks]
    if not names or any(n not in ATTACKS for n in names):
        return  # AttackSettings names the bad attack
    needs = [(backdoor, ("backdoor",), "the backdoor attack"),
             ({k: v for k, v in targeted.items() if k != "--copies"},
              ("insert", "remove", "flip", "modify"),
              "the targeted attacks (insert, remove, flip, modify)"),
             ({"--copies": targeted["--copies"]}, ("insert", "modify"),
              "the insert and modify attacks")]
    for options, kinds, what in needs:
        for flag, value in options.items():
            if value is not None and not any(k in names for k in kinds):
                raise param_error(flag, "attack", f"left out unless --attacks includes "
                                  f"{what} (--attacks {','.join(attacks)} does not: leave "
                                  "the option out or add the attack)", value)


def update(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by train.")],
    out: Annotated[Path, typer.Option(help="The new run directory (empty or new).")],
    remove: Annotated[list[str] | None, typer.Option(
        metavar="<ids|file>",
        help="Training-set indices to remove: 3,17,42 or a .npy / text file (rows of the "
             "run's training set: after the run's own earlier updates). Repeatable: the "
             "values are joined.")] = None,
    relabel: Annotated[list[str] | None, typer.Option(
        metavar="<ids:labels>",
        help="IDS:LABELS, e.g. 3,17:1,7: training-set indices and the data set's class ids "
             "(MNIST 1/7: 1 or 7), one label for all or one each. Repeatable.")] = None,
    add: Annotated[list[str] | None, typer.Option(
        metavar="<file.npz>",
        help=".npz of samples to add, as predict takes it: x as the data set's files hold "
             "its inputs (uint8 pixels for MNIST) and y their class ids. Repeatable: the "
             "files' samples are added in order.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON (no "
                                                         "progress bar).")] = False,
) -> None:
    """Write a new run for the run's training set after removing, relabelling and adding
    samples, retraining only the base classifiers whose training samples changed; its
    predictions equal training the changed set from scratch."""
    with library_errors():
        from poisoncert.cli.progress import rich_progress
        from poisoncert.cli.runs import checksum_bar
        from poisoncert.experiment.update import (
            edits_from_options,
            finish_command,
            update_run,
        )

        if not (remove or relabel or add):
            raise ValueError("update needs a change: give --remove, --relabel or --add "
                             "(see 'poisoncert update --help').")
        edits = edits_from_options(remove, relabel, add, run_dir)
        try:
            loud = not (quiet or as_json)
            res = update_run(run_dir, out, edits, progress=rich_progress if loud else None,
                             verify_progress=checksum_bar if loud else None)
        except KeyboardInterrupt:
            from poisoncert import runs
            from poisoncert.selection import NEAREST_NEIGHBOURS

            # the new run's folder appears (whole, its manifest in it) once every changed
            # classifier is retrained (a knn / rnn run's neighbours searched again); an empty
            # folder given as --out is not one
            try:
                searched = (runs.RunDir(run_dir).load_config().selection.scheme
                            in NEAREST_NEIGHBOURS)
            except Exception:  # noqa: BLE001 - the line below only words what was stopped
                searched = False
            work = ("the neighbours are searched again" if searched else
                    "every changed classifier is retrained")
            left = (f"'{out}' holds the update's unfinished run: finish it with "
                    f"'{finish_command(out)}', or delete it and run the same command again"
                    if (out / runs.MANIFEST).is_file() else
                    f"no new run was written (it is written once {work}); the same command "
                    "starts over")
            raise interrupted(f"interrupted: {left}.") from None
    e = res.edits
    if as_json:
        typer.echo(json_text({"run_dir": str(res.run_dir), "T": res.T,
                               "n_retrained": res.n_retrained,
                               # a knn / rnn run: no classifiers, its neighbours searched again
                               "neighbours_searched": bool(res.neighbours),
                               "retrained": res.retrained.tolist(),
                               "removed": e.remove.tolist(),
                               "relabelled": e.relabel_index.tolist(),
                               "relabelled_to_own_label": res.unchanged_relabels,
                               "added": e.n_added, "n_train": res.n_train,
                               "train_seconds": round(res.train_seconds, 3),
                               "seconds": round(res.seconds, 3)}, indent=1))
        return
    typer.echo(_changes_line(res))
    if res.neighbours:  # no base classifiers: the search again, as train does it
        typer.echo(f"Searched the neighbours of {counted(res.predictions.shape[1], 'test point')} "
                   f"in the new training set in {res.train_seconds:.1f} s ({res.seconds:.1f} s "
                   "in all; a knn / rnn run has no base classifiers).")
    else:
        typer.echo(f"Retrained {res.n_retrained} of {counted(res.T, 'base classifier')} in "
                   f"{res.train_seconds:.1f} s ({res.seconds:.1f} s in all).")
    typer.echo(f"New run directory: {res.run_dir}")
    typer.echo(f"Next: poisoncert certify {shell_path(res.run_dir)}")


def _indices_text(idx, shown: int = 10) -> str:
    """``idx`` as ``3, 17, 42`` (the first ``shown``, then how many in all)."""
    head = ", ".join(str(int(i)) for i in idx[:shown])
    return head if len(idx) <= shown else f"{head}, ... ({len(idx)} in all)"


def _changes_line(res) -> str:
    """What an update changed, in one line: the indices removed and relabelled (the run's
    training-set rows), the samples added, and the new set's size."""
    e = res.edits
    parts = []
    if e.n_removed:
        parts.append(f"removed {e.n_removed} ({_indices_word(e.n_removed)} "
                     f"{_indices_text(e.remove)})")
    if e.n_relabelled:
        # a knn / rnn run retrains nothing at all (its neighbours are searched again)
        them = "it" if res.unchanged_relabels == 1 else "them"
        own = (f"; {res.unchanged_relabels} already had that label"
               + ("" if res.neighbours else f": nothing to retrain for {them}")
               if res.unchanged_relabels else "")
        parts.append(f"relabelled {e.n_relabelled} ({_indices_word(e.n_relabelled)} "
                     f"{_indices_text(e.relabel_index)}{own})")
    if e.n_added:
        parts.append(f"added {e.n_added}")
    shift = (" (a later sample's index drops by one per removed sample before it)"
             if e.n_removed else "")
    return (f"Training set: {', '.join(parts)}; it now has {res.n_train:,} "
            f"sample{'' if res.n_train == 1 else 's'}{shift}.")


def _indices_word(n: int) -> str:
    return "index" if n == 1 else "indices"
