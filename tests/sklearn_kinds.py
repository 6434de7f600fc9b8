"""The same data as plain arrays, a one-block TensorMap or an IndexedTensorMap.

The ports of scikit-learn's linear model tests (``test_sklearn_ridge.py``,
``test_sklearn_base.py``) run every assertion on each kind of input: the arrays
scikit-learn's test builds, a TensorMap with one block built from them (samples
``system`` 0..n-1), and an IndexedTensorMap of that map over ``system`` (which
scikit-learn's splitters can split). These helpers build the inputs and read
``coef_``, ``intercept_`` and predictions back as scikit-learn's arrays.
"""

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap

from skmetalstsq import IndexedTensorMap

#: every kind of input of TensorMapLstsq
KINDS = ("array", "tensor", "indexed")
#: the kinds TensorMapLstsqCV can split
SPLIT_KINDS = ("array", "indexed")


def _map(values, name):
    values = np.asarray(values)
    values = values.reshape(len(values), -1)
    block = TensorBlock(
        values, Labels.range("system", len(values)), [], Labels.range(name, values.shape[1])
    )
    return TensorMap(Labels.single(), [block])


def features(kind, X):
    """X as ``kind``."""
    if kind == "array":
        return X
    tensor = _map(X, "feature")
    return tensor if kind == "tensor" else IndexedTensorMap(tensor, "system")


def as_kind(kind, X, y, sample_weight=None):
    """(X, y, sample_weight) as ``kind``: for a TensorMap, a weight map laid out as y."""
    if kind == "array":
        return X, y, sample_weight
    y_map = _map(y, "target")
    if kind == "indexed":
        return features(kind, X), IndexedTensorMap(y_map, "system"), sample_weight
    if sample_weight is not None:
        sample_weight = _map(np.asarray(sample_weight, dtype=float), "weight")
    return features(kind, X), y_map, sample_weight


def fit(model, kind, X, y, sample_weight=None, **fit_params):
    """``model.fit`` on the data as ``kind``; returns the model."""
    X, y, sample_weight = as_kind(kind, X, y, sample_weight)
    return model.fit(X, y, sample_weight=sample_weight, **fit_params)


def values(data):
    """The values of a one-block TensorMap or IndexedTensorMap, or the array itself."""
    if isinstance(data, IndexedTensorMap):
        data = data.tensor
    if isinstance(data, TensorMap):
        return data.block(0).values
    return np.asarray(data)


def coef(model, y_ndim=1):
    """``coef_`` as scikit-learn's: (n_features,) after a 1-D y, else (n_targets, n_features)."""
    if hasattr(model, "coef_"):
        return model.coef_
    weights = model.weights_.block(0).values
    return weights[0] if y_ndim == 1 else weights


def intercept(model, y_ndim=1):
    """``intercept_`` as scikit-learn's: a number after a 1-D y, else (n_targets,)."""
    if not isinstance(model.intercept_, TensorMap):
        return model.intercept_
    column = model.intercept_.block(0).values[:, 0]
    return column[0] if y_ndim == 1 else column


def predict(model, kind, X, y_ndim=1):
    """``model.predict`` of X as ``kind``, as scikit-learn's array."""
    predicted = values(model.predict(features(kind, X)))
    if kind != "array" and y_ndim == 1:
        return predicted[:, 0]
    return predicted


def score(model, kind, X, y, sample_weight=None):
    """``model.score`` on the data as ``kind``."""
    X, y, sample_weight = as_kind(kind, X, y, sample_weight)
    return model.score(X, y, sample_weight=sample_weight)
