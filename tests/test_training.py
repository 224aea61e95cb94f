"""Tests of poisoncert.training: shapes, abstention, determinism, fast/reference agreement."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn import functional as F  # noqa: E402

from poisoncert.training import (  # noqa: E402
    LeNet5,
    TrainConfig,
    build_model,
    load_weights,
    sample_minibatches,
    save_weights,
    train_predict,
    train_predict_sklearn,
    train_predict_with_weights,
    warp_images,
    weights_from_bytes,
    weights_to_bytes,
)
from poisoncert.training.fast import fuse_avgpool, patches, stack_models  # noqa: E402
from poisoncert.training.minibatches import ImageBatcher as _Batcher  # noqa: E402
from poisoncert.training.optim import StackedOptimizer  # noqa: E402
from poisoncert.training.optim import make_optimizer as _make_optimizer  # noqa: E402
from poisoncert.training.optim import set_lr as _set_lr  # noqa: E402

# --------------------------------------------------------------------------------------------
# Tiny problems


def _images(n=120, n_test=20, c=1, hw=28, k=3, seed=0):
    """Random images whose class shows as a bright block (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n + n_test)
    x = rng.random((n + n_test, c, hw, hw), dtype=np.float32) * 0.3
    for j in range(k):
        x[y == j, :, 2 + 2 * j:6 + 2 * j, 8:20] += 1.0
    return x[:n], y[:n], x[n:], y[n:]


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return x[:1400], d.target[:1400], x[1400:], d.target[1400:]


def _subsets(n, T, size, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size) for _ in range(T)], list(range(1000, 1000 + T))


LENET = dict(model="lenet5", steps=3, batch_size=8, group_size=4, eval_batch_size=7, lr=3e-3,
             augment=True)


# --------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize("name, shape, batch", [
    ("lenet5", (1, 28, 28), 3),
    ("lenet5_avg", (1, 28, 28), 3),
    ("lenet5", (3, 32, 32), 2),
    ("cnn", (1, 28, 28), 3),
    ("cnn_small", (3, 32, 32), 2),
    ("cnn", (2, 9, 13), 2),
    ("mlp", (64,), 3),
    ("mlp", (1, 8, 8), 3),
    ("resnet18", (3, 32, 32), 2),
])
def test_every_model_builds_and_runs(name, shape, batch):
    model = build_model(name, shape, 7)
    with torch.no_grad():
        out = model.eval()(torch.zeros(batch, *shape))
    assert out.shape == (batch, 7)


def test_factory_model():
    def factory(shape, k):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), k))

    assert build_model(factory, (1, 8, 8), 4)(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    x, y, xt, _ = _images(n=40, n_test=5, hw=12)
    subs, seeds = _subsets(40, 3, 10)
    P = train_predict(x, y, subs, seeds, xt, TrainConfig(model=factory, steps=2, batch_size=4),
                      n_classes=3)
    assert P.shape == (3, 5)


def test_avgpool_fusion_identity():
    """avgpool2x2(conv5x5(x)) == one stride-2 6x6 convolution with the fused kernel."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 17, 16, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    want = F.avg_pool2d(F.conv2d(x, w, b, padding=2), 2)
    got = F.conv2d(x, fuse_avgpool(w), b, stride=2, padding=2)
    # each output sums n <= 3 * 36 + 4 terms in some order: |error| <= n eps sum|terms| for
    # each side (Higham's gamma_n), whatever order a processor's kernels take
    terms = F.avg_pool2d(F.conv2d(x.abs(), w.abs(), b.abs(), padding=2), 2)
    n = 3 * 36 + 4
    assert bool(torch.all((got - want).abs() <= 2 * n * torch.finfo(x.dtype).eps * terms))


# --------------------------------------------------------------------------------------------
# Output contract


def test_shapes_dtype_and_empty_subset_abstains():
    x, y, xt, _ = _digits()
    subs, seeds = _subsets(len(x), 5, 30)
    subs[2] = np.array([], dtype=np.int64)
    cfg = TrainConfig(model="mlp", steps=10, batch_size=16, group_size=2)
    done = []
    P = train_predict(x, y, subs, seeds, xt, cfg, n_classes=10, progress=done.append)
    assert P.shape == (5, len(xt)) and P.dtype == np.int16
    assert (P[2] == -1).all()
    assert ((P[[0, 1, 3, 4]] >= 0) & (P[[0, 1, 3, 4]] < 10)).all()
    assert sum(done) == 5
    all_empty = train_predict(x, y, [np.array([], int)] * 2, [1, 2], xt, cfg, n_classes=10)
    assert (all_empty == -1).all() and all_empty.shape == (2, len(xt))


def test_accepts_torch_tensors_and_learns():
    x, y, xt, yt = _digits()
    subs, seeds = _subsets(len(x), 4, 200)
    cfg = TrainConfig(model="mlp", steps=60, batch_size=32, optimizer="sgd", lr=0.1)
    P = train_predict(torch.from_numpy(x), torch.from_numpy(y), subs, seeds,
                      torch.from_numpy(xt), cfg, n_classes=10)
    np.testing.assert_array_equal(P, train_predict(x, y, subs, seeds, xt, cfg, n_classes=10))
    assert (P == yt).mean() > 0.8


# --------------------------------------------------------------------------------------------
# Sampling


def test_balanced_sampling_balances():
    labels = np.array([0] * 27 + [1] * 3 + [2] * 10)
    cfg = TrainConfig(steps=250, batch_size=16, balance=True)
    pos = sample_minibatches(labels, cfg, seed=7).positions
    assert pos.shape == (250, 16)
    counts = np.bincount(labels[pos.ravel()], minlength=3)
    n = pos.size
    assert np.all(np.abs(counts - n / 3) < 4 * np.sqrt(n * (1 / 3) * (2 / 3)))
    # within a class, samples are uniform
    per_sample = np.bincount(pos.ravel(), minlength=len(labels))[:27]
    assert per_sample.min() > 0
    unbalanced = sample_minibatches(labels, TrainConfig(steps=250, batch_size=16,
                                                        balance=False), seed=7).positions
    frac = np.bincount(labels[unbalanced.ravel()], minlength=3) / n
    # 4000 draws: a class fraction's standard deviation is at most 0.008; 0.03 is 4 of them
    np.testing.assert_allclose(frac, [27 / 40, 3 / 40, 10 / 40], atol=0.03)


def test_sampling_depends_only_on_seed_and_labels():
    labels = np.array([0, 1, 1, 2, 2, 2])
    cfg = TrainConfig(steps=5, batch_size=4, augment=True, max_shift=2)
    a, b = sample_minibatches(labels, cfg, 3), sample_minibatches(labels, cfg, 3)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.shifts, b.shifts)
    assert a.shifts.shape == (5, 4, 2) and np.abs(a.shifts).max() <= 2
    assert not np.array_equal(a.positions, sample_minibatches(labels, cfg, 4).positions)


def test_shift_augmentation_moves_pixels_with_zero_fill():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 6, 5, generator=g)
    batcher = _Batcher(x, 2)
    rows = torch.tensor([[0, 2], [1, 1]])
    shifts = torch.tensor([[[1, -2], [0, 0]], [[-2, 2], [2, 1]]])
    out = batcher(rows, shifts)
    assert out.shape == (2, 2, 2, 6, 5)
    xp = F.pad(x, (2, 2, 2, 2))
    for i in range(2):
        for j in range(2):
            dy, dx = shifts[i, j].tolist()
            want = xp[rows[i, j], :, 2 + dy:2 + dy + 6, 2 + dx:2 + dx + 5]
            assert torch.equal(out[i, j], want)


# --------------------------------------------------------------------------------------------
# Random warps and the learning-rate schedule


def _warp(x, angle=0.0, zoom=1.0, shear=0.0, ty=0.0, tx=0.0, fields=None):
    w = torch.tensor([[angle, zoom, shear, ty, tx]], dtype=x.dtype).expand(len(x), 5)
    return warp_images(x, w, fields)


def test_warp_identity_translation_and_rotation_are_exact():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 8, 8, generator=g, dtype=torch.float64)
    # float64 sampling grids are exact up to a few ulps of the 8-pixel coordinates (cos(pi/2)
    # ~ 6e-17): interpolated values in [0, 1] move by < 1e-14; 1e-12 leaves a factor 100
    torch.testing.assert_close(_warp(x), x, rtol=0, atol=1e-12)
    # zero elastic field: the same as none
    zero = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(_warp(x, fields=zero), x, rtol=0, atol=1e-12)
    # integer translation: out[..., r, q] = x[..., r + ty, q + tx], zero outside
    out = _warp(x, ty=2.0, tx=-1.0)
    want = torch.zeros_like(x)
    want[..., :6, 1:] = x[..., 2:, :7]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)
    # a quarter turn of a square image is a permutation of its pixels
    out = _warp(x, angle=np.pi / 2)
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), rtol=0, atol=1e-12)
    # a uniform elastic field is a translation (pixels, (dy, dx))
    field = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    field[:, 0], field[:, 1] = 2.0, -1.0
    torch.testing.assert_close(_warp(x, fields=field), _warp(x, ty=2.0, tx=-1.0), rtol=0,
                               atol=1e-12)


def test_warp_zoom_keeps_centre_and_each_image_is_independent():
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[..., 4, 4] = 1.0  # centre pixel stays put under zoom and rotation
    for kw in (dict(zoom=1.2), dict(zoom=0.8), dict(angle=0.3), dict(shear=0.2)):
        out = _warp(x, **kw)
        assert out[0, 0].argmax().item() == 4 * 9 + 4
    g = torch.Generator().manual_seed(1)
    xs = torch.rand(5, 1, 12, 12, generator=g)
    w = torch.rand(5, 5, generator=g)
    f = torch.randn(5, 2, 3, 3, generator=g)
    together = warp_images(xs, w, f)
    for i in range(5):
        assert torch.equal(warp_images(xs[i:i + 1], w[i:i + 1], f[i:i + 1]), together[i:i + 1])


def test_warp_parameters_are_drawn_in_range_and_depend_only_on_the_seed():
    cfg = TrainConfig(steps=50, batch_size=16, **WARPS)
    labels = np.array([0, 1, 1, 2, 2, 2])
    a = sample_minibatches(labels, cfg, 7, image_shape=(1, 28, 28))
    b = sample_minibatches(labels, cfg, 7, image_shape=(1, 28, 28))
    c = sample_minibatches(labels, cfg, 8, image_shape=(1, 28, 28))
    assert a.shifts is None and a.warps.shape == (50, 16, 5)
    assert a.fields.shape == (50, 16, 2, 7, 7)
    np.testing.assert_array_equal(a.warps, b.warps)
    np.testing.assert_array_equal(a.fields, b.fields)
    assert not np.array_equal(a.warps, c.warps)
    lim = [np.deg2rad(15.0), 0.15, np.deg2rad(10.0), 3, 3]
    dev = np.abs(a.warps - [0, 1, 0, 0, 0])
    assert (dev <= lim).all() and (dev.reshape(-1, 5).max(0) > 0.9 * np.array(lim)).all()
    assert abs(a.fields.std() - 1.0) < 0.05
    # positions are drawn first, so warps do not change which samples are drawn
    plain = sample_minibatches(labels, TrainConfig(steps=50, batch_size=16), 7)
    np.testing.assert_array_equal(plain.positions, a.positions)
    with pytest.raises(ValueError, match="image_shape"):
        sample_minibatches(labels, cfg, 7)
    # warps need augment
    assert not TrainConfig(augment=False, rotation=10.0).warps


def test_cosine_schedule_and_warps_change_training():
    x, y, xt, _ = _images(n=60, n_test=10)
    subs, seeds = _subsets(60, 2, 20)
    base = dict(LENET, model="cnn", steps=6, dtype="float64")
    _, W0 = train_predict_with_weights(x, y, subs, seeds, xt, TrainConfig(**base), n_classes=3)
    for extra in (dict(lr_schedule="cosine"), dict(rotation=10.0), dict(elastic=0.5)):
        _, W1 = train_predict_with_weights(x, y, subs, seeds, xt,
                                           TrainConfig(**base, **extra), n_classes=3)
        assert not torch.equal(W0[0]["fc2.bias"], W1[0]["fc2.bias"]), extra
    cfg = TrainConfig(lr=0.01, steps=10, lr_schedule="cosine")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    got = []
    for s in range(10):
        _set_lr(opt, cfg, s)
        got.append(opt.param_groups[0]["lr"])
    np.testing.assert_allclose(got, [0.005 * (1 + np.cos(np.pi * s / 10)) for s in range(10)])
    assert got[0] == 0.01 and got[5] == pytest.approx(0.005)


# --------------------------------------------------------------------------------------------
# Determinism (bit-identical)


WARPS = dict(augment=True, rotation=15.0, scale=0.15, shear=10.0, max_shift=3, elastic=1.0,
             lr_schedule="cosine")


@pytest.mark.parametrize("model, k", [("lenet5", 3), ("lenet5", 10), ("lenet5_avg", 3),
                                      ("mlp", 3), ("cnn", 3), ("cnn_small+warps", 10),
                                      ("resnet18", 3), ("bn_factory", 3),
                                      ("dropout_factory", 3), ("dropout_factory@reference", 3),
                                      ("lenet5@bmm", 3),
                                      ("lenet5_avg@bmm", 10), ("cnn_small+warps@bmm", 3),
                                      ("lenet5@cmajor", 10), ("lenet5_avg@cmajor", 3),
                                      ("cnn_small+warps@cmajor", 3), ("resnet18@cmajor", 3)])
def test_bit_identical_across_chunking_and_neighbours(model, k):
    """Same bits whatever the chunking, the order and the neighbours of a classifier (G=4 and
    K=3 or 10 put parameters in the scalar tails of vectorised kernels: see optim), for the
    stacked twins, BatchNorm with per-classifier statistics, vmap stacking and (``@bmm``,
    ``@cmajor``) convolutions as batched matmuls."""
    model, _, path = model.partition("@")
    path = path or "fast"
    c, hw = ((3, 8) if model == "resnet18" else (2, 6) if model.endswith("_factory")
             else (1, 28))
    x, y, xt, _ = _images(n=80, n_test=12, k=k, c=c, hw=hw)
    if model == "mlp":
        x, xt = x.reshape(80, -1), xt.reshape(12, -1)
    T, all_cuts, perm = 7, ([3], [1, 5], [4]), [6, 2, 0, 5]
    extra = WARPS if model.endswith("+warps") else {}
    name = model.removesuffix("+warps")
    cfg = TrainConfig(**{**LENET, "model": _MODELS.get(name, name), **extra})
    if model == "resnet18":  # 11M parameters per classifier: fewer classifiers and calls
        T, all_cuts, perm = 4, ([1],), [3, 0]
        cfg = TrainConfig(**{**LENET, "model": name, "group_size": 2, "steps": 2})
    subs, seeds = _subsets(80, T, 12)
    P, W = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=k, path=path)
    for cuts in all_cuts:
        parts = np.split(np.arange(T), cuts)
        got = [train_predict_with_weights(x, y, [subs[i] for i in p], [seeds[i] for i in p],
                                          xt, cfg, n_classes=k, path=path) for p in parts]
        np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), P)
        flat_w = [w for g in got for w in g[1]]
        for a, b in zip(flat_w, W, strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
    # order of classifiers and different neighbours
    Q, V = train_predict_with_weights(x, y, [subs[i] for i in perm], [seeds[i] for i in perm],
                                      xt, cfg, n_classes=k, path=path)
    np.testing.assert_array_equal(Q, P[perm])
    for j, i in enumerate(perm):
        assert all(torch.equal(V[j][k], W[i][k]) for k in W[i])


def _linear_13x6(shape, k):
    """A user factory (stacked through vmap) with a ``Linear(13, 6)``."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), 6),
                               torch.nn.ReLU(), torch.nn.Linear(6, k))


@pytest.mark.parametrize("case", ["lenet5, 13 rows, 10 classes", "Linear(13, 6)"])
def test_position_in_the_group_never_changes_a_classifier(case):
    """Shapes whose batched products MKL rounded by the operands' alignment, i.e. by the
    classifier's position in its group, until ``threads.reproducible_blas`` (this failed on
    the AMD EPYC development machine without it): 10 logits on 13 sub-dataset rows, and a
    ``Linear(13, 6)`` through vmap. Same bits in another order, with other neighbours and
    chunked."""
    x, y, xt, _ = _images(n=80, n_test=13, k=10)
    subs, seeds = _subsets(80, 7, 13)
    if case.startswith("lenet5"):
        cfg = TrainConfig(model="lenet5", steps=5, batch_size=16, group_size=4, subset_rows=13)
    else:
        x = x[:, :, :5, :5].reshape(80, 25)[:, :13].copy()
        xt = xt[:, :, :5, :5].reshape(13, 25)[:, :13].copy()
        cfg = TrainConfig(model=_linear_13x6, steps=5, batch_size=16, group_size=4)
    P, W = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=10)
    for order in ([6, 2, 0, 5], [1, 3], [4, 5, 6]):
        Q, V = train_predict_with_weights(x, y, [subs[i] for i in order],
                                          [seeds[i] for i in order], xt, cfg, n_classes=10)
        np.testing.assert_array_equal(Q, P[order])
        for j, i in enumerate(order):
            assert all(torch.equal(V[j][key], W[i][key]) for key in W[i]), (order, i)


def test_bit_identical_across_workers_and_threads():
    x, y, xt, _ = _images(n=80, n_test=12)
    subs, seeds = _subsets(80, 9, 12, seed=1)
    cfg = TrainConfig(**LENET)
    P1 = train_predict(x, y, subs, seeds, xt, cfg, n_classes=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        P_threads = train_predict(x, y, subs, seeds, xt, cfg, n_classes=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    P2 = train_predict(x, y, subs, seeds, xt, cfg, n_classes=3, workers=2)
    np.testing.assert_array_equal(P_threads, P1)
    np.testing.assert_array_equal(P2, P1)


# --------------------------------------------------------------------------------------------
# Fast path against the reference twin


def _bn_factory(shape, k):
    """A user model with BatchNorm (stacked through torch.func.vmap)."""
    c, h, w = shape
    return torch.nn.Sequential(torch.nn.Conv2d(c, 4, 3, padding=1, bias=False),
                               torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * h * w, k))


def _dropout_factory(shape, k):
    """A user model with dropout (trained by the per-model loop)."""
    c, h, w = shape
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 16),
                               torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, k))


_MODELS = {"bn_factory": _bn_factory, "dropout_factory": _dropout_factory}


def test_dropout_masks_come_from_the_classifiers_seed():
    """A module that draws random numbers in training (dropout) draws them from its
    classifier's own stream (``selection.module_seed``), in a forked RNG state: the caller's
    RNG is left as it was, and a classifier trained after other draws is the same."""
    x, y, xt, _ = _images(n=40, n_test=5, hw=12)
    subs, seeds = _subsets(40, 2, 12)
    cfg = TrainConfig(model=_dropout_factory, steps=4, batch_size=8)
    state = torch.get_rng_state()
    _, W = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(7)
    _, V = train_predict_with_weights(x, y, subs[1:], seeds[1:], xt, cfg, n_classes=3)
    assert all(torch.equal(V[0][k], W[1][k]) for k in W[1])
    # the masks are drawn (training mode): the same model with p = 0 trains otherwise
    _, Z = train_predict_with_weights(x, y, subs, seeds, xt,
                                      TrainConfig(model=_no_dropout_factory, steps=4,
                                                  batch_size=8), n_classes=3)
    assert not all(torch.equal(Z[1][k], W[1][k]) for k in W[1])


def _no_dropout_factory(shape, k):
    """``_dropout_factory`` with a dropout of probability 0 (the same initialisation)."""
    net = _dropout_factory(shape, k)
    net[3].p = 0.0
    return net


def test_vmap_batchnorm_sees_its_input_in_the_statistics_dtype():
    """Under CUDA's bfloat16 autocast a convolution hands BatchNorm bfloat16, which CUDA's
    batched (vmap) batch-norm backward refuses beside float32 running statistics (measured on
    an H100: ResNet-18 through vmap failed in bfloat16; the CUDA test ``resnet18@vmap`` runs
    it): the stacked module's BatchNorms take their input in the statistics' dtype. On the
    CPU, autocast does not reach into vmap, so the hook is checked directly, and shown to
    change nothing in float32."""
    from poisoncert.training.fast import StackedFunctional, _input_in_statistics_dtype

    models = [_bn_factory((2, 5, 5), 3) for _ in range(2)]
    net = StackedFunctional(models)
    bns = [m for m in net.base.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 1 and len(bns[0]._forward_pre_hooks) == 1
    bn = torch.nn.BatchNorm2d(2)
    h = torch.randn(3, 2, 4, 4)
    (cast,) = _input_in_statistics_dtype(bn, (h.bfloat16(),))
    assert cast.dtype == torch.float32 and torch.equal(cast, h.bfloat16().float())
    assert _input_in_statistics_dtype(bn, (h,)) is None
    assert _input_in_statistics_dtype(torch.nn.Identity(), (h.bfloat16(),)) is None
    x = torch.randn(2, 4, 2, 5, 5)
    with torch.no_grad():
        hooked = net.forward_train(x)
        bns[0]._forward_pre_hooks.clear()
        assert torch.equal(hooked, net.forward_train(x))  # float32: the hook changes nothing


def _one_step_pair(model_name, shape, opt_name, seed=0, how="auto"):
    """Per-model modules and their stacked twin after one identical optimizer step each.

    Also returns, per model, the parameters before the step and the gradients both paths
    computed (``{name: tensor}`` dicts), so that a test can bound the step's rounding.
    """
    g = torch.Generator().manual_seed(seed)
    G, B, K = (2 if model_name == "resnet18" else 3), 5, 4
    model = _MODELS.get(model_name, model_name)
    cfg = TrainConfig(model=model, optimizer=opt_name, lr=0.05, weight_decay=1e-3,
                      dtype="float64")
    torch.manual_seed(seed)
    modules = [build_model(model, shape, K).double() for _ in range(G)]
    before = [{k: v.detach().clone() for k, v in m.named_parameters()} for m in modules]
    net = stack_models(modules, how=how)
    xb = torch.randn(G, B, *shape, generator=g, dtype=torch.float64)
    yb = torch.randint(0, K, (G, B), generator=g)
    dev = torch.device("cpu")
    # stacked: one update for the whole stack
    opt = StackedOptimizer(net.flat, cfg)
    inp = xb.transpose(0, 1) if net.batch_first else xb
    logits = net.forward_train(inp.contiguous())
    loss = F.cross_entropy(logits.reshape(G * B, K), yb.reshape(-1), reduction="sum") / B
    loss.backward()
    flat_grad = net.flat_grad().clone()
    grads = [{n: (net._view(flat_grad, n)[j].t() if n in net.transposed
                  else net._view(flat_grad, n)[j]) for n in net.names} for j in range(G)]
    opt.step(net.flat_grad(), cfg.lr)
    # reference: torch's optimizer per module
    ref_logits, ref_grads = [], []
    for m, xm, ym in zip(modules, xb, yb, strict=True):
        o = _make_optimizer(m.parameters(), cfg, dev)
        out = m(xm)
        ref_logits.append(out.detach())
        F.cross_entropy(out, ym).backward()
        ref_grads.append({k: v.grad.clone() for k, v in m.named_parameters()})
        o.step()
    return (net, modules, logits.detach(), torch.stack(ref_logits), xb, cfg, before, grads,
            ref_grads)


#: Relative rounding allowed between two float64 evaluations of the same sums in another
#: order (grouped against per-model kernels, another SIMD width or BLAS): each output is a sum
#: of at most ~10^4 products, so its error is below ~10^4 * 2^-53 ~ 1e-12 of the magnitude of
#: the tensor's largest terms; 1e-10 leaves a factor 100 for the backward pass's two levels.
_RTOL64 = 1e-10


def _close_to_scale(got, want, rtol=_RTOL64):
    """``got`` equals ``want`` up to ``rtol`` times the tensor's largest magnitude."""
    scale = float(want.detach().abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=0, atol=rtol * scale + 1e-300)


def _step_image(p0, grad, cfg):
    """Parameter ``p0`` after one fresh optimizer step with gradient ``grad``."""
    p = p0.clone().requires_grad_(True)
    p.grad = grad.clone()
    _make_optimizer([p], cfg, torch.device("cpu")).step()
    return p.detach()


def _check_step(new, p0, grad, cfg):
    """``new`` is one optimizer step from ``p0`` with a gradient within the rounding of
    ``grad``.

    Every optimizer's first step is an elementwise, monotone function of the gradient (SGD:
    linear; Adam: g / (|g| + eps); Adadelta: g / sqrt((1 - rho) g^2 + eps)), so the image of
    the interval ``grad +- tol`` is bounded by the images of its ends. Adam divides by |g|:
    where a gradient is near 0 its rounding is amplified up to lr / eps times, which is why a
    fixed absolute tolerance on the parameters fails on some processors and this does not.
    """
    tol = _RTOL64 * float(grad.abs().max())
    lo, hi = _step_image(p0, grad - tol, cfg), _step_image(p0, grad + tol, cfg)
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    # the step itself rounds relative to the larger of the parameter and its update
    scale = torch.maximum(p0.abs(), torch.maximum((lo - p0).abs(), (hi - p0).abs()))
    ulp = 4 * torch.finfo(torch.float64).eps * scale
    assert bool(torch.all(new >= lo - ulp) and torch.all(new <= hi + ulp)), (
        float(torch.max(torch.maximum(lo - ulp - new, new - hi - ulp))))


_SMALL_STACKS = [
    ("lenet5", (1, 28, 28), "auto"), ("lenet5_avg", (1, 28, 28), "auto"),
    ("lenet5", (2, 16, 20), "auto"), ("cnn", (1, 28, 28), "auto"),
    ("cnn_small", (2, 13, 10), "auto"), ("lenet5_avg", (2, 17, 20), "auto"),
    ("mlp", (10,), "auto"), ("lenet5", (1, 16, 16), "vmap"), ("bn_factory", (2, 6, 5), "auto"),
    ("lenet5", (1, 28, 28), "bmm"), ("lenet5_avg", (2, 17, 20), "bmm"),
    ("cnn_small", (2, 13, 10), "bmm"), ("lenet5", (1, 28, 28), "cmajor"),
    ("lenet5_avg", (2, 17, 20), "cmajor"), ("cnn_small", (2, 13, 10), "cmajor")]
#: ResNet-18 (11M parameters per classifier) with one optimizer per formulation: float64
#: steps of it take tens of seconds.
_STACKS = [(*case, opt) for case in _SMALL_STACKS for opt in ("adam", "sgd", "adadelta")] + [
    ("resnet18", (3, 8, 8), "auto", "adam"), ("resnet18", (2, 8, 8), "vmap", "sgd"),
    ("resnet18", (3, 8, 8), "cmajor", "sgd"), ("resnet18", (2, 11, 9), "cmajor", "adam")]


@pytest.mark.parametrize("k, stride, padding", [(3, 1, 1), (5, 1, 2), (5, 1, 0), (6, 2, 0),
                                               (2, 2, 1)])
def test_patches_are_unfolds_values_in_channels_last_order(k, stride, padding):
    """``cmajor``'s patch copy: ``F.unfold``'s values, each output pixel's ``(kh, kw, C)``
    last; its hand-written gradient (``kh kw`` strided additions) passes ``gradcheck``."""
    torch.manual_seed(0)
    x = torch.randn(2, 7, 8, 3, dtype=torch.float64, requires_grad=True)  # (N, H, W, C)
    got = patches(x, k, k, stride, padding)
    ref = F.unfold(x.permute(0, 3, 1, 2), k, padding=padding, stride=stride)
    N, oh, ow = got.shape[:3]
    ref = ref.view(N, 3, k, k, oh, ow).permute(0, 4, 5, 2, 3, 1).reshape(N, oh, ow, k * k * 3)
    assert torch.equal(got, ref)
    assert torch.autograd.gradcheck(lambda t: patches(t, k, k, stride, padding), (x,),
                                    fast_mode=True)
    # bfloat16 gradients are summed in float32 and rounded once (as col2im does)
    g = torch.randn(got.shape, dtype=torch.float64).to(torch.bfloat16)
    xb = x.detach().to(torch.bfloat16).requires_grad_(True)
    patches(xb, k, k, stride, padding).backward(g)
    xf = x.detach().float().requires_grad_(True)
    patches(xf, k, k, stride, padding).backward(g.float())
    assert xb.grad.dtype == torch.bfloat16 and torch.equal(xb.grad, xf.grad.to(torch.bfloat16))


@pytest.mark.parametrize("G, M, C", [(1, 2, 1), (3, 40, 5), (2, 7, 16)])
def test_row_batch_norm_is_each_classifiers_batchnorm(G, M, C):
    """``cmajor``'s BatchNorm over classifier-major rows ``(G, M, C)``: classifier ``g``'s
    output, mean and biased variance are ``nn.BatchNorm2d``'s in training mode on its own
    ``M`` rows (float64, to rounding), its hand-written backward passes ``gradcheck``, and
    a bfloat16 input is normalised in float32 and rounded once."""
    from poisoncert.training.fast import row_batch_norm

    torch.manual_seed(G * 100 + M)
    x = (3 * torch.randn(G, M, C, dtype=torch.float64) + 2).requires_grad_(True)
    w = torch.randn(G, C, dtype=torch.float64, requires_grad=True)
    b = torch.randn(G, C, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(G, M, C, dtype=torch.float64)
    y, mean, var = row_batch_norm(x, w, b, 1e-5)
    assert not mean.requires_grad and not var.requires_grad
    y.backward(dy)
    for g in range(G):
        bn = torch.nn.BatchNorm2d(C, eps=1e-5, momentum=0.5).double()
        with torch.no_grad():
            bn.weight.copy_(w[g])
            bn.bias.copy_(b[g])
        xg = x.detach()[g].t().reshape(1, C, M, 1).clone().requires_grad_(True)
        yg = bn(xg)
        yg.backward(dy[g].t().reshape(1, C, M, 1))
        _close_to_scale(y.detach()[g], yg.reshape(C, M).t())
        _close_to_scale(x.grad[g], xg.grad.reshape(C, M).t())
        _close_to_scale(w.grad[g], bn.weight.grad)
        _close_to_scale(b.grad[g], bn.bias.grad)
        _close_to_scale(mean[g], x.detach()[g].mean(0))
        # momentum 0.5 from a running variance of 1: 0.5 + 0.5 * the unbiased variance
        if M > 1:
            _close_to_scale((bn.running_var - 0.5) / 0.5 * (M - 1) / M, var[g])
    if M > 1:  # a constant channel has no gradient through its normalisation: not checked
        assert torch.autograd.gradcheck(lambda *t: row_batch_norm(*t, 1e-5)[0],
                                        (x.detach().requires_grad_(True), w, b))
    # bfloat16: statistics and normalisation in float32, one rounding at the end
    xb = x.detach().to(torch.bfloat16)
    yb = row_batch_norm(xb, w.detach().float(), b.detach().float(), 1e-5)[0]
    yf = row_batch_norm(xb.float(), w.detach().float(), b.detach().float(), 1e-5)[0]
    assert yb.dtype == torch.bfloat16 and torch.equal(yb, yf.to(torch.bfloat16))


def test_cmajor_resnet_evaluates_in_slices_of_at_most_its_image_budget(monkeypatch):
    """``cmajor`` ResNet-18 evaluates ``G`` classifiers on at most ``CMAJOR_EVAL_IMAGES``
    image copies at once (its patches are 9x the activations): in slices, the running
    statistics' logits of the plain modules (float64), every input once."""
    from poisoncert.training import fast

    torch.manual_seed(3)
    modules = [build_model("resnet18", (3, 8, 8), 4).double().eval() for _ in range(3)]
    for m in modules:  # running statistics that are not the initial ones
        for bn in [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    net = stack_models(modules, how="cmajor")
    x = torch.randn(11, 3, 8, 8, dtype=torch.float64)
    seen = []
    real = net._forward
    monkeypatch.setattr(net, "_forward", lambda t: seen.append(t.shape[:2]) or real(t))
    monkeypatch.setattr(fast, "CMAJOR_EVAL_IMAGES", 12)  # 3 classifiers x 4 images
    with torch.no_grad():
        got = net.forward_eval(x)
        want = torch.stack([m(x) for m in modules])
    assert seen == [(3, 4), (3, 4), (3, 3)]
    _close_to_scale(got, want)


def test_cmajor_resnet_under_bfloat16_autocast_is_as_close_as_the_twin():
    """Before a lease: ResNet-18's ``cmajor`` form under bfloat16 autocast (the CPU's, which
    casts batched matmuls as CUDA's does) runs, gives bfloat16 logits, and is as close to its
    float32 result as the grouped twin is to the same float32 result (logits, the gradient
    of every classifier, evaluation logits). Its BatchNorm normalises bfloat16 in float32 and
    rounds once, as cuDNN does, in evaluation (here) as in training
    (``test_row_batch_norm_is_each_classifiers_batchnorm``)."""
    torch.manual_seed(0)
    modules = [build_model("resnet18", (3, 16, 16), 4) for _ in range(2)]
    x, y = torch.randn(2, 5, 3, 16, 16), torch.randint(0, 4, (10,))

    def run(how, amp):
        net = stack_models(modules, how=how)
        inp = x.transpose(0, 1).contiguous() if net.batch_first else x
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits = net.forward_train(inp)
        F.cross_entropy(logits.float().reshape(10, -1), y).backward()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            ev = net.forward_eval(x[0])
        assert logits.dtype == ev.dtype == (torch.bfloat16 if amp else torch.float32)
        return logits.detach().double(), net.flat_grad().double(), ev.double()

    ref = run("cmajor", False)
    err = {how: [float((a - b).norm() / b.norm())
                 for a, b in zip(run(how, True), ref, strict=True)] for how in ("auto", "cmajor")}
    assert all(0 < e < 0.5 for e in err["auto"])  # bfloat16 did round
    for e_cmajor, e_twin in zip(err["cmajor"], err["auto"], strict=True):
        assert e_cmajor <= 1.5 * e_twin, err
    net = stack_models(modules, how="cmajor")
    net.training = False
    rm, rv = net.buffers["bn1.running_mean"], net.buffers["bn1.running_var"]
    rm.uniform_(-1, 1)
    rv.uniform_(0.5, 2)
    h = torch.randn(2 * 3, 4, 4, 64).to(torch.bfloat16)  # (G B, H, W, C)
    with torch.no_grad():
        got = net._row_bn(h, "bn1", rm, rv)
        want = net._row_bn(h.float(), "bn1", rm, rv).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


@pytest.mark.parametrize("model_name, shape, how, opt_name", _STACKS)
def test_fast_step_matches_reference(model_name, shape, how, opt_name):
    """Every stacked formulation (twins, vmap; BatchNorm with per-classifier statistics)
    against its plain per-model twin, float64: logits, gradients, one step of the stacked
    update against torch's optimizer, BatchNorm running statistics, and evaluation."""
    (net, modules, logits, ref_logits, xb, cfg, before, grads,
     ref_grads) = _one_step_pair(model_name, shape, opt_name, how=how)
    _close_to_scale(logits, ref_logits)
    for sd, m, p0, gr, ref_gr in zip(net.state_dicts(), modules, before, grads, ref_grads,
                                     strict=True):
        ref = m.state_dict()
        assert sd.keys() == ref.keys() and gr.keys() == ref_gr.keys()
        for k in gr:
            _close_to_scale(gr[k], ref_gr[k])
            _check_step(sd[k], p0[k], ref_gr[k], cfg)
        for k in set(sd) - set(gr):  # buffers: BatchNorm's running statistics, its count
            _close_to_scale(sd[k].double(), ref[k].double())
    # evaluation (running statistics) against modules holding the same weights
    model = _MODELS.get(model_name, model_name)
    twins = [build_model(model, shape, 4).double() for _ in modules]
    for twin, sd in zip(twins, net.state_dicts(), strict=True):
        twin.load_state_dict(sd)
        twin.eval()
    with torch.no_grad():
        got = net.forward_eval(xb[0])
        want = torch.stack([t(xb[0]) for t in twins])
    _close_to_scale(got, want)


@pytest.mark.parametrize("model_name", ["lenet5", "lenet5_avg", "mlp", "cnn+warps",
                                        "cnn_small"])
def test_fast_and_reference_predictions_agree_float64(model_name):
    if model_name != "mlp":
        x, y, xt, _ = _images(n=60, n_test=30)
        extra = WARPS if model_name.endswith("+warps") else {}
        cfg = TrainConfig(model=model_name.removesuffix("+warps"), steps=15, batch_size=8,
                          group_size=4, dtype="float64",
                          **{"lr": 3e-3, "augment": True, "eval_batch_size": 64, **extra})
    else:
        x, y, xt, _ = _digits()
        xt = xt[:100]
        cfg = TrainConfig(model="mlp", steps=30, batch_size=16, group_size=4, dtype="float64",
                          lr=3e-3, eval_batch_size=64)
    subs, seeds = _subsets(len(x), 5, 20)
    Pf, Wf = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=10, path="fast")
    Pr, Wr = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=10,
                                        path="reference")
    np.testing.assert_array_equal(Pf, Pr)
    # Both paths take the same steps; their sums round differently (_RTOL64 of a tensor's
    # scale), and an Adam step turns a gradient's rounding (a few ulps of gradients of order
    # 1) into up to lr / eps_adam (1e-8) times that. Over the steps that bounds the drift; a
    # wrong step (another sample, rate or update) moves parameters by ~lr, 1000x more.
    adam = cfg.steps * cfg.lr / 1e-8 * 8 * torch.finfo(torch.float64).eps
    assert adam < 1e-3 * cfg.lr
    for a, b in zip(Wf, Wr, strict=True):
        for k in b:
            scale = float(b[k].abs().max())
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=_RTOL64 * scale + adam)


def test_fast_and_reference_agree_float32():
    x, y, xt, _ = _images(n=60, n_test=40)
    subs, seeds = _subsets(60, 4, 20)
    cfg = TrainConfig(**LENET)
    Pf = train_predict(x, y, subs, seeds, xt, cfg, n_classes=3, path="fast")
    Pr = train_predict(x, y, subs, seeds, xt, cfg, n_classes=3, path="reference")
    assert (Pf == Pr).mean() >= 0.97


# --------------------------------------------------------------------------------------------
# The graphed path (training.graphed): the reference loop, each step a replayed CUDA graph


_GRAPHED = {
    "lenet5, sgd": dict(model="lenet5", optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                        lr=0.05, augment=True, max_shift=2),
    "lenet5, adam, float64": dict(model="lenet5", optimizer="adam", lr=3e-3, dtype="float64"),
    "cnn_small, warps": dict(model="cnn_small", **WARPS),
    "resnet18, sgd": dict(model="resnet18", optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                          lr=0.05, augment=True, max_shift=1),
}


def _graphed_problem(name):
    c, hw = (3, 8) if name.startswith("resnet18") else (1, 16)
    x, y, xt, _ = _images(n=50, n_test=9, c=c, hw=hw)
    if hw == 8:  # the class blocks of _images lie outside 8 x 8: a learnable corner instead
        x[:, :, :2, :2] += y[:, None, None, None] / 2
    subs, seeds = _subsets(50, 7, 12)
    cfg = TrainConfig(steps=5, batch_size=8, group_size=4, eval_batch_size=16,
                      **{**_GRAPHED[name], "lr_schedule": "constant"})
    return x, y, xt, subs, seeds, cfg


def _same_weights(a, b):
    return all(torch.equal(u[k], v[k]) for u, v in zip(a, b, strict=True) for k in u)


@pytest.mark.parametrize("name", list(_GRAPHED))
def test_graphed_path_is_the_reference_loop_bit_for_bit_on_the_cpu(name, monkeypatch):
    """On the CPU (no graphs) the graphed path runs its lanes, static input buffers and
    optimizer-state hand-over eagerly: every classifier's weights and predictions are the
    reference path's, bit for bit (SGD with momentum and weight decay, Adam in float64, warps
    with elastic fields, ResNet-18's BatchNorm statistics). With three lanes (classifiers
    trained side by side, seven of them in groups of four: waves of 3 + 1 and 3) too."""
    from poisoncert.training import graphed

    x, y, xt, subs, seeds, cfg = _graphed_problem(name)
    run = dict(n_classes=3)
    Pr, Wr = train_predict_with_weights(x, y, subs, seeds, xt, cfg, path="reference", **run)
    Pg, Wg = train_predict_with_weights(x, y, subs, seeds, xt, cfg, path="graphed", **run)
    np.testing.assert_array_equal(Pg, Pr)
    assert _same_weights(Wg, Wr)
    monkeypatch.setattr(graphed, "lanes_for", lambda device: 3)
    P3, W3 = train_predict_with_weights(x, y, subs, seeds, xt, cfg, path="graphed", **run)
    np.testing.assert_array_equal(P3, Pr)
    assert _same_weights(W3, Wr)


def test_graphed_lanes_hand_each_classifier_a_fresh_optimizer_state():
    """``train_graphed`` directly, one lane then four: a classifier trained after another in
    the same lane starts from a fresh optimizer state (momentum), not its predecessor's."""
    from poisoncert.training import graphed
    from poisoncert.training.minibatches import ImageBatcher, sample_minibatches
    from poisoncert.training.models import init_model

    x, y, _, subs, seeds, cfg = _graphed_problem("lenet5, sgd")
    xt_, yt_ = torch.as_tensor(x), torch.as_tensor(y)
    batcher = ImageBatcher(xt_, cfg.max_shift)
    draws = [sample_minibatches(y[s], cfg, seed, shifts=True, image_shape=x.shape[1:])
             for s, seed in zip(subs, seeds, strict=True)]
    rows = [s[d.positions] for s, d in zip(subs, draws, strict=True)]

    def train(lanes, order):
        models = [init_model("lenet5", (1, 16, 16), 3, 1000 + i) for i in order]
        got = graphed.train_graphed(models, [rows[i] for i in order], [draws[i] for i in order],
                                    batcher, yt_, cfg, "cpu", lanes=lanes)
        return dict(zip(order, got, strict=True))

    one, four = train(1, range(7)), train(4, [6, 2, 0, 5, 1, 3, 4])
    for i in range(7):
        assert _same_weights([one[i]], [four[i]])
    alone = train(1, [4])
    assert _same_weights([alone[4]], [one[4]])


@pytest.mark.parametrize("name", ["lenet5, sgd", "resnet18, sgd"])
def test_graphed_lanes_channels_last_as_on_cuda(name, monkeypatch):
    """CUDA's lanes train channels-last (``graphed.CUDA_CHANNELS_LAST``); forced on the CPU
    in float64: the reference loop's weights to rounding (other kernels) and the same
    predictions."""
    from poisoncert.training import graphed

    x, y, xt, subs, seeds, cfg = _graphed_problem(name)
    cfg = TrainConfig(**{**cfg.__dict__, "dtype": "float64"})
    run = dict(n_classes=3)
    Pr, Wr = train_predict_with_weights(x, y, subs, seeds, xt, cfg, path="reference", **run)
    seen = []
    real = graphed.channels_last_for
    monkeypatch.setattr(graphed, "channels_last_for", lambda d: seen.append(d) or True)
    Pg, Wg = train_predict_with_weights(x, y, subs, seeds, xt, cfg, path="graphed", **run)
    assert seen and real(torch.device("cpu")) is False
    np.testing.assert_array_equal(Pg, Pr)
    worst = max(float((a[k] - b[k]).abs().max()) / (1.0 + float(b[k].abs().max()))
                for a, b in zip(Wg, Wr, strict=True) for k in b if b[k].is_floating_point())
    # float64 sums in another order, grown over 5 steps through BatchNorm's normalisation
    # (measured 1.3e-10 of the scale for ResNet-18); a wrong step (another sample or rate)
    # moves weights by about lr times a gradient, some 1e-3 of their scale
    assert worst < 1e-7, worst


def test_graphed_path_refuses_what_a_graph_cannot_replay():
    """One clear line each: a learning-rate schedule, Adadelta, a model with dropout; in a
    config too."""
    from poisoncert.config import ConfigError, from_dict

    x, y, xt, subs, seeds, _ = _graphed_problem("lenet5, sgd")
    run = dict(n_classes=3, path="graphed")
    for bad, words in ((dict(lr_schedule="cosine"), ["'cfg.lr_schedule'", "'constant'",
                                                     "'cosine'"]),
                       (dict(optimizer="adadelta"), ["'cfg.optimizer'", "'adadelta'"]),
                       (dict(model=_dropout_factory), ["'path'", "dropout", "'graphed'"])):
        cfg = TrainConfig(**{**LENET, **bad})
        with pytest.raises(ValueError) as err:
            train_predict(x, y, subs, seeds, xt, cfg, **run)
        line = str(err.value)
        assert "\n" not in line and all(w in line for w in words), line
    with pytest.raises(ConfigError, match="'training.lr_schedule'.*graphed"):
        from_dict({"training": {"model": "lenet5", "path": "graphed",
                                "lr_schedule": "cosine"}})


# --------------------------------------------------------------------------------------------
# Sub-dataset batches (cfg.subset_rows)


def _plain_lenet(shape, k):
    """A user factory stacked through vmap (no twin, no BatchNorm)."""
    return torch.nn.Sequential(torch.nn.Conv2d(shape[0], 3, 3), torch.nn.ReLU(),
                               torch.nn.Flatten(),
                               torch.nn.Linear(3 * (shape[1] - 2) * (shape[2] - 2), k))


def test_draw_counts_count_every_draw():
    from poisoncert.training.loops import draw_counts

    rng = np.random.default_rng(3)
    pos = rng.integers(0, 7, (50, 32))
    c = draw_counts(pos, 9)
    assert c.shape == (50, 9) and (c.sum(1) == 32).all() and (c[:, 7:] == 0).all()
    for s in (0, 17, 49):
        np.testing.assert_array_equal(c[s], np.bincount(pos[s], minlength=9))


#: The CPU, and a CUDA device where there is one (``benchmarks/gpu_session.sh`` runs ``-k cuda``).
_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device"))]


@pytest.mark.parametrize("device", _DEVICES)
@pytest.mark.parametrize("model", ["lenet5", "lenet5_avg", "cnn_small", "mlp", "plain"])
def test_subset_rows_takes_the_draws_steps_float64(model, device):
    """Forwarding each sub-dataset once, weighted by draw counts, takes the steps the draws
    take: float64 weights within the drift bound of the fast/reference comparison (the sums
    are the same, in another order), the same predictions; and the reference path (which
    ignores subset_rows) and the classifier-major batched matmuls (``cmajor``) agree too. On
    the CPU and on CUDA."""
    if model == "mlp":
        x, y, xt, _ = _digits()
        x, y, xt = x[:300], y[:300], xt[:60]
        k = 10
    else:
        x, y, xt, _ = _images(n=60, n_test=30, hw=12 if model == "plain" else 28)
        k = 3
    subs, seeds = _subsets(len(x), 5, 9)
    subs[3] = subs[3][:4]  # a smaller sub-dataset, padded
    name = _plain_lenet if model == "plain" else model
    cfg = TrainConfig(model=name, steps=15, batch_size=16, group_size=4, dtype="float64",
                      lr=3e-3, eval_batch_size=64)
    P, W = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=k, device=device)
    fast = TrainConfig(**{**cfg.__dict__, "subset_rows": 11})
    for path in ("fast", "cmajor", "reference"):
        Q, V = train_predict_with_weights(x, y, subs, seeds, xt, fast, n_classes=k, path=path,
                                          device=device)
        np.testing.assert_array_equal(Q, P)
        adam = cfg.steps * cfg.lr / 1e-8 * 8 * torch.finfo(torch.float64).eps
        for a, b in zip(V, W, strict=True):
            for key in b:
                scale = float(b[key].abs().max())
                torch.testing.assert_close(a[key], b[key], rtol=0,
                                           atol=_RTOL64 * scale + adam)


@pytest.mark.parametrize("device", _DEVICES)
def test_subset_rows_is_bit_identical_across_chunking_and_neighbours(device):
    x, y, xt, _ = _images(n=80, n_test=12)
    subs, seeds = _subsets(80, 7, 10)
    cfg = TrainConfig(model="lenet5", steps=5, batch_size=16, group_size=4, subset_rows=10)
    P, W = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=3, device=device)
    perm = [6, 2, 0, 5]
    got = [train_predict_with_weights(x, y, [subs[i] for i in part], [seeds[i] for i in part],
                                      xt, cfg, n_classes=3, device=device)
           for part in ([0, 1, 2], [3, 4, 5, 6], perm)]
    np.testing.assert_array_equal(np.concatenate([got[0][0], got[1][0]]), P)
    np.testing.assert_array_equal(got[2][0], P[perm])
    flat = got[0][1] + got[1][1]
    for i in range(7):
        assert all(torch.equal(flat[i][key], W[i][key]) for key in W[i])
    for j, i in enumerate(perm):
        assert all(torch.equal(got[2][1][j][key], W[i][key]) for key in W[i])
    # and it is another computation than the draws' (rounded differently in float32)
    _, W0 = train_predict_with_weights(x, y, subs, seeds, xt,
                                       TrainConfig(**{**cfg.__dict__, "subset_rows": None}),
                                       n_classes=3, device=device)
    assert not all(torch.equal(W0[0][key], W[0][key]) for key in W[0])


def _bn_model(shape, k):
    return torch.nn.Sequential(torch.nn.Conv2d(shape[0], 2, 3), torch.nn.BatchNorm2d(2),
                               torch.nn.Flatten(),
                               torch.nn.Linear(2 * (shape[1] - 2) * (shape[2] - 2), k))


@pytest.mark.parametrize("cfg_kwargs, subset_size, match", [
    (dict(augment=True), 5, "augmented"),
    (dict(augment=True, max_shift=0, rotation=10.0), 5, "augmented"),
    (dict(model=_bn_model), 5, "BatchNorm"),
    (dict(), 9, r"at least the largest sub-dataset \(9 rows\)"),
])
def test_subset_rows_refuses_what_it_cannot_do(cfg_kwargs, subset_size, match):
    x, y, xt, _ = _images(n=40, n_test=3, hw=12)
    subs, seeds = _subsets(40, 3, subset_size)
    cfg = TrainConfig(**{"model": "cnn_small", "steps": 2, "batch_size": 8, "subset_rows": 6,
                         **cfg_kwargs})
    with pytest.raises(ValueError, match="'cfg.subset_rows' parameter of train_predict.*" + match):
        train_predict(x, y, subs, seeds, xt, cfg, n_classes=3)
    # integer shifts of 0 pixels are no augmentation: accepted
    ok = TrainConfig(model="cnn_small", steps=2, batch_size=8, subset_rows=6, augment=True,
                     max_shift=0)
    train_predict(x, y, _subsets(40, 2, 5)[0], [1, 2], xt, ok, n_classes=3)


# --------------------------------------------------------------------------------------------
# Weights


def test_weights_roundtrip_and_reload_predicts_the_same(tmp_path):
    x, y, xt, _ = _images(n=60, n_test=10)
    subs, seeds = _subsets(60, 3, 15)
    subs[1] = np.array([], dtype=np.int64)
    cfg = TrainConfig(**{**LENET, "dtype": "float64"})
    P, W = train_predict_with_weights(x, y, subs, seeds, xt, cfg, n_classes=3)
    assert W[1] is None
    path = save_weights(tmp_path / "w.safetensors", W, metadata={"run": "test"})
    for loaded in (load_weights(path), weights_from_bytes(weights_to_bytes(W))):
        assert len(loaded) == 3 and loaded[1] is None
        for i in (0, 2):
            m = LeNet5(1, 3, (28, 28)).double()
            m.load_state_dict(loaded[i])
            with torch.no_grad():
                pred = m(torch.from_numpy(xt).double()).argmax(1).numpy()
            np.testing.assert_array_equal(pred, P[i])


def test_weights_layouts(tmp_path):
    """Classifiers of one model are written stacked (one tensor per name, absent classifiers
    listed); classifiers whose tensors differ fall back to one tensor per classifier and
    name; both read back exactly, with ``None`` kept in place."""
    from safetensors import safe_open

    from poisoncert.training.weights import FORMAT_PER_CLASSIFIER, FORMAT_STACKED

    g = torch.Generator().manual_seed(0)

    def sd(*shape, dtype=torch.float32):
        return {"a.weight": torch.randn(*shape, generator=g).to(dtype),
                "a.count": torch.tensor(7, dtype=torch.int64)}

    cases = {FORMAT_STACKED: [sd(3, 2), None, sd(3, 2), None],
             FORMAT_PER_CLASSIFIER: [sd(3, 2), None, sd(3, 1)],
             "mixed dtypes": [sd(3, 2), sd(3, 2, dtype=torch.float64)]}
    for fmt, W in cases.items():
        path = save_weights(tmp_path / "w.safetensors", W, metadata={"run": "r"})
        with safe_open(str(path), framework="pt") as f:
            meta, keys = f.metadata(), sorted(f.keys())
        assert meta["run"] == "r" and meta["n_models"] == str(len(W))
        if fmt == FORMAT_STACKED:
            assert meta["format"] == fmt and meta["absent"] == "1,3"
            assert keys == ["a.count", "a.weight"]
        else:
            assert meta["format"] == FORMAT_PER_CLASSIFIER and "absent" not in meta
            assert keys == sorted(f"{i}.{k}" for i, w in enumerate(W) if w for k in w)
        for loaded in (load_weights(path), weights_from_bytes(weights_to_bytes(W))):
            assert len(loaded) == len(W)
            for a, b in zip(loaded, W, strict=True):
                assert (a is None) == (b is None)
                if b is not None:
                    assert a.keys() == b.keys()
                    for k in b:
                        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])
    path = save_weights(tmp_path / "n.safetensors", [None, None], metadata={"format": "x"})
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT_STACKED  # the caller's metadata cannot hide it
    assert load_weights(path) == [None, None]
    # each loaded classifier's tensors are its own, not views of the chunk's stack
    loaded = load_weights(save_weights(tmp_path / "s.safetensors", cases[FORMAT_STACKED]))
    w = loaded[0]["a.weight"]
    assert w.untyped_storage().nbytes() == w.numel() * w.element_size()


def test_the_same_weights_and_metadata_are_the_same_bytes(tmp_path):
    """Two writes of the same classifiers and metadata are the same file, byte for byte (a
    run's chunk files and manifest record its weights files' SHA-256). safetensors writes the
    metadata in a hash map's order, which changed from call to call: two runs of one config
    with identical predictions and weights had weights files of other bytes."""
    from safetensors import safe_open

    g = torch.Generator().manual_seed(0)
    W = [{"a.weight": torch.randn(3, 2, generator=g)} for _ in range(2)]
    meta = {f"key{i}": f"value {i}" for i in range(8)}  # 8! orders: a repeat by chance is rare
    blobs = {weights_to_bytes(W, meta) for _ in range(4)}
    files = {save_weights(tmp_path / f"w{i}.safetensors", W, meta).read_bytes()
             for i in range(4)}
    assert len(blobs) == 1 and files == blobs
    with safe_open(str(tmp_path / "w0.safetensors"), framework="pt") as f:
        assert {k: f.metadata()[k] for k in meta} == meta
        assert torch.equal(f.get_tensor("a.weight"), torch.stack([w["a.weight"] for w in W]))


@pytest.mark.parametrize("device", _DEVICES)
def test_host_state_dicts_are_exact_own_cpu_copies(device):
    """``engine.host_state_dicts``: every classifier's tensors on the CPU, equal to the
    device's, each its own storage; off a device through one stack per name (classifiers of
    one model), else one copy per tensor (here: tensors of differing shapes)."""
    from poisoncert.training.engine import host_state_dicts

    g = torch.Generator().manual_seed(1)
    same = [{"w": torch.randn(3, 2, generator=g), "n": torch.tensor(i)} for i in range(4)]
    mixed = [{"w": torch.randn(3, 2, generator=g)}, {"w": torch.randn(2, generator=g)}]
    for sds in (same, mixed):
        on = [{k: v.to(device) for k, v in sd.items()} for sd in sds]
        out = host_state_dicts(on)
        for a, b, d in zip(out, sds, on, strict=True):
            assert a.keys() == b.keys()
            for k in b:
                assert a[k].device.type == "cpu" and a[k].dtype == b[k].dtype
                assert torch.equal(a[k], b[k]) and a[k].data_ptr() != d[k].data_ptr()
                assert a[k].untyped_storage().nbytes() == a[k].numel() * a[k].element_size()
    assert host_state_dicts([]) == []


def test_draws_random_probes_a_copy_and_restores_the_random_state():
    """``fast.draws_random``: a forward drawing random numbers outside ``nn.Dropout`` (which
    ``vmap`` cannot keep per classifier) is seen; the model's own buffers and torch's random
    state are as before; such a user model trains (one at a time) to the reference path's
    predictions."""
    from torch.nn import functional as F

    from poisoncert.training.fast import draws_random

    class Noisy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm1d(4)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(F.dropout(self.bn(x), 0.5, self.training))

    torch.manual_seed(0)
    m, x = Noisy(), torch.randn(2, 4)
    plain = torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 3))
    state = torch.get_rng_state()
    assert draws_random(m, x) and not draws_random(plain, x)
    assert draws_random(m, x.double())  # the probe takes the input's dtype
    import threading

    m.lock = threading.Lock()  # a model that cannot be copied: not probed (training reports)
    assert not draws_random(m, x)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(m.bn.running_mean, torch.zeros(4)) and int(m.bn.num_batches_tracked) == 0
    xs, ys, xt, _ = _digits()
    xs, ys, xt = xs[:200], ys[:200], xt[:40]
    subs, seeds = _subsets(200, 4, 30)
    cfg = TrainConfig(model=lambda shape, n: torch.nn.Sequential(
        torch.nn.Flatten(), _FDropout(), torch.nn.Linear(64, n)), steps=5, batch_size=8,
        group_size=2)
    fast = train_predict(xs, ys, subs, seeds, xt, cfg, n_classes=10)
    ref = train_predict(xs, ys, subs, seeds, xt, cfg, n_classes=10, path="reference")
    np.testing.assert_array_equal(fast, ref)


class _FDropout(torch.nn.Module):
    """Dropout through ``F.dropout``: no ``nn.Dropout`` module for ``stacking`` to see."""

    def forward(self, x):
        return torch.nn.functional.dropout(x, 0.5, self.training)


def test_weights_metadata_that_does_not_describe_the_file_is_refused():
    """``unflatten``: indices as the writer writes them (ASCII digits, no leading zero), an
    ``absent`` list of distinct indices in order, stacks of the right length."""
    import re

    from poisoncert.training.weights import (
        FORMAT_PER_CLASSIFIER,
        FORMAT_STACKED,
        WeightsLayoutError,
        unflatten,
    )

    t = {"a": torch.zeros(2, 3)}
    good = {"format": FORMAT_STACKED, "n_models": "3", "absent": "1"}
    assert [sd is None for sd in unflatten(t, good)] == [False, True, False]
    bad = [({**good, "n_models": "\u00b2"}, "n_models"), ({**good, "absent": "01"}, "'01'"),
           ({**good, "absent": "\u00b2"}, "without weights"),
           ({**good, "absent": "1,1"}, "distinct"), ({**good, "absent": "3"}, "distinct"),
           ({**good, "absent": ""}, "stacks 2"), ({**good, "format": "other"}, "format")]
    for meta, words in bad:
        with pytest.raises(WeightsLayoutError, match=re.escape(words)):
            unflatten(t, meta)
    per = {"format": FORMAT_PER_CLASSIFIER, "n_models": "2"}
    assert unflatten({"1.a": torch.zeros(3)}, per)[0] is None
    for key in ("01.a", "2.a", "\u00b2.a", "a"):
        with pytest.raises(WeightsLayoutError, match="not a tensor of classifier 0..1"):
            unflatten({"0.a": torch.zeros(3), key: torch.zeros(3)}, per)


# --------------------------------------------------------------------------------------------
# scikit-learn learners


def test_sklearn_learner():
    from sklearn.linear_model import LogisticRegression

    x, y, xt, yt = _digits()
    subs, seeds = _subsets(len(x), 4, 60)
    subs[1] = np.array([], dtype=np.int64)
    subs[2] = np.flatnonzero(y == 3)[:5]
    P = train_predict_sklearn(LogisticRegression(max_iter=200), x, y, subs, seeds, xt,
                              n_classes=10)
    assert P.shape == (4, len(xt)) and P.dtype == np.int16
    assert (P[1] == -1).all() and (P[2] == 3).all()
    assert (P[0] == yt).mean() > 0.6
    images = x.reshape(-1, 1, 8, 8)
    Q = train_predict_sklearn("logistic_regression", images, y, subs, seeds,
                              xt.reshape(-1, 1, 8, 8), n_classes=10)
    assert Q.shape == P.shape
    knn = train_predict_sklearn("knn", x, y, subs, seeds, xt, n_classes=10)  # no sample_weight
    np.testing.assert_array_equal(knn, train_predict_sklearn("knn", x, y, subs, seeds, xt,
                                                             n_classes=10))
    forest = [train_predict_sklearn("random_forest", x, y, subs[:1], seeds[:1], xt,
                                    n_classes=10) for _ in range(2)]
    np.testing.assert_array_equal(*forest)


# --------------------------------------------------------------------------------------------
# Bad inputs


@pytest.mark.parametrize("kwargs, name", [
    (dict(model="vgg"), "model"),
    (dict(steps=0), "steps"),
    (dict(batch_size=0), "batch_size"),
    (dict(optimizer="rmsprop"), "optimizer"),
    (dict(lr=0.0), "lr"),
    (dict(dtype="float16"), "dtype"),
    (dict(group_size=0), "group_size"),
    (dict(augment="yes"), "augment"),
    (dict(rotation=-1.0), "rotation"),
    (dict(rotation=181.0), "rotation"),
    (dict(scale=1.0), "scale"),
    (dict(shear=90.0), "shear"),
    (dict(elastic=-0.5), "elastic"),
    (dict(lr_schedule="step"), "lr_schedule"),
    (dict(subset_rows=0), "subset_rows"),
    (dict(subset_rows="all"), "subset_rows"),
])
def test_bad_config_names_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=f"'{name}' parameter of TrainConfig"):
        TrainConfig(**kwargs)


def test_bad_inputs_name_the_parameter():
    x, y, xt, _ = _images(n=20, n_test=3)
    subs, seeds = _subsets(20, 3, 5)
    cfg = TrainConfig(**LENET)
    with pytest.raises(ValueError, match="'seeds' parameter"):
        train_predict(x, y, subs, seeds[:2], xt, cfg, n_classes=3)
    with pytest.raises(ValueError, match="'subsets' parameter"):
        train_predict(x, y, [np.array([0, 20])], [1], xt, cfg, n_classes=3)
    with pytest.raises(ValueError, match="'y_train' parameter"):
        train_predict(x, y, subs, seeds, xt, cfg, n_classes=2)
    with pytest.raises(ValueError, match="'x_test' parameter"):
        train_predict(x, y, subs, seeds, xt[:, :, :20], cfg, n_classes=3)
    with pytest.raises(ValueError, match="'path' parameter"):
        train_predict(x, y, subs, seeds, xt, cfg, n_classes=3, path="quick")
    with pytest.raises(ValueError, match="'input_shape' parameter"):
        train_predict(x[:, :, :8, :8], y, subs, seeds, xt[:, :, :8, :8], cfg, n_classes=3)
    with pytest.raises(ValueError, match="'name_or_factory' parameter of build_model"):
        build_model("alexnet", (1, 28, 28), 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs():
    x, y, xt, _ = _images(n=40, n_test=5)
    subs, seeds = _subsets(40, 3, 10)
    P = train_predict(x, y, subs, seeds, xt, TrainConfig(**LENET), n_classes=3, device="cuda")
    assert P.shape == (3, 5)


def test_the_callers_default_dtype_changes_no_classifier_and_is_restored():
    """Under ``torch.set_default_dtype(torch.float64)`` (common in scientific code) every
    parameter was built float64 and its initialisation drew other numbers, so the same seeds
    trained other classifiers (an MLP on digits: other predictions); now the models are
    built and trained under float32, as in a worker process, and the caller's default dtype,
    RNG state and thread count are as they were."""
    xs, ys, xt, _ = _digits()
    xs, ys, xt = xs[:200], ys[:200], xt[:40]
    subs, seeds = _subsets(len(xs), 4, 60)
    cfg = TrainConfig(model="mlp", steps=8, batch_size=16, group_size=2)
    want, W = train_predict_with_weights(xs, ys, subs, seeds, xt, cfg, n_classes=10)
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(5)
        state, threads = torch.get_rng_state(), torch.get_num_threads()
        got, V = train_predict_with_weights(xs, ys, subs, seeds, xt, cfg, n_classes=10)
        assert torch.get_default_dtype() == torch.float64
        assert torch.equal(torch.get_rng_state(), state)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_default_dtype(torch.float32)
    np.testing.assert_array_equal(got, want)
    assert all(torch.equal(V[i][k], W[i][k]) for i in range(4) for k in W[i])


def test_float32_blocks_of_two_threads_keep_float32_inside_and_restore_the_callers():
    """``float32_default`` saved and restored the process's default dtype per block: two
    threads' blocks interleaved (A enters, B enters, A leaves, B leaves, as two
    ``train_predict`` calls or a training beside an ``Ensemble.load``) gave B the caller's
    float64 while it still built and trained, and left float32 as the caller's default for
    good. Now the blocks of all threads count as one."""
    import threading

    from poisoncert.training.models import float32_default

    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = []

    def first():
        with float32_default():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def second():
        a_in.wait(10)
        with float32_default():
            b_in.set()
            a_out.wait(10)
            seen.append(torch.get_default_dtype())

    torch.set_default_dtype(torch.float64)
    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        after = torch.get_default_dtype()
    finally:
        torch.set_default_dtype(torch.float32)
    assert seen == [torch.float32] and after == torch.float64
