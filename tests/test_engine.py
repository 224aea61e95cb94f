"""The training engine's stacked update, augmentation, group sizes, precision and devices."""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn import functional as F  # noqa: E402

from poisoncert.config import ConfigError, config_hash, from_dict  # noqa: E402
from poisoncert.executors import (  # noqa: E402
    LocalExecutor,
    device_of,
    make_executor,
    parse_devices,
    worker_device,
)
from poisoncert.ray_executor import RayExecutor  # noqa: E402
from poisoncert.training import TrainConfig, train_predict  # noqa: E402
from poisoncert.training.groups import auto_group_size, even_groups  # noqa: E402
from poisoncert.training.minibatches import (  # noqa: E402
    elastic_displacement,
    sample_minibatches,
    warp_images,
)
from poisoncert.training.optim import StackedOptimizer, lr_at  # noqa: E402

# --------------------------------------------------------------------------------------------
# One update for the whole stack


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opt", [dict(optimizer="adam"), dict(optimizer="sgd"),
                                 dict(optimizer="sgd", momentum=0.0),
                                 dict(optimizer="adadelta", lr=1.0)])
def test_stacked_update_is_position_independent(opt, dtype):
    """A row's update depends on its own values only: the same row at every position of a
    (G, P) stack, with other rows around it, ends with the same bits. P = 37 and G = 5 put
    some of its elements in vector bodies and some in scalar tails (16- and 8-wide SIMD)."""
    G, P, steps = 5, 37, 6
    cfg = TrainConfig(weight_decay=0.01, lr_schedule="cosine", steps=steps,
                      **{"lr": 0.01, **opt})
    g = torch.Generator().manual_seed(0)
    row = torch.randn(P, generator=g, dtype=dtype)
    grads = torch.randn(steps, P, generator=g, dtype=dtype)
    results = []
    for pos in range(G):
        flat = torch.randn(G, P, generator=g, dtype=dtype)
        flat[pos] = row
        others = torch.randn(steps, G, P, generator=g, dtype=dtype)
        upd = StackedOptimizer(flat, cfg)
        for s in range(steps):
            gr = others[s].clone()
            gr[pos] = grads[s]
            upd.step(gr, lr_at(cfg, s))
        results.append(flat[pos].clone())
    for r in results[1:]:
        assert torch.equal(r, results[0])
    assert not torch.equal(results[0], row)  # it did move


def _ieee_update(opt: str, cfg: TrainConfig, p, grads, dt):
    """The stacked update's operations one by one in numpy (each correctly rounded, scalars
    rounded to the parameters' dtype as torch rounds them): what ``StackedOptimizer`` must
    compute bit for bit."""
    from poisoncert.training.optim import ADADELTA_EPS, ADADELTA_RHO, ADAM_BETAS, ADAM_EPS

    f = dt.type
    p = p.copy()
    m, v, u = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    buf = None
    for t, g in enumerate(grads, start=1):
        lr = lr_at(cfg, t - 1)
        g = g + p * f(cfg.weight_decay)
        if opt == "adam":
            b1, b2 = ADAM_BETAS
            m = m * f(b1) + g * f(1.0 - b1)
            v = v * f(b2) + (g * g) * f(1.0 - b2)
            bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
            den = np.sqrt(v) / f(math.sqrt(bc2)) + f(ADAM_EPS)
            p = p - (m / den) * f(lr / bc1)
        elif opt == "sgd":
            buf = g if buf is None else buf * f(cfg.momentum) + g
            p = p - buf * f(lr)
        else:
            rho, eps = ADADELTA_RHO, ADADELTA_EPS
            v = v * f(rho) + (g * g) * f(1.0 - rho)
            d = np.sqrt(u + f(eps)) / np.sqrt(v + f(eps)) * g
            u = u * f(rho) + (d * d) * f(1.0 - rho)
            p = p - d * f(lr)
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("opt", ["adam", "sgd", "adadelta"])
def test_stacked_update_is_the_ieee_operations_bit_for_bit(opt, dtype):
    """On the CPU every operation of the stacked update is correctly rounded: the result
    equals the same operations in numpy, bit for bit, after steps whose moments include zeros
    (untouched parameters) and values across the exponent range. (torch's CPU ``sqrt`` is
    MKL's, 1 ulp off for some inputs on AMD processors: this failed with it.)"""

    dt = np.dtype(dtype)
    rng = np.random.default_rng(4)
    G, P, steps = 3, 203, 8
    cfg = TrainConfig(optimizer=opt, lr=1.0 if opt == "adadelta" else 0.01, weight_decay=1e-3,
                      lr_schedule="cosine", steps=steps,
                      **({"momentum": 0.9} if opt == "sgd" else {}))
    p0 = (rng.standard_normal((G, P)) * 10.0 ** rng.uniform(-6, 2, (G, P))).astype(dt)
    grads = (rng.standard_normal((steps, G, P)) * 10.0 ** rng.uniform(-12, 1, (steps, G, P))
             ).astype(dt)
    grads[:, :, :17] = 0.0  # parameters no step touches (their moments stay 0)
    p0[:, :17] = 0.0
    flat = torch.from_numpy(p0.copy())
    upd = StackedOptimizer(flat, cfg)
    for s in range(steps):
        upd.step(torch.from_numpy(grads[s].copy()), lr_at(cfg, s))
    want = _ieee_update(opt, cfg, p0, grads, dt)
    np.testing.assert_array_equal(flat.numpy().view(f"u{dt.itemsize}"),
                                  want.view(f"u{dt.itemsize}"))
    assert not np.array_equal(want, p0)


@pytest.mark.parametrize("opt", [dict(optimizer="adam"), dict(optimizer="sgd"),
                                 dict(optimizer="adadelta", lr=1.0)])
def test_stacked_update_follows_torch_over_steps(opt):
    """Ten float64 steps of the stacked update against torch's optimizer on the same
    gradients: equal to a few ulps of the parameters' scale (the update is torch's formula,
    rounded once per operation)."""
    cfg = TrainConfig(weight_decay=1e-3, **{"lr": 0.01, **opt})
    g = torch.Generator().manual_seed(1)
    p0 = torch.randn(3, 50, generator=g, dtype=torch.float64)
    grads = torch.randn(10, 3, 50, generator=g, dtype=torch.float64) + 0.5
    flat = p0.clone()
    upd = StackedOptimizer(flat, cfg)
    ref = p0.clone().requires_grad_(True)
    from poisoncert.training.optim import make_optimizer

    topt = make_optimizer([ref], cfg, torch.device("cpu"))
    for s in range(10):
        upd.step(grads[s].clone(), cfg.lr)
        ref.grad = grads[s].clone()
        topt.step()
    scale = float(p0.abs().max())
    torch.testing.assert_close(flat, ref.detach(), rtol=0, atol=64 * 2.0 ** -52 * scale)


# --------------------------------------------------------------------------------------------
# Augmentation


@pytest.mark.parametrize("h, w, gh, gw", [(28, 28, 7, 7), (12, 9, 3, 2), (32, 32, 8, 8),
                                          (5, 6, 2, 2)])
def test_elastic_displacement_is_bilinear_upsampling(h, w, gh, gw):
    """The gathers compute F.interpolate's function (bilinear, align_corners=True) scaled to
    grid units: equal to float64 rounding."""
    g = torch.Generator().manual_seed(2)
    fields = torch.randn(4, 2, gh, gw, generator=g, dtype=torch.float64)
    got = elastic_displacement(fields, h, w, "gather")
    up = F.interpolate(fields, size=(h, w), mode="bilinear", align_corners=True)
    want = up.flip(1).permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h],
                                                          dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14 * float(fields.abs().max()))
    # the CPU's formulation is F.interpolate itself
    assert torch.equal(elastic_displacement(fields, h, w), want)
    with pytest.raises(ValueError, match="'method' parameter of elastic_displacement"):
        elastic_displacement(fields, h, w, "nearest")


def _warp_as_before(x, warps, fields):
    """The warps of the previous engine (F.interpolate upsampling), for comparison."""
    n, _, h, w = x.shape
    angle, zoom, shear, ty, tx = warps.to(x.dtype).unbind(-1)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    theta = torch.stack([
        torch.stack([cos / zoom, (tan * cos - sin) / zoom, 2 * tx / w], -1),
        torch.stack([sin / zoom, cos / zoom, 2 * ty / h], -1)], -2)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    disp = F.interpolate(fields.to(x.dtype), size=(h, w), mode="bilinear", align_corners=True)
    grid = grid + disp.flip(1).permute(0, 2, 3, 1) * torch.tensor([2.0 / w, 2.0 / h])
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_warped_images_have_the_same_distribution_as_before():
    """Same draws (numpy, the classifier's seed) and the same warp function: on the CPU every
    warped image is the previous engine's, bit for bit; with CUDA's gathered elastic
    displacement (run here on the CPU) it equals it to float32 rounding, so the distribution
    of training images is unchanged."""
    cfg = TrainConfig(steps=20, batch_size=16, augment=True, rotation=15.0, scale=0.15,
                      shear=10.0, max_shift=3, elastic=1.0)
    d = sample_minibatches(np.array([0, 1, 1, 2]), cfg, 3, image_shape=(1, 28, 28))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(20 * 16, 1, 28, 28, generator=g)
    warps = torch.as_tensor(d.warps).reshape(-1, 5)
    fields = torch.as_tensor(d.fields).reshape(-1, 2, 7, 7)
    want = _warp_as_before(x, warps, fields)
    assert torch.equal(warp_images(x, warps, fields), want)
    got = warp_images(x, warps, fields, "gather")
    assert float((got - want).abs().max()) < 1e-4
    for i in (0, 7, 100):  # each image computed alone
        assert torch.equal(warp_images(x[i:i + 1], warps[i:i + 1], fields[i:i + 1], "gather"),
                           got[i:i + 1])
    assert float((got - x).abs().mean()) > 0.05  # the warps do move the images


def test_lazy_elastic_fields_are_the_eager_ones():
    cfg = TrainConfig(steps=37, batch_size=5, augment=True, rotation=5.0, elastic=0.7)
    eager = sample_minibatches(np.arange(6) % 3, cfg, 9, image_shape=(1, 12, 12))
    lazy = sample_minibatches(np.arange(6) % 3, cfg, 9, image_shape=(1, 12, 12),
                              lazy_fields=True)
    assert lazy.fields is None
    got = np.concatenate([lazy.field_stream.take(k) for k in (10, 1, 26)])
    np.testing.assert_array_equal(got, eager.fields)
    np.testing.assert_array_equal(lazy.warps, eager.warps)
    # drawn into a strided slice (a group's stacked grids): the same bits
    into = sample_minibatches(np.arange(6) % 3, cfg, 9, image_shape=(1, 12, 12),
                              lazy_fields=True).field_stream
    stacked = np.full((37, 3, 5, 2, 3, 3), np.nan, np.float32)
    for a, b in ((0, 10), (10, 11), (11, 37)):
        into.take_into(stacked[a:b, 1])
    assert np.array_equal(stacked[:, 1].view(np.uint32), eager.fields.view(np.uint32))
    assert np.isnan(stacked[:, [0, 2]]).all()  # nothing written beside the slice


# --------------------------------------------------------------------------------------------
# group_size: auto


def test_group_size_auto_parses_and_keeps_config_hashes():
    base = {"data": {"name": "digits"}, "selection": {"scheme": "binomial", "ns": 30, "T": 9}}
    auto = from_dict({**base, "training": {"group_size": "auto"}})
    none = from_dict({**base, "training": {"group_size": None}})
    default = from_dict(base)
    assert auto.training.group_size == none.training.group_size == "auto"
    assert config_hash(auto) == config_hash(none) == config_hash(default)
    eight = from_dict(base, {"training.group_size": "8"})
    assert eight.training.group_size == 8 and config_hash(eight) != config_hash(auto)
    with pytest.raises(ConfigError, match="'training.group_size' parameter of the config"):
        from_dict(base, {"training.group_size": "big"})
    with pytest.raises(ValueError, match="'group_size' parameter of TrainConfig must be 'auto'"):
        TrainConfig(group_size=0)


def test_auto_group_size_on_the_cpu_and_even_groups():
    cfg = TrainConfig(model="lenet5")
    assert auto_group_size(cfg, "cpu", (1, 28, 28), 10) == 8
    assert auto_group_size(TrainConfig(group_size=5), "cuda", (1, 28, 28), 10) == 5
    # the graphed loop on CUDA: graphed.CUDA_GROUP classifiers per task (no probe), evened
    resnet = TrainConfig(model="resnet18", optimizer="sgd")
    assert auto_group_size(resnet, "cuda", (3, 32, 32), 10, path="graphed") == 16
    assert auto_group_size(resnet, "cuda", (3, 32, 32), 10, n_models=20, path="graphed") == 10
    assert auto_group_size(resnet, "cpu", (3, 32, 32), 10, path="graphed") == 8
    assert even_groups(256, 1000) == 250 and even_groups(200, 1000) == 200
    assert even_groups(8, 3) == 3 and even_groups(7, 0) == 7
    for G in range(1, 40):
        for T in range(1, 100):
            e = even_groups(G, T)
            assert e <= G and math.ceil(T / e) == math.ceil(T / G)


_RUN = {"data": {"name": "digits", "test_limit": 30},
        "selection": {"scheme": "without_replacement", "ns": 30, "T": 10, "seed": 3},
        "training": {"model": "mlp", "steps": 4, "batch_size": 8},
        "run": {"chunk_size": 4}}


def _digits_test(n):
    from poisoncert.config import from_dict as _fd
    from poisoncert.experiment import split_data

    return split_data(_fd(_RUN).data).x_test[:n]


def _reset_chunks(run):
    shutil.rmtree(run / "chunks")
    (run / "chunks").mkdir()
    for name in ("predictions.npy", "votes.npy"):
        (run / name).unlink()


def _as_earlier(run, man: dict) -> None:
    """Write ``man`` as the manifest of the run, as a run of an earlier version wrote it (its
    digest over its content: a resume refuses a manifest edited by hand)."""
    from poisoncert import runs

    man[runs.MANIFEST_DIGEST] = runs.manifest_digest(man)
    (run / runs.MANIFEST).write_text(json.dumps(man))


def test_a_run_records_its_group_size_and_a_resumed_run_keeps_it(tmp_path):
    from poisoncert.experiment import train_run

    auto = train_run(from_dict(_RUN), tmp_path / "auto", progress=False)
    man = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert man["engine"] == {"group_size": 8, "path": "twin"}
    g4 = train_run(from_dict(_RUN, {"training.group_size": 4}), tmp_path / "g4",
                   progress=False)
    g8 = train_run(from_dict(_RUN, {"training.group_size": 8}), tmp_path / "g8",
                   progress=False)
    np.testing.assert_array_equal(auto.predictions, g8.predictions)
    # chunks hold whole groups: chunk_size 4 gives 3 chunks with groups of 4, 2 with 8
    chunks = lambda name: len(list((tmp_path / name / "chunks").iterdir()))  # noqa: E731
    assert (chunks("auto"), chunks("g4"), chunks("g8")) == (2, 3, 2)
    # a run started where auto meant 4 (another device) resumes with 4 ...
    man["engine"]["group_size"] = 4
    _as_earlier(tmp_path / "auto", man)
    _reset_chunks(tmp_path / "auto")
    resumed = train_run(from_dict(_RUN), tmp_path / "auto", progress=False)
    np.testing.assert_array_equal(resumed.predictions, g4.predictions)
    assert chunks("auto") == 3
    # its saved ensemble goes by the recorded size, and its config keeps "auto"
    from poisoncert.experiment.ensemble import Ensemble

    ens = Ensemble.load(tmp_path / "auto")
    assert ens.record["model"]["group_size"] == 4 and ens.config.training.group_size == "auto"
    labels = ens.base_predictions(_digits_test(30), preprocessed=True)
    np.testing.assert_array_equal(labels, g4.predictions)
    # ... and a run started before the record existed resumes with the former default, 8
    del man["engine"]
    _as_earlier(tmp_path / "auto", man)
    _reset_chunks(tmp_path / "auto")
    resumed = train_run(from_dict(_RUN), tmp_path / "auto", progress=False)
    np.testing.assert_array_equal(resumed.predictions, g8.predictions)
    assert chunks("auto") == 2


def test_a_group_larger_than_the_run_trains_the_run_alone(tmp_path, monkeypatch):
    """``group_size`` above ``T`` trained ``group_size`` classifiers (copies of the last one,
    discarded): a new run's group is at most ``T``, recorded; the memory estimate counts
    that group; a run that recorded a padded group resumes with it."""
    from poisoncert.experiment import train_run
    from poisoncert.experiment.resources import check_run_memory
    from poisoncert.experiment.split import split_data
    from poisoncert.training import loops

    stacked = []
    real = loops.stack_models
    monkeypatch.setattr(loops, "stack_models",
                        lambda models, *a, **k: stacked.append(len(models)) or real(
                            models, *a, **k))
    big = from_dict(_RUN, {"training.group_size": 64, "run.chunk_size": 64})
    res = train_run(big, tmp_path / "g64", progress=False)
    man = json.loads((tmp_path / "g64" / "manifest.json").read_text())
    assert man["engine"]["group_size"] == 10 and set(stacked) == {10}
    g8 = train_run(from_dict(_RUN, {"training.group_size": 8}), tmp_path / "g8",
                   progress=False)
    np.testing.assert_array_equal(res.predictions, g8.predictions)
    huge = from_dict(_RUN, {"training.group_size": 2 ** 40})
    check_run_memory(huge, split_data(huge.data))  # 10 classifiers, not 2^40
    # a run an earlier version trained with the padded group keeps it
    man["engine"]["group_size"] = 64
    _as_earlier(tmp_path / "g64", man)
    _reset_chunks(tmp_path / "g64")
    stacked.clear()
    resumed = train_run(big, tmp_path / "g64", progress=False)
    assert set(stacked) == {64}
    np.testing.assert_array_equal(resumed.predictions, g8.predictions)


def test_the_fast_path_resolves_per_device_and_a_run_keeps_what_it_recorded(tmp_path,
                                                                            monkeypatch):
    """``fast`` is the device's fastest stacking (the grouped-convolution twins on the CPU;
    on CUDA, per model, what was measured fastest there); a run records what it resolved
    to, and resuming, predicting with and updating the run keep that, whatever device does
    it (a run whose manifest predates the record: ``twin``, what ``fast`` meant everywhere
    then)."""
    from poisoncert import Ensemble
    from poisoncert.experiment import train_run
    from poisoncert.experiment.edits import Edits
    from poisoncert.experiment.update import update_run
    from poisoncert.training.fast import path_stacking
    from poisoncert.training.groups import recorded_path, resolve_path

    # fast: per built-in model on CUDA (what was measured fastest there), the twin elsewhere
    assert [path_stacking("fast", d, m) for d in (None, "cpu", "cuda", "cuda:1")
            for m in ("lenet5", "cnn_small", "resnet18")] == [
        "auto"] * 6 + ["cmajor", "cmajor", "auto"] * 2
    # a model fast has no entry for (not measured on CUDA), a factory and no model: auto
    from poisoncert.training.models import build_model
    from poisoncert.training.user_model import ModelRef

    assert [path_stacking("fast", "cuda", m) for m in (
        "mlp", "cnn", "lenet5_avg", build_model, ModelRef("tests.helpers:tiny_model"), None)
            ] == ["auto"] * 6
    assert [path_stacking(p, "cuda", "resnet18") for p in ("twin", "bmm", "cmajor", "vmap")
            ] == ["auto", "bmm", "cmajor", "vmap"]
    assert (resolve_path("fast", "cpu", "lenet5"), resolve_path("fast", "cuda", "lenet5"),
            resolve_path("fast", "cuda", "resnet18"), resolve_path("vmap", "cuda", "lenet5"),
            resolve_path("cmajor", "cpu", "resnet18")) == (
        "twin", "cmajor", "twin", "vmap", "cmajor")
    # what fast means on CUDA is one table (the next measurement may change it)
    from poisoncert.training import fast as fast_module

    monkeypatch.setitem(fast_module.CUDA_FAST, "resnet18", "cmajor")
    assert (resolve_path("fast", "cuda", "resnet18"), resolve_path("fast", "cpu", "resnet18")
            ) == ("cmajor", "twin")
    monkeypatch.undo()
    # ResNet-18 on CUDA: the graphed loop (measured faster than any stacking) where its
    # settings allow it; a schedule or an optimizer the graphs cannot capture keeps the twin;
    # the CPU keeps the twin; without the settings no loop is chosen
    from dataclasses import replace

    from poisoncert.training import TrainConfig

    r18 = TrainConfig(model="resnet18", optimizer="sgd")
    assert [resolve_path("fast", d, "resnet18", t) for d, t in (
        ("cuda", r18), ("cuda:1", TrainConfig(model="resnet18")), ("cpu", r18), (None, r18),
        ("cuda", replace(r18, lr_schedule="cosine")),
        ("cuda", replace(r18, optimizer="adadelta")), ("cuda", None))] == [
        "graphed", "graphed", "twin", "twin", "twin", "twin", "twin"]
    assert (resolve_path("fast", "cuda", training=r18),
            resolve_path("fast", "cuda", "lenet5", replace(r18, model="lenet5")),
            resolve_path("twin", "cuda", "resnet18", r18)) == ("graphed", "cmajor", "twin")
    assert [recorded_path("fast", "cuda", m, "resnet18", r18)
            for m in (None, {"engine": {"group_size": 32}}, {"engine": {"path": "twin"}})
            ] == ["graphed", "twin", "twin"]
    old = {"engine": {"group_size": 8}}
    assert [recorded_path("fast", "cuda", m, "cnn_small")
            for m in (None, old, {"engine": {"path": "bmm"}})] == ["cmajor", "twin", "bmm"]
    assert recorded_path("reference", "cuda", {"engine": {"path": "bmm"}}) == "reference"

    img = {**_RUN, "selection": {"scheme": "with_replacement", "ns": 20, "T": 6, "seed": 1},
           "training": {"model": "cnn_small", "steps": 3, "batch_size": 8}}
    runs = {p: train_run(from_dict(img, {"training.path": p}), tmp_path / p, progress=False)
            for p in ("fast", "twin", "bmm")}
    engine = lambda run: json.loads((tmp_path / run / "manifest.json").read_text())["engine"]  # noqa: E731
    assert [engine(p)["path"] for p in runs] == ["twin", "twin", "bmm"]
    W = {p: _run_weights(tmp_path / p) for p in runs}
    same = lambda a, b: all(torch.equal(x[k], y[k]) for x, y in zip(a, b, strict=True)  # noqa: E731
                            for k in x)
    assert same(W["fast"], W["twin"]) and not same(W["twin"], W["bmm"])
    man = json.loads((tmp_path / "fast" / "manifest.json").read_text())

    def resume_as(path, like):
        """The fast run resumed from scratch with ``engine.path`` ``path`` (None: no
        record), compared with the run ``like``."""
        if path is None:
            del man["engine"]["path"]
        else:
            man["engine"]["path"] = path
        _as_earlier(tmp_path / "fast", man)
        _reset_chunks(tmp_path / "fast")
        res = train_run(from_dict(img, {"training.path": "fast"}), tmp_path / "fast",
                        progress=False)
        np.testing.assert_array_equal(res.predictions, runs[like].predictions)
        assert same(_run_weights(tmp_path / "fast"), W[like])
        return res

    # a run that resolved fast to bmm (on CUDA) resumes with bmm on the CPU ...
    resumed = resume_as("bmm", "bmm")
    # ... its saved ensemble predicts with bmm, and its config keeps fast
    ens = Ensemble.load(tmp_path / "fast")
    assert (ens.path, ens.record["model"]["path"], ens.config.execution.path) == (
        "bmm", "bmm", "fast")
    x = _digits_test(30)
    from poisoncert import training

    seen, predict = [], training.predict
    monkeypatch.setattr(training, "predict", lambda *a, **k: seen.append(k["path"]) or
                        predict(*a, **k))
    np.testing.assert_array_equal(ens.base_predictions(x, preprocessed=True),
                                  resumed.predictions)
    assert seen == ["bmm"]
    monkeypatch.undo()
    # ... and an update retrains with bmm and records it
    upd = update_run(tmp_path / "fast", tmp_path / "upd",
                     Edits(remove=np.array([0, 1, 2, 3])))
    assert upd.n_retrained > 0 and engine("upd")["path"] == "bmm"
    from poisoncert.config import load_config

    scratch = train_run(load_config(tmp_path / "upd" / "config.yaml", {"training.path": "bmm"}),
                        tmp_path / "scratch", progress=False)
    np.testing.assert_array_equal(upd.predictions, scratch.predictions)
    assert upd.n_retrained == 6 and same(_run_weights(tmp_path / "upd"),
                                         _run_weights(tmp_path / "scratch"))
    resume_as(None, "twin")  # a manifest from before the record: twin
    assert Ensemble.load(tmp_path / "fast").path == "twin"


def test_a_run_resolves_and_records_its_subset_rows_and_a_resumed_run_keeps_them(tmp_path):
    """Sub-datasets smaller than a batch (the schemes that fix their size, no augmentation, no
    BatchNorm): a new run trains with ``subset_rows`` = the size and records it; a resumed
    run keeps what it recorded (nothing recorded: the draws, as runs before it)."""
    from poisoncert.experiment import train_run
    from poisoncert.experiment.learners import auto_subset_rows
    from poisoncert.experiment.split import split_data

    small = {"selection.ns": 6}  # sub-datasets of 6 rows, batches of 8
    auto = train_run(from_dict(_RUN, small), tmp_path / "auto", progress=False)
    man = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert man["engine"] == {"group_size": 8, "subset_rows": 6, "path": "twin"}
    assert "subset_rows" not in (tmp_path / "auto" / "config.yaml").read_text()
    six = train_run(from_dict(_RUN, {**small, "training.subset_rows": 6}), tmp_path / "six",
                    progress=False)
    np.testing.assert_array_equal(auto.predictions, six.predictions)
    # a run whose manifest predates the record resumes with the draws
    del man["engine"]["subset_rows"]
    _as_earlier(tmp_path / "auto", man)
    _reset_chunks(tmp_path / "auto")
    resumed = train_run(from_dict(_RUN, small), tmp_path / "auto", progress=False)
    data = split_data(from_dict(_RUN, small).data)
    from poisoncert.training import TrainConfig, train_predict_with_weights

    plain = TrainConfig(model="mlp", steps=4, batch_size=8)
    args = (data.x_train, data.y_train, *_run_subsets(tmp_path / "auto"), data.x_test)
    P, W = train_predict_with_weights(*args, plain, n_classes=data.n_classes)
    _, W6 = train_predict_with_weights(*args, TrainConfig(**{**plain.__dict__, "subset_rows": 6}),
                                       n_classes=data.n_classes)
    np.testing.assert_array_equal(resumed.predictions, P)
    saved = _run_weights(tmp_path / "auto")
    assert all(torch.equal(saved[i][k], W[i][k]) for i in range(10) for k in W[i])
    assert not all(torch.equal(W6[i][k], W[i][k]) for i in range(10) for k in W[i])
    assert all(torch.equal(a[k], b[k]) for a, b in zip(_run_weights(tmp_path / "six"), W6,
                                                        strict=True) for k in a)
    # when it does not apply
    for over, why in (({}, "30 rows >= batch 8"), ({"selection.scheme": "binomial"}, "random size"),
                      ({"selection.ns": 6, "training.path": "reference"}, "reference path"),
                      ({"selection.ns": 6, "training.path": "graphed"}, "graphed loop"),
                      ({"selection.ns": 6, "training.batch_size": 6}, "not below the batch")):
        cfg = from_dict(_RUN, over)
        assert auto_subset_rows(cfg, split_data(cfg.data)) is None, why
    img = {**_RUN, "selection": {"scheme": "with_replacement", "ns": 5, "T": 4, "seed": 1},
           "training": {"model": "cnn_small", "steps": 2, "batch_size": 8}}
    cfg = from_dict(img)
    data = split_data(cfg.data)  # digits are 8x8 images
    assert auto_subset_rows(cfg, data) == 5
    for over in ({"training.augment": True}, {"training.model": _BN_FACTORY}):
        assert auto_subset_rows(from_dict(img, over), data) is None, over
    assert auto_subset_rows(from_dict(img, {"training.augment": True,
                                            "training.max_shift": 0}), data) == 5


def test_subset_rows_off_keeps_a_run_on_the_draws(tmp_path):
    """``training.subset_rows: off`` (YAML's bare ``off`` reads as false: the same) trains
    where the run would pick sub-dataset rows with the draws, records none, keeps ``'off'``
    in its config.yaml, and resumes and updates on the draws; ``auto`` is null."""
    from typer.testing import CliRunner

    from poisoncert.cli import app
    from poisoncert.config import load_config
    from poisoncert.experiment import train_run
    from poisoncert.experiment.split import split_data
    from poisoncert.training import TrainConfig, train_predict_with_weights

    small = {"selection.ns": 6}  # a run would pick 6 rows
    assert from_dict(_RUN, {**small, "training.subset_rows": "auto"}).training.subset_rows \
        is None
    assert from_dict(_RUN, {**small, "training.subset_rows": False}).training.subset_rows \
        == "off"
    off = train_run(from_dict(_RUN, {**small, "training.subset_rows": "off"}), tmp_path / "off",
                    progress=False)
    man = json.loads((tmp_path / "off" / "manifest.json").read_text())
    assert man["engine"] == {"group_size": 8, "path": "twin"}
    assert load_config(tmp_path / "off" / "config.yaml").training.subset_rows == "off"
    data = split_data(from_dict(_RUN, small).data)
    args = (data.x_train, data.y_train, *_run_subsets(tmp_path / "off"), data.x_test)
    P, W = train_predict_with_weights(*args, TrainConfig(model="mlp", steps=4, batch_size=8),
                                      n_classes=data.n_classes)
    np.testing.assert_array_equal(off.predictions, P)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(_run_weights(tmp_path / "off"), W,
                                                        strict=True) for k in a)
    # resumed: the same draws
    _reset_chunks(tmp_path / "off")
    again = train_run(load_config(tmp_path / "off" / "config.yaml"), tmp_path / "off",
                      progress=False)
    np.testing.assert_array_equal(again.predictions, P)
    # updated: the retrained classifiers on the draws too, as a new run of the edited set
    from poisoncert.experiment.edits import Edits
    from poisoncert.experiment.update import update_run

    used = _run_subsets(tmp_path / "off")[0][0][:2]  # samples classifier 0 trained on
    upd = update_run(tmp_path / "off", tmp_path / "upd",
                     Edits(relabel_index=used, relabel_label=np.array([3, 4])))
    assert upd.n_retrained > 0
    scratch = train_run(load_config(tmp_path / "upd" / "config.yaml"), tmp_path / "scratch",
                        progress=False)
    np.testing.assert_array_equal(upd.predictions, scratch.predictions)
    for run in ("upd", "scratch"):
        assert json.loads((tmp_path / run / "manifest.json").read_text())["engine"] == {
            "group_size": 8, "path": "twin"}
    # from the command line, YAML's bare off
    res = CliRunner().invoke(app, ["train", str(tmp_path / "off" / "config.yaml"), "--run-dir",
                                   str(tmp_path / "cli"), "--training.subset_rows", "off", "-q"])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(tmp_path / "cli" / "predictions.npy"), P)
    with pytest.raises(ValueError, match=r"'training.subset_rows'.*null \('auto'\), 'off' or "
                                         r"an int in the range \[1, .*Got 'on'"):
        from_dict(_RUN, {"training.subset_rows": "on"})


_BN_FACTORY = "tests.test_engine:bn_model"


def bn_model(input_shape, n_classes):
    """A user model with BatchNorm (``_BN_FACTORY``)."""
    c, h, w = input_shape
    return torch.nn.Sequential(torch.nn.Conv2d(c, 2, 3), torch.nn.BatchNorm2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(2 * (h - 2) * (w - 2),
                                                                   n_classes))


def _run_weights(run):
    from poisoncert.runs import RunDir
    from poisoncert.training import load_weights

    rd = RunDir(run)
    return [w for cid in range(len(list(rd.weights_dir.iterdir())))
            for w in load_weights(rd.weights_path(cid))]


def _run_subsets(run):
    from poisoncert.experiment.train import run_subsets

    _, subsets = run_subsets(run)
    return subsets, [int(s) for s in np.load(run / "seeds.npy")]


# --------------------------------------------------------------------------------------------
# Precision


def test_cuda_precisions_are_refused_on_the_cpu_with_one_line():
    for dtype in ("tf32", "bfloat16"):
        cfg = TrainConfig(model="mlp", dtype=dtype, steps=1)
        with pytest.raises(ValueError, match=r"'cfg.dtype' parameter of train_predict must be "
                                             r"'float32' or 'float64' on a cpu device"):
            train_predict(np.zeros((4, 3), np.float32), np.zeros(4, int), [np.arange(4)], [1],
                          np.zeros((2, 3), np.float32), cfg, n_classes=2)
        with pytest.raises(ConfigError, match="'training.dtype' parameter of the config"):
            from_dict(_RUN, {"training.dtype": dtype})
        assert from_dict(_RUN, {"training.dtype": dtype, "training.device": "cuda"})


# --------------------------------------------------------------------------------------------
# Devices and GPUs per task (scheduling logic, on the CPU)


def test_parse_devices_with_a_fake_device_count():
    assert parse_devices("all", cuda_count=3) == ["cuda:0", "cuda:1", "cuda:2"]
    assert parse_devices("cuda:1, cuda:0", cuda_count=2) == ["cuda:1", "cuda:0"]
    assert parse_devices(["cuda"], cuda_count=1) == ["cuda:0"]
    assert parse_devices("cpu", cuda_count=0) == ["cpu"]
    assert parse_devices(None) is None
    with pytest.raises(ValueError, match="'devices' parameter of parse_devices"):
        parse_devices("all", cuda_count=0)
    with pytest.raises(ValueError, match=r"CUDA devices 0 to 1 \(2 visible\)"):
        parse_devices("cuda:2", cuda_count=2)
    with pytest.raises(ValueError, match="'devices' parameter"):
        parse_devices("tpu:0", cuda_count=2)
    assert [device_of(k, ["cuda:0", "cuda:1"]) for k in range(5)] == [
        "cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]


def _report_device(chunk_id: int):
    import os

    return chunk_id, worker_device(), os.getpid()


def test_local_executor_gives_each_worker_a_device():
    ex = LocalExecutor(devices=["cpu", "cpu"])
    assert ex.workers == 2
    got = sorted(ex.map_chunks(_report_device, range(6)))
    assert [c for c, _, _ in got] == list(range(6))
    assert {d for _, d, _ in got} == {"cpu"}
    with pytest.raises(ValueError, match="'gpus_per_task' parameter of make_executor"):
        make_executor("local", gpus_per_task=0.5)


def test_ray_tasks_request_gpus():
    ex = RayExecutor(num_gpus_per_task=0.25)
    assert ex.task_options()["num_gpus"] == 0.25
    assert ex.concurrency({"CPU": 64, "GPU": 2}) == 8  # 4 tasks share each GPU
    assert ex.concurrency({"CPU": 3, "GPU": 2}) == 3
    assert "num_gpus" not in RayExecutor().task_options()
    assert RayExecutor(workers=5, num_gpus_per_task=1).concurrency({"GPU": 1}) == 5
    with pytest.raises(ValueError, match="'num_gpus_per_task' parameter of RayExecutor"):
        RayExecutor(num_gpus_per_task=-1)


# --------------------------------------------------------------------------------------------
# The GPU benchmark runs (on the CPU, tiny settings)


def test_bench_gpu_quick_runs_on_the_cpu(tmp_path, capsys):
    bench = _load_benchmark("bench_gpu")
    out = tmp_path / "r.json"
    report = bench.main(["--device", "cpu", "--quick", "--e2e", "digits_cnn",
                         "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    # the run's own wall time, last (the target is for the whole command)
    printed = capsys.readouterr().out
    assert report["wall_s"] > 0 and printed.rstrip().endswith(
        f"bench_gpu: {report['wall_s']} s in all on {report['device']}")
    assert "| lenet5 | 4 | float32 |" in printed
    assert {r["model"] for r in report["throughput"]} == {
        "lenet5", "lenet5, sub-dataset rows 4", "cnn_small + warps", "cnn_small + warps (bmm)",
        "cnn_small + warps (cmajor)", "resnet18 (twin)", "resnet18 (vmap)", "resnet18 (cmajor)",
        "resnet18 (twin, cuDNN free)", "resnet18 (graphed, 2 lanes)"}
    from poisoncert.training import graphed  # the case's lanes were set for it alone

    assert graphed.lanes_for(torch.device("cpu")) == 1 and graphed.CUDA_CHANNELS_LAST
    with bench.graphed_settings(5, False):
        assert graphed.lanes_for(torch.device("cpu")) == 5 and not graphed.CUDA_CHANNELS_LAST
    assert graphed.lanes_for(torch.device("cpu")) == 1 and graphed.CUDA_CHANNELS_LAST
    # the sub-dataset rows' arithmetic per draw is U / B of the draws'
    per = {r["model"]: r["gflop_per_image"] for r in report["throughput"]}
    assert per["lenet5, sub-dataset rows 4"] == pytest.approx(per["lenet5"] * 4 / 8)
    assert all(r["images_per_s"] > 0 and 0 < r["fraction_of_matmul"] for r in
               report["throughput"])
    (e2e,) = report["end_to_end"]
    assert e2e["group_size"] == 8 and e2e["total_s"] > 0 and "0" in e2e["certified_accuracy"]
    assert e2e["subset_rows"] == 40  # ns = 40 below batches of 48: the run picked it
    both = bench.main(["--device", "cpu", "--quick", "--no-throughput", "--e2e", "digits_cnn",
                       "--e2e-paths", "fast,bmm"])["end_to_end"]
    assert [r["run"].rsplit(", ", 1)[1] for r in both] == ["path fast", "path bmm"]
    assert all(r["total_s"] > 0 for r in both)
    some = bench.main(["--device", "cpu", "--quick", "--e2e", "none", "--only",
                       "warps (cmajor), resnet18 (vmap)"])["throughput"]
    assert [r["model"] for r in some] == ["cnn_small + warps (cmajor)", "resnet18 (vmap)"]
    # a case that fails (out of memory on a device) is a row saying so; the others still run
    real = bench.throughput

    def oom_for_vmap(case, G, dtype, device):
        if case.path == "vmap":
            raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB\nmore")
        return real(case, G, dtype, device)

    bench.throughput = oom_for_vmap
    try:
        some = bench.main(["--device", "cpu", "--quick", "--e2e", "none", "--only",
                           "resnet18"])["throughput"]
    finally:
        bench.throughput = real
    assert [(r["model"], "failed" in r) for r in some] == [
        ("resnet18 (twin)", False), ("resnet18 (vmap)", True), ("resnet18 (cmajor)", False),
        ("resnet18 (twin, cuDNN free)", False), ("resnet18 (graphed, 2 lanes)", False)]
    assert some[1]["failed"] == "RuntimeError: CUDA out of memory. Tried to allocate 9.00 GiB"
    assert "| resnet18 (vmap) | 2 | float32 | failed: RuntimeError" in capsys.readouterr().out
    # a mistyped --only is refused before anything runs (it printed an empty table and exited
    # 0: a lease's step lost); a string matching nothing beside one that matches is fine
    with pytest.raises(SystemExit) as exc:
        bench.main(["--device", "cpu", "--quick", "--e2e", "none", "--only", "resnet81"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and err.split(":", 1)[1].startswith(
        " error: --only: no throughput case's name contains any of ['resnet81']")
    some = bench.main(["--device", "cpu", "--quick", "--e2e", "none", "--only",
                       "resnet81,resnet18 (vmap)"])["throughput"]
    assert [r["model"] for r in some] == ["resnet18 (vmap)"]


def _load_benchmark(name):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # its dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[name]
    return mod


def test_the_gpu_session_script_runs_dry_on_the_cpu(tmp_path):
    """``DRY=1 bash benchmarks/gpu_session.sh``: every step but the CUDA tests (the profile's
    LeNet-5 case alone), on the CPU with the tools' tiny settings, exits 0 within its limit
    (``LIMIT_SCALE``: in a dry run 4 times the GPU's, which a busy CPU exceeded), writes at
    most 8 files (what one device call brings back) and ends with the summary table:
    a broken flag or quoting in the script is caught here, not on a lease."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    steps = "probe_layouts e2e_mnist17 throughput inference profile e2e_mnist_ns30"
    env = {**os.environ, "DRY": "1", "OUT": str(tmp_path / "out"),
           "JSON": str(tmp_path / "json"), "BUDGET": "2400", "STEPS": steps,
           "NS30_GROUPS": "auto,4",
           # the profile step's wiring with one case: its ResNet-18 cases took 40 s on the
           # CPU (test_the_gpu_session_tools_run_on_the_cpu profiles the graphed one)
           "PROFILE_ONLY": "lenet5",
           # the script's python3: this interpreter's (the first python3 on PATH may have no
           # torch: the test failed when run with a virtual environment's python not on PATH)
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=2400)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    for name in steps.split():
        assert f"| {name} | rc 0 |" in summary, summary
    assert "| cnn_small + warps (cmajor) | 2 | float32 |" in summary
    assert "| resnet18 (cmajor) | 2 | float32 |" in summary
    assert "| resnet18 (twin) | 2 | float32 |" in summary
    assert "| resnet18 (twin, cuDNN free) | 2 | float32 |" in summary
    assert "| resnet18 (graphed, 2 lanes) | 3 | float32 |" in summary
    assert "| cnn_small | cmajor | 4 | float32 |" in summary
    assert "| resnet18 | cmajor | 2 | float32 |" in summary  # predicting, CIFAR's model
    assert "path bmm |" in summary and "improved learner's path: " in summary
    # the improved learner's run once per group size asked for, the size the run used shown
    assert re.search(r"\| digits, T = 8, cnn_small \(quick\), float32, path \w+, group 4 \| 4 \|",
                     summary), summary
    assert re.search(r"path \w+, group auto \| 8 \|", summary), summary
    assert len(list((tmp_path / "out").iterdir())) <= 8


@pytest.mark.parametrize("args, env, words", [
    (["--help"], {}, None),
    (["--steps", "throughput"], {}, "takes no arguments, got '--steps'"),
    ([], {"STEPS": "throughput bogus"}, "STEPS: unknown step 'bogus'"),
    ([], {"CUDA_VISIBLE_DEVICES": ""}, "gpu_session.sh: "),  # no GPU (or no torch) here
])
def test_the_gpu_session_script_refuses_what_it_cannot_run_in_one_line(tmp_path, args, env,
                                                                      words):
    """``--help`` prints the settings and runs nothing; an argument, an unknown step or a
    machine without CUDA (not ``DRY``) is one line on stderr, exit 2, before anything is
    written (the script used to ignore them and run every step, each failing)."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(tmp_path / "out"), "JSON": str(tmp_path / "json"), **env}
    env.pop("DRY", None)
    run = subprocess.run(["bash", "benchmarks/gpu_session.sh", *args], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    if words is None:
        assert run.returncode == 0 and "STEPS picks steps" in run.stdout, run.stderr
    else:
        assert run.returncode == 2, run.stdout[-2000:]
        assert len(run.stderr.splitlines()) == 1 and words in run.stderr, run.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "json").exists()


@pytest.mark.parametrize("args, words", [
    (["--e2e", "bogus"], "--e2e: unknown run 'bogus'"),
    (["--e2e", "digits_cnn", "--e2e-groups", "auto,x"], "--e2e-groups: 'auto' or ints"),
    (["--device", "gpu0"], "--device: 'cpu', 'cuda' or 'cuda:K'; got 'gpu0'"),
])
def test_bench_gpu_refuses_a_bad_option_before_it_measures(capsys, args, words):
    """An unknown end-to-end run or group size is refused before the matmul rate and the
    throughput table (minutes of a lease), not after them."""
    bench = _load_benchmark("bench_gpu")
    with pytest.raises(SystemExit) as e:
        bench.main(["--device", "cpu", "--quick", "--only", "lenet5", *args])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert words in out.err and "matmul" not in out.out, out


def test_the_gpu_session_tools_run_on_the_cpu(capsys):
    """What ``gpu_session.sh`` runs besides ``bench_gpu.py``, in tiny settings on the CPU: the
    step profile, the layout probe (whose three formulations are checked equal in float64,
    and a wrong one is caught) and the path pick."""
    prof = _load_benchmark("profile_gpu")
    rows = prof.main(["--device", "cpu", "--quick", "--only", "lenet5"])
    assert [r["case"] for r in rows] == ["lenet5 rows 4"] and rows[0]["wall_ms_per_step"] > 0
    # the difference of two wall times of a few tiny steps: any sign under load (CI ran it at
    # -0.38 ms with another test suite on the other core), so only its being a number is tested
    assert np.isfinite(rows[0]["steady_ms_per_step"])
    rows = prof.main(["--device", "cpu", "--quick", "--only", "graphed"])
    assert [r["case"] for r in rows] == ["resnet18, graphed"] and rows[0]["wall_ms_per_step"] > 0
    # kernels per step: the longer profiled call less the 1-step one, per further step
    table = prof.per_step_kernels({"a": 0.001, "b": 0.002}, {"a": 0.006, "b": 0.022, "c": 0.01},
                                  0.007)
    assert table.splitlines()[2:] == ["  | b | 4.000 | 57% |", "  | c | 2.000 | 29% |",
                                      "  | a | 1.000 | 14% |"]
    # the cuDNN diagnostic frees cuDNN inside the engine's precision and restores it all
    bench = _load_benchmark("bench_gpu")
    from poisoncert.training import engine

    cudnn, keep = torch.backends.cudnn, engine.precision
    before = cudnn.benchmark, cudnn.deterministic
    seen = []
    with bench.free_cudnn(True):
        assert engine.precision is not keep
        with engine.precision(TrainConfig(), torch.device("cpu")):
            seen.append((cudnn.benchmark, cudnn.deterministic))
        seen.append((cudnn.benchmark, cudnn.deterministic))
    assert seen == [(True, False), before] and engine.precision is keep
    with bench.free_cudnn(False):
        assert engine.precision is keep
    probe = _load_benchmark("probe_conv_layouts")
    probe.main(["--device", "cpu", "--quick", "--repeats", "1"])
    assert "| lenet5 conv1 |" in capsys.readouterr().out
    right = probe.VARIANTS["classifier-major"]
    probe.VARIANTS["classifier-major"] = lambda x, w, b, G, pad: right(x, w.flip(-1), b, G, pad)
    try:
        with pytest.raises(AssertionError, match="classifier-major"):
            probe.check("cpu")
    finally:
        probe.VARIANTS["classifier-major"] = right
    pick = _load_benchmark("gpu_pick_path").pick
    row = lambda m, g, r: {"model": m, "group": g, "dtype": "float32",  # noqa: E731
                           "images_per_s": r}
    three = lambda t, b, c, g=256: [row("cnn_small + warps", g, t),  # noqa: E731
                                    row("cnn_small + warps (bmm)", g, b),
                                    row("cnn_small + warps (cmajor)", g, c)]
    assert pick({"throughput": three(1.0, 2.0, 1.5)}) == "bmm"
    assert pick({"throughput": three(3.0, 2.0, 1.5)}) == "twin"
    assert pick({"throughput": three(1.0, 2.0, 2.5)}) == "cmajor"
    # compared at the largest group all three measured, whatever the others' rows say
    assert pick({"throughput": three(1.0, 2.0, 2.5) + three(9.0, 1.0, 1.0, g=8)[:1] +
                 [row("cnn_small + warps (bmm)", 1024, 99.0)]}) == "cmajor"
    assert pick({"throughput": [row("cnn_small + warps", 256, 3.0)]}) == "fast"
    # a case that failed (out of memory) has no rate: the paths that measured one compete
    failed = {"model": "cnn_small + warps (cmajor)", "group": 256, "dtype": "float32",
              "failed": "OutOfMemoryError: CUDA out of memory"}
    assert pick({"throughput": three(1.0, 2.0, 2.5)[:2] + [failed]}) == "fast"
    assert pick({"throughput": three(1.0, 2.0, 2.5, g=8) + three(1.0, 2.0, 2.5)[:2]
                 + [failed]}) == "cmajor"


def test_draw_blocks_prefetched_by_threads_are_the_serial_ones():
    """On CUDA the next block of draws is prepared by threads while the device trains: the
    same arrays, in the same order, as the one-thread CPU path (forced here on the CPU)."""
    from poisoncert.training.loops import STEP_BLOCK, DrawBlocks

    cfg = TrainConfig(steps=2 * STEP_BLOCK + 13, batch_size=4, augment=True, rotation=5.0,
                      elastic=0.7)

    def blocks(threads):
        draws = [sample_minibatches(np.arange(6) % 3, cfg, s, image_shape=(1, 12, 12),
                                    lazy_fields=True) for s in range(5)]
        b = DrawBlocks(draws, [d.positions for d in draws], 2, 2, cfg.steps,
                       torch.device("cpu"))
        b.threads = threads
        return list(b)

    serial, threaded = blocks(1), blocks(4)
    assert [(a, b) for a, b, _ in serial] == [(0, STEP_BLOCK), (STEP_BLOCK, 2 * STEP_BLOCK),
                                              (2 * STEP_BLOCK, cfg.steps)]
    for (_, _, x), (_, _, z) in zip(serial, threaded, strict=True):
        assert x.keys() == z.keys() == {"rows", "warps", "fields"}
        assert all(torch.equal(x[k], z[k]) for k in x)
    assert serial[0][2]["fields"].shape == (STEP_BLOCK, 4, 7, 2, 3, 3)  # (n, B, G, 2, gh, gw)
    # the grids are each classifier's take() stacked on the axis, the padding copies of the
    # last (how they were built before they were drawn in place), for both axes
    for axis in (1, 2):
        draws = [sample_minibatches(np.arange(6) % 3, cfg, s, image_shape=(1, 12, 12),
                                    lazy_fields=True) for s in range(5)]
        streams = [sample_minibatches(np.arange(6) % 3, cfg, s, image_shape=(1, 12, 12),
                                      lazy_fields=True).field_stream for s in range(5)]
        blk = DrawBlocks(draws, [d.positions for d in draws], 2, axis, cfg.steps,
                         torch.device("cpu"))
        for a in (0, STEP_BLOCK):
            grids = [st.take(STEP_BLOCK) for st in streams]
            want = np.stack(grids + [grids[-1]] * 2, axis=axis)
            got = blk.host(a, a + STEP_BLOCK)["fields"]
            assert got.shape == want.shape and got.view(np.uint32).tobytes() == want.view(
                np.uint32).tobytes()


def test_draws_made_by_host_threads_train_the_same_bits(monkeypatch):
    """On CUDA each group's draws are made by threads (``loops.host_threads``); forced on
    the CPU here, the trained weights and predictions are the one-thread ones, bit for bit,
    with warps and elastic grids (whose streams the threads also draw into one array)."""
    from poisoncert.training import engine, train_predict_with_weights
    from poisoncert.training import loops as loops_module

    rng = np.random.default_rng(3)
    x = rng.random((40, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 3, 40)
    subs = [rng.integers(0, 40, 9) for _ in range(6)]
    cfg = TrainConfig(model="cnn_small", steps=loops_module.STEP_BLOCK + 3, batch_size=5,
                      group_size=4, augment=True, rotation=8.0, elastic=0.7, max_shift=2)
    run = dict(n_classes=3, device="cpu")
    P1, W1 = train_predict_with_weights(x, y, subs, list(range(6)), x[:7], cfg, **run)
    used = []
    monkeypatch.setattr(engine, "host_threads", lambda d: used.append("draws") or 3)
    monkeypatch.setattr(loops_module, "host_threads", lambda d: used.append("blocks") or 3)
    P3, W3 = train_predict_with_weights(x, y, subs, list(range(6)), x[:7], cfg, **run)
    assert "draws" in used and "blocks" in used
    np.testing.assert_array_equal(P1, P3)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(W1, W3, strict=True) for k in a)
    assert loops_module.map_threads(lambda i: i * i, range(9), 4) == [i * i for i in range(9)]


# --------------------------------------------------------------------------------------------
# On a CUDA device (skipped without one)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("model", ["lenet5", "cnn_small", "resnet18", "lenet5@twin",
                                   "cnn_small@twin", "resnet18@vmap", "lenet5@cmajor",
                                   "cnn_small@cmajor", "resnet18@cmajor", "lenet5@graphed",
                                   "resnet18@graphed"])
@pytest.mark.parametrize("dtype", ["float32", "tf32", "bfloat16"])
def test_cuda_same_bits_whatever_the_chunking_and_predict_agrees(model, dtype):
    from poisoncert.training import predict, train_predict_with_weights

    model, _, path = model.partition("@")
    path = path or "fast"
    rng = np.random.default_rng(0)
    shape = (3, 16, 16) if model == "resnet18" else (1, 28, 28)
    x = rng.random((60, *shape), dtype=np.float32)
    y = rng.integers(0, 3, 60)
    xt = x[:20]
    subs = [rng.integers(0, 60, 15) for _ in range(7)]
    seeds = list(range(7))
    cfg = TrainConfig(model=model, steps=4, batch_size=8, group_size=4, dtype=dtype,
                      augment=True, rotation=10.0, elastic=1.0)
    run = dict(n_classes=3, device="cuda", path=path)
    P, W = train_predict_with_weights(x, y, subs, seeds, xt, cfg, **run)
    parts = [train_predict_with_weights(x, y, subs[a:b], seeds[a:b], xt, cfg, **run)
             for a, b in ((0, 3), (3, 7))]
    np.testing.assert_array_equal(np.concatenate([p for p, _ in parts]), P)
    for w, v in zip([w for _, ws in parts for w in ws], W, strict=True):
        assert all(torch.equal(w[k], v[k]) for k in v)
    got = predict(cfg, W, xt, input_shape=shape, **run)
    np.testing.assert_array_equal(got, P)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_graphed_lanes_change_nothing(dtype, monkeypatch):
    """On CUDA a classifier's bits on the graphed path do not depend on the lanes beside it
    (1, 3 or 4 lanes: other streams, other waves)."""
    from poisoncert.training import graphed, train_predict_with_weights

    rng = np.random.default_rng(0)
    x = rng.random((60, 3, 16, 16), dtype=np.float32)
    y = rng.integers(0, 3, 60)
    subs = [rng.integers(0, 60, 15) for _ in range(7)]
    cfg = TrainConfig(model="resnet18", steps=6, batch_size=8, group_size=8, dtype=dtype,
                      optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                      augment=True, max_shift=2)
    got = {}
    for lanes in (1, 3, 4):
        monkeypatch.setattr(graphed, "lanes_for", lambda device, k=lanes: k)
        got[lanes] = train_predict_with_weights(x, y, subs, list(range(7)), x[:20], cfg,
                                                n_classes=3, device="cuda", path="graphed")
    for lanes in (3, 4):
        np.testing.assert_array_equal(got[lanes][0], got[1][0])
        for a, b in zip(got[lanes][1], got[1][1], strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("model, dtype", [("resnet18", "float64"), ("lenet5", "float32")])
def test_cuda_graphed_replays_train_what_the_reference_loop_trains(model, dtype):
    """On CUDA the replayed graphs (channels-last) train what the reference loop's eager
    steps train, to rounding: ResNet-18 in float64 (its BatchNorm on batches of 8 turns float32
    rounding into differences of 10% within 6 steps, as on the CPU: measured), LeNet-5 in
    float32; the same predictions."""
    from poisoncert.training import train_predict_with_weights

    rng = np.random.default_rng(0)
    shape = (3, 16, 16) if model == "resnet18" else (1, 28, 28)
    x = rng.random((60, *shape), dtype=np.float32)
    y = rng.integers(0, 3, 60)
    subs = [rng.integers(0, 60, 15) for _ in range(7)]
    cfg = TrainConfig(model=model, steps=6, batch_size=8, group_size=8, dtype=dtype,
                      optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
                      augment=True, max_shift=2)
    run = dict(n_classes=3, device="cuda")
    P, W = train_predict_with_weights(x, y, subs, list(range(7)), x[:20], cfg,
                                      path="reference", **run)
    Q, V = train_predict_with_weights(x, y, subs, list(range(7)), x[:20], cfg,
                                      path="graphed", **run)
    worst = max(float((a[k].double() - b[k].double()).abs().max()
                      / (1.0 + float(b[k].double().abs().max())))
                for a, b in zip(V, W, strict=True) for k in b if b[k].is_floating_point())
    print(f"graphed against reference, {model} {dtype}: largest difference {worst:.3g} of "
          "scale")
    # float64 through BatchNorm: 1.3e-10 on the CPU (test_training); float32 without it:
    # a few ulps per step. A wrong step moves weights by some 1e-3 of their scale.
    assert worst < (1e-7 if dtype == "float64" else 1e-4), worst
    np.testing.assert_array_equal(Q, P)


_MKL_PROBE = """
import os, sys, torch
import poisoncert  # after torch's import, before its first matrix product
G = 4
def same_at_every_position(n, i, o):
    torch.manual_seed(0)
    h0, w0, g0 = torch.randn(n, i), torch.randn(i, o), torch.randn(n, o)
    got = []
    for pos in range(G):
        torch.manual_seed(7)
        h, w, g = torch.randn(G, n, i), torch.randn(G, i, o), torch.randn(G, n, o)
        h[pos], w[pos], g[pos] = h0, w0, g0
        w.requires_grad_(True)
        out = torch.baddbmm(torch.zeros(G, 1, o), h, w)
        (gw,) = torch.autograd.grad(out, w, g)
        got.append((out[pos], gw[pos]))
    return all(torch.equal(a, b) for r in got[1:] for a, b in zip(r, got[0]))
print(os.environ["MKL_CBWR"])
print(all(same_at_every_position(n, i, o) for n, i, o in ((13, 84, 10), (5, 128, 10),
                                                          (32, 13, 6), (32, 25, 10))))
"""


def test_importing_poisoncert_makes_batched_products_position_independent():
    """In a fresh process, ``import poisoncert`` (after torch's import) sets MKL's strict
    reproducibility mode, and a group's batched products then give every position the same
    bits (the shapes MKL rounded by alignment on the AMD EPYC development machine); a
    ``MKL_CBWR`` the environment sets is kept."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", _MKL_PROBE], capture_output=True, text=True,
                         check=True, env=env).stdout.split()
    assert out == ["AUTO,STRICT", "True"], out
    out = subprocess.run([sys.executable, "-c", _MKL_PROBE], capture_output=True, text=True,
                         check=True, env={**env, "MKL_CBWR": "COMPATIBLE"}).stdout.split()
    assert out[0] == "COMPATIBLE"


_HEAP_PROBE = """
import resource, sys, torch
from torch.nn import functional as F
from poisoncert.threads import keep_heap
from poisoncert.training import LeNet5
from poisoncert.training.fast import stack_models
if sys.argv[1] == "keep":
    print(int(keep_heap()))
else:
    print(1)
torch.set_num_threads(1)
torch.manual_seed(0)
net = stack_models([LeNet5(1, 10, 28) for _ in range(8)])
x, y = torch.rand(32, 8, 1, 28, 28), torch.randint(0, 10, (8 * 32,))
def step():  # a stacked LeNet-5 group step: megabytes of activations and gradients
    F.cross_entropy(net.forward_train(x).reshape(8 * 32, 10), y).backward()
    net.flat_grad()
    net.zero_grad()
for _ in range(20):
    step()
per_step = []  # page faults per step, in 7 blocks of 10 steps
for _ in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        step()
    per_step.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(sorted(per_step)[3])  # the median block
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_heap_reuses_freed_memory_without_page_faults():
    """After ``keep_heap`` a stacked LeNet-5 step reuses the memory the previous step freed:
    almost no page faults (the median of 7 blocks of 10 steps measured 0 in every process;
    without it 145-4,300 on the development machine, where glibc maps and unmaps the step's
    buffers). The median, not the mean: the machine's own memory reclaim (DAMON) now and then
    takes pages back from a process, 30-90 faults per step in one block (a mean of 20.0
    failed CI once)."""
    import subprocess

    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE, "keep"], capture_output=True,
                         text=True, check=True).stdout.split()
    if out[0] != "1":
        pytest.skip("not glibc: keep_heap is a no-op")
    assert float(out[1]) < 20, out


def test_the_cifar10_lease_script_splits_stages_and_runs_on_the_cpu(tmp_path, capsys,
                                                                    monkeypatch):
    """``benchmarks/gpu_cifar10.py``: the real archive's batch files split into three parts
    that each fit one device call (64 MiB), staged part by part, then the experiment's
    wiring (ResNet-18 on the ``cmajor`` path, two classifiers of two steps) on the CPU; a
    second ``run`` resumes the finished run (the same predictions) and a missing part is one
    clear line."""
    cifar = _load_benchmark("gpu_cifar10")
    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / (
        "cifar-10-binary.tar.gz")
    if not archive.is_file():
        pytest.skip("../shared/data/cifar10 is not beside the repository")
    parts = cifar.split(archive, tmp_path / "parts")
    sizes = [sum(f.stat().st_size for f in p.iterdir()) for p in parts]
    assert len(parts) == 3 and all(0 < s <= 64 * 2**20 for s in sizes)
    # each call carries a part and the checkout: a few MiB more of tracked files would break
    # the lease's plan (docs/benchmarks.md), so the checkout's growth fails here first
    checkout = cifar.checkout_bytes()
    if checkout is not None:
        assert max(sizes) + checkout <= 64 * 2**20, (max(sizes), checkout)
        assert checkout > 2**20  # README.md, src/ and tests/ at least: the files were counted
    stage = tmp_path / "stage"
    cifar.stage(parts[0], stage)
    with pytest.raises(SystemExit, match="data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, "
                                         "test_batch.bin not staged"):
        cifar.main(["run", "--data", str(stage), "--device", "cpu", "--quick"])
    for p in parts[1:]:
        cifar.stage(p, stage)
    argv = ["run", "--data", str(stage), "--run-dir", str(tmp_path / "run"), "--device", "cpu",
            "--quick", "--path", "cmajor", "--out", str(tmp_path / "out")]
    first = cifar.main(argv)
    preds = np.load(tmp_path / "run" / "predictions.npy")
    assert first["path"] == "cmajor" and preds.shape == (2, 8)
    assert set(first["certified_accuracy"]) == {"0", "5", "10", "15", "20", "25", "30"}
    assert json.loads((tmp_path / "out" / "cifar10.json").read_text()) == first
    again = cifar.main(argv)  # resumed: nothing left to train
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "predictions.npy"), preds)
    assert again["certified_accuracy"] == first["certified_accuracy"]
    assert "| CIFAR-10, ResNet-18, T = 2, 2 steps (quick) | cmajor | float32 |" in (
        capsys.readouterr().out)
    # the graphed loop, two lanes (--lanes sets graphed.CUDA_LANES, restored after the test;
    # on the CPU the lanes run eagerly): the reference loop's predictions, bit for bit
    from poisoncert.training import graphed

    monkeypatch.setattr(graphed, "CUDA_LANES", graphed.CUDA_LANES)
    base = argv[:argv.index("--run-dir")] + ["--device", "cpu", "--quick"]
    runs = {p: cifar.main(["run", *base[1:], "--run-dir", str(tmp_path / p), "--path", p,
                           *(["--lanes", "2"] if p == "graphed" else [])])
            for p in ("graphed", "reference")}
    assert graphed.CUDA_LANES == 2 and runs["graphed"]["path"] == "graphed"
    np.testing.assert_array_equal(np.load(tmp_path / "graphed" / "predictions.npy"),
                                  np.load(tmp_path / "reference" / "predictions.npy"))

    # a lease's time limit stops the run after its first chunk; the state packed into $OUT
    # resumes on a fresh machine (another run directory) to the uninterrupted run's bits
    one = ["--data", str(stage), "--device", "cpu", "--quick", "--group-size", "1",
           "--chunk-size", "1"]
    whole = cifar.main(["run", *one, "--run-dir", str(tmp_path / "whole")])
    bench = sys.modules["bench_gpu"]
    keep = bench._print_progress

    @contextlib.contextmanager
    def stopping(total, completed, label):
        calls = []
        with keep(total, completed, label) as advance:
            def stop_in_the_second(k):  # the first chunk is saved, the second is training
                if k:  # not the training's beginning, advance(0)
                    calls.append(k)
                if len(calls) == 2:
                    raise KeyboardInterrupt  # what timeout -s INT delivers
                advance(k)
            yield stop_in_the_second

    bench._print_progress = stopping
    try:
        stopped = cifar.main(["run", *one, "--run-dir", str(tmp_path / "lease1"), "--pack",
                              "--out", str(tmp_path / "out1")])
    finally:
        bench._print_progress = keep
    assert stopped["run"] == "stopped" and stopped["chunks"] == 1
    packed = tmp_path / "out1" / "cifar_run.tar.gz"
    assert 0 < packed.stat().st_size <= 16 * 2**20
    capsys.readouterr()
    resumed = cifar.main(["run", *one, "--run-dir", str(tmp_path / "lease2" / "run"), "--pack",
                          "--out", str(tmp_path / "out2"), "--resume-from", str(packed)])
    printed = capsys.readouterr().out
    assert "unpacked" in printed  # and only the second classifier trained
    assert re.findall(r"T=2: (\d)/2 classifiers", printed) == ["2"]
    np.testing.assert_array_equal(np.load(tmp_path / "lease2" / "run" / "predictions.npy"),
                                  np.load(tmp_path / "whole" / "predictions.npy"))
    assert resumed["certified_accuracy"] == whole["certified_accuracy"]
    assert len(resumed["train_s_every_call"]) == 2 and (tmp_path / "out2" / "cifar_run.tar.gz"
                                                        ).is_file()
    # the finished run's state into runs/ for experiments/report.py: timing.json holds both
    # calls (the stopped one's chunk and the resuming one's); a stopped state is refused
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit, match="not finished .1 chunk.s. trained"):
        cifar.main(["import", str(packed), "--runs-dir", str(runs)])
    imported = cifar.main(["import", str(tmp_path / "out2" / "cifar_run.tar.gz"),
                           "--runs-dir", str(runs)])
    assert imported == runs / "cifar10_with_replacement"
    assert sorted(p.name for p in runs.iterdir()) == ["cifar10_with_replacement"]
    timing = json.loads((imported / "timing.json").read_text())
    assert [(s["chunks_trained"], s["chunks_skipped"], s["finished"])
            for s in timing["sessions"]] == [(1, 0, False), (1, 1, True)]
    assert timing["train_s"] == pytest.approx(sum(resumed["train_s_every_call"]), abs=0.02)
    assert timing["certify_s"] == resumed["certify_s"]
    from poisoncert.runmanifest import device_name

    assert timing["devices"] == [device_name("cpu")] == [resumed["device"]]
    np.testing.assert_array_equal(np.load(imported / "predictions.npy"),
                                  np.load(tmp_path / "whole" / "predictions.npy"))
    with pytest.raises(SystemExit, match="exists"):
        cifar.main(["import", str(tmp_path / "out2" / "cifar_run.tar.gz"),
                    "--runs-dir", str(runs)])
    # a state packed before the record held the certify time: the lease's summary gives it
    legacy = tmp_path / "legacy.tar.gz"
    with tarfile.open(tmp_path / "out2" / "cifar_run.tar.gz") as src, \
            tarfile.open(legacy, "w:gz") as dst:
        for m in src.getmembers():
            f = src.extractfile(m)
            if m.name == "calls.json":
                data = json.dumps([{k: v for k, v in c.items()
                                    if k not in ("certify_s", "device")}
                                   for c in json.load(f)]).encode()
                m.size = len(data)
                f = io.BytesIO(data)
            dst.addfile(m, f)
    with pytest.raises(SystemExit, match="records no certify time .* --summary cifar10.json"):
        cifar.main(["import", str(legacy), "--runs-dir", str(tmp_path / "runs2")])
    (tmp_path / "s.json").write_text(json.dumps({"certify_s": 9.5}))
    with pytest.raises(SystemExit, match="names .*, but|--device-name 'Other'"):
        cifar.main(["import", str(tmp_path / "out2" / "cifar_run.tar.gz"), "--runs-dir",
                    str(tmp_path / "runs3"), "--device-name", "Other"])
    for bad, words in ((tmp_path / "s.json", "not a packed run state"),
                       (tmp_path / "nothing.tar.gz", "is not a file")):
        with pytest.raises(SystemExit, match=f"^import: .*{words}"):
            cifar.main(["import", str(bad), "--runs-dir", str(tmp_path / "runs3")])
    with pytest.raises(SystemExit, match="--summary .* is not the lease's cifar10.json"):
        cifar.main(["import", str(legacy), "--runs-dir", str(tmp_path / "runs3"),
                    "--summary", str(packed)])
    assert not (tmp_path / "runs3").exists() or not any((tmp_path / "runs3").iterdir())
    got = cifar.main(["import", str(legacy), "--runs-dir", str(tmp_path / "runs2"),
                      "--summary", str(tmp_path / "s.json"), "--device-name", "Some GPU"])
    legacy_timing = json.loads((got / "timing.json").read_text())
    assert legacy_timing["certify_s"] == 9.5 and legacy_timing["devices"] == ["Some GPU"]
    # a record from before calls counted chunks: its one call trained what the others did not
    old = [{"train_s": 3.0, "finished": False}, {"train_s": 2.0, "finished": True,
                                                 "chunks_trained": 2, "chunks_skipped": 5}]
    assert [s["chunks_trained"] for s in cifar.timing(old, 7, 0.1, "c")["sessions"]] == [5, 2]
    with pytest.raises(SystemExit, match="2 calls of the run do not say"):
        cifar.timing([{"train_s": 1.0, "finished": False}] * 2, 7, 0.1, "c")
    # the report's CIFAR-10 section from that run alone, in place of the section's old text
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    try:
        import report
        import run as runner
    finally:
        sys.path.pop(0)
    # run.py's own cifar10_gpu run refuses the imported one (it names the lease's data
    # folder): one line
    with pytest.raises(SystemExit, match="^run.py: cifar10_with_replacement: .*another config"):
        runner.main(["cifar10_gpu", "--runs-dir", str(runs), "--only",
                     "cifar10_with_replacement"])
    md = tmp_path / "docs" / "results.md"
    md.parent.mkdir()
    walls = ("## Wall times of all runs\n\nw\n\n| run | T |\n|---|---|\n"
             "| mnist17_x | 1000 |\n| cifar10_with_replacement | 1 | 2 | 0.0% | 0.0% | 9 |\n")
    md.write_text("# R\n\n## Summary\n\n- MNIST 1/7: z.\n\n## Case 3\n\na\n\n## CIFAR-10\n\nold\n\n"
                  "## DPA baseline on MNIST\n\nb\n\n" + walls)
    report.main(["--runs-dir", str(runs), "--out", str(md), "--only", "cifar"])
    text = md.read_text()
    assert "\nold\n" not in text
    assert text.startswith("# R\n\n## Summary\n\n- MNIST 1/7: z.\n- CIFAR-10, ResNet-18, ns = "
                           "1000, T = 500 (the paper's scale, one GPU): with repl. (2): vote")
    assert "\n\n## Case 3\n\na\n\n## CIFAR-10 (Figure 4" in text
    assert "\n## DPA baseline on MNIST\n\nb\n\n## Wall times of all runs\n" in text
    # the wall-time table's row of the regenerated run is the run's (it kept the earlier
    # run's figures, so the report gave one run two base accuracies); other rows are kept
    wall = text[text.index("## Wall times of all runs"):]
    want = report.Report(report.load_runs(runs), md.parent / "figures",
                         md.parent).wall_rows({"cifar10_with_replacement"})
    assert len(want) == 1 and want[0][:3] == ["cifar10_with_replacement", 2, 50000]
    assert "| cifar10_with_replacement | 1 | 2 |" not in wall
    assert wall.endswith("| mnist17_x | 1000 |\n| "
                         + " | ".join(str(c) for c in want[0]) + " |\n")
    rows = [line for line in text.splitlines()
            if line.startswith("| cifar10_with_replacement | with repl. (2) |")]
    assert [r.split(" | ")[2] for r in rows] == [
        "bonferroni (the config's)", "bonferroni_upper", "auto (pairwise)"]
    # regenerated from a runs folder that lacks a run the section shows: refused, unchanged
    (tmp_path / "none").mkdir()
    with pytest.raises(SystemExit, match="would drop cifar10_with_replacement, which the "
                                         "report shows"):
        report.main(["--runs-dir", str(tmp_path / "none"), "--out", str(md), "--only", "cifar"])
    assert md.read_text() == text
    # ... or, with --keep-absent, keeps what the report shows of it and says so: the same rows,
    # figure, Summary entry and revision
    figure = md.parent / "figures" / "fig4_cifar10_with_replacement.png"
    assert figure.stat().st_size > 0
    with pytest.raises(SystemExit, match="^report: --keep-absent .* without --only$"):
        report.main(["--runs-dir", str(runs), "--out", str(md), "--keep-absent"])
    report.main(["--runs-dir", str(tmp_path / "none"), "--out", str(md), "--only", "cifar",
                 "--keep-absent"])
    kept = md.read_text()
    section = report.section_text(kept, "## CIFAR-10")
    assert [line for line in section.splitlines() if line.startswith("| cifar10_with_")] == [
        line for line in report.section_text(text, "## CIFAR-10").splitlines()
        if line.startswith("| cifar10_with_")] and len(rows) == 3
    assert "Kept from the report before this one, as it gave them: the rows, figure and " \
           "Summary entry of cifar10_with_replacement (`--keep-absent`" in section
    assert "![fig4_cifar10_with_replacement.png](figures/fig4_cifar10_with_replacement.png)" \
        in section
    bullet = [line for line in text.splitlines() if line.startswith("- CIFAR-10")]
    assert [line for line in kept.splitlines() if line.startswith("- CIFAR-10")] == bullet
    rev = re.search(r"revision \(`([0-9a-f]{12})` for cifar10_with_replacement\)",
                    report.section_text(text, "## CIFAR-10"))
    assert rev and f"(`{rev.group(1)}` for cifar10_with_replacement)" in section
    assert "Not run (yet) in this report: cifar10_without_replacement, cifar10_binomial;" \
        in section and kept.count("| cifar10_with_replacement |") == 4  # 3 + the wall row
    # the revision is taken before the section's figures are written: they are not a change
    # to the code (a fresh figure made every partial regeneration say "dirty tree")
    shutil.rmtree(md.parent / "figures")
    with monkeypatch.context() as m:
        m.setattr(report, "git_revision", lambda root: {
            "commit": "f" * 40, "dirty": any((md.parent / "figures").glob("*"))})
        report.main(["--runs-dir", str(runs), "--out", str(md), "--only", "cifar"])
    assert "at code revision `ffffffffffff` (`python experiments/report.py --only cifar`)" \
        in md.read_text()
    with pytest.raises(SystemExit, match="--out .* is not a file"):
        report.main(["--runs-dir", str(runs), "--out", str(tmp_path / "no.md"), "--only",
                     "cifar"])
    assert "Not run (yet) in this report: cifar10_without_replacement, cifar10_binomial" in text
    rep = report.Report(report.load_runs(runs), md.parent / "figures", md.parent)
    rep.cifar()
    assert re.search(r"- CIFAR-10, ResNet-18, ns = 1000, T = 500 \(the paper's scale, one GPU\): "
                     r"with repl. \(2\): vote accuracy \d+\.\d%, certified accuracy at rho = 0 "
                     r"/ 10 .* \(bonferroni\), .* \(auto \(pairwise\)\); wall \d+ s",
                     rep.summary_text())
    # a state resumed under another scheme: one line, and the unpacked run is not left behind
    with pytest.raises(SystemExit, match="^run: .*another config.*same --scheme"):
        cifar.main(["run", *one, "--run-dir", str(tmp_path / "wrong"), "--scheme", "binomial",
                    "--resume-from", str(packed)])
    assert not (tmp_path / "wrong").exists()
    # a run directory that exists (a warm machine's own run) is resumed, the file ignored
    cifar.main(["run", *one, "--run-dir", str(tmp_path / "lease2" / "run"),
                "--resume-from", str(packed)])
    assert "exists: resuming it" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--resume-from .* is not a file"):
        cifar.main(["run", *one, "--run-dir", str(tmp_path / "x"), "--resume-from",
                    str(tmp_path / "nothing.tar.gz")])
    # another of the paper's schemes: its own run directory, summary and packed state
    monkeypatch.setattr(cifar, "STAGE", tmp_path / "stage_default")
    other = cifar.main(["run", *one[:-4], "--run-dir", "", "--scheme", "binomial",
                        "--out", str(tmp_path / "out4"), "--pack"])
    assert other["run"].endswith(", binomial")
    assert sorted(p.name for p in (tmp_path / "out4").iterdir()) == [
        "cifar10_binomial.json", "cifar10_binomial_manifest.json",
        "cifar_run_binomial.tar.gz"]
    with tarfile.open(tmp_path / "out4" / "cifar_run_binomial.tar.gz") as tar:
        config = tar.extractfile("run/config.yaml").read().decode()
    assert "scheme: binomial" in config
    assert (tmp_path / "stage_default" / "run_binomial" / "config.yaml").is_file()
    # stopped before the run existed: nothing to pack; a file without a run is refused
    assert cifar.pack(tmp_path / "never", tmp_path / "out3") is None
    with tarfile.open(tmp_path / "empty.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "whole" / "seeds.npy", arcname="run/seeds.npy")
    with pytest.raises(SystemExit, match="holds no run"):
        cifar.unpack(tmp_path / "empty.tar.gz", tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_the_cifar10_lease_run_refuses_a_bad_option_in_one_line_and_packs_despite_a_late_int(
        tmp_path, monkeypatch):
    """``gpu_cifar10.py run``: an option the config refuses (``--dtype bfloat16`` on the CPU)
    is one line naming it, before anything is trained (it was a ConfigError's traceback);
    and the time limit's INT arriving once every chunk is trained (while certifying) no
    longer ends the call with nothing packed: certifying and packing finish, and the
    process's SIGINT handler is restored after."""
    import signal

    cifar = _load_benchmark("gpu_cifar10")
    archive = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10" / (
        "cifar-10-binary.tar.gz")
    if not archive.is_file():
        pytest.skip("../shared/data/cifar10 is not beside the repository")
    stage = tmp_path / "stage"
    for part in cifar.split(archive, tmp_path / "parts"):
        cifar.stage(part, stage)
    base = ["run", "--data", str(stage), "--device", "cpu", "--quick", "--scheme", "binomial"]
    with pytest.raises(SystemExit, match=r"^run: The 'training.dtype' parameter .* Got "
                                         r"'bfloat16' instead\.$"):
        cifar.main([*base, "--run-dir", str(tmp_path / "bad"), "--dtype", "bfloat16"])
    assert not (tmp_path / "bad").exists()

    import poisoncert.experiment as experiment

    real = experiment.certify_run

    def interrupted_certify(*a, **k):  # what timeout -s INT delivers, after the training
        signal.raise_signal(signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(experiment, "certify_run", interrupted_certify)
    before = signal.getsignal(signal.SIGINT)
    try:
        got = cifar.main([*base, "--run-dir", str(tmp_path / "run"), "--pack", "--out",
                          str(tmp_path / "out")])
    except KeyboardInterrupt:
        pytest.fail("the INT during certifying ended the call: nothing packed")
    assert signal.getsignal(signal.SIGINT) is before
    assert got["run"].endswith(", binomial") and "certified_accuracy" in got
    packed = tmp_path / "out" / "cifar_run_binomial.tar.gz"
    assert packed.is_file() and (tmp_path / "out" / "cifar10_binomial.json").is_file()
    imported = cifar.main(["import", str(packed), "--runs-dir", str(tmp_path / "runs")])
    timing = json.loads((imported / "timing.json").read_text())
    assert [s["finished"] for s in timing["sessions"]] == [True]


def test_the_profile_runs_the_improved_learners_case_at_a_group_size_asked_for(tmp_path,
                                                                                capsys):
    """Session 28's plan: profile the improved learner as its fastest run trained (``cmajor``,
    bfloat16, G = 1000). ``profile_gpu.py`` had no group size but each case's own (250) and
    ``gpu_session.sh`` passed it no precision, and in ``--quick`` that case's filter named
    no case, so a dry run printed an empty table and passed. Now ``--group`` (and
    PROFILE_GROUP, PROFILE_DTYPES) reach the case, the quick cases carry the device's names,
    and a filter, precision or end-to-end run that names nothing is one line, exit 2,
    before anything runs. The script run with some of its steps exits 0 (its summary's grep
    of the steps that did not run exited 2, and the script with it)."""
    import os
    import subprocess

    prof = _load_benchmark("profile_gpu")
    rows = prof.main(["--device", "cpu", "--quick", "--only", "cnn_small + warps, cmajor",
                      "--dtypes", "bfloat16", "--group", "3"])
    # the CPU trains float32 (bfloat16 is CUDA's)
    assert [(r["case"], r["G"], r["dtype"]) for r in rows] == [
        ("cnn_small + warps, cmajor", 3, "float32")]
    capsys.readouterr()
    for args, words in ((["--only", "cnn_small + warps, cmajr"],
                         "--only: no case's name contains 'cnn_small + warps, cmajr'"),
                        (["--dtypes", "bf16"], "--dtypes: comma-separated float32, tf32, "
                                               "bfloat16; got 'bf16'"),
                        (["--group", "0"], "--group: must be an int >= 1; got 0"),
                        (["--e2e", "mnist_ns30"], "--e2e: unknown run 'mnist_ns30'")):
        with pytest.raises(SystemExit) as e:
            prof.main(["--device", "cpu", "--quick", *args])
        out = capsys.readouterr()
        assert e.value.code == 2 and words in out.err and "##" not in out.out, out
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DRY": "1", "OUT": str(tmp_path / "out"),
           "JSON": str(tmp_path / "json"), "STEPS": "profile",
           "PROFILE_ONLY": "cnn_small + warps, cmajor", "PROFILE_DTYPES": "bfloat16",
           "PROFILE_GROUP": "3",  # the script's python3: this interpreter's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run(["bash", "benchmarks/gpu_session.sh"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "| profile | rc 0 |" in summary
    assert "| cnn_small + warps, cmajor | 3 | float32 |" in summary, summary
