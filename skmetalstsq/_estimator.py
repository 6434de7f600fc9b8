"""TensorMapLstsq: per-block least squares as a scikit-learn regressor."""

from numbers import Integral, Real

import numpy as np
from metatensor import TensorMap
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._blocks import (
    array_to_tensor,
    blocks_in_order,
    is_floating,
    key_text,
    key_tuple,
    predict_block,
    row_parts,
    tensor_from_state,
    tensor_to_state,
    weights_block,
)
from ._indexed import check_same_entries, unwrap
from ._parallel import BlockSystem, solve_systems
from ._solvers import DRIVERS, array_library, convert, convert_like, solve_dtype
from ._validation import (
    check_array_like,
    check_fit_inputs,
    check_predict_input,
    resolve_device,
)
from .metrics import r2


def _is_tensor_input(data):
    return isinstance(unwrap(data)[0], TensorMap)


def _to_numpy(array):
    if isinstance(array, np.ndarray):
        return array
    return array.detach().cpu().numpy()


def block_systems(X, y, device):
    """The linear system of every block of X and y, converted for the solve.

    Parameters
    ----------
    X, y : metatensor.TensorMap
        Already checked with :func:`check_fit_inputs`.
    device : torch.device or None
        Where to solve; None keeps each block where it is.

    Returns
    -------
    list of BlockSystem, in the order of X's keys
    """
    systems = []
    for (key, x_block), y_block in zip(X.items(), blocks_in_order(y, X.keys)):
        parameters = x_block.gradients_list()
        dtype = solve_dtype(x_block.values, y_block.values)
        a_parts = [convert(p, device, dtype) for p in row_parts(x_block, parameters)]
        b_parts = [convert(p, device, dtype) for p in row_parts(y_block, parameters)]
        device_type = "cpu" if array_library(a_parts[0]) == "numpy" else a_parts[0].device.type
        systems.append(BlockSystem(key_text(key), a_parts, b_parts, device_type))
    return systems


class TensorMapLstsq(RegressorMixin, BaseEstimator):
    """Least-squares linear model fitted block by block on metatensor TensorMaps.

    For every key, the block of ``X`` (values, with each gradient stacked under
    them as extra rows, components folded into rows) is fitted to the block of
    ``y`` with the same key, as ``metatensor.lstsq`` does. Plain 2-D arrays are
    a TensorMap of one block.

    Parameters
    ----------
    rcond : float >= 0 or None, default=None
        Singular values of a stacked X block smaller than or equal to
        ``rcond`` times its largest singular value are treated as zero. None
        means machine epsilon of the data's dtype times the larger dimension of
        the stacked block (numpy's and LAPACK's convention), for numpy and torch
        data alike.
    driver : {None, "gels", "gelsy", "gelsd", "gelss"}, default=None
        The LAPACK driver (scipy's for numpy data, torch's for torch data,
        except ``"gelsy"`` on CPU tensors, solved with scipy's because torch's
        depends on uninitialised memory).
        ``"gels"`` is a QR solve that assumes full rank and ignores ``rcond``.
        None gives the minimum-norm solution with the ``rcond`` cut-off, as
        ``"gelsd"`` does, without stacking the values and gradients into one
        copy: rows go in chunks of 10000 through a QR factorisation, then a
        triangular solve (or an SVD of the small triangular factor when
        ``rcond`` cuts singular values). On CUDA, where torch only has
        ``"gels"``, every other driver uses that solve, so ``rcond`` is honoured.
    device : None, str or torch.device, default=None
        None solves where the data is (numpy data with scipy, torch tensors
        with torch on their device). ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
        convert the blocks to torch tensors on that device and solve there.
    n_jobs : int or None, default=None
        Workers solving blocks concurrently, with joblib's meaning (None is one
        unless in a ``joblib.parallel_config`` context, -1 is all cores). Any
        joblib backend is honoured, a Dask cluster included; threads are
        preferred. Every LAPACK call runs with BLAS on one thread, so the
        weights are the same, bit for bit, for every ``n_jobs`` and thread
        setting; one worker solves blocks (and row chunks of tall blocks) in as
        many threads as BLAS may use (``threadpoolctl.threadpool_limits``).
    verbose : int, default=0
        Print one line per block solved when > 0 (its key, position, rows,
        columns and solve time).

    Attributes
    ----------
    weights_ : metatensor.TensorMap
        One block per key of X, with samples = y's properties and properties =
        X's properties, no components (the layout of ``metatensor.lstsq``).
        Numpy arrays after a numpy solve, torch tensors on the device after a
        torch solve.
    rank_ : dict
        Key (tuple of ints) -> effective rank of the stacked X block, or None
        for ``driver="gels"``.
    singular_values_ : dict
        Key (tuple of ints) -> singular values of the stacked X block, largest
        first, or None for ``"gels"`` and ``"gelsy"``, which do not compute
        them.
    coef_ : numpy.ndarray of shape (n_features,) or (n_targets, n_features)
        Only after a fit on plain arrays: the weights, as in
        ``sklearn.linear_model.LinearRegression``.
    n_features_in_ : int
        Only after a fit on plain arrays: the number of columns of X.

    See Also
    --------
    metatensor.lstsq : the functional form, whose weights these equal.

    Notes
    -----
    Samples of X and y blocks must be equal and in the same order (the same
    samples in another order are rejected; ``metatensor.sort`` both first).
    Every gradient of X must be in y and the other way around. Blocks are
    solved in float64 unless both X and y are float32. A block with no rows gets
    zero weights (the minimum-norm solution of an empty system) and rank 0.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import TensorMapLstsq
    >>> rng = np.random.default_rng(0)
    >>> samples = Labels.range("system", 20)
    >>> x = TensorBlock(rng.normal(size=(20, 3)), samples, [], Labels.range("feature", 3))
    >>> w = np.array([[1.0, -2.0, 0.5]])
    >>> y = TensorBlock(x.values @ w.T, samples, [], Labels.range("energy", 1))
    >>> X, Y = TensorMap(Labels.single(), [x]), TensorMap(Labels.single(), [y])
    >>> model = TensorMapLstsq(rcond=1e-10).fit(X, Y)
    >>> np.round(model.weights_.block(0).values, 6)
    array([[ 1. , -2. ,  0.5]])
    >>> round(model.score(X, Y), 6)
    1.0
    """

    _parameter_constraints = {
        "rcond": [Interval(Real, 0, None, closed="left"), None],
        "driver": [StrOptions(set(DRIVERS)), None],
        "device": "no_validation",
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(self, rcond=None, driver=None, device=None, n_jobs=None, verbose=0):
        self.rcond = rcond
        self.driver = driver
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Fit the weights of every block.

        Parameters
        ----------
        X : metatensor.TensorMap, IndexedTensorMap or array-like of shape (n_samples, n_features)
            Features; gradients are fitted together with the values.
        y : metatensor.TensorMap, IndexedTensorMap or array-like of shape (n_samples[, n_targets])
            Targets, with the same keys, samples, components and gradients as X.

        Returns
        -------
        self : TensorMapLstsq
        """
        caller = "TensorMapLstsq.fit"
        device = resolve_device(self.device, caller)
        for stale in ("coef_", "n_features_in_", "feature_names_in_"):
            self.__dict__.pop(stale, None)
        y_ndim = None
        if _is_tensor_input(X) or _is_tensor_input(y):
            check_same_entries(X, y, caller)
            X, y = unwrap(X)[0], unwrap(y)[0]
            check_fit_inputs(X, y, caller)
        else:
            check_array_like(X, caller, "X")
            if y is not None:  # scikit-learn's own error for a missing y
                check_array_like(y, caller, "y")
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
            y_ndim = y.ndim
            X, y = array_to_tensor(X), array_to_tensor(y.reshape(len(y), -1))

        systems = block_systems(X, y, device)
        solutions = solve_systems(systems, self.rcond, self.driver, self.n_jobs, self.verbose)

        blocks = [
            weights_block(solution.weights, y_block.properties, x_block.properties)
            for solution, x_block, y_block in zip(solutions, X.blocks(), blocks_in_order(y, X.keys))
        ]
        self.weights_ = TensorMap(X.keys, blocks)
        keys = [key_tuple(key) for key in X.keys]
        self.rank_ = {key: solution.rank for key, solution in zip(keys, solutions)}
        self.singular_values_ = {
            key: solution.singular_values for key, solution in zip(keys, solutions)
        }
        if y_ndim is not None:
            # numpy, as scikit-learn's own linear models, even after a torch solve
            weights = _to_numpy(solutions[0].weights)
            self.coef_ = weights[0] if y_ndim == 1 else weights
        return self

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
            samples and components; arrays of X's library, device and dtype
            (float64 when X holds integers). For an array: shaped like the y
            seen in fit.
        """
        check_is_fitted(self)
        caller = "TensorMapLstsq.predict"
        tensor, wrap = unwrap(X)
        if isinstance(tensor, TensorMap):
            return wrap(self._predict_tensor(tensor, caller))
        if not hasattr(self, "coef_"):
            raise TypeError(
                f"{caller}: fitted on TensorMaps, X must be a TensorMap or an "
                f"IndexedTensorMap, got {type(X).__name__}"
            )
        check_array_like(X, caller, "X")
        X = validate_data(self, X, reset=False)
        return X @ self.coef_.T

    def _predict_tensor(self, tensor, caller, check_arrays=True):
        """Predictions for a TensorMap (see :meth:`predict`)."""
        if hasattr(self, "coef_"):
            raise TypeError(f"{caller}: fitted on arrays, cannot predict a TensorMap")
        positions = check_predict_input(tensor, self.weights_, caller, check_arrays)
        blocks = []
        for position, block in zip(positions, tensor.blocks()):
            weights = self.weights_.block(position)
            like = block.values
            if not is_floating(like):
                # integer features: predict in float64, not in their dtype
                like = convert(like[:0], dtype=np.dtype(np.float64))
            blocks.append(predict_block(block, convert_like(weights.values, like), weights.samples))
        return TensorMap(tensor.keys, blocks)

    def score(self, X, y, sample_weight=None):
        """R^2 of the predicted values, pooled over blocks.

        With each block's values reshaped to (rows, properties), this is
        ``1 - sum of squared residuals / sum of squared deviations from each
        column's mean``, both summed over all blocks
        (:func:`skmetalstsq.metrics.r2`). For one block it equals
        ``sklearn.metrics.r2_score(y, y_pred, multioutput="variance_weighted")``.

        Parameters
        ----------
        X, y : as in :meth:`fit`
        sample_weight : None
            Not supported; present for scikit-learn's signature.

        Returns
        -------
        score : float
        """
        if sample_weight is not None:
            raise ValueError("TensorMapLstsq.score: sample_weight is not supported")
        if _is_tensor_input(X) or _is_tensor_input(y):
            caller = "TensorMapLstsq.score"
            check_is_fitted(self)
            check_same_entries(X, y, caller)
            X_tensor, y_tensor = unwrap(X)[0], unwrap(y)[0]
            # checks X's arrays too, so the prediction does not check them again
            check_fit_inputs(X_tensor, y_tensor, caller)
            return r2(y_tensor, self._predict_tensor(X_tensor, caller, check_arrays=False))
        y_pred = self.predict(X)
        check_array_like(y, "TensorMapLstsq.score", "y")
        y = np.asarray(y)
        return r2(
            array_to_tensor(y.reshape(len(y), -1)),
            array_to_tensor(y_pred.reshape(len(y), -1)),
        )

    def __getstate__(self):
        state = dict(super().__getstate__())
        if "weights_" in state:
            state["weights_"] = tensor_to_state(state["weights_"])
        return state

    def __setstate__(self, state):
        if "weights_" in state:
            state["weights_"] = tensor_from_state(state["weights_"])
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
