"""Errors pooled over every block of a TensorMap, and scorers built on them.

Each metric takes ``y_true`` and ``y_pred`` (TensorMaps or IndexedTensorMaps with
the same keys, in any order, and the same samples in each block) and pools every
entry of every block: of the values, or of the gradient named by ``gradient``.
Each block is seen as a (rows, properties) matrix, components folded into rows.
"""

import numpy as np

from ._blocks import key_text
from ._indexed import unwrap
from ._validation import check_is_tensor_map, check_same_keys

__all__ = ["mae", "r2", "rmse", "scorer", "SCORERS"]


def _paired_matrices(y_true, y_pred, gradient, caller):
    """(true, predicted) 2-D arrays of every block, of the values or a gradient."""
    y_true, y_pred = unwrap(y_true)[0], unwrap(y_pred)[0]
    check_is_tensor_map(y_true, caller, "y_true")
    check_is_tensor_map(y_pred, caller, "y_pred")
    check_same_keys(y_true, y_pred, caller, names=("y_true", "y_pred"))
    pairs = []
    for key, true_block in y_true.items():
        pred_block = y_pred.block(key)
        if gradient is not None:
            for name, block in (("y_true", true_block), ("y_pred", pred_block)):
                if not block.has_gradient(gradient):
                    raise ValueError(
                        f"{caller}: block {key_text(key)} of {name} has no '{gradient}' "
                        f"gradient (it has {block.gradients_list()})"
                    )
            true_block, pred_block = (
                true_block.gradient(gradient),
                pred_block.gradient(gradient),
            )
        if true_block.values.shape != pred_block.values.shape:
            where = "values" if gradient is None else f"'{gradient}' gradient"
            raise ValueError(
                f"{caller}: block {key_text(key)} has {where} of shape "
                f"{tuple(true_block.values.shape)} in y_true but "
                f"{tuple(pred_block.values.shape)} in y_pred"
            )
        if true_block.samples != pred_block.samples:
            raise ValueError(
                f"{caller}: block {key_text(key)} has other samples in y_true than in y_pred"
            )
        n_properties = true_block.values.shape[-1]
        true = true_block.values.reshape(-1, n_properties)
        pred = pred_block.values.reshape(-1, n_properties)
        if type(true) is not type(pred):
            pred = np.asarray(pred) if isinstance(true, np.ndarray) else pred.to(true)
        pairs.append((true, pred))
    return pairs


def _sum(array):
    return float(array.sum())


def rmse(y_true, y_pred, *, gradient=None):
    """Root-mean-square error over every entry of every block.

    Parameters
    ----------
    y_true, y_pred : metatensor.TensorMap or IndexedTensorMap
    gradient : str or None, default=None
        None compares the values; a gradient parameter (e.g. ``"positions"``)
        compares that gradient.

    Returns
    -------
    float
        NaN when there is no entry at all.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import metrics
    >>> def tensor(values):
    ...     block = TensorBlock(values, Labels.range("system", 2), [], Labels.range("e", 1))
    ...     return TensorMap(Labels.single(), [block])
    >>> metrics.rmse(tensor(np.array([[1.0], [2.0]])), tensor(np.array([[1.0], [4.0]])))
    1.4142135623730951
    """
    pairs = _paired_matrices(y_true, y_pred, gradient, "rmse")
    squared = sum(_sum((t - p) ** 2) for t, p in pairs)
    count = sum(t.shape[0] * t.shape[1] for t, _ in pairs)
    return float(np.sqrt(squared / count)) if count else float("nan")


def mae(y_true, y_pred, *, gradient=None):
    """Mean absolute error over every entry of every block (see :func:`rmse`)."""
    pairs = _paired_matrices(y_true, y_pred, gradient, "mae")
    absolute = sum(_sum(abs(t - p)) for t, p in pairs)
    count = sum(t.shape[0] * t.shape[1] for t, _ in pairs)
    return absolute / count if count else float("nan")


def r2(y_true, y_pred, *, gradient=None):
    """Coefficient of determination pooled over blocks.

    ``1 - sum of squared residuals / sum of squared deviations from each
    column's mean``, both sums running over every block's (rows, properties)
    matrix. For a single block this is
    ``sklearn.metrics.r2_score(..., multioutput="variance_weighted")``; as there,
    a constant target gives 1.0 when predicted exactly and 0.0 otherwise.

    Parameters
    ----------
    y_true, y_pred : metatensor.TensorMap or IndexedTensorMap
    gradient : str or None, default=None
        As in :func:`rmse`.

    Returns
    -------
    float
    """
    pairs = _paired_matrices(y_true, y_pred, gradient, "r2")
    residual = sum(_sum((t - p) ** 2) for t, p in pairs)
    total = sum(_sum((t - t.mean(0)) ** 2) for t, _ in pairs if t.shape[0])
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


#: name -> (metric, sign): a scorer returns ``sign * metric`` so greater is better.
SCORERS = {"r2": (r2, 1.0), "neg_rmse": (rmse, -1.0), "neg_mae": (mae, -1.0)}


class TensorMapScorer:
    """A scikit-learn scorer ``(estimator, X, y) -> float`` on TensorMaps.

    Made by :func:`scorer`; picklable, so it works with ``n_jobs`` in searches.
    """

    def __init__(self, name, gradient=None):
        self.name = name
        self.gradient = gradient

    def __call__(self, estimator, X, y):
        metric, sign = SCORERS[self.name]
        return sign * metric(y, estimator.predict(X), gradient=self.gradient)

    def __repr__(self):
        return f"scorer({self.name!r}, gradient={self.gradient!r})"


def scorer(name, *, gradient=None):
    """A scorer for ``scoring=`` in scikit-learn's model selection tools.

    Parameters
    ----------
    name : {"r2", "neg_rmse", "neg_mae"}
        The metric; errors are negated so that greater is better.
    gradient : str or None, default=None
        Score the values (None) or that gradient.

    Returns
    -------
    callable ``(estimator, X, y) -> float``

    Notes
    -----
    The scorer calls ``estimator.predict(X)`` and compares with ``y`` by the
    metric; X and y are the TensorMaps or IndexedTensorMaps of a test fold. In a
    dict of scorers (multi-metric search) each scorer predicts on its own.

    Examples
    --------
    >>> from skmetalstsq import metrics
    >>> metrics.scorer("neg_rmse", gradient="positions")
    scorer('neg_rmse', gradient='positions')
    """
    if name not in SCORERS:
        raise ValueError(f"scorer: name must be one of {sorted(SCORERS)}, got {name!r}")
    if gradient is not None and not isinstance(gradient, str):
        raise TypeError(
            f"scorer: gradient must be None or the name of a gradient (a str), got {gradient!r}"
        )
    return TensorMapScorer(name, gradient)
