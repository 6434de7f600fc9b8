"""Every bad input gets a clear error, naming the block and both sides, before any work."""

import re
from pathlib import Path

import metatensor
import numpy as np
import pytest
from builders import as_numpy, make_pair, map_arrays, reorder_keys, stacked, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_validate, train_test_split

import skmetalstsq
import skmetalstsq._estimator
from skmetalstsq import IndexedTensorMap, TensorMapLstsq, TensorMapLstsqCV

try:
    import torch
except ImportError:  # the torch cases skip
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

KEYS = ((0,), (1,), (3,))


def data(seed=0, **kwargs):
    options = dict(keys=KEYS, n_components=3, n_targets=2)
    options.update(kwargs)
    return make_pair(np.random.default_rng(seed), **options)


def replace_block(tensor, key, block):
    """``tensor`` with the block of ``key`` (a tuple) replaced by ``block``."""
    blocks = [
        block if tuple(int(v) for v in k.values) == key else b.copy() for k, b in tensor.items()
    ]
    return TensorMap(tensor.keys, blocks)


def rebuild(block, samples=None, components=None, gradients=None):
    """A copy of ``block`` with other samples, components or gradients.

    ``gradients`` maps parameter -> TensorBlock (or None to drop all).
    """
    new = TensorBlock(
        block.values.copy(),
        block.samples if samples is None else samples,
        block.components if components is None else components,
        block.properties,
    )
    if gradients is None:
        gradients = dict(block.gradients())
    for parameter, gradient in gradients.items():
        new.add_gradient(
            parameter,
            TensorBlock(
                gradient.values.copy(), gradient.samples, gradient.components, new.properties
            ),
        )
    return new


@pytest.fixture
def no_solve(monkeypatch):
    """Fail the test if a block is solved: errors must come before any work."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a block was solved before the input error was raised")

    monkeypatch.setattr(skmetalstsq._estimator, "solve_systems", forbidden)
    monkeypatch.setattr(skmetalstsq._estimator, "factorize", forbidden)  # partial_fit's work


def raises(error, *parts):
    """pytest.raises matching every one of ``parts`` (literal text) in the message."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in parts)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


# ---------------------------------------------------------------------------------
# keys, samples, components, gradients
# ---------------------------------------------------------------------------------


def test_keys_differ(no_solve):
    X, y = data()
    y = TensorMap(Labels(["center_type"], np.array([[0], [1], [2]])), [b.copy() for b in y])
    with raises(
        ValueError, "TensorMapLstsq.fit", "only in X: ['(center_type=3)']", "(center_type=2)"
    ):
        TensorMapLstsq().fit(X, y)


def test_key_names_differ(no_solve):
    X, y = data()
    y = metatensor.rename_dimension(y, "keys", "center_type", "species")
    with raises(ValueError, "TensorMapLstsq.fit", "['center_type'] in X", "['species'] in y"):
        TensorMapLstsq().fit(X, y)


def test_keys_in_another_order_are_matched():
    X, y = data()
    shuffled = reorder_keys(y, [1, 2, 0])
    first = TensorMapLstsq(rcond=1e-10).fit(X, y)
    second = TensorMapLstsq(rcond=1e-10).fit(X, shuffled)
    for key in X.keys:
        np.testing.assert_array_equal(
            first.weights_.block(key).values, second.weights_.block(key).values
        )


def test_sample_count_differs(no_solve):
    X, y = data()
    kept = Labels(["system"], np.array([[0], [1], [2], [3]], dtype=np.int32))
    y = replace_block(y, (3,), metatensor.slice_block(y.block({"center_type": 3}), "samples", kept))
    with raises(
        ValueError, "TensorMapLstsq.fit: block (center_type=3)", "12 samples in X but 8 in y"
    ):
        TensorMapLstsq().fit(X, y)


def test_sample_values_differ(no_solve):
    X, y = data()
    block = y.block({"center_type": 1})
    values = np.array(block.samples.values)
    values[:, 0] += 10  # other systems
    y = replace_block(y, (1,), rebuild(block, samples=Labels(block.samples.names, values)))
    with raises(
        ValueError,
        "block (center_type=1)",
        "different samples in X and y",
        "row 0 is (0, 0) in X but (10, 0) in y",
    ):
        TensorMapLstsq().fit(X, y)


def _samples_reversed(tensor, key):
    block = metatensor.sort_block(
        tensor.block(tensor.keys.position(key)), "samples", descending=True
    )
    return replace_block(tensor, key, block)


def test_samples_in_another_order_are_rejected_with_a_hint(no_solve):
    X, y = data()
    y = _samples_reversed(y, (0,))
    with raises(
        ValueError,
        "block (center_type=0)",
        "same samples in X and y but in a different order",
        "metatensor.sort",
    ):
        TensorMapLstsq().fit(X, y)


def test_sorting_both_as_the_hint_says_is_accepted():
    X, y = data()
    reversed_y = _samples_reversed(y, (0,))
    model = TensorMapLstsq(rcond=1e-10).fit(metatensor.sort(X), metatensor.sort(reversed_y))
    expected = metatensor.lstsq(X, y, rcond=1e-10)
    np.testing.assert_allclose(model.weights_.block(0).values, expected.block(0).values, rtol=1e-10)


def _map_blocks(tensor, function):
    return TensorMap(tensor.keys, [function(block) for block in tensor.blocks()])


def test_component_dimensions_differ(no_solve):
    X, y = data()

    def rename(block):
        components = [Labels.range("mu", 3)]
        gradients = {
            p: TensorBlock(g.values, g.samples, [g.components[0], *components], block.properties)
            for p, g in block.gradients()
        }
        return rebuild(block, components=components, gradients=gradients)

    y = _map_blocks(y, rename)
    with raises(ValueError, "block (center_type=0)", "['m'] in X", "['mu'] in y"):
        TensorMapLstsq().fit(X, y)


def test_component_count_differs(no_solve):
    X, y = data(n_components=0, gradients=())
    rng = np.random.default_rng(1)

    def with_component(block):
        return TensorBlock(
            rng.normal(size=(len(block.samples), 2, 2)),
            block.samples,
            [Labels.range("m", 2)],
            block.properties,
        )

    y = _map_blocks(y, with_component)
    with raises(ValueError, "block (center_type=0)", "0 component dimensions in X but 1 in y"):
        TensorMapLstsq().fit(X, y)


def test_gradient_missing_from_y(no_solve):
    X, y = data()
    with raises(
        ValueError,
        "block (center_type=0)",
        "gradients ['positions'] in X but [] in y",
        "metatensor.remove_gradients",
    ):
        TensorMapLstsq().fit(X, metatensor.remove_gradients(y))


def test_gradient_extra_in_y(no_solve):
    X, y = data()
    with raises(ValueError, "block (center_type=0)", "gradients [] in X but ['positions'] in y"):
        TensorMapLstsq().fit(metatensor.remove_gradients(X), y)


def test_gradient_samples_differ(no_solve):
    X, y = data()
    block = y.block({"center_type": 3})
    gradient = block.gradient("positions")
    values = np.array(gradient.samples.values)
    values[5, 2] = 7  # another atom
    samples = Labels(gradient.samples.names, values)
    other = TensorBlock(gradient.values, samples, gradient.components, block.properties)
    y = replace_block(y, (3,), rebuild(block, gradients={"positions": other}))
    with raises(
        ValueError,
        "block (center_type=3), 'positions' gradient",
        "row 5 is (2, 1, 1) in X but (2, 1, 7) in y",
    ):
        TensorMapLstsq().fit(X, y)


def test_gradient_components_differ(no_solve):
    X, y = data()

    def rename(block):
        gradient = block.gradient("positions")
        other = TensorBlock(
            gradient.values,
            gradient.samples,
            [Labels.range("abc", 3), *gradient.components[1:]],
            block.properties,
        )
        return rebuild(block, gradients={"positions": other})

    with raises(
        ValueError, "block (center_type=0), 'positions' gradient", "['xyz'] in X", "['abc'] in y"
    ):
        TensorMapLstsq().fit(X, _map_blocks(y, rename))


def test_indexed_maps_over_other_entries(no_solve):
    X, y = data()
    kept = Labels(["system"], np.array([[0], [1]], dtype=np.int32))
    with raises(ValueError, "TensorMapLstsq.fit", "only in X: [2, 3, 4, 5]"):
        TensorMapLstsq().fit(
            IndexedTensorMap(X), IndexedTensorMap(metatensor.slice(y, "samples", kept))
        )


# ---------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------


def test_predict_with_other_properties():
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    fewer = metatensor.slice(X, "properties", Labels.range("feature", 3))
    with raises(
        ValueError,
        "TensorMapLstsq.predict: block (center_type=0)",
        "3 properties in X but 4 in fit",
    ):
        model.predict(fewer)
    renamed = metatensor.rename_dimension(X, "properties", "feature", "f")
    with raises(ValueError, "block (center_type=0)", "['f'] in X but ['feature'] in fit"):
        model.predict(renamed)
    reversed_order = metatensor.sort(X, "properties", descending=True)
    with raises(ValueError, "block (center_type=0)", "same properties in X and fit", "order"):
        model.predict(reversed_order)


def test_predict_with_an_unseen_key():
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    unseen = TensorMap(Labels(["center_type"], np.array([[5]])), [X.block(0).copy()])
    with raises(
        ValueError,
        "TensorMapLstsq.predict: block (center_type=5) of X was not seen in fit",
        "(center_type=0), (center_type=1), (center_type=3)",
    ):
        model.predict(unseen)
    renamed = metatensor.rename_dimension(X, "keys", "center_type", "species")
    with raises(ValueError, "['species'] in X", "['center_type'] were seen in fit"):
        model.predict(renamed)


def test_predict_before_fit():
    X, _ = data()
    with pytest.raises(NotFittedError):
        TensorMapLstsq().predict(X)
    with pytest.raises(NotFittedError):
        TensorMapLstsq().predict(np.ones((3, 2)))


def test_arrays_and_tensor_maps_are_not_mixed():
    X, y = data()
    on_maps = TensorMapLstsq().fit(X, y)
    with raises(TypeError, "TensorMapLstsq.predict: fitted on TensorMaps", "got ndarray"):
        on_maps.predict(np.ones((3, 4)))
    on_arrays = TensorMapLstsq().fit(np.ones((5, 4)), np.ones(5))
    with raises(TypeError, "TensorMapLstsq.predict: fitted on arrays, cannot predict a TensorMap"):
        on_arrays.predict(X)
    with raises(TypeError, "TensorMapLstsq.fit: y must be", "got ndarray"):
        TensorMapLstsq().fit(X, np.ones(5))
    with raises(TypeError, "TensorMapLstsq.fit: X must be", "got ndarray"):
        TensorMapLstsq().fit(np.ones((5, 4)), y)


# ---------------------------------------------------------------------------------
# values: NaN, infinity, libraries, dtypes
# ---------------------------------------------------------------------------------


def _poison(tensor, key, where, value):
    """A copy of ``tensor`` with one entry of block ``key``'s values or gradient set."""
    copy = map_arrays(tensor, np.copy)
    block = copy.block(copy.keys.position(key))
    array = block.values if where == "values" else block.gradient(where).values
    array[1, ..., 0] = value
    return copy


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "where, text", [("values", "values"), ("positions", "'positions' gradient")]
)
@pytest.mark.parametrize("side", ["X", "y"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_nan_and_infinity(value, where, text, side, backend, no_solve):
    X, y = data()
    if side == "X":
        X = _poison(X, (3,), where, value)
    else:
        y = _poison(y, (3,), where, value)
    if backend == "torch":
        if torch is None:
            pytest.skip("torch is not installed")
        X, y = to_torch(X), to_torch(y)
    message = f"{side} block (center_type=3) has NaN or infinity in its {text}"
    with raises(ValueError, "TensorMapLstsq.fit", message):
        TensorMapLstsq().fit(X, y)


@pytest.mark.parametrize("where", ["values", "positions"])
def test_nan_in_predict_input(where):
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    with raises(ValueError, "TensorMapLstsq.predict", "X block (center_type=1) has NaN"):
        model.predict(_poison(X, (1,), where, np.nan))


def test_nan_in_plain_arrays():
    with pytest.raises(ValueError, match="NaN"):
        TensorMapLstsq().fit(np.array([[1.0, np.nan], [0.0, 1.0]]), np.ones(2))


@pytest.mark.parametrize(
    "X, y",
    [
        ("abc", "abc"),
        ({"a": 1}, {"a": 1}),
        (object(), np.ones(3)),
        (None, np.ones(3)),
    ],
)
def test_inputs_neither_tensor_maps_nor_arrays(X, y):
    with raises(TypeError, "TensorMapLstsq.fit: X must be a metatensor.TensorMap"):
        TensorMapLstsq().fit(X, y)


def test_tensor_blocks_are_not_tensor_maps():
    X, y = data()
    with raises(TypeError, "TensorMapLstsq.fit: X must be", "got TensorBlock"):
        TensorMapLstsq().fit(X.block(0), y.block(0))
    with raises(TypeError, "TensorMapLstsq.fit: y must be", "got TensorBlock"):
        TensorMapLstsq().fit(X, y.block(0))
    with raises(TypeError, "TensorMapLstsq.fit: y must be", "got str"):
        TensorMapLstsq().fit(X, "y")
    model = TensorMapLstsq().fit(X, y)
    with raises(TypeError, "TensorMapLstsq.predict", "got TensorBlock"):
        model.predict(X.block(0))
    on_arrays = TensorMapLstsq().fit(np.ones((5, 4)), np.ones(5))
    with raises(TypeError, "TensorMapLstsq.predict: X must be", "got dict"):
        on_arrays.predict({})


@needs_torch
def test_numpy_X_with_torch_y(no_solve):
    X, y = data()
    with raises(TypeError, "block (center_type=0) holds numpy arrays in X but torch (cpu) in y"):
        TensorMapLstsq().fit(X, to_torch(y))
    with raises(TypeError, "block (center_type=0) holds torch (cpu) arrays in X but numpy in y"):
        TensorMapLstsq().fit(to_torch(X), y)


@pytest.mark.parametrize("rcond", [-1.0, "small", np.nan, 1.0, 2, True, np.True_])
def test_invalid_rcond(rcond, no_solve):
    # rcond >= 1 would cut every singular value; True is not a cut-off
    X, y = data()
    with raises(ValueError, "'rcond' parameter", "float in the range [0.0, 1.0) or None"):
        TensorMapLstsq(rcond=rcond).fit(X, y)


@pytest.mark.parametrize("driver", ["banana", "GELSD", 1])
def test_invalid_driver(driver, no_solve):
    X, y = data()
    with raises(
        ValueError, "'driver' parameter", "'gels'", "'gelsy'", "'gelsd'", "'gelss'", "None"
    ):
        TensorMapLstsq(driver=driver).fit(X, y)


@needs_torch
@pytest.mark.parametrize("device", ["banana", "mps", 3, 1.5])
def test_invalid_device(device, no_solve):
    X, y = data()
    with raises(
        ValueError,
        "TensorMapLstsq.fit: device must be None, 'cpu', 'cuda', 'cuda:N' or a torch.device",
        repr(device),
    ):
        TensorMapLstsq(device=device).fit(X, y)


@needs_torch
@pytest.mark.skipif(
    torch is not None and torch.cuda.is_available(), reason="checks the error without CUDA"
)
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_device_without_cuda(device, no_solve):
    X, y = data()
    with raises(ValueError, f"device={device!r} but CUDA is not available"):
        TensorMapLstsq(device=device).fit(X, y)


def test_invalid_n_jobs(no_solve):
    X, y = data()
    with raises(ValueError, "'n_jobs' parameter"):
        TensorMapLstsq(n_jobs="two").fit(X, y)


def test_init_only_stores_parameters():
    # nothing is validated in __init__, as scikit-learn requires
    model = TensorMapLstsq(rcond=-1, driver="banana", device="nowhere", n_jobs="x")
    assert model.get_params()["driver"] == "banana"


def test_array_sample_weight_with_a_plain_tensor_map():
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    with raises(TypeError, "an array-like sample_weight holds one weight per entry"):
        model.score(X, y, sample_weight=np.ones(3))
    with raises(TypeError, "an array-like sample_weight holds one weight per entry"):
        model.fit(X, y, sample_weight=np.ones(3))


@pytest.mark.parametrize("weight", [-1.0, np.nan, np.inf, -2])
def test_a_bad_scalar_sample_weight(weight, no_solve):
    X, y = data()
    rng = np.random.default_rng(1)
    for model_X, model_y in ((X, y), (rng.normal(size=(6, 2)), rng.normal(size=6))):
        with raises(
            ValueError, "TensorMapLstsq.fit: sample_weight must be finite and >= 0", repr(weight)
        ):
            TensorMapLstsq().fit(model_X, model_y, sample_weight=weight)


# ---------------------------------------------------------------------------------
# penalties and gradient weights
# ---------------------------------------------------------------------------------


def _alpha_map(X, keys):
    """A TensorMap of penalties (one per property) for ``keys``, laid out as X's blocks."""
    properties = X.block(0).properties
    blocks = [
        TensorBlock(np.full((1, len(properties)), 0.5), Labels.range("_", 1), [], properties)
        for _ in keys
    ]
    return TensorMap(Labels(X.keys.names, np.array(keys, dtype=np.int32)), blocks)


def test_an_alpha_tensor_map_with_a_key_x_lacks(no_solve):
    # as the dict form: a penalty for a block X does not have is an error
    X, y = data()
    alpha = _alpha_map(X, [*KEYS, (7,), (9,)])
    with raises(
        ValueError,
        "TensorMapLstsq.fit: the alpha TensorMap must have the blocks of X and no other",
        "unknown keys [(7,), (9,)] (tuples of ['center_type'])",
    ):
        TensorMapLstsq(alpha=alpha).fit(X, y)
    with raises(
        ValueError, "alpha must give a penalty for every block of X", "unknown keys [(7,)]"
    ):
        TensorMapLstsq(alpha={**dict.fromkeys(KEYS, 0.5), (7,): 0.5}).fit(X, y)


def test_an_alpha_tensor_map_with_the_keys_of_x_is_ridge_on_each_block():
    X, y = data()
    model = TensorMapLstsq(alpha=_alpha_map(X, list(KEYS))).fit(X, y)
    for key in X.keys:
        a, b = stacked(X.block(key)), stacked(y.block(key))
        expected = np.linalg.solve(a.T @ a + 0.5 * np.eye(a.shape[1]), a.T @ b).T
        np.testing.assert_allclose(model.weights_.block(key).values, expected, rtol=1e-9)


@pytest.mark.parametrize(
    "alpha, shape",
    [(np.ones(3), "(3,)"), (np.ones(5), "(5,)"), (np.ones((4, 1)), "(4, 1)"), ([[0.5]], "(1, 1)")],
)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_per_feature_alpha_of_the_wrong_shape(alpha, shape, method, no_solve):
    X, y = data()
    penalties = {**dict.fromkeys(KEYS, 0.1), (1,): alpha}
    with raises(
        ValueError,
        f"TensorMapLstsq.{method}: alpha[(1,)] must be a number or 4 numbers, one per "
        f"property of block (center_type=1) of X, got an array of shape {shape}",
    ):
        getattr(TensorMapLstsq(alpha=penalties), method)(X, y)


@pytest.mark.parametrize("value", [np.array([0.1, 0.2]), [0.1], np.ones((1, 1))])
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_an_array_gradient_weight(value, method, no_solve):
    X, y = data()
    with raises(
        ValueError,
        f"TensorMapLstsq.{method}: gradient_weights['positions'] must be a number, got an "
        f"array of shape {np.shape(value)}",
    ):
        getattr(TensorMapLstsq(gradient_weights={"positions": value}), method)(X, y)


def test_a_ragged_penalty_gets_the_penalty_message(no_solve):
    X, y = data()
    penalties = {**dict.fromkeys(KEYS, 0.1), (3,): [[1.0], [1.0, 2.0]]}
    with raises(ValueError, "TensorMapLstsq.fit: alpha[(3,)] must be a finite number >= 0"):
        TensorMapLstsq(alpha=penalties).fit(X, y)


@pytest.mark.parametrize("n_jobs", [0, 1.5])
def test_n_jobs_zero_is_refused_before_any_work(n_jobs, no_solve):
    X, y = data()
    with raises(ValueError, "'n_jobs' parameter", "None"):
        TensorMapLstsq(n_jobs=n_jobs).fit(X, y)


def test_score_checks_its_inputs():
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    with raises(ValueError, "TensorMapLstsq.score", "block (center_type=0)", "12 samples in X"):
        kept = Labels(["system"], np.array([[0]], dtype=np.int32))
        model.score(X, metatensor.slice(y, "samples", kept))


@pytest.mark.parametrize("kind", ["TensorMapLstsq", "TensorMapBayesianRidge"])
@pytest.mark.parametrize("inputs", ["arrays", "tensor maps"])
def test_score_with_every_weight_zero_names_the_caller(kind, inputs):
    model = getattr(skmetalstsq, kind)()
    if inputs == "arrays":
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    else:
        X, y = data()
        X, y = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    model.fit(X, y)
    with raises(ValueError, f"{kind}.score: sample_weight is 0 for every row of y"):
        model.score(X, y, sample_weight=np.zeros(len(y)))


# ---------------------------------------------------------------------------------
# blocks without properties, blocks without samples
# ---------------------------------------------------------------------------------

DRIVERS = [None, "gels", "gelsy", "gelsd", "gelss"]


def _without_properties(tensor, key):
    """``tensor`` with the block of ``key`` (a tuple) sliced to 0 properties."""
    block = tensor.block(tensor.keys.position(key))
    names = block.properties.names
    empty = Labels(names, np.zeros((0, len(names)), dtype=np.int32))
    return replace_block(tensor, key, metatensor.slice_block(block, "properties", empty))


def _suggested_drop(message, tensor):
    """Run the ``metatensor.drop_blocks(...)`` call that ``message`` ends with on ``tensor``."""
    found = re.search(r"metatensor\.drop_blocks\(\w+, (Labels\(.*\))\)$", message)
    assert found, message
    keys = eval(found.group(1), {"Labels": Labels, "np": np})
    return metatensor.drop_blocks(tensor, keys)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("side", ["X", "y"])
def test_block_without_properties(driver, side, no_solve):
    X, y = data()
    if side == "X":
        X = _without_properties(X, (1,))
    else:
        y = _without_properties(y, (1,))
    with raises(
        ValueError,
        f"TensorMapLstsq.fit: block (center_type=1) has 0 properties in {side}; every "
        "block needs at least one feature and one target",
        "drop the blocks without properties from X and y with "
        "metatensor.drop_blocks(tensor, Labels(['center_type'], np.array([[1]])))",
    ):
        TensorMapLstsq(driver=driver).fit(X, y)


def test_dropping_the_blocks_without_properties_as_suggested():
    X, y = data()
    empty_X, empty_y = _without_properties(X, (1,)), _without_properties(y, (3,))
    with pytest.raises(ValueError, match="block \\(center_type=1\\) has 0 properties in X") as info:
        TensorMapLstsq().fit(empty_X, empty_y)
    message = str(info.value)
    assert "np.array([[1], [3]])" in message  # every block without properties, X's and y's
    model = TensorMapLstsq(rcond=1e-10).fit(
        _suggested_drop(message, empty_X), _suggested_drop(message, empty_y)
    )
    assert model.weights_.keys == Labels(["center_type"], np.array([[0]]))
    expected = metatensor.lstsq(X, y, rcond=1e-10)
    np.testing.assert_allclose(
        model.weights_.block(0).values, expected.block({"center_type": 0}).values, rtol=1e-10
    )


def test_block_without_properties_in_cross_validation_and_score():
    X, y = data()
    empty_X = _without_properties(X, (3,))
    drop = "metatensor.drop_blocks(tensor, Labels(['center_type'], np.array([[3]])))"
    with raises(
        ValueError, "TensorMapLstsqCV.fit: block (center_type=3) has 0 properties in X", drop
    ):
        TensorMapLstsqCV(cv=2).fit(IndexedTensorMap(empty_X), IndexedTensorMap(y))
    Xi, yi = IndexedTensorMap(X), IndexedTensorMap(y)
    for model in (TensorMapLstsq().fit(X, y), TensorMapLstsqCV(cv=2).fit(Xi, yi)):
        # the message names the estimator's own class
        message = f"{type(model).__name__}.score: block (center_type=3) has 0 properties in y"
        with raises(ValueError, message, drop):
            model.score(X, _without_properties(y, (3,)))


def test_predict_a_block_without_properties():
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    with raises(
        ValueError,
        "TensorMapLstsq.predict: block (center_type=0) has 0 properties in X but 4 in fit; "
        "give it the properties seen in fit, or drop the blocks without properties with "
        "metatensor.drop_blocks(X, Labels(['center_type'], np.array([[0]])))",
    ):
        model.predict(_without_properties(X, (0,)))


def test_blocks_without_samples_get_zero_weights():
    X, y = data()
    kept = Labels(["system"], np.zeros((0, 1), dtype=np.int32))
    X = replace_block(X, (1,), metatensor.slice_block(X.block(1), "samples", kept))
    y = replace_block(y, (1,), metatensor.slice_block(y.block(1), "samples", kept))
    assert X.block(1).values.shape == (0, 3, 4)
    model = TensorMapLstsq(rcond=1e-10).fit(X, y)
    for key, x_block in X.items():
        expected = np.linalg.lstsq(stacked(x_block), stacked(y.block(key)), rcond=1e-10)[0]
        np.testing.assert_allclose(model.weights_.block(key).values, expected.T, rtol=1e-10)
    np.testing.assert_array_equal(model.weights_.block(1).values, np.zeros((2, 4)))


# ---------------------------------------------------------------------------------
# per-atom X and per-system y
# ---------------------------------------------------------------------------------


def _per_system(tensor):
    """The values of ``tensor`` summed over atoms with numpy, samples ``system``."""
    blocks = []
    for block in tensor.blocks():
        systems, rows = np.unique(np.asarray(block.samples.values)[:, 0], return_inverse=True)
        values = np.zeros((len(systems), *block.values.shape[1:]))
        np.add.at(values, rows, block.values)
        samples = Labels(["system"], systems.reshape(-1, 1).astype(np.int32))
        blocks.append(TensorBlock(values, samples, block.components, block.properties))
    return TensorMap(tensor.keys, blocks)


def test_per_atom_X_with_per_system_y(no_solve):
    X, y = data(gradients=())
    with raises(
        ValueError,
        "TensorMapLstsq.fit: block (center_type=0) samples are named ['system', 'atom'] in X "
        "but ['system'] in y; X has the extra sample dimensions ['atom']: sum X over them first "
        "with metatensor.sum_over_samples(X, sample_names=['atom']) (or average with "
        "metatensor.mean_over_samples)",
    ):
        TensorMapLstsq().fit(X, _per_system(y))
    with raises(
        ValueError,
        "samples are named ['system'] in X but ['system', 'atom'] in y; y has the extra sample "
        "dimensions ['atom']",
        "metatensor.sum_over_samples(y, sample_names=['atom'])",
    ):
        TensorMapLstsq().fit(_per_system(X), y)


def test_summing_over_atoms_as_the_hint_says_is_accepted():
    X, y = data(gradients=())
    y_system = _per_system(y)
    model = TensorMapLstsq(rcond=1e-10).fit(
        metatensor.sum_over_samples(X, sample_names=["atom"]), y_system
    )
    for key, x_block in _per_system(X).items():
        matrix = x_block.values.reshape(-1, x_block.values.shape[-1])
        targets = y_system.block(key).values.reshape(-1, 2)
        expected = np.linalg.lstsq(matrix, targets, rcond=1e-10)[0]
        np.testing.assert_allclose(model.weights_.block(key).values, expected.T, rtol=1e-10)


def test_per_atom_X_with_per_system_y_in_score_and_cross_validation():
    X, y = data(gradients=())
    y_system = _per_system(y)
    model = TensorMapLstsq().fit(_per_system(X), y_system)
    hint = "metatensor.sum_over_samples(X, sample_names=['atom'])"
    with raises(ValueError, "TensorMapLstsq.score: block (center_type=0)", hint):
        model.score(X, y_system)
    with raises(ValueError, "TensorMapLstsqCV.fit: block (center_type=0)", hint):
        TensorMapLstsqCV(cv=2).fit(IndexedTensorMap(X), IndexedTensorMap(y_system))


@pytest.mark.parametrize(
    "x_names, y_names, hint",
    [
        (
            ["atom", "system"],
            ["system"],
            "X over them first with metatensor.sum_over_samples(X, sample_names=['atom'])",
        ),
        (["system", "frame", "atom"], ["system", "atom"], "sample_names=['frame']"),
        (
            ["system"],
            ["system", "frame", "atom"],
            "sum_over_samples(y, sample_names=['frame', 'atom'])",
        ),
        (["system", "atom"], ["structure"], None),  # another name: no sum helps
        (["system", "atom", "frame"], ["atom", "system"], None),  # another order
    ],
)
def test_sample_names_hint_only_where_a_sum_fixes_them(x_names, y_names, hint, no_solve):
    rng = np.random.default_rng(3)

    def one_block(names, n_properties):
        samples = Labels(names, np.arange(len(names), dtype=np.int32).reshape(1, -1))
        block = TensorBlock(
            rng.normal(size=(1, n_properties)), samples, [], Labels.range("p", n_properties)
        )
        return TensorMap(Labels.single(), [block])

    with pytest.raises(ValueError, match="samples are named") as info:
        TensorMapLstsq().fit(one_block(x_names, 3), one_block(y_names, 1))
    message = str(info.value)
    assert f"samples are named {x_names} in X but {y_names} in y" in message
    if hint is None:
        assert "sum_over_samples" not in message
    else:
        assert hint in message


# ---------------------------------------------------------------------------------
# dtypes: bool rejected, integers accepted, numpy and torch alike
# ---------------------------------------------------------------------------------


def _as_bool(tensor):
    """``tensor`` with bool arrays (metatensor wants the gradients' dtype to be the values')."""
    return map_arrays(tensor, lambda array: array > 0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("side", ["X", "y"])
def test_bool_arrays_are_rejected_by_numpy_and_torch(backend, side, no_solve):
    X, y = data()
    if side == "X":
        X = _as_bool(X)
    else:
        y = _as_bool(y)
    if backend == "torch":
        if torch is None:
            pytest.skip("torch is not installed")
        X, y = to_torch(X), to_torch(y)
    dtype, module = ("bool", "np") if backend == "numpy" else ("torch.bool", "torch")
    with raises(
        TypeError,
        f"TensorMapLstsq.fit: {side} block (center_type=0) has {dtype} values; convert "
        f"{side} to a floating dtype with {side}.to(dtype={module}.float64)",
    ):
        TensorMapLstsq().fit(X, y)


@needs_torch
def test_bool_arrays_in_predict_and_the_suggested_conversion():
    X, y = data()
    model = TensorMapLstsq(rcond=1e-10).fit(X, y)
    bool_X = to_torch(_as_bool(X))
    with raises(
        TypeError,
        "TensorMapLstsq.predict: X block (center_type=0) has torch.bool values",
        "X.to(dtype=torch.float64)",
    ):
        model.predict(bool_X)
    converted = bool_X.to(dtype=torch.float64)
    predicted = model.predict(converted)
    for key, block in converted.items():
        weights = model.weights_.block(key).values
        np.testing.assert_allclose(
            predicted.block(key).values.numpy(), block.values.numpy() @ weights.T, rtol=1e-12
        )


INTEGER_DTYPES = ["int8", "int16", "int32", "int64", "uint8"]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_integer_arrays_are_accepted_by_numpy_and_torch(backend, dtype):
    X, y = data(gradients=())
    X = map_arrays(X, lambda array: np.abs(np.round(4 * array)).astype(dtype))
    if backend == "torch":
        if torch is None:
            pytest.skip("torch is not installed")
        X, y = to_torch(X), to_torch(y)
    model = TensorMapLstsq(rcond=1e-10).fit(X, y)
    predicted = model.predict(X)
    for key, x_block in X.items():
        matrix = as_numpy(x_block.values).reshape(-1, 4).astype(np.float64)
        targets = as_numpy(y.block(key).values).reshape(-1, 2)
        expected = np.linalg.lstsq(matrix, targets, rcond=1e-10)[0]
        np.testing.assert_allclose(
            as_numpy(model.weights_.block(key).values), expected.T, rtol=1e-9
        )
        prediction = as_numpy(predicted.block(key).values)
        assert prediction.dtype == np.float64
        np.testing.assert_allclose(
            prediction.reshape(-1, 2), matrix @ expected, rtol=1e-9, atol=1e-12
        )


# ---------------------------------------------------------------------------------
# scikit-learn's splitters given a plain TensorMap (before any of this library runs)
# ---------------------------------------------------------------------------------

ERRORS_PAGE = Path(__file__).parents[1] / "docs" / "user_guide" / "errors.rst"


def test_plain_tensor_maps_in_sklearn_splitters_fail_as_documented():
    page = ERRORS_PAGE.read_text()
    X, y = data()  # 3 blocks: scikit-learn counts blocks as samples
    block_selection = "invalid type for block selection: <class 'numpy.int64'>"
    too_few = (
        "Cannot have number of splits n_splits=5 greater than the number of samples: n_samples=3."
    )
    assert f"``TypeError: {block_selection}``" in page
    documented = re.search(r"``ValueError: (Cannot have number of splits [^`]*)``", page)
    assert documented, "the errors page lost the n_splits message"
    assert re.fullmatch(re.escape(documented.group(1)).replace("N", r"\d+"), too_few)
    search = GridSearchCV(TensorMapLstsq(), {"rcond": [None, 1e-8]}, cv=2)
    for call in (
        lambda: cross_validate(TensorMapLstsq(), X, y, cv=2),
        lambda: train_test_split(X, y),
        lambda: search.fit(X, y),
    ):
        with pytest.raises(TypeError, match=f"^{re.escape(block_selection)}$"):
            call()
    with pytest.raises(ValueError, match=f"^{re.escape(too_few)}$"):
        cross_validate(TensorMapLstsq(), X, y)


def test_indexed_tensor_maps_in_sklearn_splitters_as_documented():
    X, y = data(keys=((0,),), n_components=0, gradients=(), n_systems=8)
    assert 'IndexedTensorMap(X, "system")' in ERRORS_PAGE.read_text()
    Xi, yi = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    scores = cross_validate(TensorMapLstsq(rcond=1e-10), Xi, yi, cv=KFold(2))["test_score"]
    x_values, y_values = X.block(0).values, y.block(0).values
    systems = np.asarray(X.block(0).samples.values)[:, 0]
    for score, (train, test) in zip(scores, KFold(2).split(np.arange(8))):
        in_train, in_test = np.isin(systems, train), np.isin(systems, test)
        weights = np.linalg.lstsq(x_values[in_train], y_values[in_train], rcond=1e-10)[0]
        expected = r2_score(
            y_values[in_test], x_values[in_test] @ weights, multioutput="variance_weighted"
        )
        assert score == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------------------
# inputs are never mutated
# ---------------------------------------------------------------------------------


def _arrays(tensor):
    """Copies of every values and gradient array of ``tensor``, as numpy arrays."""

    def copy(array):
        return np.array(array) if isinstance(array, np.ndarray) else array.detach().numpy().copy()

    arrays = []
    for block in tensor.blocks():
        arrays.append(copy(block.values))
        arrays.extend(copy(gradient.values) for _, gradient in block.gradients())
    return arrays


@pytest.mark.parametrize("driver", [None, "gels", "gelsy", "gelsd", "gelss"])
@pytest.mark.parametrize(
    "backend, device", [("numpy", None), ("numpy", "cpu"), ("torch", None), ("float32", None)]
)
def test_inputs_are_not_mutated(driver, backend, device):
    X, y = data()
    if (backend == "torch" or device is not None) and torch is None:
        pytest.skip("torch is not installed")
    if backend == "torch":
        X, y = to_torch(X), to_torch(y)
    elif backend == "float32":
        X = map_arrays(X, lambda a: a.astype(np.float32))
    before_X, before_y = _arrays(X), _arrays(y)
    model = TensorMapLstsq(rcond=1e-10, driver=driver, device=device).fit(X, y)
    model.predict(X)
    model.score(X, y)
    for before, after in zip(before_X + before_y, _arrays(X) + _arrays(y)):
        np.testing.assert_array_equal(after, before)
    assert [a.dtype for a in _arrays(X)] == [a.dtype for a in before_X]


@pytest.mark.parametrize("driver", [None, "gels", "gelsy", "gelsd", "gelss"])
def test_arrays_are_not_mutated(driver):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 2))
    a_fortran = np.asfortranarray(a)
    copies = [a.copy(), b.copy(), a_fortran.copy()]
    model = TensorMapLstsq(driver=driver).fit(a, b)
    model.fit(a_fortran, b)
    model.predict(a)
    model.score(a, b)
    for before, after in zip(copies, [a, b, a_fortran]):
        np.testing.assert_array_equal(after, before)
