"""export.to_module: TorchScript modules predicting as the fitted estimators do."""

import ast
import functools
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from builders import as_numpy, example_pair, make_pair, map_arrays, torch_map
from metatensor import Labels, TensorMap
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline

import skmetalstsq
from skmetalstsq import (
    IndexedTensorMap,
    TensorMapFunctionTransformer,
    TensorMapLstsq,
    TensorMapLstsqCV,
    TensorMapStandardScaler,
    export,
)
from skmetalstsq.export import to_module

torch = pytest.importorskip("torch")
mts = pytest.importorskip("metatensor.torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


def by_hand(features, weights, intercept):
    """``values @ w.T + c`` and ``gradient @ w.T`` of every block, with numpy.

    ``weights`` and ``intercept``: key tuple -> numpy arrays.
    """
    predicted = {}
    for key, block in features.items():
        name = tuple(int(v) for v in key.values)
        w, c = weights[name], intercept[name]
        parts = {"values": as_numpy(block.values) @ w.T + c}
        for parameter, gradient in block.gradients():
            parts[parameter] = as_numpy(gradient.values) @ w.T
        predicted[name] = parts
    return predicted


def fitted_arrays(model):
    """The weights and intercepts of a fitted model: key tuple -> numpy arrays."""
    weights, intercept = {}, {}
    for key, block in model.weights_.items():
        name = tuple(int(v) for v in key.values)
        weights[name] = as_numpy(block.values)
        intercept[name] = as_numpy(model.intercept_.block(key).values)[:, 0]
    return weights, intercept


def assert_module_output(output, expected, features, targets, rtol=1e-12, atol=1e-12):
    """``output`` (a metatensor.torch.TensorMap) holds ``expected`` (from :func:`by_hand`)
    with the keys, samples and components of ``features`` and the ``targets`` properties."""
    assert list(output.keys.names) == list(features.keys.names)
    np.testing.assert_array_equal(output.keys.values.numpy(), features.keys.values)
    for i, (key, block) in enumerate(features.items()):
        ours = output.block_by_id(i)
        parts = expected[tuple(int(v) for v in key.values)]
        np.testing.assert_allclose(ours.values.detach().numpy(), parts["values"], rtol, atol)
        np.testing.assert_array_equal(ours.samples.values.numpy(), block.samples.values)
        assert len(ours.components) == len(block.components)
        np.testing.assert_array_equal(
            ours.properties.values.numpy(), targets.block(key).properties.values
        )
        assert sorted(ours.gradients_list()) == sorted(block.gradients_list())
        for parameter, gradient in block.gradients():
            mine = ours.gradient(parameter)
            np.testing.assert_allclose(mine.values.detach().numpy(), parts[parameter], rtol, atol)
            np.testing.assert_array_equal(mine.samples.values.numpy(), gradient.samples.values)


def assert_same_as_predict(output, predicted, rtol=1e-12, atol=1e-12):
    """A module's output equals ``predict``'s (a core map) in every block and gradient."""
    for i, block in enumerate(predicted.blocks()):
        ours = output.block_by_id(i)
        np.testing.assert_allclose(ours.values.detach().numpy(), as_numpy(block.values), rtol, atol)
        for parameter, gradient in block.gradients():
            np.testing.assert_allclose(
                ours.gradient(parameter).values.detach().numpy(),
                as_numpy(gradient.values),
                rtol,
                atol,
            )


@pytest.fixture
def fitted():
    """A numpy-fitted model (with intercept), its data and torch features."""
    X, y = example_pair(5)
    model = TensorMapLstsq(fit_intercept=True, alpha=0.01).fit(X, y)
    return model, X, y, torch_map(X)


# ---------------------------------------------------------------------------------
# predictions
# ---------------------------------------------------------------------------------


def test_module_predicts_as_predict(fitted):
    model, X, y, features = fitted
    module = to_module(model)
    assert isinstance(module, torch.nn.Module)
    output = module(features)
    assert_module_output(output, by_hand(X, *fitted_arrays(model)), X, y)
    assert_same_as_predict(output, model.predict(X))


def test_module_holds_float64_copies_of_numpy_weights(fitted):
    model, _, _, _ = fitted
    module = to_module(model)
    for i, (key, block) in enumerate(model.weights_.items()):
        held = module.weights.block_by_id(i).values
        assert held.dtype == torch.float64
        np.testing.assert_array_equal(held.numpy(), block.values)
        np.testing.assert_array_equal(
            module.intercept.block_by_id(i).values.numpy(), model.intercept_.block(key).values
        )
    module.weights.block_by_id(0).values[0, 0] = 123.0
    assert model.weights_.block(0).values[0, 0] != 123.0


def test_to_module_method_and_cv_inheritance(fitted):
    model, X, y, features = fitted
    assert_same_as_predict(model.to_module()(features), model.predict(X))
    cv = TensorMapLstsqCV(rconds=[None, 1e-3], alphas=[0.0, 0.1], cv=KFold(3), fit_intercept=True)
    cv.fit(IndexedTensorMap(X), IndexedTensorMap(y))
    assert_module_output(cv.to_module()(features), by_hand(X, *fitted_arrays(cv)), X, y)


def test_module_from_a_torch_fit_keeps_its_dtype(fitted):
    _, X, y, features = fitted
    model = TensorMapLstsq().fit(torch_map(X, torch.float32), torch_map(y, torch.float32))
    module = to_module(model)
    assert module.weights.block(0).values.dtype == torch.float32
    output = module(torch_map(X, torch.float32))
    assert output.block(0).values.dtype == torch.float32
    assert_module_output(output, by_hand(X, *fitted_arrays(model)), X, y, rtol=1e-5, atol=1e-5)


def test_module_accepts_a_subset_of_keys_and_other_dtypes(fitted):
    model, X, y, _ = fitted
    module = to_module(model)
    keys = Labels(["center_type"], np.array([[3]]))
    subset = TensorMap(keys, [X.block(keys[0]).copy()])
    output = module(torch_map(subset))
    assert_module_output(output, by_hand(subset, *fitted_arrays(model)), subset, y)
    as_float32 = module(torch_map(subset, torch.float32))
    assert as_float32.block(0).values.dtype == torch.float32
    # integer features are predicted in float64, as predict does
    integers = map_arrays(subset, lambda array: np.trunc(3 * array))
    output = module(torch_map(integers, torch.int64))
    assert output.block(0).values.dtype == torch.float64
    assert_module_output(output, by_hand(integers, *fitted_arrays(model)), integers, y)


def test_gradients_come_from_autograd(fitted):
    model, X, _, _ = fitted
    module = torch.jit.script(to_module(model))
    features = torch_map(X)
    leaves = [block.values.requires_grad_(True) for block in features.blocks()]
    output = module(features)
    total = sum(block.values.sum() for block in output.blocks())
    total.backward()
    for leaf, key in zip(leaves, X.keys):
        weights = model.weights_.block(key).values
        expected = np.broadcast_to(weights.sum(axis=0), leaf.shape)
        np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-12)


def test_forces_by_autograd_equal_the_predicted_gradients():
    """Features that are a function of positions: autograd through the module gives the
    predicted gradient (the chain rule the gradient rows of the features encode)."""
    rng = np.random.default_rng(2)
    X, y = make_pair(rng, keys=((0,),), n_systems=3, n_atoms=1, gradients=())
    model = TensorMapLstsq(fit_intercept=True).fit(X, y)
    module = torch.jit.script(to_module(model))
    positions = torch.tensor(rng.normal(size=(3, 4)), dtype=torch.float64, requires_grad=True)
    block = torch_map(X).block(0)  # the torch labels of X
    features = mts.TensorMap(
        torch_map(X).keys,
        [mts.TensorBlock(torch.sin(positions), block.samples, [], block.properties)],
    )
    energy = module(features).block(0).values[:, 0].sum()
    (force,) = torch.autograd.grad(energy, positions)
    weights = model.weights_.block(0).values[0]
    expected = np.cos(positions.detach().numpy()) * weights
    np.testing.assert_allclose(force.numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------
# TorchScript
# ---------------------------------------------------------------------------------


def test_scripted_module_predicts_the_same(fitted):
    model, X, _, features = fitted
    module = to_module(model)
    scripted = torch.jit.script(module)
    assert_same_as_predict(scripted(features), model.predict(X))


def test_save_and_load_round_trip(fitted, tmp_path):
    model, X, _, features = fitted
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(to_module(model)), str(path))
    loaded = torch.jit.load(str(path))
    assert_same_as_predict(loaded(features), model.predict(X))
    assert loaded.weights.block(0).values.dtype == torch.float64


def test_module_pickles_and_loads_its_state_dict(fitted):
    model, X, _, features = fitted
    module = to_module(model)
    assert_same_as_predict(pickle.loads(pickle.dumps(module))(features), model.predict(X))
    other = to_module(TensorMapLstsq().fit(X, model.predict(X)))
    other.load_state_dict(module.state_dict())
    assert_same_as_predict(other(features), model.predict(X))


def test_moving_the_module_keeps_float64(fitted):
    model, X, _, features = fitted
    module = to_module(model).to("cpu")
    assert module.weights.block(0).values.dtype == torch.float64
    assert_same_as_predict(module(features), model.predict(X))
    assert module.float().weights.block(0).values.dtype == torch.float32


# ---------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scalers",
    [
        [TensorMapStandardScaler()],
        [TensorMapStandardScaler(with_mean=False)],
        [TensorMapStandardScaler(with_std=False)],
        [TensorMapStandardScaler(), "passthrough", TensorMapStandardScaler(with_mean=False)],
    ],
    ids=["scaler", "no_mean", "no_std", "two_scalers"],
)
def test_pipeline_scalers_fold_into_the_weights(scalers, fitted):
    _, X, y, features = fitted
    pipeline = make_pipeline(*scalers, TensorMapLstsq(fit_intercept=True, alpha=0.01))
    pipeline.fit(X, y)
    module = to_module(pipeline)
    assert_same_as_predict(module(features), pipeline.predict(X), rtol=1e-9, atol=1e-10)
    assert_same_as_predict(
        torch.jit.script(module)(features), pipeline.predict(X), rtol=1e-9, atol=1e-10
    )


def test_folded_weights_are_w_over_scale(fitted):
    _, X, y, _ = fitted
    pipeline = make_pipeline(TensorMapStandardScaler(), TensorMapLstsq(fit_intercept=True))
    pipeline.fit(X, y)
    scaler, model = pipeline[0], pipeline[-1]
    module = to_module(pipeline)
    for i, key in enumerate(model.weights_.keys):
        rows = X.block(key).values.reshape(-1, X.block(key).values.shape[-1])
        w = model.weights_.block(key).values / rows.std(axis=0)
        c = model.intercept_.block(key).values[:, 0] - w @ rows.mean(axis=0)
        np.testing.assert_allclose(module.weights.block_by_id(i).values.numpy(), w, rtol=1e-10)
        np.testing.assert_allclose(
            module.intercept.block_by_id(i).values.numpy()[:, 0], c, rtol=1e-10, atol=1e-12
        )
        np.testing.assert_allclose(scaler.scale_.block(key).values[0], rows.std(axis=0))


# ---------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------


def test_a_step_that_cannot_be_expressed_is_named(fitted):
    _, X, y, _ = fitted
    pipeline = Pipeline(
        [("double", TensorMapFunctionTransformer()), ("lstsq", TensorMapLstsq())]
    ).fit(X, y)
    with pytest.raises(
        TypeError,
        match=r"export.to_module: the Pipeline step 'double' \(TensorMapFunctionTransformer\) "
        "cannot be expressed in the module",
    ):
        to_module(pipeline)


def test_the_last_step_must_be_a_linear_model(fitted):
    _, X, _, _ = fitted
    pipeline = Pipeline([("scale", TensorMapStandardScaler())]).fit(X)
    with pytest.raises(
        TypeError, match=r"the last step of the Pipeline, 'scale' \(TensorMapStandardScaler\)"
    ):
        to_module(pipeline)


def test_other_estimators_are_refused():
    with pytest.raises(
        TypeError, match="export.to_module: expected a fitted TensorMapLstsq.*Ridge"
    ):
        to_module(Ridge())


def test_unfitted_estimators_are_refused(fitted):
    _, X, y, _ = fitted
    with pytest.raises(NotFittedError):
        to_module(TensorMapLstsq())
    pipeline = Pipeline([("scale", TensorMapStandardScaler()), ("lstsq", TensorMapLstsq())])
    pipeline.steps[-1][1].fit(X, y)
    with pytest.raises(NotFittedError):
        to_module(pipeline)


def test_without_torch_the_install_hint_comes_first(fitted, monkeypatch):
    # torch unimportable: the documented ImportError, not a bare ModuleNotFoundError
    # from the first use of torch
    model, X, y, _ = fitted
    pipeline = make_pipeline(TensorMapStandardScaler(), TensorMapLstsq()).fit(X, y)
    for name in (
        "torch",
        "metatensor.torch",
        "metatensor.torch.learn",
        "metatensor.torch.learn.nn",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    # a cache of its own, so that the module class built by other tests is not seen
    monkeypatch.setattr(export, "_module_class", functools.cache(export._module_class.__wrapped__))
    hint = r"export\.to_module needs metatensor-torch: pip install 'skmetalstsq\[mtorch\]'"
    for convert in (to_module, lambda estimator: estimator.to_module()):
        with pytest.raises(ImportError, match=hint) as error:
            convert(model)
        assert type(error.value) is ImportError
    with pytest.raises(ImportError, match=hint):
        to_module(pipeline)


def test_export_does_not_import_the_estimators():
    # imports run one way: the estimators' to_module imports export, so nothing
    # export imports (at the top or in a function) may lead back to them
    package = Path(skmetalstsq.__file__).parent

    def imported(name):
        tree = ast.parse((package / f"{name}.py").read_text())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found.update(
                    [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                )
        return found

    reached, todo = set(), ["export"]
    while todo:
        name = todo.pop()
        for module in imported(name) - reached:
            reached.add(module)
            todo.append(module)
    assert "_estimator" not in reached and "_cv" not in reached, sorted(reached)
    assert "export" in imported("_estimator")


def test_array_fits_are_refused():
    rng = np.random.default_rng(0)
    model = TensorMapLstsq().fit(rng.normal(size=(10, 3)), rng.normal(size=10))
    with pytest.raises(TypeError, match="TensorMapLstsq was fitted on plain arrays"):
        to_module(model)


def test_a_scaler_without_a_block_of_the_model(fitted):
    _, X, y, _ = fitted
    keys = Labels(["center_type"], np.array([[0], [1]]))
    scaler = TensorMapStandardScaler().fit(TensorMap(keys, [X.block(k).copy() for k in keys]))
    pipeline = Pipeline([("scale", scaler), ("lstsq", TensorMapLstsq().fit(X, y))])
    with pytest.raises(
        ValueError,
        match=r"the Pipeline step 'scale' \(TensorMapStandardScaler\) has no block "
        r"\(center_type=3\), which the last step predicts",
    ):
        to_module(pipeline)


def test_a_scaler_with_other_properties(fitted):
    _, X, y, _ = fitted
    X_few, y_few = make_pair(np.random.default_rng(1), keys=((0,), (1,), (3,)), n_features=2)
    scaler = TensorMapStandardScaler().fit(X_few)
    pipeline = Pipeline([("scale", scaler), ("lstsq", TensorMapLstsq().fit(X, y))])
    with pytest.raises(
        ValueError,
        match=r"block \(center_type=0\) has 2 properties named \['feature'\] in the Pipeline "
        r"step 'scale' \(TensorMapStandardScaler\) but 5 named \['feature'\] in the last step",
    ):
        to_module(pipeline)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
def test_forward_errors_name_the_block(fitted, scripted):
    model, X, _, _ = fitted
    module = to_module(model)
    module = torch.jit.script(module) if scripted else module
    error = torch.jit.Error if scripted else ValueError
    keys = Labels(["center_type"], np.array([[7]]))
    unseen = torch_map(TensorMap(keys, [X.block(0).copy()]))
    with pytest.raises(error, match=r"block \(center_type=7\) of features was not seen in fit"):
        module(unseen)
    renamed = torch_map(TensorMap(Labels(["species"], np.array([[0]])), [X.block(0).copy()]))
    with pytest.raises(error, match=r"keys are named \['species'\] in features but"):
        module(renamed)
    X_few, _ = make_pair(np.random.default_rng(1), keys=((0,),), n_features=2)
    with pytest.raises(
        error,
        match=r"block \(center_type=0\) has 2 properties named \['feature'\] in features "
        r"but 5 named \['feature'\] were seen in fit",
    ):
        module(torch_map(X_few))


# ---------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------


@needs_cuda
def test_module_on_cuda(fitted):
    model, X, _, _ = fitted
    module = torch.jit.script(to_module(model)).to("cuda")
    output = module(torch_map(X, device="cuda"))
    assert output.block(0).values.device.type == "cuda"
    assert module.weights.block(0).values.dtype == torch.float64
    cpu = mts.TensorMap(
        output.keys.to("cpu"), [block.to(device="cpu") for block in output.blocks()]
    )
    assert_same_as_predict(cpu, model.predict(X), rtol=1e-10, atol=1e-10)
    # a module left on the CPU predicts CUDA features on their device
    on_cpu = to_module(model)(torch_map(X, device="cuda"))
    assert on_cpu.block(0).values.device.type == "cuda"
