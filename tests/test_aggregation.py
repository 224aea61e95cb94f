"""Tests of poisoncert.aggregation (Finite Aggregation) and the FA selection helpers.

The exactness tests enumerate attacks literally: every set of changed buckets and every vote of
every base classifier that uses one of them (bucket level), and every insertion, deletion and
modification of the samples of a tiny training set (sample level, for the units).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poisoncert import selection
from poisoncert.aggregation import (
    FACertificate,
    bucket_radius,
    class_bucket_radii,
    fa_bucket_votes,
    fa_certify,
    fa_shifts,
    fa_spread,
    topsum_radius,
)
from poisoncert.bounds import MODELS
from poisoncert.certify import ABSTAIN, dpa_certify


def counts_of(pred: np.ndarray, C: int) -> np.ndarray:
    return np.stack([(pred == c).sum(axis=0) for c in range(C)], axis=1)


# ---------------------------------------------------------------------------------------------
# spreading
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,d", [(1, 1), (5, 1), (1, 4), (3, 2), (50, 8), (150, 16)])
def test_spread_is_regular(k, d):
    spread = fa_spread(k, d)
    n = k * d
    assert spread.shape == (n, d)
    assert all(len(set(row)) == d for row in spread.tolist())        # d distinct classifiers
    assert np.array_equal(np.bincount(spread.ravel(), minlength=n), np.full(n, d))
    shifts = fa_shifts(k, d)
    assert shifts[0] == 0 and len(set(shifts.tolist())) == d and shifts.max() < n
    np.testing.assert_array_equal(fa_shifts(k, d), shifts)           # a pure function
    if d == 1:
        np.testing.assert_array_equal(spread[:, 0], np.arange(n))    # DPA: bucket j -> model j


def test_fa_selection_helpers_agree_with_the_spread():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, size=(400, 3, 3), dtype=np.uint8)
    y = rng.integers(0, 4, size=400)
    k, d = 4, 3
    buckets = selection.fa_bucket_ids(X, y, k=k, d=d)
    np.testing.assert_array_equal(buckets, selection.partition_ids(X, y, k=k * d))
    np.testing.assert_array_equal(selection.fa_bucket_ids(X, y, k=7, d=1),
                                  selection.partition_ids(X, y, k=7))
    users = selection.fa_sample_classifiers(buckets, k=k, d=d)
    spread = fa_spread(k, d)
    np.testing.assert_array_equal(np.sort(users, axis=1), np.sort(spread[buckets], axis=1))
    per_model = selection.fa_classifier_indices(buckets, k=k, d=d)
    assert len(per_model) == k * d
    for j, idx in enumerate(per_model):
        expect = np.flatnonzero(np.isin(buckets, np.flatnonzero((spread == j).any(axis=1))))
        np.testing.assert_array_equal(idx, expect)
    assert sum(len(i) for i in per_model) == d * len(X)
    # the sub-datasets a run trains on (SubsetPlan) are the ones the certificate assumes
    plan = selection.SubsetPlan(selection.FINITE_AGGREGATION, np.arange(len(X)),
                                part_of=buckets, d=d, k=k)
    for j in range(k * d):
        np.testing.assert_array_equal(plan.drawn(j, seed=0), per_model[j])


# ---------------------------------------------------------------------------------------------
# the top-sum primitive
# ---------------------------------------------------------------------------------------------


def topsum_reference(w: np.ndarray, g: int) -> int:
    if g < 0:
        return -1
    s = np.cumsum(np.sort(w)[::-1])
    return int(np.sum(s <= g))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=30), st.integers(-3, 120))
def test_topsum_radius_matches_sorting(w, g):
    w = np.array(w)
    got = topsum_radius(w[:, None], np.array([g]))[0]
    assert got == topsum_reference(w, g)
    # monotone: a larger gap never lowers it, larger weights never raise it
    assert topsum_radius(w[:, None], np.array([g + 1]))[0] >= got
    assert topsum_radius((w + 1)[:, None], np.array([g]))[0] <= got


def test_topsum_radius_many_columns_and_large_weights():
    rng = np.random.default_rng(1)
    for vmax in (2, 8, 9, 40):
        w = rng.integers(0, vmax + 1, size=(57, 300))
        g = rng.integers(-2, 57 * vmax, size=300)
        got = topsum_radius(w, g, vmax)
        assert got.tolist() == [topsum_reference(w[:, i], int(g[i])) for i in range(300)]


# ---------------------------------------------------------------------------------------------
# d = 1 is DPA
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("unit", ["operation", "dpa"])
def test_d1_equals_dpa_on_thousands_of_vote_matrices(model, unit):
    rng = np.random.default_rng(hash((model, unit)) % 2**32)
    n_cases = 0
    for _ in range(150):
        T = int(rng.integers(1, 40))
        C = int(rng.integers(2, 6))
        probs = rng.dirichlet(np.full(C, rng.choice([0.3, 1.0, 5.0])))
        pred = rng.choice(C, size=(T, 20), p=probs)          # many ties at small T
        fa = fa_certify(pred, d=1, n_classes=C, model=model, unit=unit)
        dpa = dpa_certify(counts_of(pred, C), model=model, unit=unit)
        np.testing.assert_array_equal(fa.prediction, dpa.prediction)
        np.testing.assert_array_equal(fa.radius, dpa.radius)
        np.testing.assert_array_equal(fa.buckets, dpa.slack // 2)
        n_cases += 20
    assert n_cases == 3000


def test_counting_path_for_d1_equals_the_bucket_path():
    rng = np.random.default_rng(8)
    for C in (2, 3, 10):
        pred = rng.choice(np.arange(-1, C), size=(int(rng.integers(1, 60)), 200))
        counts = counts_of(pred, C)
        top = np.argmax(counts, axis=1)
        V = fa_bucket_votes(pred, fa_spread(pred.shape[0], 1), C)
        slow = class_bucket_radii(V, counts, top, 1).min(axis=1)
        np.testing.assert_array_equal(fa_certify(pred, d=1, n_classes=C).buckets, slow)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 4).flatmap(lambda C: st.tuples(
    st.just(C), st.lists(st.integers(0, C - 1), min_size=1, max_size=25))))
def test_d1_equals_dpa_hypothesis(case):
    C, votes = case
    pred = np.array(votes)[:, None]
    fa = fa_certify(pred, d=1, n_classes=C, model="P3")
    dpa = dpa_certify(counts_of(pred, C), model="P3")
    assert fa.prediction[0] == dpa.prediction[0] and fa.radius[0] == dpa.radius[0]


# ---------------------------------------------------------------------------------------------
# exactness against brute force
# ---------------------------------------------------------------------------------------------


def flips(votes: np.ndarray, affected: tuple[int, ...], C: int, y: int) -> bool:
    """Literally try every vote (each class or abstain) of every affected classifier."""
    if not affected:
        return False
    keep = np.delete(votes, list(affected))
    base = np.array([(keep == c).sum() for c in range(C)])
    choices = np.array(list(itertools.product(range(-1, C), repeat=len(affected))))
    added = (choices[:, :, None] == np.arange(C)).sum(axis=1)
    return bool((np.argmax(base + added, axis=1) != y).any())


def min_buckets_to_flip(votes: np.ndarray, spread: np.ndarray, C: int, y: int) -> int:
    nb = spread.shape[0]
    for s in range(1, nb + 1):
        for B in itertools.combinations(range(nb), s):
            if flips(votes, tuple(sorted(set(spread[list(B)].ravel().tolist()))), C, y):
                return s
    raise AssertionError("changing every bucket always changes the vote")


FA_SHAPES = [(2, 2, 2), (2, 2, 3), (3, 2, 2), (2, 3, 2), (3, 1, 3), (5, 1, 2), (6, 1, 2),
             (4, 1, 3)]


@pytest.mark.parametrize("k,d,C", FA_SHAPES)
def test_fa_certificate_holds_on_every_vote_vector(k, d, C):
    """Every vote vector of the k*d classifiers (with abstentions when C = 2): the certificate
    is below the fewest changed buckets that can change the vote, and equal to it for d = 1."""
    T = k * d
    spread = fa_spread(k, d)
    labels = range(-1, C) if C == 2 else range(C)
    vectors = np.array(list(itertools.product(labels, repeat=T)))
    cert = fa_certify(vectors.T, d=d, n_classes=C, unit="dpa")
    tight = 0
    for i, votes in enumerate(vectors):
        if cert.prediction[i] == -1:  # no classifier votes: the certificate abstains
            assert (votes == -1).all() and cert.buckets[i] == cert.radius[i] == -1
            continue
        m = min_buckets_to_flip(votes, spread, C, int(cert.prediction[i]))
        assert cert.buckets[i] <= m - 1, (votes.tolist(), cert.buckets[i], m)
        tight += cert.buckets[i] == m - 1
        if d == 1:
            assert cert.buckets[i] == m - 1
    assert tight >= 0.5 * len(vectors)   # it is not vacuous
    print(f"k={k} d={d} C={C}: {len(vectors)} vote vectors, {tight} tight")


def fa_against_brute_force(rng: np.random.Generator, cases: int) -> None:
    """``cases`` random vote vectors per shape with d > 1: the certificate never exceeds the
    fewest changed buckets found by enumeration (``tests/soak.py`` reruns it reseeded)."""
    for k, d, C in [(3, 3, 3), (4, 2, 3), (2, 4, 2)]:
        spread = fa_spread(k, d)
        T = k * d
        for _ in range(cases):
            probs = rng.dirichlet(np.full(C, 0.4))
            votes = rng.choice(C, size=T, p=probs)
            cert = fa_certify(votes[:, None], d=d, n_classes=C, unit="dpa")
            m = min_buckets_to_flip(votes, spread, C, int(cert.prediction[0]))
            assert cert.buckets[0] <= m - 1


def test_fa_with_d_above_one_is_sound_on_random_larger_cases():
    fa_against_brute_force(np.random.default_rng(5), 25)


def sample_level_attacks(model: str, r: int, sample_bucket: list[int], nb: int):
    """Sets of changed buckets of every attack of ``model`` (P1-P6, or ``"insert_delete"``: DPA's
    unit) with exactly ``r`` operations on a
    training set whose sample ``i`` lies in bucket ``sample_bucket[i]``: an insertion lands in
    any bucket, a deletion empties its sample's place, a modification moves a sample to any
    bucket (its old and new bucket change, also when they are the same)."""
    n = len(sample_bucket)
    ops = []
    if model in ("P1", "P4", "P6", "insert_delete"):
        ops += [frozenset([b]) for b in range(nb)]
    if model in ("P2", "P5", "P6", "insert_delete"):
        ops += [frozenset([sample_bucket[i]]) for i in range(n)]
    if model in ("P3", "P4", "P5", "P6"):
        ops += [frozenset([sample_bucket[i], b]) for i in range(n) for b in range(nb)]
    ops = sorted(set(ops), key=sorted)
    return {frozenset().union(*combo) for combo in itertools.combinations_with_replacement(ops, r)}


@pytest.mark.parametrize("k,d,C", [(4, 1, 3), (5, 1, 2), (2, 2, 3), (3, 2, 2)])
def test_units_against_sample_level_attacks(k, d, C):
    """Radii in both units hold against every attack of every model on a training set with
    samples in every bucket; for d = 1 one more operation can always change the vote."""
    rng = np.random.default_rng(k * 10 + d)
    nb = k * d
    sample_bucket = list(range(nb)) + [0, nb - 1]
    spread = fa_spread(k, d)
    n_checked = 0
    for _ in range(12):
        votes = rng.choice(C, size=nb, p=rng.dirichlet(np.full(C, 0.5)))
        for model in MODELS:
            certs = {u: fa_certify(votes[:, None], d=d, n_classes=C, model=model, unit=u)
                     for u in ("operation", "dpa")}
            y = int(certs["dpa"].prediction[0])
            flip = functools.lru_cache(maxsize=None)(
                lambda B, votes=votes, y=y: flips(votes, tuple(sorted(set(
                    spread[sorted(B)].ravel().tolist()))), C, y))
            R = int(certs["operation"].radius[0])
            for r in range(0, R + 2):
                hit = any(flip(B) for B in sample_level_attacks(model, r, sample_bucket, nb))
                n_checked += 1
                if r <= R:
                    assert not hit, (votes.tolist(), model, r, R)
                elif d == 1:
                    assert hit, (votes.tolist(), model, r, R)   # tight
            # DPA's unit: a modification is a deletion plus an insertion
            Rd = int(certs["dpa"].radius[0])
            dpa_model = model if model in ("P1", "P2") else "insert_delete"
            for r in range(0, Rd + 2):
                hit = any(flip(B) for B in sample_level_attacks(dpa_model, r, sample_bucket, nb))
                if r <= Rd:
                    assert not hit
                elif d == 1:
                    assert hit
    assert n_checked > 100


# ---------------------------------------------------------------------------------------------
# results and bad input
# ---------------------------------------------------------------------------------------------


def test_units_conversion():
    b = np.array([0, 1, 2, 7])
    assert bucket_radius(b, "P1", "operation").tolist() == [0, 1, 2, 7]
    assert bucket_radius(b, "P6", "operation").tolist() == [0, 0, 1, 3]
    assert bucket_radius(b, "P6", "dpa").tolist() == [0, 1, 2, 7]


def test_records_summary_and_abstaining_votes():
    pred = np.array([[0, 1], [0, -1], [0, 1], [1, -1]])           # T = 4, d = 2
    cert = fa_certify(pred, d=2, n_classes=2, model="P1")
    assert isinstance(cert, FACertificate) and len(cert) == 2
    assert cert.counts.tolist() == [[3, 1], [0, 2]]
    assert cert.prediction.tolist() == [0, 1]
    rows = cert.records()
    assert rows[0]["k"] == 2 and rows[0]["d"] == 2 and rows[0]["scheme"] == "finite_aggregation"
    assert rows[1]["buckets"] == cert.buckets[1] and "operation" in rows[0]["radius_unit"]
    assert cert.to_rows() == rows
    s = cert.summary(labels=[0, 0])
    assert s["n_certified"] == 2 and s["accuracy"] == 0.5
    assert ABSTAIN not in cert.prediction


def test_predicted_labels_of_a_certificate_with_classes():
    """``Ensemble.certify`` of a finite_aggregation run gives an ``FACertificate`` carrying
    ``classes``, and its docstring (and docs/predict.md) says ``cert.predicted_labels()``
    gives class ids, as for every other certificate: FA's had no such method (an
    AttributeError). Now the class ids, ``abstain`` where no classifier voted."""
    import dataclasses

    pred = np.array([[1, -1, 0], [1, -1, 0], [0, -1, 0], [1, -1, 1]])
    cert = dataclasses.replace(fa_certify(pred, d=2, n_classes=2, model="P1"),
                               classes=np.array([3, 8]))
    assert cert.prediction.tolist() == [1, ABSTAIN, 0]
    assert cert.predicted_labels().tolist() == [8, None, 3]
    assert cert.predicted_labels(abstain=-1).tolist() == [8, -1, 3]
    with pytest.raises(ValueError, match="no classes"):  # bare predictions: indices only
        fa_certify(pred, d=2, n_classes=2).predicted_labels()


@pytest.mark.parametrize("d", [1, 2])
def test_a_point_no_classifier_votes_on_abstains(d):
    """Every classifier abstains on test point 1: no majority, so no certified class (not
    class 0 with radius 0), in either path (d = 1 counts, d > 1 buckets)."""
    pred = np.array([[1, -1], [1, -1], [0, -1], [1, -1]])
    cert = fa_certify(pred, d=d, n_classes=3, model="P1")
    assert cert.prediction.tolist()[1] == ABSTAIN and cert.prediction[0] == 1
    assert cert.radius[1] == -1 and cert.buckets[1] == -1
    assert cert.summary()["n_certified"] == 1


@pytest.mark.parametrize("kwargs,match", [
    (dict(d=3), r"^The 'd' parameter of fa_certify must be a divisor of the number of "
                r"classifiers T = 4\. Got 3 instead\.$"),
    (dict(d=0), r"'d' parameter of fa_certify must be an int in the range \[1, 4\]"),
    (dict(n_classes=1), r"'n_classes' parameter of fa_certify must be an int >= 2"),
    (dict(pred=[[0, 2]]), r"'predictions' parameter of fa_certify .*\[-1, 1\]\. Got 2"),
    (dict(pred=[0, 1]), r"'predictions' parameter of fa_certify must be a 2-D"),
    (dict(model="P0"), r"'model' parameter of fa_certify"),
    (dict(unit="ops"), r"'unit' parameter of fa_certify"),
])
def test_fa_bad_input(kwargs, match):
    kwargs = {"d": 2, "n_classes": 2, **kwargs}
    pred = kwargs.pop("pred", [[0, 1]] * 4)
    with pytest.raises(ValueError, match=match):
        fa_certify(pred, **kwargs)


def test_fa_certify_refuses_a_class_count_beyond_memory_before_allocating(monkeypatch):
    """``n_classes`` had only a lower bound: 10^12 was an out-of-memory traceback, and 10^8
    ran one pass over the predictions per class (minutes, gigabytes) for 3 test points."""
    import time

    from poisoncert import resources

    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")
    pred = np.zeros((4, 3), dtype=np.int64)
    with pytest.raises(resources.ResourceError,
                       match=r"^The 'n_classes' parameter of fa_certify must be an int in the "
                             r"range \[2, \d+\] for the certificate to fit in memory .*"
                             r"Got 1000000000000 instead\.$"):
        fa_certify(pred, d=1, n_classes=10**12)
    t = time.perf_counter()
    cert = fa_certify(pred, d=1, n_classes=200_000)  # fits: counted in one pass
    assert time.perf_counter() - t < 5
    assert cert.prediction.tolist() == [0, 0, 0] and cert.counts.shape == (3, 200_000)
