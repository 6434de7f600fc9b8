"""Model selection on TensorMaps: out-of-fold predictions assembled into a TensorMap.

scikit-learn's own ``GridSearchCV``, ``cross_validate``, ``validation_curve``
and friends work on :class:`~skmetalstsq.IndexedTensorMap` as they are;
``sklearn.model_selection.cross_val_predict`` does not, since it concatenates
array predictions. :func:`cross_val_predict` here puts the predictions of each
test fold back into the layout of ``y``.
"""

import numpy as np
from joblib import Parallel, delayed
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import clone
from sklearn.model_selection import check_cv

from ._backends import array_library
from ._blocks import gradient_parameters, key_text
from ._estimator import TensorMapLstsq
from ._indexed import IndexedTensorMap, check_same_entries, unwrap
from ._loo import held_out_tensor, leave_one_out_blocks, row_entries
from ._torch_maps import is_torch_map, type_name
from ._validation import check_groups, check_splits

__all__ = ["cross_val_predict"]


def _as_indexed(data, sample, caller, name):
    if isinstance(data, IndexedTensorMap):
        return data
    if isinstance(data, TensorMap) or is_torch_map(data):
        return IndexedTensorMap(data, sample)
    raise TypeError(
        f"{caller}: {name} must be a metatensor.TensorMap or an IndexedTensorMap, "
        f"got {type_name(data)}"
    )


def _check_partition(splits, n_entries, sample, caller):
    """Raise ValueError unless the test folds hold every position exactly once."""
    counts = np.zeros(n_entries, dtype=np.int64)
    for _, test in splits:
        np.add.at(counts, np.asarray(test, dtype=np.intp), 1)
    missing = np.flatnonzero(counts == 0)
    repeated = np.flatnonzero(counts > 1)
    if len(missing) or len(repeated):
        raise ValueError(
            f"{caller}: the test folds of cv must hold every '{sample}' entry exactly "
            f"once (a partition, as KFold or GroupKFold make); positions "
            f"{missing.tolist()[:10]} are in no test fold ({len(missing)} in all) and "
            f"{repeated.tolist()[:10]} in more than one ({len(repeated)} in all)"
        )


def _fit_and_predict(estimator, X, y, train, test):
    """Fit a clone on the train entries, predict the test entries (a TensorMap)."""
    estimator.fit(X[train], y[train])
    predicted = estimator.predict(X[test])
    if isinstance(predicted, IndexedTensorMap):
        # an IndexedTensorMap pickles as plain arrays on the way back from a worker
        return predicted
    if not (isinstance(predicted, TensorMap) or is_torch_map(predicted)):
        raise TypeError(
            "cross_val_predict: the estimator's predict must return a TensorMap or an "
            f"IndexedTensorMap, got {type_name(predicted)}"
        )
    return predicted


def _leave_one_out_predictions(estimator, X, y, n_jobs, caller):
    """Held-out predictions of every entry of a TensorMapLstsq, from one factorisation."""
    if not isinstance(estimator, TensorMapLstsq):
        raise TypeError(
            f"{caller}: cv='loo' computes exact held-out predictions of a TensorMapLstsq "
            f"from one factorisation per block, got {type_name(estimator)}; use "
            "cv=sklearn.model_selection.LeaveOneOut() to refit any other estimator"
        )
    estimator = clone(estimator)
    _, tensor_y, systems, _, _ = estimator._systems(X, y, None, caller)
    candidates = []
    for key, system in zip(unwrap(X)[0].keys, systems):
        if np.ndim(system.alpha):
            raise ValueError(
                f"{caller}: cv='loo' needs one penalty per block, but block {key_text(key)} "
                "has one per feature; use cv=sklearn.model_selection.LeaveOneOut()"
            )
        candidates.append([(estimator.rcond, float(system.alpha))])
    rows = [
        row_entries(block, gradient_parameters(block), X.sample, X.entries)
        for block in unwrap(X)[0].blocks()
    ]
    scored = ([0] * len(systems), [None] * len(systems))
    results = leave_one_out_blocks(systems, rows, candidates, scored, "squared", n_jobs, True)
    _raise_singular(results, unwrap(X)[0].keys, X, caller)
    residuals = [result.residuals[0] for result in results]
    return held_out_tensor(unwrap(X)[0].keys, tensor_y, systems, residuals)


def _raise_singular(results, keys, X, caller):
    """Raise ValueError naming the entries whose removal leaves a direction unseen."""
    for key, result in zip(keys, results):
        entries = result.singular[0]
        if entries.size:
            raise ValueError(
                f"{caller}: in block {key_text(key)}, leaving out '{X.sample}' "
                f"{X.entries[entries[:10]].tolist()} ({entries.size} in all) leaves a "
                "direction of the features that no other entry has: their held-out "
                "predictions are undetermined (a penalty alpha > 0 or an rcond cut determines a "
                "direction of the features; the intercept needs value rows of other entries)"
            )


def _empty_like(like, shape):
    if array_library(like) == "numpy":
        return np.empty(shape, dtype=like.dtype)
    import torch

    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _rows_in(reference, labels, caller, where):
    """Position in ``reference`` of every entry of ``labels`` (all must be there)."""
    if labels.names != reference.names:
        raise ValueError(
            f"{caller}: {where} are named {labels.names} in the predictions but "
            f"{reference.names} in y"
        )
    _, _, mapping = reference.union_and_mapping(labels)
    mapping = np.asarray(mapping)
    if len(mapping) and mapping.max() >= len(reference):
        raise ValueError(f"{caller}: the predictions have {where} that y does not have")
    return mapping


class _BlockAssembly:
    """The rows of one output block, filled fold after fold."""

    def __init__(self, key, y_block, first):
        self.key = key
        self.y_block = y_block
        self.components = first.components
        self.properties = first.properties
        self.values = _empty_like(first.values, (len(y_block.samples), *first.values.shape[1:]))
        self.filled = np.zeros(len(y_block.samples), dtype=bool)
        self.gradients = {}
        for parameter, gradient in first.gradients():
            if not y_block.has_gradient(parameter):
                raise ValueError(
                    f"cross_val_predict: block {key_text(key)} of the predictions has a "
                    f"'{parameter}' gradient that y does not have"
                )
            y_gradient = y_block.gradient(parameter)
            self.gradients[parameter] = (
                y_gradient,
                gradient.components,
                _empty_like(gradient.values, (len(y_gradient.samples), *gradient.values.shape[1:])),
                np.zeros(len(y_gradient.samples), dtype=bool),
            )

    def add(self, block):
        caller = "cross_val_predict"
        where = f"block {key_text(self.key)}"
        if block.properties != self.properties:
            raise ValueError(f"{caller}: {where} has other properties in different folds")
        rows = _rows_in(self.y_block.samples, block.samples, caller, f"{where} samples")
        self._fill(self.values, self.filled, rows, block.values, f"{where} samples")
        if sorted(block.gradients_list()) != sorted(self.gradients):
            raise ValueError(f"{caller}: {where} has other gradients in different folds")
        for parameter, gradient in block.gradients():
            y_gradient, _, values, filled = self.gradients[parameter]
            # gradient rows point at the fold's samples: renumber them as y's
            gradient_samples = np.array(gradient.samples.values)
            if len(gradient_samples):
                gradient_samples[:, 0] = rows[gradient_samples[:, 0]]
            gradient_rows = _rows_in(
                y_gradient.samples,
                Labels(gradient.samples.names, gradient_samples),
                caller,
                f"{where} '{parameter}' gradient samples",
            )
            self._fill(
                values, filled, gradient_rows, gradient.values, f"{where} '{parameter}' gradient"
            )

    @staticmethod
    def _fill(values, filled, rows, fold_values, where):
        if filled[rows].any():
            raise ValueError(f"cross_val_predict: {where} are predicted in more than one fold")
        filled[rows] = True
        if array_library(values) == "torch":
            import torch

            rows = torch.as_tensor(rows, device=values.device)
        values[rows] = fold_values

    def block(self):
        where = f"block {key_text(self.key)}"
        if not self.filled.all():
            raise ValueError(f"cross_val_predict: {where} has samples of y never predicted")
        block = TensorBlock(self.values, self.y_block.samples, self.components, self.properties)
        for parameter, (y_gradient, components, values, filled) in self.gradients.items():
            if not filled.all():
                raise ValueError(
                    f"cross_val_predict: {where} has '{parameter}' gradient rows of y "
                    "never predicted"
                )
            block.add_gradient(
                parameter, TensorBlock(values, y_gradient.samples, components, block.properties)
            )
        return block


def _assemble(predictions, y):
    """One TensorMap in the layout of ``y`` from the predictions of every fold."""
    caller = "cross_val_predict"
    assemblies = {}
    for predicted in predictions:
        if predicted.keys.names != y.keys.names:
            raise ValueError(
                f"{caller}: keys are named {predicted.keys.names} in the predictions "
                f"but {y.keys.names} in y"
            )
        for key, block in predicted.items():
            position = y.keys.position(key)
            if position is None:
                raise ValueError(
                    f"{caller}: the predictions have a block {key_text(key)} that y does not have"
                )
            if position not in assemblies:
                assemblies[position] = _BlockAssembly(key, y.block(position), block)
            assemblies[position].add(block)
    missing = [key_text(y.keys[p]) for p in range(len(y.keys)) if p not in assemblies]
    if missing:
        raise ValueError(f"{caller}: blocks {missing} of y were never predicted")
    return TensorMap(y.keys, [assemblies[p].block() for p in range(len(y.keys))])


def cross_val_predict(
    estimator, X, y, *, groups=None, cv=None, n_jobs=None, verbose=0, sample="system"
):
    """Out-of-fold predictions of every entry, as one TensorMap.

    For each split of ``cv``, a clone of ``estimator`` is fitted on the train
    entries and predicts the test entries; the predictions are put together in
    the layout of ``y`` (its keys, samples and gradient samples, in its order),
    ready for a parity plot or a metric of :mod:`skmetalstsq.metrics`.

    Parameters
    ----------
    estimator : estimator
        Its ``predict`` must return a TensorMap or an IndexedTensorMap whose
        blocks have samples (and gradient samples) of ``y``, e.g.
        :class:`~skmetalstsq.TensorMapLstsq` or a Pipeline ending with it.
    X, y : metatensor.TensorMap or IndexedTensorMap
        Features and targets. TensorMaps are indexed by ``sample``; two
        IndexedTensorMaps must index the same entries.
    groups : array-like of shape (n_entries,) or None, default=None
        Group of each entry, in the order of ``X.entries``, for splitters such
        as ``GroupKFold``.
    cv : int, cross-validation generator, iterable, "loo" or None, default=None
        As in scikit-learn: None is 5-fold ``KFold``, an int is that many folds.
        ``"loo"``, for a :class:`~skmetalstsq.TensorMapLstsq` with one penalty
        per block: every entry left out in turn, exactly, from one
        factorisation of each block and one pass over its rows (equal to
        ``sklearn.model_selection.LeaveOneOut()``; an ``rcond`` cut keeps the
        full fit's singular directions); a ValueError names the block and the
        entries whose removal leaves a direction undetermined.
        The splits are checked before any fit, as by
        :class:`~skmetalstsq.TensorMapLstsqCV`: indices of entries in range
        (negative ones count from the end, as numpy's) or boolean masks over
        the entries, no entry twice in one set, a training set in every split;
        the test folds must form a partition of the entries.
    n_jobs : int or None, default=None
        Folds fitted in parallel, with joblib's meaning.
    verbose : int, default=0
        joblib's verbosity.
    sample : str, default="system"
        The sample dimension that indexes ``X`` and ``y`` when they are
        TensorMaps; ignored for IndexedTensorMaps.

    Returns
    -------
    y_pred : metatensor.TensorMap, metatensor.torch.TensorMap or IndexedTensorMap
        Of the kind of ``X``: an IndexedTensorMap when ``X`` is one, else a
        TensorMap (a metatensor.torch.TensorMap for one); keys, samples,
        components and gradient samples of ``y``, properties of the
        predictions, arrays of the predictions' library, device and dtype.

    Raises
    ------
    ValueError
        If ``groups`` does not give one group per entry, if a split of ``cv``
        holds an index out of range or no training entry, if the test folds
        are not a partition of the entries (``ShuffleSplit``, say), if X and y
        index different entries, or if a prediction does not fit the layout of
        ``y``.

    Notes
    -----
    Every row of ``y``, values and gradients, must be predicted by exactly one
    fold. A gradient that the predictions have must be in ``y``; a gradient of
    ``y`` that the predictions lack is left out of the result.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import TensorMapLstsq
    >>> from skmetalstsq.model_selection import cross_val_predict
    >>> rng = np.random.default_rng(0)
    >>> samples = Labels.range("system", 12)
    >>> x = TensorBlock(rng.normal(size=(12, 3)), samples, [], Labels.range("feature", 3))
    >>> y = TensorBlock(x.values @ [[1.0], [2.0], [3.0]], samples, [], Labels.range("e", 1))
    >>> X, Y = TensorMap(Labels.single(), [x]), TensorMap(Labels.single(), [y])
    >>> predicted = cross_val_predict(TensorMapLstsq(), X, Y, cv=3)
    >>> bool(np.allclose(predicted.block(0).values, Y.block(0).values))
    True
    """
    caller = "cross_val_predict"
    wrap = unwrap(X)[1]  # the result is given as the kind of X
    X = _as_indexed(X, sample, caller, "X")
    y = _as_indexed(y, X.sample, caller, "y")
    check_same_entries(X, y, caller)
    if isinstance(cv, str):
        if cv != "loo":
            raise ValueError(f"{caller}: cv must be 'loo', an int, a splitter or None, got {cv!r}")
        return wrap(_leave_one_out_predictions(estimator, X, y, n_jobs, caller))
    entries = f"'{X.sample}' entries of X and y"
    groups = check_groups(groups, len(X), entries, caller)
    cv = check_cv(cv, classifier=False)
    splits = check_splits(list(cv.split(X, y, groups)), len(X), entries, caller)
    _check_partition(splits, len(X), X.sample, caller)
    predictions = Parallel(n_jobs=n_jobs, verbose=verbose)(
        delayed(_fit_and_predict)(clone(estimator), X, y, train, test) for train, test in splits
    )
    result = _assemble([unwrap(p)[0] for p in predictions], unwrap(y)[0])
    return wrap(result)
