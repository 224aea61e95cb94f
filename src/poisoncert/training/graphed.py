"""``training.path: graphed``: the reference twin's loop, one training step captured once as a
CUDA graph and replayed for every step of every classifier.

The reference twin (``loops.train_one``) trains one ``nn.Module`` with one torch optimizer at
a time; on a GPU each of its steps launches a few hundred small kernels from Python, so the
device waits on the host. Here a *lane* holds one module, its optimizer and static input
buffers; its step (gather and augment the minibatch, forward, loss, backward, optimizer
step) is captured once as a CUDA graph, and each classifier is then trained by loading its
initial weights into the lane and replaying the graph once per step, with that step's draws
copied into the input buffers. ``lanes`` lanes (``CUDA_LANES``) train that many
classifiers at once, each on its own CUDA stream, so small steps (ResNet-18 on 64 CIFAR
images) share the device. On CUDA the lanes train channels-last (``CUDA_CHANNELS_LAST``).

A classifier's arithmetic is the reference twin's: the same module, optimizer, kernels and
order of operations. Its first step runs eagerly on a freshly emptied optimizer state (so it
initialises the state exactly as a new optimizer does); that state is then copied into the
tensors the graph captured, and the remaining steps replay the graph. On the CPU there are no
graphs: the same lanes, buffers and state hand-over run eagerly, and the result is the
reference path's, bit for bit (tested). On CUDA the replayed kernels are those of the
captured step, channels-last; the path is its own formulation (a run records it), its results
do not depend on the lanes, the chunking or the other classifiers (tested on CUDA).

Limits (checked, one clear line each): a constant learning rate (a graph bakes in the
learning rate it captured), the ``adam`` or ``sgd`` optimizer (fused, capturable), and a
model without random layers (dropout draws would be the graph's, not the reference's).
"""

from __future__ import annotations

import contextlib
import copy
from collections import defaultdict

import torch
from torch.nn import functional as F

from poisoncert._validation import param_error
from poisoncert.training.loops import _as_tensor, autocast
from poisoncert.training.minibatches import Minibatches
from poisoncert.training.optim import make_optimizer
from poisoncert.training.settings import GRAPHED_OPTIMIZERS, TrainConfig, graphed_obstacle

__all__ = ["CUDA_CHANNELS_LAST", "CUDA_GROUP", "CUDA_LANES", "GRAPHED_OPTIMIZERS", "WARMUP_STEPS",
           "channels_last_for", "graphed_obstacle", "lanes_for", "model_obstacle",
           "train_graphed"]

#: Classifiers trained at once on a CUDA device, one lane (module, graph, stream) each. One
#: H200, ResNet-18 on CIFAR-sized images in bfloat16, G = 16 (docs/benchmarks.md): 1 lane
#: 18.5k training images/s, 4 lanes 19.7k, 8 lanes 21.3k.
CUDA_LANES = 8
#: ``group_size: auto`` on CUDA for this path: classifiers per task (each task captures its
#: lanes' graphs once).
CUDA_GROUP = 16
#: Whether a lane's module and minibatches are channels-last on CUDA (cuDNN's tensor-core
#: convolutions take NHWC without transposing it; part of the path's numerics on CUDA). The
#: CPU keeps the reference loop's layout, and so its bits.
CUDA_CHANNELS_LAST = True
#: Eager steps on the lane's stream before its capture (cuDNN and cuBLAS set themselves
#: up; the optimizer state exists).
WARMUP_STEPS = 3


def model_obstacle(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot train on the graphed path (its random layers), or None."""
    from poisoncert.training.fast import _random_modules

    if _random_modules(model):
        return (f"{type(model).__name__} has dropout, whose masks a CUDA graph would draw "
                "otherwise than the reference loop")
    return None


def lanes_for(device: torch.device) -> int:
    """Lanes on ``device``: ``CUDA_LANES`` on CUDA; one on the CPU (no graphs, no streams)."""
    return CUDA_LANES if torch.device(device).type == "cuda" else 1


def channels_last_for(device: torch.device) -> bool:
    """Whether lanes on ``device`` train channels-last (``CUDA_CHANNELS_LAST`` on CUDA)."""
    return torch.device(device).type == "cuda" and CUDA_CHANNELS_LAST


class _Lane:
    """One module, its optimizer, static input buffers and (on CUDA) its captured step."""

    def __init__(self, template: torch.nn.Module, draws: Minibatches, batcher, y,
                 cfg: TrainConfig, device: torch.device):
        self.cfg, self.device, self.batcher, self.y = cfg, device, batcher, y
        self.module = copy.deepcopy(template).to(device=device, dtype=cfg.torch_dtype)
        self.channels_last = channels_last_for(device)
        if self.channels_last:  # the 4-d parameters (convolution kernels)
            self.module.to(memory_format=torch.channels_last)
        self.module.train()
        self.params = list(self.module.parameters())
        self.opt = make_optimizer(self.params, cfg, device)
        if device.type == "cuda":  # Adam's step refuses a capture unless marked capturable;
            # its fused kernel does not read the flag (the same arithmetic)
            for group in self.opt.param_groups:
                group["capturable"] = True
            self.opt._warned_capturable_if_run_uncaptured = True  # the eager first steps
        # static inputs, shaped and typed as one step of the first classifier's draws
        self.rows = torch.zeros(draws.positions.shape[1:], dtype=torch.int64, device=device)
        self.warps = _static(draws.warps, device)
        self.fields = _static(draws.fields, device)
        self.shifts = _static(draws.shifts, device) if self.warps is None else None
        self.graph = None
        self.stream = None
        if device.type == "cuda":  # after what the current stream made: the module, buffers
            self.stream = torch.cuda.Stream(device)
            self.stream.wait_stream(torch.cuda.current_stream(device))
        self.state: dict = {}
        self.steps: dict[str, torch.Tensor] = {}

    # -- one step: what the reference twin does, on the static buffers
    def step(self) -> None:
        cfg = self.cfg
        if self.warps is not None:
            xb = self.batcher(self.rows, None, self.warps, self.fields)
        else:
            xb = self.batcher(self.rows, self.shifts)
        if self.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, self.device, cache_enabled=False):
            out = self.module(xb)
        loss = F.cross_entropy(out.to(cfg.torch_dtype), self.y[self.rows])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def load_draws(self, rows, draws: Minibatches) -> None:
        """A classifier's draws (all its steps) on the device."""
        self.steps = {name: _as_tensor(a, self.device) for name, a in (
            ("rows", rows), ("warps", draws.warps), ("fields", draws.fields),
            ("shifts", draws.shifts))}

    def feed(self, s: int) -> None:
        """Copy step ``s`` of the current classifier's draws into the static buffers."""
        self.rows.copy_(self.steps["rows"][s])
        for name in ("warps", "fields", "shifts"):
            buf = getattr(self, name)
            if buf is not None:
                buf.copy_(self.steps[name][s])

    def prepare(self) -> None:
        """Make the optimizer state (eager steps) and, on CUDA, capture the step. The module's
        values are overwritten by each classifier's, so what these steps train is thrown
        away."""
        self.feed(0)
        if self.stream is None:
            self.step()
        else:  # on the lane's stream (the caller's context)
            for _ in range(WARMUP_STEPS):
                self.step()
            self.opt.zero_grad(set_to_none=True)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self.step()
        # the state tensors the captured step reads and writes
        self.state = {p: dict(self.opt.state[p]) for p in self.params}

    def start(self, model: torch.nn.Module, rows, draws: Minibatches) -> None:
        """Load a classifier (its initial weights and draws) and take its first step eagerly
        from an empty optimizer state, as a new optimizer would; then hand that state to the
        captured tensors."""
        with torch.no_grad():
            self.module.load_state_dict(model.state_dict())
        self.load_draws(rows, draws)
        self.opt.state = defaultdict(dict)
        self.feed(0)
        self.step()
        with torch.no_grad():
            for p in self.params:
                for k, v in self.opt.state[p].items():
                    self.state[p][k].copy_(v)
        self.opt.state = defaultdict(dict, {p: self.state[p] for p in self.params})

    def replay(self, s: int) -> None:
        """Step ``s`` (at least 1) of the current classifier."""
        self.feed(s)
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step()

    def weights(self) -> dict[str, torch.Tensor]:
        """The classifier's state dict: copies, in the plain (contiguous) layout."""
        return {k: v.detach().clone(memory_format=torch.contiguous_format)
                for k, v in self.module.state_dict().items()}


def train_graphed(models, rows, draws: list[Minibatches], batcher, y, cfg: TrainConfig,
                  device, lanes: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Train ``models`` (the group's classifiers, initialised) as the reference twin does,
    ``lanes`` at a time (default ``lanes_for(device)``); their state dicts, in order."""
    device = torch.device(device)
    lanes = lanes_for(device) if lanes is None else int(lanes)
    obstacle = model_obstacle(models[0])
    if obstacle is not None:
        raise param_error("path", "train_graphed", f"a path other than 'graphed' for this "
                          f"model ({obstacle})", "graphed")
    out: list = [None] * len(models)
    if not models:
        return out
    pool: list[_Lane] = []
    for w0 in range(0, len(models), lanes):
        wave = list(range(w0, min(w0 + lanes, len(models))))
        while len(pool) < len(wave):  # built and captured once per call
            i = wave[len(pool)]
            lane = _Lane(models[0], draws[i], batcher, y, cfg, device)
            with _on(lane):
                lane.load_draws(rows[i], draws[i])
                lane.prepare()
            pool.append(lane)
        active = list(zip(pool, wave, strict=False))
        for lane, i in active:
            with _on(lane):
                lane.start(models[i], rows[i], draws[i])
        for s in range(1, cfg.steps):
            for lane, _ in active:
                with _on(lane):
                    lane.replay(s)
        for lane, i in active:
            with _on(lane):
                out[i] = lane.weights()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out


def _static(a, device):
    """A buffer for one step of the draws ``a`` (``(steps, ...)``), or None."""
    return None if a is None else torch.zeros_like(torch.as_tensor(a[0]), device=device)


def _on(lane: _Lane):
    """The lane's stream as the current one (CUDA), else a no-op context."""
    return torch.cuda.stream(lane.stream) if lane.stream is not None else contextlib.nullcontext()
