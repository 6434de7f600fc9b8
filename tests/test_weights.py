"""row_weights: sample_weight turned into a weight per row, checked against a hand expansion."""

import re

import metatensor
import numpy as np
import pytest
from builders import make_pair, to_torch
from metatensor import Labels, TensorBlock, TensorMap

from skmetalstsq import IndexedTensorMap
from skmetalstsq._blocks import array_to_tensor
from skmetalstsq._weights import row_weights


def raises(error, *parts):
    """pytest.raises matching every one of ``parts`` (literal text) in the message."""
    pattern = "".join(f"(?=.*{re.escape(part)})" for part in parts)
    return pytest.raises(error, match=re.compile(pattern, re.DOTALL))


def _rows_per_sample(block):
    return int(np.prod([len(c) for c in block.components]))


def _by_hand(tensor, weight_of_system, parameters):
    """Each row's weight: that of its system, spread over components by loops."""
    expected = {}
    for key, block in tensor.items():
        systems = np.asarray(block.samples.column("system"))
        sample_weights = [weight_of_system[int(s)] for s in systems]
        parts = [[w for w in sample_weights for _ in range(_rows_per_sample(block))]]
        for parameter in parameters:
            gradient = block.gradient(parameter)
            parents = np.asarray(gradient.samples.column("sample"))
            parts.append(
                [sample_weights[p] for p in parents for _ in range(_rows_per_sample(gradient))]
            )
        expected[tuple(int(v) for v in key.values)] = [np.array(part) for part in parts]
    return expected


def _assert_same(got, expected):
    assert got.keys() == expected.keys()
    for key, parts in expected.items():
        assert len(got[key]) == len(parts)
        for got_part, part in zip(got[key], parts):
            assert isinstance(got_part, np.ndarray)
            assert got_part.dtype == np.float64 and got_part.ndim == 1
            np.testing.assert_array_equal(got_part, part)


def _weight_map(tensor, rng, n_properties=1, gradients=None):
    """A TensorMap of random weights laid out as ``tensor`` (one property)."""
    blocks = []
    for block in tensor.blocks():
        properties = Labels.range("weight", n_properties)
        shape = (*block.values.shape[:-1], n_properties)
        new = TensorBlock(rng.uniform(size=shape), block.samples, block.components, properties)
        for parameter in block.gradients_list() if gradients is None else gradients:
            gradient = block.gradient(parameter)
            shape = (*gradient.values.shape[:-1], n_properties)
            new.add_gradient(
                parameter,
                TensorBlock(
                    rng.uniform(size=shape), gradient.samples, gradient.components, properties
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def _uneven(gradients=("positions", "cell"), n_components=3, component_shift=0):
    """Two blocks with gradients, components, and systems missing from one block."""
    _, y = make_pair(
        np.random.default_rng(0),
        keys=((0,), (3,)),
        n_systems=5,
        n_targets=3,
        n_components=n_components,
        gradients=gradients,
    )
    first = metatensor.slice_block(
        y.block(0), "samples", Labels(["system"], np.array([[0], [2], [4]]))
    )
    tensor = TensorMap(y.keys, [first, y.block(1).copy()])
    if component_shift:
        tensor = map_labels(tensor, "m", component_shift)
    return tensor


def map_labels(tensor, dimension, shift):
    """A copy of ``tensor`` with ``shift`` added to the component ``dimension``."""

    def shifted(components):
        return [
            Labels(c.names, np.asarray(c.values) + shift) if dimension in c.names else c
            for c in components
        ]

    blocks = []
    for block in tensor.blocks():
        new = TensorBlock(block.values, block.samples, shifted(block.components), block.properties)
        for parameter, gradient in block.gradients():
            new.add_gradient(
                parameter,
                TensorBlock(
                    gradient.values, gradient.samples, shifted(gradient.components), new.properties
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


@pytest.fixture(scope="module")
def uneven():
    return _uneven()


def test_none_is_none(uneven):
    assert row_weights(None, IndexedTensorMap(uneven), "fit") is None
    assert row_weights(None, uneven, "fit") is None


def test_entry_weights_spread_over_rows_and_gradients(uneven):
    y = IndexedTensorMap(uneven)
    weights = np.array([0.5, 2.0, 0.0, 3.0, 1.5])
    by_system = dict(zip(y.entries.tolist(), weights))
    got = row_weights(list(weights), y, "fit")
    # parameters=None: every gradient, sorted by name
    _assert_same(got, _by_hand(uneven, by_system, ["cell", "positions"]))
    got = row_weights(weights, y, "fit", parameters={(0,): ["positions"], (3,): []})
    expected = _by_hand(uneven, by_system, ["positions"])
    expected[(3,)] = expected[(3,)][:1]
    _assert_same(got, expected)


def test_entry_weights_of_a_subset_follow_the_entries():
    _, y = make_pair(np.random.default_rng(1), n_systems=6, n_components=2)
    y = IndexedTensorMap(y)[[1, 3, 4]]
    weights = np.array([1.0, 2.0, 3.0])
    got = row_weights(weights, y, "fit")
    _assert_same(got, _by_hand(y.tensor, {1: 1.0, 3: 2.0, 4: 3.0}, ["positions"]))


def test_torch_weights_and_inputs_stay_unchanged(uneven):
    torch = pytest.importorskip("torch")
    y = IndexedTensorMap(to_torch(uneven))
    weights = torch.tensor([0.5, 2.0, 0.0, 3.0, 1.5], dtype=torch.float32)
    got = row_weights(weights, y, "fit")
    by_system = dict(zip(y.entries.tolist(), [0.5, 2.0, 0.0, 3.0, 1.5]))
    _assert_same(got, _by_hand(uneven, by_system, ["cell", "positions"]))
    assert torch.equal(weights, torch.tensor([0.5, 2.0, 0.0, 3.0, 1.5]))


def test_per_sample_weights_of_plain_arrays():
    y = array_to_tensor(np.arange(12.0).reshape(4, 3))
    got = row_weights([1, 0, 2, 5], y, "fit", per_sample=True)
    _assert_same(got, {(0,): [np.array([1.0, 0.0, 2.0, 5.0])]})
    with raises(ValueError, "fit: sample_weight has 3 weights but y has 4 samples"):
        row_weights([1.0, 2.0, 3.0], y, "fit", per_sample=True)
    _, two_blocks = make_pair(np.random.default_rng(0))
    with raises(ValueError, "fit: one weight per sample needs y of one block, got 2 blocks"):
        row_weights(np.ones(12), two_blocks, "fit", per_sample=True)


def test_weight_map(uneven):
    rng = np.random.default_rng(3)
    weight_map = _weight_map(uneven, rng)
    expected = {}
    for key, block in weight_map.items():
        parts = [np.asarray(block.values).ravel()]
        parts += [np.asarray(block.gradient(p).values).ravel() for p in ("cell", "positions")]
        expected[tuple(int(v) for v in key.values)] = parts
    for y in (uneven, IndexedTensorMap(uneven)):
        for weights in (weight_map, IndexedTensorMap(weight_map)):
            _assert_same(row_weights(weights, y, "fit"), expected)
    torch = pytest.importorskip("torch")
    _assert_same(row_weights(to_torch(weight_map, dtype=torch.float64), uneven, "fit"), expected)


def test_weight_map_with_only_the_gradients_asked_for(uneven):
    weight_map = _weight_map(uneven, np.random.default_rng(4), gradients=["positions"])
    parameters = {(0,): ["positions"], (3,): []}
    got = row_weights(weight_map, uneven, "score", parameters)
    for key, block in weight_map.items():
        parts = got[tuple(int(v) for v in key.values)]
        np.testing.assert_array_equal(parts[0], np.asarray(block.values).ravel())
    np.testing.assert_array_equal(
        got[(0,)][1], np.asarray(weight_map.block(0).gradient("positions").values).ravel()
    )
    assert len(got[(3,)]) == 1
    with raises(
        ValueError,
        "fit: sample_weight block (center_type=0) has no 'cell' gradient (it has ['positions'])",
        "which weighs the 'cell' gradient rows of y",
    ):
        row_weights(weight_map, uneven, "fit")


@pytest.mark.parametrize("weight", [2.5, 3, np.float32(0.5), np.int64(4)])
def test_a_number_weighs_every_row_as_scikit_learn_does(uneven, weight):
    # scikit-learn's _check_sample_weight: a number is that weight on every sample
    by_system = dict.fromkeys(range(5), float(weight))
    for y in (uneven, IndexedTensorMap(uneven)):
        _assert_same(
            row_weights(weight, y, "fit"), _by_hand(uneven, by_system, ["cell", "positions"])
        )
    parameters = {(0,): ["positions"], (3,): []}
    got = row_weights(weight, uneven, "score", parameters=parameters)
    assert [len(parts) for parts in got.values()] == [2, 1]
    one_block = array_to_tensor(np.ones((6, 2)))
    got = row_weights(weight, one_block, "fit", per_sample=True)
    _assert_same(got, {(0,): [np.full(6, float(weight))]})


@pytest.mark.parametrize("weight", [-0.5, np.nan, np.inf, -np.inf])
def test_a_bad_number(uneven, weight):
    with raises(ValueError, "fit: sample_weight must be finite and >= 0, got"):
        row_weights(weight, IndexedTensorMap(uneven), "fit")


def test_bad_kinds(uneven):
    with raises(
        TypeError,
        "fit: an array-like sample_weight holds one weight per entry of an IndexedTensorMap, "
        "but y is a TensorMap: wrap y (and X) with skmetalstsq.IndexedTensorMap",
        "or give a TensorMap of weights with the keys, samples, components and gradients",
    ):
        row_weights([1.0] * 5, uneven, "fit")
    for bad in ({"a": 1.0}, "weights", 3.0j, object()):
        with raises(TypeError, "fit: sample_weight must be None, an array-like of one weight"):
            row_weights(bad, IndexedTensorMap(uneven), "fit")
    with raises(TypeError, "fit: sample_weight needs y to be a TensorMap or an IndexedTensorMap"):
        row_weights(np.ones(3), np.ones((3, 2)), "fit")


def test_bad_arrays(uneven):
    y = IndexedTensorMap(uneven)
    with raises(ValueError, "fit: sample_weight must be 1-D, one weight for each of the 5"):
        row_weights(np.ones((5, 1)), y, "fit")
    with raises(ValueError, "fit: sample_weight must be 1-D"):
        row_weights(np.array(2.0), y, "fit")
    with raises(ValueError, "fit: sample_weight has 4 weights but y has 5 'system' entries"):
        row_weights(np.ones(4), y, "fit")
    with raises(ValueError, "fit: sample_weight has NaN or infinity (first at position 2: nan)"):
        row_weights([1.0, 1.0, np.nan, 1.0, np.inf], y, "fit")
    with raises(ValueError, "fit: sample_weight has negative weights (first at position 1: -1.0)"):
        row_weights([1.0, -1.0, 0.0, 1.0, 1.0], y, "fit")
    with raises(TypeError, "fit: sample_weight must hold numbers, got <U1"):
        row_weights(["a", "b", "c", "d", "e"], y, "fit")
    with raises(TypeError, "fit: sample_weight must hold real numbers, got complex128"):
        row_weights(np.ones(5, dtype=complex), y, "fit")
    with raises(ValueError, "fit: block (center_type=0) of y has no 'strain' gradient"):
        row_weights(np.ones(5), y, "fit", parameters={(0,): ["strain"], (3,): []})


def _replace(tensor, position, block):
    blocks = [b.copy() for b in tensor.blocks()]
    blocks[position] = block.copy()
    return TensorMap(tensor.keys, blocks)


def test_bad_weight_maps(uneven):
    rng = np.random.default_rng(5)
    good = _weight_map(uneven, rng)
    with raises(ValueError, "fit: y and sample_weight have different keys: only in y: ['(center"):
        row_weights(
            metatensor.drop_blocks(good, Labels(["center_type"], np.array([[3]]))), uneven, "fit"
        )
    with raises(
        ValueError, "fit: sample_weight block (center_type=0) has 2 properties; a TensorMap of"
    ):
        row_weights(_weight_map(uneven, rng, 2), uneven, "fit")
    fewer = metatensor.slice_block(
        good.block(0), "samples", Labels(["system"], np.array([[0], [2]]))
    )
    with raises(ValueError, "fit: block (center_type=0) has 6 samples in y but 4 in sample_weight"):
        row_weights(_replace(good, 0, fewer), uneven, "fit")
    with raises(
        ValueError,
        "fit: block (center_type=0), 'cell' gradient has the same samples in y and "
        "sample_weight but in a different order (first at row 0); build sample_weight from "
        "the samples of y",
    ):
        row_weights(
            _replace(good, 0, _reversed_gradient_rows(good.block(0), "cell")), uneven, "fit"
        )
    with raises(
        ValueError,
        "fit: block (center_type=0) has different components in y and sample_weight: row 0 "
        "is (0,) in y but (10,) in sample_weight",
    ):
        row_weights(_weight_map(_uneven(component_shift=10), rng), uneven, "fit")
    with raises(
        ValueError,
        "fit: block (center_type=0) has 1 component dimensions in y but 0 in sample_weight",
    ):
        row_weights(_weight_map(_uneven(n_components=0), rng), uneven, "fit")
    with raises(
        ValueError,
        "fit: sample_weight block (center_type=0) has no 'positions' gradient (it has ['cell'])",
    ):
        row_weights(_weight_map(uneven, rng, gradients=["cell"]), uneven, "fit")
    extra = _weight_map(_uneven(gradients=("positions", "cell", "strain")), rng)
    with raises(
        ValueError,
        "fit: sample_weight block (center_type=0) has the gradients ['strain'], which y "
        "does not have",
    ):
        row_weights(extra, uneven, "fit")


def _reversed_gradient_rows(block, parameter):
    new = TensorBlock(block.values, block.samples, block.components, block.properties)
    for name, gradient in block.gradients():
        if name == parameter:
            order = np.arange(len(gradient.samples))[::-1]
            gradient = TensorBlock(
                np.ascontiguousarray(np.asarray(gradient.values)[order]),
                Labels(
                    gradient.samples.names, np.ascontiguousarray(gradient.samples.values[order])
                ),
                gradient.components,
                block.properties,
            )
        new.add_gradient(name, gradient.copy())
    return new


def test_bad_weight_values(uneven):
    rng = np.random.default_rng(6)

    def with_values(function, parameter=None):
        weight_map = _weight_map(uneven, rng)
        block = weight_map.block(1)
        target = block if parameter is None else block.gradient(parameter)
        values = np.array(target.values)
        function(values)
        new = TensorBlock(
            values if parameter is None else block.values,
            block.samples,
            block.components,
            block.properties,
        )
        for name, gradient in block.gradients():
            new.add_gradient(
                name,
                TensorBlock(
                    values if name == parameter else gradient.values,
                    gradient.samples,
                    gradient.components,
                    block.properties,
                ),
            )
        return _replace(weight_map, 1, new)

    def set_first(value, index=(0,)):
        def function(values):
            values.reshape(-1)[index] = value

        return function

    with raises(
        ValueError,
        "fit: sample_weight block (center_type=3) has NaN or infinity in its values "
        "(first at row 4: inf)",
    ):
        row_weights(with_values(set_first(np.inf, 4)), uneven, "fit")
    with raises(
        ValueError,
        "fit: sample_weight block (center_type=3) has negative weights in its 'positions' "
        "gradient (first at row 7: -2.0)",
    ):
        row_weights(with_values(set_first(-2.0, 7), "positions"), uneven, "fit")
    complex_map = metatensor.TensorMap(
        uneven.keys,
        [
            TensorBlock(np.asarray(b.values).astype(complex), b.samples, b.components, b.properties)
            for b in _weight_map(uneven, rng, gradients=[]).blocks()
        ],
    )
    with raises(
        TypeError, "fit: sample_weight block (center_type=0) (values) must hold real numbers"
    ):
        row_weights(complex_map, uneven, "fit", parameters={(0,): [], (3,): []})
