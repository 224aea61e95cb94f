"""A table of bad inputs across the commands and the library (issue 9).

Every entry must give, for a command (run through ``poisoncert.cli.main``, the console entry
point): exit code 1, exactly one line ``error: ...`` naming what is wrong, no traceback, and
nothing written; for a library call: the expected error type, a one-line message naming what
is wrong, and nothing written. No entry may hang: each runs under a 60 s alarm, and all of them
in one driver process (``python tests/test_bad_inputs.py OUT.json``: one import of torch
instead of one per entry) under an overall timeout; the driver prints each entry's id before
running it, so a hard hang names its entry. ``test_console_script_agrees`` runs a few entries
as real ``poisoncert`` processes to show that the in-process driver sees what a user sees.

Counts and sizes are refused when their work would not fit in memory (``poisoncert.resources``);
the driver caps what it plans for at ``MEMORY_CAP`` (``$POISONCERT_MEMORY_LIMIT``), so that the
same entries are refused on a machine with hundreds of GiB free (it never raises what the
machine has). An entry may set other environment variables (``env``) for its run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

HANG_S = 60  # one entry
DRIVER_TIMEOUT = 600  # all of them
MEMORY_CAP = "64G"  # $POISONCERT_MEMORY_LIMIT of the driver


@dataclass(frozen=True)
class Bad:
    """One bad input: ``args`` of the CLI or ``call(fx)`` of the library; ``words`` must all
    appear in the one line; ``setup`` names files put in the entry's empty working folder."""

    id: str
    words: tuple[str, ...]
    args: tuple[str, ...] | None = None
    call: object = None
    error: str = "ValueError"  # library entries: the error type (a name in ERRORS)
    setup: tuple[str, ...] = ()
    lock: str | None = None  # a run folder this process holds locked during the entry
    tags: tuple[str, ...] = field(default=())
    env: tuple[tuple[str, str], ...] = ()  # environment variables set during the entry


def cli(id, *args, words=(), setup=(), lock=None, env=None):
    return Bad(id=id, args=tuple(str(a) for a in args), words=tuple(words), setup=tuple(setup),
               lock=lock, env=tuple((env or {}).items()))


def lib(id, call, error, *words, setup=(), lock=None, env=None):
    return Bad(id=id, call=call, error=error, words=tuple(words), setup=tuple(setup), lock=lock,
               env=tuple((env or {}).items()))


BIG = 10**30
R = ("radius", "--scheme", "wr", "--n", "100", "--ns", "5")

# ---------------------------------------------------------------------------------- radius
RADIUS = [
    cli("radius-gap-alpha", *R, "--gap", "0.5", "--alpha", "7", words=["'--alpha'", "--gap"]),
    cli("radius-gap-method", *R, "--gap", "0.5", "--method", "paper", words=["'--method'"]),
    cli("radius-gap-labels", *R, "--gap", "0.5", "--labels", "1", words=["'--labels'"]),
    cli("radius-gap-T", *R, "--gap", "0.5", "--T", "10", words=["'--T'", "--gap"]),
    cli("radius-labels-without-true-label", *R, "--counts", "3,1", "--labels", "0",
        words=["'--labels'", "true_label"]),
    cli("radius-labels-paper", *R, "--counts", "3,1", "--labels", "0", "--method", "paper",
        words=["'--labels'"]),
    cli("radius-n-huge", "radius", "--scheme", "wr", "--n", BIG, "--ns", "5", "--gap", "0.5",
        words=["'--n'", str(BIG)]),
    cli("radius-n-2^53+1", "radius", "--scheme", "wr", "--n", 2**53 + 1, "--ns", "5", "--gap",
        "0.5", words=["'--n'", "2^53"]),
    cli("radius-counts-huge", *R, "--counts", "99999999999999999999,1",
        words=["'--counts'", "99999999999999999999"]),
    cli("radius-T-huge", *R, "--counts", "3,1", "--T", "99999999999999999999", words=["'--T'"]),
    cli("radius-ns-huge", *R[:-1], "99999999999999999999", "--gap", "0.3", words=["'--ns'"]),
    cli("radius-gap-and-counts", *R, "--gap", "0.5", "--counts", "3,1",
        words=["'--gap'", "left out with --counts", "0.5"]),
    cli("radius-neither", *R, words=["radius needs --gap or --counts"]),
    cli("delta-out-no-folder", "delta", "--out", "/nonexistent/dir/f.png",
        words=["'--out'", "a .png file in an existing folder", "/nonexistent/dir/f.png"]),
    cli("delta-out-jpg", "delta", "--out", "f.jpg", words=["'--out'", ".png", "f.jpg"]),
    cli("radius-counts-no-votes", *R, "--counts", "0,0",
        words=["'--counts'", "at least one vote", "--T", "'0,0'"]),
    cli("radius-gap-1.5", *R, "--gap", "1.5", words=["'--gap'", "1.5"]),
    cli("radius-gap-nan", *R, "--gap", "nan", words=["'--gap'", "nan"]),
    cli("radius-gap-inf", *R, "--gap", "inf", words=["'--gap'", "inf"]),
    cli("radius-gap--2", *R, "--gap", "-2", words=["'--gap'"]),
    cli("radius-gap-text", *R, "--gap", "half", words=["'--gap'", "'half'"]),
    cli("radius-counts-text", *R, "--counts", "3,x", words=["'--counts'"]),
    cli("radius-counts-ragged", *R, "--counts", "3,1;5", words=["'--counts'", "same length"]),
    cli("radius-counts-negative", *R, "--counts", "3,-1", words=["'--counts'", "-1"]),
    cli("radius-counts-empty", *R, "--counts", "", words=["'--counts'"]),
    cli("radius-counts-float", *R, "--counts", "3.5,1", words=["'--counts'"]),
    cli("radius-alpha-0", *R, "--counts", "3,1", "--alpha", "0",
        words=["'--alpha'", "[1e-100, 1)"]),
    cli("radius-alpha-1", *R, "--counts", "3,1", "--alpha", "1", words=["'--alpha'"]),
    cli("radius-alpha-nan", *R, "--counts", "3,1", "--alpha", "nan", words=["'--alpha'"]),
    cli("radius-method-bogus", *R, "--counts", "3,1", "--method", "simuem", words=["'--method'"]),
    cli("radius-T-below-sum", *R, "--counts", "3,1", "--T", "2", words=["'--T'", "sums to 4"]),
    cli("radius-T-0", *R, "--counts", "3,1", "--T", "0", words=["'--T'"]),
    cli("radius-true-label-no-labels", *R, "--counts", "3,1", "--method", "true_label",
        words=["'--labels'", "true_label"]),
    cli("radius-labels-out-of-range", *R, "--counts", "3,1", "--method", "true_label",
        "--labels", "5", words=["'--labels'", "[0, 1]", "5"]),
    cli("radius-labels-shape", *R, "--counts", "3,1", "--method", "true_label", "--labels",
        "0,1", words=["'--labels'", "shape"]),
    cli("radius-labels-text", *R, "--counts", "3,1", "--method", "true_label", "--labels", "x",
        words=["'--labels'"]),
    cli("radius-scheme-bogus", "radius", "--scheme", "bootstrap", "--n", "100", "--ns", "5",
        "--gap", "0.1", words=["'--scheme'", "bootstrap"]),
    cli("radius-scheme-missing", "radius", "--n", "100", "--gap", "0.1", words=["--scheme"]),
    cli("radius-model-P9", *R, "--gap", "0.5", "--model", "P9", words=["'--model'", "P9"]),
    cli("radius-n-0", "radius", "--scheme", "wr", "--n", "0", "--ns", "5", "--gap", "0.5",
        words=["'--n'", "Got 0"]),
    cli("radius-n-negative", "radius", "--scheme", "wr", "--n", "-5", "--ns", "5", "--gap",
        "0.5", words=["'--n'", "-5"]),
    cli("radius-n-text", "radius", "--scheme", "wr", "--n", "abc", "--gap", "0.5",
        words=["'--n'", "'abc'"]),
    cli("radius-ns-0", *R[:-1], "0", "--gap", "0.5", words=["'--ns'"]),
    cli("radius-wor-ns-above-n", "radius", "--scheme", "wor", "--n", "100", "--ns", "101",
        "--gap", "0.5", words=["'--ns'", "[1, 100]", "101"]),
    cli("radius-binomial-ns-and-p", "radius", "--scheme", "binomial", "--n", "100", "--ns", "5",
        "--p", "0.1", "--gap", "0.5", words=["'--ns' parameter of radius", "left out"]),
    cli("radius-binomial-neither", "radius", "--scheme", "binomial", "--n", "100", "--gap",
        "0.5", words=["'--p'"]),
    cli("radius-binomial-p-1", "radius", "--scheme", "binomial", "--n", "100", "--p", "1",
        "--gap", "0.5", words=["'--p'", "(0, 1)"]),
    cli("radius-binomial-p-0", "radius", "--scheme", "binomial", "--n", "100", "--p", "0",
        "--gap", "0.5", words=["'--p'"]),
    cli("radius-binomial-ns-n", "radius", "--scheme", "binomial", "--n", "100", "--ns", "100",
        "--gap", "0.5", words=["'--ns'", "[1, 99]"]),
    cli("radius-wr-p", "radius", "--scheme", "wr", "--n", "100", "--p", "0.1", "--gap", "0.5",
        words=["'--p'"]),
    cli("radius-wr-no-ns", "radius", "--scheme", "wr", "--n", "100", "--gap", "0.5",
        words=["'--ns'"]),
    cli("radius-jia-gap", *R, "--gap", "0.5", "--rule", "jia", words=["'--rule'"]),
    cli("radius-jia-wor", "radius", "--scheme", "wor", "--n", "100", "--ns", "5", "--counts",
        "3,1", "--rule", "jia", words=["'--rule'", "with_replacement"]),
    cli("radius-jia-P3", *R, "--counts", "3,1", "--rule", "jia", "--model", "P3",
        words=["'--rule'"]),
    cli("radius-rule-bogus", *R, "--gap", "0.5", "--rule", "bogus", words=["'--rule'"]),
    cli("radius-unknown-option", *R, "--gap", "0.5", "--bogus", "1", words=["--bogus"]),
]

# ----------------------------------------------------------------------------------- delta
DELTA = [
    cli("delta-steps-0", "delta", "--steps", "0", words=["'--steps'", "[1, 100000]"]),
    cli("delta-steps-1e9", "delta", "--steps", "1000000000", words=["'--steps'", "1000000000"]),
    cli("delta-steps-100001", "delta", "--steps", "100001", words=["'--steps'"]),
    cli("delta-steps-text", "delta", "--steps", "x", words=["'--steps'", "'x'"]),
    cli("delta-steps-float", "delta", "--steps", "2.5", words=["'--steps'", "'2.5'"]),
    cli("delta-rho-max-0", "delta", "--rho-max", "0",
        words=["error: The '--rho-max' parameter of delta"]),
    cli("delta-rho-max-huge", "delta", "--rho-max", 10**24, words=["'--rho-max'", str(10**24)]),
    cli("delta-rho-max-negative", "delta", "--rho-max", "-3", words=["'--rho-max'"]),
    # (the line said "must be given together with --n / --ns" whichever was missing)
    cli("delta-n-without-ns", "delta", "--n", "100", words=["'--ns'", "given with --n "]),
    cli("delta-ns-without-n", "delta", "--ns", "10", words=["'--n'", "given with --ns "]),
    # (a setting refused only where no scheme asked for is defined: with replacement takes
    # any ns; the others are n/a beside it, tests/test_cli_certs.py)
    cli("delta-ns-above-n", "delta", "--n", "100", "--ns", "1000", "--scheme", "wor",
        "--scheme", "binomial", words=["'--ns'", "1000"]),
    cli("delta-ns-equals-n", "delta", "--n", "100", "--ns", "100", "--scheme", "binomial",
        words=["'--ns'"]),
    cli("delta-n-0", "delta", "--n", "0", "--ns", "1", words=["'--n'"]),
    cli("delta-n-huge", "delta", "--n", BIG, "--ns", "5", words=["'--n'"]),
    cli("delta-model-P9", "delta", "--model", "P9", words=["'--model'"]),
    cli("delta-model-empty", "delta", "--model", "", words=["'--model'"]),
    cli("delta-out-missing-folder", "delta", "--n", "100", "--ns", "5", "--rho-max", "5",
        "--out", "missing/f.png", words=["missing/f.png"]),
    cli("delta-out-is-folder", "delta", "--n", "100", "--ns", "5", "--rho-max", "5", "--out",
        "folder", words=["folder"], setup=["folder"]),
]

# ----------------------------------------------------------------------------------- train
T = ("train", "exp.yaml", "--run-dir", "new", "-q")
TRAIN = [
    cli("train-config-missing", "train", "nosuch.yaml", "--run-dir", "new", "-q",
        words=["nosuch.yaml", "No such file"]),
    cli("train-config-is-folder", "train", "folder", "--run-dir", "new", "-q",
        words=["folder"], setup=["folder"]),
    cli("train-config-binary", "train", "binary.yaml", "--run-dir", "new", "-q",
        words=["binary.yaml", "not YAML text"], setup=["binary.yaml"]),
    cli("train-config-dup-section", "train", "dup.yaml", "--run-dir", "new", "-q",
        words=["dup.yaml", "'selection' twice", "lines 2 and 5"], setup=["dup.yaml"]),
    cli("train-config-dup-key", "train", "dupkey.yaml", "--run-dir", "new", "-q",
        words=["dupkey.yaml", "'ns' twice", "line 2"], setup=["dupkey.yaml"]),
    cli("train-config-syntax", "train", "syntax.yaml", "--run-dir", "new", "-q",
        words=["syntax.yaml", "not valid YAML"], setup=["syntax.yaml"]),
    cli("train-config-list", "train", "list.yaml", "--run-dir", "new", "-q",
        words=["list.yaml", "holds a list"], setup=["list.yaml"]),
    cli("train-config-unknown-key", "train", "unknown.yaml", "--run-dir", "new", "-q",
        words=["'selection.nss'"], setup=["unknown.yaml"]),
    cli("train-config-deep", "train", "deep.yaml", "--run-dir", "new", "-q",
        words=["deep.yaml", "nested too deeply"], setup=["deep.yaml"]),  # a RecursionError
    cli("train-override-deep", *T, "--certify.rhos", "[" * 2000 + "]" * 2000,
        words=["'certify.rhos'", "a list of ints"], setup=["exp.yaml"]),
    cli("train-override-unknown", *T, "--training.stepz", "3", words=["'training.stepz'"],
        setup=["exp.yaml"]),
    cli("train-override-not-int", *T, "--selection.ns", "x", words=["'selection.ns'", "'x'"],
        setup=["exp.yaml"]),
    cli("train-override-bad-scheme", *T, "--selection.scheme", "bag",
        words=["'selection.scheme'", "'bag'"], setup=["exp.yaml"]),
    cli("train-override-shape", *T, "steps", "3", words=["section.key"], setup=["exp.yaml"]),
    cli("train-graphed-cosine", *T, "--training.path", "graphed", "--training.lr_schedule",
        "cosine", words=["'training.lr_schedule'", "'constant'", "graphed", "'cosine'"],
        setup=["exp.yaml"]),
    cli("train-graphed-adadelta", *T, "--training.path", "graphed", "--training.optimizer",
        "adadelta", words=["'training.optimizer'", "graphed", "'adadelta'"],
        setup=["exp.yaml"]),
    cli("train-data-name", *T, "--data.name", "nosuch", words=["'data.name'", "nosuch"],
        setup=["exp.yaml"]),
    cli("train-npz-missing", *T, "--data.name", "npz:missing.npz",
        words=["missing.npz", "is not a file"], setup=["exp.yaml"]),
    cli("train-npz-not-zip", *T, "--data.name", "npz:text.npz",
        words=["text.npz", "is not a .npz archive"], setup=["exp.yaml", "text.npz"]),
    cli("train-npz-label-negative", *T, "--data.name", "npz:neg.npz",
        words=["neg.npz", "-7", "[0, 32766]"], setup=["exp.yaml", "neg.npz"]),
    cli("train-npz-label-1e12", *T, "--data.name", "npz:big.npz",
        words=["big.npz", "1000000000000", "[0, 32766]"], setup=["exp.yaml", "big.npz"]),
    cli("train-npz-single-array", *T, "--data.name", "npz:one.npy",
        words=["one.npy", "single array"], setup=["exp.yaml", "one.npy"]),
    cli("train-npz-pickled", *T, "--data.name", "npz:pickled.npz",
        words=["pickled.npz", "allow_pickle=False"], setup=["exp.yaml", "pickled.npz"]),
    cli("train-npz-nan-inputs", *T, "--data.name", "npz:nan.npz",
        words=["nan.npz", "[0, 1]"], setup=["exp.yaml", "nan.npz"]),
    cli("train-npz-one-class", *T, "--data.name", "npz:oneclass.npz",
        words=["oneclass.npz", "need 2"], setup=["exp.yaml", "oneclass.npz"]),
    cli("train-data-dir-missing", *T, "--data.name", "mnist", "--data.data_dir", "nosuch",
        words=["nosuch", "does not exist", "--data.data_dir"], setup=["exp.yaml"]),
    cli("train-data-dir-for-digits", *T, "--data.name", "digits", "--data.data_dir", ".",
        words=["'data.data_dir'", "digits"], setup=["exp.yaml"]),
    cli("train-download-for-npz", *T, "--data.download", "true", words=["'data.download'"],
        setup=["exp.yaml"]),
    cli("train-run-dir-is-file", "train", "exp.yaml", "--run-dir", "afile/run", "-q",
        words=["afile", "not a folder"], setup=["exp.yaml", "afile"]),
    cli("train-run-dir-not-empty", "train", "exp.yaml", "--run-dir", "folder", "-q",
        words=["folder", "exists and is not empty"], setup=["exp.yaml", "folder/notes.txt"]),
    cli("train-run-dir-other-config", "train", "exp.yaml", "--run-dir", "run", "-q",
        "--training.steps", "5", words=["run", "another config", "training.steps"],
        setup=["exp.yaml", "run"]),
    cli("train-run-manifest-list", "train", "exp.yaml", "--run-dir", "run", "-q",
        words=["run/manifest.json", "holds a list"], setup=["exp.yaml", "run:manifest-list"]),
    cli("train-run-config-binary", "train", "exp.yaml", "--run-dir", "run", "-q",
        words=["run/config.yaml", "not YAML text"], setup=["exp.yaml", "run:config-binary"]),
    cli("train-run-locked", "train", "exp.yaml", "--run-dir", "run", "-q",
        words=["run", "in use by another poisoncert process"], setup=["exp.yaml", "run"],
        lock="run"),
    cli("train-executor-bogus", *T, "--executor", "dask",
        words=["'--executor' parameter of train", "dask"], setup=["exp.yaml"]),
    cli("train-devices-absent", *T, "--devices", "cuda:99",
        words=["'--devices' parameter of train", "cuda:99"], setup=["exp.yaml"]),
    cli("train-devices-bogus", *T, "--devices", "tpu:0",
        words=["'--devices' parameter of train", "cuda:0,cuda:1", "tpu:0"], setup=["exp.yaml"]),
    cli("train-gpus-per-task-local", *T, "--gpus-per-task", "0.5",
        words=["'--gpus-per-task' parameter of train", "'ray'", "0.5"], setup=["exp.yaml"]),
    cli("train-address-without-ray", *T, "--address", "auto",
        words=["'--address' parameter of train", "--executor ray"], setup=["exp.yaml"]),
    cli("train-device-bogus", *T, "--device", "tpu", words=["'--device' parameter of train", "tpu"],
        setup=["exp.yaml"]),
    cli("train-workers-0", *T, "--workers", "0", words=["workers"], setup=["exp.yaml"]),
    cli("train-T-0", *T, "--selection.T", "0", words=["'selection.T'"], setup=["exp.yaml"]),
    cli("train-ns-above-n", *T, "--selection.ns", "100000", "--selection.scheme",
        "without_replacement", words=["'selection.ns'", "[1, 300]"], setup=["exp.yaml"]),
    cli("train-model-bogus", *T, "--training.model", "nosuch", words=["'training.model'"],
        setup=["exp.yaml"]),
    cli("train-model-shape", *T, "--training.model", "lenet5",
        words=["'training.model'", "shape"], setup=["exp.yaml"]),
    cli("train-alpha-2", *T, "--certify.alpha", "2", words=["'certify.alpha'"],
        setup=["exp.yaml"]),
    cli("train-chunk-size-0", *T, "--run.chunk_size", "0", words=["'run.chunk_size'"],
        setup=["exp.yaml"]),
    cli("train-classes-one", *T, "--data.name", "digits", "--data.classes", "[1]",
        words=["classes"], setup=["exp.yaml"]),
]

# ------------------------------------------------- train: bounded counts and sizes (part 2)
FIT = "fit in memory"
N53 = "2^53"
BOUNDS = [
    cli("train-T-1e9", *T, "--selection.T", "1000000000",
        words=["'selection.T'", "[1, ", FIT, "Got 1000000000 instead"], setup=["exp.yaml"]),
    cli("train-T-1e30", *T, "--selection.T", BIG, words=["'selection.T'", f"[1, {N53}]",
                                                         str(BIG)], setup=["exp.yaml"]),
    cli("train-T-1e12", *T, "--selection.T", 10**12, words=["'selection.T'", FIT],
        setup=["exp.yaml"]),
    cli("train-ns-1e9-wr", *T, "--selection.ns", "1000000000",
        words=["'selection.ns'", FIT, "Got 1000000000 instead"], setup=["exp.yaml"]),
    cli("train-ns-1e30-wr", *T, "--selection.ns", BIG, words=["'selection.ns'", N53],
        setup=["exp.yaml"]),
    cli("train-batch-size-1e9", *T, "--training.batch_size", "1000000000",
        words=["'training.batch_size'", FIT, "Got 1000000000 instead"], setup=["exp.yaml"]),
    cli("train-batch-size-1e30", *T, "--training.batch_size", BIG,
        words=["'training.batch_size'", N53], setup=["exp.yaml"]),
    cli("train-steps-1e24", *T, "--training.steps", 10**24,
        words=["'training.steps'", f"[1, {N53}]", str(10**24)], setup=["exp.yaml"]),
    cli("train-steps-1e12", *T, "--training.steps", 10**12, words=["'training.steps'", FIT],
        setup=["exp.yaml"]),
    cli("train-group-size-1e9", *T, "--selection.T", "100000", "--training.group_size",
        "1000000000", words=["'training.group_size'", FIT, "Got 1000000000 instead"],
        setup=["exp.yaml"]),  # a group holds at most T classifiers: T alone fits
    cli("train-group-size-1e30", *T, "--training.group_size", BIG,
        words=["'training.group_size'", N53], setup=["exp.yaml"]),
    cli("train-subset-rows-0", *T, "--training.subset_rows", "0",
        words=["'training.subset_rows'", "[1, "], setup=["exp.yaml"]),
    cli("train-subset-rows-on", *T, "--training.subset_rows", "on",
        words=["'training.subset_rows'", "null ('auto'), 'off' or an int", "Got 'on' instead"],
        setup=["exp.yaml"]),
    cli("train-subset-rows-small", *T, "--training.subset_rows", "5",
        words=["'training.subset_rows'", "at least the size of every sub-dataset (40 rows)",
               "Got 5 instead"], setup=["exp.yaml"]),
    cli("train-subset-rows-partition", *T, "--training.subset_rows", "50",
        "--selection.scheme", "partition", "--selection.k", "8", "--selection.ns", "null",
        words=["'training.subset_rows'", "partition scheme"], setup=["exp.yaml"]),
    cli("train-subset-rows-augmented", *T, "--data.name", "npz:img.npz", "--training.augment",
        "true", "--training.model", "cnn_small", "--training.subset_rows", "50",
        words=["'training.subset_rows'", "augmented"], setup=["exp.yaml", "img.npz"]),
    cli("train-eval-batch-size-1e30", *T, "--training.eval_batch_size", BIG,
        words=["'training.eval_batch_size'", N53], setup=["exp.yaml"]),
    cli("train-max-shift-1e30", *T, "--training.max_shift", BIG,
        words=["'training.max_shift'", N53], setup=["exp.yaml"]),
    cli("train-max-shift-1e9-images", *T, "--data.name", "npz:img.npz", "--training.augment",
        "true", "--training.max_shift", "1000000000", words=["'training.max_shift'", FIT],
        setup=["exp.yaml", "img.npz"]),
    cli("train-chunk-size-1e30", *T, "--run.chunk_size", BIG, words=["'run.chunk_size'", N53],
        setup=["exp.yaml"]),
    cli("train-phase2-steps-1e30", *T, "--training.phase2_steps", BIG,
        words=["'training.phase2_steps'", N53], setup=["exp.yaml"]),
    cli("train-workers-1e30", *T, "--training.workers", BIG,
        words=["'training.workers'", "the CPUs this process may use", f"Got {BIG} instead"],
        setup=["exp.yaml"]),
    cli("train-workers-100000", *T, "--training.workers", "100000",
        words=["'training.workers'", "the CPUs this process may use", "Got 100000 instead"],
        setup=["exp.yaml"]),
    cli("train-workers-flag-100000", *T, "--workers", "100000",
        words=["'--workers' parameter of train", "CPUs"], setup=["exp.yaml"]),
    cli("train-run_dir", *T, "--run_dir", "out", setup=["exp.yaml"],  # typer's form: --run-dir
        words=["No such option: --run_dir. Did you mean --run-dir?"]),
    cli("train-workers-flag-0", *T, "--workers", "0",  # the same range as for too many
        words=["'--workers' parameter of train", "the CPUs this process may use",
               "Got 0 instead"],
        setup=["exp.yaml"]),
    cli("train-k-1e30", *T, "--selection.scheme", "partition", "--selection.ns", "null",
        "--selection.T", "null", "--selection.k", BIG, words=["'selection.k'", N53],
        setup=["exp.yaml"]),
    cli("train-k-1e12", *T, "--selection.scheme", "partition", "--selection.ns", "null",
        "--selection.T", "null", "--selection.k", 10**12, words=["'selection.k'", FIT],
        setup=["exp.yaml"]),
    cli("train-clean-indices-1e30", *T, "--data.clean_indices", f"[{BIG}]",
        words=["'data.clean_indices'", f"[0, {N53}]", f"Got {BIG} instead"],
        setup=["exp.yaml"]),
    cli("train-clean-indices-one-huge", *T, "--data.clean_indices", f"[3, 5, {BIG}]",
        words=["'data.clean_indices'", f"Got {BIG} instead"], setup=["exp.yaml"]),
    cli("train-clean-indices-2^63", *T, "--data.clean_indices", f"[{2**63}]",
        words=["'data.clean_indices'", str(2**63)], setup=["exp.yaml"]),
    cli("train-n-clean-1e30", *T, "--data.n_clean", BIG, words=["'data.n_clean'", N53],
        setup=["exp.yaml"]),
    cli("train-test-limit-1e30", *T, "--data.test_limit", BIG, words=["'data.test_limit'", N53],
        setup=["exp.yaml"]),
    cli("train-classes-1e30", *T, "--data.classes", f"[1, {BIG}]", words=["'data.classes'", N53],
        setup=["exp.yaml"]),
    cli("train-poisoned-classes-1e30", *T, "--data.poisoned_classes", f"[{BIG}]",
        words=["'data.poisoned_classes'", N53], setup=["exp.yaml"]),
    cli("train-sklearn-ns-1e9", *T, "--training.model", "sklearn:naive_bayes",
        "--selection.ns", "1000000000", words=["'selection.ns'", FIT], setup=["exp.yaml"]),
    cli("train-memory-limit-tiny", *T, words=["The run (the config) does not fit in memory",
                                              "POISONCERT_MEMORY_LIMIT"],
        setup=["exp.yaml"], env={"POISONCERT_MEMORY_LIMIT": "64K"}),
    cli("train-memory-limit-bad", *T, words=["'POISONCERT_MEMORY_LIMIT'", "'lots'"],
        setup=["exp.yaml"], env={"POISONCERT_MEMORY_LIMIT": "lots"}),
    cli("demo-workers-100000", "demo", "--workers", "100000", "--quick", "-q", "--out", "d",
        words=["'--workers' parameter of demo", "CPUs", "100000"]),
]

# --------------------------------------------------------------------------------- certify
CERTIFY = [
    cli("certify-missing", "certify", "nosuch", words=["nosuch", "not a poisoncert run"]),
    cli("certify-empty-folder", "certify", "folder", words=["folder", "not a poisoncert run"],
        setup=["folder"]),
    cli("certify-file", "certify", "afile", words=["afile", "not a poisoncert run"],
        setup=["afile"]),
    # every --alpha against the one range it is held to (0 and 1.5 were told the config's
    # (0, 1), 1e-200 [1e-100, 1))
    cli("certify-alpha-0", "certify", "run", "--alpha", "0",
        words=["error: The '--alpha' parameter of certify", "[1e-100, 1)", "Got 0.0"],
        setup=["run"]),
    cli("certify-alpha-1.5", "certify", "run", "--alpha", "1.5",
        words=["error: The '--alpha' parameter of certify", "[1e-100, 1)", "Got 1.5"],
        setup=["run"]),
    cli("certify-alpha-nan", "certify", "run", "--alpha", "nan",
        words=["error: The '--alpha' parameter of certify", "[1e-100, 1)", "Got nan"],
        setup=["run"]),
    # (the config's (0, 1) let 1e-200 through to the vote bounds' [1e-100, 1), refused only
    # after the run's files were verified: here a checksum error came first)
    cli("certify-alpha-1e-200", "certify", "run", "--alpha", "1e-200",
        words=["error: The '--alpha' parameter of certify", "[1e-100, 1)", "Got 1e-200"],
        setup=["run:votes"]),
    cli("certify-method-bogus", "certify", "run", "--method", "bogus",
        words=["'--method' parameter of certify"], setup=["run"]),
    cli("certify-model-P9", "certify", "run", "--model", "P9",
        words=["'--model' parameter of certify"], setup=["run"]),
    cli("certify-rho-negative", "certify", "run", "--rho", "-1", words=["'--rho'", "-1"],
        setup=["run"]),
    cli("certify-rho-huge", "certify", "run", "--rho", BIG, words=["rhos"], setup=["run"]),
    cli("certify-rho-text", "certify", "run", "--rho", "x", words=["'--rho'", "'x'"],
        setup=["run"]),
    cli("certify-partition-alpha", "certify", "prun", "--alpha", "0.01",
        words=["'--alpha' parameter of certify", "partition"], setup=["prun"]),
    cli("certify-partition-method", "certify", "prun", "--method", "paper",
        words=["'--method' parameter of certify", "partition"], setup=["prun"]),
    cli("certify-tampered-config", "certify", "run", words=["run/config.yaml"],
        setup=["run:config-ns"]),
    cli("certify-tampered-manifest-n", "certify", "run", words=["run/manifest.json"],
        setup=["run:manifest-n"]),
    cli("certify-manifest-list", "certify", "run", words=["run/manifest.json", "list"],
        setup=["run:manifest-list"]),
    cli("certify-manifest-not-json", "certify", "run",
        words=["run/manifest.json", "not valid JSON"], setup=["run:manifest-text"]),
    cli("certify-manifest-deep", "certify", "run",
        words=["run/manifest.json", "not valid JSON"], setup=["run:manifest-deep"]),
    cli("certify-tampered-votes", "certify", "run", words=["run/votes.npy", "changed"],
        setup=["run:votes"]),
    cli("certify-tampered-labels", "certify", "run", words=["run/labels.npy", "changed"],
        setup=["run:labels"]),
    cli("certify-tampered-predictions", "certify", "run",
        words=["run/predictions.npy", "changed"], setup=["run:predictions"]),
    cli("certify-truncated-votes", "certify", "run", words=["run/votes.npy"],
        setup=["run:votes-truncated"]),
    cli("certify-truncated-votes-no-verify", "certify", "run", "--no-verify",
        words=["run/votes.npy", "not a readable .npy"], setup=["run:votes-truncated"]),
    cli("certify-missing-votes", "certify", "run", words=["run/votes.npy", "missing"],
        setup=["run:votes-missing"]),
    cli("certify-config-binary", "certify", "run", words=["run/config.yaml", "not YAML text"],
        setup=["run:config-binary"]),
    cli("certify-unfinished", "certify", "urun", words=["urun", "not finished"],
        setup=["urun"]),
    cli("certify-locked", "certify", "run", words=["run", "in use by another poisoncert"],
        setup=["run"], lock="run"),
    # the value as given (it said 'gpu'), and an index that is not a number (a traceback)
    cli("predict-device-gpu", "predict", "run", "one.npy", "--device", "gpu:0",
        words=["'--device' parameter of predict", "'cpu', 'cuda' or 'cuda:<index>'",
               "Got 'gpu:0' instead"],
        setup=["run", "one.npy"]),
    cli("predict-device-index", "predict", "run", "one.npy", "--device", "cpu:x",
        words=["'--device' parameter of predict", "Got 'cpu:x' instead"],
        setup=["run", "one.npy"]),
    # (it said "(0, 1)" for 2, and "The 'alpha' parameter of certify ... [1e-100, 1)" for 1e-200)
    cli("predict-alpha-1e-200", "predict", "run", "one.npy", "--alpha", "1e-200",
        words=["The '--alpha' parameter of predict", "[1e-100, 1)", "Got 1e-200"],
        setup=["run", "one.npy"]),
    cli("predict-alpha-2", "predict", "run", "one.npy", "--alpha", "2",
        words=["The '--alpha' parameter of predict", "[1e-100, 1)", "Got 2.0"],
        setup=["run", "one.npy"]),
]

DEMO = [
    cli("demo-workers-0", "demo", "--workers", "0", "--quick", "-q", "--out", "d",
        words=["'--workers' parameter of demo"]),
    cli("demo-out-under-file", "demo", "--quick", "-q", "--out", "afile/d",
        words=["afile", "not a folder"], setup=["afile"]),
    cli("unknown-command", "bogus", words=["bogus"]),
]

CLI_ENTRIES = RADIUS + DELTA + TRAIN + BOUNDS + CERTIFY + DEMO


# --------------------------------------------------------------------------------- library
def _cert():
    from poisoncert.certify import certify

    return certify([[3, 1]], scheme="wr", n=100, ns=5, alpha=0.1)


def _b(name):
    import poisoncert.bounds as b

    return getattr(b, name)


def _s(name):
    import poisoncert.stats as s

    return getattr(s, name)


def _c(name):
    import poisoncert.certify as c

    return getattr(c, name)


def _load(name, **kw):
    from poisoncert.data import load_dataset

    return load_dataset(name, **kw)


def _p(name):
    import poisoncert.plots as p

    return getattr(p, name)


def _rd(path):
    from poisoncert.runs import RunDir

    return RunDir(path)


def _pipe(name):
    import poisoncert.experiment as p

    return getattr(p, name)


def _cfg(path, **over):
    from poisoncert.config import load_config

    return load_config(path, over)


def _section(name, **kw):
    import poisoncert.config as c
    from poisoncert.training import settings

    return (settings.TrainConfig if name == "TrainConfig" else getattr(c, name))(**kw)


def _est(**kw):
    from poisoncert.estimator import CertifiedEnsembleClassifier

    return CertifiedEnsembleClassifier(random_state=0, **kw)


def _xy():
    rng = np.random.default_rng(0)
    return rng.random((60, 4)), np.arange(60) % 3


def _fit(**kw):
    return _est(**kw).fit(*_xy())


def _decode(prediction):
    return _fit(n_estimators=3).decode(prediction)


def _predict_capped(rows, cap):
    """A fitted ensemble predicting ``rows`` rows under a memory cap of ``cap``."""
    clf = _fit(n_estimators=50)
    old = os.environ.get("POISONCERT_MEMORY_LIMIT")
    os.environ["POISONCERT_MEMORY_LIMIT"] = cap
    try:
        return clf.predict(np.zeros((rows, 4)))
    finally:
        os.environ["POISONCERT_MEMORY_LIMIT"] = old or MEMORY_CAP


def _res(name):
    import poisoncert.resources as r

    return getattr(r, name)


def _ex(name):
    import poisoncert.executors as e

    return getattr(e, name)


WR = dict(scheme="wr", n=100, ns=5)
LIBRARY = [
    lib("certified_radius-text-gap", lambda: _b("certified_radius")("0.5", **WR),
        "ValueError", "'gap'", "'0.5'"),
    lib("certified_radius-bool-gap", lambda: _b("certified_radius")(True, **WR),
        "ValueError", "'gap'"),
    lib("certified_radius-mixed-gap", lambda: _b("certified_radius")([0.5, "a"], **WR),
        "ValueError", "'gap'"),
    lib("certified_radius-complex-gap", lambda: _b("certified_radius")(0.5j, **WR),
        "ValueError", "'gap'"),
    lib("certified_radius-text-n", lambda: _b("certified_radius")(0.5, scheme="wr", n="100",
                                                                   ns=5), "ValueError", "'n'"),
    lib("certified_radius-float-n", lambda: _b("certified_radius")(0.5, scheme="wr", n=100.0,
                                                                    ns=5), "ValueError", "'n'"),
    lib("certified_radius-huge-n", lambda: _b("certified_radius")(0.5, scheme="wr", n=BIG,
                                                                   ns=5), "ValueError", "'n'"),
    lib("certified_radius-huge-ns", lambda: _b("certified_radius")(0.5, scheme="wr", n=100,
                                                                    ns=2**60),
        "ValueError", "'ns'"),
    lib("certified_radius-text-p", lambda: _b("certified_radius")(0.5, scheme="binomial",
                                                                   n=100, p="0.1"),
        "ValueError", "'p'"),
    lib("certified_radius-int-scheme", lambda: _b("certified_radius")(0.5, scheme=3, n=100,
                                                                       ns=5),
        "ValueError", "'scheme'"),
    lib("delta-huge-rho", lambda: _b("delta")(BIG, **WR), "ValueError", "'rho'"),
    lib("delta-rho-2^60", lambda: _b("delta")(2**60, **WR), "ValueError", "'rho'"),
    lib("delta-rho-uint64-max", lambda: _b("delta")(np.uint64(2**64 - 1), **WR),
        "ValueError", "'rho'"),
    lib("delta-rho-fraction", lambda: _b("delta")(np.array([1.5]), **WR), "ValueError",
        "'rho'"),
    lib("delta-rho-text", lambda: _b("delta")("3", **WR), "ValueError", "'rho'"),
    lib("delta-rho-1e300", lambda: _b("delta")(1e300, **WR), "ValueError", "'rho'"),
    lib("delta-rho-bool", lambda: _b("delta")(True, **WR), "ValueError", "'rho'"),
    lib("SelectionBound-model-None", lambda: _b("SelectionBound")("wr", 100, ns=5,
                                                                   model=None),
        "ValueError", "'model'"),
    lib("jia_certified_radius-huge-n", lambda: _b("jia_certified_radius")(0.9, 0.1, n=BIG,
                                                                           ns=5),
        "ValueError", "'n'"),
    lib("jia_round-text", lambda: _b("jia_round")("0.9", 0.1, n=100, ns=5), "ValueError",
        "'p1_lower'"),
    lib("vote_bounds-text-alpha", lambda: _s("vote_bounds")([[3, 1]], alpha="0.1"),
        "ValueError", "'alpha'"),
    lib("vote_bounds-bool-alpha", lambda: _s("vote_bounds")([[3, 1]], alpha=True),
        "ValueError", "'alpha'"),
    lib("vote_bounds-huge-count", lambda: _s("vote_bounds")([[3, BIG]], alpha=0.1),
        "ValueError", "'counts'", str(BIG)),
    lib("vote_bounds-count-2^60", lambda: _s("vote_bounds")([[3, 2**60]], alpha=0.1),
        "ValueError", "'counts'"),
    lib("vote_bounds-huge-T", lambda: _s("vote_bounds")([[3, 1]], alpha=0.1, T=BIG),
        "ValueError", "'T'"),
    lib("vote_bounds-text-count", lambda: _s("vote_bounds")([[3, "1"]], alpha=0.1),
        "ValueError", "'counts'"),
    lib("vote_bounds-ragged", lambda: _s("vote_bounds")([[3, 1], [2]], alpha=0.1),
        "ValueError", "'counts'"),
    lib("vote_bounds-1d", lambda: _s("vote_bounds")([3, 1], alpha=0.1), "ValueError",
        "'counts'"),
    lib("vote_bounds-true-label-no-labels",
        lambda: _s("vote_bounds")([[3, 1]], alpha=0.1, method="true_label"),
        "ValueError", "'labels'"),
    lib("vote_bounds-label-out-of-range",
        lambda: _s("vote_bounds")([[3, 1]], alpha=0.1, method="true_label", labels=[2]),
        "ValueError", "'labels'"),
    lib("clopper_pearson_lower-text-beta", lambda: _s("clopper_pearson_lower")(3, 10, "0.1"),
        "ValueError", "'beta'"),
    lib("clopper_pearson_lower-k-above-T", lambda: _s("clopper_pearson_lower")(3, 2, 0.1),
        "ValueError", "'k'"),
    lib("clopper_pearson_upper-fraction-k", lambda: _s("clopper_pearson_upper")(3.5, 10, 0.1),
        "ValueError", "'k'"),
    lib("clopper_pearson_upper-huge-T", lambda: _s("clopper_pearson_upper")(1, BIG, 0.1),
        "ValueError", "'T'"),
    lib("certify()-text-T", lambda: _c("certify")([[3, 1]], **WR, alpha=0.1, T="4"),
        "ValueError", "'T'"),
    lib("certify()-alpha-0", lambda: _c("certify")([[3, 1]], **WR, alpha=0), "ValueError",
        "'alpha'"),
    lib("certify()-method-None", lambda: _c("certify")([[3, 1]], **WR, method=None),
        "ValueError", "'method'"),
    lib("certified_accuracy-text-rhos", lambda: _c("certified_accuracy")(_cert(), [0], "3"),
        "ValueError", "'rhos'"),
    lib("certified_accuracy-huge-rhos", lambda: _c("certified_accuracy")(_cert(), [0], BIG),
        "ValueError", "'rhos'"),
    lib("certified_accuracy-no-result", lambda: _c("certified_accuracy")(None, [0], 0),
        "ValueError", "'result'"),
    lib("certified_accuracy-labels-shape",
        lambda: _c("certified_accuracy")(_cert(), [0, 1], 0), "ValueError", "'labels'"),
    lib("certified_accuracy-text-labels",
        lambda: _c("certified_accuracy")(_cert(), ["a"], 0), "ValueError", "'labels'"),
    lib("dpa_certify-int-model", lambda: _c("dpa_certify")([[3, 1]], model=5), "ValueError",
        "'model'"),
    lib("dpa_certify-one-class", lambda: _c("dpa_certify")([[3]]), "ValueError", "'counts'"),
    lib("dpa_certify-unit", lambda: _c("dpa_certify")([[3, 1]], unit="ops"), "ValueError",
        "'unit'"),
    lib("jia_certify-huge-ns", lambda: _c("jia_certify")([[3, 1]], n=100, ns=BIG),
        "ValueError", "'ns'"),
    lib("delta_curves-n_points-1e9", lambda: _p("delta_curves")(100, 10, n_points=10**9),
        "ValueError", "'n_points'"),
    lib("delta_curves-huge-rho_max", lambda: _p("delta_curves")(100, 10, rho_max=BIG),
        "ValueError", "'rho_max'"),
    lib("plot_delta-dpi", lambda: _p("plot_delta")(None, dpi=10**6), "ValueError", "'dpi'"),
    lib("load_dataset-npz-label-negative", lambda: _load("npz:neg.npz"), "DataFormatError",
        "neg.npz", "-7", "[0, 32766]", setup=["neg.npz"]),
    lib("load_dataset-npz-label-1e12", lambda: _load("npz:big.npz"), "DataFormatError",
        "big.npz", "1000000000000", setup=["big.npz"]),
    lib("load_dataset-npz-not-zip", lambda: _load("npz:text.npz"), "DataFormatError",
        "text.npz", "not a .npz archive", setup=["text.npz"]),
    lib("load_dataset-data-dir-missing", lambda: _load("mnist", data_dir="nosuch"),
        "DatasetNotFoundError", "nosuch", "does not exist"),
    lib("load_dataset-data-dir-is-file", lambda: _load("mnist", data_dir="afile"),
        "DatasetNotFoundError", "afile", "is not a folder", setup=["afile"]),
    lib("load_dataset-data-dir-digits", lambda: _load("digits", data_dir="."), "ValueError",
        "'data_dir'"),
    lib("load_dataset-download-npz", lambda: _load("npz:neg.npz", download=True),
        "ValueError", "'download'", setup=["neg.npz"]),
    lib("load_dataset-name", lambda: _load("nosuch"), "ValueError", "'name'"),
    lib("load_dataset-int-name", lambda: _load(3), "ValueError", "'name'"),
    lib("load_dataset-one-class", lambda: _load("digits", classes=[1]), "ValueError",
        "'classes'"),
    lib("load_dataset-repeated-class", lambda: _load("digits", classes=[1, 1]), "ValueError",
        "'classes'"),
    lib("load_dataset-unknown-class", lambda: _load("digits", classes=[1, 99]), "ValueError",
        "'classes'"),
    lib("load_dataset-download-text", lambda: _load("digits", download="yes"), "ValueError",
        "'download'"),
    lib("load_dataset-npz-missing", lambda: _load("npz:missing.npz"), "DatasetNotFoundError",
        "missing.npz"),
    lib("load_dataset-npz-pickled", lambda: _load("npz:pickled.npz"), "DataFormatError",
        "pickled.npz", setup=["pickled.npz"]),
    lib("load_dataset-npz-single-array", lambda: _load("npz:one.npy"), "DataFormatError",
        "one.npy", setup=["one.npy"]),
    lib("load_dataset-npz-nan", lambda: _load("npz:nan.npz"), "DataFormatError", "nan.npz",
        setup=["nan.npz"]),
    lib("load_config-duplicate-key", lambda: _cfg("dup.yaml"), "ConfigError", "dup.yaml",
        "twice", setup=["dup.yaml"]),
    lib("load_config-binary", lambda: _cfg("binary.yaml"), "ConfigError", "binary.yaml",
        setup=["binary.yaml"]),
    lib("load_config-missing", lambda: _cfg("nosuch.yaml"), "ConfigError", "nosuch.yaml"),
    lib("load_config-list", lambda: _cfg("list.yaml"), "ConfigError", "list.yaml",
        setup=["list.yaml"]),
    lib("RunDir.verify-manifest-list", lambda: _rd("run").verify(), "RunError",
        "run/manifest.json", setup=["run:manifest-list"]),
    lib("RunDir.load-truncated", lambda: _rd("run").load("votes.npy"), "RunError",
        "run/votes.npy", setup=["run:votes-truncated"]),
    lib("RunDir.verify-tampered-votes", lambda: _rd("run").verify(), "RunError",
        "run/votes.npy", setup=["run:votes"]),
    lib("RunDir.lock-locked", lambda: _rd("run").lock().__enter__(), "RunLockedError",
        "run", "in use", setup=["run"], lock="run"),
    lib("certify_run-tampered-labels", lambda: _pipe("certify_run")("run"), "RunError",
        "run/labels.npy", setup=["run:labels"]),
    lib("certify_run-partition-alpha", lambda: _pipe("certify_run")("prun", alpha=0.01),
        "ValueError", "'alpha'", setup=["prun"]),
    lib("train_run-under-a-file", lambda: _pipe("train_run")(_cfg("exp.yaml"), "afile/run",
                                                             progress=False),
        "RunError", "afile", setup=["exp.yaml", "afile"]),
    lib("train_run-locked", lambda: _pipe("train_run")(_cfg("exp.yaml"), "run",
                                                       progress=False),
        "RunLockedError", "run", setup=["exp.yaml", "run"], lock="run"),
]

# ------------------------------------------------ library: bounded counts and sizes (part 2)
E = "CertifiedEnsembleClassifier"
LIBRARY_BOUNDS = [
    lib("estimator-n_estimators-1e9", lambda: _fit(n_estimators=10**9), "ResourceError",
        f"'n_estimators' parameter of {E}", "[1, ", FIT, "Got 1000000000 instead"),
    lib("estimator-n_estimators-1e30", lambda: _fit(n_estimators=BIG), "ValueError",
        "'n_estimators'", str(2**53)),  # scikit-learn's own check writes the number out
    lib("estimator-n_partitions-1e10", lambda: _fit(scheme="partition", n_partitions=10**10),
        "ResourceError", "'n_partitions'", FIT),
    lib("estimator-ns-1e9-wr", lambda: _fit(scheme="with_replacement", ns=10**9),
        "ResourceError", "'ns'", FIT),
    lib("estimator-ns-1e30-wr", lambda: _fit(scheme="with_replacement", ns=BIG),
        "ResourceError", "'ns'", FIT, str(BIG)),
    lib("estimator-balance-1e12", lambda: _fit(balance=10**12), "ResourceError", "'balance'",
        FIT),
    lib("estimator-balance-1e30", lambda: _fit(balance=BIG), "ValueError", "'balance'"),
    lib("estimator-predict-rows", lambda: _predict_capped(100_000, "1M"), "ResourceError",
        "'X'", "at most", "rows", "Got 100000 rows instead"),
    lib("estimator-decode-5", lambda: _decode([5]), "ValueError",
        f"'prediction' parameter of {E}.decode", "[-1, 2]", "Got 5 instead"),
    lib("estimator-decode--2", lambda: _decode([0, -2]), "ValueError", "'prediction'",
        "Got -2 instead"),
    lib("estimator-decode-huge", lambda: _decode([BIG]), "ValueError", "'prediction'",
        str(BIG)),
    lib("estimator-decode-fraction", lambda: _decode([0.5]), "ValueError", "'prediction'",
        "0.5"),
    lib("estimator-decode-text", lambda: _decode(["a"]), "ValueError", "'prediction'"),
    lib("train_run-T-1e9", lambda: _pipe("train_run")(_cfg("exp.yaml",
                                                           **{"selection.T": "1000000000"}),
                                                      "run", progress=False),
        "ResourceError", "'selection.T'", FIT, setup=["exp.yaml"]),
    lib("train_run-workers-100000", lambda: _pipe("train_run")(
        _cfg("exp.yaml", **{"training.workers": "100000"}), "run", progress=False),
        "ValueError", "'training.workers'", "CPUs", setup=["exp.yaml"]),
    lib("make_executor-workers-100000", lambda: _ex("make_executor")("local", workers=100000),
        "ValueError", "'workers' parameter of make_executor", "CPUs"),
    lib("TrainConfig-steps-1e24", lambda: _section("TrainConfig", steps=10**24), "ValueError",
        "'steps'", N53),
    lib("TrainConfig-batch_size-1e30", lambda: _section("TrainConfig", batch_size=BIG),
        "ValueError", "'batch_size'", N53),
    lib("TrainConfig-group_size-1e30", lambda: _section("TrainConfig", group_size=BIG),
        "ValueError", "'group_size'", N53),
    lib("TrainConfig-eval_batch_size-1e30",
        lambda: _section("TrainConfig", eval_batch_size=BIG), "ValueError",
        "'eval_batch_size'", N53),
    lib("DataConfig-clean_indices-1e30", lambda: _section("DataConfig", clean_indices=[BIG]),
        "ConfigError", "'data.clean_indices'", str(BIG)),
    lib("DataConfig-clean_indices-text", lambda: _section("DataConfig", clean_indices=["a"]),
        "ConfigError", "'data.clean_indices'", "'a'"),
    lib("DataConfig-clean_indices-bool", lambda: _section("DataConfig", clean_indices=[True]),
        "ConfigError", "'data.clean_indices'", "True"),
    lib("DataConfig-classes-text", lambda: _section("DataConfig", classes=[1, "b"]),
        "ConfigError", "'data.classes'"),
    lib("DataConfig-poisoned-fraction", lambda: _section("DataConfig", poisoned_classes=[1.5]),
        "ConfigError", "'data.poisoned_classes'"),
    lib("SelectionConfig-T-1e30", lambda: _section("SelectionConfig", ns=5, T=BIG),
        "ConfigError", "'selection.T'", N53),
    lib("SelectionConfig-ns-1e30", lambda: _section("SelectionConfig", scheme="wr", ns=BIG,
                                                    T=5),
        "ConfigError", "'selection.ns'", N53),
    lib("RunConfig-chunk_size-1e30", lambda: _section("RunConfig", chunk_size=BIG),
        "ConfigError", "'run.chunk_size'", N53),
    lib("available_memory-bad-limit", lambda: _res("available_memory")(), "ResourceError",
        "'POISONCERT_MEMORY_LIMIT'", "'8 gigs'", env={"POISONCERT_MEMORY_LIMIT": "8 gigs"}),
]

LIBRARY += LIBRARY_BOUNDS
ENTRIES = CLI_ENTRIES + LIBRARY
assert len({e.id for e in ENTRIES}) == len(ENTRIES), "entry ids must be unique"


# ------------------------------------------------------------------------------ the driver
def _error_types() -> dict[str, type]:
    from poisoncert.config import ConfigError
    from poisoncert.data import DataFormatError, DatasetNotFoundError
    from poisoncert.resources import ResourceError
    from poisoncert.runs import RunError, RunLockedError

    return {"ValueError": ValueError, "ConfigError": ConfigError, "RunError": RunError,
            "RunLockedError": RunLockedError, "DataFormatError": DataFormatError,
            "DatasetNotFoundError": DatasetNotFoundError, "ResourceError": ResourceError}


def _fixtures(root: Path) -> dict[str, Path]:
    """Files the entries start from: data sets, configs, and finished runs to copy."""
    from poisoncert import pipeline, runs
    from poisoncert.config import load_config

    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x = rng.random((300, 12)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    xt, yt = x[:40], y[:40]
    npz = {"tiny.npz": (x, y), "neg.npz": (x, np.where(y == 2, -7, y)),
           "big.npz": (x, np.where(y == 2, 10**12, y)),
           "nan.npz": (np.where(x > 0.99, np.nan, x).astype(np.float32), y),
           "oneclass.npz": (x, np.zeros_like(y))}
    for name, (xs, ys) in npz.items():
        np.savez(root / name, x_train=xs, y_train=ys, x_test=xs[:40], y_test=ys[:40])
    np.savez(root / "pickled.npz", x_train=np.array([{"a": 1}] * 3, dtype=object),
             y_train=yt, x_test=xt, y_test=yt)
    np.save(root / "one.npy", x)
    imgs = rng.random((100, 1, 8, 8)).astype(np.float32)
    np.savez(root / "img.npz", x_train=imgs, y_train=y[:100], x_test=imgs[:20],
             y_test=y[:20])
    (root / "text.npz").write_text("x_train,y_train\n0.5,1\n")
    exp = ("data: {name: 'npz:%s'}\nselection: {scheme: with_replacement, ns: 40, T: 8, "
           "seed: 1}\ntraining: {model: mlp, steps: 2, group_size: 4}\nrun: {chunk_size: 4}\n"
           % (root / "tiny.npz"))
    (root / "exp.yaml").write_text(exp)
    (root / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "dup.yaml").write_text("# dup\nselection: {ns: 3}\ntraining: {steps: 2}\n"
                                   "# again\nselection: {ns: 5}\n")
    (root / "dupkey.yaml").write_text("# one line\nselection: {ns: 3, T: 4, ns: 5}\n")
    (root / "syntax.yaml").write_text("selection: {ns: 3\n")
    (root / "list.yaml").write_text("- data\n- selection\n")
    (root / "unknown.yaml").write_text("selection: {nss: 3}\n")
    (root / "deep.yaml").write_text("selection: " + "[" * 2000 + "]" * 2000 + "\n")
    pipeline.train_run(load_config(root / "exp.yaml"), root / "run", progress=False)
    part = load_config(root / "exp.yaml", {"selection.scheme": "partition", "selection.ns":
                                           "null", "selection.T": "null", "selection.k": "4",
                                           "training.model": "sklearn:naive_bayes"})
    pipeline.train_run(part, root / "prun", progress=False)
    urun = runs.RunDir(root / "urun")  # created, not trained: what a kill after creation leaves
    cfg = load_config(root / "exp.yaml")
    from poisoncert.experiment.split import split_data

    urun.prepare(cfg, runs.build_manifest(cfg, data=split_data(cfg.data).summary.manifest()))
    urun.release()
    return {p.name: p for p in root.iterdir()}


def _edit_run(run: Path, how: str) -> None:
    def npy(name, fn):
        a = np.load(run / name)
        fn(a)
        np.save(run / name, a)

    def manifest(fn):
        man = json.loads((run / "manifest.json").read_text())
        fn(man)
        (run / "manifest.json").write_text(json.dumps(man))

    edits = {
        "config-ns": lambda: (run / "config.yaml").write_text(
            (run / "config.yaml").read_text().replace("ns: 40", "ns: 1")),
        "config-binary": lambda: (run / "config.yaml").write_bytes(b"\xff\xfe\x00bin"),
        "manifest-n": lambda: manifest(lambda m: m["data"].update(n=10**7)),
        "manifest-list": lambda: (run / "manifest.json").write_text("[1, 2]"),
        "manifest-text": lambda: (run / "manifest.json").write_text("not json"),
        "manifest-deep": lambda: (run / "manifest.json").write_text("[" * 10**5 + "]" * 10**5),
        "votes": lambda: npy("votes.npy", lambda a: a.__setitem__((0, 0), a[0, 0] + 1)),
        "labels": lambda: npy("labels.npy", lambda a: a.__setitem__(0, 99)),
        "predictions": lambda: npy("predictions.npy",
                                   lambda a: a.__setitem__((0, 0), (a[0, 0] + 1) % 3)),
        "votes-truncated": lambda: (run / "votes.npy").write_bytes(
            (run / "votes.npy").read_bytes()[:100]),
        "votes-missing": lambda: (run / "votes.npy").unlink(),
    }
    edits[how]()


def _setup(ws: Path, fx: dict[str, Path], item: str) -> None:
    name, _, how = item.partition(":")
    if name == "folder":
        (ws / "folder").mkdir()
    elif name == "folder/notes.txt":
        (ws / "folder").mkdir()
        (ws / "folder" / "notes.txt").write_text("mine")
    elif name == "afile":
        (ws / "afile").write_text("a file, not a folder")
    elif fx[name].is_dir():
        shutil.copytree(fx[name], ws / name)
        if how:
            _edit_run(ws / name, how)
    else:
        shutil.copy(fx[name], ws / name)


def _snapshot(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        out[key] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang(f"no result within {HANG_S} s")


def _run_entry(e: Bad, ws: Path, fx: dict[str, Path]) -> dict:
    from poisoncert.cli import main
    from poisoncert.runs import RunDir

    for item in e.setup:
        _setup(ws, fx, item)
    before = _snapshot(ws)
    out, err = io.StringIO(), io.StringIO()
    res: dict = {"id": e.id}
    held = RunDir(ws / e.lock).lock() if e.lock else contextlib.nullcontext()
    saved = {k: os.environ.get(k) for k, _ in e.env}
    os.environ.update(dict(e.env))
    signal.alarm(HANG_S)
    try:
        with held, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if e.args is not None:
                try:
                    main(list(e.args))
                    res["code"] = 0
                except SystemExit as exc:
                    res["code"] = exc.code if isinstance(exc.code, int) else 1
            else:
                try:
                    e.call()
                    res["raised"] = None
                except _Hang:
                    raise
                except Exception as exc:  # noqa: BLE001 - recorded and judged by the test
                    res["raised"] = [c.__name__ for c in type(exc).__mro__]
                    res["message"] = str(exc)
    except _Hang as exc:
        res["hang"] = str(exc)
    except BaseException as exc:  # noqa: BLE001 - an uncaught error of the entry: a traceback
        res["uncaught"] = "".join(traceback.format_exception(exc))
    finally:
        signal.alarm(0)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    res["output"] = out.getvalue() + err.getvalue()
    after = _snapshot(ws)
    res["written"] = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return res


def drive(out_path: str) -> None:
    """Run every entry in its own empty working folder; write the results as JSON."""
    signal.signal(signal.SIGALRM, _on_alarm)
    os.environ["POISONCERT_MEMORY_LIMIT"] = MEMORY_CAP
    base = Path(tempfile.mkdtemp(prefix="poisoncert-bad-inputs-"))
    results = {}
    try:
        fx = _fixtures(base / "fixtures")
        for i, e in enumerate(ENTRIES):
            ws = base / f"e{i:03d}"
            ws.mkdir()
            os.chdir(ws)
            print(f"START {e.id}", file=sys.__stderr__, flush=True)
            results[e.id] = _run_entry(e, ws, fx)
    finally:
        os.chdir(base.parent)
        shutil.rmtree(base, ignore_errors=True)
    Path(out_path).write_text(json.dumps(results))


# ------------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad-inputs") / "results.json"
    env = {k: v for k, v in os.environ.items() if k != "POISONCERT_TEST_FAULT"}
    proc = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True,
                          timeout=DRIVER_TIMEOUT, env=env)
    started = [ln for ln in proc.stderr.splitlines() if ln.startswith("START ")]
    assert proc.returncode == 0 and out.exists(), (
        f"driver failed (exit {proc.returncode}) in {started[-1:]}: {proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _ids(entries):
    ids = [e.id for e in entries]
    assert len(set(ids)) == len(ids), "entry ids must be unique"
    return ids


def _common(r: dict) -> None:
    assert "hang" not in r, r["hang"]
    assert "uncaught" not in r, r["uncaught"]
    assert r["written"] == [], f"written: {r['written']}"


@pytest.mark.parametrize("entry", CLI_ENTRIES, ids=_ids(CLI_ENTRIES))
def test_bad_command_line(results, entry):
    r = results[entry.id]
    _common(r)
    lines = r["output"].splitlines()
    assert r["code"] == 1, r
    assert len(lines) == 1 and lines[0].startswith("error: "), r["output"]
    assert "Traceback" not in r["output"]
    for w in entry.words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("entry", LIBRARY, ids=_ids(LIBRARY))
def test_bad_library_call(results, entry):
    r = results[entry.id]
    _common(r)
    assert r["raised"] is not None, "accepted silently"
    assert entry.error in r["raised"], r
    assert "\n" not in r["message"], r["message"]
    assert r["output"] == "", r["output"]
    for w in entry.words:
        assert w in r["message"], (w, r["message"])


def test_table_size():
    """The issue asks for at least 150 entries; with part 2 there are 172 command lines and
    107 library calls (177 command lines with training.subset_rows, 188 with the sweep's)."""
    assert len(CLI_ENTRIES) >= 177 and len(LIBRARY) >= 107


CONSOLE = ["radius-gap-alpha", "radius-counts-huge", "delta-steps-1e9", "radius-n-text",
           "certify-missing"]


@pytest.mark.parametrize("entry_id", CONSOLE)
def test_console_script_agrees(results, tmp_path, entry_id):
    """The same entries as real processes of the console entry point."""
    (entry,) = [e for e in CLI_ENTRIES if e.id == entry_id]
    proc = subprocess.run([sys.executable, "-m", "poisoncert.cli", *entry.args],
                          capture_output=True, text=True, timeout=HANG_S, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == results[entry_id]["output"].splitlines()
    assert list(tmp_path.iterdir()) == []


if __name__ == "__main__":
    drive(sys.argv[1])


# ---------------------------------------------------------------- long values, short lines
_DIGITS = "9" * 5000
_TEXT = "x" * 5000


@pytest.mark.parametrize("args, words", [
    (["train", "exp.yaml", "--selection.seed", _DIGITS], ["'selection.seed'"]),
    (["train", "exp.yaml", "--selection.seed", "9" * 400], ["'selection.seed'", "[0, 2^64 - 1]"]),
    (["train", "exp.yaml", "--training.optimizer", _TEXT], ["'training.optimizer'", "'adam'"]),
    (["train", "exp.yaml", "--data.name", _TEXT], ["'data.name'"]),
    (["train", "exp.yaml", f"--selection.{_TEXT}", "1"], ["Unknown config key"]),
    (["radius", "--scheme", _TEXT, "--n", "100", "--ns", "3", "--gap", "0.5"], ["'--scheme'"]),
    (["radius", "--scheme", "wr", "--n", "100", "--ns", _DIGITS, "--gap", "0.5"], ["'--ns'"]),
    (["certify", "run", "--rhos", f"1,{_DIGITS}"], ["'--rhos'", "comma-separated ints"]),
    (["update", "run", "--out", "new", "--remove", f"1,{_DIGITS}"], ["'--remove'"]),
    (["attack", "run", "--attacks", _TEXT], ["'--attacks'"]),
    (["attack", "run", "--seed", "9" * 400], ["'--seed'", "2^64 - 1"]),
    (["attack", "run", f"--{_TEXT}"], ["No such option"]),
    (["train", _TEXT], ["config file"]),
])
def test_a_long_value_is_echoed_short(args, words, tmp_path, monkeypatch, capsys):
    """A refused value was echoed whole: a 5,000-digit seed or a pasted text filled the
    terminal with one 5,000-character line (the int's refusal even leaked Python's own
    "Exceeds the limit (4300 digits) for integer string conversion" for --rhos). Now its
    start, its end and its size (a fresh-eyes review); still one line, naming the parameter."""
    from poisoncert.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text("data:\n  name: digits\n")
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert len(lines[0]) < 400, lines[0]
    assert re.search(r"\((\d+ items?, )?(400|5,0\d\d) (characters|digits)\)", lines[0]), \
        lines[0]  # the size of what was given
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


def test_shown_keeps_a_value_recognisable():
    from poisoncert._validation import SHOWN_MAX, param_error, shown

    assert shown(np.int64(7)) == "7" and shown("adam") == "'adam'" and shown(1e300) == "1e+300"
    assert shown(10**199) == str(10**199)  # 200 characters: whole
    big = shown(10**5000 + 12345)  # beyond the 4,300 digits str() converts
    assert big == "1" + "0" * 99 + "..." + "0" * 35 + "12345 (5,001 digits)"
    assert shown(-(10**250)).startswith("-1000") and shown(-(10**250)).endswith("(251 digits)")
    assert shown("/a" * 99) == repr("/a" * 99)  # a long path: whole
    assert shown("ab" * 1000).endswith("' (2,000 characters)")
    assert shown(list(range(2000))).endswith("(2,000 items, 10,890 characters)")
    assert shown([10**5000]) == "a list of 1 item"
    assert len(shown("x" * 10**6)) < 2 * SHOWN_MAX
    msg = str(param_error("seed", "f", "an int", 10**5000))
    assert msg.startswith("The 'seed' parameter of f must be an int. Got 1000")
    assert msg.endswith("(5,001 digits) instead.") and len(msg) < 250


def test_a_long_path_is_shown_whole_in_an_error_line(tmp_path, capsys):
    """``error_line`` shortened every word over 200 characters, so a run folder in a deep
    project tree was reported as ``'/tmp/.../segment_of_a_...tree_07/run' (289 characters)
    is not a poisoncert run directory``: the folder the user has to fix hidden (a fresh-eyes
    review). A path that could exist is kept whole; a file name longer than any file system
    takes, and a long word that is no path, are still shortened."""
    from poisoncert.cli import main
    from poisoncert.cli.certs import error_line

    deep = tmp_path.joinpath(*[f"segment_of_a_deep_project_tree_{i:02d}" for i in range(8)])
    with pytest.raises(SystemExit) as e:
        main(["certify", str(deep / "run")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert f"'{deep / 'run'}' is not a poisoncert run directory" in err, err
    assert len(str(deep)) > 250
    name_too_long = error_line(OSError(f"cannot open '{tmp_path / ('x' * 300)}'"))
    assert "(3" in name_too_long and "x" * 300 not in name_too_long
    assert "(5,000 characters)" in error_line(ValueError("No such option: --" + "x" * 4998))
