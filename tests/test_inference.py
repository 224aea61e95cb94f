"""training.predict: saved classifiers on new inputs, identical to the engine's predictions."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from poisoncert.training import TrainConfig, predict, train_predict_with_weights  # noqa: E402


def _problem(seed=0, n=90, n_test=25, k=3, shape=(1, 16, 16)):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n + n_test)
    x = rng.random((n + n_test, *shape), dtype=np.float32) * 0.3
    if len(shape) == 3:
        for j in range(k):
            x[y == j, :, 2 + 2 * j:5 + 2 * j, 3:12] += 1.0
    else:
        x[np.arange(n + n_test), y] += 1.0
    return x[:n], y[:n], x[n:], y[n:]


def _bn_factory(shape, k):
    c, h, w = shape
    return torch.nn.Sequential(torch.nn.Conv2d(c, 3, 3, bias=False), torch.nn.BatchNorm2d(3),
                               torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(3 * (h - 2) * (w - 2), k))


def _tied_factory(shape, k):
    """A user model with one layer used twice: its state dict names the weight twice."""
    lin = torch.nn.Linear(k, k)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), k), lin,
                               torch.nn.ReLU(), lin)


class _Scaled(torch.nn.Module):
    """A layer with a non-persistent buffer (not in its state dict)."""

    def __init__(self, n_in, k):
        super().__init__()
        self.lin = torch.nn.Linear(n_in, k)
        self.register_buffer("scale", torch.full((k,), 2.0), persistent=False)

    def forward(self, x):
        return self.lin(x.flatten(1)) * self.scale


def _nonpersistent_factory(shape, k):
    return _Scaled(int(np.prod(shape)), k)


def test_modules_whose_state_is_not_their_parameters_train_one_at_a_time():
    """Tied weights and non-persistent buffers: the stacked state dicts could not be loaded
    back into the module, so ``fast`` and ``vmap`` train such a model by the per-model loop
    (they failed at evaluation before), bit for bit as ``reference``."""
    from poisoncert.training.fast import stacking
    from poisoncert.training.models import build_model

    for factory in (_tied_factory, _nonpersistent_factory):
        assert stacking(build_model(factory, (2, 3, 3), 3), how="vmap") is None
        assert stacking(build_model(_bn_factory, (2, 3, 3), 3), how="vmap") == "vmap"
        x, y, xt, _ = _problem(shape=(2, 3, 3))
        rng = np.random.default_rng(1)
        subsets = [rng.integers(0, len(x), 20) for _ in range(4)]
        cfg = TrainConfig(model=factory, steps=5, batch_size=8, group_size=2)
        P, W = train_predict_with_weights(x, y, subsets, [1, 2, 3, 4], xt, cfg, n_classes=3,
                                          path="reference")
        for path in ("fast", "vmap"):
            Q, V = train_predict_with_weights(x, y, subsets, [1, 2, 3, 4], xt, cfg,
                                              n_classes=3, path=path)
            np.testing.assert_array_equal(Q, P)
            assert all(torch.equal(a[k], b[k]) for a, b in zip(V, W, strict=True) for k in a)
            np.testing.assert_array_equal(
                predict(cfg, V, xt, input_shape=(2, 3, 3), n_classes=3, path=path), P)


@pytest.mark.parametrize("model, path, shape", [
    ("lenet5", "fast", (1, 16, 16)), ("lenet5", "reference", (1, 16, 16)),
    ("lenet5", "vmap", (1, 16, 16)), ("cnn_small", "fast", (2, 12, 12)),
    ("lenet5", "bmm", (1, 16, 16)), ("cnn_small", "bmm", (2, 12, 12)),
    ("lenet5", "cmajor", (1, 16, 16)), ("cnn_small", "cmajor", (2, 12, 12)),
    ("mlp", "fast", (12,)), ("resnet18", "fast", (3, 8, 8)), ("resnet18", "cmajor", (3, 8, 8)),
    (_bn_factory, "fast", (2, 7, 7))])
def test_predict_equals_training_predictions(model, path, shape):
    x, y, xt, _ = _problem(shape=shape)
    rng = np.random.default_rng(1)
    subsets = [rng.integers(0, len(x), 20) for _ in range(7)]
    subsets[3] = np.array([], dtype=np.int64)  # an empty sub-dataset abstains
    seeds = list(range(100, 107))
    cfg = TrainConfig(model=model, steps=4 if model == "resnet18" else 6, batch_size=8,
                      group_size=3, eval_batch_size=10)
    P, W = train_predict_with_weights(x, y, subsets, seeds, xt, cfg, n_classes=3, path=path)
    got = predict(cfg, W, xt, input_shape=shape, n_classes=3, path=path)
    np.testing.assert_array_equal(got, P)
    assert (got[3] == -1).all()
    logits = predict(cfg, W, xt, input_shape=shape, n_classes=3, path=path, output="logits")
    assert logits.shape == (7, len(xt), 3) and np.isnan(logits[3]).all()
    live = [i for i in range(7) if i != 3]
    np.testing.assert_array_equal(logits[live].argmax(-1), P[live])
    # a classifier alone (another group, other neighbours) predicts the same
    alone = predict(cfg, [W[5]], xt, input_shape=shape, n_classes=3, path=path)
    np.testing.assert_array_equal(alone[0], P[5])
    # groups evaluated in threads: the same labels
    np.testing.assert_array_equal(
        predict(cfg, W, xt, input_shape=shape, n_classes=3, path=path, threads=3), P)


def test_predict_reports_progress_and_checks_shape():
    x, y, xt, _ = _problem()
    cfg = TrainConfig(model="lenet5", steps=2, batch_size=4, group_size=2)
    _, W = train_predict_with_weights(x, y, [np.arange(10)] * 3, [1, 2, 3], xt, cfg,
                                      n_classes=3)
    seen = []
    predict(cfg, W, xt, input_shape=(1, 16, 16), n_classes=3, progress=seen.append)
    assert sum(seen) == 3
    with pytest.raises(ValueError, match="'x' parameter of predict must be an array of shape"):
        predict(cfg, W, xt[:, :, :8], input_shape=(1, 16, 16), n_classes=3)
    with pytest.raises(ValueError, match="'output' parameter"):
        predict(cfg, W, xt, input_shape=(1, 16, 16), n_classes=3, output="probs")


@pytest.mark.parametrize("path", ["fast", "reference"])
def test_predict_reports_predictions_chunk_by_chunk(path):
    """``progress_unit="predictions"``: ``progress(k)`` as each chunk of inputs is through a
    group, ``k`` its classifiers times its inputs (a group's whole pass over 10,000 CIFAR-10
    images by ResNet-18s takes minutes on the CPU), abstaining classifiers first; the labels
    and logits are the same bits as without it, whatever the threads."""
    x, y, xt, _ = _problem(n_test=23)
    cfg = TrainConfig(model="lenet5", steps=2, batch_size=4, group_size=2, eval_batch_size=5)
    _, W = train_predict_with_weights(x, y, [np.arange(10)] * 10, list(range(1, 11)), xt, cfg,
                                      n_classes=3)
    W[4] = None
    shape = (1, 16, 16)
    want = predict(cfg, W, xt, input_shape=shape, n_classes=3, path=path)
    logits = predict(cfg, W, xt, input_shape=shape, n_classes=3, path=path, output="logits")
    group = 8 if path == "fast" else 1
    sizes = [min(group, 9 - a) for a in range(0, 9, group)]
    chunks = [5, 5, 5, 5, 3]
    for threads in (1, 3):
        seen = []
        got = predict(cfg, W, xt, input_shape=shape, n_classes=3, path=path, threads=threads,
                      progress=seen.append, progress_unit="predictions")
        np.testing.assert_array_equal(got, want)
        assert seen[0] == 23  # the abstaining classifier's, first
        assert sorted(seen[1:]) == sorted(g * c for g in sizes for c in chunks)
        assert sum(seen) == 10 * 23
    seen = []
    np.testing.assert_array_equal(
        predict(cfg, W, xt, input_shape=shape, n_classes=3, path=path, output="logits",
                progress=seen.append, progress_unit="predictions"), logits)
    assert sum(seen) == 10 * 23 and len(seen) == 1 + len(sizes) * len(chunks)
    with pytest.raises(ValueError, match="'progress_unit' parameter of predict"):
        predict(cfg, W, xt, input_shape=shape, n_classes=3, progress_unit="inputs")


@pytest.mark.parametrize("model, path, shape", [
    ("lenet5", "fast", (1, 16, 16)), ("lenet5", "reference", (1, 16, 16)),
    ("lenet5", "bmm", (1, 16, 16)), ("mlp", "fast", (12,)), ("resnet18", "fast", (3, 8, 8)),
    (_bn_factory, "fast", (2, 7, 7))])
def test_fewer_groups_than_threads_share_the_inputs_bit_for_bit(monkeypatch, model, path,
                                                                shape):
    """A review's case: 4 classifiers (one group on the CPU) were predicted on one core of
    two. The inputs are now shared among the threads in pieces that begin at chunk
    boundaries: the two pieces run at the same time (a barrier both must reach), and every
    logit is the same bits as on one thread, with any number of threads. A heavy model
    (ResNet-18: each part holds a copy of the group and its activations) keeps one part per
    group."""
    import threading

    from poisoncert.training import inference

    x, y, xt, _ = _problem(n_test=23, shape=shape)
    cfg = TrainConfig(model=model, steps=3, batch_size=4, group_size=2, eval_batch_size=5)
    _, W = train_predict_with_weights(x, y, [np.arange(20)] * 4, [1, 2, 3, 4], xt, cfg,
                                      n_classes=3, path=path)
    kw = {"input_shape": shape, "n_classes": 3, "path": path, "output": "logits"}
    want = predict(cfg, W, xt, threads=1, **kw)
    for threads in (2, 3, 8):
        np.testing.assert_array_equal(predict(cfg, W, xt, threads=threads, **kw), want)
    np.testing.assert_array_equal(predict(cfg, W, xt, threads=2, **kw | {"output": "labels"}),
                                  want.argmax(-1))
    evaluate = inference.evaluate
    if model == "resnet18":  # heavy: one part per group, as before (SHARE_MAX_BYTES)
        sizes = []

        def whole(state_dicts, x, *args, **kwargs):
            sizes.append(len(x))
            return evaluate(state_dicts, x, *args, **kwargs)

        monkeypatch.setattr(inference, "evaluate", whole)
        np.testing.assert_array_equal(predict(cfg, W, xt, threads=2, **kw), want)
        assert sizes == [len(xt)]
        return
    together = threading.Barrier(2, timeout=20)

    def meets(*args, **kwargs):
        together.wait()  # a second piece of the inputs in another thread, or a timeout
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(inference, "evaluate", meets)
    np.testing.assert_array_equal(predict(cfg, W, xt, threads=2, **kw), want)


def test_modules_built_in_threads_at_once_leave_the_rng_as_it_was(monkeypatch):
    """Where a state dict does not hold every tensor, a module is built under
    ``torch.random.fork_rng`` (its constructor draws); two threads' forks interleaved
    restored the process's RNG to the state the second one saved, not the one before
    (since the inputs' parts of one group are evaluated in threads at once, also for T <= 8).
    The first build waits for a second thread's, which outlasts it in its fork."""
    import threading
    import time

    from poisoncert.training import inference

    x, y, xt, _ = _problem(n_test=23, shape=(12,))
    cfg = TrainConfig(model="mlp", steps=3, batch_size=4, group_size=2, eval_batch_size=5)
    _, W = train_predict_with_weights(x, y, [np.arange(20)] * 2, [1, 2], xt, cfg,
                                      n_classes=3, path="fast")
    kw = {"input_shape": (12,), "n_classes": 3, "path": "fast", "output": "logits"}
    want = predict(cfg, W, xt, threads=1, **kw)
    monkeypatch.setattr(inference, "state_dict_is_own", lambda model: False)
    build, calls, second = inference.build_model, [], threading.Event()

    def build_drawing(*args, **kwargs):
        if torch.empty(()).is_meta:  # an architecture's template (no memory, no draws)
            return build(*args, **kwargs)
        torch.rand(1)  # a constructor that draws
        calls.append(threading.get_ident())
        if len(calls) == 1:
            second.wait(1.0)  # a second thread's build, if it can begin meanwhile
        elif len(calls) == 2:
            second.set()
            time.sleep(0.3)  # ... ends after the first's
        return build(*args, **kwargs)

    monkeypatch.setattr(inference, "build_model", build_drawing)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    np.testing.assert_array_equal(predict(cfg, W, xt, threads=2, **kw), want)
    assert len(set(calls)) == 2  # two threads built modules
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize("slow_first", [False, True])
def test_an_interrupt_stops_the_queued_groups(monkeypatch, slow_first):
    """Ctrl-C while groups are evaluated in threads: the groups not started are dropped (the
    pool used to finish every queued group first: 48 s on a T = 256 run before the command
    could stop). The first group to finish raises; the others hold their thread for 3 s, so
    the groups running when it raises are the only others that finish (at most one per
    thread) unless this process is starved for 3 s.

    ``slow_first``: the queue's first group takes 1 s longer, so a later group raises first.
    The error used to wait for the groups before it in the queue (a CI failure: 4 groups
    ran while the first one held its thread)."""
    import threading
    import time

    import poisoncert.training.inference as inference

    x, y, xt, _ = _problem(shape=(12,))
    cfg = TrainConfig(model="mlp", steps=1, batch_size=4, group_size=2)
    _, W = train_predict_with_weights(x, y, [np.arange(10)] * 2, [1, 2], xt, cfg, n_classes=3)
    W = W * 40  # 80 classifiers: dozens of groups
    if slow_first:
        evaluate = inference.evaluate

        def slow(sds, *args):
            if sds[0] is W[0]:
                time.sleep(1.0)
            return evaluate(sds, *args)

        W = [dict(w) for w in W]  # each classifier its own dict, so the first is known
        monkeypatch.setattr(inference, "evaluate", slow)
    seen, lock = [], threading.Lock()

    def interrupt(k):
        with lock:
            seen.append(k)
            first = len(seen) == 1
        if first:
            raise KeyboardInterrupt
        threading.Event().wait(3.0)

    with pytest.raises(KeyboardInterrupt):
        predict(cfg, W, xt, input_shape=(12,), n_classes=3, threads=2, progress=interrupt)
    groups = -(-80 // max(seen))
    assert len(seen) <= 1 + 2 < groups  # the group that raised and one more per thread



@pytest.mark.parametrize("model, path, shape, dtype", [
    ("lenet5", "twin", (1, 16, 16), "float32"), ("lenet5", "bmm", (1, 16, 16), "float64"),
    ("cnn_small", "bmm", (2, 12, 12), "float32"), ("cnn_small", "cmajor", (2, 12, 12), "float64"),
    ("mlp", "fast", (12,), "float64"),
    ("resnet18", "fast", (3, 8, 8), "float32"), ("resnet18", "cmajor", (3, 8, 8), "float64"),
    (_bn_factory, "fast", (2, 7, 7), "float64")])
def test_stacked_evaluation_loads_the_state_dicts_as_the_modules_do(model, path, shape, dtype):
    """``evaluate`` stacks each group straight from the state dicts (a template on the meta
    device, one copy per parameter name): the same logits, bit for bit, as building every
    plain module, loading its state dict and stacking the modules (the former route, which
    state dicts that do not fit the architecture still take, for its error)."""
    from poisoncert.training.fast import path_stacking, stack_models
    from poisoncert.training.inference import (
        _loadable,
        _modules,
        _template,
        eval_group_size,
        evaluate,
    )

    x, y, xt, _ = _problem(shape=shape)
    rng = np.random.default_rng(2)
    cfg = TrainConfig(model=model, steps=3, batch_size=8, group_size=4, eval_batch_size=7,
                      dtype=dtype)
    subsets = [rng.integers(0, len(x), 20) for _ in range(5)]
    _, W = train_predict_with_weights(x, y, subsets, list(range(5)), xt, cfg, n_classes=3,
                                      path=path)
    W = [{k: v.float() for k, v in w.items()} for w in W]  # saved weights: float32 files
    assert _loadable(_template(cfg, shape, 3), W)
    xs = torch.as_tensor(xt).to(cfg.torch_dtype)
    got = evaluate(W, xs, cfg, shape, 3, "cpu", path)
    models = _modules(cfg, W, shape, 3, "cpu")
    E = eval_group_size(models[0], "cpu")
    assert E > len(models)  # one padded group, as evaluate stacks it
    with torch.no_grad():
        net = stack_models(models + [models[-1]] * (E - len(models)),
                           how=path_stacking(path, "cpu"))
        want = torch.cat([net.forward_eval(c) for c in xs.split(7)], dim=1)[:len(models)]
    assert got.dtype == cfg.torch_dtype and torch.equal(got, want)
    with pytest.raises(RuntimeError, match="Missing key"):  # load_state_dict's own error
        evaluate([{k: v for k, v in W[0].items() if not k.endswith("bias")}], xs, cfg, shape,
                 3, "cpu", path)
