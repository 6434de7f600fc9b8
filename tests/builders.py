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
