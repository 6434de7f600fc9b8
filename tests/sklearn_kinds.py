"""The same data as plain arrays, a one-block TensorMap or an IndexedTensorMap.

The ports of scikit-learn's linear model tests (``test_sklearn_ridge.py``,
``test_sklearn_base.py``) run every assertion on each kind of input: the arrays
scikit-learn's test builds, a TensorMap with one block built from them (samples
``system`` 0..n-1), and an IndexedTensorMap of that map over ``system`` (which
scikit-learn's splitters can split). These helpers build the inputs and read
``coef_``, ``intercept_`` and predictions back as scikit-learn's arrays.
"""

from types import SimpleNamespace

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.linear_model.tests.test_ridge import _make_sparse_offset_regression
from sklearn.model_selection import GroupKFold, cross_val_predict

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


def tiled_sample_weight_case(fit_intercept, n_features, y_shape, noise, alphas):
    """The data and reference of scikit-learn's ``test_ridge_gcv_sample_weights``.

    Integer sample weights are repeated samples (``X_tiled``, ``y_tiled``), kept
    together by ``GroupKFold`` over ``indices`` (the splits ``cv``): RidgeCV on the
    tiled samples chooses ``kfold.alpha_``, and ``kfold_errors`` are each sample's
    squared held-out errors summed over its copies.
    """
    rng = np.random.RandomState(0)
    n_targets = y_shape[-1] if len(y_shape) == 2 else 1
    X, y = _make_sparse_offset_regression(
        n_samples=11,
        n_features=n_features,
        n_targets=n_targets,
        random_state=0,
        shuffle=False,
        noise=noise,
    )
    y = y.reshape(y_shape)
    sample_weight = 3 * rng.randn(len(X))
    sample_weight = (sample_weight - sample_weight.min() + 1).astype(int)
    indices = np.repeat(np.arange(X.shape[0]), sample_weight)
    sample_weight = sample_weight.astype(float)
    X_tiled, y_tiled = X[indices], y[indices]
    cv = GroupKFold(n_splits=X.shape[0])
    splits = cv.split(X_tiled, y_tiled, groups=indices)
    kfold = RidgeCV(
        alphas=alphas, cv=splits, scoring="neg_mean_squared_error", fit_intercept=fit_intercept
    )
    kfold.fit(X_tiled, y_tiled)
    ridge_reg = Ridge(alpha=kfold.alpha_, fit_intercept=fit_intercept)
    splits = cv.split(X_tiled, y_tiled, groups=indices)
    predictions = cross_val_predict(ridge_reg, X_tiled, y_tiled, cv=splits)
    if predictions.shape != y_tiled.shape:
        predictions = predictions.reshape(y_tiled.shape)
    kfold_errors = (y_tiled - predictions) ** 2
    kfold_errors = [np.sum(kfold_errors[indices == i], axis=0) for i in np.arange(X.shape[0])]
    return SimpleNamespace(
        X=X,
        y=y,
        sample_weight=sample_weight,
        X_tiled=X_tiled,
        y_tiled=y_tiled,
        indices=indices,
        cv=cv,
        kfold=kfold,
        kfold_errors=np.asarray(kfold_errors),
    )
