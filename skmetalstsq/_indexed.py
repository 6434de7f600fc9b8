"""IndexedTensorMap: a TensorMap that scikit-learn can split by a sample dimension."""

import numbers

import numpy as np
from metatensor import Labels, TensorBlock, TensorMap

from ._backends import array_library
from ._blocks import key_text, tensor_from_state, tensor_to_state
from ._sklearn_scoring import array_conversion_error
from ._torch_maps import is_torch_map, to_core, to_torch_map, type_name


class IndexedTensorMap:
    """A TensorMap indexed by the values of one sample dimension.

    scikit-learn splits data by integer positions along its first axis; a
    TensorMap is a collection of blocks. This view numbers the distinct values
    of one sample dimension (e.g. ``"system"``) over all blocks, smallest first,
    so that position ``i`` selects that entry in every block, with the gradient
    rows of its samples.

    Parameters
    ----------
    tensor : metatensor.TensorMap or metatensor.torch.TensorMap
        Every block must have the sample dimension ``sample``. Gradient samples
        must start with ``"sample"``, as metatensor requires.
    sample : str, default="system"
        The sample dimension to index by.

    Attributes
    ----------
    tensor : metatensor.TensorMap or metatensor.torch.TensorMap
        The wrapped TensorMap, of the kind given: after ``X[index]``, and in
        what estimators and transformers return for X, a
        metatensor.torch.TensorMap when X wraps one.
    sample : str
        The sample dimension.
    entries : numpy.ndarray of shape (n_entries,)
        The distinct values of ``sample`` over all blocks: sorted in a new
        IndexedTensorMap; after ``X[index]``, in the order of ``index``, so that
        position ``i`` of ``X[index]`` is position ``index[i]`` of ``X``, as for
        the arrays (``sample_weight``, ``groups``) scikit-learn slices with it.
    shape : tuple of int
        ``(n_entries,)``, as scikit-learn reads it; ``len()`` is ``n_entries``.

    Notes
    -----
    Indexing (``X[index]``) accepts what indexes a 1-D numpy array of length
    ``n_entries``: an integer, an array or list of integers (negative ones
    count from the end), a boolean mask, a slice, and ``(index, Ellipsis)`` as
    :func:`sklearn.utils._safe_indexing` passes it. It returns an
    IndexedTensorMap of the selected entries with every key kept (a block may
    become empty), the samples of each block in their original order and the
    gradient rows of the kept samples, their ``"sample"`` column renumbered, as
    :func:`metatensor.slice` does.

    - The blocks of ``X[[3, 1]]`` and ``X[[1, 3]]`` are the same (samples keep
      their order), but their ``entries`` follow ``index``: position 0 is entry
      3 in the first and entry 1 in the second, as for arrays indexed with the
      same positions (``sample_weight``, ``groups``), which therefore stay
      aligned with X through shuffled and nested splits.
    - An index that selects an entry twice raises ValueError: a TensorMap cannot
      hold repeated samples (bootstrap resampling is not supported).
    - Copies: arrays whose selected rows are contiguous (all of them, or one
      run, as an unshuffled ``KFold`` test fold is) are views of the original
      arrays, other arrays are copied once; selecting every entry returns the
      map itself. Samples and gradient rows are those :func:`metatensor.slice`
      keeps, for numpy and torch arrays alike.
    - Pickling keeps the arrays as they are (no TensorMap serialisation), so
      joblib can memory-map large numpy arrays for worker processes and torch
      tensors keep their dtype and device.
    - ``numpy.asarray`` of an IndexedTensorMap raises TypeError rather than
      making an object array; use ``.tensor``. When one of scikit-learn's string
      scorers (``scoring="neg_root_mean_squared_error"``, ...) reads it, it raises
      :class:`skmetalstsq.metrics.UnsupportedScoringError` instead, which
      scikit-learn's searches do not turn into a nan score, naming the
      :func:`skmetalstsq.metrics.scorer` to use.
    - A metatensor.torch.TensorMap is held as a metatensor.TensorMap of the
      same torch tensors (no copy), which is what indexing slices; ``.tensor``
      converts it back (the same tensors again) when read. Pickling keeps the
      kind.

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
        torch_map = tensor if is_torch_map(tensor) else None
        if torch_map is not None:
            tensor = to_core(torch_map)
        if not isinstance(tensor, TensorMap):
            raise TypeError(
                f"IndexedTensorMap: tensor must be a metatensor.TensorMap or a "
                f"metatensor.torch.TensorMap, got {type_name(tensor)}"
            )
        if not isinstance(sample, str):
            raise TypeError(
                f"IndexedTensorMap: sample must be the name of a sample dimension (a str), "
                f"got {sample!r}"
            )
        columns = []
        for key, block in tensor.items():
            if sample not in block.samples.names:
                raise ValueError(
                    f"IndexedTensorMap: block {key_text(key)} has no sample dimension "
                    f"'{sample}' (its samples are {block.samples.names})"
                )
            columns.append(np.asarray(block.samples.column(sample)))
        self._core = tensor
        self._torch_map = torch_map
        self._is_torch = torch_map is not None
        self.sample = sample
        self.entries = np.unique(np.concatenate(columns)) if columns else np.array([], np.int32)
        self._positions_cache = None

    @classmethod
    def _from_parts(cls, tensor, sample, entries, is_torch=False):
        """An IndexedTensorMap whose entries are already known (no checks).

        ``tensor`` is a metatensor.TensorMap; ``is_torch`` says whether
        ``.tensor`` gives it as a metatensor.torch.TensorMap.
        """
        indexed = cls.__new__(cls)
        indexed._core = tensor
        indexed._torch_map = None
        indexed._is_torch = is_torch
        indexed.sample = sample
        indexed.entries = entries
        indexed._positions_cache = None
        return indexed

    @property
    def tensor(self):
        """The wrapped TensorMap, of the kind given (see the class Attributes)."""
        if not self._is_torch:
            return self._core
        if self._torch_map is None:
            self._torch_map = to_torch_map(self._core)
        return self._torch_map

    @property
    def shape(self):
        """``(n_entries,)``, as scikit-learn reads it."""
        return (len(self.entries),)

    def __len__(self):
        return len(self.entries)

    def __repr__(self):
        return (
            f"IndexedTensorMap({len(self)} entries of '{self.sample}', "
            f"{len(self._core.keys)} blocks)"
        )

    def __array__(self, dtype=None, copy=None):
        """Refuse the conversion, naming what to use instead.

        Raises
        ------
        skmetalstsq.metrics.UnsupportedScoringError
            When a metric of scikit-learn's scorers converts this map (its
            ``y_true`` or ``y_pred``): the message names the scorer of
            :mod:`skmetalstsq.metrics` to use. It is not an ``Exception``, so
            that model selection does not turn it into NaN scores.
        TypeError
            Otherwise.
        """
        raise array_conversion_error(self)

    def _positions(self, index):
        """The positions selected by ``index``, in its order, checked.

        Parameters
        ----------
        index : int, array-like of int or bool, slice, or ``(index, Ellipsis)``

        Returns
        -------
        numpy.ndarray of int, without repeats

        Raises
        ------
        IndexError
            For a position out of range (naming the number of entries), a boolean
            mask of the wrong length, or an index of another kind.
        ValueError
            If ``index`` selects an entry more than once.
        """
        if isinstance(index, tuple):
            if len(index) == 2 and index[1] is Ellipsis:
                index = index[0]
            else:
                raise IndexError(
                    f"IndexedTensorMap has one axis ('{self.sample}'), got the index {index!r}"
                )
        if isinstance(index, numbers.Integral) and not isinstance(index, (bool, np.bool_)):
            index = [index]
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == object or index.ndim != 1:
                raise IndexError(
                    f"IndexedTensorMap over {len(self)} entries of '{self.sample}': "
                    f"the index must be an integer, a 1-D array of integers or booleans, "
                    f"or a slice, got {index!r}"
                )
            if index.size == 0:
                index = index.astype(np.intp)
        try:
            positions = np.arange(len(self))[index]
        except IndexError as error:
            raise IndexError(
                f"IndexedTensorMap over {len(self)} entries of '{self.sample}': {error}"
            ) from None
        positions = positions.reshape(-1)
        ordered = np.sort(positions)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        if len(repeated):
            repeated = np.unique(repeated).tolist()[:10]
            raise ValueError(
                f"IndexedTensorMap: the index selects positions {repeated} more than once; "
                "a TensorMap cannot hold repeated samples"
            )
        return positions

    def __getitem__(self, index):
        """The entries at ``index`` (integers, a boolean mask or a slice).

        ``(index, Ellipsis)``, as scikit-learn passes it, is accepted too. See
        the class Notes for the order of samples and what is copied.
        """
        positions = self._positions(index)
        if len(positions) == len(self) and (positions == np.arange(len(self))).all():
            return self
        keep = np.zeros(len(self), dtype=bool)
        keep[positions] = True
        tensor = self._core
        if len(positions) != len(self):
            blocks = [
                _slice_block(block, keep[block_positions])
                for block, block_positions in zip(self._core.blocks(), self._block_positions())
            ]
            tensor = TensorMap(self._core.keys, blocks)
        return IndexedTensorMap._from_parts(
            tensor, self.sample, self.entries[positions], self._is_torch
        )

    def _block_positions(self):
        """For each block, the position in ``entries`` of each of its samples."""
        if self._positions_cache is None:
            self._positions_cache = [
                entry_positions(self.entries, block.samples.column(self.sample))
                for block in self._core.blocks()
            ]
        return self._positions_cache

    def with_tensor(self, tensor):
        """A new IndexedTensorMap over ``tensor``, by the same sample dimension.

        Its ``.tensor`` is a metatensor.torch.TensorMap when this one's is, or
        when ``tensor`` is one.
        """
        indexed = IndexedTensorMap(tensor, self.sample)
        indexed._is_torch = indexed._is_torch or self._is_torch
        return indexed

    def __getstate__(self):
        return {
            "tensor": tensor_to_state(self._core),
            "sample": self.sample,
            "entries": self.entries,
            "torch": self._is_torch,
        }

    def __setstate__(self, state):
        self._core = tensor_from_state(state["tensor"])
        self._torch_map = None
        self._is_torch = state.get("torch", False)
        self.sample = state["sample"]
        self.entries = state["entries"]
        self._positions_cache = None


def entry_positions(entries, values):
    """The position in ``entries`` (distinct values, in any order) of each of ``values``."""
    order = np.argsort(entries, kind="stable")
    return order[np.searchsorted(entries[order], np.asarray(values))]


def _take_rows(array, rows, mask):
    """The rows of ``array`` (``rows`` are where ``mask`` is True): a view when
    they are contiguous, else a copy."""
    if len(rows) == 0:
        return array[:0]
    if rows[-1] - rows[0] + 1 == len(rows):
        return array[int(rows[0]) : int(rows[-1]) + 1]
    if array_library(array) == "torch":
        import torch

        return array.index_select(0, torch.as_tensor(rows, device=array.device))
    return np.compress(mask, array, axis=0)


def _slice_block(block, keep):
    """The samples of ``block`` where ``keep`` is True, with their gradient rows.

    The kept samples (and gradient rows) stay in their order; the ``"sample"``
    column of the gradient samples is renumbered, as :func:`metatensor.slice`
    does. Arrays are views when the rows are contiguous, copies otherwise.
    """
    rows = np.flatnonzero(keep)
    samples = block.samples
    if len(rows) != len(keep):
        samples = Labels(samples.names, samples.values[rows], assume_unique=True)
    sliced = TensorBlock(
        _take_rows(block.values, rows, keep), samples, block.components, block.properties
    )
    renumber = np.full(len(keep), -1, dtype=np.int64)
    renumber[rows] = np.arange(len(rows))
    for parameter, gradient in block.gradients():
        if len(gradient.gradients_list()):
            raise NotImplementedError("IndexedTensorMap: gradients of gradients are not supported")
        parents = np.asarray(gradient.samples.column("sample"))
        gradient_keep = keep[parents]
        gradient_rows = np.flatnonzero(gradient_keep)
        gradient_samples = gradient.samples
        if len(rows) != len(keep):
            values = np.array(gradient_samples.values[gradient_rows])
            values[:, 0] = renumber[values[:, 0]]
            gradient_samples = Labels(gradient_samples.names, values, assume_unique=True)
        sliced.add_gradient(
            parameter,
            TensorBlock(
                _take_rows(gradient.values, gradient_rows, gradient_keep),
                gradient_samples,
                gradient.components,
                sliced.properties,
            ),
        )
    return sliced


def unwrap(data):
    """The metatensor.TensorMap behind ``data``, and a function to wrap a result likewise.

    Parameters
    ----------
    data : TensorMap, metatensor.torch.TensorMap, IndexedTensorMap or anything else

    Returns
    -------
    tensor, wrap : the metatensor.TensorMap (the core view of a metatensor-torch
        one, holding the same tensors; ``data`` itself when it is neither
        indexed nor a metatensor-torch map) and a function mapping a
        metatensor.TensorMap to the kind ``data`` was.
    """
    if isinstance(data, IndexedTensorMap):
        return data._core, data.with_tensor
    if is_torch_map(data):
        return to_core(data), to_torch_map
    return data, _identity


def holds_torch_maps(*data):
    """Whether any of ``data`` is a metatensor.torch.TensorMap or an
    IndexedTensorMap of one (its results are then given as such)."""
    return any(
        (isinstance(item, IndexedTensorMap) and item._is_torch) or is_torch_map(item)
        for item in data
    )


def _identity(tensor):
    return tensor


def check_same_entries(X, y, caller):
    """Raise ValueError unless two IndexedTensorMaps index the same entries.

    Nothing is checked unless both are IndexedTensorMaps.
    """
    if not (isinstance(X, IndexedTensorMap) and isinstance(y, IndexedTensorMap)):
        return
    if X.sample != y.sample:
        raise ValueError(f"{caller}: X is indexed by '{X.sample}' but y by '{y.sample}'")
    if not np.array_equal(X.entries, y.entries):
        if len(X) == len(y) and np.array_equal(np.sort(X.entries), np.sort(y.entries)):
            raise ValueError(
                f"{caller}: X and y hold the same '{X.sample}' entries in a different order "
                "(position i must be the same entry in both): index X and y with the same "
                "positions"
            )
        only_x = np.setdiff1d(X.entries, y.entries)
        only_y = np.setdiff1d(y.entries, X.entries)
        raise ValueError(
            f"{caller}: X and y index different '{X.sample}' entries ({len(X)} in X, "
            f"{len(y)} in y): only in X: {only_x.tolist()[:10]}, "
            f"only in y: {only_y.tolist()[:10]}"
        )
