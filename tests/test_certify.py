"""Tests of poisoncert.certify: Algorithm 1, certified accuracy, DPA and Jia et al.'s rule."""

from __future__ import annotations

import itertools
import re
from collections import deque

import numpy as np
import pytest

from poisoncert import bounds
from poisoncert.certify import (
    ABSTAIN,
    DPA_UNITS,
    Certificate,
    DPACertificate,
    _finish,
    certified_accuracy,
    certify,
    dpa_certify,
    jia_certify,
)
from poisoncert.stats import METHODS, VoteBounds, vote_bounds

SETTINGS = [
    dict(scheme="binomial", n=13007, ns=10),
    dict(scheme="with_replacement", n=13007, ns=10),
    dict(scheme="without_replacement", n=13007, ns=10),
    dict(scheme="binomial", n=50000, p=0.02, model="P1"),
    dict(scheme="without_replacement", n=500, ns=20, model="P3"),
    dict(scheme="with_replacement", n=1000, ns=50, model="P2"),
]


def random_counts(rng, n_test=300, C=3, T=200):
    """Vote counts from a spread of class distributions, many of them nearly unanimous."""
    conc = rng.choice([0.05, 0.3, 3.0], size=n_test)
    probs = np.array([rng.dirichlet(np.full(C, a)) for a in conc])
    return np.array([rng.multinomial(T, p) for p in probs])


# ---------------------------------------------------------------------------------------------
# Algorithm 1
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme,expected", [("binomial", 881), ("with_replacement", 852),
                                             ("without_replacement", 852)])
def test_spec_example_unanimous_votes(scheme, expected):
    """certificates.md: T = 1000 unanimous votes, alpha = 0.001, n = 13007, ns = 10, P6."""
    for method in ("paper", "bonferroni"):  # identical for two classes
        cert = certify([[1000, 0]], scheme=scheme, n=13007, ns=10, alpha=0.001, method=method)
        assert cert.prediction.tolist() == [0]
        assert cert.radius.tolist() == [expected]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("method", ["bonferroni", "bonferroni_upper", "paper"])
def test_certify_matches_bounds_called_directly(setting, method):
    rng = np.random.default_rng(0)
    counts = random_counts(rng, n_test=80)
    T = counts.sum(1) + rng.integers(0, 3, size=len(counts))  # a few abstaining votes
    cert = certify(counts, alpha=0.01, method=method, T=T, **setting)
    vb = vote_bounds(counts, alpha=0.01, method=method, T=T)
    sb = bounds.SelectionBound(**setting)
    assert isinstance(cert, Certificate)
    np.testing.assert_array_equal(cert.p1_lower, vb.p1_lower)
    np.testing.assert_array_equal(cert.p2_upper, vb.p2_upper)
    for i in range(len(counts)):
        gap = vb.p1_lower[i] - vb.p2_upper[i]
        r = bounds.certified_radius(gap, **setting)
        if gap > 0:
            assert cert.prediction[i] == vb.top_class[i] == np.argmax(counts[i])
            assert cert.radius[i] == r >= 0
            # the radius is the largest rho with delta(rho) < gap (strict)
            d_r, d_next = sb.delta(np.array([r, r + 1]))
            assert d_r < gap
            assert not d_next < gap or sb.model in ("P2", "P3", "P5")
        else:
            assert cert.prediction[i] == ABSTAIN and cert.radius[i] == -1
    assert cert.scheme == sb.scheme and cert.model == sb.model and cert.n == sb.n
    assert (cert.ns, cert.p) == (sb.ns, sb.p)
    assert cert.alpha == 0.01 and cert.method == method and cert.rule == "theorem1"
    np.testing.assert_array_equal(cert.T, T)
    assert 0 < cert.certified.sum() < len(counts)  # the draw exercises both branches


def test_tie_abstains_strict_inequality():
    """Equal counts abstain under every method; and a gap of exactly zero abstains (erratum 5:
    Algorithm 1's ``>=`` would certify it)."""
    counts = np.array([[50, 50], [30, 30], [1, 1], [0, 0]])
    for method in METHODS:
        cert = certify(counts, scheme="binomial", n=1000, ns=10, alpha=0.1, method=method,
                       T=[100, 60, 2, 5],
                       labels=[0, 1, 0, 1] if method.startswith("true_label") else None)
        assert (cert.prediction == ABSTAIN).all() and (cert.radius == -1).all()
    vb = VoteBounds(top_class=np.array([1, 0]), p1_lower=np.array([0.5, 0.5]),
                    p2_upper=np.array([0.5, np.nextafter(0.5, 0)]), method="bonferroni",
                    alpha=0.1, T=np.array([10, 10]))
    r = bounds.certified_radius(vb.gap, scheme="binomial", n=1000, ns=10)
    pred, rad = _finish(vb, np.asarray(r))
    assert pred.tolist() == [ABSTAIN, 0]
    assert rad.tolist() == [-1, 0]


def test_abstaining_votes_count_in_T():
    counts = np.array([[80, 0], [80, 0], [80, 0]])
    cert = certify(counts, scheme="with_replacement", n=1000, ns=10, alpha=0.01,
                   T=[80, 100, 200])
    assert cert.prediction.tolist() == [0, 0, ABSTAIN]  # 80 of 200 is no majority
    assert cert.radius[0] > cert.radius[1] >= 0
    assert cert.T.tolist() == [80, 100, 200]
    assert [r["T"] for r in cert.records()] == [80, 100, 200]


def test_true_label_method_predicts_the_label_only_when_it_wins():
    counts = np.array([[90, 10], [90, 10], [40, 60]])
    cert = certify(counts, scheme="binomial", n=1000, ns=10, alpha=0.01, method="true_label",
                   labels=[0, 1, 1])
    assert cert.prediction.tolist() == [0, ABSTAIN, ABSTAIN]
    assert cert.top_class.tolist() == [0, 1, 1]


@pytest.mark.parametrize("method", ["bonferroni", "bonferroni_upper", "pairwise"])
def test_jia_rule_matches_theorem1_for_bagging_with_replacement(method):
    """Erratum 4: Jia et al.'s rounding moves the gap by at most 2 / n^ns, so the radii agree."""
    rng = np.random.default_rng(1)
    counts = random_counts(rng, n_test=200)
    for n, ns in [(13007, 10), (200, 3)]:
        ours = certify(counts, scheme="with_replacement", n=n, ns=ns, alpha=0.01, method=method)
        jia = jia_certify(counts, n=n, ns=ns, alpha=0.01, method=method)
        assert jia.rule == "jia" and jia.scheme == "with_replacement" and jia.model == "P6"
        np.testing.assert_array_equal(jia.prediction, ours.prediction)
        np.testing.assert_array_equal(jia.radius, ours.radius)


def test_jia_rule_rounds_to_its_grid_where_the_grid_is_coarse():
    """With n^ns = 100 the grid of Jia et al.'s rounding is 0.01: its radii are those of the
    rounded bounds (``jia_certified_radius``), never above Theorem 1's, and below them where
    the rounding crosses a step of delta."""
    from poisoncert.bounds import jia_certified_radius

    rng = np.random.default_rng(2)
    counts = random_counts(rng, n_test=300)
    ours = certify(counts, scheme="with_replacement", n=10, ns=2, alpha=0.01)
    jia = jia_certify(counts, n=10, ns=2, alpha=0.01)
    ok = jia.prediction != ABSTAIN
    want = jia_certified_radius(jia.p1_lower, jia.p2_upper, n=10, ns=2)
    np.testing.assert_array_equal(jia.radius[ok], want[ok])
    assert np.all(jia.radius <= ours.radius)
    assert np.any(jia.radius < ours.radius)


def test_records_and_summary():
    counts = np.array([[1000, 0], [500, 500], [990, 10]])
    cert = certify(counts, scheme="binomial", n=13007, ns=10)
    rows = cert.records()
    assert cert.to_rows() == rows
    assert len(rows) == len(cert) == 3
    assert rows[1]["prediction"] == ABSTAIN and rows[1]["radius"] == -1
    assert rows[0]["radius"] == cert.radius[0] and rows[0]["scheme"] == "binomial"
    assert rows[0]["alpha"] == 0.001 and rows[0]["method"] == "bonferroni"
    assert "operation" in rows[0]["radius_unit"]
    assert all(isinstance(v, (int, float, str, type(None))) for v in rows[2].values())
    s = cert.summary(labels=[0, 0, 1])
    assert s["n_test"] == 3 and s["n_certified"] == 2
    assert s["abstain_rate"] == pytest.approx(1 / 3)
    assert s["accuracy"] == pytest.approx(1 / 3)
    assert s["radius_max"] == cert.radius.max()
    # radius statistics are over the certified points only (row 1 abstains)
    assert s["radius_median"] == np.median(cert.radius[[0, 2]])
    assert s["radius_mean"] == np.mean(cert.radius[[0, 2]])


def test_empty_input():
    cert = certify(np.zeros((0, 2), dtype=int), scheme="binomial", n=100, ns=5)
    assert len(cert) == 0 and cert.records() == []


# ---------------------------------------------------------------------------------------------
# certified accuracy
# ---------------------------------------------------------------------------------------------


def _certified_accuracy_loop(pred, radius, labels, rho):
    hits = 0
    for p_i, r_i, y_i in zip(pred, radius, labels, strict=True):
        if p_i != ABSTAIN and p_i == y_i and r_i >= rho:
            hits += 1
    return hits / len(labels)


@pytest.mark.parametrize("setting", SETTINGS[:3])
def test_certified_accuracy_matches_loop_and_is_monotone(setting):
    rng = np.random.default_rng(2)
    counts = random_counts(rng, n_test=200)
    labels = np.where(rng.random(200) < 0.8, counts.argmax(1), rng.integers(0, 3, size=200))
    cert = certify(counts, alpha=0.001, **setting)
    rhos = np.arange(0, cert.radius.max() + 3)
    acc = certified_accuracy(cert, labels, rhos)
    assert acc.shape == rhos.shape
    assert np.all(np.diff(acc) <= 0)
    assert acc[-1] == 0.0 and acc[0] > 0.3
    for rho in list(rhos[::7]) + [int(rhos[-1])]:
        assert acc[rho] == pytest.approx(
            _certified_accuracy_loop(cert.prediction, cert.radius, labels, rho), abs=1e-15)
        # (both are a count over n_test, each rounded once: equal to within an ulp of 1)
    assert certified_accuracy(cert, labels, 0) == acc[0]
    # a 2-D grid of rhos keeps its shape
    assert certified_accuracy(cert, labels, rhos[:6].reshape(2, 3)).shape == (2, 3)


def test_certified_accuracy_counts_abstentions_as_wrong():
    cert = certify([[50, 50], [100, 0]], scheme="binomial", n=100, ns=5, alpha=0.01)
    # label ABSTAIN is not a class; label 0 for the abstained point is still wrong
    assert certified_accuracy(cert, [0, 0], [0]).tolist() == [0.5]


# ---------------------------------------------------------------------------------------------
# DPA
# ---------------------------------------------------------------------------------------------


def _winner(state):
    return int(np.argmax(state))  # ties to the smaller index


def _min_ops_to_flip(counts, votes_per_op):
    """Brute force: the fewest operations that change the majority vote, where one operation
    moves ``votes_per_op`` part votes (or fewer) from any class to any other."""
    start = tuple(int(c) for c in counts)
    c1 = _winner(start)
    C = len(start)

    def one_move(state):
        for a, b in itertools.permutations(range(C), 2):
            if state[a] > 0:
                s = list(state)
                s[a] -= 1
                s[b] += 1
                yield tuple(s)

    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        state, d = queue.popleft()
        if _winner(state) != c1:
            return d
        frontier = {state}
        reach = set()
        for _ in range(votes_per_op):
            frontier = {t for s in frontier for t in one_move(s)}
            reach |= frontier
        for t in reach - seen:
            seen.add(t)
            queue.append((t, d + 1))
    raise AssertionError("the majority vote can always be changed")


def _all_counts(k, C):
    for cut in itertools.combinations_with_replacement(range(k + 1), C - 1):
        bounds_ = (0, *cut, k)
        yield [bounds_[i + 1] - bounds_[i] for i in range(C)]


@pytest.mark.parametrize("C", [2, 3])
def test_dpa_radius_against_brute_force_attack_search(C):
    cases = [c for k in range(1, 8) for c in _all_counts(k, C)]
    counts = np.array(cases)
    by_model = {m: dpa_certify(counts, model=m) for m in bounds.MODELS}
    dpa_unit = dpa_certify(counts, unit="dpa")
    for i, c in enumerate(cases):
        one = _min_ops_to_flip(c, 1) - 1  # insertion/deletion: one part's vote per operation
        two = _min_ops_to_flip(c, 2) - 1  # modification: up to two parts' votes
        for m in ("P1", "P2"):
            assert by_model[m].radius[i] == one, (c, m)
        for m in ("P3", "P4", "P5", "P6"):
            assert by_model[m].radius[i] == two, (c, m)
        # the DPA paper's unit: a modification is two operations, each moving one vote
        assert dpa_unit.radius[i] == one == by_model["P6"].radius_dpa[i]
        assert by_model["P6"].prediction[i] == _winner(c)


def test_dpa_tie_break_and_slack():
    cert = dpa_certify([[3, 3, 0], [2, 4, 4], [5, 1, 4], [0, 5, 5], [6, 0, 0]])
    assert isinstance(cert, DPACertificate)
    assert cert.prediction.tolist() == [0, 1, 0, 1, 0]
    # [3, 3, 0]: class 1 would need one more vote to overtake class 0 -> slack 3 - 3 = 0 + ...
    #   rivals: N_1 + [1 < 0] = 3 -> slack 0; [2, 4, 4]: rival 2 has 4 -> slack 0;
    # [5, 1, 4]: slack 1; [0, 5, 5]: rival 0 has 0 + 1, rival 2 has 5 -> slack 0; [6, 0, 0]: 6.
    assert cert.slack.tolist() == [0, 0, 1, 0, 6]
    assert cert.radius.tolist() == [0, 0, 0, 0, 1]
    assert cert.radius_dpa.tolist() == [0, 0, 0, 0, 3]
    # a smaller-index rival wins ties: [4, 5] -> c1 = 1, rival 0 counts 4 + 1 -> slack 0
    assert dpa_certify([[4, 5]]).slack.tolist() == [0]
    assert dpa_certify([[5, 4]]).slack.tolist() == [1]
    # no part votes: DPA abstains (not class 0 with radius 0)
    none = dpa_certify([[0, 0, 0], [1, 0, 0]])
    assert none.prediction.tolist() == [-1, 0] and none.radius.tolist() == [-1, 0]


def test_dpa_units_and_records():
    counts = [[9, 1], [20, 0]]
    op = dpa_certify(counts, model="P3")
    dp = dpa_certify(counts, model="P3", unit="dpa")
    assert op.radius.tolist() == [2, 5] and dp.radius.tolist() == [4, 10]
    assert op.unit == "operation" and dp.unit == "dpa" and set(DPA_UNITS) == {"operation", "dpa"}
    rows = op.records()
    assert rows[0]["radius"] == 2 and rows[0]["radius_dpa"] == 4 and rows[0]["unit"] == "operation"
    assert "modification = 1" in rows[0]["radius_unit"]
    assert "modification = 2" in dp.records()[0]["radius_unit"]
    assert op.summary()["radius_max"] == 5
    assert certified_accuracy(op, [0, 1], [0, 2, 3]).tolist() == [0.5, 0.5, 0.0]


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------

GOOD = dict(scheme="binomial", n=1000, ns=10)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(alpha=1.5), r"^The 'alpha' parameter of certify must be a real number in the range "
                          r"\[1e-100, 1\)\. Got 1\.5 instead\.$"),
        (dict(alpha=0.0), r"'alpha' parameter of certify"),
        (dict(method="simuem"), r"'method' parameter of certify .*Got 'simuem'"),
        (dict(T=10), r"'T' parameter of certify .*Got 10 instead"),
        (dict(counts=[[5, -1]]), r"'counts' parameter of certify .*Got -1 instead"),
        (dict(counts=[[5.5, 1]]), r"'counts' parameter of certify .*Got 5\.5 instead"),
        (dict(counts=[[[1]]]), r"'counts' parameter of certify must be a 2-D"),
        (dict(method="true_label"), r"'labels' parameter of certify"),
        (dict(scheme="bootstrap"), r"'scheme' parameter .*Got 'bootstrap'"),
        (dict(model="P7"), r"'model' parameter .*Got 'P7'"),
        (dict(n=0), r"'n' parameter"),
        (dict(scheme="with_replacement", ns=None), r"'ns' parameter"),
    ],
)
def test_certify_bad_input(kwargs, match):
    kwargs = {**GOOD, **kwargs}
    counts = kwargs.pop("counts", [[15, 5]])
    with pytest.raises(ValueError, match=match):
        certify(counts, **kwargs)


def test_other_bad_input():
    cert = certify([[15, 5]], **GOOD)
    with pytest.raises(ValueError, match=r"'rhos' parameter of certified_accuracy .*Got -1"):
        certified_accuracy(cert, [0], [0, -1])
    with pytest.raises(ValueError, match=r"'labels' parameter of certified_accuracy .*shape"):
        certified_accuracy(cert, [0, 1], [0])
    with pytest.raises(ValueError, match=r"'labels' parameter of certified_accuracy .*Got -1"):
        certified_accuracy(cert, [-1], [0])
    with pytest.raises(ValueError, match=r"'model' parameter of dpa_certify .*Got 'P9'"):
        dpa_certify([[1, 2]], model="P9")
    with pytest.raises(ValueError, match=r"'unit' parameter of dpa_certify .*Got 'ops'"):
        dpa_certify([[1, 2]], unit="ops")
    with pytest.raises(ValueError, match=r"'counts' parameter of dpa_certify .*at least 2"):
        dpa_certify([[3]])
    with pytest.raises(ValueError, match=r"'alpha' parameter of jia_certify"):
        jia_certify([[1, 2]], n=100, ns=3, alpha=2)


def _every_certificate_type(rng):
    """One certificate of each type on 3 classes and 6 test points."""
    from poisoncert.aggregation import fa_certify
    from poisoncert.knn import knn_certify, rnn_certify
    from poisoncert.runoff import roe_certify

    votes = rng.integers(1, 20, size=(6, 3))
    preds = rng.integers(0, 3, size=(8, 6))
    ranks = np.argsort(rng.random((8, 6, 3)), axis=2).astype(np.int8)
    return {
        "certify": certify(votes, scheme="with_replacement", n=1000, ns=10),
        "jia_certify": jia_certify(votes, n=1000, ns=10),
        "dpa_certify": dpa_certify(votes),
        "fa_certify": fa_certify(preds, d=2, n_classes=3),
        "roe_certify": roe_certify(ranks, d=1),
        "knn_certify": knn_certify(rng.integers(0, 3, size=(6, 9)), k=3, n_classes=3),
        "rnn_certify": rnn_certify(votes),
    }


def test_class_ids_for_indices_are_refused_by_every_certificate():
    """A certificate of bare votes takes class indices: labels beyond its classes (the data
    set's ids, e.g. 7 for index 1 of MNIST 1/7) are an error, not a certified accuracy of 0."""
    rng = np.random.default_rng(5)
    for name, cert in _every_certificate_type(rng).items():
        assert cert.n_classes == 3, name
        ok = rng.integers(0, 3, size=6)
        acc = certified_accuracy(cert, ok, [0, 1])
        assert acc.shape == (2,) and 0 <= acc[1] <= acc[0] <= 1, name
        assert cert.summary(ok)["n_test"] == 6, name
        ids = ok.copy()
        ids[2] = 3
        for fn, args in ((certified_accuracy, (cert, ids, [0])), (cert.summary, (ids,))):
            with pytest.raises(ValueError, match=r"'labels' parameter of \w+ must be class "
                               r"indices in \[0, 2\] .*not the data set's class ids.*Got 3 "
                               "instead"):
                fn(*args)


def test_a_numpy_value_shows_as_the_number_it_holds():
    """An error's 'Got ...' shows ``7``, not numpy's ``np.int64(7)``."""
    from poisoncert._validation import param_error

    for got, shown in ((np.int64(7), "Got 7 instead"), (np.float32(0.5), "Got 0.5 instead"),
                       (np.str_("P7"), "Got 'P7' instead"), (np.bool_(True), "Got True")):
        assert shown in str(param_error("x", "f", "an int", got))
    with pytest.raises(ValueError, match=r"Got 3 instead\.$"):
        certified_accuracy(dpa_certify(np.array([[3, 1], [0, 2]])), np.array([0, 3]), [0])


def test_an_int_list_refuses_empty_elements_and_takes_spaces():
    """``parse_int_list``: ``" 0, 50 ,100"`` is three ints; an empty element (``0,,5``, a
    trailing comma), a non-integer, a value below ``low`` or past ``INT_LIMIT`` is one error
    naming the option, the range (it said ">= 0" of 2^53 + 1, which is) and the text given."""
    from poisoncert._validation import INT_LIMIT, parse_int_list

    assert parse_int_list(" 0, 50 ,100", "--rhos", "certify", low=0) == [0, 50, 100]
    assert parse_int_list("-3", "--x", "f") == [-3]
    for text in ("0,,5", "0,5,", ",0", "", " ", "0,x", "1.0", "3 4", "-1",
                 f"{INT_LIMIT + 1}"):
        with pytest.raises(ValueError, match=r"^The '--rhos' parameter of certify must be "
                           r"comma-separated ints in the range \[0, 2\^53\], e\.g\. 0,50,100\. "
                           r"Got "
                           + re.escape(repr(text)) + r" instead\.$"):
            parse_int_list(text, "--rhos", "certify", low=0)


def test_vote_inputs_of_the_wrong_kind_are_one_line():
    """A 1-D vote array, ``None`` as counts, text or complex scores: one error naming the
    parameter (numpy's AxisError, "an array of shape ()", a float conversion error or a
    silently dropped imaginary part before)."""
    from poisoncert.runoff import rankings_from_scores
    from poisoncert.votes import majority_vote

    for call, match in (
            (lambda: majority_vote([1, 2]), r"^The 'votes' parameter of majority_vote must "
             r"be a 2-D array .* Got 'an array of shape \(2,\)' instead\.$"),
            (lambda: majority_vote([[1, 2], [3]]), r"'votes' .* Got 'ragged rows'"),
            (lambda: certify(None, scheme="binomial", n=10, ns=2),
             r"^The 'counts' parameter of certify must be .* Got None instead\.$"),
            (lambda: rankings_from_scores([[["a", "b"]]]),
             r"^The 'scores' parameter of rankings_from_scores must be a 3-D array of real "
             r"numbers\. Got 'an array of <U1' instead\.$"),
            (lambda: rankings_from_scores(np.array([[[1 + 1j, 2]]])), r"complex128")):
        with pytest.raises(ValueError, match=match):
            call()
    assert majority_vote([[1, 2], [3, 0], [0, 0]]).tolist() == [1, 0, -1]
    # ties go to the smaller class index (as every certificate's prediction does)
    assert majority_vote([[2, 2, 1], [0, 3, 3], [1, 0, 1]]).tolist() == [0, 1, 0]


def test_every_summary_takes_the_labels_its_certificate_names():
    """A certificate that names its classes (an ``Ensemble``'s) takes class ids in
    ``summary`` as in ``certified_accuracy``, whatever its type (Finite Aggregation's summary
    once compared ids with indices)."""
    import dataclasses

    rng = np.random.default_rng(9)
    idx = rng.integers(0, 3, size=6)
    ids = np.array([10, 20, 30])[idx]
    for name, cert in _every_certificate_type(rng).items():
        if "classes" not in {f.name for f in dataclasses.fields(cert)}:
            continue
        named = dataclasses.replace(cert, classes=np.array([10, 20, 30]))
        assert named.summary(ids) == cert.summary(idx), name
        np.testing.assert_array_equal(certified_accuracy(named, ids, [0, 1]),
                                      certified_accuracy(cert, idx, [0, 1]))


def test_public_functions_name_their_own_parameters():
    """``certify``, ``certified_radius`` and ``delta`` build a ``SelectionBound``: its errors
    name the function called, not that class."""
    from poisoncert.bounds import certified_radius, delta

    cases = [(lambda: certify([[10, 0]], scheme="with_replacement", n=100, ns=5, p=0.1, T=10),
              "The 'p' parameter of certify must be None"),
             (lambda: certified_radius(0.5, scheme="without_replacement", n=10, ns=11),
              r"The 'ns' parameter of certified_radius must be an int in the range \[1, 10\]"),
             (lambda: delta(3, scheme="binomial", n=10), "The 'p' parameter of delta must be")]
    for call, words in cases:
        with pytest.raises(ValueError, match="^" + words) as e:
            call()
        assert "SelectionBound" not in str(e.value)
