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

from sklearn.base import clone

from ._estimator import TensorMapLstsq, merge_partial_states

__all__ = ["fit_shards"]

_CALLER = "fit_shards"


def _shard_state(estimator, index, data):
    """The numpy :class:`PartialState` of one shard's ``(X, y[, sample_weight])``."""
    if not isinstance(data, tuple) or len(data) not in (2, 3):
        raise TypeError(
            f"{_CALLER}: shard {index} must give (X, y) or (X, y, sample_weight), got "
            f"{type(data).__name__}"
            + (f" of length {len(data)}" if isinstance(data, tuple) else "")
        )
    X, y, *weights = data
    sample_weight = weights[0] if weights else None
    return (
        clone(estimator)._factor_batch(X, y, sample_weight, f"{_CALLER}: shard {index}").to_numpy()
    )


def _load_and_factor(estimator, index, shard):
    data = shard() if callable(shard) else shard
    return index, _shard_state(estimator, index, data)


def _merge(left, right):
    """Merge two ``(first shard index, state)`` results; messages name the shards."""
    (i, left_state), (j, right_state) = left, right
    names = (f"shard {i}" if i == j else f"shards up to {i}", f"shard {j}")
    return i, merge_partial_states(left_state, right_state, _CALLER, names=names)


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


def fit_shards(estimator, shards, client=None):
    """Fit ``estimator`` on shards that are each loaded where they are factorised.

    Parameters
    ----------
    estimator : TensorMapLstsq
        With ``driver=None`` (the factors are solved directly). Its weights,
        penalty, intercept and device apply as in :meth:`TensorMapLstsq.fit`.
    shards : iterable
        Zero-argument callables or ``dask.delayed`` objects, each returning
        ``(X, y)`` or ``(X, y, sample_weight)`` of one shard (TensorMaps,
        IndexedTensorMaps or arrays, as ``fit`` takes them). On a cluster the
        callables are sent to the workers: they must be importable there.
    client : dask.distributed.Client or None, default=None
        Where to load and factorise the shards; None uses the default client
        when one exists, otherwise this process, one shard after the other.

    Returns
    -------
    estimator : TensorMapLstsq
        The same object, fitted: its attributes equal those of ``fit`` on all
        shards joined (to rounding), and ``factors_`` holds the merged factors,
        so that ``partial_fit`` can add more rows.

    Raises
    ------
    ValueError, TypeError
        For shards whose layouts disagree (naming the shards and the block), or
        a shard that does not give ``(X, y[, sample_weight])``.
    """
    if not isinstance(estimator, TensorMapLstsq) or type(estimator).fit is not TensorMapLstsq.fit:
        raise TypeError(
            f"{_CALLER}: estimator must be a TensorMapLstsq, got {type(estimator).__name__}"
        )
    estimator._validate_params()
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
    if client is None:
        result = None
        for index, shard in enumerate(shards):
            data = shard.compute() if _is_delayed(shard) else shard()
            current = (index, _shard_state(estimator, index, data))
            result = current if result is None else _merge(result, current)
    else:
        result = _reduce_on_cluster(client, estimator, shards)
    _, state = result
    for stale in ("coef_", "n_features_in_", "feature_names_in_"):
        estimator.__dict__.pop(stale, None)
    if state.y_ndim is not None:
        n_features = next(iter(state.records.values())).factor.n_features
        estimator.n_features_in_ = n_features
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


def _shard_state_indexed(estimator, index, data):
    return index, _shard_state(estimator, index, data)
