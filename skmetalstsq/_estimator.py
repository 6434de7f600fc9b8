"""TensorMapLstsq: per-block weighted, regularised least squares as a scikit-learn regressor."""

import numbers
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._backends import convert, convert_like, device_of, to_numpy
from ._blocks import (
    array_to_tensor,
    block_pairs,
    block_systems,
    blocks_in_order,
    is_floating,
    key_text,
    key_tuple,
    key_tuples,
    predict_block,
    tensor_from_state,
    tensor_to_state,
    weights_block,
)
from ._factors import Factor, factorize
from ._indexed import check_same_entries, holds_torch_maps, unwrap
from ._parallel import single_threaded, solve_systems
from ._solvers import DRIVERS, default_rcond, factor_solution
from ._torch_maps import as_core, is_torch_map, to_torch_map, type_name
from ._validation import (
    check_array_like,
    check_fit_inputs,
    check_predict_input,
    resolve_device,
)
from ._weights import check_not_all_zero, row_weights
from .metrics import r2

#: The property of the blocks of ``intercept_``.
INTERCEPT_PROPERTY = Labels(["intercept"], np.array([[0]], dtype=np.int32))


class Cutoff(Interval):
    """``rcond``'s constraint: a real number in [0, 1), booleans excluded."""

    def __init__(self):
        super().__init__(Real, 0, 1, closed="left")

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)


#: ``n_jobs``: joblib's meaning, where 0 means nothing
N_JOBS = [
    Interval(Integral, None, -1, closed="right"),
    Interval(Integral, 1, None, closed="left"),
    None,
]


def _is_tensor_input(data):
    return isinstance(unwrap(data)[0], TensorMap)


def _penalty(value, caller, where, n_features=None, block=""):
    """A penalty checked to be a finite float >= 0, or, where ``n_features`` is
    given, also a 1-D array of that many (one per feature of the ``block``
    named)."""
    try:
        array = np.asarray(to_numpy(value) if hasattr(value, "detach") else value)
    except (ValueError, TypeError):  # ragged nested sequences
        array = np.asarray(None)
    valid = array.dtype.kind in "iuf" and np.isfinite(array).all() and (array >= 0).all()
    if isinstance(value, (bool, np.bool_)) or not valid:
        raise ValueError(f"{caller}: {where} must be a finite number >= 0, got {value!r}")
    if array.ndim and (n_features is None or array.shape != (n_features,)):
        accepted = "a number" if n_features is None else f"a number or {n_features} numbers"
        per_feature = "" if n_features is None else f", one per property of block {block} of X"
        raise ValueError(
            f"{caller}: {where} must be {accepted}{per_feature}, got an array of shape "
            f"{array.shape}"
        )
    if array.ndim == 0:
        return float(array)
    if array.size and (array == array.flat[0]).all():
        # the same penalty on every feature is the scalar penalty
        return float(array.flat[0])
    return array.astype(np.float64)


def resolve_alpha(alpha, X, caller, allow_unseen=False):
    """The ridge penalty of every block of X: key tuple -> float or 1-D array.

    ``alpha`` is a float (every block), a dict ``{key tuple: float}`` naming every
    block (an entry may be a 1-D array of one penalty per property of that
    block), or a TensorMap with X's keys, one sample and X's properties (one
    penalty per property), and no other keys. ``allow_unseen`` accepts penalties
    for keys X does not have (partial fits, whose later batches may bring them).
    """
    keys = key_tuples(X.keys)
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, (bool, np.bool_)):
        value = _penalty(alpha, caller, "alpha")
        return dict.fromkeys(keys, value)
    if isinstance(alpha, dict):
        named = {tuple(k) if isinstance(k, tuple) else (k,): v for k, v in alpha.items()}
        unknown = [] if allow_unseen else [k for k in named if k not in keys]
        missing = [k for k in keys if k not in named]
        if unknown or missing:
            raise ValueError(
                f"{caller}: alpha must give a penalty for every block of X by its key "
                f"(a tuple of {list(X.keys.names)}): unknown keys {unknown}, missing keys "
                f"{missing}"
            )
        return {
            key_tuple(key): _penalty(
                named[key_tuple(key)],
                caller,
                f"alpha[{key_tuple(key)}]",
                n_features=len(block.properties),
                block=key_text(key),
            )
            for key, block in X.items()
        }
    tensor = unwrap(alpha)[0]
    if not isinstance(tensor, TensorMap):
        raise TypeError(
            f"{caller}: alpha must be a float, a dict of floats by key or a TensorMap of "
            f"penalties per property, got {type(alpha).__name__}"
        )
    if not allow_unseen and tensor.keys.names == X.keys.names:
        unknown = [key_tuple(key) for key in tensor.keys if X.keys.position(key) is None]
        if unknown:
            raise ValueError(
                f"{caller}: the alpha TensorMap must have the blocks of X and no other: "
                f"unknown keys {unknown} (tuples of {list(X.keys.names)})"
            )
    penalties = {}
    for key, x_block in X.items():
        position = tensor.keys.position(key) if tensor.keys.names == X.keys.names else None
        if position is None:
            raise ValueError(
                f"{caller}: the alpha TensorMap has no block {key_text(key)} of X "
                f"(its keys are named {list(tensor.keys.names)})"
            )
        block = tensor.block(position)
        if (
            block.values.shape[0] != 1
            or len(block.components)
            or block.properties != x_block.properties
        ):
            raise ValueError(
                f"{caller}: block {key_text(key)} of the alpha TensorMap must have one "
                f"sample, no components and X's {len(x_block.properties)} properties; it "
                f"has values of shape {tuple(block.values.shape)}"
                + ("" if block.properties == x_block.properties else " and other properties")
            )
        penalties[key_tuple(key)] = _penalty(
            block.values[0],
            caller,
            f"alpha {key_text(key)}",
            n_features=len(x_block.properties),
            block=key_text(key),
        )
    return penalties


def check_gradient_weights(gradient_weights, X, caller):
    """``gradient_weights`` checked against the gradients of X's blocks."""
    if gradient_weights is None:
        return {}
    present = set()
    for block in X.blocks():
        present.update(block.gradients_list())
    checked = {}
    for parameter, value in gradient_weights.items():
        if parameter not in present:
            raise ValueError(
                f"{caller}: gradient_weights names the '{parameter}' gradient, which no "
                f"block of X has (they have {sorted(present)})"
            )
        checked[parameter] = _penalty(value, caller, f"gradient_weights['{parameter}']")
    return checked


@dataclass
class BatchLayout:
    """What every batch of one block must share in :meth:`TensorMapLstsq.partial_fit`."""

    features: Labels
    targets: Labels
    components: list
    gradients: dict

    def differences(self, other):
        """What differs from ``other``, as (what, this side, other side) texts."""
        found = []
        for what in ("features", "targets"):
            mine, theirs = getattr(self, what), getattr(other, what)
            if mine != theirs:
                found.append((f"{what} (properties)", _labels_text(mine), _labels_text(theirs)))
        if [c.names for c in self.components] != [c.names for c in other.components] or any(
            a != b for a, b in zip(self.components, other.components)
        ):
            found.append(
                (
                    "components",
                    _components_text(self.components),
                    _components_text(other.components),
                )
            )
        if list(self.gradients) != list(other.gradients) or any(
            [c.names for c in self.gradients[p]] != [c.names for c in other.gradients[p]]
            or any(a != b for a, b in zip(self.gradients[p], other.gradients[p]))
            for p in self.gradients
            if p in other.gradients
        ):
            found.append(("gradients", str(list(self.gradients)), str(list(other.gradients))))
        return found


@dataclass
class PartialBlock:
    """One block's running state in :meth:`TensorMapLstsq.partial_fit`."""

    factor: Factor
    layout: BatchLayout
    dtype: object


@dataclass
class PartialState:
    """The factors of every block seen by partial fits, and how to solve them.

    Attributes
    ----------
    records : dict
        Key tuple -> :class:`PartialBlock`, in the order keys were first seen.
    key_names : list of str
    y_ndim : int or None
        y's number of dimensions for batches of arrays, None for TensorMaps.
    devices : dict or None
        Key tuple -> the torch device the block's factor was on before
        :meth:`to_numpy` (None for numpy data); None while every factor is where
        its data was.
    torch_maps : bool
        Whether the batches were metatensor-torch TensorMaps (the fitted
        TensorMaps are then of that kind).
    """

    records: dict
    key_names: list
    y_ndim: object = None
    devices: dict = None
    torch_maps: bool = False

    def to_numpy(self):
        """This state with every factor as numpy arrays (to send it anywhere);
        :meth:`restored` puts them back."""
        records, devices = {}, dict(self.devices or {})
        for key, record in self.records.items():
            devices.setdefault(key, device_of(record.factor.r))
            records[key] = PartialBlock(record.factor.to_numpy(), record.layout, record.dtype)
        return PartialState(records, self.key_names, self.y_ndim, devices, self.torch_maps)

    def restored(self):
        """This state with every factor in the library and on the device it had
        before :meth:`to_numpy` (where the fitted arrays belong)."""
        devices = self.devices or {}
        records = {}
        for key, record in self.records.items():
            factor = record.factor
            factor = factor.with_r(convert(factor.r, device=devices.get(key)))
            records[key] = PartialBlock(factor, record.layout, record.dtype)
        return PartialState(records, self.key_names, self.y_ndim, None, self.torch_maps)


def merge_partial_states(state, other, caller, names=("earlier batches", "this batch")):
    """The state of the rows of both states: factors of common keys merged.

    Raises
    ------
    ValueError, TypeError
        If the key names, the kind of data (arrays or TensorMaps) or a common
        block's layout differ; ``names`` say what each state is in messages.
    """
    before, now = names
    if state.key_names != other.key_names:
        raise ValueError(
            f"{caller}: keys are named {other.key_names} in {now} but {state.key_names} in {before}"
        )
    if state.y_ndim != other.y_ndim:
        raise ValueError(
            f"{caller}: y has {other.y_ndim} dimensions in {now} but {state.y_ndim} in {before}"
        )
    records = dict(state.records)
    for key, record in other.records.items():
        if key not in records:
            records[key] = record
            continue
        seen = records[key]
        differences = seen.layout.differences(record.layout)
        if differences:
            what, mine, theirs = differences[0]
            block = "(" + ", ".join(f"{n}={v}" for n, v in zip(state.key_names, key)) + ")"
            raise ValueError(
                f"{caller}: block {block} has other {what} in {now} than in {before}: "
                f"{theirs} in {now}, {mine} in {before}"
            )
        factor = record.factor
        if type(factor.r) is not type(seen.factor.r) or getattr(
            factor.r, "device", None
        ) != getattr(seen.factor.r, "device", None):
            # batches of numpy and torch data (or of two devices) merge where the
            # first batch's factor is
            factor = factor.with_r(convert_like(factor.r, seen.factor.r))
        with single_threaded():  # the same bits for every BLAS thread setting
            merged = seen.factor.merge(factor)
        records[key] = PartialBlock(merged, seen.layout, seen.dtype)
    devices = None
    if state.devices is not None or other.devices is not None:
        devices = {**(other.devices or {}), **(state.devices or {})}
    return PartialState(records, state.key_names, state.y_ndim, devices, state.torch_maps)


def _is_array_batch(X, y):
    return not (_is_tensor_input(X) or _is_tensor_input(y))


def _labels_text(labels):
    return f"{len(labels)} named {list(labels.names)}"


def _components_text(components):
    return str([f"{list(c.names)} x {len(c)}" for c in components])


def _batch_layout(x_block, y_block):
    gradients = {
        parameter: list(x_block.gradient(parameter).components)
        for parameter in sorted(x_block.gradients_list())
    }
    return BatchLayout(x_block.properties, y_block.properties, list(x_block.components), gradients)


def _empty_block(layout):
    """A block without rows with the layout's feature properties (to check alpha)."""
    return TensorBlock(
        np.zeros((0, len(layout.features))),
        Labels(["sample"], np.zeros((0, 1), dtype=np.int32)),
        [],
        layout.features,
    )


class TensorMapLinearModel(RegressorMixin, BaseEstimator):
    """What every fitted per-block linear model does: predict, score, persist.

    Subclasses fit ``weights_`` and ``intercept_`` (through :meth:`_set_blocks`);
    this base class predicts TensorMaps and arrays from them.
    """

    def _set_solutions(self, X, y, solutions, y_ndim=None, pairs=None):
        """Set the fitted attributes from one Solution per block of X (``pairs``:
        :func:`~._blocks.block_pairs` of X and y, when the caller has them)."""
        layouts = [
            (y_block.properties, x_block.properties)
            for _, x_block, y_block in pairs or block_pairs(X, y)
        ]
        self._set_blocks(X.keys, layouts, solutions, y_ndim)

    def _set_blocks(self, keys, layouts, solutions, y_ndim=None):
        """Set the fitted attributes from, for each key, its (target properties,
        feature properties) and its Solution."""
        weights, intercepts = [], []
        for solution, (targets, features) in zip(solutions, layouts):
            weights.append(weights_block(solution.weights, targets, features))
            intercept = solution.intercept
            if intercept is None:
                intercept = solution.weights[:, :1] * 0
            else:
                intercept = intercept.reshape(-1, 1)
            intercepts.append(weights_block(intercept, targets, INTERCEPT_PROPERTY))
        self.weights_ = TensorMap(keys, weights)
        self.intercept_ = TensorMap(keys, intercepts)
        tuples = key_tuples(keys)
        self.rank_ = {key: solution.rank for key, solution in zip(tuples, solutions)}
        self.singular_values_ = {
            key: solution.singular_values for key, solution in zip(tuples, solutions)
        }
        if y_ndim is not None:
            # numpy, as scikit-learn's own linear models, even after a torch solve;
            # their intercept_ is a numpy scalar for a 1-D y and 0.0 when not fitted
            coef = to_numpy(solutions[0].weights)
            intercept = to_numpy(self.intercept_.block(0).values)[:, 0]
            self.coef_ = coef[0] if y_ndim == 1 else coef
            self.intercept_ = intercept[0] if y_ndim == 1 else intercept
            if solutions[0].intercept is None:
                self.intercept_ = 0.0
        elif self.__dict__.get("_torch_maps", False):
            # fitted on metatensor-torch TensorMaps: the same kind, tensors as solved
            self.weights_ = to_torch_map(self.weights_)
            self.intercept_ = to_torch_map(self.intercept_)

    def predict(self, X):
        """Predict the values and every gradient of each block of X.

        Parameters
        ----------
        X : metatensor.TensorMap, IndexedTensorMap or array-like of shape (n_samples, n_features)
            Every key must have been seen in fit, with the same properties.

        Returns
        -------
        y_pred : same kind as X
            For a TensorMap: X's keys, each block with X's samples and components,
            y's properties, and every gradient of X predicted with its own
            samples and components (the intercept is added to the values only);
            arrays of X's library, device and dtype (float64 when X holds
            integers). For an array: shaped like the y seen in fit.
        """
        check_is_fitted(self)
        caller = f"{type(self).__name__}.predict"
        tensor, wrap = unwrap(X)
        if isinstance(tensor, TensorMap):
            return wrap(self._predict_tensor(tensor, caller))
        if not hasattr(self, "coef_"):
            raise TypeError(
                f"{caller}: fitted on TensorMaps, X must be a TensorMap or an "
                f"IndexedTensorMap, got {type_name(X)}"
            )
        check_array_like(X, caller, "X")
        X = validate_data(self, X, reset=False)
        return X @ self.coef_.T + self.intercept_

    def _predict_tensor(self, tensor, caller, check_arrays=True):
        """Predictions for a TensorMap (see :meth:`predict`)."""
        if hasattr(self, "coef_"):
            raise TypeError(f"{caller}: fitted on arrays, cannot predict a TensorMap")
        weights_map, intercept_map = as_core(self.weights_), as_core(self.intercept_)
        positions = check_predict_input(tensor, weights_map, caller, check_arrays)
        blocks = []
        for position, block in zip(positions, tensor.blocks()):
            weights = weights_map.block(position)
            like = block.values
            if not is_floating(like):
                # integer features: predict in float64, not in their dtype
                like = convert(like[:0], dtype=np.dtype(np.float64))
            intercept = convert_like(intercept_map.block(position).values[:, 0], like)
            blocks.append(
                predict_block(block, convert_like(weights.values, like), weights.samples, intercept)
            )
        return TensorMap(tensor.keys, blocks)

    def score(self, X, y, sample_weight=None):
        """R^2 of the predicted values, pooled over blocks.

        With each block's values reshaped to (rows, properties), this is
        ``1 - sum of weighted squared residuals / sum of weighted squared
        deviations from each column's weighted mean``, both summed over all blocks
        (:func:`skmetalstsq.metrics.r2`). For one block it equals
        ``sklearn.metrics.r2_score(y, y_pred, sample_weight=...,
        multioutput="variance_weighted")``.

        Parameters
        ----------
        X, y : as in :meth:`fit`
        sample_weight : as in :meth:`fit`, default=None

        Returns
        -------
        score : float
        """
        if _is_tensor_input(X) or _is_tensor_input(y):
            caller = f"{type(self).__name__}.score"
            check_is_fitted(self)
            check_same_entries(X, y, caller)
            X_tensor, y_tensor = unwrap(X)[0], unwrap(y)[0]
            # checks X's arrays too, so the prediction does not check them again
            check_fit_inputs(X_tensor, y_tensor, caller)
            # their errors name this caller
            _check_some_scored_weight(row_weights(sample_weight, y, caller), caller)
            y_pred = unwrap(y)[1](self._predict_tensor(X_tensor, caller, check_arrays=False))
            return r2(y, y_pred, sample_weight=sample_weight)
        caller = f"{type(self).__name__}.score"
        y_pred = self.predict(X)
        check_array_like(y, caller, "y")
        y = np.asarray(y)
        y_tensor = array_to_tensor(y.reshape(len(y), -1))
        weights = row_weights(sample_weight, y_tensor, caller, per_sample=True)
        _check_some_scored_weight(weights, caller)
        weights = None if weights is None else _one_block_tensor_weights(weights, y_tensor)
        return r2(y_tensor, array_to_tensor(y_pred.reshape(len(y), -1)), sample_weight=weights)

    def to_module(self):
        """A TorchScript-compatible ``torch.nn.Module`` predicting as :meth:`predict`.

        See :func:`skmetalstsq.export.to_module` (which also folds a fitted
        Pipeline's scalers into the weights).

        Returns
        -------
        torch.nn.Module
            Its ``forward`` takes and returns a metatensor.torch.TensorMap.
        """
        from .export import to_module

        return to_module(self)

    def __getstate__(self):
        state = dict(super().__getstate__())
        for name in ("weights_", "intercept_"):
            value = as_core(state.get(name))
            if isinstance(value, TensorMap):
                torch_map = is_torch_map(state[name])
                state[name] = {**tensor_to_state(value), "torch_map": torch_map}
        return state

    def __setstate__(self, state):
        for name in ("weights_", "intercept_"):
            if isinstance(state.get(name), dict):
                torch_map = state[name].get("torch_map", False)
                state[name] = tensor_from_state(state[name])
                if torch_map:
                    state[name] = to_torch_map(state[name])
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class TensorMapLstsq(TensorMapLinearModel):
    """Weighted, regularised least squares fitted block by block on metatensor TensorMaps.

    For every key, the block of ``X`` (values, with each gradient stacked under
    them as extra rows, components folded into rows) is fitted to the block of
    ``y`` with the same key, as ``metatensor.lstsq`` does. Each block minimises

    ``sum over rows of weight_row * ||y_row - x_row w - c||^2 + alpha * ||w||^2``

    where the intercept ``c`` (only with ``fit_intercept``) applies to value rows;
    with no weights, penalty or intercept this is ``metatensor.lstsq``. Plain 2-D
    arrays are a TensorMap of one block.

    Parameters
    ----------
    rcond : float in [0, 1) or None, default=None
        Singular values of the weighted (and centred) stacked X block smaller than
        or equal to ``rcond`` times its largest singular value are cut, before
        the penalty. None means float64 machine epsilon times the larger dimension
        of the stacked block (``numpy.linalg.lstsq``'s default), for every dtype:
        every block is factorised in float64 and the weights are returned in the
        data's dtype (float32 data gives float32 weights).
    driver : {None, "gels", "gelsy", "gelsd", "gelss"}, default=None
        None: the rows (values and gradients, weighted) go in chunks of 10000
        through a QR factorisation, without a stacked copy, then a triangular
        solve, or ``gelsd`` on (an SVD of, with a penalty) the small triangular
        factor when ``rcond`` cuts singular values or ``alpha`` penalises them;
        this is ``"gelsd"``'s minimum-norm solution. Square and wide numpy blocks
        without a penalty are one ``gelsd`` call on a weighted copy instead,
        faster there. ``"gels"``: the same QR with a triangular solve,
        which assumes full rank and raises on a rank-deficient block (rcond is
        ignored). ``"gelsd"``, ``"gelss"``, ``"gelsy"``: that LAPACK driver on the
        rows stacked into one copy (scipy's for numpy data, torch's for torch
        data, scipy's ``"gelsy"`` for CPU tensors, as torch's depends on
        uninitialised memory); a penalty is then appended as ``sqrt(alpha)`` rows,
        so that ``rcond`` cuts the singular values of that augmented matrix. On
        CUDA, every driver but ``"gels"`` uses the default solve.
    alpha : float >= 0, dict or TensorMap, default=0.0
        Ridge penalty ``alpha * ||w||^2`` of each block, as
        ``sklearn.linear_model.Ridge(alpha)``: one float for every block, a dict
        ``{key tuple: float}`` naming every block (an entry may be a 1-D array
        with a penalty per property of that block), or a TensorMap with X's keys
        (and no other), one sample and X's properties holding a penalty per
        property (diagonal Tikhonov). The intercept is not penalised.
    fit_intercept : bool, default=False
        Fit an unpenalised intercept per block and target on the value rows
        (gradients of a constant are zero), by weighted centring as scikit-learn's
        linear models do; stored in ``intercept_`` and added by :meth:`predict`.
    gradient_weights : dict or None, default=None
        ``{gradient parameter: float >= 0}`` multiplying the weight of that
        gradient's rows (e.g. ``{"positions": 0.01}``); parameters left out
        weigh 1. Naming a gradient no block of X has is an error.
    device : None, str or torch.device, default=None
        None solves where the data is (numpy data with scipy, torch tensors
        with torch on their device). ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
        convert the blocks to torch tensors on that device and solve there.
    n_jobs : int or None, default=None
        Workers solving blocks concurrently, with joblib's meaning (None is one
        unless in a ``joblib.parallel_config`` context, -1 is all cores; 0 is
        refused). Any joblib backend is honoured, a Dask cluster included;
        threads are preferred. Every LAPACK call runs with BLAS on one thread, so
        the weights are the same, bit for bit, for every ``n_jobs`` and thread
        setting, and from whichever thread the fit is started, several at once
        included (the parallelism page says where this stops: other code changing
        OpenBLAS's process-wide thread count during a fit, or another CPU or
        library build); one worker solves blocks (and row chunks of tall blocks) in as
        many threads as BLAS may use (``threadpoolctl.threadpool_limits``).
    verbose : int, default=0
        Print one line per block solved when > 0 (its key, position, rows,
        columns and solve time).

    Attributes
    ----------
    weights_ : metatensor.TensorMap or metatensor.torch.TensorMap
        One block per key of X, with samples = y's properties and properties =
        X's properties, no components (the layout of ``metatensor.lstsq``).
        Numpy arrays after a numpy solve, torch tensors on the device after a
        torch solve, in the data's dtype. A metatensor.torch.TensorMap after a
        fit where X or y is one (or an IndexedTensorMap of one).
    intercept_ : metatensor.TensorMap, metatensor.torch.TensorMap, numpy.ndarray or float
        One block per key with the samples of ``weights_`` and one property
        ``intercept`` (zeros without ``fit_intercept``), of the kind of
        ``weights_``. After a fit on plain
        arrays, as in ``sklearn.linear_model.LinearRegression``: an array of
        shape (n_targets,), or a numpy scalar for a 1-D y, in the dtype of
        ``coef_``; the float 0.0 without ``fit_intercept``.
    rank_ : dict
        Key (tuple of ints) -> effective rank of the weighted (and centred)
        stacked X block, or None for ``driver="gels"``.
    singular_values_ : dict
        Key (tuple of ints) -> singular values of the weighted (and centred)
        stacked X block, largest first, or None where the driver does not
        compute them (``"gels"``, ``"gelsy"``, and LAPACK drivers with a penalty).
    coef_ : numpy.ndarray of shape (n_features,) or (n_targets, n_features)
        Only after a fit on plain arrays: the weights, as in
        ``sklearn.linear_model.LinearRegression``.
    n_features_in_ : int
        Only after a fit on plain arrays: the number of columns of X.

    See Also
    --------
    metatensor.lstsq : the functional form, whose weights these equal.
    sklearn.linear_model.Ridge : the same penalty and weights on arrays.

    Notes
    -----
    Samples of X and y blocks must be equal and in the same order (the same
    samples in another order are rejected; ``metatensor.sort`` both first).
    Every gradient of X must be in y and the other way around; gradients are
    stacked in the order of their sorted parameter names. A block with no rows
    gets zero weights (the minimum-norm solution of an empty system) and rank 0.
    A row of weight zero changes nothing.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import TensorMapLstsq
    >>> rng = np.random.default_rng(0)
    >>> samples = Labels.range("system", 20)
    >>> x = TensorBlock(rng.normal(size=(20, 3)), samples, [], Labels.range("feature", 3))
    >>> w = np.array([[1.0, -2.0, 0.5]])
    >>> y = TensorBlock(x.values @ w.T + 3.0, samples, [], Labels.range("energy", 1))
    >>> X, Y = TensorMap(Labels.single(), [x]), TensorMap(Labels.single(), [y])
    >>> model = TensorMapLstsq(fit_intercept=True).fit(X, Y)
    >>> np.round(model.weights_.block(0).values, 6)
    array([[ 1. , -2. ,  0.5]])
    >>> np.round(model.intercept_.block(0).values, 6)
    array([[3.]])
    >>> round(model.score(X, Y), 6)
    1.0
    """

    _parameter_constraints = {
        "rcond": [Cutoff(), None],
        "driver": [StrOptions(set(DRIVERS)), None],
        "alpha": "no_validation",
        "fit_intercept": ["boolean"],
        "gradient_weights": [dict, None],
        "device": "no_validation",
        "n_jobs": N_JOBS,
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        rcond=None,
        driver=None,
        alpha=0.0,
        fit_intercept=False,
        gradient_weights=None,
        device=None,
        n_jobs=None,
        verbose=0,
    ):
        self.rcond = rcond
        self.driver = driver
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.gradient_weights = gradient_weights
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    def _systems(self, X, y, sample_weight, caller):
        """Check X, y and the weights and penalties; their block systems.

        Returns
        -------
        (X, y, systems, y_ndim, pairs): the TensorMaps, the systems, y's number
        of dimensions for array inputs (None for TensorMaps), and the
        :func:`~._blocks.block_pairs` of X and y.
        """
        device = resolve_device(self.device, caller)
        y_ndim = pairs = None
        if _is_tensor_input(X) or _is_tensor_input(y):
            check_same_entries(X, y, caller)
            y_given = y
            X, y = unwrap(X)[0], unwrap(y)[0]
            pairs = check_fit_inputs(X, y, caller)
            weights = row_weights(sample_weight, y_given, caller)
        else:
            check_array_like(X, caller, "X")
            if y is not None:  # scikit-learn's own error for a missing y
                check_array_like(y, caller, "y")
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
            y_ndim = y.ndim
            X, y = array_to_tensor(X), array_to_tensor(y.reshape(len(y), -1))
            weights = row_weights(sample_weight, y, caller, per_sample=True)
        check_not_all_zero(weights, caller)
        alphas = resolve_alpha(self.alpha, X, caller)
        gradient_weights = check_gradient_weights(self.gradient_weights, X, caller)
        pairs = pairs or block_pairs(X, y)
        systems = block_systems(X, y, device, weights, gradient_weights, self.fit_intercept, pairs)
        for system, key in zip(systems, key_tuples(X.keys)):
            system.alpha = alphas[key]
        return X, y, systems, y_ndim, pairs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the weights (and intercept) of every block.

        Parameters
        ----------
        X : metatensor.TensorMap, IndexedTensorMap or array-like of shape (n_samples, n_features)
            Features; gradients are fitted together with the values.
        y : metatensor.TensorMap, IndexedTensorMap or array-like of shape (n_samples[, n_targets])
            Targets, with the same keys, samples, components and gradients as X.
        sample_weight : None, float, array-like, TensorMap or IndexedTensorMap, default=None
            Non-negative weights of the rows: a number, the same weight on every
            row (as scikit-learn takes a scalar); for arrays, one per sample; for
            IndexedTensorMaps, an array-like with one weight per entry (applied to
            all its rows, values and gradients), which scikit-learn's splitters
            slice together with X; or a TensorMap with y's keys, samples,
            components and gradients and one property: a weight for every row.

        Returns
        -------
        self : TensorMapLstsq
        """
        caller = "TensorMapLstsq.fit"
        for stale in ("coef_", "n_features_in_", "feature_names_in_", "factors_"):
            self.__dict__.pop(stale, None)
        torch_maps = holds_torch_maps(X, y)
        X, y, systems, y_ndim, pairs = self._systems(X, y, sample_weight, caller)
        solutions = solve_systems(systems, self.rcond, self.driver, self.n_jobs, self.verbose)
        self._torch_maps = torch_maps
        self._set_solutions(X, y, solutions, y_ndim, pairs)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Fold a batch of rows into each block's factor, and solve on all rows seen.

        Each call adds the batch's rows (values and gradients, weighted as in
        :meth:`fit`) to the running triangular factor of each block
        (``factors_``); the fitted attributes then reflect every batch seen so
        far, and equal :meth:`fit` on all batches joined (to rounding). Keys may
        first appear in a later batch; a key whose properties, components or
        gradients change between batches is an error. Memory: one batch plus the
        factors (``width x width`` per block).

        :meth:`fit` starts over, and does not keep the factors: ``partial_fit``
        continues from earlier ``partial_fit`` calls (or from
        :func:`~skmetalstsq.distributed.fit_shards`) only, and refuses an
        estimator fitted by :meth:`fit` rather than forget its rows. Call
        ``partial_fit`` on every batch from the start, or ``fit`` on all the data.

        As in :meth:`fit`, the rows must not all weigh zero: a first batch whose
        every row weighs zero is refused; once rows have been seen, a batch
        whose rows all weigh zero changes nothing.

        Parameters
        ----------
        X, y, sample_weight : as in :meth:`fit`, for one batch.

        Returns
        -------
        self : TensorMapLstsq

        Raises
        ------
        ValueError
            For a driver other than None (the factors are solved directly), a
            batch whose layout differs from earlier batches, an estimator fitted
            by :meth:`fit`, or a first batch whose every row weighs zero.
        """
        caller = "TensorMapLstsq.partial_fit"
        first = not hasattr(self, "factors_")
        if first and hasattr(self, "weights_"):
            raise ValueError(
                f"{caller}: this estimator was fitted by fit, which does not keep the "
                "factors of its rows, so partial_fit cannot add to them (and would forget "
                "them); call partial_fit on every batch from the start, fit on all the data "
                "at once, or call partial_fit on a new estimator, "
                "sklearn.base.clone(estimator)"
            )
        if not first and (hasattr(self, "coef_") != _is_array_batch(X, y)):
            kinds = ("arrays", "TensorMaps") if hasattr(self, "coef_") else ("TensorMaps", "arrays")
            raise TypeError(f"{caller}: earlier batches were {kinds[0]}, this one is {kinds[1]}")
        # the rows seen so far must not all weigh zero: earlier batches with rows had weight
        weighed = not first and any(record.factor.n_rows for record in self.factors_.values())
        batch = self._factor_batch(
            X, y, sample_weight, caller, reset=first, check_weights=not weighed
        )
        if not first:
            batch = merge_partial_states(self._partial_state(), batch, caller)
        self._torch_maps = holds_torch_maps(X, y)
        self._solve_factors(batch, caller)
        return self

    def _partial_state(self):
        return PartialState(self.factors_, self._key_names, self._y_ndim)

    def _factor_batch(self, X, y, sample_weight, caller, reset=True, check_weights=False):
        """The :class:`PartialState` of one batch: each block's factor and layout.

        Everything is checked before anything is factorised; with
        ``check_weights``, that the batch's rows do not all weigh zero.
        """
        if self.driver is not None:
            raise ValueError(
                f"{caller}: partial fits solve from the accumulated factors, which needs "
                f"driver=None, got driver={self.driver!r}"
            )
        device = resolve_device(self.device, caller)
        y_ndim, torch_maps = None, holds_torch_maps(X, y)
        if not _is_array_batch(X, y):
            check_same_entries(X, y, caller)
            y_given = y
            X, y = unwrap(X)[0], unwrap(y)[0]
            check_fit_inputs(X, y, caller)
            weights = row_weights(sample_weight, y_given, caller)
        else:
            check_array_like(X, caller, "X")
            check_array_like(y, caller, "y")
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, reset=reset)
            y_ndim = y.ndim
            X, y = array_to_tensor(X), array_to_tensor(y.reshape(len(y), -1))
            weights = row_weights(sample_weight, y, caller, per_sample=True)
        if check_weights:
            check_not_all_zero(weights, caller)
        resolve_alpha(self.alpha, X, caller, allow_unseen=True)  # its errors, before any work
        gradient_weights = check_gradient_weights(self.gradient_weights, X, caller)
        systems = block_systems(X, y, device, weights, gradient_weights, self.fit_intercept)
        records = {}
        with single_threaded():
            for (key, x_block), y_block, system in zip(
                X.items(), blocks_in_order(y, X.keys), systems
            ):
                layout = _batch_layout(x_block, y_block)
                records[key_tuple(key)] = PartialBlock(factorize(system), layout, system.dtype)
        return PartialState(records, list(X.keys.names), y_ndim, torch_maps=torch_maps)

    def _solve_factors(self, state, caller, allow_unseen=True):
        """Solve every block from its accumulated factor; set the fitted attributes.

        ``state`` is a :class:`PartialState`. ``allow_unseen``: whether ``alpha``
        may name keys that no row has brought yet (later batches may bring them);
        False once every row is in, as in :meth:`fit`.
        """
        records, key_names = state.records, state.key_names
        keys = Labels(key_names, np.array(list(records), dtype=np.int32).reshape(len(records), -1))
        blocks = [_empty_block(record.layout) for record in records.values()]
        alphas = resolve_alpha(
            self.alpha, TensorMap(keys, blocks), caller, allow_unseen=allow_unseen
        )
        solutions = []
        with single_threaded():  # the same bits for every BLAS thread setting
            for key, record in records.items():
                rcond = self.rcond
                if rcond is None:
                    rcond = default_rcond(record.factor.n_rows, record.factor.n_features)
                solution = factor_solution(record.factor, rcond, alphas[key])
                solutions.append(solution.cast(record.dtype))
        self.factors_ = records
        self._key_names, self._y_ndim = list(key_names), state.y_ndim
        layouts = [(record.layout.targets, record.layout.features) for record in records.values()]
        self._set_blocks(keys, layouts, solutions, state.y_ndim)


def _check_some_scored_weight(weights, caller):
    """Raise ValueError when rows of values exist and every one of them weighs zero.

    ``weights`` is what :func:`row_weights` returns (None passes); the score
    compares values only, so only their weights count.
    """
    if weights is None:
        return
    values = [parts[0] for parts in weights.values() if len(parts[0])]
    if values and not any(part.any() for part in values):
        raise ValueError(
            f"{caller}: sample_weight is 0 for every row of y, so there is nothing to score "
            "(a weighted R^2 needs some weight); give at least one row a positive weight"
        )


def _one_block_tensor_weights(weights, y_tensor):
    """The row weights of an array fit as a one-property TensorMap like ``y_tensor``."""
    block = y_tensor.block(0)
    values = np.asarray(weights[key_tuple(y_tensor.keys[0])][0], dtype=np.float64)
    weight_block = TensorBlock(values[:, None], block.samples, [], Labels.range("weight", 1))
    return TensorMap(y_tensor.keys, [weight_block])
