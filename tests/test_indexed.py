"""IndexedTensorMap: indexing checked against metatensor.slice, pickling, sklearn utilities."""

import pickle

import metatensor
import numpy as np
import pytest
from builders import make_block, make_pair, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.utils import _safe_indexing, check_consistent_length, indexable
from sklearn.utils.validation import _num_samples

from skmetalstsq import IndexedTensorMap, TensorMapLstsq


def _systems(block, systems):
    return metatensor.slice_block(block, "samples", Labels(["system"], np.c_[systems]))


def _permute_gradient_rows(block, rng):
    """A copy of ``block`` whose gradient rows are in a random order."""
    new = TensorBlock(block.values.copy(), block.samples, block.components, block.properties)
    for parameter, gradient in block.gradients():
        order = rng.permutation(len(gradient.samples))
        samples = Labels(gradient.samples.names, gradient.samples.values[order])
        new.add_gradient(
            parameter,
            TensorBlock(gradient.values[order], samples, gradient.components, new.properties),
        )
    return new


@pytest.fixture
def uneven():
    """Three blocks with components, over different systems, one with its
    gradient rows shuffled."""
    rng = np.random.default_rng(0)
    first = _systems(make_block(rng, 10, 2, 3, n_components=2), [0, 2, 3, 5, 6, 8])
    second = _systems(make_block(rng, 10, 3, 4, n_components=2), [1, 2, 3, 4, 9])
    second = _permute_gradient_rows(second, rng)
    third = _systems(make_block(rng, 10, 1, 2, n_components=2), [3, 4, 5])
    keys = Labels(["center_type"], np.array([[1], [6], [8]]))
    return TensorMap(keys, [first, second, third])


def _expected(tensor, entries):
    return metatensor.slice(tensor, "samples", Labels(["system"], np.c_[entries]))


def test_entries_len_and_shape(uneven):
    X = IndexedTensorMap(uneven, "system")
    columns = [block.samples.column("system") for block in uneven.blocks()]
    expected = np.array(sorted(set(np.concatenate(columns).tolist())))
    np.testing.assert_array_equal(X.entries, expected)
    assert len(X) == len(expected) == 9
    assert X.shape == (9,)
    assert X.tensor is uneven
    assert "9 entries of 'system'" in repr(X)


@pytest.mark.parametrize(
    "index",
    [
        np.array([0, 3, 7]),
        [8, 1, 4],
        np.array([2, 3, 4]),
        np.array([5]),
        np.array([-1, -3]),
        np.array([True, False, True, True, False, False, False, True, False]),
        [False] * 9,
        slice(2, 6),
        slice(None, None, 3),
        (np.array([1, 6]), Ellipsis),
        (slice(4, None), Ellipsis),
        4,
        np.int64(4),
        np.array([], dtype=int),
        [],
    ],
    ids=repr,
)
def test_getitem_matches_metatensor_slice(uneven, index):
    X = IndexedTensorMap(uneven, "system")
    plain = index[0] if isinstance(index, tuple) else index
    positions = np.arange(len(X))[plain]
    entries = X.entries[np.atleast_1d(positions)]
    got = X[index]
    assert isinstance(got, IndexedTensorMap)
    assert got.sample == "system"
    # positions follow the index, as for arrays indexed alike
    np.testing.assert_array_equal(got.entries, entries)
    assert metatensor.equal(got.tensor, _expected(uneven, np.sort(entries)))
    # the entries of the result are those of the sliced map itself
    np.testing.assert_array_equal(IndexedTensorMap(got.tensor).entries, np.sort(got.entries))
    assert len(got.tensor.keys) == len(uneven.keys)


def test_gradient_rows_follow_their_samples(uneven):
    """Every gradient row of a slice is the parent's row of the same atom pair."""
    got = IndexedTensorMap(uneven)[[1, 2, 6]].tensor
    for key, block in got.items():
        parent = uneven.block(key)
        for parameter, gradient in block.gradients():
            original = parent.gradient(parameter)
            for row, (sample, system, atom) in enumerate(gradient.samples.values):
                own_sample = tuple(block.samples.values[sample])
                parent_sample = parent.samples.position(own_sample)
                original_row = original.samples.position((parent_sample, system, atom))
                assert own_sample[0] == system  # builders: gradients within a system
                np.testing.assert_array_equal(gradient.values[row], original.values[original_row])


def test_slicing_twice_equals_slicing_once(uneven):
    X = IndexedTensorMap(uneven)
    twice = X[[0, 2, 3, 5, 8]][[1, 3, 4]]
    assert metatensor.equal(twice.tensor, _expected(uneven, X.entries[[2, 5, 8]]))


def test_copies_only_what_is_needed():
    rng = np.random.default_rng(1)
    X, _ = make_pair(rng, n_systems=6, n_atoms=2)
    indexed = IndexedTensorMap(X)
    assert indexed[np.arange(6)] is indexed
    contiguous = indexed[2:5].tensor
    scattered = indexed[[0, 2, 5]].tensor
    for key, block in X.items():
        gradient = block.gradient("positions").values
        assert np.shares_memory(contiguous.block(key).values, block.values)
        assert np.shares_memory(contiguous.block(key).gradient("positions").values, gradient)
        assert not np.shares_memory(scattered.block(key).values, block.values)
    assert metatensor.equal(contiguous, _expected(X, [2, 3, 4]))
    assert metatensor.equal(scattered, _expected(X, [0, 2, 5]))


def test_torch_arrays_are_sliced_and_kept():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    X, _ = make_pair(rng, n_systems=5, n_components=2)
    X_torch = to_torch(X, dtype=torch.float32)
    indexed = IndexedTensorMap(X_torch)
    for index in ([1, 2], [0, 3, 4]):
        got = indexed[index].tensor
        expected = _expected(X, index)
        for key, block in got.items():
            assert isinstance(block.values, torch.Tensor)
            assert block.values.dtype == torch.float32
            np.testing.assert_allclose(block.values.numpy(), expected.block(key).values, rtol=1e-6)
            assert (
                block.gradient("positions").samples
                == expected.block(key).gradient("positions").samples
            )


def test_pickle_keeps_arrays_out_of_band(uneven):
    rng = np.random.default_rng(3)
    X, _ = make_pair(rng, n_systems=40, n_atoms=3, n_features=50, n_components=3)
    indexed = IndexedTensorMap(X)
    buffers = []
    payload = pickle.dumps(indexed, protocol=5, buffer_callback=buffers.append)
    data_bytes = sum(
        block.values.nbytes + block.gradient("positions").values.nbytes for block in X.blocks()
    )
    # the arrays travel as raw buffers; what is pickled in-band is small
    assert sum(buffer.raw().nbytes for buffer in buffers) >= data_bytes
    assert len(payload) < 0.01 * data_bytes
    restored = pickle.loads(payload, buffers=buffers)
    assert metatensor.equal(restored.tensor, X)
    np.testing.assert_array_equal(restored.entries, indexed.entries)
    assert restored.sample == "system"
    assert metatensor.equal(restored[[3, 7]].tensor, _expected(X, [3, 7]))

    sliced = IndexedTensorMap(uneven)[[0, 4, 5]]
    restored = pickle.loads(pickle.dumps(sliced))
    assert metatensor.equal(restored.tensor, sliced.tensor)
    assert metatensor.equal(restored[[1]].tensor, _expected(uneven, [4]))


def test_pickle_keeps_torch_tensors():
    torch = pytest.importorskip("torch")
    X, _ = make_pair(np.random.default_rng(4), n_systems=4)
    restored = pickle.loads(pickle.dumps(IndexedTensorMap(to_torch(X, dtype=torch.float32))))
    for key, block in restored.tensor.items():
        assert isinstance(block.values, torch.Tensor)
        assert block.values.dtype == torch.float32
        np.testing.assert_allclose(block.values.numpy(), X.block(key).values, rtol=1e-6)


def test_sklearn_indexing_utilities(uneven):
    X = IndexedTensorMap(uneven)
    y = IndexedTensorMap(uneven)
    assert _num_samples(X) == 9
    check_consistent_length(X, y, np.arange(9))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        check_consistent_length(X, np.arange(8))
    assert indexable(X, y)[0] is X
    for key in ([1, 4], np.array([1, 4]), np.isin(np.arange(9), [1, 4]), slice(1, 5, 3)):
        got = _safe_indexing(X, key)
        assert metatensor.equal(got.tensor, _expected(uneven, X.entries[[1, 4]]))


def test_no_array_conversion(uneven):
    with pytest.raises(TypeError, match="cannot be converted to a numpy array"):
        np.asarray(IndexedTensorMap(uneven))


def test_missing_sample_dimension(uneven):
    with pytest.raises(ValueError, match=r"block \(center_type=1\) has no sample dimension 'atom"):
        IndexedTensorMap(
            metatensor.sum_over_samples(uneven, sample_names="atom"),
            "atom",
        )
    with pytest.raises(ValueError, match=r"no sample dimension 'structure'.*\['system', 'atom'\]"):
        IndexedTensorMap(uneven, "structure")


def test_bad_arguments(uneven):
    with pytest.raises(
        TypeError,
        match="tensor must be a metatensor.TensorMap or a metatensor.torch.TensorMap, got ndarray",
    ):
        IndexedTensorMap(np.zeros((3, 2)))
    with pytest.raises(TypeError, match="sample must be the name of a sample dimension"):
        IndexedTensorMap(uneven, ["system"])


@pytest.mark.parametrize(
    "index, message",
    [
        ([3, 9], "over 9 entries of 'system': index 9 is out of bounds for axis 0 with size 9"),
        (-10, "index -10 is out of bounds for axis 0 with size 9"),
        (np.ones(5, dtype=bool), "size of axis is 9 but size of corresponding boolean axis is 5"),
        (np.array([1.0, 2.0]), "arrays used as indices must be of integer"),
        (np.zeros((2, 2), dtype=int), "1-D array of integers or booleans"),
        (([1], slice(None)), "one axis \\('system'\\)"),
        (True, "1-D array of integers or booleans"),
    ],
)
def test_bad_indices(uneven, index, message):
    with pytest.raises(IndexError, match=message):
        IndexedTensorMap(uneven)[index]


def test_repeated_indices(uneven):
    with pytest.raises(ValueError, match=r"selects positions \[1, 4\] more than once"):
        IndexedTensorMap(uneven)[[1, 4, 2, 4, 1, 1]]


def test_fit_requires_same_entries():
    X, y = make_pair(np.random.default_rng(5), n_systems=8)
    X, y = IndexedTensorMap(X), IndexedTensorMap(y)
    with pytest.raises(
        ValueError,
        match=r"TensorMapLstsq.fit: X and y index different 'system' entries \(5 in X, 4 in y\): "
        r"only in X: \[0, 1\], only in y: \[5\]",
    ):
        TensorMapLstsq().fit(X[:5], y[2:6])
    with pytest.raises(ValueError, match="X is indexed by 'system' but y by 'atom'"):
        TensorMapLstsq().fit(X, IndexedTensorMap(y.tensor, "atom"))
    with pytest.raises(ValueError, match="TensorMapLstsq.score: X and y index different"):
        TensorMapLstsq().fit(X, y).score(X[[0, 1]], y[[0, 2]])


def test_predict_returns_the_kind_it_was_given():
    X, y = make_pair(np.random.default_rng(6), n_systems=8)
    model = TensorMapLstsq().fit(IndexedTensorMap(X), IndexedTensorMap(y))
    predicted = model.predict(IndexedTensorMap(X)[[1, 5]])
    assert isinstance(predicted, IndexedTensorMap)
    np.testing.assert_array_equal(predicted.entries, [1, 5])
    assert isinstance(model.predict(X), TensorMap)


def test_per_entry_weights_stay_aligned_through_shuffled_and_nested_splits():
    # scikit-learn slices sample_weight in the order of each split's indices; the
    # fit on X[train] must weigh each system by its own weight, also when a search
    # inside cross_validate slices an already shuffled slice again
    from sklearn.model_selection import GridSearchCV, ShuffleSplit, cross_validate

    rng = np.random.default_rng(4)
    X, y = make_pair(rng, keys=((0,), (1,)), n_systems=12, n_components=0)
    X, y = IndexedTensorMap(X, "system"), IndexedTensorMap(y, "system")
    weights = rng.uniform(0.1, 3.0, len(X))
    by_system = dict(zip(X.entries.tolist(), weights))

    search = GridSearchCV(
        TensorMapLstsq(), {"alpha": [0.0, 1.0]}, cv=ShuffleSplit(2, test_size=0.3, random_state=1)
    )
    result = cross_validate(
        search,
        X,
        y,
        cv=ShuffleSplit(3, test_size=0.25, random_state=0),
        params={"sample_weight": weights},
        return_estimator=True,
        return_indices=True,
    )
    for fitted, train in zip(result["estimator"], result["indices"]["train"]):
        # the reference: a fresh, sorted map of the same systems, weighed by system
        X_train, y_train = IndexedTensorMap(X[train].tensor), IndexedTensorMap(y[train].tensor)
        w = np.array([by_system[int(entry)] for entry in X_train.entries])
        reference = TensorMapLstsq(alpha=fitted.best_params_["alpha"])
        reference.fit(X_train, y_train, sample_weight=w)
        for key, block in reference.weights_.items():
            np.testing.assert_allclose(
                fitted.best_estimator_.weights_.block(key).values, block.values, rtol=1e-10
            )
