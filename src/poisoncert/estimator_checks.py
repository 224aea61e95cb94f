"""Parameter and input checks of ``CertifiedEnsembleClassifier``, in scikit-learn's manner.

``ensemble_size`` resolves the selection of an ensemble (its defaults, then the one rule of
``selection.check_size``), ``check_clean_mask`` the known-clean rows given to ``fit``, and
``validate_input`` checks ``X`` with what the base estimator accepts (sparse input, NaN), as
its tags (``base_tags``) say.
"""

from __future__ import annotations

import math

import numpy as np

from poisoncert._validation import param_error
from poisoncert.selection import PARTITION, check_size

try:  # scikit-learn >= 1.6
    from sklearn.utils import get_tags as _get_tags
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _get_tags = None

    def _validate_data(est, *args, **kwargs):
        if "ensure_all_finite" in kwargs:
            kwargs["force_all_finite"] = kwargs.pop("ensure_all_finite")
        return est._validate_data(*args, **kwargs)


__all__ = ["base_tags", "check_clean_mask", "default_ns", "ensemble_size", "validate_input"]


def default_ns(n: int) -> int:
    """``ceil(sqrt(n))``, the default sub-dataset size."""
    return max(1, math.ceil(math.sqrt(n)))


def ensemble_size(scheme: str, n: int, *, ns, p, n_estimators: int, n_partitions,
                  where: str) -> tuple[int | None, float | None, int]:
    """Effective ``(ns, p, T)`` for ``n`` attackable rows, or an error of the one shape.

    ``ns`` / ``p`` follow ``selection.check_size`` after the defaults: ``ns = ceil(sqrt(n))``
    for bagging, ``p = min(ceil(sqrt(n)) / n, 1/2)`` for binomial selection; a binomial ``ns``
    becomes ``p = ns / n`` (and ``ns`` None). ``T`` is ``n_partitions`` (or ``n_estimators``)
    for the partition scheme, else ``n_estimators``.
    """
    if scheme != PARTITION and n_partitions is not None:
        raise param_error("n_partitions", where, f"None for scheme={scheme!r}", n_partitions)
    if scheme == "binomial" and ns is None and p is None:
        p = min(default_ns(n) / n, 0.5)
    elif scheme in ("without_replacement", "with_replacement") and ns is None:
        ns = default_ns(n)
    ns, p = check_size(scheme, n, ns=ns, p=p, where=where)
    if scheme == PARTITION:
        return None, None, int(n_estimators if n_partitions is None else n_partitions)
    return (None if scheme == "binomial" else ns), p, int(n_estimators)


def check_clean_mask(clean_mask, n_samples: int, *, where: str) -> np.ndarray:
    """The known-clean rows as a boolean array of ``n_samples`` (all False for None) that
    leaves at least one row attackable."""
    if clean_mask is None:
        return np.zeros(n_samples, dtype=bool)
    mask = np.asarray(clean_mask)
    if mask.dtype != bool or mask.shape != (n_samples,):
        raise param_error("clean_mask", where,
                          f"a boolean array of shape (n_samples,) = ({n_samples},)",
                          f"an array of dtype {mask.dtype} and shape {mask.shape}")
    if mask.all():
        raise param_error("clean_mask", where,
                          "a boolean array leaving at least one row attackable (the "
                          "sub-datasets are drawn from the rows not marked clean)",
                          "an all-True mask")
    return mask.copy()


def base_tags(base):
    """scikit-learn's tags of ``base`` (None where they cannot be read: assume the defaults)."""
    if _get_tags is None:  # pragma: no cover
        return None
    try:
        return _get_tags(base)
    except Exception:  # a base estimator with broken tags
        return None


def validate_input(ensemble, X, *, base, reset: bool, y=None):
    """``X`` (and ``y`` when ``reset``) checked by scikit-learn's ``validate_data`` for
    ``ensemble``, accepting sparse input (as CSR) and NaN where the ``base`` estimator does."""
    tags = base_tags(base)
    sparse_ok = tags is not None and tags.input_tags.sparse
    nan_ok = tags is not None and tags.input_tags.allow_nan
    kwargs = dict(accept_sparse="csr" if sparse_ok else False,
                  ensure_all_finite="allow-nan" if nan_ok else True, reset=reset)
    if not reset:
        return _validate_data(ensemble, X, **kwargs)
    return _validate_data(ensemble, X, y, **kwargs)
