"""Finite Aggregation, run-off election and nearest-neighbour runs end to end: config, training
(resume, chunks, stored rankings), certification; ``update`` (retraining only what a change
touches, bit for bit equal to training the changed set from scratch) and ``attack`` (0 certified
predictions changed by real attacks within their radii).

Every run is scikit-learn's digits with a small torch MLP (a few seconds each).
"""

from __future__ import annotations

import copy
import csv
import json
import re

import numpy as np
import pytest
import yaml

from poisoncert import aggregation, knn, runoff, runs, selection
from poisoncert.config import ConfigError, config_hash, from_dict, to_yaml
from poisoncert.experiment import certify_run, split_data, train_run
from poisoncert.experiment.attack import AttackSettings, attack_run
from poisoncert.experiment.edits import Edits, apply_edits
from poisoncert.experiment.update import update_run
from poisoncert.runs import PREDICTIONS, RunDir, RunError

_BASE = {
    "data": {"name": "digits", "test_limit": 80},
    "selection": {"scheme": "partition", "k": 12, "seed": 3},
    "training": {"model": "mlp", "steps": 40, "batch_size": 16, "group_size": 4},
    "run": {"chunk_size": 8},
}


def _cfg(**over):
    d = copy.deepcopy(_BASE)
    for key, value in over.items():
        section, name = key.split("__")
        if value is None:
            d[section].pop(name, None)
        else:
            d[section][name] = value
    return from_dict(d)


def _fa(k=6, d=2, **over):
    return _cfg(selection__scheme="finite_aggregation", selection__k=k, selection__d=d, **over)


# --------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize("over, key", [
    ({"selection__scheme": "finite_aggregation"}, "selection.d"),
    ({"selection__scheme": "finite_aggregation", "selection__d": 2, "selection__T": 13},
     "selection.T"),
    ({"selection__d": 2}, "selection.d"),
    ({"selection__scheme": "knn", "selection__k": None}, "selection.k"),
    ({"selection__scheme": "rnn", "selection__k": None}, "selection.r"),
    ({"selection__scheme": "rnn", "selection__r": 3.0}, "selection.k"),
    ({"selection__scheme": "with_replacement", "selection__k": None, "selection__ns": 5,
      "selection__T": 4, "run__store_ranks": True}, "run.store_ranks"),
    ({"training__model": "sklearn:svm", "run__store_ranks": True}, "run.store_ranks"),
])
def test_config_errors_name_the_key(over, key):
    with pytest.raises(ConfigError, match=f"'{key}' parameter of the config"):
        _cfg(**over)


def test_new_keys_stay_out_of_old_files_and_hashes():
    plain = _cfg()
    d = yaml.safe_load(to_yaml(plain))
    assert "d" not in d["selection"] and "r" not in d["selection"]
    assert "store_ranks" not in d["run"] and "edits" not in d["data"]
    assert "aggregation" not in (d.get("certify") or {})
    assert config_hash(_cfg(run__store_ranks=False)) == config_hash(plain)
    assert config_hash(_cfg(run__store_ranks=True)) != config_hash(plain)
    fa = _fa()
    assert fa.T == 12 and "d: 2" in to_yaml(fa)
    assert from_dict(yaml.safe_load(to_yaml(fa))) == fa


# --------------------------------------------------------------------------------------------
# Finite Aggregation and stored rankings


def test_fa_with_d_1_is_the_partition_scheme(tmp_path):
    dpa = train_run(_cfg(), tmp_path / "dpa")
    fa1 = train_run(_fa(k=12, d=1), tmp_path / "fa1")
    assert np.array_equal(dpa.predictions, fa1.predictions)
    c_dpa, t_dpa = certify_run(tmp_path / "dpa", plot=False, model="P3")
    c_fa, t_fa = certify_run(tmp_path / "fa1", plot=False, model="P3")
    assert np.array_equal(c_dpa.radius, c_fa.radius)
    assert np.array_equal(c_dpa.slack // 2, c_fa.buckets)
    assert np.array_equal(t_dpa.accuracy, t_fa.accuracy)
    rows = list(csv.DictReader(open(tmp_path / "fa1" / "certificates.csv")))
    assert [int(r["radius_dpa"]) for r in rows] == (c_dpa.slack // 2).tolist()


def test_fa_trains_each_classifier_on_its_buckets(tmp_path):
    cfg = _fa(k=4, d=3)
    res = train_run(cfg, tmp_path / "fa")
    data = split_data(cfg.data)
    p = data.poison_idx
    buckets = selection.fa_bucket_ids(data.x_train[p], data.y_train[p], k=4, d=3)
    want = selection.fa_classifier_indices(buckets, k=4, d=3)
    from poisoncert.experiment import run_subsets

    _, subsets = run_subsets(tmp_path / "fa")
    assert all(np.array_equal(s, p[w]) for s, w in zip(subsets, want, strict=True))
    assert np.array_equal(res.subset_sizes, [len(w) for w in want])
    cert, _ = certify_run(tmp_path / "fa", plot=False)
    direct = aggregation.fa_certify(res.predictions, d=3, n_classes=10, model="P6")
    assert np.array_equal(cert.radius, direct.radius)


def test_stored_ranks_match_the_votes_and_resume(tmp_path):
    plain = train_run(_fa(), tmp_path / "plain")
    cfg = _fa(run__store_ranks=True)
    res = train_run(cfg, tmp_path / "ranked")
    ranks = np.load(tmp_path / "ranked" / "ranks.npy")
    assert ranks.dtype == np.int8 and ranks.shape == (12, 80, 10)
    assert np.array_equal(res.predictions, plain.predictions)
    live = res.predictions >= 0
    assert np.array_equal(ranks.argmin(-1)[live], res.predictions[live])
    runoff.check_ranks(ranks)
    # a chunk whose rankings are missing is trained again on resume, to the same bits
    (tmp_path / "ranked" / "ranks" / "chunk-00001.npy").unlink()
    again = train_run(cfg, tmp_path / "ranked")
    assert again.chunks_trained == 1
    assert np.array_equal(np.load(tmp_path / "ranked" / "ranks.npy"), ranks)
    # and so is one whose rankings were edited (they were joined into ranks.npy as they were,
    # changing the run-off certificates, and the run verified): its chunk records their hash
    part = tmp_path / "ranked" / "ranks" / "chunk-00000.npy"
    edited = np.load(part)
    np.save(part, np.where(edited == 0, 0, 10 - edited).astype(np.int8))  # same first choice
    again = train_run(cfg, tmp_path / "ranked")
    assert again.chunks_trained == 1
    assert np.array_equal(np.load(tmp_path / "ranked" / "ranks.npy"), ranks)
    cert, table = certify_run(tmp_path / "ranked", plot=False, aggregation="roe")
    assert (tmp_path / "ranked" / "certificates_roe.csv").exists()
    assert np.array_equal(cert.radius, runoff.roe_certify(ranks, d=2, model="P6").radius)
    from typer.testing import CliRunner

    from poisoncert.cli import app

    r = CliRunner().invoke(app, ["certify", str(tmp_path / "ranked"), "--aggregation", "roe",
                                 "--no-plot"])  # the setting line names the run-off election
    assert r.exit_code == 0
    assert "scheme finite_aggregation, aggregation roe (run-off election), " in r.output
    with pytest.raises(RunError, match="store_ranks"):
        certify_run(tmp_path / "plain", plot=False, aggregation="roe")


# --------------------------------------------------------------------------------------------
# Nearest neighbours


def test_knn_and_rnn_runs(tmp_path):
    res = train_run(_cfg(selection__scheme="knn", selection__k=5), tmp_path / "knn")
    data = split_data(from_dict(_BASE).data)
    x = np.rint(data.x_train.reshape(len(data.x_train), -1) * 16)
    xt = np.rint(data.x_test.reshape(len(data.x_test), -1) * 16)
    labels, _ = knn.nearest_labels(x, data.y_train, xt, 10)
    assert np.array_equal(np.load(tmp_path / "knn" / "neighbors.npy"), labels)
    assert np.array_equal(res.votes, knn.knn_votes(x, data.y_train, xt, 5, n_classes=10))
    cert, _ = certify_run(tmp_path / "knn", plot=False, model="P1")
    assert np.array_equal(cert.radius, knn.knn_certify(labels, k=5, n_classes=10,
                                                       model="P1").radius)
    train_run(_cfg(selection__scheme="rnn", selection__k=None, selection__r=20.0),
              tmp_path / "rnn")
    cert, _ = certify_run(tmp_path / "rnn", plot=False)
    votes = knn.rnn_votes(x, data.y_train, xt, 20.0, n_classes=10)
    assert np.array_equal(cert.radius, knn.rnn_certify(votes).radius)
    from poisoncert import Ensemble

    assert not (tmp_path / "knn" / "weights").exists()
    # no classifiers to load: the training set, searched for new inputs as for the test set
    # (tests/test_nn_predict.py)
    ens = Ensemble.load(tmp_path / "knn")
    assert type(ens).__name__ == "NeighborModel"
    cert, _ = certify_run(tmp_path / "knn", plot=False, model="P1")
    assert np.array_equal(ens.certify(data.x_test, model="P1").radius, cert.radius)
    # the command line does not count the search as "1 base classifiers" trained
    from typer.testing import CliRunner

    from poisoncert.cli import app

    (tmp_path / "k.yaml").write_text(to_yaml(_cfg(selection__scheme="knn", selection__k=5)))
    r = CliRunner().invoke(app, ["train", str(tmp_path / "k.yaml"), "--run-dir",
                                 str(tmp_path / "knn2"), "-q"])
    assert r.exit_code == 0, r.output
    assert f"Searched the neighbours of {len(xt)} test points (knn; no base classifiers)" \
        in r.output and "Trained" not in r.output
    # nor a mean base-classifier accuracy: the vote of the neighbours is the classifier
    assert "Accuracy " in r.output and "base-classifier" not in r.output, r.output


def _tamper(run, name, change, match_checksum, match_consistency):
    """Change ``name`` in a finished run: certify refuses it by its checksum, and a run without
    checksums (made before they were recorded) by the consistency of its arrays."""
    from poisoncert.runs import RunDir
    from poisoncert.runsafe import MANIFEST_DIGEST

    path = run / name
    arr = np.load(path)
    np.save(path, change(arr.copy()))
    with pytest.raises(RunError, match=match_checksum):
        RunDir(run).verify()
    man = json.loads((run / "manifest.json").read_text())
    for key in ("checksums", MANIFEST_DIGEST, "chunk_format"):  # as an earlier version's
        man.pop(key, None)
    (run / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(RunError, match=match_consistency):
        RunDir(run).verify()
    np.save(path, arr)
    assert RunDir(run).verify()["verified"] is False  # restored: consistent, unchecksummed


def test_rankings_and_neighbours_are_verified(tmp_path):
    train_run(_fa(k=4, d=1, run__store_ranks=True), tmp_path / "ranked")
    preds = np.load(tmp_path / "ranked" / "predictions.npy")
    i, t = np.argwhere(preds >= 0)[0]

    def swap_first(r):  # classifier i ranks another class first on test point t
        first, other = int(preds[i, t]), (int(preds[i, t]) + 1) % r.shape[2]
        r[i, t, first], r[i, t, other] = r[i, t, other], r[i, t, first]
        return r

    _tamper(tmp_path / "ranked", "ranks.npy", swap_first, "ranks.npy' was changed",
            "does not rank first")
    train_run(_cfg(selection__scheme="knn", selection__k=5), tmp_path / "knn")
    nb = np.load(tmp_path / "knn" / "neighbors.npy")

    def relabel_nearest(a):  # the nearest neighbour of point 0 gets another label
        a[0, 0] = (a[0, 0] + 1) % 10
        return a

    assert nb.shape[1] >= 5
    _tamper(tmp_path / "knn", "neighbors.npy", relabel_nearest, "neighbors.npy' was changed",
            "counts of the 5 nearest labels")


def test_rankings_added_to_a_run_that_stored_none_are_refused(tmp_path):
    """A ranks.npy put into a finished finite_aggregation run trained without
    run.store_ranks (no checksum of it recorded): certify --aggregation roe read it, checked
    only that each classifier's first choice is its vote, and certified the run-off election
    from the made-up rest as verified."""
    from poisoncert.experiment.certify import certify_run

    run = tmp_path / "run"
    train_run(_fa(k=4, d=1), run)
    preds = np.load(run / "predictions.npy")
    T, n = preds.shape
    ranks = np.tile(np.arange(10, dtype=np.int8), (T, n, 1))
    voted = preds >= 0
    first = np.where(voted, preds, 0)  # the vote ranked first, the rest in index order
    ranks[voted] = (ranks[voted] < first[voted][:, None]) + ranks[voted]
    ranks[voted, first[voted]] = 0
    assert np.array_equal(np.argmin(ranks, axis=2)[voted], preds[voted])
    np.save(run / "ranks.npy", ranks)
    with pytest.raises(RunError, match=r"ranks\.npy' was added after the run finished"):
        certify_run(run, aggregation="roe", plot=False)
    assert not (run / "certify_roe.json").exists()


# --------------------------------------------------------------------------------------------
# update


def test_update_removing_10_samples_from_dpa_equals_a_full_retrain(tmp_path):
    cfg = _cfg(training__save_weights=True, run__store_ranks=True)
    train_run(cfg, tmp_path / "run")
    data = split_data(cfg.data)
    remove = np.random.default_rng(5).choice(data.poison_idx, 10, replace=False)
    res = update_run(tmp_path / "run", tmp_path / "new", Edits(remove=remove))
    parts = selection.partition_ids(data.x_train[remove], data.y_train[remove], k=12)
    assert res.n_retrained <= 10
    assert sorted(res.retrained.tolist()) == sorted(set(parts.tolist()))
    scratch = train_run(tmp_path / "new" / "config.yaml", tmp_path / "scratch")
    assert np.array_equal(res.predictions, scratch.predictions)
    for name in ("votes.npy", "ranks.npy", "subset_sizes.npy", "clean_indices.npy"):
        assert np.array_equal(np.load(tmp_path / "new" / name),
                              np.load(tmp_path / "scratch" / name)), name
    _assert_same_weights(tmp_path / "new", tmp_path / "scratch")
    _check_loadable(tmp_path / "run", tmp_path / "new")


def test_update_removing_a_known_clean_sample_equals_a_full_retrain(tmp_path):
    """Removing a ``D^c`` sample changes ``|D^c| + ns``, the ``training.subset_rows`` a new
    run of the edited set resolves: the updated run's config writes out the value its
    classifiers trained with, so that training it from scratch gives the same bits (it gave
    other votes and weights, under the same config hash)."""
    cfg = _cfg(selection__scheme="without_replacement", selection__k=None, selection__ns=10,
               selection__T=8, data__n_clean=5, training__batch_size=32, training__steps=20)
    train_run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["engine"][
        "subset_rows"] == 15
    data = split_data(cfg.data)
    res = update_run(tmp_path / "run", tmp_path / "new", Edits(remove=data.clean_idx[:1]))
    assert yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())["training"][
        "subset_rows"] == 15
    scratch = train_run(tmp_path / "new" / "config.yaml", tmp_path / "scratch")
    assert np.array_equal(res.predictions, scratch.predictions)
    _assert_same_weights(tmp_path / "new", tmp_path / "scratch")
    # a removal from D^p keeps |D^c| + ns: the config stays as it was (null)
    update_run(tmp_path / "run", tmp_path / "dp", Edits(remove=data.poison_idx[:2]))
    assert "subset_rows" not in (tmp_path / "dp" / "config.yaml").read_text()


def _assert_same_weights(run_a, run_b):
    """The two runs' saved weights are equal, bit for bit, chunk by chunk."""
    from poisoncert.training.weights import load_weights

    files = [sorted((run / "weights").iterdir()) for run in (run_a, run_b)]
    for a, b in zip(*files, strict=True):
        for sa, sb in zip(load_weights(a), load_weights(b), strict=True):
            assert all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


def test_update_that_touches_no_classifier_copies_the_run(tmp_path):
    """Edits of samples no sub-dataset holds retrain nothing: the new run has the run's
    predictions and weights, equals a retrain from scratch and loads and certifies (it
    raised a TypeError while copying the weights)."""
    cfg = _cfg(selection__scheme="without_replacement", selection__k=None, selection__ns=20,
               selection__T=6, training__save_weights=True)
    train_run(cfg, tmp_path / "run")
    from poisoncert.experiment import run_subsets

    _, subsets = run_subsets(tmp_path / "run")
    unused = np.setdiff1d(np.arange(len(split_data(cfg.data).y_train)), np.concatenate(subsets))
    res = update_run(tmp_path / "run", tmp_path / "new",
                     Edits(relabel_index=unused[:2], relabel_label=np.array([1, 2])))
    assert res.n_retrained == 0
    train_run(tmp_path / "new" / "config.yaml", tmp_path / "scratch")
    for run in ("run", "scratch"):
        assert np.array_equal(res.predictions, np.load(tmp_path / run / "predictions.npy"))
    _assert_same_weights(tmp_path / "new", tmp_path / "scratch")
    _assert_same_weights(tmp_path / "new", tmp_path / "run")
    _check_loadable(tmp_path / "run", tmp_path / "new")


def _check_loadable(old, new):
    """The updated run is a saved ensemble like the one it came from: ``Ensemble.load`` checks
    every file (weights recorded as the new config's, ensemble.json), its classifiers give the
    run's predictions, and its certificate is ``certify_run``'s."""
    from poisoncert import Ensemble

    man = [json.loads((p / "manifest.json").read_text()) for p in (old, new)]
    assert man[1]["engine"] == man[0]["engine"]  # retrained with the run's group size
    ens = Ensemble.load(new)
    x = split_data(ens.config.data).x_test
    base = ens.base_predictions(x, preprocessed=True)
    assert np.array_equal(base, np.load(new / "predictions.npy"))
    cert = ens.certify(x, preprocessed=True)
    ref = certify_run(new, plot=False).certificate
    assert type(cert) is type(ref)
    assert np.array_equal(cert.prediction, ref.prediction)
    assert np.array_equal(cert.radius, ref.radius)


@pytest.mark.parametrize("kind", ["finite_aggregation", "with_replacement",
                                  "with_replacement_small"])
def test_chained_updates_equal_a_full_retrain(tmp_path, kind):
    """... bagging with sub-datasets smaller than a batch included: the update retrains with
    the subset rows the run recorded, as a new run from scratch picks them."""
    if kind == "finite_aggregation":
        cfg = _fa(k=4, d=3)
    else:
        ns, n_clean = (200, 30) if kind == "with_replacement" else (10, 3)
        kind = "with_replacement"
        cfg = _cfg(selection__scheme=kind, selection__k=None, selection__ns=ns,
                   selection__T=6, data__n_clean=n_clean)
    train_run(cfg, tmp_path / "a")
    rows = json.loads((tmp_path / "a" / "manifest.json").read_text())["engine"].get(
        "subset_rows")
    assert rows == (13 if cfg.selection.ns == 10 else None)
    add_x = (np.random.default_rng(1).integers(0, 17, (3, 1, 8, 8)).astype(np.float32)
             / np.float32(16))
    first = Edits(relabel_index=np.array([5, 6]), relabel_label=np.array([1, 2]))
    r1 = update_run(tmp_path / "a", tmp_path / "b", first)
    if kind == "with_replacement":  # n unchanged: only the draws that hold 5 or 6
        data = split_data(cfg.data)
        from poisoncert.experiment import run_subsets

        _, subsets = run_subsets(tmp_path / "a")
        touched = [i for i, s in enumerate(subsets) if np.isin([5, 6], s).any()]
        assert r1.retrained.tolist() == touched
        assert np.isin([5, 6], data.poison_idx).all()
    second = Edits(remove=np.array([0, 1400]), relabel_index=np.array([7]),
                   relabel_label=np.array([3]), add_x=add_x, add_y=np.array([0, 1, 2]))
    r2 = update_run(tmp_path / "b", tmp_path / "c", second)
    for name, res in (("b", r1), ("c", r2)):
        scratch = train_run(tmp_path / name / "config.yaml", tmp_path / f"{name}_scratch")
        assert np.array_equal(res.predictions, scratch.predictions)
        for run in (name, f"{name}_scratch"):
            engine = json.loads((tmp_path / run / "manifest.json").read_text())["engine"]
            assert engine.get("subset_rows") == rows
        assert np.array_equal(np.load(tmp_path / name / "clean_indices.npy"),
                              np.load(tmp_path / f"{name}_scratch" / "clean_indices.npy"))
    if kind == "with_replacement":  # removals change n: every draw
        assert r2.n_retrained == r2.T
    _check_loadable(tmp_path / "b", tmp_path / "c")


def test_relabelling_a_sample_with_its_own_label_retrains_nothing_for_it(tmp_path):
    """A relabelling to the label a sample has changes nothing: only the draws holding the
    other, real relabelling retrain; the new run equals a retrain from scratch; the command
    line says which indices changed and that one relabelling changed nothing."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment import run_subsets

    cfg = _cfg(selection__scheme="with_replacement", selection__k=None, selection__ns=200,
               selection__T=6)
    train_run(cfg, tmp_path / "run")
    data = split_data(cfg.data)
    _, subsets = run_subsets(tmp_path / "run")
    holds = {int(i): frozenset(k for k, s in enumerate(subsets) if i in s)
             for i in np.unique(np.concatenate(subsets))}
    i = next(a for a in holds if holds[a])  # held by some draw
    j = next(b for b in holds if holds[b] and not holds[i] <= holds[b])  # and i's not by j's
    own, other = int(data.y_train[i]), int(data.y_train[j] + 1) % 10
    res = update_run(tmp_path / "run", tmp_path / "new",
                     Edits(relabel_index=np.array([i, j]), relabel_label=np.array([own, other])))
    assert res.retrained.tolist() == sorted(holds[j]) and res.unchanged_relabels == 1
    scratch = train_run(tmp_path / "new" / "config.yaml", tmp_path / "scratch")
    assert np.array_equal(res.predictions, scratch.predictions)
    rm = [a for a in range(4) if a != i][:2]
    r = CliRunner().invoke(app, ["update", str(tmp_path / "run"), "--out", str(tmp_path / "c"),
                                 "--relabel", f"{i}:{own}", "--remove", f"{rm[0]},{rm[1]}"])
    assert r.exit_code == 0, r.output
    assert (f"Training set: removed 2 (indices {rm[0]}, {rm[1]}), relabelled 1 (index {i}; 1 "
            "already "
            f"had that label: nothing to retrain for it); it now has {len(data.y_train) - 2:,} "
            "samples") in " ".join(r.stdout.split()), r.stdout


@pytest.mark.parametrize("scheme, extra", [("knn", {"selection__k": 5}),
                                           ("rnn", {"selection__k": None,
                                                    "selection__r": 20.0})])
def test_update_of_a_knn_or_rnn_run_equals_training_the_new_config(tmp_path, scheme, extra):
    """``update`` of a knn / rnn run was refused ("it has no base classifiers to retrain"):
    it now searches the neighbours again in the edited training set, and the new run (after
    a second update of it too) equals ``train`` of its config.yaml file for file (the
    manifest's data record included), certifies alike and predicts its own test set."""
    from typer.testing import CliRunner

    from poisoncert import Ensemble
    from poisoncert.cli import app

    cfg = _cfg(selection__scheme=scheme, **extra)
    train_run(cfg, tmp_path / "a")
    data = split_data(cfg.data)
    r = CliRunner().invoke(app, ["update", str(tmp_path / "a"), "--out", str(tmp_path / "b"),
                                 "--remove", "1,5", "--relabel", "7:3", "-q"])
    assert r.exit_code == 0, r.output
    assert "Searched the neighbours of 80 test points" in " ".join(r.stdout.split()), r.stdout
    # a relabelling to the sample's own label: no "nothing to retrain for it" where nothing
    # is retrained at all (a fresh-eyes review)
    own = int(data.y_train[9])
    r = CliRunner().invoke(app, ["update", str(tmp_path / "a"), "--out", str(tmp_path / "o"),
                                 "--relabel", f"9:{own}", "-q"])
    assert r.exit_code == 0, r.output
    assert "relabelled 1 (index 9; 1 already had that label);" in r.stdout \
        and "retrain" not in r.stdout, r.stdout
    # --json says the neighbours were searched (its "n_retrained": 0 alone said nothing)
    r = CliRunner().invoke(app, ["update", str(tmp_path / "a"), "--out", str(tmp_path / "j"),
                                 "--remove", "1", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["neighbours_searched"] is True, r.output
    # Ctrl-C during the search: the line names the search, not retraining classifiers
    import poisoncert.experiment.neighbors as neighbors_mod

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(neighbors_mod, "search_nn", stop)
        r = CliRunner().invoke(app, ["update", str(tmp_path / "a"), "--out",
                                     str(tmp_path / "s"), "--remove", "1", "-q"])
    assert r.exit_code == 130 and r.stderr == (
        "interrupted: no new run was written (it is written once the neighbours are searched "
        "again); the same command starts over.\n"), r.output
    add_x = (np.random.default_rng(1).integers(0, 17, (3, 1, 8, 8)).astype(np.float32)
             / np.float32(16))
    second = Edits(remove=np.array([0, 1400]), add_x=add_x, add_y=np.array([0, 1, 2]))
    res = update_run(tmp_path / "b", tmp_path / "c", second)
    assert res.neighbours and res.n_retrained == 0 and res.n_train == len(data.y_train) - 1
    names = ["votes.npy", "predictions.npy", "labels.npy", "clean_indices.npy",
             "config.yaml"] + (["neighbors.npy"] if scheme == "knn" else [])
    for name in ("b", "c"):
        run, scratch = tmp_path / name, tmp_path / f"{name}_scratch"
        train_run(run / "config.yaml", scratch)
        for f in names:
            assert (run / f).read_bytes() == (scratch / f).read_bytes(), (name, f)
        man = [json.loads((p / "manifest.json").read_text()) for p in (run, scratch)]
        assert man[0]["data"] == man[1]["data"] and man[0]["results"] == man[1]["results"]
        assert man[0]["config_hash"] == man[1]["config_hash"]
        ref = certify_run(scratch, plot=False).certificate
        cert = certify_run(run, plot=False).certificate
        assert np.array_equal(cert.radius, ref.radius)
        assert np.array_equal(cert.prediction, ref.prediction)
    assert np.array_equal(res.predictions, np.load(tmp_path / "c" / "predictions.npy"))
    new_cfg = RunDir(tmp_path / "c").load_config()
    edited = split_data(new_cfg.data)
    assert len(edited.y_train) == res.n_train and new_cfg.data.edits is not None
    model = Ensemble.load(tmp_path / "c")
    got = model.certify(edited.x_test, preprocessed=True)
    assert np.array_equal(got.prediction, certify_run(tmp_path / "c", plot=False)
                          .certificate.prediction)


def test_update_of_a_knn_run_names_added_inputs_off_the_pixel_scale(tmp_path):
    """A knn / rnn run's distances are exact integers: ``update_run`` of one with ``add_x``
    that are not integer pixels at the training set's scale (digits: u / 16) was refused by
    the search with "The 'data.deskew' parameter of the config must be false ... Got True"
    for a config whose data.deskew is false (a fresh-eyes review). Now one line naming
    ``add_x`` and the scale, before anything is written; inputs at the scale still work."""
    cfg = _cfg(selection__scheme="knn", selection__k=3)
    train_run(cfg, tmp_path / "a")
    off = [np.full((1, 1, 8, 8), 0.3, np.float32),  # no scale's pixels
           np.full((1, 1, 8, 8), 3 / 255, np.float32)]  # 8-bit pixels; digits' are u / 16
    for i, add_x in enumerate(off):
        with pytest.raises(ValueError, match=r"^The 'add_x' parameter of update_run must be "
                           r"inputs whose values are integer pixels divided by 16 .*Got "):
            update_run(tmp_path / "a", tmp_path / f"o{i}",
                       Edits(add_x=add_x, add_y=np.array([1])))
        assert not (tmp_path / f"o{i}").exists()
    ok = np.full((1, 1, 8, 8), 3 / 16, np.float32)
    res = update_run(tmp_path / "a", tmp_path / "ok", Edits(add_x=ok, add_y=np.array([1])))
    assert res.neighbours and res.n_train == len(split_data(cfg.data).y_train) + 1


@pytest.mark.parametrize("scheme", ["knn", "partition"])
def test_update_names_a_bad_display_before_reading_the_run(tmp_path, monkeypatch, scheme):
    """``update_run``'s ``verify_progress`` was refused as "The 'progress' parameter", a
    parameter given right, and a bad ``progress`` only once the run's checksums and data were
    read (a knn run's after its data were loaded again; a fresh-eyes review). Each is now
    its own line naming it, before the run is read."""
    cfg = _cfg(selection__scheme="knn", selection__k=3) if scheme == "knn" else _cfg()
    train_run(cfg, tmp_path / "a")

    def read(*args, **kwargs):
        raise AssertionError("the run was read")

    monkeypatch.setattr(RunDir, "verify", read)
    for kw in ({"verify_progress": "yes"}, {"progress": "yes"}):
        name = next(iter(kw))
        with pytest.raises(ValueError, match=rf"^The '{name}' parameter of update_run must "
                                             r"be None, False, True"):
            update_run(tmp_path / "a", tmp_path / "o", Edits(remove=np.array([1])), **kw)
    assert not (tmp_path / "o").exists()


def test_update_of_a_knn_run_that_would_leave_fewer_samples_than_k_names_the_edits(tmp_path):
    """Removing all but 4 training samples of a k = 5 run was refused as "The 'selection.k'
    parameter of the config must be ... [1, 4] ... Got 5", a setting the user never changed
    (a review): the refusal names the edits and what they leave, and nothing is written."""
    cfg = _cfg(selection__scheme="knn", selection__k=5)
    train_run(cfg, tmp_path / "a")
    n = len(split_data(cfg.data).y_train)
    with pytest.raises(ValueError, match=r"'edits'.*k = 5 training samples.*leave 4 instead"):
        update_run(tmp_path / "a", tmp_path / "b", Edits(remove=np.arange(n - 4)))
    assert not (tmp_path / "b").exists()


def test_edits_compose():
    cfg = _cfg(data__n_clean=40)
    data = split_data(cfg.data)
    rng = np.random.default_rng(0)
    x_add = rng.random((4, 1, 8, 8)).astype(np.float32)
    e1 = Edits(remove=np.array([3, 9, 50]), relabel_index=np.array([4, 51]),
               relabel_label=np.array([0, 0]), add_x=x_add[:2], add_y=np.array([1, 2]))
    d1, _ = apply_edits(data, e1)
    n1 = len(d1.y_train)
    e2 = Edits(remove=np.array([0, n1 - 1]), relabel_index=np.array([3, n1 - 2]),
               relabel_label=np.array([5, 6]), add_x=x_add[2:], add_y=np.array([7, 8]))
    d2, _ = apply_edits(d1, e2)
    both, _ = apply_edits(data, e1.then(e2, len(data.y_train)))
    for name in ("x_train", "y_train", "clean_idx", "poison_idx"):
        assert np.array_equal(getattr(both, name), getattr(d2, name)), name


def test_update_refuses_bad_input(tmp_path):
    train_run(_cfg(), tmp_path / "run")
    with pytest.raises(ValueError, match="'remove' parameter of update_run must be"):
        update_run(tmp_path / "run", tmp_path / "x", Edits(remove=np.array([10 ** 6])))
    with pytest.raises(ValueError, match="must change something"):
        update_run(tmp_path / "run", tmp_path / "y", Edits())
    with pytest.raises(ValueError, match="distinct indices"):
        Edits(remove=np.array([1]), relabel_index=np.array([1]), relabel_label=np.array([0]))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_command_line_takes_class_ids_and_raw_inputs(tmp_path):
    """``update --relabel`` / ``--add`` and ``attack --backdoor-label`` take what ``predict``
    takes: the data set's class ids (here 8 and 3, class indices 0 and 1) and inputs as its
    files hold them (digits: integers 0-16); the library's edits hold indices and [0, 1]."""
    from sklearn.datasets import load_digits
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment.edits import load_edits

    runner = CliRunner()
    run = tmp_path / "run"
    train_run(_cfg(data__classes=[8, 3], training__steps=5), run)
    X, y = load_digits(return_X_y=True)
    keep = np.isin(y, [3, 8])
    x_raw, y_ids = X[keep][:4].reshape(-1, 8, 8).astype(np.int64), y[keep][:4]
    np.savez(tmp_path / "add.npz", x=x_raw, y=y_ids)
    r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "u"),
                            "--relabel", "5,6:3,8", "--add", str(tmp_path / "add.npz")])
    assert r.exit_code == 0, r.output
    assert "retrain " in r.stderr and "Retrained" in r.stdout  # the bar, on stderr
    # -q, as train, predict, attack and demo take it: no bar (update refused the option)
    r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "q"), "--remove", "1",
                            "-q"])
    assert r.exit_code == 0 and r.stderr == "" and "Retrained" in r.stdout, r.output
    e = load_edits(tmp_path / "u" / "edits.npz")
    assert e.relabel_index.tolist() == [5, 6] and e.relabel_label.tolist() == [1, 0]
    assert e.add_y.tolist() == [{8: 0, 3: 1}[v] for v in y_ids.tolist()]
    np.testing.assert_array_equal(e.add_x, (x_raw[:, None] / np.float32(16)).astype(np.float32))
    # each option may be repeated: its values are joined (it used to keep the last one)
    r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "w"), "--remove", "1",
                            "--remove", "2,3", "--relabel", "5:3", "--relabel", "6:8",
                            "--add", str(tmp_path / "add.npz"), "--add",
                            str(tmp_path / "add.npz"), "--json"])
    assert r.exit_code == 0, r.output
    e2 = load_edits(tmp_path / "w" / "edits.npz")
    assert e2.remove.tolist() == [1, 2, 3] and json.loads(r.stdout)["removed"] == [1, 2, 3]
    assert e2.relabel_index.tolist() == [5, 6] and e2.relabel_label.tolist() == [1, 0]
    assert e2.add_y.tolist() == e.add_y.tolist() * 2
    np.testing.assert_array_equal(e2.add_x, np.concatenate([e.add_x, e.add_x]))
    for args in (["--remove", "2", "--remove", "4,2"], ["--remove", "2", "--relabel", "2:3"]):
        r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "v"), *args])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert "must name each training-set index once" in r.output and "Got index 2 " in \
            r.output, r.output
    # indices for ids, and inputs not in the data set's form: one line each, nothing written
    bad = {("--relabel", "5:1"): "must give class ids of the run (8, 3)",
           ("--add", "float.npz"): "'x' array must be integers 0-16",
           ("--add", "x.npy"): "must name a .npz holding 'x' and 'y'. Reading"}
    np.save(tmp_path / "x.npy", x_raw)
    np.savez(tmp_path / "float.npz", x=x_raw / 16.0, y=y_ids)
    for (opt, value), words in bad.items():
        value = str(tmp_path / value) if value.endswith((".npz", ".npy")) else value
        r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "v"), opt, value])
        assert r.exit_code == 1 and words in r.output and len(r.output.splitlines()) == 1, \
            r.output
    assert not (tmp_path / "v").exists()
    for args, words in ((["--out", str(tmp_path / "v")], "update needs a change: give --remove"),
                        (["--out", str(tmp_path / "u"), "--remove", "1"],
                         "(out_dir; CLI: --out) exists and is not empty")):
        r = runner.invoke(app, ["update", str(run), *args])
        assert r.exit_code == 1 and words in r.output, r.output
    r = runner.invoke(app, ["attack", str(run), "--attacks", "backdoor", "--budgets", "1",
                            "--backdoor-label", "3", "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["totals"]["backdoor"] | {"patch": 0, "test_points": 0} == \
        {"label": 1, "class": 3, "patch": 0, "test_points": 0}
    r = runner.invoke(app, ["attack", str(run), "--backdoor-label", "0", "-q"])
    assert r.exit_code == 1 and "'--backdoor-label' parameter of attack must give class ids" \
        in r.output, r.output
    # an option of an attack that --attacks leaves out would change nothing: one line
    for args, flag, what in ((["--attacks", "insert,flip", "--patch", "2"], "--patch",
                              "the backdoor attack"),
                             (["--attacks", "remove", "--backdoor-label", "3"],
                              "--backdoor-label", "the backdoor attack"),
                             (["--attacks", "backdoor", "--targets", "2"], "--targets",
                              "the targeted attacks (insert, remove, flip, modify)"),
                             (["--attacks", "backdoor", "--max-radius", "0"], "--max-radius",
                              "the targeted attacks (insert, remove, flip, modify)"),
                             (["--attacks", "flip", "--copies", "2"], "--copies",
                              "the insert and modify attacks")):
        r = runner.invoke(app, ["attack", str(run), *args, "-q"])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output.startswith(f"error: The '{flag}' parameter of attack must be left out "
                                   f"unless --attacks includes {what} (--attacks {args[1]} "
                                   "does not: "), r.output
    # a misspelt attack is named as such, not blamed on another option
    r = runner.invoke(app, ["attack", str(run), "--attacks", "inserts", "--targets", "5", "-q"])
    assert r.exit_code == 1 and "'--attacks' parameter of attack must be a non-empty list of " \
        "insert, remove, flip, modify, backdoor" in r.output, r.output
    r = runner.invoke(app, ["attack", str(run), "--attacks", "backdoor", "--patch", "8", "-q"])
    assert r.exit_code == 1 and r.output.startswith("error: The '--patch' parameter of "
                                                    "attack must be an int in the range "
                                                    "[1, 7]"), r.output
    # the trials' class indices come with the data set's ids
    attack_run(run, settings=AttackSettings(attacks=("insert",), budgets=(1,), targets=3),
               out_dir=tmp_path / "a")
    rows = list(csv.DictReader(open(tmp_path / "a" / "attack_trials.csv")))
    assert rows and all(r[f"{k}_id"] == {"0": "8", "1": "3", "-1": "-1"}[r[k]] for r in rows
                        for k in ("label", "clean", "target_class", "poisoned"))


def test_ctrl_c_in_update_and_attack_is_one_line(tmp_path, monkeypatch):
    """An interrupt while classifiers retrain: one line, exit code 130, and no new run."""
    from typer.testing import CliRunner

    import poisoncert.experiment.attack as attack_mod
    import poisoncert.experiment.update as update_mod
    from poisoncert.cli import app

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    monkeypatch.setattr(update_mod, "retrain", stop)
    runner = CliRunner()
    r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "u"), "--remove", "1"])
    assert r.exit_code == 130 and r.stderr.splitlines()[-1].startswith(
        "interrupted: no new run was written")
    assert not (tmp_path / "u").exists()
    monkeypatch.setattr(attack_mod, "attack_run", stop)
    r = runner.invoke(app, ["attack", str(run), "--budgets", "1", "-q"])
    assert r.exit_code == 130, r.output
    assert r.stderr == "interrupted: the attack stopped; its result files are written only " \
                       "when it finishes.\n"
    from poisoncert.experiment.ensemble import Ensemble

    np.savez(tmp_path / "x.npz", x=np.zeros((3, 8, 8), dtype=np.int64))
    # a partition run's certificate uses no labels: a config naming a true_label method
    # (used only by the random schemes) asks for none
    d = copy.deepcopy(_BASE)
    d["training"]["steps"] = 5
    d["certify"] = {"method": "true_label"}
    train_run(from_dict(d), tmp_path / "tl")
    r = runner.invoke(app, ["predict", str(tmp_path / "tl"), str(tmp_path / "x.npz")])
    assert r.exit_code == 0, r.output
    monkeypatch.setattr(Ensemble, "prediction_blocks", stop)  # (predict's, streamed)
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz"), "--out",
                            str(tmp_path / "p.csv")])
    assert r.exit_code == 130, r.output
    assert r.stderr == "interrupted: nothing was written; the same command starts over.\n"
    assert not (tmp_path / "p.csv").exists()
    monkeypatch.setattr(Ensemble, "load", stop)  # while loading: it exited 130 silently
    r = runner.invoke(app, ["predict", str(run), str(tmp_path / "x.npz"), "--out",
                            str(tmp_path / "p.csv")])
    assert r.exit_code == 130, r.output
    assert r.stderr == "interrupted: nothing was written; the same command starts over.\n"
    assert not (tmp_path / "p.csv").exists()


def test_ctrl_c_in_an_update_into_an_empty_folder_says_no_run_was_written(tmp_path,
                                                                          monkeypatch):
    """A review's case: --out an empty folder made beforehand, Ctrl-C while classifiers
    retrain: the line said "'u' holds an incomplete run: delete it" of the user's own empty
    folder (nothing was written). And where the update's run did appear (its manifest), the
    line said only to delete it, while the same command again (2bb9e52) says train finishes
    it: now both say so."""
    from typer.testing import CliRunner

    import poisoncert.experiment.update as update_mod
    from poisoncert.cli import app

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    out = tmp_path / "u"
    out.mkdir()
    monkeypatch.setattr(update_mod, "retrain", stop)
    runner = CliRunner()
    r = runner.invoke(app, ["update", str(run), "--out", str(out), "--remove", "1"])
    assert r.exit_code == 130 and r.stderr.splitlines()[-1:] == [  # (after the bar's line)
        "interrupted: no new run was written (it is written once every changed classifier "
        "is retrained); the same command starts over."], r.output
    assert list(out.iterdir()) == []

    def appeared(*args, **kwargs):  # Ctrl-C once the new run's folder is there
        (out / runs.MANIFEST).write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(update_mod, "retrain", appeared)
    r = runner.invoke(app, ["update", str(run), "--out", str(out), "--remove", "1"])
    assert r.exit_code == 130 and r.stderr.splitlines()[-1:] == [
        f"interrupted: '{out}' holds the update's unfinished run: finish it with 'poisoncert "
        f"train {out / runs.CONFIG} --run-dir {out}', or delete it and run the same command "
        "again."], r.output


def test_update_takes_quiet_as_the_other_training_commands_do(tmp_path):
    """``update`` retrains with a progress bar on stderr; -q / --quiet (as on train, demo,
    predict and attack) was 'No such option'. Quiet, stderr is empty and stdout the same."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    runner = CliRunner()
    loud = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "u1"),
                               "--remove", "1,2"])
    assert loud.exit_code == 0, loud.output
    assert "models/s" in loud.stderr, loud.stderr  # the bar
    for flag in ("-q", "--quiet"):
        r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / f"u{flag}"),
                                "--remove", "1,2", flag])
        assert r.exit_code == 0, r.output
        assert r.stderr == ""
        assert r.stdout.replace(f"u{flag}", "u1").split("\n")[0] == loud.stdout.split("\n")[0]


_ATTACK_FILES = ("attack_trials.csv", "attack_summary.csv", "attack.json", "attack.png")


def test_attack_keeps_an_earlier_attacks_results_unless_forced(tmp_path):
    """A second ``poisoncert attack`` on a run replaced the first one's four result files
    without a word; it is refused in one line naming --out and --force, before any trial, and
    leaves them as they were. --out writes elsewhere; --force replaces the set."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    runner = CliRunner()
    args = ["attack", str(run), "--attacks", "flip", "--targets", "2", "-q"]
    r = runner.invoke(app, [*args, "--budgets", "1"])
    assert r.exit_code == 0, r.output
    first = {n: (run / n).read_bytes() for n in _ATTACK_FILES}
    r = runner.invoke(app, [*args, "--budgets", "2", "--json"])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert r.output.startswith(f"error: The attack's results folder '{run}' (the run "
                               "directory, the default; CLI: --out) already holds an earlier "
                               "attack's results (attack_trials.csv,"), r.output
    assert "Give --out a new folder to keep them, or --force to replace them." in r.output
    assert {n: (run / n).read_bytes() for n in _ATTACK_FILES} == first
    other = tmp_path / "other"
    r = runner.invoke(app, [*args, "--budgets", "2", "--out", str(other)])
    assert r.exit_code == 0, r.output
    assert json.loads((other / "attack.json").read_text())["budgets"] == [2]
    r = runner.invoke(app, [*args, "--budgets", "3", "--out", str(other)])
    assert r.exit_code == 1 and "(out_dir; CLI: --out) already holds" in r.output, r.output
    assert {n: (run / n).read_bytes() for n in _ATTACK_FILES} == first
    r = runner.invoke(app, [*args, "--budgets", "3", "--force"])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "attack.json").read_text())["budgets"] == [3]
    assert {row["budget"] for row in csv.DictReader(open(run / "attack_trials.csv"))} == {"3"}
    # the library's own default keeps replacing (experiments/run.py re-attacks on purpose)
    attack_run(run, settings=AttackSettings(attacks=("flip",), budgets=(1,), targets=2))
    assert json.loads((run / "attack.json").read_text())["budgets"] == [1]


def test_attack_json_prints_no_progress_lines_as_the_other_commands(tmp_path):
    """--json leaves out the progress of train, demo, certify and update; attack --json still
    wrote its progress lines (on stderr) unless -q was given too."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    args = ["attack", str(run), "--attacks", "flip", "--targets", "2", "--budgets", "1"]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0 and "targeted trials" in r.stderr, r.output
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0 and r.stderr == "", r.stderr
    assert json.loads(r.stdout)["totals"]["budgets"] == [1]


def test_attack_killed_while_writing_never_mixes_two_attacks_files(tmp_path):
    """An attack with --force killed after writing one of its files: the earlier attack's
    files are gone, not left beside the new ones (its attack.json and summary described other
    budgets than the new attack_trials.csv), and no attack.json claims a whole set."""
    import os
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    attack_run(run, settings=AttackSettings(attacks=("flip",), budgets=(1,), targets=2))
    first = {n: (run / n).read_bytes() for n in _ATTACK_FILES}
    env = {**os.environ, "POISONCERT_TEST_FAULT": "write:attack_summary.csv"}
    proc = subprocess.run([sys.executable, "-m", "poisoncert.cli", "attack", str(run),
                           "--attacks", "flip", "--targets", "2", "--budgets", "2", "-q",
                           "--force"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not (run / "attack.json").exists()
    for name, before in first.items():
        assert not (run / name).exists() or (run / name).read_bytes() != before, name
    assert {row["budget"] for row in csv.DictReader(open(run / "attack_trials.csv"))} == {"2"}
    attack_run(run, settings=AttackSettings(attacks=("flip",), budgets=(2,), targets=2))
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp-")]  # the killed one's


def test_the_same_attack_after_a_kill_while_writing_replaces_the_incomplete_set(tmp_path):
    """An attack into --out killed after writing one of its files (SIGKILL between a write
    and its rename): the same command again was refused for "an earlier attack's results"
    (the half set, which no attack finished, with 'Give --out a new folder to keep them, or
    --force'), and the killed writer's temporary file stayed in the folder for good (no run
    lock covers an --out folder). Now it writes the whole set, the same bytes as an
    uninterrupted attack, and removes the temporary file; a whole set is still refused."""
    import os
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    args = ["attack", str(run), "--attacks", "flip", "--targets", "2", "--budgets", "1", "-q"]
    runner = CliRunner()
    ref = tmp_path / "ref"
    assert runner.invoke(app, [*args, "--out", str(ref)]).exit_code == 0
    out = tmp_path / "out"
    env = {**os.environ, "POISONCERT_TEST_FAULT": "write:attack_summary.csv"}
    proc = subprocess.run([sys.executable, "-m", "poisoncert.cli", *args, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (out / "attack_trials.csv").exists() and not (out / "attack.json").exists()
    assert [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    # (and the folder's lock file, which an attack holds there from its start to its end)
    assert sorted(p.name for p in out.iterdir()) == sorted((*_ATTACK_FILES, ".lock"))
    for name in _ATTACK_FILES:  # (attack.json: all but its time)
        got, want = ((d / name).read_bytes() for d in (out, ref))
        if name == "attack.json":
            got, want = ({k: v for k, v in json.loads(b).items() if k != "seconds"}
                         for b in (got, want))
        assert got == want, name
    r = runner.invoke(app, [*args, "--out", str(out)])  # a whole set: kept unless --force
    assert r.exit_code == 1 and "already holds an earlier attack's results" in r.stderr


def test_a_read_only_run_is_attacked_into_another_folder(tmp_path, monkeypatch):
    """A run on a read-only mount (its .lock cannot be opened for writing), attacked with
    --out elsewhere: refused with "Cannot lock the run directory" where predict and update
    read it. Now the attack reads it unlocked and writes the same results as on a writable
    copy; into the run's own folder it is still refused in one line, and a lock another
    process holds is still refused."""
    import errno
    import os

    from typer.testing import CliRunner

    from poisoncert import runsafe
    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    args = ["attack", str(run), "--attacks", "flip", "--targets", "2", "--budgets", "1", "-q"]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "ref")]).exit_code == 0
    real_open = os.open

    def read_only(path, flags, *a, **k):
        if str(path) == str(run / runs.LOCK) and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(runsafe.os, "open", read_only)
    out = tmp_path / "out"
    r = runner.invoke(app, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    for name in ("attack_trials.csv", "attack_summary.csv"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    r = runner.invoke(app, args)  # into the run's own folder: its lock is needed
    assert r.exit_code == 1 and r.stderr.startswith("error: Cannot lock the run directory")
    monkeypatch.setattr(runsafe.os, "open", real_open)
    held = runsafe.RunLock.acquire(run)  # as another process's: flock is per open file
    try:
        r = runner.invoke(app, [*args, "--out", str(tmp_path / "out2")])
        assert r.exit_code == 1 and "is in use by another poisoncert process" in r.stderr
    finally:
        held.release()


def test_a_read_only_run_another_process_holds_is_not_attacked(tmp_path, monkeypatch):
    """A run whose .lock this process cannot open for writing (a read-only mount, another
    user's .lock) while another process holds its lock (training it, attacking it into its
    folder) was read without any lock and attacked: the fallback for read-only runs took every
    failure to open the lock as "nobody writes here". Now a shared lock through a read-only
    open sees the holder (refused in one line, nothing written) and, taken, keeps writers
    out while the attack reads."""
    import errno
    import os

    from typer.testing import CliRunner

    from poisoncert import runsafe
    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    held = runsafe.RunLock.acquire(run)  # as another process's: flock is per open file
    real_open = os.open

    def read_only(path, flags, *a, **k):
        if str(path) == str(run / runs.LOCK) and flags & (os.O_RDWR | os.O_WRONLY):
            raise OSError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(runsafe.os, "open", read_only)
    out = tmp_path / "out"
    args = ["attack", str(run), "--attacks", "flip", "--targets", "2", "--budgets", "1", "-q",
            "--out", str(out)]
    try:
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 1 and "is in use by another poisoncert process" in r.stderr, \
            r.output
        assert not (out / "attack.json").exists()
    finally:
        held.release()
    shared = runsafe.RunLock.acquire_shared(run)  # a reader's lock keeps a writer out
    try:
        monkeypatch.setattr(runsafe.os, "open", real_open)
        with pytest.raises(runsafe.RunLockedError):
            runsafe.RunLock.acquire(run)
    finally:
        shared.release()
    runsafe.RunLock.acquire(run).release()
    assert runsafe.RunLock.acquire_shared(tmp_path) is None  # no .lock: nothing to see


def test_predict_on_finite_aggregation_has_the_columns_of_certify(tmp_path):
    """``predict`` on a finite_aggregation run's own test inputs gives certificates.csv's rows,
    ``radius_dpa`` (the radius in buckets) included: it was missing."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    cfg = _fa(k=4, d=2, training__steps=5, training__save_weights=True)
    run = tmp_path / "fa"
    train_run(cfg, run)
    certify_run(run, plot=False)
    data = split_data(cfg.data)
    raw = np.rint(np.asarray(data.x_test) * 16).astype(np.int64)  # digits' pixels: 0-16
    assert np.array_equal(raw / 16, data.x_test)
    np.savez(tmp_path / "x.npz", x=raw)
    r = CliRunner().invoke(app, ["predict", str(run), str(tmp_path / "x.npz"), "--out",
                                 str(tmp_path / "p.csv")])
    assert r.exit_code == 0, r.output
    got = list(csv.DictReader(open(tmp_path / "p.csv")))
    want = list(csv.DictReader(open(run / "certificates.csv")))
    assert "radius_dpa" in want[0] and len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for key in ("index", "prediction", "radius", "radius_dpa", "top1_votes"):
            assert g[key] == w[key], key


# --------------------------------------------------------------------------------------------
# attack


def test_attacks_within_the_radius_never_change_a_certified_prediction(tmp_path):
    """DPA and its run-off election on one run: a few hundred (test point, attack, budget)
    trials within the certified radius, none changed."""
    cfg = _cfg(training__save_weights=True, run__store_ranks=True, selection__k=10,
               training__steps=80)
    train_run(cfg, tmp_path / "run")
    res = attack_run(tmp_path / "run", settings=AttackSettings(targets=8, budgets=(1, 2, 3, 5),
                                                               batch=32))
    det = res.totals["deterministic"]
    assert det["within"] >= 300 and det["targeted_within"] >= 100
    assert det["changed_within"] == 0 and det["untargeted_changed"] == 0
    assert det["untargeted_checked"] > 1000
    for row in res.summary:
        assert row["changed_within"] == 0
    assert {r["aggregation"] for r in res.summary} == {"vote", "roe"}
    trials = list(csv.DictReader(open(tmp_path / "run" / "attack_trials.csv")))
    within = [t for t in trials if t["within"] == "1"]
    assert within and all(t["changed"] == "0" for t in within)
    assert all(int(t["retrained"]) <= 2 * int(t["budget"]) for t in trials)
    assert (tmp_path / "run" / "attack.png").stat().st_size > 0


def test_modify_moves_two_buckets_per_operation_and_beats_flip_beyond_the_radius(tmp_path,
                                                                                 monkeypatch):
    """``modify`` replaces a sample of the predicted class in one bucket voting for it by a
    copy of the target, labelled with the runner-up, in another such bucket: one
    modification, two buckets. Against a learner that obeys a nearby sample (1-NN, no
    balancing), within the radius nothing changes, and beyond it it wins more often than
    ``flip`` (whose relabelled sample lands where its new hash puts it)."""
    from poisoncert.experiment.attack_edits import EditBuilder
    from poisoncert.experiment.retrain import load_ensemble

    cfg = from_dict({"data": {"name": "digits", "test_limit": 120},
                     "selection": {"scheme": "partition", "k": 15, "seed": 1},
                     "training": {"model": "sklearn:knn", "balance": False},
                     "run": {"chunk_size": 32}})
    train_run(cfg, tmp_path / "run")
    ens = load_ensemble(tmp_path / "run")
    b = EditBuilder(ens.data, cfg, ens.plan, ens.predictions)
    y = int(np.bincount(ens.predictions[:, 0]).argmax())
    e = b.modify(0, 3, y, (y + 1) % 10)
    assert (e.n_removed, e.n_added, e.n_relabelled) == (3, 3, 0)
    removed = set(ens.plan.part_of[b.poison_pos[e.remove]].tolist())
    added = selection.partition_ids(e.add_x, e.add_y, k=15).tolist()
    assert len(removed) == 3 and len(set(added)) == 3 and not removed & set(added)
    assert all(b.bucket_weights(0, y)[list(removed | set(added))] > 0)

    res = attack_run(tmp_path / "run", settings=AttackSettings(
        attacks=("flip", "modify"), targets=30, budgets=tuple(range(1, 9)), max_radius=4))
    assert res.totals["deterministic"]["changed_within"] == 0
    beyond = {a: sum(t["changed"] for t in res.trials if t["attack"] == a
                     and t["radius"] < t["budget"] <= t["radius"] + 4) for a in ("flip", "modify")}
    assert beyond["modify"] > beyond["flip"], beyond
    assert all(t["operations"] == t["budget"] for t in res.trials if t["attack"] == "modify")
    # a budget whose inserted copies cannot fit in memory is refused before any trial
    from poisoncert.resources import MEMORY_LIMIT_ENV, ResourceError

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1G")  # a figure on any machine
    for attacks in (("insert",), ("modify", "insert")):
        with pytest.raises(ResourceError, match=r"^The 'budgets' parameter of attack_run must be "
                                                r"an int in the range \[1, \d+\] for the attack "
                                                r"to fit in memory"):
            attack_run(tmp_path / "run", settings=AttackSettings(attacks=attacks,
                                                                 budgets=(1, 2**53)))
    attack_run(tmp_path / "run", settings=AttackSettings(attacks=("remove",), targets=2,
                                                         budgets=(2**53,)))  # no copies made
    attack_run(tmp_path / "run", settings=AttackSettings(attacks=("modify",), targets=2,
                                                         budgets=(2**53,)))  # as many as samples


def test_knn_and_rnn_runs_show_their_search_in_test_points(tmp_path, monkeypatch):
    """A kNN run on MNIST searched for two minutes with nothing on the screen: train's display
    now counts the test points searched, block by block, in its own unit where the display
    takes one (the CLI's bar: 'test points/s'), after the work's beginning."""
    from contextlib import contextmanager

    monkeypatch.setattr(knn, "_BLOCK", 10 * 2000)  # blocks of 10 test points or more
    for scheme, extra in (("knn", {"selection__k": 7}), ("rnn", {"selection__r": 20.0,
                                                                 "selection__k": None})):
        seen: list = []

        @contextmanager
        def display(total, completed, label, *, unit="models", seen=seen):
            seen.append((total, completed, label, unit))
            yield seen.append

        res = train_run(_cfg(selection__scheme=scheme, **extra), tmp_path / scheme,
                        progress=display)
        n_test = len(res.labels)
        assert seen[0] == (n_test, 0, f"{scheme} {'k=7' if scheme == 'knn' else 'r=20.0'}",
                           "test points"), seen
        assert seen[1] == 0 and sum(seen[2:]) == n_test and len(seen[2:]) >= 2, seen


def test_a_knn_run_refused_for_its_k_shows_no_display_first(tmp_path):
    """``train --selection.scheme knn --selection.k 5000`` on a training set of fewer samples
    printed the display's line ("knn k=5000: 0/360 test points, -- test points/s, ...") and
    then the error: the display opened before nn_outputs checked k. The error is now the only
    output; a search that begins opens the display once."""
    from contextlib import contextmanager

    opened: list = []

    @contextmanager
    def display(total, completed, label, *, unit="models"):
        opened.append(label)
        yield lambda k: None

    n = len(split_data(_cfg().data).y_train)
    with pytest.raises(ConfigError, match="selection.k"):
        train_run(_cfg(selection__scheme="knn", selection__k=n + 1), tmp_path / "bad",
                  progress=display)
    assert opened == []
    for scheme, extra in (("knn", {"selection__k": 3}),
                          ("rnn", {"selection__r": 20.0, "selection__k": None})):
        train_run(_cfg(selection__scheme=scheme, **extra), tmp_path / scheme, progress=display)
    assert opened == ["knn k=3", "rnn r=20.0"]


def test_knn_attacks_are_tight_beyond_the_radius(tmp_path):
    """kNN's insertion radius is exact: within it nothing changes, one operation beyond it the
    insertion attack wins on most targets, so the check can fail when a radius is too large."""
    train_run(_cfg(selection__scheme="knn", selection__k=7), tmp_path / "knn")
    res = attack_run(tmp_path / "knn", settings=AttackSettings(
        attacks=("insert", "remove", "flip"), targets=30, budgets=(1, 2, 3, 4, 5)))
    det = res.totals["deterministic"]
    assert det["within"] >= 100 and det["changed_within"] == 0
    trials = [t for t in res.trials if t["attack"] == "insert"]
    first_beyond = [t for t in trials if t["budget"] == t["radius"] + 1]
    assert len(first_beyond) >= 10
    assert sum(t["changed"] for t in first_beyond) >= 0.8 * len(first_beyond)
    # the same trials judged against radii one larger would report changes
    assert any(t["changed"] and t["budget"] <= t["radius"] + 1 for t in trials)
    with pytest.raises(ValueError, match="'attacks' parameter of attack_run"):
        AttackSettings(attacks=("poison",))
    # the command's table fits an 80-column terminal whole: nothing cut to an ellipsis
    from typer.testing import CliRunner

    from poisoncert.cli import app

    r = CliRunner().invoke(app, ["attack", str(tmp_path / "knn"), "--attacks", "insert,flip",
                                 "--budgets", "1,2", "--targets", "3", "-q", "--out",
                                 str(tmp_path / "cli")], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    table = r.output.split("others: ")[0].splitlines()
    assert all(len(line.rstrip()) <= 80 for line in table) and "…" not in r.output, r.output
    assert "aggregation attack r trials" in " ".join(r.output.split())
    assert sum(line.split()[:2] == ["knn", "insert"] for line in table) == 2, r.output
    # attack_summary.csv's key columns come first, as in attack_trials.csv (its
    # 'probabilistic' stood between aggregation and attack)
    heads = {name: (tmp_path / "cli" / name).read_text().splitlines()[0].split(",")
             for name in ("attack_summary.csv", "attack_trials.csv")}
    key = ["aggregation", "attack", "model", "budget"]
    assert heads["attack_summary.csv"][:5] == [*key, "probabilistic"], heads
    assert heads["attack_trials.csv"][:4] == key, heads
    # copies spread an insertion over hash buckets: a kNN run has none
    r = CliRunner().invoke(app, ["attack", str(tmp_path / "knn"), "--attacks", "insert",
                                 "--copies", "2", "-q"])
    assert r.exit_code == 1 and r.output.startswith(
        "error: The '--copies' parameter of attack must be 1 for a knn run"), r.output


def test_attack_lines_give_the_rate_and_eta_of_the_trials(tmp_path, monkeypatch):
    """``poisoncert attack`` said '24/400 targeted trials' every batch (minutes apart on a
    run that retrains) with no rate or time left; each batch's line now gives both, timed from
    the first trial (the run's loading left out), and each backdoor budget its time."""
    import poisoncert.experiment.attack as attack_mod

    train_run(_cfg(selection__scheme="knn", selection__k=7), tmp_path / "knn")
    ticks = iter(range(0, 1000, 10))  # each reading of the clock is 10 s later
    monkeypatch.setattr(attack_mod, "_clock", lambda: next(ticks))
    lines: list[str] = []
    attack_run(tmp_path / "knn", settings=AttackSettings(
        attacks=("insert", "backdoor"), targets=4, budgets=(1, 2, 3), batch=5), log=lines.append)
    assert lines == [
        "12 targeted trials on 4 test points, 1 aggregation: knn",
        "  5/12 trials, 0.5 trials/s, 00:10 elapsed, ETA 00:14",
        "  10/12 trials, 0.5 trials/s, 00:20 elapsed, ETA 00:04",
        "  12/12 trials, 0.4 trials/s, 00:30 elapsed, ETA 00:00",
        "  backdoor r=1 (1/3): 0 classifiers retrained in 00:10",
        "  backdoor r=2 (2/3): 0 classifiers retrained in 00:10",
        "  backdoor r=3 (3/3): 0 classifiers retrained in 00:10"], lines


def test_backdoor_trials_add_up_to_within_beyond_and_already_the_label(tmp_path):
    """A backdoor row's trials counted the patched points beyond the radius whose clean
    prediction already is the backdoor label, which are neither within nor beyond (914 + 63
    of 1028 trials on MNIST 1/7): they are now their own count (``already_label``: the
    summary, the totals and a line under the table), so every row adds up."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    train_run(_cfg(selection__scheme="knn", selection__k=7), tmp_path / "knn")
    args = ["attack", str(tmp_path / "knn"), "--attacks", "remove,backdoor", "--budgets",
            "1,4", "--targets", "3", "--backdoor-label", "1", "-q"]
    r = CliRunner().invoke(app, [*args, "--json", "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    for row in out["summary"]:
        assert row["trials"] == row["within"] + row["beyond"] + row["already_label"], row
    already = {row["budget"]: row["already_label"] for row in out["summary"]
               if row["attack"] == "backdoor"}
    assert already[4] > 0 and all(row["already_label"] == 0 for row in out["summary"]
                                  if row["attack"] == "remove")
    t = out["totals"]["deterministic"]
    assert t["trials"] == t["within"] + t["beyond"] + t["already_label"] == sum(
        row["trials"] for row in out["summary"])
    with open(tmp_path / "a" / "attack_summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["already_label"]) for row in rows] == [row["already_label"]
                                                           for row in out["summary"]]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    counts = ", ".join(f"knn r={b}: {n}" for b, n in sorted(already.items()) if n)
    assert ("backdoor: its trials also count the patched points beyond the radius whose "
            "clean prediction already is the backdoor label (neither within nor beyond; "
            f"already_label): {counts}") in " ".join(r.stdout.split()), r.stdout


def test_attack_and_update_lines_say_one_thing_in_the_singular(tmp_path):
    """The attack's and update's lines said "1 aggregation(s)", "1 classifiers retrained",
    "1 of 1 base classifiers", "removed 1 (indices 3)": one of each is now singular, more
    plural."""
    from types import SimpleNamespace

    from poisoncert.cli.attack import _changes_line
    from poisoncert.rates import counted

    assert [counted(n, "aggregation") for n in (0, 1, 2)] == [
        "0 aggregations", "1 aggregation", "2 aggregations"]
    assert counted(1, "index", "indices") == "1 index" and counted(3, "index",
                                                                   "indices") == "3 indices"
    one = SimpleNamespace(edits=Edits(remove=np.array([3]), relabel_index=np.array([5]),
                                      relabel_label=np.array([1])),
                          unchanged_relabels=0, n_train=1436)
    assert _changes_line(one).startswith(
        "Training set: removed 1 (index 3), relabelled 1 (index 5); it now has 1,436 samples")
    cfg = _cfg(selection__scheme="partition", selection__k=4, training__steps=5)
    train_run(cfg, tmp_path / "run")
    lines: list[str] = []
    attack_run(tmp_path / "run", settings=AttackSettings(
        attacks=("remove", "backdoor"), targets=1, budgets=(1,)), log=lines.append)
    assert lines[0] == "1 targeted trial on 1 test point, 1 aggregation: vote", lines
    backdoor = [t for t in lines if t.startswith("  backdoor r=1")]
    assert len(backdoor) == 1 and re.match(r"  backdoor r=1 \(1/1\): 1 classifier retrained "
                                           r"in ", backdoor[0]), lines
    from typer.testing import CliRunner

    from poisoncert.cli import app

    r = CliRunner().invoke(app, ["update", str(tmp_path / "run"), "--out",
                                 str(tmp_path / "u"), "--remove", "3", "-q"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.stdout.split())
    assert "removed 1 (index 3)" in said and re.search(r"Retrained 1 of 4 base classifiers",
                                                       said), said


def test_attacks_on_finite_aggregation_and_bagging(tmp_path):
    """FA (d = 3) with its run-off election: no certified prediction changes; bagging (a
    probabilistic certificate) is reported apart, and a relabelling retrains only the draws
    that hold the sample."""
    train_run(_fa(k=4, d=3, run__store_ranks=True, training__save_weights=True,
                  training__steps=60), tmp_path / "fa")
    res = attack_run(tmp_path / "fa", settings=AttackSettings(targets=6, budgets=(1, 2, 3),
                                                              attacks=("insert", "flip")))
    det = res.totals["deterministic"]
    assert det["within"] >= 10 and det["changed_within"] == 0
    assert det["untargeted_checked"] > 100 and det["untargeted_changed"] == 0
    assert res.totals["probabilistic"]["trials"] == 0
    bag = _cfg(selection__scheme="with_replacement", selection__k=None, selection__ns=300,
               selection__T=8)
    train_run(bag, tmp_path / "bag")
    res = attack_run(tmp_path / "bag", settings=AttackSettings(targets=3, budgets=(1, 2),
                                                               attacks=("flip",)))
    assert res.totals["deterministic"]["trials"] == 0
    assert res.totals["probabilistic"]["trials"] == 6
    assert all(t["retrained"] < 8 for t in res.trials if t["budget"] == 1)


def test_attacks_that_need_images_are_refused_on_feature_vectors(tmp_path):
    """The backdoor's patch and, on hash buckets, the copies insert and modify steer set
    corner pixels of (N, C, H, W) images. On inputs of features, (N, d), insert and modify on
    a partition run raised an IndexError traceback, and the backdoor patched the last 3
    features of the last 3 test points only (``x[..., -3:, -3:]``), reporting its success
    on unpatched inputs. Each is one error line naming them, before any trial; nothing is
    written."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    rng = np.random.default_rng(0)
    x, y = rng.random((120, 6)).astype(np.float32), rng.integers(0, 3, 120)
    np.savez(tmp_path / "flat.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    flat = {"data__name": f"npz:{tmp_path / 'flat.npz'}", "data__test_limit": None,
            "training__steps": 2}
    train_run(_cfg(**flat), tmp_path / "part")
    train_run(_cfg(**flat, selection__scheme="with_replacement", selection__k=None,
                   selection__ns=40, selection__T=4), tmp_path / "bag")
    runner = CliRunner()
    for run, attacks, fits, left_out in (
            ("part", "insert", "remove, flip", "insert"),
            ("part", "flip,modify", "remove, flip", "modify"),
            ("part", "backdoor", "remove, flip", "backdoor"),
            ("bag", "remove,backdoor", "insert, remove, flip, modify", "backdoor")):
        before = sorted(p.name for p in (tmp_path / run).iterdir())
        r = runner.invoke(app, ["attack", str(tmp_path / run), "--attacks", attacks, "--budgets",
                                "1", "-q"])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output.startswith("error: The '--attacks' parameter of attack "
                                   f"must be a list of {fits} for a "), r.output
        assert "on inputs of 6 features, not images" in r.output, r.output
        assert f"leave out {left_out}). Got '{attacks}' instead." in r.output, r.output
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == before
    res = attack_run(tmp_path / "part", settings=AttackSettings(targets=2, budgets=(1,),
                                                                attacks=("remove", "flip")))
    assert res.totals["deterministic"]["trials"] > 0


def test_attacks_on_binomial_keep_the_runs_p(tmp_path, monkeypatch):
    """Binomial selection given by ``ns``: the certificate holds ``p = ns / n`` fixed, so an
    attack retrains the poisoned sets with the run's ``p``. It used to take ``p = ns / m`` of
    each poisoned set of ``m`` samples: a learner the certificate does not cover (an exact
    counterexample with n = 4, ns = 1: certified radius 1, and one deletion flips it)."""
    import poisoncert.experiment.retrain as retrain_mod

    cfg = _cfg(selection__scheme="binomial", selection__k=None, selection__ns=200,
               selection__T=6)
    train_run(cfg, tmp_path / "b")
    n = len(split_data(cfg.data).poison_idx)
    seen, real = [], retrain_mod.retrain

    def spy(ens, variants, **kw):
        seen.extend(v.plan.p for v in variants)
        return real(ens, variants, **kw)

    monkeypatch.setattr(retrain_mod, "retrain", spy)
    attack_run(tmp_path / "b", settings=AttackSettings(targets=2, budgets=(1, 3),
                                                       attacks=("insert", "remove")))
    assert len(seen) >= 4 and set(seen) == {200 / n}


def test_attacks_on_a_deskewed_run_insert_the_points_they_chose(tmp_path, monkeypatch):
    """The attacks' inputs (copies of a test point, patched training samples) are already
    preprocessed; the classifier backend deskewed them again (``variant``'s default for a
    ``data.deskew`` run), so an insertion put other images than the attack built, in other
    buckets than the ones it chose (0 of 40 insertions of 3 copies hit the 3 chosen buckets of
    a 16-bucket DPA run: a weaker check than it says it is). kNN's backend never did."""
    import poisoncert.experiment.retrain as retrain_mod

    cfg = _cfg(data__deskew=True, data__test_limit=20, selection__k=16, training__steps=5)
    train_run(cfg, tmp_path / "run")
    seen, real = [], retrain_mod.retrain

    def spy(ens, variants, **kw):
        seen.extend(variants)
        return real(ens, variants, **kw)

    monkeypatch.setattr(retrain_mod, "retrain", spy)
    attack_run(tmp_path / "run", settings=AttackSettings(targets=4, budgets=(3,),
                                                         attacks=("insert",)))
    x_test = split_data(cfg.data).x_test
    inside = np.ones(x_test.shape[1:], dtype=bool)
    for i0, i1 in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
        inside[0, i0, i1] = False
    assert len(seen) >= 2  # one per correctly classified target
    for v in seen:
        added = v.ep.x_new[-3:]
        # every copy is a test point outside the four corner pixels the attack sets
        assert all(np.any(np.all(a[inside][None] == x_test[:, inside], axis=1)) for a in added)
        buckets = selection.partition_ids(added, v.ep.y_new[-3:], k=16)
        assert len(set(buckets.tolist())) == 3 and set(v.changed.tolist()) == set(buckets.tolist())


def test_case_3_edits_cannot_relabel_a_clean_class_sample_into_a_poisoned_class(tmp_path):
    """With ``data.poisoned_classes`` D^c is the clean classes' samples and phase 2 learns
    them by class; a D^c sample relabelled to a poisoned class stayed in D^c and phase 2
    learned it as clean class 0, silently (a soundness review's finding). Now one line; a
    removal and an addition with that label do what was meant."""
    import dataclasses

    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.config import ConfigError

    cfg = _cfg(data__poisoned_classes=[9], training__steps=5, selection__k=None,
               selection__scheme="binomial", selection__ns=20, selection__T=4)
    data = split_data(cfg.data)
    i = int(data.clean_idx[0])
    nine = int(data.poisoned_labels[0])
    # a config's data.edits (a two-phase run trains phase 2 on D^c)
    Edits(relabel_index=np.array([i]), relabel_label=np.array([nine])).save(
        tmp_path / "e.npz", tuple(data.x_train.shape[1:]))
    with pytest.raises(ConfigError, match=rf"'data\.edits'.*Sample {i} is in D\^c"):
        split_data(dataclasses.replace(cfg.data, edits=str(tmp_path / "e.npz")))
    run = tmp_path / "c3"
    train_run(cfg, run)
    with pytest.raises(ValueError, match=rf"^Sample {i} is in D\^c, the samples of the clean "
                                         rf"classes .* poisoned class index {nine}"):
        update_run(run, tmp_path / "u", Edits(relabel_index=np.array([i]),
                                              relabel_label=np.array([nine])))
    assert not (tmp_path / "u").exists()
    r = CliRunner().invoke(app, ["update", str(run), "--out", str(tmp_path / "u"),
                                 "--relabel", f"{i}:9"])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    res = update_run(run, tmp_path / "u", Edits(remove=np.array([i]),
                                                add_x=data.x_train[i:i + 1],
                                                add_y=np.array([nine])))
    assert res.edits.n_added == 1


def test_diverged_classifiers_abstain_and_train_says_so(tmp_path, monkeypatch):
    """A classifier whose logits are not finite abstains on those inputs; argmax made every
    NaN a vote for class 0, and a diverged run certified class 0 with confidence, unnoticed
    (a user-path review: SGD at lr 1e4 on MNIST 1/7 gave 15 of 16 classifiers voting class
    index 0 everywhere, certify accuracy 0.55 at median radius 31). ``train`` warns; votes,
    rankings and new-input predictions agree."""
    import torch
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment.ensemble import Ensemble
    from poisoncert.experiment.ranks import logits_to_votes
    from poisoncert.training.inference import labels_of

    nan = float("nan")
    logits = torch.tensor([[[1.0, 3.0, 2.0], [nan, 0.0, 1.0]],
                           [[float("inf"), 0.0, 0.0], [0.0, -5.0, -1.0]]])
    assert labels_of(logits).tolist() == [[1, -1], [-1, 0]]
    votes, _ = logits_to_votes(logits.numpy(), np.array([False, False]), ranks=False)
    assert votes.tolist() == [[1, -1], [-1, 0]]
    # the run-off election has no ranking for them: refused (it would count class 0 first)
    with pytest.raises(ValueError, match=r"^2 of 2 base classifiers gave outputs that are "
                                         r"not finite .* run-off election"):
        logits_to_votes(logits.numpy(), np.array([False, False]))
    votes, ranks = logits_to_votes(logits.numpy()[:1, :1], np.array([True]))  # empty part
    assert votes.tolist() == [[-1]] and ranks[0, 0].tolist() == [0, 1, 2]  # index order
    # a run whose training diverges (SGD at lr 1e6; a config takes at most LR_MAX = 10, at
    # which this one stays finite)
    from poisoncert.training import settings
    monkeypatch.setattr(settings, "LR_MAX", 1e6)
    cfg = _cfg(selection__k=8, training__optimizer="sgd", training__lr=1e6,
               training__steps=20, training__save_weights=True)
    run = tmp_path / "div"
    r = CliRunner().invoke(app, ["train", str(_write_cfg(tmp_path, cfg)), "--run-dir",
                                 str(run), "-q"])
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("warning: 8 of 8 base classifiers gave outputs that are not "
                               "finite"), r.stderr
    pred = RunDir(run).load(PREDICTIONS)
    assert (pred == -1).all()
    res = certify_run(run, plot=False)
    assert (res.certificate.prediction == -1).all()
    x = np.rint(np.asarray(split_data(cfg.data).x_test) * 16).astype(np.int64)
    np.testing.assert_array_equal(Ensemble.load(run).base_predictions(x), pred)


def test_a_resume_keeps_the_runs_weights_setting(tmp_path):
    """``training.save_weights`` is not in the config hash (null hashes as false, from when
    weights were not kept by default), so a resume with ``false`` was accepted on a run that
    keeps weights: its later chunks had none, and predict refused the run (a user-path
    review). Both directions are refused now, before anything is trained."""
    import dataclasses

    cfg = _cfg(training__steps=5, run__chunk_size=4)
    run = tmp_path / "run"
    train_run(cfg, run)
    off = dataclasses.replace(cfg, execution=dataclasses.replace(cfg.execution,
                                                                 save_weights=False))
    assert config_hash(off) == config_hash(cfg)
    before = sorted(p.name for p in (run / "weights").iterdir())
    with pytest.raises(RunError, match=r"keeps its classifiers' weights and this config does "
                                       r"not \(training\.save_weights: False\)"):
        train_run(off, run)
    assert sorted(p.name for p in (run / "weights").iterdir()) == before
    assert train_run(cfg, run).chunks_trained == 0  # its own setting resumes
    # certify settings on a resume (train --rhos): outside the hash, kept as started, said so
    other = dataclasses.replace(cfg, certify=dataclasses.replace(cfg.certify, rhos=[0, 1]))
    with pytest.warns(UserWarning, match=r"keeps the certify settings it started with "
                                         r"\(certify\.rhos: \[0, 1, 2, 5, 10, 20, 50\] -> "
                                         r"\[0, 1\]: ignored on resume\)"):
        train_run(other, run)
    train_run(off, tmp_path / "off")
    with pytest.raises(RunError, match=r"does not keep its classifiers' weights and this "
                                       r"config does \(training\.save_weights: None\)"):
        train_run(cfg, tmp_path / "off")


def test_a_bad_edits_file_is_one_line_naming_data_edits(tmp_path):
    """A truncated edits .npz gave a zipfile traceback, and a text file numpy's advice to
    load it with pickle (a user-path review)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    Edits(remove=np.array([1, 2])).save(tmp_path / "ok.npz", (8, 8))
    (tmp_path / "trunc.npz").write_bytes((tmp_path / "ok.npz").read_bytes()[:300])
    (tmp_path / "text.npz").write_text("remove: 1, 2")
    np.savez(tmp_path / "objects.npz", remove=np.array([object()], dtype=object))
    cfg = _write_cfg(tmp_path, _cfg(training__steps=5))
    for name, words in (("trunc", "is not a .npz archive"), ("text", "is not a .npz archive"),
                        ("objects", "is not a readable .npz archive")):
        r = CliRunner().invoke(app, ["train", str(cfg), "--run-dir", str(tmp_path / "r"),
                                     "-q", "--data.edits", str(tmp_path / f"{name}.npz")])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output.startswith(f"error: The edits file '{tmp_path / name}.npz' "
                                   f"(data.edits) {words}"), r.output
        assert "pickle" not in r.output.replace("allow_pickle=False", "")
        assert not (tmp_path / "r").exists()


def test_the_knn_attack_has_no_prediction_below_k_samples(tmp_path):
    """The kNN certificate of the deleting models stops at n_train - k (fewer than k samples
    give no prediction); the attack's own classifier now says the same (-1) instead of voting
    among the samples left."""
    from poisoncert.experiment.attack_backends import NNBackend

    cfg = _cfg(selection__scheme="knn", selection__k=5, selection__T=None)
    train_run(cfg, tmp_path / "knn")
    data = split_data(cfg.data)
    nn = NNBackend(RunDir(tmp_path / "knn"), cfg, data)
    n = len(data.y_train)
    assert nn.predict_one(0, Edits(remove=np.arange(n - 4))) == -1
    assert nn.predict_one(0, Edits(remove=np.arange(n - 5))) >= 0


def _write_cfg(tmp_path, cfg):
    path = tmp_path / "cfg.yaml"
    path.write_text(to_yaml(cfg))
    return path


def test_indices_on_the_command_line_are_integers_or_one_clear_line(tmp_path):
    """``--remove`` takes integers only: a float .npy was truncated (4.5 removed sample 4) and
    a text file holding 4.7 raised Python's own message."""
    from poisoncert.experiment.update import parse_ids

    np.save(tmp_path / "ok.npy", np.array([4, 9]))
    np.save(tmp_path / "f.npy", np.array([4.5]))
    (tmp_path / "ok.txt").write_text("3, 17\n42\n")
    (tmp_path / "f.txt").write_text("3 4.7\n")
    assert parse_ids(str(tmp_path / "ok.npy")).tolist() == [4, 9]
    assert parse_ids(str(tmp_path / "ok.txt")).tolist() == [3, 17, 42]
    assert parse_ids("3, 5,8").tolist() == [3, 5, 8]
    with pytest.raises(ValueError, match=r"^The '--remove' option's file '.*f\.npy' must hold "
                                         r"integers\. Got a float64 array instead\.$"):
        parse_ids(str(tmp_path / "f.npy"))
    with pytest.raises(ValueError, match=r"^The '--remove' option must be comma-separated "
                                         r"integers \(at most 2\^53\) or a file of them\. Got "
                                         r"'4\.7' in its file"):
        parse_ids(str(tmp_path / "f.txt"))
    for text, bad in (("3,x", "x"), ("3 4", "3 4"), ("3_0", "3_0"),
                      ("99999999999999999999", "99999999999999999999"), ("3,,4", ""),
                      ("3,4,", "")):
        with pytest.raises(ValueError, match=f"Got '{bad}' in its value instead\\.$"):
            parse_ids(text)  # "3 4" was 34, "3_0" 30, a huge number an OverflowError


def test_update_refuses_a_large_remove_file_by_cheap_checks_first(tmp_path, monkeypatch):
    """``update --remove FILE`` of 10^7 indices was refused only after the whole file was
    parsed, sorted twice (np.unique: the duplicates' check, then Edits') and the run loaded
    and verified: 20 s for a .npy, 66 s for a text file, 1.3 GB. Now the run's training-set
    size comes from its manifest first: a text file's first n + 1 values are read (more
    cannot be valid), their range checked by min / max and repeats by a count per index,
    with update_run's own lines, before the run is loaded (no np.unique, no verify)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment import update

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    n = json.loads((run / "manifest.json").read_text())["data"]["n_train"]
    big = np.arange(10**6, dtype=np.int64)[::-1]
    np.save(tmp_path / "oob.npy", big)
    np.savetxt(tmp_path / "oob.txt", big, fmt="%d")
    np.save(tmp_path / "dup.npy", np.zeros(10**6, dtype=np.int64))
    (tmp_path / "cut.txt").write_text(" ".join(["0"] * (n + 1) + ["x"] * 10**5))

    def fail(*a, **kw):
        pytest.fail("np.unique, or the run loaded, before the indices' cheap checks")

    monkeypatch.setattr(np, "unique", fail)
    monkeypatch.setattr(update, "load_ensemble", fail)
    monkeypatch.setattr(RunDir, "verify", fail)
    out_of_range = ("error: The '--remove' parameter of update must be "
                    f"training-set indices in the range [0, {n - 1}]. Got 999999 instead.\n")
    twice = ("error: The '--remove' and '--relabel' options must name each training-set index "
             "once (a sample is removed or relabelled). Got index 0 more than once instead.\n")
    for name, line in (("oob.npy", out_of_range), ("oob.txt", out_of_range),
                       ("dup.npy", twice), ("cut.txt", twice)):
        r = CliRunner().invoke(app, ["update", str(run), "--out", str(tmp_path / "new"),
                                     "--remove", str(tmp_path / name)])
        assert r.exit_code == 1 and r.output == line, (name, r.output)
        assert not (tmp_path / "new").exists()


def test_update_of_a_run_without_a_manifest_digest_takes_the_cheap_checks_too(tmp_path,
                                                                             monkeypatch):
    """A run of an earlier version (no manifest_sha256 in its manifest) took the slow path:
    ``update --remove FILE`` of 10^7 indices was parsed whole, sorted and refused once the run
    was loaded (31-79 s, 1.3 GB). Its manifest's n_train is now taken where the run's data, as
    its config loads them (after its own edits), give the same size; one that disagrees is
    not (update_run's own check says it, after loading the run, as before)."""
    import shutil

    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment import update
    from poisoncert.runsafe import MANIFEST_DIGEST

    run, upd, wrong = tmp_path / "run", tmp_path / "upd", tmp_path / "wrong"
    train_run(_cfg(training__steps=5), run)
    update_run(run, upd, Edits(remove=np.array([1, 2]), relabel_index=np.array([3]),
                               relabel_label=np.array([0])))
    shutil.copytree(run, wrong)
    sizes = {}
    for folder, more in ((run, 0), (upd, 0), (wrong, 5)):
        man = json.loads((folder / "manifest.json").read_text())
        sizes[folder] = man["data"]["n_train"]
        man["data"]["n_train"] += more
        for key in (MANIFEST_DIGEST, "checksums", "chunk_format"):  # an earlier version's
            man.pop(key)
        (folder / "manifest.json").write_text(json.dumps(man))
    assert sizes[upd] == sizes[run] - 2
    np.save(tmp_path / "oob.npy", np.arange(10**6, dtype=np.int64)[::-1])

    def line(n):
        return ("error: The '--remove' parameter of update must be training-set "
                f"indices in the range [0, {n - 1}]. Got 999999 instead.\n")

    def fail(*a, **kw):
        pytest.fail("np.unique, or the run loaded, before the indices' cheap checks")

    real_unique = np.unique

    def unique(a, *args, **kw):  # (the run's own edits are read: 3 indices)
        return fail() if np.size(a) > 1000 else real_unique(a, *args, **kw)

    with monkeypatch.context() as m:
        m.setattr(np, "unique", unique)
        m.setattr(update, "load_ensemble", fail)
        m.setattr(RunDir, "verify", fail)
        for folder in (run, upd):
            r = CliRunner().invoke(app, ["update", str(folder), "--out", str(tmp_path / "new"),
                                         "--remove", str(tmp_path / "oob.npy")])
            assert r.exit_code == 1 and r.output == line(sizes[folder]), (folder, r.output)
    assert update._run_n_train(wrong) is None  # its n_train is not its data's
    r = CliRunner().invoke(app, ["update", str(wrong), "--out", str(tmp_path / "new"),
                                 "--remove", str(tmp_path / "oob.npy")])
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output  # loaded, then refused:
    assert "manifest.json' is inconsistent: data.n = " in r.output, r.output  # not the range
    assert not (tmp_path / "new").exists()  # [0, n_train + 4] its manifest gave


def test_a_moved_updated_run_reads_its_own_edits(tmp_path):
    """An updated run's config names its edits file by the path it was written to. A moved or
    copied run reads the edits.npz in its own folder, for every command: updating, attacking
    and resuming it used to fail (the file was looked for at the old path), and a copy read
    whatever edits were at the old path later."""
    import shutil

    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.runcheck import verify_run
    from poisoncert.runs import PREDICTIONS, RunDir

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    update_run(run, tmp_path / "u", Edits(remove=np.array([1, 2])))
    update_run(tmp_path / "u", tmp_path / "v_ref", Edits(remove=np.array([3])))
    shutil.move(tmp_path / "u", tmp_path / "moved")
    # another updated run now at the old place, with other edits
    update_run(run, tmp_path / "u", Edits(remove=np.array([5, 6, 7])))
    moved = tmp_path / "moved"
    assert RunDir(moved).load_config().data.edits == str(tmp_path / "u" / "edits.npz")
    assert verify_run(RunDir(moved))["verified"]
    runner = CliRunner()
    r = runner.invoke(app, ["certify", str(moved), "--no-plot"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["update", str(moved), "--out", str(tmp_path / "v"),
                            "--remove", "3"])
    assert r.exit_code == 0, r.output
    v, ref = (RunDir(tmp_path / name) for name in ("v", "v_ref"))
    np.testing.assert_array_equal(v.load(PREDICTIONS), ref.load(PREDICTIONS))
    sizes = [len(split_data(rd.load_config().data).y_train) for rd in (v, ref, RunDir(run))]
    assert sizes[0] == sizes[1] == sizes[2] - 3
    r = runner.invoke(app, ["attack", str(moved), "--attacks", "insert", "--budgets", "1",
                            "--targets", "2", "-q"])
    assert r.exit_code == 0, r.output
    res = train_run(moved / "config.yaml", moved)  # resumed: every chunk is there
    assert res.chunks_trained == 0
    # a new run of its config elsewhere: the path the config names, or --data.edits
    (tmp_path / "u" / "edits.npz").unlink()
    r = runner.invoke(app, ["train", str(moved / "config.yaml"), "--run-dir",
                            str(tmp_path / "new"), "-q"])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert f"Cannot read the edits file '{tmp_path / 'u' / 'edits.npz'}'" in r.output
    assert "needs --data.edits naming where that file is now" in r.output
    assert not (tmp_path / "new").exists()
    r = runner.invoke(app, ["train", str(moved / "config.yaml"), "--run-dir",
                            str(tmp_path / "new"), "-q", "--data.edits",
                            str(moved / "edits.npz")])
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(RunDir(tmp_path / "new").load(PREDICTIONS),
                                  RunDir(moved).load(PREDICTIONS))
    # a moved run without its own edits file: the run's checksums name it
    (moved / "edits.npz").unlink()
    r = runner.invoke(app, ["update", str(moved), "--out", str(tmp_path / "w"),
                            "--remove", "3"])
    assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
    assert f"The file '{moved / 'edits.npz'}' is missing" in r.output
    assert not (tmp_path / "w").exists()


def test_modify_with_a_budget_that_uses_every_bucket_still_makes_its_copies(tmp_path):
    """A ``modify`` whose removals take every bucket voting for the prediction puts its copies
    in those buckets too (one modification each all the same); it was a ZeroDivisionError."""
    cfg = from_dict({"data": {"name": "digits", "test_limit": 20},
                     "selection": {"scheme": "partition", "k": 3, "seed": 1},
                     "training": {"model": "sklearn:knn", "balance": False},
                     "run": {"chunk_size": 32}})
    train_run(cfg, tmp_path / "run")
    res = attack_run(tmp_path / "run", settings=AttackSettings(
        attacks=("modify",), targets=1, budgets=(3, 4)))
    assert [t["operations"] for t in res.trials] == [3, 4]


def test_a_trial_is_judged_by_the_operations_it_made(tmp_path, monkeypatch):
    """A trial that could make fewer than ``r`` operations (a class with fewer samples to
    remove, relabel or replace) is within the radius when the radius covers what it made: it
    was judged by ``r``, so a change within the radius would have been filed as a success
    beyond it."""
    from poisoncert.experiment.attack_edits import EditBuilder

    train_run(_cfg(training__steps=5), tmp_path / "run")
    real = EditBuilder.remove
    monkeypatch.setattr(EditBuilder, "remove", lambda self, t, r, y, c: Edits(
        remove=real(self, t, r, y, c).remove[:1]))  # one removal whatever the budget
    res = attack_run(tmp_path / "run", settings=AttackSettings(attacks=("remove",), targets=10,
                                                               budgets=(3,)))
    assert {t["operations"] for t in res.trials} == {1}
    assert any(t["radius"] in (1, 2) for t in res.trials)
    for t in res.trials:
        assert t["within"] == (t["radius"] >= 1)
    assert res.totals["deterministic"]["changed_within"] == 0


def test_the_attack_memory_check_counts_every_copying_attack_of_a_batch(monkeypatch):
    """One batch of trials holds insert's and modify's trials of a target together (the jobs
    of every attack, in batches of ``batch``): the check counted the trials of one attack, so
    two attacks' copies at twice the memory passed it."""
    from types import SimpleNamespace

    from poisoncert.experiment.attack import _check_attack_memory
    from poisoncert.resources import MEMORY_LIMIT_ENV, ResourceError

    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1G")  # 0.8 GiB planned for
    data = SimpleNamespace(x_test=np.zeros((1, 1, 32, 32), np.float32),
                           poison_idx=np.arange(10**6))
    B = 50_000  # 3 x 4 KiB x B = 0.57 GiB a trial
    _check_attack_memory(AttackSettings(attacks=("insert",), targets=1, budgets=(B,)), data)
    _check_attack_memory(AttackSettings(attacks=("modify",), targets=1, budgets=(B,)), data)
    with pytest.raises(ResourceError, match=r"^The '(budgets|batch)' parameter of attack_run"):
        _check_attack_memory(AttackSettings(attacks=("insert", "modify"), targets=1,
                                            budgets=(B,)), data)


def test_a_modify_with_no_sample_to_replace_makes_no_copies():
    """A class with no sample of ``D^p`` to replace: ``modify`` makes 0 copies (against hash
    buckets ``np.stack`` of no copies raised)."""
    from types import SimpleNamespace

    from poisoncert.experiment.attack_edits import EditBuilder

    b = EditBuilder.__new__(EditBuilder)
    b.data = SimpleNamespace(x_test=np.zeros((1, 1, 8, 8), np.float32))
    b.buckets, b.copies, b.n_buckets = True, 1, 4
    b.P, b.spread = np.zeros((4, 1), np.int16), np.arange(4)[:, None]
    assert b._target_copies(0, 0, 0, 1).shape == (0, 1, 8, 8)
    assert b._target_copies(0, 2, 0, 1).shape == (2, 1, 8, 8)


def test_attack_on_a_knn_run_refuses_data_that_changed_since_it_was_trained(tmp_path):
    """A kNN / rNN attack judges with the run's stored neighbours and predicts the poisoned
    sets from the data it loads now: other arrays at the data set's path (its test points
    among them) would be compared with certificates of data they are not. Refused, as
    ``load_ensemble`` refuses it for the runs of base classifiers."""
    rng = np.random.default_rng(1)

    def write(path):
        x = rng.integers(0, 256, (70, 1, 4, 4)).astype(np.uint8)
        y = np.arange(70) % 3
        np.savez(path, x_train=x[:50], y_train=y[:50], x_test=x[50:], y_test=y[50:])

    path = tmp_path / "d.npz"
    write(path)
    cfg = from_dict({"data": {"name": f"npz:{path}"},
                     "selection": {"scheme": "knn", "k": 3}})
    train_run(cfg, tmp_path / "run")
    settings = AttackSettings(attacks=("insert",), budgets=(1,), targets=2)
    attack_run(tmp_path / "run", settings=settings)  # the run's own data: attacked
    write(path)  # other arrays of the same shapes at the same path
    with pytest.raises(RunError, match=r"have changed since it was trained \(array checksum "
                                       r".*\): restore the data it was trained on, or train a "
                                       r"new run on these data and attack that\.$"):
        attack_run(tmp_path / "run", settings=settings)


def test_training_a_knn_run_again_on_changed_data_is_refused(tmp_path):
    """``train`` on an existing knn / rnn run whose data changed searched the neighbours in
    the new data but kept the run's manifest (its n_train and data checksum): certify then
    capped the radius by the old training set's size. With 3 training samples of one class
    left and k = 3, one deletion leaves kNN without a prediction, yet every test point was
    certified at radius 1 under P6. Refused, as train_run refuses it for other runs, and the
    run is left as it was."""
    rng = np.random.default_rng(1)

    def write(path, n_train):
        x = rng.integers(0, 256, (n_train + 20, 1, 4, 4)).astype(np.uint8)
        y = np.arange(n_train + 20) % 3
        y[:n_train] = 0 if n_train < 10 else y[:n_train]
        np.savez(path, x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:],
                 y_test=y[n_train:])

    path = tmp_path / "d.npz"
    write(path, 60)
    cfg = from_dict({"data": {"name": f"npz:{path}"},
                     "selection": {"scheme": "knn", "k": 3}})
    run = tmp_path / "run"
    train_run(cfg, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    write(path, 3)
    with pytest.warns(UserWarning, match="no training sample"), \
            pytest.raises(RunError, match=r"has changed since it started .*cannot be resumed"):
        train_run(cfg, run)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    certify_run(run, plot=False, model="P6")  # still the run it was, and verified


def test_attack_says_how_a_batchs_retraining_goes(tmp_path, monkeypatch):
    """A batch of trials retrains its classifiers in one call, minutes on a large run, and the
    batch's line came only at its end: lines of the classifiers retrained, with their rate
    and ETA, come at most every ``RETRAIN_LINE_EVERY`` seconds, timed from the learner's
    start, and none once the batch is done (its own line follows)."""
    import poisoncert.experiment.attack as attack_mod

    now = [0.0]
    monkeypatch.setattr(attack_mod, "_clock", lambda: now[0])
    lines: list[str] = []
    advance = attack_mod._retraining_lines(lines.append)(10)
    now[0] = 100.0
    advance(0)  # the learner begins: its start-up is left out
    for t, k in ((110, 2), (125, 2), (131, 1), (150, 3), (170, 2)):
        now[0] = float(t)
        advance(k)
    assert lines == ["    retraining: 5/10 classifiers, 0.161 classifiers/s, 00:31 elapsed, "
                     "ETA 00:31"], lines

    bag = _cfg(selection__scheme="with_replacement", selection__k=None, selection__ns=300,
               selection__T=8, training__group_size=1)  # a group, and a progress call, each
    train_run(bag, tmp_path / "bag")
    ticks = iter(range(0, 100_000, 40))  # each reading of the clock is 40 s later
    monkeypatch.setattr(attack_mod, "_clock", lambda: next(ticks))
    lines.clear()
    attack_run(tmp_path / "bag", settings=AttackSettings(targets=2, budgets=(1,),
                                                          attacks=("flip",)), log=lines.append)
    retraining = [t for t in lines if t.startswith("    retraining: ")]
    assert retraining and all(" classifiers, " in t and " ETA " in t for t in retraining), lines


def test_attack_says_how_the_backdoors_clean_predictions_go(tmp_path, monkeypatch):
    """A review's case: ``attack --attacks backdoor`` ran every classifier on every patched
    test point (minutes on a large run) with no line at all; the pass now gives lines of the
    predictions made, with their rate and ETA, at most every ``RETRAIN_LINE_EVERY`` seconds,
    and a line with its time at its end, as the trials and the retraining do."""
    import poisoncert.experiment.attack as attack_mod

    train_run(_cfg(), tmp_path / "dpa")  # 12 classifiers, weights kept: predicted, not trained
    ticks = iter(range(0, 100_000, 40))  # each reading of the clock is 40 s later
    monkeypatch.setattr(attack_mod, "_clock", lambda: next(ticks))
    lines: list[str] = []
    attack_run(tmp_path / "dpa", settings=AttackSettings(attacks=("backdoor",), budgets=(1,)),
               log=lines.append)
    total = 12 * 80
    prefix = "    clean ensemble on the patched test points: "
    progress = [t for t in lines if t.startswith(prefix)]
    assert progress and all(t.endswith(tuple(f"ETA {m:02d}:{s:02d}" for m in range(60)
                                             for s in range(60))) for t in progress), lines
    done = [int(t[len(prefix):].split("/")[0]) for t in progress]
    assert done == sorted(done) and all(0 < d < total for d in done), lines
    assert all(f"/{total} predictions, " in t and " predictions/s, " in t for t in progress)
    end = [t for t in lines if t.startswith("  backdoor: the clean ensemble on 80 patched "
                                            "test points in ")]
    assert len(end) == 1 and lines.index(end[0]) > lines.index(progress[-1]), lines
    assert lines[-1].startswith("  backdoor r=1 (1/1): "), lines


def test_an_rnn_run_abstaining_is_no_divergence(tmp_path):
    """An rNN abstains where no training sample lies within r, its rule; ``train`` warned that
    those "base classifiers gave outputs that are not finite (diverged training)" and ``--json``
    said ``diverged: 1``. A knn / rnn run trains nothing: no such warning."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    cfg = _cfg(selection__scheme="rnn", selection__k=None, selection__r=20.0)
    run = tmp_path / "rnn"
    r = CliRunner().invoke(app, ["train", str(_write_cfg(tmp_path, cfg)), "--run-dir",
                                 str(run), "-q", "--json"])
    assert r.exit_code == 0, r.output
    assert (RunDir(run).load(PREDICTIONS) == -1).any()  # some balls are empty
    assert json.loads(r.stdout)["diverged"] == 0, r.output
    # no warning: at most the note that the config's training keys do not apply to rnn
    assert "not finite" not in r.stderr, r.stderr
    assert all(line.startswith("note: ") for line in r.stderr.splitlines()), r.stderr


def test_attack_and_update_name_the_folder_they_cannot_write(tmp_path):
    """``attack RUN --out FILE`` and ``update RUN --out FILE`` said "Cannot write the run
    directory 'FILE'" (the attack's results are no run; the update's --out is a new run, not
    RUN), and ``attack FILE`` the same of the run it was given: it is not a run. Each now
    names its folder and option, before anything is read or written (a fresh-eyes review)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    before = sorted(p.name for p in run.iterdir())
    runner = CliRunner()
    for args, line in [
        (["attack", str(run), "--out", str(blocker / "a")],
         f"error: Cannot write the attack's results folder '{blocker / 'a'}' (out_dir; CLI: "
         f"--out): '{blocker}' is not a folder."),
        (["update", str(run), "--out", str(blocker), "--remove", "1"],
         f"error: Cannot write the new run directory '{blocker}' (out_dir; CLI: --out): "
         f"'{blocker}' is not a folder."),
        (["attack", str(blocker)],
         f"error: '{blocker}' is not a poisoncert run directory (it is a file;"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output.startswith(line), (line, r.output)
    assert sorted(p.name for p in run.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "run"]


def test_update_reads_its_files_as_predict_does_one_line_each(tmp_path):
    """``update --add EMPTY_FILE`` (and ``--remove EMPTY.npy``) printed a blank line and
    "error: aborted": np.load took the empty file for a pickle and raised EOFError, which
    click turns into an abort. ``--add`` of a .npz declaring a terabyte array tried to
    allocate it (predict refuses it from the header). Now ``--add`` reads as ``predict`` does
    and ``--remove`` checks a .npy's header: one line naming the file, nothing written (a
    fresh-eyes review)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")

    def npy(shape) -> bytes:
        head = f"{{'descr': '<i8', 'fortran_order': False, 'shape': {shape!r}, }}".encode()
        head += b" " * (63 - (10 + len(head)) % 64) + b"\n"
        return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head + bytes(64)

    import zipfile
    with zipfile.ZipFile(tmp_path / "bomb.npz", "w") as z:
        z.writestr("x.npy", npy((10**11, 8, 8)))
        z.writestr("y.npy", npy((2,)))
    (tmp_path / "bomb.npy").write_bytes(npy((10**12,)))
    runner = CliRunner()
    for option, name, words in [
        ("--add", "empty", ["'--add'", "not a .npz archive"]),
        ("--add", "empty.npz", ["'--add'", "not a .npz archive"]),
        ("--remove", "empty.npy", ["'--remove'", "empty.npy", "not a readable .npy"]),
        ("--add", "bomb.npz", ["bomb.npz", "does not fit in memory"]),
        ("--remove", "bomb.npy", ["bomb.npy", "'--remove'", "does not fit in memory"]),
    ]:
        r = runner.invoke(app, ["update", str(run), "--out", str(tmp_path / "new"), option,
                                str(tmp_path / name)])
        lines = r.output.splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: "), \
            (name, r.output)
        assert "aborted" not in lines[0]
        for w in words:
            assert w in lines[0], (w, lines[0])
        assert not (tmp_path / "new").exists()


def test_attack_warns_loudly_when_a_deterministic_certificate_fails(tmp_path, monkeypatch):
    """A changed prediction within a deterministic radius (a certificate that failed, the one
    thing ``attack`` exists to catch) was only a number in the table's 'changed within' and
    'others changed' columns, exit 0 and no word (a fresh-eyes review). Now one ``warning:``
    line on stderr, with --json too; none when every certificate held. Radii inflated by
    1000 here stand for a broken certificate."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment import attack_backends

    run = tmp_path / "run"
    train_run(_cfg(), run)
    runner = CliRunner()
    args = ["attack", str(run), "--attacks", "flip", "--targets", "8", "--budgets", "1,12"]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "ok"), "-q"])
    assert r.exit_code == 0, r.output
    assert r.stderr == "" and json.loads(
        (tmp_path / "ok" / "attack.json").read_text())["deterministic"]["success_beyond"] > 0
    real = attack_backends._certify
    monkeypatch.setattr(attack_backends, "_certify",
                        lambda *a, **kw: real(*a, **kw) + 1000)
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "broken"), "--json"])
    assert r.exit_code == 0, r.output
    totals = json.loads(r.stdout)["totals"]["deterministic"]
    assert totals["changed_within"] > 0
    lines = r.stderr.splitlines()
    broken = totals["changed_within"] + totals["untargeted_changed"]
    assert len(lines) == 1 and lines[0].startswith(
        f"warning: {broken} prediction{'' if broken == 1 else 's'} certified "
        "deterministically"), r.stderr
    assert "a certificate failed; please report it" in lines[0]


def test_attack_without_a_target_is_refused_and_fewer_targets_are_said(tmp_path,
                                                                        monkeypatch):
    """``attack --max-radius R`` where no correctly classified test point is certified at most
    R ran no trial and wrote empty CSVs (not even a header), an empty panel, and printed
    matplotlib's "warning: No artists with labels found to put in legend"; fewer targets than
    --targets asked for were said only in a progress line (not with -q). Now the first is one
    line naming --max-radius and the smallest radius there is, nothing written; the second a
    line under the table (a fresh-eyes review)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.experiment import attack_backends

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)
    runner = CliRunner()
    # all 80 test points asked for (the most --targets takes): only the correct ones are
    r = runner.invoke(app, ["attack", str(run), "--attacks", "flip", "--budgets", "1",
                            "--targets", "80", "--out", str(tmp_path / "a"), "-q"])
    assert r.exit_code == 0, r.output
    n = len(json.loads((tmp_path / "a" / "attack.json").read_text())["targets"])
    assert 0 < n < 80
    assert (f"targets: {n} of the 80 asked for (--targets): the run has only {n} correctly "
            "classified test points") in " ".join(r.stdout.split())
    real = attack_backends._certify
    monkeypatch.setattr(attack_backends, "_certify", lambda *a, **kw: real(*a, **kw) + 50)
    for attacks in ("flip", "flip,backdoor"):
        r = runner.invoke(app, ["attack", str(run), "--attacks", attacks, "--budgets", "1",
                                "--max-radius", "3", "--out", str(tmp_path / "b")])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output.startswith("error: The '--max-radius' parameter of "
                                   "attack must be at least the smallest radius of a "
                                   "correctly classified test point ("), r.output
        assert "Got 3 instead." in r.output and "warning" not in r.output
        assert not (tmp_path / "b").exists()


def test_attack_refuses_more_targets_than_the_run_has_test_points(tmp_path, monkeypatch):
    """``--targets`` counts distinct test points (each target another one): ``--targets
    1000000000`` was taken, the run loaded and verified, and the attack ran with whatever
    the run had (on MNIST's 10,000 test points x 5 budgets x 5 attacks: months of trials,
    with a rate and an ETA). Now a value beyond the run's test points is one line naming
    the option, its range and the value, from the run's config and manifest before its files
    are verified or anything is written; the default (20) and a value up to the test points
    are taken as before (capped at the correctly classified ones, and said)."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    run = tmp_path / "run"
    train_run(_cfg(training__steps=5), run)  # test_limit 80: 80 test points
    monkeypatch.setattr(RunDir, "verify", lambda *a, **kw: pytest.fail("verified the run"))
    runner = CliRunner()
    for given in ("81", "1000000000"):
        r = runner.invoke(app, ["attack", str(run), "--attacks", "flip,backdoor", "--budgets",
                                "1", "--targets", given, "--out", str(tmp_path / "a")])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output.startswith("error: The '--targets' parameter of attack "
                                   "must be an int in the range [1, 80] (the run's 80 test "
                                   "points"), r.output
        assert r.output.rstrip().endswith(f"Got {given} instead."), r.output
        assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match=r"'targets' parameter of attack_run must be an int "
                                         r"in the range \[1, 80\]"):
        attack_run(run, settings=AttackSettings(attacks=("flip",), targets=81),
                   out_dir=tmp_path / "a")
    assert AttackSettings().targets_wanted == 20 and AttackSettings(targets=80).targets == 80


def test_attack_refuses_a_max_radius_beyond_2_53(tmp_path):
    """``--max-radius`` took any int, 2^53 + 1 and 10^30 included (beyond floats' exact
    integers, where --budgets and every other count stop); now one line in --budgets'
    words (the range [0, 2^53]) before the run is read."""
    from typer.testing import CliRunner

    from poisoncert.cli import app

    for given in (str(2**53 + 1), str(10**30)):
        r = CliRunner().invoke(app, ["attack", str(tmp_path / "none"), "--attacks", "flip",
                                     "--max-radius", given])
        assert r.exit_code == 1 and len(r.output.splitlines()) == 1, r.output
        assert r.output == ("error: The '--max-radius' parameter of attack "
                            f"must be an int in the range [0, 2^53]. Got {given} instead.\n"), \
            r.output
    with pytest.raises(ValueError, match=r"'max_radius' parameter of attack_run must be an "
                                         r"int in the range \[0, 2\^53\]"):
        AttackSettings(max_radius=2**53 + 1)
    assert AttackSettings(max_radius=2**53).max_radius == 2**53


def _drop_data_checksum(run):
    """The run's manifest as an earlier version wrote it: no data.sha256_arrays, its own
    digest intact."""
    from poisoncert.runsafe import MANIFEST_DIGEST, manifest_digest

    manifest = json.loads((run / "manifest.json").read_text())
    del manifest["data"]["sha256_arrays"]
    manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_update_and_attack_refuse_a_run_whose_manifest_records_no_data_checksum(tmp_path):
    """A run made by an earlier version, whose manifest (intact by its own digest) records no
    checksum of its data: update kept its untouched classifiers beside ones retrained on
    whatever data its config loaded now (here every training label changed), and attack
    retrained poisoned copies on them. Nothing says those are the data it was trained on:
    one line each, before any data are read (predict of a knn run refused such a run already;
    review note of session 27)."""
    cfg = _cfg(training__save_weights=True)
    run = tmp_path / "run"
    train_run(cfg, run)
    _drop_data_checksum(run)
    RunDir(run).verify()  # intact by its own checks
    want = (r"^The manifest of the run '.*run' records no checksum of its data "
            r"\(data.sha256_arrays\), so the data loaded now cannot be checked against those "
            r"it was trained on: train a new run on these data\.$")
    with pytest.raises(RunError, match=want):
        update_run(run, tmp_path / "new", Edits(remove=np.array([0])))
    assert not (tmp_path / "new").exists()
    with pytest.raises(RunError, match=want):
        attack_run(run, settings=AttackSettings(attacks=("flip",), budgets=(1,), targets=2))


def test_attack_of_a_knn_run_refuses_a_manifest_without_the_data_checksum(tmp_path):
    """attack of a knn run takes its clean certificates from the run's neighbours and its
    poisoned predictions from the data loaded now: without the manifest's data checksum
    nothing ties the two, so it is refused in one line as predict refuses it."""
    cfg = _cfg(selection__scheme="knn", selection__k=3, training__group_size=None)
    run = tmp_path / "run"
    train_run(cfg, run)
    _drop_data_checksum(run)
    with pytest.raises(RunError, match=r"^The manifest of the run '.*run' records no checksum "
                                       r"of its data .*: train a new run on these data\.$"):
        attack_run(run, settings=AttackSettings(attacks=("flip",), budgets=(1,), targets=2))


def test_a_knn_run_on_inputs_that_are_no_pixels_names_the_data_not_deskew(tmp_path):
    """A knn run on an npz data set whose values are not integer pixels (continuous
    features), with data.deskew false, was refused as "The 'data.deskew' parameter of the
    config must be false for a knn / rnn run ... Got True instead", a value the config did not
    have (review rev31). The line now names the inputs and a value off every pixel scale; a
    deskewed run is still told to turn deskew off."""
    rng = np.random.default_rng(0)
    path = tmp_path / "cont.npz"
    x = rng.random((40, 1, 4, 4)).astype(np.float32)
    x[:, 0, 0, 0] = 3 / 255  # pixel values too: the example is one that is not
    np.savez(path, x_train=x[:30], y_train=np.arange(30) % 2, x_test=x[30:],
             y_test=np.arange(10) % 2)
    cfg = from_dict({"data": {"name": f"npz:{path}"}, "selection": {"scheme": "knn", "k": 3},
                     "training": {"model": "mlp"}})
    with pytest.raises(ValueError, match=r"^A knn / rnn run needs inputs whose values are "
                       r"integer pixels divided by one of 255, 16 .*Got inputs that are not, "
                       r"e\.g\. 0\.\d+: use another selection scheme") as info:
        train_run(cfg, tmp_path / "k")
    assert "deskew" not in str(info.value) and "3/255" not in str(info.value)
    assert not (tmp_path / "k").exists()


def test_a_knn_run_on_test_inputs_that_are_no_pixels_names_the_data_not_deskew(tmp_path):
    """The same for the test set: training inputs that are pixels (u / 255) and test inputs
    that are not, with data.deskew false, were refused as "The 'data.deskew' parameter ...
    must be false ... Got True instead" (bc7f56d named the data for the training inputs
    only). The line names the inputs, the training inputs' scale and a value off it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mix.npz"
    x_train = (rng.integers(0, 256, (30, 1, 4, 4)) / 255).astype(np.float32)
    x_test = (rng.integers(0, 256, (10, 1, 4, 4)) / 255).astype(np.float32)
    x_test[0, 0, 1, 1] = np.float32(0.3)  # one value off the scale
    np.savez(path, x_train=x_train, y_train=np.arange(30) % 2, x_test=x_test,
             y_test=np.arange(10) % 2)
    cfg = from_dict({"data": {"name": f"npz:{path}"}, "selection": {"scheme": "knn", "k": 3},
                     "training": {"model": "mlp"}})
    with pytest.raises(ValueError, match=r"^A knn / rnn run needs inputs whose values are "
                       r"integer pixels divided by 255, the training inputs' scale \(exact "
                       r"distances; .*Got inputs that are not, e\.g\. 0\.3000000\d*: use "
                       r"another selection scheme") as info:
        train_run(cfg, tmp_path / "k")
    assert "deskew" not in str(info.value)
    assert not (tmp_path / "k").exists()
