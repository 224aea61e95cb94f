"""Bounded resources (issue 9): available memory, the memory check, the estimates' terms
against the allocations they describe, the bounded certified-accuracy curve, the CLI's
one-line errors for the machine's limits, and the worker bound."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import tracemalloc
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pytest

from poisoncert import resources
from poisoncert.resources import ResourceError, Term, available_memory, check_memory

GiB = 2**30


# ------------------------------------------------------------------------- available memory
def _fake_proc(tmp_path: Path, meminfo_kb: int | None, cgroup_line: str = "0::/") -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    if meminfo_kb is not None:
        (proc / "meminfo").write_text(f"MemTotal:       99999999 kB\n"
                                      f"MemFree:          100000 kB\n"
                                      f"MemAvailable:   {meminfo_kb:>8} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup_line + "\n")
    (proc / "self" / "statm").write_text("1000 500 0 0 0 0 0\n")
    return proc


def test_available_memory_reads_memavailable(tmp_path, monkeypatch):
    monkeypatch.delenv(resources.MEMORY_LIMIT_ENV, raising=False)
    proc = _fake_proc(tmp_path, 8 * 2**20)  # 8 GiB in kB
    got = available_memory(proc=proc, cgroup=tmp_path / "no-cgroup")
    if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
        assert got == (8 * GiB, "MemAvailable in /proc/meminfo")
    else:  # pragma: no cover - a shell with ulimit -v
        assert got[0] <= 8 * GiB


@pytest.mark.parametrize("version", [2, 1])
def test_available_memory_cgroup_limit_less_unreclaimable_usage(tmp_path, monkeypatch,
                                                               version):
    monkeypatch.delenv(resources.MEMORY_LIMIT_ENV, raising=False)
    cg = tmp_path / "cgroup"
    if version == 2:
        proc = _fake_proc(tmp_path, 64 * 2**20, "0::/job")
        folder = cg / "job"
        folder.mkdir(parents=True)
        (folder / "memory.max").write_text(f"{4 * GiB}\n")
        (folder / "memory.current").write_text(f"{3 * GiB}\n")
        (folder / "memory.stat").write_text(f"anon 1\ninactive_file {GiB}\n")
        name = "cgroup memory.max"
    else:
        proc = _fake_proc(tmp_path, 64 * 2**20, "4:memory:/job")
        folder = cg / "memory"  # the path of /proc/self/cgroup is missing: the mount's root
        folder.mkdir(parents=True)
        (folder / "memory.limit_in_bytes").write_text(f"{4 * GiB}\n")
        (folder / "memory.usage_in_bytes").write_text(f"{3 * GiB}\n")
        (folder / "memory.stat").write_text(f"total_inactive_file {GiB}\n")
        name = "cgroup memory.limit_in_bytes"
    got = available_memory(proc=proc, cgroup=cg)
    # 4 GiB limit, 3 GiB used of which 1 GiB is reclaimable page cache: 2 GiB left
    if resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
        assert got == (2 * GiB, name)


def test_available_memory_cgroup_without_limit_is_ignored(tmp_path, monkeypatch):
    monkeypatch.delenv(resources.MEMORY_LIMIT_ENV, raising=False)
    proc = _fake_proc(tmp_path, 2**20, "0::/")
    (tmp_path / "cg").mkdir()
    (tmp_path / "cg" / "memory.max").write_text("max\n")
    got = available_memory(proc=proc, cgroup=tmp_path / "cg")
    assert got[1] != "cgroup memory.max"


@pytest.mark.parametrize("text, expected", [("8G", 8 * GiB), ("512M", 512 * 2**20),
                                            ("1000", 1000), ("1.5GiB", 3 * GiB // 2)])
def test_memory_limit_env_caps_what_is_planned_for(tmp_path, monkeypatch, text, expected):
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, text)
    proc = _fake_proc(tmp_path, 64 * 2**20)
    assert available_memory(proc=proc, cgroup=tmp_path) == (expected,
                                                            f"${resources.MEMORY_LIMIT_ENV}")


def test_memory_limit_env_never_raises_what_is_there(tmp_path, monkeypatch):
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1T")
    proc = _fake_proc(tmp_path, 2**20)  # 1 GiB available
    assert available_memory(proc=proc, cgroup=tmp_path)[0] <= GiB


@pytest.mark.parametrize("text", ["lots", "-5G", "8X", "G"])
def test_memory_limit_env_bad_value_is_one_line(monkeypatch, text):
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, text)
    with pytest.raises(ResourceError) as e:
        available_memory()
    msg = str(e.value)
    assert "\n" not in msg and resources.MEMORY_LIMIT_ENV in msg and repr(text) in msg


def _quick_checks():
    """The checks that skip small amounts (each under 64 MiB here): predict's, the
    ensemble's predictions' and the vote counts'."""
    from poisoncert.experiment.ensemble import _check_predictions_fit, check_predict_memory
    from poisoncert.votes import check_counts_fit

    return {  # about 14 MiB, 7 MiB and 23 MiB
        "check_predict_memory": lambda: check_predict_memory(100, 20_000, 10, 200, "CSV"),
        "_check_predictions_fit": lambda: _check_predictions_fit(100, 20_000, 10),
        "check_counts_fit": lambda: check_counts_fit(100_000, 10, "votes_from_predictions"),
    }


@pytest.mark.parametrize("name", sorted(_quick_checks()))
def test_an_explicit_memory_limit_holds_for_small_amounts_too(monkeypatch, name):
    """$POISONCERT_MEMORY_LIMIT=1M let predict's checks pass whatever they needed below
    64 MiB (their shortcut skipped the check, the limit with it): a limit the user sets is
    honoured whatever the amount; without one, small amounts still read nothing."""
    check = _quick_checks()[name]
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1M")
    with pytest.raises(ResourceError, match=re.escape(f"${resources.MEMORY_LIMIT_ENV}")):
        check()
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "1G")
    check()  # fits (any machine running the tests has 29 MiB free)
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "lots")  # told, and not understood
    with pytest.raises(ResourceError, match="'lots'"):
        check()
    monkeypatch.setattr(resources, "available_memory", lambda **kw: pytest.fail("read"))
    for unset in (None, "", " "):  # no limit set: /proc is not read for small amounts
        with monkeypatch.context() as m:
            if unset is None:
                m.delenv(resources.MEMORY_LIMIT_ENV)
            else:
                m.setenv(resources.MEMORY_LIMIT_ENV, unset)
            check()


def test_small_need_is_exact_at_its_bound(monkeypatch):
    monkeypatch.delenv(resources.MEMORY_LIMIT_ENV, raising=False)
    assert resources.small_need(resources.SMALL_BYTES - 1)
    assert not resources.small_need(resources.SMALL_BYTES)
    monkeypatch.setenv(resources.MEMORY_LIMIT_ENV, "64M")
    assert not resources.small_need(0)


def test_available_memory_of_this_machine_is_plausible():
    got = available_memory()
    assert got is not None
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 <= got[0] <= max(total, got[0] if got[1].startswith("$") else total)


def test_usable_cpus():
    assert 1 <= resources.usable_cpus() <= (os.cpu_count() or 1)


# --------------------------------------------------------------------------------- the check
def _linear(v):
    """A small estimate: 1000 bytes per T plus 10 per ns times T, and a fixed part."""
    return [Term("prediction matrix", 1000 * v["T"], ("T",)),
            Term("sub-datasets", 10 * v["ns"] * v["T"], ("ns", "T")),
            Term("fixed", 500, ())]


def _brute_largest(key, values, avail):
    best = None
    for x in range(1, values[key]):
        need = sum(t.nbytes for t in _linear({**values, key: x}))
        if need * resources.SAFETY <= avail:
            best = x
    return best


def test_check_memory_passes_and_returns_the_need():
    assert check_memory(_linear, {"T": 3, "ns": 2}, where="w", available=(10**6, "s")) == 3560


def test_check_memory_without_a_figure_checks_nothing():
    assert check_memory(_linear, {"T": 10**9, "ns": 2}, where="w", available=None) > 10**12


@pytest.mark.parametrize("values", [{"T": 400, "ns": 2}, {"T": 30, "ns": 5000},
                                    {"T": 150, "ns": 150}])
def test_check_memory_names_the_largest_term_and_the_exact_largest_value(values):
    avail = (250_000, "test")
    terms = sorted(_linear(values), key=lambda t: -t.nbytes)
    with pytest.raises(ResourceError) as e:
        check_memory(_linear, values, where="w", available=avail)
    msg = str(e.value)
    key = max(terms[0].keys, key=lambda k: values[k])  # defaults 1: the larger value first
    high = _brute_largest(key, values, avail[0])
    assert "\n" not in msg
    assert msg.startswith(f"The '{key}' parameter of w must be an int in the range [1, {high}]")
    assert msg.endswith(f"Got {values[key]} instead.")


def test_check_memory_names_a_preferred_parameter_first():
    """``prefer`` (parameters that do not change results, e.g. a run's chunk size) comes before
    the largest term: the refusal of a run named selection.T although a smaller chunk size
    alone would have fitted."""
    def estimate(v):
        return [Term("prediction matrix", 3000 * v["T"], ("T",)),
                Term("chunk buffers", 2000 * v["chunk"], ("chunk",))]

    values, avail = {"T": 100, "chunk": 100}, (450_000 * resources.SAFETY, "test")
    with pytest.raises(ResourceError, match=r"^The 'T' parameter of w must be"):
        check_memory(estimate, values, where="w", available=avail)
    with pytest.raises(ResourceError, match=r"^The 'chunk' parameter of w must be an int in the "
                                            r"range \[1, 75\]"):
        check_memory(estimate, values, where="w", available=avail, prefer=("chunk",))


def test_check_memory_with_no_fitting_value_says_so():
    with pytest.raises(ResourceError, match="does not fit in memory whatever the value"):
        check_memory(_linear, {"T": 5, "ns": 5}, where="w", available=(100, "test"))


def test_check_memory_names_values_that_fit_together():
    """No one parameter is enough, two together are: the error gives such values (it said
    the run fits whatever the values; a reviewer's run with a smaller chunk and evaluation
    batch trained), each raised back as far as it still fits, checked by brute force."""
    def estimate(v):
        return [Term("chunk", 1000 * v["chunk"], ("chunk",)),
                Term("batch", 1000 * v["batch"], ("batch",)), Term("data", 10_000, ())]

    values, avail = {"chunk": 40, "batch": 40}, (30_000 * resources.SAFETY, "test")
    with pytest.raises(ResourceError) as e:
        check_memory(estimate, values, where="w", available=avail, prefer=("chunk", "batch"))
    msg = str(e.value)
    assert msg.startswith("This (w) does not fit in memory whatever the value of any one of "
                          "'chunk', 'batch', but fits with chunk = 1, batch = 19 together: ")
    got = {k: int(v) for k, v in re.findall(r"(chunk|batch) = (\d+)", msg)}
    chosen = {**values, **got}
    assert sum(t.nbytes for t in estimate(chosen)) * resources.SAFETY <= avail[0]
    for k in got:  # none could be one larger
        bigger = {**chosen, k: chosen[k] + 1}
        assert sum(t.nbytes for t in estimate(bigger)) * resources.SAFETY > avail[0], k


# ------------------------------------------------------------------- the estimates' terms
@pytest.fixture()
def tiny_run(tmp_path):
    from poisoncert.config import from_dict
    from poisoncert.experiment.split import split_data

    rng = np.random.default_rng(0)
    x = rng.random((400, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 3, 400)
    np.savez(tmp_path / "img.npz", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])

    def make(**training):
        cfg = from_dict({"data": {"name": f"npz:{tmp_path / 'img.npz'}", "n_clean": 20},
                         "selection": {"scheme": "with_replacement", "ns": 300, "T": 12},
                         "training": {"model": "mlp", "steps": 50, "batch_size": 16,
                                      "group_size": 4, **training},
                         "run": {"chunk_size": 6}})
        return cfg, split_data(cfg.data)

    return make


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _terms(cfg, data, workers=1):
    from poisoncert.experiment.resources import run_memory, run_shape, run_values

    shape = run_shape(cfg, data, in_process=workers == 1, local_workers=True)
    return {t.what.split(" (x")[0]: t.nbytes
            for t in run_memory(run_values(cfg, workers), shape)}, shape


@pytest.mark.parametrize("training", [{}, {"augment": True},
                                      {"augment": True, "rotation": 10.0, "elastic": 1.0}])
def test_minibatch_term_covers_the_draws_it_describes(tiny_run, training):
    """The draws of a group (``sample_minibatches`` per classifier, kept, plus the engine's
    stacked rows, labels, shifts or warps) take at most the term's bytes, and more than 2/3 of
    them (the term adds the temporaries of drawing one classifier to the peak of stacking)."""
    pytest.importorskip("torch")
    from poisoncert.training.minibatches import sample_minibatches

    cfg, data = tiny_run(**training)
    terms, shape = _terms(cfg, data)
    tc, G = cfg.training, cfg.training.models_per_group
    m = 20 + 300
    labels = np.arange(m) % 3
    seeds = range(G)

    def group():
        draws = [sample_minibatches(labels, tc, s, image_shape=shape.input_shape)
                 for s in seeds]
        rows = [np.arange(m)[d.positions] for d in draws]
        table = np.stack(rows, axis=1)  # the engine's rows_t, then its labels y[rows_t]
        stacked = [table, labels[table]]
        for name in ("shifts", "warps", "fields"):
            if getattr(draws[0], name) is not None:
                stacked.append(np.stack([getattr(d, name) for d in draws], axis=1))
        return draws, rows, stacked

    measured = _peak(group)
    assert measured <= terms["minibatch tables of a group"] <= 1.5 * measured


def test_subset_and_prediction_terms_cover_their_arrays(tiny_run, tmp_path):
    """A chunk's sub-datasets (``SubsetPlan.subsets``) and the assembly of the prediction
    matrix (``votes_from_predictions`` and the accuracy mask) fit in their terms."""
    from poisoncert import selection
    from poisoncert.experiment.resources import CLASSIFIER_BYTES, PREDICTION_BYTES
    from poisoncert.experiment.split import subset_plan
    from poisoncert.votes import votes_from_predictions

    cfg, data = tiny_run()
    terms, _ = _terms(cfg, data)
    plan = subset_plan(cfg.selection, data)
    chunk = 6 + 4 - 1
    seeds = selection.model_seeds(0, chunk)
    drawn = _peak(lambda: plan.subsets(0, seeds))
    assert drawn <= terms["sub-datasets of a chunk"] <= 1.5 * drawn

    T, n_test = 200, 5000
    # no abstentions: every prediction counts, the largest temporaries
    preds = np.random.default_rng(1).integers(0, 3, (T, n_test)).astype(np.int16)
    labels = np.zeros(n_test, dtype=np.int64)

    def assemble():
        joined = np.concatenate([preds[:100], preds[100:]], axis=0)
        votes_from_predictions(joined, 3)
        return (joined == labels[None, :]).mean(axis=1)

    measured = _peak(assemble) + preds.nbytes  # the chunk arrays are held meanwhile
    assert measured <= T * (n_test * PREDICTION_BYTES + CLASSIFIER_BYTES) <= 1.5 * measured


@pytest.mark.parametrize("key", ["selection.T", "selection.ns", "run.chunk_size",
                                 "training.steps", "training.batch_size",
                                 "training.group_size", "training.eval_batch_size",
                                 "training.max_shift", "training.workers"])
def test_run_estimate_grows_with_every_parameter(tiny_run, key):
    """The bisection of ``check_memory`` needs every estimate to grow with each parameter."""
    pytest.importorskip("torch")
    from poisoncert.experiment.resources import run_memory, run_shape, run_values

    for training in ({}, {"augment": True}, {"path": "reference"}, {"model": "resnet18"}):
        cfg, data = tiny_run(**training)
        for in_process in (True, False):
            shape = run_shape(cfg, data, in_process=in_process, local_workers=True)
            base = run_values(cfg, 4)
            low = 0 if key == "training.max_shift" else 1
            xs = sorted({low, low + 1, 2, 3, 5, 8, 13, 100, 1000, 10**6, 2**40})
            totals = [sum(t.nbytes for t in run_memory({**base, key: x}, shape)) for x in xs]
            assert totals == sorted(totals), (key, training, in_process)


def test_one_model_at_a_time_and_gpu_terms(tiny_run):
    """Without a stacked twin (or on the reference path) one model's activations exist at a
    time; on a GPU the activations, weights and evaluation batch are not host memory."""
    pytest.importorskip("torch")
    import dataclasses

    cfg, data = tiny_run(group_size=8)
    fast, shape = _terms(cfg, data)
    ref, ref_shape = _terms(dataclasses.replace(
        cfg, execution=dataclasses.replace(cfg.execution, path="reference")), data)
    assert shape.model.stacked and not ref_shape.model.stacked
    # eight models' activations at once (and kept longer by the stacked kernels) against one
    assert fast["training batch and activations"] >= 8 * ref["training batch and activations"]
    assert fast["test set and evaluation batch"] > ref["test set and evaluation batch"]
    assert fast["weights and optimizer state"] > ref["weights and optimizer state"]
    from poisoncert.experiment.resources import run_memory, run_values

    gpu = {t.what: t.nbytes for t in run_memory(
        run_values(cfg, 1), dataclasses.replace(shape, on_gpu=True))}
    assert gpu["training batch and activations"] == gpu["weights and optimizer state"] == 0
    assert gpu["minibatch tables of a group"] == fast["minibatch tables of a group"]


def test_activation_term_counts_the_rows_a_step_forwards(tiny_run):
    """Where a step forwards each sub-dataset's rows instead of the batch's draws
    (``training.subset_rows``: null where it applies, or explicit), the activations are the
    rows'; where it does not apply (augmentation, the reference path, ``off``), the draws'."""
    pytest.importorskip("torch")
    import dataclasses

    from poisoncert.experiment.learners import auto_subset_rows

    def run(ns=5, path="fast", **training):
        cfg, data = tiny_run(model="lenet5", batch_size=64, **training)
        cfg = dataclasses.replace(cfg, selection=dataclasses.replace(cfg.selection, ns=ns),
                                  execution=dataclasses.replace(cfg.execution, path=path))
        terms, shape = _terms(cfg, data)
        return terms["training batch and activations"], shape.step_rows, cfg, data

    rows25, how, cfg, data = run()  # |D^c| + ns = 25 rows below the batch of 64
    assert how == "subset" and auto_subset_rows(cfg, data) == 25
    draws, how, _, _ = run(subset_rows="off")
    assert how is None and draws * 25 == rows25 * 64
    assert run(subset_rows=30)[0] * 25 == rows25 * 30 and run(subset_rows=30)[1] == 30
    assert run(augment=True)[1] is None and run(path="reference")[1] is None
    assert run(path="graphed")[1] is None
    big, how, cfg, data = run(ns=300)  # 320 rows: the draws, as the engine does
    assert how == "subset" and auto_subset_rows(cfg, data) is None and big == draws


def test_evaluation_term_counts_the_cpus_group_and_chunk(tiny_run):
    """On the CPU a stacked model evaluates test inputs in groups of ``EVAL_GROUP["cpu"]``
    classifiers and chunks of at most ``EVAL_BATCH_CAP["cpu"]`` inputs, whatever the training
    group and ``eval_batch_size`` above it."""
    from poisoncert.training.settings import EVAL_BATCH_CAP

    cap = EVAL_BATCH_CAP["cpu"]
    term = {(G, E): _terms(*tiny_run(model="lenet5", group_size=G, eval_batch_size=E))[0][
        "test set and evaluation batch"] for G in (4, 10) for E in (cap // 2, cap, 50 * cap)}
    assert term[4, cap] == term[4, 50 * cap] > term[4, cap // 2]
    # the training group only adds its classifiers' logits (8 bytes per test input each)
    assert term[10, cap] - term[4, cap] == 6 * 50 * 8


@pytest.mark.parametrize("model", ["lenet5", "cnn_small", "resnet18"])
@pytest.mark.parametrize("path", ["fast", "cmajor"])
def test_activation_term_covers_what_a_stacked_step_keeps(tiny_run, model, path):
    """What autograd keeps for the backward pass of a stacked group's forward pass (every
    saved tensor's storage, counted once: on ``cmajor`` each convolution's patches), per
    image (the difference between batches of 32 and 16 draws, which leaves out what does not
    grow with the batch: the weights' reshaped copies), fits in the activation term's
    activations per image, and is more than a quarter of them (measured 0.28 for the
    ResNet-18 twin, 0.51-0.60 for the others; the term also holds the backward pass's
    gradients). Without the patches' term ``cmajor`` keeps more than the term."""
    torch = pytest.importorskip("torch")
    import dataclasses

    from poisoncert.training.fast import path_stacking, stack_models
    from poisoncert.training.models import init_model

    G, dt = 3, 4
    kept, per_image = {}, {}
    for B in (16, 32):
        cfg, data = tiny_run(model=model, batch_size=B, group_size=G)
        cfg = dataclasses.replace(cfg, execution=dataclasses.replace(cfg.execution, path=path))
        terms, shape = _terms(cfg, data)
        assert shape.step_rows in (None, "subset")  # 320-row sub-datasets: B draws a step
        sample = int(np.prod(shape.input_shape))
        per_image[B] = terms["training batch and activations"] // (G * B) - sample * dt
        models = [init_model(model, shape.input_shape, 3, s) for s in range(G)]
        net = stack_models(models, how=path_stacking(path, "cpu"))
        x = torch.randn(G, B, *shape.input_shape)
        storages = {}

        def keep(t, storages=storages):
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            net.forward_train(x.transpose(0, 1).contiguous() if net.batch_first else x)
        kept[B] = sum(storages.values())
    assert per_image[16] == per_image[32]
    grown = (kept[32] - kept[16]) / (G * 16)
    assert per_image[16] / 4 < grown <= per_image[16], (grown, per_image[16])


def test_train_run_refuses_before_writing(tiny_run, tmp_path):
    from poisoncert import experiment

    cfg, _ = tiny_run()
    big = cfg.__class__(**{**cfg.__dict__, "selection": cfg.selection.__class__(
        scheme="with_replacement", ns=300, T=10**12)})
    with pytest.raises(ResourceError) as e:
        experiment.train_run(big, tmp_path / "run", progress=False)
    assert str(e.value).startswith("The 'selection.T' parameter of the config must be an int "
                                   "in the range [1, ")
    assert not (tmp_path / "run").exists()


def test_check_run_memory_counts_worker_processes(tiny_run):
    from poisoncert.executors import LocalExecutor
    from poisoncert.experiment.resources import PROCESS_BYTES, check_run_memory

    cfg, data = tiny_run()
    one = check_run_memory(cfg, data, LocalExecutor(1), available=None)
    two = check_run_memory(cfg, data, LocalExecutor(2), available=None)
    assert two >= 2 * PROCESS_BYTES + one
    # a local Ray instance's workers are processes on this machine too; a cluster's are not
    pytest.importorskip("ray")
    from poisoncert.ray_executor import RayExecutor

    assert check_run_memory(cfg, data, RayExecutor(workers=2), available=None) == two
    assert check_run_memory(cfg, data, RayExecutor("auto", workers=2), available=None) < two
    # a refusal names train's --workers, which the Ray executor reads, not training.workers
    single = check_run_memory(cfg, data, RayExecutor(workers=1), available=None)  # a process
    room = int(resources.SAFETY * (single + two) / 2)  # one worker process fits, two do not
    refusals = {}
    for name, ex in (("local", LocalExecutor(2)), ("ray", RayExecutor(workers=2))):
        with pytest.raises(resources.ResourceError) as e:
            check_run_memory(cfg, data, ex, available=(room, "a test"))
        refusals[name] = str(e.value)
    assert refusals["local"].startswith("The 'training.workers' parameter of the config must "
                                        "be an int in the range [1, 1]")
    assert refusals["ray"].startswith("The 'workers' parameter of the Ray executor (train "
                                      "--workers) must be an int in the range [1, 1]")


def test_worker_processes_are_at_most_the_chunks(tiny_run, monkeypatch):
    """No executor runs more processes at once than the run has chunks (``LocalExecutor``:
    ``min(workers, chunks)``; Ray: at most ``workers`` tasks in flight): a local Ray
    instance's default of ``os.cpu_count()`` workers on a many-core machine counted 64 worker
    processes for a run of 2 chunks, and refused it at 8 GiB (it needs about 1 GiB)."""
    import os

    from poisoncert.executors import LocalExecutor
    from poisoncert.experiment.resources import check_run_memory
    from poisoncert.resources import MEMORY_LIMIT_ENV

    cfg, data = tiny_run()  # T = 12, chunk_size = 6: two chunks
    two = check_run_memory(cfg, data, LocalExecutor(2), available=None)
    assert check_run_memory(cfg, data, LocalExecutor(12), available=None) == two
    pytest.importorskip("ray")
    from poisoncert import ray_executor
    from poisoncert.ray_executor import RayExecutor

    # a many-core machine (the default is the CPUs this process may use since 8989f1d, not
    # os.cpu_count(): patching the latter alone left 2 workers, and this test failing)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(ray_executor, "usable_cpus", lambda: 64)
    assert RayExecutor().workers == 64
    assert check_run_memory(cfg, data, RayExecutor(), available=None) == two
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "8G")
    check_run_memory(cfg, data, RayExecutor())  # not refused


# ------------------------------------------------------------- the certified-accuracy curve
class _Cert:
    def __init__(self, prediction, radius):
        self.prediction, self.radius = np.asarray(prediction), np.asarray(radius)


@pytest.mark.parametrize("scale", [1, 10**4, 10**9, 2**52])
def test_accuracy_curve_is_the_same_step_curve_in_bounded_rows(scale):
    from poisoncert.certify import certified_accuracy
    from poisoncert.experiment.certify import DENSE_CURVE_LIMIT, accuracy_curve

    rng = np.random.default_rng(scale % 1000)
    n_test = 300
    labels = rng.integers(0, 3, n_test)
    prediction = np.where(rng.random(n_test) < 0.8, labels, (labels + 1) % 3)
    prediction[:10] = -1
    radius = (rng.random(n_test) * scale).astype(np.int64)
    radius[:10] = -1
    cert = _Cert(prediction, radius)
    curve = accuracy_curve(cert, labels, extra=[0, 7, 50])
    top = int(radius.max()) + 1
    if top < DENSE_CURVE_LIMIT:  # every integer radius, as before
        assert np.array_equal(curve.rho, np.union1d(np.arange(top + 1), [0, 7, 50]))
    else:
        assert len(curve.rho) <= 2 * n_test + 1 + 3
    # the step curve (value of the last row at or below rho) is the certified accuracy
    probes = np.unique(np.concatenate([rng.integers(0, top + 2, 500), radius[radius >= 0],
                                       radius[radius >= 0] + 1, [0, top, top + 1]]))
    probes = probes[probes <= min(top + 1, 2**53)]
    at = np.searchsorted(curve.rho, probes, side="right") - 1
    assert np.array_equal(curve.accuracy[at], certified_accuracy(cert, labels, probes))
    assert set([0, 7, 50]) <= set(curve.rho.tolist())


def test_accuracy_curve_dense_below_the_limit_is_unchanged():
    """Runs whose radii stay below the limit keep every integer rho (recorded files)."""
    from poisoncert.certify import certified_accuracy
    from poisoncert.experiment.certify import accuracy_curve

    labels = np.array([0, 1, 1, 0])
    cert = _Cert([0, 1, 0, -1], [3, 12, 5, -1])
    curve = accuracy_curve(cert, labels, extra=[20])
    assert curve.rho.tolist() == list(range(14)) + [20]
    assert np.array_equal(curve.accuracy, certified_accuracy(cert, labels, curve.rho))


# ------------------------------------------------------------ the CLI and the machine's limits
@pytest.mark.parametrize("exc, words", [
    (MemoryError("Unable to allocate 7.45 GiB for an array"), ["out of memory",
                                                               "7.45 GiB", "(MemoryError)"]),
    (MemoryError(), ["out of memory (MemoryError)"]),
    (OverflowError("Python int too large to convert to C long"),
     ["a number is too large", "C long", "(OverflowError)"]),
    (BrokenProcessPool("A process in the process pool was terminated abruptly"),
     ["worker process ended abruptly", "(BrokenProcessPool)"]),
])
def test_limit_errors_are_one_line_at_the_cli(tmp_path, monkeypatch, capsys, exc, words):
    import poisoncert.experiment as experiment
    from poisoncert.cli import main

    (tmp_path / "exp.yaml").write_text("data: {name: digits}\nselection: {scheme: binomial, "
                                       "ns: 30, T: 4}\n")

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(experiment, "train_run", boom)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["train", "exp.yaml", "--run-dir", "run", "-q"])
    out = capsys.readouterr()
    lines = (out.out + out.err).splitlines()
    assert e.value.code == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0]


def test_check_workers_bounds_local_processes_by_the_cpus():
    from poisoncert.executors import LocalExecutor, check_workers, make_executor

    cpus = resources.usable_cpus()
    assert check_workers(cpus) == cpus
    with pytest.raises(ValueError, match=rf"\[1, {cpus}\] \(the CPUs this process may use\). "
                                         rf"Got {cpus + 1} instead"):
        make_executor("local", workers=cpus + 1)
    assert LocalExecutor(cpus + 1).workers == cpus + 1  # built by hand: the caller's choice


def test_a_run_refused_under_ulimit_v_names_the_parameter(tmp_path):
    """A real ``poisoncert train`` under an address-space limit (``ulimit -v``): the estimate
    sees it and refuses before anything is written."""
    rng = np.random.default_rng(0)
    x = rng.random((300, 12)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    np.savez(tmp_path / "tiny.npz", x_train=x, y_train=y, x_test=x[:40], y_test=y[:40])
    (tmp_path / "exp.yaml").write_text(
        "data: {name: 'npz:tiny.npz'}\nselection: {scheme: with_replacement, ns: 40, T: 8}\n"
        "training: {model: mlp, steps: 2, group_size: 4}\n")
    limit = 6 * GiB

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    # about 12 GiB of minibatch tables: more than the cap, less than many machines have free
    env = {k: v for k, v in os.environ.items() if k != resources.MEMORY_LIMIT_ENV}
    proc = subprocess.run([sys.executable, "-m", "poisoncert.cli", "train", "exp.yaml",
                           "--run-dir", "run", "-q", "--training.steps", "10000000"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          preexec_fn=cap, env=env)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1 and proc.stdout == "" and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: The 'training.steps' parameter of the config must be "
                               "an int in the range [1, ")
    avail = available_memory()
    if avail is not None and avail[0] > limit:
        assert "RLIMIT_AS (ulimit -v)" in lines[0]
    assert not (tmp_path / "run").exists()
