"""IndexedTensorMap: a TensorMap that scikit-learn can split by a sample dimension."""

import numbers

import metatensor
import numpy as np
from metatensor import Labels, TensorMap

from ._blocks import key_text, tensor_from_state, tensor_to_state


class IndexedTensorMap:
    """A TensorMap indexed by the values of one sample dimension.

    scikit-learn splits data by integer positions along its first axis; a
    TensorMap is a collection of blocks. This view numbers the distinct values
    of one sample dimension (e.g. ``"system"``) over all blocks, smallest first,
    so that position ``i`` selects that entry in every block, with the gradient
    rows of its samples.

    Parameters
    ----------
    tensor : metatensor.TensorMap
        Every block must have the sample dimension ``sample``.
    sample : str, default="system"
        The sample dimension to index by.

    Attributes
    ----------
    tensor : metatensor.TensorMap
        The wrapped TensorMap.
    sample : str
        The sample dimension.
    entries : numpy.ndarray of shape (n_entries,)
        The distinct values of ``sample``, sorted.

    Examples
    --------
    >>> import numpy as np
    >>> from metatensor import Labels, TensorBlock, TensorMap
    >>> from skmetalstsq import IndexedTensorMap
    >>> samples = Labels(["system", "atom"], np.array([[0, 0], [0, 1], [2, 0]]))
    >>> block = TensorBlock(np.ones((3, 2)), samples, [], Labels.range("p", 2))
    >>> X = IndexedTensorMap(TensorMap(Labels.single(), [block]), "system")
    >>> len(X), X.entries
    (2, array([0, 2], dtype=int32))
    >>> X[[1]].tensor.block(0).samples.values
    array([[2, 0]], dtype=int32)
    """

    def __init__(self, tensor, sample="system"):
        if not isinstance(tensor, TensorMap):
            raise TypeError(
                f"IndexedTensorMap: tensor must be a metatensor.TensorMap, got "
                f"{type(tensor).__name__}"
            )
        columns = []
        for key, block in tensor.items():
            if sample not in block.samples.names:
                raise ValueError(
                    f"IndexedTensorMap: block {key_text(key)} has no sample dimension "
                    f"'{sample}' (its samples are {block.samples.names})"
                )
            columns.append(np.asarray(block.samples.column(sample)))
        self.tensor = tensor
        self.sample = sample
        self.entries = np.unique(np.concatenate(columns)) if columns else np.array([], np.int32)

    @property
    def shape(self):
        """``(n_entries,)``, as scikit-learn reads it."""
        return (len(self.entries),)

    def __len__(self):
        return len(self.entries)

    def __repr__(self):
        return (
            f"IndexedTensorMap({len(self)} entries of '{self.sample}', "
            f"{len(self.tensor.keys)} blocks)"
        )

    def __getitem__(self, index):
        """The entries at ``index`` (integers, a boolean mask or a slice).

        ``(index, Ellipsis)``, as scikit-learn passes it, is accepted too. The
        result keeps the blocks' own sample order.
        """
        if isinstance(index, tuple):
            if len(index) == 2 and index[1] is Ellipsis:
                index = index[0]
            else:
                raise IndexError(
                    f"IndexedTensorMap has one axis ('{self.sample}'), got the index {index!r}"
                )
        if isinstance(index, numbers.Integral):
            index = [index]
        positions = np.arange(len(self))
        try:
            positions = positions[index]
        except IndexError as error:
            raise IndexError(
                f"IndexedTensorMap over {len(self)} entries of '{self.sample}': {error}"
            ) from None
        if len(np.unique(positions)) != len(positions):
            raise ValueError(
                "IndexedTensorMap: an index selects some entries more than once; "
                "a TensorMap cannot hold repeated samples"
            )
        selection = Labels([self.sample], self.entries[np.sort(positions)].reshape(-1, 1))
        return IndexedTensorMap(metatensor.slice(self.tensor, "samples", selection), self.sample)

    def with_tensor(self, tensor):
        """A new IndexedTensorMap over ``tensor``, by the same sample dimension."""
        return IndexedTensorMap(tensor, self.sample)

    def __getstate__(self):
        return {
            "tensor": tensor_to_state(self.tensor),
            "sample": self.sample,
            "entries": self.entries,
        }

    def __setstate__(self, state):
        self.tensor = tensor_from_state(state["tensor"])
        self.sample = state["sample"]
        self.entries = state["entries"]


def unwrap(data):
    """The TensorMap behind ``data``, and a function to wrap a result likewise.

    Parameters
    ----------
    data : TensorMap or IndexedTensorMap or anything else

    Returns
    -------
    tensor, wrap : the TensorMap (or ``data`` itself when it is not indexed) and
        a function mapping a TensorMap to the kind ``data`` was.
    """
    if isinstance(data, IndexedTensorMap):
        return data.tensor, data.with_tensor
    return data, _identity


def _identity(tensor):
    return tensor


def check_same_entries(X, y, caller):
    """Raise ValueError unless two IndexedTensorMaps index the same entries."""
    if not (isinstance(X, IndexedTensorMap) and isinstance(y, IndexedTensorMap)):
        return
    if X.sample != y.sample:
        raise ValueError(f"{caller}: X is indexed by '{X.sample}' but y by '{y.sample}'")
    if not np.array_equal(X.entries, y.entries):
        only_x = np.setdiff1d(X.entries, y.entries)
        only_y = np.setdiff1d(y.entries, X.entries)
        raise ValueError(
            f"{caller}: X and y index different '{X.sample}' entries: "
            f"only in X: {only_x.tolist()[:10]}, only in y: {only_y.tolist()[:10]}"
        )
