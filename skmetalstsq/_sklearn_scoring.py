"""scikit-learn's scorers given IndexedTensorMaps.

scikit-learn's string scorers convert ``y`` to one numpy array, which an
:class:`~._indexed.IndexedTensorMap` refuses. This module finds which scorer
asked, so that the refusal names the scorer of :mod:`skmetalstsq.metrics` to
use instead. It imports nothing of this package: :mod:`._indexed` raises its
errors and :mod:`.metrics` re-exports :class:`UnsupportedScoringError`.
"""

import sys

#: scikit-learn's scorer names -> the names in :mod:`skmetalstsq.metrics` of the same metrics
SKLEARN_NAMES = {
    "r2": "r2",
    "neg_root_mean_squared_error": "neg_rmse",
    "neg_mean_absolute_error": "neg_mae",
    "neg_mean_squared_error": "neg_mse",
}


class UnsupportedScoringError(BaseException):
    """A scikit-learn metric was asked to read an IndexedTensorMap.

    scikit-learn's string scorers (``scoring="neg_root_mean_squared_error"``)
    convert ``y`` to one numpy array, which an IndexedTensorMap cannot be. The
    message names the scorer of :mod:`skmetalstsq.metrics` to use instead.

    It derives from ``BaseException``, as ``KeyboardInterrupt`` does, and not
    from ``Exception``: scikit-learn's model selection turns any ``Exception`` of
    a scorer into ``error_score`` (NaN by default) and a warning, so a search
    would go on, score every candidate NaN and pick the first. This error
    stops the search instead; catch it by name.
    """

    __module__ = "skmetalstsq.metrics"  # where users import it from


def array_conversion_error(data):
    """The error ``numpy.asarray(data)`` raises for an IndexedTensorMap ``data``.

    :class:`UnsupportedScoringError` when a metric of scikit-learn's scorers is
    converting ``data`` (its ``y_true`` or ``y_pred``), a TypeError otherwise.
    """
    found = _sklearn_scorer_of(data)
    if found is None:
        return TypeError(
            "IndexedTensorMap cannot be converted to a numpy array; use its .tensor, or an "
            "estimator that accepts TensorMaps. To score IndexedTensorMaps in scikit-learn's "
            "model selection, use scoring=skmetalstsq.metrics.scorer(name), e.g. "
            "scorer('neg_rmse')"
        )
    sklearn_name, description = found
    what = f"'{sklearn_name}'" if sklearn_name else description
    start = (
        f"scikit-learn's {what} scorer cannot score IndexedTensorMaps: its metric converts "
        "y to one numpy array"
    )
    if sklearn_name in SKLEARN_NAMES:
        return UnsupportedScoringError(
            f"{start}; use scoring=skmetalstsq.metrics.scorer('{SKLEARN_NAMES[sklearn_name]}'), "
            "which compares y_true and y_pred by labels and pools every block"
        )
    names = sorted(set(SKLEARN_NAMES.values()))
    return UnsupportedScoringError(
        f"{start}; use scoring=skmetalstsq.metrics.scorer(name) with a name of {names}, "
        "or a callable (estimator, X, y) -> float that reads X.tensor and y.tensor"
    )


def _sklearn_scorer_of(data):
    """(registered name or None, repr) of the scikit-learn scorer whose metric is
    reading ``data``, or None when no scikit-learn metric is.

    Looks up the call stack for scikit-learn's ``_Scorer._score`` with ``data``
    as its ``y_true`` or ``y_pred``, and a metric function of scikit-learn (a
    metric of one's own may handle IndexedTensorMaps itself).
    """
    try:
        from sklearn.metrics import _scorer
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        return None
    scorer_class = getattr(_scorer, "_Scorer", None)
    if scorer_class is None:  # pragma: no cover - scikit-learn < 1.4 or > 1.9
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_score":
            local = frame.f_locals
            candidate = local.get("self")
            if isinstance(candidate, scorer_class) and (
                local.get("y_true") is data or local.get("y_pred") is data
            ):
                module = getattr(candidate._score_func, "__module__", "") or ""
                if not module.startswith("sklearn."):
                    return None
                return _registered_name(_scorer, candidate), repr(candidate)
        frame = frame.f_back
    return None


def _registered_name(scorer_module, candidate):
    """The name scikit-learn registers ``candidate`` under, or None."""
    try:
        for name, registered in getattr(scorer_module, "_SCORERS", {}).items():
            if (
                type(registered) is type(candidate)
                and registered._score_func is candidate._score_func
                and registered._sign == candidate._sign
                and registered._kwargs == candidate._kwargs
            ):
                return name
    except Exception:  # pragma: no cover - private attributes that changed
        return None
    return None
