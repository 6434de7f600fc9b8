"""TensorMap transformers, against sklearn.preprocessing and numpy by hand."""

import pickle
import re

import metatensor
import numpy as np
import pytest
from builders import make_pair, map_arrays, to_torch
from metatensor import Labels, TensorBlock, TensorMap
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skmetalstsq import IndexedTensorMap, TensorMapFunctionTransformer, TensorMapStandardScaler


def _shifted(tensor, seed):
    """Values with a different mean and spread per property, so scaling matters."""
    rng = np.random.default_rng(seed)
    return map_arrays(
        tensor,
        lambda array: 3.0 * array * rng.uniform(0.5, 4.0, size=array.shape[-1]) + 7.0,
    )


@pytest.fixture(scope="module")
def X():
    X, _ = make_pair(np.random.default_rng(0), keys=((1,), (6,)), n_features=4, n_components=3)
    return _shifted(X, 1)


def _hand_statistics(block):
    matrix = block.values.reshape(-1, block.values.shape[-1])
    return matrix.mean(axis=0), matrix.std(axis=0)


@pytest.mark.parametrize("with_mean", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
def test_scaler_by_hand(X, with_mean, with_std):
    X_new, _ = make_pair(np.random.default_rng(2), keys=((1,), (6,)), n_components=3)
    scaler = TensorMapStandardScaler(with_mean=with_mean, with_std=with_std).fit(X)
    transformed = scaler.transform(X_new)
    for key, block in X.items():
        mean, std = _hand_statistics(block)
        shift = mean if with_mean else 0.0
        scale = std if with_std else 1.0
        new = X_new.block(key)
        got = transformed.block(key)
        assert got.samples == new.samples and got.properties == new.properties
        np.testing.assert_allclose(got.values, (new.values - shift) / scale, rtol=1e-12)
        gradient = got.gradient("positions")
        assert gradient.samples == new.gradient("positions").samples
        np.testing.assert_allclose(
            gradient.values, new.gradient("positions").values / scale, rtol=1e-12
        )
        np.testing.assert_allclose(scaler.mean_.block(key).values[0], mean, rtol=1e-12)
        np.testing.assert_allclose(scaler.var_.block(key).values[0], std**2, rtol=1e-12)
        np.testing.assert_allclose(
            scaler.scale_.block(key).values[0], std if with_std else np.ones(4), rtol=1e-12
        )
        assert scaler.scale_.block(key).properties == block.properties


@pytest.mark.parametrize("with_mean", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
def test_scaler_like_sklearn_on_one_block(with_mean, with_std):
    rng = np.random.default_rng(3)
    values = rng.normal(size=(30, 5)) * [1.0, 10.0, 0.1, 1.0, 3.0] + [0.0, 5.0, -2.0, 4.0, 1.0]
    values[:, 3] = 4.0  # a constant property
    block = TensorBlock(values, Labels.range("system", 30), [], Labels.range("p", 5))
    tensor = TensorMap(Labels.single(), [block])
    ours = TensorMapStandardScaler(with_mean=with_mean, with_std=with_std).fit(tensor)
    theirs = StandardScaler(with_mean=with_mean, with_std=with_std).fit(values)
    np.testing.assert_allclose(ours.transform(tensor).block(0).values, theirs.transform(values))
    if with_std:
        np.testing.assert_allclose(ours.scale_.block(0).values[0], theirs.scale_)
        assert ours.scale_.block(0).values[0, 3] == 1.0


def test_zero_variance_within_rounding_scales_by_one():
    values = np.full((7, 2), 0.1)
    values[:, 1] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    block = TensorBlock(values, Labels.range("system", 7), [], Labels.range("p", 2))
    scaler = TensorMapStandardScaler().fit(TensorMap(Labels.single(), [block]))
    theirs = StandardScaler().fit(values)
    np.testing.assert_array_equal(scaler.scale_.block(0).values[0], theirs.scale_)
    assert scaler.scale_.block(0).values[0, 0] == 1.0


def test_block_without_rows():
    empty = TensorBlock(np.zeros((0, 3)), Labels.range("system", 0), [], Labels.range("p", 3))
    scaler = TensorMapStandardScaler().fit(TensorMap(Labels.single(), [empty]))
    np.testing.assert_array_equal(scaler.mean_.block(0).values, np.zeros((1, 3)))
    np.testing.assert_array_equal(scaler.scale_.block(0).values, np.ones((1, 3)))


def test_inverse_transform_round_trip(X):
    scaler = TensorMapStandardScaler().fit(X)
    back = scaler.inverse_transform(scaler.transform(X))
    assert metatensor.allclose(back, X, rtol=1e-12, atol=1e-12)
    assert not metatensor.allclose(scaler.transform(X), X)


def test_indexed_in_indexed_out(X):
    indexed = IndexedTensorMap(X)
    scaler = TensorMapStandardScaler().fit(indexed)
    out = scaler.transform(indexed[[1, 4]])
    assert isinstance(out, IndexedTensorMap)
    np.testing.assert_array_equal(out.entries, indexed.entries[[1, 4]])
    assert metatensor.equal(
        out.tensor,
        scaler.transform(metatensor.slice(X, "samples", Labels(["system"], np.array([[1], [4]])))),
    )
    back = scaler.inverse_transform(out)
    assert isinstance(back, IndexedTensorMap)
    assert isinstance(scaler.transform(X), TensorMap)


def test_torch_float32(X):
    torch = pytest.importorskip("torch")
    X_torch = to_torch(X, dtype=torch.float32)
    scaler = TensorMapStandardScaler().fit(X_torch)
    transformed = scaler.transform(X_torch)
    expected = TensorMapStandardScaler().fit(X).transform(X)
    for key, block in transformed.items():
        assert block.values.dtype == torch.float32
        np.testing.assert_allclose(block.values.numpy(), expected.block(key).values, atol=1e-5)
        np.testing.assert_allclose(
            block.gradient("positions").values.numpy(),
            expected.block(key).gradient("positions").values,
            rtol=1e-5,
            atol=1e-5,
        )


def test_integer_values_become_float(X):
    integers = map_arrays(X, lambda array: np.round(array).astype(np.int64))
    transformed = TensorMapStandardScaler().fit(integers).transform(integers)
    assert transformed.block(0).values.dtype == np.float64
    mean, std = _hand_statistics(integers.block(0))
    np.testing.assert_allclose(
        transformed.block(0).values, (integers.block(0).values - mean) / std, rtol=1e-12
    )


def test_scaler_clone_and_pickle(X):
    scaler = TensorMapStandardScaler(with_mean=False).fit(X)
    copy = clone(scaler)
    assert copy.get_params() == {"with_mean": False, "with_std": True}
    assert not hasattr(copy, "scale_")
    restored = pickle.loads(pickle.dumps(scaler))
    assert metatensor.equal(restored.transform(X), scaler.transform(X))


def test_scaler_errors(X):
    with pytest.raises(NotFittedError):
        TensorMapStandardScaler().transform(X)
    with pytest.raises(InvalidParameterError, match="'with_mean' parameter"):
        TensorMapStandardScaler(with_mean="yes").fit(X)
    with pytest.raises(TypeError, match="TensorMapStandardScaler.fit: X must be a metatensor"):
        TensorMapStandardScaler().fit(np.zeros((3, 2)))
    scaler = TensorMapStandardScaler().fit(X)
    other_keys, _ = make_pair(np.random.default_rng(4), keys=((7,),), n_components=3)
    with pytest.raises(
        ValueError, match=r"TensorMapStandardScaler.transform: block \(center_type=7\) of X"
    ):
        scaler.transform(other_keys)
    fewer = metatensor.slice(X, "properties", Labels(["feature"], np.array([[0], [1]])))
    with pytest.raises(ValueError, match=r"inverse_transform: block \(center_type=1\) has 2 prop"):
        scaler.inverse_transform(fewer)
    with_nan = map_arrays(X, lambda array: np.where(array > 8, np.nan, array))
    with pytest.raises(ValueError, match="TensorMapStandardScaler.fit: X block .* NaN"):
        TensorMapStandardScaler().fit(with_nan)


def _without_properties(tensor, center_type):
    """``tensor`` with the block of ``center_type`` sliced to 0 properties."""
    empty = Labels(["feature"], np.zeros((0, 1), dtype=np.int32))
    blocks = [
        metatensor.slice_block(block, "properties", empty)
        if int(key["center_type"]) == center_type
        else block.copy()
        for key, block in tensor.items()
    ]
    return TensorMap(tensor.keys, blocks)


def test_scaler_block_without_properties(X):
    empty = _without_properties(X, 6)
    drop = "metatensor.drop_blocks(X, Labels(['center_type'], np.array([[6]])))"
    with pytest.raises(
        ValueError,
        match=re.escape(
            "TensorMapStandardScaler.fit: block (center_type=6) has 0 properties in X; every "
            "block needs at least one property to scale: drop the blocks without properties "
            f"with {drop}"
        ),
    ):
        TensorMapStandardScaler().fit(empty)
    scaler = TensorMapStandardScaler().fit(X)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "TensorMapStandardScaler.transform: block (center_type=6) has 0 properties in X "
            "but 4 in fit; give it the properties seen in fit, or drop the blocks without "
            f"properties with {drop}"
        ),
    ):
        scaler.transform(empty)
    # what the message suggests
    kept = TensorMapStandardScaler().fit(
        metatensor.drop_blocks(empty, Labels(["center_type"], np.array([[6]])))
    )
    assert kept.scale_.keys == Labels(["center_type"], np.array([[1]]))
    mean, std = _hand_statistics(X.block({"center_type": 1}))
    np.testing.assert_allclose(kept.mean_.block(0).values[0], mean, rtol=1e-12)
    np.testing.assert_allclose(kept.scale_.block(0).values[0], std, rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_scaler_rejects_bool_arrays_of_numpy_and_torch(X, backend):
    as_bool = map_arrays(X, lambda array: array > 8)
    dtype, module = ("bool", "np") if backend == "numpy" else ("torch.bool", "torch")
    if backend == "torch":
        as_bool = to_torch(as_bool)
    message = (
        f"TensorMapStandardScaler.fit: X block (center_type=1) has {dtype} values; convert X "
        f"to a floating dtype with X.to(dtype={module}.float64)"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        TensorMapStandardScaler().fit(as_bool)
    scaler = TensorMapStandardScaler().fit(X if backend == "numpy" else to_torch(X))
    with pytest.raises(TypeError, match=re.escape(message.replace(".fit", ".transform"))):
        scaler.transform(as_bool)


# ---------------------------------------------------------------------------------
# TensorMapFunctionTransformer
# ---------------------------------------------------------------------------------

SUM_ATOMS = {"func": metatensor.sum_over_samples, "kw_args": {"sample_names": "atom"}}


def test_function_transformer_sums_atoms(X):
    transformer = TensorMapFunctionTransformer(**SUM_ATOMS)
    expected = metatensor.sum_over_samples(X, sample_names="atom")
    assert metatensor.equal(transformer.fit_transform(X), expected)
    indexed = IndexedTensorMap(X)
    out = transformer.fit(indexed).transform(indexed[[0, 3, 5]])
    assert isinstance(out, IndexedTensorMap)
    assert out.sample == "system"
    np.testing.assert_array_equal(out.entries, [0, 3, 5])
    selected = Labels(["system"], np.array([[0], [3], [5]]))
    assert metatensor.equal(out.tensor, metatensor.slice(expected, "samples", selected))


def test_function_transformer_is_stateless(X):
    assert TensorMapFunctionTransformer().transform(X) is X
    indexed = IndexedTensorMap(X)
    assert TensorMapFunctionTransformer().fit_transform(indexed) is indexed
    transformer = TensorMapFunctionTransformer(**SUM_ATOMS)
    assert transformer.__sklearn_tags__().requires_fit is False
    assert metatensor.equal(
        transformer.transform(X), metatensor.sum_over_samples(X, sample_names="atom")
    )


def test_function_transformer_clone_and_pickle(X):
    transformer = TensorMapFunctionTransformer(**SUM_ATOMS)
    copy = clone(transformer)
    assert copy.func is metatensor.sum_over_samples
    assert copy.kw_args == {"sample_names": "atom"}
    assert copy.kw_args is not transformer.kw_args
    restored = pickle.loads(pickle.dumps(transformer.fit(X)))
    assert metatensor.equal(restored.transform(X), transformer.transform(X))


def _to_list(tensor):
    return list(tensor.blocks())


def _first_systems(tensor):
    return metatensor.slice(tensor, "samples", Labels(["system"], np.array([[0], [1]])))


def test_function_transformer_errors(X):
    indexed = IndexedTensorMap(X)
    with pytest.raises(TypeError, match="func must return a metatensor.TensorMap, _to_list"):
        TensorMapFunctionTransformer(_to_list).transform(X)
    with pytest.raises(
        ValueError,
        match=r"X is indexed by 'system' but block \(center_type=1\) of what "
        r"sum_over_samples returned has samples \['atom'\]",
    ):
        TensorMapFunctionTransformer(
            metatensor.sum_over_samples, kw_args={"sample_names": "system"}
        ).transform(indexed)
    with pytest.raises(
        ValueError,
        match=r"_first_systems returned other 'system' entries than it was given \(2 instead "
        r"of 6\): missing \[2, 3, 4, 5\], new \[\]",
    ):
        TensorMapFunctionTransformer(_first_systems).transform(indexed)
    with pytest.raises(InvalidParameterError, match="'kw_args' parameter"):
        TensorMapFunctionTransformer(metatensor.sum_over_samples, kw_args=["atom"]).fit(X)
    with pytest.raises(InvalidParameterError, match="'func' parameter"):
        TensorMapFunctionTransformer(func="sum").fit(X)
    with pytest.raises(TypeError, match="TensorMapFunctionTransformer.transform: X must be"):
        TensorMapFunctionTransformer().transform([1, 2])
