"""sample_weight resolved into one weight for every row of every block.

A block is seen as a (rows, properties) matrix, components folded into rows, with
the rows of each gradient under those of the values (see :mod:`._blocks`). The
weight of a row applies to all its properties. Four kinds of ``sample_weight``
are accepted:

- a number, the same weight on every row (scikit-learn's scalar ``sample_weight``);
- an array-like with one weight per entry of an :class:`~._indexed.IndexedTensorMap`
  (in the order of its ``entries``), given to every row of that entry in every
  block, values and gradients alike;
- with ``per_sample=True`` (a one-block TensorMap made from plain arrays), an
  array-like with one weight per sample of that block, given to its rows and
  to the gradient rows of that sample;
- a TensorMap (or an IndexedTensorMap of one) with y's keys and, in each block,
  y's samples, components and gradients and exactly one property: the weight of
  each row, gradient rows weighted by the gradient blocks of the weight map.
"""

import numbers

import numpy as np
from metatensor import TensorMap

from ._blocks import key_text, key_tuple
from ._indexed import IndexedTensorMap, unwrap
from ._validation import _labels_mismatch, check_same_keys


def row_weights(sample_weight, y, caller, parameters=None, per_sample=False, name="y"):
    """Resolve ``sample_weight`` against ``y`` into a weight for every row.

    Parameters
    ----------
    sample_weight : None, float, array-like, TensorMap or IndexedTensorMap
        The kinds of the module docstring. An array-like needs ``y`` to be an
        IndexedTensorMap (one weight per entry), or ``per_sample=True``.
    y : TensorMap or IndexedTensorMap
        The targets as the user gave them.
    caller : str
        Named at the start of every error message.
    parameters : None or dict
        ``{key tuple: list of gradient parameters}``: for each block, which
        gradients have rows and in which order they come after the values.
        None: ``sorted(block.gradients_list())`` for every block.
    per_sample : bool, default=False
        ``y`` is a one-block TensorMap made from plain arrays (see
        :func:`~._blocks.array_to_tensor`): an array-like holds one weight per
        sample (row of values) of that block.
    name : str, default="y"
        What ``y`` is called in messages (``"y_true"`` for the metrics).

    Returns
    -------
    None or dict
        None when ``sample_weight`` is None; otherwise ``{key tuple:
        [values rows weights, gradient rows weights, ...]}`` in the order of
        ``parameters``, each a 1-D float64 numpy array with one weight per row
        (samples times components flattened in C order, as
        ``values.reshape(-1, n_properties)`` lays them out).

    Raises
    ------
    TypeError
        For a ``sample_weight`` of another kind, or an array-like with a plain
        TensorMap ``y``.
    ValueError
        For weights that are negative, NaN or infinite, of the wrong shape, or
        a weight map whose keys, samples, components, gradients or properties
        do not fit ``y``. Everything is checked before anything is returned.
    """
    if sample_weight is None:
        return None
    tensor = unwrap(y)[0]
    if not isinstance(tensor, TensorMap):
        raise TypeError(
            f"{caller}: sample_weight needs {name} to be a TensorMap or an IndexedTensorMap, "
            f"got {type(y).__name__}"
        )
    parameters = _parameters(tensor, parameters, caller, name)
    if isinstance(unwrap(sample_weight)[0], TensorMap):
        return _from_weight_map(unwrap(sample_weight)[0], tensor, parameters, caller, name)
    if isinstance(sample_weight, numbers.Real):
        weight = float(sample_weight)
        if not (np.isfinite(weight) and weight >= 0):
            raise ValueError(
                f"{caller}: sample_weight must be finite and >= 0, got {sample_weight!r}"
            )
        return {
            key_tuple(key): _spread(np.full(len(block.samples), weight), block, block_parameters)
            for (key, block), block_parameters in zip(tensor.items(), parameters)
        }
    if not _is_array_like(sample_weight):
        raise TypeError(
            f"{caller}: sample_weight must be None, an array-like of one weight per entry "
            f"of an IndexedTensorMap {name}, or a TensorMap of weights, got "
            f"{type(sample_weight).__name__}"
        )
    if per_sample:
        if len(tensor.keys) != 1:
            raise ValueError(
                f"{caller}: one weight per sample needs {name} of one block, got "
                f"{len(tensor.keys)} blocks"
            )
        block = tensor.block(0)
        weights = _weight_vector(sample_weight, len(block.samples), "samples", caller, name)
        return {key_tuple(tensor.keys[0]): _spread(weights, block, parameters[0])}
    if not isinstance(y, IndexedTensorMap):
        raise TypeError(
            f"{caller}: an array-like sample_weight holds one weight per entry of an "
            f"IndexedTensorMap, but {name} is a TensorMap: wrap {name} (and X) with "
            f"skmetalstsq.IndexedTensorMap(tensor, 'system'), or give a TensorMap of "
            f"weights with the keys, samples, components and gradients of {name} and "
            "one property"
        )
    weights = _weight_vector(sample_weight, len(y), f"'{y.sample}' entries", caller, name)
    resolved = {}
    for (key, block), positions, block_parameters in zip(
        tensor.items(), y._block_positions(), parameters
    ):
        resolved[key_tuple(key)] = _spread(weights[positions], block, block_parameters)
    return resolved


def _parameters(tensor, parameters, caller, name):
    """The gradient parameters of each block (in ``tensor``'s order), checked."""
    ordered = []
    for key, block in tensor.items():
        if parameters is None:
            ordered.append(sorted(block.gradients_list()))
            continue
        block_parameters = list(parameters[key_tuple(key)])
        for parameter in block_parameters:
            if not block.has_gradient(parameter):
                raise ValueError(
                    f"{caller}: block {key_text(key)} of {name} has no '{parameter}' "
                    f"gradient (it has {block.gradients_list()})"
                )
        ordered.append(block_parameters)
    return ordered


def _is_array_like(data):
    if isinstance(data, (str, bytes, dict)):
        return False
    return isinstance(data, (list, tuple)) or hasattr(data, "__array__")


def _as_float64(array, text):
    """``array`` (numpy, torch or array-like) as a float64 numpy array.

    ``text`` starts the message: ``"caller: sample_weight"`` and where.
    """
    if hasattr(array, "detach") and hasattr(array, "device"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{text} must hold numbers, got {array.dtype}")
    if np.iscomplexobj(array):
        raise TypeError(f"{text} must hold real numbers, got {array.dtype}")
    return array.astype(np.float64)


def _check_values(weights, text, unit, where=""):
    """Raise ValueError for NaN, infinite or negative weights, naming the first.

    The message is ``"{text} has {problem}{where} (first at {unit} i: value)"``.
    """
    problems = ((~np.isfinite(weights), "NaN or infinity"), (weights < 0, "negative weights"))
    for bad, problem in problems:
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{text} has {problem}{where} (first at {unit} {first}: {weights[first]}); "
                "weights must be finite and >= 0"
            )


def _weight_vector(sample_weight, expected, what, caller, name):
    """An array-like of one weight per sample or entry, checked."""
    weights = _as_float64(sample_weight, f"{caller}: sample_weight")
    if weights.ndim != 1:
        raise ValueError(
            f"{caller}: sample_weight must be 1-D, one weight for each of the {expected} "
            f"{what} of {name}, got shape {weights.shape}"
        )
    if len(weights) != expected:
        raise ValueError(
            f"{caller}: sample_weight has {len(weights)} weights but {name} has {expected} {what}"
        )
    _check_values(weights, f"{caller}: sample_weight", "position")
    return weights


def _component_rows(block):
    """Rows per sample of ``block``: the product of its component sizes."""
    return int(np.prod([len(component) for component in block.components], dtype=np.int64))


def _spread(sample_weights, block, parameters):
    """Weights of the samples of ``block`` given to its rows and gradient rows."""
    parts = [np.repeat(sample_weights, _component_rows(block))]
    for parameter in parameters:
        gradient = block.gradient(parameter)
        parents = np.asarray(gradient.samples.column("sample"))
        parts.append(np.repeat(sample_weights[parents], _component_rows(gradient)))
    return parts


def _from_weight_map(weight_map, tensor, parameters, caller, name):
    """Row weights read from a TensorMap of weights laid out as ``tensor``."""
    check_same_keys(tensor, weight_map, caller, names=(name, "sample_weight"))
    sides = (name, "sample_weight")
    hint = f"build sample_weight from the samples of {name}"
    checked = []
    for (key, block), block_parameters in zip(tensor.items(), parameters):
        weight_block = weight_map.block(key)
        prefix = f"{caller}: sample_weight block {key_text(key)}"
        n_properties = weight_block.values.shape[-1]
        if n_properties != 1:
            raise ValueError(
                f"{prefix} has {n_properties} properties; a TensorMap of weights has exactly "
                "one property, the weight of each row"
            )
        extra = sorted(set(weight_block.gradients_list()) - set(block.gradients_list()))
        if extra:
            raise ValueError(
                f"{prefix} has the gradients {extra}, which {name} does not have (it has "
                f"{block.gradients_list()})"
            )
        parts = [("values", block, weight_block)]
        for parameter in block_parameters:
            if not weight_block.has_gradient(parameter):
                raise ValueError(
                    f"{prefix} has no '{parameter}' gradient (it has "
                    f"{weight_block.gradients_list()}), which weighs the '{parameter}' "
                    f"gradient rows of {name}"
                )
            parts.append(
                (
                    f"'{parameter}' gradient",
                    block.gradient(parameter),
                    weight_block.gradient(parameter),
                )
            )
        for where, y_part, weight_part in parts:
            mismatch = _labels_mismatch("samples", y_part.samples, weight_part.samples, sides, hint)
            mismatch = mismatch or _components_mismatch(
                y_part.components, weight_part.components, sides, hint
            )
            if mismatch:
                place = "" if where == "values" else f", {where}"
                raise ValueError(f"{caller}: block {key_text(key)}{place} {mismatch}")
        checked.append((key, parts))
    resolved = {}
    for key, parts in checked:
        weights = []
        for where, _, weight_part in parts:
            text = f"{caller}: sample_weight block {key_text(key)}"
            values = _as_float64(weight_part.values, f"{text} ({where})").reshape(-1)
            _check_values(values, text, "row", f" in its {where}")
            weights.append(values)
        resolved[key_tuple(key)] = weights
    return resolved


def _components_mismatch(y_components, weight_components, sides, hint):
    if len(y_components) != len(weight_components):
        return (
            f"has {len(y_components)} component dimensions in {sides[0]} but "
            f"{len(weight_components)} in {sides[1]}"
        )
    for y_labels, weight_labels in zip(y_components, weight_components):
        mismatch = _labels_mismatch("components", y_labels, weight_labels, sides, hint)
        if mismatch:
            return mismatch
    return None


def check_not_all_zero(weights, caller):
    """Raise ValueError when rows exist and every one of them weighs zero.

    ``weights`` is what :func:`row_weights` returns (None passes).
    """
    if weights is None:
        return
    arrays = [part for parts in weights.values() for part in parts if len(part)]
    if arrays and not any(part.any() for part in arrays):
        raise ValueError(
            f"{caller}: every sample weight is zero, so there is nothing to fit; give at "
            "least one row a positive weight"
        )
