"""Blocks read once: :class:`BlockView`, :func:`block_pairs` and :func:`key_tuples`."""

import numpy as np
import pytest
from metatensor import Labels, TensorBlock, TensorMap

from skmetalstsq._blocks import BlockView, block_pairs, key_tuple, key_tuples


def labels_equal(first, second):
    return first.names == second.names and np.array_equal(first.values, second.values)


def block(rng, n_samples, components, n_properties, gradient=True):
    """A block with ``components`` (a list of sizes) and, optionally, a positions gradient."""
    shape = (n_samples, *components, n_properties)
    block = TensorBlock(
        rng.normal(size=shape),
        Labels(["system"], np.arange(n_samples).reshape(-1, 1)),
        [Labels.range(f"c{i}", size) for i, size in enumerate(components)],
        Labels.range("feature", n_properties),
    )
    if gradient:
        n_rows = 2 * n_samples
        samples = Labels(
            ["sample", "atom"],
            np.stack([np.arange(n_rows) % n_samples, np.arange(n_rows)], axis=1),
        )
        block.add_gradient(
            "positions",
            TensorBlock(
                rng.normal(size=(n_rows, 3, *components, n_properties)),
                samples,
                [Labels.range("xyz", 3)]
                + [Labels.range(f"c{i}", size) for i, size in enumerate(components)],
                block.properties,
            ),
        )
    return block


@pytest.mark.parametrize("components", [[], [3], [2, 5]], ids=["none", "one", "two"])
def test_block_view_reads_what_the_block_holds(components):
    rng = np.random.default_rng(0)
    original = block(rng, 4, components, 6)
    view = BlockView(original)
    np.testing.assert_array_equal(view.values, original.values)
    assert labels_equal(view.samples, original.samples)
    assert labels_equal(view.properties, original.properties)
    assert len(view.components) == len(original.components) == len(components)
    for found, expected in zip(view.components, original.components):
        assert labels_equal(found, expected)
    assert view.gradients_list() == original.gradients_list() == ["positions"]
    gradient, expected = view.gradient("positions"), original.gradient("positions")
    np.testing.assert_array_equal(gradient.values, expected.values)
    assert labels_equal(gradient.samples, expected.samples)
    assert [labels.names for labels in gradient.components] == [
        labels.names for labels in expected.components
    ]
    assert [(parameter, type(g)) for parameter, g in view.gradients()] == [("positions", BlockView)]


def test_block_view_caches_each_read():
    view = BlockView(block(np.random.default_rng(1), 3, [2], 4))
    assert view.values is view.values
    assert view.samples is view.samples
    assert view.components is view.components
    assert view.gradient("positions") is view.gradient("positions")


def test_block_pairs_take_y_blocks_in_the_order_of_x_keys():
    rng = np.random.default_rng(2)
    keys = Labels(["center", "channel"], np.array([[1, 0], [6, 2], [8, 1]]))
    x_blocks = [block(rng, 3 + i, [], 4, gradient=False) for i in range(3)]
    y_blocks = [block(rng, 3 + i, [], 1, gradient=False) for i in range(3)]
    X = TensorMap(keys, [x_block.copy() for x_block in x_blocks])
    order = [2, 0, 1]
    y = TensorMap(Labels(keys.names, keys.values[order]), [y_blocks[i].copy() for i in order])
    pairs = block_pairs(X, y)
    assert [key_tuple(key) for key, _, _ in pairs] == [(1, 0), (6, 2), (8, 1)]
    for (_, x_view, y_view), x_block, y_block in zip(pairs, x_blocks, y_blocks):
        np.testing.assert_array_equal(x_view.values, x_block.values)
        np.testing.assert_array_equal(y_view.values, y_block.values)


@pytest.mark.parametrize(
    "values", [np.array([[0], [3], [-2]]), np.array([[1, 2, 3], [4, 5, 6]]), np.zeros((0, 2))]
)
def test_key_tuples_equal_key_tuple_of_each_key(values):
    keys = Labels([f"k{i}" for i in range(values.shape[1])], values.astype(np.int32))
    found = key_tuples(keys)
    assert found == [key_tuple(key) for key in keys]
    assert all(type(value) is int for key in found for value in key)
