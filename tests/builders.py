"""Small builders of TensorMaps with components and gradients, for the tests."""

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap


def make_block(
    rng,
    n_systems,
    n_atoms,
    n_properties,
    n_components=0,
    gradients=("positions",),
    property_name="feature",
    values=None,
    gradient_values=None,
):
    """A block with samples (system, atom), optional components, and gradients.

    Gradient samples are (sample, system, atom) for every sample and every atom of
    its system, with an xyz component in front of the block's own components.
    """
    samples = Labels(
        ["system", "atom"],
        np.array([[s, a] for s in range(n_systems) for a in range(n_atoms)]).reshape(-1, 2),
    )
    components = [Labels.range("m", n_components)] if n_components else []
    shape = (len(samples), *[len(c) for c in components], n_properties)
    block = TensorBlock(
        values=rng.normal(size=shape) if values is None else values,
        samples=samples,
        components=components,
        properties=Labels.range(property_name, n_properties),
    )
    for parameter in gradients:
        rows = [[i, s, a] for i, (s, _) in enumerate(samples.values) for a in range(n_atoms)]
        gradient_samples = Labels(["sample", "system", "atom"], np.array(rows).reshape(-1, 3))
        gradient_components = [Labels.range("xyz", 3), *components]
        gradient_shape = (
            len(gradient_samples),
            3,
            *[len(c) for c in components],
            n_properties,
        )
        block.add_gradient(
            parameter,
            TensorBlock(
                values=rng.normal(size=gradient_shape),
                samples=gradient_samples,
                components=gradient_components,
                properties=block.properties,
            ),
        )
    return block


def make_pair(
    rng,
    keys=((0,), (1,)),
    n_systems=6,
    n_atoms=2,
    n_features=4,
    n_targets=2,
    n_components=0,
    gradients=("positions",),
    noise=0.1,
):
    """(X, y) TensorMaps where y = X w + noise block by block, gradients included."""
    keys_labels = Labels(["center_type"], np.array(keys).reshape(-1, 1))
    x_blocks, y_blocks = [], []
    for _ in keys:
        x = make_block(rng, n_systems, n_atoms, n_features, n_components, gradients)
        w = rng.normal(size=(n_features, n_targets))
        y = TensorBlock(
            values=x.values @ w + noise * rng.normal(size=(*x.values.shape[:-1], n_targets)),
            samples=x.samples,
            components=x.components,
            properties=Labels.range("target", n_targets),
        )
        for parameter, gradient in x.gradients():
            y.add_gradient(
                parameter,
                TensorBlock(
                    values=gradient.values @ w
                    + noise * rng.normal(size=(*gradient.values.shape[:-1], n_targets)),
                    samples=gradient.samples,
                    components=gradient.components,
                    properties=y.properties,
                ),
            )
        x_blocks.append(x)
        y_blocks.append(y)
    return TensorMap(keys_labels, x_blocks), TensorMap(keys_labels, y_blocks)


def map_arrays(tensor, function, gradient_function=None):
    """A copy of ``tensor`` with ``function`` applied to every values array.

    ``gradient_function(parameter, array)`` is applied to gradient arrays
    (default: ``function``). Metadata is kept.
    """
    if gradient_function is None:

        def gradient_function(parameter, array):
            return function(array)

    blocks = []
    for block in tensor.blocks():
        new = TensorBlock(
            values=function(block.values),
            samples=block.samples,
            components=block.components,
            properties=block.properties,
        )
        for parameter, gradient in block.gradients():
            new.add_gradient(
                parameter,
                TensorBlock(
                    values=gradient_function(parameter, gradient.values),
                    samples=gradient.samples,
                    components=gradient.components,
                    properties=new.properties,
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def to_torch(tensor, dtype=None, device="cpu"):
    """A copy of ``tensor`` whose arrays are torch tensors."""
    import torch

    return map_arrays(
        tensor,
        lambda array: torch.tensor(np.asarray(array), dtype=dtype, device=device),
    )


def as_dtype(tensor, dtype):
    """A copy of a numpy-backed ``tensor`` with every array cast to ``dtype``."""
    return map_arrays(tensor, lambda array: np.asarray(array).astype(dtype))


def stacked(block, parameters=None):
    """The values and gradients of ``block`` stacked into one 2-D numpy array.

    Components are folded into rows; gradients (all of them, in
    ``block.gradients_list()`` order unless ``parameters`` is given) go under
    the values, as ``metatensor.lstsq`` stacks them. Built independently of the
    library, with ``np.concatenate``.
    """
    if parameters is None:
        parameters = block.gradients_list()
    n_properties = block.values.shape[-1]
    parts = [_numpy(block.values).reshape(-1, n_properties)]
    for parameter in parameters:
        parts.append(_numpy(block.gradient(parameter).values).reshape(-1, n_properties))
    return np.concatenate(parts, axis=0)


def _numpy(array):
    if isinstance(array, np.ndarray):
        return array
    return array.detach().cpu().numpy()


def single_block_map(x_values, y_values, x_properties="feature", y_properties="target"):
    """(X, y) one-block TensorMaps with samples numbered 0..rows-1 from 2-D arrays."""
    samples = Labels.range("system", x_values.shape[0])
    x = TensorBlock(x_values, samples, [], Labels.range(x_properties, x_values.shape[1]))
    y = TensorBlock(y_values, samples, [], Labels.range(y_properties, y_values.shape[1]))
    return TensorMap(Labels.single(), [x]), TensorMap(Labels.single(), [y])


def make_rank_deficient(tensor):
    """A copy of ``tensor`` whose last feature is 2.5 times the first and whose
    second-to-last duplicates the second, in the values and every gradient, so
    that each stacked block loses two ranks (needs at least 4 features)."""

    def function(array):
        array = np.array(array, copy=True)
        array[..., -1] = 2.5 * array[..., 0]
        array[..., -2] = array[..., 1]
        return array

    return map_arrays(tensor, function)


def reorder_keys(tensor, order):
    """A copy of ``tensor`` with its blocks (and keys) in the given order of positions."""
    keys = Labels(tensor.keys.names, np.asarray(tensor.keys.values)[list(order)])
    return TensorMap(keys, [tensor.block(int(i)).copy() for i in order])


def replace_stacked(block, matrix):
    """A copy of ``block`` whose values and gradients are the rows of ``matrix``.

    ``matrix`` is laid out as :func:`stacked` lays the block out (values first,
    then each gradient in ``block.gradients_list()`` order).
    """
    n_properties = block.values.shape[-1]
    start = 0

    def take(shape):
        nonlocal start
        n_rows = int(np.prod(shape[:-1]))
        part = matrix[start : start + n_rows].reshape(*shape[:-1], n_properties)
        start += n_rows
        return np.ascontiguousarray(part)

    new = TensorBlock(take(block.values.shape), block.samples, block.components, block.properties)
    for parameter in block.gradients_list():
        gradient = block.gradient(parameter)
        new.add_gradient(
            parameter,
            TensorBlock(
                take(gradient.values.shape),
                gradient.samples,
                gradient.components,
                new.properties,
            ),
        )
    assert start == matrix.shape[0]
    return new


def with_singular_values(matrix, singular_values):
    """``matrix`` with its singular values replaced by ``singular_values``."""
    u, _, vt = np.linalg.svd(matrix, full_matrices=False)
    return (u * np.asarray(singular_values)) @ vt


def as_numpy(array):
    """``array`` as a numpy array (torch tensors are copied to the CPU)."""
    return _numpy(array)


def example_pair(seed=0, **kwargs):
    """(X, y) with three keys, components, two gradients and three targets.

    y's keys are in another order than X's. Keyword arguments override those
    given to :func:`make_pair`.
    """
    options = dict(
        keys=((0,), (1,), (3,)),
        n_systems=5,
        n_atoms=2,
        n_features=5,
        n_targets=3,
        n_components=3,
        gradients=("positions", "cell"),
    )
    options.update(kwargs)
    X, y = make_pair(np.random.default_rng(seed), **options)
    return X, reorder_keys(y, [2, 0, 1])


def nearly_deficient(seed):
    """(X, y) as :func:`example_pair`, with one singular value of each stacked X
    block at 20 eps times the largest: cut by numpy's default rcond
    (eps * max(rows, columns)), kept by rcond=eps."""
    X, y = example_pair(seed)
    blocks = []
    for block in X.blocks():
        matrix = stacked(block)
        singular = np.linspace(3.0, 1.0, matrix.shape[1])
        singular[-1] = 20 * np.finfo(np.float64).eps * singular[0]
        blocks.append(replace_stacked(block, with_singular_values(matrix, singular)))
    return TensorMap(X.keys, blocks), y


def assert_weights_layout(weights, X, y):
    """``weights`` is laid out as metatensor.lstsq's result for X and y."""
    assert weights.keys == X.keys
    for key, x_block in X.items():
        block = weights.block(key)
        assert block.samples == y.block(key).properties
        assert block.properties == x_block.properties
        assert block.components == []
        assert block.gradients_list() == []


def assert_weights_close(weights, reference, rtol=1e-9, atol=1e-11):
    """Same keys, metadata and (within tolerance) values, whatever the array library."""
    assert weights.keys == reference.keys
    for key, block in reference.items():
        ours = weights.block(key)
        assert ours.samples == block.samples
        assert ours.properties == block.properties
        np.testing.assert_allclose(_numpy(ours.values), _numpy(block.values), rtol=rtol, atol=atol)


def weight_map(tensor, function):
    """A TensorMap of row weights laid out as ``tensor``: its keys, samples, components
    and gradients, one property ``weight``.

    ``function(shape)`` gives the weights of an array of ``shape`` (that of the
    values, or of a gradient, with one property); numpy arrays whatever ``tensor``
    holds.
    """
    properties = Labels.range("weight", 1)
    blocks = []
    for block in tensor.blocks():
        shape = (*block.values.shape[:-1], 1)
        new = TensorBlock(function(shape), block.samples, block.components, properties)
        for parameter, gradient in block.gradients():
            gradient_shape = (*gradient.values.shape[:-1], 1)
            new.add_gradient(
                parameter,
                TensorBlock(
                    function(gradient_shape), gradient.samples, gradient.components, properties
                ),
            )
        blocks.append(new)
    return TensorMap(tensor.keys, blocks)


def torch_map(tensor, dtype=None, device="cpu"):
    """A metatensor.torch.TensorMap with the metadata and values of a core map.

    Built from the labels' values and the arrays independently of the library
    (float64 values unless ``dtype`` is given).
    """
    import metatensor.torch as mts
    import torch

    dtype = torch.float64 if dtype is None else dtype

    def labels(core):
        values = torch.tensor(np.asarray(core.values), dtype=torch.int32, device=device)
        return mts.Labels(list(core.names), values.reshape(len(core), len(core.names)))

    def block(core):
        values = torch.tensor(_numpy(core.values), dtype=dtype, device=device)
        new = mts.TensorBlock(
            values,
            labels(core.samples),
            [labels(c) for c in core.components],
            labels(core.properties),
        )
        for parameter, gradient in core.gradients():
            new.add_gradient(parameter, block(gradient))
        return new

    return mts.TensorMap(labels(tensor.keys), [block(b) for b in tensor.blocks()])
