"""The paper's two-phase classifier (Algorithm 3, case 3: some classes known clean).

Case 3: the training samples of the *clean classes* form the known-clean part ``D^c``; those
of the *poisoned classes* form ``D^p`` (``n = |D^p|`` enters the bounds). Each base classifier
is ``phase2 o phase1``:

- **phase 1** (one per sub-dataset): trained on the sub-dataset of ``D^p`` plus ``D^c`` with
  the labels ``phase1_labels``: every clean class becomes one virtual class ``0``, poisoned
  class ``j`` (in ``poisoned`` order) becomes ``j + 1``; minibatches are class-balanced, so
  the virtual class and each poisoned class are drawn equally often;
- **phase 2** (ONE model for the whole run): trained on ``D^c`` alone, over the clean classes;
  it resolves the virtual class. It depends only on ``D^c`` and a fixed seed, so the base
  classifier still depends only on its sub-dataset and ``D^c``, and the certificates of
  ``poisoncert.certify`` hold unchanged (votes over all classes, ``n = |D^p|``).

``combine`` maps the two phases' outputs to votes over the original classes.
``phase1_accuracy`` recovers phase 1's accuracy from the combined predictions and phase 2's
outputs: phase 1 says "clean" iff the combined prediction is a clean class, wherever phase 2
gave one; where phase 2 abstained on a clean-class test point a right answer of phase 1
does not show in the combined prediction, and that point is left out of phase 1's accuracy
(whatever phase 1 said there: phase 2 alone decides which points are left out).
"""

from __future__ import annotations

import numpy as np

from poisoncert._validation import check_int_array, param_error

__all__ = [
    "CLEAN",
    "PHASE2_SEED_KEY",
    "clean_classes",
    "combine",
    "phase1_accuracy",
    "phase1_balanced_accuracy",
    "phase1_labels",
    "phase2_labels",
    "phase2_seed",
]

#: Phase 1's virtual class "one of the clean classes".
CLEAN = 0
#: Spawn key of the phase-2 seed: ``SeedSequence(root_seed, spawn_key=(2**32,))``, outside the
#: range of base-classifier seeds ``selection.model_seed(root_seed, i)``.
PHASE2_SEED_KEY = 2**32


def _check(poisoned, n_classes: int, where: str) -> np.ndarray:
    allowed = (f"a non-empty list of distinct labels in [0, {n_classes - 1}] leaving at least "
               "one clean class")
    arr = np.asarray(poisoned)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):  # 8.7 was read as 8
        raise param_error("poisoned", where, allowed, arr.tolist())
    poisoned = arr.astype(np.int64).reshape(-1)
    if (poisoned.size == 0 or poisoned.size >= n_classes or len(set(poisoned.tolist()))
            != poisoned.size or poisoned.min() < 0 or poisoned.max() >= n_classes):
        raise param_error("poisoned", where, allowed, poisoned.tolist())
    return poisoned


def _labels(y, name: str, n_classes: int, where: str) -> np.ndarray:
    """Class labels in ``[0, n_classes - 1]`` (a -1 was read as the last class)."""
    return check_int_array(y, name, where, low=0, high=n_classes - 1)


def clean_classes(poisoned, n_classes: int) -> np.ndarray:
    """The labels not in ``poisoned``, ascending."""
    poisoned = _check(poisoned, n_classes, "clean_classes")
    return np.setdiff1d(np.arange(n_classes), poisoned)


def phase1_labels(y, poisoned, n_classes: int) -> np.ndarray:
    """Phase-1 labels: ``CLEAN`` (0) for a clean class, ``j + 1`` for ``poisoned[j]``."""
    poisoned = _check(poisoned, n_classes, "phase1_labels")
    table = np.zeros(n_classes, dtype=np.int64)
    table[poisoned] = np.arange(1, poisoned.size + 1)
    return table[_labels(y, "y", n_classes, "phase1_labels")]


def phase2_labels(y, poisoned, n_classes: int) -> np.ndarray:
    """Phase-2 labels of clean-class samples: the position of ``y`` among the clean classes
    (``-1`` for a poisoned-class sample, which phase 2 never sees)."""
    clean = clean_classes(poisoned, n_classes)
    table = np.full(n_classes, -1, dtype=np.int64)
    table[clean] = np.arange(clean.size)
    return table[_labels(y, "y", n_classes, "phase2_labels")]


def combine(pred1, pred2, poisoned, n_classes: int) -> np.ndarray:
    """Base-classifier predictions over the original classes.

    ``pred1`` ``(T, n_test)``: phase-1 outputs (``CLEAN``, ``1..k``, or ``-1`` abstain);
    ``pred2`` ``(n_test,)``: phase 2's outputs (positions among the clean classes, or ``-1``
    where it abstains, as inference does on non-finite outputs). Where phase 1 says ``CLEAN``
    the vote goes to phase 2's class (an abstention where phase 2 abstains); where it says
    ``j + 1`` to ``poisoned[j]``; an abstaining phase 1 abstains. int16, like the engine's
    predictions. Values outside these ranges are refused (never read as another class).
    """
    poisoned = _check(poisoned, n_classes, "combine")
    clean = clean_classes(poisoned, n_classes)
    pred1 = _check_outputs(pred1, "pred1", poisoned.size)
    pred2 = _check_outputs(pred2, "pred2", clean.size - 1)
    if pred2.shape != pred1.shape[-1:]:
        raise param_error("pred2", "combine", f"an array of shape {pred1.shape[-1:]}",
                          f"shape {pred2.shape}")
    from_phase2 = np.broadcast_to(np.concatenate([clean, [-1]])[pred2], pred1.shape)
    from_phase1 = np.concatenate([[-1], poisoned])[np.clip(pred1, 0, None)]
    out = np.where(pred1 == CLEAN, from_phase2, from_phase1)
    out = np.where(pred1 < 0, -1, out)
    return out.astype(np.int16)


def _check_outputs(pred, name: str, high: int) -> np.ndarray:
    """``pred`` as int64, every value in ``[-1, high]`` (``-1``: abstain)."""
    arr = np.asarray(pred)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise param_error(name, "combine", f"integers in the range [-1, {high}] (-1: abstain)",
                          f"an array of dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < -1) | (arr > high)
    if bad.any():
        raise param_error(name, "combine", f"integers in the range [-1, {high}] (-1: abstain)",
                          int(arr[bad].ravel()[0]))
    return arr


def phase1_accuracy(predictions, labels, poisoned, n_classes: int, phase2=None) -> np.ndarray:
    """Phase 1's test accuracy per base classifier (clean vs each poisoned class), from the
    combined ``predictions``: float64 ``(T,)``.

    Phase 1 is right on a poisoned-class point iff the combined prediction is that class; on a
    clean-class point iff it says ``CLEAN``, i.e. iff the combined prediction is a clean class
    (phase 2's). An abstaining phase 1 (``-1``) is wrong. Where phase 2 abstains (``-1``, see
    ``combine``) phase 1's ``CLEAN`` is an abstention in the combined prediction, as its own
    abstention is: there a right answer cannot be told from an abstention (a wrong poisoned
    class still shows). Given ``phase2`` (phase 2's outputs ``(n_test,)``, as ``combine``
    takes them), those clean-class points are left out of the accuracy, numerator and
    denominator alike, whatever phase 1 said there (which points are left out depends on
    phase 2 alone, so no answer of phase 1 chooses them): it is phase 1's accuracy on every
    other test point (phase 2's accuracy counts its abstentions as its own errors), NaN where no
    point is left. Without ``phase2`` every test point counts and those points count as
    phase 1's errors: a lower bound, phase 2's abstentions charged to phase 1 (a phase 2
    whose outputs were all non-finite gave phase 1 an accuracy of at most the poisoned
    classes' share of the test set, however right it was).
    """
    right, seen, _ = _phase1_right(predictions, labels, poisoned, n_classes, phase2,
                                   "phase1_accuracy")
    if not seen.any():
        return np.full(len(right), np.nan)
    return right[:, seen].mean(axis=1)


def phase1_balanced_accuracy(predictions, labels, poisoned, n_classes: int,
                             phase2=None) -> np.ndarray:
    """Phase 1's balanced test accuracy per base classifier: float64 ``(T,)``, the mean over
    phase 1's own classes (``CLEAN`` and each poisoned class, ``phase1_labels``) of its recall
    on that class's test points, counted as ``phase1_accuracy`` counts them (the same points
    left out with ``phase2``). Plain accuracy weighs each class by its test points: with 9 of
    10 classes clean, it is mostly phase 1's recall on "clean". A class with no counted test
    point is left out of the mean; NaN where none has one."""
    right, seen, cls = _phase1_right(predictions, labels, poisoned, n_classes, phase2,
                                     "phase1_balanced_accuracy")
    recalls = [right[:, seen & (cls == c)].mean(axis=1) for c in np.unique(cls[seen])]
    if not recalls:
        return np.full(len(right), np.nan)
    return np.mean(recalls, axis=0)


def _phase1_right(predictions, labels, poisoned, n_classes: int, phase2, where: str):
    """Whether phase 1 was right on each test point ``(T, n_test)``, which points count
    (``(n_test,)``: all without ``phase2``) and each point's phase-1 class."""
    poisoned = _check(poisoned, n_classes, where)
    predictions = np.asarray(predictions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    is_poisoned = np.isin(np.arange(n_classes), poisoned)
    pred_clean = (predictions >= 0) & ~is_poisoned[np.clip(predictions, 0, None)]
    right = np.where(is_poisoned[labels][None, :], predictions == labels[None, :], pred_clean)
    cls = np.zeros(n_classes, dtype=np.int64)  # phase1_labels' table, on labels as given
    cls[poisoned] = np.arange(1, poisoned.size + 1)
    cls = cls[labels]
    if phase2 is None:
        return right, np.ones(labels.shape, dtype=bool), cls
    n_clean = n_classes - poisoned.size
    pred2 = np.asarray(phase2)
    if pred2.shape != labels.shape:
        raise param_error("phase2", where, f"an array of shape {labels.shape} "
                          "(phase 2's output on each test point)", f"shape {pred2.shape}")
    if pred2.size and not np.issubdtype(pred2.dtype, np.integer):
        raise param_error("phase2", where, f"integers in the range [-1, "
                          f"{n_clean - 1}] (-1: abstain)", f"an array of dtype {pred2.dtype}")
    if pred2.size and (pred2.min() < -1 or pred2.max() > n_clean - 1):
        bad = pred2.min() if pred2.min() < -1 else pred2.max()
        raise param_error("phase2", where, f"integers in the range [-1, "
                          f"{n_clean - 1}] (-1: abstain)", int(bad))
    return right, is_poisoned[labels] | (pred2 >= 0), cls


def phase2_seed(root_seed: int) -> int:
    """The seed of the run's one phase-2 model (independent of every base classifier's)."""
    child = np.random.SeedSequence(int(root_seed), spawn_key=(PHASE2_SEED_KEY,))
    return int(child.generate_state(1, np.uint64)[0])
