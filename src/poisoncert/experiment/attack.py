"""Real poisoning attacks against a trained run, within and beyond its certified radii.

``attack_run(run_dir)`` builds poisoned training sets within a budget ``r`` of operations,
retrains exactly the base classifiers each one touches (``experiment.retrain``; for kNN / rNN
the neighbours are searched again), recomputes the votes and compares every prediction with the
clean run's and with its certificate. Attacks (the poisoning model each is certified under,
radii in operations: insertion, deletion or modification = 1):

- ``insert`` (P1): ``r`` copies of a target test point labelled with its runner-up class, the
  strongest targeted insertion against aggregation. Against hash buckets each copy is made to
  land in its own bucket, chosen among those whose classifiers vote for the prediction, by
  changing a few corner pixels by at most 15/255 (the bucket is a hash of the content);
- ``remove`` (P2): ``r`` training samples of the predicted class nearest to the target (in
  pixels), in distinct buckets whose classifiers vote for the prediction where there are
  buckets;
- ``flip`` (P3): the same samples relabelled to the runner-up class;
- ``modify`` (P3): the same samples each replaced by a copy of the target labelled with the
  runner-up class (one modification each), which against hash buckets is made to land in
  another bucket voting for the prediction: each modification takes a vote from one bucket
  and gives one to the runner-up in another, the most one modification can do there;
- ``backdoor`` (P1): ``r`` training samples of other classes with a small white patch in the
  bottom-right corner, labelled ``backdoor_label``, inserted; the patch is added to every test
  input, and the patched test points are certified from the clean ensemble's outputs on them.
  Its ``trials`` (the test points whose label is not ``backdoor_label``) are ``within`` (the
  patched point certified at the insertions made), ``beyond`` (not, its clean prediction
  another class) and ``already_label`` (not, its clean prediction already the backdoor's
  label: nothing to gain; 0 for the targeted attacks, whose trials are within or beyond).

Every targeted poisoned ensemble is also checked on every other test point ("untargeted
checks": a test point certified at radius ``>= r`` must not change under any attack of ``r``
operations, aimed at it or not), except on kNN / rNN runs, whose poisoned set is searched again
for the attacked test point only (their ``untargeted_checked`` is 0). Per aggregation
(``vote``: the majority vote, ``roe``: the run-off election where the run stored rankings,
``knn`` / ``rnn``): how many test points certified at ``>= r`` changed prediction (the
certificates of partition, finite aggregation, run-off and nearest neighbours are
deterministic: this must be 0), and the attack's success on the points not certified at ``r``.
Randomized selection (bagging) certifies the expected vote with probability ``1 - alpha``; a
changed *empirical* vote there is reported as such, and is not by itself a contradiction of the
certificate.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poisoncert import runs, selection
from poisoncert._validation import INT_LIMIT, SEED_LIMIT, check_int, param_error
from poisoncert.experiment.attack_backends import ClassifierBackend, Judge, NNBackend
from poisoncert.experiment.attack_edits import EditBuilder, patch_images
from poisoncert.experiment.certify import data_text
from poisoncert.rates import clock_text, counted, rate_text
from poisoncert.runs import RunDir, RunError
from poisoncert.runsafe import LOCK
from poisoncert.votes import votes_from_predictions

#: The clock of the progress lines' rate and ETA (tests give a fake one).
_clock = time.monotonic

__all__ = ["ATTACKS", "ATTACK_MODEL", "AttackResult", "AttackSettings", "attack_run",
           "patch_images"]

ATTACKS = ("insert", "remove", "flip", "modify", "backdoor")
#: The poisoning model each attack is certified under (operations of one kind).
ATTACK_MODEL = {"insert": "P1", "remove": "P2", "flip": "P3", "modify": "P3",
                "backdoor": "P1"}
ATTACK_CSV = "attack_trials.csv"
ATTACK_SUMMARY = "attack_summary.csv"
ATTACK_JSON = "attack.json"
ATTACK_PNG = "attack.png"
#: The targeted attacks' targets where ``AttackSettings.targets`` is None (``--targets``'s
#: default): capped at the correctly classified test points, as a larger value given is.
DEFAULT_TARGETS = 20


@dataclass(frozen=True)
class AttackSettings:
    """``attacks`` of ``ATTACKS``; ``budgets``: the ``r`` tried (operations); ``targets``
    correctly classified test points attacked by the targeted attacks (drawn with ``seed``;
    None: ``DEFAULT_TARGETS``, or fewer where the run has fewer; a value given is at most the
    run's test points, the distinct targets there can be);
    ``backdoor_label`` and ``patch`` (side in pixels) of the backdoor; ``batch``: targeted
    trials retrained in one call; ``copies``: identical copies the insertion (and
    ``modify``) puts in each bucket it uses (``r`` copies in ``ceil(r / copies)`` buckets:
    fewer classifiers, each poisoned more strongly); ``max_radius``: draw the targets among
    the correctly classified points whose radius (the first aggregation's, under the first
    attack's model) is at most this (attacks near the certified boundary, where success
    beyond the radius shows)."""

    attacks: tuple[str, ...] = ATTACKS
    budgets: tuple[int, ...] = (1, 2, 4, 8, 16)
    targets: int | None = None
    seed: int = 0
    backdoor_label: int = 0
    patch: int = 3
    batch: int = 24
    copies: int = 1
    max_radius: int | None = None

    def __post_init__(self) -> None:
        where = "attack_run"
        attacks = tuple(dict.fromkeys(a.strip().lower() for a in self.attacks))
        bad = [a for a in attacks if a not in ATTACKS]
        if bad or not attacks:
            raise param_error("attacks", where, "a non-empty list of " + ", ".join(ATTACKS),
                              list(self.attacks))
        object.__setattr__(self, "attacks", attacks)
        budgets = tuple(sorted({check_int(b, "budgets", where, low=1) for b in self.budgets}))
        if not budgets:
            raise param_error("budgets", where, "a non-empty list of ints >= 1", self.budgets)
        object.__setattr__(self, "budgets", budgets)
        targeted = any(a != "backdoor" for a in attacks)  # 0 targets ran none of them
        if self.targets is not None:
            object.__setattr__(self, "targets", check_int(self.targets, "targets", where,
                                                          low=int(targeted)))
        check_int(self.seed, "seed", where, low=0, high=SEED_LIMIT)
        check_int(self.backdoor_label, "backdoor_label", where, low=0)
        check_int(self.patch, "patch", where, low=1)
        check_int(self.batch, "batch", where, low=1)
        check_int(self.copies, "copies", where, low=1)
        if self.max_radius is not None:  # a radius: at most 2^53, as --budgets' r
            check_int(self.max_radius, "max_radius", where, low=0, high=INT_LIMIT)

    @property
    def targets_wanted(self) -> int:
        """The targets asked for: ``targets``, or ``DEFAULT_TARGETS`` where None."""
        return DEFAULT_TARGETS if self.targets is None else self.targets


# --------------------------------------------------------------------------------------------
# The attack


@dataclass(frozen=True, eq=False)
class AttackResult:
    """Per (aggregation, attack, budget) counts (``summary`` rows), every targeted trial
    (``trials``), totals (``totals``) and the files written (``paths``)."""

    summary: list[dict]
    trials: list[dict]
    totals: dict
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def _runner_up(votes_row: np.ndarray, y: int) -> int:
    v = votes_row.astype(np.int64).copy()
    v[y] = -1
    return int(np.argmax(v))


def _check_attack_memory(s: AttackSettings, data) -> None:
    """The inserted copies (``insert``: ``max(budgets)`` per trial; ``modify``: at most the
    samples it replaces) of a batch of trials, as the pool one retraining call holds with
    their float inputs: refused up front, naming ``budgets`` or ``batch``, where they do not
    fit in memory (a budget of 2^53 tried to allocate exabytes)."""
    from math import prod

    from poisoncert import resources

    if "insert" not in s.attacks and "modify" not in s.attacks:
        return
    one = 4 * prod(data.x_test.shape[1:])  # a float32 input
    # the trials that make copies (insert's and modify's jobs: one batch can hold both)
    trials = max(1, s.targets_wanted * len(s.budgets) * len({"insert", "modify"} & set(s.attacks)))
    replaced = len(data.poison_idx) if "insert" not in s.attacks else None  # modify's most

    def estimate(v):
        copies = v["budgets"] if replaced is None else min(v["budgets"], replaced)
        return [resources.Term("inserted inputs of a batch of trials",
                               3 * one * min(v["batch"], trials) * copies,
                               ("budgets", "batch"))]

    resources.check_memory(estimate, {"budgets": max(s.budgets), "batch": s.batch},
                           where="attack_run", subject="the attack", prefer=("batch",))


#: The files an attack writes, ``attack.json`` last (its presence marks a complete set).
ATTACK_FILES = (ATTACK_CSV, ATTACK_SUMMARY, ATTACK_PNG, ATTACK_JSON)


#: Seconds between the progress lines of the classifiers a batch of trials retrains (a batch
#: of a large run takes minutes; its own line comes at its end).
RETRAIN_LINE_EVERY = 30.0


def _retraining_lines(say):
    """``start(total)``: the ``advance(k)`` of a batch's retraining (``retrain``'s progress),
    saying ``retrained i/total classifiers`` with its rate and ETA at most every
    ``RETRAIN_LINE_EVERY`` seconds, timed from the learner's ``advance(0)``."""
    return _progress_lines(say, "retraining", "classifiers")


def _progress_lines(say, what: str, unit: str):
    """``start(total, unit=unit)``: an ``advance(k)`` saying ``    what: i/total unit`` with
    its rate and ETA at most every ``RETRAIN_LINE_EVERY`` seconds (none once all are done: the
    step's own line follows), timed from ``start`` or from an ``advance(0)`` (the work
    begins)."""
    default = unit

    def start(total: int, unit: str = default):
        state = {"done": 0, "began": _clock(), "said": _clock()}

        def advance(k: int) -> None:
            now = _clock()
            if k == 0:  # the learner's work begins (its processes started, data loaded)
                state["began"] = state["said"] = now
                return
            state["done"] += k
            if state["done"] < total and now - state["said"] >= RETRAIN_LINE_EVERY:
                state["said"] = now
                say(f"    {what}: " + rate_text(state["done"], total, now - state["began"],
                                                 unit))
        return advance
    return start


def attack_run(run_dir: str | Path, *, settings: AttackSettings | None = None,
               out_dir: str | Path | None = None, log=None,
               overwrite: bool = True, verify_progress=None) -> AttackResult:
    """Attack the run in ``run_dir`` (see the module docstring); write ``attack_trials.csv``,
    ``attack_summary.csv``, ``attack.png`` and ``attack.json`` (last) to ``out_dir`` (default:
    the run directory). ``overwrite=False`` refuses, before any trial is computed, a folder
    that already holds an earlier attack's files (``poisoncert attack`` without ``--force``).
    The run is checked against its manifest first (``RunDir.verify``; ``verify_progress``: a
    display of the checksums, in MiB read: None, True or a ``ProgressDisplay``, as
    ``certify_run``'s ``progress``) and held under its lock throughout, as ``certify`` holds
    it."""
    t0 = time.perf_counter()
    s = settings or AttackSettings()
    rd = RunDir(run_dir)
    out = Path(out_dir) if out_dir is not None else rd.path
    if out_dir is None:
        rd.load_config()  # not a run (a file, no folder): said as such, not as "cannot write"
    runs.check_writable(out, "the attack's results folder",
                        " (the run directory, the default; CLI: --out)" if out_dir is None
                        else " (out_dir; CLI: --out)")
    _check_early(rd, s)
    if not overwrite:
        _refuse_earlier_results(out, rd.path)
    from poisoncert.experiment.display import checksum_display

    display = checksum_display(verify_progress, "attack_run")
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(rd.lock())
        except runs.RunLockedError:  # another process trains or certifies it: refused
            raise
        except RunError:
            # a run that cannot be locked (a read-only mount or copy: its .lock cannot be
            # opened for writing) attacked into another folder is read without the lock, as
            # update reads its run: it was refused ("Cannot lock the run directory") where
            # predict and update worked. Its results folder must be another one.
            if out.absolute() == rd.path.absolute():
                raise
            # read-only, but not while a writer holds the lock: a shared lock through a
            # read-only open sees it (RunLockedError) and keeps writers out until the end
            shared = runs.RunLock.acquire_shared(rd.path)
            if shared is not None:
                held.callback(shared.release)
        if out.resolve() != rd.path.resolve():  # (the run's own folder: locked above)
            held.enter_context(_results_folder_locked(out))
        rd.verify() if display is None else rd.verify(display)
        return _attack_locked(rd, s, out, log, t0, keep_earlier=not overwrite)


@contextlib.contextmanager
def _results_folder_locked(out: Path):
    """Hold the lock of the results folder ``out`` (``--out``, not the run's folder: its
    ``.lock``, made with the folder where there is none) for the block: another attack
    writing there, or a process working in the run ``out`` holds, is refused at once in one
    line. Two attacks of different runs into one folder each held only its own run's lock:
    both passed the check for an earlier attack's results, and the files of the one that
    wrote last replaced the other's (no --force), or the two sets mixed (one's trials beside
    the other's summary and attack.json) where their writes overlapped. Where the block
    fails (or is interrupted), a folder it created is removed again, and a .lock it made
    in a folder that was there (an empty one stays empty)."""
    created = []
    p = out.absolute()
    while not p.exists():
        created.append(p)
        p = p.parent
    had_lock = os.path.lexists(out / LOCK)

    def remove_created(held: bool) -> None:
        # the .lock it made, while it holds it (a later RunLock.acquire that opened it
        # before it was removed opens the new one: runsafe): an empty folder given as --out
        # held a '.lock' after a failed attack, and train and update then refused it as
        # "not empty". Never another process's (not held: refused, or failed before it).
        if held and not had_lock:
            with contextlib.suppress(OSError):
                (out / LOCK).unlink()
        for c in created:  # deepest first; one that holds anything else stays
            with contextlib.suppress(OSError):
                c.rmdir()

    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = runs.RunLock.acquire(out)
    except runs.RunLockedError:
        remove_created(False)
        raise runs.RunLockedError(
            f"The attack's results folder '{out}' (out_dir; CLI: --out) is in use by another "
            "poisoncert process (an attack writing its results there, or a train, certify or "
            "update of the run it holds): wait until it ends, or give --out another "
            "folder.") from None
    except BaseException:
        remove_created(False)
        raise
    try:
        yield
    except BaseException:
        remove_created(True)
        raise
    finally:
        lock.release()


def _check_early(rd: RunDir, s: AttackSettings) -> None:
    """The settings' checks against the run (``_check_fits``) from its config and its
    manifest's data record alone, before the run's files are verified and its weights read
    (seconds to minutes for a large run). A run whose files cannot be read that way is left to
    ``RunDir.verify``; ``_attack_locked`` checks the same against the data it loads."""
    try:
        cfg = rd.load_config()
        data = rd.load_manifest().get("data")
        n_classes, shape = data["n_classes"], tuple(data["input_shape"])
        if not (isinstance(n_classes, int) and shape
                and all(isinstance(v, int) and v > 0 for v in shape)):
            return
        n_test = data.get("n_test")
        if isinstance(n_test, bool) or not isinstance(n_test, int) or n_test < 1:
            n_test = None  # checked against the data loaded
    except Exception:  # verify names what is wrong with the run's files
        return
    _check_fits(s, cfg.selection.scheme, n_classes, shape, n_test)


def _check_fits(s: AttackSettings, scheme: str, n_classes: int, shape: tuple,
                n_test: int | None) -> None:
    """The settings for a ``scheme`` run of ``n_classes`` classes on inputs of ``shape`` and
    ``n_test`` test points (None: not known): ``targets`` at most the test points (the
    targets are distinct test points: 10^9 planned months of trials, 'ETA' and all, where
    only the correctly classified points could ever be attacked), ``copies`` only for hash
    buckets, the pixel attacks only on images, ``backdoor_label`` one of the classes and the
    backdoor's ``patch`` smaller than the images."""
    targeted = any(a != "backdoor" for a in s.attacks)
    if targeted and n_test is not None and s.targets is not None and s.targets > n_test:
        raise param_error("targets", "attack_run", f"an int in the range [1, {n_test}] (the "
                          f"run's {n_test} test points: each target is another one, drawn "
                          "among those correctly classified)", s.targets)
    buckets = scheme in selection.BUCKET_SCHEMES
    if s.copies != 1 and not buckets:
        raise param_error("copies", "attack_run", f"1 for a {scheme} run (copies "
                          "spread an insertion over hash buckets: partition and "
                          "finite_aggregation runs)", s.copies)
    if len(shape) != 3:  # vectors of features: no corner to patch or to steer with
        pixels = ["backdoor"] + (["insert", "modify"] if buckets else [])
        if bad := [a for a in s.attacks if a in pixels]:
            fits = [a for a in ATTACKS if a not in pixels]
            why = "the backdoor patches a corner of each image" + (
                "; insert and modify steer their copies into hash buckets by corner pixels"
                if buckets else "")
            raise param_error("attacks", "attack_run", f"a list of {', '.join(fits)} for a "
                              f"{scheme} run on inputs of {shape[0]} features, not "
                              f"images ({why}; leave out {', '.join(bad)})",
                              ",".join(s.attacks))
    if s.backdoor_label >= n_classes:
        raise param_error("backdoor_label", "attack_run", f"a class in the range "
                          f"[0, {n_classes - 1}]", s.backdoor_label)
    side = min(shape[-2:]) if len(shape) >= 2 else None
    if "backdoor" in s.attacks and side is not None and s.patch >= side:
        raise param_error("patch", "attack_run", f"an int in the range [1, {side - 1}] (a "
                          f"corner of the {side}-pixel images, not all of them)", s.patch)


def _refuse_earlier_results(out: Path, run: Path) -> None:
    """A folder holding an earlier attack's result files: one line naming them and the two
    ways on (another folder, or replacing them), before anything is computed. Only a whole
    set counts (``attack.json``, written last, is there): the files without it are what an
    attack interrupted while it wrote them left (its own earlier set already removed), which
    the same command replaces; refusing them asked for --force "to replace" results that no
    attack finished."""
    found = [name for name in ATTACK_FILES if (out / name).exists()]
    if ATTACK_JSON in found:
        where = "the run directory, the default" if out == run else "out_dir"
        raise RunError(
            f"The attack's results folder '{out}' ({where}; CLI: --out) already holds an "
            f"earlier attack's results ({', '.join(found)}). Give --out a new folder to keep "
            "them, or --force to replace them.")


def _attack_locked(rd: RunDir, s: AttackSettings, out: Path, log, t0: float, *,
                   keep_earlier: bool = False) -> AttackResult:
    cfg = rd.load_config()
    models = sorted({ATTACK_MODEL[a] for a in s.attacks})
    scheme = cfg.selection.scheme
    if scheme in selection.NEAREST_NEIGHBOURS:
        from poisoncert.experiment.neighbors import run_data

        # the clean certificates come from the run's neighbours, the poisoned predictions from
        # these arrays: they must be the data the run searched (load_ensemble checks the same)
        data = run_data(rd, cfg, rd.load_manifest(), require=True,
                        then="restore the data it was trained on, or train a new run on "
                             "these data and attack that")
        backend = NNBackend(rd, cfg, data)
        builder = EditBuilder(data, cfg)
        votes = rd.load(runs.VOTES)
    else:
        from poisoncert.experiment.retrain import load_ensemble

        ens = load_ensemble(rd.path, verify=False)  # verified above
        data = ens.data
        backend = ClassifierBackend(ens)
        builder = EditBuilder(data, cfg, ens.plan, ens.predictions, s.copies)
        votes = votes_from_predictions(ens.predictions, data.n_classes)
    _check_fits(s, scheme, data.n_classes, data.x_test.shape[1:], len(data.y_test))
    _check_attack_memory(s, data)
    if keep_earlier:  # after the settings' checks, before any trial is computed
        _refuse_earlier_results(out, rd.path)
    judges, clean_P, clean_R = backend.judges(models)
    labels = data.y_test.astype(np.int64)
    ids = data.summary.classes

    def class_id(k) -> int:  # -1 (abstain) stays -1
        return int(ids[k]) if k is not None and int(k) >= 0 else -1

    rng = np.random.default_rng(s.seed)
    primary = judges[0]
    correct = primary.clean == labels
    if s.max_radius is not None:
        correct &= primary.radius[ATTACK_MODEL[s.attacks[0]]] <= s.max_radius
    correct = np.flatnonzero(correct)
    if not len(correct) and any(a != "backdoor" for a in s.attacks):
        _refuse_no_targets(s, primary, labels)
    targets = np.sort(rng.choice(correct, size=min(s.targets_wanted, len(correct)), replace=False))
    say = log or (lambda text: None)
    trials: list[dict] = []
    stats: dict[tuple, dict] = {}

    def tally(j: Judge, attack: str, r: int) -> dict:
        key = (j.name, attack, r)
        if key not in stats:
            # the key columns first, in attack_trials.csv's order
            stats[key] = {"aggregation": j.name, "attack": attack,
                          "model": ATTACK_MODEL[attack], "budget": r,
                          "probabilistic": j.probabilistic, "trials": 0, "within": 0,
                          "changed_within": 0, "beyond": 0,
                          "success_beyond": 0, "already_label": 0, "untargeted_checked": 0,
                          "untargeted_changed": 0, "retrained": 0}
        return stats[key]

    targeted = [a for a in s.attacks if a != "backdoor"]
    jobs = []
    for attack in targeted:
        for t in targets.tolist():
            y = int(primary.clean[t])
            c = _runner_up(votes[t], y)
            for r in s.budgets:
                jobs.append((attack, t, r, y, c))
    if jobs:  # a backdoor alone has no targeted trials (nor targets to speak of)
        say(f"{counted(len(jobs), 'targeted trial')} on {counted(len(targets), 'test point')}, "
            f"{counted(len(judges), 'aggregation')}: {', '.join(j.name for j in judges)}")
    began = _clock()  # the trials' rate leaves the loading (the run, its judges) out
    for a in range(0, len(jobs), s.batch):
        batch = jobs[a:a + s.batch]
        edits = [getattr(builder, attack)(t, r, y, c) for attack, t, r, y, c in batch]
        if isinstance(backend, NNBackend):
            results = [({primary.name: None}, 0) for _ in batch]
        else:
            results = backend.poisoned(edits, judges, clean_P, clean_R,
                                       progress=_retraining_lines(say))
        for (attack, t, r, _, c), e, (preds, n_re) in zip(batch, edits, results, strict=True):
            # a modification is one removal and one insertion in the edits
            ops = e.n_added if attack == "modify" else e.n_removed + e.n_relabelled + e.n_added
            model = ATTACK_MODEL[attack]
            for j in judges:
                rad = j.radius[model]
                if isinstance(backend, NNBackend):
                    p_t = backend.predict_one(t, e)
                    checked = changed_u = 0
                else:
                    p = preds[j.name]
                    p_t = int(p[t])
                    others = np.ones(len(p), dtype=bool)
                    others[t] = False
                    ok = others & (rad >= ops)  # the operations made (< r: too few samples)
                    checked = int(ok.sum())
                    changed_u = int(np.sum(ok & (p != j.clean)))
                within = bool(rad[t] >= ops)
                changed = p_t != int(j.clean[t])
                st = tally(j, attack, r)
                st["trials"] += 1
                st["within"] += within
                st["changed_within"] += within and changed
                st["beyond"] += not within
                st["success_beyond"] += (not within) and changed
                st["untargeted_checked"] += checked
                st["untargeted_changed"] += changed_u
                st["retrained"] += n_re
                trials.append({"aggregation": j.name, "attack": attack, "model": model,
                               "budget": r, "operations": ops, "target": t,
                               "label": int(labels[t]), "clean": int(j.clean[t]),
                               "target_class": c, "radius": int(rad[t]),
                               "within": int(within), "poisoned": p_t,
                               "changed": int(changed), "retrained": n_re,
                               "untargeted_checked": checked,
                               "untargeted_changed": changed_u,
                               # the data set's class ids of the four class indices above
                               **{f"{k}_id": class_id(v) for k, v in (
                                   ("label", int(labels[t])), ("clean", int(j.clean[t])),
                                   ("target_class", c), ("poisoned", p_t))}})
        say("  " + rate_text(min(a + s.batch, len(jobs)), len(jobs), _clock() - began,
                             "trials"))

    backdoor_info = None
    if "backdoor" in s.attacks:
        x_p = patch_images(data.x_test, s.patch)
        if isinstance(backend, NNBackend):
            bj, bP, bR = backend.judges(["P1"], x_test=x_p)
        else:  # every classifier on every patched test point: minutes on a large run
            began = _clock()
            bj, bP, bR = backend.judges(["P1"], x_test=x_p, progress=_progress_lines(
                say, "clean ensemble on the patched test points", "predictions"))
            say(f"  backdoor: the clean ensemble on "
                f"{counted(len(x_p), 'patched test point')} in {clock_text(_clock() - began)}")
        pool = data.poison_idx[data.y_train[data.poison_idx] != s.backdoor_label]
        order = rng.permutation(pool)
        evaluate = labels != s.backdoor_label
        backdoor_info = {"label": s.backdoor_label, "class": class_id(s.backdoor_label),
                         "patch": s.patch, "test_points": int(evaluate.sum())}
        for b, r in enumerate(s.budgets):
            began = _clock()
            e = builder.backdoor(r, s.backdoor_label, s.patch, order)
            if isinstance(backend, NNBackend):
                preds = {bj[0].name: backend.poisoned_all(e, x_p)}
                n_re = 0
            else:
                preds, n_re = backend.poisoned([e], bj, bP, bR, x_test=x_p,
                                               progress=_retraining_lines(say))[0]
            for j in bj:
                rad, p = j.radius["P1"], preds[j.name]
                within = evaluate & (rad >= e.n_added)  # the insertions made (<= r)
                outside = evaluate & (rad < e.n_added)
                beyond = outside & (j.clean != s.backdoor_label)
                st = tally(j, "backdoor", r)
                st["trials"] += int(evaluate.sum())
                st["within"] += int(within.sum())
                st["changed_within"] += int(np.sum(within & (p != j.clean)))
                st["beyond"] += int(beyond.sum())
                st["success_beyond"] += int(np.sum(beyond & (p == s.backdoor_label)))
                # neither within nor beyond: the clean prediction already is the label
                st["already_label"] += int(np.sum(outside & (j.clean == s.backdoor_label)))
                st["retrained"] += n_re
                st["backdoor_success_all"] = float(np.mean(p[evaluate] == s.backdoor_label))
                st["clean_backdoor_rate"] = float(np.mean(j.clean[evaluate]
                                                          == s.backdoor_label))
            say(f"  backdoor r={r} ({b + 1}/{len(s.budgets)}): {counted(n_re, 'classifier')} "
                f"retrained in {clock_text(_clock() - began)}")

    order = ("vote", "roe", "knn", "rnn")
    summary = [stats[k] for k in sorted(stats, key=lambda k: (order.index(k[0]),
                                                             ATTACKS.index(k[1]), k[2]))]
    totals = _totals(summary)
    totals.update({"run": str(rd.path), "scheme": scheme, "targets": targets.tolist(),
                   "targets_wanted": s.targets_wanted,
                   "budgets": list(s.budgets), "attacks": list(s.attacks),
                   "copies": s.copies, "max_radius": s.max_radius,
                   "seed": s.seed, "backdoor": backdoor_info,
                   "seconds": round(time.perf_counter() - t0, 2)})
    paths = _write(out, summary, trials, totals, judges, labels, cfg)
    return AttackResult(summary=summary, trials=trials, totals=totals, paths=paths,
                        seconds=time.perf_counter() - t0)


def _refuse_no_targets(s: AttackSettings, primary: Judge, labels: np.ndarray) -> None:
    """The targeted attacks found no target: no correctly classified test point, or none
    certified at most ``max_radius``. One line saying which (and the smallest radius there
    is), before any trial; it ran none and wrote empty files, an empty panel and matplotlib's
    "No artists with labels found to put in legend" as a warning."""
    model = ATTACK_MODEL[s.attacks[0]]
    ok = primary.clean == labels
    if s.max_radius is None or not ok.any():
        named = ", ".join(a for a in s.attacks if a != "backdoor")
        raise ValueError(f"The targeted attacks ({named}) need a correctly classified test "
                         f"point to attack; the run's "
                         f"{primary.name} classifies none of its {len(labels)} correctly.")
    raise param_error("max_radius", "attack_run", "at least the smallest radius of a correctly "
                      f"classified test point ({int(primary.radius[model][ok].min())}: "
                      f"{primary.name}, {model}, the first attack's model) for the targeted "
                      "attacks to have a target", s.max_radius)


def _totals(summary: list[dict]) -> dict:
    out: dict = {}
    for kind in ("deterministic", "probabilistic"):
        rows = [r for r in summary if r["probabilistic"] == (kind == "probabilistic")]
        out[kind] = {k: int(sum(r[k] for r in rows)) for k in
                     ("trials", "within", "changed_within", "beyond", "success_beyond",
                      "already_label", "untargeted_checked", "untargeted_changed")}
        targeted = [r for r in rows if r["attack"] != "backdoor"]
        out[kind]["targeted_within"] = int(sum(r["within"] for r in targeted))
        out[kind]["targeted_changed_within"] = int(sum(r["changed_within"] for r in targeted))
    return out


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    keys = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _write(out: Path, summary, trials, totals, judges, labels, cfg) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trials": out / ATTACK_CSV, "summary": out / ATTACK_SUMMARY,
             "json": out / ATTACK_JSON, "plot": out / ATTACK_PNG}
    from poisoncert.plots import plot_attack

    curves = {}
    for j in judges:
        for model, rad in j.radius.items():
            if model == "P2" and np.array_equal(rad, j.radius.get("P1")):
                continue  # the same curve as P1 (hash buckets: one bucket per operation)
            top = int(max(rad.max(initial=0), 0)) + 1
            rho = np.arange(top + 1)
            ok = np.sort(rad[(j.clean == labels) & (j.clean >= 0)])
            acc = (ok.size - np.searchsorted(ok, rho, side="left")) / len(labels)
            curves[f"{j.name}, {model}"] = (rho, acc)
    # the data as the run took it: "digits 1 vs 7", not "digits" of all ten classes
    fig = plot_attack(curves, summary, title=f"{data_text(cfg)}, {cfg.selection.scheme}")
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=150)
    # every file made first, then the earlier set removed and the new one written, attack.json
    # last (as certify writes its set): a kill or a full disk never leaves this attack's
    # trials beside an earlier attack's summary or attack.json
    outputs = {paths["trials"]: _csv(trials).encode(),
               paths["summary"]: _csv(summary).encode(), paths["plot"]: png.getvalue(),
               paths["json"]: (json.dumps(totals, indent=1) + "\n").encode()}
    for path in outputs:
        path.unlink(missing_ok=True)
    # clean: the temporary files of a killed attack's write (an --out folder is no run,
    # whose lock holder removes them) are removed, a live writer's left
    runs.save_all(outputs, others="the attack's other results", again="run the same command again",
             clean=True)
    return paths
