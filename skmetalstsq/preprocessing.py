"""Transformers of TensorMaps for scikit-learn pipelines.

Both accept a :class:`metatensor.TensorMap` or an
:class:`~skmetalstsq.IndexedTensorMap` and return the same kind, so they can
sit in front of :class:`~skmetalstsq.TensorMapLstsq` in a
:class:`sklearn.pipeline.Pipeline` that model selection tools split by system.
"""

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils.validation import check_is_fitted

from ._backends import array_library, convert_like
from ._blocks import key_text
from ._indexed import IndexedTensorMap, unwrap
from ._torch_maps import as_core, type_name
from ._validation import (
    check_block_arrays,
    check_is_tensor_map,
    check_predict_input,
    drop_blocks_without_properties,
)

__all__ = ["TensorMapFunctionTransformer", "TensorMapStandardScaler"]


def _float_values(values):
    """``values`` itself when floating point, else converted to float64."""
    if array_library(values) == "numpy":
        return values if np.issubdtype(values.dtype, np.floating) else values.astype(np.float64)
    import torch

    return values if values.is_floating_point() else values.to(torch.float64)


def _column_mean_var(values):
    """Mean and variance (ddof=0) of each property over the rows of a block.

    Components are folded into rows. Computed in the array's own library and
    returned as float64 numpy arrays; a block without rows gives zeros.
    """
    n_properties = values.shape[-1]
    matrix = _float_values(values).reshape(-1, n_properties)
    if matrix.shape[0] == 0:
        return np.zeros(n_properties), np.zeros(n_properties)
    if array_library(matrix) == "numpy":
        mean = matrix.mean(axis=0, dtype=np.float64)
        var = ((matrix - mean) ** 2).mean(axis=0, dtype=np.float64)
        return mean, var
    mean = matrix.mean(dim=0)
    var = ((matrix - mean) ** 2).mean(dim=0)
    return (
        mean.detach().cpu().numpy().astype(np.float64),
        var.detach().cpu().numpy().astype(np.float64),
    )


def _scale_from_var(var, mean, n_rows):
    """Standard deviations, with 1.0 where a property is constant.

    A property counts as constant when its variance is within the rounding
    error of computing it, as in scikit-learn's StandardScaler.
    """
    eps = np.finfo(np.float64).eps
    constant = var <= n_rows * eps * var + (n_rows * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return scale


def _statistics_block(values, properties):
    """A block of one row (sample ``_``) holding per-property statistics."""
    return TensorBlock(values.reshape(1, -1), Labels.single(), [], properties)


def _map_blocks(tensor, values_function, gradient_function):
    """A TensorMap with every block's values and gradients transformed.

    ``values_function(position, values)`` and ``gradient_function(position,
    values)`` receive the position of the block in ``tensor`` and return the new
    arrays; samples, components and properties are kept.
    """
    blocks = []
    for position, block in enumerate(tensor.blocks()):
        new = TensorBlock(
            values_function(position, block.values),
            block.samples,
            block.components,
            block.properties,
        )
        for parameter, gradient in block.gradients():
            new.add_gradient(
                parameter,
                TensorBlock(
                    gradient_function(position, gradient.values),
                    gradient.samples,
                    gradient.components,
                    new.properties,
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


class TensorMapStandardScaler(TransformerMixin, BaseEstimator):
    """Standardize each property of each block of a TensorMap.

    For every block, each property (column of the block's values seen as a
    ``(samples * components, properties)`` matrix) is centred on its mean and
    divided by its standard deviation over the rows of the training data. The
    gradients of a block are divided by the same standard deviations and never
    centred: the derivative of a constant shift is zero.

    Parameters
    ----------
    with_mean : bool, default=True
        Subtract the mean of each property from the values.
    with_std : bool, default=True
        Divide the values and the gradients by the standard deviation of each
        property.

    Attributes
    ----------
    mean_ : metatensor.TensorMap
        One block per key of the training data, with one sample (``_``) and the
        block's properties: the mean of each property, float64. Computed even
        when ``with_mean=False``.
    var_ : metatensor.TensorMap
        Likewise, the variance (ddof=0) of each property. Computed even when
        ``with_std=False``.
    scale_ : metatensor.TensorMap
        Likewise, what the values and gradients are divided by: the standard
        deviation, 1.0 for a constant property, all ones when
        ``with_std=False``.

    See Also
    --------
    sklearn.preprocessing.StandardScaler : the same on one 2-D array.

    Notes
    -----
    - The statistics use the values only, not the gradients, and fold the
      components into rows: every component of a property shares one mean and
      one scale. Centring the components of an equivariant block (``o3_lambda``
      > 0) breaks its equivariance; use ``with_mean=False`` for such data.
    - A property whose variance is zero (within rounding, as in scikit-learn) gets
      a scale of 1.0, so it is centred but not divided; a block without rows has
      mean 0 and scale 1.
    - Statistics are computed in the array library of the data and kept as
      float64 numpy arrays; :meth:`transform` converts them to each block's
      library, device and dtype. Integer values are transformed to float64.
    - :meth:`transform` accepts any keys seen in :meth:`fit` (a subset too), each
      with the properties seen in fit, and keeps samples, components and
      gradients as they are.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq.preprocessing import TensorMapStandardScaler
    >>> values = np.array([[1.0, 10.0], [3.0, 10.0]])
    >>> block = TensorBlock(values, Labels.range("system", 2), [], Labels.range("p", 2))
    >>> X = TensorMap(Labels.single(), [block])
    >>> scaler = TensorMapStandardScaler().fit(X)
    >>> scaler.transform(X).block(0).values
    array([[-1.,  0.],
           [ 1.,  0.]])
    >>> scaler.inverse_transform(scaler.transform(X)).block(0).values
    array([[ 1., 10.],
           [ 3., 10.]])
    """

    _parameter_constraints = {"with_mean": ["boolean"], "with_std": ["boolean"]}

    def __init__(self, with_mean=True, with_std=True):
        self.with_mean = with_mean
        self.with_std = with_std

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Compute the mean and standard deviation of every property of every block.

        Parameters
        ----------
        X : metatensor.TensorMap or IndexedTensorMap
        y : ignored

        Returns
        -------
        self : TensorMapStandardScaler
        """
        caller = "TensorMapStandardScaler.fit"
        tensor = unwrap(X)[0]
        check_is_tensor_map(tensor, caller, "X")
        for key, block in tensor.items():
            if block.values.shape[-1] == 0:
                raise ValueError(
                    f"{caller}: block {key_text(key)} has 0 properties in X; every block "
                    "needs at least one property to scale: drop the blocks without "
                    f"properties with {drop_blocks_without_properties((tensor,), 'X')}"
                )
            check_block_arrays(block, caller, "X", key)
        means, variances, scales = [], [], []
        for block in tensor.blocks():
            mean, var = _column_mean_var(block.values)
            n_rows = int(np.prod(block.values.shape[:-1]))
            scale = _scale_from_var(var, mean, n_rows) if self.with_std else np.ones_like(var)
            means.append(_statistics_block(mean, block.properties))
            variances.append(_statistics_block(var, block.properties))
            scales.append(_statistics_block(scale, block.properties))
        self.mean_ = TensorMap(tensor.keys, means)
        self.var_ = TensorMap(tensor.keys, variances)
        self.scale_ = TensorMap(tensor.keys, scales)
        return self

    def _statistics(self, tensor, caller):
        """For each block of ``tensor``: (mean or None, scale) as 1-D arrays."""
        check_is_fitted(self)
        positions = check_predict_input(tensor, self.scale_, caller)
        statistics = []
        for position, block in zip(positions, tensor.blocks()):
            like = _float_values(block.values)
            mean = self.mean_.block(position).values[0] if self.with_mean else None
            scale = self.scale_.block(position).values[0]
            statistics.append(
                (
                    None if mean is None else convert_like(mean, like),
                    convert_like(scale, like),
                )
            )
        return statistics

    def transform(self, X):
        """Centre and scale the values, scale the gradients.

        Parameters
        ----------
        X : metatensor.TensorMap or IndexedTensorMap
            Keys seen in fit, each with the properties seen in fit.

        Returns
        -------
        X_scaled : same kind as X
        """
        tensor, wrap = unwrap(X)
        statistics = self._statistics(tensor, "TensorMapStandardScaler.transform")

        def values(position, array):
            mean, scale = statistics[position]
            array = _float_values(array)
            return (array if mean is None else array - mean) / scale

        def gradient(position, array):
            return _float_values(array) / statistics[position][1]

        return wrap(_map_blocks(tensor, values, gradient))

    def inverse_transform(self, X):
        """Undo :meth:`transform`: scale back, add the mean to the values.

        Parameters
        ----------
        X : metatensor.TensorMap or IndexedTensorMap
            Keys seen in fit, each with the properties seen in fit.

        Returns
        -------
        X_original : same kind as X
        """
        tensor, wrap = unwrap(X)
        statistics = self._statistics(tensor, "TensorMapStandardScaler.inverse_transform")

        def values(position, array):
            mean, scale = statistics[position]
            array = _float_values(array) * scale
            return array if mean is None else array + mean

        def gradient(position, array):
            return _float_values(array) * statistics[position][1]

        return wrap(_map_blocks(tensor, values, gradient))


class TensorMapFunctionTransformer(TransformerMixin, BaseEstimator):
    """Apply a TensorMap -> TensorMap function in a pipeline.

    Parameters
    ----------
    func : callable or None, default=None
        Called as ``func(tensor, **kw_args)`` with a metatensor.TensorMap, must
        return a metatensor.TensorMap. When X is (or wraps) a
        metatensor.torch.TensorMap, ``tensor`` is one too (use
        ``metatensor.torch``'s operations) and may return either kind; the
        result is given back as the kind of X. None is the identity. Use a module-level
        function (e.g. :func:`metatensor.sum_over_samples`) so that the
        transformer pickles for worker processes.
    kw_args : dict or None, default=None
        Keyword arguments of ``func``.

    See Also
    --------
    sklearn.preprocessing.FunctionTransformer : the same on arrays.

    Notes
    -----
    The transformer is stateless: :meth:`fit` only checks the parameters and
    :meth:`transform` works without it.

    Given an :class:`~skmetalstsq.IndexedTensorMap`, the result is indexed by
    the same sample dimension, so it must keep that dimension in every block
    and the same entries: ``metatensor.sum_over_samples(X, sample_names="atom")``
    turns per-atom descriptors into per-system ones that still track systems
    and meet per-system targets. A result without the dimension, or with other
    entries, raises ValueError (X and y would no longer index the same data).

    Examples
    --------
    >>> import metatensor
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import IndexedTensorMap
    >>> from skmetalstsq.preprocessing import TensorMapFunctionTransformer
    >>> samples = Labels(["system", "atom"], np.array([[0, 0], [0, 1], [1, 0]]))
    >>> block = TensorBlock(np.ones((3, 2)), samples, [], Labels.range("p", 2))
    >>> X = IndexedTensorMap(TensorMap(Labels.single(), [block]), "system")
    >>> per_system = TensorMapFunctionTransformer(
    ...     metatensor.sum_over_samples, kw_args={"sample_names": "atom"}
    ... ).fit_transform(X)
    >>> per_system.entries, per_system.tensor.block(0).values
    (array([0, 1], dtype=int32), array([[2., 2.],
           [1., 1.]]))
    """

    _parameter_constraints = {"func": [callable, None], "kw_args": [dict, None]}

    def __init__(self, func=None, kw_args=None):
        self.func = func
        self.kw_args = kw_args

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Check the parameters and X; nothing is learned.

        Parameters
        ----------
        X : metatensor.TensorMap or IndexedTensorMap
        y : ignored

        Returns
        -------
        self : TensorMapFunctionTransformer
        """
        check_is_tensor_map(unwrap(X)[0], "TensorMapFunctionTransformer.fit", "X")
        return self

    def transform(self, X):
        """``func(X, **kw_args)``, of the same kind as X.

        Parameters
        ----------
        X : metatensor.TensorMap or IndexedTensorMap

        Returns
        -------
        X_new : same kind as X
        """
        caller = "TensorMapFunctionTransformer.transform"
        tensor, wrap = unwrap(X)
        check_is_tensor_map(tensor, caller, "X")
        if self.func is None:
            return X
        name = getattr(self.func, "__name__", repr(self.func))
        # func sees the kind of TensorMap given (metatensor-torch for metatensor-torch)
        given = X.tensor if isinstance(X, IndexedTensorMap) else X
        result = as_core(self.func(given, **(self.kw_args or {})))
        if not isinstance(result, TensorMap):
            raise TypeError(
                f"{caller}: func must return a metatensor.TensorMap, {name} returned "
                f"{type_name(result)}"
            )
        if not isinstance(X, IndexedTensorMap):
            return wrap(result)
        for key, block in result.items():
            if X.sample not in block.samples.names:
                raise ValueError(
                    f"{caller}: X is indexed by '{X.sample}' but block {key_text(key)} of "
                    f"what {name} returned has samples {block.samples.names}"
                )
        indexed = X.with_tensor(result)
        if not np.array_equal(indexed.entries, X.entries):
            raise ValueError(
                f"{caller}: {name} returned other '{X.sample}' entries than it was given "
                f"({len(indexed)} instead of {len(X)}): missing "
                f"{np.setdiff1d(X.entries, indexed.entries).tolist()[:10]}, new "
                f"{np.setdiff1d(indexed.entries, X.entries).tolist()[:10]}"
            )
        return indexed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        return tags
