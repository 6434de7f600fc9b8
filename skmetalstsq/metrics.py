"""Errors pooled over every block of a TensorMap, and scorers built on them.

Each metric takes ``y_true`` and ``y_pred`` (TensorMaps or IndexedTensorMaps with
the same keys, in any order) and pools every entry of every block: of the values,
or of the gradient named by ``gradient``. Each block is seen as a (rows,
properties) matrix, components folded into rows.

The two sides are compared by labels, not by position: within a block, the
samples, components and properties of ``y_pred`` (and the samples of the compared
gradient) may come in another order than in ``y_true``, and are put in
``y_true``'s order first; labels that differ are an error naming the block.

``sample_weight`` weighs the rows of those matrices (one weight for all the
properties of a row); see :func:`rmse` for the kinds it accepts.
"""

import numbers

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.utils._metadata_requests import (
    MetadataRequest,
    _MetadataRequester,
    _routing_enabled,
    get_routing_for_object,
)

from ._backends import array_library
from ._blocks import array_to_tensor, blocks_in_order, key_text, key_tuple
from ._indexed import unwrap
from ._sklearn_scoring import SKLEARN_NAMES, UnsupportedScoringError
from ._validation import _array_kind, check_finite, check_is_tensor_map, check_same_keys
from ._weights import row_weights

__all__ = ["mae", "mse", "r2", "rmse", "scorer", "SCORERS", "UnsupportedScoringError"]


# ---------------------------------------------------------------------------------
# y_true and y_pred paired block by block, checked before anything is computed
# ---------------------------------------------------------------------------------


def _paired_rows(y_true, y_pred, gradient, sample_weight, caller):
    """(true, predicted, weights) of every block, as (rows, properties) matrices.

    ``predicted`` is in the order of ``true`` (samples, components, properties),
    of the same array library and device; ``weights`` is None or one float64
    numpy weight per row. Every block is checked before any array is touched.
    """
    if gradient is not None and not isinstance(gradient, str):
        raise TypeError(
            f"{caller}: gradient must be None or the name of a gradient (a str), got {gradient!r}"
        )
    if _is_plain_array(y_true) and _is_plain_array(y_pred):
        # arrays, as scikit-learn's searches hand them to a scorer: one block
        if gradient is not None:
            raise ValueError(f"{caller}: arrays have no '{gradient}' gradient to score")
        y_true, y_pred = (
            _array_block(y_true, caller, "y_true"),
            _array_block(y_pred, caller, "y_pred"),
        )
        if sample_weight is not None and not isinstance(sample_weight, numbers.Real):
            sample_weight = row_weights(
                sample_weight, y_true, caller, per_sample=True, name="y_true"
            )
            sample_weight = _weight_map(sample_weight, y_true)
    tensor_true, tensor_pred = unwrap(y_true)[0], unwrap(y_pred)[0]
    check_is_tensor_map(tensor_true, caller, "y_true")
    check_is_tensor_map(tensor_pred, caller, "y_pred")
    check_same_keys(tensor_true, tensor_pred, caller, names=("y_true", "y_pred"))
    plans = [
        _plan_block(key, true_block, pred_block, gradient, caller)
        for (key, true_block), pred_block in zip(
            tensor_true.items(), blocks_in_order(tensor_pred, tensor_true.keys)
        )
    ]
    parameters = {
        key_tuple(key): [] if gradient is None else [gradient] for key in tensor_true.keys
    }
    weights = row_weights(sample_weight, y_true, caller, parameters, name="y_true")
    if weights is not None:
        weights = [weights[key_tuple(key)][-1] for key in tensor_true.keys]
        n_entries = sum(len(w) * true.shape[-1] for w, (true, _, _) in zip(weights, plans))
        if n_entries and not any(w.any() for w in weights):
            raise ValueError(
                f"{caller}: sample_weight is 0 for every compared row of y_true; "
                "a weighted mean needs some weight"
            )
    else:
        weights = [None] * len(plans)
    return [(*_apply(true, pred, orders), w) for (true, pred, orders), w in zip(plans, weights)]


def _is_plain_array(data):
    """Whether ``data`` is an array (numpy, torch, a list) rather than a TensorMap."""
    return not isinstance(unwrap(data)[0], TensorMap) and hasattr(data, "__len__")


def _array_block(data, caller, name):
    """A 1-D or 2-D array as a one-block TensorMap of (samples, columns)."""
    array = data if hasattr(data, "shape") else np.asarray(data)
    if array.ndim not in (1, 2):
        raise ValueError(
            f"{caller}: {name} must be 1-D or 2-D, got an array of shape {array.shape}"
        )
    return array_to_tensor(array.reshape(len(array), -1))


def _weight_map(weights, y):
    """Row weights of a one-block ``y`` (as :func:`row_weights` gives them) as a map."""
    (values,) = weights.values()
    block = y.block(0)
    weight_block = TensorBlock(
        np.asarray(values[0], dtype=np.float64)[:, None],
        block.samples,
        [],
        Labels.range("weight", 1),
    )
    return TensorMap(y.keys, [weight_block])


def _plan_block(key, true_block, pred_block, gradient, caller):
    """Check one block's pair; return its arrays and how to reorder y_pred's.

    Returns
    -------
    (true array, predicted array, orders): ``orders`` holds, for each axis of
    the arrays, None or the positions that put y_pred's entries in y_true's order.
    """
    block = f"{caller}: block {key_text(key)}"
    true_kind, pred_kind = _array_kind(true_block.values), _array_kind(pred_block.values)
    if true_kind != pred_kind:
        raise TypeError(f"{block} holds {true_kind} arrays in y_true but {pred_kind} in y_pred")
    if gradient is not None:
        for name, side in (("y_true", true_block), ("y_pred", pred_block)):
            if not side.has_gradient(gradient):
                raise ValueError(
                    f"{caller}: block {key_text(key)} of {name} has no '{gradient}' "
                    f"gradient (it has {side.gradients_list()})"
                )
    for name, side in (("y_true", true_block), ("y_pred", pred_block)):
        if len(side.properties) == 0:
            raise ValueError(
                f"{block} has 0 properties in {name}, so nothing to compare; drop the "
                "blocks without properties from y_true and y_pred (metatensor.drop_blocks)"
            )
    sample_order = _order(block, "samples", true_block.samples, pred_block.samples)
    property_order = _order(block, "properties", true_block.properties, pred_block.properties)
    if gradient is None:
        label, where, true_part, pred_part = block, "values", true_block, pred_block
        row_order = sample_order
    else:
        label, where = f"{block}, '{gradient}' gradient", f"'{gradient}' gradient"
        true_part, pred_part = true_block.gradient(gradient), pred_block.gradient(gradient)
        if sample_order is None:
            row_order = _order(label, "samples", true_part.samples, pred_part.samples)
        else:
            # y_pred's gradient rows name their sample by its position in y_pred:
            # renumber them by the position of that sample in y_true
            pred_samples = np.array(pred_part.samples.values)
            position_in_true = np.empty(len(sample_order), dtype=pred_samples.dtype)
            position_in_true[sample_order] = np.arange(len(sample_order))
            pred_samples[:, 0] = position_in_true[pred_samples[:, 0]]
            row_order = _order_values(
                label,
                "samples",
                true_part.samples.names,
                np.asarray(true_part.samples.values),
                pred_part.samples.names,
                pred_samples,
            )
    true_components, pred_components = true_part.components, pred_part.components
    if len(true_components) != len(pred_components):
        raise ValueError(
            f"{label} has {len(true_components)} component dimensions in y_true but "
            f"{len(pred_components)} in y_pred"
        )
    component_orders = [
        _order(label, "components", t, p) for t, p in zip(true_components, pred_components)
    ]
    _check_array(true_part.values, caller, "y_true", key, where)
    _check_array(pred_part.values, caller, "y_pred", key, where)
    orders = [row_order, *component_orders, property_order]
    return true_part.values, pred_part.values, orders


def _order(label, what, true_labels, pred_labels):
    """None when two Labels are equal, else see :func:`_order_values`."""
    if true_labels == pred_labels:
        return None
    return _order_values(
        label,
        what,
        true_labels.names,
        np.asarray(true_labels.values),
        pred_labels.names,
        np.asarray(pred_labels.values),
    )


def _order_values(label, what, true_names, true_values, pred_names, pred_values):
    """Positions of y_pred's entries in y_true's order (None: already in it).

    Raises
    ------
    ValueError
        When the names differ, or the entries are not the same set.
    """
    if true_names != pred_names:
        raise ValueError(
            f"{label} has {what} named {true_names} in y_true but {pred_names} in y_pred"
        )
    if true_values.shape == pred_values.shape:
        if np.array_equal(true_values, pred_values):
            return None
        if true_values.shape[1]:
            true_sorted = np.lexsort(true_values.T[::-1])
            pred_sorted = np.lexsort(pred_values.T[::-1])
            if np.array_equal(true_values[true_sorted], pred_values[pred_sorted]):
                order = np.empty(len(true_sorted), dtype=np.intp)
                order[true_sorted] = pred_sorted
                return order
    raise ValueError(f"{label} {_difference(what, true_names, true_values, pred_values)}")


def _difference(what, names, true_values, pred_values):
    """How two sets of label entries differ: counts and the first entry of each side."""
    if len(true_values) != len(pred_values):
        text = f"has {len(true_values)} {what} in y_true but {len(pred_values)} in y_pred"
    else:
        text = f"has different {what} in y_true and y_pred"
    true_rows, pred_rows = true_values.tolist(), pred_values.tolist()
    true_set, pred_set = set(map(tuple, true_rows)), set(map(tuple, pred_rows))
    details = []
    only_true = next((row for row in true_rows if tuple(row) not in pred_set), None)
    if only_true is not None:
        details.append(f"{_entry(names, only_true)} is in y_true but not in y_pred")
    only_pred = next((row for row in pred_rows if tuple(row) not in true_set), None)
    if only_pred is not None:
        details.append(f"{_entry(names, only_pred)} is in y_pred but not in y_true")
    return f"{text}: {' and '.join(details)}" if details else text


def _entry(names, values):
    return "(" + ", ".join(f"{n}={int(v)}" for n, v in zip(names, values)) + ")"


def _check_array(array, caller, name, key, where):
    """Raise for an array of non-numbers, complex numbers, NaN or infinity."""
    block = f"{caller}: {name} block {key_text(key)}"
    if array_library(array) == "numpy":
        numbers = np.issubdtype(array.dtype, np.number)
        complex_ = np.iscomplexobj(array)
    else:
        import torch

        numbers = array.dtype != torch.bool
        complex_ = array.is_complex()
    if not numbers:
        raise TypeError(f"{block} has {array.dtype} {where}; the metrics compare real numbers")
    if complex_:
        raise TypeError(f"{block} has complex {where}; the metrics compare real numbers")
    check_finite(array, caller, name, key, where)


def _apply(true, pred, orders):
    """(true, pred) as (rows, properties) float matrices, pred in true's order."""
    for axis, order in enumerate(orders):
        if order is not None:
            pred = _take(pred, order, axis)
    true, pred = _floating(true), _floating(pred)
    n_properties = true.shape[-1]
    return true.reshape(-1, n_properties), pred.reshape(-1, n_properties)


def _take(array, order, axis):
    if array_library(array) == "numpy":
        return np.take(array, order, axis=axis)
    import torch

    return array.index_select(axis, torch.as_tensor(order, device=array.device))


def _floating(array):
    """Integer arrays as float64; floating ones unchanged."""
    if array_library(array) == "numpy":
        return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)
    if array.is_floating_point():
        return array
    import torch

    return array.to(torch.float64)


# ---------------------------------------------------------------------------------
# sums over every block
# ---------------------------------------------------------------------------------


def _like(weights, array):
    """The numpy row weights as a column of ``array``'s library, dtype and device."""
    if array_library(array) == "numpy":
        return weights[:, None]
    import torch

    return torch.as_tensor(weights, dtype=array.dtype, device=array.device)[:, None]


def constant_columns(values, weights=None):
    """Which columns of ``values`` hold one value in every row of positive weight.

    Such a column deviates from its (weighted) mean by exactly 0, which the
    mean, rounded, does not give back: the mean of three rows of 0.1 is
    0.10000000000000002.

    Parameters
    ----------
    values : numpy or torch array of shape (n_rows, n_columns)
        With at least one row of positive weight.
    weights : 1-D numpy array or None
        Row weights (>= 0); None: every row counts.

    Returns
    -------
    (constant, value)
        A boolean array of shape (n_columns,) and a row of ``values`` of positive
        weight (the value of the constant columns), both of ``values``' library.
    """
    if weights is not None:
        values = _take(values, np.flatnonzero(weights > 0), 0)
    return (values == values[:1]).all(0), values[0]


def _sums(pairs, statistic, deviations=False):
    """Pooled (residual sum, weight of the entries, sum of squared deviations, entries).

    The residual sum is of squared (``statistic="squared"``) or absolute
    residuals, each weighted by its row; the weight of the entries is the
    number of entries without weights; the deviations (only computed when
    asked) are from each column's (weighted) mean, exactly 0 for a column
    whose rows (of positive weight) hold one value.
    """
    residual = weight = total = 0.0
    n_entries = 0
    for true, pred, weights in pairs:
        n_entries += true.shape[0] * true.shape[1]
        difference = true - pred
        loss = difference**2 if statistic == "squared" else abs(difference)
        if weights is None:
            residual += float(loss.sum())
            weight += true.shape[0] * true.shape[1]
            if deviations and true.shape[0]:
                squares = (true - true.mean(0)) ** 2
                total += float(squares.sum(0)[~constant_columns(true)[0]].sum())
            continue
        column = _like(weights, true)
        residual += float((column * loss).sum())
        row_weight = float(weights.sum())
        weight += row_weight * true.shape[1]
        if deviations and row_weight > 0:
            mean = (column * true).sum(0) / row_weight
            squares = column * (true - mean) ** 2
            total += float(squares.sum(0)[~constant_columns(true, weights)[0]].sum())
    return residual, weight, total, n_entries


# ---------------------------------------------------------------------------------
# the metrics
# ---------------------------------------------------------------------------------


def rmse(y_true, y_pred, *, gradient=None, sample_weight=None):
    """Root-mean-square error over every entry of every block.

    ``sqrt(sum_rows w * sum_properties (t - p)^2 / sum_rows (w * n_properties))``
    over the (rows, properties) matrices of all blocks, ``w = 1`` without
    weights. For one block this is
    ``sklearn.metrics.root_mean_squared_error`` of the flattened matrices, each
    entry weighted by its row.

    Parameters
    ----------
    y_true, y_pred : metatensor.TensorMap or IndexedTensorMap
        The same keys (in any order); in each block the same samples,
        components and properties, in any order (y_pred is put in y_true's).
    gradient : str or None, default=None
        None compares the values; a gradient parameter (e.g. ``"positions"``)
        compares that gradient.
    sample_weight : None, array-like, TensorMap or IndexedTensorMap, default=None
        Weights of the rows (each >= 0; a zero weight leaves its row out):

        - an array-like of shape ``(n_entries,)`` when ``y_true`` is an
          IndexedTensorMap: one weight per entry (in the order of
          ``y_true.entries``), for every row of that entry in every block,
          values and gradient rows alike;
        - a TensorMap (or an IndexedTensorMap of one) with the keys of
          ``y_true`` and, in each block, its samples and components, the
          compared gradient, and exactly one property: the weight of each row
          (gradient rows are weighted by that gradient of the weight map).

    Returns
    -------
    float
        NaN when there is no entry at all.

    Raises
    ------
    ValueError
        When keys, samples, components or properties differ (naming the block
        and the first entry of each side that the other lacks), when a block
        has no properties, when an array holds NaN or infinity, or for invalid
        weights.
    TypeError
        When a block holds arrays of different libraries or devices in y_true
        and y_pred.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import IndexedTensorMap, metrics
    >>> def tensor(values):
    ...     block = TensorBlock(values, Labels.range("system", 2), [], Labels.range("e", 1))
    ...     return TensorMap(Labels.single(), [block])
    >>> metrics.rmse(tensor(np.array([[1.0], [2.0]])), tensor(np.array([[1.0], [4.0]])))
    1.4142135623730951
    >>> y_true = IndexedTensorMap(tensor(np.array([[1.0], [2.0]])), "system")
    >>> metrics.rmse(y_true, tensor(np.array([[1.0], [4.0]])), sample_weight=[3.0, 1.0])
    1.0
    """
    pairs = _paired_rows(y_true, y_pred, gradient, sample_weight, "rmse")
    residual, weight, _, n_entries = _sums(pairs, "squared")
    return float(np.sqrt(residual / weight)) if n_entries else float("nan")


def mse(y_true, y_pred, *, gradient=None, sample_weight=None):
    """Mean squared error over every entry of every block (see :func:`rmse`)."""
    pairs = _paired_rows(y_true, y_pred, gradient, sample_weight, "mse")
    residual, weight, _, n_entries = _sums(pairs, "squared")
    return residual / weight if n_entries else float("nan")


def mae(y_true, y_pred, *, gradient=None, sample_weight=None):
    """Mean absolute error over every entry of every block (see :func:`rmse`).

    For one block this is ``sklearn.metrics.mean_absolute_error`` of the
    flattened matrices, each entry weighted by its row.
    """
    pairs = _paired_rows(y_true, y_pred, gradient, sample_weight, "mae")
    residual, weight, _, n_entries = _sums(pairs, "absolute")
    return residual / weight if n_entries else float("nan")


def r2(y_true, y_pred, *, gradient=None, sample_weight=None):
    """Coefficient of determination pooled over blocks.

    ``1 - sum of squared residuals / sum of squared deviations from each
    column's mean``, both sums running over every block's (rows, properties)
    matrix, each row weighted by its ``sample_weight`` (the means are weighted
    too). For a single block this is
    ``sklearn.metrics.r2_score(..., sample_weight=w, multioutput="variance_weighted")``
    whenever no column is constant.

    A column whose rows (of positive weight) all hold one value deviates by
    exactly 0 from its mean; its residuals still count. When every column of
    every block is constant, the score is 1.0 if predicted exactly and 0.0
    otherwise, as scikit-learn's (``force_finite=True``), with one row as with
    several. scikit-learn's ``"variance_weighted"`` leaves the residuals of a
    constant column out; here every residual of every block counts.

    Parameters
    ----------
    y_true, y_pred : metatensor.TensorMap or IndexedTensorMap
        As in :func:`rmse`.
    gradient : str or None, default=None
        As in :func:`rmse`.
    sample_weight : None, array-like, TensorMap or IndexedTensorMap, default=None
        As in :func:`rmse`.

    Returns
    -------
    float
        NaN when there is no entry at all.
    """
    pairs = _paired_rows(y_true, y_pred, gradient, sample_weight, "r2")
    residual, _, total, n_entries = _sums(pairs, "squared", deviations=True)
    if not n_entries:
        return float("nan")
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


# ---------------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------------

_METRICS = {
    "r2": (r2, 1.0),
    "neg_rmse": (rmse, -1.0),
    "neg_mae": (mae, -1.0),
    "neg_mse": (mse, -1.0),
}

#: name -> (metric, sign): a scorer returns ``sign * metric`` so greater is better.
#: ``"neg_rmse"``, ``"neg_mae"`` and ``"neg_mse"`` are also known by scikit-learn's
#: names ``"neg_root_mean_squared_error"``, ``"neg_mean_absolute_error"`` and
#: ``"neg_mean_squared_error"``.
SCORERS = {**_METRICS, **{name: _METRICS[short] for name, short in SKLEARN_NAMES.items()}}


def _short_name(name):
    """The name in ``_METRICS`` of a name of :data:`SCORERS`."""
    return SKLEARN_NAMES.get(name, name)


class TensorMapScorer(_MetadataRequester):
    """A scikit-learn scorer ``(estimator, X, y, sample_weight=None) -> float`` on TensorMaps.

    Made by :func:`scorer`; picklable, so it works with ``n_jobs`` in searches. With
    ``sklearn.set_config(enable_metadata_routing=True)``,
    ``set_score_request(sample_weight=True)`` has searches route the weights to
    it, as for scikit-learn's own scorers.
    """

    def set_score_request(self, *, sample_weight=None):
        """Request ``sample_weight`` (True, False, None or an alias) when routing.

        Returns
        -------
        self : TensorMapScorer
        """
        if not _routing_enabled():
            raise RuntimeError(
                "set_score_request is only available when metadata routing is enabled: "
                "sklearn.set_config(enable_metadata_routing=True)"
            )
        self._metadata_request = MetadataRequest(owner=self)
        self._metadata_request.score.add_request(param="sample_weight", alias=sample_weight)
        return self

    def _accept_sample_weight(self):
        # read by scikit-learn's multi-metric scoring without metadata routing
        return True

    def _get_metadata_request(self):
        if hasattr(self, "_metadata_request"):
            return get_routing_for_object(self._metadata_request)
        requests = MetadataRequest(owner=self)
        requests.score.add_request(param="sample_weight", alias=None)
        return requests

    def __init__(self, name, gradient=None):
        self.name = name
        self.gradient = gradient

    def __call__(self, estimator, X, y, sample_weight=None):
        metric, sign = SCORERS[self.name]
        predicted = estimator.predict(X)
        return sign * metric(y, predicted, gradient=self.gradient, sample_weight=sample_weight)

    def __repr__(self):
        return f"scorer({self.name!r}, gradient={self.gradient!r})"

    def _identity(self):
        """What makes two scorers score alike: metric, gradient and weight request."""
        requests = self._get_metadata_request().score.requests
        return _short_name(self.name), self.gradient, tuple(sorted(requests.items()))

    def __eq__(self, other):
        """Scorers are equal when they compute the same score from the same metadata.

        So ``get_params()`` of an estimator compares equal after a
        :func:`skmetalstsq.save` / :func:`skmetalstsq.load` round trip.
        """
        if type(other) is not type(self):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self):
        return hash((type(self), self._identity()))


def scorer(name, *, gradient=None):
    """A scorer for ``scoring=`` in scikit-learn's model selection tools.

    Parameters
    ----------
    name : str
        A name of :data:`SCORERS`: ``"r2"``, ``"neg_rmse"``, ``"neg_mae"``,
        ``"neg_mse"``, or scikit-learn's names ``"neg_root_mean_squared_error"``,
        ``"neg_mean_absolute_error"``, ``"neg_mean_squared_error"``. Errors are
        negated so that greater is better.
    gradient : str or None, default=None
        Score the values (None) or that gradient.

    Returns
    -------
    callable ``(estimator, X, y, sample_weight=None) -> float``

    Notes
    -----
    The scorer calls ``estimator.predict(X)`` and compares with ``y`` by the
    metric; X and y are the TensorMaps or IndexedTensorMaps of a test fold, and
    ``sample_weight`` is passed to the metric. In a dict of scorers
    (multi-metric search) each scorer predicts on its own.

    scikit-learn's own string scorers (``scoring="neg_root_mean_squared_error"``)
    convert y to one numpy array, which an IndexedTensorMap refuses: they stop
    with :class:`UnsupportedScoringError`, which names the scorer to use here.

    Examples
    --------
    >>> from skmetalstsq import metrics
    >>> metrics.scorer("neg_rmse", gradient="positions")
    scorer('neg_rmse', gradient='positions')
    """
    if not isinstance(name, str) or name not in SCORERS:
        raise ValueError(f"scorer: name must be one of {sorted(SCORERS)}, got {name!r}")
    if gradient is not None and not isinstance(gradient, str):
        raise TypeError(
            f"scorer: gradient must be None or the name of a gradient (a str), got {gradient!r}"
        )
    return TensorMapScorer(name, gradient)
