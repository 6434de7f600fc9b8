"""export.to_module of a TensorMapBayesianRidge: the mean, the std and a committee.

The module's std is checked against the closed form of the predictive std written
with numpy on the stacked rows (from the fitted ``sigma_``, ``alpha_``,
``X_offset_`` and ``value_weight_sum_``), and against ``predict(return_std=True)``;
its ensemble against the members ``sample_weights`` draws applied with numpy, and
against ``sample_y`` with the same seed.
"""

import pickle

import numpy as np
import pytest
from builders import as_numpy, example_pair, make_pair, torch_map
from metatensor import Labels, TensorMap
from sklearn.pipeline import make_pipeline

from skmetalstsq import TensorMapBayesianRidge, TensorMapLstsq, TensorMapStandardScaler
from skmetalstsq.export import to_module

torch = pytest.importorskip("torch")
mts = pytest.importorskip("metatensor.torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")

GRADIENT_WEIGHTS = {"positions": 0.25, "cell": 4.0}


@pytest.fixture(scope="module")
def data():
    """Three keys with components, two gradients and three targets."""
    X, y = example_pair(7)
    return X, y, torch_map(X)


@pytest.fixture(scope="module", params=[True, False], ids=["intercept", "no_intercept"])
def fitted(request, data):
    X, y, features = data
    model = TensorMapBayesianRidge(
        fit_intercept=request.param, gradient_weights=GRADIENT_WEIGHTS
    ).fit(X, y)
    return model, X, y, features


def key_name(key):
    return tuple(int(v) for v in key.values)


def std_by_hand(model, X):
    """The predictive std of every row of X, key tuple -> {"values" | parameter: array},
    from the closed form: ``sqrt(x_c^T sigma x_c + 1 / (alpha w_kind))`` plus, for
    value rows with an intercept, ``1 / (alpha * value_weight_sum_)``."""
    expected = {}
    for key, block in X.items():
        name = key_name(key)
        sigma, alpha = model.sigma_[name], model.alpha_[name]
        parts = {}
        for parameter in [None, *block.gradients_list()]:
            values = block.values if parameter is None else block.gradient(parameter).values
            rows = as_numpy(values).reshape(-1, values.shape[-1])
            noise = 1.0 / alpha
            if parameter is None and model.fit_intercept:
                rows = rows - model.X_offset_[name]
                noise = noise + 1.0 / (alpha * model.value_weight_sum_[name])
            elif parameter is not None:
                noise = noise / GRADIENT_WEIGHTS[parameter]
            variance = np.einsum("np,tpq,nq->nt", rows, sigma, rows) + noise
            parts[parameter or "values"] = np.sqrt(variance).reshape(*values.shape[:-1], -1)
        expected[name] = parts
    return expected


def members_by_hand(model, X, n_ensemble, seed):
    """``x @ w_s + c_s`` (values) and ``g @ w_s`` (gradients) of the members drawn by
    ``sample_weights``: key tuple -> {part: (..., n_ensemble, n_targets)}."""
    weights, intercepts = model.sample_weights(n_ensemble, random_state=seed)
    expected = {}
    for key, block in X.items():
        w = weights.block(key).values  # (n_targets, n_ensemble, n_features)
        c = intercepts.block(key).values[:, :, 0]
        parts = {"values": np.einsum("...p,tsp->...st", as_numpy(block.values), w) + c.T}
        for parameter, gradient in block.gradients():
            parts[parameter] = np.einsum("...p,tsp->...st", as_numpy(gradient.values), w)
        expected[key_name(key)] = parts
    return expected


def assert_output(output, expected, X, rtol=1e-12, atol=1e-13):
    """``output`` (metatensor-torch) holds ``expected`` (a by-hand dict, or a core
    map of predict's or sample_y's layout) in every block and gradient of X."""
    np.testing.assert_array_equal(output.keys.values.numpy(), X.keys.values)
    for i, (key, block) in enumerate(X.items()):
        ours = output.block_by_id(i)
        if isinstance(expected, dict):
            parts = expected[key_name(key)]
        else:
            np.testing.assert_array_equal(as_numpy(expected.keys.values), X.keys.values)
            theirs = expected.block(i)
            parts = {"values": as_numpy(theirs.values)}
            parts.update({p: as_numpy(g.values) for p, g in theirs.gradients()})
            for mine, other in zip(ours.components, theirs.components):
                np.testing.assert_array_equal(mine.values.numpy(), other.values)
            assert list(ours.properties.names) == list(theirs.properties.names)
        np.testing.assert_array_equal(ours.samples.values.numpy(), block.samples.values)
        np.testing.assert_allclose(ours.values.detach().cpu().numpy(), parts["values"], rtol, atol)
        assert sorted(ours.gradients_list()) == sorted(block.gradients_list())
        for parameter, gradient in block.gradients():
            mine = ours.gradient(parameter)
            np.testing.assert_array_equal(mine.samples.values.numpy(), gradient.samples.values)
            np.testing.assert_allclose(
                mine.values.detach().cpu().numpy(), parts[parameter], rtol, atol
            )


# ---------------------------------------------------------------------------------
# the mean, the std and the ensemble
# ---------------------------------------------------------------------------------


def test_forward_is_the_posterior_mean(fitted):
    model, X, _, features = fitted
    assert_output(to_module(model)(features), model.predict(X), X)


def test_std_is_the_closed_form_and_predicts_std(fitted):
    model, X, _, features = fitted
    std = to_module(model).std(features)
    assert_output(std, std_by_hand(model, X), X)
    _, predicted = model.predict(X, return_std=True)
    assert_output(std, predicted, X)


def test_force_rows_take_the_noise_of_their_gradient_weight(data):
    # the noise of a gradient row is 1 / (alpha_ w): with sigma_ negligible against
    # it, the std of "cell" rows (weight 4) is a quarter of that of "positions"
    # rows (weight 0.25), which a module using the values' noise would not give
    X, y, features = data
    model = TensorMapBayesianRidge(gradient_weights=GRADIENT_WEIGHTS).fit(X, y)
    std = to_module(model).std(features)
    for i, key in enumerate(X.keys):
        alpha = model.alpha_[key_name(key)]
        for parameter, weight in GRADIENT_WEIGHTS.items():
            values = std.block_by_id(i).gradient(parameter).values.numpy()
            assert np.all(values >= np.sqrt(1.0 / (alpha * weight)) - 1e-12)
        position = std.block_by_id(i).gradient("positions").values.numpy()
        cell = std.block_by_id(i).gradient("cell").values.numpy()
        assert np.median(position) > 3.0 * np.median(cell)


def test_ensemble_is_the_members_drawn_and_sample_y(fitted):
    model, X, _, features = fitted
    module = to_module(model, n_ensemble=5, random_state=3)
    members = module.ensemble(features)
    assert_output(members, members_by_hand(model, X, 5, 3), X)
    assert_output(members, model.sample_y(X, n_samples=5, random_state=3), X)
    component = members.block(0).components[-1]
    assert component.names == ["sample"]
    np.testing.assert_array_equal(component.values.numpy()[:, 0], np.arange(5))
    assert module.n_ensemble == 5


def test_the_estimator_method_passes_the_ensemble_on(fitted):
    model, X, _, features = fitted
    members = model.to_module(n_ensemble=3, random_state=np.random.RandomState(0))
    assert_output(members.ensemble(features), model.sample_y(X, 3, random_state=0), X)
    assert_output(members.std(features), model.predict(X, return_std=True)[1], X)


def test_a_seed_gives_the_same_ensemble_and_another_seed_another(fitted):
    model, _, _, features = fitted
    first = to_module(model, n_ensemble=2, random_state=1).ensemble(features)
    again = to_module(model, n_ensemble=2, random_state=1).ensemble(features)
    other = to_module(model, n_ensemble=2, random_state=2).ensemble(features)
    np.testing.assert_array_equal(first.block(0).values.numpy(), again.block(0).values.numpy())
    assert not np.allclose(first.block(0).values.numpy(), other.block(0).values.numpy())


def test_the_spread_of_a_large_ensemble_is_the_std_without_noise(data):
    # members carry the posterior of the weights and of the intercept and no
    # observation noise: the variance of their predictions is the predictive
    # variance less the noise of the row, 1 / alpha_ for values
    X, y, features = data
    model = TensorMapBayesianRidge(gradient_weights=GRADIENT_WEIGHTS).fit(X, y)
    module = to_module(model, n_ensemble=4000, random_state=0)
    members, std = module.ensemble(features), module.std(features)
    for i, key in enumerate(X.keys):
        spread = members.block_by_id(i).values.numpy().var(axis=-2)
        expected = std.block_by_id(i).values.numpy() ** 2 - 1.0 / model.alpha_[key_name(key)]
        np.testing.assert_allclose(spread, expected, rtol=0.1)


# ---------------------------------------------------------------------------------
# TorchScript, dtypes, devices
# ---------------------------------------------------------------------------------


def test_scripted_saved_and_loaded_module_gives_the_same(fitted, tmp_path):
    model, X, _, features = fitted
    path = str(tmp_path / "bayes.pt")
    torch.jit.save(torch.jit.script(to_module(model, n_ensemble=4, random_state=5)), path)
    loaded = torch.jit.load(path)
    assert_output(loaded(features), model.predict(X), X)
    assert_output(loaded.std(features), model.predict(X, return_std=True)[1], X)
    assert_output(loaded.ensemble(features), model.sample_y(X, 4, random_state=5), X)


def test_module_pickles(fitted):
    model, X, _, features = fitted
    module = pickle.loads(pickle.dumps(to_module(model, n_ensemble=2, random_state=0)))
    assert_output(module.std(features), model.predict(X, return_std=True)[1], X)
    assert_output(module.ensemble(features), model.sample_y(X, 2, random_state=0), X)


def test_float32_data_gives_a_float32_module(data):
    X, y, _ = data
    X32 = torch_map(X, dtype=torch.float32)
    model = TensorMapBayesianRidge(gradient_weights=GRADIENT_WEIGHTS).fit(
        X32, torch_map(y, dtype=torch.float32)
    )
    module = torch.jit.script(to_module(model, n_ensemble=3, random_state=0))
    assert module.sigma.block(0).values.dtype == torch.float32
    std, members = module.std(X32), module.ensemble(X32)
    assert std.block(0).values.dtype == torch.float32
    assert members.block(0).values.dtype == torch.float32
    assert_output(std, model.predict(X32, return_std=True)[1], X, rtol=1e-5, atol=1e-6)
    assert_output(members, model.sample_y(X32, 3, random_state=0), X, rtol=1e-5, atol=1e-5)


def test_float64_features_on_a_module_moved_to_float32(fitted):
    model, X, _, features = fitted
    module = to_module(model, n_ensemble=2, random_state=0).float()
    assert module.sigma.block(0).values.dtype == torch.float32
    std = module.std(features)
    assert std.block(0).values.dtype == torch.float64
    assert_output(std, model.predict(X, return_std=True)[1], X, rtol=1e-5, atol=1e-6)


@needs_cuda
def test_module_on_cuda(fitted):
    model, X, _, features = fitted
    module = to_module(model, n_ensemble=2, random_state=0).to("cuda")
    on_gpu = features.to("cuda")
    assert module.sigma.block(0).values.device.type == "cuda"
    assert_output(module.std(on_gpu), model.predict(X, return_std=True)[1], X, 1e-10, 1e-12)
    assert_output(module.ensemble(on_gpu), model.sample_y(X, 2, random_state=0), X, 1e-10, 1e-12)


# ---------------------------------------------------------------------------------
# pipelines: the scalers fold into the mean, the std and the ensemble
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scalers",
    [
        [TensorMapStandardScaler()],
        [TensorMapStandardScaler(with_mean=False)],
        [TensorMapStandardScaler(), "passthrough", TensorMapStandardScaler(with_mean=False)],
    ],
    ids=["scaler", "no_mean", "two_scalers"],
)
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no_intercept"])
def test_pipeline_scalers_fold_into_the_std_and_the_ensemble(scalers, fit_intercept, data):
    X, y, features = data
    model = TensorMapBayesianRidge(fit_intercept=fit_intercept, gradient_weights=GRADIENT_WEIGHTS)
    pipeline = make_pipeline(*scalers, model).fit(X, y)
    module = torch.jit.script(to_module(pipeline, n_ensemble=3, random_state=4))
    scaled = pipeline[:-1].transform(X)
    tolerance = {"rtol": 1e-9, "atol": 1e-10}
    assert_output(module(features), pipeline.predict(X), X, **tolerance)
    # the std of the scaled rows, as the last step sees them
    assert_output(module.std(features), std_by_hand(model, scaled), X, **tolerance)
    assert_output(module.std(features), pipeline.predict(X, return_std=True)[1], X, **tolerance)
    expected = model.sample_y(scaled, n_samples=3, random_state=4)
    assert_output(module.ensemble(features), expected, X, **tolerance)


# ---------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------


def test_n_ensemble_is_checked(fitted):
    model, _, _, _ = fitted
    for bad in (1.5, True, "3"):
        with pytest.raises(TypeError, match="export.to_module: n_ensemble must be an int >= 0"):
            to_module(model, n_ensemble=bad)
    with pytest.raises(ValueError, match="export.to_module: n_ensemble must be an int >= 0"):
        to_module(model, n_ensemble=-1)


def test_an_ensemble_needs_a_posterior(data):
    X, y, _ = data
    lstsq = TensorMapLstsq().fit(X, y)
    with pytest.raises(TypeError, match="n_ensemble=2 draws weights from a posterior, which "):
        to_module(lstsq, n_ensemble=2)
    with pytest.raises(TypeError, match="TensorMapLstsq does not have"):
        to_module(
            make_pipeline(TensorMapStandardScaler(), TensorMapLstsq()).fit(X, y), n_ensemble=1
        )


def test_an_ensemble_of_a_module_exported_without_one_is_refused(fitted):
    model, _, _, features = fitted
    module = to_module(model)
    assert module.n_ensemble == 0
    message = "TensorMapBayesianModule.ensemble: the module was exported without an ensemble"
    with pytest.raises(ValueError, match=message):
        module.ensemble(features)
    with pytest.raises(torch.jit.Error, match=message):
        torch.jit.script(module).ensemble(features)


def test_array_fits_are_refused():
    rng = np.random.default_rng(0)
    model = TensorMapBayesianRidge().fit(rng.normal(size=(20, 3)), rng.normal(size=20))
    with pytest.raises(TypeError, match="TensorMapBayesianRidge was fitted on plain arrays"):
        to_module(model, n_ensemble=2)


@pytest.mark.parametrize("scripted", [False, True], ids=["eager", "scripted"])
@pytest.mark.parametrize("method", ["std", "ensemble"])
def test_errors_name_the_method_and_the_block(method, scripted, fitted):
    model, X, _, _ = fitted
    module = to_module(model, n_ensemble=2, random_state=0)
    method = getattr(torch.jit.script(module) if scripted else module, method)
    error = torch.jit.Error if scripted else ValueError
    caller = f"TensorMapBayesianModule.{method.__name__}"
    unseen = torch_map(TensorMap(Labels(["center_type"], np.array([[9]])), [X.block(0).copy()]))
    with pytest.raises(error, match=rf"{caller}: block \(center_type=9\) of features was not seen"):
        method(unseen)
    X_few, _ = make_pair(np.random.default_rng(1), keys=((0,),), n_features=2)
    with pytest.raises(
        error,
        match=rf"{caller}: block \(center_type=0\) has 2 properties named \['feature'\] in "
        r"features but 5 named \['feature'\] were seen in fit",
    ):
        method(torch_map(X_few))


# ---------------------------------------------------------------------------------
# sample_weights: the members that sample_y and the module predict with
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize("y_ndim", [1, 2])
def test_sample_weights_on_arrays_are_sample_ys_members(y_ndim):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 4))
    y = X @ rng.normal(size=(4, 2)) + 0.5 + 0.1 * rng.normal(size=(30, 2))
    y = y[:, 0] if y_ndim == 1 else y
    model = TensorMapBayesianRidge().fit(X, y)
    weights, intercepts = model.sample_weights(6, random_state=1)
    if y_ndim == 1:
        assert weights.shape == (6, 4) and intercepts.shape == (6,)
        expected = X @ weights.T + intercepts
    else:
        assert weights.shape == (2, 6, 4) and intercepts.shape == (2, 6)
        expected = np.einsum("np,tsp->nts", X, weights) + intercepts
    np.testing.assert_allclose(model.sample_y(X, 6, random_state=1), expected, rtol=1e-12)


def test_sample_weights_are_drawn_from_the_posterior():
    # N(coef_, sigma_) for the weights: the mean and covariance of many draws
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=40)
    model = TensorMapBayesianRidge(fit_intercept=False).fit(X, y)
    weights, _ = model.sample_weights(20000, random_state=0)
    scale = np.sqrt(np.diag(model.sigma_))
    np.testing.assert_allclose(weights.mean(axis=0), model.coef_, atol=0.05 * scale.max())
    np.testing.assert_allclose(np.cov(weights.T), model.sigma_, atol=0.05 * scale.max() ** 2)


def test_sample_weights_checks_n_samples(fitted):
    model, _, _, _ = fitted
    with pytest.raises(TypeError, match="sample_weights: n_samples must be an int >= 1"):
        model.sample_weights(2.0)
    with pytest.raises(ValueError, match="sample_weights: n_samples must be an int >= 1"):
        model.sample_weights(0)
