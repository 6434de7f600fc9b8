"""Pooled metrics and scorers, against numpy on the stacked arrays and sklearn.metrics."""

import pickle

import metatensor
import numpy as np
import pytest
import sklearn.metrics
from builders import make_pair, map_arrays, to_torch
from metatensor import Labels, TensorBlock, TensorMap

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, metrics


def _perturbed(tensor, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    return map_arrays(tensor, lambda array: array + scale * rng.normal(size=array.shape))


def _matrices(tensor, gradient=None):
    """Each block's values (or gradient) as (rows, properties), by hand."""
    out = []
    for block in tensor.blocks():
        if gradient is not None:
            block = block.gradient(gradient)
        values = np.asarray(block.values)
        out.append(values.reshape(-1, values.shape[-1]))
    return out


def _hand(y_true, y_pred, gradient=None):
    true = _matrices(y_true, gradient)
    pred = _matrices(y_pred, gradient)
    residuals = np.concatenate([(t - p).ravel() for t, p in zip(true, pred)])
    total = sum(((t - t.mean(axis=0)) ** 2).sum() for t in true)
    return {
        "rmse": np.sqrt(np.mean(residuals**2)),
        "mae": np.mean(np.abs(residuals)),
        "r2": 1 - (residuals**2).sum() / total,
    }


@pytest.fixture(scope="module")
def pair():
    _, y = make_pair(np.random.default_rng(0), keys=((1,), (6,), (8,)), n_components=3)
    return y, _perturbed(y, 1)


@pytest.mark.parametrize("gradient", [None, "positions"])
@pytest.mark.parametrize("name", ["rmse", "mae", "r2"])
def test_pooled_over_blocks_like_numpy(pair, name, gradient):
    y_true, y_pred = pair
    got = getattr(metrics, name)(y_true, y_pred, gradient=gradient)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, _hand(y_true, y_pred, gradient)[name], rtol=1e-12)


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_one_block_like_sklearn(gradient):
    _, y = make_pair(np.random.default_rng(2), keys=((0,),), n_targets=3)
    y_pred = _perturbed(y, 3)
    true, pred = _matrices(y, gradient)[0], _matrices(y_pred, gradient)[0]
    np.testing.assert_allclose(
        metrics.r2(y, y_pred, gradient=gradient),
        sklearn.metrics.r2_score(true, pred, multioutput="variance_weighted"),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        metrics.rmse(y, y_pred, gradient=gradient),
        np.sqrt(sklearn.metrics.mean_squared_error(true, pred)),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        metrics.mae(y, y_pred, gradient=gradient),
        sklearn.metrics.mean_absolute_error(true, pred),
        rtol=1e-12,
    )


def test_constant_target_like_sklearn():
    samples = Labels.range("system", 4)

    def tensor(values):
        block = TensorBlock(np.array(values), samples, [], Labels.range("e", 1))
        return TensorMap(Labels.single(), [block])

    constant = [[2.0], [2.0], [2.0], [2.0]]
    for predicted in (constant, [[2.0], [1.0], [2.0], [2.0]]):
        assert metrics.r2(tensor(constant), tensor(predicted)) == sklearn.metrics.r2_score(
            np.array(constant), np.array(predicted)
        )


def test_keys_in_another_order_and_indexed_inputs(pair):
    y_true, y_pred = pair
    order = [2, 0, 1]
    keys = Labels(y_pred.keys.names, np.asarray(y_pred.keys.values)[order])
    shuffled = TensorMap(keys, [y_pred.block(i).copy() for i in order])
    expected = _hand(y_true, y_pred)
    for name in ("rmse", "mae", "r2"):
        metric = getattr(metrics, name)
        np.testing.assert_allclose(metric(y_true, shuffled), expected[name], rtol=1e-12)
        np.testing.assert_allclose(
            metric(IndexedTensorMap(y_true), IndexedTensorMap(y_pred)),
            expected[name],
            rtol=1e-12,
        )


def test_torch_arrays(pair):
    torch = pytest.importorskip("torch")
    y_true, y_pred = pair
    expected = _hand(y_true, y_pred, "positions")
    true_torch, pred_torch = to_torch(y_true), to_torch(y_pred)
    for name in ("rmse", "mae", "r2"):
        got = getattr(metrics, name)(true_torch, pred_torch, gradient="positions")
        assert isinstance(got, float)
        np.testing.assert_allclose(got, expected[name], rtol=1e-12)
    assert torch.is_tensor(true_torch.block(0).values)


def test_r2_on_values_is_the_estimator_score():
    X, y = make_pair(np.random.default_rng(4), n_systems=10, n_components=2, noise=0.5)
    X_test, y_test = make_pair(np.random.default_rng(5), n_systems=4, n_components=2, noise=0.5)
    model = TensorMapLstsq(rcond=1e-12).fit(X, y)
    weights = metatensor.lstsq(X, y, rcond=1e-12)
    predicted = TensorMap(
        X_test.keys,
        [
            TensorBlock(
                block.values @ weights.block(key).values.T,
                block.samples,
                block.components,
                y_test.block(key).properties,
            )
            for key, block in X_test.items()
        ],
    )
    hand = _hand(y_test, predicted)["r2"]
    np.testing.assert_allclose(metrics.r2(y_test, model.predict(X_test)), hand, rtol=1e-8)
    np.testing.assert_allclose(model.score(X_test, y_test), hand, rtol=1e-8)


@pytest.mark.parametrize(
    "name, metric, sign", [("r2", "r2", 1), ("neg_rmse", "rmse", -1), ("neg_mae", "mae", -1)]
)
@pytest.mark.parametrize("gradient", [None, "positions"])
def test_scorer(name, metric, sign, gradient):
    X, y = make_pair(np.random.default_rng(6), n_systems=8, noise=0.5)
    model = TensorMapLstsq(rcond=1e-12).fit(X, y)
    weights = metatensor.lstsq(X, y, rcond=1e-12)

    def predict(array, key):
        return np.asarray(array) @ weights.block(key).values.T

    blocks = []
    for key, block in X.items():
        new = TensorBlock(
            predict(block.values, key), block.samples, block.components, y.block(key).properties
        )
        gradient_block = block.gradient("positions")
        new.add_gradient(
            "positions",
            TensorBlock(
                predict(gradient_block.values, key),
                gradient_block.samples,
                gradient_block.components,
                new.properties,
            ),
        )
        blocks.append(new)
    predicted = TensorMap(X.keys, blocks)
    score = metrics.scorer(name, gradient=gradient)
    expected = sign * _hand(y, predicted, gradient)[metric]
    np.testing.assert_allclose(score(model, X, y), expected, rtol=1e-8)
    np.testing.assert_allclose(
        pickle.loads(pickle.dumps(score))(model, IndexedTensorMap(X), IndexedTensorMap(y)),
        expected,
        rtol=1e-8,
    )
    assert sklearn.metrics.check_scoring(model, scoring=score) is score
    assert repr(score) == f"scorer({name!r}, gradient={gradient!r})"


def test_scorer_bad_arguments():
    with pytest.raises(ValueError, match=r"name must be one of \['neg_mae', 'neg_rmse', 'r2'\]"):
        metrics.scorer("rmse")
    with pytest.raises(TypeError, match="gradient must be None or the name of a gradient"):
        metrics.scorer("r2", gradient=["positions"])


def test_errors(pair):
    y_true, y_pred = pair
    with pytest.raises(TypeError, match="rmse: y_pred must be a metatensor.TensorMap"):
        metrics.rmse(y_true, np.zeros(3))
    with pytest.raises(
        ValueError, match=r"r2: y_true and y_pred have different keys: only in y_true: \[.*8"
    ):
        metrics.r2(y_true, metatensor.drop_blocks(y_pred, Labels(["center_type"], np.c_[[8]])))
    with pytest.raises(ValueError, match=r"block \(center_type=1\) of y_true has no 'cell'"):
        metrics.mae(y_true, y_pred, gradient="cell")
    no_gradient = metatensor.remove_gradients(y_pred)
    with pytest.raises(ValueError, match=r"of y_pred has no 'positions' gradient \(it has \[\]\)"):
        metrics.rmse(y_true, no_gradient, gradient="positions")
    fewer = metatensor.slice(y_pred, "properties", Labels(["target"], np.c_[[0]]))
    with pytest.raises(
        ValueError, match=r"values of shape \(12, 3, 2\) in y_true but \(12, 3, 1\)"
    ):
        metrics.rmse(y_true, fewer)
    other_systems = IndexedTensorMap(y_pred)[[1, 2, 3, 4, 5]].tensor
    with pytest.raises(ValueError, match="other samples in y_true than in y_pred"):
        metrics.rmse(IndexedTensorMap(y_true)[[0, 1, 2, 3, 4]].tensor, other_systems)
    renamed = metatensor.rename_dimension(y_pred, "samples", "atom", "site")
    with pytest.raises(ValueError, match="other samples in y_true than in y_pred"):
        metrics.rmse(y_true, renamed)
