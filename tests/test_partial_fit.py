"""TensorMapLstsq.partial_fit over batches against scipy and metatensor on all rows joined.

Batches come from IndexedTensorMap slices, plain arrays, one ``.mts`` file per shard
and metatensor-learn's ``Dataset`` / ``DataLoader``. Every result is compared with an
independent computation on the joined rows: ``scipy.linalg.lstsq`` on the stacked,
weighted (and penalty-augmented) arrays, ``numpy.linalg.lstsq`` for the default
``rcond``, ``metatensor.lstsq`` on the joined map, or scikit-learn's ``Ridge``.
"""

import functools
import pickle
import re

import metatensor
import numpy as np
import pytest
import scipy.linalg
from builders import as_dtype, example_pair, make_rank_deficient, stacked, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge

import skmetalstsq._estimator
from skmetalstsq import IndexedTensorMap, TensorMapLstsq

RTOL = 1e-10
#: uneven runs of systems: one batch of one system, one of most of them
BATCHES = [slice(0, 3), slice(3, 4), slice(4, 10), slice(10, 12)]


# ---------------------------------------------------------------------------------
# the independent reference: scipy on the stacked rows of the joined data
# ---------------------------------------------------------------------------------


def reference(
    X,
    y,
    row_weights=None,
    alpha=0.0,
    fit_intercept=False,
    gradient_weights=None,
    rcond=1e-12,
):
    """``{key tuple: (weights (targets, features), intercept (targets,), rank)}``.

    Each block's values and gradients are stacked (``builders.stacked``, gradients
    in sorted order), every row is scaled by the square root of its weight (from
    ``row_weights``, a TensorMap laid out as y with one property, times
    ``gradient_weights``), an intercept column (1 on value rows, 0 on gradient rows)
    is put in front with ``fit_intercept``, and ``sqrt(alpha)`` rows are appended
    (``alpha``: a float, or ``{key tuple: float or per-feature array}``) without
    penalising the intercept; then ``scipy.linalg.lstsq(..., "gelsd")``.
    """
    gradient_weights = gradient_weights or {}
    result = {}
    for key, x_block in X.items():
        key = tuple(int(v) for v in key.values)
        y_block = y.block(y.keys.position(key))
        parameters = sorted(x_block.gradients_list())
        a, b = stacked(x_block, parameters), stacked(y_block, parameters)
        n_features = a.shape[1]
        n_values = x_block.values.reshape(-1, n_features).shape[0]
        if row_weights is None:
            w = np.ones(a.shape[0])
        else:
            w = stacked(row_weights.block(row_weights.keys.position(key)), parameters)[:, 0]
            w = w.copy()
        start = n_values
        for parameter in parameters:
            n_rows = x_block.gradient(parameter).values.reshape(-1, n_features).shape[0]
            w[start : start + n_rows] *= gradient_weights.get(parameter, 1.0)
            start += n_rows
        if fit_intercept:
            ones = np.zeros((a.shape[0], 1))
            ones[:n_values] = 1.0
            a = np.hstack([ones, a])
        scale = np.sqrt(w)[:, None]
        a, b = a * scale, b * scale
        penalty = alpha[key] if isinstance(alpha, dict) else alpha
        penalty = np.broadcast_to(np.asarray(penalty, dtype=np.float64), (n_features,))
        if np.any(penalty > 0):
            rows = np.diag(np.sqrt(penalty))
            if fit_intercept:
                rows = np.hstack([np.zeros((n_features, 1)), rows])
            a = np.vstack([a, rows])
            b = np.vstack([b, np.zeros((n_features, b.shape[1]))])
        solution, _, rank, _ = scipy.linalg.lstsq(a, b, cond=rcond, lapack_driver="gelsd")
        if fit_intercept:
            # the rank of the centred block: the intercept's column is not counted
            intercept, solution, rank = solution[0], solution[1:], rank - 1
        else:
            intercept = np.zeros(b.shape[1])
        result[key] = (solution.T, intercept, rank)
    return result


def assert_matches(model, expected, rtol=RTOL, atol=1e-12, check_rank=True):
    """The fitted weights, intercepts (and ranks) are those of ``expected``."""
    assert sorted(model.rank_) == sorted(expected)
    for key, (weights, intercept, rank) in expected.items():
        position = model.weights_.keys.position(key)
        np.testing.assert_allclose(
            np.asarray(model.weights_.block(position).values), weights, rtol=rtol, atol=atol
        )
        np.testing.assert_allclose(
            np.asarray(model.intercept_.block(position).values)[:, 0],
            intercept,
            rtol=rtol,
            atol=atol,
        )
        if check_rank:
            assert model.rank_[key] == rank


def entry_weight_map(y, sample, entries, weights):
    """Row weights laid out as ``y`` (one property) from one weight per entry of
    ``sample``: every row of a sample (its components, its gradient rows) weighs
    the weight of the sample's entry."""
    blocks = []
    for block in y.blocks():
        positions = np.searchsorted(entries, np.asarray(block.samples.column(sample)))
        per_sample = np.asarray(weights, dtype=np.float64)[positions]
        shape = (*block.values.shape[:-1], 1)
        values = np.broadcast_to(per_sample.reshape(-1, *[1] * (len(shape) - 1)), shape)
        new = TensorBlock(
            np.ascontiguousarray(values), block.samples, block.components, Labels.range("w", 1)
        )
        for parameter, gradient in block.gradients():
            owner = per_sample[np.asarray(gradient.samples.column("sample"))]
            g_shape = (*gradient.values.shape[:-1], 1)
            g_values = np.broadcast_to(owner.reshape(-1, *[1] * (len(g_shape) - 1)), g_shape)
            new.add_gradient(
                parameter,
                TensorBlock(
                    np.ascontiguousarray(g_values),
                    gradient.samples,
                    gradient.components,
                    new.properties,
                ),
            )
        blocks.append(new)
    return TensorMap(y.keys, blocks)


def random_row_weights(y, rng):
    """A weight in (0.5, 2) for every row of ``y`` (values and gradients), as a TensorMap."""
    blocks = []
    for block in y.blocks():
        new = TensorBlock(
            rng.uniform(0.5, 2.0, size=(*block.values.shape[:-1], 1)),
            block.samples,
            block.components,
            Labels.range("w", 1),
        )
        for parameter, gradient in block.gradients():
            new.add_gradient(
                parameter,
                TensorBlock(
                    rng.uniform(0.5, 2.0, size=(*gradient.values.shape[:-1], 1)),
                    gradient.samples,
                    gradient.components,
                    new.properties,
                ),
            )
        blocks.append(new)
    return TensorMap(y.keys, blocks)


def drop_empty(tensor):
    """``tensor`` without its blocks of no samples (keys absent from a batch)."""
    kept = [i for i, block in enumerate(tensor.blocks()) if len(block.samples)]
    keys = Labels(tensor.keys.names, np.asarray(tensor.keys.values)[kept].reshape(len(kept), -1))
    return TensorMap(keys, [tensor.block(i).copy() for i in kept])


def late_key_pair(seed=0):
    """(X, y) of 12 systems where key (3,) only has systems 8 to 11."""
    X, y = example_pair(seed, n_systems=12)
    selection = Labels(["system"], np.arange(8, 12, dtype=np.int32).reshape(-1, 1))
    tensors = []
    for tensor in (X, y):
        blocks = []
        for key, block in tensor.items():
            if int(key.values[0]) == 3:
                block = metatensor.slice_block(block, "samples", selection)
            blocks.append(block.copy())
        tensors.append(TensorMap(tensor.keys, blocks))
    return tuple(tensors)


def snapshot(tensor):
    """Every array of a TensorMap, copied (to check that inputs are not written to)."""
    arrays = []
    for block in tensor.blocks():
        arrays.append(np.array(block.values, copy=True))
        arrays.extend(np.array(g.values, copy=True) for _, g in block.gradients())
    return arrays


def assert_unchanged(tensor, arrays):
    current = snapshot(tensor)
    assert len(current) == len(arrays)
    for now, before in zip(current, arrays):
        np.testing.assert_array_equal(now, before)


@pytest.fixture(scope="module")
def pair():
    """(X, y): three keys (y's in another order), components, two gradients, 12 systems."""
    return example_pair(3, n_systems=12)


# ---------------------------------------------------------------------------------
# batches of IndexedTensorMap slices
# ---------------------------------------------------------------------------------

OPTIONS = {
    "plain": {},
    "alpha": {"alpha": 0.7},
    "intercept": {"fit_intercept": True},
    "gradient_weights": {"gradient_weights": {"positions": 0.05, "cell": 3.0}},
    "everything": {
        "alpha": 0.3,
        "fit_intercept": True,
        "gradient_weights": {"positions": 0.2},
    },
}


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "sample_weight"])
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
def test_indexed_slices_equal_a_fit_on_every_row(pair, options, weighted):
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    weights = np.random.default_rng(4).uniform(0.5, 2.0, size=len(Xi)) if weighted else None
    x_arrays, y_arrays = snapshot(X), snapshot(y)
    model = TensorMapLstsq(rcond=1e-12, **options)
    for batch in BATCHES:
        sample_weight = None if weights is None else weights[batch]
        assert model.partial_fit(Xi[batch], yi[batch], sample_weight=sample_weight) is model
    row_weights = None if weights is None else entry_weight_map(y, "system", Xi.entries, weights)
    expected = reference(X, y, row_weights, **options)
    assert_matches(model, expected, check_rank="alpha" not in options)
    assert_unchanged(X, x_arrays)
    assert_unchanged(y, y_arrays)
    # every row of every batch went into the factors
    for key, x_block in X.items():
        record = model.factors_[tuple(int(v) for v in key.values)]
        assert record.factor.n_rows == stacked(x_block).shape[0]


def test_a_batch_after_another_gives_the_fit_of_the_rows_so_far(pair):
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12)
    for start, stop in ((0, 3), (3, 7), (7, 12)):
        model.partial_fit(Xi[start:stop], yi[start:stop])
        assert_matches(model, reference(Xi[:stop].tensor, yi[:stop].tensor))


def test_per_key_and_per_property_alpha(pair):
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    keys = [tuple(int(v) for v in key.values) for key in X.keys]
    by_key = {key: 0.1 * (i + 1) for i, key in enumerate(keys)}
    per_property = {key: np.linspace(0.1, 2.0, 5) * (i + 1) for i, key in enumerate(keys)}
    alpha_map = TensorMap(
        X.keys,
        [
            TensorBlock(
                per_property[key][None, :],
                Labels.range("sample", 1),
                [],
                X.block(X.keys.position(key)).properties,
            )
            for key in keys
        ],
    )
    for alpha, expected_alpha in ((by_key, by_key), (alpha_map, per_property)):
        model = TensorMapLstsq(rcond=1e-12, alpha=alpha, fit_intercept=True)
        for batch in BATCHES:
            model.partial_fit(Xi[batch], yi[batch])
        expected = reference(X, y, alpha=expected_alpha, fit_intercept=True)
        assert_matches(model, expected, check_rank=False)


@pytest.mark.parametrize("rcond", [None, 1e-10])
def test_rank_deficient_batches_keep_the_rank_and_the_minimum_norm_solution(pair, rcond):
    X, y = pair
    X = make_rank_deficient(X)
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=rcond)
    for batch in BATCHES:
        model.partial_fit(Xi[batch], yi[batch])
    for key, x_block in X.items():
        key_values = tuple(int(v) for v in key.values)
        a = stacked(x_block, sorted(x_block.gradients_list()))
        b = stacked(y.block(y.keys.position(key)), sorted(x_block.gradients_list()))
        # numpy's default cut-off is the documented one for rcond=None
        expected, _, rank, singular = np.linalg.lstsq(a, b, rcond=rcond)
        assert rank == a.shape[1] - 2
        assert model.rank_[key_values] == rank
        position = model.weights_.keys.position(key)
        np.testing.assert_allclose(
            model.weights_.block(position).values, expected.T, rtol=1e-8, atol=1e-10
        )
        np.testing.assert_allclose(
            model.singular_values_[key_values][:rank], singular[:rank], rtol=1e-10
        )


def test_keys_first_seen_in_a_later_batch():
    X, y = late_key_pair()
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12, fit_intercept=True)
    seen = []
    for batch in (slice(0, 5), slice(5, 8), slice(8, 12)):
        bx, by = drop_empty(Xi[batch].tensor), drop_empty(yi[batch].tensor)
        seen.append(sorted(int(k.values[0]) for k in bx.keys))
        model.partial_fit(bx, by)
    assert seen == [[0, 1], [0, 1], [0, 1, 3]]
    assert_matches(model, reference(X, y, fit_intercept=True))
    # predictions of the joined data, every key included, use the weights of all rows
    prediction = model.predict(X)
    expected = reference(X, y, fit_intercept=True)
    for key, block in X.items():
        weights, intercept, _ = expected[tuple(int(v) for v in key.values)]
        np.testing.assert_allclose(
            prediction.block(key).values, block.values @ weights.T + intercept, rtol=1e-9
        )


def test_an_empty_block_in_a_batch_adds_no_rows():
    X, y = late_key_pair(1)
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12)
    # the first batch has key (3,) with no samples
    model.partial_fit(Xi[0:8], yi[0:8])
    model.partial_fit(Xi[8:12], yi[8:12])
    assert_matches(model, reference(X, y))


# ---------------------------------------------------------------------------------
# batches of arrays
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("y_shape", [(), (3,)], ids=["1-D y", "2-D y"])
@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_array_batches_equal_ridge_on_every_row(y_shape, alpha):
    rng = np.random.default_rng(5)
    A = rng.normal(size=(90, 6))
    b = A @ rng.normal(size=(6, *y_shape)) + 0.1 * rng.normal(size=(90, *y_shape)) + 2.0
    weights = rng.uniform(0.5, 2.0, size=90)
    model = TensorMapLstsq(rcond=1e-12, alpha=alpha, fit_intercept=True)
    for rows in np.array_split(np.arange(90), 4):
        model.partial_fit(A[rows], b[rows], sample_weight=weights[rows])
    ridge = Ridge(alpha=alpha, fit_intercept=True, solver="svd").fit(A, b, sample_weight=weights)
    assert model.n_features_in_ == 6
    assert model.coef_.shape == ridge.coef_.shape
    np.testing.assert_allclose(model.coef_, ridge.coef_, rtol=1e-9)
    np.testing.assert_allclose(model.intercept_, ridge.intercept_, rtol=1e-9)
    np.testing.assert_allclose(model.predict(A), ridge.predict(A), rtol=1e-9)
    # scikit-learn's types: numpy.float64 for a 1-D y, an array for a 2-D y
    assert type(model.intercept_) is type(ridge.intercept_)
    assert np.shape(model.intercept_) == np.shape(ridge.intercept_)


def test_array_batches_equal_scipy_lstsq():
    rng = np.random.default_rng(6)
    A = rng.normal(size=(50, 4))
    b = rng.normal(size=(50, 2))
    model = TensorMapLstsq(rcond=1e-12)
    for rows in (slice(0, 2), slice(2, 30), slice(30, 50)):
        model.partial_fit(A[rows], b[rows])
    expected = scipy.linalg.lstsq(A, b, cond=1e-12, lapack_driver="gelsd")[0]
    np.testing.assert_allclose(model.coef_, expected.T, rtol=RTOL)


# ---------------------------------------------------------------------------------
# batch sources: .mts files, metatensor-learn's DataLoader
# ---------------------------------------------------------------------------------


def test_one_mts_file_per_shard_equals_metatensor_lstsq_on_the_joined_map(pair, tmp_path):
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    paths = []
    for i, batch in enumerate(BATCHES):
        paths.append((tmp_path / f"x_{i}.mts", tmp_path / f"y_{i}.mts"))
        metatensor.save(paths[-1][0], Xi[batch].tensor)
        metatensor.save(paths[-1][1], yi[batch].tensor)
    model = TensorMapLstsq(rcond=1e-12)
    loaded = []
    for x_path, y_path in paths:
        bx, by = metatensor.load(x_path), metatensor.load(y_path)
        loaded.append((bx, by))
        model.partial_fit(bx, by)
    joined_x = metatensor.join([bx for bx, _ in loaded], axis="samples")
    joined_y = metatensor.join([by for _, by in loaded], axis="samples")
    expected = metatensor.lstsq(joined_x, joined_y, rcond=1e-12)
    for key, block in expected.items():
        np.testing.assert_allclose(
            model.weights_.block(key).values, block.values, rtol=RTOL, atol=1e-12
        )
    assert_matches(model, reference(X, y))


def test_mts_shards_with_row_weights_tensor_maps(pair, tmp_path):
    X, y = pair
    W = random_row_weights(y, np.random.default_rng(7))
    Xi, yi, Wi = IndexedTensorMap(X), IndexedTensorMap(y), IndexedTensorMap(W)
    model = TensorMapLstsq(rcond=1e-12, fit_intercept=True, gradient_weights={"cell": 0.5})
    for i, batch in enumerate(BATCHES):
        for name, tensor in (("x", Xi), ("y", yi), ("w", Wi)):
            metatensor.save(tmp_path / f"{name}_{i}.mts", tensor[batch].tensor)
    for i in range(len(BATCHES)):
        bx, by, bw = (metatensor.load(tmp_path / f"{n}_{i}.mts") for n in ("x", "y", "w"))
        model.partial_fit(bx, by, sample_weight=bw)
    expected = reference(X, y, W, fit_intercept=True, gradient_weights={"cell": 0.5})
    assert_matches(model, expected)


def per_system_maps(tensor):
    """One TensorMap per system, without the blocks where that system has no sample."""
    indexed = IndexedTensorMap(tensor)
    return [drop_empty(indexed[[i]].tensor) for i in range(len(indexed))]


@pytest.mark.parametrize("shuffle", [False, True])
def test_metatensor_learn_data_loader_batches(pair, shuffle):
    torch = pytest.importorskip("torch")
    learn = pytest.importorskip("metatensor.learn")
    X, y = pair
    dataset = learn.Dataset(X=per_system_maps(X), y=per_system_maps(y))
    loader = learn.DataLoader(
        dataset, batch_size=5, shuffle=shuffle, generator=torch.Generator().manual_seed(0)
    )
    model = TensorMapLstsq(rcond=1e-12, fit_intercept=True)
    n_batches = 0
    for batch in loader:
        # group_and_join joins the maps of the batch along samples: numpy TensorMaps
        assert isinstance(batch.X, TensorMap)
        model.partial_fit(batch.X, batch.y)
        n_batches += 1
    assert n_batches == 3
    assert_matches(model, reference(X, y, fit_intercept=True))


def test_data_loader_with_keys_missing_from_some_systems():
    pytest.importorskip("torch")
    learn = pytest.importorskip("metatensor.learn")
    from metatensor.learn.data import group_and_join

    X, y = late_key_pair(2)
    dataset = learn.Dataset(X=per_system_maps(X), y=per_system_maps(y))
    # systems without key (3,) have no such block: join the union of the keys
    collate = functools.partial(group_and_join, join_kwargs={"different_keys": "union"})
    loader = learn.DataLoader(dataset, batch_size=4, collate_fn=collate)
    model = TensorMapLstsq(rcond=1e-12)
    keys_per_batch = []
    for batch in loader:
        keys_per_batch.append(len(batch.X.keys))
        model.partial_fit(batch.X, batch.y)
    assert keys_per_batch == [2, 2, 3]
    assert_matches(model, reference(X, y))


# ---------------------------------------------------------------------------------
# torch batches and dtypes
# ---------------------------------------------------------------------------------


def test_torch_batches_equal_the_numpy_reference(pair):
    torch = pytest.importorskip("torch")
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12, alpha=0.2)
    for batch in BATCHES:
        model.partial_fit(to_torch(Xi[batch].tensor), to_torch(yi[batch].tensor))
    assert isinstance(model.weights_.block(0).values, torch.Tensor)
    expected = reference(X, y, alpha=0.2)
    for key, (weights, _, _) in expected.items():
        block = model.weights_.block(model.weights_.keys.position(key))
        np.testing.assert_allclose(block.values.numpy(), weights, rtol=RTOL, atol=1e-12)


def test_numpy_then_torch_batches_fit_or_fail_clearly(pair):
    pytest.importorskip("torch")
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12).partial_fit(Xi[0:6], yi[0:6])
    try:
        model.partial_fit(to_torch(Xi[6:12].tensor), to_torch(yi[6:12].tensor))
    except (TypeError, ValueError) as error:
        # a clear error names the method (not an array library's own message)
        assert str(error).startswith("TensorMapLstsq.partial_fit: "), str(error)
    else:
        expected = reference(X, y)
        for key, (weights, _, _) in expected.items():
            block = model.weights_.block(model.weights_.keys.position(key))
            np.testing.assert_allclose(np.asarray(block.values), weights, rtol=RTOL)


def test_float32_batches_give_float32_weights(pair):
    X, y = pair
    Xi, yi = IndexedTensorMap(as_dtype(X, np.float32)), IndexedTensorMap(as_dtype(y, np.float32))
    model = TensorMapLstsq(rcond=1e-6)
    for batch in BATCHES:
        model.partial_fit(Xi[batch], yi[batch])
    assert model.weights_.block(0).values.dtype == np.float32
    # factorised in float64: only the float32 inputs' rounding is left
    expected = reference(Xi.tensor, yi.tensor, rcond=1e-6)
    assert_matches(model, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------
# starting over, pickling
# ---------------------------------------------------------------------------------


def test_fit_after_partial_fit_starts_over(pair):
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12)
    model.partial_fit(Xi[0:4], yi[0:4]).partial_fit(Xi[4:8], yi[4:8])
    model.fit(Xi[8:12], yi[8:12])
    assert_matches(model, reference(Xi[8:12].tensor, yi[8:12].tensor))
    # no factor of the earlier batches is left to be continued from
    assert not hasattr(model, "factors_")


def test_arrays_fit_after_tensor_partial_fits_starts_over(pair):
    X, y = pair
    rng = np.random.default_rng(8)
    A, b = rng.normal(size=(30, 3)), rng.normal(size=30)
    model = TensorMapLstsq(rcond=1e-12).partial_fit(X, y)
    model.fit(A, b)
    expected = scipy.linalg.lstsq(A, b, cond=1e-12)[0]
    np.testing.assert_allclose(model.coef_, expected, rtol=RTOL)
    np.testing.assert_allclose(model.predict(A), A @ expected, rtol=RTOL)


AFTER_FIT = (
    r"TensorMapLstsq\.partial_fit: this estimator was fitted by fit, which does not keep "
    r"the factors of its rows, so partial_fit cannot add to them \(and would forget them\); "
    r"call partial_fit on every batch from the start, fit on all the data at once, or call "
    r"partial_fit on a new estimator, sklearn\.base\.clone\(estimator\)"
)


def test_partial_fit_after_fit_is_refused_and_changes_nothing(pair):
    # fit keeps no factors: a partial_fit after it would silently forget fit's rows
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12).fit(Xi[0:8], yi[0:8])
    with pytest.raises(ValueError, match=AFTER_FIT):
        model.partial_fit(Xi[8:12], yi[8:12])
    assert_matches(model, reference(Xi[0:8].tensor, yi[0:8].tensor))
    assert not hasattr(model, "factors_")
    # each way out the message offers gives the fit of its rows
    model.fit(X, y)
    assert_matches(model, reference(X, y))
    restarted = clone(model)
    for batch in BATCHES:
        restarted.partial_fit(Xi[batch], yi[batch])
    assert_matches(restarted, reference(X, y))


def test_partial_fit_after_an_array_fit_is_refused_before_any_work(monkeypatch):
    rng = np.random.default_rng(15)
    A, b = rng.normal(size=(40, 3)), rng.normal(size=40)
    model = TensorMapLstsq(fit_intercept=True).fit(A[:20], b[:20])
    coef, intercept = model.coef_.copy(), model.intercept_
    monkeypatch.setattr(skmetalstsq._estimator, "factorize", _forbidden)
    with pytest.raises(ValueError, match=AFTER_FIT):
        model.partial_fit(A[20:], b[20:])
    np.testing.assert_array_equal(model.coef_, coef)
    assert model.intercept_ == intercept and model.n_features_in_ == 3
    monkeypatch.undo()
    # sklearn's LinearRegression on the rows of the fit, which the model still is
    expected = LinearRegression().fit(A[:20], b[:20])
    np.testing.assert_allclose(model.coef_, expected.coef_, rtol=1e-10)


def _forbidden(*args, **kwargs):
    raise AssertionError("a batch was factorised before the error was raised")


def _zero_weight_batches(pair):
    """The IndexedTensorMap slices of ``pair`` and weights: the first four systems
    weigh zero, the others in (0.5, 2)."""
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    weights = np.random.default_rng(16).uniform(0.5, 2.0, size=len(Xi))
    weights[:4] = 0.0
    return Xi, yi, weights


def test_a_first_batch_of_zero_weights_is_refused_as_fit_refuses(pair, monkeypatch):
    Xi, yi, weights = _zero_weight_batches(pair)
    message = (
        r"every sample weight is zero, so there is nothing to fit; give at least one row "
        r"a positive weight"
    )
    with pytest.raises(ValueError, match=r"TensorMapLstsq\.fit: " + message):
        TensorMapLstsq().fit(Xi[0:4], yi[0:4], sample_weight=weights[0:4])
    model = TensorMapLstsq()
    monkeypatch.setattr(skmetalstsq._estimator, "factorize", _forbidden)
    for sample_weight in (weights[0:4], 0.0, zero_weight_map(yi[0:4].tensor)):
        with pytest.raises(ValueError, match=r"TensorMapLstsq\.partial_fit: " + message):
            model.partial_fit(Xi[0:4], yi[0:4], sample_weight=sample_weight)
        assert not hasattr(model, "factors_") and not hasattr(model, "weights_")
    rng = np.random.default_rng(17)
    with pytest.raises(ValueError, match=r"TensorMapLstsq\.partial_fit: " + message):
        model.partial_fit(rng.normal(size=(5, 2)), rng.normal(size=5), sample_weight=np.zeros(5))


def test_a_batch_of_zero_weights_after_weighted_ones_changes_nothing(pair):
    # what fit allows: the rows seen so far do not all weigh zero
    X, y = pair
    Xi, yi, weights = _zero_weight_batches(pair)
    model = TensorMapLstsq(rcond=1e-12, fit_intercept=True)
    model.partial_fit(Xi[4:12], yi[4:12], sample_weight=weights[4:12])
    model.partial_fit(Xi[0:4], yi[0:4], sample_weight=weights[0:4])
    row_weights = entry_weight_map(y, "system", Xi.entries, weights)
    assert_matches(model, reference(X, y, row_weights, fit_intercept=True), check_rank=False)
    for key, x_block in X.items():  # the zero-weight rows were counted, and weigh nothing
        assert model.factors_[tuple(int(v) for v in key.values)].factor.n_rows == len(
            stacked(x_block)
        )


def zero_weight_map(y):
    """A TensorMap of weights laid out as ``y`` (one property), every one zero."""
    blocks = []
    for block in y.blocks():
        properties = Labels.range("weight", 1)
        zeros = np.zeros((*block.values.shape[:-1], 1))
        new = TensorBlock(zeros, block.samples, block.components, properties)
        for parameter, gradient in block.gradients():
            zeros = np.zeros((*gradient.values.shape[:-1], 1))
            new.add_gradient(
                parameter, TensorBlock(zeros, gradient.samples, gradient.components, properties)
            )
        blocks.append(new)
    return TensorMap(y.keys, blocks)


@pytest.mark.parametrize("y_shape", [(), (2,)], ids=["1-D y", "2-D y"])
def test_a_scalar_sample_weight_in_batches_equals_ridge(y_shape):
    # scikit-learn takes a number as the same weight on every sample; with a penalty
    # it is not the unweighted fit
    rng = np.random.default_rng(18)
    A = rng.normal(size=(60, 4))
    b = A @ rng.normal(size=(4, *y_shape)) + 0.1 * rng.normal(size=(60, *y_shape)) + 1.0
    model = TensorMapLstsq(alpha=2.0, fit_intercept=True)
    for rows in np.array_split(np.arange(60), 3):
        model.partial_fit(A[rows], b[rows], sample_weight=0.25)
    ridge = Ridge(alpha=2.0, solver="svd").fit(A, b, sample_weight=0.25)
    np.testing.assert_allclose(model.coef_, ridge.coef_, rtol=1e-9)
    np.testing.assert_allclose(model.intercept_, ridge.intercept_, rtol=1e-9)
    unweighted = Ridge(alpha=2.0, solver="svd").fit(A, b)
    assert not np.allclose(model.coef_, unweighted.coef_, rtol=1e-3)


def test_a_wrong_alpha_is_refused_before_the_batch_is_factorised(pair, monkeypatch):
    X, y = pair
    keys = [tuple(int(v) for v in key.values) for key in X.keys]
    n_features = len(X.block(0).properties)
    alpha = dict.fromkeys(keys, 0.1)
    alpha[keys[0]] = np.ones(n_features + 1)
    monkeypatch.setattr(skmetalstsq._estimator, "factorize", _forbidden)
    key_text = ", ".join(f"{n}={v}" for n, v in zip(X.keys.names, keys[0]))
    message = (
        f"TensorMapLstsq.partial_fit: alpha[{keys[0]}] must be a number or {n_features} "
        f"numbers, one per property of block ({key_text}) of X, got an array of shape "
        f"({n_features + 1},)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        TensorMapLstsq(alpha=alpha).partial_fit(X, y)
    with pytest.raises(
        ValueError,
        match=r"TensorMapLstsq\.partial_fit: gradient_weights\['positions'\] must be a "
        r"number, got an array of shape \(2,\)",
    ):
        TensorMapLstsq(gradient_weights={"positions": np.array([0.1, 0.2])}).partial_fit(X, y)


def test_pickled_mid_way_and_continued_gives_the_same_result(pair):
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12, fit_intercept=True, alpha=0.1)
    model.partial_fit(Xi[0:5], yi[0:5])
    restored = pickle.loads(pickle.dumps(model))
    for estimator in (model, restored):
        estimator.partial_fit(Xi[5:12], yi[5:12])
    expected = reference(X, y, alpha=0.1, fit_intercept=True)
    assert_matches(model, expected, check_rank=False)
    assert_matches(restored, expected, check_rank=False)
    for key in X.keys:
        np.testing.assert_array_equal(
            restored.weights_.block(key).values, model.weights_.block(key).values
        )


def test_pickled_array_model_continues(tmp_path):
    rng = np.random.default_rng(9)
    A, b = rng.normal(size=(40, 3)), rng.normal(size=40)
    model = TensorMapLstsq(rcond=1e-12).partial_fit(A[:20], b[:20])
    restored = pickle.loads(pickle.dumps(model))
    restored.partial_fit(A[20:], b[20:])
    np.testing.assert_allclose(restored.coef_, scipy.linalg.lstsq(A, b)[0], rtol=RTOL)
    with pytest.raises(ValueError, match="X has 2 features, but TensorMapLstsq is expecting 3"):
        restored.partial_fit(A[:5, :2], b[:5])


# ---------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------


def _other_layout(change):
    """A batch of 4 systems whose block (center_type=0) differs from ``example_pair``'s
    by ``change``, its other blocks as ``example_pair``'s."""
    options = {
        "features": {"n_features": 4},
        "targets": {"n_targets": 2},
        "components": {"n_components": 2},
        "gradients": {"gradients": ("positions",)},
    }[change]
    return example_pair(11, n_systems=4, **options)


@pytest.mark.parametrize(
    "change, what",
    [
        ("features", r"features \(properties\)"),
        ("targets", r"targets \(properties\)"),
        ("components", "components"),
        ("gradients", "gradients"),
    ],
)
def test_a_layout_change_between_batches_names_the_block(pair, change, what):
    X, y = pair
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq(rcond=1e-12).partial_fit(Xi[0:6], yi[0:6])
    bad_x, bad_y = _other_layout(change)
    with pytest.raises(
        ValueError,
        match=rf"TensorMapLstsq\.partial_fit: block \(center_type=0\) has other {what} in "
        r"this batch than in earlier batches",
    ):
        model.partial_fit(bad_x, bad_y)
    # the failed batch changed nothing: the fit goes on from the earlier batches
    assert_matches(model, reference(Xi[0:6].tensor, yi[0:6].tensor))
    model.partial_fit(Xi[6:12], yi[6:12])
    assert_matches(model, reference(X, y))


def test_the_layout_message_gives_both_sides(pair):
    X, y = pair
    model = TensorMapLstsq().partial_fit(X, y)
    bad_x, bad_y = _other_layout("features")
    with pytest.raises(
        ValueError,
        match=r"4 named \['feature'\] in this batch, 5 named \['feature'\] in earlier batches",
    ):
        model.partial_fit(bad_x, bad_y)


def test_key_names_changing_between_batches_raise(pair):
    X, y = pair
    model = TensorMapLstsq().partial_fit(X, y)
    renamed = [
        TensorMap(Labels(["species"], np.asarray(t.keys.values)), [b.copy() for b in t.blocks()])
        for t in (X, y)
    ]
    with pytest.raises(
        ValueError,
        match=r"TensorMapLstsq\.partial_fit: keys are named \['species'\] in this batch but "
        r"\['center_type'\] in earlier batches",
    ):
        model.partial_fit(*renamed)


@pytest.mark.parametrize("driver", ["gels", "gelsd", "gelss", "gelsy"])
def test_an_explicit_driver_raises(pair, driver):
    X, y = pair
    with pytest.raises(
        ValueError,
        match=rf"TensorMapLstsq\.partial_fit: partial fits solve from the accumulated "
        rf"factors, which needs driver=None, got driver='{driver}'",
    ):
        TensorMapLstsq(driver=driver).partial_fit(X, y)


def test_arrays_then_tensor_maps_raise(pair):
    X, y = pair
    rng = np.random.default_rng(10)
    model = TensorMapLstsq().partial_fit(rng.normal(size=(10, 5)), rng.normal(size=10))
    with pytest.raises(
        TypeError,
        match=r"TensorMapLstsq\.partial_fit: earlier batches were arrays, this one is TensorMaps",
    ):
        model.partial_fit(X, y)
    model = TensorMapLstsq().partial_fit(X, y)
    with pytest.raises(
        TypeError,
        match=r"TensorMapLstsq\.partial_fit: earlier batches were TensorMaps, this one is arrays",
    ):
        model.partial_fit(rng.normal(size=(10, 5)), rng.normal(size=10))


def test_a_different_number_of_features_raises_as_scikit_learn_checks():
    # sklearn.utils.estimator_checks.check_n_features_in_after_fitting's message
    rng = np.random.default_rng(12)
    model = TensorMapLstsq().partial_fit(rng.normal(size=(10, 4)), rng.normal(size=10))
    assert model.n_features_in_ == 4
    with pytest.raises(ValueError, match=r"X has 1 features, but \w+ is expecting 4 features"):
        model.partial_fit(rng.normal(size=(10, 1)), rng.normal(size=10))


def test_y_dimensions_changing_between_array_batches_raise():
    rng = np.random.default_rng(13)
    model = TensorMapLstsq().partial_fit(rng.normal(size=(10, 4)), rng.normal(size=10))
    with pytest.raises(
        ValueError,
        match=r"TensorMapLstsq\.partial_fit: y has 2 dimensions in this batch but 1 in "
        r"earlier batches",
    ):
        model.partial_fit(rng.normal(size=(10, 4)), rng.normal(size=(10, 1)))


def test_per_key_alpha_may_name_keys_seen_in_later_batches():
    # the estimator's alpha names every key of the data; the first batches need not
    # hold them all
    X, y = late_key_pair(3)
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    alpha = {(0,): 0.1, (1,): 0.2, (3,): 0.3}
    model = TensorMapLstsq(rcond=1e-12, alpha=alpha)
    for batch in (slice(0, 8), slice(8, 12)):
        model.partial_fit(drop_empty(Xi[batch].tensor), drop_empty(yi[batch].tensor))
    assert_matches(model, reference(X, y, alpha=alpha), check_rank=False)


def test_weights_do_not_depend_on_the_blas_threads():
    # fit's weights are the same, bit for bit, for every BLAS thread setting; so
    # must those of the same rows given in batches
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(14)
    A, b = rng.normal(size=(6000, 400)), rng.normal(size=(6000, 3))

    def batches():
        model = TensorMapLstsq(rcond=1e-12)
        for rows in np.array_split(np.arange(6000), 4):
            model.partial_fit(A[rows], b[rows])
        return model.coef_

    with threadpoolctl.threadpool_limits(limits=1):
        on_one_thread = batches()
    np.testing.assert_allclose(on_one_thread, scipy.linalg.lstsq(A, b)[0].T, rtol=1e-9)
    np.testing.assert_array_equal(batches(), on_one_thread)
