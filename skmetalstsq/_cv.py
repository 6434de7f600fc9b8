"""TensorMapLstsqCV: rcond and alpha chosen by cross-validation from one SVD per block per fold.

Every (rcond, alpha) candidate is a filter of the same singular value decomposition
(the cut-off drops singular values, the ridge penalty shrinks the others by
``s / (s^2 + alpha)``), so one :class:`~skmetalstsq._solvers.SVDFactorization` of a
block's training factor gives the weights for all of them at the cost of one small
matrix product each (the idea behind scikit-learn's ``RidgeCV``, applied to the
cut-off too). Candidates that keep the same singular values with the same penalty
have the same weights and are scored once.

For the scorers of :mod:`skmetalstsq.metrics`, each (fold, block) only returns the
sums the pooled metric is made of (weighted sums of squared or absolute residuals,
of squared deviations from the column means, and of the weights), so pooled and
per-block scores of every candidate follow without building any TensorMap. Any
other scorer is called on a fitted model per (fold, candidate).
"""

import numbers
import time
import warnings
from dataclasses import dataclass

import numpy as np
from metatensor import TensorMap
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.exceptions import FitFailedWarning
from sklearn.model_selection import check_cv
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import validate_data

from ._backends import FACTOR_DTYPE, array_library, convert, to_numpy
from ._blocks import (
    BlockSystem,
    array_to_tensor,
    block_systems,
    gradient_parameters,
    key_text,
    key_tuple,
    tensor_to_array,
)
from ._estimator import (
    N_JOBS,
    TensorMapLinearModel,
    TensorMapLstsq,
    _is_array_batch,
    _penalty,
    check_gradient_weights,
)
from ._factors import Factor, factorize, fold_factors
from ._indexed import IndexedTensorMap, check_same_entries, holds_torch_maps, unwrap
from ._loo import held_out_tensor, leave_one_out_blocks, row_entries
from ._parallel import (
    run_tasks,
    solve_cost,
    solve_systems,
)
from ._solvers import SVDFactorization
from ._torch_maps import is_torch_map, type_name
from ._validation import (
    check_array_like,
    check_fit_inputs,
    check_groups,
    check_splits,
    resolve_device,
)
from ._weights import check_not_all_zero, row_weights
from .metrics import SCORERS, TensorMapScorer, constant_columns

#: rcond candidates used when none are given: 1e-12, 1e-11, ..., 1e-1.
DEFAULT_RCONDS = tuple(float(10.0**exponent) for exponent in range(-12, 0))

#: metric name (every name of ``metrics.SCORERS``) -> the residual statistic its sums are made of
_STATISTICS = {
    "r2": "squared",
    "neg_rmse": "squared",
    "neg_root_mean_squared_error": "squared",
    "neg_mse": "squared",
    "neg_mean_squared_error": "squared",
    "neg_mae": "absolute",
    "neg_mean_absolute_error": "absolute",
}


class TensorMapLstsqCV(TensorMapLinearModel):
    """Weighted least squares with rcond and alpha chosen by cross-validation.

    The entries of an :class:`~skmetalstsq.IndexedTensorMap` (e.g. systems) are
    split into folds; a system's samples and gradient rows stay together in every
    block. Plain 2-D arrays are split by rows, as ``RidgeCV`` splits them. For each
    fold, each block's training rows (values and gradients, weighted, as
    :class:`TensorMapLstsq` stacks them) are decomposed once, and every candidate
    ``(rcond, alpha)`` is a filter of that decomposition. The per-split scores are
    those of ``GridSearchCV(TensorMapLstsq(fit_intercept=..., gradient_weights=...),
    {"rcond": rconds, "alpha": alphas}, cv=cv)`` with the same splits and scoring
    (with ``sample_weight``: the scores of that search with metadata routing and
    ``set_score_request(sample_weight=True)``). After the choice, the weights are
    refitted on all the data (``driver=None``), and the estimator predicts and
    scores like TensorMapLstsq. :func:`skmetalstsq.distributed.fit_shards`
    cross-validates over shards of data too large for one process.

    Parameters
    ----------
    rconds : float in [0, 1), None or array-like of them, default=(1e-12, 1e-11, ..., 1e-1)
        The candidate cut-offs, with :class:`TensorMapLstsq`'s meaning of
        ``rcond`` (None: float64 epsilon times the larger dimension of the
        stacked training block). A single number or None is the one
        candidate, as ``RidgeCV(alphas=1.0)`` takes one alpha.
    alphas : float >= 0 or array-like of them, default=(0.0,)
        The candidate ridge penalties, with :class:`TensorMapLstsq`'s meaning of
        a float ``alpha`` (a single number is the one candidate); every
        (rcond, alpha) pair is a candidate, in the order of
        ``ParameterGrid({"alpha": alphas, "rcond": rconds})``.
    cv : int, cross-validation splitter, iterable of splits, "loo" or None, default=5
        An int is ``sklearn.model_selection.KFold(cv)`` over the entries (None
        is 5 folds); any splitter is called as ``cv.split(X, y, groups)``.
        ``"loo"``: every entry left out in turn (every row on plain arrays),
        exactly, from one factorisation of each block and one pass over its
        rows: the scoring is applied to all held-out predictions pooled, as
        ``RidgeCV(cv=None)`` does, so ``cv_results_`` has one score per
        candidate (no ``split*`` or ``std_test_*`` keys) and ``n_splits_`` is
        the number of entries. Exact for ``alphas``; an ``rconds`` candidate
        keeps the directions the cut keeps on all the data. A candidate for
        which leaving an entry out leaves a direction undetermined scores nan,
        with a ``FitFailedWarning`` naming the block and the entries. See the
        user guide's leave-one-structure-out page.
    scoring : str of :data:`skmetalstsq.metrics.SCORERS`, callable or None, default=None
        None and ``"r2"`` are the estimator's :meth:`score` (R^2 of the values
        pooled over blocks); ``"neg_rmse"``, ``"neg_mae"``, ``"neg_mse"`` (or
        scikit-learn's names of them, e.g. ``"neg_root_mean_squared_error"``)
        the negated errors of :mod:`skmetalstsq.metrics` on the values. A callable
        ``(estimator, X, y) -> float``: a scorer of
        :func:`skmetalstsq.metrics.scorer` (on the values or a gradient) is
        computed from sums without building predictions; any other callable is
        called with a fitted :class:`TensorMapLstsq` for each fold and candidate,
        and the test entries as ``fit`` got them, as ``GridSearchCV`` calls it:
        after a fit on plain arrays, arrays (so scikit-learn's scorers, e.g.
        ``get_scorer("neg_mean_squared_error")``, work), otherwise
        IndexedTensorMaps.
    per_block : bool, default=False
        False chooses one candidate for all blocks by the pooled score. True
        chooses one per block by that block's own score: the same metric (of
        the same values or gradient) computed over that block alone. Only the
        scorers of :mod:`skmetalstsq.metrics` can be restricted to a block.
    fit_intercept : bool, default=False
        As in :class:`TensorMapLstsq`.
    gradient_weights : dict or None, default=None
        As in :class:`TensorMapLstsq`: they weigh the fits, not the scores.
    n_jobs : int or None, default=None
        (fold, block) decompositions run concurrently, with joblib's meaning;
        threads are preferred, each with BLAS on one thread.
    device : None, str or torch.device, default=None
        As in :class:`TensorMapLstsq`: None works where the data is; otherwise
        the blocks are converted to torch tensors on that device. Scores are
        computed with the data's array library, on its device.
    verbose : int, default=0
        Print one line per block of the final refit when > 0.

    Attributes
    ----------
    rcond_, alpha_ : float, None or dict
        The chosen candidate, or with ``per_block=True`` dicts from each key
        (a tuple of its values) to the candidate chosen for that block.
    best_index_ : int or dict
        Position of the choice in ``cv_results_["params"]`` (a dict by key with
        ``per_block``).
    best_params_ : dict
        ``cv_results_["params"][best_index_]``: ``{"alpha": alpha_, "rcond":
        rcond_}``, as ``GridSearchCV`` gives it; with ``per_block=True``, a dict
        from each key to the parameters chosen for that block.
    best_score_ : float
        Mean over the splits of the pooled score of the choice, or with
        ``per_block=True`` of the pooled score with each block at its own choice.
    refit_time_ : float
        Seconds spent refitting on all the data with the choice.
    cv_results_ : dict of numpy arrays
        Keys as in ``GridSearchCV``: ``mean_fit_time``, ``std_fit_time``,
        ``mean_score_time``, ``std_score_time``, ``params``, ``param_alpha``,
        ``param_rcond``, ``split{k}_test_score``, ``mean_test_score``,
        ``std_test_score`` and ``rank_test_score`` (pooled over blocks, every
        block at that candidate). The times are seconds per candidate and split,
        as in ``GridSearchCV``; all candidates of a split share one
        decomposition per block, whose time counts in full for each of them
        (plus the candidate's own solve): a candidate's fit time is what
        fitting it alone would take. Scores from :mod:`skmetalstsq.metrics`
        are computed together for every candidate of a split, their time
        shared equally; any other scorer is timed call by call.
        With ``per_block=True``, the same four score keys for each block with
        ``score`` replaced by the block's name (:attr:`block_names_`), e.g.
        ``mean_test_center_type=6``. A split whose test entries have no row in a
        block gives that block nan, left out of its mean and std.
    block_names_ : dict
        Key (tuple of its values) -> its name in ``cv_results_``:
        ``"name=value,name=value"``.
    n_splits_ : int
        The number of splits.
    weights_, intercept_, rank_, singular_values_ :
        As in :class:`TensorMapLstsq`, refitted on all the data with ``rcond_``
        and ``alpha_`` (``driver=None``).
    coef_, n_features_in_ :
        Only after a fit on plain arrays, as in :class:`TensorMapLstsq`.

    See Also
    --------
    TensorMapLstsq : the estimator refitted with the chosen candidate.
    sklearn.linear_model.RidgeCV : the same idea for the ridge penalty.

    Notes
    -----
    X and y must be :class:`~skmetalstsq.IndexedTensorMap` (or plain arrays) to be
    split; a plain TensorMap is refused with a message that says how to wrap it. Ties go to the
    first candidate, as in ``GridSearchCV``. After the fit, :meth:`predict` and
    :meth:`score` accept TensorMaps and IndexedTensorMaps alike.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import IndexedTensorMap, TensorMapLstsqCV
    >>> rng = np.random.default_rng(0)
    >>> samples = Labels.range("system", 30)
    >>> features = rng.normal(size=(30, 3)) * [1.0, 1e-3, 1e-9]
    >>> x = TensorBlock(features, samples, [], Labels.range("feature", 3))
    >>> energy = features @ [1.0, 1.0, 1.0] + 1e-4 * rng.normal(size=30)
    >>> y = TensorBlock(energy[:, None], samples, [], Labels.range("energy", 1))
    >>> X = IndexedTensorMap(TensorMap(Labels.single(), [x]), "system")
    >>> Y = IndexedTensorMap(TensorMap(Labels.single(), [y]), "system")
    >>> model = TensorMapLstsqCV(rconds=[1e-12, 1e-6, 1e-2], cv=3).fit(X, Y)
    >>> model.rcond_
    1e-06
    >>> model.cv_results_["rank_test_score"]
    array([2, 1, 3], dtype=int32)
    """

    _parameter_constraints = {
        "rconds": ["array-like", numbers.Real, None],
        "alphas": ["array-like", numbers.Real],
        "cv": ["cv_object", StrOptions({"loo"})],
        "scoring": [StrOptions(set(SCORERS)), callable, None],
        "per_block": ["boolean"],
        "fit_intercept": ["boolean"],
        "gradient_weights": [dict, None],
        "n_jobs": N_JOBS,
        "device": "no_validation",
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        rconds=DEFAULT_RCONDS,
        alphas=(0.0,),
        cv=5,
        scoring=None,
        per_block=False,
        fit_intercept=False,
        gradient_weights=None,
        n_jobs=None,
        device=None,
        verbose=0,
    ):
        self.rconds = rconds
        self.alphas = alphas
        self.cv = cv
        self.scoring = scoring
        self.per_block = per_block
        self.fit_intercept = fit_intercept
        self.gradient_weights = gradient_weights
        self.n_jobs = n_jobs
        self.device = device
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, groups=None, sample_weight=None):
        """Choose rcond and alpha by cross-validation, then fit on all the data.

        Parameters
        ----------
        X : IndexedTensorMap
            Features, indexed by the sample dimension to split (e.g. ``"system"``).
        y : IndexedTensorMap
            Targets over the same entries, keys, samples and gradients.
        groups : array-like of shape (n_entries,), default=None
            Group of each entry, for group-wise splitters such as ``GroupKFold``.
            The splits ``cv`` gives are checked before any work: indices of
            entries in range (negative ones count from the end, as numpy's) or
            boolean masks over the entries, no entry twice in one set, and a
            training set in every split.
        sample_weight : None, array-like of shape (n_entries,), TensorMap or IndexedTensorMap
            Row weights, as in :meth:`TensorMapLstsq.fit`; they weigh the fits
            and the test scores.

        Returns
        -------
        self : TensorMapLstsqCV
        """
        caller = "TensorMapLstsqCV.fit"
        candidates = [
            (rcond, alpha)
            for alpha in _check_alphas(self.alphas, caller)
            for rcond in _check_rconds(self.rconds, caller)
        ]
        device = resolve_device(self.device, caller)
        for stale in ("coef_", "n_features_in_", "feature_names_in_", "factors_"):
            self.__dict__.pop(stale, None)
        y_ndim = arrays = None
        if _is_array_input(X, y):
            # each row one entry, as scikit-learn's RidgeCV splits arrays
            check_array_like(X, caller, "X")
            if y is not None:  # scikit-learn's own error for a missing y
                check_array_like(y, caller, "y")
            X, y = validate_data(self, X, y, multi_output=True, y_numeric=True)
            y_ndim, arrays = y.ndim, (X, y)
            X = IndexedTensorMap(array_to_tensor(X), "sample")
            y = IndexedTensorMap(array_to_tensor(y.reshape(len(y), -1)), "sample")
        for name, data in (("X", X), ("y", y)):
            _check_indexed(data, name, caller)
        check_same_entries(X, y, caller)
        tensor_x, tensor_y = unwrap(X)[0], unwrap(y)[0]
        pairs = check_fit_inputs(tensor_x, tensor_y, caller)
        metric, gradient, custom = _resolve_scoring(self.scoring)
        if self.per_block and custom is not None:
            raise ValueError(
                f"{caller}: per_block=True needs a score per block, which only the "
                "scoring names of skmetalstsq.metrics.SCORERS or a skmetalstsq.metrics.scorer "
                f"give; got {self.scoring!r}"
            )
        score_parts = _score_parts(tensor_x, gradient, caller)
        weights = row_weights(sample_weight, y, caller)
        check_not_all_zero(weights, caller)
        gradient_weights = check_gradient_weights(self.gradient_weights, tensor_x, caller)
        entries = f"'{X.sample}' entries of X and y"
        leave_one_out = isinstance(self.cv, str)  # "loo"
        if leave_one_out and groups is not None:
            raise ValueError(
                f"{caller}: cv='loo' leaves every entry out on its own and takes no groups; "
                "use cv=sklearn.model_selection.LeaveOneGroupOut() to leave groups out"
            )
        splits = None
        if not leave_one_out:
            groups = check_groups(groups, len(X), entries, caller)
            splits = list(check_cv(self.cv).split(X, y, groups))
            splits = check_splits(splits, len(X), entries, caller)

        systems = block_systems(
            tensor_x, tensor_y, device, weights, gradient_weights, self.fit_intercept, pairs
        )
        keys = [key_tuple(key) for key in tensor_x.keys]
        score_weights = [
            None if weights is None else weights[key][part] for key, part in zip(keys, score_parts)
        ]
        rows = [
            row_entries(block, gradient_parameters(block), X.sample, X.entries)
            for block in tensor_x.blocks()
        ]
        statistic = None if custom is not None else _STATISTICS[metric]
        scored = (score_parts, score_weights)
        if leave_one_out:
            held_out, fit_times, score_times = _leave_one_out(
                systems, rows, scored, candidates, statistic, self.n_jobs
            )
            results = _leave_one_out_sums(held_out)
            _warn_singular(held_out, tensor_x.keys, candidates, X, caller)
        else:
            results, fit_times, score_times = _cross_validate(
                systems, rows, scored, splits, len(X), candidates, statistic, self.n_jobs
            )

        self.block_names_ = {
            key_tuple(key): ",".join(f"{n}={int(v)}" for n, v in zip(key.names, key.values))
            for key in tensor_x.keys
        }
        if custom is None:
            losses, totals, counts = results
            pooled = _scores(metric, losses.sum(1), totals.sum(1)[:, None], counts.sum(1)[:, None])
        elif leave_one_out:
            pooled, score_times = _held_out_scores(
                custom, held_out, systems, tensor_x.keys, tensor_y, (X, y), arrays, y_ndim
            )
        else:
            scored = self._scored_model(tensor_x, tensor_y, holds_torch_maps(X, y), y_ndim)
            test_data = (X, y) if arrays is None else arrays
            pooled, score_times = _custom_scores(
                custom, candidates, results, scored, test_data, splits
            )
        self.cv_results_ = _search_results(
            candidates, {"score": pooled}, times=(fit_times, score_times)
        )
        self.n_splits_ = len(X) if leave_one_out else len(splits)
        if leave_one_out:
            _drop_split_keys(self.cv_results_)

        choice = self._choose(candidates, keys, metric, results)
        start = time.perf_counter()
        solutions = _refit(systems, choice, candidates, self.n_jobs, self.verbose)
        self._torch_maps = holds_torch_maps(X, y)
        self._set_solutions(tensor_x, tensor_y, solutions, y_ndim, pairs)
        self.refit_time_ = time.perf_counter() - start
        return self

    def _scored_model(self, tensor_x, tensor_y, torch_maps, y_ndim):
        """A function of (rcond, alpha) and one Solution per block to the fitted
        TensorMapLstsq that ``GridSearchCV`` would hand a scorer."""
        fitted_on_arrays = {
            name: self.__dict__[name]
            for name in ("n_features_in_", "feature_names_in_")
            if name in self.__dict__
        }

        def fitted(rcond, alpha, solutions):
            model = TensorMapLstsq(
                rcond=rcond,
                alpha=alpha,
                fit_intercept=self.fit_intercept,
                gradient_weights=self.gradient_weights,
                device=self.device,
            )
            model.__dict__.update(fitted_on_arrays)
            model._torch_maps = torch_maps
            model._set_solutions(tensor_x, tensor_y, solutions, y_ndim)
            return model

        return fitted

    def _choose(self, candidates, keys, metric, results):
        """Set the chosen candidate(s) and their scores; return each block's choice."""
        params = self.cv_results_["params"]
        if not self.per_block:
            best = int(np.argmin(self.cv_results_["rank_test_score"]))
            self.best_score_ = float(self.cv_results_["mean_test_score"][best])
            self.best_index_ = best
            self.best_params_ = dict(params[best])
            self.rcond_, self.alpha_ = candidates[best]
            return [best] * len(keys)
        losses, totals, counts = results
        block_scores = _scores(metric, losses, totals[..., None], counts[..., None])
        per_block = {self.block_names_[key]: block_scores[:, b] for b, key in enumerate(keys)}
        self.cv_results_.update(_search_results(candidates, per_block, params=False))
        if isinstance(self.cv, str):  # "loo"
            _drop_split_keys(self.cv_results_)
        choice = [
            int(np.argmin(self.cv_results_[f"rank_test_{self.block_names_[key]}"])) for key in keys
        ]
        chosen_losses = losses[:, np.arange(len(keys)), choice].sum(1)
        pooled = _scores(metric, chosen_losses, totals.sum(1), counts.sum(1))
        self.best_score_ = float(_mean_of_splits(pooled)[0])
        self.best_index_ = dict(zip(keys, choice))
        self.best_params_ = {key: dict(params[i]) for key, i in zip(keys, choice)}
        self.rcond_ = {key: candidates[i][0] for key, i in zip(keys, choice)}
        self.alpha_ = {key: candidates[i][1] for key, i in zip(keys, choice)}
        return choice


# ---------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------


def _check_rconds(rconds, caller):
    """The candidates as a list, each a non-negative finite float or None.

    A single number or None is the one candidate, as ``RidgeCV(alphas=1.0)``.
    """
    checked = []
    for position, rcond in enumerate(_candidate_list(rconds, "rconds", caller)):
        if rcond is None:
            checked.append(None)
            continue
        valid = isinstance(rcond, numbers.Real) and not isinstance(rcond, (bool, np.bool_))
        if not valid or not 0 <= rcond < 1:
            raise ValueError(
                f"{caller}: rconds must hold numbers in [0, 1) or None, got "
                f"{rcond!r} at position {position}"
            )
        checked.append(float(rcond))
    return checked


def _check_alphas(alphas, caller):
    """The candidate penalties as a list of finite floats >= 0 (one for a single number)."""
    checked = []
    for position, alpha in enumerate(_candidate_list(alphas, "alphas", caller)):
        if np.ndim(alpha) != 0:
            raise ValueError(
                f"{caller}: alphas must hold numbers (one penalty per candidate), got "
                f"{alpha!r} at position {position}"
            )
        checked.append(_penalty(alpha, caller, f"alphas[{position}]"))
    return checked


def _candidate_list(values, name, caller):
    """``values`` (one value, or a 1-D array-like of them) as a non-empty list."""
    array = np.empty(1, dtype=object)
    if values is None or isinstance(values, numbers.Number):
        array[0] = values
    elif getattr(values, "ndim", 1) == 0:  # a 0-d numpy array or tensor
        array[0] = values.item()
    else:
        array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise ValueError(
            f"{caller}: {name} must be one candidate or a 1-D list of them, got an "
            f"array of shape {array.shape}"
        )
    if not len(array):
        raise ValueError(f"{caller}: {name} is empty; give at least one candidate")
    return list(array)


def _is_array_input(X, y):
    return not isinstance(X, (IndexedTensorMap, TensorMap)) and _is_array_batch(X, y)


def _check_indexed(data, name, caller):
    if isinstance(data, IndexedTensorMap):
        return
    if isinstance(data, TensorMap) or is_torch_map(data):
        kind = type_name(data) if is_torch_map(data) else "metatensor.TensorMap"
        raise TypeError(
            f"{caller}: {name} is a {kind}, which cannot be split into "
            "folds; wrap X and y with skmetalstsq.IndexedTensorMap(tensor, 'system') "
            "(or another sample dimension) to cross-validate over its entries"
        )
    raise TypeError(f"{caller}: {name} must be an IndexedTensorMap, got {type_name(data)}")


def _resolve_scoring(scoring):
    """(metric name, gradient, custom callable) for the ``scoring`` parameter.

    The metric name is the short name of :mod:`skmetalstsq.metrics` (``"r2"``,
    ``"neg_rmse"``, ``"neg_mae"``, ``"neg_mse"``), scikit-learn's names of the
    same metrics (``"neg_root_mean_squared_error"``, ...) mapped to it.
    """
    from .metrics import _short_name

    if scoring is None:
        return "r2", None, None
    if isinstance(scoring, str):
        return _short_name(scoring), None, None
    if isinstance(scoring, TensorMapScorer) and scoring.name in SCORERS:
        return _short_name(scoring.name), scoring.gradient, None
    return None, None, scoring


def _score_parts(X, gradient, caller):
    """For each block, the position of the scored rows among its row parts."""
    positions = []
    for key, block in X.items():
        parameters = gradient_parameters(block)
        if gradient is None:
            positions.append(0)
        elif gradient in parameters:
            positions.append(1 + parameters.index(gradient))
        else:
            raise ValueError(
                f"{caller}: scoring uses the '{gradient}' gradient, but block "
                f"{key_text(key)} has the gradients {parameters}"
            )
    return positions


# ---------------------------------------------------------------------------------
# folds
# ---------------------------------------------------------------------------------


def _take(part, mask):
    """Rows of ``part`` where ``mask`` (a numpy boolean array) is True."""
    if array_library(part) == "numpy":
        return part[mask]
    import torch

    return part[torch.from_numpy(mask).to(part.device)]


def _subsystem(system, masks):
    """The rows of ``system`` where ``masks`` (one boolean array per row part) are True."""
    weights = None
    if system.row_weights is not None:
        weights = [
            w if w is None or isinstance(w, float) else w[mask]
            for w, mask in zip(system.row_weights, masks)
        ]
    return BlockSystem(
        system.label,
        [_take(part, mask) for part, mask in zip(system.a_parts, masks)],
        [_take(part, mask) for part, mask in zip(system.b_parts, masks)],
        system.dtype,
        weights,
        system.intercept,
    )


def _group_factor(system, rows, in_group):
    """:class:`~._factors.Factor` of the rows where ``in_group``."""
    return factorize(_subsystem(system, [in_group[r] for r in rows]))


def _merged(factors):
    """The factor of the rows of several factors (all of one block)."""
    first = factors[0]
    r = fold_factors(factor.r for factor in factors)
    return Factor(r, first.n_features, sum(f.n_rows for f in factors), first.intercept)


def _candidate_solutions(factorization, candidates):
    """Solution for each (rcond, alpha); candidates of equal rank and alpha share one.

    Returns the solutions and, for each candidate, the seconds its solve took
    (a shared solve counts for every candidate that shares it).
    """
    shared, solutions, seconds = {}, [], []
    for rcond, alpha in candidates:
        key = (factorization.rank(rcond), alpha)
        if key not in shared:
            start = time.perf_counter()
            shared[key] = (factorization.solve(rcond, alpha), time.perf_counter() - start)
        solutions.append(shared[key][0])
        seconds.append(shared[key][1])
    return solutions, np.array(seconds)


def _as_float64(part):
    return convert(part, dtype=FACTOR_DTYPE)


def _fold_block(system, rows, scored, train, test, r_factors, candidates, statistic):
    """Decompose one block's training set; score or return every candidate.

    The training set is the rows of the entries where ``train`` is True, or,
    when ``r_factors`` is a list, the factors of its groups of entries (the
    factor of their stacked factors is that of the rows).

    ``scored`` is ``(part, weights)``: the row part that is scored and the
    weights of its rows (None: 1).

    Returns
    -------
    (result, fit_seconds, score_seconds). ``result`` is (losses, total, count)
    with losses of shape (n_candidates,) when ``statistic`` is ``"squared"`` or
    ``"absolute"``, where the sums are weighted and ``count`` is the sum of the
    weights of the scored entries; the list of candidate solutions when it is
    None (``score_seconds`` is then 0). ``fit_seconds`` (n_candidates,): the
    decomposition's time plus each candidate's solve; ``score_seconds``: the
    time of the sums of every candidate together.
    """
    start = time.perf_counter()
    if r_factors:
        factor = _merged(r_factors)
    else:
        masks = [train[r] if r_factors is None else np.zeros(len(r), bool) for r in rows]
        factor = factorize(_subsystem(system, masks))
    factorization = SVDFactorization(factor)
    decomposed = time.perf_counter() - start
    solutions, solve_seconds = _candidate_solutions(factorization, candidates)
    fit_seconds = decomposed + solve_seconds
    if statistic is None:
        return solutions, fit_seconds, 0.0
    start = time.perf_counter()
    part, part_weights = scored
    test_rows = test[rows[part]]
    a_test = _take(system.a_parts[part], test_rows)
    b_test = _take(system.b_parts[part], test_rows)
    weights = None if part_weights is None else part_weights[test_rows]
    sums = score_sums(a_test, b_test, weights, solutions, part == 0, statistic)
    result = (sums.losses, float(sums.m2.sum()), sums.weight_sum * b_test.shape[1])
    return result, fit_seconds, time.perf_counter() - start


@dataclass
class ScoreSums:
    """What a pooled score is made of, for one block's test rows and every candidate.

    Attributes
    ----------
    losses : numpy array of shape (n_candidates,)
        Weighted sums of squared (or absolute) residuals.
    weight_sum : float
        Sum of the weights of the test rows (their number, unweighted).
    mean : numpy array of shape (n_targets,)
        Weighted column means of the targets.
    m2 : numpy array of shape (n_targets,)
        Weighted sums of squared deviations from ``mean``: exactly 0 for a
        column whose rows (of positive weight) hold one value, whose ``mean``
        is that value.
    """

    losses: np.ndarray
    weight_sum: float
    mean: np.ndarray
    m2: np.ndarray

    def combine(self, other):
        """The sums of the rows of both (Chan et al.'s pairwise update of mean and m2)."""
        total = self.weight_sum + other.weight_sum
        if other.weight_sum == 0:
            return self
        if self.weight_sum == 0:
            return other
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.weight_sum / total)
        m2 = self.m2 + other.m2 + delta**2 * (self.weight_sum * other.weight_sum / total)
        return ScoreSums(self.losses + other.losses, total, mean, m2)


def score_sums(a_test, b_test, weights, solutions, values, statistic):
    """:class:`ScoreSums` of test rows ``a_test``, ``b_test`` for every candidate solution.

    ``weights``: a 1-D numpy array of row weights or None; ``values``: whether
    the rows are value rows (the intercept applies to them); ``statistic``:
    ``"squared"`` or ``"absolute"``. Candidates sharing one solution are
    computed once.
    """
    a_test, b_test = _as_float64(a_test), _as_float64(b_test)
    n_targets = b_test.shape[1]
    if weights is None:
        weight_sum = float(b_test.shape[0])
        w = None
    else:
        weight_sum = float(weights.sum())
        w = convert_like_rows(weights, b_test)
    if weight_sum == 0:
        zeros = np.zeros(n_targets)
        return ScoreSums(np.zeros(len(solutions)), 0.0, zeros, zeros)
    by_solution, losses = {}, []
    for solution in solutions:
        if id(solution) not in by_solution:
            residual = b_test - a_test @ solution.weights.T
            if solution.intercept is not None and values:
                residual = residual - solution.intercept
            residual = residual**2 if statistic == "squared" else abs(residual)
            if w is not None:
                residual = residual * w[:, None]
            by_solution[id(solution)] = float(residual.sum())
        losses.append(by_solution[id(solution)])
    if w is None:
        mean = b_test.mean(0)
        m2 = ((b_test - mean) ** 2).sum(0)
    else:
        mean = (w @ b_test) / weight_sum
        m2 = (w[:, None] * (b_test - mean) ** 2).sum(0)
    # a column of one value: its own mean, no deviation (the rounded mean gives 1e-34),
    # so that combining parts of one value keeps m2 exactly 0
    constant, value = (to_numpy(part) for part in constant_columns(b_test, weights))
    mean = np.where(constant, value, to_numpy(mean))
    m2 = np.where(constant, 0.0, to_numpy(m2))
    return ScoreSums(np.array(losses), weight_sum, mean, m2)


def convert_like_rows(weights, like):
    """1-D numpy ``weights`` as a float64 vector of the library and device of ``like``."""
    if array_library(like) == "numpy":
        return np.asarray(weights, dtype=FACTOR_DTYPE)
    return convert(np.asarray(weights, dtype=FACTOR_DTYPE), device=like.device)


def _cross_validate(systems, row_entries, scored, splits, n_entries, candidates, statistic, n_jobs):
    """Every (split, block) decomposed once and evaluated for every candidate.

    Entries that are in the training set of the same splits form a group (with
    ``KFold``, the test entries of one fold). Where it saves work, a block's rows
    go through a QR decomposition once per group, and each split decomposes the
    small stacked triangular factors of its training groups, instead of all its
    training rows: each row is factorised once rather than once per split.

    Returns
    -------
    (results, fit_seconds, score_seconds). ``results``: (losses, totals, counts)
    of shapes (n_splits, n_blocks, n_candidates), (n_splits, n_blocks) and
    (n_splits, n_blocks) for a known statistic; for None, a nested list
    [split][block][candidate] of solutions. ``scored`` is (each block's scored
    row part, each block's weights of those rows or None).

    ``fit_seconds`` and ``score_seconds`` have the shape (n_splits,
    n_candidates). A candidate's fit time in a split is the time of every
    block's decomposition of that split's training rows, which all its
    candidates share (with the QR factors of the groups of entries it is made
    of, each counted in every split that uses it), plus the candidate's own
    solve: what fitting that candidate alone would take. The sums that score
    every candidate of a split are computed together: their time is shared
    equally between the candidates.
    """
    train_masks = np.zeros((len(splits), n_entries), dtype=bool)
    test_masks = np.zeros((len(splits), n_entries), dtype=bool)
    for s, (train, test) in enumerate(splits):
        train_masks[s, train] = True
        test_masks[s, test] = True
    patterns, group_of_entry = np.unique(train_masks.T, axis=0, return_inverse=True)
    group_of_entry = group_of_entry.reshape(-1)
    in_splits = patterns.sum(1)

    factor_tasks, factor_of, grouped_blocks = [], {}, set()
    for b, (system, rows) in enumerate(zip(systems, row_entries)):
        width = system.width
        group_rows = np.bincount(group_of_entry[np.concatenate(rows)], minlength=len(patterns))
        if not _use_group_factors(group_rows, in_splits, width):
            continue
        grouped_blocks.add(b)
        for g in np.flatnonzero((in_splits > 0) & (group_rows > 0)):
            factor_of[b, g] = len(factor_tasks)
            cost = 2.0 * group_rows[g] * width**2
            args = (_group_factor, system, rows, group_of_entry == g)
            factor_tasks.append((_timed, args, cost))
    factors, factor_seconds = zip(*run_tasks(factor_tasks, n_jobs)) if factor_tasks else ((), ())

    fit_seconds = np.zeros((len(splits), len(candidates)))
    score_seconds = np.zeros((len(splits), len(candidates)))

    tasks = []
    for s in range(len(splits)):
        for b, (system, rows) in enumerate(zip(systems, row_entries)):
            r_factors = None
            cost = solve_cost(system)
            if b in grouped_blocks:
                groups = np.flatnonzero(patterns[:, s])
                used = [factor_of[b, g] for g in groups if (b, g) in factor_of]
                r_factors = [factors[i] for i in used]
                fit_seconds[s] += sum(factor_seconds[i] for i in used)
                width = system.width
                cost = 2.0 * len(r_factors) * width**3 + width**3
            args = (
                system,
                rows,
                (scored[0][b], scored[1][b]),
                train_masks[s],
                test_masks[s],
                r_factors,
                candidates,
                statistic,
            )
            tasks.append((_fold_block, args, cost))
    outcomes = run_tasks(tasks, n_jobs)
    n_blocks = len(systems)
    for t, (_, fit_time, score_time) in enumerate(outcomes):
        fit_seconds[t // n_blocks] += fit_time
        score_seconds[t // n_blocks] += score_time / len(candidates)
    results = [outcome[0] for outcome in outcomes]
    nested = [results[s * n_blocks : (s + 1) * n_blocks] for s in range(len(splits))]
    if statistic is None:
        return nested, fit_seconds, score_seconds
    losses = np.array([[result[0] for result in split] for split in nested])
    totals = np.array([[result[1] for result in split] for split in nested], dtype=float)
    counts = np.array([[result[2] for result in split] for split in nested], dtype=float)
    losses = losses.reshape(len(splits), n_blocks, len(candidates))
    return (losses, totals, counts), fit_seconds, score_seconds


def _timed(function, *args):
    """``function(*args)`` and the seconds it took."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def _use_group_factors(group_rows, in_splits, width):
    """Whether factorising each group once costs fewer QR rows than each split's rows.

    ``group_rows``: rows of the block in each group; ``in_splits``: the number of
    training sets each group is in; ``width``: features plus targets.
    """
    direct = float((group_rows * in_splits).sum())
    grouped = float(group_rows[in_splits > 0].sum())
    grouped += float((np.minimum(group_rows, width) * in_splits).sum())
    return grouped < direct


def _refit(systems, choice, candidates, n_jobs, verbose=0):
    """Solve every block on all the data with the candidate chosen for it."""
    solutions = [None] * len(systems)
    for index in sorted(set(choice)):
        rcond, alpha = candidates[index]
        positions = [b for b, chosen in enumerate(choice) if chosen == index]
        chosen = [systems[b] for b in positions]
        for system in chosen:
            system.alpha = alpha
        for b, solution in zip(positions, solve_systems(chosen, rcond, None, n_jobs, verbose)):
            solutions[b] = solution
    return solutions


def _leave_one_out(systems, rows, scored, candidates, statistic, n_jobs):
    """Every entry left out of every block (:func:`~._loo.leave_one_out_blocks`);
    with ``statistic`` None (a scorer of its own), the held-out residuals are kept.

    Returns
    -------
    (one LeaveOneOut per block, fit seconds, score seconds): the seconds of shape
    (1, n_candidates), the whole pass counted for every candidate (it serves
    them all) and no separate scoring.
    """
    start = time.perf_counter()
    held_out = leave_one_out_blocks(
        systems, rows, candidates, scored, statistic or "squared", n_jobs, statistic is None
    )
    seconds = np.full((1, len(candidates)), time.perf_counter() - start)
    return held_out, seconds, np.zeros_like(seconds)


def _drop_split_keys(results):
    """Leave-one-out has one pooled score per candidate: no splits to list or spread."""
    for name in [n for n in results if n.startswith(("split0_test_", "std_test_"))]:
        del results[name]


def _leave_one_out_sums(held_out):
    """(losses, totals, counts) of the pooled held-out predictions, as one split."""
    losses = np.array([[block.losses for block in held_out]])
    totals = np.array([[block.total for block in held_out]], dtype=float)
    counts = np.array([[block.count for block in held_out]], dtype=float)
    return losses, totals, counts


def _warn_singular(held_out, keys, candidates, X, caller):
    """Warn, per block, of candidates whose score is nan for an undetermined entry."""
    for key, block in zip(keys, held_out):
        failed = [c for c, entries in enumerate(block.singular) if entries.size]
        if not failed:
            continue
        entries = np.unique(np.concatenate([block.singular[c] for c in failed]))
        named = [f"(rcond={candidates[c][0]}, alpha={candidates[c][1]})" for c in failed[:5]]
        warnings.warn(
            f"{caller}: in block {key_text(key)}, leaving out '{X.sample}' "
            f"{X.entries[entries[:10]].tolist()} ({entries.size} in all) leaves a direction "
            f"of the features that no other entry has; candidates {', '.join(named)} "
            f"({len(failed)} in all) score nan (a penalty alpha > 0 or a larger rcond "
            "determines a direction of the features; the intercept needs value rows of "
            "other entries)",
            FitFailedWarning,
            stacklevel=3,
        )


class _HeldOutPredictions(RegressorMixin, BaseEstimator):
    """What a scorer is handed under ``cv="loo"``: a fitted regressor whose predict
    returns the held-out predictions (scikit-learn's ``RidgeCV`` hands its scorers
    such an identity regressor too)."""

    def __init__(self, predictions=None):
        self.predictions = predictions

    def fit(self, X, y=None):
        return self

    def predict(self, X):
        return self.predictions

    def __sklearn_is_fitted__(self):
        return True


def _held_out_scores(scoring, held_out, systems, keys, tensor_y, data, arrays, y_ndim):
    """Call a scorer on the held-out predictions of each candidate, pooled.

    Returns (scores, seconds), each of shape (1, n_candidates).
    """
    n_candidates = len(held_out[0].losses)
    scores = np.empty((1, n_candidates))
    seconds = np.empty_like(scores)
    for c in range(n_candidates):
        residuals = [block.residuals[c] for block in held_out]
        predicted = held_out_tensor(keys, tensor_y, systems, residuals)
        if arrays is not None:
            predicted = tensor_to_array(predicted)
            predicted = predicted.reshape(-1) if y_ndim == 1 else predicted
            X, y = arrays
        else:
            X, y = data
            predicted = unwrap(y)[1](predicted)
        start = time.perf_counter()
        scores[0, c] = scoring(_HeldOutPredictions(predicted), X, y)
        seconds[0, c] = time.perf_counter() - start
    return scores, seconds


# ---------------------------------------------------------------------------------
# scores
# ---------------------------------------------------------------------------------


def _scores(metric, losses, totals, counts):
    """Scores from summed residual statistics, as :mod:`skmetalstsq.metrics` computes them.

    ``metric`` is a name of ``metrics.SCORERS``. ``losses`` are sums of squared
    (``r2``, ``neg_rmse``, ``neg_mse``) or absolute (``neg_mae``) residuals,
    ``totals`` sums of squared deviations from each column's mean, ``counts``
    numbers of entries (or their summed weights); all broadcast together.
    Where ``counts`` is 0 (no test row, or none of positive weight) the score
    is nan, which the means over splits leave out.
    """
    from .metrics import _short_name

    metric = _short_name(metric)
    losses, totals, counts = np.broadcast_arrays(losses, totals, counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "r2":
            constant = np.where(losses == 0.0, 1.0, 0.0)
            scores = np.where(totals == 0.0, constant, 1.0 - losses / totals)
        elif metric == "neg_rmse":
            scores = -np.sqrt(losses / counts)
        else:  # neg_mse, neg_mae: the mean of the statistic
            scores = -losses / counts
    return np.where((counts == 0) | np.isnan(losses), np.nan, scores)


def _custom_scores(scoring, candidates, solutions, fitted, data, splits):
    """Call a scorer as ``GridSearchCV`` does, for each split and candidate.

    ``candidates`` are the (rcond, alpha) pairs; ``solutions[s][b][c]`` is the
    Solution of block ``b`` for candidate ``c`` in split ``s``;
    ``fitted(rcond, alpha, block_solutions)`` is the fitted
    TensorMapLstsq handed to the scorer; ``data`` is ``(X, y)`` as given to fit
    (arrays or IndexedTensorMaps), whose test entries the scorer receives.

    Returns
    -------
    (scores, seconds): two arrays of shape (n_splits, n_candidates), the scores
    and the time each call of the scorer took.
    """
    X, y = data
    scores = np.empty((len(splits), len(candidates)))
    seconds = np.empty_like(scores)
    for s, (_, test) in enumerate(splits):
        X_test, y_test = X[test], y[test]
        for c, (rcond, alpha) in enumerate(candidates):
            model = fitted(rcond, alpha, [block[c] for block in solutions[s]])
            start = time.perf_counter()
            scores[s, c] = scoring(model, X_test, y_test)
            seconds[s, c] = time.perf_counter() - start
    return scores, seconds


def _rank(means):
    """Ranks as GridSearchCV gives them: 1 is best, nan ties with the worst."""
    from scipy.stats import rankdata

    if np.isnan(means).all():
        return np.ones(len(means), dtype=np.int32)
    means = np.nan_to_num(means, nan=np.nanmin(means) - 1)
    return rankdata(-means, method="min").astype(np.int32)


def _mean_of_splits(split_scores):
    """Mean and standard deviation over the splits (axis 0) of the scores that are not nan.

    A split with nothing to score (nan) is left out; nan where every split is.
    """
    valid = ~np.isnan(split_scores)
    n_valid = valid.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(valid, split_scores, 0.0).sum(0) / n_valid
        deviation = np.where(valid, split_scores - mean, 0.0)
        std = np.sqrt((deviation**2).sum(0) / n_valid)
    return mean, std


def _search_results(candidates, scores, params=True, times=None):
    """GridSearchCV's result keys for each named (n_splits, n_candidates) score.

    ``candidates`` are (rcond, alpha) pairs, in the order of GridSearchCV's
    ``ParameterGrid({"alpha": alphas, "rcond": rconds})``. ``times``: None or
    (fit seconds, score seconds), each of shape (n_splits, n_candidates), for
    the keys ``mean_fit_time``, ``std_fit_time``, ``mean_score_time`` and
    ``std_score_time``.
    """
    results = {}
    for name, seconds in zip(("fit", "score"), times or ()):
        results[f"mean_{name}_time"] = np.mean(seconds, axis=0)
        results[f"std_{name}_time"] = np.std(seconds, axis=0)
    if params:
        rconds = [rcond for rcond, _ in candidates]
        numeric = all(rcond is not None for rcond in rconds)
        results["params"] = [{"alpha": alpha, "rcond": rcond} for rcond, alpha in candidates]
        results["param_alpha"] = np.ma.MaskedArray(
            np.array([alpha for _, alpha in candidates], dtype=float),
            mask=np.zeros(len(candidates), dtype=bool),
        )
        results["param_rcond"] = np.ma.MaskedArray(
            np.array(rconds, dtype=float if numeric else object),
            mask=np.zeros(len(rconds), dtype=bool),
        )
    for name, split_scores in scores.items():
        split_scores = np.asarray(split_scores, dtype=float)
        for s, row in enumerate(split_scores):
            results[f"split{s}_test_{name}"] = row
        mean, std = _mean_of_splits(split_scores)
        results[f"mean_test_{name}"] = mean
        results[f"std_test_{name}"] = std
        results[f"rank_test_{name}"] = _rank(mean)
    return results
