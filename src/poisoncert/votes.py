"""Votes of an ensemble from its prediction matrix (numpy only).

A prediction matrix is an int array ``(T, n_test)``: base classifier ``t``'s class index for
each test point, ``-1`` where it abstains (an empty sub-dataset). Its votes are an int64 array
``(n_test, n_classes)`` counting, per test point, the base classifiers that chose each class;
abstaining ones vote for no class, so a row sums to at most ``T``.
"""

from __future__ import annotations

import numpy as np

from poisoncert._validation import check_int, check_int_array, number_array, param_error

__all__ = ["ABSTAIN", "VOTE_BLOCK", "majority_vote", "votes_from_predictions"]

#: A base classifier's prediction when it abstains, and the majority vote of no votes.
ABSTAIN = -1


def check_counts_fit(rows: int, n_classes: int, where: str, *, low: int = 1,
                     copies: int = 3, extra: int = 0, subject: str = "the counts") -> None:
    """Refuse (``resources.ResourceError``, naming ``n_classes`` and the largest that fits
    for ``subject`` to fit) an ``n_classes`` whose int64 counts of ``rows`` rows (``copies``
    of them at once, plus ``extra`` bytes a class) would not fit in memory: a class count of
    10^12 was a raw numpy out-of-memory traceback (or minutes of work), not a parameter
    error."""
    from poisoncert import resources

    if resources.small_need((copies * 8 * rows + extra) * n_classes):  # no reading of /proc
        return

    resources.check_memory(
        lambda v: [resources.Term("class counts", (copies * 8 * rows + extra) * v["n_classes"],
                                  ("n_classes",))],
        {"n_classes": n_classes}, where=where, lows={"n_classes": low}, subject=subject)


#: Predictions ``votes_from_predictions`` counts at a time (whole test points): its
#: temporaries (validity mask, column and flat indices) take about 35 bytes a prediction, so
#: the whole (T, n_test) matrix at once took 0.9 GB beside 80 MB of int16 predictions
#: (T = 200, 200,000 test points, at every certify's verification); a block about 35 MB.
VOTE_BLOCK = 2**20


def votes_from_predictions(predictions, n_classes: int) -> np.ndarray:
    """Vote counts ``(n_test, n_classes)`` (int64) of a ``(T, n_test)`` prediction matrix;
    ``-1`` (abstain) is not counted."""
    predictions = np.asarray(predictions)
    n_classes = check_int(n_classes, "n_classes", "votes_from_predictions", low=1)
    if predictions.ndim != 2:
        raise param_error("predictions", "votes_from_predictions", "an array (T, n_test)",
                          f"an array of shape {predictions.shape}")
    if predictions.size and (predictions.dtype.kind not in "iub"
                             or predictions.min() < -1 or predictions.max() >= n_classes):
        # a class id the counts have no column for would be dropped: a vote lost silently
        lo, hi = ((predictions.min(), predictions.max()) if predictions.dtype.kind in "iubf"
                  else ("?", "?"))
        raise param_error("predictions", "votes_from_predictions",
                          f"integer class indices in [0, {n_classes - 1}] or -1 (abstain)",
                          f"{predictions.dtype} values from {lo} to {hi}")
    T, n_test = predictions.shape
    check_counts_fit(n_test, n_classes, "votes_from_predictions")
    out = np.empty((n_test, n_classes), dtype=np.int64)
    step = max(1, VOTE_BLOCK // max(T, 1))  # test points a block: its temporaries bounded
    for a in range(0, n_test, step):
        part = predictions[:, a:a + step]
        m = part.shape[1]
        valid = part >= 0
        cols = np.broadcast_to(np.arange(m, dtype=np.int64), part.shape)[valid]
        flat = cols * n_classes + part[valid]
        out[a:a + m] = np.bincount(flat, minlength=m * n_classes).reshape(m, n_classes)
    return out


def majority_vote(votes) -> np.ndarray:
    """The class with the most votes per test point, ties to the smaller class index;
    ``ABSTAIN`` where no base classifier voted."""
    allowed = "a 2-D array (n_test, n_classes) of non-negative integer vote counts"
    arr = number_array(votes, "votes", "majority_vote", allowed)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise param_error("votes", "majority_vote", allowed,
                          votes if arr.ndim == 0 else f"an array of shape {arr.shape}")
    votes = check_int_array(arr, "votes", "majority_vote", low=0)
    return np.where(votes.sum(axis=1) > 0, votes.argmax(axis=1), ABSTAIN).astype(np.int64)
