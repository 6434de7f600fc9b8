"""Pooled metrics and scorers, against numpy on the stacked arrays and sklearn.metrics."""

import pickle
import re

import joblib
import metatensor
import numpy as np
import pytest
import sklearn.metrics
from builders import make_pair, map_arrays, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV, metrics


def raises(error, *parts):
    """pytest.raises matching every one of ``parts`` (literal text) in the message."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in parts)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


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


def _hand(y_true, y_pred, gradient=None, weights=None):
    """The pooled metrics by their formulas; ``weights``: one array of row weights per block."""
    true = _matrices(y_true, gradient)
    pred = _matrices(_in_key_order(y_pred, y_true.keys), gradient)
    if weights is None:
        weights = [np.ones(t.shape[0]) for t in true]
    squared = sum((w[:, None] * (t - p) ** 2).sum() for t, p, w in zip(true, pred, weights))
    absolute = sum((w[:, None] * abs(t - p)).sum() for t, p, w in zip(true, pred, weights))
    count = sum(w.sum() * t.shape[1] for t, w in zip(true, weights))
    total = 0.0
    for t, w in zip(true, weights):
        if w.sum() > 0:
            mean = (w[:, None] * t).sum(axis=0) / w.sum()
            total += (w[:, None] * (t - mean) ** 2).sum()
    return {
        "rmse": np.sqrt(squared / count),
        "mse": squared / count,
        "mae": absolute / count,
        "r2": 1 - squared / total,
    }


def _in_key_order(tensor, keys):
    return TensorMap(keys, [tensor.block(key).copy() for key in keys])


@pytest.fixture(scope="module")
def pair():
    _, y = make_pair(np.random.default_rng(0), keys=((1,), (6,), (8,)), n_components=3)
    return y, _perturbed(y, 1)


# ---------------------------------------------------------------------------------
# pooled values, against numpy and sklearn
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gradient", [None, "positions"])
@pytest.mark.parametrize("name", ["rmse", "mse", "mae", "r2"])
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
        metrics.mse(y, y_pred, gradient=gradient),
        sklearn.metrics.mean_squared_error(true, pred),
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


def test_integer_arrays_are_compared_as_floats():
    _, y = make_pair(np.random.default_rng(7), keys=((0,),), gradients=())
    y_true = map_arrays(y, lambda array: np.round(10 * array).astype(np.int64))
    y_pred = map_arrays(y, lambda array: np.round(10 * array + 3).astype(np.int32))
    as_float = map_arrays(y_pred, lambda array: array.astype(np.float64))
    for name in ("rmse", "mae", "r2"):
        expected = _hand(map_arrays(y_true, lambda a: a.astype(float)), as_float)[name]
        np.testing.assert_allclose(getattr(metrics, name)(y_true, y_pred), expected, rtol=1e-12)


def test_torch_arrays(pair):
    torch = pytest.importorskip("torch")
    y_true, y_pred = pair
    expected = _hand(y_true, y_pred, "positions")
    true_torch, pred_torch = to_torch(y_true), to_torch(y_pred)
    for name in ("rmse", "mse", "mae", "r2"):
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


# ---------------------------------------------------------------------------------
# y_pred compared by labels
# ---------------------------------------------------------------------------------


def _reversed(tensor, axis):
    """A copy of ``tensor`` with the entries of ``axis`` reversed in every block, the
    data moved with its labels.

    ``axis``: "samples" (the gradient rows follow, their "sample" column renumbered),
    "properties", "components" (the first component of the values and the same one of
    the gradients), "gradient samples" (only the rows of the gradients) or "xyz" (the
    first component of the gradients).
    """

    def flipped(labels):
        return Labels(labels.names, np.ascontiguousarray(np.asarray(labels.values)[::-1]))

    blocks = []
    for block in tensor.blocks():
        values = np.asarray(block.values)
        samples, components, properties = block.samples, list(block.components), block.properties
        if axis == "samples":
            values, samples = values[::-1], flipped(samples)
        elif axis == "components":
            values, components[0] = values[:, ::-1], flipped(components[0])
        elif axis == "properties":
            values, properties = values[..., ::-1], flipped(properties)
        new = TensorBlock(np.ascontiguousarray(values), samples, components, properties)
        for parameter, gradient in block.gradients():
            g_values = np.asarray(gradient.values)
            g_samples = np.array(gradient.samples.values)
            g_components = list(gradient.components)
            if axis == "samples":
                g_samples[:, 0] = len(block.samples) - 1 - g_samples[:, 0]
            if axis in ("samples", "gradient samples"):
                g_values, g_samples = g_values[::-1], g_samples[::-1]
            elif axis == "components":
                g_values, g_components[1] = g_values[:, :, ::-1], flipped(g_components[1])
            elif axis == "xyz":
                g_values, g_components[0] = g_values[:, ::-1], flipped(g_components[0])
            elif axis == "properties":
                g_values = g_values[..., ::-1]
            new.add_gradient(
                parameter,
                TensorBlock(
                    np.ascontiguousarray(g_values),
                    Labels(gradient.samples.names, np.ascontiguousarray(g_samples)),
                    g_components,
                    new.properties,
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


@pytest.mark.parametrize("axis", ["samples", "properties", "components", "gradient samples", "xyz"])
@pytest.mark.parametrize("gradient", [None, "positions"])
def test_entries_in_another_order_are_aligned_by_labels(pair, axis, gradient):
    y_true, y_pred = pair
    reordered = _reversed(y_pred, axis)
    expected = _hand(y_true, y_pred, gradient)
    for name in ("rmse", "mae", "r2"):
        got = getattr(metrics, name)(y_true, reordered, gradient=gradient)
        np.testing.assert_allclose(got, expected[name], rtol=1e-12)
    # the same order on both sides compares by position, and gives the same numbers
    both = metrics.rmse(_reversed(y_true, axis), reordered, gradient=gradient)
    np.testing.assert_allclose(both, expected["rmse"], rtol=1e-12)


def test_torch_entries_in_another_order(pair):
    pytest.importorskip("torch")
    y_true, y_pred = pair
    expected = _hand(y_true, y_pred, "positions")
    for axis in ("samples", "properties", "components"):
        got = metrics.rmse(
            to_torch(y_true), to_torch(_reversed(y_pred, axis)), gradient="positions"
        )
        assert isinstance(got, float)
        np.testing.assert_allclose(got, expected["rmse"], rtol=1e-12)


def _with_labels(tensor, what, function):
    """A copy of ``tensor`` whose ``what`` Labels (samples, properties or the first
    component) are replaced by ``function(labels)``, gradients kept."""
    blocks = []
    for block in tensor.blocks():
        samples, components, properties = block.samples, list(block.components), block.properties
        if what == "samples":
            samples = function(samples)
        elif what == "properties":
            properties = function(properties)
        else:
            components[0] = function(components[0])
        new = TensorBlock(block.values, samples, components, properties)
        for parameter, gradient in block.gradients():
            gradient_components = list(gradient.components)
            if what == "components":
                gradient_components[1] = function(gradient_components[1])
            new.add_gradient(
                parameter,
                TensorBlock(gradient.values, gradient.samples, gradient_components, properties),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def _shifted(labels, shift=5):
    return Labels(labels.names, np.asarray(labels.values) + shift)


def test_properties_that_differ(pair):
    y_true, y_pred = pair
    with raises(
        ValueError,
        "rmse: block (center_type=1) has different properties in y_true and y_pred: "
        "(target=0) is in y_true but not in y_pred and (target=5) is in y_pred but not in "
        "y_true",
    ):
        metrics.rmse(y_true, _with_labels(y_pred, "properties", _shifted))
    renamed = metatensor.rename_dimension(y_pred, "properties", "target", "energy")
    with raises(
        ValueError,
        "r2: block (center_type=1) has properties named ['target'] in y_true but ['energy'] "
        "in y_pred",
    ):
        metrics.r2(y_true, renamed)
    fewer = metatensor.slice(y_pred, "properties", Labels(["target"], np.c_[[0]]))
    with raises(
        ValueError,
        "mae: block (center_type=1) has 2 properties in y_true but 1 in y_pred: (target=1) "
        "is in y_true but not in y_pred",
    ):
        metrics.mae(y_true, fewer)


def test_components_that_differ(pair):
    y_true, y_pred = pair
    with raises(
        ValueError,
        "rmse: block (center_type=1) has different components in y_true and y_pred: (m=0) "
        "is in y_true but not in y_pred and (m=3) is in y_pred but not in y_true",
    ):
        metrics.rmse(y_true, _with_labels(y_pred, "components", lambda c: _shifted(c, 1)))
    with raises(
        ValueError,
        "rmse: block (center_type=1), 'positions' gradient has different components in "
        "y_true and y_pred: (m=0) is in y_true",
    ):
        metrics.rmse(
            y_true,
            _with_labels(y_pred, "components", lambda c: _shifted(c, 1)),
            gradient="positions",
        )
    renamed = metatensor.rename_dimension(y_pred, "components", "m", "n")
    with raises(
        ValueError,
        "rmse: block (center_type=1) has components named ['m'] in y_true but ['n'] in y_pred",
    ):
        metrics.rmse(y_true, renamed)
    _, flat = make_pair(np.random.default_rng(0), keys=((1,), (6,), (8,)))
    with raises(
        ValueError,
        "rmse: block (center_type=1) has 1 component dimensions in y_true but 0 in y_pred",
    ):
        metrics.rmse(y_true, flat)
    with raises(
        ValueError,
        "rmse: block (center_type=1), 'positions' gradient has 2 component dimensions in "
        "y_true but 1 in y_pred",
    ):
        metrics.rmse(y_true, flat, gradient="positions")


def test_samples_that_differ(pair):
    y_true, y_pred = pair
    indexed_true, indexed_pred = IndexedTensorMap(y_true), IndexedTensorMap(y_pred)
    with raises(
        ValueError,
        "rmse: block (center_type=1) has different samples in y_true and y_pred: "
        "(system=0, atom=0) is in y_true but not in y_pred and (system=5, atom=0) is in "
        "y_pred but not in y_true",
    ):
        metrics.rmse(indexed_true[[0, 1, 2, 3, 4]], indexed_pred[[1, 2, 3, 4, 5]])
    with raises(
        ValueError,
        "rmse: block (center_type=1) has 12 samples in y_true but 10 in y_pred: "
        "(system=5, atom=0) is in y_true but not in y_pred",
    ):
        metrics.rmse(y_true, indexed_pred[[0, 1, 2, 3, 4]])
    renamed = metatensor.rename_dimension(y_pred, "samples", "atom", "site")
    with raises(
        ValueError,
        "rmse: block (center_type=1) has samples named ['system', 'atom'] in y_true but "
        "['system', 'site'] in y_pred",
    ):
        metrics.rmse(y_true, renamed)


def test_gradient_samples_that_differ(pair):
    y_true, y_pred = pair
    blocks = []
    for block in y_pred.blocks():
        new = TensorBlock(block.values, block.samples, block.components, block.properties)
        gradient = block.gradient("positions")
        new.add_gradient(
            "positions",
            TensorBlock(
                np.ascontiguousarray(gradient.values[1:]),
                Labels(gradient.samples.names, np.ascontiguousarray(gradient.samples.values[1:])),
                gradient.components,
                new.properties,
            ),
        )
        blocks.append(new)
    fewer = TensorMap(y_pred.keys, blocks)
    with raises(
        ValueError,
        "rmse: block (center_type=1), 'positions' gradient has 24 samples in y_true but 23 "
        "in y_pred: (sample=0, system=0, atom=0) is in y_true but not in y_pred",
    ):
        metrics.rmse(y_true, fewer, gradient="positions")
    # the values do not look at the gradients
    np.testing.assert_allclose(
        metrics.rmse(y_true, fewer), _hand(y_true, y_pred)["rmse"], rtol=1e-12
    )


def test_a_block_without_properties():
    samples = Labels.range("system", 3)
    empty = TensorBlock(np.zeros((3, 0)), samples, [], Labels("e", np.zeros((0, 1), np.int32)))
    full = TensorBlock(np.ones((3, 1)), samples, [], Labels.range("e", 1))
    keys = Labels(["center_type"], np.array([[1], [6]]))
    tensor = TensorMap(keys, [full.copy(), empty.copy()])
    with raises(
        ValueError,
        "rmse: block (center_type=6) has 0 properties in y_true, so nothing to compare; drop "
        "the blocks without properties from y_true and y_pred (metatensor.drop_blocks)",
    ):
        metrics.rmse(tensor, tensor)
    other = TensorMap(keys, [full.copy(), full.copy()])
    with raises(ValueError, "r2: block (center_type=6) has 0 properties in y_pred"):
        metrics.r2(other, tensor)


def test_blocks_without_samples_count_nothing(pair):
    y_true, y_pred = pair
    # entry 5 (system=5) only: every block keeps 2 samples; slicing it off one
    # block leaves that block empty in both
    keep = Labels(["system"], np.array([[0], [1]]))
    blocks_true = [metatensor.slice_block(b, "samples", keep) for b in y_true.blocks()]
    blocks_pred = [metatensor.slice_block(b, "samples", keep) for b in y_pred.blocks()]
    none = Labels(["system"], np.zeros((0, 1), np.int32))
    blocks_true[1] = metatensor.slice_block(y_true.block(1), "samples", none)
    blocks_pred[1] = metatensor.slice_block(y_pred.block(1), "samples", none)
    sliced_true, sliced_pred = (
        TensorMap(y_true.keys, blocks_true),
        TensorMap(y_pred.keys, blocks_pred),
    )
    expected = _hand(sliced_true, sliced_pred, "positions")
    for name in ("rmse", "mae", "r2"):
        got = getattr(metrics, name)(sliced_true, sliced_pred, gradient="positions")
        np.testing.assert_allclose(got, expected[name], rtol=1e-12)


# ---------------------------------------------------------------------------------
# array contents and array libraries
# ---------------------------------------------------------------------------------


def _set_entry(tensor, block_position, value, parameter=None):
    """A copy of ``tensor`` with one entry of a block's values (or gradient) set."""
    blocks = []
    for b, block in enumerate(tensor.blocks()):
        values = np.array(block.values)
        if b == block_position and parameter is None:
            values.reshape(-1)[3] = value
        new = TensorBlock(values, block.samples, block.components, block.properties)
        for name, gradient in block.gradients():
            g_values = np.array(gradient.values)
            if b == block_position and name == parameter:
                g_values.reshape(-1)[5] = value
            new.add_gradient(
                name, TensorBlock(g_values, gradient.samples, gradient.components, new.properties)
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def test_nan_or_infinity_is_an_error(pair):
    y_true, y_pred = pair
    with raises(ValueError, "rmse: y_true block (center_type=6) has NaN or infinity in its values"):
        metrics.rmse(_set_entry(y_true, 1, np.nan), y_pred)
    with raises(
        ValueError,
        "mae: y_pred block (center_type=8) has NaN or infinity in its 'positions' gradient",
    ):
        metrics.mae(y_true, _set_entry(y_pred, 2, np.inf, "positions"), gradient="positions")
    with raises(ValueError, "r2: y_pred block (center_type=1) has NaN or infinity in its values"):
        metrics.r2(y_true, _set_entry(y_pred, 0, -np.inf))
    scorer = metrics.scorer("neg_rmse")
    model = _ConstantModel(_set_entry(y_pred, 0, np.nan))
    with raises(ValueError, "rmse: y_pred block (center_type=1) has NaN or infinity"):
        scorer(model, None, y_true)
    # a gradient that is not compared is not looked at
    got = metrics.rmse(y_true, _set_entry(y_pred, 0, np.nan, "positions"))
    np.testing.assert_allclose(got, _hand(y_true, y_pred)["rmse"], rtol=1e-12)


class _ConstantModel:
    """An estimator whose prediction is a given TensorMap."""

    def __init__(self, prediction):
        self.prediction = prediction

    def predict(self, X):
        return self.prediction


def test_arrays_that_are_not_real_numbers(pair):
    y_true, y_pred = pair
    with raises(TypeError, "rmse: y_pred block (center_type=1) has bool values"):
        metrics.rmse(y_true, map_arrays(y_pred, lambda array: array > 0))
    with raises(
        TypeError,
        "rmse: y_true block (center_type=1) has complex 'positions' gradient; the metrics "
        "compare real numbers",
    ):
        metrics.rmse(
            map_arrays(y_true, lambda array: array.astype(complex)),
            map_arrays(y_pred, lambda array: array.astype(complex)),
            gradient="positions",
        )
    torch = pytest.importorskip("torch")
    with raises(TypeError, "mae: y_true block (center_type=1) has torch.bool values"):
        metrics.mae(map_arrays(to_torch(y_true), lambda array: array > 0), to_torch(y_pred))
    with raises(TypeError, "mae: y_true block (center_type=1) has complex values"):
        metrics.mae(
            to_torch(y_true, dtype=torch.complex128), to_torch(y_pred, dtype=torch.complex128)
        )


def test_mixed_array_libraries(pair):
    pytest.importorskip("torch")
    y_true, y_pred = pair
    with raises(
        TypeError,
        "rmse: block (center_type=1) holds torch (cpu) arrays in y_true but numpy in y_pred",
    ):
        metrics.rmse(to_torch(y_true), y_pred)
    with raises(
        TypeError, "r2: block (center_type=1) holds numpy arrays in y_true but torch (cpu) in"
    ):
        metrics.r2(y_true, to_torch(y_pred), gradient="positions")


def test_float32_torch(pair):
    torch = pytest.importorskip("torch")
    y_true, y_pred = pair
    expected = _hand(y_true, y_pred)
    got = metrics.r2(to_torch(y_true, torch.float32), to_torch(y_pred, torch.float32))
    assert isinstance(got, float)
    np.testing.assert_allclose(got, expected["r2"], rtol=1e-5)


def test_inputs_are_not_mutated(pair):
    y_true, y_pred = pair
    reordered = _reversed(y_pred, "properties")
    before = [np.array(b.values) for b in reordered.blocks()]
    weights = np.linspace(0.0, 1.0, 6)
    metrics.rmse(IndexedTensorMap(y_true), reordered, sample_weight=weights)
    for block, values in zip(reordered.blocks(), before):
        np.testing.assert_array_equal(block.values, values)
    np.testing.assert_array_equal(weights, np.linspace(0.0, 1.0, 6))


# ---------------------------------------------------------------------------------
# sample_weight
# ---------------------------------------------------------------------------------


def _n_rows(block):
    return int(np.prod([len(c) for c in block.components]))


def _entry_row_weights(tensor, weight_of_system, gradient=None):
    """For each block, the weight of each row (values or gradient), by loops."""
    out = []
    for block in tensor.blocks():
        per_sample = [weight_of_system[int(s)] for s in block.samples.column("system")]
        if gradient is None:
            out.append(np.array([w for w in per_sample for _ in range(_n_rows(block))]))
            continue
        part = block.gradient(gradient)
        parents = part.samples.column("sample")
        out.append(np.array([per_sample[int(p)] for p in parents for _ in range(_n_rows(part))]))
    return out


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_weighted_one_block_like_sklearn(gradient):
    _, y = make_pair(np.random.default_rng(8), keys=((0,),), n_systems=7, n_components=2)
    y_pred = _perturbed(y, 9)
    indexed = IndexedTensorMap(y)
    weights = np.random.default_rng(10).uniform(0.0, 2.0, size=len(indexed))
    weights[2] = 0.0
    rows = _entry_row_weights(y, dict(zip(indexed.entries.tolist(), weights)), gradient)[0]
    true, pred = _matrices(y, gradient)[0], _matrices(y_pred, gradient)[0]
    entries = np.repeat(rows, true.shape[1])
    for name, expected in [
        (
            "r2",
            sklearn.metrics.r2_score(
                true, pred, sample_weight=rows, multioutput="variance_weighted"
            ),
        ),
        (
            "rmse",
            sklearn.metrics.root_mean_squared_error(
                true.ravel(), pred.ravel(), sample_weight=entries
            ),
        ),
        (
            "mse",
            sklearn.metrics.mean_squared_error(true.ravel(), pred.ravel(), sample_weight=entries),
        ),
        (
            "mae",
            sklearn.metrics.mean_absolute_error(true.ravel(), pred.ravel(), sample_weight=entries),
        ),
    ]:
        got = getattr(metrics, name)(indexed, y_pred, gradient=gradient, sample_weight=weights)
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_weighted_pooled_over_blocks(pair, gradient):
    y_true, y_pred = pair
    indexed = IndexedTensorMap(y_true)
    weights = np.random.default_rng(11).uniform(0.0, 3.0, size=len(indexed))
    rows = _entry_row_weights(y_true, dict(zip(indexed.entries.tolist(), weights)), gradient)
    expected = _hand(y_true, y_pred, gradient, rows)
    for name in ("rmse", "mse", "mae", "r2"):
        got = getattr(metrics, name)(
            indexed, _reversed(y_pred, "samples"), gradient=gradient, sample_weight=list(weights)
        )
        np.testing.assert_allclose(got, expected[name], rtol=1e-12, err_msg=name)


def _weight_map(tensor, rng):
    """A TensorMap of random row weights laid out as ``tensor``, gradients included."""
    blocks = []
    properties = Labels.range("weight", 1)
    for block in tensor.blocks():
        shape = (*block.values.shape[:-1], 1)
        new = TensorBlock(rng.uniform(size=shape), block.samples, block.components, properties)
        for parameter, gradient in block.gradients():
            shape = (*gradient.values.shape[:-1], 1)
            new.add_gradient(
                parameter,
                TensorBlock(
                    rng.uniform(size=shape), gradient.samples, gradient.components, properties
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_weight_map(pair, gradient):
    y_true, y_pred = pair
    weight_map = _weight_map(y_true, np.random.default_rng(12))
    rows = [m.ravel() for m in _matrices(weight_map, gradient)]
    expected = _hand(y_true, y_pred, gradient, rows)
    for weights in (weight_map, IndexedTensorMap(weight_map)):
        for name in ("rmse", "mse", "mae", "r2"):
            got = getattr(metrics, name)(y_true, y_pred, gradient=gradient, sample_weight=weights)
            np.testing.assert_allclose(got, expected[name], rtol=1e-12, err_msg=name)


def test_torch_weights(pair):
    pytest.importorskip("torch")
    y_true, y_pred = pair
    weight_map = _weight_map(y_true, np.random.default_rng(13))
    rows = [m.ravel() for m in _matrices(weight_map, "positions")]
    expected = _hand(y_true, y_pred, "positions", rows)
    got = metrics.r2(
        to_torch(y_true),
        to_torch(_reversed(y_pred, "properties")),
        gradient="positions",
        sample_weight=to_torch(weight_map),
    )
    assert isinstance(got, float)
    np.testing.assert_allclose(got, expected["r2"], rtol=1e-12)


def _shift_entry(tensor, system, amount):
    """A copy of ``tensor`` with ``amount`` added to every row of one system."""
    blocks = []
    for block in tensor.blocks():
        in_system = np.asarray(block.samples.column("system")) == system
        values = np.array(block.values)
        values[in_system] += amount
        new = TensorBlock(values, block.samples, block.components, block.properties)
        for parameter, gradient in block.gradients():
            g_values = np.array(gradient.values)
            g_values[in_system[np.asarray(gradient.samples.column("sample"))]] -= amount
            new.add_gradient(
                parameter,
                TensorBlock(g_values, gradient.samples, gradient.components, new.properties),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_a_zero_weight_drops_the_row_exactly(pair, gradient):
    y_true, y_pred = pair
    indexed_true, indexed_pred = IndexedTensorMap(y_true), IndexedTensorMap(y_pred)
    weights = np.ones(len(indexed_true))
    weights[3] = 0.0
    system = int(indexed_true.entries[3])
    changed_true = IndexedTensorMap(_shift_entry(y_true, system, 100.0))
    changed_pred = _shift_entry(y_pred, system, -40.0)
    keep = [0, 1, 2, 4, 5]
    for name in ("rmse", "mae", "r2"):
        metric = getattr(metrics, name)
        got = metric(indexed_true, y_pred, gradient=gradient, sample_weight=weights)
        assert metric(changed_true, changed_pred, gradient=gradient, sample_weight=weights) == got
        without = metric(indexed_true[keep], indexed_pred[keep], gradient=gradient)
        np.testing.assert_allclose(got, without, rtol=1e-12)


def test_bad_sample_weights(pair):
    y_true, y_pred = pair
    with raises(
        TypeError,
        "rmse: an array-like sample_weight holds one weight per entry of an IndexedTensorMap, "
        "but y_true is a TensorMap: wrap y_true (and X) with skmetalstsq.IndexedTensorMap",
        "or give a TensorMap of weights",
    ):
        metrics.rmse(y_true, y_pred, sample_weight=np.ones(6))
    indexed = IndexedTensorMap(y_true)
    with raises(ValueError, "mae: sample_weight has 5 weights but y_true has 6 'system' entries"):
        metrics.mae(indexed, y_pred, sample_weight=np.ones(5))
    with raises(ValueError, "r2: sample_weight has negative weights (first at position 0: -1.0)"):
        metrics.r2(indexed, y_pred, sample_weight=[-1.0, 1, 1, 1, 1, 1])
    with raises(ValueError, "rmse: sample_weight is 0 for every compared row of y_true"):
        metrics.rmse(indexed, y_pred, sample_weight=np.zeros(6))
    weight_map = _weight_map(y_true, np.random.default_rng(14))
    with raises(
        ValueError, "rmse: y_true and sample_weight have different keys: only in y_true: ["
    ):
        metrics.rmse(
            y_true,
            y_pred,
            sample_weight=metatensor.drop_blocks(weight_map, Labels(["center_type"], np.c_[[8]])),
        )
    no_gradient = metatensor.remove_gradients(weight_map)
    with raises(
        ValueError,
        "rmse: sample_weight block (center_type=1) has no 'positions' gradient (it has [])",
    ):
        metrics.rmse(y_true, y_pred, gradient="positions", sample_weight=no_gradient)
    # without gradient, a weight map of the values is enough
    rows = [m.ravel() for m in _matrices(no_gradient)]
    np.testing.assert_allclose(
        metrics.rmse(y_true, y_pred, sample_weight=no_gradient),
        _hand(y_true, y_pred, None, rows)["rmse"],
        rtol=1e-12,
    )


# ---------------------------------------------------------------------------------
# scorers
# ---------------------------------------------------------------------------------


def _predicted_by_hand(X, y, weights):
    """X @ w.T block by block, values and 'positions' gradient, with numpy."""

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
    return TensorMap(X.keys, blocks)


@pytest.mark.parametrize(
    "name, metric, sign",
    [
        ("r2", "r2", 1),
        ("neg_rmse", "rmse", -1),
        ("neg_mae", "mae", -1),
        ("neg_mse", "mse", -1),
        ("neg_root_mean_squared_error", "rmse", -1),
        ("neg_mean_absolute_error", "mae", -1),
        ("neg_mean_squared_error", "mse", -1),
    ],
)
@pytest.mark.parametrize("gradient", [None, "positions"])
def test_scorer(name, metric, sign, gradient):
    X, y = make_pair(np.random.default_rng(6), n_systems=8, noise=0.5)
    model = TensorMapLstsq(rcond=1e-12).fit(X, y)
    predicted = _predicted_by_hand(X, y, metatensor.lstsq(X, y, rcond=1e-12))
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


def test_scorer_with_sample_weight():
    X, y = make_pair(np.random.default_rng(15), n_systems=8, noise=0.5)
    model = TensorMapLstsq(rcond=1e-12).fit(X, y)
    predicted = _predicted_by_hand(X, y, metatensor.lstsq(X, y, rcond=1e-12))
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    weights = np.random.default_rng(16).uniform(size=len(Xi))
    rows = _entry_row_weights(y, dict(zip(yi.entries.tolist(), weights)), "positions")
    expected = -_hand(y, predicted, "positions", rows)["rmse"]
    score = metrics.scorer("neg_root_mean_squared_error", gradient="positions")
    np.testing.assert_allclose(score(model, Xi, yi, sample_weight=weights), expected, rtol=1e-8)


def test_scorer_bad_arguments():
    names = (
        "['neg_mae', 'neg_mean_absolute_error', 'neg_mean_squared_error', 'neg_mse', "
        "'neg_rmse', 'neg_root_mean_squared_error', 'r2']"
    )
    with raises(ValueError, f"scorer: name must be one of {names}, got 'rmse'"):
        metrics.scorer("rmse")
    with raises(ValueError, "scorer: name must be one of"):
        metrics.scorer(["r2"])
    with raises(TypeError, "scorer: gradient must be None or the name of a gradient"):
        metrics.scorer("r2", gradient=["positions"])
    _, y = make_pair(np.random.default_rng(0))
    with raises(TypeError, "rmse: gradient must be None or the name of a gradient (a str)"):
        metrics.rmse(y, y, gradient=1)


def test_errors(pair):
    y_true, y_pred = pair
    with raises(TypeError, "rmse: y_pred must be a metatensor.TensorMap"):
        metrics.rmse(y_true, np.zeros(3))
    with pytest.raises(
        ValueError, match=r"r2: y_true and y_pred have different keys: only in y_true: \[.*8"
    ):
        metrics.r2(y_true, metatensor.drop_blocks(y_pred, Labels(["center_type"], np.c_[[8]])))
    with raises(ValueError, "block (center_type=1) of y_true has no 'cell'"):
        metrics.mae(y_true, y_pred, gradient="cell")
    no_gradient = metatensor.remove_gradients(y_pred)
    with raises(ValueError, "of y_pred has no 'positions' gradient (it has [])"):
        metrics.rmse(y_true, no_gradient, gradient="positions")


# ---------------------------------------------------------------------------------
# scikit-learn's names in TensorMapLstsqCV
# ---------------------------------------------------------------------------------

SKLEARN_NAMES = [
    ("r2", "r2"),
    ("neg_root_mean_squared_error", "neg_rmse"),
    ("neg_mean_absolute_error", "neg_mae"),
    ("neg_mean_squared_error", "neg_mse"),
]


@pytest.fixture(scope="module")
def indexed_pair():
    rng = np.random.default_rng(17)
    X, y = make_pair(rng, keys=((1,), (6,)), n_systems=12, n_features=5, noise=0.3)
    scales = np.logspace(0, -6, 5)
    X = map_arrays(X, lambda array: array * scales)
    return IndexedTensorMap(X), IndexedTensorMap(y)


def _assert_same_results(got, expected):
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key.endswith("_time"):  # seconds differ from run to run
            continue
        if key == "params":
            assert got[key] == value
        else:
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(value), err_msg=key)


@pytest.mark.parametrize("sklearn_name, name", SKLEARN_NAMES)
@pytest.mark.parametrize("per_block", [False, True])
def test_cv_accepts_sklearn_names(indexed_pair, sklearn_name, name, per_block):
    X, y = indexed_pair
    rconds = [1e-12, 1e-5, 1e-2]

    def results(scoring):
        model = TensorMapLstsqCV(rconds=rconds, cv=3, scoring=scoring, per_block=per_block)
        return model.fit(X, y).cv_results_

    expected = results(name)
    _assert_same_results(results(sklearn_name), expected)
    _assert_same_results(results(metrics.scorer(sklearn_name)), expected)
    gradient = results(metrics.scorer(name, gradient="positions"))
    _assert_same_results(results(metrics.scorer(sklearn_name, gradient="positions")), gradient)


@pytest.mark.parametrize("gradient", [None, "positions"])
def test_cv_neg_mse_is_the_search_score(indexed_pair, gradient):
    X, y = indexed_pair
    rconds = [1e-12, 1e-5, 1e-2]
    scoring = metrics.scorer("neg_mse", gradient=gradient)
    model = TensorMapLstsqCV(rconds=rconds, cv=KFold(3), scoring=scoring).fit(X, y)
    search = GridSearchCV(
        TensorMapLstsq(driver="gelsd"), {"rcond": rconds}, cv=KFold(3), scoring=scoring
    ).fit(X, y)
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], search.cv_results_["mean_test_score"], rtol=1e-7
    )
    for split in range(3):
        key = f"split{split}_test_score"
        np.testing.assert_allclose(model.cv_results_[key], search.cv_results_[key], rtol=1e-7)


# ---------------------------------------------------------------------------------
# scikit-learn's own scorers on IndexedTensorMaps
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sklearn_name, name", SKLEARN_NAMES)
@pytest.mark.parametrize("n_jobs", [None, 2])
def test_sklearn_string_scorers_stop_the_search(indexed_pair, sklearn_name, name, n_jobs):
    X, y = indexed_pair
    search = GridSearchCV(
        TensorMapLstsq(), {"rcond": [1e-12, 1e-2]}, cv=3, scoring=sklearn_name, n_jobs=n_jobs
    )
    with joblib.parallel_config(backend="threading"):
        with raises(
            metrics.UnsupportedScoringError,
            f"scikit-learn's '{sklearn_name}' scorer cannot score IndexedTensorMaps",
            f"use scoring=skmetalstsq.metrics.scorer('{name}')",
        ):
            search.fit(X, y)
    assert not hasattr(search, "best_score_")
    # the scorer it names does the search
    search.set_params(scoring=metrics.scorer(name))
    with joblib.parallel_config(backend="threading"):
        search.fit(X, y)
    assert np.isfinite(search.best_score_)


def test_sklearn_scorers_without_an_equivalent(indexed_pair):
    X, y = indexed_pair
    with raises(
        metrics.UnsupportedScoringError,
        "scikit-learn's 'neg_max_error' scorer cannot score IndexedTensorMaps",
        "use scoring=skmetalstsq.metrics.scorer(name) with a name of ['neg_mae', 'neg_mse', "
        "'neg_rmse', 'r2'], or a callable (estimator, X, y) -> float",
    ):
        cross_val_score(TensorMapLstsq(), X, y, cv=3, scoring="neg_max_error")
    unregistered = sklearn.metrics.make_scorer(sklearn.metrics.median_absolute_error)
    with raises(
        metrics.UnsupportedScoringError,
        "scikit-learn's make_scorer(median_absolute_error",
        "scorer cannot score IndexedTensorMaps",
    ):
        cross_val_score(TensorMapLstsq(), X, y, cv=3, scoring=unregistered)


def test_other_array_conversions_are_type_errors(indexed_pair):
    X, y = indexed_pair
    with raises(
        TypeError,
        "IndexedTensorMap cannot be converted to a numpy array; use its .tensor",
        "use scoring=skmetalstsq.metrics.scorer(name), e.g. scorer('neg_rmse')",
    ):
        np.asarray(y)
    # a metric of one's own may convert y itself: its error is its own
    model = TensorMapLstsq().fit(X, y)

    def own_metric(y_true, y_pred):
        return float(np.asarray(y_true).sum())

    with raises(TypeError, "IndexedTensorMap cannot be converted to a numpy array"):
        sklearn.metrics.make_scorer(own_metric)(model, X, y)
    assert not issubclass(metrics.UnsupportedScoringError, Exception)


def test_a_dict_of_scorers_takes_the_fit_weights_of_a_search():
    # without metadata routing, GridSearchCV gives the fit's sample_weight to every
    # scorer that accepts it; a dict of scorers asks each of them
    from sklearn.model_selection import GridSearchCV, KFold

    X, y = make_pair(np.random.default_rng(7), keys=((0,),), n_systems=9)
    X, y = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    weights = np.random.default_rng(8).uniform(0.5, 2.0, len(X))
    scoring = {"energy": metrics.scorer("neg_rmse"), "forces": metrics.scorer("neg_mae")}
    search = GridSearchCV(
        TensorMapLstsq(), {"alpha": [0.0, 1.0]}, cv=KFold(3), scoring=scoring, refit="energy"
    ).fit(X, y, sample_weight=weights)
    single = GridSearchCV(
        TensorMapLstsq(), {"alpha": [0.0, 1.0]}, cv=KFold(3), scoring=scoring["energy"]
    ).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_energy"], single.cv_results_["mean_test_score"], rtol=1e-12
    )


def _package_imports():
    """Each module of skmetalstsq -> the modules of skmetalstsq it imports, anywhere in it."""
    import ast
    from pathlib import Path

    package = Path(metrics.__file__).parent
    modules = {path.stem: path for path in package.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module is None:
                    imported.update(alias.name for alias in node.names)
                else:
                    imported.add(node.module.split(".")[0])
        graph[name] = imported & set(modules)
    return graph


def test_no_module_that_metrics_uses_imports_metrics():
    # imports run one way: what metrics builds on never imports it, not even in a function
    graph = _package_imports()
    below, stack = set(), list(graph["metrics"])
    while stack:
        name = stack.pop()
        if name not in below:
            below.add(name)
            stack.extend(graph[name])
    assert not [name for name in below if "metrics" in graph[name]]
    assert "metrics" not in below


# ---------------------------------------------------------------------------------
# constant targets, empty maps
# ---------------------------------------------------------------------------------


def _rows_map(values, n_blocks=1):
    """A TensorMap of ``n_blocks`` blocks, each with the (rows, properties) ``values``."""
    values = np.asarray(values)
    samples = Labels.range("system", values.shape[0])
    properties = Labels.range("e", values.shape[1])
    blocks = [TensorBlock(values.copy(), samples, [], properties) for _ in range(n_blocks)]
    return TensorMap(Labels.range("center_type", n_blocks), blocks)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weights", [None, [3.0, 3.0, 3.0], [0.7, 2.9, 1.3], [3.0, 3.0, 0.0]])
@pytest.mark.parametrize("value", [0.1, 1 / 3, 0.9])
def test_r2_of_constant_columns(value, weights, dtype):
    # every column constant (0.1 and 0.7, in two blocks): their weighted means do not
    # round back to the values, yet the deviations are 0 and R^2 is 1.0 or 0.0, as
    # scikit-learn's r2_score (force_finite=True) defines it for a zero denominator
    true = np.array([[value, 0.7]] * 3, dtype=dtype)
    if weights is not None and weights[-1] == 0:
        true[-1] = [5.0, -1.0]  # a row of no weight does not count
    y_true = _rows_map(true, n_blocks=2)
    sample_weight = None if weights is None else np.asarray(weights)
    if weights is not None:
        y_true = IndexedTensorMap(y_true)
    tensor = y_true.tensor if weights is not None else y_true
    exact = map_arrays(tensor, lambda array: array.copy())
    off = map_arrays(tensor, lambda array: array + np.asarray(0.05, dtype))
    # scikit-learn's values, on a constant whose mean it computes exactly
    constant = np.full(3, 2.0)
    assert metrics.r2(y_true, exact, sample_weight=sample_weight) == sklearn.metrics.r2_score(
        constant, constant
    )
    assert metrics.r2(y_true, off, sample_weight=sample_weight) == sklearn.metrics.r2_score(
        constant, constant + 0.05
    )


def test_r2_of_a_constant_torch_target():
    torch = pytest.importorskip("torch")
    # float32 means of 0.9 are 0.9 + 6e-8, weighted or not
    y_true = to_torch(_rows_map([[0.9], [0.9], [0.9]]), dtype=torch.float32)
    y_pred = to_torch(_rows_map([[1.0], [0.9], [0.9]]), dtype=torch.float32)
    weights = IndexedTensorMap(to_torch(_rows_map([[0.7], [2.9], [1.3]]), dtype=torch.float32))
    assert metrics.r2(y_true, y_pred) == 0.0
    assert metrics.r2(y_true, y_true) == 1.0
    assert metrics.r2(y_true, y_pred, sample_weight=weights) == 0.0


def test_r2_pools_constant_columns_with_the_others():
    # a constant column adds its residuals and no deviation: 1 - SSR / SST of the rest
    true = np.array([[0.1, 1.0], [0.1, 2.0], [0.1, 4.0]])
    pred = np.array([[0.3, 1.5], [0.1, 2.0], [0.1, 3.0]])
    weights = np.array([3.0, 1.0, 2.0])
    deviations = (weights * (true[:, 1] - np.average(true[:, 1], weights=weights)) ** 2).sum()
    expected = 1 - (weights[:, None] * (true - pred) ** 2).sum() / deviations
    got = metrics.r2(IndexedTensorMap(_rows_map(true)), _rows_map(pred), sample_weight=weights)
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    # scikit-learn's "variance_weighted" leaves the constant column's residuals out
    np.testing.assert_allclose(
        sklearn.metrics.r2_score(
            true[:, 1], pred[:, 1], sample_weight=weights, multioutput="variance_weighted"
        ),
        1 - (weights * (true - pred)[:, 1] ** 2).sum() / deviations,
        rtol=1e-14,
    )


def test_score_of_a_constant_weighted_target():
    # the reported case: one test row of weight 3 gave -5.9e33
    model = TensorMapLstsq(fit_intercept=True).fit([[0.0], [1.0], [2.0]], [0.0, 1.0, 2.5])
    assert model.score([[1.0]], [0.1], sample_weight=[3.0]) == 0.0
    assert model.score([[1.0], [1.0]], [0.1, 0.1], sample_weight=[3.0, 3.0]) == 0.0
    exact = float(model.predict([[1.0]])[0])
    assert model.score([[1.0]] * 3, [exact] * 3, sample_weight=[0.3, 0.3, 0.3]) == 1.0


@pytest.mark.parametrize("name", ["rmse", "mse", "mae", "r2"])
def test_empty_maps_score_nan(name):
    # no entry to compare: nan, never a perfect score
    empty = _rows_map(np.zeros((0, 2)), n_blocks=2)
    metric = getattr(metrics, name)
    assert np.isnan(metric(empty, empty))
    assert np.isnan(metric(IndexedTensorMap(empty), empty, sample_weight=np.zeros(0)))
    X, y = make_pair(np.random.default_rng(3), keys=((0,), (1,)))
    X, y = IndexedTensorMap(X), IndexedTensorMap(y)
    model = TensorMapLstsq().fit(X, y)
    none = np.zeros(0, dtype=int)
    assert np.isnan(metric(y[none], model.predict(X[none])))
    assert np.isnan(metric(y[none], model.predict(X[none]), gradient="positions"))
    if name == "r2":
        assert np.isnan(model.score(X[none], y[none]))


def test_scorers_compare_by_what_they_compute():
    a = metrics.scorer("neg_rmse", gradient="positions")
    b = metrics.scorer("neg_root_mean_squared_error", gradient="positions")
    assert a == metrics.scorer("neg_rmse", gradient="positions")
    assert hash(a) == hash(metrics.scorer("neg_rmse", gradient="positions"))
    assert a != metrics.scorer("neg_rmse")
    assert a != metrics.scorer("neg_mae", gradient="positions")
    assert a == b and hash(a) == hash(b)  # scikit-learn's name of the same metric
    assert a != "scorer('neg_rmse', gradient='positions')"
    assert len({a, metrics.scorer("neg_rmse", gradient="positions")}) == 1
    with sklearn.config_context(enable_metadata_routing=True):
        requested = metrics.scorer("neg_rmse", gradient="positions")
        requested.set_score_request(sample_weight=True)
    assert requested != a


@pytest.mark.parametrize("fitted", [False, True])
def test_get_params_survive_a_save_and_load(tmp_path, fitted):
    from skmetalstsq import load, save

    model = TensorMapLstsqCV(
        rconds=[1e-12, 1e-3], cv=3, scoring=metrics.scorer("neg_rmse", gradient="positions")
    )
    if fitted:
        X, y = make_pair(np.random.default_rng(9), keys=((0,),), n_systems=9)
        model.fit(IndexedTensorMap(X), IndexedTensorMap(y))
    save(tmp_path / "model.zip", model)
    loaded = load(tmp_path / "model.zip")
    assert loaded.get_params()["scoring"] is not model.scoring
    assert loaded.get_params() == model.get_params()


@pytest.mark.parametrize("shape", [(24,), (12, 2)])
def test_metrics_of_arrays_equal_scikit_learn(shape):
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(21)
    y_true, y_pred = rng.normal(size=shape), rng.normal(size=shape)
    weights = rng.uniform(0.1, 2.0, size=shape[0])
    multioutput = {"multioutput": "variance_weighted"} if len(shape) == 2 else {}
    for ours, theirs in (
        (metrics.r2, lambda *a, **k: r2_score(*a, **k, **multioutput)),
        (metrics.mse, mean_squared_error),
        (metrics.mae, mean_absolute_error),
    ):
        for w in (None, weights, 2.5):
            expected_w = None if w is None else np.broadcast_to(w, (shape[0],))
            np.testing.assert_allclose(
                ours(y_true, y_pred, sample_weight=w),
                theirs(y_true, y_pred, sample_weight=expected_w),
                rtol=1e-12,
            )
    with pytest.raises(ValueError, match="arrays have no 'positions' gradient"):
        metrics.rmse(y_true, y_pred, gradient="positions")


def test_scorers_in_a_grid_search_on_arrays():
    from sklearn.model_selection import GridSearchCV

    rng = np.random.default_rng(22)
    A = rng.normal(size=(30, 3))
    b = A @ [1.0, 2.0, 3.0] + rng.normal(size=30)
    grid = {"alpha": [0.1, 10.0]}
    ours = GridSearchCV(TensorMapLstsq(), grid, scoring=metrics.scorer("r2"), cv=3).fit(A, b)
    theirs = GridSearchCV(TensorMapLstsq(), grid, scoring="r2", cv=3).fit(A, b)
    np.testing.assert_allclose(
        ours.cv_results_["mean_test_score"], theirs.cv_results_["mean_test_score"], rtol=1e-12
    )
