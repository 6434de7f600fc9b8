"""TensorMapLstsq against metatensor.lstsq, numpy and scipy on the stacked arrays."""

import pickle

import metatensor
import numpy as np
import pytest
import scipy.linalg
from builders import (
    as_dtype,
    as_numpy,
    assert_weights_close,
    assert_weights_layout,
    example_pair,
    make_pair,
    make_rank_deficient,
    map_arrays,
    nearly_deficient,
    single_block_map,
    stacked,
    to_torch,
)
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import r2_score

from skmetalstsq import IndexedTensorMap, TensorMapLstsq
from skmetalstsq._parallel import SMALL_SOLVE_FLOPS
from skmetalstsq.metrics import r2

try:
    import torch
except ImportError:  # the torch cases skip
    torch = None

DRIVERS = [None, "gels", "gelsy", "gelsd", "gelss"]
#: drivers giving the minimum-norm, rcond-cut solution on rank-deficient data
MIN_NORM_DRIVERS = [None, "gelsd", "gelss"]
RCOND = 1e-10


def on_backend(backend, *tensors, dtype=None):
    """``tensors`` as they are ("numpy"), or with torch arrays ("torch", skipped
    when torch is not installed)."""
    if backend == "numpy":
        return tensors
    needs_torch()
    return tuple(to_torch(tensor, dtype) for tensor in tensors)


def needs_torch():
    if torch is None:
        pytest.skip("torch is not installed")


def key_tuple(key):
    return tuple(int(v) for v in key.values)


# ---------------------------------------------------------------------------------
# weights against metatensor.lstsq
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_numpy_weights_equal_metatensor(driver):
    # metatensor.lstsq always uses numpy's gelsd on numpy data: on well-conditioned,
    # full-rank data every driver must give its weights
    X, y = example_pair()
    model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(X, y)
    reference = metatensor.lstsq(X, y, rcond=RCOND)
    assert_weights_layout(model.weights_, X, y)
    assert_weights_close(model.weights_, reference)
    for block in model.weights_.blocks():
        assert isinstance(block.values, np.ndarray)


@pytest.mark.parametrize("driver", MIN_NORM_DRIVERS)
def test_numpy_rank_deficient_equals_metatensor(driver):
    X, y = example_pair(1)
    X = make_rank_deficient(X)
    model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(X, y)
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, rcond=RCOND))
    n_features = len(X.block(0).properties)
    assert all(rank == n_features - 2 for rank in model.rank_.values())


def test_numpy_rank_deficient_gelsy_equals_scipy():
    X, y = example_pair(2)
    X = make_rank_deficient(X)
    model = TensorMapLstsq(rcond=RCOND, driver="gelsy").fit(X, y)
    for key, x_block in X.items():
        weights, _, rank, _ = scipy.linalg.lstsq(
            stacked(x_block),
            stacked(y.block(key), x_block.gradients_list()),
            cond=RCOND,
            lapack_driver="gelsy",
        )
        np.testing.assert_allclose(model.weights_.block(key).values, weights.T, atol=1e-11)
        assert model.rank_[key_tuple(key)] == rank


def test_numpy_gels_rank_deficient_raises():
    # an all-zero column makes LAPACK's gels report a singular triangular factor
    X, y = example_pair(3)

    def zero_column(array):
        array = array.copy()
        array[..., 2] = 0.0
        return array

    X = map_arrays(X, zero_column)
    message = r"driver 'gels' needs a full-rank block, but block \(center_type=\d+\) is rank-def"
    with pytest.raises(np.linalg.LinAlgError, match=message):
        TensorMapLstsq(driver="gels").fit(X, y)


@pytest.mark.parametrize("driver", MIN_NORM_DRIVERS + ["gelsy"])
def test_rcond_none_is_numpy_default_on_numpy_data(driver):
    X, y = nearly_deficient(6)
    model = TensorMapLstsq(rcond=None, driver=driver).fit(X, y)
    for key, x_block in X.items():
        a = stacked(x_block)
        b = stacked(y.block(key), x_block.gradients_list())
        eps = np.finfo(np.float64).eps
        # the test data does tell numpy's default from a plain eps cut-off
        assert np.linalg.lstsq(a, b, rcond=eps)[2] == a.shape[1]
        if driver == "gelsy":
            weights, _, rank, _ = scipy.linalg.lstsq(
                a, b, cond=eps * max(a.shape), lapack_driver="gelsy"
            )
        else:
            weights, _, rank, _ = np.linalg.lstsq(a, b, rcond=None)
        assert rank == a.shape[1] - 1
        np.testing.assert_allclose(model.weights_.block(key).values, weights.T, atol=1e-9)
        assert model.rank_[key_tuple(key)] == rank


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_tall_blocks_stream_to_the_same_solution(backend):
    # more than 20000 stacked rows: driver=None streams chunks through QR + SVD
    X, y = make_pair(
        np.random.default_rng(8), keys=((0,),), n_systems=1500, n_features=6, n_targets=2
    )
    X = make_rank_deficient(X)
    assert stacked(X.block(0)).shape[0] > 20000
    X, y = on_backend(backend, X, y)
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    a, b = stacked(X.block(0)), stacked(y.block(0))
    weights, _, rank, singular = np.linalg.lstsq(a, b, rcond=RCOND)
    np.testing.assert_allclose(as_numpy(model.weights_.block(0).values), weights.T, atol=1e-10)
    assert model.rank_[(0,)] == rank == 4
    np.testing.assert_allclose(as_numpy(model.singular_values_[(0,)]), singular, atol=1e-9)


# ---------------------------------------------------------------------------------
# layout, array libraries and diagnostics
# ---------------------------------------------------------------------------------


def test_numpy_weights_and_predictions():
    X, y = example_pair(9)
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    assert_weights_layout(model.weights_, X, y)
    for block in model.weights_.blocks():
        assert isinstance(block.values, np.ndarray)
    for block in model.predict(X).blocks():
        assert isinstance(block.values, np.ndarray)
        for _, gradient in block.gradients():
            assert isinstance(gradient.values, np.ndarray)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_rank_and_singular_values(driver, backend):
    X, y = example_pair(10)
    X = make_rank_deficient(X)
    if driver == "gels":
        # gels needs full rank: use the first features only
        X = metatensor.slice(X, "properties", Labels.range("feature", 3))
    fit_X, fit_y = on_backend(backend, X, y)
    model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(fit_X, fit_y)
    assert set(model.rank_) == set(model.singular_values_) == {key_tuple(k) for k in X.keys}
    for key, x_block in X.items():
        a = stacked(x_block)
        b = stacked(y.block(key), x_block.gradients_list())
        _, _, rank, singular = np.linalg.lstsq(a, b, rcond=RCOND)
        found_rank = model.rank_[key_tuple(key)]
        found_singular = model.singular_values_[key_tuple(key)]
        if driver == "gels":
            assert found_rank is None and found_singular is None
            continue
        if driver == "gelsy":
            assert found_singular is None
            rank = scipy.linalg.lstsq(a, b, cond=RCOND, lapack_driver="gelsy")[2]
        else:
            np.testing.assert_allclose(as_numpy(found_singular), singular, rtol=1e-10, atol=1e-12)
        assert isinstance(found_rank, int)
        assert found_rank == rank


# ---------------------------------------------------------------------------------
# predict and score
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_predict_values_and_gradients_by_hand(backend):
    X, y = example_pair(11)
    fit_X, fit_y = on_backend(backend, X, y)
    model = TensorMapLstsq(rcond=RCOND).fit(fit_X, fit_y)
    prediction = model.predict(fit_X)
    reference = metatensor.lstsq(X, y, rcond=RCOND)
    assert prediction.keys == X.keys
    for key, x_block in X.items():
        w = reference.block(key).values
        block = prediction.block(key)
        assert block.gradients_list() == x_block.gradients_list()
        pairs = [(block, x_block)]
        pairs += [(block.gradient(p), x_gradient) for p, x_gradient in x_block.gradients()]
        for predicted, features in pairs:
            assert predicted.samples == features.samples
            assert predicted.components == features.components
            assert predicted.properties == y.block(key).properties
            expected = np.einsum("...f,tf->...t", features.values, w)
            np.testing.assert_allclose(as_numpy(predicted.values), expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_integer_features_are_predicted_in_float64(backend):
    rng = np.random.default_rng(29)
    counts = rng.integers(0, 5, size=(20, 3))
    X, y = single_block_map(counts, counts @ np.array([[0.5], [1.25], [-0.3]]))
    X, y = on_backend(backend, X, y)
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    prediction = model.predict(X).block(0).values
    expected = counts @ np.linalg.lstsq(counts.astype(float), y.block(0).values.tolist())[0]
    assert str(prediction.dtype).endswith("float64")
    np.testing.assert_allclose(as_numpy(prediction), expected, rtol=1e-12, atol=1e-12)


def test_predict_a_subset_of_keys():
    X, y = example_pair(12)
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    subset = TensorMap(
        Labels(["center_type"], np.array([[3], [0]])),
        [X.block({"center_type": 3}).copy(), X.block({"center_type": 0}).copy()],
    )
    prediction = model.predict(subset)
    assert prediction.keys == subset.keys
    full = model.predict(X)
    for key in subset.keys:
        np.testing.assert_array_equal(prediction.block(key).values, full.block(key).values)
        np.testing.assert_array_equal(
            prediction.block(key).gradient("positions").values,
            full.block(key).gradient("positions").values,
        )


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_score_is_pooled_r2(backend):
    X, y = example_pair(13)
    X_test, y_test = example_pair(14)  # other data, so that R^2 < 1
    model_data = on_backend(backend, X, y)
    test_data = on_backend(backend, X_test, y_test)
    model = TensorMapLstsq(rcond=RCOND).fit(*model_data)
    weights = metatensor.lstsq(X, y, rcond=RCOND)
    residual = total = 0.0
    for key, x_block in X_test.items():
        true = y_test.block(key).values.reshape(-1, 3)
        predicted = x_block.values.reshape(-1, 5) @ weights.block(key).values.T
        residual += ((true - predicted) ** 2).sum()
        total += ((true - true.mean(axis=0)) ** 2).sum()
    score = model.score(*test_data)
    assert isinstance(score, float)
    assert score < 0.99
    np.testing.assert_allclose(score, 1.0 - residual / total, rtol=1e-10)


def test_score_of_one_block_is_sklearn_variance_weighted():
    rng = np.random.default_rng(15)
    X, y = single_block_map(rng.normal(size=(30, 4)), rng.normal(size=(30, 3)))
    X_test, y_test = single_block_map(rng.normal(size=(20, 4)), rng.normal(size=(20, 3)))
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    predicted = X_test.block(0).values @ np.linalg.lstsq(X.block(0).values, y.block(0).values)[0]
    expected = r2_score(y_test.block(0).values, predicted, multioutput="variance_weighted")
    np.testing.assert_allclose(model.score(X_test, y_test), expected, rtol=1e-10)


def test_indexed_tensor_maps_give_the_same_fit():
    X, y = example_pair(16)
    model = TensorMapLstsq(rcond=RCOND).fit(IndexedTensorMap(X), IndexedTensorMap(y))
    assert_weights_close(model.weights_, metatensor.lstsq(X, y, rcond=RCOND))
    prediction = model.predict(IndexedTensorMap(X))
    assert isinstance(prediction, IndexedTensorMap)
    assert prediction.tensor.keys == X.keys


def test_verbose_prints_one_line_per_block(capsys):
    X, y = example_pair(17)
    TensorMapLstsq(verbose=1).fit(X, y)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(X.keys)
    assert all("block (center_type=" in line for line in lines)


# ---------------------------------------------------------------------------------
# plain arrays
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("b_shape", [(40,), (40, 1), (40, 3)])
@pytest.mark.parametrize("device", [None, "cpu"])
def test_arrays_equal_numpy_lstsq(b_shape, device):
    if device is not None:
        needs_torch()
    rng = np.random.default_rng(18)
    a = rng.normal(size=(40, 6))
    b = rng.normal(size=b_shape)
    model = TensorMapLstsq(rcond=RCOND, device=device).fit(a, b)
    expected = np.linalg.lstsq(a, b, rcond=RCOND)[0]
    assert isinstance(model.coef_, np.ndarray)
    np.testing.assert_allclose(model.coef_, expected.T, atol=1e-12)
    assert model.n_features_in_ == 6
    a_new = rng.normal(size=(7, 6))
    prediction = model.predict(a_new)
    assert isinstance(prediction, np.ndarray)
    assert prediction.shape == (7, *b_shape[1:])
    np.testing.assert_allclose(prediction, a_new @ expected, atol=1e-12)
    b_new = rng.normal(size=(7, *b_shape[1:]))
    expected_score = r2_score(b_new, a_new @ expected, multioutput="variance_weighted")
    np.testing.assert_allclose(model.score(a_new, b_new), expected_score, rtol=1e-10)


def test_arrays_with_fewer_rows_than_features_give_minimum_norm():
    rng = np.random.default_rng(19)
    a, b = rng.normal(size=(4, 9)), rng.normal(size=(4, 2))
    for driver in DRIVERS:
        model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(a, b)
        np.testing.assert_allclose(model.coef_, np.linalg.lstsq(a, b, rcond=RCOND)[0].T, atol=1e-12)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("b_shape", [(30,), (30, 1), (30, 2)])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_array_attributes_have_the_types_of_linear_regression(
    fit_intercept, b_shape, dtype, method
):
    # scikit-learn's LinearRegression: intercept_ a numpy scalar for a 1-D y, an
    # array for a 2-D y, the float 0.0 without an intercept; coef_ (n_features,)
    # for a 1-D y, (n_targets, n_features) otherwise, in the data's dtype
    rng = np.random.default_rng(20)
    a = rng.normal(size=(30, 4)).astype(dtype)
    b = (rng.normal(size=b_shape) + 1.0).astype(dtype)
    model = getattr(TensorMapLstsq(fit_intercept=fit_intercept), method)(a, b)
    reference = LinearRegression(fit_intercept=fit_intercept).fit(a, b)
    assert type(model.intercept_) is type(reference.intercept_)
    assert np.shape(model.intercept_) == np.shape(reference.intercept_)
    assert getattr(model.intercept_, "dtype", None) == getattr(reference.intercept_, "dtype", None)
    assert type(model.coef_) is type(reference.coef_)
    assert model.coef_.shape == reference.coef_.shape and model.coef_.dtype == reference.coef_.dtype
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(model.intercept_, reference.intercept_, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(model.coef_, reference.coef_, rtol=rtol, atol=rtol)
    predicted, expected = model.predict(a), reference.predict(a)
    assert predicted.shape == expected.shape and predicted.dtype == expected.dtype


@pytest.mark.parametrize("b_shape", [(40,), (40, 2)])
def test_a_scalar_sample_weight_on_arrays_equals_ridge(b_shape):
    # scikit-learn takes a number as the same weight on every sample (with a
    # penalty, not the unweighted fit)
    rng = np.random.default_rng(21)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=b_shape)
    model = TensorMapLstsq(alpha=3.0, fit_intercept=True).fit(a, b, sample_weight=0.5)
    ridge = Ridge(alpha=3.0, solver="svd").fit(a, b, sample_weight=0.5)
    np.testing.assert_allclose(model.coef_, ridge.coef_, rtol=1e-10)
    np.testing.assert_allclose(model.intercept_, ridge.intercept_, rtol=1e-10)
    assert not np.allclose(model.coef_, Ridge(alpha=3.0, solver="svd").fit(a, b).coef_)
    a_new, b_new = rng.normal(size=(9, 5)), rng.normal(size=(9, *b_shape[1:]))
    expected = r2_score(
        b_new, ridge.predict(a_new), sample_weight=np.full(9, 2.0), multioutput="variance_weighted"
    )
    np.testing.assert_allclose(model.score(a_new, b_new, sample_weight=2.0), expected, rtol=1e-10)


@pytest.mark.parametrize("indexed", [False, True], ids=["TensorMap", "IndexedTensorMap"])
def test_a_scalar_sample_weight_on_tensor_maps_weighs_every_row(indexed):
    # one block with components and a gradient: Ridge on the stacked rows, each
    # of weight 0.5 (values and gradient rows alike)
    X, y = make_pair(np.random.default_rng(22), keys=((0,),), n_components=3, n_targets=2)
    model = TensorMapLstsq(alpha=2.0)
    wrap = IndexedTensorMap if indexed else (lambda tensor: tensor)
    model.fit(wrap(X), wrap(y), sample_weight=0.5)
    a, b = stacked(X.block(0)), stacked(y.block(0))
    ridge = Ridge(alpha=2.0, fit_intercept=False, solver="svd").fit(a, b, sample_weight=0.5)
    np.testing.assert_allclose(model.weights_.block(0).values, ridge.coef_, rtol=1e-10)
    X_new, y_new = make_pair(np.random.default_rng(23), keys=((0,),), n_components=3, n_targets=2)
    true = y_new.block(0).values.reshape(-1, 2)
    predicted = X_new.block(0).values.reshape(-1, 4) @ ridge.coef_.T
    expected = r2_score(
        true, predicted, sample_weight=np.full(len(true), 4.0), multioutput="variance_weighted"
    )
    score = model.score(wrap(X_new), wrap(y_new), sample_weight=4.0)
    np.testing.assert_allclose(score, expected, rtol=1e-10)
    prediction = model.predict(wrap(X_new))
    np.testing.assert_allclose(r2(wrap(y_new), prediction, sample_weight=4.0), expected, rtol=1e-10)


# ---------------------------------------------------------------------------------
# n_jobs, pickling, clone, parameters
# ---------------------------------------------------------------------------------


def _joined(first, second):
    keys = Labels(first.keys.names, np.vstack([first.keys.values, second.keys.values]))
    return TensorMap(keys, [b.copy() for b in first.blocks()] + [b.copy() for b in second.blocks()])


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_n_jobs_gives_identical_weights(driver, backend):
    # ten small blocks, and one large enough for multi-threaded BLAS
    rng = np.random.default_rng(20)
    X_small, y_small = make_pair(rng, keys=[(k,) for k in range(10)], n_targets=2)
    X_big, y_big = make_pair(
        rng, keys=((20,),), n_systems=300, n_atoms=1, n_features=150, n_targets=2
    )
    rows, columns = stacked(X_big.block(0)).shape[0], 150 + 2
    assert 2.0 * rows * columns**2 > SMALL_SOLVE_FLOPS
    X, y = on_backend(backend, _joined(X_small, X_big), _joined(y_small, y_big))
    serial = TensorMapLstsq(rcond=RCOND, driver=driver, n_jobs=1).fit(X, y)
    parallel = TensorMapLstsq(rcond=RCOND, driver=driver, n_jobs=2).fit(X, y)
    assert parallel.weights_.keys == serial.weights_.keys
    for key in X.keys:
        np.testing.assert_array_equal(
            as_numpy(parallel.weights_.block(key).values),
            as_numpy(serial.weights_.block(key).values),
        )
        assert parallel.rank_[key_tuple(key)] == serial.rank_[key_tuple(key)]


@pytest.mark.parametrize("backend", ["numpy", "torch", "torch-float32"])
def test_pickle_round_trip(backend):
    X, y = example_pair(21)
    if backend == "torch-float32":
        needs_torch()
        X, y = on_backend("torch", X, y, dtype=torch.float32)
    else:
        X, y = on_backend(backend, X, y)
    model = TensorMapLstsq(rcond=RCOND).fit(X, y)
    restored = pickle.loads(pickle.dumps(model))
    assert restored.get_params() == model.get_params()
    assert restored.weights_.keys == model.weights_.keys
    for key, block in model.weights_.items():
        other = restored.weights_.block(key)
        assert type(other.values) is type(block.values)
        assert other.values.dtype == block.values.dtype
        assert other.samples == block.samples
        assert other.properties == block.properties
        np.testing.assert_array_equal(as_numpy(other.values), as_numpy(block.values))
    assert restored.rank_ == model.rank_
    for key, singular in model.singular_values_.items():
        np.testing.assert_array_equal(as_numpy(restored.singular_values_[key]), as_numpy(singular))
    first, second = model.predict(X), restored.predict(X)
    for key, block in first.items():
        np.testing.assert_array_equal(as_numpy(second.block(key).values), as_numpy(block.values))


def test_clone_and_parameters():
    needs_torch()  # for device="cpu"
    model = TensorMapLstsq(rcond=1e-8, driver="gelss", device="cpu", n_jobs=2, verbose=0)
    assert model.get_params() == {
        "rcond": 1e-8,
        "driver": "gelss",
        "alpha": 0.0,
        "fit_intercept": False,
        "gradient_weights": None,
        "device": "cpu",
        "n_jobs": 2,
        "verbose": 0,
    }
    X, y = example_pair(22)
    model.fit(X, y)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "weights_")
    assert copy.set_params(rcond=1e-3, driver="gelsy") is copy
    assert copy.rcond == 1e-3 and copy.driver == "gelsy"
    assert model.rcond == 1e-8
    # fit does not change the parameters
    copy.fit(X, y)
    assert copy.get_params()["rcond"] == 1e-3
    assert copy.get_params()["device"] == "cpu"


def test_refit_on_tensor_maps_forgets_array_fit():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(23)
    frame = pd.DataFrame(rng.normal(size=(10, 3)), columns=["a", "b", "c"])
    model = TensorMapLstsq().fit(frame, rng.normal(size=10))
    assert hasattr(model, "coef_") and hasattr(model, "feature_names_in_")
    X, y = example_pair(24)
    model.fit(X, y)
    for attribute in ("coef_", "n_features_in_", "feature_names_in_"):
        assert not hasattr(model, attribute)
    assert model.predict(X).keys == X.keys


# ---------------------------------------------------------------------------------
# dtypes and empty blocks
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_float32_with_float64_is_solved_in_float64(driver):
    X, y = example_pair(25)
    X32 = as_dtype(X, np.float32)
    model = TensorMapLstsq(rcond=RCOND, driver=driver).fit(X32, y)
    reference = metatensor.lstsq(as_dtype(X32, np.float64), y, rcond=RCOND)
    for block in model.weights_.blocks():
        assert block.values.dtype == np.float64
    assert_weights_close(model.weights_, reference)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float32_stays_float32(driver, backend):
    X, y = example_pair(26)
    if backend == "numpy":
        X32, y32 = as_dtype(X, np.float32), as_dtype(y, np.float32)
    else:
        needs_torch()
        X32, y32 = on_backend(backend, X, y, dtype=torch.float32)
    model = TensorMapLstsq(rcond=1e-5, driver=driver).fit(X32, y32)
    reference = metatensor.lstsq(X, y, rcond=1e-5)
    for block in model.weights_.blocks():
        assert block.values.dtype == (np.float32 if backend == "numpy" else torch.float32)
    assert_weights_close(model.weights_, reference, rtol=1e-4, atol=1e-4)
    prediction = model.predict(X32)
    for block in prediction.blocks():
        assert block.values.dtype == (np.float32 if backend == "numpy" else torch.float32)


def _without_rows(tensor, selected):
    nothing = Labels(["system"], np.array([[99]], dtype=np.int32))
    blocks = [
        metatensor.slice_block(block, "samples", nothing)
        if key_tuple(key) == selected
        else block.copy()
        for key, block in tensor.items()
    ]
    return TensorMap(tensor.keys, blocks)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("device", [None, "cpu"])
def test_block_without_rows_gets_zero_weights(driver, device):
    if device is not None:
        needs_torch()
    X, y = example_pair(28)
    # the block (center_type=1) of both maps keeps no sample (and no gradient row)
    X, y = (_without_rows(tensor, (1,)) for tensor in (X, y))
    assert X.block({"center_type": 1}).values.shape == (0, 3, 5)
    model = TensorMapLstsq(rcond=RCOND, driver=driver, device=device).fit(X, y)
    expected, _, rank, singular = np.linalg.lstsq(np.zeros((0, 5)), np.zeros((0, 3)), rcond=None)
    weights = model.weights_.block({"center_type": 1})
    assert weights.samples == y.block({"center_type": 1}).properties
    np.testing.assert_array_equal(as_numpy(weights.values), expected.T)
    assert model.rank_[(1,)] == rank == 0
    if driver in MIN_NORM_DRIVERS:
        assert as_numpy(model.singular_values_[(1,)]).shape == singular.shape
    # the other blocks are fitted as usual, and predict handles the empty block
    reference = metatensor.lstsq(
        metatensor.drop_blocks(X, Labels(["center_type"], np.array([[1]]))),
        metatensor.drop_blocks(y, Labels(["center_type"], np.array([[1]]))),
        rcond=RCOND,
    )
    for key, block in reference.items():
        np.testing.assert_allclose(
            as_numpy(model.weights_.block(key).values), block.values, rtol=1e-9, atol=1e-11
        )
    assert model.predict(X).block({"center_type": 1}).values.shape == (0, 3, 3)


def test_gradients_are_stacked_in_sorted_order_whatever_their_order_in_the_block():
    # metatensor-core gives gradients_list() of a loaded map in an order that
    # differs between processes: the weights must not depend on it, bit for bit
    rng = np.random.default_rng(31)
    X, y = make_pair(rng, keys=((0,),), n_systems=6, gradients=("strain", "positions"))

    def reversed_gradients(tensor):
        blocks = []
        for block in tensor.blocks():
            new = TensorBlock(block.values, block.samples, block.components, block.properties)
            for parameter in reversed(block.gradients_list()):
                gradient = block.gradient(parameter)
                new.add_gradient(
                    parameter,
                    TensorBlock(
                        gradient.values, gradient.samples, gradient.components, new.properties
                    ),
                )
            blocks.append(new)
        return TensorMap(tensor.keys, blocks)

    X_other, y_other = reversed_gradients(X), reversed_gradients(y)
    assert X_other.block(0).gradients_list() != X.block(0).gradients_list()
    for driver in (None, "gelsd", "gelsy"):
        first = TensorMapLstsq(driver=driver).fit(X, y).weights_.block(0).values
        second = TensorMapLstsq(driver=driver).fit(X_other, y_other).weights_.block(0).values
        np.testing.assert_array_equal(first, second)
        # and both are the solution of the rows stacked in sorted order
        block, target = X.block(0), y.block(0)
        a = stacked(block, sorted(block.gradients_list()))
        b = stacked(target, sorted(block.gradients_list()))
        np.testing.assert_allclose(first, np.linalg.lstsq(a, b, rcond=None)[0].T, rtol=1e-10)
