"""poisoncert: certified defences against training-data poisoning by randomized selection.

The math (``bounds``, ``stats``, ``certify``) needs only numpy and scipy; training needs
PyTorch and is imported lazily, so ``import poisoncert`` never imports torch.
"""

from __future__ import annotations

from poisoncert.threads import reproducible_blas

reproducible_blas()  # before torch's first matrix product in this process (see threads)

from poisoncert._version import __version__  # noqa: E402
from poisoncert.bounds import certified_radius, delta  # noqa: E402

__all__ = ["__version__", "certified_radius", "delta", "CertifiedEnsembleClassifier",
           "Ensemble"]


def __getattr__(name: str):
    if name == "CertifiedEnsembleClassifier":
        from poisoncert.estimator import CertifiedEnsembleClassifier

        return CertifiedEnsembleClassifier
    if name == "Ensemble":
        from poisoncert.experiment.ensemble import Ensemble

        return Ensemble
    raise AttributeError(f"module 'poisoncert' has no attribute {name!r}")
