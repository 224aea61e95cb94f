"""The two-phase classifier (Algorithm 3, case 3) on scikit-learn's digits (seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from poisoncert import twophase
from poisoncert.config import ConfigError, from_dict
from poisoncert.experiment import certify_run, train_run

POISONED = [9]


def test_label_maps():
    y = np.array([0, 9, 3, 9, 8])
    assert twophase.phase1_labels(y, POISONED, 10).tolist() == [0, 1, 0, 1, 0]
    assert twophase.phase2_labels(y, POISONED, 10).tolist() == [0, -1, 3, -1, 8]
    assert twophase.clean_classes([1, 3], 5).tolist() == [0, 2, 4]
    # two poisoned classes: phase-1 classes follow the given order
    assert twophase.phase1_labels([1, 3, 0], [3, 1], 5).tolist() == [2, 1, 0]


def test_combine_votes_mapping():
    # clean classes of 5 with poisoned [1, 3]: 0, 2, 4; phase 2 outputs positions 0..2
    pred1 = np.array([[0, 1, 2, -1], [0, 0, 2, 1]])
    pred2 = np.array([2, 1, 0, 0])
    out = twophase.combine(pred1, pred2, [1, 3], 5)
    assert out.dtype == np.int16
    assert out.tolist() == [[4, 1, 3, -1], [4, 2, 3, 1]]


def test_combine_phase2_abstention_abstains():
    # phase 2 abstains (-1, inference's answer to non-finite logits) on point 1: where
    # phase 1 says CLEAN the base classifier abstains; it was read as clean[-1] = class 4
    pred1 = np.array([[0, 0, 1], [2, 0, -1]])
    pred2 = np.array([1, -1, 0])
    out = twophase.combine(pred1, pred2, [1, 3], 5)
    assert out.tolist() == [[2, -1, 1], [3, -1, -1]]


@pytest.mark.parametrize(("pred1", "pred2", "name", "given"), [
    ([[3]], [0], "pred1", "3"),      # only 2 poisoned classes: phase-1 outputs -1..2
    ([[-2]], [0], "pred1", "-2"),
    ([[0]], [3], "pred2", "3"),      # 3 clean classes: phase-2 outputs -1..2
    ([[0]], [-2], "pred2", "-2"),    # was read as clean[-2], a vote for class 2
    ([[0.5]], [0], "pred1", "float64"),
])
def test_combine_refuses_outputs_out_of_range(pred1, pred2, name, given):
    with pytest.raises(ValueError, match=rf"'{name}' parameter of combine must be .*\[-1, "
                                         rf"2\].*{given}"):
        twophase.combine(np.array(pred1), np.array(pred2), [1, 3], 5)


def test_phase2_accuracy_counts_abstentions_as_wrong(monkeypatch):
    # a phase 2 whose outputs are all -1 (non-finite logits) is right nowhere; its accuracy
    # read -1 as the last clean class (8) and was the share of class-8 test points
    from poisoncert import training
    from poisoncert.experiment import learners
    from poisoncert.experiment.split import split_data

    cfg = from_dict(_config(True))
    data = split_data(cfg.data)

    def abstain(x_train, y, subsets, seeds, x_test, *args, **kwargs):
        return np.full((1, len(x_test)), -1, dtype=np.int16)

    monkeypatch.setattr(training, "train_predict", abstain)
    assert (data.y_test == 8).any()
    assert learners.train_phase2(cfg, data).accuracy == 0.0


@pytest.mark.parametrize("fn", [twophase.phase1_labels, twophase.phase2_labels])
@pytest.mark.parametrize(("y", "given"), [([3, -1], "-1"), ([10], "10"), ([2.5], "2.5")])
def test_label_maps_refuse_labels_out_of_range(fn, y, given):
    # -1 was read as class 9 (a poisoned class: phase-1 label 1); 10 raised IndexError
    with pytest.raises(ValueError, match=rf"'y' parameter of {fn.__name__} .*\[0, 9\].*"
                                         rf"Got {given}"):
        fn(y, POISONED, 10)


def test_poisoned_classes_must_be_integers():
    # [8.7] was truncated to class 8
    with pytest.raises(ValueError, match=r"'poisoned' parameter of phase1_labels"):
        twophase.phase1_labels([1], [8.7], 10)


def test_phase1_accuracy_from_combined():
    labels = np.array([9, 9, 0, 5])
    combined = np.array([[9, 3, 0, 9], [9, 9, 7, 2]])  # phase 1 right: [1,0,1,0], [1,1,1,1]
    np.testing.assert_allclose(twophase.phase1_accuracy(combined, labels, POISONED, 10),
                               [0.5, 1.0])


def test_phase1_balanced_accuracy_is_the_mean_of_its_recalls():
    """Phase 1's plain accuracy over a test set mostly of clean classes is mostly its recall on
    "clean": a phase 1 that always says "clean" scores 0.8 here. Its balanced accuracy is the
    mean of its recalls on its own classes ("clean", class 9), each counted as the plain
    accuracy counts it (phase 2's abstentions on clean points left out)."""
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 9])
    always_clean = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 3, 3]])  # recall 1 on clean, 0 on 9
    half = np.array([[0, 9, 2, 3, 4, 5, 6, 7, 9, 1]])  # clean 7/8, class 9: 1/2
    both = np.concatenate([always_clean, half])
    np.testing.assert_allclose(twophase.phase1_accuracy(both, labels, POISONED, 10),
                               [0.8, 0.8])
    np.testing.assert_allclose(twophase.phase1_balanced_accuracy(both, labels, POISONED, 10),
                               [0.5, (7 / 8 + 1 / 2) / 2])
    pred2 = np.array([0, -1, 2, 3, 4, 5, 6, 7, -1, -1])  # abstains on label 1's point: out
    np.testing.assert_allclose(
        twophase.phase1_balanced_accuracy(both, labels, POISONED, 10, phase2=pred2),
        [0.5, (7 / 7 + 1 / 2) / 2])
    # a class without counted test points is left out of the mean; none: NaN
    np.testing.assert_allclose(
        twophase.phase1_balanced_accuracy(both[:, :8], labels[:8], POISONED, 10), [1, 7 / 8])
    assert np.isnan(twophase.phase1_balanced_accuracy(
        both[:, :8], labels[:8], POISONED, 10, phase2=np.full(8, -1))).all()
    with pytest.raises(ValueError, match=r"'phase2' parameter of phase1_balanced_accuracy"):
        twophase.phase1_balanced_accuracy(both, labels, POISONED, 10, phase2=pred2[:3])


def test_phase1_accuracy_leaves_out_what_phase2_abstentions_hide():
    """Phase 1's accuracy counted a clean-class test point where phase 2 abstained as phase 1's
    error even where phase 1 said "clean" (right): the combined prediction is -1 there. Given
    phase 2's outputs, those points are left out; on every other point the accuracy equals
    the one read from phase 1's own outputs (the oracle), for every classifier."""
    rng = np.random.default_rng(5)
    T, n, k = 40, 300, len(POISONED)
    labels = rng.integers(0, 10, n)
    pred1 = rng.integers(-1, k + 1, (T, n))  # CLEAN, 1..k, or -1 (abstain)
    pred2 = rng.integers(-1, 10 - k, n)  # positions among the clean classes, or -1
    pred2[:20] = -1
    labels[:20] = 0  # clean-class points where phase 2 abstains
    pred1[:, :20] = twophase.CLEAN  # and phase 1 was right
    combined = twophase.combine(pred1, pred2, POISONED, 10)
    truth = pred1 == twophase.phase1_labels(labels, POISONED, 10)[None, :]  # phase 1's own
    seen = np.isin(labels, POISONED) | (pred2 >= 0)
    got = twophase.phase1_accuracy(combined, labels, POISONED, 10, phase2=pred2)
    np.testing.assert_array_equal(got, truth[:, seen].mean(axis=1))
    lower = twophase.phase1_accuracy(combined, labels, POISONED, 10)  # every point counted
    assert np.all(lower < got)
    # a phase 2 that abstained everywhere: phase 1 judged on the poisoned classes' points
    # alone (it had at most their share of the test set), NaN where there are none
    none = np.full(n, -1)
    combined = twophase.combine(pred1, none, POISONED, 10)
    poisoned_points = np.isin(labels, POISONED)
    np.testing.assert_array_equal(
        twophase.phase1_accuracy(combined, labels, POISONED, 10, phase2=none),
        truth[:, poisoned_points].mean(axis=1))
    assert np.isnan(twophase.phase1_accuracy(combined[:, ~poisoned_points],
                                             labels[~poisoned_points], POISONED, 10,
                                             phase2=none[~poisoned_points])).all()
    for bad, given in ((pred2[:5], "shape"), (pred2.astype(float), "dtype"),
                       (np.full(n, 9), "9"), (np.full(n, -2), "-2")):
        with pytest.raises(ValueError, match=rf"'phase2' parameter of phase1_accuracy.*{given}"):
            twophase.phase1_accuracy(combined, labels, POISONED, 10, phase2=bad)


def test_bad_poisoned_classes():
    with pytest.raises(ValueError, match="'poisoned' parameter"):
        twophase.phase1_labels([0], [0, 1], 2)  # no clean class left
    with pytest.raises(ConfigError, match="training.two_phase"):
        from_dict({"training": {"two_phase": True}})
    with pytest.raises(ConfigError, match="At most one"):
        from_dict({"data": {"n_clean": 5, "poisoned_classes": [9]}})


def _config(two_phase: bool, T: int = 8) -> dict:
    return {
        "data": {"name": "digits", "poisoned_classes": POISONED},
        "selection": {"scheme": "without_replacement", "ns": 20, "T": T, "seed": 3},
        "training": {"model": "mlp", "steps": 10, "batch_size": 16, "two_phase": two_phase,
                     "phase2_steps": 40},
        "certify": {"rhos": [0, 1, 2]},
        "run": {"chunk_size": 4},
    }


@pytest.fixture(scope="module")
def two_phase_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("twophase") / "run"
    return path, train_run(_config(True), path, progress=False)


def test_two_phase_run_shares_phase2_and_certifies_with_n_dp(two_phase_run):
    path, res = two_phase_run
    labels = res.labels
    n_poisoned = int(np.sum(np.load(path / "clean_indices.npy").size))
    # D^p = the class-9 training samples, so n = |D^p| and D^c is everything else
    manifest = json.loads((path / "manifest.json").read_text())
    assert res.n == manifest["data"]["n"] == manifest["data"]["n_train"] - n_poisoned
    assert manifest["data"]["poisoned_labels"] == POISONED
    # every vote for a clean class comes from the one shared phase-2 model
    pred = res.predictions.astype(int)
    for j in range(pred.shape[1]):
        clean_votes = set(pred[:, j][(pred[:, j] >= 0) & (pred[:, j] != 9)].tolist())
        assert len(clean_votes) <= 1
    ph = json.loads((path / "phase2.json").read_text())
    assert 0.0 <= ph["phase2_accuracy"] <= 1.0 and len(ph["phase1_accuracy"]) == res.T
    np.testing.assert_allclose(
        ph["phase1_accuracy"], twophase.phase1_accuracy(pred, labels, POISONED, 10), rtol=0,
        atol=1e-6)  # phase2.json rounds to 6 decimals
    cert, _ = certify_run(path, plot=False)
    assert cert.n == res.n
    assert cert.prediction.shape == labels.shape


def test_phase2_json_leaves_phase2_abstentions_out_of_phase1_accuracy(tmp_path, monkeypatch):
    """A run whose phase 2 abstains (non-finite outputs) on clean-class test points recorded
    them as phase 1's errors in phase2.json; it now leaves them out, says how many there were
    and over how many points phase 1 is judged. Deleting phase2.json and training the run
    again trains phase 2 alone and writes it again (what the report's note says)."""
    import dataclasses

    from poisoncert.experiment import learners

    real = learners.train_phase2
    hidden = {}

    def abstaining(cfg, data):
        model = real(cfg, data)
        pred = model.predictions.copy()
        clean = np.flatnonzero(~np.isin(data.y_test, POISONED))
        pred[clean[::3]] = -1
        hidden["pred"] = pred
        return dataclasses.replace(model, predictions=pred)

    monkeypatch.setattr(learners, "train_phase2", abstaining)
    path = tmp_path / "run"
    res = train_run(_config(True), path, progress=False)
    ph = json.loads((path / "phase2.json").read_text())
    labels, pred = res.labels, res.predictions.astype(int)
    k = len(np.flatnonzero(~np.isin(labels, POISONED))[::3])
    assert ph["phase2_abstentions"] == k and ph["phase1_test_points"] == len(labels) - k
    want = twophase.phase1_accuracy(pred, labels, POISONED, 10, phase2=hidden["pred"])
    np.testing.assert_allclose(ph["phase1_accuracy"], want, rtol=0, atol=1e-6)
    assert ph["phase1_accuracy_mean"] == pytest.approx(float(want.mean()), abs=1e-12)
    assert ph["phase1_accuracy_mean"] > float(
        twophase.phase1_accuracy(pred, labels, POISONED, 10).mean())
    bal = twophase.phase1_balanced_accuracy(pred, labels, POISONED, 10, phase2=hidden["pred"])
    np.testing.assert_allclose(ph["phase1_balanced_accuracy"], bal, rtol=0, atol=1e-6)
    assert ph["phase1_balanced_accuracy_mean"] == pytest.approx(float(bal.mean()), abs=1e-12)
    monkeypatch.setattr(learners, "train_phase2", real)
    (path / "phase2.json").unlink()
    again = train_run(_config(True), path, progress=False)
    assert again.chunks_trained == 0
    assert json.loads((path / "phase2.json").read_text())["phase2_abstentions"] == 0


def test_two_phase_resume_is_identical(two_phase_run, tmp_path):
    path, res = two_phase_run
    again = train_run(_config(True), tmp_path / "again", progress=False)
    np.testing.assert_array_equal(again.predictions, res.predictions)


def test_algorithm2_same_split(tmp_path):
    res = train_run(_config(False, T=4), tmp_path / "alg2", progress=False)
    manifest = json.loads((tmp_path / "alg2" / "manifest.json").read_text())
    assert res.n == manifest["data"]["n"]
    assert not (tmp_path / "alg2" / "phase2.json").exists()
