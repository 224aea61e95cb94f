"""poisoncert: certified defences against training-data poisoning by randomized selection.

The math (``bounds``, ``stats``, ``certify``) needs only numpy and scipy; training needs
PyTorch and is imported lazily, so ``import poisoncert`` never imports torch (nor numpy: the
names below are imported on first use).
"""

from poisoncert.threads import reproducible_blas as _reproducible_blas

_reproducible_blas()  # before torch's first matrix product in this process (see threads)

from poisoncert._version import __version__  # noqa: E402

__all__ = ["__version__", "certified_radius", "delta", "CertifiedEnsembleClassifier",
           "CertifiedModel", "Ensemble", "NeighborModel"]


def __dir__() -> list[str]:
    # the names imported on first use too: dir() and tab completion list them as before
    return sorted({*globals(), *__all__})


def __getattr__(name: str):
    # Imported on first use, numpy and scipy included: ``import poisoncert`` (and so the
    # console script's first instant, see ``_console``) takes milliseconds, not 0.3 s.
    if name in ("certified_radius", "delta"):
        from poisoncert import bounds

        return getattr(bounds, name)
    if name == "CertifiedEnsembleClassifier":
        from poisoncert.estimator import CertifiedEnsembleClassifier

        return CertifiedEnsembleClassifier
    if name == "Ensemble":
        from poisoncert.experiment.ensemble import Ensemble

        return Ensemble
    if name == "NeighborModel":  # what Ensemble.load gives for a knn / rnn run
        from poisoncert.experiment.nnmodel import NeighborModel

        return NeighborModel
    if name == "CertifiedModel":  # what Ensemble and NeighborModel both are
        from poisoncert.experiment.model import CertifiedModel

        return CertifiedModel
    raise AttributeError(f"module 'poisoncert' has no attribute {name!r}")
