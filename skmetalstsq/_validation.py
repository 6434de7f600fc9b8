"""Input checks: every mismatch is reported, with the block key, before any solve."""

import numpy as np
import scipy.sparse
from metatensor import TensorMap

from ._backends import array_library
from ._blocks import block_pairs, key_text
from ._torch_maps import type_name


def check_is_tensor_map(tensor, caller, name):
    """Raise TypeError unless ``tensor`` is a metatensor.TensorMap."""
    if not isinstance(tensor, TensorMap):
        raise TypeError(
            f"{caller}: {name} must be a metatensor.TensorMap, an IndexedTensorMap or "
            f"a 2-D array, got {type_name(tensor)}"
        )


def check_array_like(data, caller, name):
    """Raise TypeError unless ``data`` can be read as an array by scikit-learn.

    Lists, tuples, sparse matrices and anything with ``__array__`` (numpy
    arrays, torch tensors, pandas objects) are array-like; a TensorBlock, a
    dict or a string is not.
    """
    if isinstance(data, (list, tuple)) or hasattr(data, "__array__"):
        return
    if hasattr(data, "__array_interface__") or scipy.sparse.issparse(data):
        return
    raise TypeError(
        f"{caller}: {name} must be a metatensor.TensorMap, an IndexedTensorMap or "
        f"a 2-D array, got {type_name(data)}"
    )


def resolve_device(device, caller):
    """Turn the ``device`` parameter into None or a ``torch.device``.

    Raises
    ------
    ValueError
        If ``device`` is not None, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
        torch.device, or names a CUDA device that is not available.
    ImportError
        If a device is requested and torch is not installed.
    """
    if device is None:
        return None
    accepted = "None, 'cpu', 'cuda', 'cuda:N' or a torch.device"
    is_torch_device = type(device).__name__ == "device" and type(device).__module__ == "torch"
    if not (isinstance(device, str) or is_torch_device):
        raise ValueError(f"{caller}: device must be {accepted}, got {device!r}")
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is installed in the tests
        raise ImportError(
            f"{caller}: device={device!r} needs torch: pip install 'skmetalstsq[torch]'"
        ) from error
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"{caller}: device must be {accepted}, got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"{caller}: device must be {accepted}, got {device!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{caller}: device={device!r} but CUDA is not available")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"{caller}: device={device!r} but only {torch.cuda.device_count()} "
                "CUDA device(s) are available"
            )
    return resolved


def _labels_mismatch(
    what, x_labels, y_labels, sides=("X", "y"), hint="sort both with metatensor.sort"
):
    """Describe how two Labels differ, or return None when they are equal.

    ``sides`` names where each of the Labels comes from; ``hint`` is given when
    the same entries come in another order.
    """
    x_side, y_side = sides
    if x_labels.names != y_labels.names:
        return f"{what} are named {x_labels.names} in {x_side} but {y_labels.names} in {y_side}"
    x_values, y_values = np.asarray(x_labels.values), np.asarray(y_labels.values)
    if x_values.shape[0] != y_values.shape[0]:
        return f"has {x_values.shape[0]} {what} in {x_side} but {y_values.shape[0]} in {y_side}"
    if np.array_equal(x_values, y_values):
        return None
    row = int(np.flatnonzero((x_values != y_values).any(axis=1))[0])
    if np.array_equal(np.unique(x_values, axis=0), np.unique(y_values, axis=0)):
        return (
            f"has the same {what} in {x_side} and {y_side} but in a different order "
            f"(first at row {row}); {hint}"
        )
    return (
        f"has different {what} in {x_side} and {y_side}: row {row} is "
        f"{tuple(int(v) for v in x_values[row])} in {x_side} but "
        f"{tuple(int(v) for v in y_values[row])} in {y_side} ({what} names {x_labels.names})"
    )


def check_same_keys(X, y, caller, names=("X", "y")):
    """Raise ValueError unless X and y have the same key names and the same keys.

    ``names`` are what the two sides are called in the message.
    """
    x_name, y_name = names
    if X.keys.names != y.keys.names:
        raise ValueError(
            f"{caller}: keys are named {X.keys.names} in {x_name} but {y.keys.names} in {y_name}"
        )
    only_x = X.keys.difference(y.keys)
    only_y = y.keys.difference(X.keys)
    if len(only_x) or len(only_y):
        raise ValueError(
            f"{caller}: {x_name} and {y_name} have different keys: "
            f"only in {x_name}: {[key_text(k) for k in only_x]}, "
            f"only in {y_name}: {[key_text(k) for k in only_y]}"
        )


def check_finite(array, caller, name, key, where):
    """Raise ValueError if ``array`` holds NaN or infinity."""
    if isinstance(array, np.ndarray):
        # integers are finite; the sum of finite numbers is finite unless it
        # overflows, which the element-wise check then settles
        if array.dtype.kind in "iu" or np.isfinite(array.sum()) or np.isfinite(array).all():
            return
    else:
        import torch

        if bool(torch.isfinite(array.sum())) or bool(torch.isfinite(array).all()):
            return
    raise ValueError(f"{caller}: {name} block {key_text(key)} has NaN or infinity in its {where}")


def _is_number_dtype(array, library):
    """Whether ``array`` holds numbers: not bool (numpy or torch), not object, not str."""
    if library == "numpy":
        return array.dtype.kind in "iufc"
    import torch

    return array.dtype != torch.bool


def check_block_arrays(block, caller, name, key, values=None):
    """Check dtype and finiteness of a block's values and gradients.

    Numbers of any dtype are accepted (integers are solved in float64); bool,
    object and string arrays are rejected alike for numpy and torch, and so are
    complex ones. ``values`` is ``block.values`` when the caller has it already.
    """
    arrays = [("values", block.values if values is None else values)]
    arrays += [(f"'{p}' gradient", g.values) for p, g in block.gradients()]
    for where, array in arrays:
        library = array_library(array)
        if not _is_number_dtype(array, library):
            module = "np" if library == "numpy" else "torch"
            raise TypeError(
                f"{caller}: {name} block {key_text(key)} has {array.dtype} {where}; convert "
                f"{name} to a floating dtype with {name}.to(dtype={module}.float64)"
            )
        if array.dtype.kind == "c" if library == "numpy" else array.is_complex():
            raise TypeError(
                f"{caller}: {name} block {key_text(key)} has complex {where}, "
                "which least squares on real data does not accept"
            )
        check_finite(array, caller, name, key, where)


def drop_blocks_without_properties(tensors, target):
    """The ``metatensor.drop_blocks`` call that removes the blocks without properties.

    It drops, from the TensorMap called ``target`` in the message, every block
    that has no properties in any of ``tensors`` (TensorMaps with the same keys).
    Only built for an error message.
    """
    keys = tensors[0].keys
    rows = [
        [int(value) for value in k.values]
        for k in keys
        if any(tensor.block(k).values.shape[-1] == 0 for tensor in tensors)
    ]
    return f"metatensor.drop_blocks({target}, Labels({list(keys.names)!r}, np.array({rows!r})))"


def _sum_over_samples_hint(x_names, y_names):
    """How to meet X and y whose sample names differ only by extra dimensions.

    When one side's sample names are the other's with more dimensions (the
    others in the same order, as for per-atom X and per-system y), summing the
    finer side over the extra ones gives the coarser side's names. Returns ""
    otherwise.
    """
    for finer, coarser, side in ((x_names, y_names, "X"), (y_names, x_names, "y")):
        if 0 < len(coarser) < len(finer) and [n for n in finer if n in coarser] == coarser:
            extra = [n for n in finer if n not in coarser]
            return (
                f"; {side} has the extra sample dimensions {extra}: sum {side} over them first "
                f"with metatensor.sum_over_samples({side}, sample_names={extra}) (or average "
                "with metatensor.mean_over_samples)"
            )
    return ""


def _array_kind(array):
    library = array_library(array)
    return library if library == "numpy" else f"torch ({array.device})"


class _BlockName:
    """``"{caller}: block (key)"`` for error messages, written only when one is raised."""

    def __init__(self, caller, key):
        self.caller, self.key = caller, key

    def __str__(self):
        return f"{self.caller}: block {key_text(self.key)}"


def check_fit_inputs(X, y, caller):
    """Check that X and y can be solved block by block, before any solve.

    Keys must match (in any order); every block must have at least one property
    in X and in y (0 samples are fine); in each block the array library and
    device, the samples, the components and the gradients (parameters, samples
    and components) must be the same in X and y, and no array may hold NaN or
    infinity.

    Returns
    -------
    list of (key, X block, y block)
        :func:`~._blocks.block_pairs` of X and y, for the caller to go on with.

    Raises
    ------
    ValueError, TypeError
        naming the block key and both sides of the first mismatch found.
    """
    check_is_tensor_map(X, caller, "X")
    check_is_tensor_map(y, caller, "y")
    check_same_keys(X, y, caller)
    pairs = block_pairs(X, y)
    for key, x_block, y_block in pairs:
        block = _BlockName(caller, key)
        x_values, y_values = x_block.values, y_block.values
        for where, values in (("X", x_values), ("y", y_values)):
            if values.shape[-1] == 0:
                raise ValueError(
                    f"{block} has 0 properties in {where}; every block needs at least one "
                    "feature and one target (a block without samples is fine): drop the "
                    "blocks without properties from X and y with "
                    f"{drop_blocks_without_properties((X, y), 'tensor')}"
                )
        x_kind, y_kind = _array_kind(x_values), _array_kind(y_values)
        if x_kind != y_kind:
            raise TypeError(f"{block} holds {x_kind} arrays in X but {y_kind} in y")
        for what in ("samples", "components"):
            x_labels, y_labels = getattr(x_block, what), getattr(y_block, what)
            if what == "components":
                mismatch = _components_mismatch(x_labels, y_labels)
            else:
                mismatch = _labels_mismatch(what, x_labels, y_labels)
                if mismatch and x_labels.names != y_labels.names:
                    mismatch += _sum_over_samples_hint(x_labels.names, y_labels.names)
            if mismatch:
                raise ValueError(f"{block} {mismatch}")
        x_parameters = set(x_block.gradients_list())
        y_parameters = set(y_block.gradients_list())
        if x_parameters != y_parameters:
            raise ValueError(
                f"{block} has gradients {sorted(x_parameters)} in X but "
                f"{sorted(y_parameters)} in y: every gradient is fitted together with "
                "the values, so both must have the same ones (remove the others with "
                "metatensor.remove_gradients)"
            )
        for parameter in sorted(x_parameters):
            x_gradient, y_gradient = (
                x_block.gradient(parameter),
                y_block.gradient(parameter),
            )
            mismatch = _labels_mismatch("samples", x_gradient.samples, y_gradient.samples)
            mismatch = mismatch or _components_mismatch(
                x_gradient.components, y_gradient.components
            )
            if mismatch:
                raise ValueError(f"{block}, '{parameter}' gradient {mismatch}")
        check_block_arrays(x_block, caller, "X", key, x_values)
        check_block_arrays(y_block, caller, "y", key, y_values)
    return pairs


def _components_mismatch(x_components, y_components):
    if len(x_components) != len(y_components):
        return f"has {len(x_components)} component dimensions in X but {len(y_components)} in y"
    for x_labels, y_labels in zip(x_components, y_components):
        mismatch = _labels_mismatch("components", x_labels, y_labels)
        if mismatch:
            return mismatch
    return None


def check_predict_input(X, weights, caller, check_arrays=True):
    """Check a TensorMap to predict from against the fitted weights.

    Every key of X must have been seen in fit, and each block's properties must
    be the X properties seen in fit for that key. ``check_arrays=False`` skips
    the dtype and finiteness checks of the arrays, for callers that made them.

    Returns
    -------
    list of int
        For each block of X, the position of its weights in ``weights``.
    """
    check_is_tensor_map(X, caller, "X")
    if X.keys.names != weights.keys.names:
        raise ValueError(
            f"{caller}: keys are named {X.keys.names} in X but "
            f"{weights.keys.names} were seen in fit"
        )
    positions = []
    for key, block in X.items():
        position = weights.keys.position(key)
        if position is None:
            seen = [key_text(k) for k in weights.keys]
            more = f" and {len(seen) - 10} more" if len(seen) > 10 else ""
            raise ValueError(
                f"{caller}: block {key_text(key)} of X was not seen in fit, which saw "
                f"{', '.join(seen[:10])}{more}"
            )
        fitted = weights.block(position).properties
        mismatch = _labels_mismatch(
            "properties",
            block.properties,
            fitted,
            sides=("X", "fit"),
            hint="X's properties must come in the order seen in fit",
        )
        if mismatch:
            if block.values.shape[-1] == 0:
                raise ValueError(
                    f"{caller}: block {key_text(key)} has 0 properties in X but "
                    f"{len(fitted)} in fit; give it the properties seen in fit, or drop the "
                    f"blocks without properties with {drop_blocks_without_properties((X,), 'X')}"
                )
            raise ValueError(f"{caller}: block {key_text(key)} {mismatch}")
        if check_arrays:
            check_block_arrays(block, caller, "X", key)
        positions.append(position)
    return positions


def check_groups(groups, n_entries, entries, caller):
    """``groups`` unchanged, checked to give one group per entry (None passes).

    ``entries`` names what is split, for the messages ("'system' entries of X and y").
    """
    if groups is None:
        return None
    shape = tuple(groups.shape) if hasattr(groups, "shape") else np.shape(groups)
    if len(shape) != 1 or shape[0] != n_entries:
        given = f"{shape[0]} entries" if len(shape) == 1 else f"an array of shape {shape}"
        raise ValueError(
            f"{caller}: groups must give the group of each of the {n_entries} {entries}, "
            f"got {given}"
        )
    return groups


def check_splits(splits, n_entries, entries, caller):
    """Each ``(train, test)`` of ``cv`` as arrays of entry positions, checked.

    Indices are integers in ``[-n_entries, n_entries)`` (negative ones count
    from the end, as numpy's) or boolean masks over the entries; an entry
    appears at most once in each, and every training set has an entry.
    """
    if not splits:
        raise ValueError(f"{caller}: cv gave no splits")
    checked = []
    for s, split in enumerate(splits):
        if len(split) != 2:
            raise ValueError(
                f"{caller}: cv must give (train, test) pairs of indices, split {s} has "
                f"{len(split)} parts"
            )
        train, test = (
            _split_positions(index, part, s, n_entries, entries, caller)
            for index, part in zip(split, ("training", "test"))
        )
        if not len(train):
            raise ValueError(f"{caller}: split {s} of cv has no training entries")
        checked.append((train, test))
    return checked


def _split_positions(index, part, s, n_entries, entries, caller):
    """Positions of the ``part`` ("training" or "test") entries of split ``s``."""
    where = f"{caller}: the {part} indices of split {s} of cv"
    index = np.asarray(index)
    if index.dtype == bool and index.ndim == 1:
        if len(index) != n_entries:
            raise ValueError(
                f"{where} are a boolean mask of {len(index)} values for the {n_entries} {entries}"
            )
        return np.flatnonzero(index)
    if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
        raise ValueError(
            f"{where} must be a 1-D array of integers or booleans, got an array of "
            f"dtype {index.dtype} and shape {index.shape}"
        )
    index = index.astype(np.int64)
    outside = index[(index < -n_entries) | (index >= n_entries)]
    if len(outside):
        raise ValueError(
            f"{where} hold {int(outside[0])}, out of range for the {n_entries} {entries}"
        )
    positions = np.where(index < 0, index + n_entries, index)
    ordered = np.sort(positions)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(repeated):
        raise ValueError(f"{where} hold the entry {int(repeated[0])} more than once")
    return positions
