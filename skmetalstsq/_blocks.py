"""TensorBlock <-> 2-D arrays: components folded into rows, gradients stacked.

A block of shape ``(samples, *components, properties)`` is seen as a
``(samples * components, properties)`` matrix, and each of its gradients
(``(gradient samples, *gradient components, properties)``) as further rows under
it, exactly as ``metatensor.lstsq`` stacks them. Only views are made here.
"""

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap


def row_parts(block, parameters):
    """The values and the named gradients of ``block`` as 2-D row views.

    Parameters
    ----------
    block : metatensor.TensorBlock
    parameters : sequence of str
        Gradient parameters to stack under the values, in this order.

    Returns
    -------
    list of 2-D arrays, each of shape (rows, n_properties)
    """
    n_properties = block.values.shape[-1]
    parts = [block.values.reshape(-1, n_properties)]
    for parameter in parameters:
        parts.append(block.gradient(parameter).values.reshape(-1, n_properties))
    return parts


def key_tuple(key):
    """A key (LabelsEntry) as a tuple of Python ints, usable as a dict key."""
    return tuple(int(value) for value in key.values)


def key_text(key):
    """A key written as ``(name=value, ...)`` for error messages."""
    return "(" + ", ".join(f"{n}={int(v)}" for n, v in zip(key.names, key.values)) + ")"


def blocks_in_order(tensor, keys):
    """The blocks of ``tensor`` for ``keys``, in that order (one lookup when equal)."""
    if tensor.keys == keys:
        return tensor.blocks()
    return [tensor.block(key) for key in keys]


def weights_block(weights, target_properties, feature_properties):
    """A weights block laid out as ``metatensor.lstsq`` lays it out."""
    return TensorBlock(
        values=weights,
        samples=target_properties,
        components=[],
        properties=feature_properties,
    )


def is_floating(array):
    """Whether a numpy array or torch tensor holds floating-point numbers."""
    if isinstance(array, np.ndarray):
        return np.issubdtype(array.dtype, np.floating)
    return array.is_floating_point()


def _product(values, transposed):
    """``values @ transposed``, integer values taken in the weights' dtype."""
    if not is_floating(values):
        if isinstance(values, np.ndarray):
            values = values.astype(transposed.dtype)
        else:
            values = values.to(transposed.dtype)
    return values @ transposed


def predict_block(block, weights, target_properties):
    """Apply ``weights`` (n_targets, n_features) to a block and its gradients.

    The prediction keeps the samples and components of ``block`` (and of each
    gradient) and takes ``target_properties`` as properties. ``weights`` must be
    of the array library and device of the block.
    """
    transposed = weights.T
    values = _product(block.values, transposed)
    predicted = TensorBlock(values, block.samples, block.components, target_properties)
    for parameter, gradient in block.gradients():
        predicted.add_gradient(
            parameter,
            TensorBlock(
                _product(gradient.values, transposed),
                gradient.samples,
                gradient.components,
                target_properties,
            ),
        )
    return predicted


# ---------------------------------------------------------------------------------
# plain 2-D arrays seen as a one-block TensorMap
# ---------------------------------------------------------------------------------

ARRAY_KEY = Labels.single()


def array_to_tensor(array):
    """Wrap a 2-D array as a one-block TensorMap (samples and properties numbered)."""
    block = TensorBlock(
        values=array,
        samples=Labels.range("sample", array.shape[0]),
        components=[],
        properties=Labels.range("property", array.shape[1]),
    )
    return TensorMap(ARRAY_KEY, [block])


def tensor_to_array(tensor):
    """The values of the single block of a TensorMap made by :func:`array_to_tensor`."""
    return tensor.block(0).values


# ---------------------------------------------------------------------------------
# pickling: TensorMaps unpickle with numpy arrays, so keep the arrays themselves
# ---------------------------------------------------------------------------------


def tensor_to_state(tensor):
    """A picklable description of a TensorMap that keeps its arrays as they are.

    A pickled TensorMap is serialised to a buffer and unpickles with numpy
    arrays; this keeps each array itself, so torch tensors keep their dtype and
    device, and large numpy arrays pickle (and memory-map) as plain arrays.
    """
    return {
        "keys": _labels_state(tensor.keys),
        "blocks": [_block_state(block) for block in tensor.blocks()],
    }


def tensor_from_state(state):
    """Inverse of :func:`tensor_to_state`."""
    blocks = [_block_from_state(block) for block in state["blocks"]]
    return TensorMap(_labels_from_state(state["keys"]), blocks)


def _block_state(block):
    return {
        "values": block.values,
        "samples": _labels_state(block.samples),
        "components": [_labels_state(c) for c in block.components],
        "properties": _labels_state(block.properties),
        "gradients": {p: _block_state(g) for p, g in block.gradients()},
    }


def _block_from_state(state, properties=None):
    properties = properties or _labels_from_state(state["properties"])
    block = TensorBlock(
        values=state["values"],
        samples=_labels_from_state(state["samples"]),
        components=[_labels_from_state(c) for c in state["components"]],
        properties=properties,
    )
    for parameter, gradient in state["gradients"].items():
        block.add_gradient(parameter, _block_from_state(gradient, properties))
    return block


def _labels_state(labels):
    return (list(labels.names), np.asarray(labels.values))


def _labels_from_state(state):
    names, values = state
    return Labels(names, values)
