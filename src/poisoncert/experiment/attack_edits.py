"""The poisoned training sets of ``attack_run``: the ``Edits`` each attack makes on one run
within a budget of ``r`` operations (see ``poisoncert.experiment.attack``).
"""

from __future__ import annotations

import numpy as np

from poisoncert import selection
from poisoncert.experiment.edits import Edits

__all__ = ["EditBuilder", "patch_images"]


def patch_images(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` with a ``size`` x ``size`` square of 1.0 (white) in the bottom-right corner of
    every channel."""
    out = np.array(x, copy=True)
    out[..., -size:, -size:] = 1.0
    return out


class EditBuilder:
    """Makes the ``Edits`` of each attack on one run."""

    #: corner pixels changed to make copies that land in chosen buckets
    _CORNERS = ((0, 0), (0, -1), (-1, 0), (-1, -1))

    def __init__(self, data, cfg, plan=None, predictions=None, copies: int = 1):
        self.data, self.cfg, self.plan, self.P = data, cfg, plan, predictions
        self.copies = copies
        sel = cfg.selection
        self.buckets = sel.scheme in selection.BUCKET_SCHEMES
        if self.buckets:
            d = sel.d if sel.scheme == selection.FINITE_AGGREGATION else 1
            self.spread = selection.fa_spread(sel.n_classifiers // d, d)
            self.n_buckets = sel.n_classifiers
        self.flat = data.x_train.reshape(len(data.x_train), -1)
        self.poison_pos = np.full(len(data.y_train), -1, dtype=np.int64)
        self.poison_pos[data.poison_idx] = np.arange(len(data.poison_idx))

    def bucket_weights(self, t: int, y: int) -> np.ndarray:
        """Per bucket, how many of its classifiers vote ``y`` on test point ``t``."""
        return (self.P[:, t] == y)[self.spread].sum(axis=1)

    def insert(self, t: int, r: int, y: int, c: int) -> Edits:
        return Edits(add_x=self._target_copies(t, r, y, c), add_y=np.full(r, c))

    def _target_copies(self, t: int, r: int, y: int, c: int, avoid: frozenset = frozenset()
                       ) -> np.ndarray:
        """``r`` copies of test point ``t`` to insert labelled ``c``: against hash buckets
        each lands in a bucket voting ``y`` (most such votes first, those of ``avoid`` last),
        ``copies`` to a bucket."""
        x = self.data.x_test[t]
        if not self.buckets or r == 0:  # r = 0: no sample of class y to replace
            return np.repeat(x[None], r, axis=0)
        w = self.bucket_weights(t, y)
        ranked = np.lexsort((np.arange(len(w)), -w)).tolist()
        # the avoided buckets last, not never: a modify whose removals used every bucket
        # still has somewhere to put its copies (one modification each all the same)
        order = [b for b in ranked if b not in avoid] + [b for b in ranked if b in avoid]
        n_b = -(-r // self.copies)
        found = self._copies(x, c, set(order[:n_b]))
        chosen = [found[b] for b in order if b in found][:n_b]
        copies = [chosen[i % len(chosen)] for i in range(r)]  # round robin over the buckets
        return np.stack(copies)

    def _copies(self, x: np.ndarray, c: int, wanted: set) -> dict[int, np.ndarray]:
        """Copies of ``x`` with four corner pixels set to ``0 .. 15`` / 255, by bucket (the
        first found), until every ``wanted`` bucket has one or all 16^4 were tried."""
        found: dict[int, np.ndarray] = {}
        levels = np.arange(16, dtype=np.float32) / np.float32(255)
        grid = np.stack(np.meshgrid(*[levels] * 4, indexing="ij"), -1).reshape(-1, 4)
        for a in range(0, len(grid), 1024):
            g = grid[a:a + 1024]
            cand = np.repeat(x[None], len(g), axis=0)
            for j, (i0, i1) in enumerate(self._CORNERS):
                cand[:, 0, i0, i1] = g[:, j]
            ids = selection.partition_ids(cand, np.full(len(g), c), k=self.n_buckets)
            for b, xc in zip(ids.tolist(), cand, strict=True):
                found.setdefault(b, xc)
            if wanted <= found.keys():
                break
        return found

    def _nearest(self, t: int, y: int, r: int) -> np.ndarray:
        """Training indices of ``D^p`` samples labelled ``y``, nearest to test point ``t``
        first, in distinct buckets voting ``y`` first (bucket schemes)."""
        q = self.data.x_test[t].reshape(-1).astype(np.float64)
        cand = self.data.poison_idx[self.data.y_train[self.data.poison_idx] == y]
        d2 = ((self.flat[cand].astype(np.float64) - q[None]) ** 2).sum(axis=1)
        cand = cand[np.lexsort((cand, d2))]
        if not self.buckets:
            return cand[:r]
        w = self.bucket_weights(t, y)
        part = self.plan.part_of[self.poison_pos[cand]]
        taken, used = [], set()
        for i, b in zip(cand.tolist(), part.tolist(), strict=True):
            if w[b] > 0 and b not in used:
                taken.append(i)
                used.add(b)
                if len(taken) == r:
                    break
        rest = [i for i in cand.tolist() if i not in set(taken)]
        return np.array((taken + rest)[:r], dtype=np.int64)

    def remove(self, t: int, r: int, y: int, c: int) -> Edits:
        return Edits(remove=self._nearest(t, y, r))

    def flip(self, t: int, r: int, y: int, c: int) -> Edits:
        idx = self._nearest(t, y, r)
        return Edits(relabel_index=idx, relabel_label=np.full(len(idx), c))

    def modify(self, t: int, r: int, y: int, c: int) -> Edits:
        """``r`` modifications: each replaces one of ``remove``'s samples (class ``y``,
        nearest the target, in distinct buckets voting ``y``) by a copy of the target labelled
        ``c``, made to land in another bucket voting ``y``: against hash buckets one
        modification moves two buckets' votes, as the certificate allows (a flip's relabelled
        sample lands wherever its new hash puts it)."""
        idx = self._nearest(t, y, r)
        avoid = frozenset()
        if self.buckets:
            avoid = frozenset(self.plan.part_of[self.poison_pos[idx]].tolist())
        return Edits(remove=idx, add_x=self._target_copies(t, len(idx), y, c, avoid),
                     add_y=np.full(len(idx), c))

    def backdoor(self, r: int, label: int, size: int, rng_order: np.ndarray) -> Edits:
        idx = rng_order[:r]
        return Edits(add_x=patch_images(self.data.x_train[idx], size),
                     add_y=np.full(len(idx), label))
