"""metatensor-torch TensorMaps <-> metatensor-core TensorMaps holding the same tensors.

A :class:`metatensor.torch.TensorMap` is a TorchScript object; everything else
in this package works on :class:`metatensor.TensorMap`, whose blocks may hold
torch tensors too. :func:`to_core` gives the core view of a torch map (its
values and gradients are the same tensor objects, only the Labels are
converted) and :func:`to_torch_map` goes back. The input/output boundary
(:func:`~._indexed.unwrap`) calls them, nothing else does.

metatensor-torch is optional: nothing here imports it unless the data given is
a metatensor-torch object (which means it was imported already) or a result is
converted back to one.
"""

import sys

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap

#: The TorchScript names of the metatensor-torch classes.
_TORCH_CLASSES = {
    "__torch__.torch.classes.metatensor.Labels": "metatensor.torch.Labels",
    "__torch__.torch.classes.metatensor.TensorBlock": "metatensor.torch.TensorBlock",
    "__torch__.torch.classes.metatensor.TensorMap": "metatensor.torch.TensorMap",
}


def _torch_class(obj):
    """``"metatensor.torch.TensorMap"`` (or Labels, TensorBlock) for a
    metatensor-torch object, else None; imports nothing."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(obj, torch.ScriptObject):
        return None
    return _TORCH_CLASSES.get(obj._type().qualified_name())


def is_torch_map(obj):
    """Whether ``obj`` is a :class:`metatensor.torch.TensorMap`.

    Imports nothing: such an object only exists once torch and metatensor-torch
    are imported.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq._torch_maps import is_torch_map
    >>> block = TensorBlock(np.ones((1, 1)), Labels.range("s", 1), [], Labels.range("p", 1))
    >>> is_torch_map(TensorMap(Labels.single(), [block]))
    False
    """
    return _torch_class(obj) == "metatensor.torch.TensorMap"


def type_name(obj):
    """The name of ``obj``'s type for error messages.

    metatensor-torch objects are all ``torch.ScriptObject``: they are named by
    their class (``"metatensor.torch.TensorBlock"``).
    """
    return _torch_class(obj) or type(obj).__name__


def as_core(tensor):
    """:func:`to_core` of a metatensor-torch TensorMap; anything else unchanged."""
    return to_core(tensor) if is_torch_map(tensor) else tensor


# ---------------------------------------------------------------------------------
# metatensor-torch -> metatensor-core
# ---------------------------------------------------------------------------------


def to_core(tensor):
    """The metatensor-core view of a :class:`metatensor.torch.TensorMap`.

    Parameters
    ----------
    tensor : metatensor.torch.TensorMap

    Returns
    -------
    metatensor.TensorMap
        The same keys, samples, components and properties (as numpy Labels),
        whose blocks and gradients hold the very tensors of ``tensor``: nothing
        is copied, devices, dtypes and autograd graphs are kept.
    """
    return TensorMap(_core_labels(tensor.keys), [_core_block(block) for block in tensor.blocks()])


def _core_labels(labels):
    values = np.asarray(labels.values.detach().cpu(), dtype=np.int32)
    names = list(labels.names)
    return Labels(names, values.reshape(len(values), len(names)), assume_unique=True)


def _core_block(block):
    core = TensorBlock(
        block.values,
        _core_labels(block.samples),
        [_core_labels(component) for component in block.components],
        _core_labels(block.properties),
    )
    for parameter, gradient in block.gradients():
        core.add_gradient(parameter, _core_block(gradient))
    return core


# ---------------------------------------------------------------------------------
# metatensor-core -> metatensor-torch
# ---------------------------------------------------------------------------------


def to_torch_map(tensor):
    """A :class:`metatensor.torch.TensorMap` of a metatensor-core TensorMap.

    Parameters
    ----------
    tensor : metatensor.TensorMap
        Blocks holding torch tensors, which the result holds as they are (same
        device, dtype and autograd graph, no copy). numpy arrays are copied into
        CPU tensors of their dtype. A metatensor-torch TensorMap is returned
        unchanged.

    Returns
    -------
    metatensor.torch.TensorMap
        Every Labels on the device of the arrays of its block (the keys on the
        device of the first block, the CPU without blocks).
    """
    if is_torch_map(tensor):
        return tensor
    import metatensor.torch as mts

    blocks = [_torch_block(block, mts) for block in tensor.blocks()]
    device = blocks[0].values.device if blocks else "cpu"
    return mts.TensorMap(_torch_labels(tensor.keys, device, mts), blocks)


def _torch_values(array):
    import torch

    if isinstance(array, np.ndarray):
        return torch.tensor(array)
    return array


def _torch_labels(labels, device, mts):
    import torch

    names = list(labels.names)
    values = torch.tensor(np.asarray(labels.values, dtype=np.int32), device=device)
    return mts.Labels(names, values.reshape(len(values), len(names)), assume_unique=True)


def _torch_block(block, mts):
    values = _torch_values(block.values)
    device = values.device
    torch_block = mts.TensorBlock(
        values,
        _torch_labels(block.samples, device, mts),
        [_torch_labels(component, device, mts) for component in block.components],
        _torch_labels(block.properties, device, mts),
    )
    for parameter, gradient in block.gradients():
        torch_block.add_gradient(parameter, _torch_block(gradient, mts))
    return torch_block
