"""Retrain only the base classifiers a change of the training set touches.

``load_ensemble(run_dir)`` reads a trained run (config, data, sub-datasets, seeds, votes and,
where stored, rankings) as a ``LoadedRun``: not ``poisoncert.Ensemble`` (the saved classifiers
in use), but what retraining needs, including the group size the run trained with (its
manifest's ``engine.group_size`` for ``group_size: auto``), so that a retrained classifier is
trained exactly as in the run. ``variant(ens, edits)`` describes the ensemble after ``edits``
(``experiment.edits``): the new sub-datasets and the classifiers whose training sequence
changed (``edits.changed_classifiers``). ``retrain(ens, variants)`` trains the changed
classifiers of many variants in one call of the run's learner: their sub-datasets index one
pool (the run's training set followed by every variant's new rows), and classifier ``i``
depends only on its own sequence of samples, its seed and the config, never on the other
classifiers of its group (``training.train_predict``'s determinism), so each result is the
classifier a full retraining of that variant would give, bit for bit on the same machine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisoncert import runs, selection
from poisoncert.config import ExperimentConfig
from poisoncert.experiment import learners
from poisoncert.experiment.edits import (
    EditPlan,
    Edits,
    changed_classifiers,
    edit_plan,
    edited_bucket_ids,
)
from poisoncert.experiment.ranks import RANKS, train_predict_ranks
from poisoncert.experiment.split import DataSplit, split_data, subset_plan
from poisoncert.runs import RunDir, RunError

__all__ = ["LoadedRun", "Retrained", "Variant", "load_ensemble", "retrain", "variant"]


@dataclass(eq=False)
class LoadedRun:
    """A trained run in memory: ``subsets[i]`` are classifier ``i``'s training-set indices,
    ``predictions`` its votes ``(T, n_test)``, ``ranks`` its rankings (or None),
    ``group_size`` the group size it trained with (``training.groups.recorded_group_size``),
    ``subset_rows`` its recorded ``training.subset_rows``, ``path`` its engine path
    (``training.groups.recorded_path``: ``fast`` resolved as it trained)."""

    run_dir: Path
    cfg: ExperimentConfig
    data: DataSplit
    plan: selection.SubsetPlan
    seeds: np.ndarray
    subsets: list[np.ndarray]
    predictions: np.ndarray
    ranks: np.ndarray | None = None
    group_size: int = 1
    subset_rows: int | None = None
    path: str = "twin"
    _learner: object = None

    @property
    def T(self) -> int:
        return int(len(self.seeds))

    @property
    def learner(self):
        if self._learner is None:
            if self.cfg.algorithm.two_phase:
                raise RunError("Retraining a two-phase run is not supported (its phase-2 "
                               "model is trained on D^c, which every change would touch).")
            self._learner = learners.make_learner(self.train_cfg, self.data)
        return self._learner

    @property
    def train_cfg(self) -> ExperimentConfig:
        """The config the learner trains and predicts with: the run's, with the group size,
        subset rows and engine path it recorded (as ``train_run`` resolves them)."""
        from poisoncert.experiment.train import resolved_config

        if self.cfg.training.sklearn_learner is not None:
            return self.cfg
        return resolved_config(self.cfg, self.group_size, self.subset_rows, self.path)

    @property
    def ranges(self) -> list[tuple[int, int]]:
        """The run's chunks (whole groups of ``group_size``)."""
        return runs.chunk_ranges(self.T, self.cfg.run.chunk_size, self.group_size)

    def weights(self, classifiers=None) -> list[dict | None]:
        """The saved ``state_dict`` s of ``classifiers`` (default: all; kept unless
        ``training.save_weights`` is false)."""
        from poisoncert.training.weights import load_weights

        rd = RunDir(self.run_dir)
        if not self.cfg.keeps_weights or not rd.weights_dir.is_dir():
            raise RunError(f"The run '{self.run_dir}' has no saved weights (train it with "
                           "training.save_weights, the default for torch models).")
        want = range(self.T) if classifiers is None else [int(i) for i in classifiers]
        ranges = self.ranges
        out: dict[int, dict | None] = {}
        cache: dict[int, list] = {}
        for i in want:
            cid = next(c for c, (a, b) in enumerate(ranges) if a <= i < b)
            if cid not in cache:
                cache[cid] = load_weights(rd.weights_path(cid))
            out[i] = cache[cid][i - ranges[cid][0]]
        return [out[i] for i in want]


def load_ensemble(run_dir: str | Path, *, data: DataSplit | None = None,
                  verify: bool = True, verify_progress=None) -> LoadedRun:
    """Read a trained partition, finite_aggregation or bagging run, first checked against its
    manifest (``RunDir.verify``, unless ``verify`` is false; ``verify_progress``: a display of
    the checksums, in MiB read); its data are loaded again and checked against the run's
    checksum."""
    rd = RunDir(run_dir)
    if verify:
        rd.verify() if verify_progress is None else rd.verify(verify_progress)
    cfg = rd.load_config()
    if cfg.selection.scheme in selection.NEAREST_NEIGHBOURS:
        raise RunError(f"'{rd.path}' is a {cfg.selection.scheme} run: it has no base "
                       "classifiers to retrain.")
    manifest = rd.load_manifest()
    # its classifiers are kept beside ones trained now (update) or poisoned copies (attack):
    # both need the data they were trained on
    runs.require_data_checksum(rd.path, manifest)
    if data is None:
        data = split_data(cfg.data)
    runs.refuse_changed_data(rd.path, manifest, data.summary.sha256_arrays,
                             since="have changed since it was trained",
                             then="restore the data it was trained on, or train a new run on "
                                  "these data")
    _check_model_code(rd, cfg, manifest)
    plan = subset_plan(cfg.selection, data)
    seeds = rd.load(runs.SEEDS)
    subsets = [plan.indices(i, int(s)) for i, s in enumerate(seeds)]
    ranks = np.load(rd / RANKS, allow_pickle=False) if (rd / RANKS).exists() else None
    from poisoncert.training.groups import recorded_group_size, recorded_path, recorded_subset_rows

    return LoadedRun(run_dir=rd.path, cfg=cfg, data=data, plan=plan, seeds=seeds,
                     subsets=subsets, predictions=rd.load(runs.PREDICTIONS), ranks=ranks,
                     group_size=recorded_group_size(cfg.training, manifest),
                     subset_rows=recorded_subset_rows(cfg.training, manifest),
                     path=recorded_path(cfg.execution.path, cfg.execution.device, manifest,
                                       training=cfg.training))


@dataclass(frozen=True, eq=False)
class Variant:
    """The ensemble after ``edits``: its plan, sub-datasets (new row indices), draw sizes and
    the classifiers to retrain (``changed``)."""

    edits: Edits
    ep: EditPlan
    plan: selection.SubsetPlan
    subsets: list[np.ndarray]
    sizes: np.ndarray
    changed: np.ndarray


def variant(ens: LoadedRun, edits: Edits, *, deskew_added: bool | None = None,
            keep_p: bool = False) -> Variant:
    """What ``edits`` change in ``ens`` (nothing is trained). Added inputs are deskewed when
    the run's data are (``data.deskew``).

    ``keep_p``: binomial selection keeps the run's ``p``, where the config gives ``ns``
    (``p = ns / n`` of the run's own set). An attack must: the certificate holds ``p`` fixed
    (``certificates.md``), and ``p = ns / m`` of the poisoned set is another learner, whose
    predictions the certificate does not cover. Without it (``update``), the edited set is a
    new run's training set and its ``ns`` gives its own ``p``, as training that config anew
    does."""
    deskew = ens.cfg.data.deskew if deskew_added is None else deskew_added
    if deskew and edits.n_added:
        from poisoncert.data.transforms import deskew as deskew_images

        edits = dataclasses.replace(edits, add_x=deskew_images(np.asarray(edits.add_x)))
    ep = edit_plan(ens.data, edits)
    sel = ens.cfg.selection
    part_of = None
    if sel.scheme in selection.BUCKET_SCHEMES:
        part_of = edited_bucket_ids(ens.plan.part_of, ens.data, ep, sel.n_classifiers)
    if sel.scheme == selection.FINITE_AGGREGATION:
        plan = selection.SubsetPlan(sel.scheme, ep.poison_idx, ep.clean_idx, part_of=part_of,
                                    k=sel.k, d=sel.d)
    elif keep_p and sel.scheme == "binomial":
        plan = selection.SubsetPlan(sel.scheme, ep.poison_idx, ep.clean_idx, p=ens.plan.p)
    else:
        sel.size(len(ep.poison_idx))
        plan = selection.SubsetPlan(sel.scheme, ep.poison_idx, ep.clean_idx, ns=sel.ns,
                                    p=sel.p, part_of=part_of)
    subsets, sizes = plan.subsets(0, ens.seeds)
    changed = changed_classifiers(ens.subsets, subsets, ep)
    return Variant(edits=edits, ep=ep, plan=plan, subsets=subsets, sizes=sizes,
                   changed=changed)


@dataclass(frozen=True, eq=False)
class Retrained:
    """The retrained classifiers of one variant: ``classifiers`` (ids), their votes ``(m,
    n_test)``, rankings ``(m, n_test, C)`` (or None) and weights (or None)."""

    classifiers: np.ndarray
    predictions: np.ndarray
    ranks: np.ndarray | None
    weights: list | None


def retrain(ens: LoadedRun, variants: list[Variant], *, x_test: np.ndarray | None = None,
            ranks: bool = False, weights: bool = False, progress=None) -> list[Retrained]:
    """Train the changed classifiers of every variant (one call of the run's learner) and
    return, per variant, their votes on ``x_test`` (default: the run's test set), rankings
    (``ranks``: a torch learner) and ``state_dict`` s (``weights``)."""
    data = ens.data
    n0 = len(data.y_train)
    xs, ys, offsets = [data.x_train], [data.y_train], []
    off = n0
    for v in variants:
        offsets.append(off)
        xs.append(v.ep.x_new)
        ys.append(v.ep.y_new)
        off += len(v.ep.y_new)
    subsets, seeds = [], []
    for v, o in zip(variants, offsets, strict=True):
        to_pool = np.where(v.ep.origin >= 0, v.ep.origin, o + np.maximum(v.ep.fresh, 0))
        for i in v.changed.tolist():
            subsets.append(to_pool[v.subsets[i]])
            seeds.append(int(ens.seeds[i]))
    out = []
    if not subsets:  # no classifier changed: nothing to train
        return [Retrained(v.changed, np.zeros((0, len(data.y_test if x_test is None
                                                      else x_test)), np.int16), None,
                          [] if weights else None)
                for v in variants]
    pool = dataclasses.replace(data, x_train=np.concatenate(xs) if len(xs) > 1 else xs[0],
                               y_train=np.concatenate(ys) if len(ys) > 1 else ys[0],
                               x_test=data.x_test if x_test is None else x_test)
    learner = ens.learner
    if isinstance(learner, learners.TorchLearner) and learner.keep_weights != weights:
        learner = dataclasses.replace(learner, keep_weights=weights)
    seeds_arr = np.asarray(seeds, dtype=np.uint64)
    if ranks:
        preds, rk, w = train_predict_ranks(learner, pool, subsets, seeds_arr, progress)
    else:
        preds, w = learner.train_predict(pool, subsets, seeds_arr, progress)
        rk = None
    preds = np.asarray(preds, dtype=np.int16)
    a = 0
    for v in variants:
        m = len(v.changed)
        out.append(Retrained(v.changed, preds[a:a + m], None if rk is None else rk[a:a + m],
                             None if w is None else list(w[a:a + m])))
        a += m
    return out


def _check_model_code(rd: RunDir, cfg, manifest: dict) -> None:
    """Refuse a run whose user model's code changed since it was trained (the manifest's
    record, else ensemble.json's): retrained classifiers would come from other code than the
    ones kept."""
    import json

    from poisoncert.experiment.ensemble_record import ENSEMBLE_JSON, check_model_source

    source = manifest.get("model_source")
    if source is None and (rd / ENSEMBLE_JSON).is_file():
        try:
            source = (json.loads((rd / ENSEMBLE_JSON).read_text()).get("model") or {}).get(
                "source")
        except (OSError, ValueError, AttributeError, RecursionError):
            source = None
    check_model_source(cfg, source, then="the classifiers retrained now would come from "
                                         "other code than the ones kept (restore the code)")
