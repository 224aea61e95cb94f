"""Tests of poisoncert.knn: exact search, and kNN / rNN certificates against exhaustive attacks.

The kNN brute force works on the list of training labels ordered by distance to the test
point: an insertion puts any label at any place of the list, a deletion removes any entry, a
modification does both in one operation (a superset of what an attacker can do with real
features, where every place is reachable except between samples at equal distance).
"""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

from poisoncert import knn
from poisoncert.bounds import MODELS
from poisoncert.certify import ABSTAIN
from poisoncert.knn import (
    NNCertificate,
    knn_certify,
    knn_votes,
    nearest_labels,
    rnn_certify,
    rnn_votes,
)

# ---------------------------------------------------------------------------------------------
# search
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 7, 1 << 22])
def test_nearest_labels_is_exact_with_index_tie_break(monkeypatch, block):
    monkeypatch.setattr(knn, "_BLOCK", block)
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 3, size=(60, 4)).astype(np.uint8)    # many equal distances
    y_train = rng.integers(0, 4, size=60)
    x_test = rng.integers(0, 3, size=(25, 4)).astype(np.uint8)
    for depth in (1, 5, 17, 60):
        labels, d2 = nearest_labels(x_train, y_train, x_test, depth)
        full = ((x_test[:, None, :].astype(int) - x_train[None, :, :]) ** 2).sum(-1)
        for t in range(25):
            order = np.lexsort((np.arange(60), full[t]))[:depth]
            np.testing.assert_array_equal(labels[t], y_train[order])
            np.testing.assert_array_equal(d2[t], full[t][order])


def test_a_pairs_distance_does_not_depend_on_the_other_rows():
    """Float features: inserting or deleting training rows leaves every other pair's squared
    distance unchanged, bit for bit, so one operation cannot reorder two other neighbours (the
    certificates' assumption). A matrix product rounds each entry in an order that depends on
    the blocks' shapes: the former form changed the last bits in about half of these cases."""
    rng = np.random.default_rng(7)
    changed = 0
    for _ in range(60):
        F = int(rng.integers(8, 200))
        x = rng.standard_normal((int(rng.integers(1, 5)), F))
        X = x[0] + rng.standard_normal((int(rng.integers(2, 40)), F)) * rng.choice([0.1, 10])
        extra = x[0] + rng.standard_normal((int(rng.integers(1, 20)), F)) * 1e-3
        base = knn.squared_distances(x, X)
        more = knn.squared_distances(x, np.vstack([X, extra]))
        fewer = knn.squared_distances(x, X[1:])
        alone = np.stack([knn.squared_distances(x[i:i + 1], X[j:j + 1])[0, 0]
                          for i in range(len(x)) for j in range(len(X))]).reshape(base.shape)
        changed += not (np.array_equal(base, more[:, :len(X)])
                        and np.array_equal(base[:, 1:], fewer) and np.array_equal(base, alone))
        labels, d2 = nearest_labels(np.vstack([X, extra]), rng.integers(0, 3, len(X) + len(extra)),
                                    x, 3)
        assert np.array_equal(d2, np.sort(more, axis=1)[:, :3])
    assert changed == 0


def test_float_distances_sum_the_squared_differences_in_feature_order():
    """The float form is the plain sum, term by term in index order (Python's floats are the
    same IEEE doubles); integer features within 2^53 take the exact product form."""
    rng = np.random.default_rng(3)
    x, X = rng.standard_normal((3, 11)), rng.standard_normal((5, 11))
    d2 = knn.squared_distances(x, X)
    for i in range(3):
        for j in range(5):
            acc = 0.0
            for a, b in zip(x[i].tolist(), X[j].tolist(), strict=True):
                acc += (a - b) * (a - b)
            assert d2[i, j] == acc
    xi = rng.integers(-255, 256, (3, 784)).astype(np.float64)
    Xi = rng.integers(-255, 256, (5, 784)).astype(np.float64)
    assert knn.exact_products(xi, Xi) and not knn.exact_products(x, X)
    assert not knn.exact_products(xi * 2.0 ** 20, Xi)  # 4 F m^2 past 2^53
    exact = ((xi[:, None].astype(np.int64) - Xi[None].astype(np.int64)) ** 2).sum(-1)
    assert np.array_equal(knn.squared_distances(xi, Xi), exact)
    assert np.array_equal(knn.squared_distances(xi, Xi, exact=False), exact)


def test_votes_match_loops():
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, size=(200, 8, 8)).astype(np.float32) / 255  # pixels in [0,1]
    y_train = rng.integers(0, 3, size=200)
    x_test = rng.integers(0, 256, size=(30, 8, 8)).astype(np.float32) / 255
    # exact integer distances: pass the pixels as integers
    xi, si = np.rint(x_train * 255), np.rint(x_test * 255)
    counts = knn_votes(xi, y_train, si, 9, n_classes=4)
    ball = rnn_votes(xi, y_train, si, 1500.0, n_classes=4)
    full = ((si.reshape(30, 1, -1) - xi.reshape(1, 200, -1)) ** 2).sum(-1)
    for t in range(30):
        nn = np.lexsort((np.arange(200), full[t]))[:9]
        assert counts[t].tolist() == np.bincount(y_train[nn], minlength=4).tolist()
        inside = full[t] <= 1500.0**2
        assert ball[t].tolist() == np.bincount(y_train[inside], minlength=4).tolist()
    assert counts.shape == (30, 4) and counts.sum(1).tolist() == [9] * 30
    assert ball.sum() > 0


# ---------------------------------------------------------------------------------------------
# kNN certificates against brute force
# ---------------------------------------------------------------------------------------------


def knn_predict(labels: tuple, k: int) -> int:
    near = labels[:k]
    if not near:
        return ABSTAIN
    counts = collections.Counter(near)
    return max(sorted(counts), key=lambda c: counts[c])   # ties to the smaller label


def knn_moves(state: tuple, C: int, kinds: str):
    n = len(state)
    if "i" in kinds:
        for p in range(n + 1):
            for c in range(C):
                yield state[:p] + (c,) + state[p:]
    if "d" in kinds:
        for i in range(n):
            yield state[:i] + state[i + 1:]
    if "m" in kinds:
        for i in range(n):
            rest = state[:i] + state[i + 1:]
            for p in range(n):
                for c in range(C):
                    yield rest[:p] + (c,) + rest[p:]


KINDS = {"P1": "i", "P2": "d", "P3": "m", "P4": "im", "P5": "dm", "P6": "idm",
         "insert_delete": "id"}


def min_ops_to_change(labels: tuple, k: int, C: int, kinds: str, limit: int,
                      predict=knn_predict) -> int:
    """Breadth-first search over attacked label lists; ``limit + 1`` if none within limit."""
    knn_predict = predict
    y = knn_predict(labels, k)
    seen = {labels}
    frontier = [labels]
    for step in range(1, limit + 1):
        nxt = []
        for s in frontier:
            for t in knn_moves(s, C, kinds):
                if t in seen:
                    continue
                if knn_predict(t, k) != y:
                    return step
                seen.add(t)
                nxt.append(t)
        frontier = nxt
    return limit + 1


def knn_against_brute_force(C: int, rng: np.random.Generator, cases: int
                            ) -> collections.Counter:
    """``cases`` random label lists of ``C`` classes: every model's and unit's radius against
    the breadth-first attack search (``tests/soak.py`` reruns it with fresh seeds)."""
    n_cases = collections.Counter()
    for _ in range(cases):
        n = int(rng.integers(3, 10 if C == 2 else 7))
        k = int(rng.integers(1, n + 1))
        p = rng.dirichlet(np.full(C, 0.5))
        labels = tuple(int(v) for v in rng.choice(C, size=n, p=p))
        lab = np.array(labels)[None, :]
        for model in MODELS:
            for unit in ("operation", "dpa"):
                cert = knn_certify(lab, k=k, n_classes=C, model=model, unit=unit)
                kinds = KINDS[model] if unit == "operation" or model in ("P1", "P2") \
                    else KINDS["insert_delete"]
                R = int(cert.radius[0])
                m = min_ops_to_change(labels, k, C, kinds, R + 1)
                assert R <= m - 1, (labels, k, model, unit, R, m)
                if cert.exact[0]:
                    assert R == m - 1, (labels, k, model, unit, R, m)
                # only deletions can run past the list (P2, DPA's unit with n < 2k - 1)
                assert cert.exact[0] or (model == "P2" or unit == "dpa")
                if model == "P2" or (unit == "dpa" and model != "P1"):
                    n_cases[("deletions", bool(cert.exact[0]))] += 1
                assert cert.prediction[0] == knn_predict(labels, k)
    return n_cases


@pytest.mark.parametrize("C", [2, 3])
def test_knn_radius_is_exact_for_every_model_and_unit(C):
    n_cases = knn_against_brute_force(C, np.random.default_rng(C), 60 if C == 2 else 30)
    print(dict(n_cases))
    assert n_cases[("deletions", True)] > 50


def test_knn_radius_leaves_at_least_k_samples():
    """With ``n_train``, deleting models (P2, P5, P6) certify at most ``n_train - k``: more
    deletions leave fewer than ``k`` samples, where kNN has no prediction (``nearest_labels``
    refuses). P5 and P6 used to certify ``s // 2`` regardless (labels 0 0 0, k = 3: radius 1,
    and one deletion leaves two samples). Brute force over the whole training set, counting
    a set of fewer than ``k`` samples as a changed prediction."""
    def strict(labels, k):
        return knn_predict(labels, k) if len(labels) >= k else -2

    three = np.array([[0, 0, 0]])
    assert knn_certify(three, k=3, n_classes=2, model="P5").radius[0] == 1  # list only
    assert [int(knn_certify(three, k=3, n_classes=2, model=m, n_train=3).radius[0])
            for m in MODELS] == [1, 0, 1, 1, 0, 0]
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(2, 8))
        k = int(rng.integers(1, n + 1))
        labels = tuple(int(v) for v in rng.integers(0, 2, size=n))
        for model in MODELS:
            for unit in ("operation", "dpa"):
                R = int(knn_certify(np.array([labels]), k=k, n_classes=2, model=model,
                                    unit=unit, n_train=n).radius[0])
                kinds = KINDS[model] if unit == "operation" or model in ("P1", "P2") \
                    else KINDS["insert_delete"]
                m = min_ops_to_change(labels, k, 2, kinds, R + 1, predict=strict)
                assert R == m - 1, (labels, k, model, unit, R, m)  # the whole set: exact
                checked += 1
    assert checked == 60 * 12
    with pytest.raises(ValueError, match="'n_train' parameter of knn_certify"):
        knn_certify(np.array([[0, 0, 0, 1]]), k=3, n_classes=2, n_train=3)
    # the whole set as the list: every radius exact (a reviewer's case said exact: False)
    for model in MODELS:
        for unit in ("operation", "dpa"):
            c = knn_certify(np.array([[0, 0, 0, 1], [1, 0, 1, 1]]), k=3, n_classes=2,
                            model=model, unit=unit, n_train=4)
            assert c.exact.all(), (model, unit)


def test_knn_radius_from_a_prefix_of_the_set_holds_for_the_whole_set():
    """A neighbour list shorter than the training set (``depth < n_train``, as a run stores
    ``2k`` labels): every model's and unit's radius is at most the fewest operations that
    change the prediction of the whole set (breadth-first search over it, fewer than ``k``
    samples counting as a change), whatever the labels beyond the list."""
    def strict(labels, k):
        return knn_predict(labels, k) if len(labels) >= k else -2

    rng = np.random.default_rng(33)
    checked = short = 0
    for _ in range(40):
        n = int(rng.integers(3, 8))
        k = int(rng.integers(1, n))
        depth = int(rng.integers(k, n))  # below n: the list leaves samples out
        labels = tuple(int(v) for v in rng.integers(0, 2, size=n))
        for model in MODELS:
            for unit in ("operation", "dpa"):
                c = knn_certify(np.array([labels[:depth]]), k=k, n_classes=2, model=model,
                                unit=unit, n_train=n)
                R = int(c.radius[0])
                kinds = KINDS[model] if unit == "operation" or model in ("P1", "P2") \
                    else KINDS["insert_delete"]
                m = min_ops_to_change(labels, k, 2, kinds, R + 1, predict=strict)
                assert R <= m - 1, (labels, depth, k, model, unit, R, m)
                checked += 1
                short += not c.exact[0]
    assert checked == 40 * 12 and short > 0


def test_knn_deletions_need_a_deep_enough_list():
    # y = 0 by a wide margin, and the tail of the list is class 0 too: deleting is hopeless
    labels = np.array([[0, 0, 0, 1, 0, 0, 0, 0]])
    short = knn_certify(labels[:, :4], k=3, n_classes=2, model="P2")
    deep = knn_certify(labels, k=3, n_classes=2, model="P2")
    assert not short.exact[0] and short.radius[0] == 1           # checked up to 4 - 3 = 1
    assert not deep.exact[0] and deep.radius[0] == 5             # all 8 - 3 deletions checked
    assert deep.radius[0] <= min_ops_to_change(tuple(labels[0]), 3, 2, "d", 8) - 1
    # DPA's unit needs depth 2k - 1 at most: a = k insertions always win
    dpa = knn_certify(labels[:, :6], k=3, n_classes=2, unit="dpa")
    assert dpa.exact[0] and dpa.radius[0] == min_ops_to_change(tuple(labels[0]), 3, 2, "id",
                                                               6) - 1


def test_knn_mixed_insertions_and_deletions_can_beat_either_alone():
    """k = 5, labels 0 0 0 1 1 | 0 0 0: one insertion of a 1 plus one deletion of a 0 (DPA's
    cost of a modification) makes class 1 win, while two insertions or two deletions do not."""
    labels = (0, 0, 0, 1, 1, 0, 0, 0, 0, 0)
    lab = np.array([labels])
    dpa = knn_certify(lab, k=5, n_classes=2, unit="dpa")
    assert dpa.exact[0] and dpa.radius[0] == 1
    assert min_ops_to_change(labels, 5, 2, "id", 4) == 2
    assert knn_certify(lab, k=5, n_classes=2, model="P1").radius[0] == 2
    assert min_ops_to_change(labels, 5, 2, "i", 4) == 3
    assert knn_certify(lab, k=5, n_classes=2, model="P2").radius[0] >= 2
    assert min_ops_to_change(labels, 5, 2, "d", 4) > 2


def test_knn_modification_radius_is_half_the_slack_and_realisable_with_features():
    """P3-P6: s // 2. Relabelling s // 2 + 1 neighbours of class y changes the prediction of the
    real classifier (features untouched); relabelling s // 2 does not."""
    rng = np.random.default_rng(3)
    x_train = rng.integers(0, 50, size=(80, 2))
    y_train = rng.integers(0, 3, size=80)
    x_test = rng.integers(0, 50, size=(20, 2))
    k = 11
    labels, _ = nearest_labels(x_train, y_train, x_test, k)
    cert = knn_certify(labels, k=k, n_classes=3, model="P3")
    full = ((x_test[:, None, :] - x_train[None, :, :]) ** 2).sum(-1)
    for t in range(20):
        y, s = int(cert.prediction[t]), int(cert.slack[t])
        assert cert.radius[t] == s // 2
        nn = np.lexsort((np.arange(80), full[t]))[:k]
        mine = nn[y_train[nn] == y]
        others = [c for c in range(3) if c != y]
        counts = np.bincount(y_train[nn], minlength=3)
        # the rival the slack is about
        rival = min(others, key=lambda c: (counts[y] - counts[c] - (c < y), c))
        for r, changes in ((s // 2, False), (s // 2 + 1, True)):
            poisoned = y_train.copy()
            poisoned[mine[:r]] = rival
            pred = np.argmax(knn_votes(x_train, poisoned, x_test[t:t + 1], k, n_classes=3))
            assert (pred != y) == changes


# ---------------------------------------------------------------------------------------------
# rNN certificates against brute force
# ---------------------------------------------------------------------------------------------


def rnn_predict(inside: tuple) -> int:
    if sum(inside) == 0:
        return ABSTAIN
    return int(np.argmax(inside))


def rnn_moves(state, C, kinds):
    inside, outside = state
    for c in range(C):
        if "i" in kinds:
            yield (inside[:c] + (inside[c] + 1,) + inside[c + 1:], outside)
        if "d" in kinds and inside[c] > 0:
            yield (inside[:c] + (inside[c] - 1,) + inside[c + 1:], outside)
        if "m" in kinds:
            if outside > 0:                                   # an outside sample moves in
                yield (inside[:c] + (inside[c] + 1,) + inside[c + 1:], outside - 1)
            if inside[c] > 0:
                yield (inside[:c] + (inside[c] - 1,) + inside[c + 1:], outside + 1)
                for c2 in range(C):
                    if c2 != c:
                        s = list(inside)
                        s[c] -= 1
                        s[c2] += 1
                        yield (tuple(s), outside)


def rnn_min_ops(inside, outside, C, kinds, limit):
    start = (tuple(inside), outside)
    y = rnn_predict(start[0])
    seen, frontier = {start}, [start]
    for step in range(1, limit + 1):
        nxt = []
        for s in frontier:
            for t in rnn_moves(s, C, kinds):
                if t not in seen:
                    if rnn_predict(t[0]) != y:
                        return step
                    seen.add(t)
                    nxt.append(t)
        frontier = nxt
    return limit + 1


def test_rnn_ball_includes_its_boundary():
    """``rnn_votes`` counts the samples at distance exactly ``r`` (``d^2 <= r^2``): integer
    points on the circle of radius 5 (3-4-5 triangles), one just outside, one inside."""
    x_test = np.array([[0, 0]])
    x_train = np.array([[3, 4], [-4, 3], [5, 0], [4, 4], [1, 1]])
    y_train = np.array([0, 1, 1, 0, 2])
    assert rnn_votes(x_train, y_train, x_test, 5.0, n_classes=3).tolist() == [[1, 2, 1]]
    assert rnn_votes(x_train.astype(float) / 8, y_train, x_test, 5.0 / 8,  # exact binary
                     n_classes=3).tolist() == [[1, 2, 1]]                   # fractions


def test_rnn_radius_is_exact_for_every_model_and_unit():
    cases = 0
    for C in (2, 3):
        for inside in itertools.product(range(5), repeat=C):
            for outside in (0, 2):
                cnt = np.array([inside])
                for model in MODELS:
                    for unit in ("operation", "dpa"):
                        cert = rnn_certify(cnt, model=model, unit=unit)
                        if sum(inside) == 0:
                            assert cert.prediction[0] == ABSTAIN and cert.radius[0] == -1
                            continue
                        kinds = KINDS[model] if unit == "operation" or model in ("P1", "P2") \
                            else KINDS["insert_delete"]
                        R = int(cert.radius[0])
                        assert R == rnn_min_ops(inside, outside, C, kinds, R + 1) - 1, (
                            inside, outside, model, unit, R)
                        cases += 1
    assert cases > 1000


def test_rnn_empty_ball_abstains_and_records():
    cert = rnn_certify([[0, 0], [3, 1]], model="P1")
    assert isinstance(cert, NNCertificate)
    assert cert.prediction.tolist() == [ABSTAIN, 0] and cert.radius.tolist() == [-1, 2]
    rows = cert.records()
    assert rows[1]["scheme"] == "rnn" and rows[1]["slack"] == 2 and rows[1]["exact"] is True
    assert cert.summary(labels=[0, 0])["n_certified"] == 1


# ---------------------------------------------------------------------------------------------
# properties and bad input
# ---------------------------------------------------------------------------------------------


def test_knn_certify_is_the_same_in_any_block_size(monkeypatch):
    rng = np.random.default_rng(6)
    labels = rng.choice(4, size=(300, 30), p=[0.5, 0.3, 0.1, 0.1])
    whole = {m: knn_certify(labels, k=9, n_classes=4, model=m, unit="dpa") for m in MODELS}
    monkeypatch.setattr(knn, "_BLOCK", 100)
    for m in MODELS:
        part = knn_certify(labels, k=9, n_classes=4, model=m, unit="dpa")
        for f in ("prediction", "radius", "slack", "exact"):
            np.testing.assert_array_equal(getattr(part, f), getattr(whole[m], f))


def test_knn_radii_order_across_models():
    """More attacker powers never give a larger radius: P6 <= P4 <= P1, P6 <= P5 <= P2."""
    rng = np.random.default_rng(4)
    labels = rng.choice(3, size=(500, 40), p=[0.6, 0.25, 0.15])
    r = {m: knn_certify(labels, k=15, n_classes=3, model=m).radius for m in MODELS}
    assert (r["P6"] <= r["P4"]).all() and (r["P4"] <= r["P1"]).all()
    assert (r["P6"] <= r["P5"]).all() and (r["P5"] <= r["P2"]).all()
    d = knn_certify(labels, k=15, n_classes=3, unit="dpa").radius
    assert (d <= np.minimum(r["P1"], r["P2"])).all() and (d >= r["P6"]).all()


@pytest.mark.parametrize("call,match", [
    (lambda: knn_certify([[0, 1]], k=3, n_classes=2),
     r"'k' parameter of knn_certify must be an int in the range \[1, 2\]\. Got 3"),
    (lambda: knn_certify([[0, 2]], k=1, n_classes=2), r"'neighbor_labels' parameter"),
    (lambda: knn_certify([[0, 1]], k=1, n_classes=2, model="P9"), r"'model' parameter"),
    (lambda: rnn_certify([[1]]), r"'counts' parameter of rnn_certify"),
    (lambda: nearest_labels(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 3)), 1),
     r"'x_test' parameter of nearest_labels must be an array \(n_test, 2\)"),
    (lambda: nearest_labels(np.zeros((3, 2)), [0, 1], np.zeros((2, 2)), 1),
     r"'y_train' parameter of nearest_labels must be an int array of shape \(3,\)"),
    (lambda: nearest_labels(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 2)), 4),
     r"'depth' parameter of nearest_labels must be an int in the range \[1, 3\]\. Got 4"),
    (lambda: rnn_votes(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 2)), -1.0),
     r"'r' parameter of rnn_votes"),
    (lambda: knn_votes(np.zeros((3, 2)), [0, 1, 0], np.full((2, 2), np.nan), 1),
     r"'x_test' parameter of knn_votes must be finite features \(no NaN or infinity\)"),
    # knn_votes names its own k (it said 'depth' of nearest_labels); text, ragged rows and
    # complex numbers are one line (numpy's messages before)
    (lambda: knn_votes(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 2)), 4),
     r"^The 'k' parameter of knn_votes must be an int in the range \[1, 3\]\. Got 4"),
    (lambda: knn_votes([["a", "b"]], [0], [["a", "b"]], 1),
     r"^The 'x_train' parameter of knn_votes must be an array of numbers \(n, \.\.\.\)\. "
     r"Got 'an array of <U1' instead"),
    (lambda: nearest_labels([[1, 2], [1]], [0, 1], [[1, 2]], 1),
     r"^The 'x_train' parameter of nearest_labels must be an array of numbers .* Got "
     r"'ragged rows'"),
    (lambda: rnn_votes(np.zeros((3, 2)), [0, 1, 0], np.zeros((2, 2)) * 1j, 1.0),
     r"^The 'x_test' parameter of rnn_votes must be an array of numbers .* complex128"),
    (lambda: rnn_votes(np.array([[0, np.inf]] * 3), [0, 1, 0], np.zeros((2, 2)), 1.0),
     r"'x_train' parameter of rnn_votes must be finite features"),
])
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", ["votes_from_predictions", "knn_votes", "rnn_votes",
                                  "knn_certify"])
def test_a_class_count_beyond_memory_is_a_parameter_error(name, monkeypatch):
    """``n_classes`` of 10^12 was numpy's out-of-memory traceback (or minutes of work): it is
    the one-line refusal naming the largest count that fits; a small one is unchanged."""
    from poisoncert import resources
    from poisoncert.knn import knn_certify, knn_votes, rnn_votes
    from poisoncert.votes import votes_from_predictions

    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.arange(20) % 3
    call = {"votes_from_predictions": lambda C: votes_from_predictions(np.zeros((3, 5), int), C),
            "knn_votes": lambda C: knn_votes(x, y, x[:5], 3, n_classes=C),
            "rnn_votes": lambda C: rnn_votes(x, y, x[:5], 2.0, n_classes=C),
            "knn_certify": lambda C: knn_certify(np.zeros((5, 4), int), k=3, n_classes=C)}[name]
    with pytest.raises(resources.ResourceError,
                       match=rf"^The 'n_classes' parameter of {name} must be an int in the "
                             r"range \[\d, \d+\] for the counts to fit in memory .*"
                             r"Got 1000000000000 instead\.$"):
        call(10**12)
    assert call(4) is not None


def test_a_search_makes_no_copy_of_the_training_features():
    """``nearest_labels`` / ``rnn_votes`` on float64 integer features (what a knn / rnn run
    and ``poisoncert predict`` give them) took three more arrays of the training set's size
    on every call (a float64 copy, ``rint`` and ``abs`` for the exactness check, and the
    squared features for the norms on every block): 1.1 GB beyond MNIST's 376 MB features for
    each block of new inputs. Now blocks of rows only (about 100 MB, whatever the training
    set); the labels are unchanged."""
    import tracemalloc

    from poisoncert.experiment.neighbors import pixel_features

    n = 40_000  # 251 MB of features
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8)
    x = u8.astype(np.float32) / np.float32(255)
    y = rng.integers(0, 10, n)
    tracemalloc.start()
    try:
        xt, scale = pixel_features(x)
        _, peak_features = tracemalloc.get_traced_memory()
        q = xt[:5] + 1
        tracemalloc.reset_peak()
        labels, _ = knn.nearest_labels(xt, y, q, 6)
        votes = knn.rnn_votes(xt, y, q, 3000.0, n_classes=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scale == 255 and np.array_equal(xt, u8.reshape(n, -1))
    # the features and a block of rows at a time, not two more arrays of their size
    assert peak_features < 1.5 * xt.nbytes, (peak_features, xt.nbytes)
    assert peak < xt.nbytes + 0.6 * xt.nbytes, (peak, xt.nbytes)
    for i in range(len(q)):
        d2 = ((xt - q[i]) ** 2).sum(axis=1)
        assert np.array_equal(labels[i], y[np.lexsort((np.arange(n), d2))[:6]])
        assert np.array_equal(votes[i], np.bincount(y[d2 <= 3000.0 ** 2], minlength=10))
