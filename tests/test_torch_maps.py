"""metatensor.torch.TensorMap in, the same kind out: every public entry point."""

import pickle
import re
import subprocess
import sys

import metatensor
import numpy as np
import pytest
from builders import as_numpy, example_pair, make_pair, map_arrays, stacked, to_torch, torch_map
from metatensor import Labels, TensorMap
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skmetalstsq import (
    IndexedTensorMap,
    TensorMapFunctionTransformer,
    TensorMapLstsq,
    TensorMapLstsqCV,
    TensorMapStandardScaler,
    cross_val_predict,
    metrics,
)
from skmetalstsq._indexed import unwrap
from skmetalstsq._torch_maps import is_torch_map, to_core, to_torch_map, type_name

torch = pytest.importorskip("torch")
mts = pytest.importorskip("metatensor.torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


# ---------------------------------------------------------------------------------
# metatensor-torch maps built with metatensor-torch itself, from core maps
# ---------------------------------------------------------------------------------


def assert_same_map(torch_tensor, core, rtol=1e-10, atol=1e-12):
    """A metatensor.torch.TensorMap with the metadata and (close) values of a core map."""
    assert is_torch_map(torch_tensor)
    assert list(torch_tensor.keys.names) == list(core.keys.names)
    np.testing.assert_array_equal(torch_tensor.keys.values.cpu().numpy(), core.keys.values)
    for i, block in enumerate(core.blocks()):
        ours = torch_tensor.block_by_id(i)
        _assert_same_block(ours, block, rtol, atol)


def _assert_same_block(ours, block, rtol, atol):
    for what in ("samples", "properties"):
        mine, theirs = getattr(ours, what), getattr(block, what)
        assert list(mine.names) == list(theirs.names)
        np.testing.assert_array_equal(mine.values.cpu().numpy(), theirs.values)
    assert len(ours.components) == len(block.components)
    for mine, theirs in zip(ours.components, block.components):
        np.testing.assert_array_equal(mine.values.cpu().numpy(), theirs.values)
    np.testing.assert_allclose(
        ours.values.detach().cpu().numpy(), as_numpy(block.values), rtol=rtol, atol=atol
    )
    assert sorted(ours.gradients_list()) == sorted(block.gradients_list())
    for parameter in block.gradients_list():
        _assert_same_block(ours.gradient(parameter), block.gradient(parameter), rtol, atol)


@pytest.fixture
def pair():
    """(X, y) as numpy core maps, and as metatensor-torch maps of float64 tensors."""
    X, y = example_pair(3)
    return X, y, torch_map(X), torch_map(y)


def stacked_lstsq(X, y):
    """numpy's lstsq on every stacked block: key tuple -> (n_targets, n_features) weights."""
    weights = {}
    for key, x_block in X.items():
        a = stacked(x_block, sorted(x_block.gradients_list()))
        b = stacked(y.block(key), sorted(x_block.gradients_list()))
        weights[tuple(int(v) for v in key.values)] = np.linalg.lstsq(a, b, rcond=None)[0].T
    return weights


# ---------------------------------------------------------------------------------
# the conversions
# ---------------------------------------------------------------------------------


def test_is_torch_map_only_for_torch_tensor_maps(pair):
    X, _, Xt, _ = pair
    assert is_torch_map(Xt)
    assert not is_torch_map(X)
    assert not is_torch_map(to_torch(X))
    assert not is_torch_map(Xt.block(0))
    assert not is_torch_map(Xt.keys)
    assert not is_torch_map(torch.zeros(2))
    assert not is_torch_map(None)
    assert type_name(Xt) == "metatensor.torch.TensorMap"
    assert type_name(Xt.block(0)) == "metatensor.torch.TensorBlock"
    assert type_name(Xt.keys) == "metatensor.torch.Labels"
    assert type_name(X) == "TensorMap"


def test_to_core_holds_the_same_tensors(pair):
    X, _, Xt, _ = pair
    core = to_core(Xt)
    assert isinstance(core, TensorMap)
    assert metatensor.equal(core, to_torch(X))
    for i, block in enumerate(core.blocks()):
        torch_block = Xt.block_by_id(i)
        assert block.values.data_ptr() == torch_block.values.data_ptr()
        for parameter in torch_block.gradients_list():
            assert (
                block.gradient(parameter).values.data_ptr()
                == torch_block.gradient(parameter).values.data_ptr()
            )


def test_to_torch_map_holds_the_same_tensors_and_round_trips(pair):
    X, _, Xt, _ = pair
    core = to_torch(X, dtype=torch.float32)
    back = to_torch_map(core)
    assert_same_map(back, X, rtol=1e-6, atol=1e-6)
    assert back.block(0).values.dtype == torch.float32
    assert back.block(0).values.data_ptr() == core.block(0).values.data_ptr()
    assert to_torch_map(Xt) is Xt
    assert metatensor.equal(to_core(to_torch_map(core)), core)


def test_to_torch_map_copies_numpy_arrays(pair):
    X = pair[0]
    back = to_torch_map(X)
    assert_same_map(back, X, rtol=0, atol=0)
    assert back.block(0).values.dtype == torch.float64


def test_conversions_keep_the_autograd_graph():
    X, _ = make_pair(np.random.default_rng(0), keys=((0,),), gradients=())
    Xt = torch_map(X)
    leaf = Xt.block(0).values.requires_grad_(True)
    core = to_core(Xt)
    (core.block(0).values * 2).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), np.full(leaf.shape, 2.0))
    leaf.grad = None
    (to_torch_map(core).block(0).values * 3).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), np.full(leaf.shape, 3.0))


def test_empty_maps_convert():
    empty = mts.TensorMap(mts.Labels.empty(["center_type"]), [])
    core = to_core(empty)
    assert len(core.keys) == 0 and core.keys.names == ["center_type"]
    back = to_torch_map(core)
    assert is_torch_map(back) and len(back.keys) == 0


def test_unwrap_gives_the_core_view_and_wraps_back(pair):
    _, _, Xt, _ = pair
    tensor, wrap = unwrap(Xt)
    assert isinstance(tensor, TensorMap)
    assert is_torch_map(wrap(tensor))


def test_import_does_not_import_metatensor_torch():
    code = (
        "import sys\n"
        "import skmetalstsq, skmetalstsq.export\n"
        "assert 'metatensor.torch' not in sys.modules, 'metatensor.torch'\n"
        "assert 'metatensor_torch' not in sys.modules, 'metatensor_torch'\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------
# TensorMapLstsq
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [False, True])
def test_fit_gives_the_weights_of_core_torch_maps(pair, fit_intercept):
    X, y, Xt, yt = pair
    model = TensorMapLstsq(fit_intercept=fit_intercept).fit(Xt, yt)
    reference = TensorMapLstsq(fit_intercept=fit_intercept).fit(to_torch(X), to_torch(y))
    assert is_torch_map(model.weights_) and is_torch_map(model.intercept_)
    assert_same_map(model.weights_, reference.weights_)
    assert_same_map(model.intercept_, reference.intercept_)
    block = model.weights_.block(0)
    assert block.values.dtype == torch.float64 and block.values.device.type == "cpu"
    assert block.samples.values.device.type == "cpu"


def test_fit_weights_equal_numpy_lstsq(pair):
    X, y, Xt, yt = pair
    model = TensorMapLstsq().fit(Xt, yt)
    expected = stacked_lstsq(X, y)
    for i, key in enumerate(X.keys):
        np.testing.assert_allclose(
            model.weights_.block_by_id(i).values.numpy(),
            expected[tuple(int(v) for v in key.values)],
            rtol=1e-9,
            atol=1e-11,
        )


def test_float32_torch_maps_give_float32_weights(pair):
    X, y, _, _ = pair
    model = TensorMapLstsq().fit(torch_map(X, torch.float32), torch_map(y, torch.float32))
    assert model.weights_.block(0).values.dtype == torch.float32
    expected = stacked_lstsq(X, y)
    for i, key in enumerate(X.keys):
        np.testing.assert_allclose(
            model.weights_.block_by_id(i).values.numpy(),
            expected[tuple(int(v) for v in key.values)],
            rtol=1e-3,
            atol=1e-4,
        )


def test_fit_does_not_change_the_torch_maps(pair):
    X, y, Xt, yt = pair
    TensorMapLstsq(fit_intercept=True, alpha=0.1).fit(Xt, yt)
    assert_same_map(Xt, X, rtol=0, atol=0)
    assert_same_map(yt, y, rtol=0, atol=0)


def test_mixed_kinds_fit_like_torch_maps(pair):
    X, y, Xt, _ = pair
    model = TensorMapLstsq().fit(Xt, to_torch(y))
    reference = TensorMapLstsq().fit(to_torch(X), to_torch(y))
    assert_same_map(model.weights_, reference.weights_)


def test_core_maps_still_give_core_weights(pair):
    X, y, Xt, yt = pair
    model = TensorMapLstsq().fit(Xt, yt)
    model.fit(to_torch(X), to_torch(y))
    assert isinstance(model.weights_, TensorMap) and isinstance(model.intercept_, TensorMap)


def test_predict_returns_a_torch_map_of_the_same_values(pair):
    X, y, Xt, yt = pair
    model = TensorMapLstsq(fit_intercept=True).fit(Xt, yt)
    predicted = model.predict(Xt)
    reference = TensorMapLstsq(fit_intercept=True).fit(X, y).predict(X)
    assert_same_map(predicted, reference, rtol=1e-9, atol=1e-10)


def test_predict_torch_maps_with_a_numpy_fitted_model(pair):
    X, y, Xt, _ = pair
    model = TensorMapLstsq(fit_intercept=True).fit(X, y)
    assert isinstance(model.weights_, TensorMap)
    assert_same_map(model.predict(Xt), model.predict(X), rtol=1e-12, atol=1e-12)


def test_predict_keeps_the_autograd_graph(pair):
    X, y, _, _ = pair
    model = TensorMapLstsq().fit(X, y)
    features = torch_map(X)
    leaf = features.block(0).values.requires_grad_(True)
    model.predict(features).block(0).values.sum().backward()
    weights = model.weights_.block(X.keys[0]).values
    expected = np.broadcast_to(weights.sum(axis=0), leaf.shape)
    np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-12)


def test_score_equals_the_core_score(pair):
    X, y, Xt, yt = pair
    model = TensorMapLstsq(alpha=0.5).fit(Xt, yt)
    reference = TensorMapLstsq(alpha=0.5).fit(X, y)
    assert isinstance(model.score(Xt, yt), float)
    assert model.score(Xt, yt) == pytest.approx(reference.score(X, y), rel=1e-10)


def test_partial_fit_on_torch_batches_equals_fit(pair):
    X, y, Xt, yt = pair
    first, second = [0, 1], [2, 3, 4]

    def part(tensor, systems):
        return metatensor.slice(
            tensor, "samples", Labels(["system"], np.array(systems).reshape(-1, 1))
        )

    model = TensorMapLstsq()
    for systems in (first, second):
        model.partial_fit(torch_map(part(X, systems)), torch_map(part(y, systems)))
    assert is_torch_map(model.weights_)
    reference = TensorMapLstsq().fit(X, y)
    assert_same_map(model.weights_, reference.weights_, rtol=1e-8, atol=1e-10)


def test_pickled_model_keeps_torch_maps(pair):
    X, y, Xt, yt = pair
    model = TensorMapLstsq(fit_intercept=True).fit(Xt, yt)
    loaded = pickle.loads(pickle.dumps(model))
    assert is_torch_map(loaded.weights_) and is_torch_map(loaded.intercept_)
    reference = TensorMapLstsq(fit_intercept=True).fit(X, y)
    assert_same_map(loaded.weights_, reference.weights_, rtol=1e-9, atol=1e-11)
    assert_same_map(loaded.predict(Xt), reference.predict(X), rtol=1e-9, atol=1e-10)


def test_pickling_keeps_the_kind_each_weights_map_has(pair):
    X, y, Xt, yt = pair
    model = TensorMapLstsq().fit(Xt, yt)
    # weights restored by other means than fit (a loader, say) keep their own kind
    model.__dict__.pop("_torch_maps")
    loaded = pickle.loads(pickle.dumps(model))
    assert is_torch_map(loaded.weights_) and is_torch_map(loaded.intercept_)
    core = pickle.loads(pickle.dumps(TensorMapLstsq().fit(to_torch(X), to_torch(y))))
    assert isinstance(core.weights_, TensorMap)
    assert core.weights_.block(0).values.dtype == torch.float64


def test_clone_of_a_torch_fitted_model_is_unfitted(pair):
    _, _, Xt, yt = pair
    model = TensorMapLstsq(alpha=0.3, fit_intercept=True).fit(Xt, yt)
    cloned = clone(model)
    assert cloned.get_params() == model.get_params()
    assert not hasattr(cloned, "weights_")
    assert is_torch_map(cloned.fit(Xt, yt).weights_)


# ---------------------------------------------------------------------------------
# IndexedTensorMap, model selection, transformers, metrics
# ---------------------------------------------------------------------------------


def test_indexed_torch_map_gives_torch_maps_back(pair):
    X, _, Xt, _ = pair
    indexed = IndexedTensorMap(Xt, "system")
    reference = IndexedTensorMap(X, "system")
    np.testing.assert_array_equal(indexed.entries, reference.entries)
    assert indexed.tensor is Xt
    part = indexed[[3, 1]]
    np.testing.assert_array_equal(part.entries, [3, 1])
    assert_same_map(part.tensor, reference[[3, 1]].tensor, rtol=0, atol=0)
    assert_same_map(indexed[1:3].tensor, reference[1:3].tensor, rtol=0, atol=0)
    loaded = pickle.loads(pickle.dumps(part))
    assert_same_map(loaded.tensor, reference[[3, 1]].tensor, rtol=0, atol=0)


def test_indexed_torch_map_refuses_what_is_not_a_tensor_map(pair):
    _, _, Xt, _ = pair
    with pytest.raises(TypeError, match="got metatensor.torch.TensorBlock"):
        IndexedTensorMap(Xt.block(0), "system")
    with pytest.raises(ValueError, match="has no sample dimension 'structure'"):
        IndexedTensorMap(Xt, "structure")


def test_predict_of_an_indexed_torch_map_is_indexed_and_torch(pair):
    X, y, Xt, yt = pair
    model = TensorMapLstsq().fit(IndexedTensorMap(Xt), IndexedTensorMap(yt))
    assert is_torch_map(model.weights_)
    predicted = model.predict(IndexedTensorMap(Xt)[[0, 2]])
    assert isinstance(predicted, IndexedTensorMap)
    np.testing.assert_array_equal(predicted.entries, [0, 2])
    reference = TensorMapLstsq().fit(X, y).predict(IndexedTensorMap(X)[[0, 2]])
    assert_same_map(predicted.tensor, reference.tensor, rtol=1e-9, atol=1e-10)


def test_cv_on_indexed_torch_maps(pair):
    X, y, Xt, yt = pair
    options = dict(rconds=[None, 1e-2], alphas=[0.0, 0.1], cv=KFold(3), fit_intercept=True)
    model = TensorMapLstsqCV(**options).fit(IndexedTensorMap(Xt), IndexedTensorMap(yt))
    reference = TensorMapLstsqCV(**options).fit(IndexedTensorMap(X), IndexedTensorMap(y))
    assert model.cv_results_["params"] == reference.cv_results_["params"]
    np.testing.assert_allclose(
        model.cv_results_["mean_test_score"], reference.cv_results_["mean_test_score"], rtol=1e-9
    )
    assert is_torch_map(model.weights_) and is_torch_map(model.intercept_)
    assert_same_map(model.weights_, reference.weights_, rtol=1e-9, atol=1e-11)
    predicted = model.predict(IndexedTensorMap(Xt))
    assert isinstance(predicted, IndexedTensorMap) and is_torch_map(predicted.tensor)


def test_cv_refuses_a_bare_torch_map(pair):
    _, _, Xt, yt = pair
    with pytest.raises(TypeError, match=r"X is a metatensor.torch.TensorMap, which cannot be"):
        TensorMapLstsqCV().fit(Xt, IndexedTensorMap(yt))


def test_grid_search_on_indexed_torch_maps(pair):
    X, y, Xt, yt = pair
    grid = {"alpha": [0.0, 0.1, 10.0], "fit_intercept": [False, True]}
    search = GridSearchCV(TensorMapLstsq(), grid, cv=KFold(3)).fit(
        IndexedTensorMap(Xt), IndexedTensorMap(yt)
    )
    reference = GridSearchCV(TensorMapLstsq(), grid, cv=KFold(3)).fit(
        IndexedTensorMap(X), IndexedTensorMap(y)
    )
    assert search.best_params_ == reference.best_params_
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"],
        reference.cv_results_["mean_test_score"],
        rtol=1e-9,
    )
    assert is_torch_map(search.best_estimator_.weights_)
    predicted = search.predict(IndexedTensorMap(Xt))
    assert is_torch_map(predicted.tensor)


def test_grid_search_with_a_pipeline_and_torch_maps(pair):
    X, y, Xt, yt = pair
    pipeline = make_pipeline(TensorMapStandardScaler(), TensorMapLstsq(fit_intercept=True))
    grid = {"tensormaplstsq__alpha": [0.0, 1.0]}
    search = GridSearchCV(pipeline, grid, cv=KFold(3), scoring=metrics.scorer("neg_rmse"))
    search.fit(IndexedTensorMap(Xt), IndexedTensorMap(yt))
    reference = GridSearchCV(pipeline, grid, cv=KFold(3), scoring=metrics.scorer("neg_rmse"))
    reference.fit(IndexedTensorMap(X), IndexedTensorMap(y))
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"],
        reference.cv_results_["mean_test_score"],
        rtol=1e-9,
    )


def test_cross_val_predict_gives_a_torch_map(pair):
    X, y, Xt, yt = pair
    predicted = cross_val_predict(TensorMapLstsq(), Xt, yt, cv=KFold(3))
    reference = cross_val_predict(TensorMapLstsq(), X, y, cv=KFold(3))
    assert_same_map(predicted, reference, rtol=1e-9, atol=1e-10)
    indexed = cross_val_predict(TensorMapLstsq(), IndexedTensorMap(Xt), yt, cv=KFold(3))
    assert isinstance(indexed, IndexedTensorMap)
    assert_same_map(indexed.tensor, reference, rtol=1e-9, atol=1e-10)


def test_cross_val_predict_refuses_a_torch_block(pair):
    _, _, Xt, yt = pair
    with pytest.raises(TypeError, match="X must be a metatensor.TensorMap or an Indexed.*"):
        cross_val_predict(TensorMapLstsq(), Xt.block(0), yt)
    with pytest.raises(TypeError, match="got metatensor.torch.TensorBlock"):
        cross_val_predict(TensorMapLstsq(), Xt.block(0), yt)


def test_standard_scaler_on_torch_maps(pair):
    X, _, Xt, _ = pair
    scaler = TensorMapStandardScaler().fit(Xt)
    scaled = scaler.transform(Xt)

    def by_numpy(block_values, position):
        matrix = as_numpy(block_values)
        rows = as_numpy(X.block(position).values).reshape(-1, matrix.shape[-1])
        return (matrix - rows.mean(0)) / rows.std(0)

    for position, block in enumerate(X.blocks()):
        np.testing.assert_allclose(
            scaled.block_by_id(position).values.numpy(),
            by_numpy(block.values, position),
            rtol=1e-10,
        )
        rows = as_numpy(block.values).reshape(-1, block.values.shape[-1])
        np.testing.assert_allclose(
            scaled.block_by_id(position).gradient("cell").values.numpy(),
            as_numpy(block.gradient("cell").values) / rows.std(0),
            rtol=1e-10,
        )
    assert_same_map(scaler.inverse_transform(scaled), X, rtol=1e-10, atol=1e-12)
    indexed = scaler.transform(IndexedTensorMap(Xt))
    assert isinstance(indexed, IndexedTensorMap) and is_torch_map(indexed.tensor)


def test_function_transformer_gives_func_a_torch_map(pair):
    X, _, Xt, _ = pair
    seen = []

    def total(tensor):
        seen.append(type_name(tensor))
        return mts.sum_over_samples(tensor, sample_names="atom")

    transformer = TensorMapFunctionTransformer(total)
    summed = transformer.fit_transform(IndexedTensorMap(Xt))
    assert isinstance(summed, IndexedTensorMap) and is_torch_map(summed.tensor)
    assert seen == ["metatensor.torch.TensorMap"]
    reference = metatensor.sum_over_samples(X, sample_names="atom")
    assert_same_map(summed.tensor, reference, rtol=1e-12, atol=1e-12)
    assert is_torch_map(transformer.transform(Xt))
    # a func for core maps may give a core map: it comes back as the kind of X
    core = TensorMapFunctionTransformer(to_core).transform(Xt)
    assert_same_map(core, X, rtol=0, atol=0)


def test_function_transformer_names_a_torch_block_result(pair):
    _, _, Xt, _ = pair
    with pytest.raises(TypeError, match="first_block returned metatensor.torch.TensorBlock"):

        def first_block(tensor):
            return tensor.block(0)

        TensorMapFunctionTransformer(first_block).transform(Xt)


def test_metrics_on_torch_maps(pair):
    X, y, Xt, yt = pair
    noisy = map_arrays(y, lambda array: np.asarray(array) + 0.25 * np.sign(np.asarray(array)))
    noisy_t = torch_map(noisy)
    true = np.concatenate(
        [as_numpy(b.values).reshape(-1, b.values.shape[-1]).ravel() for b in y.blocks()]
    )
    pred = np.concatenate(
        [
            as_numpy(noisy.block(key).values).reshape(-1, b.values.shape[-1]).ravel()
            for key, b in y.items()
        ]
    )
    assert metrics.rmse(yt, noisy_t) == pytest.approx(np.sqrt(np.mean((true - pred) ** 2)))
    assert metrics.mae(yt, noisy_t) == pytest.approx(np.mean(np.abs(true - pred)))
    assert metrics.rmse(yt, noisy_t, gradient="positions") == pytest.approx(
        metrics.rmse(y, noisy, gradient="positions"), rel=1e-12
    )


# ---------------------------------------------------------------------------------
# errors stay as clear
# ---------------------------------------------------------------------------------


def _other_samples(tensor):
    """A copy of a core map whose first block keeps only its first 4 systems."""
    blocks = []
    for position, block in enumerate(tensor.blocks()):
        if position == 0:
            keep = Labels(["system"], np.arange(4).reshape(-1, 1))
            block = metatensor.slice_block(block, "samples", keep)
        blocks.append(block.copy())
    return TensorMap(tensor.keys, blocks)


def test_sample_mismatch_is_reported_as_for_core_maps(pair):
    X, y, Xt, _ = pair
    short = _other_samples(y)
    with pytest.raises(ValueError) as core_error:
        TensorMapLstsq().fit(X, short)
    message = str(core_error.value)
    assert message == "TensorMapLstsq.fit: block (center_type=3) has 10 samples in X but 8 in y"
    with pytest.raises(ValueError, match=re.escape(message)):
        TensorMapLstsq().fit(Xt, torch_map(short))


def test_errors_name_metatensor_torch_types(pair):
    _, _, Xt, yt = pair
    with pytest.raises(TypeError, match="got metatensor.torch.TensorBlock"):
        TensorMapLstsq().fit(Xt.block(0), yt)
    model = TensorMapLstsq().fit(Xt, yt)
    with pytest.raises(TypeError, match="X must be a TensorMap or an IndexedTensorMap, got "):
        model.predict(Xt.block(0))
    with pytest.raises(TypeError, match="y_pred must be a metatensor.TensorMap.*got metatensor"):
        metrics.rmse(yt, yt.block(0))
    with pytest.raises(ValueError, match=r"block \(center_type=7\) of X was not seen in fit"):
        model.predict(torch_map(_rekeyed(pair[0])))


def _rekeyed(tensor):
    keys = Labels(["center_type"], np.array([[0], [1], [7]]))
    return TensorMap(keys, [block.copy() for block in tensor.blocks()])


# ---------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------


@needs_cuda
def test_cuda_torch_maps_give_cuda_torch_weights(pair):
    X, y, _, _ = pair
    Xt, yt = torch_map(X, device="cuda"), torch_map(y, device="cuda")
    model = TensorMapLstsq(fit_intercept=True).fit(Xt, yt)
    block = model.weights_.block(0)
    assert block.values.device.type == "cuda" and block.samples.values.device.type == "cuda"
    assert model.intercept_.block(0).values.device.type == "cuda"
    reference = TensorMapLstsq(fit_intercept=True).fit(X, y)
    assert_same_map(model.weights_, reference.weights_, rtol=1e-8, atol=1e-10)
    predicted = model.predict(Xt)
    assert predicted.block(0).values.device.type == "cuda"
    assert_same_map(predicted, reference.predict(X), rtol=1e-8, atol=1e-9)
    loaded = pickle.loads(pickle.dumps(model))
    assert loaded.weights_.block(0).values.device.type == "cuda"
