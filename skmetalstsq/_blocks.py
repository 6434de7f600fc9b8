"""TensorBlock <-> 2-D arrays: components folded into rows, gradients stacked.

A block of shape ``(samples, *components, properties)`` is seen as a
``(samples * components, properties)`` matrix, and each of its gradients
(``(gradient samples, *gradient components, properties)``) as further rows under
it, exactly as ``metatensor.lstsq`` stacks them. Only views are made here.
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap

from ._backends import backend_of, convert, device_type, result_dtype


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


def key_tuples(keys):
    """Every entry of ``keys`` (Labels) as :func:`key_tuple` gives it, at once."""
    return [tuple(row) for row in keys.values.tolist()]


def key_text(key):
    """A key written as ``(name=value, ...)`` for error messages."""
    return "(" + ", ".join(f"{n}={int(v)}" for n, v in zip(key.names, key.values)) + ")"


def blocks_in_order(tensor, keys):
    """The blocks of ``tensor`` for ``keys``, in that order (one lookup when equal)."""
    if tensor.keys == keys:
        return tensor.blocks()
    return [tensor.block(key) for key in keys]


class BlockView:
    """A TensorBlock whose values, labels and gradients are each read once.

    metatensor makes a new Python object (and checks where the array comes
    from) on every access to a block's values or labels, a few microseconds
    each; a fit reads them several times, for each of possibly hundreds of
    blocks. This offers the reading methods of a TensorBlock, cached.

    Parameters
    ----------
    block : metatensor.TensorBlock
    """

    def __init__(self, block):
        self.block = block

    @cached_property
    def values(self):
        return self.block.values

    @cached_property
    def samples(self):
        return self.block.samples

    @cached_property
    def components(self):
        # a block has one component dimension per axis between samples and properties
        return [] if len(self.values.shape) == 2 else self.block.components

    @cached_property
    def properties(self):
        return self.block.properties

    @cached_property
    def _gradients(self):
        return {parameter: BlockView(g) for parameter, g in self.block.gradients()}

    def gradients_list(self):
        return list(self._gradients)

    def gradient(self, parameter):
        return self._gradients[parameter]

    def gradients(self):
        return list(self._gradients.items())


def block_pairs(X, y):
    """``(key, X block, y block)`` for every key of X, y's blocks in X's key order.

    The blocks are :class:`BlockView` s: metatensor looks up the map's keys on
    every block access, and makes new objects on every access to a block's
    arrays and labels; taking each once and passing this list on spares a fit
    doing it again for every step.
    """
    x_blocks, y_blocks = X.blocks(), blocks_in_order(y, X.keys)
    return [
        (key, BlockView(x_block), BlockView(y_block))
        for key, x_block, y_block in zip(X.keys, x_blocks, y_blocks)
    ]


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


def gradient_parameters(block):
    """The gradient parameters of ``block`` in the order their rows are stacked.

    Sorted, because metatensor-core gives ``gradients_list()`` of a loaded map in
    an order that differs from one process to the next.
    """
    return sorted(block.gradients_list())


@dataclass
class BlockSystem:
    """The linear system of one block, as plain arrays that any worker can take.

    Attributes
    ----------
    label : str
        The block key, for progress messages.
    a_parts, b_parts : lists of 2-D arrays
        Row parts of X and y: the values, then each gradient (sorted by parameter),
        of one array library and device, in the data's own dtype.
    dtype : numpy or torch dtype
        The dtype of the fitted weights (the factorisation is in float64).
    row_weights : list or None
        For each row part, None, a float or a 1-D numpy array: the weight of
        its rows (None: every row weighs 1).
    intercept : bool
        Whether an intercept is fitted on the value rows.
    alpha : float or 1-D numpy array
        The ridge penalty: one for every feature, or one per feature.
    """

    label: str
    a_parts: list
    b_parts: list
    dtype: object = None
    row_weights: list = None
    intercept: bool = False
    alpha: object = 0.0
    _scales: dict = field(default_factory=dict, repr=False)

    @property
    def n_rows(self):
        return sum(part.shape[0] for part in self.a_parts)

    @property
    def n_features(self):
        return self.a_parts[0].shape[1]

    @property
    def n_targets(self):
        return self.b_parts[0].shape[1]

    @property
    def width(self):
        """Columns of the system's ``[1 | A | B]`` (the ones only with an intercept)."""
        return int(self.intercept) + self.n_features + self.n_targets

    @property
    def device_type(self):
        return device_type(self.a_parts[0])

    def row_scale(self, position):
        """Square roots of the weights of row part ``position``, ready to multiply
        its rows: None, a float, or a 1-D float64 array of the data's library."""
        weights = None if self.row_weights is None else self.row_weights[position]
        if weights is None or isinstance(weights, float):
            return None if weights is None else float(np.sqrt(weights))
        if position not in self._scales:
            like = self.a_parts[position]
            self._scales[position] = backend_of(like).vector(np.sqrt(weights), like)
        return self._scales[position]


def block_systems(
    X, y, device=None, sample_weights=None, gradient_weights=None, intercept=False, pairs=None
):
    """The linear system of every block of X and y, on the device of the solve.

    Parameters
    ----------
    X, y : metatensor.TensorMap
        Already checked with :func:`~._validation.check_fit_inputs`.
    device : torch.device or None
        Where to solve; None keeps each block where it is.
    sample_weights : dict or None
        Key tuple -> a weight array for each row part (values, then sorted
        gradients), as :func:`~._weights.row_weights` gives them.
    gradient_weights : dict or None
        Gradient parameter -> factor multiplying the weight of its rows.
    intercept : bool
        Whether to fit an intercept.
    pairs : list or None
        :func:`block_pairs` of X and y, when the caller has them already.

    Returns
    -------
    list of BlockSystem, in the order of X's keys
    """
    gradient_weights = gradient_weights or {}
    systems = []
    for key, x_block, y_block in pairs or block_pairs(X, y):
        parameters = gradient_parameters(x_block)
        weights = None
        if sample_weights is not None:
            weights = list(sample_weights[key_tuple(key)])
        if any(parameter in gradient_weights for parameter in parameters):
            weights = weights or [None] * (1 + len(parameters))
            for position, parameter in enumerate(parameters, start=1):
                factor = gradient_weights.get(parameter)
                if factor is None:
                    continue
                current = weights[position]
                weights[position] = float(factor) if current is None else current * factor
        a_parts = [convert(p, device) for p in row_parts(x_block, parameters)]
        b_parts = [convert(p, device) for p in row_parts(y_block, parameters)]
        dtype = result_dtype(a_parts[0], b_parts[0])
        systems.append(BlockSystem(key_text(key), a_parts, b_parts, dtype, weights, intercept))
    return systems


def predict_block(block, weights, target_properties, intercept=None):
    """Apply ``weights`` (n_targets, n_features) to a block and its gradients.

    The prediction keeps the samples and components of ``block`` (and of each
    gradient) and takes ``target_properties`` as properties. ``weights`` (and
    ``intercept``, of shape (n_targets,), added to the values only) must be of
    the array library and device of the block.
    """
    transposed = weights.T
    values = _product(block.values, transposed)
    if intercept is not None:
        values = values + intercept
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
