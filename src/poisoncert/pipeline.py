"""Former home of the experiment functions, kept so that old imports work: they live in
``poisoncert.experiment`` (``train_run``, ``certify_run``, ``run_demo``)."""

from poisoncert.experiment import (
    DEMO_CONFIG,
    DEMO_SCHEMES,
    CertifiedAccuracy,
    CertifyResult,
    RunResult,
    certify_run,
    run_demo,
    train_run,
)

__all__ = ["DEMO_CONFIG", "DEMO_SCHEMES", "CertifiedAccuracy", "CertifyResult", "RunResult",
           "certify_run", "run_demo", "train_run"]
