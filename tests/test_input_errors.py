"""Every bad input gets a clear error, naming the block and both sides, before any work."""

import re

import metatensor
import numpy as np
import pytest
from builders import make_pair, map_arrays, reorder_keys, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.exceptions import NotFittedError

import skmetalstsq._estimator
from skmetalstsq import IndexedTensorMap, TensorMapLstsq

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


@pytest.mark.parametrize("rcond", [-1.0, "small", np.nan])
def test_invalid_rcond(rcond, no_solve):
    X, y = data()
    with raises(ValueError, "'rcond' parameter", "float in the range [0.0, inf) or None"):
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


def test_sample_weight_is_not_supported():
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    with raises(ValueError, "TensorMapLstsq.score: sample_weight is not supported"):
        model.score(X, y, sample_weight=np.ones(3))


def test_score_checks_its_inputs():
    X, y = data()
    model = TensorMapLstsq().fit(X, y)
    with raises(ValueError, "TensorMapLstsq.score", "block (center_type=0)", "12 samples in X"):
        kept = Labels(["system"], np.array([[0]], dtype=np.int32))
        model.score(X, metatensor.slice(y, "samples", kept))


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
