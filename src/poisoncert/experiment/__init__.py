"""Experiments: split the data, train a run chunk by chunk, certify it (and the demo).

- ``split``: ``split_data`` (``DataSplit``: ``D^c`` and ``D^p``), ``subset_plan``;
- ``learners``: the ``Learner`` chosen once from the config (torch, scikit-learn, two-phase);
- ``train``: ``train_run`` (``RunResult``), the picklable ``ChunkTrainer`` executors run;
- ``certify``: ``certify_run`` (``CertifyResult``) and its CSV, JSON and PNG files;
- ``demo``: ``run_demo`` on ``experiments/demo.yaml``.
"""

from poisoncert.experiment.certify import (
    CertifiedAccuracy,
    CertifyResult,
    accuracy_curve,
    certify_run,
    curve_label,
)
from poisoncert.experiment.demo import (
    DEMO_CONFIG,
    DEMO_SCHEMES,
    DemoResult,
    demo_config,
    run_demo,
)
from poisoncert.experiment.split import DataSplit, DataSummary, split_data, subset_plan
from poisoncert.experiment.train import (
    ChunkResult,
    ChunkTrainer,
    ProgressDisplay,
    RunResult,
    StartInterrupted,
    TrainInterrupted,
    run_subsets,
    train_run,
)

__all__ = [
    "DEMO_CONFIG",
    "DEMO_SCHEMES",
    "CertifiedAccuracy",
    "CertifyResult",
    "ChunkResult",
    "ChunkTrainer",
    "DataSplit",
    "DataSummary",
    "DemoResult",
    "ProgressDisplay",
    "RunResult",
    "StartInterrupted",
    "TrainInterrupted",
    "accuracy_curve",
    "certify_run",
    "curve_label",
    "demo_config",
    "run_demo",
    "run_subsets",
    "split_data",
    "subset_plan",
    "train_run",
]
