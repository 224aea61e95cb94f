"""poisoncert: certified defences against training-data poisoning by randomized selection.

The math (``bounds``, ``stats``, ``certify``) needs only numpy and scipy; training needs
PyTorch and is imported lazily, so ``import poisoncert`` never imports torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

from poisoncert.bounds import certified_radius, delta  # noqa: E402

__all__ = ["__version__", "certified_radius", "delta", "CertifiedEnsembleClassifier"]


def __getattr__(name: str):
    if name == "CertifiedEnsembleClassifier":
        from poisoncert.estimator import CertifiedEnsembleClassifier

        return CertifiedEnsembleClassifier
    raise AttributeError(f"module 'poisoncert' has no attribute {name!r}")
