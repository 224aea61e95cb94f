"""The training loops of one group of classifiers (``training.engine`` runs them):
``train_one``, the plain per-model reference twin, and ``train_stacked``, the stacked fast
path with one ``optim.StackedOptimizer`` update for the whole group, fed by ``DrawBlocks``
(the group's draws, ``STEP_BLOCK`` steps at a time, on the device)."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.nn import functional as F

from poisoncert.training.fast import stack_models
from poisoncert.training.minibatches import Minibatches
from poisoncert.training.optim import StackedOptimizer, lr_at, make_optimizer, set_lr
from poisoncert.training.settings import TrainConfig

__all__ = ["STEP_BLOCK", "DrawBlocks", "autocast", "draw_counts", "host_threads",
           "map_threads", "train_one", "train_stacked"]

#: Steps whose draws are moved to the device at once (bounds the memory of long runs).
STEP_BLOCK = 64


def host_threads(device: torch.device) -> int:
    """Threads that draw a group's random numbers on the host: up to 8 while a CUDA device
    trains (numpy releases the GIL while it fills an array; each classifier's generator is
    used by one thread at a time, so the numbers do not change), 1 on the CPU (the engine's
    one-thread rule)."""
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 1


def map_threads(fn, items, threads: int) -> list:
    """``[fn(i) for i in items]``, by a pool of ``threads`` threads when more than one."""
    if threads <= 1:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def autocast(cfg: TrainConfig, device: torch.device, cache_enabled: bool = True):
    """bfloat16 autocast for ``dtype="bfloat16"`` (CUDA), else a no-op context.
    ``cache_enabled=False`` inside a CUDA graph's capture (each step casts its weights
    anew, as torch's graph notes ask; the casts are the same)."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=cfg.autocast_dtype is not None, cache_enabled=cache_enabled)


def _as_tensor(a: np.ndarray | None, device) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(a, device=device)


def train_one(model, rows, draws: Minibatches, batcher, y, cfg: TrainConfig,
              device, seed: int) -> dict[str, torch.Tensor]:
    """The reference twin: one module, one torch optimizer, a plain loop; its state dict.
    ``seed`` (``selection.module_seed``) seeds what the module draws (dropout) on the CPU and
    the device, in a forked RNG state: a classifier's masks do not depend on the group, the
    order or the process's earlier draws."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return _train_one(model, rows, draws, batcher, y, cfg, device)


def _train_one(model, rows, draws: Minibatches, batcher, y, cfg: TrainConfig,
               device) -> dict[str, torch.Tensor]:
    model = model.to(device=device, dtype=cfg.torch_dtype)
    opt = make_optimizer(model.parameters(), cfg, device)
    rows_t = torch.as_tensor(rows, device=device)
    warps_t, fields_t = _as_tensor(draws.warps, device), _as_tensor(draws.fields, device)
    shifts_t = None if warps_t is not None else _as_tensor(draws.shifts, device)
    model.train()
    for s in range(cfg.steps):
        r = rows_t[s]
        if warps_t is not None:
            xb = batcher(r, None, warps_t[s], None if fields_t is None else fields_t[s])
        else:
            xb = batcher(r, None if shifts_t is None else shifts_t[s])
        with autocast(cfg, device):
            out = model(xb)
        loss = F.cross_entropy(out.to(cfg.torch_dtype), y[r])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        set_lr(opt, cfg, s)
        opt.step()
    model.eval()
    return {k: v.detach() for k, v in model.state_dict().items()}


class DrawBlocks:
    """A group's training draws, ``STEP_BLOCK`` steps at a time, stacked and on the device.

    ``host(a, b)`` stacks steps ``a:b`` of every classifier's arrays (``rows`` ``(n, G, B)``,
    warps / shifts / elastic grids on ``axis``: ``(n, B, G, ...)`` for batch-first nets),
    padded with copies of the last classifier. Elastic grids are drawn here, from each
    classifier's own stream, in order. On CUDA the next block is prepared on the host while
    the device trains on the current one, and the classifiers' grids are drawn by a pool of
    threads (numpy releases the GIL; each stream is drawn by one thread at a time, in order,
    so the numbers are those of the CPU path). On the CPU all of it runs in the calling
    thread (the engine's one-thread rule).
    """

    def __init__(self, draws: list[Minibatches], rows: list[np.ndarray], pad: int, axis: int,
                 steps: int, device: torch.device):
        if device.type == "cuda" and device.index is None:  # pragma: no cover - CUDA
            # the thread ahead copies to the device: name it, a new thread's current device
            # is the first one (a worker of several devices sets its own: executors)
            device = torch.device("cuda", torch.cuda.current_device())
        self.rows, self.pad, self.axis, self.steps, self.device = rows, pad, axis, steps, device
        self.warps = [d.warps for d in draws]
        self.shifts = [d.shifts for d in draws]
        self.streams = [d.field_stream for d in draws]
        self.threads = host_threads(device)

    def _stack(self, arrays: list, axis: int) -> np.ndarray:
        return np.stack(arrays + [arrays[-1]] * self.pad, axis=axis)

    def host(self, a: int, b: int, pool=None) -> dict[str, np.ndarray]:
        out = {"rows": self._stack([r[a:b] for r in self.rows], 1)}
        if self.warps[0] is not None:
            out["warps"] = self._stack([w[a:b] for w in self.warps], self.axis)
        elif self.shifts[0] is not None:
            out["shifts"] = self._stack([sh[a:b] for sh in self.shifts], self.axis)
        if self.streams[0] is not None:
            out["fields"] = self._fields(b - a, pool)
        return out

    def _fields(self, n: int, pool) -> np.ndarray:
        """The next ``n`` steps' elastic grids of the group, stacked on ``axis``: each stream
        draws straight into its classifier's slice (the padding copies the last one)."""
        st = self.streams[0]
        k = len(self.streams)
        one = (n, st.batch, 2, *st.grid)
        fields = np.empty(one[:self.axis] + (k + self.pad,) + one[self.axis:], np.float32)
        at = (slice(None),) * self.axis

        def fill(g: int) -> None:
            self.streams[g].take_into(fields[at + (g,)])

        if pool:
            list(pool.map(fill, range(k)))
        else:
            for g in range(k):
                fill(g)
        if self.pad:
            fields[at + (slice(k, None),)] = np.expand_dims(fields[at + (k - 1,)], self.axis)
        return fields

    def __iter__(self):
        spans = [(a, min(a + STEP_BLOCK, self.steps)) for a in range(0, self.steps, STEP_BLOCK)]
        dev = lambda h: {k: torch.as_tensor(v).to(self.device) for k, v in h.items()}  # noqa
        if self.threads == 1:
            for a, b in spans:
                yield a, b, dev(self.host(a, b))
            return
        from concurrent.futures import ThreadPoolExecutor

        # the block after the current one is drawn and copied to the device by the thread
        # ahead: a copy from pageable memory can hold its caller until the device's queue
        # reaches it, and the caller is then not the thread that queues the training steps
        # (the copy is queued on the same stream as the steps, so they read it after it)
        ready = lambda a, b, pool: dev(self.host(a, b, pool))  # noqa: E731
        with ThreadPoolExecutor(1) as ahead, ThreadPoolExecutor(self.threads) as pool:
            nxt = ahead.submit(ready, *spans[0], pool)
            for i, (a, b) in enumerate(spans):
                cur = nxt.result()
                if i + 1 < len(spans):
                    nxt = ahead.submit(ready, *spans[i + 1], pool)
                yield a, b, cur


def draw_counts(positions: np.ndarray, rows: int) -> np.ndarray:
    """``(steps, rows)`` int64: how many of each step's draws picked each sub-dataset row
    (``positions`` ``(steps, B)`` < ``rows``)."""
    steps = len(positions)
    flat = positions + (np.arange(steps) * rows)[:, None]
    return np.bincount(flat.reshape(-1), minlength=steps * rows).reshape(steps, rows)


def _train_subsets(net, opt, subsets, draws, batcher, y, cfg: TrainConfig, pad: int,
                   device) -> None:
    """``cfg.subset_rows``: every step forwards each classifier's sub-dataset (padded to
    ``U`` rows with copies of its last row, which no draw picks) and weights each row's loss
    by its draw count: ``sum_j c_j CE_j / B`` is the draws' ``sum_b CE_b / B``."""
    G, B, U = net.G, cfg.batch_size, cfg.rows_per_step
    rows = [np.concatenate([s, np.repeat(s[-1:], U - len(s))]) for s in subsets]
    rows = np.stack(rows + [rows[-1]] * pad)  # (G, U)
    rows_t = torch.as_tensor(rows, device=device)
    labels = y[rows_t].reshape(-1)
    xb = batcher(rows_t.t() if net.batch_first else rows_t, None)
    positions = [d.positions for d in draws] + [draws[-1].positions] * pad
    for a in range(0, cfg.steps, STEP_BLOCK):
        b = min(a + STEP_BLOCK, cfg.steps)
        block = torch.as_tensor(np.stack([draw_counts(pos[a:b], U) for pos in positions],
                                         axis=1), dtype=cfg.torch_dtype).to(device)  # (n, G, U)
        for s in range(a, b):
            with autocast(cfg, device):
                logits = net.forward_train(xb)
            ce = F.cross_entropy(logits.to(cfg.torch_dtype).reshape(G * U, -1), labels,
                                 reduction="none")
            loss = (ce * block[s - a].reshape(-1)).sum() / B
            loss.backward()
            opt.step(net.flat_grad(), lr_at(cfg, s))
            net.zero_grad()


def train_stacked(models, rows, draws: list[Minibatches], batcher, y, cfg: TrainConfig,
                  group: int, device, kind: str, subsets=None) -> list[dict]:
    """The fast path: the group padded to the group size (copies of its last classifier, so
    every group has the same shapes), trained as one stacked network (``fast``) with one
    update for the whole stack (``optim.StackedOptimizer``); the real classifiers' state
    dicts (device tensors). ``subsets`` (rows of ``y`` per classifier) with
    ``cfg.subset_rows``: each step forwards the sub-datasets, weighted by draw counts."""
    k, G, B = len(models), group, cfg.batch_size
    pad = G - k
    net = stack_models(models + [models[-1]] * pad, how=kind, device=device,
                       dtype=cfg.torch_dtype)
    opt = StackedOptimizer(net.flat, cfg)
    if cfg.rows_per_step is not None:
        _train_subsets(net, opt, subsets, draws, batcher, y, cfg, pad, device)
        return net.state_dicts(device=device)[:k]
    axis = 2 if net.batch_first else 1  # (steps, B, G) or (steps, G, B)
    for a, b, blk in DrawBlocks(draws, rows, pad, axis, cfg.steps, device):
        rows_b = blk["rows"]  # (n, G, B)
        labels_b = y[rows_b]
        if net.batch_first:
            rows_b = rows_b.transpose(1, 2)
        warps_b, shifts_b, fields_b = blk.get("warps"), blk.get("shifts"), blk.get("fields")
        for s in range(a, b):
            j = s - a
            if warps_b is not None:
                xb = batcher(rows_b[j], None, warps_b[j],
                             None if fields_b is None else fields_b[j])
            else:
                xb = batcher(rows_b[j], None if shifts_b is None else shifts_b[j])
            with autocast(cfg, device):
                logits = net.forward_train(xb)
            loss = F.cross_entropy(logits.to(cfg.torch_dtype).reshape(G * B, -1),
                                   labels_b[j].reshape(-1), reduction="sum") / B
            loss.backward()
            opt.step(net.flat_grad(), lr_at(cfg, s))
            net.zero_grad()
    return net.state_dicts(device=device)[:k]
