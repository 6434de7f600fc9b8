"""Fits on data larger than one machine's memory: shards factorised where they are loaded.

Each shard (a part of the rows: some systems, one file, ...) is turned into the
triangular factor of every block's weighted ``[1 | A | B]`` where it is loaded; the
factors of all shards are merged (the QR of stacked factors is the factor of the
union of their rows) and only the final ``width x width`` factors reach the caller,
who solves them (:meth:`TensorMapLstsq.partial_fit` does the same batch by batch).

With a ``dask.distributed`` client the shards are loaded and factorised on the
workers and the factors are merged in a tree on the cluster. Without one, the shards
are loaded and folded one after the other in this process, holding one shard at a time.
"""

import time
from dataclasses import replace

import numpy as np
from metatensor import Labels
from sklearn.base import clone
from sklearn.model_selection import check_cv

from ._backends import convert, device_of
from ._bayes import TensorMapBayesianRidge
from ._blocks import blocks_in_order, gradient_parameters, key_tuple, row_parts
from ._cv import (
    _STATISTICS,
    TensorMapLstsqCV,
    _check_alphas,
    _check_rconds,
    _resolve_scoring,
    _scores,
    _search_results,
    score_sums,
)
from ._estimator import TensorMapLstsq, _is_array_batch, merge_partial_states
from ._indexed import unwrap
from ._solvers import SVDFactorization, default_rcond, factor_solution
from ._validation import check_groups, check_splits, resolve_device
from ._weights import row_weights

__all__ = ["fit_shards"]

_CALLER = "fit_shards"


def _shard_state(estimator, index, data, tensors_only=False):
    """The numpy :class:`PartialState` of one shard's ``(X, y[, sample_weight])``.

    ``tensors_only``: refuse a shard of arrays (cross-validation over shards),
    before it is factorised.
    """
    if not isinstance(data, tuple) or len(data) not in (2, 3):
        raise TypeError(
            f"{_CALLER}: shard {index} must give (X, y) or (X, y, sample_weight), got "
            f"{type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, tuple) else "")
        )
    X, y, *weights = data
    if tensors_only:
        _check_not_arrays(X, y, index)
    sample_weight = weights[0] if weights else None
    return (
        clone(estimator)._factor_batch(X, y, sample_weight, f"{_CALLER}: shard {index}").to_numpy()
    )


def _load_and_factor(estimator, index, shard, tensors_only=False):
    """Load one shard and factorise it; only its factors outlive the call.

    Returns ``([index], state)``: the shards a state is made of, and the state.
    """
    data = shard.compute() if _is_delayed(shard) else (shard() if callable(shard) else shard)
    return [index], _shard_state(estimator, index, data, tensors_only)


def _check_not_arrays(X, y, index):
    """Raise TypeError for a shard of arrays, which cross-validation over shards refuses."""
    if _is_array_batch(X, y):
        raise TypeError(
            f"{_CALLER}: shard {index}: cross-validation over shards needs TensorMaps, got arrays"
        )


def _shard_names(indices):
    if len(indices) == 1:
        return f"shard {indices[0]}"
    if list(indices) == list(range(indices[0], indices[-1] + 1)):
        return f"shards {indices[0]} to {indices[-1]}"
    shown = ", ".join(str(i) for i in indices[:8])
    return f"shards {shown}" + (", ..." if len(indices) > 8 else "")


def _merge(left, right):
    """Merge two ``(shard indices, state)`` results; messages name the shards."""
    (first, left_state), (second, right_state) = left, right
    names = (_shard_names(first), _shard_names(second))
    return first + second, merge_partial_states(left_state, right_state, _CALLER, names=names)


def _is_delayed(shard):
    return type(shard).__module__.startswith("dask") and hasattr(shard, "dask")


def _default_client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:  # no client has been started
        return None


def fit_shards(estimator, shards, client=None, groups=None):
    """Fit ``estimator`` on shards that are each loaded where they are factorised.

    Parameters
    ----------
    estimator : TensorMapLstsq, TensorMapBayesianRidge or TensorMapLstsqCV
        A TensorMapLstsq with ``driver=None`` (the factors are solved directly):
        its weights, penalty, intercept and device apply as in
        :meth:`TensorMapLstsq.fit`. A TensorMapBayesianRidge maximises the
        evidence of every block from the merged factors, as its ``fit`` does
        from the factors of all rows. A TensorMapLstsqCV cross-validates over the
        shards: its ``cv`` splits the list of shards (each shard is one entry, a
        fold is a set of shards); each shard is factorised once, each split
        solves every candidate from the merged factors of its training shards,
        and each test shard is loaded again where it is to score them.
    shards : iterable
        Zero-argument callables or ``dask.delayed`` objects, each returning
        ``(X, y)`` or ``(X, y, sample_weight)`` of one shard (TensorMaps,
        IndexedTensorMaps or arrays, as ``fit`` takes them). On a cluster the
        callables are sent to the workers: they must be importable there.
    client : dask.distributed.Client or None, default=None
        Where to load and factorise the shards; None uses the default client
        when one exists, otherwise this process, one shard after the other.
    groups : array-like of shape (n_shards,), default=None
        Group of each shard, for group-wise splitters (TensorMapLstsqCV only).

    Returns
    -------
    estimator : TensorMapLstsq, TensorMapBayesianRidge or TensorMapLstsqCV
        The same object, fitted: its attributes equal those of ``fit`` on all
        shards joined (to rounding), of the same kind, array library, device
        and dtype (metatensor-torch TensorMaps for metatensor-torch shards,
        tensors on the estimator's ``device`` or on the shards' one); for a
        TensorMapLstsq or a TensorMapBayesianRidge, ``factors_`` holds the
        merged factors, so that ``partial_fit`` can add more rows. For a
        TensorMapLstsqCV, ``cv_results_`` are the scores of ``GridSearchCV`` on
        the joined data with the splits of the shards (a ``PredefinedSplit``),
        with the keys that :meth:`TensorMapLstsqCV.fit` gives. Its times are
        seconds as this process sees them (on a cluster, waiting for the
        workers): a split's fit time is the time to merge the factors of its
        training shards, decompose them and solve every candidate, counted in
        full for each candidate, as ``fit`` counts a shared decomposition; its
        score time is the time to load the test shards again and score them,
        shared equally between the candidates. Loading and factorising each
        shard, done once for all splits before them, is in no split's time.
        ``refit_time_`` is the solve of the choice from the factors of all shards.

    Raises
    ------
    ValueError, TypeError
        For shards whose layouts disagree (naming the shards and the block), a
        shard that does not give ``(X, y[, sample_weight])``, a TensorMap
        ``alpha`` or a dict ``alpha`` with a key that no shard has (as ``fit``
        refuses a key that X lacks), or, for a TensorMapLstsqCV, a shard of
        arrays (refused as it is loaded, before any shard is factorised).
    """
    if not isinstance(estimator, (TensorMapLstsq, TensorMapBayesianRidge, TensorMapLstsqCV)):
        raise TypeError(
            f"{_CALLER}: estimator must be a TensorMapLstsq, a TensorMapBayesianRidge or a "
            f"TensorMapLstsqCV, got {type(estimator).__name__}"
        )
    estimator._validate_params()
    if isinstance(estimator, TensorMapLstsq) and estimator.driver is not None:
        raise ValueError(
            f"{_CALLER}: the shards' factors are solved directly, which needs driver=None, "
            f"got driver={estimator.driver!r}"
        )
    shards = list(shards)
    if not shards:
        raise ValueError(f"{_CALLER}: shards is empty; give at least one shard")
    for index, shard in enumerate(shards):
        if not (callable(shard) or _is_delayed(shard)):
            raise TypeError(
                f"{_CALLER}: shard {index} must be a zero-argument callable or a dask.delayed "
                f"object, got {type(shard).__name__}"
            )
    client = client if client is not None else _default_client()
    if isinstance(estimator, TensorMapLstsqCV):
        return _cross_validate_shards(estimator, shards, client, groups)
    if client is None:
        result = None
        for index, shard in enumerate(shards):
            current = _load_and_factor(estimator, index, shard)  # one shard held at a time
            result = current if result is None else _merge(result, current)
    else:
        result = _reduce_on_cluster(client, estimator, shards)
    state = result[1].restored()  # solved where fit solves: the data's library and device
    factors = [record.factor for record in state.records.values()]
    if factors and not any(factor.weighted_rows for factor in factors):
        raise ValueError(
            f"{_CALLER}: every sample weight of every shard is zero, so there is nothing to "
            "fit; give at least one row a positive weight"
        )
    for stale in ("coef_", "n_features_in_", "feature_names_in_"):
        estimator.__dict__.pop(stale, None)
    if state.y_ndim is not None:
        n_features = next(iter(state.records.values())).factor.n_features
        estimator.n_features_in_ = n_features
    estimator._torch_maps = state.torch_maps
    if isinstance(estimator, TensorMapLstsq):
        # every shard is in: a penalty for a key that no shard has is refused, as by fit
        estimator._solve_factors(state, _CALLER, allow_unseen=False)
    else:
        estimator._solve_factors(state, _CALLER)
    return estimator


def _reduce_on_cluster(client, estimator, shards):
    """Factor every shard on the workers; merge the factors pairwise there."""
    params = clone(estimator)
    futures = []
    for index, shard in enumerate(shards):
        if _is_delayed(shard):
            data = client.compute(shard)
            futures.append(client.submit(_shard_state_indexed, params, index, data, pure=False))
        else:
            futures.append(client.submit(_load_and_factor, params, index, shard, pure=False))
    while len(futures) > 1:
        merged = [
            client.submit(_merge, futures[i], futures[i + 1], pure=False)
            for i in range(0, len(futures) - 1, 2)
        ]
        if len(futures) % 2:
            merged.append(futures[-1])
        futures = merged
    return futures[0].result()


def _shard_state_indexed(estimator, index, data, tensors_only=False):
    return [index], _shard_state(estimator, index, data, tensors_only)


# ---------------------------------------------------------------------------------
# cross-validation over shards
# ---------------------------------------------------------------------------------


def _factor_estimator(search):
    """The TensorMapLstsq whose factors a TensorMapLstsqCV's shards are made of."""
    return TensorMapLstsq(
        fit_intercept=search.fit_intercept,
        gradient_weights=search.gradient_weights,
        device=search.device,
    )


def _split_solutions(merged, candidates):
    """For each block of a merged ``(index, state)``, the Solution of every candidate."""
    _, state = merged
    solutions = {}
    for key, record in state.records.items():
        factorization = SVDFactorization(record.factor)
        shared, block = {}, []
        for rcond, alpha in candidates:
            shared_key = (factorization.rank(rcond), alpha)
            if shared_key not in shared:
                shared[shared_key] = factorization.solve(rcond, alpha)
            block.append(shared[shared_key])
        solutions[key] = block
    return solutions


def _shard_score_sums(estimator, index, shard, solutions, gradient, statistic):
    """Load a test shard again; the ScoreSums of each of its blocks, for every candidate."""
    data = shard.compute() if _is_delayed(shard) else (shard() if callable(shard) else shard)
    X, y, *weights = data
    sample_weight = weights[0] if weights else None
    caller = f"{_CALLER}: shard {index}"
    _check_not_arrays(X, y, index)  # a loader that gave TensorMaps the first time may not
    y_given = y
    X, y = unwrap(X)[0], unwrap(y)[0]
    row_weight = row_weights(sample_weight, y_given, caller)
    device = resolve_device(estimator.device, caller)
    sums = {}
    for (key, x_block), y_block in zip(X.items(), blocks_in_order(y, X.keys)):
        key = key_tuple(key)
        if key not in solutions:
            continue  # a block no training shard has: it is not scored
        parameters = gradient_parameters(x_block)
        part = 0 if gradient is None else 1 + parameters.index(gradient)
        # scored where fit scores: on the estimator's device, else where the data is
        a_test = convert(row_parts(x_block, parameters)[part], device=device)
        b_test = convert(row_parts(y_block, parameters)[part], device=device)
        weights = None if row_weight is None else row_weight[key][part]
        candidates = _solutions_on(solutions[key], device_of(a_test))
        sums[key] = score_sums(a_test, b_test, weights, candidates, part == 0, statistic)
    return sums


def _solutions_on(solutions, device):
    """numpy ``solutions`` as torch tensors on ``device`` (None: as they are); a
    solution that several candidates share stays shared."""
    if device is None:
        return solutions
    placed = {}
    for solution in solutions:
        if id(solution) not in placed:
            intercept = solution.intercept
            placed[id(solution)] = replace(
                solution,
                weights=convert(solution.weights, device=device),
                intercept=None if intercept is None else convert(intercept, device=device),
            )
    return [placed[id(solution)] for solution in solutions]


def _cross_validate_shards(search, shards, client, groups):
    caller = _CALLER
    candidates = [
        (rcond, alpha)
        for alpha in _check_alphas(search.alphas, caller)
        for rcond in _check_rconds(search.rconds, caller)
    ]
    metric, gradient, custom = _resolve_scoring(search.scoring)
    if custom is not None:
        raise ValueError(
            f"{caller}: cross-validation over shards scores with the metrics of "
            f"skmetalstsq.metrics (a name or metrics.scorer), got {search.scoring!r}"
        )
    if isinstance(search.cv, str):  # "loo"
        raise ValueError(
            f"{caller}: cv='loo' leaves out entries of one IndexedTensorMap; over shards, "
            "leave one shard out with cv=sklearn.model_selection.LeaveOneOut()"
        )
    statistic = _STATISTICS[metric]
    groups = check_groups(groups, len(shards), "shards", caller)
    splits = list(check_cv(search.cv).split(np.zeros((len(shards), 1)), None, groups))
    splits = check_splits(splits, len(shards), "shards", caller)
    factorer = _factor_estimator(search)
    run = _LocalRun(factorer, shards) if client is None else _ClusterRun(client, factorer, shards)
    everything = run.merged(range(len(shards)))
    state = run.result(everything)[1].restored()
    keys = list(state.records)
    split_sums = []
    fit_seconds = np.zeros((len(splits), len(candidates)))
    score_seconds = np.zeros((len(splits), len(candidates)))
    for s, (train, test) in enumerate(splits):
        # as the caller sees them: the split's merge, decompositions and solves, in
        # full for every candidate; its scoring, shared equally between them
        start = time.perf_counter()
        solutions = run.solutions(run.merged(train), candidates)
        fit_seconds[s] = time.perf_counter() - start
        start = time.perf_counter()
        split_sums.append(run.score(test, solutions, gradient, statistic))
        score_seconds[s] = (time.perf_counter() - start) / len(candidates)
    losses = np.zeros((len(splits), len(keys), len(candidates)))
    totals = np.zeros((len(splits), len(keys)))
    counts = np.zeros((len(splits), len(keys)))
    for s, per_shard in enumerate(split_sums):
        for b, key in enumerate(keys):
            combined = None
            for sums in per_shard:
                if key in sums:
                    combined = sums[key] if combined is None else combined.combine(sums[key])
            if combined is not None:
                losses[s, b] = combined.losses
                totals[s, b] = float(combined.m2.sum())
                counts[s, b] = combined.weight_sum * len(combined.mean)
    results = (losses, totals, counts)
    search.block_names_ = {
        key: ",".join(f"{n}={int(v)}" for n, v in zip(state.key_names, key)) for key in keys
    }
    pooled = _scores(metric, losses.sum(1), totals.sum(1)[:, None], counts.sum(1)[:, None])
    search.cv_results_ = _search_results(
        candidates, {"score": pooled}, times=(fit_seconds, score_seconds)
    )
    search.n_splits_ = len(splits)
    choice = search._choose(candidates, keys, metric, results)
    start = time.perf_counter()
    solutions = []
    for key, index in zip(keys, choice):
        record = state.records[key]
        rcond, alpha = candidates[index]
        if rcond is None:
            rcond = default_rcond(record.factor.n_rows, record.factor.n_features)
        solutions.append(factor_solution(record.factor, rcond, alpha).cast(record.dtype))
    for stale in ("coef_", "n_features_in_", "feature_names_in_"):
        search.__dict__.pop(stale, None)
    search._torch_maps = state.torch_maps
    labels = Labels(state.key_names, np.array(keys, dtype=np.int32).reshape(len(keys), -1))
    layouts = [(state.records[k].layout.targets, state.records[k].layout.features) for k in keys]
    search._set_blocks(labels, layouts, solutions, state.y_ndim)
    search.refit_time_ = time.perf_counter() - start
    return search


class _LocalRun:
    """Cross-validation over shards in this process: factors kept, shards loaded twice."""

    def __init__(self, estimator, shards):
        self.estimator, self.shards = estimator, shards
        self.states = []
        for index, shard in enumerate(shards):
            self.states.append(_load_and_factor(estimator, index, shard, tensors_only=True))

    def merged(self, indices):
        result = None
        for i in indices:
            result = self.states[i] if result is None else _merge(result, self.states[i])
        return result

    def result(self, merged):
        return merged

    def solutions(self, merged, candidates):
        return _split_solutions(merged, candidates)

    def score(self, test, solutions, gradient, statistic):
        return [
            _shard_score_sums(self.estimator, i, self.shards[i], solutions, gradient, statistic)
            for i in test
        ]


class _ClusterRun:
    """Cross-validation over shards on a Dask cluster: factors stay on the workers."""

    def __init__(self, client, estimator, shards):
        self.client, self.estimator, self.shards = client, estimator, shards
        self.states = []
        for index, shard in enumerate(shards):
            if _is_delayed(shard):
                function, source = _shard_state_indexed, client.compute(shard)
            else:
                function, source = _load_and_factor, shard
            future = client.submit(
                function, estimator, index, source, tensors_only=True, pure=False
            )
            self.states.append(future)

    def merged(self, indices):
        futures = [self.states[i] for i in indices]
        while len(futures) > 1:
            merged = [
                self.client.submit(_merge, futures[i], futures[i + 1], pure=False)
                for i in range(0, len(futures) - 1, 2)
            ]
            if len(futures) % 2:
                merged.append(futures[-1])
            futures = merged
        return futures[0]

    def result(self, merged):
        return merged.result()

    def solutions(self, merged, candidates):
        """The future of the split's solutions, once they are computed (they stay on
        the cluster; the scoring tasks wait for them in any case)."""
        from distributed import wait

        solutions = self.client.submit(_split_solutions, merged, candidates, pure=False)
        with self.client.as_current():  # wait asks the current client
            wait(solutions)
        return solutions

    def score(self, test, solutions, gradient, statistic):
        futures = [
            self.client.submit(
                _shard_score_sums,
                self.estimator,
                i,
                self.shards[i],
                solutions,
                gradient,
                statistic,
                pure=False,
            )
            for i in test
        ]
        return self.client.gather(futures)
