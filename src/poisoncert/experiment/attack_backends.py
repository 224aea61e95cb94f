"""What ``attack_run`` compares: each aggregation's clean predictions and certified radii
(``Judge``), and a run's predictions after edits of its training set (the backends).

``ClassifierBackend`` retrains exactly the base classifiers the edits touch
(``experiment.retrain``) and recounts the votes (and the run-off election where the run
stored rankings); ``NNBackend`` searches the neighbours of kNN / rNN again in the poisoned
training set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poisoncert import certify as certificates
from poisoncert import runs, selection
from poisoncert.experiment.edits import Edits
from poisoncert.runs import RunDir, RunError
from poisoncert.votes import majority_vote, votes_from_predictions

__all__ = ["ClassifierBackend", "Judge", "NNBackend", "judges"]


# --------------------------------------------------------------------------------------------
# Judges: an aggregation, its clean predictions and its certificates


@dataclass(eq=False)
class Judge:
    name: str                      # vote | roe | knn | rnn
    probabilistic: bool
    clean: np.ndarray              # clean prediction per test point
    radius: dict[str, np.ndarray]  # model -> radius per test point (operations; -1: none)


def _certify(cfg, name: str, model: str, *, preds=None, ranks=None, votes=None,
             neighbors=None, n: int = 0) -> np.ndarray:
    from poisoncert import aggregation, knn, runoff

    sel = cfg.selection
    if name == "roe":
        d = sel.d if sel.scheme == selection.FINITE_AGGREGATION else 1
        return runoff.roe_certify(ranks, d=d, model=model).radius
    if name == "knn":
        return knn.knn_certify(neighbors.astype(np.int64), k=sel.k, n_classes=votes.shape[1],
                               model=model, n_train=n or None).radius
    if name == "rnn":
        return knn.rnn_certify(votes, model=model).radius
    if sel.scheme == selection.PARTITION:
        return certificates.dpa_certify(votes, model=model).radius
    if sel.scheme == selection.FINITE_AGGREGATION:
        return aggregation.fa_certify(preds, d=sel.d, n_classes=votes.shape[1],
                                      model=model).radius
    c = cfg.certify
    return certificates.certify(votes, scheme=sel.scheme, n=n, ns=sel.ns, p=sel.p,
                                model=model, alpha=c.alpha,
                                method=c.method if not c.method.startswith("true_label")
                                else "bonferroni", T=cfg.T).radius


def judges(cfg, models, *, preds=None, ranks=None, votes=None, neighbors=None, nn_pred=None,
            n: int = 0) -> list[Judge]:
    scheme = cfg.selection.scheme
    if scheme in selection.NEAREST_NEIGHBOURS:
        return [Judge(scheme, False, nn_pred, {m: _certify(cfg, scheme, m, votes=votes,
                                                            neighbors=neighbors, n=n)
                                                for m in models})]
    out = [Judge("vote", scheme not in selection.BUCKET_SCHEMES, majority_vote(votes),
                  {m: _certify(cfg, "vote", m, preds=preds, votes=votes, n=n)
                   for m in models})]
    if ranks is not None:
        from poisoncert.runoff import roe_predict

        out.append(Judge("roe", False, roe_predict(ranks),
                          {m: _certify(cfg, "roe", m, ranks=ranks) for m in models}))
    return out


# --------------------------------------------------------------------------------------------
# Backends: the poisoned predictions of a run after edits


class ClassifierBackend:
    """Base classifiers retrained where the edits touch them."""

    def __init__(self, ens):
        self.ens = ens
        self.C = ens.data.n_classes

    def judges(self, models, *, x_test=None,
               progress=None) -> tuple[list[Judge], np.ndarray, np.ndarray]:
        """The judges of ``models`` on ``x_test`` (default: the run's test set), with the
        clean outputs they judge from; ``progress``: as ``clean_outputs`` takes it."""
        P, R = self.clean_outputs(x_test, progress=progress)
        votes = votes_from_predictions(P, self.C)
        return (judges(self.ens.cfg, models, preds=P, ranks=R, votes=votes,
                        n=len(self.ens.data.poison_idx)), P, R)

    def clean_outputs(self, x_test=None, progress=None):
        """The clean ensemble's votes and rankings on ``x_test`` (default: the run's).
        ``progress(total, unit)``: called with the work's size (``T * n`` "predictions"; ``T``
        "classifiers" where the run kept no weights and every classifier is trained again),
        it returns an ``advance(k)`` (or None)."""
        ens = self.ens
        if x_test is None:
            return ens.predictions, ens.ranks
        want_ranks = ens.ranks is not None
        try:
            state = ens.weights()
        except RunError:
            state = None
        if state is not None:
            from poisoncert import training
            from poisoncert.experiment.ranks import logits_to_votes

            t = ens.cfg.training
            advance = progress(len(state) * len(x_test), "predictions") if progress else None
            logits = training.predict(t, state, x_test, input_shape=x_test.shape[1:],
                                      n_classes=self.C, device=ens.cfg.execution.device,
                                      path=ens.path, output="logits", progress=advance,
                                      progress_unit="predictions")
            return logits_to_votes(logits, np.array([s is None for s in state]),
                                   ranks=want_ranks)
        # no weights: every classifier trained again on its own sub-dataset
        from poisoncert.experiment.retrain import Variant, retrain, variant

        v = variant(ens, Edits())
        v = Variant(edits=v.edits, ep=v.ep, plan=v.plan, subsets=v.subsets, sizes=v.sizes,
                    changed=np.arange(ens.T))
        res = retrain(ens, [v], x_test=x_test, ranks=want_ranks,
                      progress=progress(ens.T, "classifiers") if progress else None)[0]
        return res.predictions, res.ranks

    def poisoned(self, edits_list, judges, clean_P, clean_R, x_test=None, progress=None):
        """Per edits: ``({judge name: predictions}, retrained count)``. ``progress``: called
        with the number of classifiers to retrain, it returns the learner's ``advance(k)``
        (or None)."""
        from poisoncert.experiment.retrain import retrain, variant
        from poisoncert.runoff import roe_predict

        ens = self.ens
        # the certified learner; the attacks' inputs (test points, training samples) are
        # already preprocessed: deskewing them again moved every insertion elsewhere (and
        # into other buckets than the attack chose)
        vs = [variant(ens, e, keep_p=True, deskew_added=False) for e in edits_list]
        advance = progress(sum(len(v.changed) for v in vs)) if progress else None
        res = retrain(ens, vs, x_test=x_test, ranks=clean_R is not None, progress=advance)
        out = []
        for v, r in zip(vs, res, strict=True):
            P = clean_P.copy()
            P[r.classifiers] = r.predictions
            preds = {"vote": majority_vote(votes_from_predictions(P, self.C))}
            if clean_R is not None and any(j.name == "roe" for j in judges):
                R = clean_R.copy()
                R[r.classifiers] = r.ranks
                preds["roe"] = roe_predict(R)
            out.append((preds, len(v.changed)))
        return out


class NNBackend:
    """kNN / rNN: the neighbours searched again in the poisoned training set."""

    def __init__(self, rd: RunDir, cfg, data):
        from poisoncert.experiment.neighbors import pixel_features

        self.cfg, self.data, self.rd = cfg, data, rd
        self.C = data.n_classes
        feats, self.scale = pixel_features(data.x_train)
        self.x_int = feats.astype(np.int32)
        self.name = cfg.selection.scheme

    def judges(self, models, *, x_test=None):
        from poisoncert.experiment.neighbors import NEIGHBORS, nn_outputs

        if x_test is None:
            neighbors = (self.rd.load(NEIGHBORS) if self.name == "knn" else None)
            votes = self.rd.load(runs.VOTES)
            pred = self.rd.load(runs.PREDICTIONS)[0].astype(np.int64)
        else:
            neighbors, votes, pred = nn_outputs(self.cfg, self.data, x_test=x_test)
            pred = pred[0].astype(np.int64)
        return judges(self.cfg, models, votes=votes, neighbors=neighbors, nn_pred=pred,
                      n=len(self.data.y_train)), None, None

    def _ints(self, x) -> np.ndarray:
        from poisoncert.experiment.neighbors import pixel_features

        return pixel_features(np.asarray(x), scale=self.scale)[0].astype(np.int32)

    def predict_one(self, t: int, edits: Edits) -> int:
        """The poisoned classifier's prediction on test point ``t`` (exact integer distances,
        ties by training index as in ``knn.nearest_labels``)."""
        q = self._ints(self.data.x_test[t:t + 1])[0]
        d2 = ((self.x_int - q[None, :]).astype(np.int64) ** 2).sum(axis=1)
        y = self.data.y_train.astype(np.int64).copy()
        keep = np.ones(len(y), dtype=bool)
        keep[edits.remove] = False
        y[edits.relabel_index] = edits.relabel_label
        keys = np.flatnonzero(keep)
        d2, y = d2[keep], y[keep]
        if edits.n_added:
            a = self._ints(edits.add_x)
            d2 = np.concatenate([d2, ((a - q[None, :]).astype(np.int64) ** 2).sum(axis=1)])
            y = np.concatenate([y, edits.add_y])
            keys = np.concatenate([keys, len(self.data.y_train) + np.arange(edits.n_added)])
        s = self.cfg.selection
        if self.name == "knn":
            if len(y) < s.k:  # no k samples left: no prediction, as the certificate has it
                return -1
            order = np.lexsort((keys, d2))[:s.k]
            counts = np.bincount(y[order], minlength=self.C)
            return int(np.argmax(counts))
        counts = np.bincount(y[d2.astype(np.float64) <= s.r * s.r], minlength=self.C)
        return int(np.argmax(counts)) if counts.sum() else -1

    def poisoned_all(self, edits: Edits, x_test) -> np.ndarray:
        from poisoncert.experiment.edits import apply_edits
        from poisoncert.experiment.neighbors import nn_outputs

        new, _ = apply_edits(self.data, edits)
        return nn_outputs(self.cfg, new, x_test=x_test)[2][0].astype(np.int64)
